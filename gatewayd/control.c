#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <openssl/crypto.h>

#include "api.h"
#include "accesslog.h"
#include "auth.h"
#include "cache.h"
#include "balance.h"
#include "cidr.h"
#include "conf.h"
#include "control.h"
#include "geo.h"
#include "gw.h"
#include "identity.h"
#include "jobs.h"
#include "ipc.h"
#include "log.h"
#include "proto.h"
#include "stats.h"
#include "store.h"
#include "util.h"
#include "worker.h"
#include "xmalloc.h"

/*
 * One thread answers every request in turn: the commands are short (a snapshot of
 * counters, one small transaction), and a single thread keeps the store connection its
 * own. The receive timeout lets it see control_stop() within CONTROL_POLL_MS.
 *
 * Blocks and bans go through the store first (one transaction with the audit row, actor
 * "gatectl"), then into the in-memory identity tables, as api_admin.c does for HTTP.
 */

#define CONTROL_POLL_MS 200
#define CONTROL_ACTOR "gatectl"
#define CONTROL_DURATION_MAX_S (10LL * 366 * 86400)
#define CONTROL_CONFIG_MAX (4 * 1024 * 1024) /* as config.c reads at most */

static struct {
	nng_socket sock;
	pthread_t thread;
	int running;
	_Atomic int stop;
	struct store *st; /* NULL when the database could not be opened */
	char url[256];
} control;

/* A reply: a ready object (consumed), or an error message. */
struct control_reply {
	cJSON *ok;
	char error[512];
};

static void __attribute__((format(printf, 2, 3)))
control_fail(struct control_reply *r, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(r->error, sizeof(r->error), fmt, ap);
	va_end(ap);
}

/* A reply with the members of o (consumed; NULL: none) after "v" and "ok"; its own "ok"
 * (an HTTP answer's) is dropped. */
static cJSON *
control_merge(cJSON *o)
{
	cJSON *ok = proto_reply_ok(), *it;

	while (o != NULL && (it = o->child) != NULL) {
		cJSON_DetachItemViaPointer(o, it);
		if (strcmp(it->string, "ok") == 0)
			cJSON_Delete(it);
		else
			cJSON_AddItemToObject(ok, it->string, it);
	}
	cJSON_Delete(o);
	return ok;
}

/* Replies with the object fn makes of the current runtime (stats.c, geo.c). */
static void
control_runtime_reply(struct control_reply *r, cJSON *(*fn)(const struct runtime *))
{
	struct runtime *rt = runtime_acquire();
	cJSON *o = fn(rt);

	runtime_unref(rt);
	r->ok = control_merge(o);
}

static void
control_status(const struct proto_request *q, struct control_reply *r)
{
	control_runtime_reply(r, stats_json);
}

static void
control_backends(const struct proto_request *q, struct control_reply *r)
{
	struct runtime *rt = runtime_acquire();
	cJSON *arr;

	r->ok = proto_reply_ok();
	arr = cJSON_AddArrayToObject(r->ok, "backends");
	for (int i = 0; i < rt->nbackends; i++)
		stats_backend_json(arr, rt->backends[i]);
	runtime_unref(rt);
}

static void
control_strategy(const struct proto_request *q, struct control_reply *r)
{
	if (q->argv[0] != NULL) {
		int st = balance_strategy_from_name(q->argv[0]);

		if (st < 0) {
			control_fail(r, "unknown strategy; valid names: %s",
			             balance_strategy_list());
			return;
		}
		atomic_store(&gw.strategy, st);
		log_info("strategy changed to %s by gatectl", balance_strategy_name(st));
		if (control.st != NULL) {
			char d[96];

			snprintf(d, sizeof(d), "{\"strategy\":\"%s\"}", balance_strategy_name(st));
			if (store_audit(control.st, CONTROL_ACTOR, "change_strategy",
			                balance_strategy_name(st), d) != 0)
				log_warnx("gatectl strategy: audit row not written: %s",
				          store_error(control.st));
		}
	}
	r->ok = proto_reply_ok();
	cJSON_AddStringToObject(r->ok, "strategy",
	                        balance_strategy_name(atomic_load(&gw.strategy)));
}

/* Runs one change with its audit row in a transaction. 0, or -1 with r->error set. */
static int
control_begin(struct control_reply *r)
{
	if (control.st == NULL) {
		control_fail(r, "no database is open");
		return -1;
	}
	if (store_begin(control.st) != 0) {
		control_fail(r, "the identity store is unavailable: %s", store_error(control.st));
		return -1;
	}
	return 0;
}

/* The store failed mid-transaction: say so and undo what the transaction did. */
static void
control_store_fail(struct control_reply *r)
{
	control_fail(r, "the identity store is unavailable: %s", store_error(control.st));
	store_rollback(control.st);
}

static int
control_commit(struct control_reply *r, const char *action, const char *target, const char *detail)
{
	if (store_audit(control.st, CONTROL_ACTOR, action, target, detail) != 0 ||
	    store_commit(control.st) != 0) {
		control_store_fail(r);
		return -1;
	}
	return 0;
}

/* A store_key found by the whole key or its prefix (api_admin_key_lookup's rules). */
static int
control_key_find(const char *who, struct store_key *k, struct control_reply *r)
{
	int rv = api_admin_key_lookup(control.st, who, k);

	if (rv == 0)
		return 0;
	store_rollback(control.st);
	if (rv == STORE_NOTFOUND)
		control_fail(r, "no such API key");
	else if (rv > 0)
		control_fail(r, "several keys have the prefix %s; give the whole key", who);
	else
		control_fail(r, "the identity store is unavailable: %s", store_error(control.st));
	return -1;
}

