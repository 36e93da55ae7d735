#include <errno.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/uio.h>
#include <unistd.h>

#include "accesslog.h"
#include "log.h"
#include "metrics.h"
#include "proxy.h"
#include "util.h"
#include "ws.h"
#include "xmalloc.h"

/*
 * WebSocket server for /ws (see ws.h). One connection's output is a ring of references
 * to immutable, reference-counted messages, so a broadcast frame is encoded once and
 * shared by every client of every worker; the ring is bounded in bytes, and a client
 * that does not read has broadcasts dropped (counted) rather than holding memory or
 * the worker.
 */

#define WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
/* The input buffer holds one whole frame: the largest header plus WS_MAX_FRAME. */
#define WS_IN_CAP (WS_MAX_FRAME + 14)
/* What the input buffer starts with: the page sends only pongs and its close, so most
 * connections never grow it. */
#define WS_IN_START 1024
/* Connections over all workers; more handshakes are refused with 503. */
#define WS_MAX_CLIENTS 1024
/* Control frames (pong, close) may go this far past WS_QUEUE_MAX. */
#define WS_CONTROL_SLACK 65536
/* Broadcasts waiting for one worker; more are dropped (the worker is stuck anyway). */
#define WS_INBOX_MAX 1024
#define WS_IOV 64
#define WS_CHECK_MS 1000

struct ws_msg {
	_Atomic uint32_t refs;
	uint32_t len;
	uint8_t broadcast; /* counted as sent once written (not the 101 or control frames) */
	uint8_t data[];
};

struct ws_conn {
	struct client *c;
	struct ws_conn *prev, *next; /* the worker's WebSocket clients */
	uint8_t *in;
	uint32_t in_len, in_cap;
	struct ws_msg **q; /* ring of pending output */
	uint32_t qcap, qhead, qcount;
	uint32_t qoff; /* bytes of the head message already written */
	size_t qbytes;
	uint64_t heard_ms, pinged_ms, full_since_ms, close_sent_ms;
	uint64_t dropped;
	uint8_t close_recv; /* the peer's close frame arrived */
	uint8_t failed;     /* protocol error: no more reading, close once flushed */
	uint8_t reason;     /* enum ws_disconnect when the gateway chose to close, else 0 */
};

struct ws_worker {
	pthread_mutex_t lock;
	struct ws_msg **inbox, **spare; /* swapped under lock, so delivery runs unlocked */
	uint32_t ninbox;
	int fd;
	struct event *ev;
	struct ws_conn *conns;
	_Atomic uint32_t nconns;
	uint64_t next_check_ms;
	/* /metrics counters: written by the owning worker only (worker_counter_add), summed
	 * by a scrape; inbox_dropped is the exception, added to by broadcasting threads */
	_Atomic uint64_t sent, dropped, inbox_dropped;
	_Atomic uint64_t disconnects[WS_DISC_COUNT];
};

static _Atomic uint32_t ws_nclients;

/* ---- protocol helpers ---- */

