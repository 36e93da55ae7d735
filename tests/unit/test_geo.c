/* Unit tests for gatewayd/geo.c: distances, regions, the geo directives, provider order,
 * the datacenter order and the narrowing of the balancer's candidates. */

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "geo.h"

/* --- distances ------------------------------------------------------------------- */

static void
assert_km(double lat1, double lon1, double lat2, double lon2, double want, double tol)
{
	double got = geo_haversine_km(lat1, lon1, lat2, lon2);
	double back = geo_haversine_km(lat2, lon2, lat1, lon1);

	if (fabs(got - want) > want * tol)
		fail_msg("distance %.1f km, want %.1f km within %.1f%%", got, want, tol * 100);
	assert_true(fabs(got - back) < 1e-6); /* symmetric */
}

static void
test_haversine_city_pairs(void **state)
{
	assert_km(51.5074, -0.1278, 40.7128, -74.0060, 5570, 0.005);     /* London - New York */
	assert_km(48.8566, 2.3522, 35.6762, 139.6503, 9712, 0.005);      /* Paris - Tokyo */
	assert_km(-33.8688, 151.2093, 34.0522, -118.2437, 12051, 0.005); /* Sydney - LA */
	assert_km(52.5200, 13.4050, 53.3498, -6.2603, 1317, 0.005);      /* Berlin - Dublin */
	assert_km(1.3521, 103.8198, 39.04, -77.49, 15580, 0.01);         /* Singapore - Ashburn */
}

static void
test_haversine_edges(void **state)
{
	double half = M_PI * GEO_EARTH_RADIUS_KM;

	assert_true(geo_haversine_km(10, 20, 10, 20) < 1e-9);
	/* antipodes: half the circumference, no NaN from rounding */
	assert_true(fabs(geo_haversine_km(0, 0, 0, 180) - half) < 1e-6);
	assert_true(fabs(geo_haversine_km(90, 0, -90, 0) - half) < 1e-6);
	/* across the antimeridian: 2 degrees of longitude at the equator, not 358 */
	assert_true(fabs(geo_haversine_km(0, 179, 0, -179) - 222.39) < 0.5);
}

/* --- regions ---------------------------------------------------------------------- */

static void
test_regions(void **state)
{
	assert_true(geo_region_valid("EU"));
	assert_true(geo_region_valid("EEA"));
	assert_true(geo_region_valid("DE"));
	assert_false(geo_region_valid("eu"));
	assert_false(geo_region_valid("EUROPE"));
	assert_false(geo_region_valid(""));
	assert_true(geo_region_contains("EU", "DE"));
	assert_true(geo_region_contains("EU", "SE"));
	assert_false(geo_region_contains("EU", "GB"));
	assert_false(geo_region_contains("EU", "NO"));
	assert_true(geo_region_contains("EEA", "NO"));
	assert_true(geo_region_contains("EEA", "FR"));
	assert_false(geo_region_contains("EEA", "CH"));
	assert_true(geo_region_contains("US", "US"));
	assert_false(geo_region_contains("US", "CA"));
	assert_false(geo_region_contains("EU", ""));
	assert_false(geo_region_contains("", "DE"));
}

/* --- configuration ---------------------------------------------------------------- */

#define BASE                                                                                       \
	"backend us1 127.0.0.1:5001 dc=us-east\n"                                                  \
	"backend us2 127.0.0.1:5002 dc=us-east\n"                                                  \
	"backend eu1 127.0.0.1:5003 dc=eu-west\n"                                                  \
	"backend ap1 127.0.0.1:5004 dc=ap-south\n"                                                 \
	"backend x1 127.0.0.1:5005\n"                                                              \
	"datacenter us-east lat=39.04 lon=-77.49\n"                                                \
	"datacenter eu-west lat=53.35 lon=-6.26\n"                                                 \
	"datacenter ap-south lat=1.35 lon=103.82\n"

static struct config *
load(const char *text)
{
	char err[512];
	struct config *c = config_load_text("test.conf", text, NULL, err, sizeof err);

	if (c == NULL)
		fail_msg("config: %s", err);
	return c;
}

static void
assert_refused(const char *text, const char *want)
{
	char err[512] = "";
	struct config *c = config_load_text("test.conf", text, NULL, err, sizeof err);

	if (c != NULL) {
		config_free(c);
		fail_msg("accepted: %s", text);
	}
	if (strstr(err, want) == NULL)
		fail_msg("error \"%s\" lacks \"%s\"", err, want);
}

