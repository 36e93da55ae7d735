#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "api.h"
#include "api_util.h"
#include "auth.h"
#include "cidr.h"
#include "conf.h"
#include "config.h"
#include "identity.h"
#include "jobs.h"
#include "proxy.h"
#include "ratelimit.h"
#include "redis.h"
#include "store.h"
#include "util.h"
#include "xmalloc.h"

/*
 * Admin endpoints over HTTP (SPEC section 6). The router has checked the caller (admin
 * token, or a role=admin JWT, from an admin_allow address) before any of these runs.
 *
 * Every handler validates its input on the worker, copies what the job needs into a
 * struct admin_req and submits a job: the database is only touched on a pool thread.
 * A change is one transaction together with its audit row, so an action is never done
 * without being logged (nor logged without being done); the in-memory identity tables
 * are updated right after the commit, so the next request already sees it.
 */

#define ADMIN_LOGS_DEFAULT 100
#define ADMIN_LOGS_MAX 1000
#define ADMIN_DURATION_MAX_S (10LL * 366 * 86400) /* longer is a permanent block */
#define ADMIN_API_KEY_MAX 256                     /* as identify.c accepts */
#define ADMIN_ID_MAX 9007199254740991.0           /* 2^53 - 1: exact in a JSON number */
#define ADMIN_AMBIGUOUS 3                         /* besides STORE_NOTFOUND */

enum admin_target {
	ADMIN_T_NONE,
	ADMIN_T_KEY_HASH,   /* "api_key": the whole key, kept only as its hash */
	ADMIN_T_KEY_PREFIX, /* "prefix", scoped to user_id when one is given */
	ADMIN_T_USER,       /* "user_id" */
	ADMIN_T_KEY_ANY,    /* the control plane's KEY: the whole key, else a prefix */
};

/* What a job needs from its request: copied on the worker, read on the pool thread. */
struct admin_req {
	char actor[STORE_ACTOR_MAX]; /* "admin-token" | "user:<id>" */
	char client_ip[64];
	enum admin_target target;
	char key_hash[STORE_HASH_MAX];
	char prefix[STORE_PREFIX_MAX];
	int64_t user_id;
	char tier[STORE_TIER_MAX];
	int64_t duration_s; /* 0: until removed */
	struct cidr cidr;
	char ip[64]; /* the CIDR in canonical text */
	int limit;
	char note[64]; /* change_strategy: the new strategy */
	/* upgrade_tier: the tiers as configured when the request came (for the limiter) */
	struct config_tier tiers[CONFIG_MAX_TIERS];
	int ntiers;
};

/* ---------------------------------------------------------------------------------- */
/* On the worker: parsing and validation                                              */
/* ---------------------------------------------------------------------------------- */

static void
admin_bad_request(struct exchange *x, const char *message)
{
	respond_error(x, 400, "invalid_request", message, NULL, NULL);
}

/* A new request description with the caller filled in. Freed with free(). */
static struct admin_req *
admin_req_new(const struct exchange *x)
{
	struct admin_req *a = xcalloc(1, sizeof(*a));

	/* the router resolves x->id only when the admin came with a JWT */
	if (x->id.kind == IDENTITY_USER && x->id.via_jwt)
		snprintf(a->actor, sizeof(a->actor), "user:%lld", (long long)x->id.user_id);
	else
		util_strlcpy(a->actor, "admin-token", sizeof(a->actor));
	cidr_format_addr(x->client_ip, a->client_ip, sizeof(a->client_ip));
	return a;
}

static void
admin_submit(struct exchange *x, struct admin_req *a, void (*run)(struct job *, struct store *))
{
	struct job *j = jobs_new(x, run);

	j->arg = a;
	j->free_arg = free;
	jobs_submit(j);
}

/* A user id: a positive integer, as a JSON number or a string of digits. 0 or -1. */
static int
admin_parse_id(const cJSON *v, int64_t *out)
{
	if (cJSON_IsNumber(v)) {
		double d = v->valuedouble;

		if (!(d >= 1 && d <= ADMIN_ID_MAX) || d != (double)(int64_t)d)
			return -1;
		*out = (int64_t)d;
		return 0;
	}
	if (cJSON_IsString(v)) {
		const char *s = v->valuestring;
		size_t n = strlen(s);

		if (n == 0 || n > 15 || strspn(s, "0123456789") != n)
			return -1;
		*out = strtoll(s, NULL, 10);
		return *out > 0 ? 0 : -1;
	}
	return -1;
}

/*
 * The key or user a request names: "api_key" (the whole key), or "prefix" (scoped to
 * "user_id" when given: prefixes are unique only per owner), or, when allow_user, a
 * "user_id" alone. 0, or -1 after answering 400.
 */
static int
admin_parse_target(struct exchange *x, const cJSON *body, struct admin_req *a, int allow_user)
{
	const cJSON *key = cJSON_GetObjectItemCaseSensitive(body, "api_key");
	const cJSON *prefix = cJSON_GetObjectItemCaseSensitive(body, "prefix");
	const cJSON *uid = cJSON_GetObjectItemCaseSensitive(body, "user_id");
	int has_uid = uid != NULL && !cJSON_IsNull(uid);

	if (has_uid && admin_parse_id(uid, &a->user_id) != 0) {
		admin_bad_request(x, "user_id must be a positive integer.");
		return -1;
	}
	if (key != NULL) {
		size_t n = cJSON_IsString(key) ? strlen(key->valuestring) : 0;

		if (prefix != NULL || has_uid) {
			admin_bad_request(x, "Give api_key alone, not with prefix or user_id.");
			return -1;
		}
		if (n == 0 || n > ADMIN_API_KEY_MAX) {
			admin_bad_request(x, "api_key must be a non-empty string.");
			return -1;
		}
		auth_sha256_hex(key->valuestring, n, a->key_hash);
		a->target = ADMIN_T_KEY_HASH;
		return 0;
	}
	if (prefix != NULL) {
		size_t n = cJSON_IsString(prefix) ? strlen(prefix->valuestring) : 0;

		if (n == 0 || n >= sizeof(a->prefix)) {
			admin_bad_request(x,
			                  "prefix must be a key prefix as /admin/users shows it.");
			return -1;
		}
		util_strlcpy(a->prefix, prefix->valuestring, sizeof(a->prefix));
		a->target = ADMIN_T_KEY_PREFIX;
		return 0;
	}
	if (has_uid && allow_user) {
		a->target = ADMIN_T_USER;
		return 0;
	}
	admin_bad_request(x, allow_user ? "api_key, prefix or user_id is required."
	                                : "api_key (or prefix) is required.");
	return -1;
}

