/*
 * Strict, zero-copy, incremental HTTP/1.x head parser (RFC 9112) and chunked
 * transfer-coding scanner. See http.h for the contract; the comments here say why.
 *
 * Head parsing works line by line. A call resumes the search for the next LF at
 * m->scan_off and parses each line once it is complete, so every byte is looked at by
 * memchr once and by a line parser once, however the head is split across reads (a
 * slowloris client sending one byte per packet costs linear time, not quadratic). The
 * start of the line in progress is never stored: it follows from what was parsed
 * already (the end of the last header line, or of the start line).
 */
#include <string.h>

#include "http.h"

/* Character classes, one table lookup per byte (generated, see the legend). */
enum {
	CC_TCHAR = 0x01,  /* token (RFC 9110 5.6.2): methods, field names */
	CC_VALUE = 0x02,  /* field-value byte: VCHAR, obs-text, SP, HTAB (RFC 9110 5.5) */
	CC_TARGET = 0x04, /* request-target byte: VCHAR but '#', and obs-text */
	CC_HEX = 0x08,    /* HEXDIG */
	CC_HOST = 0x10,   /* RFC 3986 host and port: unreserved, sub-delims, '%', ':', '[]' */
	CC_WS = 0x20,     /* SP, HTAB (OWS/BWS) */
	CC_QDTEXT = 0x40, /* quoted-string text (RFC 9110 5.6.4) */
};

/* clang-format off */
static const uint8_t http_cc[256] = {
	0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x62, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, /* 0x00 */
	0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, /* 0x10 */
	0x62, 0x57, 0x06, 0x43, 0x57, 0x57, 0x57, 0x57, 0x56, 0x56, 0x57, 0x57, 0x56, 0x57, 0x57, 0x46, /* 0x20 */
	0x5f, 0x5f, 0x5f, 0x5f, 0x5f, 0x5f, 0x5f, 0x5f, 0x5f, 0x5f, 0x56, 0x56, 0x46, 0x56, 0x46, 0x46, /* 0x30 */
	0x46, 0x5f, 0x5f, 0x5f, 0x5f, 0x5f, 0x5f, 0x57, 0x57, 0x57, 0x57, 0x57, 0x57, 0x57, 0x57, 0x57, /* 0x40 */
	0x57, 0x57, 0x57, 0x57, 0x57, 0x57, 0x57, 0x57, 0x57, 0x57, 0x57, 0x56, 0x06, 0x56, 0x47, 0x57, /* 0x50 */
	0x47, 0x5f, 0x5f, 0x5f, 0x5f, 0x5f, 0x5f, 0x57, 0x57, 0x57, 0x57, 0x57, 0x57, 0x57, 0x57, 0x57, /* 0x60 */
	0x57, 0x57, 0x57, 0x57, 0x57, 0x57, 0x57, 0x57, 0x57, 0x57, 0x57, 0x46, 0x47, 0x46, 0x57, 0x00, /* 0x70 */
	0x46, 0x46, 0x46, 0x46, 0x46, 0x46, 0x46, 0x46, 0x46, 0x46, 0x46, 0x46, 0x46, 0x46, 0x46, 0x46, /* 0x80 */
	0x46, 0x46, 0x46, 0x46, 0x46, 0x46, 0x46, 0x46, 0x46, 0x46, 0x46, 0x46, 0x46, 0x46, 0x46, 0x46, /* 0x90 */
	0x46, 0x46, 0x46, 0x46, 0x46, 0x46, 0x46, 0x46, 0x46, 0x46, 0x46, 0x46, 0x46, 0x46, 0x46, 0x46, /* 0xa0 */
	0x46, 0x46, 0x46, 0x46, 0x46, 0x46, 0x46, 0x46, 0x46, 0x46, 0x46, 0x46, 0x46, 0x46, 0x46, 0x46, /* 0xb0 */
	0x46, 0x46, 0x46, 0x46, 0x46, 0x46, 0x46, 0x46, 0x46, 0x46, 0x46, 0x46, 0x46, 0x46, 0x46, 0x46, /* 0xc0 */
	0x46, 0x46, 0x46, 0x46, 0x46, 0x46, 0x46, 0x46, 0x46, 0x46, 0x46, 0x46, 0x46, 0x46, 0x46, 0x46, /* 0xd0 */
	0x46, 0x46, 0x46, 0x46, 0x46, 0x46, 0x46, 0x46, 0x46, 0x46, 0x46, 0x46, 0x46, 0x46, 0x46, 0x46, /* 0xe0 */
	0x46, 0x46, 0x46, 0x46, 0x46, 0x46, 0x46, 0x46, 0x46, 0x46, 0x46, 0x46, 0x46, 0x46, 0x46, 0x46, /* 0xf0 */
};
/* clang-format on */

/* Defaults for a NULL limits pointer or a zero field: SPEC section 4. */
#define HTTP_DEF_MAX_HEAD 32768u
#define HTTP_DEF_MAX_HEADERS 100u
#define HTTP_DEF_MAX_URI 8192u

/*
 * Methods are tokens of any length in the grammar, but nothing real is longer than
 * ~20 bytes (UPDATEREDIRECTREF); the cap also bounds the slack of the early 414 check.
 */
#define HTTP_METHOD_MAX 32u
/*
 * A request line (up to its CR) longer than max_uri + this cannot hold a valid target:
 * the longest method, two SP, "HTTP/1.x" and the CR.
 */
#define HTTP_URI_SLACK (HTTP_METHOD_MAX + 2 + 8 + 1)

/* Content-Length cap: keeps lengths representable as off_t for the proxy. */
#define HTTP_CL_MAX ((uint64_t)INT64_MAX)
/* Chunk sizes above 2^60 are rejected (http.h). */
#define HTTP_CHUNK_SIZE_MAX ((uint64_t)1 << 60)

static inline int
cc_is(unsigned char c, unsigned cls)
{
	return (http_cc[c] & cls) != 0;
}

static inline unsigned char
lower(unsigned char c)
{
	return (unsigned char)(c + ((unsigned)(c - 'A') < 26u) * 32u);
}

