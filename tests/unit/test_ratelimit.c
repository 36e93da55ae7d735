/*
 * Unit tests for gatewayd/ratelimit.c: the GCRA arithmetic with exact numbers, the
 * bounded table (expiry, eviction under a flood) and lock-free correctness under threads.
 */

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "ratelimit.h"

#define SEC 1000ULL /* ms */

static struct ratelimit_result res;

static struct conf_rate
R(uint64_t count, uint64_t period_ms) {
	struct conf_rate r = {.count = count, .period_ms = period_ms};

	return r;
}

/* One request for key at now_ms; returns res.allowed. */
static int
hit(struct ratelimit *rl, const char *key, struct conf_rate r, uint64_t now_ms)
{
	assert_int_equal(ratelimit_check(rl, key, strlen(key), &r, now_ms, &res), 0);
	return res.allowed;
}

/* How many of n requests at now_ms pass. */
static unsigned
hits(struct ratelimit *rl, const char *key, struct conf_rate r, uint64_t now_ms, unsigned n)
{
	unsigned ok = 0;

	while (n-- > 0)
		ok += (unsigned)hit(rl, key, r, now_ms);
	return ok;
}

static int
setup(void **state)
{
	*state = ratelimit_new(65536);
	return 0;
}

static int
teardown(void **state)
{
	ratelimit_free(*state);
	return 0;
}

/* --- GCRA semantics ---------------------------------------------------------------------- */

static void
test_fresh_key_allows_burst_exactly(void **state)
{
	struct ratelimit *rl = *state;

	for (uint64_t k = 1; k <= 5; k++) {
		assert_true(hit(rl, "alice", R(5, 60 * SEC), 1000));
		assert_int_equal(res.limit, 5);
		assert_int_equal(res.remaining, 5 - k);
		assert_int_equal(res.reset_ms, k * 12000);
		assert_int_equal(res.retry_after_ms, 0);
	}
}

static void
test_sixth_rejected_with_retry_after(void **state)
{
	struct ratelimit *rl = *state;

	assert_int_equal(hits(rl, "alice", R(5, 60 * SEC), 0, 5), 5);
	assert_false(hit(rl, "alice", R(5, 60 * SEC), 0));
	assert_int_equal(res.limit, 5);
	assert_int_equal(res.remaining, 0);
	assert_int_equal(res.retry_after_ms, 12000);
	assert_int_equal(res.reset_ms, 60000);
	/* later, the wait shrinks by exactly the time that passed */
	assert_false(hit(rl, "alice", R(5, 60 * SEC), 4321));
	assert_int_equal(res.retry_after_ms, 12000 - 4321);
	assert_int_equal(res.reset_ms, 60000 - 4321);
}

static void
test_refill_one_after_interval(void **state)
{
	struct ratelimit *rl = *state;

	assert_int_equal(hits(rl, "k", R(5, 60 * SEC), 0, 5), 5);
	assert_false(hit(rl, "k", R(5, 60 * SEC), 11999));
	assert_int_equal(res.retry_after_ms, 1);
	/* exactly at 12 s one request passes, and only one */
	assert_true(hit(rl, "k", R(5, 60 * SEC), 12000));
	assert_int_equal(res.remaining, 0);
	assert_int_equal(res.reset_ms, 60000);
	assert_false(hit(rl, "k", R(5, 60 * SEC), 12000));
	assert_int_equal(res.retry_after_ms, 12000);
	assert_int_equal(hits(rl, "k", R(5, 60 * SEC), 24000, 10), 1);
}

static void
test_retry_after_is_exact(void **state)
{
	struct ratelimit *rl = *state;

	/* waiting retry_after_ms always suffices, and waiting 1 ms less never does */
	assert_int_equal(hits(rl, "k", R(5, 60 * SEC), 500, 5), 5);
	for (uint64_t now = 500; now < 100000; now += 777) {
		uint64_t wait;

		if (hit(rl, "k", R(5, 60 * SEC), now))
			continue;
		wait = res.retry_after_ms;
		assert_true(wait > 0);
		assert_false(hit(rl, "k", R(5, 60 * SEC), now + wait - 1));
		assert_true(hit(rl, "k", R(5, 60 * SEC), now + wait));
	}
}

