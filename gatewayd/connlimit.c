#include <pthread.h>
#include <stdalign.h>
#include <stdlib.h>
#include <string.h>

#include "connlimit.h"
#include "util.h"
#include "xmalloc.h"

/*
 * Linear probing inside one shard, deletion by backward shift (no tombstones, so a
 * table that saw a million addresses probes like one that saw a few). A shard is never
 * filled past 7/8, which keeps probes short and guarantees an empty slot ends every
 * search.
 */

#define CONNLIMIT_SHARDS 64
#define CONNLIMIT_GLOBAL_SLOTS 65536
#define CONNLIMIT_CACHE_LINE 64

struct connlimit_slot {
	uint8_t addr[16];
	uint32_t n; /* 0 = empty */
};

struct connlimit_shard {
	alignas(CONNLIMIT_CACHE_LINE) pthread_mutex_t lock;
	size_t used;
	struct connlimit_slot *slots;
};

struct connlimit {
	struct connlimit_shard shards[CONNLIMIT_SHARDS];
	size_t shard_slots; /* power of two */
	struct connlimit_slot *mem;
};

struct connlimit *
connlimit_new(size_t slots)
{
	struct connlimit *cl = xcalloc(1, sizeof(*cl));
	size_t per = 1;

	while (per * CONNLIMIT_SHARDS < slots)
		per <<= 1;
	cl->shard_slots = per;
	cl->mem = xcalloc(per * CONNLIMIT_SHARDS, sizeof(*cl->mem));
	for (int i = 0; i < CONNLIMIT_SHARDS; i++) {
		pthread_mutex_init(&cl->shards[i].lock, NULL);
		cl->shards[i].slots = cl->mem + (size_t)i * per;
	}
	return cl;
}

void
connlimit_free(struct connlimit *cl)
{
	if (cl == NULL)
		return;
	for (int i = 0; i < CONNLIMIT_SHARDS; i++)
		pthread_mutex_destroy(&cl->shards[i].lock);
	free(cl->mem);
	free(cl);
}

static uint64_t
connlimit_hash(const uint8_t addr[16])
{
	return util_hash64(addr, 16);
}

static struct connlimit_shard *
connlimit_shard(struct connlimit *cl, uint64_t h)
{
	return &cl->shards[(h >> 58) & (CONNLIMIT_SHARDS - 1)];
}

/* The slot of addr, or the empty slot where it would go. Under the shard's lock. */
static size_t
connlimit_find(const struct connlimit *cl, const struct connlimit_shard *s, uint64_t h,
               const uint8_t addr[16])
{
	size_t mask = cl->shard_slots - 1, i = h & mask;

	while (s->slots[i].n != 0 && memcmp(s->slots[i].addr, addr, 16) != 0)
		i = (i + 1) & mask;
	return i;
}

/* Locks addr's shard and finds its slot (or the empty slot where it would go). */
static struct connlimit_shard *
connlimit_lock(struct connlimit *cl, const uint8_t addr[16], size_t *slot)
{
	uint64_t h = connlimit_hash(addr);
	struct connlimit_shard *s = connlimit_shard(cl, h);

	pthread_mutex_lock(&s->lock);
	*slot = connlimit_find(cl, s, h, addr);
	return s;
}

enum connlimit_verdict
connlimit_acquire(struct connlimit *cl, const uint8_t addr[16], uint32_t max)
{
	enum connlimit_verdict v = CONNLIMIT_COUNTED;
	size_t i;
	struct connlimit_shard *s = connlimit_lock(cl, addr, &i);
	struct connlimit_slot *e = &s->slots[i];

	if (e->n == 0) {
		if ((s->used + 1) * 8 > cl->shard_slots * 7) {
			v = CONNLIMIT_UNTRACKED;
		} else {
			memcpy(e->addr, addr, 16);
			e->n = 1;
			s->used++;
		}
	} else if (e->n >= max) {
		v = CONNLIMIT_OVER;
	} else {
		e->n++;
	}
	pthread_mutex_unlock(&s->lock);
	return v;
}

/* Empties slot i and moves later entries of the cluster back into the hole. */
static void
connlimit_delete(const struct connlimit *cl, struct connlimit_shard *s, size_t i)
{
	size_t mask = cl->shard_slots - 1, j = i;

	for (;;) {
		j = (j + 1) & mask;
		if (s->slots[j].n == 0)
			break;
		size_t home = connlimit_hash(s->slots[j].addr) & mask;
		/* j's entry may move to the hole i unless its home lies in (i, j] */
		if (((j - home) & mask) >= ((j - i) & mask)) {
			s->slots[i] = s->slots[j];
			i = j;
		}
	}
	s->slots[i].n = 0;
	s->used--;
}

void
connlimit_release(struct connlimit *cl, const uint8_t addr[16])
{
	size_t i;
	struct connlimit_shard *s = connlimit_lock(cl, addr, &i);

	if (s->slots[i].n > 1)
		s->slots[i].n--;
	else if (s->slots[i].n == 1)
		connlimit_delete(cl, s, i);
	pthread_mutex_unlock(&s->lock);
}

uint32_t
connlimit_get(struct connlimit *cl, const uint8_t addr[16])
{
	size_t i;
	struct connlimit_shard *s = connlimit_lock(cl, addr, &i);
	uint32_t n = s->slots[i].n;

	pthread_mutex_unlock(&s->lock);
	return n;
}

size_t
connlimit_tracked(struct connlimit *cl)
{
	size_t n = 0;

	for (int i = 0; i < CONNLIMIT_SHARDS; i++) {
		pthread_mutex_lock(&cl->shards[i].lock);
		n += cl->shards[i].used;
		pthread_mutex_unlock(&cl->shards[i].lock);
	}
	return n;
}

static struct connlimit *connlimit_the;
static pthread_once_t connlimit_once = PTHREAD_ONCE_INIT;

static void
connlimit_make_global(void)
{
	connlimit_the = connlimit_new(CONNLIMIT_GLOBAL_SLOTS);
}

struct connlimit *
connlimit_global(void)
{
	pthread_once(&connlimit_once, connlimit_make_global);
	return connlimit_the;
}
