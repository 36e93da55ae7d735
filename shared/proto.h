#ifndef GW_PROTO_H
#define GW_PROTO_H

/*
 * The control-plane protocol, defined once (DESIGN section 5, as tmux does): gatectl's
 * parser and gatewayd's dispatcher both read proto_commands[], so a new command is one
 * table entry plus one handler. A request is {"v":N,"cmd":"...","args":["...",...]}, a
 * reply {"v":N,"ok":true,...} or {"v":N,"ok":false,"error":"..."}.
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
};

struct proto_command {
	const char *name;
	const char *usage; /* the arguments, as a usage line shows them */
	const char *help;
	int min_args;
	int max_args;
	enum proto_handler handler;
};

struct proto_request {
	const struct proto_command *cmd;
	int argc;
	char *argv[PROTO_MAX_ARGS]; /* owned: freed by proto_request_free() */
};

extern const struct proto_command proto_commands[];
extern const int proto_ncommands;

/* The table entry of name, or NULL. */
const struct proto_command *proto_find(const char *name);

/* The request as JSON text; the caller frees it with cJSON_free(). NULL on failure. */
char *proto_request_encode(const struct proto_command *cmd, int argc, char *const argv[]);

/*
 * Parses a request: the version, a known command, its argument count. 0, or -1 with the
 * reason in err (as the daemon answers it).
 */
int proto_request_decode(const char *buf, size_t len, struct proto_request *out, char *err,
                         size_t errlen);
void proto_request_free(struct proto_request *r);

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
