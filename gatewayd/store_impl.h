#ifndef GW_STORE_IMPL_H
#define GW_STORE_IMPL_H

#include <stddef.h>
#include <stdint.h>

/*
 * Private to the store: what store.c (the public functions and the SQLite backend) shares
 * with store_pg.c (the PostgreSQL backend) and store_copy.c. Callers include store.h only.
 *
 * Both backends run the same data statements, named by enum store_stmt_id. store.c holds
 * their SQLite text; store_pg.c derives the PostgreSQL text from it (?N becomes $N) and
 * overrides the few statements whose SQL differs. Values are bound, never spliced.
 */

enum store_stmt_id {
	ST_BEGIN,
	ST_COMMIT,
	ST_ROLLBACK,
	ST_USER_INSERT,
	ST_USER_BY_EMAIL,
	ST_USER_BY_ID,
	ST_USER_SET_TIER,
	ST_USER_SET_ROLE,
	ST_USER_LIST,
	ST_KEY_INSERT,
	ST_KEY_BY_HASH,
	ST_KEY_BY_PREFIX,
	ST_KEY_LIST_USER,
	ST_KEY_ALL,
	ST_KEY_SET_EXPIRY,
	ST_KEY_REVOKE,
	ST_KEY_SET_TIER,
	ST_KEY_SET_OWNER,
	ST_KEY_TOUCH,
	ST_REFRESH_INSERT,
	ST_REFRESH_GET,
	ST_REFRESH_MARK,
	ST_FAMILY_REVOKE,
	ST_REVOKE_INSERT,
	ST_REVOCATIONS_ALL,
	ST_REVOCATIONS_PURGE,
	ST_REFRESH_PURGE,
	ST_BLOCKS_PURGE,
	ST_BANS_PURGE,
	ST_BLOCK_SET,
	ST_BLOCK_REMOVE,
	ST_BLOCKS_ALL,
	ST_BAN_SET,
	ST_BAN_REMOVE,
	ST_BANS_ALL,
	ST_AUDIT_INSERT,
	ST_AUDIT_LIST,
	ST_SETTING_GET,
	ST_SETTING_SET,
	ST_SETTING_SET_ONCE,
	/* copying a store (store_copy.c) */
	ST_USER_IMPORT,
	ST_BLOCK_IMPORT,
	ST_AUDIT_IMPORT,
	ST_ROW_COUNT,
	ST_IMPORT_FINISH, /* PostgreSQL only: move the id sequences past the copied ids */
	ST_COUNT
};

#define STORE_USER_COLS "id, email, pwhash, tier, role, created_at"
#define STORE_KEY_COLS                                                                             \
	"hash, prefix, tier, coalesce(user_id, 0), created_at, last_used, expires_at, revoked"

/*
 * The key queries by owner, in both dialects: they differ only in how a NULL owner (?1,
 * no owner) matches NULL rows (SQLite's IS, PostgreSQL's IS NOT DISTINCT FROM; = would
 * not) and in the column that orders keys as they were inserted (rowid, seq).
 */
#define STORE_SQL_KEY_BY_PREFIX(is, seq)                                                           \
	"SELECT " STORE_KEY_COLS " FROM api_keys WHERE user_id " is " ?1 AND prefix = ?2"          \
	" ORDER BY revoked, created_at DESC, " seq " DESC LIMIT 1"
#define STORE_SQL_KEY_LIST_USER(is, seq)                                                           \
	"SELECT " STORE_KEY_COLS " FROM api_keys WHERE user_id " is " ?1"                          \
	" ORDER BY created_at, " seq

/*
 * A value bound to a statement parameter: text (borrowed: it must outlive the
 * statement's execution), a 64-bit integer, or an owner id (0 is bound as NULL, no owner,
 * so that the foreign key accepts it). A list of values is an array ending with
 * STORE_VAL_END; its values are bound as parameters 1, 2, ...
 */
