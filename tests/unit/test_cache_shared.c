/*
 * Unit tests for gatewayd/cache_shared.c: the value an entry travels in through Redis
 * (`cache shared=redis`) and its key names. The lookups, fills and purges are exercised
 * end to end against a real redis-server (tests/e2e/test_redis_cache.py).
 */

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "cache_shared.h"

static const char head[] = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nETag: \"v1\"\r\n"
                           "Content-Length: 5\r\n";
static const char vary[] = "accept-language\0001fr\0"; /* one pair: name, "1" value */

static struct cache_wire
sample(void)
{
	struct cache_wire w = {0};

	w.status = 200;
	w.must_revalidate = 1;
	w.status_len = 17;
	w.swr_s = 7;
	w.sie_s = 9;
	w.lifetime_ms = 60000;
	w.age_ms = 1500;
	w.written_ms = 1700000000123ull;
	w.backend = "b1";
	w.backend_len = 2;
	w.dc = "us-east";
	w.dc_len = 7;
	w.head = head;
	w.head_len = sizeof(head) - 1;
	w.vary = vary;
	w.vary_len = sizeof(vary) - 1;
	w.body = "hello";
	w.body_len = 5;
	return w;
}

static void
test_round_trip(void **state)
{
	struct cache_wire in = sample(), out;
	size_t len;
	char *buf = cache_wire_encode(&in, &len);

	assert_int_equal(cache_wire_decode(buf, len, &out), 0);
	assert_int_equal(out.status, 200);
	assert_int_equal(out.must_revalidate, 1);
	assert_int_equal(out.status_len, 17);
	assert_int_equal(out.swr_s, 7);
	assert_int_equal(out.sie_s, 9);
	assert_int_equal(out.lifetime_ms, 60000);
	assert_int_equal(out.age_ms, 1500);
	assert_int_equal(out.written_ms, 1700000000123ull);
	assert_int_equal(out.backend_len, 2);
	assert_memory_equal(out.backend, "b1", 2);
	assert_int_equal(out.dc_len, 7);
	assert_memory_equal(out.dc, "us-east", 7);
	assert_int_equal(out.head_len, in.head_len);
	assert_memory_equal(out.head, head, in.head_len);
	assert_int_equal(out.vary_len, in.vary_len);
	assert_memory_equal(out.vary, vary, in.vary_len);
	assert_int_equal(out.body_len, 5);
	assert_memory_equal(out.body, "hello", 5);
	free(buf);

	/* empty strings and an empty body travel too */
	in.dc_len = in.vary_len = in.body_len = 0;
	in.dc = in.vary = in.body = NULL;
	buf = cache_wire_encode(&in, &len);
	assert_int_equal(cache_wire_decode(buf, len, &out), 0);
	assert_int_equal(out.dc_len + out.vary_len + out.body_len, 0);
	free(buf);
}

static void
test_malformed_values(void **state)
{
	struct cache_wire in = sample(), out;
	size_t len;
	char *buf = cache_wire_encode(&in, &len), *copy = malloc(len);

	/* every truncation is refused (never read past the value) */
	for (size_t n = 0; n < len; n++)
		assert_int_equal(cache_wire_decode(buf, n, &out), -1);
	/* trailing garbage, another version */
	memcpy(copy, buf, len);
	assert_int_equal(cache_wire_decode(copy, len, &out), 0);
	copy[3] = '2';
	assert_int_equal(cache_wire_decode(copy, len, &out), -1);
	free(copy);
	copy = malloc(len + 1);
	memcpy(copy, buf, len);
	copy[len] = 'x';
	assert_int_equal(cache_wire_decode(copy, len + 1, &out), -1);
	free(copy);
	free(buf);

	/* a status line past the head, an unterminated or odd Vary blob */
	in.status_len = (uint32_t)in.head_len + 1;
	buf = cache_wire_encode(&in, &len);
	assert_int_equal(cache_wire_decode(buf, len, &out), -1);
	free(buf);
	in = sample();
	in.vary_len -= 1;
	buf = cache_wire_encode(&in, &len);
	assert_int_equal(cache_wire_decode(buf, len, &out), -1);
	free(buf);
	in = sample();
	in.vary = "accept\0";
	in.vary_len = 7;
	buf = cache_wire_encode(&in, &len);
	assert_int_equal(cache_wire_decode(buf, len, &out), -1);
	free(buf);
	in = sample();
	in.status = 42;
	buf = cache_wire_encode(&in, &len);
	assert_int_equal(cache_wire_decode(buf, len, &out), -1);
	free(buf);
}

static void
test_age(void **state)
{
	struct cache_wire w = sample();

	assert_int_equal(cache_wire_age(&w, w.written_ms), 1500);
	assert_int_equal(cache_wire_age(&w, w.written_ms + 2500), 4000);
	/* a reader whose clock is behind the writer's: no negative time */
	assert_int_equal(cache_wire_age(&w, w.written_ms - 10000), 1500);
}

static void
test_key_names(void **state)
{
	uint8_t d1[CACHE_SHARED_DIGEST], d2[CACHE_SHARED_DIGEST];
	char k[CACHE_SHARED_KEY_MAX];
	size_t n;

	cache_shared_digest("Gapi.example\n/items", 19, d1);
	cache_shared_digest("Gapi.example\n/items\nIuser:1", 27, d2);
	assert_memory_not_equal(d1, d2, sizeof(d1));
	n = cache_shared_key(k, 7, d1);
	assert_int_equal(n, strlen(k));
	assert_int_equal(n, 5 + 1 + 1 + 2 * CACHE_SHARED_DIGEST);
	assert_memory_equal(k, "gw:c:7:", 7);
	assert_int_equal(strspn(k + 7, "0123456789abcdef"), 2 * CACHE_SHARED_DIGEST);
	/* SHA-256("abc") begins ba7816bf 8f01cfea 414140de 5dae2223 */
	cache_shared_digest("abc", 3, d1);
	n = cache_shared_key(k, 18446744073709551615ull, d1);
	assert_string_equal(k, "gw:c:18446744073709551615:ba7816bf8f01cfea414140de5dae2223");
	assert_true(n < CACHE_SHARED_KEY_MAX);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_round_trip),
	    cmocka_unit_test(test_malformed_values),
	    cmocka_unit_test(test_age),
	    cmocka_unit_test(test_key_names),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
