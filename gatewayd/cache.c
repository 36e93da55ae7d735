#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "accesslog.h"
#include "api.h"
#include "api_util.h"
#include "cache.h"
#include "cache_control.h"
#include "cache_shared.h"
#include "identify.h"
#include "log.h"
#include "redis.h"
#include "util.h"
#include "xmalloc.h"

/*
 * The response cache; the model is described in cache.h. Locking: a shard's mutex
 * guards its table, LRU list, pending fills and their waiter lists, and the freshness
 * fields of its entries; a worker's wake-queue mutex guards that queue. Order: shard,
 * then wake queue. Entry heads and bodies never change once linked, so they are read
 * without a lock by whoever holds a reference.
 */

#define CACHE_NSHARDS 64
#define CACHE_KEY_MAX 4096
#define CACHE_ENTRY_CAP (8u << 20) /* per-entry cap, and max_memory / 8 */
#define CACHE_WAITERS_MAX 4096     /* coalesced misses per fill; more go upstream */
#define CACHE_BUCKETS_INIT 16
#define CACHE_BODY_INIT 16384

struct cache_entry {
	struct cache_entry *hnext;         /* hash chain */
	struct cache_entry *lprev, *lnext; /* shard LRU; the sentinel's lnext is the newest */
	_Atomic uint32_t refs;             /* 1 for the table while linked, 1 per reader */
	uint8_t linked;
	uint8_t must_revalidate; /* must-revalidate, proxy-revalidate or s-maxage */
	uint16_t status;
	uint64_t hash, url_hash;
	char *key;
	uint32_t key_len, url_off, url_len;
	char *head; /* status line and header lines */
	uint32_t head_len, status_len;
	char *body; /* own allocation */
	size_t body_len;
	char *vary; /* "name\0" "1value\0" (or "0\0": absent) per Vary'd header */
	uint32_t vary_len;
	uint32_t etag_off, etag_len, lm_off, lm_len; /* validator values inside head */
	int64_t lm_s;
	uint64_t stored_ms;      /* monotonic: when stored or last validated */
	uint64_t initial_age_ms; /* corrected_initial_age (RFC 9111 4.2.3) */
	uint64_t lifetime_ms;    /* freshness lifetime */
	uint32_t swr_s, sie_s;
	size_t charge;
	char backend[CONFIG_NAME_MAX];
	char dc[CONFIG_NAME_MAX];
};

struct cache_shard {
	pthread_mutex_t lock;
	struct cache_entry **buckets;
	uint32_t nbuckets, n;
	struct cache_entry lru; /* sentinel */
	struct cache_fill *fills;
} __attribute__((aligned(GW_CACHELINE)));

/* The response a miss is fetching, and the misses waiting for it. */
struct cache_fill {
	struct cache_fill *next;
	unsigned shard;
	uint64_t hash, url_hash;
	char *key;
	uint32_t key_len, shared_len, url_off, url_len;
	struct exchange *waiters;
	uint32_t nwaiters;
	/* from the response head */
	uint8_t storing, shared, must_revalidate;
	uint16_t status;
	char *head;
	size_t head_len;
	uint32_t status_len, etag_off, etag_len, lm_off, lm_len;
	int64_t lm_s;
	char *body;
	size_t body_len, body_cap, cap;
	size_t reserved; /* of cache_fill_bytes */
	char *vary;
	size_t vary_len;
	uint64_t lifetime_ms, initial_age_ms;
	uint32_t swr_s, sie_s;
	int64_t sgen; /* the shared level's generation it was looked up under */
	char backend[CONFIG_NAME_MAX];
	char dc[CONFIG_NAME_MAX];
};

/* Woken waiters of one worker, run on its loop. */
struct cache_wq {
	pthread_mutex_t lock;
	struct exchange *head;
	struct worker *w;
	int fd;
	int ready;
	struct event ev;
};

struct cache_ctr {
	_Atomic uint64_t n[CACHE_R_COUNT];
} __attribute__((aligned(GW_CACHELINE)));

struct cache_key {
	uint32_t len;        /* the whole key */
	uint32_t shared_len; /* the key without the identity */
	uint32_t url_off, url_len;
	uint64_t url_hash; /* of the shared part: picks the shard */
	char buf[CACHE_KEY_MAX];
};

static struct cache_shard cache_shards[CACHE_NSHARDS];
static unsigned cache_nshards = CACHE_NSHARDS;
static pthread_once_t cache_once = PTHREAD_ONCE_INIT;
static _Atomic uint64_t cache_bytes, cache_nentries, cache_evictions;
static _Atomic uint64_t cache_fill_bytes; /* body buffers of fills in progress */
static _Atomic uint64_t cache_max = 64ull << 20;
static _Atomic unsigned cache_cursor;
static struct cache_wq cache_wqs[GW_MAX_WORKERS];
static struct cache_ctr cache_ctrs[GW_MAX_WORKERS];

static const char *const cache_result_name[] = {"HIT", "MISS", "STALE", "BYPASS"};

static int cache_shared_ask(struct exchange *x, const struct cache_key *k);
static void cache_shared_note_unsafe(struct exchange *x, const struct cache_key *k);
static void cache_shared_store(struct exchange *x, const struct cache_entry *e);

/* ---- store ---- */

static void
cache_shard_init(struct cache_shard *s)
{
	s->nbuckets = CACHE_BUCKETS_INIT;
	s->buckets = xcalloc(s->nbuckets, sizeof(*s->buckets));
	s->n = 0;
	s->lru.lnext = s->lru.lprev = &s->lru;
	s->fills = NULL;
}

static void
cache_init(void)
{
	for (unsigned i = 0; i < CACHE_NSHARDS; i++) {
		pthread_mutex_init(&cache_shards[i].lock, NULL);
		cache_shard_init(&cache_shards[i]);
	}
	for (int i = 0; i < GW_MAX_WORKERS; i++) {
		pthread_mutex_init(&cache_wqs[i].lock, NULL);
		cache_wqs[i].fd = -1;
	}
}

/* FNV-1a, continued from h (so the full key's hash extends the URL's). */
static uint64_t
cache_hash(uint64_t h, const char *p, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		h ^= (uint8_t)p[i];
		h *= 0x100000001b3ull;
	}
	return h;
}

#define CACHE_HASH_SEED 0xcbf29ce484222325ull

static struct cache_shard *
cache_shard_of(uint64_t url_hash)
{
	return &cache_shards[(url_hash >> 32) % cache_nshards];
}

size_t
cache_entry_charge(size_t key_len, size_t head_len, size_t body_len, size_t vary_len)
{
	return sizeof(struct cache_entry) + key_len + head_len + body_len + vary_len;
}

static void
cache_entry_unref(struct cache_entry *e)
{
	if (e != NULL && atomic_fetch_sub_explicit(&e->refs, 1, memory_order_acq_rel) == 1) {
		free(e->body);
		free(e);
	}
}

static void
cache_lru_unlink(struct cache_entry *e)
{
	e->lprev->lnext = e->lnext;
	e->lnext->lprev = e->lprev;
}

static void
cache_lru_front(struct cache_shard *s, struct cache_entry *e)
{
	e->lnext = s->lru.lnext;
	e->lprev = &s->lru;
	s->lru.lnext->lprev = e;
	s->lru.lnext = e;
}

static struct cache_entry *
cache_find(struct cache_shard *s, uint64_t hash, const char *key, size_t len)
{
	struct cache_entry *e = s->buckets[hash & (s->nbuckets - 1)];

	for (; e != NULL; e = e->hnext)
		if (e->hash == hash && e->key_len == len && memcmp(e->key, key, len) == 0)
			return e;
	return NULL;
}

/* Takes e out of the table (shard locked); the caller drops the table's reference. */
static void
cache_unlink(struct cache_shard *s, struct cache_entry *e)
{
	struct cache_entry **pp = &s->buckets[e->hash & (s->nbuckets - 1)];

	while (*pp != NULL && *pp != e)
		pp = &(*pp)->hnext;
	if (*pp == e)
		*pp = e->hnext;
	cache_lru_unlink(e);
	e->linked = 0;
	s->n--;
	atomic_fetch_sub_explicit(&cache_bytes, e->charge, memory_order_relaxed);
	atomic_fetch_sub_explicit(&cache_nentries, 1, memory_order_relaxed);
}

static void
cache_grow(struct cache_shard *s)
{
	uint32_t nb = s->nbuckets * 2;
	struct cache_entry **b = xcalloc(nb, sizeof(*b));

	for (uint32_t i = 0; i < s->nbuckets; i++) {
		struct cache_entry *e = s->buckets[i], *next;
		for (; e != NULL; e = next) {
			next = e->hnext;
			e->hnext = b[e->hash & (nb - 1)];
			b[e->hash & (nb - 1)] = e;
		}
	}
	free(s->buckets);
	s->buckets = b;
	s->nbuckets = nb;
}

/* Links e (shard locked), replacing an entry with the same key; returns the one
 * replaced (its table reference is the caller's to drop) or NULL. */
static struct cache_entry *
cache_link(struct cache_shard *s, struct cache_entry *e)
{
	struct cache_entry *old = cache_find(s, e->hash, e->key, e->key_len);
	uint32_t b;

	if (old != NULL)
		cache_unlink(s, old);
	if (s->n >= s->nbuckets * 2)
		cache_grow(s);
	b = (uint32_t)(e->hash & (s->nbuckets - 1));
	e->hnext = s->buckets[b];
	s->buckets[b] = e;
	cache_lru_front(s, e);
	e->linked = 1;
	s->n++;
	atomic_fetch_add_explicit(&cache_bytes, e->charge, memory_order_relaxed);
	atomic_fetch_add_explicit(&cache_nentries, 1, memory_order_relaxed);
	return old;
}