/* The answer of an api_admin.c action into r: its object's members, or its message. */
static void
control_from_job(struct job *j, struct control_reply *r)
{
	cJSON *o = j->body != NULL ? cJSON_Parse(j->body) : NULL;

	if (j->status >= 300 || o == NULL) {
		const cJSON *m = cJSON_GetObjectItemCaseSensitive(o, "message");

		control_fail(r, "%s", cJSON_IsString(m) ? m->valuestring : "failed");
		cJSON_Delete(o);
	} else {
		r->ok = control_merge(o);
	}
	free(j->body);
}

static void
control_admin(enum api_admin_op op, const char *who, const char *tier, struct control_reply *r)
{
	struct runtime *rt = runtime_acquire();
	struct job j;

	memset(&j, 0, sizeof(j));
	api_admin_control(op, CONTROL_ACTOR, who, tier, rt->cfg, control.st, &j);
	runtime_unref(rt);
	control_from_job(&j, r);
}

static void
control_block(const struct proto_request *q, struct control_reply *r)
{
	control_admin(API_ADMIN_BLOCK, q->argv[0], NULL, r);
}

static void
control_unblock(const struct proto_request *q, struct control_reply *r)
{
	control_admin(API_ADMIN_UNBLOCK, q->argv[0], NULL, r);
}

static void
control_tier(const struct proto_request *q, struct control_reply *r)
{
	control_admin(API_ADMIN_TIER, q->argv[0], q->argv[1], r);
}

static void
control_users(const struct proto_request *q, struct control_reply *r)
{
	control_admin(API_ADMIN_USERS, "", NULL, r);
}

/* A key of /admin/users for "keys list": its owner and state added. */
static void
control_key_row(cJSON *keys, cJSON *k, const cJSON *user, int64_t now)
{
	const cJSON *exp = cJSON_GetObjectItemCaseSensitive(k, "expires_at");
	const char *state = "active";

	if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(k, "revoked")))
		state = "revoked";
	else if (cJSON_IsNumber(exp) && exp->valuedouble <= (double)now)
		state = "expired";
	else if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(k, "blocked")))
		state = "blocked";
	if (user != NULL) {
		cJSON_AddItemToObject(
		    k, "user_id",
		    cJSON_Duplicate(cJSON_GetObjectItemCaseSensitive(user, "user_id"), 1));
		cJSON_AddItemToObject(
		    k, "email",
		    cJSON_Duplicate(cJSON_GetObjectItemCaseSensitive(user, "email"), 1));
	} else {
		cJSON_AddNullToObject(k, "user_id");
		cJSON_AddNullToObject(k, "email");
	}
	cJSON_AddStringToObject(k, "state", state);
	cJSON_AddItemToArray(keys, k);
}

/* Every key, one list: the users' keys and the ownerless ones, from /admin/users. */
static void
control_keys_list(const struct proto_request *q, struct control_reply *r)
{
	int64_t now = (int64_t)time(NULL);
	cJSON *users, *legacy, *keys, *u, *k;

	control_admin(API_ADMIN_USERS, "", NULL, r);
	if (r->ok == NULL)
		return;
	users = cJSON_DetachItemFromObjectCaseSensitive(r->ok, "users");
	legacy = cJSON_DetachItemFromObjectCaseSensitive(r->ok, "legacy_keys");
	keys = cJSON_AddArrayToObject(r->ok, "keys");
	cJSON_ArrayForEach(u, users)
	{
		cJSON *uk = cJSON_GetObjectItemCaseSensitive(u, "keys");

		while (uk != NULL && (k = uk->child) != NULL)
			control_key_row(keys, cJSON_DetachItemViaPointer(uk, k), u, now);
	}
	while (legacy != NULL && (k = legacy->child) != NULL)
		control_key_row(keys, cJSON_DetachItemViaPointer(legacy, k), NULL, now);
	cJSON_Delete(users);
	cJSON_Delete(legacy);
}

/* The tier a new key gets: --tier (a configured one), else its user's, else the lowest. */
static int
control_new_key_tier(const char *want, const struct store_user *u, char *tier, size_t len,
                     struct control_reply *r)
{
	struct runtime *rt = runtime_acquire();
	int idx = want != NULL ? config_tier_find(rt->cfg, want) : 0;

	if (idx >= 0)
		util_strlcpy(tier, u != NULL && want == NULL ? u->tier : rt->cfg->tiers[idx].name,
		             len);
	runtime_unref(rt);
	if (idx < 0) {
		control_fail(r, "%s is not a configured tier", want);
		return -1;
	}
	/* an owned key is limited by its user's tier (identify.c): one tier, not two */
	if (u != NULL && strcmp(tier, u->tier) != 0) {
		control_fail(r, "a key of user %lld has the user's tier %s; change it with tier",
		             (long long)u->id, u->tier);
		return -1;
	}
	return 0;
}

/* "--user ID" into *u (NULL when not given). 0, or -1 with r->error set. */
static int
control_key_owner(const char *id, struct store_user *u, struct control_reply *r)
{
	char *end;
	long long v;
	int rv;

	if (id == NULL)
		return 0;
	v = strtoll(id, &end, 10);
	if (strncmp(id, "u:", 2) == 0)
		v = strtoll(id + 2, &end, 10);
	if (*end != '\0' || v <= 0) {
		control_fail(r, "--user takes a user id, got %s", id);
		return -1;
	}
	if ((rv = store_user_by_id(control.st, v, u)) == 0)
		return 0;
	if (rv == STORE_NOTFOUND)
		control_fail(r, "no such user: %lld", v);
	else
		control_fail(r, "the identity store is unavailable: %s", store_error(control.st));
	return -1;
}

