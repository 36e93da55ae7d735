#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto.h"
#include "util.h"
#include "xmalloc.h"

/* Argument lists, shared by the commands that take the same ones. */
static const struct proto_arg proto_no_args[] = {{NULL, PROTO_ARG_WORD, NULL, 0}};
static const struct proto_arg proto_key_arg[] = {{"key", PROTO_ARG_WORD, NULL, 1},
                                                 {NULL, PROTO_ARG_WORD, NULL, 0}};
static const struct proto_arg proto_id_arg[] = {{"id", PROTO_ARG_WORD, NULL, 1},
                                                {NULL, PROTO_ARG_WORD, NULL, 0}};
static const struct proto_arg proto_ip_args[] = {{"ip", PROTO_ARG_WORD, NULL, 1},
                                                 {"duration", PROTO_ARG_WORD, NULL, 0},
                                                 {NULL, PROTO_ARG_WORD, NULL, 0}};
static const struct proto_arg proto_ip_arg[] = {{"ip", PROTO_ARG_WORD, NULL, 1},
                                                {NULL, PROTO_ARG_WORD, NULL, 0}};
static const struct proto_arg proto_strategy_args[] = {{"name", PROTO_ARG_WORD, NULL, 0},
                                                       {NULL, PROTO_ARG_WORD, NULL, 0}};
static const struct proto_arg proto_tier_args[] = {{"key", PROTO_ARG_WORD, NULL, 1},
                                                   {"tier", PROTO_ARG_WORD, NULL, 1},
                                                   {NULL, PROTO_ARG_WORD, NULL, 0}};
static const struct proto_arg proto_create_args[] = {{"tier", PROTO_ARG_OPTION, "--tier", 0},
                                                     {"user", PROTO_ARG_OPTION, "--user", 0},
                                                     {NULL, PROTO_ARG_WORD, NULL, 0}};
static const struct proto_arg proto_add_args[] = {{"id", PROTO_ARG_WORD, NULL, 1},
                                                  {"address", PROTO_ARG_WORD, NULL, 1},
                                                  {"weight", PROTO_ARG_KV, "weight=", 0},
                                                  {"dc", PROTO_ARG_KV, "dc=", 0},
                                                  {NULL, PROTO_ARG_WORD, NULL, 0}};
static const struct proto_arg proto_weight_args[] = {{"id", PROTO_ARG_WORD, NULL, 1},
                                                     {"weight", PROTO_ARG_WORD, NULL, 1},
                                                     {NULL, PROTO_ARG_WORD, NULL, 0}};
static const struct proto_arg proto_purge_args[] = {{"prefix", PROTO_ARG_WORD, NULL, 0},
                                                    {NULL, PROTO_ARG_WORD, NULL, 0}};
static const struct proto_arg proto_logs_args[] = {{"follow", PROTO_ARG_FLAG, "-f", 0},
                                                   {"n", PROTO_ARG_OPTION, "-n", 0},
                                                   {NULL, PROTO_ARG_WORD, NULL, 0}};
static const struct proto_arg proto_name_arg[] = {{"name", PROTO_ARG_WORD, NULL, 1},
                                                  {NULL, PROTO_ARG_WORD, NULL, 0}};
static const struct proto_arg proto_set_args[] = {{"name", PROTO_ARG_WORD, NULL, 1},
                                                  {"value", PROTO_ARG_WORD, NULL, 1},
                                                  {NULL, PROTO_ARG_WORD, NULL, 0}};

