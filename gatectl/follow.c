#include <signal.h>
#include <stdio.h>
#include <string.h>

#include <nng/nng.h>
#include <nng/protocol/pubsub0/sub.h>

#include "gatectl.h"

/*
 * `logs -f`: a SUB socket on the daemon's PUB stream, subscribed to "log ". Each message
 * is "log {json}"; the JSON is printed as a line (or as it came with --json). The dial
 * does not block, so a daemon that restarts is simply reconnected; the receive timeout
 * lets the loop see SIGINT/SIGTERM, after which it returns and main exits 0.
 */

#define FOLLOW_POLL_MS 250
#define FOLLOW_TOPIC "log "

static volatile sig_atomic_t follow_stop;

static void
follow_signal(int sig)
{
	(void)sig;
	follow_stop = 1;
}

static void
follow_print(const char *buf, size_t len, int json)
{
	cJSON *o;

	if (len < strlen(FOLLOW_TOPIC) || memcmp(buf, FOLLOW_TOPIC, strlen(FOLLOW_TOPIC)) != 0)
		return;
	buf += strlen(FOLLOW_TOPIC);
	len -= strlen(FOLLOW_TOPIC);
	if (json) {
		printf("%.*s\n", (int)len, buf);
	} else if ((o = cJSON_ParseWithLength(buf, len)) != NULL) {
		output_log_line(o);
		cJSON_Delete(o);
	}
	/* a reader that went away (SIGPIPE ignored: EPIPE) ends the loop */
	if (fflush(stdout) != 0)
		follow_stop = 1;
}

int
follow_logs(const char *url, int json)
{
	struct sigaction sa;
	nng_socket s;
	int rv;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = follow_signal;
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGPIPE, &sa, NULL);
	if ((rv = nng_sub0_open(&s)) != 0 ||
	    (rv = nng_socket_set(s, NNG_OPT_SUB_SUBSCRIBE, FOLLOW_TOPIC, strlen(FOLLOW_TOPIC))) !=
	        0 ||
	    (rv = nng_socket_set_ms(s, NNG_OPT_RECVTIMEO, FOLLOW_POLL_MS)) != 0 ||
	    (rv = nng_dial(s, url, NULL, NNG_FLAG_NONBLOCK)) != 0) {
		fprintf(stderr, "gatectl: cannot follow %s: %s\n", url, nng_strerror(rv));
		return GATECTL_UNREACHABLE;
	}
	while (!follow_stop) {
		char *buf = NULL;
		size_t len = 0;

		rv = nng_recv(s, &buf, &len, NNG_FLAG_ALLOC);
		if (rv == NNG_ETIMEDOUT)
			continue;
		if (rv != 0)
			break;
		follow_print(buf, len, json);
		nng_free(buf, len);
	}
	nng_close(s);
	return GATECTL_OK;
}
