/*
 * Unit tests for gatewayd/auth.c: JWT round trips for HS256/RS256/ES256 with keys made
 * here, every attack we refuse (alg none, alg confusion, forged, tampered, expired,
 * early, wrong issuer, malformed encodings, oversized), the verified-token cache
 * (including a forced hash collision and revocation racing with puts), bcrypt, random
 * tokens, SHA-256 and the JWK set.
 *
 * Tokens with arbitrary headers and payloads are signed here with OpenSSL's one-shot
 * HMAC(), which also cross-checks the module's precomputed-midstate HMAC.
 */

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cJSON.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>

#include "auth.h"

#define NOW 1700000000LL
#define SECRET "0123456789abcdef0123456789abcdef" /* 32 bytes */
#define LEEWAY 30

static char tmpdir[256];
static char rsa_priv[300], rsa_pub[300], ec_priv[300], ec_pub[300], rsa2_pub[300];
static char rsa_small[300], ec384_priv[300], junk_file[300];
static char rsa_pub_pem[4096]; /* the RSA public key PEM text, for alg confusion */

/* ---- helpers ---- */

static void
write_key(EVP_PKEY *k, const char *path, int priv)
{
	FILE *f = fopen(path, "w");

	assert_non_null(f);
	if (priv)
		assert_int_equal(PEM_write_PrivateKey(f, k, NULL, NULL, 0, NULL, NULL), 1);
	else
		assert_int_equal(PEM_write_PUBKEY(f, k), 1);
	fclose(f);
	chmod(path, 0600);
}

static int
group_setup(void **state)
{
	EVP_PKEY *rsa, *rsa2, *small, *ec, *ec384;
	FILE *f;
	size_t n;

	snprintf(tmpdir, sizeof tmpdir, "/tmp/test_auth.XXXXXX");
	if (mkdtemp(tmpdir) == NULL)
		return -1;
	snprintf(rsa_priv, sizeof rsa_priv, "%s/rsa.key", tmpdir);
	snprintf(rsa_pub, sizeof rsa_pub, "%s/rsa.pub", tmpdir);
	snprintf(rsa2_pub, sizeof rsa2_pub, "%s/rsa2.pub", tmpdir);
	snprintf(rsa_small, sizeof rsa_small, "%s/rsa1024.key", tmpdir);
	snprintf(ec_priv, sizeof ec_priv, "%s/ec.key", tmpdir);
	snprintf(ec_pub, sizeof ec_pub, "%s/ec.pub", tmpdir);
	snprintf(ec384_priv, sizeof ec384_priv, "%s/ec384.key", tmpdir);
	snprintf(junk_file, sizeof junk_file, "%s/junk.pem", tmpdir);

	rsa = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
	rsa2 = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
	small = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)1024);
	ec = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
	ec384 = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-384");
	if (rsa == NULL || rsa2 == NULL || small == NULL || ec == NULL || ec384 == NULL)
		return -1;
	write_key(rsa, rsa_priv, 1);
	write_key(rsa, rsa_pub, 0);
	write_key(rsa2, rsa2_pub, 0);
	write_key(small, rsa_small, 1);
	write_key(ec, ec_priv, 1);
	write_key(ec, ec_pub, 0);
	write_key(ec384, ec384_priv, 1);
	EVP_PKEY_free(rsa);
	EVP_PKEY_free(rsa2);
	EVP_PKEY_free(small);
	EVP_PKEY_free(ec);
	EVP_PKEY_free(ec384);

	f = fopen(junk_file, "w");
	fputs("-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n", f);
	fclose(f);
	chmod(junk_file, 0600);
	f = fopen(rsa_pub, "r");
	n = fread(rsa_pub_pem, 1, sizeof rsa_pub_pem - 1, f);
	rsa_pub_pem[n] = '\0';
	fclose(f);
	return 0;
}

static int
group_teardown(void **state)
{
	const char *files[] = {rsa_priv, rsa_pub, rsa2_pub,   rsa_small,
	                       ec_priv,  ec_pub,  ec384_priv, junk_file};

	for (size_t i = 0; i < sizeof files / sizeof files[0]; i++)
		unlink(files[i]);
	rmdir(tmpdir);
	return 0;
}

static struct auth_config
base_cfg(enum auth_alg alg)
{
	struct auth_config c = {.alg = alg,
	                        .issuer = "gatewayd",
	                        .access_ttl = 3600,
	                        .refresh_ttl = 7 * 86400,
	                        .leeway = LEEWAY};

	return c;
}

static struct auth_ctx *
hs_ctx_secret(const char *secret, size_t len)
{
	struct auth_config c = base_cfg(AUTH_HS256);
	char err[256];
	struct auth_ctx *ctx;

	c.secret = (const unsigned char *)secret;
	c.secret_len = len;
	ctx = auth_ctx_new(&c, err, sizeof err);
	assert_non_null(ctx);
	return ctx;
}

static struct auth_ctx *
hs_ctx(void)
{
	return hs_ctx_secret(SECRET, strlen(SECRET));
}

static struct auth_ctx *
key_ctx(enum auth_alg alg, const char *priv, const char *pub)
{
	struct auth_config c = base_cfg(alg);
	char err[256] = "";
	struct auth_ctx *ctx;

	c.private_key_file = priv;
	c.public_key_file = pub;
	ctx = auth_ctx_new(&c, err, sizeof err);
	if (ctx == NULL)
		fail_msg("auth_ctx_new: %s", err);
	return ctx;
}

/* An access token's claims for sub at NOW. */
static struct auth_claims
claims_for(const struct auth_ctx *ctx, const char *typ, const char *sub)
{
	struct auth_claims c;

	assert_int_equal(auth_claims_init(ctx, &c, typ, sub, "free", NOW), 0);
	return c;
}

static int
sign(const struct auth_ctx *ctx, const struct auth_claims *c, char *out, size_t outlen)
{
	int n = auth_jwt_sign(ctx, c, out, outlen);

	assert_true(n > 0);
	assert_int_equal((size_t)n, strlen(out));
	return n;
}

static int
verify(const struct auth_ctx *ctx, const char *tok, int64_t now, struct auth_claims *out)
{
	return auth_jwt_verify(ctx, tok, strlen(tok), now, out);
}

