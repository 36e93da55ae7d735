/*
 * Unit tests for the HTTP/1.x head parser and the chunked scanner: one test (or more)
 * per rule in http.h, accept and reject sides, plus incremental, split-point and
 * pipelining behaviour.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "http.h"

static const struct http_limits lim_def = {32768, 100, 8192};

/* struct http_msg is ~7 KB: keep the ones the tests use off the stack. */
static struct http_msg M, M2;

static int
req_lim(struct http_msg *m, const char *s, size_t n, const struct http_limits *lim)
{
	http_msg_reset(m);
	return http_parse_request(m, s, n, lim);
}

static int
req(const char *s)
{
	return req_lim(&M, s, strlen(s), &lim_def);
}

static int
resp(const char *s, enum http_method rm)
{
	http_msg_reset(&M);
	return http_parse_response(&M, s, strlen(s), &lim_def, rm);
}

/* The parts of a parsed message that must not depend on how the bytes arrived. */
static void
assert_msg_equal(const struct http_msg *a, const struct http_msg *b)
{
	assert_int_equal(a->method, b->method);
	assert_int_equal(a->method_off, b->method_off);
	assert_int_equal(a->method_len, b->method_len);
	assert_int_equal(a->target_off, b->target_off);
	assert_int_equal(a->target_len, b->target_len);
	assert_int_equal(a->path_len, b->path_len);
	assert_int_equal(a->status, b->status);
	assert_int_equal(a->reason_off, b->reason_off);
	assert_int_equal(a->reason_len, b->reason_len);
	assert_int_equal(a->version_minor, b->version_minor);
	assert_int_equal(a->first_line_len, b->first_line_len);
	assert_int_equal(a->head_len, b->head_len);
	assert_int_equal(a->nhdr, b->nhdr);
	assert_memory_equal(a->hdr, b->hdr, a->nhdr * sizeof(a->hdr[0]));
	assert_memory_equal(a->first, b->first, sizeof(a->first));
	assert_int_equal(a->body, b->body);
	assert_int_equal(a->content_length, b->content_length);
	assert_int_equal(a->keep_alive, b->keep_alive);
	assert_int_equal(a->upgrade, b->upgrade);
	assert_int_equal(a->expect_continue, b->expect_continue);
}

static void
assert_str_at(const char *buf, uint32_t off, uint32_t len, const char *want)
{
	assert_int_equal(len, strlen(want));
	assert_memory_equal(buf + off, want, len);
}

/* ---------------------------------------------------------------------------------- */
/* Request line                                                                       */

static void
test_req_simple(void **state)
{
	const char *s = "GET /index.html HTTP/1.1\r\nHost: example.com\r\n\r\n";

	assert_int_equal(req(s), HTTP_OK);
	assert_int_equal(M.method, HTTP_M_GET);
	assert_str_at(s, M.method_off, M.method_len, "GET");
	assert_str_at(s, M.target_off, M.target_len, "/index.html");
	assert_int_equal(M.path_len, M.target_len);
	assert_int_equal(M.version_minor, 1);
	assert_int_equal(M.first_line_len, strlen("GET /index.html HTTP/1.1\r\n"));
	assert_int_equal(M.head_len, strlen(s));
	assert_int_equal(M.nhdr, 1);
	assert_int_equal(M.body, HTTP_BODY_NONE);
	assert_int_equal(M.keep_alive, 1);
	assert_int_equal(M.upgrade, 0);
	assert_int_equal(M.expect_continue, 0);
}

static void
test_req_methods(void **state)
{
	static const struct {
		const char *name;
		enum http_method m;
	} t[] = {
	    {"GET", HTTP_M_GET},        {"HEAD", HTTP_M_HEAD},     {"POST", HTTP_M_POST},
	    {"PUT", HTTP_M_PUT},        {"DELETE", HTTP_M_DELETE}, {"OPTIONS", HTTP_M_OPTIONS},
	    {"PATCH", HTTP_M_PATCH},    {"TRACE", HTTP_M_TRACE},   {"PURGE", HTTP_M_OTHER},
	    {"get", HTTP_M_OTHER},      {"Get", HTTP_M_OTHER},     {"GETS", HTTP_M_OTHER},
	    {"M-SEARCH", HTTP_M_OTHER}, {"X", HTTP_M_OTHER},
	};
	char buf[128];

	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		snprintf(buf, sizeof(buf), "%s / HTTP/1.1\r\nHost: h\r\n\r\n", t[i].name);
		assert_int_equal(req(buf), HTTP_OK);
		assert_int_equal(M.method, t[i].m);
		assert_int_equal(M.method_len, strlen(t[i].name));
	}
	assert_int_equal(req("CONNECT h:443 HTTP/1.1\r\nHost: h:443\r\n\r\n"), HTTP_OK);
	assert_int_equal(M.method, HTTP_M_CONNECT);
}

static void
test_req_method_invalid(void **state)
{
	assert_int_equal(req("GE(T / HTTP/1.1\r\nHost: h\r\n\r\n"), HTTP_E_BAD);
	assert_int_equal(req("GE\"T / HTTP/1.1\r\nHost: h\r\n\r\n"), HTTP_E_BAD);
	assert_int_equal(req(" / HTTP/1.1\r\nHost: h\r\n\r\n"), HTTP_E_BAD);
	assert_int_equal(req(" GET / HTTP/1.1\r\nHost: h\r\n\r\n"), HTTP_E_BAD);
	assert_int_equal(req("G\x01T / HTTP/1.1\r\nHost: h\r\n\r\n"), HTTP_E_BAD);
	/* longer than any real method: refused (it also bounds the early 414 slack) */
	assert_int_equal(req("ABCDEFGHIJKLMNOPQRSTUVWXYZABCDEFG / HTTP/1.1\r\nHost: h\r\n\r\n"),
	                 HTTP_E_BAD);
	assert_int_equal(req("ABCDEFGHIJKLMNOPQRSTUVWXYZABCDEF / HTTP/1.1\r\nHost: h\r\n\r\n"),
	                 HTTP_OK);
}

static void
test_req_single_spaces(void **state)
{
	assert_int_equal(req("GET  / HTTP/1.1\r\nHost: h\r\n\r\n"), HTTP_E_BAD);
	assert_int_equal(req("GET /  HTTP/1.1\r\nHost: h\r\n\r\n"), HTTP_E_BAD);
	assert_int_equal(req("GET\t/ HTTP/1.1\r\nHost: h\r\n\r\n"), HTTP_E_BAD);
	assert_int_equal(req("GET /\tHTTP/1.1\r\nHost: h\r\n\r\n"), HTTP_E_BAD);
	assert_int_equal(req("GET / HTTP/1.1 \r\nHost: h\r\n\r\n"), HTTP_E_BAD);
	assert_int_equal(req("GET / a HTTP/1.1\r\nHost: h\r\n\r\n"), HTTP_E_BAD);
	assert_int_equal(req("GET /\r\nHost: h\r\n\r\n"), HTTP_E_BAD); /* HTTP/0.9 */
	assert_int_equal(req("GET\r\nHost: h\r\n\r\n"), HTTP_E_BAD);
	assert_int_equal(req("\r\n\r\n"), HTTP_E_BAD);
}

