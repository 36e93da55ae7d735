#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <sqlite3.h>

#include "log.h"
#include "store.h"
#include "store_impl.h"
#include "util.h"
#include "xmalloc.h"

/*
 * store.h's public functions, and its SQLite backend. A struct store is an SQLite
 * connection, or a PostgreSQL one (st->pg, store_pg.c): the public functions check their
 * arguments here, then run their statements through store_write/store_read/store_list,
 * which hand them to the connection's backend, and decode rows through struct store_row,
 * whichever backend produced them.
 *
 * Every data statement is a constant string prepared once per connection
 * (SQLITE_PREPARE_PERSISTENT) and cached in st->stmt[], with values bound, never spliced:
 * SQL injection is impossible by construction. The only SQL run through sqlite3_exec is
 * constant text (pragmas, migrations, transaction control).
 *
 * The SQL below is deliberately plain (ON CONFLICT, no SQLite-only functions in the data
 * statements): store_pg.c runs the same text with $N for ?N and overrides the few
 * statements that differ (see store_pg_sql there).
 */

#define STORE_BUSY_MS 5000
#define STORE_ERR_MAX 512

struct store_migration {
	int version;
	const char *description;
	const char *sql;
};

/*
 * The schema, as an append-only history: a released migration is never edited, a change
 * is a new entry. Versions are 1, 2, 3, ... with no gaps; each runs in its own
 * transaction together with its schema_version row, so a crash leaves the database at
 * the previous version, never half-way.
 */
static const struct store_migration store_migrations[] = {
    {1, "initial schema: users, api_keys, refresh_tokens, revocations, blocks, bans, settings",
     "CREATE TABLE users ("
     " id INTEGER PRIMARY KEY,"
     " email TEXT NOT NULL COLLATE NOCASE UNIQUE,"
     " pwhash TEXT NOT NULL,"
     " tier TEXT NOT NULL,"
     " role TEXT NOT NULL DEFAULT 'user',"
     " created_at INTEGER NOT NULL);"
     "CREATE TABLE api_keys ("
     " hash TEXT PRIMARY KEY,"
     " prefix TEXT NOT NULL,"
     " tier TEXT NOT NULL,"
     " user_id INTEGER REFERENCES users(id) ON DELETE SET NULL,"
     " created_at INTEGER NOT NULL,"
     " last_used INTEGER NOT NULL DEFAULT 0,"
     " expires_at INTEGER NOT NULL DEFAULT 0,"
     " revoked INTEGER NOT NULL DEFAULT 0);"
     "CREATE INDEX api_keys_user_prefix ON api_keys(user_id, prefix);"
     "CREATE TABLE refresh_tokens ("
     " jti TEXT PRIMARY KEY,"
     " family TEXT NOT NULL,"
     " user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,"
     " expires_at INTEGER NOT NULL,"
     " used INTEGER NOT NULL DEFAULT 0,"
     " revoked INTEGER NOT NULL DEFAULT 0);"
     "CREATE INDEX refresh_tokens_family ON refresh_tokens(family);"
     "CREATE TABLE revocations ("
     " jti TEXT PRIMARY KEY,"
     " expires_at INTEGER NOT NULL);"
     "CREATE TABLE blocks ("
     " kind TEXT NOT NULL CHECK (kind IN ('key', 'user', 'ip')),"
     " value TEXT NOT NULL,"
     " until INTEGER NOT NULL DEFAULT 0,"
     " created_at INTEGER NOT NULL,"
     " PRIMARY KEY (kind, value));"
     "CREATE TABLE bans ("
     " kind TEXT NOT NULL CHECK (kind IN ('identity', 'ip')),"
     " value TEXT NOT NULL,"
     " until INTEGER NOT NULL,"
     " level INTEGER NOT NULL DEFAULT 1,"
     " PRIMARY KEY (kind, value));"
     "CREATE TABLE settings ("
     " name TEXT PRIMARY KEY,"
     " value TEXT NOT NULL);"},
    {2, "audit log of admin actions",
     "CREATE TABLE audit_log ("
     " id INTEGER PRIMARY KEY AUTOINCREMENT,"
     " at INTEGER NOT NULL,"
     " actor TEXT NOT NULL,"
     " action TEXT NOT NULL,"
     " target TEXT NOT NULL DEFAULT '',"
     " detail TEXT NOT NULL DEFAULT '');"},
    {3, "indexes for expiry purges",
     "CREATE INDEX revocations_expires ON revocations(expires_at);"
     "CREATE INDEX refresh_tokens_expires ON refresh_tokens(expires_at);"},
};

#define STORE_NMIGRATIONS (int)(sizeof(store_migrations) / sizeof(store_migrations[0]))

static const char *const store_sql[ST_COUNT] = {
    [ST_BEGIN] = "BEGIN IMMEDIATE",
    [ST_COMMIT] = "COMMIT",
    [ST_ROLLBACK] = "ROLLBACK",
    [ST_USER_INSERT] = "INSERT INTO users (email, pwhash, tier, role, created_at)"
                       " VALUES (?1, ?2, ?3, ?4, ?5)",
    [ST_USER_BY_EMAIL] = "SELECT " STORE_USER_COLS " FROM users WHERE email = ?1",
    [ST_USER_BY_ID] = "SELECT " STORE_USER_COLS " FROM users WHERE id = ?1",
    [ST_USER_SET_TIER] = "UPDATE users SET tier = ?2 WHERE id = ?1",
    [ST_USER_SET_ROLE] = "UPDATE users SET role = ?2 WHERE id = ?1",
    [ST_USER_LIST] = "SELECT " STORE_USER_COLS " FROM users ORDER BY id",
    [ST_KEY_INSERT] = "INSERT INTO api_keys (hash, prefix, tier, user_id, created_at, last_used,"
                      " expires_at, revoked) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    [ST_KEY_BY_HASH] = "SELECT " STORE_KEY_COLS " FROM api_keys WHERE hash = ?1",
    [ST_KEY_BY_PREFIX] = STORE_SQL_KEY_BY_PREFIX("IS", "rowid"),
    [ST_KEY_LIST_USER] = STORE_SQL_KEY_LIST_USER("IS", "rowid"),
    [ST_KEY_ALL] = "SELECT " STORE_KEY_COLS " FROM api_keys ORDER BY rowid",
    [ST_KEY_SET_EXPIRY] = "UPDATE api_keys SET expires_at = ?2 WHERE hash = ?1",
    [ST_KEY_REVOKE] = "UPDATE api_keys SET revoked = 1 WHERE hash = ?1",
    [ST_KEY_SET_TIER] = "UPDATE api_keys SET tier = ?2 WHERE hash = ?1",
    [ST_KEY_SET_OWNER] = "UPDATE api_keys SET user_id = ?2 WHERE hash = ?1",
    [ST_KEY_TOUCH] = "UPDATE api_keys SET last_used = ?2 WHERE hash = ?1 AND last_used < ?2",
    [ST_REFRESH_INSERT] = "INSERT INTO refresh_tokens (jti, family, user_id, expires_at)"
                          " VALUES (?1, ?2, ?3, ?4)",
    [ST_REFRESH_GET] = "SELECT jti, family, user_id, expires_at, used, revoked"
                       " FROM refresh_tokens WHERE jti = ?1",
    [ST_REFRESH_MARK] = "UPDATE refresh_tokens SET used = 1"
                        " WHERE jti = ?1 AND used = 0 AND revoked = 0",
    [ST_FAMILY_REVOKE] = "UPDATE refresh_tokens SET revoked = 1 WHERE family = ?1",
    [ST_REVOKE_INSERT] = "INSERT INTO revocations (jti, expires_at) VALUES (?1, ?2)"
                         " ON CONFLICT (jti) DO UPDATE SET expires_at = excluded.expires_at"
                         " WHERE excluded.expires_at > revocations.expires_at",
    [ST_REVOCATIONS_ALL] = "SELECT jti, expires_at FROM revocations WHERE expires_at > ?1"
                           " ORDER BY jti",
    [ST_REVOCATIONS_PURGE] = "DELETE FROM revocations WHERE expires_at <= ?1",
    [ST_REFRESH_PURGE] = "DELETE FROM refresh_tokens WHERE expires_at <= ?1",
    [ST_BLOCKS_PURGE] = "DELETE FROM blocks WHERE until <> 0 AND until <= ?1",
    [ST_BANS_PURGE] = "DELETE FROM bans WHERE until <> 0 AND until <= ?1",
    [ST_BLOCK_SET] = "INSERT INTO blocks (kind, value, until, created_at) VALUES (?1, ?2, ?3, ?4)"
                     " ON CONFLICT (kind, value) DO UPDATE SET until = excluded.until",
    [ST_BLOCK_REMOVE] = "DELETE FROM blocks WHERE kind = ?1 AND value = ?2",
    [ST_BLOCKS_ALL] = "SELECT kind, value, until, created_at FROM blocks"
                      " WHERE until = 0 OR until > ?1 ORDER BY kind, value",
    [ST_BAN_SET] = "INSERT INTO bans (kind, value, until, level) VALUES (?1, ?2, ?3, ?4)"
                   " ON CONFLICT (kind, value) DO UPDATE SET until = excluded.until,"
                   " level = excluded.level",
    [ST_BAN_REMOVE] = "DELETE FROM bans WHERE kind = ?1 AND value = ?2",
    [ST_BANS_ALL] = "SELECT kind, value, until, level FROM bans"
                    " WHERE until = 0 OR until > ?1 ORDER BY kind, value",
    [ST_AUDIT_INSERT] = "INSERT INTO audit_log (at, actor, action, target, detail)"
                        " VALUES (?1, ?2, ?3, ?4, ?5)",
    /* LIMIT -1 is "no limit" in SQLite. */
    [ST_AUDIT_LIST] = "SELECT id, at, actor, action, target, detail FROM audit_log"
                      " ORDER BY id DESC LIMIT ?1",
    [ST_SETTING_GET] = "SELECT value FROM settings WHERE name = ?1",
    [ST_SETTING_SET] = "INSERT INTO settings (name, value) VALUES (?1, ?2)"
                       " ON CONFLICT (name) DO UPDATE SET value = excluded.value",
    [ST_SETTING_SET_ONCE] = "INSERT INTO settings (name, value) VALUES (?1, ?2)"
                            " ON CONFLICT (name) DO NOTHING",
    [ST_USER_IMPORT] = "INSERT INTO users (id, email, pwhash, tier, role, created_at)"
                       " VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    [ST_BLOCK_IMPORT] = "INSERT INTO blocks (kind, value, until, created_at)"
                        " VALUES (?1, ?2, ?3, ?4)",
    [ST_AUDIT_IMPORT] = "INSERT INTO audit_log (id, at, actor, action, target, detail)"
                        " VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    [ST_ROW_COUNT] = "SELECT (SELECT count(*) FROM users) + (SELECT count(*) FROM api_keys)",
};