/*
 * Commits the transaction that made the new key k (key is its whole text, wiped here
 * either way: the reply is the only place it is ever shown), audited as action on
 * "key:prefix"; then publishes k and starts the reply. 0, or -1 with r failed.
 */
static int
control_key_made(struct control_reply *r, const char *action, const char *prefix,
                 const char *detail, char key[API_AUTH_NEW_KEY_MAX], const struct store_key *k)
{
	char target[64];
	int rv;

	snprintf(target, sizeof(target), "key:%s", prefix);
	rv = control_commit(r, action, target, detail);
	if (rv == 0) {
		api_auth_key_publish(k);
		r->ok = proto_reply_ok();
		cJSON_AddStringToObject(r->ok, "api_key", key);
		cJSON_AddStringToObject(r->ok, "prefix", k->prefix);
		cJSON_AddStringToObject(r->ok, "tier", k->tier);
	}
	explicit_bzero(key, API_AUTH_NEW_KEY_MAX);
	return rv;
}

static void
control_keys_create(const struct proto_request *q, struct control_reply *r)
{
	const char *user = proto_request_get(q, "user");
	char key[API_AUTH_NEW_KEY_MAX], detail[128];
	struct store_user u;
	struct store_key k;

	memset(&k, 0, sizeof(k));
	if (control_begin(r) != 0)
		return;
	if (control_key_owner(user, &u, r) != 0 ||
	    control_new_key_tier(proto_request_get(q, "tier"), user != NULL ? &u : NULL, k.tier,
	                         sizeof(k.tier), r) != 0) {
		store_rollback(control.st);
		return;
	}
	k.user_id = user != NULL ? u.id : 0;
	if (api_auth_key_new(control.st, key, &k) != 0) {
		control_store_fail(r);
		return;
	}
	snprintf(detail, sizeof(detail), "{\"tier\":\"%s\",\"user_id\":%lld}", k.tier,
	         (long long)k.user_id);
	if (control_key_made(r, "create_key", k.prefix, detail, key, &k) != 0)
		return;
	log_info("gatectl: key:%s created (tier %s, user %lld)", k.prefix, k.tier,
	         (long long)k.user_id);
	if (k.user_id > 0)
		cJSON_AddNumberToObject(r->ok, "user_id", (double)k.user_id);
}

/* The key q names, live (not revoked nor expired), in a transaction. 0, or -1. */
static int
control_live_key(const struct proto_request *q, struct store_key *k, struct control_reply *r)
{
	if (control_begin(r) != 0 || control_key_find(q->argv[0], k, r) != 0)
		return -1;
	if (k->revoked || (k->expires_at != 0 && k->expires_at <= (int64_t)time(NULL))) {
		store_rollback(control.st);
		control_fail(r, "the key %s is %s", k->prefix, k->revoked ? "revoked" : "expired");
		return -1;
	}
	return 0;
}

static void
control_keys_rotate(const struct proto_request *q, struct control_reply *r)
{
	char key[API_AUTH_NEW_KEY_MAX], detail[128];
	struct store_key old, k;

	if (control_live_key(q, &old, r) != 0)
		return;
	if (api_auth_key_rotate(control.st, &old, key, &k, (int64_t)time(NULL)) != 0) {
		control_store_fail(r);
		return;
	}
	snprintf(detail, sizeof(detail), "{\"successor\":\"%s\",\"expires_at\":%lld}", k.prefix,
	         (long long)old.expires_at);
	if (control_key_made(r, "rotate_key", old.prefix, detail, key, &k) != 0)
		return;
	api_auth_key_publish(&old);
	log_info("gatectl: key:%s rotated to %s", old.prefix, k.prefix);
	cJSON_AddStringToObject(r->ok, "previous_prefix", old.prefix);
	cJSON_AddNumberToObject(r->ok, "previous_expires_at", (double)old.expires_at);
}

static void
control_keys_revoke(const struct proto_request *q, struct control_reply *r)
{
	char target[64];
	struct store_key k;

	if (control_live_key(q, &k, r) != 0)
		return;
	if (store_key_revoke(control.st, k.hash) != 0) {
		control_store_fail(r);
		return;
	}
	snprintf(target, sizeof(target), "key:%s", k.prefix);
	if (control_commit(r, "revoke_key", target, "{}") != 0)
		return;
	k.revoked = 1;
	api_auth_key_publish(&k);
	log_info("gatectl: %s revoked", target);
	r->ok = proto_reply_ok();
	cJSON_AddStringToObject(r->ok, "revoked", k.prefix);
}

/* The identity a key is limited as (identify.c): its user's, else the key's own. */
static void
control_key_identity(const struct store_key *k, struct identity *id)
{
	struct identity_user u;

	memset(id, 0, sizeof(*id));
	id->kind = IDENTITY_KEY;
	id->user_id = k->user_id;
	util_strlcpy(id->key_hash, k->hash, sizeof(id->key_hash));
	util_strlcpy(id->key_prefix, k->prefix, sizeof(id->key_prefix));
	util_strlcpy(id->tier, k->tier, sizeof(id->tier));
	if (k->user_id > 0) {
		if (identity_user_get(k->user_id, &u))
			util_strlcpy(id->tier, u.tier, sizeof(id->tier));
		snprintf(id->name, sizeof(id->name), "u:%lld", (long long)k->user_id);
	} else {
		snprintf(id->name, sizeof(id->name), "k:%.12s", k->hash);
	}
}

