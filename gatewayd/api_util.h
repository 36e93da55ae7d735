#ifndef GW_API_UTIL_H
#define GW_API_UTIL_H

#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

/*
 * Pieces shared by the API handlers (api_auth.c, api_admin.c): reading a request body,
 * building JSON answers and answering a store that is not there.
 */

struct exchange;
struct job;

/* The request body, when the whole of it is in the buffer (else *buf NULL, *len 0). The
 * span points into x's input buffer. */
void api_util_body_span(const struct exchange *x, const char **buf, size_t *len);
/* The request body parsed as a JSON object, owned by the caller (cJSON_Delete); NULL
 * when it is not one, with 400 answered on x. */
cJSON *api_util_body_object(struct exchange *x);

/* Answers the job with the JSON object o (consumed). The printed copy, which may hold
 * tokens, is wiped after use. When printing fails, answers oom_status instead. */
void api_util_set_object(struct job *j, int status, cJSON *o, int oom_status);
/* Adds a Unix time as member name, or null for 0 ("never", "until removed"). */
void api_util_add_time(cJSON *o, const char *name, int64_t t);
/* Answers 503 service_unavailable with message and Retry-After: 1. */
void api_util_unavailable(struct job *j, const char *message);

#endif
