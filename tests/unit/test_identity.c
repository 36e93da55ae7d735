#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "cidr.h"
#include "identity.h"

/*
 * The in-memory identity tables: progressive ban arithmetic (SPEC section 5), blocks
 * with and without an end, IP blocks by CIDR, revocations, keys, users, counters.
 */

#define T0 1800000000 /* an arbitrary "now" in Unix seconds */

static int
setup(void **state)
{
	static int done;

	if (!done) {
		identity_init();
		done = 1;
	}
	return 0;
}

/* threshold 3, base 10 s, x2, max 35 s, window 60 s */
static int64_t
reject(const char *name, int64_t now, int *level)
{
	return identity_ban_reject(name, now, 60, 3, 10, 2, 35, level);
}

static void
test_ban_after_threshold(void **state)
{
	int level = 0;

	/* up to threshold rejections inside one window: no ban */
	for (int i = 0; i < 3; i++)
		assert_int_equal(reject("u:ban1", T0 + i, &level), 0);
	assert_int_equal(identity_banned("u:ban1", T0 + 3), 0);
	/* the one more than threshold bans for base */
	assert_int_equal(reject("u:ban1", T0 + 3, &level), 10);
	assert_int_equal(level, 1);
	assert_int_equal(identity_banned("u:ban1", T0 + 3), 10);
	assert_int_equal(identity_banned("u:ban1", T0 + 12), 1);
	assert_int_equal(identity_banned("u:ban1", T0 + 13), 0);
}

static void
test_ban_escalates_to_max(void **state)
{
	int64_t now = T0;
	int level = 0;
	const int64_t expect[] = {10, 20, 35, 35};

	for (int b = 0; b < 4; b++) {
		int64_t len = 0;

		/* a fresh window each round, past the previous ban */
		now += 100;
		for (int i = 0; i < 4; i++)
			len = reject("u:ban2", now, &level);
		assert_int_equal(len, expect[b]);
		assert_int_equal(level, b + 1);
		now += len;
	}
}

static void
test_ban_window_resets_count(void **state)
{
	int level = 0;

	/* 3 rejections, then the window passes: the count starts again */
	for (int i = 0; i < 3; i++)
		reject("u:ban3", T0, &level);
	assert_int_equal(reject("u:ban3", T0 + 60, &level), 0);
	assert_int_equal(identity_banned("u:ban3", T0 + 60), 0);
}

static void
test_ban_set_clear_count(void **state)
{
	uint64_t before = identity_bans_active(T0);

	identity_ban_set("ip:192.0.2.1", T0 + 100, 2);
	assert_int_equal(identity_banned("ip:192.0.2.1", T0), 100);
	assert_int_equal(identity_bans_active(T0), before + 1);
	assert_int_equal(identity_ban_clear("ip:192.0.2.1"), 1);
	assert_int_equal(identity_banned("ip:192.0.2.1", T0), 0);
	assert_int_equal(identity_ban_clear("ip:192.0.2.1"), 0);
}

static void
test_blocks(void **state)
{
	identity_block("key", "abc", 0);
	identity_block("user", "7", T0 + 10);
	assert_true(identity_blocked("key", "abc", T0));
	assert_true(identity_blocked("key", "abc", T0 + 1000000));
	assert_true(identity_blocked("user", "7", T0 + 9));
	assert_false(identity_blocked("user", "7", T0 + 10)); /* timed blocks end */
	assert_false(identity_blocked("user", "8", T0));
	/* kinds do not mix */
	assert_false(identity_blocked("user", "abc", T0));
	assert_int_equal(identity_unblock("key", "abc"), 1);
	assert_false(identity_blocked("key", "abc", T0));
	assert_int_equal(identity_unblock("key", "abc"), 0);
}

static void
test_ip_blocks(void **state)
{
	struct cidr a, b;

	identity_block("ip", "198.51.100.0/24", 0);
	assert_int_equal(cidr_parse("198.51.100.77", &a), 0);
	assert_int_equal(cidr_parse("198.51.101.1", &b), 0);
	assert_true(identity_blocked_ip(a.addr, T0));
	assert_false(identity_blocked_ip(b.addr, T0));
	assert_int_equal(identity_unblock("ip", "198.51.100.0/24"), 1);
	assert_false(identity_blocked_ip(a.addr, T0));
	/* a timed block of one address */
	identity_block("ip", "198.51.101.1", T0 + 5);
	assert_true(identity_blocked_ip(b.addr, T0 + 4));
	assert_false(identity_blocked_ip(b.addr, T0 + 5));
}

static void
test_revocations(void **state)
{
	identity_revoke("jti-1", T0 + 3600);
	assert_true(identity_revoked("jti-1", T0));
	assert_false(identity_revoked("jti-2", T0));
}

static void
test_keys_and_users(void **state)
{
	struct identity_key k = {0}, out;
	struct identity_user u = {0}, uo;

	memcpy(k.hash, "0123456789abcdef", 17);
	memcpy(k.tier, "basic", 6);
	k.user_id = 42;
	identity_key_put(&k);
	assert_true(identity_key_get("0123456789abcdef", &out));
	assert_string_equal(out.tier, "basic");
	assert_int_equal(out.user_id, 42);
	assert_false(identity_key_get("nope", &out));
	/* replacing updates in place */
	memcpy(k.tier, "premium", 8);
	identity_key_put(&k);
	assert_true(identity_key_get("0123456789abcdef", &out));
	assert_string_equal(out.tier, "premium");

	u.id = 42;
	memcpy(u.tier, "enterprise", 11);
	memcpy(u.role, "admin", 6);
	identity_user_put(&u);
	assert_true(identity_user_get(42, &uo));
	assert_string_equal(uo.role, "admin");
	assert_false(identity_user_get(43, &uo));
}

static void
test_counters_and_touches(void **state)
{
	for (int i = 0; i < 5; i++)
		identity_count("u:count");
	assert_int_equal(identity_count_get("u:count"), 5);
	assert_int_equal(identity_count_get("u:other"), 0);
	/* last_used: due once per period */
	assert_true(identity_touch_due("h1", T0, 60));
	assert_false(identity_touch_due("h1", T0 + 59, 60));
	assert_true(identity_touch_due("h1", T0 + 60, 60));
}

/* enough keys to force the hash tables to grow several times */
static void
test_many_keys(void **state)
{
	struct identity_key k = {0}, out;

	for (int i = 0; i < 20000; i++) {
		snprintf(k.hash, sizeof(k.hash), "h%08d", i);
		k.user_id = i;
		identity_key_put(&k);
	}
	for (int i = 0; i < 20000; i += 997) {
		char h[16];
		snprintf(h, sizeof(h), "h%08d", i);
		assert_true(identity_key_get(h, &out));
		assert_int_equal(out.user_id, i);
	}
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_ban_after_threshold),
	    cmocka_unit_test(test_ban_escalates_to_max),
	    cmocka_unit_test(test_ban_window_resets_count),
	    cmocka_unit_test(test_ban_set_clear_count),
	    cmocka_unit_test(test_blocks),
	    cmocka_unit_test(test_ip_blocks),
	    cmocka_unit_test(test_revocations),
	    cmocka_unit_test(test_keys_and_users),
	    cmocka_unit_test(test_counters_and_touches),
	    cmocka_unit_test(test_many_keys),
	};

	return cmocka_run_group_tests(tests, setup, NULL);
}
