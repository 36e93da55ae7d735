/*
 * mockbackend — the backend that gatewayd's demo (`make run`) and end-to-end tests proxy to.
 *
 * One process serves one or more ports from a single libevent loop (raw fd events,
 * edge-triggered, no bufferevents). Each port has its own id, its own fault mode and its
 * own request counters, so one process can play three backends and a test can make one
 * of them fail, hang or refuse while the others keep answering.
 *
 *   mockbackend --ports 5001,5002,5003 --id b1,b2,b3 [--host 127.0.0.1]
 *               [--fail] [--hang] [--delay-ms N]
 *
 * Endpoints (any method unless noted; HEAD answers the same head without a body):
 *   any path            200 JSON describing the request (backend, port, method, path,
 *                       query, version, headers, body_length, request_number, connection_id)
 *   /health             200 {"status":"ok"}; 503 {"status":"failing"} in fail mode
 *   /slow?ms=N          the same JSON after N ms (a timer: other connections go on)
 *   /status/N           status N with {"status":N}; no body for 204/304; a 1xx is sent as an
 *                       interim response followed by a final 200
 *   /cacheable          Cache-Control: public, max-age=60 (?max_age=N, ?s_maxage=N, ?swr=N,
 *                       ?sie=N stale-while-revalidate/-if-error, ?mr=1 must-revalidate,
 *                       ?vary=1 Vary: Accept-Language, ?expires=N Expires instead
 *                       of max-age), ETag, Last-Modified;
 *                       If-None-Match / If-Modified-Since answer 304
 *   /private /nostore   Cache-Control: private / no-store
 *   /setcookie          cacheable, but with Set-Cookie
 *   /chunked?n=N&size=S N chunks of S bytes (close-delimited for HTTP/1.0 clients)
 *   /bytes?n=N          N bytes with Content-Length, generated as they are sent
 *   /close              a body delimited by closing the connection
 *   /reset              half a response head, then RST (?head=0: RST without a byte;
 *                       ?body=N: a whole head for 2N bytes, N of them, then RST)
 *   /truncated          Content-Length: 100, 10 bytes, then close
 *   /garbage            a malformed status line, then close (?kind=1..6: a bad status
 *                       code, Content-Length, duplicate lengths, a line without a colon,
 *                       a bad chunk size, a head cut before its blank line)
 *   /echo               the request body back (kept in memory: at most 16 MB, else 413)
 *   Upgrade: websocket  RFC 6455 handshake, then every frame echoed (ping -> pong)
 *   /_mock/fail /_mock/hang /_mock/recover /_mock/close /_mock/delay?ms=N
 *   /_mock/stats /_mock/reset_stats
 *
 * Bodies of a byte pattern ('a' + offset % 26) so that tests can check integrity.
 * Memory per connection is bounded: a read buffer of 16-80 KB, a write buffer that stays
 * under ~64 KB plus one response, and an echo buffer only for /echo.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <openssl/evp.h>
#include <openssl/sha.h>

#include "http.h"

#define MOCK_MAX_PORTS 64
#define MOCK_ID_MAX 64
#define MOCK_RBUF_INIT 16384
#define MOCK_HEAD_MAX 65536
#define MOCK_RBUF_MAX (MOCK_HEAD_MAX + 16384)
#define MOCK_MAX_HEADERS 128
#define MOCK_WBUF_INIT 16384
#define MOCK_WBUF_HIGH 65536
#define MOCK_WBUF_KEEP (256 * 1024)
#define MOCK_ECHO_MAX (16 * 1024 * 1024)
#define MOCK_ECHO_KEEP (1024 * 1024)
#define MOCK_LINE_MAX 1024
#define MOCK_STATS_SLOTS 512
#define MOCK_STATS_ENTRIES 256
#define MOCK_STATS_PATH_MAX 128
#define MOCK_LINGER_MS 2000
#define MOCK_MAX_DELAY_MS 600000
#define MOCK_PATTERN_LEN 65536
#define MOCK_DRIVE_BUDGET 256
#define MOCK_ETAG "\"mock-v1\""
#define MOCK_LAST_MODIFIED "Mon, 01 Jan 2024 00:00:00 GMT"
#define MOCK_LAST_MODIFIED_EPOCH 1704067200

/* What one step of a connection's state machine achieved (see conn_drive). */
enum step {
	S_AGAIN,      /* made progress, call again */
	S_NEED_INPUT, /* needs more bytes from the socket */
	S_BLOCKED,    /* waits for output to drain, a timer, a recover or the end */
	S_CLOSE,      /* close now */
};

enum conn_state {
	ST_HEAD,
	ST_BODY_CL,
	ST_CHUNK_SIZE,
	ST_CHUNK_DATA,
	ST_CHUNK_CRLF,
	ST_TRAILER,
	ST_WAIT, /* request complete, its response deferred by a timer */
	ST_HUNG, /* request complete, the port is in hang mode */
	ST_STREAM,
	ST_WS_HEAD,
	ST_WS_PAYLOAD,
	ST_DONE,   /* flush what is left, then close */
	ST_LINGER, /* write side shut, draining the client until EOF or a timer */
};

enum route {
	R_GENERIC,
	R_HEALTH,
	R_SLOW,
	R_STATUS,
	R_CACHEABLE,
	R_PRIVATE,
	R_NOSTORE,
	R_SETCOOKIE,
	R_CHUNKED,
	R_BYTES,
	R_CLOSE,
	R_RESET,
	R_TRUNCATED,
	R_GARBAGE,
	R_ECHO,
	R_WS,
	R_MOCK_FIRST, /* every route from here on is a control endpoint */
	R_MOCK_FAIL = R_MOCK_FIRST,
	R_MOCK_HANG,
	R_MOCK_RECOVER,
	R_MOCK_CLOSE,
	R_MOCK_STATS,
	R_MOCK_RESET_STATS,
	R_MOCK_DELAY,
	R_MOCK_UNKNOWN,
};

enum gen_kind {
	GEN_NONE,
	GEN_BYTES,
	GEN_CHUNKED,
	GEN_ECHO,
};

struct sbuf {
	char *p;
	size_t len, cap;
};

/* A header as offsets from the start of the request head (the head moves in rbuf). */
struct hdr {
	uint32_t name, name_len, value, value_len;
};

/* A value that a route needs, as offsets into the head; len 0 when absent. */
struct span {
	uint32_t off, len;
};

struct req {
	size_t head_len;
	struct span method, path, query, ws_key, ctype, inm, ims;
	int minor;
	int nhdr;
	int has_query, has_cl, has_te, chunked, keep_alive, expect_continue, upgrade_ws, is_head;
	uint64_t content_length;
	uint64_t body_left; /* Content-Length bytes still to read, or of the current chunk */
	uint64_t body_len;  /* body bytes read so far */
	size_t trailer_bytes;
	enum route route;
	long long param, param2;
	int echo_too_big;
};

struct stat_entry {
	uint64_t count;
	uint32_t len;
	int used;
	char path[MOCK_STATS_PATH_MAX];
};

struct conn;

struct listener {
	int fd;
	int port;
	char id[MOCK_ID_MAX];
	struct event *ev;
	struct event *pause_ev;
	int fail, hang, close_new;
	long long delay_ms;
	uint64_t requests, conns_total, stats_other;
	unsigned nconns, stats_used;
	struct conn *conns;
	struct stat_entry stats[MOCK_STATS_SLOTS];
};

struct conn {
	struct conn *prev, *next;
	struct listener *l;
	int fd;
	struct event *ev, *timer;
	enum conn_state state;
	uint64_t id, nreq;
	int peer_eof, rst;

	/* rbuf[rstart, rlen) is unconsumed input; a request's head starts at rstart. */
	char *rbuf;
	size_t rcap, rstart, rlen, scan;

	/* out.p[wpos, out.len) is still to be sent. */
	struct sbuf out;
	size_t wpos;

	struct req req;
	struct hdr hdr[MOCK_MAX_HEADERS];

	enum gen_kind gen;
	enum conn_state gen_next;
	int gen_framed;
	uint64_t gen_left, gen_off, gen_chunks, gen_chunk_size;

	char *echo;
	size_t echo_cap, echo_len, echo_pos;

	uint64_t ws_left, ws_off;
	unsigned char ws_mask[4];
	int ws_masked, ws_opcode, ws_discard;
};

static struct event_base *g_base;
static struct listener *g_listeners;
static int g_nlisteners;
static unsigned g_nconns, g_max_conns = 1024;
static struct sbuf g_scratch;
static char g_pattern[MOCK_PATTERN_LEN + 26];

static void conn_drive(struct conn *c);

static void *
mock_realloc(void *p, size_t n)
{
	void *q = realloc(p, n);

	if (q == NULL) {
		fprintf(stderr, "mockbackend: out of memory (%zu bytes)\n", n);
		exit(1);
	}
	return q;
}

static void
sb_reserve(struct sbuf *b, size_t n)
{
	size_t cap;

	if (b->cap - b->len >= n)
		return;
	cap = b->cap ? b->cap : MOCK_WBUF_INIT;
	while (cap - b->len < n)
		cap *= 2;
	b->p = mock_realloc(b->p, cap);
	b->cap = cap;
}

static void
sb_add(struct sbuf *b, const void *d, size_t n)
{
	sb_reserve(b, n);
	memcpy(b->p + b->len, d, n);
	b->len += n;
}

static void
sb_str(struct sbuf *b, const char *s)
{
	sb_add(b, s, strlen(s));
}