static void
test_no_double_burst_at_boundary(void **state)
{
	struct ratelimit *rl = *state;

	/* a fixed window would allow 5 at 59 s and 5 more at 61 s */
	assert_int_equal(hits(rl, "k", R(5, 60 * SEC), 59 * SEC, 5), 5);
	assert_int_equal(hits(rl, "k", R(5, 60 * SEC), 61 * SEC, 5), 0);
	assert_int_equal(hits(rl, "k", R(5, 60 * SEC), 70999, 5), 0);
	assert_int_equal(hits(rl, "k", R(5, 60 * SEC), 71 * SEC, 5), 1);
	assert_int_equal(hits(rl, "k", R(5, 60 * SEC), 119 * SEC, 5), 4);
}

static void
test_sustained_rate(void **state)
{
	struct ratelimit *rl = *state;
	unsigned ok = 0;

	/* one attempt a second for 10 minutes: the burst, then one per 12 s */
	for (uint64_t t = 0; t <= 600; t++)
		ok += (unsigned)hit(rl, "k", R(5, 60 * SEC), t * SEC);
	assert_int_equal(ok, 5 + 600 / 12);
}

static void
test_rejected_does_not_consume(void **state)
{
	struct ratelimit *rl = *state;

	assert_int_equal(hits(rl, "k", R(5, 60 * SEC), 0, 5), 5);
	for (uint64_t t = 0; t < 12000; t += 10)
		assert_false(hit(rl, "k", R(5, 60 * SEC), t));
	assert_true(hit(rl, "k", R(5, 60 * SEC), 12000));
}

static void
test_remaining_after_kth(void **state)
{
	struct ratelimit *rl = *state;

	for (uint64_t k = 1; k <= 20; k++) {
		assert_true(hit(rl, "basic", R(20, 60 * SEC), 5000));
		assert_int_equal(res.remaining, 20 - k);
		assert_int_equal(res.reset_ms, k * 3000);
	}
	assert_false(hit(rl, "basic", R(20, 60 * SEC), 5000));
	assert_int_equal(res.retry_after_ms, 3000);
}

static void
test_partial_refill(void **state)
{
	struct ratelimit *rl = *state;

	assert_int_equal(hits(rl, "k", R(5, 60 * SEC), 0, 5), 5);
	/* 30 s refill two and a half requests: two pass, the third waits the half */
	assert_true(hit(rl, "k", R(5, 60 * SEC), 30 * SEC));
	assert_int_equal(res.remaining, 1);
	assert_true(hit(rl, "k", R(5, 60 * SEC), 30 * SEC));
	assert_int_equal(res.remaining, 0);
	assert_false(hit(rl, "k", R(5, 60 * SEC), 30 * SEC));
	assert_int_equal(res.retry_after_ms, 6000);
	assert_int_equal(res.reset_ms, 54000);
}

static void
test_full_recovery(void **state)
{
	struct ratelimit *rl = *state;

	assert_int_equal(hits(rl, "k", R(5, 60 * SEC), 0, 9), 5);
	assert_int_equal(hits(rl, "k", R(5, 60 * SEC), 60 * SEC, 9), 5);
	assert_false(hit(rl, "k", R(5, 60 * SEC), 60 * SEC));
	assert_int_equal(res.retry_after_ms, 12000);
	/* a long idle time does not bank more than N */
	assert_int_equal(hits(rl, "k", R(5, 60 * SEC), 3600 * SEC, 9), 5);
}

static void
test_keys_are_independent(void **state)
{
	struct ratelimit *rl = *state;
	struct conf_rate r = R(2, 10 * SEC);

	assert_int_equal(hits(rl, "a", r, 0, 5), 2);
	assert_int_equal(hits(rl, "b", r, 0, 5), 2);
	/* the key is its bytes: a prefix or an extra NUL is another key */
	assert_int_equal(ratelimit_check(rl, "a\0", 2, &r, 0, &res), 0);
	assert_true(res.allowed);
	assert_int_equal(ratelimit_check(rl, "", 0, &r, 0, &res), 0);
	assert_true(res.allowed);
	assert_int_equal(ratelimit_check(rl, "", 0, &r, 0, &res), 0);
	assert_true(res.allowed);
	assert_int_equal(ratelimit_check(rl, "", 0, &r, 0, &res), 0);
	assert_false(res.allowed);
}