static int
ws_b64_char(char ch)
{
	return (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
	       ch == '+' || ch == '/';
}

int
ws_accept_key(const char *key, size_t len, char out[WS_ACCEPT_LEN + 1])
{
	unsigned char raw[24], digest[SHA_DIGEST_LENGTH];
	char cat[24 + sizeof(WS_GUID)];

	/* 16 bytes are 22 base64 characters and "==" (RFC 6455 4.1, item 7) */
	if (len != 24 || key[22] != '=' || key[23] != '=')
		return -1;
	for (size_t i = 0; i < 22; i++)
		if (!ws_b64_char(key[i]))
			return -1;
	if (EVP_DecodeBlock(raw, (const unsigned char *)key, 24) != 18)
		return -1;
	memcpy(cat, key, 24);
	memcpy(cat + 24, WS_GUID, sizeof(WS_GUID) - 1);
	SHA1((const unsigned char *)cat, 24 + sizeof(WS_GUID) - 1, digest);
	EVP_EncodeBlock((unsigned char *)out, digest, SHA_DIGEST_LENGTH);
	out[WS_ACCEPT_LEN] = '\0';
	return 0;
}

size_t
ws_frame_header(uint8_t *out, enum ws_opcode op, uint64_t payload_len)
{
	out[0] = (uint8_t)(0x80 | op);
	if (payload_len < 126) {
		out[1] = (uint8_t)payload_len;
		return 2;
	}
	if (payload_len < 65536) {
		out[1] = 126;
		out[2] = (uint8_t)(payload_len >> 8);
		out[3] = (uint8_t)payload_len;
		return 4;
	}
	out[1] = 127;
	for (int i = 0; i < 8; i++)
		out[2 + i] = (uint8_t)(payload_len >> (56 - 8 * i));
	return 10;
}

static int
ws_opcode_known(uint8_t op)
{
	return op <= WS_OP_BINARY || (op >= WS_OP_CLOSE && op <= WS_OP_PONG);
}

/* The extended payload length; 0 and *hl unchanged when more bytes are needed. */
static int
ws_frame_length(const uint8_t *buf, size_t len, uint32_t *hl, uint64_t *n)
{
	if (*n == 126) {
		if (len < 4)
			return 0;
		*n = (uint64_t)buf[2] << 8 | buf[3];
		*hl = 4;
		/* RFC 6455 5.2: the minimal number of bytes MUST be used */
		return *n < 126 ? -1 : 1;
	}
	if (*n == 127) {
		if (len < 10)
			return 0;
		*n = 0;
		for (int i = 0; i < 8; i++)
			*n = *n << 8 | buf[2 + i];
		*hl = 10;
		return (*n >> 63) != 0 || *n < 65536 ? -1 : 1;
	}
	return 1;
}

int64_t
ws_frame_parse(const uint8_t *buf, size_t len, uint64_t max_payload, struct ws_frame *f)
{
	uint32_t hl = 2;
	uint64_t n;
	int r;

	if (len < 2)
		return WS_AGAIN;
	f->fin = buf[0] >> 7;
	f->opcode = buf[0] & 0x0f;
	f->masked = buf[1] >> 7;
	n = buf[1] & 0x7f;
	/* no extension was negotiated, so the RSV bits must be 0 */
	if ((buf[0] & 0x70) != 0 || !ws_opcode_known(f->opcode))
		return WS_E_PROTOCOL;
	if ((f->opcode & 0x8) != 0 && (!f->fin || n > 125))
		return WS_E_PROTOCOL;
	if (!f->masked)
		return WS_E_UNMASKED;
	r = ws_frame_length(buf, len, &hl, &n);
	if (r < 0)
		return WS_E_PROTOCOL;
	if (r == 0)
		return WS_AGAIN;
	if (n > max_payload)
		return WS_E_TOO_BIG;
	if (len < hl + 4u)
		return WS_AGAIN;
	memcpy(f->mask, buf + hl, 4);
	hl += 4;
	f->header_len = hl;
	f->payload_len = n;
	if (len - hl < n)
		return WS_AGAIN;
	return (int64_t)(hl + n);
}

void
ws_unmask(uint8_t *p, size_t n, const uint8_t mask[4])
{
	for (size_t i = 0; i < n; i++)
		p[i] ^= mask[i & 3];
}

/* ---- messages ---- */

/* A message of len bytes, one reference held by the caller. */
static struct ws_msg *
ws_msg_alloc(size_t len)
{
	struct ws_msg *m = xmalloc(sizeof(*m) + len);

	atomic_init(&m->refs, 1);
	m->len = (uint32_t)len;
	m->broadcast = 0;
	return m;
}

/* One frame carrying payload[0..len), one reference held by the caller. */
static struct ws_msg *
ws_msg_frame(enum ws_opcode op, const void *payload, size_t len)
{
	uint8_t head[10];
	size_t hl = ws_frame_header(head, op, len);
	struct ws_msg *m = ws_msg_alloc(hl + len);

	memcpy(m->data, head, hl);
	if (len > 0)
		memcpy(m->data + hl, payload, len);
	return m;
}

static void
ws_msg_unref(struct ws_msg *m)
{
	if (atomic_fetch_sub_explicit(&m->refs, 1, memory_order_acq_rel) == 1)
		free(m);
}

/* ---- one connection's output queue ---- */

static void
ws_queue_grow(struct ws_conn *ws)
{
	uint32_t cap = ws->qcap ? ws->qcap * 2 : 64;
	struct ws_msg **q = xmalloc(cap * sizeof(*q));

	for (uint32_t i = 0; i < ws->qcount; i++)
		q[i] = ws->q[(ws->qhead + i) % ws->qcap];
	free(ws->q);
	ws->q = q;
	ws->qcap = cap;
	ws->qhead = 0;
}

/* Queues a reference to m unless the queue would pass limit bytes: 0, or -1 dropped. */
static int
ws_queue_push(struct ws_conn *ws, struct ws_msg *m, size_t limit)
{
	if (ws->qbytes + m->len > limit)
		return -1;
	if (ws->qcount == ws->qcap)
		ws_queue_grow(ws);
	atomic_fetch_add_explicit(&m->refs, 1, memory_order_relaxed);
	ws->q[(ws->qhead + ws->qcount) % ws->qcap] = m;
	ws->qcount++;
	ws->qbytes += m->len;
	return 0;
}

static void
ws_queue_pop(struct ws_conn *ws)
{
	struct ws_msg *m = ws->q[ws->qhead];

	ws->qbytes -= m->len;
	ws->qhead = (ws->qhead + 1) % ws->qcap;
	ws->qcount--;
	ws->qoff = 0;
	ws_msg_unref(m);
}

static void
ws_queue_consume(struct ws_conn *ws, size_t n)
{
	while (n > 0 && ws->qcount > 0) {
		size_t left = ws->q[ws->qhead]->len - ws->qoff;

		if (n < left) {
			ws->qoff += (uint32_t)n;
			return;
		}
		n -= left;
		if (ws->q[ws->qhead]->broadcast)
			worker_counter_add(&ws->c->w->ws->sent, 1);
		ws_queue_pop(ws);
	}
}

/* Writes what the socket takes: -1 error, else 0. */
static int
ws_queue_flush(struct ws_conn *ws)
{
	struct client *c = ws->c;

	while (ws->qcount > 0 && c->writable) {
		struct iovec iov[WS_IOV];
		int n = 0;
		ssize_t w;

		for (uint32_t i = 0; i < ws->qcount && n < WS_IOV; i++, n++) {
			struct ws_msg *m = ws->q[(ws->qhead + i) % ws->qcap];
			uint32_t off = i == 0 ? ws->qoff : 0;

			iov[n].iov_base = m->data + off;
			iov[n].iov_len = m->len - off;
		}
		w = client_writev(c, iov, n);
		if (w < 0)
			return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : -1;
		ws_queue_consume(ws, (size_t)w);
	}
	return 0;
}

/* Queues a control frame (pong, ping, close): it may use the slack past WS_QUEUE_MAX. */
static int
ws_send_control(struct ws_conn *ws, enum ws_opcode op, const void *payload, size_t len)
{
	struct ws_msg *m = ws_msg_frame(op, payload, len);
	int r = ws_queue_push(ws, m, WS_QUEUE_MAX + WS_CONTROL_SLACK);

	ws_msg_unref(m);
	return r;
}

/* Starts the closing handshake (RFC 6455 5.5.1) with a status code. */
static void
ws_send_close(struct ws_conn *ws, uint16_t code)
{
	uint8_t p[2] = {(uint8_t)(code >> 8), (uint8_t)code};

	if (ws->close_sent_ms != 0)
		return;
	ws->close_sent_ms = ws->c->w->now_ms;
	if (ws->close_sent_ms == 0)
		ws->close_sent_ms = 1;
	ws_send_control(ws, WS_OP_CLOSE, p, sizeof(p));
}

/* ---- input ---- */

/* A status code a peer may send (RFC 6455 7.4): 1004-1006 and 1015 never go on the wire. */
static int
ws_close_code_valid(uint16_t code)
{
	return (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1011) ||
	       (code >= 3000 && code <= 4999);
}

static void
ws_on_frame(struct ws_conn *ws, const struct ws_frame *f, const uint8_t *p)
{
	switch (f->opcode) {
	case WS_OP_PING:
		ws_send_control(ws, WS_OP_PONG, p, (size_t)f->payload_len);
		break;
	case WS_OP_CLOSE:
		ws->close_recv = 1;
		if (f->payload_len == 0) {
			ws_send_close(ws, 1000);
		} else {
			/* echo the peer's status code (RFC 6455 5.5.1); a bad one is 1002 */
			uint16_t code = f->payload_len < 2 ? 0 : (uint16_t)(p[0] << 8 | p[1]);

			if (!ws_close_code_valid(code)) {
				code = 1002;
				ws->reason = WS_DISC_ERROR;
			}
			ws_send_close(ws, code);
		}
		break;
	default:
		/* the page sends nothing we act on; pongs only prove it is alive */
		break;
	}
}

/* Handles every complete frame in the input buffer and keeps a partial one. */
static void
ws_on_input(struct ws_conn *ws)
{
	uint32_t off = 0;

	while (!ws->close_recv && !ws->failed) {
		struct ws_frame f;
		int64_t r = ws_frame_parse(ws->in + off, ws->in_len - off, WS_MAX_FRAME, &f);

		if (r == WS_AGAIN)
			break;
		if (r < 0) {
			ws->failed = 1;
			ws_send_close(ws, r == WS_E_TOO_BIG ? 1009 : 1002);
			break;
		}
		ws_unmask(ws->in + off + f.header_len, (size_t)f.payload_len, f.mask);
		ws_on_frame(ws, &f, ws->in + off + f.header_len);
		off += (uint32_t)r;
	}
	if (ws->close_recv || ws->failed)
		off = ws->in_len;
	memmove(ws->in, ws->in + off, ws->in_len - off);
	ws->in_len -= off;
}

/* Reads once: 1 read something, 0 nothing to read, -1 the connection is over. */
static int
ws_read(struct ws_conn *ws)
{
	struct client *c = ws->c;
	ssize_t n;

	if (ws->close_recv || ws->failed)
		return 0;
	if (ws->in_len == ws->in_cap) {
		/* a frame larger than the buffer (it never holds a complete one) */
		if (ws->in_cap >= WS_IN_CAP)
			return 0;
		ws->in_cap = ws->in_cap * 4 < WS_IN_CAP ? ws->in_cap * 4 : WS_IN_CAP;
		ws->in = xrealloc(ws->in, ws->in_cap);
	}
	n = client_read(c, (char *)ws->in + ws->in_len, ws->in_cap - ws->in_len);
	if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK))
		return -1;
	if (n < 0)
		return 0;
	ws->in_len += (uint32_t)n;
	ws->heard_ms = c->w->now_ms;
	ws_on_input(ws);
	return 1;
}

