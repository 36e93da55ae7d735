#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "balance.h"
#include "util.h"

#define NKEYS 10000

static const enum balance_strategy all_strategies[] = {
    BALANCE_ROUND_ROBIN, BALANCE_LEAST_CONNECTIONS, BALANCE_WEIGHTED,
    BALANCE_IP_HASH,     BALANCE_ADAPTIVE,          BALANCE_RANDOM,
};
#define NSTRATEGIES (int)(sizeof(all_strategies) / sizeof(all_strategies[0]))

/* Targets named "b0", "b1", ... with the given weights, all eligible and idle. */
static void
make_targets(struct balance_target *t, int n, const int *weights)
{
	memset(t, 0, (size_t)n * sizeof(*t));
	for (int i = 0; i < n; i++) {
		char id[16];
		int len = snprintf(id, sizeof(id), "b%d", i);

		t[i].id_hash = util_hash64(id, (size_t)len);
		t[i].weight = weights != NULL ? weights[i] : 1;
		t[i].eligible = 1;
	}
}

static struct balance_state *
new_state(const struct balance_target *t, int n, uint64_t seed)
{
	struct balance_state *s = balance_state_new(seed);

	assert_non_null(s);
	balance_state_reset(s, t, n);
	return s;
}

/* A deterministic stream of client keys (xorshift, independent of the balancer's). */
static uint64_t
test_rand(uint64_t *x)
{
	*x ^= *x << 13;
	*x ^= *x >> 7;
	*x ^= *x << 17;
	return *x;
}

static void
make_keys(uint32_t *keys, int n, uint64_t seed)
{
	uint64_t x = seed;

	for (int i = 0; i < n; i++)
		keys[i] = (uint32_t)test_rand(&x);
}

static int
pick_key(struct balance_state *s, const struct balance_target *t, int n, uint32_t key)
{
	return balance_pick(s, BALANCE_IP_HASH, t, n, &key, sizeof(key));
}

/* Counts picks per target over `rounds` picks; fails on any -1 or out-of-range index. */
static void
count_picks(struct balance_state *s, enum balance_strategy st, const struct balance_target *t,
            int n, int rounds, int *counts)
{
	memset(counts, 0, (size_t)n * sizeof(*counts));
	for (int r = 0; r < rounds; r++) {
		int i = balance_pick(s, st, t, n, NULL, 0);

		assert_in_range(i, 0, n - 1);
		counts[i]++;
	}
}

static void
assert_near(double got, double want, double rel)
{
	if (got < want * (1.0 - rel) || got > want * (1.0 + rel))
		fail_msg("got %.1f, want %.1f +- %.0f%%", got, want, rel * 100);
}

/* ---- names ---- */

static void
test_strategy_names(void **state)
{
	for (int i = 0; i < BALANCE_COUNT; i++)
		assert_int_equal(balance_strategy_from_name(balance_strategy_name(i)), i);
	assert_int_equal(balance_strategy_from_name("ip_hash"), BALANCE_IP_HASH);
	assert_int_equal(balance_strategy_from_name("fastest"), -1);
	assert_string_equal(balance_strategy_name(BALANCE_COUNT), "unknown");
	assert_non_null(strstr(balance_strategy_list(), "least_connections"));
}

/* ---- every strategy ---- */

static void
test_empty_set_returns_minus_one(void **state)
{
	struct balance_target t[1] = {{0}};
	struct balance_state *s = new_state(t, 0, 1);

	for (int k = 0; k < NSTRATEGIES; k++) {
		assert_int_equal(balance_pick(s, all_strategies[k], t, 0, "k", 1), -1);
		assert_int_equal(balance_pick(s, all_strategies[k], t, -3, "k", 1), -1);
		assert_int_equal(balance_pick(s, all_strategies[k], NULL, 1, "k", 1), -1);
	}
	balance_state_free(s);
}

static void
test_none_eligible_returns_minus_one(void **state)
{
	struct balance_target t[4];

	make_targets(t, 4, NULL);
	for (int i = 0; i < 4; i++)
		t[i].eligible = 0;
	struct balance_state *s = new_state(t, 4, 2);

	for (int k = 0; k < NSTRATEGIES; k++)
		for (int r = 0; r < 50; r++)
			assert_int_equal(balance_pick(s, all_strategies[k], t, 4, &r, sizeof(r)),
			                 -1);
	balance_state_free(s);
}

static void
test_ineligible_never_picked(void **state)
{
	struct balance_target t[8];
	int w[8] = {1, 5, 2, 3, 1, 4, 2, 1};
	uint64_t x = 99;

	make_targets(t, 8, w);
	struct balance_state *s = new_state(t, 8, 3);

	for (int r = 0; r < 20000; r++) {
		uint32_t mask = (uint32_t)test_rand(&x) & 0xff;
		enum balance_strategy st = all_strategies[r % NSTRATEGIES];

		for (int i = 0; i < 8; i++) {
			t[i].eligible = (mask >> i) & 1;
			t[i].active = (uint32_t)(test_rand(&x) % 10);
			t[i].ewma_ms = (double)(test_rand(&x) % 50);
		}
		int got = balance_pick(s, st, t, 8, &r, sizeof(r));

		if (mask == 0)
			assert_int_equal(got, -1);
		else
			assert_true(got >= 0 && got < 8 && t[got].eligible);
	}
	balance_state_free(s);
}

