/*
 * Unit tests for gatewayd/ws.c: the handshake's accept key (RFC 6455's own example),
 * server frame headers at the length boundaries, the client frame parser (RFC 6455 5.7
 * examples, every truncation, each protocol error), and the server itself on a
 * socketpair under a real event loop: a broadcast arrives as one text frame, ping gets
 * pong, close gets close and the connection ends, and a client that never reads has
 * broadcasts dropped and is closed once its queue has stayed full for WS_SLOW_CLOSE_MS.
 */

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "proxy.h"
#include "util.h"
#include "ws.h"

static void
test_accept_key(void **state)
{
	char out[WS_ACCEPT_LEN + 1];

	(void)state;
	/* RFC 6455 section 1.3 */
	assert_int_equal(ws_accept_key("dGhlIHNhbXBsZSBub25jZQ==", 24, out), 0);
	assert_string_equal(out, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
	assert_int_equal(ws_accept_key("dGhlIHNhbXBsZSBub25jZQ=", 23, out), -1);
	assert_int_equal(ws_accept_key("dGhlIHNhbXBsZSBub25jZQ==x", 25, out), -1);
	assert_int_equal(ws_accept_key("dGhlIHNhbXBsZSBub25jZ===", 24, out), -1);
	assert_int_equal(ws_accept_key("dGhlIHNhbXBsZSBub25j*Q==", 24, out), -1);
	assert_int_equal(ws_accept_key("dGhlIHNhbXBsZSBub25jZQAA", 24, out), -1);
	assert_int_equal(ws_accept_key("", 0, out), -1);
}

static void
test_frame_header(void **state)
{
	static const struct {
		uint64_t len;
		size_t hl;
		uint8_t bytes[10];
	} cases[] = {
	    {5, 2, {0x81, 0x05}},
	    {125, 2, {0x81, 0x7d}},
	    {126, 4, {0x81, 0x7e, 0x00, 0x7e}},
	    {256, 4, {0x81, 0x7e, 0x01, 0x00}}, /* RFC 6455 5.7 (as text) */
	    {65535, 4, {0x81, 0x7e, 0xff, 0xff}},
	    {65536, 10, {0x81, 0x7f, 0, 0, 0, 0, 0, 0x01, 0x00, 0x00}},
	};
	uint8_t out[10];

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		size_t hl = ws_frame_header(out, WS_OP_TEXT, cases[i].len);

		assert_int_equal(hl, cases[i].hl);
		assert_memory_equal(out, cases[i].bytes, hl);
	}
	assert_int_equal(ws_frame_header(out, WS_OP_PONG, 0), 2);
	assert_int_equal(out[0], 0x8a);
	assert_int_equal(out[1], 0);
}

/* A masked client frame of the given payload into out; its length. */
static size_t
client_frame(uint8_t *out, uint8_t b0, const void *payload, size_t n)
{
	static const uint8_t key[4] = {0x37, 0xfa, 0x21, 0x3d};
	size_t hl = 2;

	out[0] = b0;
	if (n < 126) {
		out[1] = (uint8_t)(0x80 | n);
	} else if (n < 65536) {
		out[1] = 0x80 | 126;
		out[2] = (uint8_t)(n >> 8);
		out[3] = (uint8_t)n;
		hl = 4;
	} else {
		out[1] = 0x80 | 127;
		for (int i = 0; i < 8; i++)
			out[2 + i] = (uint8_t)((uint64_t)n >> (56 - 8 * i));
		hl = 10;
	}
	memcpy(out + hl, key, 4);
	memcpy(out + hl + 4, payload, n);
	ws_unmask(out + hl + 4, n, key);
	return hl + 4 + n;
}

