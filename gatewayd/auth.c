/*
 * JWT (compact JWS, RFC 7515/7519) with OpenSSL directly, a verified-token cache,
 * bcrypt passwords and random tokens.
 *
 * Verification order is the security argument, so it is fixed: (1) structure — exactly
 * three segments of the strict base64url alphabet, canonical encodings, size caps;
 * (2) header — alg must be the configured one, whatever the token says, so "none",
 * HS256-signed-with-the-RSA-public-key and every other alg trick stop here; (3) the
 * signature, compared in constant time; (4) only then is the payload parsed, so an
 * attacker's payload is never parsed unless it was signed with our key. Headers are
 * parsed (with cJSON) before the signature check unless they are byte-for-byte the
 * header we emit, the common case, which skips JSON entirely. (5) claims: types,
 * sizes, duplicates, iss, exp and nbf with leeway.
 *
 * HS256 speed: OpenSSL 3's one-shot HMAC() fetches the digest by name on every call
 * (~3 us here). The context instead keeps two SHA-256 states that have already absorbed
 * key^ipad and key^opad (the HMAC "midstate"); a verification copies them and hashes
 * only the token, ~0.6 us, without deprecated low-level SHA256_* calls.
 *
 * Nothing here keeps global mutable state except a once-initialised SHA-256 handle
 * (immutable after pthread_once) and what struct auth_cache holds.
 */

#include <crypt.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/types.h>

#include <cJSON.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>

#include "auth.h"
#include "log.h"
#include "util.h"
#include "xmalloc.h"

#define AUTH_HMAC_LEN 32
#define AUTH_SHA256_BLOCK 64
#define AUTH_ES256_COORD 32 /* bytes in a P-256 coordinate, r or s */
#define AUTH_RSA_MIN_BITS 2048
#define AUTH_HEADER_MAX 1024                      /* decoded header bytes */
#define AUTH_PAYLOAD_MAX (AUTH_TOKEN_MAX / 4 * 3) /* decoded payload bytes */
#define AUTH_SIG_MAX 1024                         /* decoded signature: RSA 8192 bits */
#define AUTH_CLAIMS_JSON_MAX 4096                 /* our payloads: fixed-size claims, escaped */
#define AUTH_KID_MAX 64
#define AUTH_JWK_FIELD_MAX 1400 /* base64url of an RSA-8192 modulus + NUL */

enum auth_claim_bit {
	AUTH_C_SUB = 1 << 0,
	AUTH_C_ISS = 1 << 1,
	AUTH_C_TYP = 1 << 2,
	AUTH_C_TIER = 1 << 3,
	AUTH_C_ROLE = 1 << 4,
	AUTH_C_JTI = 1 << 5,
	AUTH_C_FAM = 1 << 6,
	AUTH_C_IAT = 1 << 7,
	AUTH_C_NBF = 1 << 8,
	AUTH_C_EXP = 1 << 9,
};

struct auth_ctx {
	enum auth_alg alg;
	char issuer[128];
	int64_t access_ttl, refresh_ttl, leeway;
	/* HS256: SHA-256 states after key^ipad and key^opad (never modified after new) */
	EVP_MD *sha256;
	EVP_MD_CTX *hs_inner, *hs_outer;
	/* RS256/ES256 */
	EVP_PKEY *pkey; /* the private key when we have one, else the public key */
	int can_sign;
	size_t sig_len; /* raw JWS signature bytes: RSA modulus size, or 64 for ES256 */
	char kid[AUTH_KID_MAX];
	char *jwk; /* the key's JWK members for /.well-known/jwks.json */
	/* base64url of the exact header we emit: tokens carrying it skip header JSON */
	char hdr_b64[256];
	size_t hdr_b64_len;
};

/* ---- base64url (RFC 4648 section 5, no padding) ---- */

static const char auth_b64_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/* clang-format off */
static const int8_t auth_b64_value[256] = {
	-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
	-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
	-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, 62, -1, -1,
	52, 53, 54, 55, 56, 57, 58, 59, 60, 61, -1, -1, -1, -1, -1, -1,
	-1,  0,  1,  2,  3,  4,  5,  6,  7,  8,  9, 10, 11, 12, 13, 14,
	15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, -1, -1, -1, -1, 63,
	-1, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40,
	41, 42, 43, 44, 45, 46, 47, 48, 49, 50, 51, -1, -1, -1, -1, -1,
	-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
	-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
	-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
	-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
	-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
	-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
	-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
	-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
};
/* clang-format on */

static size_t
auth_b64_enclen(size_t n)
{
	return n / 3 * 4 + (n % 3 == 0 ? 0 : n % 3 + 1);
}

/* Encodes src into dst (auth_b64_enclen(n) + 1 bytes, NUL-terminated); returns length. */
static size_t
auth_b64_encode(const unsigned char *src, size_t n, char *dst)
{
	size_t i = 0, o = 0;

	for (; i + 3 <= n; i += 3) {
		uint32_t v = (uint32_t)src[i] << 16 | (uint32_t)src[i + 1] << 8 | src[i + 2];

		dst[o++] = auth_b64_alphabet[v >> 18];
		dst[o++] = auth_b64_alphabet[(v >> 12) & 63];
		dst[o++] = auth_b64_alphabet[(v >> 6) & 63];
		dst[o++] = auth_b64_alphabet[v & 63];
	}
	if (n - i == 1) {
		dst[o++] = auth_b64_alphabet[src[i] >> 2];
		dst[o++] = auth_b64_alphabet[(src[i] & 3) << 4];
	} else if (n - i == 2) {
		uint32_t v = (uint32_t)src[i] << 8 | src[i + 1];

		dst[o++] = auth_b64_alphabet[v >> 10];
		dst[o++] = auth_b64_alphabet[(v >> 4) & 63];
		dst[o++] = auth_b64_alphabet[(v & 15) << 2];
	}
	dst[o] = '\0';
	return o;
}

/*
 * Strict decode: alphabet only, no padding, and canonical — the unused low bits of the
 * last character must be zero. Without that, "...Q" and "...R" would decode to the
 * same bytes, and one signed token would have several valid spellings (each a distinct
 * cache key, and a way to slip past anything that compares token text). Returns the
 * decoded length, or -1.
 */
static ssize_t
auth_b64_decode(const char *src, size_t n, unsigned char *dst, size_t dstlen)
{
	size_t i = 0, o = 0, rem = n % 4;

	if (rem == 1 || n / 4 * 3 + (rem == 0 ? 0 : rem - 1) > dstlen)
		return -1;
	for (; i + 4 <= n; i += 4) {
		int a = auth_b64_value[(unsigned char)src[i]];
		int b = auth_b64_value[(unsigned char)src[i + 1]];
		int c = auth_b64_value[(unsigned char)src[i + 2]];
		int d = auth_b64_value[(unsigned char)src[i + 3]];
		uint32_t v;

		if ((a | b | c | d) < 0)
			return -1;
		v = (uint32_t)a << 18 | (uint32_t)b << 12 | (uint32_t)c << 6 | (uint32_t)d;
		dst[o++] = (unsigned char)(v >> 16);
		dst[o++] = (unsigned char)(v >> 8);
		dst[o++] = (unsigned char)v;
	}
	if (rem == 2) {
		int a = auth_b64_value[(unsigned char)src[i]];
		int b = auth_b64_value[(unsigned char)src[i + 1]];

		if ((a | b) < 0 || (b & 15) != 0)
			return -1;
		dst[o++] = (unsigned char)(a << 2 | b >> 4);
	} else if (rem == 3) {
		int a = auth_b64_value[(unsigned char)src[i]];
		int b = auth_b64_value[(unsigned char)src[i + 1]];
		int c = auth_b64_value[(unsigned char)src[i + 2]];

		if ((a | b | c) < 0 || (c & 3) != 0)
			return -1;
		dst[o++] = (unsigned char)(a << 2 | b >> 4);
		dst[o++] = (unsigned char)((b & 15) << 4 | c >> 2);
	}
	return (ssize_t)o;
}

/* ---- small text helpers ---- */

static void
auth_errf(char *err, size_t errlen, const char *what, const char *detail)
{
	if (err != NULL && errlen > 0)
		snprintf(err, errlen, "%s%s%s", what, detail != NULL ? ": " : "",
		         detail != NULL ? detail : "");
}

/* The oldest OpenSSL error as text, and the queue cleared (see auth_ossl_clear). */
static const char *
auth_ossl_error(char *buf, size_t len)
{
	unsigned long e = ERR_peek_error();

	if (e == 0)
		util_strlcpy(buf, "unknown OpenSSL error", len);
	else
		ERR_error_string_n(e, buf, len);
	ERR_clear_error();
	return buf;
}

/*
 * OpenSSL reports failures in a per-thread queue that TLS code on the same worker
 * thread reads through SSL_get_error: a stale entry left by a failed signature check
 * would make an unrelated connection's next I/O look like a protocol error. So every
 * path here that can fail inside OpenSSL clears it.
 */
static void
auth_ossl_clear(void)
{
	ERR_clear_error();
}

static void
auth_hex(const unsigned char *src, size_t n, char *dst)
{
	static const char digits[] = "0123456789abcdef";

	for (size_t i = 0; i < n; i++) {
		dst[2 * i] = digits[src[i] >> 4];
		dst[2 * i + 1] = digits[src[i] & 15];
	}
	dst[2 * n] = '\0';
}