static void
test_single_eligible_always_picked(void **state)
{
	struct balance_target t[5];

	make_targets(t, 5, NULL);
	for (int i = 0; i < 5; i++)
		t[i].eligible = i == 3;
	struct balance_state *s = new_state(t, 5, 4);

	for (int k = 0; k < NSTRATEGIES; k++)
		for (int r = 0; r < 100; r++)
			assert_int_equal(balance_pick(s, all_strategies[k], t, 5, &r, sizeof(r)),
			                 3);
	balance_state_free(s);
}

static void
test_unknown_strategy_still_valid(void **state)
{
	struct balance_target t[3];

	make_targets(t, 3, NULL);
	t[0].eligible = 0;
	struct balance_state *s = new_state(t, 3, 5);

	for (int r = 0; r < 30; r++) {
		int i = balance_pick(s, BALANCE_COUNT, t, 3, NULL, 0);

		assert_true(i == 1 || i == 2);
	}
	balance_state_free(s);
}

static void
test_nonpositive_weight_treated_as_one(void **state)
{
	struct balance_target t[2];
	int w[2] = {0, -4};
	int counts[2];

	make_targets(t, 2, w);
	struct balance_state *s = new_state(t, 2, 6);

	count_picks(s, BALANCE_WEIGHTED, t, 2, 100, counts);
	assert_int_equal(counts[0], 50);
	assert_int_equal(counts[1], 50);
	count_picks(s, BALANCE_RANDOM, t, 2, 10000, counts);
	assert_near(counts[0], 5000, 0.05);
	balance_state_free(s);
}

/* ---- round robin ---- */

static void
test_rr_exact_rotation(void **state)
{
	struct balance_target t[3];
	int counts[3];

	make_targets(t, 3, NULL);
	struct balance_state *s = new_state(t, 3, 7);

	for (int r = 0; r < 9; r++)
		assert_int_equal(balance_pick(s, BALANCE_ROUND_ROBIN, t, 3, NULL, 0), r % 3);
	count_picks(s, BALANCE_ROUND_ROBIN, t, 3, 300, counts);
	for (int i = 0; i < 3; i++)
		assert_int_equal(counts[i], 100);
	balance_state_free(s);
}

static void
test_rr_ignores_weights(void **state)
{
	struct balance_target t[3];
	int w[3] = {10, 1, 3};
	int counts[3];

	make_targets(t, 3, w);
	struct balance_state *s = new_state(t, 3, 8);

	count_picks(s, BALANCE_ROUND_ROBIN, t, 3, 300, counts);
	for (int i = 0; i < 3; i++)
		assert_int_equal(counts[i], 100);
	balance_state_free(s);
}

/* The target after an ineligible one must not inherit its turn. */
static void
test_rr_skip_does_not_skew(void **state)
{
	struct balance_target t[4];
	int counts[4];

	make_targets(t, 4, NULL);
	t[1].eligible = 0;
	struct balance_state *s = new_state(t, 4, 9);

	count_picks(s, BALANCE_ROUND_ROBIN, t, 4, 300, counts);
	assert_int_equal(counts[0], 100);
	assert_int_equal(counts[1], 0);
	assert_int_equal(counts[2], 100);
	assert_int_equal(counts[3], 100);
	/* strictly cyclic: 0 2 3 0 2 3 ... */
	int prev = balance_pick(s, BALANCE_ROUND_ROBIN, t, 4, NULL, 0);

	for (int r = 0; r < 30; r++) {
		int cur = balance_pick(s, BALANCE_ROUND_ROBIN, t, 4, NULL, 0);
		int want = prev == 0 ? 2 : prev == 2 ? 3 : 0;

		assert_int_equal(cur, want);
		prev = cur;
	}
	balance_state_free(s);
}

static void
test_rr_eligibility_flapping_stays_even(void **state)
{
	struct balance_target t[3];
	int counts[3] = {0};

	make_targets(t, 3, NULL);
	struct balance_state *s = new_state(t, 3, 10);

	/* target 2 out for one round in three: 0 and 1 still share evenly */
	for (int r = 0; r < 3000; r++) {
		t[2].eligible = (r / 3) % 3 != 0;
		int i = balance_pick(s, BALANCE_ROUND_ROBIN, t, 3, NULL, 0);

		counts[i]++;
	}
	assert_true(counts[0] - counts[1] <= 1 && counts[1] - counts[0] <= 1);
	assert_true(counts[2] > 0);
	balance_state_free(s);
}

/* ---- least connections ---- */

static void
test_lc_prefers_idle(void **state)
{
	struct balance_target t[4];

	make_targets(t, 4, NULL);
	t[0].active = 5;
	t[1].active = 3;
	t[2].active = 0;
	t[3].active = 7;
	struct balance_state *s = new_state(t, 4, 11);

	for (int r = 0; r < 20; r++)
		assert_int_equal(balance_pick(s, BALANCE_LEAST_CONNECTIONS, t, 4, NULL, 0), 2);
	t[2].eligible = 0;
	assert_int_equal(balance_pick(s, BALANCE_LEAST_CONNECTIONS, t, 4, NULL, 0), 1);
	balance_state_free(s);
}