static void
test_req_version(void **state)
{
	assert_int_equal(req("GET / HTTP/1.0\r\n\r\n"), HTTP_OK);
	assert_int_equal(M.version_minor, 0);
	assert_int_equal(req("GET / HTTP/2.0\r\nHost: h\r\n\r\n"), HTTP_E_VERSION);
	assert_int_equal(req("GET / HTTP/1.2\r\nHost: h\r\n\r\n"), HTTP_E_VERSION);
	assert_int_equal(req("GET / HTTP/0.9\r\nHost: h\r\n\r\n"), HTTP_E_VERSION);
	assert_int_equal(req("GET / HTTP/9.9\r\nHost: h\r\n\r\n"), HTTP_E_VERSION);
	assert_int_equal(req("GET / http/1.1\r\nHost: h\r\n\r\n"), HTTP_E_BAD);
	assert_int_equal(req("GET / HTTP/1.1x\r\nHost: h\r\n\r\n"), HTTP_E_BAD);
	assert_int_equal(req("GET / HTTP/11\r\nHost: h\r\n\r\n"), HTTP_E_BAD);
	assert_int_equal(req("GET / HTTP/1\r\nHost: h\r\n\r\n"), HTTP_E_BAD);
	assert_int_equal(req("GET / HTTP/1.10\r\nHost: h\r\n\r\n"), HTTP_E_BAD);
	assert_int_equal(req("GET / HTTX/1.1\r\nHost: h\r\n\r\n"), HTTP_E_BAD);
	assert_int_equal(req("GET / HTTP/a.1\r\nHost: h\r\n\r\n"), HTTP_E_BAD);
	/* the HTTP/2 connection preface is a version error, not a bad target */
	assert_int_equal(req("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), HTTP_E_VERSION);
}

static void
test_req_target_forms(void **state)
{
	assert_int_equal(req("OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n"), HTTP_OK);
	assert_int_equal(M.target_len, 1);
	assert_int_equal(req("GET * HTTP/1.1\r\nHost: h\r\n\r\n"), HTTP_E_BAD);
	assert_int_equal(req("OPTIONS *x HTTP/1.1\r\nHost: h\r\n\r\n"), HTTP_E_BAD);
	assert_int_equal(req("GET http://h/x?y HTTP/1.1\r\nHost: h\r\n\r\n"), HTTP_OK);
	assert_int_equal(M.path_len, strlen("http://h/x"));
	assert_int_equal(req("GET HTTPS://h HTTP/1.1\r\nHost: h\r\n\r\n"), HTTP_OK);
	assert_int_equal(req("GET http:/// HTTP/1.1\r\nHost: h\r\n\r\n"), HTTP_E_BAD);
	assert_int_equal(req("GET http:// HTTP/1.1\r\nHost: h\r\n\r\n"), HTTP_E_BAD);
	assert_int_equal(req("GET ftp://h/ HTTP/1.1\r\nHost: h\r\n\r\n"), HTTP_E_BAD);
	assert_int_equal(req("GET index.html HTTP/1.1\r\nHost: h\r\n\r\n"), HTTP_E_BAD);
	assert_int_equal(req("GET h:443 HTTP/1.1\r\nHost: h\r\n\r\n"), HTTP_E_BAD);
}

static void
test_req_connect_authority(void **state)
{
	assert_int_equal(req("CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n"),
	                 HTTP_OK);
	assert_int_equal(req("CONNECT [::1]:8443 HTTP/1.1\r\nHost: [::1]:8443\r\n\r\n"), HTTP_OK);
	assert_int_equal(req("CONNECT / HTTP/1.1\r\nHost: h\r\n\r\n"), HTTP_E_BAD);
	assert_int_equal(req("CONNECT h HTTP/1.1\r\nHost: h\r\n\r\n"), HTTP_E_BAD);
	assert_int_equal(req("CONNECT h: HTTP/1.1\r\nHost: h\r\n\r\n"), HTTP_E_BAD);
	assert_int_equal(req("CONNECT :443 HTTP/1.1\r\nHost: h\r\n\r\n"), HTTP_E_BAD);
	assert_int_equal(req("CONNECT h:44a HTTP/1.1\r\nHost: h\r\n\r\n"), HTTP_E_BAD);
	assert_int_equal(req("CONNECT h:123456 HTTP/1.1\r\nHost: h\r\n\r\n"), HTTP_E_BAD);
	assert_int_equal(req("CONNECT http://h:80 HTTP/1.1\r\nHost: h\r\n\r\n"), HTTP_E_BAD);
	assert_int_equal(req("CONNECT u@h:80 HTTP/1.1\r\nHost: h\r\n\r\n"), HTTP_E_BAD);
}

static void
test_req_target_bytes(void **state)
{
	static const char bad[] = {'\0', '\x01', '\t', '\x1f', '\x7f', '#', '\r'};
	char buf[64];

	for (size_t i = 0; i < sizeof(bad); i++) {
		int n = snprintf(buf, sizeof(buf), "GET /a?b HTTP/1.1\r\nHost: h\r\n\r\n");

		buf[6] = bad[i];
		assert_int_equal(req_lim(&M, buf, (size_t)n, &lim_def), HTTP_E_BAD);
	}
	/* raw UTF-8 paths are common in practice and harmless here (obs-text) */
	assert_int_equal(req("GET /caf\xc3\xa9 HTTP/1.1\r\nHost: h\r\n\r\n"), HTTP_OK);
	assert_int_equal(req("GET /a%20b;c=d HTTP/1.1\r\nHost: h\r\n\r\n"), HTTP_OK);
}

static void
test_req_path_len(void **state)
{
	const char *s = "GET /api/v1/users?id=3&x=?y HTTP/1.1\r\nHost: h\r\n\r\n";

	assert_int_equal(req(s), HTTP_OK);
	assert_int_equal(M.path_len, strlen("/api/v1/users"));
	assert_str_at(s, M.target_off, M.target_len, "/api/v1/users?id=3&x=?y");
	assert_int_equal(req("GET /? HTTP/1.1\r\nHost: h\r\n\r\n"), HTTP_OK);
	assert_int_equal(M.path_len, 1);
	assert_int_equal(M.target_len, 2);
	assert_int_equal(req("GET /plain HTTP/1.1\r\nHost: h\r\n\r\n"), HTTP_OK);
	assert_int_equal(M.path_len, 6);
}

static char *
request_with_target(size_t tlen, int complete)
{
	char *b = malloc(tlen + 64);
	size_t n = 0;

	assert_non_null(b);
	memcpy(b, "GET /", 5);
	n = 5;
	memset(b + n, 'a', tlen - 1);
	n += tlen - 1;
	if (complete)
		n += (size_t)snprintf(b + n, 64, " HTTP/1.1\r\nHost: h\r\n\r\n");
	b[n] = '\0';
	return b;
}

static void
test_req_uri_too_long(void **state)
{
	const struct http_limits lim = {65536, 100, 100};
	char *b;

	b = request_with_target(100, 1);
	assert_int_equal(req_lim(&M, b, strlen(b), &lim), HTTP_OK);
	assert_int_equal(M.target_len, 100);
	free(b);
	b = request_with_target(101, 1);
	assert_int_equal(req_lim(&M, b, strlen(b), &lim), HTTP_E_URI_TOO_LONG);
	free(b);
	/* incomplete, but already longer than any acceptable request line */
	b = request_with_target(300, 0);
	assert_int_equal(req_lim(&M, b, strlen(b), &lim), HTTP_E_URI_TOO_LONG);
	free(b);
	/* incomplete and still short enough: wait */
	b = request_with_target(90, 0);
	assert_int_equal(req_lim(&M, b, strlen(b), &lim), HTTP_AGAIN);
	free(b);
	/* the early check is tight: the longest valid line is never cut short */
	{
		char line[512];
		int n = snprintf(line, sizeof(line), "%s /%0*d HTTP/1.1\r\nHost: h\r\n\r\n",
		                 "ABCDEFGHIJKLMNOPQRSTUVWXYZABCDEF", 99, 0);
		size_t cr = (size_t)(strstr(line, "\r\n") - line);

		assert_int_equal(req_lim(&M, line, (size_t)n, &lim), HTTP_OK);
		assert_int_equal(M.target_len, 100);
		for (size_t k = 0; k <= cr + 1; k++)
			assert_int_equal(req_lim(&M, line, k, &lim), HTTP_AGAIN);
	}
}

static void
test_req_early_reject_garbage(void **state)
{
	/* a TLS ClientHello on the plain-text port: rejected at once, not after 32 KB */
	static const char tls[] = "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03";

	assert_int_equal(req_lim(&M, tls, sizeof(tls) - 1, &lim_def), HTTP_E_BAD);
	assert_int_equal(req("GET"), HTTP_AGAIN);
	assert_int_equal(req("GET /"), HTTP_AGAIN);
	assert_int_equal(req("GE T"), HTTP_AGAIN);
	assert_int_equal(req("G@T"), HTTP_E_BAD);
	assert_int_equal(req("ABCDEFGHIJKLMNOPQRSTUVWXYZABCDEFGHIJ"), HTTP_E_BAD);
}

static void
test_req_leading_crlf_rejected(void **state)
{
	/* the head starts at buf[0]: empty lines before it are not skipped (see http.c) */
	assert_int_equal(req("\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n"), HTTP_E_BAD);
	assert_int_equal(req("\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n"), HTTP_E_BAD);
	assert_int_equal(req("\n\nGET / HTTP/1.1\r\nHost: h\r\n\r\n"), HTTP_E_BAD);
	assert_int_equal(req("\r"), HTTP_E_BAD);
	assert_int_equal(req("GET / HTTP/1.1\r\nHost: h\r\n\r\n"), HTTP_OK);
	assert_int_equal(M.method_off, 0);
}

/* ---------------------------------------------------------------------------------- */
/* Header lines                                                                       */

static void
test_hdr_offsets_and_trim(void **state)
{
	const char *s = "GET / HTTP/1.1\r\n"
	                "Host:h\r\n"
	                "X-A: \t value with  spaces \t \r\n"
	                "X-Empty:\r\n"
	                "X-Blank:   \r\n"
	                "X-Tab:a\tb\r\n"
	                "\r\n";
	const struct http_header *h;

	assert_int_equal(req(s), HTTP_OK);
	assert_int_equal(M.nhdr, 5);
	h = &M.hdr[0];
	assert_str_at(s, h->name_off, h->name_len, "Host");
	assert_str_at(s, h->value_off, h->value_len, "h");
	assert_str_at(s, h->line_off, h->line_len, "Host:h\r\n");
	h = &M.hdr[1];
	assert_str_at(s, h->name_off, h->name_len, "X-A");
	assert_str_at(s, h->value_off, h->value_len, "value with  spaces");
	assert_str_at(s, h->line_off, h->line_len, "X-A: \t value with  spaces \t \r\n");
	assert_int_equal(M.hdr[2].value_len, 0);
	assert_int_equal(M.hdr[3].value_len, 0);
	assert_str_at(s, M.hdr[4].value_off, M.hdr[4].value_len, "a\tb");
	/* the lines tile the head: first line, header lines, blank line */
	assert_int_equal(M.hdr[0].line_off, M.first_line_len);
	for (int i = 1; i < M.nhdr; i++)
		assert_int_equal(M.hdr[i].line_off, M.hdr[i - 1].line_off + M.hdr[i - 1].line_len);
	assert_int_equal(M.hdr[4].line_off + M.hdr[4].line_len + 2, M.head_len);
}

static void
test_hdr_ids(void **state)
{
	static const struct {
		const char *name;
		enum http_hdr_id id;
	} t[] = {
	    {"connection", HTTP_H_CONNECTION},
	    {"KEEP-ALIVE", HTTP_H_KEEP_ALIVE},
	    {"Proxy-Connection", HTTP_H_PROXY_CONNECTION},
	    {"te", HTTP_H_TE},
	    {"Trailer", HTTP_H_TRAILER},
	    {"uPgRaDe", HTTP_H_UPGRADE},
	    {"Expect", HTTP_H_EXPECT},
	    {"X-Forwarded-For", HTTP_H_X_FORWARDED_FOR},
	    {"x-forwarded-proto", HTTP_H_X_FORWARDED_PROTO},
	    {"X-Request-ID", HTTP_H_X_REQUEST_ID},
	    {"X-User-Id", HTTP_H_X_USER_ID},
	    {"X-User-Tier", HTTP_H_X_USER_TIER},
	    {"Authorization", HTTP_H_AUTHORIZATION},
	    {"X-API-Key", HTTP_H_X_API_KEY},
	    {"Cache-Control", HTTP_H_CACHE_CONTROL},
	    {"Proxy-Authorization", HTTP_H_PROXY_AUTHORIZATION},
	    {"Proxy-Authenticate", HTTP_H_PROXY_AUTHENTICATE},
	    {"X-Custom", HTTP_H_OTHER},
	    {"Hosts", HTTP_H_OTHER},
	    {"Content-Lengthy", HTTP_H_OTHER},
	    {"X-User-Ie", HTTP_H_OTHER},
	    {"T", HTTP_H_OTHER},
	};
	char buf[256];

	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		snprintf(buf, sizeof(buf), "GET / HTTP/1.1\r\nHost: h\r\n%s: v\r\n\r\n", t[i].name);
		assert_int_equal(req(buf), HTTP_OK);
		assert_int_equal(M.nhdr, 2);
		assert_int_equal(M.hdr[0].id, HTTP_H_HOST);
		assert_int_equal(M.hdr[1].id, t[i].id);
		assert_int_equal(M.first[t[i].id], 1);
	}
	assert_int_equal(req("GET / HTTP/1.1\r\nHOST: h\r\nContent-length: 0\r\n\r\n"), HTTP_OK);
	assert_int_equal(M.hdr[0].id, HTTP_H_HOST);
	assert_int_equal(M.hdr[1].id, HTTP_H_CONTENT_LENGTH);
	assert_int_equal(req("POST / HTTP/1.1\r\nHost: h\r\ntransfer-ENCODING: chunked\r\n\r\n"),
	                 HTTP_OK);
	assert_int_equal(M.hdr[1].id, HTTP_H_TRANSFER_ENCODING);
}

static void
test_hdr_first_index(void **state)
{
	const char *s = "GET / HTTP/1.1\r\nHost: h\r\nX-A: 1\r\nAuthorization: a\r\n"
	                "X-B: 2\r\nAuthorization: b\r\n\r\n";

	assert_int_equal(req(s), HTTP_OK);
	assert_int_equal(M.first[HTTP_H_HOST], 0);
	assert_int_equal(M.first[HTTP_H_AUTHORIZATION], 2);
	assert_int_equal(M.first[HTTP_H_UPGRADE], -1);
	assert_int_equal(M.first[HTTP_H_CONTENT_LENGTH], -1);
	assert_int_equal(M.hdr[4].id, HTTP_H_AUTHORIZATION);
}

static void
test_hdr_obs_fold(void **state)
{
	assert_int_equal(req("GET / HTTP/1.1\r\nHost: h\r\nX-A: a\r\n b\r\n\r\n"), HTTP_E_BAD);
	assert_int_equal(req("GET / HTTP/1.1\r\nHost: h\r\nX-A: a\r\n\tb\r\n\r\n"), HTTP_E_BAD);
	/* whitespace between the start line and the first field (RFC 9112 2.2) */
	assert_int_equal(req("GET / HTTP/1.1\r\n Host: h\r\n\r\n"), HTTP_E_BAD);
}

static void
test_hdr_name_rules(void **state)
{
	assert_int_equal(req("GET / HTTP/1.1\r\nHost : h\r\n\r\n"), HTTP_E_BAD);
	assert_int_equal(req("GET / HTTP/1.1\r\nHost: h\r\nContent-Length\t: 5\r\n\r\n"),
	                 HTTP_E_BAD);
	assert_int_equal(req("GET / HTTP/1.1\r\nHost: h\r\n: v\r\n\r\n"), HTTP_E_BAD);
	assert_int_equal(req("GET / HTTP/1.1\r\nHost: h\r\nNoColon\r\n\r\n"), HTTP_E_BAD);
	assert_int_equal(req("GET / HTTP/1.1\r\nHost: h\r\nX(y): v\r\n\r\n"), HTTP_E_BAD);
	assert_int_equal(req("GET / HTTP/1.1\r\nHost: h\r\nX/y: v\r\n\r\n"), HTTP_E_BAD);
	assert_int_equal(req("GET / HTTP/1.1\r\nHost: h\r\nX\x01y: v\r\n\r\n"), HTTP_E_BAD);
	assert_int_equal(req("GET / HTTP/1.1\r\nHost: h\r\nX\xc3\xa9: v\r\n\r\n"), HTTP_E_BAD);
	assert_int_equal(req("GET / HTTP/1.1\r\nHost: h\r\nX!#$%&'*+-.^_`|~9: v\r\n\r\n"), HTTP_OK);
}

static void
test_hdr_value_bytes(void **state)
{
	static const char bad[] = {'\0', '\x01', '\x0b', '\x0c', '\x1f', '\x7f', '\r'};
	const char *tmpl = "GET / HTTP/1.1\r\nHost: h\r\nX-A: a?b\r\n\r\n";
	char buf[64];
	size_t n = strlen(tmpl);

	for (size_t i = 0; i < sizeof(bad); i++) {
		memcpy(buf, tmpl, n);
		buf[strchr(tmpl, '?') - tmpl] = bad[i];
		assert_int_equal(req_lim(&M, buf, n, &lim_def), HTTP_E_BAD);
	}
	/* a bad byte at every position of a long value (word-at-a-time screening) */
	for (size_t pos = 0; pos < 40; pos++) {
		for (size_t i = 0; i < sizeof(bad); i++) {
			char lb[128];
			int n2 = snprintf(lb, sizeof(lb),
			                  "GET / HTTP/1.1\r\nHost: h\r\nX-Long: "
			                  "%s\r\n\r\n",
			                  "0123456789abcdefghijklmnopqrstuvwxyzABCD");
			size_t at = (size_t)(strstr(lb, "0123") - lb) + pos;

			lb[at] = bad[i];
			assert_int_equal(req_lim(&M, lb, (size_t)n2, &lim_def), HTTP_E_BAD);
			lb[at] = '\t';
			assert_int_equal(req_lim(&M, lb, (size_t)n2, &lim_def), HTTP_OK);
		}
	}
	assert_int_equal(req("GET / HTTP/1.1\r\nHost: h\r\nX-A: a\tb\r\n\r\n"), HTTP_OK);
	assert_int_equal(req("GET / HTTP/1.1\r\nHost: h\r\nX-A: caf\xc3\xa9\xff\r\n\r\n"), HTTP_OK);
	assert_int_equal(req("GET / HTTP/1.1\r\nHost: h\r\nX-A: \"q\" (c) <>{}\r\n\r\n"), HTTP_OK);
}

static void
test_bare_lf_rejected(void **state)
{
	assert_int_equal(req("GET / HTTP/1.1\nHost: h\r\n\r\n"), HTTP_E_BAD);
	assert_int_equal(req("GET / HTTP/1.1\r\nHost: h\n\r\n"), HTTP_E_BAD);
	assert_int_equal(req("GET / HTTP/1.1\r\nHost: h\r\n\n"), HTTP_E_BAD);
	assert_int_equal(req("GET / HTTP/1.1\nHost: h\n\n"), HTTP_E_BAD);
	/* rejected as soon as the LF arrives, not when the head would end */
	assert_int_equal(req("GET / HTTP/1.1\r\nHost: h\nX"), HTTP_E_BAD);
}

static void
test_bare_cr_rejected(void **state)
{
	assert_int_equal(req("GET / HTTP/1.1\r\nHost: h\rX-A: b\r\n\r\n"), HTTP_E_BAD);
	assert_int_equal(req("GET / HTTP/1.1\r\nHost: h\r\r\n\r\n"), HTTP_E_BAD);
	assert_int_equal(req("GET / HTTP/1.1\r\r\nHost: h\r\n\r\n"), HTTP_E_BAD);
	assert_int_equal(req("GET /\r HTTP/1.1\r\nHost: h\r\n\r\n"), HTTP_E_BAD);
	assert_int_equal(req("GET / HTTP/1.1\r\nHost: h\r\n\r\r\n"), HTTP_E_BAD);
}

static char *
request_with_headers(int n)
{
	size_t cap = 64 + (size_t)n * 32;
	char *b = malloc(cap);
	size_t off;

	assert_non_null(b);
	off = (size_t)snprintf(b, cap, "GET / HTTP/1.1\r\nHost: h\r\n");
	for (int i = 1; i < n; i++)
		off += (size_t)snprintf(b + off, cap - off, "X-H%d: %d\r\n", i, i);
	snprintf(b + off, cap - off, "\r\n");
	return b;
}

static void
test_max_headers(void **state)
{
	const struct http_limits lim = {65536, 10, 8192};
	const struct http_limits big = {65536, 1000, 8192};
	char *b;

	b = request_with_headers(10);
	assert_int_equal(req_lim(&M, b, strlen(b), &lim), HTTP_OK);
	assert_int_equal(M.nhdr, 10);
	free(b);
	b = request_with_headers(11);
	assert_int_equal(req_lim(&M, b, strlen(b), &lim), HTTP_E_HEADERS_TOO_LARGE);
	free(b);
	/* a limit above the array size is clamped to HTTP_MAX_HEADERS */
	b = request_with_headers(HTTP_MAX_HEADERS);
	assert_int_equal(req_lim(&M, b, strlen(b), &big), HTTP_OK);
	free(b);
	b = request_with_headers(HTTP_MAX_HEADERS + 1);
	assert_int_equal(req_lim(&M, b, strlen(b), &big), HTTP_E_HEADERS_TOO_LARGE);
	free(b);
}

static void
test_max_head(void **state)
{
	const char *s = "GET / HTTP/1.1\r\nHost: h\r\nX-A: 0123456789\r\n\r\n";
	uint32_t n = (uint32_t)strlen(s);
	struct http_limits lim = {n, 100, 8192};

	assert_int_equal(req_lim(&M, s, n, &lim), HTTP_OK);
	lim.max_head = n - 1;
	assert_int_equal(req_lim(&M, s, n, &lim), HTTP_E_HEADERS_TOO_LARGE);
	/* before the head is complete: as soon as max_head bytes hold no end */
	assert_int_equal(req_lim(&M, s, n - 1, &lim), HTTP_E_HEADERS_TOO_LARGE);
	assert_int_equal(req_lim(&M, s, n - 2, &lim), HTTP_AGAIN);
	/* extra bytes after a head that fits do not count */
	{
		char buf[256];

		snprintf(buf, sizeof(buf), "%sGET / HTTP/1.1\r\n", s);
		lim.max_head = n;
		assert_int_equal(req_lim(&M, buf, strlen(buf), &lim), HTTP_OK);
		assert_int_equal(M.head_len, n);
	}
}

static void
test_max_head_endless_header(void **state)
{
	const struct http_limits lim = {1024, 100, 8192};
	size_t cap = 4096;
	char *b = malloc(cap);
	int rc = HTTP_AGAIN;
	size_t len;

	assert_non_null(b);
	len = (size_t)snprintf(b, cap, "GET / HTTP/1.1\r\nHost: h\r\nX-Big: ");
	memset(b + len, 'x', cap - len);
	http_msg_reset(&M);
	for (; len <= cap && rc == HTTP_AGAIN; len += 7)
		rc = http_parse_request(&M, b, len, &lim);
	assert_int_equal(rc, HTTP_E_HEADERS_TOO_LARGE);
	assert_true(len - 7 >= 1024 && len - 7 < 1024 + 7);
	free(b);
}

static void
test_null_limits_defaults(void **state)
{
	char *b = request_with_target(8192, 1);

	http_msg_reset(&M);
	assert_int_equal(http_parse_request(&M, b, strlen(b), NULL), HTTP_OK);
	free(b);
	b = request_with_target(8193, 1);
	http_msg_reset(&M);
	assert_int_equal(http_parse_request(&M, b, strlen(b), NULL), HTTP_E_URI_TOO_LONG);
	free(b);
}

/* ---------------------------------------------------------------------------------- */
/* Host                                                                               */

static void
test_host_rules(void **state)
{
	assert_int_equal(req("GET / HTTP/1.1\r\n\r\n"), HTTP_E_BAD);
	assert_int_equal(req("GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n"), HTTP_E_BAD);
	assert_int_equal(req("GET / HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n"), HTTP_E_BAD);
	assert_int_equal(req("GET / HTTP/1.0\r\n\r\n"), HTTP_OK);
	assert_int_equal(req("GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n"), HTTP_E_BAD);
	assert_int_equal(req("GET / HTTP/1.1\r\nHost: a b\r\n\r\n"), HTTP_E_BAD);
	assert_int_equal(req("GET / HTTP/1.1\r\nHost: a, b\r\n\r\n"), HTTP_E_BAD);
	assert_int_equal(req("GET / HTTP/1.1\r\nHost: a/b\r\n\r\n"), HTTP_E_BAD);
	assert_int_equal(req("GET / HTTP/1.1\r\nHost: u@a\r\n\r\n"), HTTP_E_BAD);
	assert_int_equal(req("GET / HTTP/1.1\r\nHost: \r\n\r\n"), HTTP_OK); /* RFC 9110 7.2 */
	assert_int_equal(req("GET / HTTP/1.1\r\nHost: [2001:db8::1]:8080\r\n\r\n"), HTTP_OK);
	assert_int_equal(req("GET / HTTP/1.1\r\nHost: api.example.com:443\r\n\r\n"), HTTP_OK);
}

/* ---------------------------------------------------------------------------------- */
/* Framing                                                                            */

static void
test_cl_simple(void **state)
{
	assert_int_equal(req("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 42\r\n\r\n"), HTTP_OK);
	assert_int_equal(M.body, HTTP_BODY_LENGTH);
	assert_int_equal(M.content_length, 42);
	assert_int_equal(req("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n"), HTTP_OK);
	assert_int_equal(M.body, HTTP_BODY_LENGTH);
	assert_int_equal(M.content_length, 0);
	assert_int_equal(req("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 007\r\n\r\n"), HTTP_OK);
	assert_int_equal(M.content_length, 7);
}

static void
test_cl_not_digits(void **state)
{
	static const char *bad[] = {"+5", "-5", "5a", "0x5", "5 5", "", "5.0", "\xd9\xa5", "5;"};
	char buf[128];

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		snprintf(buf, sizeof(buf),
		         "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: %s\r\n\r\n", bad[i]);
		assert_int_equal(req(buf), HTTP_E_BAD);
	}
}

