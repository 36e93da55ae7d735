/*
 * GCRA rate limiter over a fixed-size, sharded open-addressing table.
 *
 * GCRA keeps one number per key, the theoretical arrival time (TAT): the instant at
 * which the key's quota would be full again if it made no more requests. With an
 * emission interval T (one request's worth of time, period/N) and a tolerance
 * tau = (N-1)*T, a request at `now` passes when max(TAT, now) - now <= tau, and then
 * TAT becomes max(TAT, now) + T. A fresh key (TAT <= now) therefore gets exactly N
 * requests at once and then one every T: a burst of N and an even refill, never the 2N
 * a fixed window lets through across a boundary. tau is (N-1)*T rather than period-T so
 * that the burst stays exactly N when T had to be rounded.
 *
 * Time is kept in nanoseconds: T = 10 ns at 100000000/1s is still exact, and a 64-bit
 * TAT lasts 584 years of uptime. T is rounded up when period/N is not whole, so
 * rounding can only make the limit stricter, by under 1 ns per request.
 *
 * Table: a slot is {key hash, TAT}, 16 bytes, four per cache line. A key lives in a
 * window of RATELIMIT_PROBE slots from its home slot, inside one shard. Reading and
 * updating an existing key is lock-free: scan the window for the hash, then a CAS loop
 * on the TAT. Changing which key a slot holds (claiming a slot for a new key, evicting,
 * sweeping) is done under the shard's mutex. Why not claim with a bare CAS on the key:
 * two threads seeing a new key at the same time can pick two different free slots (one
 * sees a slot that was freed a moment ago, the other does not), and the key ends up
 * twice in the table with two quotas. Under the mutex the claimer rescans the window
 * before claiming, so a key is never in two slots. Claims happen once per key per
 * window of inactivity, so the mutex is off the path of a key that is already known.
 *
 * A slot being re-keyed has its TAT set to RATELIMIT_BUSY first. A lock-free updater
 * that reads BUSY falls back to the mutex (which the re-keyer holds), and one that read
 * the TAT before the re-keying re-checks the key after its TAT load and then fails its
 * CAS, because the TAT has changed. (The new TAT is a fresh now + T, which an updater of
 * the evicted key could only have read if that key's TAT had been the very same
 * nanosecond; the cost of that coincidence would be one request counted to the wrong
 * key.)
 *
 * Memory is fixed at creation: an expired slot (TAT <= now) means the same as an absent
 * key and is reused first; when a window holds only live keys, the one with the smallest
 * TAT, nearest to a full quota, is evicted, so losing its state forgives the least.
 */

#include <pthread.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "ratelimit.h"
#include "util.h"
#include "xmalloc.h"

#define RATELIMIT_PROBE 8         /* window of slots a key may live in */
#define RATELIMIT_SHARDS 64       /* at most; fewer for tiny tables */
#define RATELIMIT_SHARD_MIN 64    /* slots per shard before the table is sharded */
#define RATELIMIT_CAPACITY_MIN 16 /* at least two probe windows */
#define RATELIMIT_CAPACITY_MAX (1ULL << 34)
#define RATELIMIT_CACHE_LINE 64
#define RATELIMIT_SHARD_BITS_SHIFT 40 /* shard index comes from hash bits 40.. */
#define RATELIMIT_BUSY UINT64_MAX     /* TAT of a slot being re-keyed */
#define RATELIMIT_TAT_MAX (UINT64_MAX - 1)
#define RATELIMIT_NS_PER_MS 1000000ULL
#define RATELIMIT_NS_PER_US 1000ULL

struct ratelimit_slot {
	_Atomic uint64_t key; /* util_hash64 of the key, 0 = empty */
	_Atomic uint64_t tat; /* ns; <= now means a full quota */
};

struct ratelimit_shard {
	alignas(RATELIMIT_CACHE_LINE) pthread_mutex_t lock; /* re-keying slots only */
	_Atomic size_t count;                               /* occupied slots */
	struct ratelimit_slot *slots;
};

struct ratelimit {
	struct ratelimit_shard *shards;
	void *mem; /* one block: shards, then slots, cache-line aligned */
	size_t memsize;
	size_t nshards;
	size_t shard_slots;
	uint64_t shard_mask;
	uint64_t slot_mask;
};

