#ifndef GW_CACHE_H
#define GW_CACHE_H

/*
 * The response cache (SPEC sections 3 and 5, gatewayd.conf(5) `cache`, `route cache=on`):
 * an RFC 9111 shared cache in memory, process-wide.
 *
 * Store: shards chosen by the hash of the URL (host and request-target), each with its
 * own mutex, hash table and LRU list; one global byte budget (max_memory) counting the
 * entries' structs, keys, heads and bodies. An entry holds a whole response: the status
 * line and end-to-end headers (with a Content-Length of its own) and the decoded body.
 * Entries are reference counted: the table holds one reference while the entry is
 * linked, and every exchange writing it to a client holds one, so eviction never frees
 * bytes a writev still points at.
 *
 * Keys: "GET or HEAD", Host, request-target, and, for a request that carries a credential,
 * the identity — unless the backend marked the response public, s-maxage or
 * must-revalidate (RFC 9111 3.5), in which case it is stored once for everybody. Vary'd
 * request headers are compared on lookup (one variant per key: a new variant replaces
 * the old one).
 *
 * Fills: the first miss for a key streams from the backend as usual and a copy of the
 * response is kept as it passes (cache_fill_*), abandoned when it is not storable or
 * grows past the per-entry cap. Concurrent misses for the key wait for it (bounded
 * count), on their own worker's loop, woken through an eventfd.
 *
 * Shared level (`cache shared=redis`): a miss that would fill first asks Redis (one MGET
 * of the key with and without the identity, the exchange parked in X_WAIT); a value
 * found becomes the entry (with the age it has there) and answers as a HIT. Fills are
 * written to Redis with the remaining freshness as TTL; purges go to every instance.
 * Redis away, slow or failing: the request goes upstream as a MISS.
 */

#include <cjson/cJSON.h>
#include <stddef.h>
#include <stdint.h>

#include "proxy.h"

struct cache_entry;
struct cache_fill;
struct http_header;

/* cache results, for the counters (/stats, /metrics) */
enum cache_result {
	CACHE_R_HIT,
	CACHE_R_MISS,
	CACHE_R_STALE,
	CACHE_R_BYPASS,
	CACHE_R_UPSTREAM,
	CACHE_R_COUNT
};

/*
 * The pipeline's cache stage for a route with cache=on. Returns 1 when the cache
 * answered (HIT, STALE) or holds the exchange (waiting for another request's fill);
 * 0 when the request goes upstream (x->cache_status says MISS or BYPASS).
 */
int cache_request(struct exchange *x);

/*
 * proxy.c, once the final response head from the backend is parsed (routes with
 * cache=on only). Returns 1 when the cache answers instead of this response (a 304 that
 * revalidated the stored entry, or a 5xx replaced by a stale entry under
 * stale-if-error): the caller releases the backend, then calls cache_answer(). Else
 * starts or abandons the fill and returns 0.
 */
int cache_response_head(struct exchange *x);
void cache_answer(struct exchange *x);
/* Body bytes of the response as they stream to the client (decoded when chunked). */
void cache_fill_body(void *x, const char *data, size_t n);
/* The response went out whole (proxy_finish): stores the fill, invalidates after an
 * unsafe method. */
void cache_response_done(struct exchange *x);
/* The backend failed (502/503/504 ahead): 1 when a stale entry was served instead. */
int cache_serve_stale_on_error(struct exchange *x);
/* Validators of the stored entry being revalidated, as request header lines. */
size_t cache_request_validators(const struct exchange *x, char *dst, size_t off, size_t cap);
/* 1 for a client's conditional header that a revalidation replaces with its own. */
int cache_drop_request_header(const struct exchange *x, const struct http_header *h);

/* The exchange ends or is reused: drops its entry, fill or wait. */
void cache_exchange_end_slow(struct exchange *x);
static inline void
cache_exchange_end(struct exchange *x)
{
	if (x->cache_ent != NULL || x->cache_fill != NULL || x->cache_wait != 0)
		cache_exchange_end_slow(x);
}

/*
 * Background refreshes (cache_bg.c), for stale-while-revalidate: the client is answered
 * from the stale entry while one GET for it goes to a backend on an exchange of its own.
 */
/* 1 when x's refresh can go behind its back (else it revalidates in the foreground). */
int cache_bg_possible(const struct exchange *x);
/* A refresh exchange for x's request (no client; the caller sets its cache_ent and
 * cache_fill), or NULL after a reload. Owned by its worker: it frees itself. */
struct exchange *cache_bg_new(struct exchange *from);
/* Sends it to a backend; when none is available or reachable it ends at once (its fill
 * abandoned: the stale entry stays). */
void cache_bg_go(struct exchange *x);
/* Ends every refresh of w (the worker stops). */
void cache_bg_stop_all(struct worker *w);

/* The "cache" object of /stats and `gatectl cache stats`: hits, misses, hit_rate,
 * entries, bytes, stale, bypass, evictions, max_memory. Caller frees (cJSON_Delete);
 * NULL when no route has cache=on. */
cJSON *cache_stats_json(void);
/* Same, all zeros when no cache is configured (never NULL). */
cJSON *cache_stats_json_always(void);
/* Counters summed over the workers (index: enum cache_result). */
void cache_counts(uint64_t out[CACHE_R_COUNT]);
/* Removes every entry whose request-target starts with prefix (NULL or "": all);
 * returns how many. Entries being written to clients are freed when they are done. */
size_t cache_purge(const char *prefix);
/* Same in this instance's memory only (cache_purge also tells the others, with
 * `cache shared=redis`; redis.c calls this one for their purges). */
size_t cache_purge_local(const char *prefix);
/* POST /admin/cache/purge {"prefix":"/api/"} -> 200 {"purged":N} (admin). */
void api_cache_purge(struct exchange *x);

/* ---- the store, for the unit tests (and used by the functions above) ---- */

struct cache_entry_info {
	const char *key;
	size_t key_len;
	size_t url_off, url_len; /* the request-target inside key */
	const char *head;        /* status line and header lines, CRLF each, no blank line */
	size_t head_len;
	const char *body;
	size_t body_len;
	uint64_t lifetime_ms;
};

/* Resets the store to nshards (1..64) shards and a budget (tests only: no entry may be
 * in use). */
void cache_store_reset(unsigned nshards, uint64_t max_memory);
/* Inserts a copy of the entry described by info (replacing one with the same key);
 * 0, or -1 when it is larger than the per-entry cap. */
int cache_store_put(const struct cache_entry_info *info, uint64_t now_ms);
/* 1 when an entry with this key is present (and marks it most recently used). */
int cache_store_has(const char *key, size_t key_len);
/* Entries, bytes and evictions so far. */
void cache_store_usage(uint64_t *entries, uint64_t *bytes, uint64_t *evictions);
/* Bytes an entry of these sizes is charged. */
size_t cache_entry_charge(size_t key_len, size_t head_len, size_t body_len, size_t vary_len);

#endif
