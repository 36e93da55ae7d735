#ifndef GW_GW_H
#define GW_GW_H

/*
 * The daemon's core types: the process-wide state (struct gw), the immutable runtime
 * snapshot that workers read (struct runtime), backends with their shared health and
 * per-worker pools, and the worker threads. Details of connections and exchanges are
 * in client.h and proxy.h.
 */

#include <netinet/in.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/socket.h>

#include "balance.h"
#include "circuit.h"
#include "config.h"
#include "http.h"

#define GW_MAX_WORKERS 64
#define GW_CACHELINE 64
/* A backend that comes back ramps its weight from 10% to 100% over this long. */
#define GW_SLOWSTART_MS 10000

struct worker;
struct upconn;
struct geo;

enum backend_admin { BACKEND_ENABLED, BACKEND_DRAINING, BACKEND_DISABLED };

/*
 * Per-worker slice of a backend: only the owning worker writes it; other threads read
 * the counters with relaxed atomics (for /stats), so no lock and no shared cache line
 * is touched per request.
 */
struct backend_pw {
	struct upconn *idle; /* LIFO of idle keep-alive connections: warmest first */
	uint32_t nidle;
	uint32_t nconns; /* open upstream connections of this worker */
	_Atomic uint64_t requests;
	_Atomic uint64_t failures;
	_Atomic uint64_t latency_us_sum;
	_Atomic uint64_t responses; /* requests that got a response (for the average) */
} __attribute__((aligned(GW_CACHELINE)));

/*
 * A backend. Objects outlive reloads: a new runtime reuses the object of the same id
 * and address, so health, circuit and pools carry over. Reference counted by the
 * runtimes that list it and by upstream connections.
 */
struct backend {
	char id[CONFIG_NAME_MAX];
	char dc[CONFIG_NAME_MAX];
	char addrtext[300];
	struct sockaddr_storage addr;
	socklen_t addrlen;
	uint64_t id_hash;
	_Atomic int weight;
	_Atomic int max_conns;

	_Atomic int refs;
	_Atomic int healthy;      /* active checks' verdict (starts healthy) */
	_Atomic int admin;        /* enum backend_admin */
	_Atomic uint32_t active;  /* in-flight requests over all workers */
	_Atomic uint64_t up_since_ms; /* for slow start; 0 = long up */
	_Atomic uint64_t ewma_us; /* response time, EWMA, written racily by workers */
	_Atomic uint64_t ewma_at_ms; /* when ewma_us was last updated */
	_Atomic uint32_t recent_failures; /* decays in the health thread */
	struct circuit circuit;

	/* health checker state (health thread only) */
	int hc_ok_streak, hc_fail_streak;

	struct backend_pw pw[GW_MAX_WORKERS];
};

/*
 * Everything a worker needs to serve requests under one configuration. Immutable once
 * published; a reload or an admin change builds a new one and swaps gw.rt. Workers
 * keep using the snapshot a request started with (see worker_rt_acquire).
 */
struct runtime {
	_Atomic int refs;
	struct config *cfg;
	struct backend **backends;
	int nbackends;
	struct cidr_tree *trusted;
	struct cidr_tree *exempt;
	struct cidr_tree *admin_allow;
	struct geo *geo; /* geo.h: static entries, MMDB, datacenter of each backend */
	struct http_limits limits;
	uint64_t generation;
	/* SSL_CTX of each listen line of cfg (NULL for plain ones), loaded by runtime_build:
	 * a reload brings new certificates; a connection's SSL keeps its own reference */
	struct ssl_ctx_st **tls_ctx;
};

struct gw {
	_Atomic(struct runtime *) rt;
	_Atomic uint64_t rt_generation;
	_Atomic int strategy; /* enum balance_strategy; changed live */
	_Atomic int draining; /* SIGTERM received: stop accepting, finish in-flight */
	_Atomic int queued;   /* requests waiting in every worker's queue */
	struct worker *workers[GW_MAX_WORKERS];
	int nworkers;
	uint64_t start_ms;
	const char *admin_token; /* GATEWAYD_ADMIN_TOKEN, or NULL */
	struct ratelimit *ip_limiter;
	struct ratelimit *id_limiter;    /* tier limits, by identity name */
	struct auth_ctx *auth;           /* JWT signing and verification */
	struct auth_cache *auth_cache;   /* verified access tokens */
	char *db_url;
	char *config_path;
	char **overrides;
};

extern struct gw gw;

/* runtime.c */
/* Builds a runtime for cfg (takes ownership of cfg), reusing backends of old by id. */
struct runtime *runtime_build(struct config *cfg, const struct runtime *old);
void runtime_ref(struct runtime *rt);
void runtime_unref(struct runtime *rt);
/* Publishes rt as the current runtime; the old one is released when unused. */
void runtime_publish(struct runtime *rt);
/* The current runtime with a reference taken (caller unrefs). For non-worker threads. */
struct runtime *runtime_get(void);
/* runtime_get for any thread (the control thread): the caller unrefs. */
struct runtime *runtime_acquire(void);
/*
 * Loads the configuration file with overrides (NULL: gw.overrides) and makes it the
 * running one: a runtime built from the current one (backends of the same id and
 * address carry over), the access log retargeted, the workers woken. take_strategy: the
 * file's strategy replaces the running one. Any thread; reloads run one at a time. A
 * given list (heap strings; it may share strings with gw.overrides) becomes gw.overrides
 * and the old list is freed: only the control thread passes one, and gw.overrides is
 * read only under the reload lock or on that thread. 0, or -1 with the parser's message
 * in err and nothing changed (the list stays the caller's).
 */
int runtime_reload(char **overrides, int take_strategy, char *err, size_t errlen);

/* backend.c */
struct backend *backend_new(const struct config_backend *cb, const struct config *cfg);
void backend_ref(struct backend *b);
void backend_unref(struct backend *b);
/* Slow-start-adjusted weight. */
int backend_effective_weight(struct backend *b, uint64_t now_ms);
/* Sum of a per-worker counter over all workers. */
uint64_t backend_sum(const struct backend *b, size_t field_offset);
void backend_set_healthy(struct backend *b, int healthy, uint64_t now_ms);
const char *backend_admin_name(int admin);

#endif