/* Evicts least recently used entries until the store fits its budget: first from the
 * shard that just grew, then from the others in turn. */
static void
cache_enforce(struct cache_shard *s)
{
	uint64_t max = atomic_load_explicit(&cache_max, memory_order_relaxed);
	unsigned empty = 0;

	while (atomic_load_explicit(&cache_bytes, memory_order_relaxed) > max &&
	       empty <= cache_nshards) {
		struct cache_entry *victim = NULL;

		pthread_mutex_lock(&s->lock);
		if (s->lru.lprev != &s->lru) {
			victim = s->lru.lprev;
			cache_unlink(s, victim);
		}
		pthread_mutex_unlock(&s->lock);
		if (victim != NULL) {
			atomic_fetch_add_explicit(&cache_evictions, 1, memory_order_relaxed);
			cache_entry_unref(victim);
			continue;
		}
		empty++;
		s = &cache_shards[atomic_fetch_add_explicit(&cache_cursor, 1,
		                                            memory_order_relaxed) %
		                  cache_nshards];
	}
}

/* A new entry: key, head (plus an optional Content-Length line) and vary in one block;
 * the body is adopted. refs 1 (the table's). */
static struct cache_entry *
cache_entry_new(const char *key, size_t key_len, const char *head, size_t head_len,
                const char *clen, size_t clen_len, const char *vary, size_t vary_len, char *body,
                size_t body_len)
{
	size_t hl = head_len + clen_len;
	struct cache_entry *e = xcalloc(1, sizeof(*e) + key_len + hl + vary_len);
	char *p = (char *)(e + 1);

	e->key = p;
	memcpy(p, key, key_len);
	e->key_len = (uint32_t)key_len;
	e->head = p + key_len;
	memcpy(e->head, head, head_len);
	if (clen_len > 0)
		memcpy(e->head + head_len, clen, clen_len);
	e->head_len = (uint32_t)hl;
	e->vary = vary_len > 0 ? e->head + hl : NULL;
	if (vary_len > 0)
		memcpy(e->vary, vary, vary_len);
	e->vary_len = (uint32_t)vary_len;
	e->body = body;
	e->body_len = body_len;
	e->hash = cache_hash(CACHE_HASH_SEED, key, key_len);
	e->charge = cache_entry_charge(key_len, hl, body_len, vary_len);
	atomic_init(&e->refs, 1);
	return e;
}

/* Inserts e (the table takes its reference) and evicts what no longer fits. */
static void
cache_insert(struct cache_entry *e)
{
	struct cache_shard *s = cache_shard_of(e->url_hash);
	struct cache_entry *old;

	pthread_mutex_lock(&s->lock);
	old = cache_link(s, e);
	pthread_mutex_unlock(&s->lock);
	cache_entry_unref(old);
	cache_enforce(s);
}

static uint64_t
cache_entry_cap(void)
{
	uint64_t cap = atomic_load_explicit(&cache_max, memory_order_relaxed) / 8;

	return cap < CACHE_ENTRY_CAP ? cap : CACHE_ENTRY_CAP;
}

void
cache_store_reset(unsigned nshards, uint64_t max_memory)
{
	pthread_once(&cache_once, cache_init);
	cache_purge_local(NULL);
	cache_nshards = nshards >= 1 && nshards <= CACHE_NSHARDS ? nshards : CACHE_NSHARDS;
	atomic_store(&cache_max, max_memory);
	atomic_store(&cache_evictions, 0);
}

int
cache_store_put(const struct cache_entry_info *in, uint64_t now_ms)
{
	struct cache_entry *e;
	const char *nl;
	char *body;

	pthread_once(&cache_once, cache_init);
	if (cache_entry_charge(in->key_len, in->head_len, in->body_len, 0) > cache_entry_cap() ||
	    in->key_len > CACHE_KEY_MAX)
		return -1;
	body = xmalloc(in->body_len + 1);
	memcpy(body, in->body, in->body_len);
	e = cache_entry_new(in->key, in->key_len, in->head, in->head_len, NULL, 0, NULL, 0, body,
	                    in->body_len);
	e->url_off = (uint32_t)in->url_off;
	e->url_len = (uint32_t)in->url_len;
	e->url_hash = cache_hash(CACHE_HASH_SEED, in->key, in->url_off + in->url_len);
	e->status = 200;
	nl = memchr(in->head, '\n', in->head_len);
	e->status_len = (uint32_t)(nl != NULL ? (size_t)(nl - in->head) + 1 : in->head_len);
	e->stored_ms = now_ms;
	e->lifetime_ms = in->lifetime_ms;
	cache_insert(e);
	return 0;
}

int
cache_store_has(const char *key, size_t key_len)
{
	const char *nl = memchr(key, '\n', key_len);
	const char *nl2 =
	    nl != NULL ? memchr(nl + 1, '\n', key_len - (size_t)(nl + 1 - key)) : NULL;
	size_t shared = nl2 != NULL ? (size_t)(nl2 - key) : key_len;
	uint64_t uh = cache_hash(CACHE_HASH_SEED, key, shared);
	struct cache_shard *s;
	struct cache_entry *e;

	pthread_once(&cache_once, cache_init);
	s = cache_shard_of(uh);
	pthread_mutex_lock(&s->lock);
	e = cache_find(s, cache_hash(CACHE_HASH_SEED, key, key_len), key, key_len);
	if (e != NULL) {
		cache_lru_unlink(e);
		cache_lru_front(s, e);
	}
	pthread_mutex_unlock(&s->lock);
	return e != NULL;
}

void
cache_store_usage(uint64_t *entries, uint64_t *bytes, uint64_t *evictions)
{
	*entries = atomic_load(&cache_nentries);
	*bytes = atomic_load(&cache_bytes);
	*evictions = atomic_load(&cache_evictions);
}

/* ---- counters ---- */

static void
cache_count(const struct worker *w, enum cache_result r)
{
	worker_counter_add(&cache_ctrs[w->id].n[r], 1);
}

void
cache_counts(uint64_t out[CACHE_R_COUNT])
{
	for (int r = 0; r < CACHE_R_COUNT; r++) {
		out[r] = 0;
		for (int i = 0; i < GW_MAX_WORKERS; i++)
			out[r] += atomic_load_explicit(&cache_ctrs[i].n[r], memory_order_relaxed);
	}
}

/* ---- keys ---- */

static uint32_t
cache_key_add(struct cache_key *k, uint32_t off, const char *p, size_t n)
{
	if (off > CACHE_KEY_MAX || n > CACHE_KEY_MAX - off)
		return CACHE_KEY_MAX + 1;
	memcpy(k->buf + off, p, n);
	return off + (uint32_t)n;
}

/*
 * "G" Host "\n" request-target, then "\n" and the caller's identity when the request
 * carries a credential: the identity the gateway verified, or on an auth=off route the
 * raw Authorization / X-API-Key value (RFC 9111 3.5). -1 when too long.
 */
static int
cache_key_build(const struct exchange *x, struct cache_key *k)
{
	const struct http_msg *m = &x->req;
	const char *tend = x->in.data + m->target_off + m->target_len;
	const char *host, *cred = NULL;
	size_t hlen = 0, clen = 0;
	uint32_t off;
	char kind = 0;

	host = http_header_get(m, x->in.data, HTTP_H_HOST, &hlen);
	off = cache_key_add(k, 0, "G", 1);
	off = cache_key_add(k, off, host != NULL ? host : "", hlen);
	off = cache_key_add(k, off, "\n", 1);
	k->url_off = off;
	k->url_len = (uint32_t)(tend - x->path);
	off = cache_key_add(k, off, x->path, k->url_len);
	if (off > CACHE_KEY_MAX)
		return -1;
	k->shared_len = off;
	k->url_hash = cache_hash(CACHE_HASH_SEED, k->buf, off);
	if (x->id.kind != IDENTITY_NONE) {
		kind = 'I';
		cred = x->id.name;
		clen = strlen(x->id.name);
	} else if ((cred = http_header_get(m, x->in.data, HTTP_H_AUTHORIZATION, &clen)) != NULL) {
		kind = 'A';
	} else if ((cred = http_header_get(m, x->in.data, HTTP_H_X_API_KEY, &clen)) != NULL) {
		kind = 'K';
	}
	if (kind != 0) {
		off = cache_key_add(k, off, "\n", 1);
		off = cache_key_add(k, off, &kind, 1);
		off = cache_key_add(k, off, cred, clen);
	}
	if (off > CACHE_KEY_MAX)
		return -1;
	k->len = off;
	return 0;
}

/* ---- freshness (RFC 9111 4.2) ---- */

enum cache_state { CACHE_ST_FRESH, CACHE_ST_STALE_OK, CACHE_ST_SWR, CACHE_ST_STALE };

static uint64_t
cache_age_ms(const struct cache_entry *e, uint64_t now)
{
	return e->initial_age_ms + (now > e->stored_ms ? now - e->stored_ms : 0);
}

