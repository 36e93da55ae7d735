#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <syslog.h>

#include <nng/nng.h>

#include "config.h"
#include "gw.h"
#include "identity.h"
#include "ipc.h"
#include "log.h"
#include "metrics.h"
#include "publish.h"
#include "stats.h"
#include "util.h"
#include "worker.h"
#include "ws.h"
#include "xmalloc.h"

/*
 * Rates are differences between two snapshots of the cumulative per-worker counters
 * taken a second apart by the log thread, so the hot path pays nothing for them. The
 * busiest identities come from the access-log records of the second (every request
 * passes through the log thread), counted in an open-addressing table that is emptied
 * each second; when it is full, further identities of that second are not ranked.
 */

#define PUBLISH_TAB 32768 /* identity slots per second (a power of two) */
#define PUBLISH_MAX_BACKENDS 256

struct publish_key {
	char identity[24];
	char prefix[16]; /* an API key's public prefix, "" for users */
	char tier[16];
	uint64_t n;
	uint64_t limit, remaining;
	uint8_t rl_set, blocked;
};

/* Cumulative counters at the previous second. */
struct publish_snap {
	uint64_t ms;
	uint64_t requests, errors, proxied;
	uint64_t hits, misses;
	uint64_t fine[METRICS_FINE];
	int nb;
	char bid[PUBLISH_MAX_BACKENDS][CONFIG_NAME_MAX];
	uint64_t breq[PUBLISH_MAX_BACKENDS];
};

static struct {
	int open;
	nng_socket sock;
	char url[256];

	/* the log thread's */
	struct publish_key *tab;
	uint32_t *used; /* slots filled this second */
	uint32_t nused;
	uint64_t logs_this_second, seen_this_second;
	uint64_t logs_published; /* `log` messages ever sent (the stats message's count) */
	uint64_t sample_every;   /* one request in this many goes out as `log` (>= 1) */
	struct publish_snap prev;
} pub;

static void publish_log_hook(int prio, const char *msg);

int
publish_start(const struct config *cfg, char *err, size_t errlen)
{
	pub.tab = xcalloc(PUBLISH_TAB, sizeof(*pub.tab));
	pub.used = xcalloc(PUBLISH_TAB, sizeof(*pub.used));
	if (ipc_pub_open(cfg->publish, &pub.sock, err, errlen) != 0)
		return -1;
	util_strlcpy(pub.url, cfg->publish, sizeof(pub.url));
	pub.open = 1;
	log_set_hook(publish_log_hook);
	return 0;
}

void
publish_stop(void)
{
	log_set_hook(NULL);
	if (pub.open)
		nng_close(pub.sock);
	pub.open = 0;
	free(pub.tab);
	free(pub.used);
	pub.tab = NULL;
	pub.used = NULL;
}

void
publish_message(const char *topic, const char *json, size_t len)
{
	size_t tl = strlen(topic);
	nng_msg *m;

	ws_broadcast(json, len); /* the dashboard's WebSocket clients (ws.c) */
	if (!pub.open || nng_msg_alloc(&m, tl + 1 + len) != 0)
		return;
	memcpy(nng_msg_body(m), topic, tl);
	((char *)nng_msg_body(m))[tl] = ' ';
	memcpy((char *)nng_msg_body(m) + tl + 1, json, len);
	/* PUB never waits for a subscriber: a slow one loses messages, not us */
	if (nng_sendmsg(pub.sock, m, NNG_FLAG_NONBLOCK) != 0)
		nng_msg_free(m);
}

static double
publish_now_s(void)
{
	struct timeval tv;

	gettimeofday(&tv, NULL);
	return (double)tv.tv_sec + (double)tv.tv_usec / 1e6;
}

static void
publish_object(const char *topic, cJSON *o)
{
	char *s = cJSON_PrintUnformatted(o);

	if (s != NULL)
		publish_message(topic, s, strlen(s));
	cJSON_free(s);
}

static void
publish_event_level(const char *level, const char *msg)
{
	cJSON *o = cJSON_CreateObject();

	cJSON_AddStringToObject(o, "type", "event");
	cJSON_AddNumberToObject(o, "time", publish_now_s());
	cJSON_AddStringToObject(o, "level", level);
	cJSON_AddStringToObject(o, "message", msg);
	publish_object("event", o);
	cJSON_Delete(o);
}

