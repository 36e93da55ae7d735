#ifndef GW_PROTO_H
#define GW_PROTO_H

/*
 * The control-plane protocol, defined once (DESIGN section 5, as tmux does): gatectl's
 * parser, help, bash completion and gatewayd's dispatcher all read proto_commands[], so a
 * new command is one table entry plus one handler.
 *
 * A request is {"v":N,"cmd":"...", ...named arguments} (SPEC section 7): every argument of
 * a command has a name in the table ({"cmd":"ban","ip":"10.0.0.0/8","duration":"10m"}).
 * The older form {"v":N,"cmd":"...","args":["...",...]} fills the arguments in table order.
 * "v" may be left out (read as PROTOCOL_VERSION); another version is refused. A reply is
 * {"v":N,"ok":true,...} or {"v":N,"ok":false,"error":"..."}.
 */

#include <stddef.h>

#include <cjson/cJSON.h>

#define PROTOCOL_VERSION 1
#define PROTO_MAX_ARGS 4
#define PROTO_ARG_MAX 512 /* longest argument accepted, in bytes */

enum proto_handler {
	PROTO_STATUS,
	PROTO_BACKENDS,
	PROTO_STRATEGY,
	PROTO_RELOAD,
	PROTO_BLOCK,
	PROTO_UNBLOCK,
	PROTO_BAN,
	PROTO_UNBAN,
	PROTO_GEO,
	PROTO_USERS,
	PROTO_USAGE,
	PROTO_TIER,
	PROTO_KEYS_LIST,
	PROTO_KEYS_CREATE,
	PROTO_KEYS_ROTATE,
	PROTO_KEYS_REVOKE,
	PROTO_BACKEND_ADD,
	PROTO_BACKEND_REMOVE,
	PROTO_BACKEND_DRAIN,
	PROTO_BACKEND_ENABLE,
	PROTO_BACKEND_WEIGHT,
	PROTO_CACHE_STATS,
	PROTO_CACHE_PURGE,
	PROTO_LOGS,
	PROTO_CONFIG_GET,
	PROTO_CONFIG_SET,
	PROTO_NHANDLERS
};

/*
 * One argument. On gatectl's command line it is a word in its place (option NULL), an
 * option with a value ("--tier" T), a flag ("-f", value "1"), or a key=value word
 * ("weight=" N). In a request it is the member `name`.
 */
enum proto_arg_kind { PROTO_ARG_WORD, PROTO_ARG_OPTION, PROTO_ARG_FLAG, PROTO_ARG_KV };

struct proto_arg {
	const char *name;
	enum proto_arg_kind kind;
	const char *option; /* "--tier", "-f", "weight=": as typed */
	int required;
};

struct proto_command {
	const char *name;  /* one word, or two for a sub-command ("keys create") */
	const char *usage; /* the arguments, as a usage line shows them */
	const char *help;
	const struct proto_arg *args; /* in order: the words first; {NULL} ends it */
	enum proto_handler handler;
};

/* A decoded request: argv[i] is the value of cmd->args[i], NULL when not given. */
struct proto_request {
	const struct proto_command *cmd;
	char *argv[PROTO_MAX_ARGS]; /* owned: freed by proto_request_free() */
	char *token;                /* "token": the admin token, or NULL (owned) */
};

extern const struct proto_command proto_commands[];
extern const int proto_ncommands;

/* The table entry of name ("keys create"), or NULL. */
const struct proto_command *proto_find(const char *name);
/* The number of arguments of cmd, and of its required ones. */
int proto_nargs(const struct proto_command *cmd);
int proto_nrequired(const struct proto_command *cmd);
/* 1 when some command's name starts with the word group followed by a blank ("keys"). */
int proto_is_group(const char *group);

/*
 * The request for cmd with its argument words given in table order (as gatetop sends
 * `tier KEY TIER`); the caller frees it with cJSON_free(). NULL on failure (more words
 * than arguments, out of memory).
 */
char *proto_request_encode(const struct proto_command *cmd, int argc, char *const argv[]);
/* The same from values per argument (vals[i] for cmd->args[i], NULL: not given). */
char *proto_request_encode_named(const struct proto_command *cmd, const char *const vals[]);

/*
 * Parses a request: the version, a known command, its arguments (named or "args"). 0, or
 * -1 with the reason in err (as the daemon answers it).
 */
int proto_request_decode(const char *buf, size_t len, struct proto_request *out, char *err,
                         size_t errlen);
void proto_request_free(struct proto_request *r);
/* The value of the argument called name, or NULL when absent. */
const char *proto_request_get(const struct proto_request *r, const char *name);

/*
 * A tcp:// control endpoint answers only requests that carry the admin token (ipc://
 * sockets are protected by their file mode). For a tcp:// url and a token, returns req
 * with a "token" member added (req is freed); otherwise req itself. NULL when out of
 * memory (req is freed).
 */
char *proto_request_authorize(char *req, const char *url, const char *token);
/* 1 when url is a tcp:// endpoint (the token is required). */
int proto_url_needs_token(const char *url);

/* A reply object with "v" and "ok" set; the caller adds to it and frees it. */
cJSON *proto_reply_ok(void);
/* An error reply as JSON text; the caller frees it with cJSON_free(). */
char *proto_reply_error(const char *message);

/*
 * Parses a reply: the object (the caller frees it with cJSON_Delete) and *ok; NULL with
 * the reason in err when it is not a reply.
 */
cJSON *proto_reply_decode(const char *buf, size_t len, int *ok, char *err, size_t errlen);

#endif