const char *
store_sql_text(enum store_stmt_id id)
{
	return id >= 0 && id < ST_COUNT ? store_sql[id] : NULL;
}

const char *
store_migration_description(int version)
{
	return version >= 1 && version <= STORE_NMIGRATIONS
	           ? store_migrations[version - 1].description
	           : "";
}

struct store {
	sqlite3 *db;
	struct store_pg *pg; /* not NULL: a PostgreSQL connection, and db is NULL */
	int busy_ms;
	char err[STORE_ERR_MAX];
	sqlite3_stmt *stmt[ST_COUNT];
};

/* --- errors ---------------------------------------------------------------------------- */

static int store_failx(struct store *st, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static int
store_failx(struct store *st, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(st->err, sizeof(st->err), fmt, ap);
	va_end(ap);
	return -1;
}

/*
 * Turns an SQLite failure into the connection's message. The raw messages are terse
 * ("database is locked"), so the common operational failures get a word on what it
 * means for an operator.
 */
static int
store_fail(struct store *st, const char *what, int rc)
{
	int sys_errno = st->db != NULL && sqlite3_system_errno(st->db) != 0
	                    ? sqlite3_system_errno(st->db)
	                    : errno;
	const char *msg = st->db != NULL ? sqlite3_errmsg(st->db) : sqlite3_errstr(rc);

	switch (rc & 0xff) {
	case SQLITE_BUSY:
	case SQLITE_LOCKED:
		return store_failx(st, "%s: %s (another connection held it for more than %d ms)",
		                   what, msg, st->busy_ms);
	case SQLITE_READONLY:
		return store_failx(st, "%s: %s (the database file or its directory is read-only)",
		                   what, msg);
	case SQLITE_FULL:
		return store_failx(st, "%s: %s (no space left for the database)", what, msg);
	case SQLITE_IOERR:
		/* "disk I/O error" alone hides the cause (EPERM of an immutable file, EIO). SQLite
		 * keeps no errno for a failed WAL write: the one left by its last call is it. */
		if (sys_errno != 0)
			return store_failx(st, "%s: %s (%s)", what, msg, strerror(sys_errno));
		break;
	default:
		break;
	}
	if (rc == SQLITE_CONSTRAINT_FOREIGNKEY)
		return store_failx(st, "%s: no such user (%s)", what, msg);
	return store_failx(st, "%s: %s", what, msg);
}

const char *
store_error(const struct store *st)
{
	return st != NULL ? st->err : "no store";
}

/* --- statements ------------------------------------------------------------------------ */

static sqlite3_stmt *
store_stmt(struct store *st, enum store_stmt_id id, const char *what)
{
	int rc;

	if (st->stmt[id] != NULL)
		return st->stmt[id];
	if (store_sql[id] == NULL) {
		store_failx(st, "%s: not a statement of the SQLite store", what);
		return NULL;
	}
	rc = sqlite3_prepare_v3(st->db, store_sql[id], -1, SQLITE_PREPARE_PERSISTENT, &st->stmt[id],
	                        NULL);
	if (rc != SQLITE_OK) {
		store_fail(st, what, rc);
		sqlite3_finalize(st->stmt[id]);
		st->stmt[id] = NULL;
	}
	return st->stmt[id];
}

/* Leaves a cached statement ready for its next use, holding no pointer into our callers'
 * strings (they are bound SQLITE_STATIC). */
static void
store_done(sqlite3_stmt *s)
{
	sqlite3_reset(s);
	sqlite3_clear_bindings(s);
}

/* Text values are bound SQLITE_STATIC: store_done ends their use. */
#define STORE_END                                                                                  \
	{                                                                                          \
		STORE_VAL_END, NULL, 0                                                             \
	}

static inline struct store_val
store_text(const char *v)
{
	return (struct store_val){STORE_VAL_TEXT, v, 0};
}

static inline struct store_val
store_int(int64_t v)
{
	return (struct store_val){STORE_VAL_INT, NULL, v};
}

static inline struct store_val
store_owner(int64_t user_id)
{
	return (struct store_val){STORE_VAL_OWNER, NULL, user_id};
}

static int
store_bind(sqlite3_stmt *s, int idx, const struct store_val *v)
{
	if (v->type == STORE_VAL_TEXT)
		return sqlite3_bind_text(s, idx, v->text, -1, SQLITE_STATIC);
	if (v->type == STORE_VAL_OWNER && v->num == 0)
		return sqlite3_bind_null(s, idx);
	return sqlite3_bind_int64(s, idx, v->num);
}

/* The cached statement id with vals bound. NULL on failure (message set, statement
 * left clean). */
static sqlite3_stmt *
store_prepare(struct store *st, enum store_stmt_id id, const char *what,
              const struct store_val *vals)
{
	sqlite3_stmt *s = store_stmt(st, id, what);

	if (s == NULL)
		return NULL;
	for (int i = 0; vals[i].type != STORE_VAL_END; i++) {
		int rc = store_bind(s, i + 1, &vals[i]);

		if (rc != SQLITE_OK) {
			store_fail(st, what, rc);
			store_done(s);
			return NULL;
		}
	}
	return s;
}

/*
 * Runs a statement that returns no rows. 0 with *changes set, STORE_EXISTS on a
 * uniqueness violation, -1 otherwise. Resets the statement in every case.
 */
static int
store_step_write(struct store *st, sqlite3_stmt *s, const char *what, int *changes)
{
	int rc = sqlite3_step(s);
	int ret = 0;

	if (rc == SQLITE_DONE) {
		if (changes != NULL)
			*changes = sqlite3_changes(st->db);
	} else if (rc == SQLITE_CONSTRAINT_UNIQUE || rc == SQLITE_CONSTRAINT_PRIMARYKEY) {
		store_failx(st, "%s: already exists", what);
		ret = STORE_EXISTS;
	} else {
		ret = store_fail(st, what, rc);
	}
	store_done(s);
	return ret;
}

/* Copies a text column into a fixed field; a value that does not fit is an error, since a
 * truncated hash or email would silently name something else. */
static int
store_col_text(struct store *st, const struct store_row *row, int col, char *dst, size_t size,
               const char *what)
{
	size_t n = 0;
	const char *v = row->get_text(row, col, &n);

	if (v == NULL) {
		dst[0] = '\0';
		return 0;
	}
	if (n >= size)
		return store_failx(st, "%s: stored %s is too long (%zu bytes, at most %zu)", what,
		                   row->get_name(row, col), n, size - 1);
	memcpy(dst, v, n);
	dst[n] = '\0';
	return 0;
}

static int64_t
store_col_int(const struct store_row *row, int col)
{
	return row->get_int(row, col);
}

/* struct store_row over an SQLite statement positioned on a row. */
static int64_t
store_sqlite_int(const struct store_row *r, int col)
{
	return sqlite3_column_int64((sqlite3_stmt *)(uintptr_t)r->impl, col);
}

static const char *
store_sqlite_text(const struct store_row *r, int col, size_t *len)
{
	sqlite3_stmt *s = (sqlite3_stmt *)(uintptr_t)r->impl;
	const unsigned char *v = sqlite3_column_text(s, col);

	*len = (size_t)sqlite3_column_bytes(s, col);
	return (const char *)v;
}

static const char *
store_sqlite_name(const struct store_row *r, int col)
{
	return sqlite3_column_name((sqlite3_stmt *)(uintptr_t)r->impl, col);
}

static struct store_row
store_sqlite_row(sqlite3_stmt *s)
{
	return (struct store_row){s, 0, store_sqlite_int, store_sqlite_text, store_sqlite_name};
}

/*
 * Checks a string argument: present, not empty (unless allow_empty) and short enough for
 * its field. The same limits as the structs, so anything stored can be read back.
 */
static int
store_arg(struct store *st, const char *what, const char *name, const char *v, size_t size,
          int allow_empty)
{
	size_t n;

	if (v == NULL)
		return store_failx(st, "%s: %s is missing", what, name);
	n = strlen(v);
	if (n == 0 && !allow_empty)
		return store_failx(st, "%s: %s is empty", what, name);
	if (n >= size)
		return store_failx(st, "%s: %s is too long (%zu bytes, at most %zu)", what, name, n,
		                   size - 1);
	return 0;
}

static int64_t
store_now(void)
{
	return (int64_t)time(NULL);
}

/*
 * Walks the rows of a bound statement, handing each to emit (which decodes it and calls
 * the caller's function): emit returns 0 to go on, 1 to stop, -1 on a decoding error.
 */
typedef int (*store_emit_fn)(struct store *st, const struct store_row *row, void *ctx,
                             const char *what);

static int
store_walk(struct store *st, sqlite3_stmt *s, const char *what, store_emit_fn emit, void *ctx)
{
	int rc, ret = 0;

	const struct store_row row = store_sqlite_row(s);

	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		int e = emit(st, &row, ctx, what);

		if (e != 0) {
			ret = e < 0 ? -1 : 0;
			break;
		}
	}
	if (rc != SQLITE_ROW && rc != SQLITE_DONE)
		ret = store_fail(st, what, rc);
	store_done(s);
	return ret;
}

