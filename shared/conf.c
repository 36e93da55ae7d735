/*
 * The lexer of the gatewayd.conf language: numbers with units, rates, host:port, words.
 * Every parser here is strict on purpose: strtoull() and friends accept leading
 * blanks, signs and trailing garbage, and a configuration typo such as "10" (ten what?)
 * or "-1s" must be refused at load time rather than become a surprising value.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "conf.h"

#define CONF_MS_SECOND 1000ULL
#define CONF_MS_MINUTE (60ULL * CONF_MS_SECOND)
#define CONF_MS_HOUR (60ULL * CONF_MS_MINUTE)
#define CONF_MS_DAY (24ULL * CONF_MS_HOUR)

struct conf_unit {
	const char *name;
	uint64_t factor;
};

/* Case-sensitive, as in nginx: "5m" is minutes and there is no "M". */
static const struct conf_unit conf_duration_units[] = {
    {"ms", 1},           {"s", CONF_MS_SECOND}, {"m", CONF_MS_MINUTE},
    {"h", CONF_MS_HOUR}, {"d", CONF_MS_DAY},    {NULL, 0},
};

/* Case-insensitive; 1024-based, as every operator expects of buffer sizes. */
static const struct conf_unit conf_size_units[] = {
    {"b", 1},           {"k", 1ULL << 10}, {"kb", 1ULL << 10}, {"m", 1ULL << 20},
    {"mb", 1ULL << 20}, {"g", 1ULL << 30}, {"gb", 1ULL << 30}, {NULL, 0},
};

static int
conf_is_digit(char c)
{
	return c >= '0' && c <= '9';
}

/* Reads one or more decimal digits at *s, advancing it; -1 on none or on overflow. */
static int
conf_read_digits(const char **s, uint64_t *out)
{
	const char *p = *s;
	uint64_t v = 0;

	if (!conf_is_digit(*p))
		return -1;
	for (; conf_is_digit(*p); p++) {
		uint64_t d = (uint64_t)(*p - '0');

		if (v > (UINT64_MAX - d) / 10)
			return -1;
		v = v * 10 + d;
	}
	*s = p;
	*out = v;
	return 0;
}

static const struct conf_unit *
conf_find_unit(const struct conf_unit *units, const char *name, int nocase)
{
	for (; units->name != NULL; units++)
		if ((nocase ? strcasecmp(units->name, name) : strcmp(units->name, name)) == 0)
			return units;
	return NULL;
}

static int
conf_mul(uint64_t a, uint64_t b, uint64_t *out)
{
	if (b != 0 && a > UINT64_MAX / b)
		return -1;
	*out = a * b;
	return 0;
}

/*
 * Digits and a unit of the table. Bare digits are taken as they are when bare_any is
 * set (sizes: bytes), else only zero is (a bare "10" duration is ambiguous; zero is zero
 * in any unit).
 */
static int
conf_parse_scaled(const char *s, const struct conf_unit *units, int nocase, int bare_any,
                  uint64_t *out)
{
	const struct conf_unit *u;
	uint64_t v;

	if (s == NULL || conf_read_digits(&s, &v) < 0)
		return -1;
	if (*s == '\0') {
		if (!bare_any && v != 0)
			return -1;
		*out = v;
		return 0;
	}
	u = conf_find_unit(units, s, nocase);
	return u != NULL ? conf_mul(v, u->factor, out) : -1;
}

int
conf_parse_duration(const char *s, uint64_t *ms)
{
	return conf_parse_scaled(s, conf_duration_units, 0, 0, ms);
}

int
conf_parse_size(const char *s, uint64_t *bytes)
{
	return conf_parse_scaled(s, conf_size_units, 1, 1, bytes);
}

int
conf_parse_rate(const char *s, struct conf_rate *r)
{
	const char *slash;
	const struct conf_unit *u;
	uint64_t count, period;

	if (s == NULL || conf_read_digits(&s, &count) < 0 || count == 0 || *s != '/')
		return -1;
	slash = s;
	/* "5/m" reads as "5 per minute": a bare unit means one of it. */
	u = conf_find_unit(conf_duration_units, slash + 1, 0);
	if (u != NULL)
		period = u->factor;
	else if (conf_parse_duration(slash + 1, &period) < 0)
		return -1;
	if (period == 0)
		return -1;
	r->count = count;
	r->period_ms = period;
	return 0;
}