static void
test_parse(void **state)
{
	/* RFC 6455 5.7: a single-frame masked text message "Hello" */
	static const uint8_t hello[] = {0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d,
	                                0x7f, 0x9f, 0x4d, 0x51, 0x58};
	static uint8_t buf[70000], pl[70000];
	struct ws_frame f;

	(void)state;
	assert_int_equal(ws_frame_parse(hello, sizeof(hello), 125, &f), (int64_t)sizeof(hello));
	assert_int_equal(f.fin, 1);
	assert_int_equal(f.opcode, WS_OP_TEXT);
	assert_int_equal(f.header_len, 6);
	assert_int_equal(f.payload_len, 5);
	memcpy(buf, hello, sizeof(hello));
	ws_unmask(buf + 6, 5, f.mask);
	assert_memory_equal(buf + 6, "Hello", 5);
	for (size_t n = 0; n < sizeof(hello); n++)
		assert_int_equal(ws_frame_parse(hello, n, 125, &f), WS_AGAIN);

	/* the same frame unmasked, as a server would send it */
	assert_int_equal(ws_frame_parse((const uint8_t *)"\x81\x05Hello", 7, 125, &f),
	                 WS_E_UNMASKED);

	/* 16-bit and 64-bit lengths; every truncation of a 64 KB frame is incomplete */
	memset(pl, 'a', 65536);
	size_t n = client_frame(buf, 0x82, pl, 300);
	assert_int_equal(ws_frame_parse(buf, n, WS_MAX_FRAME, &f), (int64_t)n);
	assert_int_equal(f.payload_len, 300);
	n = client_frame(buf, 0x82, pl, 65536);
	assert_int_equal(ws_frame_parse(buf, n, WS_MAX_FRAME, &f), (int64_t)n);
	assert_int_equal(f.header_len, 14);
	assert_int_equal(ws_frame_parse(buf, n - 1, WS_MAX_FRAME, &f), WS_AGAIN);
	assert_int_equal(ws_frame_parse(buf, 9, WS_MAX_FRAME, &f), WS_AGAIN);
	assert_int_equal(ws_frame_parse(buf, n, 65535, &f), WS_E_TOO_BIG);

	/* protocol errors */
	n = client_frame(buf, 0x81 | 0x40, "x", 1); /* RSV1 */
	assert_int_equal(ws_frame_parse(buf, n, 125, &f), WS_E_PROTOCOL);
	n = client_frame(buf, 0x83, "x", 1); /* reserved opcode */
	assert_int_equal(ws_frame_parse(buf, n, 125, &f), WS_E_PROTOCOL);
	n = client_frame(buf, 0x09, "x", 1); /* fragmented ping */
	assert_int_equal(ws_frame_parse(buf, n, 125, &f), WS_E_PROTOCOL);
	memset(pl, 'p', 126);
	n = client_frame(buf, 0x89, pl, 126); /* control frame over 125 */
	assert_int_equal(ws_frame_parse(buf, n, 1000, &f), WS_E_PROTOCOL);
	static const uint8_t short16[] = {0x81, 0xfe, 0x00, 0x05, 1,   2,  3,
	                                  4,    'a',  'b',  'c',  'd', 'e'};
	assert_int_equal(ws_frame_parse(short16, sizeof(short16), 125, &f), WS_E_PROTOCOL);
	static const uint8_t huge[] = {0x82, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4};
	assert_int_equal(ws_frame_parse(huge, sizeof(huge), UINT64_MAX, &f), WS_E_PROTOCOL);
	/* a continuation and a final pong are fine */
	n = client_frame(buf, 0x00, "x", 1);
	assert_int_equal(ws_frame_parse(buf, n, 125, &f), (int64_t)n);
	n = client_frame(buf, 0x8a, "", 0);
	assert_int_equal(ws_frame_parse(buf, n, 125, &f), (int64_t)n);
}

/* ---- the server on a socketpair ---- */

struct fixture {
	struct worker *w;
	struct client *c;
	int peer; /* the test's end: the "browser" */
};

static void
fixture_setup(struct fixture *fx, int sndbuf)
{
	int sv[2];

	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
	if (sndbuf > 0) {
		setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf));
		setsockopt(sv[1], SOL_SOCKET, SO_RCVBUF, &sndbuf, sizeof(sndbuf));
	}
	fx->w = calloc(1, sizeof(*fx->w));
	fx->w->base = event_base_new();
	fx->w->now_ms = util_now_ms();
	fx->w->ws = ws_worker_new(fx->w);
	gw.workers[0] = fx->w;
	gw.nworkers = 1;
	fx->c = calloc(1, sizeof(*fx->c));
	fx->c->fd = sv[0];
	fx->c->w = fx->w;
	fx->c->readable = fx->c->writable = 1;
	fx->w->clients = fx->c;
	fx->w->nclients = 1;
	event_assign(&fx->c->ev, fx->w->base, sv[0],
	             EV_READ | EV_WRITE | EV_CLOSED | EV_PERSIST | EV_ET, client_event, fx->c);
	event_add(&fx->c->ev, NULL);
	fx->peer = sv[1];
	assert_int_equal(ws_client_attach(fx->c, "HELLO", 5, NULL, 0), 0);
	assert_int_equal(ws_client_count(), 1);
}

