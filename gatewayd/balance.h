#ifndef GW_BALANCE_H
#define GW_BALANCE_H

#include <stddef.h>
#include <stdint.h>

/*
 * Load-balancing strategies. The balancer never sees backends directly: the caller
 * fills one struct balance_target per backend (in the config's backend order), marks
 * which are eligible (healthy, circuit lets a request through, not draining, under
 * max_conns, in the chosen datacenter) and asks for an index. State (round-robin
 * cursor, smooth-weighted current weights, the consistent-hash ring) lives in a
 * struct balance_state owned by one worker thread: no locks.
 */

enum balance_strategy {
	BALANCE_ROUND_ROBIN,
	BALANCE_LEAST_CONNECTIONS,
	BALANCE_WEIGHTED,
	BALANCE_IP_HASH,
	BALANCE_ADAPTIVE,
	BALANCE_RANDOM,
	BALANCE_COUNT
};

struct balance_target {
	uint64_t id_hash;  /* util_hash64 of the backend id: ring positions survive reordering */
	int weight;        /* effective weight, >= 1 (slow start already applied by caller) */
	int eligible;      /* 0: never pick */
	uint32_t active;   /* in-flight requests on this backend */
	double ewma_ms;    /* EWMA of response time in ms, 0 when unknown */
	uint32_t recent_failures; /* failures in the recent window, penalises adaptive */
};

#define BALANCE_MAX_TARGETS 256

struct balance_state;

struct balance_state *balance_state_new(uint64_t seed);
void balance_state_free(struct balance_state *s);
/*
 * Tells the state the backend set changed (reload, add/remove): the ring and the
 * weighted-round-robin weights are rebuilt from ids and weights. Cheap when unchanged.
 */
void balance_state_reset(struct balance_state *s, const struct balance_target *t, int n);
/*
 * Picks an eligible target and returns its index, or -1 when none is eligible.
 * key/keylen: the client's address bytes (ip_hash), may be NULL for other strategies.
 */
int balance_pick(struct balance_state *s, enum balance_strategy strategy,
		 const struct balance_target *t, int n, const void *key, size_t keylen);

const char *balance_strategy_name(enum balance_strategy st);
/* -1 when unknown. */
int balance_strategy_from_name(const char *name);
/* "round_robin, least_connections, weighted, ip_hash, adaptive, random" */
const char *balance_strategy_list(void);

#endif