/* Shard locked. rq: the request's Cache-Control. */
static enum cache_state
cache_evaluate(const struct cache_entry *e, const struct cache_cc *rq, uint64_t now)
{
	uint64_t age = cache_age_ms(e, now), life = e->lifetime_ms, stale;

	if (rq->flags & CACHE_CC_NO_CACHE)
		return CACHE_ST_STALE;
	if ((rq->flags & CACHE_CC_MAX_AGE) && age > (uint64_t)rq->max_age * 1000)
		return CACHE_ST_STALE;
	if ((rq->flags & CACHE_CC_MIN_FRESH) && age + (uint64_t)rq->min_fresh * 1000 >= life)
		return CACHE_ST_STALE;
	if (age < life)
		return CACHE_ST_FRESH;
	if (e->must_revalidate)
		return CACHE_ST_STALE;
	stale = age - life;
	if ((rq->flags & CACHE_CC_MAX_STALE) && stale <= (uint64_t)rq->max_stale * 1000)
		return CACHE_ST_STALE_OK;
	if (e->swr_s > 0 && stale <= (uint64_t)e->swr_s * 1000)
		return CACHE_ST_SWR;
	return CACHE_ST_STALE;
}

/* The Vary'd request headers of x equal those the entry was stored for. */
static int
cache_vary_match(const struct exchange *x, const char *v, size_t len)
{
	const char *end = v + len;

	while (v < end) {
		const char *name = v, *val;
		size_t nlen = strlen(name), vlen, hl = 0;
		const char *h;

		val = name + nlen + 1;
		vlen = strlen(val);
		v = val + vlen + 1;
		h = http_header_find(&x->req, x->in.data, name, &hl);
		if ((h != NULL) != (val[0] == '1'))
			return 0;
		if (h != NULL && (hl != vlen - 1 || memcmp(h, val + 1, hl) != 0))
			return 0;
	}
	return 1;
}

static int
cache_usable(const struct exchange *x, const struct cache_entry *e)
{
	return e != NULL && (e->vary_len == 0 || cache_vary_match(x, e->vary, e->vary_len));
}

/* ---- serving from an entry ---- */

/* One entity-tag of an If-None-Match list equals the entry's (weak comparison). */
static int
cache_etag_listed(const char *v, size_t len, const char *etag, size_t elen)
{
	const char *end = v + len;

	if (elen > 2 && etag[0] == 'W' && etag[1] == '/') {
		etag += 2;
		elen -= 2;
	}
	while (v < end) {
		const char *t;
		size_t n;

		while (v < end && (*v == ' ' || *v == '\t' || *v == ','))
			v++;
		t = v;
		while (v < end && *v != ',')
			v++;
		n = (size_t)(v - t);
		while (n > 0 && (t[n - 1] == ' ' || t[n - 1] == '\t'))
			n--;
		if (n == 1 && t[0] == '*')
			return 1;
		if (n > 2 && t[0] == 'W' && t[1] == '/') {
			t += 2;
			n -= 2;
		}
		if (n == elen && n > 0 && memcmp(t, etag, n) == 0)
			return 1;
	}
	return 0;
}

/* RFC 9110 13.2.2: If-None-Match first; If-Modified-Since only without it. */
static int
cache_not_modified(const struct exchange *x, const struct cache_entry *e)
{
	size_t len;
	const char *v;

	if (e->status != 200)
		return 0;
	v = http_header_find(&x->req, x->in.data, "if-none-match", &len);
	if (v != NULL)
		return e->etag_len > 0 &&
		       cache_etag_listed(v, len, e->head + e->etag_off, e->etag_len);
	v = http_header_find(&x->req, x->in.data, "if-modified-since", &len);
	if (v != NULL && e->lm_len > 0) {
		int64_t t = cache_http_date(v, len);
		return t >= 0 && e->lm_s <= t;
	}
	return 0;
}

static const char cache_304[] = "HTTP/1.1 304 Not Modified\r\n";

/* The headers the gateway adds to a response from the cache. */
static size_t
cache_extra(struct exchange *x, const struct cache_entry *e, const char *result)
{
	char *o = x->resp_extra;
	size_t cap = sizeof(x->resp_extra), off = 0;

	off = util_append_str(o, off, cap, "Age: ");
	off = util_append_u64(o, off, cap, x->cache_age_s);
	off = util_append_str(o, off, cap, "\r\nX-Request-Id: ");
	off = util_append(o, off, cap, x->request_id, x->request_id_len);
	off = util_append_str(o, off, cap, "\r\nX-Backend: ");
	off = util_append_str(o, off, cap, e->backend);
	if (e->dc[0] != '\0') {
		off = util_append_str(o, off, cap, "\r\nX-Datacenter: ");
		off = util_append_str(o, off, cap, e->dc);
	}
	off = util_append_str(o, off, cap, "\r\nX-Cache: ");
	off = util_append_str(o, off, cap, result);
	off = util_append_str(o, off, cap, "\r\n");
	if ((x->id.kind != IDENTITY_NONE || x->id.via_query) && off < cap)
		off += identify_response_headers(x, o + off, cap - off);
	if (!x->req.keep_alive || atomic_load_explicit(&gw.draining, memory_order_relaxed))
		x->close_client = 1;
	if (x->close_client)
		off = util_append_str(o, off, cap, "Connection: close\r\n");
	else if (x->req.version_minor == 0)
		off = util_append_str(o, off, cap, "Connection: keep-alive\r\n");
	return util_append_str(o, off, cap, "\r\n");
}

/*
 * Answers x from e, which x references (x->cache_ent): head and body straight from the
 * entry with one writev, no copy. A conditional request that matches gets a 304.
 */
static void
cache_serve(struct exchange *x, enum cache_result r)
{
	const struct cache_entry *e = x->cache_ent;
	int nm = cache_not_modified(x, e);
	size_t n;

	x->cache_status = cache_result_name[r];
	cache_count(x->w, r);
	sendq_reset(&x->cliq);
	if (nm) {
		sendq_add(&x->cliq, cache_304, sizeof(cache_304) - 1);
		sendq_add(&x->cliq, e->head + e->status_len, e->head_len - e->status_len);
	} else {
		sendq_add(&x->cliq, e->head, e->head_len);
	}
	n = cache_extra(x, e, x->cache_status);
	if (n > sizeof(x->resp_extra))
		n = util_append_str(x->resp_extra, 0, sizeof(x->resp_extra), "\r\n");
	sendq_add(&x->cliq, x->resp_extra, n);
	if (!nm && x->req.method != HTTP_M_HEAD)
		sendq_add(&x->cliq, e->body, e->body_len);
	x->status = nm ? 304 : e->status;
	x->bytes_out = nm || x->req.method == HTTP_M_HEAD ? 0 : e->body_len;
	x->phase = X_LOCAL;
	metrics_request(x->w, x->status, NULL, x->start_us);
	accesslog_request(x, x->status, NULL, x->bytes_out, NULL);
	if (x->c->writable) {
		int rc = client_flush(x->c);
		if (rc < 0) {
			client_close(x->c);
			return;
		}
		if (rc == 1)
			client_exchange_done(x);
	}
}

/* ---- waiting for a fill ---- */

static void
cache_bypass_count(struct exchange *x, const char *status)
{
	x->cache_status = status;
	cache_count(x->w, status[0] == 'M' ? CACHE_R_MISS : CACHE_R_BYPASS);
	cache_count(x->w, CACHE_R_UPSTREAM);
}

/* A woken waiter: served from the entry the fill produced, or upstream on its own. */
static void
cache_resume(struct exchange *x)
{
	struct client *c = x->c;
	struct cache_entry *e = x->cache_ent;

	if (cache_usable(x, e)) {
		struct cache_shard *s = cache_shard_of(e->url_hash);
		pthread_mutex_lock(&s->lock);
		x->cache_age_s = (uint32_t)(cache_age_ms(e, x->w->now_ms) / 1000);
		pthread_mutex_unlock(&s->lock);
		cache_serve(x, CACHE_R_HIT);
	} else {
		cache_entry_unref(e);
		x->cache_ent = NULL;
		cache_bypass_count(x, "MISS");
		router_after_cache(x);
	}
	if (!c->closed && (c->x == NULL || c->x->phase == X_HEAD))
		client_run(c);
}

static void
cache_wq_event(evutil_socket_t fd, short what, void *arg)
{
	struct cache_wq *q = arg;
	struct exchange *list, *x;
	uint64_t v;

	(void)what;
	if (read(fd, &v, sizeof(v)) < 0 && errno != EAGAIN)
		log_warn("cache: eventfd");
	q->w->now_ms = util_now_ms();
	pthread_mutex_lock(&q->lock);
	list = q->head;
	q->head = NULL;
	for (x = list; x != NULL; x = x->cache_wnext)
		x->cache_wait = 0;
	pthread_mutex_unlock(&q->lock);
	while (list != NULL) {
		x = list;
		list = x->cache_wnext;
		x->cache_wnext = NULL;
		cache_resume(x);
	}
}

/* This worker's wake queue, set up on its own thread the first time it waits. */
static struct cache_wq *
cache_wq_get(struct worker *w)
{
	struct cache_wq *q = &cache_wqs[w->id];

	if (!q->ready) {
		q->fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
		if (q->fd < 0)
			return NULL;
		q->w = w;
		event_assign(&q->ev, w->base, q->fd, EV_READ | EV_PERSIST, cache_wq_event, q);
		event_add(&q->ev, NULL);
		q->ready = 1;
	}
	return q;
}

/* Hands the fill's waiters to their workers, with a reference to e each (shard locked).
 * e NULL: the fill was abandoned, they go upstream themselves. */