/*
 * Runs a statement that returns at most one row, decoded by emit. 0 found,
 * STORE_NOTFOUND, -1.
 */
static int
store_get_one(struct store *st, sqlite3_stmt *s, const char *what, store_emit_fn emit, void *out)
{
	const struct store_row row = store_sqlite_row(s);
	int rc = sqlite3_step(s);
	int ret;

	if (rc == SQLITE_ROW) {
		ret = emit(st, &row, out, what) < 0 ? -1 : 0;
	} else if (rc == SQLITE_DONE) {
		store_failx(st, "%s: not found", what);
		ret = STORE_NOTFOUND;
	} else {
		ret = store_fail(st, what, rc);
	}
	store_done(s);
	return ret;
}

/*
 * A PostgreSQL statement: its rows go to emit through this adapter, which counts them
 * and remembers a decoding failure (the message is already in st->err).
 */
struct store_pg_walk {
	struct store *st;
	const char *what;
	store_emit_fn emit;
	void *ctx;
	int rows;
	int failed;
};

static int
store_pg_emit(const struct store_row *row, void *arg)
{
	struct store_pg_walk *w = arg;
	int e = w->emit(w->st, row, w->ctx, w->what);

	w->rows++;
	if (e < 0)
		w->failed = 1;
	return e;
}

/* store_pg_run with the message prefixed by what, as the SQLite messages are. */
static int
store_pg_call(struct store *st, enum store_stmt_id id, const char *what,
              const struct store_val *vals, store_row_fn fn, void *ctx, int *changes)
{
	char msg[STORE_ERR_MAX];
	int ret = store_pg_run(st->pg, id, vals, fn, ctx, changes, msg, sizeof(msg));

	if (ret == STORE_EXISTS)
		store_failx(st, "%s: already exists", what);
	else if (ret < 0)
		store_failx(st, "%s: %s", what, msg);
	return ret;
}

/* Runs statement id on the PostgreSQL connection: 0 (*rows set when not NULL),
 * STORE_EXISTS, -1. */
static int
store_pg_walk(struct store *st, enum store_stmt_id id, const char *what,
              const struct store_val *vals, store_emit_fn emit, void *ctx, int *rows)
{
	struct store_pg_walk w = {st, what, emit, ctx, 0, 0};
	int ret = store_pg_call(st, id, what, vals, store_pg_emit, &w, NULL);

	if (ret < 0 || w.failed)
		return -1;
	if (rows != NULL)
		*rows = w.rows;
	return ret;
}

/*
 * Statement id run with vals bound, one helper per kind of result. Each resets the
 * statement in every case.
 */

/* A statement that returns no rows: 0 with *changes set (when not NULL), STORE_EXISTS on
 * a uniqueness violation, -1. */
static int
store_write(struct store *st, enum store_stmt_id id, const char *what, const struct store_val *vals,
            int *changes)
{
	sqlite3_stmt *s;

	if (st->pg != NULL)
		return store_pg_call(st, id, what, vals, NULL, NULL, changes);
	s = store_prepare(st, id, what, vals);
	return s == NULL ? -1 : store_step_write(st, s, what, changes);
}

/* A write with no outcome worth telling apart: 0 or -1. */
static int
store_write_ok(struct store *st, enum store_stmt_id id, const char *what,
               const struct store_val *vals)
{
	return store_write(st, id, what, vals, NULL) == 0 ? 0 : -1;
}

/* UPDATE/DELETE of one row by key: 0, STORE_NOTFOUND when no row matched, -1. */
static int
store_update(struct store *st, enum store_stmt_id id, const char *what,
             const struct store_val *vals)
{
	int changes = 0;
	int ret = store_write(st, id, what, vals, &changes);

	if (ret == STORE_EXISTS)
		return -1; /* no update of ours changes a unique column */
	if (ret == 0 && changes == 0) {
		store_failx(st, "%s: not found", what);
		return STORE_NOTFOUND;
	}
	return ret;
}

/* At most one row, decoded by emit into out: 0 found, STORE_NOTFOUND, -1. */
static int
store_read(struct store *st, enum store_stmt_id id, const char *what, const struct store_val *vals,
           store_emit_fn emit, void *out)
{
	sqlite3_stmt *s;

	if (st->pg != NULL) {
		int rows = 0;

		if (store_pg_walk(st, id, what, vals, emit, out, &rows) != 0)
			return -1;
		if (rows > 0)
			return 0;
		store_failx(st, "%s: not found", what);
		return STORE_NOTFOUND;
	}
	s = store_prepare(st, id, what, vals);
	return s == NULL ? -1 : store_get_one(st, s, what, emit, out);
}

/* Every row, handed to emit: 0 or -1. */
static int
store_list(struct store *st, enum store_stmt_id id, const char *what, const struct store_val *vals,
           store_emit_fn emit, void *ctx)
{
	sqlite3_stmt *s;

	if (st->pg != NULL)
		return store_pg_walk(st, id, what, vals, emit, ctx, NULL) == 0 ? 0 : -1;
	s = store_prepare(st, id, what, vals);
	return s == NULL ? -1 : store_walk(st, s, what, emit, ctx);
}

/* --- opening and migrations ------------------------------------------------------------ */

/* "sqlite:PATH" -> PATH. 0, or -1 with err filled. (postgresql:// URLs go to store_pg.c
 * before this.) */
static int
store_parse_url(const char *url, const char **path, char *err, size_t errlen)
{
	if (url == NULL || *url == '\0') {
		snprintf(err, errlen, "no database URL");
		return -1;
	}
	if (strncmp(url, "sqlite:", 7) != 0) {
		snprintf(err, errlen,
		         "unsupported database URL \"%s\" (expected sqlite:PATH or "
		         "postgresql://...)",
		         url);
		return -1;
	}
	if (url[7] == '\0') {
		snprintf(err, errlen, "database URL \"%s\" has no path", url);
		return -1;
	}
	*path = url + 7;
	return 0;
}

static int
store_exec(struct store *st, const char *sql, const char *what)
{
	int rc = sqlite3_exec(st->db, sql, NULL, NULL, NULL);

	return rc == SQLITE_OK ? 0 : store_fail(st, what, rc);
}

