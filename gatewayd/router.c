#include <errno.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "api.h"
#include "cache.h"
#include "cidr.h"
#include "dashboard.h"
#include "geo.h"
#include "identify.h"
#include "identity.h"
#include "jobs.h"
#include "log.h"
#include "proxy.h"
#include "ratelimit.h"
#include "redis.h"
#include "store.h"
#include "util.h"
#include "ws.h"
#include "xmalloc.h"

/*
 * The request pipeline (SPEC section 3), as a fixed table of stages run in order.
 * Each stage returns STAGE_NEXT, or STAGE_DONE when it produced a response (or
 * handed the exchange to something that will: the proxy, the queue, a body reader).
 */

/* STAGE_WAIT: the exchange waits (a Redis reply) and something else resumes it. */
enum stage_result { STAGE_NEXT, STAGE_DONE, STAGE_WAIT };

struct router_ban {
	char kind[16];
	char name[96];
	int64_t until;
	int level;
};

typedef enum stage_result (*stage_fn)(struct exchange *x);

/* Largest body a built-in endpoint reads (JSON commands). */
#define ROUTER_BODY_MAX 65536

/* What a built-in endpoint needs before its handler runs (api.h). */
enum builtin_auth { BI_OPEN, BI_JWT, BI_CREDENTIAL, BI_ADMIN };

struct builtin {
	const char *path;
	int prefix;              /* path is a prefix (/auth/api-keys/{prefix}) */
	enum http_method method; /* GET also serves HEAD */
	int needs_body;
	enum builtin_auth auth;
	void (*handler)(struct exchange *x);
};

/* clang-format off */
static const struct builtin router_builtins[] = {
	{"/health", 0, HTTP_M_GET, 0, BI_OPEN, api_health},
	{"/ready", 0, HTTP_M_GET, 0, BI_OPEN, api_ready},
	{"/stats", 0, HTTP_M_GET, 0, BI_OPEN, api_stats},
	{"/geo/stats", 0, HTTP_M_GET, 0, BI_OPEN, api_geo_stats},
	{"/metrics", 0, HTTP_M_GET, 0, BI_OPEN, api_metrics},
	{"/dashboard", 0, HTTP_M_GET, 0, BI_OPEN, dashboard_handle},
	{"/ws", 0, HTTP_M_GET, 0, BI_OPEN, ws_handle_upgrade},
	{"/.well-known/jwks.json", 0, HTTP_M_GET, 0, BI_OPEN, api_auth_jwks},
	{"/usage", 0, HTTP_M_GET, 0, BI_CREDENTIAL, api_usage},
	{"/auth/register", 0, HTTP_M_POST, 1, BI_OPEN, api_auth_register},
	{"/auth/login", 0, HTTP_M_POST, 1, BI_OPEN, api_auth_login},
	{"/auth/refresh", 0, HTTP_M_POST, 1, BI_OPEN, api_auth_refresh},
	{"/auth/migrate", 0, HTTP_M_POST, 1, BI_OPEN, api_auth_migrate},
	{"/auth/logout", 0, HTTP_M_POST, 1, BI_JWT, api_auth_logout},
	{"/auth/me", 0, HTTP_M_GET, 0, BI_JWT, api_auth_me},
	{"/auth/api-keys", 0, HTTP_M_POST, 1, BI_JWT, api_auth_keys_create},
	{"/auth/api-keys", 0, HTTP_M_GET, 0, BI_JWT, api_auth_keys_list},
	{"/auth/api-keys/rotate", 0, HTTP_M_POST, 1, BI_CREDENTIAL, api_auth_keys_rotate},
	{"/auth/api-keys/", 1, HTTP_M_DELETE, 0, BI_JWT, api_auth_keys_revoke},
	{"/admin/users", 0, HTTP_M_GET, 0, BI_ADMIN, api_admin_users},
	{"/admin/logs", 0, HTTP_M_GET, 0, BI_ADMIN, api_admin_logs},
	{"/logs", 0, HTTP_M_GET, 0, BI_ADMIN, api_logs},
	{"/admin/upgrade_tier", 0, HTTP_M_POST, 1, BI_ADMIN, api_admin_upgrade_tier},
	{"/admin/block_key", 0, HTTP_M_POST, 1, BI_ADMIN, api_admin_block_key},
	{"/admin/unblock_key", 0, HTTP_M_POST, 1, BI_ADMIN, api_admin_unblock_key},
	{"/admin/block_ip", 0, HTTP_M_POST, 1, BI_ADMIN, api_admin_block_ip},
	{"/admin/unblock_ip", 0, HTTP_M_POST, 1, BI_ADMIN, api_admin_unblock_ip},
	{"/change_strategy", 0, HTTP_M_POST, 1, BI_ADMIN, api_change_strategy},
	{"/admin/cache/purge", 0, HTTP_M_POST, 1, BI_ADMIN, api_cache_purge},
};
/* clang-format on */

