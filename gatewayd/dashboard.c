#include "dashboard.h"
#include "metrics.h"
#include "proxy.h"

/*
 * The page needs its own inline script and style and a WebSocket back to this host;
 * everything else is refused, so a value that slips into the DOM cannot load or send
 * anything elsewhere. connect-src 'self' covers ws: and wss: to the same host and port
 * (CSP Level 3, what current browsers implement), and the page's own admin calls.
 */
#define DASHBOARD_HEADERS                                                                          \
	"Content-Security-Policy: default-src 'none'; script-src 'unsafe-inline'; "                \
	"style-src 'unsafe-inline'; connect-src 'self'; "                                          \
	"base-uri 'none'; form-action 'none'; frame-ancestors 'none'\r\n"                          \
	"X-Content-Type-Options: nosniff\r\n"                                                      \
	"Referrer-Policy: no-referrer\r\n"

void
dashboard_handle(struct exchange *x)
{
	respond_text(x, 200, "text/html; charset=utf-8", dashboard_html, dashboard_html_len,
	             DASHBOARD_HEADERS);
}
