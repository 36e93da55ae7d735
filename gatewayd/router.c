#include <errno.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <string.h>

#include "cidr.h"
#include "proxy.h"
#include "ratelimit.h"
#include "util.h"

/*
 * The request pipeline (SPEC section 3), as a fixed table of stages run in order.
 * Each stage returns STAGE_NEXT, or STAGE_DONE when it produced a response (or
 * handed the exchange to something that will: the proxy, the queue, a body reader).
 */

enum stage_result { STAGE_NEXT, STAGE_DONE };

typedef enum stage_result (*stage_fn)(struct exchange *x);

/* Largest body a built-in endpoint reads (JSON commands). */
#define ROUTER_BODY_MAX 65536

struct builtin {
	const char *path;
	enum http_method method; /* HTTP_M_OTHER: any */
	int needs_body;
	void (*handler)(struct exchange *x);
};

static const struct builtin router_builtins[] = {
	{"/health", HTTP_M_GET, 0, api_health},
	{"/ready", HTTP_M_GET, 0, api_ready},
	{"/stats", HTTP_M_GET, 0, api_stats},
	{"/change_strategy", HTTP_M_POST, 1, api_change_strategy},
};

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
	respond_rate_limited(x, "rate_limited", "ip", rate->count, rate->period_ms / 1000,
			     res.retry_after_ms);
	return STAGE_DONE;
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

static enum stage_result
stage_builtin(struct exchange *x)
{
	const struct http_msg *m = &x->req;

	for (size_t i = 0; i < sizeof(router_builtins) / sizeof(router_builtins[0]); i++) {
		const struct builtin *bi = &router_builtins[i];
		size_t plen = strlen(bi->path);

		if (x->path_len != plen || memcmp(x->path, bi->path, plen) != 0)
			continue;
		if (bi->method != HTTP_M_OTHER && m->method != bi->method &&
		    !(bi->method == HTTP_M_GET && m->method == HTTP_M_HEAD)) {
			char allow[64];
			snprintf(allow, sizeof(allow), "Allow: %s\r\n",
				 bi->method == HTTP_M_GET ? "GET, HEAD" : "POST");
			respond_error(x, 405, "invalid_request",
				      "Method not allowed on this endpoint.", allow, NULL);
			return STAGE_DONE;
		}
		router_run_builtin(x, bi);
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

static enum stage_result
stage_proxy(struct exchange *x)
{
	proxy_start(x);
	return STAGE_DONE;
}

static const stage_fn router_stages[] = {
	stage_client_ip, stage_ip_limit, stage_builtin, stage_route, stage_limits, stage_proxy,
};

void
router_dispatch(struct exchange *x)
{
	for (size_t i = 0; i < sizeof(router_stages) / sizeof(router_stages[0]); i++)
		if (router_stages[i](x) == STAGE_DONE)
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
	if (tok == NULL || strlen(tok) != len - 7 || CRYPTO_memcmp(tok, auth + 7, len - 7) != 0) {
		respond_error(x, 401, "invalid_token", "The admin token is not valid.",
			      "WWW-Authenticate: Bearer error=\"invalid_token\"\r\n", NULL);
		return 0;
	}
	return 1;
}