static void
control_usage(const struct proto_request *q, struct control_reply *r)
{
	struct runtime *rt;
	struct identity id;
	struct store_key k;
	cJSON *o;

	if (control_begin(r) != 0 || control_key_find(q->argv[0], &k, r) != 0)
		return;
	store_rollback(control.st);
	control_key_identity(&k, &id);
	rt = runtime_acquire();
	o = api_usage_object(rt->cfg, &id, util_now_ms(), NULL);
	runtime_unref(rt);
	cJSON_AddStringToObject(o, "prefix", k.prefix);
	cJSON_AddStringToObject(o, "identity", id.name);
	r->ok = control_merge(o);
}
/* An address or CIDR in canonical text into buf. 0, or -1 with r->error set. */
static int
control_parse_ip(const char *s, char *buf, size_t len, struct control_reply *r)
{
	struct cidr c;

	if (cidr_parse(s, &c) != 0) {
		control_fail(r, "%s is not an address or a CIDR", s);
		return -1;
	}
	cidr_format(&c, buf, len);
	return 0;
}

static void
control_ban(const struct proto_request *q, struct control_reply *r)
{
	char ip[64], target[80], detail[64];
	int64_t secs = 0, until = 0;

	if (control_parse_ip(q->argv[0], ip, sizeof(ip), r) != 0)
		return;
	if (q->argv[1] != NULL) {
		uint64_t ms;

		if (conf_parse_duration(q->argv[1], &ms) != 0 || ms == 0) {
			control_fail(r, "%s is not a duration (such as 30s, 10m, 2h, 7d)",
			             q->argv[1]);
			return;
		}
		secs = (int64_t)((ms + 999) / 1000);
		if (secs > CONTROL_DURATION_MAX_S) {
			control_fail(r,
			             "%s is longer than 10 years; leave it out for a ban until "
			             "unban",
			             q->argv[1]);
			return;
		}
		until = (int64_t)time(NULL) + secs;
	}
	if (control_begin(r) != 0)
		return;
	snprintf(target, sizeof(target), "ip:%s", ip);
	if (store_block_set(control.st, "ip", ip, until) != 0) {
		control_store_fail(r);
		return;
	}
	snprintf(detail, sizeof(detail), "{\"until\":%lld}", (long long)until);
	if (control_commit(r, "block_ip", target, detail) != 0)
		return;
	identity_block("ip", ip, until);
	log_info("gatectl: %s banned for %llds (0: until unban)", ip, (long long)secs);
	r->ok = proto_reply_ok();
	cJSON_AddStringToObject(r->ok, "ip", ip);
	if (until != 0)
		cJSON_AddNumberToObject(r->ok, "until", (double)until);
	else
		cJSON_AddNullToObject(r->ok, "until");
}

static void
control_unban(const struct proto_request *q, struct control_reply *r)
{
	char ip[64], target[80], ban[80];
	int rb, cleared = 0, single;
	int64_t now = (int64_t)time(NULL);
	struct cidr c;

	if (control_parse_ip(q->argv[0], ip, sizeof(ip), r) != 0)
		return;
	cidr_parse(q->argv[0], &c);
	single = c.prefix == 128;
	if (control_begin(r) != 0)
		return;
	snprintf(target, sizeof(target), "ip:%s", ip);
	rb = store_block_remove(control.st, "ip", ip);
	if (rb < 0)
		goto fail;
	if (single) {
		/* a progressive ban of the one address (router.c names it "ip:<addr>") */
		int rn;

		cidr_format_addr(c.addr, ban + 3, sizeof(ban) - 3);
		memcpy(ban, "ip:", 3);
		rn = store_ban_remove(control.st, "ip", ban);
		if (rn < 0)
			goto fail;
		if (rn == 0 || identity_banned(ban, now) > 0)
			cleared++;
	}
	if (rb == STORE_NOTFOUND && cleared == 0 && !identity_unblock("ip", ip)) {
		store_rollback(control.st);
		control_fail(r, "%s is not banned", ip);
		return;
	}
	if (control_commit(r, "unblock_ip", target, "{}") != 0)
		return;
	identity_unblock("ip", ip);
	if (single)
		identity_ban_clear(ban);
	log_info("gatectl: %s unbanned", ip);
	r->ok = proto_reply_ok();
	cJSON_AddStringToObject(r->ok, "unbanned", ip);
	return;
fail:
	control_store_fail(r);
}

/* --- runtime changes: backends, reload, config -------------------------------------- */

/*
 * A runtime change is a configuration loaded the way a reload loads it (runtime_reload):
 * the file, the -d overrides, and the overrides gatectl added (config set NAME VALUE is
 * NAME=VALUE; a backend change is the whole backend list as backend=... overrides). So
 * the parser validates every change with its own messages, a refused change leaves
 * everything as it was, and the changes survive `reload` (not a restart, like -d).
 * runtime_build carries over every backend of the same id and address (health, circuit,
 * drain state, pools). The health checks see a new backend at their next round.
 */

/* The overrides with every NAME= entry replaced by adds[] (owned by the new array). */
static char **
control_overrides(const char *name, char *const *adds, int nadds)
{
	size_t n = strlen(name), k = 0, cnt = 0;
	char **ov;

	while (gw.overrides != NULL && gw.overrides[cnt] != NULL)
		cnt++;
	ov = xcalloc(cnt + (size_t)nadds + 1, sizeof(*ov));
	for (size_t i = 0; i < cnt; i++)
		if (!(strncmp(gw.overrides[i], name, n) == 0 && gw.overrides[i][n] == '='))
			ov[k++] = gw.overrides[i];
	for (int i = 0; i < nadds; i++)
		ov[k++] = adds[i];
	return ov;
}

/* Loads the configuration with overrides ov and runs it. 0 (ov kept as gw.overrides), or
 * -1 with the parser's message (ov freed, and the strings of adds). */
