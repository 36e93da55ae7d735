#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <event2/event.h>
#include <openssl/ssl.h>

#include "gw.h"
#include "health.h"
#include "log.h"
#include "ratelimit.h"
#include "util.h"
#include "worker.h"
#include "xmalloc.h"

/*
 * gatewayd(8): parse the configuration, bind the listeners, start the workers, then run
 * the main thread's loop: signals (SIGHUP reload, SIGTERM/SIGINT drain and exit),
 * active health checks.
 */

#define GATEWAYD_DRAIN_MS 15000
#define GATEWAYD_IP_LIMITER_KEYS (1u << 20)

static struct event_base *main_base;

static void
usage(void)
{
	fprintf(stderr, "usage: gatewayd [-ftv] [-c file] [-d key=value] [-p pidfile]\n");
	exit(2);
}

static void
gatewayd_reload(void)
{
	char err[1024];
	struct config *cfg;
	struct runtime *old, *rt;

	cfg = config_load(gw.config_path, gw.overrides, err, sizeof(err));
	if (cfg == NULL) {
		log_warnx("reload refused, keeping the running configuration: %s", err);
		return;
	}
	old = runtime_get();
	if (cfg->nlistens != old->cfg->nlistens)
		log_warnx("reload: listen lines changed; they take effect at the next restart");
	rt = runtime_build(cfg, old);
	runtime_unref(old);
	atomic_store(&gw.strategy, cfg->strategy);
	runtime_publish(rt);
	worker_notify_all();
	health_kick();
	log_info("configuration reloaded (%d backends, strategy %s)", cfg->nbackends,
		 balance_strategy_name(cfg->strategy));
}

static void
gatewayd_signal(evutil_socket_t sig, short what, void *arg)
{
	switch (sig) {
	case SIGHUP:
		gatewayd_reload();
		break;
	case SIGTERM:
	case SIGINT:
		log_info("received %s: draining in-flight requests", sig == SIGTERM ? "SIGTERM"
										      : "SIGINT");
		event_base_loopbreak(main_base);
		break;
	}
}

static void
gatewayd_pidfile(const char *path)
{
	FILE *f = fopen(path, "w");

	if (f == NULL) {
		log_warn("pid file %s", path);
		return;
	}
	fprintf(f, "%ld\n", (long)getpid());
	fclose(f);
}

int
main(int argc, char *argv[])
{
	char err[1024];
	const char *pidfile = "/run/gatewayd.pid";
	int ch, check = 0, foreground = 0, verbose = 0, noverrides = 0;
	struct config *cfg;
	struct runtime *rt;
	struct event *sigs[4];
	const int signums[4] = {SIGHUP, SIGTERM, SIGINT, 0};

	gw.overrides = xcalloc((size_t)argc + 1, sizeof(char *));
	while ((ch = getopt(argc, argv, "c:d:fp:tv")) != -1) {
		switch (ch) {
		case 'c':
			gw.config_path = xstrdup(optarg);
			break;
		case 'd':
			gw.overrides[noverrides++] = xstrdup(optarg);
			break;
		case 'f':
			foreground = 1;
			break;
		case 'p':
			pidfile = optarg;
			break;
		case 't':
			check = 1;
			break;
		case 'v':
			verbose++;
			break;
		default:
			usage();
		}
	}
	if (optind != argc)
		usage();
	log_set_verbose(verbose);

	cfg = config_load(gw.config_path, gw.overrides, err, sizeof(err));
	if (cfg == NULL) {
		fprintf(stderr, "%s\n", err);
		return 1;
	}
	if (check) {
		fprintf(stderr, "configuration %s is valid\n",
			gw.config_path ? gw.config_path : "(embedded default)");
		config_free(cfg);
		return 0;
	}

	signal(SIGPIPE, SIG_IGN);
	SSL_library_init();
	gw.start_ms = util_now_ms();
	gw.admin_token = getenv("GATEWAYD_ADMIN_TOKEN");
	if (gw.admin_token != NULL && gw.admin_token[0] == '\0')
		gw.admin_token = NULL;
	gw.ip_limiter = ratelimit_new(GATEWAYD_IP_LIMITER_KEYS);
	atomic_store(&gw.strategy, cfg->strategy);
	rt = runtime_build(cfg, NULL);
	atomic_store(&gw.rt, rt);

	if (!foreground) {
		if (daemon(0, 0) == -1) {
			fprintf(stderr, "gatewayd: daemon: %s\n", strerror(errno));
			return 1;
		}
		gatewayd_pidfile(pidfile);
	}
	log_init(foreground, "gatewayd");
	if (worker_start_all(rt, err, sizeof(err)) == -1) {
		log_warnx("%s", err);
		return 1;
	}
	log_info("gatewayd started: %d workers, %d backends, strategy %s, listening on %s%s",
		 gw.nworkers, cfg->nbackends, balance_strategy_name(cfg->strategy),
		 cfg->listens[0].text, cfg->nlistens > 1 ? " and more" : "");
	/* Said at every start so that nobody believes these are in use yet. */
	log_info("control %s, publish %s and database %s are configured but not opened: the "
		 "control plane and the user store are not part of this version",
		 cfg->control, cfg->publish, cfg->database);
	if (gw.admin_token == NULL)
		log_info("GATEWAYD_ADMIN_TOKEN is not set: admin endpoints answer 401");

	main_base = event_base_new();
	for (int i = 0; signums[i] != 0; i++) {
		sigs[i] = evsignal_new(main_base, signums[i], gatewayd_signal, NULL);
		evsignal_add(sigs[i], NULL);
	}
	health_start(main_base);
	event_base_dispatch(main_base);

	worker_stop_all(GATEWAYD_DRAIN_MS);
	log_info("gatewayd stopped");
	if (!foreground)
		unlink(pidfile);
	return 0;
}
