#ifndef GW_HEALTH_H
#define GW_HEALTH_H

#include <event2/event.h>

/*
 * Active health checks, run on the main thread's event loop: every `interval` each
 * backend gets `GET path` on a fresh connection; 2xx/3xx within `timeout` is a pass.
 * `rise` passes in a row mark a backend healthy, `fall` failures unhealthy. Also decays
 * the passive failure counts the adaptive strategy reads.
 */
void health_start(struct event_base *base);
/* Runs a round now (after a reload or an admin change). */
void health_kick(void);

#endif
