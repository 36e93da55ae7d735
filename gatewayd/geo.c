/*
 * Geographic routing: locating clients, ordering datacenters, narrowing the balancer's
 * candidates, and /geo/stats (see geo.h and gatewayd.conf(5)).
 */
#include <arpa/inet.h>
#include <math.h>
#include <maxminddb.h>
#include <netinet/in.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cidr.h"
#include "geo.h"
#include "gw.h"
#include "log.h"
#include "proxy.h"
#include "util.h"
#include "xmalloc.h"

/* One open MaxMind DB, shared by the runtimes whose configuration names the same
 * unchanged file. */
struct geo_mmdb {
	MMDB_s db;
	_Atomic int refs;
	struct stat st; /* identity of the file when opened: a reload reopens a changed one */
	char path[CONFIG_PATH_MAX];
};

struct geo {
	const struct config *cfg;
	struct cidr_tree *statics; /* values: const struct config_geo_static * */
	struct geo_mmdb *mmdb;
	int ndc;
	int default_dc;     /* geo_default's index, -1 when none */
	int any_residency;  /* some datacenter has residency= */
	int8_t *backend_dc; /* per configured backend: its datacenter's index, -1 none */
};

/* Lookups, per worker: written by the owner only (relaxed load+store), summed on read. */
struct geo_worker_stats {
	_Atomic uint64_t located;
	_Atomic uint64_t unlocated;
} __attribute__((aligned(GW_CACHELINE)));

static struct geo_worker_stats geo_pw[GW_MAX_WORKERS];

/* ---- distances and regions ---- */

static double
geo_rad(double deg)
{
	return deg * (M_PI / 180.0);
}

double
geo_haversine_km(double lat1, double lon1, double lat2, double lon2)
{
	double dlat = geo_rad(lat2 - lat1), dlon = geo_rad(lon2 - lon1);
	double s1 = sin(dlat / 2), s2 = sin(dlon / 2);
	double a = s1 * s1 + cos(geo_rad(lat1)) * cos(geo_rad(lat2)) * s2 * s2;

	/* clamped: rounding can push a (antipodal points) a hair above 1 */
	if (a > 1.0)
		a = 1.0;
	return 2.0 * GEO_EARTH_RADIUS_KM * asin(sqrt(a));
}

/* The EU's 27 member states; the EEA adds Iceland, Liechtenstein and Norway. */
static const char geo_eu[] = "ATBEBGHRCYCZDKEEFIFRDEGRHUIEITLVLTLUMTNLPLPTROSKSIESSE";
static const char geo_eea_extra[] = "ISLINO";

static int
geo_in_list(const char *list, const char *cc)
{
	for (const char *p = list; p[0] != '\0'; p += 2)
		if (p[0] == cc[0] && p[1] == cc[1])
			return 1;
	return 0;
}

static int
geo_is_country(const char *s)
{
	return s[0] >= 'A' && s[0] <= 'Z' && s[1] >= 'A' && s[1] <= 'Z' && s[2] == '\0';
}

int
geo_region_valid(const char *region)
{
	return strcmp(region, "EU") == 0 || strcmp(region, "EEA") == 0 || geo_is_country(region);
}

int
geo_region_contains(const char *region, const char *country)
{
	if (!geo_is_country(country))
		return 0;
	if (strcmp(region, "EU") == 0)
		return geo_in_list(geo_eu, country);
	if (strcmp(region, "EEA") == 0)
		return geo_in_list(geo_eu, country) || geo_in_list(geo_eea_extra, country);
	return strcmp(region, country) == 0;
}

/* ---- the MaxMind DB ---- */

int
geo_db_check(const char *path, char *err, size_t errlen)
{
	MMDB_s db;
	int rc = MMDB_open(path, MMDB_MODE_MMAP, &db);

	if (rc != MMDB_SUCCESS) {
		snprintf(err, errlen, "cannot open MaxMind DB \"%s\": %s", path, MMDB_strerror(rc));
		return -1;
	}
	MMDB_close(&db);
	return 0;
}

static void
geo_mmdb_unref(struct geo_mmdb *m)
{
	if (m == NULL || atomic_fetch_sub(&m->refs, 1) != 1)
		return;
	MMDB_close(&m->db);
	free(m);
}

static int
geo_same_file(const struct stat *a, const struct stat *b)
{
	return a->st_dev == b->st_dev && a->st_ino == b->st_ino && a->st_size == b->st_size &&
	       a->st_mtim.tv_sec == b->st_mtim.tv_sec && a->st_mtim.tv_nsec == b->st_mtim.tv_nsec;
}

