#include <cjson/cJSON.h>
#include <errno.h>
#include <openssl/crypto.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "api.h"
#include "api_util.h"
#include "auth.h"
#include "gw.h"
#include "identify.h"
#include "identity.h"
#include "jobs.h"
#include "log.h"
#include "proxy.h"
#include "ratelimit.h"
#include "redis.h"
#include "store.h"
#include "util.h"
#include "xmalloc.h"

/*
 * The identity endpoints (SPEC section 6): registration, login, refresh-token rotation,
 * logout, API keys, the legacy-key migration, the JWK set and /usage.
 *
 * Every handler runs on a worker: it validates the request (cheap, no I/O), copies what
 * the job needs out of the exchange, and submits a job whose run() does the blocking
 * part (bcrypt, the store) on a pool thread. run() never touches the exchange. A store
 * write is committed before the answer that depends on it leaves, and the in-memory
 * tables the hot path reads (identity.h) are updated right after the commit, so a new
 * key or a revocation takes effect at once.
 *
 * Secrets (passwords, tokens, keys) are never logged, never echoed in an error, and
 * wiped from the job's memory when it is freed.
 */

_Static_assert(API_AUTH_PASSWORD_MAX == AUTH_PASSWORD_MAX, "password limit");
_Static_assert(API_AUTH_TOKEN_MAX == AUTH_TOKEN_MAX, "token limit");
_Static_assert(API_AUTH_EMAIL_MAX < STORE_EMAIL_MAX, "email field");
_Static_assert(API_AUTH_TIER_MAX < STORE_TIER_MAX && API_AUTH_TIER_MAX < IDENTITY_TIER_MAX,
               "tier field");

#define API_AUTH_KEY_PREFIX "gk_"
#define API_AUTH_KEY_BYTES 32
#define API_AUTH_KEY_LEN (sizeof(API_AUTH_KEY_PREFIX) - 1 + 2 * API_AUTH_KEY_BYTES)
#define API_AUTH_PREFIX_LEN 12   /* the part of a key shown to people */
#define API_AUTH_KEY_GRACE 86400 /* a rotated key keeps working this long (s) */
#define API_AUTH_THROTTLE_KEYS 65536
#define API_AUTH_REVOKE_PATH "/auth/api-keys/"

static const char api_auth_www_invalid[] = "WWW-Authenticate: Bearer error=\"invalid_token\"\r\n";

/*
 * Login throttling: failed logins only are counted, per account and per client
 * address, in a limiter of its own. A request over either limit is refused before any
 * bcrypt work, so guessing costs the attacker a 429 and us nothing.
 */
static const struct conf_rate api_auth_email_rate = {10, 15 * 60 * 1000};
static const struct conf_rate api_auth_ip_rate = {50, 15 * 60 * 1000};
static pthread_once_t api_auth_throttle_once = PTHREAD_ONCE_INIT;
static struct ratelimit *api_auth_throttle;

/* Everything a job needs, copied from the exchange before it is submitted. */
struct api_auth_req {
	struct api_auth_body b;
	/* the caller (JWT / credential endpoints) */
	uint8_t kind; /* enum identity_kind */
	int64_t user_id;
	char key_hash[IDENTITY_HASH_MAX];
	char jti[STORE_JTI_MAX];
	int64_t exp;
	char fam[STORE_JTI_MAX];       /* logout: the access token's refresh family */
	char fam2[STORE_JTI_MAX];      /* logout: the family of a refresh token in the body */
	struct auth_claims claims;     /* refresh: the verified refresh token */
	char tier[STORE_TIER_MAX];     /* register: the tier to give */
	char prefix[STORE_PREFIX_MAX]; /* DELETE: the key to revoke */
	uint8_t client_ip[16];
	int ip_throttled; /* login: the per-address throttle applies */
	/* migrate: the tier rates, to carry the key's usage over to the user */
	struct config_tier tiers[CONFIG_MAX_TIERS];
	int ntiers;
	/* the answer's tokens */
	char access[AUTH_TOKEN_MAX + 1];
	char refresh[AUTH_TOKEN_MAX + 1];
	int64_t expires_in;
};

/* --- request bodies (pure: exported for the fuzzer) ---------------------------------- */

static void
api_auth_errf(char *err, size_t errlen, const char *field, const char *what)
{
	if (errlen > 0)
		snprintf(err, errlen, "%s %s", field, what);
}

/* Copies string member `name` into dst: 1 copied, 0 absent or null, -1 (err written). */
static int
api_auth_get_string(const cJSON *o, const char *name, size_t max, char *dst, char *err,
                    size_t errlen)
{
	const cJSON *it = o != NULL ? cJSON_GetObjectItemCaseSensitive(o, name) : NULL;
	size_t n;

	if (it == NULL || cJSON_IsNull(it))
		return 0;
	if (!cJSON_IsString(it) || it->valuestring == NULL) {
		api_auth_errf(err, errlen, name, "must be a string.");
		return -1;
	}
	n = strlen(it->valuestring);
	if (n == 0) {
		api_auth_errf(err, errlen, name, "must not be empty.");
		return -1;
	}
	if (n > max) {
		api_auth_errf(err, errlen, name, "is too long.");
		return -1;
	}
	memcpy(dst, it->valuestring, n + 1);
	return 1;
}

/*
 * An address people can type: printable ASCII without the characters that need
 * quoting, exactly one '@' with something before it, and a domain that holds a dot
 * between labels. Lower-cased in place (the store compares emails case-insensitively;
 * one spelling everywhere keeps the throttle keys and answers consistent).
 */
static int
api_auth_email_ok(char *s)
{
	size_t n = strlen(s), at = 0, ats = 0;
	const char *dom;
	size_t dlen;

	if (n < 3 || n > API_AUTH_EMAIL_MAX)
		return 0;
	for (size_t i = 0; i < n; i++) {
		unsigned char ch = (unsigned char)s[i];

		if (ch <= 0x20 || ch >= 0x7f || strchr("\"(),:;<>[\\]", ch) != NULL)
			return 0;
		if (ch == '@') {
			ats++;
			at = i;
		} else if (ch >= 'A' && ch <= 'Z') {
			s[i] = (char)(ch - 'A' + 'a');
		}
	}
	if (ats != 1 || at == 0 || at == n - 1)
		return 0;
	dom = s + at + 1;
	dlen = n - at - 1;
	return dom[0] != '.' && dom[dlen - 1] != '.' && memchr(dom, '.', dlen) != NULL &&
	       strstr(dom, "..") == NULL;
}

/* UTF-8 code points (continuation bytes not counted). */
static size_t
api_auth_chars(const char *s)
{
	size_t n = 0;

	for (; *s != '\0'; s++)
		if (((unsigned char)*s & 0xc0) != 0x80)
			n++;
	return n;
}

static int
api_auth_blank(const char *buf, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if (buf[i] != ' ' && buf[i] != '\t' && buf[i] != '\r' && buf[i] != '\n')
			return 0;
	return 1;
}