static int
control_apply(char **ov, char *const *adds, int nadds, int take_strategy, struct control_reply *r)
{
	char err[1024];

	if (runtime_reload(ov, take_strategy, err, sizeof(err)) == 0)
		return 0;
	control_fail(r, "refused, nothing changed: %s", err);
	for (int i = 0; i < nadds; i++)
		free(adds[i]);
	free(ov);
	return -1;
}

/* The reply of a runtime change: the running configuration's summary. */
static void
control_applied(struct control_reply *r)
{
	struct runtime *rt = runtime_acquire();

	r->ok = proto_reply_ok();
	cJSON_AddNumberToObject(r->ok, "backends", rt->nbackends);
	cJSON_AddStringToObject(r->ok, "strategy",
	                        balance_strategy_name(atomic_load(&gw.strategy)));
	runtime_unref(rt);
}

static void
control_audit(const char *action, const char *target, const char *detail)
{
	if (control.st != NULL &&
	    store_audit(control.st, CONTROL_ACTOR, action, target, detail) != 0)
		log_warnx("gatectl %s: audit row not written: %s", action, store_error(control.st));
}

static void
control_reload(const struct proto_request *q, struct control_reply *r)
{
	if (control_apply(NULL, NULL, 0, 1, r) != 0)
		return;
	control_audit("reload", gw.config_path, NULL);
	log_info("configuration reloaded by gatectl");
	control_applied(r);
	cJSON_AddStringToObject(r->ok, "reload", "done");
}

/* A backend as an override: "backend=ID HOST:PORT weight=N max_conns=N [dc=NAME]". */
static char *
control_backend_line(const char *id, const char *host, unsigned port, int weight, int max_conns,
                     const char *dc)
{
	char buf[512];

	snprintf(buf, sizeof(buf),
	         strchr(host, ':') != NULL ? "backend=%s [%s]:%u weight=%d"
	                                   : "backend=%s %s:%u weight=%d",
	         id, host, port, weight);
	if (max_conns > 0)
		snprintf(buf + strlen(buf), sizeof(buf) - strlen(buf), " max_conns=%d", max_conns);
	if (dc != NULL && dc[0] != '\0')
		snprintf(buf + strlen(buf), sizeof(buf) - strlen(buf), " dc=%s", dc);
	return xstrdup(buf);
}

/*
 * The running backends as override lines, but the one called id removed (remove),
 * given a new weight (weight > 0), or a new one appended (add: line). The count, or -1
 * with r->error set when id is absent (or present, for add).
 */
static int
control_backend_lines(const char *id, int remove, int weight, char *add, char ***out,
                      struct control_reply *r)
{
	struct runtime *rt = runtime_acquire();
	const struct config *c = rt->cfg;
	int n = 0, found = 0;
	char **lines = xcalloc((size_t)c->nbackends + 1, sizeof(*lines));

	for (int i = 0; i < c->nbackends; i++) {
		const struct config_backend *b = &c->backends[i];
		int is = strcmp(b->id, id) == 0;

		found |= is;
		if (is && remove)
			continue;
		lines[n++] = control_backend_line(b->id, b->host, b->port,
		                                  is && weight > 0 ? weight : b->weight,
		                                  b->max_conns, b->dc);
	}
	runtime_unref(rt);
	if (add != NULL && !found)
		lines[n++] = add;
	/* no override lines would mean "the file's backends": refused as the parser would */
	if (found == (add != NULL) || n == 0) {
		if (n == 0)
			control_fail(
			    r, "refused, nothing changed: at least one 'backend' is required");
		else
			control_fail(r, found ? "backend %s exists" : "no backend %s", id);
		for (int i = 0; i < n; i++)
			free(lines[i]);
		free(lines);
		free(add);
		return -1;
	}
	*out = lines;
	return n;
}

/* Runs the backend list lines (consumed); audits action on backend id. */
static void
control_backends_apply(char **lines, int n, const char *action, const char *id,
                       struct control_reply *r)
{
	char target[96];

	if (control_apply(control_overrides("backend", lines, n), lines, n, 0, r) != 0) {
		free(lines);
		return;
	}
	free(lines);
	snprintf(target, sizeof(target), "backend:%s", id);
	control_audit(action, target, NULL);
	log_info("gatectl: %s %s", action, target);
	control_applied(r);
	cJSON_AddStringToObject(r->ok, "backend", id);
}

static void
control_backend_add(const struct proto_request *q, struct control_reply *r)
{
	const char *w = proto_request_get(q, "weight"), *dc = proto_request_get(q, "dc");
	char line[700], **lines;
	int n;

	/* checked by the parser, with its messages, as a line of the file would be */
	snprintf(line, sizeof(line), "backend=%s %s%s%s%s%s", q->argv[0], q->argv[1],
	         w != NULL ? " weight=" : "", w != NULL ? w : "", dc != NULL ? " dc=" : "",
	         dc != NULL ? dc : "");
	if (strchr(q->argv[0], ' ') != NULL || strchr(q->argv[1], ' ') != NULL ||
	    (w != NULL && strchr(w, ' ') != NULL) || (dc != NULL && strchr(dc, ' ') != NULL)) {
		control_fail(r, "arguments may not contain blanks");
		return;
	}
	if ((n = control_backend_lines(q->argv[0], 0, 0, xstrdup(line), &lines, r)) < 0)
		return;
	control_backends_apply(lines, n, "backend_add", q->argv[0], r);
}

static void
control_backend_remove(const struct proto_request *q, struct control_reply *r)
{
	char **lines;
	int n = control_backend_lines(q->argv[0], 1, 0, NULL, &lines, r);

	if (n >= 0)
		control_backends_apply(lines, n, "backend_remove", q->argv[0], r);
}

