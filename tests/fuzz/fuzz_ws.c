/*
 * libFuzzer target: the input is what a WebSocket client sends after the handshake,
 * read frame by frame as ws.c does (ws_frame_parse on the unconsumed bytes, unmask,
 * advance). Checks the parser's promises: a complete frame's length is its header plus
 * its payload and never past the input, the header length is one of the four RFC 6455
 * forms, a masked client frame is required, control frames are short and final, the
 * payload limit holds, and every shorter prefix of a complete frame is WS_AGAIN. The
 * first two bytes also go through ws_accept_key as a key of arbitrary length.
 *
 *   make build/fuzz/fuzz_ws && build/fuzz/fuzz_ws -max_total_time=60 \
 *       build/fuzz/corpus-fuzz_ws tests/fuzz/corpus/fuzz_ws
 */

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ws.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
fuzz_check(int ok)
{
	if (!ok)
		__builtin_trap();
}

static void
fuzz_frame(const uint8_t *p, size_t len, int64_t r, const struct ws_frame *f, uint64_t max)
{
	fuzz_check(r > 0 && (uint64_t)r <= len);
	fuzz_check(f->header_len == 6 || f->header_len == 8 || f->header_len == 14);
	fuzz_check((uint64_t)r == f->header_len + f->payload_len);
	fuzz_check(f->masked && f->payload_len <= max);
	if (f->opcode & 0x8)
		fuzz_check(f->fin && f->payload_len <= 125);
	/* the frame is complete only with its last byte */
	for (size_t cut = 0; cut < (size_t)r; cut += 1 + (size_t)r / 64) {
		struct ws_frame g;
		fuzz_check(ws_frame_parse(p, cut, max, &g) == WS_AGAIN);
	}
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint8_t *buf = malloc(size + 1);
	size_t off = 0;
	/* a small limit too, so the size check is reached with short inputs */
	uint64_t max = size > 0 && (data[0] & 1) ? 200 : WS_MAX_FRAME;
	char accept[WS_ACCEPT_LEN + 1];

	if (buf == NULL)
		return 0;
	memcpy(buf, data, size);
	if (ws_accept_key((const char *)data, size < 40 ? size : 40, accept) == 0)
		fuzz_check(strlen(accept) == WS_ACCEPT_LEN);
	while (off < size) {
		struct ws_frame f;
		int64_t r = ws_frame_parse(buf + off, size - off, max, &f);

		if (r <= 0)
			break;
		fuzz_frame(buf + off, size - off, r, &f, max);
		ws_unmask(buf + off + f.header_len, (size_t)f.payload_len, f.mask);
		off += (size_t)r;
	}
	free(buf);
	return 0;
}
