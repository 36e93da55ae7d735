#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <pthread.h>
#include <stdatomic.h>
#include <cmocka.h>

#include "circuit.h"

#define T0 1000000u /* an arbitrary "now" far from 0 */
#define OPEN_MS 30000u

/* A circuit with threshold 3 that has just opened at T0. */
static void
open_circuit(struct circuit *c)
{
	circuit_init(c, 3, OPEN_MS);
	for (int i = 0; i < 3; i++)
		circuit_failure(c, T0);
	assert_int_equal(circuit_get_state(c), CIRCUIT_OPEN);
}

/* Open at T0, then the probe claimed at T0 + OPEN_MS. */
static void
half_open_circuit(struct circuit *c)
{
	open_circuit(c);
	assert_true(circuit_acquire(c, T0 + OPEN_MS));
	assert_int_equal(circuit_get_state(c), CIRCUIT_HALF_OPEN);
}

static void
test_starts_closed(void **state)
{
	struct circuit c;

	circuit_init(&c, 5, OPEN_MS);
	assert_int_equal(circuit_get_state(&c), CIRCUIT_CLOSED);
	assert_true(circuit_available(&c, 0));
	for (int i = 0; i < 100; i++)
		assert_true(circuit_acquire(&c, T0 + (uint64_t)i));
	assert_int_equal(atomic_load(&c.failures), 0);
}

static void
test_opens_at_threshold(void **state)
{
	struct circuit c;

	circuit_init(&c, 5, OPEN_MS);
	for (int i = 0; i < 4; i++) {
		circuit_failure(&c, T0);
		assert_int_equal(circuit_get_state(&c), CIRCUIT_CLOSED);
		assert_true(circuit_acquire(&c, T0));
	}
	circuit_failure(&c, T0 + 7);
	assert_int_equal(circuit_get_state(&c), CIRCUIT_OPEN);
	assert_int_equal(atomic_load(&c.opened_at_ms), T0 + 7);
}

static void
test_threshold_one(void **state)
{
	struct circuit c;

	circuit_init(&c, 1, OPEN_MS);
	circuit_failure(&c, T0);
	assert_int_equal(circuit_get_state(&c), CIRCUIT_OPEN);
}

static void
test_success_resets_count(void **state)
{
	struct circuit c;

	circuit_init(&c, 5, OPEN_MS);
	for (int round = 0; round < 10; round++) {
		for (int i = 0; i < 4; i++)
			circuit_failure(&c, T0);
		circuit_success(&c, T0);
		assert_int_equal(atomic_load(&c.failures), 0);
	}
	assert_int_equal(circuit_get_state(&c), CIRCUIT_CLOSED);
}

static void
test_open_refuses_until_open_ms(void **state)
{
	struct circuit c;

	open_circuit(&c);
	assert_false(circuit_available(&c, T0));
	assert_false(circuit_acquire(&c, T0));
	assert_false(circuit_available(&c, T0 + OPEN_MS - 1));
	assert_false(circuit_acquire(&c, T0 + OPEN_MS - 1));
	assert_int_equal(circuit_get_state(&c), CIRCUIT_OPEN);
}

/* The health checks saw the backend come back: an open circuit closes at once. */
static void
test_reset_closes_open(void **state)
{
	struct circuit c;

	open_circuit(&c);
	circuit_reset(&c);
	assert_int_equal(circuit_get_state(&c), CIRCUIT_CLOSED);
	assert_int_equal(atomic_load(&c.failures), 0);
	assert_true(circuit_acquire(&c, T0 + 1));
	/* and it can open again from scratch */
	for (int i = 0; i < 3; i++)
		circuit_failure(&c, T0 + 2);
	assert_int_equal(circuit_get_state(&c), CIRCUIT_OPEN);
}

