/*
 * libFuzzer target: the input is the body of a POST to an /auth endpoint. It is read by
 * api_auth_parse_body with the field sets of every endpoint (register, login, refresh,
 * API-key creation and rotation, migration, logout) and with all fields at once.
 *
 * Oracles: a refusal leaves the output zeroed and says why in printable ASCII, without
 * quoting the input; an acceptance holds only wanted fields, every needed one, each
 * NUL-terminated within bounds and obeying its rule (emails checked here independently
 * of the parser); the accepted fields, printed back as JSON, parse again to the same
 * result; and asking for fewer required fields never turns an acceptance into a refusal.
 *
 *   make build/fuzz/fuzz_json_body && build/fuzz/fuzz_json_body -max_total_time=60 \
 *       build/fuzz/corpus-fuzz_json_body tests/fuzz/corpus/fuzz_json_body
 */

#include <cjson/cJSON.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
fuzz_check(int ok)
{
	if (!ok)
		__builtin_trap();
}

static const struct {
	unsigned want, need;
} fuzz_sets[] = {
    /* register */
    {API_AUTH_EMAIL | API_AUTH_NEW_PASSWORD | API_AUTH_TIER,
     API_AUTH_EMAIL | API_AUTH_NEW_PASSWORD},
    /* login */
    {API_AUTH_EMAIL | API_AUTH_PASSWORD, API_AUTH_EMAIL | API_AUTH_PASSWORD},
    /* refresh; logout (optional) */
    {API_AUTH_REFRESH, API_AUTH_REFRESH},
    {API_AUTH_REFRESH, 0},
    /* create key; rotate key */
    {API_AUTH_EXPIRES_IN, 0},
    {API_AUTH_API_KEY, 0},
    /* migrate */
    {API_AUTH_API_KEY | API_AUTH_EMAIL | API_AUTH_NEW_PASSWORD,
     API_AUTH_API_KEY | API_AUTH_EMAIL | API_AUTH_NEW_PASSWORD},
    /* everything, nothing required */
    {0x7f, 0},
};

/* The email rule, restated: printable ASCII, lower case, one '@', a dotted domain. */
static int
fuzz_email_ok(const char *s)
{
	size_t n = strlen(s);
	const char *at = strchr(s, '@'), *dot;

	if (n < 3 || n > API_AUTH_EMAIL_MAX || at == NULL || at == s || strchr(at + 1, '@'))
		return 0;
	for (const char *p = s; *p != '\0'; p++)
		if (*p <= ' ' || *p >= 0x7f || (*p >= 'A' && *p <= 'Z'))
			return 0;
	dot = strchr(at + 1, '.');
	return dot != NULL && dot != at + 1 && s[n - 1] != '.' && strstr(at, "..") == NULL;
}

static size_t
fuzz_chars(const char *s)
{
	size_t n = 0;

	for (; *s != '\0'; s++)
		if (((unsigned char)*s & 0xc0) != 0x80)
			n++;
	return n;
}

/* A string field: terminated inside its buffer, present exactly when flagged. */
static void
fuzz_check_str(const struct api_auth_body *b, unsigned flag, const char *s, size_t size, size_t max)
{
	size_t n = strnlen(s, size);

	fuzz_check(n < size && n <= max);
	fuzz_check((b->have & flag) ? n > 0 : n == 0);
}

static void
fuzz_check_accepted(const struct api_auth_body *b, unsigned want, unsigned need)
{
	if (want & API_AUTH_NEW_PASSWORD) {
		want |= API_AUTH_PASSWORD;
		need |= need & API_AUTH_NEW_PASSWORD ? API_AUTH_PASSWORD : 0;
	}
	fuzz_check((b->have & ~want) == 0);
	fuzz_check((b->have & API_AUTH_NEW_PASSWORD) == 0);
	fuzz_check((need & want & ~API_AUTH_NEW_PASSWORD & ~b->have) == 0);
	fuzz_check_str(b, API_AUTH_EMAIL, b->email, sizeof b->email, API_AUTH_EMAIL_MAX);
	fuzz_check_str(b, API_AUTH_PASSWORD, b->password, sizeof b->password,
	               API_AUTH_PASSWORD_MAX);
	fuzz_check_str(b, API_AUTH_TIER, b->tier, sizeof b->tier, API_AUTH_TIER_MAX);
	fuzz_check_str(b, API_AUTH_REFRESH, b->refresh_token, sizeof b->refresh_token,
	               API_AUTH_TOKEN_MAX);
	fuzz_check_str(b, API_AUTH_API_KEY, b->api_key, sizeof b->api_key, API_AUTH_KEY_MAX);
	if (b->have & API_AUTH_EMAIL)
		fuzz_check(fuzz_email_ok(b->email));
	if ((b->have & API_AUTH_PASSWORD) && (want & API_AUTH_NEW_PASSWORD))
		fuzz_check(fuzz_chars(b->password) >= API_AUTH_PASSWORD_MIN);
	if (b->have & API_AUTH_EXPIRES_IN)
		fuzz_check(b->expires_in >= 1 && b->expires_in <= API_AUTH_EXPIRES_MAX);
	else
		fuzz_check(b->expires_in == 0);
}