/*
 * The client's address: the socket peer, or, when the peer is a trusted proxy, the
 * right-most X-Forwarded-For hop that is not itself a trusted proxy. Hops are read
 * right to left because only the ones our own proxies appended can be believed.
 */
static void
stage_client_ip_xff(struct exchange *x, const char *v, size_t len)
{
	const char *end = v + len;

	while (end > v) {
		const char *p = end;
		uint8_t addr[16];

		while (p > v && p[-1] != ',')
			p--;
		const char *s = p, *e = end;
		while (s < e && (*s == ' ' || *s == '\t'))
			s++;
		while (e > s && (e[-1] == ' ' || e[-1] == '\t'))
			e--;
		if (cidr_parse_addr(s, (size_t)(e - s), addr) != 0)
			return; /* garbage: keep the last believable hop */
		memcpy(x->client_ip, addr, 16);
		if (cidr_tree_match(x->rt->trusted, addr, NULL) == NULL)
			return;
		end = p > v ? p - 1 : v;
	}
}

/* The path routes and built-ins match: origin-form as is, absolute-form minus
 * "scheme://authority" (RFC 9112 3.2.2). */
static void
router_path(struct exchange *x)
{
	const struct http_msg *m = &x->req;
	const char *t = x->in.data + m->target_off;
	const char *end = t + m->path_len;

	x->path = t;
	x->path_len = m->path_len;
	if (m->path_len == 0 || t[0] == '/')
		return;
	const char *p = memmem(t, m->path_len, "://", 3);
	if (p == NULL)
		return;
	p += 3;
	while (p < end && *p != '/')
		p++;
	if (p == end) {
		x->path = "/";
		x->path_len = 1;
	} else {
		x->path = p;
		x->path_len = (uint32_t)(end - p);
	}
}

static enum stage_result
stage_client_ip(struct exchange *x)
{
	proxy_make_request_id(x);
	router_path(x);
	memcpy(x->client_ip, x->c->peer, 16);
	if (x->rt->cfg->ntrusted_proxy == 0 ||
	    cidr_tree_match(x->rt->trusted, x->c->peer, NULL) == NULL)
		return STAGE_NEXT;
	/* Several X-Forwarded-For lines form one list; the last line is the right end. */
	for (int i = x->req.nhdr - 1; i >= 0; i--) {
		const struct http_header *h = &x->req.hdr[i];
		if (h->id == HTTP_H_X_FORWARDED_FOR) {
			stage_client_ip_xff(x, x->in.data + h->value_off, h->value_len);
			break;
		}
	}
	return STAGE_NEXT;
}

/* "ip:ADDR", the client address as a ban name; formatted only when a ban needs it. */
static const char *
router_ip_name(struct exchange *x)
{
	if (x->ip_name[0] == '\0') {
		char addr[64];

		cidr_format_addr(x->client_ip, addr, sizeof(addr));
		snprintf(x->ip_name, sizeof(x->ip_name), "ip:%s", addr);
	}
	return x->ip_name;
}