/*
 * Case-insensitive compare of n bytes with a lowercase literal (letters, digits,
 * '-', ':', '/'). Setting bit 5 folds case; the only other bytes it could make equal
 * to such a literal byte are CTLs (CR would alias '-'), and every caller passes bytes
 * already checked to hold no CTL (names, values, targets), so the compare is exact.
 */
static inline int
lc_eq(const unsigned char *s, const char *lit, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if ((s[i] | 0x20) != (unsigned char)lit[i])
			return 0;
	return 1;
}

static inline int
lc_eq_str(const unsigned char *s, size_t n, const char *lit, size_t litlen)
{
	return n == litlen && lc_eq(s, lit, n);
}

/*
 * Word-at-a-time screening (SWAR): values and targets are long runs of ordinary
 * bytes, so eight are checked per step and only a word holding a suspect byte is
 * looked at byte by byte. "Some byte < n" is exact for n <= 128 (a borrow can only
 * start at such a byte); obs-text bytes (>= 0x80) never match.
 */
#define SWAR_ONES 0x0101010101010101ULL
#define SWAR_HIGH 0x8080808080808080ULL

static inline uint64_t
swar_load(const unsigned char *p)
{
	uint64_t w;

	memcpy(&w, p, sizeof(w));
	return w;
}

static inline uint64_t
swar_less(uint64_t w, unsigned n)
{
	return (w - SWAR_ONES * n) & ~w & SWAR_HIGH;
}

static inline uint64_t
swar_eq(uint64_t w, unsigned char c)
{
	return swar_less(w ^ (SWAR_ONES * c), 1);
}

/* [i, end) is field-value text: VCHAR, obs-text, SP, HTAB; no CTL, no DEL. */
static int
value_ok(const unsigned char *p, uint32_t i, uint32_t end)
{
	/* HTAB is a CTL to the word test: its word is then checked byte by byte */
	while (end - i >= 8) {
		uint64_t w = swar_load(p + i);

		if (swar_less(w, 0x20) | swar_eq(w, 0x7f))
			break;
		i += 8;
	}
	/*
	 * A tail after clean words: one more word ending at end. It overlaps bytes that
	 * passed already (or precede the value): they add conditions, never hide one.
	 */
	if (i < end && end - i < 8 && end >= 8) {
		uint64_t w = swar_load(p + end - 8);

		if (!(swar_less(w, 0x20) | swar_eq(w, 0x7f)))
			return 1;
	}
	for (; i < end; i++)
		if (!cc_is(p[i], CC_VALUE))
			return 0;
	return 1;
}

/* Length of the run of request-target bytes at p (stops at SP, CR, '#', CTLs...). */
static uint32_t
target_span(const unsigned char *p, uint32_t i, uint32_t end)
{
	uint32_t s = i;

	while (end - i >= 8) {
		uint64_t w = swar_load(p + i);

		if (swar_less(w, 0x21) | swar_eq(w, 0x7f) | swar_eq(w, '#'))
			break;
		i += 8;
	}
	while (i < end && cc_is(p[i], CC_TARGET))
		i++;
	return i - s;
}

/* ---------------------------------------------------------------------------------- */
/* Lookups                                                                            */

static enum http_method
method_lookup(const unsigned char *s, size_t n)
{
	/* Method names are case-sensitive (RFC 9110 9.1): "get" is an unknown method. */
	switch (n) {
	case 3:
		if (memcmp(s, "GET", 3) == 0)
			return HTTP_M_GET;
		if (memcmp(s, "PUT", 3) == 0)
			return HTTP_M_PUT;
		break;
	case 4:
		if (memcmp(s, "POST", 4) == 0)
			return HTTP_M_POST;
		if (memcmp(s, "HEAD", 4) == 0)
			return HTTP_M_HEAD;
		break;
	case 5:
		if (memcmp(s, "PATCH", 5) == 0)
			return HTTP_M_PATCH;
		if (memcmp(s, "TRACE", 5) == 0)
			return HTTP_M_TRACE;
		break;
	case 6:
		if (memcmp(s, "DELETE", 6) == 0)
			return HTTP_M_DELETE;
		break;
	case 7:
		if (memcmp(s, "OPTIONS", 7) == 0)
			return HTTP_M_OPTIONS;
		if (memcmp(s, "CONNECT", 7) == 0)
			return HTTP_M_CONNECT;
		break;
	default:
		break;
	}
	return HTTP_M_OTHER;
}

/*
 * Field-name recognition: the length selects a handful of candidates, the first
 * letter usually one, so a header costs about one compare.
 */
static enum http_hdr_id
hdr_lookup(const unsigned char *s, size_t n)
{
	unsigned char c0 = n ? lower(s[0]) : 0;

	switch (n) {
	case 2:
		if (lc_eq(s, "te", 2))
			return HTTP_H_TE;
		break;
	case 4:
		if (lc_eq(s, "host", 4))
			return HTTP_H_HOST;
		break;
	case 6:
		if (lc_eq(s, "expect", 6))
			return HTTP_H_EXPECT;
		break;
	case 7:
		if (c0 == 't' && lc_eq(s, "trailer", 7))
			return HTTP_H_TRAILER;
		if (c0 == 'u' && lc_eq(s, "upgrade", 7))
			return HTTP_H_UPGRADE;
		break;
	case 9:
		if (lc_eq(s, "x-user-id", 9))
			return HTTP_H_X_USER_ID;
		if (lc_eq(s, "x-api-key", 9))
			return HTTP_H_X_API_KEY;
		break;
	case 10:
		if (c0 == 'c' && lc_eq(s, "connection", 10))
			return HTTP_H_CONNECTION;
		if (c0 == 'k' && lc_eq(s, "keep-alive", 10))
			return HTTP_H_KEEP_ALIVE;
		break;
	case 11:
		if (lc_eq(s, "x-user-tier", 11))
			return HTTP_H_X_USER_TIER;
		break;
	case 12:
		if (lc_eq(s, "x-request-id", 12))
			return HTTP_H_X_REQUEST_ID;
		break;
	case 13:
		if (c0 == 'a' && lc_eq(s, "authorization", 13))
			return HTTP_H_AUTHORIZATION;
		if (c0 == 'c' && lc_eq(s, "cache-control", 13))
			return HTTP_H_CACHE_CONTROL;
		break;
	case 14:
		if (lc_eq(s, "content-length", 14))
			return HTTP_H_CONTENT_LENGTH;
		break;
	case 15:
		if (lc_eq(s, "x-forwarded-for", 15))
			return HTTP_H_X_FORWARDED_FOR;
		break;
	case 16:
		if (lc_eq(s, "proxy-connection", 16))
			return HTTP_H_PROXY_CONNECTION;
		break;
	case 17:
		if (c0 == 't' && lc_eq(s, "transfer-encoding", 17))
			return HTTP_H_TRANSFER_ENCODING;
		if (c0 == 'x' && lc_eq(s, "x-forwarded-proto", 17))
			return HTTP_H_X_FORWARDED_PROTO;
		break;
	case 18:
		if (lc_eq(s, "proxy-authenticate", 18))
			return HTTP_H_PROXY_AUTHENTICATE;
		break;
	case 19:
		if (lc_eq(s, "proxy-authorization", 19))
			return HTTP_H_PROXY_AUTHORIZATION;
		break;
	default:
		break;
	}
	return HTTP_H_OTHER;
}

