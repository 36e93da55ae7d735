#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "gatetop.h"
#include "ipc.h"
#include "proto.h"

/*
 * Actions go to the control socket through the protocol code gatectl uses (proto.c's
 * table, ipc_call), so gatetop can send nothing the daemon's table does not know.
 */

#define ACTION_TIMEOUT_MS 3000

/* The reply's fields other than "v" and "ok", as "name=value ...", appended to msg. */
static void
action_summary(const cJSON *r, char *msg, size_t msglen)
{
	const cJSON *f;
	size_t off = strlen(msg);

	cJSON_ArrayForEach(f, r)
	{
		if (f->string == NULL || strcmp(f->string, "v") == 0 ||
		    strcmp(f->string, "ok") == 0)
			continue;
		if (off + 1 >= msglen)
			break;
		if (cJSON_IsString(f))
			off += (size_t)snprintf(msg + off, msglen - off, " %s=%s", f->string,
			                        f->valuestring);
		else if (cJSON_IsNumber(f))
			off += (size_t)snprintf(msg + off, msglen - off, " %s=%g", f->string,
			                        f->valuedouble);
		else if (cJSON_IsBool(f))
			off += (size_t)snprintf(msg + off, msglen - off, " %s=%s", f->string,
			                        cJSON_IsTrue(f) ? "true" : "false");
	}
}

static void
action_label(const char *cmd, int argc, char *argv[], char *msg, size_t msglen)
{
	size_t off = (size_t)snprintf(msg, msglen, "%s", cmd);

	for (int i = 0; i < argc && off + 1 < msglen; i++)
		off += (size_t)snprintf(msg + off, msglen - off, " %s", argv[i]);
}

int
action_send(const char *url, const char *cmd, int argc, char *argv[], char *msg, size_t msglen)
{
	const struct proto_command *c = proto_find(cmd);
	char err[256], label[192], *req, *reply;
	const cJSON *e;
	size_t len;
	cJSON *r;
	int ok;

	action_label(cmd, argc, argv, label, sizeof(label));
	if (c == NULL) {
		snprintf(msg, msglen, "%s: not a command of this protocol version", label);
		return -1;
	}
	req = proto_request_authorize(proto_request_encode(c, argc, argv), url,
	                              getenv("GATEWAYD_ADMIN_TOKEN"));
	if (req == NULL) {
		snprintf(msg, msglen, "%s: cannot encode the request", label);
		return -1;
	}
	if (ipc_call(url, req, ACTION_TIMEOUT_MS, &reply, &len, err, sizeof(err)) != 0) {
		cJSON_free(req);
		snprintf(msg, msglen, "%s: cannot reach gatewayd at %s", label, err);
		return -1;
	}
	cJSON_free(req);
	r = proto_reply_decode(reply, len, &ok, err, sizeof(err));
	free(reply);
	if (r == NULL) {
		snprintf(msg, msglen, "%s: %s", label, err);
		return -1;
	}
	if (ok) {
		snprintf(msg, msglen, "%s: ok", label);
		action_summary(r, msg, msglen);
	} else {
		e = cJSON_GetObjectItemCaseSensitive(r, "error");
		snprintf(msg, msglen, "%s: %s", label,
		         cJSON_IsString(e) ? e->valuestring : "refused");
	}
	cJSON_Delete(r);
	return ok ? 0 : -1;
}