static size_t
b64url(const void *src, size_t n, char *dst)
{
	static const char a[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
	const unsigned char *s = src;
	size_t o = 0, i = 0;

	for (; i + 3 <= n; i += 3) {
		unsigned v = (unsigned)s[i] << 16 | (unsigned)s[i + 1] << 8 | s[i + 2];

		dst[o++] = a[v >> 18];
		dst[o++] = a[(v >> 12) & 63];
		dst[o++] = a[(v >> 6) & 63];
		dst[o++] = a[v & 63];
	}
	if (n - i == 1) {
		dst[o++] = a[s[i] >> 2];
		dst[o++] = a[(s[i] & 3) << 4];
	} else if (n - i == 2) {
		unsigned v = (unsigned)s[i] << 8 | s[i + 1];

		dst[o++] = a[v >> 10];
		dst[o++] = a[(v >> 4) & 63];
		dst[o++] = a[(v & 15) << 2];
	}
	dst[o] = '\0';
	return o;
}

/* header.payload signed with HMAC-SHA256(key), all three parts base64url. */
static void
mk_hs(const void *key, size_t keylen, const char *header, const char *payload, char *out)
{
	unsigned char mac[32];
	unsigned maclen = 0;
	size_t o = b64url(header, strlen(header), out);

	out[o++] = '.';
	o += b64url(payload, strlen(payload), out + o);
	assert_non_null(
	    HMAC(EVP_sha256(), key, (int)keylen, (unsigned char *)out, o, mac, &maclen));
	out[o++] = '.';
	b64url(mac, maclen, out + o);
}

/* Our standard header with a custom payload, signed with SECRET. */
static void
mk_payload(const char *payload, char *out)
{
	mk_hs(SECRET, strlen(SECRET), "{\"alg\":\"HS256\",\"typ\":\"JWT\"}", payload, out);
}

#define GOOD_PAYLOAD                                                                               \
	"{\"sub\":\"u1\",\"iss\":\"gatewayd\",\"iat\":1700000000,\"nbf\":1700000000,"              \
	"\"exp\":1700003600,\"jti\":\"j1\",\"typ\":\"access\"}"

/* ---- round trips ---- */

static void
test_hs256_roundtrip(void **state)
{
	struct auth_ctx *ctx = hs_ctx();
	struct auth_claims in = claims_for(ctx, "access", "user-42"), out;
	char tok[AUTH_TOKEN_MAX + 1];

	strcpy(in.role, "admin");
	sign(ctx, &in, tok, sizeof tok);
	assert_int_equal(verify(ctx, tok, NOW, &out), AUTH_OK);
	assert_string_equal(out.sub, "user-42");
	assert_string_equal(out.iss, "gatewayd");
	assert_string_equal(out.typ, "access");
	assert_string_equal(out.tier, "free");
	assert_string_equal(out.role, "admin");
	assert_string_equal(out.jti, in.jti);
	assert_string_equal(out.fam, "");
	assert_int_equal(out.iat, NOW);
	assert_int_equal(out.nbf, NOW);
	assert_int_equal(out.exp, NOW + 3600);
	assert_true(auth_ctx_can_sign(ctx));
	auth_ctx_free(ctx);
}

static void
roundtrip_key(enum auth_alg alg, const char *priv, const char *pub)
{
	struct auth_ctx *ctx = key_ctx(alg, priv, pub), *vctx = key_ctx(alg, NULL, pub);
	struct auth_ctx *pctx = key_ctx(alg, priv, NULL);
	struct auth_claims in = claims_for(ctx, "access", "u-rs"), out;
	char tok[AUTH_TOKEN_MAX + 1], tok2[AUTH_TOKEN_MAX + 1];

	sign(ctx, &in, tok, sizeof tok);
	assert_int_equal(verify(ctx, tok, NOW, &out), AUTH_OK);
	assert_string_equal(out.sub, "u-rs");
	/* a verify-only context (public key) accepts it but cannot sign */
	assert_int_equal(verify(vctx, tok, NOW, &out), AUTH_OK);
	assert_false(auth_ctx_can_sign(vctx));
	assert_int_equal(auth_jwt_sign(vctx, &in, tok2, sizeof tok2), -1);
	/* a private-key-only context derives the same public key */
	sign(pctx, &in, tok2, sizeof tok2);
	assert_int_equal(verify(vctx, tok2, NOW, &out), AUTH_OK);
	auth_ctx_free(ctx);
	auth_ctx_free(vctx);
	auth_ctx_free(pctx);
}

static void
test_rs256_roundtrip(void **state)
{
	roundtrip_key(AUTH_RS256, rsa_priv, rsa_pub);
}

static void
test_es256_roundtrip(void **state)
{
	char tok[AUTH_TOKEN_MAX + 1], *sig;
	struct auth_ctx *ctx = key_ctx(AUTH_ES256, ec_priv, ec_pub);
	struct auth_claims in = claims_for(ctx, "access", "u-es");

	roundtrip_key(AUTH_ES256, ec_priv, ec_pub);
	/* JWS ES256 signatures are raw r||s: 64 bytes, 86 base64url characters */
	sign(ctx, &in, tok, sizeof tok);
	sig = strrchr(tok, '.') + 1;
	assert_int_equal(strlen(sig), 86);
	auth_ctx_free(ctx);
}

/* Our midstate HMAC must equal OpenSSL's HMAC() for short, block-size and long keys. */
static void
test_hs256_matches_openssl_hmac(void **state)
{
	const char *secrets[] = {"sixteen-bytes!!!", SECRET,
	                         "0123456789012345678901234567890123456789012345678901234567890123",
	                         "a key longer than the SHA-256 block of sixty-four bytes, which "
	                         "HMAC hashes first......"};

	for (size_t i = 0; i < sizeof secrets / sizeof secrets[0]; i++) {
		struct auth_ctx *ctx = hs_ctx_secret(secrets[i], strlen(secrets[i]));
		struct auth_claims out;
		char tok[AUTH_TOKEN_MAX + 1];

		mk_hs(secrets[i], strlen(secrets[i]), "{\"alg\":\"HS256\",\"typ\":\"JWT\"}",
		      GOOD_PAYLOAD, tok);
		assert_int_equal(verify(ctx, tok, NOW, &out), AUTH_OK);
		auth_ctx_free(ctx);
	}
}

static void
test_refresh_typ_and_family(void **state)
{
	struct auth_ctx *ctx = hs_ctx();
	struct auth_claims in = claims_for(ctx, "refresh", "u7"), out;
	char tok[AUTH_TOKEN_MAX + 1];

	assert_string_equal(in.fam, in.jti);
	assert_int_equal(in.exp, NOW + 7 * 86400);
	sign(ctx, &in, tok, sizeof tok);
	assert_int_equal(verify(ctx, tok, NOW, &out), AUTH_OK);
	assert_string_equal(out.typ, "refresh");
	assert_string_equal(out.fam, in.jti);
	/* a rotated token: new jti, same family */
	in = claims_for(ctx, "refresh", "u7");
	strcpy(in.fam, out.fam);
	sign(ctx, &in, tok, sizeof tok);
	assert_int_equal(verify(ctx, tok, NOW, &out), AUTH_OK);
	assert_string_not_equal(out.jti, out.fam);
	auth_ctx_free(ctx);
}

static void
test_claims_init(void **state)
{
	struct auth_ctx *ctx = hs_ctx();
	struct auth_claims a, b;
	char long_sub[100];

	assert_int_equal(auth_claims_init(ctx, &a, "access", "u", NULL, NOW), 0);
	assert_int_equal(auth_claims_init(ctx, &b, "access", "u", NULL, NOW), 0);
	assert_int_equal(strlen(a.jti), 2 * AUTH_JTI_BYTES);
	assert_int_equal(strspn(a.jti, "0123456789abcdef"), 2 * AUTH_JTI_BYTES);
	assert_string_not_equal(a.jti, b.jti);
	assert_string_equal(a.tier, "");
	assert_string_equal(a.fam, "");
	assert_string_equal(a.iss, "gatewayd");
	assert_int_equal(auth_claims_init(ctx, &a, "id", "u", NULL, NOW), -1);
	memset(long_sub, 'x', sizeof long_sub - 1);
	long_sub[sizeof long_sub - 1] = '\0';
	assert_int_equal(auth_claims_init(ctx, &a, "access", long_sub, NULL, NOW), -1);
	auth_ctx_free(ctx);
}

/* ---- contexts ---- */

static void
test_ctx_secret_length(void **state)
{
	struct auth_config c = base_cfg(AUTH_HS256);
	char err[256] = "";
	struct auth_ctx *ctx;

	c.secret = (const unsigned char *)SECRET;
	c.secret_len = AUTH_SECRET_MIN - 1;
	assert_null(auth_ctx_new(&c, err, sizeof err));
	assert_non_null(strstr(err, "secret"));
	c.secret = NULL;
	c.secret_len = 0;
	assert_null(auth_ctx_new(&c, err, sizeof err));
	c.secret = (const unsigned char *)SECRET;
	c.secret_len = AUTH_SECRET_MIN; /* accepted, with a warning */
	ctx = auth_ctx_new(&c, err, sizeof err);
	assert_non_null(ctx);
	auth_ctx_free(ctx);
	c.secret_len = 32;
	c.leeway = -1;
	assert_null(auth_ctx_new(&c, err, sizeof err));
	c.leeway = AUTH_LEEWAY_MAX + 1;
	assert_null(auth_ctx_new(&c, err, sizeof err));
}

static void
expect_key_refused(enum auth_alg alg, const char *priv, const char *pub, const char *needle)
{
	struct auth_config c = base_cfg(alg);
	char err[512] = "";

	c.private_key_file = priv;
	c.public_key_file = pub;
	assert_null(auth_ctx_new(&c, err, sizeof err));
	if (strstr(err, needle) == NULL)
		fail_msg("error \"%s\" lacks \"%s\"", err, needle);
	assert_int_equal(ERR_peek_error(), 0);
}

static void
test_ctx_bad_keys(void **state)
{
	expect_key_refused(AUTH_RS256, NULL, NULL, "needs");
	expect_key_refused(AUTH_RS256, "/nonexistent/key.pem", NULL, "No such file");
	expect_key_refused(AUTH_RS256, junk_file, NULL, "not a PEM");
	expect_key_refused(AUTH_RS256, NULL, junk_file, "not a PEM");
	expect_key_refused(AUTH_RS256, rsa_small, NULL, "1024 bits");
	expect_key_refused(AUTH_RS256, ec_priv, NULL, "RSA");
	expect_key_refused(AUTH_ES256, rsa_priv, NULL, "P-256");
	expect_key_refused(AUTH_ES256, ec384_priv, NULL, "P-256");
	expect_key_refused(AUTH_RS256, rsa_priv, rsa2_pub, "not the public key");
}

static void
test_alg_names(void **state)
{
	enum auth_alg a;

	assert_string_equal(auth_alg_name(AUTH_HS256), "HS256");
	assert_string_equal(auth_alg_name(AUTH_RS256), "RS256");
	assert_string_equal(auth_alg_name(AUTH_ES256), "ES256");
	assert_int_equal(auth_alg_parse("ES256", &a), 0);
	assert_int_equal(a, AUTH_ES256);
	assert_int_equal(auth_alg_parse("none", &a), -1);
	assert_int_equal(auth_alg_parse("hs256", &a), -1);
}

/* ---- attacks ---- */

static void
test_alg_none(void **state)
{
	const char *headers[] = {"{\"alg\":\"none\",\"typ\":\"JWT\"}", "{\"alg\":\"none\"}",
	                         "{\"alg\":\"None\"}", "{\"alg\":\"NONE\"}", "{\"alg\":\"\"}"};
	struct auth_ctx *ctxs[] = {hs_ctx(), key_ctx(AUTH_RS256, rsa_priv, rsa_pub),
	                           key_ctx(AUTH_ES256, ec_priv, ec_pub)};
	char tok[2048], h[256], p[512];
	struct auth_claims out;

	for (size_t k = 0; k < 3; k++) {
		for (size_t i = 0; i < sizeof headers / sizeof headers[0]; i++) {
			/* unsigned: "header.payload." */
			b64url(headers[i], strlen(headers[i]), h);
			b64url(GOOD_PAYLOAD, strlen(GOOD_PAYLOAD), p);
			snprintf(tok, sizeof tok, "%s.%s.", h, p);
			assert_int_equal(verify(ctxs[k], tok, NOW, &out), AUTH_E_ALG);
			assert_string_equal(out.sub, "");
			/* and with some signature attached */
			mk_hs(SECRET, strlen(SECRET), headers[i], GOOD_PAYLOAD, tok);
			assert_int_equal(verify(ctxs[k], tok, NOW, &out), AUTH_E_ALG);
		}
		auth_ctx_free(ctxs[k]);
	}
}

/* The classic: an HS256 token keyed with the RSA public key, shown to an RS256 verifier. */
static void
test_alg_confusion(void **state)
{
	struct auth_ctx *rs = key_ctx(AUTH_RS256, NULL, rsa_pub);
	struct auth_ctx *forger = hs_ctx_secret(rsa_pub_pem, strlen(rsa_pub_pem));
	struct auth_claims in = claims_for(forger, "access", "admin"), out;
	char tok[AUTH_TOKEN_MAX + 1];

	strcpy(in.role, "admin");
	sign(forger, &in, tok, sizeof tok);
	assert_int_equal(verify(rs, tok, NOW, &out), AUTH_E_ALG);
	/* also hand-built, with the kid of the real key in the header */
	mk_hs(rsa_pub_pem, strlen(rsa_pub_pem), "{\"alg\":\"HS256\",\"typ\":\"JWT\"}", GOOD_PAYLOAD,
	      tok);
	assert_int_equal(verify(rs, tok, NOW, &out), AUTH_E_ALG);
	auth_ctx_free(rs);
	auth_ctx_free(forger);
}

static void
test_alg_mismatch(void **state)
{
	struct auth_ctx *hs = hs_ctx(), *rs = key_ctx(AUTH_RS256, rsa_priv, rsa_pub);
	struct auth_ctx *es = key_ctx(AUTH_ES256, ec_priv, ec_pub);
	struct auth_claims c = claims_for(hs, "access", "u"), out;
	char t_hs[AUTH_TOKEN_MAX + 1], t_rs[AUTH_TOKEN_MAX + 1], t_es[AUTH_TOKEN_MAX + 1];

	sign(hs, &c, t_hs, sizeof t_hs);
	sign(rs, &c, t_rs, sizeof t_rs);
	sign(es, &c, t_es, sizeof t_es);
	assert_int_equal(verify(hs, t_rs, NOW, &out), AUTH_E_ALG);
	assert_int_equal(verify(hs, t_es, NOW, &out), AUTH_E_ALG);
	assert_int_equal(verify(rs, t_hs, NOW, &out), AUTH_E_ALG);
	assert_int_equal(verify(rs, t_es, NOW, &out), AUTH_E_ALG);
	assert_int_equal(verify(es, t_hs, NOW, &out), AUTH_E_ALG);
	assert_int_equal(verify(es, t_rs, NOW, &out), AUTH_E_ALG);
	auth_ctx_free(hs);
	auth_ctx_free(rs);
	auth_ctx_free(es);
}

static void
test_wrong_secret(void **state)
{
	struct auth_ctx *a = hs_ctx(), *b = hs_ctx_secret("another-secret-of-32-bytes-long!", 32);
	struct auth_claims c = claims_for(a, "access", "u"), out;
	char tok[AUTH_TOKEN_MAX + 1];

	sign(b, &c, tok, sizeof tok);
	assert_int_equal(verify(a, tok, NOW, &out), AUTH_E_SIGNATURE);
	assert_int_equal(verify(b, tok, NOW, &out), AUTH_OK);
	auth_ctx_free(a);
	auth_ctx_free(b);
}

static void
test_wrong_key_rs_es(void **state)
{
	struct auth_ctx *rs = key_ctx(AUTH_RS256, rsa_priv, NULL),
	                *rs2 = key_ctx(AUTH_RS256, NULL, rsa2_pub);
	struct auth_claims c = claims_for(rs, "access", "u"), out;
	char tok[AUTH_TOKEN_MAX + 1];

	sign(rs, &c, tok, sizeof tok);
	/* rs2's kid differs, so the header is not ours byte for byte: parsed, then refused */
	assert_int_equal(verify(rs2, tok, NOW, &out), AUTH_E_SIGNATURE);
	assert_int_equal(ERR_peek_error(), 0);
	auth_ctx_free(rs);
	auth_ctx_free(rs2);
}

/* Flip one character of segment seg (0 header, 1 payload, 2 signature) at offset off. */
static void
tamper(char *tok, int seg, size_t off)
{
	char *p = tok;

	for (int i = 0; i < seg; i++)
		p = strchr(p, '.') + 1;
	p[off] = p[off] == 'A' ? 'B' : 'A';
}

static void
test_tampered(void **state)
{
	struct auth_ctx *ctxs[] = {hs_ctx(), key_ctx(AUTH_RS256, rsa_priv, rsa_pub),
	                           key_ctx(AUTH_ES256, ec_priv, ec_pub)};
	char tok[AUTH_TOKEN_MAX + 1], t2[AUTH_TOKEN_MAX + 1];
	struct auth_claims out;

	for (size_t k = 0; k < 3; k++) {
		struct auth_claims c = claims_for(ctxs[k], "access", "user");

		sign(ctxs[k], &c, tok, sizeof tok);
		for (size_t off = 0; off < 8; off++) {
			strcpy(t2, tok);
			tamper(t2, 1, off * 4);
			assert_int_equal(verify(ctxs[k], t2, NOW, &out), AUTH_E_SIGNATURE);
			strcpy(t2, tok);
			tamper(t2, 2, off * 4);
			assert_int_equal(verify(ctxs[k], t2, NOW, &out), AUTH_E_SIGNATURE);
		}
		assert_int_equal(ERR_peek_error(), 0);
		auth_ctx_free(ctxs[k]);
	}
}

static void
test_forged_payload_swap(void **state)
{
	struct auth_ctx *ctx = hs_ctx();
	struct auth_claims c = claims_for(ctx, "access", "alice"), out;
	char tok[AUTH_TOKEN_MAX + 1], evil[AUTH_TOKEN_MAX + 1], p[1024];
	char *d1, *d2;

	sign(ctx, &c, tok, sizeof tok);
	d1 = strchr(tok, '.');
	d2 = strchr(d1 + 1, '.');
	b64url(GOOD_PAYLOAD, strlen(GOOD_PAYLOAD), p);
	snprintf(evil, sizeof evil, "%.*s.%s%s", (int)(d1 - tok), tok, p, d2);
	assert_int_equal(verify(ctx, evil, NOW, &out), AUTH_E_SIGNATURE);
	auth_ctx_free(ctx);
}

static void
test_expired_and_not_yet(void **state)
{
	struct auth_ctx *ctx = hs_ctx();
	struct auth_claims c = claims_for(ctx, "access", "u"), out;
	char tok[AUTH_TOKEN_MAX + 1];

	c.nbf = NOW + 1000;
	c.exp = NOW + 2000;
	sign(ctx, &c, tok, sizeof tok);
	assert_int_equal(verify(ctx, tok, NOW, &out), AUTH_E_NOT_YET);
	assert_int_equal(verify(ctx, tok, NOW + 1500, &out), AUTH_OK);
	assert_int_equal(verify(ctx, tok, NOW + 5000, &out), AUTH_E_EXPIRED);
	assert_string_equal(auth_error_code(AUTH_E_EXPIRED), "token_expired");
	auth_ctx_free(ctx);
}

static void
test_leeway_edges(void **state)
{
	struct auth_ctx *ctx = hs_ctx();
	struct auth_claims c = claims_for(ctx, "access", "u"), out;
	char tok[AUTH_TOKEN_MAX + 1];
	const int64_t nbf = NOW + 100, exp = NOW + 200;

	c.nbf = nbf;
	c.exp = exp;
	sign(ctx, &c, tok, sizeof tok);
	assert_int_equal(verify(ctx, tok, nbf - LEEWAY - 1, &out), AUTH_E_NOT_YET);
	assert_int_equal(verify(ctx, tok, nbf - LEEWAY, &out), AUTH_OK);
	assert_int_equal(verify(ctx, tok, exp, &out), AUTH_OK);
	assert_int_equal(verify(ctx, tok, exp + LEEWAY, &out), AUTH_OK);
	assert_int_equal(verify(ctx, tok, exp + LEEWAY + 1, &out), AUTH_E_EXPIRED);
	auth_ctx_free(ctx);
}

static void
test_zero_leeway(void **state)
{
	struct auth_config cfg = base_cfg(AUTH_HS256);
	struct auth_ctx *ctx;
	struct auth_claims c, out;
	char tok[AUTH_TOKEN_MAX + 1];

	cfg.secret = (const unsigned char *)SECRET;
	cfg.secret_len = 32;
	cfg.leeway = 0;
	ctx = auth_ctx_new(&cfg, NULL, 0);
	assert_non_null(ctx);
	c = claims_for(ctx, "access", "u");
	sign(ctx, &c, tok, sizeof tok);
	assert_int_equal(verify(ctx, tok, c.exp, &out), AUTH_OK);
	assert_int_equal(verify(ctx, tok, c.exp + 1, &out), AUTH_E_EXPIRED);
	assert_int_equal(verify(ctx, tok, c.nbf - 1, &out), AUTH_E_NOT_YET);
	auth_ctx_free(ctx);
}

static void
test_wrong_issuer(void **state)
{
	struct auth_ctx *ctx = hs_ctx(), *other;
	struct auth_config cfg = base_cfg(AUTH_HS256);
	struct auth_claims c, out;
	char tok[AUTH_TOKEN_MAX + 1];

	cfg.secret = (const unsigned char *)SECRET;
	cfg.secret_len = 32;
	cfg.issuer = "someone-else";
	other = auth_ctx_new(&cfg, NULL, 0);
	c = claims_for(other, "access", "u");
	sign(other, &c, tok, sizeof tok);
	assert_int_equal(verify(ctx, tok, NOW, &out), AUTH_E_ISSUER);
	assert_string_equal(auth_error_code(AUTH_E_ISSUER), "invalid_token");
	/* no iss at all */
	mk_payload("{\"sub\":\"u\",\"exp\":1700003600,\"jti\":\"j\",\"typ\":\"access\"}", tok);
	assert_int_equal(verify(ctx, tok, NOW, &out), AUTH_E_ISSUER);
	/* iss of the wrong type */
	mk_payload("{\"sub\":\"u\",\"iss\":1,\"exp\":1700003600,\"jti\":\"j\",\"typ\":\"access\"}",
	           tok);
	assert_int_equal(verify(ctx, tok, NOW, &out), AUTH_E_CLAIMS);
	auth_ctx_free(ctx);
	auth_ctx_free(other);
}

static void
test_missing_claims(void **state)
{
	const char *payloads[] = {
	    "{\"iss\":\"gatewayd\",\"exp\":1700003600,\"jti\":\"j\",\"typ\":\"access\"}",
	    "{\"sub\":\"u\",\"iss\":\"gatewayd\",\"jti\":\"j\",\"typ\":\"access\"}",
	    "{\"sub\":\"u\",\"iss\":\"gatewayd\",\"exp\":1700003600,\"typ\":\"access\"}",
	    "{\"sub\":\"u\",\"iss\":\"gatewayd\",\"exp\":1700003600,\"jti\":\"j\"}",
	    "{\"sub\":\"\",\"iss\":\"gatewayd\",\"exp\":1700003600,\"jti\":\"j\",\"typ\":"
	    "\"access\"}",
	    "{\"sub\":\"u\",\"iss\":\"gatewayd\",\"exp\":1700003600,\"jti\":\"\",\"typ\":"
	    "\"access\"}",
	};
	struct auth_ctx *ctx = hs_ctx();
	struct auth_claims out;
	char tok[2048];

	for (size_t i = 0; i < sizeof payloads / sizeof payloads[0]; i++) {
		mk_payload(payloads[i], tok);
		assert_int_equal(verify(ctx, tok, NOW, &out), AUTH_E_CLAIMS);
	}
	mk_payload(GOOD_PAYLOAD, tok);
	assert_int_equal(verify(ctx, tok, NOW, &out), AUTH_OK);
	auth_ctx_free(ctx);
}

static void
test_claim_types(void **state)
{
	const char *bad_exp[] = {"1700003600.5",
	                         "1700003600.0",
	                         "17000036e2",
	                         "\"1700003600\"",
	                         "true",
	                         "null",
	                         "[1]",
	                         "{}",
	                         "1e300",
	                         "-1e300",
	                         "9007199254740992",
	                         "9007199254740993",
	                         "-9007199254740992",
	                         "99999999999999999999999"};
	struct auth_ctx *ctx = hs_ctx();
	struct auth_claims out;
	char tok[2048], payload[512];

	for (size_t i = 0; i < sizeof bad_exp / sizeof bad_exp[0]; i++) {
		snprintf(payload, sizeof payload,
		         "{\"sub\":\"u\",\"iss\":\"gatewayd\",\"exp\":%s,\"jti\":\"j\",\"typ\":"
		         "\"access\"}",
		         bad_exp[i]);
		mk_payload(payload, tok);
		if (verify(ctx, tok, NOW, &out) != AUTH_E_CLAIMS)
			fail_msg("exp %s accepted", bad_exp[i]);
		snprintf(payload, sizeof payload,
		         "{\"sub\":\"u\",\"iss\":\"gatewayd\",\"exp\":1700003600,\"nbf\":%s,"
		         "\"jti\":\"j\",\"typ\":\"access\"}",
		         bad_exp[i]);
		mk_payload(payload, tok);
		assert_int_equal(verify(ctx, tok, NOW, &out), AUTH_E_CLAIMS);
		snprintf(payload, sizeof payload,
		         "{\"sub\":\"u\",\"iss\":\"gatewayd\",\"exp\":1700003600,\"iat\":%s,"
		         "\"jti\":\"j\",\"typ\":\"access\"}",
		         bad_exp[i]);
		mk_payload(payload, tok);
		assert_int_equal(verify(ctx, tok, NOW, &out), AUTH_E_CLAIMS);
	}
	/* strings where strings belong */
	mk_payload(
	    "{\"sub\":42,\"iss\":\"gatewayd\",\"exp\":1700003600,\"jti\":\"j\",\"typ\":\"access\"}",
	    tok);
	assert_int_equal(verify(ctx, tok, NOW, &out), AUTH_E_CLAIMS);
	mk_payload("{\"sub\":\"u\",\"iss\":\"gatewayd\",\"exp\":1700003600,\"jti\":\"j\",\"typ\":"
	           "\"access\","
	           "\"tier\":[\"premium\"]}",
	           tok);
	assert_int_equal(verify(ctx, tok, NOW, &out), AUTH_E_CLAIMS);
	/* claims we do not read may be anything */
	mk_payload("{\"sub\":\"u\",\"iss\":\"gatewayd\",\"exp\":1700003600,\"jti\":\"j\",\"typ\":"
	           "\"access\","
	           "\"aud\":[\"x\"],\"x\":{\"y\":null}}",
	           tok);
	assert_int_equal(verify(ctx, tok, NOW, &out), AUTH_OK);
	auth_ctx_free(ctx);
}

static void
test_oversized_claims(void **state)
{
	struct auth_ctx *ctx = hs_ctx();
	struct auth_claims out;
	char tok[4096], payload[2048], big[200];
	const struct {
		const char *name;
		size_t max;
	} f[] = {{"tier", 31}, {"role", 15}, {"fam", 63}};

	/* optional claims: longest that fits the struct, and one more */
	for (size_t i = 0; i < sizeof f / sizeof f[0]; i++) {
		for (size_t len = f[i].max; len <= f[i].max + 1; len++) {
			memset(big, 'x', len);
			big[len] = '\0';
			snprintf(
			    payload, sizeof payload,
			    "{\"sub\":\"u\",\"iss\":\"gatewayd\",\"exp\":1700003600,\"jti\":\"j\","
			    "\"typ\":\"access\",\"%s\":\"%s\"}",
			    f[i].name, big);
			mk_payload(payload, tok);
			assert_int_equal(verify(ctx, tok, NOW, &out),
			                 len == f[i].max ? AUTH_OK : AUTH_E_CLAIMS);
		}
	}
	/* required ones */
	for (size_t len = 63; len <= 64; len++) {
		memset(big, 'x', len);
		big[len] = '\0';
		snprintf(payload, sizeof payload,
		         "{\"sub\":\"%s\",\"iss\":\"gatewayd\",\"exp\":1700003600,\"jti\":\"%s\","
		         "\"typ\":\"access\"}",
		         big, big);
		mk_payload(payload, tok);
		assert_int_equal(verify(ctx, tok, NOW, &out), len == 63 ? AUTH_OK : AUTH_E_CLAIMS);
	}
	mk_payload("{\"sub\":\"u\",\"iss\":\"gatewayd\",\"exp\":1700003600,\"jti\":\"j\","
	           "\"typ\":\"access-but-longer\"}",
	           tok);
	assert_int_equal(verify(ctx, tok, NOW, &out), AUTH_E_CLAIMS);
	memset(big, 'x', 128);
	big[128] = '\0';
	snprintf(
	    payload, sizeof payload,
	    "{\"sub\":\"u\",\"iss\":\"%s\",\"exp\":1700003600,\"jti\":\"j\",\"typ\":\"access\"}",
	    big);
	mk_payload(payload, tok);
	assert_int_equal(verify(ctx, tok, NOW, &out), AUTH_E_CLAIMS);
	auth_ctx_free(ctx);
}

static void
test_duplicate_claims(void **state)
{
	struct auth_ctx *ctx = hs_ctx();
	struct auth_claims out;
	char tok[2048];

	mk_payload("{\"sub\":\"u\",\"iss\":\"gatewayd\",\"exp\":1700003600,\"jti\":\"j\",\"typ\":"
	           "\"access\","
	           "\"sub\":\"admin\"}",
	           tok);
	assert_int_equal(verify(ctx, tok, NOW, &out), AUTH_E_CLAIMS);
	mk_payload("{\"sub\":\"u\",\"iss\":\"gatewayd\",\"exp\":1700003600,\"jti\":\"j\",\"typ\":"
	           "\"refresh\","
	           "\"typ\":\"access\"}",
	           tok);
	assert_int_equal(verify(ctx, tok, NOW, &out), AUTH_E_CLAIMS);
	mk_payload("{\"sub\":\"u\",\"iss\":\"gatewayd\",\"exp\":1,\"jti\":\"j\",\"typ\":\"access\","
	           "\"exp\":9999999999}",
	           tok);
	assert_int_equal(verify(ctx, tok, NOW, &out), AUTH_E_CLAIMS);
	auth_ctx_free(ctx);
}

/* Custom claim text cannot smuggle reserved claims into the JSON we sign. */
static void
test_reserved_claims_not_overridable(void **state)
{
	struct auth_ctx *ctx = hs_ctx();
	struct auth_claims c = claims_for(ctx, "access", "alice"), out;
	char tok[AUTH_TOKEN_MAX + 1];

	strcpy(c.tier, "x\",\"sub\":\"admin");
	strcpy(c.role, "\\\",\"typ\":\"");
	strcpy(c.iss, "evil-issuer"); /* the context's issuer wins */
	sign(ctx, &c, tok, sizeof tok);
	assert_int_equal(verify(ctx, tok, NOW, &out), AUTH_OK);
	assert_string_equal(out.sub, "alice");
	assert_string_equal(out.tier, "x\",\"sub\":\"admin");
	assert_string_equal(out.role, "\\\",\"typ\":\"");
	assert_string_equal(out.typ, "access");
	assert_string_equal(out.iss, "gatewayd");
	/* control characters are escaped, and come back intact */
	strcpy(c.tier, "a\nb\x01");
	sign(ctx, &c, tok, sizeof tok);
	assert_int_equal(verify(ctx, tok, NOW, &out), AUTH_OK);
	assert_string_equal(out.tier, "a\nb\x01");
	auth_ctx_free(ctx);
}

/* The payload's member order: custom first, reserved last. */
static void
test_claims_order(void **state)
{
	struct auth_ctx *ctx = hs_ctx();
	struct auth_claims c = claims_for(ctx, "refresh", "bob");
	char tok[AUTH_TOKEN_MAX + 1], json[2048];
	char *d1, *d2;
	size_t n = 0;
	EVP_ENCODE_CTX *e;
	int outl = 0, fin = 0;
	char b64[2048];

	strcpy(c.role, "admin");
	sign(ctx, &c, tok, sizeof tok);
	d1 = strchr(tok, '.');
	d2 = strchr(d1 + 1, '.');
	/* standard base64 with padding for OpenSSL's decoder */
	n = (size_t)(d2 - d1 - 1);
	memcpy(b64, d1 + 1, n);
	for (size_t i = 0; i < n; i++)
		b64[i] = b64[i] == '-' ? '+' : b64[i] == '_' ? '/' : b64[i];
	while (n % 4 != 0)
		b64[n++] = '=';
	e = EVP_ENCODE_CTX_new();
	EVP_DecodeInit(e);
	assert_true(
	    EVP_DecodeUpdate(e, (unsigned char *)json, &outl, (unsigned char *)b64, (int)n) >= 0);
	assert_int_equal(EVP_DecodeFinal(e, (unsigned char *)json + outl, &fin), 1);
	EVP_ENCODE_CTX_free(e);
	json[outl + fin] = '\0';
	assert_true(strstr(json, "\"tier\"") < strstr(json, "\"sub\""));
	assert_true(strstr(json, "\"role\"") < strstr(json, "\"sub\""));
	assert_true(strstr(json, "\"fam\"") < strstr(json, "\"sub\""));
	assert_true(strstr(json, "\"sub\"") < strstr(json, "\"exp\""));
	assert_true(strstr(json, "\"exp\"") < strstr(json, "\"typ\""));
	assert_non_null(strstr(json, "\"typ\":\"refresh\"}"));
	auth_ctx_free(ctx);
}

static void
test_sign_refuses(void **state)
{
	struct auth_ctx *ctx = hs_ctx();
	struct auth_claims c = claims_for(ctx, "access", "u"), bad;
	char tok[AUTH_TOKEN_MAX + 1];
	int n;

	bad = c;
	bad.sub[0] = '\0';
	assert_int_equal(auth_jwt_sign(ctx, &bad, tok, sizeof tok), -1);
	bad = c;
	bad.jti[0] = '\0';
	assert_int_equal(auth_jwt_sign(ctx, &bad, tok, sizeof tok), -1);
	bad = c;
	bad.typ[0] = '\0';
	assert_int_equal(auth_jwt_sign(ctx, &bad, tok, sizeof tok), -1);
	bad = c;
	strcpy(bad.tier, "\xff\xfe"); /* not UTF-8 */
	assert_int_equal(auth_jwt_sign(ctx, &bad, tok, sizeof tok), -1);
	bad = c;
	strcpy(bad.tier, "\xc0\xaf"); /* overlong '/' */
	assert_int_equal(auth_jwt_sign(ctx, &bad, tok, sizeof tok), -1);
	bad = c;
	memset(bad.sub, 'a', sizeof bad.sub); /* unterminated */
	assert_int_equal(auth_jwt_sign(ctx, &bad, tok, sizeof tok), -1);
	bad = c;
	strcpy(bad.tier, "caf\xc3\xa9"); /* UTF-8 is fine */
	n = auth_jwt_sign(ctx, &bad, tok, sizeof tok);
	assert_true(n > 0);
	/* too small an output buffer, at the exact boundary */
	assert_int_equal(auth_jwt_sign(ctx, &bad, tok, (size_t)n), -1);
	assert_int_equal(auth_jwt_sign(ctx, &bad, tok, (size_t)n + 1), n);
	auth_ctx_free(ctx);
}

static void
test_base64_strict(void **state)
{
	struct auth_ctx *ctx = hs_ctx();
	struct auth_claims c = claims_for(ctx, "access", "u"), out;
	char tok[AUTH_TOKEN_MAX + 1], t2[AUTH_TOKEN_MAX + 8];
	char *d1, *d2;
	const char bad_chars[] = {'=', '+', '/', ' ', '\t', '\n', '*', '\0'};
	const char *sig;
	int n = sign(ctx, &c, tok, sizeof tok);

	d1 = strchr(tok, '.');
	d2 = strchr(d1 + 1, '.');
	for (size_t i = 0; i < sizeof bad_chars; i++) {
		for (int seg = 0; seg < 3; seg++) {
			size_t at = seg == 0   ? 3
			            : seg == 1 ? (size_t)(d1 - tok) + 3
			                       : (size_t)(d2 - tok) + 3;

			memcpy(t2, tok, (size_t)n + 1);
			t2[at] = bad_chars[i];
			assert_int_equal(auth_jwt_verify(ctx, t2, (size_t)n, NOW, &out),
			                 AUTH_E_MALFORMED);
		}
	}
	/* padding appended to the signature ('=' never belongs in base64url) */
	snprintf(t2, sizeof t2, "%s=", tok);
	assert_int_equal(verify(ctx, t2, NOW, &out), AUTH_E_MALFORMED);
	/* the signature's last character with its unused low bits set: non-canonical */
	sig = d2 + 1;
	assert_int_equal(strlen(sig), 43); /* 32 bytes: the last char carries 2 spare bits */
	memcpy(t2, tok, (size_t)n + 1);
	{
		static const char a[] =
		    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
		char *last = t2 + n - 1;
		int v = (int)(strchr(a, *last) - a);

		assert_int_equal(v & 3, 0);
		*last = a[v | 1];
		assert_int_equal(verify(ctx, t2, NOW, &out), AUTH_E_MALFORMED);
	}
	/* a segment of length 4k+1 cannot be base64 */
	snprintf(t2, sizeof t2, "%.*sA%s", (int)(d1 - tok), tok, d1);
	assert_int_equal((d1 - tok) % 4, 0);
	assert_int_equal(verify(ctx, t2, NOW, &out), AUTH_E_MALFORMED);
	auth_ctx_free(ctx);
}

/* A validly signed payload whose base64url has non-zero spare bits is refused. */
static void
test_base64_noncanonical_payload(void **state)
{
	static const char a[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
	struct auth_ctx *ctx = hs_ctx();
	struct auth_claims out;
	char payload[512], h[128], p[1024], data[2048], tok[4096], sigb[64];
	unsigned char mac[32];
	unsigned maclen;
	size_t pl;
	int v;

	/* trailing blanks are valid JSON; pick a length that leaves spare bits */
	snprintf(payload, sizeof payload, "%s", GOOD_PAYLOAD);
	while (strlen(payload) % 3 == 0)
		strcat(payload, " ");
	b64url("{\"alg\":\"HS256\",\"typ\":\"JWT\"}", 27, h);
	pl = b64url(payload, strlen(payload), p);
	v = (int)(strchr(a, p[pl - 1]) - a);
	p[pl - 1] = a[v | 1];
	snprintf(data, sizeof data, "%s.%s", h, p);
	HMAC(EVP_sha256(), SECRET, 32, (unsigned char *)data, strlen(data), mac, &maclen);
	b64url(mac, maclen, sigb);
	snprintf(tok, sizeof tok, "%s.%s", data, sigb);
	assert_int_equal(verify(ctx, tok, NOW, &out), AUTH_E_MALFORMED);
	/* and canonically encoded, the same payload is fine */
	mk_payload(payload, tok);
	assert_int_equal(verify(ctx, tok, NOW, &out), AUTH_OK);
	auth_ctx_free(ctx);
}

static void
test_parts(void **state)
{
	struct auth_ctx *ctx = hs_ctx();
	struct auth_claims c = claims_for(ctx, "access", "u"), out;
	char tok[AUTH_TOKEN_MAX + 1], t2[AUTH_TOKEN_MAX + 64];
	char *d2;

	sign(ctx, &c, tok, sizeof tok);
	d2 = strrchr(tok, '.');
	/* two parts */
	snprintf(t2, sizeof t2, "%.*s", (int)(d2 - tok), tok);
	assert_int_equal(verify(ctx, t2, NOW, &out), AUTH_E_MALFORMED);
	/* four and five parts (JWE has five) */
	snprintf(t2, sizeof t2, "%s.AAAA", tok);
	assert_int_equal(verify(ctx, t2, NOW, &out), AUTH_E_MALFORMED);
	snprintf(t2, sizeof t2, "%s.AAAA.AAAA", tok);
	assert_int_equal(verify(ctx, t2, NOW, &out), AUTH_E_MALFORMED);
	/* empty parts */
	snprintf(t2, sizeof t2, "%s", strchr(tok, '.'));
	assert_int_equal(verify(ctx, t2, NOW, &out), AUTH_E_MALFORMED);
	assert_int_equal(verify(ctx, "..", NOW, &out), AUTH_E_MALFORMED);
	assert_int_equal(verify(ctx, "", NOW, &out), AUTH_E_MALFORMED);
	assert_int_equal(verify(ctx, "abc", NOW, &out), AUTH_E_MALFORMED);
	snprintf(t2, sizeof t2, "%.*s", (int)(d2 - tok) + 1, tok); /* empty signature */
	assert_int_equal(verify(ctx, t2, NOW, &out), AUTH_E_SIGNATURE);
	/* a prefix of a valid token: len excludes the signature's last character */
	assert_int_equal(auth_jwt_verify(ctx, tok, strlen(tok) - 1, NOW, &out), AUTH_E_SIGNATURE);
	assert_int_equal(auth_jwt_verify(ctx, tok, strlen(tok), NOW, &out), AUTH_OK);
	auth_ctx_free(ctx);
}

static void
test_oversized_token(void **state)
{
	struct auth_ctx *ctx = hs_ctx();
	struct auth_claims out;
	char *payload = malloc(8192), *tok = malloc(16384);
	size_t n;

	/* a signed token just under the cap is fine, one just over is refused unread */
	for (size_t pad = 5800; pad <= 6200; pad += 100) {
		int len = snprintf(payload, 8192,
		                   "{\"sub\":\"u\",\"iss\":\"gatewayd\",\"exp\":1700003600,"
		                   "\"jti\":\"j\",\"typ\":\"access\",\"pad\":\"%*s\"}",
		                   (int)pad, "");

		assert_true(len > 0 && len < 8192);
		mk_payload(payload, tok);
		n = strlen(tok);
		assert_int_equal(verify(ctx, tok, NOW, &out),
		                 n <= AUTH_TOKEN_MAX ? AUTH_OK : AUTH_E_MALFORMED);
	}
	memset(tok, 'A', 16000);
	tok[16000] = '\0';
	assert_int_equal(verify(ctx, tok, NOW, &out), AUTH_E_MALFORMED);
	free(payload);
	free(tok);
	auth_ctx_free(ctx);
}

static void
test_header_variants(void **state)
{
	struct auth_ctx *ctx = hs_ctx();
	struct auth_claims out;
	char tok[2048];
	const struct {
		const char *header;
		int want;
	} cases[] = {
	    {"{\"typ\":\"JWT\",\"alg\":\"HS256\"}", AUTH_OK},      /* other order */
	    {"{\"alg\":\"HS256\"}", AUTH_OK},                      /* typ optional */
	    {"{\"alg\":\"HS256\",\"typ\":\"jwt\"}", AUTH_OK},      /* case-insensitive */
	    {"{\"alg\":\"HS256\",\"kid\":\"whatever\"}", AUTH_OK}, /* kid ignored */
	    {"{\"alg\":\"HS256\",\"typ\":\"at+jwt\"}", AUTH_E_MALFORMED},
	    {"{\"alg\":\"HS256\",\"typ\":1}", AUTH_E_MALFORMED},
	    {"{\"alg\":\"HS256\",\"crit\":[\"exp\"]}", AUTH_E_MALFORMED},
	    {"{\"typ\":\"JWT\"}", AUTH_E_MALFORMED},
	    {"{\"alg\":256}", AUTH_E_MALFORMED},
	    {"[\"HS256\"]", AUTH_E_MALFORMED},
	    {"not json", AUTH_E_MALFORMED},
	    {"{\"alg\":\"HS256\"} trailing", AUTH_E_MALFORMED},
	    {"{\"alg\":\"HS384\"}", AUTH_E_ALG},
	    {"{\"alg\":\"RS256\"}", AUTH_E_ALG},
	    {"{\"alg\":\"hs256\"}", AUTH_E_ALG},
	};

	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		mk_hs(SECRET, 32, cases[i].header, GOOD_PAYLOAD, tok);
		if (verify(ctx, tok, NOW, &out) != cases[i].want)
			fail_msg("header %s: got %d want %d", cases[i].header,
			         verify(ctx, tok, NOW, &out), cases[i].want);
	}
	auth_ctx_free(ctx);
}

static void
test_payload_not_object(void **state)
{
	const char *payloads[] = {"[]", "\"sub\"", "42", "null", "{\"sub\":\"u\"", "{} {}", ""};
	struct auth_ctx *ctx = hs_ctx();
	struct auth_claims out;
	char tok[2048];

	for (size_t i = 0; i < sizeof payloads / sizeof payloads[0]; i++) {
		mk_payload(payloads[i], tok);
		assert_int_equal(verify(ctx, tok, NOW, &out), AUTH_E_MALFORMED);
	}
	auth_ctx_free(ctx);
}

/* The payload reader: JSON edge cases, each in a validly signed token. */
static void
test_payload_json_strict(void **state)
{
#define P_HEAD "{\"iss\":\"gatewayd\",\"exp\":1700003600,\"jti\":\"j\",\"typ\":\"access\","
	const struct {
		const char *payload;
		int want;
		const char *sub; /* expected sub when AUTH_OK */
	} cases[] = {
	    {P_HEAD "\"sub\":\"caf\\u00e9\"}", AUTH_OK, "caf\xc3\xa9"},
	    {P_HEAD "\"sub\":\"\\ud83d\\ude00\"}", AUTH_OK, "\xf0\x9f\x98\x80"},
	    {P_HEAD "\"sub\":\"a\\\"\\\\\\/\\b\\f\\n\\r\\t\"}", AUTH_OK, "a\"\\/\b\f\n\r\t"},
	    {P_HEAD "\"sub\":\"\xe2\x82\xac\"}", AUTH_OK, "\xe2\x82\xac"},
	    {" \t\r\n{ \"sub\" : \"u\" , \"iss\":\"gatewayd\",\"exp\" :1700003600,\"jti\":\"j\","
	     "\"typ\":\"access\" } \n",
	     AUTH_OK, "u"},
	    {P_HEAD
	     "\"sub\":\"u\",\"x\":[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}",
	     AUTH_OK, "u"},
	    {P_HEAD "\"sub\":\"u\",\"x\":{\"a\":[true,false,null,-0,1.5e-3,\"s\",{}],\"b\":[]}}",
	     AUTH_OK, "u"},
	    {P_HEAD "\"sub\":\"u\",\"iat\":-0}", AUTH_OK, "u"},
	    /* a name is compared unescaped: this is a second "sub" */
	    {P_HEAD "\"sub\":\"u\",\"s\\u0075b\":\"admin\"}", AUTH_E_CLAIMS, NULL},
	    {P_HEAD "\"s\\u0075b\":\"admin\"}", AUTH_OK, "admin"},
	    /* invalid JSON or text */
	    {P_HEAD "\"sub\":\"\\ud83d\"}", AUTH_E_MALFORMED, NULL},
	    {P_HEAD "\"sub\":\"\\ude00\"}", AUTH_E_MALFORMED, NULL},
	    {P_HEAD "\"sub\":\"a\\u0000b\"}", AUTH_E_MALFORMED, NULL},
	    {P_HEAD "\"sub\":\"\\x41\"}", AUTH_E_MALFORMED, NULL},
	    {P_HEAD "\"sub\":\"\\u12G4\"}", AUTH_E_MALFORMED, NULL},
	    {P_HEAD "\"sub\":\"\xff\"}", AUTH_E_MALFORMED, NULL},
	    {P_HEAD "\"sub\":\"\xc0\xaf\"}", AUTH_E_MALFORMED, NULL},
	    {P_HEAD "\"sub\":\"\xed\xa0\x80\"}", AUTH_E_MALFORMED, NULL},
	    {P_HEAD "\"sub\":\"\xe2\x82\"}", AUTH_E_MALFORMED, NULL},
	    {P_HEAD "\"sub\":\"a\nb\"}", AUTH_E_MALFORMED, NULL},
	    {P_HEAD "\"sub\":\"u\",}", AUTH_E_MALFORMED, NULL},
	    {P_HEAD "\"sub\" \"u\"}", AUTH_E_MALFORMED, NULL},
	    {P_HEAD "\"sub\":\"u\"", AUTH_E_MALFORMED, NULL},
	    {P_HEAD "\"sub\":\"u}", AUTH_E_MALFORMED, NULL},
	    {P_HEAD "\"sub\":'u'}", AUTH_E_MALFORMED, NULL},
	    {P_HEAD "sub:\"u\"}", AUTH_E_MALFORMED, NULL},
	    {P_HEAD "\"sub\":\"u\",\"x\":tru}", AUTH_E_MALFORMED, NULL},
	    {P_HEAD "\"sub\":\"u\",\"x\":01}", AUTH_E_MALFORMED, NULL},
	    {P_HEAD "\"sub\":\"u\",\"x\":1.}", AUTH_E_MALFORMED, NULL},
	    {P_HEAD "\"sub\":\"u\",\"x\":.5}", AUTH_E_MALFORMED, NULL},
	    {P_HEAD "\"sub\":\"u\",\"x\":+1}", AUTH_E_MALFORMED, NULL},
	    {P_HEAD "\"sub\":\"u\",\"x\":1e}", AUTH_E_MALFORMED, NULL},
	    {P_HEAD "\"sub\":\"u\",\"x\":-}", AUTH_E_MALFORMED, NULL},
	    {P_HEAD "\"sub\":\"u\",\"x\":NaN}", AUTH_E_MALFORMED, NULL},
	    {P_HEAD "\"sub\":\"u\",\"x\":[1,]}", AUTH_E_MALFORMED, NULL},
	    {P_HEAD "\"sub\":\"u\",\"x\":{\"a\"}}", AUTH_E_MALFORMED, NULL},
	    {P_HEAD "\"sub\":\"u\",\"x\":{1:2}}", AUTH_E_MALFORMED, NULL},
	    {P_HEAD "\"sub\":\"u\",\"x\":[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]"
	            "]]]]]]]]]}",
	     AUTH_E_MALFORMED, NULL},
	    {P_HEAD "\"sub\":\"u\"}x", AUTH_E_MALFORMED, NULL},
	    {P_HEAD "\"sub\":\"u\"}{}", AUTH_E_MALFORMED, NULL},
	    /* valid JSON, wrong claim types */
	    {P_HEAD "\"sub\":[\"u\"]}", AUTH_E_CLAIMS, NULL},
	    {P_HEAD "\"sub\":null}", AUTH_E_CLAIMS, NULL},
	    {P_HEAD "\"sub\":\"u\",\"nbf\":\"0\"}", AUTH_E_CLAIMS, NULL},
	    {P_HEAD "\"sub\":\"u\",\"iat\":{}}", AUTH_E_CLAIMS, NULL},
	};
#undef P_HEAD
	struct auth_ctx *ctx = hs_ctx();
	struct auth_claims out;
	char tok[2048];

	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		int got;

		mk_payload(cases[i].payload, tok);
		got = verify(ctx, tok, NOW, &out);
		if (got != cases[i].want)
			fail_msg("case %zu %s: got %d want %d", i, cases[i].payload, got,
			         cases[i].want);
		if (got == AUTH_OK)
			assert_string_equal(out.sub, cases[i].sub);
	}
	/* a NUL byte in the payload, signed */
	{
		char h[64], p[256], data[512], sigb[64];
		const char raw[] = "{\"sub\":\"u\"\0,\"iss\":\"gatewayd\"}";
		unsigned char mac[32];
		unsigned maclen;

		b64url("{\"alg\":\"HS256\",\"typ\":\"JWT\"}", 27, h);
		b64url(raw, sizeof raw - 1, p);
		snprintf(data, sizeof data, "%s.%s", h, p);
		HMAC(EVP_sha256(), SECRET, 32, (unsigned char *)data, strlen(data), mac, &maclen);
		b64url(mac, maclen, sigb);
		snprintf(tok, sizeof tok, "%s.%s", data, sigb);
		assert_int_equal(verify(ctx, tok, NOW, &out), AUTH_E_MALFORMED);
	}
	/* negative and zero times are integers too: long expired */
	mk_payload(
	    "{\"sub\":\"u\",\"iss\":\"gatewayd\",\"exp\":-5,\"jti\":\"j\",\"typ\":\"access\"}",
	    tok);
	assert_int_equal(verify(ctx, tok, NOW, &out), AUTH_E_EXPIRED);
	auth_ctx_free(ctx);
}

