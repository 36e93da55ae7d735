/*
 * Unit tests for gatewayd/metrics.c: histogram bucketing at the bucket edges, the text
 * format of a histogram (cumulative buckets, +Inf equal to _count, exact _sum), label
 * escaping, the per-worker labelled counter tables (lookup, overflow into "other") and
 * their merge across workers, and a concurrent reader while the owner records.
 */

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "metrics.h"

static struct metrics_worker *
mw_new(void)
{
	struct metrics_worker *m = calloc(1, sizeof(*m));

	assert_non_null(m);
	return m;
}

static void
test_bucket_index(void **state)
{
	(void)state;
	assert_int_equal(metrics_bucket_index(0), 0);
	assert_int_equal(metrics_bucket_index(1000), 0); /* le is inclusive */
	assert_int_equal(metrics_bucket_index(1001), 1);
	assert_int_equal(metrics_bucket_index(2500), 1);
	assert_int_equal(metrics_bucket_index(2501), 2);
	assert_int_equal(metrics_bucket_index(100000), 6);
	assert_int_equal(metrics_bucket_index(10000000), METRICS_NBUCKETS - 1);
	assert_int_equal(metrics_bucket_index(10000001), METRICS_NBUCKETS); /* +Inf */
	assert_int_equal(metrics_bucket_index(UINT64_MAX), METRICS_NBUCKETS);
	for (int i = 1; i < METRICS_NBUCKETS; i++)
		assert_true(metrics_bucket_us[i] > metrics_bucket_us[i - 1]);
}

static void
test_observe(void **state)
{
	struct metrics_worker *m = mw_new();

	(void)state;
	metrics_observe(m, 500);
	metrics_observe(m, 1000);
	metrics_observe(m, 3000);
	metrics_observe(m, 20000000);
	assert_int_equal(m->hist[0], 2);
	assert_int_equal(m->hist[2], 1);
	assert_int_equal(m->hist[METRICS_NBUCKETS], 1);
	assert_int_equal(m->hist_sum_us, 500 + 1000 + 3000 + 20000000);
	free(m);
}

static void
test_histogram_text(void **state)
{
	uint64_t c[METRICS_NBUCKETS + 1] = {0};
	struct mbuf o = {malloc(8), 0, 8}; /* small: exercises growth */

	(void)state;
	c[0] = 2;
	c[2] = 1;
	c[METRICS_NBUCKETS] = 4;
	metrics_write_histogram(&o, "h_seconds", "Help text.", c, 1234567);
	assert_string_equal(o.p, "# HELP h_seconds Help text.\n"
	                         "# TYPE h_seconds histogram\n"
	                         "h_seconds_bucket{le=\"0.001\"} 2\n"
	                         "h_seconds_bucket{le=\"0.0025\"} 2\n"
	                         "h_seconds_bucket{le=\"0.005\"} 3\n"
	                         "h_seconds_bucket{le=\"0.01\"} 3\n"
	                         "h_seconds_bucket{le=\"0.025\"} 3\n"
	                         "h_seconds_bucket{le=\"0.05\"} 3\n"
	                         "h_seconds_bucket{le=\"0.1\"} 3\n"
	                         "h_seconds_bucket{le=\"0.25\"} 3\n"
	                         "h_seconds_bucket{le=\"0.5\"} 3\n"
	                         "h_seconds_bucket{le=\"1\"} 3\n"
	                         "h_seconds_bucket{le=\"2.5\"} 3\n"
	                         "h_seconds_bucket{le=\"5\"} 3\n"
	                         "h_seconds_bucket{le=\"10\"} 3\n"
	                         "h_seconds_bucket{le=\"+Inf\"} 7\n"
	                         "h_seconds_sum 1.234567\n"
	                         "h_seconds_count 7\n");
	assert_int_equal(o.len, strlen(o.p));
	free(o.p);
}

static void
test_label_escape(void **state)
{
	struct mbuf o = {malloc(4), 0, 4};

	(void)state;
	mbuf_label(&o, "a\\b\"c\nd e");
	assert_string_equal(o.p, "a\\\\b\\\"c\\nd e");
	free(o.p);
}