/* The schema version: 0 when the schema_version table does not exist yet. */
static int
store_read_version(struct store *st, int *version)
{
	static const char exists_sql[] =
	    "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'";
	static const char version_sql[] = "SELECT coalesce(max(version), 0) FROM schema_version";
	sqlite3_stmt *s = NULL;
	int rc, have = 0;

	/* Not cached: the table may not exist when the connection opens. */
	rc = sqlite3_prepare_v2(st->db, exists_sql, -1, &s, NULL);
	if (rc == SQLITE_OK && (rc = sqlite3_step(s)) == SQLITE_ROW) {
		have = sqlite3_column_int(s, 0) > 0;
		rc = SQLITE_OK;
	}
	sqlite3_finalize(s);
	s = NULL;
	if (rc != SQLITE_OK)
		return store_fail(st, "reading the schema version", rc);
	*version = 0;
	if (!have)
		return 0;
	rc = sqlite3_prepare_v2(st->db, version_sql, -1, &s, NULL);
	if (rc == SQLITE_OK && (rc = sqlite3_step(s)) == SQLITE_ROW) {
		*version = sqlite3_column_int(s, 0);
		rc = SQLITE_OK;
	}
	sqlite3_finalize(s);
	return rc == SQLITE_OK ? 0 : store_fail(st, "reading the schema version", rc);
}

static int
store_record_version(struct store *st, const struct store_migration *m)
{
	static const char sql[] =
	    "INSERT INTO schema_version (version, description, applied_at) VALUES (?1, ?2, ?3)";
	sqlite3_stmt *s = NULL;
	int rc = sqlite3_prepare_v2(st->db, sql, -1, &s, NULL);

	if (rc == SQLITE_OK) {
		sqlite3_bind_int(s, 1, m->version);
		sqlite3_bind_text(s, 2, m->description, -1, SQLITE_STATIC);
		sqlite3_bind_int64(s, 3, store_now());
		rc = sqlite3_step(s);
		if (rc == SQLITE_DONE)
			rc = SQLITE_OK;
	}
	sqlite3_finalize(s);
	return rc == SQLITE_OK ? 0 : store_fail(st, "recording the schema version", rc);
}

/*
 * One migration in one transaction. BEGIN IMMEDIATE takes the write lock before the
 * version is read again, so when several processes start on one file, the first applies
 * the migration and the others, once they get the lock, see it done and skip it.
 */
static int
store_apply(struct store *st, const struct store_migration *m)
{
	char what[64];
	int cur;

	snprintf(what, sizeof(what), "migration %d", m->version);
	if (store_exec(st, "BEGIN IMMEDIATE", what) < 0)
		return -1;
	if (store_exec(st,
	               "CREATE TABLE IF NOT EXISTS schema_version ("
	               " version INTEGER PRIMARY KEY,"
	               " description TEXT NOT NULL,"
	               " applied_at INTEGER NOT NULL)",
	               what) < 0 ||
	    store_read_version(st, &cur) < 0)
		goto fail;
	if (cur >= m->version)
		return store_exec(st, "COMMIT", what);
	if (cur != m->version - 1) {
		store_failx(st, "%s: database is at version %d, expected %d", what, cur,
		            m->version - 1);
		goto fail;
	}
	if (store_exec(st, m->sql, what) < 0 || store_record_version(st, m) < 0 ||
	    store_exec(st, "COMMIT", what) < 0)
		goto fail;
	log_info("store: applied migration %d (%s)", m->version, m->description);
	return 0;
fail:
	/* The message is kept: a rollback after a failure is expected to work or not matter. */
	sqlite3_exec(st->db, "ROLLBACK", NULL, NULL, NULL);
	return -1;
}

static int
store_migrate(struct store *st, int target)
{
	int cur;

	if (store_read_version(st, &cur) < 0)
		return -1;
	if (cur > STORE_NMIGRATIONS)
		return store_failx(st,
		                   "database schema version %d is newer than this gatewayd knows "
		                   "(%d): refusing to use it",
		                   cur, STORE_NMIGRATIONS);
	for (int i = 0; i < STORE_NMIGRATIONS; i++) {
		const struct store_migration *m = &store_migrations[i];

		if (m->version <= cur || m->version > target)
			continue;
		if (store_apply(st, m) < 0)
			return -1;
	}
	return 0;
}

/*
 * Switching a database to WAL needs an exclusive lock for a moment, and SQLite answers
 * SQLITE_BUSY at once, without the busy handler, when another connection holds any lock.
 * That happens when several processes or pool threads open a new file together, so the
 * switch is retried here for as long as the busy timeout would have waited. Once the file
 * is in WAL mode (it stays so), the pragma takes no lock.
 */
static int
store_set_wal(struct store *st)
{
	int waited = 0, rc;

	while ((rc = sqlite3_exec(st->db, "PRAGMA journal_mode = WAL", NULL, NULL, NULL)) !=
	       SQLITE_OK) {
		if ((rc & 0xff) != SQLITE_BUSY && (rc & 0xff) != SQLITE_LOCKED)
			break;
		if (waited >= st->busy_ms)
			break;
		sqlite3_sleep(10);
		waited += 10;
	}
	return rc == SQLITE_OK ? 0 : store_fail(st, "switching to WAL", rc);
}

/* Opens and configures a connection without touching the schema. */
static struct store *
store_connect(const char *url, int flags, char *err, size_t errlen)
{
	const char *path;
	struct store *st;
	int rc;

	if (store_parse_url(url, &path, err, errlen) < 0)
		return NULL;
	/* Connections live on several threads: a single-thread build of SQLite would corrupt
	 * its shared state (page cache, VFS locks) behind our back. */
	if (!sqlite3_threadsafe()) {
		snprintf(err, errlen, "the SQLite library was built without thread support");
		return NULL;
	}
	st = xcalloc(1, sizeof(*st));
	st->busy_ms = STORE_BUSY_MS;
	/* NOMUTEX: one thread at a time per connection is the contract, so SQLite's own
	 * per-connection mutex would only cost. */
	rc = sqlite3_open_v2(path, &st->db, flags | SQLITE_OPEN_URI | SQLITE_OPEN_NOMUTEX, NULL);
	if (rc != SQLITE_OK) {
		snprintf(err, errlen, "%s: %s", path,
		         st->db != NULL ? sqlite3_errmsg(st->db) : sqlite3_errstr(rc));
		store_close(st);
		return NULL;
	}
	sqlite3_extended_result_codes(st->db, 1);
	sqlite3_busy_timeout(st->db, st->busy_ms);
	/*
	 * WAL: readers and the writer do not block each other. synchronous=FULL: in WAL mode
	 * NORMAL may lose the last commits on power loss; FULL syncs the WAL at every commit,
	 * which is what "201 means on disk" needs.
	 */
	if (store_exec(st, "PRAGMA foreign_keys = ON", "opening the database") < 0 ||
	    store_set_wal(st) < 0 ||
	    store_exec(st, "PRAGMA synchronous = FULL", "opening the database") < 0) {
		snprintf(err, errlen, "%s: %s", path, st->err);
		store_close(st);
		return NULL;
	}
	return st;
}

struct store *
store_open_at_version(const char *url, int version, char *err, size_t errlen)
{
	struct store *st;

	if (errlen > 0)
		err[0] = '\0';
	if (store_pg_is_url(url)) {
		struct store_pg *pg = store_pg_open(url, version, err, errlen);

		if (pg == NULL)
			return NULL;
		st = xcalloc(1, sizeof(*st));
		st->pg = pg;
		st->busy_ms = STORE_BUSY_MS;
		return st;
	}
	st = store_connect(url, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, err, errlen);
	if (st == NULL)
		return NULL;
	if (store_migrate(st, version) < 0) {
		snprintf(err, errlen, "%s: %s", url, st->err);
		store_close(st);
		return NULL;
	}
	st->err[0] = '\0';
	return st;
}

/* Copies src[0..n) into buf at *off, truncating at len - 1. */
static void
store_put(char *buf, size_t len, size_t *off, const char *src, size_t n)
{
	if (*off + n >= len)
		n = len - 1 - *off;
	memcpy(buf + *off, src, n);
	*off += n;
	buf[*off] = '\0';
}

const char *
store_url_redact(const char *url, char *buf, size_t len)
{
	size_t off = 0, auth_end, at = 0;
	const char *p, *colon;

	if (len == 0)
		return buf;
	buf[0] = '\0';
	if (url == NULL)
		return buf;
	if (!store_pg_is_url(url)) {
		store_put(buf, len, &off, url, strlen(url));
		return buf;
	}
	p = strstr(url, "://") + 3;
	auth_end = (size_t)(p - url) + strcspn(p, "/?");
	for (size_t i = (size_t)(p - url); i < auth_end; i++)
		if (url[i] == '@')
			at = i;
	colon = at != 0 ? memchr(p, ':', at - (size_t)(p - url)) : NULL;
	if (colon != NULL) {
		store_put(buf, len, &off, url, (size_t)(colon - url) + 1);
		store_put(buf, len, &off, "***", 3);
		p = url + at;
	} else {
		p = url;
	}
	/* then ?password=...&: the value up to the next & */
	for (const char *q; (q = strstr(p, "password=")) != NULL; p = q + strcspn(q, "&")) {
		q += 9;
		store_put(buf, len, &off, p, (size_t)(q - p));
		store_put(buf, len, &off, "***", 3);
	}
	store_put(buf, len, &off, p, strlen(p));
	return buf;
}