/* The MMDB for path: old's when the file is unchanged, else a fresh open (old's again,
 * with a warning, when the new file does not open). A reference for the caller. */
static struct geo_mmdb *
geo_mmdb_get(const char *path, struct geo_mmdb *old)
{
	struct stat st;
	struct geo_mmdb *m;
	int rc;

	if (path[0] == '\0')
		return NULL;
	if (old != NULL && strcmp(old->path, path) != 0)
		old = NULL;
	if (stat(path, &st) == 0 && old != NULL && geo_same_file(&st, &old->st)) {
		atomic_fetch_add(&old->refs, 1);
		return old;
	}
	m = xcalloc(1, sizeof(*m));
	rc = MMDB_open(path, MMDB_MODE_MMAP, &m->db);
	if (rc != MMDB_SUCCESS) {
		free(m);
		log_warnx("geo_db %s: %s%s", path, MMDB_strerror(rc),
		          old != NULL ? " (keeping the database loaded before)" : "");
		if (old != NULL)
			atomic_fetch_add(&old->refs, 1);
		return old;
	}
	m->st = st;
	atomic_init(&m->refs, 1);
	util_strlcpy(m->path, path, sizeof(m->path));
	if (old != NULL)
		log_info("geo_db %s reloaded", path);
	return m;
}

static void
geo_mmdb_string(MMDB_entry_s *e, char out[3], const char *k1, const char *k2)
{
	MMDB_entry_data_s d;

	if (out[0] != '\0' || MMDB_get_value(e, &d, k1, k2, NULL) != MMDB_SUCCESS || !d.has_data ||
	    d.type != MMDB_DATA_TYPE_UTF8_STRING || d.data_size != 2)
		return;
	memcpy(out, d.utf8_string, 2);
	out[2] = '\0';
	if (!geo_is_country(out))
		out[0] = '\0';
}

static int
geo_mmdb_double(MMDB_entry_s *e, const char *key, double *out)
{
	MMDB_entry_data_s d;

	if (MMDB_get_value(e, &d, "location", key, NULL) != MMDB_SUCCESS || !d.has_data)
		return 0;
	if (d.type == MMDB_DATA_TYPE_DOUBLE)
		*out = d.double_value;
	else if (d.type == MMDB_DATA_TYPE_FLOAT)
		*out = d.float_value;
	else
		return 0;
	return 1;
}

/* GeoLite2/DB-IP City or Country: country.iso_code (else registered_country's) and,
 * in City databases, location.latitude/longitude. */
static int
geo_mmdb_lookup(const struct geo_mmdb *m, const uint8_t addr[16], struct geo_loc *out)
{
	struct sockaddr_storage ss;
	MMDB_lookup_result_s r;
	int err = 0;

	memset(&ss, 0, sizeof(ss));
	if (cidr_is_v4(addr)) {
		struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
		sin->sin_family = AF_INET;
		memcpy(&sin->sin_addr, addr + 12, 4);
	} else {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;
		sin6->sin6_family = AF_INET6;
		memcpy(&sin6->sin6_addr, addr, 16);
	}
	r = MMDB_lookup_sockaddr(&m->db, (const struct sockaddr *)&ss, &err);
	if (err != MMDB_SUCCESS || !r.found_entry)
		return 0;
	geo_mmdb_string(&r.entry, out->country, "country", "iso_code");
	geo_mmdb_string(&r.entry, out->country, "registered_country", "iso_code");
	out->has_pos = geo_mmdb_double(&r.entry, "latitude", &out->lat) &&
	               geo_mmdb_double(&r.entry, "longitude", &out->lon);
	return out->country[0] != '\0' || out->has_pos;
}

/* ---- building ---- */

static int
geo_find_dc(const struct config *cfg, const char *name)
{
	for (int i = 0; i < cfg->ndatacenters; i++)
		if (strcmp(cfg->datacenters[i].name, name) == 0)
			return i;
	return -1;
}