static void sb_printf(struct sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void
sb_printf(struct sbuf *b, const char *fmt, ...)
{
	va_list ap;
	int n;

	sb_reserve(b, 256);
	va_start(ap, fmt);
	n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if ((size_t)n >= b->cap - b->len) {
		sb_reserve(b, (size_t)n + 1);
		va_start(ap, fmt);
		n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
		va_end(ap);
		if (n < 0)
			return;
	}
	b->len += (size_t)n;
}

/*
 * Bytes >= 0x80 are escaped as \u00XX (read as Latin-1) so that the output is always valid
 * JSON, whatever a client or the gateway put into a header. No quotes: see sb_json_str.
 */
static void
sb_json_chars(struct sbuf *b, const char *s, size_t n)
{
	static const char hex[] = "0123456789abcdef";
	char *o;
	size_t i;

	sb_reserve(b, n * 6);
	o = b->p + b->len;
	for (i = 0; i < n; i++) {
		unsigned char ch = (unsigned char)s[i];

		if (ch == '"' || ch == '\\') {
			*o++ = '\\';
			*o++ = (char)ch;
		} else if (ch < 0x20 || ch >= 0x7f) {
			memcpy(o, "\\u00", 4);
			o[4] = hex[ch >> 4];
			o[5] = hex[ch & 15];
			o += 6;
		} else {
			*o++ = (char)ch;
		}
	}
	b->len = (size_t)(o - b->p);
}

static void
sb_json_str(struct sbuf *b, const char *s, size_t n)
{
	sb_add(b, "\"", 1);
	sb_json_chars(b, s, n);
	sb_add(b, "\"", 1);
}

/* The gateway's reason phrases (http.c), and the interim status only the mock sends. */
static const char *
mock_reason(int status)
{
	return status == 103 ? "Early Hints" : http_status_reason(status);
}

/* Formatting the date costs more than the rest of a response head: once a second. */
static const char *
http_date(void)
{
	static char buf[64];
	static time_t last = -1;
	time_t now = time(NULL);

	if (now != last) {
		struct tm tm;

		gmtime_r(&now, &tm);
		strftime(buf, sizeof(buf), "%a, %d %b %Y %H:%M:%S GMT", &tm);
		last = now;
	}
	return buf;
}

static int
is_tchar(unsigned char ch)
{
	if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9'))
		return 1;
	return ch != 0 && strchr("!#$%&'*+-.^_`|~", ch) != NULL;
}

static int
span_eq(const char *h, struct span s, const char *lit)
{
	size_t n = strlen(lit);

	return s.len == n && memcmp(h + s.off, lit, n) == 0;
}

/* Is `tok` one of the comma-separated tokens of v[0..n) (case-insensitive)? */
static int
list_has_token(const char *v, size_t n, const char *tok)
{
	size_t tlen = strlen(tok), i = 0;

	while (i < n) {
		size_t s, e;

		while (i < n && (v[i] == ' ' || v[i] == '\t' || v[i] == ','))
			i++;
		s = i;
		while (i < n && v[i] != ',')
			i++;
		e = i;
		while (e > s && (v[e - 1] == ' ' || v[e - 1] == '\t'))
			e--;
		if (e - s == tlen && strncasecmp(v + s, tok, tlen) == 0)
			return 1;
	}
	return 0;
}

/* Strict decimal: digits only, no sign, no overflow past 2^62. */
static int
parse_u64(const char *s, size_t n, uint64_t *out)
{
	uint64_t v = 0;
	size_t i;

	if (n == 0 || n > 18)
		return -1;
	for (i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -1;
		v = v * 10 + (uint64_t)(s[i] - '0');
	}
	*out = v;
	return 0;
}

/* Finds `name=digits` in a query string: 1 found, 0 absent, -1 present but not a number. */
static int
query_num(const char *q, size_t qlen, const char *name, long long *out)
{
	size_t nlen = strlen(name), i = 0;

	while (i < qlen) {
		const char *amp = memchr(q + i, '&', qlen - i);
		size_t e = amp ? (size_t)(amp - q) : qlen;

		if (e - i > nlen && memcmp(q + i, name, nlen) == 0 && q[i + nlen] == '=') {
			uint64_t v;

			if (parse_u64(q + i + nlen + 1, e - i - nlen - 1, &v) < 0)
				return -1;
			*out = (long long)v;
			return 1;
		}
		i = e + 1;
	}
	return 0;
}

static uint32_t
fnv1a(const char *s, size_t n)
{
	uint32_t h = 2166136261u;
	size_t i;

	for (i = 0; i < n; i++) {
		h ^= (unsigned char)s[i];
		h *= 16777619u;
	}
	return h;
}

/* The per-path counter of a port; NULL once MOCK_STATS_ENTRIES paths are known. */
static struct stat_entry *
stats_slot(struct listener *l, const char *path, size_t len)
{
	uint32_t h, i;

	if (len > MOCK_STATS_PATH_MAX - 1)
		len = MOCK_STATS_PATH_MAX - 1;
	h = fnv1a(path, len);
	for (i = 0; i < MOCK_STATS_SLOTS; i++) {
		struct stat_entry *e = &l->stats[(h + i) & (MOCK_STATS_SLOTS - 1)];

		if (!e->used) {
			if (l->stats_used >= MOCK_STATS_ENTRIES)
				return NULL;
			e->used = 1;
			e->len = (uint32_t)len;
			memcpy(e->path, path, len);
			l->stats_used++;
			return e;
		}
		if (e->len == len && memcmp(e->path, path, len) == 0)
			return e;
	}
	return NULL;
}

static void
stats_count(struct listener *l, const char *path, size_t len)
{
	struct stat_entry *e = stats_slot(l, path, len);

	l->requests++;
	if (e != NULL)
		e->count++;
	else
		l->stats_other++;
}

static void
stats_reset(struct listener *l)
{
	memset(l->stats, 0, sizeof(l->stats));
	l->stats_used = 0;
	l->stats_other = 0;
	l->requests = 0;
}

/* ---- connection buffers ---- */

static size_t
out_pending(const struct conn *c)
{
	return c->out.len - c->wpos;
}

/* Moves unsent output to the front so that appends do not grow the buffer forever. */
static struct sbuf *
out_prep(struct conn *c)
{
	if (c->wpos > 0) {
		memmove(c->out.p, c->out.p + c->wpos, c->out.len - c->wpos);
		c->out.len -= c->wpos;
		c->wpos = 0;
	}
	return &c->out;
}

/* 1: everything sent, 0: the socket is full, -1: the connection is gone. */
static int
conn_flush(struct conn *c)
{
	while (c->wpos < c->out.len) {
		ssize_t n = send(c->fd, c->out.p + c->wpos, c->out.len - c->wpos, MSG_NOSIGNAL);

		if (n > 0) {
			c->wpos += (size_t)n;
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return 0;
		return -1;
	}
	c->wpos = 0;
	c->out.len = 0;
	if (c->out.cap > MOCK_WBUF_KEEP) {
		/* A huge JSON answer was a one-off: do not keep its buffer on an idle connection.
		 */
		free(c->out.p);
		c->out.p = NULL;
		c->out.cap = 0;
	}
	return 1;
}

/* >0 bytes read, 0 EOF, -2 nothing to read now, -1 error or no room. */
static ssize_t
conn_read(struct conn *c)
{
	ssize_t n;

	if (c->state == ST_LINGER || c->rstart == c->rlen) {
		c->rstart = 0;
		c->rlen = 0;
	} else if (c->rstart > 0) {
		memmove(c->rbuf, c->rbuf + c->rstart, c->rlen - c->rstart);
		c->rlen -= c->rstart;
		c->rstart = 0;
	}
	if (c->rlen == c->rcap) {
		size_t cap = c->rcap ? c->rcap * 2 : MOCK_RBUF_INIT;

		if (c->rcap >= MOCK_RBUF_MAX)
			return -1;
		if (cap > MOCK_RBUF_MAX)
			cap = MOCK_RBUF_MAX;
		c->rbuf = mock_realloc(c->rbuf, cap);
		c->rcap = cap;
	}
	for (;;) {
		n = recv(c->fd, c->rbuf + c->rlen, c->rcap - c->rlen, 0);
		if (n > 0) {
			c->rlen += (size_t)n;
			return n;
		}
		if (n == 0)
			return 0;
		if (errno == EINTR)
			continue;
		if (errno == EAGAIN || errno == EWOULDBLOCK)
			return -2;
		return -1;
	}
}

static void
conn_free(struct conn *c)
{
	struct listener *l = c->l;

	if (c->prev)
		c->prev->next = c->next;
	else
		l->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	l->nconns--;
	g_nconns--;
	event_free(c->ev);
	event_free(c->timer);
	if (c->rst) {
		/* SO_LINGER 0 turns close() into an RST: the abrupt failure /reset promises. */
		struct linger lg = {1, 0};

		setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	}
	close(c->fd);
	free(c->rbuf);
	free(c->out.p);
	free(c->echo);
	free(c);
}

static void
conn_timer_arm(struct conn *c, long long ms)
{
	struct timeval tv;

	tv.tv_sec = (time_t)(ms / 1000);
	tv.tv_usec = (suseconds_t)((ms % 1000) * 1000);
	evtimer_add(c->timer, &tv);
}

/* ---- responses ---- */

static void
resp_head(struct conn *c, int status, const char *ctype, long long clen, const char *extra)
{
	struct sbuf *o = out_prep(c);

	sb_printf(o, "HTTP/1.1 %d %s\r\nServer: mockbackend\r\nDate: %s\r\nX-Mock-Backend: %s\r\n",
	          status, mock_reason(status), http_date(), c->l->id);
	if (ctype != NULL)
		sb_printf(o, "Content-Type: %s\r\n", ctype);
	if (clen >= 0)
		sb_printf(o, "Content-Length: %lld\r\n", clen);
	if (extra != NULL)
		sb_str(o, extra);
	if (!c->req.keep_alive)
		sb_str(o, "Connection: close\r\n");
	else if (c->req.minor == 0)
		sb_str(o, "Connection: keep-alive\r\n");
	sb_str(o, "\r\n");
}

static int
status_has_body(int status)
{
	return status >= 200 && status != 204 && status != 304;
}

static void
respond(struct conn *c, int status, const char *ctype, const char *extra, const char *body,
        size_t len)
{
	if (!status_has_body(status)) {
		resp_head(c, status, NULL, -1, extra);
		return;
	}
	resp_head(c, status, ctype, (long long)len, extra);
	if (!c->req.is_head)
		sb_add(&c->out, body, len);
}

static void
respond_json(struct conn *c, int status, const char *extra, const struct sbuf *b)
{
	respond(c, status, "application/json", extra, b->p, b->len);
}

/* An error answer for a request whose framing is intact: the connection goes on. */
static void
respond_bad(struct conn *c, int status, const char *msg)
{
	struct sbuf *b = &g_scratch;

	b->len = 0;
	sb_str(b, "{\"error\":");
	sb_json_str(b, msg, strlen(msg));
	sb_printf(b, ",\"status\":%d}\n", status);
	respond_json(c, status, NULL, b);
}

/* A request we cannot parse: answer once and close, as the framing is lost. */
static void
respond_error(struct conn *c, int status, const char *msg)
{
	c->req.keep_alive = 0;
	c->req.is_head = 0;
	respond_bad(c, status, msg);
	c->state = ST_DONE;
}

/* The JSON that describes the request; `b` is reset first. */
static void
build_info(struct conn *c, struct sbuf *b)
{
	const char *h = c->rbuf + c->rstart;
	const struct req *r = &c->req;
	int i, j, first = 1;

	b->len = 0;
	sb_str(b, "{\"backend\":");
	sb_json_str(b, c->l->id, strlen(c->l->id));
	sb_printf(b, ",\"port\":%d,\"method\":", c->l->port);
	sb_json_str(b, h + r->method.off, r->method.len);
	sb_str(b, ",\"path\":");
	sb_json_str(b, h + r->path.off, r->path.len);
	sb_str(b, ",\"query\":");
	sb_json_str(b, h + r->query.off, r->query.len);
	sb_printf(b, ",\"version\":\"HTTP/1.%d\",\"headers\":{", r->minor);
	for (i = 0; i < r->nhdr; i++) {
		const struct hdr *x = &c->hdr[i];
		int seen = 0;

		for (j = 0; j < i && !seen; j++)
			seen = c->hdr[j].name_len == x->name_len &&
			       memcmp(h + c->hdr[j].name, h + x->name, x->name_len) == 0;
		if (seen)
			continue;
		if (!first)
			sb_str(b, ",");
		first = 0;
		sb_json_str(b, h + x->name, x->name_len);
		sb_str(b, ":\"");
		sb_json_chars(b, h + x->value, x->value_len);
		/* Repeated fields are joined with ", " as HTTP defines it (RFC 9110 5.3). */
		for (j = i + 1; j < r->nhdr; j++) {
			const struct hdr *y = &c->hdr[j];

			if (y->name_len == x->name_len &&
			    memcmp(h + y->name, h + x->name, x->name_len) == 0) {
				sb_str(b, ", ");
				sb_json_chars(b, h + y->value, y->value_len);
			}
		}
		sb_str(b, "\"");
	}
	sb_printf(b, "},\"body_length\":%llu,\"request_number\":%llu,\"connection_id\":%llu}\n",
	          (unsigned long long)r->body_len, (unsigned long long)c->nreq,
	          (unsigned long long)c->id);
}

/* ---- request head ---- */

/*
 * Offset just past the blank line that ends the head, or 0 while it is incomplete. `*scan`
 * remembers how far we looked so that a head arriving byte by byte is not rescanned.
 * Bare LF line ends are accepted (RFC 9112 2.2 allows it); bare CR is rejected later.
 */
static size_t
head_end(const char *b, size_t len, size_t *scan)
{
	size_t i = *scan;

	while (i < len) {
		const char *nl = memchr(b + i, '\n', len - i);
		size_t p;

		if (nl == NULL)
			break;
		p = (size_t)(nl - b);
		if (p >= 1 && b[p - 1] == '\n')
			return p + 1;
		if (p >= 2 && b[p - 1] == '\r' && b[p - 2] == '\n')
			return p + 1;
		i = p + 1;
	}
	*scan = len;
	return 0;
}

/* Next line of the head: returns the offset after its LF, *le the end of its content. */
static size_t
next_line(const char *b, size_t pos, size_t end, size_t *le)
{
	const char *nl = memchr(b + pos, '\n', end - pos);
	size_t e = nl ? (size_t)(nl - b) : end;

	*le = (e > pos && b[e - 1] == '\r') ? e - 1 : e;
	return nl ? e + 1 : end;
}

static void
route_classify(struct conn *c)
{
	static const struct {
		const char *path;
		enum route route;
	} table[] = {
	    {"/health", R_HEALTH},
	    {"/slow", R_SLOW},
	    {"/cacheable", R_CACHEABLE},
	    {"/private", R_PRIVATE},
	    {"/nostore", R_NOSTORE},
	    {"/setcookie", R_SETCOOKIE},
	    {"/chunked", R_CHUNKED},
	    {"/bytes", R_BYTES},
	    {"/close", R_CLOSE},
	    {"/reset", R_RESET},
	    {"/truncated", R_TRUNCATED},
	    {"/garbage", R_GARBAGE},
	    {"/echo", R_ECHO},
	    {"/_mock/fail", R_MOCK_FAIL},
	    {"/_mock/hang", R_MOCK_HANG},
	    {"/_mock/recover", R_MOCK_RECOVER},
	    {"/_mock/close", R_MOCK_CLOSE},
	    {"/_mock/stats", R_MOCK_STATS},
	    {"/_mock/reset_stats", R_MOCK_RESET_STATS},
	    {"/_mock/delay", R_MOCK_DELAY},
	};
	struct req *r = &c->req;
	const char *h = c->rbuf + c->rstart;
	const char *path = h + r->path.off;
	size_t i;

	r->route = R_GENERIC;
	for (i = 0; i < sizeof(table) / sizeof(table[0]); i++) {
		if (span_eq(h, r->path, table[i].path)) {
			r->route = table[i].route;
			break;
		}
	}
	if (r->route == R_GENERIC && r->path.len > 8 && memcmp(path, "/status/", 8) == 0)
		r->route = R_STATUS;
	if (r->route == R_GENERIC && r->path.len >= 7 && memcmp(path, "/_mock/", 7) == 0)
		r->route = R_MOCK_UNKNOWN;
	if (r->upgrade_ws && r->route < R_MOCK_FIRST)
		r->route = R_WS;
}

static int
name_is(const char *name, size_t len, const char *lit)
{
	return len == strlen(lit) && memcmp(name, lit, len) == 0;
}

/* Interprets the headers that change framing or routing. 0, or an HTTP status to fail with. */
static int
header_note(struct conn *c, const char *h, const struct hdr *x)
{
	struct req *r = &c->req;
	const char *name = h + x->name, *v = h + x->value;
	struct span sp = {x->value, x->value_len};

	if (name_is(name, x->name_len, "content-length")) {
		uint64_t n;

		if (parse_u64(v, x->value_len, &n) < 0)
			return 400;
		/* Differing duplicates are the classic smuggling vector: refuse them. */
		if (r->has_cl && n != r->content_length)
			return 400;
		r->has_cl = 1;
		r->content_length = n;
	} else if (name_is(name, x->name_len, "transfer-encoding")) {
		size_t s = x->value_len;

		r->has_te = 1;
		while (s > 0 && v[s - 1] != ',')
			s--;
		r->chunked = list_has_token(v + s, x->value_len - s, "chunked");
	} else if (name_is(name, x->name_len, "connection")) {
		if (list_has_token(v, x->value_len, "close"))
			r->keep_alive = 0;
		else if (list_has_token(v, x->value_len, "keep-alive"))
			r->keep_alive = 1;
	} else if (name_is(name, x->name_len, "upgrade")) {
		r->upgrade_ws = list_has_token(v, x->value_len, "websocket");
	} else if (name_is(name, x->name_len, "sec-websocket-key")) {
		r->ws_key = sp;
	} else if (name_is(name, x->name_len, "expect")) {
		r->expect_continue = list_has_token(v, x->value_len, "100-continue");
	} else if (name_is(name, x->name_len, "content-type")) {
		r->ctype = sp;
	} else if (name_is(name, x->name_len, "if-none-match")) {
		r->inm = sp;
	} else if (name_is(name, x->name_len, "if-modified-since")) {
		r->ims = sp;
	}
	return 0;
}

static int
parse_request_line(struct conn *c, const char *h, size_t le)
{
	struct req *r = &c->req;
	const char *sp1 = memchr(h, ' ', le), *sp2;
	size_t t0, t1, i, p;

	if (sp1 == NULL || sp1 == h)
		return 400;
	r->method.off = 0;
	r->method.len = (uint32_t)(sp1 - h);
	for (i = 0; i < r->method.len; i++)
		if (!is_tchar((unsigned char)h[i]))
			return 400;
	t0 = r->method.len + 1;
	sp2 = memchr(h + t0, ' ', le - t0);
	if (sp2 == NULL || (size_t)(sp2 - h) == t0)
		return 400;
	t1 = (size_t)(sp2 - h);
	for (i = t0; i < t1; i++)
		if ((unsigned char)h[i] <= 0x20 || (unsigned char)h[i] == 0x7f)
			return 400;
	if (le - t1 - 1 != 8 || memcmp(h + t1 + 1, "HTTP/1.", 7) != 0)
		return 400;
	if (h[t1 + 8] != '0' && h[t1 + 8] != '1')
		return 505;
	r->minor = h[t1 + 8] - '0';
	r->keep_alive = r->minor == 1;
	r->is_head = span_eq(h, r->method, "HEAD");

	/* absolute-form: keep only the path, as an origin server behind a proxy would */
	p = t0;
	if (t1 - t0 > 7 &&
	    (strncasecmp(h + t0, "http://", 7) == 0 || strncasecmp(h + t0, "https://", 8) == 0)) {
		const char *slash;

		p = t0 + (h[t0 + 4] == ':' ? 7 : 8);
		slash = memchr(h + p, '/', t1 - p);
		p = slash ? (size_t)(slash - h) : t1;
	}
	r->path.off = (uint32_t)p;
	while (p < t1 && h[p] != '?')
		p++;
	r->path.len = (uint32_t)(p - r->path.off);
	if (p < t1) {
		r->has_query = 1;
		r->query.off = (uint32_t)(p + 1);
		r->query.len = (uint32_t)(t1 - p - 1);
	} else {
		r->query.off = (uint32_t)t1;
	}
	return 0;
}

/* Parses the head in rbuf[rstart, rstart+end). 0, or an HTTP status to fail with. */
static int
parse_head(struct conn *c, size_t end)
{
	struct req *r = &c->req;
	char *h = c->rbuf + c->rstart;
	size_t pos, le;
	int st;

	memset(r, 0, sizeof(*r));
	r->head_len = end;
	pos = next_line(h, 0, end, &le);
	st = parse_request_line(c, h, le);
	if (st != 0)
		return st;
	while (pos < end) {
		size_t next = next_line(h, pos, end, &le), i, vs, ve;
		const char *colon;
		struct hdr *x;

		if (le == pos)
			break;
		/* obs-fold is a smuggling tool and long obsolete (RFC 9112 5.2) */
		if (h[pos] == ' ' || h[pos] == '\t')
			return 400;
		colon = memchr(h + pos, ':', le - pos);
		if (colon == NULL || colon == h + pos)
			return 400;
		for (i = pos; h + i < colon; i++) {
			if (!is_tchar((unsigned char)h[i]))
				return 400;
			if (h[i] >= 'A' && h[i] <= 'Z')
				h[i] = (char)(h[i] + 'a' - 'A');
		}
		vs = (size_t)(colon - h) + 1;
		ve = le;
		while (vs < ve && (h[vs] == ' ' || h[vs] == '\t'))
			vs++;
		while (ve > vs && (h[ve - 1] == ' ' || h[ve - 1] == '\t'))
			ve--;
		for (i = vs; i < ve; i++) {
			unsigned char ch = (unsigned char)h[i];

			if ((ch < 0x20 && ch != '\t') || ch == 0x7f)
				return 400;
		}
		if (r->nhdr == MOCK_MAX_HEADERS)
			return 431;
		x = &c->hdr[r->nhdr++];
		x->name = (uint32_t)pos;
		x->name_len = (uint32_t)(colon - h - (ptrdiff_t)pos);
		x->value = (uint32_t)vs;
		x->value_len = (uint32_t)(ve - vs);
		st = header_note(c, h, x);
		if (st != 0)
			return st;
		pos = next;
	}
	if (r->has_te) {
		/* A request body must be chunked last, or its length is unknowable (RFC 9112 6.3).
		 */
		if (!r->chunked)
			return 400;
		/* TE with CL, or TE from HTTP/1.0: serve it, then close (RFC 9112 6.1). */
		if (r->has_cl || r->minor == 0)
			r->keep_alive = 0;
	}
	if (r->upgrade_ws && r->ws_key.len == 0 && span_eq(h, r->method, "GET"))
		return 400;
	if (r->upgrade_ws && !span_eq(h, r->method, "GET"))
		r->upgrade_ws = 0;
	route_classify(c);
	return 0;
}

/* ---- request body ---- */

/*
 * Drops k bytes that follow the head (body or chunk framing). The head is moved forward
 * over them instead of moving the rest of the buffer back: the head is small, the data
 * behind it may be most of the buffer.
 */
static void
body_drop(struct conn *c, size_t k)
{
	memmove(c->rbuf + c->rstart + k, c->rbuf + c->rstart, c->req.head_len);
	c->rstart += k;
}

static void
body_take(struct conn *c, size_t k)
{
	struct req *r = &c->req;
	const char *d = c->rbuf + c->rstart + r->head_len;

	if (r->route == R_ECHO && !r->echo_too_big) {
		if (c->echo_len + k > MOCK_ECHO_MAX) {
			r->echo_too_big = 1;
		} else {
			if (c->echo_cap < c->echo_len + k) {
				size_t cap = c->echo_cap ? c->echo_cap : 4096;

				while (cap < c->echo_len + k)
					cap *= 2;
				c->echo = mock_realloc(c->echo, cap);
				c->echo_cap = cap;
			}
			memcpy(c->echo + c->echo_len, d, k);
			c->echo_len += k;
		}
	}
	r->body_len += k;
	body_drop(c, k);
}

static size_t
body_avail(const struct conn *c)
{
	return c->rlen - c->rstart - c->req.head_len;
}

static int request_complete(struct conn *c);

/* Takes what has arrived of the body_left bytes still due (a Content-Length body, a chunk). */
static int
body_take_due(struct conn *c)
{
	size_t k = body_avail(c);

	if (k == 0)
		return S_NEED_INPUT;
	if (k > c->req.body_left)
		k = (size_t)c->req.body_left;
	body_take(c, k);
	c->req.body_left -= k;
	return S_AGAIN;
}

static int
step_body_cl(struct conn *c)
{
	if (c->req.body_left == 0)
		return request_complete(c);
	return body_take_due(c);
}

/* Finds one line after the head (chunk size or trailer): its length, or 0 if incomplete. */
static size_t
body_line(const struct conn *c, size_t *le)
{
	const char *d = c->rbuf + c->rstart + c->req.head_len;
	size_t n = body_avail(c);
	const char *nl = memchr(d, '\n', n);

	if (nl == NULL)
		return 0;
	*le = (size_t)(nl - d);
	if (*le > 0 && d[*le - 1] == '\r')
		(*le)--;
	return (size_t)(nl - d) + 1;
}

static int
step_chunk_size(struct conn *c)
{
	const char *d = c->rbuf + c->rstart + c->req.head_len;
	size_t le, i, n = body_line(c, &le);
	uint64_t size = 0;

	if (n == 0) {
		if (body_avail(c) > MOCK_LINE_MAX) {
			respond_error(c, 400, "chunk size line too long");
			return S_AGAIN;
		}
		return S_NEED_INPUT;
	}
	for (i = 0; i < le; i++) {
		int v;

		if (d[i] >= '0' && d[i] <= '9')
			v = d[i] - '0';
		else if (d[i] >= 'a' && d[i] <= 'f')
			v = d[i] - 'a' + 10;
		else if (d[i] >= 'A' && d[i] <= 'F')
			v = d[i] - 'A' + 10;
		else
			break;
		if (i >= 15) {
			respond_error(c, 400, "chunk size too large");
			return S_AGAIN;
		}
		size = size * 16 + (uint64_t)v;
	}
	if (i == 0 || (i < le && d[i] != ';' && d[i] != ' ' && d[i] != '\t')) {
		respond_error(c, 400, "bad chunk size");
		return S_AGAIN;
	}
	body_drop(c, n);
	c->req.body_left = size;
	c->state = size ? ST_CHUNK_DATA : ST_TRAILER;
	return S_AGAIN;
}

static int
step_chunk_data(struct conn *c)
{
	if (c->req.body_left == 0) {
		c->state = ST_CHUNK_CRLF;
		return S_AGAIN;
	}
	return body_take_due(c);
}

static int
step_chunk_crlf(struct conn *c)
{
	size_t le, n = body_line(c, &le);

	if (n == 0 && body_avail(c) <= 2)
		return S_NEED_INPUT;
	if (n == 0 || le != 0) {
		respond_error(c, 400, "bad chunk end");
		return S_AGAIN;
	}
	body_drop(c, n);
	c->state = ST_CHUNK_SIZE;
	return S_AGAIN;
}

static int
step_trailer(struct conn *c)
{
	size_t le, n = body_line(c, &le);

	if (n == 0) {
		if (body_avail(c) > MOCK_LINE_MAX) {
			respond_error(c, 400, "trailer line too long");
			return S_AGAIN;
		}
		return S_NEED_INPUT;
	}
	c->req.trailer_bytes += n;
	if (c->req.trailer_bytes > MOCK_HEAD_MAX) {
		respond_error(c, 431, "trailers too large");
		return S_AGAIN;
	}
	body_drop(c, n);
	return le == 0 ? request_complete(c) : S_AGAIN;
}

static int
step_head(struct conn *c)
{
	struct req *r = &c->req;
	size_t end;
	int st;

	/* Pipelined answers queue up in `out`; stop reading requests while the client lags. */
	if (out_pending(c) >= MOCK_WBUF_HIGH)
		return S_BLOCKED;
	/* RFC 9112 2.2: ignore empty lines before a request line (old clients send one) */
	while (c->scan == 0 && c->rstart < c->rlen &&
	       (c->rbuf[c->rstart] == '\r' || c->rbuf[c->rstart] == '\n'))
		c->rstart++;
	if (c->rstart == c->rlen)
		return S_NEED_INPUT;
	end = head_end(c->rbuf + c->rstart, c->rlen - c->rstart, &c->scan);
	if (end == 0) {
		if (c->rlen - c->rstart >= MOCK_HEAD_MAX) {
			respond_error(c, 431, "request head too large");
			return S_AGAIN;
		}
		return S_NEED_INPUT;
	}
	c->scan = 0;
	if (end > MOCK_HEAD_MAX) {
		respond_error(c, 431, "request head too large");
		return S_AGAIN;
	}
	st = parse_head(c, end);
	if (st != 0) {
		respond_error(c, st, st == 505 ? "unsupported HTTP version" : "bad request");
		return S_AGAIN;
	}
	c->echo_len = 0;
	c->echo_pos = 0;
	if (r->chunked) {
		c->state = ST_CHUNK_SIZE;
	} else if (r->has_cl && r->content_length > 0) {
		r->body_left = r->content_length;
		c->state = ST_BODY_CL;
	} else {
		return request_complete(c);
	}
	/* curl waits for this before a large upload; a hung port must not say anything. */
	if (r->expect_continue && r->minor == 1 && (!c->l->hang || r->route >= R_MOCK_FIRST))
		sb_str(out_prep(c), "HTTP/1.1 100 Continue\r\n\r\n");
	return S_AGAIN;
}

/* ---- dispatch ---- */

static void dispatch(struct conn *c);

/* The whole request (head and body) has been read: count it, then answer now or later. */
static int
request_complete(struct conn *c)
{
	struct req *r = &c->req;
	struct listener *l = c->l;
	long long delay = 0;

	c->nreq++;
	if (r->route < R_MOCK_FIRST) {
		stats_count(l, c->rbuf + c->rstart + r->path.off, r->path.len);
		if (l->hang) {
			c->state = ST_HUNG;
			return S_BLOCKED;
		}
		delay = l->delay_ms;
		if (r->route == R_SLOW) {
			const char *h = c->rbuf + c->rstart;
			long long ms = 0;

			if (query_num(h + r->query.off, r->query.len, "ms", &ms) > 0)
				delay += ms > MOCK_MAX_DELAY_MS ? MOCK_MAX_DELAY_MS : ms;
		}
	}
	if (delay > 0) {
		c->state = ST_WAIT;
		conn_timer_arm(c, delay);
		return S_BLOCKED;
	}
	dispatch(c);
	return S_AGAIN;
}

static const char *
mock_mode(const struct listener *l)
{
	if (l->hang)
		return "hang";
	if (l->fail)
		return "fail";
	if (l->close_new)
		return "close";
	return "normal";
}

static void
respond_mock_ok(struct conn *c)
{
	struct listener *l = c->l;
	struct sbuf *b = &g_scratch;

	b->len = 0;
	sb_str(b, "{\"ok\":true,\"backend\":");
	sb_json_str(b, l->id, strlen(l->id));
	sb_printf(b, ",\"port\":%d,\"mode\":\"%s\",\"delay_ms\":%lld}\n", l->port, mock_mode(l),
	          l->delay_ms);
	respond_json(c, 200, NULL, b);
}

static void
handle_stats(struct conn *c)
{
	struct listener *l = c->l;
	struct sbuf *b = &g_scratch;
	int first = 1;
	unsigned i;

	b->len = 0;
	sb_str(b, "{\"backend\":");
	sb_json_str(b, l->id, strlen(l->id));
	sb_printf(b, ",\"port\":%d,\"requests\":%llu,\"by_path\":{", l->port,
	          (unsigned long long)l->requests);
	for (i = 0; i < MOCK_STATS_SLOTS; i++) {
		const struct stat_entry *e = &l->stats[i];

		if (!e->used)
			continue;
		if (!first)
			sb_str(b, ",");
		first = 0;
		sb_json_str(b, e->path, e->len);
		sb_printf(b, ":%llu", (unsigned long long)e->count);
	}
	if (l->stats_other > 0)
		sb_printf(b, "%s\"(other)\":%llu", first ? "" : ",",
		          (unsigned long long)l->stats_other);
	sb_printf(b,
	          "},\"mode\":\"%s\",\"fail\":%s,\"hang\":%s,\"close\":%s,\"delay_ms\":%lld,"
	          "\"connections\":%u,\"connections_total\":%llu}\n",
	          mock_mode(l), l->fail ? "true" : "false", l->hang ? "true" : "false",
	          l->close_new ? "true" : "false", l->delay_ms, l->nconns,
	          (unsigned long long)l->conns_total);
	respond_json(c, 200, NULL, b);
}

/* Hung requests are answered once the port recovers, on the next turn of the loop. */
static void
wake_hung(struct listener *l)
{
	struct conn *x;

	for (x = l->conns; x != NULL; x = x->next) {
		if (x->state == ST_HUNG) {
			x->state = ST_WAIT;
			conn_timer_arm(x, 0);
		}
	}
}

static void
handle_mock(struct conn *c)
{
	struct listener *l = c->l;
	const char *h = c->rbuf + c->rstart;
	long long ms = 0;

	switch (c->req.route) {
	case R_MOCK_FAIL:
		l->fail = 1;
		break;
	case R_MOCK_HANG:
		l->hang = 1;
		break;
	case R_MOCK_CLOSE:
		l->close_new = 1;
		break;
	case R_MOCK_RECOVER:
		l->fail = l->hang = l->close_new = 0;
		wake_hung(l);
		break;
	case R_MOCK_RESET_STATS:
		stats_reset(l);
		break;
	case R_MOCK_DELAY:
		if (query_num(h + c->req.query.off, c->req.query.len, "ms", &ms) < 0) {
			respond_bad(c, 400, "ms must be a number");
			return;
		}
		l->delay_ms = ms > MOCK_MAX_DELAY_MS ? MOCK_MAX_DELAY_MS : ms;
		break;
	case R_MOCK_STATS:
		handle_stats(c);
		return;
	default:
		respond_bad(c, 404, "unknown control endpoint");
		return;
	}
	respond_mock_ok(c);
}

static void
handle_status(struct conn *c)
{
	const char *h = c->rbuf + c->rstart;
	struct sbuf *b = &g_scratch;
	uint64_t n;

	if (parse_u64(h + c->req.path.off + 8, c->req.path.len - 8, &n) < 0 || n < 100 || n > 599) {
		respond_bad(c, 400, "status must be 100..599");
		return;
	}
	b->len = 0;
	sb_printf(b, "{\"status\":%d}\n", (int)n);
	if (n < 200) {
		/* A 1xx cannot be final: send it as an interim answer, then a real one. */
		if (c->req.minor == 1)
			sb_printf(out_prep(c), "HTTP/1.1 %d %s\r\n\r\n", (int)n,
			          mock_reason((int)n));
		respond_json(c, 200, NULL, b);
		return;
	}
	respond_json(c, (int)n, NULL, b);
}

/* If-None-Match or If-Modified-Since that our fixed validators satisfy. */
static int
not_modified(const struct conn *c)
{
	const struct req *r = &c->req;
	const char *h = c->rbuf + c->rstart;

	if (r->inm.len > 0) {
		const char *v = h + r->inm.off;

		return list_has_token(v, r->inm.len, MOCK_ETAG) ||
		       list_has_token(v, r->inm.len, "W/" MOCK_ETAG) ||
		       list_has_token(v, r->inm.len, "*");
	}
	if (r->ims.len > 0 && r->ims.len < 64) {
		char tmp[64];
		struct tm tm;

		memcpy(tmp, h + r->ims.off, r->ims.len);
		tmp[r->ims.len] = '\0';
		memset(&tm, 0, sizeof(tm));
		if (strptime(tmp, "%a, %d %b %Y %H:%M:%S GMT", &tm) != NULL)
			return timegm(&tm) >= MOCK_LAST_MODIFIED_EPOCH;
	}
	return 0;
}

static void
handle_cache(struct conn *c)
{
	const char *h = c->rbuf + c->rstart;
	const struct req *r = &c->req;
	char extra[512];
	long long max_age = 60, s_maxage = -1;

	switch (r->route) {
	case R_PRIVATE:
		snprintf(extra, sizeof(extra), "Cache-Control: private\r\n");
		break;
	case R_NOSTORE:
		snprintf(extra, sizeof(extra), "Cache-Control: no-store\r\n");
		break;
	case R_SETCOOKIE:
		snprintf(extra, sizeof(extra),
		         "Cache-Control: public, max-age=60\r\nSet-Cookie: mock=%llu; Path=/\r\n",
		         (unsigned long long)c->nreq);
		break;
	default: {
		char sm[160] = "";
		long long swr = -1, sie = -1, mr = 0, vary = 0, expires = -1;
		char cc[128];
		size_t n;

		if (query_num(h + r->query.off, r->query.len, "max_age", &max_age) < 0)
			max_age = 60;
		if (query_num(h + r->query.off, r->query.len, "s_maxage", &s_maxage) > 0)
			snprintf(sm, sizeof(sm), ", s-maxage=%lld", s_maxage);
		/* ?swr=N ?sie=N ?mr=1: stale-while-revalidate, stale-if-error, must-revalidate */
		n = strlen(sm);
		if (query_num(h + r->query.off, r->query.len, "swr", &swr) > 0)
			n += (size_t)snprintf(sm + n, sizeof(sm) - n, ", stale-while-revalidate=%lld", swr);
		if (query_num(h + r->query.off, r->query.len, "sie", &sie) > 0 && n < sizeof(sm))
			n += (size_t)snprintf(sm + n, sizeof(sm) - n, ", stale-if-error=%lld", sie);
		if (query_num(h + r->query.off, r->query.len, "mr", &mr) > 0 && mr && n < sizeof(sm))
			snprintf(sm + n, sizeof(sm) - n, ", must-revalidate");
		/* ?vary=1: the body depends on Accept-Language */
		query_num(h + r->query.off, r->query.len, "vary", &vary);
		/* ?expires=N: an Expires N seconds ahead instead of max-age */
		if (query_num(h + r->query.off, r->query.len, "expires", &expires) > 0) {
			time_t t = time(NULL) + (time_t)expires;
			struct tm tm;
			char d[48];

			gmtime_r(&t, &tm);
			strftime(d, sizeof(d), "%a, %d %b %Y %H:%M:%S GMT", &tm);
			snprintf(cc, sizeof(cc), "Expires: %s\r\nCache-Control: public", d);
		} else {
			snprintf(cc, sizeof(cc), "Cache-Control: public, max-age=%lld", max_age);
		}
		snprintf(extra, sizeof(extra), "%s%s\r\nETag: %s\r\nLast-Modified: %s\r\n%s", cc,
		         sm, MOCK_ETAG, MOCK_LAST_MODIFIED, vary ? "Vary: Accept-Language\r\n" : "");
		if (not_modified(c)) {
			respond(c, 304, NULL, extra, "", 0);
			return;
		}
	}
	}
	build_info(c, &g_scratch);
	respond_json(c, 200, extra, &g_scratch);
}

/* Starts a generated body; returns the state that streams it. */
static enum conn_state
start_gen(struct conn *c, enum gen_kind kind, uint64_t left, enum conn_state next)
{
	if (c->req.is_head)
		return next;
	c->gen = kind;
	c->gen_left = left;
	c->gen_off = 0;
	c->gen_next = next;
	return ST_STREAM;
}

static enum conn_state
handle_bytes(struct conn *c, enum conn_state next)
{
	const char *h = c->rbuf + c->rstart;
	long long n = 1024;

	if (query_num(h + c->req.query.off, c->req.query.len, "n", &n) < 0) {
		respond_bad(c, 400, "n must be a number");
		return next;
	}
	resp_head(c, 200, "application/octet-stream", n, NULL);
	return n > 0 ? start_gen(c, GEN_BYTES, (uint64_t)n, next) : next;
}

static enum conn_state
handle_chunked(struct conn *c, enum conn_state next)
{
	const char *h = c->rbuf + c->rstart;
	const struct req *r = &c->req;
	long long n = 3, size = 10;

	if (query_num(h + r->query.off, r->query.len, "n", &n) < 0 ||
	    query_num(h + r->query.off, r->query.len, "size", &size) < 0 || size < 1) {
		respond_bad(c, 400, "n and size must be numbers, size >= 1");
		return next;
	}
	/* HTTP/1.0 knows no chunked coding: delimit the same bytes by closing. */
	c->gen_framed = r->minor == 1;
	if (!c->gen_framed) {
		c->req.keep_alive = 0;
		next = ST_DONE;
		resp_head(c, 200, "application/octet-stream", -1, NULL);
	} else {
		resp_head(c, 200, "application/octet-stream", -1, "Transfer-Encoding: chunked\r\n");
	}
	c->gen_chunks = (uint64_t)n;
	c->gen_chunk_size = (uint64_t)size;
	return start_gen(c, GEN_CHUNKED, 0, next);
}

static enum conn_state
handle_echo(struct conn *c, enum conn_state next)
{
	const char *h = c->rbuf + c->rstart;
	const struct req *r = &c->req;
	char ct[320];

	if (r->echo_too_big) {
		respond_bad(c, 413, "echo body larger than 16 MB");
		return next;
	}
	if (r->ctype.len > 0 && r->ctype.len < 256)
		snprintf(ct, sizeof(ct), "%.*s", (int)r->ctype.len, h + r->ctype.off);
	else
		snprintf(ct, sizeof(ct), "application/octet-stream");
	resp_head(c, 200, ct, (long long)c->echo_len, NULL);
	return c->echo_len > 0 ? start_gen(c, GEN_ECHO, c->echo_len, next) : next;
}

static enum conn_state
handle_ws(struct conn *c, enum conn_state next)
{
	static const char guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
	const char *h = c->rbuf + c->rstart;
	const struct req *r = &c->req;
	unsigned char md[SHA_DIGEST_LENGTH], in[256];
	char accept[64];
	size_t n;

	if (r->ws_key.len == 0 || r->ws_key.len > 128 || r->minor != 1) {
		respond_bad(c, 400, "bad websocket handshake");
		return next;
	}
	memcpy(in, h + r->ws_key.off, r->ws_key.len);
	memcpy(in + r->ws_key.len, guid, sizeof(guid) - 1);
	n = r->ws_key.len + sizeof(guid) - 1;
	SHA1(in, n, md);
	EVP_EncodeBlock((unsigned char *)accept, md, SHA_DIGEST_LENGTH);
	sb_printf(
	    out_prep(c),
	    "HTTP/1.1 101 Switching Protocols\r\nServer: mockbackend\r\nX-Mock-Backend: %s\r\n"
	    "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n",
	    c->l->id, accept);
	return ST_WS_HEAD;
}

static void
respond_fail(struct conn *c)
{
	struct sbuf *b = &g_scratch;

	b->len = 0;
	if (c->req.route == R_HEALTH) {
		sb_str(b, "{\"status\":\"failing\"}\n");
		respond_json(c, 503, NULL, b);
		return;
	}
	sb_str(b, "{\"error\":\"mock_failure\",\"backend\":");
	sb_json_str(b, c->l->id, strlen(c->l->id));
	sb_str(b, "}\n");
	respond_json(c, 500, NULL, b);
}

/*
 * /reset?body=N: a whole head announcing 2N bytes, N of them (N <= 64 KB), then the RST,
 * so that the failure comes after the client has its head (a reset mid-body).
 */
static void
reset_mid_body(struct conn *c, long long n)
{
	struct sbuf *o = out_prep(c);

	if (n < 1 || n > MOCK_PATTERN_LEN)
		n = 1;
	sb_printf(o, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %lld\r\n\r\n",
	          2 * n);
	sb_add(o, g_pattern, (size_t)n);
}

/* The malformed heads of /garbage?kind=N (0: not HTTP at all), each followed by a close. */
static const char *
garbage_head(long long kind)
{
	static const char *const heads[] = {
	    "NOT-HTTP garbage response line\r\n\r\n",
	    "HTTP/1.1 2000 OK\r\nContent-Length: 2\r\n\r\nok",
	    "HTTP/1.1 200 OK\r\nContent-Length: 12abc\r\n\r\nok",
	    "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok",
	    "HTTP/1.1 200 OK\r\nNo colon in this header line\r\nContent-Length: 2\r\n\r\nok",
	    "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nok\r\n0\r\n\r\n",
	    "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n",
	};

	if (kind < 0 || kind >= (long long)(sizeof heads / sizeof heads[0]))
		kind = 0;
	return heads[kind];
}

/* Answers the complete request whose head is at rstart, then drops that head. */
static void
dispatch(struct conn *c)
{
	struct req *r = &c->req;
	enum conn_state next = r->keep_alive ? ST_HEAD : ST_DONE;
	const char *h = c->rbuf + c->rstart;
	long long flag = 1;

	if (r->route < R_MOCK_FIRST && c->l->fail) {
		respond_fail(c);
	} else {
		switch (r->route) {
		case R_HEALTH:
			g_scratch.len = 0;
			sb_str(&g_scratch, "{\"status\":\"ok\"}\n");
			respond_json(c, 200, NULL, &g_scratch);
			break;
		case R_STATUS:
			handle_status(c);
			break;
		case R_CACHEABLE:
		case R_PRIVATE:
		case R_NOSTORE:
		case R_SETCOOKIE:
			handle_cache(c);
			break;
		case R_BYTES:
			next = handle_bytes(c, next);
			break;
		case R_CHUNKED:
			next = handle_chunked(c, next);
			break;
		case R_ECHO:
			next = handle_echo(c, next);
			break;
		case R_WS:
			next = handle_ws(c, next);
			break;
		case R_CLOSE:
			r->keep_alive = 0;
			build_info(c, &g_scratch);
			resp_head(c, 200, "application/json", -1, NULL);
			if (!r->is_head)
				sb_add(&c->out, g_scratch.p, g_scratch.len);
			next = ST_DONE;
			break;
		case R_RESET:
			if (query_num(h + r->query.off, r->query.len, "body", &flag) > 0)
				reset_mid_body(c, flag);
			else if (query_num(h + r->query.off, r->query.len, "head", &flag) < 0 ||
			         flag)
				sb_str(out_prep(c), "HTTP/1.1 200 OK\r\nContent-Ty");
			c->rst = 1;
			next = ST_DONE;
			break;
		case R_TRUNCATED:
			sb_str(out_prep(c), "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
			                    "Content-Length: 100\r\n\r\n0123456789");
			next = ST_DONE;
			break;
		case R_GARBAGE:
			flag = 0;
			query_num(h + r->query.off, r->query.len, "kind", &flag);
			sb_str(out_prep(c), garbage_head(flag));
			next = ST_DONE;
			break;
		default:
			if (r->route >= R_MOCK_FIRST) {
				handle_mock(c);
				break;
			}
			build_info(c, &g_scratch);
			respond_json(c, 200, NULL, &g_scratch);
			break;
		}
	}
	c->rstart += r->head_len;
	r->head_len = 0;
	c->scan = 0;
	c->state = next;
}

/* ---- generated bodies ---- */

static void
gen_pattern(struct conn *c, size_t k)
{
	sb_add(&c->out, g_pattern + c->gen_off % 26, k);
	c->gen_off += k;
}

static int
step_stream(struct conn *c)
{
	size_t room, k;
	int done = 0;

	if (out_pending(c) >= MOCK_WBUF_HIGH)
		return S_BLOCKED;
	out_prep(c);
	room = MOCK_WBUF_HIGH - out_pending(c);
	switch (c->gen) {
	case GEN_BYTES:
		k = c->gen_left < room ? (size_t)c->gen_left : room;
		gen_pattern(c, k);
		c->gen_left -= k;
		done = c->gen_left == 0;
		break;
	case GEN_CHUNKED:
		if (c->gen_left == 0) {
			if (c->gen_chunks == 0) {
				if (c->gen_framed)
					sb_str(&c->out, "0\r\n\r\n");
				done = 1;
				break;
			}
			if (c->gen_framed)
				sb_printf(&c->out, "%llx\r\n",
				          (unsigned long long)c->gen_chunk_size);
			c->gen_left = c->gen_chunk_size;
			c->gen_chunks--;
		}
		k = c->gen_left < room ? (size_t)c->gen_left : room;
		gen_pattern(c, k);
		c->gen_left -= k;
		if (c->gen_left == 0 && c->gen_framed)
			sb_str(&c->out, "\r\n");
		break;
	case GEN_ECHO:
		k = c->echo_len - c->echo_pos;
		if (k > room)
			k = room;
		sb_add(&c->out, c->echo + c->echo_pos, k);
		c->echo_pos += k;
		done = c->echo_pos == c->echo_len;
		break;
	case GEN_NONE:
		done = 1;
		break;
	}
	if (done) {
		c->gen = GEN_NONE;
		c->state = c->gen_next;
		if (c->echo_cap > MOCK_ECHO_KEEP) {
			free(c->echo);
			c->echo = NULL;
			c->echo_cap = 0;
		}
	}
	return S_AGAIN;
}

/* ---- WebSocket ---- */

static int
step_ws_head(struct conn *c)
{
	const unsigned char *d = (const unsigned char *)c->rbuf + c->rstart;
	size_t avail = c->rlen - c->rstart, hlen = 2;
	uint64_t len;
	int opcode, len7;
	unsigned char hdr[10];
	size_t hn = 2;

	if (out_pending(c) >= MOCK_WBUF_HIGH)
		return S_BLOCKED;
	if (avail < 2)
		return S_NEED_INPUT;
	opcode = d[0] & 0x0f;
	len7 = d[1] & 0x7f;
	c->ws_masked = (d[1] & 0x80) != 0;
	hlen += (len7 == 126 ? 2 : len7 == 127 ? 8 : 0) + (c->ws_masked ? 4 : 0);
	if (avail < hlen)
		return S_NEED_INPUT;
	if (len7 == 126) {
		len = (uint64_t)d[2] << 8 | d[3];
	} else if (len7 == 127) {
		int i;

		len = 0;
		for (i = 0; i < 8; i++)
			len = len << 8 | d[2 + i];
		if (len >> 62)
			return S_CLOSE;
	} else {
		len = (uint64_t)len7;
	}
	if ((opcode >= 3 && opcode <= 7) || opcode > 10 || (opcode >= 8 && len > 125))
		return S_CLOSE;
	if (c->ws_masked)
		memcpy(c->ws_mask, d + hlen - 4, 4);
	c->ws_opcode = opcode;
	c->ws_left = len;
	c->ws_off = 0;
	c->ws_discard = opcode == 10; /* an unsolicited pong needs no answer */
	c->rstart += hlen;
	if (!c->ws_discard) {
		/* same FIN bit and opcode (ping answered by pong), never masked from a server */
		hdr[0] = (unsigned char)((d[0] & 0x80) | (opcode == 9 ? 10 : opcode));
		if (len < 126) {
			hdr[1] = (unsigned char)len;
		} else if (len < 65536) {
			hdr[1] = 126;
			hdr[2] = (unsigned char)(len >> 8);
			hdr[3] = (unsigned char)len;
			hn = 4;
		} else {
			int i;

			hdr[1] = 127;
			for (i = 0; i < 8; i++)
				hdr[2 + i] = (unsigned char)(len >> (56 - 8 * i));
			hn = 10;
		}
		sb_add(out_prep(c), hdr, hn);
	}
	c->state = ST_WS_PAYLOAD;
	return S_AGAIN;
}

static int
step_ws_payload(struct conn *c)
{
	size_t avail = c->rlen - c->rstart, k, i;
	char *o;
	const char *d = c->rbuf + c->rstart;

	if (c->ws_left == 0) {
		c->state = c->ws_opcode == 8 ? ST_DONE : ST_WS_HEAD;
		return S_AGAIN;
	}
	if (out_pending(c) >= MOCK_WBUF_HIGH)
		return S_BLOCKED;
	if (avail == 0)
		return S_NEED_INPUT;
	k = c->ws_left < avail ? (size_t)c->ws_left : avail;
	if (!c->ws_discard) {
		out_prep(c);
		sb_reserve(&c->out, k);
		o = c->out.p + c->out.len;
		for (i = 0; i < k; i++)
			o[i] = c->ws_masked ? (char)(d[i] ^ c->ws_mask[(c->ws_off + i) & 3]) : d[i];
		c->out.len += k;
	}
	c->ws_off += k;
	c->ws_left -= k;
	c->rstart += k;
	return S_AGAIN;
}

/* ---- the connection state machine ---- */

static int
conn_step(struct conn *c)
{
	switch (c->state) {
	case ST_HEAD:
		return step_head(c);
	case ST_BODY_CL:
		return step_body_cl(c);
	case ST_CHUNK_SIZE:
		return step_chunk_size(c);
	case ST_CHUNK_DATA:
		return step_chunk_data(c);
	case ST_CHUNK_CRLF:
		return step_chunk_crlf(c);
	case ST_TRAILER:
		return step_trailer(c);
	case ST_STREAM:
		return step_stream(c);
	case ST_WS_HEAD:
		return step_ws_head(c);
	case ST_WS_PAYLOAD:
		return step_ws_payload(c);
	case ST_LINGER:
		return S_NEED_INPUT;
	case ST_WAIT:
	case ST_HUNG:
	case ST_DONE:
		break;
	}
	return S_BLOCKED;
}

/*
 * All output has been sent and the connection must end. Without RST, shut our side and
 * drain the client for a while before close(): closing with unread input would send an
 * RST that can destroy the answer the client has not read yet (the "lingering close" of
 * Apache and nginx). Returns 1 when the connection was freed.
 */
static int
conn_finish(struct conn *c)
{
	if (c->rst || c->peer_eof) {
		conn_free(c);
		return 1;
	}
	shutdown(c->fd, SHUT_WR);
	c->state = ST_LINGER;
	conn_timer_arm(c, MOCK_LINGER_MS);
	return 0;
}

/*
 * Runs the connection until it must wait for the socket, a timer or a recover. The fd is
 * registered once, edge-triggered for both directions, so every path that stops here
 * has seen EAGAIN (or waits for a timer); a budget keeps a 100 MB stream from starving
 * the other connections, and event_active() brings us back for the rest.
 */
static void
conn_drive(struct conn *c)
{
	int budget = MOCK_DRIVE_BUDGET;

	while (budget-- > 0) {
		int r = conn_step(c);
		ssize_t n;

		if (r == S_CLOSE) {
			conn_free(c);
			return;
		}
		if (r == S_AGAIN)
			continue;
		if (out_pending(c) > 0) {
			int w = conn_flush(c);

			if (w < 0) {
				conn_free(c);
				return;
			}
			if (w > 0)
				continue;
			if (r == S_BLOCKED)
				return;
		}
		if (r == S_BLOCKED) {
			if (c->state == ST_DONE && out_pending(c) == 0) {
				if (conn_finish(c))
					return;
				continue;
			}
			return;
		}
		n = conn_read(c);
		if (n > 0)
			continue;
		if (n == -2)
			return;
		if (n == 0 && c->state == ST_HEAD) {
			/* The client is done sending; answer what it already asked, then close. */
			c->peer_eof = 1;
			c->state = ST_DONE;
			continue;
		}
		conn_free(c);
		return;
	}
	event_active(c->ev, EV_READ | EV_WRITE, 0);
}

static void
conn_io_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	conn_drive(arg);
}

static void
conn_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct conn *c = arg;

	(void)fd;
	(void)what;
	if (c->state == ST_LINGER) {
		conn_free(c);
		return;
	}
	if (c->state != ST_WAIT)
		return;
	dispatch(c);
	conn_drive(c);
}