static void
cache_wake(struct cache_fill *f, struct cache_entry *e)
{
	uint64_t signal = 0;
	struct exchange *x = f->waiters, *next;

	for (; x != NULL; x = next) {
		struct cache_wq *q = &cache_wqs[x->w->id];

		next = x->cache_wnext;
		if (e != NULL) {
			atomic_fetch_add_explicit(&e->refs, 1, memory_order_relaxed);
			x->cache_ent = e;
		}
		pthread_mutex_lock(&q->lock);
		x->cache_wait = 2;
		x->cache_wfill = NULL;
		x->cache_wnext = q->head;
		q->head = x;
		pthread_mutex_unlock(&q->lock);
		signal |= 1ull << (x->w->id & 63);
	}
	f->waiters = NULL;
	f->nwaiters = 0;
	for (int i = 0; i < GW_MAX_WORKERS && signal != 0; i++) {
		uint64_t one = 1;
		if (!(signal & (1ull << i)))
			continue;
		signal &= ~(1ull << i);
		if (write(cache_wqs[i].fd, &one, sizeof(one)) < 0 && errno != EAGAIN)
			log_warn("cache: eventfd");
	}
}

/*
 * Fills in progress hold at most max_memory of body buffers together (beyond that a
 * response streams through unstored): many concurrent large misses cannot take more
 * memory than the cache is allowed. 0 when the buffer may not grow to cap.
 */
static int
cache_fill_reserve(struct cache_fill *f, size_t cap)
{
	uint64_t max = atomic_load_explicit(&cache_max, memory_order_relaxed);
	uint64_t add = cap > f->reserved ? cap - f->reserved : 0;

	if (atomic_fetch_add_explicit(&cache_fill_bytes, add, memory_order_relaxed) + add > max) {
		atomic_fetch_sub_explicit(&cache_fill_bytes, add, memory_order_relaxed);
		return 0;
	}
	f->reserved += add;
	return 1;
}

static void
cache_fill_free(struct cache_fill *f)
{
	atomic_fetch_sub_explicit(&cache_fill_bytes, f->reserved, memory_order_relaxed);
	free(f->key);
	free(f->head);
	free(f->body);
	free(f->vary);
	free(f);
}

/* Unlinks f from its shard (locked). */
static void
cache_fill_unlink(struct cache_shard *s, struct cache_fill *f)
{
	struct cache_fill **pp = &s->fills;

	while (*pp != NULL && *pp != f)
		pp = &(*pp)->next;
	if (*pp == f)
		*pp = f->next;
}

/* x stops filling: its waiters go upstream on their own. */
static void
cache_fill_abandon(struct exchange *x)
{
	struct cache_fill *f = x->cache_fill;
	struct cache_shard *s = &cache_shards[f->shard];

	x->cache_fill = NULL;
	pthread_mutex_lock(&s->lock);
	cache_fill_unlink(s, f);
	cache_wake(f, NULL);
	pthread_mutex_unlock(&s->lock);
	cache_fill_free(f);
}

static struct cache_fill *
cache_fill_find(struct cache_shard *s, uint64_t hash, const struct cache_key *k)
{
	struct cache_fill *f;

	for (f = s->fills; f != NULL; f = f->next)
		if (f->hash == hash && f->key_len == k->len && memcmp(f->key, k->buf, k->len) == 0)
			return f;
	return NULL;
}

static struct cache_fill *
cache_fill_new(struct cache_shard *s, uint64_t hash, const struct cache_key *k)
{
	struct cache_fill *f = xcalloc(1, sizeof(*f));

	f->shard = (unsigned)(s - cache_shards);
	f->hash = hash;
	f->url_hash = k->url_hash;
	f->key = xmalloc(k->len);
	memcpy(f->key, k->buf, k->len);
	f->key_len = k->len;
	f->shared_len = k->shared_len;
	f->url_off = k->url_off;
	f->url_len = k->url_len;
	f->next = s->fills;
	s->fills = f;
	return f;
}

/* ---- the pipeline stage ---- */

static int
cache_bypass(struct exchange *x)
{
	cache_bypass_count(x, "BYPASS");
	return 0;
}

/* Every Cache-Control line of a message, as one list. */
static void
cache_cc_of(const struct http_msg *m, const char *buf, struct cache_cc *cc)
{
	memset(cc, 0, sizeof(*cc));
	if (m->first[HTTP_H_CACHE_CONTROL] < 0)
		return;
	for (int i = m->first[HTTP_H_CACHE_CONTROL]; i < m->nhdr; i++)
		if (m->hdr[i].id == HTTP_H_CACHE_CONTROL)
			cache_cc_parse(cc, buf + m->hdr[i].value_off, m->hdr[i].value_len);
}

/* Looks key up in s (locked): a usable entry for x, or NULL. */
static struct cache_entry *
cache_lookup(struct cache_shard *s, const struct exchange *x, const char *key, size_t len)
{
	struct cache_entry *e = cache_find(s, cache_hash(CACHE_HASH_SEED, key, len), key, len);

	return cache_usable(x, e) ? e : NULL;
}

static void
cache_wait_on(struct exchange *x, struct cache_shard *s, struct cache_fill *f)
{
	const struct config_timeouts *t = &x->rt->cfg->timeouts;

	x->cache_wait = 1;
	x->cache_wfill = f;
	x->cache_wnext = f->waiters;
	x->cache_shard_ix = (uint8_t)(s - cache_shards);
	f->waiters = x;
	f->nwaiters++;
	x->phase = X_WAIT;
	/* the fill's own deadlines (every attempt of it) come first: its failure wakes us to
	 * go upstream ourselves */
	x->c->deadline_ms = x->w->now_ms +
	                    (uint64_t)(x->rt->cfg->retries + 1) * (t->connect_ms + t->response_ms) +
	                    1000;
}

static int
cache_has_range(const struct exchange *x)
{
	size_t len;

	return http_header_find(&x->req, x->in.data, "range", &len) != NULL;
}

/* x goes upstream. A stale entry stays referenced: revalidated with its validators, or
 * served when the backend fails and staleness is allowed. */
static void
cache_miss(struct exchange *x)
{
	if (x->cache_ent != NULL)
		x->cache_reval = x->cache_ent->etag_len > 0 || x->cache_ent->lm_len > 0;
	cache_bypass_count(x, "MISS");
}

/* The background refresh bx revalidates e (with its validators, if it has any) and fills
 * f (shard locked). */
static void
cache_bg_adopt(struct exchange *bx, struct cache_entry *e, struct cache_fill *f)
{
	atomic_fetch_add_explicit(&e->refs, 1, memory_order_relaxed);
	bx->cache_ent = e;
	bx->cache_reval = e->etag_len > 0 || e->lm_len > 0;
	bx->cache_fill = f;
}

int
cache_request(struct exchange *x)
{
	static __thread struct cache_key k;
	const struct http_msg *m = &x->req;
	struct cache_cc rq;
	struct cache_shard *s;
	struct cache_entry *e;
	struct cache_fill *f;
	enum cache_state st = CACHE_ST_STALE;
	uint64_t hash, max = x->rt->cfg->cache.max_memory;
	uint64_t now = x->w->now_ms;

	pthread_once(&cache_once, cache_init);
	if (atomic_load_explicit(&cache_max, memory_order_relaxed) != max)
		atomic_store_explicit(&cache_max, max, memory_order_relaxed);
	if (m->method != HTTP_M_GET && m->method != HTTP_M_HEAD) {
		x->cache_unsafe = m->method == HTTP_M_POST || m->method == HTTP_M_PUT ||
		                  m->method == HTTP_M_DELETE || m->method == HTTP_M_PATCH;
		/* the head may be overwritten by a streamed body: keep the URL's hash */
		if (x->cache_unsafe && cache_key_build(x, &k) == 0) {
			x->cache_url_hash = k.url_hash;
			cache_shared_note_unsafe(x, &k);
		} else
			x->cache_unsafe = 0;
		return cache_bypass(x);
	}
	cache_cc_of(m, x->in.data, &rq);
	if ((rq.flags & CACHE_CC_NO_STORE) || cache_key_build(x, &k) < 0)
		return cache_bypass(x);
	hash = cache_hash(k.url_hash, k.buf + k.shared_len, k.len - k.shared_len);
	s = cache_shard_of(k.url_hash);
	pthread_mutex_lock(&s->lock);
	e = cache_lookup(s, x, k.buf, k.len);
	if (e == NULL && k.len != k.shared_len)
		e = cache_lookup(s, x, k.buf, k.shared_len);
	if (e != NULL) {
		st = cache_evaluate(e, &rq, now);
		x->cache_age_s = (uint32_t)(cache_age_ms(e, now) / 1000);
		atomic_fetch_add_explicit(&e->refs, 1, memory_order_relaxed);
		x->cache_ent = e;
		if (st == CACHE_ST_FRESH || st == CACHE_ST_STALE_OK) {
			cache_lru_unlink(e);
			cache_lru_front(s, e);
			pthread_mutex_unlock(&s->lock);
			cache_serve(x, st == CACHE_ST_FRESH ? CACHE_R_HIT : CACHE_R_STALE);
			return 1;
		}
	}
	f = cache_fill_find(s, hash, &k);
	if (st == CACHE_ST_SWR && (f != NULL || cache_bg_possible(x))) {
		/* stale-while-revalidate: answered now; the refresh is under way already or
		 * starts behind x's back */
		struct exchange *bx = f == NULL ? cache_bg_new(x) : NULL;

		if (bx != NULL)
			cache_bg_adopt(bx, e, cache_fill_new(s, hash, &k));
		pthread_mutex_unlock(&s->lock);
		if (bx != NULL)
			cache_bg_go(bx);
		cache_serve(x, CACHE_R_STALE);
		return 1;
	}
	if (f != NULL && f->nwaiters < CACHE_WAITERS_MAX && cache_wq_get(x->w) != NULL) {
		/* from here the filler may hand x an entry (x->cache_ent) on its own thread:
		 * the stale one is let go of before x is a waiter */
		e = x->cache_ent;
		x->cache_ent = NULL;
		cache_wait_on(x, s, f);
		pthread_mutex_unlock(&s->lock);
		cache_entry_unref(e);
		return 1;
	}
	/* a Range request would bring back a 206: it does not fill (nor make others wait) */
	if (f == NULL && m->method == HTTP_M_GET && !cache_has_range(x))
		x->cache_fill = cache_fill_new(s, hash, &k);
	pthread_mutex_unlock(&s->lock);
	if (x->cache_fill != NULL && cache_shared_ask(x, &k))
		return 1; /* parked: cache_shared_reply goes on */
	cache_miss(x);
	return 0;
}

