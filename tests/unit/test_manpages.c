/*
 * The man pages and the parsers cannot drift: every directive that config.c's table
 * knows is documented as `.It Ic NAME` in the DIRECTIVES section of gatewayd.conf(5),
 * and every directive entry there is one the parser knows. (gatectl.1 against proto.c's
 * command table is checked by test_gatectl.py.) Run from the repository root, as
 * tests/run.sh does.
 */

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"

#define MAN_CONF "man/gatewayd.conf.5"
#define MAN_MAX 256

struct man_names {
	char name[MAN_MAX][64];
	int n;
};

/* The `.It Ic NAME` entries between `.Sh DIRECTIVES` and the next `.Sh`. */
static void
man_directives(struct man_names *out)
{
	FILE *f = fopen(MAN_CONF, "r");
	char line[1024];
	int in = 0;

	assert_non_null(f);
	out->n = 0;
	while (fgets(line, sizeof(line), f) != NULL) {
		if (strncmp(line, ".Sh ", 4) == 0)
			in = strncmp(line, ".Sh DIRECTIVES", 14) == 0;
		else if (in && strncmp(line, ".It Ic ", 7) == 0 && out->n < MAN_MAX)
			sscanf(line + 7, "%63s", out->name[out->n++]);
	}
	fclose(f);
	assert_true(out->n > 0);
}

static int
man_has(const struct man_names *m, const char *name)
{
	for (int i = 0; i < m->n; i++)
		if (strcmp(m->name[i], name) == 0)
			return 1;
	return 0;
}

static void
test_every_directive_is_documented(void **state)
{
	struct man_names m;
	const char *name;
	int missing = 0;

	(void)state;
	man_directives(&m);
	for (int i = 0; (name = config_directive_name(i)) != NULL; i++) {
		if (!man_has(&m, name)) {
			fprintf(stderr, "%s: no .It Ic %s in DIRECTIVES\n", MAN_CONF, name);
			missing++;
		}
	}
	assert_int_equal(missing, 0);
}

static void
test_every_documented_directive_exists(void **state)
{
	struct man_names m;
	int unknown = 0;

	(void)state;
	man_directives(&m);
	for (int i = 0; i < m.n; i++) {
		int found = 0;
		const char *name;

		for (int k = 0; (name = config_directive_name(k)) != NULL; k++)
			found |= strcmp(name, m.name[i]) == 0;
		if (!found) {
			fprintf(stderr, "%s: .It Ic %s is not a directive\n", MAN_CONF, m.name[i]);
			unknown++;
		}
	}
	assert_int_equal(unknown, 0);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_every_directive_is_documented),
	    cmocka_unit_test(test_every_documented_directive_exists),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
