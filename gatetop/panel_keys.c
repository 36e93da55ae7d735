#include <stdio.h>
#include <string.h>

#include "gatetop.h"

/* The busiest identities of the interval: tier, rate, quota left, blocked; filterable. */

static int
panel_keys_match(const struct ui *ui, const struct model_key *k)
{
	return panel_match(ui, k->identity) || panel_match(ui, k->tier);
}

const struct model_key *
panel_keys_at(const struct model *m, const struct ui *ui, int i)
{
	for (int j = 0; j < m->nkeys; j++)
		if (panel_keys_match(ui, &m->keys[j]) && i-- == 0)
			return &m->keys[j];
	return NULL;
}

int
panel_keys_find(const struct model *m, const struct ui *ui, const char *identity)
{
	int n = 0;

	for (int j = 0; j < m->nkeys; j++) {
		if (!panel_keys_match(ui, &m->keys[j]))
			continue;
		if (strcmp(m->keys[j].identity, identity) == 0)
			return n;
		n++;
	}
	return -1;
}

static int
panel_keys_rows(const struct model *m, const struct ui *ui)
{
	int n = 0;

	for (int j = 0; j < m->nkeys; j++)
		n += panel_keys_match(ui, &m->keys[j]);
	return n;
}

/* Quotas of a hundred thousand fit the column as "99k/100k". */
static void
panel_keys_num(long long v, char *out, size_t len)
{
	if (v >= 10000000)
		snprintf(out, len, "%lldM", v / 1000000);
	else if (v >= 10000)
		snprintf(out, len, "%lldk", v / 1000);
	else
		snprintf(out, len, "%lld", v);
}

static enum panel_class
panel_keys_row(const struct model *m, const struct ui *ui, int i, char *buf, size_t len,
               const struct model_hist **spark)
{
	const struct model_key *k = panel_keys_at(m, ui, i);
	char quota[48];

	if (k == NULL) {
		snprintf(buf, len, "?");
		return PANEL_DIM;
	}
	if (k->limit > 0) {
		char left[24], limit[24];

		panel_keys_num(k->remaining, left, sizeof(left));
		panel_keys_num(k->limit, limit, sizeof(limit));
		snprintf(quota, sizeof(quota), "%s/%s", left, limit);
	} else
		snprintf(quota, sizeof(quota), "-");
	snprintf(buf, len, "%-15.15s %-8.8s %-7s %6.1f %7lld %8s", k->identity,
	         k->tier[0] ? k->tier : "-", k->blocked ? "BLOCKED" : "ok", k->rps, k->total,
	         quota);
	if (k->blocked)
		return PANEL_BAD;
	return k->limit > 0 && k->remaining == 0 ? PANEL_WARN : PANEL_NORMAL;
}

const struct panel panel_keys = {
    "top keys",
    "IDENTITY        TIER     STATE      RPS   TOTAL     LEFT",
    panel_keys_rows,
    panel_keys_row,
};
