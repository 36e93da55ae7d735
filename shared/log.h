#ifndef GW_LOG_H
#define GW_LOG_H

/*
 * Logging in relayd's manner: log_warn appends strerror(errno), log_warnx does not,
 * fatal/fatalx log and exit(1). Before log_init() everything goes to stderr.
 */

void log_init(int foreground, const char *ident);
void log_set_verbose(int level);
/*
 * Also hands every message but debug ones to hook (syslog priority, text), from the
 * thread that logged it: gatewayd publishes them as `event`s of its live stream. The
 * hook must be thread-safe and must not log.
 */
void log_set_hook(void (*hook)(int prio, const char *msg));
void log_info(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_debug(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_warnx(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void fatal(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
void fatalx(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

#endif