/* The rate turned into GCRA parameters, in ns. */
struct ratelimit_gcra {
	uint64_t n;
	uint64_t t;   /* emission interval */
	uint64_t tau; /* (n - 1) * t */
};

static inline uint64_t
ratelimit_sat_mul(uint64_t a, uint64_t b)
{
	uint64_t r;

	return __builtin_mul_overflow(a, b, &r) || r > RATELIMIT_TAT_MAX ? RATELIMIT_TAT_MAX : r;
}

static inline uint64_t
ratelimit_sat_add(uint64_t a, uint64_t b)
{
	uint64_t r;

	return __builtin_add_overflow(a, b, &r) || r > RATELIMIT_TAT_MAX ? RATELIMIT_TAT_MAX : r;
}

/* Rounded up, so that waiting the reported time is always enough. */
static inline uint64_t
ratelimit_ns_to_ms(uint64_t ns)
{
	return ns / RATELIMIT_NS_PER_MS + (ns % RATELIMIT_NS_PER_MS != 0);
}

/* 0 with g filled, or -1 when the rate does not limit (no count or no period). */
static inline int
ratelimit_gcra_of(const struct conf_rate *rate, struct ratelimit_gcra *g)
{
	uint64_t period;

	if (rate == NULL || rate->count == 0 || rate->period_ms == 0)
		return -1;
	period = ratelimit_sat_mul(rate->period_ms, RATELIMIT_NS_PER_MS);
	g->n = rate->count;
	g->t = period / g->n + (period % g->n != 0);
	g->tau = ratelimit_sat_mul(g->n - 1, g->t);
	return 0;
}

/*
 * Fills out from the decision and the TAT that holds after it: how much of the quota is
 * in use (d), how many more requests fit in tau, when it is full again.
 */
static void
ratelimit_fill(const struct ratelimit_gcra *g, int allowed, uint64_t tat, uint64_t now,
               struct ratelimit_result *out)
{
	uint64_t d = tat > now ? tat - now : 0;

	out->allowed = allowed;
	out->limit = g->n;
	out->reset_ms = ratelimit_ns_to_ms(d);
	out->remaining = d <= g->tau ? (g->tau - d) / g->t + 1 : 0;
	if (out->remaining > g->n)
		out->remaining = g->n;
	/* the header's contract: 0 once allowed, even when the next one would wait */
	out->retry_after_ms = allowed || d <= g->tau ? 0 : ratelimit_ns_to_ms(d - g->tau);
}

static void
ratelimit_unlimited(struct ratelimit_result *out)
{
	out->allowed = 1;
	out->limit = 0;
	out->remaining = 0;
	out->reset_ms = 0;
	out->retry_after_ms = 0;
}

static inline uint64_t
ratelimit_hash(const void *key, size_t keylen)
{
	uint64_t h = util_hash64(key, keylen);

	return h != 0 ? h : 1; /* 0 marks an empty slot */
}

static inline struct ratelimit_shard *
ratelimit_shard_of(const struct ratelimit *rl, uint64_t h)
{
	return &rl->shards[(h >> RATELIMIT_SHARD_BITS_SHIFT) & rl->shard_mask];
}

/* The slot holding hash h in its window, or NULL. Lock-free. */
static inline struct ratelimit_slot *
ratelimit_find(const struct ratelimit *rl, struct ratelimit_shard *sh, uint64_t h)
{
	uint64_t i = h & rl->slot_mask;

	/*
	 * No early stop at an empty slot: slots are emptied in place (no tombstones), so a
	 * key may sit after a hole. Eight slots are two or three cache lines.
	 */
	for (unsigned k = 0; k < RATELIMIT_PROBE; k++, i = (i + 1) & rl->slot_mask)
		if (atomic_load_explicit(&sh->slots[i].key, memory_order_acquire) == h)
			return &sh->slots[i];
	return NULL;
}

/*
 * One GCRA step on a slot found for h, lock-free. Returns 1 when decided (out filled),
 * 0 when the slot is being re-keyed or no longer holds h (go to the locked path).
 */
static int
ratelimit_step(struct ratelimit_slot *s, uint64_t h, const struct ratelimit_gcra *g, uint64_t now,
               struct ratelimit_result *out)
{
	uint64_t tat = atomic_load_explicit(&s->tat, memory_order_acquire);

