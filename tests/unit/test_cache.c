/*
 * Unit tests for the response cache: Cache-Control parsing (directives, values,
 * quoted strings, case, junk), HTTP-date parsing and formatting, and the store's LRU
 * eviction order, per-entry cap and memory accounting (gatewayd/cache.c).
 */

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "cache.h"
#include "cache_control.h"

static struct cache_cc
cc_of(const char *s)
{
	struct cache_cc cc;

	memset(&cc, 0, sizeof(cc));
	cache_cc_parse(&cc, s, strlen(s));
	return cc;
}

static void
test_cc_basic(void **state)
{
	struct cache_cc cc = cc_of("public, max-age=60, s-maxage=30");

	assert_int_equal(cc.flags, CACHE_CC_PUBLIC | CACHE_CC_MAX_AGE | CACHE_CC_S_MAXAGE);
	assert_int_equal(cc.max_age, 60);
	assert_int_equal(cc.s_maxage, 30);
	cc = cc_of("no-store");
	assert_int_equal(cc.flags, CACHE_CC_NO_STORE);
	cc = cc_of("No-Cache,PRIVATE ,  Must-Revalidate");
	assert_int_equal(cc.flags, CACHE_CC_NO_CACHE | CACHE_CC_PRIVATE | CACHE_CC_MUST_REVALIDATE);
	cc = cc_of("proxy-revalidate, no-transform, only-if-cached");
	assert_int_equal(cc.flags, CACHE_CC_PROXY_REVALIDATE | CACHE_CC_NO_TRANSFORM |
	                               CACHE_CC_ONLY_IF_CACHED);
	cc = cc_of("");
	assert_int_equal(cc.flags, 0);
	cc = cc_of(" , ,, ");
	assert_int_equal(cc.flags, 0);
}

static void
test_cc_values(void **state)
{
	struct cache_cc cc = cc_of("max-age=\"120\", stale-while-revalidate=5, stale-if-error=600");

	assert_int_equal(cc.max_age, 120);
	assert_true(cc.flags & CACHE_CC_SWR);
	assert_int_equal(cc.swr, 5);
	assert_int_equal(cc.sie, 600);
	/* an invalid max-age means stale (0); an invalid stale-* is ignored */
	cc = cc_of("max-age=abc, stale-if-error=x");
	assert_int_equal(cc.flags, CACHE_CC_MAX_AGE);
	assert_int_equal(cc.max_age, 0);
	cc = cc_of("max-age");
	assert_int_equal(cc.flags, CACHE_CC_MAX_AGE);
	assert_int_equal(cc.max_age, 0);
	/* huge values saturate at 2^31 */
	cc = cc_of("s-maxage=99999999999999999999");
	assert_int_equal(cc.s_maxage, CACHE_CC_DELTA_MAX);
	/* request directives */
	cc = cc_of("max-stale, min-fresh=10");
	assert_int_equal(cc.max_stale, CACHE_CC_DELTA_MAX);
	assert_int_equal(cc.min_fresh, 10);
	cc = cc_of("max-stale=30");
	assert_int_equal(cc.max_stale, 30);
	/* blanks around '=' and unknown extensions */
	cc = cc_of("community=\"UCI\", max-age = 7, foo=bar");
	assert_true(cc.flags & CACHE_CC_MAX_AGE);
	assert_int_equal(cc.max_age, 7);
}

static void
test_cc_quoted(void **state)
{
	/* a comma inside a quoted string does not end the directive */
	struct cache_cc cc = cc_of("private=\"Set-Cookie, X-Foo\", max-age=5");

	assert_int_equal(cc.flags, CACHE_CC_PRIVATE | CACHE_CC_MAX_AGE);
	assert_int_equal(cc.max_age, 5);
	cc = cc_of("no-cache=\"a\\\"b, c\", public");
	assert_int_equal(cc.flags, CACHE_CC_NO_CACHE | CACHE_CC_PUBLIC);
	/* an unterminated quote swallows the rest */
	cc = cc_of("ext=\"open, max-age=5");
	assert_int_equal(cc.flags, 0);
	/* several field lines accumulate */
	cc = cc_of("public");
	cache_cc_parse(&cc, "max-age=9", 9);
	assert_int_equal(cc.flags, CACHE_CC_PUBLIC | CACHE_CC_MAX_AGE);
	assert_int_equal(cc.max_age, 9);
}

static void
test_http_date(void **state)
{
	const char *fix = "Sun, 06 Nov 1994 08:49:37 GMT";
	char out[30];

	assert_int_equal(cache_http_date(fix, strlen(fix)), 784111777);
	assert_int_equal(cache_http_date("Sunday, 06-Nov-94 08:49:37 GMT", 30), 784111777);
	assert_int_equal(cache_http_date("Sun Nov  6 08:49:37 1994", 24), 784111777);
	assert_int_equal(cache_http_date(" Sun, 06 Nov 1994 08:49:37 GMT ", 31), 784111777);
	assert_int_equal(cache_http_date("0", 1), -1);
	assert_int_equal(cache_http_date("Sun, 06 Nov 1994 08:49:37 UTC", 29), -1);
	assert_int_equal(cache_http_date("Sun, 06 Xyz 1994 08:49:37 GMT", 29), -1);
	assert_int_equal(cache_http_date("Sun, 06 Nov 1994 25:49:37 GMT", 29), -1);
	assert_int_equal(cache_http_date("", 0), -1);
	assert_int_equal(cache_http_date_format(784111777, out), 29);
	assert_string_equal(out, fix);
	assert_int_equal(cache_http_date_format(1704067200, out), 29);
	assert_string_equal(out, "Mon, 01 Jan 2024 00:00:00 GMT");
}

