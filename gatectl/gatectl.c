#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gatectl.h"
#include "ipc.h"

/*
 * gatectl(1): one request to gatewayd's control socket, one reply printed. Exit status:
 * 0 done, 1 the daemon refused, 2 usage error, 3 the daemon cannot be reached.
 */

#define GATECTL_TIMEOUT_MS 5000

static void
gatectl_usage(void)
{
	parser_usage(stderr, NULL);
	exit(GATECTL_USAGE);
}

/* "help [COMMAND]": the table, without asking the daemon. */
static int
gatectl_help(int argc, char *argv[])
{
	const struct proto_command *c;

	if (argc > 2)
		gatectl_usage();
	if (argc == 1) {
		parser_usage(stdout, NULL);
		return GATECTL_OK;
	}
	if ((c = proto_find(argv[1])) == NULL) {
		fprintf(stderr, "gatectl: unknown command %s\n", argv[1]);
		return GATECTL_USAGE;
	}
	parser_usage(stdout, c);
	return GATECTL_OK;
}

int
main(int argc, char *argv[])
{
	static const struct option longopts[] = {
	    {"json", no_argument, NULL, 'j'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	const char *url = getenv("GATEWAYD_CONTROL");
	const struct proto_command *cmd;
	char err[512], *req, *reply;
	size_t len;
	int ch, json = 0, ok, nargs = 0;
	char **args;
	cJSON *r;

	if (url == NULL || url[0] == '\0')
		url = GATECTL_DEFAULT_URL;
	/* "+": options stop at the command; --json may still come after it (below) */
	while ((ch = getopt_long(argc, argv, "+s:h", longopts, NULL)) != -1) {
		switch (ch) {
		case 's':
			url = optarg;
			break;
		case 'j':
			json = 1;
			break;
		case 'h':
			parser_usage(stdout, NULL);
			return GATECTL_OK;
		default:
			gatectl_usage();
		}
	}
	argc -= optind;
	argv += optind;
	args = calloc((size_t)argc + 1, sizeof(*args));
	if (args == NULL)
		return GATECTL_USAGE;
	for (int i = 0; i < argc; i++) {
		if (strcmp(argv[i], "--json") == 0)
			json = 1;
		else
			args[nargs++] = argv[i];
	}
	if (nargs == 0)
		gatectl_usage();
	if (strcmp(args[0], "help") == 0)
		return gatectl_help(nargs, args);
	if ((cmd = parser_parse(nargs, args)) == NULL)
		return GATECTL_USAGE;
	req = proto_request_encode(cmd, nargs - 1, args + 1);
	if (req == NULL) {
		fprintf(stderr, "gatectl: out of memory\n");
		return GATECTL_USAGE;
	}
	if (ipc_call(url, req, GATECTL_TIMEOUT_MS, &reply, &len, err, sizeof(err)) != 0) {
		fprintf(stderr, "gatectl: cannot reach gatewayd at %s\n", err);
		cJSON_free(req);
		return GATECTL_UNREACHABLE;
	}
	cJSON_free(req);
	r = proto_reply_decode(reply, len, &ok, err, sizeof(err));
	if (r == NULL) {
		fprintf(stderr, "gatectl: %s\n", err);
		free(reply);
		return GATECTL_UNREACHABLE;
	}
	if (!ok) {
		const cJSON *e = cJSON_GetObjectItemCaseSensitive(r, "error");

		fprintf(stderr, "gatectl: %s\n", cJSON_IsString(e) ? e->valuestring : "refused");
		if (json)
			printf("%s\n", reply);
	} else if (json) {
		printf("%s\n", reply);
	} else {
		output_human(cmd, r);
	}
	cJSON_Delete(r);
	free(reply);
	free(args);
	return ok ? GATECTL_OK : GATECTL_REFUSED;
}
