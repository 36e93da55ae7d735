#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gw.h"
#include "util.h"
#include "xmalloc.h"

struct backend *
backend_new(const struct config_backend *cb, const struct config *cfg)
{
	struct backend *b;

	/* aligned: the per-worker slices must not share cache lines */
	if (posix_memalign((void **)&b, GW_CACHELINE, sizeof(*b)) != 0)
		abort();
	memset(b, 0, sizeof(*b));
	util_strlcpy(b->id, cb->id, sizeof(b->id));
	util_strlcpy(b->dc, cb->dc, sizeof(b->dc));
	if (strchr(cb->host, ':') != NULL)
		snprintf(b->addrtext, sizeof(b->addrtext), "[%s]:%u", cb->host, cb->port);
	else
		snprintf(b->addrtext, sizeof(b->addrtext), "%s:%u", cb->host, cb->port);
	memcpy(&b->addr, &cb->addr, sizeof(b->addr));
	b->addrlen = cb->addrlen;
	b->id_hash = util_hash64(b->id, strlen(b->id));
	atomic_init(&b->weight, cb->weight);
	atomic_init(&b->max_conns, cb->max_conns);
	atomic_init(&b->refs, 1);
	atomic_init(&b->healthy, 1);
	atomic_init(&b->admin, BACKEND_ENABLED);
	circuit_init(&b->circuit, (uint32_t)cfg->circuit.failures, cfg->circuit.open_ms);
	return b;
}

void
backend_ref(struct backend *b)
{
	atomic_fetch_add_explicit(&b->refs, 1, memory_order_relaxed);
}

void
backend_unref(struct backend *b)
{
	if (atomic_fetch_sub_explicit(&b->refs, 1, memory_order_acq_rel) == 1)
		free(b);
}

int
backend_effective_weight(struct backend *b, uint64_t now_ms)
{
	int w = atomic_load_explicit(&b->weight, memory_order_relaxed);
	uint64_t since = atomic_load_explicit(&b->up_since_ms, memory_order_relaxed);

	if (since == 0 || now_ms >= since + GW_SLOWSTART_MS)
		return w;
	/* Slow start: from 10% to 100% of the weight, so a backend that just came back
	 * is not flooded while its caches are cold. */
	uint64_t pct = 10 + 90 * (now_ms - since) / GW_SLOWSTART_MS;
	int ew = (int)((uint64_t)w * pct / 100);
	return ew < 1 ? 1 : ew;
}

uint64_t
backend_sum(const struct backend *b, size_t field_offset)
{
	uint64_t sum = 0;

	for (int i = 0; i < GW_MAX_WORKERS; i++) {
		const _Atomic uint64_t *p =
			(const _Atomic uint64_t *)(const void *)((const char *)&b->pw[i] +
								 field_offset);
		sum += atomic_load_explicit(p, memory_order_relaxed);
	}
	return sum;
}

void
backend_set_healthy(struct backend *b, int healthy, uint64_t now_ms)
{
	int was = atomic_exchange(&b->healthy, healthy);

	if (healthy && !was) {
		atomic_store(&b->up_since_ms, now_ms ? now_ms : 1);
		/* the checks saw it come back: no need to wait out the circuit's open time */
		circuit_reset(&b->circuit);
	}
}

const char *
backend_admin_name(int admin)
{
	switch (admin) {
	case BACKEND_ENABLED:
		return "enabled";
	case BACKEND_DRAINING:
		return "draining";
	default:
		return "disabled";
	}
}
