#include <stdio.h>

#include "gatetop.h"

/* Datacenters: health, backends, traffic (grouped from the backends without geo routing). */

static int
panel_dc_rows(const struct model *m, const struct ui *ui)
{
	return m->ndcs;
}

static enum panel_class
panel_dc_row(const struct model *m, const struct ui *ui, int i, char *buf, size_t len,
             const struct model_hist **spark)
{
	const struct model_dc *d = &m->dcs[i];

	snprintf(buf, len, "%-9.9s %-4s %2d %7.1f %8lld", d->name, d->healthy ? "up" : "DOWN",
	         d->backends, d->rps, d->requests);
	return d->healthy ? PANEL_GOOD : PANEL_BAD;
}

const struct panel panel_dc = {
    "datacenters",
    "NAME      UP   BE     RPS REQUESTS",
    panel_dc_rows,
    panel_dc_row,
};