static void
test_cl_duplicates(void **state)
{
	assert_int_equal(req("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n"
	                     "Content-Length: 5\r\n\r\n"),
	                 HTTP_OK);
	assert_int_equal(M.content_length, 5);
	assert_int_equal(req("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n"
	                     "Content-Length: 6\r\n\r\n"),
	                 HTTP_E_BAD);
	assert_int_equal(req("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5, 5\r\n\r\n"),
	                 HTTP_OK);
	assert_int_equal(M.content_length, 5);
	assert_int_equal(req("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5,5 ,\t5\r\n\r\n"),
	                 HTTP_OK);
	assert_int_equal(req("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5, 6\r\n\r\n"),
	                 HTTP_E_BAD);
	assert_int_equal(req("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5,\r\n\r\n"),
	                 HTTP_E_BAD);
	assert_int_equal(req("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: ,5\r\n\r\n"),
	                 HTTP_E_BAD);
	assert_int_equal(req("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5, 5\r\n"
	                     "Content-Length: 6\r\n\r\n"),
	                 HTTP_E_BAD);
}

static void
test_cl_overflow(void **state)
{
	assert_int_equal(req("POST / HTTP/1.1\r\nHost: h\r\n"
	                     "Content-Length: 9223372036854775807\r\n\r\n"),
	                 HTTP_OK);
	assert_int_equal(M.content_length, INT64_MAX);
	assert_int_equal(req("POST / HTTP/1.1\r\nHost: h\r\n"
	                     "Content-Length: 9223372036854775808\r\n\r\n"),
	                 HTTP_E_BAD);
	assert_int_equal(req("POST / HTTP/1.1\r\nHost: h\r\n"
	                     "Content-Length: 18446744073709551616\r\n\r\n"),
	                 HTTP_E_BAD);
	assert_int_equal(req("POST / HTTP/1.1\r\nHost: h\r\n"
	                     "Content-Length: 99999999999999999999999999999999\r\n\r\n"),
	                 HTTP_E_BAD);
}

