#include <cjson/cJSON.h>
#include <stdio.h>
#include <string.h>

#include "log.h"
#include "proxy.h"

/* Admin endpoints over HTTP (SPEC section 6). Each checks router_admin_check() first. */

/* Parses the request body as a JSON object; answers 400 and returns NULL when it is not. */
static cJSON *
api_body_object(struct exchange *x)
{
	cJSON *j = cJSON_ParseWithLength(x->in.data + x->req.head_len,
					 (size_t)x->req.content_length);

	if (j == NULL || !cJSON_IsObject(j)) {
		cJSON_Delete(j);
		respond_error(x, 400, "invalid_request", "The body must be a JSON object.", NULL,
			      NULL);
		return NULL;
	}
	return j;
}

void
api_change_strategy(struct exchange *x)
{
	cJSON *j, *s;
	char body[256], msg[256];
	int st, n;

	if (!router_admin_check(x))
		return;
	if ((j = api_body_object(x)) == NULL)
		return;
	s = cJSON_GetObjectItemCaseSensitive(j, "strategy");
	st = cJSON_IsString(s) ? balance_strategy_from_name(s->valuestring) : -1;
	cJSON_Delete(j);
	if (st < 0) {
		char list[200];
		size_t o = 0;

		/* the valid names in the message for people and as an array for scripts */
		for (int i = 0; i < BALANCE_COUNT && o < sizeof(list); i++)
			o += (size_t)snprintf(list + o, sizeof(list) - o, "%s\"%s\"", i ? "," : "",
					      balance_strategy_name(i));
		snprintf(msg, sizeof(msg), "Unknown strategy; valid names: %s.",
			 balance_strategy_list());
		snprintf(body, sizeof(body), "\"valid\":[%s]", list);
		respond_error(x, 400, "invalid_request", msg, NULL, body);
		return;
	}
	atomic_store(&gw.strategy, st);
	log_info("strategy changed to %s over HTTP", balance_strategy_name(st));
	n = snprintf(body, sizeof(body), "{\"ok\":true,\"strategy\":\"%s\"}",
		     balance_strategy_name(st));
	respond_json(x, 200, body, (size_t)n, NULL);
}
