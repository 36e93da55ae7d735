#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "cidr.h"
#include "log.h"
#include "identify.h"
#include "accesslog.h"
#include "cache.h"
#include "proxy.h"
#include "util.h"
#include "xmalloc.h"

/*
 * Proxying one exchange to a backend: pick, connect (or reuse a pooled connection),
 * send the request head and stream its body, read the response head, stream the
 * response body back, then return the upstream connection to the pool.
 *
 * Everything is driven by proxy_run(), called on readiness of either socket. Each
 * socket is registered once, edge-triggered, for both directions; readiness lives in
 * the readable/writable flags, cleared only when a call returns EAGAIN.
 *
 * Zero-copy: request and response heads are forwarded from the buffers they were read
 * into, as iovecs around the header lines we drop, with the headers we add in a small
 * side buffer, all in one writev together with the first body bytes.
 */

#define UPSTREAM_IDLE_MAX 256

static void proxy_fail(struct exchange *x, int timeout);
static void proxy_respond_failure(struct exchange *x);
static void proxy_finish(struct exchange *x);

/* ---- send queues ---- */

void
sendq_reset(struct sendq *q)
{
	q->cnt = 0;
	q->pos = 0;
}

void
sendq_add(struct sendq *q, const void *p, size_t n)
{
	if (n == 0)
		return;
	/* Adjacent pieces of one buffer merge into one iovec. */
	if (q->cnt > q->pos) {
		struct iovec *last = &q->iov[q->cnt - 1];
		if ((const char *)last->iov_base + last->iov_len == (const char *)p) {
			last->iov_len += n;
			return;
		}
	}
	if (q->cnt == SENDQ_MAX)
		fatalx("sendq overflow");
	q->iov[q->cnt].iov_base = (void *)(uintptr_t)p;
	q->iov[q->cnt].iov_len = n;
	q->cnt++;
}

static int
sendq_empty(const struct sendq *q)
{
	return q->pos >= q->cnt;
}

int
sendq_flush_fd(struct sendq *q, int fd, ssize_t (*wv)(void *, const struct iovec *, int),
	       void *arg)
{
	while (q->pos < q->cnt) {
		ssize_t n = wv(arg, q->iov + q->pos, q->cnt - q->pos > IOV_MAX ? IOV_MAX
										  : q->cnt - q->pos);
		if (n < 0)
			return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : -1;
		while (n > 0 && q->pos < q->cnt) {
			struct iovec *v = &q->iov[q->pos];
			if ((size_t)n >= v->iov_len) {
				n -= (ssize_t)v->iov_len;
				q->pos++;
			} else {
				v->iov_base = (char *)v->iov_base + n;
				v->iov_len -= (size_t)n;
				n = 0;
			}
		}
	}
	sendq_reset(q);
	return 1;
}

static ssize_t
upconn_writev(void *arg, const struct iovec *iov, int cnt)
{
	struct upconn *u = arg;
	ssize_t n = writev(u->fd, iov, cnt);

	if (n == -1 && (errno == EAGAIN || errno == EWOULDBLOCK))
		u->writable = 0;
	return n;
}

/* ---- upstream connections ---- */

static void
upconn_close(struct upconn *u)
{
	struct backend_pw *pw = &u->b->pw[u->w->id];

	event_del(&u->ev);
	close(u->fd);
	pw->nconns--;
	backend_unref(u->b);
	free(u);
}

static void
upconn_unlink_idle(struct upconn *u)
{
	struct backend_pw *pw = &u->b->pw[u->w->id];
	struct upconn **pp = &pw->idle;

	while (*pp != NULL && *pp != u)
		pp = &(*pp)->next_idle;
	if (*pp == u) {
		*pp = u->next_idle;
		pw->nidle--;
	}
	u->next_idle = NULL;
}

