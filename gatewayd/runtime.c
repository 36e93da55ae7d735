#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "accesslog.h"
#include "cidr.h"
#include "geo.h"
#include "gw.h"
#include "log.h"
#include "tls.h"
#include "worker.h"
#include "xmalloc.h"

struct gw gw;

/* Orders runtime_publish against runtime_acquire (threads other than the main one). */
static pthread_mutex_t runtime_lock = PTHREAD_MUTEX_INITIALIZER;

static struct backend *
runtime_find_backend(const struct runtime *old, const struct config_backend *cb)
{
	if (old == NULL)
		return NULL;
	for (int i = 0; i < old->nbackends; i++) {
		struct backend *b = old->backends[i];
		if (strcmp(b->id, cb->id) == 0 && strcmp(b->dc, cb->dc) == 0 && b->addrlen == cb->addrlen &&
		    memcmp(&b->addr, &cb->addr, cb->addrlen) == 0)
			return b;
	}
	return NULL;
}

static struct cidr_tree *
runtime_tree(const struct cidr *list, int n)
{
	static int present = 1;
	struct cidr_tree *t = cidr_tree_new();

	for (int i = 0; i < n; i++)
		cidr_tree_insert(t, &list[i], &present, NULL);
	return t;
}

/*
 * The TLS contexts of cfg's listen lines, certificates read again from disk (SIGHUP
 * after renewing them). config_load checked each pair already; a file that went bad
 * since keeps the context of the same listen line in old.
 */
static SSL_CTX **
runtime_tls_ctxs(const struct config *cfg, const struct runtime *old)
{
	SSL_CTX **ctx = xcalloc((size_t)cfg->nlistens + 1, sizeof(*ctx));

	for (int i = 0; i < cfg->nlistens; i++) {
		const struct config_listen *l = &cfg->listens[i];
		char err[512];

		if (!l->tls || (ctx[i] = tls_server_ctx(l->cert, l->key, err, sizeof(err))) != NULL)
			continue;
		log_warnx("listen %s: %s; keeping the certificate in use", l->text, err);
		for (int k = 0; old != NULL && k < old->cfg->nlistens; k++)
			if (old->tls_ctx[k] != NULL && strcmp(old->cfg->listens[k].text, l->text) == 0 &&
			    SSL_CTX_up_ref(old->tls_ctx[k]) == 1)
				ctx[i] = old->tls_ctx[k];
	}
	return ctx;
}

struct runtime *
runtime_build(struct config *cfg, const struct runtime *old)
{
	struct runtime *rt = xcalloc(1, sizeof(*rt));

	atomic_init(&rt->refs, 1);
	rt->cfg = cfg;
	rt->nbackends = cfg->nbackends;
	rt->backends = xcalloc((size_t)cfg->nbackends, sizeof(*rt->backends));
	for (int i = 0; i < cfg->nbackends; i++) {
		const struct config_backend *cb = &cfg->backends[i];
		struct backend *b = runtime_find_backend(old, cb);

		if (b != NULL) {
			/* Same backend: keep its health, circuit and pools; take new knobs. */
			backend_ref(b);
			atomic_store(&b->weight, cb->weight);
			atomic_store(&b->max_conns, cb->max_conns);
			circuit_configure(&b->circuit, (uint32_t)cfg->circuit.failures,
					  cfg->circuit.open_ms);
		} else {
			b = backend_new(cb, cfg);
		}
		rt->backends[i] = b;
	}
	rt->trusted = runtime_tree(cfg->trusted_proxy, cfg->ntrusted_proxy);
	rt->exempt = runtime_tree(cfg->ip_limit_exempt, cfg->nip_limit_exempt);
	rt->admin_allow = runtime_tree(cfg->admin_allow, cfg->nadmin_allow);
	rt->geo = geo_new(cfg, old != NULL ? old->geo : NULL);
	rt->limits.max_head = (uint32_t)cfg->limits.header;
	rt->limits.max_headers = (uint32_t)cfg->limits.headers;
	rt->limits.max_uri = (uint32_t)cfg->limits.uri;
	rt->tls_ctx = runtime_tls_ctxs(cfg, old);
	rt->generation = atomic_fetch_add(&gw.rt_generation, 1) + 1;
	return rt;
}