static void
fuzz_check_refused(const struct api_auth_body *b, const char *err, size_t errlen)
{
	size_t n = strnlen(err, errlen);

	fuzz_check(n > 0 && n < errlen);
	for (size_t i = 0; i < n; i++)
		fuzz_check(err[i] >= ' ' && err[i] < 0x7f);
	fuzz_check(b->have == 0 && b->email[0] == '\0' && b->password[0] == '\0');
}

static int
fuzz_same(const struct api_auth_body *a, const struct api_auth_body *b)
{
	return a->have == b->have && strcmp(a->email, b->email) == 0 &&
	       strcmp(a->password, b->password) == 0 && strcmp(a->tier, b->tier) == 0 &&
	       strcmp(a->refresh_token, b->refresh_token) == 0 &&
	       strcmp(a->api_key, b->api_key) == 0 && a->expires_in == b->expires_in;
}

/* The accepted fields printed as JSON must read back to the same thing. */
static void
fuzz_round_trip(const struct api_auth_body *b, unsigned want, unsigned need,
                struct api_auth_body *again)
{
	cJSON *o = cJSON_CreateObject();
	char err[160], *s;

	if (b->have & API_AUTH_EMAIL)
		cJSON_AddStringToObject(o, "email", b->email);
	if (b->have & API_AUTH_PASSWORD)
		cJSON_AddStringToObject(o, "password", b->password);
	if (b->have & API_AUTH_TIER)
		cJSON_AddStringToObject(o, "tier", b->tier);
	if (b->have & API_AUTH_REFRESH)
		cJSON_AddStringToObject(o, "refresh_token", b->refresh_token);
	if (b->have & API_AUTH_API_KEY)
		cJSON_AddStringToObject(o, "api_key", b->api_key);
	if (b->have & API_AUTH_EXPIRES_IN)
		cJSON_AddNumberToObject(o, "expires_in", (double)b->expires_in);
	s = cJSON_PrintUnformatted(o);
	cJSON_Delete(o);
	fuzz_check(s != NULL);
	fuzz_check(api_auth_parse_body(s, strlen(s), want, need, again, err, sizeof err) == 0);
	fuzz_check(fuzz_same(b, again));
	cJSON_free(s);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct api_auth_body b, again;
	const char *buf = (const char *)data;
	char err[160];

	for (size_t i = 0; i < sizeof fuzz_sets / sizeof fuzz_sets[0]; i++) {
		unsigned want = fuzz_sets[i].want, need = fuzz_sets[i].need;

		memset(err, 'x', sizeof err);
		if (api_auth_parse_body(buf, size, want, need, &b, err, sizeof err) != 0) {
			fuzz_check_refused(&b, err, sizeof err);
			continue;
		}
		fuzz_check_accepted(&b, want, need);
		fuzz_round_trip(&b, want, need, &again);
		if (need != 0) {
			/* fewer requirements: still accepted, same fields */
			fuzz_check(
			    api_auth_parse_body(buf, size, want, 0, &again, err, sizeof err) == 0);
			fuzz_check(fuzz_same(&b, &again));
		}
	}
	/* a tiny error buffer is still terminated */
	if (api_auth_parse_body(buf, size, 0x7f, 0x7f, &b, err, 8) != 0)
		fuzz_check(strnlen(err, 8) < 8);
	return 0;
}