static void
test_config_geo(void **state)
{
	struct config *c = load(BASE "datacenter fra lat=50.11 lon=8.68 residency=EU\n"
	                             "geo_static 203.0.113.0/24 country=DE lat=52.52 lon=13.40\n"
	                             "geo_static 2001:db8::/32 country=JP\n"
	                             "geo_static 198.51.100.0/24 lat=40.7 lon=-74\n"
	                             "geo_default eu-west\n"
	                             "geo_mode latency-aware\n");

	assert_int_equal(c->ngeo_static, 3);
	assert_string_equal(c->geo_static[0].country, "DE");
	assert_true(c->geo_static[0].has_pos);
	assert_false(c->geo_static[1].has_pos);
	assert_string_equal(c->geo_static[2].country, "");
	assert_string_equal(c->geo_default, "eu-west");
	assert_int_equal(c->geo_mode, CONFIG_GEO_LATENCY);
	assert_string_equal(c->datacenters[3].residency, "EU");
	config_free(c);

	c = load(BASE);
	assert_int_equal(c->geo_mode, CONFIG_GEO_DISTANCE);
	assert_string_equal(c->geo_default, "");
	assert_string_equal(c->geo_db, "");
	config_free(c);
}

static void
test_config_geo_refused(void **state)
{
	static const struct {
		const char *line, *want;
	} cases[] = {
	    {"geo_default nowhere\n", "test.conf:9: geo_default: 'nowhere'"},
	    {"geo_static 203.0.113.0/24\n", "give country="},
	    {"geo_static 203.0.113.0/24 lat=1\n", "lat= and lon= go together"},
	    {"geo_static 203.0.113.0/24 country=de\n", "ISO 3166"},
	    {"geo_static 203.0.113.0/24 country=DEU\n", "country must be"},
	    {"geo_static nonsense country=DE\n", "expected a CIDR"},
	    {"geo_static 203.0.113.0/24 lat=91 lon=0\n", "lat must be"},
	    {"geo_mode fastest\n", "geo_mode: distance or latency-aware"},
	    {"datacenter x lat=0 lon=0 residency=Mars\n", "residency must be"},
	    {"geo_db /nonexistent/file.mmdb\n", "geo_db"},
	    {"geo_db /etc/hostname\n", "cannot open MaxMind DB"},
	    {"geo_http http://x/\n", "with {ip} in it"},
	    {"geo_http ftp://x/{ip}\n", "expected an http:// or https:// URL"},
	    {"geo_http http://x/{ip} timeout=0s\n", "timeout must be"},
	    {"geo_http http://x/{ip} max=0\n", "max must be"},
	    {"geo_http http://x/{ip} colour=red\n", "unknown option 'colour'"},
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char text[1024];

		snprintf(text, sizeof text, "%s%s", BASE, cases[i].line);
		assert_refused(text, cases[i].want);
	}
}

static void
test_config_geo_http(void **state)
{
	struct config *c = load(BASE);

	assert_string_equal(c->geo_http.url, "");
	assert_int_equal(c->geo_http.timeout_ms, 500);
	assert_int_equal(c->geo_http.ttl_ms, 3600000);
	assert_int_equal(c->geo_http.negative_ttl_ms, 300000);
	assert_int_equal(c->geo_http.max, 16);
	config_free(c);
	c = load(BASE "geo_http https://geo.example/json/{ip}?fields=cc timeout=80ms ttl=10m "
	              "negative_ttl=30s max=4\n");
	assert_string_equal(c->geo_http.url, "https://geo.example/json/{ip}?fields=cc");
	assert_int_equal(c->geo_http.timeout_ms, 80);
	assert_int_equal(c->geo_http.ttl_ms, 600000);
	assert_int_equal(c->geo_http.negative_ttl_ms, 30000);
	assert_int_equal(c->geo_http.max, 4);
	config_free(c);
}

/* --- the HTTP provider's answers ----------------------------------------------------- */

static void
assert_parsed(const char *json, int want, const char *cc, int has_pos, double lat, double lon)
{
	struct geo_loc l;

	if (geo_http_parse(json, strlen(json), &l) != want)
		fail_msg("geo_http_parse(%s) != %d", json, want);
	assert_string_equal(l.country, cc);
	assert_int_equal(l.has_pos, has_pos);
	if (has_pos) {
		assert_true(fabs(l.lat - lat) < 1e-9);
		assert_true(fabs(l.lon - lon) < 1e-9);
	}
}

