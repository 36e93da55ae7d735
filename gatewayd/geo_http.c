/*
 * The HTTP geolocation provider (`geo_http`), asked after geo_static and geo_db.
 *
 * Answers are cached for every worker in a sharded, set-associative table (one mutex per
 * shard; failures and unknown addresses cached too, for negative_ttl), so a provider sees
 * each address once per ttl. A miss starts a lookup with libcurl's multi interface on the
 * worker's own event loop (one CURLM per worker, sockets and timer as libevent events):
 * the request waits in X_WAIT, never blocking the loop, and resumes when the answer or
 * the timeout comes. Requests for an address already being looked up join that lookup.
 * Beyond `max` lookups in flight per worker a request goes on unlocated at once.
 */
#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cidr.h"
#include "geo.h"
#include "gw.h"
#include "jobs.h"
#include "log.h"
#include "proxy.h"
#include "util.h"
#include "xmalloc.h"

/* ---- the answer cache ---- */

#define GEO_CACHE_SHARDS 16
#define GEO_CACHE_WAYS 4
#define GEO_CACHE_SETS 1024 /* per shard: 16 * 1024 * 4 = 65536 addresses */
#define GEO_HTTP_BODY_MAX 8192
#define GEO_HTTP_WAITERS 16 /* requests that may wait for one lookup */

struct geo_cache_entry {
	uint8_t addr[16];
	uint8_t used;
	uint8_t found;
	uint64_t expires_ms;
	struct geo_loc loc;
};

struct geo_cache_shard {
	pthread_mutex_t lock;
	struct geo_cache_entry e[GEO_CACHE_SETS * GEO_CACHE_WAYS];
} __attribute__((aligned(GW_CACHELINE)));

static struct geo_cache_shard *geo_cache;
static pthread_once_t geo_http_once = PTHREAD_ONCE_INIT;

static void
geo_http_init_once(void)
{
	curl_global_init(CURL_GLOBAL_DEFAULT);
	geo_cache = xcalloc(GEO_CACHE_SHARDS, sizeof(*geo_cache));
	for (int i = 0; i < GEO_CACHE_SHARDS; i++)
		pthread_mutex_init(&geo_cache[i].lock, NULL);
}

/* The shard and the first way of addr's set. */
static struct geo_cache_shard *
geo_cache_set(const uint8_t addr[16], struct geo_cache_entry **set)
{
	uint64_t h = util_hash64(addr, 16);
	struct geo_cache_shard *s = &geo_cache[h % GEO_CACHE_SHARDS];

	*set = &s->e[(h / GEO_CACHE_SHARDS) % GEO_CACHE_SETS * GEO_CACHE_WAYS];
	return s;
}

/* 1 cached and located, 0 cached as unknown, -1 not cached (or expired). */
static int
geo_cache_get(const uint8_t addr[16], uint64_t now, struct geo_loc *loc)
{
	struct geo_cache_entry *set;
	struct geo_cache_shard *s = geo_cache_set(addr, &set);
	int r = -1;

	pthread_mutex_lock(&s->lock);
	for (int i = 0; i < GEO_CACHE_WAYS; i++) {
		const struct geo_cache_entry *e = &set[i];

		if (e->used && e->expires_ms > now && memcmp(e->addr, addr, 16) == 0) {
			*loc = e->loc;
			r = e->found;
			break;
		}
	}
	pthread_mutex_unlock(&s->lock);
	return r;
}

/* Stores an answer: over the same address, else an expired way, else the soonest to go. */
static void
geo_cache_put(const uint8_t addr[16], const struct geo_loc *loc, int found, uint64_t expires)
{
	struct geo_cache_entry *set, *victim;
	struct geo_cache_shard *s = geo_cache_set(addr, &set);

	pthread_mutex_lock(&s->lock);
	victim = &set[0];
	for (int i = 0; i < GEO_CACHE_WAYS; i++) {
		struct geo_cache_entry *e = &set[i];

		if (e->used && memcmp(e->addr, addr, 16) == 0) {
			victim = e;
			break;
		}
		if (!e->used || e->expires_ms < victim->expires_ms)
			victim = e;
	}
	memcpy(victim->addr, addr, 16);
	victim->used = 1;
	victim->found = (uint8_t)found;
	victim->expires_ms = expires;
	victim->loc = *loc;
	pthread_mutex_unlock(&s->lock);
}

