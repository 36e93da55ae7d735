/*
 * Microbenchmark of the per-request identity work: an uncached HS256 verification, a
 * verified-token cache hit (and a miss), HS256 signing, RS256/ES256 verification, and
 * one bcrypt hash at AUTH_BCRYPT_COST. Times are this thread's CPU time per call.
 *
 * Build and run from the repository root:
 *   gcc -std=gnu11 -O2 -g -D_GNU_SOURCE -Ishared -Igatewayd -I/usr/include/cjson \
 *       bench/micro_auth.c gatewayd/auth.c shared/util.c shared/log.c shared/xmalloc.c \
 *       -lssl -lcrypto -lcjson -lcrypt -lpthread -o /tmp/micro_auth && /tmp/micro_auth
 */

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/pem.h>

#include "auth.h"

#define BENCH_NOW 1700000000LL
#define BENCH_TOKENS 1024 /* distinct tokens cycled through the cache */

static volatile uint64_t bench_sink; /* keeps results alive past the optimiser */

/* This thread's CPU time: on a shared machine, time spent preempted is not ours. */
static uint64_t
bench_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static struct auth_ctx *
bench_hs_ctx(void)
{
	static const char secret[] = "bench-secret-bench-secret-bench-secret!!";
	struct auth_config cfg = {.alg = AUTH_HS256,
	                          .secret = (const unsigned char *)secret,
	                          .secret_len = sizeof secret - 1,
	                          .issuer = "gatewayd",
	                          .access_ttl = 3600,
	                          .refresh_ttl = 604800,
	                          .leeway = 30};
	char err[256];
	struct auth_ctx *ctx = auth_ctx_new(&cfg, err, sizeof err);

	if (ctx == NULL) {
		fprintf(stderr, "auth_ctx_new: %s\n", err);
		exit(1);
	}
	return ctx;
}

/* A key pair written to a temporary file, and a context on it. */
static struct auth_ctx *
bench_key_ctx(enum auth_alg alg, char *path, size_t pathlen)
{
	struct auth_config cfg = {
	    .alg = alg, .issuer = "gatewayd", .access_ttl = 3600, .leeway = 30};
	EVP_PKEY *k = alg == AUTH_RS256 ? EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048)
	                                : EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
	char err[256];
	struct auth_ctx *ctx;
	FILE *f;
	int fd;

	snprintf(path, pathlen, "/tmp/micro_auth.XXXXXX");
	fd = mkstemp(path);
	if (k == NULL || fd < 0 || (f = fdopen(fd, "w")) == NULL) {
		fprintf(stderr, "key setup failed\n");
		exit(1);
	}
	PEM_write_PrivateKey(f, k, NULL, NULL, 0, NULL, NULL);
	fclose(f);
	EVP_PKEY_free(k);
	cfg.private_key_file = path;
	ctx = auth_ctx_new(&cfg, err, sizeof err);
	if (ctx == NULL) {
		fprintf(stderr, "auth_ctx_new: %s\n", err);
		exit(1);
	}
	return ctx;
}

static void
bench_verify_pkey(enum auth_alg alg, int iters)
{
	char path[64], tok[AUTH_TOKEN_MAX + 1];
	struct auth_ctx *ctx = bench_key_ctx(alg, path, sizeof path);
	struct auth_claims c, out;
	uint64_t t0;
	int n;

	auth_claims_init(ctx, &c, "access", "user-1234", "premium", BENCH_NOW);
	n = auth_jwt_sign(ctx, &c, tok, sizeof tok);
	t0 = bench_ns();
	for (int i = 0; i < iters; i++)
		bench_sink += (uint64_t)auth_jwt_verify(ctx, tok, (size_t)n, BENCH_NOW, &out);
	printf("%s verify (uncached):      %8.0f ns/op   (token %d bytes)\n", auth_alg_name(alg),
	       (double)(bench_ns() - t0) / iters, n);
	t0 = bench_ns();
	for (int i = 0; i < iters / 4; i++)
		bench_sink += (uint64_t)auth_jwt_sign(ctx, &c, tok, sizeof tok);
	printf("%s sign:                   %8.0f ns/op\n", auth_alg_name(alg),
	       (double)(bench_ns() - t0) / (iters / 4));
	unlink(path);
	auth_ctx_free(ctx);
}

