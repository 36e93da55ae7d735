/*
 * Microbenchmark of the per-request shared-table work: ratelimit_check (GCRA + sharded
 * table) and cidr_tree_match (radix tree), in ns per call.
 *
 * Build and run from the repository root:
 *   gcc -std=gnu11 -O2 -g -D_GNU_SOURCE -Ishared -Igatewayd bench/micro_ratelimit.c \
 *       gatewayd/ratelimit.c shared/cidr.c shared/util.c shared/log.c shared/xmalloc.c \
 *       -lpthread -o /tmp/micro_ratelimit && /tmp/micro_ratelimit
 */

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cidr.h"
#include "ratelimit.h"
#include "util.h"

#define BENCH_KEYS 100000
#define BENCH_PREFIXES 1000
#define BENCH_ADDRS 65536 /* power of two: the index is masked */

static volatile uint64_t bench_sink; /* keeps results alive past the optimiser */

static uint64_t bench_rng_state = 0x2545f4914f6cdd1dULL;

static uint64_t
bench_rng(void)
{
	bench_rng_state ^= bench_rng_state >> 12;
	bench_rng_state ^= bench_rng_state << 25;
	bench_rng_state ^= bench_rng_state >> 27;
	return bench_rng_state * 0x2545f4914f6cdd1dULL;
}

/* This thread's CPU time: on a shared machine, time spent preempted is not ours. */
static uint64_t
bench_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void
bench_row(const char *what, uint64_t ns, uint64_t n, const char *note)
{
	printf("%-44s %9.1f %12llu  %s\n", what, (double)ns / (double)n, (unsigned long long)n,
	       note);
}

/*
 * Keys are visited in array order: the array streams through the cache as a request
 * buffer would, while the table slots they hash to are still random. So the 100k-key
 * rows show the table's own misses, not the benchmark's.
 */
static char bench_keys[BENCH_KEYS][24];

/* One thread's run over the same hot key, for the contended case. */
struct bench_thread {
	struct ratelimit *rl;
	uint64_t iters;
	uint64_t ns;
	uint64_t allowed;
};

static void *
bench_hot_thread(void *arg)
{
	struct bench_thread *bt = arg;
	struct conf_rate rate = {.count = 1000000000000ULL, .period_ms = 1000};
	struct ratelimit_result res;
	uint64_t t0 = bench_ns();

	for (uint64_t i = 0; i < bt->iters; i++) {
		ratelimit_check(bt->rl, "hot-user", 8, &rate, 1000 + i / 1024, &res);
		bt->allowed += (uint64_t)res.allowed;
	}
	bt->ns = bench_ns() - t0;
	return NULL;
}

static void
bench_ratelimit(void)
{
	struct conf_rate free_tier = {.count = 5, .period_ms = 60000};
	struct conf_rate big = {.count = 1000000000000ULL, .period_ms = 1000};
	struct ratelimit_result res;
	struct ratelimit *rl;
	uint64_t n, t0, sum = 0;

	for (uint32_t i = 0; i < BENCH_KEYS; i++)
		snprintf(bench_keys[i], sizeof bench_keys[i], "user:%u", i * 2654435761u);

	rl = ratelimit_new(262144);
	n = 20000000;
	t0 = bench_ns();
	for (uint64_t i = 0; i < n; i++) {
		ratelimit_check(rl, "hot-user", 8, &big, 1000 + i / 1024, &res);
		sum += res.remaining;
	}
	bench_row("ratelimit_check, hot key, allowed", bench_ns() - t0, n, "CAS per call");

	n = 20000000;
	t0 = bench_ns();
	for (uint64_t i = 0; i < n; i++) {
		ratelimit_check(rl, "hot-free", 8, &free_tier, 1000, &res);
		sum += res.retry_after_ms;
	}
	bench_row("ratelimit_check, hot key, rejected", bench_ns() - t0, n, "no write");

	/* what the 100k-key rows cost before the table: fetching the key and hashing it */
	n = 10000000;
	t0 = bench_ns();
	for (uint64_t i = 0; i < n; i++) {
		const char *k = bench_keys[i % BENCH_KEYS];

		sum += util_hash64(k, strlen(k));
	}
	bench_row("  baseline: fetch + hash of those 100k keys", bench_ns() - t0, n, "");

	/* every key present: a lookup that misses the CPU cache, then a CAS */
	for (uint32_t i = 0; i < BENCH_KEYS; i++)
		ratelimit_check(rl, bench_keys[i], strlen(bench_keys[i]), &big, 1000, &res);
	n = 10000000;
	t0 = bench_ns();
	for (uint64_t i = 0; i < n; i++) {
		const char *k = bench_keys[i % BENCH_KEYS];

		ratelimit_check(rl, k, strlen(k), &big, 1000 + i / 1024, &res);
		sum += res.remaining;
	}
	bench_row("ratelimit_check, 100k keys, cap 256k", bench_ns() - t0, n, "4 MB table");
	ratelimit_free(rl);

	/* more keys than slots: every call claims a slot (shard mutex) and evicts */
	rl = ratelimit_new(16384);
	n = 10000000;
	t0 = bench_ns();
	for (uint64_t i = 0; i < n; i++) {
		const char *k = bench_keys[i % BENCH_KEYS];

		ratelimit_check(rl, k, strlen(k), &free_tier, 1000 + i / 1024, &res);
		sum += res.remaining;
	}
	bench_row("ratelimit_check, 100k keys, cap 16k (churn)", bench_ns() - t0, n,
	          "claim + evict each call");
	printf("%-44s %9zu\n", "  entries kept (cap 16384)", ratelimit_count(rl));
	ratelimit_free(rl);

	/* two threads on one key: the cache line ping-pongs between cores */
	{
		struct bench_thread bt[2];
		pthread_t th[2];

		rl = ratelimit_new(4096);
		for (int i = 0; i < 2; i++) {
			memset(&bt[i], 0, sizeof bt[i]);
			bt[i].rl = rl;
			bt[i].iters = 5000000;
			pthread_create(&th[i], NULL, bench_hot_thread, &bt[i]);
		}
		for (int i = 0; i < 2; i++)
			pthread_join(th[i], NULL);
		bench_row("ratelimit_check, hot key, 2 threads", (bt[0].ns + bt[1].ns) / 2,
		          bt[0].iters, "per call, per thread");
		sum += bt[0].allowed + bt[1].allowed;
		ratelimit_free(rl);
	}
	bench_sink = sum;
}