static void
test_table_and_merge(void **state)
{
	struct metrics_worker *a = mw_new(), *b = mw_new();
	struct metrics_worker *both[2] = {a, b};
	struct metrics_samples s = {0};
	struct mbuf o = {malloc(64), 0, 64};

	(void)state;
	metrics_count(a, METRICS_K_REQUESTS, "200", "b1", 3);
	metrics_count(a, METRICS_K_REQUESTS, "200", "b1", 2);
	metrics_count(a, METRICS_K_REQUESTS, "404", "none", 1);
	metrics_count(b, METRICS_K_REQUESTS, "200", "b1", 10);
	metrics_count(b, METRICS_K_REQUESTS, "200", "b\"2", 1);
	/* same labels, another family: kept apart */
	metrics_count(b, METRICS_K_GEO, "200", "b1", 7);
	assert_int_equal(a->nused, 2);
	assert_int_equal(b->nused, 3);

	metrics_samples_collect(&s, both, 2, METRICS_K_REQUESTS);
	metrics_samples_add(&s, "503", "none", 0); /* a zero sample is listed too */
	metrics_samples_finish(&s);
	metrics_write_counter2(&o, "x_total", "X.", "code", "backend", &s);
	assert_string_equal(o.p, "# HELP x_total X.\n"
	                         "# TYPE x_total counter\n"
	                         "x_total{code=\"200\",backend=\"b\\\"2\"} 1\n"
	                         "x_total{code=\"200\",backend=\"b1\"} 15\n"
	                         "x_total{code=\"404\",backend=\"none\"} 1\n"
	                         "x_total{code=\"503\",backend=\"none\"} 0\n");
	metrics_samples_free(&s);

	metrics_samples_collect(&s, both, 2, METRICS_K_GEO);
	metrics_samples_finish(&s);
	assert_int_equal(s.n, 1);
	assert_int_equal(s.v[0].n, 7);
	metrics_samples_free(&s);
	free(o.p);
	free(a);
	free(b);
}

static void
test_table_overflow(void **state)
{
	struct metrics_worker *m = mw_new();
	struct metrics_worker *one[1] = {m};
	struct metrics_samples s = {0};
	char name[32];
	uint64_t total = 0, other = 0;

	(void)state;
	for (int i = 0; i < 1000; i++) {
		snprintf(name, sizeof(name), "b%d", i);
		metrics_count(m, METRICS_K_REQUESTS, "200", name, 1);
	}
	assert_true(m->nused <= METRICS_TABLE_SIZE);
	metrics_samples_collect(&s, one, 1, METRICS_K_REQUESTS);
	metrics_samples_finish(&s);
	for (size_t i = 0; i < s.n; i++) {
		total += s.v[i].n;
		if (strcmp(s.v[i].a, "other") == 0)
			other = s.v[i].n;
	}
	assert_int_equal(total, 1000); /* nothing lost */
	assert_true(other > 0);
	assert_true(s.n <= METRICS_TABLE_SIZE);
	/* a known label set still counts under its own name */
	metrics_count(m, METRICS_K_REQUESTS, "200", "b0", 1);
	metrics_samples_free(&s);
	metrics_samples_collect(&s, one, 1, METRICS_K_REQUESTS);
	metrics_samples_finish(&s);
	for (size_t i = 0; i < s.n; i++)
		if (strcmp(s.v[i].b, "b0") == 0)
			assert_int_equal(s.v[i].n, 2);
	metrics_samples_free(&s);
	free(m);
}

/* A scraper thread merges while the owner inserts: it never sees a torn label. */
static struct metrics_worker *race_m;
static atomic_int race_done;

static void *
race_reader(void *arg)
{
	struct metrics_worker *one[1] = {race_m};
	uint64_t last = 0;

	(void)arg;
	while (!atomic_load(&race_done)) {
		struct metrics_samples s = {0};
		uint64_t sum = 0;

		metrics_samples_collect(&s, one, 1, METRICS_K_REQUESTS);
		metrics_samples_finish(&s);
		for (size_t i = 0; i < s.n; i++) {
			assert_true(strcmp(s.v[i].a, "200") == 0 || strcmp(s.v[i].a, "other") == 0);
			assert_true(s.v[i].b[0] == 'k' || strcmp(s.v[i].b, "other") == 0);
			sum += s.v[i].n;
		}
		assert_true(sum >= last); /* counters only grow */
		last = sum;
		metrics_samples_free(&s);
	}
	return NULL;
}

static void
test_concurrent_scrape(void **state)
{
	pthread_t t;
	char name[32];

	(void)state;
	race_m = mw_new();
	atomic_store(&race_done, 0);
	assert_int_equal(pthread_create(&t, NULL, race_reader, NULL), 0);
	for (int i = 0; i < 200000; i++) {
		snprintf(name, sizeof(name), "k%d", i % 300);
		metrics_count(race_m, METRICS_K_REQUESTS, "200", name, 1);
	}
	atomic_store(&race_done, 1);
	pthread_join(t, NULL);
	free(race_m);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_bucket_index),      cmocka_unit_test(test_observe),
	    cmocka_unit_test(test_histogram_text),    cmocka_unit_test(test_label_escape),
	    cmocka_unit_test(test_table_and_merge),   cmocka_unit_test(test_table_overflow),
	    cmocka_unit_test(test_concurrent_scrape),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