int
store_url_check(const char *url, char *err, size_t errlen)
{
	const char *path;

	if (store_pg_is_url(url))
		return store_pg_check_url(url, err, errlen);
	return store_parse_url(url, &path, err, errlen);
}

struct store *
store_open(const char *url, char *err, size_t errlen)
{
	return store_open_at_version(url, STORE_NMIGRATIONS, err, errlen);
}

void
store_close(struct store *st)
{
	if (st == NULL)
		return;
	store_pg_close(st->pg);
	for (int i = 0; i < ST_COUNT; i++)
		sqlite3_finalize(st->stmt[i]);
	/* Every statement is finalized, so close cannot be refused with SQLITE_BUSY. */
	sqlite3_close(st->db);
	free(st);
}

void
store_set_busy_timeout(struct store *st, int ms)
{
	st->busy_ms = ms;
	if (st->pg != NULL)
		store_pg_set_lock_timeout(st->pg, ms);
	else
		sqlite3_busy_timeout(st->db, ms);
}

int
store_schema_latest(void)
{
	return STORE_NMIGRATIONS;
}

int
store_schema_version(struct store *st)
{
	int v;

	if (st->pg != NULL)
		return store_pg_versions(st->pg, &v, NULL, 0, st->err, sizeof(st->err)) < 0
		           ? -1
		           : v;
	return store_read_version(st, &v) < 0 ? -1 : v;
}