static void
bench_cidr(void)
{
	static uint8_t addrs[BENCH_ADDRS][16];
	static char texts[BENCH_ADDRS][16];
	struct cidr_tree *t = cidr_tree_new();
	struct cidr c;
	char buf[64];
	uint64_t n, t0, sum = 0;
	size_t hits = 0;

	/* 1000 IPv4 prefixes /8../32, as a block list or trusted_proxy list would hold */
	while (cidr_tree_count(t) < BENCH_PREFIXES) {
		uint64_t r = bench_rng();

		snprintf(buf, sizeof buf, "%u.%u.%u.%u/%u", (unsigned)(r >> 8) & 255,
		         (unsigned)(r >> 16) & 255, (unsigned)(r >> 24) & 255,
		         (unsigned)(r >> 32) & 255, 8 + (unsigned)(r >> 40) % 25);
		if (cidr_parse(buf, &c) == 0)
			cidr_tree_insert(t, &c, (void *)(uintptr_t)1, NULL);
	}
	for (size_t i = 0; i < BENCH_ADDRS; i++) {
		uint64_t r = bench_rng();

		snprintf(texts[i], sizeof texts[i], "%u.%u.%u.%u", (unsigned)r & 255,
		         (unsigned)(r >> 8) & 255, (unsigned)(r >> 16) & 255,
		         (unsigned)(r >> 24) & 255);
		cidr_parse_addr(texts[i], strlen(texts[i]), addrs[i]);
	}
	n = 20000000;
	t0 = bench_ns();
	for (uint64_t i = 0; i < n; i++)
		hits += cidr_tree_match(t, addrs[i & (BENCH_ADDRS - 1)], NULL) != NULL;
	bench_row("cidr_tree_match, 1000 v4 prefixes, random", bench_ns() - t0, n, "");
	sum += hits;

	/* an address inside a prefix: the walk goes to the bottom of its branch */
	cidr_parse("10.1.2.3", &c);
	cidr_tree_insert(t, &c, (void *)(uintptr_t)2, NULL);
	t0 = bench_ns();
	for (uint64_t i = 0; i < n; i++)
		sum += (uintptr_t)cidr_tree_match(t, c.addr, NULL);
	bench_row("cidr_tree_match, 1000 v4 prefixes, host hit", bench_ns() - t0, n, "");

	n = 10000000;
	t0 = bench_ns();
	for (uint64_t i = 0; i < n; i++) {
		const char *s = texts[i & (BENCH_ADDRS - 1)];
		uint8_t a[16];

		sum += (uint64_t)cidr_parse_addr(s, strlen(s), a) + a[15];
	}
	bench_row("cidr_parse_addr, v4 (one X-Forwarded-For hop)", bench_ns() - t0, n, "");
	cidr_tree_free(t, NULL);
	bench_sink = sum + hits;
}

int
main(void)
{
	printf("%-44s %9s %12s\n", "operation", "ns/op", "calls");
	bench_ratelimit();
	bench_cidr();
	return 0;
}