static void
test_http_parse(void **state)
{
	/* the shapes of ip-api.com, ipapi.co and ipinfo.io answers */
	assert_parsed("{\"status\":\"success\",\"countryCode\":\"DE\",\"lat\":52.52,\"lon\":13.4}",
	              1, "DE", 1, 52.52, 13.4);
	assert_parsed("{\"country_code\":\"FR\",\"latitude\":48.85,\"longitude\":2.35}", 1, "FR", 1,
	              48.85, 2.35);
	assert_parsed("{\"country\":\"JP\",\"loc\":\"35.68,139.65\"}", 1, "JP", 1, 35.68, 139.65);
	assert_parsed("{\"country\":\"SG\",\"lat\":\"1.29\",\"lng\":\"103.85\"}", 1, "SG", 1, 1.29,
	              103.85);
	/* a country name is not a code; half a position is none */
	assert_parsed("{\"country\":\"Germany\",\"lat\":52.5}", 0, "", 0, 0, 0);
	assert_parsed("{\"countryCode\":\"de\"}", 0, "", 0, 0, 0);
	assert_parsed("{\"lat\":95,\"lon\":0}", 0, "", 0, 0, 0);
	assert_parsed("{\"loc\":\"1,2,3\"}", 0, "", 0, 0, 0);
	assert_parsed("{\"country_code\":null,\"country\":\"NL\"}", 1, "NL", 0, 0, 0);
	assert_parsed("[]", 0, "", 0, 0, 0);
	assert_parsed("not json", 0, "", 0, 0, 0);
	assert_parsed("", 0, "", 0, 0, 0);
}

static void
test_http_url(void **state)
{
	uint8_t a[16];
	char url[64];

	assert_int_equal(cidr_parse_addr("203.0.113.7", 11, a), 0);
	assert_int_equal(geo_http_url("http://127.0.0.1:9/geo/{ip}?x=1", a, url, sizeof url), 0);
	assert_string_equal(url, "http://127.0.0.1:9/geo/203.0.113.7?x=1");
	assert_int_equal(cidr_parse_addr("2001:db8::5", 11, a), 0);
	assert_int_equal(geo_http_url("http://h/{ip}", a, url, sizeof url), 0);
	assert_string_equal(url, "http://h/2001:db8::5");
	assert_int_equal(geo_http_url("http://h/", a, url, sizeof url), -1);
	assert_int_equal(geo_http_url("http://a-very-long-host-name.example/some/longer/path/{ip}",
	                              a, url, sizeof url),
	                 -1);
}

/* --- locating --------------------------------------------------------------------- */

static void
addr(const char *s, uint8_t out[16])
{
	if (cidr_parse_addr(s, strlen(s), out) != 0)
		fail_msg("bad address %s", s);
}

static void
test_locate_static(void **state)
{
	struct config *c = load(BASE "geo_static 203.0.113.0/24 country=DE lat=52.52 lon=13.40\n"
	                             "geo_static 203.0.113.128/25 country=FR lat=48.85 lon=2.35\n"
	                             "geo_static 2001:db8::/32 country=JP\n");
	struct geo *g = geo_new(c, NULL);
	struct geo_loc loc;
	uint8_t a[16];

	addr("203.0.113.5", a);
	assert_int_equal(geo_locate(g, a, &loc), 1);
	assert_string_equal(loc.country, "DE");
	assert_true(loc.has_pos);
	assert_true(fabs(loc.lat - 52.52) < 1e-9);
	/* the longest prefix wins */
	addr("203.0.113.200", a);
	assert_int_equal(geo_locate(g, a, &loc), 1);
	assert_string_equal(loc.country, "FR");
	addr("2001:db8::1", a);
	assert_int_equal(geo_locate(g, a, &loc), 1);
	assert_string_equal(loc.country, "JP");
	assert_false(loc.has_pos);
	/* loopback and unknown ranges are unlocated */
	addr("127.0.0.1", a);
	assert_int_equal(geo_locate(g, a, &loc), 0);
	assert_string_equal(loc.country, "");
	assert_false(loc.has_pos);
	addr("192.0.2.1", a);
	assert_int_equal(geo_locate(g, a, &loc), 0);
	geo_free(g);
	config_free(c);
}

/* --- choosing a datacenter -------------------------------------------------------- */

#define NB 5 /* backends of BASE: us1 us2 eu1 ap1 x1 */