/*
 * "duration": absent or null for a block until removed; seconds as a JSON number or a
 * string of digits; or a duration such as "10m", "2h", "7d". 0, or -1 after a 400.
 */
static int
admin_parse_duration(struct exchange *x, const cJSON *body, int64_t *out)
{
	const cJSON *d = cJSON_GetObjectItemCaseSensitive(body, "duration");
	double secs = -1;

	*out = 0;
	if (d == NULL || cJSON_IsNull(d))
		return 0;
	if (cJSON_IsNumber(d)) {
		secs = d->valuedouble;
	} else if (cJSON_IsString(d)) {
		const char *s = d->valuestring;
		size_t n = strlen(s);
		uint64_t ms;

		if (n > 0 && n <= 12 && strspn(s, "0123456789") == n)
			secs = (double)strtoll(s, NULL, 10);
		else if (conf_parse_duration(s, &ms) == 0)
			secs = (double)ms / 1000.0;
	}
	if (!(secs > 0)) {
		admin_bad_request(x,
		                  "duration must be seconds (> 0) or a duration such as \"10m\"; "
		                  "leave it out for a block until removed.");
		return -1;
	}
	if (secs > (double)ADMIN_DURATION_MAX_S) {
		admin_bad_request(x, "duration is longer than 10 years; leave it out for a block "
		                     "until removed.");
		return -1;
	}
	*out = (int64_t)secs;
	if ((double)*out < secs)
		(*out)++; /* 0.5 s still blocks for a second */
	return 0;
}

/* "ip": an address or a CIDR, kept in canonical text. 0, or -1 after a 400. */
static int
admin_parse_ip(struct exchange *x, const cJSON *body, struct admin_req *a)
{
	const cJSON *ip = cJSON_GetObjectItemCaseSensitive(body, "ip");

	if (!cJSON_IsString(ip) || strlen(ip->valuestring) > 64 ||
	    cidr_parse(ip->valuestring, &a->cidr) != 0) {
		admin_bad_request(x, "ip must be an address or a CIDR (192.0.2.7, 10.0.0.0/8, "
		                     "2001:db8::/32).");
		return -1;
	}
	cidr_format(&a->cidr, a->ip, sizeof(a->ip));
	return 0;
}

/* ---------------------------------------------------------------------------------- */
/* On a pool thread: shared pieces                                                    */
/* ---------------------------------------------------------------------------------- */

/* 1 when there is a database to work on; else answers 503. */
static int
admin_have_store(struct job *j, const struct store *st)
{
	if (st != NULL)
		return 1;
	api_util_unavailable(j, "No database is open.");
	return 0;
}

/* A store call failed (-1): log why, undo the transaction, answer 503. */
static void
admin_store_fail(struct job *j, struct store *st, const struct admin_req *a, const char *what)
{
	log_warnx("admin %s (%s): %s", what, a->actor, store_error(st));
	store_rollback(st);
	api_util_unavailable(j, "The identity store is unavailable; try again.");
}

/*
 * Appends the audit row of an action: detail (consumed, may be NULL) gets the client's
 * address. Meant to run inside the action's transaction. 0 or -1.
 */
static int
admin_audit(struct store *st, const struct admin_req *a, const char *action, const char *target,
            cJSON *detail)
{
	char *s;
	int r = -1;

	if (detail == NULL)
		detail = cJSON_CreateObject();
	if (a->client_ip[0] != '\0') /* "": the control plane, a local socket */
		cJSON_AddStringToObject(detail, "ip", a->client_ip);
	s = cJSON_PrintUnformatted(detail);
	cJSON_Delete(detail);
	if (s != NULL)
		r = store_audit(st, a->actor, action, target, s);
	cJSON_free(s);
	return r;
}

static int
admin_begin(struct job *j, struct store *st, const struct admin_req *a, const char *what)
{
	if (!admin_have_store(j, st))
		return -1;
	if (store_begin(st) != 0) {
		admin_store_fail(j, st, a, what);
		return -1;
	}
	return 0;
}

static int
admin_commit(struct job *j, struct store *st, const struct admin_req *a, const char *what)
{
	if (store_commit(st) != 0) {
		admin_store_fail(j, st, a, what);
		return -1;
	}
	return 0;
}

/* Finding a key by its prefix alone: the newest unrevoked one, and whether it is alone. */
struct admin_prefix_walk {
	const char *prefix;
	struct store_key best;
	int found;
	int unrevoked; /* matches not revoked */
};

static int
admin_prefix_match(const struct store_key *k, void *arg)
{
	struct admin_prefix_walk *w = arg;

	if (strcmp(k->prefix, w->prefix) != 0)
		return 0;
	if (!k->revoked)
		w->unrevoked++;
	/* rows come oldest first: a later row of the same standing is newer */
	if (!w->found || (w->best.revoked && !k->revoked) ||
	    (w->best.revoked == k->revoked && k->created_at >= w->best.created_at)) {
		w->best = *k;
		w->found = 1;
	}
	return 0;
}

/* 0, STORE_NOTFOUND, ADMIN_AMBIGUOUS (several live keys of different owners), -1. */
static int
admin_key_by_prefix_any(struct store *st, const char *prefix, struct store_key *out)
{
	struct admin_prefix_walk w;

	memset(&w, 0, sizeof(w));
	w.prefix = prefix;
	if (store_key_all(st, admin_prefix_match, &w) != 0)
		return -1;
	if (!w.found)
		return STORE_NOTFOUND;
	if (w.unrevoked > 1)
		return ADMIN_AMBIGUOUS;
	*out = w.best;
	return 0;
}