static struct upconn *
upconn_connect(struct worker *w, struct backend *b)
{
	struct upconn *u;
	int one = 1;
	int fd = socket(b->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

	if (fd == -1) {
		log_warn("backend %s: socket", b->id);
		return NULL;
	}
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (connect(fd, (struct sockaddr *)&b->addr, b->addrlen) == -1 && errno != EINPROGRESS) {
		close(fd);
		return NULL;
	}
	u = xcalloc(1, sizeof(*u));
	u->fd = fd;
	u->w = w;
	u->b = b;
	backend_ref(b);
	u->state = UP_CONNECTING;
	b->pw[w->id].nconns++;
	event_assign(&u->ev, w->base, fd, EV_READ | EV_WRITE | EV_CLOSED | EV_PERSIST | EV_ET,
		     upconn_event, u);
	event_add(&u->ev, NULL);
	return u;
}

/* The warmest idle connection to b, or a new one. */
static struct upconn *
upconn_get(struct worker *w, struct backend *b)
{
	struct backend_pw *pw = &b->pw[w->id];
	struct upconn *u = pw->idle;

	if (u != NULL) {
		pw->idle = u->next_idle;
		pw->nidle--;
		u->next_idle = NULL;
		u->state = UP_BUSY;
		u->reused = 1;
		return u;
	}
	return upconn_connect(w, b);
}

static void
upconn_put_idle(struct upconn *u)
{
	struct backend_pw *pw = &u->b->pw[u->w->id];

	if (u->hup || pw->nidle >= UPSTREAM_IDLE_MAX ||
	    atomic_load(&u->b->admin) != BACKEND_ENABLED) {
		upconn_close(u);
		return;
	}
	u->x = NULL;
	u->state = UP_IDLE;
	u->idle_since_ms = u->w->now_ms;
	u->next_idle = pw->idle;
	pw->idle = u;
	pw->nidle++;
}

void
upstream_reap_idle(struct worker *w, struct runtime *rt, uint64_t idle_ms)
{
	if (rt == NULL)
		return;
	for (int i = 0; i < rt->nbackends; i++) {
		struct backend_pw *pw = &rt->backends[i]->pw[w->id];
		struct upconn **pp = &pw->idle;

		while (*pp != NULL) {
			struct upconn *u = *pp;
			if (w->now_ms - u->idle_since_ms >= idle_ms) {
				*pp = u->next_idle;
				pw->nidle--;
				upconn_close(u);
			} else {
				pp = &u->next_idle;
			}
		}
	}
}

void
upstream_close_all_idle(struct worker *w, struct runtime *rt)
{
	upstream_reap_idle(w, rt, 0);
}

void
upconn_event(evutil_socket_t fd, short what, void *arg)
{
	struct upconn *u = arg;

	u->w->now_ms = util_now_ms();
	if (what & EV_READ)
		u->readable = 1;
	if (what & EV_WRITE)
		u->writable = 1;
	if (what & EV_CLOSED)
		u->hup = u->readable = 1;
	if (u->state == UP_IDLE) {
		/* An idle connection has nothing to say: this is a close or garbage. */
		if (what & (EV_READ | EV_CLOSED)) {
			upconn_unlink_idle(u);
			upconn_close(u);
		}
		return;
	}
	if (u->x != NULL) {
		struct client *c = u->x->c;
		proxy_run(u->x);
		/* The exchange may have finished and the client moved on to a pipelined
		 * request that is now ready to parse. */
		if (!c->closed && (c->x == NULL || c->x->phase == X_HEAD))
			client_run(c);
	}
}

/* ---- choosing a backend ---- */

static int
proxy_eligible(const struct exchange *x, struct backend *b, int idx, uint64_t now, int *busy)
{
	if (atomic_load_explicit(&b->admin, memory_order_relaxed) != BACKEND_ENABLED ||
	    !atomic_load_explicit(&b->healthy, memory_order_relaxed))
		return 0;
	if (idx < 32 && (x->tried_mask & (1u << idx)))
		return 0;
	if (!circuit_available(&b->circuit, now))
		return 0;
	if (atomic_load_explicit(&b->active, memory_order_relaxed) >=
	    (uint32_t)atomic_load_explicit(&b->max_conns, memory_order_relaxed)) {
		*busy = 1;
		return 0;
	}
	return 1;
}

/*
 * The latency estimate the adaptive strategy sees: it halves for every 250 ms without a
 * new measurement, so a backend that stopped getting traffic after a slow spell is
 * tried again within a second or so and its estimate corrected, instead of being
 * starved (a backend that is really slow is measured again and falls back at once).
 */
#define PROXY_EWMA_HALF_LIFE_MS 250

double
proxy_ewma_ms(struct backend *b, uint64_t now)
{
	uint64_t us = atomic_load_explicit(&b->ewma_us, memory_order_relaxed);
	uint64_t at = atomic_load_explicit(&b->ewma_at_ms, memory_order_relaxed);
	uint64_t halvings = now > at ? (now - at) / PROXY_EWMA_HALF_LIFE_MS : 0;

	return halvings >= 63 ? 0.0 : (double)(us >> halvings) / 1000.0;
}

/*
 * Picks a backend for x. Returns 1 with x->b set (circuit claimed, active counted), 0
 * when every candidate is at max_conns (queue), -1 when none is available.
 */
int
proxy_pick(struct exchange *x)
{
	struct runtime *rt = x->rt;
	struct balance_target t[BALANCE_MAX_TARGETS];
	int busyv[BALANCE_MAX_TARGETS];
	int n = rt->nbackends < BALANCE_MAX_TARGETS ? rt->nbackends : BALANCE_MAX_TARGETS;
	uint64_t now = x->w->now_ms;

	for (int tries = 0; tries < 4; tries++) {
		int busy = 0, any = 0, idx;
		struct backend *b;

		for (int i = 0; i < n; i++) {
			b = rt->backends[i];
			t[i].id_hash = b->id_hash;
			t[i].weight = backend_effective_weight(b, now);
			busyv[i] = 0;
			t[i].eligible = proxy_eligible(x, b, i, now, &busyv[i]);
			t[i].active = atomic_load_explicit(&b->active, memory_order_relaxed);
			t[i].ewma_ms = proxy_ewma_ms(b, now);
			t[i].recent_failures =
				atomic_load_explicit(&b->recent_failures, memory_order_relaxed);
		}
		/* SPEC 3: the nearest healthy datacenter first, then the strategy inside it */
		geo_narrow(rt->geo, &x->geo, t, busyv, n);
		for (int i = 0; i < n; i++) {
			any |= t[i].eligible;
			busy |= busyv[i];
		}
		if (!any)
			return busy ? 0 : -1;
		balance_state_reset(x->w->balance, t, n);
		idx = balance_pick(x->w->balance, (enum balance_strategy)atomic_load_explicit(
							       &gw.strategy, memory_order_relaxed),
				   t, n, x->client_ip, 16);
		if (idx < 0)
			return -1;
		b = rt->backends[idx];
		/* Another worker may have taken the half-open probe meanwhile. */
		if (!circuit_acquire(&b->circuit, now)) {
			if (idx < 32)
				x->tried_mask |= 1u << idx;
			continue;
		}
		x->b = b;
		if (idx < 32)
			x->tried_mask |= 1u << idx;
		atomic_fetch_add_explicit(&b->active, 1, memory_order_relaxed);
		x->counted_active = 1;
		return 1;
	}
	return -1;
}

/* ---- building the request head ---- */

static int
proxy_request_id_ok(const char *v, size_t len)
{
	if (len < 1 || len > 128)
		return 0;
	for (size_t i = 0; i < len; i++) {
		char ch = v[i];
		if (!((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') ||
		      (ch >= '0' && ch <= '9') || ch == '.' || ch == '_' || ch == '-'))
			return 0;
	}
	return 1;
}

void
proxy_make_request_id(struct exchange *x)
{
	size_t len;
	const char *v = http_header_get(&x->req, x->in.data, HTTP_H_X_REQUEST_ID, &len);

	if (v != NULL && proxy_request_id_ok(v, len)) {
		memcpy(x->request_id, v, len);
		x->request_id_len = (uint8_t)len;
		x->request_id[len] = '\0';
		return;
	}
	static const char hex[] = "0123456789abcdef";
	static const uint8_t dash_after[16] = {[3] = 1, [5] = 1, [7] = 1, [9] = 1};
	uint64_t r[2] = {worker_rand(x->w), worker_rand(x->w)};
	uint8_t bytes[16];
	char *o = x->request_id;

	memcpy(bytes, r, sizeof(bytes));
	bytes[6] = (uint8_t)((bytes[6] & 0x0f) | 0x40); /* version 4 */
	bytes[8] = (uint8_t)((bytes[8] & 0x3f) | 0x80); /* variant 10 */
	for (int i = 0; i < 16; i++) {
		*o++ = hex[bytes[i] >> 4];
		*o++ = hex[bytes[i] & 0xf];
		if (dash_after[i])
			*o++ = '-';
	}
	*o = '\0';
	x->request_id_len = 36;
	x->request_id_generated = 1;
}

int
proxy_hop_header(const struct http_header *h)
{
	switch (h->id) {
	case HTTP_H_CONNECTION:
	case HTTP_H_KEEP_ALIVE:
	case HTTP_H_PROXY_CONNECTION:
	case HTTP_H_TE:
	case HTTP_H_TRAILER:
	case HTTP_H_X_REQUEST_ID:
		return 1;
	default:
		return 0;
	}
}

/* Headers never forwarded to a backend, and those the gateway rewrites itself. */
static int
proxy_drop_request_header(const struct exchange *x, const struct http_header *h)
{
	if (proxy_hop_header(h))
		return 1;
	switch (h->id) {
	case HTTP_H_EXPECT:
	case HTTP_H_X_FORWARDED_FOR:
	case HTTP_H_X_FORWARDED_PROTO:
	case HTTP_H_X_USER_ID:
	case HTTP_H_X_USER_TIER:
	case HTTP_H_PROXY_AUTHORIZATION:
		return 1;
	case HTTP_H_UPGRADE:
		return !x->req.upgrade;
	case HTTP_H_AUTHORIZATION:
	case HTTP_H_X_API_KEY:
		return x->route != NULL && x->route->auth != CONFIG_AUTH_OFF &&
		       !x->route->forward_auth;
	default:
		/* a revalidation sends the cache's validators instead of the client's */
		return x->cache_reval && cache_drop_request_header(x, h);
	}
}

/*
 * Headers named by Connection: are hop-by-hop too (RFC 9110 7.6.1). Almost every
 * Connection header says only close, keep-alive or upgrade, so that is checked once per
 * message and the per-header name lookup runs only for the rare other tokens.
 */
static int
proxy_connection_lists_others(const struct http_msg *m, const char *buf)
{
	size_t len;
	const char *v = http_header_get(m, buf, HTTP_H_CONNECTION, &len);
	const char *end;

	if (v == NULL)
		return 0;
	end = v + len;
	while (v < end) {
		const char *t = v;
		size_t n;

		while (v < end && *v != ',')
			v++;
		while (t < v && (*t == ' ' || *t == '\t'))
			t++;
		n = (size_t)(v - t);
		while (n > 0 && (t[n - 1] == ' ' || t[n - 1] == '\t'))
			n--;
		if (n > 0 && !util_strncaseeq(t, n, "close") && !util_strncaseeq(t, n, "keep-alive") &&
		    !util_strncaseeq(t, n, "upgrade"))
			return 1;
		if (v < end)
			v++;
	}
	return 0;
}

static int
proxy_connection_named(const struct http_msg *m, const char *buf, const struct http_header *h)
{
	size_t clen;
	const char *conn;
	char name[64];

	if (h->name_len >= sizeof(name))
		return 0;
	conn = http_header_get(m, buf, HTTP_H_CONNECTION, &clen);
	memcpy(name, buf + h->name_off, h->name_len);
	name[h->name_len] = '\0';
	return http_list_has(conn, clen, name);
}

int
proxy_request_header_forwarded(const struct exchange *x, const struct http_header *h)
{
	const struct http_msg *m = &x->req;

	return !proxy_drop_request_header(x, h) &&
	       !(h->id == HTTP_H_OTHER && proxy_connection_lists_others(m, x->in.data) &&
		 proxy_connection_named(m, x->in.data, h));
}

static size_t
proxy_append(char *dst, size_t off, size_t cap, const char *s, size_t n)
{
	if (off + n > cap)
		return cap + 1; /* marks overflow */
	memcpy(dst + off, s, n);
	return off + n;
}

/* The X-Forwarded-For value: what the client sent, then the peer's address. */
static size_t
proxy_xff(struct exchange *x, char *dst, size_t off, size_t cap)
{
	int first = 1;

	off = proxy_append(dst, off, cap, "X-Forwarded-For: ", 17);
	for (int i = 0; i < x->req.nhdr; i++) {
		const struct http_header *h = &x->req.hdr[i];
		if (h->id != HTTP_H_X_FORWARDED_FOR || h->value_len == 0)
			continue;
		if (!first)
			off = proxy_append(dst, off, cap, ", ", 2);
		off = proxy_append(dst, off, cap, x->in.data + h->value_off, h->value_len);
		first = 0;
	}
	if (!first)
		off = proxy_append(dst, off, cap, ", ", 2);
	off = proxy_append(dst, off, cap, x->c->peer_text, x->c->peer_text_len);
	return proxy_append(dst, off, cap, "\r\n", 2);
}

size_t
proxy_identity_headers(const struct exchange *x, char *e, size_t off, size_t cap)
{
	if (x->id.kind == IDENTITY_NONE || off >= cap)
		return off;
	/* who the gateway says the caller is; the client's own claims were dropped */
	off = util_append_str(e, off, cap, "X-User-Id: ");
	if (x->id.sub[0] == '\0')
		off = util_append_str(e, off, cap, "key:");
	off = util_append_str(e, off, cap, x->id.sub[0] ? x->id.sub : x->id.key_prefix);
	off = util_append_str(e, off, cap, "\r\nX-User-Tier: ");
	off = util_append_str(e, off, cap, x->id.tier);
	return util_append_str(e, off, cap, "\r\n");
}

static int
proxy_build_extra(struct exchange *x)
{
	char *e = x->req_extra;
	size_t cap = sizeof(x->req_extra), off = 0;

	off = proxy_xff(x, e, off, cap);
	if (x->c->tls)
		off = proxy_append(e, off, cap, "X-Forwarded-Proto: https\r\n", 26);
	else
		off = proxy_append(e, off, cap, "X-Forwarded-Proto: http\r\n", 25);
	off = proxy_append(e, off, cap, "X-Request-Id: ", 14);
	off = proxy_append(e, off, cap, x->request_id, x->request_id_len);
	off = proxy_append(e, off, cap, "\r\n", 2);
	if (x->req.upgrade)
		off = proxy_append(e, off, cap, "Connection: upgrade\r\n", 21);
	off = proxy_identity_headers(x, e, off, cap);
	if (x->cache_reval)
		off = cache_request_validators(x, e, off, cap);
	off = proxy_append(e, off, cap, "\r\n", 2);
	return off > cap ? -1 : (int)off;
}

/*
 * Queues the request body bytes already in `in` (up to the end of this request).
 * 0 queued, -1 malformed chunked framing, -2 over the body limit.
 */
static int
proxy_queue_body(struct exchange *x)
{
	uint32_t avail = x->in.end - x->in.start;
	const char *p = x->in.data + x->in.start;

	if (avail == 0 || x->req_body_left == 0)
		return 0;
	if (x->req.body == HTTP_BODY_LENGTH) {
		uint32_t n = x->req_body_left < avail ? (uint32_t)x->req_body_left : avail;
		sendq_add(&x->upq, p, n);
		x->req_body_left -= n;
		x->in.start += n;
		return 0;
	}
	ssize_t n = http_chunked_scan(&x->req_chunk, p, avail);
	if (n < 0)
		return -1;
	/* remaining is the current chunk's declared size still to come (a partial size
	 * line's value only grows): over the limit is known now, not once it has come */
	if (x->req_chunk.data_total + x->req_chunk.remaining > x->rt->cfg->limits.body)
		return -2;
	sendq_add(&x->upq, p, (size_t)n);
	x->in.start += (uint32_t)n;
	if (x->req_chunk.done)
		x->req_body_left = 0;
	return 0;
}

/*
 * The request line with the api_key parameter taken out of the query, in x->line_heap
 * (freed with the exchange). Returns its length.
 */
static size_t
proxy_line_without_key(struct exchange *x)
{
	const struct http_msg *m = &x->req;
	const char *buf = x->in.data;
	const char *q = x->path + x->path_len, *end = buf + m->target_off + m->target_len;
	size_t cap = m->first_line_len + 16, off;
	char *o;
	char sep = '?';

	free(x->line_heap);
	o = x->line_heap = xmalloc(cap);
	off = (size_t)snprintf(o, cap, "%.*s %.*s", m->method_len, buf + m->method_off,
			       (int)x->path_len, x->path);
	if (q < end)
		q++; /* '?' */
	while (q < end) {
		const char *amp = memchr(q, '&', (size_t)(end - q));
		const char *e = amp ? amp : end;
		if (!(e - q >= 8 && memcmp(q, "api_key=", 8) == 0) && e > q) {
			o[off++] = sep;
			memcpy(o + off, q, (size_t)(e - q));
			off += (size_t)(e - q);
			sep = '&';
		}
		q = e + (amp != NULL);
	}
	off += (size_t)snprintf(o + off, cap - off, " HTTP/1.%d\r\n", m->version_minor);
	return off;
}

/*
 * Queues on q the header lines of m (its text in buf) that go on: not those drop says
 * stay, nor those its Connection header names. 0, or -1 when q is full.
 */
static int
proxy_queue_headers(const struct exchange *x, struct sendq *q, const struct http_msg *m,
                    const char *buf,
                    int (*drop)(const struct exchange *, const struct http_header *))
{
	int named = proxy_connection_lists_others(m, buf);

	for (int i = 0; i < m->nhdr; i++) {
		const struct http_header *h = &m->hdr[i];

		if (drop(x, h) ||
		    (named && h->id == HTTP_H_OTHER && proxy_connection_named(m, buf, h)))
			continue;
		if (q->cnt >= SENDQ_MAX - 4)
			return -1;
		sendq_add(q, buf + h->line_off, h->line_len);
	}
	return 0;
}

/* 0 built, -2 the body already seen is over the limit, -1 any other failure. */
static int
proxy_build_request(struct exchange *x)
{
	const struct http_msg *m = &x->req;
	const char *buf = x->in.data;
	int elen;

	sendq_reset(&x->upq);
	if (x->id.via_query && x->route != NULL && x->route->auth != CONFIG_AUTH_OFF &&
	    !x->route->forward_auth) {
		/* the legacy ?api_key= is a credential: not forwarded (SPEC section 3) */
		size_t n = proxy_line_without_key(x);
		sendq_add(&x->upq, x->line_heap, n);
	} else if (buf[m->target_off] != '/' && m->method != HTTP_M_OPTIONS) {
		/* absolute-form: backends get origin-form */
		const char *t = buf + m->target_off;
		const char *slash = memchr(t + 8 < t + m->target_len ? t + 8 : t, '/',
					   m->target_len > 8 ? m->target_len - 8 : 0);
		size_t plen = slash ? (size_t)(t + m->target_len - slash) : 1;
		int n = snprintf(x->line_extra, sizeof(x->line_extra), "%.*s %.*s HTTP/1.%d\r\n",
				 m->method_len, buf + m->method_off, (int)plen, slash ? slash : "/",
				 m->version_minor);
		if (n < 0 || (size_t)n >= sizeof(x->line_extra))
			return -1;
		sendq_add(&x->upq, x->line_extra, (size_t)n);
	} else {
		sendq_add(&x->upq, buf, m->first_line_len);
	}
	if (proxy_queue_headers(x, &x->upq, m, buf, proxy_drop_request_header) != 0)
		return -1;
	elen = proxy_build_extra(x);
	if (elen < 0)
		return -1;
	sendq_add(&x->upq, x->req_extra, (size_t)elen);

	x->in.start = m->head_len;
	http_chunked_init(&x->req_chunk);
	x->req_body_left = m->body == HTTP_BODY_LENGTH ? m->content_length
			   : m->body == HTTP_BODY_CHUNKED ? UINT64_MAX
							  : 0;
	/* Expect: 100-continue: the body comes only after we say so. */
	if (x->req_body_left > 0 && m->expect_continue && x->in.end == x->in.start)
		return 0;
	return proxy_queue_body(x);
}

/* ---- building the response head ---- */

static int
proxy_drop_response_header(const struct exchange *x, const struct http_header *h)
{
	return proxy_hop_header(h) || (h->id == HTTP_H_UPGRADE && x->resp.status != 101);
}

/* X-Geo-Country and X-Geo-Distance-Km for a located client (geo.c). */
static size_t
proxy_geo_headers(const struct exchange *x, char *e, size_t off, size_t cap)
{
	long km;

	if (x->geo_country[0] != '\0') {
		off = proxy_append(e, off, cap, "\r\nX-Geo-Country: ", 17);
		off = proxy_append(e, off, cap, x->geo_country, strlen(x->geo_country));
	}
	if ((km = geo_distance_km(x)) >= 0) {
		off = proxy_append(e, off, cap, "\r\nX-Geo-Distance-Km: ", 21);
		off = util_append_u64(e, off, cap, (uint64_t)km);
	}
	return off;
}

static int
proxy_build_response(struct exchange *x)
{
	const struct http_msg *m = &x->resp;
	const char *buf = x->out.data;
	char *e = x->resp_extra;
	size_t cap = sizeof(x->resp_extra), off = 0;
	struct backend *b = x->b;

	sendq_reset(&x->cliq);
	if (m->version_minor == 1) {
		sendq_add(&x->cliq, buf, m->first_line_len);
	} else {
		int n = snprintf(x->line_extra, sizeof(x->line_extra), "HTTP/1.1 %03d %.*s\r\n",
				 m->status, (int)(m->reason_len < 100 ? m->reason_len : 100),
				 buf + m->reason_off);
		sendq_add(&x->cliq, x->line_extra, (size_t)n);
	}
	if (proxy_queue_headers(x, &x->cliq, m, buf, proxy_drop_response_header) != 0)
		return -1;
	if (m->body == HTTP_BODY_EOF || !x->req.keep_alive ||
	    atomic_load_explicit(&gw.draining, memory_order_relaxed))
		x->close_client = 1;
	off = proxy_append(e, off, cap, "X-Request-Id: ", 14);
	off = proxy_append(e, off, cap, x->request_id, x->request_id_len);
	off = proxy_append(e, off, cap, "\r\nX-Backend: ", 13);
	off = proxy_append(e, off, cap, b->id, strlen(b->id));
	if (b->dc[0] != '\0') {
		off = proxy_append(e, off, cap, "\r\nX-Datacenter: ", 16);
		off = proxy_append(e, off, cap, b->dc, strlen(b->dc));
	}
	off = proxy_geo_headers(x, e, off, cap);
	off = proxy_append(e, off, cap, "\r\nX-Cache: ", 11);
	off = util_append_str(e, off, cap, x->cache_status != NULL ? x->cache_status : "BYPASS");
	off = proxy_append(e, off, cap, "\r\n", 2);
	if (x->id.kind != IDENTITY_NONE || x->id.via_query) {
		char idh[512];
		size_t n = identify_response_headers(x, idh, sizeof(idh));
		off = proxy_append(e, off, cap, idh, n);
	}
	if (m->status == 101)
		off = proxy_append(e, off, cap, "Connection: upgrade\r\n", 21);
	else if (x->close_client)
		off = proxy_append(e, off, cap, "Connection: close\r\n", 19);
	else if (x->req.version_minor == 0)
		off = proxy_append(e, off, cap, "Connection: keep-alive\r\n", 24);
	off = proxy_append(e, off, cap, "\r\n", 2);
	if (off > cap)
		return -1;
	sendq_add(&x->cliq, e, off);
	x->status = m->status;
	return 0;
}

/* Queues response body bytes from `out` for the client. */
static int
proxy_queue_resp_body(struct exchange *x)
{
	uint32_t avail = x->out.end - x->out.start;
	const char *p = x->out.data + x->out.start;

	if (avail == 0)
		return 0;
	switch (x->resp.body) {
	case HTTP_BODY_LENGTH: {
		uint32_t n = x->resp_body_left < avail ? (uint32_t)x->resp_body_left : avail;
		sendq_add(&x->cliq, p, n);
		if (x->cache_fill != NULL)
			cache_fill_body(x, p, n);
		x->resp_body_left -= n;
		x->out.start += n;
		x->bytes_out += n;
		break;
	}
	case HTTP_BODY_CHUNKED: {
		/* a cache fill keeps the decoded payload */
		ssize_t n = x->cache_fill != NULL
				    ? http_chunked_decode(&x->resp_chunk, p, avail, cache_fill_body, x)
				    : http_chunked_scan(&x->resp_chunk, p, avail);
		if (n < 0)
			return -1;
		sendq_add(&x->cliq, p, (size_t)n);
		x->out.start += (uint32_t)n;
		x->bytes_out += (uint64_t)n;
		if (x->resp_chunk.done)
			x->resp_body_left = 0;
		break;
	}
	default: /* EOF-delimited: everything until the backend closes */
		sendq_add(&x->cliq, p, avail);
		if (x->cache_fill != NULL)
			cache_fill_body(x, p, avail);
		x->out.start += avail;
		x->bytes_out += avail;
		break;
	}
	return 0;
}

/* ---- the exchange ---- */

static void
proxy_release_backend(struct exchange *x, int reusable)
{
	if (x->u != NULL) {
		struct upconn *u = x->u;
		x->u = NULL;
		u->x = NULL;
		if (reusable)
			upconn_put_idle(u);
		else
			upconn_close(u);
	}
	if (x->counted_active) {
		atomic_fetch_sub_explicit(&x->b->active, 1, memory_order_relaxed);
		x->counted_active = 0;
		/* A slot opened: let a queued request have it (from the loop, not here). */
		if (x->w->queue_len > 0)
			event_active(x->w->queue_ev, EV_TIMEOUT, 0);
	}
}

void
proxy_abort(struct exchange *x)
{
	if (x->b == NULL)
		return;
	if (x->phase == X_UPSTREAM && !x->resp_done && x->counted_active &&
	    circuit_get_state(&x->b->circuit) == CIRCUIT_HALF_OPEN)
		circuit_failure(&x->b->circuit, x->w->now_ms);
	proxy_release_backend(x, 0);
	x->b = NULL;
}

static void
proxy_record(struct exchange *x, int failed)
{
	struct backend *b = x->b;
	struct backend_pw *pw = &b->pw[x->w->id];
	/* from the moment the backend had the request: connect time and a slow upload
	 * are not the backend's response time */
	uint64_t us = util_now_us() - (x->sent_us ? x->sent_us : x->start_us);

	worker_counter_add(&pw->requests, 1);
	if (failed) {
		worker_counter_add(&pw->failures, 1);
		circuit_failure(&b->circuit, x->w->now_ms);
		atomic_fetch_add_explicit(&b->recent_failures, 1, memory_order_relaxed);
		return;
	}
	worker_counter_add(&pw->responses, 1);
	worker_counter_add(&pw->latency_us_sum, us);
	/* The first answer on a new connection is slow for reasons of its own (cold
	 * socket, the backend's first request): one such sample would make an equal
	 * backend look several times slower and the adaptive strategy would shun it. */
	if (x->u == NULL || !x->u->reused)
		return;
	/*
	 * EWMA with alpha 1/8; racy between workers on purpose: it is a hint. One sample
	 * counts for at most 4x the estimate (plus 1 ms): a single scheduling stall must
	 * not make an equal backend look slow for seconds, while a backend that really got
	 * slower still raises its estimate by up to 1.375x per response.
	 */
	uint64_t old = atomic_load_explicit(&b->ewma_us, memory_order_relaxed);
	if (old != 0 && us > old * 4 + 1000)
		us = old * 4 + 1000;
	atomic_store_explicit(&b->ewma_us, old == 0 ? us : old - old / 8 + us / 8,
			      memory_order_relaxed);
	atomic_store_explicit(&b->ewma_at_ms, x->w->now_ms, memory_order_relaxed);
}

/* Sends x's request over u (pooled or connecting); u NULL means the connect failed. */
static void
proxy_connect_to(struct exchange *x, struct upconn *u)
{
	x->u = u;
	if (u == NULL) {
		proxy_fail(x, 0);
		return;
	}
	u->x = x;
	x->resp_started = 0;
	x->req_done = 0;
	http_msg_reset(&x->resp);
	x->out.start = x->out.end = 0;
	x->c->deadline_ms =
		x->w->now_ms + (u->state == UP_CONNECTING ? x->rt->cfg->timeouts.connect_ms
							  : x->rt->cfg->timeouts.response_ms);
	int r = proxy_build_request(x);
	if (r < 0) {
		proxy_release_backend(x, 0);
		x->b = NULL;
		x->close_client = 1;
		if (r == -2)
			respond_error(x, 413, "body_too_large", "The request body is too large.",
				      NULL, NULL);
		else
			respond_error(x, 400, "invalid_request", "Malformed request.", NULL, NULL);
		return;
	}
	proxy_run(x);
}

void
proxy_go(struct exchange *x)
{
	x->phase = X_UPSTREAM;
	x->attempts++;
	proxy_connect_to(x, upconn_get(x->w, x->b));
}

void
proxy_start(struct exchange *x)
{
	int r;

	x->buffered = 1;
	r = proxy_pick(x);
	if (r == 0) {
		if (queue_push(x) == -1) {
			worker_counter_add(&x->w->st_queue_rejected, 1);
			respond_error(x, 503, "queue_full",
				      "Every backend is busy and the queue is full.",
				      "Retry-After: 1\r\n", NULL);
		}
		return;
	}
	if (r < 0 && x->attempts > 0) {
		/* a retry found no other backend: the client learns what really failed */
		proxy_respond_failure(x);
		return;
	}
	if (r < 0) {
		if (x->cache_ent != NULL && cache_serve_stale_on_error(x))
			return;
		respond_error(x, 503, "no_healthy_backend", "No healthy backend is available.",
			      "Retry-After: 5\r\n", NULL);
		return;
	}
	proxy_go(x);
}

/*
 * A retry is allowed for idempotent requests still whole in the buffer, up to `retries`
 * extra attempts, and within the worker's retry budget (10/s plus 20% of requests), so
 * a sick fleet does not get a retry storm.
 */
static int
proxy_can_retry(struct exchange *x)
{
	if (!x->buffered || !http_method_idempotent((enum http_method)x->req.method) ||
	    x->attempts > x->rt->cfg->retries || x->w->retry_tokens < 1000)
		return 0;
	x->w->retry_tokens -= 1000;
	return 1;
}

static void
proxy_respond_failure(struct exchange *x)
{
	if (x->cache_ent != NULL && cache_serve_stale_on_error(x))
		return; /* stale-if-error, or the origin is unreachable */
	x->close_client = x->close_client || !x->buffered;
	if (x->last_fail_timeout)
		respond_error(x, 504, "gateway_timeout", "The backend did not answer in time.",
			      NULL, NULL);
	else
		respond_error(x, 502, "bad_gateway", "The backend failed to answer.", NULL, NULL);
}

/* The backend failed before any response byte: retry elsewhere or answer 502/504. */
static void
proxy_fail(struct exchange *x, int timeout)
{
	struct backend *b = x->b;
	int reused = x->u != NULL && x->u->reused;

	x->last_fail_timeout = (uint8_t)timeout;
	proxy_release_backend(x, 0);
	if (reused && !x->reuse_retry_done && x->buffered && !timeout) {
		/* A pooled connection the backend had closed: not the backend's fault. */
		x->reuse_retry_done = 1;
		atomic_fetch_add_explicit(&b->active, 1, memory_order_relaxed);
		x->counted_active = 1;
		proxy_connect_to(x, upconn_connect(x->w, b));
		return;
	}
	proxy_record(x, 1);
	x->b = NULL;
	if (!x->resp_head_sent && proxy_can_retry(x)) {
		proxy_start(x);
		return;
	}
	if (x->resp_head_sent) {
		client_close(x->c);
		return;
	}
	proxy_respond_failure(x);
}

void
proxy_timeout(struct exchange *x)
{
	if (x->resp_head_sent) {
		struct backend *b = x->b;
		proxy_release_backend(x, 0);
		if (b != NULL)
			circuit_failure(&b->circuit, x->w->now_ms);
		client_close(x->c);
		return;
	}
	proxy_fail(x, 1);
}

/* Checks a non-blocking connect: 1 connected, 0 pending, -1 failed. */
static int
proxy_connected(struct upconn *u)
{
	int err = 0;
	socklen_t len = sizeof(err);

	if (u->state != UP_CONNECTING)
		return 1;
	if (!u->writable && !u->readable)
		return 0;
	if (getsockopt(u->fd, SOL_SOCKET, SO_ERROR, &err, &len) == -1 || err != 0)
		return -1;
	u->state = UP_BUSY;
	/* connected: from now on the response timeout runs */
	if (u->x != NULL)
		u->x->c->deadline_ms = u->w->now_ms + u->x->rt->cfg->timeouts.response_ms;
	return 1;
}

static const char proxy_continue[] = "HTTP/1.1 100 Continue\r\n\r\n";

/* Flushes x's queue to the backend when it can be written: 1 all sent, 0 some remains
 * (or not writable), -1 error. */
static int
proxy_flush_up(struct exchange *x)
{
	struct upconn *u = x->u;

	return u->writable ? sendq_flush_fd(&x->upq, u->fd, upconn_writev, u) : 0;
}

/* The same for x's queue to the client (client_flush). */
static int
proxy_flush_client(struct exchange *x)
{
	return x->c->writable ? client_flush(x->c) : 0;
}

/* Request side: flush the queue to the backend, pull more body from the client. */
static int
proxy_step_request(struct exchange *x)
{
	struct client *c = x->c;
	int progress = 0;

	if (!sendq_empty(&x->upq)) {
		int r = proxy_flush_up(x);
		if (r <= 0)
			return r < 0 ? -1 : 0;
		progress = 1;
	}
	if (x->req_body_left == 0) {
		x->req_done = 1;
		x->sent_us = util_now_us();
		/* the whole request is out: the backend has `response` to answer */
		c->deadline_ms = x->w->now_ms + x->rt->cfg->timeouts.response_ms;
		return progress;
	}
	if (x->in.start < x->in.end) {
		int q = proxy_queue_body(x);
		if (q < 0)
			return q == -2 ? -4 : -2;
		return 1;
	}
	if (x->req.expect_continue && !x->sent_continue) {
		x->sent_continue = 1;
		sendq_add(&x->cliq, proxy_continue, sizeof(proxy_continue) - 1);
		return 1;
	}
	if (!c->readable)
		return progress;
	if (x->in.end == x->in.cap) {
		/* Everything queued was sent: the buffer can start over, and the request
		 * is no longer whole in memory (no retry from here on). */
		accesslog_save_target(x);
		x->in.start = x->in.end = 0;
		x->buffered = 0;
	}
	ssize_t n = client_read(c, x->in.data + x->in.end, x->in.cap - x->in.end);
	if (n == 0 || (n < 0 && errno != EAGAIN))
		return -3;
	if (n < 0)
		return progress;
	x->in.end += (uint32_t)n;
	/* the client is still uploading: its pace is bounded by client_idle, not by the
	 * backend's response timeout */
	c->deadline_ms = x->w->now_ms + x->rt->cfg->timeouts.client_idle_ms;
	return 1;
}

static void
proxy_tunnel_start(struct exchange *x)
{
	x->phase = X_TUNNEL;
	x->c->state = CS_TUNNEL;
	x->req_done = 1;
	x->resp_done = 1;
}

/*
 * The cache answers instead of this response (a 304 that revalidated its entry, or a 5xx
 * replaced by a stale one): the backend is done with. Returns -5 for proxy_run.
 */
static int
proxy_cache_answer(struct exchange *x)
{
	int ok = x->resp.status < 500;
	int reusable = ok && x->resp.body == HTTP_BODY_NONE && x->resp.keep_alive &&
		       x->req_done && x->out.end == x->resp.head_len;

	proxy_record(x, !ok);
	if (ok)
		circuit_success(&x->b->circuit, x->w->now_ms);
	proxy_release_backend(x, reusable);
	x->b = NULL;
	cache_answer(x);
	return -5;
}

/* Response head: read, parse, skip interim responses, queue the head for the client. */
static int
proxy_step_resp_head(struct exchange *x)
{
	struct upconn *u = x->u;
	struct http_limits lim = {.max_head = x->out.cap, .max_headers = HTTP_MAX_HEADERS,
				  .max_uri = x->out.cap};
	int r = HTTP_AGAIN;

	if (x->out.end > 0)
		r = http_parse_response(&x->resp, x->out.data, x->out.end, &lim,
					(enum http_method)x->req.method);
	while (r == HTTP_AGAIN) {
		if (!u->readable)
			return 0;
		if (x->out.end == x->out.cap)
			return -2;
		ssize_t n = read(u->fd, x->out.data + x->out.end, x->out.cap - x->out.end);
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			u->readable = 0;
			return 0;
		}
		if (n <= 0)
			return x->resp_started ? -2 : -1;
		x->short_read = (size_t)n < x->out.cap - x->out.end;
		x->resp_started = 1;
		x->out.end += (uint32_t)n;
		x->c->deadline_ms = x->w->now_ms + x->rt->cfg->timeouts.response_ms;
		r = http_parse_response(&x->resp, x->out.data, x->out.end, &lim,
					(enum http_method)x->req.method);
	}
	if (r != HTTP_OK)
		return -2;
	if (x->resp.status < 200 && x->resp.status != 101) {
		/* 100 is not forwarded (the gateway answers Expect itself and does not send
		 * it upstream); other interim responses (102, 103) go to HTTP/1.1 clients
		 * (RFC 9110 15.2), copied aside because `out` is reused for the next head. */
		uint32_t hl = x->resp.head_len;
		if (x->resp.status != 100 && x->req.version_minor == 1 && x->heap == NULL) {
			x->heap = xstrndup(x->out.data, hl);
			sendq_add(&x->cliq, x->heap, hl);
		}
		memmove(x->out.data, x->out.data + hl, x->out.end - hl);
		x->out.end -= hl;
		http_msg_reset(&x->resp);
		return 1;
	}
	if (x->resp.status == 101 && !x->req.upgrade)
		return -2;
	if (!sendq_empty(&x->cliq))
		return 0; /* a 100 Continue is still going out */
	if (x->route != NULL && x->route->cache && x->resp.status != 101 &&
	    cache_response_head(x))
		return proxy_cache_answer(x);
	if (proxy_build_response(x) == -1)
		return -2;
	x->out.start = x->resp.head_len;
	x->resp_body_left = x->resp.body == HTTP_BODY_LENGTH ? x->resp.content_length
			    : x->resp.body == HTTP_BODY_NONE ? 0
							     : UINT64_MAX;
	http_chunked_init(&x->resp_chunk);
	x->resp_head_sent = 1;
	if (x->resp.status == 101) {
		proxy_tunnel_start(x);
		sendq_add(&x->cliq, x->out.data + x->out.start, x->out.end - x->out.start);
		x->out.start = x->out.end;
		return 1;
	}
	if (proxy_queue_resp_body(x) < 0)
		return -2;
	return 1;
}

/*
 * The backend's response is complete; its last bytes may still be queued for the client.
 * Counted, logged and stored in the cache now, before they go out: a client that holds
 * the whole response finds it in /metrics, /logs and the cache, whichever worker it asks
 * next (the local answers of respond.c and cache.c count before their flush too).
 */
static void
proxy_settle(struct exchange *x)
{
	x->resp_settled = 1;
	proxy_record(x, x->resp.status >= 500);
	metrics_request(x->w, x->resp.status, x->b, x->start_us);
	metrics_geo(x->w, x->b, x->geo_country);
	accesslog_request(x, x->resp.status, x->b, x->bytes_out, NULL);
	if (x->resp.status < 500)
		circuit_success(&x->b->circuit, x->w->now_ms);
	if (x->resp.status >= 500)
		worker_counter_add(&x->w->st_errors, 1);
	if (x->route != NULL && x->route->cache)
		cache_response_done(x);
}

/* Response body: flush to the client, read more from the backend. */
static int
proxy_step_resp_body(struct exchange *x)
{
	struct upconn *u = x->u;
	int progress = 0;

	if (x->resp_body_left == 0 && !x->resp_settled)
		proxy_settle(x);
	if (!sendq_empty(&x->cliq)) {
		int r = proxy_flush_client(x);
		if (r <= 0)
			return r < 0 ? -3 : 0;
		progress = 1;
	}
	if (x->resp_body_left == 0) {
		x->resp_done = 1;
		return progress;
	}
	if (x->out.start < x->out.end) {
		if (proxy_queue_resp_body(x) < 0)
			return -2;
		return 1;
	}
	if (!u->readable)
		return progress;
	x->out.start = x->out.end = 0;
	ssize_t n = read(u->fd, x->out.data, x->out.cap);
	if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
		u->readable = 0;
		return progress;
	}
	if (n == 0 && x->resp.body == HTTP_BODY_EOF) {
		x->resp_body_left = 0;
		x->resp_done = 1;
		x->close_client = 1;
		return 1;
	}
	if (n <= 0)
		return -2; /* truncated response: the client connection must end too */
	x->short_read = (size_t)n < x->out.cap;
	x->out.end = (uint32_t)n;
	x->c->deadline_ms = x->w->now_ms + x->rt->cfg->timeouts.response_ms;
	return 1;
}