/*
 * The length of the strict UTF-8 sequence (no overlongs, surrogates or code points past
 * U+10FFFF) starting at s, within avail bytes, or 0.
 */
static size_t
auth_utf8_seq(const unsigned char *s, size_t avail)
{
	unsigned c = s[0];
	size_t n;
	uint32_t cp;

	if (c < 0x80)
		return 1;
	if (c >= 0xc2 && c <= 0xdf) {
		n = 1;
		cp = c & 0x1f;
	} else if (c >= 0xe0 && c <= 0xef) {
		n = 2;
		cp = c & 0x0f;
	} else if (c >= 0xf0 && c <= 0xf4) {
		n = 3;
		cp = c & 0x07;
	} else {
		return 0;
	}
	if (avail < n + 1)
		return 0;
	for (size_t i = 1; i <= n; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		cp = cp << 6 | (s[i] & 0x3fu);
	}
	if ((n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) || cp > 0x10ffff ||
	    (cp >= 0xd800 && cp <= 0xdfff))
		return 0;
	return n + 1;
}

static int
auth_utf8_valid(const char *str)
{
	const unsigned char *s = (const unsigned char *)str;
	size_t left = strlen(str);

	while (left > 0) {
		size_t n = auth_utf8_seq(s, left);

		if (n == 0)
			return 0;
		s += n;
		left -= n;
	}
	return 1;
}

/* A bounded JSON writer for the claims we sign: no allocation, overflow is sticky. */
struct auth_jbuf {
	char *p;
	size_t len, cap;
	int overflow;
};

static void
auth_jraw(struct auth_jbuf *b, const char *s, size_t n)
{
	if (b->overflow || n >= b->cap - b->len) {
		b->overflow = 1;
		return;
	}
	memcpy(b->p + b->len, s, n);
	b->len += n;
	b->p[b->len] = '\0';
}

static void
auth_jstr(struct auth_jbuf *b, const char *s)
{
	static const char digits[] = "0123456789abcdef";

	auth_jraw(b, "\"", 1);
	for (; *s != '\0'; s++) {
		unsigned char c = (unsigned char)*s;
		char esc[6] = {'\\', 'u', '0', '0', digits[c >> 4], digits[c & 15]};

		if (c == '"' || c == '\\') {
			esc[1] = (char)c;
			auth_jraw(b, esc, 2);
		} else if (c < 0x20 || c == 0x7f) {
			auth_jraw(b, esc, sizeof esc);
		} else {
			auth_jraw(b, s, 1);
		}
	}
	auth_jraw(b, "\"", 1);
}

/* ,"name":"value" — or nothing when value is "" and the claim is optional. */
static void
auth_jmember_str(struct auth_jbuf *b, const char *name, const char *value)
{
	auth_jraw(b, b->len > 1 ? ",\"" : "\"", b->len > 1 ? 2 : 1);
	auth_jraw(b, name, strlen(name));
	auth_jraw(b, "\":", 2);
	auth_jstr(b, value);
}

static void
auth_jmember_int(struct auth_jbuf *b, const char *name, int64_t value)
{
	char num[32];
	int n = snprintf(num, sizeof num, "%" PRId64, value);

	auth_jraw(b, b->len > 1 ? ",\"" : "\"", b->len > 1 ? 2 : 1);
	auth_jraw(b, name, strlen(name));
	auth_jraw(b, "\":", 2);
	auth_jraw(b, num, (size_t)n);
}

/* ---- SHA-256 ---- */

/*
 * EVP_sha256() is a legacy handle that OpenSSL 3 resolves to a provider by name on
 * every EVP_Digest call, which costs more than hashing an API key. Fetching once makes
 * it a constant for the life of the process (never freed, never changed).
 */
static pthread_once_t auth_sha256_once = PTHREAD_ONCE_INIT;
static EVP_MD *auth_sha256_md;

static void
auth_sha256_init(void)
{
	auth_sha256_md = EVP_MD_fetch(NULL, "SHA256", NULL);
	auth_ossl_clear();
}

static const EVP_MD *
auth_sha256_get(void)
{
	pthread_once(&auth_sha256_once, auth_sha256_init);
	return auth_sha256_md != NULL ? auth_sha256_md : EVP_sha256();
}

static int
auth_sha256(const void *data, size_t len, unsigned char md[32])
{
	if (EVP_Digest(data, len, md, NULL, auth_sha256_get(), NULL) != 1) {
		auth_ossl_clear();
		return -1;
	}
	return 0;
}

void
auth_sha256_hex(const void *data, size_t len, char out[65])
{
	unsigned char md[32];

	/* SHA-256 of memory cannot fail short of a broken library; be loud, not wrong */
	if (auth_sha256(data, len, md) != 0)
		fatalx("auth_sha256_hex: SHA-256 failed");
	auth_hex(md, sizeof md, out);
}

/* ---- names and errors ---- */

static const char *const auth_alg_names[] = {
    [AUTH_HS256] = "HS256",
    [AUTH_RS256] = "RS256",
    [AUTH_ES256] = "ES256",
};

const char *
auth_alg_name(enum auth_alg alg)
{
	return (unsigned)alg <= AUTH_ES256 ? auth_alg_names[alg] : "unknown";
}

int
auth_alg_parse(const char *name, enum auth_alg *out)
{
	for (unsigned i = 0; i <= AUTH_ES256; i++) {
		if (strcmp(name, auth_alg_names[i]) == 0) {
			*out = (enum auth_alg)i;
			return 0;
		}
	}
	return -1;
}

const char *
auth_error_code(int err)
{
	/* SPEC section 4: only expiry gets its own code; the rest reveal nothing */
	return err == AUTH_E_EXPIRED ? "token_expired" : "invalid_token";
}

const char *
auth_error_message(int err)
{
	switch (err) {
	case AUTH_OK:
		return "Token is valid";
	case AUTH_E_MALFORMED:
		return "Token is malformed";
	case AUTH_E_ALG:
		return "Token algorithm is not accepted";
	case AUTH_E_SIGNATURE:
		return "Token signature is invalid";
	case AUTH_E_EXPIRED:
		return "Token has expired";
	case AUTH_E_NOT_YET:
		return "Token is not valid yet";
	case AUTH_E_ISSUER:
		return "Token issuer is not accepted";
	case AUTH_E_CLAIMS:
		return "Token claims are invalid";
	default:
		return "Token is invalid";
	}
}

/* ---- keys ---- */

/* An encrypted key must not make a daemon wait for a passphrase on a terminal. */
static int
auth_no_passphrase(char *buf, int size, int rwflag, void *arg)
{
	return -1;
}

static EVP_PKEY *
auth_load_pem(const char *path, int private, char *err, size_t errlen)
{
	char ebuf[256];
	struct stat st;
	EVP_PKEY *k;
	FILE *f = fopen(path, "r");

	if (f == NULL) {
		if (err != NULL && errlen > 0)
			snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return NULL;
	}
	if (private && fstat(fileno(f), &st) == 0 && (st.st_mode & 077) != 0)
		log_warnx("jwt: private key %s is readable by group or others (mode %03o)", path,
		          (unsigned)(st.st_mode & 0777));
	k = private ? PEM_read_PrivateKey(f, NULL, auth_no_passphrase, NULL)
	            : PEM_read_PUBKEY(f, NULL, auth_no_passphrase, NULL);
	fclose(f);
	if (k == NULL && err != NULL && errlen > 0)
		snprintf(err, errlen, "%s: not a PEM %s key: %s", path,
		         private ? "private" : "public", auth_ossl_error(ebuf, sizeof ebuf));
	auth_ossl_clear();
	return k;
}

static int
auth_bn_b64(EVP_PKEY *k, const char *param, size_t pad, char *out, size_t outlen)
{
	BIGNUM *bn = NULL;
	unsigned char bin[1024];
	int n, rc = -1;

	if (EVP_PKEY_get_bn_param(k, param, &bn) != 1)
		goto done;
	n = pad > 0 ? (int)pad : BN_num_bytes(bn);
	if (n <= 0 || (size_t)n > sizeof bin || auth_b64_enclen((size_t)n) >= outlen)
		goto done;
	if (BN_bn2binpad(bn, bin, n) != n)
		goto done;
	auth_b64_encode(bin, (size_t)n, out);
	rc = 0;
done:
	BN_free(bn);
	auth_ossl_clear();
	return rc;
}

/*
 * kid is the RFC 7638 thumbprint: base64url SHA-256 of the JWK's required members in
 * lexicographic order with no whitespace. It changes exactly when the key does, and
 * anyone holding the JWK can recompute it.
 */
