#ifndef GW_API_H
#define GW_API_H

/*
 * Built-in endpoints (SPEC section 6). router.c's table maps method and path to these
 * handlers and, before calling one:
 *  - reads the whole JSON body of a POST into x->in (x->in.data + x->req.head_len,
 *    x->req.content_length bytes; at most 64 KB);
 *  - for endpoints marked JWT / CREDENTIAL resolves the caller into x->id (struct
 *    identity, identity.h) or answers 401 itself;
 *  - for ADMIN endpoints checks the admin token / role=admin JWT and admin_allow.
 * A handler answers with respond_json()/respond_error() at once, or submits a job
 * (jobs.h) whose run() does the blocking part (bcrypt, database) on a pool thread.
 * x->path / x->path_len hold the path (for /auth/api-keys/{prefix}).
 */

#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

struct exchange;

/* api_stats.c */
void api_health(struct exchange *x);
void api_ready(struct exchange *x);
void api_stats(struct exchange *x);

/* metrics.c */
void api_metrics(struct exchange *x); /* GET /metrics, Prometheus text 0.0.4 */

/* api_admin.c (admin) */
void api_change_strategy(struct exchange *x);
void api_admin_users(struct exchange *x);
/* ?limit=N of /logs and /admin/logs: 1..1000, absent 100. 0, or -1 when bad. */
int api_admin_parse_limit(const struct exchange *x, int *limit);
/* GET /logs: the newest access-log entries (accesslog.c's ring). */
void api_logs(struct exchange *x);
void api_admin_upgrade_tier(struct exchange *x);
void api_admin_block_key(struct exchange *x);
void api_admin_unblock_key(struct exchange *x);
void api_admin_block_ip(struct exchange *x);
void api_admin_unblock_ip(struct exchange *x);
void api_admin_logs(struct exchange *x);

/*
 * For the control plane (control.c): an admin action run at once on the calling thread
 * with its store st (may be NULL: 503), answered into *j as over HTTP (j->status, j->body
 * that the caller frees; j needs no exchange). who names a key (the whole key, or a
 * prefix when no whole key matches) or a user ("u:ID" or ID); tier: API_ADMIN_TIER only.
 */
enum api_admin_op { API_ADMIN_USERS, API_ADMIN_TIER, API_ADMIN_BLOCK, API_ADMIN_UNBLOCK };
struct config;
struct job;
struct store;
void api_admin_control(enum api_admin_op op, const char *actor, const char *who, const char *tier,
                       const struct config *cfg, struct store *st, struct job *j);
/* The key who names: the whole key, else a unique live prefix. 0 (*k filled),
 * STORE_NOTFOUND, a positive value when several live keys share the prefix, -1. */
struct store_key;
int api_admin_key_lookup(struct store *st, const char *who, struct store_key *k);

/* api_auth.c */
void api_auth_register(struct exchange *x);    /* none */
void api_auth_login(struct exchange *x);       /* none */
void api_auth_refresh(struct exchange *x);     /* none */
void api_auth_logout(struct exchange *x);      /* JWT */
void api_auth_me(struct exchange *x);          /* JWT */
void api_auth_keys_create(struct exchange *x); /* JWT */
void api_auth_keys_list(struct exchange *x);   /* JWT */
void api_auth_keys_rotate(struct exchange *x); /* JWT or key */
void api_auth_keys_revoke(struct exchange *x); /* JWT; DELETE /auth/api-keys/{prefix} */
void api_auth_migrate(struct exchange *x);     /* none */
void api_auth_jwks(struct exchange *x);        /* none */
void api_usage(struct exchange *x);            /* credential */

/* api_auth.c pieces the control plane (control.c) shares. */
#define API_AUTH_NEW_KEY_MAX 80 /* a whole new key and its NUL */
struct store_key;
struct identity;
struct ratelimit_result;
/* Creates the key k describes (tier, user_id, expires_at) with a fresh secret: the whole
 * key into key, its hash and prefix into k. In the caller's transaction, if open. 0, -1. */
int api_auth_key_new(struct store *st, char key[API_AUTH_NEW_KEY_MAX], struct store_key *k);
/* Gives old a successor of the same tier and owner (the whole key into key, the row into
 * k) and ends old after the grace period (old->expires_at set). In the caller's
 * transaction. 0 or -1. */
int api_auth_key_rotate(struct store *st, struct store_key *old, char key[API_AUTH_NEW_KEY_MAX],
                        struct store_key *k, int64_t now);
/* Publishes a stored key to the hot path's tables. */
void api_auth_key_publish(const struct store_key *k);
/* The /usage object of id (the caller frees it); the limiter's reading into *res (may
 * be NULL). */
cJSON *api_usage_object(const struct config *cfg, const struct identity *id, uint64_t now_ms,
                        struct ratelimit_result *res);

/*
 * Request bodies of the /auth endpoints (api_auth.c), read by one pure function (no
 * I/O, no globals) that tests/fuzz/fuzz_json_body.c drives with arbitrary bytes. The
 * flags name the fields a body may carry.
 */
#define API_AUTH_EMAIL 0x01u        /* "email": one '@', a dot in the domain; lower-cased */
#define API_AUTH_PASSWORD 0x02u     /* "password": 1..API_AUTH_PASSWORD_MAX bytes */
#define API_AUTH_NEW_PASSWORD 0x04u /* "password" of a new account: also >= 8 characters */
#define API_AUTH_TIER 0x08u         /* "tier" */
#define API_AUTH_REFRESH 0x10u      /* "refresh_token" */
#define API_AUTH_API_KEY 0x20u      /* "api_key" */
#define API_AUTH_EXPIRES_IN 0x40u   /* "expires_in": whole seconds */

#define API_AUTH_EMAIL_MAX 254
#define API_AUTH_PASSWORD_MIN 8    /* characters (UTF-8 code points) */
#define API_AUTH_PASSWORD_MAX 72   /* bytes: AUTH_PASSWORD_MAX, bcrypt's limit */
#define API_AUTH_TIER_MAX 31       /* bytes: what the store and the tokens hold */
#define API_AUTH_TOKEN_MAX 8192    /* AUTH_TOKEN_MAX */
#define API_AUTH_KEY_MAX 256
#define API_AUTH_EXPIRES_MAX 315360000 /* ten years */

struct api_auth_body {
	unsigned have; /* API_AUTH_* flags of the fields found (NEW_PASSWORD: never) */
	char email[API_AUTH_EMAIL_MAX + 1];
	char password[API_AUTH_PASSWORD_MAX + 1];
	char tier[API_AUTH_TIER_MAX + 1];
	char refresh_token[API_AUTH_TOKEN_MAX + 1];
	char api_key[API_AUTH_KEY_MAX + 1];
	int64_t expires_in;
};

/*
 * Parses buf[0..len) (need not be NUL-terminated; len 0 or only blanks is a missing
 * body, read as {}) as one JSON object and copies the fields named in `want` into *out;
 * those in `need` must be present (JSON null reads as absent). Other members are
 * ignored. 0, or -1 with a sentence naming the offending field in err (it never
 * quotes the input).
 */
int api_auth_parse_body(const char *buf, size_t len, unsigned want, unsigned need,
			struct api_auth_body *out, char *err, size_t errlen);

#endif
