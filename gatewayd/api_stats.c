#include <cjson/cJSON.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "geo.h"
#include "proxy.h"
#include "ratelimit.h"
#include "stats.h"
#include "util.h"

/* GET /health, /ready and /stats (SPEC section 6). */

void
api_health(struct exchange *x)
{
	static const char ok[] = "{\"status\":\"ok\"}";

	respond_json(x, 200, ok, sizeof(ok) - 1, NULL);
}

void
api_ready(struct exchange *x)
{
	static const char ready[] = "{\"status\":\"ready\"}";
	static const char notready[] = "{\"error\":\"no_healthy_backend\","
				       "\"message\":\"No backend is healthy.\"}";

	for (int i = 0; i < x->rt->nbackends; i++) {
		struct backend *b = x->rt->backends[i];
		if (atomic_load(&b->healthy) && atomic_load(&b->admin) == BACKEND_ENABLED) {
			respond_json(x, 200, ready, sizeof(ready) - 1, NULL);
			return;
		}
	}
	respond_json(x, 503, notready, sizeof(notready) - 1, "Retry-After: 5\r\n");
}

/* Answers 200 with root (consumed). */
static void
api_stats_answer(struct exchange *x, cJSON *root)
{
	char *s = cJSON_PrintUnformatted(root);

	respond_json(x, 200, s, strlen(s), NULL);
	cJSON_free(s);
	cJSON_Delete(root);
}

void
api_stats(struct exchange *x)
{
	api_stats_answer(x, stats_json(x->rt));
}

/* GET /geo/stats (geo.h) */
void
api_geo_stats(struct exchange *x)
{
	api_stats_answer(x, geo_stats_json(x->rt));
}
