/* Unit tests of gatewayd.conf loading (gatewayd/config.c): every directive, every error. */
#include <arpa/inet.h>
#include <dlfcn.h>
#include <netdb.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "balance.h"
#include "config.h"

/*
 * Names under .invalid (RFC 6761) fail here, as they would anywhere, without asking a
 * DNS server: tests must not depend on one.
 */
int
getaddrinfo(const char *node, const char *service, const struct addrinfo *hints,
            struct addrinfo **res)
{
	static int (*real)(const char *, const char *, const struct addrinfo *, struct addrinfo **);
	size_t n = node != NULL ? strlen(node) : 0;

	if (n > 8 && strcmp(node + n - 8, ".invalid") == 0)
		return EAI_NONAME;
	if (real == NULL)
		*(void **)&real = dlsym(RTLD_NEXT, "getaddrinfo");
	return real(node, service, hints, res);
}

/* Appended to most test texts, after their lines, so that line numbers stay theirs. */
#define TAIL "\nbackend zz 127.0.0.1:1\n"

static char errbuf[1024];

static struct config *
load_ov(const char *text, char *const *ov)
{
	errbuf[0] = '\0';
	return config_load_text("t.conf", text, ov, errbuf, sizeof errbuf);
}

static struct config *
raw_ok(const char *text)
{
	struct config *c = load_ov(text, NULL);

	if (c == NULL)
		fail_msg("unexpected error: %s", errbuf);
	return c;
}

static void
raw_err(const char *text, const char *expect)
{
	struct config *c = load_ov(text, NULL);

	assert_null(c);
	assert_string_equal(errbuf, expect);
}

static struct config *
cfg_ok(const char *text)
{
	char buf[4096];

	snprintf(buf, sizeof buf, "%s%s", text, TAIL);
	return raw_ok(buf);
}

static void
cfg_err(const char *text, const char *expect)
{
	char buf[4096];

	snprintf(buf, sizeof buf, "%s%s", text, TAIL);
	raw_err(buf, expect);
}

static const char *
addr_text(const struct sockaddr_storage *ss, char *buf, size_t len)
{
	const void *a = ss->ss_family == AF_INET
	                    ? (const void *)&((const struct sockaddr_in *)ss)->sin_addr
	                    : (const void *)&((const struct sockaddr_in6 *)ss)->sin6_addr;

	return inet_ntop(ss->ss_family, a, buf, (socklen_t)len);
}

static int
addr_port(const struct sockaddr_storage *ss)
{
	return ntohs(ss->ss_family == AF_INET ? ((const struct sockaddr_in *)ss)->sin_port
	                                      : ((const struct sockaddr_in6 *)ss)->sin6_port);
}

/* Loads text (with TAIL) and returns the int at offset off of the struct config. */
static int
cfg_int(const char *text, size_t off)
{
	struct config *c = cfg_ok(text);
	int v;

	memcpy(&v, (const char *)c + off, sizeof v);
	config_free(c);
	return v;
}

/* A temporary file with some content; the caller unlinks it. */
static void
temp_file(char *path, size_t len, const char *content)
{
	int fd;

	snprintf(path, len, "/tmp/test_config.XXXXXX");
	fd = mkstemp(path);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, content, strlen(content)), (ssize_t)strlen(content));
	close(fd);
}

/*
 * A real self-signed certificate and its key in two temporary files (the loader checks
 * that they parse and match). The caller unlinks them.
 */
static void
temp_cert_pair(char *cert, size_t clen, char *key, size_t klen)
{
	EVP_PKEY *pk = EVP_EC_gen("P-256");
	X509 *x = X509_new();
	FILE *f;

	assert_non_null(pk);
	assert_non_null(x);
	ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
	X509_gmtime_adj(X509_getm_notBefore(x), 0);
	X509_gmtime_adj(X509_getm_notAfter(x), 3600);
	X509_set_pubkey(x, pk);
	X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC,
	                           (const unsigned char *)"localhost", -1, -1, 0);
	X509_set_issuer_name(x, X509_get_subject_name(x));
	assert_true(X509_sign(x, pk, EVP_sha256()) > 0);
	temp_file(cert, clen, "");
	temp_file(key, klen, "");
	f = fopen(cert, "w");
	assert_non_null(f);
	assert_true(PEM_write_X509(f, x));
	fclose(f);
	f = fopen(key, "w");
	assert_non_null(f);
	assert_true(PEM_write_PrivateKey(f, pk, NULL, NULL, 0, NULL, NULL));
	fclose(f);
	X509_free(x);
	EVP_PKEY_free(pk);
}

/* ---- defaults and the embedded configuration ---- */

static void
test_defaults(void **state)
{
	struct config *c = cfg_ok("");
	char a[64];

	assert_string_equal(c->file, "t.conf");
	assert_int_equal(c->workers, 0);
	assert_int_equal(c->strategy, BALANCE_ROUND_ROBIN);
	assert_int_equal(c->timeouts.connect_ms, 2000);
	assert_int_equal(c->timeouts.response_ms, 30000);
	assert_int_equal(c->timeouts.client_header_ms, 10000);
	assert_int_equal(c->timeouts.client_idle_ms, 60000);
	assert_int_equal(c->limits.header, 32 * 1024);
	assert_int_equal(c->limits.headers, 100);
	assert_int_equal(c->limits.body, 1024 * 1024);
	assert_int_equal(c->limits.uri, 8 * 1024);
	assert_int_equal(c->limits.conns, 0);
	assert_int_equal(c->limits.conns_per_ip, 0);
	assert_int_equal(c->limits.min_body_rate, 500);
	assert_int_equal(c->timeouts.client_body_ms, 20000);
	assert_string_equal(c->health.path, "/health");
	assert_int_equal(c->health.interval_ms, 10000);
	assert_int_equal(c->health.timeout_ms, 2000);
	assert_int_equal(c->health.rise, 2);
	assert_int_equal(c->health.fall, 2);
	assert_int_equal(c->circuit.failures, 5);
	assert_int_equal(c->circuit.open_ms, 30000);
	assert_int_equal(c->retries, 1);
	assert_int_equal(c->queue.max, 1024);
	assert_int_equal(c->queue.timeout_ms, 5000);
	assert_int_equal(c->ip_limit.count, 100);
	assert_int_equal(c->ip_limit.period_ms, 60000);
	assert_int_equal(c->nip_limit_exempt, 0);
	assert_int_equal(c->ntrusted_proxy, 0);
	assert_int_equal(c->ndatacenters, 0);
	assert_int_equal(c->nlistens, 1);
	assert_string_equal(c->listens[0].text, "0.0.0.0:8080");
	assert_string_equal(addr_text(&c->listens[0].addr, a, sizeof a), "0.0.0.0");
	assert_int_equal(addr_port(&c->listens[0].addr), 8080);
	assert_int_equal(c->listens[0].tls, 0);
	assert_int_equal(c->nroutes, 1);
	assert_string_equal(c->routes[0].prefix, "/");
	assert_int_equal(c->routes[0].auth, CONFIG_AUTH_NONE);
	config_free(c);
}

