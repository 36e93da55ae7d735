#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "cache.h"
#include "log.h"
#include "util.h"
#include "xmalloc.h"

/*
 * Background refreshes for stale-while-revalidate (RFC 5861 3; nginx's
 * proxy_cache_background_update, Varnish's grace): the client that found the entry stale
 * is answered from it at once, and one GET for the entry goes to a backend from here.
 *
 * The refresh is an exchange with no client (x->c NULL) that the cache's fill machinery
 * treats like any other: cache_response_head() refreshes the entry on a 304 or starts
 * the fill, cache_fill_body() takes the body, cache_response_done() stores it and wakes
 * the fill's waiters; cache_exchange_end() drops what is left. Only the I/O is its own:
 * a new connection with "Connection: close" (a pooled one belongs to proxy.c's event
 * handler), one request buffer, the response read into `out` and discarded as it is
 * copied, and one timer. No retries: a failed refresh leaves the stale entry in place,
 * and the next request inside the window starts another one.
 *
 * Everything runs on the worker thread that started it; each worker keeps its refreshes
 * in a list so that shutdown can end them (cache_bg_stop_all).
 */

#define CACHE_BG_OUT 32768
#define CACHE_BG_REQ_MAX 16384

enum cache_bg_state { BG_SEND, BG_HEAD, BG_BODY };

struct cache_bg {
	struct exchange x; /* first: the exchange the cache sees */
	struct cache_bg *prev, *next;
	int fd;
	uint8_t state;
	uint8_t timer_on;
	struct event ev, timer;
	uint8_t tls; /* the client came over TLS (X-Forwarded-Proto) */
	uint8_t peer_len;
	char peer[sizeof(((struct client *)0)->peer_text)]; /* for X-Forwarded-For */
	char *req;                                          /* the request to the backend */
	size_t req_len, req_sent;
};

static struct cache_bg *cache_bgs[GW_MAX_WORKERS];

static struct cache_bg *
cache_bg_of(struct exchange *x)
{
	return (struct cache_bg *)x;
}

/* Ends the refresh: the backend's slot and the circuit's verdict, the cache's leftovers
 * (an unfinished fill wakes its waiters, who go upstream themselves), memory. */
static void
cache_bg_free(struct cache_bg *bg, int failed)
{
	struct exchange *x = &bg->x;
	struct worker *w = x->w;

	if (bg->fd >= 0) {
		event_del(&bg->ev);
		close(bg->fd);
	}
	if (bg->timer_on)
		event_del(&bg->timer);
	if (x->b != NULL) {
		if (failed)
			circuit_failure(&x->b->circuit, w->now_ms);
		else
			circuit_success(&x->b->circuit, w->now_ms);
		atomic_fetch_sub_explicit(&x->b->active, 1, memory_order_relaxed);
		if (w->queue_len > 0)
			event_active(w->queue_ev, EV_TIMEOUT, 0);
	}
	cache_exchange_end(x);
	if (bg->prev != NULL)
		bg->prev->next = bg->next;
	else
		cache_bgs[w->id] = bg->next;
	if (bg->next != NULL)
		bg->next->prev = bg->prev;
	worker_rt_release(w, x->rt);
	free(bg->req);
	free(x->in.data);
	free(x->out.data);
	free(bg);
}

void
cache_bg_stop_all(struct worker *w)
{
	while (cache_bgs[w->id] != NULL)
		cache_bg_free(cache_bgs[w->id], 0);
}

int
cache_bg_possible(const struct exchange *x)
{
	const struct config_route *r = x->route;

	/* the legacy ?api_key= would have to be cut out of the request line (proxy.c does
	 * that for the requests it sends): such requests revalidate in the foreground */
	return x->c != NULL && x->req.head_len <= CACHE_BG_REQ_MAX / 2 &&
	       !(x->id.via_query && r->auth != CONFIG_AUTH_OFF && !r->forward_auth) &&
	       !atomic_load_explicit(&gw.draining, memory_order_relaxed);
}

