#ifndef GW_CONFIG_H
#define GW_CONFIG_H

#include <netinet/in.h>
#include <stdint.h>
#include <sys/socket.h>

#include "cidr.h"
#include "conf.h"

/*
 * The parsed configuration (gatewayd.conf(5)). A struct config is immutable once
 * loaded: a reload parses a new one and swaps it in. All arrays are owned by the
 * struct and freed by config_free().
 */

#define CONFIG_NAME_MAX 64
#define CONFIG_PATH_MAX 1024

enum config_auth {
	CONFIG_AUTH_OFF,    /* pure pass-through: credentials not looked at, forwarded */
	CONFIG_AUTH_NONE,   /* anonymous allowed, limited per IP only */
	CONFIG_AUTH_JWT,    /* (identity issue) */
	CONFIG_AUTH_APIKEY, /* (identity issue) */
	CONFIG_AUTH_ANY,    /* (identity issue) */
};

struct config_listen {
	char text[CONFIG_NAME_MAX * 2]; /* as written, "0.0.0.0:8080" */
	struct sockaddr_storage addr;
	socklen_t addrlen;
	int tls;
	char cert[CONFIG_PATH_MAX];
	char key[CONFIG_PATH_MAX];
};

struct config_backend {
	char id[CONFIG_NAME_MAX];
	char host[256];
	uint16_t port;
	struct sockaddr_storage addr; /* resolved at load time */
	socklen_t addrlen;
	int weight;                 /* [1] 1..1000 */
	char dc[CONFIG_NAME_MAX];   /* "" when not given */
	int max_conns;              /* [256] per backend, 1..100000 */
};

struct config_datacenter {
	char name[CONFIG_NAME_MAX];
	double lat, lon;
	char residency[CONFIG_NAME_MAX]; /* "" none; EU, EEA or an ISO country code (geo.c) */
};

/* geo_static CIDR [country=CC] [lat=DEG lon=DEG] */
struct config_geo_static {
	struct cidr net;
	char country[3]; /* "" when not given */
	double lat, lon;
	int has_pos;
};

enum config_geo_mode { CONFIG_GEO_DISTANCE, CONFIG_GEO_LATENCY };

/* geo_http URL [timeout=D] [ttl=D] [negative_ttl=D] [max=N] (geo_http.c) */
struct config_geo_http {
	char url[CONFIG_PATH_MAX]; /* "" none; "{ip}" is replaced by the client address */
	uint64_t timeout_ms;       /* [500ms] whole lookup */
	uint64_t ttl_ms;           /* [1h] cached answers */
	uint64_t negative_ttl_ms;  /* [5m] cached failures and unknown addresses */
	int max;                   /* [16] lookups in flight per worker */
};

enum config_redis_failure { CONFIG_REDIS_OPEN, CONFIG_REDIS_CLOSED };

struct config_route {
	char prefix[512];
	size_t prefix_len;
	enum config_auth auth; /* [none] */
	int cache;             /* [0] cache=on: responses are cached (cache.h) */
	uint64_t cache_ttl_ms; /* [0: the cache directive's ttl] cache_ttl= */
	int forward_auth;      /* [0] */
	char min_tier[CONFIG_NAME_MAX];
};

/* A tier: a name and its limit. Order matters: later tiers rank higher (min_tier=,
 * queue priority). The four of SPEC section 5 come first, in rank order. */
struct config_tier {
	char name[CONFIG_NAME_MAX];
	struct conf_rate rate;
};

#define CONFIG_MAX_TIERS 16

struct config_ban {
	uint64_t threshold;  /* [10] rejections inside one window that earn a ban */
	uint64_t base_ms;    /* [300s] first ban */
	uint64_t multiplier; /* [2] each further ban */
	uint64_t max_ms;     /* [24h] */
};

struct config_jwt {
	char alg[8];             /* [HS256] HS256 | RS256 | ES256 */
	uint64_t access_ttl_ms;  /* [1h] */
	uint64_t refresh_ttl_ms; /* [7d] */
	uint64_t leeway_ms;      /* [30s] */
	char issuer[128];        /* [gatewayd] */
	char private_key[CONFIG_PATH_MAX]; /* RS256/ES256 signing key (PEM) */
	char public_key[CONFIG_PATH_MAX];  /* RS256/ES256 verification key (PEM) */
};

struct config_timeouts {
	uint64_t connect_ms;       /* [2s] */
	uint64_t response_ms;      /* [30s] */
	uint64_t client_header_ms; /* [10s] */
	uint64_t client_idle_ms;   /* [60s] */
	uint64_t client_body_ms;   /* [20s] most a request body may stall; its rate window */
};