static void
test_te_chunked(void **state)
{
	assert_int_equal(req("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"),
	                 HTTP_OK);
	assert_int_equal(M.body, HTTP_BODY_CHUNKED);
	assert_int_equal(req("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: ChUnKeD \r\n\r\n"),
	                 HTTP_OK);
	assert_int_equal(M.body, HTTP_BODY_CHUNKED);
}

static void
test_te_with_cl_rejected(void **state)
{
	assert_int_equal(req("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n"
	                     "Content-Length: 5\r\n\r\n"),
	                 HTTP_E_BAD);
	assert_int_equal(req("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n"
	                     "Transfer-Encoding: chunked\r\n\r\n"),
	                 HTTP_E_BAD);
	assert_int_equal(req("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n"
	                     "Transfer-Encoding: gzip, chunked\r\n\r\n"),
	                 HTTP_E_BAD);
}

static void
test_te_not_chunked(void **state)
{
	static const char *v[] = {"gzip, chunked", "chunked, chunked", "identity", "gzip",
	                          "chunked;q=1",   "chunked, ",        "xchunked", "\"chunked\""};
	char buf[160];

	for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
		snprintf(buf, sizeof(buf),
		         "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: %s\r\n\r\n", v[i]);
		assert_int_equal(req(buf), HTTP_E_NOT_IMPLEMENTED);
	}
	/* the same coding listed twice over two lines */
	assert_int_equal(req("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n"
	                     "Transfer-Encoding: chunked\r\n\r\n"),
	                 HTTP_E_NOT_IMPLEMENTED);
	assert_int_equal(req("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding:\r\n\r\n"),
	                 HTTP_E_BAD);
}

static void
test_te_http10_rejected(void **state)
{
	assert_int_equal(req("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"), HTTP_E_BAD);
	assert_int_equal(req("POST / HTTP/1.0\r\nHost: h\r\nTransfer-Encoding: gzip\r\n\r\n"),
	                 HTTP_E_BAD);
}

static void
test_keep_alive(void **state)
{
	assert_int_equal(req("GET / HTTP/1.1\r\nHost: h\r\n\r\n"), HTTP_OK);
	assert_int_equal(M.keep_alive, 1);
	assert_int_equal(req("GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"), HTTP_OK);
	assert_int_equal(M.keep_alive, 0);
	assert_int_equal(req("GET / HTTP/1.1\r\nHost: h\r\nConnection: foo, CLOSE\r\n\r\n"),
	                 HTTP_OK);
	assert_int_equal(M.keep_alive, 0);
	assert_int_equal(req("GET / HTTP/1.1\r\nHost: h\r\nConnection: closed\r\n\r\n"), HTTP_OK);
	assert_int_equal(M.keep_alive, 1);
	assert_int_equal(req("GET / HTTP/1.0\r\n\r\n"), HTTP_OK);
	assert_int_equal(M.keep_alive, 0);
	assert_int_equal(req("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n"), HTTP_OK);
	assert_int_equal(M.keep_alive, 1);
	assert_int_equal(
	    req("GET / HTTP/1.0\r\nConnection: keep-alive\r\nConnection: close\r\n\r\n"), HTTP_OK);
	assert_int_equal(M.keep_alive, 0);
}

static void
test_upgrade(void **state)
{
	assert_int_equal(req("GET /ws HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, Upgrade\r\n"
	                     "Upgrade: websocket\r\n\r\n"),
	                 HTTP_OK);
	assert_int_equal(M.upgrade, 1);
	assert_int_equal(req("GET /ws HTTP/1.1\r\nHost: h\r\nConnection: upgrade\r\n\r\n"),
	                 HTTP_OK);
	assert_int_equal(M.upgrade, 0);
	assert_int_equal(req("GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n\r\n"), HTTP_OK);
	assert_int_equal(M.upgrade, 0);
	assert_int_equal(req("GET /ws HTTP/1.0\r\nConnection: upgrade\r\n"
	                     "Upgrade: websocket\r\n\r\n"),
	                 HTTP_OK);
	assert_int_equal(M.upgrade, 0);
}

