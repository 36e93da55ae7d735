#include <errno.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <time.h>

#include "log.h"

static int log_to_stderr = 1;
static int log_verbose;
static _Atomic(void (*)(int, const char *)) log_hook; /* set once by the daemon */

void
log_init(int foreground, const char *ident)
{
	log_to_stderr = foreground;
	if (!foreground)
		openlog(ident, LOG_PID | LOG_NDELAY, LOG_DAEMON);
}

void
log_set_verbose(int level)
{
	log_verbose = level;
}

void
log_set_hook(void (*hook)(int prio, const char *msg))
{
	log_hook = hook;
}

static void __attribute__((format(printf, 2, 0)))
log_vemit(int prio, const char *fmt, va_list ap, int with_errno)
{
	char msg[1024];
	int saved = errno;

	vsnprintf(msg, sizeof(msg), fmt, ap);
	if (with_errno) {
		size_t n = strlen(msg);
		snprintf(msg + n, sizeof(msg) - n, ": %s", strerror(saved));
	}
	if (log_to_stderr) {
		char ts[32];
		time_t now = time(NULL);
		struct tm tm;

		localtime_r(&now, &tm);
		strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);
		fprintf(stderr, "%s gatewayd: %s\n", ts, msg);
	} else {
		syslog(prio, "%s", msg);
	}
	void (*hook)(int, const char *) = log_hook;

	if (hook != NULL && prio != LOG_DEBUG)
		hook(prio, msg);
	errno = saved;
}

#define LOG_BODY(prio, with_errno)                                                                 \
	do {                                                                                       \
		va_list ap;                                                                        \
		va_start(ap, fmt);                                                                 \
		log_vemit(prio, fmt, ap, with_errno);                                              \
		va_end(ap);                                                                        \
	} while (0)

void
log_info(const char *fmt, ...)
{
	LOG_BODY(LOG_INFO, 0);
}

void
log_debug(const char *fmt, ...)
{
	if (log_verbose > 0)
		LOG_BODY(LOG_DEBUG, 0);
}

void
log_warn(const char *fmt, ...)
{
	LOG_BODY(LOG_WARNING, 1);
}

void
log_warnx(const char *fmt, ...)
{
	LOG_BODY(LOG_WARNING, 0);
}

void
fatal(const char *fmt, ...)
{
	LOG_BODY(LOG_CRIT, 1);
	exit(1);
}

void
fatalx(const char *fmt, ...)
{
	LOG_BODY(LOG_CRIT, 0);
	exit(1);
}