/* clang-format off */
const struct proto_command proto_commands[] = {
	{"status", "", "Show the /stats object: strategy, uptime, totals, queue, limits.",
	 proto_no_args, PROTO_STATUS},
	{"backends", "", "List the backends with state, health, circuit, weight and counters.",
	 proto_no_args, PROTO_BACKENDS},
	{"geo", "", "Show the /geo/stats object: datacenters, countries, lookups.",
	 proto_no_args, PROTO_GEO},
	{"users", "", "List the users with their tier, role and keys (prefixes only).",
	 proto_no_args, PROTO_USERS},
	{"usage", "KEY", "Show the quota of an API key (whole key or prefix) as /usage does.",
	 proto_key_arg, PROTO_USAGE},
	{"strategy", "[NAME]", "Show the balancing strategy, or change it to NAME.",
	 proto_strategy_args, PROTO_STRATEGY},
	{"block", "KEY", "Block an API key (whole key or prefix) or a user (u:ID).",
	 proto_key_arg, PROTO_BLOCK},
	{"unblock", "KEY", "Lift the block and any ban of a key (key or prefix) or user (u:ID).",
	 proto_key_arg, PROTO_UNBLOCK},
	{"ban", "IP|CIDR [DURATION]",
	 "Refuse an address or network (403 ip_blocked) for DURATION or until unban.",
	 proto_ip_args, PROTO_BAN},
	{"unban", "IP|CIDR", "Lift a ban of an address or network.", proto_ip_arg, PROTO_UNBAN},
	{"tier", "KEY|USER_ID TIER", "Move a key (and its owner) or a user to another tier.",
	 proto_tier_args, PROTO_TIER},
	{"keys list", "", "List every API key: prefix, owner, tier, state.", proto_no_args,
	 PROTO_KEYS_LIST},
	{"keys create", "[--tier T] [--user ID]",
	 "Create an API key (of user ID, or ownerless) and print it once.", proto_create_args,
	 PROTO_KEYS_CREATE},
	{"keys rotate", "KEY", "Replace a key; the old one works 24h more.", proto_key_arg,
	 PROTO_KEYS_ROTATE},
	{"keys revoke", "KEY", "Revoke a key at once.", proto_key_arg, PROTO_KEYS_REVOKE},
	{"backend add", "ID HOST:PORT [weight=N] [dc=NAME]",
	 "Add a backend to the running gateway (kept until a restart).", proto_add_args,
	 PROTO_BACKEND_ADD},
	{"backend remove", "ID", "Remove a backend from the running gateway (until a restart).", proto_id_arg,
	 PROTO_BACKEND_REMOVE},
	{"backend drain", "ID", "Send no new requests to a backend; in-flight ones finish.",
	 proto_id_arg, PROTO_BACKEND_DRAIN},
	{"backend enable", "ID", "Undo drain: the backend takes requests again.", proto_id_arg,
	 PROTO_BACKEND_ENABLE},
	{"backend weight", "ID N", "Set a backend's weight (1..1000) at once.",
	 proto_weight_args, PROTO_BACKEND_WEIGHT},
	{"cache stats", "", "Show the response cache's counters.", proto_no_args,
	 PROTO_CACHE_STATS},
	{"cache purge", "[PATH_PREFIX]", "Drop cached responses (all, or under a path prefix).",
	 proto_purge_args, PROTO_CACHE_PURGE},
	{"logs", "[-f] [-n N]", "Print the newest N requests (20); -f: follow new ones.",
	 proto_logs_args, PROTO_LOGS},
	{"reload", "", "Reload the configuration file and report the result.", proto_no_args,
	 PROTO_RELOAD},
	{"config get", "NAME", "Print the effective value of a directive.", proto_name_arg,
	 PROTO_CONFIG_GET},
	{"config set", "NAME VALUE",
	 "Apply a directive to the running gateway (as -d NAME=VALUE and a reload).",
	 proto_set_args, PROTO_CONFIG_SET},
};
/* clang-format on */

const int proto_ncommands = (int)(sizeof(proto_commands) / sizeof(proto_commands[0]));

const struct proto_command *
proto_find(const char *name)
{
	for (int i = 0; i < proto_ncommands; i++)
		if (strcmp(proto_commands[i].name, name) == 0)
			return &proto_commands[i];
	return NULL;
}

int
proto_nargs(const struct proto_command *cmd)
{
	int n = 0;

	while (cmd->args[n].name != NULL)
		n++;
	return n;
}