static void
test_unlimited(void **state)
{
	struct ratelimit *rl = *state;

	for (int i = 0; i < 1000; i++) {
		assert_true(hit(rl, "k", R(0, 60 * SEC), 0));
		assert_int_equal(res.limit, 0);
		assert_int_equal(res.retry_after_ms, 0);
	}
	/* no period is no limit either, rather than a division by zero */
	assert_int_equal(hits(rl, "k", R(5, 0), 0, 100), 100);
	assert_int_equal(ratelimit_check(rl, "k", 1, NULL, 0, &res), 0);
	assert_true(res.allowed);
	assert_int_equal(ratelimit_count(rl), 0);
}

static void
test_tiers(void **state)
{
	struct ratelimit *rl = *state;
	static const uint64_t n[] = {5, 20, 100, 1000};
	char key[32];

	/* the SPEC's tiers, each a burst of exactly N and the next one after 60 s / N */
	for (size_t i = 0; i < sizeof n / sizeof n[0]; i++) {
		snprintf(key, sizeof key, "tier%zu", i);
		assert_int_equal(hits(rl, key, R(n[i], 60 * SEC), 0, (unsigned)n[i] + 10), n[i]);
		assert_false(hit(rl, key, R(n[i], 60 * SEC), 0));
		assert_int_equal(res.retry_after_ms, 60000 / n[i]);
		assert_int_equal(hits(rl, key, R(n[i], 60 * SEC), 60000 / n[i], 10), 1);
	}
}

static void
test_uneven_interval(void **state)
{
	struct ratelimit *rl = *state;

	/* 60 s / 7 is not whole: the burst stays exactly 7, the waits round up */
	assert_int_equal(hits(rl, "k", R(7, 60 * SEC), 0, 20), 7);
	assert_false(hit(rl, "k", R(7, 60 * SEC), 0));
	assert_int_equal(res.retry_after_ms, 8572);
	assert_false(hit(rl, "k", R(7, 60 * SEC), 8571));
	assert_true(hit(rl, "k", R(7, 60 * SEC), 8572));
	/* never more than 7 + elapsed/interval over a long run */
	{
		unsigned ok = 7 + 1;

		for (uint64_t t = 8573; t <= 600 * SEC; t += 100)
			ok += (unsigned)hit(rl, "k", R(7, 60 * SEC), t);
		assert_int_equal(ok, 7 + 69); /* 70 intervals are 600.00000004 s */
	}
}

static void
test_high_rate(void **state)
{
	struct ratelimit *rl = *state;
	struct conf_rate r = R(1000000, 1 * SEC);

	/* one request per microsecond: sub-millisecond intervals stay exact */
	assert_int_equal(hits(rl, "fast", r, 10, 1000010), 1000000);
	assert_false(hit(rl, "fast", r, 10));
	assert_int_equal(res.retry_after_ms, 1); /* 1 us, rounded up */
	assert_int_equal(res.reset_ms, 1000);
	assert_int_equal(hits(rl, "fast", r, 11, 2000), 1000);
	assert_int_equal(hits(rl, "fast", r, 13, 3000), 2000);
}

static void
test_very_high_rate(void **state)
{
	struct ratelimit *rl = *state;
	struct conf_rate r = R(100000000, 1 * SEC);

	/* 100000000/1s is one request per 10 ns */
	assert_true(hit(rl, "vfast", r, 0));
	assert_int_equal(res.remaining, 99999999);
	assert_int_equal(res.reset_ms, 1);
	assert_int_equal(hits(rl, "vfast", r, 0, 999), 999);
	assert_int_equal(res.remaining, 99999000);
	ratelimit_peek(rl, "vfast", 5, &r, 1, &res);
	assert_int_equal(res.remaining, 100000000);
}

static void
test_check_us(void **state)
{
	struct ratelimit *rl = *state;
	struct conf_rate r = R(10, 1); /* 10 per ms: one per 100 us */

	for (int i = 0; i < 10; i++) {
		assert_int_equal(ratelimit_check_us(rl, "us", 2, &r, 5000, &res), 0);
		assert_true(res.allowed);
	}
	ratelimit_check_us(rl, "us", 2, &r, 5000, &res);
	assert_false(res.allowed);
	ratelimit_check_us(rl, "us", 2, &r, 5099, &res);
	assert_false(res.allowed);
	ratelimit_check_us(rl, "us", 2, &r, 5100, &res);
	assert_true(res.allowed);
	ratelimit_check_us(rl, "us", 2, &r, 5100, &res);
	assert_false(res.allowed);
	/* the ms and us entry points share the state: 6 ms is 6000 us */
	assert_true(hit(rl, "us", r, 6));
	assert_int_equal(res.remaining, 9 - 1);
}