/*
 * cJSON decodes "\u0000" into a NUL that ends the C string early: "password\u0000x"
 * would silently become "password". Such bodies are refused instead. An escape is real
 * when an odd number of backslashes leads to its 'u'.
 */
static int
api_auth_has_nul_escape(const char *buf, size_t len)
{
	for (size_t i = 0; i + 6 <= len; i++) {
		size_t bs = 0;

		if (buf[i] != '\\' || memcmp(buf + i + 1, "u0000", 5) != 0)
			continue;
		while (bs <= i && buf[i - bs] == '\\')
			bs++;
		if (bs % 2 == 1)
			return 1;
	}
	return 0;
}

/* The parsed tree keeps a copy of the password: wipe it before the tree is freed. */
static void
api_auth_wipe_password(cJSON *o)
{
	for (cJSON *it = o != NULL ? o->child : NULL; it != NULL; it = it->next)
		if (cJSON_IsString(it) && it->valuestring != NULL && it->string != NULL &&
		    strcmp(it->string, "password") == 0)
			explicit_bzero(it->valuestring, strlen(it->valuestring));
}

static int
api_auth_parse_fields(const cJSON *o, unsigned want, struct api_auth_body *out, char *err,
                      size_t errlen)
{
	static const struct {
		unsigned flag;
		const char *name;
		size_t max;
		size_t off;
	} strs[] = {
	    {API_AUTH_EMAIL, "email", 1024, offsetof(struct api_auth_body, email)},
	    {API_AUTH_PASSWORD, "password", API_AUTH_PASSWORD_MAX,
	     offsetof(struct api_auth_body, password)},
	    {API_AUTH_TIER, "tier", API_AUTH_TIER_MAX, offsetof(struct api_auth_body, tier)},
	    {API_AUTH_REFRESH, "refresh_token", API_AUTH_TOKEN_MAX,
	     offsetof(struct api_auth_body, refresh_token)},
	    {API_AUTH_API_KEY, "api_key", API_AUTH_KEY_MAX,
	     offsetof(struct api_auth_body, api_key)},
	};
	char email[1025] = "";

	for (size_t i = 0; i < sizeof(strs) / sizeof(strs[0]); i++) {
		char *dst = strs[i].flag == API_AUTH_EMAIL ? email : (char *)out + strs[i].off;
		int r;

		if (!(want & strs[i].flag))
			continue;
		r = api_auth_get_string(o, strs[i].name, strs[i].max, dst, err, errlen);
		if (r < 0)
			return -1;
		if (r > 0)
			out->have |= strs[i].flag;
	}
	if (out->have & API_AUTH_EMAIL) {
		if (!api_auth_email_ok(email)) {
			api_auth_errf(err, errlen, "email", "is not a valid email address.");
			return -1;
		}
		memcpy(out->email, email, strlen(email) + 1);
	}
	if ((out->have & API_AUTH_PASSWORD) && (want & API_AUTH_NEW_PASSWORD) &&
	    api_auth_chars(out->password) < API_AUTH_PASSWORD_MIN) {
		api_auth_errf(err, errlen, "password", "must be at least 8 characters long.");
		return -1;
	}
	if (want & API_AUTH_EXPIRES_IN) {
		const cJSON *it =
		    o != NULL ? cJSON_GetObjectItemCaseSensitive(o, "expires_in") : NULL;

		if (it != NULL && !cJSON_IsNull(it)) {
			double v = it->valuedouble;

			/* the negated range test also refuses NaN */
			if (!cJSON_IsNumber(it) || !(v >= 1 && v <= API_AUTH_EXPIRES_MAX) ||
			    v != (double)(int64_t)v) {
				api_auth_errf(err, errlen, "expires_in",
				              "must be a whole number of seconds from 1 to "
				              "315360000.");
				return -1;
			}
			out->expires_in = (int64_t)v;
			out->have |= API_AUTH_EXPIRES_IN;
		}
	}
	return 0;
}

int
api_auth_parse_body(const char *buf, size_t len, unsigned want, unsigned need,
                    struct api_auth_body *out, char *err, size_t errlen)
{
	static const struct {
		unsigned flag;
		const char *name;
	} names[] = {
	    {API_AUTH_EMAIL, "email"},     {API_AUTH_PASSWORD, "password"},
	    {API_AUTH_TIER, "tier"},       {API_AUTH_REFRESH, "refresh_token"},
	    {API_AUTH_API_KEY, "api_key"}, {API_AUTH_EXPIRES_IN, "expires_in"},
	};
	cJSON *o = NULL;
	int rc = -1;

	memset(out, 0, sizeof(*out));
	if (errlen > 0)
		err[0] = '\0';
	if (want & API_AUTH_NEW_PASSWORD)
		want |= API_AUTH_PASSWORD;
	if (need & API_AUTH_NEW_PASSWORD)
		need |= API_AUTH_PASSWORD;
	need &= want;
	if (buf != NULL && !api_auth_blank(buf, len)) {
		const char *end = NULL;

		o = cJSON_ParseWithLengthOpts(buf, len, &end, 0);
		/* one value and nothing after it but blanks */
		if (o == NULL || !cJSON_IsObject(o) || end == NULL || end < buf ||
		    end > buf + len || !api_auth_blank(end, (size_t)(buf + len - end))) {
			if (errlen > 0)
				snprintf(err, errlen, "The body must be a JSON object.");
			goto out;
		}
		if (api_auth_has_nul_escape(buf, len)) {
			if (errlen > 0)
				snprintf(err, errlen, "Strings must not contain NUL characters.");
			goto out;
		}
	}
	if (api_auth_parse_fields(o, want, out, err, errlen) != 0)
		goto out;
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		if ((need & names[i].flag) && !(out->have & names[i].flag)) {
			api_auth_errf(err, errlen, names[i].name, "is required.");
			goto out;
		}
	}
	rc = 0;
out:
	api_auth_wipe_password(o);
	cJSON_Delete(o);
	if (rc != 0) {
		explicit_bzero(out, sizeof(*out));
		if (errlen > 0 && err[0] == '\0')
			snprintf(err, errlen, "The body is not valid.");
	}
	return rc;
}

/* --- jobs: the shared parts ------------------------------------------------------------ */

static void
api_auth_req_free(void *p)
{
	if (p != NULL) {
		explicit_bzero(p, sizeof(struct api_auth_req));
		free(p);
	}
}

/* Answers x with an error instead of submitting r (freed here). */
static void
api_auth_refuse(struct exchange *x, struct api_auth_req *r, int status, const char *code,
                const char *message, const char *extra)
{
	api_auth_req_free(r);
	respond_error(x, status, code, message, extra, NULL);
}

/*
 * A job argument for x: the body parsed into it (400 answered and NULL returned when it
 * does not parse) and the caller copied from x->id.
 */
