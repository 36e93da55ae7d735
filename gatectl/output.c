#include <stdio.h>
#include <string.h>

#include "gatectl.h"

/* Fields of the "status" table that are objects are printed as "name.field". */
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

#define OUTPUT_COLS 10

static const char *const output_heads[OUTPUT_COLS] = {"ID",       "ADDRESS", "DC",     "HEALTHY",
                                                      "CIRCUIT",  "WEIGHT",  "ACTIVE", "REQUESTS",
                                                      "FAILURES", "AVG_MS"};
static const char *const output_keys[OUTPUT_COLS] = {"id",
                                                     "address",
                                                     "dc",
                                                     "healthy",
                                                     "circuit",
                                                     "weight",
                                                     "active_connections",
                                                     "requests",
                                                     "failures",
                                                     "avg_response_ms"};

static void
output_cell(const cJSON *v, char *buf, size_t len)
{
	if (cJSON_IsString(v))
		snprintf(buf, len, "%s", v->valuestring);
	else if (cJSON_IsBool(v))
		snprintf(buf, len, "%s", cJSON_IsTrue(v) ? "yes" : "no");
	else if (cJSON_IsNumber(v))
		snprintf(buf, len, "%.15g", v->valuedouble);
	else
		snprintf(buf, len, "-");
}

static void
output_backends(const cJSON *arr)
{
	int width[OUTPUT_COLS];
	const cJSON *b;
	char cell[320];

	for (int c = 0; c < OUTPUT_COLS; c++)
		width[c] = (int)strlen(output_heads[c]);
	cJSON_ArrayForEach(b, arr)
	{
		for (int c = 0; c < OUTPUT_COLS; c++) {
			output_cell(cJSON_GetObjectItemCaseSensitive(b, output_keys[c]), cell,
			            sizeof(cell));
			if ((int)strlen(cell) > width[c])
				width[c] = (int)strlen(cell);
		}
	}
	/* the last column is not padded: no trailing blanks */
	width[OUTPUT_COLS - 1] = 0;
	for (int c = 0; c < OUTPUT_COLS; c++)
		printf("%-*s%s", width[c], output_heads[c], c + 1 < OUTPUT_COLS ? "  " : "\n");
	cJSON_ArrayForEach(b, arr)
	{
		for (int c = 0; c < OUTPUT_COLS; c++) {
			output_cell(cJSON_GetObjectItemCaseSensitive(b, output_keys[c]), cell,
			            sizeof(cell));
			printf("%-*s%s", width[c], cell, c + 1 < OUTPUT_COLS ? "  " : "\n");
		}
	}
}

void
output_human(const struct proto_command *cmd, const cJSON *reply)
{
	switch (cmd->handler) {
	case PROTO_BACKENDS:
		output_backends(cJSON_GetObjectItemCaseSensitive(reply, "backends"));
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
