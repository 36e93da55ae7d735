#ifndef GW_WS_H
#define GW_WS_H

/*
 * The gateway as a WebSocket server (RFC 6455) for the dashboard's live feed at GET /ws.
 * Different from proxy.c's tunnel, which relays a backend's WebSocket byte for byte:
 * here the gateway answers the handshake and speaks the framing itself.
 *
 * Threads: ws_broadcast() may be called from any thread; everything else runs on the
 * worker that owns the connection. A broadcast message is encoded once as a frame,
 * reference counted, and put in every worker's inbox (mutex + eventfd); each worker
 * copies the reference into the bounded output queue of each of its clients.
 */

#include <stddef.h>
#include <stdint.h>

struct client;
struct exchange;
struct worker;

/* Largest client frame accepted (payload bytes); larger ones close with 1009. */
#define WS_MAX_FRAME 65536
/* Output queued for one client before broadcasts to it are dropped. */
#define WS_QUEUE_MAX (1024 * 1024)
/* A client whose queue stays full this long is disconnected. */
#define WS_SLOW_CLOSE_MS 10000
#define WS_PING_MS 30000
/* A client that sent nothing (not even a pong) for this long is disconnected. */
#define WS_SILENT_MS 75000
/* After our close frame, how long the peer has to answer with its own. */
#define WS_CLOSE_WAIT_MS 2000

enum ws_opcode {
	WS_OP_CONT = 0x0,
	WS_OP_TEXT = 0x1,
	WS_OP_BINARY = 0x2,
	WS_OP_CLOSE = 0x8,
	WS_OP_PING = 0x9,
	WS_OP_PONG = 0xa,
};

/* ---- pure protocol helpers (no I/O; unit-tested and fuzzed) ---- */

#define WS_ACCEPT_LEN 28 /* base64 of a SHA-1 */

/*
 * Sec-WebSocket-Accept for a Sec-WebSocket-Key (RFC 6455 4.2.2): out gets 28 characters
 * and a NUL. -1 when key is not the base64 form of 16 bytes.
 */
int ws_accept_key(const char *key, size_t len, char out[WS_ACCEPT_LEN + 1]);

/* Writes a server frame header (FIN set, unmasked) into out (>= 10 bytes); its length. */
size_t ws_frame_header(uint8_t *out, enum ws_opcode op, uint64_t payload_len);

struct ws_frame {
	uint8_t fin;
	uint8_t opcode;
	uint8_t masked;
	uint8_t mask[4];
	uint32_t header_len;
	uint64_t payload_len;
};

enum ws_parse_result {
	WS_AGAIN = 0,       /* the frame is not complete in the buffer */
	WS_E_PROTOCOL = -1, /* reserved bits or opcode, fragmented or long control frame */
	WS_E_UNMASKED = -2, /* a client frame without a mask (RFC 6455 5.1) */
	WS_E_TOO_BIG = -3,  /* payload over max_payload */
};

/*
 * Parses the client frame at buf[0..len): the whole frame's length (header + payload)
 * when all of it is in buf, with *f filled; WS_AGAIN; or a negative enum ws_parse_result.
 * The payload stays masked: see ws_unmask.
 */
int64_t ws_frame_parse(const uint8_t *buf, size_t len, uint64_t max_payload, struct ws_frame *f);

/* XORs p[0..n) with the 4-byte mask, in place. */
void ws_unmask(uint8_t *p, size_t n, const uint8_t mask[4]);

/* ---- the server ---- */

/*
 * GET /ws (router.c's built-in table): validates the upgrade request, answers 101 and
 * turns the connection into a WebSocket client of its worker, or answers 400.
 */
void ws_handle_upgrade(struct exchange *x);

/*
 * Sends json[0..len) as one text frame to every WebSocket client of every worker. Any
 * thread; never blocks on a client; cheap (one atomic load) when no client is connected.
 */
void ws_broadcast(const char *json, size_t len);

/* Number of connected WebSocket clients (all workers). */
uint32_t ws_client_count(void);
/* Broadcast messages dropped for slow clients since start (all clients). */
uint64_t ws_dropped_total(void);

/* Why a /ws connection ended (gatewayd_ws_disconnects_total{reason}). */
enum ws_disconnect {
	WS_DISC_CLOSED, /* a closing handshake: the peer's, or ours on drain */
	WS_DISC_ERROR,  /* protocol error, reset or EOF without a close frame */
	WS_DISC_SILENT, /* nothing heard for WS_SILENT_MS */
	WS_DISC_SLOW,   /* its queue stayed full for WS_SLOW_CLOSE_MS */
	WS_DISC_COUNT,
};

/* Totals since start over all workers (any thread: relaxed loads of per-worker counters). */
struct ws_counts {
	uint64_t sent;    /* broadcast messages written to a client, once per client */
	uint64_t dropped; /* broadcast messages not queued for a client (queue or inbox full) */
	uint64_t disconnects[WS_DISC_COUNT];
};
void ws_counts(struct ws_counts *out);

struct mbuf;
/* Appends the gatewayd_ws_* families (gauge of clients, messages, disconnects) to o. */
void ws_metrics_write(struct mbuf *o);

/* Per-worker state: made once per worker before its thread starts. */
struct ws_worker *ws_worker_new(struct worker *w);
/* Frees it (no client left; the worker's loop no longer runs). */
void ws_worker_free(struct ws_worker *ww);
/* Pings, silence and slow-consumer checks, close on drain; from the worker's tick. */
void ws_worker_tick(struct worker *w);

/*
 * Makes c a WebSocket client of its worker (state CS_WS): head[0..head_len) is written
 * first (the 101), early[0..early_len) are bytes the client sent after its handshake.
 * 0, or -1 when early is longer than a frame. The caller releases c's exchange.
 */
int ws_client_attach(struct client *c, const char *head, size_t head_len, const void *early,
                     size_t early_len);
/* client.c: readiness change of a client in state CS_WS. */
void ws_client_run(struct client *c);
/* client.c (client_close): forgets the connection's WebSocket state, if any. */
void ws_client_free(struct client *c);

#endif
