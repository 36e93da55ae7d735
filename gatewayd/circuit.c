#include <stdatomic.h>

#include "circuit.h"

/*
 * How the fields are used:
 * - probe_busy is a token: a transition out of closed or open is made only by the
 *   caller that flipped it 0 -> 1, so those transitions never race each other. The
 *   token taken to enter half_open stays taken for the whole half-open state (it is the
 *   probe's) and is released by whoever ends it (the CAS on state picks one reporter).
 * - opened_at_ms is when the circuit opened; while half-open, when the probe was sent
 *   (so that a probe whose outcome never comes back can be detected, see below). It is
 *   always written before the token is released, so nobody judges a new open period by
 *   the previous one's time.
 * - threshold and open_ms are plain fields that circuit_configure may change while
 *   workers read them: they are accessed with the __atomic builtins.
 *
 * Everything is sequentially consistent: transitions are rare and a seq_cst load is a
 * plain load on x86 and arm64, so the fast path (closed) costs one load.
 */

/*
 * A probe whose success or failure never arrived (a lost request, a caller bug) would
 * keep the circuit half-open forever; past this the probe is presumed lost and another
 * one is allowed.
 */
#define CIRCUIT_PROBE_STALE_MIN_MS 60000u

static uint32_t
circuit_threshold(const struct circuit *c)
{
	return __atomic_load_n(&c->threshold, __ATOMIC_RELAXED);
}

static uint64_t
circuit_open_ms(const struct circuit *c)
{
	return __atomic_load_n(&c->open_ms, __ATOMIC_RELAXED);
}

/* A clock that went backwards counts as no time elapsed. */
static int
circuit_elapsed(uint64_t since, uint64_t now_ms, uint64_t period)
{
	return now_ms >= since && now_ms - since >= period;
}

static uint64_t
circuit_probe_stale_ms(const struct circuit *c)
{
	uint64_t twice = circuit_open_ms(c) * 2;

	return twice > CIRCUIT_PROBE_STALE_MIN_MS ? twice : CIRCUIT_PROBE_STALE_MIN_MS;
}

void
circuit_init(struct circuit *c, uint32_t threshold, uint64_t open_ms)
{
	atomic_init(&c->state, CIRCUIT_CLOSED);
	atomic_init(&c->failures, 0);
	atomic_init(&c->opened_at_ms, 0);
	atomic_init(&c->probe_busy, 0);
	c->threshold = threshold;
	c->open_ms = open_ms;
}

void
circuit_configure(struct circuit *c, uint32_t threshold, uint64_t open_ms)
{
	__atomic_store_n(&c->threshold, threshold, __ATOMIC_RELAXED);
	__atomic_store_n(&c->open_ms, open_ms, __ATOMIC_RELAXED);
}

int
circuit_available(const struct circuit *c, uint64_t now_ms)
{
	switch (atomic_load(&c->state)) {
	case CIRCUIT_CLOSED:
		return 1;
	case CIRCUIT_OPEN:
		return !atomic_load(&c->probe_busy) &&
		       circuit_elapsed(atomic_load(&c->opened_at_ms), now_ms, circuit_open_ms(c));
	default:
		return circuit_elapsed(atomic_load(&c->opened_at_ms), now_ms,
		                       circuit_probe_stale_ms(c));
	}
}

static int
circuit_take_token(struct circuit *c)
{
	uint32_t expect = 0;

	return atomic_compare_exchange_strong(&c->probe_busy, &expect, 1);
}

/*
 * open -> half_open. With the token held nobody else can move the state or opened_at,
 * so the check made after taking it stands; the token then stays out with the probe.
 */
static int
circuit_start_probe(struct circuit *c, uint64_t now_ms)
{
	if (!circuit_elapsed(atomic_load(&c->opened_at_ms), now_ms, circuit_open_ms(c)))
		return 0;
	if (!circuit_take_token(c))
		return 0;
	/* re-check: the open period seen above may have ended (and a new one begun) since */
	if (atomic_load(&c->state) != CIRCUIT_OPEN ||
	    !circuit_elapsed(atomic_load(&c->opened_at_ms), now_ms, circuit_open_ms(c))) {
		atomic_store(&c->probe_busy, 0);
		return 0;
	}
	atomic_store(&c->opened_at_ms, now_ms);
	atomic_store(&c->state, CIRCUIT_HALF_OPEN);
	return 1;
}

