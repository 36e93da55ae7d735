#include <string.h>

#include <cjson/cJSON.h>

#include "accesslog.h"
#include "api.h"
#include "proxy.h"

/*
 * GET /logs?limit=N (admin): the newest N requests of the access log, oldest first, from
 * the log thread's in-memory ring — there even when no access_log file is configured.
 * Entries carry key prefixes and redacted query strings, never a credential.
 */
void
api_logs(struct exchange *x)
{
	cJSON *root;
	char *s;
	int limit;

	if (api_admin_parse_limit(x, &limit) != 0) {
		respond_error(x, 400, "invalid_request",
		              "limit must be a whole number from 1 to 1000.", NULL, NULL);
		return;
	}
	root = cJSON_CreateObject();
	cJSON_AddItemToObject(root, "entries", accesslog_recent_json(limit));
	s = cJSON_PrintUnformatted(root);
	if (s == NULL)
		respond_error(x, 500, "internal_error", "Out of memory.", NULL, NULL);
	else
		respond_json(x, 200, s, strlen(s), NULL);
	cJSON_free(s);
	cJSON_Delete(root);
}
