/*
 * gatewayd.conf(5): reading, validating and freeing a struct config.
 *
 * Every directive is an entry of config_directives[] (name, arity, handler, option
 * table); every `key=value` option is an entry of a per-directive option table that says
 * where its value goes and what it may be. Handlers therefore stay a few lines long and
 * all values are checked and reported the same way: "file:line: directive: message".
 */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "balance.h"
#include "config.h"
#include "geo.h"
#include "tls.h"
#include "http.h"
#include "redis.h"
#include "store.h"
#include "util.h"
#include "xmalloc.h"

/* SPEC section 2's embedded default. */
const char config_default_text[] = "listen 0.0.0.0:8080\n"
                                   "database sqlite:gatewayd.db\n"
                                   "strategy round_robin\n"
                                   "backend b1 127.0.0.1:5001 weight=2 dc=us-east\n"
                                   "backend b2 127.0.0.1:5002 weight=1 dc=eu-west\n"
                                   "backend b3 127.0.0.1:5003 weight=1 dc=ap-south\n"
                                   "datacenter us-east lat=39.04 lon=-77.49\n"
                                   "datacenter eu-west lat=53.35 lon=-6.26\n"
                                   "datacenter ap-south lat=1.35 lon=103.82\n"
                                   "cache ttl=30s max_memory=64mb\n"
                                   "route /api/v2/premium auth=jwt min_tier=premium\n"
                                   "route /api/v2/ auth=jwt\n"
                                   "route / auth=none cache=on\n";

#define CONFIG_SECOND 1000ULL
#define CONFIG_DUR_MAX (365ULL * 24 * 3600 * CONFIG_SECOND)
#define CONFIG_KB 1024ULL
#define CONFIG_MB (1024ULL * CONFIG_KB)
#define CONFIG_GB (1024ULL * CONFIG_MB)
/* A configuration file is a few kilobytes; anything this large is a mistake. */
#define CONFIG_FILE_MAX (4 * CONFIG_MB)
/* Option tables are data: short offsetof and sizeof keep each option on one line. */
#define CONFIG_AT(field) offsetof(struct config, field)
#define CONFIG_SIZE(field) sizeof(((struct config *)NULL)->field)

enum config_opt_type {
	CONFIG_OPT_INT,      /* int, range min..max */
	CONFIG_OPT_U64,      /* uint64_t, range min..max */
	CONFIG_OPT_DURATION, /* uint64_t milliseconds, range min..max */
	CONFIG_OPT_SIZE,     /* uint64_t bytes, range min..max */
	CONFIG_OPT_DOUBLE,   /* double, range dmin..dmax */
	CONFIG_OPT_BOOL,     /* int 0/1 */
	CONFIG_OPT_RATE,     /* struct conf_rate */
	CONFIG_OPT_NAME,     /* char[size] of [A-Za-z0-9._-] */
	CONFIG_OPT_URLPATH,  /* char[size] starting with '/', no blanks or controls */
	CONFIG_OPT_FILE,     /* char[size], a readable regular file */
	CONFIG_OPT_URL,      /* char[size] starting with one of the directive's schemes */
	CONFIG_OPT_AUTH,     /* enum config_auth */
};

/* One value: where it goes (offset from the handler's struct) and what it may be. */
struct config_opt {
	const char *key;
	enum config_opt_type type;
	size_t off;
	uint64_t min, max; /* integers, durations, sizes; strings: max is the buffer's size */
	double dmin, dmax; /* CONFIG_OPT_DOUBLE */
	int required;
};

struct config_parser;
struct config_directive;

typedef int (*config_handler)(struct config_parser *p, const struct config_directive *d,
                              char **argv, int argc);

struct config_directive {
	const char *name;
	int repeatable;
	int min_args, max_args; /* words after the name; max -1: no limit */
	const char *usage;
	config_handler handler;
	const struct config_opt *opts;  /* key=value options (at most 32) */
	const struct config_opt *value; /* config_dir_value: the single argument */
	const char *const *schemes;     /* CONFIG_OPT_URL: accepted prefixes, NULL-terminated */
	/* config_dir_cidrs: where the directive's array and its count live in struct config */
	size_t list_off, count_off;
	/* config_dir_options: cross-field checks once the options are in */
	int (*check)(struct config_parser *p, const struct config_directive *d);
};

struct config_override {
	const char *text; /* "KEY=VALUE" as given, for error messages */
	char *key;        /* owned copy of KEY */
	const char *value;
	int emitted;
};

/*
 * A location is a file line (> 0), an override (-(index + 1)) or the whole file (0),
 * so that checks made after the whole file can still point at the right place.
 */
struct config_parser {
	struct config *c;
	const char *name;
	struct config_override *ov;
	int nov;
	int loc;
	int *seen;        /* per directive: location of its first use, 0 when unused */
	int *backend_loc; /* per backend: where it was declared */
	int nbackend_loc;
	char *err;
	size_t errlen;
};

static const char *const config_auth_names[] = {
    [CONFIG_AUTH_OFF] = "off",       [CONFIG_AUTH_NONE] = "none", [CONFIG_AUTH_JWT] = "jwt",
    [CONFIG_AUTH_APIKEY] = "apikey", [CONFIG_AUTH_ANY] = "any",
};

#define CONFIG_NAUTH ((int)(sizeof(config_auth_names) / sizeof(config_auth_names[0])))

const char *
config_auth_name(enum config_auth a)
{
	return (unsigned)a < (unsigned)CONFIG_NAUTH ? config_auth_names[a] : "unknown";
}

static void
config_where(const struct config_parser *p, int loc, char *buf, size_t len)
{
	if (loc < 0)
		snprintf(buf, len, "-d %s", p->ov[-loc - 1].text);
	else if (loc > 0)
		snprintf(buf, len, "%s:%d", p->name, loc);
	else
		snprintf(buf, len, "%s", p->name);
}

static int config_error_at(struct config_parser *p, int loc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int config_error(struct config_parser *p, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static int config_verror(struct config_parser *p, int loc, const char *fmt, va_list ap)
    __attribute__((format(printf, 3, 0)));

/* Writes "where: message" into the caller's buffer; always returns -1. */
static int
config_verror(struct config_parser *p, int loc, const char *fmt, va_list ap)
{
	size_t n;

	if (p->err == NULL || p->errlen == 0)
		return -1;
	config_where(p, loc, p->err, p->errlen);
	n = strlen(p->err);
	if (n + 2 < p->errlen) {
		memcpy(p->err + n, ": ", 3);
		vsnprintf(p->err + n + 2, p->errlen - n - 2, fmt, ap);
	}
	return -1;
}

static int
config_error_at(struct config_parser *p, int loc, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	config_verror(p, loc, fmt, ap);
	va_end(ap);
	return -1;
}

static int
config_error(struct config_parser *p, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	config_verror(p, p->loc, fmt, ap);
	va_end(ap);
	return -1;
}

/* Appends one element (copied from elem) to a heap array of *n elements. */
static void *
config_append(void *array, int *n, const void *elem, size_t size)
{
	char *a = xrealloc(array, ((size_t)*n + 1) * size);

	memcpy(a + (size_t)*n * size, elem, size);
	(*n)++;
	return a;
}

static char *
config_format_size(uint64_t bytes, char *buf, size_t len)
{
	static const struct {
		const char *unit;
		uint64_t factor;
	} units[] = {{"gb", CONFIG_GB}, {"mb", CONFIG_MB}, {"kb", CONFIG_KB}};

	for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
		if (bytes != 0 && bytes % units[i].factor == 0) {
			snprintf(buf, len, "%llu%s", (unsigned long long)(bytes / units[i].factor),
			         units[i].unit);
			return buf;
		}
	}
	snprintf(buf, len, "%llu", (unsigned long long)bytes);
	return buf;
}

/* What a value of this option must look like, for "KEY must be <this>, got ...". */
static void
config_expect(const struct config_directive *d, const struct config_opt *o, char *buf, size_t len)
{
	char a[32], b[32];
	size_t n;

	switch (o->type) {
	case CONFIG_OPT_INT:
	case CONFIG_OPT_U64:
		snprintf(buf, len, "%llu..%llu", (unsigned long long)o->min,
		         (unsigned long long)o->max);
		break;
	case CONFIG_OPT_DURATION:
		snprintf(buf, len, "a duration from %s to %s (500ms, 10s, 5m, 1h, 7d)",
		         conf_format_duration(o->min, a, sizeof a),
		         conf_format_duration(o->max, b, sizeof b));
		break;
	case CONFIG_OPT_SIZE:
		snprintf(buf, len, "a size from %s to %s (512, 64kb, 1mb, 1gb)",
		         config_format_size(o->min, a, sizeof a),
		         config_format_size(o->max, b, sizeof b));
		break;
	case CONFIG_OPT_DOUBLE:
		snprintf(buf, len, "a number from %g to %g", o->dmin, o->dmax);
		break;
	case CONFIG_OPT_BOOL:
		snprintf(buf, len, "on or off");
		break;
	case CONFIG_OPT_RATE:
		snprintf(buf, len, "a rate N/DURATION (100/60s, 5/m)");
		break;
	case CONFIG_OPT_NAME:
		snprintf(buf, len, "1..%llu characters of [A-Za-z0-9._-]",
		         (unsigned long long)o->max - 1);
		break;
	case CONFIG_OPT_URLPATH:
		snprintf(buf, len, "a path starting with '/' without blanks (at most %llu bytes)",
		         (unsigned long long)o->max - 1);
		break;
	case CONFIG_OPT_FILE:
		snprintf(buf, len, "a file name of at most %llu bytes",
		         (unsigned long long)o->max - 1);
		break;
	case CONFIG_OPT_AUTH:
		snprintf(buf, len, "off, none, jwt, apikey or any");
		break;
	case CONFIG_OPT_URL:
		snprintf(buf, len, "a URL starting with ");
		for (int i = 0; d->schemes[i] != NULL && (n = strlen(buf)) < len; i++)
			snprintf(buf + n, len - n, "%s%s", d->schemes[i],
			         d->schemes[i + 1] == NULL   ? ""
			         : d->schemes[i + 2] == NULL ? " or "
			                                     : ", ");
		n = strlen(buf);
		snprintf(buf + n, len - n, " (at most %llu bytes)", (unsigned long long)o->max - 1);
		break;
	}
}

static int
config_is_name(const char *s, size_t size)
{
	size_t n = strlen(s);

	if (n == 0 || n >= size)
		return 0;
	return strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-") == n;
}

/* Names, IPv4 and IPv6 literals (with a %scope): checked before a resolver sees them. */
static int
config_is_host(const char *s)
{
	size_t n = strlen(s);

	return n > 0 && strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
	                          "0123456789._-:%") == n;
}