static void
test_lc_ties_rotate(void **state)
{
	struct balance_target t[3];
	int counts[3];

	make_targets(t, 3, NULL);
	for (int i = 0; i < 3; i++)
		t[i].active = 2;
	struct balance_state *s = new_state(t, 3, 12);

	count_picks(s, BALANCE_LEAST_CONNECTIONS, t, 3, 300, counts);
	for (int i = 0; i < 3; i++)
		assert_int_equal(counts[i], 100);
	/* a tie between two of them (the third is busier) alternates */
	t[1].active = 9;
	int a = balance_pick(s, BALANCE_LEAST_CONNECTIONS, t, 3, NULL, 0);
	int b = balance_pick(s, BALANCE_LEAST_CONNECTIONS, t, 3, NULL, 0);

	assert_true(a != 1 && b != 1 && a != b);
	balance_state_free(s);
}

static void
test_lc_weight_aware(void **state)
{
	struct balance_target t[2];
	int w[2] = {4, 1};

	make_targets(t, 2, w);
	t[0].active = 6; /* 6/4 = 1.5 */
	t[1].active = 2; /* 2/1 = 2 */
	struct balance_state *s = new_state(t, 2, 13);

	assert_int_equal(balance_pick(s, BALANCE_LEAST_CONNECTIONS, t, 2, NULL, 0), 0);
	t[0].active = 9; /* 2.25 */
	assert_int_equal(balance_pick(s, BALANCE_LEAST_CONNECTIONS, t, 2, NULL, 0), 1);
	balance_state_free(s);
}

/* Requests that never finish: least connections keeps the loads level (by weight). */
static void
test_lc_levels_load(void **state)
{
	struct balance_target t[3];
	int w[3] = {2, 1, 1};

	make_targets(t, 3, w);
	struct balance_state *s = new_state(t, 3, 14);

	for (int r = 0; r < 400; r++) {
		int i = balance_pick(s, BALANCE_LEAST_CONNECTIONS, t, 3, NULL, 0);

		t[i].active++;
	}
	assert_int_equal(t[0].active, 200);
	assert_int_equal(t[1].active, 100);
	assert_int_equal(t[2].active, 100);
	balance_state_free(s);
}

/* ---- weighted ---- */

static void
test_weighted_exact_2_1_1(void **state)
{
	struct balance_target t[3];
	int w[3] = {2, 1, 1};
	int counts[3];

	make_targets(t, 3, w);
	struct balance_state *s = new_state(t, 3, 15);

	count_picks(s, BALANCE_WEIGHTED, t, 3, 400, counts);
	assert_int_equal(counts[0], 200);
	assert_int_equal(counts[1], 100);
	assert_int_equal(counts[2], 100);
	/* and exact over every single cycle of sum(weights) picks */
	for (int c = 0; c < 10; c++) {
		count_picks(s, BALANCE_WEIGHTED, t, 3, 4, counts);
		assert_int_equal(counts[0], 2);
		assert_int_equal(counts[1], 1);
		assert_int_equal(counts[2], 1);
	}
	balance_state_free(s);
}

static void
test_weighted_exact_other_weights(void **state)
{
	struct balance_target t[4];
	int w[4] = {5, 3, 1, 1};
	int counts[4];

	make_targets(t, 4, w);
	struct balance_state *s = new_state(t, 4, 16);

	count_picks(s, BALANCE_WEIGHTED, t, 4, 1000, counts);
	for (int i = 0; i < 4; i++)
		assert_int_equal(counts[i], w[i] * 100);
	balance_state_free(s);
}

/* The longest run of one backend is far shorter than its weight: picks are spread. */
static void
test_weighted_interleaved(void **state)
{
	struct balance_target t[3];
	int w[3] = {5, 1, 1};
	int prev = -1, run = 0, longest = 0;

	make_targets(t, 3, w);
	struct balance_state *s = new_state(t, 3, 17);

	for (int r = 0; r < 700; r++) {
		int i = balance_pick(s, BALANCE_WEIGHTED, t, 3, NULL, 0);

		run = i == prev ? run + 1 : 1;
		if (run > longest)
			longest = run;
		prev = i;
	}
	assert_true(longest < 5);
	balance_state_free(s);

	/* 2:1:1 is b0 between the others, never twice in a row, even across cycles */
	int w2[3] = {2, 1, 1};
	const int want[4] = {1, 0, 2, 0};

	make_targets(t, 3, w2);
	s = new_state(t, 3, 18);
	prev = -1;
	for (int r = 0; r < 400; r++) {
		int i = balance_pick(s, BALANCE_WEIGHTED, t, 3, NULL, 0);

		assert_int_equal(i, want[r % 4]);
		assert_int_not_equal(i, prev);
		prev = i;
	}
	balance_state_free(s);
}

/* The longest run of i, counting across the wrap of one cycle. */
static int
cyclic_run(const int *seq, int len, int i)
{
	int run = 0, longest = 0;

	for (int k = 0; k < 2 * len; k++) {
		run = seq[k % len] == i ? run + 1 : 0;
		if (run > longest)
			longest = run;
	}
	return longest < len ? longest : len;
}