static void
test_default_admin_allow(void **state)
{
	struct config *c = cfg_ok("");
	struct cidr lo, v6;

	assert_int_equal(cidr_parse("127.0.0.0/8", &lo), 0);
	assert_int_equal(cidr_parse("::1", &v6), 0);
	assert_int_equal(c->nadmin_allow, 2);
	assert_memory_equal(&c->admin_allow[0], &lo, sizeof lo);
	assert_memory_equal(&c->admin_allow[1], &v6, sizeof v6);
	config_free(c);
}

/* SPEC section 2's embedded default, minus what this version refuses (see config.c). */
static void
test_embedded_default_loads(void **state)
{
	static const struct {
		const char *id, *dc;
		int port, weight;
	} backends[] = {
	    {"b1", "us-east", 5001, 2}, {"b2", "eu-west", 5002, 1}, {"b3", "ap-south", 5003, 1}};
	static const struct {
		const char *name;
		double lat, lon;
	} dcs[] = {
	    {"us-east", 39.04, -77.49}, {"eu-west", 53.35, -6.26}, {"ap-south", 1.35, 103.82}};
	struct config *c = config_load(NULL, NULL, errbuf, sizeof errbuf);
	char a[64];

	assert_non_null(c);
	assert_string_equal(c->file, "");
	assert_int_equal(c->nlistens, 1);
	assert_string_equal(c->listens[0].text, "0.0.0.0:8080");
	assert_int_equal(addr_port(&c->listens[0].addr), 8080);
	assert_int_equal(c->strategy, BALANCE_ROUND_ROBIN);
	assert_int_equal(c->nbackends, 3);
	assert_int_equal(c->ndatacenters, 3);
	for (int i = 0; i < 3; i++) {
		const struct config_backend *b = &c->backends[i];
		const struct config_datacenter *d = &c->datacenters[i];

		assert_string_equal(b->id, backends[i].id);
		assert_string_equal(b->dc, backends[i].dc);
		assert_string_equal(addr_text(&b->addr, a, sizeof a), "127.0.0.1");
		assert_int_equal(b->port, backends[i].port);
		assert_int_equal(b->weight, backends[i].weight);
		assert_int_equal(b->max_conns, 256);
		assert_string_equal(d->name, dcs[i].name);
		assert_true(d->lat > dcs[i].lat - 1e-9 && d->lat < dcs[i].lat + 1e-9);
		assert_true(d->lon > dcs[i].lon - 1e-9 && d->lon < dcs[i].lon + 1e-9);
	}
	/* longest prefix first */
	assert_int_equal(c->nroutes, 3);
	assert_string_equal(c->routes[0].prefix, "/api/v2/premium");
	assert_int_equal(c->routes[0].auth, CONFIG_AUTH_JWT);
	assert_string_equal(c->routes[0].min_tier, "premium");
	assert_string_equal(c->routes[1].prefix, "/api/v2/");
	assert_int_equal(c->routes[1].auth, CONFIG_AUTH_JWT);
	assert_string_equal(c->routes[2].prefix, "/");
	assert_int_equal(c->routes[2].auth, CONFIG_AUTH_NONE);
	assert_int_equal(c->routes[2].cache, 1);
	assert_int_equal(c->cache.ttl_ms, 30000);
	assert_int_equal(c->cache.max_memory, 64 << 20);
	assert_string_equal(c->database, "sqlite:gatewayd.db");
	assert_int_equal(c->nadmin_allow, 2);
	config_free(c);
}

static void
test_embedded_default_with_override(void **state)
{
	char *ov[] = {"listen=127.0.0.1:9000", "strategy=ip_hash", NULL};
	struct config *c = config_load(NULL, ov, errbuf, sizeof errbuf);

	assert_non_null(c);
	assert_int_equal(c->nlistens, 1);
	assert_string_equal(c->listens[0].text, "127.0.0.1:9000");
	assert_int_equal(c->strategy, BALANCE_IP_HASH);
	config_free(c);
}

/* ---- listen ---- */

static void
test_listen_addresses(void **state)
{
	struct config *c = cfg_ok("listen 127.0.0.1:9000\nlisten [::1]:8443\nlisten *:81\n"
	                          "listen :82");
	char a[64];

	assert_int_equal(c->nlistens, 4);
	assert_string_equal(addr_text(&c->listens[0].addr, a, sizeof a), "127.0.0.1");
	assert_int_equal(addr_port(&c->listens[0].addr), 9000);
	assert_int_equal(c->listens[0].addrlen, sizeof(struct sockaddr_in));
	assert_int_equal(c->listens[1].addr.ss_family, AF_INET6);
	assert_string_equal(addr_text(&c->listens[1].addr, a, sizeof a), "::1");
	assert_int_equal(addr_port(&c->listens[1].addr), 8443);
	assert_string_equal(c->listens[1].text, "[::1]:8443");
	assert_string_equal(addr_text(&c->listens[2].addr, a, sizeof a), "0.0.0.0");
	assert_int_equal(addr_port(&c->listens[2].addr), 81);
	assert_string_equal(addr_text(&c->listens[3].addr, a, sizeof a), "0.0.0.0");
	assert_int_equal(addr_port(&c->listens[3].addr), 82);
	config_free(c);
}

static void
test_listen_errors(void **state)
{
	cfg_err("listen 127.0.0.1", "t.conf:1: listen: expected HOST:PORT (port 1..65535, IPv6 in "
	                            "brackets), got \"127.0.0.1\"");
	cfg_err("listen 1.2.3.4:0", "t.conf:1: listen: expected HOST:PORT (port 1..65535, IPv6 in "
	                            "brackets), got \"1.2.3.4:0\"");
	cfg_err("listen localhost:80",
	        "t.conf:1: listen: \"localhost\" is not a numeric IP address");
	cfg_err("listen 300.1.1.1:80",
	        "t.conf:1: listen: \"300.1.1.1\" is not a numeric IP address");
	cfg_err("\nlisten 0.0.0.0:80\nlisten 0.0.0.0:80",
	        "t.conf:3: listen: 0.0.0.0:80 is already configured");
	cfg_err("listen 0.0.0.0:80 ssl", "t.conf:1: listen: expected 'tls' after the address, got "
	                                 "\"ssl\"");
	cfg_err("listen", "t.conf:1: listen: wrong number of arguments (usage: listen ADDR:PORT "
	                  "[tls cert=FILE key=FILE])");
}