void
ws_client_run(struct client *c)
{
	struct ws_conn *ws = c->ws;

	for (int rounds = 0; rounds < 64; rounds++) {
		int r;

		if (ws_queue_flush(ws) < 0) {
			client_close(c);
			return;
		}
		/* Both close frames exchanged, or ours after a protocol error, written:
		 * the server closes the TCP connection first (RFC 6455 7.1.1). */
		if (ws->qcount == 0 && ws->close_sent_ms != 0 && (ws->close_recv || ws->failed)) {
			client_close(c);
			return;
		}
		r = c->readable ? ws_read(ws) : 0;
		if (r < 0) {
			client_close(c);
			return;
		}
		if (r == 0)
			return;
	}
	event_active(&c->ev, EV_READ, 0);
}

/* ---- per worker ---- */

static void
ws_deliver(struct ws_worker *ww, struct ws_msg *m)
{
	for (struct ws_conn *ws = ww->conns; ws != NULL; ws = ws->next) {
		if (ws->close_sent_ms != 0)
			continue;
		if (ws_queue_push(ws, m, WS_QUEUE_MAX) == 0) {
			ws->full_since_ms = 0;
			continue;
		}
		ws->dropped++;
		worker_counter_add(&ww->dropped, 1);
		if (ws->full_since_ms == 0)
			ws->full_since_ms = ws->c->w->now_ms;
	}
}