/*
 * Random weight sets: every cycle of sum(weights) picks is exact, and no backend comes
 * weight times in a row (even across cycles) unless its share makes that unavoidable.
 */
static void
test_weighted_property_random_sets(void **state)
{
	struct balance_target t[12];
	int w[12], seq[12 * 20];
	uint64_t x = 2024;

	for (int trial = 0; trial < 500; trial++) {
		int n = 2 + (int)(test_rand(&x) % 11), total = 0;

		for (int i = 0; i < n; i++) {
			w[i] = 1 + (int)(test_rand(&x) % 20);
			total += w[i];
		}
		make_targets(t, n, w);
		struct balance_state *s = new_state(t, n, trial);

		for (int cycle = 0; cycle < 3; cycle++) {
			int counts[12] = {0};

			for (int k = 0; k < total; k++) {
				seq[k] = balance_pick(s, BALANCE_WEIGHTED, t, n, NULL, 0);
				counts[seq[k]]++;
			}
			for (int i = 0; i < n; i++)
				assert_int_equal(counts[i], w[i]);
		}
		for (int i = 0; i < n; i++) {
			int others = total - w[i];
			int unavoidable = (w[i] + others - 1) / others;

			if (unavoidable < w[i])
				assert_true(cyclic_run(seq, total, i) < w[i]);
		}
		balance_state_free(s);
	}
}

static void
test_weighted_skips_ineligible(void **state)
{
	struct balance_target t[3];
	int w[3] = {2, 1, 1};
	int counts[3];

	make_targets(t, 3, w);
	t[0].eligible = 0;
	struct balance_state *s = new_state(t, 3, 19);

	count_picks(s, BALANCE_WEIGHTED, t, 3, 400, counts);
	assert_int_equal(counts[0], 0);
	assert_int_equal(counts[1], 200);
	assert_int_equal(counts[2], 200);
	balance_state_free(s);
}

/* Same set: reset is a no-op and the interleaving continues where it was. */
static void
test_weighted_reset_unchanged_keeps_state(void **state)
{
	struct balance_target t[3];
	int w[3] = {2, 1, 1};
	int seq[8], seq2[8];

	make_targets(t, 3, w);
	struct balance_state *a = new_state(t, 3, 20), *b = new_state(t, 3, 20);

	for (int r = 0; r < 8; r++) {
		seq[r] = balance_pick(a, BALANCE_WEIGHTED, t, 3, NULL, 0);
		balance_state_reset(b, t, 3);
		seq2[r] = balance_pick(b, BALANCE_WEIGHTED, t, 3, NULL, 0);
	}
	assert_memory_equal(seq, seq2, sizeof(seq));
	balance_state_free(a);
	balance_state_free(b);
}

/* A different set: the smooth weights start afresh, exact from the first cycle. */
static void
test_weighted_reset_on_set_change(void **state)
{
	struct balance_target t[4];
	int w[4] = {3, 1, 1, 1};
	int counts[4];

	make_targets(t, 4, w);
	struct balance_state *s = new_state(t, 4, 21);

	count_picks(s, BALANCE_WEIGHTED, t, 4, 5, counts); /* mid-cycle */
	/* drop b3: a 3-backend set with weights 3:1:1 */
	balance_state_reset(s, t, 3);
	count_picks(s, BALANCE_WEIGHTED, t, 3, 5, counts);
	assert_int_equal(counts[0], 3);
	assert_int_equal(counts[1], 1);
	assert_int_equal(counts[2], 1);
	/* a different backend under the same index is a change too */
	count_picks(s, BALANCE_WEIGHTED, t, 3, 2, counts);
	t[2].id_hash = util_hash64("other", 5);
	balance_state_reset(s, t, 3);
	count_picks(s, BALANCE_WEIGHTED, t, 3, 5, counts);
	assert_int_equal(counts[0], 3);
	assert_int_equal(counts[1], 1);
	assert_int_equal(counts[2], 1);
	/* so is a weight change (slow start, gatectl weight) */
	count_picks(s, BALANCE_WEIGHTED, t, 3, 3, counts);
	t[1].weight = 4;
	balance_state_reset(s, t, 3);
	count_picks(s, BALANCE_WEIGHTED, t, 3, 8, counts);
	assert_int_equal(counts[0], 3);
	assert_int_equal(counts[1], 4);
	assert_int_equal(counts[2], 1);
	balance_state_free(s);
}

/* ---- random ---- */

static void
test_random_uniform(void **state)
{
	struct balance_target t[4];
	int counts[4];

	make_targets(t, 4, NULL);
	struct balance_state *s = new_state(t, 4, 22);

	count_picks(s, BALANCE_RANDOM, t, 4, 40000, counts);
	for (int i = 0; i < 4; i++)
		assert_near(counts[i], 10000, 0.05);
	balance_state_free(s);
}

