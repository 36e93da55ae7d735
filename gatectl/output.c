#include <stdio.h>
#include <string.h>
#include <time.h>

#include "gatectl.h"

/* Scalars of an object as "name value" lines; objects inside as "name.field". */
static void
output_pairs(const cJSON *o, const char *prefix)
{
	const cJSON *it;

	cJSON_ArrayForEach(it, o)
	{
		char name[128];

		if (strcmp(it->string, "v") == 0 || strcmp(it->string, "ok") == 0 ||
		    cJSON_IsArray(it))
			continue;
		snprintf(name, sizeof(name), "%s%s", prefix, it->string);
		if (cJSON_IsObject(it)) {
			char sub[130];

			snprintf(sub, sizeof(sub), "%s.", name);
			output_pairs(it, sub);
		} else if (cJSON_IsString(it)) {
			printf("%-22s %s\n", name, it->valuestring);
		} else if (cJSON_IsBool(it)) {
			printf("%-22s %s\n", name, cJSON_IsTrue(it) ? "yes" : "no");
		} else if (cJSON_IsNumber(it)) {
			printf("%-22s %.15g\n", name, it->valuedouble);
		} else {
			printf("%-22s -\n", name);
		}
	}
}

static void
output_cell(const cJSON *v, char *buf, size_t len)
{
	if (cJSON_IsString(v))
		snprintf(buf, len, "%s", v->valuestring);
	else if (cJSON_IsBool(v))
		snprintf(buf, len, "%s", cJSON_IsTrue(v) ? "yes" : "no");
	else if (cJSON_IsNumber(v))
		snprintf(buf, len, "%.15g", v->valuedouble);
	else if (cJSON_IsArray(v))
		snprintf(buf, len, "%d", cJSON_GetArraySize(v));
	else
		snprintf(buf, len, "-");
}

#define OUTPUT_MAX_COLS 12

/* A table of the objects of arr: one column per key, headed by heads[], aligned. */
struct output_table {
	int ncols;
	const char *heads[OUTPUT_MAX_COLS];
	const char *keys[OUTPUT_MAX_COLS];
};

static void
output_row(const struct output_table *t, const int *width, const cJSON *row)
{
	char cell[320];

	for (int c = 0; c < t->ncols; c++) {
		if (row != NULL)
			output_cell(cJSON_GetObjectItemCaseSensitive(row, t->keys[c]), cell,
			            sizeof(cell));
		/* the last column is not padded: no trailing blanks */
		printf("%-*s%s", c + 1 < t->ncols ? width[c] : 0, row != NULL ? cell : t->heads[c],
		       c + 1 < t->ncols ? "  " : "\n");
	}
}

static void
output_table(const struct output_table *t, const cJSON *arr)
{
	int width[OUTPUT_MAX_COLS];
	const cJSON *b;
	char cell[320];

	for (int c = 0; c < t->ncols; c++)
		width[c] = (int)strlen(t->heads[c]);
	cJSON_ArrayForEach(b, arr)
	{
		for (int c = 0; c < t->ncols; c++) {
			output_cell(cJSON_GetObjectItemCaseSensitive(b, t->keys[c]), cell,
			            sizeof(cell));
			if ((int)strlen(cell) > width[c])
				width[c] = (int)strlen(cell);
		}
	}
	output_row(t, width, NULL);
	cJSON_ArrayForEach(b, arr)
	{
		output_row(t, width, b);
	}
}

static const struct output_table output_backends = {
    11,
    {"ID", "ADDRESS", "DC", "STATE", "HEALTHY", "CIRCUIT", "WEIGHT", "ACTIVE", "REQUESTS",
     "FAILURES", "AVG_MS"},
    {"id", "address", "dc", "state", "healthy", "circuit", "weight", "active_connections",
     "requests", "failures", "avg_response_ms"}};

static const struct output_table output_users = {
    6,
    {"USER_ID", "EMAIL", "TIER", "ROLE", "BLOCKED", "KEYS"},
    {"user_id", "email", "tier", "role", "blocked", "keys"}};

