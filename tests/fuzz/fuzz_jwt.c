/*
 * libFuzzer target for gatewayd/auth.c. Every input is used four ways:
 *   1. as a token, verified by an HS256 context: must never crash, and what it accepts
 *      must be well-formed (terminated strings, required claims) and cacheable;
 *   2. as a payload, signed here with the context's secret under our header: the
 *      signature then always holds, so this reaches the claims reader, which is checked
 *      against cJSON — whatever it parses must be a JSON object to cJSON too, with the
 *      same sub, jti, typ and exp;
 *   3. as a header, with a valid payload: only the configured alg may pass;
 *   4. as claim text, signed by auth_jwt_sign: what it signs must verify to the same
 *      claims.
 *
 *   make build/fuzz/fuzz_jwt && build/fuzz/fuzz_jwt -max_total_time=60 \
 *       build/fuzz/corpus-fuzz_jwt tests/fuzz/corpus/fuzz_jwt
 */

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cJSON.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "auth.h"

#define FUZZ_NOW 1700000000LL
#define FUZZ_SECRET "fuzz-secret-fuzz-secret-fuzz-sec"     /* 32 bytes */
#define FUZZ_HEADER "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9" /* {"alg":"HS256","typ":"JWT"} */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct auth_ctx *fuzz_ctx;

static void
fuzz_check(int ok)
{
	if (!ok)
		__builtin_trap();
}

static void
fuzz_init(void)
{
	struct auth_config cfg = {.alg = AUTH_HS256,
	                          .secret = (const unsigned char *)FUZZ_SECRET,
	                          .secret_len = sizeof FUZZ_SECRET - 1,
	                          .issuer = "gatewayd",
	                          .access_ttl = 3600,
	                          .refresh_ttl = 86400,
	                          .leeway = 30};

	fuzz_ctx = auth_ctx_new(&cfg, NULL, 0);
	fuzz_check(fuzz_ctx != NULL);
}