static int
config_is_urlpath(const char *s, size_t size)
{
	size_t n = strlen(s);

	if (s[0] != '/' || n >= size)
		return 0;
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)s[i] <= ' ' || s[i] == 0x7f)
			return 0;
	return 1;
}

static int
config_parse_auth(const char *s, enum config_auth *out)
{
	for (int i = 0; i < CONFIG_NAUTH; i++) {
		if (strcmp(s, config_auth_names[i]) == 0) {
			*out = (enum config_auth)i;
			return 0;
		}
	}
	return -1;
}

/*
 * stat() first, so that a device or a FIFO named by mistake is refused without being
 * opened; then open(), not access(): it answers for the user that will read the file.
 */
static int
config_check_file(struct config_parser *p, const struct config_directive *d,
                  const struct config_opt *o, const char *path)
{
	struct stat st;
	int fd;

	if (stat(path, &st) == 0 && !S_ISREG(st.st_mode))
		return config_error(p, "%s: %s file \"%s\" is not a regular file", d->name, o->key,
		                    path);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return config_error(p, "%s: cannot read %s file \"%s\": %s", d->name, o->key, path,
		                    strerror(errno));
	close(fd);
	return 0;
}

static int
config_has_scheme(const char *s, const char *const *schemes)
{
	for (; *schemes != NULL; schemes++) {
		size_t n = strlen(*schemes);

		if (strncmp(s, *schemes, n) == 0 && s[n] != '\0')
			return 1;
	}
	return 0;
}

static int
config_parse_string(const struct config_directive *d, const struct config_opt *o, const char *val,
                    char *dst)
{
	int ok;

	switch (o->type) {
	case CONFIG_OPT_URL:
		ok = config_has_scheme(val, d->schemes) && strlen(val) < o->max;
		break;
	case CONFIG_OPT_NAME:
		ok = config_is_name(val, o->max);
		break;
	case CONFIG_OPT_URLPATH:
		ok = config_is_urlpath(val, o->max);
		break;
	default:
		ok = val[0] != '\0' && strlen(val) < o->max;
		break;
	}
	if (ok)
		util_strlcpy(dst, val, o->max);
	return ok ? 0 : -1;
}

/* Parses val as option o into base + o->off; 0 or -1 with the error written. */
static int
config_parse_value(struct config_parser *p, const struct config_directive *d,
                   const struct config_opt *o, const char *val, void *base)
{
	void *dst = (char *)base + o->off;
	char expect[128];
	uint64_t v = 0;
	int rc = -1;

	switch (o->type) {
	case CONFIG_OPT_INT:
	case CONFIG_OPT_U64:
		rc = conf_parse_uint(val, o->min, o->max, &v);
		break;
	case CONFIG_OPT_DURATION:
		rc = conf_parse_duration(val, &v);
		break;
	case CONFIG_OPT_SIZE:
		rc = conf_parse_size(val, &v);
		break;
	case CONFIG_OPT_DOUBLE:
		rc = conf_parse_double(val, o->dmin, o->dmax, dst);
		break;
	case CONFIG_OPT_BOOL:
		rc = conf_parse_bool(val, dst);
		break;
	case CONFIG_OPT_RATE:
		rc = conf_parse_rate(val, dst);
		break;
	case CONFIG_OPT_AUTH:
		rc = config_parse_auth(val, dst);
		break;
	case CONFIG_OPT_NAME:
	case CONFIG_OPT_URLPATH:
	case CONFIG_OPT_FILE:
	case CONFIG_OPT_URL:
		rc = config_parse_string(d, o, val, dst);
		break;
	}
	if (rc == 0 && (o->type == CONFIG_OPT_DURATION || o->type == CONFIG_OPT_SIZE) &&
	    (v < o->min || v > o->max))
		rc = -1;
	if (rc < 0) {
		config_expect(d, o, expect, sizeof expect);
		return config_error(p, "%s: %s must be %s, got \"%s\"", d->name, o->key, expect,
		                    val);
	}
	if (o->type == CONFIG_OPT_INT)
		*(int *)dst = (int)v;
	else if (o->type == CONFIG_OPT_U64 || o->type == CONFIG_OPT_DURATION ||
	         o->type == CONFIG_OPT_SIZE)
		*(uint64_t *)dst = v;
	else if (o->type == CONFIG_OPT_FILE)
		return config_check_file(p, d, o, dst);
	return 0;
}

/* Parses argv as key=value options of d->opts into base. */
static int
config_parse_opts(struct config_parser *p, const struct config_directive *d, char **argv, int argc,
                  void *base)
{
	uint32_t seen = 0;

	for (int i = 0; i < argc; i++) {
		const struct config_opt *o;
		char *key, *val;

		if (conf_split_kv(argv[i], &key, &val) < 0)
			return config_error(p, "%s: expected key=value, got \"%s\"", d->name,
			                    argv[i]);
		for (o = d->opts; o != NULL && o->key != NULL; o++)
			if (strcmp(o->key, key) == 0)
				break;
		if (o == NULL || o->key == NULL)
			return config_error(p, "%s: unknown option '%s'", d->name, key);
		if (seen & (1u << (o - d->opts)))
			return config_error(p, "%s: option '%s' given twice", d->name, key);
		seen |= 1u << (o - d->opts);
		if (config_parse_value(p, d, o, val, base) < 0)
			return -1;
	}
	for (const struct config_opt *o = d->opts; o != NULL && o->key != NULL; o++)
		if (o->required && !(seen & (1u << (o - d->opts))))
			return config_error(p, "%s: missing option %s=", d->name, o->key);
	return 0;
}

struct config_addr {
	char host[256];
	uint16_t port;
	struct sockaddr_storage addr;
	socklen_t addrlen;
};

/*
 * Resolves HOST:PORT once, at load time. Listeners take numeric addresses only: a name
 * that resolved differently after a reload would silently move a listener.
 */
static int
config_resolve(struct config_parser *p, const struct config_directive *d, const char *text,
               int passive, struct config_addr *a)
{
	struct addrinfo hints, *res, *ai;
	const char *node;
	char port[8];
	int rc;

	if (conf_parse_hostport(text, a->host, sizeof a->host, &a->port) < 0)
		return config_error(p,
		                    "%s: expected HOST:PORT (port 1..65535, IPv6 in brackets), "
		                    "got \"%s\"",
		                    d->name, text);
	node = a->host;
	memset(&hints, 0, sizeof hints);
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_NUMERICSERV;
	if (passive) {
		hints.ai_flags |= AI_NUMERICHOST | AI_PASSIVE;
		if (node[0] == '\0' || strcmp(node, "*") == 0)
			node = "0.0.0.0";
	} else if (!config_is_host(node)) {
		return config_error(p, "%s: bad host name \"%s\"", d->name, node);
	}
	snprintf(port, sizeof port, "%u", (unsigned)a->port);
	rc = getaddrinfo(node, port, &hints, &res);
	if (rc != 0 && passive)
		return config_error(p, "%s: \"%s\" is not a numeric IP address", d->name, node);
	if (rc != 0)
		return config_error(p, "%s: cannot resolve \"%s\": %s", d->name, node,
		                    gai_strerror(rc));
	/*
	 * Prefer IPv4 for names: Debian lists ::1 first for "localhost", yet most local
	 * backends (the demo's mock backends too) bind 127.0.0.1 only.
	 */
	for (ai = res; ai != NULL && ai->ai_family != AF_INET; ai = ai->ai_next)
		;
	if (ai == NULL)
		ai = res;
	memcpy(&a->addr, ai->ai_addr, ai->ai_addrlen);
	a->addrlen = ai->ai_addrlen;
	freeaddrinfo(res);
	return 0;
}