/* The request for the entry: GET, the client's end-to-end headers without Range, the
 * body's framing and the client's validators, then what proxy.c adds (X-Forwarded-*,
 * X-Request-Id, the identity) and the entry's own validators. -1 when it does not fit. */
static int
cache_bg_build(struct cache_bg *bg)
{
	struct exchange *x = &bg->x;
	const struct http_msg *m = &x->req;
	const char *buf = x->in.data, *tend = buf + m->target_off + m->target_len;
	size_t cap = CACHE_BG_REQ_MAX, off;
	char *o = bg->req = xmalloc(cap);

	off = util_append_str(o, 0, cap, "GET ");
	off = util_append(o, off, cap, x->path, (size_t)(tend - x->path));
	off = util_append_str(o, off, cap, " HTTP/1.1\r\n");
	for (int i = 0; i < m->nhdr; i++) {
		const struct http_header *h = &m->hdr[i];

		/* no body goes with it (a GET's body, if any, is the client's business) */
		if (!proxy_request_header_forwarded(x, h) || h->id == HTTP_H_CONTENT_LENGTH ||
		    h->id == HTTP_H_TRANSFER_ENCODING ||
		    util_strncaseeq(buf + h->name_off, h->name_len, "range"))
			continue;
		off = util_append(o, off, cap, buf + h->line_off, h->line_len);
	}
	off = util_append_str(o, off, cap, "X-Forwarded-For: ");
	for (int i = 0; i < m->nhdr; i++)
		if (m->hdr[i].id == HTTP_H_X_FORWARDED_FOR && m->hdr[i].value_len > 0) {
			off = util_append(o, off, cap, buf + m->hdr[i].value_off,
			                  m->hdr[i].value_len);
			off = util_append_str(o, off, cap, ", ");
		}
	off = util_append(o, off, cap, bg->peer, bg->peer_len);
	off = util_append_str(o, off, cap,
	                      bg->tls ? "\r\nX-Forwarded-Proto: https\r\nX-Request-Id: "
	                              : "\r\nX-Forwarded-Proto: http\r\nX-Request-Id: ");
	off = util_append(o, off, cap, x->request_id, x->request_id_len);
	off = util_append_str(o, off, cap, "\r\n");
	off = proxy_identity_headers(x, o, off, cap);
	off = cache_request_validators(x, o, off, cap);
	off = util_append_str(o, off, cap, "Connection: close\r\n\r\n");
	bg->req_len = off;
	return off < cap ? 0 : -1;
}

static void
cache_bg_arm(struct cache_bg *bg, uint64_t ms)
{
	struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000};

	event_add(&bg->timer, &tv);
	bg->timer_on = 1;
}

/* The head is in: 1 when the body is to be read, 0 when the refresh is over. */
static int
cache_bg_head(struct cache_bg *bg)
{
	struct exchange *x = &bg->x;

	/* a 304 refreshed the entry, or a 5xx left the stale one */
	if (cache_response_head(x) || x->cache_fill == NULL)
		return 0;
	x->out.start = x->resp.head_len;
	x->resp_body_left = x->resp.body == HTTP_BODY_LENGTH ? x->resp.content_length
	                    : x->resp.body == HTTP_BODY_NONE ? 0
	                                                     : UINT64_MAX;
	http_chunked_init(&x->resp_chunk);
	bg->state = BG_BODY;
	return 1;
}

/* Copies the body bytes in `out` into the fill; -1 on malformed chunked framing. */
static int
cache_bg_body(struct exchange *x)
{
	const char *p = x->out.data + x->out.start;
	size_t avail = x->out.end - x->out.start;

	if (x->resp.body == HTTP_BODY_LENGTH) {
		if (avail > x->resp_body_left)
			avail = (size_t)x->resp_body_left;
		cache_fill_body(x, p, avail);
		x->resp_body_left -= avail;
	} else if (x->resp.body == HTTP_BODY_CHUNKED) {
		if (http_chunked_decode(&x->resp_chunk, p, avail, cache_fill_body, x) < 0)
			return -1;
		if (x->resp_chunk.done)
			x->resp_body_left = 0;
	} else {
		cache_fill_body(x, p, avail);
	}
	x->out.start = x->out.end = 0;
	return 0;
}

