#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "accesslog.h"
#include "cache.h"
#include "cidr.h"
#include "connlimit.h"
#include "log.h"
#include "metrics.h"
#include "proxy.h"
#include "util.h"
#include "ws.h"
#include "xmalloc.h"

/*
 * Client connections. An idle keep-alive connection holds only its struct client (a
 * few hundred bytes); the exchange with its buffers is taken from the worker's
 * freelist when the first byte of a request arrives and given back when the response
 * is done. client_close() is the one place a client connection ends.
 */

#define CLIENT_OUT_BUF 32768
#define CLIENT_FREELIST_MAX 1024

static void client_head(struct client *c);

static uint32_t
client_in_cap(const struct runtime *rt)
{
	/* Room for a maximal head plus the start of a body. */
	uint32_t cap = rt->limits.max_head + 4096;
	return cap < 16384 ? 16384 : cap;
}

/* Clears the per-request fields of x for a new request on the same connection. */
static void
exchange_reset(struct exchange *x)
{
	size_t off = offsetof(struct exchange, client_ip);

	cache_exchange_end(x);
	memset((char *)x + off, 0, offsetof(struct exchange, req_extra) - off);
	free(x->heap);
	x->heap = NULL;
	free(x->line_heap);
	x->line_heap = NULL;
	x->status = 0;
	x->bytes_out = 0;
	sendq_reset(&x->cliq);
	sendq_reset(&x->upq);
	http_msg_reset(&x->req);
	x->phase = X_HEAD;
	x->out.start = x->out.end = 0;
	x->head_started_ms = x->w->now_ms;
}

static struct exchange *
exchange_get(struct client *c)
{
	struct worker *w = c->w;
	struct exchange *x = w->free_x;
	struct runtime *rt = worker_rt_acquire(w);
	uint32_t cap = client_in_cap(rt);

	if (x != NULL) {
		w->free_x = x->next_free;
		w->nfree_x--;
	} else {
		x = xcalloc(1, sizeof(*x));
		x->out.data = xmalloc(CLIENT_OUT_BUF);
		x->out.cap = CLIENT_OUT_BUF;
	}
	if (x->in.cap != cap) {
		x->in.data = xrealloc(x->in.data, cap);
		x->in.cap = cap;
	}
	x->in.start = x->in.end = 0;
	x->out.start = x->out.end = 0;
	x->c = c;
	x->w = w;
	x->rt = rt;
	exchange_reset(x);
	return x;
}

void
client_exchange_release(struct exchange *x)
{
	struct worker *w = x->w;

	cache_exchange_end(x);
	worker_rt_release(w, x->rt);
	x->rt = NULL;
	x->c = NULL;
	free(x->heap);
	x->heap = NULL;
	free(x->line_heap);
	x->line_heap = NULL;
	if (w->nfree_x >= CLIENT_FREELIST_MAX) {
		free(x->in.data);
		free(x->out.data);
		free(x);
		return;
	}
	x->next_free = w->free_x;
	w->free_x = x;
	w->nfree_x++;
}

ssize_t
client_read(struct client *c, char *buf, size_t len)
{
	ssize_t n;

	if (c->ssl == NULL) {
		n = read(c->fd, buf, len);
		/* Edge-triggered: a short read emptied the socket, and the next byte to
		 * arrive raises a new edge, so no EAGAIN read is needed to re-arm. */
		if ((n == -1 && (errno == EAGAIN || errno == EWOULDBLOCK)) ||
		    (n > 0 && (size_t)n < len && !c->hup))
			c->readable = 0;
		return n;
	}
	n = SSL_read(c->ssl, buf, (int)len);
	if (n > 0)
		return n;
	switch (SSL_get_error(c->ssl, (int)n)) {
	case SSL_ERROR_WANT_READ:
	case SSL_ERROR_WANT_WRITE:
		c->readable = 0;
		errno = EAGAIN;
		return -1;
	case SSL_ERROR_ZERO_RETURN:
		return 0;
	default:
		ERR_clear_error();
		errno = ECONNRESET;
		return -1;
	}
}