static void
conn_new(struct listener *l, int fd)
{
	struct conn *c = calloc(1, sizeof(*c));
	int one = 1;

	if (c == NULL) {
		close(fd);
		return;
	}
	/* Small answers must leave at once, not wait for Nagle and a delayed ACK. */
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	c->l = l;
	c->fd = fd;
	c->id = ++l->conns_total;
	c->ev = event_new(g_base, fd, EV_READ | EV_WRITE | EV_ET | EV_PERSIST, conn_io_cb, c);
	c->timer = evtimer_new(g_base, conn_timer_cb, c);
	if (c->ev == NULL || c->timer == NULL || event_add(c->ev, NULL) < 0) {
		if (c->ev)
			event_free(c->ev);
		if (c->timer)
			event_free(c->timer);
		close(fd);
		free(c);
		return;
	}
	c->next = l->conns;
	if (l->conns)
		l->conns->prev = c;
	l->conns = c;
	l->nconns++;
	g_nconns++;
}

/* ---- listeners ---- */

static void
listener_resume_cb(evutil_socket_t fd, short what, void *arg)
{
	struct listener *l = arg;

	(void)fd;
	(void)what;
	event_add(l->ev, NULL);
}

static void
listener_cb(evutil_socket_t fd, short what, void *arg)
{
	struct listener *l = arg;
	int i;

	(void)what;
	for (i = 0; i < 128; i++) {
		int cfd = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);

		if (cfd < 0) {
			struct timeval tv = {0, 100000};

			if (errno == EAGAIN || errno == EWOULDBLOCK)
				return;
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			/* Out of fds: a level-triggered listener would spin; pause it instead. */
			fprintf(stderr, "mockbackend: %s: accept: %s\n", l->id, strerror(errno));
			event_del(l->ev);
			evtimer_add(l->pause_ev, &tv);
			return;
		}
		if (l->close_new || g_nconns >= g_max_conns) {
			close(cfd);
			continue;
		}
		conn_new(l, cfd);
	}
}