static void
test_listen_tls(void **state)
{
	char cert[64], key[64], text[512];
	struct config *c;

	temp_cert_pair(cert, sizeof cert, key, sizeof key);
	snprintf(text, sizeof text, "listen 0.0.0.0:8443 tls cert=%s key=%s\nlisten 0.0.0.0:8080",
	         cert, key);
	c = cfg_ok(text);
	assert_int_equal(c->nlistens, 2);
	assert_int_equal(c->listens[0].tls, 1);
	assert_string_equal(c->listens[0].cert, cert);
	assert_string_equal(c->listens[0].key, key);
	assert_int_equal(c->listens[1].tls, 0);
	config_free(c);

	snprintf(text, sizeof text, "listen 0.0.0.0:8443 tls cert=%s", cert);
	cfg_err(text, "t.conf:1: listen: missing option key=");
	cfg_err("listen 0.0.0.0:8443 tls", "t.conf:1: listen: missing option cert=");
	snprintf(text, sizeof text, "listen 0.0.0.0:8443 tls cert=%s key=/nonexistent/k.pem", cert);
	cfg_err(text, "t.conf:1: listen: cannot read key file \"/nonexistent/k.pem\": No such file "
	              "or directory");
	snprintf(text, sizeof text, "listen 0.0.0.0:8443 tls cert=/tmp key=%s", key);
	cfg_err(text, "t.conf:1: listen: cert file \"/tmp\" is not a regular file");
	snprintf(text, sizeof text, "listen 0.0.0.0:8443 tls cert=%s key=%s ca=x", cert, key);
	cfg_err(text, "t.conf:1: listen: unknown option 'ca'");
	/* a file that is not a certificate, and a key that is not this certificate's */
	char junk[64], cert2[64], key2[64];
	temp_file(junk, sizeof junk, "not a certificate\n");
	snprintf(text, sizeof text, "listen 0.0.0.0:8443 tls cert=%s key=%s", junk, key);
	c = config_load_text("t.conf", text, NULL, errbuf, sizeof errbuf);
	assert_null(c);
	assert_non_null(strstr(errbuf, "t.conf:1: listen: tls: certificate"));
	temp_cert_pair(cert2, sizeof cert2, key2, sizeof key2);
	snprintf(text, sizeof text, "listen 0.0.0.0:8443 tls cert=%s key=%s", cert, key2);
	c = config_load_text("t.conf", text, NULL, errbuf, sizeof errbuf);
	assert_null(c);
	assert_non_null(strstr(errbuf, "t.conf:1: listen: tls: "));
	unlink(junk);
	unlink(cert2);
	unlink(key2);
	unlink(cert);
	unlink(key);
}

/* ---- workers, strategy ---- */

static void
test_workers(void **state)
{
	assert_int_equal(cfg_int("workers 4", offsetof(struct config, workers)), 4);
	assert_int_equal(cfg_int("workers auto", offsetof(struct config, workers)), 0);
	assert_int_equal(cfg_int("workers 64", offsetof(struct config, workers)), 64);
	cfg_err("workers 0", "t.conf:1: workers: must be auto or 1..64, got \"0\"");
	cfg_err("workers 65", "t.conf:1: workers: must be auto or 1..64, got \"65\"");
	cfg_err("workers many", "t.conf:1: workers: must be auto or 1..64, got \"many\"");
	cfg_err("workers 1 2",
	        "t.conf:1: workers: wrong number of arguments (usage: workers auto|1..64)");
}

static void
test_strategy(void **state)
{
	for (int i = 0; i < BALANCE_COUNT; i++) {
		char text[64];

		snprintf(text, sizeof text, "strategy %s", balance_strategy_name(i));
		assert_int_equal(cfg_int(text, offsetof(struct config, strategy)), i);
	}
}

static void
test_strategy_unknown(void **state)
{
	char expect[256];

	snprintf(expect, sizeof expect,
	         "t.conf:2: strategy: unknown strategy 'fastest' (valid: %s)",
	         balance_strategy_list());
	cfg_err("# comment\nstrategy fastest", expect);
}

/* ---- backend ---- */

static void
test_backend_full(void **state)
{
	struct config *c = raw_ok("backend api-1.x 127.0.0.2:7001 weight=1000 dc=eu max_conns=5\n"
	                          "backend b2 [::1]:7002\n");
	char a[64];

	assert_int_equal(c->nbackends, 2);
	assert_string_equal(c->backends[0].id, "api-1.x");
	assert_string_equal(c->backends[0].host, "127.0.0.2");
	assert_int_equal(c->backends[0].port, 7001);
	assert_string_equal(addr_text(&c->backends[0].addr, a, sizeof a), "127.0.0.2");
	assert_int_equal(addr_port(&c->backends[0].addr), 7001);
	assert_int_equal(c->backends[0].addrlen, sizeof(struct sockaddr_in));
	assert_int_equal(c->backends[0].weight, 1000);
	assert_string_equal(c->backends[0].dc, "eu");
	assert_int_equal(c->backends[0].max_conns, 5);
	assert_string_equal(c->backends[1].host, "::1");
	assert_int_equal(c->backends[1].addr.ss_family, AF_INET6);
	assert_int_equal(c->backends[1].weight, 1);
	assert_int_equal(c->backends[1].max_conns, 256);
	assert_string_equal(c->backends[1].dc, "");
	config_free(c);
}

static void
test_backend_name_resolves(void **state)
{
	struct config *c = raw_ok("backend b1 localhost:5001");
	char a[64];

	assert_string_equal(c->backends[0].host, "localhost");
	assert_string_equal(addr_text(&c->backends[0].addr, a, sizeof a), "127.0.0.1");
	assert_int_equal(addr_port(&c->backends[0].addr), 5001);
	config_free(c);
}

static void
test_backend_unresolvable(void **state)
{
	char expect[256];

	snprintf(expect, sizeof expect, "t.conf:1: backend: cannot resolve \"nosuch.invalid\": %s",
	         gai_strerror(EAI_NONAME));
	raw_err("backend b1 nosuch.invalid:80", expect);
	raw_err("backend b1 bad!host:80", "t.conf:1: backend: bad host name \"bad!host\"");
	raw_err("backend b1 :80", "t.conf:1: backend: bad host name \"\"");
	raw_err("backend b1 127.0.0.1", "t.conf:1: backend: expected HOST:PORT (port 1..65535, "
	                                "IPv6 in brackets), got \"127.0.0.1\"");
}

static void
test_backend_weight(void **state)
{
	raw_err("\n\nbackend b1 127.0.0.1:1 weight=abc",
	        "t.conf:3: backend: weight must be 1..1000, got \"abc\"");
	raw_err("backend b1 127.0.0.1:1 weight=0", "t.conf:1: backend: weight must be 1..1000, got "
	                                           "\"0\"");
	raw_err("backend b1 127.0.0.1:1 weight=1001",
	        "t.conf:1: backend: weight must be 1..1000, got \"1001\"");
	raw_err("backend b1 127.0.0.1:1 weight=", "t.conf:1: backend: weight must be 1..1000, got "
	                                          "\"\"");
}

static void
test_backend_max_conns(void **state)
{
	struct config *c = raw_ok("backend b1 127.0.0.1:1 max_conns=100000");

	assert_int_equal(c->backends[0].max_conns, 100000);
	config_free(c);
	raw_err("backend b1 127.0.0.1:1 max_conns=0",
	        "t.conf:1: backend: max_conns must be 1..100000, got \"0\"");
	raw_err("backend b1 127.0.0.1:1 max_conns=-5",
	        "t.conf:1: backend: max_conns must be 1..100000, got \"-5\"");
}

static void
test_backend_options_errors(void **state)
{
	raw_err("backend b1 127.0.0.1:1 wieght=2", "t.conf:1: backend: unknown option 'wieght'");
	raw_err("backend b1 127.0.0.1:1 heavy", "t.conf:1: backend: expected key=value, got "
	                                        "\"heavy\"");
	raw_err("backend b1 127.0.0.1:1 =2", "t.conf:1: backend: expected key=value, got \"=2\"");
	raw_err("backend b1 127.0.0.1:1 weight=2 weight=3",
	        "t.conf:1: backend: option 'weight' given twice");
	raw_err(
	    "backend b1 127.0.0.1:1 dc=us/east",
	    "t.conf:1: backend: dc must be 1..63 characters of [A-Za-z0-9._-], got \"us/east\"");
	raw_err("backend b1", "t.conf:1: backend: wrong number of arguments (usage: backend ID "
	                      "HOST:PORT [weight=N] [dc=NAME] [max_conns=N])");
}

