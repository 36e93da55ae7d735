/* Unit tests of the gatewayd.conf lexer (shared/conf.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "conf.h"

static uint64_t
duration_ok(const char *s)
{
	uint64_t ms = 12345;

	assert_int_equal(conf_parse_duration(s, &ms), 0);
	return ms;
}

static void
duration_bad(const char *s)
{
	uint64_t ms = 12345;

	assert_int_equal(conf_parse_duration(s, &ms), -1);
	assert_int_equal(ms, 12345); /* untouched on error */
}

static uint64_t
size_ok(const char *s)
{
	uint64_t b = 0;

	assert_int_equal(conf_parse_size(s, &b), 0);
	return b;
}

static void
size_bad(const char *s)
{
	uint64_t b = 0;

	assert_int_equal(conf_parse_size(s, &b), -1);
}

static struct conf_rate
rate_ok(const char *s)
{
	struct conf_rate r = {0, 0};

	assert_int_equal(conf_parse_rate(s, &r), 0);
	return r;
}

static void
rate_bad(const char *s)
{
	struct conf_rate r = {0, 0};

	assert_int_equal(conf_parse_rate(s, &r), -1);
}

static void
test_duration_units(void **state)
{
	assert_int_equal(duration_ok("500ms"), 500);
	assert_int_equal(duration_ok("10s"), 10000);
	assert_int_equal(duration_ok("5m"), 300000);
	assert_int_equal(duration_ok("1h"), 3600000);
	assert_int_equal(duration_ok("7d"), 7ULL * 86400000);
	assert_int_equal(duration_ok("1ms"), 1);
	assert_int_equal(duration_ok("0010s"), 10000);
}

static void
test_duration_zero(void **state)
{
	assert_int_equal(duration_ok("0"), 0);
	assert_int_equal(duration_ok("0s"), 0);
	assert_int_equal(duration_ok("0ms"), 0);
}

static void
test_duration_missing_unit(void **state)
{
	duration_bad("10");
	duration_bad("1");
}

static void
test_duration_bad_unit(void **state)
{
	duration_bad("10x");
	duration_bad("10sec");
	duration_bad("10S"); /* units are lower case: 5M would read as months elsewhere */
	duration_bad("10 s");
	duration_bad("10s ");
	duration_bad("1h30m");
	duration_bad("1.5s");
}

static void
test_duration_negative_and_empty(void **state)
{
	duration_bad("-1s");
	duration_bad("+1s");
	duration_bad(" 1s");
	duration_bad("");
	duration_bad("s");
	duration_bad(NULL);
}

static void
test_duration_overflow(void **state)
{
	/* fits in digits, overflows when scaled */
	duration_bad("18446744073709551615d");
	duration_bad("213503982335d");
	/* does not even fit in 64 bits */
	duration_bad("99999999999999999999ms");
	assert_int_equal(duration_ok("18446744073709551615ms"), UINT64_MAX);
}

static void
test_size_units(void **state)
{
	assert_int_equal(size_ok("512"), 512);
	assert_int_equal(size_ok("0"), 0);
	assert_int_equal(size_ok("512b"), 512);
	assert_int_equal(size_ok("64kb"), 64 * 1024);
	assert_int_equal(size_ok("64k"), 64 * 1024);
	assert_int_equal(size_ok("64mb"), 64ULL << 20);
	assert_int_equal(size_ok("2m"), 2ULL << 20);
	assert_int_equal(size_ok("1gb"), 1ULL << 30);
	assert_int_equal(size_ok("3g"), 3ULL << 30);
}

static void
test_size_case_insensitive(void **state)
{
	assert_int_equal(size_ok("64KB"), 64 * 1024);
	assert_int_equal(size_ok("64Kb"), 64 * 1024);
	assert_int_equal(size_ok("1MB"), 1ULL << 20);
	assert_int_equal(size_ok("1G"), 1ULL << 30);
	assert_int_equal(size_ok("7B"), 7);
}