/* The inbox eventfd: hands the broadcasts to this worker's clients and writes them. */
static void
ws_worker_inbox(evutil_socket_t fd, short what, void *arg)
{
	struct worker *w = arg;
	struct ws_worker *ww = w->ws;
	struct ws_msg **batch;
	uint32_t n;
	uint64_t v;

	if (read(fd, &v, sizeof(v)) < 0 && errno != EAGAIN)
		log_warn("worker %d: ws eventfd", w->id);
	w->now_ms = util_now_ms();
	pthread_mutex_lock(&ww->lock);
	batch = ww->inbox;
	n = ww->ninbox;
	ww->inbox = ww->spare;
	ww->ninbox = 0;
	ww->spare = batch;
	pthread_mutex_unlock(&ww->lock);
	for (uint32_t i = 0; i < n; i++) {
		ws_deliver(ww, batch[i]);
		ws_msg_unref(batch[i]);
	}
	for (struct ws_conn *ws = ww->conns, *next; ws != NULL; ws = next) {
		next = ws->next;
		ws_client_run(ws->c);
	}
}

struct ws_worker *
ws_worker_new(struct worker *w)
{
	struct ws_worker *ww = xcalloc(1, sizeof(*ww));

	pthread_mutex_init(&ww->lock, NULL);
	ww->inbox = xcalloc(WS_INBOX_MAX, sizeof(*ww->inbox));
	ww->spare = xcalloc(WS_INBOX_MAX, sizeof(*ww->spare));
	ww->fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (ww->fd == -1)
		fatal("eventfd");
	ww->ev = event_new(w->base, ww->fd, EV_READ | EV_PERSIST, ws_worker_inbox, w);
	event_add(ww->ev, NULL);
	return ww;
}