/* half_open with a probe out for too long: exactly one caller replaces it. */
static int
circuit_replace_probe(struct circuit *c, uint64_t now_ms)
{
	uint64_t sent = atomic_load(&c->opened_at_ms);

	if (!circuit_elapsed(sent, now_ms, circuit_probe_stale_ms(c)))
		return 0;
	return atomic_compare_exchange_strong(&c->opened_at_ms, &sent, now_ms) &&
	       atomic_load(&c->state) == CIRCUIT_HALF_OPEN;
}

int
circuit_acquire(struct circuit *c, uint64_t now_ms)
{
	switch (atomic_load(&c->state)) {
	case CIRCUIT_CLOSED:
		return 1;
	case CIRCUIT_OPEN:
		return circuit_start_probe(c, now_ms);
	default:
		return circuit_replace_probe(c, now_ms);
	}
}

void
circuit_success(struct circuit *c, uint64_t now_ms)
{
	uint32_t expect = CIRCUIT_HALF_OPEN;

	switch (atomic_load(&c->state)) {
	case CIRCUIT_CLOSED:
		/* skip the store when already 0: no cache-line ping-pong between workers */
		if (atomic_load_explicit(&c->failures, memory_order_relaxed) != 0)
			atomic_store(&c->failures, 0);
		break;
	case CIRCUIT_HALF_OPEN:
		atomic_store(&c->failures, 0);
		if (atomic_compare_exchange_strong(&c->state, &expect, CIRCUIT_CLOSED))
			atomic_store(&c->probe_busy, 0);
		break;
	default:
		/* open: a request sent before the circuit opened; the probe decides */
		break;
	}
}

void
circuit_reset(struct circuit *c)
{
	/* only an open circuit with no probe out: a probe in flight decides by itself */
	if (atomic_load(&c->state) != CIRCUIT_OPEN || !circuit_take_token(c))
		return;
	if (atomic_load(&c->state) == CIRCUIT_OPEN) {
		atomic_store(&c->failures, 0);
		atomic_store(&c->state, CIRCUIT_CLOSED);
	}
	atomic_store(&c->probe_busy, 0);
}

/* closed -> open, by the failure that reached the threshold (whoever gets the token). */
static void
circuit_trip(struct circuit *c, uint64_t now_ms)
{
	if (!circuit_take_token(c))
		return;
	if (atomic_load(&c->state) == CIRCUIT_CLOSED) {
		atomic_store(&c->opened_at_ms, now_ms);
		atomic_store(&c->state, CIRCUIT_OPEN);
	}
	atomic_store(&c->probe_busy, 0);
}

/* half_open -> open: the probe failed; the fresh opened_at goes in before the token. */
static void
circuit_reopen(struct circuit *c, uint64_t now_ms)
{
	uint32_t expect = CIRCUIT_HALF_OPEN;

	if (!atomic_compare_exchange_strong(&c->state, &expect, CIRCUIT_OPEN))
		return;
	atomic_store(&c->opened_at_ms, now_ms);
	atomic_store(&c->probe_busy, 0);
}

void
circuit_failure(struct circuit *c, uint64_t now_ms)
{
	uint32_t n, threshold;

	switch (atomic_load(&c->state)) {
	case CIRCUIT_CLOSED:
		n = atomic_fetch_add(&c->failures, 1) + 1;
		threshold = circuit_threshold(c);
		/* >=: a lowered threshold (reload) opens on the next failure */
		if (threshold != 0 && n >= threshold)
			circuit_trip(c, now_ms);
		break;
	case CIRCUIT_HALF_OPEN:
		circuit_reopen(c, now_ms);
		break;
	default:
		/* open: late failures of earlier requests must not extend the open period */
		break;
	}
}

enum circuit_state
circuit_get_state(const struct circuit *c)
{
	return (enum circuit_state)atomic_load(&c->state);
}

const char *
circuit_state_name(enum circuit_state s)
{
	switch (s) {
	case CIRCUIT_CLOSED:
		return "closed";
	case CIRCUIT_OPEN:
		return "open";
	case CIRCUIT_HALF_OPEN:
		return "half_open";
	}
	return "unknown";
}