int
main(void)
{
	enum { ITERS = 200000, HITS = 2000000 };
	struct auth_ctx *ctx = bench_hs_ctx();
	struct auth_cache *cache = auth_cache_new(65536);
	static char toks[BENCH_TOKENS][512];
	static int lens[BENCH_TOKENS];
	struct auth_claims c, out;
	char h[AUTH_HASH_MAX], rnd[80], hex[65];
	uint64_t t0, hits = 0;

	for (int i = 0; i < BENCH_TOKENS; i++) {
		auth_claims_init(ctx, &c, "access", "user-1234", "premium", BENCH_NOW);
		lens[i] = auth_jwt_sign(ctx, &c, toks[i], sizeof toks[i]);
		if (lens[i] <= 0)
			return 1;
		auth_cache_put(cache, toks[i], (size_t)lens[i], &c);
	}

	/* warm up code and allocator */
	for (int i = 0; i < 10000; i++)
		bench_sink += (uint64_t)auth_jwt_verify(
		    ctx, toks[i % BENCH_TOKENS], (size_t)lens[i % BENCH_TOKENS], BENCH_NOW, &out);

	t0 = bench_ns();
	for (int i = 0; i < ITERS; i++)
		bench_sink += (uint64_t)auth_jwt_verify(
		    ctx, toks[i % BENCH_TOKENS], (size_t)lens[i % BENCH_TOKENS], BENCH_NOW, &out);
	printf("HS256 verify (uncached):      %8.0f ns/op   (token %d bytes)\n",
	       (double)(bench_ns() - t0) / ITERS, lens[0]);

	t0 = bench_ns();
	for (int i = 0; i < HITS; i++)
		hits += (uint64_t)auth_cache_get(cache, toks[i % BENCH_TOKENS],
		                                 (size_t)lens[i % BENCH_TOKENS], BENCH_NOW, &out);
	printf("cache hit:                    %8.0f ns/op   (%llu/%d hits)\n",
	       (double)(bench_ns() - t0) / HITS, (unsigned long long)hits, HITS);

	toks[0][lens[0] - 2] ^= 1; /* same length, not cached */
	t0 = bench_ns();
	for (int i = 0; i < HITS; i++)
		bench_sink +=
		    (uint64_t)auth_cache_get(cache, toks[0], (size_t)lens[0], BENCH_NOW, &out);
	printf("cache miss:                   %8.0f ns/op\n", (double)(bench_ns() - t0) / HITS);

	auth_claims_init(ctx, &c, "access", "user-1234", "premium", BENCH_NOW);
	t0 = bench_ns();
	for (int i = 0; i < ITERS; i++)
		bench_sink += (uint64_t)auth_jwt_sign(ctx, &c, toks[1], sizeof toks[1]);
	printf("HS256 sign:                   %8.0f ns/op\n", (double)(bench_ns() - t0) / ITERS);

	t0 = bench_ns();
	for (int i = 0; i < ITERS; i++)
		bench_sink += (uint64_t)auth_claims_init(ctx, &c, "access", "u", "free", BENCH_NOW);
	printf("claims_init (RAND_bytes jti): %8.0f ns/op\n", (double)(bench_ns() - t0) / ITERS);

	t0 = bench_ns();
	for (int i = 0; i < ITERS; i++) {
		auth_sha256_hex(rnd, 67, hex);
		bench_sink += (uint64_t)hex[0];
	}
	printf("sha256_hex (67-byte API key): %8.0f ns/op\n", (double)(bench_ns() - t0) / ITERS);

	bench_verify_pkey(AUTH_ES256, 4000);
	bench_verify_pkey(AUTH_RS256, 4000);

	t0 = bench_ns();
	for (int i = 0; i < 3; i++)
		bench_sink += (uint64_t)auth_password_hash("correct horse battery", h, sizeof h);
	printf("bcrypt hash (cost %d):        %8.1f ms/op\n", AUTH_BCRYPT_COST,
	       (double)(bench_ns() - t0) / 3 / 1e6);
	t0 = bench_ns();
	bench_sink += (uint64_t)auth_password_verify("correct horse battery", h);
	printf("bcrypt verify (cost %d):      %8.1f ms/op\n", AUTH_BCRYPT_COST,
	       (double)(bench_ns() - t0) / 1e6);

	auth_cache_free(cache);
	auth_ctx_free(ctx);
	return 0;
}
