/*
 * libFuzzer target: the input is a Cache-Control field value (and, the same bytes, an
 * HTTP-date). cache_cc_parse must never read outside the value, every delta-seconds it
 * keeps is at most 2^31, and parsing the same value twice into one struct changes
 * nothing (directives are flags and last-wins values). A date that parses and is within
 * 4-digit years must format to an IMF-fixdate that parses back to the same time.
 *
 *   make build/fuzz/fuzz_cache_control && build/fuzz/fuzz_cache_control \
 *       -max_total_time=60 build/fuzz/corpus-fuzz_cache_control \
 *       tests/fuzz/corpus/fuzz_cache_control
 */

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cache_control.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
fuzz_check(int ok)
{
	if (!ok)
		__builtin_trap();
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	/* an exact-size copy, so that ASan sees any read past the end */
	char *v = malloc(size ? size : 1);
	struct cache_cc a, b;
	int64_t t;

	if (v == NULL)
		return 0;
	memcpy(v, data, size);
	memset(&a, 0, sizeof(a));
	cache_cc_parse(&a, v, size);
	fuzz_check(a.max_age <= CACHE_CC_DELTA_MAX && a.s_maxage <= CACHE_CC_DELTA_MAX &&
	           a.swr <= CACHE_CC_DELTA_MAX && a.sie <= CACHE_CC_DELTA_MAX &&
	           a.max_stale <= CACHE_CC_DELTA_MAX && a.min_fresh <= CACHE_CC_DELTA_MAX);
	b = a;
	cache_cc_parse(&b, v, size);
	fuzz_check(memcmp(&a, &b, sizeof(a)) == 0);

	t = cache_http_date(v, size);
	if (t >= 0 && t < 253402300800LL) { /* before year 10000 */
		char out[30];
		fuzz_check(cache_http_date_format(t, out) == 29);
		fuzz_check(cache_http_date(out, 29) == t);
	}
	free(v);
	return 0;
}
