#ifndef GW_STATS_H
#define GW_STATS_H

#include <cjson/cJSON.h>

#include "gw.h"

/*
 * The /stats object (SPEC section 6), summed from the workers' counters. Callable from
 * any thread. Returns a new cJSON tree owned by the caller.
 */
cJSON *stats_json(const struct runtime *rt);
/* Adds one backend's object (the /stats "backends" element) to arr. */
void stats_backend_json(cJSON *arr, struct backend *b);
/* Sum of a worker counter (offset of an _Atomic uint64_t in struct worker). */
uint64_t stats_worker_sum(size_t offset);

#endif