/* clang-format off */
static const struct config_opt config_listen_opts[] = {
	{"cert", CONFIG_OPT_FILE, offsetof(struct config_listen, cert), 0, CONFIG_PATH_MAX, 0, 0, 1},
	{"key", CONFIG_OPT_FILE, offsetof(struct config_listen, key), 0, CONFIG_PATH_MAX, 0, 0, 1},
	{.key = NULL},
};
/* clang-format on */

static int
config_dir_listen(struct config_parser *p, const struct config_directive *d, char **argv, int argc)
{
	struct config *c = p->c;
	struct config_listen l;
	struct config_addr a;

	memset(&l, 0, sizeof l);
	if (strlen(argv[0]) >= sizeof l.text)
		return config_error(p, "listen: address \"%s\" is too long", argv[0]);
	if (config_resolve(p, d, argv[0], 1, &a) < 0)
		return -1;
	if (argc > 1 && strcmp(argv[1], "tls") != 0)
		return config_error(p, "listen: expected 'tls' after the address, got \"%s\"",
		                    argv[1]);
	l.tls = argc > 1;
	if (l.tls && config_parse_opts(p, d, argv + 2, argc - 2, &l) < 0)
		return -1;
	if (l.tls) {
		/* Load the pair now, so that -t and a reload catch a bad or mismatched
		 * certificate with its line, not the daemon at start-up. */
		char msg[512];
		SSL_CTX *ctx = tls_server_ctx(l.cert, l.key, msg, sizeof msg);
		if (ctx == NULL)
			return config_error(p, "listen: %s", msg);
		SSL_CTX_free(ctx);
	}
	for (int i = 0; i < c->nlistens; i++)
		if (c->listens[i].addrlen == a.addrlen &&
		    memcmp(&c->listens[i].addr, &a.addr, a.addrlen) == 0)
			return config_error(p, "listen: %s is already configured", argv[0]);
	util_strlcpy(l.text, argv[0], sizeof l.text);
	l.addr = a.addr;
	l.addrlen = a.addrlen;
	c->listens = config_append(c->listens, &c->nlistens, &l, sizeof l);
	return 0;
}

static int
config_dir_workers(struct config_parser *p, const struct config_directive *d, char **argv, int argc)
{
	uint64_t v;

	if (strcmp(argv[0], "auto") == 0) {
		p->c->workers = 0;
		return 0;
	}
	if (conf_parse_uint(argv[0], 1, 64, &v) < 0)
		return config_error(p, "workers: must be auto or 1..64, got \"%s\"", argv[0]);
	p->c->workers = (int)v;
	return 0;
}

static int
config_dir_strategy(struct config_parser *p, const struct config_directive *d, char **argv,
                    int argc)
{
	int s = balance_strategy_from_name(argv[0]);

	if (s < 0)
		return config_error(p, "strategy: unknown strategy '%s' (valid: %s)", argv[0],
		                    balance_strategy_list());
	p->c->strategy = s;
	return 0;
}

/* clang-format off */
static const struct config_opt config_backend_id = {
	"id", CONFIG_OPT_NAME, offsetof(struct config_backend, id), 0, CONFIG_NAME_MAX, 0, 0, 0};
/* clang-format on */

/* clang-format off */
static const struct config_opt config_backend_opts[] = {
	{"weight", CONFIG_OPT_INT, offsetof(struct config_backend, weight), 1, 1000, 0, 0, 0},
	{"dc", CONFIG_OPT_NAME, offsetof(struct config_backend, dc), 0, CONFIG_NAME_MAX, 0, 0, 0},
	{"max_conns", CONFIG_OPT_INT, offsetof(struct config_backend, max_conns), 1, 100000, 0, 0, 0},
	{.key = NULL},
};
/* clang-format on */

static int
config_dir_backend(struct config_parser *p, const struct config_directive *d, char **argv, int argc)
{
	struct config *c = p->c;
	struct config_backend b;
	struct config_addr a;

	memset(&b, 0, sizeof b);
	b.weight = 1;
	b.max_conns = 256;
	if (config_parse_value(p, d, &config_backend_id, argv[0], &b) < 0 ||
	    config_resolve(p, d, argv[1], 0, &a) < 0 ||
	    config_parse_opts(p, d, argv + 2, argc - 2, &b) < 0)
		return -1;
	for (int i = 0; i < c->nbackends; i++)
		if (strcmp(c->backends[i].id, b.id) == 0)
			return config_error(p, "backend: duplicate id '%s'", b.id);
	if (c->nbackends >= BALANCE_MAX_TARGETS)
		return config_error(p, "backend: at most %d backends", BALANCE_MAX_TARGETS);
	util_strlcpy(b.host, a.host, sizeof b.host);
	b.port = a.port;
	b.addr = a.addr;
	b.addrlen = a.addrlen;
	c->backends = config_append(c->backends, &c->nbackends, &b, sizeof b);
	p->backend_loc = config_append(p->backend_loc, &p->nbackend_loc, &p->loc, sizeof p->loc);
	return 0;
}

/* clang-format off */
static const struct config_opt config_datacenter_name = {
	"name", CONFIG_OPT_NAME, offsetof(struct config_datacenter, name), 0, CONFIG_NAME_MAX, 0, 0, 0};
/* clang-format on */

/* clang-format off */
static const struct config_opt config_datacenter_opts[] = {
	{"lat", CONFIG_OPT_DOUBLE, offsetof(struct config_datacenter, lat), 0, 0, -90, 90, 1},
	{"lon", CONFIG_OPT_DOUBLE, offsetof(struct config_datacenter, lon), 0, 0, -180, 180, 1},
	{"residency", CONFIG_OPT_NAME, offsetof(struct config_datacenter, residency), 0, CONFIG_NAME_MAX, 0, 0, 0},
	{.key = NULL},
};
/* clang-format on */

static const struct config_datacenter *
config_find_datacenter(const struct config *c, const char *name)
{
	for (int i = 0; i < c->ndatacenters; i++)
		if (strcmp(c->datacenters[i].name, name) == 0)
			return &c->datacenters[i];
	return NULL;
}

static int
config_dir_datacenter(struct config_parser *p, const struct config_directive *d, char **argv,
                      int argc)
{
	struct config *c = p->c;
	struct config_datacenter dc;

	memset(&dc, 0, sizeof dc);
	if (config_parse_value(p, d, &config_datacenter_name, argv[0], &dc) < 0 ||
	    config_parse_opts(p, d, argv + 1, argc - 1, &dc) < 0)
		return -1;
	if (config_find_datacenter(c, dc.name) != NULL)
		return config_error(p, "datacenter: duplicate name '%s'", dc.name);
	if (dc.residency[0] != '\0' && !geo_region_valid(dc.residency))
		return config_error(p, "datacenter: residency must be EU, EEA or an ISO country "
		                       "code (DE), got \"%s\"", dc.residency);
	if (c->ndatacenters >= GEO_MAX_DC)
		return config_error(p, "datacenter: at most %d datacenters", GEO_MAX_DC);
	c->datacenters = config_append(c->datacenters, &c->ndatacenters, &dc, sizeof dc);
	return 0;
}

/* clang-format off */
static const struct config_opt config_geo_static_opts[] = {
	{"country", CONFIG_OPT_NAME, offsetof(struct config_geo_static, country), 0, 3, 0, 0, 0},
	{"lat", CONFIG_OPT_DOUBLE, offsetof(struct config_geo_static, lat), 0, 0, -90, 90, 0},
	{"lon", CONFIG_OPT_DOUBLE, offsetof(struct config_geo_static, lon), 0, 0, -180, 180, 0},
	{.key = NULL},
};
/* clang-format on */