/* ---- parsing an answer ---- */

static const cJSON *
geo_http_member(const cJSON *o, const char *const *names)
{
	for (; *names != NULL; names++) {
		const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, *names);

		if (v != NULL && !cJSON_IsNull(v))
			return v;
	}
	return NULL;
}

static int
geo_http_number(const cJSON *o, const char *const *names, double lo, double hi, double *out)
{
	const cJSON *v = geo_http_member(o, names);
	char *end = NULL;
	double d;

	if (cJSON_IsNumber(v)) {
		d = v->valuedouble;
	} else if (cJSON_IsString(v) && v->valuestring[0] != '\0') {
		d = strtod(v->valuestring, &end);
		if (*end != '\0')
			return 0;
	} else {
		return 0;
	}
	if (!(d >= lo && d <= hi))
		return 0;
	*out = d;
	return 1;
}

/* "loc": "52.52,13.40" (ipinfo.io's form). */
static int
geo_http_loc_pair(const cJSON *o, struct geo_loc *out)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, "loc");
	double lat, lon;
	char *end;

	if (!cJSON_IsString(v))
		return 0;
	lat = strtod(v->valuestring, &end);
	if (*end != ',')
		return 0;
	lon = strtod(end + 1, &end);
	if (*end != '\0' || !(lat >= -90 && lat <= 90) || !(lon >= -180 && lon <= 180))
		return 0;
	out->lat = lat;
	out->lon = lon;
	return 1;
}

int
geo_http_parse(const char *body, size_t len, struct geo_loc *out)
{
	static const char *const cc_names[] = {"country_code", "countryCode", "country", NULL};
	static const char *const lat_names[] = {"latitude", "lat", NULL};
	static const char *const lon_names[] = {"longitude", "lon", "lng", NULL};
	cJSON *o = cJSON_ParseWithLength(body, len);
	const cJSON *cc;

	memset(out, 0, sizeof(*out));
	if (!cJSON_IsObject(o)) {
		cJSON_Delete(o);
		return 0;
	}
	cc = geo_http_member(o, cc_names);
	if (cJSON_IsString(cc) && strlen(cc->valuestring) == 2 && cc->valuestring[0] >= 'A' &&
	    cc->valuestring[0] <= 'Z' && cc->valuestring[1] >= 'A' && cc->valuestring[1] <= 'Z')
		memcpy(out->country, cc->valuestring, 3);
	out->has_pos = (geo_http_number(o, lat_names, -90, 90, &out->lat) &&
	                geo_http_number(o, lon_names, -180, 180, &out->lon)) ||
	               geo_http_loc_pair(o, out);
	cJSON_Delete(o);
	return out->country[0] != '\0' || out->has_pos;
}

int
geo_http_url(const char *tmpl, const uint8_t addr[16], char *out, size_t len)
{
	const char *at = strstr(tmpl, "{ip}");
	char ip[64];
	int n;

	if (at == NULL)
		return -1;
	cidr_format_addr(addr, ip, sizeof ip);
	n = snprintf(out, len, "%.*s%s%s", (int)(at - tmpl), tmpl, ip, at + 4);
	return n < 0 || (size_t)n >= len ? -1 : 0;
}

/* ---- lookups on a worker's loop ---- */

struct geo_http_worker;

struct geo_http_req {
	struct geo_http_req *next;
	struct geo_http_worker *hw;
	CURL *easy;
	uint8_t addr[16];
	uint64_t ttl_ms, negative_ttl_ms;
	char body[GEO_HTTP_BODY_MAX];
	size_t len;
	int truncated;
	int nwaiters;
	struct exchange *waiters[GEO_HTTP_WAITERS];
};

struct geo_http_worker {
	struct worker *w;
	CURLM *multi;
	struct event *timer;
	struct geo_http_req *reqs; /* in flight */
	int inflight;
};

