#ifndef GW_DASHBOARD_H
#define GW_DASHBOARD_H

/*
 * GET /dashboard: one self-contained HTML page (inline CSS, JS and SVG, nothing fetched
 * from elsewhere: the gateway may be offline) that shows the live stream of /ws.
 * The page's source is gatewayd/dashboard.html, embedded at build time by
 * scripts/embed.sh into a generated C file.
 */

#include <stddef.h>

struct exchange;

/* The embedded page (generated): dashboard_html_len bytes, then a NUL. */
extern const char dashboard_html[];
extern const size_t dashboard_html_len;

void dashboard_handle(struct exchange *x);

#endif
