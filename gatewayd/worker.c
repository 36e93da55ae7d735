#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "accesslog.h"
#include "cache.h"
#include "identity.h"
#include "jobs.h"
#include "log.h"
#include "proxy.h"
#include "tls.h"
#include "util.h"
#include "worker.h"
#include "ws.h"
#include "xmalloc.h"

/* How often a worker looks at deadlines, idle upstreams and a new runtime. */
#define WORKER_TICK_MS 100
/* Idle upstream keep-alive connections are closed after this long. */
#define WORKER_UPSTREAM_IDLE_MS 30000
/* A worker that stopped accepting (at its cap, out of fds) looks again after this. */
#define WORKER_ACCEPT_BACKOFF_MS 100
/* An accept back-off episode ends (and is logged as over) after this long without one. */
#define WORKER_ACCEPT_EPISODE_MS 1000
/* How often worker 0 asks for a sweep of expired identity state (bans, revocations). */
#define WORKER_SWEEP_MS 60000

static void worker_tick(evutil_socket_t fd, short what, void *arg);

void
worker_counter_add(_Atomic uint64_t *ctr, uint64_t n)
{
	/* Only the owning thread writes: a relaxed load+store is enough and costs no
	 * locked instruction; readers on other threads see a recent value. */
	atomic_store_explicit(ctr, atomic_load_explicit(ctr, memory_order_relaxed) + n,
	                      memory_order_relaxed);
}

uint64_t
worker_rand(struct worker *w)
{
	/* xorshift64* */
	w->rng ^= w->rng >> 12;
	w->rng ^= w->rng << 25;
	w->rng ^= w->rng >> 27;
	return w->rng * 2685821657736338717ULL;
}

/*
 * Runtime snapshots: an exchange keeps the snapshot it started with until it ends, so a
 * reload never changes the backends under a request in flight. The worker counts its
 * users per snapshot without atomics and holds one shared reference per snapshot in
 * use; the last worker to let go of an old snapshot frees it.
 */
static void
worker_rt_refresh(struct worker *w)
{
	struct runtime *cur = atomic_load_explicit(&gw.rt, memory_order_acquire);

	if (cur == w->rt)
		return;
	runtime_ref(cur);
	if (w->rt != NULL) {
		if (w->rt_users == 0 ||
		    w->nold == (int)(sizeof(w->old_rt) / sizeof(w->old_rt[0]))) {
			/* When the table of old snapshots is full the oldest users keep theirs
			 * alive through the shared count below. */
			if (w->rt_users == 0)
				runtime_unref(w->rt);
			else {
				w->old_rt[0] = w->rt;
				w->old_users[0] += w->rt_users;
			}
		} else {
			w->old_rt[w->nold] = w->rt;
			w->old_users[w->nold] = w->rt_users;
			w->nold++;
		}
	}
	w->rt = cur;
	w->rt_users = 0;
}

struct runtime *
worker_rt_acquire(struct worker *w)
{
	worker_rt_refresh(w);
	w->rt_users++;
	return w->rt;
}

void
worker_rt_release(struct worker *w, struct runtime *rt)
{
	if (rt == w->rt) {
		w->rt_users--;
		return;
	}
	for (int i = 0; i < w->nold; i++) {
		if (w->old_rt[i] != rt)
			continue;
		if (--w->old_users[i] == 0) {
			runtime_unref(rt);
			w->old_rt[i] = w->old_rt[w->nold - 1];
			w->old_users[i] = w->old_users[w->nold - 1];
			w->nold--;
		}
		return;
	}
}

static int
worker_listen_socket(const struct config_listen *cl, char *err, size_t errlen)
{
	int fd, one = 1;

	fd = socket(cl->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd == -1) {
		snprintf(err, errlen, "listen %s: socket: %s", cl->text, strerror(errno));
		return -1;
	}
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	/* One socket per worker on the same address: the kernel spreads connections. */
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) == -1 ||
	    bind(fd, (const struct sockaddr *)&cl->addr, cl->addrlen) == -1 ||
	    listen(fd, 4096) == -1) {
		snprintf(err, errlen, "listen %s: %s", cl->text, strerror(errno));
		close(fd);
		return -1;
	}
	return fd;
}

