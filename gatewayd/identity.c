#include <limits.h>
#include <stdatomic.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "identity.h"
#include "store.h"
#include "util.h"
#include "xmalloc.h"

/*
 * One read-write lock guards every table: the hot path only reads (a handful of
 * lookups per request), writes come from admin actions and logins. A chained hash map
 * with string keys serves keys, users, revocations, blocks and bans alike.
 */

struct smap_entry {
	struct smap_entry *next;
	uint64_t hash;
	char *key;
	void *value; /* owned: freed with the entry */
};

struct smap {
	struct smap_entry **buckets;
	size_t nbuckets; /* power of two */
	size_t count;
};

struct ban_state {
	int64_t window_start;
	uint64_t window_s; /* the limit's window: rejections older than it do not count */
	uint64_t rejections;
	int64_t until;
	int level;
};

struct block_state {
	int64_t until; /* 0 = permanent */
};

static pthread_rwlock_t identity_lock = PTHREAD_RWLOCK_INITIALIZER;

/* Request counters per identity (/usage), sharded so that workers rarely share a lock. */
#define IDENTITY_COUNT_SHARDS 64
struct count_shard {
	pthread_mutex_t lock;
	struct smap map;
} __attribute__((aligned(64)));
static struct count_shard counts[IDENTITY_COUNT_SHARDS];
/* when each key's last_used was last written (identity_touch_due) */
static struct count_shard touches[IDENTITY_COUNT_SHARDS];
static struct smap keys, users, revoked, blocks, bans;
static struct cidr_tree *ip_blocks;
/*
 * Whether any block or ban exists at all, readable without the lock: almost always none,
 * and then the hot path skips the lookups (and formatting their names) entirely.
 */
static _Atomic int any_blocks, any_ip_blocks, any_bans;
static const struct identity_hooks *identity_hooks;

void
identity_set_hooks(const struct identity_hooks *h)
{
	identity_hooks = h;
}

static void
identity_update_flags(void)
{
	atomic_store_explicit(&any_blocks, blocks.count > 0, memory_order_release);
	atomic_store_explicit(&any_ip_blocks, cidr_tree_count(ip_blocks) > 0,
			      memory_order_release);
	atomic_store_explicit(&any_bans, bans.count > 0, memory_order_release);
}

int
identity_blocks_present(void)
{
	return atomic_load_explicit(&any_blocks, memory_order_acquire);
}

int
identity_bans_present(void)
{
	return atomic_load_explicit(&any_bans, memory_order_acquire);
}

static void
smap_init(struct smap *m)
{
	m->nbuckets = 1024;
	m->buckets = xcalloc(m->nbuckets, sizeof(*m->buckets));
	m->count = 0;
}

static struct smap_entry *
smap_find(const struct smap *m, const char *key, uint64_t h)
{
	struct smap_entry *e = m->buckets[h & (m->nbuckets - 1)];

	for (; e != NULL; e = e->next)
		if (e->hash == h && strcmp(e->key, key) == 0)
			return e;
	return NULL;
}

static void *
smap_get(const struct smap *m, const char *key)
{
	struct smap_entry *e = smap_find(m, key, util_hash64(key, strlen(key)));

	return e ? e->value : NULL;
}

static void
smap_grow(struct smap *m)
{
	size_t n = m->nbuckets * 2;
	struct smap_entry **b = xcalloc(n, sizeof(*b));

	for (size_t i = 0; i < m->nbuckets; i++) {
		struct smap_entry *e = m->buckets[i], *next;
		for (; e != NULL; e = next) {
			next = e->next;
			e->next = b[e->hash & (n - 1)];
			b[e->hash & (n - 1)] = e;
		}
	}
	free(m->buckets);
	m->buckets = b;
	m->nbuckets = n;
}

/* Stores value (taking ownership) under key, replacing and freeing an old one. */
static void
smap_put(struct smap *m, const char *key, void *value)
{
	uint64_t h = util_hash64(key, strlen(key));
	struct smap_entry *e = smap_find(m, key, h);

	if (e != NULL) {
		free(e->value);
		e->value = value;
		return;
	}
	if (m->count + 1 > m->nbuckets)
		smap_grow(m);
	e = xmalloc(sizeof(*e));
	e->hash = h;
	e->key = xstrdup(key);
	e->value = value;
	e->next = m->buckets[h & (m->nbuckets - 1)];
	m->buckets[h & (m->nbuckets - 1)] = e;
	m->count++;
}

