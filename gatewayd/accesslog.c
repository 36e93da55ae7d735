#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#include "accesslog.h"
#include "cidr.h"
#include "config.h"
#include "log.h"
#include "proxy.h"
#include "publish.h"
#include "util.h"
#include "worker.h"
#include "xmalloc.h"

/*
 * The log thread: every ACCESSLOG_DRAIN_MS it empties the workers' rings in order,
 * writes the formatted lines (one fwrite per pass), keeps the newest records in `recent`
 * and hands every record to the publisher, which counts identities for the `stats`
 * message and samples the `log` messages. Once a second it asks the publisher for the
 * `stats` message. Only this thread touches the file.
 */

#define ACCESSLOG_LINE_MAX 1024
#define ACCESSLOG_OUT_MAX (256 * 1024)

static struct {
	pthread_t thread;
	int running;
	_Atomic int stop;
	_Atomic int reopen;

	pthread_mutex_t cfg_lock; /* target, changed by reload on the main thread */
	char target[4096];        /* a path, "stdout", or "" (no file) */
	int target_changed;

	FILE *fp; /* the log thread's */
	char open_path[4096];
	char *out; /* formatted lines of one pass */
	size_t outlen;

	pthread_mutex_t recent_lock;
	struct accesslog_rec recent[ACCESSLOG_RECENT];
	uint64_t nrecent; /* records ever stored; the newest is at (nrecent - 1) % size */

	_Atomic uint64_t lines;
	int64_t wall_offset_us; /* Unix time minus monotonic time, refreshed each pass */
} alog = {.cfg_lock = PTHREAD_MUTEX_INITIALIZER, .recent_lock = PTHREAD_MUTEX_INITIALIZER};

struct accesslog_ring *
accesslog_ring_new(void)
{
	return xcalloc(1, sizeof(struct accesslog_ring));
}

static void
accesslog_copy(char *dst, size_t cap, const char *src, size_t n)
{
	if (n >= cap)
		n = cap - 1;
	memcpy(dst, src, n);
	dst[n] = '\0';
}

void
accesslog_request(struct exchange *x, int status, const struct backend *b, uint64_t bytes,
                  const char *error)
{
	struct accesslog_ring *ring = x->w->alog;
	uint64_t head, tail;
	struct accesslog_rec *r;
	const struct http_msg *m = &x->req;

	if (ring == NULL)
		return;
	head = atomic_load_explicit(&ring->head, memory_order_relaxed);
	tail = atomic_load_explicit(&ring->tail, memory_order_acquire);
	if (head - tail >= ACCESSLOG_RING) {
		atomic_store_explicit(
		    &ring->dropped, atomic_load_explicit(&ring->dropped, memory_order_relaxed) + 1,
		    memory_order_relaxed);
		return;
	}
	r = &ring->rec[head & (ACCESSLOG_RING - 1)];
	r->mono_us = util_now_us();
	r->latency_us = x->start_us != 0 && r->mono_us > x->start_us ? r->mono_us - x->start_us : 0;
	r->bytes = bytes;
	r->status = (uint16_t)status;
	r->rl = status == 429 ? ACCESSLOG_RL_REJECTED
	        : x->rl_set   ? ACCESSLOG_RL_ALLOWED
	                      : ACCESSLOG_RL_NONE;
	r->rl_limit = x->rl_limit;
	r->rl_remaining = x->rl_remaining;
	memcpy(r->client_ip, x->client_ip, 16);
	accesslog_copy(r->request_id, sizeof(r->request_id), x->request_id, x->request_id_len);
	if (x->id.kind != IDENTITY_NONE) {
		util_strlcpy(r->identity, x->id.name, sizeof(r->identity));
		util_strlcpy(r->tier, x->id.tier, sizeof(r->tier));
	} else {
		r->identity[0] = r->tier[0] = '\0';
	}
	/* an ownerless key goes by its public prefix; a user's key counts as its user */
	util_strlcpy(r->key_prefix,
	             x->id.kind == IDENTITY_KEY && x->id.name[0] == 'k' ? x->id.key_prefix : "",
	             sizeof(r->key_prefix));
	if (x->target_saved) {
		const char *sp = strchr(x->saved_target, ' ');

		accesslog_copy(r->method, sizeof(r->method), x->saved_target,
		               (size_t)(sp - x->saved_target));
		util_strlcpy(r->path, sp + 1, sizeof(r->path));
	} else if (m->method_len > 0) {
		accesslog_copy(r->method, sizeof(r->method), x->in.data + m->method_off,
		               m->method_len);
		accesslog_copy(r->path, sizeof(r->path), x->in.data + m->target_off, m->target_len);
	} else {
		r->method[0] = r->path[0] = '\0'; /* the request did not parse */
	}
	util_strlcpy(r->backend, b != NULL ? b->id : "", sizeof(r->backend));
	util_strlcpy(r->dc, b != NULL ? b->dc : "", sizeof(r->dc));
	util_strlcpy(r->cache, x->cache_status != NULL ? x->cache_status : "", sizeof(r->cache));
	util_strlcpy(r->country, x->geo_country, sizeof(r->country));
	util_strlcpy(r->error, error != NULL ? error : "", sizeof(r->error));
	atomic_store_explicit(&ring->head, head + 1, memory_order_release);
}