static int
auth_key_setup(struct auth_ctx *ctx, char *err, size_t errlen)
{
	char a[AUTH_JWK_FIELD_MAX], b[AUTH_JWK_FIELD_MAX], canon[2 * AUTH_JWK_FIELD_MAX + 64];
	unsigned char md[32];
	size_t jwklen = 2 * AUTH_JWK_FIELD_MAX + 256;
	int n;

	if (ctx->alg == AUTH_RS256) {
		int bits = EVP_PKEY_get_bits(ctx->pkey);

		if (!EVP_PKEY_is_a(ctx->pkey, "RSA")) {
			auth_errf(err, errlen, "jwt: alg=RS256 needs an RSA key", NULL);
			return -1;
		}
		if (bits < AUTH_RSA_MIN_BITS || bits > 8 * AUTH_SIG_MAX) {
			if (err != NULL && errlen > 0)
				snprintf(err, errlen, "jwt: RSA key of %d bits, %d to %d supported",
				         bits, AUTH_RSA_MIN_BITS, 8 * AUTH_SIG_MAX);
			return -1;
		}
		if (auth_bn_b64(ctx->pkey, OSSL_PKEY_PARAM_RSA_N, 0, a, sizeof a) != 0 ||
		    auth_bn_b64(ctx->pkey, OSSL_PKEY_PARAM_RSA_E, 0, b, sizeof b) != 0) {
			auth_errf(err, errlen, "jwt: cannot read the RSA key", NULL);
			return -1;
		}
		ctx->sig_len = (size_t)EVP_PKEY_get_size(ctx->pkey);
		n = snprintf(canon, sizeof canon, "{\"e\":\"%s\",\"kty\":\"RSA\",\"n\":\"%s\"}", b,
		             a);
	} else {
		char group[64];

		if (!EVP_PKEY_is_a(ctx->pkey, "EC") ||
		    EVP_PKEY_get_group_name(ctx->pkey, group, sizeof group, NULL) != 1 ||
		    (strcmp(group, "prime256v1") != 0 && strcmp(group, "P-256") != 0)) {
			auth_ossl_clear();
			auth_errf(err, errlen, "jwt: alg=ES256 needs an EC key on curve P-256",
			          NULL);
			return -1;
		}
		if (auth_bn_b64(ctx->pkey, OSSL_PKEY_PARAM_EC_PUB_X, AUTH_ES256_COORD, a,
		                sizeof a) != 0 ||
		    auth_bn_b64(ctx->pkey, OSSL_PKEY_PARAM_EC_PUB_Y, AUTH_ES256_COORD, b,
		                sizeof b) != 0) {
			auth_errf(err, errlen, "jwt: cannot read the EC key", NULL);
			return -1;
		}
		ctx->sig_len = 2 * AUTH_ES256_COORD;
		n = snprintf(canon, sizeof canon,
		             "{\"crv\":\"P-256\",\"kty\":\"EC\",\"x\":\"%s\",\"y\":\"%s\"}", a, b);
	}
	if (n < 0 || (size_t)n >= sizeof canon || auth_sha256(canon, (size_t)n, md) != 0) {
		auth_errf(err, errlen, "jwt: cannot compute the key id", NULL);
		return -1;
	}
	auth_b64_encode(md, sizeof md, ctx->kid);
	ctx->jwk = xmalloc(jwklen);
	if (ctx->alg == AUTH_RS256)
		snprintf(ctx->jwk, jwklen,
		         "{\"kty\":\"RSA\",\"use\":\"sig\",\"alg\":\"RS256\",\"kid\":\"%s\","
		         "\"n\":\"%s\",\"e\":\"%s\"}",
		         ctx->kid, a, b);
	else
		snprintf(ctx->jwk, jwklen,
		         "{\"kty\":\"EC\",\"use\":\"sig\",\"alg\":\"ES256\",\"kid\":\"%s\","
		         "\"crv\":\"P-256\",\"x\":\"%s\",\"y\":\"%s\"}",
		         ctx->kid, a, b);
	return 0;
}

static int
auth_keys_load(struct auth_ctx *ctx, const struct auth_config *cfg, char *err, size_t errlen)
{
	int has_priv = cfg->private_key_file != NULL && cfg->private_key_file[0] != '\0';
	int has_pub = cfg->public_key_file != NULL && cfg->public_key_file[0] != '\0';
	EVP_PKEY *pub = NULL;

	if (!has_priv && !has_pub) {
		if (err != NULL && errlen > 0)
			snprintf(err, errlen, "jwt: alg=%s needs private_key and/or public_key",
			         auth_alg_name(cfg->alg));
		return -1;
	}
	if (has_pub && (pub = auth_load_pem(cfg->public_key_file, 0, err, errlen)) == NULL)
		return -1;
	if (has_priv) {
		ctx->pkey = auth_load_pem(cfg->private_key_file, 1, err, errlen);
		if (ctx->pkey == NULL) {
			EVP_PKEY_free(pub);
			return -1;
		}
		ctx->can_sign = 1;
		/* a mismatched pair would sign tokens that the JWKS cannot verify */
		if (pub != NULL && EVP_PKEY_eq(ctx->pkey, pub) != 1) {
			auth_ossl_clear();
			EVP_PKEY_free(pub);
			if (err != NULL && errlen > 0)
				snprintf(err, errlen, "jwt: %s is not the public key of %s",
				         cfg->public_key_file, cfg->private_key_file);
			return -1;
		}
		EVP_PKEY_free(pub);
	} else {
		ctx->pkey = pub;
	}
	return auth_key_setup(ctx, err, errlen);
}

/* The two HMAC midstates: SHA-256 after (key ^ ipad) and after (key ^ opad). */
static int
auth_hmac_setup(struct auth_ctx *ctx, const unsigned char *secret, size_t len)
{
	unsigned char key[AUTH_SHA256_BLOCK] = {0}, pad[AUTH_SHA256_BLOCK];
	int ok;

	/* RFC 2104: keys longer than the block are hashed first */
	if (len > AUTH_SHA256_BLOCK) {
		if (auth_sha256(secret, len, key) != 0)
			return -1;
	} else {
		memcpy(key, secret, len);
	}
	ctx->sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
	ctx->hs_inner = EVP_MD_CTX_new();
	ctx->hs_outer = EVP_MD_CTX_new();
	ok = ctx->sha256 != NULL && ctx->hs_inner != NULL && ctx->hs_outer != NULL;
	for (size_t i = 0; i < sizeof pad; i++)
		pad[i] = key[i] ^ 0x36;
	ok = ok && EVP_DigestInit_ex(ctx->hs_inner, ctx->sha256, NULL) == 1 &&
	     EVP_DigestUpdate(ctx->hs_inner, pad, sizeof pad) == 1;
	for (size_t i = 0; i < sizeof pad; i++)
		pad[i] = key[i] ^ 0x5c;
	ok = ok && EVP_DigestInit_ex(ctx->hs_outer, ctx->sha256, NULL) == 1 &&
	     EVP_DigestUpdate(ctx->hs_outer, pad, sizeof pad) == 1;
	OPENSSL_cleanse(key, sizeof key);
	OPENSSL_cleanse(pad, sizeof pad);
	auth_ossl_clear();
	return ok ? 0 : -1;
}

static int
auth_hs256(const struct auth_ctx *ctx, const char *data, size_t len, unsigned char mac[32])
{
	unsigned char inner[AUTH_HMAC_LEN];
	EVP_MD_CTX *m = EVP_MD_CTX_new();
	int ok;

	ok = m != NULL && EVP_MD_CTX_copy_ex(m, ctx->hs_inner) == 1 &&
	     EVP_DigestUpdate(m, data, len) == 1 && EVP_DigestFinal_ex(m, inner, NULL) == 1 &&
	     EVP_MD_CTX_copy_ex(m, ctx->hs_outer) == 1 &&
	     EVP_DigestUpdate(m, inner, sizeof inner) == 1 && EVP_DigestFinal_ex(m, mac, NULL) == 1;
	EVP_MD_CTX_free(m);
	if (!ok)
		auth_ossl_clear();
	return ok ? 0 : -1;
}

struct auth_ctx *
auth_ctx_new(const struct auth_config *cfg, char *err, size_t errlen)
{
	struct auth_ctx *ctx;
	char hdr[160];
	int n;

	if (cfg->alg != AUTH_HS256 && cfg->alg != AUTH_RS256 && cfg->alg != AUTH_ES256) {
		auth_errf(err, errlen, "jwt: unknown alg", NULL);
		return NULL;
	}
	if (cfg->leeway < 0 || cfg->leeway > AUTH_LEEWAY_MAX || cfg->access_ttl < 0 ||
	    cfg->refresh_ttl < 0 || cfg->access_ttl > INT32_MAX || cfg->refresh_ttl > INT32_MAX) {
		auth_errf(err, errlen, "jwt: leeway or ttl out of range", NULL);
		return NULL;
	}
	if (cfg->issuer != NULL && strlen(cfg->issuer) >= sizeof ctx->issuer) {
		auth_errf(err, errlen, "jwt: issuer too long", NULL);
		return NULL;
	}
	if (cfg->alg == AUTH_HS256) {
		if (cfg->secret == NULL || cfg->secret_len < AUTH_SECRET_MIN) {
			if (err != NULL && errlen > 0)
				snprintf(err, errlen,
				         "jwt: HS256 secret of %zu bytes, at least %d needed",
				         cfg->secret != NULL ? cfg->secret_len : (size_t)0,
				         AUTH_SECRET_MIN);
			return NULL;
		}
		if (cfg->secret_len < AUTH_SECRET_GOOD)
			log_warnx("jwt: HS256 secret of %zu bytes; %d or more are recommended",
			          cfg->secret_len, AUTH_SECRET_GOOD);
	}

	ctx = xcalloc(1, sizeof *ctx);
	ctx->alg = cfg->alg;
	if (cfg->issuer != NULL)
		util_strlcpy(ctx->issuer, cfg->issuer, sizeof ctx->issuer);
	ctx->access_ttl = cfg->access_ttl;
	ctx->refresh_ttl = cfg->refresh_ttl;
	ctx->leeway = cfg->leeway;

	if (cfg->alg == AUTH_HS256) {
		if (auth_hmac_setup(ctx, cfg->secret, cfg->secret_len) != 0) {
			auth_errf(err, errlen, "jwt: cannot set up HMAC-SHA256", NULL);
			goto fail;
		}
		ctx->can_sign = 1;
		ctx->sig_len = AUTH_HMAC_LEN;
		n = snprintf(hdr, sizeof hdr, "{\"alg\":\"HS256\",\"typ\":\"JWT\"}");
	} else {
		if (auth_keys_load(ctx, cfg, err, errlen) != 0)
			goto fail;
		n = snprintf(hdr, sizeof hdr, "{\"alg\":\"%s\",\"typ\":\"JWT\",\"kid\":\"%s\"}",
		             auth_alg_name(cfg->alg), ctx->kid);
	}
	if (n < 0 || (size_t)n >= sizeof hdr || auth_b64_enclen((size_t)n) >= sizeof ctx->hdr_b64) {
		auth_errf(err, errlen, "jwt: header too long", NULL);
		goto fail;
	}
	ctx->hdr_b64_len = auth_b64_encode((const unsigned char *)hdr, (size_t)n, ctx->hdr_b64);
	return ctx;
fail:
	auth_ctx_free(ctx);
	return NULL;
}

