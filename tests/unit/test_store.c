#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <ftw.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <sqlite3.h>

#include "store.h"
#include "util.h"

/*
 * Every test gets its own directory from mkdtemp with a real SQLite file in it, so WAL,
 * locking, file modes and migrations behave as in production.
 */

struct fixture {
	char dir[64];
	char path[128]; /* the database file */
	char url[160];  /* "sqlite:" path */
	struct store *st;
};

static int
rm_entry(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
	return remove(p);
}

static void
fixture_url(const struct fixture *f, const char *name, char *path, size_t plen, char *url,
            size_t ulen)
{
	snprintf(path, plen, "%s/%s", f->dir, name);
	snprintf(url, ulen, "sqlite:%s", path);
}

static int
setup_dir(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));

	assert_non_null(f);
	util_strlcpy(f->dir, "/tmp/test_store.XXXXXX", sizeof(f->dir));
	assert_non_null(mkdtemp(f->dir));
	fixture_url(f, "t.db", f->path, sizeof(f->path), f->url, sizeof(f->url));
	*state = f;
	return 0;
}

static int
setup(void **state)
{
	char err[256] = "";
	struct fixture *f;

	setup_dir(state);
	f = *state;
	f->st = store_open(f->url, err, sizeof(err));
	if (f->st == NULL)
		fail_msg("store_open: %s", err);
	return 0;
}

static int
teardown(void **state)
{
	struct fixture *f = *state;

	store_close(f->st);
	nftw(f->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
	free(f);
	return 0;
}

/* A raw SQLite connection, to look behind the store's back or to hold locks. */
static sqlite3 *
raw_open(const char *path)
{
	sqlite3 *db = NULL;

	assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
	sqlite3_busy_timeout(db, 5000);
	return db;
}

static int64_t
raw_int(sqlite3 *db, const char *sql)
{
	sqlite3_stmt *s = NULL;
	int64_t v;

	assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &s, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_step(s), SQLITE_ROW);
	v = sqlite3_column_int64(s, 0);
	sqlite3_finalize(s);
	return v;
}

static void
raw_exec(sqlite3 *db, const char *sql)
{
	char *msg = NULL;

	if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK)
		fail_msg("%s: %s", sql, msg);
}

static int64_t
make_user(struct store *st, const char *email)
{
	struct store_user u;

	assert_int_equal(store_user_create(st, email, "$2b$10$hash", "free", "user", &u), 0);
	assert_true(u.id > 0);
	return u.id;
}

static void
make_key(struct store *st, const char *hash, const char *prefix, int64_t user_id,
         int64_t created_at)
{
	struct store_key k;

	memset(&k, 0, sizeof(k));
	util_strlcpy(k.hash, hash, sizeof(k.hash));
	util_strlcpy(k.prefix, prefix, sizeof(k.prefix));
	util_strlcpy(k.tier, "basic", sizeof(k.tier));
	k.user_id = user_id;
	k.created_at = created_at;
	assert_int_equal(store_key_create(st, &k), 0);
}

/* Callbacks that count rows and keep the last one. */
struct collect {
	int n;
	int stop_after; /* 0 = never */
	char last[STORE_KIND_MAX + STORE_VALUE_MAX + 1];
	int64_t values[16];
};

static int
collect_user(const struct store_user *u, void *arg)
{
	struct collect *c = arg;

	if (c->n < 16)
		c->values[c->n] = u->id;
	util_strlcpy(c->last, u->email, sizeof(c->last));
	c->n++;
	return c->stop_after != 0 && c->n >= c->stop_after;
}

static int
collect_key(const struct store_key *k, void *arg)
{
	struct collect *c = arg;

	if (c->n < 16)
		c->values[c->n] = k->created_at;
	util_strlcpy(c->last, k->hash, sizeof(c->last));
	c->n++;
	return c->stop_after != 0 && c->n >= c->stop_after;
}

static int
collect_revocation(const struct store_revocation *r, void *arg)
{
	struct collect *c = arg;

	if (c->n < 16)
		c->values[c->n] = r->expires_at;
	util_strlcpy(c->last, r->jti, sizeof(c->last));
	c->n++;
	return 0;
}

static int
collect_block(const struct store_block *b, void *arg)
{
	struct collect *c = arg;

	if (c->n < 16)
		c->values[c->n] = b->until;
	snprintf(c->last, sizeof(c->last), "%s:%s", b->kind, b->value);
	c->n++;
	return 0;
}

static int
collect_ban(const struct store_ban *b, void *arg)
{
	struct collect *c = arg;

	if (c->n < 16)
		c->values[c->n] = b->level;
	snprintf(c->last, sizeof(c->last), "%s:%s", b->kind, b->value);
	c->n++;
	return 0;
}

static int
collect_audit(const struct store_audit_entry *e, void *arg)
{
	struct collect *c = arg;

	if (c->n < 16)
		c->values[c->n] = e->id;
	util_strlcpy(c->last, e->action, sizeof(c->last));
	c->n++;
	return 0;
}

/* --- opening ---------------------------------------------------------------------------- */

static void
test_open_url_errors(void **state)
{
	char err[256];

	err[0] = '\0';
	/* PostgreSQL URLs go to store_pg.c: test_store_pg.c covers them. */
	assert_null(store_open("mysql://x", err, sizeof(err)));
	assert_non_null(strstr(err, "expected sqlite:PATH"));
	assert_null(store_open("sqlite:", err, sizeof(err)));
	assert_non_null(strstr(err, "no path"));
	assert_null(store_open(NULL, err, sizeof(err)));
	assert_null(store_open("sqlite:/nonexistent-dir/x/y.db", err, sizeof(err)));
	assert_true(err[0] != '\0');
	store_close(NULL);
}

static void
test_open_fresh_is_latest_and_wal(void **state)
{
	struct fixture *f = *state;
	sqlite3 *db;
	sqlite3_stmt *s;

	assert_true(store_schema_latest() >= 2);
	assert_int_equal(store_schema_version(f->st), store_schema_latest());
	assert_string_equal(store_error(f->st), "");
	db = raw_open(f->path);
	assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &s, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_step(s), SQLITE_ROW);
	assert_string_equal((const char *)sqlite3_column_text(s, 0), "wal");
	sqlite3_finalize(s);
	assert_int_equal(raw_int(db, "SELECT count(*) FROM schema_version"), store_schema_latest());
	sqlite3_close(db);
}

static void
test_open_relative_path(void **state)
{
	struct fixture *f = *state;
	char cwd[512], err[256];
	struct store *st;
	struct stat sb;

	assert_non_null(getcwd(cwd, sizeof(cwd)));
	assert_int_equal(chdir(f->dir), 0);
	st = store_open("sqlite:rel.db", err, sizeof(err));
	assert_int_equal(chdir(cwd), 0);
	assert_non_null(st);
	store_close(st);
	{
		char p[256];

		snprintf(p, sizeof(p), "%s/rel.db", f->dir);
		assert_int_equal(stat(p, &sb), 0);
	}
}

static void
test_reopen_keeps_data(void **state)
{
	struct fixture *f = *state;
	struct store_user u;
	char err[256];
	int64_t id = make_user(f->st, "durable@x.io");

	store_close(f->st);
	f->st = store_open(f->url, err, sizeof(err));
	assert_non_null(f->st);
	assert_int_equal(store_user_by_id(f->st, id, &u), 0);
	assert_string_equal(u.email, "durable@x.io");
}

