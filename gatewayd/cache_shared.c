/*
 * The shared cache level's value format and key names; see cache_shared.h.
 */

#include <openssl/sha.h>
#include <string.h>

#include "cache_shared.h"
#include "util.h"
#include "xmalloc.h"

#define CACHE_WIRE_MAGIC "GWC1"
#define CACHE_WIRE_MAGIC_LEN 4
/* magic, status u16, must_revalidate u8, pad u8, status_len, swr, sie (u32), lifetime,
 * age, written (u64), then five u32 lengths */
#define CACHE_WIRE_FIXED (CACHE_WIRE_MAGIC_LEN + 2 + 1 + 1 + 3 * 4 + 3 * 8)
#define CACHE_WIRE_NSTR 5

static char *
cache_wire_put(char *p, uint64_t v, int bytes)
{
	for (int i = 0; i < bytes; i++)
		*p++ = (char)(v >> (8 * i));
	return p;
}

static uint64_t
cache_wire_get(const char **pp, int bytes)
{
	const unsigned char *p = (const unsigned char *)*pp;
	uint64_t v = 0;

	for (int i = 0; i < bytes; i++)
		v |= (uint64_t)p[i] << (8 * i);
	*pp += bytes;
	return v;
}

char *
cache_wire_encode(const struct cache_wire *w, size_t *len)
{
	const char *s[CACHE_WIRE_NSTR] = {w->backend, w->dc, w->head, w->vary, w->body};
	const uint32_t n[CACHE_WIRE_NSTR] = {w->backend_len, w->dc_len, w->head_len, w->vary_len,
	                                     w->body_len};
	size_t total = CACHE_WIRE_FIXED + 4 * CACHE_WIRE_NSTR;
	char *buf, *p;

	for (int i = 0; i < CACHE_WIRE_NSTR; i++)
		total += n[i];
	buf = xmalloc(total);
	memcpy(buf, CACHE_WIRE_MAGIC, CACHE_WIRE_MAGIC_LEN);
	p = buf + CACHE_WIRE_MAGIC_LEN;
	p = cache_wire_put(p, w->status, 2);
	p = cache_wire_put(p, w->must_revalidate, 1);
	p = cache_wire_put(p, 0, 1);
	p = cache_wire_put(p, w->status_len, 4);
	p = cache_wire_put(p, w->swr_s, 4);
	p = cache_wire_put(p, w->sie_s, 4);
	p = cache_wire_put(p, w->lifetime_ms, 8);
	p = cache_wire_put(p, w->age_ms, 8);
	p = cache_wire_put(p, w->written_ms, 8);
	for (int i = 0; i < CACHE_WIRE_NSTR; i++)
		p = cache_wire_put(p, n[i], 4);
	for (int i = 0; i < CACHE_WIRE_NSTR; i++) {
		if (n[i] > 0)
			memcpy(p, s[i], n[i]);
		p += n[i];
	}
	*len = total;
	return buf;
}

/* A Vary blob is pairs of NUL-terminated strings (cache.c walks it with strlen). */
static int
cache_wire_vary_ok(const char *v, uint32_t len)
{
	uint32_t nuls = 0;

	if (len == 0)
		return 1;
	if (v[len - 1] != '\0')
		return 0;
	for (uint32_t i = 0; i < len; i++)
		nuls += v[i] == '\0';
	return nuls % 2 == 0;
}

int
cache_wire_decode(const char *buf, size_t len, struct cache_wire *w)
{
	const char *p = buf,
	           **s[CACHE_WIRE_NSTR] = {&w->backend, &w->dc, &w->head, &w->vary, &w->body};
	uint32_t *n[CACHE_WIRE_NSTR] = {&w->backend_len, &w->dc_len, &w->head_len, &w->vary_len,
	                                &w->body_len};
	size_t left;

	memset(w, 0, sizeof(*w));
	if (len < CACHE_WIRE_FIXED + 4 * CACHE_WIRE_NSTR ||
	    memcmp(p, CACHE_WIRE_MAGIC, CACHE_WIRE_MAGIC_LEN) != 0)
		return -1;
	p += CACHE_WIRE_MAGIC_LEN;
	w->status = (uint16_t)cache_wire_get(&p, 2);
	w->must_revalidate = (uint8_t)cache_wire_get(&p, 1);
	(void)cache_wire_get(&p, 1);
	w->status_len = (uint32_t)cache_wire_get(&p, 4);
	w->swr_s = (uint32_t)cache_wire_get(&p, 4);
	w->sie_s = (uint32_t)cache_wire_get(&p, 4);
	w->lifetime_ms = cache_wire_get(&p, 8);
	w->age_ms = cache_wire_get(&p, 8);
	w->written_ms = cache_wire_get(&p, 8);
	for (int i = 0; i < CACHE_WIRE_NSTR; i++)
		*n[i] = (uint32_t)cache_wire_get(&p, 4);
	left = len - (size_t)(p - buf);
	for (int i = 0; i < CACHE_WIRE_NSTR; i++) {
		if (*n[i] > left)
			return -1;
		*s[i] = p;
		p += *n[i];
		left -= *n[i];
	}
	if (left != 0 || w->status < 100 || w->status > 999 || w->status_len == 0 ||
	    w->status_len > w->head_len || w->head[w->status_len - 1] != '\n' ||
	    !cache_wire_vary_ok(w->vary, w->vary_len))
		return -1;
	return 0;
}

uint64_t
cache_wire_age(const struct cache_wire *w, uint64_t now_ms)
{
	return w->age_ms + (now_ms > w->written_ms ? now_ms - w->written_ms : 0);
}

void
cache_shared_digest(const char *key, size_t len, uint8_t out[CACHE_SHARED_DIGEST])
{
	unsigned char md[SHA256_DIGEST_LENGTH];

	SHA256((const unsigned char *)key, len, md);
	memcpy(out, md, CACHE_SHARED_DIGEST);
}

size_t
cache_shared_key(char *dst, uint64_t gen, const uint8_t d[CACHE_SHARED_DIGEST])
{
	static const char hex[] = "0123456789abcdef";
	size_t off = util_append_str(dst, 0, CACHE_SHARED_KEY_MAX, "gw:c:");

	off = util_append_u64(dst, off, CACHE_SHARED_KEY_MAX, gen);
	off = util_append(dst, off, CACHE_SHARED_KEY_MAX, ":", 1);
	for (int i = 0; i < CACHE_SHARED_DIGEST; i++) {
		dst[off++] = hex[d[i] >> 4];
		dst[off++] = hex[d[i] & 15];
	}
	dst[off] = '\0';
	return off;
}
