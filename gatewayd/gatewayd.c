#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <time.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <event2/event.h>
#include <openssl/ssl.h>

#include "accesslog.h"
#include "auth.h"
#include "control.h"
#include "gw.h"
#include "health.h"
#include "identity.h"
#include "jobs.h"
#include "publish.h"
#include "store.h"
#include "log.h"
#include "ratelimit.h"
#include "redis.h"
#include "util.h"
#include "worker.h"
#include "xmalloc.h"

/*
 * gatewayd(8): parse the configuration, bind the listeners, start the workers, then run
 * the main thread's loop: signals (SIGHUP reload, SIGTERM/SIGINT drain and exit),
 * active health checks.
 */

#define GATEWAYD_DRAIN_MS 15000
/* 256k keys each (4 MB): idle entries are reused, so a flood of addresses stays bounded */
#define GATEWAYD_IP_LIMITER_KEYS (1u << 18)

static struct event_base *main_base;

#define GATEWAYD_JOB_THREADS 2
#define GATEWAYD_ID_LIMITER_KEYS (1u << 18)
#define GATEWAYD_TOKEN_CACHE 65536

/* ---- identity start-up: the store, the signing key, the in-memory tables ---- */

static int
gatewayd_load_key(const struct store_key *k, void *arg)
{
	struct identity_key ik;

	identity_key_from_store(&ik, k);
	identity_key_put(&ik);
	(*(int *)arg)++;
	return 0;
}

static int
gatewayd_load_user(const struct store_user *u, void *arg)
{
	struct identity_user iu;

	identity_user_from_store(&iu, u);
	identity_user_put(&iu);
	(*(int *)arg)++;
	return 0;
}

static int
gatewayd_load_block(const struct store_block *b, void *arg)
{
	identity_block(b->kind, b->value, b->until);
	(*(int *)arg)++;
	return 0;
}

static int
gatewayd_load_ban(const struct store_ban *b, void *arg)
{
	identity_ban_set(b->value, b->until, b->level);
	(*(int *)arg)++;
	return 0;
}

static int
gatewayd_load_revocation(const struct store_revocation *r, void *arg)
{
	identity_revoke(r->jti, r->expires_at);
	(*(int *)arg)++;
	return 0;
}

/*
 * The HS256 secret: JWT_SECRET_KEY, or else one generated once and kept in the database
 * (never a constant default), so that tokens survive a restart.
 */
static int
gatewayd_secret(struct store *st, char *buf, size_t len, char *err, size_t errlen)
{
	const char *env = getenv("JWT_SECRET_KEY");
	char fresh[128];

	if (env != NULL && env[0] != '\0') {
		if (strlen(env) < AUTH_SECRET_MIN) {
			snprintf(err, errlen, "JWT_SECRET_KEY is shorter than %d bytes", AUTH_SECRET_MIN);
			return -1;
		}
		util_strlcpy(buf, env, len);
		return 0;
	}
	if (auth_random_token(fresh, sizeof(fresh), 32, "") < 0 ||
	    store_setting_set_once(st, "jwt_secret", fresh, buf, len) != 0) {
		snprintf(err, errlen, "cannot keep a generated JWT secret: %s", store_error(st));
		return -1;
	}
	log_warnx("JWT_SECRET_KEY is not set: using a secret generated once and kept in the "
		  "database; set JWT_SECRET_KEY when several instances must accept each other's "
		  "tokens");
	return 0;
}

static int
gatewayd_auth_ctx(const struct config *cfg, const char *secret, char *err, size_t errlen)
{
	struct auth_config ac = {0};

	if (auth_alg_parse(cfg->jwt.alg, &ac.alg) != 0) {
		snprintf(err, errlen, "jwt: unknown alg %s", cfg->jwt.alg);
		return -1;
	}
	ac.secret = (const unsigned char *)secret;
	ac.secret_len = strlen(secret);
	ac.private_key_file = cfg->jwt.private_key[0] ? cfg->jwt.private_key : NULL;
	ac.public_key_file = cfg->jwt.public_key[0] ? cfg->jwt.public_key : NULL;
	ac.issuer = cfg->jwt.issuer;
	ac.access_ttl = (int64_t)(cfg->jwt.access_ttl_ms / 1000);
	ac.refresh_ttl = (int64_t)(cfg->jwt.refresh_ttl_ms / 1000);
	ac.leeway = (int64_t)(cfg->jwt.leeway_ms / 1000);
	gw.auth = auth_ctx_new(&ac, err, errlen);
	return gw.auth != NULL ? 0 : -1;
}