static void
test_backend_ids(void **state)
{
	char text[256], expect[256], id[70];

	raw_err("backend b1 127.0.0.1:1\nbackend b1 127.0.0.1:2",
	        "t.conf:2: backend: duplicate id 'b1'");
	raw_err("backend b/1 127.0.0.1:1",
	        "t.conf:1: backend: id must be 1..63 characters of [A-Za-z0-9._-], got \"b/1\"");
	raw_err("backend \"\" 127.0.0.1:1",
	        "t.conf:1: backend: id must be 1..63 characters of [A-Za-z0-9._-], got \"\"");
	memset(id, 'a', 64);
	id[64] = '\0';
	snprintf(text, sizeof text, "backend %s 127.0.0.1:1", id);
	snprintf(expect, sizeof expect,
	         "t.conf:1: backend: id must be 1..63 characters of [A-Za-z0-9._-], got \"%s\"",
	         id);
	raw_err(text, expect);
	id[63] = '\0';
	snprintf(text, sizeof text, "backend %s 127.0.0.1:1", id);
	config_free(raw_ok(text));
}

static void
test_backend_count_limit(void **state)
{
	size_t len = (BALANCE_MAX_TARGETS + 1) * 32;
	char *text = malloc(len), expect[64];
	size_t n = 0;
	struct config *c;

	for (int i = 0; i < BALANCE_MAX_TARGETS; i++)
		n += (size_t)snprintf(text + n, len - n, "backend b%d 127.0.0.1:%d\n", i, 1000 + i);
	c = raw_ok(text);
	assert_int_equal(c->nbackends, BALANCE_MAX_TARGETS);
	config_free(c);
	snprintf(text + n, len - n, "backend extra 127.0.0.1:1\n");
	snprintf(expect, sizeof expect, "t.conf:%d: backend: at most %d backends",
	         BALANCE_MAX_TARGETS + 1, BALANCE_MAX_TARGETS);
	raw_err(text, expect);
	free(text);
}

static void
test_backend_required(void **state)
{
	raw_err("", "t.conf: at least one 'backend' is required");
	raw_err("# nothing\nworkers 2\n", "t.conf: at least one 'backend' is required");
}

/* ---- datacenter ---- */

static void
test_datacenter(void **state)
{
	struct config *c = cfg_ok("datacenter us-east lat=39.04 lon=-77.49\n"
	                          "datacenter south lat=-90 lon=180");

	assert_int_equal(c->ndatacenters, 2);
	assert_string_equal(c->datacenters[0].name, "us-east");
	assert_true(c->datacenters[0].lat > 39.03 && c->datacenters[0].lat < 39.05);
	assert_true(c->datacenters[0].lon > -77.5 && c->datacenters[0].lon < -77.48);
	assert_true(c->datacenters[1].lat == -90.0);
	assert_true(c->datacenters[1].lon == 180.0);
	config_free(c);
}

static void
test_datacenter_errors(void **state)
{
	cfg_err("datacenter x lat=91 lon=0", "t.conf:1: datacenter: lat must be a number from -90 "
	                                     "to 90, got \"91\"");
	cfg_err("datacenter x lat=0 lon=-180.01",
	        "t.conf:1: datacenter: lon must be a number from -180 to 180, got \"-180.01\"");
	cfg_err("datacenter x lat=1", "t.conf:1: datacenter: missing option lon=");
	cfg_err("datacenter x lon=1", "t.conf:1: datacenter: missing option lat=");
	cfg_err("datacenter x lat=north lon=1",
	        "t.conf:1: datacenter: lat must be a number from -90 to 90, got \"north\"");
	cfg_err("datacenter x lat=1 lon=1\ndatacenter x lat=2 lon=2",
	        "t.conf:2: datacenter: duplicate name 'x'");
	cfg_err(
	    "datacenter a:b lat=1 lon=1",
	    "t.conf:1: datacenter: name must be 1..63 characters of [A-Za-z0-9._-], got \"a:b\"");
}

static void
test_backend_dc_declared(void **state)
{
	/* datacenters may come after the backends that name them */
	struct config *c = raw_ok("backend b1 127.0.0.1:1 dc=eu\n"
	                          "datacenter eu lat=1 lon=1\n");

	assert_string_equal(c->backends[0].dc, "eu");
	config_free(c);
	raw_err("backend b1 127.0.0.1:1 dc=eu\n"
	        "backend b2 127.0.0.1:2 dc=us\n"
	        "datacenter eu lat=1 lon=1\n",
	        "t.conf:2: backend: dc 'us' is not a declared datacenter");
	/* a label only, when no datacenter is declared */
	c = raw_ok("backend b1 127.0.0.1:1 dc=anything");
	config_free(c);
	/* backends without dc are fine beside datacenters */
	c = raw_ok("backend b1 127.0.0.1:1\ndatacenter eu lat=1 lon=1");
	config_free(c);
}

/* ---- timeouts, limits, health_check, circuit, retries, queue ---- */

static void
test_timeouts(void **state)
{
	struct config *c = cfg_ok("timeouts connect=500ms client_idle=5m");

	assert_int_equal(c->timeouts.connect_ms, 500);
	assert_int_equal(c->timeouts.response_ms, 30000);
	assert_int_equal(c->timeouts.client_header_ms, 10000);
	assert_int_equal(c->timeouts.client_idle_ms, 300000);
	config_free(c);
	c = cfg_ok("timeouts connect=1s response=1m client_header=2s client_idle=1h");
	assert_int_equal(c->timeouts.response_ms, 60000);
	assert_int_equal(c->timeouts.client_header_ms, 2000);
	assert_int_equal(c->timeouts.client_idle_ms, 3600000);
	config_free(c);
}

static void
test_timeouts_errors(void **state)
{
	cfg_err("timeouts connect=10", "t.conf:1: timeouts: connect must be a duration from 1ms to "
	                               "365d (500ms, 10s, 5m, 1h, 7d), got \"10\"");
	cfg_err("timeouts response=0s", "t.conf:1: timeouts: response must be a duration from 1ms "
	                                "to 365d (500ms, 10s, 5m, 1h, 7d), got \"0s\"");
	cfg_err("timeouts client_idle=366d",
	        "t.conf:1: timeouts: client_idle must be a duration from 1ms to 365d (500ms, 10s, "
	        "5m, 1h, 7d), got \"366d\"");
	cfg_err("timeouts read=1s", "t.conf:1: timeouts: unknown option 'read'");
	cfg_err("timeouts", "t.conf:1: timeouts: wrong number of arguments (usage: timeouts "
	                    "[connect=D] [response=D] [client_header=D] [client_idle=D] "
	                    "[client_body=D])");
}

