#include <dirent.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "api.h"
#include "cache.h"
#include "metrics.h"
#include "proxy.h"
#include "redis.h"
#include "util.h"
#include "ws.h"
#include "xmalloc.h"

/* Prometheus metrics: per-worker recording, merged on scrape (see metrics.h). */

const uint64_t metrics_bucket_us[METRICS_NBUCKETS] = {
    1000,   2500,   5000,    10000,   25000,   50000,    100000,
    250000, 500000, 1000000, 2500000, 5000000, 10000000,
};

/* Relaxed load+store: only the owner writes (as worker_counter_add). */
static inline void
metrics_add(_Atomic uint64_t *c, uint64_t n)
{
	atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + n,
	                      memory_order_relaxed);
}

static inline uint64_t
metrics_load(const _Atomic uint64_t *c)
{
	return atomic_load_explicit(c, memory_order_relaxed);
}

int
metrics_bucket_index(uint64_t us)
{
	int i = 0;

	while (i < METRICS_NBUCKETS && us > metrics_bucket_us[i])
		i++;
	return i;
}

int
metrics_fine_index(uint64_t us)
{
	int msb, idx;

	if (us < 4)
		return (int)us;
	msb = 63 - __builtin_clzll(us);
	idx = (msb - 1) * 4 + (int)((us >> (msb - 2)) & 3);
	return idx < METRICS_FINE ? idx : METRICS_FINE - 1;
}

uint64_t
metrics_fine_lower(int idx)
{
	if (idx < 4)
		return (uint64_t)idx;
	return (uint64_t)(4 + idx % 4) << (idx / 4 - 1);
}

void
metrics_observe(struct metrics_worker *m, uint64_t us)
{
	metrics_add(&m->hist[metrics_bucket_index(us)], 1);
	metrics_add(&m->fine[metrics_fine_index(us)], 1);
	metrics_add(&m->hist_sum_us, us);
}

static uint32_t
metrics_slot(int kind, const char *a, const char *b)
{
	uint64_t h = util_hash64(a, strlen(a)) ^ (util_hash64(b, strlen(b)) * 31u) ^
	             ((uint64_t)kind * 0x9e3779b97f4a7c15ull);

	return (uint32_t)(h % METRICS_TABLE_SIZE);
}

/* The entry of (kind, a, b), created when there is room; NULL when the table is full. */
static struct metrics_entry *
metrics_find(struct metrics_worker *m, int kind, const char *a, const char *b, int create)
{
	uint32_t i = metrics_slot(kind, a, b);

	for (uint32_t probes = 0; probes < METRICS_TABLE_SIZE; probes++) {
		struct metrics_entry *e = &m->tab[i];
		uint32_t used = atomic_load_explicit(&e->used, memory_order_relaxed);

		if (used == 0) {
			if (!create)
				return NULL;
			util_strlcpy(e->a, a, sizeof(e->a));
			util_strlcpy(e->b, b, sizeof(e->b));
			atomic_store_explicit(&e->n, 0, memory_order_relaxed);
			atomic_store_explicit(&e->used, (uint32_t)kind, memory_order_release);
			m->nused++;
			return e;
		}
		if (used == (uint32_t)kind && strncmp(e->a, a, sizeof(e->a) - 1) == 0 &&
		    strncmp(e->b, b, sizeof(e->b) - 1) == 0)
			return e;
		i = (i + 1) % METRICS_TABLE_SIZE;
	}
	return NULL;
}

/* Slots kept free for the "other" entries of a table that is (nearly) full. */
#define METRICS_RESERVED 8

void
metrics_count(struct metrics_worker *m, int kind, const char *a, const char *b, uint64_t n)
{
	struct metrics_entry *e = metrics_find(m, kind, a, b, 0);

	if (e == NULL)
		e = metrics_find(m, kind, a, b, m->nused < METRICS_TABLE_SIZE - METRICS_RESERVED);
	if (e == NULL)
		e = metrics_find(m, kind, "other", "other", 1);
	if (e != NULL)
		metrics_add(&e->n, n);
}