static int
listener_open(struct listener *l, const char *host, int port)
{
	struct sockaddr_storage ss;
	socklen_t slen;
	int one = 1;

	memset(&ss, 0, sizeof(ss));
	if (strchr(host, ':') != NULL) {
		struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;

		s6->sin6_family = AF_INET6;
		s6->sin6_port = htons((uint16_t)port);
		if (inet_pton(AF_INET6, host, &s6->sin6_addr) != 1)
			return -1;
		slen = sizeof(*s6);
	} else {
		struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;

		s4->sin_family = AF_INET;
		s4->sin_port = htons((uint16_t)port);
		if (inet_pton(AF_INET, host, &s4->sin_addr) != 1)
			return -1;
		slen = sizeof(*s4);
	}
	l->fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (l->fd < 0)
		return -1;
	setsockopt(l->fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(l->fd, (struct sockaddr *)&ss, slen) < 0 || listen(l->fd, 4096) < 0) {
		close(l->fd);
		l->fd = -1;
		return -1;
	}
	/* --port 0 asks the kernel for a port: report the real one */
	slen = sizeof(ss);
	getsockname(l->fd, (struct sockaddr *)&ss, &slen);
	l->port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
	                                         : ((struct sockaddr_in *)&ss)->sin_port);
	return 0;
}