int
api_admin_key_lookup(struct store *st, const char *who, struct store_key *k)
{
	char hash[STORE_HASH_MAX];
	size_t n = strlen(who);
	int r;

	if (n == 0 || n > ADMIN_API_KEY_MAX)
		return STORE_NOTFOUND;
	auth_sha256_hex(who, n, hash);
	r = store_key_by_hash(st, hash, k);
	if (r == STORE_NOTFOUND && n < STORE_PREFIX_MAX)
		r = admin_key_by_prefix_any(st, who, k);
	return r;
}

/* The key a request names into *k. 0, or -1 with the answer set (404, 400, 503). */
static int
admin_key_find(struct job *j, struct store *st, const struct admin_req *a, struct store_key *k)
{
	int r = STORE_NOTFOUND;

	if (a->target == ADMIN_T_KEY_HASH || a->target == ADMIN_T_KEY_ANY)
		r = store_key_by_hash(st, a->key_hash, k);
	/* the control plane's KEY that is not a whole key may be a prefix */
	if (a->target == ADMIN_T_KEY_ANY && r == STORE_NOTFOUND && a->prefix[0] != '\0')
		r = admin_key_by_prefix_any(st, a->prefix, k);
	else if (a->target == ADMIN_T_KEY_PREFIX && a->user_id > 0)
		r = store_key_by_prefix(st, a->user_id, a->prefix, k);
	else if (a->target == ADMIN_T_KEY_PREFIX)
		r = admin_key_by_prefix_any(st, a->prefix, k);
	switch (r) {
	case 0:
		return 0;
	case STORE_NOTFOUND:
		store_rollback(st);
		jobs_set_error(j, 404, "not_found", "No such API key.");
		return -1;
	case ADMIN_AMBIGUOUS:
		store_rollback(st);
		jobs_set_error(j, 400, "invalid_request",
		               a->target == ADMIN_T_KEY_ANY
		                   ? "Several keys have this prefix; give the whole key."
		                   : "Several keys have this prefix; give user_id too, or the api_key.");
		return -1;
	default:
		admin_store_fail(j, st, a, "key lookup");
		return -1;
	}
}

/* The user a request names into *u. 0, or -1 with the answer set (404, 503). */
static int
admin_user_find(struct job *j, struct store *st, const struct admin_req *a, int64_t id,
                struct store_user *u)
{
	int r = store_user_by_id(st, id, u);

	if (r == 0)
		return 0;
	if (r == STORE_NOTFOUND) {
		store_rollback(st);
		jobs_set_error(j, 404, "not_found", "No such user.");
	} else {
		admin_store_fail(j, st, a, "user lookup");
	}
	return -1;
}

/* A growing list of keys (callbacks may not call the store: collect, then write). */
struct admin_keys {
	struct store_key *v;
	size_t n, cap;
};

static int
admin_keys_collect(const struct store_key *k, void *arg)
{
	struct admin_keys *ks = arg;

	if (ks->n == ks->cap) {
		ks->cap = ks->cap ? ks->cap * 2 : 8;
		ks->v = xrealloc(ks->v, ks->cap * sizeof(*ks->v));
	}
	ks->v[ks->n++] = *k;
	return 0;
}

/* ---------------------------------------------------------------------------------- */
/* POST /change_strategy                                                              */
/* ---------------------------------------------------------------------------------- */

static void
admin_audit_detached(struct store *st, void *arg)
{
	const struct admin_req *a = arg;
	cJSON *d = cJSON_CreateObject();

	if (st == NULL) {
		cJSON_Delete(d);
		return;
	}
	cJSON_AddStringToObject(d, "strategy", a->note);
	if (admin_audit(st, a, "change_strategy", a->note, d) != 0)
		log_warnx("admin change_strategy (%s): audit row not written: %s", a->actor,
		          store_error(st));
}

void
api_change_strategy(struct exchange *x)
{
	cJSON *j, *s;
	char body[256], msg[256];
	struct admin_req *a;
	int st, n;

	if ((j = api_util_body_object(x)) == NULL)
		return;
	s = cJSON_GetObjectItemCaseSensitive(j, "strategy");
	st = cJSON_IsString(s) ? balance_strategy_from_name(s->valuestring) : -1;
	cJSON_Delete(j);
	if (st < 0) {
		char list[200];
		size_t o = 0;

		/* the valid names in the message for people and as an array for scripts */
		for (int i = 0; i < BALANCE_COUNT && o < sizeof(list); i++)
			o += (size_t)snprintf(list + o, sizeof(list) - o, "%s\"%s\"", i ? "," : "",
			                      balance_strategy_name(i));
		snprintf(msg, sizeof(msg), "Unknown strategy; valid names: %s.",
		         balance_strategy_list());
		snprintf(body, sizeof(body), "\"valid\":[%s]", list);
		respond_error(x, 400, "invalid_request", msg, NULL, body);
		return;
	}
	atomic_store(&gw.strategy, st);
	log_info("strategy changed to %s over HTTP", balance_strategy_name(st));
	/* the switch is in memory and immediate: the audit row follows off-loop */
	a = admin_req_new(x);
	util_strlcpy(a->note, balance_strategy_name(st), sizeof(a->note));
	jobs_detached(admin_audit_detached, a, free);
	n = snprintf(body, sizeof(body), "{\"ok\":true,\"strategy\":\"%s\"}",
	             balance_strategy_name(st));
	respond_json(x, 200, body, (size_t)n, NULL);
}

/* ---------------------------------------------------------------------------------- */
/* GET /admin/users                                                                   */
/* ---------------------------------------------------------------------------------- */

struct admin_user_ref {
	int64_t id;
	cJSON *keys;
};

struct admin_users_walk {
	cJSON *users;
	cJSON *legacy;               /* keys no user owns */
	struct admin_user_ref *refs; /* in id order, as the users come */
	size_t n, cap;
	int64_t now;
};