/* --- users ------------------------------------------------------------------------------ */

static void
test_user_create_and_get(void **state)
{
	struct fixture *f = *state;
	struct store_user u, g;
	int64_t before = (int64_t)time(NULL);

	assert_int_equal(store_user_create(f->st, "bob@x.io", "$2b$12$abc", "premium", "admin", &u),
	                 0);
	assert_true(u.id > 0);
	assert_string_equal(u.email, "bob@x.io");
	assert_string_equal(u.tier, "premium");
	assert_string_equal(u.role, "admin");
	assert_true(u.created_at >= before && u.created_at <= (int64_t)time(NULL));
	assert_int_equal(store_user_by_email(f->st, "bob@x.io", &g), 0);
	assert_int_equal(g.id, u.id);
	assert_string_equal(g.pwhash, "$2b$12$abc");
	assert_string_equal(g.role, "admin");
	assert_int_equal(g.created_at, u.created_at);
	memset(&g, 0, sizeof(g));
	assert_int_equal(store_user_by_id(f->st, u.id, &g), 0);
	assert_string_equal(g.email, "bob@x.io");
	assert_string_equal(g.tier, "premium");
	/* out may be NULL */
	assert_int_equal(store_user_create(f->st, "c@x.io", "h", "free", "user", NULL), 0);
}

static void
test_user_email_case_insensitive(void **state)
{
	struct fixture *f = *state;
	struct store_user u, g;

	assert_int_equal(store_user_create(f->st, "Alice@Example.COM", "h", "free", "user", &u), 0);
	assert_string_equal(u.email, "alice@example.com");
	assert_int_equal(store_user_by_email(f->st, "ALICE@example.com", &g), 0);
	assert_int_equal(g.id, u.id);
	assert_string_equal(g.email, "alice@example.com");
	assert_int_equal(store_user_create(f->st, "alice@example.com", "h", "free", "user", NULL),
	                 STORE_EXISTS);
	assert_non_null(strstr(store_error(f->st), "taken"));
	assert_int_equal(store_user_create(f->st, "ALICE@EXAMPLE.COM", "h", "free", "user", NULL),
	                 STORE_EXISTS);
}

static void
test_user_not_found(void **state)
{
	struct fixture *f = *state;
	struct store_user u;

	assert_int_equal(store_user_by_email(f->st, "nobody@x.io", &u), STORE_NOTFOUND);
	assert_int_equal(store_user_by_id(f->st, 424242, &u), STORE_NOTFOUND);
	assert_non_null(strstr(store_error(f->st), "not found"));
}

static void
test_user_set_tier_and_role(void **state)
{
	struct fixture *f = *state;
	int64_t id = make_user(f->st, "t@x.io");
	struct store_user u;

	assert_int_equal(store_user_set_tier(f->st, id, "enterprise"), 0);
	assert_int_equal(store_user_set_role(f->st, id, "admin"), 0);
	assert_int_equal(store_user_by_id(f->st, id, &u), 0);
	assert_string_equal(u.tier, "enterprise");
	assert_string_equal(u.role, "admin");
	assert_int_equal(store_user_set_tier(f->st, id + 100, "free"), STORE_NOTFOUND);
	assert_int_equal(store_user_set_role(f->st, id + 100, "user"), STORE_NOTFOUND);
	assert_int_equal(store_user_set_tier(f->st, id, ""), -1);
}

static void
test_user_list(void **state)
{
	struct fixture *f = *state;
	struct collect c;
	int64_t a = make_user(f->st, "a@x.io");
	int64_t b = make_user(f->st, "b@x.io");
	int64_t d = make_user(f->st, "d@x.io");

	memset(&c, 0, sizeof(c));
	assert_int_equal(store_user_list(f->st, collect_user, &c), 0);
	assert_int_equal(c.n, 3);
	assert_int_equal(c.values[0], a);
	assert_int_equal(c.values[1], b);
	assert_int_equal(c.values[2], d);
	memset(&c, 0, sizeof(c));
	c.stop_after = 2;
	assert_int_equal(store_user_list(f->st, collect_user, &c), 0);
	assert_int_equal(c.n, 2);
	/* the statement was reset after the early stop: a second walk starts over */
	memset(&c, 0, sizeof(c));
	assert_int_equal(store_user_list(f->st, collect_user, &c), 0);
	assert_int_equal(c.n, 3);
}

static void
test_user_argument_checks(void **state)
{
	struct fixture *f = *state;
	char longmail[STORE_EMAIL_MAX + 8];
	struct store_user u;

	memset(longmail, 'a', sizeof(longmail) - 1);
	longmail[sizeof(longmail) - 1] = '\0';
	longmail[10] = '@';
	assert_int_equal(store_user_create(f->st, NULL, "h", "free", "user", &u), -1);
	assert_non_null(strstr(store_error(f->st), "email is missing"));
	assert_int_equal(store_user_create(f->st, "", "h", "free", "user", &u), -1);
	assert_non_null(strstr(store_error(f->st), "email is empty"));
	assert_int_equal(store_user_create(f->st, longmail, "h", "free", "user", &u), -1);
	assert_non_null(strstr(store_error(f->st), "too long"));
	assert_int_equal(store_user_by_email(f->st, longmail, &u), -1);
	/* the longest email that fits is accepted and read back whole */
	longmail[STORE_EMAIL_MAX - 1] = '\0';
	assert_int_equal(store_user_create(f->st, longmail, "h", "free", "user", &u), 0);
	assert_int_equal(store_user_by_email(f->st, longmail, &u), 0);
	assert_int_equal(strlen(u.email), STORE_EMAIL_MAX - 1);
}

static void
test_sql_injection_looking_input(void **state)
{
	struct fixture *f = *state;
	static const char evil[] = "a'; drop table users;--@x.io";
	static const char tier[] = "x' OR '1'='1";
	struct store_user u;
	sqlite3 *db;
	char buf[128];

	assert_int_equal(
	    store_user_create(f->st, "a'; DROP TABLE users;--@x.io", "\"; --", tier, "user", &u),
	    0);
	assert_string_equal(u.email, evil);
	assert_int_equal(store_user_by_email(f->st, evil, &u), 0);
	assert_string_equal(u.email, evil);
	assert_string_equal(u.pwhash, "\"; --");
	assert_string_equal(u.tier, tier);
	assert_int_equal(store_user_by_email(f->st, "' OR 1=1 --", &u), STORE_NOTFOUND);
	assert_int_equal(store_setting_set(f->st, "k'); DELETE FROM settings; --", "v'--"), 0);
	assert_int_equal(
	    store_setting_get(f->st, "k'); DELETE FROM settings; --", buf, sizeof(buf)), 0);
	assert_string_equal(buf, "v'--");
	assert_int_equal(store_block_set(f->st, "ip", "1.2.3.4' OR ''='", 0), 0);
	db = raw_open(f->path);
	assert_int_equal(raw_int(db, "SELECT count(*) FROM users"), 1);
	assert_int_equal(raw_int(db, "SELECT count(*) FROM settings"), 1);
	assert_int_equal(raw_int(db, "SELECT count(*) FROM blocks"), 1);
	sqlite3_close(db);
}

/* --- API keys --------------------------------------------------------------------------- */

static const char H1[] = "1111111111111111111111111111111111111111111111111111111111111111";
static const char H2[] = "2222222222222222222222222222222222222222222222222222222222222222";
static const char H3[] = "3333333333333333333333333333333333333333333333333333333333333333";

