#ifndef GW_CACHE_CONTROL_H
#define GW_CACHE_CONTROL_H

#include <stddef.h>
#include <stdint.h>

/*
 * Cache-Control (RFC 9111 5.2) and HTTP-date (RFC 9110 5.6.7) parsing for the response
 * cache. Pure functions on counted strings: no allocation, no locale, fuzzed
 * (tests/fuzz/fuzz_cache_control.c).
 */

/* Directives present (flags of struct cache_cc). */
#define CACHE_CC_NO_STORE 0x0001
#define CACHE_CC_NO_CACHE 0x0002
#define CACHE_CC_PRIVATE 0x0004
#define CACHE_CC_PUBLIC 0x0008
#define CACHE_CC_MUST_REVALIDATE 0x0010
#define CACHE_CC_PROXY_REVALIDATE 0x0020
#define CACHE_CC_MAX_AGE 0x0040
#define CACHE_CC_S_MAXAGE 0x0080
#define CACHE_CC_SWR 0x0100 /* stale-while-revalidate */
#define CACHE_CC_SIE 0x0200 /* stale-if-error */
#define CACHE_CC_MAX_STALE 0x0400
#define CACHE_CC_MIN_FRESH 0x0800
#define CACHE_CC_ONLY_IF_CACHED 0x1000
#define CACHE_CC_NO_TRANSFORM 0x2000

/* Delta-seconds are capped here (RFC 9111 1.2.2: 2^31 stands for "infinity"). */
#define CACHE_CC_DELTA_MAX 2147483648u

struct cache_cc {
	uint32_t flags;
	uint32_t max_age;   /* seconds, with CACHE_CC_MAX_AGE */
	uint32_t s_maxage;  /* with CACHE_CC_S_MAXAGE */
	uint32_t swr;       /* stale-while-revalidate seconds */
	uint32_t sie;       /* stale-if-error seconds */
	uint32_t max_stale; /* request: max-stale (CACHE_CC_DELTA_MAX when no value) */
	uint32_t min_fresh; /* request: min-fresh */
};

/*
 * Adds the directives of one Cache-Control field value to cc (several fields form one
 * list: call once per field line, cc zeroed before the first). Unknown directives are
 * ignored; a malformed delta-seconds makes that directive count as absent, except for
 * max-age and s-maxage, which then mean 0 (stale: RFC 9111 4.2.1 "invalid ... stale").
 */
void cache_cc_parse(struct cache_cc *cc, const char *v, size_t len);

/*
 * An HTTP-date (IMF-fixdate, RFC 850 or asctime form) as Unix seconds; -1 when it is
 * not one (an invalid Expires means "already expired", which callers treat as such).
 */
int64_t cache_http_date(const char *v, size_t len);

/* Writes an IMF-fixdate ("Sun, 06 Nov 1994 08:49:37 GMT", 29 bytes) for t; returns 29. */
size_t cache_http_date_format(int64_t t, char out[30]);

#endif
