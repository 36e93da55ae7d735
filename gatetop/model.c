#include <stddef.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "gatetop.h"
#include "util.h"

/*
 * The model: what the last stats message said, the recent stream lines and each metric's
 * history. Missing or mistyped fields read as zero or "" so that a daemon older or newer
 * than this gatetop still shows what it can.
 */

double
model_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

void
model_init(struct model *m)
{
	memset(m, 0, sizeof(*m));
}

void
model_hist_push(struct model_hist *h, double v)
{
	h->v[h->head] = v;
	h->head = (h->head + 1) % MODEL_HIST;
	if (h->len < MODEL_HIST)
		h->len++;
}

double
model_hist_get(const struct model_hist *h, int i)
{
	if (i < 0 || i >= h->len)
		return 0;
	return h->v[(h->head - h->len + i + MODEL_HIST) % MODEL_HIST];
}

int
model_connected(const struct model *m, double now)
{
	return m->have_stats && now - m->last_stats < GATETOP_STALE_S;
}

const struct model_log *
model_log_at(const struct model *m, int i)
{
	if (i < 0 || i >= m->nlog)
		return NULL;
	return &m->log[(m->log_head - 1 - i + MODEL_LOG_MAX) % MODEL_LOG_MAX];
}

static double
json_num(const cJSON *o, const char *name)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);

	return cJSON_IsNumber(v) ? v->valuedouble : 0;
}

static long long
json_int(const cJSON *o, const char *name)
{
	return (long long)json_num(o, name);
}

static int
json_bool(const cJSON *o, const char *name)
{
	return cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, name));
}

static void
json_str(const cJSON *o, const char *name, char *out, size_t outlen)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);

	util_strlcpy(out, cJSON_IsString(v) ? v->valuestring : "", outlen);
}

/*
 * The index of the element of an array whose name (a char array at offset off in each
 * element of the given size) is name, or -1: backends, keys and datacenters alike.
 */
static int
model_index(const void *base, int n, size_t size, size_t off, const char *name)
{
	const char *p = base;

	for (int i = 0; i < n; i++)
		if (strcmp(p + (size_t)i * size + off, name) == 0)
			return i;
	return -1;
}

/* One backend; it keeps the rps history of the backend of the same id in old[]. */
static void
model_backend_parse(struct model_backend *mb, const cJSON *b, const struct model_backend *old,
                    int nold)
{
	int prev;

	memset(mb, 0, sizeof(*mb));
	json_str(b, "id", mb->id, sizeof(mb->id));
	json_str(b, "address", mb->address, sizeof(mb->address));
	json_str(b, "dc", mb->dc, sizeof(mb->dc));
	json_str(b, "circuit", mb->circuit, sizeof(mb->circuit));
	json_str(b, "state", mb->state, sizeof(mb->state));
	mb->healthy = json_bool(b, "healthy");
	mb->weight = (int)json_int(b, "weight");
	mb->active = json_int(b, "active_connections");
	mb->max_conns = json_int(b, "max_conns");
	mb->requests = json_int(b, "requests");
	mb->failures = json_int(b, "failures");
	mb->avg_ms = json_num(b, "avg_response_ms");
	mb->rps = json_num(b, "rps");
	mb->share = json_num(b, "share");
	prev = model_index(old, nold, sizeof(old[0]), offsetof(struct model_backend, id), mb->id);
	if (prev >= 0)
		mb->h_rps = old[prev].h_rps;
	model_hist_push(&mb->h_rps, mb->rps);
}

static void
model_parse_backends(struct model *m, const cJSON *arr)
{
	static struct model_backend old[MODEL_MAX_BACKENDS];
	int nold = m->nbackends;
	const cJSON *b;

	memcpy(old, m->backends, sizeof(old[0]) * (size_t)nold);
	m->nbackends = 0;
	cJSON_ArrayForEach(b, arr)
	{
		if (m->nbackends == MODEL_MAX_BACKENDS)
			break;
		model_backend_parse(&m->backends[m->nbackends++], b, old, nold);
	}
}

