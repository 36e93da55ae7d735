#include <stdlib.h>
#include <string.h>

#include "balance.h"
#include "util.h"
#include "xmalloc.h"

/*
 * Virtual nodes per weight unit on the consistent-hash ring. A backend's share deviates
 * from its weight by about 1/sqrt(points): with ketama's 160 one backend in ten among
 * four is off by more than 15%; with 512 the worst of hundreds of random id sets was
 * 12%, for 8 KB of ring per weight unit. The ring is capped (1 MB per worker) so that
 * big weights cannot make it huge; past the cap the points are shared out in
 * proportion to the weights (still >= 256 each for up to 256 equal backends).
 */
#define RING_VNODES_PER_WEIGHT 512
#define RING_MAX_POINTS 65536

/* Bounded-load factor c = 5/4 (Mirrokni, Thorup, Zadimoghaddam 2018). */
#define BOUNDED_LOAD_NUM 5
#define BOUNDED_LOAD_DEN 4
/*
 * Below this many in-flight requests a backend is never "overloaded": at low load the
 * bound ceil(1.25 (total + 1) / n) is 1 or 2, so a client's second concurrent request,
 * or a request that races the decrement of the previous one on another worker thread,
 * would be pushed off its backend and affinity would be lost for no benefit.
 */
#define BOUNDED_LOAD_FLOOR 8

/*
 * Added to every latency estimate: differences well under a millisecond are noise on
 * any network, and with a zero estimate in-flight requests and failures still count.
 */
#define ADAPTIVE_BASE_MS 1.0
/* Each recent failure adds this much to the cost multiplier (1 failure doubles it). */
#define ADAPTIVE_FAILURE_PENALTY 1.0
/*
 * Costs within this ratio are a tie, settled by the random order of the candidates:
 * latency noise between equal backends must not turn into a lopsided share (with no
 * concurrency the cost is latency alone, and P2C would starve the unlucky backend).
 */
#define ADAPTIVE_TIE_RATIO 0.5

struct ring_point {
	uint64_t point;
	uint32_t target;
};

struct balance_state {
	uint64_t rng;
	uint32_t rr_next; /* round robin: index after the last pick */
	uint32_t lc_next; /* least connections: where the tie-breaking scan starts */
	int n;            /* the set the state was built for, -1 before the first reset */
	uint64_t ids[BALANCE_MAX_TARGETS];
	int weights[BALANCE_MAX_TARGETS];     /* as balance_weight() sees them */
	int64_t current[BALANCE_MAX_TARGETS]; /* smooth weighted round robin */
	struct ring_point *ring;
	size_t ring_len;
	size_t ring_cap;
	int ring_stale; /* the set changed since the ring was built */
};

static const char *const balance_names[BALANCE_COUNT] = {
    [BALANCE_ROUND_ROBIN] = "round_robin", [BALANCE_LEAST_CONNECTIONS] = "least_connections",
    [BALANCE_WEIGHTED] = "weighted",       [BALANCE_IP_HASH] = "ip_hash",
    [BALANCE_ADAPTIVE] = "adaptive",       [BALANCE_RANDOM] = "random",
};

const char *
balance_strategy_name(enum balance_strategy st)
{
	return (unsigned)st < BALANCE_COUNT ? balance_names[st] : "unknown";
}

int
balance_strategy_from_name(const char *name)
{
	for (int i = 0; i < BALANCE_COUNT; i++)
		if (strcmp(name, balance_names[i]) == 0)
			return i;
	return -1;
}

const char *
balance_strategy_list(void)
{
	return "round_robin, least_connections, weighted, ip_hash, adaptive, random";
}

static uint64_t
balance_splitmix64(uint64_t x)
{
	x += 0x9e3779b97f4a7c15ULL;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
	return x ^ (x >> 31);
}

/* xorshift64*: a few cycles, good enough for picking backends, state never zero. */
static uint64_t
balance_rand(struct balance_state *s)
{
	uint64_t x = s->rng;

	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	s->rng = x;
	return x * 0x2545f4914f6cdd1dULL;
}

/* Uniform in [0, bound); the modulo bias is below bound / 2^64, far under any noise. */
static uint64_t
balance_rand_below(struct balance_state *s, uint64_t bound)
{
	return balance_rand(s) % bound;
}

/* Callers promise weight >= 1; a zero or negative one must not divide or starve. */
static int
balance_weight(const struct balance_target *t)
{
	return t->weight > 0 ? t->weight : 1;
}