/* ---- main ---- */

static void
signal_cb(evutil_socket_t sig, short what, void *arg)
{
	(void)what;
	(void)arg;
	fprintf(stderr, "mockbackend: signal %d, exiting\n", (int)sig);
	event_base_loopbreak(g_base);
}

static void
usage(FILE *f)
{
	fprintf(f, "usage: mockbackend [--port N | --ports N,N,...] [--id NAME[,NAME...]]\n"
	           "                   [--host ADDR] [--fail] [--hang] [--delay-ms N]\n");
}

/* Splits a comma list in place; returns the number of items or -1 when there are too many. */
static int
split_list(char *s, char **items, int max)
{
	int n = 0;
	char *save = NULL, *tok;

	for (tok = strtok_r(s, ",", &save); tok != NULL; tok = strtok_r(NULL, ",", &save)) {
		if (n == max)
			return -1;
		items[n++] = tok;
	}
	return n;
}

static int
valid_id(const char *s)
{
	size_t i, n = strlen(s);

	if (n == 0 || n >= MOCK_ID_MAX)
		return 0;
	for (i = 0; i < n; i++)
		if (!(is_tchar((unsigned char)s[i]) && s[i] != '"' && s[i] != '\\'))
			return 0;
	return 1;
}

static void
raise_fd_limit(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
		if (rl.rlim_cur < rl.rlim_max) {
			rl.rlim_cur = rl.rlim_max;
			setrlimit(RLIMIT_NOFILE, &rl);
			getrlimit(RLIMIT_NOFILE, &rl);
		}
		if (rl.rlim_cur > 200000)
			rl.rlim_cur = 200000;
		if (rl.rlim_cur > 128)
			g_max_conns = (unsigned)rl.rlim_cur - 64;
	}
}

