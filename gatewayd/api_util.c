#include <cjson/cJSON.h>
#include <stdint.h>
#include <string.h>

#include "api_util.h"
#include "jobs.h"
#include "proxy.h"
#include "util.h"

void
api_util_body_span(const struct exchange *x, const char **buf, size_t *len)
{
	const struct http_msg *m = &x->req;

	*buf = NULL;
	*len = 0;
	if (m->body != HTTP_BODY_LENGTH || m->content_length == 0 ||
	    (uint64_t)x->in.end < (uint64_t)m->head_len + m->content_length)
		return;
	*buf = x->in.data + m->head_len;
	*len = (size_t)m->content_length;
}

cJSON *
api_util_body_object(struct exchange *x)
{
	cJSON *j =
	    cJSON_ParseWithLength(x->in.data + x->req.head_len, (size_t)x->req.content_length);

	if (j == NULL || !cJSON_IsObject(j)) {
		cJSON_Delete(j);
		respond_error(x, 400, "invalid_request", "The body must be a JSON object.", NULL,
		              NULL);
		return NULL;
	}
	return j;
}

void
api_util_set_object(struct job *j, int status, cJSON *o, int oom_status)
{
	char *s = cJSON_PrintUnformatted(o);

	cJSON_Delete(o);
	if (s == NULL) {
		jobs_set_error(j, oom_status,
		               oom_status == 500 ? "internal_error" : "service_unavailable",
		               "Out of memory.");
		return;
	}
	jobs_set_json(j, status, s);
	explicit_bzero(s, strlen(s));
	cJSON_free(s);
}

void
api_util_add_time(cJSON *o, const char *name, int64_t t)
{
	if (t == 0)
		cJSON_AddNullToObject(o, name);
	else
		cJSON_AddNumberToObject(o, name, (double)t);
}

void
api_util_unavailable(struct job *j, const char *message)
{
	jobs_set_error(j, 503, "service_unavailable", message);
	util_strlcpy(j->extra, "Retry-After: 1\r\n", sizeof(j->extra));
}
