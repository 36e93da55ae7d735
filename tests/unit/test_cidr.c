/* Unit tests for shared/cidr.c: parsing, formatting, containment and the radix tree. */

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

#include "cidr.h"

/* A string as a tree value (the tree never writes through its values). */
static void *
V(const char *s)
{
	return (void *)(uintptr_t)s;
}

/* Parses s, which the test knows to be valid. */
static struct cidr
P(const char *s) {
	struct cidr c;

	if (cidr_parse(s, &c) != 0)
		fail_msg("cidr_parse(\"%s\") failed", s);
	return c;
}

static void
A(const char *s, uint8_t out[16])
{
	if (cidr_parse_addr(s, strlen(s), out) != 0)
		fail_msg("cidr_parse_addr(\"%s\") failed", s);
}

static void
assert_fmt(const char *in, const char *want)
{
	struct cidr c = P(in);
	char buf[64];

	assert_string_equal(cidr_format(&c, buf, sizeof buf), want);
}

/* --- parsing ----------------------------------------------------------------------- */

static void
test_parse_v4_prefix(void **state)
{
	struct cidr c = P("10.0.0.0/8");
	const uint8_t want[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 0, 0, 0};

	assert_memory_equal(c.addr, want, 16);
	assert_int_equal(c.prefix, 96 + 8);
}

static void
test_parse_v4_host(void **state)
{
	struct cidr c = P("192.0.2.7");
	const uint8_t want[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 192, 0, 2, 7};

	assert_memory_equal(c.addr, want, 16);
	assert_int_equal(c.prefix, 128);
	assert_int_equal(P("192.0.2.7/32").prefix, 128);
}

static void
test_parse_v6_prefix(void **state)
{
	struct cidr c = P("2001:db8::/32");
	const uint8_t want[16] = {0x20, 0x01, 0x0d, 0xb8};

	assert_memory_equal(c.addr, want, 16);
	assert_int_equal(c.prefix, 32);
}

static void
test_parse_v6_host(void **state)
{
	struct cidr c = P("::1");
	const uint8_t want[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};

	assert_memory_equal(c.addr, want, 16);
	assert_int_equal(c.prefix, 128);
	assert_int_equal(P("2001:db8::1/128").prefix, 128);
}

static void
test_parse_clears_host_bits(void **state)
{
	struct cidr a = P("10.1.2.3/8"), b = P("10.0.0.0/8");
	struct cidr c = P("2001:db8:ffff::1/32"), d = P("2001:db8::/32");
	struct cidr e = P("192.168.1.255/23"), f = P("192.168.0.0/23");

	assert_memory_equal(&a, &b, sizeof a);
	assert_memory_equal(&c, &d, sizeof c);
	assert_memory_equal(&e, &f, sizeof e);
	/* a prefix that is not a multiple of 8 keeps the bits above it */
	assert_int_equal(P("10.255.255.255/12").addr[13], 0xf0);
	assert_int_equal(P("ffff::/3").addr[0], 0xe0);
}