/* A probe in flight decides; closed stays closed with its failure count. */
static void
test_reset_leaves_half_open_and_closed(void **state)
{
	struct circuit c;

	half_open_circuit(&c);
	circuit_reset(&c);
	assert_int_equal(circuit_get_state(&c), CIRCUIT_HALF_OPEN);
	circuit_failure(&c, T0 + OPEN_MS + 5);
	assert_int_equal(circuit_get_state(&c), CIRCUIT_OPEN);

	circuit_init(&c, 3, OPEN_MS);
	circuit_failure(&c, T0);
	circuit_reset(&c);
	assert_int_equal(circuit_get_state(&c), CIRCUIT_CLOSED);
	assert_int_equal(atomic_load(&c.failures), 1);
}

/* available is a pure check: it reports the probe slot but does not take it. */
static void
test_available_is_pure(void **state)
{
	struct circuit c;

	open_circuit(&c);
	for (int i = 0; i < 10; i++)
		assert_true(circuit_available(&c, T0 + OPEN_MS));
	assert_int_equal(circuit_get_state(&c), CIRCUIT_OPEN);
	assert_int_equal(atomic_load(&c.probe_busy), 0);
	assert_int_equal(atomic_load(&c.opened_at_ms), T0);
}

static void
test_acquire_after_open_ms_half_opens(void **state)
{
	struct circuit c;

	open_circuit(&c);
	assert_true(circuit_acquire(&c, T0 + OPEN_MS));
	assert_int_equal(circuit_get_state(&c), CIRCUIT_HALF_OPEN);
	assert_int_equal(atomic_load(&c.probe_busy), 1);
}

static void
test_half_open_single_probe(void **state)
{
	struct circuit c;

	half_open_circuit(&c);
	for (int i = 0; i < 100; i++) {
		assert_false(circuit_available(&c, T0 + OPEN_MS + (uint64_t)i * 10));
		assert_false(circuit_acquire(&c, T0 + OPEN_MS + (uint64_t)i * 10));
	}
	assert_int_equal(circuit_get_state(&c), CIRCUIT_HALF_OPEN);
}

static void
test_probe_success_closes(void **state)
{
	struct circuit c;

	half_open_circuit(&c);
	circuit_success(&c, T0 + OPEN_MS + 5);
	assert_int_equal(circuit_get_state(&c), CIRCUIT_CLOSED);
	assert_int_equal(atomic_load(&c.failures), 0);
	assert_int_equal(atomic_load(&c.probe_busy), 0);
	assert_true(circuit_available(&c, T0 + OPEN_MS + 5));
	assert_true(circuit_acquire(&c, T0 + OPEN_MS + 5));
	/* counting starts from zero again: threshold - 1 failures keep it closed */
	circuit_failure(&c, T0 + OPEN_MS + 6);
	circuit_failure(&c, T0 + OPEN_MS + 6);
	assert_int_equal(circuit_get_state(&c), CIRCUIT_CLOSED);
	circuit_failure(&c, T0 + OPEN_MS + 6);
	assert_int_equal(circuit_get_state(&c), CIRCUIT_OPEN);
}

static void
test_probe_failure_reopens_fresh(void **state)
{
	struct circuit c;
	uint64_t t1 = T0 + OPEN_MS + 500;

	half_open_circuit(&c);
	circuit_failure(&c, t1);
	assert_int_equal(circuit_get_state(&c), CIRCUIT_OPEN);
	assert_int_equal(atomic_load(&c.opened_at_ms), t1);
	assert_int_equal(atomic_load(&c.probe_busy), 0);
	/* a whole new open period from t1, not from T0 */
	assert_false(circuit_available(&c, t1 + OPEN_MS - 1));
	assert_false(circuit_acquire(&c, t1 + OPEN_MS - 1));
	assert_true(circuit_available(&c, t1 + OPEN_MS));
	assert_true(circuit_acquire(&c, t1 + OPEN_MS));
	assert_int_equal(circuit_get_state(&c), CIRCUIT_HALF_OPEN);
	circuit_success(&c, t1 + OPEN_MS + 1);
	assert_int_equal(circuit_get_state(&c), CIRCUIT_CLOSED);
}