int
proto_nrequired(const struct proto_command *cmd)
{
	int n = 0;

	for (int i = 0; cmd->args[i].name != NULL; i++)
		n += cmd->args[i].required;
	return n;
}

int
proto_is_group(const char *group)
{
	size_t n = strlen(group);

	for (int i = 0; i < proto_ncommands; i++)
		if (strncmp(proto_commands[i].name, group, n) == 0 &&
		    proto_commands[i].name[n] == ' ')
			return 1;
	return 0;
}

char *
proto_request_encode_named(const struct proto_command *cmd, const char *const vals[])
{
	cJSON *o = cJSON_CreateObject();
	char *s;

	cJSON_AddNumberToObject(o, "v", PROTOCOL_VERSION);
	cJSON_AddStringToObject(o, "cmd", cmd->name);
	for (int i = 0; cmd->args[i].name != NULL; i++)
		if (vals[i] != NULL)
			cJSON_AddStringToObject(o, cmd->args[i].name, vals[i]);
	s = cJSON_PrintUnformatted(o);
	cJSON_Delete(o);
	return s;
}

char *
proto_request_encode(const struct proto_command *cmd, int argc, char *const argv[])
{
	const char *vals[PROTO_MAX_ARGS] = {NULL};

	if (argc < 0 || argc > proto_nargs(cmd))
		return NULL;
	for (int i = 0; i < argc; i++)
		vals[i] = argv[i];
	return proto_request_encode_named(cmd, vals);
}

/* A value as a string: strings as they are, numbers and true as text (n, weight, follow). */
static int
proto_value(const cJSON *a, char *buf, size_t len)
{
	if (cJSON_IsString(a)) {
		if (strlen(a->valuestring) > PROTO_ARG_MAX)
			return -1;
		util_strlcpy(buf, a->valuestring, len);
		return 0;
	}
	if (cJSON_IsNumber(a) && a->valuedouble == (double)(long long)a->valuedouble) {
		snprintf(buf, len, "%lld", (long long)a->valuedouble);
		return 0;
	}
	if (cJSON_IsTrue(a)) {
		util_strlcpy(buf, "1", len);
		return 0;
	}
	return -1;
}

static int
proto_set_arg(struct proto_request *out, int i, const cJSON *a, char *err, size_t errlen)
{
	char buf[PROTO_ARG_MAX + 1];

	if (cJSON_IsFalse(a) || cJSON_IsNull(a))
		return 0; /* a flag that is off, an argument left out */
	if (proto_value(a, buf, sizeof(buf)) != 0) {
		snprintf(err, errlen, "%s: %s must be a string of at most %d bytes", out->cmd->name,
		         out->cmd->args[i].name, PROTO_ARG_MAX);
		return -1;
	}
	out->argv[i] = xstrdup(buf);
	return 0;
}

/* The "args" array: the arguments in table order. */
static int
proto_decode_array(const cJSON *args, struct proto_request *out, char *err, size_t errlen)
{
	const cJSON *a;
	int i = 0, n = proto_nargs(out->cmd);

	if (!cJSON_IsArray(args)) {
		snprintf(err, errlen, "args must be an array of strings");
		return -1;
	}
	cJSON_ArrayForEach(a, args)
	{
		if (i == n) {
			snprintf(err, errlen, "usage: %s %s", out->cmd->name, out->cmd->usage);
			return -1;
		}
		if (!cJSON_IsString(a) || strlen(a->valuestring) > PROTO_ARG_MAX) {
			snprintf(err, errlen, "args must be strings of at most %d bytes",
			         PROTO_ARG_MAX);
			return -1;
		}
		out->argv[i++] = xstrdup(a->valuestring);
	}
	return 0;
}