void
publish_event(const char *fmt, ...)
{
	char msg[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	publish_event_level("info", msg);
}

/* log.c's hook: what the daemon logs (backend up/down, reloads, blocks...) is an event. */
static void
publish_log_hook(int prio, const char *msg)
{
	publish_event_level(prio <= LOG_WARNING ? "warning" : "info", msg);
}

/* --- per-second identity counts --- */

void
publish_count(const struct accesslog_rec *r)
{
	uint32_t i;
	struct publish_key *k;

	pub.seen_this_second++;
	if (r->identity[0] == '\0' || pub.tab == NULL || pub.nused >= PUBLISH_TAB * 3 / 4)
		return;
	i = (uint32_t)util_hash64(r->identity, strlen(r->identity)) & (PUBLISH_TAB - 1);
	while (pub.tab[i].n != 0 && strcmp(pub.tab[i].identity, r->identity) != 0)
		i = (i + 1) & (PUBLISH_TAB - 1);
	k = &pub.tab[i];
	if (k->n == 0) {
		memcpy(k->identity, r->identity, sizeof(k->identity));
		pub.used[pub.nused++] = i;
	}
	k->n++;
	memcpy(k->tier, r->tier, sizeof(k->tier));
	memcpy(k->prefix, r->key_prefix, sizeof(k->prefix));
	if (r->rl != ACCESSLOG_RL_NONE) {
		k->rl_set = 1;
		k->limit = r->rl_limit;
		k->remaining = r->rl == ACCESSLOG_RL_REJECTED ? 0 : r->rl_remaining;
	}
	/* the latest answer says whether the identity is blocked now */
	k->blocked = r->status == 403 && strcmp(r->error, "blocked") == 0;
}

int
publish_log_wanted(void)
{
	return pub.logs_this_second < PUBLISH_LOG_PER_SECOND &&
	       (pub.sample_every <= 1 || pub.seen_this_second % pub.sample_every == 0);
}

void
publish_log(const char *line, size_t len)
{
	static const char head[] = "{\"type\":\"log\",";
	char buf[1200];

	/* the line is {"time":...}: insert the type after its brace */
	if (len < 2 || len + sizeof(head) > sizeof(buf))
		return;
	memcpy(buf, head, sizeof(head) - 1);
	memcpy(buf + sizeof(head) - 1, line + 1, len - 1);
	pub.logs_this_second++;
	pub.logs_published++;
	publish_message("log", buf, sizeof(head) - 2 + len);
}

static int
publish_key_cmp(const void *a, const void *b)
{
	const struct publish_key *x = *(const struct publish_key *const *)a;
	const struct publish_key *y = *(const struct publish_key *const *)b;

	return x->n < y->n ? 1 : x->n > y->n ? -1 : strcmp(x->identity, y->identity);
}

static void
publish_top_keys(cJSON *root, double interval_s)
{
	cJSON *arr = cJSON_AddArrayToObject(root, "top_keys");
	struct publish_key **sorted;

	if (pub.nused == 0)
		return;
	sorted = xmalloc(sizeof(*sorted) * pub.nused);
	for (uint32_t i = 0; i < pub.nused; i++)
		sorted[i] = &pub.tab[pub.used[i]];
	qsort(sorted, pub.nused, sizeof(*sorted), publish_key_cmp);
	for (uint32_t i = 0; i < pub.nused && i < PUBLISH_TOP_KEYS; i++) {
		const struct publish_key *k = sorted[i];
		cJSON *o = cJSON_CreateObject();
		/* keys go by their public prefix (what gatectl and gatetop act on) */
		if (k->prefix[0] != '\0') {
			char name[sizeof(k->prefix) + 2] = "k:";

			util_strlcpy(name + 2, k->prefix, sizeof(name) - 2);
			cJSON_AddStringToObject(o, "identity", name);
			cJSON_AddStringToObject(o, "prefix", k->prefix);
		} else {
			cJSON_AddStringToObject(o, "identity", k->identity);
			cJSON_AddNullToObject(o, "prefix");
		}
		if (strncmp(k->identity, "u:", 2) == 0)
			cJSON_AddNumberToObject(o, "user_id", strtod(k->identity + 2, NULL));
		else
			cJSON_AddNullToObject(o, "user_id");
		cJSON_AddStringToObject(o, "tier", k->tier);
		cJSON_AddNumberToObject(o, "rps", (double)k->n / interval_s);
		cJSON_AddNumberToObject(o, "requests", (double)k->n);
		cJSON_AddNumberToObject(o, "total", (double)identity_count_get(k->identity));
		if (k->rl_set) {
			cJSON_AddNumberToObject(o, "remaining", (double)k->remaining);
			cJSON_AddNumberToObject(o, "limit", (double)k->limit);
		} else {
			cJSON_AddNullToObject(o, "remaining");
			cJSON_AddNullToObject(o, "limit");
		}
		cJSON_AddBoolToObject(o, "blocked", k->blocked);
		cJSON_AddItemToArray(arr, o);
	}
	free(sorted);
}

static void
publish_reset_second(void)
{
	for (uint32_t i = 0; i < pub.nused; i++)
		memset(&pub.tab[pub.used[i]], 0, sizeof(pub.tab[0]));
	pub.nused = 0;
	pub.sample_every = pub.seen_this_second / PUBLISH_LOG_PER_SECOND + 1;
	pub.logs_this_second = pub.seen_this_second = 0;
}

/* --- rates --- */

double
publish_quantile_ms(const uint64_t *counts, int nbuckets, double p)
{
	uint64_t total = 0, acc = 0, want;

	for (int i = 0; i < nbuckets; i++)
		total += counts[i];
	if (total == 0)
		return 0;
	want = (uint64_t)(p * (double)total + 0.5);
	if (want < 1)
		want = 1;
	for (int i = 0; i < nbuckets; i++) {
		if (acc + counts[i] >= want) {
			/* linear inside the bucket */
			double lo = (double)metrics_fine_lower(i);
			double hi = i + 1 < METRICS_FINE ? (double)metrics_fine_lower(i + 1) : lo;
			double f = (double)(want - acc) / (double)counts[i];

			return (lo + (hi - lo) * f) / 1000.0;
		}
		acc += counts[i];
	}
	return (double)metrics_fine_lower(nbuckets - 1) / 1000.0;
}

static void
publish_snapshot(struct publish_snap *s, const struct runtime *rt, const cJSON *stats)
{
	const cJSON *cache = cJSON_GetObjectItemCaseSensitive(stats, "cache");
	const cJSON *h = cJSON_GetObjectItemCaseSensitive(cache, "hits");
	const cJSON *m = cJSON_GetObjectItemCaseSensitive(cache, "misses");

	memset(s, 0, sizeof(*s));
	s->ms = util_now_ms();
	s->requests = stats_worker_sum(offsetof(struct worker, st_requests));
	s->errors = stats_worker_sum(offsetof(struct worker, st_errors));
	s->proxied = stats_worker_sum(offsetof(struct worker, metrics.proxied));
	s->hits = cJSON_IsNumber(h) ? (uint64_t)h->valuedouble : 0;
	s->misses = cJSON_IsNumber(m) ? (uint64_t)m->valuedouble : 0;
	for (int i = 0; i < gw.nworkers; i++)
		for (int k = 0; k < METRICS_FINE; k++)
			s->fine[k] += atomic_load_explicit(&gw.workers[i]->metrics.fine[k],
			                                   memory_order_relaxed);
	for (int i = 0; i < rt->nbackends && i < PUBLISH_MAX_BACKENDS; i++) {
		util_strlcpy(s->bid[i], rt->backends[i]->id, sizeof(s->bid[i]));
		s->breq[i] = backend_sum(rt->backends[i], offsetof(struct backend_pw, requests));
		s->nb++;
	}
}

/* The requests of backend id at the previous snapshot (0: a new backend). */
static uint64_t
publish_prev_backend(const char *id)
{
	for (int i = 0; i < pub.prev.nb; i++)
		if (strcmp(pub.prev.bid[i], id) == 0)
			return pub.prev.breq[i];
	return 0;
}

static double
publish_ratio(uint64_t part, uint64_t whole)
{
	return whole ? (double)part / (double)whole : 0.0;
}

/* rps and share of each backend, and the datacenters they make up. */
static void
publish_backends(cJSON *root, const struct runtime *rt, const struct publish_snap *now,
                 double interval_s)
{
	cJSON *arr = cJSON_GetObjectItemCaseSensitive(root, "backends"), *b;
	cJSON *dcs = cJSON_AddArrayToObject(root, "datacenters");
	uint64_t proxied = 0;
	int i = 0;

	for (int k = 0; k < now->nb; k++)
		proxied += now->breq[k] - publish_prev_backend(now->bid[k]);
	cJSON_ArrayForEach(b, arr)
	{
		uint64_t d = i < now->nb ? now->breq[i] - publish_prev_backend(now->bid[i]) : 0;

		cJSON_AddNumberToObject(b, "rps", (double)d / interval_s);
		cJSON_AddNumberToObject(b, "share", publish_ratio(d, proxied));
		i++;
	}
	for (int d = 0; d < rt->cfg->ndatacenters; d++) {
		const char *name = rt->cfg->datacenters[d].name;
		cJSON *o = cJSON_CreateObject();
		uint64_t req = 0, delta = 0;
		int nb = 0, healthy = 0;

		for (int k = 0; k < rt->nbackends && k < now->nb; k++) {
			if (strcmp(rt->backends[k]->dc, name) != 0)
				continue;
			nb++;
			healthy |= atomic_load(&rt->backends[k]->healthy);
			req += now->breq[k];
			delta += now->breq[k] - publish_prev_backend(now->bid[k]);
		}
		cJSON_AddStringToObject(o, "name", name);
		cJSON_AddBoolToObject(o, "healthy", healthy);
		cJSON_AddNumberToObject(o, "backends", nb);
		cJSON_AddNumberToObject(o, "requests", (double)req);
		cJSON_AddNumberToObject(o, "rps", (double)delta / interval_s);
		cJSON_AddItemToArray(dcs, o);
	}
}

cJSON *
publish_stats_json(int64_t wall_offset_us)
{
	struct runtime *rt = runtime_acquire();
	cJSON *root = stats_json(rt), *o;
	struct publish_snap *now = xmalloc(sizeof(*now));
	uint64_t fine[METRICS_FINE], req, resp = 0;
	double interval_s;

	publish_snapshot(now, rt, root);
	interval_s = pub.prev.ms != 0 && now->ms > pub.prev.ms
	                 ? (double)(now->ms - pub.prev.ms) / 1000.0
	                 : 1.0;
	for (int k = 0; k < METRICS_FINE; k++) {
		fine[k] = now->fine[k] - pub.prev.fine[k];
		resp += fine[k];
	}
	req = now->requests - pub.prev.requests;
	cJSON_AddStringToObject(root, "type", "stats");
	cJSON_AddNumberToObject(root, "time",
	                        (double)((int64_t)util_now_us() + wall_offset_us) / 1e6);
	cJSON_AddNumberToObject(root, "interval_s", interval_s);
	cJSON_AddNumberToObject(root, "rps", (double)req / interval_s);
	cJSON_AddNumberToObject(root, "p50_ms", publish_quantile_ms(fine, METRICS_FINE, 0.50));
	cJSON_AddNumberToObject(root, "p99_ms", publish_quantile_ms(fine, METRICS_FINE, 0.99));
	cJSON_AddNumberToObject(root, "error_rate",
	                        publish_ratio(now->errors - pub.prev.errors, resp));
	cJSON_AddNumberToObject(
	    root, "cache_hit_rate",
	    publish_ratio(now->hits - pub.prev.hits,
	                  now->hits - pub.prev.hits + now->misses - pub.prev.misses));
	publish_backends(root, rt, now, interval_s);
	publish_top_keys(root, interval_s);
	o = cJSON_AddObjectToObject(root, "access_log");
	cJSON_AddNumberToObject(o, "lines", (double)accesslog_lines());
	cJSON_AddNumberToObject(o, "dropped", (double)accesslog_dropped());
	cJSON_AddNumberToObject(o, "published", (double)pub.logs_published);
	pub.prev = *now;
	free(now);
	runtime_unref(rt);
	return root;
}

void
publish_second(int64_t wall_offset_us)
{
	cJSON *o = publish_stats_json(wall_offset_us);

	publish_object("stats", o);
	cJSON_Delete(o);
	publish_reset_second();
}