static void
test_parse_prefix_bounds(void **state)
{
	struct cidr c = P("1.2.3.4/0");
	const uint8_t v4any[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
	const uint8_t zero[16] = {0};

	assert_int_equal(c.prefix, 96);
	assert_memory_equal(c.addr, v4any, 16);
	c = P("2001:db8::1/0");
	assert_int_equal(c.prefix, 0);
	assert_memory_equal(c.addr, zero, 16);
	assert_int_equal(P("0.0.0.0/0").prefix, 96);
	assert_int_equal(P("::/0").prefix, 0);
	assert_int_equal(P("255.255.255.255/32").prefix, 128);
	assert_int_equal(P("::/128").prefix, 128);
}

static void
test_parse_v4_mapped_text(void **state)
{
	struct cidr a = P("::ffff:1.2.3.4"), b = P("1.2.3.4");
	struct cidr c = P("::ffff:10.0.0.0/104"), d = P("10.0.0.0/8");
	struct cidr e = P("::FFFF:0A00:0001"), f = P("10.0.0.1");

	assert_memory_equal(&a, &b, sizeof a);
	assert_memory_equal(&c, &d, sizeof c);
	assert_memory_equal(&e, &f, sizeof e);
	assert_true(cidr_is_v4(a.addr));
}

static void
test_parse_rejects_garbage(void **state)
{
	static const char *const bad[] = {
	    "",
	    "abc",
	    "1.2.3",
	    "1.2.3.4.5",
	    "256.1.1.1",
	    "1.2.3.4/33",
	    "1.2.3.4/",
	    "/8",
	    "1.2.3.4/8x",
	    "1.2.3.4 /8",
	    " 1.2.3.4",
	    "1.2.3.4 ",
	    "1.2.3.4/-1",
	    "1.2.3.4/+8",
	    "::1/129",
	    "::/1280",
	    "10.0.0.0/08",
	    "2001:db8::/032",
	    "01.2.3.4",
	    "1.2.3.4/8/8",
	    "::g",
	    "1:2:3:4:5:6:7:8:9",
	    "[::1]",
	    "fe80::1%eth0",
	    "1.2.3.4\n",
	    "1.2.3.4/8\n",
	    "0x1.2.3.4",
	    "1.2.3.-4",
	    ":::1",
	    "1::2::3",
	    "1.2.3.4:80",
	    "/",
	    "10.0.0.0/ 8",
	    "10.0.0.0//8",
	    "2001:db8::/33/1",
	    "1.2.3.4/999",
	    "1.2.3.4/4294967304",
	};
	struct cidr c;

	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
		if (cidr_parse(bad[i], &c) != -1)
			fail_msg("accepted \"%s\"", bad[i]);
	assert_int_equal(cidr_parse(NULL, &c), -1);
}

static void
test_parse_rejected_leaves_output(void **state)
{
	struct cidr c = P("10.0.0.0/8"), before = c;

	assert_int_equal(cidr_parse("10.0.0.0/99", &c), -1);
	assert_memory_equal(&c, &before, sizeof c);
}

static void
test_parse_addr_counted(void **state)
{
	const char *xff = "10.0.0.1,2001:db8::7";
	uint8_t a[16], b[16];

	/* counted: the comma and what follows are not part of the first hop */
	assert_int_equal(cidr_parse_addr(xff, 8, a), 0);
	A("10.0.0.1", b);
	assert_memory_equal(a, b, 16);
	assert_int_equal(cidr_parse_addr(xff + 9, strlen(xff + 9), a), 0);
	A("2001:db8::7", b);
	assert_memory_equal(a, b, 16);
	/* a length that cuts an address short is what is parsed */
	assert_int_equal(cidr_parse_addr("10.0.0.12", 8, a), 0);
	A("10.0.0.1", b);
	assert_memory_equal(a, b, 16);
}

static void
test_parse_addr_rejects(void **state)
{
	static const char nul[] = "1.2.3.4\0.5";
	char longer[100];
	uint8_t a[16];

	assert_int_equal(cidr_parse_addr("1.2.3.4/32", 10, a), -1);
	assert_int_equal(cidr_parse_addr("", 0, a), -1);
	assert_int_equal(cidr_parse_addr(NULL, 0, a), -1);
	assert_int_equal(cidr_parse_addr("1.2.3.4", 0, a), -1);
	/* an embedded NUL must not hide the trailing bytes from the parser */
	assert_int_equal(cidr_parse_addr(nul, sizeof nul - 1, a), -1);
	memset(longer, '1', sizeof longer);
	assert_int_equal(cidr_parse_addr(longer, sizeof longer, a), -1);
	/* the longest legal text is 45 characters */
	assert_int_equal(cidr_parse_addr("ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255", 45, a),
	                 0);
	assert_int_equal(cidr_parse_addr(" 1.2.3.4", 8, a), -1);
	assert_int_equal(cidr_parse_addr("unknown", 7, a), -1);
}

/* --- formatting -------------------------------------------------------------------- */

static void
test_format_v4(void **state)
{
	assert_fmt("10.0.0.0/8", "10.0.0.0/8");
	assert_fmt("192.0.2.7", "192.0.2.7");
	assert_fmt("192.0.2.7/32", "192.0.2.7");
	assert_fmt("0.0.0.0/0", "0.0.0.0/0");
	assert_fmt("10.9.8.7/12", "10.0.0.0/12");
	assert_fmt("::ffff:172.16.0.0/108", "172.16.0.0/12");
}

static void
test_format_v6(void **state)
{
	assert_fmt("2001:0db8:0000:0000::/32", "2001:db8::/32");
	assert_fmt("::1", "::1");
	assert_fmt("::/0", "::/0");
	assert_fmt("FE80::1:2/64", "fe80::/64");
	assert_fmt("2001:db8:0:0:1:0:0:1", "2001:db8::1:0:0:1");
	/* prefixes shorter than /96 over the mapped range are not IPv4 prefixes */
	assert_fmt("::ffff:0:0/95", "::fffe:0:0/95");
}

static void
test_format_addr(void **state)
{
	uint8_t a[16];
	char buf[46];

	A("203.0.113.9", a);
	assert_string_equal(cidr_format_addr(a, buf, sizeof buf), "203.0.113.9");
	/* the hand-written IPv4 path: every digit count, as inet_ntop prints them */
	for (unsigned v = 0; v < 256; v++) {
		char want[INET_ADDRSTRLEN];

		a[12] = (uint8_t)v;
		a[13] = (uint8_t)(255 - v);
		a[14] = (uint8_t)(v / 3);
		a[15] = (uint8_t)(v * 7);
		assert_non_null(inet_ntop(AF_INET, a + 12, want, sizeof want));
		assert_string_equal(cidr_format_addr(a, buf, sizeof buf), want);
		assert_string_equal(cidr_format_addr(a, buf, INET_ADDRSTRLEN), want);
	}
	A("2001:DB8::A", a);
	assert_string_equal(cidr_format_addr(a, buf, sizeof buf), "2001:db8::a");
}

static void
test_format_small_buffer(void **state)
{
	struct cidr c = P("2001:db8:1234:5678:9abc:def0:1234:0/112");
	char buf[8];

	memset(buf, 'x', sizeof buf);
	cidr_format(&c, buf, 5);
	assert_int_equal(strlen(buf), 4);
	assert_int_equal(buf[5], 'x');
	/* len 0 writes nothing */
	buf[0] = 'y';
	cidr_format(&c, buf, 0);
	assert_int_equal(buf[0], 'y');
	/* the address does not fit: empty, never a partial address written past len */
	cidr_format_addr(c.addr, buf, 4);
	assert_int_equal(buf[0], '\0');
}

static void
test_format_roundtrip(void **state)
{
	static const char *const in[] = {
	    "10.0.0.0/8",    "172.16.0.0/12",      "192.168.1.0/24",
	    "1.2.3.4",       "0.0.0.0/0",          "::/0",
	    "::1",           "fe80::/10",          "2001:db8::/48",
	    "::ffff:0:0/96", "::ffff:0:0/95",      "::1.2.3.4",
	    "64:ff9b::/96",  "ff02::1:ff00:0/104",
	};
	char buf[64];

	for (size_t i = 0; i < sizeof in / sizeof in[0]; i++) {
		struct cidr a = P(in[i]), b;

		cidr_format(&a, buf, sizeof buf);
		if (cidr_parse(buf, &b) != 0 || memcmp(&a, &b, sizeof a) != 0)
			fail_msg("%s -> %s does not parse back", in[i], buf);
	}
}

/* --- addresses ----------------------------------------------------------------------- */

static void
test_from_sockaddr(void **state)
{
	struct sockaddr_in sin;
	struct sockaddr_in6 sin6;
	struct sockaddr sa;
	struct cidr c;

	memset(&sin, 0, sizeof sin);
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(0xc0000207); /* 192.0.2.7 */
	assert_int_equal(cidr_from_sockaddr((struct sockaddr *)&sin, &c), 0);
	{
		struct cidr want = P("192.0.2.7");

		assert_memory_equal(&c, &want, sizeof c);
	}
	memset(&sin6, 0, sizeof sin6);
	sin6.sin6_family = AF_INET6;
	assert_int_equal(inet_pton(AF_INET6, "2001:db8::5", &sin6.sin6_addr), 1);
	assert_int_equal(cidr_from_sockaddr((struct sockaddr *)&sin6, &c), 0);
	{
		struct cidr want = P("2001:db8::5");

		assert_memory_equal(&c, &want, sizeof c);
	}
	memset(&sa, 0, sizeof sa);
	sa.sa_family = AF_UNIX;
	assert_int_equal(cidr_from_sockaddr(&sa, &c), -1);
	assert_int_equal(cidr_from_sockaddr(NULL, &c), -1);
}

static void
test_contains(void **state)
{
	struct cidr net8 = P("10.0.0.0/8"), net23 = P("192.168.0.0/23");
	struct cidr v6 = P("2001:db8::/32"), any4 = P("0.0.0.0/0"), any = P("::/0");
	struct cidr host = P("10.1.2.3");
	uint8_t a[16];

	A("10.200.1.1", a);
	assert_true(cidr_contains(&net8, a));
	assert_true(cidr_contains(&any4, a));
	assert_true(cidr_contains(&any, a));
	assert_false(cidr_contains(&v6, a));
	A("11.0.0.0", a);
	assert_false(cidr_contains(&net8, a));
	A("192.168.1.255", a);
	assert_true(cidr_contains(&net23, a));
	A("192.168.2.0", a);
	assert_false(cidr_contains(&net23, a));
	A("2001:db8:ffff::1", a);
	assert_true(cidr_contains(&v6, a));
	assert_false(cidr_contains(&any4, a));
	assert_true(cidr_contains(&any, a));
	A("2001:db9::", a);
	assert_false(cidr_contains(&v6, a));
	A("10.1.2.3", a);
	assert_true(cidr_contains(&host, a));
	A("10.1.2.4", a);
	assert_false(cidr_contains(&host, a));
}

static void
test_is_v4(void **state)
{
	uint8_t a[16];

	A("127.0.0.1", a);
	assert_true(cidr_is_v4(a));
	A("::ffff:7f00:1", a);
	assert_true(cidr_is_v4(a));
	A("::1", a);
	assert_false(cidr_is_v4(a));
	A("::127.0.0.1", a); /* deprecated IPv4-compatible form: not mapped */
	assert_false(cidr_is_v4(a));
	A("::fffe:7f00:1", a);
	assert_false(cidr_is_v4(a));
}

/* --- tree ------------------------------------------------------------------------------ */

static const char *
match_str(const struct cidr_tree *t, const char *addr, char *buf, size_t len)
{
	uint8_t a[16];
	struct cidr m;

	A(addr, a);
	if (cidr_tree_match(t, a, &m) == NULL)
		return "none";
	return cidr_format(&m, buf, len);
}

static void
test_tree_empty(void **state)
{
	struct cidr_tree *t = cidr_tree_new();
	struct cidr c = P("10.0.0.0/8");
	uint8_t a[16];

	A("10.0.0.1", a);
	assert_null(cidr_tree_match(t, a, NULL));
	assert_null(cidr_tree_get(t, &c));
	assert_null(cidr_tree_remove(t, &c));
	assert_int_equal(cidr_tree_count(t), 0);
	cidr_tree_free(t, NULL);
	cidr_tree_free(NULL, NULL);
}

static void
test_tree_lpm_nested(void **state)
{
	static const char *const prefixes[] = {"0.0.0.0/0",   "10.0.0.0/8", "10.1.0.0/16",
	                                       "10.1.2.0/24", "10.1.2.3",   "10.1.2.128/25"};
	struct cidr_tree *t = cidr_tree_new();
	char buf[64];

	for (size_t i = 0; i < sizeof prefixes / sizeof prefixes[0]; i++) {
		struct cidr c = P(prefixes[i]);

		assert_int_equal(cidr_tree_insert(t, &c, V(prefixes[i]), NULL), 0);
	}
	assert_int_equal(cidr_tree_count(t), 6);
	assert_string_equal(match_str(t, "10.1.2.3", buf, sizeof buf), "10.1.2.3");
	assert_string_equal(match_str(t, "10.1.2.4", buf, sizeof buf), "10.1.2.0/24");
	assert_string_equal(match_str(t, "10.1.2.200", buf, sizeof buf), "10.1.2.128/25");
	assert_string_equal(match_str(t, "10.1.3.1", buf, sizeof buf), "10.1.0.0/16");
	assert_string_equal(match_str(t, "10.2.0.0", buf, sizeof buf), "10.0.0.0/8");
	assert_string_equal(match_str(t, "8.8.8.8", buf, sizeof buf), "0.0.0.0/0");
	/* 0.0.0.0/0 is every IPv4 address, not every address */
	assert_string_equal(match_str(t, "2001:db8::1", buf, sizeof buf), "none");
	cidr_tree_free(t, NULL);
}

static void
test_tree_match_value(void **state)
{
	struct cidr_tree *t = cidr_tree_new();
	struct cidr a = P("192.0.2.0/24"), b = P("198.51.100.0/24");
	int va = 1, vb = 2;
	uint8_t addr[16];

	cidr_tree_insert(t, &a, &va, NULL);
	cidr_tree_insert(t, &b, &vb, NULL);
	A("198.51.100.77", addr);
	assert_ptr_equal(cidr_tree_match(t, addr, NULL), &vb);
	A("192.0.2.1", addr);
	assert_ptr_equal(cidr_tree_match(t, addr, NULL), &va);
	A("203.0.113.1", addr);
	assert_null(cidr_tree_match(t, addr, NULL));
	cidr_tree_free(t, NULL);
}

static void
test_tree_mixed_families(void **state)
{
	static const char *const prefixes[] = {"::/0",       "2001:db8::/32", "2001:db8:1::/48",
	                                       "10.0.0.0/8", "::1",           "fe80::/10"};
	struct cidr_tree *t = cidr_tree_new();
	char buf[64];

	for (size_t i = 0; i < sizeof prefixes / sizeof prefixes[0]; i++) {
		struct cidr c = P(prefixes[i]);

		cidr_tree_insert(t, &c, V(prefixes[i]), NULL);
	}
	assert_string_equal(match_str(t, "2001:db8:1:2::3", buf, sizeof buf), "2001:db8:1::/48");
	assert_string_equal(match_str(t, "2001:db8:2::3", buf, sizeof buf), "2001:db8::/32");
	assert_string_equal(match_str(t, "::1", buf, sizeof buf), "::1");
	assert_string_equal(match_str(t, "::2", buf, sizeof buf), "::/0");
	assert_string_equal(match_str(t, "fe80::abcd", buf, sizeof buf), "fe80::/10");
	assert_string_equal(match_str(t, "10.20.30.40", buf, sizeof buf), "10.0.0.0/8");
	/* ::/0 holds the IPv4-mapped space too */
	assert_string_equal(match_str(t, "11.0.0.1", buf, sizeof buf), "::/0");
	cidr_tree_free(t, NULL);
}

static void
test_tree_host_routes(void **state)
{
	struct cidr_tree *t = cidr_tree_new();
	struct cidr a = P("10.0.0.1"), b = P("10.0.0.2"), c = P("10.0.0.0/30");
	char buf[64];

	cidr_tree_insert(t, &a, "a", NULL);
	cidr_tree_insert(t, &b, "b", NULL);
	assert_string_equal(match_str(t, "10.0.0.1", buf, sizeof buf), "10.0.0.1");
	assert_string_equal(match_str(t, "10.0.0.3", buf, sizeof buf), "none");
	cidr_tree_insert(t, &c, "c", NULL);
	assert_string_equal(match_str(t, "10.0.0.3", buf, sizeof buf), "10.0.0.0/30");
	assert_string_equal(match_str(t, "10.0.0.2", buf, sizeof buf), "10.0.0.2");
	assert_string_equal(match_str(t, "10.0.0.4", buf, sizeof buf), "none");
	cidr_tree_free(t, NULL);
}

static void
test_tree_replace(void **state)
{
	struct cidr_tree *t = cidr_tree_new();
	struct cidr c = P("10.0.0.0/8"), same = P("10.99.0.0/8");
	int v1 = 1, v2 = 2;
	void *old = &v1;
	uint8_t a[16];

	assert_int_equal(cidr_tree_insert(t, &c, &v1, &old), 0);
	assert_null(old);
	/* host bits do not make a different prefix */
	assert_int_equal(cidr_tree_insert(t, &same, &v2, &old), 1);
	assert_ptr_equal(old, &v1);
	assert_int_equal(cidr_tree_count(t), 1);
	A("10.1.1.1", a);
	assert_ptr_equal(cidr_tree_match(t, a, NULL), &v2);
	assert_int_equal(cidr_tree_insert(t, &c, &v1, NULL), 1);
	assert_ptr_equal(cidr_tree_get(t, &c), &v1);
	assert_int_equal(cidr_tree_insert(t, &c, NULL, NULL), -1);
	assert_ptr_equal(cidr_tree_get(t, &c), &v1);
	cidr_tree_free(t, NULL);
}

static void
test_tree_remove(void **state)
{
	struct cidr_tree *t = cidr_tree_new();
	struct cidr p8 = P("10.0.0.0/8"), p16 = P("10.1.0.0/16"), p16b = P("10.2.0.0/16");
	struct cidr p9 = P("10.0.0.0/9"), p24 = P("10.1.2.0/24");
	char buf[64];

	cidr_tree_insert(t, &p8, "8", NULL);
	cidr_tree_insert(t, &p16, "16", NULL);
	cidr_tree_insert(t, &p16b, "16b", NULL);
	cidr_tree_insert(t, &p24, "24", NULL);
	/* only exact prefixes are removed; 10.0.0.0/9 is covered by /8 but not stored */
	assert_null(cidr_tree_remove(t, &p9));
	assert_int_equal(cidr_tree_count(t), 4);
	assert_string_equal(cidr_tree_remove(t, &p8), "8");
	assert_null(cidr_tree_remove(t, &p8));
	assert_int_equal(cidr_tree_count(t), 3);
	assert_string_equal(match_str(t, "10.1.2.3", buf, sizeof buf), "10.1.2.0/24");
	assert_string_equal(match_str(t, "10.1.3.3", buf, sizeof buf), "10.1.0.0/16");
	assert_string_equal(match_str(t, "10.3.0.0", buf, sizeof buf), "none");
	assert_string_equal(cidr_tree_remove(t, &p16), "16");
	assert_string_equal(match_str(t, "10.1.3.3", buf, sizeof buf), "none");
	assert_string_equal(match_str(t, "10.1.2.3", buf, sizeof buf), "10.1.2.0/24");
	assert_string_equal(cidr_tree_remove(t, &p24), "24");
	assert_string_equal(cidr_tree_remove(t, &p16b), "16b");
	assert_int_equal(cidr_tree_count(t), 0);
	assert_string_equal(match_str(t, "10.2.0.1", buf, sizeof buf), "none");
	/* the emptied tree is usable again */
	cidr_tree_insert(t, &p9, "9", NULL);
	assert_string_equal(match_str(t, "10.2.0.1", buf, sizeof buf), "10.0.0.0/9");
	cidr_tree_free(t, NULL);
}

static void
test_tree_get_exact(void **state)
{
	struct cidr_tree *t = cidr_tree_new();
	struct cidr a = P("10.1.0.0/16"), b = P("10.2.0.0/16"), glue = P("10.0.0.0/14");
	struct cidr longer = P("10.1.0.0/17"), shorter = P("10.0.0.0/8");

	cidr_tree_insert(t, &a, "a", NULL);
	cidr_tree_insert(t, &b, "b", NULL);
	assert_string_equal(cidr_tree_get(t, &a), "a");
	assert_string_equal(cidr_tree_get(t, &b), "b");
	/* the branch point of /16s is glue, not a stored prefix */
	assert_null(cidr_tree_get(t, &glue));
	assert_null(cidr_tree_remove(t, &glue));
	assert_null(cidr_tree_get(t, &longer));
	assert_null(cidr_tree_get(t, &shorter));
	/* storing the glue prefix turns it into a real one */
	assert_int_equal(cidr_tree_insert(t, &glue, "g", NULL), 0);
	assert_string_equal(cidr_tree_get(t, &glue), "g");
	assert_int_equal(cidr_tree_count(t), 3);
	assert_string_equal(cidr_tree_remove(t, &glue), "g");
	assert_string_equal(cidr_tree_get(t, &a), "a");
	assert_string_equal(cidr_tree_get(t, &b), "b");
	cidr_tree_free(t, NULL);
}

struct walk_acc {
	char out[1024];
	size_t len;
	int stop_after;
	int seen;
};

static int
walk_collect(const struct cidr *c, void *value, void *arg)
{
	struct walk_acc *acc = arg;
	char buf[64];
	int n;

	n = snprintf(acc->out + acc->len, sizeof acc->out - acc->len, "%s%s", acc->len ? " " : "",
	             cidr_format(c, buf, sizeof buf));
	acc->len += (size_t)n;
	acc->seen++;
	return acc->stop_after != 0 && acc->seen >= acc->stop_after;
}

static void
test_tree_walk_order(void **state)
{
	static const char *const in[] = {"192.168.0.0/16", "10.1.0.0/16", "2001:db8::/32",
	                                 "10.0.0.0/8",     "::1",         "10.1.2.3",
	                                 "0.0.0.0/0",      "10.0.0.0/16", "172.16.0.0/12"};
	struct cidr_tree *t = cidr_tree_new();
	struct walk_acc acc = {.len = 0};

	for (size_t i = 0; i < sizeof in / sizeof in[0]; i++) {
		struct cidr c = P(in[i]);

		cidr_tree_insert(t, &c, V(in[i]), NULL);
	}
	cidr_tree_walk(t, walk_collect, &acc);
	/* numeric address order, a prefix before the prefixes inside it */
	assert_string_equal(acc.out, "::1 0.0.0.0/0 10.0.0.0/8 10.0.0.0/16 10.1.0.0/16 10.1.2.3 "
	                             "172.16.0.0/12 192.168.0.0/16 2001:db8::/32");
	cidr_tree_free(t, NULL);
}

static void
test_tree_walk_stop(void **state)
{
	static const char *const in[] = {"10.0.0.0/8", "11.0.0.0/8", "12.0.0.0/8", "13.0.0.0/8"};
	struct cidr_tree *t = cidr_tree_new();
	struct walk_acc acc = {.stop_after = 2};

	for (size_t i = 0; i < sizeof in / sizeof in[0]; i++) {
		struct cidr c = P(in[i]);

		cidr_tree_insert(t, &c, V(in[i]), NULL);
	}
	cidr_tree_walk(t, walk_collect, &acc);
	assert_int_equal(acc.seen, 2);
	assert_string_equal(acc.out, "10.0.0.0/8 11.0.0.0/8");
	cidr_tree_free(t, NULL);
}

static int freed;

static void
count_free(void *p)
{
	freed++;
	free(p);
}

static void
test_tree_free_values(void **state)
{
	struct cidr_tree *t = cidr_tree_new();
	char buf[32];

	freed = 0;
	for (int i = 0; i < 100; i++) {
		struct cidr c;

		snprintf(buf, sizeof buf, "10.%d.0.0/16", i);
		c = P(buf);
		cidr_tree_insert(t, &c, malloc(8), NULL);
	}
	cidr_tree_free(t, count_free);
	assert_int_equal(freed, 100);
}

/* --- randomised model check --------------------------------------------------------- */

#define MODEL_MAX 4096

struct model {
	struct cidr c[MODEL_MAX];
	uintptr_t v[MODEL_MAX];
	size_t n;
};

static uint64_t rng_state = 0x9e3779b97f4a7c15ULL;

static uint64_t
rng(void)
{
	/* xorshift64*: reproducible across runs and libcs */
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return rng_state * 0x2545f4914f6cdd1dULL;
}

/*
 * A prefix from a small space, so that inserts collide, nest and get removed again:
 * IPv4 under 10.0.0.0/12 or IPv6 under 2001:db8::/116, with lengths near the interesting
 * boundaries.
 */
static struct cidr
random_prefix(void)
{
	struct cidr c;
	uint64_t r = rng();
	char buf[64];

	if (r & 1) {
		snprintf(buf, sizeof buf, "10.%u.%u.%u/%u", (unsigned)(r >> 8) % 16,
		         (unsigned)(r >> 16) % 4, (unsigned)(r >> 24) % 8,
		         8 + (unsigned)(r >> 32) % 25);
	} else {
		snprintf(buf, sizeof buf, "2001:db8::%x/%u", (unsigned)(r >> 8) % 4096,
		         112 + (unsigned)(r >> 32) % 17);
	}
	c = P(buf);
	return c;
}

static void
random_addr(uint8_t a[16])
{
	uint64_t r = rng();
	char buf[64];

	if (r & 1)
		snprintf(buf, sizeof buf, "10.%u.%u.%u", (unsigned)(r >> 8) % 17,
		         (unsigned)(r >> 16) % 4, (unsigned)(r >> 24) % 9);
	else
		snprintf(buf, sizeof buf, "2001:db8::%x", (unsigned)(r >> 8) % 4200);
	A(buf, a);
}

static ssize_t
model_find(const struct model *m, const struct cidr *c)
{
	for (size_t i = 0; i < m->n; i++)
		if (m->c[i].prefix == c->prefix && memcmp(m->c[i].addr, c->addr, 16) == 0)
			return (ssize_t)i;
	return -1;
}

static uintptr_t
model_match(const struct model *m, const uint8_t a[16], int *plen)
{
	uintptr_t best = 0;

	*plen = -1;
	for (size_t i = 0; i < m->n; i++)
		if (cidr_contains(&m->c[i], a) && m->c[i].prefix > *plen) {
			*plen = m->c[i].prefix;
			best = m->v[i];
		}
	return best;
}

struct walk_check {
	const struct model *m;
	size_t seen;
	struct cidr prev;
	int bad;
};

static int
walk_check(const struct cidr *c, void *value, void *arg)
{
	struct walk_check *w = arg;
	ssize_t i = model_find(w->m, c);

	if (i < 0 || w->m->v[i] != (uintptr_t)value)
		w->bad = 1;
	/* strictly increasing by (address, prefix length) */
	if (w->seen > 0) {
		int d = memcmp(w->prev.addr, c->addr, 16);

		if (d > 0 || (d == 0 && w->prev.prefix >= c->prefix))
			w->bad = 1;
	}
	w->prev = *c;
	w->seen++;
	return 0;
}

static void
test_tree_random_model(void **state)
{
	struct model *m = calloc(1, sizeof *m);
	struct cidr_tree *t = cidr_tree_new();
	uintptr_t next = 1;

	assert_non_null(m);
	for (int op = 0; op < 10000; op++) {
		struct cidr c = random_prefix();
		ssize_t i = model_find(m, &c);
		uint8_t a[16];
		int plen;

		if (rng() % 3 != 0) {
			void *old;
			int r = cidr_tree_insert(t, &c, (void *)next, &old);

			if (i >= 0) {
				assert_int_equal(r, 1);
				assert_int_equal((uintptr_t)old, m->v[i]);
				m->v[i] = next;
			} else {
				assert_int_equal(r, 0);
				assert_true(m->n < MODEL_MAX);
				m->c[m->n] = c;
				m->v[m->n++] = next;
			}
			next++;
		} else {
			void *v = cidr_tree_remove(t, &c);

			if (i >= 0) {
				assert_int_equal((uintptr_t)v, m->v[i]);
				m->c[i] = m->c[m->n - 1];
				m->v[i] = m->v[--m->n];
			} else {
				assert_null(v);
			}
		}
		assert_int_equal(cidr_tree_count(t), m->n);
		/* a few lookups after every change, and an exact get of the touched prefix */
		for (int k = 0; k < 4; k++) {
			struct cidr got;
			void *v;
			uintptr_t want;

			random_addr(a);
			want = model_match(m, a, &plen);
			v = cidr_tree_match(t, a, &got);
			assert_int_equal((uintptr_t)v, want);
			if (v != NULL) {
				assert_int_equal(got.prefix, plen);
				assert_true(cidr_contains(&got, a));
			}
		}
		i = model_find(m, &c);
		assert_int_equal((uintptr_t)cidr_tree_get(t, &c), i >= 0 ? m->v[i] : 0);
		if (op % 500 == 0) {
			struct walk_check w = {.m = m};

			cidr_tree_walk(t, walk_check, &w);
			assert_false(w.bad);
			assert_int_equal(w.seen, m->n);
		}
	}
	/* every remaining prefix matches itself */
	for (size_t i = 0; i < m->n; i++) {
		struct cidr got;

		assert_int_equal((uintptr_t)cidr_tree_match(t, m->c[i].addr, &got) != 0, 1);
		assert_true(got.prefix >= m->c[i].prefix);
	}
	cidr_tree_free(t, NULL);
	free(m);
}

static void
test_tree_many_v4_hosts(void **state)
{
	struct cidr_tree *t = cidr_tree_new();
	uint8_t a[16];
	char buf[32];

	/* 65536 /32s: depth stays bounded, every one found, neighbours outside not */
	for (unsigned i = 0; i < 65536; i++) {
		struct cidr c;

		snprintf(buf, sizeof buf, "172.16.%u.%u", i >> 8, i & 255);
		c = P(buf);
		assert_int_equal(cidr_tree_insert(t, &c, (void *)(uintptr_t)(i + 1), NULL), 0);
	}
	assert_int_equal(cidr_tree_count(t), 65536);
	for (unsigned i = 0; i < 65536; i += 97) {
		snprintf(buf, sizeof buf, "172.16.%u.%u", i >> 8, i & 255);
		A(buf, a);
		assert_int_equal((uintptr_t)cidr_tree_match(t, a, NULL), i + 1);
	}
	A("172.17.0.0", a);
	assert_null(cidr_tree_match(t, a, NULL));
	for (unsigned i = 0; i < 65536; i += 2) {
		struct cidr c;

		snprintf(buf, sizeof buf, "172.16.%u.%u", i >> 8, i & 255);
		c = P(buf);
		assert_int_equal((uintptr_t)cidr_tree_remove(t, &c), i + 1);
	}
	assert_int_equal(cidr_tree_count(t), 32768);
	A("172.16.3.4", a);
	assert_null(cidr_tree_match(t, a, NULL));
	A("172.16.3.5", a);
	assert_int_equal((uintptr_t)cidr_tree_match(t, a, NULL), 3 * 256 + 5 + 1);
	cidr_tree_free(t, NULL);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_parse_v4_prefix),
	    cmocka_unit_test(test_parse_v4_host),
	    cmocka_unit_test(test_parse_v6_prefix),
	    cmocka_unit_test(test_parse_v6_host),
	    cmocka_unit_test(test_parse_clears_host_bits),
	    cmocka_unit_test(test_parse_prefix_bounds),
	    cmocka_unit_test(test_parse_v4_mapped_text),
	    cmocka_unit_test(test_parse_rejects_garbage),
	    cmocka_unit_test(test_parse_rejected_leaves_output),
	    cmocka_unit_test(test_parse_addr_counted),
	    cmocka_unit_test(test_parse_addr_rejects),
	    cmocka_unit_test(test_format_v4),
	    cmocka_unit_test(test_format_v6),
	    cmocka_unit_test(test_format_addr),
	    cmocka_unit_test(test_format_small_buffer),
	    cmocka_unit_test(test_format_roundtrip),
	    cmocka_unit_test(test_from_sockaddr),
	    cmocka_unit_test(test_contains),
	    cmocka_unit_test(test_is_v4),
	    cmocka_unit_test(test_tree_empty),
	    cmocka_unit_test(test_tree_lpm_nested),
	    cmocka_unit_test(test_tree_match_value),
	    cmocka_unit_test(test_tree_mixed_families),
	    cmocka_unit_test(test_tree_host_routes),
	    cmocka_unit_test(test_tree_replace),
	    cmocka_unit_test(test_tree_remove),
	    cmocka_unit_test(test_tree_get_exact),
	    cmocka_unit_test(test_tree_walk_order),
	    cmocka_unit_test(test_tree_walk_stop),
	    cmocka_unit_test(test_tree_free_values),
	    cmocka_unit_test(test_tree_random_model),
	    cmocka_unit_test(test_tree_many_v4_hosts),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