/* geo_static CIDR [country=CC] [lat=DEG lon=DEG]: a location for a client prefix. */
static int
config_dir_geo_static(struct config_parser *p, const struct config_directive *d, char **argv,
                      int argc)
{
	struct config *c = p->c;
	struct config_geo_static g;
	int has_lat = 0, has_lon = 0;

	memset(&g, 0, sizeof g);
	if (cidr_parse(argv[0], &g.net) < 0)
		return config_error(p, "geo_static: expected a CIDR (203.0.113.0/24), got \"%s\"",
		                    argv[0]);
	g.lat = g.lon = 1000; /* out of range: tells whether lat=/lon= were given */
	if (config_parse_opts(p, d, argv + 1, argc - 1, &g) < 0)
		return -1;
	has_lat = g.lat <= 90;
	has_lon = g.lon <= 180;
	if (has_lat != has_lon)
		return config_error(p, "geo_static: lat= and lon= go together");
	if (g.country[0] != '\0' && (strlen(g.country) != 2 ||
	                              strspn(g.country, "ABCDEFGHIJKLMNOPQRSTUVWXYZ") != 2))
		return config_error(p, "geo_static: country must be an ISO 3166 code (DE), got \"%s\"",
		                    g.country);
	if (!has_lat && g.country[0] == '\0')
		return config_error(p, "geo_static: give country= or lat= and lon=");
	g.has_pos = has_lat;
	if (!has_lat)
		g.lat = g.lon = 0;
	c->geo_static = config_append(c->geo_static, &c->ngeo_static, &g, sizeof g);
	return 0;
}

/* geo_db FILE: a readable MaxMind DB, opened once here so that -t catches a bad one. */
static int
config_dir_geo_db(struct config_parser *p, const struct config_directive *d, char **argv, int argc)
{
	char err[CONFIG_PATH_MAX + 128];

	if (config_parse_value(p, d, d->value, argv[0], p->c) < 0)
		return -1;
	if (geo_db_check(p->c->geo_db, err, sizeof err) < 0)
		return config_error(p, "geo_db: %s", err);
	return 0;
}

/* clang-format off */
static const struct config_opt config_geo_http_opts[] = {
	{"timeout", CONFIG_OPT_DURATION, CONFIG_AT(geo_http.timeout_ms), 1, 60 * CONFIG_SECOND, 0, 0, 0},
	{"ttl", CONFIG_OPT_DURATION, CONFIG_AT(geo_http.ttl_ms), 1000, CONFIG_DUR_MAX, 0, 0, 0},
	{"negative_ttl", CONFIG_OPT_DURATION, CONFIG_AT(geo_http.negative_ttl_ms), 1000, CONFIG_DUR_MAX, 0, 0, 0},
	{"max", CONFIG_OPT_INT, CONFIG_AT(geo_http.max), 1, 1024, 0, 0, 0},
	{.key = NULL},
};
/* clang-format on */

/* geo_http URL [options]: an HTTP(S) URL whose "{ip}" becomes the client's address. */
static int
config_dir_geo_http(struct config_parser *p, const struct config_directive *d, char **argv,
                    int argc)
{
	const char *u = argv[0];

	if ((strncmp(u, "http://", 7) != 0 && strncmp(u, "https://", 8) != 0) ||
	    strstr(u, "{ip}") == NULL || strlen(u) >= sizeof p->c->geo_http.url ||
	    strpbrk(u, " \t\"") != NULL)
		return config_error(p, "geo_http: expected an http:// or https:// URL with {ip} in "
		                       "it, got \"%s\"", u);
	util_strlcpy(p->c->geo_http.url, u, sizeof p->c->geo_http.url);
	return config_parse_opts(p, d, argv + 1, argc - 1, p->c);
}

static int
config_dir_geo_mode(struct config_parser *p, const struct config_directive *d, char **argv,
                    int argc)
{
	if (strcmp(argv[0], "distance") == 0)
		p->c->geo_mode = CONFIG_GEO_DISTANCE;
	else if (strcmp(argv[0], "latency-aware") == 0)
		p->c->geo_mode = CONFIG_GEO_LATENCY;
	else
		return config_error(p, "geo_mode: distance or latency-aware, got \"%s\"", argv[0]);
	return 0;
}

/* clang-format off */
static const struct config_opt config_route_prefix = {
	"prefix", CONFIG_OPT_URLPATH, offsetof(struct config_route, prefix), 0,
	sizeof(((struct config_route *)NULL)->prefix), 0, 0, 0};
/* clang-format on */

/* clang-format off */
static const struct config_opt config_route_opts[] = {
	{"auth", CONFIG_OPT_AUTH, offsetof(struct config_route, auth), 0, 0, 0, 0, 0},
	{"forward_auth", CONFIG_OPT_BOOL, offsetof(struct config_route, forward_auth), 0, 0, 0, 0, 0},
	{"cache", CONFIG_OPT_BOOL, offsetof(struct config_route, cache), 0, 0, 0, 0, 0},
	{"cache_ttl", CONFIG_OPT_DURATION, offsetof(struct config_route, cache_ttl_ms), 1, CONFIG_DUR_MAX, 0, 0, 0},
	{"min_tier", CONFIG_OPT_NAME, offsetof(struct config_route, min_tier), 0, CONFIG_NAME_MAX, 0, 0, 0},
	{.key = NULL},
};
/* clang-format on */

static int
config_dir_route(struct config_parser *p, const struct config_directive *d, char **argv, int argc)
{
	struct config *c = p->c;
	struct config_route r;

	memset(&r, 0, sizeof r);
	r.auth = CONFIG_AUTH_NONE;
	if (config_parse_value(p, d, &config_route_prefix, argv[0], &r) < 0 ||
	    config_parse_opts(p, d, argv + 1, argc - 1, &r) < 0)
		return -1;
	if (r.auth == CONFIG_AUTH_OFF && r.min_tier[0] != '\0')
		return config_error(p, "route: min_tier= needs an identity, and auth=off never "
		                       "looks at credentials");
	if (r.cache_ttl_ms != 0 && !r.cache)
		return config_error(p, "route: cache_ttl= needs cache=on");
	r.prefix_len = strlen(r.prefix);
	for (int i = 0; i < c->nroutes; i++)
		if (strcmp(c->routes[i].prefix, r.prefix) == 0)
			return config_error(p, "route: %s is already configured", r.prefix);
	c->routes = config_append(c->routes, &c->nroutes, &r, sizeof r);
	return 0;
}

/* Directives made only of key=value options on struct config (timeouts, limits, ...). */
static int
config_dir_options(struct config_parser *p, const struct config_directive *d, char **argv, int argc)
{
	if (config_parse_opts(p, d, argv, argc, p->c) < 0)
		return -1;
	return d->check != NULL ? d->check(p, d) : 0;
}

/* Directives with one value on struct config (retries, ip_limit). */
static int
config_dir_access_log(struct config_parser *p, const struct config_directive *d, char **argv,
		      int argc)
{
	const char *v = argv[0];

	if (strcmp(v, "off") == 0)
		v = "";
	else if (v[0] == '\0' || strlen(v) >= sizeof(p->c->access_log))
		return config_error(p, "access_log: a file path, stdout or off");
	util_strlcpy(p->c->access_log, v, sizeof(p->c->access_log));
	return 0;
}

static int
config_dir_value(struct config_parser *p, const struct config_directive *d, char **argv, int argc)
{
	return config_parse_value(p, d, d->value, argv[0], p->c);
}

/* CIDR lists (admin_allow, trusted_proxy, ip_limit_exempt): one or more per line. */
static int
config_dir_cidrs(struct config_parser *p, const struct config_directive *d, char **argv, int argc)
{
	struct cidr **list = (struct cidr **)(void *)((char *)p->c + d->list_off);
	int *count = (int *)(void *)((char *)p->c + d->count_off);

	for (int i = 0; i < argc; i++) {
		struct cidr cidr;

		if (cidr_parse(argv[i], &cidr) < 0)
			return config_error(p,
			                    "%s: expected an address or CIDR (10.0.0.0/8, ::1), "
			                    "got \"%s\"",
			                    d->name, argv[i]);
		*list = config_append(*list, count, &cidr, sizeof cidr);
	}
	return 0;
}

/* clang-format off */
static const struct config_opt config_redis_opts[] = {
	{"timeout", CONFIG_OPT_DURATION, CONFIG_AT(redis_timeout_ms), 10, 60000, 0, 0, 0},
	{"tls", CONFIG_OPT_BOOL, CONFIG_AT(redis_tls), 0, 0, 0, 0, 0},
	{.key = NULL},
};
/* clang-format on */

/* database URL: a postgresql:// URL's syntax (parameters, port) is checked here too, so
 * that -t catches it without connecting. */
static int
config_dir_database(struct config_parser *p, const struct config_directive *d, char **argv,
                    int argc)
{
	char err[256];

	if (config_dir_value(p, d, argv, argc) < 0)
		return -1;
	if (store_url_check(p->c->database, err, sizeof err) < 0)
		return config_error(p, "database: %s", err);
	return 0;
}