static struct api_auth_req *
api_auth_req_new(struct exchange *x, unsigned want, unsigned need)
{
	struct api_auth_req *r = xcalloc(1, sizeof(*r));
	const char *buf;
	size_t len;
	char err[160];

	if (want != 0) {
		api_util_body_span(x, &buf, &len);
		if (api_auth_parse_body(buf, len, want, need, &r->b, err, sizeof(err)) != 0) {
			api_auth_refuse(x, r, 400, "invalid_request", err, NULL);
			return NULL;
		}
	}
	r->kind = x->id.kind;
	r->user_id = x->id.user_id;
	util_strlcpy(r->key_hash, x->id.key_hash, sizeof(r->key_hash));
	util_strlcpy(r->jti, x->id.jti, sizeof(r->jti));
	r->exp = x->id.exp;
	memcpy(r->client_ip, x->client_ip, sizeof(r->client_ip));
	return r;
}

static void
api_auth_submit(struct exchange *x, struct api_auth_req *r,
                void (*run)(struct job *, struct store *))
{
	struct job *j = jobs_new(x, run);

	j->arg = r;
	j->free_arg = api_auth_req_free;
	jobs_submit(j);
}

/* Tokens can be issued only with a signing key (RS256/ES256 may have a public key only). */
static int
api_auth_can_issue(struct exchange *x)
{
	if (gw.auth != NULL && auth_ctx_can_sign(gw.auth))
		return 1;
	respond_error(x, 503, "service_unavailable", "This gateway cannot issue tokens.",
	              "Retry-After: 60\r\n", NULL);
	return 0;
}

static void
api_auth_unavailable(struct job *j, struct store *st, const char *what)
{
	log_warnx("auth: %s: %s", what, st != NULL ? store_error(st) : "no database is open");
	api_util_unavailable(j, "The user store is unavailable; try again shortly.");
}

/* A store call failed inside a transaction: log its message, then roll back. */
static void
api_auth_abort(struct job *j, struct store *st, const char *what)
{
	api_auth_unavailable(j, st, what);
	store_rollback(st);
}

static void
api_auth_token_error(struct job *j, const char *code, const char *message)
{
	jobs_set_error(j, 401, code, message);
	util_strlcpy(j->extra, api_auth_www_invalid, sizeof(j->extra));
}

/* Publishes a user's tier and role to the hot path. */
static void
api_auth_user_publish(const struct store_user *u)
{
	struct identity_user iu;

	identity_user_from_store(&iu, u);
	identity_user_put(&iu);
}

void
api_auth_key_publish(const struct store_key *k)
{
	struct identity_key ik;

	identity_key_from_store(&ik, k);
	identity_key_put(&ik);
}

/*
 * Signs an access and a refresh token for u into r and records the refresh token in
 * family (NULL: a new family). The access token carries the family too (claim fam), so
 * that logging out with it can revoke the refresh tokens it came with. 0, -1 for a store
 * failure, -2 when signing failed.
 */
static int
api_auth_issue(struct store *st, struct api_auth_req *r, const struct store_user *u,
               const char *family)
{
	struct auth_claims ac, rc;
	int64_t now = (int64_t)time(NULL);
	char sub[24];

	snprintf(sub, sizeof(sub), "%lld", (long long)u->id);
	if (auth_claims_init(gw.auth, &rc, "refresh", sub, u->tier, now) != 0 ||
	    auth_claims_init(gw.auth, &ac, "access", sub, u->tier, now) != 0)
		return -2;
	if (family != NULL)
		util_strlcpy(rc.fam, family, sizeof(rc.fam));
	util_strlcpy(ac.fam, rc.fam, sizeof(ac.fam));
	util_strlcpy(ac.role, u->role, sizeof(ac.role));
	if (auth_jwt_sign(gw.auth, &ac, r->access, sizeof(r->access)) < 0 ||
	    auth_jwt_sign(gw.auth, &rc, r->refresh, sizeof(r->refresh)) < 0)
		return -2;
	if (store_refresh_create(st, rc.jti, rc.fam, u->id, rc.exp) != 0)
		return -1;
	/* the token's own lifetime: the context's ttl, which the daemon takes from jwt */
	r->expires_in = ac.exp - ac.iat;
	return 0;
}

static void
api_auth_issue_failed(struct job *j, struct store *st, const char *what, int rc)
{
	if (rc == -2) {
		log_warnx("auth: %s: token signing failed", what);
		store_rollback(st);
		jobs_set_error(j, 503, "service_unavailable", "Tokens cannot be issued now.");
		return;
	}
	api_auth_abort(j, st, what);
}

static void
api_auth_answer_tokens(struct job *j, int status, const struct api_auth_req *r,
                       const struct store_user *u)
{
	cJSON *o = cJSON_CreateObject();

	cJSON_AddStringToObject(o, "access_token", r->access);
	cJSON_AddStringToObject(o, "refresh_token", r->refresh);
	cJSON_AddStringToObject(o, "token_type", "Bearer");
	cJSON_AddNumberToObject(o, "expires_in", (double)r->expires_in);
	cJSON_AddNumberToObject(o, "user_id", (double)u->id);
	cJSON_AddStringToObject(o, "tier", u->tier);
	api_util_set_object(j, status, o, 503);
}

static void
api_auth_email_taken(struct job *j)
{
	jobs_set_error(j, 409, "email_taken", "This email address is already registered.");
}

/* 0 when no user has email yet; else -1 with 409 or 503 answered. */
static int
api_auth_email_free(struct job *j, struct store *st, const char *email, const char *what)
{
	struct store_user u;
	int s = store_user_by_email(st, email, &u);

	if (s == 0)
		api_auth_email_taken(j);
	else if (s != STORE_NOTFOUND)
		api_auth_unavailable(j, st, what);
	return s == STORE_NOTFOUND ? 0 : -1;
}

/* The bcrypt hash of a new password into hash. 0, or -1 with 503 answered. */
static int
api_auth_hash_new_password(struct job *j, const char *password, char hash[AUTH_HASH_MAX],
                           const char *what)
{
	if (auth_password_hash(password, hash, AUTH_HASH_MAX) == 0)
		return 0;
	log_warnx("auth: %s: password hashing failed", what);
	jobs_set_error(j, 503, "service_unavailable", "The password cannot be stored now.");
	return -1;
}

/*
 * The steps before a new account's writes: its email is free (checked first: a taken
 * address is answered without the bcrypt work), its password is hashed into hash, and a
 * transaction is begun. 0, or -1 answered.
 */
static int
api_auth_account_begin(struct job *j, struct store *st, const struct api_auth_req *r,
                       char hash[AUTH_HASH_MAX], const char *what)
{
	if (api_auth_email_free(j, st, r->b.email, what) != 0 ||
	    api_auth_hash_new_password(j, r->b.password, hash, what) != 0)
		return -1;
	if (store_begin(st) != 0) {
		api_auth_unavailable(j, st, what);
		return -1;
	}
	return 0;
}