static void
test_expect_continue(void **state)
{
	assert_int_equal(req("PUT / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\n"
	                     "Content-Length: 3\r\n\r\n"),
	                 HTTP_OK);
	assert_int_equal(M.expect_continue, 1);
	assert_int_equal(req("PUT / HTTP/1.1\r\nHost: h\r\nExpect: 100-Continue\r\n\r\n"), HTTP_OK);
	assert_int_equal(M.expect_continue, 1);
	assert_int_equal(req("PUT / HTTP/1.1\r\nHost: h\r\nExpect: 200-ok\r\n\r\n"), HTTP_OK);
	assert_int_equal(M.expect_continue, 0);
	assert_int_equal(req("PUT / HTTP/1.0\r\nExpect: 100-continue\r\n\r\n"), HTTP_OK);
	assert_int_equal(M.expect_continue, 0);
}

/* ---------------------------------------------------------------------------------- */
/* Incremental and pipelined                                                          */

static const char *const samples[] = {
    "GET /a/b?c=d HTTP/1.1\r\nHost: example.com\r\nUser-Agent: t\r\nAccept: */*\r\n"
    "Connection: keep-alive, Upgrade\r\nUpgrade: h2c\r\n\r\n",
    "POST /submit HTTP/1.1\r\nHost: h\r\nContent-Length: 5, 5\r\n"
    "Expect: 100-continue\r\n\r\nhello",
    "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    "GET / HTTP/1.1\r\nHost: h\r\nX-A: a\r\n b\r\n\r\n",
    "GET / HTTP/1.1\r\nHost: h\nX: y\r\n\r\n",
    "GET / HTTP/2.0\r\nHost: h\r\n\r\n",
    "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\n\r\n",
    "GET /aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa HTTP/1.1\r\n\r\n",
    "GET /\x01 HTTP/1.1\r\nHost: h\r\n\r\n",
    "GE@ / HTTP/1.1\r\n\r\n",
    "\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n",
};

static const struct http_limits lim_small = {200, 4, 64};

static int
parse_pieces(struct http_msg *m, const char *s, size_t n, const size_t *cuts, size_t ncut,
             const struct http_limits *lim)
{
	int rc = HTTP_AGAIN;

	http_msg_reset(m);
	for (size_t k = 0; k < ncut && rc == HTTP_AGAIN; k++)
		rc = http_parse_request(m, s, cuts[k], lim);
	if (rc == HTTP_AGAIN)
		rc = http_parse_request(m, s, n, lim);
	return rc;
}

static void
test_incremental_byte_at_a_time(void **state)
{
	const struct http_limits *lims[] = {&lim_def, &lim_small};

	for (size_t l = 0; l < 2; l++) {
		for (size_t i = 0; i < sizeof(samples) / sizeof(samples[0]); i++) {
			const char *s = samples[i];
			size_t n = strlen(s);
			int whole = req_lim(&M2, s, n, lims[l]), rc = HTTP_AGAIN;

			http_msg_reset(&M);
			for (size_t k = 1; k <= n && rc == HTTP_AGAIN; k++) {
				rc = http_parse_request(&M, s, k, lims[l]);
				if (rc == HTTP_AGAIN)
					assert_true(M.scan_off <= k);
			}
			assert_int_equal(rc, whole);
			if (rc == HTTP_OK)
				assert_msg_equal(&M, &M2);
		}
	}
}

static void
test_incremental_every_split(void **state)
{
	const struct http_limits *lims[] = {&lim_def, &lim_small};

	for (size_t l = 0; l < 2; l++) {
		for (size_t i = 0; i < sizeof(samples) / sizeof(samples[0]); i++) {
			const char *s = samples[i];
			size_t n = strlen(s);
			int whole = req_lim(&M2, s, n, lims[l]);

			for (size_t a = 0; a <= n; a++) {
				for (size_t b = a; b <= n; b += 7) {
					size_t cuts[2] = {a, b};
					int rc = parse_pieces(&M, s, n, cuts, 2, lims[l]);

					assert_int_equal(rc, whole);
					if (rc == HTTP_OK)
						assert_msg_equal(&M, &M2);
				}
			}
		}
	}
}

static void
test_incremental_again_then_ok(void **state)
{
	const char *s = "GET / HTTP/1.1\r\nHost: h\r\n\r\n";
	size_t n = strlen(s);

	http_msg_reset(&M);
	assert_int_equal(http_parse_request(&M, s, n - 1, &lim_def), HTTP_AGAIN);
	assert_int_equal(M.scan_off, n - 1);
	assert_int_equal(http_parse_request(&M, s, n, &lim_def), HTTP_OK);
	/* calling again after OK is harmless */
	assert_int_equal(http_parse_request(&M, s, n, &lim_def), HTTP_OK);
	assert_int_equal(M.head_len, n);
	/* the buffer may move between calls (offsets, not pointers, are kept) */
	{
		char *copy = malloc(n);

		assert_non_null(copy);
		http_msg_reset(&M);
		assert_int_equal(http_parse_request(&M, s, 10, &lim_def), HTTP_AGAIN);
		memcpy(copy, s, n);
		assert_int_equal(http_parse_request(&M, copy, n, &lim_def), HTTP_OK);
		free(copy);
	}
	assert_int_equal(req(""), HTTP_AGAIN);
}

static void
test_pipelined(void **state)
{
	const char *s = "GET /one HTTP/1.1\r\nHost: h\r\n\r\n"
	                "POST /two HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc"
	                "GET /three HTTP/1.1\r\nHost: h\r\n\r\n";
	size_t n = strlen(s), off = 0;

	assert_int_equal(req_lim(&M, s, n, &lim_def), HTTP_OK);
	assert_str_at(s, M.target_off, M.target_len, "/one");
	off += M.head_len;

	assert_int_equal(req_lim(&M, s + off, n - off, &lim_def), HTTP_OK);
	assert_str_at(s + off, M.target_off, M.target_len, "/two");
	assert_int_equal(M.body, HTTP_BODY_LENGTH);
	off += M.head_len + M.content_length;

	assert_int_equal(req_lim(&M, s + off, n - off, &lim_def), HTTP_OK);
	assert_str_at(s + off, M.target_off, M.target_len, "/three");
	off += M.head_len;
	assert_int_equal(off, n);
}

static void
test_pipelined_chunked(void **state)
{
	const char *s = "POST /a HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
	                "3\r\nabc\r\n0\r\n\r\n"
	                "GET /b HTTP/1.1\r\nHost: h\r\n\r\n";
	size_t n = strlen(s), off;
	struct http_chunked c;
	ssize_t r;

	assert_int_equal(req_lim(&M, s, n, &lim_def), HTTP_OK);
	assert_int_equal(M.body, HTTP_BODY_CHUNKED);
	off = M.head_len;
	http_chunked_init(&c);
	r = http_chunked_scan(&c, s + off, n - off);
	assert_int_equal(r, strlen("3\r\nabc\r\n0\r\n\r\n"));
	assert_int_equal(c.done, 1);
	off += (size_t)r;
	assert_int_equal(req_lim(&M, s + off, n - off, &lim_def), HTTP_OK);
	assert_str_at(s + off, M.target_off, M.target_len, "/b");
}

/* ---------------------------------------------------------------------------------- */
/* Responses                                                                          */

static void
test_resp_length(void **state)
{
	const char *s = "HTTP/1.1 200 OK\r\nContent-Length: 12\r\nContent-Type: text/plain\r\n\r\n";

	assert_int_equal(resp(s, HTTP_M_GET), HTTP_OK);
	assert_int_equal(M.status, 200);
	assert_str_at(s, M.reason_off, M.reason_len, "OK");
	assert_int_equal(M.version_minor, 1);
	assert_int_equal(M.body, HTTP_BODY_LENGTH);
	assert_int_equal(M.content_length, 12);
	assert_int_equal(M.keep_alive, 1);
	assert_int_equal(M.head_len, strlen(s));
	assert_int_equal(M.nhdr, 2);
}

static void
test_resp_chunked(void **state)
{
	assert_int_equal(resp("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", HTTP_M_GET),
	                 HTTP_OK);
	assert_int_equal(M.body, HTTP_BODY_CHUNKED);
	assert_int_equal(M.keep_alive, 1);
}

static void
test_resp_eof(void **state)
{
	assert_int_equal(resp("HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n\r\n", HTTP_M_GET),
	                 HTTP_OK);
	assert_int_equal(M.body, HTTP_BODY_EOF);
	assert_int_equal(M.keep_alive, 0); /* the close is the framing */
	assert_int_equal(resp("HTTP/1.0 200 OK\r\n\r\n", HTTP_M_POST), HTTP_OK);
	assert_int_equal(M.body, HTTP_BODY_EOF);
	assert_int_equal(M.version_minor, 0);
}

static void
test_resp_no_body_statuses(void **state)
{
	static const char *const r[] = {
	    "HTTP/1.1 100 Continue\r\n\r\n",
	    "HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
	    "HTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\n",
	    "HTTP/1.1 204 No Content\r\n\r\n",
	    "HTTP/1.1 204 No Content\r\nContent-Length: 10\r\n\r\n",
	    "HTTP/1.1 304 Not Modified\r\nContent-Length: 100\r\n\r\n",
	    "HTTP/1.1 304 Not Modified\r\n\r\n",
	};

	for (size_t i = 0; i < sizeof(r) / sizeof(r[0]); i++) {
		assert_int_equal(resp(r[i], HTTP_M_GET), HTTP_OK);
		assert_int_equal(M.body, HTTP_BODY_NONE);
	}
	assert_int_equal(resp(r[1], HTTP_M_GET), HTTP_OK);
	assert_int_equal(M.upgrade, 1);
	assert_int_equal(M.status, 101);
}