static int
admin_users_add(const struct store_user *u, void *arg)
{
	struct admin_users_walk *w = arg;
	cJSON *o = cJSON_CreateObject();
	char id[32];

	snprintf(id, sizeof(id), "%lld", (long long)u->id);
	cJSON_AddNumberToObject(o, "user_id", (double)u->id);
	cJSON_AddStringToObject(o, "email", u->email);
	cJSON_AddStringToObject(o, "tier", u->tier);
	cJSON_AddStringToObject(o, "role", u->role);
	cJSON_AddNumberToObject(o, "created_at", (double)u->created_at);
	cJSON_AddBoolToObject(o, "blocked", identity_blocked("user", id, w->now));
	if (w->n == w->cap) {
		w->cap = w->cap ? w->cap * 2 : 64;
		w->refs = xrealloc(w->refs, w->cap * sizeof(*w->refs));
	}
	w->refs[w->n].id = u->id;
	w->refs[w->n].keys = cJSON_AddArrayToObject(o, "keys");
	w->n++;
	cJSON_AddItemToArray(w->users, o);
	return 0;
}

static int
admin_user_ref_cmp(const void *key, const void *elem)
{
	int64_t id = *(const int64_t *)key, e = ((const struct admin_user_ref *)elem)->id;

	return id < e ? -1 : id > e;
}

static int
admin_users_add_key(const struct store_key *k, void *arg)
{
	struct admin_users_walk *w = arg;
	const struct admin_user_ref *ref = NULL;
	cJSON *o;

	if (k->user_id != 0) {
		ref = bsearch(&k->user_id, w->refs, w->n, sizeof(*w->refs), admin_user_ref_cmp);
		if (ref == NULL)
			return 0; /* its user was created after the list was read */
	}
	/* the prefix only: never the key, nor its hash */
	o = cJSON_CreateObject();
	cJSON_AddStringToObject(o, "prefix", k->prefix);
	cJSON_AddStringToObject(o, "tier", k->tier);
	cJSON_AddNumberToObject(o, "created_at", (double)k->created_at);
	api_util_add_time(o, "last_used", k->last_used);
	api_util_add_time(o, "expires_at", k->expires_at);
	cJSON_AddBoolToObject(o, "revoked", k->revoked != 0);
	cJSON_AddBoolToObject(o, "blocked", identity_blocked("key", k->hash, w->now));
	cJSON_AddItemToArray(ref != NULL ? ref->keys : w->legacy, o);
	return 0;
}

static void
admin_users_run(struct job *j, struct store *st)
{
	const struct admin_req *a = j->arg;
	struct admin_users_walk w;
	cJSON *o;

	if (!admin_have_store(j, st))
		return;
	memset(&w, 0, sizeof(w));
	w.now = (int64_t)time(NULL);
	o = cJSON_CreateObject();
	w.users = cJSON_AddArrayToObject(o, "users");
	w.legacy = cJSON_AddArrayToObject(o, "legacy_keys");
	/* two reads, not one per user: users come in id order, so keys find theirs by bsearch */
	if (store_user_list(st, admin_users_add, &w) != 0 ||
	    store_key_all(st, admin_users_add_key, &w) != 0) {
		cJSON_Delete(o);
		free(w.refs);
		admin_store_fail(j, st, a, "users");
		return;
	}
	free(w.refs);
	api_util_set_object(j, 200, o, 500);
}

void
api_admin_users(struct exchange *x)
{
	admin_submit(x, admin_req_new(x), admin_users_run);
}

/* ---------------------------------------------------------------------------------- */
/* POST /admin/upgrade_tier                                                           */
/* ---------------------------------------------------------------------------------- */

/* The rate of a tier by name in the request's copy of the tiers (the lowest if unknown). */
static const struct conf_rate *
admin_tier_rate(const struct admin_req *a, const char *name)
{
	for (int i = 0; i < a->ntiers; i++)
		if (strcmp(a->tiers[i].name, name) == 0)
			return &a->tiers[i].rate;
	return &a->tiers[0].rate;
}

/*
 * What the identity used of its quota under the old tier keeps counting under the new
 * one (5 of free's 5 become 5 of premium's 100), instead of the limiter's state being
 * read at the new rate.
 */
static void
admin_rescale_quota(const struct admin_req *a, int64_t uid, const char *key_hash,
                    const char *old_tier)
{
	char name[80];

	if (gw.id_limiter == NULL || a->ntiers == 0)
		return;
	if (uid > 0)
		snprintf(name, sizeof(name), "u:%lld", (long long)uid);
	else if (key_hash != NULL)
		snprintf(name, sizeof(name), "k:%.12s", key_hash);
	else
		return;
	ratelimit_rescale(gw.id_limiter, name, strlen(name), admin_tier_rate(a, old_tier),
	                  admin_tier_rate(a, a->tier), util_now_ms());
	if (redis_on)
		redis_rescale(name, admin_tier_rate(a, old_tier), admin_tier_rate(a, a->tier));
}

/*
 * A key's new tier. When a user owns the key, the user's tier is what its limit counts
 * (identify.c), so the user and all of its keys move together; an ownerless key moves
 * alone.
 */