struct balance_state *
balance_state_new(uint64_t seed)
{
	struct balance_state *s = xcalloc(1, sizeof(*s));

	s->rng = balance_splitmix64(seed);
	if (s->rng == 0)
		s->rng = 0x9e3779b97f4a7c15ULL;
	s->n = -1;
	return s;
}

void
balance_state_free(struct balance_state *s)
{
	if (s == NULL)
		return;
	free(s->ring);
	free(s);
}

static int
balance_ring_less(const struct ring_point *a, const struct ring_point *b)
{
	return a->point < b->point || (a->point == b->point && a->target < b->target);
}

static void
balance_ring_sift(struct ring_point *r, size_t root, size_t len)
{
	for (;;) {
		size_t child = 2 * root + 1;

		if (child >= len)
			return;
		if (child + 1 < len && balance_ring_less(&r[child], &r[child + 1]))
			child++;
		if (!balance_ring_less(&r[root], &r[child]))
			return;
		struct ring_point tmp = r[root];

		r[root] = r[child];
		r[child] = tmp;
		root = child;
	}
}

/* Heapsort: in place, because glibc's qsort may malloc and this runs inside a pick. */
static void
balance_ring_sort(struct ring_point *r, size_t len)
{
	for (size_t i = len / 2; i-- > 0;)
		balance_ring_sift(r, i, len);
	for (size_t end = len; end-- > 1;) {
		struct ring_point tmp = r[0];

		r[0] = r[end];
		r[end] = tmp;
		balance_ring_sift(r, 0, end);
	}
}

/*
 * Points of a target of weight w: w * RING_VNODES_PER_WEIGHT, or its proportional slice
 * of RING_MAX_POINTS when the total would exceed it (at least one point each).
 */
static size_t
balance_ring_points(int w, int64_t total_weight)
{
	int64_t p;

	if (total_weight * RING_VNODES_PER_WEIGHT <= RING_MAX_POINTS)
		return (size_t)w * RING_VNODES_PER_WEIGHT;
	p = (int64_t)w * RING_MAX_POINTS / total_weight;
	return p > 0 ? (size_t)p : 1;
}

static int64_t
balance_total_weight(const struct balance_state *s)
{
	int64_t total = 0;

	for (int i = 0; i < s->n; i++)
		total += s->weights[i];
	return total;
}

/* Sized in balance_state_reset so that the build inside a pick never allocates. */
static void
balance_ring_reserve(struct balance_state *s)
{
	int64_t total = balance_total_weight(s);
	size_t len = 0;

	for (int i = 0; i < s->n; i++)
		len += balance_ring_points(s->weights[i], total);
	if (len > s->ring_cap) {
		free(s->ring);
		s->ring = xmalloc(len * sizeof(*s->ring));
		s->ring_cap = len;
	}
}

/*
 * A virtual node's position depends only on the backend's id and the vnode's number,
 * never on the backend's index: reordering the config moves nothing, removing a backend
 * removes only its points, and raising a weight only adds points.
 */
static void
balance_ring_build(struct balance_state *s)
{
	int64_t total = balance_total_weight(s);

	s->ring_len = 0;
	for (int i = 0; i < s->n; i++) {
		size_t pts = balance_ring_points(s->weights[i], total);

		for (size_t j = 0; j < pts; j++) {
			struct ring_point *rp = &s->ring[s->ring_len++];

			rp->point = balance_splitmix64(s->ids[i] ^ (j * 0xd1b54a32d192ed03ULL));
			rp->target = (uint32_t)i;
		}
	}
	balance_ring_sort(s->ring, s->ring_len);
	s->ring_stale = 0;
}

void
balance_state_reset(struct balance_state *s, const struct balance_target *t, int n)
{
	int same;

	if (s == NULL)
		return;
	if (n < 0 || t == NULL)
		n = 0;
	if (n > BALANCE_MAX_TARGETS)
		n = BALANCE_MAX_TARGETS;
	same = s->n == n;
	for (int i = 0; i < n && same; i++)
		same = s->ids[i] == t[i].id_hash && s->weights[i] == balance_weight(&t[i]);
	if (same)
		return;
	for (int i = 0; i < n; i++) {
		s->ids[i] = t[i].id_hash;
		s->weights[i] = balance_weight(&t[i]);
		s->current[i] = -(int64_t)s->weights[i];
	}
	s->n = n;
	/*
	 * The ring (up to a few ms to build) is only needed by ip_hash: it is rebuilt on
	 * that strategy's next pick, so the others never pay for it, slow start included.
	 */
	balance_ring_reserve(s);
	s->ring_stale = 1;
}