static void
test_limits(void **state)
{
	struct config *c = cfg_ok("limits header=64KB headers=256 body=10mb uri=16kb");

	assert_int_equal(c->limits.header, 64 * 1024);
	assert_int_equal(c->limits.headers, 256);
	assert_int_equal(c->limits.body, 10 * 1024 * 1024);
	assert_int_equal(c->limits.uri, 16 * 1024);
	config_free(c);
	c = cfg_ok("limits body=0 header=1k uri=256");
	assert_int_equal(c->limits.body, 0);
	assert_int_equal(c->limits.header, 1024);
	assert_int_equal(c->limits.uri, 256);
	config_free(c);
	c = cfg_ok("limits conns=10000 conns_per_ip=64 min_body_rate=1kb\n"
	           "timeouts client_body=5s");
	assert_int_equal(c->limits.conns, 10000);
	assert_int_equal(c->limits.conns_per_ip, 64);
	assert_int_equal(c->limits.min_body_rate, 1024);
	assert_int_equal(c->timeouts.client_body_ms, 5000);
	config_free(c);
}

static void
test_limits_errors(void **state)
{
	cfg_err("limits headers=257", "t.conf:1: limits: headers must be 1..256, got \"257\"");
	cfg_err("limits headers=0", "t.conf:1: limits: headers must be 1..256, got \"0\"");
	cfg_err("limits header=512",
	        "t.conf:1: limits: header must be a size from 1kb to 1mb (512, "
	        "64kb, 1mb, 1gb), got \"512\"");
	cfg_err("limits uri=255",
	        "t.conf:1: limits: uri must be a size from 256 to 1mb (512, 64kb, "
	        "1mb, 1gb), got \"255\"");
	cfg_err("limits body=1.5mb", "t.conf:1: limits: body must be a size from 0 to 1024gb (512, "
	                             "64kb, 1mb, 1gb), got \"1.5mb\"");
	cfg_err("limits header=16kb uri=16kb",
	        "t.conf:1: limits: uri (16kb) must be smaller than header (16kb)");
	/* the default uri (8kb) against a smaller header */
	cfg_err("limits header=4kb",
	        "t.conf:1: limits: uri (8kb) must be smaller than header (4kb)");
}

static void
test_health_check(void **state)
{
	struct config *c = cfg_ok("health_check path=/status?full=1 interval=5s timeout=1s rise=3 "
	                          "fall=4");

	assert_string_equal(c->health.path, "/status?full=1");
	assert_int_equal(c->health.interval_ms, 5000);
	assert_int_equal(c->health.timeout_ms, 1000);
	assert_int_equal(c->health.rise, 3);
	assert_int_equal(c->health.fall, 4);
	config_free(c);
}

static void
test_health_check_errors(void **state)
{
	cfg_err("health_check path=health", "t.conf:1: health_check: path must be a path starting "
	                                    "with '/' without blanks (at most 511 bytes), got "
	                                    "\"health\"");
	cfg_err("health_check path=\"/a b\"",
	        "t.conf:1: health_check: path must be a path starting "
	        "with '/' without blanks (at most 511 bytes), got "
	        "\"/a b\"");
	cfg_err("health_check interval=2s",
	        "t.conf:1: health_check: timeout (2s) must be shorter than interval (2s)");
	cfg_err("health_check timeout=15s",
	        "t.conf:1: health_check: timeout (15s) must be shorter than interval (10s)");
	cfg_err("health_check rise=0", "t.conf:1: health_check: rise must be 1..100, got \"0\"");
	cfg_err("health_check fall=101",
	        "t.conf:1: health_check: fall must be 1..100, got \"101\"");
}

static void
test_circuit(void **state)
{
	struct config *c = cfg_ok("circuit failures=3 open=1m");

	assert_int_equal(c->circuit.failures, 3);
	assert_int_equal(c->circuit.open_ms, 60000);
	config_free(c);
	cfg_err("circuit failures=0", "t.conf:1: circuit: failures must be 1..1000, got \"0\"");
	cfg_err("circuit open=never", "t.conf:1: circuit: open must be a duration from 1ms to 365d "
	                              "(500ms, 10s, 5m, 1h, 7d), got \"never\"");
}

static void
test_retries(void **state)
{
	assert_int_equal(cfg_int("retries 0", offsetof(struct config, retries)), 0);
	assert_int_equal(cfg_int("retries 10", offsetof(struct config, retries)), 10);
	cfg_err("retries 11", "t.conf:1: retries: count must be 0..10, got \"11\"");
	cfg_err("retries", "t.conf:1: retries: wrong number of arguments (usage: retries 0..10)");
}

static void
test_queue(void **state)
{
	struct config *c = cfg_ok("queue max=0 timeout=250ms");

	assert_int_equal(c->queue.max, 0);
	assert_int_equal(c->queue.timeout_ms, 250);
	config_free(c);
	cfg_err("queue max=1000001", "t.conf:1: queue: max must be 0..1000000, got \"1000001\"");
	cfg_err("queue depth=5", "t.conf:1: queue: unknown option 'depth'");
}

/* ---- ip_limit and CIDR lists ---- */

static void
test_ip_limit(void **state)
{
	struct config *c = cfg_ok("ip_limit 10/s");

	assert_int_equal(c->ip_limit.count, 10);
	assert_int_equal(c->ip_limit.period_ms, 1000);
	config_free(c);
	c = cfg_ok("ip_limit 500/5m");
	assert_int_equal(c->ip_limit.count, 500);
	assert_int_equal(c->ip_limit.period_ms, 300000);
	config_free(c);
	cfg_err("ip_limit 0/60s", "t.conf:1: ip_limit: rate must be a rate N/DURATION (100/60s, "
	                          "5/m), got \"0/60s\"");
	cfg_err("ip_limit 100",
	        "t.conf:1: ip_limit: rate must be a rate N/DURATION (100/60s, 5/m), "
	        "got \"100\"");
}

static void
test_cidr_lists(void **state)
{
	struct config *c = cfg_ok("ip_limit_exempt 10.0.0.0/8 192.168.0.0/16\n"
	                          "ip_limit_exempt 2001:db8::/32\n"
	                          "trusted_proxy 127.0.0.1\n"
	                          "admin_allow 10.1.2.3/32");
	struct cidr x;

	assert_int_equal(c->nip_limit_exempt, 3);
	assert_int_equal(cidr_parse("2001:db8::/32", &x), 0);
	assert_memory_equal(&c->ip_limit_exempt[2], &x, sizeof x);
	assert_int_equal(c->ntrusted_proxy, 1);
	assert_int_equal(cidr_parse("127.0.0.1/32", &x), 0);
	assert_memory_equal(&c->trusted_proxy[0], &x, sizeof x);
	/* an explicit admin_allow replaces the loopback default */
	assert_int_equal(c->nadmin_allow, 1);
	assert_int_equal(cidr_parse("10.1.2.3", &x), 0);
	assert_memory_equal(&c->admin_allow[0], &x, sizeof x);
	config_free(c);
}

static void
test_cidr_errors(void **state)
{
	cfg_err("trusted_proxy 10.0.0.0/33", "t.conf:1: trusted_proxy: expected an address or CIDR "
	                                     "(10.0.0.0/8, ::1), got \"10.0.0.0/33\"");
	cfg_err("admin_allow 127.0.0.0/8 localhost",
	        "t.conf:1: admin_allow: expected an address or CIDR (10.0.0.0/8, ::1), got "
	        "\"localhost\"");
	cfg_err("ip_limit_exempt", "t.conf:1: ip_limit_exempt: wrong number of arguments (usage: "
	                           "ip_limit_exempt CIDR...)");
}

