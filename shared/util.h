#ifndef GW_UTIL_H
#define GW_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

/* Monotonic milliseconds from the vDSO's coarse clock: no syscall, ~4 ms resolution. */
static inline uint64_t
util_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* Monotonic microseconds, precise (for latency measurements). */
static inline uint64_t
util_now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* Copies at most size-1 bytes and always terminates; returns strlen(src) like BSD's. */
size_t util_strlcpy(char *dst, const char *src, size_t size);
/* 64-bit FNV-1a, for hash tables and consistent hashing (not for security). */
uint64_t util_hash64(const void *data, size_t len);
/*
 * Appends n bytes of s at dst[off] when they fit in cap (one byte is kept for a NUL);
 * returns the new offset, or cap + 1 once something did not fit (and stays there).
 * For building header lines on the hot path, where snprintf costs more than the rest.
 */
size_t util_append(char *dst, size_t off, size_t cap, const char *s, size_t n);
size_t util_append_str(char *dst, size_t off, size_t cap, const char *s);
size_t util_append_u64(char *dst, size_t off, size_t cap, uint64_t v);
#define UTIL_U64_DIGITS 20
/* The decimal digits of v, written at the end of buf; returns their start (*len: count). */
const char *util_u64_digits(uint64_t v, char buf[UTIL_U64_DIGITS], size_t *len);
/* ASCII case-insensitive compare of a counted string with a C string. */
int util_strncaseeq(const char *s, size_t len, const char *lit);

#endif