void
accesslog_save_target(struct exchange *x)
{
	const struct http_msg *m = &x->req;

	/* rare (a body larger than the buffer): snprintf is fine here */
	if (x->target_saved || m->method_len == 0)
		return;
	snprintf(x->saved_target, sizeof(x->saved_target), "%.*s %.*s",
	         (int)(m->method_len < 11 ? m->method_len : 11), x->in.data + m->method_off,
	         (int)m->target_len, x->in.data + m->target_off);
	x->target_saved = 1;
}

/* --- formatting --- */

/*
 * util_append without the NUL after every piece (the line's length is what counts):
 * n bytes at off, or cap + 1 once anything did not fit (and from then on).
 */
static inline size_t
accesslog_put(char *buf, size_t off, size_t cap, const char *s, size_t n)
{
	if (off > cap || n >= cap - off)
		return cap + 1;
	memcpy(buf + off, s, n);
	return off + n;
}

static size_t
accesslog_put_u64(char *buf, size_t off, size_t cap, uint64_t v)
{
	char tmp[UTIL_U64_DIGITS];
	size_t n;
	const char *d = util_u64_digits(v, tmp, &n);

	return accesslog_put(buf, off, cap, d, n);
}

/* 1 for the bytes a JSON string must escape: '"', '\\', controls and non-ASCII */
static const uint8_t accesslog_esc[256] = {
    [0 ... 0x1f] = 1,
    ['"'] = 1,
    ['\\'] = 1,
    [0x7f ... 0xff] = 1,
};

static size_t
accesslog_json_str(char *buf, size_t off, size_t cap, const char *s, size_t n)
{
	static const char hex[] = "0123456789abcdef";
	size_t run = 0; /* start of the bytes that need no escape, appended in one go */

	off = accesslog_put(buf, off, cap, "\"", 1);
	for (size_t i = 0; i < n; i++) {
		unsigned char ch = (unsigned char)s[i];

		if (!accesslog_esc[ch])
			continue;
		off = accesslog_put(buf, off, cap, s + run, i - run);
		run = i + 1;
		if (ch == '"' || ch == '\\') {
			char e[2] = {'\\', (char)ch};
			off = accesslog_put(buf, off, cap, e, 2);
		} else {
			/* bytes outside printable ASCII: \u00XX keeps the line valid JSON */
			char e[6] = {'\\', 'u', '0', '0', hex[ch >> 4], hex[ch & 15]};
			off = accesslog_put(buf, off, cap, e, 6);
		}
	}
	off = accesslog_put(buf, off, cap, s + run, n - run);
	return accesslog_put(buf, off, cap, "\"", 1);
}

/* 1 when the query parameter name (n bytes) may carry a credential. */
static int
accesslog_secret_param(const char *name, size_t n)
{
	static const char *const names[] = {"api_key",      "apikey",        "key",      "token",
	                                    "access_token", "refresh_token", "password", "secret",
	                                    "jwt",          "auth"};

	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (util_strncaseeq(name, n, names[i]))
			return 1;
	return 0;
}

/* The path with the values of credential-like query parameters replaced. */
static size_t
accesslog_redacted_path(const char *p, char *out, size_t cap)
{
	const char *q = strchr(p, '?');
	size_t off = 0;

	if (q == NULL)
		return util_append_str(out, 0, cap, p);
	off = util_append(out, off, cap, p, (size_t)(q - p) + 1);
	for (const char *s = q + 1; *s != '\0';) {
		const char *amp = strchr(s, '&'), *end = amp ? amp : s + strlen(s);
		const char *eq = memchr(s, '=', (size_t)(end - s));

		if (eq != NULL && accesslog_secret_param(s, (size_t)(eq - s))) {
			off = util_append(out, off, cap, s, (size_t)(eq - s) + 1);
			off = util_append_str(out, off, cap, "REDACTED");
		} else {
			off = util_append(out, off, cap, s, (size_t)(end - s));
		}
		if (amp == NULL)
			break;
		off = util_append(out, off, cap, "&", 1);
		s = amp + 1;
	}
	return off;
}

