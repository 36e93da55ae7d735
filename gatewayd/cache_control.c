#include <stddef.h>
#include <string.h>
#include <time.h>

#include "cache_control.h"
#include "util.h"

/*
 * Cache-Control directives are case-insensitive tokens with an optional "=" argument
 * that is a token or a quoted-string (which may itself hold commas). The list is walked
 * once; each directive is looked up in a small table.
 */

struct cache_cc_dir {
	const char *name;
	uint32_t flag;
	size_t value_off;    /* offset of the delta-seconds in struct cache_cc, or 0: none */
	uint8_t zero_on_bad; /* a bad or missing value means 0 instead of "absent" */
};

/* clang-format off */
static const struct cache_cc_dir cache_cc_dirs[] = {
	{"no-store", CACHE_CC_NO_STORE, 0, 0},
	{"no-cache", CACHE_CC_NO_CACHE, 0, 0},
	{"private", CACHE_CC_PRIVATE, 0, 0},
	{"public", CACHE_CC_PUBLIC, 0, 0},
	{"must-revalidate", CACHE_CC_MUST_REVALIDATE, 0, 0},
	{"proxy-revalidate", CACHE_CC_PROXY_REVALIDATE, 0, 0},
	{"max-age", CACHE_CC_MAX_AGE, offsetof(struct cache_cc, max_age), 1},
	{"s-maxage", CACHE_CC_S_MAXAGE, offsetof(struct cache_cc, s_maxage), 1},
	{"stale-while-revalidate", CACHE_CC_SWR, offsetof(struct cache_cc, swr), 0},
	{"stale-if-error", CACHE_CC_SIE, offsetof(struct cache_cc, sie), 0},
	{"max-stale", CACHE_CC_MAX_STALE, offsetof(struct cache_cc, max_stale), 0},
	{"min-fresh", CACHE_CC_MIN_FRESH, offsetof(struct cache_cc, min_fresh), 0},
	{"only-if-cached", CACHE_CC_ONLY_IF_CACHED, 0, 0},
	{"no-transform", CACHE_CC_NO_TRANSFORM, 0, 0},
};
/* clang-format on */

static int
cache_cc_ows(char ch)
{
	return ch == ' ' || ch == '\t';
}

/* delta-seconds: 1*DIGIT, capped at 2^31; -1 when not digits. */
static int64_t
cache_cc_delta(const char *v, size_t len)
{
	uint64_t n = 0;

	if (len == 0)
		return -1;
	for (size_t i = 0; i < len; i++) {
		if (v[i] < '0' || v[i] > '9')
			return -1;
		if (n < CACHE_CC_DELTA_MAX)
			n = n * 10 + (uint64_t)(v[i] - '0');
	}
	return n > CACHE_CC_DELTA_MAX ? CACHE_CC_DELTA_MAX : (int64_t)n;
}

static void
cache_cc_apply(struct cache_cc *cc, const char *name, size_t nlen, const char *val, size_t vlen,
               int has_val)
{
	for (size_t i = 0; i < sizeof(cache_cc_dirs) / sizeof(cache_cc_dirs[0]); i++) {
		const struct cache_cc_dir *d = &cache_cc_dirs[i];
		int64_t n;

		if (!util_strncaseeq(name, nlen, d->name))
			continue;
		if (d->value_off == 0) {
			cc->flags |= d->flag;
			return;
		}
		n = has_val ? cache_cc_delta(val, vlen) : -1;
		if (n < 0 && d->flag == CACHE_CC_MAX_STALE)
			n = CACHE_CC_DELTA_MAX; /* max-stale without a value: any staleness */
		if (n < 0 && !d->zero_on_bad)
			return;
		if (n < 0)
			n = 0;
		cc->flags |= d->flag;
		*(uint32_t *)(void *)((char *)cc + d->value_off) = (uint32_t)n;
		return;
	}
}

void
cache_cc_parse(struct cache_cc *cc, const char *v, size_t len)
{
	size_t i = 0;

	while (i < len) {
		size_t ns, ne, vs = 0, ve = 0;
		int has_val = 0;

		while (i < len && (cache_cc_ows(v[i]) || v[i] == ','))
			i++;
		ns = i;
		while (i < len && v[i] != '=' && v[i] != ',' && !cache_cc_ows(v[i]))
			i++;
		ne = i;
		while (i < len && cache_cc_ows(v[i]))
			i++;
		if (i < len && v[i] == '=') {
			i++;
			while (i < len && cache_cc_ows(v[i]))
				i++;
			has_val = 1;
			if (i < len && v[i] == '"') {
				vs = ++i;
				while (i < len && v[i] != '"') {
					if (v[i] == '\\' && i + 1 < len)
						i++;
					i++;
				}
				ve = i;
				if (i < len)
					i++; /* closing quote */
			} else {
				vs = i;
				while (i < len && v[i] != ',' && !cache_cc_ows(v[i]))
					i++;
				ve = i;
			}
		}
		/* anything else up to the next comma is junk of this directive */
		while (i < len && v[i] != ',')
			i++;
		if (ne > ns)
			cache_cc_apply(cc, v + ns, ne - ns, v + vs, ve - vs, has_val);
	}
}

/* ---- HTTP-date ---- */

static const char cache_months[] = "JanFebMarAprMayJunJulAugSepOctNovDec";
static const char cache_days[] = "SunMonTueWedThuFriSat";

