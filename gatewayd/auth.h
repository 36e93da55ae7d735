#ifndef GW_AUTH_H
#define GW_AUTH_H

#include <stddef.h>
#include <stdint.h>

/*
 * Tokens, passwords and secrets: JWT signing and verification (HS256, RS256, ES256)
 * with OpenSSL directly, a verified-token cache, bcrypt passwords through libcrypt, and
 * random tokens. Every function here is thread-safe; a struct auth_ctx is immutable
 * after auth_ctx_new and may be shared by every worker, and a struct auth_cache does its
 * own locking.
 *
 * What this module does not do, and callers must: check the token's typ ("access" on
 * requests, "refresh" at /auth/refresh), check revocation lists, rotate refresh tokens
 * and revoke families, limit password length (AUTH_PASSWORD_MAX) and generate or load
 * the HS256 secret.
 */

#define AUTH_TOKEN_MAX 8192     /* bytes in a JWT, larger ones are refused */
#define AUTH_SECRET_MIN 16      /* HS256 secrets shorter than this are refused */
#define AUTH_SECRET_GOOD 32     /* shorter ones (but >= AUTH_SECRET_MIN) get a warning */
#define AUTH_LEEWAY_MAX 86400   /* seconds */
#define AUTH_BCRYPT_COST 12     /* new password hashes; must stay >= 10 */
#define AUTH_BCRYPT_COST_MAX 16 /* stored hashes above this are refused (~5 s each) */
#define AUTH_PASSWORD_MAX 72    /* bcrypt ignores bytes past 72: longer is refused */
#define AUTH_HASH_MAX 128       /* buffer for auth_password_hash (60 used) */
#define AUTH_JTI_BYTES 16       /* random bytes in a jti from auth_claims_init */

enum auth_alg {
	AUTH_HS256 = 0,
	AUTH_RS256,
	AUTH_ES256,
};

/* Results of auth_jwt_verify. Not 0/-1: test `!= AUTH_OK`. */
enum auth_err {
	AUTH_OK = 0,
	AUTH_E_MALFORMED, /* not three strict base64url parts, bad JSON, too large */
	AUTH_E_ALG,       /* header alg is not the configured one (none, HS256 vs RS256...) */
	AUTH_E_SIGNATURE, /* signature does not verify (also: internal crypto failure) */
	AUTH_E_EXPIRED,   /* exp + leeway < now */
	AUTH_E_NOT_YET,   /* nbf - leeway > now */
	AUTH_E_ISSUER,    /* iss missing or not the configured issuer */
	AUTH_E_CLAIMS,    /* missing sub/exp/jti/typ, wrong types, oversized, duplicates */
};

struct auth_config {
	enum auth_alg alg;
	/* HS256: the secret (copied; >= AUTH_SECRET_MIN bytes, AUTH_SECRET_GOOD advised) */
	const unsigned char *secret;
	size_t secret_len;
	/*
	 * RS256/ES256: PEM files. With only public_key_file the context verifies but
	 * cannot sign; with only private_key_file the public key is derived from it; with
	 * both they must be a pair. RSA keys must be >= 2048 bits, EC keys P-256.
	 */
	const char *private_key_file;
	const char *public_key_file;
	const char *issuer;  /* iss in signed tokens, required on verify; NULL/"" = none */
	int64_t access_ttl;  /* seconds, for auth_claims_init */
	int64_t refresh_ttl; /* seconds, for auth_claims_init */
	int64_t leeway;      /* seconds of clock skew forgiven on exp and nbf */
};

/* Every string is NUL-terminated; "" means absent (tier, role, fam). */
struct auth_claims {
	char sub[64];
	char iss[128];
	char typ[16]; /* "access" | "refresh" */
	char tier[32];
	char role[16];
	char jti[64];
	char fam[64]; /* refresh family (refresh tokens only) */
	int64_t iat, nbf, exp;
};

struct auth_ctx;
struct auth_cache;

/* Returns NULL and fills err on a bad config or key. Free with auth_ctx_free. */
struct auth_ctx *auth_ctx_new(const struct auth_config *cfg, char *err, size_t errlen);
void auth_ctx_free(struct auth_ctx *ctx);
/* 1 when the context holds a signing key (always for HS256). */
int auth_ctx_can_sign(const struct auth_ctx *ctx);
/* "HS256" | "RS256" | "ES256" (static strings). */
const char *auth_alg_name(enum auth_alg alg);
/* 0 and *out set, or -1 for anything but those three names (exact case). */
int auth_alg_parse(const char *name, enum auth_alg *out);

/*
 * Fills c for a new token: sub, tier (NULL for none), typ ("access" or "refresh"),
 * iss from the context, iat = nbf = now, exp = now + the typ's ttl, a random jti
 * (hex) and, for refresh tokens, fam = jti (a new family; to rotate, copy the old
 * token's fam over it). role stays "". 0, or -1 for a bad argument or RNG failure.
 */
int auth_claims_init(const struct auth_ctx *ctx, struct auth_claims *c, const char *typ,
                     const char *sub, const char *tier, int64_t now);