/* ---------------------------------------------------------------------------------- */
/* Start lines                                                                        */

/*
 * HTTP-version = "HTTP/" DIGIT "." DIGIT, case-sensitive (RFC 9112 2.3). A well-formed
 * version other than 1.0/1.1 is 505; anything else is not HTTP/1.x at all.
 */
static int
parse_version(const unsigned char *s, size_t n, uint8_t *minor)
{
	if (n != 8 || memcmp(s, "HTTP/", 5) != 0 || (unsigned)(s[5] - '0') > 9 || s[6] != '.' ||
	    (unsigned)(s[7] - '0') > 9)
		return HTTP_E_BAD;
	if (s[5] != '1' || (s[7] != '0' && s[7] != '1'))
		return HTTP_E_VERSION;
	*minor = (uint8_t)(s[7] - '0');
	return HTTP_OK;
}

/* host ":" port with a non-empty host and a 1-5 digit port (RFC 9112 3.2.3). */
static int
authority_form_ok(const unsigned char *s, size_t n)
{
	size_t colon = n;

	for (size_t i = 0; i < n; i++) {
		if (!cc_is(s[i], CC_HOST))
			return 0;
		if (s[i] == ':')
			colon = i;
	}
	if (colon == 0 || colon >= n - 1 || n - colon - 1 > 5)
		return 0;
	for (size_t i = colon + 1; i < n; i++)
		if ((unsigned)(s[i] - '0') > 9)
			return 0;
	return 1;
}

/* absolute-form (RFC 9112 3.2.2): an http(s) URI with a non-empty authority. */
static int
absolute_form_ok(const unsigned char *s, size_t n)
{
	size_t skip;

	if (n > 7 && lc_eq(s, "http://", 7))
		skip = 7;
	else if (n > 8 && lc_eq(s, "https://", 8))
		skip = 8;
	else
		return 0;
	return s[skip] != '/' && s[skip] != '?';
}

static int
target_form_ok(enum http_method method, const unsigned char *s, size_t n)
{
	/* Each form is allowed only with the methods RFC 9112 3.2 gives it. */
	if (method == HTTP_M_CONNECT)
		return authority_form_ok(s, n);
	if (s[0] == '/')
		return 1;
	if (s[0] == '*')
		return n == 1 && method == HTTP_M_OPTIONS;
	return absolute_form_ok(s, n);
}

/*
 * What can be judged of a request line from its first bytes [off, end), complete or
 * not: a method that is no token (a TLS hello on the plain port, binary junk) fails
 * at once instead of after max_head bytes, and a line that cannot fit max_uri is 414
 * before it ends. An empty line before the request line fails here too: RFC 9112 2.2
 * says a server SHOULD skip it, but the head must start at buf[0] (first_line_len and
 * head_len count from there and the proxy forwards buf[0..first_line_len)); a caller
 * wanting the leniency drops leading CRLFs before parsing. The complete line gets the same check
 * first, so a head split anywhere parses to the same result as in one piece.
 */
static int
request_line_prefix(const unsigned char *p, uint32_t off, uint32_t end, uint32_t max_uri)
{
	uint32_t lim = end - off > HTTP_METHOD_MAX ? off + HTTP_METHOD_MAX + 1 : end;
	uint32_t i = off;

	while (i < lim && cc_is(p[i], CC_TCHAR))
		i++;
	if (i < lim ? i == off || p[i] != ' ' : lim - off > HTTP_METHOD_MAX)
		return HTTP_E_BAD;
	if (end - off > (uint64_t)max_uri + HTTP_URI_SLACK)
		return HTTP_E_URI_TOO_LONG;
	return HTTP_OK;
}

/* request-line = method SP request-target SP HTTP-version; [off, end) excludes CRLF. */
static int
parse_request_line(struct http_msg *m, const unsigned char *p, uint32_t off, uint32_t end,
                   uint32_t max_uri)
{
	const unsigned char *q;
	uint32_t i = off, t;
	int rc;

	while (i < end && cc_is(p[i], CC_TCHAR))
		i++;
	if (i == off || i == end || p[i] != ' ' || i - off > HTTP_METHOD_MAX)
		return HTTP_E_BAD;
	m->method_off = off;
	m->method_len = (uint16_t)(i - off);
	m->method = (uint8_t)method_lookup(p + off, i - off);

	t = ++i;
	i += target_span(p, i, end);
	if (i == t)
		return HTTP_E_BAD;
	if (i - t > max_uri)
		return HTTP_E_URI_TOO_LONG;
	/* CTLs and NUL in the target would split the line differently downstream */
	if (i == end || p[i] != ' ')
		return HTTP_E_BAD; /* HTTP/0.9, a space missing, or a bad byte */
	q = memchr(p + t, '?', i - t);
	m->target_off = t;
	m->target_len = i - t;
	m->path_len = q ? (uint32_t)(q - (p + t)) : i - t;
	/* the version first: "PRI * HTTP/2.0" deserves its 505 */
	rc = parse_version(p + i + 1, end - i - 1, &m->version_minor);
	if (rc != HTTP_OK)
		return rc;
	return target_form_ok((enum http_method)m->method, p + t, i - t) ? HTTP_OK : HTTP_E_BAD;
}

