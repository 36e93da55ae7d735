/*
 * Unit tests for shared/proto.c: the command table (every command has named arguments,
 * required ones first among the words), request encoding (named members and "v"), and
 * decoding with and without "v", with "args" or named members, and every refusal.
 */

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "proto.h"

static int
decode(const char *s, struct proto_request *q, char *err, size_t len)
{
	return proto_request_decode(s, strlen(s), q, err, len);
}

static void
test_table_is_sound(void **state)
{
	(void)state;
	for (int i = 0; i < proto_ncommands; i++) {
		const struct proto_command *c = &proto_commands[i];
		int optional_seen = 0;

		assert_ptr_equal(proto_find(c->name), c);
		assert_true(proto_nargs(c) <= PROTO_MAX_ARGS);
		assert_non_null(c->usage);
		assert_true(strlen(c->help) > 0);
		for (int a = 0; c->args[a].name != NULL; a++) {
			/* a required word never follows an optional one */
			if (c->args[a].kind == PROTO_ARG_WORD && !c->args[a].required)
				optional_seen = 1;
			if (c->args[a].kind == PROTO_ARG_WORD && c->args[a].required)
				assert_false(optional_seen);
			if (c->args[a].kind != PROTO_ARG_WORD)
				assert_non_null(c->args[a].option);
			assert_string_not_equal(c->args[a].name, "v");
			assert_string_not_equal(c->args[a].name, "cmd");
			assert_string_not_equal(c->args[a].name, "args");
		}
	}
	assert_null(proto_find("nosuch"));
	assert_true(proto_is_group("keys"));
	assert_true(proto_is_group("backend"));
	assert_false(proto_is_group("backends"));
	assert_false(proto_is_group("status"));
}

static void
test_encode_named(void **state)
{
	const struct proto_command *c = proto_find("ban");
	char *argv[] = {"10.0.0.0/8", "10m", "extra"};
	char *s;

	(void)state;
	s = proto_request_encode(c, 2, argv);
	assert_string_equal(s,
	                    "{\"v\":1,\"cmd\":\"ban\",\"ip\":\"10.0.0.0/8\",\"duration\":\"10m\"}");
	cJSON_free(s);
	s = proto_request_encode(c, 1, argv);
	assert_string_equal(s, "{\"v\":1,\"cmd\":\"ban\",\"ip\":\"10.0.0.0/8\"}");
	cJSON_free(s);
	assert_null(proto_request_encode(c, 3, argv));
}

static void
test_round_trip_every_command(void **state)
{
	(void)state;
	for (int i = 0; i < proto_ncommands; i++) {
		const struct proto_command *c = &proto_commands[i];
		const char *vals[PROTO_MAX_ARGS] = {NULL};
		struct proto_request q;
		char err[256], *s;

		for (int a = 0; c->args[a].name != NULL; a++)
			vals[a] = c->args[a].name; /* any text will do */
		s = proto_request_encode_named(c, vals);
		assert_int_equal(decode(s, &q, err, sizeof(err)), 0);
		assert_ptr_equal(q.cmd, c);
		for (int a = 0; c->args[a].name != NULL; a++) {
			assert_string_equal(q.argv[a], c->args[a].name);
			assert_string_equal(proto_request_get(&q, c->args[a].name),
			                    c->args[a].name);
		}
		proto_request_free(&q);
		cJSON_free(s);
	}
}

static void
test_decode_without_version(void **state)
{
	struct proto_request q;
	char err[256];

	(void)state;
	assert_int_equal(decode("{\"cmd\":\"status\"}", &q, err, sizeof(err)), 0);
	assert_string_equal(q.cmd->name, "status");
	proto_request_free(&q);
	assert_int_equal(decode("{\"cmd\":\"block\",\"key\":\"gk_abc\"}", &q, err, sizeof(err)), 0);
	assert_string_equal(q.argv[0], "gk_abc");
	proto_request_free(&q);
}

static void
test_decode_named(void **state)
{
	struct proto_request q;
	char err[256];

	(void)state;
	assert_int_equal(decode("{\"cmd\":\"ban\",\"ip\":\"10.0.0.0/8\",\"duration\":\"10m\"}", &q,
	                        err, sizeof(err)),
	                 0);
	assert_string_equal(proto_request_get(&q, "ip"), "10.0.0.0/8");
	assert_string_equal(proto_request_get(&q, "duration"), "10m");
	proto_request_free(&q);
	/* numbers and true read as text; false and null as absent */
	assert_int_equal(
	    decode("{\"v\":1,\"cmd\":\"logs\",\"n\":5,\"follow\":true}", &q, err, sizeof(err)), 0);
	assert_string_equal(proto_request_get(&q, "n"), "5");
	assert_string_equal(proto_request_get(&q, "follow"), "1");
	proto_request_free(&q);
	assert_int_equal(
	    decode("{\"cmd\":\"logs\",\"follow\":false,\"n\":null}", &q, err, sizeof(err)), 0);
	assert_null(proto_request_get(&q, "follow"));
	assert_null(proto_request_get(&q, "n"));
	proto_request_free(&q);
	assert_int_equal(
	    decode("{\"cmd\":\"keys create\",\"tier\":\"basic\"}", &q, err, sizeof(err)), 0);
	assert_string_equal(proto_request_get(&q, "tier"), "basic");
	assert_null(proto_request_get(&q, "user"));
	proto_request_free(&q);
}