void
metrics_request(struct worker *w, int status, const struct backend *b, uint64_t start_us)
{
	struct metrics_worker *m = &w->metrics;
	uint64_t now = util_now_us();
	char code[8];

	metrics_observe(m, start_us != 0 && now > start_us ? now - start_us : 0);
	if (status < 100 || status > 999)
		status = 0;
	snprintf(code, sizeof(code), "%03d", status);
	metrics_count(m, METRICS_K_REQUESTS, code, b != NULL ? b->id : "none", 1);
	if (b != NULL)
		metrics_add(&m->proxied, 1);
}

void
metrics_geo(struct worker *w, const struct backend *b, const char *country)
{
	/* countries are ISO codes (at most ~250) and the table is capped: bounded labels */
	metrics_count(&w->metrics, METRICS_K_GEO, b->dc[0] != '\0' ? b->dc : "none",
	              country[0] != '\0' ? country : "unknown", 1);
}

void
metrics_ratelimit(struct worker *w, const char *tier, int allowed)
{
	metrics_count(&w->metrics, METRICS_K_RATELIMIT, tier, allowed ? "allowed" : "rejected", 1);
}

/* --- text output --- */

void
mbuf_printf(struct mbuf *o, const char *fmt, ...)
{
	va_list ap;
	int n;

	for (;;) {
		va_start(ap, fmt);
		n = vsnprintf(o->p + o->len, o->cap - o->len, fmt, ap);
		va_end(ap);
		if (n < 0)
			return;
		if (o->len + (size_t)n < o->cap) {
			o->len += (size_t)n;
			return;
		}
		o->cap = (o->cap + (size_t)n + 1) * 2;
		o->p = xrealloc(o->p, o->cap);
	}
}

void
mbuf_label(struct mbuf *o, const char *v)
{
	for (; *v != '\0'; v++) {
		if (*v == '\\')
			mbuf_printf(o, "\\\\");
		else if (*v == '"')
			mbuf_printf(o, "\\\"");
		else if (*v == '\n')
			mbuf_printf(o, "\\n");
		else
			mbuf_printf(o, "%c", *v);
	}
}

void
metrics_samples_add(struct metrics_samples *s, const char *a, const char *b, uint64_t n)
{
	if (s->n == s->cap) {
		s->cap = s->cap ? s->cap * 2 : 32;
		s->v = xrealloc(s->v, s->cap * sizeof(*s->v));
	}
	util_strlcpy(s->v[s->n].a, a, sizeof(s->v[s->n].a));
	util_strlcpy(s->v[s->n].b, b, sizeof(s->v[s->n].b));
	s->v[s->n].n = n;
	s->n++;
}

void
metrics_samples_collect(struct metrics_samples *s, struct metrics_worker *const *mw, int nw,
                        int kind)
{
	for (int w = 0; w < nw; w++) {
		for (int i = 0; i < METRICS_TABLE_SIZE; i++) {
			const struct metrics_entry *e = &mw[w]->tab[i];

			if (atomic_load_explicit(&e->used, memory_order_acquire) != (uint32_t)kind)
				continue;
			metrics_samples_add(s, e->a, e->b, metrics_load(&e->n));
		}
	}
}

static int
metrics_sample_cmp(const void *p, const void *q)
{
	const struct metrics_sample *x = p, *y = q;
	int c = strcmp(x->a, y->a);

	return c != 0 ? c : strcmp(x->b, y->b);
}

void
metrics_samples_finish(struct metrics_samples *s)
{
	size_t o = 0;

	if (s->n == 0)
		return;
	qsort(s->v, s->n, sizeof(*s->v), metrics_sample_cmp);
	for (size_t i = 1; i < s->n; i++) {
		if (metrics_sample_cmp(&s->v[o], &s->v[i]) == 0)
			s->v[o].n += s->v[i].n;
		else
			s->v[++o] = s->v[i];
	}
	s->n = o + 1;
}

void
metrics_samples_free(struct metrics_samples *s)
{
	free(s->v);
	s->v = NULL;
	s->n = s->cap = 0;
}

