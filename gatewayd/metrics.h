#ifndef GW_METRICS_H
#define GW_METRICS_H

/*
 * Prometheus metrics (SPEC section 8), served by GET /metrics in text format 0.0.4.
 *
 * Every worker owns a struct metrics_worker (embedded in struct worker): a fixed-bucket
 * latency histogram and a small fixed-size table of labelled counters. Only the owning
 * thread writes them (relaxed load+store, no locked instruction per request); a scrape,
 * on any thread, reads every worker's copy with relaxed loads and merges them. Table
 * entries are published once with a release store of `used` and their labels never
 * change afterwards, so a reader never sees a half-written key.
 *
 * Label cardinality is bounded by construction: status codes (three digits), backend
 * ids, datacenter and tier names come from the configuration; nothing per key, user or
 * address is ever a label. A table that fills up counts further new label sets under
 * the value "other".
 */

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

struct worker;
struct backend;
struct runtime;
struct exchange;

/* Histogram upper bounds, microseconds (le="0.001" ... le="10"), then +Inf. */
#define METRICS_NBUCKETS 13
extern const uint64_t metrics_bucket_us[METRICS_NBUCKETS];

#define METRICS_FINE 160 /* fine buckets: up to 2^41 us */
#define METRICS_LABEL_MAX 64 /* CONFIG_NAME_MAX: backend ids, dc and tier names */
#define METRICS_TABLE_SIZE 256

enum metrics_kind {
	METRICS_K_REQUESTS = 1, /* gatewayd_requests_total{code,backend} */
	METRICS_K_RATELIMIT,    /* gatewayd_ratelimit_decisions_total{tier,decision} */
	METRICS_K_GEO,          /* gatewayd_geo_requests_total{datacenter,country} */
};

struct metrics_entry {
	_Atomic uint32_t used; /* 0, or the kind: set last, with release */
	char a[METRICS_LABEL_MAX];
	char b[METRICS_LABEL_MAX];
	_Atomic uint64_t n;
};

struct metrics_worker {
	_Atomic uint64_t hist[METRICS_NBUCKETS + 1]; /* not cumulative; last is +Inf */
	_Atomic uint64_t hist_sum_us;
	/* log-linear latency buckets (4 per octave) for the live p50/p99 of publish.c */
	_Atomic uint64_t fine[METRICS_FINE];
	_Atomic uint64_t proxied; /* responses from a backend (cache result "bypass") */
	uint32_t nused;           /* owner only */
	struct metrics_entry tab[METRICS_TABLE_SIZE];
};

/* --- recording (the owning worker's thread only) --- */

/* A response went out: status, the backend that answered (NULL: the gateway did). */
void metrics_request(struct worker *w, int status, const struct backend *b, uint64_t start_us);
/* A proxied response, by the backend's datacenter and the client's country ("": none). */
void metrics_geo(struct worker *w, const struct backend *b, const char *country);
/* A tier limiter decision. */
void metrics_ratelimit(struct worker *w, const char *tier, int allowed);

/* Building blocks, on one struct metrics_worker (for the unit tests). */
int metrics_bucket_index(uint64_t us);
/* The fine bucket of us, and the lowest value of a fine bucket. */
int metrics_fine_index(uint64_t us);
uint64_t metrics_fine_lower(int idx);
void metrics_observe(struct metrics_worker *m, uint64_t us);
void metrics_count(struct metrics_worker *m, int kind, const char *a, const char *b, uint64_t n);

/* --- text output --- */

struct mbuf {
	char *p;
	size_t len, cap;
};

void mbuf_printf(struct mbuf *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* A label value with \\, \" and \n escaped (text format 0.0.4). */
void mbuf_label(struct mbuf *o, const char *v);

/* One merged labelled sample. */
struct metrics_sample {
	char a[METRICS_LABEL_MAX];
	char b[METRICS_LABEL_MAX];
	uint64_t n;
};
struct metrics_samples {
	struct metrics_sample *v;
	size_t n, cap;
};
void metrics_samples_add(struct metrics_samples *s, const char *a, const char *b, uint64_t n);
/* Adds every entry of `kind` of the nw workers' tables. */
void metrics_samples_collect(struct metrics_samples *s, struct metrics_worker *const *mw, int nw,
                             int kind);
/* Sorts by (a, b) and merges equal label sets by summing. */
void metrics_samples_finish(struct metrics_samples *s);
void metrics_samples_free(struct metrics_samples *s);
/* Writes a counter family: HELP, TYPE and one line per sample, labels la and lb. */
void metrics_write_counter2(struct mbuf *o, const char *name, const char *help, const char *la,
                            const char *lb, const struct metrics_samples *s);
/* Writes a histogram from non-cumulative bucket counts (last = +Inf) and a sum in us. */
void metrics_write_histogram(struct mbuf *o, const char *name, const char *help,
                             const uint64_t counts[METRICS_NBUCKETS + 1], uint64_t sum_us);

/* The whole /metrics text (any thread): malloc'ed, NUL-terminated, *len its length. */
char *metrics_render(const struct runtime *rt, size_t *len);

/* respond.c: answers with a body of the given content type. */
void respond_text(struct exchange *x, int status, const char *ctype, const char *body, size_t len,
                  const char *extra_headers);

#endif
