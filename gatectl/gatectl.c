#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gatectl.h"
#include "ipc.h"

/*
 * gatectl(1): one request to gatewayd's control socket, one reply printed (and, for
 * `logs -f`, the log topic of the PUB stream after it). Exit status: 0 done, 1 the daemon
 * refused, 2 usage error, 3 the daemon cannot be reached.
 */

#define GATECTL_TIMEOUT_MS 10000

static void
gatectl_usage(void)
{
	parser_usage(stderr, NULL);
	exit(GATECTL_USAGE);
}

/* "help [COMMAND...]": the table, without asking the daemon. */
static int
gatectl_help(int argc, char *argv[])
{
	char name[128];

	if (argc == 1) {
		parser_usage(stdout, NULL);
		return GATECTL_OK;
	}
	if (argc > 3)
		gatectl_usage();
	snprintf(name, sizeof(name), "%s%s%s", argv[1], argc == 3 ? " " : "",
	         argc == 3 ? argv[2] : "");
	if (parser_usage(stdout, name) != 0) {
		fprintf(stderr, "gatectl: unknown command %s\n", name);
		return GATECTL_USAGE;
	}
	return GATECTL_OK;
}

static int
gatectl_completion(int argc, char *argv[])
{
	if (argc != 2 || strcmp(argv[1], "bash") != 0) {
		fprintf(stderr, "usage: gatectl completion bash\n");
		return GATECTL_USAGE;
	}
	parser_completion_bash(stdout);
	return GATECTL_OK;
}

/* After `logs -f` printed the recent lines: the stream at env GATEWAYD_PUBLISH, else the
 * daemon's publish URL from the reply. */
static int
gatectl_follow(const cJSON *reply, int json)
{
	const char *url = getenv("GATEWAYD_PUBLISH");
	const cJSON *p = cJSON_GetObjectItemCaseSensitive(reply, "publish");

	if (url == NULL || url[0] == '\0')
		url = cJSON_IsString(p) ? p->valuestring : NULL;
	if (url == NULL) {
		fprintf(stderr, "gatectl: the daemon named no publish URL; set GATEWAYD_PUBLISH\n");
		return GATECTL_UNREACHABLE;
	}
	fflush(stdout);
	return follow_logs(url, json);
}

/* Sends cmd with vals to url and prints the reply; the exit status. */
static int
gatectl_call(const char *url, const struct proto_command *cmd, const char *const vals[], int json)
{
	char err[512], *req, *reply;
	size_t len;
	int ok, rc;
	cJSON *r;

	req = proto_request_authorize(proto_request_encode_named(cmd, vals), url,
	                              getenv("GATEWAYD_ADMIN_TOKEN"));
	if (req == NULL) {
		fprintf(stderr, "gatectl: out of memory\n");
		return GATECTL_USAGE;
	}
	rc = ipc_call(url, req, GATECTL_TIMEOUT_MS, &reply, &len, err, sizeof(err));
	cJSON_free(req);
	if (rc != 0) {
		fprintf(stderr, "gatectl: cannot reach gatewayd at %s\n", err);
		return GATECTL_UNREACHABLE;
	}
	r = proto_reply_decode(reply, len, &ok, err, sizeof(err));
	if (r == NULL) {
		fprintf(stderr, "gatectl: %s\n", err);
		free(reply);
		return GATECTL_UNREACHABLE;
	}
	rc = ok ? GATECTL_OK : GATECTL_REFUSED;
	if (!ok) {
		const cJSON *e = cJSON_GetObjectItemCaseSensitive(r, "error");

		fprintf(stderr, "gatectl: %s\n", cJSON_IsString(e) ? e->valuestring : "refused");
		if (json)
			printf("%s\n", reply);
	} else if (json && !(cmd->handler == PROTO_LOGS && vals[0] != NULL)) {
		printf("%s\n", reply);
	} else if (!json) {
		output_human(cmd, r);
	}
	/* logs -f --json: the recent entries one per line, then the stream's, alike */
	if (ok && json && cmd->handler == PROTO_LOGS && vals[0] != NULL) {
		const cJSON *e;

		cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(r, "entries"))
		{
			char *s = cJSON_PrintUnformatted(e);

			printf("%s\n", s != NULL ? s : "{}");
			cJSON_free(s);
		}
	}
	if (ok && cmd->handler == PROTO_LOGS && vals[0] != NULL)
		rc = gatectl_follow(r, json);
	cJSON_Delete(r);
	free(reply);
	return rc;
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
	const char *vals[PROTO_MAX_ARGS];
	const struct proto_command *cmd;
	int ch, json = 0, nargs = 0, rc;
	char **args;

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
		rc = gatectl_help(nargs, args);
	else if (strcmp(args[0], "completion") == 0)
		rc = gatectl_completion(nargs, args);
	else if ((cmd = parser_parse(nargs, args, vals)) == NULL)
		rc = GATECTL_USAGE;
	else
		rc = gatectl_call(url, cmd, vals, json);
	free(args);
	return rc;
}