static void
model_key_parse(struct model_key *mk, const cJSON *k, double now)
{
	const cJSON *uid = cJSON_GetObjectItemCaseSensitive(k, "user_id");

	memset(mk, 0, sizeof(*mk));
	json_str(k, "identity", mk->identity, sizeof(mk->identity));
	json_str(k, "prefix", mk->prefix, sizeof(mk->prefix));
	json_str(k, "tier", mk->tier, sizeof(mk->tier));
	mk->user_id = cJSON_IsNumber(uid) ? (long long)uid->valuedouble : -1;
	mk->rps = json_num(k, "rps");
	mk->requests = json_int(k, "requests");
	mk->total = json_int(k, "total");
	mk->remaining = json_int(k, "remaining");
	mk->limit = json_int(k, "limit");
	mk->blocked = json_bool(k, "blocked");
	mk->seen = now;
}

/*
 * The interval's busiest identities, then those that were among them in the last
 * MODEL_KEY_LINGER_S seconds (now quiet): a key does not vanish from under the selection
 * the first second it sends nothing.
 */
static void
model_parse_keys(struct model *m, const cJSON *arr, double now)
{
	static struct model_key old[MODEL_MAX_KEYS];
	int nold = m->nkeys;
	const cJSON *k;

	memcpy(old, m->keys, sizeof(old[0]) * (size_t)nold);
	m->nkeys = 0;
	cJSON_ArrayForEach(k, arr)
	{
		if (m->nkeys == MODEL_MAX_KEYS)
			break;
		model_key_parse(&m->keys[m->nkeys++], k, now);
	}
	for (int i = 0; i < nold && m->nkeys < MODEL_MAX_KEYS; i++) {
		if (now - old[i].seen >= MODEL_KEY_LINGER_S ||
		    model_index(m->keys, m->nkeys, sizeof(m->keys[0]),
		                offsetof(struct model_key, identity), old[i].identity) >= 0)
			continue;
		m->keys[m->nkeys] = old[i];
		m->keys[m->nkeys].rps = 0;
		m->keys[m->nkeys].requests = 0;
		m->nkeys++;
	}
}

static struct model_dc *
model_dc_slot(struct model *m, const char *name)
{
	int i =
	    model_index(m->dcs, m->ndcs, sizeof(m->dcs[0]), offsetof(struct model_dc, name), name);

	if (i >= 0)
		return &m->dcs[i];
	if (m->ndcs == MODEL_MAX_DCS)
		return NULL;
	memset(&m->dcs[m->ndcs], 0, sizeof(m->dcs[0]));
	util_strlcpy(m->dcs[m->ndcs].name, name, sizeof(m->dcs[0].name));
	return &m->dcs[m->ndcs++];
}

/*
 * Without datacenters in the stats (a daemon without geo routing sends none, or an empty
 * list) the pane still says where the traffic goes: the backends grouped by their dc.
 */
static void
model_derive_dcs(struct model *m)
{
	m->ndcs = 0;
	m->dcs_derived = 1;
	for (int i = 0; i < m->nbackends; i++) {
		const struct model_backend *b = &m->backends[i];
		struct model_dc *d = model_dc_slot(m, b->dc[0] ? b->dc : "-");

		if (d == NULL)
			break;
		d->healthy |= b->healthy;
		d->backends++;
		d->requests += b->requests;
		d->rps += b->rps;
	}
}

static void
model_parse_dcs(struct model *m, const cJSON *arr)
{
	const cJSON *d;

	if (cJSON_GetArraySize(arr) == 0) {
		model_derive_dcs(m);
		return;
	}
	m->ndcs = 0;
	m->dcs_derived = 0;
	cJSON_ArrayForEach(d, arr)
	{
		char name[32];
		struct model_dc *md;

		json_str(d, "name", name, sizeof(name));
		if ((md = model_dc_slot(m, name)) == NULL)
			break;
		md->healthy = json_bool(d, "healthy");
		md->backends = (int)json_int(d, "backends");
		md->requests = json_int(d, "requests");
		md->rps = json_num(d, "rps");
	}
}