static int
smap_del(struct smap *m, const char *key)
{
	uint64_t h = util_hash64(key, strlen(key));
	struct smap_entry **pp = &m->buckets[h & (m->nbuckets - 1)];

	for (; *pp != NULL; pp = &(*pp)->next) {
		struct smap_entry *e = *pp;
		if (e->hash == h && strcmp(e->key, key) == 0) {
			*pp = e->next;
			free(e->key);
			free(e->value);
			free(e);
			m->count--;
			return 1;
		}
	}
	return 0;
}

void
identity_init(void)
{
	smap_init(&keys);
	smap_init(&users);
	smap_init(&revoked);
	smap_init(&blocks);
	smap_init(&bans);
	ip_blocks = cidr_tree_new();
	for (int i = 0; i < IDENTITY_COUNT_SHARDS; i++) {
		pthread_mutex_init(&counts[i].lock, NULL);
		smap_init(&counts[i].map);
		pthread_mutex_init(&touches[i].lock, NULL);
		smap_init(&touches[i].map);
	}
}

void
identity_count(const char *name)
{
	struct count_shard *sh = &counts[util_hash64(name, strlen(name)) % IDENTITY_COUNT_SHARDS];
	uint64_t *v;

	pthread_mutex_lock(&sh->lock);
	v = smap_get(&sh->map, name);
	if (v == NULL) {
		v = xcalloc(1, sizeof(*v));
		smap_put(&sh->map, name, v);
	}
	(*v)++;
	pthread_mutex_unlock(&sh->lock);
}

int
identity_touch_due(const char *hash, int64_t now, int64_t every)
{
	struct count_shard *sh = &touches[util_hash64(hash, strlen(hash)) % IDENTITY_COUNT_SHARDS];
	int64_t *v;
	int due = 0;

	pthread_mutex_lock(&sh->lock);
	v = smap_get(&sh->map, hash);
	if (v == NULL) {
		v = xcalloc(1, sizeof(*v));
		smap_put(&sh->map, hash, v);
	}
	if (now - *v >= every) {
		*v = now;
		due = 1;
	}
	pthread_mutex_unlock(&sh->lock);
	return due;
}

uint64_t
identity_count_get(const char *name)
{
	struct count_shard *sh = &counts[util_hash64(name, strlen(name)) % IDENTITY_COUNT_SHARDS];
	const uint64_t *v;
	uint64_t n;

	pthread_mutex_lock(&sh->lock);
	v = smap_get(&sh->map, name);
	n = v ? *v : 0;
	pthread_mutex_unlock(&sh->lock);
	return n;
}

void
identity_key_from_store(struct identity_key *out, const struct store_key *k)
{
	memset(out, 0, sizeof(*out));
	util_strlcpy(out->hash, k->hash, sizeof(out->hash));
	util_strlcpy(out->prefix, k->prefix, sizeof(out->prefix));
	util_strlcpy(out->tier, k->tier, sizeof(out->tier));
	out->user_id = k->user_id;
	out->expires_at = k->expires_at;
	out->revoked = k->revoked;
}

void
identity_user_from_store(struct identity_user *out, const struct store_user *u)
{
	memset(out, 0, sizeof(*out));
	out->id = u->id;
	util_strlcpy(out->tier, u->tier, sizeof(out->tier));
	util_strlcpy(out->role, u->role, sizeof(out->role));
}

void
identity_key_put(const struct identity_key *k)
{
	struct identity_key *v = xmalloc(sizeof(*v));

	*v = *k;
	pthread_rwlock_wrlock(&identity_lock);
	smap_put(&keys, k->hash, v);
	pthread_rwlock_unlock(&identity_lock);
	if (identity_hooks != NULL)
		identity_hooks->key(k);
}

int
identity_key_get(const char *hash, struct identity_key *out)
{
	const struct identity_key *v;

	pthread_rwlock_rdlock(&identity_lock);
	v = smap_get(&keys, hash);
	if (v != NULL)
		*out = *v;
	pthread_rwlock_unlock(&identity_lock);
	return v != NULL;
}

static void
identity_user_key(int64_t id, char *buf, size_t len)
{
	snprintf(buf, len, "%lld", (long long)id);
}

void
identity_user_put(const struct identity_user *u)
{
	struct identity_user *v = xmalloc(sizeof(*v));
	char k[32];

	*v = *u;
	identity_user_key(u->id, k, sizeof(k));
	pthread_rwlock_wrlock(&identity_lock);
	smap_put(&users, k, v);
	pthread_rwlock_unlock(&identity_lock);
	if (identity_hooks != NULL)
		identity_hooks->user(u);
}