static void
test_time_going_backwards(void **state)
{
	struct ratelimit *rl = *state;

	/* threads read the clock at slightly different moments: an older now is fine */
	assert_int_equal(hits(rl, "k", R(5, 60 * SEC), 10 * SEC, 5), 5);
	assert_false(hit(rl, "k", R(5, 60 * SEC), 5 * SEC));
	assert_int_equal(res.retry_after_ms, 17000);
	assert_int_equal(res.reset_ms, 65000);
	assert_true(hit(rl, "k", R(5, 60 * SEC), 22 * SEC));
}

static void
test_extreme_values(void **state)
{
	struct ratelimit *rl = *state;

	assert_true(hit(rl, "week", R(1, 7 * 24 * 3600 * SEC), 0));
	assert_false(hit(rl, "week", R(1, 7 * 24 * 3600 * SEC), 0));
	assert_int_equal(res.retry_after_ms, 7 * 24 * 3600 * SEC);
	/* periods and clocks near 2^64 saturate instead of wrapping */
	assert_true(hit(rl, "huge", R(1, UINT64_MAX), 0));
	assert_false(hit(rl, "huge", R(1, UINT64_MAX), 1000));
	assert_true(res.retry_after_ms > 1000000000000ULL);
	assert_true(hit(rl, "late", R(3, 60 * SEC), UINT64_MAX));
	assert_true(hit(rl, "many", R(UINT64_MAX, 1), 0));
}

static void
test_limit_change_keeps_state(void **state)
{
	struct ratelimit *rl = *state;

	/* a tier upgrade keeps what was used: 5 used of 20 leaves 15 */
	assert_int_equal(hits(rl, "user", R(5, 60 * SEC), 0, 5), 5);
	assert_int_equal(hits(rl, "user", R(20, 60 * SEC), 0, 100), 0);
	assert_int_equal(hits(rl, "user", R(20, 60 * SEC), 60 * SEC, 100), 20);
}

/* --- peek ---------------------------------------------------------------------------- */

static void
test_peek_fresh(void **state)
{
	struct ratelimit *rl = *state;
	struct conf_rate r = R(5, 60 * SEC);

	ratelimit_peek(rl, "nobody", 6, &r, 1000, &res);
	assert_true(res.allowed);
	assert_int_equal(res.limit, 5);
	assert_int_equal(res.remaining, 5);
	assert_int_equal(res.reset_ms, 0);
	assert_int_equal(res.retry_after_ms, 0);
	assert_int_equal(ratelimit_count(rl), 0);
}

static void
test_peek_does_not_consume(void **state)
{
	struct ratelimit *rl = *state;
	struct conf_rate r = R(5, 60 * SEC);

	assert_int_equal(hits(rl, "k", r, 0, 2), 2);
	for (int i = 0; i < 100; i++) {
		ratelimit_peek(rl, "k", 1, &r, 0, &res);
		assert_true(res.allowed);
		assert_int_equal(res.remaining, 3);
		assert_int_equal(res.reset_ms, 24000);
	}
	assert_int_equal(hits(rl, "k", r, 0, 9), 3);
	ratelimit_peek(rl, "k", 1, &r, 6000, &res);
	assert_false(res.allowed);
	assert_int_equal(res.remaining, 0);
	assert_int_equal(res.retry_after_ms, 6000);
	assert_int_equal(res.reset_ms, 54000);
}

/* --- table: count, expiry, eviction ---------------------------------------------------- */

static void
test_count_and_memory(void **state)
{
	struct ratelimit *rl = *state;
	size_t mem = ratelimit_memory(rl);

	assert_true(mem >= 65536 * 16);
	assert_int_equal(ratelimit_count(rl), 0);
	hits(rl, "a", R(5, 60 * SEC), 0, 3);
	hits(rl, "b", R(5, 60 * SEC), 0, 30);
	hits(rl, "c", R(5, 60 * SEC), 0, 1);
	assert_int_equal(ratelimit_count(rl), 3);
	assert_int_equal(ratelimit_memory(rl), mem);
}