static void
model_parse_stats(struct model *m, const cJSON *o, double now)
{
	const cJSON *q = cJSON_GetObjectItemCaseSensitive(o, "queue");
	const cJSON *rl = cJSON_GetObjectItemCaseSensitive(o, "rate_limit");
	const cJSON *al = cJSON_GetObjectItemCaseSensitive(o, "access_log");

	m->have_stats = 1;
	m->last_stats = now;
	json_str(o, "strategy", m->strategy, sizeof(m->strategy));
	m->uptime = json_num(o, "uptime_seconds");
	m->total_requests = json_int(o, "total_requests");
	m->rps = json_num(o, "rps");
	m->p50 = json_num(o, "p50_ms");
	m->p99 = json_num(o, "p99_ms");
	m->error_rate = json_num(o, "error_rate");
	m->cache_hit_rate = json_num(o, "cache_hit_rate");
	m->queue_depth = json_int(q, "depth");
	m->queue_max = json_int(q, "max");
	m->queue_rejected = json_int(q, "rejected");
	m->rl_allowed = json_int(rl, "allowed");
	m->rl_rejected = json_int(rl, "rejected");
	m->rl_banned = json_int(rl, "banned");
	m->log_lines = json_int(al, "lines");
	m->log_dropped = json_int(al, "dropped");
	model_hist_push(&m->h_rps, m->rps);
	model_hist_push(&m->h_p99, m->p99);
	model_hist_push(&m->h_err, m->error_rate);
	model_hist_push(&m->h_cache, m->cache_hit_rate);
	model_parse_backends(m, cJSON_GetObjectItemCaseSensitive(o, "backends"));
	model_parse_keys(m, cJSON_GetObjectItemCaseSensitive(o, "top_keys"), now);
	model_parse_dcs(m, cJSON_GetObjectItemCaseSensitive(o, "datacenters"));
}

static struct model_log *
model_log_next(struct model *m)
{
	struct model_log *l = &m->log[m->log_head];

	m->log_head = (m->log_head + 1) % MODEL_LOG_MAX;
	if (m->nlog < MODEL_LOG_MAX)
		m->nlog++;
	memset(l, 0, sizeof(*l));
	return l;
}

/* "HH:MM:SS" of an ISO 8601 string, or of unix seconds (local time). */
static void
model_log_time(const cJSON *t, char *out, size_t outlen)
{
	if (cJSON_IsString(t) && strlen(t->valuestring) >= 19) {
		util_strlcpy(out, t->valuestring + 11, outlen < 9 ? outlen : 9);
	} else if (cJSON_IsNumber(t)) {
		time_t s = (time_t)t->valuedouble;
		struct tm tm;

		localtime_r(&s, &tm);
		strftime(out, outlen, "%H:%M:%S", &tm);
	} else {
		util_strlcpy(out, "--:--:--", outlen);
	}
}

static void
model_parse_log(struct model *m, const cJSON *o)
{
	struct model_log *l = model_log_next(m);

	model_log_time(cJSON_GetObjectItemCaseSensitive(o, "time"), l->time, sizeof(l->time));
	json_str(o, "method", l->method, sizeof(l->method));
	json_str(o, "path", l->path, sizeof(l->path));
	json_str(o, "backend", l->backend, sizeof(l->backend));
	json_str(o, "identity", l->identity, sizeof(l->identity));
	json_str(o, "cache", l->cache, sizeof(l->cache));
	json_str(o, "client_ip", l->client_ip, sizeof(l->client_ip));
	json_str(o, "ratelimit", l->ratelimit, sizeof(l->ratelimit));
	l->status = (int)json_int(o, "status");
	l->latency_us = json_int(o, "latency_us");
	l->bytes = json_int(o, "bytes");
}

static void
model_parse_event(struct model *m, const cJSON *o)
{
	struct model_log *l = model_log_next(m);

	l->is_event = 1;
	model_log_time(cJSON_GetObjectItemCaseSensitive(o, "time"), l->time, sizeof(l->time));
	json_str(o, "message", l->path, sizeof(l->path));
}

/* The topic is the text before the first space; the JSON's "type" must agree. */
enum model_topic
model_apply(struct model *m, const char *msg, size_t len, double now)
{
	static const char *const topics[] = {"stats", "log", "event"};
	const char *sp = memchr(msg, ' ', len);
	enum model_topic t = MODEL_NONE;
	cJSON *o;

	if (sp == NULL)
		return MODEL_NONE;
	for (int i = 0; i < 3; i++)
		if ((size_t)(sp - msg) == strlen(topics[i]) &&
		    memcmp(msg, topics[i], (size_t)(sp - msg)) == 0)
			t = (enum model_topic)i;
	if (t == MODEL_NONE)
		return MODEL_NONE;
	o = cJSON_ParseWithLength(sp + 1, len - (size_t)(sp + 1 - msg));
	if (!cJSON_IsObject(o)) {
		cJSON_Delete(o);
		return MODEL_NONE;
	}
	m->messages++;
	if (t == MODEL_STATS)
		model_parse_stats(m, o, now);
	else if (t == MODEL_LOG)
		model_parse_log(m, o);
	else
		model_parse_event(m, o);
	cJSON_Delete(o);
	return t;
}