/* One per worker thread, created on its first lookup; reachable for the process life. */
static struct geo_http_worker *geo_hw[GW_MAX_WORKERS];

static size_t
geo_http_write(char *p, size_t size, size_t n, void *arg)
{
	struct geo_http_req *r = arg;
	size_t len = size * n, room = sizeof(r->body) - 1 - r->len;

	if (len > room) {
		r->truncated = 1;
		return 0; /* an answer this large is not a geolocation: abort the transfer */
	}
	memcpy(r->body + r->len, p, len);
	r->len += len;
	return len;
}

/* Gives each waiting request its answer and the pipeline back (geo_resume). */
static void
geo_http_finish(struct geo_http_req *r, const struct geo_loc *loc, int found)
{
	for (int i = 0; i < r->nwaiters; i++) {
		struct client *c = jobs_wait_end(r->waiters[i]);

		if (c == NULL)
			continue;
		geo_resume(r->waiters[i], loc, found);
		jobs_wait_resume(c);
	}
}

static void
geo_http_done(struct geo_http_worker *hw, CURL *easy, CURLcode rc)
{
	struct geo_http_req *r = NULL, **pp;
	struct geo_loc loc;
	long status = 0;
	int found = 0;
	char ip[64];

	curl_easy_getinfo(easy, CURLINFO_PRIVATE, (char **)&r);
	curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &status);
	memset(&loc, 0, sizeof loc);
	if (rc == CURLE_OK && status == 200)
		found = geo_http_parse(r->body, r->len, &loc);
	else if (rc != CURLE_OK)
		log_debug("geo_http %s: %s", cidr_format_addr(r->addr, ip, sizeof ip),
		          r->truncated ? "answer too large" : curl_easy_strerror(rc));
	geo_cache_put(r->addr, &loc, found,
	              hw->w->now_ms + (found ? r->ttl_ms : r->negative_ttl_ms));
	for (pp = &hw->reqs; *pp != NULL; pp = &(*pp)->next)
		if (*pp == r) {
			*pp = r->next;
			break;
		}
	hw->inflight--;
	curl_multi_remove_handle(hw->multi, easy);
	curl_easy_cleanup(easy);
	geo_http_finish(r, &loc, found);
	free(r);
}

static void
geo_http_check(struct geo_http_worker *hw)
{
	CURLMsg *m;
	int left;

	while ((m = curl_multi_info_read(hw->multi, &left)) != NULL)
		if (m->msg == CURLMSG_DONE)
			geo_http_done(hw, m->easy_handle, m->data.result);
}

static void
geo_http_event(evutil_socket_t fd, short what, void *arg)
{
	struct geo_http_worker *hw = arg;
	int flags =
	    ((what & EV_READ) ? CURL_CSELECT_IN : 0) | ((what & EV_WRITE) ? CURL_CSELECT_OUT : 0);
	int running;

	hw->w->now_ms = util_now_ms();
	curl_multi_socket_action(hw->multi, fd, flags, &running);
	geo_http_check(hw);
}

static void
geo_http_timer(evutil_socket_t fd, short what, void *arg)
{
	struct geo_http_worker *hw = arg;
	int running;

	hw->w->now_ms = util_now_ms();
	curl_multi_socket_action(hw->multi, CURL_SOCKET_TIMEOUT, 0, &running);
	geo_http_check(hw);
}

/* CURLMOPT_SOCKETFUNCTION: one persistent event per socket curl wants watched. */
static int
geo_http_socket(CURL *easy, curl_socket_t s, int what, void *arg, void *sockp)
{
	struct geo_http_worker *hw = arg;
	struct event *ev = sockp;
	short kind = EV_PERSIST;

	if (what == CURL_POLL_REMOVE) {
		if (ev != NULL)
			event_free(ev);
		curl_multi_assign(hw->multi, s, NULL);
		return 0;
	}
	if (what & CURL_POLL_IN)
		kind |= EV_READ;
	if (what & CURL_POLL_OUT)
		kind |= EV_WRITE;
	if (ev != NULL)
		event_free(ev);
	ev = event_new(hw->w->base, s, kind, geo_http_event, hw);
	event_add(ev, NULL);
	curl_multi_assign(hw->multi, s, ev);
	return 0;
}