static void
test_resp_head_and_connect(void **state)
{
	assert_int_equal(resp("HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n", HTTP_M_HEAD),
	                 HTTP_OK);
	assert_int_equal(M.body, HTTP_BODY_NONE);
	assert_int_equal(M.content_length, 1234); /* still reported: the GET's length */
	assert_int_equal(resp("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", HTTP_M_HEAD),
	                 HTTP_OK);
	assert_int_equal(M.body, HTTP_BODY_NONE);
	assert_int_equal(resp("HTTP/1.1 200 Connection established\r\n\r\n", HTTP_M_CONNECT),
	                 HTTP_OK);
	assert_int_equal(M.body, HTTP_BODY_NONE);
	assert_int_equal(resp("HTTP/1.1 407 Auth\r\nContent-Length: 3\r\n\r\n", HTTP_M_CONNECT),
	                 HTTP_OK);
	assert_int_equal(M.body, HTTP_BODY_LENGTH);
	assert_int_equal(resp("HTTP/1.1 502 Bad\r\n\r\n", HTTP_M_CONNECT), HTTP_OK);
	assert_int_equal(M.body, HTTP_BODY_EOF);
}

static void
test_resp_status_line(void **state)
{
	static const char *const bad[] = {
	    "HTTP/1.1 99 X\r\n\r\n",     "HTTP/1.1 600 X\r\n\r\n",
	    "HTTP/1.1 099 X\r\n\r\n",    "HTTP/1.1 20 X\r\n\r\n",
	    "HTTP/1.1 2000 X\r\n\r\n",   "HTTP/1.1 abc X\r\n\r\n",
	    "HTTP/1.1  200 X\r\n\r\n",   "HTTP/1.1\t200 X\r\n\r\n",
	    "HTTP/1.1 200\tX\r\n\r\n",   "HTTP/1.1 200 O\x01K\r\n\r\n",
	    "HTTP/1.1 200 OK\r\r\n\r\n", "http/1.1 200 OK\r\n\r\n",
	    "HTTP/1.1\r\n\r\n",          "\r\nHTTP/1.1 200 OK\r\n\r\n",
	    "HTTP/1.1 200 OK\n\r\n",     "HTTP/1.1 -20 X\r\n\r\n",
	};

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_int_equal(resp(bad[i], HTTP_M_GET), HTTP_E_BAD);
	assert_int_equal(resp("HTTP/1.1 200 \r\nContent-Length: 0\r\n\r\n", HTTP_M_GET), HTTP_OK);
	assert_int_equal(M.reason_len, 0);
	assert_int_equal(resp("HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n", HTTP_M_GET), HTTP_OK);
	assert_int_equal(M.reason_len, 0);
	assert_int_equal(M.status, 200);
	assert_int_equal(resp("HTTP/1.1 599 Whatever it is\t(x)\r\n\r\n", HTTP_M_GET), HTTP_OK);
	assert_int_equal(M.status, 599);
	assert_int_equal(resp("HTTP/1.1 100 Continue\r\n\r\n", HTTP_M_GET), HTTP_OK);
	assert_int_equal(M.status, 100);
}

static void
test_resp_version(void **state)
{
	assert_int_equal(resp("HTTP/2.0 200 OK\r\n\r\n", HTTP_M_GET), HTTP_E_VERSION);
	assert_int_equal(resp("HTTP/1.2 200 OK\r\n\r\n", HTTP_M_GET), HTTP_E_VERSION);
	assert_int_equal(resp("HTTP/2 200 OK\r\n\r\n", HTTP_M_GET), HTTP_E_BAD);
	assert_int_equal(resp("HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n", HTTP_M_GET), HTTP_OK);
	assert_int_equal(M.keep_alive, 0);
	assert_int_equal(
	    resp("HTTP/1.0 200 OK\r\nContent-Length: 1\r\nConnection: keep-alive\r\n\r\n",
	         HTTP_M_GET),
	    HTTP_OK);
	assert_int_equal(M.keep_alive, 1);
}

static void
test_resp_framing_rejects(void **state)
{
	/* TE+CL: the RFC lets TE win; we refuse the pair (documented in http.c) */
	assert_int_equal(resp("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n"
	                      "Content-Length: 5\r\n\r\n",
	                      HTTP_M_GET),
	                 HTTP_E_BAD);
	assert_int_equal(
	    resp("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", HTTP_M_GET),
	    HTTP_E_BAD);
	assert_int_equal(resp("HTTP/1.1 200 OK\r\nTransfer-Encoding: identity\r\n\r\n", HTTP_M_GET),
	                 HTTP_E_BAD);
	assert_int_equal(resp("HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", HTTP_M_GET),
	                 HTTP_E_BAD);
	assert_int_equal(
	    resp("HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", HTTP_M_GET),
	    HTTP_E_BAD);
	assert_int_equal(resp("HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", HTTP_M_GET),
	                 HTTP_E_BAD);
	assert_int_equal(resp("HTTP/1.1 200 OK\r\nX: a\r\n b\r\n\r\n", HTTP_M_GET), HTTP_E_BAD);
	assert_int_equal(resp("HTTP/1.1 200 OK\r\nX : a\r\n\r\n", HTTP_M_GET), HTTP_E_BAD);
}

static void
test_resp_connection(void **state)
{
	assert_int_equal(
	    resp("HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", HTTP_M_GET),
	    HTTP_OK);
	assert_int_equal(M.keep_alive, 0);
	/* no Host needed; Expect is a request field */
	assert_int_equal(
	    resp("HTTP/1.1 200 OK\r\nExpect: 100-continue\r\nContent-Length: 0\r\n\r\n",
	         HTTP_M_GET),
	    HTTP_OK);
	assert_int_equal(M.expect_continue, 0);
	assert_int_equal(M.keep_alive, 1);
}

static void
test_resp_incremental(void **state)
{
	const char *s = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: b\r\n\r\nhello";
	size_t n = strlen(s);
	int rc = HTTP_AGAIN;

	assert_int_equal(resp(s, HTTP_M_GET), HTTP_OK);
	memcpy(&M2, &M, sizeof(M));
	http_msg_reset(&M);
	for (size_t k = 0; k <= n && rc == HTTP_AGAIN; k++)
		rc = http_parse_response(&M, s, k, &lim_def, HTTP_M_GET);
	assert_int_equal(rc, HTTP_OK);
	assert_msg_equal(&M, &M2);
}

/* ---------------------------------------------------------------------------------- */
/* Helpers                                                                            */

static void
test_header_get_find(void **state)
{
	const char *s = "GET / HTTP/1.1\r\nHost: example.com\r\nX-Custom-Thing: abc \r\n"
	                "Authorization: Bearer t\r\nx-custom-thing: second\r\n\r\n";
	const char *v;
	size_t n = 0;

	assert_int_equal(req(s), HTTP_OK);
	v = http_header_get(&M, s, HTTP_H_HOST, &n);
	assert_non_null(v);
	assert_int_equal(n, 11);
	assert_memory_equal(v, "example.com", 11);
	v = http_header_get(&M, s, HTTP_H_AUTHORIZATION, &n);
	assert_non_null(v);
	assert_memory_equal(v, "Bearer t", n);
	assert_null(http_header_get(&M, s, HTTP_H_X_API_KEY, &n));
	assert_null(http_header_get(&M, s, HTTP_H_OTHER, &n));
	assert_null(http_header_get(&M, s, HTTP_H_COUNT, &n));

	v = http_header_find(&M, s, "x-CUSTOM-thing", &n);
	assert_non_null(v);
	assert_int_equal(n, 3);
	assert_memory_equal(v, "abc", 3);
	v = http_header_find(&M, s, "authorization", &n);
	assert_non_null(v);
	assert_memory_equal(v, "Bearer t", n);
	assert_null(http_header_find(&M, s, "X-Custom", &n));
	assert_null(http_header_find(&M, s, "X-Custom-Thingy", &n));
	assert_null(http_header_find(&M, s, "", &n));
}

static void
test_list_has(void **state)
{
	assert_true(http_list_has("close", 5, "close"));
	assert_true(http_list_has("Keep-Alive, Upgrade", 19, "upgrade"));
	assert_true(http_list_has(" ,, a ,\tUPGRADE\t, b", 19, "upgrade"));
	assert_false(http_list_has("upgrades", 8, "upgrade"));
	assert_false(http_list_has("up grade", 8, "upgrade"));
	assert_false(http_list_has("", 0, "close"));
	assert_false(http_list_has("close", 4, "close"));
	assert_true(http_list_has("gzip, chunked", 13, "chunked"));
}

static void
test_method_idempotent(void **state)
{
	assert_true(http_method_idempotent(HTTP_M_GET));
	assert_true(http_method_idempotent(HTTP_M_HEAD));
	assert_true(http_method_idempotent(HTTP_M_OPTIONS));
	assert_true(http_method_idempotent(HTTP_M_TRACE));
	assert_true(http_method_idempotent(HTTP_M_PUT));
	assert_true(http_method_idempotent(HTTP_M_DELETE));
	assert_false(http_method_idempotent(HTTP_M_POST));
	assert_false(http_method_idempotent(HTTP_M_PATCH));
	assert_false(http_method_idempotent(HTTP_M_CONNECT));
	assert_false(http_method_idempotent(HTTP_M_OTHER));
}

static void
test_status_reason(void **state)
{
	static const struct {
		int code;
		const char *reason;
	} t[] = {
	    {100, "Continue"},
	    {101, "Switching Protocols"},
	    {200, "OK"},
	    {201, "Created"},
	    {204, "No Content"},
	    {206, "Partial Content"},
	    {301, "Moved Permanently"},
	    {302, "Found"},
	    {304, "Not Modified"},
	    {400, "Bad Request"},
	    {401, "Unauthorized"},
	    {403, "Forbidden"},
	    {404, "Not Found"},
	    {405, "Method Not Allowed"},
	    {409, "Conflict"},
	    {413, "Content Too Large"},
	    {414, "URI Too Long"},
	    {429, "Too Many Requests"},
	    {431, "Request Header Fields Too Large"},
	    {500, "Internal Server Error"},
	    {501, "Not Implemented"},
	    {502, "Bad Gateway"},
	    {503, "Service Unavailable"},
	    {504, "Gateway Timeout"},
	    {505, "HTTP Version Not Supported"},
	};

	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++)
		assert_string_equal(http_status_reason(t[i].code), t[i].reason);
	assert_string_equal(http_status_reason(299), "Unknown");
	assert_string_equal(http_status_reason(0), "Unknown");
	assert_string_equal(http_status_reason(-1), "Unknown");
}

