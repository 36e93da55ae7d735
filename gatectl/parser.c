#include <stdio.h>
#include <string.h>

#include "gatectl.h"
#include "util.h"

/* The local commands, which never reach the daemon. */
static const struct {
	const char *usage;
	const char *help;
} parser_local[] = {
    {"help [COMMAND]", "Show this list, or the usage of one command."},
    {"completion bash", "Print the bash completion script."},
};

int
parser_usage(FILE *f, const char *only)
{
	size_t n = only != NULL ? strlen(only) : 0;
	int found = 0;

	if (only == NULL)
		fprintf(f, "usage: gatectl [-s URL] [--json] COMMAND [ARGS...]\ncommands:\n");
	for (int i = 0; i < proto_ncommands; i++) {
		const struct proto_command *c = &proto_commands[i];
		char line[128];

		/* "keys" shows every keys command, "keys create" that one */
		if (only != NULL &&
		    !(strncmp(c->name, only, n) == 0 && (c->name[n] == '\0' || c->name[n] == ' ')))
			continue;
		snprintf(line, sizeof(line), "%s%s%s", c->name, c->usage[0] ? " " : "", c->usage);
		if (only != NULL)
			fprintf(f, "usage: gatectl %s\n  %s\n", line, c->help);
		else if (strlen(line) > 36) /* a long usage gets a line of its own */
			fprintf(f, "  %s\n  %-36s %s\n", line, "", c->help);
		else
			fprintf(f, "  %-36s %s\n", line, c->help);
		found = 1;
	}
	if (only == NULL)
		for (size_t i = 0; i < sizeof(parser_local) / sizeof(parser_local[0]); i++)
			fprintf(f, "  %-36s %s\n", parser_local[i].usage, parser_local[i].help);
	return found || only == NULL ? 0 : -1;
}

/* The command of argv[0] (and argv[1] for a group); *used: the words it took. */
static const struct proto_command *
parser_command(int argc, char *argv[], int *used)
{
	const struct proto_command *c;
	char name[128];

	*used = 1;
	if (!proto_is_group(argv[0])) {
		if ((c = proto_find(argv[0])) == NULL)
			fprintf(stderr, "gatectl: unknown command %s (gatectl help lists them)\n",
			        argv[0]);
		return c;
	}
	*used = 2;
	if (argc >= 2 && strlen(argv[0]) + strlen(argv[1]) + 2 <= sizeof(name)) {
		/* fits: checked above */
		util_strlcpy(name, argv[0], sizeof(name));
		strcat(name, " ");
		strcat(name, argv[1]);
		if ((c = proto_find(name)) != NULL)
			return c;
	}
	fprintf(stderr, "gatectl: %s needs one of:\n", argv[0]);
	parser_usage(stderr, argv[0]);
	return NULL;
}

/* The argument an option word names ("--tier", "-f", "weight=5"), or -1. */
static int
parser_option(const struct proto_command *c, const char *word)
{
	for (int i = 0; c->args[i].name != NULL; i++) {
		const struct proto_arg *a = &c->args[i];

		if (a->kind == PROTO_ARG_KV     ? strncmp(word, a->option, strlen(a->option)) == 0
		    : a->kind != PROTO_ARG_WORD ? strcmp(word, a->option) == 0
		                                : 0)
			return i;
	}
	return -1;
}

/* Puts the words after the command into vals. 0, or -1 when they do not fit the table. */
static int
parser_args(const struct proto_command *c, int argc, char *argv[], const char *vals[])
{
	int next = 0; /* the next positional argument */

	for (int w = 0; w < argc; w++) {
		int i = parser_option(c, argv[w]);

		if (i >= 0 && c->args[i].kind == PROTO_ARG_OPTION) {
			if (++w == argc)
				return -1;
			vals[i] = argv[w];
		} else if (i >= 0) {
			vals[i] = c->args[i].kind == PROTO_ARG_FLAG
			              ? "1"
			              : argv[w] + strlen(c->args[i].option);
		} else {
			while (c->args[next].name != NULL && c->args[next].kind != PROTO_ARG_WORD)
				next++;
			if (c->args[next].name == NULL || argv[w][0] == '-')
				return -1;
			vals[next++] = argv[w];
		}
	}
	for (int i = 0; c->args[i].name != NULL; i++)
		if (c->args[i].required && vals[i] == NULL)
			return -1;
	return 0;
}

