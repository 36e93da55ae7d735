#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "auth.h"
#include "identify.h"
#include "identity.h"
#include "jobs.h"
#include "log.h"
#include "proxy.h"
#include "ratelimit.h"
#include "store.h"
#include "util.h"
#include "xmalloc.h"

/*
 * Credentials to identity (SPEC section 3): the first present of
 * `Authorization: Bearer <access JWT>`, `X-API-Key`, `?api_key=` (legacy). A present
 * credential is always verified; a bad one is a 401, never a fallback to anonymous.
 */

static const char identify_www_invalid[] = "WWW-Authenticate: Bearer error=\"invalid_token\"\r\n";

static int64_t
identify_now(void)
{
	return (int64_t)time(NULL);
}

/* The tier a name stands for in this configuration; unknown names count as the lowest. */
int
identify_tier_rank(const struct config *cfg, const char *tier)
{
	return config_tier_find(cfg, tier);
}

static void
identify_set_name(struct identity *id)
{
	if (id->kind == IDENTITY_USER || (id->kind == IDENTITY_KEY && id->user_id > 0)) {
		size_t off;

		if (id->sub[0] == '\0')
			util_append_u64(id->sub, 0, sizeof(id->sub), (uint64_t)id->user_id);
		off = util_append_str(id->name, 0, sizeof(id->name), "u:");
		util_append_str(id->name, off, sizeof(id->name), id->sub);
	}
	else
		util_append(id->name, util_append_str(id->name, 0, sizeof(id->name), "k:"),
			    sizeof(id->name), id->key_hash, strnlen(id->key_hash, 12));
}

/* The user's tier and role as last written (an upgrade applies to tokens already out). */
static void
identify_user_overrides(struct identity *id)
{
	struct identity_user u;

	if (id->user_id > 0 && identify_user_lookup(id->user_id, &u)) {
		util_strlcpy(id->tier, u.tier, sizeof(id->tier));
		util_strlcpy(id->role, u.role, sizeof(id->role));
	}
}

int
identify_user_lookup(int64_t user_id, struct identity_user *out)
{
	return identity_user_get(user_id, out);
}

static int
identify_header_safe(const char *s)
{
	for (; *s != '\0'; s++)
		if ((unsigned char)*s < 0x21 || (unsigned char)*s > 0x7e)
			return 0;
	return 1;
}

static int
identify_jwt(struct exchange *x, const char *tok, size_t len)
{
	struct auth_claims cl;
	int64_t now = identify_now();
	int r = AUTH_OK;

	if (gw.auth == NULL) {
		respond_error(x, 401, "invalid_token", "Tokens are not accepted here.",
			      identify_www_invalid, NULL);
		return 0;
	}
	if (!auth_cache_get(gw.auth_cache, tok, len, now, &cl)) {
		r = auth_jwt_verify(gw.auth, tok, len, now, &cl);
		if (r == AUTH_OK && strcmp(cl.typ, "access") == 0)
			auth_cache_put(gw.auth_cache, tok, len, &cl);
	}
	if (r != AUTH_OK) {
		worker_counter_add(&x->w->st_jwt_invalid, 1);
		respond_error(x, 401, auth_error_code(r), auth_error_message(r),
			      identify_www_invalid, NULL);
		return 0;
	}
	if (!identify_header_safe(cl.sub) || !identify_header_safe(cl.tier)) {
		/* both go into headers to the backend: no control bytes, ever */
		worker_counter_add(&x->w->st_jwt_invalid, 1);
		respond_error(x, 401, "invalid_token", "The token's claims are not valid.",
			      identify_www_invalid, NULL);
		return 0;
	}
	if (strcmp(cl.typ, "access") != 0) {
		worker_counter_add(&x->w->st_jwt_invalid, 1);
		respond_error(x, 401, "invalid_token", "Not an access token.",
			      identify_www_invalid, NULL);
		return 0;
	}
	if (identity_revoked(cl.jti, now)) {
		worker_counter_add(&x->w->st_jwt_invalid, 1);
		respond_error(x, 401, "token_revoked", "The token has been revoked.",
			      identify_www_invalid, NULL);
		return 0;
	}
	worker_counter_add(&x->w->st_jwt_valid, 1);
	x->id.kind = IDENTITY_USER;
	x->id.via_jwt = 1;
	x->id.user_id = strtoll(cl.sub, NULL, 10);
	util_strlcpy(x->id.sub, cl.sub, sizeof(x->id.sub));
	util_strlcpy(x->id.tier, cl.tier, sizeof(x->id.tier));
	util_strlcpy(x->id.role, cl.role, sizeof(x->id.role));
	util_strlcpy(x->id.jti, cl.jti, sizeof(x->id.jti));
	x->id.exp = cl.exp;
	identify_user_overrides(&x->id);
	identify_set_name(&x->id);
	return 1;
}

#define IDENTIFY_TOUCH_EVERY_S 60

struct identify_touch {
	char hash[65];
	int64_t at;
};

/* Pool thread: the key's last_used, written at most once a minute. */
static void
identify_touch_key(struct store *st, void *arg)
{
	const struct identify_touch *t = arg;

	if (st != NULL && store_key_touch(st, t->hash, t->at) != 0)
		log_warnx("last_used of a key not written: %s", store_error(st));
}