static void
test_signature_length(void **state)
{
	struct auth_ctx *es = key_ctx(AUTH_ES256, ec_priv, ec_pub);
	struct auth_ctx *rs = key_ctx(AUTH_RS256, rsa_priv, rsa_pub);
	struct auth_claims c = claims_for(es, "access", "u"), out;
	char tok[AUTH_TOKEN_MAX + 1], t2[AUTH_TOKEN_MAX + 256];
	unsigned char der[80] = {0x30, 0x44, 0x02, 0x20};
	char *d2;

	/* a DER signature (what OpenSSL emits) is not a JWS ES256 signature */
	sign(es, &c, tok, sizeof tok);
	d2 = strrchr(tok, '.');
	*d2 = '\0';
	memset(der + 4, 1, 32);
	der[36] = 0x02;
	der[37] = 0x20;
	memset(der + 38, 1, 32);
	snprintf(t2, sizeof t2, "%s.", tok);
	b64url(der, 70, t2 + strlen(t2));
	assert_int_equal(verify(es, t2, NOW, &out), AUTH_E_SIGNATURE);
	/* all-zero r and s */
	memset(der, 0, sizeof der);
	snprintf(t2, sizeof t2, "%s.", tok);
	b64url(der, 64, t2 + strlen(t2));
	assert_int_equal(verify(es, t2, NOW, &out), AUTH_E_SIGNATURE);
	/* RSA: a truncated signature */
	sign(rs, &c, tok, sizeof tok);
	tok[strlen(tok) - 4] = '\0';
	assert_int_equal(verify(rs, tok, NOW, &out), AUTH_E_SIGNATURE);
	assert_int_equal(ERR_peek_error(), 0);
	auth_ctx_free(es);
	auth_ctx_free(rs);
}