void
runtime_ref(struct runtime *rt)
{
	atomic_fetch_add_explicit(&rt->refs, 1, memory_order_relaxed);
}

void
runtime_unref(struct runtime *rt)
{
	if (atomic_fetch_sub_explicit(&rt->refs, 1, memory_order_acq_rel) != 1)
		return;
	for (int i = 0; i < rt->nbackends; i++)
		backend_unref(rt->backends[i]);
	free(rt->backends);
	cidr_tree_free(rt->trusted, NULL);
	cidr_tree_free(rt->exempt, NULL);
	cidr_tree_free(rt->admin_allow, NULL);
	geo_free(rt->geo);
	for (int i = 0; i < rt->cfg->nlistens; i++)
		SSL_CTX_free(rt->tls_ctx[i]);
	free(rt->tls_ctx);
	config_free(rt->cfg);
	free(rt);
}

void
runtime_publish(struct runtime *rt)
{
	struct runtime *old;

	pthread_mutex_lock(&runtime_lock);
	old = atomic_exchange_explicit(&gw.rt, rt, memory_order_acq_rel);
	pthread_mutex_unlock(&runtime_lock);

	if (old != NULL)
		runtime_unref(old);
}

struct runtime *
runtime_get(void)
{
	/* The publisher (the main thread) is the only one that drops gw.rt's reference,
	 * so taking one here from that same thread, or under its coordination, is safe. */
	struct runtime *rt = atomic_load_explicit(&gw.rt, memory_order_acquire);

	runtime_ref(rt);
	return rt;
}

struct runtime *
runtime_acquire(void)
{
	struct runtime *rt;

	/* Under the lock the published runtime still holds gw.rt's reference: taking ours
	 * before the publisher can drop that one makes this safe from any thread. */
	pthread_mutex_lock(&runtime_lock);
	rt = atomic_load_explicit(&gw.rt, memory_order_acquire);
	runtime_ref(rt);
	pthread_mutex_unlock(&runtime_lock);
	return rt;
}

/* One reload at a time: SIGHUP on the main thread, gatectl on the control thread. */
static pthread_mutex_t runtime_reload_lock = PTHREAD_MUTEX_INITIALIZER;

/* gw.overrides becomes ov; the old list is freed with its strings that ov does not keep. */
static void
runtime_overrides_replace(char **ov)
{
	char **old = gw.overrides;

	for (int i = 0; old != NULL && old[i] != NULL; i++) {
		int kept = 0;

		for (int k = 0; ov[k] != NULL && !kept; k++)
			kept = ov[k] == old[i];
		if (!kept)
			free(old[i]);
	}
	free(old);
	gw.overrides = ov;
}

int
runtime_reload(char **overrides, int take_strategy, char *err, size_t errlen)
{
	struct config *cfg;
	struct runtime *old, *rt;

	pthread_mutex_lock(&runtime_reload_lock);
	cfg = config_load(gw.config_path, overrides != NULL ? overrides : gw.overrides, err,
			  errlen);
	if (cfg == NULL) {
		pthread_mutex_unlock(&runtime_reload_lock);
		return -1;
	}
	if (overrides != NULL)
		runtime_overrides_replace(overrides);
	old = runtime_acquire();
	if (cfg->nlistens != old->cfg->nlistens)
		log_warnx("reload: listen lines changed; they take effect at the next restart");
	rt = runtime_build(cfg, old);
	runtime_unref(old);
	if (take_strategy)
		atomic_store(&gw.strategy, cfg->strategy);
	accesslog_reconfigure(cfg);
	accesslog_reopen();
	runtime_publish(rt);
	worker_notify_all();
	log_info("configuration reloaded (%d backends, strategy %s)", cfg->nbackends,
		 balance_strategy_name(atomic_load(&gw.strategy)));
	pthread_mutex_unlock(&runtime_reload_lock);
	return 0;
}