/*
 * status-line = HTTP-version SP status-code SP [ reason-phrase ]. The SP before an
 * empty reason is also accepted when missing: many servers send "HTTP/1.1 200\r\n"
 * and nothing becomes ambiguous by reading it.
 */
static int
parse_status_line(struct http_msg *m, const unsigned char *p, uint32_t off, uint32_t end)
{
	const unsigned char *s = p + off;
	uint32_t n = end - off;
	int rc;

	if (n < 12)
		return n >= 8 && parse_version(s, 8, &m->version_minor) == HTTP_E_VERSION
		           ? HTTP_E_VERSION
		           : HTTP_E_BAD;
	rc = parse_version(s, 8, &m->version_minor);
	if (rc != HTTP_OK)
		return rc;
	if (s[8] != ' ' || (unsigned)(s[9] - '1') > 4 || (unsigned)(s[10] - '0') > 9 ||
	    (unsigned)(s[11] - '0') > 9)
		return HTTP_E_BAD;
	m->status = (uint16_t)((s[9] - '0') * 100 + (s[10] - '0') * 10 + (s[11] - '0'));
	m->reason_off = off + 12;
	m->reason_len = 0;
	if (n == 12)
		return HTTP_OK;
	if (s[12] != ' ' || !value_ok(s, 13, n))
		return HTTP_E_BAD;
	m->reason_off = off + 13;
	m->reason_len = n - 13;
	return HTTP_OK;
}

/* ---------------------------------------------------------------------------------- */
/* Header lines                                                                       */

/*
 * field-line = field-name ":" OWS field-value OWS (RFC 9112 5). A name must start the
 * line and run straight into the colon: a leading SP/HTAB is obs-fold (or space after
 * the start line), a blank before the colon is a classic smuggling trick (RFC 9112
 * 5.1), both rejected as non-token bytes.
 */
static int
parse_header_line(struct http_msg *m, const unsigned char *p, uint32_t off, uint32_t end,
                  uint32_t max_headers)
{
	struct http_header *h;
	uint32_t i = off, vs, ve;

	/* p[end] is the line's CR, no tchar: the scan stops there without a bound check */
	while (cc_is(p[i], CC_TCHAR))
		i++;
	if (i == off || i == end || p[i] != ':' || i - off > UINT16_MAX)
		return HTTP_E_BAD;
	if (m->nhdr >= max_headers)
		return HTTP_E_HEADERS_TOO_LARGE;
	h = &m->hdr[m->nhdr];
	h->name_off = off;
	h->name_len = (uint16_t)(i - off);

	for (i++; i < end && cc_is(p[i], CC_WS); i++)
		;
	vs = i;
	if (!value_ok(p, vs, end))
		return HTTP_E_BAD; /* NUL, CR, other CTLs, DEL */
	for (ve = end; ve > vs && cc_is(p[ve - 1], CC_WS); ve--)
		;
	h->value_off = vs;
	h->value_len = ve - vs;
	h->line_off = off;
	h->line_len = end + 2 - off;
	h->id = (uint8_t)hdr_lookup(p + off, h->name_len);
	if (m->first[h->id] < 0)
		m->first[h->id] = (int16_t)m->nhdr;
	m->nhdr++;
	return HTTP_OK;
}

/* ---------------------------------------------------------------------------------- */
/* Framing and connection semantics                                                   */

/* Iterates the elements of a #list (RFC 9110 5.6.1), OWS trimmed, empty ones skipped. */
struct list_iter {
	const unsigned char *p, *end;
};

static int
list_next(struct list_iter *it, const unsigned char **el, size_t *n)
{
	while (it->p < it->end) {
		const unsigned char *s = it->p, *e;
		const unsigned char *c = memchr(s, ',', (size_t)(it->end - s));

		e = c ? c : it->end;
		it->p = c ? c + 1 : it->end;
		while (s < e && cc_is(*s, CC_WS))
			s++;
		while (e > s && cc_is(e[-1], CC_WS))
			e--;
		if (e > s) {
			*el = s;
			*n = (size_t)(e - s);
			return 1;
		}
	}
	return 0;
}

/*
 * Content-Length = 1*DIGIT; a list of identical values ("5, 5", from a proxy that
 * merged duplicates) is accepted as RFC 9110 8.6 allows; anything else, including
 * an empty element, a sign or whitespace inside the number, is rejected.
 */
static int
parse_content_length(const unsigned char *s, size_t n, uint64_t *out)
{
	const unsigned char *end = s + n;
	int seen = 0;
	uint64_t first = 0;

	for (;;) {
		uint64_t v = 0;
		const unsigned char *d;

		while (s < end && cc_is(*s, CC_WS))
			s++;
		d = s;
		while (s < end && (unsigned)(*s - '0') <= 9) {
			unsigned dig = *s - '0';

			if (v > (HTTP_CL_MAX - dig) / 10)
				return -1;
			v = v * 10 + dig;
			s++;
		}
		if (s == d)
			return -1;
		if (seen && v != first)
			return -1;
		first = v;
		seen = 1;
		while (s < end && cc_is(*s, CC_WS))
			s++;
		if (s == end)
			break;
		if (*s != ',')
			return -1;
		s++;
	}
	*out = first;
	return 0;
}

enum {
	CONN_CLOSE = 1,
	CONN_KEEP_ALIVE = 2,
	CONN_UPGRADE = 4,
};