SSL_CTX *
worker_listener_ctx(struct worker *w, const struct listener *l)
{
	const struct runtime *rt = w->rt;

	/* The listen line may have moved or gone in a reload (it takes effect at the next
	 * restart): then the context the listener started with. */
	if (l->index < rt->cfg->nlistens && rt->tls_ctx[l->index] != NULL &&
	    strcmp(rt->cfg->listens[l->index].text, l->text) == 0)
		return rt->tls_ctx[l->index];
	return l->ssl_ctx;
}

/* This worker's share of `limits conns`, 0 for none. */
static uint32_t
worker_conn_cap(const struct worker *w)
{
	uint64_t max = w->rt->cfg->limits.conns;
	int n = gw.nworkers > 0 ? gw.nworkers : 1;

	return max == 0 ? 0 : (uint32_t)((max + (uint64_t)n - 1) / (uint64_t)n);
}

/*
 * Stops accepting on this worker's listeners for a moment instead of spinning on a
 * level-triggered listener that accept() cannot empty. Waiting connections stay in the
 * kernel's backlog; the tick turns the listeners back on. Logged once per episode.
 */
static void
worker_accept_pause(struct worker *w, const char *why)
{
	for (int i = 0; i < w->nlisteners; i++)
		if (w->listeners[i].fd != -1)
			event_del(&w->listeners[i].ev);
	w->accept_paused = 1;
	w->accept_pauses++;
	w->accept_resume_ms = w->now_ms + WORKER_ACCEPT_BACKOFF_MS;
	w->accept_last_pause_ms = w->now_ms;
	if (!w->accept_episode) {
		w->accept_episode = 1;
		log_warnx("worker %d: %s (%u connections): not accepting for now, retrying every "
		          "%d ms",
		          w->id, why, w->nclients, WORKER_ACCEPT_BACKOFF_MS);
	}
}

static void
worker_accept_resume(struct worker *w)
{
	uint32_t cap;

	if (w->accept_episode && !w->accept_paused &&
	    w->now_ms - w->accept_last_pause_ms >= WORKER_ACCEPT_EPISODE_MS) {
		w->accept_episode = 0;
		log_info("worker %d: accepting normally again (%llu pauses)", w->id,
		         (unsigned long long)w->accept_pauses);
		w->accept_pauses = 0;
	}
	if (!w->accept_paused || w->now_ms < w->accept_resume_ms ||
	    atomic_load_explicit(&gw.draining, memory_order_relaxed))
		return;
	cap = worker_conn_cap(w);
	if (cap != 0 && w->nclients >= cap) {
		w->accept_resume_ms = w->now_ms + WORKER_ACCEPT_BACKOFF_MS;
		w->accept_last_pause_ms = w->now_ms;
		return;
	}
	w->accept_paused = 0;
	for (int i = 0; i < w->nlisteners; i++)
		if (w->listeners[i].fd != -1)
			event_add(&w->listeners[i].ev, NULL);
}

static void
worker_accept(evutil_socket_t fd, short what, void *arg)
{
	struct listener *l = arg;
	struct worker *w = l->w;
	uint32_t cap;

	w->now_ms = util_now_ms();
	worker_rt_refresh(w);
	cap = worker_conn_cap(w);
	for (int i = 0; i < 256; i++) {
		struct sockaddr_storage ss;
		socklen_t sl = sizeof(ss);
		int cfd;

		if (cap != 0 && w->nclients >= cap) {
			worker_accept_pause(w, "at its share of limits conns");
			return;
		}
		cfd = accept4(fd, (struct sockaddr *)&ss, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (cfd == -1) {
			if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS ||
			    errno == ENOMEM)
				worker_accept_pause(w, strerror(errno));
			else if (errno == ECONNABORTED || errno == EINTR)
				continue;
			return;
		}
		if (atomic_load_explicit(&gw.draining, memory_order_relaxed)) {
			close(cfd);
			continue;
		}
		client_accept(w, l, cfd, (struct sockaddr *)&ss);
	}
	/* More may be pending: with a level-triggered listener the loop calls again. */
}