static const struct output_table output_keys = {
    7,
    {"PREFIX", "USER_ID", "TIER", "STATE", "CREATED", "LAST_USED", "EXPIRES"},
    {"prefix", "user_id", "tier", "state", "created", "last_used", "expires"}};

static const struct output_table output_dcs = {5,
                                               {"NAME", "LAT", "LON", "HEALTHY", "REQUESTS"},
                                               {"name", "lat", "lon", "healthy", "requests"}};

/* The keys of "keys list" with their times as dates (UTC) for people. */
static void
output_key_times(cJSON *keys)
{
	static const char *const from[] = {"created_at", "last_used", "expires_at"};
	static const char *const to[] = {"created", "last_used", "expires"};
	cJSON *k;

	cJSON_ArrayForEach(k, keys)
	{
		for (int i = 0; i < 3; i++) {
			const cJSON *t = cJSON_GetObjectItemCaseSensitive(k, from[i]);
			char buf[32] = "-";

			if (cJSON_IsNumber(t) && t->valuedouble > 0) {
				time_t s = (time_t)t->valuedouble;
				struct tm tm;

				strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%MZ", gmtime_r(&s, &tm));
			}
			cJSON_DeleteItemFromObjectCaseSensitive(k, to[i]);
			cJSON_AddStringToObject(k, to[i], buf);
		}
	}
}

void
output_log_line(const cJSON *e)
{
	static const char *const keys[] = {"time",       "status",  "method",  "path",
	                                   "latency_us", "backend", "identity"};
	char cell[600];

	/* time status method path latency backend identity */
	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
		const cJSON *v = cJSON_GetObjectItemCaseSensitive(e, keys[i]);

		if (strcmp(keys[i], "latency_us") == 0 && cJSON_IsNumber(v))
			snprintf(cell, sizeof(cell), "%.3fms", v->valuedouble / 1000.0);
		else
			output_cell(v, cell, sizeof(cell));
		printf("%s%s", cell[0] ? cell : "-",
		       i + 1 < sizeof(keys) / sizeof(keys[0]) ? " " : "\n");
	}
}

static void
output_config(const cJSON *reply)
{
	const cJSON *lines = cJSON_GetObjectItemCaseSensitive(reply, "lines"), *l;
	const cJSON *name = cJSON_GetObjectItemCaseSensitive(reply, "name");

	if (cJSON_GetArraySize(lines) == 0 && cJSON_IsString(name))
		printf("# %s is not set: its default applies (gatewayd.conf(5))\n",
		       name->valuestring);

	cJSON_ArrayForEach(l, lines)
	{
		if (cJSON_IsString(l))
			printf("%s\n", l->valuestring);
	}
}

void
output_human(const struct proto_command *cmd, const cJSON *reply)
{
	cJSON *copy;
	const cJSON *e;

	switch (cmd->handler) {
	case PROTO_BACKENDS:
		output_table(&output_backends, cJSON_GetObjectItemCaseSensitive(reply, "backends"));
		break;
	case PROTO_USERS:
		output_table(&output_users, cJSON_GetObjectItemCaseSensitive(reply, "users"));
		break;
	case PROTO_KEYS_LIST:
		copy = cJSON_Duplicate(cJSON_GetObjectItemCaseSensitive(reply, "keys"), 1);
		output_key_times(copy);
		output_table(&output_keys, copy);
		cJSON_Delete(copy);
		break;
	case PROTO_GEO:
		output_table(&output_dcs, cJSON_GetObjectItemCaseSensitive(reply, "datacenters"));
		output_pairs(reply, "");
		break;
	case PROTO_LOGS:
		cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(reply, "entries"))
		{
			output_log_line(e);
		}
		break;
	case PROTO_CONFIG_GET:
		output_config(reply);
		break;
	case PROTO_STATUS:
		output_pairs(reply, "");
		printf("%-22s %d\n", "backends",
		       cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(reply, "backends")));
		break;
	default:
		output_pairs(reply, "");
		break;
	}
}
