#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "gw.h"
#include "health.h"
#include "log.h"
#include "util.h"
#include "xmalloc.h"

struct health_probe {
	struct backend *b; /* referenced */
	int fd;
	struct event *ev;
	struct event *timer;
	char req[600];
	size_t reqlen, sent;
	char resp[64];
	size_t got;
	int rise, fall;
};

static struct event_base *health_base;
static struct event *health_timer;

static void
health_verdict(struct health_probe *p, int ok)
{
	struct backend *b = p->b;
	uint64_t now = util_now_ms();

	if (ok) {
		b->hc_fail_streak = 0;
		if (++b->hc_ok_streak >= p->rise && !atomic_load(&b->healthy)) {
			log_info("backend %s (%s) is up", b->id, b->addrtext);
			backend_set_healthy(b, 1, now);
		}
	} else {
		b->hc_ok_streak = 0;
		if (++b->hc_fail_streak >= p->fall && atomic_load(&b->healthy)) {
			log_warnx("backend %s (%s) is down", b->id, b->addrtext);
			backend_set_healthy(b, 0, now);
		}
	}
	event_free(p->ev);
	event_free(p->timer);
	close(p->fd);
	backend_unref(b);
	free(p);
}

static int
health_status_ok(const char *r, size_t n)
{
	/* "HTTP/1.x 2xx" or 3xx */
	return n >= 12 && memcmp(r, "HTTP/1.", 7) == 0 && r[8] == ' ' &&
	       (r[9] == '2' || r[9] == '3');
}

static void
health_io(evutil_socket_t fd, short what, void *arg)
{
	struct health_probe *p = arg;

	if (what & EV_TIMEOUT) {
		health_verdict(p, 0);
		return;
	}
	if (p->sent < p->reqlen) {
		ssize_t n = write(fd, p->req + p->sent, p->reqlen - p->sent);
		if (n < 0 && errno != EAGAIN) {
			health_verdict(p, 0);
			return;
		}
		if (n > 0)
			p->sent += (size_t)n;
	}
	if (what & EV_READ) {
		ssize_t n = read(fd, p->resp + p->got, sizeof(p->resp) - p->got);
		if (n < 0 && errno == EAGAIN)
			return;
		if (n > 0)
			p->got += (size_t)n;
		if (n <= 0 || p->got >= 12)
			health_verdict(p, health_status_ok(p->resp, p->got));
	}
}

static void
health_timeout(evutil_socket_t fd, short what, void *arg)
{
	health_verdict(arg, 0);
}

static void
health_probe(struct backend *b, const struct config *cfg)
{
	struct health_probe *p;
	struct timeval tv = {(time_t)(cfg->health.timeout_ms / 1000),
			     (suseconds_t)(cfg->health.timeout_ms % 1000) * 1000};
	int fd = socket(b->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

	if (fd == -1)
		return;
	p = xcalloc(1, sizeof(*p));
	p->b = b;
	backend_ref(b);
	p->fd = fd;
	p->rise = cfg->health.rise;
	p->fall = cfg->health.fall;
	p->reqlen = (size_t)snprintf(p->req, sizeof(p->req),
				     "GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: gatewayd-health\r\n"
				     "Connection: close\r\n\r\n",
				     cfg->health.path, b->addrtext);
	p->ev = event_new(health_base, fd, EV_READ | EV_WRITE | EV_PERSIST, health_io, p);
	p->timer = evtimer_new(health_base, health_timeout, p);
	if (connect(fd, (struct sockaddr *)&b->addr, b->addrlen) == -1 && errno != EINPROGRESS) {
		event_add(p->timer, &(struct timeval){0, 0});
		return;
	}
	event_add(p->ev, NULL);
	event_add(p->timer, &tv);
}

static void
health_round(evutil_socket_t fd, short what, void *arg)
{
	struct runtime *rt = runtime_get();
	const struct config *cfg = rt->cfg;
	struct timeval tv = {(time_t)(cfg->health.interval_ms / 1000),
			     (suseconds_t)(cfg->health.interval_ms % 1000) * 1000};

	for (int i = 0; i < rt->nbackends; i++) {
		struct backend *b = rt->backends[i];
		uint32_t f = atomic_load(&b->recent_failures);

		/* passive failures fade: halve them every round */
		atomic_store(&b->recent_failures, f / 2);
		if (atomic_load(&b->admin) != BACKEND_DISABLED)
			health_probe(b, cfg);
	}
	evtimer_add(health_timer, &tv);
	runtime_unref(rt);
}

void
health_start(struct event_base *base)
{
	health_base = base;
	health_timer = evtimer_new(base, health_round, NULL);
	event_active(health_timer, EV_TIMEOUT, 0);
}

void
health_kick(void)
{
	if (health_timer != NULL) {
		evtimer_del(health_timer);
		event_active(health_timer, EV_TIMEOUT, 0);
	}
}