/* Creates a user inside the open transaction. 0, or -1 answered and rolled back. */
static int
api_auth_user_create(struct job *j, struct store *st, const struct api_auth_req *r,
                     const char *pwhash, const char *tier, struct store_user *u, const char *what)
{
	int s = store_user_create(st, r->b.email, pwhash, tier, "user", u);

	if (s == STORE_EXISTS) {
		store_rollback(st);
		api_auth_email_taken(j);
		return -1;
	}
	if (s != 0) {
		api_auth_abort(j, st, what);
		return -1;
	}
	return 0;
}

/*
 * The end of every token grant: issues u's tokens (in family; NULL: a new one), commits
 * the open transaction when in_tx, publishes u to the hot path and answers status with
 * the tokens. 0, or -1 with the failure answered and rolled back.
 */
static int
api_auth_grant(struct job *j, struct store *st, struct api_auth_req *r, const struct store_user *u,
               const char *family, int in_tx, int status, const char *what)
{
	int s = api_auth_issue(st, r, u, family);

	if (s != 0) {
		api_auth_issue_failed(j, st, what, s);
		return -1;
	}
	/* the tokens (and a rotated token's spending) count only once committed */
	if (in_tx && store_commit(st) != 0) {
		api_auth_abort(j, st, what);
		return -1;
	}
	api_auth_user_publish(u);
	api_auth_answer_tokens(j, status, r, u);
	return 0;
}

/* A user id from a token's sub: a positive decimal without sign or leading zero. */
static int64_t
api_auth_parse_id(const char *s)
{
	char *end;
	long long v;

	if (s[0] < '1' || s[0] > '9')
		return 0;
	errno = 0;
	v = strtoll(s, &end, 10);
	return errno == 0 && *end == '\0' && v > 0 ? (int64_t)v : 0;
}

/* A new API key: the whole key into key, its hash and prefix into k. 0 or -1. */
static int
api_auth_new_key(char key[API_AUTH_KEY_LEN + 1], struct store_key *k)
{
	if (auth_random_token(key, API_AUTH_KEY_LEN + 1, API_AUTH_KEY_BYTES, API_AUTH_KEY_PREFIX) !=
	    0)
		return -1;
	auth_sha256_hex(key, strlen(key), k->hash);
	memcpy(k->prefix, key, API_AUTH_PREFIX_LEN);
	k->prefix[API_AUTH_PREFIX_LEN] = '\0';
	return 0;
}

/* Creates k with a fresh key (a hash collision only retries). 0, STORE_EXISTS, -1. */
static int
api_auth_create_key(struct store *st, char key[API_AUTH_KEY_LEN + 1], struct store_key *k)
{
	int s = -1;

	for (int tries = 0; tries < 3; tries++) {
		if (api_auth_new_key(key, k) != 0)
			return -1;
		if ((s = store_key_create(st, k)) != STORE_EXISTS)
			break;
	}
	return s;
}

_Static_assert(API_AUTH_KEY_LEN + 1 <= API_AUTH_NEW_KEY_MAX, "key buffer");

int
api_auth_key_new(struct store *st, char key[API_AUTH_NEW_KEY_MAX], struct store_key *k)
{
	return api_auth_create_key(st, key, k);
}

int
api_auth_key_rotate(struct store *st, struct store_key *old, char key[API_AUTH_NEW_KEY_MAX],
                    struct store_key *k, int64_t now)
{
	int64_t old_exp = now + API_AUTH_KEY_GRACE;

	memset(k, 0, sizeof(*k));
	util_strlcpy(k->tier, old->tier, sizeof(k->tier));
	k->user_id = old->user_id;
	if (old->expires_at != 0 && old->expires_at < old_exp)
		old_exp = old->expires_at;
	if (api_auth_create_key(st, key, k) != 0 || store_key_set_expiry(st, old->hash, old_exp) != 0)
		return -1;
	old->expires_at = old_exp;
	return 0;
}

/* --- login throttling ------------------------------------------------------------------ */

static void
api_auth_throttle_init(void)
{
	api_auth_throttle = ratelimit_new(API_AUTH_THROTTLE_KEYS);
}

static size_t
api_auth_email_key(const struct api_auth_req *r, char *key, size_t len)
{
	int n = snprintf(key, len, "e:%s", r->b.email);

	return n < 0 ? 0 : (size_t)n < len ? (size_t)n : len - 1;
}

static void
api_auth_ip_key(const struct api_auth_req *r, uint8_t key[18])
{
	key[0] = 'i';
	key[1] = ':';
	memcpy(key + 2, r->client_ip, 16);
}

/* 1 when a login attempt may go on; else res and *rate say which limit and for how long. */
static int
api_auth_throttle_ok(const struct api_auth_req *r, struct ratelimit_result *res,
                     const struct conf_rate **rate)
{
	char ek[API_AUTH_EMAIL_MAX + 3];
	uint8_t ik[18];
	uint64_t now = util_now_ms();

	pthread_once(&api_auth_throttle_once, api_auth_throttle_init);
	*rate = &api_auth_email_rate;
	ratelimit_peek(api_auth_throttle, ek, api_auth_email_key(r, ek, sizeof(ek)), *rate, now,
	               res);
	if (!res->allowed || !r->ip_throttled)
		return res->allowed;
	*rate = &api_auth_ip_rate;
	api_auth_ip_key(r, ik);
	ratelimit_peek(api_auth_throttle, ik, sizeof(ik), *rate, now, res);
	return res->allowed;
}

static void
api_auth_throttle_fail(const struct api_auth_req *r)
{
	struct ratelimit_result res;
	char ek[API_AUTH_EMAIL_MAX + 3];
	uint8_t ik[18];
	uint64_t now = util_now_ms();

	pthread_once(&api_auth_throttle_once, api_auth_throttle_init);
	ratelimit_check(api_auth_throttle, ek, api_auth_email_key(r, ek, sizeof(ek)),
	                &api_auth_email_rate, now, &res);
	if (r->ip_throttled) {
		api_auth_ip_key(r, ik);
		ratelimit_check(api_auth_throttle, ik, sizeof(ik), &api_auth_ip_rate, now, &res);
	}
}

/* respond_rate_limited's answer, from a pool thread. */
static void
api_auth_job_throttled(struct job *j, const struct conf_rate *rate,
                       const struct ratelimit_result *res)
{
	unsigned long long ra = (res->retry_after_ms + 999) / 1000;
	char body[320];

	if (ra < 1)
		ra = 1;
	snprintf(j->extra, sizeof(j->extra), "Retry-After: %llu\r\n", ra);
	snprintf(body, sizeof(body),
	         "{\"error\":\"rate_limited\",\"message\":\"Rate limit exceeded.\","
	         "\"retry_after\":%llu,\"tier\":\"login\",\"limit\":%llu,\"window\":%llu}",
	         ra, (unsigned long long)rate->count, (unsigned long long)(rate->period_ms / 1000));
	jobs_set_json(j, 429, body);
}