ssize_t
client_writev(struct client *c, const struct iovec *iov, int cnt)
{
	ssize_t total = 0;

	if (c->ssl == NULL) {
		ssize_t n = writev(c->fd, iov, cnt);
		if (n == -1 && (errno == EAGAIN || errno == EWOULDBLOCK))
			c->writable = 0;
		return n;
	}
	/* TLS has no gather write: one record per buffer, stop at the first short one. */
	for (int i = 0; i < cnt; i++) {
		int n;

		if (iov[i].iov_len == 0)
			continue;
		n = SSL_write(c->ssl, iov[i].iov_base, (int)iov[i].iov_len);
		if (n <= 0) {
			int e = SSL_get_error(c->ssl, n);
			if (e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ) {
				c->writable = 0;
				if (total > 0)
					return total;
				errno = EAGAIN;
				return -1;
			}
			ERR_clear_error();
			errno = EPIPE;
			return total > 0 ? total : -1;
		}
		total += n;
		if ((size_t)n < iov[i].iov_len)
			break;
	}
	return total;
}

static ssize_t
client_writev_cb(void *arg, const struct iovec *iov, int cnt)
{
	return client_writev(arg, iov, cnt);
}

int
client_flush(struct client *c)
{
	if (c->x == NULL)
		return 1;
	if (!c->writable && c->x->cliq.pos < c->x->cliq.cnt)
		return 0;
	return sendq_flush_fd(&c->x->cliq, c->fd, client_writev_cb, c);
}

void
client_close(struct client *c)
{
	struct worker *w = c->w;

	if (c->closed)
		return;
	c->closed = 1;
	if (c->x != NULL) {
		struct exchange *x = c->x;

		if (x->phase == X_QUEUED)
			queue_remove(x);
		proxy_abort(x);
		c->x = NULL;
		if (x->job_pending)
			x->c = NULL; /* orphaned: jobs_complete releases it when the job is back */
		else
			client_exchange_release(x);
	}
	ws_client_free(c);
	if (c->ssl != NULL) {
		SSL_shutdown(c->ssl);
		SSL_free(c->ssl);
		ERR_clear_error();
	}
	event_del(&c->ev);
	close(c->fd);
	if (c->ip_counted)
		connlimit_release(connlimit_global(), c->peer);
	if (c->prev != NULL)
		c->prev->next = c->next;
	else
		w->clients = c->next;
	if (c->next != NULL)
		c->next->prev = c->prev;
	w->nclients--;
	/* Freed by the worker's next tick: callers up the stack may still look at
	 * c->closed after an event handler closed it. */
	c->next = w->dead;
	w->dead = c;
}

/* SPEC section 4 JSON for a plain-HTTP connection over conns_per_ip. */
static const char client_too_many[] =
	"HTTP/1.1 429 Too Many Requests\r\n"
	"Content-Type: application/json\r\n"
	"Content-Length: 84\r\n"
	"Retry-After: 1\r\n"
	"Cache-Control: no-store\r\n"
	"Connection: close\r\n"
	"\r\n"
	"{\"error\":\"too_many_connections\",\"message\":\"Too many connections from this "
	"address.\"}";

/* SPEC section 4 JSON for a request whose wait (the pool, Redis, a geo lookup) outlived
 * its deadline. */
static const char client_wait_504[] =
	"HTTP/1.1 504 Gateway Timeout\r\n"
	"Content-Type: application/json\r\n"
	"Content-Length: 83\r\n"
	"Cache-Control: no-store\r\n"
	"Connection: close\r\n"
	"\r\n"
	"{\"error\":\"gateway_timeout\",\"message\":\"The gateway did not get the answer in "
	"time.\"}";