static void
admin_upgrade_run(struct job *j, struct store *st)
{
	const struct admin_req *a = j->arg;
	struct admin_keys ks = {0};
	struct store_key k;
	struct store_user u;
	char target[64], old_tier[STORE_TIER_MAX];
	int have_key = 0;
	int64_t uid = a->user_id;
	cJSON *d, *o;

	if (admin_begin(j, st, a, "upgrade_tier") != 0)
		return;
	if (a->target != ADMIN_T_USER) {
		if (admin_key_find(j, st, a, &k) != 0)
			return;
		have_key = 1;
		uid = k.user_id;
		util_strlcpy(old_tier, k.tier, sizeof(old_tier));
	}
	if (uid > 0) {
		if (admin_user_find(j, st, a, uid, &u) != 0)
			return;
		util_strlcpy(old_tier, u.tier, sizeof(old_tier));
		if (store_user_set_tier(st, uid, a->tier) != 0 ||
		    store_key_list_user(st, uid, admin_keys_collect, &ks) != 0)
			goto fail;
	} else {
		admin_keys_collect(&k, &ks);
	}
	for (size_t i = 0; i < ks.n; i++) {
		if (store_key_set_tier(st, ks.v[i].hash, a->tier) != 0)
			goto fail;
		util_strlcpy(ks.v[i].tier, a->tier, sizeof(ks.v[i].tier));
	}
	if (have_key)
		snprintf(target, sizeof(target), "key:%s", k.prefix);
	else
		snprintf(target, sizeof(target), "user:%lld", (long long)uid);
	d = cJSON_CreateObject();
	cJSON_AddStringToObject(d, "tier", a->tier);
	cJSON_AddStringToObject(d, "previous_tier", old_tier);
	if (uid > 0)
		cJSON_AddNumberToObject(d, "user_id", (double)uid);
	cJSON_AddNumberToObject(d, "keys", (double)ks.n);
	if (admin_audit(st, a, "upgrade_tier", target, d) != 0)
		goto fail;
	if (admin_commit(j, st, a, "upgrade_tier") != 0) {
		free(ks.v);
		return;
	}

	for (size_t i = 0; i < ks.n; i++)
		api_auth_key_publish(&ks.v[i]);
	if (uid > 0) {
		struct identity_user iu;

		memset(&iu, 0, sizeof(iu));
		iu.id = uid;
		util_strlcpy(iu.tier, a->tier, sizeof(iu.tier));
		util_strlcpy(iu.role, u.role, sizeof(iu.role));
		identity_user_put(&iu);
	}
	admin_rescale_quota(a, uid, have_key ? k.hash : NULL, old_tier);
	log_info("admin %s: %s tier %s -> %s (%zu keys)", a->actor, target, old_tier, a->tier,
	         ks.n);
	o = cJSON_CreateObject();
	cJSON_AddBoolToObject(o, "ok", 1);
	cJSON_AddStringToObject(o, "tier", a->tier);
	if (uid > 0)
		cJSON_AddNumberToObject(o, "user_id", (double)uid);
	if (have_key)
		cJSON_AddStringToObject(o, "prefix", k.prefix);
	cJSON_AddNumberToObject(o, "keys_updated", (double)ks.n);
	free(ks.v);
	api_util_set_object(j, 200, o, 500);
	return;
fail:
	free(ks.v);
	admin_store_fail(j, st, a, "upgrade_tier");
}

/* The configured tiers' names into buf, each quoted with q, separated by sep. */
static void
admin_tier_names(const struct config *cfg, const char *sep, const char *q, char *buf, size_t len)
{
	size_t o = 0;

	buf[0] = '\0';
	for (int i = 0; i < cfg->ntiers && o < len; i++)
		o += (size_t)snprintf(buf + o, len - o, "%s%s%s%s", i ? sep : "", q,
		                      cfg->tiers[i].name, q);
}

/* The configured tiers, for a 400: in the message for people and as an array for scripts. */
static void
admin_bad_tier(struct exchange *x, const struct config *cfg)
{
	char names[400], valid[400], msg[480], extra[420];

	admin_tier_names(cfg, ", ", "", names, sizeof(names));
	admin_tier_names(cfg, ",", "\"", valid, sizeof(valid));
	snprintf(msg, sizeof(msg), "tier must be a configured tier: %s.", names);
	snprintf(extra, sizeof(extra), "\"valid\":[%s]", valid);
	respond_error(x, 400, "invalid_request", msg, NULL, extra);
}

void
api_admin_upgrade_tier(struct exchange *x)
{
	const struct config *cfg = x->rt->cfg;
	struct admin_req *a;
	const cJSON *t;
	cJSON *body;
	int idx;

	if ((body = api_util_body_object(x)) == NULL)
		return;
	a = admin_req_new(x);
	if (admin_parse_target(x, body, a, 1) != 0)
		goto bad;
	t = cJSON_GetObjectItemCaseSensitive(body, "tier");
	idx = cJSON_IsString(t) ? config_tier_find(cfg, t->valuestring) : -1;
	if (idx < 0) {
		admin_bad_tier(x, cfg);
		goto bad;
	}
	/* the configured spelling, which is what the limiter looks up */
	util_strlcpy(a->tier, cfg->tiers[idx].name, sizeof(a->tier));
	memcpy(a->tiers, cfg->tiers, sizeof(a->tiers));
	a->ntiers = cfg->ntiers;
	cJSON_Delete(body);
	admin_submit(x, a, admin_upgrade_run);
	return;
bad:
	cJSON_Delete(body);
	free(a);
}

/* ---------------------------------------------------------------------------------- */
/* POST /admin/block_key, /admin/unblock_key                                          */
/* ---------------------------------------------------------------------------------- */

/* The key or user a block is about, as the store and the identity tables name it. */
struct admin_subject {
	const char *kind; /* "key" | "user" */
	char value[STORE_VALUE_MAX];
	char target[64];  /* audit target: "key:<prefix>" | "user:<id>" */
	char bans[2][40]; /* progressive-ban names of that identity (identify.c) */
	int nbans;
	int have_key;
	struct store_key k;
	int64_t user_id;
};

/* 0, or -1 with the answer set. */
static int
admin_subject_find(struct job *j, struct store *st, const struct admin_req *a,
                   struct admin_subject *s)
{
	memset(s, 0, sizeof(*s));
	if (a->target == ADMIN_T_USER) {
		struct store_user u;

		if (admin_user_find(j, st, a, a->user_id, &u) != 0)
			return -1;
		s->kind = "user";
		s->user_id = u.id;
		snprintf(s->value, sizeof(s->value), "%lld", (long long)u.id);
		snprintf(s->target, sizeof(s->target), "user:%lld", (long long)u.id);
		snprintf(s->bans[s->nbans++], sizeof(s->bans[0]), "u:%lld", (long long)u.id);
		return 0;
	}
	if (admin_key_find(j, st, a, &s->k) != 0)
		return -1;
	s->have_key = 1;
	s->kind = "key";
	util_strlcpy(s->value, s->k.hash, sizeof(s->value));
	snprintf(s->target, sizeof(s->target), "key:%s", s->k.prefix);
	snprintf(s->bans[s->nbans++], sizeof(s->bans[0]), "k:%.12s", s->k.hash);
	if (s->k.user_id > 0) {
		/* an owned key is limited, and so banned, as its user */
		s->user_id = s->k.user_id;
		snprintf(s->bans[s->nbans++], sizeof(s->bans[0]), "u:%lld",
		         (long long)s->k.user_id);
	}
	return 0;
}

