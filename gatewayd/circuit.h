#ifndef GW_CIRCUIT_H
#define GW_CIRCUIT_H

#include <stdint.h>

/*
 * A circuit breaker per backend, shared by every worker thread (atomics, no locks).
 * closed --(failures consecutive failures)--> open --(open_ms elapsed)--> half_open:
 * exactly one probe request is let through; its success closes the circuit, its
 * failure opens it again for another open_ms.
 */

enum circuit_state { CIRCUIT_CLOSED, CIRCUIT_OPEN, CIRCUIT_HALF_OPEN };

struct circuit {
	_Atomic uint32_t state;
	_Atomic uint32_t failures;     /* consecutive */
	_Atomic uint64_t opened_at_ms; /* when it last opened */
	_Atomic uint32_t probe_busy;   /* 1 while the half-open probe is in flight */
	uint32_t threshold;
	uint64_t open_ms;
};

void circuit_init(struct circuit *c, uint32_t threshold, uint64_t open_ms);
/* Changes the thresholds (reload) without resetting the state. */
void circuit_configure(struct circuit *c, uint32_t threshold, uint64_t open_ms);
/* 1 when a request could be sent now (closed, or open long enough and no probe out). */
int circuit_available(const struct circuit *c, uint64_t now_ms);
/*
 * Claims the right to send one request: 1 granted, 0 refused. Closed: always. Open and
 * open_ms elapsed: moves to half_open and grants the single probe. Half-open with the
 * probe out: refused.
 */
int circuit_acquire(struct circuit *c, uint64_t now_ms);
void circuit_success(struct circuit *c, uint64_t now_ms);
/*
 * open -> closed at once (no probe), for an independent proof of health: the active
 * health checks saw the backend come back. No effect unless open with no probe out.
 */
void circuit_reset(struct circuit *c);
void circuit_failure(struct circuit *c, uint64_t now_ms);
/* The state as an operator sees it at now (open with open_ms elapsed still reads open
 * until a probe is claimed). */
enum circuit_state circuit_get_state(const struct circuit *c);
const char *circuit_state_name(enum circuit_state s);

#endif