static size_t
fuzz_b64url(const uint8_t *s, size_t n, char *dst)
{
	static const char a[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
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

/* b64(header) "." b64(payload) "." HMAC, into out (big enough); returns its length. */
static size_t
fuzz_token(const char *header_b64, const uint8_t *payload, size_t plen, char *out)
{
	unsigned char mac[32];
	unsigned maclen = 0;
	size_t o = strlen(header_b64);

	memcpy(out, header_b64, o);
	out[o++] = '.';
	o += fuzz_b64url(payload, plen, out + o);
	HMAC(EVP_sha256(), FUZZ_SECRET, sizeof FUZZ_SECRET - 1, (unsigned char *)out, o, mac,
	     &maclen);
	out[o++] = '.';
	o += fuzz_b64url(mac, maclen, out + o);
	return o;
}

static int
fuzz_terminated(const char *s, size_t size)
{
	return memchr(s, '\0', size) != NULL;
}

static void
fuzz_claims_sane(const struct auth_claims *c)
{
	fuzz_check(fuzz_terminated(c->sub, sizeof c->sub) && c->sub[0] != '\0');
	fuzz_check(fuzz_terminated(c->jti, sizeof c->jti) && c->jti[0] != '\0');
	fuzz_check(fuzz_terminated(c->typ, sizeof c->typ) && c->typ[0] != '\0');
	fuzz_check(fuzz_terminated(c->iss, sizeof c->iss));
	fuzz_check(fuzz_terminated(c->tier, sizeof c->tier));
	fuzz_check(fuzz_terminated(c->role, sizeof c->role));
	fuzz_check(fuzz_terminated(c->fam, sizeof c->fam));
	fuzz_check(strcmp(c->iss, "gatewayd") == 0);
	fuzz_check(c->exp + 30 >= FUZZ_NOW && c->nbf - 30 <= FUZZ_NOW);
}

/* 1: the input as a token. */
static void
fuzz_as_token(const uint8_t *data, size_t size)
{
	struct auth_claims out, hit;
	struct auth_cache *cache;
	int rc = auth_jwt_verify(fuzz_ctx, (const char *)data, size, FUZZ_NOW, &out);

	fuzz_check(rc >= AUTH_OK && rc <= AUTH_E_CLAIMS);
	fuzz_check(auth_error_code(rc) != NULL && auth_error_message(rc) != NULL);
	if (rc != AUTH_OK)
		return;
	fuzz_check(size <= AUTH_TOKEN_MAX);
	fuzz_claims_sane(&out);
	/* a fresh cache: a jti forgotten by an earlier input would (rightly) refuse the put */
	cache = auth_cache_new(8);
	auth_cache_put(cache, (const char *)data, size, &out);
	fuzz_check(auth_cache_get(cache, (const char *)data, size, FUZZ_NOW, &hit) == 1);
	fuzz_check(memcmp(&hit, &out, sizeof hit) == 0);
	auth_cache_forget_jti(cache, out.jti);
	fuzz_check(auth_cache_get(cache, (const char *)data, size, FUZZ_NOW, &hit) == 0);
	auth_cache_put(cache, (const char *)data, size, &out);
	fuzz_check(auth_cache_get(cache, (const char *)data, size, FUZZ_NOW, &hit) == 0);
	auth_cache_free(cache);
}

static const char *
fuzz_json_str(const cJSON *o, const char *name)
{
	const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, name);

	return cJSON_IsString(it) ? it->valuestring : NULL;
}

/* 2: the input as a signed payload, the claims reader checked against cJSON. */
static void
fuzz_as_payload(const uint8_t *data, size_t size)
{
	static char tok[AUTH_TOKEN_MAX * 2];
	struct auth_claims out;
	size_t n;
	int rc;

	if (size == 0 || size > AUTH_TOKEN_MAX / 4 * 3)
		return;
	n = fuzz_token(FUZZ_HEADER, data, size, tok);
	rc = auth_jwt_verify(fuzz_ctx, tok, n, FUZZ_NOW, &out);
	if (n > AUTH_TOKEN_MAX) {
		fuzz_check(rc == AUTH_E_MALFORMED);
		return;
	}
	fuzz_check(rc != AUTH_E_ALG && rc != AUTH_E_SIGNATURE);
	if (rc != AUTH_E_MALFORMED) {
		/* our reader took it as a JSON object: so must cJSON */
		cJSON *o = cJSON_ParseWithLength((const char *)data, size);
		const char *s;

		fuzz_check(cJSON_IsObject(o));
		if (rc == AUTH_OK) {
			fuzz_claims_sane(&out);
			fuzz_check((s = fuzz_json_str(o, "sub")) != NULL &&
			           strcmp(s, out.sub) == 0);
			fuzz_check((s = fuzz_json_str(o, "jti")) != NULL &&
			           strcmp(s, out.jti) == 0);
			fuzz_check((s = fuzz_json_str(o, "typ")) != NULL &&
			           strcmp(s, out.typ) == 0);
			fuzz_check(cJSON_GetObjectItemCaseSensitive(o, "exp")->valuedouble ==
			           (double)out.exp);
		}
		cJSON_Delete(o);
	}
}

/* 3: the input as a header over a valid payload. */
static void
fuzz_as_header(const uint8_t *data, size_t size)
{
	static const char payload[] = "{\"sub\":\"u\",\"iss\":\"gatewayd\",\"exp\":1700003600,"
	                              "\"jti\":\"j\",\"typ\":\"access\"}";
	static char hb64[AUTH_TOKEN_MAX], tok[AUTH_TOKEN_MAX * 2];
	struct auth_claims out;
	size_t n;
	int rc;

	if (size > 1024)
		return;
	fuzz_b64url(data, size, hb64);
	n = fuzz_token(hb64, (const uint8_t *)payload, sizeof payload - 1, tok);
	rc = auth_jwt_verify(fuzz_ctx, tok, n, FUZZ_NOW, &out);
	if (rc == AUTH_OK) {
		/* only a header naming HS256 may pass, and one that cJSON reads so */
		cJSON *h = cJSON_ParseWithLength((const char *)data, size);
		const char *alg = fuzz_json_str(h, "alg");

		fuzz_check(alg != NULL && strcmp(alg, "HS256") == 0);
		cJSON_Delete(h);
	}
}

/* 4: the input as claim text for auth_jwt_sign; what signs must verify identically. */
static void
fuzz_as_claims(const uint8_t *data, size_t size)
{
	struct auth_claims in, out;
	char tok[AUTH_TOKEN_MAX + 1];
	const uint8_t *p = data, *end = data + size;
	char *fields[] = {in.sub, in.tier, in.role, in.fam, in.jti};
	size_t sizes[] = {sizeof in.sub, sizeof in.tier, sizeof in.role, sizeof in.fam,
	                  sizeof in.jti};
	int n;

	if (auth_claims_init(fuzz_ctx, &in, "access", "s", NULL, FUZZ_NOW) != 0)
		return;
	/* NUL-separated fields; each is cut to fit */
	for (size_t f = 0; f < sizeof fields / sizeof fields[0] && p < end; f++) {
		const uint8_t *z = memchr(p, '\0', (size_t)(end - p));
		size_t len = (size_t)((z != NULL ? z : end) - p);

		if (len >= sizes[f])
			len = sizes[f] - 1;
		memcpy(fields[f], p, len);
		fields[f][len] = '\0';
		p = z != NULL ? z + 1 : end;
	}
	n = auth_jwt_sign(fuzz_ctx, &in, tok, sizeof tok);
	if (n < 0)
		return;
	fuzz_check(auth_jwt_verify(fuzz_ctx, tok, (size_t)n, FUZZ_NOW, &out) == AUTH_OK);
	fuzz_check(strcmp(in.sub, out.sub) == 0 && strcmp(in.tier, out.tier) == 0 &&
	           strcmp(in.role, out.role) == 0 && strcmp(in.fam, out.fam) == 0 &&
	           strcmp(in.jti, out.jti) == 0 && strcmp(out.typ, "access") == 0 &&
	           out.exp == in.exp && out.iat == in.iat && out.nbf == in.nbf);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (fuzz_ctx == NULL)
		fuzz_init();
	fuzz_as_token(data, size);
	fuzz_as_payload(data, size);
	fuzz_as_header(data, size);
	fuzz_as_claims(data, size);
	return 0;
}