/* CURLMOPT_TIMERFUNCTION */
static int
geo_http_set_timer(CURLM *multi, long ms, void *arg)
{
	struct geo_http_worker *hw = arg;
	struct timeval tv = {ms / 1000, (ms % 1000) * 1000};

	if (ms < 0)
		evtimer_del(hw->timer);
	else
		evtimer_add(hw->timer, &tv);
	return 0;
}

static struct geo_http_worker *
geo_http_worker(struct worker *w)
{
	struct geo_http_worker *hw = geo_hw[w->id];

	if (hw != NULL)
		return hw;
	pthread_once(&geo_http_once, geo_http_init_once);
	hw = xcalloc(1, sizeof(*hw));
	hw->w = w;
	hw->multi = curl_multi_init();
	hw->timer = evtimer_new(w->base, geo_http_timer, hw);
	curl_multi_setopt(hw->multi, CURLMOPT_SOCKETFUNCTION, geo_http_socket);
	curl_multi_setopt(hw->multi, CURLMOPT_SOCKETDATA, hw);
	curl_multi_setopt(hw->multi, CURLMOPT_TIMERFUNCTION, geo_http_set_timer);
	curl_multi_setopt(hw->multi, CURLMOPT_TIMERDATA, hw);
	geo_hw[w->id] = hw;
	return hw;
}

static int
geo_http_start(struct geo_http_worker *hw, struct exchange *x)
{
	const struct config_geo_http *cfg = &x->rt->cfg->geo_http;
	struct geo_http_req *r = xcalloc(1, sizeof(*r));
	char url[CONFIG_PATH_MAX + 64];

	if (geo_http_url(cfg->url, x->client_ip, url, sizeof url) < 0 ||
	    (r->easy = curl_easy_init()) == NULL) {
		free(r);
		return -1;
	}
	r->hw = hw;
	memcpy(r->addr, x->client_ip, 16);
	r->ttl_ms = cfg->ttl_ms;
	r->negative_ttl_ms = cfg->negative_ttl_ms;
	curl_easy_setopt(r->easy, CURLOPT_URL, url);
	curl_easy_setopt(r->easy, CURLOPT_PRIVATE, r);
	curl_easy_setopt(r->easy, CURLOPT_WRITEFUNCTION, geo_http_write);
	curl_easy_setopt(r->easy, CURLOPT_WRITEDATA, r);
	curl_easy_setopt(r->easy, CURLOPT_TIMEOUT_MS, (long)cfg->timeout_ms);
	curl_easy_setopt(r->easy, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(r->easy, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(r->easy, CURLOPT_USERAGENT, "gatewayd-geo");
	if (curl_multi_add_handle(hw->multi, r->easy) != CURLM_OK) {
		curl_easy_cleanup(r->easy);
		free(r);
		return -1;
	}
	r->next = hw->reqs;
	hw->reqs = r;
	hw->inflight++;
	r->waiters[r->nwaiters++] = x;
	return 0;
}

int
geo_http_lookup(struct exchange *x, struct geo_loc *loc)
{
	struct geo_http_worker *hw;
	struct geo_http_req *r;
	int c;

	pthread_once(&geo_http_once, geo_http_init_once);
	if ((c = geo_cache_get(x->client_ip, x->w->now_ms, loc)) >= 0)
		return c;
	memset(loc, 0, sizeof(*loc));
	hw = geo_http_worker(x->w);
	for (r = hw->reqs; r != NULL; r = r->next)
		if (memcmp(r->addr, x->client_ip, 16) == 0)
			break;
	if (r != NULL && r->nwaiters < GEO_HTTP_WAITERS)
		r->waiters[r->nwaiters++] = x; /* the same address is being looked up */
	else if (r != NULL || hw->inflight >= x->rt->cfg->geo_http.max || geo_http_start(hw, x) < 0)
		return 0; /* over the bounds: this request goes on unlocated */
	x->phase = X_WAIT;
	x->job_pending = 1; /* client_close orphans x instead of freeing it */
	return -1;
}