/* ---- routes ---- */

static void
test_routes_sorted_and_matched(void **state)
{
	struct config *c = cfg_ok("route / auth=none\n"
	                          "route /api auth=off forward_auth=on\n"
	                          "route /api/v2/ auth=none\n"
	                          "route /static");
	const struct config_route *r;

	assert_int_equal(c->nroutes, 4);
	assert_string_equal(c->routes[0].prefix, "/api/v2/");
	assert_string_equal(c->routes[1].prefix, "/static");
	assert_string_equal(c->routes[2].prefix, "/api");
	assert_string_equal(c->routes[3].prefix, "/");
	assert_int_equal(c->routes[2].prefix_len, 4);
	assert_int_equal(c->routes[2].auth, CONFIG_AUTH_OFF);
	assert_int_equal(c->routes[2].forward_auth, 1);
	assert_int_equal(c->routes[1].auth, CONFIG_AUTH_NONE);
	assert_int_equal(c->routes[1].forward_auth, 0);

	r = config_route_match(c, "/api/v2/users", strlen("/api/v2/users"));
	assert_string_equal(r->prefix, "/api/v2/");
	r = config_route_match(c, "/api/v2", strlen("/api/v2"));
	assert_string_equal(r->prefix, "/api");
	/* plain byte prefix: /apix belongs to /api */
	r = config_route_match(c, "/apix", 5);
	assert_string_equal(r->prefix, "/api");
	r = config_route_match(c, "/other", 6);
	assert_string_equal(r->prefix, "/");
	/* only len bytes are looked at */
	r = config_route_match(c, "/api/v2/users", 4);
	assert_string_equal(r->prefix, "/api");
	config_free(c);
}

static void
test_route_no_match(void **state)
{
	struct config *c = cfg_ok("route /api");

	assert_int_equal(c->nroutes, 1);
	assert_null(config_route_match(c, "/", 1));
	assert_null(config_route_match(c, "/ap", 3));
	assert_non_null(config_route_match(c, "/api", 4));
	config_free(c);
}

static void
test_route_errors(void **state)
{
	cfg_err("route api", "t.conf:1: route: prefix must be a path starting with '/' without "
	                     "blanks (at most 511 bytes), got \"api\"");
	cfg_err("route /a\nroute /a auth=off", "t.conf:2: route: /a is already configured");
	cfg_err("route /a auth=public", "t.conf:1: route: auth must be off, none, jwt, apikey or "
	                                "any, got \"public\"");
	cfg_err("route /a forward_auth=maybe",
	        "t.conf:1: route: forward_auth must be on or off, got \"maybe\"");
	cfg_err("route /a cache=off ttl=5s", "t.conf:1: route: unknown option 'ttl'");
}

static void
test_route_later_features(void **state)
{
	struct config *c = cfg_ok("route /a cache=off");

	assert_int_equal(c->routes[0].cache, 0);
	config_free(c);
	c = cfg_ok("route / auth=none cache=on cache_ttl=10s\ncache ttl=0 max_memory=1mb");
	assert_int_equal(c->routes[0].cache, 1);
	assert_int_equal(c->routes[0].cache_ttl_ms, 10000);
	assert_int_equal(c->cache.ttl_ms, 0);
	assert_int_equal(c->cache.max_memory, 1 << 20);
	config_free(c);
	cfg_err("route /a cache_ttl=10s", "t.conf:1: route: cache_ttl= needs cache=on");
	cfg_err("cache max_memory=1kb", "t.conf:1: cache: max_memory must be a size from 64kb to "
	                                "64gb (512, 64kb, 1mb, 1gb), got \"1kb\"");
	c = cfg_ok("route /a auth=jwt min_tier=premium\nroute /b auth=apikey\nroute /c auth=any");
	assert_int_equal(c->routes[0].auth, CONFIG_AUTH_JWT);
	assert_string_equal(c->routes[0].min_tier, "premium");
	assert_int_equal(c->routes[1].auth, CONFIG_AUTH_APIKEY);
	assert_int_equal(c->routes[2].auth, CONFIG_AUTH_ANY);
	config_free(c);
	cfg_err("route /a min_tier=gold", "t.conf: route /a: min_tier 'gold' is not a tier");
}

/* tier, ban, jwt, register_tiers: defaults of SPEC section 2 and validation */
static void
test_identity_directives(void **state)
{
	struct config *c = cfg_ok("");

	assert_int_equal(c->ntiers, 4);
	assert_string_equal(c->tiers[0].name, "free");
	assert_int_equal(c->tiers[0].rate.count, 5);
	assert_int_equal(c->tiers[0].rate.period_ms, 60000);
	assert_string_equal(c->tiers[3].name, "enterprise");
	assert_int_equal(c->tiers[3].rate.count, 1000);
	assert_int_equal(c->ban.threshold, 10);
	assert_int_equal(c->ban.base_ms, 300000);
	assert_int_equal(c->ban.multiplier, 2);
	assert_int_equal(c->ban.max_ms, 86400000);
	assert_string_equal(c->jwt.alg, "HS256");
	assert_int_equal(c->jwt.access_ttl_ms, 3600000);
	assert_int_equal(c->jwt.refresh_ttl_ms, 7 * 86400000ULL);
	assert_int_equal(c->jwt.leeway_ms, 30000);
	assert_string_equal(c->jwt.issuer, "gatewayd");
	assert_int_equal(c->nregister_tiers, 1);
	assert_string_equal(c->register_tiers[0], "free");
	config_free(c);

	c = cfg_ok("tier free 10/1m\ntier gold 5000/60s\nregister_tiers free gold\n"
	           "ban threshold=3 base=10s multiplier=3 max=1h\n"
	           "jwt alg=HS256 access_ttl=15m refresh_ttl=1d issuer=example leeway=5s");
	assert_int_equal(c->ntiers, 5);
	assert_int_equal(c->tiers[0].rate.count, 10);
	assert_string_equal(c->tiers[4].name, "gold");
	assert_int_equal(config_tier_find(c, "gold"), 4);
	assert_int_equal(config_tier_find(c, "silver"), -1);
	assert_int_equal(c->nregister_tiers, 2);
	assert_int_equal(c->ban.threshold, 3);
	assert_int_equal(c->jwt.access_ttl_ms, 900000);
	assert_string_equal(c->jwt.issuer, "example");
	config_free(c);

	cfg_err("tier free five", "t.conf:1: tier: expected a rate N/DURATION (5/60s), got \"five\"");
	cfg_err("register_tiers gold", "t.conf:1: register_tiers: 'gold' is not a tier");
	cfg_err("jwt alg=none", "t.conf:1: jwt: alg must be HS256, RS256 or ES256, got \"none\"");
	cfg_err("jwt alg=RS256", "t.conf:1: jwt: alg=RS256 needs private_key=FILE and public_key=FILE");
	cfg_err("ban multiplier=0", "t.conf:1: ban: multiplier must be 1..100, got \"0\"");
}

/* ---- control plane and store endpoints: checked and kept, not opened yet ---- */