/* ---- filling from the backend's response ---- */

static int
cache_status_storable(int status)
{
	return status == 200 || status == 203 || status == 301 || status == 404;
}

/* Response headers not stored: hop-by-hop, framing (replaced), Age (recomputed), and
 * what the gateway sets itself. */
static int
cache_drop_stored(const struct http_msg *m, const char *buf, const struct http_header *h)
{
	const char *n = buf + h->name_off;

	if (proxy_hop_header(h))
		return 1;
	switch (h->id) {
	case HTTP_H_TRANSFER_ENCODING:
	case HTTP_H_UPGRADE:
	case HTTP_H_CONTENT_LENGTH:
		return 1;
	case HTTP_H_OTHER:
		break;
	default:
		return 0;
	}
	if (util_strncaseeq(n, h->name_len, "age") || util_strncaseeq(n, h->name_len, "x-cache") ||
	    util_strncaseeq(n, h->name_len, "x-backend") ||
	    util_strncaseeq(n, h->name_len, "x-datacenter"))
		return 1;
	if (m->first[HTTP_H_CONNECTION] >= 0 && h->name_len < 64) {
		char name[64];
		size_t clen;
		const char *conn = http_header_get(m, buf, HTTP_H_CONNECTION, &clen);

		memcpy(name, n, h->name_len);
		name[h->name_len] = '\0';
		return http_list_has(conn, clen, name);
	}
	return 0;
}

static int64_t
cache_header_date(const struct http_msg *m, const char *buf, const char *name)
{
	size_t len;
	const char *v = http_header_find(m, buf, name, &len);

	return v != NULL ? cache_http_date(v, len) : -2;
}

/* Freshness lifetime (RFC 9111 4.2.1) and corrected initial age (4.2.3), in ms; the
 * default ttl when the response carries no freshness information. */
static void
cache_freshness(const struct exchange *x, const struct cache_cc *cc, uint64_t ttl_ms,
                uint64_t *lifetime_ms, uint64_t *initial_age_ms)
{
	const struct http_msg *m = &x->resp;
	const char *buf = x->out.data;
	int64_t now = (int64_t)time(NULL);
	int64_t date = cache_header_date(m, buf, "date"), expires;
	int64_t apparent, age_value = 0, delay;
	size_t len;
	const char *age = http_header_find(m, buf, "age", &len);

	if (date < 0)
		date = now;
	if (cc->flags & CACHE_CC_S_MAXAGE)
		*lifetime_ms = (uint64_t)cc->s_maxage * 1000;
	else if (cc->flags & CACHE_CC_MAX_AGE)
		*lifetime_ms = (uint64_t)cc->max_age * 1000;
	else if ((expires = cache_header_date(m, buf, "expires")) != -2)
		*lifetime_ms = expires > date ? (uint64_t)(expires - date) * 1000 : 0;
	else
		*lifetime_ms = ttl_ms;
	if (age != NULL) {
		for (size_t i = 0;
		     i < len && age[i] >= '0' && age[i] <= '9' && age_value < (1 << 30); i++)
			age_value = age_value * 10 + (age[i] - '0');
	}
	apparent = now > date ? now - date : 0;
	delay = (int64_t)((util_now_us() - x->start_us) / 1000);
	if (delay < 0)
		delay = 0;
	*initial_age_ms =
	    (uint64_t)(apparent * 1000 > age_value * 1000 + delay ? apparent * 1000
	                                                          : age_value * 1000 + delay);
}

/* The Vary blob: for each listed request header its value (or absence). 0 when the
 * response varies on everything ("*"): not storable. */
static int
cache_vary_blob(struct exchange *x, struct cache_fill *f)
{
	size_t vlen, cap, off = 0;
	const char *v = http_header_find(&x->resp, x->out.data, "vary", &vlen), *end;

	if (v == NULL)
		return 1;
	end = v + vlen;
	cap = vlen * 2 + 2048;
	f->vary = xmalloc(cap);
	while (v < end) {
		const char *t, *h;
		size_t n, hl = 0;

		while (v < end && (*v == ' ' || *v == '\t' || *v == ','))
			v++;
		t = v;
		while (v < end && *v != ',' && *v != ' ' && *v != '\t')
			v++;
		n = (size_t)(v - t);
		if (n == 0)
			continue;
		if (n == 1 && t[0] == '*')
			return 0;
		char name[128];
		if (n >= sizeof(name))
			return 0;
		memcpy(name, t, n);
		name[n] = '\0';
		h = http_header_find(&x->req, x->in.data, name, &hl);
		if (memchr(h != NULL ? h : "", '\0', hl) != NULL || off + n + hl + 3 > cap)
			return 0;
		memcpy(f->vary + off, name, n + 1);
		off += n + 1;
		f->vary[off++] = h != NULL ? '1' : '0';
		if (hl > 0)
			memcpy(f->vary + off, h, hl);
		off += hl;
		f->vary[off++] = '\0';
	}
	f->vary_len = off;
	return 1;
}

/* Copies the status line and the stored headers; notes where the validators are. */
static void
cache_fill_copy_head(struct exchange *x, struct cache_fill *f)
{
	const struct http_msg *m = &x->resp;
	const char *buf = x->out.data;
	size_t off;

	f->head = xmalloc(m->head_len + 64);
	off = (size_t)snprintf(f->head, 64, "HTTP/1.1 %03d %.*s\r\n", m->status,
	                       (int)(m->reason_len < 40 ? m->reason_len : 40), buf + m->reason_off);
	f->status_len = (uint32_t)off;
	for (int i = 0; i < m->nhdr; i++) {
		const struct http_header *h = &m->hdr[i];
		const char *n = buf + h->name_off;

		if (cache_drop_stored(m, buf, h))
			continue;
		if (util_strncaseeq(n, h->name_len, "etag") && f->etag_len == 0) {
			f->etag_off = (uint32_t)(off + h->value_off - h->line_off);
			f->etag_len = h->value_len;
		} else if (util_strncaseeq(n, h->name_len, "last-modified") && f->lm_len == 0) {
			f->lm_off = (uint32_t)(off + h->value_off - h->line_off);
			f->lm_len = h->value_len;
			f->lm_s = cache_http_date(buf + h->value_off, h->value_len);
		}
		memcpy(f->head + off, buf + h->line_off, h->line_len);
		off += h->line_len;
	}
	f->head_len = off;
}

/* Decides whether the response to x is stored (RFC 9111 3) and starts the copy. */
static int
cache_fill_start(struct exchange *x, struct cache_fill *f)
{
	const struct http_msg *m = &x->resp;
	struct cache_cc cc;
	uint64_t ttl = x->route->cache_ttl_ms ? x->route->cache_ttl_ms : x->rt->cfg->cache.ttl_ms;
	size_t len;

	cache_cc_of(m, x->out.data, &cc);
	if (!cache_status_storable(m->status) || x->req.method != HTTP_M_GET ||
	    (cc.flags & (CACHE_CC_NO_STORE | CACHE_CC_NO_CACHE | CACHE_CC_PRIVATE)) ||
	    http_header_find(m, x->out.data, "set-cookie", &len) != NULL)
		return 0;
	if (!x->buffered)
		return 0; /* the request head is gone (a streamed body): no Vary values */
	f->cap = cache_entry_cap();
	if (m->body == HTTP_BODY_LENGTH && m->content_length > f->cap)
		return 0;
	if (!cache_vary_blob(x, f))
		return 0;
	cache_freshness(x, &cc, ttl, &f->lifetime_ms, &f->initial_age_ms);
	cache_fill_copy_head(x, f);
	if (f->lifetime_ms == 0 && f->etag_len == 0 && f->lm_len == 0)
		return 0; /* stale at once and nothing to revalidate with */
	f->status = m->status;
	f->must_revalidate = (cc.flags & (CACHE_CC_MUST_REVALIDATE | CACHE_CC_PROXY_REVALIDATE |
	                                  CACHE_CC_S_MAXAGE)) != 0;
	f->shared = f->key_len == f->shared_len ||
	            (cc.flags & (CACHE_CC_PUBLIC | CACHE_CC_S_MAXAGE | CACHE_CC_MUST_REVALIDATE));
	f->swr_s = (cc.flags & CACHE_CC_SWR) ? cc.swr : 0;
	f->sie_s = (cc.flags & CACHE_CC_SIE) ? cc.sie : 0;
	util_strlcpy(f->backend, x->b->id, sizeof(f->backend));
	util_strlcpy(f->dc, x->b->dc, sizeof(f->dc));
	f->body_cap = m->body == HTTP_BODY_LENGTH ? (size_t)m->content_length : CACHE_BODY_INIT;
	if (!cache_fill_reserve(f, f->body_cap))
		return 0;
	f->body = xmalloc(f->body_cap + 1);
	f->storing = 1;
	return 1;
}