static void
router_respond_banned(struct exchange *x, const char *tier, const struct conf_rate *rate,
		      int64_t left_s)
{
	respond_rate_limited(x, "temporarily_banned", tier, rate->count, rate->period_ms / 1000,
			     (uint64_t)left_s * 1000);
}

static void
router_persist_ban(struct store *st, void *arg)
{
	const struct router_ban *b = arg;

	if (st != NULL && store_ban_set(st, b->kind, b->name, b->until, b->level) != 0)
		log_warnx("ban of %s not persisted: %s", b->name, store_error(st));
}

/*
 * A rejection by a limit counts towards a progressive ban (SPEC section 5): more than
 * `threshold` rejections inside one window of the limit ban the name for `base`, each
 * further ban `multiplier` times longer, up to `max`. A new ban is persisted off-loop.
 */
static void
router_ban_account(struct exchange *x, const char *name, const struct conf_rate *rate)
{
	const struct config_ban *cb = &x->rt->cfg->ban;
	int64_t now = (int64_t)time(NULL);
	int level = 0;
	int64_t len = identity_ban_reject(name, now, rate->period_ms / 1000 ? rate->period_ms / 1000 : 1,
					  cb->threshold, cb->base_ms / 1000, cb->multiplier,
					  cb->max_ms / 1000, &level);

	if (len > 0) {
		struct router_ban *b = xcalloc(1, sizeof(*b));

		util_strlcpy(b->kind, strncmp(name, "ip:", 3) == 0 ? "ip" : "identity",
			     sizeof(b->kind));
		util_strlcpy(b->name, name, sizeof(b->name));
		b->until = now + len;
		b->level = level;
		log_info("%s banned for %llds (ban #%d)", name, (long long)len, level);
		jobs_detached(router_persist_ban, b, free);
	}
}

static enum stage_result
stage_ip_limit(struct exchange *x)
{
	const struct conf_rate *rate = &x->rt->cfg->ip_limit;
	struct ratelimit_result res;

	if (rate->count == 0 || cidr_tree_match(x->rt->exempt, x->client_ip, NULL) != NULL)
		return STAGE_NEXT;
	ratelimit_check(gw.ip_limiter, x->client_ip, 16, rate, x->w->now_ms, &res);
	if (res.allowed) {
		worker_counter_add(&x->w->st_ip_allowed, 1);
		return STAGE_NEXT;
	}
	worker_counter_add(&x->w->st_ip_rejected, 1);
	router_ban_account(x, router_ip_name(x), rate);
	respond_rate_limited(x, "rate_limited", "ip", rate->count, rate->period_ms / 1000,
			     res.retry_after_ms);
	return STAGE_DONE;
}

/* Admin IP blocks (403 on every path) and progressive IP bans (429). */
static enum stage_result
stage_ip_block(struct exchange *x)
{
	int64_t now = (int64_t)time(NULL), left;

	if (identity_blocked_ip(x->client_ip, now)) {
		respond_error(x, 403, "ip_blocked", "This address is blocked.", NULL, NULL);
		return STAGE_DONE;
	}
	if (identity_bans_present() && (left = identity_banned(router_ip_name(x), now)) > 0) {
		worker_counter_add(&x->w->st_banned, 1);
		router_respond_banned(x, "ip", &x->rt->cfg->ip_limit, left);
		return STAGE_DONE;
	}
	return STAGE_NEXT;
}

