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

#include "auth.h"
#include "balance.h"
#include "cidr.h"
#include "conf.h"
#include "control.h"
#include "gw.h"
#include "identity.h"
#include "ipc.h"
#include "log.h"
#include "proto.h"
#include "stats.h"
#include "store.h"
#include "util.h"

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

static void
control_status(const struct proto_request *q, struct control_reply *r)
{
	struct runtime *rt = runtime_acquire();
	cJSON *s = stats_json(rt), *it;

	runtime_unref(rt);
	r->ok = proto_reply_ok();
	/* the /stats object, with the reply's "v" and "ok" in front */
	while ((it = s->child) != NULL) {
		cJSON_DetachItemViaPointer(s, it);
		cJSON_AddItemToObject(r->ok, it->string, it);
	}
	cJSON_Delete(s);
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
	if (q->argc == 1) {
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

static void
control_reload(const struct proto_request *q, struct control_reply *r)
{
	/* the main thread reloads on SIGHUP; its log says whether the new file was taken */
	if (kill(getpid(), SIGHUP) != 0) {
		control_fail(r, "cannot signal the main thread");
		return;
	}
	r->ok = proto_reply_ok();
	cJSON_AddStringToObject(r->ok, "reload", "requested");
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

static int
control_commit(struct control_reply *r, const char *action, const char *target, const char *detail)
{
	if (store_audit(control.st, CONTROL_ACTOR, action, target, detail) != 0 ||
	    store_commit(control.st) != 0) {
		control_fail(r, "the identity store is unavailable: %s", store_error(control.st));
		store_rollback(control.st);
		return -1;
	}
	return 0;
}

/* The stored key of a whole API key into *k. 0, or -1 with r->error set. */
static int
control_key_find(const char *key, struct store_key *k, struct control_reply *r)
{
	char hash[65];
	int rv;

	auth_sha256_hex(key, strlen(key), hash);
	rv = store_key_by_hash(control.st, hash, k);
	if (rv == 0)
		return 0;
	store_rollback(control.st);
	if (rv == STORE_NOTFOUND)
		control_fail(r, "no such API key");
	else
		control_fail(r, "the identity store is unavailable: %s", store_error(control.st));
	return -1;
}

static void
control_block(const struct proto_request *q, struct control_reply *r)
{
	struct store_key k;
	char target[64];

	if (control_begin(r) != 0 || control_key_find(q->argv[0], &k, r) != 0)
		return;
	snprintf(target, sizeof(target), "key:%s", k.prefix);
	if (store_block_set(control.st, "key", k.hash, 0) != 0) {
		control_fail(r, "the identity store is unavailable: %s", store_error(control.st));
		store_rollback(control.st);
		return;
	}
	if (control_commit(r, "block_key", target, "{\"until\":null}") != 0)
		return;
	identity_block("key", k.hash, 0);
	log_info("gatectl: %s blocked until removed", target);
	r->ok = proto_reply_ok();
	cJSON_AddStringToObject(r->ok, "blocked", "key");
	cJSON_AddStringToObject(r->ok, "prefix", k.prefix);
}

static void
control_unblock(const struct proto_request *q, struct control_reply *r)
{
	struct store_key k;
	char target[64], bans[2][40], detail[96];
	int nbans = 0, cleared = 0, rb, in_memory;
	int64_t now = (int64_t)time(NULL);

	if (control_begin(r) != 0 || control_key_find(q->argv[0], &k, r) != 0)
		return;
	snprintf(target, sizeof(target), "key:%s", k.prefix);
	/* the progressive-ban names of the key (identify.c): an owned key is banned as its user */
	snprintf(bans[nbans++], sizeof(bans[0]), "k:%.12s", k.hash);
	if (k.user_id > 0)
		snprintf(bans[nbans++], sizeof(bans[0]), "u:%lld", (long long)k.user_id);
	rb = store_block_remove(control.st, "key", k.hash);
	if (rb < 0)
		goto fail;
	in_memory = identity_blocked("key", k.hash, now);
	for (int i = 0; i < nbans; i++) {
		int rn = store_ban_remove(control.st, "identity", bans[i]);

		if (rn < 0)
			goto fail;
		if (rn == 0 || identity_banned(bans[i], now) > 0)
			cleared++;
	}
	if (rb == STORE_NOTFOUND && !in_memory && cleared == 0) {
		store_rollback(control.st);
		control_fail(r, "this key is not blocked");
		return;
	}
	snprintf(detail, sizeof(detail), "{\"block_removed\":%s,\"bans_cleared\":%d}",
	         rb == 0 || in_memory ? "true" : "false", cleared);
	if (control_commit(r, "unblock_key", target, detail) != 0)
		return;
	identity_unblock("key", k.hash);
	for (int i = 0; i < nbans; i++)
		identity_ban_clear(bans[i]);
	log_info("gatectl: %s unblocked (%d bans cleared)", target, cleared);
	r->ok = proto_reply_ok();
	cJSON_AddStringToObject(r->ok, "unblocked", "key");
	cJSON_AddStringToObject(r->ok, "prefix", k.prefix);
	cJSON_AddNumberToObject(r->ok, "bans_cleared", cleared);
	return;
fail:
	control_fail(r, "the identity store is unavailable: %s", store_error(control.st));
	store_rollback(control.st);
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
	if (q->argc == 2) {
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
		control_fail(r, "the identity store is unavailable: %s", store_error(control.st));
		store_rollback(control.st);
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
	control_fail(r, "the identity store is unavailable: %s", store_error(control.st));
	store_rollback(control.st);
}

typedef void (*control_fn)(const struct proto_request *, struct control_reply *);

/* Indexed by enum proto_handler. */
static const control_fn control_handlers[] = {
    [PROTO_STATUS] = control_status,     [PROTO_BACKENDS] = control_backends,
    [PROTO_STRATEGY] = control_strategy, [PROTO_RELOAD] = control_reload,
    [PROTO_BLOCK] = control_block,       [PROTO_UNBLOCK] = control_unblock,
    [PROTO_BAN] = control_ban,           [PROTO_UNBAN] = control_unban,
};

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
	control_handlers[q.cmd->handler](&q, &r);
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
	control.running = 1;
	util_strlcpy(control.url, cfg->control, sizeof(control.url));
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