static unsigned
connection_flags(const unsigned char *v, size_t n)
{
	struct list_iter it = {v, v + n};
	const unsigned char *el;
	size_t len;
	unsigned f = 0;

	while (list_next(&it, &el, &len)) {
		if (lc_eq_str(el, len, "close", 5))
			f |= CONN_CLOSE;
		else if (lc_eq_str(el, len, "keep-alive", 10))
			f |= CONN_KEEP_ALIVE;
		else if (lc_eq_str(el, len, "upgrade", 7))
			f |= CONN_UPGRADE;
	}
	return f;
}

/* A Host value is an RFC 3986 authority without userinfo (empty is allowed, 7.2). */
static int
host_value_ok(const unsigned char *v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (!cc_is(v[i], CC_HOST))
			return 0;
	return 1;
}

struct framing {
	unsigned nhost, ncl, nte, conn;
	int te_chunked; /* every TE header is exactly "chunked" and there is one */
	int te_empty;
	int cl_bad;
	uint64_t cl;
	int host_bad;
	int expect;
};

static void
collect_framing(const struct http_msg *m, const unsigned char *p, struct framing *f)
{
	memset(f, 0, sizeof(*f));
	for (unsigned i = 0; i < m->nhdr; i++) {
		const struct http_header *h = &m->hdr[i];
		const unsigned char *v = p + h->value_off;
		uint64_t cl = 0;

		switch (h->id) {
		case HTTP_H_HOST:
			f->nhost++;
			if (!host_value_ok(v, h->value_len))
				f->host_bad = 1;
			break;
		case HTTP_H_CONTENT_LENGTH:
			if (parse_content_length(v, h->value_len, &cl) < 0 ||
			    (f->ncl && cl != f->cl))
				f->cl_bad = 1;
			f->cl = cl;
			f->ncl++;
			break;
		case HTTP_H_TRANSFER_ENCODING:
			/*
			 * Only a single "chunked" is implemented: "chunked, chunked", a
			 * second TE line, or any other coding gets no second guess.
			 */
			f->nte++;
			f->te_chunked = f->nte == 1 && lc_eq_str(v, h->value_len, "chunked", 7);
			if (h->value_len == 0)
				f->te_empty = 1;
			break;
		case HTTP_H_CONNECTION:
			f->conn |= connection_flags(v, h->value_len);
			break;
		case HTTP_H_EXPECT:
			if (lc_eq_str(v, h->value_len, "100-continue", 12))
				f->expect = 1;
			break;
		default:
			break;
		}
	}
}

static void
set_connection(struct http_msg *m, const struct framing *f)
{
	/* RFC 9112 9.3: 1.1 is persistent unless "close"; 1.0 only with "keep-alive". */
	if (f->conn & CONN_CLOSE)
		m->keep_alive = 0;
	else
		m->keep_alive = m->version_minor == 1 || (f->conn & CONN_KEEP_ALIVE);
	/* RFC 9110 7.8: Upgrade in an HTTP/1.0 message is ignored. */
	m->upgrade =
	    m->version_minor == 1 && (f->conn & CONN_UPGRADE) && m->first[HTTP_H_UPGRADE] >= 0;
}

static int
finish_request(struct http_msg *m, const unsigned char *p)
{
	struct framing f;

	collect_framing(m, p, &f);
	/* RFC 9112 3.2: exactly one Host in 1.1; never two (they could route apart). */
	if ((m->version_minor == 1 && f.nhost != 1) || f.nhost > 1 || f.host_bad)
		return HTTP_E_BAD;
	if (f.cl_bad)
		return HTTP_E_BAD;
	if (f.nte) {
		/*
		 * RFC 9112 6.1: TE in 1.0 means faulty framing; TE with CL is the request
		 * smuggling pattern, so both are refused rather than "TE wins".
		 */
		if (m->version_minor == 0 || f.ncl || f.te_empty)
			return HTTP_E_BAD;
		if (!f.te_chunked)
			return HTTP_E_NOT_IMPLEMENTED; /* RFC 9112 6.1: 501 */
		m->body = HTTP_BODY_CHUNKED;
	} else if (f.ncl) {
		m->body = HTTP_BODY_LENGTH;
		m->content_length = f.cl;
	} else {
		m->body = HTTP_BODY_NONE;
	}
	set_connection(m, &f);
	/* RFC 9110 10.1.1: 100-continue from an HTTP/1.0 client is ignored. */
	m->expect_continue = f.expect && m->version_minor == 1;
	return HTTP_OK;
}

static int
finish_response(struct http_msg *m, const unsigned char *p, enum http_method req_method)
{
	struct framing f;

	collect_framing(m, p, &f);
	if (f.cl_bad)
		return HTTP_E_BAD;
	if (f.nte) {
		/*
		 * RFC 9112 6.3 lets TE override CL in a response; we refuse the pair instead
		 * (response splitting, queue poisoning): the proxy answers 502 rather than
		 * guess. Any coding but a single chunked is unframeable for us, so it is
		 * malformed too.
		 */
		if (m->version_minor == 0 || f.ncl || !f.te_chunked)
			return HTTP_E_BAD;
		m->body = HTTP_BODY_CHUNKED;
	} else if (f.ncl) {
		m->body = HTTP_BODY_LENGTH;
		m->content_length = f.cl;
	} else {
		m->body = HTTP_BODY_EOF;
	}
	/* RFC 9112 6.3 rules 1 and 2: these responses end with the head. */
	if (m->status < 200 || m->status == 204 || m->status == 304 || req_method == HTTP_M_HEAD ||
	    (req_method == HTTP_M_CONNECT && m->status < 300))
		m->body = HTTP_BODY_NONE;
	set_connection(m, &f);
	if (m->body == HTTP_BODY_EOF)
		m->keep_alive = 0;
	return HTTP_OK;
}

/* ---------------------------------------------------------------------------------- */
/* The head loop                                                                      */

static void
limits_get(const struct http_limits *lim, uint32_t *max_head, uint32_t *max_headers,
           uint32_t *max_uri)
{
	*max_head = lim && lim->max_head ? lim->max_head : HTTP_DEF_MAX_HEAD;
	*max_headers = lim && lim->max_headers ? lim->max_headers : HTTP_DEF_MAX_HEADERS;
	if (*max_headers > HTTP_MAX_HEADERS)
		*max_headers = HTTP_MAX_HEADERS;
	*max_uri = lim && lim->max_uri ? lim->max_uri : HTTP_DEF_MAX_URI;
}