static int
cache_month(const char *p)
{
	for (int m = 0; m < 12; m++)
		if (memcmp(p, cache_months + 3 * m, 3) == 0)
			return m;
	return -1;
}

/* n digits at p as a number, or -1. */
static int
cache_digits(const char *p, int n)
{
	int v = 0;

	for (int i = 0; i < n; i++) {
		if (p[i] < '0' || p[i] > '9')
			return -1;
		v = v * 10 + (p[i] - '0');
	}
	return v;
}

/* "HH:MM:SS" at p into tm; -1 when malformed. */
static int
cache_hms(const char *p, struct tm *tm)
{
	if (p[2] != ':' || p[5] != ':')
		return -1;
	tm->tm_hour = cache_digits(p, 2);
	tm->tm_min = cache_digits(p + 3, 2);
	tm->tm_sec = cache_digits(p + 6, 2);
	if (tm->tm_hour < 0 || tm->tm_hour > 23 || tm->tm_min < 0 || tm->tm_min > 59 ||
	    tm->tm_sec < 0 || tm->tm_sec > 60)
		return -1;
	return 0;
}

static int64_t
cache_tm_time(struct tm *tm)
{
	if (tm->tm_mday < 1 || tm->tm_mday > 31 || tm->tm_mon < 0 || tm->tm_year < 70)
		return -1;
	return (int64_t)timegm(tm);
}

int64_t
cache_http_date(const char *v, size_t len)
{
	struct tm tm;
	const char *comma;

	memset(&tm, 0, sizeof(tm));
	while (len > 0 && cache_cc_ows(v[0])) {
		v++;
		len--;
	}
	while (len > 0 && cache_cc_ows(v[len - 1]))
		len--;
	comma = memchr(v, ',', len);
	if (comma != NULL && comma - v == 3 && len == 29) {
		/* IMF-fixdate: "Sun, 06 Nov 1994 08:49:37 GMT" */
		if (v[4] != ' ' || v[7] != ' ' || v[11] != ' ' || v[16] != ' ' ||
		    memcmp(v + 26, "GMT", 3) != 0 || v[25] != ' ')
			return -1;
		tm.tm_mday = cache_digits(v + 5, 2);
		tm.tm_mon = cache_month(v + 8);
		tm.tm_year = cache_digits(v + 12, 4) - 1900;
		if (cache_hms(v + 17, &tm) < 0)
			return -1;
		return cache_tm_time(&tm);
	}
	if (comma != NULL && len >= 30 && (size_t)(comma - v) + 24 == len) {
		/* RFC 850: "Sunday, 06-Nov-94 08:49:37 GMT" */
		const char *p = comma + 1;
		int yy;

		if (p[0] != ' ' || p[3] != '-' || p[7] != '-' || p[10] != ' ' || p[19] != ' ' ||
		    memcmp(p + 20, "GMT", 3) != 0)
			return -1;
		tm.tm_mday = cache_digits(p + 1, 2);
		tm.tm_mon = cache_month(p + 4);
		yy = cache_digits(p + 8, 2);
		if (yy < 0)
			return -1;
		/* RFC 9110 5.6.7: a two-digit year more than 50 years ahead is in the past */
		tm.tm_year = yy < 70 ? yy + 100 : yy;
		if (cache_hms(p + 11, &tm) < 0)
			return -1;
		return cache_tm_time(&tm);
	}
	if (comma == NULL && len == 24) {
		/* asctime: "Sun Nov  6 08:49:37 1994" */
		if (v[3] != ' ' || v[7] != ' ' || v[10] != ' ' || v[19] != ' ')
			return -1;
		tm.tm_mon = cache_month(v + 4);
		tm.tm_mday = v[8] == ' ' ? cache_digits(v + 9, 1) : cache_digits(v + 8, 2);
		tm.tm_year = cache_digits(v + 20, 4) - 1900;
		if (cache_hms(v + 11, &tm) < 0)
			return -1;
		return cache_tm_time(&tm);
	}
	return -1;
}

size_t
cache_http_date_format(int64_t t, char out[30])
{
	struct tm tm;
	time_t tt = (time_t)t;
	char *o = out;

	gmtime_r(&tt, &tm);
	memcpy(o, cache_days + 3 * tm.tm_wday, 3);
	o[3] = ',';
	o[4] = ' ';
	o[5] = (char)('0' + tm.tm_mday / 10);
	o[6] = (char)('0' + tm.tm_mday % 10);
	o[7] = ' ';
	memcpy(o + 8, cache_months + 3 * tm.tm_mon, 3);
	o[11] = ' ';
	int y = tm.tm_year + 1900;
	o[12] = (char)('0' + (y / 1000) % 10);
	o[13] = (char)('0' + (y / 100) % 10);
	o[14] = (char)('0' + (y / 10) % 10);
	o[15] = (char)('0' + y % 10);
	o[16] = ' ';
	o[17] = (char)('0' + tm.tm_hour / 10);
	o[18] = (char)('0' + tm.tm_hour % 10);
	o[19] = ':';
	o[20] = (char)('0' + tm.tm_min / 10);
	o[21] = (char)('0' + tm.tm_min % 10);
	o[22] = ':';
	o[23] = (char)('0' + tm.tm_sec / 10);
	o[24] = (char)('0' + tm.tm_sec % 10);
	memcpy(o + 25, " GMT", 4);
	o[29] = '\0';
	return 29;
}
