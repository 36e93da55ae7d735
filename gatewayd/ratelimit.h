#ifndef GW_RATELIMIT_H
#define GW_RATELIMIT_H

#include <stddef.h>
#include <stdint.h>

#include "conf.h"

/*
 * GCRA rate limiter (the "theoretical arrival time" form): a limit N/W allows a burst
 * of N and refills evenly, one request every W/N. State is one 64-bit TAT per key in a
 * sharded open-addressing table updated with compare-and-swap: lock-free, shared by
 * every worker thread. The table has a fixed capacity, so memory is bounded: entries
 * whose TAT has passed are equivalent to absent ones and are reused; when a probe
 * window is full of live entries, the one nearest to being full again is evicted.
 */

struct ratelimit;

struct ratelimit_result {
	int allowed;
	uint64_t limit;          /* N */
	uint64_t remaining;      /* requests that would pass right after this decision */
	uint64_t reset_ms;       /* until the quota is full again */
	uint64_t retry_after_ms; /* until the next request would pass (0 when allowed) */
};

/* capacity: number of keys kept at most (rounded up to a power of two). */
struct ratelimit *ratelimit_new(size_t capacity);
void ratelimit_free(struct ratelimit *rl);
/*
 * Decides one request for key (any bytes; hashed to 64 bits) under rate at now_ms
 * (monotonic). An allowed request consumes quota; a rejected one does not. 0 ok.
 * rate->count == 0 means "no limit": always allowed.
 */
int ratelimit_check(struct ratelimit *rl, const void *key, size_t keylen,
		    const struct conf_rate *rate, uint64_t now_ms, struct ratelimit_result *out);
/* The same with a microsecond clock (util_now_us), for refills finer than 1 ms. */
int ratelimit_check_us(struct ratelimit *rl, const void *key, size_t keylen,
		       const struct conf_rate *rate, uint64_t now_us, struct ratelimit_result *out);
/*
 * Fills out for a decision taken elsewhere (the shared limiter, redis.c) with the same
 * arithmetic as ratelimit_check: d_ns is how far the key's TAT is ahead of now after the
 * decision.
 */
void ratelimit_result_from(const struct conf_rate *rate, int allowed, uint64_t d_ns,
			   struct ratelimit_result *out);
/* The emission interval and tolerance of rate in ns (-1: rate does not limit). */
int ratelimit_params(const struct conf_rate *rate, uint64_t *t_ns, uint64_t *tau_ns);
/* Reads the state of key without consuming (for /usage). */
void ratelimit_peek(struct ratelimit *rl, const void *key, size_t keylen,
		    const struct conf_rate *rate, uint64_t now_ms, struct ratelimit_result *out);
/*
 * The limit of key changes from `from` to `to` (a tier upgrade): the requests it has
 * already used in the window keep counting, priced at the new rate, instead of the old
 * state being read as if it had been kept at the new rate.
 */
void ratelimit_rescale(struct ratelimit *rl, const void *key, size_t keylen,
		       const struct conf_rate *from, const struct conf_rate *to, uint64_t now_ms);
/* Forgets every key whose quota is full again; returns how many were dropped. */
size_t ratelimit_expire(struct ratelimit *rl, uint64_t now_ms);
/* Live entries (approximate under concurrency). */
size_t ratelimit_count(struct ratelimit *rl);
/* Bytes held by the table (constant after creation). */
size_t ratelimit_memory(const struct ratelimit *rl);

#endif