/* Where the line in progress starts: after the last parsed line. */
static inline uint32_t
line_start(const struct http_msg *m)
{
	if (m->nhdr)
		return m->hdr[m->nhdr - 1].line_off + m->hdr[m->nhdr - 1].line_len;
	return m->first_line_len; /* the head starts at buf[0] */
}

static int
parse_head(struct http_msg *m, const char *buf, size_t len, const struct http_limits *lim,
           int is_req, enum http_method req_method)
{
	const unsigned char *p = (const unsigned char *)buf;
	uint32_t max_head, max_headers, max_uri, end, ls, pos;
	int rc;

	if (m->head_len)
		return HTTP_OK;
	if (m->scan_off > len)
		return HTTP_E_BAD; /* the caller shrank the buffer: a bug, fail closed */
	limits_get(lim, &max_head, &max_headers, &max_uri);
	/* Nothing past max_head can belong to an acceptable head: never look at it. */
	end = len < max_head ? (uint32_t)len : max_head;
	if (m->scan_off > end)
		return HTTP_E_HEADERS_TOO_LARGE; /* max_head lowered between calls */

	/* The line in progress starts after the last parsed one; both stay local. */
	ls = line_start(m);
	pos = m->scan_off;
	if (ls > pos)
		return HTTP_E_BAD; /* a msg not reset for this buffer: fail closed */

	for (;;) {
		const unsigned char *lf = memchr(p + pos, '\n', end - pos);
		uint32_t i;

		if (lf == NULL) {
			m->scan_off = end;
			if (is_req && m->first_line_len == 0) {
				rc = request_line_prefix(p, ls, end, max_uri);
				if (rc != HTTP_OK)
					return rc;
			}
			return len >= max_head ? HTTP_E_HEADERS_TOO_LARGE : HTTP_AGAIN;
		}
		i = (uint32_t)(lf - p);
		if (is_req && m->first_line_len == 0) {
			rc = request_line_prefix(p, ls, i, max_uri);
			if (rc != HTTP_OK)
				return rc;
		}
		/* RFC 9112 2.2 allows a bare LF terminator; a proxy must not (smuggling). */
		if (i == ls || p[i - 1] != '\r')
			return HTTP_E_BAD;
		pos = i + 1;

		if (m->first_line_len == 0) {
			rc = is_req ? parse_request_line(m, p, ls, i - 1, max_uri)
			            : parse_status_line(m, p, ls, i - 1);
			if (rc != HTTP_OK)
				return rc;
			m->first_line_len = pos - ls;
		} else if (i - 1 == ls) {
			rc = is_req ? finish_request(m, p) : finish_response(m, p, req_method);
			if (rc != HTTP_OK)
				return rc; /* head_len stays 0: a failed head is never "complete" */
			m->scan_off = m->head_len = pos;
			return HTTP_OK;
		} else {
			rc = parse_header_line(m, p, ls, i - 1, max_headers);
			if (rc != HTTP_OK)
				return rc;
		}
		ls = pos;
	}
}

void
http_msg_reset(struct http_msg *m)
{
	/* hdr[] is left alone: only hdr[0..nhdr) is ever read (7 KB not to clear). */
	m->method = HTTP_M_OTHER;
	m->method_off = 0;
	m->method_len = 0;
	m->target_off = 0;
	m->target_len = 0;
	m->path_len = 0;
	m->status = 0;
	m->reason_off = 0;
	m->reason_len = 0;
	m->version_minor = 0;
	m->first_line_len = 0;
	m->head_len = 0;
	m->nhdr = 0;
	for (int i = 0; i < HTTP_H_COUNT; i++)
		m->first[i] = -1;
	m->body = HTTP_BODY_NONE;
	m->content_length = 0;
	m->keep_alive = 0;
	m->upgrade = 0;
	m->expect_continue = 0;
	m->scan_off = 0;
}

int
http_parse_request(struct http_msg *m, const char *buf, size_t len, const struct http_limits *lim)
{
	return parse_head(m, buf, len, lim, 1, HTTP_M_OTHER);
}

int
http_parse_response(struct http_msg *m, const char *buf, size_t len, const struct http_limits *lim,
                    enum http_method req_method)
{
	return parse_head(m, buf, len, lim, 0, req_method);
}

/* ---------------------------------------------------------------------------------- */
/* Header access and small helpers                                                    */

const char *
http_header_get(const struct http_msg *m, const char *buf, enum http_hdr_id id, size_t *len)
{
	int idx;

	if ((unsigned)id >= HTTP_H_COUNT || id == HTTP_H_OTHER)
		return NULL;
	idx = m->first[id];
	if (idx < 0)
		return NULL;
	if (len)
		*len = m->hdr[idx].value_len;
	return buf + m->hdr[idx].value_off;
}

const char *
http_header_find(const struct http_msg *m, const char *buf, const char *name, size_t *len)
{
	size_t n = strlen(name);
	enum http_hdr_id id;

	/* only a token can name a parsed field (and lc_eq needs CTL-free input) */
	for (size_t k = 0; k < n; k++)
		if (!cc_is((unsigned char)name[k], CC_TCHAR))
			return NULL;
	id = hdr_lookup((const unsigned char *)name, n);
	if (id != HTTP_H_OTHER)
		return http_header_get(m, buf, id, len);
	for (unsigned i = 0; i < m->nhdr; i++) {
		const struct http_header *h = &m->hdr[i];
		const unsigned char *s = (const unsigned char *)buf + h->name_off;
		size_t k;

		if (h->id != HTTP_H_OTHER || h->name_len != n)
			continue;
		for (k = 0; k < n; k++)
			if (lower(s[k]) != lower((unsigned char)name[k]))
				break;
		if (k == n) {
			if (len)
				*len = h->value_len;
			return buf + h->value_off;
		}
	}
	return NULL;
}