static void
test_random_weighted(void **state)
{
	struct balance_target t[3];
	int w[3] = {3, 1, 4};
	int counts[3];

	make_targets(t, 3, w);
	t[2].eligible = 0;
	struct balance_state *s = new_state(t, 3, 23);

	count_picks(s, BALANCE_RANDOM, t, 3, 40000, counts);
	assert_near(counts[0], 30000, 0.03);
	assert_near(counts[1], 10000, 0.06);
	assert_int_equal(counts[2], 0);
	balance_state_free(s);
}

static void
test_random_seeded(void **state)
{
	struct balance_target t[8];
	int same = 0, differ = 0;

	make_targets(t, 8, NULL);
	struct balance_state *a = new_state(t, 8, 42), *b = new_state(t, 8, 42),
	                     *c = new_state(t, 8, 43);

	for (int r = 0; r < 200; r++) {
		int x = balance_pick(a, BALANCE_RANDOM, t, 8, NULL, 0);

		same += x == balance_pick(b, BALANCE_RANDOM, t, 8, NULL, 0);
		differ += x != balance_pick(c, BALANCE_RANDOM, t, 8, NULL, 0);
	}
	assert_int_equal(same, 200);
	assert_true(differ > 100);
	balance_state_free(a);
	balance_state_free(b);
	balance_state_free(c);
}

/* ---- adaptive ---- */

static void
test_adaptive_prefers_fast(void **state)
{
	struct balance_target t[3];
	int counts[3];

	make_targets(t, 3, NULL);
	t[0].ewma_ms = 50;
	t[1].ewma_ms = 2;
	t[2].ewma_ms = 40;
	struct balance_state *s = new_state(t, 3, 24);

	count_picks(s, BALANCE_ADAPTIVE, t, 3, 3000, counts);
	/* two choices: the fastest wins whenever drawn (2/3); 50 ms against 40 ms is within
	 * the tie ratio (41/51 > 0.5), so each wins half of their pairings (1/6 each) */
	assert_near(counts[1], 2000, 0.08);
	assert_near(counts[0], 500, 0.2);
	assert_near(counts[2], 500, 0.2);
	/* a clear loser (50 ms against 2 ms and 3 ms) is never picked */
	t[2].ewma_ms = 3;
	count_picks(s, BALANCE_ADAPTIVE, t, 3, 3000, counts);
	assert_int_equal(counts[0], 0);
	balance_state_free(s);
}

static void
test_adaptive_avoids_failures(void **state)
{
	struct balance_target t[3];
	int counts[3];

	make_targets(t, 3, NULL);
	for (int i = 0; i < 3; i++)
		t[i].ewma_ms = 10;
	struct balance_state *s = new_state(t, 3, 25);

	count_picks(s, BALANCE_ADAPTIVE, t, 3, 3000, counts);
	for (int i = 0; i < 3; i++)
		assert_near(counts[i], 1000, 0.12);
	t[1].recent_failures = 3;
	count_picks(s, BALANCE_ADAPTIVE, t, 3, 3000, counts);
	assert_int_equal(counts[1], 0);
	assert_near(counts[0], 1500, 0.12);
	assert_near(counts[2], 1500, 0.12);
	balance_state_free(s);
}

/* Load counts too: a fast backend with a queue loses to an idle slower one. */
static void
test_adaptive_accounts_active(void **state)
{
	struct balance_target t[2];

	make_targets(t, 2, NULL);
	t[0].ewma_ms = 5;
	t[0].active = 10; /* (5 + 1) * 11 = 66 */
	t[1].ewma_ms = 20;
	t[1].active = 0; /* (20 + 1) * 1 = 21: cheaper by more than the 2x tie band */
	struct balance_state *s = new_state(t, 2, 26);

	for (int r = 0; r < 50; r++)
		assert_int_equal(balance_pick(s, BALANCE_ADAPTIVE, t, 2, NULL, 0), 1);
	balance_state_free(s);
}

static void
test_adaptive_weight_and_unknown(void **state)
{
	struct balance_target t[2];
	int w[2] = {1, 4};

	make_targets(t, 2, w);
	t[0].ewma_ms = 3; /* (3 + 1) / 1 = 4 */
	t[1].ewma_ms = 4; /* (4 + 1) / 4 = 1.25: weight makes it cheaper past the tie band */
	struct balance_state *s = new_state(t, 2, 27);

	for (int r = 0; r < 20; r++)
		assert_int_equal(balance_pick(s, BALANCE_ADAPTIVE, t, 2, NULL, 0), 1);
	/* a backend with no measurement yet is cheap (1 ms), so it gets tried */
	t[0].ewma_ms = 0;
	t[0].weight = 1;
	t[1].weight = 1;
	t[1].ewma_ms = 4;
	for (int r = 0; r < 20; r++)
		assert_int_equal(balance_pick(s, BALANCE_ADAPTIVE, t, 2, NULL, 0), 0);
	balance_state_free(s);
}

/* Traffic moves to a backend when it becomes the fast one. */
static void
test_adaptive_follows_latency(void **state)
{
	struct balance_target t[4];
	int counts[4];

	make_targets(t, 4, NULL);
	for (int i = 0; i < 4; i++)
		t[i].ewma_ms = 30;
	t[0].ewma_ms = 3;
	struct balance_state *s = new_state(t, 4, 28);

	count_picks(s, BALANCE_ADAPTIVE, t, 4, 4000, counts);
	assert_true(counts[0] > 1800); /* drawn in half of the pairs */
	t[0].ewma_ms = 300;
	t[3].ewma_ms = 3;
	count_picks(s, BALANCE_ADAPTIVE, t, 4, 4000, counts);
	assert_int_equal(counts[0], 0);
	assert_true(counts[3] > 1800);
	balance_state_free(s);
}