static void
test_threshold_zero_never_opens(void **state)
{
	struct circuit c;

	circuit_init(&c, 0, OPEN_MS);
	for (int i = 0; i < 10000; i++)
		circuit_failure(&c, T0);
	assert_int_equal(circuit_get_state(&c), CIRCUIT_CLOSED);
	assert_true(circuit_acquire(&c, T0));
	assert_true(circuit_available(&c, T0));
}

/* Late outcomes of requests sent before the circuit opened change nothing. */
static void
test_open_ignores_late_outcomes(void **state)
{
	struct circuit c;

	open_circuit(&c);
	circuit_success(&c, T0 + 10);
	assert_int_equal(circuit_get_state(&c), CIRCUIT_OPEN);
	circuit_failure(&c, T0 + OPEN_MS - 10);
	assert_int_equal(atomic_load(&c.opened_at_ms), T0); /* not extended */
	assert_true(circuit_acquire(&c, T0 + OPEN_MS));
}

static void
test_configure_keeps_state(void **state)
{
	struct circuit c;

	open_circuit(&c);
	circuit_configure(&c, 10, 5000);
	assert_int_equal(circuit_get_state(&c), CIRCUIT_OPEN);
	assert_int_equal(atomic_load(&c.opened_at_ms), T0);
	/* the new open period applies to the current one */
	assert_false(circuit_acquire(&c, T0 + 4999));
	assert_true(circuit_acquire(&c, T0 + 5000));
	circuit_configure(&c, 10, 1);
	assert_int_equal(circuit_get_state(&c), CIRCUIT_HALF_OPEN);
	assert_int_equal(atomic_load(&c.probe_busy), 1);
	circuit_success(&c, T0 + 5001);
	assert_int_equal(circuit_get_state(&c), CIRCUIT_CLOSED);
}

static void
test_configure_keeps_failure_count(void **state)
{
	struct circuit c;

	circuit_init(&c, 10, OPEN_MS);
	for (int i = 0; i < 4; i++)
		circuit_failure(&c, T0);
	circuit_configure(&c, 20, OPEN_MS);
	assert_int_equal(atomic_load(&c.failures), 4);
	assert_int_equal(circuit_get_state(&c), CIRCUIT_CLOSED);
	/* lowered below the count: the next failure opens */
	circuit_configure(&c, 3, OPEN_MS);
	assert_int_equal(circuit_get_state(&c), CIRCUIT_CLOSED);
	circuit_failure(&c, T0);
	assert_int_equal(circuit_get_state(&c), CIRCUIT_OPEN);
}

static void
test_configure_zero_disables(void **state)
{
	struct circuit c;

	circuit_init(&c, 3, OPEN_MS);
	circuit_failure(&c, T0);
	circuit_failure(&c, T0);
	circuit_configure(&c, 0, OPEN_MS);
	for (int i = 0; i < 50; i++)
		circuit_failure(&c, T0);
	assert_int_equal(circuit_get_state(&c), CIRCUIT_CLOSED);
}

/* A clock that goes backwards must not count as time elapsed. */
static void
test_clock_backwards(void **state)
{
	struct circuit c;

	open_circuit(&c);
	assert_false(circuit_available(&c, T0 - 1));
	assert_false(circuit_acquire(&c, 0));
	assert_int_equal(circuit_get_state(&c), CIRCUIT_OPEN);
}

static void
test_open_ms_zero_probes_at_once(void **state)
{
	struct circuit c;

	circuit_init(&c, 1, 0);
	circuit_failure(&c, T0);
	assert_int_equal(circuit_get_state(&c), CIRCUIT_OPEN);
	assert_true(circuit_acquire(&c, T0));
	assert_false(circuit_acquire(&c, T0)); /* still one probe at a time */
	circuit_failure(&c, T0);
	assert_true(circuit_acquire(&c, T0));
}