static int
gatewayd_identity_start(const struct config *cfg, char *err, size_t errlen)
{
	struct store *st = store_open(cfg->database, err, errlen);
	int64_t now = (int64_t)time(NULL);
	int nkeys = 0, nusers = 0, nblocks = 0, nbans = 0, nrevoked = 0;
	char secret[256], shown[1024];
	int r = -1;

	if (st == NULL)
		return -1;
	identity_init();
	gw.auth_cache = auth_cache_new(GATEWAYD_TOKEN_CACHE);
	gw.id_limiter = ratelimit_new(GATEWAYD_ID_LIMITER_KEYS);
	if (gatewayd_secret(st, secret, sizeof(secret), err, errlen) != 0 ||
	    gatewayd_auth_ctx(cfg, secret, err, errlen) != 0)
		goto out;
	if (store_key_all(st, gatewayd_load_key, &nkeys) != 0 ||
	    store_user_list(st, gatewayd_load_user, &nusers) != 0 ||
	    store_blocks_all(st, now, gatewayd_load_block, &nblocks) != 0 ||
	    store_bans_all(st, now, gatewayd_load_ban, &nbans) != 0 ||
	    store_revocations_all(st, now, gatewayd_load_revocation, &nrevoked) != 0) {
		snprintf(err, errlen, "database %s: %s",
			 store_url_redact(cfg->database, shown, sizeof(shown)), store_error(st));
		goto out;
	}
	log_info("identity: %d users, %d API keys, %d blocks, %d bans, %d revoked tokens loaded "
		 "from %s",
		 nusers, nkeys, nblocks, nbans, nrevoked,
		 store_url_redact(cfg->database, shown, sizeof(shown)));
	r = jobs_start(GATEWAYD_JOB_THREADS, cfg->database, err, errlen);
out:
	explicit_bzero(secret, sizeof(secret));
	store_close(st);
	return r;
}

static void
usage(void)
{
	fprintf(stderr, "usage: gatewayd [-ftv] [-c file] [-d key=value] [-p pidfile]\n"
			"       gatewayd [-c file] --migrate-status | --fresh-db --yes\n"
			"       gatewayd --migrate-db FROM TO\n");
	exit(2);
}

static void
gatewayd_reload(void)
{
	char err[1024];

	if (runtime_reload(NULL, 1, err, sizeof(err)) != 0) {
		log_warnx("reload refused, keeping the running configuration: %s", err);
		return;
	}
	health_kick();
}

static void
gatewayd_signal(evutil_socket_t sig, short what, void *arg)
{
	switch (sig) {
	case SIGHUP:
		gatewayd_reload();
		break;
	case SIGUSR1: /* logrotate moved the access log away */
		accesslog_reopen();
		log_info("SIGUSR1: reopening the access log");
		break;
	case SIGTERM:
	case SIGINT:
		log_info("received %s: draining in-flight requests", sig == SIGTERM ? "SIGTERM"
										      : "SIGINT");
		event_base_loopbreak(main_base);
		break;
	}
}

/* --migrate-status and --fresh-db: database maintenance, then exit. */
static int
gatewayd_db_command(struct config *cfg, int status, int yes)
{
	char buf[8192], shown[4096];
	int r;

	/* the URL is shown with its password masked: this output lands in terminals,
	 * scripts' logs and CI transcripts */
	store_url_redact(cfg->database, shown, sizeof(shown));
	if (status) {
		r = store_migrate_status(cfg->database, buf, sizeof(buf));
		fprintf(r == 0 ? stdout : stderr, "%s%s", buf, r == 0 ? "" : "\n");
		config_free(cfg);
		return r == 0 ? 0 : 1;
	}
	if (!yes) {
		fprintf(stderr, "gatewayd: --fresh-db deletes every user, key, block and ban in %s; "
				"add --yes to do it\n",
			shown);
		config_free(cfg);
		return 1;
	}
	r = store_fresh(cfg->database, buf, sizeof(buf));
	if (r != 0)
		fprintf(stderr, "gatewayd: %s\n", buf);
	else
		printf("database %s recreated at schema version %d\n", shown,
		       store_schema_latest());
	config_free(cfg);
	return r == 0 ? 0 : 1;
}

