#include <string.h>
#include <strings.h>

#include "util.h"

size_t
util_strlcpy(char *dst, const char *src, size_t size)
{
	size_t n = strlen(src);

	if (size > 0) {
		size_t c = n < size - 1 ? n : size - 1;
		memcpy(dst, src, c);
		dst[c] = '\0';
	}
	return n;
}

uint64_t
util_hash64(const void *data, size_t len)
{
	const unsigned char *p = data;
	uint64_t h = 1469598103934665603ULL;

	for (size_t i = 0; i < len; i++) {
		h ^= p[i];
		h *= 1099511628211ULL;
	}
	/* final avalanche (splitmix64) so that near keys spread over shards */
	h ^= h >> 30;
	h *= 0xbf58476d1ce4e5b9ULL;
	h ^= h >> 27;
	h *= 0x94d049bb133111ebULL;
	h ^= h >> 31;
	return h;
}

size_t
util_append(char *dst, size_t off, size_t cap, const char *s, size_t n)
{
	if (off > cap || n >= cap - off) {
		if (off < cap)
			dst[off] = '\0';
		return cap + 1;
	}
	memcpy(dst + off, s, n);
	dst[off + n] = '\0';
	return off + n;
}

size_t
util_append_str(char *dst, size_t off, size_t cap, const char *s)
{
	return util_append(dst, off, cap, s, strlen(s));
}

const char *
util_u64_digits(uint64_t v, char buf[UTIL_U64_DIGITS], size_t *len)
{
	size_t n = 0;

	do {
		buf[UTIL_U64_DIGITS - 1 - n++] = (char)('0' + v % 10);
		v /= 10;
	} while (v != 0);
	*len = n;
	return buf + UTIL_U64_DIGITS - n;
}

size_t
util_append_u64(char *dst, size_t off, size_t cap, uint64_t v)
{
	char tmp[UTIL_U64_DIGITS];
	size_t n;
	const char *d = util_u64_digits(v, tmp, &n);

	return util_append(dst, off, cap, d, n);
}

int
util_strncaseeq(const char *s, size_t len, const char *lit)
{
	return strlen(lit) == len && strncasecmp(s, lit, len) == 0;
}