static void
router_run_builtin(struct exchange *x, const struct builtin *bi)
{
	const struct http_msg *m = &x->req;

	if (!bi->needs_body || m->body == HTTP_BODY_NONE) {
		bi->handler(x);
		return;
	}
	if (m->body != HTTP_BODY_LENGTH) {
		x->close_client = 1;
		respond_error(x, 411, "invalid_request", "A Content-Length is required.", NULL,
			      NULL);
		return;
	}
	if (m->content_length > ROUTER_BODY_MAX || m->content_length > x->in.cap - m->head_len) {
		x->close_client = 1;
		respond_error(x, 413, "body_too_large", "The request body is too large.", NULL,
			      NULL);
		return;
	}
	x->body_handler = bi->handler;
	x->phase = X_BODY;
	router_read_body(x);
}

void
router_read_body(struct exchange *x)
{
	struct client *c = x->c;
	uint64_t want = x->req.head_len + x->req.content_length;

	while (x->in.end < want && c->readable) {
		ssize_t n = client_read(c, x->in.data + x->in.end, x->in.cap - x->in.end);
		if (n == 0 || (n < 0 && errno != EAGAIN)) {
			client_close(c);
			return;
		}
		if (n > 0)
			x->in.end += (uint32_t)n;
	}
	if (x->in.end < want)
		return;
	x->phase = X_HEAD;
	x->body_handler(x);
}

static int
router_builtin_matches(const struct exchange *x, const struct builtin *bi)
{
	size_t plen;

	/* every built-in path starts with '/': the second byte rules out most of them */
	if (x->path_len < 2 || x->path[1] != bi->path[1])
		return 0;
	plen = strlen(bi->path);
	if (bi->prefix)
		return x->path_len > plen && memcmp(x->path, bi->path, plen) == 0;
	return x->path_len == plen && memcmp(x->path, bi->path, plen) == 0;
}

static enum stage_result
stage_identity_block(struct exchange *x);

/* 1 when an admin blocked the caller's key or user. */
static int
router_identity_blocked(const struct exchange *x)
{
	const struct identity *id = &x->id;
	int64_t now = (int64_t)time(NULL);
	char uid[32];

	if (!identity_blocks_present())
		return 0;
	snprintf(uid, sizeof(uid), "%lld", (long long)id->user_id);
	return (id->kind == IDENTITY_KEY && identity_blocked("key", id->key_hash, now)) ||
	       (id->user_id > 0 && identity_blocked("user", uid, now));
}

/*
 * The rate-limit headers go on every response to an identified request (SPEC section
 * 5), also those that are not counted (built-in endpoints, blocks, bans): the state is
 * read without consuming.
 */
static void
router_rate_peek(struct exchange *x)
{
	const struct config_tier *t;
	struct ratelimit_result res;

	if (x->id.kind == IDENTITY_NONE || x->rl_set)
		return;
	t = identify_tier(x->rt->cfg, &x->id);
	if (redis_on)
		redis_peek(x->id.name, &t->rate, &res);
	else
		ratelimit_peek(gw.id_limiter, x->id.name, strlen(x->id.name), &t->rate,
			       x->w->now_ms, &res);
	identify_rate_info(x, &res, &t->rate);
}

/*
 * Built-in endpoints that identify the caller honour its admin blocks too: a blocked key
 * must not rotate itself into an unblocked one. Progressive bans are about traffic to the
 * backends, which these endpoints do not count, so a banned user can still see its keys
 * and usage. 0 when it answered.
 */
static int
router_identify_builtin(struct exchange *x, enum identify_need need)
{
	if (!identify_request(x, need))
		return 0;
	router_rate_peek(x);
	if (router_identity_blocked(x)) {
		respond_error(x, 403, "blocked", "This client is blocked.", NULL, NULL);
		return 0;
	}
	return 1;
}

