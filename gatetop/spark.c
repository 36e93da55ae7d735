#include <string.h>

#include "gatetop.h"

/*
 * Sparklines: eight levels, as Unicode lower blocks (U+2581..U+2588, three bytes each in
 * UTF-8) when the terminal's locale is UTF-8, else ASCII characters of rising ink.
 */

static const char *const spark_utf8[8] = {"\xe2\x96\x81", "\xe2\x96\x82", "\xe2\x96\x83",
                                          "\xe2\x96\x84", "\xe2\x96\x85", "\xe2\x96\x86",
                                          "\xe2\x96\x87", "\xe2\x96\x88"};
static const char spark_ascii[8] = {'_', '.', '-', ':', '=', '+', '*', '#'};

int
spark_render(const struct model_hist *h, int width, int utf8, char *out, size_t outlen)
{
	int n = h->len < width ? h->len : width, first = h->len - n, cells = 0;
	size_t off = 0, cell = utf8 ? 3 : 1;
	double max = 0;

	for (int i = first; i < h->len; i++)
		if (model_hist_get(h, i) > max)
			max = model_hist_get(h, i);
	for (int i = first; i < h->len && off + cell < outlen; i++, cells++) {
		double v = model_hist_get(h, i);
		/* zero stays the lowest block; any traffic shows at least one step up */
		int level = max > 0 ? (int)(v / max * 7.0 + 0.5) : 0;

		if (v > 0 && level == 0)
			level = 1;
		if (level > 7)
			level = 7;
		if (utf8)
			memcpy(out + off, spark_utf8[level], 3);
		else
			out[off] = spark_ascii[level];
		off += cell;
	}
	if (outlen > 0)
		out[off < outlen ? off : outlen - 1] = '\0';
	return cells;
}
