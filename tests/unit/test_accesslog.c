/*
 * Unit tests for the access-log line format (accesslog.c) and the live latency
 * quantiles (publish.c over metrics.c's fine buckets): every field present and valid
 * JSON, escaping of hostile bytes, credential redaction in the query, truncation, the
 * fine-bucket edges, and quantiles of known distributions.
 */

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "accesslog.h"
#include "metrics.h"
#include "publish.h"

static void
rec_init(struct accesslog_rec *r)
{
	memset(r, 0, sizeof(*r));
	r->mono_us = 1000000;
	r->latency_us = 1234;
	r->bytes = 42;
	r->status = 200;
	r->rl = ACCESSLOG_RL_ALLOWED;
	r->client_ip[10] = r->client_ip[11] = 0xff; /* v4-mapped 192.0.2.7 */
	r->client_ip[12] = 192;
	r->client_ip[14] = 2;
	r->client_ip[15] = 7;
	strcpy(r->request_id, "rid-1");
	strcpy(r->identity, "k:gk_ab12cd");
	strcpy(r->method, "GET");
	strcpy(r->path, "/api/x?a=1");
	strcpy(r->backend, "b1");
	strcpy(r->dc, "us-east");
	strcpy(r->cache, "MISS");
}

/* The record formatted and parsed back; the caller deletes it. */
static cJSON *
format_parse(const struct accesslog_rec *r, int64_t off)
{
	char buf[2048];
	size_t n = accesslog_format(r, off, buf, sizeof(buf));
	cJSON *o;

	assert_true(n > 0);
	assert_int_equal(strlen(buf), n);
	o = cJSON_Parse(buf);
	assert_non_null(o);
	return o;
}

static const char *
str(const cJSON *o, const char *name)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);

	assert_true(cJSON_IsString(v));
	return v->valuestring;
}

static double
num(const cJSON *o, const char *name)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);

	assert_true(cJSON_IsNumber(v));
	return v->valuedouble;
}

static void
test_fields(void **state)
{
	struct accesslog_rec r;
	/* 2026-11-29T18:00:00.5Z minus the record's 1 s of monotonic time */
	int64_t off = 1795975200500000LL - 1000000;
	cJSON *o;

	(void)state;
	rec_init(&r);
	o = format_parse(&r, off);
	assert_string_equal(str(o, "time"), "2026-11-29T18:00:00.500Z");
	assert_string_equal(str(o, "request_id"), "rid-1");
	assert_string_equal(str(o, "client_ip"), "192.0.2.7");
	assert_string_equal(str(o, "identity"), "k:gk_ab12cd");
	assert_string_equal(str(o, "method"), "GET");
	assert_string_equal(str(o, "path"), "/api/x?a=1");
	assert_int_equal((int)num(o, "status"), 200);
	assert_int_equal((int)num(o, "bytes"), 42);
	assert_string_equal(str(o, "backend"), "b1");
	assert_string_equal(str(o, "datacenter"), "us-east");
	assert_string_equal(str(o, "cache"), "MISS");
	assert_int_equal((int)num(o, "latency_us"), 1234);
	assert_string_equal(str(o, "ratelimit"), "allowed");
	assert_null(cJSON_GetObjectItemCaseSensitive(o, "error"));
	cJSON_Delete(o);

	strcpy(r.error, "rate_limited");
	r.rl = ACCESSLOG_RL_REJECTED;
	r.status = 429;
	o = format_parse(&r, off);
	assert_string_equal(str(o, "error"), "rate_limited");
	assert_string_equal(str(o, "ratelimit"), "rejected");
	cJSON_Delete(o);
}

static void
test_hostile_bytes_stay_json(void **state)
{
	struct accesslog_rec r;
	cJSON *o;

	(void)state;
	rec_init(&r);
	strcpy(r.path, "/a\"b\\c\x01\x7f\xc3\xa9");
	strcpy(r.request_id, "x\"y");
	o = format_parse(&r, 0);
	/* bytes outside ASCII are read as Latin-1 code points: lossless, always valid */
	assert_string_equal(str(o, "path"), "/a\"b\\c\x01\x7f\xc3\x83\xc2\xa9");
	assert_string_equal(str(o, "request_id"), "x\"y");
	cJSON_Delete(o);
}

static void
test_redaction(void **state)
{
	static const char *const cases[][2] = {
	    {"/p?api_key=abc", "/p?api_key=REDACTED"},
	    {"/p?a=1&token=t&b=2", "/p?a=1&token=REDACTED&b=2"},
	    {"/p?API_KEY=abc&Password=x", "/p?API_KEY=REDACTED&Password=REDACTED"},
	    {"/p?keyboard=1&key=2", "/p?keyboard=1&key=REDACTED"},
	    {"/p?token", "/p?token"},
	    {"/p?=x&&secret=", "/p?=x&&secret=REDACTED"},
	    {"/p/api_key=abc", "/p/api_key=abc"},
	};
	struct accesslog_rec r;

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		cJSON *o;

		rec_init(&r);
		strcpy(r.path, cases[i][0]);
		o = format_parse(&r, 0);
		assert_string_equal(str(o, "path"), cases[i][1]);
		cJSON_Delete(o);
	}
}

static void
test_small_buffer(void **state)
{
	struct accesslog_rec r;
	char buf[64];

	(void)state;
	rec_init(&r);
	assert_int_equal(accesslog_format(&r, 0, buf, sizeof(buf)), 0);
}

static void
test_fine_buckets(void **state)
{
	(void)state;
	for (uint64_t us = 0; us < 5000000; us = us * 5 / 4 + 1) {
		int i = metrics_fine_index(us);

		assert_true(metrics_fine_lower(i) <= us);
		if (i + 1 < METRICS_FINE)
			assert_true(us < metrics_fine_lower(i + 1));
	}
	/* 4 buckets an octave: at most 25% wide */
	for (int i = 4; i + 1 < METRICS_FINE; i++)
		assert_true(metrics_fine_lower(i + 1) - metrics_fine_lower(i) <=
		            metrics_fine_lower(i) / 4);
	assert_int_equal(metrics_fine_index(UINT64_MAX), METRICS_FINE - 1);
}

static void
test_quantiles(void **state)
{
	uint64_t c[METRICS_FINE] = {0};
	double p50, p99;

	(void)state;
	assert_true(publish_quantile_ms(c, METRICS_FINE, 0.5) == 0.0);
	/* 990 requests at 200 us, 10 at 20 ms */
	c[metrics_fine_index(200)] = 990;
	c[metrics_fine_index(20000)] = 10;
	p50 = publish_quantile_ms(c, METRICS_FINE, 0.50);
	p99 = publish_quantile_ms(c, METRICS_FINE, 0.99);
	assert_true(p50 >= 0.192 && p50 <= 0.240);
	assert_true(p99 >= 0.192 && p99 <= 0.240); /* the 990th is still fast */
	assert_true(publish_quantile_ms(c, METRICS_FINE, 0.999) >= 16.0);
	assert_true(publish_quantile_ms(c, METRICS_FINE, 0.999) <= 24.0);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_fields),       cmocka_unit_test(test_hostile_bytes_stay_json),
	    cmocka_unit_test(test_redaction),    cmocka_unit_test(test_small_buffer),
	    cmocka_unit_test(test_fine_buckets), cmocka_unit_test(test_quantiles),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