int
identity_user_get(int64_t id, struct identity_user *out)
{
	const struct identity_user *v;
	char k[32];

	identity_user_key(id, k, sizeof(k));
	pthread_rwlock_rdlock(&identity_lock);
	v = smap_get(&users, k);
	if (v != NULL)
		*out = *v;
	pthread_rwlock_unlock(&identity_lock);
	return v != NULL;
}

void
identity_revoke(const char *jti, int64_t expires_at)
{
	int64_t *v = xmalloc(sizeof(*v));

	*v = expires_at;
	pthread_rwlock_wrlock(&identity_lock);
	smap_put(&revoked, jti, v);
	pthread_rwlock_unlock(&identity_lock);
	if (identity_hooks != NULL)
		identity_hooks->revoke(jti, expires_at);
}

int
identity_revoked(const char *jti, int64_t now)
{
	const int64_t *v;
	int r;

	pthread_rwlock_rdlock(&identity_lock);
	v = smap_get(&revoked, jti);
	/* an expired token is refused for expiry anyway: the entry may be stale */
	r = v != NULL && (*v == 0 || *v + 3600 >= now);
	pthread_rwlock_unlock(&identity_lock);
	return r;
}

static void
identity_block_name(const char *kind, const char *value, char *buf, size_t len)
{
	snprintf(buf, len, "%s:%s", kind, value);
}

void
identity_block(const char *kind, const char *value, int64_t until)
{
	struct block_state *b = xmalloc(sizeof(*b));
	char name[256];

	b->until = until;
	pthread_rwlock_wrlock(&identity_lock);
	if (strcmp(kind, "ip") == 0) {
		struct cidr c;
		if (cidr_parse(value, &c) == 0) {
			void *old = NULL;
			cidr_tree_insert(ip_blocks, &c, b, &old);
			free(old);
			b = NULL;
		}
	} else {
		identity_block_name(kind, value, name, sizeof(name));
		smap_put(&blocks, name, b);
		b = NULL;
	}
	identity_update_flags();
	pthread_rwlock_unlock(&identity_lock);
	free(b);
	if (identity_hooks != NULL)
		identity_hooks->block(kind, value, until);
}

int
identity_unblock(const char *kind, const char *value)
{
	char name[256];
	int r = 0;

	pthread_rwlock_wrlock(&identity_lock);
	if (strcmp(kind, "ip") == 0) {
		struct cidr c;
		if (cidr_parse(value, &c) == 0) {
			void *old = cidr_tree_remove(ip_blocks, &c);
			r = old != NULL;
			free(old);
		}
	} else {
		identity_block_name(kind, value, name, sizeof(name));
		r = smap_del(&blocks, name);
	}
	identity_update_flags();
	pthread_rwlock_unlock(&identity_lock);
	if (identity_hooks != NULL)
		identity_hooks->block(kind, value, -1);
	return r;
}

int
identity_blocked(const char *kind, const char *value, int64_t now)
{
	char name[256];
	const struct block_state *b;
	int r;

	if (!atomic_load_explicit(&any_blocks, memory_order_acquire))
		return 0;
	identity_block_name(kind, value, name, sizeof(name));
	pthread_rwlock_rdlock(&identity_lock);
	b = smap_get(&blocks, name);
	r = b != NULL && (b->until == 0 || b->until > now);
	pthread_rwlock_unlock(&identity_lock);
	return r;
}

int
identity_blocked_ip(const uint8_t addr[16], int64_t now)
{
	const struct block_state *b;
	int r;

	if (!atomic_load_explicit(&any_ip_blocks, memory_order_acquire))
		return 0;
	pthread_rwlock_rdlock(&identity_lock);
	b = cidr_tree_match(ip_blocks, addr, NULL);
	r = b != NULL && (b->until == 0 || b->until > now);
	pthread_rwlock_unlock(&identity_lock);
	return r;
}

/* Removes the entries of bucket i of m for which dead(value, now) holds. */
static size_t
smap_sweep_chain(struct smap *m, size_t i, int (*dead)(const void *value, int64_t now),
		 int64_t now)
{
	struct smap_entry **pp = &m->buckets[i];
	size_t n = 0;

	while (*pp != NULL) {
		struct smap_entry *e = *pp;

		if (!dead(e->value, now)) {
			pp = &e->next;
			continue;
		}
		*pp = e->next;
		free(e->key);
		free(e->value);
		free(e);
		m->count--;
		n++;
	}
	return n;
}

static size_t
smap_sweep(struct smap *m, int (*dead)(const void *value, int64_t now), int64_t now)
{
	size_t n = 0;

	for (size_t i = 0; i < m->nbuckets; i++)
		n += smap_sweep_chain(m, i, dead, now);
	return n;
}

