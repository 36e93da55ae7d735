#include <stdio.h>
#include <string.h>

#include "gatectl.h"

void
parser_usage(FILE *f, const struct proto_command *only)
{
	if (only != NULL) {
		fprintf(f, "usage: gatectl %s%s%s\n  %s\n", only->name, only->usage[0] ? " " : "",
		        only->usage, only->help);
		return;
	}
	fprintf(f, "usage: gatectl [-s URL] [--json] COMMAND [ARGS...]\ncommands:\n");
	for (int i = 0; i < proto_ncommands; i++) {
		const struct proto_command *c = &proto_commands[i];
		char line[128];

		snprintf(line, sizeof(line), "%s %s", c->name, c->usage);
		fprintf(f, "  %-28s %s\n", line, c->help);
	}
	fprintf(f, "  %-28s %s\n", "help [COMMAND]", "Show this list, or one command's usage.");
}

const struct proto_command *
parser_parse(int argc, char *argv[])
{
	const struct proto_command *c = proto_find(argv[0]);

	if (c == NULL) {
		fprintf(stderr, "gatectl: unknown command %s (gatectl help lists them)\n", argv[0]);
		return NULL;
	}
	if (argc - 1 < c->min_args || argc - 1 > c->max_args) {
		parser_usage(stderr, c);
		return NULL;
	}
	for (int i = 1; i < argc; i++) {
		if (strlen(argv[i]) > PROTO_ARG_MAX) {
			fprintf(stderr, "gatectl: argument longer than %d bytes\n", PROTO_ARG_MAX);
			return NULL;
		}
	}
	return c;
}