static void
test_expire(void **state)
{
	struct ratelimit *rl = *state;
	char key[32];

	for (int i = 0; i < 100; i++) {
		snprintf(key, sizeof key, "one%d", i);
		hit(rl, key, R(5, 60 * SEC), 0); /* full again at 12 s */
		snprintf(key, sizeof key, "three%d", i);
		hits(rl, key, R(5, 60 * SEC), 0, 3); /* full again at 36 s */
	}
	assert_int_equal(ratelimit_count(rl), 200);
	assert_int_equal(ratelimit_expire(rl, 11999), 0);
	assert_int_equal(ratelimit_expire(rl, 12000), 100);
	assert_int_equal(ratelimit_count(rl), 100);
	assert_int_equal(ratelimit_expire(rl, 35999), 0);
	assert_int_equal(ratelimit_expire(rl, 36000), 100);
	assert_int_equal(ratelimit_count(rl), 0);
	/* a swept key starts over with a full quota */
	assert_true(hit(rl, "one7", R(5, 60 * SEC), 36000));
	assert_int_equal(res.remaining, 4);
	assert_int_equal(ratelimit_count(rl), 1);
}

static void
test_expired_entry_equals_absent(void **state)
{
	struct ratelimit *rl = *state;

	/* without a sweep, an expired entry reads exactly like a new key */
	hits(rl, "k", R(5, 60 * SEC), 0, 5);
	assert_true(hit(rl, "k", R(5, 60 * SEC), 60 * SEC));
	assert_int_equal(res.remaining, 4);
	assert_int_equal(res.reset_ms, 12000);
	assert_int_equal(ratelimit_count(rl), 1);
}

static void
test_capacity_rounding(void **state)
{
	struct ratelimit *a = ratelimit_new(1000), *b = ratelimit_new(0);
	char key[32];

	for (int i = 0; i < 5000; i++) {
		snprintf(key, sizeof key, "k%d", i);
		hit(a, key, R(5, 60 * SEC), 0);
		hit(b, key, R(5, 60 * SEC), 0);
	}
	/* 1000 rounds up to 1024; 0 to the smallest table */
	assert_int_equal(ratelimit_count(a), 1024);
	assert_true(ratelimit_count(b) >= 1);
	assert_true(ratelimit_count(b) <= 16);
	assert_true(ratelimit_memory(b) < ratelimit_memory(a));
	ratelimit_free(a);
	ratelimit_free(b);
	ratelimit_free(NULL);
}

static void
test_flood_bounded(void **state)
{
	struct ratelimit *rl = ratelimit_new(4096);
	size_t mem = ratelimit_memory(rl);
	char key[32];

	/* a million one-shot keys: memory and count never grow past the capacity */
	for (unsigned i = 0; i < 1000000; i++) {
		snprintf(key, sizeof key, "random-%u", i * 2654435761u);
		assert_true(hit(rl, key, R(5, 60 * SEC), i / 1000));
		if (i % 4096 == 0)
			assert_true(ratelimit_count(rl) <= 4096);
	}
	assert_int_equal(ratelimit_count(rl), 4096);
	assert_int_equal(ratelimit_memory(rl), mem);
	assert_true(mem < 4096 * 16 + 64 * 64 + 1024);
	/* once everything has expired, a sweep empties the table */
	assert_int_equal(ratelimit_expire(rl, 10000 * SEC), 4096);
	assert_int_equal(ratelimit_count(rl), 0);
	ratelimit_free(rl);
}

static void
test_eviction_spares_heavy_key(void **state)
{
	struct ratelimit *rl = ratelimit_new(16);
	char key[32];

	/* the evicted entry is the one nearest to full, never a key that used its quota */
	assert_int_equal(hits(rl, "heavy", R(5, 60 * SEC), 0, 5), 5);
	for (int i = 0; i < 1000; i++) {
		snprintf(key, sizeof key, "light%d", i);
		assert_true(hit(rl, key, R(5, 60 * SEC), 0));
	}
	assert_true(ratelimit_count(rl) <= 16);
	assert_false(hit(rl, "heavy", R(5, 60 * SEC), 0));
	assert_int_equal(res.retry_after_ms, 12000);
	ratelimit_free(rl);
}

