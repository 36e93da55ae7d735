/*
 * libFuzzer target: the input is one control-plane request as the daemon's REP socket
 * receives it (shared/proto.c). Whatever the bytes, decoding must not crash or leak; a
 * request it accepts must name a table command, carry every required argument within
 * PROTO_ARG_MAX, and survive a round trip: encoded again from its named values it decodes
 * to the same command and the same arguments. Replies are decoded too (gatectl's side).
 *
 *   make build/fuzz/fuzz_proto && build/fuzz/fuzz_proto -max_total_time=60 \
 *       build/fuzz/corpus-fuzz_proto tests/fuzz/corpus/fuzz_proto
 */

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
fuzz_check(int ok)
{
	if (!ok)
		__builtin_trap();
}

static void
fuzz_round_trip(const struct proto_request *q)
{
	const char *vals[PROTO_MAX_ARGS] = {NULL};
	struct proto_request again;
	char err[256], *text;
	int n = proto_nargs(q->cmd);

	fuzz_check(n <= PROTO_MAX_ARGS);
	for (int i = 0; i < n; i++) {
		vals[i] = q->argv[i];
		if (q->cmd->args[i].required)
			fuzz_check(q->argv[i] != NULL);
		if (q->argv[i] != NULL)
			fuzz_check(strlen(q->argv[i]) <= PROTO_ARG_MAX);
	}
	text = proto_request_encode_named(q->cmd, vals);
	fuzz_check(text != NULL);
	fuzz_check(proto_request_decode(text, strlen(text), &again, err, sizeof(err)) == 0);
	fuzz_check(again.cmd == q->cmd);
	for (int i = 0; i < n; i++) {
		fuzz_check((again.argv[i] == NULL) == (q->argv[i] == NULL));
		if (q->argv[i] != NULL)
			fuzz_check(strcmp(again.argv[i], q->argv[i]) == 0);
	}
	proto_request_free(&again);
	cJSON_free(text);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct proto_request q;
	char err[256];
	int ok;
	cJSON *reply;

	if (proto_request_decode((const char *)data, size, &q, err, sizeof(err)) == 0) {
		fuzz_check(q.cmd != NULL && proto_find(q.cmd->name) == q.cmd);
		fuzz_round_trip(&q);
		proto_request_free(&q);
	} else {
		fuzz_check(err[0] != '\0' && memchr(err, '\0', sizeof(err)) != NULL);
	}
	reply = proto_reply_decode((const char *)data, size, &ok, err, sizeof(err));
	cJSON_Delete(reply);
	return 0;
}
