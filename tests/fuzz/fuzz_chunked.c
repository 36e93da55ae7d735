/*
 * libFuzzer target for the chunked scanner: the input is scanned in one piece and in
 * pseudo-random pieces (sizes from a hash of the input, from 1 byte up), with scan and
 * with decode. Results, consumed lengths, done flags, payload totals and the decoded
 * payload must agree, whatever the split.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "http.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct sink {
	uint64_t n;
	uint64_t hash;
	const char *base;
	size_t base_len;
};

static void
check(int cond)
{
	if (!cond)
		abort();
}

static void
sink_fn(void *arg, const char *d, size_t n)
{
	struct sink *s = arg;

	/* payload runs are views into the caller's buffer, never empty */
	check(n > 0 && d >= s->base && d + n <= s->base + s->base_len);
	for (size_t i = 0; i < n; i++)
		s->hash = (s->hash ^ (unsigned char)d[i]) * 1099511628211ULL;
	s->n += n;
}

static uint64_t
next(uint64_t *x)
{
	*x = *x * 6364136223846793005ULL + 1442695040888963407ULL;
	return *x >> 33;
}

static ssize_t
pieces(struct http_chunked *c, const char *b, size_t n, uint64_t seed, struct sink *sk)
{
	size_t off = 0;

	http_chunked_init(c);
	while (off < n) {
		uint64_t r = next(&seed);
		size_t k = (r & 3) == 0 ? 1 + (size_t)(r >> 2) % 256 : 1 + (size_t)(r >> 2) % 5;
		ssize_t got;

		if (k > n - off)
			k = n - off;
		got = sk ? http_chunked_decode(c, b + off, k, sink_fn, sk)
		         : http_chunked_scan(c, b + off, k);
		if (got < 0)
			return -1;
		check((size_t)got <= k);
		off += (size_t)got;
		if (c->done)
			break;
		check((size_t)got == k);
	}
	return (ssize_t)off;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *b = (const char *)data;
	struct http_chunked cw, cp, cd;
	struct sink sw = {0, 1469598103934665603ULL, b, size};
	struct sink sp = sw;
	uint64_t seed = size;
	ssize_t rw, rp, rd;

	for (size_t i = 0; i < size; i++)
		seed = (seed ^ data[i]) * 1099511628211ULL;

	http_chunked_init(&cw);
	rw = http_chunked_decode(&cw, b, size, sink_fn, &sw);
	check(rw >= -1 && rw <= (ssize_t)size);
	if (rw >= 0) {
		check(cw.done || (size_t)rw == size);
		check(sw.n == cw.data_total);
		if (cw.done) /* a body ends with CRLF */
			check(rw >= 5 && memcmp(b + rw - 2, "\r\n", 2) == 0);
	}

	rp = pieces(&cp, b, size, seed, NULL);
	check(rp == rw);
	rd = pieces(&cd, b, size, seed ^ 0x9e3779b97f4a7c15ULL, &sp);
	check(rd == rw);
	if (rw >= 0) {
		check(cp.done == cw.done && cd.done == cw.done);
		check(cp.data_total == cw.data_total && cd.data_total == cw.data_total);
		check(sp.n == sw.n && sp.hash == sw.hash);
		if (cw.done) /* nothing more once done */
			check(http_chunked_scan(&cw, "0\r\n\r\n", 5) == 0);
	}
	return 0;
}
