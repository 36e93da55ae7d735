/*
 * libFuzzer target: config_load_text() on arbitrary text must never crash, hang or leak,
 * and a configuration it accepts must be freed cleanly. Leading lines "-d KEY=VALUE" are
 * taken as overrides so that the -d paths are fuzzed too.
 */
#include <dlfcn.h>
#include <netdb.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"

#define FUZZ_MAX_OVERRIDES 8

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/*
 * Backends may name hosts: a fuzzer must not turn them into DNS queries (slow, and
 * traffic to the outside), so only numeric hosts resolve. config.c always passes hints.
 */
int
getaddrinfo(const char *node, const char *service, const struct addrinfo *hints,
            struct addrinfo **res)
{
	static int (*real)(const char *, const char *, const struct addrinfo *, struct addrinfo **);
	struct addrinfo numeric = *hints;

	numeric.ai_flags |= AI_NUMERICHOST;
	if (real == NULL)
		*(void **)&real = dlsym(RTLD_NEXT, "getaddrinfo");
	return real(node, service, &numeric, res);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *text = malloc(size + 1);
	char *overrides[FUZZ_MAX_OVERRIDES + 1];
	char *body = text;
	char err[512];
	struct config *c;
	int n = 0;

	memcpy(text, data, size);
	text[size] = '\0';
	while (n < FUZZ_MAX_OVERRIDES && strncmp(body, "-d ", 3) == 0) {
		char *nl = strchr(body, '\n');

		overrides[n++] = body + 3;
		if (nl == NULL) {
			body += strlen(body);
			break;
		}
		*nl = '\0';
		body = nl + 1;
	}
	overrides[n] = NULL;
	c = config_load_text("fuzz.conf", body, overrides, err, sizeof err);
	if (c != NULL) {
		/* what the daemon relies on: routes sorted, at least one backend */
		if (c->nbackends < 1 || c->nroutes < 1)
			abort();
		(void)config_route_match(c, "/", 1);
	} else if (memchr(err, '\0', sizeof err) == NULL) {
		abort();
	}
	config_free(c);
	free(text);
	return 0;
}