static void
control_backend_weight(const struct proto_request *q, struct control_reply *r)
{
	char **lines, *end;
	long w = strtol(q->argv[1], &end, 10);
	int n;

	if (*end != '\0' || w < 1 || w > 1000) {
		control_fail(r, "weight must be 1..1000, got %s", q->argv[1]);
		return;
	}
	if ((n = control_backend_lines(q->argv[0], 0, (int)w, NULL, &lines, r)) >= 0)
		control_backends_apply(lines, n, "backend_weight", q->argv[0], r);
	if (r->ok != NULL)
		cJSON_AddNumberToObject(r->ok, "weight", (double)w);
}

/* drain and enable: the backend object's admin state, which reloads carry over. */
static void
control_backend_state(const struct proto_request *q, struct control_reply *r, int state)
{
	struct runtime *rt = runtime_acquire();
	struct backend *b = NULL;
	char target[96];

	for (int i = 0; i < rt->nbackends && b == NULL; i++)
		if (strcmp(rt->backends[i]->id, q->argv[0]) == 0)
			b = rt->backends[i];
	if (b == NULL) {
		runtime_unref(rt);
		control_fail(r, "no backend %s", q->argv[0]);
		return;
	}
	atomic_store(&b->admin, state);
	runtime_unref(rt);
	snprintf(target, sizeof(target), "backend:%s", q->argv[0]);
	control_audit(state == BACKEND_DRAINING ? "backend_drain" : "backend_enable", target, NULL);
	log_info("gatectl: %s %s", target, backend_admin_name(state));
	r->ok = proto_reply_ok();
	cJSON_AddStringToObject(r->ok, "backend", q->argv[0]);
	cJSON_AddStringToObject(r->ok, "state", backend_admin_name(state));
}

static void
control_backend_drain(const struct proto_request *q, struct control_reply *r)
{
	control_backend_state(q, r, BACKEND_DRAINING);
}

static void
control_backend_enable(const struct proto_request *q, struct control_reply *r)
{
	control_backend_state(q, r, BACKEND_ENABLED);
}

/* 1 when name is a directive word: [a-z_], as the parser's table spells them. */
static int
control_directive_name(const char *name)
{
	size_t n = strlen(name);

	return n > 0 && n < 64 && strspn(name, "abcdefghijklmnopqrstuvwxyz_") == n;
}

static void
control_config_set(const struct proto_request *q, struct control_reply *r)
{
	char *line, target[96];
	size_t n;

	if (!control_directive_name(q->argv[0])) {
		control_fail(r, "%s is not a directive name", q->argv[0]);
		return;
	}
	n = strlen(q->argv[0]) + strlen(q->argv[1]) + 2;
	line = xmalloc(n);
	snprintf(line, n, "%s=%s", q->argv[0], q->argv[1]);
	if (control_apply(control_overrides(q->argv[0], &line, 1), &line, 1,
	                  strcmp(q->argv[0], "strategy") == 0, r) != 0)
		return;
	snprintf(target, sizeof(target), "config:%s", q->argv[0]);
	control_audit("config_set", target, NULL);
	log_info("gatectl: config set %s %s", q->argv[0], q->argv[1]);
	control_applied(r);
	cJSON_AddStringToObject(r->ok, "name", q->argv[0]);
	cJSON_AddStringToObject(r->ok, "value", q->argv[1]);
}

/* The lines of directive name in text (overridden ones skipped) into arr. */
static void
control_config_lines(const char *text, const char *name, cJSON *arr)
{
	size_t n = strlen(name);

	for (const char *line = text; *line != '\0';) {
		const char *end = line + strcspn(line, "\n");
		const char *w = line + strspn(line, " \t");

		if (strncmp(w, name, n) == 0 && (w[n] == ' ' || w[n] == '\t')) {
			char *s = xstrndup(w, (size_t)(end - w));

			size_t k = strcspn(s, "#\r"); /* the comment is not the value */

			while (k > 0 && (s[k - 1] == ' ' || s[k - 1] == '\t'))
				k--;
			s[k] = '\0';
			cJSON_AddItemToArray(arr, cJSON_CreateString(s));
			free(s);
		}
		line = *end != '\0' ? end + 1 : end;
	}
}

/* The text of the configuration file (the embedded default without -c); free() it. */
static char *
control_config_text(void)
{
	FILE *f;
	char *buf;
	size_t n;

	if (gw.config_path == NULL)
		return xstrdup(config_default_text);
	if ((f = fopen(gw.config_path, "r")) == NULL)
		return NULL;
	buf = xmalloc(CONTROL_CONFIG_MAX + 1);
	n = fread(buf, 1, CONTROL_CONFIG_MAX, f);
	buf[n] = '\0';
	fclose(f);
	return buf;
}

/*
 * 1 when the parser knows directive name: a configuration loaded with "name=" as an
 * override fails for another reason than an unknown directive (its missing value).
 */
static int
control_directive_known(const char *name)
{
	char *ov[2], err[1024];
	size_t n = strlen(name) + 2;
	struct config *cfg;
	int known;

	ov[0] = xmalloc(n);
	snprintf(ov[0], n, "%s=", name);
	ov[1] = NULL;
	cfg = config_load(gw.config_path, ov, err, sizeof(err));
	known = cfg != NULL || strstr(err, "unknown directive") == NULL;
	free(ov[0]);
	config_free(cfg);
	return known;
}

/*
 * The config line with every URL password masked as "***" (its length is not shown):
 * "scheme://user:***@host" and libpq's "password=***" query parameter. `config get`
 * must not hand out the credentials of the database or of Redis. Caller frees.
 */