/* --- POST /auth/register ----------------------------------------------------------------- */

static void
api_auth_register_run(struct job *j, struct store *st)
{
	struct api_auth_req *r = j->arg;
	struct store_user u;
	char hash[AUTH_HASH_MAX];

	if (st == NULL) {
		api_auth_unavailable(j, st, "register");
		return;
	}
	/* the user and its first refresh token land together, or neither does */
	if (api_auth_account_begin(j, st, r, hash, "register") != 0)
		return;
	if (api_auth_user_create(j, st, r, hash, r->tier, &u, "register") != 0 ||
	    api_auth_grant(j, st, r, &u, NULL, 1, 201, "register") != 0)
		return;
	log_info("auth: user %lld registered (tier %s)", (long long)u.id, u.tier);
}

void
api_auth_register(struct exchange *x)
{
	const struct config *cfg = x->rt->cfg;
	struct api_auth_req *r;
	const char *tier;
	int allowed = 0;

	if (!api_auth_can_issue(x))
		return;
	r = api_auth_req_new(x, API_AUTH_EMAIL | API_AUTH_NEW_PASSWORD | API_AUTH_TIER,
	                     API_AUTH_EMAIL | API_AUTH_NEW_PASSWORD);
	if (r == NULL)
		return;
	tier = (r->b.have & API_AUTH_TIER) ? r->b.tier
	       : cfg->nregister_tiers > 0  ? cfg->register_tiers[0]
	                                   : cfg->tiers[0].name;
	for (int i = 0; i < cfg->nregister_tiers; i++)
		if (strcmp(cfg->register_tiers[i], tier) == 0)
			allowed = 1;
	if (cfg->nregister_tiers == 0 && !(r->b.have & API_AUTH_TIER))
		allowed = 1;
	if (!allowed || config_tier_find(cfg, tier) < 0 ||
	    util_strlcpy(r->tier, tier, sizeof(r->tier)) >= sizeof(r->tier)) {
		api_auth_refuse(x, r, 403, "tier_not_allowed",
		                "This tier cannot be chosen at sign-up.", NULL);
		return;
	}
	api_auth_submit(x, r, api_auth_register_run);
}

/* --- POST /auth/login -------------------------------------------------------------------- */

static void
api_auth_login_run(struct job *j, struct store *st)
{
	struct api_auth_req *r = j->arg;
	struct ratelimit_result res;
	const struct conf_rate *rate;
	struct store_user u;
	int s, ok;

	if (st == NULL) {
		api_auth_unavailable(j, st, "login");
		return;
	}
	/* again here: attempts that queued behind a burst of failures */
	if (!api_auth_throttle_ok(r, &res, &rate)) {
		api_auth_job_throttled(j, rate, &res);
		return;
	}
	s = store_user_by_email(st, r->b.email, &u);
	if (s != 0 && s != STORE_NOTFOUND) {
		api_auth_unavailable(j, st, "login");
		return;
	}
	if (s == 0) {
		ok = auth_password_verify(r->b.password, u.pwhash);
	} else {
		/* the same work for an unknown account: timing tells nothing */
		auth_password_dummy_verify(r->b.password);
		ok = 0;
	}
	if (!ok) {
		api_auth_throttle_fail(r);
		jobs_set_error(j, 401, "invalid_credentials", "The email or password is wrong.");
		return;
	}
	api_auth_grant(j, st, r, &u, NULL, 0, 200, "login");
}

void
api_auth_login(struct exchange *x)
{
	struct api_auth_req *r;
	struct ratelimit_result res;
	const struct conf_rate *rate;

	if (!api_auth_can_issue(x))
		return;
	r = api_auth_req_new(x, API_AUTH_EMAIL | API_AUTH_PASSWORD,
	                     API_AUTH_EMAIL | API_AUTH_PASSWORD);
	if (r == NULL)
		return;
	/*
	 * Addresses exempt from the per-IP limit (ip_limit_exempt: load balancers, internal
	 * networks that many people share) are exempt from the per-IP login throttle too;
	 * the per-account throttle still applies to them.
	 */
	r->ip_throttled = cidr_tree_match(x->rt->exempt, x->client_ip, NULL) == NULL;
	if (!api_auth_throttle_ok(r, &res, &rate)) {
		api_auth_req_free(r);
		respond_rate_limited(x, "rate_limited", "login", rate->count,
		                     rate->period_ms / 1000, res.retry_after_ms);
		return;
	}
	api_auth_submit(x, r, api_auth_login_run);
}

/* --- POST /auth/refresh ------------------------------------------------------------------ */

/* A lookup of the refresh failed (s, not 0): STORE_NOTFOUND is the token's fault (401,
 * msg), anything else the store's (503). The transaction is rolled back either way. */
static void
api_auth_refresh_refused(struct job *j, struct store *st, int s, const char *msg)
{
	if (s == STORE_NOTFOUND) {
		store_rollback(st);
		api_auth_token_error(j, "invalid_token", msg);
	} else
		api_auth_abort(j, st, "refresh");
}

static void
api_auth_refresh_run(struct job *j, struct store *st)
{
	struct api_auth_req *r = j->arg;
	const struct auth_claims *c = &r->claims;
	int64_t uid = api_auth_parse_id(c->sub);
	struct store_refresh row;
	struct store_user u;
	int s;

	if (st == NULL || store_begin(st) != 0) {
		api_auth_unavailable(j, st, "refresh");
		return;
	}
	s = store_refresh_get(st, c->jti, &row);
	if (s == 0 && (strcmp(row.family, c->fam) != 0 || row.user_id != uid))
		s = STORE_NOTFOUND;
	if (s != 0) {
		api_auth_refresh_refused(j, st, s, "The refresh token is not valid.");
		return;
	}
	s = store_refresh_mark_used(st, c->jti);
	if (s == STORE_EXISTS) {
		/*
		 * Used before, or its family is revoked. A second use of a rotated token
		 * means two parties hold it (one of them a thief): end the whole family, so
		 * the token the thief or the user got by rotating dies too.
		 */
		if (store_family_revoke(st, c->fam) != 0 || store_commit(st) != 0) {
			api_auth_abort(j, st, "refresh");
			return;
		}
		if (row.used && !row.revoked)
			log_warnx("auth: refresh token of user %lld used twice: its family is "
			          "revoked",
			          (long long)uid);
		api_auth_token_error(j, "token_revoked", "The refresh token has been revoked.");
		return;
	}
	if (s != 0) {
		api_auth_refresh_refused(j, st, s, "The refresh token is not valid.");
		return;
	}
	s = store_user_by_id(st, uid, &u);
	if (s != 0) {
		api_auth_refresh_refused(j, st, s, "The user no longer exists.");
		return;
	}
	/* the old token is spent only if its successor is stored */
	api_auth_grant(j, st, r, &u, c->fam, 1, 200, "refresh");
}

