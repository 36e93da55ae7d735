/*
 * Unit tests for gatewayd/redis.c's URL parser and ratelimit.c's shared-decision
 * helpers (the arithmetic redis.c turns a Redis reply into headers with). The links and
 * the limiter are exercised end to end against a real redis-server (tests/e2e/test_redis.py).
 */

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "ratelimit.h"
#include "redis.h"

static struct redis_url u;
static char err[256];

static void
url_ok(const char *text, const char *host, int port, int db, const char *user, const char *pw)
{
	err[0] = '\0';
	if (redis_url_parse(text, &u, err, sizeof(err)) != 0)
		fail_msg("%s refused: %s", text, err);
	assert_string_equal(u.host, host);
	assert_int_equal(u.port, port);
	assert_int_equal(u.db, db);
	assert_string_equal(u.user, user);
	assert_string_equal(u.password, pw);
}

static void
url_err(const char *text, const char *word)
{
	err[0] = '\0';
	if (redis_url_parse(text, &u, err, sizeof(err)) == 0)
		fail_msg("%s accepted", text);
	if (strstr(err, word) == NULL)
		fail_msg("%s: error \"%s\" does not say \"%s\"", text, err, word);
	if (strstr(err, "s3cret") != NULL)
		fail_msg("the error shows the password: %s", err);
}

static void
test_url_forms(void **state)
{
	url_ok("redis://127.0.0.1", "127.0.0.1", 6379, 0, "", "");
	url_ok("redis://127.0.0.1:6380", "127.0.0.1", 6380, 0, "", "");
	url_ok("redis://localhost:6379/0", "localhost", 6379, 0, "", "");
	url_ok("redis://h:1/15", "h", 1, 15, "", "");
	url_ok("redis://h/", "h", 6379, 0, "", "");
	url_ok("redis://:s3cret@h:7000/2", "h", 7000, 2, "", "s3cret");
	url_ok("redis://app:s3cret@h/3", "h", 6379, 3, "app", "s3cret");
	/* %-encoding in credentials; '@' and ':' in the password */
	url_ok("redis://:p%40ss%3Aw@h", "h", 6379, 0, "", "p@ss:w");
	url_ok("redis://:a@b@h:9", "h", 9, 0, "", "a@b");
	url_ok("redis://[::1]:6390/1", "::1", 6390, 1, "", "");
	url_ok("redis://[::1]", "::1", 6379, 0, "", "");
}

static void
test_url_errors(void **state)
{
	url_err("http://h", "redis://");
	url_err("h:6379", "redis://");
	url_err("rediss://h", "TLS");
	url_err("redis://", "host");
	url_err("redis://:s3cret@:1/0", "host");
	url_err("redis://h:0", "port");
	url_err("redis://h:65536", "port");
	url_err("redis://h:x", "port");
	url_err("redis://h/db", "database");
	url_err("redis://h/-1", "database");
	url_err("redis://s3cret@h", "USER:PASSWORD");
	url_err("redis://:%zz@h", "encoded");
	url_err("redis://:%00@h", "encoded");
	url_err("redis://[::1:6379", "IPv6");
}

/* A reply {allowed, d} must give the headers ratelimit_check gives for the same TAT. */
static void
test_result_from_matches_local(void **state)
{
	struct conf_rate r = {.count = 5, .period_ms = 60000};
	struct ratelimit *rl = ratelimit_new(64);
	struct ratelimit_result local, shared;
	uint64_t t, tau;

	assert_int_equal(ratelimit_params(&r, &t, &tau), 0);
	assert_int_equal(t, 12000000000ULL);
	assert_int_equal(tau, 48000000000ULL);
	for (int i = 0; i < 7; i++) {
		uint64_t d;

		ratelimit_check(rl, "k", 1, &r, 1000, &local);
		/* the TAT after i+1 allowed requests (at most 5) at one instant */
		d = (uint64_t)(i < 5 ? i + 1 : 5) * t;
		ratelimit_result_from(&r, local.allowed, d, &shared);
		assert_int_equal(shared.allowed, local.allowed);
		assert_int_equal(shared.limit, local.limit);
		assert_int_equal(shared.remaining, local.remaining);
		assert_int_equal(shared.reset_ms, local.reset_ms);
		assert_int_equal(shared.retry_after_ms, local.retry_after_ms);
	}
	assert_int_equal(shared.retry_after_ms, 12000);
	r.count = 0;
	assert_int_equal(ratelimit_params(&r, &t, &tau), -1);
	ratelimit_result_from(&r, 0, 5, &shared);
	assert_int_equal(shared.allowed, 1);
	ratelimit_free(rl);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_url_forms),
	    cmocka_unit_test(test_url_errors),
	    cmocka_unit_test(test_result_from_matches_local),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
