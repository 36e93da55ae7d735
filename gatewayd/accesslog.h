#ifndef GW_ACCESSLOG_H
#define GW_ACCESSLOG_H

/*
 * The access log (one JSON object per request) and the recent-requests ring behind
 * /logs, `gatectl logs` and the PUB stream's `log` topic.
 *
 * Off the hot path: a worker copies a fixed-size record of the finished request into its
 * own single-producer ring (no lock, no allocation, no formatting, no syscall); the log
 * thread drains every ring every ACCESSLOG_DRAIN_MS, formats the lines, writes the file,
 * keeps the newest ACCESSLOG_RECENT records for /logs and feeds the publisher (sampled
 * `log` messages and the per-identity counts of the `stats` message). When a ring is full
 * the record is dropped and counted: a slow disk never blocks a worker.
 */

#include <stdint.h>

#include <cjson/cJSON.h>

struct exchange;
struct backend;
struct config;

#define ACCESSLOG_RING 4096 /* records per worker ring (a power of two) */
#define ACCESSLOG_RECENT 1000
#define ACCESSLOG_DRAIN_MS 20

enum accesslog_rl { ACCESSLOG_RL_NONE, ACCESSLOG_RL_ALLOWED, ACCESSLOG_RL_REJECTED };

/* One finished request, as the worker saw it (strings truncated, NUL-terminated). */
struct accesslog_rec {
	uint64_t mono_us; /* monotonic time of the response (util_now_us) */
	uint64_t latency_us;
	uint64_t bytes; /* response bytes sent to the client (body and head) */
	uint64_t rl_limit, rl_remaining;
	uint16_t status;
	uint8_t rl; /* enum accesslog_rl */
	uint8_t client_ip[16];
	char request_id[48];
	char identity[24];   /* the identity's name: "u:42", "k:" + 12 hex of the key hash, "" */
	char key_prefix[16]; /* an ownerless API key's public prefix ("gk_ab12cd"), else "" */
	char tier[16];
	char method[12];
	char path[160]; /* path and query as received (redacted when formatted) */
	char backend[32];
	char dc[32];
	char cache[8];
	char country[4];
	char error[24]; /* the error code of a gateway error response, or "" */
};

struct accesslog_ring {
	_Atomic uint64_t head; /* written by the worker */
	_Atomic uint64_t tail; /* written by the log thread */
	_Atomic uint64_t dropped;
	struct accesslog_rec rec[ACCESSLOG_RING];
};

/* A new ring for one worker (the worker owns it; freed with free()). */
struct accesslog_ring *accesslog_ring_new(void);

/*
 * Records the finished exchange x (the worker's thread only): status sent, the backend
 * that answered (NULL: the gateway did), response bytes, an error code (or NULL).
 */
void accesslog_request(struct exchange *x, int status, const struct backend *b, uint64_t bytes,
                       const char *error);

/* Copies the request line aside before a streamed body overwrites the head (worker). */
void accesslog_save_target(struct exchange *x);

/* Starts the log thread with cfg's access_log target. 0, or -1 with a message in err. */
int accesslog_start(const struct config *cfg, char *err, size_t errlen);
/* Takes a reloaded configuration's target (a changed file is opened, the old closed). */
void accesslog_reconfigure(const struct config *cfg);
/* Reopens the log file at the log thread's next pass (SIGUSR1, reload: logrotate). */
void accesslog_reopen(void);
/* Drains what is left, closes the file and stops the thread. Safe when not started. */
void accesslog_stop(void);

/* The newest n entries, oldest first, as JSON objects; the caller frees the array. */
cJSON *accesslog_recent_json(int n);
/* Lines formatted and records dropped (rings full) since start-up. */
uint64_t accesslog_lines(void);
uint64_t accesslog_dropped(void);

/*
 * Formats one record as a JSON object (no newline) into buf; the query values of
 * credential-like parameters are replaced by "REDACTED". Returns the length, or 0 when
 * cap is too small. wall_offset_us converts monotonic to Unix time. For the unit tests.
 */
size_t accesslog_format(const struct accesslog_rec *r, int64_t wall_offset_us, char *buf,
                        size_t cap);

#endif