/* Tunnel (after 101): move bytes both ways until either side closes. */
static int
proxy_step_tunnel(struct exchange *x)
{
	struct upconn *u = x->u;
	struct client *c = x->c;
	int progress = 0;

	if (!sendq_empty(&x->cliq)) {
		int r = proxy_flush_client(x);
		if (r < 0)
			return -3;
		progress |= r;
	}
	if (!sendq_empty(&x->upq)) {
		int r = proxy_flush_up(x);
		if (r < 0)
			return -3;
		progress |= r;
	}
	if (sendq_empty(&x->cliq) && u->readable) {
		ssize_t n = read(u->fd, x->out.data, x->out.cap);
		if (n == 0 || (n < 0 && errno != EAGAIN))
			return -3;
		if (n > 0) {
			sendq_add(&x->cliq, x->out.data, (size_t)n);
			progress = 1;
		} else {
			u->readable = 0;
		}
	}
	if (sendq_empty(&x->upq) && c->readable) {
		if (x->in.start < x->in.end) {
			sendq_add(&x->upq, x->in.data + x->in.start, x->in.end - x->in.start);
			x->in.start = x->in.end;
			return 1;
		}
		accesslog_save_target(x);
		x->in.start = x->in.end = 0;
		ssize_t n = client_read(c, x->in.data, x->in.cap);
		if (n == 0 || (n < 0 && errno != EAGAIN))
			return -3;
		if (n > 0) {
			sendq_add(&x->upq, x->in.data, (size_t)n);
			x->in.start = x->in.end = (uint32_t)n;
			progress = 1;
		}
	}
	if (progress)
		c->deadline_ms = x->w->now_ms + x->rt->cfg->timeouts.client_idle_ms;
	return progress;
}