static void
test_key_create_and_by_hash(void **state)
{
	struct fixture *f = *state;
	int64_t uid = make_user(f->st, "k@x.io");
	struct store_key k, g;

	memset(&k, 0, sizeof(k));
	util_strlcpy(k.hash, H1, sizeof(k.hash));
	util_strlcpy(k.prefix, "gw_abcd1", sizeof(k.prefix));
	util_strlcpy(k.tier, "premium", sizeof(k.tier));
	k.user_id = uid;
	k.expires_at = 2000000000;
	assert_int_equal(store_key_create(f->st, &k), 0);
	assert_int_equal(store_key_by_hash(f->st, H1, &g), 0);
	assert_string_equal(g.hash, H1);
	assert_string_equal(g.prefix, "gw_abcd1");
	assert_string_equal(g.tier, "premium");
	assert_int_equal(g.user_id, uid);
	assert_true(g.created_at > 0); /* 0 meant now */
	assert_int_equal(g.last_used, 0);
	assert_int_equal(g.expires_at, 2000000000);
	assert_int_equal(g.revoked, 0);
	assert_int_equal(store_key_create(f->st, &k), STORE_EXISTS);
	assert_int_equal(store_key_by_hash(f->st, H2, &g), STORE_NOTFOUND);
	/* an ownerless (legacy) key reads back with user_id 0 */
	make_key(f->st, H2, "gw_legacy", 0, 1000);
	assert_int_equal(store_key_by_hash(f->st, H2, &g), 0);
	assert_int_equal(g.user_id, 0);
	assert_int_equal(g.created_at, 1000);
}

static void
test_key_create_unknown_owner_fails(void **state)
{
	struct fixture *f = *state;
	struct store_key k;

	memset(&k, 0, sizeof(k));
	util_strlcpy(k.hash, H1, sizeof(k.hash));
	util_strlcpy(k.prefix, "p", sizeof(k.prefix));
	util_strlcpy(k.tier, "free", sizeof(k.tier));
	k.user_id = 999;
	assert_int_equal(store_key_create(f->st, &k), -1);
	assert_non_null(strstr(store_error(f->st), "no such user"));
	k.user_id = 0;
	k.prefix[0] = '\0';
	assert_int_equal(store_key_create(f->st, &k), -1);
	assert_non_null(strstr(store_error(f->st), "prefix is empty"));
}

static void
test_key_by_prefix(void **state)
{
	struct fixture *f = *state;
	int64_t u1 = make_user(f->st, "p1@x.io");
	int64_t u2 = make_user(f->st, "p2@x.io");
	struct store_key g;

	make_key(f->st, H1, "gw_same", u1, 100);
	make_key(f->st, H2, "gw_same", u1, 200);
	make_key(f->st, H3, "gw_other", u2, 300);
	/* the newest unrevoked key of that user */
	assert_int_equal(store_key_by_prefix(f->st, u1, "gw_same", &g), 0);
	assert_string_equal(g.hash, H2);
	assert_int_equal(store_key_revoke(f->st, H2), 0);
	assert_int_equal(store_key_by_prefix(f->st, u1, "gw_same", &g), 0);
	assert_string_equal(g.hash, H1);
	/* another user's prefix is not found */
	assert_int_equal(store_key_by_prefix(f->st, u1, "gw_other", &g), STORE_NOTFOUND);
	assert_int_equal(store_key_by_prefix(f->st, u2, "gw_same", &g), STORE_NOTFOUND);
	assert_int_equal(store_key_by_prefix(f->st, u2, "gw_other", &g), 0);
	assert_string_equal(g.hash, H3);
	/* ownerless keys are found with user 0 only */
	assert_int_equal(store_key_set_owner(f->st, H3, 0), 0);
	assert_int_equal(store_key_by_prefix(f->st, u2, "gw_other", &g), STORE_NOTFOUND);
	assert_int_equal(store_key_by_prefix(f->st, 0, "gw_other", &g), 0);
	assert_string_equal(g.hash, H3);
}

static void
test_key_list_user(void **state)
{
	struct fixture *f = *state;
	int64_t u1 = make_user(f->st, "l1@x.io");
	int64_t u2 = make_user(f->st, "l2@x.io");
	struct collect c;

	make_key(f->st, H2, "b", u1, 200);
	make_key(f->st, H1, "a", u1, 100);
	make_key(f->st, H3, "c", u2, 300);
	assert_int_equal(store_key_revoke(f->st, H2), 0);
	memset(&c, 0, sizeof(c));
	assert_int_equal(store_key_list_user(f->st, u1, collect_key, &c), 0);
	assert_int_equal(c.n, 2); /* revoked keys included */
	assert_int_equal(c.values[0], 100);
	assert_int_equal(c.values[1], 200);
	memset(&c, 0, sizeof(c));
	assert_int_equal(store_key_list_user(f->st, 0, collect_key, &c), 0);
	assert_int_equal(c.n, 0);
	memset(&c, 0, sizeof(c));
	assert_int_equal(store_key_list_user(f->st, 12345, collect_key, &c), 0);
	assert_int_equal(c.n, 0);
}

static void
test_key_all(void **state)
{
	struct fixture *f = *state;
	int64_t u = make_user(f->st, "all@x.io");
	struct collect c;

	make_key(f->st, H1, "a", u, 1);
	make_key(f->st, H2, "b", 0, 2);
	make_key(f->st, H3, "c", u, 3);
	assert_int_equal(store_key_revoke(f->st, H3), 0);
	memset(&c, 0, sizeof(c));
	assert_int_equal(store_key_all(f->st, collect_key, &c), 0);
	assert_int_equal(c.n, 3);
	memset(&c, 0, sizeof(c));
	c.stop_after = 1;
	assert_int_equal(store_key_all(f->st, collect_key, &c), 0);
	assert_int_equal(c.n, 1);
}

static void
test_key_updates(void **state)
{
	struct fixture *f = *state;
	int64_t u = make_user(f->st, "upd@x.io");
	struct store_key g;

	make_key(f->st, H1, "a", 0, 10);
	assert_int_equal(store_key_set_expiry(f->st, H1, 5000), 0);
	assert_int_equal(store_key_set_tier(f->st, H1, "enterprise"), 0);
	assert_int_equal(store_key_set_owner(f->st, H1, u), 0);
	assert_int_equal(store_key_revoke(f->st, H1), 0);
	assert_int_equal(store_key_revoke(f->st, H1), 0); /* again: still 0 */
	assert_int_equal(store_key_by_hash(f->st, H1, &g), 0);
	assert_int_equal(g.expires_at, 5000);
	assert_string_equal(g.tier, "enterprise");
	assert_int_equal(g.user_id, u);
	assert_int_equal(g.revoked, 1);
	assert_int_equal(store_key_set_owner(f->st, H1, 0), 0);
	assert_int_equal(store_key_by_hash(f->st, H1, &g), 0);
	assert_int_equal(g.user_id, 0);
	assert_int_equal(store_key_set_owner(f->st, H1, u + 77), -1);
	assert_non_null(strstr(store_error(f->st), "no such user"));
	/* unknown hash */
	assert_int_equal(store_key_set_expiry(f->st, H2, 1), STORE_NOTFOUND);
	assert_int_equal(store_key_revoke(f->st, H2), STORE_NOTFOUND);
	assert_int_equal(store_key_set_tier(f->st, H2, "free"), STORE_NOTFOUND);
	assert_int_equal(store_key_set_owner(f->st, H2, u), STORE_NOTFOUND);
	/* a hash that could never fit */
	assert_int_equal(store_key_revoke(f->st, "0123456789012345678901234567890123456789012345678"
	                                         "901234567890123456789"),
	                 -1);
	assert_non_null(strstr(store_error(f->st), "too long"));
}

