/*
 * Unit tests for gatewayd/connlimit.c: per-address counting against a maximum, slots
 * given back at zero (a flood of addresses leaves nothing behind), a full table letting
 * connections in untracked, deletion keeping every other address findable, threads.
 */

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <string.h>

#include "connlimit.h"

static void
addr_of(uint32_t n, uint8_t a[16])
{
	memset(a, 0, 16);
	a[10] = a[11] = 0xff; /* IPv4-mapped, like cidr.h's 16-byte form */
	a[12] = (uint8_t)(n >> 24);
	a[13] = (uint8_t)(n >> 16);
	a[14] = (uint8_t)(n >> 8);
	a[15] = (uint8_t)n;
}

static void
test_counts_up_to_max(void **state)
{
	struct connlimit *cl = connlimit_new(1024);
	uint8_t a[16], b[16];

	addr_of(0x7f000001, a);
	addr_of(0x7f000002, b);
	for (int i = 0; i < 3; i++)
		assert_int_equal(connlimit_acquire(cl, a, 3), CONNLIMIT_COUNTED);
	assert_int_equal(connlimit_acquire(cl, a, 3), CONNLIMIT_OVER);
	assert_int_equal(connlimit_acquire(cl, b, 3), CONNLIMIT_COUNTED);
	assert_int_equal(connlimit_get(cl, a), 3);
	connlimit_release(cl, a);
	assert_int_equal(connlimit_acquire(cl, a, 3), CONNLIMIT_COUNTED);
	assert_int_equal(connlimit_tracked(cl), 2);
	connlimit_free(cl);
}

static void
test_flood_leaves_nothing(void **state)
{
	struct connlimit *cl = connlimit_new(4096);
	uint8_t a[16];
	int counted = 0;

	/* 100k addresses, two connections each, then all closed: every slot comes back */
	for (uint32_t n = 0; n < 100000; n++) {
		addr_of(n * 2654435761u, a);
		if (connlimit_acquire(cl, a, 8) == CONNLIMIT_COUNTED) {
			assert_int_equal(connlimit_acquire(cl, a, 8), CONNLIMIT_COUNTED);
			connlimit_release(cl, a);
			connlimit_release(cl, a);
			counted++;
		}
	}
	assert_int_equal(counted, 100000);
	assert_int_equal(connlimit_tracked(cl), 0);
	connlimit_free(cl);
}

static void
test_full_table_is_untracked_and_deletes_keep_others(void **state)
{
	struct connlimit *cl = connlimit_new(64); /* one slot per shard */
	uint8_t a[16];
	int untracked = 0;
	uint32_t n;

	for (n = 0; n < 5000; n++) {
		addr_of(n, a);
		if (connlimit_acquire(cl, a, 4) == CONNLIMIT_UNTRACKED)
			untracked++;
	}
	assert_true(untracked > 0);
	assert_true(connlimit_tracked(cl) <= 64);
	/* remove every other tracked address; the rest are still found with their count */
	for (n = 0; n < 5000; n += 2) {
		addr_of(n, a);
		if (connlimit_get(cl, a) == 1)
			connlimit_release(cl, a);
	}
	for (n = 1; n < 5000; n += 2) {
		addr_of(n, a);
		uint32_t c = connlimit_get(cl, a);
		assert_true(c == 0 || c == 1);
		if (c == 1) {
			connlimit_release(cl, a);
			assert_int_equal(connlimit_get(cl, a), 0);
		}
	}
	assert_int_equal(connlimit_tracked(cl), 0);
	connlimit_free(cl);
}

static void *
churn(void *arg)
{
	struct connlimit *cl = arg;
	uint8_t a[16];

	for (uint32_t i = 0; i < 200000; i++) {
		addr_of(i % 977, a);
		if (connlimit_acquire(cl, a, 1000000) == CONNLIMIT_COUNTED)
			connlimit_release(cl, a);
	}
	return NULL;
}

static void
test_threads_balance_to_zero(void **state)
{
	struct connlimit *cl = connlimit_new(8192);
	pthread_t t[4];

	for (int i = 0; i < 4; i++)
		assert_int_equal(pthread_create(&t[i], NULL, churn, cl), 0);
	for (int i = 0; i < 4; i++)
		pthread_join(t[i], NULL);
	assert_int_equal(connlimit_tracked(cl), 0);
	connlimit_free(cl);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_counts_up_to_max),
	    cmocka_unit_test(test_flood_leaves_nothing),
	    cmocka_unit_test(test_full_table_is_untracked_and_deletes_keep_others),
	    cmocka_unit_test(test_threads_balance_to_zero),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