/*
 * Error codes of the steps: -1 the backend failed before answering (retryable), -2 the
 * backend broke the protocol or the response, -3 the client went away.
 */
void
proxy_run(struct exchange *x)
{
	for (int rounds = 0; rounds < 1024; rounds++) {
		int r = 0, p;

		if (x->phase != X_UPSTREAM && x->phase != X_TUNNEL)
			return;
		if (x->u == NULL)
			return;
		p = proxy_connected(x->u);
		if (p < 0) {
			proxy_fail(x, 0);
			return;
		}
		if (p == 0)
			return;
		if (x->phase == X_TUNNEL) {
			r = proxy_step_tunnel(x);
			if (r < 0) {
				proxy_release_backend(x, 0);
				client_close(x->c);
				return;
			}
			if (r == 0)
				return;
			continue;
		}
		if (!x->req_done) {
			r = proxy_step_request(x);
			if (r == -1 && !x->resp_started) {
				proxy_fail(x, 0);
				return;
			}
			if (r == -2 || r == -4) {
				/* The body broke its framing or its limit mid-stream: the
				 * backend has a partial request, so that connection goes. */
				proxy_release_backend(x, 0);
				x->b = NULL;
				x->close_client = 1;
				if (x->resp_head_sent)
					client_close(x->c);
				else if (r == -4)
					respond_error(x, 413, "body_too_large",
						      "The request body is too large.", NULL, NULL);
				else
					respond_error(x, 400, "invalid_request",
						      "Malformed request body.", NULL, NULL);
				return;
			}
			if (r == -3) {
				client_close(x->c);
				return;
			}
			if (r < 0)
				r = 0; /* write error after a response began: read it anyway */
		}
		if (!x->resp_head_sent && !sendq_empty(&x->cliq) && x->c->writable) {
			/* interim output (100 Continue, 1xx) before the final head */
			p = client_flush(x->c);
			if (p < 0) {
				client_close(x->c);
				return;
			}
			r |= p;
		}
		if (!x->resp_head_sent) {
			p = proxy_step_resp_head(x);
			if (p == -5)
				return; /* answered from the cache: x may be reused already */
			if (p == -1) {
				proxy_fail(x, 0);
				return;
			}
			if (p == -2) {
				proxy_record(x, 1);
				proxy_release_backend(x, 0);
				x->b = NULL;
				x->close_client = 1;
				respond_error(x, 502, "bad_gateway",
					      "The backend sent an invalid response.", NULL, NULL);
				return;
			}
			r |= p;
		} else if (x->phase == X_UPSTREAM) {
			p = proxy_step_resp_body(x);
			if (p < 0) {
				if (p == -2)
					proxy_record(x, 1);
				proxy_release_backend(x, 0);
				client_close(x->c);
				return;
			}
			r |= p;
			if (x->resp_done && sendq_empty(&x->cliq)) {
				proxy_finish(x);
				return;
			}
		}
		if (r == 0)
			return;
	}
	/* a long transfer: yield to other connections and resume from the loop */
	if (x->c != NULL && !x->c->closed)
		event_active(&x->c->ev, EV_READ, 0);
}

static void
proxy_finish(struct exchange *x)
{
	int reusable = x->resp.keep_alive && x->req_done && x->resp.body != HTTP_BODY_EOF;

	/*
	 * Edge-triggered reads normally go on until EAGAIN, so that a FIN or RST that came
	 * with the last bytes is not missed while a response is incomplete. Once it is
	 * complete, a short last read means the socket was drained: skip the EAGAIN read
	 * when the connection is reused (a close meanwhile raises a new edge).
	 */
	if (x->u != NULL && x->short_read && !x->u->hup)
		x->u->readable = 0;
	if (!x->resp_settled) /* an EOF-delimited body ends with the read of its FIN */
		proxy_settle(x);
	if (!x->req_done)
		x->close_client = 1; /* the backend answered before the body was read */
	proxy_release_backend(x, reusable);
	x->b = NULL;
	client_exchange_done(x);
}