/* ---------------------------------------------------------------------------------- */
/* Chunked                                                                            */

struct sink {
	char data[1 << 16];
	size_t n;
	unsigned calls;
};

static void
sink_fn(void *arg, const char *data, size_t n)
{
	struct sink *s = arg;

	assert_true(s->n + n <= sizeof(s->data));
	memcpy(s->data + s->n, data, n);
	s->n += n;
	s->calls++;
}

static ssize_t
chunk_whole(const char *s, size_t n, struct http_chunked *c)
{
	http_chunked_init(c);
	return http_chunked_scan(c, s, n);
}

static ssize_t
chunk_str(const char *s)
{
	struct http_chunked c;

	return chunk_whole(s, strlen(s), &c);
}

/* Feeds s in pieces cut at the given points; returns the total or -1. */
static ssize_t
chunk_pieces(const char *s, size_t n, const size_t *cuts, size_t ncut, struct http_chunked *c,
             struct sink *sk)
{
	size_t off = 0;

	http_chunked_init(c);
	for (size_t k = 0; k <= ncut; k++) {
		size_t to = k < ncut ? cuts[k] : n;
		ssize_t r;

		if (to < off)
			continue;
		r = sk ? http_chunked_decode(c, s + off, to - off, sink_fn, sk)
		       : http_chunked_scan(c, s + off, to - off);
		if (r < 0)
			return -1;
		off += (size_t)r;
		if (c->done)
			return (ssize_t)off;
		/* not done: everything handed in must have been consumed */
		assert_int_equal((size_t)r, to - (off - (size_t)r));
	}
	return (ssize_t)off;
}

static void
test_chunk_simple(void **state)
{
	const char *s = "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
	struct http_chunked c;

	assert_int_equal(chunk_whole(s, strlen(s), &c), strlen(s));
	assert_int_equal(c.done, 1);
	assert_int_equal(c.data_total, 11);
	/* done: nothing more is consumed */
	assert_int_equal(http_chunked_scan(&c, "5\r\n", 3), 0);
}

static void
test_chunk_stops_at_end(void **state)
{
	const char *s = "3\r\nabc\r\n0\r\n\r\nGET / HTTP/1.1\r\n";
	struct http_chunked c;

	assert_int_equal(chunk_whole(s, strlen(s), &c), strlen("3\r\nabc\r\n0\r\n\r\n"));
	assert_int_equal(c.done, 1);
	assert_int_equal(chunk_str("0\r\n\r\n"), 5);
}

static void
test_chunk_incomplete(void **state)
{
	struct http_chunked c;

	assert_int_equal(chunk_whole("5\r\nhel", 6, &c), 6);
	assert_int_equal(c.done, 0);
	assert_int_equal(c.remaining, 2);
	assert_int_equal(http_chunked_scan(&c, "lo\r\n0\r\n", 7), 7);
	assert_int_equal(c.done, 0);
	assert_int_equal(http_chunked_scan(&c, "\r\nX", 3), 2);
	assert_int_equal(c.done, 1);
	assert_int_equal(http_chunked_scan(&c, "", 0), 0);
}

static const char *const chunk_samples[] = {
    "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
    "1a;ext=1;q=\"a b\\\"c\"\r\nabcdefghijklmnopqrstuvwxyz\r\n0;last\r\n\r\nnext",
    "A\r\n0123456789\r\n0\r\nExpires: never\r\nX-Sum: 1\r\n\r\n",
    "3 ; a = b\r\nabc\r\n00000\r\n\r\n",
    "3\r\nabc\r\n0\r\nBad Trailer\r\n\r\n",
    "3\r\nabcX\r\n0\r\n\r\n",
    "3\nabc\r\n0\r\n\r\n",
    "g\r\n",
    "1000000000000001\r\n",
};

static void
test_chunk_every_split_point(void **state)
{
	for (size_t i = 0; i < sizeof(chunk_samples) / sizeof(chunk_samples[0]); i++) {
		const char *s = chunk_samples[i];
		size_t n = strlen(s);
		struct http_chunked cw, cp;
		ssize_t whole = chunk_whole(s, n, &cw);

		for (size_t a = 0; a <= n; a++) {
			for (size_t b = a; b <= n; b++) {
				size_t cuts[2] = {a, b};
				ssize_t r = chunk_pieces(s, n, cuts, 2, &cp, NULL);

				assert_int_equal(r, whole);
				if (whole >= 0) {
					assert_int_equal(cp.done, cw.done);
					assert_int_equal(cp.data_total, cw.data_total);
				}
			}
		}
	}
}

static void
test_chunk_byte_at_a_time(void **state)
{
	static struct sink whole_sink, sk;

	for (size_t i = 0; i < sizeof(chunk_samples) / sizeof(chunk_samples[0]); i++) {
		const char *s = chunk_samples[i];
		size_t n = strlen(s), cuts[256];
		struct http_chunked cw, cp;
		ssize_t whole, r;

		whole_sink.n = 0;
		http_chunked_init(&cw);
		whole = http_chunked_decode(&cw, s, n, sink_fn, &whole_sink);
		assert_true(n < 256);
		for (size_t k = 0; k < n; k++)
			cuts[k] = k + 1;
		sk.n = 0;
		r = chunk_pieces(s, n, cuts, n, &cp, &sk);
		assert_int_equal(r, whole);
		if (whole >= 0) {
			assert_int_equal(sk.n, whole_sink.n);
			assert_memory_equal(sk.data, whole_sink.data, sk.n);
			assert_int_equal(cp.data_total, cw.data_total);
		}
	}
}

static void
test_chunk_decode(void **state)
{
	static struct sink sk;
	const char *s = "5\r\nhello\r\n1;x=y\r\n,\r\n6\r\n world\r\n0\r\nT: v\r\n\r\n";
	struct http_chunked c;

	http_chunked_init(&c);
	sk.n = 0;
	sk.calls = 0;
	assert_int_equal(http_chunked_decode(&c, s, strlen(s), sink_fn, &sk), strlen(s));
	assert_int_equal(c.done, 1);
	assert_int_equal(sk.n, 12);
	assert_memory_equal(sk.data, "hello, world", 12);
	assert_int_equal(sk.calls, 3);
	assert_int_equal(c.data_total, 12);
}

static void
test_chunk_hex(void **state)
{
	assert_int_equal(chunk_str("A\r\n0123456789\r\n0\r\n\r\n"), 20);
	assert_int_equal(chunk_str("a\r\n0123456789\r\n0\r\n\r\n"), 20);
	assert_int_equal(chunk_str("0000a\r\n0123456789\r\n0\r\n\r\n"), 24);
	assert_int_equal(chunk_str("g\r\n"), -1);
	assert_int_equal(chunk_str("-1\r\n"), -1);
	assert_int_equal(chunk_str("+1\r\na\r\n0\r\n\r\n"), -1);
	assert_int_equal(chunk_str(" 1\r\na\r\n0\r\n\r\n"), -1);
	assert_int_equal(chunk_str("0x1\r\na\r\n0\r\n\r\n"), -1);
	assert_int_equal(chunk_str("\r\n"), -1);
	assert_int_equal(chunk_str("1 \r\na\r\n0\r\n\r\n"), -1);
	assert_int_equal(chunk_str("1\t\r\na\r\n0\r\n\r\n"), -1);
}

static void
test_chunk_overflow(void **state)
{
	struct http_chunked c;

	/* 2^60 exactly is the cap; one more, or more digits, is refused */
	assert_int_equal(chunk_whole("1000000000000000\r\n", 18, &c), 18);
	assert_int_equal(c.remaining, (uint64_t)1 << 60);
	assert_int_equal(chunk_str("1000000000000001\r\n"), -1);
	assert_int_equal(chunk_str("10000000000000000\r\n"), -1);
	assert_int_equal(chunk_str("ffffffffffffffffffff\r\n"), -1);
	/* 2^64 + 1 would wrap to 1 without the check */
	assert_int_equal(chunk_str("10000000000000001\r\nx\r\n0\r\n\r\n"), -1);
}

static void
test_chunk_missing_crlf(void **state)
{
	assert_int_equal(chunk_str("3\r\nabcX\r\n0\r\n\r\n"), -1);
	assert_int_equal(chunk_str("3\r\nabc\n0\r\n\r\n"), -1);
	assert_int_equal(chunk_str("3\r\nabc\r0\r\n\r\n"), -1);
	assert_int_equal(chunk_str("3\nabc\r\n0\r\n\r\n"), -1);
	assert_int_equal(chunk_str("3\rabc\r\n0\r\n\r\n"), -1);
	assert_int_equal(chunk_str("0\r\n\n"), -1);
	assert_int_equal(chunk_str("0\r\n\rX"), -1);
	assert_int_equal(chunk_str("0\n\r\n"), -1);
	/* data longer than announced */
	assert_int_equal(chunk_str("2\r\nabc\r\n0\r\n\r\n"), -1);
}