/* "Allow: GET, HEAD, POST\r\n" for the built-in endpoint at x's path (a 405). */
static const char *
router_allow_header(struct exchange *x)
{
	static __thread char buf[96];
	size_t off = (size_t)snprintf(buf, sizeof(buf), "Allow:");
	const char *sep = " ";

	for (size_t i = 0; i < sizeof(router_builtins) / sizeof(router_builtins[0]); i++) {
		const struct builtin *bi = &router_builtins[i];

		if (!router_builtin_matches(x, bi))
			continue;
		off += (size_t)snprintf(buf + off, sizeof(buf) - off, "%s%s", sep,
					bi->method == HTTP_M_GET    ? "GET, HEAD"
					: bi->method == HTTP_M_POST ? "POST"
								    : "DELETE");
		sep = ", ";
		if (off >= sizeof(buf) - 8)
			break;
	}
	snprintf(buf + off, sizeof(buf) - off, "\r\n");
	return buf;
}

/* The caller check a built-in endpoint asks for; 0 when it answered. */
static int
router_builtin_allowed(struct exchange *x, const struct builtin *bi)
{
	switch (bi->auth) {
	case BI_JWT:
		return router_identify_builtin(x, IDENTIFY_JWT);
	case BI_CREDENTIAL:
		return router_identify_builtin(x, IDENTIFY_ANY);
	case BI_ADMIN:
		return router_admin_check(x);
	default:
		return 1;
	}
}

static enum stage_result
stage_builtin(struct exchange *x)
{
	const struct http_msg *m = &x->req;
	int path_matched = 0;

	for (size_t i = 0; i < sizeof(router_builtins) / sizeof(router_builtins[0]); i++) {
		const struct builtin *bi = &router_builtins[i];

		if (!router_builtin_matches(x, bi))
			continue;
		path_matched = 1;
		if (m->method != bi->method &&
		    !(bi->method == HTTP_M_GET && m->method == HTTP_M_HEAD))
			continue;
		if (!router_builtin_allowed(x, bi))
			return STAGE_DONE;
		router_run_builtin(x, bi);
		return STAGE_DONE;
	}
	if (path_matched) {
		respond_error(x, 405, "invalid_request", "Method not allowed on this endpoint.",
			      router_allow_header(x), NULL);
		return STAGE_DONE;
	}
	return STAGE_NEXT;
}

static enum stage_result
stage_route(struct exchange *x)
{
	x->route = config_route_match(x->rt->cfg, x->path, x->path_len);
	if (x->route == NULL) {
		respond_error(x, 404, "not_found", "No route matches this path.", NULL, NULL);
		return STAGE_DONE;
	}
	return STAGE_NEXT;
}

static enum stage_result
stage_identity(struct exchange *x)
{
	static const enum identify_need need[] = {
		[CONFIG_AUTH_NONE] = IDENTIFY_OPTIONAL, [CONFIG_AUTH_JWT] = IDENTIFY_JWT,
		[CONFIG_AUTH_APIKEY] = IDENTIFY_KEY_ONLY, [CONFIG_AUTH_ANY] = IDENTIFY_ANY,
	};

	if (x->route->auth == CONFIG_AUTH_OFF)
		return STAGE_NEXT; /* pass-through: credentials are the backend's business */
	return identify_request(x, need[x->route->auth]) ? STAGE_NEXT : STAGE_DONE;
}

/* Admin blocks of keys and users (403) and progressive identity bans (429). */
static enum stage_result
stage_identity_block(struct exchange *x)
{
	const struct identity *id = &x->id;
	int64_t now = (int64_t)time(NULL), left;

	if (id->kind == IDENTITY_NONE)
		return STAGE_NEXT;
	if (router_identity_blocked(x)) {
		router_rate_peek(x);
		respond_error(x, 403, "blocked", "This client is blocked.", NULL, NULL);
		return STAGE_DONE;
	}
	if ((left = identity_banned(id->name, now)) > 0) {
		const struct config_tier *t = identify_tier(x->rt->cfg, id);
		router_rate_peek(x);
		worker_counter_add(&x->w->st_banned, 1);
		router_respond_banned(x, t->name, &t->rate, left);
		return STAGE_DONE;
	}
	return STAGE_NEXT;
}

/*
 * The shared limiter's verdict (redis.c): DONE when it answered, NEXT when res holds the
 * decision (taken in Redis, or locally when Redis is away and redis_failure is open).
 */