/* redis URL [timeout=D] [tls=on|off]: the URL is checked here, so that -t catches it. */
static int
config_dir_redis(struct config_parser *p, const struct config_directive *d, char **argv, int argc)
{
	struct redis_url u;
	char err[256];

	if (strlen(argv[0]) >= sizeof(p->c->redis))
		return config_error(p, "redis: the URL is too long");
	if (redis_url_parse(argv[0], &u, err, sizeof err) < 0)
		return config_error(p, "redis: %s", err);
	util_strlcpy(p->c->redis, argv[0], sizeof(p->c->redis));
	if (config_parse_opts(p, d, argv + 1, argc - 1, p->c) < 0)
		return -1;
	if (p->c->redis_tls)
		return config_error(p, "redis: tls=on is not available: this build's hiredis (0.14) "
		                       "has no TLS; reach Redis over a private network or a TLS "
		                       "tunnel (stunnel, spiped)");
	return 0;
}

static int
config_dir_redis_failure(struct config_parser *p, const struct config_directive *d, char **argv,
                         int argc)
{
	if (strcmp(argv[0], "open") == 0)
		p->c->redis_failure = CONFIG_REDIS_OPEN;
	else if (strcmp(argv[0], "closed") == 0)
		p->c->redis_failure = CONFIG_REDIS_CLOSED;
	else
		return config_error(p, "redis_failure: open or closed, got \"%s\"", argv[0]);
	return 0;
}

static int
config_check_limits(struct config_parser *p, const struct config_directive *d)
{
	const struct config_limits *l = &p->c->limits;
	char a[32], b[32];

	if (l->uri >= l->header)
		return config_error(p, "limits: uri (%s) must be smaller than header (%s)",
		                    config_format_size(l->uri, a, sizeof a),
		                    config_format_size(l->header, b, sizeof b));
	return 0;
}

/* shared=redis or off; whether `redis` is there is known at the end (config_finish). */
static int
config_check_cache(struct config_parser *p, const struct config_directive *d)
{
	const char *s = p->c->cache.shared;

	if (s[0] != '\0' && strcmp(s, "redis") != 0 && strcmp(s, "off") != 0)
		return config_error(p, "cache: shared is redis or off, got \"%s\"", s);
	return 0;
}

static int
config_check_health(struct config_parser *p, const struct config_directive *d)
{
	const struct config_health *h = &p->c->health;
	char a[32], b[32];

	if (h->timeout_ms >= h->interval_ms)
		return config_error(p,
		                    "health_check: timeout (%s) must be shorter than interval (%s)",
		                    conf_format_duration(h->timeout_ms, a, sizeof a),
		                    conf_format_duration(h->interval_ms, b, sizeof b));
	return 0;
}

/* clang-format off */
static const struct config_opt config_timeouts_opts[] = {
	{"connect", CONFIG_OPT_DURATION, CONFIG_AT(timeouts.connect_ms), 1, CONFIG_DUR_MAX, 0, 0, 0},
	{"response", CONFIG_OPT_DURATION, CONFIG_AT(timeouts.response_ms), 1, CONFIG_DUR_MAX, 0, 0, 0},
	{"client_header", CONFIG_OPT_DURATION, CONFIG_AT(timeouts.client_header_ms), 1, CONFIG_DUR_MAX, 0, 0, 0},
	{"client_idle", CONFIG_OPT_DURATION, CONFIG_AT(timeouts.client_idle_ms), 1, CONFIG_DUR_MAX, 0, 0, 0},
	{"client_body", CONFIG_OPT_DURATION, CONFIG_AT(timeouts.client_body_ms), 100, CONFIG_DUR_MAX, 0, 0, 0},
	{.key = NULL},
};
/* clang-format on */

/* clang-format off */
static const struct config_opt config_limits_opts[] = {
	/* The whole head sits in one per-connection buffer: bounded to keep memory bounded. */
	{"header", CONFIG_OPT_SIZE, CONFIG_AT(limits.header), CONFIG_KB, CONFIG_MB, 0, 0, 0},
	{"headers", CONFIG_OPT_U64, CONFIG_AT(limits.headers), 1, HTTP_MAX_HEADERS, 0, 0, 0},
	{"body", CONFIG_OPT_SIZE, CONFIG_AT(limits.body), 0, 1024 * CONFIG_GB, 0, 0, 0},
	{"uri", CONFIG_OPT_SIZE, CONFIG_AT(limits.uri), 256, CONFIG_MB, 0, 0, 0},
	/* Enforced at accept (worker.c, connlimit.c); 0 = no limit. */
	{"conns", CONFIG_OPT_U64, CONFIG_AT(limits.conns), 0, 10000000, 0, 0, 0},
	{"conns_per_ip", CONFIG_OPT_U64, CONFIG_AT(limits.conns_per_ip), 0, 10000000, 0, 0, 0},
	{"min_body_rate", CONFIG_OPT_SIZE, CONFIG_AT(limits.min_body_rate), 0, CONFIG_GB, 0, 0, 0},
	{.key = NULL},
};
/* clang-format on */

/* clang-format off */
static const struct config_opt config_health_opts[] = {
	{"path", CONFIG_OPT_URLPATH, CONFIG_AT(health.path), 0, CONFIG_SIZE(health.path), 0, 0, 0},
	{"interval", CONFIG_OPT_DURATION, CONFIG_AT(health.interval_ms), 1, CONFIG_DUR_MAX, 0, 0, 0},
	{"timeout", CONFIG_OPT_DURATION, CONFIG_AT(health.timeout_ms), 1, CONFIG_DUR_MAX, 0, 0, 0},
	{"rise", CONFIG_OPT_INT, CONFIG_AT(health.rise), 1, 100, 0, 0, 0},
	{"fall", CONFIG_OPT_INT, CONFIG_AT(health.fall), 1, 100, 0, 0, 0},
	{.key = NULL},
};
/* clang-format on */

/* clang-format off */
static const struct config_opt config_circuit_opts[] = {
	{"failures", CONFIG_OPT_INT, CONFIG_AT(circuit.failures), 1, 1000, 0, 0, 0},
	{"open", CONFIG_OPT_DURATION, CONFIG_AT(circuit.open_ms), 1, CONFIG_DUR_MAX, 0, 0, 0},
	{.key = NULL},
};
/* clang-format on */

/* clang-format off */
static const struct config_opt config_queue_opts[] = {
	{"max", CONFIG_OPT_INT, CONFIG_AT(queue.max), 0, 1000000, 0, 0, 0},
	{"timeout", CONFIG_OPT_DURATION, CONFIG_AT(queue.timeout_ms), 1, CONFIG_DUR_MAX, 0, 0, 0},
	{.key = NULL},
};

static const struct config_opt config_cache_opts[] = {
	{"ttl", CONFIG_OPT_DURATION, CONFIG_AT(cache.ttl_ms), 0, CONFIG_DUR_MAX, 0, 0, 0},
	{"max_memory", CONFIG_OPT_SIZE, CONFIG_AT(cache.max_memory), 64 * CONFIG_KB, 64 * CONFIG_GB, 0, 0, 0},
	{"shared", CONFIG_OPT_NAME, CONFIG_AT(cache.shared), 0, CONFIG_SIZE(cache.shared), 0, 0, 0},
	{"shared_max_entry", CONFIG_OPT_SIZE, CONFIG_AT(cache.shared_max_entry), CONFIG_KB, 64 * CONFIG_MB, 0, 0, 0},
	{.key = NULL},
};
/* clang-format on */

/* clang-format off */
static const struct config_opt config_retries_value = {
	"count", CONFIG_OPT_INT, CONFIG_AT(retries), 0, 10, 0, 0, 0};
static const struct config_opt config_geo_db_value = {
	"file", CONFIG_OPT_FILE, CONFIG_AT(geo_db), 0, CONFIG_SIZE(geo_db), 0, 0, 0};
static const struct config_opt config_geo_default_value = {
	"datacenter", CONFIG_OPT_NAME, CONFIG_AT(geo_default), 0, CONFIG_SIZE(geo_default), 0, 0, 0};
/* clang-format on */

/*
 * Endpoints of the control plane and the store: checked and kept, though this version
 * opens none of them yet (gatewayd(8) says so at start-up); accepted so that
 * configurations written for the whole system load.
 */
/* clang-format off */
static const struct config_opt config_control_value = {
	"url", CONFIG_OPT_URL, CONFIG_AT(control), 0, CONFIG_SIZE(control), 0, 0, 0};
static const struct config_opt config_publish_value = {
	"url", CONFIG_OPT_URL, CONFIG_AT(publish), 0, CONFIG_SIZE(publish), 0, 0, 0};
static const struct config_opt config_database_value = {
	"url", CONFIG_OPT_URL, CONFIG_AT(database), 0, CONFIG_SIZE(database), 0, 0, 0};
static const char *const config_nng_schemes[] = {"ipc://", "tcp://", NULL};
static const char *const config_database_schemes[] = {"sqlite:", "postgresql://", "postgres://",
                                                      NULL};