void
ws_worker_free(struct ws_worker *ww)
{
	if (ww == NULL)
		return;
	for (uint32_t i = 0; i < ww->ninbox; i++)
		ws_msg_unref(ww->inbox[i]);
	event_free(ww->ev);
	close(ww->fd);
	pthread_mutex_destroy(&ww->lock);
	free(ww->inbox);
	free(ww->spare);
	free(ww);
}

static void
ws_worker_post(struct ws_worker *ww, struct ws_msg *m)
{
	uint64_t one = 1;
	int wake = 0;

	pthread_mutex_lock(&ww->lock);
	if (ww->ninbox < WS_INBOX_MAX) {
		atomic_fetch_add_explicit(&m->refs, 1, memory_order_relaxed);
		ww->inbox[ww->ninbox++] = m;
		/* one wakeup per batch: the worker takes the whole inbox at once */
		wake = ww->ninbox == 1;
	} else {
		/* lost for every client of that worker; rare (the worker is stuck), and
		 * this thread is not the owner: a real atomic add */
		atomic_fetch_add_explicit(&ww->inbox_dropped,
		                          atomic_load_explicit(&ww->nconns, memory_order_relaxed),
		                          memory_order_relaxed);
	}
	pthread_mutex_unlock(&ww->lock);
	if (wake && write(ww->fd, &one, sizeof(one)) < 0 && errno != EAGAIN)
		log_warn("ws: worker wakeup");
}

void
ws_broadcast(const char *json, size_t len)
{
	struct ws_msg *m;

	if (atomic_load_explicit(&ws_nclients, memory_order_relaxed) == 0 || len > UINT32_MAX / 2)
		return;
	m = ws_msg_frame(WS_OP_TEXT, json, len);
	m->broadcast = 1;
	for (int i = 0; i < gw.nworkers; i++) {
		struct worker *w = gw.workers[i];

		if (w != NULL && w->ws != NULL &&
		    atomic_load_explicit(&w->ws->nconns, memory_order_relaxed) > 0)
			ws_worker_post(w->ws, m);
	}
	ws_msg_unref(m);
}

uint32_t
ws_client_count(void)
{
	return atomic_load_explicit(&ws_nclients, memory_order_relaxed);
}

void
ws_counts(struct ws_counts *out)
{
	memset(out, 0, sizeof(*out));
	for (int i = 0; i < gw.nworkers; i++) {
		const struct ws_worker *ww = gw.workers[i] != NULL ? gw.workers[i]->ws : NULL;

		if (ww == NULL)
			continue;
		out->sent += atomic_load_explicit(&ww->sent, memory_order_relaxed);
		out->dropped += atomic_load_explicit(&ww->dropped, memory_order_relaxed) +
		                atomic_load_explicit(&ww->inbox_dropped, memory_order_relaxed);
		for (int r = 0; r < WS_DISC_COUNT; r++)
			out->disconnects[r] +=
			    atomic_load_explicit(&ww->disconnects[r], memory_order_relaxed);
	}
}

uint64_t
ws_dropped_total(void)
{
	struct ws_counts n;

	ws_counts(&n);
	return n.dropped;
}

/* Label values of enum ws_disconnect, in its order. */
static const char *const ws_disconnect_names[WS_DISC_COUNT] = {"closed", "error", "silent", "slow"};