static void
fixture_teardown(struct fixture *fx)
{
	close(fx->peer);
	if (!fx->c->closed)
		client_close(fx->c);
	free(fx->w->dead);
	gw.nworkers = 0;
	gw.workers[0] = NULL;
	assert_int_equal(ws_client_count(), 0);
	ws_worker_free(fx->w->ws);
	event_base_free(fx->w->base);
	free(fx->w);
}

static void
spin(struct fixture *fx)
{
	for (int i = 0; i < 5; i++)
		event_base_loop(fx->w->base, EVLOOP_NONBLOCK);
}

/* Reads exactly n bytes from the peer end (waits up to 2 s); 0 or -1. */
static int
peer_read(struct fixture *fx, void *buf, size_t n)
{
	size_t got = 0;
	uint64_t start = util_now_ms();

	while (got < n) {
		struct pollfd p = {fx->peer, POLLIN, 0};
		ssize_t r;

		spin(fx);
		if (poll(&p, 1, 20) < 0)
			return -1;
		r = read(fx->peer, (char *)buf + got, n - got);
		if (r == 0)
			return -1;
		if (r > 0)
			got += (size_t)r;
		else if (errno != EAGAIN)
			return -1;
		else if (util_now_ms() - start > 2000)
			return -1;
	}
	return 0;
}

/* Reads one server frame: its opcode, payload into buf (cap), *len. */
static int
peer_frame(struct fixture *fx, uint8_t *buf, size_t cap, size_t *len)
{
	uint8_t h[10];
	uint64_t n;

	if (peer_read(fx, h, 2) != 0)
		return -1;
	assert_int_equal(h[1] & 0x80, 0); /* servers never mask */
	n = h[1] & 0x7f;
	if (n == 126) {
		assert_int_equal(peer_read(fx, h + 2, 2), 0);
		n = (uint64_t)h[2] << 8 | h[3];
	} else if (n == 127) {
		assert_int_equal(peer_read(fx, h + 2, 8), 0);
		n = 0;
		for (int i = 0; i < 8; i++)
			n = n << 8 | h[2 + i];
	}
	assert_true(n <= cap);
	assert_int_equal(peer_read(fx, buf, (size_t)n), 0);
	*len = (size_t)n;
	return h[0] & 0x0f;
}

static void
peer_send(struct fixture *fx, uint8_t b0, const void *payload, size_t n)
{
	uint8_t buf[256];
	size_t len = client_frame(buf, b0, payload, n);

	assert_int_equal(write(fx->peer, buf, len), (ssize_t)len);
}

/* The fixture worker's counters (fresh per fixture): sent, dropped, and exactly `ended`
 * connections ended, all for `reason`. */
static void
assert_counts(int ended, uint64_t sent, uint64_t dropped, enum ws_disconnect reason)
{
	struct ws_counts n;
	uint64_t total = 0;

	ws_counts(&n);
	assert_int_equal(n.sent, sent);
	assert_int_equal(n.dropped, dropped);
	for (int r = 0; r < WS_DISC_COUNT; r++)
		total += n.disconnects[r];
	assert_int_equal(total, ended);
	assert_int_equal(n.disconnects[reason], ended);
}

static void
test_server(void **state)
{
	struct fixture fx;
	uint8_t buf[4096];
	size_t len;

	(void)state;
	ws_broadcast("{\"nobody\":1}", 12); /* no client yet: nothing to do */
	fixture_setup(&fx, 0);
	spin(&fx);
	assert_int_equal(peer_read(&fx, buf, 5), 0);
	assert_memory_equal(buf, "HELLO", 5);

	ws_broadcast("{\"type\":\"stats\",\"rps\":1}", 24);
	ws_broadcast("{\"type\":\"log\"}", 14);
	assert_int_equal(peer_frame(&fx, buf, sizeof(buf), &len), WS_OP_TEXT);
	assert_int_equal(len, 24);
	assert_memory_equal(buf, "{\"type\":\"stats\",\"rps\":1}", 24);
	assert_int_equal(peer_frame(&fx, buf, sizeof(buf), &len), WS_OP_TEXT);
	assert_memory_equal(buf, "{\"type\":\"log\"}", 14);

	/* text from the page is ignored; a ping is answered with its payload */
	peer_send(&fx, 0x81, "hi", 2);
	peer_send(&fx, 0x89, "abc", 3);
	assert_int_equal(peer_frame(&fx, buf, sizeof(buf), &len), WS_OP_PONG);
	assert_int_equal(len, 3);
	assert_memory_equal(buf, "abc", 3);

	/* close: echoed code, then the server ends the TCP connection */
	peer_send(&fx, 0x88, "\x03\xe8", 2);
	assert_int_equal(peer_frame(&fx, buf, sizeof(buf), &len), WS_OP_CLOSE);
	assert_int_equal(len, 2);
	assert_memory_equal(buf, "\x03\xe8", 2);
	spin(&fx);
	assert_true(fx.c->closed);
	assert_int_equal(read(fx.peer, buf, 1), 0);
	/* the two broadcasts were written (the 101 head and the pong are not messages) */
	assert_counts(1, 2, 0, WS_DISC_CLOSED);
	fixture_teardown(&fx);

	/* a code that must not be sent (1005: "no status") is a protocol error */
	fixture_setup(&fx, 0);
	assert_int_equal(peer_read(&fx, buf, 5), 0);
	peer_send(&fx, 0x88, "\x03\xed", 2);
	assert_int_equal(peer_frame(&fx, buf, sizeof(buf), &len), WS_OP_CLOSE);
	assert_memory_equal(buf, "\x03\xea", 2);
	spin(&fx);
	assert_true(fx.c->closed);
	assert_counts(1, 0, 0, WS_DISC_ERROR);
	fixture_teardown(&fx);
}

