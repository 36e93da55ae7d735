#ifndef GW_CACHE_SHARED_H
#define GW_CACHE_SHARED_H

/*
 * The shared level of the response cache (`cache shared=redis`, gatewayd.conf(5)): how an
 * entry is written into one Redis value and how its Redis key is named. Pure functions
 * (no I/O): cache.c moves entries between the two levels, redis.c sends the commands.
 *
 * Keys: "gw:c:" GEN ":" and 32 hex digits of SHA-256 over the in-memory cache key (which
 * holds the identity for a per-caller entry): credentials never appear in Redis, and one
 * generation number (INCR gw:cache:gen) retires every entry at once on a purge.
 *
 * Values: "GWC1", fixed little-endian fields, then the backend, datacenter, head, Vary
 * blob and body, each preceded by its u32 length. The age and a wall-clock write time
 * travel with the entry, so a reader elsewhere computes the same Age and remaining
 * freshness (instances' clocks are assumed to agree, as for Date-based ages).
 */

#include <stddef.h>
#include <stdint.h>

#define CACHE_SHARED_GEN_KEY "gw:cache:gen"
#define CACHE_SHARED_KEY_MAX 64 /* "gw:c:" + 20 digits + ":" + 32 hex, with room */
#define CACHE_SHARED_DIGEST 16  /* bytes of SHA-256 kept in a key name */

/* One entry as it travels; the pointers refer to the caller's (or the value's) bytes. */
struct cache_wire {
	uint16_t status;
	uint8_t must_revalidate;
	uint32_t status_len; /* the status line inside head, CRLF included */
	uint32_t swr_s, sie_s;
	uint64_t lifetime_ms; /* freshness lifetime */
	uint64_t age_ms;      /* the entry's age at written_ms */
	uint64_t written_ms;  /* wall clock, Unix milliseconds */
	const char *backend, *dc, *head, *vary, *body;
	uint32_t backend_len, dc_len, head_len, vary_len, body_len;
};

/* The encoding of w; malloc'd, the caller frees; *len its size. */
char *cache_wire_encode(const struct cache_wire *w, size_t *len);
/* 0 with w pointing into buf (which must outlive w), or -1 when buf is not a well-formed
 * value (truncated, another version, lengths out of bounds, an unterminated Vary blob). */
int cache_wire_decode(const char *buf, size_t len, struct cache_wire *w);
/* The entry's age at wall time now_ms (a clock behind the writer's counts as no time). */
uint64_t cache_wire_age(const struct cache_wire *w, uint64_t now_ms);

/* SHA-256 (first CACHE_SHARED_DIGEST bytes) of an in-memory cache key. */
void cache_shared_digest(const char *key, size_t len, uint8_t out[CACHE_SHARED_DIGEST]);
/* The Redis key of digest d under generation gen into dst (at least CACHE_SHARED_KEY_MAX
 * bytes, NUL-terminated); returns its length. */
size_t cache_shared_key(char *dst, uint64_t gen, const uint8_t d[CACHE_SHARED_DIGEST]);

#endif