static void
test_key_touch(void **state)
{
	struct fixture *f = *state;
	struct store_key g;

	make_key(f->st, H1, "a", 0, 10);
	assert_int_equal(store_key_touch(f->st, H1, 1000), 0);
	assert_int_equal(store_key_by_hash(f->st, H1, &g), 0);
	assert_int_equal(g.last_used, 1000);
	assert_int_equal(store_key_touch(f->st, H1, 900), 0); /* never backwards */
	assert_int_equal(store_key_by_hash(f->st, H1, &g), 0);
	assert_int_equal(g.last_used, 1000);
	assert_int_equal(store_key_touch(f->st, H1, 1100), 0);
	assert_int_equal(store_key_by_hash(f->st, H1, &g), 0);
	assert_int_equal(g.last_used, 1100);
	assert_int_equal(store_key_touch(f->st, H2, 1100), 0);
}

/* --- refresh tokens ---------------------------------------------------------------------- */

static void
test_refresh_create_get(void **state)
{
	struct fixture *f = *state;
	int64_t u = make_user(f->st, "r@x.io");
	struct store_refresh r;

	assert_int_equal(store_refresh_create(f->st, "jti-1", "fam-1", u, 9999), 0);
	assert_int_equal(store_refresh_get(f->st, "jti-1", &r), 0);
	assert_string_equal(r.jti, "jti-1");
	assert_string_equal(r.family, "fam-1");
	assert_int_equal(r.user_id, u);
	assert_int_equal(r.expires_at, 9999);
	assert_int_equal(r.used, 0);
	assert_int_equal(r.revoked, 0);
	assert_int_equal(store_refresh_create(f->st, "jti-1", "fam-2", u, 1), STORE_EXISTS);
	assert_int_equal(store_refresh_get(f->st, "nope", &r), STORE_NOTFOUND);
	/* a token for nobody is refused by the foreign key */
	assert_int_equal(store_refresh_create(f->st, "jti-2", "fam-1", u + 50, 1), -1);
	assert_non_null(strstr(store_error(f->st), "no such user"));
}

static void
test_refresh_reuse_detection(void **state)
{
	struct fixture *f = *state;
	int64_t u = make_user(f->st, "reuse@x.io");
	struct store_refresh r;

	assert_int_equal(store_refresh_create(f->st, "j1", "f1", u, 9999), 0);
	assert_int_equal(store_refresh_mark_used(f->st, "j1"), 0);
	assert_int_equal(store_refresh_get(f->st, "j1", &r), 0);
	assert_int_equal(r.used, 1);
	assert_int_equal(store_refresh_mark_used(f->st, "j1"), STORE_EXISTS);
	assert_non_null(strstr(store_error(f->st), "already used"));
	assert_int_equal(store_refresh_mark_used(f->st, "unknown"), STORE_NOTFOUND);
}

struct race {
	const char *url;
	const char *jti;
	pthread_barrier_t *barrier;
	int result;
};

static void *
race_thread(void *arg)
{
	struct race *r = arg;
	char err[256];
	struct store *st = store_open(r->url, err, sizeof(err));

	pthread_barrier_wait(r->barrier);
	r->result = st != NULL ? store_refresh_mark_used(st, r->jti) : -2;
	store_close(st);
	return NULL;
}

/* Rotations racing on one token from separate connections: exactly one wins. */
static void
test_refresh_mark_used_race(void **state)
{
	struct fixture *f = *state;
	enum { NTHREADS = 8, ROUNDS = 5 };
	int64_t u = make_user(f->st, "race@x.io");

	for (int round = 0; round < ROUNDS; round++) {
		pthread_t th[NTHREADS];
		struct race r[NTHREADS];
		pthread_barrier_t barrier;
		char jti[32];
		int wins = 0, reuse = 0;

		snprintf(jti, sizeof(jti), "race-%d", round);
		assert_int_equal(store_refresh_create(f->st, jti, "fam", u, 9999), 0);
		pthread_barrier_init(&barrier, NULL, NTHREADS);
		for (int i = 0; i < NTHREADS; i++) {
			r[i] = (struct race){f->url, jti, &barrier, -3};
			assert_int_equal(pthread_create(&th[i], NULL, race_thread, &r[i]), 0);
		}
		for (int i = 0; i < NTHREADS; i++) {
			pthread_join(th[i], NULL);
			wins += r[i].result == 0;
			reuse += r[i].result == STORE_EXISTS;
		}
		pthread_barrier_destroy(&barrier);
		assert_int_equal(wins, 1);
		assert_int_equal(reuse, NTHREADS - 1);
	}
}

static void
test_family_revoke(void **state)
{
	struct fixture *f = *state;
	int64_t u = make_user(f->st, "fam@x.io");
	struct store_refresh r;

	assert_int_equal(store_refresh_create(f->st, "a1", "famA", u, 9999), 0);
	assert_int_equal(store_refresh_create(f->st, "a2", "famA", u, 9999), 0);
	assert_int_equal(store_refresh_create(f->st, "b1", "famB", u, 9999), 0);
	assert_int_equal(store_refresh_mark_used(f->st, "a1"), 0);
	assert_int_equal(store_family_revoke(f->st, "famA"), 0);
	assert_int_equal(store_refresh_get(f->st, "a1", &r), 0);
	assert_int_equal(r.revoked, 1);
	assert_int_equal(store_refresh_get(f->st, "a2", &r), 0);
	assert_int_equal(r.revoked, 1);
	assert_int_equal(r.used, 0);
	assert_int_equal(store_refresh_get(f->st, "b1", &r), 0);
	assert_int_equal(r.revoked, 0);
	/* an unused token of a revoked family cannot be claimed */
	assert_int_equal(store_refresh_mark_used(f->st, "a2"), STORE_EXISTS);
	assert_int_equal(store_refresh_mark_used(f->st, "b1"), 0);
	assert_int_equal(store_family_revoke(f->st, "no-such-family"), 0);
	assert_int_equal(store_family_revoke(f->st, NULL), -1);
}

/* --- revocations -------------------------------------------------------------------------- */

static void
test_revocations(void **state)
{
	struct fixture *f = *state;
	struct collect c;
	sqlite3 *db;

	assert_int_equal(store_revoke_jti(f->st, "old", 100), 0);
	assert_int_equal(store_revoke_jti(f->st, "live", 300), 0);
	assert_int_equal(store_revoke_jti(f->st, "live", 250), 0); /* keeps the later expiry */
	assert_int_equal(store_revoke_jti(f->st, "edge", 200), 0);
	memset(&c, 0, sizeof(c));
	assert_int_equal(store_revocations_all(f->st, 200, collect_revocation, &c), 0);
	assert_int_equal(c.n, 1); /* expires_at == now is expired */
	assert_string_equal(c.last, "live");
	assert_int_equal(c.values[0], 300);
	memset(&c, 0, sizeof(c));
	assert_int_equal(store_revocations_all(f->st, 0, collect_revocation, &c), 0);
	assert_int_equal(c.n, 3);
	assert_int_equal(store_revoke_jti(f->st, "live", 400), 0); /* later wins */
	assert_int_equal(store_revocations_purge(f->st, 200), 0);
	db = raw_open(f->path);
	assert_int_equal(raw_int(db, "SELECT count(*) FROM revocations"), 1);
	assert_int_equal(raw_int(db, "SELECT expires_at FROM revocations"), 400);
	sqlite3_close(db);
}