static void
test_failure_zeroes_claims(void **state)
{
	struct auth_ctx *ctx = hs_ctx();
	struct auth_claims c = claims_for(ctx, "access", "u"), out, zero;
	char tok[AUTH_TOKEN_MAX + 1];

	memset(&zero, 0, sizeof zero);
	sign(ctx, &c, tok, sizeof tok);
	memset(&out, 0x55, sizeof out);
	assert_int_equal(verify(ctx, tok, c.exp + 3600, &out), AUTH_E_EXPIRED);
	assert_memory_equal(&out, &zero, sizeof out);
	auth_ctx_free(ctx);
}

static void
test_error_codes(void **state)
{
	for (int e = AUTH_E_MALFORMED; e <= AUTH_E_CLAIMS; e++) {
		assert_string_equal(auth_error_code(e),
		                    e == AUTH_E_EXPIRED ? "token_expired" : "invalid_token");
		assert_true(strlen(auth_error_message(e)) > 0);
	}
	assert_string_equal(auth_error_code(999), "invalid_token");
}

struct verify_arg {
	const struct auth_ctx *ctx;
	const char *tok;
	atomic_int bad;
};

static void *
verify_thread(void *p)
{
	struct verify_arg *a = p;
	struct auth_claims out;

	for (int i = 0; i < 2000; i++) {
		if (verify(a->ctx, a->tok, NOW, &out) != AUTH_OK || strcmp(out.sub, "shared") != 0)
			atomic_fetch_add(&a->bad, 1);
	}
	return NULL;
}