	for (;;) {
		uint64_t base, next;

		if (tat == RATELIMIT_BUSY)
			return 0;
		/*
		 * Read after the TAT (acquire): if the slot was re-keyed before our TAT load we
		 * see the new key here; if after, our CAS below fails on the changed TAT.
		 */
		if (atomic_load_explicit(&s->key, memory_order_relaxed) != h)
			return 0;
		base = tat > now ? tat : now;
		if (base - now > g->tau) {
			/* rejected: nothing is written, a refused request costs no quota */
			ratelimit_fill(g, 0, tat, now, out);
			return 1;
		}
		next = ratelimit_sat_add(base, g->t);
		if (atomic_compare_exchange_weak_explicit(&s->tat, &tat, next, memory_order_acq_rel,
		                                          memory_order_acquire)) {
			ratelimit_fill(g, 1, next, now, out);
			return 1;
		}
	}
}

/*
 * Gives slot s (in sh, locked by the caller) to hash h with TAT tat, provided its TAT is
 * still seen, the value the caller chose it by; 0 when an updater of the current key
 * moved it first (the choice is stale: choose again). The BUSY mark fences off lock-free
 * updaters of the previous key while the key word changes.
 */
static int
ratelimit_rekey(struct ratelimit_shard *sh, struct ratelimit_slot *s, uint64_t seen, uint64_t h,
                uint64_t tat)
{
	if (!atomic_compare_exchange_strong_explicit(&s->tat, &seen, RATELIMIT_BUSY,
	                                             memory_order_acq_rel, memory_order_relaxed))
		return 0;
	if (atomic_load_explicit(&s->key, memory_order_relaxed) == 0)
		atomic_fetch_add_explicit(&sh->count, 1, memory_order_relaxed);
	else if (h == 0)
		atomic_fetch_sub_explicit(&sh->count, 1, memory_order_relaxed);
	/*
	 * Release on the key too: a lookup that finds h (acquire) must then read BUSY or
	 * the new TAT, never the previous key's, or it could refuse h on another key's state.
	 */
	atomic_store_explicit(&s->key, h, memory_order_release);
	atomic_store_explicit(&s->tat, tat, memory_order_release);
	return 1;
}

/*
 * The locked path: decides for h, claiming a slot when the key is not in the table.
 * Under the mutex no slot of this shard changes key, so the rescan is authoritative.
 */
static void
ratelimit_claim(struct ratelimit *rl, struct ratelimit_shard *sh, uint64_t h,
                const struct ratelimit_gcra *g, uint64_t now, struct ratelimit_result *out)
{
	struct ratelimit_slot *s;
	uint64_t next;

	pthread_mutex_lock(&sh->lock);
	s = ratelimit_find(rl, sh, h);
	if (s != NULL) {
		/*
		 * Another thread claimed it meanwhile. Keys and BUSY marks only change under
		 * this mutex, so the step cannot be turned away here.
		 */
		while (!ratelimit_step(s, h, g, now, out))
			;
		pthread_mutex_unlock(&sh->lock);
		return;
	}
	/* a new key has a full quota and N >= 1, so its first request always passes */
	next = ratelimit_sat_add(now, g->t);
	for (;;) {
		struct ratelimit_slot *victim = NULL;
		uint64_t i = h & rl->slot_mask, victim_tat = 0;

		for (unsigned k = 0; k < RATELIMIT_PROBE; k++, i = (i + 1) & rl->slot_mask) {
			uint64_t tat;

			s = &sh->slots[i];
			tat = atomic_load_explicit(&s->tat, memory_order_relaxed);
			/* empty, or expired (as good as empty); else the nearest to full */
			if (atomic_load_explicit(&s->key, memory_order_relaxed) == 0 ||
			    tat <= now) {
				victim = s;
				victim_tat = tat;
				break;
			}
			if (victim == NULL || tat < victim_tat) {
				victim = s;
				victim_tat = tat;
			}
		}
		if (ratelimit_rekey(sh, victim, victim_tat, h, next))
			break;
	}
	pthread_mutex_unlock(&sh->lock);
	ratelimit_fill(g, 1, next, now, out);
}