static void
admin_subject_add(cJSON *o, const struct admin_subject *s)
{
	if (s->have_key)
		cJSON_AddStringToObject(o, "prefix", s->k.prefix);
	if (s->user_id > 0)
		cJSON_AddNumberToObject(o, "user_id", (double)s->user_id);
}

static void
admin_block_key_run(struct job *j, struct store *st)
{
	const struct admin_req *a = j->arg;
	struct admin_subject s;
	int64_t until = a->duration_s ? (int64_t)time(NULL) + a->duration_s : 0;
	const char *action;
	cJSON *d, *o;

	if (admin_begin(j, st, a, "block_key") != 0)
		return;
	if (admin_subject_find(j, st, a, &s) != 0)
		return;
	action = s.have_key ? "block_key" : "block_user";
	if (store_block_set(st, s.kind, s.value, until) != 0)
		goto fail;
	d = cJSON_CreateObject();
	api_util_add_time(d, "until", until);
	if (s.have_key && s.k.user_id > 0)
		cJSON_AddNumberToObject(d, "user_id", (double)s.k.user_id);
	if (admin_audit(st, a, action, s.target, d) != 0)
		goto fail;
	if (admin_commit(j, st, a, action) != 0)
		return;
	identity_block(s.kind, s.value, until);
	log_info("admin %s: %s blocked for %llds (0: until removed)", a->actor, s.target,
	         (long long)a->duration_s);
	o = cJSON_CreateObject();
	cJSON_AddBoolToObject(o, "ok", 1);
	cJSON_AddStringToObject(o, "blocked", s.kind);
	admin_subject_add(o, &s);
	api_util_add_time(o, "until", until);
	api_util_set_object(j, 200, o, 500);
	return;
fail:
	admin_store_fail(j, st, a, action);
}

/*
 * Lifts an admin block and any progressive ban of the same identity: an admin who
 * unblocks someone means them to get through. 404 only when there was neither.
 */
static void
admin_unblock_key_run(struct job *j, struct store *st)
{
	const struct admin_req *a = j->arg;
	struct admin_subject s;
	int64_t now = (int64_t)time(NULL);
	int rb, cleared = 0, in_memory;
	const char *action = "unblock_key";
	cJSON *d, *o;

	if (admin_begin(j, st, a, action) != 0)
		return;
	if (admin_subject_find(j, st, a, &s) != 0)
		return;
	if (!s.have_key)
		action = "unblock_user";
	rb = store_block_remove(st, s.kind, s.value);
	if (rb != 0 && rb != STORE_NOTFOUND)
		goto fail;
	in_memory = identity_blocked(s.kind, s.value, now);
	for (int i = 0; i < s.nbans; i++) {
		/* a ban that has just started may not be persisted yet: look in memory too */
		int rn = store_ban_remove(st, "identity", s.bans[i]);

		if (rn != 0 && rn != STORE_NOTFOUND)
			goto fail;
		if (rn == 0 || identity_banned(s.bans[i], now) > 0)
			cleared++;
	}
	if (rb == STORE_NOTFOUND && !in_memory && cleared == 0) {
		store_rollback(st);
		jobs_set_error(j, 404, "not_found",
		               s.have_key ? "This key is not blocked."
		                          : "This user is not blocked.");
		return;
	}
	d = cJSON_CreateObject();
	cJSON_AddBoolToObject(d, "block_removed", rb == 0 || in_memory);
	cJSON_AddNumberToObject(d, "bans_cleared", cleared);
	if (admin_audit(st, a, action, s.target, d) != 0)
		goto fail;
	if (admin_commit(j, st, a, action) != 0)
		return;
	identity_unblock(s.kind, s.value);
	for (int i = 0; i < s.nbans; i++)
		identity_ban_clear(s.bans[i]);
	log_info("admin %s: %s unblocked (%d bans cleared)", a->actor, s.target, cleared);
	o = cJSON_CreateObject();
	cJSON_AddBoolToObject(o, "ok", 1);
	cJSON_AddStringToObject(o, "unblocked", s.kind);
	admin_subject_add(o, &s);
	cJSON_AddBoolToObject(o, "block_removed", rb == 0 || in_memory);
	cJSON_AddNumberToObject(o, "bans_cleared", cleared);
	api_util_set_object(j, 200, o, 500);
	return;
fail:
	admin_store_fail(j, st, a, action);
}

/* block_key and unblock_key take the same target: api_key, prefix (+user_id) or user_id. */
static void
admin_key_action(struct exchange *x, int with_duration, void (*run)(struct job *, struct store *))
{
	struct admin_req *a;
	cJSON *body;

	if ((body = api_util_body_object(x)) == NULL)
		return;
	a = admin_req_new(x);
	if (admin_parse_target(x, body, a, 1) != 0 ||
	    (with_duration && admin_parse_duration(x, body, &a->duration_s) != 0)) {
		cJSON_Delete(body);
		free(a);
		return;
	}
	cJSON_Delete(body);
	admin_submit(x, a, run);
}

void
api_admin_block_key(struct exchange *x)
{
	admin_key_action(x, 1, admin_block_key_run);
}

void
api_admin_unblock_key(struct exchange *x)
{
	admin_key_action(x, 0, admin_unblock_key_run);
}

/* ---------------------------------------------------------------------------------- */
/* POST /admin/block_ip, /admin/unblock_ip                                            */
/* ---------------------------------------------------------------------------------- */