/*
 * Writes a NUL-terminated compact JWS for in into out. The issuer is the context's
 * (in->iss is used only when the context has none). sub, jti and typ must be set;
 * every string must be valid UTF-8. Claims order: tier role fam, then the reserved
 * sub iss iat nbf exp jti typ last. Returns the token length, or -1 (no signing key,
 * bad claims, out too small: AUTH_TOKEN_MAX + 1 always suffices).
 */
int auth_jwt_sign(const struct auth_ctx *ctx, const struct auth_claims *in, char *out,
                  size_t outlen);

/*
 * Verifies token[0..len) (need not be NUL-terminated) at now (Unix seconds) and fills
 * out on AUTH_OK (out is zeroed on failure). Only the configured alg is accepted; the
 * signature is checked before the payload is parsed. typ is filled, not checked;
 * revocation is not checked.
 */
int auth_jwt_verify(const struct auth_ctx *ctx, const char *token, size_t len, int64_t now,
                    struct auth_claims *out);

/* SPEC error code for an auth_jwt_verify result: "token_expired" or "invalid_token". */
const char *auth_error_code(int err);
/* A short human sentence for the response's "message" (static string). */
const char *auth_error_message(int err);

/*
 * The JWK set for /.well-known/jwks.json: RS256 {"kty":"RSA","n","e"}, ES256
 * {"kty":"EC","crv":"P-256","x","y"}, each with kid (RFC 7638 thumbprint), alg and
 * use; HS256 {"keys":[]}. Returns the length, or -1 when out is too small (2048 bytes
 * fit a 4096-bit RSA key).
 */
int auth_jwks_json(const struct auth_ctx *ctx, char *out, size_t outlen);

/*
 * Verified-token cache: a hit costs a hash and a compare instead of a signature check.
 * Keyed by the whole token (a hit compares every byte), bounded to capacity entries,
 * sharded with a mutex per shard, CLOCK eviction. Only put tokens that auth_jwt_verify
 * accepted and that are not revoked.
 *
 * Revocation: add the jti to the revocation list first, then call
 * auth_cache_forget_jti; from then on no get returns that jti, including a put racing
 * with the forget (the cache remembers recently forgotten jtis). Callers therefore
 * check revocation only on a miss, between verify and put:
 *
 *   if (!auth_cache_get(c, t, n, now, &cl)) {
 *           if (auth_jwt_verify(ctx, t, n, now, &cl) != AUTH_OK) -> 401
 *           if (revoked(cl.jti)) -> 401 token_revoked
 *           auth_cache_put(c, t, n, &cl);
 *   }
 *   if (strcmp(cl.typ, "access") != 0) -> 401
 */
/* capacity >= 1 entries. Never NULL (allocation failure is fatal). */
struct auth_cache *auth_cache_new(size_t capacity);
void auth_cache_free(struct auth_cache *c);
/* 1 and *out filled on a hit; 0 on a miss. An entry whose exp < now is a miss. */
int auth_cache_get(struct auth_cache *c, const char *token, size_t len, int64_t now,
                   struct auth_claims *out);
/* Copies token and claims in. Ignored for tokens > AUTH_TOKEN_MAX or a forgotten jti. */
void auth_cache_put(struct auth_cache *c, const char *token, size_t len,
                    const struct auth_claims *claims);
/* Drops every entry with this jti and refuses later puts of it (see above). */
void auth_cache_forget_jti(struct auth_cache *c, const char *jti);
/* Entries held (exact at the moment each shard is read). */
size_t auth_cache_count(struct auth_cache *c);
/* Tests only: every token hashes to value (1) or the real hash is used again (0). */
void auth_cache_test_force_hash(struct auth_cache *c, int on, uint64_t value);

/*
 * Passwords: bcrypt "$2b$" at AUTH_BCRYPT_COST through crypt_r, salt from the OS RNG.
 * auth_password_hash writes the 60-character hash into out (AUTH_HASH_MAX bytes);
 * 0, or -1 when the password is longer than AUTH_PASSWORD_MAX or crypt fails.
 */
int auth_password_hash(const char *password, char *out, size_t outlen);
/* 1 match, 0 not (also for a malformed hash, after the same work as a real verify). */
int auth_password_verify(const char *password, const char *hash);
/* The work of one auth_password_verify at AUTH_BCRYPT_COST, for unknown accounts. */
void auth_password_dummy_verify(const char *password);
/* 1 when hash was made with a lower cost than AUTH_BCRYPT_COST (rehash on login). */
int auth_password_needs_rehash(const char *hash);

/*
 * prefix + 2*nbytes lowercase hex characters of RAND_bytes, NUL-terminated (API keys:
 * "gk_" and 32 bytes). Hex rather than base64url so a double-click selects the whole
 * key. 0, or -1 when out is too small, nbytes is 0 or > 256, or the RNG fails.
 */
int auth_random_token(char *out, size_t outlen, size_t nbytes, const char *prefix);
/* Lowercase hex SHA-256 of data, NUL-terminated (for storing API keys). */
void auth_sha256_hex(const void *data, size_t len, char out[65]);

#endif