/* ---- ip_hash ---- */

static void
test_ip_hash_sticky(void **state)
{
	struct balance_target t[5];
	uint32_t keys[500];

	make_targets(t, 5, NULL);
	make_keys(keys, 500, 1);
	struct balance_state *a = new_state(t, 5, 29), *b = new_state(t, 5, 12345);

	for (int k = 0; k < 500; k++) {
		int first = pick_key(a, t, 5, keys[k]);

		assert_in_range(first, 0, 4);
		for (int r = 0; r < 3; r++)
			assert_int_equal(pick_key(a, t, 5, keys[k]), first);
		/* another worker (another seed) agrees */
		assert_int_equal(pick_key(b, t, 5, keys[k]), first);
	}
	balance_state_free(a);
	balance_state_free(b);
}

/* Ring positions come from the ids, not the indices: reordering moves no key. */
static void
test_ip_hash_order_independent(void **state)
{
	struct balance_target t[4], rev[4];
	uint32_t keys[2000];

	make_targets(t, 4, NULL);
	for (int i = 0; i < 4; i++)
		rev[i] = t[3 - i];
	make_keys(keys, 2000, 2);
	struct balance_state *a = new_state(t, 4, 30), *b = new_state(rev, 4, 31);

	for (int k = 0; k < 2000; k++)
		assert_int_equal(3 - pick_key(b, rev, 4, keys[k]), pick_key(a, t, 4, keys[k]));
	balance_state_free(a);
	balance_state_free(b);
}

static void
test_ip_hash_even_shares(void **state)
{
	struct balance_target t[4];
	static uint32_t keys[NKEYS];
	int counts[4] = {0};

	make_targets(t, 4, NULL);
	make_keys(keys, NKEYS, 3);
	struct balance_state *s = new_state(t, 4, 32);

	for (int k = 0; k < NKEYS; k++)
		counts[pick_key(s, t, 4, keys[k])]++;
	for (int i = 0; i < 4; i++)
		assert_near(counts[i], NKEYS / 4.0, 0.20);
	balance_state_free(s);
}

static void
test_ip_hash_weighted_shares(void **state)
{
	struct balance_target t[3];
	int w[3] = {2, 1, 1};
	static uint32_t keys[NKEYS];
	int counts[3] = {0};

	make_targets(t, 3, w);
	make_keys(keys, NKEYS, 4);
	struct balance_state *s = new_state(t, 3, 33);

	for (int k = 0; k < NKEYS; k++)
		counts[pick_key(s, t, 3, keys[k])]++;
	assert_near(counts[0], NKEYS / 2.0, 0.20);
	assert_near(counts[1], NKEYS / 4.0, 0.20);
	assert_near(counts[2], NKEYS / 4.0, 0.20);
	balance_state_free(s);
}

/*
 * Removing a backend from the set (reload): only its keys move, and they spread so
 * that every remaining backend stays within 20% of an even share.
 */
static void
test_ip_hash_remove_moves_only_its_keys(void **state)
{
	struct balance_target t[4], rest[3];
	static uint32_t keys[NKEYS];
	static int before[NKEYS];
	int counts[3] = {0}, removed = 2, moved = 0;

	make_targets(t, 4, NULL);
	make_keys(keys, NKEYS, 5);
	struct balance_state *s = new_state(t, 4, 34);

	for (int k = 0; k < NKEYS; k++)
		before[k] = pick_key(s, t, 4, keys[k]);
	for (int i = 0, j = 0; i < 4; i++)
		if (i != removed)
			rest[j++] = t[i];
	balance_state_reset(s, rest, 3);
	for (int k = 0; k < NKEYS; k++) {
		int now = pick_key(s, rest, 3, keys[k]);
		uint64_t id = rest[now].id_hash;

		counts[now]++;
		if (before[k] == removed) {
			moved++;
			continue;
		}
		assert_true(id == t[before[k]].id_hash);
	}
	assert_near(moved, NKEYS / 4.0, 0.20);
	for (int i = 0; i < 3; i++)
		assert_near(counts[i], NKEYS / 3.0, 0.20);
	balance_state_free(s);
}

/* Same without a reset: an ineligible (down, draining) backend's keys alone move. */
static void
test_ip_hash_ineligible_moves_only_its_keys(void **state)
{
	struct balance_target t[4];
	static uint32_t keys[NKEYS];
	static int before[NKEYS];
	int counts[4] = {0};

	make_targets(t, 4, NULL);
	make_keys(keys, NKEYS, 6);
	struct balance_state *s = new_state(t, 4, 35);

	for (int k = 0; k < NKEYS; k++)
		before[k] = pick_key(s, t, 4, keys[k]);
	t[0].eligible = 0;
	for (int k = 0; k < NKEYS; k++) {
		int now = pick_key(s, t, 4, keys[k]);

		counts[now]++;
		if (before[k] != 0)
			assert_int_equal(now, before[k]);
	}
	assert_int_equal(counts[0], 0);
	for (int i = 1; i < 4; i++)
		assert_near(counts[i], NKEYS / 3.0, 0.20);
	/* back in service: every key returns home */
	t[0].eligible = 1;
	for (int k = 0; k < NKEYS; k++)
		assert_int_equal(pick_key(s, t, 4, keys[k]), before[k]);
	balance_state_free(s);
}

