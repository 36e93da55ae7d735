#ifndef GW_PROXY_H
#define GW_PROXY_H

/*
 * One request/response exchange of a client connection, and the upstream connections
 * it is proxied over. The exchange owns two buffers: `in` holds the request as the
 * client sent it (head, then body as it streams), `out` the response as the backend
 * sends it, or a response the gateway produced. Bytes are forwarded from these
 * buffers with writev; inserted headers go out in the same writev.
 */

#include "geo.h"
#include "identity.h"
#include "worker.h"

enum xphase {
	X_HEAD,      /* reading the request head */
	X_QUEUED,    /* waiting for a backend slot */
	X_UPSTREAM,  /* connected or connecting, request going out, response coming in */
	X_LOCAL,     /* writing a response the gateway made */
	X_TUNNEL,    /* after 101: raw bytes both ways */
	X_BODY,      /* a built-in endpoint is reading its (small) request body */
	X_WAIT,      /* a job (bcrypt, database) runs on the pool for it (jobs.h) */
};

enum upconn_state { UP_CONNECTING, UP_IDLE, UP_BUSY };

struct upconn {
	int fd;
	struct event ev;
	struct worker *w;
	struct backend *b; /* referenced */
	struct upconn *next_idle;
	struct exchange *x; /* while busy */
	uint8_t state;
	uint8_t readable, writable;
	uint8_t reused; /* served a previous request */
	uint8_t hup;    /* the backend closed or reset: read until 0 */
	uint64_t idle_since_ms;
};

struct exchange {
	struct client *c;
	struct worker *w;
	struct runtime *rt; /* snapshot this exchange runs under */
	struct exchange *next_free;
	struct exchange *qnext; /* queue link */
	uint8_t phase;          /* enum xphase */
	uint8_t job_pending;    /* a job holds a pointer to this exchange */
	uint8_t qprio;
	uint64_t qdeadline_ms;

	struct iobuf in, out;
	struct http_msg req;
	struct http_msg resp;

	uint8_t client_ip[16];
	struct identity id; /* the caller (identify.c), IDENTITY_NONE when anonymous */
	char ip_name[72];   /* "ip:ADDR": the client address as a ban name */
	uint8_t rl_set;     /* a tier limit decided: rate-limit headers go out */
	const char *error_code; /* respond_error's code (static string), for the access log */
	const char *cache_status; /* "HIT" "MISS" "BYPASS" "STALE" (cache.c), NULL: no cache */
	struct cache_entry *cache_ent;  /* referenced: being served, or stale and revalidated */
	struct cache_fill *cache_fill;  /* this exchange's response fills the cache */
	struct cache_fill *cache_wfill; /* the fill this exchange waits for (cache_wait 1) */
	struct exchange *cache_wnext;   /* next waiter of a fill, or next in a wake queue */
	uint8_t cache_wait;             /* 1 waiting for a fill, 2 woken, in a wake queue */
	uint8_t cache_reval;            /* the request upstream carries the entry's validators */
	uint8_t cache_unsafe;           /* an unsafe method: invalidate the URL on success */
	uint8_t cache_shard_ix;         /* the shard of the fill waited for */
	uint64_t cache_url_hash;        /* the URL an unsafe method invalidates */
	uint32_t cache_age_s;           /* Age of the entry served */
	uint8_t cache_nsdig;            /* unsafe method, shared level: keys to delete on success */
	uint8_t cache_sdig[2][16];      /* their digests (cache_shared.h) */
	char geo_country[4];      /* ISO country of the client (geo.c), "" when unlocated */
	struct geo_client geo;    /* geo.c: datacenter order for this client */
	uint8_t target_saved;     /* saved_target holds the request line: the head is gone */
	uint64_t rl_limit, rl_remaining, rl_reset_s, rl_window_s;
	char request_id[132];
	uint8_t request_id_len;
	uint8_t request_id_generated;
	const struct config_route *route;
	const char *path; /* the request's path (absolute-form: after the authority) */
	uint32_t path_len;
	uint64_t start_us;
	uint64_t sent_us; /* the whole request was written to the backend */
	uint64_t head_started_ms;
	/* request body pace, checked by the worker's tick (worker.c): bytes and time at the
	 * last progress, and at the start of the current rate window */
	uint64_t body_seen, body_seen_ms;
	uint64_t body_win, body_win_ms;

	/* upstream side */
	struct backend *b;
	struct upconn *u;
	int attempts;        /* backends tried */
	uint32_t tried_mask; /* backends tried (indexes in rt, first 32) */
	uint8_t counted_active; /* b->active was incremented */
	uint8_t reuse_retry_done;
	uint8_t req_head_sent;
	uint8_t req_done;      /* whole request sent upstream */
	uint8_t resp_started;  /* a response byte arrived */
	uint8_t resp_head_sent; /* client got the response head */
	uint8_t resp_done;
	uint8_t resp_settled;  /* counted, logged, cached (proxy_settle) */
	uint8_t sent_continue;
	uint8_t close_client;  /* close after this response */
	uint8_t buffered;      /* the whole request is still in `in`: retryable */
	uint8_t last_fail_timeout; /* the last backend failure was a timeout (504) */
	uint8_t short_read;    /* the last upstream read did not fill the buffer */
	uint64_t req_body_left;
	struct http_chunked req_chunk;
	uint64_t resp_body_left;
	struct http_chunked resp_chunk;
	uint64_t up_deadline_ms;

