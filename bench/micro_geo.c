/*
 * Microbenchmark of the per-request geo work: locating a client (geo_static radix tree
 * with 1000 prefixes; a MaxMind DB when GEO_BENCH_MMDB names one), ordering the
 * datacenters (geo_client_init) and narrowing the balancer's candidates (geo_narrow).
 * Times are this thread's CPU time per call. `make micro` builds and runs it.
 */

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cidr.h"
#include "config.h"
#include "geo.h"

#define BENCH_N 2000000
#define BENCH_STATICS 1000

static volatile uint64_t bench_sink; /* keeps results alive past the optimiser */

/* This thread's CPU time: on a shared machine, time spent preempted is not ours. */
static uint64_t
bench_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* 1000 /24s in 10.0.0.0/8, six backends in three datacenters; geo_db from the env. */
static struct config *
bench_config(void)
{
	size_t cap = 128 * (BENCH_STATICS + 16), off = 0;
	char *text = malloc(cap), err[512];
	const char *db = getenv("GEO_BENCH_MMDB");
	struct config *c;

	off += (size_t)snprintf(
	    text + off, cap - off,
	    "backend u1 127.0.0.1:1 dc=us-east\nbackend u2 127.0.0.1:2 dc=us-east\n"
	    "backend e1 127.0.0.1:3 dc=eu-west\nbackend e2 127.0.0.1:4 dc=eu-west\n"
	    "backend a1 127.0.0.1:5 dc=ap-south\nbackend a2 127.0.0.1:6 dc=ap-south\n"
	    "datacenter us-east lat=39.04 lon=-77.49\n"
	    "datacenter eu-west lat=53.35 lon=-6.26 residency=EU\n"
	    "datacenter ap-south lat=1.35 lon=103.82\n");
	if (db != NULL)
		off += (size_t)snprintf(text + off, cap - off, "geo_db %s\n", db);
	for (int i = 0; i < BENCH_STATICS; i++)
		off += (size_t)snprintf(text + off, cap - off,
		                        "geo_static 10.%d.%d.0/24 country=DE lat=%d.5 lon=%d.25\n",
		                        i / 256, i % 256, i % 80, i % 170);
	c = config_load_text("bench", text, NULL, err, sizeof err);
	free(text);
	if (c == NULL) {
		fprintf(stderr, "config: %s\n", err);
		exit(1);
	}
	return c;
}

static void
bench_report(const char *what, uint64_t t0, int n)
{
	printf("%-44s %8.1f ns/call\n", what, (double)(bench_ns() - t0) / n);
}

static void
bench_locate(const struct geo *g, const char *what, const char *prefix)
{
	uint8_t addr[256][16];
	struct geo_loc loc;
	uint64_t t0, hits = 0;

	for (int i = 0; i < 256; i++) {
		char s[64];

		snprintf(s, sizeof s, "%s%d.%d", prefix, i % 4, i);
		if (cidr_parse_addr(s, strlen(s), addr[i]) != 0)
			exit(1);
	}
	t0 = bench_ns();
	for (int i = 0; i < BENCH_N; i++)
		hits += (uint64_t)geo_locate(g, addr[i & 255], &loc);
	bench_report(what, t0, BENCH_N);
	bench_sink += hits;
}

int
main(void)
{
	struct config *c = bench_config();
	struct geo *g = geo_new(c, NULL);
	struct geo_loc loc = {.country = "DE", .lat = 52.52, .lon = 13.40, .has_pos = 1};
	struct geo_client gc;
	struct balance_target t[6];
	int busy[6];
	uint64_t t0;

	bench_locate(g, "geo_locate: geo_static hit (1000 prefixes)", "10.0.");
	bench_locate(g, "geo_locate: no provider knows it", "172.16.");
	if (getenv("GEO_BENCH_MMDB") != NULL)
		bench_locate(g, "geo_locate: MMDB lookup (static miss first)", "192.0.");
	t0 = bench_ns();
	for (int i = 0; i < BENCH_N; i++) {
		geo_client_init(g, &loc, NULL, &gc);
		bench_sink += gc.order[0];
	}
	bench_report("geo_client_init: 3 datacenters, residency", t0, BENCH_N);
	t0 = bench_ns();
	for (int i = 0; i < BENCH_N; i++) {
		for (int k = 0; k < 6; k++) {
			t[k].eligible = k != 2; /* one of eu-west's backends down */
			busy[k] = 0;
		}
		geo_narrow(g, &gc, t, busy, 6);
		bench_sink += (uint64_t)t[3].eligible;
	}
	bench_report("geo_narrow: 6 backends", t0, BENCH_N);
	geo_free(g);
	config_free(c);
	return 0;
}