void
client_wait_expired(struct client *c)
{
	struct exchange *x = c->x;
	struct iovec iov = {(void *)(uintptr_t)client_wait_504, sizeof(client_wait_504) - 1};

	/* Whatever x waits for still owns it (client_close orphans it): read here, never
	 * written. The answer goes out once, without waiting for the socket. */
	metrics_request(c->w, 504, NULL, x->start_us);
	accesslog_request(x, 504, NULL, 83, "gateway_timeout");
	if (c->writable)
		(void)client_writev(c, &iov, 1);
	client_close(c);
}

/*
 * limits conns_per_ip: counted per connection, never per request. Trusted proxies and
 * ip_limit_exempt addresses are not counted (many clients share them). 0: refused, the
 * caller closes fd (a plain listener's peer gets a 429 first, written once, without
 * waiting: it is a courtesy, not a promise).
 */
static int
client_ip_admit(struct worker *w, const struct listener *l, int fd, const uint8_t peer[16],
		uint8_t *counted)
{
	const struct runtime *rt = w->rt;
	uint64_t max = rt->cfg->limits.conns_per_ip;

	*counted = 0;
	if (max == 0 || cidr_tree_match(rt->trusted, peer, NULL) != NULL ||
	    cidr_tree_match(rt->exempt, peer, NULL) != NULL)
		return 1;
	switch (connlimit_acquire(connlimit_global(), peer, (uint32_t)max)) {
	case CONNLIMIT_COUNTED:
		*counted = 1;
		return 1;
	case CONNLIMIT_UNTRACKED:
		return 1;
	case CONNLIMIT_OVER:
		break;
	}
	if (!l->tls && send(fd, client_too_many, sizeof(client_too_many) - 1,
			    MSG_DONTWAIT | MSG_NOSIGNAL) < 0)
		errno = 0; /* the peer may be gone already: nothing to do */
	return 0;
}

void
client_accept(struct worker *w, struct listener *l, int fd, const struct sockaddr *sa)
{
	struct client *c;
	struct cidr peer;
	uint8_t counted;
	int one = 1;

	if (cidr_from_sockaddr(sa, &peer) != 0)
		memset(&peer, 0, sizeof(peer));
	if (!client_ip_admit(w, l, fd, peer.addr, &counted)) {
		close(fd);
		return;
	}
	c = xcalloc(1, sizeof(*c));
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	c->fd = fd;
	c->w = w;
	c->ip_counted = counted;
	memcpy(c->peer, peer.addr, 16);
	cidr_format_addr(c->peer, c->peer_text, sizeof(c->peer_text));
	c->peer_text_len = (uint8_t)strlen(c->peer_text);
	c->peer_port = ntohs(sa->sa_family == AF_INET6 ? ((const struct sockaddr_in6 *)sa)->sin6_port
						       : ((const struct sockaddr_in *)sa)->sin_port);
	c->state = CS_IDLE;
	c->deadline_ms = w->now_ms + w->rt->cfg->timeouts.client_header_ms;
	if (l->tls) {
		c->tls = 1;
		c->ssl = SSL_new(worker_listener_ctx(w, l));
		SSL_set_fd(c->ssl, fd);
		SSL_set_accept_state(c->ssl);
		c->tls_handshaking = 1;
	}
	c->next = w->clients;
	if (w->clients != NULL)
		w->clients->prev = c;
	w->clients = c;
	w->nclients++;
	worker_counter_add(&w->st_conns, 1);
	/* Registered once for both directions, edge-triggered: readiness is kept in
	 * c->readable/c->writable, so no event_add/del per request. */
	event_assign(&c->ev, w->base, fd, EV_READ | EV_WRITE | EV_CLOSED | EV_PERSIST | EV_ET,
		     client_event, c);
	event_add(&c->ev, NULL);
	c->readable = 1;
	c->writable = 1;
	client_run(c);
}

