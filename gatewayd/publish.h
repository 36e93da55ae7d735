#ifndef GW_PUBLISH_H
#define GW_PUBLISH_H

/*
 * The live stream (SPEC section 7): an nng PUB socket on cfg->publish carrying
 * `TOPIC SP JSON` messages — `stats` once a second, sampled `log` lines, operator
 * `event`s — and the same JSON to the dashboard's WebSocket clients.
 *
 * The log thread (accesslog.c) drives it: publish_count() and publish_log() for every
 * drained request, publish_second() once a second. Only that thread calls those three;
 * publish_message() and publish_event() may be called from any thread.
 */

#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "accesslog.h"

struct config;

/* log messages a second: every request up to this rate, then one in N, N from the last
 * second's rate, so that the stream stays near this rate and spread over the second.
 * More than a person reads, and than gatetop's stream pane shows at its 1 Hz redraw;
 * each message costs every subscriber a wake-up (and /ws clients a frame). */
#define PUBLISH_LOG_PER_SECOND 25
#define PUBLISH_TOP_KEYS 20

/* Opens the PUB socket on cfg->publish. 0, or -1 with a message in err. */
int publish_start(const struct config *cfg, char *err, size_t errlen);
void publish_stop(void);

/* Sends one message to PUB subscribers and WebSocket clients (any thread). */
void publish_message(const char *topic, const char *json, size_t len);
/* An `event` message with a free-text message (any thread). */
void publish_event(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* --- the log thread only --- */

/* Counts one finished request for this second's top-identities list. */
void publish_count(const struct accesslog_rec *r);
/* 1 when the next publish_log() would send: the caller formats the line only then. */
int publish_log_wanted(void);
/* A formatted access-log line ({"time":...}) as a `log` message. */
void publish_log(const char *line, size_t len);
/* Builds and sends the `stats` message; ends the second. */
void publish_second(int64_t wall_offset_us);

/*
 * The `stats` object without sending it (the caller frees it): the /stats object plus
 * the rates of the last interval. For the log thread and the tests.
 */
cJSON *publish_stats_json(int64_t wall_offset_us);

/* The p-quantile (0..1) in ms of histogram counts over metrics_bucket_us (the unit tests). */
double publish_quantile_ms(const uint64_t *counts, int nbuckets, double p);

#endif