int
http_list_has(const char *value, size_t len, const char *token)
{
	struct list_iter it = {(const unsigned char *)value, (const unsigned char *)value + len};
	const unsigned char *el;
	size_t n, tlen = strlen(token);

	while (list_next(&it, &el, &n)) {
		size_t k;

		if (n != tlen)
			continue;
		for (k = 0; k < n; k++)
			if (lower(el[k]) != lower((unsigned char)token[k]))
				break;
		if (k == n)
			return 1;
	}
	return 0;
}

int
http_method_idempotent(enum http_method m)
{
	/* RFC 9110 9.2.2; OPTIONS and TRACE are safe, hence idempotent too. */
	switch (m) {
	case HTTP_M_GET:
	case HTTP_M_HEAD:
	case HTTP_M_OPTIONS:
	case HTTP_M_TRACE:
	case HTTP_M_PUT:
	case HTTP_M_DELETE:
		return 1;
	default:
		return 0;
	}
}

const char *
http_status_reason(int status)
{
	switch (status) {
	case 100:
		return "Continue";
	case 101:
		return "Switching Protocols";
	case 200:
		return "OK";
	case 201:
		return "Created";
	case 202:
		return "Accepted";
	case 204:
		return "No Content";
	case 206:
		return "Partial Content";
	case 301:
		return "Moved Permanently";
	case 302:
		return "Found";
	case 303:
		return "See Other";
	case 304:
		return "Not Modified";
	case 307:
		return "Temporary Redirect";
	case 308:
		return "Permanent Redirect";
	case 400:
		return "Bad Request";
	case 401:
		return "Unauthorized";
	case 403:
		return "Forbidden";
	case 404:
		return "Not Found";
	case 405:
		return "Method Not Allowed";
	case 408:
		return "Request Timeout";
	case 409:
		return "Conflict";
	case 411:
		return "Length Required";
	case 413:
		return "Content Too Large";
	case 414:
		return "URI Too Long";
	case 415:
		return "Unsupported Media Type";
	case 417:
		return "Expectation Failed";
	case 422:
		return "Unprocessable Content";
	case 429:
		return "Too Many Requests";
	case 431:
		return "Request Header Fields Too Large";
	case 500:
		return "Internal Server Error";
	case 501:
		return "Not Implemented";
	case 502:
		return "Bad Gateway";
	case 503:
		return "Service Unavailable";
	case 504:
		return "Gateway Timeout";
	case 505:
		return "HTTP Version Not Supported";
	default:
		return "Unknown";
	}
}

/* ---------------------------------------------------------------------------------- */
/* Chunked transfer coding (RFC 9112 7.1)                                             */

/*
 * chunked-body = *chunk last-chunk trailer-section CRLF
 * chunk        = chunk-size [ chunk-ext ] CRLF chunk-data CRLF
 * chunk-ext    = *( BWS ";" BWS ext-name [ BWS "=" BWS ext-val ] )
 *
 * One state per grammar position so that any split of the input is just a pause.
 * States before CH_DATA are on the chunk-size line (counted against
 * HTTP_CHUNK_LINE_MAX), states after CH_TRAILER on the trailer section (counted
 * against HTTP_CHUNK_TRAILER_MAX).
 */
enum {
	CH_SIZE_FIRST,  /* first hex digit: no sign, no blank, no "0x" */
	CH_SIZE,        /* more hex digits, ';', BWS or CR */
	CH_EXT_SEMI,    /* BWS seen: more BWS or ';' */
	CH_EXT_NAME0,   /* after ';': BWS or the first name byte */
	CH_EXT_NAME,    /* in the name */
	CH_EXT_NAME_WS, /* BWS after the name: BWS, '=' or ';' */
	CH_EXT_VAL0,    /* after '=': BWS, '"' or the first token byte */
	CH_EXT_VAL,     /* in a token value */
	CH_EXT_QUOTED,  /* in a quoted-string value */
	CH_EXT_QESC,    /* after a backslash in it */
	CH_EXT_QEND,    /* after the closing quote */
	CH_SIZE_LF,     /* CR seen on the size line */
	CH_DATA,        /* remaining payload bytes */
	CH_DATA_CR,     /* CRLF after the data */
	CH_DATA_LF,
	CH_TRAILER, /* start of a trailer line, or the final CRLF */
	CH_TR_NAME,
	CH_TR_VALUE,
	CH_TR_LF,
	CH_FINAL_LF,
	CH_DONE,
	CH_ERROR,
};

void
http_chunked_init(struct http_chunked *c)
{
	memset(c, 0, sizeof(*c));
	c->state = CH_SIZE_FIRST;
}

static inline unsigned
hexval(unsigned char ch)
{
	return ch <= '9' ? (unsigned)ch - '0' : lower(ch) - 'a' + 10u;
}