void
api_auth_refresh(struct exchange *x)
{
	struct api_auth_req *r;
	int e;

	if (!api_auth_can_issue(x))
		return;
	if ((r = api_auth_req_new(x, API_AUTH_REFRESH, API_AUTH_REFRESH)) == NULL)
		return;
	/* the signature check is cheap: garbage never reaches the pool */
	e = auth_jwt_verify(gw.auth, r->b.refresh_token, strlen(r->b.refresh_token),
	                    (int64_t)time(NULL), &r->claims);
	if (e == AUTH_OK && (strcmp(r->claims.typ, "refresh") != 0 || r->claims.fam[0] == '\0' ||
	                     api_auth_parse_id(r->claims.sub) == 0)) {
		api_auth_refuse(x, r, 401, "invalid_token", "Not a refresh token.",
		                api_auth_www_invalid);
		return;
	}
	if (e != AUTH_OK) {
		api_auth_refuse(x, r, 401, auth_error_code(e), auth_error_message(e),
		                api_auth_www_invalid);
		return;
	}
	api_auth_submit(x, r, api_auth_refresh_run);
}

/* --- POST /auth/logout ------------------------------------------------------------------- */

static void
api_auth_logout_run(struct job *j, struct store *st)
{
	struct api_auth_req *r = j->arg;
	int s = st != NULL ? store_revoke_jti(st, r->jti, r->exp) : -1;

	/*
	 * Revoked in memory even when the store failed: the token dies on this instance
	 * at once, and the client, told 503, logs out again. The revocation list first,
	 * then the cache (auth.h: a racing put cannot bring the token back).
	 */
	identity_revoke(r->jti, r->exp);
	if (gw.auth_cache != NULL)
		auth_cache_forget_jti(gw.auth_cache, r->jti);
	if (s != 0 || (r->fam[0] != '\0' && store_family_revoke(st, r->fam) != 0) ||
	    (r->fam2[0] != '\0' && strcmp(r->fam2, r->fam) != 0 &&
	     store_family_revoke(st, r->fam2) != 0)) {
		api_auth_unavailable(j, st, "logout");
		return;
	}
	jobs_set_json(j, 200, "{\"ok\":true}");
}

/* The claims of the request's own bearer token (identify.c verified it just now). */
static int
api_auth_bearer_claims(struct exchange *x, int64_t now, struct auth_claims *c)
{
	size_t len;
	const char *v = http_header_get(&x->req, x->in.data, HTTP_H_AUTHORIZATION, &len);

	if (v == NULL || len <= 7)
		return -1;
	v += 7;
	len -= 7;
	while (len > 0 && *v == ' ') {
		v++;
		len--;
	}
	if (!auth_cache_get(gw.auth_cache, v, len, now, c) &&
	    auth_jwt_verify(gw.auth, v, len, now, c) != AUTH_OK)
		return -1;
	return strcmp(c->jti, x->id.jti) == 0 ? 0 : -1;
}

void
api_auth_logout(struct exchange *x)
{
	int64_t now = (int64_t)time(NULL);
	struct api_auth_req *r;
	struct auth_claims c;

	/* the router does not read this endpoint's body: an optional one, when whole */
	if ((r = api_auth_req_new(x, API_AUTH_REFRESH, 0)) == NULL)
		return;
	if (gw.auth != NULL && gw.auth_cache != NULL && api_auth_bearer_claims(x, now, &c) == 0)
		util_strlcpy(r->fam, c.fam, sizeof(r->fam));
	/* a refresh token of the caller's in the body: its family ends too */
	if ((r->b.have & API_AUTH_REFRESH) && gw.auth != NULL &&
	    auth_jwt_verify(gw.auth, r->b.refresh_token, strlen(r->b.refresh_token), now, &c) ==
	        AUTH_OK &&
	    strcmp(c.typ, "refresh") == 0 && api_auth_parse_id(c.sub) == x->id.user_id)
		util_strlcpy(r->fam2, c.fam, sizeof(r->fam2));
	explicit_bzero(&c, sizeof(c));
	api_auth_submit(x, r, api_auth_logout_run);
}

/* --- GET /auth/me ------------------------------------------------------------------------ */

/* The user r's credentials name into u. 0, or -1 answered: 401 when the user is gone
 * (deleted since its token was issued), 503 when the store fails. */
static int
api_auth_caller_user(struct job *j, struct store *st, const struct api_auth_req *r,
                     struct store_user *u, const char *what)
{
	int s = st != NULL ? store_user_by_id(st, r->user_id, u) : -1;

	if (s == STORE_NOTFOUND)
		api_auth_token_error(j, "invalid_token", "The user no longer exists.");
	else if (s != 0)
		api_auth_unavailable(j, st, what);
	return s == 0 ? 0 : -1;
}

static void
api_auth_me_run(struct job *j, struct store *st)
{
	struct api_auth_req *r = j->arg;
	struct store_user u;
	cJSON *o;

	if (api_auth_caller_user(j, st, r, &u, "me") != 0)
		return;
	o = cJSON_CreateObject();
	cJSON_AddNumberToObject(o, "user_id", (double)u.id);
	cJSON_AddStringToObject(o, "email", u.email);
	cJSON_AddStringToObject(o, "tier", u.tier);
	cJSON_AddNumberToObject(o, "created_at", (double)u.created_at);
	api_util_set_object(j, 200, o, 503);
}

void
api_auth_me(struct exchange *x)
{
	struct api_auth_req *r = api_auth_req_new(x, 0, 0);

	api_auth_submit(x, r, api_auth_me_run);
}

/* --- POST /auth/api-keys ----------------------------------------------------------------- */

/*
 * Answers 201 with the new key k, whose whole text (key, keysize bytes, wiped here) is
 * shown this once; with name: value too when name is not NULL.
 */
static void
api_auth_new_key_reply(struct job *j, char *key, size_t keysize, const struct store_key *k,
                       const char *name, int64_t value)
{
	cJSON *o = cJSON_CreateObject();

	cJSON_AddStringToObject(o, "api_key", key);
	cJSON_AddStringToObject(o, "prefix", k->prefix);
	cJSON_AddStringToObject(o, "tier", k->tier);
	if (name != NULL)
		cJSON_AddNumberToObject(o, name, (double)value);
	explicit_bzero(key, keysize);
	api_util_set_object(j, 201, o, 503);
}

static void
api_auth_keys_create_run(struct job *j, struct store *st)
{
	struct api_auth_req *r = j->arg;
	char key[API_AUTH_KEY_LEN + 1];
	struct store_user u;
	struct store_key k;

	if (api_auth_caller_user(j, st, r, &u, "create key") != 0)
		return;
	memset(&k, 0, sizeof(k));
	util_strlcpy(k.tier, u.tier, sizeof(k.tier));
	k.user_id = u.id;
	if (r->b.have & API_AUTH_EXPIRES_IN)
		k.expires_at = (int64_t)time(NULL) + r->b.expires_in;
	if (api_auth_create_key(st, key, &k) != 0) {
		api_auth_unavailable(j, st, "create key");
		return;
	}
	api_auth_key_publish(&k);
	api_auth_new_key_reply(j, key, sizeof(key), &k, k.expires_at != 0 ? "expires_at" : NULL,
	                       k.expires_at);
}