static char *
control_redact_url(const char *line)
{
	size_t n = strlen(line);
	char *out = xmalloc(2 * n + 16), *o = out; /* "a:b@" grows by 2: at most n/4 times */
	const char *s = line;

	while (*s != '\0') {
		if (strncmp(s, "://", 3) == 0) {
			const char *auth = s + 3, *end = auth + strcspn(auth, "/ \t?#");
			const char *at = memchr(auth, '@', (size_t)(end - auth));
			const char *colon = at ? memchr(auth, ':', (size_t)(at - auth)) : NULL;

			if (colon != NULL) {
				memcpy(o, s, (size_t)(colon + 1 - s));
				o += colon + 1 - s;
				memcpy(o, "***", 3);
				o += 3;
				s = at;
				continue;
			}
		}
		if ((*s == '?' || *s == '&') && strncasecmp(s + 1, "password=", 9) == 0) {
			memcpy(o, s, 10);
			o += 10;
			memcpy(o, "***", 3);
			o += 3;
			s += 10 + strcspn(s + 10, "& \t#");
			continue;
		}
		*o++ = *s++;
	}
	*o = '\0';
	return out;
}

/*
 * config get: the lines that define name in the running configuration (the -d and
 * gatectl overrides, else the file's lines); none means the built-in default.
 * strategy and backend are read from the running gateway, as they change live.
 */
static void
control_config_get(const struct proto_request *q, struct control_reply *r)
{
	const char *name = q->argv[0], *source = "file";
	size_t n = strlen(name);
	cJSON *lines, *it;
	char *text;

	if (!control_directive_name(name)) {
		control_fail(r, "%s is not a directive name", name);
		return;
	}
	r->ok = proto_reply_ok();
	cJSON_AddStringToObject(r->ok, "name", name);
	lines = cJSON_AddArrayToObject(r->ok, "lines");
	if (strcmp(name, "strategy") == 0) {
		char s[64];

		snprintf(s, sizeof(s), "strategy %s",
		         balance_strategy_name(atomic_load(&gw.strategy)));
		cJSON_AddItemToArray(lines, cJSON_CreateString(s));
		source = "running";
	}
	for (int i = 0; cJSON_GetArraySize(lines) == 0 && gw.overrides && gw.overrides[i]; i++) {
		if (strncmp(gw.overrides[i], name, n) == 0 && gw.overrides[i][n] == '=') {
			char *s = xstrdup(gw.overrides[i]);

			s[n] = ' ';
			cJSON_AddItemToArray(lines, cJSON_CreateString(s));
			free(s);
			source = "override";
		}
	}
	if (cJSON_GetArraySize(lines) == 0 && (text = control_config_text()) != NULL) {
		control_config_lines(text, name, lines);
		free(text);
	}
	if (cJSON_GetArraySize(lines) == 0) {
		if (!control_directive_known(name)) {
			cJSON_Delete(r->ok);
			r->ok = NULL;
			control_fail(r, "unknown directive %s (gatewayd.conf(5))", name);
			return;
		}
		source = "default";
	}
	cJSON_ArrayForEach(it, lines)
	{
		if (cJSON_IsString(it)) {
			char *masked = control_redact_url(it->valuestring);

			cJSON_SetValuestring(it, masked);
			free(masked);
		}
	}
	cJSON_AddStringToObject(r->ok, "source", source);
}

/* --- logs, cache ------------------------------------------------------------------- */

#define CONTROL_LOGS_DEFAULT 20
#define CONTROL_LOGS_MAX 1000 /* what accesslog.c keeps in memory */

/* The newest requests, and where the PUB stream is for `logs -f`. */
static void
control_logs(const struct proto_request *q, struct control_reply *r)
{
	const char *n = proto_request_get(q, "n");
	struct runtime *rt;
	long v = CONTROL_LOGS_DEFAULT;
	char *end = NULL;

	if (n != NULL && ((v = strtol(n, &end, 10)) < 1 || v > CONTROL_LOGS_MAX || *end != '\0')) {
		control_fail(r, "-n takes 1..%d, got %s", CONTROL_LOGS_MAX, n);
		return;
	}
	r->ok = proto_reply_ok();
	cJSON_AddItemToObject(r->ok, "entries", accesslog_recent_json((int)v));
	rt = runtime_acquire();
	cJSON_AddStringToObject(r->ok, "publish", rt->cfg->publish);
	runtime_unref(rt);
}

static void
control_cache_stats(const struct proto_request *q, struct control_reply *r)
{
	cJSON *o = cache_stats_json();

	if (o == NULL) {
		control_fail(r, "no cache is configured (no route has cache=on)");
		return;
	}
	r->ok = control_merge(o);
}

static void
control_cache_purge(const struct proto_request *q, struct control_reply *r)
{
	const char *prefix = q->argv[0] != NULL ? q->argv[0] : "";
	char target[PROTO_ARG_MAX + 16], detail[64];
	size_t n;

	if (prefix[0] != '\0' && prefix[0] != '/') {
		control_fail(r, "a path prefix starts with /, got %s", prefix);
		return;
	}
	n = cache_purge(prefix);
	snprintf(target, sizeof(target), "cache:%s", prefix[0] ? prefix : "*");
	snprintf(detail, sizeof(detail), "{\"purged\":%zu}", n);
	control_audit("cache_purge", target, detail);
	log_info("gatectl: cache purge %s: %zu entries", prefix[0] ? prefix : "(all)", n);
	r->ok = proto_reply_ok();
	cJSON_AddNumberToObject(r->ok, "purged", (double)n);
}

/* geo: the /geo/stats object (geo.c). */
static void
control_geo(const struct proto_request *q, struct control_reply *r)
{
	control_runtime_reply(r, geo_stats_json);
}

typedef void (*control_fn)(const struct proto_request *, struct control_reply *);