/* Named arguments: members of the request besides v and cmd; an unknown one is refused. */
static int
proto_decode_named(const cJSON *o, struct proto_request *out, char *err, size_t errlen)
{
	const cJSON *a;

	cJSON_ArrayForEach(a, o)
	{
		int i;

		if (strcmp(a->string, "v") == 0 || strcmp(a->string, "cmd") == 0 ||
		    strcmp(a->string, "token") == 0)
			continue;
		for (i = 0; out->cmd->args[i].name != NULL; i++)
			if (strcmp(out->cmd->args[i].name, a->string) == 0)
				break;
		if (out->cmd->args[i].name == NULL) {
			snprintf(err, errlen, "%s takes no argument \"%.64s\" (usage: %s %s)",
			         out->cmd->name, a->string, out->cmd->name, out->cmd->usage);
			return -1;
		}
		free(out->argv[i]);
		out->argv[i] = NULL;
		if (proto_set_arg(out, i, a, err, errlen) != 0)
			return -1;
	}
	return 0;
}

int
proto_request_decode(const char *buf, size_t len, struct proto_request *out, char *err,
                     size_t errlen)
{
	cJSON *o = cJSON_ParseWithLength(buf, len);
	const cJSON *v, *cmd, *args, *tok;
	int r = -1;

	memset(out, 0, sizeof(*out));
	if (!cJSON_IsObject(o)) {
		snprintf(err, errlen, "request is not a JSON object");
		goto out;
	}
	/* no "v": a hand-written request ({"cmd":"status"}), read as this version */
	v = cJSON_GetObjectItemCaseSensitive(o, "v");
	if (v != NULL && (!cJSON_IsNumber(v) || v->valuedouble != PROTOCOL_VERSION)) {
		snprintf(err, errlen, "protocol version %d, daemon speaks %d",
		         cJSON_IsNumber(v) ? v->valueint : 0, PROTOCOL_VERSION);
		goto out;
	}
	cmd = cJSON_GetObjectItemCaseSensitive(o, "cmd");
	if (!cJSON_IsString(cmd) || (out->cmd = proto_find(cmd->valuestring)) == NULL) {
		snprintf(err, errlen, "unknown command %.64s",
		         cJSON_IsString(cmd) ? cmd->valuestring : "(none)");
		goto out;
	}
	tok = cJSON_GetObjectItemCaseSensitive(o, "token");
	if (tok != NULL) {
		if (!cJSON_IsString(tok) || strlen(tok->valuestring) > PROTO_ARG_MAX) {
			snprintf(err, errlen, "token must be a string of at most %d bytes",
			         PROTO_ARG_MAX);
			goto out;
		}
		out->token = xstrdup(tok->valuestring);
	}
	args = cJSON_GetObjectItemCaseSensitive(o, "args");
	if (args != NULL ? proto_decode_array(args, out, err, errlen)
	                 : proto_decode_named(o, out, err, errlen))
		goto out;
	for (int i = 0; out->cmd->args[i].name != NULL; i++) {
		if (out->cmd->args[i].required && out->argv[i] == NULL) {
			snprintf(err, errlen, "usage: %s %s", out->cmd->name, out->cmd->usage);
			goto out;
		}
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
	if (r->token != NULL)
		explicit_bzero(r->token, strlen(r->token));
	free(r->token);
	r->token = NULL;
}

int
proto_url_needs_token(const char *url)
{
	return strncmp(url, "tcp://", 6) == 0;
}

char *
proto_request_authorize(char *req, const char *url, const char *token)
{
	cJSON *o;
	char *s;

	if (req == NULL || token == NULL || token[0] == '\0' || !proto_url_needs_token(url))
		return req;
	o = cJSON_Parse(req);
	cJSON_free(req);
	if (o == NULL)
		return NULL;
	cJSON_AddStringToObject(o, "token", token);
	s = cJSON_PrintUnformatted(o);
	cJSON_Delete(o);
	return s;
}

const char *
proto_request_get(const struct proto_request *r, const char *name)
{
	for (int i = 0; r->cmd->args[i].name != NULL; i++)
		if (strcmp(r->cmd->args[i].name, name) == 0)
			return r->argv[i];
	return NULL;
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