/* One byte of the chunk-size line; returns the next state (CH_ERROR on bad input). */
static unsigned
chunk_line_step(struct http_chunked *c, unsigned st, unsigned char ch)
{
	unsigned cls = http_cc[ch];

	switch (st) {
	case CH_SIZE_FIRST:
		if (!(cls & CC_HEX))
			return CH_ERROR;
		c->remaining = hexval(ch);
		return CH_SIZE;
	case CH_SIZE:
		if (cls & CC_HEX) {
			unsigned d = hexval(ch);

			if (c->remaining > (HTTP_CHUNK_SIZE_MAX - d) >> 4)
				return CH_ERROR;
			c->remaining = (c->remaining << 4) | d;
			return CH_SIZE;
		}
		if (ch == ';')
			return CH_EXT_NAME0;
		if (cls & CC_WS)
			return CH_EXT_SEMI;
		return ch == '\r' ? CH_SIZE_LF : CH_ERROR;
	case CH_EXT_SEMI:
		if (cls & CC_WS)
			return st;
		return ch == ';' ? CH_EXT_NAME0 : CH_ERROR;
	case CH_EXT_NAME0:
		if (cls & CC_WS)
			return st;
		return cls & CC_TCHAR ? CH_EXT_NAME : CH_ERROR;
	case CH_EXT_NAME:
		if (cls & CC_TCHAR)
			return st;
		/* a name ends with CR, or the ways BWS after it does */
		if (ch == '\r')
			return CH_SIZE_LF;
		/* fall through */
	case CH_EXT_NAME_WS:
		if (cls & CC_WS)
			return CH_EXT_NAME_WS;
		if (ch == '=')
			return CH_EXT_VAL0;
		return ch == ';' ? CH_EXT_NAME0 : CH_ERROR;
	case CH_EXT_VAL0:
		if (cls & CC_WS)
			return st;
		if (ch == '"')
			return CH_EXT_QUOTED;
		return cls & CC_TCHAR ? CH_EXT_VAL : CH_ERROR;
	case CH_EXT_VAL:
		if (cls & CC_TCHAR)
			return st;
		/* fall through */
	case CH_EXT_QEND:
		if (cls & CC_WS)
			return CH_EXT_SEMI;
		if (ch == ';')
			return CH_EXT_NAME0;
		return ch == '\r' ? CH_SIZE_LF : CH_ERROR;
	case CH_EXT_QUOTED:
		if (ch == '"')
			return CH_EXT_QEND;
		if (ch == '\\')
			return CH_EXT_QESC;
		return cls & CC_QDTEXT ? st : CH_ERROR;
	case CH_EXT_QESC:
		/* quoted-pair = "\" ( HTAB / SP / VCHAR / obs-text ) */
		return cls & CC_VALUE ? CH_EXT_QUOTED : CH_ERROR;
	case CH_SIZE_LF:
		if (ch != '\n')
			return CH_ERROR;
		return c->remaining ? CH_DATA : CH_TRAILER;
	default:
		return CH_ERROR;
	}
}

/* One byte of the trailer section (RFC 9112 7.1.2: field lines, then CRLF). */
static unsigned
chunk_trailer_step(unsigned st, unsigned char ch)
{
	unsigned cls = http_cc[ch];

	switch (st) {
	case CH_TRAILER:
		if (ch == '\r')
			return CH_FINAL_LF;
		return cls & CC_TCHAR ? CH_TR_NAME : CH_ERROR;
	case CH_TR_NAME:
		if (cls & CC_TCHAR)
			return st;
		return ch == ':' ? CH_TR_VALUE : CH_ERROR;
	case CH_TR_VALUE:
		if (cls & CC_VALUE)
			return st;
		return ch == '\r' ? CH_TR_LF : CH_ERROR;
	case CH_TR_LF:
		return ch == '\n' ? CH_TRAILER : CH_ERROR;
	case CH_FINAL_LF:
		return ch == '\n' ? CH_DONE : CH_ERROR;
	default:
		return CH_ERROR;
	}
}

/*
 * The common size line, "1f40\r\n", whole in the buffer: read in one go. At most 15
 * digits (< 2^60, so no overflow check) and no extension; anything else returns 0
 * and goes through the byte-at-a-time machine, which accepts the same lines.
 */
static inline size_t
chunk_size_fast(struct http_chunked *c, const unsigned char *p, size_t len)
{
	uint64_t v = 0;
	size_t j = 0;

	while (j < len && j < 15 && cc_is(p[j], CC_HEX))
		v = (v << 4) | hexval(p[j++]);
	if (j == 0 || len - j < 2 || p[j] != '\r' || p[j + 1] != '\n')
		return 0;
	c->remaining = v;
	return j + 2;
}

static inline ssize_t
chunked_run(struct http_chunked *c, const char *buf, size_t len,
            void (*fn)(void *arg, const char *data, size_t n), void *arg)
{
	const unsigned char *p = (const unsigned char *)buf;
	unsigned st = c->state;
	size_t i = 0;

	if (st == CH_DONE)
		return 0;
	while (i < len) {
		unsigned char ch;

		if (st == CH_DATA) {
			/* The fast path: the payload is skipped (or handed over) in one step. */
			size_t n = c->remaining < len - i ? (size_t)c->remaining : len - i;

			if (fn)
				fn(arg, buf + i, n);
			i += n;
			c->remaining -= n;
			c->data_total += n;
			if (c->remaining == 0)
				st = CH_DATA_CR;
			continue;
		}
		if (st == CH_DATA_CR && len - i >= 2 && p[i] == '\r' && p[i + 1] == '\n') {
			i += 2;
			st = CH_SIZE_FIRST;
			continue;
		}
		if (st == CH_SIZE_FIRST) {
			size_t adv = chunk_size_fast(c, p + i, len - i);

			if (adv) {
				i += adv;
				st = c->remaining ? CH_DATA : CH_TRAILER;
				continue;
			}
		}
		ch = p[i++];
		if (st < CH_DATA) {
			if (++c->line_len > HTTP_CHUNK_LINE_MAX)
				st = CH_ERROR;
			else
				st = chunk_line_step(c, st, ch);
			if (st == CH_DATA || st == CH_TRAILER)
				c->line_len = 0;
		} else if (st == CH_DATA_CR) {
			st = ch == '\r' ? CH_DATA_LF : CH_ERROR;
		} else if (st == CH_DATA_LF) {
			st = ch == '\n' ? CH_SIZE_FIRST : CH_ERROR;
		} else {
			if (++c->trailer_len > HTTP_CHUNK_TRAILER_MAX)
				st = CH_ERROR;
			else
				st = chunk_trailer_step(st, ch);
		}
		if (st == CH_ERROR) {
			c->state = CH_ERROR;
			return -1;
		}
		if (st == CH_DONE) {
			c->done = 1;
			break;
		}
	}
	c->state = (uint8_t)st;
	return (ssize_t)i;
}

ssize_t
http_chunked_scan(struct http_chunked *c, const char *buf, size_t len)
{
	return chunked_run(c, buf, len, NULL, NULL);
}

ssize_t
http_chunked_decode(struct http_chunked *c, const char *buf, size_t len,
                    void (*fn)(void *arg, const char *data, size_t n), void *arg)
{
	return chunked_run(c, buf, len, fn, arg);
}