const struct proto_command *
parser_parse(int argc, char *argv[], const char *vals[PROTO_MAX_ARGS])
{
	const struct proto_command *c;
	int used;

	memset(vals, 0, PROTO_MAX_ARGS * sizeof(*vals));
	if ((c = parser_command(argc, argv, &used)) == NULL)
		return NULL;
	if (parser_args(c, argc - used, argv + used, vals) != 0) {
		parser_usage(stderr, c->name);
		return NULL;
	}
	for (int i = 0; i < PROTO_MAX_ARGS; i++) {
		if (vals[i] != NULL && strlen(vals[i]) > PROTO_ARG_MAX) {
			fprintf(stderr, "gatectl: argument longer than %d bytes\n", PROTO_ARG_MAX);
			return NULL;
		}
	}
	return c;
}

/* The words that may follow `group` (NULL: the first word), separated by blanks. */
static void
parser_words(FILE *f, const char *group)
{
	size_t n = group != NULL ? strlen(group) : 0;

	for (int i = 0; i < proto_ncommands; i++) {
		const char *name = proto_commands[i].name, *sp = strchr(name, ' ');
		int dup = 0;

		if (group != NULL) {
			if (strncmp(name, group, n) == 0 && name[n] == ' ')
				fprintf(f, " %s", name + n + 1);
			continue;
		}
		/* a group's word once */
		for (int k = 0; k < i && sp != NULL; k++)
			dup |= strncmp(proto_commands[k].name, name, (size_t)(sp - name + 1)) == 0;
		if (!dup)
			fprintf(f, " %.*s", sp != NULL ? (int)(sp - name) : (int)strlen(name),
			        name);
	}
}

void
parser_completion_bash(FILE *f)
{
	fprintf(f, "# bash completion for gatectl(1), generated by `gatectl completion bash`\n"
	           "_gatectl()\n{\n"
	           "\tlocal cur=${COMP_WORDS[COMP_CWORD]} i=1 words=()\n"
	           "\t# skip the global options: -s URL, --json\n"
	           "\twhile [ $i -lt $COMP_CWORD ]; do\n"
	           "\t\tcase ${COMP_WORDS[i]} in\n"
	           "\t\t-s) i=$((i + 2)) ;;\n"
	           "\t\t-*) i=$((i + 1)) ;;\n"
	           "\t\t*) words+=(\"${COMP_WORDS[i]}\"); i=$((i + 1)) ;;\n"
	           "\t\tesac\n"
	           "\tdone\n"
	           "\tlocal opts='--json'\n"
	           "\tif [ ${#words[@]} -eq 0 ]; then\n"
	           "\t\tCOMPREPLY=($(compgen -W \"$opts -s help completion");
	parser_words(f, NULL);
	fprintf(f, "\" -- \"$cur\"))\n\t\treturn\n\tfi\n\tcase \"${words[*]}\" in\n");
	/* a whole command: its options */
	for (int i = 0; i < proto_ncommands; i++) {
		const struct proto_command *c = &proto_commands[i];

		fprintf(f, "\t\"%s\"*) COMPREPLY=($(compgen -W \"$opts", c->name);
		for (int a = 0; c->args[a].name != NULL; a++)
			if (c->args[a].kind != PROTO_ARG_WORD)
				fprintf(f, " %s", c->args[a].option);
		fprintf(f, "\" -- \"$cur\")) ;;\n");
	}
	fprintf(f, "\t\"help\"*) COMPREPLY=($(compgen -W \"");
	parser_words(f, NULL);
	fprintf(f, "\" -- \"$cur\")) ;;\n\t\"completion\"*) COMPREPLY=($(compgen -W \"bash\" -- "
	           "\"$cur\")) ;;\n");
	/* a group alone: its sub-commands */
	for (int i = 0; i < proto_ncommands; i++) {
		const char *name = proto_commands[i].name, *sp = strchr(name, ' ');
		char group[64];

		if (sp == NULL || (size_t)(sp - name) >= sizeof(group) ||
		    (i > 0 &&
		     strncmp(proto_commands[i - 1].name, name, (size_t)(sp - name + 1)) == 0))
			continue;
		snprintf(group, sizeof(group), "%.*s", (int)(sp - name), name);
		fprintf(f, "\t\"%s\") COMPREPLY=($(compgen -W \"", group);
		parser_words(f, group);
		fprintf(f, "\" -- \"$cur\")) ;;\n");
	}
	fprintf(f, "\tesac\n}\ncomplete -F _gatectl gatectl\n");
}