/* Indexed by enum proto_handler; NULL: not in this build (answered as such). */
static const control_fn control_handlers[PROTO_NHANDLERS] = {
    [PROTO_STATUS] = control_status,
    [PROTO_BACKENDS] = control_backends,
    [PROTO_STRATEGY] = control_strategy,
    [PROTO_RELOAD] = control_reload,
    [PROTO_BLOCK] = control_block,
    [PROTO_UNBLOCK] = control_unblock,
    [PROTO_BAN] = control_ban,
    [PROTO_UNBAN] = control_unban,
    [PROTO_USERS] = control_users,
    [PROTO_USAGE] = control_usage,
    [PROTO_TIER] = control_tier,
    [PROTO_KEYS_LIST] = control_keys_list,
    [PROTO_KEYS_CREATE] = control_keys_create,
    [PROTO_KEYS_ROTATE] = control_keys_rotate,
    [PROTO_KEYS_REVOKE] = control_keys_revoke,
    [PROTO_BACKEND_ADD] = control_backend_add,
    [PROTO_BACKEND_REMOVE] = control_backend_remove,
    [PROTO_BACKEND_DRAIN] = control_backend_drain,
    [PROTO_BACKEND_ENABLE] = control_backend_enable,
    [PROTO_BACKEND_WEIGHT] = control_backend_weight,
    [PROTO_CONFIG_GET] = control_config_get,
    [PROTO_CONFIG_SET] = control_config_set,
    [PROTO_LOGS] = control_logs,
    [PROTO_GEO] = control_geo,
    [PROTO_CACHE_STATS] = control_cache_stats,
    [PROTO_CACHE_PURGE] = control_cache_purge,
};

/*
 * ipc:// sockets are guarded by their file mode (0600); a tcp:// endpoint is reachable
 * by anyone who can connect, so every request there must carry the admin token,
 * compared in constant time.
 */
static int
control_authorized(const struct proto_request *q)
{
	size_t n;

	if (!proto_url_needs_token(control.url))
		return 1;
	if (q->token == NULL || gw.admin_token == NULL)
		return 0;
	n = strlen(gw.admin_token);
	return strlen(q->token) == n && CRYPTO_memcmp(q->token, gw.admin_token, n) == 0;
}

/* The reply text to one request; the caller frees it with cJSON_free(). */
static char *
control_answer(const char *buf, size_t len)
{
	struct proto_request q;
	struct control_reply r;
	char *out;

	memset(&r, 0, sizeof(r));
	if (proto_request_decode(buf, len, &q, r.error, sizeof(r.error)) != 0)
		return proto_reply_error(r.error);
	if (!control_authorized(&q)) {
		proto_request_free(&q);
		return proto_reply_error("this control endpoint requires the admin token "
		                         "(GATEWAYD_ADMIN_TOKEN)");
	}
	if (control_handlers[q.cmd->handler] != NULL)
		control_handlers[q.cmd->handler](&q, &r);
	else
		control_fail(&r, "%s is not available in this build", q.cmd->name);
	proto_request_free(&q);
	if (r.ok == NULL)
		return proto_reply_error(r.error[0] ? r.error : "failed");
	out = cJSON_PrintUnformatted(r.ok);
	cJSON_Delete(r.ok);
	return out;
}

static void *
control_main(void *arg)
{
	while (!atomic_load(&control.stop)) {
		nng_msg *m;
		char *out;
		int rv = nng_recvmsg(control.sock, &m, 0);

		if (rv == NNG_ETIMEDOUT)
			continue;
		if (rv != 0) {
			if (rv != NNG_ECLOSED)
				log_warnx("control: receive: %s", nng_strerror(rv));
			if (rv == NNG_ECLOSED)
				break;
			continue;
		}
		out = control_answer(nng_msg_body(m), nng_msg_len(m));
		nng_msg_clear(m);
		if (out == NULL || nng_msg_append(m, out, strlen(out)) != 0 ||
		    (rv = nng_sendmsg(control.sock, m, 0)) != 0) {
			log_warnx("control: cannot send a reply");
			nng_msg_free(m);
		}
		cJSON_free(out);
	}
	return NULL;
}

int
control_start(const struct config *cfg, char *err, size_t errlen)
{
	char serr[512];

	if (proto_url_needs_token(cfg->control) && gw.admin_token == NULL) {
		snprintf(err, errlen,
		         "control %s: a tcp:// control endpoint requires GATEWAYD_ADMIN_TOKEN "
		         "(use an ipc:// socket, or set the token)",
		         cfg->control);
		return -1;
	}
	util_strlcpy(control.url, cfg->control, sizeof(control.url));
	if (ipc_rep_open(cfg->control, CONTROL_POLL_MS, &control.sock, err, errlen) != 0)
		return -1;
	control.st = store_open(cfg->database, serr, sizeof(serr));
	if (control.st == NULL)
		log_warnx("control: %s; block and ban commands are refused", serr);
	atomic_store(&control.stop, 0);
	if (pthread_create(&control.thread, NULL, control_main, NULL) != 0) {
		snprintf(err, errlen, "control: cannot start its thread");
		nng_close(control.sock);
		store_close(control.st);
		control.st = NULL;
		return -1;
	}
	pthread_setname_np(control.thread, "gw-control");
	control.running = 1;
	log_info("control plane listening on %s", cfg->control);
	return 0;
}

void
control_stop(void)
{
	if (!control.running)
		return;
	atomic_store(&control.stop, 1);
	pthread_join(control.thread, NULL);
	nng_close(control.sock);
	store_close(control.st);
	control.st = NULL;
	control.running = 0;
	if (strncmp(control.url, IPC_SCHEME, strlen(IPC_SCHEME)) == 0)
		unlink(control.url + strlen(IPC_SCHEME));
}