static size_t
accesslog_field_str(char *buf, size_t off, size_t cap, const char *name, size_t name_len,
                    const char *v)
{
	off = accesslog_put(buf, off, cap, name, name_len);
	return accesslog_json_str(buf, off, cap, v, strlen(v));
}

static size_t
accesslog_field_u64(char *buf, size_t off, size_t cap, const char *name, size_t name_len,
                    uint64_t v)
{
	off = accesslog_put(buf, off, cap, name, name_len);
	return accesslog_put_u64(buf, off, cap, v);
}

/* Field names are literals: their length is known at compile time. */
#define ALOG_STR(name, v) (off = accesslog_field_str(buf, off, cap, name, sizeof(name) - 1, v))
#define ALOG_U64(name, v) (off = accesslog_field_u64(buf, off, cap, name, sizeof(name) - 1, v))
#define ALOG_LIT(lit) (off = accesslog_put(buf, off, cap, lit, sizeof(lit) - 1))

/* The date and time of the last line formatted on this thread, to the second. */
static __thread time_t accesslog_ts_sec;
static __thread char accesslog_ts[80];
static __thread size_t accesslog_ts_len;

size_t
accesslog_format(const struct accesslog_rec *r, int64_t wall_offset_us, char *buf, size_t cap)
{
	static const char *const rl[] = {"none", "allowed", "rejected"};
	int64_t wall = (int64_t)r->mono_us + wall_offset_us;
	time_t sec = (time_t)(wall / 1000000);
	struct tm tm;
	char ip[64], path[sizeof(r->path) * 2];
	const char *p = r->path;
	size_t off = 0, plen;

	/* the date and time change once a second: formatted then, the milliseconds each line */
	if (sec != accesslog_ts_sec || accesslog_ts[0] == '\0') {
		gmtime_r(&sec, &tm);
		accesslog_ts_len = (size_t)snprintf(
		    accesslog_ts, sizeof(accesslog_ts), "%04d-%02d-%02dT%02d:%02d:%02d.",
		    tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
		accesslog_ts_sec = sec;
	}
	cidr_format_addr(r->client_ip, ip, sizeof(ip));
	if (strchr(r->path, '?') != NULL) {
		plen = accesslog_redacted_path(r->path, path, sizeof(path));
		if (plen >= sizeof(path))
			plen = strlen(path);
		p = path;
	} else {
		plen = strlen(r->path);
	}
	{
		int ms = (int)((wall / 1000) % 1000);
		char msz[5] = {(char)('0' + ms / 100), (char)('0' + ms / 10 % 10),
		               (char)('0' + ms % 10), 'Z', '"'};

		ALOG_LIT("{\"time\":\"");
		off = accesslog_put(buf, off, cap, accesslog_ts, accesslog_ts_len);
		off = accesslog_put(buf, off, cap, msz, sizeof(msz));
	}
	ALOG_STR(",\"request_id\":", r->request_id);
	ALOG_STR(",\"client_ip\":", ip);
	/* a key is shown by its public prefix, as /stats and gatectl show it */
	if (r->key_prefix[0] != '\0') {
		ALOG_LIT(",\"identity\":\"k:");
		off = accesslog_put(buf, off, cap, r->key_prefix, strlen(r->key_prefix));
		off = accesslog_put(buf, off, cap, "\"", 1);
	} else {
		ALOG_STR(",\"identity\":", r->identity);
	}
	ALOG_STR(",\"method\":", r->method);
	ALOG_LIT(",\"path\":");
	off = accesslog_json_str(buf, off, cap, p, plen);
	ALOG_U64(",\"status\":", r->status);
	ALOG_U64(",\"bytes\":", r->bytes);
	ALOG_STR(",\"backend\":", r->backend);
	ALOG_STR(",\"datacenter\":", r->dc);
	ALOG_STR(",\"country\":", r->country);
	ALOG_STR(",\"cache\":", r->cache);
	ALOG_U64(",\"latency_us\":", r->latency_us);
	ALOG_STR(",\"ratelimit\":", rl[r->rl % 3]);
	if (r->error[0] != '\0')
		ALOG_STR(",\"error\":", r->error);
	off = accesslog_put(buf, off, cap, "}", 1);
	if (off >= cap)
		return 0;
	buf[off] = '\0'; /* accesslog_put keeps room for it */
	return off;
}

/* --- the log thread --- */

static int64_t
accesslog_wall_offset(void)
{
	struct timeval tv;

	gettimeofday(&tv, NULL);
	return (int64_t)tv.tv_sec * 1000000 + tv.tv_usec - (int64_t)util_now_us();
}

static void
accesslog_close_file(void)
{
	if (alog.fp != NULL && alog.fp != stdout)
		fclose(alog.fp);
	alog.fp = NULL;
	alog.open_path[0] = '\0';
}

/* Opens the configured target when it changed or a reopen was asked for. */
static void
accesslog_apply_target(void)
{
	char target[sizeof(alog.target)];
	int changed, reopen = atomic_exchange(&alog.reopen, 0);

	pthread_mutex_lock(&alog.cfg_lock);
	changed = alog.target_changed;
	alog.target_changed = 0;
	memcpy(target, alog.target, sizeof(target));
	pthread_mutex_unlock(&alog.cfg_lock);
	if (!changed && !reopen)
		return;
	accesslog_close_file();
	if (target[0] == '\0')
		return;
	if (strcmp(target, "stdout") == 0) {
		alog.fp = stdout;
	} else if ((alog.fp = fopen(target, "ae")) == NULL) {
		log_warn("access log %s: cannot open", target);
		return;
	}
	util_strlcpy(alog.open_path, target, sizeof(alog.open_path));
}

static void
accesslog_flush(void)
{
	if (alog.outlen == 0)
		return;
	if (alog.fp != NULL) {
		if (fwrite(alog.out, 1, alog.outlen, alog.fp) != alog.outlen ||
		    fflush(alog.fp) != 0)
			log_warn("access log %s: write failed", alog.open_path);
	}
	alog.outlen = 0;
}

/* One record: kept for /logs, counted for the stats message, written and sampled.
 * With recent_lock held (by accesslog_drain), and room for a line in the output. */
static void
accesslog_take(const struct accesslog_rec *r)
{
	/* the PUB stream and /ws get a sample of the lines, whether or not the file gets
	 * them all (publishing each line costs more than writing it) */
	int publish = publish_log_wanted();
	char line[ACCESSLOG_LINE_MAX], *dst = line;
	size_t n;

	atomic_fetch_add_explicit(&alog.lines, 1, memory_order_relaxed);
	alog.recent[alog.nrecent % ACCESSLOG_RECENT] = *r;
	alog.nrecent++;
	publish_count(r);
	if (alog.fp == NULL && !publish)
		return;
	if (alog.fp != NULL)
		dst = alog.out + alog.outlen; /* in place, at the end of the pass's output */
	n = accesslog_format(r, alog.wall_offset_us, dst, ACCESSLOG_LINE_MAX - 1);
	if (n == 0)
		return;
	if (publish)
		publish_log(dst, n);
	if (alog.fp != NULL) {
		dst[n] = '\n';
		alog.outlen += n + 1;
	}
}

/*
 * Takes every record the workers have finished, merged in time order across the rings
 * (each ring is in order; requests on different workers interleave), so that the file
 * and /logs read as one timeline.
 */
static void
accesslog_drain(void)
{
	struct accesslog_ring *rings[GW_MAX_WORKERS];
	uint64_t head[GW_MAX_WORKERS], tail[GW_MAX_WORKERS];
	int n = 0;

	alog.wall_offset_us = accesslog_wall_offset();
	for (int i = 0; i < gw.nworkers; i++) {
		struct accesslog_ring *ring = gw.workers[i] ? gw.workers[i]->alog : NULL;

		if (ring == NULL)
			continue;
		rings[n] = ring;
		head[n] = atomic_load_explicit(&ring->head, memory_order_acquire);
		tail[n] = atomic_load_explicit(&ring->tail, memory_order_relaxed);
		n++;
	}
	pthread_mutex_lock(&alog.recent_lock);
	for (;;) {
		const struct accesslog_rec *best = NULL;
		int bi = -1;

		if (alog.outlen + ACCESSLOG_LINE_MAX > ACCESSLOG_OUT_MAX) {
			/* the output is full: written without the lock, so that /logs never
			 * waits for the disk */
			pthread_mutex_unlock(&alog.recent_lock);
			accesslog_flush();
			pthread_mutex_lock(&alog.recent_lock);
		}

		for (int i = 0; i < n; i++) {
			const struct accesslog_rec *r;

			if (tail[i] == head[i])
				continue;
			r = &rings[i]->rec[tail[i] & (ACCESSLOG_RING - 1)];
			if (best == NULL || r->mono_us < best->mono_us) {
				best = r;
				bi = i;
			}
		}
		if (best == NULL)
			break;
		accesslog_take(best);
		/* give the slot back at once: a long pass must not fill the ring */
		atomic_store_explicit(&rings[bi]->tail, ++tail[bi], memory_order_release);
	}
	pthread_mutex_unlock(&alog.recent_lock);
	accesslog_flush();
}

static void *
accesslog_main(void *arg)
{
	uint64_t next_second = util_now_ms() + 1000;

	while (!atomic_load(&alog.stop)) {
		struct timespec ts = {0, ACCESSLOG_DRAIN_MS * 1000000L};
		uint64_t now;

		nanosleep(&ts, NULL);
		accesslog_apply_target();
		accesslog_drain();
		now = util_now_ms();
		if (now >= next_second) {
			publish_second(alog.wall_offset_us);
			next_second += 1000;
			if (next_second <= now) /* a stall: do not publish a burst to catch up */
				next_second = now + 1000;
		}
	}
	accesslog_drain();
	accesslog_close_file();
	return NULL;
}

static void
accesslog_set_target(const struct config *cfg)
{
	pthread_mutex_lock(&alog.cfg_lock);
	if (strcmp(alog.target, cfg->access_log) != 0) {
		util_strlcpy(alog.target, cfg->access_log, sizeof(alog.target));
		alog.target_changed = 1;
	}
	pthread_mutex_unlock(&alog.cfg_lock);
}

int
accesslog_start(const struct config *cfg, char *err, size_t errlen)
{
	int rv;

	accesslog_set_target(cfg);
	alog.out = xmalloc(ACCESSLOG_OUT_MAX);
	/* open it now, so that an unwritable path is reported at start-up, not later */
	accesslog_apply_target();
	if (cfg->access_log[0] != '\0' && alog.fp == NULL) {
		snprintf(err, errlen, "access_log %s: %s", cfg->access_log, strerror(errno));
		return -1;
	}
	rv = pthread_create(&alog.thread, NULL, accesslog_main, NULL);
	if (rv != 0) {
		snprintf(err, errlen, "access log thread: %s", strerror(rv));
		return -1;
	}
	alog.running = 1;
	pthread_setname_np(alog.thread, "gw-log");
	return 0;
}

void
accesslog_reconfigure(const struct config *cfg)
{
	accesslog_set_target(cfg);
}

void
accesslog_reopen(void)
{
	atomic_store(&alog.reopen, 1);
}

void
accesslog_stop(void)
{
	if (!alog.running)
		return;
	atomic_store(&alog.stop, 1);
	pthread_join(alog.thread, NULL);
	alog.running = 0;
	free(alog.out);
	alog.out = NULL;
}

cJSON *
accesslog_recent_json(int n)
{
	cJSON *arr = cJSON_CreateArray();
	struct accesslog_rec *copy;
	uint64_t first, last;
	int64_t off = accesslog_wall_offset();
	char line[ACCESSLOG_LINE_MAX];

	if (n <= 0)
		return arr;
	if (n > ACCESSLOG_RECENT)
		n = ACCESSLOG_RECENT;
	copy = xmalloc(sizeof(*copy) * (size_t)n);
	pthread_mutex_lock(&alog.recent_lock);
	last = alog.nrecent;
	first = last > (uint64_t)n ? last - (uint64_t)n : 0;
	for (uint64_t i = first; i < last; i++)
		copy[i - first] = alog.recent[i % ACCESSLOG_RECENT];
	pthread_mutex_unlock(&alog.recent_lock);
	for (uint64_t i = 0; i < last - first; i++) {
		size_t len = accesslog_format(&copy[i], off, line, sizeof(line));
		cJSON *o = len ? cJSON_ParseWithLength(line, len) : NULL;

		if (o != NULL)
			cJSON_AddItemToArray(arr, o);
	}
	free(copy);
	return arr;
}

uint64_t
accesslog_lines(void)
{
	return atomic_load_explicit(&alog.lines, memory_order_relaxed);
}

uint64_t
accesslog_dropped(void)
{
	uint64_t n = 0;

	for (int i = 0; i < gw.nworkers; i++)
		if (gw.workers[i] != NULL && gw.workers[i]->alog != NULL)
			n += atomic_load_explicit(&gw.workers[i]->alog->dropped,
			                          memory_order_relaxed);
	return n;
}