/* Resets the eventfd fd (name for the log) that woke w and brings w's clock up to date. */
static void
worker_eventfd_read(struct worker *w, evutil_socket_t fd, const char *name)
{
	uint64_t v;

	if (read(fd, &v, sizeof(v)) < 0 && errno != EAGAIN)
		log_warn("worker %d: %s", w->id, name);
	w->now_ms = util_now_ms();
}

static void
worker_wakeup(evutil_socket_t fd, short what, void *arg)
{
	struct worker *w = arg;

	worker_eventfd_read(w, fd, "eventfd");
	worker_rt_refresh(w);
	if (atomic_load(&gw.draining)) {
		for (int i = 0; i < w->nlisteners; i++) {
			if (w->listeners[i].fd != -1) {
				event_del(&w->listeners[i].ev);
				close(w->listeners[i].fd);
				w->listeners[i].fd = -1;
			}
		}
	}
	worker_tick(-1, 0, w);
}

static void
worker_jobs_done(evutil_socket_t fd, short what, void *arg)
{
	struct worker *w = arg;

	worker_eventfd_read(w, fd, "jobs eventfd");
	jobs_complete(w);
}

/* 1 while x's request body is what the exchange waits for: the backend took all that
 * came, no response yet. The pace is then the client's. */
static int
worker_uploading(const struct exchange *x)
{
	return x->phase == X_UPSTREAM && !x->req_done && !x->resp_started && x->req_body_left > 0 &&
	       x->u != NULL && x->u->state != UP_CONNECTING && x->upq.pos >= x->upq.cnt;
}

/*
 * Slow request bodies (slow POST): while the upload waits for the client, the body must
 * progress at least every client_body and bring min_body_rate bytes a second on average
 * over each window of client_body. Measured here, ten times a second, so that the data
 * path pays nothing per read. 1: too slow.
 */
static int
worker_body_too_slow(struct exchange *x, uint64_t now)
{
	const struct config *cfg = x->rt->cfg;
	uint64_t win = cfg->timeouts.client_body_ms, seen;

	if (!worker_uploading(x)) {
		x->body_seen_ms = 0; /* measured afresh when it is the client's turn again */
		return 0;
	}
	seen = x->req.body == HTTP_BODY_CHUNKED ? x->req_chunk.data_total
	                                        : x->req.content_length - x->req_body_left;
	if (x->body_seen_ms == 0) {
		x->body_seen = x->body_win = seen;
		x->body_seen_ms = x->body_win_ms = now;
		return 0;
	}
	if (seen != x->body_seen) {
		x->body_seen = seen;
		x->body_seen_ms = now;
	} else if (now - x->body_seen_ms >= win) {
		return 1;
	}
	if (now - x->body_win_ms < win)
		return 0;
	if (seen - x->body_win < cfg->limits.min_body_rate * (now - x->body_win_ms) / 1000)
		return 1;
	x->body_win = seen;
	x->body_win_ms = now;
	return 0;
}

/* 408 for a body that came too slowly; the backend connection, holding half a
 * request, is closed. */
static void
worker_body_timeout(struct exchange *x)
{
	proxy_abort(x);
	x->close_client = 1;
	respond_error(x, 408, "request_timeout", "The request body arrived too slowly.", NULL,
	              NULL);
}

