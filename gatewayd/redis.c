/*
 * Shared state in Redis: the tier limiter on every worker's loop, and the change feed
 * of blocks, bans, revocations, keys and users on a thread of its own. See redis.h.
 *
 * Links. Every connection (one per worker for the limiter, one publisher and one
 * subscriber on the events thread) is a struct redis_link: a hiredis async context
 * attached to the owning thread's event_base, set up with AUTH and SELECT from the URL,
 * then a last command whose reply marks it up (SCRIPT LOAD, PING or SUBSCRIBE). A link
 * goes down when the connection fails or closes, when setup is refused, or when a
 * command has waited longer than the `timeout=` option for its reply (hiredis 0.14 has
 * no command timeout of its own, and a stopped Redis would otherwise hold requests
 * forever). Freeing the context makes hiredis call every pending callback with a NULL
 * reply, so every waiting request resumes, on the fallback path. A down link retries
 * after 100 ms, doubling up to 5 s; each up/down transition is logged and counted.
 *
 * Why the clock is Redis's (TIME inside the script): instances' clocks differ, and the
 * TAT is compared against "now" by whichever instance asks next; one clock makes the
 * quota exact across instances.
 */

#include <errno.h>
#include <inttypes.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <hiredis/adapters/libevent.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include "cache.h"
#include "cache_shared.h"
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

#define REDIS_TICK_MS 100
#define REDIS_BACKOFF_MIN_MS 100
#define REDIS_BACKOFF_MAX_MS 5000
#define REDIS_OLC_SLOTS 65536  /* the shared TAT of recently seen keys (1 MB) */
#define REDIS_OLC_BUSY 2ULL    /* a slot being written (hashes are odd, 0 is empty) */
#define REDIS_OUTBOX_MAX 10000 /* changes kept while the publisher is down */
#define REDIS_KEY_PREFIX "gw:rl:"
#define REDIS_MSG_MAX 512
#define REDIS_FIELDS_MAX 8

/*
 * GCRA (ratelimit.c's arithmetic) in microseconds. ARGV: emission interval T, tolerance
 * tau. Returns {allowed, TAT - now after the decision}. A refused request writes
 * nothing; the key expires when its quota is full again. string.format('%d') keeps the
 * TAT's 16 digits (tostring would round it to 14).
 */
static const char redis_gcra_lua[] =
    "if redis.replicate_commands then redis.replicate_commands() end\n"
    "local t = tonumber(ARGV[1])\n"
    "local tau = tonumber(ARGV[2])\n"
    "local tm = redis.call('TIME')\n"
    "local now = tonumber(tm[1]) * 1000000 + tonumber(tm[2])\n"
    "local tat = tonumber(redis.call('GET', KEYS[1])) or now\n"
    "if tat < now then tat = now end\n"
    "if tat - now > tau then return {0, tat - now} end\n"
    "tat = tat + t\n"
    "redis.call('SET', KEYS[1], string.format('%d', tat), 'PX', "
    "math.floor((tat - now) / 1000) + 1)\n"
    "return {1, tat - now}\n";

/*
 * A tier change (ratelimit_rescale's rule): the requests a key has used, (TAT - now) / T
 * at the old T, are priced at the new T. ARGV: old T, new T (us).
 */
static const char redis_rescale_lua[] =
    "if redis.replicate_commands then redis.replicate_commands() end\n"
    "local tm = redis.call('TIME')\n"
    "local now = tonumber(tm[1]) * 1000000 + tonumber(tm[2])\n"
    "local tat = tonumber(redis.call('GET', KEYS[1]))\n"
    "if not tat or tat <= now then return 0 end\n"
    "tat = now + math.floor((tat - now) * tonumber(ARGV[2]) / tonumber(ARGV[1]))\n"
    "redis.call('SET', KEYS[1], string.format('%d', tat), 'PX', "
    "math.floor((tat - now) / 1000) + 1)\n"
    "return 1\n";

enum redis_state { RL_DOWN, RL_CONNECTING, RL_UP };

struct redis_link {
	const char *name; /* for log lines: "worker 0", "publisher", "subscriber" */
	struct event_base *base;
	redisAsyncContext *ac;
	_Atomic int state; /* enum redis_state; read by /metrics on other threads */
	int kind;          /* enum redis_link_kind: what its last setup command is */
	int ever_up;
	int down_logged;
	uint64_t retry_at_ms;
	uint64_t backoff_ms;
	uint64_t since_ms;    /* connect started (CONNECTING) */
	uint64_t progress_ms; /* last reply, or when the first pending command went out */
	uint32_t inflight;
	struct event *timer;
};

enum redis_link_kind { RK_LIMITER, RK_PUBLISHER, RK_SUBSCRIBER };

/*
 * The over-limit cache and peek mirror: the TAT Redis last reported for a key, on the
 * local monotonic clock, shared by the workers (and read by /usage and gatectl). A
 * writer holds a slot by swapping its hash for BUSY, so a TAT is always stored under
 * the hash it belongs to; a reader takes the TAT only when the hash is the same before
 * and after. Losing a race loses an update, never mixes two keys. A TAT only grows in
 * Redis (refusals write nothing), so a stale copy can only under-estimate: a refusal
 * from it is one Redis would give too.
 */
struct redis_olc {
	_Atomic uint64_t h;
	_Atomic uint64_t tat_us; /* util_now_us() time */
};

struct redis_wconn {
	struct redis_link link;
	struct worker *w;
	char name[24];
	_Atomic uint64_t commands;  /* limiter commands sent */
	_Atomic uint64_t decisions; /* shared decisions: from Redis or the over-limit cache */
	_Atomic uint64_t olc_hits;
	_Atomic uint64_t fallbacks;
	_Atomic uint64_t errors;
};

/* A change to PUBLISH (text), a rescale of key text's shared state (t_old_us set), or a
 * cache purge of prefix text (cache_purge set). */
struct redis_msg {
	struct redis_msg *next;
	uint64_t t_old_us, t_new_us;
	int cache_purge;
	char text[REDIS_MSG_MAX];
};

int redis_on;

static struct redis_url redis_url;
static int redis_failure; /* enum config_redis_failure */
static uint64_t redis_timeout_ms;
static char redis_sha[41];
static char redis_channel[64];
static char redis_instance[17];
static _Atomic(struct redis_wconn *) redis_wconns[GW_MAX_WORKERS];
static struct redis_olc redis_olc[REDIS_OLC_SLOTS];

/* the events thread */
static pthread_t redis_thread;
static int redis_thread_started;
static struct event_base *redis_ebase;
static int redis_efd = -1;
static struct event *redis_eev;
static struct redis_link redis_pub, redis_sub;
static pthread_mutex_t redis_outbox_lock = PTHREAD_MUTEX_INITIALIZER;
static struct redis_msg *redis_outbox_head, *redis_outbox_tail;
static size_t redis_outbox_len;
static _Atomic int redis_stopping;
/* set while applying another instance's change: identity's hooks must not echo it */
static __thread int redis_applying;

static _Atomic uint64_t redis_ups, redis_downs, redis_published, redis_received, redis_dropped,
    redis_ev_errors;

/* the shared cache level: key generation (-1 unknown), our purges not yet counted in
 * Redis, and the events of gatewayd_cache_shared_total */
static _Atomic int64_t redis_cgen = -1;
static _Atomic int redis_cpending;
static _Atomic uint64_t redis_cache_ctr[RC_COUNT], redis_cache_purges;

static void redis_link_timer(evutil_socket_t fd, short what, void *arg);
static void redis_limit_reply(redisAsyncContext *ac, void *r, void *priv);
static void redis_cgen_read(void);
static void redis_cgen_set(int64_t gen, int from_message);

