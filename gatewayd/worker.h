#ifndef GW_WORKER_H
#define GW_WORKER_H

/*
 * Worker threads: one event_base each, one SO_REUSEPORT listening socket per `listen`
 * line, their own client connections, upstream pools and buffers. A request lives on
 * one worker from accept to last byte.
 */

#include <event2/event.h>
#include <event2/event_struct.h>
#include <openssl/ssl.h>
#include <pthread.h>
#include <stdint.h>
#include <sys/uio.h>

#include "gw.h"
#include "metrics.h"

struct exchange;
struct job;
struct ws_conn;
struct ws_worker;

/* A byte buffer: data[start..end) is pending. Owned by its exchange. */
struct iobuf {
	char *data;
	uint32_t cap;
	uint32_t start;
	uint32_t end;
};

/* Pending output: an iovec list written with writev and advanced on partial writes.
 * The iovecs point into buffers that stay put until the queue is empty. */
#define SENDQ_MAX 64
struct sendq {
	struct iovec iov[SENDQ_MAX];
	int cnt;
	int pos;
};

enum client_state {
	CS_IDLE,   /* keep-alive, no exchange: only the small struct is held */
	CS_HEAD,   /* reading a request head */
	CS_BUSY,   /* an exchange is being served */
	CS_TUNNEL, /* upgraded: bytes pumped both ways */
	CS_WS,     /* the gateway's own WebSocket server (ws.c): c->ws, no exchange */
};

struct listener {
	int fd;
	struct event ev;
	struct worker *w;
	int tls;
	int index;        /* its line in the configuration the workers started with */
	SSL_CTX *ssl_ctx; /* referenced: used when a reload changed the listen lines */
	char text[128];
};

struct client {
	int fd;
	struct event ev;
	struct worker *w;
	struct client *prev, *next; /* worker's list, for deadlines and shutdown */
	SSL *ssl;
	uint8_t state; /* enum client_state */
	uint8_t readable, writable;
	uint8_t tls_handshaking;
	uint8_t tls;
	uint8_t closed; /* client_close() ran; freed at the next tick */
	uint8_t hup;    /* the peer shut down its side: read until 0, no short-read shortcut */
	uint8_t ip_counted; /* counted in connlimit_global(): released at close */
	uint8_t peer[16]; /* peer address, 16-byte form (cidr.h) */
	uint8_t peer_text_len;
	char peer_text[47]; /* formatted once per connection, for X-Forwarded-For */
	uint16_t peer_port;
	uint64_t deadline_ms; /* 0 = none */
	uint32_t nrequests;
	struct exchange *x; /* NULL while idle */
	struct ws_conn *ws; /* state CS_WS only (ws.c) */
};

struct worker {
	int id;
	pthread_t thread;
	struct event_base *base;
	struct event *tick;     /* deadlines, runtime refresh */
	struct event *wakeup_ev; /* eventfd: shutdown, runtime swap */
	int wakeup_fd;
	struct listener *listeners;
	int nlisteners;
	struct client *clients; /* list head */
	uint32_t nclients;
	struct client *dead; /* closed, to be freed at the next tick */
	/* accept back-off: listeners off while at the connection cap or out of fds */
	uint8_t accept_paused;
	uint8_t accept_episode; /* logged; ends after a second without a pause */
	uint64_t accept_resume_ms;
	uint64_t accept_last_pause_ms;
	uint64_t accept_pauses;
	uint64_t sweep_at_ms; /* worker 0: next identity_expire (worker_sweep) */
	struct balance_state *balance;
	uint64_t now_ms; /* refreshed each loop pass */
	uint64_t rng;

	/* runtime snapshots in use by this worker's exchanges (see worker_rt_*) */
	struct runtime *rt;
	uint32_t rt_users;
	struct runtime *old_rt[8];
	uint32_t old_users[8];
	int nold;

	/* freelists: buffers and exchanges are recycled, never freed per request */
	struct exchange *free_x;
	uint32_t nfree_x;

	/* request queue (queue.c) */
	struct exchange *queue_head[4], *queue_tail[4];
	uint32_t queue_len;
	struct event *queue_ev;

	/* jobs finished by the pool, to complete on this loop (jobs.c) */
	pthread_mutex_t done_lock;
	struct job *done_head;
	int done_fd;
	struct event *done_ev;

	/* WebSocket clients and their broadcast inbox (ws.c) */
	struct ws_worker *ws;

	/* retry budget: tokens *1000 */
	int64_t retry_tokens;

	/* counters read by the stats code with relaxed atomics */
	_Atomic uint64_t st_requests;
	_Atomic uint64_t st_errors;  /* responses with status >= 500 */
	_Atomic uint64_t st_ip_rejected;
	_Atomic uint64_t st_ip_allowed;
	_Atomic uint64_t st_queue_rejected;
	_Atomic uint64_t st_tier_allowed;
	_Atomic uint64_t st_tier_rejected;
	_Atomic uint64_t st_banned;
	_Atomic uint64_t st_jwt_valid;
	_Atomic uint64_t st_jwt_invalid;
	_Atomic uint64_t st_conns;
	_Atomic uint32_t st_queue_depth;

	/* finished requests for the log thread (accesslog.c) */
	struct accesslog_ring *alog;

	/* Prometheus counters and latency histogram (metrics.c) */
	struct metrics_worker metrics;
};

int worker_start_all(struct runtime *rt, char *err, size_t errlen);
/* Tells every worker to drain (SIGTERM) and waits up to ms for them to finish. */
void worker_stop_all(uint64_t ms);
/* Wakes every worker so it picks up a new runtime at once. */
void worker_notify_all(void);
/* The runtime a new exchange should use; counts one user. */
struct runtime *worker_rt_acquire(struct worker *w);
void worker_rt_release(struct worker *w, struct runtime *rt);
uint64_t worker_rand(struct worker *w);
/* The TLS context for a new connection on l: the current runtime's (reloaded). */
SSL_CTX *worker_listener_ctx(struct worker *w, const struct listener *l);
void worker_counter_add(_Atomic uint64_t *ctr, uint64_t n);

#endif