/* Appends to a status text, truncating silently (the status is for people). */
static void store_out(char *out, size_t outlen, size_t *off, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void
store_out(char *out, size_t outlen, size_t *off, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (*off >= outlen)
		return;
	va_start(ap, fmt);
	n = vsnprintf(out + *off, outlen - *off, fmt, ap);
	va_end(ap);
	if (n > 0)
		*off = *off + (size_t)n < outlen ? *off + (size_t)n : outlen;
}

static void
store_format_time(int64_t t, char *buf, size_t len)
{
	time_t tt = (time_t)t;
	struct tm tm;

	if (gmtime_r(&tt, &tm) == NULL || strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
		snprintf(buf, len, "%lld", (long long)t);
}

/* Reads the applied_at of every applied version (0 = not applied), indexed by version. */
static int
store_read_applied(struct store *st, int64_t *applied, int n)
{
	static const char sql[] = "SELECT version, applied_at FROM schema_version";
	sqlite3_stmt *s = NULL;
	int rc = sqlite3_prepare_v2(st->db, sql, -1, &s, NULL);

	while (rc == SQLITE_OK && (rc = sqlite3_step(s)) == SQLITE_ROW) {
		int v = sqlite3_column_int(s, 0);

		if (v >= 1 && v <= n)
			applied[v - 1] = sqlite3_column_int64(s, 1);
		rc = SQLITE_OK;
	}
	sqlite3_finalize(s);
	return rc == SQLITE_DONE || rc == SQLITE_OK ? 0 : store_fail(st, "reading migrations", rc);
}

int
store_migrate_status(const char *url, char *out, size_t outlen)
{
	int64_t applied[STORE_NMIGRATIONS] = {0};
	char err[STORE_ERR_MAX];
	const char *path;
	struct store *st;
	size_t off = 0;
	int cur = 0;

	if (outlen == 0)
		return -1;
	out[0] = '\0';
	if (store_pg_is_url(url)) {
		/* Connect only: a status query applies nothing. */
		struct store_pg *pg = store_pg_open(url, -1, out, outlen);

		if (pg == NULL)
			return -1;
		if (store_pg_versions(pg, &cur, applied, STORE_NMIGRATIONS, err, sizeof(err)) < 0) {
			snprintf(out, outlen, "%s", err);
			store_pg_close(pg);
			return -1;
		}
		store_pg_close(pg);
		store_out(out, outlen, &off, "database: %s\n",
		          store_url_redact(url, err, sizeof(err)));
	} else if (store_parse_url(url, &path, out, outlen) < 0) {
		return -1;
	} else if ((st = store_connect(url, SQLITE_OPEN_READWRITE, err, sizeof(err))) == NULL) {
		/* (SQLITE_OPEN_CREATE left out: a status query must not create the database.) */
		struct stat sb;

		if (strncmp(path, "file:", 5) == 0 || stat(path, &sb) == 0 || errno != ENOENT) {
			snprintf(out, outlen, "%s", err);
			return -1;
		}
		store_out(out, outlen, &off, "database: %s (no database file yet)\n", url);
	} else {
		if (store_read_version(st, &cur) < 0 ||
		    (cur > 0 && store_read_applied(st, applied, STORE_NMIGRATIONS) < 0)) {
			snprintf(out, outlen, "%s: %s", url, st->err);
			store_close(st);
			return -1;
		}
		store_close(st);
		store_out(out, outlen, &off, "database: %s\n", url);
	}
	store_out(out, outlen, &off, "current version: %d\nlatest version: %d\n", cur,
	          STORE_NMIGRATIONS);
	if (cur > STORE_NMIGRATIONS)
		store_out(out, outlen, &off,
		          "warning: the database is newer than this gatewayd; it will refuse it\n");
	for (int i = 0; i < STORE_NMIGRATIONS; i++) {
		const struct store_migration *m = &store_migrations[i];
		char when[32];

		if (applied[i] != 0) {
			store_format_time(applied[i], when, sizeof(when));
			store_out(out, outlen, &off, "%4d  applied %s  %s\n", m->version, when,
			          m->description);
		} else {
			store_out(out, outlen, &off, "%4d  pending %-20s  %s\n", m->version, "",
			          m->description);
		}
	}
	return 0;
}

int
store_fresh(const char *url, char *err, size_t errlen)
{
	struct store *st;
	int rc;

	if (store_pg_is_url(url))
		return store_pg_fresh(url, err, errlen);
	st = store_open_at_version(url, 0, err, errlen);
	if (st == NULL)
		return -1;
	/*
	 * SQLite's documented way to empty a database: RESET_DATABASE then VACUUM. It drops
	 * every table, index and trigger without naming them, so no SQL is built from the
	 * names found in sqlite_master. VACUUM fails while another connection reads.
	 */
	rc = sqlite3_db_config(st->db, SQLITE_DBCONFIG_RESET_DATABASE, 1, 0);
	if (rc == SQLITE_OK) {
		rc = sqlite3_exec(st->db, "VACUUM", NULL, NULL, NULL);
		if (rc != SQLITE_OK)
			store_fail(st, "erasing the database", rc);
		sqlite3_db_config(st->db, SQLITE_DBCONFIG_RESET_DATABASE, 0, 0);
	} else {
		store_fail(st, "erasing the database", rc);
	}
	if (rc != SQLITE_OK) {
		snprintf(err, errlen, "%s: %s", url, st->err);
		store_close(st);
		return -1;
	}
	store_close(st);
	log_info("store: %s erased", url);
	st = store_open(url, err, errlen);
	if (st == NULL)
		return -1;
	store_close(st);
	return 0;
}

int
store_test_cap_size(struct store *st)
{
	if (st->pg != NULL)
		return store_failx(st, "capping the size is a test of the SQLite store only");
	/* max_page_count cannot go below the current size, so 1 means "no growth". */
	return store_exec(st, "PRAGMA max_page_count = 1", "capping the database size");
}

/* --- transactions ---------------------------------------------------------------------- */

static const struct store_val store_none[] = {STORE_END};

int
store_begin(struct store *st)
{
	return store_write_ok(st, ST_BEGIN, "store_begin", store_none);
}

int
store_commit(struct store *st)
{
	return store_write_ok(st, ST_COMMIT, "store_commit", store_none);
}

int
store_rollback(struct store *st)
{
	/* A failed statement (a full disk, say) may already have rolled everything back. */
	if (st->pg != NULL ? !store_pg_in_transaction(st->pg) : sqlite3_get_autocommit(st->db))
		return 0;
	return store_write_ok(st, ST_ROLLBACK, "store_rollback", store_none);
}

/* --- users ----------------------------------------------------------------------------- */

static void
store_lower(char *dst, const char *src, size_t size)
{
	size_t i;

	for (i = 0; i + 1 < size && src[i] != '\0'; i++) {
		char c = src[i];

		dst[i] = c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
	}
	dst[i] = '\0';
}

static int
store_emit_user_row(struct store *st, const struct store_row *row, void *ctx, const char *what)
{
	struct store_user *u = ctx;

	memset(u, 0, sizeof(*u));
	u->id = store_col_int(row, 0);
	if (store_col_text(st, row, 1, u->email, sizeof(u->email), what) < 0 ||
	    store_col_text(st, row, 2, u->pwhash, sizeof(u->pwhash), what) < 0 ||
	    store_col_text(st, row, 3, u->tier, sizeof(u->tier), what) < 0 ||
	    store_col_text(st, row, 4, u->role, sizeof(u->role), what) < 0)
		return -1;
	u->created_at = store_col_int(row, 5);
	return 0;
}

int
store_user_create(struct store *st, const char *email, const char *pwhash, const char *tier,
                  const char *role, struct store_user *out)
{
	static const char what[] = "store_user_create";
	char lower[STORE_EMAIL_MAX];
	int64_t now = store_now();
	int ret;

	if (store_arg(st, what, "email", email, STORE_EMAIL_MAX, 0) < 0 ||
	    store_arg(st, what, "password hash", pwhash, STORE_PWHASH_MAX, 0) < 0 ||
	    store_arg(st, what, "tier", tier, STORE_TIER_MAX, 0) < 0 ||
	    store_arg(st, what, "role", role, STORE_ROLE_MAX, 0) < 0)
		return -1;
	store_lower(lower, email, sizeof(lower));
	const struct store_val vals[] = {store_text(lower), store_text(pwhash), store_text(tier),
	                                 store_text(role),  store_int(now),     STORE_END};
	/* The new id is per connection (last_insert_rowid, RETURNING id), so no other
	 * thread's insert can interleave. */
	ret = store_write(st, ST_USER_INSERT, what, vals, NULL);
	if (ret == STORE_EXISTS)
		store_failx(st, "%s: email %s is taken", what, lower);
	if (ret == 0 && out != NULL) {
		memset(out, 0, sizeof(*out));
		out->id =
		    st->pg != NULL ? store_pg_last_id(st->pg) : sqlite3_last_insert_rowid(st->db);
		util_strlcpy(out->email, lower, sizeof(out->email));
		util_strlcpy(out->pwhash, pwhash, sizeof(out->pwhash));
		util_strlcpy(out->tier, tier, sizeof(out->tier));
		util_strlcpy(out->role, role, sizeof(out->role));
		out->created_at = now;
	}
	return ret;
}

int
store_user_by_email(struct store *st, const char *email, struct store_user *out)
{
	static const char what[] = "store_user_by_email";
	char lower[STORE_EMAIL_MAX];

	if (store_arg(st, what, "email", email, STORE_EMAIL_MAX, 0) < 0)
		return -1;
	store_lower(lower, email, sizeof(lower));
	const struct store_val vals[] = {store_text(lower), STORE_END};
	return store_read(st, ST_USER_BY_EMAIL, what, vals, store_emit_user_row, out);
}

int
store_user_by_id(struct store *st, int64_t id, struct store_user *out)
{
	const struct store_val vals[] = {store_int(id), STORE_END};

	return store_read(st, ST_USER_BY_ID, "store_user_by_id", vals, store_emit_user_row, out);
}

static int
store_user_set(struct store *st, enum store_stmt_id id, int64_t user_id, const char *name,
               const char *v, size_t size, const char *what)
{
	const struct store_val vals[] = {store_int(user_id), store_text(v), STORE_END};

	if (store_arg(st, what, name, v, size, 0) < 0)
		return -1;
	return store_update(st, id, what, vals);
}

int
store_user_set_tier(struct store *st, int64_t id, const char *tier)
{
	return store_user_set(st, ST_USER_SET_TIER, id, "tier", tier, STORE_TIER_MAX,
	                      "store_user_set_tier");
}

int
store_user_set_role(struct store *st, int64_t id, const char *role)
{
	return store_user_set(st, ST_USER_SET_ROLE, id, "role", role, STORE_ROLE_MAX,
	                      "store_user_set_role");
}

struct store_user_walk {
	store_user_fn fn;
	void *arg;
};

static int
store_emit_user(struct store *st, const struct store_row *row, void *ctx, const char *what)
{
	struct store_user_walk *w = ctx;
	struct store_user u;

	if (store_emit_user_row(st, row, &u, what) < 0)
		return -1;
	return w->fn(&u, w->arg) != 0;
}

int
store_user_list(struct store *st, store_user_fn fn, void *arg)
{
	struct store_user_walk w = {fn, arg};

	return store_list(st, ST_USER_LIST, "store_user_list", store_none, store_emit_user, &w);
}

/* --- API keys -------------------------------------------------------------------------- */

static int
store_emit_key_row(struct store *st, const struct store_row *row, void *ctx, const char *what)
{
	struct store_key *k = ctx;

	memset(k, 0, sizeof(*k));
	if (store_col_text(st, row, 0, k->hash, sizeof(k->hash), what) < 0 ||
	    store_col_text(st, row, 1, k->prefix, sizeof(k->prefix), what) < 0 ||
	    store_col_text(st, row, 2, k->tier, sizeof(k->tier), what) < 0)
		return -1;
	k->user_id = store_col_int(row, 3);
	k->created_at = store_col_int(row, 4);
	k->last_used = store_col_int(row, 5);
	k->expires_at = store_col_int(row, 6);
	k->revoked = (int)store_col_int(row, 7) != 0;
	return 0;
}

struct store_key_walk {
	store_key_fn fn;
	void *arg;
};

static int
store_emit_key(struct store *st, const struct store_row *row, void *ctx, const char *what)
{
	struct store_key_walk *w = ctx;
	struct store_key k;

	if (store_emit_key_row(st, row, &k, what) < 0)
		return -1;
	return w->fn(&k, w->arg) != 0;
}

int
store_key_create(struct store *st, const struct store_key *k)
{
	static const char what[] = "store_key_create";
	const struct store_val vals[] = {
	    store_text(k->hash),
	    store_text(k->prefix),
	    store_text(k->tier),
	    store_owner(k->user_id),
	    store_int(k->created_at != 0 ? k->created_at : store_now()),
	    store_int(k->last_used),
	    store_int(k->expires_at),
	    store_int(k->revoked != 0),
	    STORE_END,
	};
	int ret;

	if (store_arg(st, what, "hash", k->hash, STORE_HASH_MAX, 0) < 0 ||
	    store_arg(st, what, "prefix", k->prefix, STORE_PREFIX_MAX, 0) < 0 ||
	    store_arg(st, what, "tier", k->tier, STORE_TIER_MAX, 0) < 0)
		return -1;
	ret = store_write(st, ST_KEY_INSERT, what, vals, NULL);
	if (ret == STORE_EXISTS)
		store_failx(st, "%s: a key with this hash exists", what);
	return ret;
}

/* Statement id on the key hash (?1) and at most one more value (?2): a result of
 * store_update, or of store_write_ok when only_ok. */
static int
store_key_write(struct store *st, enum store_stmt_id id, const char *hash, struct store_val v2,
                int only_ok, const char *what)
{
	const struct store_val vals[] = {store_text(hash), v2, STORE_END};

	if (store_arg(st, what, "hash", hash, STORE_HASH_MAX, 0) < 0)
		return -1;
	return only_ok ? store_write_ok(st, id, what, vals) : store_update(st, id, what, vals);
}

int
store_key_by_hash(struct store *st, const char *hash, struct store_key *out)
{
	static const char what[] = "store_key_by_hash";
	const struct store_val vals[] = {store_text(hash), STORE_END};

	if (store_arg(st, what, "hash", hash, STORE_HASH_MAX, 0) < 0)
		return -1;
	return store_read(st, ST_KEY_BY_HASH, what, vals, store_emit_key_row, out);
}

int
store_key_by_prefix(struct store *st, int64_t user_id, const char *prefix, struct store_key *out)
{
	static const char what[] = "store_key_by_prefix";
	const struct store_val vals[] = {store_owner(user_id), store_text(prefix), STORE_END};

	if (store_arg(st, what, "prefix", prefix, STORE_PREFIX_MAX, 0) < 0)
		return -1;
	return store_read(st, ST_KEY_BY_PREFIX, what, vals, store_emit_key_row, out);
}

int
store_key_list_user(struct store *st, int64_t user_id, store_key_fn fn, void *arg)
{
	const struct store_val vals[] = {store_owner(user_id), STORE_END};
	struct store_key_walk w = {fn, arg};

	return store_list(st, ST_KEY_LIST_USER, "store_key_list_user", vals, store_emit_key, &w);
}

int
store_key_all(struct store *st, store_key_fn fn, void *arg)
{
	struct store_key_walk w = {fn, arg};

	return store_list(st, ST_KEY_ALL, "store_key_all", store_none, store_emit_key, &w);
}

int
store_key_set_expiry(struct store *st, const char *hash, int64_t expires_at)
{
	return store_key_write(st, ST_KEY_SET_EXPIRY, hash, store_int(expires_at), 0,
	                       "store_key_set_expiry");
}

int
store_key_revoke(struct store *st, const char *hash)
{
	const struct store_val end = STORE_END;

	return store_key_write(st, ST_KEY_REVOKE, hash, end, 0, "store_key_revoke");
}

int
store_key_set_tier(struct store *st, const char *hash, const char *tier)
{
	static const char what[] = "store_key_set_tier";

	if (store_arg(st, what, "tier", tier, STORE_TIER_MAX, 0) < 0)
		return -1;
	return store_key_write(st, ST_KEY_SET_TIER, hash, store_text(tier), 0, what);
}

int
store_key_set_owner(struct store *st, const char *hash, int64_t user_id)
{
	return store_key_write(st, ST_KEY_SET_OWNER, hash, store_owner(user_id), 0,
	                       "store_key_set_owner");
}

int
store_key_touch(struct store *st, const char *hash, int64_t last_used)
{
	return store_key_write(st, ST_KEY_TOUCH, hash, store_int(last_used), 1, "store_key_touch");
}

/* --- refresh tokens -------------------------------------------------------------------- */

int
store_refresh_create(struct store *st, const char *jti, const char *family, int64_t user_id,
                     int64_t expires_at)
{
	static const char what[] = "store_refresh_create";
	const struct store_val vals[] = {store_text(jti), store_text(family), store_int(user_id),
	                                 store_int(expires_at), STORE_END};

	if (store_arg(st, what, "jti", jti, STORE_JTI_MAX, 0) < 0 ||
	    store_arg(st, what, "family", family, STORE_JTI_MAX, 0) < 0)
		return -1;
	return store_write(st, ST_REFRESH_INSERT, what, vals, NULL);
}

static int
store_emit_refresh_row(struct store *st, const struct store_row *row, void *ctx, const char *what)
{
	struct store_refresh *r = ctx;

	memset(r, 0, sizeof(*r));
	if (store_col_text(st, row, 0, r->jti, sizeof(r->jti), what) < 0 ||
	    store_col_text(st, row, 1, r->family, sizeof(r->family), what) < 0)
		return -1;
	r->user_id = store_col_int(row, 2);
	r->expires_at = store_col_int(row, 3);
	r->used = (int)store_col_int(row, 4) != 0;
	r->revoked = (int)store_col_int(row, 5) != 0;
	return 0;
}

int
store_refresh_get(struct store *st, const char *jti, struct store_refresh *out)
{
	static const char what[] = "store_refresh_get";
	const struct store_val vals[] = {store_text(jti), STORE_END};

	if (store_arg(st, what, "jti", jti, STORE_JTI_MAX, 0) < 0)
		return -1;
	return store_read(st, ST_REFRESH_GET, what, vals, store_emit_refresh_row, out);
}

int
store_refresh_mark_used(struct store *st, const char *jti)
{
	static const char what[] = "store_refresh_mark_used";
	const struct store_val vals[] = {store_text(jti), STORE_END};
	struct store_refresh r;
	int changes = 0, ret;

	if (store_arg(st, what, "jti", jti, STORE_JTI_MAX, 0) < 0)
		return -1;
	/*
	 * The claim is the conditional UPDATE itself: SQLite serialises writers, so of two
	 * rotations racing on one token exactly one sees used = 0 and changes one row.
	 * Reading first and writing after would let both pass. When nothing changed, the read
	 * below only tells "already used/revoked" from "no such token".
	 */
	if (store_write(st, ST_REFRESH_MARK, what, vals, &changes) != 0)
		return -1;
	if (changes == 1)
		return 0;
	ret = store_refresh_get(st, jti, &r);
	if (ret == 0) {
		store_failx(st, "%s: token already used or revoked", what);
		return STORE_EXISTS;
	}
	return ret;
}

int
store_family_revoke(struct store *st, const char *family)
{
	static const char what[] = "store_family_revoke";
	const struct store_val vals[] = {store_text(family), STORE_END};

	if (store_arg(st, what, "family", family, STORE_JTI_MAX, 0) < 0)
		return -1;
	return store_write_ok(st, ST_FAMILY_REVOKE, what, vals);
}

/* --- revocations ----------------------------------------------------------------------- */

int
store_revoke_jti(struct store *st, const char *jti, int64_t expires_at)
{
	static const char what[] = "store_revoke_jti";
	const struct store_val vals[] = {store_text(jti), store_int(expires_at), STORE_END};

	if (store_arg(st, what, "jti", jti, STORE_JTI_MAX, 0) < 0)
		return -1;
	return store_write_ok(st, ST_REVOKE_INSERT, what, vals);
}

struct store_revocation_walk {
	store_revocation_fn fn;
	void *arg;
};

static int
store_emit_revocation(struct store *st, const struct store_row *row, void *ctx, const char *what)
{
	struct store_revocation_walk *w = ctx;
	struct store_revocation r;

	memset(&r, 0, sizeof(r));
	if (store_col_text(st, row, 0, r.jti, sizeof(r.jti), what) < 0)
		return -1;
	r.expires_at = store_col_int(row, 1);
	return w->fn(&r, w->arg) != 0;
}

/* Walks statement id with now bound as ?1. */
static int
store_list_now(struct store *st, enum store_stmt_id id, int64_t now, const char *what,
               store_emit_fn emit, void *ctx)
{
	const struct store_val vals[] = {store_int(now), STORE_END};

	return store_list(st, id, what, vals, emit, ctx);
}

int
store_revocations_all(struct store *st, int64_t now, store_revocation_fn fn, void *arg)
{
	struct store_revocation_walk w = {fn, arg};

	return store_list_now(st, ST_REVOCATIONS_ALL, now, "store_revocations_all",
	                      store_emit_revocation, &w);
}

/* Runs a DELETE ... WHERE x <= ?1. */
static int
store_delete_now(struct store *st, enum store_stmt_id id, int64_t now, const char *what)
{
	const struct store_val vals[] = {store_int(now), STORE_END};

	return store_write_ok(st, id, what, vals);
}

int
store_revocations_purge(struct store *st, int64_t now)
{
	return store_delete_now(st, ST_REVOCATIONS_PURGE, now, "store_revocations_purge");
}

int
store_purge_expired(struct store *st, int64_t now)
{
	static const char what[] = "store_purge_expired";

	/* One transaction: one fsync instead of four. */
	if (store_begin(st) < 0)
		return -1;
	if (store_delete_now(st, ST_REVOCATIONS_PURGE, now, what) < 0 ||
	    store_delete_now(st, ST_REFRESH_PURGE, now, what) < 0 ||
	    store_delete_now(st, ST_BLOCKS_PURGE, now, what) < 0 ||
	    store_delete_now(st, ST_BANS_PURGE, now, what) < 0 || store_commit(st) < 0) {
		char saved[STORE_ERR_MAX];

		util_strlcpy(saved, st->err, sizeof(saved));
		store_rollback(st);
		util_strlcpy(st->err, saved, sizeof(st->err));
		return -1;
	}
	return 0;
}

/* --- blocks and bans ------------------------------------------------------------------- */

static int
store_kind_ok(struct store *st, const char *what, const char *kind, const char *a, const char *b,
              const char *c)
{
	if (kind == NULL)
		return store_failx(st, "%s: kind is missing", what);
	if (strcmp(kind, a) == 0 || strcmp(kind, b) == 0 || (c != NULL && strcmp(kind, c) == 0))
		return 0;
	if (c != NULL)
		return store_failx(st, "%s: unknown kind \"%.32s\" (%s, %s or %s)", what, kind, a,
		                   b, c);
	return store_failx(st, "%s: unknown kind \"%.32s\" (%s or %s)", what, kind, a, b);
}

/*
 * Statement id on a block (is_block) or ban kind and value (?1, ?2) after checking them,
 * then up to two more values (STORE_END for none): a result of store_update, or of
 * store_write_ok when only_ok.
 */
static int
store_kv_write(struct store *st, enum store_stmt_id id, int is_block, const char *kind,
               const char *value, struct store_val v3, struct store_val v4, int only_ok,
               const char *what)
{
	const struct store_val vals[] = {store_text(kind), store_text(value), v3, v4, STORE_END};

	if ((is_block ? store_kind_ok(st, what, kind, "key", "user", "ip")
	              : store_kind_ok(st, what, kind, "identity", "ip", NULL)) < 0 ||
	    store_arg(st, what, "value", value, STORE_VALUE_MAX, 0) < 0)
		return -1;
	return only_ok ? store_write_ok(st, id, what, vals) : store_update(st, id, what, vals);
}

int
store_block_set(struct store *st, const char *kind, const char *value, int64_t until)
{
	return store_kv_write(st, ST_BLOCK_SET, 1, kind, value, store_int(until),
	                      store_int(store_now()), 1, "store_block_set");
}

int
store_block_remove(struct store *st, const char *kind, const char *value)
{
	const struct store_val end = STORE_END;

	return store_kv_write(st, ST_BLOCK_REMOVE, 1, kind, value, end, end, 0,
	                      "store_block_remove");
}

struct store_block_walk {
	store_block_fn fn;
	void *arg;
};

static int
store_emit_block(struct store *st, const struct store_row *row, void *ctx, const char *what)
{
	struct store_block_walk *w = ctx;
	struct store_block b;

	memset(&b, 0, sizeof(b));
	if (store_col_text(st, row, 0, b.kind, sizeof(b.kind), what) < 0 ||
	    store_col_text(st, row, 1, b.value, sizeof(b.value), what) < 0)
		return -1;
	b.until = store_col_int(row, 2);
	b.created_at = store_col_int(row, 3);
	return w->fn(&b, w->arg) != 0;
}

int
store_blocks_all(struct store *st, int64_t now, store_block_fn fn, void *arg)
{
	struct store_block_walk w = {fn, arg};

	return store_list_now(st, ST_BLOCKS_ALL, now, "store_blocks_all", store_emit_block, &w);
}

int
store_ban_set(struct store *st, const char *kind, const char *value, int64_t until, int level)
{
	return store_kv_write(st, ST_BAN_SET, 0, kind, value, store_int(until), store_int(level), 1,
	                      "store_ban_set");
}

int
store_ban_remove(struct store *st, const char *kind, const char *value)
{
	const struct store_val end = STORE_END;

	return store_kv_write(st, ST_BAN_REMOVE, 0, kind, value, end, end, 0, "store_ban_remove");
}

struct store_ban_walk {
	store_ban_fn fn;
	void *arg;
};

static int
store_emit_ban(struct store *st, const struct store_row *row, void *ctx, const char *what)
{
	struct store_ban_walk *w = ctx;
	struct store_ban b;

	memset(&b, 0, sizeof(b));
	if (store_col_text(st, row, 0, b.kind, sizeof(b.kind), what) < 0 ||
	    store_col_text(st, row, 1, b.value, sizeof(b.value), what) < 0)
		return -1;
	b.until = store_col_int(row, 2);
	b.level = (int)store_col_int(row, 3);
	return w->fn(&b, w->arg) != 0;
}

int
store_bans_all(struct store *st, int64_t now, store_ban_fn fn, void *arg)
{
	struct store_ban_walk w = {fn, arg};

	return store_list_now(st, ST_BANS_ALL, now, "store_bans_all", store_emit_ban, &w);
}

/* --- audit log ------------------------------------------------------------------------- */

int
store_audit(struct store *st, const char *actor, const char *action, const char *target,
            const char *detail_json)
{
	static const char what[] = "store_audit";
	const char *t = target != NULL ? target : "";
	const char *d = detail_json != NULL ? detail_json : "";
	const struct store_val vals[] = {store_int(store_now()), store_text(actor),
	                                 store_text(action),     store_text(t),
	                                 store_text(d),          STORE_END};

	if (store_arg(st, what, "actor", actor, STORE_ACTOR_MAX, 0) < 0 ||
	    store_arg(st, what, "action", action, STORE_ACTION_MAX, 0) < 0 ||
	    store_arg(st, what, "target", t, STORE_TARGET_MAX, 1) < 0 ||
	    store_arg(st, what, "detail", d, STORE_DETAIL_MAX, 1) < 0)
		return -1;
	return store_write_ok(st, ST_AUDIT_INSERT, what, vals);
}

struct store_audit_walk {
	store_audit_fn fn;
	void *arg;
};

static int
store_emit_audit(struct store *st, const struct store_row *row, void *ctx, const char *what)
{
	struct store_audit_walk *w = ctx;
	/* About 2.5 kB: fine on a pool thread's stack, and one row at a time. */
	struct store_audit_entry e;

	memset(&e, 0, sizeof(e));
	e.id = store_col_int(row, 0);
	e.at = store_col_int(row, 1);
	if (store_col_text(st, row, 2, e.actor, sizeof(e.actor), what) < 0 ||
	    store_col_text(st, row, 3, e.action, sizeof(e.action), what) < 0 ||
	    store_col_text(st, row, 4, e.target, sizeof(e.target), what) < 0 ||
	    store_col_text(st, row, 5, e.detail, sizeof(e.detail), what) < 0)
		return -1;
	return w->fn(&e, w->arg) != 0;
}

int
store_audit_list(struct store *st, int limit, store_audit_fn fn, void *arg)
{
	struct store_audit_walk w = {fn, arg};

	return store_list_now(st, ST_AUDIT_LIST, limit > 0 ? limit : -1, "store_audit_list",
	                      store_emit_audit, &w);
}

/* --- settings -------------------------------------------------------------------------- */

struct store_setting_buf {
	char *buf;
	size_t len;
};

static int
store_emit_setting(struct store *st, const struct store_row *row, void *ctx, const char *what)
{
	struct store_setting_buf *b = ctx;

	return store_col_text(st, row, 0, b->buf, b->len, what);
}

int
store_setting_get(struct store *st, const char *name, char *buf, size_t len)
{
	static const char what[] = "store_setting_get";
	const struct store_val vals[] = {store_text(name), STORE_END};
	struct store_setting_buf b = {buf, len};

	if (buf == NULL || len == 0)
		return store_failx(st, "%s: no buffer", what);
	buf[0] = '\0';
	if (store_arg(st, what, "name", name, STORE_VALUE_MAX, 0) < 0)
		return -1;
	return store_read(st, ST_SETTING_GET, what, vals, store_emit_setting, &b);
}

static int
store_setting_write(struct store *st, enum store_stmt_id id, const char *name, const char *value,
                    const char *what)
{
	const struct store_val vals[] = {store_text(name), store_text(value), STORE_END};

	if (store_arg(st, what, "name", name, STORE_VALUE_MAX, 0) < 0)
		return -1;
	if (value == NULL)
		return store_failx(st, "%s: value is missing", what);
	return store_write_ok(st, id, what, vals);
}

int
store_setting_set(struct store *st, const char *name, const char *value)
{
	return store_setting_write(st, ST_SETTING_SET, name, value, "store_setting_set");
}

int
store_setting_set_once(struct store *st, const char *name, const char *value, char *buf, size_t len)
{
	int ret;

	/* INSERT ... DO NOTHING then read: whoever inserted first wins, everyone reads it. */
	if (store_setting_write(st, ST_SETTING_SET_ONCE, name, value, "store_setting_set_once") < 0)
		return -1;
	ret = store_setting_get(st, name, buf, len);
	if (ret == STORE_NOTFOUND)
		return store_failx(st, "store_setting_set_once: %s vanished", name);
	return ret;
}

/* --- copying a store (store_copy.c) ---------------------------------------------------- */

int
store_user_import(struct store *st, const struct store_user *u)
{
	const struct store_val vals[] = {store_int(u->id),       store_text(u->email),
	                                 store_text(u->pwhash),  store_text(u->tier),
	                                 store_text(u->role),    store_int(u->created_at),
	                                 STORE_END};

	return store_write(st, ST_USER_IMPORT, "store_user_import", vals, NULL);
}

int
store_block_import(struct store *st, const struct store_block *b)
{
	const struct store_val vals[] = {store_text(b->kind), store_text(b->value),
	                                 store_int(b->until), store_int(b->created_at), STORE_END};

	return store_write(st, ST_BLOCK_IMPORT, "store_block_import", vals, NULL);
}

int
store_audit_import(struct store *st, const struct store_audit_entry *e)
{
	const struct store_val vals[] = {store_int(e->id),        store_int(e->at),
	                                 store_text(e->actor),    store_text(e->action),
	                                 store_text(e->target),   store_text(e->detail),
	                                 STORE_END};

	return store_write(st, ST_AUDIT_IMPORT, "store_audit_import", vals, NULL);
}

static int
store_emit_count(struct store *st, const struct store_row *row, void *ctx, const char *what)
{
	*(int64_t *)ctx = store_col_int(row, 0);
	return 0;
}

int64_t
store_row_count(struct store *st)
{
	int64_t n = 0;

	if (store_read(st, ST_ROW_COUNT, "store_row_count", store_none, store_emit_count, &n) != 0)
		return -1;
	return n;
}

int
store_import_finish(struct store *st)
{
	/* SQLite's ids follow max(id) by themselves; PostgreSQL's sequences do not. */
	if (st->pg == NULL)
		return 0;
	return store_write_ok(st, ST_IMPORT_FINISH, "store_import_finish", store_none);
}