/* ---------------------------------------------------------------- URL */

static int
redis_url_int(const char *s, size_t n, int max, int *out)
{
	long v = 0;

	if (n == 0 || n > 6)
		return -1;
	for (size_t i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -1;
		v = v * 10 + (s[i] - '0');
	}
	if (v > max)
		return -1;
	*out = (int)v;
	return 0;
}

static int
redis_hex(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Copies s[0..n) into dst decoding %XX; -1 when it does not fit or is malformed. */
static int
redis_url_copy(char *dst, size_t size, const char *s, size_t n)
{
	size_t o = 0;

	for (size_t i = 0; i < n; i++) {
		char c = s[i];

		if (c == '%') {
			if (i + 2 >= n || redis_hex(s[i + 1]) < 0 || redis_hex(s[i + 2]) < 0)
				return -1;
			c = (char)(redis_hex(s[i + 1]) * 16 + redis_hex(s[i + 2]));
			if (c == '\0')
				return -1;
			i += 2;
		}
		if (o + 1 >= size)
			return -1;
		dst[o++] = c;
	}
	dst[o] = '\0';
	return 0;
}

int
redis_url_parse(const char *text, struct redis_url *u, char *err, size_t errlen)
{
	const char *p, *at, *hp, *end, *colon, *slash;

	memset(u, 0, sizeof(*u));
	u->port = 6379;
	if (strncmp(text, "rediss://", 9) == 0) {
		snprintf(err, errlen,
		         "rediss:// (TLS) is not available: this build's hiredis "
		         "(0.14) has no TLS");
		return -1;
	}
	if (strncmp(text, "redis://", 8) != 0) {
		snprintf(err, errlen, "expected redis://[[USER]:PASSWORD@]HOST[:PORT][/DB]");
		return -1;
	}
	p = text + 8;
	end = p + strlen(p);
	slash = memchr(p, '/', (size_t)(end - p));
	at = memrchr(p, '@', (size_t)((slash ? slash : end) - p));
	hp = p;
	if (at != NULL) {
		const char *c = memchr(p, ':', (size_t)(at - p));

		if (c == NULL) {
			snprintf(err, errlen, "credentials are USER:PASSWORD@ or :PASSWORD@");
			return -1;
		}
		if (redis_url_copy(u->user, sizeof(u->user), p, (size_t)(c - p)) < 0 ||
		    redis_url_copy(u->password, sizeof(u->password), c + 1, (size_t)(at - c - 1)) <
		        0) {
			snprintf(err, errlen, "user or password too long or badly %%-encoded");
			return -1;
		}
		hp = at + 1;
	}
	if (slash == NULL)
		slash = end;
	colon = memrchr(hp, ':', (size_t)(slash - hp));
	if (hp[0] == '[') { /* [v6]:port */
		const char *rb = memchr(hp, ']', (size_t)(slash - hp));

		if (rb == NULL) {
			snprintf(err, errlen, "unterminated [IPv6 address]");
			return -1;
		}
		colon = rb + 1 < slash && rb[1] == ':' ? rb + 1 : NULL;
		if ((size_t)(rb - hp - 1) >= sizeof(u->host))
			goto bad_host;
		memcpy(u->host, hp + 1, (size_t)(rb - hp - 1));
		u->host[rb - hp - 1] = '\0';
	} else {
		const char *he = colon != NULL ? colon : slash;

		if ((size_t)(he - hp) >= sizeof(u->host))
			goto bad_host;
		memcpy(u->host, hp, (size_t)(he - hp));
		u->host[he - hp] = '\0';
	}
	if (u->host[0] == '\0')
		goto bad_host;
	if (colon != NULL &&
	    (redis_url_int(colon + 1, (size_t)(slash - colon - 1), 65535, &u->port) < 0 ||
	     u->port == 0)) {
		snprintf(err, errlen, "the port must be 1..65535");
		return -1;
	}
	if (slash < end && slash + 1 < end &&
	    redis_url_int(slash + 1, (size_t)(end - slash - 1), 1000000, &u->db) < 0) {
		snprintf(err, errlen, "the database must be a number (/0, /1, ...)");
		return -1;
	}
	return 0;
bad_host:
	snprintf(err, errlen, "a host is required (redis://127.0.0.1:6379/0)");
	return -1;
}

/* ---------------------------------------------------------------- links */

static const char *
redis_reply_text(const redisReply *r)
{
	return r != NULL && r->str != NULL ? r->str : "no reply";
}

static void
redis_link_init(struct redis_link *l, const char *name, struct event_base *base, int kind)
{
	struct timeval tv = {0, REDIS_TICK_MS * 1000};

	memset(l, 0, sizeof(*l));
	l->name = name;
	l->base = base;
	l->kind = kind;
	l->backoff_ms = REDIS_BACKOFF_MIN_MS;
	l->timer = event_new(base, -1, EV_PERSIST, redis_link_timer, l);
	event_add(l->timer, &tv);
}

static void
redis_link_up(struct redis_link *l)
{
	l->state = RL_UP;
	l->backoff_ms = REDIS_BACKOFF_MIN_MS;
	l->down_logged = 0;
	l->ever_up = 1;
	atomic_fetch_add(&redis_ups, 1);
	log_info("redis: %s: connected to %s:%d db %d", l->name, redis_url.host, redis_url.port,
	         redis_url.db);
}

/* The link is gone (its context already detached from l). Logged once per outage. */
static void
redis_link_down(struct redis_link *l, const char *why)
{
	uint64_t now = util_now_ms();
	int was_up = l->state == RL_UP;

	l->state = RL_DOWN;
	l->ac = NULL;
	l->inflight = 0;
	l->retry_at_ms = now + l->backoff_ms;
	l->backoff_ms =
	    l->backoff_ms * 2 > REDIS_BACKOFF_MAX_MS ? REDIS_BACKOFF_MAX_MS : l->backoff_ms * 2;
	if (was_up || !l->down_logged) {
		l->down_logged = 1;
		atomic_fetch_add(&redis_downs, 1);
		if (l->kind == RK_LIMITER)
			log_warnx(
			    "redis: %s: %s %s:%d: %s; limiting %s until it is back", l->name,
			    was_up ? "lost" : "cannot reach", redis_url.host, redis_url.port, why,
			    redis_failure == CONFIG_REDIS_CLOSED ? "refused (503)" : "locally");
		else
			log_warnx("redis: %s: %s %s:%d: %s", l->name,
			          was_up ? "lost" : "cannot reach", redis_url.host, redis_url.port,
			          why);
	}
}

/* Drops l's context on purpose (refused setup, a reply overdue): callbacks get NULL. */
static void
redis_link_kill(struct redis_link *l, const char *why)
{
	redisAsyncContext *ac = l->ac;

	redis_link_down(l, why);
	if (ac != NULL)
		redisAsyncFree(ac);
}

static void
redis_on_connect(const redisAsyncContext *ac, int status)
{
	struct redis_link *l = ac->data;

	if (status != REDIS_OK && l != NULL && l->ac == ac)
		redis_link_down(l, ac->errstr[0] ? ac->errstr : "connect failed");
}

static void
redis_on_disconnect(const redisAsyncContext *ac, int status)
{
	struct redis_link *l = ac->data;

	if (l != NULL && l->ac == ac)
		redis_link_down(l, status == REDIS_OK ? "connection closed"
		                   : ac->errstr[0]    ? ac->errstr
		                                      : "connection lost");
}

/* A reply on l's context came: the link is making progress. */
static void
redis_link_replied(struct redis_link *l, const redisAsyncContext *ac)
{
	if (l->ac == ac && l->inflight > 0) {
		l->inflight--;
		l->progress_ms = util_now_ms();
	}
}

static void
redis_link_sent(struct redis_link *l)
{
	if (l->inflight++ == 0)
		l->progress_ms = util_now_ms();
}

/* Replies to AUTH and SELECT: an error ends the link (logged with the server's words). */
static void
redis_setup_reply(redisAsyncContext *ac, void *r, void *priv)
{
	struct redis_link *l = ac->data;
	const redisReply *rep = r;

	redis_link_replied(l, ac);
	if (rep != NULL && rep->type == REDIS_REPLY_ERROR && l->ac == ac) {
		char why[160];

		snprintf(why, sizeof(why), "%s refused: %s", (const char *)priv,
		         redis_reply_text(rep));
		redis_link_kill(l, why);
	}
}

/* The last setup command's reply: SCRIPT LOAD, PING. */
static void
redis_ready_reply(redisAsyncContext *ac, void *r, void *priv)
{
	struct redis_link *l = ac->data;
	const redisReply *rep = r;

	redis_link_replied(l, ac);
	if (rep == NULL || l->ac != ac || l->state == RL_UP)
		return;
	if (rep->type == REDIS_REPLY_ERROR) {
		char why[160];

		snprintf(why, sizeof(why), "%s refused: %s", (const char *)priv,
		         redis_reply_text(rep));
		redis_link_kill(l, why);
		return;
	}
	redis_link_up(l);
	if (l->kind == RK_PUBLISHER)
		redis_cgen_read();
	if (l->kind == RK_PUBLISHER && redis_efd != -1) {
		uint64_t one = 1;

		/* send what queued up while it was down */
		if (write(redis_efd, &one, sizeof(one)) < 0 && errno != EAGAIN)
			log_warn("redis: wake publisher");
	}
}

static void redis_sub_reply(redisAsyncContext *ac, void *r, void *priv);

static void
redis_link_setup(struct redis_link *l)
{
	redisAsyncContext *ac = l->ac;

	if (redis_url.password[0] != '\0') {
		if (redis_url.user[0] != '\0')
			redisAsyncCommand(ac, redis_setup_reply, "AUTH", "AUTH %s %s",
			                  redis_url.user, redis_url.password);
		else
			redisAsyncCommand(ac, redis_setup_reply, "AUTH", "AUTH %s",
			                  redis_url.password);
		redis_link_sent(l);
	}
	if (redis_url.db != 0) {
		redisAsyncCommand(ac, redis_setup_reply, "SELECT", "SELECT %d", redis_url.db);
		redis_link_sent(l);
	}
	switch (l->kind) {
	case RK_LIMITER:
		redisAsyncCommand(ac, redis_ready_reply, "SCRIPT LOAD", "SCRIPT LOAD %s",
		                  redis_gcra_lua);
		redis_link_sent(l);
		break;
	case RK_PUBLISHER:
		redisAsyncCommand(ac, redis_ready_reply, "PING", "PING");
		redis_link_sent(l);
		break;
	default:
		/* a subscription's callback stays registered: not counted as in flight */
		redisAsyncCommand(ac, redis_sub_reply, NULL, "SUBSCRIBE %s", redis_channel);
		break;
	}
}

static void
redis_link_connect(struct redis_link *l, uint64_t now)
{
	redisAsyncContext *ac = redisAsyncConnect(redis_url.host, redis_url.port);

	l->since_ms = now;
	if (ac == NULL || ac->err) {
		char why[160];

		snprintf(why, sizeof(why), "%s", ac != NULL ? ac->errstr : "out of memory");
		if (ac != NULL)
			redisAsyncFree(ac);
		redis_link_down(l, why);
		return;
	}
	ac->data = l;
	if (redisLibeventAttach(ac, l->base) != REDIS_OK) {
		redisAsyncFree(ac);
		redis_link_down(l, "cannot attach to the event loop");
		return;
	}
	redisAsyncSetConnectCallback(ac, redis_on_connect);
	redisAsyncSetDisconnectCallback(ac, redis_on_disconnect);
	l->ac = ac;
	l->state = RL_CONNECTING;
	l->inflight = 0;
	redis_link_setup(l);
}

/* Reconnects a down link when its backoff is over; ends a link that stopped answering. */
static void
redis_link_timer(evutil_socket_t fd, short what, void *arg)
{
	struct redis_link *l = arg;
	uint64_t now = util_now_ms();

	if (atomic_load_explicit(&redis_stopping, memory_order_relaxed))
		return;
	if (l->state == RL_DOWN && now >= l->retry_at_ms)
		redis_link_connect(l, now);
	else if (l->state == RL_CONNECTING && now - l->since_ms > redis_timeout_ms + 1000)
		redis_link_kill(l, "connect timed out");
	else if (l->inflight > 0 && now - l->progress_ms > redis_timeout_ms)
		redis_link_kill(l, "no reply in time");
}

/* ---------------------------------------------------------------- the limiter */

static struct redis_wconn *
redis_wconn_of(struct worker *w)
{
	struct redis_wconn *rc = atomic_load_explicit(&redis_wconns[w->id], memory_order_relaxed);

	if (rc != NULL)
		return rc;
	/* created on the worker's own thread: its event_base has no locks */
	rc = xcalloc(1, sizeof(*rc));
	rc->w = w;
	snprintf(rc->name, sizeof(rc->name), "worker %d", w->id);
	redis_link_init(&rc->link, rc->name, w->base, RK_LIMITER);
	redis_link_connect(&rc->link, util_now_ms());
	atomic_store_explicit(&redis_wconns[w->id], rc, memory_order_release);
	return rc;
}

static enum redis_verdict
redis_fallback(struct redis_wconn *rc)
{
	worker_counter_add(&rc->fallbacks, 1);
	return redis_failure == CONFIG_REDIS_CLOSED ? REDIS_UNAVAILABLE : REDIS_LOCAL;
}

static struct redis_olc *
redis_olc_slot(const char *name, uint64_t *h)
{
	*h = util_hash64(name, strlen(name)) | 1;
	return &redis_olc[(*h >> 16) & (REDIS_OLC_SLOTS - 1)];
}

static void
redis_olc_put(const char *name, uint64_t tat_us)
{
	uint64_t h;
	struct redis_olc *e = redis_olc_slot(name, &h);
	uint64_t cur = atomic_load_explicit(&e->h, memory_order_relaxed);

	if (cur == REDIS_OLC_BUSY ||
	    !atomic_compare_exchange_strong_explicit(&e->h, &cur, REDIS_OLC_BUSY,
	                                             memory_order_acquire, memory_order_relaxed))
		return;
	atomic_store_explicit(&e->tat_us, tat_us, memory_order_relaxed);
	atomic_store_explicit(&e->h, h, memory_order_release);
}

static void
redis_olc_forget(const char *name)
{
	uint64_t h;
	struct redis_olc *e = redis_olc_slot(name, &h);
	uint64_t cur = h;

	atomic_compare_exchange_strong(&e->h, &cur, 0);
}

/* The TAT last seen for name, or 0. */
static uint64_t
redis_olc_get(const char *name)
{
	uint64_t h, tat;
	struct redis_olc *e = redis_olc_slot(name, &h);

	if (atomic_load_explicit(&e->h, memory_order_acquire) != h)
		return 0;
	tat = atomic_load_explicit(&e->tat_us, memory_order_relaxed);
	atomic_thread_fence(memory_order_acquire);
	return atomic_load_explicit(&e->h, memory_order_relaxed) == h ? tat : 0;
}

/* Appends one RESP bulk string ("$n\r\n...\r\n"). */
static size_t
redis_resp_arg(char *buf, size_t off, size_t cap, const char *s, size_t n)
{
	off = util_append(buf, off, cap, "$", 1);
	off = util_append_u64(buf, off, cap, n);
	off = util_append(buf, off, cap, "\r\n", 2);
	off = util_append(buf, off, cap, s, n);
	return util_append(buf, off, cap, "\r\n", 2);
}

static size_t
redis_resp_u64(char *buf, size_t off, size_t cap, uint64_t v)
{
	char num[24];
	size_t n = util_append_u64(num, 0, sizeof(num), v);

	return redis_resp_arg(buf, off, cap, num, n);
}

/*
 * Sends the GCRA script for x: EVALSHA, in RESP built by hand (no format parsing on the
 * hot path), or the whole script with EVAL after NOSCRIPT, which also reloads it.
 */
static int
redis_limit_send(struct redis_wconn *rc, struct exchange *x, const struct conf_rate *rate, int eval)
{
	char cmd[256 + sizeof(x->id.name)];
	uint64_t t_ns, tau_ns;
	size_t off, nlen = strlen(x->id.name);
	int r;

	if (rc->link.ac == NULL || ratelimit_params(rate, &t_ns, &tau_ns) < 0)
		return -1;
	if (eval) {
		r = redisAsyncCommand(rc->link.ac, redis_limit_reply, x,
		                      "EVAL %s 1 " REDIS_KEY_PREFIX "%s %" PRIu64 " %" PRIu64,
		                      redis_gcra_lua, x->id.name, (t_ns + 999) / 1000,
		                      tau_ns / 1000);
	} else {
		off = util_append_str(cmd, 0, sizeof(cmd), "*6\r\n$7\r\nEVALSHA\r\n");
		off = redis_resp_arg(cmd, off, sizeof(cmd), redis_sha, 40);
		off = util_append_str(cmd, off, sizeof(cmd), "$1\r\n1\r\n$");
		off = util_append_u64(cmd, off, sizeof(cmd), sizeof(REDIS_KEY_PREFIX) - 1 + nlen);
		off = util_append_str(cmd, off, sizeof(cmd), "\r\n" REDIS_KEY_PREFIX);
		off = util_append(cmd, off, sizeof(cmd), x->id.name, nlen);
		off = util_append(cmd, off, sizeof(cmd), "\r\n", 2);
		off = redis_resp_u64(cmd, off, sizeof(cmd), (t_ns + 999) / 1000);
		off = redis_resp_u64(cmd, off, sizeof(cmd), tau_ns / 1000);
		if (off > sizeof(cmd))
			return -1;
		r = redisAsyncFormattedCommand(rc->link.ac, redis_limit_reply, x, cmd, off);
	}
	if (r != REDIS_OK)
		return -1;
	redis_link_sent(&rc->link);
	worker_counter_add(&rc->commands, 1);
	return 0;
}

static const struct conf_rate *
redis_rate_of(const struct exchange *x)
{
	return &identify_tier(x->rt->cfg, &x->id)->rate;
}

/* Gives x back to the pipeline (or releases it: its client left while it waited). */
static void
redis_resume(struct exchange *x, int verdict, const struct ratelimit_result *res)
{
	struct client *c = jobs_wait_end(x);

	if (c == NULL)
		return;
	router_tier_resume(x, verdict, res);
	jobs_wait_resume(c);
}

/* The decision of reply rep for x, or -1 when it is not one. */
static int
redis_limit_decode(struct redis_wconn *rc, struct exchange *x, const redisReply *rep,
                   struct ratelimit_result *res)
{
	const struct conf_rate *rate = redis_rate_of(x);
	uint64_t d_us, t_ns, tau_ns;

	if (rep->type != REDIS_REPLY_ARRAY || rep->elements != 2 ||
	    rep->element[0]->type != REDIS_REPLY_INTEGER ||
	    rep->element[1]->type != REDIS_REPLY_INTEGER || rep->element[1]->integer < 0 ||
	    ratelimit_params(rate, &t_ns, &tau_ns) < 0)
		return -1;
	d_us = (uint64_t)rep->element[1]->integer;
	ratelimit_result_from(rate, rep->element[0]->integer == 1, d_us * 1000, res);
	redis_olc_put(x->id.name, util_now_us() + d_us);
	worker_counter_add(&rc->decisions, 1);
	return 0;
}

static void
redis_limit_reply(redisAsyncContext *ac, void *r, void *priv)
{
	struct redis_link *l = ac->data;
	struct redis_wconn *rc =
	    (struct redis_wconn *)(void *)((char *)l - offsetof(struct redis_wconn, link));
	struct exchange *x = priv;
	const redisReply *rep = r;
	struct ratelimit_result res = {0};
	int verdict;

	x->w->now_ms = util_now_ms();
	redis_link_replied(l, ac);
	if (rep == NULL && l->ac == ac)
		redis_link_down(l, "connection lost");
	if (rep != NULL && rep->type == REDIS_REPLY_ERROR && rep->str != NULL &&
	    strncmp(rep->str, "NOSCRIPT", 8) == 0 && x->c != NULL && l->ac == ac &&
	    redis_limit_send(rc, x, redis_rate_of(x), 1) == 0)
		return; /* the script cache was flushed: EVAL reloads it, x waits on */
	if (rep != NULL && redis_limit_decode(rc, x, rep, &res) == 0) {
		verdict = REDIS_DECIDED;
	} else {
		if (rep != NULL)
			worker_counter_add(&rc->errors, 1);
		if (rep != NULL && rep->type == REDIS_REPLY_ERROR)
			log_warnx("redis: %s: limiter script: %s", l->name, redis_reply_text(rep));
		verdict = redis_fallback(rc);
	}
	redis_resume(x, verdict, &res);
}

enum redis_verdict
redis_limit(struct exchange *x, const struct conf_rate *rate, struct ratelimit_result *res)
{
	struct redis_wconn *rc = redis_wconn_of(x->w);
	uint64_t t_ns, tau_ns, now_us, tat_us;

	if (ratelimit_params(rate, &t_ns, &tau_ns) < 0)
		return REDIS_LOCAL; /* no limit: the local limiter says so as cheaply */
	tat_us = redis_olc_get(x->id.name);
	now_us = util_now_us();
	if (tat_us > now_us && (tat_us - now_us) * 1000 > tau_ns) {
		ratelimit_result_from(rate, 0, (tat_us - now_us) * 1000, res);
		worker_counter_add(&rc->olc_hits, 1);
		worker_counter_add(&rc->decisions, 1);
		return REDIS_DECIDED;
	}
	/*
	 * Commands may queue behind the first connect (hiredis sends them once it is up),
	 * but not behind a reconnect after an outage, which may take a connect timeout.
	 */
	if (rc->link.state == RL_DOWN ||
	    (rc->link.state == RL_CONNECTING && rc->link.down_logged) ||
	    redis_limit_send(rc, x, rate, 0) < 0)
		return redis_fallback(rc);
	x->phase = X_WAIT;
	x->job_pending = 1; /* client_close orphans x instead of freeing it */
	return REDIS_WAIT;
}

void
redis_peek(const char *name, const struct conf_rate *rate, struct ratelimit_result *res)
{
	uint64_t t_ns, tau_ns, now_us = util_now_us(), d_ns = 0;
	uint64_t tat_us = redis_olc_get(name);

	if (tat_us > now_us)
		d_ns = (tat_us - now_us) * 1000;
	if (ratelimit_params(rate, &t_ns, &tau_ns) < 0)
		tau_ns = 0;
	ratelimit_result_from(rate, d_ns <= tau_ns, d_ns, res);
}

/* ---------------------------------------------------------------- the shared cache level */

void
redis_cache_count(enum redis_cache_event ev)
{
	atomic_fetch_add_explicit(&redis_cache_ctr[ev], 1, memory_order_relaxed);
}

int64_t
redis_cache_gen(void)
{
	return atomic_load_explicit(&redis_cgen, memory_order_acquire);
}

/* w's connection when commands may go out on it now, else NULL. */
static struct redis_wconn *
redis_cache_conn(struct worker *w)
{
	struct redis_wconn *rc = redis_wconn_of(w);

	if (rc->link.ac == NULL || rc->link.state == RL_DOWN ||
	    (rc->link.state == RL_CONNECTING && rc->link.down_logged))
		return NULL;
	return rc;
}

static void
redis_cache_get_reply(redisAsyncContext *ac, void *r, void *priv)
{
	struct redis_link *l = ac->data;
	struct exchange *x = priv;
	const redisReply *rep = r;

	x->w->now_ms = util_now_ms();
	redis_link_replied(l, ac);
	if (rep == NULL && l->ac == ac)
		redis_link_down(l, "connection lost");
	x->job_pending = 0;
	if (rep != NULL && rep->type == REDIS_REPLY_ARRAY) {
		for (size_t i = 0; i < rep->elements; i++)
			if (rep->element[i]->type == REDIS_REPLY_STRING) {
				cache_shared_reply(x, rep->element[i]->str,
				                   (size_t)rep->element[i]->len, (int)i, 0);
				return;
			}
		cache_shared_reply(x, NULL, 0, -1, 0);
		return;
	}
	if (rep != NULL && rep->type == REDIS_REPLY_ERROR)
		log_warnx("redis: %s: shared cache: %s", l->name, redis_reply_text(rep));
	cache_shared_reply(x, NULL, 0, -1, 1);
}

int
redis_cache_get(struct exchange *x, const char *const *keys, int n)
{
	struct redis_wconn *rc = redis_cache_conn(x->w);
	const char *argv[3] = {"MGET", n > 0 ? keys[0] : "", n > 1 ? keys[1] : ""};

	if (rc == NULL || n < 1 || n > 2 ||
	    redisAsyncCommandArgv(rc->link.ac, redis_cache_get_reply, x, n + 1, argv, NULL) !=
	        REDIS_OK)
		return -1;
	redis_link_sent(&rc->link);
	x->phase = X_WAIT;
	x->job_pending = 1; /* client_close orphans x instead of freeing it */
	return 0;
}

/* the priv of a SET: its success is counted as "stored" */
static char redis_cache_set_tag;

/* Replies to SET (priv non-NULL) and DEL: counted, nobody waits for them. */
static void
redis_cache_write_reply(redisAsyncContext *ac, void *r, void *priv)
{
	const redisReply *rep = r;

	redis_link_replied(ac->data, ac);
	if (rep == NULL || rep->type == REDIS_REPLY_ERROR)
		redis_cache_count(RC_ERROR);
	else if (priv != NULL)
		redis_cache_count(RC_STORED);
}

static void
redis_cache_send(struct worker *w, int argc, const char **argv, const size_t *lens, void *priv)
{
	struct redis_wconn *rc = redis_cache_conn(w);

	if (rc == NULL || redisAsyncCommandArgv(rc->link.ac, redis_cache_write_reply, priv, argc,
	                                        argv, lens) != REDIS_OK) {
		redis_cache_count(RC_ERROR);
		return;
	}
	redis_link_sent(&rc->link);
}

void
redis_cache_set(struct worker *w, const char *key, const char *val, size_t vlen, uint64_t px_ms)
{
	char px[24];
	size_t pl = util_append_u64(px, 0, sizeof(px), px_ms);
	const char *argv[5] = {"SET", key, val, "PX", px};
	const size_t lens[5] = {3, strlen(key), vlen, 2, pl};

	redis_cache_send(w, 5, argv, lens, &redis_cache_set_tag);
}

void
redis_cache_del(struct worker *w, const char *const *keys, int n)
{
	const char *argv[3] = {"DEL", n > 0 ? keys[0] : "", n > 1 ? keys[1] : ""};

	if (n >= 1 && n <= 2)
		redis_cache_send(w, n + 1, argv, NULL, NULL);
}

/* ---------------------------------------------------------------- the change feed */

/* Hands m to the events thread (taking it); any thread. */
static void
redis_outbox_push(struct redis_msg *m)
{
	uint64_t one = 1;

	pthread_mutex_lock(&redis_outbox_lock);
	if (redis_outbox_len >= REDIS_OUTBOX_MAX) {
		struct redis_msg *old = redis_outbox_head;

		redis_outbox_head = old->next;
		redis_outbox_len--;
		free(old);
		atomic_fetch_add(&redis_dropped, 1);
	}
	if (redis_outbox_tail != NULL)
		redis_outbox_tail->next = m;
	else
		redis_outbox_head = m;
	redis_outbox_tail = m;
	redis_outbox_len++;
	pthread_mutex_unlock(&redis_outbox_lock);
	if (write(redis_efd, &one, sizeof(one)) < 0 && errno != EAGAIN)
		log_warn("redis: wake publisher");
}

/* Queues one change for the publisher; any thread. Fields must not hold tabs/newlines. */
static void
redis_publish(const char *op, const char *const *fields, int n)
{
	struct redis_msg *m;
	size_t off;

	if (redis_applying || redis_efd == -1)
		return;
	m = xcalloc(1, sizeof(*m));
	off = (size_t)snprintf(m->text, sizeof(m->text), "%s\t%s", redis_instance, op);
	for (int i = 0; i < n && off < sizeof(m->text); i++) {
		if (strpbrk(fields[i], "\t\r\n") != NULL) {
			free(m);
			return;
		}
		off += (size_t)snprintf(m->text + off, sizeof(m->text) - off, "\t%s", fields[i]);
	}
	if (off >= sizeof(m->text)) {
		free(m);
		return;
	}
	redis_outbox_push(m);
}

static void
redis_cpurge_queue(const char *prefix)
{
	struct redis_msg *m = xcalloc(1, sizeof(*m));

	m->cache_purge = 1;
	/* a prefix a message cannot carry is widened to everything */
	if (prefix != NULL && strlen(prefix) < 256 && strpbrk(prefix, "\t\r\n") == NULL)
		util_strlcpy(m->text, prefix, sizeof(m->text));
	redis_outbox_push(m);
}

void
redis_cache_purge(const char *prefix)
{
	if (redis_efd == -1)
		return;
	/* until Redis has counted it, this instance neither reads nor writes the level */
	atomic_fetch_add(&redis_cpending, 1);
	atomic_store(&redis_cgen, -1);
	atomic_fetch_add(&redis_cache_purges, 1);
	redis_cpurge_queue(prefix);
}

void
redis_rescale(const char *name, const struct conf_rate *from, const struct conf_rate *to)
{
	uint64_t t_old, t_new, tau;
	struct redis_msg *m;

	if (redis_efd == -1 || ratelimit_params(from, &t_old, &tau) < 0 ||
	    ratelimit_params(to, &t_new, &tau) < 0 || strpbrk(name, "\t\r\n") != NULL)
		return;
	/* every instance forgets what it saw of the key: the next request asks Redis */
	redis_olc_forget(name);
	redis_publish("forget", (const char *const[]){name}, 1);
	m = xcalloc(1, sizeof(*m));
	m->t_old_us = (t_old + 999) / 1000;
	m->t_new_us = (t_new + 999) / 1000;
	util_strlcpy(m->text, name, sizeof(m->text));
	redis_outbox_push(m);
}

static void
redis_hook_block(const char *kind, const char *value, int64_t until)
{
	char u[24];

	snprintf(u, sizeof(u), "%lld", (long long)until);
	redis_publish(until < 0 ? "unblock" : "block", (const char *const[]){kind, value, u}, 3);
}

static void
redis_hook_revoke(const char *jti, int64_t expires_at)
{
	char e[24];

	snprintf(e, sizeof(e), "%lld", (long long)expires_at);
	redis_publish("revoke", (const char *const[]){jti, e}, 2);
}

static void
redis_hook_ban(const char *name, int64_t until, int level)
{
	char u[24], lv[16];

	snprintf(u, sizeof(u), "%lld", (long long)until);
	snprintf(lv, sizeof(lv), "%d", level);
	redis_publish(until < 0 ? "unban" : "ban", (const char *const[]){name, u, lv}, 3);
}

static void
redis_hook_key(const struct identity_key *k)
{
	char uid[24], exp[24];

	snprintf(uid, sizeof(uid), "%lld", (long long)k->user_id);
	snprintf(exp, sizeof(exp), "%lld", (long long)k->expires_at);
	redis_publish("key",
	              (const char *const[]){k->hash, k->prefix[0] ? k->prefix : "-", k->tier, uid,
	                                    exp, k->revoked ? "1" : "0"},
	              6);
}

static void
redis_hook_user(const struct identity_user *u)
{
	char id[24];

	snprintf(id, sizeof(id), "%lld", (long long)u->id);
	redis_publish("user", (const char *const[]){id, u->tier, u->role[0] ? u->role : "-"}, 3);
}

static const struct identity_hooks redis_hooks = {
    .block = redis_hook_block,
    .revoke = redis_hook_revoke,
    .ban = redis_hook_ban,
    .key = redis_hook_key,
    .user = redis_hook_user,
};

static const char *
redis_dash(const char *s)
{
	return strcmp(s, "-") == 0 ? "" : s;
}

/* Applies another instance's change (f[0] the op, then its fields) to identity.c. */
static int
redis_apply(char **f, int n)
{
	const char *op = f[0];

	if (strcmp(op, "block") == 0 && n == 4)
		identity_block(f[1], f[2], strtoll(f[3], NULL, 10));
	else if (strcmp(op, "unblock") == 0 && n == 4)
		identity_unblock(f[1], f[2]);
	else if (strcmp(op, "revoke") == 0 && n == 3)
		identity_revoke(f[1], strtoll(f[2], NULL, 10));
	else if (strcmp(op, "ban") == 0 && n == 4)
		identity_ban_set(f[1], strtoll(f[2], NULL, 10), atoi(f[3]));
	else if (strcmp(op, "unban") == 0 && n == 4)
		identity_ban_clear(f[1]);
	else if (strcmp(op, "forget") == 0 && n == 2)
		redis_olc_forget(f[1]);
	else if (strcmp(op, "cpurge") == 0 && n == 3) {
		/* the new generation first: a lookup still out under the old one is dropped */
		redis_cgen_set(strtoll(f[1], NULL, 10), 1);
		cache_purge_local(strcmp(f[2], "-") == 0 ? NULL : f[2]);
	} else if (strcmp(op, "key") == 0 && n == 7) {
		struct identity_key k;

		memset(&k, 0, sizeof(k));
		util_strlcpy(k.hash, f[1], sizeof(k.hash));
		util_strlcpy(k.prefix, redis_dash(f[2]), sizeof(k.prefix));
		util_strlcpy(k.tier, f[3], sizeof(k.tier));
		k.user_id = strtoll(f[4], NULL, 10);
		k.expires_at = strtoll(f[5], NULL, 10);
		k.revoked = atoi(f[6]);
		identity_key_put(&k);
	} else if (strcmp(op, "user") == 0 && n == 4) {
		struct identity_user u;

		memset(&u, 0, sizeof(u));
		u.id = strtoll(f[1], NULL, 10);
		util_strlcpy(u.tier, f[2], sizeof(u.tier));
		util_strlcpy(u.role, redis_dash(f[3]), sizeof(u.role));
		identity_user_put(&u);
	} else
		return -1;
	return 0;
}

static void
redis_message(const char *text, size_t len)
{
	char buf[REDIS_MSG_MAX], *f[REDIS_FIELDS_MAX + 1], *save = NULL;
	int n = 0;

	if (len >= sizeof(buf))
		return;
	memcpy(buf, text, len);
	buf[len] = '\0';
	for (char *t = strtok_r(buf, "\t", &save); t != NULL && n <= REDIS_FIELDS_MAX;
	     t = strtok_r(NULL, "\t", &save))
		f[n++] = t;
	if (n < 2 || strcmp(f[0], redis_instance) == 0)
		return; /* malformed, or our own change coming back */
	atomic_fetch_add(&redis_received, 1);
	redis_applying = 1;
	if (redis_apply(f + 1, n - 1) < 0)
		log_warnx("redis: ignored a change message: %s", f[1]);
	redis_applying = 0;
}

static int
redis_resync_block(const struct store_block *b, void *arg)
{
	identity_block(b->kind, b->value, b->until);
	(*(int *)arg)++;
	return 0;
}

static int
redis_resync_ban(const struct store_ban *b, void *arg)
{
	identity_ban_set(b->value, b->until, b->level);
	(*(int *)arg)++;
	return 0;
}

static int
redis_resync_revocation(const struct store_revocation *r, void *arg)
{
	identity_revoke(r->jti, r->expires_at);
	(*(int *)arg)++;
	return 0;
}

/*
 * On a pool thread, after the subscriber came back: the blocks, bans and revocations in
 * force in the database, applied again, so that the changes other instances published
 * during the outage (and stored in the shared database) are not missed. Removals made
 * meanwhile are not replayed: an unblock reaches this instance with its next restart or
 * the next change of that block.
 */
static void
redis_resync(struct store *st, void *arg)
{
	int64_t now = (int64_t)time(NULL);
	int n = 0;

	if (st == NULL)
		return;
	redis_applying = 1;
	if (store_blocks_all(st, now, redis_resync_block, &n) != 0 ||
	    store_bans_all(st, now, redis_resync_ban, &n) != 0 ||
	    store_revocations_all(st, now, redis_resync_revocation, &n) != 0)
		log_warnx("redis: reading blocks, bans and revocations again: %s", store_error(st));
	else
		log_info("redis: subscriber back: %d blocks, bans and revocations read again", n);
	redis_applying = 0;
}

/* Replies on the subscriber: the SUBSCRIBE confirmation, then one per message. */
static void
redis_sub_reply(redisAsyncContext *ac, void *r, void *priv)
{
	struct redis_link *l = ac->data;
	const redisReply *rep = r;

	if (rep == NULL || l->ac != ac)
		return;
	if (rep->type == REDIS_REPLY_ERROR) {
		char why[160];

		snprintf(why, sizeof(why), "SUBSCRIBE refused: %s", redis_reply_text(rep));
		redis_link_kill(l, why);
		return;
	}
	if (rep->type != REDIS_REPLY_ARRAY || rep->elements != 3 ||
	    rep->element[0]->type != REDIS_REPLY_STRING)
		return;
	if (strcmp(rep->element[0]->str, "subscribe") == 0 && l->state != RL_UP) {
		int again = l->ever_up;

		redis_link_up(l);
		/* what was published while we were away is lost: read it from the database */
		if (again)
			jobs_detached(redis_resync, NULL, NULL);
	} else if (strcmp(rep->element[0]->str, "message") == 0 &&
	           rep->element[2]->type == REDIS_REPLY_STRING)
		redis_message(rep->element[2]->str, rep->element[2]->len);
}

static void
redis_publish_reply(redisAsyncContext *ac, void *r, void *priv)
{
	struct redis_link *l = ac->data;
	const redisReply *rep = r;

	redis_link_replied(l, ac);
	if (rep == NULL || rep->type == REDIS_REPLY_ERROR)
		atomic_fetch_add(&redis_ev_errors, 1);
}

/*
 * Sets the generation read from Redis (GET, or a purge message) unless a purge of ours
 * is still on its way: its INCR brings a newer one. A change from a generation we knew
 * means purges were missed (the publisher was away): memory is purged as well.
 */
static void
redis_cgen_set(int64_t gen, int from_message)
{
	int64_t old = atomic_load(&redis_cgen);

	if (atomic_load(&redis_cpending) != 0 || (from_message && old >= gen))
		return;
	atomic_store(&redis_cgen, gen);
	if (!from_message && old >= 0 && old != gen) {
		log_info("redis: shared cache generation %" PRId64 " -> %" PRId64
		         ": purges were missed, memory purged",
		         old, gen);
		cache_purge_local(NULL);
	}
}

static void
redis_cgen_reply(redisAsyncContext *ac, void *r, void *priv)
{
	const redisReply *rep = r;

	redis_link_replied(ac->data, ac);
	if (rep == NULL || (rep->type != REDIS_REPLY_NIL && rep->type != REDIS_REPLY_STRING)) {
		atomic_fetch_add(&redis_ev_errors, 1);
		return;
	}
	redis_cgen_set(rep->type == REDIS_REPLY_NIL ? 0 : strtoll(rep->str, NULL, 10), 0);
}

/* Reads the generation (the publisher is up); on the events thread. */
static void
redis_cgen_read(void)
{
	if (redis_pub.ac != NULL && redisAsyncCommand(redis_pub.ac, redis_cgen_reply, NULL,
	                                              "GET " CACHE_SHARED_GEN_KEY) == REDIS_OK)
		redis_link_sent(&redis_pub);
}

static void redis_cpurge_queue(const char *prefix);

/* The new generation after our purge's INCR: every instance is told, with the prefix. */
static void
redis_cpurge_reply(redisAsyncContext *ac, void *r, void *priv)
{
	const redisReply *rep = r;
	char *prefix = priv;

	redis_link_replied(ac->data, ac);
	if (rep == NULL && !atomic_load(&redis_stopping)) {
		redis_cpurge_queue(prefix); /* the connection went: again once it is back */
	} else if (rep != NULL && rep->type == REDIS_REPLY_INTEGER) {
		char gen[24];

		if (atomic_fetch_sub(&redis_cpending, 1) == 1)
			atomic_store(&redis_cgen, (int64_t)rep->integer);
		snprintf(gen, sizeof(gen), "%lld", (long long)rep->integer);
		if (redis_pub.ac != NULL &&
		    redisAsyncCommand(redis_pub.ac, redis_publish_reply, NULL,
		                      "PUBLISH %s %s\t%s\t%s\t%s", redis_channel, redis_instance,
		                      "cpurge", gen,
		                      prefix[0] != '\0' ? prefix : "-") == REDIS_OK) {
			redis_link_sent(&redis_pub);
			atomic_fetch_add(&redis_published, 1);
		}
	} else {
		/* refused: the level resumes with whatever generation Redis holds */
		atomic_fetch_add(&redis_ev_errors, 1);
		if (rep != NULL && atomic_fetch_sub(&redis_cpending, 1) == 1)
			redis_cgen_read();
	}
	free(prefix);
}

static int
redis_cpurge_send(const char *prefix)
{
	char *p = xstrdup(prefix);

	if (redisAsyncCommand(redis_pub.ac, redis_cpurge_reply, p, "INCR " CACHE_SHARED_GEN_KEY) !=
	    REDIS_OK) {
		free(p);
		return -1;
	}
	return 0;
}

/* Sends the queued changes while the publisher is up; the rest waits for it. */
static void
redis_outbox_drain(void)
{
	while (redis_pub.state == RL_UP && redis_pub.ac != NULL) {
		struct redis_msg *m;
		int r;

		pthread_mutex_lock(&redis_outbox_lock);
		m = redis_outbox_head;
		if (m != NULL) {
			redis_outbox_head = m->next;
			if (redis_outbox_head == NULL)
				redis_outbox_tail = NULL;
			redis_outbox_len--;
		}
		pthread_mutex_unlock(&redis_outbox_lock);
		if (m == NULL)
			return;
		if (m->cache_purge)
			r = redis_cpurge_send(m->text);
		else if (m->t_old_us != 0)
			r = redisAsyncCommand(redis_pub.ac, redis_publish_reply, NULL,
			                      "EVAL %s 1 " REDIS_KEY_PREFIX "%s %" PRIu64
			                      " %" PRIu64,
			                      redis_rescale_lua, m->text, m->t_old_us, m->t_new_us);
		else
			r = redisAsyncCommand(redis_pub.ac, redis_publish_reply, NULL,
			                      "PUBLISH %s %s", redis_channel, m->text);
		if (r == REDIS_OK) {
			redis_link_sent(&redis_pub);
			atomic_fetch_add(&redis_published, 1);
		} else {
			atomic_fetch_add(&redis_ev_errors, 1);
		}
		free(m);
	}
}

static void
redis_outbox_event(evutil_socket_t fd, short what, void *arg)
{
	uint64_t v;

	if (read(fd, &v, sizeof(v)) < 0 && errno != EAGAIN)
		log_warn("redis: eventfd");
	if (atomic_load(&redis_stopping)) {
		event_base_loopbreak(redis_ebase);
		return;
	}
	redis_outbox_drain();
}

static void *
redis_main(void *arg)
{
	event_base_dispatch(redis_ebase);
	if (redis_pub.ac != NULL)
		redisAsyncFree(redis_pub.ac);
	if (redis_sub.ac != NULL)
		redisAsyncFree(redis_sub.ac);
	return NULL;
}

/* A random name for this process, so that its own changes are not applied twice. */
static void
redis_make_instance_id(void)
{
	uint64_t v;

	if (RAND_bytes((unsigned char *)&v, sizeof(v)) != 1)
		v = util_now_us() ^ ((uint64_t)getpid() << 40);
	snprintf(redis_instance, sizeof(redis_instance), "%016" PRIx64, v);
}

int
redis_start(const struct config *cfg, char *err, size_t errlen)
{
	unsigned char md[SHA_DIGEST_LENGTH];

	if (cfg->redis[0] == '\0')
		return 0;
	if (redis_url_parse(cfg->redis, &redis_url, err, errlen) < 0)
		return -1;
	redis_failure = cfg->redis_failure;
	redis_timeout_ms = cfg->redis_timeout_ms ? cfg->redis_timeout_ms : 1000;
	SHA1((const unsigned char *)redis_gcra_lua, sizeof(redis_gcra_lua) - 1, md);
	for (int i = 0; i < SHA_DIGEST_LENGTH; i++)
		snprintf(redis_sha + 2 * i, 3, "%02x", md[i]);
	snprintf(redis_channel, sizeof(redis_channel), "gatewayd:%d:changes", redis_url.db);
	redis_make_instance_id();

	redis_ebase = event_base_new();
	redis_efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (redis_ebase == NULL || redis_efd == -1) {
		snprintf(err, errlen, "redis: cannot create the events loop");
		return -1;
	}
	redis_eev =
	    event_new(redis_ebase, redis_efd, EV_READ | EV_PERSIST, redis_outbox_event, NULL);
	event_add(redis_eev, NULL);
	redis_link_init(&redis_pub, "publisher", redis_ebase, RK_PUBLISHER);
	redis_link_init(&redis_sub, "subscriber", redis_ebase, RK_SUBSCRIBER);
	redis_link_connect(&redis_pub, util_now_ms());
	redis_link_connect(&redis_sub, util_now_ms());
	if (pthread_create(&redis_thread, NULL, redis_main, NULL) != 0) {
		snprintf(err, errlen, "redis: pthread_create: %s", strerror(errno));
		return -1;
	}
	redis_thread_started = 1;
	pthread_setname_np(redis_thread, "gw-redis");
	identity_set_hooks(&redis_hooks);
	redis_on = 1;
	log_info("redis: sharing limits and identity changes through %s:%d db %d (failure mode "
	         "%s, instance %s)",
	         redis_url.host, redis_url.port, redis_url.db,
	         redis_failure == CONFIG_REDIS_CLOSED ? "closed" : "open", redis_instance);
	return 0;
}

void
redis_stop(void)
{
	uint64_t one = 1;

	if (!redis_thread_started)
		return;
	atomic_store(&redis_stopping, 1);
	if (write(redis_efd, &one, sizeof(one)) < 0)
		log_warn("redis: stop");
	pthread_join(redis_thread, NULL);
	redis_thread_started = 0;
}

/* ---------------------------------------------------------------- metrics */

static int
redis_all_up(void)
{
	if (redis_sub.state != RL_UP || redis_pub.state != RL_UP)
		return 0;
	for (int i = 0; i < GW_MAX_WORKERS; i++) {
		const struct redis_wconn *rc = atomic_load(&redis_wconns[i]);

		if (rc != NULL && rc->link.state == RL_DOWN)
			return 0;
	}
	return 1;
}

static uint64_t
redis_wsum(size_t off)
{
	uint64_t n = 0;

	for (int i = 0; i < GW_MAX_WORKERS; i++) {
		const struct redis_wconn *rc = atomic_load(&redis_wconns[i]);

		if (rc != NULL)
			n += atomic_load_explicit(
			    (const _Atomic uint64_t *)(const void *)((const char *)rc + off),
			    memory_order_relaxed);
	}
	return n;
}

char *
redis_metrics_text(void)
{
	size_t cap = 8192, off;
	char *o = xmalloc(cap);

	if (!redis_on) {
		o[0] = '\0';
		return o;
	}
	snprintf(
	    o, cap,
	    "# HELP gatewayd_redis_up 1 when every Redis connection (limiter, publisher, "
	    "subscriber) is up.\n"
	    "# TYPE gatewayd_redis_up gauge\n"
	    "gatewayd_redis_up %d\n"
	    "# HELP gatewayd_redis_commands_total Commands sent to Redis, by purpose.\n"
	    "# TYPE gatewayd_redis_commands_total counter\n"
	    "gatewayd_redis_commands_total{kind=\"limit\"} %" PRIu64 "\n"
	    "gatewayd_redis_commands_total{kind=\"publish\"} %" PRIu64 "\n"
	    "# HELP gatewayd_redis_errors_total Error replies and failed commands.\n"
	    "# TYPE gatewayd_redis_errors_total counter\n"
	    "gatewayd_redis_errors_total %" PRIu64 "\n"
	    "# HELP gatewayd_redis_limit_decisions_total Shared tier-limit decisions, by source "
	    "(local_cache: refused by the over-limit cache, no round-trip).\n"
	    "# TYPE gatewayd_redis_limit_decisions_total counter\n"
	    "gatewayd_redis_limit_decisions_total{source=\"redis\"} %" PRIu64 "\n"
	    "gatewayd_redis_limit_decisions_total{source=\"local_cache\"} %" PRIu64 "\n"
	    "# HELP gatewayd_redis_fallbacks_total Tier-limit decisions taken without Redis "
	    "(redis_failure).\n"
	    "# TYPE gatewayd_redis_fallbacks_total counter\n"
	    "gatewayd_redis_fallbacks_total %" PRIu64 "\n"
	    "# HELP gatewayd_redis_transitions_total Connection state changes.\n"
	    "# TYPE gatewayd_redis_transitions_total counter\n"
	    "gatewayd_redis_transitions_total{to=\"up\"} %" PRIu64 "\n"
	    "gatewayd_redis_transitions_total{to=\"down\"} %" PRIu64 "\n"
	    "# HELP gatewayd_redis_changes_received_total Changes applied from other instances.\n"
	    "# TYPE gatewayd_redis_changes_received_total counter\n"
	    "gatewayd_redis_changes_received_total %" PRIu64 "\n"
	    "# HELP gatewayd_redis_changes_dropped_total Changes dropped while the publisher was "
	    "down and its queue full.\n"
	    "# TYPE gatewayd_redis_changes_dropped_total counter\n"
	    "gatewayd_redis_changes_dropped_total %" PRIu64 "\n",
	    redis_all_up(), redis_wsum(offsetof(struct redis_wconn, commands)),
	    atomic_load(&redis_published),
	    redis_wsum(offsetof(struct redis_wconn, errors)) + atomic_load(&redis_ev_errors),
	    redis_wsum(offsetof(struct redis_wconn, decisions)) -
	        redis_wsum(offsetof(struct redis_wconn, olc_hits)),
	    redis_wsum(offsetof(struct redis_wconn, olc_hits)),
	    redis_wsum(offsetof(struct redis_wconn, fallbacks)), atomic_load(&redis_ups),
	    atomic_load(&redis_downs), atomic_load(&redis_received), atomic_load(&redis_dropped));
	off = strlen(o);
	snprintf(o + off, cap - off,
	         "# HELP gatewayd_cache_shared_total The shared cache level (cache shared=redis): "
	         "lookups by result, entries stored, entries too large to share, failed commands.\n"
	         "# TYPE gatewayd_cache_shared_total counter\n"
	         "gatewayd_cache_shared_total{result=\"hit\"} %" PRIu64 "\n"
	         "gatewayd_cache_shared_total{result=\"miss\"} %" PRIu64 "\n"
	         "gatewayd_cache_shared_total{result=\"error\"} %" PRIu64 "\n"
	         "gatewayd_cache_shared_total{result=\"stored\"} %" PRIu64 "\n"
	         "gatewayd_cache_shared_total{result=\"too_large\"} %" PRIu64 "\n"
	         "# HELP gatewayd_cache_shared_purges_total Purges of every instance's cache sent "
	         "from this one.\n"
	         "# TYPE gatewayd_cache_shared_purges_total counter\n"
	         "gatewayd_cache_shared_purges_total %" PRIu64 "\n"
	         "# HELP gatewayd_cache_shared_generation The shared cache level's key generation "
	         "(-1 while unknown).\n"
	         "# TYPE gatewayd_cache_shared_generation gauge\n"
	         "gatewayd_cache_shared_generation %" PRId64 "\n",
	         atomic_load(&redis_cache_ctr[RC_HIT]), atomic_load(&redis_cache_ctr[RC_MISS]),
	         atomic_load(&redis_cache_ctr[RC_ERROR]), atomic_load(&redis_cache_ctr[RC_STORED]),
	         atomic_load(&redis_cache_ctr[RC_TOO_LARGE]), atomic_load(&redis_cache_purges),
	         atomic_load(&redis_cgen));
	return o;
}