static enum stage_result
router_tier_shared(struct exchange *x, const struct config_tier *t, int verdict,
		   struct ratelimit_result *res)
{
	if (verdict == REDIS_UNAVAILABLE) {
		respond_error(x, 503, "limiter_unavailable",
			      "The shared rate limiter is unreachable.", "Retry-After: 1\r\n", NULL);
		return STAGE_DONE;
	}
	if (verdict == REDIS_LOCAL)
		ratelimit_check(gw.id_limiter, x->id.name, strlen(x->id.name), &t->rate,
				x->w->now_ms, res);
	return STAGE_NEXT;
}

/* The tier limit's answer, from the decision in res. */
static enum stage_result
router_tier_decided(struct exchange *x, const struct config_tier *t,
		    const struct ratelimit_result *res)
{
	identify_rate_info(x, res, &t->rate);
	if (res->allowed) {
		worker_counter_add(&x->w->st_tier_allowed, 1);
		metrics_ratelimit(x->w, t->name, 1);
		return STAGE_NEXT;
	}
	worker_counter_add(&x->w->st_tier_rejected, 1);
	metrics_ratelimit(x->w, t->name, 0);
	router_ban_account(x, x->id.name, &t->rate);
	respond_rate_limited(x, "rate_limited", t->name, t->rate.count, t->rate.period_ms / 1000,
			     res->retry_after_ms);
	return STAGE_DONE;
}

static enum stage_result
stage_tier_limit(struct exchange *x)
{
	const struct config_tier *t;
	struct ratelimit_result res;
	int verdict;

	if (x->id.kind == IDENTITY_NONE)
		return STAGE_NEXT;
	t = identify_tier(x->rt->cfg, &x->id);
	identity_count(x->id.name);
	/* the queue serves better tiers first (enterprise ranks highest) */
	x->qprio = (uint8_t)(t - x->rt->cfg->tiers > 3 ? 3 : t - x->rt->cfg->tiers);
	if (redis_on) {
		if ((verdict = redis_limit(x, &t->rate, &res)) == REDIS_WAIT)
			return STAGE_WAIT;
		if (router_tier_shared(x, t, verdict, &res) == STAGE_DONE)
			return STAGE_DONE;
		return router_tier_decided(x, t, &res);
	}
	ratelimit_check(gw.id_limiter, x->id.name, strlen(x->id.name), &t->rate, x->w->now_ms,
			&res);
	return router_tier_decided(x, t, &res);
}

static enum stage_result
stage_tier_check(struct exchange *x)
{
	const struct config *cfg = x->rt->cfg;
	int need;

	if (x->route->min_tier[0] == '\0')
		return STAGE_NEXT;
	need = config_tier_find(cfg, x->route->min_tier);
	if (x->id.kind == IDENTITY_NONE) {
		respond_error(x, 401, "missing_credentials", "Credentials are required.",
			      "WWW-Authenticate: Bearer\r\n", NULL);
		return STAGE_DONE;
	}
	if (config_tier_find(cfg, x->id.tier) < need) {
		char msg[160];
		snprintf(msg, sizeof(msg), "This route needs the %s tier or better.",
			 x->route->min_tier);
		respond_error(x, 403, "insufficient_tier", msg, NULL, NULL);
		return STAGE_DONE;
	}
	return STAGE_NEXT;
}

static enum stage_result
stage_limits(struct exchange *x)
{
	const struct http_msg *m = &x->req;

	if (m->method == HTTP_M_CONNECT) {
		x->close_client = 1;
		respond_error(x, 405, "invalid_request", "CONNECT is not supported: this is a "
			      "reverse proxy.", NULL, NULL);
		return STAGE_DONE;
	}
	if (m->body == HTTP_BODY_LENGTH && m->content_length > x->rt->cfg->limits.body) {
		x->close_client = 1;
		respond_error(x, 413, "body_too_large", "The request body is too large.", NULL,
			      NULL);
		return STAGE_DONE;
	}
	return STAGE_NEXT;
}