void
auth_ctx_free(struct auth_ctx *ctx)
{
	if (ctx == NULL)
		return;
	EVP_MD_CTX_free(ctx->hs_inner);
	EVP_MD_CTX_free(ctx->hs_outer);
	EVP_MD_free(ctx->sha256);
	EVP_PKEY_free(ctx->pkey);
	free(ctx->jwk);
	OPENSSL_cleanse(ctx, sizeof *ctx);
	free(ctx);
}

int
auth_ctx_can_sign(const struct auth_ctx *ctx)
{
	return ctx->can_sign;
}

/* ---- signing ---- */

static int
auth_str_ok(const char *s, size_t size, int required)
{
	size_t n = strnlen(s, size);

	return n < size && (!required || n > 0) && auth_utf8_valid(s);
}

int
auth_claims_init(const struct auth_ctx *ctx, struct auth_claims *c, const char *typ,
                 const char *sub, const char *tier, int64_t now)
{
	unsigned char rnd[AUTH_JTI_BYTES];
	int refresh;

	memset(c, 0, sizeof *c);
	if (typ == NULL || sub == NULL)
		return -1;
	refresh = strcmp(typ, "refresh") == 0;
	if (!refresh && strcmp(typ, "access") != 0)
		return -1;
	if (util_strlcpy(c->sub, sub, sizeof c->sub) >= sizeof c->sub ||
	    (tier != NULL && util_strlcpy(c->tier, tier, sizeof c->tier) >= sizeof c->tier))
		return -1;
	util_strlcpy(c->typ, typ, sizeof c->typ);
	util_strlcpy(c->iss, ctx->issuer, sizeof c->iss);
	c->iat = now;
	c->nbf = now;
	c->exp = now + (refresh ? ctx->refresh_ttl : ctx->access_ttl);
	if (RAND_bytes(rnd, sizeof rnd) != 1) {
		auth_ossl_clear();
		return -1;
	}
	auth_hex(rnd, sizeof rnd, c->jti);
	if (refresh)
		util_strlcpy(c->fam, c->jti, sizeof c->fam);
	return 0;
}

static int
auth_sign_pkey(const struct auth_ctx *ctx, const char *data, size_t len, unsigned char *sig,
               size_t *siglen)
{
	unsigned char der[AUTH_SIG_MAX];
	size_t derlen = sizeof der;
	EVP_MD_CTX *m = EVP_MD_CTX_new();
	ECDSA_SIG *es = NULL;
	int ok;

	ok = m != NULL &&
	     EVP_DigestSignInit_ex(m, NULL, "SHA256", NULL, NULL, ctx->pkey, NULL) == 1 &&
	     EVP_DigestSign(m, der, &derlen, (const unsigned char *)data, len) == 1;
	EVP_MD_CTX_free(m);
	if (ok && ctx->alg == AUTH_RS256) {
		ok = derlen == ctx->sig_len;
		memcpy(sig, der, derlen);
		*siglen = derlen;
	} else if (ok) {
		/* JWS wants ES256 as the two 32-byte big-endian integers r || s, not DER */
		const unsigned char *p = der;
		const BIGNUM *r, *s;

		es = d2i_ECDSA_SIG(NULL, &p, (long)derlen);
		ok = es != NULL;
		if (ok) {
			ECDSA_SIG_get0(es, &r, &s);
			ok = BN_bn2binpad(r, sig, AUTH_ES256_COORD) == AUTH_ES256_COORD &&
			     BN_bn2binpad(s, sig + AUTH_ES256_COORD, AUTH_ES256_COORD) ==
			         AUTH_ES256_COORD;
		}
		*siglen = 2 * AUTH_ES256_COORD;
	}
	ECDSA_SIG_free(es);
	if (!ok)
		auth_ossl_clear();
	return ok ? 0 : -1;
}

int
auth_jwt_sign(const struct auth_ctx *ctx, const struct auth_claims *in, char *out, size_t outlen)
{
	char json[AUTH_CLAIMS_JSON_MAX];
	unsigned char sig[AUTH_SIG_MAX];
	struct auth_jbuf b = {json, 0, sizeof json, 0};
	const char *iss = ctx->issuer[0] != '\0' ? ctx->issuer : in->iss;
	size_t siglen, o;

	if (!ctx->can_sign || outlen == 0)
		return -1;
	if (!auth_str_ok(in->sub, sizeof in->sub, 1) || !auth_str_ok(in->jti, sizeof in->jti, 1) ||
	    !auth_str_ok(in->typ, sizeof in->typ, 1) || !auth_str_ok(in->iss, sizeof in->iss, 0) ||
	    !auth_str_ok(in->tier, sizeof in->tier, 0) ||
	    !auth_str_ok(in->role, sizeof in->role, 0) || !auth_str_ok(in->fam, sizeof in->fam, 0))
		return -1;
	if (!auth_utf8_valid(iss))
		return -1;

	/*
	 * Custom claims first, reserved ones last, and auth_jwt_verify refuses duplicate
	 * names: even a reader that lets the last duplicate win sees our sub/exp/typ.
	 */
	auth_jraw(&b, "{", 1);
	if (in->tier[0] != '\0')
		auth_jmember_str(&b, "tier", in->tier);
	if (in->role[0] != '\0')
		auth_jmember_str(&b, "role", in->role);
	if (in->fam[0] != '\0')
		auth_jmember_str(&b, "fam", in->fam);
	auth_jmember_str(&b, "sub", in->sub);
	if (iss[0] != '\0')
		auth_jmember_str(&b, "iss", iss);
	auth_jmember_int(&b, "iat", in->iat);
	auth_jmember_int(&b, "nbf", in->nbf);
	auth_jmember_int(&b, "exp", in->exp);
	auth_jmember_str(&b, "jti", in->jti);
	auth_jmember_str(&b, "typ", in->typ);
	auth_jraw(&b, "}", 1);
	if (b.overflow)
		return -1;

	o = ctx->hdr_b64_len + 1 + auth_b64_enclen(b.len) + 1 + auth_b64_enclen(ctx->sig_len);
	if (o > AUTH_TOKEN_MAX || o >= outlen)
		return -1;
	memcpy(out, ctx->hdr_b64, ctx->hdr_b64_len);
	o = ctx->hdr_b64_len;
	out[o++] = '.';
	o += auth_b64_encode((const unsigned char *)json, b.len, out + o);
	if (ctx->alg == AUTH_HS256) {
		siglen = AUTH_HMAC_LEN;
		if (auth_hs256(ctx, out, o, sig) != 0)
			return -1;
	} else if (auth_sign_pkey(ctx, out, o, sig, &siglen) != 0) {
		return -1;
	}
	out[o++] = '.';
	o += auth_b64_encode(sig, siglen, out + o);
	OPENSSL_cleanse(json, b.len);
	return (int)o;
}

/* ---- verification ---- */

/* The header of a token that is not byte-for-byte ours: decode, parse, judge. */
static int
auth_header_check(const struct auth_ctx *ctx, const char *b64, size_t len)
{
	char buf[AUTH_HEADER_MAX + 1];
	ssize_t n = auth_b64_decode(b64, len, (unsigned char *)buf, AUTH_HEADER_MAX);
	const cJSON *alg, *typ;
	cJSON *h;
	int rc = AUTH_OK;

	if (n <= 0 || memchr(buf, '\0', (size_t)n) != NULL)
		return AUTH_E_MALFORMED;
	buf[n] = '\0';
	h = cJSON_ParseWithOpts(buf, NULL, 1);
	if (!cJSON_IsObject(h)) {
		cJSON_Delete(h);
		return AUTH_E_MALFORMED;
	}
	alg = cJSON_GetObjectItemCaseSensitive(h, "alg");
	typ = cJSON_GetObjectItemCaseSensitive(h, "typ");
	if (!cJSON_IsString(alg))
		rc = AUTH_E_MALFORMED;
	else if (strcmp(alg->valuestring, auth_alg_name(ctx->alg)) != 0)
		rc = AUTH_E_ALG; /* the token's alg is a claim to refuse, never a choice */
	else if (typ != NULL && (!cJSON_IsString(typ) || strcasecmp(typ->valuestring, "JWT") != 0))
		rc = AUTH_E_MALFORMED;
	else if (cJSON_GetObjectItemCaseSensitive(h, "crit") != NULL)
		rc = AUTH_E_MALFORMED; /* RFC 7515 4.1.11: we understand no extensions */
	/* jwk, jku, x5u, x5c and kid are ignored: keys come from our config only */
	cJSON_Delete(h);
	return rc;
}