static void
test_size_bad(void **state)
{
	size_bad("");
	size_bad("kb");
	size_bad("-1kb");
	size_bad("1.5mb");
	size_bad("1tb");
	size_bad("1kib");
	size_bad("1 kb");
	size_bad("10kbx");
	size_bad(NULL);
}

static void
test_size_overflow(void **state)
{
	size_bad("17179869184gb"); /* 2^34 GiB = 2^64 */
	size_bad("99999999999999999999");
	assert_int_equal(size_ok("17179869183gb"), 17179869183ULL << 30);
}

static void
test_rate_full(void **state)
{
	struct conf_rate r = rate_ok("100/60s");

	assert_int_equal(r.count, 100);
	assert_int_equal(r.period_ms, 60000);
	r = rate_ok("5/1m");
	assert_int_equal(r.count, 5);
	assert_int_equal(r.period_ms, 60000);
	r = rate_ok("1000/500ms");
	assert_int_equal(r.period_ms, 500);
}

static void
test_rate_bare_unit(void **state)
{
	struct conf_rate r = rate_ok("10/s");

	assert_int_equal(r.count, 10);
	assert_int_equal(r.period_ms, 1000);
	assert_int_equal(rate_ok("5/m").period_ms, 60000);
	assert_int_equal(rate_ok("5/h").period_ms, 3600000);
	assert_int_equal(rate_ok("5/d").period_ms, 86400000);
	assert_int_equal(rate_ok("5/ms").period_ms, 1);
}

static void
test_rate_bad(void **state)
{
	rate_bad("0/60s");
	rate_bad("-1/60s");
	rate_bad("100");
	rate_bad("100/");
	rate_bad("/60s");
	rate_bad("100/60");
	rate_bad("100/0s");
	rate_bad("100/0");
	rate_bad("100/60s/");
	rate_bad("100/60x");
	rate_bad("100 /60s");
	rate_bad("99999999999999999999/s");
	rate_bad("1/99999999999999999999d");
	rate_bad(NULL);
}

static void
test_uint(void **state)
{
	uint64_t v = 0;

	assert_int_equal(conf_parse_uint("0", 0, 10, &v), 0);
	assert_int_equal(v, 0);
	assert_int_equal(conf_parse_uint("10", 0, 10, &v), 0);
	assert_int_equal(v, 10);
	assert_int_equal(conf_parse_uint("18446744073709551615", 0, UINT64_MAX, &v), 0);
	assert_int_equal(v, UINT64_MAX);
}

static void
test_uint_bad(void **state)
{
	uint64_t v = 77;

	assert_int_equal(conf_parse_uint("11", 0, 10, &v), -1);
	assert_int_equal(conf_parse_uint("0", 1, 10, &v), -1);
	assert_int_equal(conf_parse_uint("-1", 0, 10, &v), -1);
	assert_int_equal(conf_parse_uint("+1", 0, 10, &v), -1);
	assert_int_equal(conf_parse_uint("1x", 0, 10, &v), -1);
	assert_int_equal(conf_parse_uint(" 1", 0, 10, &v), -1);
	assert_int_equal(conf_parse_uint("", 0, 10, &v), -1);
	assert_int_equal(conf_parse_uint("0x1", 0, 10, &v), -1);
	assert_int_equal(conf_parse_uint("18446744073709551616", 0, UINT64_MAX, &v), -1);
	assert_int_equal(conf_parse_uint(NULL, 0, 10, &v), -1);
	assert_int_equal(v, 77);
}