static void
ratelimit_decide(struct ratelimit *rl, const void *key, size_t keylen,
                 const struct ratelimit_gcra *g, uint64_t now, struct ratelimit_result *out)
{
	uint64_t h = ratelimit_hash(key, keylen);
	struct ratelimit_shard *sh = ratelimit_shard_of(rl, h);
	struct ratelimit_slot *s = ratelimit_find(rl, sh, h);

	if (s == NULL || !ratelimit_step(s, h, g, now, out))
		ratelimit_claim(rl, sh, h, g, now, out);
}

struct ratelimit *
ratelimit_new(size_t capacity)
{
	struct ratelimit *rl = xcalloc(1, sizeof *rl);
	uint64_t cap = RATELIMIT_CAPACITY_MIN;
	size_t shard_bytes;
	uintptr_t base;
	struct ratelimit_slot *slots;

	while (cap < capacity && cap < RATELIMIT_CAPACITY_MAX)
		cap <<= 1;
	rl->nshards = 1;
	while (rl->nshards < RATELIMIT_SHARDS && cap / (rl->nshards * 2) >= RATELIMIT_SHARD_MIN)
		rl->nshards <<= 1;
	rl->shard_slots = cap / rl->nshards;
	rl->shard_mask = rl->nshards - 1;
	rl->slot_mask = rl->shard_slots - 1;

	shard_bytes = rl->nshards * sizeof(struct ratelimit_shard);
	rl->memsize = shard_bytes + cap * sizeof(struct ratelimit_slot) + RATELIMIT_CACHE_LINE;
	rl->mem = xmalloc(rl->memsize);
	/* xmalloc aligns to 16; shards and slot windows want whole cache lines */
	base = ((uintptr_t)rl->mem + RATELIMIT_CACHE_LINE - 1) &
	       ~(uintptr_t)(RATELIMIT_CACHE_LINE - 1);
	rl->shards = (struct ratelimit_shard *)base;
	slots = (struct ratelimit_slot *)(base + shard_bytes);
	for (size_t i = 0; i < cap; i++) {
		atomic_init(&slots[i].key, 0);
		atomic_init(&slots[i].tat, 0);
	}
	for (size_t i = 0; i < rl->nshards; i++) {
		struct ratelimit_shard *sh = &rl->shards[i];

		if (pthread_mutex_init(&sh->lock, NULL) != 0)
			fatalx("ratelimit: pthread_mutex_init failed");
		atomic_init(&sh->count, 0);
		sh->slots = slots + i * rl->shard_slots;
	}
	return rl;
}

void
ratelimit_free(struct ratelimit *rl)
{
	if (rl == NULL)
		return;
	for (size_t i = 0; i < rl->nshards; i++)
		pthread_mutex_destroy(&rl->shards[i].lock);
	free(rl->mem);
	free(rl);
}

/* ratelimit_check with the time in nanoseconds. */
static int
ratelimit_check_ns(struct ratelimit *rl, const void *key, size_t keylen,
                   const struct conf_rate *rate, uint64_t now_ns, struct ratelimit_result *out)
{
	struct ratelimit_gcra g;

	if (ratelimit_gcra_of(rate, &g) == -1) {
		ratelimit_unlimited(out);
		return 0;
	}
	ratelimit_decide(rl, key, keylen, &g, now_ns, out);
	return 0;
}

int
ratelimit_check_us(struct ratelimit *rl, const void *key, size_t keylen,
                   const struct conf_rate *rate, uint64_t now_us, struct ratelimit_result *out)
{
	return ratelimit_check_ns(rl, key, keylen, rate,
	                          ratelimit_sat_mul(now_us, RATELIMIT_NS_PER_US), out);
}

int
ratelimit_check(struct ratelimit *rl, const void *key, size_t keylen, const struct conf_rate *rate,
                uint64_t now_ms, struct ratelimit_result *out)
{
	return ratelimit_check_ns(rl, key, keylen, rate,
	                          ratelimit_sat_mul(now_ms, RATELIMIT_NS_PER_MS), out);
}

void
ratelimit_result_from(const struct conf_rate *rate, int allowed, uint64_t d_ns,
                      struct ratelimit_result *out)
{
	struct ratelimit_gcra g;

	if (ratelimit_gcra_of(rate, &g) == -1) {
		ratelimit_unlimited(out);
		return;
	}
	/* a TAT d_ns ahead of a "now" of 0 */
	ratelimit_fill(&g, allowed, d_ns, 0, out);
}