static void
test_concurrent_verify(void **state)
{
	struct auth_ctx *ctxs[] = {hs_ctx(), key_ctx(AUTH_ES256, ec_priv, ec_pub)};

	for (size_t k = 0; k < 2; k++) {
		struct auth_claims c = claims_for(ctxs[k], "access", "shared");
		char tok[AUTH_TOKEN_MAX + 1];
		struct verify_arg a = {ctxs[k], tok, 0};
		pthread_t t[4];

		sign(ctxs[k], &c, tok, sizeof tok);
		for (int i = 0; i < 4; i++)
			pthread_create(&t[i], NULL, verify_thread, &a);
		for (int i = 0; i < 4; i++)
			pthread_join(t[i], NULL);
		assert_int_equal(atomic_load(&a.bad), 0);
		auth_ctx_free(ctxs[k]);
	}
}

/* ---- JWKS ---- */

static void
check_jwks(struct auth_ctx *ctx, const char *kty)
{
	char buf[4096], tok[AUTH_TOKEN_MAX + 1], canon[2048], kid[64], hdr[512];
	unsigned char md[32];
	struct auth_claims c = claims_for(ctx, "access", "u");
	int n = auth_jwks_json(ctx, buf, sizeof buf);
	cJSON *root, *keys, *k;
	const char *h;
	unsigned hl;

	assert_true(n > 0);
	root = cJSON_Parse(buf);
	assert_non_null(root);
	keys = cJSON_GetObjectItem(root, "keys");
	assert_true(cJSON_IsArray(keys));
	assert_int_equal(cJSON_GetArraySize(keys), 1);
	k = cJSON_GetArrayItem(keys, 0);
	assert_string_equal(cJSON_GetObjectItem(k, "kty")->valuestring, kty);
	assert_string_equal(cJSON_GetObjectItem(k, "use")->valuestring, "sig");
	if (strcmp(kty, "RSA") == 0) {
		assert_string_equal(cJSON_GetObjectItem(k, "alg")->valuestring, "RS256");
		assert_string_equal(cJSON_GetObjectItem(k, "e")->valuestring, "AQAB");
		assert_int_equal(strlen(cJSON_GetObjectItem(k, "n")->valuestring), 342);
		snprintf(canon, sizeof canon, "{\"e\":\"%s\",\"kty\":\"RSA\",\"n\":\"%s\"}",
		         cJSON_GetObjectItem(k, "e")->valuestring,
		         cJSON_GetObjectItem(k, "n")->valuestring);
	} else {
		assert_string_equal(cJSON_GetObjectItem(k, "alg")->valuestring, "ES256");
		assert_string_equal(cJSON_GetObjectItem(k, "crv")->valuestring, "P-256");
		assert_int_equal(strlen(cJSON_GetObjectItem(k, "x")->valuestring), 43);
		assert_int_equal(strlen(cJSON_GetObjectItem(k, "y")->valuestring), 43);
		snprintf(canon, sizeof canon,
		         "{\"crv\":\"P-256\",\"kty\":\"EC\",\"x\":\"%s\",\"y\":\"%s\"}",
		         cJSON_GetObjectItem(k, "x")->valuestring,
		         cJSON_GetObjectItem(k, "y")->valuestring);
	}
	/* kid is the RFC 7638 thumbprint, and the header of our tokens carries it */
	EVP_Digest(canon, strlen(canon), md, &hl, EVP_sha256(), NULL);
	b64url(md, 32, kid);
	assert_string_equal(cJSON_GetObjectItem(k, "kid")->valuestring, kid);
	sign(ctx, &c, tok, sizeof tok);
	*strchr(tok, '.') = '\0';
	{
		EVP_ENCODE_CTX *e = EVP_ENCODE_CTX_new();
		int outl = 0, fin = 0;
		size_t tl = strlen(tok);

		for (size_t i = 0; i < tl; i++)
			tok[i] = tok[i] == '-' ? '+' : tok[i] == '_' ? '/' : tok[i];
		while (tl % 4 != 0)
			tok[tl++] = '=';
		EVP_DecodeInit(e);
		EVP_DecodeUpdate(e, (unsigned char *)hdr, &outl, (unsigned char *)tok, (int)tl);
		EVP_DecodeFinal(e, (unsigned char *)hdr + outl, &fin);
		EVP_ENCODE_CTX_free(e);
		hdr[outl + fin] = '\0';
	}
	h = strstr(hdr, kid);
	assert_non_null(h);
	cJSON_Delete(root);
	/* too small a buffer */
	assert_int_equal(auth_jwks_json(ctx, buf, (size_t)n), -1);
	assert_int_equal(auth_jwks_json(ctx, buf, (size_t)n + 1), n);
}