static void
metrics_head(struct mbuf *o, const char *name, const char *type, const char *help)
{
	mbuf_printf(o, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

void
metrics_write_counter2(struct mbuf *o, const char *name, const char *help, const char *la,
                       const char *lb, const struct metrics_samples *s)
{
	metrics_head(o, name, "counter", help);
	for (size_t i = 0; i < s->n; i++) {
		mbuf_printf(o, "%s{%s=\"", name, la);
		mbuf_label(o, s->v[i].a);
		mbuf_printf(o, "\",%s=\"", lb);
		mbuf_label(o, s->v[i].b);
		mbuf_printf(o, "\"} %llu\n", (unsigned long long)s->v[i].n);
	}
}

void
metrics_write_histogram(struct mbuf *o, const char *name, const char *help,
                        const uint64_t counts[METRICS_NBUCKETS + 1], uint64_t sum_us)
{
	uint64_t cum = 0;

	metrics_head(o, name, "histogram", help);
	for (int i = 0; i < METRICS_NBUCKETS; i++) {
		cum += counts[i];
		mbuf_printf(o, "%s_bucket{le=\"%g\"} %llu\n", name,
		            (double)metrics_bucket_us[i] / 1e6, (unsigned long long)cum);
	}
	cum += counts[METRICS_NBUCKETS];
	mbuf_printf(o, "%s_bucket{le=\"+Inf\"} %llu\n", name, (unsigned long long)cum);
	mbuf_printf(o, "%s_sum %llu.%06llu\n", name, (unsigned long long)(sum_us / 1000000u),
	            (unsigned long long)(sum_us % 1000000u));
	mbuf_printf(o, "%s_count %llu\n", name, (unsigned long long)cum);
}

/* --- process metrics, from /proc --- */

struct metrics_proc {
	double cpu_s;
	double start_s;
	uint64_t rss, vsize;
	long threads;
	long fds;
};

static int
metrics_proc_read(struct metrics_proc *p)
{
	char buf[2048], *s;
	FILE *f;
	size_t n;
	unsigned long long utime, stime, start, vsize;
	long rss, threads;
	long tck = sysconf(_SC_CLK_TCK), page = sysconf(_SC_PAGESIZE);
	unsigned long long btime = 0;
	DIR *d;
	struct dirent *de;

	memset(p, 0, sizeof(*p));
	if ((f = fopen("/proc/self/stat", "r")) == NULL)
		return -1;
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	/* the command name may hold spaces and parentheses: fields start after the last ')' */
	if ((s = strrchr(buf, ')')) == NULL)
		return -1;
	if (sscanf(s + 2,
	           "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu %*d %*d %*d %*d %ld "
	           "%*d %llu %llu %ld",
	           &utime, &stime, &threads, &start, &vsize, &rss) != 6)
		return -1;
	if ((f = fopen("/proc/stat", "r")) != NULL) {
		while (fgets(buf, sizeof(buf), f) != NULL)
			if (sscanf(buf, "btime %llu", &btime) == 1)
				break;
		fclose(f);
	}
	if (tck <= 0)
		tck = 100;
	if (page <= 0)
		page = 4096;
	p->cpu_s = (double)(utime + stime) / (double)tck;
	p->start_s = (double)btime + (double)start / (double)tck;
	p->rss = (uint64_t)rss * (uint64_t)page;
	p->vsize = vsize;
	p->threads = threads;
	p->fds = 0;
	if ((d = opendir("/proc/self/fd")) != NULL) {
		while ((de = readdir(d)) != NULL)
			if (de->d_name[0] != '.')
				p->fds++;
		closedir(d);
		p->fds--; /* the directory's own descriptor */
	}
	return 0;
}

/* --- the scrape --- */

static uint64_t
metrics_worker_sum(size_t offset)
{
	uint64_t sum = 0;

	for (int i = 0; i < gw.nworkers; i++)
		sum += metrics_load(
		    (const _Atomic uint64_t *)(const void *)((const char *)gw.workers[i] + offset));
	return sum;
}

static void
metrics_write_gauge(struct mbuf *o, const char *name, const char *help, double v)
{
	metrics_head(o, name, "gauge", help);
	mbuf_printf(o, "%s %.15g\n", name, v);
}

/* The response cache: results (a proxied request on a route without cache=on is a
 * bypass too), and what the store holds. */
static void
metrics_cache(struct mbuf *o)
{
	uint64_t c[CACHE_R_COUNT], entries, bytes, evictions;
	uint64_t proxied = metrics_worker_sum(offsetof(struct worker, metrics.proxied));
	uint64_t other;

	cache_counts(c);
	other = proxied > c[CACHE_R_UPSTREAM] ? proxied - c[CACHE_R_UPSTREAM] : 0;
	cache_store_usage(&entries, &bytes, &evictions);
	metrics_head(o, "gatewayd_cache_requests_total", "counter",
	             "Requests by response cache result.");
	mbuf_printf(o, "gatewayd_cache_requests_total{result=\"bypass\"} %llu\n",
	            (unsigned long long)(c[CACHE_R_BYPASS] + other));
	mbuf_printf(o, "gatewayd_cache_requests_total{result=\"hit\"} %llu\n",
	            (unsigned long long)c[CACHE_R_HIT]);
	mbuf_printf(o, "gatewayd_cache_requests_total{result=\"miss\"} %llu\n",
	            (unsigned long long)c[CACHE_R_MISS]);
	mbuf_printf(o, "gatewayd_cache_requests_total{result=\"stale\"} %llu\n",
	            (unsigned long long)c[CACHE_R_STALE]);
	metrics_write_gauge(o, "gatewayd_cache_entries", "Responses in the cache.",
	                    (double)entries);
	metrics_write_gauge(o, "gatewayd_cache_bytes",
	                    "Bytes the cache holds (entries, keys, heads and bodies).",
	                    (double)bytes);
	metrics_head(o, "gatewayd_cache_evictions_total", "counter",
	             "Entries evicted to stay within max_memory.");
	mbuf_printf(o, "gatewayd_cache_evictions_total %llu\n", (unsigned long long)evictions);
}

static void
metrics_backend_gauges(struct mbuf *o, const struct runtime *rt, const char *name, const char *help,
                       int what)
{
	metrics_head(o, name, "gauge", help);
	for (int i = 0; i < rt->nbackends; i++) {
		struct backend *b = rt->backends[i];
		unsigned long v;

		if (what == 0)
			v = (unsigned long)(atomic_load(&b->healthy) != 0);
		else if (what == 1)
			v = atomic_load(&b->active);
		else
			v = (unsigned long)circuit_get_state(&b->circuit);
		mbuf_printf(o, "%s{backend=\"", name);
		mbuf_label(o, b->id);
		mbuf_printf(o, "\"} %lu\n", v);
	}
}

/* A two-label counter family: the workers' samples of kind join those already in s,
 * are written out, and s is emptied (its memory kept) for the next family. */
static void
metrics_write_family(struct mbuf *o, struct metrics_samples *s, struct metrics_worker *const *mw,
                     int nw, int kind, const char *name, const char *help, const char *la,
                     const char *lb)
{
	metrics_samples_collect(s, mw, nw, kind);
	metrics_samples_finish(s);
	metrics_write_counter2(o, name, help, la, lb, s);
	s->n = 0;
}

char *
metrics_render(const struct runtime *rt, size_t *len)
{
	struct mbuf o = {xmalloc(16384), 0, 16384};
	struct metrics_worker *mw[GW_MAX_WORKERS];
	struct metrics_samples s = {0};
	uint64_t hist[METRICS_NBUCKETS + 1] = {0}, sum_us = 0, depth = 0;
	struct metrics_proc p;
	int nw = gw.nworkers;
	struct rlimit rl;

	o.p[0] = '\0';
	for (int i = 0; i < nw; i++) {
		mw[i] = &gw.workers[i]->metrics;
		for (int j = 0; j <= METRICS_NBUCKETS; j++)
			hist[j] += metrics_load(&mw[i]->hist[j]);
		sum_us += metrics_load(&mw[i]->hist_sum_us);
		depth += atomic_load_explicit(&gw.workers[i]->st_queue_depth, memory_order_relaxed);
	}

	metrics_write_family(&o, &s, mw, nw, METRICS_K_REQUESTS, "gatewayd_requests_total",
	                     "Responses sent, by status code and the backend that answered "
	                     "(\"none\": made by the gateway).",
	                     "code", "backend");

	metrics_write_histogram(&o, "gatewayd_request_duration_seconds",
	                        "Time from the start of a request to its response.", hist, sum_us);

	metrics_backend_gauges(&o, rt, "gatewayd_backend_up",
	                       "1 when the backend passes its health checks, else 0.", 0);
	metrics_backend_gauges(&o, rt, "gatewayd_backend_active_connections",
	                       "Requests in flight to the backend.", 1);
	metrics_backend_gauges(&o, rt, "gatewayd_circuit_state",
	                       "Circuit breaker state: 0 closed, 1 open, 2 half_open.", 2);

	/* every configured tier and the per-IP limiter appear, even at zero */
	metrics_samples_add(&s, "ip", "allowed",
	                    metrics_worker_sum(offsetof(struct worker, st_ip_allowed)));
	metrics_samples_add(&s, "ip", "rejected",
	                    metrics_worker_sum(offsetof(struct worker, st_ip_rejected)));
	for (int i = 0; i < rt->cfg->ntiers; i++) {
		metrics_samples_add(&s, rt->cfg->tiers[i].name, "allowed", 0);
		metrics_samples_add(&s, rt->cfg->tiers[i].name, "rejected", 0);
	}
	metrics_write_family(
	    &o, &s, mw, nw, METRICS_K_RATELIMIT, "gatewayd_ratelimit_decisions_total",
	    "Rate limiter decisions, by tier (\"ip\": the per-address limit).", "tier", "decision");

	metrics_cache(&o);

	metrics_write_gauge(&o, "gatewayd_queue_depth", "Requests waiting for a backend slot.",
	                    (double)depth);

	metrics_head(&o, "gatewayd_jwt_verifications_total", "counter",
	             "Access token verifications, by result.");
	mbuf_printf(
	    &o, "gatewayd_jwt_verifications_total{result=\"invalid\"} %llu\n",
	    (unsigned long long)metrics_worker_sum(offsetof(struct worker, st_jwt_invalid)));
	mbuf_printf(&o, "gatewayd_jwt_verifications_total{result=\"valid\"} %llu\n",
	            (unsigned long long)metrics_worker_sum(offsetof(struct worker, st_jwt_valid)));

	metrics_write_family(&o, &s, mw, nw, METRICS_K_GEO, "gatewayd_geo_requests_total",
	                     "Proxied requests by the answering backend's datacenter and the "
	                     "client's country (\"unknown\": the client was not located).",
	                     "datacenter", "country");
	metrics_samples_free(&s);

	if (metrics_proc_read(&p) == 0) {
		metrics_head(&o, "process_cpu_seconds_total", "counter",
		             "Total user and system CPU time spent in seconds.");
		mbuf_printf(&o, "process_cpu_seconds_total %.15g\n", p.cpu_s);
		metrics_write_gauge(&o, "process_open_fds", "Number of open file descriptors.",
		                    (double)p.fds);
		if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY)
			metrics_write_gauge(&o, "process_max_fds",
			                    "Maximum number of open file descriptors.",
			                    (double)rl.rlim_cur);
		metrics_write_gauge(&o, "process_resident_memory_bytes",
		                    "Resident memory size in bytes.", (double)p.rss);
		metrics_write_gauge(&o, "process_virtual_memory_bytes",
		                    "Virtual memory size in bytes.", (double)p.vsize);
		metrics_write_gauge(&o, "process_start_time_seconds",
		                    "Start time of the process since unix epoch in seconds.",
		                    p.start_s);
		metrics_write_gauge(&o, "gatewayd_threads", "Threads of the gatewayd process.",
		                    (double)p.threads);
	}
	metrics_write_gauge(&o, "gatewayd_workers", "Worker threads serving requests.", (double)nw);
	ws_metrics_write(&o);
	{
		char *r = redis_metrics_text();

		mbuf_printf(&o, "%s", r);
		free(r);
	}
	*len = o.len;
	return o.p;
}

void
api_metrics(struct exchange *x)
{
	size_t len;
	char *s = metrics_render(x->rt, &len);

	respond_text(x, 200, "text/plain; version=0.0.4; charset=utf-8", s, len, NULL);
	free(s);
}
