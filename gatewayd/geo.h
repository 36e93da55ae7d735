#ifndef GW_GEO_H
#define GW_GEO_H

/*
 * Geographic routing (SPEC section 3: "geo: nearest healthy datacenter", gatewayd.conf(5)).
 *
 * A client is located by providers tried in order: `geo_static` CIDR entries (a radix
 * tree), then the `geo_db` MaxMind DB (memory-mapped, shared between runtimes while the
 * file is unchanged). The datacenters are ordered by great-circle distance from the
 * client (or, with `geo_mode latency-aware`, by distance turned into an RTT estimate plus
 * the datacenter's measured response time); the balancer then only sees the backends of
 * the first datacenter that has one available. `residency=` keeps clients of a region in
 * that region's datacenters: none healthy there is a 503, never a violation. Clients that
 * cannot be located go to `geo_default` as if they stood at that datacenter, or, without
 * it, to every backend (no geo routing).
 *
 * The state of one configuration (struct geo) is immutable and read by every worker
 * without locks; per-request state lives in the exchange (struct geo_client).
 */

#include <cjson/cJSON.h>
#include <stddef.h>
#include <stdint.h>

#include "balance.h"

#define GEO_MAX_DC 32                 /* datacenters in one configuration */
#define GEO_EARTH_RADIUS_KM 6371.0088 /* IUGG mean radius */

struct config;
struct runtime;
struct exchange;

enum geo_state {
	GEO_OFF,     /* no geo routing for this request: every backend is a candidate */
	GEO_LOCATED, /* the client's position is known (static entry or MMDB) */
	GEO_DEFAULT, /* unlocated: placed at geo_default's datacenter */
};

/* Where a provider put a client. */
struct geo_loc {
	char country[3]; /* ISO 3166-1 alpha-2, "" when unknown */
	double lat, lon;
	int has_pos; /* lat/lon are valid */
};

/* Per-request state, inside struct exchange. */
struct geo_client {
	uint8_t state;      /* enum geo_state */
	uint8_t restricted; /* residency: only datacenters whose region has the country */
	uint8_t norder;
	uint8_t picked_dc;         /* index of the datacenter the last pick narrowed to, or 0xff */
	uint8_t order[GEO_MAX_DC]; /* datacenter indexes, best first */
	float lat, lon;
};

struct geo;

/* Great-circle distance in km between two points in degrees (haversine). */
double geo_haversine_km(double lat1, double lon1, double lat2, double lon2);

/* 1 when region (EU, EEA or an ISO country code) is one geo knows. */
int geo_region_valid(const char *region);
/* 1 when country (ISO alpha-2) lies in region. */
int geo_region_contains(const char *region, const char *country);

/* Checks that path is a MaxMind DB that opens; 0, or -1 with err filled. */
int geo_db_check(const char *path, char *err, size_t errlen);

/*
 * Builds the geo state of cfg. The MMDB of old is reused when cfg names the same file
 * and it did not change (mtime, size, inode); a file that no longer opens keeps the old
 * one with a warning. cfg must outlive the result. Returns a new struct owned by the
 * caller (geo_free()); never NULL.
 */
struct geo *geo_new(const struct config *cfg, const struct geo *old);
void geo_free(struct geo *g);

/* Locates addr (16-byte form): static entries first, then the MMDB. 1 when any provider
 * knew something (a country or a position), else 0 with *out cleared. */
int geo_locate(const struct geo *g, const uint8_t addr[16], struct geo_loc *out);

/*
 * Fills gc for a client at loc (NULL or empty: unlocated). dc_ms: measured response
 * time per datacenter in ms (NULL or 0 entries: unknown), used in latency-aware mode.
 */
void geo_client_init(const struct geo *g, const struct geo_loc *loc, const double *dc_ms,
                     struct geo_client *gc);

/*
 * Narrows the balancer's candidates to the first datacenter of gc's order that has an
 * eligible or a busy backend (busy[i]: at max_conns): others get eligible = 0 and busy = 0.
 * Backends outside every datacenter stay candidates only when no datacenter has any and
 * the client is not restricted by residency. A no-op when gc->state is GEO_OFF.
 */
void geo_narrow(const struct geo *g, struct geo_client *gc, struct balance_target *t, int *busy,
                int n);

/* The pipeline stage: locates x's client, fills x->geo and x->geo_country, counts the
 * lookup; answers 503 no_datacenter when residency leaves no datacenter. 1 go on; 0 x
 * was answered, or waits for the HTTP provider (geo_resume goes on with it). */
int geo_route(struct exchange *x);
/* After a geo_http lookup x waited for: the rest of geo_route, then the proxy. */
void geo_resume(struct exchange *x, const struct geo_loc *loc, int found);

/* geo_http.c: 1 located (from the cache, *loc filled), 0 not locatable now (cached as
 * unknown, or over the in-flight bound), -1 x waits in X_WAIT for a lookup. */
int geo_http_lookup(struct exchange *x, struct geo_loc *loc);
/* A provider's JSON answer: country from "country_code", "countryCode" or "country"
 * (two upper-case letters); position from "latitude"/"lat" and "longitude"/"lon"/"lng",
 * or "loc":"LAT,LON". 1 when either was found. */
int geo_http_parse(const char *body, size_t len, struct geo_loc *out);
/* The template with "{ip}" replaced by addr; 0, or -1 when it does not fit. */
int geo_http_url(const char *tmpl, const uint8_t addr[16], char *out, size_t len);
/* Great-circle distance from x's client to the datacenter its backend is in; -1 when
 * the client is not located. */
long geo_distance_km(const struct exchange *x);

/* The /geo/stats object (SPEC section 6). Any thread. Returns a new tree owned by the
 * caller (cJSON_Delete). */
cJSON *geo_stats_json(const struct runtime *rt);
/* GET /geo/stats. */
void api_geo_stats(struct exchange *x);

#endif