static void
admin_block_ip_run(struct job *j, struct store *st)
{
	const struct admin_req *a = j->arg;
	int64_t until = a->duration_s ? (int64_t)time(NULL) + a->duration_s : 0;
	char target[80];
	cJSON *d, *o;

	if (admin_begin(j, st, a, "block_ip") != 0)
		return;
	snprintf(target, sizeof(target), "ip:%s", a->ip);
	if (store_block_set(st, "ip", a->ip, until) != 0)
		goto fail;
	d = cJSON_CreateObject();
	api_util_add_time(d, "until", until);
	if (admin_audit(st, a, "block_ip", target, d) != 0)
		goto fail;
	if (admin_commit(j, st, a, "block_ip") != 0)
		return;
	identity_block("ip", a->ip, until);
	log_info("admin %s: %s blocked for %llds (0: until removed)", a->actor, a->ip,
	         (long long)a->duration_s);
	o = cJSON_CreateObject();
	cJSON_AddBoolToObject(o, "ok", 1);
	cJSON_AddStringToObject(o, "ip", a->ip);
	api_util_add_time(o, "until", until);
	api_util_set_object(j, 200, o, 500);
	return;
fail:
	admin_store_fail(j, st, a, "block_ip");
}

/* The IP ban names ("ip:<addr>", router.c) inside a CIDR, from the store. */
struct admin_ip_bans {
	const struct cidr *c;
	char (*names)[STORE_VALUE_MAX];
	size_t n, cap;
};

static void
admin_ip_bans_push(struct admin_ip_bans *w, const char *name)
{
	if (w->n == w->cap) {
		w->cap = w->cap ? w->cap * 2 : 8;
		w->names = xrealloc(w->names, w->cap * sizeof(*w->names));
	}
	util_strlcpy(w->names[w->n++], name, sizeof(w->names[0]));
}

static int
admin_ip_ban_match(const struct store_ban *b, void *arg)
{
	struct admin_ip_bans *w = arg;
	uint8_t addr[16];

	if (strcmp(b->kind, "ip") == 0 && strncmp(b->value, "ip:", 3) == 0 &&
	    cidr_parse_addr(b->value + 3, strlen(b->value + 3), addr) == 0 &&
	    cidr_contains(w->c, addr))
		admin_ip_bans_push(w, b->value);
	return 0;
}

static void
admin_unblock_ip_run(struct job *j, struct store *st)
{
	const struct admin_req *a = j->arg;
	struct admin_ip_bans w;
	int64_t now = (int64_t)time(NULL);
	int rb, cleared = 0;
	char target[80];
	cJSON *d, *o;

	memset(&w, 0, sizeof(w));
	w.c = &a->cidr;
	if (admin_begin(j, st, a, "unblock_ip") != 0)
		return;
	snprintf(target, sizeof(target), "ip:%s", a->ip);
	rb = store_block_remove(st, "ip", a->ip);
	if (rb != 0 && rb != STORE_NOTFOUND)
		goto fail;
	if (a->cidr.prefix == 128) {
		/* one address: its ban, persisted or only in memory yet */
		char addr[64], name[80];

		cidr_format_addr(a->cidr.addr, addr, sizeof(addr));
		snprintf(name, sizeof(name), "ip:%s", addr);
		admin_ip_bans_push(&w, name);
	} else if (store_bans_all(st, now, admin_ip_ban_match, &w) != 0) {
		goto fail;
	}
	for (size_t i = 0; i < w.n; i++) {
		int rn = store_ban_remove(st, "ip", w.names[i]);

		if (rn != 0 && rn != STORE_NOTFOUND)
			goto fail;
		if (rn == 0 || identity_banned(w.names[i], now) > 0)
			cleared++;
	}
	/* the in-memory table has this exact block when the store lost it: rare, but lift it */
	if (rb == STORE_NOTFOUND && cleared == 0 && !identity_unblock("ip", a->ip)) {
		store_rollback(st);
		free(w.names);
		jobs_set_error(j, 404, "not_found", "This address is not blocked.");
		return;
	}
	d = cJSON_CreateObject();
	cJSON_AddBoolToObject(d, "block_removed", rb == 0);
	cJSON_AddNumberToObject(d, "bans_cleared", cleared);
	if (admin_audit(st, a, "unblock_ip", target, d) != 0)
		goto fail;
	if (admin_commit(j, st, a, "unblock_ip") != 0) {
		free(w.names);
		return;
	}
	identity_unblock("ip", a->ip);
	for (size_t i = 0; i < w.n; i++)
		identity_ban_clear(w.names[i]);
	free(w.names);
	log_info("admin %s: %s unblocked (%d bans cleared)", a->actor, a->ip, cleared);
	o = cJSON_CreateObject();
	cJSON_AddBoolToObject(o, "ok", 1);
	cJSON_AddStringToObject(o, "ip", a->ip);
	cJSON_AddBoolToObject(o, "block_removed", rb == 0);
	cJSON_AddNumberToObject(o, "bans_cleared", cleared);
	api_util_set_object(j, 200, o, 500);
	return;
fail:
	free(w.names);
	admin_store_fail(j, st, a, "unblock_ip");
}

void
api_admin_block_ip(struct exchange *x)
{
	const cJSON *force;
	struct admin_req *a;
	cJSON *body;

	if ((body = api_util_body_object(x)) == NULL)
		return;
	a = admin_req_new(x);
	if (admin_parse_ip(x, body, a) != 0 || admin_parse_duration(x, body, &a->duration_s) != 0)
		goto bad;
	/* every path is refused to a blocked address, this endpoint too: no locking out by typo */
	force = cJSON_GetObjectItemCaseSensitive(body, "force");
	if (cidr_contains(&a->cidr, x->client_ip) && !cJSON_IsTrue(force)) {
		char msg[200];

		snprintf(
		    msg, sizeof(msg),
		    "%s contains your own address (%s); add \"force\":true to block it anyway.",
		    a->ip, a->client_ip);
		admin_bad_request(x, msg);
		goto bad;
	}
	cJSON_Delete(body);
	admin_submit(x, a, admin_block_ip_run);
	return;
bad:
	cJSON_Delete(body);
	free(a);
}