static int
client_handshake(struct client *c)
{
	int r = SSL_do_handshake(c->ssl);

	if (r == 1) {
		c->tls_handshaking = 0;
		return 1;
	}
	switch (SSL_get_error(c->ssl, r)) {
	case SSL_ERROR_WANT_READ:
		c->readable = 0;
		return 0;
	case SSL_ERROR_WANT_WRITE:
		c->writable = 0;
		return 0;
	default:
		ERR_clear_error();
		return -1;
	}
}

void
client_event(evutil_socket_t fd, short what, void *arg)
{
	struct client *c = arg;

	c->w->now_ms = util_now_ms();
	if (what & EV_READ)
		c->readable = 1;
	if (what & EV_WRITE)
		c->writable = 1;
	if (what & EV_CLOSED)
		c->hup = c->readable = 1;
	client_run(c);
}

/* Maps a parser error to the SPEC section 4 answer (the last row: any other error). */
static void
client_parse_error(struct exchange *x, int r)
{
	static const struct {
		int err, status;
		const char *code, *message;
	} answers[] = {
	    {HTTP_E_URI_TOO_LONG, 414, "uri_too_long", "The request URI is too long."},
	    {HTTP_E_HEADERS_TOO_LARGE, 431, "headers_too_large",
	     "The request headers are too large."},
	    {HTTP_E_NOT_IMPLEMENTED, 501, "invalid_request", "Unsupported transfer coding."},
	    {HTTP_E_VERSION, 505, "invalid_request", "Only HTTP/1.0 and HTTP/1.1 are supported."},
	    {0, 400, "invalid_request", "Malformed HTTP request."},
	};
	size_t i = 0, last = sizeof(answers) / sizeof(answers[0]) - 1;

	while (i < last && answers[i].err != r)
		i++;
	x->close_client = 1;
	respond_error(x, answers[i].status, answers[i].code, answers[i].message, NULL, NULL);
}

/*
 * RFC 9112 2.2: a server SHOULD ignore empty lines received before the request-line
 * (some clients send a CRLF after a POST body). Dropped here, before parsing starts, so
 * that the parsed head always begins at the front of the buffer.
 */
static void
client_skip_empty_lines(struct exchange *x)
{
	uint32_t skip = 0;

	if (x->req.scan_off != 0)
		return;
	while (skip + 1 < x->in.end && skip < 8 && x->in.data[skip] == '\r' &&
	       x->in.data[skip + 1] == '\n')
		skip += 2;
	if (skip == 0)
		return;
	memmove(x->in.data, x->in.data + skip, x->in.end - skip);
	x->in.end -= skip;
}

/* Reads and parses a request head; dispatches it when complete. */
static void
client_head(struct client *c)
{
	struct exchange *x = c->x;
	int r = HTTP_AGAIN;

	client_skip_empty_lines(x);
	if (x->in.end > 0)
		r = http_parse_request(&x->req, x->in.data, x->in.end, &x->rt->limits);
	while (r == HTTP_AGAIN && c->readable) {
		ssize_t n;

		if (x->in.end == x->in.cap) {
			r = HTTP_E_HEADERS_TOO_LARGE;
			break;
		}
		n = client_read(c, x->in.data + x->in.end, x->in.cap - x->in.end);
		if (n == 0 || (n < 0 && errno != EAGAIN)) {
			client_close(c);
			return;
		}
		if (n < 0) {
			if (x->in.end == 0) {
				/* Nothing of a request yet: go idle and give the buffers back,
				 * so an idle connection costs no buffer. */
				const struct config_timeouts *t = &x->rt->cfg->timeouts;
				c->x = NULL;
				client_exchange_release(x);
				c->state = CS_IDLE;
				c->deadline_ms = c->w->now_ms + (c->nrequests > 0 ? t->client_idle_ms
										: t->client_header_ms);
			}
			return;
		}
		x->in.end += (uint32_t)n;
		client_skip_empty_lines(x);
		r = http_parse_request(&x->req, x->in.data, x->in.end, &x->rt->limits);
	}
	if (r == HTTP_AGAIN)
		return;
	c->state = CS_BUSY;
	c->nrequests++;
	worker_counter_add(&c->w->st_requests, 1);
	x->start_us = util_now_us();
	if (r != HTTP_OK) {
		client_parse_error(x, r);
		return;
	}
	x->in.start = x->req.head_len;
	router_dispatch(x);
}