static void
cleanup(void)
{
	int i;

	for (i = 0; i < g_nlisteners; i++) {
		struct listener *l = &g_listeners[i];

		while (l->conns != NULL)
			conn_free(l->conns);
		if (l->ev)
			event_free(l->ev);
		if (l->pause_ev)
			event_free(l->pause_ev);
		if (l->fd >= 0)
			close(l->fd);
	}
	free(g_listeners);
	free(g_scratch.p);
}

int
main(int argc, char **argv)
{
	static const struct option opts[] = {
	    {"port", required_argument, NULL, 'p'},
	    {"ports", required_argument, NULL, 'P'},
	    {"id", required_argument, NULL, 'i'},
	    {"host", required_argument, NULL, 'H'},
	    {"fail", no_argument, NULL, 'f'},
	    {"hang", no_argument, NULL, 'g'},
	    {"delay-ms", required_argument, NULL, 'd'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	char *port_items[MOCK_MAX_PORTS], *id_items[MOCK_MAX_PORTS];
	int nports = 0, nids = 0, fail = 0, hang = 0, opt, i;
	long long delay = 0;
	const char *host = "127.0.0.1";
	struct event *sigev[2];

	while ((opt = getopt_long(argc, argv, "p:P:i:H:d:h", opts, NULL)) != -1) {
		uint64_t v;

		switch (opt) {
		case 'p':
		case 'P':
			nports = split_list(optarg, port_items, MOCK_MAX_PORTS);
			break;
		case 'i':
			nids = split_list(optarg, id_items, MOCK_MAX_PORTS);
			break;
		case 'H':
			host = optarg;
			break;
		case 'f':
			fail = 1;
			break;
		case 'g':
			hang = 1;
			break;
		case 'd':
			if (parse_u64(optarg, strlen(optarg), &v) < 0 || v > MOCK_MAX_DELAY_MS) {
				fprintf(stderr, "mockbackend: bad --delay-ms: %s\n", optarg);
				return 2;
			}
			delay = (long long)v;
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind != argc || nports <= 0 || nids < 0) {
		usage(stderr);
		return 2;
	}
	if (nids > 0 && nids != nports) {
		fprintf(stderr, "mockbackend: --id needs one name per port (%d ports, %d ids)\n",
		        nports, nids);
		return 2;
	}

	signal(SIGPIPE, SIG_IGN);
	raise_fd_limit();
	for (i = 0; i < MOCK_PATTERN_LEN + 26; i++)
		g_pattern[i] = (char)('a' + i % 26);
	g_base = event_base_new();
	if (g_base == NULL) {
		fprintf(stderr, "mockbackend: event_base_new failed\n");
		return 1;
	}
	g_listeners = calloc((size_t)nports, sizeof(*g_listeners));
	if (g_listeners == NULL)
		return 1;
	for (i = 0; i < nports; i++) {
		struct listener *l = &g_listeners[i];
		uint64_t port;

		l->fd = -1;
		g_nlisteners = i + 1;
		if (parse_u64(port_items[i], strlen(port_items[i]), &port) < 0 || port > 65535) {
			fprintf(stderr, "mockbackend: bad port: %s\n", port_items[i]);
			cleanup();
			return 2;
		}
		if (listener_open(l, host, (int)port) < 0) {
			fprintf(stderr, "mockbackend: cannot listen on %s:%d: %s\n", host,
			        (int)port, strerror(errno));
			cleanup();
			return 1;
		}
		if (nids > 0) {
			if (!valid_id(id_items[i])) {
				fprintf(stderr, "mockbackend: bad id: %s\n", id_items[i]);
				cleanup();
				return 2;
			}
			snprintf(l->id, sizeof(l->id), "%s", id_items[i]);
		} else {
			snprintf(l->id, sizeof(l->id), "%d", l->port);
		}
		l->fail = fail;
		l->hang = hang;
		l->delay_ms = delay;
		l->ev = event_new(g_base, l->fd, EV_READ | EV_PERSIST, listener_cb, l);
		l->pause_ev = evtimer_new(g_base, listener_resume_cb, l);
		if (l->ev == NULL || l->pause_ev == NULL || event_add(l->ev, NULL) < 0) {
			fprintf(stderr, "mockbackend: cannot register port %d\n", l->port);
			cleanup();
			return 1;
		}
		fprintf(stderr, "mockbackend: %s listening on %s:%d mode=%s delay_ms=%lld\n", l->id,
		        host, l->port, mock_mode(l), delay);
	}
	sigev[0] = evsignal_new(g_base, SIGTERM, signal_cb, NULL);
	sigev[1] = evsignal_new(g_base, SIGINT, signal_cb, NULL);
	for (i = 0; i < 2; i++)
		if (sigev[i] == NULL || event_add(sigev[i], NULL) < 0)
			return 1;
	event_base_dispatch(g_base);
	cleanup();
	for (i = 0; i < 2; i++)
		event_free(sigev[i]);
	event_base_free(g_base);
	return 0;
}
