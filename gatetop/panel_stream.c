#include <stdio.h>

#include "gatetop.h"

/* The live request stream, newest first, filtered by substring of the whole line. */

static void
panel_stream_text(const struct model_log *l, char *buf, size_t len)
{
	if (l->is_event) {
		snprintf(buf, len, "%s * %s", l->time, l->path);
		return;
	}
	snprintf(buf, len, "%s %3d %-6.6s %-32.32s %-8.8s %8.1fms %-6.6s %-18.18s %s", l->time,
	         l->status, l->method, l->path, l->backend[0] ? l->backend : "-",
	         (double)l->latency_us / 1000.0, l->cache[0] ? l->cache : "-",
	         l->identity[0] ? l->identity : "-", l->client_ip);
}

/* The i-th line that matches the filter, its text in buf; NULL past the end. */
static const struct model_log *
panel_stream_at(const struct model *m, const struct ui *ui, int i, char *buf, size_t len)
{
	for (int j = 0; j < m->nlog; j++) {
		const struct model_log *l = model_log_at(m, j);

		panel_stream_text(l, buf, len);
		if (panel_match(ui, buf) && i-- == 0)
			return l;
	}
	return NULL;
}

static int
panel_stream_rows(const struct model *m, const struct ui *ui)
{
	char buf[512];
	int n = 0;

	if (!ui->filter[0])
		return m->nlog;
	for (int j = 0; j < m->nlog; j++) {
		panel_stream_text(model_log_at(m, j), buf, sizeof(buf));
		n += panel_match(ui, buf);
	}
	return n;
}

static enum panel_class
panel_stream_row(const struct model *m, const struct ui *ui, int i, char *buf, size_t len,
                 const struct model_hist **spark)
{
	const struct model_log *l = panel_stream_at(m, ui, i, buf, len);

	if (l == NULL || l->is_event)
		return PANEL_DIM;
	if (l->status >= 500)
		return PANEL_BAD;
	return l->status >= 400 ? PANEL_WARN : PANEL_NORMAL;
}

const struct panel panel_stream = {
    "requests",
    "TIME     STS METHOD PATH                             BACKEND     LATENCY CACHE  IDENTITY"
    "           CLIENT",
    panel_stream_rows,
    panel_stream_row,
};