void
api_auth_keys_create(struct exchange *x)
{
	struct api_auth_req *r = api_auth_req_new(x, API_AUTH_EXPIRES_IN, 0);

	if (r != NULL)
		api_auth_submit(x, r, api_auth_keys_create_run);
}

/* --- GET /auth/api-keys ------------------------------------------------------------------ */

struct api_auth_list {
	cJSON *arr;
	int64_t now;
};

static int
api_auth_list_key(const struct store_key *k, void *arg)
{
	struct api_auth_list *l = arg;
	cJSON *o;

	if (k->revoked || (k->expires_at != 0 && k->expires_at <= l->now))
		return 0;
	o = cJSON_CreateObject();
	cJSON_AddStringToObject(o, "prefix", k->prefix);
	cJSON_AddNumberToObject(o, "created_at", (double)k->created_at);
	api_util_add_time(o, "last_used", k->last_used);
	api_util_add_time(o, "expires_at", k->expires_at);
	cJSON_AddItemToArray(l->arr, o);
	return 0;
}

static void
api_auth_keys_list_run(struct job *j, struct store *st)
{
	struct api_auth_req *r = j->arg;
	struct api_auth_list l = {cJSON_CreateArray(), (int64_t)time(NULL)};

	if (st == NULL || store_key_list_user(st, r->user_id, api_auth_list_key, &l) != 0) {
		cJSON_Delete(l.arr);
		api_auth_unavailable(j, st, "list keys");
		return;
	}
	api_util_set_object(j, 200, l.arr, 503);
}

void
api_auth_keys_list(struct exchange *x)
{
	api_auth_submit(x, api_auth_req_new(x, 0, 0), api_auth_keys_list_run);
}

/* --- POST /auth/api-keys/rotate ---------------------------------------------------------- */

static void
api_auth_keys_rotate_run(struct job *j, struct store *st)
{
	struct api_auth_req *r = j->arg;
	int64_t now = (int64_t)time(NULL);
	char hash[STORE_HASH_MAX], key[API_AUTH_NEW_KEY_MAX];
	struct store_key old, k;
	int s, mine;

	if (r->b.have & API_AUTH_API_KEY)
		auth_sha256_hex(r->b.api_key, strlen(r->b.api_key), hash);
	else
		util_strlcpy(hash, r->key_hash, sizeof(hash));
	if (st == NULL || store_begin(st) != 0) {
		api_auth_unavailable(j, st, "rotate key");
		return;
	}
	s = store_key_by_hash(st, hash, &old);
	if (s != 0 && s != STORE_NOTFOUND) {
		api_auth_abort(j, st, "rotate key");
		return;
	}
	/* the owner, or the key itself; anything else reads as absent */
	mine = s == 0 && ((r->user_id > 0 && old.user_id == r->user_id) ||
	                  (r->kind == IDENTITY_KEY &&
	                   CRYPTO_memcmp(r->key_hash, old.hash, STORE_HASH_MAX - 1) == 0));
	if (!mine || old.revoked || (old.expires_at != 0 && old.expires_at <= now)) {
		store_rollback(st);
		jobs_set_error(j, 404, "not_found", "No such API key.");
		return;
	}
	/* the successor and the old key's end of grace land together */
	if (api_auth_key_rotate(st, &old, key, &k, now) != 0 || store_commit(st) != 0) {
		explicit_bzero(key, sizeof(key));
		api_auth_abort(j, st, "rotate key");
		return;
	}
	api_auth_key_publish(&k);
	api_auth_key_publish(&old);
	api_auth_new_key_reply(j, key, sizeof(key), &k, "previous_expires_at", old.expires_at);
}

void
api_auth_keys_rotate(struct exchange *x)
{
	struct api_auth_req *r = api_auth_req_new(x, API_AUTH_API_KEY, 0);

	if (r == NULL)
		return;
	if (!(r->b.have & API_AUTH_API_KEY) && r->kind != IDENTITY_KEY) {
		api_auth_refuse(x, r, 400, "invalid_request", "api_key is required.", NULL);
		return;
	}
	api_auth_submit(x, r, api_auth_keys_rotate_run);
}

/* --- DELETE /auth/api-keys/{prefix} ------------------------------------------------------ */

static void
api_auth_keys_revoke_run(struct job *j, struct store *st)
{
	struct api_auth_req *r = j->arg;
	struct store_key k;
	int s = st != NULL ? store_key_by_prefix(st, r->user_id, r->prefix, &k) : -1;

	/* another user's prefix is looked up among the caller's keys: absent, 404 */
	if (s == 0 && k.revoked)
		s = STORE_NOTFOUND;
	if (s == 0)
		s = store_key_revoke(st, k.hash);
	if (s == STORE_NOTFOUND) {
		jobs_set_error(j, 404, "not_found", "No such API key.");
		return;
	}
	if (s != 0) {
		api_auth_unavailable(j, st, "revoke key");
		return;
	}
	k.revoked = 1;
	api_auth_key_publish(&k);
	jobs_set_json(j, 204, "");
}

static int
api_auth_prefix_ok(const char *p, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		char ch = p[i];

		if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
		      (ch >= '0' && ch <= '9') || ch == '_' || ch == '-'))
			return 0;
	}
	return 1;
}

void
api_auth_keys_revoke(struct exchange *x)
{
	const size_t plen = sizeof(API_AUTH_REVOKE_PATH) - 1;
	const char *p = x->path + plen;
	size_t n = x->path_len - plen;
	struct api_auth_req *r;

	/* prefixes are [A-Za-z0-9_-]: nothing to decode, anything else matches no key */
	if (x->path_len <= plen || n >= STORE_PREFIX_MAX || !api_auth_prefix_ok(p, n)) {
		respond_error(x, 404, "not_found", "No such API key.", NULL, NULL);
		return;
	}
	r = api_auth_req_new(x, 0, 0);
	memcpy(r->prefix, p, n);
	r->prefix[n] = '\0';
	api_auth_submit(x, r, api_auth_keys_revoke_run);
}

/* --- POST /auth/migrate ------------------------------------------------------------------ */

/*
 * "Usage kept" (SPEC section 6): the quota the key used in the current window moves to
 * the user, whose limiter name replaces the key's (identity.h: "k:<hash prefix>" becomes
 * "u:<id>"). The limiter has no transfer, so the new name is charged request by request
 * (at most the tier's limit).
 */