void
api_admin_unblock_ip(struct exchange *x)
{
	struct admin_req *a;
	cJSON *body;

	if ((body = api_util_body_object(x)) == NULL)
		return;
	a = admin_req_new(x);
	if (admin_parse_ip(x, body, a) != 0) {
		cJSON_Delete(body);
		free(a);
		return;
	}
	cJSON_Delete(body);
	admin_submit(x, a, admin_unblock_ip_run);
}

/* ---------------------------------------------------------------------------------- */
/* GET /admin/logs, /logs                                                             */
/* ---------------------------------------------------------------------------------- */

static int
admin_logs_add(const struct store_audit_entry *e, void *arg)
{
	cJSON *entries = arg, *o = cJSON_CreateObject(), *d = NULL;

	cJSON_AddNumberToObject(o, "id", (double)e->id);
	cJSON_AddNumberToObject(o, "time", (double)e->at);
	cJSON_AddStringToObject(o, "actor", e->actor);
	cJSON_AddStringToObject(o, "action", e->action);
	if (e->target[0] != '\0')
		cJSON_AddStringToObject(o, "target", e->target);
	else
		cJSON_AddNullToObject(o, "target");
	/* detail is JSON we wrote: embedded as an object; anything else as a string */
	if (e->detail[0] != '\0' && (d = cJSON_Parse(e->detail)) == NULL)
		d = cJSON_CreateString(e->detail);
	cJSON_AddItemToObject(o, "detail", d != NULL ? d : cJSON_CreateNull());
	cJSON_AddItemToArray(entries, o);
	return 0;
}

static void
admin_logs_run(struct job *j, struct store *st)
{
	const struct admin_req *a = j->arg;
	cJSON *o;

	if (!admin_have_store(j, st))
		return;
	o = cJSON_CreateObject();
	if (store_audit_list(st, a->limit, admin_logs_add, cJSON_AddArrayToObject(o, "entries")) !=
	    0) {
		cJSON_Delete(o);
		admin_store_fail(j, st, a, "logs");
		return;
	}
	api_util_set_object(j, 200, o, 500);
}

int
api_admin_parse_limit(const struct exchange *x, int *limit)
{
	const struct http_msg *m = &x->req;
	const char *q = x->in.data + m->target_off + m->path_len;
	const char *end = x->in.data + m->target_off + m->target_len;

	*limit = ADMIN_LOGS_DEFAULT;
	if (q >= end || *q != '?')
		return 0;
	for (q++; q < end;) {
		const char *amp = memchr(q, '&', (size_t)(end - q));
		const char *e = amp != NULL ? amp : end;

		if (e - q >= 6 && memcmp(q, "limit=", 6) == 0) {
			long long n = 0;

			if (e - q == 6)
				return -1;
			for (const char *p = q + 6; p < e; p++) {
				if (*p < '0' || *p > '9')
					return -1;
				if (n <= ADMIN_LOGS_MAX) /* bounded: anything larger is the max */
					n = n * 10 + (*p - '0');
			}
			if (n < 1)
				return -1;
			*limit = n > ADMIN_LOGS_MAX ? ADMIN_LOGS_MAX : (int)n;
		}
		q = e + 1;
	}
	return 0;
}

void
api_admin_logs(struct exchange *x)
{
	struct admin_req *a;
	int limit;

	if (api_admin_parse_limit(x, &limit) != 0) {
		admin_bad_request(x, "limit must be a whole number from 1 to 1000.");
		return;
	}
	a = admin_req_new(x);
	a->limit = limit;
	admin_submit(x, a, admin_logs_run);
}

/* ---------------------------------------------------------------------------------- */
/* The control plane (control.c): the same actions, on the caller's thread            */
/* ---------------------------------------------------------------------------------- */

/* who: "u:ID" or a user id, else a whole key or a key prefix. 0, or -1 after a 400. */
static int
admin_control_target(struct job *j, const char *who, struct admin_req *a)
{
	const char *id = strncmp(who, "u:", 2) == 0 ? who + 2 : who;
	size_t n = strlen(who), idn = strlen(id);

	if (idn > 0 && idn <= 15 && strspn(id, "0123456789") == idn &&
	    (a->user_id = strtoll(id, NULL, 10)) > 0) {
		a->target = ADMIN_T_USER;
		return 0;
	}
	if (n == 0 || n > ADMIN_API_KEY_MAX || id != who) {
		jobs_set_error(j, 400, "invalid_request",
		               "Give an API key, a key prefix or u:USER_ID.");
		return -1;
	}
	auth_sha256_hex(who, n, a->key_hash);
	if (n < sizeof(a->prefix))
		util_strlcpy(a->prefix, who, sizeof(a->prefix));
	a->target = ADMIN_T_KEY_ANY;
	return 0;
}

void
api_admin_control(enum api_admin_op op, const char *actor, const char *who, const char *tier,
                  const struct config *cfg, struct store *st, struct job *j)
{
	static void (*const run[])(struct job *, struct store *) = {
	    [API_ADMIN_USERS] = admin_users_run,
	    [API_ADMIN_TIER] = admin_upgrade_run,
	    [API_ADMIN_BLOCK] = admin_block_key_run,
	    [API_ADMIN_UNBLOCK] = admin_unblock_key_run,
	};
	struct admin_req *a = xcalloc(1, sizeof(*a));

	util_strlcpy(a->actor, actor, sizeof(a->actor));
	if (op != API_ADMIN_USERS && admin_control_target(j, who, a) != 0)
		goto out;
	if (op == API_ADMIN_TIER) {
		int idx = config_tier_find(cfg, tier);

		if (idx < 0) {
			char names[400], msg[480];

			admin_tier_names(cfg, ", ", "", names, sizeof(names));
			snprintf(msg, sizeof(msg), "tier must be a configured tier: %s.", names);
			jobs_set_error(j, 400, "invalid_request", msg);
			goto out;
		}
		util_strlcpy(a->tier, cfg->tiers[idx].name, sizeof(a->tier));
		memcpy(a->tiers, cfg->tiers, sizeof(a->tiers));
		a->ntiers = cfg->ntiers;
	}
	j->arg = a;
	run[op](j, st);
	j->arg = NULL;
out:
	free(a);
}