void
cache_fill_body(void *arg, const char *data, size_t n)
{
	struct exchange *x = arg;
	struct cache_fill *f = x->cache_fill;

	if (f == NULL || !f->storing || n == 0)
		return;
	if (f->body_len + n > f->cap) {
		cache_fill_abandon(x);
		return;
	}
	if (f->body_len + n > f->body_cap) {
		size_t nc = f->body_cap * 2;
		while (nc < f->body_len + n)
			nc *= 2;
		if (nc > f->cap)
			nc = f->cap;
		if (!cache_fill_reserve(f, nc)) {
			cache_fill_abandon(x);
			return;
		}
		f->body = xrealloc(f->body, nc + 1);
		f->body_cap = nc;
	}
	memcpy(f->body + f->body_len, data, n);
	f->body_len += n;
}

/* x's fill ends with entry e (its reference goes to the table): linked, given to the
 * waiters, and the fill freed. */
static void
cache_fill_publish(struct exchange *x, struct cache_entry *e)
{
	struct cache_fill *f = x->cache_fill;
	struct cache_shard *s = &cache_shards[f->shard];
	struct cache_entry *old;

	x->cache_fill = NULL;
	pthread_mutex_lock(&s->lock);
	cache_fill_unlink(s, f);
	old = cache_link(s, e);
	cache_wake(f, e);
	pthread_mutex_unlock(&s->lock);
	cache_entry_unref(old);
	cache_fill_free(f);
	cache_enforce(s);
}

/* The fill is complete: the entry goes into the table and the waiters get it. */
static void
cache_fill_commit(struct exchange *x)
{
	struct cache_fill *f = x->cache_fill;
	struct cache_entry *e;
	char clen[48];
	size_t cl = util_append_str(clen, 0, sizeof(clen), "Content-Length: ");
	size_t klen = f->shared ? f->shared_len : f->key_len;

	cl = util_append_u64(clen, cl, sizeof(clen), f->body_len);
	cl = util_append_str(clen, cl, sizeof(clen), "\r\n");
	if (cache_entry_charge(klen, f->head_len + cl, f->body_len, f->vary_len) > f->cap) {
		cache_fill_abandon(x);
		return;
	}
	if (f->body_cap > f->body_len + 4096)
		f->body = xrealloc(f->body, f->body_len + 1);
	e = cache_entry_new(f->key, klen, f->head, f->head_len, clen, cl, f->vary, f->vary_len,
	                    f->body, f->body_len);
	f->body = NULL;
	e->url_off = f->url_off;
	e->url_len = f->url_len;
	e->url_hash = f->url_hash;
	e->status = f->status;
	e->status_len = f->status_len;
	e->etag_off = f->etag_off;
	e->etag_len = f->etag_len;
	e->lm_off = f->lm_off;
	e->lm_len = f->lm_len;
	e->lm_s = f->lm_s;
	e->must_revalidate = f->must_revalidate;
	e->stored_ms = util_now_ms();
	e->initial_age_ms = f->initial_age_ms;
	e->lifetime_ms = f->lifetime_ms;
	e->swr_s = f->swr_s;
	e->sie_s = f->sie_s;
	memcpy(e->backend, f->backend, sizeof(e->backend));
	memcpy(e->dc, f->dc, sizeof(e->dc));
	cache_shared_store(x, e);
	cache_fill_publish(x, e);
}

/* The name of the header line at p (up to the colon) as a C string; 0 when too long. */
static int
cache_line_name(const char *p, const char *eol, char *name, size_t cap)
{
	const char *colon = memchr(p, ':', (size_t)(eol - p));
	size_t n = colon != NULL ? (size_t)(colon - p) : 0;

	if (n == 0 || n >= cap)
		return 0;
	memcpy(name, p, n);
	name[n] = '\0';
	return 1;
}

/* Finds the ETag and Last-Modified values in e's head. */
static void
cache_entry_validators(struct cache_entry *e)
{
	const char *p = e->head + e->status_len, *end = e->head + e->head_len;

	e->etag_len = e->lm_len = 0;
	while (p < end) {
		const char *eol = memchr(p, '\n', (size_t)(end - p)), *v;
		char name[32];

		if (eol == NULL)
			break;
		if (cache_line_name(p, eol, name, sizeof(name)) &&
		    (strcasecmp(name, "etag") == 0 || strcasecmp(name, "last-modified") == 0)) {
			size_t vlen;

			v = p + strlen(name) + 1;
			while (v < eol && (*v == ' ' || *v == '\t'))
				v++;
			vlen = (size_t)(eol - v);
			while (vlen > 0 &&
			       (v[vlen - 1] == '\r' || v[vlen - 1] == ' ' || v[vlen - 1] == '\t'))
				vlen--;
			if (name[0] == 'e' || name[0] == 'E') {
				e->etag_off = (uint32_t)(v - e->head);
				e->etag_len = (uint32_t)vlen;
			} else {
				e->lm_off = (uint32_t)(v - e->head);
				e->lm_len = (uint32_t)vlen;
				e->lm_s = cache_http_date(v, vlen);
			}
		}
		p = eol + 1;
	}
}

/*
 * The stored response with the header fields of a 304 applied (RFC 9111 3.2): each field
 * the 304 carries replaces the stored ones of that name; framing, hop-by-hop and Age
 * are not taken. A new entry (entries never change once linked); the body is copied.
 */
static struct cache_entry *
cache_entry_updated(const struct cache_entry *old, const struct exchange *x)
{
	const struct http_msg *m = &x->resp;
	const char *buf = x->out.data;
	const char *p = old->head + old->status_len, *end = old->head + old->head_len;
	char *h = xmalloc(old->head_len + m->head_len + 1), *body;
	size_t off = old->status_len, len;
	struct cache_entry *e;

	memcpy(h, old->head, old->status_len);
	while (p < end) {
		const char *eol = memchr(p, '\n', (size_t)(end - p));
		char name[128];

		eol = eol != NULL ? eol + 1 : end;
		if (!cache_line_name(p, eol, name, sizeof(name)) ||
		    strcasecmp(name, "content-length") == 0 ||
		    http_header_find(m, buf, name, &len) == NULL) {
			memcpy(h + off, p, (size_t)(eol - p));
			off += (size_t)(eol - p);
		}
		p = eol;
	}
	for (int i = 0; i < m->nhdr; i++) {
		const struct http_header *hd = &m->hdr[i];

		if (cache_drop_stored(m, buf, hd))
			continue;
		memcpy(h + off, buf + hd->line_off, hd->line_len);
		off += hd->line_len;
	}
	body = xmalloc(old->body_len + 1);
	memcpy(body, old->body, old->body_len);
	e = cache_entry_new(old->key, old->key_len, h, off, NULL, 0, old->vary, old->vary_len, body,
	                    old->body_len);
	free(h);
	e->url_off = old->url_off;
	e->url_len = old->url_len;
	e->url_hash = old->url_hash;
	e->status = old->status;
	e->status_len = old->status_len;
	e->must_revalidate = old->must_revalidate;
	e->swr_s = old->swr_s;
	e->sie_s = old->sie_s;
	util_strlcpy(e->backend, x->b != NULL ? x->b->id : old->backend, sizeof(e->backend));
	util_strlcpy(e->dc, x->b != NULL ? x->b->dc : old->dc, sizeof(e->dc));
	cache_entry_validators(e);
	return e;
}

/*
 * A 304 to our conditional request: the stored response, its headers updated, is fresh
 * again (RFC 9111 4.3.4). It replaces the old entry, x serves it, the waiters get it.
 */
static void
cache_refresh(struct exchange *x)
{
	struct cache_entry *old = x->cache_ent, *e, *replaced;
	struct cache_shard *s = cache_shard_of(old->url_hash);
	struct cache_fill *f = x->cache_fill;
	struct cache_cc cc;
	uint64_t life, age;
	uint64_t ttl = x->route->cache_ttl_ms ? x->route->cache_ttl_ms : x->rt->cfg->cache.ttl_ms;

	cache_cc_of(&x->resp, x->out.data, &cc);
	cache_freshness(x, &cc, 0, &life, &age);
	if (life == 0 && !(cc.flags & (CACHE_CC_MAX_AGE | CACHE_CC_S_MAXAGE)))
		life = old->lifetime_ms != 0 ? old->lifetime_ms : ttl;
	e = cache_entry_updated(old, x);
	e->lifetime_ms = life;
	e->initial_age_ms = age;
	e->stored_ms = util_now_ms();
	atomic_fetch_add_explicit(&e->refs, 1, memory_order_relaxed); /* x's */
	x->cache_age_s = (uint32_t)(age / 1000);
	x->cache_fill = NULL;
	pthread_mutex_lock(&s->lock);
	replaced = cache_link(s, e);
	if (f != NULL) {
		cache_fill_unlink(s, f);
		cache_wake(f, e);
	}
	pthread_mutex_unlock(&s->lock);
	cache_entry_unref(replaced);
	cache_entry_unref(old);
	x->cache_ent = e;
	if (f != NULL)
		cache_fill_free(f);
	cache_enforce(s);
	cache_shared_store(x, e); /* x's reference keeps e alive */
}

