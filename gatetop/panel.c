#include <stdio.h>
#include <string.h>

#include "gatetop.h"

/* The text side of the panes: the filter, and the --once snapshot. */

int
panel_match(const struct ui *ui, const char *s)
{
	return ui->filter[0] == '\0' || strstr(s, ui->filter) != NULL;
}

void
panel_print(FILE *f, const struct panel *p, const struct model *m, const struct ui *ui)
{
	int n = p->rows(m, ui);

	fprintf(f, "== %s (%d)\n%s\n", p->title, n, p->header);
	for (int i = 0; i < n; i++) {
		const struct model_hist *spark = NULL;
		char buf[512];

		p->row(m, ui, i, buf, sizeof(buf), &spark);
		fprintf(f, "%s\n", buf);
	}
	fputc('\n', f);
}

void
panel_print_all(FILE *f, const struct model *m, const struct ui *ui, double now)
{
	const struct panel *const panes[] = {&panel_backends, &panel_keys, &panel_dc,
	                                     &panel_stream};
	char line[512];

	for (int i = 0; i < PANEL_HEADER_LINES; i++) {
		panel_header_line(m, ui, now, i, line, sizeof(line));
		if (line[0])
			fprintf(f, "%s\n", line);
	}
	fputc('\n', f);
	for (size_t i = 0; i < sizeof(panes) / sizeof(panes[0]); i++)
		panel_print(f, panes[i], m, ui);
}