struct geo *
geo_new(const struct config *cfg, const struct geo *old)
{
	struct geo *g = xcalloc(1, sizeof(*g));

	g->cfg = cfg;
	g->statics = cidr_tree_new();
	for (int i = 0; i < cfg->ngeo_static; i++)
		cidr_tree_insert(g->statics, &cfg->geo_static[i].net,
		                 (void *)(uintptr_t)&cfg->geo_static[i], NULL);
	g->mmdb = geo_mmdb_get(cfg->geo_db, old != NULL ? old->mmdb : NULL);
	g->ndc = cfg->ndatacenters < GEO_MAX_DC ? cfg->ndatacenters : GEO_MAX_DC;
	g->default_dc = cfg->geo_default[0] != '\0' ? geo_find_dc(cfg, cfg->geo_default) : -1;
	for (int i = 0; i < g->ndc; i++)
		g->any_residency |= cfg->datacenters[i].residency[0] != '\0';
	g->backend_dc = xcalloc((size_t)cfg->nbackends + 1, sizeof(*g->backend_dc));
	for (int i = 0; i < cfg->nbackends; i++) {
		int dc =
		    cfg->backends[i].dc[0] != '\0' ? geo_find_dc(cfg, cfg->backends[i].dc) : -1;
		g->backend_dc[i] = (int8_t)(dc < g->ndc ? dc : -1);
	}
	return g;
}

void
geo_free(struct geo *g)
{
	if (g == NULL)
		return;
	cidr_tree_free(g->statics, NULL);
	geo_mmdb_unref(g->mmdb);
	free(g->backend_dc);
	free(g);
}

/* ---- locating and choosing ---- */

int
geo_locate(const struct geo *g, const uint8_t addr[16], struct geo_loc *out)
{
	const struct config_geo_static *s;

	memset(out, 0, sizeof(*out));
	if (cidr_tree_count(g->statics) > 0 &&
	    (s = cidr_tree_match(g->statics, addr, NULL)) != NULL) {
		util_strlcpy(out->country, s->country, sizeof(out->country));
		out->has_pos = s->has_pos;
		out->lat = s->lat;
		out->lon = s->lon;
		return 1;
	}
	if (g->mmdb != NULL && geo_mmdb_lookup(g->mmdb, addr, out))
		return 1;
	memset(out, 0, sizeof(*out));
	return 0;
}

/* 1 when a datacenter may serve a client of this country (its residency allows it). */
static int
geo_dc_allows(const struct config_datacenter *dc, const char *country)
{
	return geo_region_contains(dc->residency, country);
}

/* 1 when some datacenter's residency region holds the country: the client is bound to
 * such datacenters. */
static int
geo_restricted(const struct geo *g, const char *country)
{
	if (!g->any_residency || country[0] == '\0')
		return 0;
	for (int i = 0; i < g->ndc; i++)
		if (geo_dc_allows(&g->cfg->datacenters[i], country))
			return 1;
	return 0;
}

void
geo_client_init(const struct geo *g, const struct geo_loc *loc, const double *dc_ms,
                struct geo_client *gc)
{
	const char *cc = loc != NULL ? loc->country : "";
	double cost[GEO_MAX_DC];

	memset(gc, 0, sizeof(*gc));
	gc->picked_dc = 0xff;
	if (g->ndc == 0)
		return;
	gc->restricted = (uint8_t)geo_restricted(g, cc);
	if (loc != NULL && loc->has_pos) {
		gc->state = GEO_LOCATED;
		gc->lat = (float)loc->lat;
		gc->lon = (float)loc->lon;
	} else if (g->default_dc >= 0) {
		gc->state = GEO_DEFAULT;
		gc->lat = (float)g->cfg->datacenters[g->default_dc].lat;
		gc->lon = (float)g->cfg->datacenters[g->default_dc].lon;
	} else if (!gc->restricted) {
		return; /* GEO_OFF: unlocated without geo_default is served by every backend */
	}
	/*
	 * Without a position (a country-only database, no geo_default) the order is the
	 * configuration's. With one: distance, or in latency-aware mode the distance as a
	 * round-trip estimate (light in fibre: ~1 ms per 100 km there and back) plus the
	 * datacenter's measured response time, so a near but slow datacenter loses to a
	 * farther fast one only when it is slower by more than the extra distance costs.
	 */
	for (int i = 0; i < g->ndc; i++) {
		const struct config_datacenter *dc = &g->cfg->datacenters[i];
		double c = 0.0;
		int k;

		if (gc->restricted && !geo_dc_allows(dc, cc))
			continue;
		if (gc->state != GEO_OFF)
			c = geo_haversine_km(gc->lat, gc->lon, dc->lat, dc->lon);
		if (g->cfg->geo_mode == CONFIG_GEO_LATENCY && dc_ms != NULL)
			c = c / 100.0 + dc_ms[i];
		/* insertion sort: a handful of datacenters */
		for (k = gc->norder; k > 0 && cost[k - 1] > c; k--) {
			cost[k] = cost[k - 1];
			gc->order[k] = gc->order[k - 1];
		}
		cost[k] = c;
		gc->order[k] = (uint8_t)i;
		gc->norder++;
	}
	if (gc->state == GEO_OFF)
		gc->state = GEO_DEFAULT; /* restricted, no position: the region's datacenters */
}