/* --- blocks and bans ---------------------------------------------------------------------- */

static void
test_blocks(void **state)
{
	struct fixture *f = *state;
	struct collect c;

	assert_int_equal(store_block_set(f->st, "key", H1, 0), 0);
	assert_int_equal(store_block_set(f->st, "user", "42", 500), 0);
	assert_int_equal(store_block_set(f->st, "ip", "10.0.0.0/8", 100), 0);
	assert_int_equal(store_block_set(f->st, "ip", "2001:db8::/32", 0), 0);
	memset(&c, 0, sizeof(c));
	assert_int_equal(store_blocks_all(f->st, 50, collect_block, &c), 0);
	assert_int_equal(c.n, 4);
	memset(&c, 0, sizeof(c));
	assert_int_equal(store_blocks_all(f->st, 100, collect_block, &c), 0);
	assert_int_equal(c.n, 3); /* the ip block ended at 100 */
	memset(&c, 0, sizeof(c));
	assert_int_equal(store_blocks_all(f->st, 1000, collect_block, &c), 0);
	assert_int_equal(c.n, 2); /* only the forever ones */
	/* setting again replaces until */
	assert_int_equal(store_block_set(f->st, "user", "42", 0), 0);
	memset(&c, 0, sizeof(c));
	assert_int_equal(store_blocks_all(f->st, 1000, collect_block, &c), 0);
	assert_int_equal(c.n, 3);
	assert_int_equal(store_block_remove(f->st, "user", "42"), 0);
	assert_int_equal(store_block_remove(f->st, "user", "42"), STORE_NOTFOUND);
	assert_int_equal(store_block_remove(f->st, "ip", "10.0.0.0/8"), 0);
	memset(&c, 0, sizeof(c));
	assert_int_equal(store_blocks_all(f->st, 0, collect_block, &c), 0);
	assert_int_equal(c.n, 2);
	assert_int_equal(store_block_set(f->st, "identity", "x", 0), -1);
	assert_non_null(strstr(store_error(f->st), "unknown kind"));
	assert_int_equal(store_block_set(f->st, "ip", "", 0), -1);
	assert_int_equal(store_block_remove(f->st, NULL, "x"), -1);
}

static void
test_bans(void **state)
{
	struct fixture *f = *state;
	struct collect c;

	assert_int_equal(store_ban_set(f->st, "identity", "user:7", 1000, 1), 0);
	assert_int_equal(store_ban_set(f->st, "ip", "192.0.2.1", 500, 3), 0);
	memset(&c, 0, sizeof(c));
	assert_int_equal(store_bans_all(f->st, 600, collect_ban, &c), 0);
	assert_int_equal(c.n, 1);
	assert_string_equal(c.last, "identity:user:7");
	assert_int_equal(c.values[0], 1);
	/* a further ban replaces the old one with the next level */
	assert_int_equal(store_ban_set(f->st, "identity", "user:7", 3000, 2), 0);
	memset(&c, 0, sizeof(c));
	assert_int_equal(store_bans_all(f->st, 2000, collect_ban, &c), 0);
	assert_int_equal(c.n, 1);
	assert_int_equal(c.values[0], 2);
	memset(&c, 0, sizeof(c));
	assert_int_equal(store_bans_all(f->st, 0, collect_ban, &c), 0);
	assert_int_equal(c.n, 2);
	assert_int_equal(store_ban_remove(f->st, "ip", "192.0.2.1"), 0);
	assert_int_equal(store_ban_remove(f->st, "ip", "192.0.2.1"), STORE_NOTFOUND);
	assert_int_equal(store_ban_set(f->st, "key", H1, 10, 1), -1);
	assert_non_null(strstr(store_error(f->st), "unknown kind"));
}

static void
test_purge_expired(void **state)
{
	struct fixture *f = *state;
	int64_t u = make_user(f->st, "purge@x.io");
	struct store_refresh r;
	sqlite3 *db;

	assert_int_equal(store_revoke_jti(f->st, "r-old", 100), 0);
	assert_int_equal(store_revoke_jti(f->st, "r-new", 900), 0);
	assert_int_equal(store_refresh_create(f->st, "t-old", "f", u, 100), 0);
	assert_int_equal(store_refresh_create(f->st, "t-new", "f", u, 900), 0);
	assert_int_equal(store_block_set(f->st, "ip", "1.1.1.1", 100), 0);
	assert_int_equal(store_block_set(f->st, "ip", "2.2.2.2", 0), 0);
	assert_int_equal(store_ban_set(f->st, "ip", "3.3.3.3", 100, 1), 0);
	assert_int_equal(store_ban_set(f->st, "ip", "4.4.4.4", 900, 1), 0);
	assert_int_equal(store_purge_expired(f->st, 500), 0);
	assert_int_equal(store_refresh_get(f->st, "t-old", &r), STORE_NOTFOUND);
	assert_int_equal(store_refresh_get(f->st, "t-new", &r), 0);
	db = raw_open(f->path);
	assert_int_equal(raw_int(db, "SELECT count(*) FROM revocations"), 1);
	assert_int_equal(raw_int(db, "SELECT count(*) FROM blocks"), 1);
	assert_int_equal(raw_int(db, "SELECT count(*) FROM bans"), 1);
	sqlite3_close(db);
}

/* --- audit log ---------------------------------------------------------------------------- */

struct audit_check {
	int n;
	char first_target[STORE_TARGET_MAX];
	char first_detail[STORE_DETAIL_MAX];
	int64_t first_at;
};

static int
check_audit(const struct store_audit_entry *e, void *arg)
{
	struct audit_check *c = arg;

	if (c->n++ == 0) {
		util_strlcpy(c->first_target, e->target, sizeof(c->first_target));
		util_strlcpy(c->first_detail, e->detail, sizeof(c->first_detail));
		c->first_at = e->at;
	}
	return 0;
}

static void
test_audit_order_and_limit(void **state)
{
	struct fixture *f = *state;
	struct audit_check ac;
	struct collect c;
	char action[16];

	for (int i = 0; i < 5; i++) {
		snprintf(action, sizeof(action), "act%d", i);
		assert_int_equal(store_audit(f->st, "admin", action, "user:1", "{\"i\":1}"), 0);
	}
	memset(&c, 0, sizeof(c));
	assert_int_equal(store_audit_list(f->st, 0, collect_audit, &c), 0);
	assert_int_equal(c.n, 5);
	for (int i = 1; i < 5; i++)
		assert_true(c.values[i - 1] > c.values[i]); /* newest first */
	assert_string_equal(c.last, "act0");
	memset(&c, 0, sizeof(c));
	assert_int_equal(store_audit_list(f->st, 2, collect_audit, &c), 0);
	assert_int_equal(c.n, 2);
	assert_string_equal(c.last, "act3");
	/* NULL target and detail read back as "" */
	assert_int_equal(store_audit(f->st, "root", "fresh", NULL, NULL), 0);
	memset(&ac, 0, sizeof(ac));
	assert_int_equal(store_audit_list(f->st, 1, check_audit, &ac), 0);
	assert_int_equal(ac.n, 1);
	assert_string_equal(ac.first_target, "");
	assert_string_equal(ac.first_detail, "");
	assert_true(ac.first_at > 0);
}