static void
targets(struct balance_target *t, int *busy, const int *up)
{
	for (int i = 0; i < NB; i++) {
		memset(&t[i], 0, sizeof(t[i]));
		t[i].weight = 1;
		t[i].eligible = up[i] == 1;
		busy[i] = up[i] == 2; /* at max_conns */
	}
}

/* The eligible backends after narrowing, as a bit mask (us1 = bit 0 ...). */
static int
narrow(const struct geo *g, struct geo_client *gc, const int *up)
{
	struct balance_target t[NB];
	int busy[NB], mask = 0;

	targets(t, busy, up);
	geo_narrow(g, gc, t, busy, NB);
	for (int i = 0; i < NB; i++)
		mask |= (t[i].eligible ? 1 : 0) << i | (busy[i] ? 1 : 0) << (8 + i);
	return mask;
}

static struct geo_loc
at(const char *cc, double lat, double lon)
{
	struct geo_loc l;

	memset(&l, 0, sizeof l);
	snprintf(l.country, sizeof l.country, "%s", cc);
	l.lat = lat;
	l.lon = lon;
	l.has_pos = 1;
	return l;
}

static void
test_nearest_and_failover(void **state)
{
	struct config *c = load(BASE);
	struct geo *g = geo_new(c, NULL);
	struct geo_client gc;
	struct geo_loc berlin = at("DE", 52.52, 13.40), nyc = at("US", 40.71, -74.0);
	const int all[NB] = {1, 1, 1, 1, 1};
	const int eu_down[NB] = {1, 1, 0, 1, 1};
	const int eu_busy[NB] = {1, 1, 2, 1, 1};
	const int dcs_down[NB] = {0, 0, 0, 0, 1};

	geo_client_init(g, &berlin, NULL, &gc);
	assert_int_equal(gc.state, GEO_LOCATED);
	assert_int_equal(gc.norder, 3);
	assert_int_equal(gc.order[0], 1); /* eu-west */
	assert_int_equal(gc.order[1], 0); /* us-east */
	assert_int_equal(gc.order[2], 2); /* ap-south */
	assert_int_equal(narrow(g, &gc, all), 1 << 2);
	assert_int_equal(gc.picked_dc, 1);
	/* the nearest datacenter's backends are down: the next nearest */
	assert_int_equal(narrow(g, &gc, eu_down), 1 << 0 | 1 << 1);
	assert_int_equal(gc.picked_dc, 0);
	/* busy is not down: wait for the nearest (queue) */
	assert_int_equal(narrow(g, &gc, eu_busy), 1 << (8 + 2));
	/* every datacenter down: the backends outside datacenters */
	assert_int_equal(narrow(g, &gc, dcs_down), 1 << 4);
	assert_int_equal(gc.picked_dc, 0xff);

	geo_client_init(g, &nyc, NULL, &gc);
	assert_int_equal(gc.order[0], 0);
	assert_int_equal(narrow(g, &gc, all), 1 << 0 | 1 << 1);
	geo_free(g);
	config_free(c);
}

static void
test_unlocated(void **state)
{
	struct config *c = load(BASE);
	struct config *cd = load(BASE "geo_default ap-south\n");
	struct geo *g = geo_new(c, NULL), *gd = geo_new(cd, NULL);
	struct geo_client gc;
	struct geo_loc none, country_only;
	const int all[NB] = {1, 1, 1, 1, 1};
	const int ap_down[NB] = {1, 1, 1, 0, 1};

	memset(&none, 0, sizeof none);
	memset(&country_only, 0, sizeof country_only);
	memcpy(country_only.country, "DE", 3);
	/* no geo_default: every backend, as without geo routing */
	geo_client_init(g, &none, NULL, &gc);
	assert_int_equal(gc.state, GEO_OFF);
	assert_int_equal(narrow(g, &gc, all), 0x1f);
	geo_client_init(g, NULL, NULL, &gc);
	assert_int_equal(gc.state, GEO_OFF);
	/* a country without a position and no residency rules: the same */
	geo_client_init(g, &country_only, NULL, &gc);
	assert_int_equal(gc.state, GEO_OFF);
	/* geo_default: placed at that datacenter, failing over from there */
	geo_client_init(gd, &none, NULL, &gc);
	assert_int_equal(gc.state, GEO_DEFAULT);
	assert_int_equal(gc.order[0], 2);
	assert_int_equal(narrow(gd, &gc, all), 1 << 3);
	assert_int_equal(narrow(gd, &gc, ap_down) & 0xff, 1 << 2); /* eu-west is nearer to it */
	geo_free(g);
	geo_free(gd);
	config_free(c);
	config_free(cd);
}