/* --migrate-db FROM TO: copies a store (a bare FROM path is an SQLite file), then exits. */
static int
gatewayd_migrate_db(const char *from, const char *to)
{
	struct store_copy_counts n;
	char err[1024], url[4096], shown[4096];

	if (strchr(from, ':') == NULL) {
		snprintf(url, sizeof(url), "sqlite:%s", from);
		from = url;
	}
	if (store_copy(from, to, &n, err, sizeof(err)) != 0) {
		fprintf(stderr, "gatewayd: --migrate-db: %s\n", err);
		return 1;
	}
	printf("copied %d users, %d API keys, %d blocks, %d bans, %d revoked tokens, %d audit "
	       "entries and %d settings from %s\n",
	       n.users, n.keys, n.blocks, n.bans, n.revocations, n.audit, n.settings,
	       store_url_redact(from, shown, sizeof(shown)));
	return 0;
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
	struct event *sigs[5];
	sigset_t held;
	const int signums[5] = {SIGHUP, SIGTERM, SIGINT, SIGUSR1, 0};

	static const struct option longopts[] = {
		{"migrate-status", no_argument, NULL, 'M'},
		{"fresh-db", no_argument, NULL, 'F'},
		{"yes", no_argument, NULL, 'Y'},
		{"migrate-db", no_argument, NULL, 'D'},
		{NULL, 0, NULL, 0},
	};
	int migrate_status = 0, fresh_db = 0, yes = 0, migrate_db = 0;

	gw.overrides = xcalloc((size_t)argc + 1, sizeof(char *));
	while ((ch = getopt_long(argc, argv, "c:d:fp:tv", longopts, NULL)) != -1) {
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
		case 'M':
			migrate_status = 1;
			break;
		case 'F':
			fresh_db = 1;
			break;
		case 'Y':
			yes = 1;
			break;
		case 'D':
			migrate_db = 1;
			break;
		default:
			usage();
		}
	}
	if (migrate_db && optind + 2 == argc)
		return gatewayd_migrate_db(argv[optind], argv[optind + 1]);
	if (migrate_db || optind != argc)
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
	if (migrate_status || fresh_db)
		return gatewayd_db_command(cfg, migrate_status, yes);

	signal(SIGPIPE, SIG_IGN);
	/*
	 * Held until the main loop handles them: a SIGTERM that arrives while the threads
	 * start must drain, not kill. Every thread started from here inherits the mask, so
	 * only the main thread ever takes these signals.
	 */
	sigemptyset(&held);
	for (int i = 0; signums[i] != 0; i++)
		sigaddset(&held, signums[i]);
	pthread_sigmask(SIG_BLOCK, &held, NULL);
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
		if (daemon(1, 0) == -1) { /* keep the cwd: relative database paths */
			fprintf(stderr, "gatewayd: daemon: %s\n", strerror(errno));
			return 1;
		}
		gatewayd_pidfile(pidfile);
	}
	log_init(foreground, "gatewayd");
	if (gatewayd_identity_start(cfg, err, sizeof(err)) != 0) {
		log_warnx("%s", err);
		return 1;
	}
	if (redis_start(cfg, err, sizeof(err)) != 0 ||
	    worker_start_all(rt, err, sizeof(err)) == -1) {
		log_warnx("%s", err);
		return 1;
	}
	log_info("gatewayd started: %d workers, %d backends, strategy %s, listening on %s%s",
		 gw.nworkers, cfg->nbackends, balance_strategy_name(cfg->strategy),
		 cfg->listens[0].text, cfg->nlistens > 1 ? " and more" : "");
	if (control_start(cfg, err, sizeof(err)) != 0) {
		log_warnx("%s", err);
		return 1;
	}
	if (publish_start(cfg, err, sizeof(err)) != 0 ||
	    accesslog_start(cfg, err, sizeof(err)) != 0) {
		log_warnx("%s", err);
		return 1;
	}
	if (gw.admin_token == NULL)
		log_info("GATEWAYD_ADMIN_TOKEN is not set: admin endpoints answer 401");

	main_base = event_base_new();
	for (int i = 0; signums[i] != 0; i++) {
		sigs[i] = evsignal_new(main_base, signums[i], gatewayd_signal, NULL);
		evsignal_add(sigs[i], NULL);
	}
	pthread_sigmask(SIG_UNBLOCK, &held, NULL);
	health_start(main_base);
	event_base_dispatch(main_base);

	control_stop();
	worker_stop_all(GATEWAYD_DRAIN_MS);
	accesslog_stop();
	publish_stop();
	redis_stop();
	jobs_stop();
	log_info("gatewayd stopped");
	if (!foreground)
		unlink(pidfile);
	return 0;
}