static void
worker_check_deadlines(struct worker *w)
{
	struct client *c = w->clients, *next;

	for (; c != NULL; c = next) {
		next = c->next;
		if (c->x != NULL && c->x->phase == X_UPSTREAM &&
		    worker_body_too_slow(c->x, w->now_ms)) {
			worker_body_timeout(c->x);
		} else if (c->deadline_ms != 0 && c->deadline_ms <= w->now_ms) {
			c->deadline_ms = 0;
			if (c->x != NULL && worker_uploading(c->x))
				worker_body_timeout(c->x);
			else if (c->x != NULL && c->x->phase == X_UPSTREAM)
				proxy_timeout(c->x);
			else if (c->x != NULL && c->x->phase == X_WAIT)
				client_wait_expired(c);
			else if (c->x == NULL || c->x->phase != X_QUEUED)
				client_close(c);
		} else if (c->state == CS_IDLE &&
		           atomic_load_explicit(&gw.draining, memory_order_relaxed)) {
			client_close(c);
		}
	}
}

/* Pool thread: expired identity state (see identity_expire). */
static void
worker_sweep_job(struct store *st, void *arg)
{
	size_t n = identity_expire((int64_t)time(NULL));

	if (n > 0)
		log_debug("expired %zu ban and revocation entries", n);
}

static void
worker_sweep(struct worker *w)
{
	if (w->id != 0 || w->now_ms < w->sweep_at_ms)
		return;
	if (w->sweep_at_ms != 0)
		jobs_detached(worker_sweep_job, NULL, NULL);
	w->sweep_at_ms = w->now_ms + WORKER_SWEEP_MS;
}

static void
worker_tick(evutil_socket_t fd, short what, void *arg)
{
	struct worker *w = arg;

	w->now_ms = util_now_ms();
	while (w->dead != NULL) {
		struct client *c = w->dead;
		w->dead = c->next;
		free(c);
	}
	worker_rt_refresh(w);
	worker_check_deadlines(w);
	worker_accept_resume(w);
	worker_sweep(w);
	queue_service(w);
	ws_worker_tick(w);
	upstream_reap_idle(w, w->rt, WORKER_UPSTREAM_IDLE_MS);
	/* The retry budget refills at 10 retries a second, capped at 100. */
	w->retry_tokens += 1000;
	if (w->retry_tokens > 100000)
		w->retry_tokens = 100000;
	if (atomic_load_explicit(&gw.draining, memory_order_relaxed) && w->clients == NULL) {
		cache_bg_stop_all(w); /* background cache refreshes hold no client */
		upstream_close_all_idle(w, w->rt);
		event_base_loopbreak(w->base);
	}
}

static void *
worker_main(void *arg)
{
	struct worker *w = arg;

	event_base_dispatch(w->base);
	return NULL;
}

static struct event_base *
worker_new_base(void)
{
	struct event_config *ec = event_config_new();
	struct event_base *base;

	/* Each base is used by one thread only: no locks inside libevent. */
	event_config_set_flag(ec, EVENT_BASE_FLAG_NOLOCK);
	event_config_require_features(ec, EV_FEATURE_ET | EV_FEATURE_O1);
	base = event_base_new_with_config(ec);
	event_config_free(ec);
	if (base == NULL)
		fatalx("event_base_new_with_config failed");
	return base;
}

static int
worker_setup_listeners(struct worker *w, const struct config *cfg, SSL_CTX *const *ctxs, char *err,
                       size_t errlen)
{
	w->listeners = xcalloc((size_t)cfg->nlistens, sizeof(*w->listeners));
	w->nlisteners = cfg->nlistens;
	for (int i = 0; i < cfg->nlistens; i++) {
		struct listener *l = &w->listeners[i];

		l->w = w;
		l->tls = cfg->listens[i].tls;
		l->index = i;
		l->ssl_ctx = ctxs[i];
		if (l->ssl_ctx != NULL)
			SSL_CTX_up_ref(l->ssl_ctx);
		util_strlcpy(l->text, cfg->listens[i].text, sizeof(l->text));
		l->fd = worker_listen_socket(&cfg->listens[i], err, errlen);
		if (l->fd == -1)
			return -1;
		event_assign(&l->ev, w->base, l->fd, EV_READ | EV_PERSIST, worker_accept, l);
		event_add(&l->ev, NULL);
	}
	return 0;
}