struct config_limits {
	uint64_t header;  /* [32kb] total request head bytes */
	uint64_t headers; /* [100] header count, <= HTTP_MAX_HEADERS */
	uint64_t body;    /* [1mb] */
	uint64_t uri;     /* [8kb] */
	uint64_t conns;         /* [0: none] client connections, split evenly over workers */
	uint64_t conns_per_ip;  /* [0: none] client connections of one address */
	uint64_t min_body_rate; /* [500] bytes/s a request body averages per client_body */
};

struct config_health {
	char path[512];       /* [/health] */
	uint64_t interval_ms; /* [10s] */
	uint64_t timeout_ms;  /* [2s] */
	int rise;             /* [2] */
	int fall;             /* [2] */
};

struct config_circuit {
	int failures;     /* [5] consecutive failures that open the circuit */
	uint64_t open_ms; /* [30s] before a half-open probe */
};

struct config_queue {
	int max;             /* [1024] waiting requests per worker... see gatewayd.conf(5) */
	uint64_t timeout_ms; /* [5s] */
};

struct config_cache {
	uint64_t ttl_ms;     /* [30s] lifetime of responses without freshness information */
	uint64_t max_memory; /* [64mb] entries, keys, heads and bodies */
	char shared[16];     /* [""] shared=redis: Redis as a second level (cache_shared.h) */
	uint64_t shared_max_entry; /* [1mb] larger entries stay out of Redis */
};

struct config {
	char file[CONFIG_PATH_MAX]; /* "" for the embedded default */

	struct config_listen *listens;
	int nlistens;
	int workers; /* 0 = auto (number of cores) */
	char control[256];  /* [ipc:///tmp/gatewayd.ctl] nng REQ/REP (operator tools issue) */
	char publish[256];  /* [ipc:///tmp/gatewayd.pub] nng PUB */
	char access_log[CONFIG_PATH_MAX]; /* [off] "", "stdout", or a file path */
	char database[512]; /* [sqlite:gatewayd.db] (identity issue) */
	char redis[512];    /* [none] redis://[[USER]:PASSWORD@]HOST[:PORT][/DB] (redis.c) */
	uint64_t redis_timeout_ms; /* [1s] no reply for this long: the connection is down */
	int redis_tls;             /* [off] refused: this hiredis has no TLS */
	int redis_failure;         /* [open] enum config_redis_failure */

	int strategy; /* enum balance_strategy */
	struct config_backend *backends;
	int nbackends;
	struct config_datacenter *datacenters;
	int ndatacenters;
	char geo_db[CONFIG_PATH_MAX];         /* [none] MaxMind DB file */
	struct config_geo_static *geo_static; /* [none] */
	int ngeo_static;
	char geo_default[CONFIG_NAME_MAX];    /* [none: all backends] a datacenter */
	int geo_mode;                         /* [distance] enum config_geo_mode */
	struct config_geo_http geo_http;      /* [none] */
	struct config_route *routes; /* sorted longest prefix first */
	int nroutes;

	struct config_timeouts timeouts;
	struct config_limits limits;
	struct config_health health;
	struct config_circuit circuit;
	int retries; /* [1] */
	struct config_queue queue;
	struct config_cache cache;

	struct config_tier tiers[CONFIG_MAX_TIERS]; /* [free basic premium enterprise] */
	int ntiers;
	struct config_ban ban;
	struct config_jwt jwt;
	char register_tiers[CONFIG_MAX_TIERS][CONFIG_NAME_MAX]; /* [free] */
	int nregister_tiers;

	struct conf_rate ip_limit;         /* [100/60s] */
	struct cidr *ip_limit_exempt;      /* [none] */
	int nip_limit_exempt;
	struct cidr *trusted_proxy;        /* [none] */
	int ntrusted_proxy;
	struct cidr *admin_allow;          /* [127.0.0.0/8 ::1] */
	int nadmin_allow;
};

/* The embedded default configuration (used when no -c is given). */
extern const char config_default_text[];

/*
 * Loads a configuration. path NULL means the embedded default. overrides is a
 * NULL-terminated list of "KEY=VALUE" strings from -d: each replaces every line of
 * directive KEY in the file with one line "KEY VALUE". On error returns NULL and writes
 * "file:line: message" into err.
 * Returns a new struct config owned by the caller (config_free()).
 */
struct config *config_load(const char *path, char *const *overrides, char *err, size_t errlen);
/* Same, from text in memory; name is used in error messages. */
struct config *config_load_text(const char *name, const char *text, char *const *overrides,
				char *err, size_t errlen);
void config_free(struct config *c);
/* The route for a path (longest prefix), or NULL when none matches. */
const struct config_route *config_route_match(const struct config *c, const char *path,
					      size_t len);
const char *config_auth_name(enum config_auth a);
/* The name of the i-th directive the parser knows (0..), NULL past the last one. */
const char *config_directive_name(int i);
/* The tier's index (its rank: higher is better), or -1 when there is no such tier. */
int config_tier_find(const struct config *c, const char *name);

#endif