static void
test_jwks(void **state)
{
	struct auth_ctx *rs = key_ctx(AUTH_RS256, rsa_priv, rsa_pub);
	struct auth_ctx *es = key_ctx(AUTH_ES256, NULL, ec_pub);
	struct auth_ctx *es2 = key_ctx(AUTH_ES256, ec_priv, NULL);
	struct auth_ctx *hs = hs_ctx();
	char a[4096], b[4096];

	check_jwks(rs, "RSA");
	assert_int_equal(auth_jwks_json(hs, a, sizeof a), 11);
	assert_string_equal(a, "{\"keys\":[]}");
	/* public-only and private-only contexts publish the same key */
	auth_jwks_json(es, a, sizeof a);
	auth_jwks_json(es2, b, sizeof b);
	assert_string_equal(a, b);
	check_jwks(es2, "EC");
	auth_ctx_free(rs);
	auth_ctx_free(es);
	auth_ctx_free(es2);
	auth_ctx_free(hs);
}

/* ---- cache ---- */

static struct auth_claims
cache_claims(const char *jti, int64_t exp)
{
	struct auth_claims c;

	memset(&c, 0, sizeof c);
	strcpy(c.sub, "u");
	strcpy(c.typ, "access");
	snprintf(c.jti, sizeof c.jti, "%s", jti);
	c.exp = exp;
	return c;
}