/* Staleness of x's entry is allowed because the backend failed (RFC 9111 4.2.4, 5861). */
static int
cache_stale_allowed(struct exchange *x, int unreachable)
{
	struct cache_entry *e = x->cache_ent;
	struct cache_shard *s = cache_shard_of(e->url_hash);
	uint64_t age, now = util_now_ms();
	int ok;

	pthread_mutex_lock(&s->lock);
	age = cache_age_ms(e, now);
	x->cache_age_s = (uint32_t)(age / 1000);
	if (age < e->lifetime_ms)
		ok = 1; /* fresh all along (a request no-cache forced the trip) */
	else if (e->must_revalidate)
		ok = 0;
	else if (e->sie_s > 0)
		ok = age - e->lifetime_ms <= (uint64_t)e->sie_s * 1000;
	else
		ok = unreachable; /* disconnected from the origin */
	pthread_mutex_unlock(&s->lock);
	return ok;
}

int
cache_response_head(struct exchange *x)
{
	int status = x->resp.status;

	if (x->cache_ent != NULL && x->cache_reval && status == 304) {
		cache_refresh(x);
		x->cache_status = cache_result_name[CACHE_R_HIT];
		return 1;
	}
	if (x->cache_ent != NULL && status >= 500 && cache_stale_allowed(x, 0)) {
		x->cache_status = cache_result_name[CACHE_R_STALE];
		return 1;
	}
	if (x->cache_fill != NULL && !cache_fill_start(x, x->cache_fill))
		cache_fill_abandon(x);
	return 0;
}

void
cache_answer(struct exchange *x)
{
	enum cache_result r =
	    x->cache_status == cache_result_name[CACHE_R_STALE] ? CACHE_R_STALE : CACHE_R_HIT;

	if (x->cache_fill != NULL)
		cache_fill_abandon(x);
	cache_serve(x, r);
}

int
cache_serve_stale_on_error(struct exchange *x)
{
	if (x->cache_ent == NULL || x->cache_wait || !cache_stale_allowed(x, 1))
		return 0;
	if (x->cache_fill != NULL)
		cache_fill_abandon(x);
	cache_serve(x, CACHE_R_STALE);
	return 1;
}

/* ---- the shared level (cache shared=redis; cache_shared.h, redis.c) ---- */

static int
cache_shared_on(const struct exchange *x)
{
	return redis_on && x->rt->cfg->cache.shared[0] == 'r';
}

static uint64_t
cache_wall_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* The Redis key names of k with and without the identity (one when they are the same). */
static int
cache_shared_names(const struct cache_key *k, int64_t gen, char names[2][CACHE_SHARED_KEY_MAX])
{
	uint8_t d[CACHE_SHARED_DIGEST];
	int n = 0;

	cache_shared_digest(k->buf, k->len, d);
	cache_shared_key(names[n++], (uint64_t)gen, d);
	if (k->shared_len != k->len) {
		cache_shared_digest(k->buf, k->shared_len, d);
		cache_shared_key(names[n++], (uint64_t)gen, d);
	}
	return n;
}

/*
 * A miss about to fill asks the shared level first (even with a stale copy here: another
 * instance may hold a fresh one): 1 when x is parked (its fill stays registered, so that
 * this instance's other misses for the key wait for the answer too), 0 when it goes
 * upstream at once.
 */
static int
cache_shared_ask(struct exchange *x, const struct cache_key *k)
{
	char names[2][CACHE_SHARED_KEY_MAX];
	const char *argv[2] = {names[0], names[1]};
	int64_t gen;
	int n;

	if (!cache_shared_on(x) || (gen = redis_cache_gen()) < 0)
		return 0;
	n = cache_shared_names(k, gen, names);
	if (redis_cache_get(x, argv, n) < 0) {
		redis_cache_count(RC_ERROR);
		return 0;
	}
	x->cache_fill->sgen = gen;
	return 1;
}

/* An unsafe method on a URL: the digests of its shared keys, deleted if it succeeds. */
static void
cache_shared_note_unsafe(struct exchange *x, const struct cache_key *k)
{
	if (!cache_shared_on(x))
		return;
	cache_shared_digest(k->buf, k->len, x->cache_sdig[0]);
	x->cache_nsdig = 1;
	if (k->shared_len != k->len)
		cache_shared_digest(k->buf, k->shared_len, x->cache_sdig[x->cache_nsdig++]);
}

/* Its success: the URL's entries for everybody and for this caller leave Redis (other
 * callers' own entries of the URL expire there with their TTL). */
static void
cache_shared_forget(struct exchange *x)
{
	char names[2][CACHE_SHARED_KEY_MAX];
	const char *argv[2] = {names[0], names[1]};
	int64_t gen = redis_cache_gen();

	if (gen < 0 || !cache_shared_on(x))
		return;
	for (int i = 0; i < x->cache_nsdig && i < 2; i++)
		cache_shared_key(names[i], (uint64_t)gen, x->cache_sdig[i]);
	redis_cache_del(x->w, argv, x->cache_nsdig);
}

/* Writes e (being stored or refreshed here) to Redis, with its remaining freshness as
 * the TTL, unless it is stale already or larger than shared_max_entry. */
static void
cache_shared_store(struct exchange *x, const struct cache_entry *e)
{
	struct cache_wire w = {0};
	uint64_t age = cache_age_ms(e, util_now_ms());
	uint8_t d[CACHE_SHARED_DIGEST];
	char name[CACHE_SHARED_KEY_MAX], *val;
	size_t len;
	int64_t gen;

	if (!cache_shared_on(x) || age >= e->lifetime_ms || (gen = redis_cache_gen()) < 0)
		return;
	w.status = e->status;
	w.must_revalidate = e->must_revalidate;
	w.status_len = e->status_len;
	w.swr_s = e->swr_s;
	w.sie_s = e->sie_s;
	w.lifetime_ms = e->lifetime_ms;
	w.age_ms = age;
	w.written_ms = cache_wall_ms();
	w.backend = e->backend;
	w.backend_len = (uint32_t)strlen(e->backend);
	w.dc = e->dc;
	w.dc_len = (uint32_t)strlen(e->dc);
	w.head = e->head;
	w.head_len = e->head_len;
	w.vary = e->vary;
	w.vary_len = e->vary_len;
	w.body = e->body;
	w.body_len = (uint32_t)e->body_len;
	val = cache_wire_encode(&w, &len);
	if (len > x->rt->cfg->cache.shared_max_entry) {
		redis_cache_count(RC_TOO_LARGE);
	} else {
		cache_shared_digest(e->key, e->key_len, d);
		cache_shared_key(name, (uint64_t)gen, d);
		redis_cache_set(x->w, name, val, len, e->lifetime_ms - age);
	}
	free(val);
}

/* The entry of Redis value w for x's fill f under key length klen, or NULL when it does
 * not serve x (another variant, stale by now, over the per-entry cap). */
static struct cache_entry *
cache_shared_entry(const struct exchange *x, const struct cache_fill *f, const struct cache_wire *w,
                   size_t klen, uint64_t age)
{
	struct cache_entry *e;
	char *body;

	if (age >= w->lifetime_ms || w->backend_len >= CONFIG_NAME_MAX ||
	    w->dc_len >= CONFIG_NAME_MAX ||
	    cache_entry_charge(klen, w->head_len, w->body_len, w->vary_len) > cache_entry_cap())
		return NULL;
	body = xmalloc((size_t)w->body_len + 1);
	memcpy(body, w->body, w->body_len);
	e = cache_entry_new(f->key, klen, w->head, w->head_len, NULL, 0, w->vary, w->vary_len, body,
	                    w->body_len);
	if (!cache_usable(x, e)) {
		cache_entry_unref(e);
		return NULL;
	}
	e->url_off = f->url_off;
	e->url_len = f->url_len;
	e->url_hash = f->url_hash;
	e->status = w->status;
	e->status_len = w->status_len;
	e->must_revalidate = w->must_revalidate;
	e->swr_s = w->swr_s;
	e->sie_s = w->sie_s;
	memcpy(e->backend, w->backend, w->backend_len);
	memcpy(e->dc, w->dc, w->dc_len);
	cache_entry_validators(e);
	e->stored_ms = util_now_ms();
	e->initial_age_ms = age;
	e->lifetime_ms = w->lifetime_ms;
	return e;
}

/* A value found in Redis for x's fill: 1 when it became the entry x is served from. */
static int
cache_shared_adopt(struct exchange *x, const char *val, size_t len, int which)
{
	struct cache_fill *f = x->cache_fill;
	struct cache_wire w;
	struct cache_entry *e;
	uint64_t age;

	/* a purge since the question was asked: the answer is from before it */
	if (f == NULL || redis_cache_gen() != f->sgen || cache_wire_decode(val, len, &w) < 0)
		return 0;
	age = cache_wire_age(&w, cache_wall_ms());
	e = cache_shared_entry(x, f, &w, which == 0 ? f->key_len : f->shared_len, age);
	if (e == NULL)
		return 0;
	atomic_fetch_add_explicit(&e->refs, 1, memory_order_relaxed); /* x's */
	cache_entry_unref(x->cache_ent); /* the stale local copy it replaces */
	x->cache_ent = e;
	x->cache_age_s = (uint32_t)(age / 1000);
	cache_fill_publish(x, e);
	return 1;
}