static void
test_double(void **state)
{
	double d = 0;

	assert_int_equal(conf_parse_double("39.04", -90, 90, &d), 0);
	assert_true(d > 39.039 && d < 39.041);
	assert_int_equal(conf_parse_double("-77.49", -180, 180, &d), 0);
	assert_true(d < -77.48 && d > -77.50);
	assert_int_equal(conf_parse_double("90", -90, 90, &d), 0);
	assert_true(d == 90.0);
	assert_int_equal(conf_parse_double("-90", -90, 90, &d), 0);
	assert_int_equal(conf_parse_double(".5", 0, 1, &d), 0);
	assert_true(d == 0.5);
	assert_int_equal(conf_parse_double("1.", 0, 1, &d), 0);
	assert_int_equal(conf_parse_double("+1", 0, 1, &d), 0);
}

static void
test_double_bad(void **state)
{
	double d = 0;

	assert_int_equal(conf_parse_double("90.0001", -90, 90, &d), -1);
	assert_int_equal(conf_parse_double("-180.5", -180, 180, &d), -1);
	assert_int_equal(conf_parse_double("", -90, 90, &d), -1);
	assert_int_equal(conf_parse_double("-", -90, 90, &d), -1);
	assert_int_equal(conf_parse_double(".", -90, 90, &d), -1);
	assert_int_equal(conf_parse_double("1e1", -90, 90, &d), -1);
	assert_int_equal(conf_parse_double("nan", -90, 90, &d), -1);
	assert_int_equal(conf_parse_double("inf", -1e300, 1e300, &d), -1);
	assert_int_equal(conf_parse_double("0x10", -90, 90, &d), -1);
	assert_int_equal(conf_parse_double("1.2.3", -90, 90, &d), -1);
	assert_int_equal(conf_parse_double(" 1", -90, 90, &d), -1);
	assert_int_equal(conf_parse_double("1 ", -90, 90, &d), -1);
	assert_int_equal(conf_parse_double("--1", -90, 90, &d), -1);
	assert_int_equal(conf_parse_double(NULL, -90, 90, &d), -1);
}

static void
test_bool(void **state)
{
	static const char *const yes[] = {"on", "yes", "true", "1", "ON", "Yes", "TRUE"};
	static const char *const no[] = {"off", "no", "false", "0", "OFF", "No", "False"};
	int v;

	for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
		v = -1;
		assert_int_equal(conf_parse_bool(yes[i], &v), 0);
		assert_int_equal(v, 1);
		assert_int_equal(conf_parse_bool(no[i], &v), 0);
		assert_int_equal(v, 0);
	}
}

static void
test_bool_bad(void **state)
{
	int v = 7;

	assert_int_equal(conf_parse_bool("", &v), -1);
	assert_int_equal(conf_parse_bool("2", &v), -1);
	assert_int_equal(conf_parse_bool("onn", &v), -1);
	assert_int_equal(conf_parse_bool("enabled", &v), -1);
	assert_int_equal(conf_parse_bool(NULL, &v), -1);
	assert_int_equal(v, 7);
}

static void
hostport_ok(const char *s, const char *host, uint16_t port)
{
	char h[64];
	uint16_t p = 0;

	assert_int_equal(conf_parse_hostport(s, h, sizeof h, &p), 0);
	assert_string_equal(h, host);
	assert_int_equal(p, port);
}

static void
test_hostport_v4_and_names(void **state)
{
	hostport_ok("127.0.0.1:5001", "127.0.0.1", 5001);
	hostport_ok("backend.local:1", "backend.local", 1);
	hostport_ok("*:65535", "*", 65535);
	hostport_ok(":8080", "", 8080);
}

static void
test_hostport_v6(void **state)
{
	hostport_ok("[::1]:8080", "::1", 8080);
	hostport_ok("[2001:db8::7]:443", "2001:db8::7", 443);
	hostport_ok("[::]:80", "::", 80);
	hostport_ok("[fe80::1%eth0]:80", "fe80::1%eth0", 80);
}