/* Parses what `out` holds: 1 more to read, 0 done (stored, refreshed or given up),
 * -1 failed. */
static int
cache_bg_parse(struct cache_bg *bg)
{
	struct exchange *x = &bg->x;
	struct http_limits lim = {
	    .max_head = x->out.cap, .max_headers = HTTP_MAX_HEADERS, .max_uri = x->out.cap};

	while (bg->state == BG_HEAD) {
		int r = http_parse_response(&x->resp, x->out.data, x->out.end, &lim, HTTP_M_GET);

		if (r == HTTP_AGAIN)
			return x->out.end < x->out.cap ? 1 : -1;
		if (r != HTTP_OK || x->resp.status == 101)
			return -1;
		if (x->resp.status >= 200)
			return cache_bg_head(bg) ? cache_bg_parse(bg) : 0;
		/* an interim response: the final one follows */
		memmove(x->out.data, x->out.data + x->resp.head_len, x->out.end - x->resp.head_len);
		x->out.end -= x->resp.head_len;
		http_msg_reset(&x->resp);
	}
	if (cache_bg_body(x) < 0)
		return -1;
	if (x->cache_fill == NULL)
		return 0; /* too large to store after all */
	if (x->resp_body_left == 0) {
		cache_response_done(x);
		return 0;
	}
	return 1;
}

/* Reads until EAGAIN: 1 more to come, 0 done, -1 failed. */
static int
cache_bg_read(struct cache_bg *bg)
{
	struct exchange *x = &bg->x;

	for (;;) {
		ssize_t n = read(bg->fd, x->out.data + x->out.end, x->out.cap - x->out.end);
		int r;

		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return 1;
		if (n < 0)
			return -1;
		if (n == 0) {
			/* the end of a close-delimited body; anything else was cut short */
			if (bg->state != BG_BODY || x->resp.body != HTTP_BODY_EOF)
				return -1;
			x->resp_body_left = 0;
			cache_response_done(x);
			return 0;
		}
		x->out.end += (uint32_t)n;
		r = cache_bg_parse(bg);
		if (r <= 0)
			return r;
		cache_bg_arm(bg, x->rt->cfg->timeouts.response_ms);
	}
}

/* Writes the rest of the request: 1 more to write, 0 all written, -1 failed. */
static int
cache_bg_send(struct cache_bg *bg)
{
	while (bg->req_sent < bg->req_len) {
		ssize_t n = write(bg->fd, bg->req + bg->req_sent, bg->req_len - bg->req_sent);

		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return 1;
		if (n <= 0)
			return -1;
		bg->req_sent += (size_t)n;
	}
	return 0;
}

static void
cache_bg_event(evutil_socket_t fd, short what, void *arg)
{
	struct cache_bg *bg = arg;
	struct exchange *x = &bg->x;
	int r = 1;

	(void)fd;
	x->w->now_ms = util_now_ms();
	if (bg->state == BG_SEND && (what & EV_WRITE)) {
		r = cache_bg_send(bg);
		if (r == 0) {
			/* the response time runs from here; writability is of no more interest */
			x->sent_us = util_now_us();
			bg->state = BG_HEAD;
			event_del(&bg->ev);
			event_assign(&bg->ev, x->w->base, bg->fd, EV_READ | EV_CLOSED | EV_PERSIST,
			             cache_bg_event, bg);
			event_add(&bg->ev, NULL);
			cache_bg_arm(bg, x->rt->cfg->timeouts.response_ms);
			r = 1;
		}
	}
	if (r > 0 && bg->state != BG_SEND && (what & (EV_READ | EV_CLOSED)))
		r = cache_bg_read(bg);
	if (r <= 0)
		cache_bg_free(bg, r < 0 || x->resp.status >= 500);
}