/*
 * Starts after the previous pick and takes the first eligible target: the cursor lands
 * just past what was picked, so an ineligible target's turn is not inherited by its
 * neighbour (which would get twice the others' share).
 */
static int
balance_round_robin(struct balance_state *s, const struct balance_target *t, int n)
{
	uint32_t start = s->rr_next % (uint32_t)n;

	for (int k = 0; k < n; k++) {
		int i = (int)((start + (uint32_t)k) % (uint32_t)n);

		if (t[i].eligible) {
			s->rr_next = (uint32_t)i + 1;
			return i;
		}
	}
	return -1;
}

/* a->active / a->weight < b->active / b->weight, without division. */
static int
balance_less_loaded(const struct balance_target *a, const struct balance_target *b)
{
	return (uint64_t)a->active * (uint64_t)balance_weight(b) <
	       (uint64_t)b->active * (uint64_t)balance_weight(a);
}

/* Equal loads go to the first one found after the previous pick, so ties rotate. */
static int
balance_least_connections(struct balance_state *s, const struct balance_target *t, int n)
{
	uint32_t start = s->lc_next % (uint32_t)n;
	int best = -1;

	for (int k = 0; k < n; k++) {
		int i = (int)((start + (uint32_t)k) % (uint32_t)n);

		if (t[i].eligible && (best < 0 || balance_less_loaded(&t[i], &t[best])))
			best = i;
	}
	if (best >= 0)
		s->lc_next = (uint32_t)best + 1;
	return best;
}

/*
 * nginx's smooth weighted round robin: every eligible target gains its weight, the
 * richest is picked and pays the total. Over sum(weights) picks each target is chosen
 * exactly weight times, spread out rather than in bursts.
 *
 * Two departures from nginx, both about where the cycle starts. nginx starts every
 * current weight at 0, so the heaviest target is picked first and last in each cycle
 * and runs into itself at the boundary (2:1:1 gives a b c a | a b c a). Starting at
 * -weight with ties going to the lighter target puts the light ones first and the
 * heavy one's picks in the middle (2:1:1 gives b a c a | b a c a); the orbit is still
 * periodic, so the proportions stay exact over every cycle.
 */
static int
balance_weighted(struct balance_state *s, const struct balance_target *t, int n)
{
	int64_t total = 0;
	int best = -1;

	for (int i = 0; i < n; i++) {
		if (!t[i].eligible)
			continue;
		int w = balance_weight(&t[i]);

		s->current[i] += w;
		total += w;
		if (best < 0 || s->current[i] > s->current[best] ||
		    (s->current[i] == s->current[best] && w < balance_weight(&t[best])))
			best = i;
	}
	if (best >= 0)
		s->current[best] -= total;
	return best;
}

/* Weight-proportional: a point in [0, total weight) falls in exactly one target's span. */
static int
balance_random(struct balance_state *s, const struct balance_target *t, int n)
{
	uint64_t total = 0, r;

	for (int i = 0; i < n; i++)
		if (t[i].eligible)
			total += (uint64_t)balance_weight(&t[i]);
	if (total == 0)
		return -1;
	r = balance_rand_below(s, total);
	for (int i = 0; i < n; i++) {
		if (!t[i].eligible)
			continue;
		uint64_t w = (uint64_t)balance_weight(&t[i]);

		if (r < w)
			return i;
		r -= w;
	}
	return -1; /* not reached */
}

static double
balance_adaptive_cost(const struct balance_target *t)
{
	/* !(x > 0) also catches NaN from a confused caller */
	/*
	 * A backend without a measurement looks cheap, so that it gets tried: were unknown
	 * latency priced at some default, a backend slower than that default on its first
	 * answers would never be picked again and its estimate never corrected (the proxy
	 * also lets estimates fade while a backend gets no traffic). The base keeps active
	 * and failures counting when the estimate is zero.
	 */
	double ms = (t->ewma_ms > 0 ? t->ewma_ms : 0.0) + ADAPTIVE_BASE_MS;
	double penalty = 1.0 + ADAPTIVE_FAILURE_PENALTY * (double)t->recent_failures;

	return ms * ((double)t->active + 1.0) * penalty / (double)balance_weight(t);
}

/*
 * Power of two choices (Mitzenmacher): two distinct random candidates, the cheaper
 * wins. Unlike always taking the global minimum, it does not stampede every worker
 * onto the same momentarily fastest backend, yet avoids the slow ones almost as well.
 */