static void
api_auth_carry_usage(const struct api_auth_req *r, const struct store_key *k, int64_t uid)
{
	const struct conf_rate *rate = NULL;
	struct ratelimit_result res;
	char from[80], to[80];
	uint64_t now = util_now_ms(), used;

	if (gw.id_limiter == NULL || r->ntiers == 0)
		return;
	for (int i = 0; i < r->ntiers && rate == NULL; i++)
		if (strcmp(r->tiers[i].name, k->tier) == 0)
			rate = &r->tiers[i].rate;
	if (rate == NULL)
		rate = &r->tiers[0].rate;
	snprintf(from, sizeof(from), "k:%.12s", k->hash);
	snprintf(to, sizeof(to), "u:%lld", (long long)uid);
	ratelimit_peek(gw.id_limiter, from, strlen(from), rate, now, &res);
	used = res.remaining < res.limit ? res.limit - res.remaining : 0;
	for (uint64_t i = 0; i < used; i++)
		ratelimit_check(gw.id_limiter, to, strlen(to), rate, now, &res);
}

/* A key that can be migrated: 0, or an answer set and -1. */
static int
api_auth_migrate_key_ok(struct job *j, const struct store_key *k, int s)
{
	if (s == STORE_NOTFOUND ||
	    (s == 0 && (k->revoked || (k->expires_at != 0 && k->expires_at <= time(NULL))))) {
		jobs_set_error(j, 401, "invalid_api_key", "The API key is not valid.");
		return -1;
	}
	if (s == 0 && k->user_id != 0) {
		jobs_set_error(j, 400, "invalid_request",
		               "This API key has already been migrated.");
		return -1;
	}
	return s == 0 ? 0 : -1;
}

static void
api_auth_migrate_run(struct job *j, struct store *st)
{
	struct api_auth_req *r = j->arg;
	char khash[STORE_HASH_MAX], pwhash[AUTH_HASH_MAX];
	struct store_key k;
	struct store_user u;
	int s;

	if (st == NULL) {
		api_auth_unavailable(j, st, "migrate");
		return;
	}
	auth_sha256_hex(r->b.api_key, strlen(r->b.api_key), khash);
	/* the cheap refusals first, without the bcrypt work */
	s = store_key_by_hash(st, khash, &k);
	if (api_auth_migrate_key_ok(j, &k, s) != 0) {
		if (s != 0 && s != STORE_NOTFOUND)
			api_auth_unavailable(j, st, "migrate");
		return;
	}
	if (api_auth_account_begin(j, st, r, pwhash, "migrate") != 0)
		return;
	/* again under the write lock: two migrations of one key, one winner */
	s = store_key_by_hash(st, khash, &k);
	if (api_auth_migrate_key_ok(j, &k, s) != 0) {
		if (s != 0 && s != STORE_NOTFOUND)
			api_auth_abort(j, st, "migrate");
		else
			store_rollback(st);
		return;
	}
	if (api_auth_user_create(j, st, r, pwhash, k.tier, &u, "migrate") != 0)
		return;
	if (store_key_set_owner(st, khash, u.id) != 0) {
		api_auth_abort(j, st, "migrate");
		return;
	}
	if (api_auth_grant(j, st, r, &u, NULL, 1, 201, "migrate") != 0)
		return;
	k.user_id = u.id;
	api_auth_key_publish(&k);
	api_auth_carry_usage(r, &k, u.id);
	log_info("auth: legacy key %s migrated to user %lld", k.prefix, (long long)u.id);
}

void
api_auth_migrate(struct exchange *x)
{
	const struct config *cfg = x->rt->cfg;
	const unsigned f = API_AUTH_API_KEY | API_AUTH_EMAIL | API_AUTH_NEW_PASSWORD;
	struct api_auth_req *r;

	if (!api_auth_can_issue(x))
		return;
	if ((r = api_auth_req_new(x, f, f)) == NULL)
		return;
	r->ntiers = cfg->ntiers;
	memcpy(r->tiers, cfg->tiers, sizeof(r->tiers));
	api_auth_submit(x, r, api_auth_migrate_run);
}

/* --- GET /.well-known/jwks.json ---------------------------------------------------------- */

void
api_auth_jwks(struct exchange *x)
{
	char buf[4096];
	int n = gw.auth != NULL ? auth_jwks_json(gw.auth, buf, sizeof(buf)) : -1;

	if (n < 0)
		n = snprintf(buf, sizeof(buf), "{\"keys\":[]}");
	respond_json(x, 200, buf, (size_t)n, NULL);
}

/* --- GET /usage -------------------------------------------------------------------------- */

cJSON *
api_usage_object(const struct config *cfg, const struct identity *id, uint64_t now_ms,
                 struct ratelimit_result *out)
{
	const struct config_tier *t = identify_tier(cfg, id);
	int64_t now = (int64_t)time(NULL);
	struct ratelimit_result res;
	char uid[24];
	int blocked;
	cJSON *o;

	memset(&res, 0, sizeof(res));
	res.limit = res.remaining = t->rate.count;
	/* read, not consumed: asking how much is left costs nothing */
	if (redis_on)
		redis_peek(id->name, &t->rate, &res);
	else if (gw.id_limiter != NULL)
		ratelimit_peek(gw.id_limiter, id->name, strlen(id->name), &t->rate, now_ms, &res);
	snprintf(uid, sizeof(uid), "%lld", (long long)id->user_id);
	blocked = (id->kind == IDENTITY_KEY && identity_blocked("key", id->key_hash, now)) ||
	          (id->user_id > 0 && identity_blocked("user", uid, now)) ||
	          identity_banned(id->name, now) > 0;
	o = cJSON_CreateObject();
	cJSON_AddStringToObject(o, "tier", t->name);
	cJSON_AddNumberToObject(o, "limit", (double)t->rate.count);
	cJSON_AddNumberToObject(o, "window", (double)(t->rate.period_ms / 1000));
	cJSON_AddNumberToObject(o, "remaining", (double)res.remaining);
	cJSON_AddNumberToObject(o, "reset", (double)((res.reset_ms + 999) / 1000));
	/* requests through routes since start-up (built-in endpoints are not counted) */
	cJSON_AddNumberToObject(o, "total_requests", (double)identity_count_get(id->name));
	cJSON_AddBoolToObject(o, "blocked", blocked);
	if (out != NULL)
		*out = res;
	return o;
}

void
api_usage(struct exchange *x)
{
	const struct config_tier *t = identify_tier(x->rt->cfg, &x->id);
	struct ratelimit_result res;
	cJSON *o = api_usage_object(x->rt->cfg, &x->id, x->w->now_ms, &res);
	char *s;

	identify_rate_info(x, &res, &t->rate);
	s = cJSON_PrintUnformatted(o);
	cJSON_Delete(o);
	if (s == NULL) {
		respond_error(x, 503, "service_unavailable", "Out of memory.", NULL, NULL);
		return;
	}
	respond_json(x, 200, s, strlen(s), NULL);
	cJSON_free(s);
}
