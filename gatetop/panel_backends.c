#include <stdio.h>
#include <string.h>

#include "gatetop.h"

/* Backends: health, circuit, connections, latency, weight and the interval's share. */

static int
panel_backends_rows(const struct model *m, const struct ui *ui)
{
	return m->nbackends;
}

static enum panel_class
panel_backends_class(const struct model_backend *b)
{
	if (!b->healthy || strcmp(b->circuit, "open") == 0)
		return PANEL_BAD;
	if (strcmp(b->circuit, "half_open") == 0 || strcmp(b->state, "draining") == 0 ||
	    strcmp(b->state, "disabled") == 0)
		return PANEL_WARN;
	return PANEL_GOOD;
}

static enum panel_class
panel_backends_row(const struct model *m, const struct ui *ui, int i, char *buf, size_t len,
                   const struct model_hist **spark)
{
	const struct model_backend *b = &m->backends[i];
	char conns[32];

	if (b->max_conns > 0)
		snprintf(conns, sizeof(conns), "%lld/%lld", b->active, b->max_conns);
	else
		snprintf(conns, sizeof(conns), "%lld", b->active);
	snprintf(buf, len, "%-8.8s %-4s %-9.9s %9s %7.1f %3d %5.1f%% %7.1f %9lld %-8.8s %-8.8s %s",
	         b->id, b->healthy ? "up" : "DOWN", b->circuit[0] ? b->circuit : "-", conns,
	         b->avg_ms, b->weight, b->share * 100, b->rps, b->requests,
	         b->state[0] ? b->state : "-", b->dc[0] ? b->dc : "-", b->address);
	*spark = &b->h_rps;
	return panel_backends_class(b);
}

const struct panel panel_backends = {
    "backends",
    "ID       UP   CIRCUIT       CONNS  LAT_MS   W  SHARE     RPS  REQUESTS STATE    DC       "
    "ADDRESS",
    panel_backends_rows,
    panel_backends_row,
};