/* ---- the store ---- */

static const char test_head[] = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n";

static struct cache_entry_info
entry(char *key, size_t keycap, int i, const char *body, size_t body_len)
{
	struct cache_entry_info in;
	int n = snprintf(key, keycap, "Gexample.com\n/item/%03d", i);

	memset(&in, 0, sizeof(in));
	in.key = key;
	in.key_len = (size_t)n;
	in.url_off = 13; /* after "Gexample.com\n" */
	in.url_len = (size_t)n - 13;
	in.head = test_head;
	in.head_len = sizeof(test_head) - 1;
	in.body = body;
	in.body_len = body_len;
	in.lifetime_ms = 60000;
	return in;
}

static int
has(int i)
{
	char key[64];
	int n = snprintf(key, sizeof(key), "Gexample.com\n/item/%03d", i);

	return cache_store_has(key, (size_t)n);
}

static size_t
charge_of(int i, size_t body_len)
{
	char key[64];
	int n = snprintf(key, sizeof(key), "Gexample.com\n/item/%03d", i);

	return cache_entry_charge((size_t)n, sizeof(test_head) - 1, body_len, 0);
}

static void
test_lru_order(void **state)
{
	static char body[100];
	char key[64];
	uint64_t entries, bytes, ev;
	size_t one = charge_of(1, sizeof(body));
	struct cache_entry_info in;

	/* room for exactly 8 entries (and one may take 1/8) */
	cache_store_reset(1, 8 * one);
	for (int i = 1; i <= 8; i++) {
		in = entry(key, sizeof(key), i, body, sizeof(body));
		assert_int_equal(cache_store_put(&in, 0), 0);
	}
	cache_store_usage(&entries, &bytes, &ev);
	assert_int_equal(entries, 8);
	assert_int_equal(bytes, 8 * one);
	assert_int_equal(ev, 0);
	/* 1 used again: 2 is now the least recently used */
	assert_true(has(1));
	in = entry(key, sizeof(key), 9, body, sizeof(body));
	assert_int_equal(cache_store_put(&in, 0), 0);
	assert_true(has(1));
	assert_false(has(2));
	assert_true(has(3));
	assert_true(has(9));
	cache_store_usage(&entries, &bytes, &ev);
	assert_int_equal(entries, 8);
	assert_int_equal(bytes, 8 * one);
	assert_int_equal(ev, 1);
	/* the lookups above used 1, 3 and 9 again: 4 then 5 are the oldest */
	in = entry(key, sizeof(key), 10, body, sizeof(body));
	cache_store_put(&in, 0);
	assert_false(has(4));
	assert_true(has(3));
	in = entry(key, sizeof(key), 11, body, sizeof(body));
	cache_store_put(&in, 0);
	assert_false(has(5));
	assert_true(has(6));
	cache_store_usage(&entries, &bytes, &ev);
	assert_int_equal(ev, 3);
}

static void
test_memory_accounting(void **state)
{
	static char body[4096];
	char key[64];
	uint64_t entries, bytes, ev;
	struct cache_entry_info in;
	size_t total = 0;

	cache_store_reset(4, 1 << 20);
	for (int i = 0; i < 20; i++) {
		in = entry(key, sizeof(key), i, body, (size_t)i * 100);
		assert_int_equal(cache_store_put(&in, 0), 0);
		total += charge_of(i, (size_t)i * 100);
	}
	cache_store_usage(&entries, &bytes, &ev);
	assert_int_equal(entries, 20);
	assert_int_equal(bytes, total);
	/* replacing a key swaps its charge, not adds one */
	in = entry(key, sizeof(key), 5, body, 4000);
	assert_int_equal(cache_store_put(&in, 0), 0);
	total += charge_of(5, 4000) - charge_of(5, 500);
	cache_store_usage(&entries, &bytes, &ev);
	assert_int_equal(entries, 20);
	assert_int_equal(bytes, total);
	/* purge by prefix, then everything */
	assert_int_equal(cache_purge("/item/01"), 10); /* 010..019 */
	cache_store_usage(&entries, &bytes, &ev);
	assert_int_equal(entries, 10);
	assert_int_equal(cache_purge("/nothing"), 0);
	assert_int_equal(cache_purge(NULL), 10);
	cache_store_usage(&entries, &bytes, &ev);
	assert_int_equal(entries, 0);
	assert_int_equal(bytes, 0);
}

static void
test_entry_cap(void **state)
{
	static char body[20000];
	char key[64];
	struct cache_entry_info in;
	uint64_t entries, bytes, ev;

	/* per-entry cap: 1/8 of max_memory */
	cache_store_reset(2, 64 * 1024);
	in = entry(key, sizeof(key), 1, body, 8 * 1024);
	assert_int_equal(cache_store_put(&in, 0), -1);
	in = entry(key, sizeof(key), 1, body, 4 * 1024);
	assert_int_equal(cache_store_put(&in, 0), 0);
	/* the budget holds across shards */
	for (int i = 2; i < 40; i++) {
		in = entry(key, sizeof(key), i, body, 4 * 1024);
		assert_int_equal(cache_store_put(&in, 0), 0);
		cache_store_usage(&entries, &bytes, &ev);
		assert_true(bytes <= 64 * 1024);
	}
	assert_true(ev > 0);
	assert_true(has(39));
	cache_purge(NULL);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_cc_basic),  cmocka_unit_test(test_cc_values),
	    cmocka_unit_test(test_cc_quoted), cmocka_unit_test(test_http_date),
	    cmocka_unit_test(test_lru_order), cmocka_unit_test(test_memory_accounting),
	    cmocka_unit_test(test_entry_cap),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