static int
identify_key(struct exchange *x, const char *key, size_t len)
{
	struct identity_key k;
	char hash[65];

	if (len == 0 || len > 256) {
		respond_error(x, 401, "invalid_api_key", "The API key is not valid.", NULL, NULL);
		return 0;
	}
	auth_sha256_hex(key, len, hash);
	if (!identity_key_get(hash, &k) || k.revoked ||
	    (k.expires_at != 0 && k.expires_at <= identify_now())) {
		respond_error(x, 401, "invalid_api_key", "The API key is not valid.", NULL, NULL);
		return 0;
	}
	if (identity_touch_due(k.hash, identify_now(), IDENTIFY_TOUCH_EVERY_S)) {
		struct identify_touch *t = xmalloc(sizeof(*t));
		util_strlcpy(t->hash, k.hash, sizeof(t->hash));
		t->at = identify_now();
		jobs_detached(identify_touch_key, t, free);
	}
	x->id.kind = IDENTITY_KEY;
	x->id.user_id = k.user_id;
	util_strlcpy(x->id.key_hash, k.hash, sizeof(x->id.key_hash));
	util_strlcpy(x->id.key_prefix, k.prefix, sizeof(x->id.key_prefix));
	util_strlcpy(x->id.tier, k.tier, sizeof(x->id.tier));
	util_strlcpy(x->id.role, "user", sizeof(x->id.role));
	identify_user_overrides(&x->id);
	identify_set_name(&x->id);
	return 1;
}

/* ?api_key=VALUE in the query (legacy clients). */
static const char *
identify_query_key(const struct exchange *x, size_t *len)
{
	const struct http_msg *m = &x->req;
	const char *t = x->in.data + m->target_off, *end = t + m->target_len;
	const char *q = t + m->path_len;

	if (q >= end)
		return NULL;
	q++; /* '?' */
	while (q < end) {
		const char *amp = memchr(q, '&', (size_t)(end - q));
		const char *e = amp ? amp : end;
		if (e - q > 8 && memcmp(q, "api_key=", 8) == 0) {
			*len = (size_t)(e - q - 8);
			return q + 8;
		}
		q = e + (amp != NULL);
	}
	return NULL;
}

int
identify_request(struct exchange *x, enum identify_need need)
{
	size_t len;
	const char *v;

	memset(&x->id, 0, sizeof(x->id));
	v = http_header_get(&x->req, x->in.data, HTTP_H_AUTHORIZATION, &len);
	if (v != NULL && len > 7 && strncasecmp(v, "Bearer ", 7) == 0) {
		v += 7;
		len -= 7;
		while (len > 0 && *v == ' ') {
			v++;
			len--;
		}
		if (need == IDENTIFY_KEY_ONLY) {
			respond_error(x, 401, "missing_credentials", "This route takes an API key.",
				      NULL, NULL);
			return 0;
		}
		return identify_jwt(x, v, len);
	}
	if (need == IDENTIFY_JWT) {
		respond_error(x, 401, "missing_credentials", "An access token is required.",
			      "WWW-Authenticate: Bearer\r\n", NULL);
		return 0;
	}
	v = http_header_get(&x->req, x->in.data, HTTP_H_X_API_KEY, &len);
	if (v == NULL && (v = identify_query_key(x, &len)) != NULL)
		x->id.via_query = 1;
	if (v != NULL) {
		int via_query = x->id.via_query;
		int r = identify_key(x, v, len);
		x->id.via_query = (uint8_t)via_query;
		return r;
	}
	if (need != IDENTIFY_OPTIONAL) {
		respond_error(x, 401, "missing_credentials", "Credentials are required.",
			      "WWW-Authenticate: Bearer\r\n", NULL);
		return 0;
	}
	return 1;
}

/* label then v, in decimal, appended at off (util_append_str's rules). */
static size_t
identify_append_num(char *buf, size_t off, size_t cap, const char *label, uint64_t v)
{
	return util_append_u64(buf, util_append_str(buf, off, cap, label), cap, v);
}

size_t
identify_response_headers(const struct exchange *x, char *buf, size_t cap)
{
	size_t off = 0;

	if (x->id.via_query)
		off = util_append_str(buf, off, cap, "Deprecation: true\r\n");
	if (!x->rl_set || x->id.kind == IDENTITY_NONE)
		return off > cap ? 0 : off;
	/* by hand: this runs for every identified response */
	off = identify_append_num(buf, off, cap, "X-RateLimit-Limit: ", x->rl_limit);
	off = identify_append_num(buf, off, cap, "\r\nX-RateLimit-Remaining: ", x->rl_remaining);
	off = identify_append_num(buf, off, cap, "\r\nX-RateLimit-Reset: ", x->rl_reset_s);
	off = util_append_str(buf, off, cap, "\r\nRateLimit-Policy: \"");
	off = util_append_str(buf, off, cap, x->id.tier);
	off = identify_append_num(buf, off, cap, "\";q=", x->rl_limit);
	off = identify_append_num(buf, off, cap, ";w=", x->rl_window_s);
	off = util_append_str(buf, off, cap, "\r\nRateLimit: \"");
	off = util_append_str(buf, off, cap, x->id.tier);
	off = identify_append_num(buf, off, cap, "\";r=", x->rl_remaining);
	off = identify_append_num(buf, off, cap, ";t=", x->rl_reset_s);
	off = util_append_str(buf, off, cap, "\r\n");
	return off > cap ? 0 : off;
}

/* The configured tier of id (the lowest when its name is unknown). */
const struct config_tier *
identify_tier(const struct config *cfg, const struct identity *id)
{
	int i = config_tier_find(cfg, id->tier);

	return &cfg->tiers[i < 0 ? 0 : i];
}

void
identify_rate_info(struct exchange *x, const struct ratelimit_result *res,
		   const struct conf_rate *rate)
{
	x->rl_set = 1;
	x->rl_limit = res->limit;
	x->rl_remaining = res->remaining;
	x->rl_reset_s = (res->reset_ms + 999) / 1000;
	x->rl_window_s = rate->period_ms / 1000;
}