static void
test_audit_argument_checks(void **state)
{
	struct fixture *f = *state;
	char *big = malloc(STORE_DETAIL_MAX + 1);

	assert_non_null(big);
	memset(big, 'x', STORE_DETAIL_MAX);
	big[STORE_DETAIL_MAX] = '\0';
	assert_int_equal(store_audit(f->st, "admin", "act", "t", big), -1);
	assert_non_null(strstr(store_error(f->st), "detail is too long"));
	big[STORE_DETAIL_MAX - 1] = '\0';
	assert_int_equal(store_audit(f->st, "admin", "act", "t", big), 0);
	assert_int_equal(store_audit(f->st, NULL, "act", "t", NULL), -1);
	assert_int_equal(store_audit(f->st, "admin", "", "t", NULL), -1);
	free(big);
}

/* --- settings ----------------------------------------------------------------------------- */

static void
test_settings(void **state)
{
	struct fixture *f = *state;
	char buf[64], small[4];

	assert_int_equal(store_setting_get(f->st, "jwt_secret", buf, sizeof(buf)), STORE_NOTFOUND);
	assert_string_equal(buf, "");
	assert_int_equal(store_setting_set(f->st, "jwt_secret", "s3cret"), 0);
	assert_int_equal(store_setting_get(f->st, "jwt_secret", buf, sizeof(buf)), 0);
	assert_string_equal(buf, "s3cret");
	assert_int_equal(store_setting_set(f->st, "jwt_secret", "other"), 0);
	assert_int_equal(store_setting_get(f->st, "jwt_secret", buf, sizeof(buf)), 0);
	assert_string_equal(buf, "other");
	assert_int_equal(store_setting_get(f->st, "jwt_secret", small, sizeof(small)), -1);
	assert_non_null(strstr(store_error(f->st), "too long"));
	assert_int_equal(store_setting_set(f->st, "empty", ""), 0);
	assert_int_equal(store_setting_get(f->st, "empty", buf, sizeof(buf)), 0);
	assert_string_equal(buf, "");
	assert_int_equal(store_setting_set(f->st, "x", NULL), -1);
}

static void
test_setting_set_once(void **state)
{
	struct fixture *f = *state;
	char buf[64];

	assert_int_equal(store_setting_set_once(f->st, "secret", "first", buf, sizeof(buf)), 0);
	assert_string_equal(buf, "first");
	assert_int_equal(store_setting_set_once(f->st, "secret", "second", buf, sizeof(buf)), 0);
	assert_string_equal(buf, "first");
	assert_int_equal(store_setting_get(f->st, "secret", buf, sizeof(buf)), 0);
	assert_string_equal(buf, "first");
}

/* --- transactions ------------------------------------------------------------------------- */

static void
test_transactions(void **state)
{
	struct fixture *f = *state;
	struct store_user u;
	struct store_key k;
	int64_t id;

	assert_int_equal(store_rollback(f->st), 0); /* none open: fine */
	assert_int_equal(store_begin(f->st), 0);
	id = make_user(f->st, "tx@x.io");
	make_key(f->st, H1, "tx", id, 0);
	assert_int_equal(store_rollback(f->st), 0);
	assert_int_equal(store_user_by_email(f->st, "tx@x.io", &u), STORE_NOTFOUND);
	assert_int_equal(store_key_by_hash(f->st, H1, &k), STORE_NOTFOUND);
	assert_int_equal(store_begin(f->st), 0);
	id = make_user(f->st, "tx@x.io");
	make_key(f->st, H1, "tx", id, 0);
	assert_int_equal(store_commit(f->st), 0);
	assert_int_equal(store_user_by_email(f->st, "tx@x.io", &u), 0);
	assert_int_equal(store_key_by_hash(f->st, H1, &k), 0);
	assert_int_equal(k.user_id, u.id);
	assert_int_equal(store_commit(f->st), -1); /* none open */
}

/* --- migrations --------------------------------------------------------------------------- */

static void
test_migrate_v1_upgrade_keeps_data(void **state)
{
	struct fixture *f = *state;
	struct store_refresh r;
	struct store_user u;
	struct store_key k;
	struct collect c;
	char err[256], buf[32];
	struct store *st = store_open_at_version(f->url, 1, err, sizeof(err));
	int64_t id;

	assert_non_null(st);
	assert_int_equal(store_schema_version(st), 1);
	id = make_user(st, "old@x.io");
	make_key(st, H1, "gw_old", id, 10);
	make_key(st, H2, "gw_legacy", 0, 20);
	assert_int_equal(store_refresh_create(st, "j", "fam", id, 9999), 0);
	assert_int_equal(store_revoke_jti(st, "rv", 9999), 0);
	assert_int_equal(store_block_set(st, "ip", "10.1.0.0/16", 0), 0);
	assert_int_equal(store_ban_set(st, "identity", "user:1", 9999, 2), 0);
	assert_int_equal(store_setting_set(st, "jwt_secret", "keep"), 0);
	/* v1 has no audit log yet */
	assert_int_equal(store_audit(st, "a", "b", NULL, NULL), -1);
	assert_non_null(strstr(store_error(st), "audit_log"));
	store_close(st);

	st = store_open(f->url, err, sizeof(err));
	assert_non_null(st);
	assert_int_equal(store_schema_version(st), store_schema_latest());
	assert_int_equal(store_user_by_email(st, "old@x.io", &u), 0);
	assert_int_equal(u.id, id);
	assert_int_equal(store_key_by_hash(st, H1, &k), 0);
	assert_int_equal(k.user_id, id);
	assert_int_equal(store_key_by_prefix(st, 0, "gw_legacy", &k), 0);
	assert_int_equal(store_refresh_get(st, "j", &r), 0);
	memset(&c, 0, sizeof(c));
	assert_int_equal(store_revocations_all(st, 0, collect_revocation, &c), 0);
	assert_int_equal(c.n, 1);
	memset(&c, 0, sizeof(c));
	assert_int_equal(store_blocks_all(st, 0, collect_block, &c), 0);
	assert_int_equal(c.n, 1);
	memset(&c, 0, sizeof(c));
	assert_int_equal(store_bans_all(st, 0, collect_ban, &c), 0);
	assert_int_equal(c.n, 1);
	assert_int_equal(store_setting_get(st, "jwt_secret", buf, sizeof(buf)), 0);
	assert_string_equal(buf, "keep");
	assert_int_equal(store_audit(st, "a", "b", NULL, NULL), 0);
	store_close(st);
}

/* From every older version, including an empty file, to the newest. */
static void
test_migrate_from_every_version(void **state)
{
	struct fixture *f = *state;

	for (int v = 0; v < store_schema_latest(); v++) {
		char path[160], url[200], name[32], err[256];
		struct store_user u;
		struct store *st;

		snprintf(name, sizeof(name), "v%d.db", v);
		fixture_url(f, name, path, sizeof(path), url, sizeof(url));
		st = store_open_at_version(url, v, err, sizeof(err));
		assert_non_null(st);
		assert_int_equal(store_schema_version(st), v);
		if (v >= 1)
			make_user(st, "kept@x.io");
		store_close(st);
		st = store_open(url, err, sizeof(err));
		if (st == NULL)
			fail_msg("from v%d: %s", v, err);
		assert_int_equal(store_schema_version(st), store_schema_latest());
		if (v >= 1)
			assert_int_equal(store_user_by_email(st, "kept@x.io", &u), 0);
		store_close(st);
	}
}