/* Routes with cache=on: a hit is answered here, a miss goes on (cache.c). */
static enum stage_result
stage_cache(struct exchange *x)
{
	if (!x->route->cache)
		return STAGE_NEXT;
	return cache_request(x) ? STAGE_DONE : STAGE_NEXT;
}

/* The client's datacenters, nearest first (geo.c); 503 when residency leaves none. */
static enum stage_result
stage_geo(struct exchange *x)
{
	return geo_route(x) ? STAGE_NEXT : STAGE_DONE;
}

static enum stage_result
stage_proxy(struct exchange *x)
{
	proxy_start(x);
	return STAGE_DONE;
}

/* SPEC section 3, in order. */
static const stage_fn router_stages[] = {
	stage_client_ip, stage_ip_block,       stage_ip_limit,   stage_builtin,
	stage_route,     stage_identity,       stage_identity_block, stage_tier_limit,
	stage_tier_check, stage_limits,        stage_cache,      stage_geo,
	stage_proxy,
};

/* Runs the stages that follow `after` (a stage that finished asynchronously). */
static void
router_run_after(struct exchange *x, stage_fn after)
{
	size_t i = 0, n = sizeof(router_stages) / sizeof(router_stages[0]);

	while (i < n && router_stages[i] != after)
		i++;
	for (i++; i < n; i++)
		if (router_stages[i](x) != STAGE_NEXT)
			return;
}

void
router_after_cache(struct exchange *x)
{
	router_run_after(x, stage_cache);
}

void
router_tier_resume(struct exchange *x, int verdict, const struct ratelimit_result *res)
{
	const struct config_tier *t = identify_tier(x->rt->cfg, &x->id);
	struct ratelimit_result r = *res;

	if (router_tier_shared(x, t, verdict, &r) == STAGE_NEXT &&
	    router_tier_decided(x, t, &r) == STAGE_NEXT)
		router_run_after(x, stage_tier_limit);
}

void
router_dispatch(struct exchange *x)
{
	for (size_t i = 0; i < sizeof(router_stages) / sizeof(router_stages[0]); i++)
		if (router_stages[i](x) != STAGE_NEXT)
			return;
}

int
router_admin_check(struct exchange *x)
{
	size_t len;
	const char *auth = http_header_get(&x->req, x->in.data, HTTP_H_AUTHORIZATION, &len);
	const char *tok = gw.admin_token;

	if (cidr_tree_match(x->rt->admin_allow, x->client_ip, NULL) == NULL) {
		respond_error(x, 403, "forbidden", "Admin endpoints are not reachable from here.",
			      NULL, NULL);
		return 0;
	}
	if (auth == NULL || len < 7 || strncasecmp(auth, "Bearer ", 7) != 0) {
		respond_error(x, 401, "missing_credentials", "An admin bearer token is required.",
			      "WWW-Authenticate: Bearer\r\n", NULL);
		return 0;
	}
	/* Constant time, so the token cannot be guessed byte by byte from timings. */
	if (tok != NULL && strlen(tok) == len - 7 && CRYPTO_memcmp(tok, auth + 7, len - 7) == 0)
		return 1;
	/* else an access JWT with role=admin */
	if (len - 7 > 20 && memchr(auth + 7, '.', len - 7) != NULL) {
		if (!identify_request(x, IDENTIFY_JWT))
			return 0;
		if (strcmp(x->id.role, "admin") == 0)
			return 1;
		respond_error(x, 403, "forbidden", "This token is not an admin's.", NULL, NULL);
		return 0;
	}
	respond_error(x, 401, "invalid_token", "The admin token is not valid.",
		      "WWW-Authenticate: Bearer error=\"invalid_token\"\r\n", NULL);
	return 0;
}