void
ws_metrics_write(struct mbuf *o)
{
	struct ws_counts n;

	ws_counts(&n);
	mbuf_printf(o,
	            "# HELP gatewayd_ws_clients WebSocket clients connected to /ws.\n"
	            "# TYPE gatewayd_ws_clients gauge\n"
	            "gatewayd_ws_clients %u\n"
	            "# HELP gatewayd_ws_messages_total Live messages to /ws clients: written "
	            "(sent), or dropped for a client that does not read.\n"
	            "# TYPE gatewayd_ws_messages_total counter\n"
	            "gatewayd_ws_messages_total{result=\"dropped\"} %llu\n"
	            "gatewayd_ws_messages_total{result=\"sent\"} %llu\n"
	            "# HELP gatewayd_ws_disconnects_total /ws connections ended, by reason.\n"
	            "# TYPE gatewayd_ws_disconnects_total counter\n",
	            ws_client_count(), (unsigned long long)n.dropped, (unsigned long long)n.sent);
	for (int r = 0; r < WS_DISC_COUNT; r++)
		mbuf_printf(o, "gatewayd_ws_disconnects_total{reason=\"%s\"} %llu\n",
		            ws_disconnect_names[r], (unsigned long long)n.disconnects[r]);
}

/* Timers of one connection (every WS_CHECK_MS, or every tick while draining). */
static void
ws_check(struct ws_conn *ws, int draining)
{
	struct client *c = ws->c;
	uint64_t now = c->w->now_ms;

	if (ws->close_sent_ms != 0) {
		if (now - ws->close_sent_ms >= WS_CLOSE_WAIT_MS)
			client_close(c);
		return;
	}
	if (now - ws->heard_ms >= WS_SILENT_MS) {
		log_info("ws %s: silent for %llu s, closed", c->peer_text,
		         (unsigned long long)(now - ws->heard_ms) / 1000);
		ws->reason = WS_DISC_SILENT;
		client_close(c);
		return;
	}
	if (ws->full_since_ms != 0 && now - ws->full_since_ms >= WS_SLOW_CLOSE_MS) {
		log_info("ws %s: not reading for %llu s (%llu messages dropped), closed",
		         c->peer_text, (unsigned long long)(now - ws->full_since_ms) / 1000,
		         (unsigned long long)ws->dropped);
		ws->reason = WS_DISC_SLOW;
		client_close(c);
		return;
	}
	if (draining)
		ws_send_close(ws, 1001); /* going away */
	else if (now - ws->pinged_ms >= WS_PING_MS) {
		ws->pinged_ms = now;
		ws_send_control(ws, WS_OP_PING, NULL, 0);
	}
	ws_client_run(c);
}

void
ws_worker_tick(struct worker *w)
{
	struct ws_worker *ww = w->ws;
	int draining;

	if (ww == NULL || ww->conns == NULL)
		return;
	draining = atomic_load_explicit(&gw.draining, memory_order_relaxed);
	if (!draining && w->now_ms < ww->next_check_ms)
		return;
	ww->next_check_ms = w->now_ms + WS_CHECK_MS;
	for (struct ws_conn *ws = ww->conns, *next; ws != NULL; ws = next) {
		next = ws->next;
		ws_check(ws, draining);
	}
}

/* ---- attach and detach ---- */

int
ws_client_attach(struct client *c, const char *head, size_t head_len, const void *early,
                 size_t early_len)
{
	struct worker *w = c->w;
	struct ws_worker *ww = w->ws;
	struct ws_conn *ws;

	if (early_len > WS_IN_CAP || ww == NULL)
		return -1;
	ws = xcalloc(1, sizeof(*ws));
	ws->c = c;
	ws->in_cap = early_len > WS_IN_START ? WS_IN_CAP : WS_IN_START;
	ws->in = xmalloc(ws->in_cap);
	if (early_len > 0)
		memcpy(ws->in, early, early_len);
	ws->in_len = (uint32_t)early_len;
	ws->heard_ms = ws->pinged_ms = w->now_ms;
	if (head_len > 0) {
		struct ws_msg *m = ws_msg_alloc(head_len);

		memcpy(m->data, head, head_len);
		ws_queue_push(ws, m, SIZE_MAX);
		ws_msg_unref(m);
	}
	ws->next = ww->conns;
	if (ww->conns != NULL)
		ww->conns->prev = ws;
	ww->conns = ws;
	atomic_fetch_add_explicit(&ww->nconns, 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&ws_nclients, 1, memory_order_relaxed);
	c->ws = ws;
	c->state = CS_WS;
	c->deadline_ms = 0; /* ws_worker_tick keeps this connection's time */
	return 0;
}

/*
 * Why a connection ends: the reason the gateway gave (slow, silent), else a closing
 * handshake we took part in without a protocol error is "closed" (the peer's close, or
 * ours on drain), and everything else (protocol error, reset, EOF without a close
 * frame, a write error) is "error".
 */