static void
test_migrate_status_text(void **state)
{
	struct fixture *f = *state;
	char path[160], url[200], err[256], out[4096], line[64];
	struct store *st;
	struct stat sb;

	fixture_url(f, "status.db", path, sizeof(path), url, sizeof(url));
	/* no file: version 0, everything pending, and no file created */
	assert_int_equal(store_migrate_status(url, out, sizeof(out)), 0);
	assert_non_null(strstr(out, "current version: 0"));
	assert_non_null(strstr(out, "no database file yet"));
	snprintf(line, sizeof(line), "latest version: %d", store_schema_latest());
	assert_non_null(strstr(out, line));
	assert_null(strstr(out, "applied"));
	assert_int_equal(stat(path, &sb), -1);

	st = store_open_at_version(url, 1, err, sizeof(err));
	assert_non_null(st);
	store_close(st);
	assert_int_equal(store_migrate_status(url, out, sizeof(out)), 0);
	assert_non_null(strstr(out, "current version: 1\n"));
	assert_non_null(strstr(out, "   1  applied "));
	assert_non_null(strstr(out, "   2  pending "));
	assert_non_null(strstr(out, "audit log"));

	assert_int_equal(store_migrate_status(f->url, out, sizeof(out)), 0);
	snprintf(line, sizeof(line), "current version: %d\n", store_schema_latest());
	assert_non_null(strstr(out, line));
	assert_null(strstr(out, "pending"));

	/* a small buffer truncates without overflowing */
	assert_int_equal(store_migrate_status(f->url, out, 16), 0);
	assert_int_equal(strlen(out), 15);
	assert_int_equal(store_migrate_status("mysql://x/y", out, sizeof(out)), -1);
	assert_non_null(strstr(out, "expected sqlite:PATH"));
}

static void
test_migrate_refuses_newer_schema(void **state)
{
	struct fixture *f = *state;
	char err[256], out[4096];
	sqlite3 *db = raw_open(f->path);

	raw_exec(db, "INSERT INTO schema_version (version, description, applied_at)"
	             " VALUES (999, 'from the future', 1)");
	sqlite3_close(db);
	assert_null(store_open(f->url, err, sizeof(err)));
	assert_non_null(strstr(err, "newer"));
	assert_int_equal(store_migrate_status(f->url, out, sizeof(out)), 0);
	assert_non_null(strstr(out, "current version: 999"));
}

static void
test_store_fresh(void **state)
{
	struct fixture *f = *state;
	char err[256];
	struct store_user u;
	sqlite3 *db;

	make_user(f->st, "gone@x.io");
	assert_int_equal(store_setting_set(f->st, "jwt_secret", "old"), 0);
	store_close(f->st);
	f->st = NULL;
	db = raw_open(f->path);
	raw_exec(db, "CREATE TABLE stray (x)");
	sqlite3_close(db);

	assert_int_equal(store_fresh(f->url, err, sizeof(err)), 0);
	f->st = store_open(f->url, err, sizeof(err));
	assert_non_null(f->st);
	assert_int_equal(store_schema_version(f->st), store_schema_latest());
	assert_int_equal(store_user_by_email(f->st, "gone@x.io", &u), STORE_NOTFOUND);
	db = raw_open(f->path);
	assert_int_equal(raw_int(db, "SELECT count(*) FROM sqlite_master WHERE name = 'stray'"), 0);
	assert_int_equal(raw_int(db, "SELECT count(*) FROM settings"), 0);
	sqlite3_close(db);
	/* the store works afterwards */
	make_user(f->st, "new@x.io");
	/* and a fresh on a file that does not exist yet simply creates it */
	{
		char path[160], url[200];

		fixture_url(f, "new.db", path, sizeof(path), url, sizeof(url));
		assert_int_equal(store_fresh(url, err, sizeof(err)), 0);
	}
}

struct holder {
	const char *path;
	pthread_barrier_t *locked;
};

/* Holds the write lock for 300 ms, as a daemon finishing a write would. */
static void *
hold_write_lock(void *arg)
{
	struct holder *h = arg;
	sqlite3 *db = raw_open(h->path);

	raw_exec(db, "BEGIN IMMEDIATE");
	raw_exec(db, "INSERT INTO settings VALUES ('a', 'b')");
	pthread_barrier_wait(h->locked);
	usleep(300 * 1000);
	raw_exec(db, "COMMIT");
	sqlite3_close(db);
	return NULL;
}

/* A fresh started while another process writes waits for it (busy timeout), then erases. */
static void
test_store_fresh_waits_for_writer(void **state)
{
	struct fixture *f = *state;
	pthread_barrier_t locked;
	struct holder h = {f->path, &locked};
	struct store_user u;
	char err[256], buf[8];
	pthread_t th;
	uint64_t t0;

	make_user(f->st, "busy@x.io");
	store_close(f->st);
	f->st = NULL;
	pthread_barrier_init(&locked, NULL, 2);
	assert_int_equal(pthread_create(&th, NULL, hold_write_lock, &h), 0);
	pthread_barrier_wait(&locked);
	t0 = util_now_us();
	assert_int_equal(store_fresh(f->url, err, sizeof(err)), 0);
	assert_true(util_now_us() - t0 >= 200000);
	pthread_join(th, NULL);
	pthread_barrier_destroy(&locked);
	f->st = store_open(f->url, err, sizeof(err));
	assert_non_null(f->st);
	assert_int_equal(store_user_by_email(f->st, "busy@x.io", &u), STORE_NOTFOUND);
	assert_int_equal(store_setting_get(f->st, "a", buf, sizeof(buf)), STORE_NOTFOUND);
}

/* Processes starting together on a new file: all succeed, each migration runs once. */
static void
test_concurrent_start_migrates_once(void **state)
{
	struct fixture *f = *state;
	enum { NPROC = 6 };
	char path[160], url[200];
	pid_t pids[NPROC];
	int status[NPROC];
	sqlite3 *db;

	fixture_url(f, "race.db", path, sizeof(path), url, sizeof(url));
	for (int i = 0; i < NPROC; i++) {
		pids[i] = fork();
		assert_true(pids[i] >= 0);
		if (pids[i] == 0) {
			char err[256];
			struct store *st = store_open(url, err, sizeof(err));

			if (st == NULL) {
				fprintf(stderr, "child: %s\n", err);
				_exit(1);
			}
			_exit(store_schema_version(st) == store_schema_latest() ? 0 : 2);
		}
	}
	/* every child is reaped before any assertion, so none outlives the directory */
	for (int i = 0; i < NPROC; i++) {
		if (waitpid(pids[i], &status[i], 0) != pids[i])
			status[i] = -1;
	}
	for (int i = 0; i < NPROC; i++) {
		assert_true(WIFEXITED(status[i]));
		assert_int_equal(WEXITSTATUS(status[i]), 0);
	}
	db = raw_open(path);
	assert_int_equal(raw_int(db, "SELECT count(*) FROM schema_version"), store_schema_latest());
	sqlite3_close(db);
}

/* --- concurrency and failures --------------------------------------------------------------- */