static void
test_hostport_bad(void **state)
{
	static const char *const bad[] = {
	    "127.0.0.1",
	    "127.0.0.1:",
	    "127.0.0.1:0",
	    "127.0.0.1:65536",
	    "127.0.0.1:-1",
	    "127.0.0.1:8x",
	    "::1:8080",
	    "[::1]",
	    "[::1]8080",
	    "[]:80",
	    "[::1:80",
	    "a b:80",
	    "[::1]:",
	    "host:99999999999999999999",
	    "",
	};
	char host[64];
	uint16_t port = 0;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_int_equal(conf_parse_hostport(bad[i], host, sizeof host, &port), -1);
	assert_int_equal(conf_parse_hostport(NULL, host, sizeof host, &port), -1);
}

static void
test_hostport_host_too_long(void **state)
{
	char host[8];
	uint16_t port;

	assert_int_equal(conf_parse_hostport("1234567:80", host, sizeof host, &port), 0);
	assert_string_equal(host, "1234567");
	assert_int_equal(conf_parse_hostport("12345678:80", host, sizeof host, &port), -1);
	assert_int_equal(conf_parse_hostport("[1:2:3:4:5]:80", host, sizeof host, &port), -1);
}

static void
test_split_words(void **state)
{
	char line[] = "  backend\tb1 127.0.0.1:5001   weight=2  ";
	char *argv[8];

	assert_int_equal(conf_split_line(line, argv, 8), 4);
	assert_string_equal(argv[0], "backend");
	assert_string_equal(argv[1], "b1");
	assert_string_equal(argv[2], "127.0.0.1:5001");
	assert_string_equal(argv[3], "weight=2");
}

static void
test_split_empty_and_comments(void **state)
{
	char empty[] = "";
	char blank[] = " \t \r";
	char comment[] = "   # just a comment";
	char *argv[4];

	assert_int_equal(conf_split_line(empty, argv, 4), 0);
	assert_int_equal(conf_split_line(blank, argv, 4), 0);
	assert_int_equal(conf_split_line(comment, argv, 4), 0);
}

static void
test_split_trailing_comment(void **state)
{
	char a[] = "retries 1 # idempotent only";
	char b[] = "retries 1# glued";
	char *argv[4];

	assert_int_equal(conf_split_line(a, argv, 4), 2);
	assert_string_equal(argv[1], "1");
	assert_int_equal(conf_split_line(b, argv, 4), 2);
	assert_string_equal(argv[1], "1");
}

static void
test_split_quotes(void **state)
{
	char line[] = "listen \"a b\" cert=\"/etc/my certs/x#1.pem\" \"\" x\"y\"z";
	char *argv[8];

	assert_int_equal(conf_split_line(line, argv, 8), 5);
	assert_string_equal(argv[0], "listen");
	assert_string_equal(argv[1], "a b");
	assert_string_equal(argv[2], "cert=/etc/my certs/x#1.pem");
	assert_string_equal(argv[3], "");
	assert_string_equal(argv[4], "xyz");
}

static void
test_split_crlf(void **state)
{
	char line[] = "workers 4\r";
	char *argv[4];

	assert_int_equal(conf_split_line(line, argv, 4), 2);
	assert_string_equal(argv[1], "4");
}

static void
test_split_errors(void **state)
{
	char open_quote[] = "route \"/api";
	char many[] = "a b c d e";
	char exact[] = "a b c d";
	char *argv[4];

	assert_int_equal(conf_split_line(open_quote, argv, 4), -1);
	assert_int_equal(conf_split_line(many, argv, 4), -1);
	assert_int_equal(conf_split_line(exact, argv, 4), 4);
	assert_string_equal(argv[3], "d");
}

static void
test_split_kv(void **state)
{
	char a[] = "weight=2";
	char b[] = "path=/a=b";
	char c[] = "empty=";
	char *k, *v;

	assert_int_equal(conf_split_kv(a, &k, &v), 0);
	assert_string_equal(k, "weight");
	assert_string_equal(v, "2");
	assert_int_equal(conf_split_kv(b, &k, &v), 0);
	assert_string_equal(k, "path");
	assert_string_equal(v, "/a=b");
	assert_int_equal(conf_split_kv(c, &k, &v), 0);
	assert_string_equal(k, "empty");
	assert_string_equal(v, "");
}

