#include <stddef.h>

#include "cache.h"
#include "stats.h"
#include "util.h"
#include "worker.h"

uint64_t
stats_worker_sum(size_t offset)
{
	uint64_t sum = 0;

	for (int i = 0; i < gw.nworkers; i++) {
		const _Atomic uint64_t *p =
			(const _Atomic uint64_t *)(const void *)((const char *)gw.workers[i] + offset);
		sum += atomic_load_explicit(p, memory_order_relaxed);
	}
	return sum;
}

void
stats_backend_json(cJSON *arr, struct backend *b)
{
	cJSON *o = cJSON_CreateObject();
	uint64_t resp = backend_sum(b, offsetof(struct backend_pw, responses));
	uint64_t lat = backend_sum(b, offsetof(struct backend_pw, latency_us_sum));
	uint64_t active_conns = atomic_load(&b->active);

	cJSON_AddStringToObject(o, "id", b->id);
	cJSON_AddStringToObject(o, "address", b->addrtext);
	cJSON_AddStringToObject(o, "dc", b->dc);
	cJSON_AddBoolToObject(o, "healthy", atomic_load(&b->healthy));
	cJSON_AddStringToObject(o, "circuit", circuit_state_name(circuit_get_state(&b->circuit)));
	cJSON_AddNumberToObject(o, "weight", atomic_load(&b->weight));
	cJSON_AddStringToObject(o, "state", backend_admin_name(atomic_load(&b->admin)));
	cJSON_AddNumberToObject(o, "active_connections", (double)active_conns);
	cJSON_AddNumberToObject(o, "max_conns", atomic_load(&b->max_conns));
	cJSON_AddNumberToObject(o, "requests",
				(double)backend_sum(b, offsetof(struct backend_pw, requests)));
	cJSON_AddNumberToObject(o, "failures",
				(double)backend_sum(b, offsetof(struct backend_pw, failures)));
	cJSON_AddNumberToObject(o, "avg_response_ms",
				resp ? (double)(lat / resp) / 1000.0 : 0.0);
	cJSON_AddItemToArray(arr, o);
}

cJSON *
stats_json(const struct runtime *rt)
{
	cJSON *root = cJSON_CreateObject(), *arr, *o;
	uint64_t now = util_now_ms();

	cJSON_AddStringToObject(root, "strategy", balance_strategy_name(atomic_load(&gw.strategy)));
	cJSON_AddNumberToObject(root, "uptime_seconds", (double)((now - gw.start_ms) / 1000));
	cJSON_AddNumberToObject(root, "total_requests",
				(double)stats_worker_sum(offsetof(struct worker, st_requests)));
	arr = cJSON_AddArrayToObject(root, "backends");
	for (int i = 0; i < rt->nbackends; i++)
		stats_backend_json(arr, rt->backends[i]);
	cJSON_AddItemToObject(root, "cache", cache_stats_json_always());
	o = cJSON_AddObjectToObject(root, "queue");
	uint64_t depth = 0;
	for (int i = 0; i < gw.nworkers; i++)
		depth += atomic_load_explicit(&gw.workers[i]->st_queue_depth, memory_order_relaxed);
	cJSON_AddNumberToObject(o, "depth", (double)depth);
	cJSON_AddNumberToObject(o, "max", rt->cfg->queue.max);
	cJSON_AddNumberToObject(o, "rejected",
				(double)stats_worker_sum(offsetof(struct worker, st_queue_rejected)));
	o = cJSON_AddObjectToObject(root, "rate_limit");
	/* decisions of the per-IP and the tier limiters together */
	cJSON_AddNumberToObject(o, "allowed",
				(double)(stats_worker_sum(offsetof(struct worker, st_ip_allowed)) +
					 stats_worker_sum(offsetof(struct worker, st_tier_allowed))));
	cJSON_AddNumberToObject(o, "rejected",
				(double)(stats_worker_sum(offsetof(struct worker, st_ip_rejected)) +
					 stats_worker_sum(offsetof(struct worker, st_tier_rejected))));
	cJSON_AddNumberToObject(o, "banned",
				(double)stats_worker_sum(offsetof(struct worker, st_banned)));
	return root;
}