static int
auth_sig_check(const struct auth_ctx *ctx, const char *data, size_t len, const char *b64,
               size_t b64len)
{
	unsigned char sig[AUTH_SIG_MAX], mac[AUTH_HMAC_LEN];
	ssize_t n;

	if (b64len != auth_b64_enclen(ctx->sig_len)) {
		/* the wrong size is a bad signature; stray characters make it malformed */
		for (size_t i = 0; i < b64len; i++) {
			if (auth_b64_value[(unsigned char)b64[i]] < 0)
				return AUTH_E_MALFORMED;
		}
		return AUTH_E_SIGNATURE;
	}
	n = auth_b64_decode(b64, b64len, sig, sizeof sig);
	if (n < 0)
		return AUTH_E_MALFORMED;
	if (ctx->alg == AUTH_HS256) {
		if (auth_hs256(ctx, data, len, mac) != 0)
			return AUTH_E_SIGNATURE;
		return CRYPTO_memcmp(mac, sig, AUTH_HMAC_LEN) == 0 ? AUTH_OK : AUTH_E_SIGNATURE;
	} else {
		unsigned char der[AUTH_SIG_MAX];
		const unsigned char *vsig = sig;
		size_t vlen = (size_t)n;
		EVP_MD_CTX *m;
		int ok;

		if (ctx->alg == AUTH_ES256) {
			ECDSA_SIG *es = ECDSA_SIG_new();
			BIGNUM *r = BN_bin2bn(sig, AUTH_ES256_COORD, NULL);
			BIGNUM *s = BN_bin2bn(sig + AUTH_ES256_COORD, AUTH_ES256_COORD, NULL);
			unsigned char *p = der;
			int dl;

			if (es == NULL || r == NULL || s == NULL || ECDSA_SIG_set0(es, r, s) != 1) {
				ECDSA_SIG_free(es);
				BN_free(r);
				BN_free(s);
				auth_ossl_clear();
				return AUTH_E_SIGNATURE;
			}
			/* i2d of two <= 32-byte integers is at most 72 bytes */
			dl = i2d_ECDSA_SIG(es, &p);
			ECDSA_SIG_free(es);
			if (dl <= 0) {
				auth_ossl_clear();
				return AUTH_E_SIGNATURE;
			}
			vsig = der;
			vlen = (size_t)dl;
		}
		m = EVP_MD_CTX_new();
		ok = m != NULL &&
		     EVP_DigestVerifyInit_ex(m, NULL, "SHA256", NULL, NULL, ctx->pkey, NULL) == 1 &&
		     EVP_DigestVerify(m, vsig, vlen, (const unsigned char *)data, len) == 1;
		EVP_MD_CTX_free(m);
		if (!ok)
			auth_ossl_clear();
		return ok ? AUTH_OK : AUTH_E_SIGNATURE;
	}
}

/*
 * Claims: a strict JSON reader for payloads that have passed the signature check.
 * cJSON would do, but it allocates a node per member and parses numbers with strtod;
 * this reader allocates nothing, writes the claims we know straight into the struct
 * and skips (while validating) the rest, cutting an uncached HS256 verification from
 * ~3.3 us to ~1.5 us. It is also stricter than cJSON where that matters to us:
 * integers must be written as integers, strings must be UTF-8 without \u0000, a name
 * is compared after unescaping (so "s\u0075b" is a duplicate "sub"), nesting is bounded.
 * Only signed payloads reach it; the fuzzer checks it against cJSON.
 */

#define AUTH_JSON_DEPTH 32

struct auth_json {
	const char *p, *end;
};

/* 1 for the bytes a JSON string holds as themselves: printable ASCII but '"' and '\\' */
/* clang-format off */
static const uint8_t auth_json_plain[256] = {
	0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
	1, 1, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
	1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1,
	1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
	0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
	0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
	0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
	0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
};
/* clang-format on */