/* A probe whose outcome never arrives does not wedge the circuit half-open forever. */
static void
test_lost_probe_replaced(void **state)
{
	struct circuit c;
	uint64_t sent = T0 + OPEN_MS;

	half_open_circuit(&c);
	assert_false(circuit_acquire(&c, sent + 2 * OPEN_MS - 1));
	assert_true(circuit_available(&c, sent + 2 * OPEN_MS));
	assert_true(circuit_acquire(&c, sent + 2 * OPEN_MS));
	assert_false(circuit_acquire(&c, sent + 2 * OPEN_MS)); /* only one replacement */
	assert_int_equal(circuit_get_state(&c), CIRCUIT_HALF_OPEN);
	circuit_success(&c, sent + 2 * OPEN_MS + 3);
	assert_int_equal(circuit_get_state(&c), CIRCUIT_CLOSED);
}

static void
test_state_names(void **state)
{
	assert_string_equal(circuit_state_name(CIRCUIT_CLOSED), "closed");
	assert_string_equal(circuit_state_name(CIRCUIT_OPEN), "open");
	assert_string_equal(circuit_state_name(CIRCUIT_HALF_OPEN), "half_open");
	assert_string_equal(circuit_state_name((enum circuit_state)7), "unknown");
}

/* ---- threads ---- */

#define NTHREADS 4

struct race {
	struct circuit c;
	pthread_barrier_t start;
	_Atomic int wins;
	_Atomic int in_flight;
	_Atomic int max_in_flight;
	_Atomic uint64_t clock;
	int rounds;
};

static void *
race_acquire(void *arg)
{
	struct race *r = arg;

	pthread_barrier_wait(&r->start);
	if (circuit_acquire(&r->c, T0 + OPEN_MS))
		atomic_fetch_add(&r->wins, 1);
	return NULL;
}

static void
run_threads(struct race *r, void *(*fn)(void *))
{
	pthread_t th[NTHREADS];

	for (int i = 0; i < NTHREADS; i++)
		assert_int_equal(pthread_create(&th[i], NULL, fn, r), 0);
	for (int i = 0; i < NTHREADS; i++)
		pthread_join(th[i], NULL);
}

/* Four workers see the open period end at the same moment: exactly one probes. */
static void
test_race_single_probe(void **state)
{
	static struct race r;

	for (int round = 0; round < 300; round++) {
		open_circuit(&r.c);
		atomic_store(&r.wins, 0);
		pthread_barrier_init(&r.start, NULL, NTHREADS);
		run_threads(&r, race_acquire);
		pthread_barrier_destroy(&r.start);
		assert_int_equal(atomic_load(&r.wins), 1);
		assert_int_equal(circuit_get_state(&r.c), CIRCUIT_HALF_OPEN);
	}
}

static void *
race_failures(void *arg)
{
	struct race *r = arg;

	pthread_barrier_wait(&r->start);
	for (int i = 0; i < 1000; i++)
		circuit_failure(&r->c, T0);
	return NULL;
}

/* Concurrent failures: the circuit opens once, at T0, and stays consistent. */
static void
test_race_failures_open_once(void **state)
{
	static struct race r;

	circuit_init(&r.c, 50, OPEN_MS);
	pthread_barrier_init(&r.start, NULL, NTHREADS);
	run_threads(&r, race_failures);
	pthread_barrier_destroy(&r.start);
	assert_int_equal(circuit_get_state(&r.c), CIRCUIT_OPEN);
	assert_int_equal(atomic_load(&r.c.opened_at_ms), T0);
	assert_int_equal(atomic_load(&r.c.probe_busy), 0);
	assert_true(circuit_acquire(&r.c, T0 + OPEN_MS));
}

/*
 * Workers hammer a failing backend with a moving clock: every granted request is a
 * probe and fails, and at no moment are two probes out together.
 */