static void
test_endpoints(void **state)
{
	struct config *c = cfg_ok("");

	assert_string_equal(c->control, "ipc:///tmp/gatewayd.ctl");
	assert_string_equal(c->publish, "ipc:///tmp/gatewayd.pub");
	assert_string_equal(c->database, "sqlite:gatewayd.db");
	config_free(c);
	c = cfg_ok("control tcp://127.0.0.1:7000\npublish ipc:///run/gw.pub\n"
	           "database postgresql://gw@db/gw");
	assert_string_equal(c->control, "tcp://127.0.0.1:7000");
	assert_string_equal(c->publish, "ipc:///run/gw.pub");
	assert_string_equal(c->database, "postgresql://gw@db/gw");
	config_free(c);
}

static void
test_endpoints_errors(void **state)
{
	cfg_err("control /tmp/gw.ctl", "t.conf:1: control: url must be a URL starting with ipc:// "
	                               "or tcp:// (at most 255 bytes), got \"/tmp/gw.ctl\"");
	cfg_err("publish ipc://", "t.conf:1: publish: url must be a URL starting with ipc:// or "
	                          "tcp:// (at most 255 bytes), got \"ipc://\"");
	cfg_err("database mysql://x",
	        "t.conf:1: database: url must be a URL starting with sqlite:, postgresql:// or "
	        "postgres:// (at most 511 bytes), got \"mysql://x\"");
	cfg_err("database sqlite:a\ndatabase sqlite:b",
	        "t.conf:2: 'database' given twice (first at t.conf:1)");
	cfg_err("control", "t.conf:1: control: wrong number of arguments (usage: control "
	                   "ipc://PATH|tcp://HOST:PORT)");
}

/* ---- the language ---- */

static void
test_redis_directives(void **state)
{
	struct config *c;

	cfg_err("\nredis http://h", "t.conf:2: redis: expected redis://[[USER]:PASSWORD@]HOST[:PORT][/DB]");
	cfg_err("redis redis://:pw@:1/0", "t.conf:1: redis: a host is required (redis://127.0.0.1:6379/0)");
	cfg_err("redis redis://h/0 tls=on", "t.conf:1: redis: tls=on is not available: this build's "
	        "hiredis (0.14) has no TLS; reach Redis over a private network or a TLS tunnel "
	        "(stunnel, spiped)");
	cfg_err("redis_failure maybe", "t.conf:1: redis_failure: open or closed, got \"maybe\"");
	c = cfg_ok("workers 1");
	assert_string_equal(c->redis, "");
	assert_int_equal(c->redis_failure, CONFIG_REDIS_OPEN);
	assert_int_equal(c->redis_timeout_ms, 1000);
	config_free(c);
	c = cfg_ok("redis redis://:pw@10.0.0.1:6380/2 timeout=250ms\nredis_failure closed");
	assert_string_equal(c->redis, "redis://:pw@10.0.0.1:6380/2");
	assert_int_equal(c->redis_failure, CONFIG_REDIS_CLOSED);
	assert_int_equal(c->redis_timeout_ms, 250);
	config_free(c);
}

static void
test_unknown_directive(void **state)
{
	cfg_err("# top\n\n   foo bar=1", "t.conf:3: unknown directive 'foo'");
	cfg_err("Listen 0.0.0.0:80", "t.conf:1: unknown directive 'Listen'");
}

static void
test_duplicates_refused(void **state)
{
	static const char *const lines[] = {
	    "workers 2",       "strategy weighted",   "timeouts connect=1s",
	    "limits body=2mb", "health_check rise=3", "circuit failures=2",
	    "retries 2",       "queue max=5",         "ip_limit 5/s",
	};

	for (size_t i = 0; i < sizeof(lines) / sizeof(lines[0]); i++) {
		char text[128], expect[128], name[32];

		snprintf(text, sizeof text, "%s\n# again\n%s", lines[i], lines[i]);
		sscanf(lines[i], "%31s", name);
		snprintf(expect, sizeof expect, "t.conf:3: '%s' given twice (first at t.conf:1)",
		         name);
		cfg_err(text, expect);
	}
}

static void
test_comments_blanks_crlf(void **state)
{
	struct config *c = cfg_ok("# gatewayd.conf\r\n"
	                          "\r\n"
	                          "   \t\n"
	                          "workers 3   # three\r\n"
	                          "retries 2#glued comment\n"
	                          "route \"/with#hash\"");

	assert_int_equal(c->workers, 3);
	assert_int_equal(c->retries, 2);
	assert_string_equal(c->routes[0].prefix, "/with#hash");
	config_free(c);
	cfg_err("\n\nroute \"/open", "t.conf:3: unterminated quote or more than 32 words");
}

static void
test_too_many_words(void **state)
{
	char text[512] = "ip_limit_exempt";

	for (int i = 0; i < 32; i++)
		strcat(text, " 10.0.0.1");
	cfg_err(text, "t.conf:1: unterminated quote or more than 32 words");
}

/* ---- -d overrides ---- */

static void
test_override_replaces_every_line(void **state)
{
	char *ov[] = {"backend=b9 127.0.0.1:7001", "listen=127.0.0.1:9000", NULL};
	struct config *c = load_ov("listen 0.0.0.0:80\nlisten 0.0.0.0:81\n"
	                           "backend b1 127.0.0.1:1\nbackend b2 127.0.0.1:2\nretries 3",
	                           ov);

	assert_non_null(c);
	assert_int_equal(c->nbackends, 1);
	assert_string_equal(c->backends[0].id, "b9");
	assert_int_equal(c->backends[0].port, 7001);
	assert_int_equal(c->nlistens, 1);
	assert_string_equal(c->listens[0].text, "127.0.0.1:9000");
	assert_int_equal(c->retries, 3);
	config_free(c);
}

static void
test_override_appends_and_repeats(void **state)
{
	char *ov[] = {"strategy=ip_hash", "backend=a 127.0.0.1:1", "backend=b 127.0.0.1:2",
	              "timeouts=connect=1s response=2s", NULL};
	struct config *c = load_ov("backend old 127.0.0.1:9\n", ov);

	assert_non_null(c);
	assert_int_equal(c->strategy, BALANCE_IP_HASH);
	assert_int_equal(c->nbackends, 2);
	assert_string_equal(c->backends[0].id, "a");
	assert_string_equal(c->backends[1].id, "b");
	assert_int_equal(c->timeouts.connect_ms, 1000);
	assert_int_equal(c->timeouts.response_ms, 2000);
	config_free(c);
}

static void
test_override_replaces_broken_line(void **state)
{
	char *ov[] = {"workers=2", NULL};
	struct config *c = load_ov("workers lots\nbackend b 127.0.0.1:1", ov);

	assert_non_null(c);
	assert_int_equal(c->workers, 2);
	config_free(c);
}

static void
test_override_errors(void **state)
{
	char *bad_value[] = {"strategy=fastest", NULL};
	char *no_eq[] = {"workers", NULL};
	char *bad_key[] = {"work ers=2", NULL};
	char *unknown[] = {"wrokers=2", NULL};
	char *twice[] = {"workers=2", "workers=3", NULL};
	char *bad_redis[] = {"redis=redis://127.0.0.1:0/0", NULL};
	char expect[256];

	snprintf(expect, sizeof expect,
	         "-d strategy=fastest: strategy: unknown strategy 'fastest' (valid: %s)",
	         balance_strategy_list());
	assert_null(load_ov("strategy round_robin" TAIL, bad_value));
	assert_string_equal(errbuf, expect);
	assert_null(load_ov(TAIL, no_eq));
	assert_string_equal(errbuf, "-d workers: expected KEY=VALUE");
	assert_null(load_ov(TAIL, bad_key));
	assert_string_equal(errbuf, "-d work ers=2: expected KEY=VALUE");
	assert_null(load_ov(TAIL, unknown));
	assert_string_equal(errbuf, "-d wrokers=2: unknown directive 'wrokers'");
	assert_null(load_ov(TAIL, twice));
	assert_string_equal(errbuf, "-d workers=3: 'workers' given twice (first at -d workers=2)");
	assert_null(load_ov(TAIL, bad_redis));
	assert_string_equal(errbuf,
	                    "-d redis=redis://127.0.0.1:0/0: redis: the port must be 1..65535");
}

