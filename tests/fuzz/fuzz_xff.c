/*
 * libFuzzer target: the input is an X-Forwarded-For value. It is split on commas and
 * each hop trimmed of blanks, as the pipeline does, then handed to cidr_parse_addr (a
 * hop) and cidr_parse (the same text as a prefix, as admin commands and the config
 * take it). Everything accepted must format to text that parses back to the same bytes,
 * that text must be a fixed point, and the radix tree must find every accepted prefix.
 *
 *   make build/fuzz/fuzz_xff && build/fuzz/fuzz_xff -max_total_time=60 \
 *       build/fuzz/corpus-fuzz_xff tests/fuzz/corpus/fuzz_xff
 */

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cidr.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
fuzz_check(int ok)
{
	if (!ok)
		__builtin_trap();
}

static void
fuzz_hop_addr(const char *s, size_t len)
{
	uint8_t a[16], b[16];
	char buf[64], again[64];

	if (cidr_parse_addr(s, len, a) != 0)
		return;
	cidr_format_addr(a, buf, sizeof buf);
	fuzz_check(cidr_parse_addr(buf, strlen(buf), b) == 0);
	fuzz_check(memcmp(a, b, 16) == 0);
	fuzz_check(strcmp(cidr_format_addr(b, again, sizeof again), buf) == 0);
}

static void
fuzz_hop_prefix(const char *s, size_t len, struct cidr_tree *t)
{
	struct cidr c, d, m;
	uint8_t a[16];
	char text[128], buf[64], again[64];
	void *old;

	if (len >= sizeof text || memchr(s, '\0', len) != NULL)
		return;
	memcpy(text, s, len);
	text[len] = '\0';
	if (cidr_parse(text, &c) != 0) {
		/* a bare address that parses as a hop is also a valid /32 or /128 */
		fuzz_check(cidr_parse_addr(s, len, a) != 0);
		return;
	}
	fuzz_check(c.prefix <= 128);
	fuzz_check(cidr_contains(&c, c.addr));
	if (cidr_parse_addr(s, len, a) == 0) {
		fuzz_check(c.prefix == 128);
		fuzz_check(memcmp(a, c.addr, 16) == 0);
	}
	cidr_format(&c, buf, sizeof buf);
	fuzz_check(cidr_parse(buf, &d) == 0);
	fuzz_check(memcmp(&c, &d, sizeof c) == 0);
	fuzz_check(strcmp(cidr_format(&d, again, sizeof again), buf) == 0);

	cidr_tree_insert(t, &c, (void *)(uintptr_t)1, &old);
	fuzz_check(cidr_tree_get(t, &c) != NULL);
	fuzz_check(cidr_tree_match(t, c.addr, &m) != NULL);
	fuzz_check(m.prefix >= c.prefix && cidr_contains(&m, c.addr));
}

static int
fuzz_count(const struct cidr *c, void *value, void *arg)
{
	(*(size_t *)arg)++;
	return 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *p = (const char *)data, *end = p + size;
	struct cidr_tree *t = cidr_tree_new();
	size_t walked = 0;

	for (;;) {
		const char *comma = memchr(p, ',', (size_t)(end - p));
		const char *b = p, *e = comma != NULL ? comma : end;

		while (b < e && (*b == ' ' || *b == '\t'))
			b++;
		while (e > b && (e[-1] == ' ' || e[-1] == '\t'))
			e--;
		fuzz_hop_addr(b, (size_t)(e - b));
		fuzz_hop_prefix(b, (size_t)(e - b), t);
		if (comma == NULL)
			break;
		p = comma + 1;
	}
	cidr_tree_walk(t, fuzz_count, &walked);
	fuzz_check(walked == cidr_tree_count(t));
	cidr_tree_free(t, NULL);
	return 0;
}