	char req_extra[768];  /* headers the gateway adds to the request */
	char resp_extra[1024]; /* ... and to the response */
	char line_extra[160]; /* rewritten request line when needed */
	/* "METHOD target" for the access log, copied only when a streamed request body
	 * overwrites the head in `in` (valid when target_saved) */
	char saved_target[176];
	struct sendq upq;   /* to the backend (reset by sendq_reset, not memset) */
	struct sendq cliq;  /* to the client */
	void (*body_handler)(struct exchange *); /* runs when X_BODY completes */
	char *heap;         /* a local response body too large for `out` (freed at reset) */
	char *line_heap;    /* a rewritten request line (freed at reset) */
	int status;         /* status sent to the client, for stats */
	uint64_t bytes_out;
};

/* proxy.c */
/* Picks a backend: 1 picked (x->b set, slot taken), 0 all busy (queue), -1 none up. */
int proxy_pick(struct exchange *x);
/* A backend's response-time EWMA in ms, halved per second without a measurement. */
double proxy_ewma_ms(struct backend *b, uint64_t now);
/* Sets x->request_id: the client's when well-formed (SPEC 5), else a new UUID. */
void proxy_make_request_id(struct exchange *x);
/* 1 when request header h of x goes to the backend (not hop-by-hop, not a credential
 * the route keeps, not a client validator a revalidation replaces): cache_bg.c. */
int proxy_request_header_forwarded(const struct exchange *x, const struct http_header *h);
/* 1 for the headers never passed on either way: hop-by-hop (RFC 9110 7.6.1) and
 * X-Request-Id, which the gateway sets itself. */
int proxy_hop_header(const struct http_header *h);
/* Appends X-User-Id and X-User-Tier for an identified caller at dst + off; the new off. */
size_t proxy_identity_headers(const struct exchange *x, char *dst, size_t off, size_t cap);
/* Connects x to its picked backend and starts sending. */
void proxy_go(struct exchange *x);
/* Starts proxying x (route chosen, checks passed): pick a backend, queue or connect. */
void proxy_start(struct exchange *x);
/* Called on readiness changes of the client while an exchange is upstream. */
void proxy_run(struct exchange *x);
/* Deadline reached for x's upstream phase. */
void proxy_timeout(struct exchange *x);
/* The client went away or errored: detach from upstream. */
void proxy_abort(struct exchange *x);
void upconn_event(evutil_socket_t fd, short what, void *arg);
/* Closes idle upstream connections older than idle_ms (tick). */
void upstream_reap_idle(struct worker *w, struct runtime *rt, uint64_t idle_ms);
/* Closes every idle upstream connection of this worker (shutdown). */
void upstream_close_all_idle(struct worker *w, struct runtime *rt);

/* queue.c */
/* Enqueues x (no backend slot): 0 queued, -1 full (caller answers 503 queue_full). */
int queue_push(struct exchange *x);
void queue_remove(struct exchange *x);
/* Retries queued exchanges (a slot may be free) and expires the ones past deadline. */
void queue_service(struct worker *w);

/* client.c */
/* Gives an exchange back to its worker's freelist (the client is gone or done). */
void client_exchange_release(struct exchange *x);
/* Finishes the current exchange: keep-alive and next request, or close. */
void client_exchange_done(struct exchange *x);
void client_close(struct client *c);
/* The deadline of c's waiting exchange (X_WAIT) passed: 504 written once, then closed. */
void client_wait_expired(struct client *c);
/* Continues writing the client's pending output; 1 done, 0 pending, -1 error. */
int client_flush(struct client *c);
ssize_t client_read(struct client *c, char *buf, size_t len);
ssize_t client_writev(struct client *c, const struct iovec *iov, int cnt);
void client_event(evutil_socket_t fd, short what, void *arg);
void client_accept(struct worker *w, struct listener *l, int fd, const struct sockaddr *sa);
void client_run(struct client *c);

/* respond.c */
/*
 * Makes x answer with a gateway error (SPEC section 4): JSON body, extra header lines
 * (each ending in CRLF) may be NULL. Starts writing it.
 */
void respond_error(struct exchange *x, int status, const char *code, const char *message,
		   const char *extra_headers, const char *extra_json);
/* Answers with a JSON body (already serialised). */
void respond_json(struct exchange *x, int status, const char *json, size_t len,
		  const char *extra_headers);
/* 429 with Retry-After and the fields SPEC section 4 names. */
void respond_rate_limited(struct exchange *x, const char *code, const char *tier,
			  uint64_t limit, uint64_t window_s, uint64_t retry_after_ms);

/* router.c */
/* Runs the pipeline stages for a parsed request. */
void router_dispatch(struct exchange *x);
/* Runs the stages after the cache's (a coalesced miss that goes upstream after all). */
void router_after_cache(struct exchange *x);
/* Reads more of a built-in endpoint's body (phase X_BODY); runs its handler when whole. */
void router_read_body(struct exchange *x);
/* 1 when the request's peer may use /admin-level endpoints (answers 401/403 if not). */
int router_admin_check(struct exchange *x);


/* sendq helpers (proxy.c) */
void sendq_reset(struct sendq *q);
void sendq_add(struct sendq *q, const void *p, size_t n);
/* Writes what it can: 1 all written, 0 would block, -1 error. */
int sendq_flush_fd(struct sendq *q, int fd, ssize_t (*wv)(void *, const struct iovec *, int),
		   void *arg);

#endif