void
cache_shared_reply(struct exchange *x, const char *val, size_t len, int which, int failed)
{
	struct client *c = x->c;
	int hit = val != NULL && cache_shared_adopt(x, val, len, which);

	redis_cache_count(hit ? RC_HIT : failed ? RC_ERROR : RC_MISS);
	if (c == NULL) {
		client_exchange_release(x); /* the client left while it waited */
		return;
	}
	if (hit) {
		cache_serve(x, CACHE_R_HIT);
	} else {
		x->phase = X_HEAD;
		cache_miss(x);
		router_after_cache(x);
	}
	if (!c->closed && (c->x == NULL || c->x->phase == X_HEAD))
		client_run(c);
}

/* Entries of one URL, every identity and variant (after an unsafe method). By the
 * 64-bit hash of host and request-target: a collision only costs a refetch. */
static void
cache_invalidate(uint64_t url_hash)
{
	struct cache_shard *s = cache_shard_of(url_hash);
	struct cache_entry *e, *prev, *dead = NULL;

	pthread_mutex_lock(&s->lock);
	for (e = s->lru.lprev; e != &s->lru; e = prev) {
		prev = e->lprev;
		if (e->url_hash == url_hash) {
			cache_unlink(s, e);
			e->hnext = dead;
			dead = e;
		}
	}
	pthread_mutex_unlock(&s->lock);
	while (dead != NULL) {
		e = dead;
		dead = e->hnext;
		cache_entry_unref(e);
	}
}

void
cache_response_done(struct exchange *x)
{
	int st = x->resp.status;

	if (x->cache_unsafe && st >= 200 && st < 400) {
		cache_invalidate(x->cache_url_hash);
		if (x->cache_nsdig > 0)
			cache_shared_forget(x);
	}
	if (x->cache_fill == NULL)
		return;
	if (x->cache_fill->storing && x->resp_body_left == 0 &&
	    (x->resp.body != HTTP_BODY_LENGTH || x->cache_fill->body_len == x->resp.content_length))
		cache_fill_commit(x);
	else
		cache_fill_abandon(x);
}

size_t
cache_request_validators(const struct exchange *x, char *dst, size_t off, size_t cap)
{
	const struct cache_entry *e = x->cache_ent;

	if (e == NULL)
		return off;
	if (e->etag_len > 0) {
		off = util_append_str(dst, off, cap, "If-None-Match: ");
		off = util_append(dst, off, cap, e->head + e->etag_off, e->etag_len);
		off = util_append_str(dst, off, cap, "\r\n");
	}
	if (e->lm_len > 0) {
		off = util_append_str(dst, off, cap, "If-Modified-Since: ");
		off = util_append(dst, off, cap, e->head + e->lm_off, e->lm_len);
		off = util_append_str(dst, off, cap, "\r\n");
	}
	return off;
}

int
cache_drop_request_header(const struct exchange *x, const struct http_header *h)
{
	const char *n = x->in.data + h->name_off;

	return h->id == HTTP_H_OTHER && h->name_len > 3 && (n[0] == 'i' || n[0] == 'I') &&
	       (util_strncaseeq(n, h->name_len, "if-none-match") ||
	        util_strncaseeq(n, h->name_len, "if-modified-since") ||
	        util_strncaseeq(n, h->name_len, "if-match") ||
	        util_strncaseeq(n, h->name_len, "if-unmodified-since") ||
	        util_strncaseeq(n, h->name_len, "if-range"));
}

void
cache_exchange_end_slow(struct exchange *x)
{
	if (x->cache_wait != 0) {
		struct cache_shard *s = &cache_shards[x->cache_shard_ix];

		pthread_mutex_lock(&s->lock);
		if (x->cache_wait == 1) {
			struct cache_fill *f = x->cache_wfill;
			struct exchange **pp = &f->waiters;
			while (*pp != NULL && *pp != x)
				pp = &(*pp)->cache_wnext;
			if (*pp == x) {
				*pp = x->cache_wnext;
				f->nwaiters--;
			}
		} else if (x->cache_wait == 2) {
			struct cache_wq *q = &cache_wqs[x->w->id];
			struct exchange **pp;
			pthread_mutex_lock(&q->lock);
			pp = &q->head;
			while (*pp != NULL && *pp != x)
				pp = &(*pp)->cache_wnext;
			if (*pp == x)
				*pp = x->cache_wnext;
			pthread_mutex_unlock(&q->lock);
		}
		x->cache_wait = 0;
		x->cache_wfill = NULL;
		x->cache_wnext = NULL;
		pthread_mutex_unlock(&s->lock);
	}
	if (x->cache_fill != NULL)
		cache_fill_abandon(x);
	cache_entry_unref(x->cache_ent);
	x->cache_ent = NULL;
	x->cache_reval = 0;
}

/* ---- purge, stats, admin ---- */

size_t
cache_purge_local(const char *prefix)
{
	size_t plen = prefix != NULL ? strlen(prefix) : 0, n = 0;

	pthread_once(&cache_once, cache_init);
	for (unsigned i = 0; i < CACHE_NSHARDS; i++) {
		struct cache_shard *s = &cache_shards[i];
		struct cache_entry *e, *prev, *dead = NULL;

		pthread_mutex_lock(&s->lock);
		for (e = s->lru.lprev; e != &s->lru; e = prev) {
			prev = e->lprev;
			if (prefix != NULL && plen > 0 &&
			    (e->url_len < plen || memcmp(e->key + e->url_off, prefix, plen) != 0))
				continue;
			cache_unlink(s, e);
			e->hnext = dead;
			dead = e;
			n++;
		}
		pthread_mutex_unlock(&s->lock);
		while (dead != NULL) {
			e = dead;
			dead = e->hnext;
			cache_entry_unref(e);
		}
	}
	return n;
}

/* The running configuration shares the cache through Redis. */
static int
cache_runtime_shared(void)
{
	struct runtime *rt;
	int on;

	if (!redis_on || atomic_load(&gw.rt) == NULL)
		return 0;
	rt = runtime_acquire();
	on = rt != NULL && rt->cfg->cache.shared[0] == 'r';
	if (rt != NULL)
		runtime_unref(rt);
	return on;
}

size_t
cache_purge(const char *prefix)
{
	/* the level is closed to this instance first: nothing from before the purge comes
	 * back into memory from Redis while it goes on */
	if (cache_runtime_shared())
		redis_cache_purge(prefix);
	return cache_purge_local(prefix);
}

static int
cache_configured(void)
{
	struct runtime *rt;
	int on = 0;

	if (atomic_load(&gw.rt) == NULL)
		return 0;
	rt = runtime_acquire();
	for (int i = 0; rt != NULL && i < rt->cfg->nroutes; i++)
		on |= rt->cfg->routes[i].cache;
	if (rt != NULL)
		runtime_unref(rt);
	return on;
}

cJSON *
cache_stats_json_always(void)
{
	cJSON *o = cJSON_CreateObject();
	uint64_t c[CACHE_R_COUNT], entries, bytes, evictions;
	uint64_t hits, misses;

	cache_counts(c);
	cache_store_usage(&entries, &bytes, &evictions);
	hits = c[CACHE_R_HIT];
	misses = c[CACHE_R_MISS];
	cJSON_AddNumberToObject(o, "hits", (double)hits);
	cJSON_AddNumberToObject(o, "misses", (double)misses);
	cJSON_AddNumberToObject(o, "hit_rate",
	                        hits + misses + c[CACHE_R_STALE] > 0
	                            ? (double)(hits + c[CACHE_R_STALE]) /
	                                  (double)(hits + misses + c[CACHE_R_STALE])
	                            : 0.0);
	cJSON_AddNumberToObject(o, "entries", (double)entries);
	cJSON_AddNumberToObject(o, "bytes", (double)bytes);
	cJSON_AddNumberToObject(o, "stale", (double)c[CACHE_R_STALE]);
	cJSON_AddNumberToObject(o, "bypass", (double)c[CACHE_R_BYPASS]);
	cJSON_AddNumberToObject(o, "evictions", (double)evictions);
	cJSON_AddNumberToObject(o, "max_memory",
	                        (double)atomic_load_explicit(&cache_max, memory_order_relaxed));
	return o;
}

cJSON *
cache_stats_json(void)
{
	return cache_configured() ? cache_stats_json_always() : NULL;
}

void
api_cache_purge(struct exchange *x)
{
	const char *prefix = NULL;
	cJSON *j = NULL, *p;
	char out[64];
	size_t off;

	if (x->req.body != HTTP_BODY_NONE && x->req.content_length > 0) {
		j = api_util_body_object(x);
		if (j == NULL)
			return;
		p = cJSON_GetObjectItemCaseSensitive(j, "prefix");
		if (cJSON_IsString(p) && (p->valuestring[0] == '/' || p->valuestring[0] == '\0')) {
			prefix = p->valuestring;
		} else if (p != NULL && !cJSON_IsNull(p)) {
			cJSON_Delete(j);
			respond_error(x, 400, "invalid_request",
			              "prefix must be a path starting with '/'.", NULL, NULL);
			return;
		}
	}
	off = util_append_str(out, 0, sizeof(out), "{\"purged\":");
	off = util_append_u64(out, off, sizeof(out), cache_purge(prefix));
	off = util_append_str(out, off, sizeof(out), "}");
	cJSON_Delete(j);
	respond_json(x, 200, out, off, NULL);
}