static void
test_residency(void **state)
{
	struct config *c = load("backend us1 127.0.0.1:5001 dc=us-east\n"
	                        "backend eu1 127.0.0.1:5002 dc=eu-west\n"
	                        "backend de1 127.0.0.1:5003 dc=fra\n"
	                        "backend x1 127.0.0.1:5004\n"
	                        "datacenter us-east lat=39.04 lon=-77.49\n"
	                        "datacenter eu-west lat=53.35 lon=-6.26 residency=EU\n"
	                        "datacenter fra lat=50.11 lon=8.68 residency=EU\n");
	struct geo *g = geo_new(c, NULL);
	struct geo_client gc;
	struct geo_loc lisbon = at("PT", 38.72, -9.14), boston = at("US", 42.36, -71.06);
	struct geo_loc reykjavik = at("IS", 64.15, -21.94), de_only;
	struct balance_target t[4];
	int busy[4] = {0};

	/* PT is in the EU: only EU datacenters, nearest first */
	geo_client_init(g, &lisbon, NULL, &gc);
	assert_true(gc.restricted);
	assert_int_equal(gc.norder, 2);
	assert_int_equal(gc.order[0], 1);
	assert_int_equal(gc.order[1], 2);
	/* both EU datacenters down: nothing, not the US one, not the dc-less backend */
	for (int i = 0; i < 4; i++) {
		memset(&t[i], 0, sizeof t[i]);
		t[i].eligible = i == 0 || i == 3;
	}
	geo_narrow(g, &gc, t, busy, 4);
	for (int i = 0; i < 4; i++)
		assert_false(t[i].eligible);
	/* US clients are not bound: they may use EU datacenters too */
	geo_client_init(g, &boston, NULL, &gc);
	assert_false(gc.restricted);
	assert_int_equal(gc.norder, 3);
	assert_int_equal(gc.order[0], 0);
	/* Iceland is EEA, not EU */
	geo_client_init(g, &reykjavik, NULL, &gc);
	assert_false(gc.restricted);
	/* a country without a position: the region's datacenters together */
	memset(&de_only, 0, sizeof de_only);
	memcpy(de_only.country, "DE", 3);
	geo_client_init(g, &de_only, NULL, &gc);
	assert_true(gc.restricted);
	assert_int_equal(gc.state, GEO_DEFAULT);
	assert_int_equal(gc.norder, 2);
	geo_free(g);
	config_free(c);
}

static void
test_latency_aware(void **state)
{
	struct config *c = load(BASE "geo_mode latency-aware\n");
	struct config *cd = load(BASE);
	struct geo *g = geo_new(c, NULL), *gd = geo_new(cd, NULL);
	struct geo_client gc;
	struct geo_loc berlin = at("DE", 52.52, 13.40);
	/* eu-west ~1300 km (13 ms), us-east ~6700 km (67 ms) */
	double slow_eu[GEO_MAX_DC] = {[0] = 10, [1] = 200, [2] = 10};
	double bit_slower_eu[GEO_MAX_DC] = {[0] = 10, [1] = 40, [2] = 10};

	geo_client_init(g, &berlin, slow_eu, &gc);
	assert_int_equal(gc.order[0], 0); /* 67 + 10 beats 13 + 200 */
	geo_client_init(g, &berlin, bit_slower_eu, &gc);
	assert_int_equal(gc.order[0], 1); /* 13 + 40 still beats 67 + 10 */
	geo_client_init(g, &berlin, NULL, &gc);
	assert_int_equal(gc.order[0], 1); /* unmeasured: distance */
	/* distance mode ignores measurements */
	geo_client_init(gd, &berlin, slow_eu, &gc);
	assert_int_equal(gc.order[0], 1);
	geo_free(g);
	geo_free(gd);
	config_free(c);
	config_free(cd);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_haversine_city_pairs),
	    cmocka_unit_test(test_haversine_edges),
	    cmocka_unit_test(test_regions),
	    cmocka_unit_test(test_config_geo),
	    cmocka_unit_test(test_config_geo_refused),
	    cmocka_unit_test(test_config_geo_http),
	    cmocka_unit_test(test_http_parse),
	    cmocka_unit_test(test_http_url),
	    cmocka_unit_test(test_locate_static),
	    cmocka_unit_test(test_nearest_and_failover),
	    cmocka_unit_test(test_unlocated),
	    cmocka_unit_test(test_residency),
	    cmocka_unit_test(test_latency_aware),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