static void
auth_json_ws(struct auth_json *j)
{
	while (j->p < j->end && (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r'))
		j->p++;
}

static int
auth_json_hex4(const char *p, const char *end, uint32_t *out)
{
	uint32_t v = 0;

	if (end - p < 4)
		return -1;
	for (int i = 0; i < 4; i++) {
		char c = p[i];

		if (c >= '0' && c <= '9')
			v = v << 4 | (uint32_t)(c - '0');
		else if (c >= 'a' && c <= 'f')
			v = v << 4 | (uint32_t)(c - 'a' + 10);
		else if (c >= 'A' && c <= 'F')
			v = v << 4 | (uint32_t)(c - 'A' + 10);
		else
			return -1;
	}
	*out = v;
	return 0;
}

static size_t
auth_utf8_put(uint32_t cp, char *buf)
{
	if (cp < 0x80) {
		buf[0] = (char)cp;
		return 1;
	}
	if (cp < 0x800) {
		buf[0] = (char)(0xc0 | cp >> 6);
		buf[1] = (char)(0x80 | (cp & 0x3f));
		return 2;
	}
	if (cp < 0x10000) {
		buf[0] = (char)(0xe0 | cp >> 12);
		buf[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
		buf[2] = (char)(0x80 | (cp & 0x3f));
		return 3;
	}
	buf[0] = (char)(0xf0 | cp >> 18);
	buf[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
	buf[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
	buf[3] = (char)(0x80 | (cp & 0x3f));
	return 4;
}

/* One escape after the backslash at p[0]; its UTF-8 into buf. Bytes consumed, or 0. */
static size_t
auth_json_escape(const char *p, const char *end, char *buf, size_t *blen)
{
	uint32_t cp, lo;

	if (end - p < 2)
		return 0;
	switch (p[1]) {
	case '"':
	case '\\':
	case '/':
		buf[0] = p[1];
		*blen = 1;
		return 2;
	case 'b':
		buf[0] = '\b';
		*blen = 1;
		return 2;
	case 'f':
		buf[0] = '\f';
		*blen = 1;
		return 2;
	case 'n':
		buf[0] = '\n';
		*blen = 1;
		return 2;
	case 'r':
		buf[0] = '\r';
		*blen = 1;
		return 2;
	case 't':
		buf[0] = '\t';
		*blen = 1;
		return 2;
	case 'u':
		break;
	default:
		return 0;
	}
	if (auth_json_hex4(p + 2, end, &cp) != 0 || cp == 0 || (cp >= 0xdc00 && cp <= 0xdfff))
		return 0; /* a C string cannot hold U+0000; a lone low surrogate is no text */
	if (cp >= 0xd800 && cp <= 0xdbff) {
		if (end - p < 12 || p[6] != '\\' || p[7] != 'u' ||
		    auth_json_hex4(p + 8, end, &lo) != 0 || lo < 0xdc00 || lo > 0xdfff)
			return 0;
		*blen = auth_utf8_put(0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00), buf);
		return 12;
	}
	*blen = auth_utf8_put(cp, buf);
	return 6;
}

/*
 * The string whose opening quote is at j->p, unescaped into dst (size bytes, always
 * NUL-terminated, "" when it does not fit) unless dst is NULL. 0 read, 1 read but too
 * long for dst, -1 not valid JSON (or not UTF-8, or \u0000).
 */
static int
auth_json_string(struct auth_json *j, char *dst, size_t size)
{
	size_t o = 0;
	int toolong = 0;

	j->p++;
	while (j->p < j->end) {
		unsigned char c = (unsigned char)*j->p;
		char buf[4];
		size_t blen, used;
		const char *run = j->p;

		/* plain printable ASCII, the whole of our own claims: copied as one run */
		while (j->p < j->end && auth_json_plain[(unsigned char)*j->p])
			j->p++;
		if (j->p > run) {
			size_t rl = (size_t)(j->p - run);

			if (dst != NULL && !toolong) {
				if (rl >= size - o) {
					toolong = 1;
				} else {
					memcpy(dst + o, run, rl);
					o += rl;
				}
			}
			continue;
		}
		if (c == '"') {
			j->p++;
			if (dst != NULL)
				dst[toolong ? 0 : o] = '\0';
			return toolong;
		}
		if (c < 0x20)
			return -1;
		if (c == '\\') {
			used = auth_json_escape(j->p, j->end, buf, &blen);
		} else if (c < 0x80) {
			buf[0] = (char)c;
			used = blen = 1;
		} else {
			used = blen =
			    auth_utf8_seq((const unsigned char *)j->p, (size_t)(j->end - j->p));
			if (used > 0)
				memcpy(buf, j->p, used);
		}
		if (used == 0)
			return -1;
		j->p += used;
		if (dst != NULL && !toolong) {
			if (blen >= size - o)
				toolong = 1;
			else {
				memcpy(dst + o, buf, blen);
				o += blen;
			}
		}
	}
	return -1;
}

/*
 * A number at j->p (RFC 8259 grammar). *val is set and 1 returned when it is written
 * as an integer (no fraction, no exponent) of magnitude below 2^53; 0 for any other
 * valid number; -1 for invalid text.
 */
static int
auth_json_number(struct auth_json *j, int64_t *val)
{
	const uint64_t limit = 1ULL << 53;
	const char *p = j->p, *end = j->end;
	uint64_t v = 0;
	int neg = 0, integer = 1;

	if (p < end && *p == '-') {
		neg = 1;
		p++;
	}
	if (p >= end || *p < '0' || *p > '9')
		return -1;
	if (*p == '0') {
		p++;
	} else {
		for (; p < end && *p >= '0' && *p <= '9'; p++) {
			if (v <= limit)
				v = v * 10 + (uint64_t)(*p - '0');
		}
	}
	if (p < end && *p == '.') {
		integer = 0;
		if (++p >= end || *p < '0' || *p > '9')
			return -1;
		while (p < end && *p >= '0' && *p <= '9')
			p++;
	}
	if (p < end && (*p == 'e' || *p == 'E')) {
		integer = 0;
		if (++p < end && (*p == '+' || *p == '-'))
			p++;
		if (p >= end || *p < '0' || *p > '9')
			return -1;
		while (p < end && *p >= '0' && *p <= '9')
			p++;
	}
	j->p = p;
	if (!integer || v >= limit)
		return 0;
	*val = neg ? -(int64_t)v : (int64_t)v;
	return 1;
}

static int
auth_json_literal(struct auth_json *j, const char *lit, size_t n)
{
	if ((size_t)(j->end - j->p) < n || memcmp(j->p, lit, n) != 0)
		return -1;
	j->p += n;
	return 0;
}

/* Skips any one value at j->p, validating it. 0, or -1 when it is not valid JSON. */
static int
auth_json_skip(struct auth_json *j, int depth)
{
	int64_t ignored;
	char close;

	if (j->p >= j->end)
		return -1;
	switch (*j->p) {
	case '"':
		return auth_json_string(j, NULL, 0) < 0 ? -1 : 0;
	case 't':
		return auth_json_literal(j, "true", 4);
	case 'f':
		return auth_json_literal(j, "false", 5);
	case 'n':
		return auth_json_literal(j, "null", 4);
	case '{':
	case '[':
		break;
	default:
		return auth_json_number(j, &ignored) < 0 ? -1 : 0;
	}
	if (depth >= AUTH_JSON_DEPTH)
		return -1;
	close = *j->p == '{' ? '}' : ']';
	j->p++;
	auth_json_ws(j);
	if (j->p < j->end && *j->p == close) {
		j->p++;
		return 0;
	}
	for (;;) {
		if (close == '}') {
			if (j->p >= j->end || *j->p != '"' || auth_json_string(j, NULL, 0) < 0)
				return -1;
			auth_json_ws(j);
			if (j->p >= j->end || *j->p != ':')
				return -1;
			j->p++;
			auth_json_ws(j);
		}
		if (auth_json_skip(j, depth + 1) != 0)
			return -1;
		auth_json_ws(j);
		if (j->p >= j->end)
			return -1;
		if (*j->p == close) {
			j->p++;
			return 0;
		}
		if (*j->p != ',')
			return -1;
		j->p++;
		auth_json_ws(j);
	}
}

/* A string claim's value into dst. -1 invalid JSON, 1 wrong type or too long, 0 ok. */
static int
auth_claim_str(struct auth_json *j, char *dst, size_t size)
{
	if (j->p < j->end && *j->p == '"')
		return auth_json_string(j, dst, size);
	return auth_json_skip(j, 1) != 0 ? -1 : 1;
}

/* A NumericDate claim: -1 invalid JSON, 1 not an integer below 2^53, 0 ok. */
static int
auth_claim_int(struct auth_json *j, int64_t *dst)
{
	int r;

	if (j->p < j->end && (*j->p == '-' || (*j->p >= '0' && *j->p <= '9'))) {
		r = auth_json_number(j, dst);
		return r < 0 ? -1 : r == 1 ? 0 : 1;
	}
	return auth_json_skip(j, 1) != 0 ? -1 : 1;
}

static unsigned
auth_claim_bit(const char *name)
{
	/* a switch on the first letter: this runs for every member of every payload */
	switch (name[0]) {
	case 's':
		return strcmp(name, "sub") == 0 ? AUTH_C_SUB : 0;
	case 'i':
		return strcmp(name, "iss") == 0   ? AUTH_C_ISS
		       : strcmp(name, "iat") == 0 ? AUTH_C_IAT
		                                  : 0;
	case 't':
		return strcmp(name, "typ") == 0    ? AUTH_C_TYP
		       : strcmp(name, "tier") == 0 ? AUTH_C_TIER
		                                   : 0;
	case 'r':
		return strcmp(name, "role") == 0 ? AUTH_C_ROLE : 0;
	case 'j':
		return strcmp(name, "jti") == 0 ? AUTH_C_JTI : 0;
	case 'f':
		return strcmp(name, "fam") == 0 ? AUTH_C_FAM : 0;
	case 'n':
		return strcmp(name, "nbf") == 0 ? AUTH_C_NBF : 0;
	case 'e':
		return strcmp(name, "exp") == 0 ? AUTH_C_EXP : 0;
	default:
		return 0;
	}
}

static int
auth_claims_parse(const char *json, size_t len, struct auth_claims *out)
{
	const unsigned required = AUTH_C_SUB | AUTH_C_TYP | AUTH_C_JTI | AUTH_C_EXP;
	struct auth_json j = {json, json + len};
	unsigned seen = 0;
	int bad = 0;

	auth_json_ws(&j);
	if (j.p >= j.end || *j.p != '{')
		return AUTH_E_MALFORMED;
	j.p++;
	auth_json_ws(&j);
	if (j.p < j.end && *j.p == '}')
		j.p++;
	else
		for (;;) {
			char name[8];
			unsigned bit;
			int r;

			if (j.p >= j.end || *j.p != '"')
				return AUTH_E_MALFORMED;
			r = auth_json_string(&j, name, sizeof name);
			if (r < 0)
				return AUTH_E_MALFORMED;
			bit = r == 0 ? auth_claim_bit(name) : 0;
			auth_json_ws(&j);
			if (j.p >= j.end || *j.p != ':')
				return AUTH_E_MALFORMED;
			j.p++;
			auth_json_ws(&j);
			/* a duplicate: which one would another reader believe? */
			if (seen & bit)
				bad = 1;
			seen |= bit;
			switch (bit) {
			case 0:
				r = auth_json_skip(&j,
				                   1); /* claims we do not read cannot mislead us */
				break;
			case AUTH_C_SUB:
				r = auth_claim_str(&j, out->sub, sizeof out->sub);
				break;
			case AUTH_C_ISS:
				r = auth_claim_str(&j, out->iss, sizeof out->iss);
				break;
			case AUTH_C_TYP:
				r = auth_claim_str(&j, out->typ, sizeof out->typ);
				break;
			case AUTH_C_TIER:
				r = auth_claim_str(&j, out->tier, sizeof out->tier);
				break;
			case AUTH_C_ROLE:
				r = auth_claim_str(&j, out->role, sizeof out->role);
				break;
			case AUTH_C_JTI:
				r = auth_claim_str(&j, out->jti, sizeof out->jti);
				break;
			case AUTH_C_FAM:
				r = auth_claim_str(&j, out->fam, sizeof out->fam);
				break;
			case AUTH_C_IAT:
				r = auth_claim_int(&j, &out->iat);
				break;
			case AUTH_C_NBF:
				r = auth_claim_int(&j, &out->nbf);
				break;
			default:
				r = auth_claim_int(&j, &out->exp);
				break;
			}
			if (r < 0)
				return AUTH_E_MALFORMED;
			bad |= r;
			auth_json_ws(&j);
			if (j.p >= j.end)
				return AUTH_E_MALFORMED;
			if (*j.p == '}') {
				j.p++;
				break;
			}
			if (*j.p != ',')
				return AUTH_E_MALFORMED;
			j.p++;
			auth_json_ws(&j);
		}
	auth_json_ws(&j);
	if (j.p != j.end)
		return AUTH_E_MALFORMED;
	if (bad || (seen & required) != required || out->sub[0] == '\0' || out->jti[0] == '\0' ||
	    out->typ[0] == '\0')
		return AUTH_E_CLAIMS;
	return AUTH_OK;
}

static int
auth_verify(const struct auth_ctx *ctx, const char *tok, size_t len, int64_t now,
            struct auth_claims *out)
{
	unsigned char payload[AUTH_PAYLOAD_MAX];
	const char *dot1, *dot2;
	size_t hlen, plen;
	ssize_t n;
	int rc;

	if (len == 0 || len > AUTH_TOKEN_MAX)
		return AUTH_E_MALFORMED;
	/*
	 * Only the dots are located here; every other byte is checked against the
	 * base64url alphabet by the decoder of its segment (or by the comparison with
	 * our own header), which is one pass instead of two.
	 */
	dot1 = memchr(tok, '.', len);
	if (dot1 == NULL)
		return AUTH_E_MALFORMED;
	dot2 = memchr(dot1 + 1, '.', len - (size_t)(dot1 - tok) - 1);
	if (dot2 == NULL || memchr(dot2 + 1, '.', len - (size_t)(dot2 - tok) - 1) != NULL)
		return AUTH_E_MALFORMED; /* JWE (5 parts) and junk */
	hlen = (size_t)(dot1 - tok);
	plen = (size_t)(dot2 - dot1 - 1);
	if (hlen == 0 || plen == 0)
		return AUTH_E_MALFORMED;

	if (hlen != ctx->hdr_b64_len || memcmp(tok, ctx->hdr_b64, hlen) != 0) {
		rc = auth_header_check(ctx, tok, hlen);
		if (rc != AUTH_OK)
			return rc;
	}
	n = auth_b64_decode(dot1 + 1, plen, payload, sizeof payload);
	if (n <= 0)
		return AUTH_E_MALFORMED;
	rc = auth_sig_check(ctx, tok, (size_t)(dot2 - tok), dot2 + 1,
	                    len - (size_t)(dot2 - tok) - 1);
	if (rc != AUTH_OK)
		return rc;

	rc = auth_claims_parse((const char *)payload, (size_t)n, out);
	if (rc != AUTH_OK)
		return rc;
	if (ctx->issuer[0] != '\0' && strcmp(out->iss, ctx->issuer) != 0)
		return AUTH_E_ISSUER;
	/* |exp|, |nbf| < 2^53 and leeway <= 1 day: these sums cannot overflow */
	if (out->exp + ctx->leeway < now)
		return AUTH_E_EXPIRED;
	if (out->nbf - ctx->leeway > now)
		return AUTH_E_NOT_YET;
	return AUTH_OK;
}

int
auth_jwt_verify(const struct auth_ctx *ctx, const char *token, size_t len, int64_t now,
                struct auth_claims *out)
{
	int rc;

	memset(out, 0, sizeof *out);
	rc = auth_verify(ctx, token, len, now, out);
	if (rc != AUTH_OK)
		memset(out, 0, sizeof *out); /* a refused token's claims must not be used */
	return rc;
}

/* ---- JWKS ---- */

int
auth_jwks_json(const struct auth_ctx *ctx, char *out, size_t outlen)
{
	int n;

	if (ctx->jwk == NULL)
		n = snprintf(out, outlen, "{\"keys\":[]}");
	else
		n = snprintf(out, outlen, "{\"keys\":[%s]}", ctx->jwk);
	if (n < 0 || (size_t)n >= outlen) {
		if (outlen > 0)
			out[0] = '\0';
		return -1;
	}
	return n;
}

/* ---- verified-token cache ---- */

/*
 * Layout: shards chosen by the top bits of a seeded 64-bit hash, each a fixed array
 * of entries with chained buckets (int32 indices, -1 ends a chain) and a free list,
 * under one mutex. The hash only narrows the search: a hit also needs equal length and
 * equal bytes, so a collision (or the forced hash of the tests) can at worst cost a
 * miss, never authenticate a token that was not verified. The bytes are compared in
 * constant time (CRYPTO_memcmp) like every other secret: the keyed hash already keeps
 * an attacker from aiming at a chosen entry, and a few nanoseconds on a hit buy not
 * having to rely on that.
 *
 * Eviction is CLOCK: a hit sets the entry's reference bit, the hand clears bits and
 * takes the first entry without one. Expired entries are never hit, so they lose
 * their bit and go first, without put needing the time.
 *
 * Forgotten jtis go into a direct-mapped table of atomic hashes that put consults
 * under its shard lock, and forget writes before it sweeps the shards. Either put's
 * lookup sees the mark (and refuses), or put released the shard lock before forget
 * took it (and the sweep removes what put inserted). A later forget whose jti maps to
 * the same slot overwrites the mark; a put would need to have stalled between its
 * caller's revocation check and its own lock through that whole interval.
 */

#define AUTH_CACHE_SHARDS_MAX 64
#define AUTH_CACHE_SHARD_MIN 8 /* entries per shard before splitting further */
#define AUTH_CACHE_TOMBS 16384 /* power of two */
#define AUTH_CACHE_LINE 64

struct auth_cache_entry {
	uint64_t hash;
	uint64_t jti_hash;
	char *token; /* NULL: the entry is free */
	uint32_t len;
	int32_t next; /* bucket chain when used, free list when not */
	uint8_t ref;
	struct auth_claims claims;
};

struct auth_cache_shard {
	alignas(AUTH_CACHE_LINE) pthread_mutex_t lock;
	struct auth_cache_entry *e;
	int32_t *bucket;
	uint32_t nslots, bmask, used, hand;
	int32_t free_head;
};

struct auth_cache {
	struct auth_cache_shard *shards;
	uint32_t nshards;
	unsigned shard_shift;
	uint64_t seed;
	_Atomic int force_hash;
	_Atomic uint64_t forced;
	_Atomic uint64_t *tombs;
};

static inline uint64_t
auth_mix(uint64_t h)
{
	h ^= h >> 32;
	h *= 0xd6e8feb86659fd93ULL;
	h ^= h >> 32;
	return h;
}

/*
 * Four independent multiply-xorshift lanes over 8-byte words: about 0.1 ns a byte for
 * a 300-byte token (util_hash64's byte-wise FNV is ~1 ns a byte) and well mixed for a
 * table index. Not a MAC: the full compare on a hit is what makes the cache safe.
 */
static uint64_t
auth_hash(uint64_t seed, const void *data, size_t len)
{
	const unsigned char *p = data;
	const uint64_t k = 0x9e3779b97f4a7c15ULL;
	uint64_t a = seed, b = seed ^ 0x6a09e667f3bcc909ULL, c = seed ^ 0xbb67ae8584caa73bULL,
	         d = seed ^ (uint64_t)len;
	uint64_t w[4], t = 0;

	for (; len >= 32; p += 32, len -= 32) {
		memcpy(w, p, 32);
		a = (a ^ w[0]) * k;
		b = (b ^ w[1]) * k;
		c = (c ^ w[2]) * k;
		d = (d ^ w[3]) * k;
		a ^= a >> 29;
		b ^= b >> 29;
		c ^= c >> 29;
		d ^= d >> 29;
	}
	for (; len >= 8; p += 8, len -= 8) {
		memcpy(w, p, 8);
		a = ((a ^ w[0]) * k);
		a ^= a >> 29;
	}
	memcpy(&t, p, len);
	a = (a ^ t ^ (uint64_t)len << 56) * k;
	return auth_mix(a ^ (b * 3) ^ (c * 5) ^ (d * 7));
}

static uint64_t
auth_cache_hash(struct auth_cache *c, const char *token, size_t len)
{
	if (atomic_load_explicit(&c->force_hash, memory_order_relaxed))
		return atomic_load_explicit(&c->forced, memory_order_relaxed);
	return auth_hash(c->seed, token, len);
}

static uint64_t
auth_cache_jti_hash(const struct auth_cache *c, const char *jti)
{
	uint64_t h = auth_hash(c->seed ^ 0x243f6a8885a308d3ULL, jti, strlen(jti));

	return h != 0 ? h : 1; /* 0 marks an empty tombstone slot */
}

struct auth_cache *
auth_cache_new(size_t capacity)
{
	struct auth_cache *c = xcalloc(1, sizeof *c);
	uint32_t nshards = 1, per;

	if (capacity == 0)
		capacity = 1;
	if (capacity > INT32_MAX)
		capacity = INT32_MAX;
	while (nshards < AUTH_CACHE_SHARDS_MAX &&
	       (size_t)nshards * 2 * AUTH_CACHE_SHARD_MIN <= capacity)
		nshards *= 2;
	per = (uint32_t)(capacity / nshards);
	c->nshards = nshards;
	c->shard_shift = 64;
	for (uint32_t s = nshards; s > 1; s >>= 1)
		c->shard_shift--;
	if (RAND_bytes((unsigned char *)&c->seed, sizeof c->seed) != 1) {
		/* a predictable seed only makes chains attackable, never hits forgeable */
		auth_ossl_clear();
		c->seed = util_now_us() ^ (uint64_t)(uintptr_t)c;
	}
	c->tombs = xcalloc(AUTH_CACHE_TOMBS, sizeof *c->tombs);
	/* malloc only promises 16-byte alignment; the shards' alignas needs 64 */
	c->shards = aligned_alloc(AUTH_CACHE_LINE, nshards * sizeof *c->shards);
	if (c->shards == NULL)
		fatal("auth_cache_new");
	memset(c->shards, 0, nshards * sizeof *c->shards);
	for (uint32_t i = 0; i < nshards; i++) {
		struct auth_cache_shard *s = &c->shards[i];
		uint32_t nb = 1;

		while (nb < per)
			nb *= 2;
		pthread_mutex_init(&s->lock, NULL);
		s->nslots = per;
		s->bmask = nb - 1;
		s->e = xcalloc(per, sizeof *s->e);
		s->bucket = xmalloc(nb * sizeof *s->bucket);
		for (uint32_t b = 0; b < nb; b++)
			s->bucket[b] = -1;
		for (uint32_t j = 0; j < per; j++)
			s->e[j].next = j + 1 < per ? (int32_t)(j + 1) : -1;
		s->free_head = 0;
	}
	return c;
}

void
auth_cache_free(struct auth_cache *c)
{
	if (c == NULL)
		return;
	for (uint32_t i = 0; i < c->nshards; i++) {
		struct auth_cache_shard *s = &c->shards[i];

		for (uint32_t j = 0; j < s->nslots; j++)
			free(s->e[j].token);
		free(s->e);
		free(s->bucket);
		pthread_mutex_destroy(&s->lock);
	}
	free(c->shards);
	free(c->tombs);
	free(c);
}

static struct auth_cache_shard *
auth_cache_shard(struct auth_cache *c, uint64_t h)
{
	return &c->shards[c->shard_shift >= 64 ? 0 : h >> c->shard_shift];
}

static int32_t
auth_cache_find(const struct auth_cache_shard *s, uint64_t h, const char *token, size_t len)
{
	for (int32_t i = s->bucket[h & s->bmask]; i >= 0; i = s->e[i].next) {
		const struct auth_cache_entry *e = &s->e[i];

		if (e->hash == h && e->len == len && CRYPTO_memcmp(e->token, token, len) == 0)
			return i;
	}
	return -1;
}

/* Unlinks entry i from its chain and frees it. Shard locked. */
static void
auth_cache_remove(struct auth_cache_shard *s, int32_t i)
{
	struct auth_cache_entry *e = &s->e[i];
	int32_t *pp = &s->bucket[e->hash & s->bmask];

	while (*pp != i)
		pp = &s->e[*pp].next;
	*pp = e->next;
	free(e->token);
	e->token = NULL;
	e->next = s->free_head;
	s->free_head = i;
	s->used--;
}

int
auth_cache_get(struct auth_cache *c, const char *token, size_t len, int64_t now,
               struct auth_claims *out)
{
	uint64_t h;
	struct auth_cache_shard *s;
	int32_t i;
	int hit = 0;

	if (len == 0 || len > AUTH_TOKEN_MAX)
		return 0;
	h = auth_cache_hash(c, token, len);
	s = auth_cache_shard(c, h);
	pthread_mutex_lock(&s->lock);
	i = auth_cache_find(s, h, token, len);
	if (i >= 0) {
		struct auth_cache_entry *e = &s->e[i];

		if (e->claims.exp < now) {
			auth_cache_remove(s, i);
		} else {
			e->ref = 1;
			*out = e->claims;
			hit = 1;
		}
	}
	pthread_mutex_unlock(&s->lock);
	return hit;
}

void
auth_cache_put(struct auth_cache *c, const char *token, size_t len,
               const struct auth_claims *claims)
{
	uint64_t h, jh;
	struct auth_cache_shard *s;
	struct auth_cache_entry *e;
	char *copy;
	int32_t i;

	if (len == 0 || len > AUTH_TOKEN_MAX ||
	    strnlen(claims->jti, sizeof claims->jti) == sizeof claims->jti)
		return;
	h = auth_cache_hash(c, token, len);
	jh = auth_cache_jti_hash(c, claims->jti);
	s = auth_cache_shard(c, h);
	if (s->nslots == 0)
		return;
	copy = xmalloc(len); /* outside the lock: allocation can be slow */
	memcpy(copy, token, len);

	pthread_mutex_lock(&s->lock);
	if (atomic_load(&c->tombs[jh & (AUTH_CACHE_TOMBS - 1)]) == jh) {
		pthread_mutex_unlock(&s->lock);
		free(copy);
		return;
	}
	i = auth_cache_find(s, h, token, len);
	if (i >= 0) {
		s->e[i].claims = *claims;
		s->e[i].jti_hash = jh;
		pthread_mutex_unlock(&s->lock);
		free(copy);
		return;
	}
	if (s->free_head < 0) {
		for (;;) {
			e = &s->e[s->hand];
			i = (int32_t)s->hand;
			s->hand = s->hand + 1 < s->nslots ? s->hand + 1 : 0;
			if (!e->ref)
				break;
			e->ref = 0;
		}
		auth_cache_remove(s, i);
	}
	i = s->free_head;
	e = &s->e[i];
	s->free_head = e->next;
	e->hash = h;
	e->jti_hash = jh;
	e->token = copy;
	e->len = (uint32_t)len;
	e->ref = 0;
	e->claims = *claims;
	e->next = s->bucket[h & s->bmask];
	s->bucket[h & s->bmask] = i;
	s->used++;
	pthread_mutex_unlock(&s->lock);
}

void
auth_cache_forget_jti(struct auth_cache *c, const char *jti)
{
	uint64_t jh = auth_cache_jti_hash(c, jti);

	atomic_store(&c->tombs[jh & (AUTH_CACHE_TOMBS - 1)], jh);
	for (uint32_t k = 0; k < c->nshards; k++) {
		struct auth_cache_shard *s = &c->shards[k];

		pthread_mutex_lock(&s->lock);
		for (uint32_t j = 0; j < s->nslots && s->used > 0; j++) {
			const struct auth_cache_entry *e = &s->e[j];

			if (e->token != NULL && e->jti_hash == jh &&
			    strcmp(e->claims.jti, jti) == 0)
				auth_cache_remove(s, (int32_t)j);
		}
		pthread_mutex_unlock(&s->lock);
	}
}

size_t
auth_cache_count(struct auth_cache *c)
{
	size_t n = 0;

	for (uint32_t k = 0; k < c->nshards; k++) {
		pthread_mutex_lock(&c->shards[k].lock);
		n += c->shards[k].used;
		pthread_mutex_unlock(&c->shards[k].lock);
	}
	return n;
}

void
auth_cache_test_force_hash(struct auth_cache *c, int on, uint64_t value)
{
	atomic_store(&c->forced, value);
	atomic_store(&c->force_hash, on);
}

/* ---- passwords ---- */

/*
 * A fixed, well-formed salt at our cost: hashing with it costs exactly what checking a
 * real hash does, and its result is never compared with anything.
 */
#define AUTH_DUMMY_SALT "gatewaydDummySaltXyzAe"
#define AUTH_BCRYPT_LEN 60

static int
auth_bcrypt(const char *password, const char *setting, char *out, size_t outlen)
{
	/* struct crypt_data is over 32 KB: too big for a worker's stack frame */
	struct crypt_data *cd = xcalloc(1, sizeof *cd);
	const char *r = crypt_r(password, setting, cd);
	int rc = -1;

	if (r != NULL && r[0] == '$') {
		size_t n = strlen(r);

		if (n < outlen) {
			memcpy(out, r, n + 1);
			rc = 0;
		}
	}
	OPENSSL_cleanse(cd, sizeof *cd);
	free(cd);
	return rc;
}

/* The cost of a "$2a$/$2b$/$2y$NN$" + 53-character hash, or -1. */
static int
auth_bcrypt_cost(const char *hash)
{
	if (hash == NULL || strlen(hash) != AUTH_BCRYPT_LEN || hash[0] != '$' || hash[1] != '2' ||
	    (hash[2] != 'a' && hash[2] != 'b' && hash[2] != 'y') || hash[3] != '$' ||
	    hash[4] < '0' || hash[4] > '9' || hash[5] < '0' || hash[5] > '9' || hash[6] != '$')
		return -1;
	return (hash[4] - '0') * 10 + (hash[5] - '0');
}

int
auth_password_hash(const char *password, char *out, size_t outlen)
{
	unsigned char rnd[16];
	char setting[64];
	char prefix[16];

	if (outlen > 0)
		out[0] = '\0';
	if (password == NULL || strlen(password) > AUTH_PASSWORD_MAX)
		return -1;
	if (RAND_bytes(rnd, sizeof rnd) != 1) {
		auth_ossl_clear();
		return -1;
	}
	if (crypt_gensalt_rn("$2b$", AUTH_BCRYPT_COST, (const char *)rnd, sizeof rnd, setting,
	                     sizeof setting) == NULL)
		return -1;
	if (auth_bcrypt(password, setting, out, outlen) != 0)
		return -1;
	snprintf(prefix, sizeof prefix, "$2b$%02d$", AUTH_BCRYPT_COST);
	if (strlen(out) != AUTH_BCRYPT_LEN || strncmp(out, prefix, strlen(prefix)) != 0) {
		out[0] = '\0';
		return -1;
	}
	return 0;
}

void
auth_password_dummy_verify(const char *password)
{
	char setting[64], out[AUTH_HASH_MAX];

	snprintf(setting, sizeof setting, "$2b$%02d$%s", AUTH_BCRYPT_COST, AUTH_DUMMY_SALT);
	(void)auth_bcrypt(password != NULL ? password : "", setting, out, sizeof out);
}

int
auth_password_verify(const char *password, const char *hash)
{
	char out[AUTH_HASH_MAX];
	int cost = auth_bcrypt_cost(hash);

	/*
	 * Every refusal still pays for one bcrypt, so a caller that answers at once
	 * cannot be timed into telling a malformed stored hash from a wrong password.
	 */
	if (password == NULL || cost < 4 || cost > AUTH_BCRYPT_COST_MAX ||
	    strlen(password) > AUTH_PASSWORD_MAX) {
		auth_password_dummy_verify(password);
		return 0;
	}
	if (auth_bcrypt(password, hash, out, sizeof out) != 0 || strlen(out) != AUTH_BCRYPT_LEN) {
		/* crypt refuses a bad salt before doing any work: pay for it here */
		auth_password_dummy_verify(password);
		return 0;
	}
	return CRYPTO_memcmp(out, hash, AUTH_BCRYPT_LEN) == 0;
}

int
auth_password_needs_rehash(const char *hash)
{
	int cost = auth_bcrypt_cost(hash);

	return cost < AUTH_BCRYPT_COST || hash[2] != 'b';
}

/* ---- random tokens ---- */

int
auth_random_token(char *out, size_t outlen, size_t nbytes, const char *prefix)
{
	unsigned char rnd[256];
	size_t plen = prefix != NULL ? strlen(prefix) : 0;

	if (outlen > 0)
		out[0] = '\0';
	if (nbytes == 0 || nbytes > sizeof rnd || outlen < plen + 2 * nbytes + 1)
		return -1;
	if (RAND_bytes(rnd, (int)nbytes) != 1) {
		auth_ossl_clear();
		return -1;
	}
	if (plen > 0)
		memcpy(out, prefix, plen);
	auth_hex(rnd, nbytes, out + plen);
	OPENSSL_cleanse(rnd, nbytes);
	return 0;
}
