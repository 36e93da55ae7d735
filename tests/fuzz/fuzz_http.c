/*
 * libFuzzer target for the HTTP/1.x head parser: every input is parsed as a request
 * and as a response, with the default and with tiny limits, in one piece, in two or
 * three pieces and (for short inputs) one byte at a time; the results must agree and
 * the offsets must stay inside the head. A chunked body after a complete head is then
 * scanned whole and split, and must agree too.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "http.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct http_msg whole, piece;

static const struct http_limits lim_def = {32768, 100, 8192};
static const struct http_limits lim_small = {96, 3, 16};

static void
check(int cond)
{
	if (!cond)
		abort();
}

static uint64_t
mix(const uint8_t *d, size_t n)
{
	uint64_t h = 1469598103934665603ULL;

	for (size_t i = 0; i < n; i++)
		h = (h ^ d[i]) * 1099511628211ULL;
	return h ^ (h >> 29);
}

static int
parse(struct http_msg *m, int is_req, const char *b, size_t n, const struct http_limits *lim,
      enum http_method rm)
{
	return is_req ? http_parse_request(m, b, n, lim) : http_parse_response(m, b, n, lim, rm);
}

/* Naive reference classes, written independently of the parser's tables. */
static int
is_tchar(unsigned char c)
{
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
	       (c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

static int
is_value_byte(unsigned char c)
{
	return c == '\t' || (c >= 0x20 && c != 0x7f);
}

static void
same_msg(const struct http_msg *a, const struct http_msg *b)
{
	check(a->method == b->method && a->method_off == b->method_off &&
	      a->method_len == b->method_len && a->target_off == b->target_off &&
	      a->target_len == b->target_len && a->path_len == b->path_len);
	check(a->status == b->status && a->reason_off == b->reason_off &&
	      a->reason_len == b->reason_len && a->version_minor == b->version_minor);
	check(a->first_line_len == b->first_line_len && a->head_len == b->head_len);
	check(a->nhdr == b->nhdr);
	check(memcmp(a->hdr, b->hdr, a->nhdr * sizeof(a->hdr[0])) == 0);
	check(memcmp(a->first, b->first, sizeof(a->first)) == 0);
	check(a->body == b->body && a->content_length == b->content_length &&
	      a->keep_alive == b->keep_alive && a->upgrade == b->upgrade &&
	      a->expect_continue == b->expect_continue);
}

/* What must hold of any head the parser accepted. */
static void
sane_msg(const struct http_msg *m, const char *b, size_t n, const struct http_limits *lim,
         int is_req)
{
	uint32_t end = m->head_len;

	check(end >= 4 && end <= n && end <= lim->max_head);
	check(memcmp(b + end - 4, "\r\n\r\n", 4) == 0 ||
	      (m->nhdr == 0 && memcmp(b + end - 2, "\r\n", 2) == 0));
	check(m->nhdr <= lim->max_headers);
	check(m->method_off + m->first_line_len <= end);
	if (is_req) {
		check(m->target_len > 0 && m->target_len <= lim->max_uri);
		check(m->path_len <= m->target_len);
		check(m->target_off + m->target_len < m->method_off + m->first_line_len);
		for (uint32_t k = 0; k < m->target_len; k++) {
			unsigned char c = (unsigned char)b[m->target_off + k];

			check(c > 0x20 && c != 0x7f && c != '#');
		}
		for (uint32_t k = 0; k < m->method_len; k++)
			check(is_tchar((unsigned char)b[m->method_off + k]));
	} else {
		check(m->status >= 100 && m->status <= 599);
		for (uint32_t k = 0; k < m->reason_len; k++)
			check(is_value_byte((unsigned char)b[m->reason_off + k]));
	}
	check(m->version_minor <= 1);
	for (unsigned i = 0; i < m->nhdr; i++) {
		const struct http_header *h = &m->hdr[i];

		check(h->line_off + h->line_len <= end);
		check(h->name_len > 0 && h->name_off == h->line_off);
		check(h->value_off + h->value_len + 2 <= h->line_off + h->line_len);
		check(b[h->name_off + h->name_len] == ':');
		for (uint32_t k = 0; k < h->name_len; k++)
			check(is_tchar((unsigned char)b[h->name_off + k]));
		/* the whole line after the colon: value and the OWS around it */
		for (uint32_t k = h->name_off + h->name_len + 1; k < h->line_off + h->line_len - 2;
		     k++)
			check(is_value_byte((unsigned char)b[k]));
		check(h->value_len == 0 || (b[h->value_off] != ' ' && b[h->value_off] != '\t'));
		check(h->value_len == 0 || (b[h->value_off + h->value_len - 1] != ' ' &&
		                            b[h->value_off + h->value_len - 1] != '\t'));
		check(h->id < HTTP_H_COUNT && m->first[h->id] >= 0 && m->first[h->id] <= (int)i);
	}
	if (m->body == HTTP_BODY_CHUNKED)
		check(m->first[HTTP_H_CONTENT_LENGTH] < 0);
	if (m->body == HTTP_BODY_EOF)
		check(!is_req && !m->keep_alive);
	if (is_req && m->version_minor == 1)
		check(m->first[HTTP_H_HOST] >= 0);
}

static void
chunked_agree(const char *b, size_t n, uint64_t seed)
{
	struct http_chunked cw, cp;
	ssize_t rw, rp = 0;
	size_t off = 0;

	http_chunked_init(&cw);
	rw = http_chunked_scan(&cw, b, n);
	check(rw >= -1 && rw <= (ssize_t)n);
	if (rw >= 0 && !cw.done)
		check((size_t)rw == n);

	http_chunked_init(&cp);
	while (off < n) {
		size_t k = 1 + (size_t)(seed % 17);
		ssize_t r;

		seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
		if (k > n - off)
			k = n - off;
		r = http_chunked_scan(&cp, b + off, k);
		if (r < 0) {
			rp = -1;
			break;
		}
		off += (size_t)r;
		rp = (ssize_t)off;
		if (cp.done)
			break;
		check((size_t)r == k);
	}
	check(rp == rw);
	if (rw >= 0)
		check(cp.done == cw.done && cp.data_total == cw.data_total);
}

static void
run(const char *b, size_t n, int is_req, const struct http_limits *lim, enum http_method rm,
    uint64_t seed)
{
	int rc, rc2;
	size_t c1, c2;

	http_msg_reset(&whole);
	rc = parse(&whole, is_req, b, n, lim, rm);
	check(rc == HTTP_OK || rc == HTTP_AGAIN || rc == HTTP_E_BAD || rc == HTTP_E_URI_TOO_LONG ||
	      rc == HTTP_E_HEADERS_TOO_LARGE || rc == HTTP_E_NOT_IMPLEMENTED ||
	      rc == HTTP_E_VERSION);
	check(is_req || rc != HTTP_E_URI_TOO_LONG);
	if (rc == HTTP_OK)
		sane_msg(&whole, b, n, lim, is_req);
	if (rc == HTTP_AGAIN)
		check(n < lim->max_head);

	/* two or three pieces */
	c1 = n ? (size_t)(seed % (n + 1)) : 0;
	c2 = c1 + (n - c1 ? (size_t)((seed >> 32) % (n - c1 + 1)) : 0);
	http_msg_reset(&piece);
	rc2 = parse(&piece, is_req, b, c1, lim, rm);
	if (rc2 == HTTP_AGAIN)
		rc2 = parse(&piece, is_req, b, c2, lim, rm);
	if (rc2 == HTTP_AGAIN)
		rc2 = parse(&piece, is_req, b, n, lim, rm);
	check(rc2 == rc);
	if (rc == HTTP_OK)
		same_msg(&piece, &whole);

	/* one byte at a time, on short inputs */
	if (n <= 600) {
		http_msg_reset(&piece);
		rc2 = HTTP_AGAIN;
		for (size_t k = 0; k <= n && rc2 == HTTP_AGAIN; k++)
			rc2 = parse(&piece, is_req, b, k, lim, rm);
		check(rc2 == rc);
		if (rc == HTTP_OK)
			same_msg(&piece, &whole);
	}

	if (rc == HTTP_OK && whole.body == HTTP_BODY_CHUNKED)
		chunked_agree(b + whole.head_len, n - whole.head_len, seed);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const enum http_method rms[] = {HTTP_M_GET, HTTP_M_HEAD, HTTP_M_CONNECT,
	                                       HTTP_M_POST};
	const char *b = (const char *)data;
	uint64_t seed = mix(data, size);
	enum http_method rm = rms[seed % 4];
	size_t len;

	run(b, size, 1, &lim_def, rm, seed);
	run(b, size, 1, &lim_small, rm, seed >> 7);
	run(b, size, 0, &lim_def, rm, seed >> 13);
	run(b, size, 0, &lim_small, rm, seed >> 19);

	/* the helpers must cope with whatever a header value holds */
	http_msg_reset(&whole);
	if (http_parse_request(&whole, b, size, &lim_def) == HTTP_OK) {
		const char *v = http_header_get(&whole, b, HTTP_H_CONNECTION, &len);

		if (v)
			(void)http_list_has(v, len, "upgrade");
		(void)http_header_find(&whole, b, "x-custom", &len);
	}
	(void)http_list_has(b, size, "close");
	return 0;
}