static void
test_eviction_forgets_light_key(void **state)
{
	struct ratelimit *rl = ratelimit_new(16);
	char key[32];

	/* a light key among heavy ones is the one evicted; it comes back with a full quota */
	assert_true(hit(rl, "light", R(5, 60 * SEC), 0));
	for (int i = 0; i < 200; i++) {
		snprintf(key, sizeof key, "heavy%d", i);
		hits(rl, key, R(5, 60 * SEC), 0, 5);
	}
	assert_true(hit(rl, "light", R(5, 60 * SEC), 0));
	assert_int_equal(res.remaining, 4);
	ratelimit_free(rl);
}

static void
test_expired_slots_reused(void **state)
{
	struct ratelimit *rl = ratelimit_new(16);
	char key[32];

	for (int i = 0; i < 100; i++) {
		snprintf(key, sizeof key, "old%d", i);
		hit(rl, key, R(5, 60 * SEC), 0);
	}
	/* at 12 s everything is expired: new keys reuse slots without a sweep */
	for (int i = 0; i < 100; i++) {
		snprintf(key, sizeof key, "new%d", i);
		assert_true(hit(rl, key, R(5, 60 * SEC), 12 * SEC));
		assert_int_equal(res.remaining, 4);
	}
	assert_true(ratelimit_count(rl) <= 16);
	ratelimit_free(rl);
}

/* --- threads ------------------------------------------------------------------------------ */

#define NTHREADS 4

struct hammer {
	struct ratelimit *rl;
	pthread_barrier_t *start;
	int id;
	unsigned allowed;
	unsigned per_key[256];
};

static void *
hammer_same_key(void *arg)
{
	struct hammer *h = arg;
	struct conf_rate r = R(1000, 60 * SEC);
	struct ratelimit_result out;

	pthread_barrier_wait(h->start);
	for (int i = 0; i < 5000; i++) {
		ratelimit_check(h->rl, "shared", 6, &r, 777, &out);
		h->allowed += (unsigned)out.allowed;
	}
	return NULL;
}

static unsigned
run_threads(struct ratelimit *rl, void *(*fn)(void *), struct hammer *hs)
{
	pthread_t th[NTHREADS];
	pthread_barrier_t start;
	unsigned total = 0;

	pthread_barrier_init(&start, NULL, NTHREADS);
	for (int i = 0; i < NTHREADS; i++) {
		hs[i].rl = rl;
		hs[i].start = &start;
		hs[i].id = i;
		assert_int_equal(pthread_create(&th[i], NULL, fn, &hs[i]), 0);
	}
	for (int i = 0; i < NTHREADS; i++) {
		pthread_join(th[i], NULL);
		total += hs[i].allowed;
	}
	pthread_barrier_destroy(&start);
	return total;
}

static void
test_threads_same_key_exact(void **state)
{
	for (int round = 0; round < 5; round++) {
		struct ratelimit *rl = ratelimit_new(4096);
		struct hammer hs[NTHREADS];

		memset(hs, 0, sizeof hs);
		/* 20000 attempts from 4 threads on one fresh key: exactly the burst passes */
		assert_int_equal(run_threads(rl, hammer_same_key, hs), 1000);
		assert_int_equal(ratelimit_count(rl), 1);
		ratelimit_free(rl);
	}
}

static void *
hammer_fresh_keys(void *arg)
{
	struct hammer *h = arg;
	struct conf_rate r = R(10, 60 * SEC);
	struct ratelimit_result out;
	char key[32];

	pthread_barrier_wait(h->start);
	for (int pass = 0; pass < 20; pass++)
		for (int i = 0; i < 256; i++) {
			/* every thread meets every key while it is new, in a different order */
			int k = (i * (2 * h->id + 1) + pass) & 255;

			snprintf(key, sizeof key, "fresh%d", k);
			ratelimit_check(h->rl, key, strlen(key), &r, 1000, &out);
			h->allowed += (unsigned)out.allowed;
			h->per_key[k] += (unsigned)out.allowed;
		}
	return NULL;
}