int
conf_parse_uint(const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
	uint64_t v;

	if (s == NULL || conf_read_digits(&s, &v) < 0 || *s != '\0')
		return -1;
	if (v < min || v > max)
		return -1;
	*out = v;
	return 0;
}

/* [+-]? (digits [. digits?] | . digits): no hex, no exponent, no inf or nan. */
static int
conf_is_decimal(const char *s)
{
	int digits = 0;

	if (*s == '+' || *s == '-')
		s++;
	for (; conf_is_digit(*s); s++)
		digits++;
	if (*s == '.')
		for (s++; conf_is_digit(*s); s++)
			digits++;
	return digits > 0 && *s == '\0';
}

int
conf_parse_double(const char *s, double min, double max, double *out)
{
	double v;
	char *end;

	if (s == NULL || !conf_is_decimal(s))
		return -1;
	errno = 0;
	v = strtod(s, &end);
	if (errno != 0 || *end != '\0' || !isfinite(v) || v < min || v > max)
		return -1;
	*out = v;
	return 0;
}

int
conf_parse_bool(const char *s, int *out)
{
	static const char *const yes[] = {"on", "yes", "true", "1"};
	static const char *const no[] = {"off", "no", "false", "0"};

	if (s == NULL)
		return -1;
	for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
		if (strcasecmp(s, yes[i]) == 0) {
			*out = 1;
			return 0;
		}
		if (strcasecmp(s, no[i]) == 0) {
			*out = 0;
			return 0;
		}
	}
	return -1;
}

int
conf_parse_hostport(const char *s, char *host, size_t hostlen, uint16_t *port)
{
	const char *h, *colon;
	size_t n;
	uint64_t p;

	if (s == NULL || hostlen == 0)
		return -1;
	if (*s == '[') {
		const char *close = strchr(s, ']');

		if (close == NULL || close == s + 1 || close[1] != ':')
			return -1;
		h = s + 1;
		n = (size_t)(close - h);
		colon = close + 1;
	} else {
		colon = strchr(s, ':');
		/* A second colon means an IPv6 address without brackets: port ambiguous. */
		if (colon == NULL || strchr(colon + 1, ':') != NULL)
			return -1;
		h = s;
		n = (size_t)(colon - s);
	}
	if (n >= hostlen || memchr(h, '[', n) != NULL || memchr(h, ']', n) != NULL)
		return -1;
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)h[i] <= ' ' || h[i] == 0x7f)
			return -1;
	if (conf_parse_uint(colon + 1, 1, 65535, &p) < 0)
		return -1;
	memcpy(host, h, n);
	host[n] = '\0';
	*port = (uint16_t)p;
	return 0;
}

static int
conf_is_blank(char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\v' || c == '\f';
}

int
conf_split_line(char *line, char **argv, int max)
{
	char *r = line, *w = line;
	int argc = 0;

	for (;;) {
		int quoted = 0;

		while (conf_is_blank(*r))
			r++;
		if (*r == '\0' || *r == '#')
			return argc;
		if (argc >= max)
			return -1;
		/*
		 * Words are compacted in place (w trails r) so that quotes can sit anywhere in
		 * a word, as in the shell: cert="/etc/my certs/a.pem" is one word without the
		 * quotes.
		 */
		argv[argc++] = w;
		for (; *r != '\0'; r++) {
			if (*r == '"')
				quoted = !quoted;
			else if (!quoted && (conf_is_blank(*r) || *r == '#'))
				break;
			else
				*w++ = *r;
		}
		if (quoted)
			return -1;
		if (*r == '#' || *r == '\0') {
			*w = '\0';
			return argc;
		}
		r++;
		*w++ = '\0';
	}
}

int
conf_split_kv(char *arg, char **key, char **value)
{
	char *eq;

	if (arg == NULL || (eq = strchr(arg, '=')) == NULL || eq == arg)
		return -1;
	*eq = '\0';
	*key = arg;
	*value = eq + 1;
	return 0;
}

char *
conf_format_duration(uint64_t ms, char *buf, size_t len)
{
	const struct conf_unit *best = &conf_duration_units[0];

	if (len == 0)
		return buf;
	if (ms == 0) {
		snprintf(buf, len, "0s");
		return buf;
	}
	for (const struct conf_unit *u = conf_duration_units; u->name != NULL; u++)
		if (ms % u->factor == 0)
			best = u;
	snprintf(buf, len, "%llu%s", (unsigned long long)(ms / best->factor), best->name);
	return buf;
}