int
ratelimit_params(const struct conf_rate *rate, uint64_t *t_ns, uint64_t *tau_ns)
{
	struct ratelimit_gcra g;

	if (ratelimit_gcra_of(rate, &g) == -1)
		return -1;
	*t_ns = g.t;
	*tau_ns = g.tau;
	return 0;
}

void
ratelimit_peek(struct ratelimit *rl, const void *key, size_t keylen, const struct conf_rate *rate,
               uint64_t now_ms, struct ratelimit_result *out)
{
	struct ratelimit_gcra g;
	uint64_t h, now, tat = 0;
	struct ratelimit_shard *sh;
	struct ratelimit_slot *s;

	if (ratelimit_gcra_of(rate, &g) == -1) {
		ratelimit_unlimited(out);
		return;
	}
	now = ratelimit_sat_mul(now_ms, RATELIMIT_NS_PER_MS);
	h = ratelimit_hash(key, keylen);
	sh = ratelimit_shard_of(rl, h);
	s = ratelimit_find(rl, sh, h);
	if (s != NULL) {
		tat = atomic_load_explicit(&s->tat, memory_order_acquire);
		/* re-keyed meanwhile: the key is gone, which reads as a full quota */
		if (tat == RATELIMIT_BUSY ||
		    atomic_load_explicit(&s->key, memory_order_relaxed) != h)
			tat = 0;
	}
	/* "allowed" here: whether a request now would pass */
	ratelimit_fill(&g, tat <= now || tat - now <= g.tau, tat, now, out);
}

void
ratelimit_rescale(struct ratelimit *rl, const void *key, size_t keylen,
                  const struct conf_rate *from, const struct conf_rate *to, uint64_t now_ms)
{
	struct ratelimit_gcra a, b;
	uint64_t h, now, tat;
	struct ratelimit_slot *s;

	if (ratelimit_gcra_of(from, &a) == -1 || ratelimit_gcra_of(to, &b) == -1)
		return;
	now = ratelimit_sat_mul(now_ms, RATELIMIT_NS_PER_MS);
	h = ratelimit_hash(key, keylen);
	s = ratelimit_find(rl, ratelimit_shard_of(rl, h), h);
	if (s == NULL)
		return;
	tat = atomic_load_explicit(&s->tat, memory_order_acquire);
	for (;;) {
		uint64_t used, fresh;

		if (tat == RATELIMIT_BUSY || tat <= now ||
		    atomic_load_explicit(&s->key, memory_order_relaxed) != h)
			return;
		/* the requests already counted, (tat - now) / t_old, priced at t_new */
		used = tat - now;
		fresh = ratelimit_sat_add(now, (uint64_t)((double)used * (double)b.t / (double)a.t));
		if (atomic_compare_exchange_weak_explicit(&s->tat, &tat, fresh, memory_order_acq_rel,
		                                          memory_order_acquire))
			return;
	}
}

size_t
ratelimit_expire(struct ratelimit *rl, uint64_t now_ms)
{
	uint64_t now = ratelimit_sat_mul(now_ms, RATELIMIT_NS_PER_MS);
	size_t dropped = 0;

	for (size_t i = 0; i < rl->nshards; i++) {
		struct ratelimit_shard *sh = &rl->shards[i];

		pthread_mutex_lock(&sh->lock);
		for (size_t j = 0; j < rl->shard_slots; j++) {
			struct ratelimit_slot *s = &sh->slots[j];

			uint64_t tat = atomic_load_explicit(&s->tat, memory_order_relaxed);

			/*
			 * A request that lands between the load and the CAS makes the key live
			 * again; the CAS then fails and the slot stays. TAT 0 marks the empty slot
			 * and is never a live key's (claims store now + T >= 1).
			 */
			if (atomic_load_explicit(&s->key, memory_order_relaxed) != 0 &&
			    tat <= now && ratelimit_rekey(sh, s, tat, 0, 0))
				dropped++;
		}
		pthread_mutex_unlock(&sh->lock);
	}
	return dropped;
}

size_t
ratelimit_count(struct ratelimit *rl)
{
	size_t n = 0;

	for (size_t i = 0; i < rl->nshards; i++)
		n += atomic_load_explicit(&rl->shards[i].count, memory_order_relaxed);
	return n;
}

size_t
ratelimit_memory(const struct ratelimit *rl)
{
	return sizeof *rl + rl->memsize;
}