static void
test_chunk_extensions(void **state)
{
	static const char *const ok[] = {
	    "1;a\r\nx\r\n0\r\n\r\n",
	    "1;a=b\r\nx\r\n0\r\n\r\n",
	    "1;a=b;c=d;e\r\nx\r\n0\r\n\r\n",
	    "1;a=\"\"\r\nx\r\n0\r\n\r\n",
	    "1;a=\"q \\\" \\\\ ;x\"\r\nx\r\n0\r\n\r\n",
	    "1 ;a\r\nx\r\n0\r\n\r\n",
	    "1; a = b ; c\r\nx\r\n0\r\n\r\n",
	    "1;a=\"v\";b\r\nx\r\n0\r\n\r\n",
	    "0;x=y\r\n\r\n",
	};
	static const char *const bad[] = {
	    "1;\r\nx\r\n0\r\n\r\n",         "1;=b\r\nx\r\n0\r\n\r\n",
	    "1;a=\r\nx\r\n0\r\n\r\n",       "1;a b\r\nx\r\n0\r\n\r\n",
	    "1;a=b c\r\nx\r\n0\r\n\r\n",    "1;a=\"b\r\nx\r\n0\r\n\r\n",
	    "1;a=\"b\"c\r\nx\r\n0\r\n\r\n", "1;a\n\r\nx\r\n0\r\n\r\n",
	    "1;a\x01\r\nx\r\n0\r\n\r\n",    "1;a=b\nx\r\n0\r\n\r\n",
	    "1;a \r\nx\r\n0\r\n\r\n",       "1;a=b \r\nx\r\n0\r\n\r\n",
	    "1 \r\nx\r\n0\r\n\r\n",         "1;a=\"\x01\"\r\nx\r\n0\r\n\r\n",
	};

	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++)
		assert_int_equal(chunk_str(ok[i]), strlen(ok[i]));
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_int_equal(chunk_str(bad[i]), -1);
}

static void
test_chunk_trailers(void **state)
{
	assert_int_equal(chunk_str("0\r\nX-Sum: abc\r\n\r\n"), 17);
	assert_int_equal(chunk_str("0\r\nA: 1\r\nB:\r\nC:\t3 \r\n\r\n"), 22);
	assert_int_equal(chunk_str("0\r\nBad Name: 1\r\n\r\n"), -1);
	assert_int_equal(chunk_str("0\r\nX : 1\r\n\r\n"), -1);
	assert_int_equal(chunk_str("0\r\n: 1\r\n\r\n"), -1);
	assert_int_equal(chunk_str("0\r\nNoColon\r\n\r\n"), -1);
	assert_int_equal(chunk_str("0\r\nA: 1\r\n b\r\n\r\n"), -1); /* obs-fold */
	assert_int_equal(chunk_str("0\r\nA: 1\x01\r\n\r\n"), -1);
	assert_int_equal(chunk_str("0\r\nA: 1\r2\r\n\r\n"), -1);
	assert_int_equal(chunk_str("0\r\nA: 1\n\r\n"), -1);
}

static void
test_chunk_trailer_cap(void **state)
{
	size_t cap = HTTP_CHUNK_TRAILER_MAX + 256, n;
	char *b = malloc(cap);

	assert_non_null(b);
	/* one trailer line of exactly the cap (with the final CRLF) is fine */
	n = (size_t)snprintf(b, cap, "0\r\nX: ");
	memset(b + n, 'v', HTTP_CHUNK_TRAILER_MAX - 7);
	n += HTTP_CHUNK_TRAILER_MAX - 7;
	memcpy(b + n, "\r\n\r\n", 4);
	n += 4;
	assert_int_equal(n - 3, HTTP_CHUNK_TRAILER_MAX);
	{
		struct http_chunked c;

		assert_int_equal(chunk_whole(b, n, &c), n);
		assert_int_equal(c.done, 1);
	}
	/* one byte more is refused */
	memmove(b + 7, b + 6, n - 6);
	b[6] = 'v';
	{
		struct http_chunked c;

		assert_int_equal(chunk_whole(b, n + 1, &c), -1);
	}
	free(b);
}

static void
test_chunk_line_cap(void **state)
{
	/* static, not malloc: gcc's -O1 bounds analysis under ASan misreads the heap copy */
	static char b[HTTP_CHUNK_LINE_MAX + 64];
	size_t n;
	struct http_chunked c;

	/* leading zeros: a size line of exactly the cap (CRLF included) is accepted */
	memset(b, '0', HTTP_CHUNK_LINE_MAX - 3);
	b[HTTP_CHUNK_LINE_MAX - 3] = '1';
	memcpy(b + HTTP_CHUNK_LINE_MAX - 2, "\r\nx\r\n0\r\n\r\n", 10);
	n = HTTP_CHUNK_LINE_MAX + 8;
	assert_int_equal(chunk_whole(b, n, &c), n);
	/* one more zero is a huge size line: refused */
	memmove(b + 1, b, n);
	b[0] = '0';
	assert_int_equal(chunk_whole(b, n + 1, &c), -1);
	/* the same with an extension making the line long */
	n = (size_t)snprintf(b, sizeof(b), "1;x=");
	memset(b + n, 'a', HTTP_CHUNK_LINE_MAX);
	n += HTTP_CHUNK_LINE_MAX;
	assert_int_equal(chunk_whole(b, n, &c), -1);
	/* and it fails as soon as the cap is passed, without a CRLF in sight */
	assert_int_equal(chunk_whole(b, HTTP_CHUNK_LINE_MAX + 1, &c), -1);

}

static void
test_chunk_error_sticky(void **state)
{
	struct http_chunked c;

	assert_int_equal(chunk_whole("x", 1, &c), -1);
	assert_int_equal(http_chunked_scan(&c, "0\r\n\r\n", 5), -1);
}

static void
test_chunk_large_data_fast_path(void **state)
{
	size_t n = 1 << 20;
	char *b = malloc(n + 64);
	struct http_chunked c;
	size_t off, hdr;
	ssize_t r;

	assert_non_null(b);
	off = hdr = (size_t)snprintf(b, 64, "%zx\r\n", n);
	memset(b + off, '\n', n); /* payload bytes are never interpreted */
	off += n;
	memcpy(b + off, "\r\n0\r\n\r\n", 7);
	off += 7;
	http_chunked_init(&c);
	r = http_chunked_scan(&c, b, 10);
	assert_int_equal(r, 10);
	assert_int_equal(c.remaining, n - (10 - hdr));
	r = http_chunked_scan(&c, b + 10, off - 10);
	assert_int_equal(r, off - 10);
	assert_int_equal(c.done, 1);
	assert_int_equal(c.data_total, n);
	free(b);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_req_simple),
	    cmocka_unit_test(test_req_methods),
	    cmocka_unit_test(test_req_method_invalid),
	    cmocka_unit_test(test_req_single_spaces),
	    cmocka_unit_test(test_req_version),
	    cmocka_unit_test(test_req_target_forms),
	    cmocka_unit_test(test_req_connect_authority),
	    cmocka_unit_test(test_req_target_bytes),
	    cmocka_unit_test(test_req_path_len),
	    cmocka_unit_test(test_req_uri_too_long),
	    cmocka_unit_test(test_req_early_reject_garbage),
	    cmocka_unit_test(test_req_leading_crlf_rejected),
	    cmocka_unit_test(test_hdr_offsets_and_trim),
	    cmocka_unit_test(test_hdr_ids),
	    cmocka_unit_test(test_hdr_first_index),
	    cmocka_unit_test(test_hdr_obs_fold),
	    cmocka_unit_test(test_hdr_name_rules),
	    cmocka_unit_test(test_hdr_value_bytes),
	    cmocka_unit_test(test_bare_lf_rejected),
	    cmocka_unit_test(test_bare_cr_rejected),
	    cmocka_unit_test(test_max_headers),
	    cmocka_unit_test(test_max_head),
	    cmocka_unit_test(test_max_head_endless_header),
	    cmocka_unit_test(test_null_limits_defaults),
	    cmocka_unit_test(test_host_rules),
	    cmocka_unit_test(test_cl_simple),
	    cmocka_unit_test(test_cl_not_digits),
	    cmocka_unit_test(test_cl_duplicates),
	    cmocka_unit_test(test_cl_overflow),
	    cmocka_unit_test(test_te_chunked),
	    cmocka_unit_test(test_te_with_cl_rejected),
	    cmocka_unit_test(test_te_not_chunked),
	    cmocka_unit_test(test_te_http10_rejected),
	    cmocka_unit_test(test_keep_alive),
	    cmocka_unit_test(test_upgrade),
	    cmocka_unit_test(test_expect_continue),
	    cmocka_unit_test(test_incremental_byte_at_a_time),
	    cmocka_unit_test(test_incremental_every_split),
	    cmocka_unit_test(test_incremental_again_then_ok),
	    cmocka_unit_test(test_pipelined),
	    cmocka_unit_test(test_pipelined_chunked),
	    cmocka_unit_test(test_resp_length),
	    cmocka_unit_test(test_resp_chunked),
	    cmocka_unit_test(test_resp_eof),
	    cmocka_unit_test(test_resp_no_body_statuses),
	    cmocka_unit_test(test_resp_head_and_connect),
	    cmocka_unit_test(test_resp_status_line),
	    cmocka_unit_test(test_resp_version),
	    cmocka_unit_test(test_resp_framing_rejects),
	    cmocka_unit_test(test_resp_connection),
	    cmocka_unit_test(test_resp_incremental),
	    cmocka_unit_test(test_header_get_find),
	    cmocka_unit_test(test_list_has),
	    cmocka_unit_test(test_method_idempotent),
	    cmocka_unit_test(test_status_reason),
	    cmocka_unit_test(test_chunk_simple),
	    cmocka_unit_test(test_chunk_stops_at_end),
	    cmocka_unit_test(test_chunk_incomplete),
	    cmocka_unit_test(test_chunk_every_split_point),
	    cmocka_unit_test(test_chunk_byte_at_a_time),
	    cmocka_unit_test(test_chunk_decode),
	    cmocka_unit_test(test_chunk_hex),
	    cmocka_unit_test(test_chunk_overflow),
	    cmocka_unit_test(test_chunk_missing_crlf),
	    cmocka_unit_test(test_chunk_extensions),
	    cmocka_unit_test(test_chunk_trailers),
	    cmocka_unit_test(test_chunk_trailer_cap),
	    cmocka_unit_test(test_chunk_line_cap),
	    cmocka_unit_test(test_chunk_error_sticky),
	    cmocka_unit_test(test_chunk_large_data_fast_path),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