static const struct config_opt config_ip_limit_value = {
	"rate", CONFIG_OPT_RATE, CONFIG_AT(ip_limit), 0, 0, 0, 0, 0};
/* clang-format on */

/* clang-format off */
static const struct config_opt config_ban_opts[] = {
	{"threshold", CONFIG_OPT_U64, CONFIG_AT(ban.threshold), 1, 1000000, 0, 0, 0},
	{"base", CONFIG_OPT_DURATION, CONFIG_AT(ban.base_ms), 1000, CONFIG_DUR_MAX, 0, 0, 0},
	{"multiplier", CONFIG_OPT_U64, CONFIG_AT(ban.multiplier), 1, 100, 0, 0, 0},
	{"max", CONFIG_OPT_DURATION, CONFIG_AT(ban.max_ms), 1000, CONFIG_DUR_MAX, 0, 0, 0},
	{NULL, 0, 0, 0, 0, 0, 0, 0},
};

static const struct config_opt config_jwt_opts[] = {
	{"alg", CONFIG_OPT_NAME, CONFIG_AT(jwt.alg), 0, CONFIG_SIZE(jwt.alg), 0, 0, 0},
	{"access_ttl", CONFIG_OPT_DURATION, CONFIG_AT(jwt.access_ttl_ms), 1000, CONFIG_DUR_MAX, 0, 0, 0},
	{"refresh_ttl", CONFIG_OPT_DURATION, CONFIG_AT(jwt.refresh_ttl_ms), 1000, CONFIG_DUR_MAX, 0, 0, 0},
	{"leeway", CONFIG_OPT_DURATION, CONFIG_AT(jwt.leeway_ms), 0, 3600000, 0, 0, 0},
	{"issuer", CONFIG_OPT_NAME, CONFIG_AT(jwt.issuer), 0, CONFIG_SIZE(jwt.issuer), 0, 0, 0},
	{"private_key", CONFIG_OPT_FILE, CONFIG_AT(jwt.private_key), 0, CONFIG_SIZE(jwt.private_key), 0, 0, 0},
	{"public_key", CONFIG_OPT_FILE, CONFIG_AT(jwt.public_key), 0, CONFIG_SIZE(jwt.public_key), 0, 0, 0},
	{NULL, 0, 0, 0, 0, 0, 0, 0},
};
/* clang-format on */

static int
config_check_jwt(struct config_parser *p, const struct config_directive *d)
{
	const struct config_jwt *j = &p->c->jwt;

	if (strcmp(j->alg, "HS256") != 0 && strcmp(j->alg, "RS256") != 0 &&
	    strcmp(j->alg, "ES256") != 0)
		return config_error(p, "jwt: alg must be HS256, RS256 or ES256, got \"%s\"", j->alg);
	if (strcmp(j->alg, "HS256") != 0 && (j->private_key[0] == '\0' || j->public_key[0] == '\0'))
		return config_error(p, "jwt: alg=%s needs private_key=FILE and public_key=FILE",
		                    j->alg);
	return 0;
}

/* tier NAME N/DURATION: replaces a known tier's limit or adds a tier ranked above all. */
static int
config_dir_tier(struct config_parser *p, const struct config_directive *d, char **argv, int argc)
{
	struct config *c = p->c;
	struct conf_rate rate;
	int i;

	if (!config_is_name(argv[0], CONFIG_NAME_MAX))
		return config_error(p, "tier: bad name \"%s\"", argv[0]);
	if (conf_parse_rate(argv[1], &rate) < 0)
		return config_error(p, "tier: expected a rate N/DURATION (5/60s), got \"%s\"",
		                    argv[1]);
	i = config_tier_find(c, argv[0]);
	if (i < 0) {
		if (c->ntiers == CONFIG_MAX_TIERS)
			return config_error(p, "tier: at most %d tiers", CONFIG_MAX_TIERS);
		i = c->ntiers++;
		util_strlcpy(c->tiers[i].name, argv[0], sizeof c->tiers[i].name);
	}
	c->tiers[i].rate = rate;
	return 0;
}

static int
config_dir_register_tiers(struct config_parser *p, const struct config_directive *d, char **argv,
                          int argc)
{
	struct config *c = p->c;

	if (argc > CONFIG_MAX_TIERS)
		return config_error(p, "register_tiers: at most %d tiers", CONFIG_MAX_TIERS);
	c->nregister_tiers = 0;
	for (int i = 0; i < argc; i++)
		util_strlcpy(c->register_tiers[c->nregister_tiers++], argv[i],
		             sizeof c->register_tiers[0]);
	return 0;
}

int
config_tier_find(const struct config *c, const char *name)
{
	for (int i = 0; i < c->ntiers; i++)
		if (strcmp(c->tiers[i].name, name) == 0)
			return i;
	return -1;
}

/*
 * Initializers of config_directives[] (a macro because a function cannot yield a static
 * initializer): lists of CIDRs.
 */
#define CONFIG_CIDRS(n, list, count)                                                               \
	{                                                                                          \
		.name = n, .repeatable = 1, .min_args = 1, .max_args = -1, .usage = n " CIDR...",  \
		.handler = config_dir_cidrs, .list_off = CONFIG_AT(list),                          \
		.count_off = CONFIG_AT(count)                                                      \
	}

/* In SPEC section 2's order. */
/* clang-format off */
static const struct config_directive config_directives[] = {
	{.name = "listen", .repeatable = 1, .min_args = 1, .max_args = -1,
	 .usage = "listen ADDR:PORT [tls cert=FILE key=FILE]",
	 .handler = config_dir_listen, .opts = config_listen_opts},
	{.name = "workers", .min_args = 1, .max_args = 1,
	 .usage = "workers auto|1..64", .handler = config_dir_workers},
	{.name = "control", .min_args = 1, .max_args = 1,
	 .usage = "control ipc://PATH|tcp://HOST:PORT", .handler = config_dir_value,
	 .value = &config_control_value, .schemes = config_nng_schemes},
	{.name = "publish", .min_args = 1, .max_args = 1,
	 .usage = "publish ipc://PATH|tcp://HOST:PORT", .handler = config_dir_value,
	 .value = &config_publish_value, .schemes = config_nng_schemes},
	{.name = "access_log", .min_args = 1, .max_args = 1,
	 .usage = "access_log FILE|stdout|off", .handler = config_dir_access_log},
	{.name = "database", .min_args = 1, .max_args = 1,
	 .usage = "database sqlite:PATH|postgresql://...", .handler = config_dir_database,
	 .value = &config_database_value, .schemes = config_database_schemes},
	{.name = "redis", .min_args = 1, .max_args = 3,
	 .usage = "redis redis://[[USER]:PASSWORD@]HOST[:PORT][/DB] [timeout=D] [tls=on|off]",
	 .handler = config_dir_redis, .opts = config_redis_opts},
	{.name = "redis_failure", .min_args = 1, .max_args = 1,
	 .usage = "redis_failure open|closed", .handler = config_dir_redis_failure},
	{.name = "strategy", .min_args = 1, .max_args = 1,
	 .usage = "strategy NAME", .handler = config_dir_strategy},
	{.name = "backend", .repeatable = 1, .min_args = 2, .max_args = -1,
	 .usage = "backend ID HOST:PORT [weight=N] [dc=NAME] [max_conns=N]",
	 .handler = config_dir_backend, .opts = config_backend_opts},
	{.name = "timeouts", .min_args = 1, .max_args = -1,
	 .usage = "timeouts [connect=D] [response=D] [client_header=D] [client_idle=D] "
	          "[client_body=D]",
	 .handler = config_dir_options, .opts = config_timeouts_opts},
	{.name = "limits", .min_args = 1, .max_args = -1,
	 .usage = "limits [header=SIZE] [headers=N] [body=SIZE] [uri=SIZE] [conns=N] "
	          "[conns_per_ip=N] [min_body_rate=SIZE]",
	 .handler = config_dir_options, .opts = config_limits_opts, .check = config_check_limits},
	{.name = "health_check", .min_args = 1, .max_args = -1,
	 .usage = "health_check [path=/P] [interval=D] [timeout=D] [rise=N] [fall=N]",
	 .handler = config_dir_options, .opts = config_health_opts, .check = config_check_health},
	{.name = "circuit", .min_args = 1, .max_args = -1,
	 .usage = "circuit [failures=N] [open=D]",
	 .handler = config_dir_options, .opts = config_circuit_opts},
	{.name = "retries", .min_args = 1, .max_args = 1,
	 .usage = "retries 0..10", .handler = config_dir_value, .value = &config_retries_value},
	{.name = "queue", .min_args = 1, .max_args = -1,
	 .usage = "queue [max=N] [timeout=D]",
	 .handler = config_dir_options, .opts = config_queue_opts},
	{.name = "cache", .min_args = 1, .max_args = -1,
	 .usage = "cache [ttl=D] [max_memory=SIZE] [shared=redis|off] [shared_max_entry=SIZE]",
	 .handler = config_dir_options, .opts = config_cache_opts, .check = config_check_cache},
	{.name = "tier", .repeatable = 1, .min_args = 2, .max_args = 2,
	 .usage = "tier NAME N/DURATION", .handler = config_dir_tier},
	{.name = "ip_limit", .min_args = 1, .max_args = 1,
	 .usage = "ip_limit N/DURATION", .handler = config_dir_value, .value = &config_ip_limit_value},
	CONFIG_CIDRS("ip_limit_exempt", ip_limit_exempt, nip_limit_exempt),
	{.name = "ban", .min_args = 1, .max_args = -1,
	 .usage = "ban [threshold=N] [base=D] [multiplier=N] [max=D]",
	 .handler = config_dir_options, .opts = config_ban_opts},
	{.name = "jwt", .min_args = 1, .max_args = -1,
	 .usage = "jwt [alg=HS256|RS256|ES256] [access_ttl=D] [refresh_ttl=D] [issuer=NAME] "
	          "[leeway=D] [private_key=FILE public_key=FILE]",
	 .handler = config_dir_options, .opts = config_jwt_opts, .check = config_check_jwt},
	{.name = "register_tiers", .min_args = 1, .max_args = -1,
	 .usage = "register_tiers TIER...", .handler = config_dir_register_tiers},
	CONFIG_CIDRS("admin_allow", admin_allow, nadmin_allow),
	CONFIG_CIDRS("trusted_proxy", trusted_proxy, ntrusted_proxy),
	{.name = "datacenter", .repeatable = 1, .min_args = 1, .max_args = -1,
	 .usage = "datacenter NAME lat=DEG lon=DEG",
	 .handler = config_dir_datacenter, .opts = config_datacenter_opts},
	{.name = "geo_db", .min_args = 1, .max_args = 1, .usage = "geo_db FILE.mmdb",
	 .handler = config_dir_geo_db, .value = &config_geo_db_value},
	{.name = "geo_static", .repeatable = 1, .min_args = 1, .max_args = 4,
	 .usage = "geo_static CIDR [country=CC] [lat=DEG lon=DEG]",
	 .handler = config_dir_geo_static, .opts = config_geo_static_opts},
	{.name = "geo_default", .min_args = 1, .max_args = 1, .usage = "geo_default DATACENTER",
	 .handler = config_dir_value, .value = &config_geo_default_value},
	{.name = "geo_mode", .min_args = 1, .max_args = 1, .usage = "geo_mode distance|latency-aware",
	 .handler = config_dir_geo_mode},
	{.name = "geo_http", .min_args = 1, .max_args = 5,
	 .usage = "geo_http URL_WITH_{ip} [timeout=D] [ttl=D] [negative_ttl=D] [max=N]",
	 .handler = config_dir_geo_http, .opts = config_geo_http_opts},
	{.name = "route", .repeatable = 1, .min_args = 1, .max_args = -1,
	 .usage = "route /PREFIX [auth=off|none|jwt|apikey|any] [min_tier=TIER] "
	          "[forward_auth=on|off] [cache=on|off] [cache_ttl=D]",
	 .handler = config_dir_route, .opts = config_route_opts},
};
/* clang-format on */

