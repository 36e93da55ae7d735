#ifndef GW_REDIS_H
#define GW_REDIS_H

/*
 * Shared state across gateway instances (the `redis` directive).
 *
 * - Tier limits: each worker has its own hiredis async connection on its own event loop.
 *   A limited request sends one EVALSHA of a GCRA script (the TAT lives in Redis, the
 *   clock is Redis's TIME, so every instance counts against one quota) and waits in
 *   X_WAIT without blocking the loop; the reply resumes the pipeline (router.c). Every
 *   command issued in one loop pass goes out in one write, and replies are read in bulk:
 *   pipelining is per worker connection. A key whose last answer said "over the limit"
 *   is refused locally until its retry time, without a round-trip.
 * - Blocks, bans, token revocations, key and user changes: identity.c tells us of every
 *   change; we PUBLISH it on a channel, and a subscriber thread applies the changes of
 *   the other instances to identity.c's tables as they arrive.
 * - Failure: while Redis cannot be reached, redis_failure open limits locally, closed
 *   refuses with 503; connections come back with a capped exponential backoff.
 */

#include <stddef.h>
#include <stdint.h>

struct config;
struct exchange;
struct worker;
struct conf_rate;
struct ratelimit_result;

#define REDIS_HOST_MAX 256
#define REDIS_SECRET_MAX 128

/* A parsed redis://[[USER]:PASSWORD@]HOST[:PORT][/DB] URL. */
struct redis_url {
	char host[REDIS_HOST_MAX];
	int port;                        /* [6379] */
	int db;                          /* [0] */
	char user[REDIS_SECRET_MAX];     /* "" unless given (Redis 6 ACL user) */
	char password[REDIS_SECRET_MAX]; /* "" for no AUTH */
};

/* 0 and u filled, or -1 with a message in err (never echoes the password). */
int redis_url_parse(const char *text, struct redis_url *u, char *err, size_t errlen);

/* How the tier-limit stage goes on (router.c). */
enum redis_verdict {
	REDIS_LOCAL,       /* decide with the local limiter (no Redis, or down and open) */
	REDIS_DECIDED,     /* res holds the shared decision */
	REDIS_WAIT,        /* a command is out: the reply resumes x (router_tier_resume) */
	REDIS_UNAVAILABLE, /* down and redis_failure closed: answer 503 */
};

/* Set by redis_start when `redis` is configured; the hot path's one test. */
extern int redis_on;

/*
 * Starts the shared state for cfg (no-op without `redis`): the publisher/subscriber
 * thread, and identity.c's change hooks. Before the workers start. 0, or -1 with err.
 */
int redis_start(const struct config *cfg, char *err, size_t errlen);
void redis_stop(void);

/*
 * The shared tier limit of x's identity under rate. DECIDED fills res; WAIT means x is
 * in X_WAIT and router_tier_resume() runs later on x's worker (or x is released, when
 * its client left meanwhile). On x's worker only.
 */
enum redis_verdict redis_limit(struct exchange *x, const struct conf_rate *rate,
                               struct ratelimit_result *res);
/*
 * The last shared state this instance saw for name (rate-limit headers of uncounted
 * responses, /usage), read without a round-trip: a full quota when unknown. Any thread.
 */
void redis_peek(const char *name, const struct conf_rate *rate, struct ratelimit_result *res);

/*
 * A tier change of name from rate `from` to `to` (api_admin.c, next to ratelimit_rescale):
 * its shared state is rescaled in Redis the same way, and every instance forgets the
 * state it last saw. Any thread; queued for the events thread.
 */
void redis_rescale(const char *name, const struct conf_rate *from, const struct conf_rate *to);

/*
 * The shared level of the response cache (`cache shared=redis`; cache.c, cache_shared.h).
 * Keys carry a generation number that every purge increments in Redis (INCR
 * gw:cache:gen); it is read when the publisher connects and carried by the purge
 * messages. -1 while unknown (not read yet, or a purge of ours not yet counted): the
 * shared level is then skipped, so that no entry from before a purge is read or written.
 */
int64_t redis_cache_gen(void);
/*
 * Asks for the values of keys[0..n) (n 1 or 2, NUL-terminated names) with one MGET on x's
 * worker connection: 0 when sent (x is in X_WAIT; cache_shared_reply() runs later on x's
 * worker), -1 when the connection is down (x goes on at once). On x's worker only.
 */
int redis_cache_get(struct exchange *x, const char *const *keys, int n);
/* Fire-and-forget commands on w's connection (counted; errors only counted). */
void redis_cache_set(struct worker *w, const char *key, const char *val, size_t vlen,
                     uint64_t px_ms);
void redis_cache_del(struct worker *w, const char *const *keys, int n);
/* A purge of every instance's cache: entries whose request-target starts with prefix
 * ("" or NULL: all) leave every other instance's memory, and the shared level is
 * retired (a new generation). Any thread; the caller purged its own memory. */
void redis_cache_purge(const char *prefix);

enum redis_cache_event { RC_HIT, RC_MISS, RC_ERROR, RC_STORED, RC_TOO_LARGE, RC_COUNT };
/* Counts one event of the shared level (gatewayd_cache_shared_total). Any thread. */
void redis_cache_count(enum redis_cache_event ev);

/*
 * cache.c: the answer to redis_cache_get for x: the first value found (val, len, the
 * index of its key), or val NULL (nothing found, or failed set: Redis down, an error, no
 * reply in time). On x's worker, x no longer waiting; x's client may have left (x->c
 * NULL): x is then released.
 */
void cache_shared_reply(struct exchange *x, const char *val, size_t len, int which, int failed);

/* Prometheus text of the gatewayd_redis_* metrics; malloc'd, the caller frees. */
char *redis_metrics_text(void);

/*
 * router.c: finishes the tier-limit stage of x with a verdict that came back from Redis
 * (DECIDED with res, LOCAL or UNAVAILABLE after a failure) and runs the rest of the
 * pipeline. On x's worker, with x back in phase X_HEAD.
 */
void router_tier_resume(struct exchange *x, int verdict, const struct ratelimit_result *res);

#endif