static void
test_unmasked_closes(void **state)
{
	struct fixture fx;
	uint8_t buf[64];
	size_t len;

	(void)state;
	fixture_setup(&fx, 0);
	assert_int_equal(peer_read(&fx, buf, 5), 0);
	assert_int_equal(write(fx.peer, "\x81\x02hi", 4), 4);
	assert_int_equal(peer_frame(&fx, buf, sizeof(buf), &len), WS_OP_CLOSE);
	assert_memory_equal(buf, "\x03\xea", 2); /* 1002 protocol error */
	spin(&fx);
	assert_true(fx.c->closed);
	assert_counts(1, 0, 0, WS_DISC_ERROR);
	fixture_teardown(&fx);
}

/* A frame far larger than the starting input buffer: the buffer grows to hold it. */
static void
test_big_frame(void **state)
{
	struct fixture fx;
	static uint8_t frame[WS_MAX_FRAME + 64], payload[WS_MAX_FRAME];
	uint8_t buf[64];
	size_t len, n;

	(void)state;
	fixture_setup(&fx, 0);
	assert_int_equal(peer_read(&fx, buf, 5), 0);
	memset(payload, 'b', sizeof(payload));
	n = client_frame(frame, 0x82, payload, sizeof(payload));
	n += client_frame(frame + n, 0x89, "p", 1);
	assert_int_equal(write(fx.peer, frame, n), (ssize_t)n);
	assert_int_equal(peer_frame(&fx, buf, sizeof(buf), &len), WS_OP_PONG);
	assert_int_equal(len, 1);
	assert_false(fx.c->closed);
	fixture_teardown(&fx);
}

static void
test_slow_consumer(void **state)
{
	struct fixture fx;
	static char big[60000];
	uint64_t dropped = ws_dropped_total();

	(void)state;
	memset(big, 'x', sizeof(big));
	fixture_setup(&fx, 16384);
	/* far more than the socket and the 1 MB queue take: the worker must not block */
	for (int i = 0; i < 60; i++) {
		ws_broadcast(big, sizeof(big));
		spin(&fx);
	}
	assert_true(ws_dropped_total() > dropped);
	assert_false(fx.c->closed);
	/* still full WS_SLOW_CLOSE_MS later: disconnected */
	fx.w->now_ms = util_now_ms() + WS_SLOW_CLOSE_MS + 1000;
	ws_worker_tick(fx.w);
	assert_true(fx.c->closed);
	assert_int_equal(ws_client_count(), 0);
	{
		struct ws_counts n;

		ws_counts(&n);
		assert_true(n.dropped > 0);
		assert_int_equal(n.disconnects[WS_DISC_SLOW], 1);
		assert_int_equal(n.disconnects[WS_DISC_CLOSED] + n.disconnects[WS_DISC_ERROR] +
		                     n.disconnects[WS_DISC_SILENT],
		                 0);
	}
	fixture_teardown(&fx);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_accept_key),      cmocka_unit_test(test_frame_header),
	    cmocka_unit_test(test_parse),           cmocka_unit_test(test_server),
	    cmocka_unit_test(test_unmasked_closes), cmocka_unit_test(test_big_frame),
	    cmocka_unit_test(test_slow_consumer),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