#define CONFIG_NDIRECTIVES ((int)(sizeof(config_directives) / sizeof(config_directives[0])))

const char *
config_directive_name(int i)
{
	return i >= 0 && i < CONFIG_NDIRECTIVES ? config_directives[i].name : NULL;
}

static const struct config_directive *
config_find_directive(const char *name)
{
	for (int i = 0; i < CONFIG_NDIRECTIVES; i++)
		if (strcmp(config_directives[i].name, name) == 0)
			return &config_directives[i];
	return NULL;
}

static int
config_dispatch(struct config_parser *p, char **argv, int argc)
{
	const struct config_directive *d = config_find_directive(argv[0]);
	int *seen;
	int nargs = argc - 1;

	if (d == NULL)
		return config_error(p, "unknown directive '%s'", argv[0]);
	seen = &p->seen[d - config_directives];
	if (!d->repeatable && *seen != 0) {
		char first[256];

		config_where(p, *seen, first, sizeof first);
		return config_error(p, "'%s' given twice (first at %s)", d->name, first);
	}
	if (*seen == 0)
		*seen = p->loc;
	if (nargs < d->min_args || (d->max_args >= 0 && nargs > d->max_args))
		return config_error(p, "%s: wrong number of arguments (usage: %s)", d->name,
		                    d->usage);
	return d->handler(p, d, argv + 1, nargs);
}

static int config_parse_line(struct config_parser *p, char *line, int loc);

/* Parses, in place of the file's lines, every -d override of directive key. */
static int
config_emit_overrides(struct config_parser *p, const char *key)
{
	for (int i = 0; i < p->nov; i++) {
		struct config_override *o = &p->ov[i];
		size_t n = strlen(o->key) + strlen(o->value) + 2;
		char *line;
		int rc;

		if (o->emitted || strcmp(o->key, key) != 0)
			continue;
		o->emitted = 1;
		line = xmalloc(n);
		snprintf(line, n, "%s %s", o->key, o->value);
		rc = config_parse_line(p, line, -(i + 1));
		free(line);
		if (rc < 0)
			return -1;
	}
	return 0;
}

static int
config_is_overridden(const struct config_parser *p, const char *name)
{
	for (int i = 0; i < p->nov; i++)
		if (strcmp(p->ov[i].key, name) == 0)
			return 1;
	return 0;
}

static int
config_parse_line(struct config_parser *p, char *line, int loc)
{
	char *argv[CONF_MAX_ARGS];
	int argc = conf_split_line(line, argv, CONF_MAX_ARGS);

	p->loc = loc;
	if (argc < 0)
		return config_error(p, "unterminated quote or more than %d words", CONF_MAX_ARGS);
	if (argc == 0)
		return 0;
	if (loc > 0 && config_is_overridden(p, argv[0]))
		return config_emit_overrides(p, argv[0]);
	return config_dispatch(p, argv, argc);
}

static int
config_parse_text(struct config_parser *p, const char *text)
{
	int lineno = 0;

	for (const char *s = text; *s != '\0';) {
		const char *nl = strchr(s, '\n');
		size_t n = nl != NULL ? (size_t)(nl - s) : strlen(s);
		char *line = xstrndup(s, n);
		int rc = config_parse_line(p, line, ++lineno);

		free(line);
		if (rc < 0)
			return -1;
		if (nl == NULL)
			break;
		s = nl + 1;
	}
	/* Overrides of directives that the file does not have are appended. */
	for (int i = 0; i < p->nov; i++)
		if (!p->ov[i].emitted && config_emit_overrides(p, p->ov[i].key) < 0)
			return -1;
	return 0;
}

static int
config_read_overrides(struct config_parser *p, char *const *overrides)
{
	for (; overrides != NULL && overrides[p->nov] != NULL; p->nov++) {
		const char *text = overrides[p->nov];
		const char *eq = strchr(text, '=');
		struct config_override *o;
		size_t klen = eq != NULL ? (size_t)(eq - text) : 0;

		p->ov = xrealloc(p->ov, ((size_t)p->nov + 1) * sizeof *p->ov);
		o = &p->ov[p->nov];
		o->text = text;
		o->key = xstrndup(text, klen);
		o->value = eq != NULL ? eq + 1 : "";
		o->emitted = 0;
		if (klen == 0 || strspn(o->key, "abcdefghijklmnopqrstuvwxyz_") != klen) {
			p->nov++; /* so that the override's key is freed */
			return config_error_at(p, -p->nov, "expected KEY=VALUE");
		}
	}
	return 0;
}

static int
config_check_backends(struct config_parser *p)
{
	const struct config *c = p->c;

	if (c->nbackends == 0)
		return config_error_at(p, 0, "at least one 'backend' is required");
	if (c->ndatacenters == 0)
		return 0;
	for (int i = 0; i < c->nbackends; i++) {
		const struct config_backend *b = &c->backends[i];

		if (b->dc[0] != '\0' && config_find_datacenter(c, b->dc) == NULL)
			return config_error_at(p, p->backend_loc[i],
			                       "backend: dc '%s' is not a declared datacenter",
			                       b->dc);
	}
	return 0;
}

static int
config_check_geo(struct config_parser *p)
{
	const struct config *c = p->c;
	const struct config_directive *d = config_find_directive("geo_default");

	if (c->geo_default[0] != '\0' && config_find_datacenter(c, c->geo_default) == NULL)
		return config_error_at(p, p->seen[d - config_directives],
		                       "geo_default: '%s' is not a declared datacenter",
		                       c->geo_default);
	return 0;
}