static void
test_threads_new_keys_never_doubled(void **state)
{
	struct ratelimit *rl = ratelimit_new(65536);
	struct hammer hs[NTHREADS];

	memset(hs, 0, sizeof hs);
	/* a key claimed by two threads at once must not get two quotas */
	assert_int_equal(run_threads(rl, hammer_fresh_keys, hs), 256 * 10);
	for (int k = 0; k < 256; k++) {
		unsigned sum = 0;

		for (int i = 0; i < NTHREADS; i++)
			sum += hs[i].per_key[k];
		assert_int_equal(sum, 10);
	}
	assert_int_equal(ratelimit_count(rl), 256);
	ratelimit_free(rl);
}

static void *
hammer_flood(void *arg)
{
	struct hammer *h = arg;
	struct conf_rate hot = R(1000, 60 * SEC), cold = R(1000000, 60 * SEC);
	struct ratelimit_result out;
	char key[32];

	pthread_barrier_wait(h->start);
	for (unsigned i = 0; i < 50000; i++) {
		/*
		 * Random keys force claims and evictions around the hot key; their TAT (60 us
		 * ahead) is always below the hot key's, so it is never the one evicted.
		 */
		snprintf(key, sizeof key, "flood-%d-%u", h->id, i * 2654435761u);
		ratelimit_check(h->rl, key, strlen(key), &cold, 5000, &out);
		ratelimit_check(h->rl, "hot", 3, &hot, 5000, &out);
		h->allowed += (unsigned)out.allowed;
		if (i % 1000 == 0 && h->id == 0)
			ratelimit_expire(h->rl, 5000);
	}
	return NULL;
}

static void
test_threads_flood_with_hot_key(void **state)
{
	struct ratelimit *rl = ratelimit_new(256);
	struct hammer hs[NTHREADS];

	memset(hs, 0, sizeof hs);
	assert_int_equal(run_threads(rl, hammer_flood, hs), 1000);
	assert_true(ratelimit_count(rl) <= 256);
	ratelimit_free(rl);
}

static void *
hammer_time(void *arg)
{
	struct hammer *h = arg;
	struct conf_rate r = R(100, 1 * SEC);
	struct ratelimit_result out;

	pthread_barrier_wait(h->start);
	/* every thread walks the same clock from 0 to 10 s, 1 ms at a time */
	for (uint64_t t = 0; t <= 10 * SEC; t++) {
		ratelimit_check(h->rl, "clock", 5, &r, t, &out);
		h->allowed += (unsigned)out.allowed;
	}
	return NULL;
}

static void
test_threads_rate_over_time(void **state)
{
	struct ratelimit *rl = ratelimit_new(64);
	struct hammer hs[NTHREADS];
	unsigned total;

	memset(hs, 0, sizeof hs);
	/*
	 * 100/1s over 10 s: the burst plus one per 10 ms elapsed, exactly. Threads run at
	 * their own pace, so one may be at t while another is still at t - 5 ms; a lagging
	 * thread is only refused more, and the TAT never falls behind the clock, so the
	 * total is set by the last instant alone.
	 */
	total = run_threads(rl, hammer_time, hs);
	assert_int_equal(total, 100 + 1000);
	ratelimit_free(rl);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_fresh_key_allows_burst_exactly, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_sixth_rejected_with_retry_after, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_refill_one_after_interval, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_retry_after_is_exact, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_no_double_burst_at_boundary, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_sustained_rate, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_rejected_does_not_consume, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_remaining_after_kth, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_partial_refill, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_full_recovery, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_keys_are_independent, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_unlimited, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_tiers, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_uneven_interval, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_high_rate, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_very_high_rate, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_check_us, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_time_going_backwards, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_extreme_values, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_limit_change_keeps_state, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_peek_fresh, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_peek_does_not_consume, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_count_and_memory, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_expire, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_expired_entry_equals_absent, setup, teardown),
	    cmocka_unit_test(test_capacity_rounding),
	    cmocka_unit_test(test_flood_bounded),
	    cmocka_unit_test(test_eviction_spares_heavy_key),
	    cmocka_unit_test(test_eviction_forgets_light_key),
	    cmocka_unit_test(test_expired_slots_reused),
	    cmocka_unit_test(test_threads_same_key_exact),
	    cmocka_unit_test(test_threads_new_keys_never_doubled),
	    cmocka_unit_test(test_threads_flood_with_hot_key),
	    cmocka_unit_test(test_threads_rate_over_time),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