static void
test_split_kv_bad(void **state)
{
	char a[] = "weight";
	char b[] = "=2";
	char *k, *v;

	assert_int_equal(conf_split_kv(a, &k, &v), -1);
	assert_string_equal(a, "weight");
	assert_int_equal(conf_split_kv(b, &k, &v), -1);
	assert_int_equal(conf_split_kv(NULL, &k, &v), -1);
}

static void
test_format_duration(void **state)
{
	char buf[32];

	assert_string_equal(conf_format_duration(0, buf, sizeof buf), "0s");
	assert_string_equal(conf_format_duration(500, buf, sizeof buf), "500ms");
	assert_string_equal(conf_format_duration(1500, buf, sizeof buf), "1500ms");
	assert_string_equal(conf_format_duration(90000, buf, sizeof buf), "90s");
	assert_string_equal(conf_format_duration(300000, buf, sizeof buf), "5m");
	assert_string_equal(conf_format_duration(3600000, buf, sizeof buf), "1h");
	assert_string_equal(conf_format_duration(5400000, buf, sizeof buf), "90m");
	assert_string_equal(conf_format_duration(7 * 86400000ULL, buf, sizeof buf), "7d");
	assert_string_equal(conf_format_duration(UINT64_MAX, buf, sizeof buf),
	                    "18446744073709551615ms");
}

static void
test_format_duration_round_trip(void **state)
{
	static const uint64_t values[] = {1, 999, 1000, 61000, 3600000, 86400000, 123456789};
	char buf[32];

	for (size_t i = 0; i < sizeof(values) / sizeof(values[0]); i++)
		assert_int_equal(duration_ok(conf_format_duration(values[i], buf, sizeof buf)),
		                 values[i]);
}

static void
test_format_duration_truncates(void **state)
{
	char buf[3];

	assert_string_equal(conf_format_duration(500, buf, sizeof buf), "50");
	assert_ptr_equal(conf_format_duration(500, buf, 0), buf);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_duration_units),
	    cmocka_unit_test(test_duration_zero),
	    cmocka_unit_test(test_duration_missing_unit),
	    cmocka_unit_test(test_duration_bad_unit),
	    cmocka_unit_test(test_duration_negative_and_empty),
	    cmocka_unit_test(test_duration_overflow),
	    cmocka_unit_test(test_size_units),
	    cmocka_unit_test(test_size_case_insensitive),
	    cmocka_unit_test(test_size_bad),
	    cmocka_unit_test(test_size_overflow),
	    cmocka_unit_test(test_rate_full),
	    cmocka_unit_test(test_rate_bare_unit),
	    cmocka_unit_test(test_rate_bad),
	    cmocka_unit_test(test_uint),
	    cmocka_unit_test(test_uint_bad),
	    cmocka_unit_test(test_double),
	    cmocka_unit_test(test_double_bad),
	    cmocka_unit_test(test_bool),
	    cmocka_unit_test(test_bool_bad),
	    cmocka_unit_test(test_hostport_v4_and_names),
	    cmocka_unit_test(test_hostport_v6),
	    cmocka_unit_test(test_hostport_bad),
	    cmocka_unit_test(test_hostport_host_too_long),
	    cmocka_unit_test(test_split_words),
	    cmocka_unit_test(test_split_empty_and_comments),
	    cmocka_unit_test(test_split_trailing_comment),
	    cmocka_unit_test(test_split_quotes),
	    cmocka_unit_test(test_split_crlf),
	    cmocka_unit_test(test_split_errors),
	    cmocka_unit_test(test_split_kv),
	    cmocka_unit_test(test_split_kv_bad),
	    cmocka_unit_test(test_format_duration),
	    cmocka_unit_test(test_format_duration_round_trip),
	    cmocka_unit_test(test_format_duration_truncates),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