enum store_val_type { STORE_VAL_END, STORE_VAL_TEXT, STORE_VAL_INT, STORE_VAL_OWNER };

struct store_val {
	enum store_val_type type;
	const char *text;
	int64_t num;
};

/*
 * One result row, whichever backend produced it. get_text returns NULL for SQL NULL and
 * sets *len; the pointer is valid only during the row's callback.
 */
struct store_row {
	const void *impl; /* the backend's statement or result */
	int index;        /* the row's number within impl, where the backend needs it */
	int64_t (*get_int)(const struct store_row *r, int col);
	const char *(*get_text)(const struct store_row *r, int col, size_t *len);
	const char *(*get_name)(const struct store_row *r, int col);
};

/* Sees each row in turn: 0 to go on, 1 to stop, -1 on a decoding error (also stops). */
typedef int (*store_row_fn)(const struct store_row *row, void *ctx);

/* store.c: the SQLite text of a statement (NULL for PostgreSQL-only ones), and the
 * description of migration `version` (1..store_schema_latest()). */
const char *store_sql_text(enum store_stmt_id id);
const char *store_migration_description(int version);

/* store.c: writes of store_copy.c that keep the source's ids and times. 0, STORE_EXISTS,
 * -1, as store.h's functions. */
struct store;
struct store_user;
struct store_block;
struct store_audit_entry;
int store_user_import(struct store *st, const struct store_user *u);
int store_block_import(struct store *st, const struct store_block *b);
int store_audit_import(struct store *st, const struct store_audit_entry *e);
/* Users plus API keys in the database, or -1. */
int64_t store_row_count(struct store *st);
/* After the copy, in the copy's transaction. 0 or -1. */
int store_import_finish(struct store *st);

/* --- store_pg.c ------------------------------------------------------------------------ */

struct store_pg;

/* Whether url names a PostgreSQL database ("postgresql://" or "postgres://"). */
int store_pg_is_url(const char *url);
/*
 * Checks a postgresql:// URL's syntax (libpq's own parser: host, port, user, database,
 * ?parameters) without connecting. 0, or -1 with a message in err.
 */
int store_pg_check_url(const char *url, char *err, size_t errlen);
/*
 * Connects and applies the migrations up to `version` (each in its own transaction under
 * an advisory lock, so that instances starting together migrate once). version < 0:
 * connect only. The connection, freed by store_pg_close(), or NULL with err set.
 */
struct store_pg *store_pg_open(const char *url, int version, char *err, size_t errlen);
void store_pg_close(struct store_pg *pg);
/*
 * Runs statement id with vals. Rows go to fn (when not NULL); *changes (when not NULL)
 * receives the rows affected. A connection found broken is reconnected first, so that a
 * restarted server is used again without a restart of ours. 0, STORE_EXISTS on a
 * uniqueness violation, -1 with the message in err.
 */
int store_pg_run(struct store_pg *pg, enum store_stmt_id id, const struct store_val *vals,
                 store_row_fn fn, void *ctx, int *changes, char *err, size_t errlen);
/* The first column of the last write's first returned row (INSERT ... RETURNING id). */
int64_t store_pg_last_id(const struct store_pg *pg);
/* Whether store_begin's transaction is open. */
int store_pg_in_transaction(const struct store_pg *pg);
/* Lock wait limit, the counterpart of SQLite's busy timeout. */
void store_pg_set_lock_timeout(struct store_pg *pg, int ms);
/*
 * The schema version (0: none yet), and when applied is not NULL the applied_at of
 * versions 1..n (0 = not applied). 0 or -1 with err set.
 */
int store_pg_versions(struct store_pg *pg, int *version, int64_t *applied, int n, char *err,
                      size_t errlen);
/* Drops every table of the store (waiting at most a few seconds for other sessions'
 * locks), then migrates to the latest version. 0 or -1 with err set. */
int store_pg_fresh(const char *url, char *err, size_t errlen);

#endif