static void
test_cache_hit_miss(void **state)
{
	struct auth_cache *c = auth_cache_new(1024);
	struct auth_claims in = cache_claims("j1", NOW + 100), out;
	const char *tok = "aaaa.bbbb.cccc";

	assert_int_equal(auth_cache_get(c, tok, strlen(tok), NOW, &out), 0);
	auth_cache_put(c, tok, strlen(tok), &in);
	assert_int_equal(auth_cache_get(c, tok, strlen(tok), NOW, &out), 1);
	assert_memory_equal(&out, &in, sizeof in);
	/* any other bytes miss: a prefix, one more byte, one changed byte */
	assert_int_equal(auth_cache_get(c, tok, strlen(tok) - 1, NOW, &out), 0);
	assert_int_equal(auth_cache_get(c, "aaaa.bbbb.ccccd", 15, NOW, &out), 0);
	assert_int_equal(auth_cache_get(c, "aaaa.bbbb.cccC", 14, NOW, &out), 0);
	assert_int_equal(auth_cache_get(c, tok, 0, NOW, &out), 0);
	assert_int_equal(auth_cache_count(c), 1);
	/* putting it again updates, not duplicates */
	in.exp = NOW + 200;
	auth_cache_put(c, tok, strlen(tok), &in);
	assert_int_equal(auth_cache_count(c), 1);
	assert_int_equal(auth_cache_get(c, tok, strlen(tok), NOW + 150, &out), 1);
	auth_cache_free(c);
}

static void
test_cache_expiry(void **state)
{
	struct auth_cache *c = auth_cache_new(64);
	struct auth_claims in = cache_claims("j1", NOW + 100), out;
	const char *tok = "expiring.token.x";

	auth_cache_put(c, tok, strlen(tok), &in);
	assert_int_equal(auth_cache_get(c, tok, strlen(tok), NOW + 100, &out), 1);
	assert_int_equal(auth_cache_get(c, tok, strlen(tok), NOW + 101, &out), 0);
	/* the expired entry was dropped, not kept for later */
	assert_int_equal(auth_cache_count(c), 0);
	assert_int_equal(auth_cache_get(c, tok, strlen(tok), NOW, &out), 0);
	auth_cache_free(c);
}

static void
test_cache_forget_jti(void **state)
{
	struct auth_cache *c = auth_cache_new(4096);
	struct auth_claims a = cache_claims("revoked", NOW + 100),
	                   b = cache_claims("kept", NOW + 100);
	struct auth_claims out;
	char tok[64];

	/* several tokens may carry one jti (re-encodings are refused, but be thorough) */
	for (int i = 0; i < 10; i++) {
		snprintf(tok, sizeof tok, "tok-a-%d", i);
		auth_cache_put(c, tok, strlen(tok), &a);
		snprintf(tok, sizeof tok, "tok-b-%d", i);
		auth_cache_put(c, tok, strlen(tok), &b);
	}
	assert_int_equal(auth_cache_count(c), 20);
	auth_cache_forget_jti(c, "revoked");
	assert_int_equal(auth_cache_count(c), 10);
	for (int i = 0; i < 10; i++) {
		snprintf(tok, sizeof tok, "tok-a-%d", i);
		assert_int_equal(auth_cache_get(c, tok, strlen(tok), NOW, &out), 0);
		snprintf(tok, sizeof tok, "tok-b-%d", i);
		assert_int_equal(auth_cache_get(c, tok, strlen(tok), NOW, &out), 1);
	}
	/* a later put of the forgotten jti (a verification that raced) is refused */
	auth_cache_put(c, "tok-a-0", 7, &a);
	assert_int_equal(auth_cache_get(c, "tok-a-0", 7, NOW, &out), 0);
	auth_cache_forget_jti(c, "never-cached");
	assert_int_equal(auth_cache_count(c), 10);
	auth_cache_free(c);
}

/* A token sharing the 64-bit hash of a cached one must still miss. */
static void
test_cache_collision_never_hits(void **state)
{
	struct auth_cache *c = auth_cache_new(1024);
	struct auth_claims in = cache_claims("j-admin", NOW + 100), out;
	const char *good = "real.verified.token";
	const char *forged = "forged.unverified.x";
	const char *same_len = "real.verified.tokeN";

	auth_cache_test_force_hash(c, 1, 0x1234567890abcdefULL);
	auth_cache_put(c, good, strlen(good), &in);
	assert_int_equal(auth_cache_get(c, forged, strlen(forged), NOW, &out), 0);
	assert_int_equal(auth_cache_get(c, same_len, strlen(same_len), NOW, &out), 0);
	assert_int_equal(auth_cache_get(c, good, strlen(good), NOW, &out), 1);
	/* colliding tokens live side by side, each with its own claims */
	{
		struct auth_claims other = cache_claims("j-other", NOW + 100);

		auth_cache_put(c, forged, strlen(forged), &other);
		assert_int_equal(auth_cache_get(c, forged, strlen(forged), NOW, &out), 1);
		assert_string_equal(out.jti, "j-other");
		assert_int_equal(auth_cache_get(c, good, strlen(good), NOW, &out), 1);
		assert_string_equal(out.jti, "j-admin");
	}
	auth_cache_test_force_hash(c, 0, 0);
	assert_int_equal(auth_cache_get(c, forged, strlen(forged), NOW, &out), 0);
	auth_cache_free(c);
}

static void
test_cache_capacity(void **state)
{
	const size_t caps[] = {1, 7, 100, 1000, 5000};
	char tok[64];

	for (size_t k = 0; k < sizeof caps / sizeof caps[0]; k++) {
		struct auth_cache *c = auth_cache_new(caps[k]);
		struct auth_claims in = cache_claims("j", NOW + 100), out;
		size_t hits = 0;

		for (size_t i = 0; i < caps[k] * 10 + 10; i++) {
			snprintf(tok, sizeof tok, "token-%zu", i);
			snprintf(in.jti, sizeof in.jti, "j%zu", i);
			auth_cache_put(c, tok, strlen(tok), &in);
			assert_true(auth_cache_count(c) <= caps[k]);
		}
		assert_true(auth_cache_count(c) > 0);
		/* the most recent token is always there */
		snprintf(tok, sizeof tok, "token-%zu", caps[k] * 10 + 9);
		assert_int_equal(auth_cache_get(c, tok, strlen(tok), NOW, &out), 1);
		for (size_t i = 0; i < caps[k] * 10 + 10; i++) {
			snprintf(tok, sizeof tok, "token-%zu", i);
			hits += (size_t)auth_cache_get(c, tok, strlen(tok), NOW, &out);
		}
		assert_int_equal(hits, auth_cache_count(c));
		if (caps[k] >= 1000) /* sharded: most of the capacity is usable */
			assert_true(auth_cache_count(c) >= caps[k] / 2);
		auth_cache_free(c);
	}
}

/* CLOCK: an entry that was hit since the hand last passed survives the next eviction. */
static void
test_cache_eviction_keeps_hot(void **state)
{
	struct auth_cache *c = auth_cache_new(8); /* one shard of 8 */
	struct auth_claims in = cache_claims("j", NOW + 100), out;
	char tok[32];

	for (int i = 0; i < 8; i++) {
		snprintf(tok, sizeof tok, "t%d", i);
		auth_cache_put(c, tok, strlen(tok), &in);
	}
	for (int round = 0; round < 20; round++) {
		assert_int_equal(auth_cache_get(c, "t0", 2, NOW, &out), 1);
		snprintf(tok, sizeof tok, "new%d", round);
		auth_cache_put(c, tok, strlen(tok), &in);
		assert_int_equal(auth_cache_count(c), 8);
	}
	assert_int_equal(auth_cache_get(c, "t0", 2, NOW, &out), 1);
	auth_cache_free(c);
}

static void
test_cache_refuses_odd_puts(void **state)
{
	struct auth_cache *c = auth_cache_new(64);
	struct auth_claims in = cache_claims("j", NOW + 100), out;
	char *big = malloc(AUTH_TOKEN_MAX + 2);

	memset(big, 'A', AUTH_TOKEN_MAX + 1);
	auth_cache_put(c, big, AUTH_TOKEN_MAX + 1, &in);
	auth_cache_put(c, "", 0, &in);
	assert_int_equal(auth_cache_count(c), 0);
	auth_cache_put(c, big, AUTH_TOKEN_MAX, &in);
	assert_int_equal(auth_cache_get(c, big, AUTH_TOKEN_MAX, NOW, &out), 1);
	memset(in.jti, 'x', sizeof in.jti); /* unterminated jti */
	auth_cache_put(c, "zzz", 3, &in);
	assert_int_equal(auth_cache_get(c, "zzz", 3, NOW, &out), 0);
	free(big);
	auth_cache_free(c);
}

/*
 * Revocation racing with puts: threads keep verifying-and-putting a token; once
 * forget_jti has returned, no get may hit it again, however the puts interleave.
 */
struct race_arg {
	struct auth_cache *c;
	atomic_int forgotten;
	atomic_int stop;
	atomic_int late_hits;
	atomic_long puts;
};

static void *
race_thread(void *p)
{
	struct race_arg *a = p;
	struct auth_claims in = cache_claims("victim", NOW + 100), out;
	const char *tok = "victim.token.sig";
	char other[32];
	unsigned n = 0;

	while (!atomic_load(&a->stop)) {
		int after = atomic_load(&a->forgotten);

		if (auth_cache_get(a->c, tok, strlen(tok), NOW, &out) && after)
			atomic_fetch_add(&a->late_hits, 1);
		auth_cache_put(a->c, tok, strlen(tok), &in);
		atomic_fetch_add(&a->puts, 1);
		/* churn other entries through the same shards */
		snprintf(other, sizeof other, "other-%u", n++ % 512);
		auth_cache_put(a->c, other, strlen(other), &in);
	}
	return NULL;
}

static void
test_cache_forget_races_put(void **state)
{
	struct race_arg a = {.c = auth_cache_new(256)};
	pthread_t t[3];
	struct auth_claims out;

	for (int i = 0; i < 3; i++)
		pthread_create(&t[i], NULL, race_thread, &a);
	while (atomic_load(&a.puts) < 20000)
		sched_yield();
	auth_cache_forget_jti(a.c, "victim");
	atomic_store(&a.forgotten, 1);
	while (atomic_load(&a.puts) < 60000)
		sched_yield();
	atomic_store(&a.stop, 1);
	for (int i = 0; i < 3; i++)
		pthread_join(t[i], NULL);
	assert_int_equal(atomic_load(&a.late_hits), 0);
	assert_int_equal(auth_cache_get(a.c, "victim.token.sig", 16, NOW, &out), 0);
	auth_cache_free(a.c);
}

/* The intended flow: verify once, then hits; a revoked token stops at once. */
static void
test_cache_with_verify(void **state)
{
	struct auth_ctx *ctx = hs_ctx();
	struct auth_cache *c = auth_cache_new(1024);
	struct auth_claims in = claims_for(ctx, "access", "carol"), out;
	char tok[AUTH_TOKEN_MAX + 1];
	int n = sign(ctx, &in, tok, sizeof tok);

	assert_int_equal(auth_cache_get(c, tok, (size_t)n, NOW, &out), 0);
	assert_int_equal(auth_jwt_verify(ctx, tok, (size_t)n, NOW, &out), AUTH_OK);
	auth_cache_put(c, tok, (size_t)n, &out);
	memset(&out, 0, sizeof out);
	assert_int_equal(auth_cache_get(c, tok, (size_t)n, NOW + 10, &out), 1);
	assert_string_equal(out.sub, "carol");
	assert_string_equal(out.typ, "access");
	/* the token past exp is a miss, and verify then says expired */
	assert_int_equal(auth_cache_get(c, tok, (size_t)n, in.exp + 1, &out), 0);
	assert_int_equal(auth_jwt_verify(ctx, tok, (size_t)n, in.exp + LEEWAY + 1, &out),
	                 AUTH_E_EXPIRED);
	auth_jwt_verify(ctx, tok, (size_t)n, NOW, &out);
	auth_cache_put(c, tok, (size_t)n, &out);
	auth_cache_forget_jti(c, in.jti);
	assert_int_equal(auth_cache_get(c, tok, (size_t)n, NOW, &out), 0);
	auth_cache_free(c);
	auth_ctx_free(ctx);
}

