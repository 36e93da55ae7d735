#ifndef GW_IDENTIFY_H
#define GW_IDENTIFY_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "identity.h"

struct exchange;
struct ratelimit_result;

/* What a route or endpoint needs from the caller. */
enum identify_need {
	IDENTIFY_OPTIONAL,   /* auth=none: verified when present, anonymous allowed */
	IDENTIFY_ANY,        /* auth=any: an access JWT or an API key */
	IDENTIFY_JWT,        /* auth=jwt */
	IDENTIFY_KEY_ONLY,   /* auth=apikey */
};

/*
 * Fills x->id from the request's credential. Returns 1 to go on (x->id.kind may be
 * IDENTITY_NONE when nothing was presented and need allows it), 0 when it answered
 * (401 with the SPEC section 4 code).
 */
int identify_request(struct exchange *x, enum identify_need need);
/* Deprecation and rate-limit header lines for x's response; returns their length. */
size_t identify_response_headers(const struct exchange *x, char *buf, size_t cap);
/* The configured tier of an identity (the lowest tier when its name is unknown). */
const struct config_tier *identify_tier(const struct config *cfg, const struct identity *id);
int identify_tier_rank(const struct config *cfg, const char *tier);
/* Records a tier-limit decision for the response headers. */
void identify_rate_info(struct exchange *x, const struct ratelimit_result *res,
			const struct conf_rate *rate);
int identify_user_lookup(int64_t user_id, struct identity_user *out);

#endif