static void
cache_bg_timeout(evutil_socket_t fd, short what, void *arg)
{
	struct cache_bg *bg = arg;

	(void)fd;
	(void)what;
	bg->timer_on = 0;
	bg->x.w->now_ms = util_now_ms();
	log_debug("cache: background refresh from %s timed out", bg->x.b->id);
	cache_bg_free(bg, 1);
}

/* Copies what the refresh needs of the client's exchange: its request head (for the
 * forwarded headers and the Vary'd values), route, identity, request id, geography. */
static struct cache_bg *
cache_bg_alloc(struct exchange *from, struct runtime *rt)
{
	struct cache_bg *bg = xcalloc(1, sizeof(*bg));
	struct exchange *x = &bg->x;
	uint32_t hl = from->req.head_len;

	bg->fd = -1;
	x->w = from->w;
	x->rt = rt;
	x->route = from->route;
	x->phase = X_UPSTREAM;
	x->in.data = xmalloc(hl);
	memcpy(x->in.data, from->in.data, hl);
	x->in.cap = x->in.end = hl;
	x->req = from->req;
	x->req.method = HTTP_M_GET;
	x->path = x->in.data + (from->path - from->in.data);
	x->path_len = from->path_len;
	x->out.data = xmalloc(CACHE_BG_OUT);
	x->out.cap = CACHE_BG_OUT;
	http_msg_reset(&x->resp);
	x->id = from->id;
	x->geo = from->geo;
	memcpy(x->client_ip, from->client_ip, sizeof(x->client_ip));
	memcpy(x->request_id, from->request_id, sizeof(x->request_id));
	x->request_id_len = from->request_id_len;
	x->buffered = 1;
	x->start_us = util_now_us();
	bg->tls = from->c->tls != 0;
	bg->peer_len = from->c->peer_text_len;
	memcpy(bg->peer, from->c->peer_text, sizeof(bg->peer));
	return bg;
}

/* A connection to the backend x picked, with its events. -1 when it cannot be made. */
static int
cache_bg_connect(struct cache_bg *bg)
{
	struct exchange *x = &bg->x;
	struct backend *b = x->b;
	const struct config_timeouts *t = &x->rt->cfg->timeouts;
	int one = 1;

	bg->fd = socket(b->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (bg->fd < 0)
		return -1;
	setsockopt(bg->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (connect(bg->fd, (const struct sockaddr *)&b->addr, b->addrlen) == -1 &&
	    errno != EINPROGRESS) {
		close(bg->fd);
		bg->fd = -1;
		return -1;
	}
	event_assign(&bg->ev, x->w->base, bg->fd, EV_READ | EV_WRITE | EV_CLOSED | EV_PERSIST,
	             cache_bg_event, bg);
	event_add(&bg->ev, NULL);
	evtimer_assign(&bg->timer, x->w->base, cache_bg_timeout, bg);
	cache_bg_arm(bg, t->connect_ms + t->response_ms);
	return 0;
}

struct exchange *
cache_bg_new(struct exchange *from)
{
	struct worker *w = from->w;
	struct runtime *rt = worker_rt_acquire(w);
	struct cache_bg *bg;

	if (rt != from->rt) {
		/* a reload since the request began: its route is not in this snapshot */
		worker_rt_release(w, rt);
		return NULL;
	}
	bg = cache_bg_alloc(from, rt);
	bg->next = cache_bgs[w->id];
	if (bg->next != NULL)
		bg->next->prev = bg;
	cache_bgs[w->id] = bg;
	return &bg->x;
}

void
cache_bg_go(struct exchange *x)
{
	struct cache_bg *bg = cache_bg_of(x);

	if (cache_bg_build(bg) < 0 || proxy_pick(x) != 1) {
		cache_bg_free(bg, 0);
		return;
	}
	if (cache_bg_connect(bg) < 0)
		cache_bg_free(bg, 1); /* a backend that cannot be connected to has failed */
}