/* ---- passwords ---- */

static double
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static void
test_password_hash_verify(void **state)
{
	char h1[AUTH_HASH_MAX], h2[AUTH_HASH_MAX], prefix[16];
	int cost;

	assert_int_equal(auth_password_hash("correct horse battery", h1, sizeof h1), 0);
	assert_int_equal(strlen(h1), 60);
	snprintf(prefix, sizeof prefix, "$2b$%02d$", AUTH_BCRYPT_COST);
	assert_memory_equal(h1, prefix, 7);
	cost = atoi(h1 + 4);
	assert_true(cost >= 10);
	assert_int_equal(cost, AUTH_BCRYPT_COST);
	assert_int_equal(auth_password_verify("correct horse battery", h1), 1);
	assert_int_equal(auth_password_verify("correct horse batterY", h1), 0);
	assert_int_equal(auth_password_verify("", h1), 0);
	/* salted: the same password hashes differently, both verify */
	assert_int_equal(auth_password_hash("correct horse battery", h2, sizeof h2), 0);
	assert_string_not_equal(h1, h2);
	assert_int_equal(auth_password_verify("correct horse battery", h2), 1);
	assert_int_equal(auth_password_needs_rehash(h1), 0);
	/* too small an output buffer */
	assert_int_equal(auth_password_hash("pw", h2, 60), -1);
}

static void
test_password_known_vector(void **state)
{
	/* the classic OpenBSD/John the Ripper bcrypt vector ($2a$, cost 5) */
	const char *h = "$2a$05$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW";

	assert_int_equal(auth_password_verify("U*U", h), 1);
	assert_int_equal(auth_password_verify("U*V", h), 0);
	assert_int_equal(auth_password_needs_rehash(h), 1);
}

static void
test_password_limits(void **state)
{
	char pw[AUTH_PASSWORD_MAX + 2], h[AUTH_HASH_MAX];

	memset(pw, 'p', sizeof pw - 1);
	pw[sizeof pw - 1] = '\0'; /* 73 bytes: bcrypt would silently ignore the last one */
	assert_int_equal(auth_password_hash(pw, h, sizeof h), -1);
	pw[AUTH_PASSWORD_MAX] = '\0';
	assert_int_equal(auth_password_hash(pw, h, sizeof h), 0);
	assert_int_equal(auth_password_verify(pw, h), 1);
	pw[AUTH_PASSWORD_MAX] = 'p';
	assert_int_equal(auth_password_verify(pw, h), 0);
	/* malformed stored hashes never match */
	assert_int_equal(auth_password_verify(pw, ""), 0);
	assert_int_equal(auth_password_verify(pw, NULL), 0);
	assert_int_equal(auth_password_verify("x", "$1$salt$abcdefghijklmnopqrstuv"), 0);
	assert_int_equal(auth_password_verify("x", "*0"), 0);
	assert_int_equal(auth_password_verify(
	                     "x", "$2b$31$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW"),
	                 0);
	assert_int_equal(auth_password_needs_rehash("garbage"), 1);
}

/* Unknown email vs wrong password: same work, so similar time. */
static void
test_password_dummy_verify(void **state)
{
	char h[AUTH_HASH_MAX];
	double t0, real, dummy, malformed;

	assert_int_equal(auth_password_hash("s3cret-pw", h, sizeof h), 0);
	t0 = now_ms();
	assert_int_equal(auth_password_verify("wrong-pw", h), 0);
	real = now_ms() - t0;
	t0 = now_ms();
	auth_password_dummy_verify("wrong-pw");
	dummy = now_ms() - t0;
	t0 = now_ms();
	assert_int_equal(auth_password_verify("wrong-pw", "not-a-hash"), 0);
	malformed = now_ms() - t0;
	print_message("      bcrypt cost %d: verify %.1f ms, dummy %.1f ms, malformed %.1f ms\n",
	              AUTH_BCRYPT_COST, real, dummy, malformed);
	assert_true(real > 20.0); /* cost 12 is ~200 ms; cost 10 would still be > 20 */
	assert_true(dummy > real * 0.5 && dummy < real * 2.0);
	assert_true(malformed > real * 0.5 && malformed < real * 2.0);
	auth_password_dummy_verify(NULL);
}

/* ---- random and hashing ---- */

static void
test_random_token(void **state)
{
	char a[128], b[128];

	assert_int_equal(auth_random_token(a, sizeof a, 32, "gk_"), 0);
	assert_int_equal(strlen(a), 3 + 64);
	assert_memory_equal(a, "gk_", 3);
	assert_int_equal(strspn(a + 3, "0123456789abcdef"), 64);
	assert_int_equal(auth_random_token(b, sizeof b, 32, "gk_"), 0);
	assert_string_not_equal(a, b);
	assert_int_equal(auth_random_token(a, sizeof a, 16, NULL), 0);
	assert_int_equal(strlen(a), 32);
	assert_int_equal(auth_random_token(a, 3 + 64, 32, "gk_"), -1); /* no room for NUL */
	assert_int_equal(auth_random_token(a, 3 + 65, 32, "gk_"), 0);
	assert_int_equal(auth_random_token(a, sizeof a, 0, "gk_"), -1);
	assert_int_equal(auth_random_token(a, sizeof a, 257, ""), -1);
}

static int
cmp_str(const void *a, const void *b)
{
	return strcmp(a, b);
}

static void
test_random_token_unique(void **state)
{
	enum { N = 2000 };
	char(*t)[40] = malloc(N * sizeof *t);
	int counts[16] = {0};

	for (int i = 0; i < N; i++) {
		assert_int_equal(auth_random_token(t[i], sizeof t[i], 16, ""), 0);
		for (int j = 0; j < 32; j++)
			counts[t[i][j] <= '9' ? t[i][j] - '0' : t[i][j] - 'a' + 10]++;
	}
	qsort(t, N, sizeof *t, cmp_str);
	for (int i = 1; i < N; i++)
		assert_string_not_equal(t[i - 1], t[i]);
	/* 64000 hex digits: each of 16 values ~4000 times; a broken RNG would skew wildly */
	for (int d = 0; d < 16; d++)
		assert_true(counts[d] > 3500 && counts[d] < 4500);
	free(t);
}

static void
test_sha256_vectors(void **state)
{
	char out[65];
	char *million = malloc(1000000);

	auth_sha256_hex("", 0, out);
	assert_string_equal(out,
	                    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
	auth_sha256_hex("abc", 3, out);
	assert_string_equal(out,
	                    "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
	auth_sha256_hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq", 56, out);
	assert_string_equal(out,
	                    "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
	memset(million, 'a', 1000000);
	auth_sha256_hex(million, 1000000, out);
	assert_string_equal(out,
	                    "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
	free(million);
}

/* A refused token must not leave entries in OpenSSL's per-thread error queue. */
static void
test_openssl_error_queue_clean(void **state)
{
	struct auth_ctx *ctxs[] = {hs_ctx(), key_ctx(AUTH_RS256, rsa_priv, rsa_pub),
	                           key_ctx(AUTH_ES256, ec_priv, ec_pub)};
	struct auth_claims out;
	char tok[AUTH_TOKEN_MAX + 1];

	ERR_clear_error();
	for (size_t k = 0; k < 3; k++) {
		struct auth_claims c = claims_for(ctxs[k], "access", "u");

		sign(ctxs[k], &c, tok, sizeof tok);
		tamper(tok, 2, 5);
		assert_int_equal(verify(ctxs[k], tok, NOW, &out), AUTH_E_SIGNATURE);
		assert_int_equal(ERR_peek_error(), 0);
		auth_ctx_free(ctxs[k]);
	}
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_hs256_roundtrip),
	    cmocka_unit_test(test_rs256_roundtrip),
	    cmocka_unit_test(test_es256_roundtrip),
	    cmocka_unit_test(test_hs256_matches_openssl_hmac),
	    cmocka_unit_test(test_refresh_typ_and_family),
	    cmocka_unit_test(test_claims_init),
	    cmocka_unit_test(test_ctx_secret_length),
	    cmocka_unit_test(test_ctx_bad_keys),
	    cmocka_unit_test(test_alg_names),
	    cmocka_unit_test(test_alg_none),
	    cmocka_unit_test(test_alg_confusion),
	    cmocka_unit_test(test_alg_mismatch),
	    cmocka_unit_test(test_wrong_secret),
	    cmocka_unit_test(test_wrong_key_rs_es),
	    cmocka_unit_test(test_tampered),
	    cmocka_unit_test(test_forged_payload_swap),
	    cmocka_unit_test(test_expired_and_not_yet),
	    cmocka_unit_test(test_leeway_edges),
	    cmocka_unit_test(test_zero_leeway),
	    cmocka_unit_test(test_wrong_issuer),
	    cmocka_unit_test(test_missing_claims),
	    cmocka_unit_test(test_claim_types),
	    cmocka_unit_test(test_oversized_claims),
	    cmocka_unit_test(test_duplicate_claims),
	    cmocka_unit_test(test_reserved_claims_not_overridable),
	    cmocka_unit_test(test_claims_order),
	    cmocka_unit_test(test_sign_refuses),
	    cmocka_unit_test(test_base64_strict),
	    cmocka_unit_test(test_base64_noncanonical_payload),
	    cmocka_unit_test(test_parts),
	    cmocka_unit_test(test_oversized_token),
	    cmocka_unit_test(test_header_variants),
	    cmocka_unit_test(test_payload_not_object),
	    cmocka_unit_test(test_payload_json_strict),
	    cmocka_unit_test(test_signature_length),
	    cmocka_unit_test(test_failure_zeroes_claims),
	    cmocka_unit_test(test_error_codes),
	    cmocka_unit_test(test_concurrent_verify),
	    cmocka_unit_test(test_jwks),
	    cmocka_unit_test(test_cache_hit_miss),
	    cmocka_unit_test(test_cache_expiry),
	    cmocka_unit_test(test_cache_forget_jti),
	    cmocka_unit_test(test_cache_collision_never_hits),
	    cmocka_unit_test(test_cache_capacity),
	    cmocka_unit_test(test_cache_eviction_keeps_hot),
	    cmocka_unit_test(test_cache_refuses_odd_puts),
	    cmocka_unit_test(test_cache_forget_races_put),
	    cmocka_unit_test(test_cache_with_verify),
	    cmocka_unit_test(test_password_hash_verify),
	    cmocka_unit_test(test_password_known_vector),
	    cmocka_unit_test(test_password_limits),
	    cmocka_unit_test(test_password_dummy_verify),
	    cmocka_unit_test(test_random_token),
	    cmocka_unit_test(test_random_token_unique),
	    cmocka_unit_test(test_sha256_vectors),
	    cmocka_unit_test(test_openssl_error_queue_clean),
	};

	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