static void
test_two_connections_see_each_other(void **state)
{
	struct fixture *f = *state;
	char err[256];
	struct store *st2 = store_open(f->url, err, sizeof(err));
	struct store_user u;
	int64_t id;

	assert_non_null(st2);
	id = make_user(f->st, "one@x.io");
	assert_int_equal(store_user_by_id(st2, id, &u), 0);
	assert_int_equal(store_user_set_tier(st2, id, "basic"), 0);
	assert_int_equal(store_user_by_id(f->st, id, &u), 0);
	assert_string_equal(u.tier, "basic");
	/* WAL: a reader is not blocked by an open write transaction and sees the last commit */
	assert_int_equal(store_begin(f->st), 0);
	assert_int_equal(store_user_set_tier(f->st, id, "premium"), 0);
	assert_int_equal(store_user_by_id(st2, id, &u), 0);
	assert_string_equal(u.tier, "basic");
	assert_int_equal(store_commit(f->st), 0);
	assert_int_equal(store_user_by_id(st2, id, &u), 0);
	assert_string_equal(u.tier, "premium");
	store_close(st2);
}

static void
test_busy_gives_error_not_hang(void **state)
{
	struct fixture *f = *state;
	sqlite3 *db = raw_open(f->path);
	uint64_t t0;

	raw_exec(db, "BEGIN IMMEDIATE");
	store_set_busy_timeout(f->st, 100);
	t0 = util_now_us();
	assert_int_equal(store_user_create(f->st, "wait@x.io", "h", "free", "user", NULL), -1);
	assert_true(util_now_us() - t0 >= 90000);
	assert_non_null(strstr(store_error(f->st), "database is locked"));
	assert_non_null(strstr(store_error(f->st), "100 ms"));
	assert_int_equal(store_begin(f->st), -1);
	raw_exec(db, "COMMIT");
	sqlite3_close(db);
	assert_int_equal(store_user_create(f->st, "wait@x.io", "h", "free", "user", NULL), 0);
}

static void
test_readonly_uri(void **state)
{
	struct fixture *f = *state;
	char url[256], err[256];
	struct store_user u;
	struct store *ro;
	int64_t id = make_user(f->st, "ro@x.io");

	store_close(f->st);
	f->st = NULL;
	snprintf(url, sizeof(url), "sqlite:file:%s?mode=ro", f->path);
	ro = store_open(url, err, sizeof(err));
	if (ro == NULL)
		fail_msg("read-only open: %s", err);
	assert_int_equal(store_user_by_id(ro, id, &u), 0);
	assert_int_equal(store_user_create(ro, "new@x.io", "h", "free", "user", NULL), -1);
	assert_non_null(strstr(store_error(ro), "read"));
	assert_int_equal(store_setting_set(ro, "a", "b"), -1);
	assert_int_equal(store_key_touch(ro, H1, 5), -1);
	store_close(ro);
}

/* An outdated read-only file cannot be migrated: open fails with a message. */
static void
test_readonly_uri_needing_migration(void **state)
{
	struct fixture *f = *state;
	char path[160], url[200], rourl[256], err[256];
	struct store *st;

	fixture_url(f, "old.db", path, sizeof(path), url, sizeof(url));
	st = store_open_at_version(url, 1, err, sizeof(err));
	assert_non_null(st);
	store_close(st);
	snprintf(rourl, sizeof(rourl), "sqlite:file:%s?mode=ro", path);
	assert_null(store_open(rourl, err, sizeof(err)));
	assert_non_null(strstr(err, "read"));
}

static void
test_readonly_file_mode(void **state)
{
	struct fixture *f = *state;
	char err[256];
	struct store *ro;

	if (geteuid() == 0)
		skip(); /* root writes through file modes; test_readonly_uri covers this path */
	make_user(f->st, "mode@x.io");
	store_close(f->st);
	f->st = NULL;
	assert_int_equal(chmod(f->path, 0444), 0);
	/* SQLite falls back to a read-only connection: reads work, writes fail cleanly */
	ro = store_open(f->url, err, sizeof(err));
	if (ro == NULL)
		fail_msg("open of a 0444 file: %s", err);
	{
		struct store_user u;

		assert_int_equal(store_user_by_email(ro, "mode@x.io", &u), 0);
	}
	assert_int_equal(store_user_create(ro, "x@x.io", "h", "free", "user", NULL), -1);
	assert_non_null(strstr(store_error(ro), "read-only"));
	store_close(ro);
	chmod(f->path, 0644);
}

static void
test_disk_full(void **state)
{
	struct fixture *f = *state;
	char email[64], pw[120];
	struct store_user u;
	int i, ret = 0;

	assert_int_equal(store_test_cap_size(f->st), 0);
	memset(pw, 'p', sizeof(pw) - 1);
	pw[sizeof(pw) - 1] = '\0';
	for (i = 0; i < 100000; i++) {
		snprintf(email, sizeof(email), "full%d@x.io", i);
		ret = store_user_create(f->st, email, pw, "free", "user", NULL);
		if (ret != 0)
			break;
	}
	assert_int_equal(ret, -1);
	assert_non_null(strstr(store_error(f->st), "full"));
	/* the connection still reads, and the failed row is not there */
	assert_int_equal(store_user_by_email(f->st, "full0@x.io", &u), 0);
	assert_int_equal(store_user_by_email(f->st, email, &u), STORE_NOTFOUND);
}

/* A value written into the database by hand that exceeds a field is an error, not a
 * truncated (and so wrong) value. */
static void
test_oversized_stored_value(void **state)
{
	struct fixture *f = *state;
	struct store_key k;
	sqlite3 *db = raw_open(f->path);

	raw_exec(db, "INSERT INTO api_keys (hash, prefix, tier, created_at) VALUES ('h',"
	             " 'this-prefix-is-far-too-long', 'free', 1)");
	sqlite3_close(db);
	assert_int_equal(store_key_by_hash(f->st, "h", &k), -1);
	assert_non_null(strstr(store_error(f->st), "prefix is too long"));
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_open_url_errors),
	    cmocka_unit_test_setup_teardown(test_open_fresh_is_latest_and_wal, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_open_relative_path, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_reopen_keeps_data, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_user_create_and_get, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_user_email_case_insensitive, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_user_not_found, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_user_set_tier_and_role, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_user_list, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_user_argument_checks, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_sql_injection_looking_input, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_key_create_and_by_hash, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_key_create_unknown_owner_fails, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_key_by_prefix, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_key_list_user, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_key_all, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_key_updates, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_key_touch, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_refresh_create_get, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_refresh_reuse_detection, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_refresh_mark_used_race, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_family_revoke, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_revocations, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_blocks, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_bans, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_purge_expired, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_audit_order_and_limit, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_audit_argument_checks, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_settings, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_setting_set_once, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_transactions, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_migrate_v1_upgrade_keeps_data, setup_dir,
	                                    teardown),
	    cmocka_unit_test_setup_teardown(test_migrate_from_every_version, setup_dir, teardown),
	    cmocka_unit_test_setup_teardown(test_migrate_status_text, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_migrate_refuses_newer_schema, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_store_fresh, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_store_fresh_waits_for_writer, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_concurrent_start_migrates_once, setup_dir,
	                                    teardown),
	    cmocka_unit_test_setup_teardown(test_two_connections_see_each_other, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_busy_gives_error_not_hang, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_readonly_uri, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_readonly_uri_needing_migration, setup_dir,
	                                    teardown),
	    cmocka_unit_test_setup_teardown(test_readonly_file_mode, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_disk_full, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_oversized_stored_value, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
