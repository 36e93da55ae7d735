#include <event2/event.h>

#include "proxy.h"
#include "util.h"

/*
 * The request queue: when every candidate backend is at max_conns, requests wait here
 * instead of failing. One queue per worker (a request never leaves its worker), four
 * priority classes served highest first, FIFO inside a class, a deadline per request.
 * `queue max` bounds the requests waiting in all the workers together (one atomic
 * counter, touched only by requests that wait).
 *
 * A queued request gets a slot when one frees up on this worker (proxy.c activates
 * queue_ev) or, for slots freed by other workers, on a 5 ms timer that runs only while
 * something is queued.
 */

#define QUEUE_CLASSES 4
#define QUEUE_POLL_MS 5

static void queue_event(evutil_socket_t fd, short what, void *arg);

static void
queue_arm(struct worker *w)
{
	struct timeval tv = {0, QUEUE_POLL_MS * 1000};

	if (w->queue_ev == NULL)
		w->queue_ev = event_new(w->base, -1, 0, queue_event, w);
	if (!event_pending(w->queue_ev, EV_TIMEOUT, NULL))
		event_add(w->queue_ev, &tv);
}

int
queue_push(struct exchange *x)
{
	struct worker *w = x->w;
	uint8_t prio = x->qprio < QUEUE_CLASSES ? x->qprio : QUEUE_CLASSES - 1;

	int max = x->rt->cfg->queue.max;

	if (atomic_fetch_add(&gw.queued, 1) >= max) {
		atomic_fetch_sub(&gw.queued, 1);
		return -1;
	}
	x->phase = X_QUEUED;
	x->qprio = prio;
	x->qdeadline_ms = w->now_ms + x->rt->cfg->queue.timeout_ms;
	x->qnext = NULL;
	if (w->queue_tail[prio] != NULL)
		w->queue_tail[prio]->qnext = x;
	else
		w->queue_head[prio] = x;
	w->queue_tail[prio] = x;
	w->queue_len++;
	atomic_store_explicit(&w->st_queue_depth, w->queue_len, memory_order_relaxed);
	queue_arm(w);
	return 0;
}

void
queue_remove(struct exchange *x)
{
	struct worker *w = x->w;
	uint8_t p = x->qprio;
	struct exchange **pp = &w->queue_head[p], *prev = NULL;

	while (*pp != NULL && *pp != x) {
		prev = *pp;
		pp = &(*pp)->qnext;
	}
	if (*pp == NULL)
		return;
	*pp = x->qnext;
	if (w->queue_tail[p] == x)
		w->queue_tail[p] = prev;
	x->qnext = NULL;
	w->queue_len--;
	atomic_fetch_sub(&gw.queued, 1);
	atomic_store_explicit(&w->st_queue_depth, w->queue_len, memory_order_relaxed);
}

void
queue_service(struct worker *w)
{
	for (int p = QUEUE_CLASSES - 1; p >= 0; p--) {
		struct exchange *x = w->queue_head[p];

		while (x != NULL) {
			struct exchange *next = x->qnext;
			int r;

			if (x->qdeadline_ms <= w->now_ms) {
				queue_remove(x);
				respond_error(x, 503, "queue_timeout",
					      "Waited too long for a free backend.",
					      "Retry-After: 1\r\n", NULL);
			} else if ((r = proxy_pick(x)) != 0) {
				queue_remove(x);
				if (r > 0)
					proxy_go(x);
				else
					respond_error(x, 503, "no_healthy_backend",
						      "No healthy backend is available.",
						      "Retry-After: 5\r\n", NULL);
			} else {
				/* FIFO: later ones of this class cannot get a slot either */
				break;
			}
			x = next;
		}
	}
	if (w->queue_len > 0)
		queue_arm(w);
}

static void
queue_event(evutil_socket_t fd, short what, void *arg)
{
	struct worker *w = arg;

	w->now_ms = util_now_ms();
	queue_service(w);
}