static enum ws_disconnect
ws_disconnect_reason(const struct ws_conn *ws)
{
	if (ws->reason != 0)
		return (enum ws_disconnect)ws->reason;
	if (ws->failed || (ws->close_sent_ms == 0 && !ws->close_recv))
		return WS_DISC_ERROR;
	return WS_DISC_CLOSED;
}

void
ws_client_free(struct client *c)
{
	struct ws_conn *ws = c->ws;
	struct ws_worker *ww = c->w->ws;

	if (ws == NULL)
		return;
	worker_counter_add(&ww->disconnects[ws_disconnect_reason(ws)], 1);
	if (ws->prev != NULL)
		ws->prev->next = ws->next;
	else
		ww->conns = ws->next;
	if (ws->next != NULL)
		ws->next->prev = ws->prev;
	atomic_fetch_sub_explicit(&ww->nconns, 1, memory_order_relaxed);
	atomic_fetch_sub_explicit(&ws_nclients, 1, memory_order_relaxed);
	while (ws->qcount > 0)
		ws_queue_pop(ws);
	free(ws->q);
	free(ws->in);
	free(ws);
	c->ws = NULL;
}

/* ---- the handshake ---- */

static void
ws_refuse(struct exchange *x, const char *message, const char *extra_headers)
{
	x->close_client = 1;
	respond_error(x, 400, "invalid_request", message, extra_headers, NULL);
}

/* Checks the upgrade request (RFC 6455 4.2.1): NULL and accept filled, or why not. */
static const char *
ws_check_request(const struct exchange *x, char accept[WS_ACCEPT_LEN + 1], int *bad_version)
{
	const struct http_msg *m = &x->req;
	const char *v;
	size_t len;

	*bad_version = 0;
	if (m->method != HTTP_M_GET || !m->upgrade)
		return "A WebSocket handshake is required: GET with Connection: Upgrade.";
	v = http_header_get(m, x->in.data, HTTP_H_UPGRADE, &len);
	if (v == NULL || !http_list_has(v, len, "websocket"))
		return "A WebSocket handshake is required: Upgrade: websocket.";
	if (m->body != HTTP_BODY_NONE)
		return "A WebSocket handshake has no body.";
	v = http_header_find(m, x->in.data, "Sec-WebSocket-Version", &len);
	if (v == NULL || len != 2 || memcmp(v, "13", 2) != 0) {
		*bad_version = 1;
		return "Only WebSocket version 13 is supported.";
	}
	v = http_header_find(m, x->in.data, "Sec-WebSocket-Key", &len);
	if (v == NULL || ws_accept_key(v, len, accept) != 0)
		return "Sec-WebSocket-Key must be 16 bytes in base64.";
	if (x->in.end - x->in.start > WS_IN_CAP)
		return "Too much data after the handshake.";
	return NULL;
}

void
ws_handle_upgrade(struct exchange *x)
{
	struct client *c = x->c;
	char accept[WS_ACCEPT_LEN + 1], head[512];
	int bad_version, n;
	const char *why = ws_check_request(x, accept, &bad_version);

	if (why != NULL) {
		/* RFC 6455 4.4: name the versions this server speaks */
		ws_refuse(x, why, bad_version ? "Sec-WebSocket-Version: 13\r\n" : NULL);
		return;
	}
	if (ws_client_count() >= WS_MAX_CLIENTS) {
		respond_error(x, 503, "service_unavailable", "Too many dashboard connections.",
		              "Retry-After: 5\r\n", NULL);
		return;
	}
	n = snprintf(head, sizeof(head),
	             "HTTP/1.1 101 Switching Protocols\r\n"
	             "Upgrade: websocket\r\n"
	             "Connection: Upgrade\r\n"
	             "Sec-WebSocket-Accept: %s\r\n"
	             "X-Request-Id: %.*s\r\n"
	             "\r\n",
	             accept, (int)x->request_id_len, x->request_id);
	x->status = 101;
	metrics_request(x->w, 101, NULL, x->start_us);
	accesslog_request(x, 101, NULL, 0, NULL);
	/* the bytes after the head (a frame sent without waiting for the 101) are kept */
	if (ws_client_attach(c, head, (size_t)n, x->in.data + x->in.start,
	                     x->in.end - x->in.start) != 0) {
		ws_refuse(x, "The WebSocket server is not available.", NULL);
		return;
	}
	c->x = NULL;
	client_exchange_release(x);
}
