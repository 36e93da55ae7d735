#ifndef GW_HTTP_H
#define GW_HTTP_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/*
 * Strict, zero-copy HTTP/1.x message head parser (RFC 9112), one parser for requests
 * and responses. It records offsets into the caller's buffer and never copies.
 * Incremental: call it again with the same msg and a longer buffer after HTTP_AGAIN;
 * it resumes the search for the blank line where it stopped (no quadratic rescans)
 * and parses the head once it is complete.
 *
 * Strictness (each rule a unit test): request line `METHOD SP TARGET SP HTTP/1.x CRLF`
 * with single spaces and token methods; header names are tokens with no space before
 * the colon; no obs-fold (a line starting with SP/HTAB); no bare CR, no NUL or other
 * CTLs but HTAB in values; bare LF line endings rejected; Content-Length must be
 * digits only, duplicates with differing values rejected (identical ones collapsed);
 * Transfer-Encoding together with Content-Length rejected; Transfer-Encoding other
 * than exactly "chunked" rejected; Transfer-Encoding in HTTP/1.0 rejected; HTTP/1.1
 * requests need exactly one Host; caps on head bytes, header count and target length.
 */

#define HTTP_MAX_HEADERS 256

enum http_method {
	HTTP_M_OTHER,
	HTTP_M_GET,
	HTTP_M_HEAD,
	HTTP_M_POST,
	HTTP_M_PUT,
	HTTP_M_DELETE,
	HTTP_M_OPTIONS,
	HTTP_M_PATCH,
	HTTP_M_TRACE,
	HTTP_M_CONNECT,
};

/* Headers the proxy acts on, recognised once by the parser (case-insensitive). */
enum http_hdr_id {
	HTTP_H_OTHER,
	HTTP_H_HOST,
	HTTP_H_CONNECTION,
	HTTP_H_KEEP_ALIVE,
	HTTP_H_PROXY_CONNECTION,
	HTTP_H_TE,
	HTTP_H_TRAILER,
	HTTP_H_TRANSFER_ENCODING,
	HTTP_H_UPGRADE,
	HTTP_H_CONTENT_LENGTH,
	HTTP_H_EXPECT,
	HTTP_H_X_FORWARDED_FOR,
	HTTP_H_X_FORWARDED_PROTO,
	HTTP_H_X_REQUEST_ID,
	HTTP_H_X_USER_ID,
	HTTP_H_X_USER_TIER,
	HTTP_H_AUTHORIZATION,
	HTTP_H_X_API_KEY,
	HTTP_H_CACHE_CONTROL,
	HTTP_H_PROXY_AUTHORIZATION,
	HTTP_H_PROXY_AUTHENTICATE,
	HTTP_H_COUNT
};

struct http_header {
	uint32_t line_off;  /* start of the header line */
	uint32_t line_len;  /* whole line including its CRLF */
	uint32_t name_off;
	uint16_t name_len;
	uint8_t id;         /* enum http_hdr_id */
	uint32_t value_off; /* value with leading/trailing blanks trimmed */
	uint32_t value_len;
};

enum http_body {
	HTTP_BODY_NONE,    /* no body (or HEAD/1xx/204/304 response) */
	HTTP_BODY_LENGTH,  /* content_length bytes */
	HTTP_BODY_CHUNKED, /* chunked transfer coding */
	HTTP_BODY_EOF,     /* response delimited by connection close */
};

/* Parse results. Negative values are errors with the status the gateway answers. */
enum http_result {
	HTTP_OK = 0,                   /* head complete */
	HTTP_AGAIN = 1,                /* need more bytes */
	HTTP_E_BAD = -400,             /* malformed or smuggling attempt */
	HTTP_E_URI_TOO_LONG = -414,
	HTTP_E_HEADERS_TOO_LARGE = -431,
	HTTP_E_NOT_IMPLEMENTED = -501, /* unknown transfer coding */
	HTTP_E_VERSION = -505,         /* not HTTP/1.0 or HTTP/1.1 */
};