/* Tier names used by routes and register_tiers must be tiers (declared anywhere). */
static int
config_check_tiers(struct config_parser *p)
{
	const struct config *c = p->c;
	const struct config_directive *rt = config_find_directive("register_tiers");

	for (int i = 0; i < c->nregister_tiers; i++)
		if (config_tier_find(c, c->register_tiers[i]) < 0)
			return config_error_at(p, p->seen[rt - config_directives],
			                       "register_tiers: '%s' is not a tier",
			                       c->register_tiers[i]);
	for (int i = 0; i < c->nroutes; i++)
		if (c->routes[i].min_tier[0] != '\0' &&
		    config_tier_find(c, c->routes[i].min_tier) < 0)
			return config_error_at(p, 0, "route %s: min_tier '%s' is not a tier",
			                       c->routes[i].prefix, c->routes[i].min_tier);
	return 0;
}

static int
config_route_cmp(const void *a, const void *b)
{
	const struct config_route *ra = a, *rb = b;

	if (ra->prefix_len != rb->prefix_len)
		return ra->prefix_len > rb->prefix_len ? -1 : 1;
	return strcmp(ra->prefix, rb->prefix);
}

/* Directives whose default is a list: added, through the normal path, when absent. */
static const struct {
	const char *name;
	const char *line;
} config_implicit[] = {
    {"listen", "listen 0.0.0.0:8080"},
    {"admin_allow", "admin_allow 127.0.0.0/8 ::1"},
    {"route", "route / auth=none"},
};

static int
config_finish(struct config_parser *p)
{
	struct config *c = p->c;

	if (config_check_backends(p) < 0)
		return -1;
	for (size_t i = 0; i < sizeof(config_implicit) / sizeof(config_implicit[0]); i++) {
		const struct config_directive *d = config_find_directive(config_implicit[i].name);
		char *line;
		int rc;

		if (p->seen[d - config_directives] != 0)
			continue;
		line = xstrdup(config_implicit[i].line);
		rc = config_parse_line(p, line, 0);
		free(line);
		if (rc < 0)
			return -1;
	}
	if (config_check_tiers(p) < 0 || config_check_geo(p) < 0)
		return -1;
	if (strcmp(c->cache.shared, "redis") == 0 && c->redis[0] == '\0')
		return config_error_at(p, p->seen[config_find_directive("cache") - config_directives],
		                       "cache: shared=redis needs a 'redis' directive");
	qsort(c->routes, (size_t)c->nroutes, sizeof *c->routes, config_route_cmp);
	return 0;
}

static void
config_set_defaults(struct config *c)
{
	c->workers = 0;
	c->strategy = BALANCE_ROUND_ROBIN;
	c->timeouts.connect_ms = 2 * CONFIG_SECOND;
	c->timeouts.response_ms = 30 * CONFIG_SECOND;
	c->timeouts.client_header_ms = 10 * CONFIG_SECOND;
	c->timeouts.client_idle_ms = 60 * CONFIG_SECOND;
	c->timeouts.client_body_ms = 20 * CONFIG_SECOND;
	c->limits.header = 32 * CONFIG_KB;
	c->limits.headers = 100;
	c->limits.body = CONFIG_MB;
	c->limits.uri = 8 * CONFIG_KB;
	c->limits.min_body_rate = 500;
	util_strlcpy(c->health.path, "/health", sizeof c->health.path);
	c->health.interval_ms = 10 * CONFIG_SECOND;
	c->health.timeout_ms = 2 * CONFIG_SECOND;
	c->health.rise = 2;
	c->health.fall = 2;
	c->circuit.failures = 5;
	c->circuit.open_ms = 30 * CONFIG_SECOND;
	c->retries = 1;
	c->queue.max = 1024;
	c->queue.timeout_ms = 5 * CONFIG_SECOND;
	c->geo_http.timeout_ms = 500;
	c->geo_http.ttl_ms = 3600 * CONFIG_SECOND;
	c->geo_http.negative_ttl_ms = 300 * CONFIG_SECOND;
	c->geo_http.max = 16;
	c->cache.ttl_ms = 30 * CONFIG_SECOND;
	c->cache.max_memory = 64 * CONFIG_MB;
	c->cache.shared_max_entry = CONFIG_MB;
	c->ip_limit.count = 100;
	c->ip_limit.period_ms = 60 * CONFIG_SECOND;
	static const struct {
		const char *name;
		uint64_t count;
	} tiers[] = {{"free", 5}, {"basic", 20}, {"premium", 100}, {"enterprise", 1000}};
	for (size_t i = 0; i < sizeof tiers / sizeof tiers[0]; i++) {
		util_strlcpy(c->tiers[i].name, tiers[i].name, sizeof c->tiers[i].name);
		c->tiers[i].rate.count = tiers[i].count;
		c->tiers[i].rate.period_ms = 60 * CONFIG_SECOND;
	}
	c->ntiers = (int)(sizeof tiers / sizeof tiers[0]);
	c->ban.threshold = 10;
	c->ban.base_ms = 300 * CONFIG_SECOND;
	c->ban.multiplier = 2;
	c->ban.max_ms = 24 * 3600 * CONFIG_SECOND;
	util_strlcpy(c->jwt.alg, "HS256", sizeof c->jwt.alg);
	c->jwt.access_ttl_ms = 3600 * CONFIG_SECOND;
	c->jwt.refresh_ttl_ms = 7 * 24 * 3600 * CONFIG_SECOND;
	c->jwt.leeway_ms = 30 * CONFIG_SECOND;
	util_strlcpy(c->jwt.issuer, "gatewayd", sizeof c->jwt.issuer);
	util_strlcpy(c->register_tiers[0], "free", sizeof c->register_tiers[0]);
	c->nregister_tiers = 1;
	util_strlcpy(c->control, "ipc:///tmp/gatewayd.ctl", sizeof c->control);
	util_strlcpy(c->publish, "ipc:///tmp/gatewayd.pub", sizeof c->publish);
	util_strlcpy(c->database, "sqlite:gatewayd.db", sizeof c->database);
	c->redis_timeout_ms = CONFIG_SECOND;
}

struct config *
config_load_text(const char *name, const char *text, char *const *overrides, char *err,
                 size_t errlen)
{
	struct config_parser p;
	int rc;

	memset(&p, 0, sizeof p);
	p.name = name;
	p.err = err;
	p.errlen = errlen;
	p.seen = xcalloc(CONFIG_NDIRECTIVES, sizeof *p.seen);
	p.c = xcalloc(1, sizeof *p.c);
	config_set_defaults(p.c);
	util_strlcpy(p.c->file, name, sizeof p.c->file);
	rc = config_read_overrides(&p, overrides);
	if (rc == 0)
		rc = config_parse_text(&p, text);
	if (rc == 0)
		rc = config_finish(&p);
	for (int i = 0; i < p.nov; i++)
		free(p.ov[i].key);
	free(p.ov);
	free(p.seen);
	free(p.backend_loc);
	if (rc < 0) {
		config_free(p.c);
		return NULL;
	}
	return p.c;
}

/* The whole file as a string; NULL with "path: message" in err. */
static char *
config_read_file(const char *path, char *err, size_t errlen)
{
	FILE *f = fopen(path, "r");
	char *text;
	size_t n;

	if (f == NULL) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return NULL;
	}
	text = xmalloc(CONFIG_FILE_MAX + 1);
	n = fread(text, 1, CONFIG_FILE_MAX + 1, f);
	if (ferror(f) || n > CONFIG_FILE_MAX) {
		snprintf(err, errlen, "%s: %s", path,
		         ferror(f) ? strerror(errno) : "file too large (at most 4mb)");
		fclose(f);
		free(text);
		return NULL;
	}
	fclose(f);
	if (memchr(text, '\0', n) != NULL) {
		snprintf(err, errlen, "%s: contains a NUL byte", path);
		free(text);
		return NULL;
	}
	text[n] = '\0';
	return text;
}

struct config *
config_load(const char *path, char *const *overrides, char *err, size_t errlen)
{
	struct config *c;
	char *text;

	if (path == NULL) {
		c = config_load_text("(default)", config_default_text, overrides, err, errlen);
		if (c != NULL)
			c->file[0] = '\0';
		return c;
	}
	text = config_read_file(path, err, errlen);
	if (text == NULL)
		return NULL;
	c = config_load_text(path, text, overrides, err, errlen);
	free(text);
	return c;
}

void
config_free(struct config *c)
{
	if (c == NULL)
		return;
	free(c->listens);
	free(c->backends);
	free(c->datacenters);
	free(c->geo_static);
	free(c->routes);
	free(c->ip_limit_exempt);
	free(c->trusted_proxy);
	free(c->admin_allow);
	free(c);
}

const struct config_route *
config_route_match(const struct config *c, const char *path, size_t len)
{
	for (int i = 0; i < c->nroutes; i++) {
		const struct config_route *r = &c->routes[i];

		if (r->prefix_len <= len && memcmp(r->prefix, path, r->prefix_len) == 0)
			return r;
	}
	return NULL;
}