static int
balance_adaptive(struct balance_state *s, const struct balance_target *t, int n)
{
	int el[BALANCE_MAX_TARGETS];
	int ne = 0;
	uint64_t a, b;

	for (int i = 0; i < n; i++)
		if (t[i].eligible)
			el[ne++] = i;
	if (ne <= 1)
		return ne == 1 ? el[0] : -1;
	a = balance_rand_below(s, (uint64_t)ne);
	b = balance_rand_below(s, (uint64_t)ne - 1);
	if (b >= a)
		b++; /* distinct from a, still uniform over the others */
	if (balance_adaptive_cost(&t[el[b]]) < ADAPTIVE_TIE_RATIO * balance_adaptive_cost(&t[el[a]]))
		return el[b];
	return el[a];
}

/* First ring point at or after h, wrapping to the start. */
static size_t
balance_ring_find(const struct balance_state *s, uint64_t h)
{
	size_t lo = 0, hi = s->ring_len;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (s->ring[mid].point < h)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo == s->ring_len ? 0 : lo;
}

/*
 * Rendezvous hashing, for a caller that changed the set without balance_state_reset:
 * still consistent and allocation-free, only O(n) and without bounded load.
 */
static int
balance_rendezvous(const struct balance_target *t, int n, uint64_t h)
{
	uint64_t best_score = 0;
	int best = -1;

	for (int i = 0; i < n; i++) {
		if (!t[i].eligible)
			continue;
		uint64_t score = balance_splitmix64(h ^ t[i].id_hash);

		if (best < 0 || score > best_score) {
			best = i;
			best_score = score;
		}
	}
	return best;
}

/*
 * Consistent hashing with bounded loads: from the key's point, walk clockwise and take
 * the first eligible target whose load stays within ceil(c * (total + 1) / n) once this
 * request is added. With every target under the bound this is plain consistent hashing;
 * a hot target spills its excess to its ring successors only.
 */
static int
balance_ip_hash(struct balance_state *s, const struct balance_target *t, int n, const void *key,
                size_t keylen)
{
	uint64_t total_active = 0, cap, seen[BALANCE_MAX_TARGETS / 64] = {0};
	int ne = 0, nseen = 0, fallback = -1;
	uint64_t h;

	/* no address: nothing to be sticky about */
	if (key == NULL || keylen == 0)
		return balance_round_robin(s, t, n);
	h = util_hash64(key, keylen);
	if (s->n != n)
		return balance_rendezvous(t, n, h);
	if (s->ring_stale)
		balance_ring_build(s);
	for (int i = 0; i < n; i++) {
		if (!t[i].eligible)
			continue;
		ne++;
		total_active += t[i].active;
		if (fallback < 0 || t[i].active < t[fallback].active)
			fallback = i;
	}
	if (ne == 0)
		return -1;
	cap = (BOUNDED_LOAD_NUM * (total_active + 1) + BOUNDED_LOAD_DEN * (uint64_t)ne - 1) /
	      (BOUNDED_LOAD_DEN * (uint64_t)ne);
	if (cap < BOUNDED_LOAD_FLOOR)
		cap = BOUNDED_LOAD_FLOOR;
	size_t pos = balance_ring_find(s, h);

	for (size_t k = 0; k < s->ring_len && nseen < ne; k++) {
		uint32_t i = s->ring[(pos + k) % s->ring_len].target;

		if (!t[i].eligible || ((seen[i / 64] >> (i % 64)) & 1))
			continue;
		if (t[i].active < cap)
			return (int)i;
		seen[i / 64] |= 1ULL << (i % 64);
		nseen++;
	}
	/* unreachable by the pigeonhole principle (some target is under the mean) */
	return fallback;
}

int
balance_pick(struct balance_state *s, enum balance_strategy strategy,
             const struct balance_target *t, int n, const void *key, size_t keylen)
{
	if (s == NULL || t == NULL || n <= 0)
		return -1;
	if (n > BALANCE_MAX_TARGETS)
		n = BALANCE_MAX_TARGETS;
	switch (strategy) {
	case BALANCE_LEAST_CONNECTIONS:
		return balance_least_connections(s, t, n);
	case BALANCE_WEIGHTED:
		return balance_weighted(s, t, n);
	case BALANCE_IP_HASH:
		return balance_ip_hash(s, t, n, key, keylen);
	case BALANCE_ADAPTIVE:
		return balance_adaptive(s, t, n);
	case BALANCE_RANDOM:
		return balance_random(s, t, n);
	case BALANCE_ROUND_ROBIN:
	default:
		return balance_round_robin(s, t, n);
	}
}