/* 1 when backend i of a datacenter can take the request now or after a wait. */
static int
geo_usable(const struct balance_target *t, const int *busy, int i)
{
	return t[i].eligible || busy[i];
}

void
geo_narrow(const struct geo *g, struct geo_client *gc, struct balance_target *t, int *busy, int n)
{
	int chosen = -1;

	if (gc->state == GEO_OFF)
		return;
	for (int k = 0; k < gc->norder && chosen < 0; k++)
		for (int i = 0; i < n; i++)
			if (g->backend_dc[i] == gc->order[k] && geo_usable(t, busy, i)) {
				chosen = gc->order[k];
				break;
			}
	gc->picked_dc = (uint8_t)(chosen >= 0 ? chosen : 0xff);
	for (int i = 0; i < n; i++) {
		int dc = g->backend_dc[i];
		/* no datacenter left: backends outside every datacenter, unless residency */
		int keep = chosen >= 0 ? dc == chosen : dc < 0 && !gc->restricted;

		if (!keep)
			t[i].eligible = busy[i] = 0;
	}
}

/* Mean response time of each datacenter's measured, healthy backends. */
static void
geo_dc_latency(const struct runtime *rt, uint64_t now, double *ms)
{
	int cnt[GEO_MAX_DC] = {0};
	const struct geo *g = rt->geo;

	memset(ms, 0, sizeof(double) * GEO_MAX_DC);
	for (int i = 0; i < rt->nbackends; i++) {
		struct backend *b = rt->backends[i];
		double v;

		if (g->backend_dc[i] < 0 ||
		    !atomic_load_explicit(&b->healthy, memory_order_relaxed))
			continue;
		if ((v = proxy_ewma_ms(b, now)) > 0.0) {
			ms[g->backend_dc[i]] += v;
			cnt[g->backend_dc[i]]++;
		}
	}
	for (int i = 0; i < g->ndc; i++)
		if (cnt[i] > 0)
			ms[i] /= cnt[i];
}

static int
geo_backend_up(struct backend *b, uint64_t now)
{
	return atomic_load_explicit(&b->admin, memory_order_relaxed) == BACKEND_ENABLED &&
	       atomic_load_explicit(&b->healthy, memory_order_relaxed) &&
	       circuit_available(&b->circuit, now);
}

/* 1 when one of the datacenters gc may use has a backend up. */
static int
geo_any_up(const struct runtime *rt, const struct geo_client *gc, uint64_t now)
{
	for (int i = 0; i < rt->nbackends; i++) {
		int dc = rt->geo->backend_dc[i];

		if (dc < 0 || !geo_backend_up(rt->backends[i], now))
			continue;
		for (int k = 0; k < gc->norder; k++)
			if (gc->order[k] == dc)
				return 1;
	}
	return 0;
}

static inline void
geo_count(_Atomic uint64_t *c)
{
	atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + 1,
	                      memory_order_relaxed);
}

/* Counts the lookup and orders x's datacenters; 0 when residency refused x. */
static int
geo_decide(struct exchange *x, const struct geo_loc *loc, int located)
{
	const struct geo *g = x->rt->geo;
	struct geo_worker_stats *st = &geo_pw[x->w->id];
	double dc_ms[GEO_MAX_DC];

	geo_count(located ? &st->located : &st->unlocated);
	memcpy(x->geo_country, loc->country, sizeof(loc->country));
	if (g->ndc == 0)
		return 1;
	if (g->cfg->geo_mode == CONFIG_GEO_LATENCY)
		geo_dc_latency(x->rt, x->w->now_ms, dc_ms);
	geo_client_init(g, loc, dc_ms, &x->geo);
	if (!x->geo.restricted || geo_any_up(x->rt, &x->geo, x->w->now_ms))
		return 1;
	respond_error(x, 503, "no_datacenter",
	              "No healthy datacenter may serve this client's region (data residency).",
	              "Retry-After: 5\r\n", NULL);
	return 0;
}