/* The same for the one bucket key falls in. */
static void
smap_sweep_bucket(struct smap *m, const char *key, int (*dead)(const void *value, int64_t now),
		  int64_t now)
{
	smap_sweep_chain(m, util_hash64(key, strlen(key)) & (m->nbuckets - 1), dead, now);
}

/* A name never banned is as good as absent once its window is over; a ban's level
 * (what the next ban's length grows from) is forgotten a day after the ban ended. */
#define IDENTITY_BAN_LEVEL_KEEP_S 86400

static int
identity_ban_dead(const void *value, int64_t now)
{
	const struct ban_state *b = value;

	if (b->until > now)
		return 0;
	if (b->level == 0)
		return now - b->window_start >= (int64_t)b->window_s;
	return now - b->until >= IDENTITY_BAN_LEVEL_KEEP_S;
}

static int
identity_revocation_dead(const void *value, int64_t now)
{
	const int64_t *expires_at = value;

	/* past the hour identity_revoked still honours it, the token is refused for its
	 * expiry anyway */
	return *expires_at != 0 && *expires_at + 3600 < now;
}

int64_t
identity_ban_reject(const char *name, int64_t now, uint64_t window_s, uint64_t threshold,
                    uint64_t base_s, uint64_t multiplier, uint64_t max_s, int *level)
{
	struct ban_state *b;
	int64_t len = 0;

	pthread_rwlock_wrlock(&identity_lock);
	b = smap_get(&bans, name);
	if (b == NULL) {
		/* a new name: first drop what its bucket holds that is as good as absent, so
		 * a flood of names (random addresses) cleans up after itself */
		smap_sweep_bucket(&bans, name, identity_ban_dead, now);
		b = xcalloc(1, sizeof(*b));
		smap_put(&bans, name, b);
	}
	b->window_s = window_s;
	if (now - b->window_start >= (int64_t)window_s) {
		b->window_start = now;
		b->rejections = 0;
	}
	if (++b->rejections > threshold && b->until <= now) {
		uint64_t l = base_s;
		for (int i = 0; i < b->level && l < max_s; i++)
			l *= multiplier;
		if (l > max_s)
			l = max_s;
		b->level++;
		b->until = now + (int64_t)l;
		b->rejections = 0;
		len = (int64_t)l;
	}
	*level = b->level;
	identity_update_flags();
	pthread_rwlock_unlock(&identity_lock);
	if (len > 0 && identity_hooks != NULL)
		identity_hooks->ban(name, now + len, *level);
	return len;
}

int64_t
identity_banned(const char *name, int64_t now)
{
	const struct ban_state *b;
	int64_t left = 0;

	if (!atomic_load_explicit(&any_bans, memory_order_acquire))
		return 0;
	pthread_rwlock_rdlock(&identity_lock);
	b = bans.count ? smap_get(&bans, name) : NULL;
	if (b != NULL && b->until > now)
		left = b->until - now;
	pthread_rwlock_unlock(&identity_lock);
	return left;
}

void
identity_ban_set(const char *name, int64_t until, int level)
{
	struct ban_state *b = xcalloc(1, sizeof(*b));

	b->until = until;
	b->level = level;
	pthread_rwlock_wrlock(&identity_lock);
	smap_put(&bans, name, b);
	identity_update_flags();
	pthread_rwlock_unlock(&identity_lock);
	if (identity_hooks != NULL)
		identity_hooks->ban(name, until, level);
}

int
identity_ban_clear(const char *name)
{
	int r;

	pthread_rwlock_wrlock(&identity_lock);
	r = smap_del(&bans, name);
	identity_update_flags();
	pthread_rwlock_unlock(&identity_lock);
	if (identity_hooks != NULL)
		identity_hooks->ban(name, -1, 0);
	return r;
}

size_t
identity_expire(int64_t now)
{
	size_t n;

	pthread_rwlock_wrlock(&identity_lock);
	n = smap_sweep(&bans, identity_ban_dead, now);
	n += smap_sweep(&revoked, identity_revocation_dead, now);
	identity_update_flags();
	pthread_rwlock_unlock(&identity_lock);
	return n;
}

uint64_t
identity_bans_active(int64_t now)
{
	uint64_t n = 0;

	pthread_rwlock_rdlock(&identity_lock);
	for (size_t i = 0; i < bans.nbuckets; i++)
		for (const struct smap_entry *e = bans.buckets[i]; e != NULL; e = e->next)
			n += ((const struct ban_state *)e->value)->until > now;
	pthread_rwlock_unlock(&identity_lock);
	return n;
}
