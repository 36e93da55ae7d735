#ifndef GW_CONF_H
#define GW_CONF_H

#include <stddef.h>
#include <stdint.h>

/*
 * The lexer of the gatewayd.conf language (SPEC section 2): one directive per line,
 * `#` comments, words separated by blanks, `key=value` arguments, durations
 * (500ms 10s 5m 1h 7d), sizes (512 64kb 64mb 1gb), rates (N/DURATION). Every parser
 * returns 0 or -1 and never accepts trailing garbage, overflow or a negative number.
 */

#define CONF_MAX_ARGS 32

struct conf_rate {
	uint64_t count;     /* N requests ... */
	uint64_t period_ms; /* ... per this many milliseconds */
};

int conf_parse_duration(const char *s, uint64_t *ms);
int conf_parse_size(const char *s, uint64_t *bytes);
int conf_parse_rate(const char *s, struct conf_rate *r);
/* Decimal integer in [min, max]. */
int conf_parse_uint(const char *s, uint64_t min, uint64_t max, uint64_t *out);
/* Floating point number in [min, max] (latitudes, longitudes). */
int conf_parse_double(const char *s, double min, double max, double *out);
/* on/off, yes/no, true/false, 1/0. */
int conf_parse_bool(const char *s, int *out);
/* "host:port", "[v6]:port"; host copied without brackets. Port 1..65535. */
int conf_parse_hostport(const char *s, char *host, size_t hostlen, uint16_t *port);
/*
 * Splits a line in place into words: blanks separate, `#` starts a comment (outside
 * double quotes), "double quoted words" keep blanks. Returns the word count (0 for an
 * empty or comment line), or -1 when there are more than max words or a quote is open.
 */
int conf_split_line(char *line, char **argv, int max);
/* "key=value" in place: *key and *value point into arg. -1 when there is no '=' or the
 * key is empty. */
int conf_split_kv(char *arg, char **key, char **value);
/* Formats a duration back into the shortest exact unit ("90s", "5m", "500ms"). */
char *conf_format_duration(uint64_t ms, char *buf, size_t len);

#endif
