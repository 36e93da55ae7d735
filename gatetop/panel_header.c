#include <stdio.h>

#include "gatetop.h"

/*
 * The header: who we watch and the interval's headline numbers. Line 2 is left to the
 * sparklines, which screen.c draws (the text snapshot has none: it holds one sample).
 */

static void
panel_header_state(const struct model *m, double now, char *buf, size_t len)
{
	if (!m->have_stats)
		snprintf(buf, len, "waiting for stats");
	else if (!model_connected(m, now))
		snprintf(buf, len, "disconnected (%.0fs)", now - m->last_stats);
	else
		snprintf(buf, len, "connected");
}

void
panel_header_line(const struct model *m, const struct ui *ui, double now, int n, char *buf,
                  size_t len)
{
	long long up = (long long)m->uptime;
	char state[48];

	if (len > 0)
		buf[0] = '\0';
	if (n == 0) {
		panel_header_state(m, now, state, sizeof(state));
		snprintf(buf, len,
		         "gatewayd  strategy %s  up %lld:%02lld:%02lld  total %lld  %s%s%s%s",
		         m->strategy[0] ? m->strategy : "-", up / 3600, up / 60 % 60, up % 60,
		         m->total_requests, state, ui->paused ? "  PAUSED" : "",
		         ui->filter[0] ? "  filter: " : "", ui->filter);
	} else if (n == 1) {
		snprintf(
		    buf, len,
		    "rps %.1f  p50 %.1fms  p99 %.1fms  err %.2f%%  cache %.1f%%  queue %lld/%lld"
		    "  limited %lld  banned %lld",
		    m->rps, m->p50, m->p99, m->error_rate * 100, m->cache_hit_rate * 100,
		    m->queue_depth, m->queue_max, m->rl_rejected, m->rl_banned);
	}
}