/* Adding a backend: keys move only onto the new one, about a fifth of them. */
static void
test_ip_hash_add_moves_only_to_new(void **state)
{
	struct balance_target t[5];
	static uint32_t keys[NKEYS];
	static int before[NKEYS];
	int moved = 0;

	make_targets(t, 5, NULL);
	make_keys(keys, NKEYS, 7);
	struct balance_state *s = new_state(t, 4, 36);

	for (int k = 0; k < NKEYS; k++)
		before[k] = pick_key(s, t, 4, keys[k]);
	balance_state_reset(s, t, 5);
	for (int k = 0; k < NKEYS; k++) {
		int now = pick_key(s, t, 5, keys[k]);

		if (now != before[k]) {
			assert_int_equal(now, 4);
			moved++;
		}
	}
	assert_near(moved, NKEYS / 5.0, 0.20);
	balance_state_free(s);
}

/* A hot backend over ceil(1.25 * (total + 1) / n) sheds its keys; the others keep theirs. */
static void
test_ip_hash_bounded_load_spills(void **state)
{
	struct balance_target t[4];
	static uint32_t keys[NKEYS];
	static int before[NKEYS];
	int spilled = 0;

	make_targets(t, 4, NULL);
	make_keys(keys, NKEYS, 8);
	struct balance_state *s = new_state(t, 4, 37);

	for (int k = 0; k < NKEYS; k++)
		before[k] = pick_key(s, t, 4, keys[k]);
	/* total 13, cap = ceil(1.25 * 14 / 4) = 5: b1 at 10 is over, the others under */
	t[0].active = 1;
	t[1].active = 10;
	t[2].active = 2;
	t[3].active = 0;
	for (int k = 0; k < NKEYS; k++) {
		int now = pick_key(s, t, 4, keys[k]);

		if (before[k] == 1) {
			assert_int_not_equal(now, 1);
			spilled++;
		} else {
			assert_int_equal(now, before[k]);
		}
	}
	assert_true(spilled > 0);
	/* {1,2,1,0}: ceil(1.25 * 5 / 4) = 2, but below the floor of 8 in flight nobody
	 * counts as overloaded: every key is home (affinity at low load) */
	t[1].active = 2;
	t[2].active = 1;
	for (int k = 0; k < NKEYS; k++)
		assert_int_equal(pick_key(s, t, 4, keys[k]), before[k]);
	/* {1,8,1,0}: b1 at the floor is full */
	t[1].active = 8;
	for (int k = 0; k < NKEYS; k++)
		if (before[k] == 1)
			assert_int_not_equal(pick_key(s, t, 4, keys[k]), 1);
	balance_state_free(s);
}

/* One hot client hammering: no backend goes past the bound however skewed the keys. */
static void
test_ip_hash_bounded_load_caps(void **state)
{
	struct balance_target t[4];
	uint32_t hot = 0xc0a80001;

	make_targets(t, 4, NULL);
	struct balance_state *s = new_state(t, 4, 38);

	for (int r = 0; r < 1000; r++) {
		uint64_t total = 0;
		int i = pick_key(s, t, 4, hot);

		for (int k = 0; k < 4; k++)
			total += t[k].active;
		uint64_t cap = (5 * (total + 1) + 15) / 16;
		if (cap < 8)
			cap = 8; /* BOUNDED_LOAD_FLOOR */

		assert_true(t[i].active + 1 <= cap);
		t[i].active++;
	}
	for (int k = 0; k < 4; k++)
		assert_true(t[k].active <= 313); /* ceil(1.25 * 1000 / 4) */
	balance_state_free(s);
}

static void
test_ip_hash_without_key_or_reset(void **state)
{
	struct balance_target t[4];
	int counts[4];

	make_targets(t, 4, NULL);
	struct balance_state *s = new_state(t, 4, 39);

	/* no client address: spread, not everyone on one backend */
	count_picks(s, BALANCE_IP_HASH, t, 4, 400, counts);
	for (int i = 0; i < 4; i++)
		assert_int_equal(counts[i], 100);
	/* a set the state was not reset for: still consistent and eligible-only */
	struct balance_target more[6];

	make_targets(more, 6, NULL);
	more[5].eligible = 0;
	for (uint32_t k = 0; k < 300; k++) {
		int a = pick_key(s, more, 6, k);

		assert_true(a >= 0 && a < 5);
		assert_int_equal(pick_key(s, more, 6, k), a);
	}
	balance_state_free(s);
}