static void *
race_probes(void *arg)
{
	struct race *r = arg;

	pthread_barrier_wait(&r->start);
	for (int i = 0; i < r->rounds; i++) {
		uint64_t now = atomic_fetch_add(&r->clock, 1);

		if (!circuit_acquire(&r->c, now))
			continue;
		int n = atomic_fetch_add(&r->in_flight, 1) + 1;
		int m = atomic_load(&r->max_in_flight);

		while (n > m && !atomic_compare_exchange_weak(&r->max_in_flight, &m, n))
			;
		atomic_fetch_add(&r->wins, 1);
		atomic_fetch_sub(&r->in_flight, 1);
		circuit_failure(&r->c, atomic_load(&r->clock));
	}
	return NULL;
}

static void
test_race_probes_never_overlap(void **state)
{
	static struct race r;

	circuit_init(&r.c, 1, 20);
	circuit_failure(&r.c, T0);
	atomic_store(&r.clock, T0);
	atomic_store(&r.wins, 0);
	atomic_store(&r.in_flight, 0);
	atomic_store(&r.max_in_flight, 0);
	/* 4 * 10000 clock ticks: a probe can never look lost (60 s) in this test */
	r.rounds = 10000;
	pthread_barrier_init(&r.start, NULL, NTHREADS);
	run_threads(&r, race_probes);
	pthread_barrier_destroy(&r.start);
	assert_int_equal(atomic_load(&r.max_in_flight), 1);
	assert_true(atomic_load(&r.wins) > 10);
	assert_int_equal(circuit_get_state(&r.c), CIRCUIT_OPEN);
}

/* Probes that succeed: the race to close and the next failures stay consistent. */
static void *
race_mixed(void *arg)
{
	struct race *r = arg;

	pthread_barrier_wait(&r->start);
	for (int i = 0; i < r->rounds; i++) {
		uint64_t now = atomic_fetch_add(&r->clock, 1);

		if (!circuit_acquire(&r->c, now))
			continue;
		if (i % 3 == 0)
			circuit_success(&r->c, now);
		else
			circuit_failure(&r->c, now);
	}
	return NULL;
}

static void
test_race_mixed_consistent(void **state)
{
	static struct race r;
	enum circuit_state st;

	circuit_init(&r.c, 2, 5);
	atomic_store(&r.clock, T0);
	r.rounds = 50000;
	pthread_barrier_init(&r.start, NULL, NTHREADS);
	run_threads(&r, race_mixed);
	pthread_barrier_destroy(&r.start);
	st = circuit_get_state(&r.c);
	assert_true(st == CIRCUIT_CLOSED || st == CIRCUIT_OPEN || st == CIRCUIT_HALF_OPEN);
	assert_int_equal(atomic_load(&r.c.probe_busy), st == CIRCUIT_HALF_OPEN);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_starts_closed),
	    cmocka_unit_test(test_opens_at_threshold),
	    cmocka_unit_test(test_threshold_one),
	    cmocka_unit_test(test_success_resets_count),
	    cmocka_unit_test(test_open_refuses_until_open_ms),
	    cmocka_unit_test(test_available_is_pure),
	    cmocka_unit_test(test_acquire_after_open_ms_half_opens),
	    cmocka_unit_test(test_half_open_single_probe),
	    cmocka_unit_test(test_probe_success_closes),
	    cmocka_unit_test(test_probe_failure_reopens_fresh),
	    cmocka_unit_test(test_threshold_zero_never_opens),
	    cmocka_unit_test(test_open_ignores_late_outcomes),
	    cmocka_unit_test(test_configure_keeps_state),
	    cmocka_unit_test(test_configure_keeps_failure_count),
	    cmocka_unit_test(test_configure_zero_disables),
	    cmocka_unit_test(test_clock_backwards),
	    cmocka_unit_test(test_open_ms_zero_probes_at_once),
	    cmocka_unit_test(test_lost_probe_replaced),
	    cmocka_unit_test(test_state_names),
	    cmocka_unit_test(test_reset_closes_open),
	    cmocka_unit_test(test_reset_leaves_half_open_and_closed),
	    cmocka_unit_test(test_race_single_probe),
	    cmocka_unit_test(test_race_failures_open_once),
	    cmocka_unit_test(test_race_probes_never_overlap),
	    cmocka_unit_test(test_race_mixed_consistent),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