int
geo_route(struct exchange *x)
{
	const struct geo *g = x->rt->geo;
	struct geo_loc loc;
	int located = geo_locate(g, x->client_ip, &loc);

	if (!located && g->cfg->geo_http.url[0] != '\0') {
		located = geo_http_lookup(x, &loc);
		if (located < 0)
			return 0; /* waits: geo_resume carries on */
	}
	return geo_decide(x, &loc, located);
}

void
geo_resume(struct exchange *x, const struct geo_loc *loc, int found)
{
	if (geo_decide(x, loc, found))
		proxy_start(x);
}

long
geo_distance_km(const struct exchange *x)
{
	const struct config_datacenter *dc;

	if (x->geo.state != GEO_LOCATED || x->geo.picked_dc >= x->rt->geo->ndc)
		return -1;
	dc = &x->rt->cfg->datacenters[x->geo.picked_dc];
	return lround(geo_haversine_km(x->geo.lat, x->geo.lon, dc->lat, dc->lon));
}

/* ---- /geo/stats ---- */

static int
geo_dc_healthy(const struct runtime *rt, int dc)
{
	for (int i = 0; i < rt->nbackends; i++)
		if (rt->geo->backend_dc[i] == dc && atomic_load(&rt->backends[i]->healthy) &&
		    atomic_load(&rt->backends[i]->admin) == BACKEND_ENABLED)
			return 1;
	return 0;
}

static void
geo_stats_datacenters(cJSON *root, const struct runtime *rt, const struct metrics_samples *s)
{
	cJSON *arr = cJSON_AddArrayToObject(root, "datacenters");

	for (int i = 0; i < rt->geo->ndc; i++) {
		const struct config_datacenter *dc = &rt->cfg->datacenters[i];
		cJSON *o = cJSON_CreateObject();
		uint64_t n = 0;

		for (size_t j = 0; j < s->n; j++)
			if (strcmp(s->v[j].a, dc->name) == 0)
				n += s->v[j].n;
		cJSON_AddStringToObject(o, "name", dc->name);
		cJSON_AddNumberToObject(o, "lat", dc->lat);
		cJSON_AddNumberToObject(o, "lon", dc->lon);
		if (dc->residency[0] != '\0')
			cJSON_AddStringToObject(o, "residency", dc->residency);
		cJSON_AddBoolToObject(o, "healthy", geo_dc_healthy(rt, i));
		cJSON_AddNumberToObject(o, "requests", (double)n);
		cJSON_AddItemToArray(arr, o);
	}
}

/* Proxied requests by client country: the metric's samples summed over datacenters
 * ("unknown", the unlocated clients, is in lookups). */
static void
geo_stats_countries(cJSON *root, const struct metrics_samples *s)
{
	cJSON *o = cJSON_AddObjectToObject(root, "countries");

	for (size_t j = 0; j < s->n; j++) {
		cJSON *item;

		if (strcmp(s->v[j].b, "unknown") == 0)
			continue;
		if ((item = cJSON_GetObjectItemCaseSensitive(o, s->v[j].b)) != NULL)
			cJSON_SetNumberValue(item, item->valuedouble + (double)s->v[j].n);
		else
			cJSON_AddNumberToObject(o, s->v[j].b, (double)s->v[j].n);
	}
}

cJSON *
geo_stats_json(const struct runtime *rt)
{
	cJSON *root = cJSON_CreateObject(), *o;
	struct metrics_worker *mw[GW_MAX_WORKERS];
	struct metrics_samples s = {0};
	uint64_t located = 0, unlocated = 0;

	for (int i = 0; i < gw.nworkers; i++) {
		mw[i] = &gw.workers[i]->metrics;
		located +=
		    atomic_load_explicit(&geo_pw[gw.workers[i]->id].located, memory_order_relaxed);
		unlocated += atomic_load_explicit(&geo_pw[gw.workers[i]->id].unlocated,
		                                  memory_order_relaxed);
	}
	metrics_samples_collect(&s, mw, gw.nworkers, METRICS_K_GEO);
	metrics_samples_finish(&s);
	cJSON_AddStringToObject(
	    root, "mode", rt->cfg->geo_mode == CONFIG_GEO_LATENCY ? "latency-aware" : "distance");
	geo_stats_datacenters(root, rt, &s);
	geo_stats_countries(root, &s);
	o = cJSON_AddObjectToObject(root, "lookups");
	cJSON_AddNumberToObject(o, "total", (double)(located + unlocated));
	cJSON_AddNumberToObject(o, "located", (double)located);
	cJSON_AddNumberToObject(o, "unlocated", (double)unlocated);
	metrics_samples_free(&s);
	return root;
}