/* A weight change rebuilds the ring: the heavier backend gains keys, only gains. */
static void
test_ip_hash_weight_change(void **state)
{
	struct balance_target t[3];
	static uint32_t keys[NKEYS];
	static int before[NKEYS];
	int counts[3] = {0};

	make_targets(t, 3, NULL);
	make_keys(keys, NKEYS, 9);
	struct balance_state *s = new_state(t, 3, 40);

	for (int k = 0; k < NKEYS; k++)
		before[k] = pick_key(s, t, 3, keys[k]);
	t[0].weight = 2;
	balance_state_reset(s, t, 3);
	for (int k = 0; k < NKEYS; k++) {
		int now = pick_key(s, t, 3, keys[k]);

		counts[now]++;
		if (now != before[k])
			assert_int_equal(now, 0);
	}
	assert_near(counts[0], NKEYS / 2.0, 0.20);
	balance_state_free(s);
}

/* Big sets and weights: the ring is capped yet shares still follow the weights. */
static void
test_ip_hash_large_set(void **state)
{
	static struct balance_target t[BALANCE_MAX_TARGETS];
	static int w[BALANCE_MAX_TARGETS];
	static uint32_t keys[NKEYS * 5];
	int heavy = 0;

	for (int i = 0; i < BALANCE_MAX_TARGETS; i++)
		w[i] = i < 128 ? 1000 : 1; /* half the backends hold ~all the weight */
	make_targets(t, BALANCE_MAX_TARGETS, w);
	make_keys(keys, NKEYS * 5, 10);
	struct balance_state *s = new_state(t, BALANCE_MAX_TARGETS, 41);

	for (int k = 0; k < NKEYS * 5; k++) {
		int i = pick_key(s, t, BALANCE_MAX_TARGETS, keys[k]);

		assert_in_range(i, 0, BALANCE_MAX_TARGETS - 1);
		heavy += i < 128;
	}
	assert_true(heavy > NKEYS * 5 * 95 / 100);
	/* more targets than the maximum: the excess is ignored, never returned */
	assert_in_range(balance_pick(s, BALANCE_ROUND_ROBIN, t, BALANCE_MAX_TARGETS + 10, NULL, 0),
	                0, BALANCE_MAX_TARGETS - 1);
	balance_state_free(s);
}

static void
test_state_free_null(void **state)
{
	balance_state_free(NULL);
	balance_state_reset(NULL, NULL, 0);
	assert_int_equal(balance_pick(NULL, BALANCE_ROUND_ROBIN, NULL, 0, NULL, 0), -1);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_strategy_names),
	    cmocka_unit_test(test_empty_set_returns_minus_one),
	    cmocka_unit_test(test_none_eligible_returns_minus_one),
	    cmocka_unit_test(test_ineligible_never_picked),
	    cmocka_unit_test(test_single_eligible_always_picked),
	    cmocka_unit_test(test_unknown_strategy_still_valid),
	    cmocka_unit_test(test_nonpositive_weight_treated_as_one),
	    cmocka_unit_test(test_rr_exact_rotation),
	    cmocka_unit_test(test_rr_ignores_weights),
	    cmocka_unit_test(test_rr_skip_does_not_skew),
	    cmocka_unit_test(test_rr_eligibility_flapping_stays_even),
	    cmocka_unit_test(test_lc_prefers_idle),
	    cmocka_unit_test(test_lc_ties_rotate),
	    cmocka_unit_test(test_lc_weight_aware),
	    cmocka_unit_test(test_lc_levels_load),
	    cmocka_unit_test(test_weighted_exact_2_1_1),
	    cmocka_unit_test(test_weighted_exact_other_weights),
	    cmocka_unit_test(test_weighted_interleaved),
	    cmocka_unit_test(test_weighted_property_random_sets),
	    cmocka_unit_test(test_weighted_skips_ineligible),
	    cmocka_unit_test(test_weighted_reset_unchanged_keeps_state),
	    cmocka_unit_test(test_weighted_reset_on_set_change),
	    cmocka_unit_test(test_random_uniform),
	    cmocka_unit_test(test_random_weighted),
	    cmocka_unit_test(test_random_seeded),
	    cmocka_unit_test(test_adaptive_prefers_fast),
	    cmocka_unit_test(test_adaptive_avoids_failures),
	    cmocka_unit_test(test_adaptive_accounts_active),
	    cmocka_unit_test(test_adaptive_weight_and_unknown),
	    cmocka_unit_test(test_adaptive_follows_latency),
	    cmocka_unit_test(test_ip_hash_sticky),
	    cmocka_unit_test(test_ip_hash_order_independent),
	    cmocka_unit_test(test_ip_hash_even_shares),
	    cmocka_unit_test(test_ip_hash_weighted_shares),
	    cmocka_unit_test(test_ip_hash_remove_moves_only_its_keys),
	    cmocka_unit_test(test_ip_hash_ineligible_moves_only_its_keys),
	    cmocka_unit_test(test_ip_hash_add_moves_only_to_new),
	    cmocka_unit_test(test_ip_hash_bounded_load_spills),
	    cmocka_unit_test(test_ip_hash_bounded_load_caps),
	    cmocka_unit_test(test_ip_hash_without_key_or_reset),
	    cmocka_unit_test(test_ip_hash_weight_change),
	    cmocka_unit_test(test_ip_hash_large_set),
	    cmocka_unit_test(test_state_free_null),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