static void
test_override_backend_dc_error_location(void **state)
{
	char *ov[] = {"backend=b1 127.0.0.1:1 dc=nowhere", NULL};

	assert_null(load_ov("datacenter eu lat=1 lon=2\n", ov));
	assert_string_equal(errbuf, "-d backend=b1 127.0.0.1:1 dc=nowhere: backend: dc 'nowhere' "
	                            "is not a declared datacenter");
}

/* ---- files ---- */

static void
test_load_file(void **state)
{
	char path[64], expect[256];
	struct config *c;

	temp_file(path, sizeof path, "# test\nworkers 2\nbackend b1 127.0.0.1:5001\n");
	c = config_load(path, NULL, errbuf, sizeof errbuf);
	assert_non_null(c);
	assert_string_equal(c->file, path);
	assert_int_equal(c->workers, 2);
	config_free(c);
	unlink(path);

	temp_file(path, sizeof path, "workers 2\nbackend b1 127.0.0.1:5001 weight=abc\n");
	assert_null(config_load(path, NULL, errbuf, sizeof errbuf));
	snprintf(expect, sizeof expect, "%s:2: backend: weight must be 1..1000, got \"abc\"", path);
	assert_string_equal(errbuf, expect);
	unlink(path);
}

static void
test_load_file_errors(void **state)
{
	char path[64], expect[256];
	int fd;

	assert_null(config_load("/nonexistent/gatewayd.conf", NULL, errbuf, sizeof errbuf));
	assert_string_equal(errbuf, "/nonexistent/gatewayd.conf: No such file or directory");

	snprintf(path, sizeof path, "/tmp/test_config.XXXXXX");
	fd = mkstemp(path);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, "workers 2\n\0\n", 12), 12);
	close(fd);
	assert_null(config_load(path, NULL, errbuf, sizeof errbuf));
	snprintf(expect, sizeof expect, "%s: contains a NUL byte", path);
	assert_string_equal(errbuf, expect);
	unlink(path);
}

/* The shipped example must keep loading; tests run from the top of the tree. */
static void
test_example_file_loads(void **state)
{
	struct config *c;

	if (access("etc/gatewayd.conf.example", R_OK) != 0)
		skip();
	c = config_load("etc/gatewayd.conf.example", NULL, errbuf, sizeof errbuf);
	if (c == NULL)
		fail_msg("%s", errbuf);
	assert_int_equal(c->nbackends, 3);
	assert_int_equal(c->ndatacenters, 3);
	assert_int_equal(c->nroutes, 2);
	config_free(c);
}

static void
test_small_error_buffer(void **state)
{
	char small[12];
	struct config *c;

	c = config_load_text("t.conf", "workers 0" TAIL, NULL, small, sizeof small);
	assert_null(c);
	assert_string_equal(small, "t.conf:1: w");
	/* no buffer at all is allowed too */
	assert_null(config_load_text("t.conf", "workers 0" TAIL, NULL, NULL, 0));
}

static void
test_auth_names_and_free(void **state)
{
	assert_string_equal(config_auth_name(CONFIG_AUTH_OFF), "off");
	assert_string_equal(config_auth_name(CONFIG_AUTH_NONE), "none");
	assert_string_equal(config_auth_name(CONFIG_AUTH_JWT), "jwt");
	assert_string_equal(config_auth_name(CONFIG_AUTH_APIKEY), "apikey");
	assert_string_equal(config_auth_name(CONFIG_AUTH_ANY), "any");
	assert_string_equal(config_auth_name((enum config_auth)42), "unknown");
	config_free(NULL);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_defaults),
	    cmocka_unit_test(test_default_admin_allow),
	    cmocka_unit_test(test_embedded_default_loads),
	    cmocka_unit_test(test_embedded_default_with_override),
	    cmocka_unit_test(test_listen_addresses),
	    cmocka_unit_test(test_listen_errors),
	    cmocka_unit_test(test_listen_tls),
	    cmocka_unit_test(test_workers),
	    cmocka_unit_test(test_strategy),
	    cmocka_unit_test(test_strategy_unknown),
	    cmocka_unit_test(test_backend_full),
	    cmocka_unit_test(test_backend_name_resolves),
	    cmocka_unit_test(test_backend_unresolvable),
	    cmocka_unit_test(test_backend_weight),
	    cmocka_unit_test(test_backend_max_conns),
	    cmocka_unit_test(test_backend_options_errors),
	    cmocka_unit_test(test_backend_ids),
	    cmocka_unit_test(test_backend_count_limit),
	    cmocka_unit_test(test_backend_required),
	    cmocka_unit_test(test_datacenter),
	    cmocka_unit_test(test_datacenter_errors),
	    cmocka_unit_test(test_backend_dc_declared),
	    cmocka_unit_test(test_timeouts),
	    cmocka_unit_test(test_timeouts_errors),
	    cmocka_unit_test(test_limits),
	    cmocka_unit_test(test_limits_errors),
	    cmocka_unit_test(test_health_check),
	    cmocka_unit_test(test_health_check_errors),
	    cmocka_unit_test(test_circuit),
	    cmocka_unit_test(test_retries),
	    cmocka_unit_test(test_queue),
	    cmocka_unit_test(test_ip_limit),
	    cmocka_unit_test(test_cidr_lists),
	    cmocka_unit_test(test_cidr_errors),
	    cmocka_unit_test(test_routes_sorted_and_matched),
	    cmocka_unit_test(test_route_no_match),
	    cmocka_unit_test(test_route_errors),
	    cmocka_unit_test(test_route_later_features),
	    cmocka_unit_test(test_identity_directives),
	    cmocka_unit_test(test_endpoints),
	    cmocka_unit_test(test_endpoints_errors),
	    cmocka_unit_test(test_redis_directives),
	    cmocka_unit_test(test_unknown_directive),
	    cmocka_unit_test(test_duplicates_refused),
	    cmocka_unit_test(test_comments_blanks_crlf),
	    cmocka_unit_test(test_too_many_words),
	    cmocka_unit_test(test_override_replaces_every_line),
	    cmocka_unit_test(test_override_appends_and_repeats),
	    cmocka_unit_test(test_override_replaces_broken_line),
	    cmocka_unit_test(test_override_errors),
	    cmocka_unit_test(test_override_backend_dc_error_location),
	    cmocka_unit_test(test_load_file),
	    cmocka_unit_test(test_load_file_errors),
	    cmocka_unit_test(test_example_file_loads),
	    cmocka_unit_test(test_small_error_buffer),
	    cmocka_unit_test(test_auth_names_and_free),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