static struct worker *
worker_new(int id)
{
	struct worker *w = xcalloc(1, sizeof(*w));
	struct timeval tv = {0, WORKER_TICK_MS * 1000};

	w->id = id;
	w->base = worker_new_base();
	w->balance = balance_state_new(util_hash64(&w, sizeof(w)) ^ (uint64_t)id);
	w->rng = util_hash64(&w, sizeof(w)) | 1;
	w->now_ms = util_now_ms();
	worker_rt_refresh(w);
	w->retry_tokens = 10000;
	w->alog = accesslog_ring_new();
	w->tick = event_new(w->base, -1, EV_PERSIST, worker_tick, w);
	event_add(w->tick, &tv);
	w->wakeup_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (w->wakeup_fd == -1)
		fatal("eventfd");
	w->wakeup_ev = event_new(w->base, w->wakeup_fd, EV_READ | EV_PERSIST, worker_wakeup, w);
	event_add(w->wakeup_ev, NULL);
	pthread_mutex_init(&w->done_lock, NULL);
	w->done_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (w->done_fd == -1)
		fatal("eventfd");
	w->done_ev = event_new(w->base, w->done_fd, EV_READ | EV_PERSIST, worker_jobs_done, w);
	event_add(w->done_ev, NULL);
	w->ws = ws_worker_new(w);
	return w;
}

int
worker_start_all(struct runtime *rt, char *err, size_t errlen)
{
	const struct config *cfg = rt->cfg;
	int n = cfg->workers > 0 ? cfg->workers : (int)sysconf(_SC_NPROCESSORS_ONLN);

	if (n < 1)
		n = 1;
	if (n > GW_MAX_WORKERS)
		n = GW_MAX_WORKERS;
	if (cfg->nlistens > 64) {
		snprintf(err, errlen, "too many listen lines (64 at most)");
		return -1;
	}
	for (int i = 0; i < cfg->nlistens; i++) {
		if (cfg->listens[i].tls && rt->tls_ctx[i] == NULL) {
			snprintf(err, errlen, "listen %s: the TLS certificate could not be loaded",
			         cfg->listens[i].text);
			return -1;
		}
	}
	/* Bind every socket before starting a thread, so a bad address fails start-up. */
	for (int i = 0; i < n; i++) {
		gw.workers[i] = worker_new(i);
		if (worker_setup_listeners(gw.workers[i], cfg, rt->tls_ctx, err, errlen) == -1)
			return -1;
	}
	gw.nworkers = n;
	for (int i = 0; i < n; i++) {
		char name[32]; /* room for any int: -Wformat-truncation */

		if (pthread_create(&gw.workers[i]->thread, NULL, worker_main, gw.workers[i]) != 0) {
			snprintf(err, errlen, "pthread_create: %s", strerror(errno));
			return -1;
		}
		/* names for top -H and perf (at most 15 characters) */
		snprintf(name, sizeof(name), "gw-worker%d", i);
		name[15] = '\0'; /* the kernel's limit (GW_MAX_WORKERS keeps it whole) */
		pthread_setname_np(gw.workers[i]->thread, name);
	}
	return 0;
}

void
worker_notify_all(void)
{
	uint64_t one = 1;

	for (int i = 0; i < gw.nworkers; i++)
		if (write(gw.workers[i]->wakeup_fd, &one, sizeof(one)) < 0)
			log_warn("worker %d: wakeup", i);
}

void
worker_stop_all(uint64_t ms)
{
	uint64_t deadline = util_now_ms() + ms;

	atomic_store(&gw.draining, 1);
	worker_notify_all();
	for (int i = 0; i < gw.nworkers; i++) {
		struct timespec ts;
		uint64_t now = util_now_ms();
		uint64_t left = deadline > now ? deadline - now : 0;

		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_sec += (time_t)(left / 1000);
		ts.tv_nsec += (long)(left % 1000) * 1000000L;
		if (ts.tv_nsec >= 1000000000L) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000L;
		}
		if (pthread_timedjoin_np(gw.workers[i]->thread, NULL, &ts) != 0)
			log_warnx("worker %d: in-flight requests did not finish within %llu ms", i,
			          (unsigned long long)ms);
	}
}
