#include <stdio.h>
#include <string.h>

#include "accesslog.h"
#include "identify.h"
#include "proxy.h"
#include "util.h"
#include "xmalloc.h"

/*
 * Responses the gateway makes itself: SPEC section 4 error JSON and the built-in
 * endpoints' answers. The head (and the body when it fits) is written into the
 * exchange's `out` buffer and sent with the client's send queue.
 */

static int
respond_head(struct exchange *x, int status, size_t body_len, const char *ctype,
	     const char *extra)
{
	char *o = x->out.data;
	char idh[512], framing[96] = "";
	int n;

	if (atomic_load_explicit(&gw.draining, memory_order_relaxed))
		x->close_client = 1;
	/* 204 and 304 carry no body and no body headers (RFC 9110 8.6, 15.3.5) */
	if (status != 204 && status != 304)
		snprintf(framing, sizeof(framing), "Content-Type: %s\r\nContent-Length: %zu\r\n",
			 ctype, body_len);
	n = snprintf(o, x->out.cap,
		     "HTTP/1.1 %d %s\r\n"
		     "%s"
		     "Cache-Control: no-store\r\n"
		     "%s%.*s%s"
		     "%s"
		     "%.*s"
		     "%s"
		     "\r\n",
		     status, http_status_reason(status), framing,
		     x->request_id_len ? "X-Request-Id: " : "", (int)x->request_id_len,
		     x->request_id, x->request_id_len ? "\r\n" : "", extra ? extra : "",
		     (int)identify_response_headers(x, idh, sizeof(idh)), idh, x->close_client ? "Connection: close\r\n"
		     : x->req.version_minor == 0 && x->req.keep_alive ? "Connection: keep-alive\r\n"
								       : "");
	if (n < 0 || (size_t)n >= x->out.cap)
		return -1;
	return n;
}

void
respond_json(struct exchange *x, int status, const char *json, size_t len, const char *extra)
{
	respond_text(x, status, "application/json", json, len, extra);
}

void
respond_text(struct exchange *x, int status, const char *ctype, const char *json, size_t len,
	     const char *extra)
{
	int hl;

	/* An unread request body is skipped by client_exchange_done when it is all in
	 * the buffer; otherwise the connection closes after this response. */
	if (status == 204 || status == 304)
		len = 0;
	/* HEAD: the length the GET would have, and no body */
	hl = respond_head(x, status, len, ctype, extra);
	if (hl < 0) {
		x->close_client = 1;
		hl = snprintf(x->out.data, x->out.cap,
			      "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n"
			      "Connection: close\r\n\r\n");
		len = 0;
	}
	if (x->req.method == HTTP_M_HEAD)
		len = 0;
	sendq_reset(&x->cliq);
	sendq_add(&x->cliq, x->out.data, (size_t)hl);
	if (len > 0) {
		if ((size_t)hl + len <= x->out.cap) {
			memcpy(x->out.data + hl, json, len);
			sendq_add(&x->cliq, x->out.data + hl, len);
		} else {
			free(x->heap);
			x->heap = xstrndup(json, len);
			sendq_add(&x->cliq, x->heap, len);
		}
	}
	x->status = status;
	x->phase = X_LOCAL;
	if (status >= 500)
		worker_counter_add(&x->w->st_errors, 1);
	metrics_request(x->w, status, NULL, x->start_us);
	accesslog_request(x, status, NULL, len, x->error_code);
	if (x->c->writable) {
		int r = client_flush(x->c);
		if (r < 0) {
			client_close(x->c);
			return;
		}
		if (r == 1)
			client_exchange_done(x);
	}
}

/* JSON string escaping for the few free-text fields we put in error bodies. */
static size_t
respond_escape(char *dst, size_t cap, const char *s)
{
	size_t o = 0;

	for (; *s != '\0' && o + 7 < cap; s++) {
		unsigned char ch = (unsigned char)*s;
		if (ch == '"' || ch == '\\') {
			dst[o++] = '\\';
			dst[o++] = (char)ch;
		} else if (ch < 0x20) {
			o += (size_t)snprintf(dst + o, cap - o, "\\u%04x", ch);
		} else {
			dst[o++] = (char)ch;
		}
	}
	dst[o] = '\0';
	return o;
}

void
respond_error(struct exchange *x, int status, const char *code, const char *message,
	      const char *extra_headers, const char *extra_json)
{
	char body[1024], msg[512];
	int n;

	x->error_code = code;
	respond_escape(msg, sizeof(msg), message);
	n = snprintf(body, sizeof(body), "{\"error\":\"%s\",\"message\":\"%s\"%s%s}", code, msg,
		     extra_json ? "," : "", extra_json ? extra_json : "");
	if (n < 0 || (size_t)n >= sizeof(body))
		n = snprintf(body, sizeof(body), "{\"error\":\"%s\"}", code);
	respond_json(x, status, body, (size_t)n, extra_headers);
}

void
respond_rate_limited(struct exchange *x, const char *code, const char *tier, uint64_t limit,
		     uint64_t window_s, uint64_t retry_after_ms)
{
	char hdr[64], extra[256];
	uint64_t ra = (retry_after_ms + 999) / 1000;

	if (ra < 1)
		ra = 1;
	snprintf(hdr, sizeof(hdr), "Retry-After: %llu\r\n", (unsigned long long)ra);
	snprintf(extra, sizeof(extra),
		 "\"retry_after\":%llu,\"tier\":\"%s\",\"limit\":%llu,\"window\":%llu",
		 (unsigned long long)ra, tier, (unsigned long long)limit,
		 (unsigned long long)window_s);
	respond_error(x, 429, code,
		      strcmp(code, "temporarily_banned") == 0
			      ? "Too many rejected requests: temporarily banned."
			      : "Rate limit exceeded.",
		      hdr, extra);
}
