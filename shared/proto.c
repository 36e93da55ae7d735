#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto.h"
#include "util.h"
#include "xmalloc.h"

const struct proto_command proto_commands[] = {
    {"status", "", "Show the /stats object: strategy, uptime, totals, queue, limits.", 0, 0,
     PROTO_STATUS},
    {"backends", "", "List the backends with health, circuit, weight and counters.", 0, 0,
     PROTO_BACKENDS},
    {"strategy", "[NAME]", "Show the balancing strategy, or change it to NAME.", 0, 1,
     PROTO_STRATEGY},
    {"reload", "", "Reload the configuration file (as SIGHUP does).", 0, 0, PROTO_RELOAD},
    {"block", "KEY", "Block the API key KEY until unblocked.", 1, 1, PROTO_BLOCK},
    {"unblock", "KEY", "Lift the block and any ban of the API key KEY.", 1, 1, PROTO_UNBLOCK},
    {"ban", "IP|CIDR [DURATION]",
     "Refuse an address or network (403 ip_blocked) for DURATION or until unban.", 1, 2, PROTO_BAN},
    {"unban", "IP|CIDR", "Lift a ban of an address or network.", 1, 1, PROTO_UNBAN},
};

const int proto_ncommands = (int)(sizeof(proto_commands) / sizeof(proto_commands[0]));

const struct proto_command *
proto_find(const char *name)
{
	for (int i = 0; i < proto_ncommands; i++)
		if (strcmp(proto_commands[i].name, name) == 0)
			return &proto_commands[i];
	return NULL;
}

char *
proto_request_encode(const struct proto_command *cmd, int argc, char *const argv[])
{
	cJSON *o = cJSON_CreateObject(), *args;
	char *s;

	cJSON_AddNumberToObject(o, "v", PROTOCOL_VERSION);
	cJSON_AddStringToObject(o, "cmd", cmd->name);
	args = cJSON_AddArrayToObject(o, "args");
	for (int i = 0; i < argc; i++)
		cJSON_AddItemToArray(args, cJSON_CreateString(argv[i]));
	s = cJSON_PrintUnformatted(o);
	cJSON_Delete(o);
	return s;
}

int
proto_request_decode(const char *buf, size_t len, struct proto_request *out, char *err,
                     size_t errlen)
{
	cJSON *o = cJSON_ParseWithLength(buf, len);
	const cJSON *v, *cmd, *args, *a;
	int r = -1;

	memset(out, 0, sizeof(*out));
	if (!cJSON_IsObject(o)) {
		snprintf(err, errlen, "request is not a JSON object");
		goto out;
	}
	v = cJSON_GetObjectItemCaseSensitive(o, "v");
	if (!cJSON_IsNumber(v) || v->valuedouble != PROTOCOL_VERSION) {
		snprintf(err, errlen, "protocol version %d, daemon speaks %d",
		         cJSON_IsNumber(v) ? v->valueint : 0, PROTOCOL_VERSION);
		goto out;
	}
	cmd = cJSON_GetObjectItemCaseSensitive(o, "cmd");
	if (!cJSON_IsString(cmd) || (out->cmd = proto_find(cmd->valuestring)) == NULL) {
		snprintf(err, errlen, "unknown command %s",
		         cJSON_IsString(cmd) ? cmd->valuestring : "(none)");
		goto out;
	}
	args = cJSON_GetObjectItemCaseSensitive(o, "args");
	if (args != NULL && !cJSON_IsArray(args)) {
		snprintf(err, errlen, "args must be an array of strings");
		goto out;
	}
	cJSON_ArrayForEach(a, args)
	{
		if (!cJSON_IsString(a) || strlen(a->valuestring) > PROTO_ARG_MAX) {
			snprintf(err, errlen, "args must be strings of at most %d bytes",
			         PROTO_ARG_MAX);
			goto out;
		}
		if (out->argc >= out->cmd->max_args) {
			out->argc++;
			break;
		}
		out->argv[out->argc++] = xstrdup(a->valuestring);
	}
	if (out->argc < out->cmd->min_args || out->argc > out->cmd->max_args) {
		snprintf(err, errlen, "usage: %s %s", out->cmd->name, out->cmd->usage);
		goto out;
	}
	r = 0;
out:
	cJSON_Delete(o);
	if (r != 0)
		proto_request_free(out);
	return r;
}

void
proto_request_free(struct proto_request *r)
{
	for (int i = 0; i < PROTO_MAX_ARGS; i++) {
		free(r->argv[i]);
		r->argv[i] = NULL;
	}
	r->argc = 0;
}

cJSON *
proto_reply_ok(void)
{
	cJSON *o = cJSON_CreateObject();

	cJSON_AddNumberToObject(o, "v", PROTOCOL_VERSION);
	cJSON_AddBoolToObject(o, "ok", 1);
	return o;
}

char *
proto_reply_error(const char *message)
{
	cJSON *o = cJSON_CreateObject();
	char *s;

	cJSON_AddNumberToObject(o, "v", PROTOCOL_VERSION);
	cJSON_AddBoolToObject(o, "ok", 0);
	cJSON_AddStringToObject(o, "error", message);
	s = cJSON_PrintUnformatted(o);
	cJSON_Delete(o);
	return s;
}

cJSON *
proto_reply_decode(const char *buf, size_t len, int *ok, char *err, size_t errlen)
{
	cJSON *o = cJSON_ParseWithLength(buf, len);
	const cJSON *k;

	k = cJSON_IsObject(o) ? cJSON_GetObjectItemCaseSensitive(o, "ok") : NULL;
	if (!cJSON_IsBool(k)) {
		snprintf(err, errlen, "the daemon's answer is not a reply");
		cJSON_Delete(o);
		return NULL;
	}
	*ok = cJSON_IsTrue(k);
	return o;
}