/*
 * Skips a request body that the gateway answered without reading (a 429, a built-in
 * endpoint): possible only when all of it is already in the buffer. 0 done, -1 the
 * connection must close.
 */
static int
client_skip_body(struct exchange *x)
{
	const struct http_msg *m = &x->req;
	uint32_t avail = x->in.end - x->in.start;

	if (x->req_done || m->body == HTTP_BODY_NONE)
		return 0;
	if (m->body == HTTP_BODY_LENGTH) {
		if (m->content_length > avail)
			return -1;
		x->in.start += (uint32_t)m->content_length;
		return 0;
	}
	if (m->body == HTTP_BODY_CHUNKED) {
		struct http_chunked ch;
		ssize_t n;

		http_chunked_init(&ch);
		n = http_chunked_scan(&ch, x->in.data + x->in.start, avail);
		if (n < 0 || !ch.done)
			return -1;
		x->in.start += (uint32_t)n;
		return 0;
	}
	return -1;
}

void
client_exchange_done(struct exchange *x)
{
	struct client *c = x->c;
	uint32_t left;

	if (x->close_client || !x->req.keep_alive || client_skip_body(x) == -1 ||
	    atomic_load_explicit(&gw.draining, memory_order_relaxed)) {
		client_close(c);
		return;
	}
	left = x->in.end - x->in.start;
	if (left == 0) {
		c->x = NULL;
		client_exchange_release(x);
		c->state = CS_IDLE;
		c->deadline_ms = c->w->now_ms + c->w->rt->cfg->timeouts.client_idle_ms;
		return;
	}
	/* Pipelined bytes: the next request starts at the front of the buffer. */
	memmove(x->in.data, x->in.data + x->in.start, left);
	x->in.start = 0;
	x->in.end = left;
	exchange_reset(x);
	c->state = CS_HEAD;
	c->deadline_ms = c->w->now_ms + x->rt->cfg->timeouts.client_header_ms;
}

/*
 * The client's state machine, run on every readiness change. Work that finishes an
 * exchange synchronously (a local answer, a pipelined request) loops here instead of
 * recursing.
 */
void
client_run(struct client *c)
{
	for (int rounds = 0; rounds < 64; rounds++) {
		struct exchange *x;
		uint8_t before = c->state;
		uint32_t nreq = c->nrequests;

		if (c->tls_handshaking) {
			int r = client_handshake(c);
			if (r < 0) {
				client_close(c);
				return;
			}
			if (r == 0)
				return;
		}
		switch (c->state) {
		case CS_IDLE:
			if (!c->readable)
				return;
			c->x = exchange_get(c);
			c->state = CS_HEAD;
			c->deadline_ms = c->w->now_ms + c->x->rt->cfg->timeouts.client_header_ms;
			/* fall through */
		case CS_HEAD:
			client_head(c);
			break;
		case CS_BUSY:
		case CS_TUNNEL:
			x = c->x;
			if (x->phase == X_LOCAL) {
				int r = client_flush(c);
				if (r < 0) {
					client_close(c);
					return;
				}
				if (r == 1)
					client_exchange_done(x);
			} else if (x->phase == X_UPSTREAM || x->phase == X_TUNNEL) {
				proxy_run(x);
			} else if (x->phase == X_BODY) {
				router_read_body(x);
			}
			break;
		case CS_WS:
			ws_client_run(c);
			break;
		}
		if (c->closed)
			return;
		if (c->state == before && c->nrequests == nreq)
			return;
	}
	/* A long pipeline: let the other connections have a turn, then come back here.
	 * Nothing else would: the bytes are already read, no new edge will come. */
	event_active(&c->ev, EV_READ, 0);
}
