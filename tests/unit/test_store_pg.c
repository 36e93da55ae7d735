#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "store.h"
#include "store_impl.h"

/*
 * The PostgreSQL store without a server: URL recognition and syntax (libpq's parser),
 * and the failures an operator sees when the server is not there. The store's behaviour
 * against a real server is covered end to end (tests/e2e/test_postgres.py).
 */

static void
test_is_url(void **state)
{
	assert_true(store_pg_is_url("postgresql://u@127.0.0.1:5432/gw"));
	assert_true(store_pg_is_url("postgres://h/db"));
	assert_false(store_pg_is_url("sqlite:gatewayd.db"));
	assert_false(store_pg_is_url("postgresql:/x"));
	assert_false(store_pg_is_url("mysql://x"));
	assert_false(store_pg_is_url(""));
	assert_false(store_pg_is_url(NULL));
}

static void
test_check_url(void **state)
{
	char err[256];

	assert_int_equal(
	    store_pg_check_url("postgresql://gw@127.0.0.1:5432/gatewayd", err, sizeof(err)), 0);
	assert_int_equal(store_pg_check_url("postgresql://gw:secret@db.example:6543/gatewayd"
	                                    "?sslmode=require&connect_timeout=5",
	                                    err, sizeof(err)),
	                 0);
	assert_int_equal(
	    store_pg_check_url("postgresql:///gatewayd?host=/run/postgresql", err, sizeof(err)), 0);
	/* an unknown parameter, a bad port, a bad percent escape: refused before connecting */
	assert_int_equal(store_pg_check_url("postgresql://h/db?colour=blue", err, sizeof(err)), -1);
	assert_non_null(strstr(err, "invalid PostgreSQL URL"));
	assert_non_null(strstr(err, "colour"));
	assert_null(strchr(err, '\n'));
	assert_int_equal(store_pg_check_url("postgresql://h:port/db", err, sizeof(err)), -1);
	assert_non_null(strstr(err, "invalid PostgreSQL URL"));
	assert_int_equal(store_pg_check_url("postgresql://h/d%zzb", err, sizeof(err)), -1);
	assert_int_equal(store_pg_check_url("sqlite:x.db", err, sizeof(err)), -1);
}

static void
test_redact(void **state)
{
	char buf[256];

	assert_string_equal(store_url_redact("postgresql://gw:s3cret@db:5432/gw", buf, sizeof(buf)),
	                    "postgresql://gw:***@db:5432/gw");
	assert_string_equal(
	    store_url_redact("postgres://gw:p@ss:w@rd@db/gw?sslmode=require", buf, sizeof(buf)),
	    "postgres://gw:***@db/gw?sslmode=require");
	assert_string_equal(
	    store_url_redact("postgresql://gw@db/gw?password=x&sslmode=require&password=y", buf,
	                     sizeof(buf)),
	    "postgresql://gw@db/gw?password=***&sslmode=require&password=***");
	assert_string_equal(store_url_redact("postgresql://gw@db:5432/gw", buf, sizeof(buf)),
	                    "postgresql://gw@db:5432/gw");
	assert_string_equal(store_url_redact("postgresql://db/gw?user=a:b", buf, sizeof(buf)),
	                    "postgresql://db/gw?user=a:b");
	assert_string_equal(store_url_redact("sqlite:gatewayd.db", buf, sizeof(buf)),
	                    "sqlite:gatewayd.db");
	/* truncated, still NUL-terminated, the password never shown */
	assert_string_equal(store_url_redact("postgresql://gw:s3cret@db/gw", buf, 20),
	                    "postgresql://gw:***");
	assert_string_equal(store_url_redact(NULL, buf, sizeof(buf)), "");
}

/* A loopback port with nothing listening: bound, then closed. */
static int
closed_port(void)
{
	struct sockaddr_in a = {.sin_family = AF_INET};
	socklen_t len = sizeof(a);
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	int port;

	assert_true(fd >= 0);
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
	port = ntohs(a.sin_port);
	close(fd);
	return port;
}

static void
test_unreachable(void **state)
{
	char url[128], err[512], out[4096];
	time_t t0 = time(NULL);

	snprintf(url, sizeof(url), "postgresql://gw@127.0.0.1:%d/gatewayd", closed_port());
	err[0] = '\0';
	assert_null(store_open(url, err, sizeof(err)));
	assert_non_null(strstr(err, "cannot connect to PostgreSQL"));
	assert_non_null(strstr(err, "refused"));
	assert_null(strchr(err, '\n'));
	assert_int_equal(store_migrate_status(url, out, sizeof(out)), -1);
	assert_non_null(strstr(out, "cannot connect to PostgreSQL"));
	assert_int_equal(store_fresh(url, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "cannot connect to PostgreSQL"));
	/* a malformed URL is a syntax error, not a connection attempt */
	assert_null(store_open("postgresql://h/db?colour=blue", err, sizeof(err)));
	assert_non_null(strstr(err, "invalid PostgreSQL URL"));
	/* refused connections fail at once, not after a timeout */
	assert_true(time(NULL) - t0 <= 2);
}

static void
test_copy_refuses_unreachable_target(void **state)
{
	char from[128], to[128], err[512];
	struct store_copy_counts n;
	struct store *st;

	snprintf(from, sizeof(from), "sqlite:/tmp/test_store_pg.%d.db", (int)getpid());
	st = store_open(from, err, sizeof(err));
	assert_non_null(st);
	store_close(st);
	snprintf(to, sizeof(to), "postgresql://gw@127.0.0.1:%d/gatewayd", closed_port());
	assert_int_equal(store_copy(from, to, &n, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "cannot connect to PostgreSQL"));
	unlink(from + 7);
	snprintf(to, sizeof(to), "%s-wal", from + 7);
	unlink(to);
	snprintf(to, sizeof(to), "%s-shm", from + 7);
	unlink(to);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_is_url),
	    cmocka_unit_test(test_check_url),
	    cmocka_unit_test(test_redact),
	    cmocka_unit_test(test_unreachable),
	    cmocka_unit_test(test_copy_refuses_unreachable_target),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