struct http_limits {
	uint32_t max_head;    /* bytes of the whole head, request line included */
	uint32_t max_headers; /* header count, <= HTTP_MAX_HEADERS */
	uint32_t max_uri;     /* request-target bytes */
};

struct http_msg {
	/* request line */
	uint8_t method; /* enum http_method */
	uint32_t method_off;
	uint16_t method_len;
	uint32_t target_off;
	uint32_t target_len;
	uint32_t path_len; /* target bytes before '?' (or all) */
	/* status line */
	uint16_t status;
	uint32_t reason_off;
	uint32_t reason_len;

	uint8_t version_minor;   /* 0 or 1 */
	uint32_t first_line_len; /* request/status line including CRLF */
	uint32_t head_len;       /* whole head including the blank line */

	struct http_header hdr[HTTP_MAX_HEADERS];
	uint16_t nhdr;
	int16_t first[HTTP_H_COUNT]; /* index of the first header of each id, -1 none */

	/* framing and connection semantics, derived from the head */
	uint8_t body;            /* enum http_body */
	uint64_t content_length; /* when body == HTTP_BODY_LENGTH */
	uint8_t keep_alive;      /* the sender allows another message on this connection */
	uint8_t upgrade;         /* Connection: upgrade with an Upgrade header */
	uint8_t expect_continue; /* Expect: 100-continue */

	uint32_t scan_off; /* internal: where the blank-line search resumes */
};

void http_msg_reset(struct http_msg *m);
int http_parse_request(struct http_msg *m, const char *buf, size_t len,
		       const struct http_limits *lim);
/*
 * req_method: the method of the request this responds to (HEAD and CONNECT change the
 * framing); 1xx/204/304 and HEAD responses have no body; a response without length or
 * chunked is HTTP_BODY_EOF.
 */
int http_parse_response(struct http_msg *m, const char *buf, size_t len,
			const struct http_limits *lim, enum http_method req_method);

/* Value of the first header with this id, or NULL (len in *len). */
const char *http_header_get(const struct http_msg *m, const char *buf, enum http_hdr_id id,
			    size_t *len);
/* Value of the first header with this name (case-insensitive), or NULL. */
const char *http_header_find(const struct http_msg *m, const char *buf, const char *name,
			     size_t *len);
/* 1 when the comma-separated list value contains token (case-insensitive). */
int http_list_has(const char *value, size_t len, const char *token);
/* GET HEAD OPTIONS TRACE PUT DELETE: safe to retry on another backend. */
int http_method_idempotent(enum http_method m);
const char *http_status_reason(int status);

/*
 * Chunked transfer coding, scanned as it streams through (the proxy forwards the
 * framing unchanged). Chunk-size lines are capped (extensions included) at
 * HTTP_CHUNK_LINE_MAX bytes, sizes at 2^60, trailers at HTTP_CHUNK_TRAILER_MAX bytes.
 */
#define HTTP_CHUNK_LINE_MAX 4096
#define HTTP_CHUNK_TRAILER_MAX 16384

struct http_chunked {
	uint8_t state;
	uint8_t done;
	uint64_t remaining; /* data bytes left in the current chunk */
	uint32_t line_len;  /* bytes of the current size/trailer line seen so far */
	uint32_t trailer_len;
	uint64_t data_total; /* payload bytes seen (decoded length) */
};

void http_chunked_init(struct http_chunked *c);
/*
 * Consumes up to len bytes of chunked body. Returns the number of bytes that belong
 * to the body (stops right after the final CRLF; then c->done is 1), or -1 when the
 * framing is malformed. Bytes after the end are not consumed.
 */
ssize_t http_chunked_scan(struct http_chunked *c, const char *buf, size_t len);
/*
 * Like http_chunked_scan, and also reports the payload bytes: calls fn(arg, data, n) for
 * each run of payload (for a cache that stores decoded bodies).
 */
ssize_t http_chunked_decode(struct http_chunked *c, const char *buf, size_t len,
			    void (*fn)(void *arg, const char *data, size_t n), void *arg);

#endif
