#include "dashboard.h"
#include "metrics.h"
#include "proxy.h"

/*
 * The page needs its own inline script and style and a WebSocket back to this host;
 * everything else is refused, so a value that slips into the DOM cannot load or send
 * anything elsewhere. 'self' in connect-src covers ws: and wss: to the same host in
 * current browsers; both schemes are named for older ones.
 */
#define DASHBOARD_HEADERS                                                                          \
	"Content-Security-Policy: default-src 'none'; script-src 'unsafe-inline'; "                \
	"style-src 'unsafe-inline'; img-src 'self' data:; connect-src 'self' ws: wss:; "           \
	"base-uri 'none'; form-action 'none'; frame-ancestors 'none'\r\n"                          \
	"X-Content-Type-Options: nosniff\r\n"                                                      \
	"Referrer-Policy: no-referrer\r\n"

void
dashboard_handle(struct exchange *x)
{
	respond_text(x, 200, "text/html; charset=utf-8", dashboard_html, dashboard_html_len,
	             DASHBOARD_HEADERS);
}