static void
test_decode_args_array(void **state)
{
	struct proto_request q;
	char err[256];

	(void)state;
	assert_int_equal(decode("{\"v\":1,\"cmd\":\"tier\",\"args\":[\"gk_ab\",\"premium\"]}", &q,
	                        err, sizeof(err)),
	                 0);
	assert_string_equal(proto_request_get(&q, "key"), "gk_ab");
	assert_string_equal(proto_request_get(&q, "tier"), "premium");
	proto_request_free(&q);
	assert_int_equal(decode("{\"v\":1,\"cmd\":\"status\",\"args\":[]}", &q, err, sizeof(err)),
	                 0);
	proto_request_free(&q);
}

static void
refused(const char *req, const char *want)
{
	struct proto_request q;
	char err[256];

	assert_int_equal(decode(req, &q, err, sizeof(err)), -1);
	if (strstr(err, want) == NULL)
		fail_msg("%s: got \"%s\", want \"%s\"", req, err, want);
	for (int i = 0; i < PROTO_MAX_ARGS; i++)
		assert_null(q.argv[i]);
}

static void
test_decode_refusals(void **state)
{
	char big[PROTO_ARG_MAX + 64];

	(void)state;
	refused("[]", "not a JSON object");
	refused("{\"cmd\":", "not a JSON object");
	refused("{\"v\":2,\"cmd\":\"status\"}", "protocol version 2, daemon speaks 1");
	refused("{\"v\":\"1\",\"cmd\":\"status\"}", "protocol version");
	refused("{\"v\":1}", "unknown command (none)");
	refused("{\"v\":1,\"cmd\":\"nosuch\"}", "unknown command nosuch");
	refused("{\"cmd\":\"block\"}", "usage: block KEY");
	refused("{\"cmd\":\"block\",\"args\":[]}", "usage: block KEY");
	refused("{\"cmd\":\"status\",\"args\":[\"x\"]}", "usage: status");
	refused("{\"cmd\":\"strategy\",\"args\":[\"a\",\"b\"]}", "usage: strategy [NAME]");
	refused("{\"cmd\":\"status\",\"args\":\"x\"}", "args must be an array");
	refused("{\"cmd\":\"ban\",\"args\":[1]}", "args must be strings");
	refused("{\"cmd\":\"ban\",\"ipaddr\":\"1.2.3.4\"}", "takes no argument \"ipaddr\"");
	refused("{\"cmd\":\"ban\",\"ip\":[\"1.2.3.4\"]}", "ip must be a string");
	refused("{\"cmd\":\"ban\",\"ip\":1.5}", "ip must be a string");
	refused("{\"cmd\":\"tier\",\"key\":\"gk_x\"}", "usage: tier KEY|USER_ID TIER");
	memset(big, 'a', sizeof(big));
	memcpy(big, "{\"cmd\":\"block\",\"key\":\"", 22);
	memcpy(big + sizeof(big) - 3, "\"}", 3);
	refused(big, "at most 512 bytes");
}

static void
test_replies(void **state)
{
	char err[128], *s = proto_reply_error("nope");
	cJSON *o, *ok = proto_reply_ok();
	int isok = -1;

	(void)state;
	o = proto_reply_decode(s, strlen(s), &isok, err, sizeof(err));
	assert_non_null(o);
	assert_int_equal(isok, 0);
	assert_string_equal(cJSON_GetObjectItem(o, "error")->valuestring, "nope");
	cJSON_Delete(o);
	cJSON_free(s);
	s = cJSON_PrintUnformatted(ok);
	assert_string_equal(s, "{\"v\":1,\"ok\":true}");
	cJSON_free(s);
	cJSON_Delete(ok);
	assert_null(proto_reply_decode("{\"v\":1}", 7, &isok, err, sizeof(err)));
	assert_string_equal(err, "the daemon's answer is not a reply");
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_table_is_sound),
	    cmocka_unit_test(test_encode_named),
	    cmocka_unit_test(test_round_trip_every_command),
	    cmocka_unit_test(test_decode_without_version),
	    cmocka_unit_test(test_decode_named),
	    cmocka_unit_test(test_decode_args_array),
	    cmocka_unit_test(test_decode_refusals),
	    cmocka_unit_test(test_replies),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
