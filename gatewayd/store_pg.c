#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include <libpq-fe.h>

#include "log.h"
#include "store.h"
#include "store_impl.h"
#include "util.h"
#include "xmalloc.h"

/*
 * PostgreSQL backend of the store (libpq).
 *
 * One struct store_pg is one connection, used by one thread at a time, like an SQLite
 * one: the daemon's pool threads (jobs.c) each own one, so no query ever runs on an event
 * loop. Data statements are the SQLite store's text with ?N turned into $N (PostgreSQL
 * understands the rest: ON CONFLICT, excluded, coalesce), except the few overridden in
 * store_pg_override; each is prepared once per connection and run with bound text
 * parameters, never spliced.
 *
 * Failures: -1 with a message, never an exit. A connection found broken (the server was
 * restarted or is down) is reset before the next statement, so the store works again as
 * soon as the server is back; while it is down, each call fails at once with "connection
 * refused" (3 s at most when the host does not answer: connect_timeout). A statement
 * that failed because the connection broke under it is retried once on a new connection
 * when it ran outside an explicit transaction: after a server restart every pooled
 * connection is stale, and the first statement on each would otherwise fail for nothing.
 * A server that stops answering (frozen, or a network path that drops everything) is
 * given STORE_PG_ANSWER_MS per statement: then the connection is closed, the statement
 * fails (not retried) and the next one reconnects, instead of a pool thread waiting for
 * TCP keepalives. Migrations and --fresh-db wait for as long as they take.
 * (The server cannot have run it unless it died after executing and before answering;
 * our writes are upserts or conditional updates, and an INSERT that did land answers
 * STORE_EXISTS on the retry.) Inside a transaction the lost work cannot be replayed, so
 * every statement fails until store_rollback.
 */

#define STORE_PG_LOCK_MS 5000
/* How long a data statement may go unanswered (longer than lock_timeout, whose own
 * error says more). */
#define STORE_PG_ANSWER_MS 10000
/* The advisory lock that serialises migrations of one database: "gatewayd" in ASCII. */
#define STORE_PG_MIGRATION_LOCK "7453010373645639012"
#define STORE_PG_MAX_PARAMS 8
#define STORE_PG_SQL_MAX 1024

/*
 * The SQLite store's migrations in PostgreSQL DDL: the same versions, tables, columns,
 * constraints and indexes. Differences: BIGINT for SQLite's 64-bit INTEGER, BIGSERIAL
 * for its generated ids, and api_keys.seq, the insertion order that SQLite's rowid gives
 * for free (key lists are oldest first, and among equal prefixes the newest wins).
 * Emails need no case-insensitive collation: the store lower-cases them before every
 * write and lookup (SQLite's NOCASE only folds ASCII too).
 */
static const char *const store_pg_migrations[] = {
    /* 1 */
    "CREATE TABLE users ("
    " id BIGSERIAL PRIMARY KEY,"
    " email TEXT NOT NULL UNIQUE,"
    " pwhash TEXT NOT NULL,"
    " tier TEXT NOT NULL,"
    " role TEXT NOT NULL DEFAULT 'user',"
    " created_at BIGINT NOT NULL);"
    "CREATE TABLE api_keys ("
    " hash TEXT PRIMARY KEY,"
    " prefix TEXT NOT NULL,"
    " tier TEXT NOT NULL,"
    " user_id BIGINT REFERENCES users(id) ON DELETE SET NULL,"
    " created_at BIGINT NOT NULL,"
    " last_used BIGINT NOT NULL DEFAULT 0,"
    " expires_at BIGINT NOT NULL DEFAULT 0,"
    " revoked INTEGER NOT NULL DEFAULT 0,"
    " seq BIGSERIAL NOT NULL);"
    "CREATE INDEX api_keys_user_prefix ON api_keys(user_id, prefix);"
    "CREATE TABLE refresh_tokens ("
    " jti TEXT PRIMARY KEY,"
    " family TEXT NOT NULL,"
    " user_id BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,"
    " expires_at BIGINT NOT NULL,"
    " used INTEGER NOT NULL DEFAULT 0,"
    " revoked INTEGER NOT NULL DEFAULT 0);"
    "CREATE INDEX refresh_tokens_family ON refresh_tokens(family);"
    "CREATE TABLE revocations ("
    " jti TEXT PRIMARY KEY,"
    " expires_at BIGINT NOT NULL);"
    "CREATE TABLE blocks ("
    " kind TEXT NOT NULL CHECK (kind IN ('key', 'user', 'ip')),"
    " value TEXT NOT NULL,"
    " until BIGINT NOT NULL DEFAULT 0,"
    " created_at BIGINT NOT NULL,"
    " PRIMARY KEY (kind, value));"
    "CREATE TABLE bans ("
    " kind TEXT NOT NULL CHECK (kind IN ('identity', 'ip')),"
    " value TEXT NOT NULL,"
    " until BIGINT NOT NULL,"
    " level INTEGER NOT NULL DEFAULT 1,"
    " PRIMARY KEY (kind, value));"
    "CREATE TABLE settings ("
    " name TEXT PRIMARY KEY,"
    " value TEXT NOT NULL);",
    /* 2 */
    "CREATE TABLE audit_log ("
    " id BIGSERIAL PRIMARY KEY,"
    " at BIGINT NOT NULL,"
    " actor TEXT NOT NULL,"
    " action TEXT NOT NULL,"
    " target TEXT NOT NULL DEFAULT '',"
    " detail TEXT NOT NULL DEFAULT '');",
    /* 3 */
    "CREATE INDEX revocations_expires ON revocations(expires_at);"
    "CREATE INDEX refresh_tokens_expires ON refresh_tokens(expires_at);",
};

#define STORE_PG_NMIGRATIONS (int)(sizeof(store_pg_migrations) / sizeof(store_pg_migrations[0]))

/* The statements whose SQLite text PostgreSQL would not take or would run differently. */
static const char *const store_pg_override[ST_COUNT] = {
    /* SQLite's IMMEDIATE takes its single write lock; PostgreSQL locks rows as it goes. */
    [ST_BEGIN] = "BEGIN",
    [ST_USER_INSERT] = "INSERT INTO users (email, pwhash, tier, role, created_at)"
                       " VALUES ($1, $2, $3, $4, $5) RETURNING id",
    [ST_KEY_BY_PREFIX] = STORE_SQL_KEY_BY_PREFIX("IS NOT DISTINCT FROM", "seq"),
    [ST_KEY_LIST_USER] = STORE_SQL_KEY_LIST_USER("IS NOT DISTINCT FROM", "seq"),
    [ST_KEY_ALL] = "SELECT " STORE_KEY_COLS " FROM api_keys ORDER BY seq",
    /* SQLite's LIMIT -1 is "all"; PostgreSQL's is LIMIT NULL. */
    [ST_AUDIT_LIST] = "SELECT id, at, actor, action, target, detail FROM audit_log"
                      " ORDER BY id DESC LIMIT nullif($1, -1)",
    [ST_IMPORT_FINISH] = "SELECT setval(pg_get_serial_sequence('users', 'id'),"
                         " coalesce(max(id), 0) + 1, false) FROM users"
                         " UNION ALL SELECT setval(pg_get_serial_sequence('audit_log', 'id'),"
                         " coalesce(max(id), 0) + 1, false) FROM audit_log",
};

struct store_pg {
	PGconn *conn;
	int lock_ms;
	int64_t last_id;
	int in_tx;               /* store_begin's transaction is open */
	int tx_lost;             /* ... and the connection broke inside it */
	int timed_out;           /* the last statement went unanswered (store_pg_answer) */
	char prepared[ST_COUNT]; /* on this session (cleared when it is reset) */
};

int
store_pg_is_url(const char *url)
{
	return url != NULL &&
	       (strncmp(url, "postgresql://", 13) == 0 || strncmp(url, "postgres://", 11) == 0);
}

/* libpq's messages end with a newline and may span lines: one line for our logs. */
static void
store_pg_message(char *dst, size_t len, const char *prefix, const char *msg)
{
	size_t n;

	snprintf(dst, len, "%s%s", prefix, msg != NULL && *msg != '\0' ? msg : "unknown error");
	for (char *p = dst; *p != '\0'; p++)
		if (*p == '\n' || *p == '\r' || *p == '\t')
			*p = ' ';
	n = strlen(dst);
	while (n > 0 && dst[n - 1] == ' ')
		dst[--n] = '\0';
}

/* libpq takes a port list ("5432,5433") and checks it only when connecting. */
static int
store_pg_ports_ok(const char *v)
{
	for (;;) {
		char *end;
		long port = strtol(v, &end, 10);

		if (end == v || port < 1 || port > 65535 || (*end != ',' && *end != '\0'))
			return 0;
		if (*end == '\0')
			return 1;
		v = end + 1;
	}
}

int
store_pg_check_url(const char *url, char *err, size_t errlen)
{
	char *msg = NULL;
	PQconninfoOption *opts;

	if (!store_pg_is_url(url)) {
		snprintf(err, errlen, "not a PostgreSQL URL (postgresql://...)");
		return -1;
	}
	opts = PQconninfoParse(url, &msg);
	if (opts == NULL) {
		store_pg_message(err, errlen,
		                 "invalid PostgreSQL URL: ", msg != NULL ? msg : "out of memory");
		PQfreemem(msg);
		return -1;
	}
	for (const PQconninfoOption *o = opts; o->keyword != NULL; o++)
		if (strcmp(o->keyword, "port") == 0 && o->val != NULL &&
		    !store_pg_ports_ok(o->val)) {
			snprintf(err, errlen, "invalid PostgreSQL URL: bad port \"%.32s\"", o->val);
			PQconninfoFree(opts);
			return -1;
		}
	PQconninfoFree(opts);
	return 0;
}

/* Notices ("relation already exists, skipping") are not worth a line on stderr. */
static void
store_pg_notice(void *arg, const char *message)
{
}

static PGresult *
store_pg_exec_simple(struct store_pg *pg, const char *sql, const char *what, char *err,
                     size_t errlen)
{
	PGresult *res = PQexec(pg->conn, sql);
	ExecStatusType rs = PQresultStatus(res);

	if (rs == PGRES_COMMAND_OK || rs == PGRES_TUPLES_OK)
		return res;
	snprintf(err, errlen, "%s: ", what);
	store_pg_message(err + strlen(err), errlen - strlen(err), "",
	                 res != NULL ? PQresultErrorMessage(res) : PQerrorMessage(pg->conn));
	PQclear(res);
	return NULL;
}

static int
store_pg_exec_ok(struct store_pg *pg, const char *sql, const char *what, char *err, size_t errlen)
{
	PGresult *res = store_pg_exec_simple(pg, sql, what, err, errlen);

	PQclear(res);
	return res != NULL ? 0 : -1;
}

/* The session settings every connection (and every reset one) starts with. */
static int
store_pg_session(struct store_pg *pg, char *err, size_t errlen)
{
	char sql[64];

	memset(pg->prepared, 0, sizeof(pg->prepared));
	snprintf(sql, sizeof(sql), "SET lock_timeout = %d", pg->lock_ms);
	return store_pg_exec_ok(pg, sql, "setting up the session", err, errlen);
}

/* Connects (no schema work). NULL with err set. */
static struct store_pg *
store_pg_connect(const char *url, char *err, size_t errlen)
{
	/*
	 * Ours first: a later keyword wins, so the URL's own parameters override them. The
	 * keepalives find a server that stopped answering without closing the connection
	 * (about 25 s) instead of leaving a pool thread waiting for ever.
	 */
	static const char *const keys[] = {
	    "connect_timeout",     "application_name", "client_encoding", "keepalives_idle",
	    "keepalives_interval", "keepalives_count", "dbname",          NULL};
	const char *values[] = {"3", "gatewayd", "UTF8", "10", "5", "3", url, NULL};
	struct store_pg *pg;

	if (store_pg_check_url(url, err, errlen) < 0)
		return NULL;
	pg = xcalloc(1, sizeof(*pg));
	pg->lock_ms = STORE_PG_LOCK_MS;
	pg->conn = PQconnectdbParams(keys, values, 1);
	if (pg->conn == NULL) {
		snprintf(err, errlen, "PostgreSQL: out of memory");
		free(pg);
		return NULL;
	}
	if (PQstatus(pg->conn) != CONNECTION_OK) {
		store_pg_message(err, errlen,
		                 "cannot connect to PostgreSQL: ", PQerrorMessage(pg->conn));
		store_pg_close(pg);
		return NULL;
	}
	PQsetNoticeProcessor(pg->conn, store_pg_notice, NULL);
	if (store_pg_session(pg, err, errlen) < 0) {
		store_pg_close(pg);
		return NULL;
	}
	return pg;
}

void
store_pg_close(struct store_pg *pg)
{
	if (pg == NULL)
		return;
	PQfinish(pg->conn);
	free(pg);
}

/* --- rows ------------------------------------------------------------------------------ */

static int64_t
store_pg_int(const struct store_row *r, int col)
{
	return strtoll(PQgetvalue(r->impl, r->index, col), NULL, 10);
}

static const char *
store_pg_text(const struct store_row *r, int col, size_t *len)
{
	if (PQgetisnull(r->impl, r->index, col)) {
		*len = 0;
		return NULL;
	}
	*len = (size_t)PQgetlength(r->impl, r->index, col);
	return PQgetvalue(r->impl, r->index, col);
}

static const char *
store_pg_name(const struct store_row *r, int col)
{
	return PQfname(r->impl, col);
}

/* --- versions and migrations ----------------------------------------------------------- */

int
store_pg_versions(struct store_pg *pg, int *version, int64_t *applied, int n, char *err,
                  size_t errlen)
{
	static const char what[] = "reading the schema version";
	PGresult *res;
	int have;

	*version = 0;
	res = store_pg_exec_simple(pg, "SELECT to_regclass('schema_version') IS NOT NULL", what,
	                           err, errlen);
	if (res == NULL)
		return -1;
	have = PQntuples(res) == 1 && strcmp(PQgetvalue(res, 0, 0), "t") == 0;
	PQclear(res);
	if (!have)
		return 0;
	res = store_pg_exec_simple(pg, "SELECT version, applied_at FROM schema_version", what, err,
	                           errlen);
	if (res == NULL)
		return -1;
	for (int i = 0; i < PQntuples(res); i++) {
		int v = atoi(PQgetvalue(res, i, 0));

		if (v > *version)
			*version = v;
		if (applied != NULL && v >= 1 && v <= n)
			applied[v - 1] = strtoll(PQgetvalue(res, i, 1), NULL, 10);
	}
	PQclear(res);
	return 0;
}

static int
store_pg_record_version(struct store_pg *pg, int version, char *err, size_t errlen)
{
	char v[16], at[24];
	const char *params[3] = {v, store_migration_description(version), at};
	PGresult *res;
	int ok;

	snprintf(v, sizeof(v), "%d", version);
	snprintf(at, sizeof(at), "%lld", (long long)time(NULL));
	res = PQexecParams(pg->conn,
	                   "INSERT INTO schema_version (version, description, applied_at)"
	                   " VALUES ($1, $2, $3)",
	                   3, NULL, params, NULL, NULL, 0);
	ok = PQresultStatus(res) == PGRES_COMMAND_OK;
	if (!ok)
		store_pg_message(err, errlen,
		                 "recording the schema version: ", PQresultErrorMessage(res));
	PQclear(res);
	return ok ? 0 : -1;
}

/*
 * One migration in one transaction, under a transaction-scoped advisory lock taken before
 * the version is read again: when several instances start together, the first applies
 * the migration and the others, once they get the lock, see it done and skip it.
 */
static int
store_pg_apply(struct store_pg *pg, int version, char *err, size_t errlen)
{
	char what[64];
	int cur;

	snprintf(what, sizeof(what), "migration %d", version);
	if (store_pg_exec_ok(pg,
	                     "BEGIN; SELECT pg_advisory_xact_lock(" STORE_PG_MIGRATION_LOCK ");"
	                     " CREATE TABLE IF NOT EXISTS schema_version ("
	                     " version INTEGER PRIMARY KEY,"
	                     " description TEXT NOT NULL,"
	                     " applied_at BIGINT NOT NULL)",
	                     what, err, errlen) < 0 ||
	    store_pg_versions(pg, &cur, NULL, 0, err, errlen) < 0)
		goto fail;
	if (cur >= version)
		return store_pg_exec_ok(pg, "COMMIT", what, err, errlen);
	if (cur != version - 1) {
		snprintf(err, errlen, "%s: database is at version %d, expected %d", what, cur,
		         version - 1);
		goto fail;
	}
	if (store_pg_exec_ok(pg, store_pg_migrations[version - 1], what, err, errlen) < 0 ||
	    store_pg_record_version(pg, version, err, errlen) < 0 ||
	    store_pg_exec_ok(pg, "COMMIT", what, err, errlen) < 0)
		goto fail;
	log_info("store: applied migration %d (%s) to PostgreSQL", version,
	         store_migration_description(version));
	return 0;
fail:
	PQclear(PQexec(pg->conn, "ROLLBACK"));
	return -1;
}

static int
store_pg_migrate(struct store_pg *pg, int target, char *err, size_t errlen)
{
	int cur;

	if (STORE_PG_NMIGRATIONS != store_schema_latest()) {
		snprintf(err, errlen, "the PostgreSQL store has %d migrations, the SQLite one %d",
		         STORE_PG_NMIGRATIONS, store_schema_latest());
		return -1;
	}
	if (store_pg_versions(pg, &cur, NULL, 0, err, errlen) < 0)
		return -1;
	if (cur > STORE_PG_NMIGRATIONS) {
		snprintf(err, errlen,
		         "database schema version %d is newer than this gatewayd knows (%d): "
		         "refusing to use it",
		         cur, STORE_PG_NMIGRATIONS);
		return -1;
	}
	for (int v = cur + 1; v <= target && v <= STORE_PG_NMIGRATIONS; v++)
		if (store_pg_apply(pg, v, err, errlen) < 0)
			return -1;
	return 0;
}

struct store_pg *
store_pg_open(const char *url, int version, char *err, size_t errlen)
{
	struct store_pg *pg = store_pg_connect(url, err, errlen);

	if (pg != NULL && version >= 0 && store_pg_migrate(pg, version, err, errlen) < 0) {
		store_pg_close(pg);
		return NULL;
	}
	return pg;
}

int
store_pg_fresh(const char *url, char *err, size_t errlen)
{
	struct store_pg *pg = store_pg_connect(url, err, errlen);
	int r;

	if (pg == NULL)
		return -1;
	/*
	 * The store's own tables, named: a database may hold other applications' tables too.
	 * lock_timeout: a session in the middle of a transaction on them makes this fail
	 * instead of waiting behind it.
	 */
	r = store_pg_exec_ok(pg,
	                     "BEGIN; SELECT pg_advisory_xact_lock(" STORE_PG_MIGRATION_LOCK ");"
	                     " SET LOCAL lock_timeout = '3s';"
	                     " DROP TABLE IF EXISTS audit_log, settings, bans, blocks, revocations,"
	                     " refresh_tokens, api_keys, users, schema_version CASCADE; COMMIT",
	                     "erasing the database", err, errlen);
	if (r == 0) {
		log_info("store: PostgreSQL store erased");
		r = store_pg_migrate(pg, store_schema_latest(), err, errlen);
	}
	store_pg_close(pg);
	return r;
}

/* --- statements ------------------------------------------------------------------------ */

/* The PostgreSQL text of statement id into buf: the override, or the SQLite text, with
 * ?N as $N (no statement has a ? inside a literal). NULL when there is none. */
static const char *
store_pg_sql(enum store_stmt_id id, char *buf, size_t len)
{
	const char *sql =
	    store_pg_override[id] != NULL ? store_pg_override[id] : store_sql_text(id);
	size_t i;

	if (sql == NULL)
		return NULL;
	for (i = 0; sql[i] != '\0' && i + 1 < len; i++)
		buf[i] = sql[i] == '?' ? '$' : sql[i];
	buf[i] = '\0';
	return sql[i] == '\0' ? buf : NULL;
}

/* Of several results, the first error, else the last one. */
static PGresult *
store_pg_keep(PGresult *keep, PGresult *r)
{
	if (keep != NULL && PQresultStatus(keep) == PGRES_FATAL_ERROR) {
		PQclear(r);
		return keep;
	}
	PQclear(keep);
	return r;
}

/*
 * The result of the command just sent (PQsendPrepare, PQsendQueryPrepared), NULL when
 * there is none (the error is then the connection's). A server that does not answer within
 * STORE_PG_ANSWER_MS gets its connection closed (CONNECTION_BAD) and pg->timed_out set.
 */
static PGresult *
store_pg_answer(struct store_pg *pg)
{
	uint64_t deadline = util_now_ms() + STORE_PG_ANSWER_MS;
	PGresult *keep = NULL, *r;

	for (;;) {
		int flush = PQflush(pg->conn), n;
		uint64_t now = util_now_ms();
		struct pollfd p = {PQsocket(pg->conn), POLLIN, 0};

		if (flush == 0 && !PQisBusy(pg->conn)) {
			if ((r = PQgetResult(pg->conn)) == NULL)
				return keep;
			keep = store_pg_keep(keep, r);
			continue;
		}
		if (flush < 0)
			break;
		if (now >= deadline) {
			pg->timed_out = 1;
			break;
		}
		if (flush == 1)
			p.events |= POLLOUT;
		n = poll(&p, 1, (int)(deadline - now));
		if (n < 0 && errno != EINTR)
			break;
		if (n > 0 && !PQconsumeInput(pg->conn))
			break;
	}
	/* Given up: closed, so that libpq reads the end of the stream instead of waiting, and
	 * reports the connection bad (the next statement reconnects). */
	if (PQstatus(pg->conn) != CONNECTION_BAD) {
		shutdown(PQsocket(pg->conn), SHUT_RDWR);
		PQconsumeInput(pg->conn);
	}
	while ((r = PQgetResult(pg->conn)) != NULL)
		keep = store_pg_keep(keep, r);
	return keep;
}

static int
store_pg_prepare(struct store_pg *pg, enum store_stmt_id id, const char *name, char *err,
                 size_t errlen)
{
	char buf[STORE_PG_SQL_MAX];
	const char *sql;
	PGresult *res;
	int ok;

	if (pg->prepared[id])
		return 0;
	sql = store_pg_sql(id, buf, sizeof(buf));
	if (sql == NULL) {
		snprintf(err, errlen, "statement %d has no PostgreSQL text", (int)id);
		return -1;
	}
	res = PQsendPrepare(pg->conn, name, sql, 0, NULL) ? store_pg_answer(pg) : NULL;
	ok = PQresultStatus(res) == PGRES_COMMAND_OK;
	if (!ok && pg->timed_out)
		snprintf(err, errlen, "PostgreSQL did not answer within %d s",
		         STORE_PG_ANSWER_MS / 1000);
	else if (!ok)
		store_pg_message(err, errlen, "",
		                 res != NULL ? PQresultErrorMessage(res)
		                             : PQerrorMessage(pg->conn));
	PQclear(res);
	pg->prepared[id] = (char)ok;
	return ok ? 0 : -1;
}

/* A broken connection is reset before use. 0, or -1 with err set (server still down). */
static int
store_pg_ready(struct store_pg *pg, char *err, size_t errlen)
{
	if (PQstatus(pg->conn) == CONNECTION_OK)
		return 0;
	PQreset(pg->conn);
	if (PQstatus(pg->conn) != CONNECTION_OK) {
		store_pg_message(err, errlen,
		                 "PostgreSQL is unreachable: ", PQerrorMessage(pg->conn));
		return -1;
	}
	log_info("store: reconnected to PostgreSQL");
	return store_pg_session(pg, err, errlen);
}

/* The statement's parameters as text (libpq's text format); NULL for SQL NULL. */
static int
store_pg_params(const struct store_val *vals, const char **params, char (*nums)[24], char *err,
                size_t errlen)
{
	int n = 0;

	for (; vals[n].type != STORE_VAL_END; n++) {
		if (n == STORE_PG_MAX_PARAMS) {
			snprintf(err, errlen, "too many parameters");
			return -1;
		}
		if (vals[n].type == STORE_VAL_TEXT) {
			params[n] = vals[n].text;
		} else if (vals[n].type == STORE_VAL_OWNER && vals[n].num == 0) {
			params[n] = NULL;
		} else {
			snprintf(nums[n], sizeof(nums[n]), "%lld", (long long)vals[n].num);
			params[n] = nums[n];
		}
	}
	return n;
}

/* A failed statement's outcome: STORE_EXISTS for a uniqueness violation, else -1. */
static int
store_pg_fail(struct store_pg *pg, const PGresult *res, char *err, size_t errlen)
{
	const char *state = res != NULL ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
	const char *msg = res != NULL ? PQresultErrorMessage(res) : PQerrorMessage(pg->conn);

	if (PQstatus(pg->conn) == CONNECTION_BAD) {
		store_pg_message(err, errlen, "PostgreSQL connection lost: ", msg);
		return -1;
	}
	if (state != NULL && strcmp(state, "23505") == 0) {
		store_pg_message(err, errlen, "already exists: ", msg);
		return STORE_EXISTS;
	}
	if (state != NULL && strcmp(state, "23503") == 0) {
		store_pg_message(err, errlen, "no such user: ", msg);
		return -1;
	}
	store_pg_message(err, errlen, "", msg);
	if (state != NULL && strcmp(state, "55P03") == 0) {
		size_t n = strlen(err);

		snprintf(err + n, errlen - n, " (another session held it for more than %d ms)",
		         pg->lock_ms);
	}
	return -1;
}

/*
 * Prepares (once per session) and runs statement id. The result, or NULL with err set
 * and *ret the outcome.
 */
static PGresult *
store_pg_exec(struct store_pg *pg, enum store_stmt_id id, const char **params, int n, char *err,
              size_t errlen, int *ret)
{
	char name[16];

	snprintf(name, sizeof(name), "gw%d", (int)id);
	*ret = -1;
	pg->timed_out = 0;
	for (int attempt = 0;; attempt++) {
		PGresult *res = NULL;

		if (store_pg_ready(pg, err, errlen) < 0)
			break;
		if (store_pg_prepare(pg, id, name, err, errlen) == 0) {
			ExecStatusType rs;

			res = PQsendQueryPrepared(pg->conn, name, n, params, NULL, NULL, 0)
			          ? store_pg_answer(pg)
			          : NULL;
			rs = PQresultStatus(res);
			if (rs == PGRES_COMMAND_OK || rs == PGRES_TUPLES_OK)
				return res;
		}
		if (pg->timed_out) {
			/* a frozen server: not retried, the caller hears of it now */
			snprintf(err, errlen, "PostgreSQL did not answer within %d s",
			         STORE_PG_ANSWER_MS / 1000);
			PQclear(res);
			break;
		}
		if (PQstatus(pg->conn) == CONNECTION_BAD && !pg->in_tx && attempt == 0) {
			PQclear(res);
			continue;
		}
		*ret = store_pg_fail(pg, res, err, errlen);
		PQclear(res);
		break;
	}
	if (pg->in_tx && PQstatus(pg->conn) == CONNECTION_BAD)
		pg->tx_lost = 1;
	return NULL;
}

/* Tracks store_begin's transaction; a transaction whose connection broke only rolls back. */
static int
store_pg_tx(struct store_pg *pg, enum store_stmt_id id, char *err, size_t errlen)
{
	if (!pg->tx_lost)
		return 0;
	if (id == ST_ROLLBACK) {
		pg->in_tx = pg->tx_lost = 0;
		return 1;
	}
	snprintf(err, errlen, "PostgreSQL connection lost inside a transaction: roll it back");
	return -1;
}

int
store_pg_run(struct store_pg *pg, enum store_stmt_id id, const struct store_val *vals,
             store_row_fn fn, void *ctx, int *changes, char *err, size_t errlen)
{
	const char *params[STORE_PG_MAX_PARAMS];
	char nums[STORE_PG_MAX_PARAMS][24];
	int n, ret = 0, t;
	PGresult *res;

	if ((t = store_pg_tx(pg, id, err, errlen)) != 0)
		return t > 0 ? 0 : -1;
	if ((n = store_pg_params(vals, params, nums, err, errlen)) < 0)
		return -1;
	res = store_pg_exec(pg, id, params, n, err, errlen, &ret);
	if (res == NULL)
		return ret;
	if (id == ST_BEGIN)
		pg->in_tx = 1;
	else if (id == ST_COMMIT || id == ST_ROLLBACK)
		pg->in_tx = 0;
	if (changes != NULL)
		*changes = atoi(PQcmdTuples(res));
	if (fn == NULL && PQntuples(res) > 0 && PQnfields(res) > 0)
		pg->last_id = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
	for (int i = 0; fn != NULL && i < PQntuples(res); i++) {
		const struct store_row row = {res, i, store_pg_int, store_pg_text, store_pg_name};

		if (fn(&row, ctx) != 0)
			break;
	}
	PQclear(res);
	return 0;
}

int64_t
store_pg_last_id(const struct store_pg *pg)
{
	return pg->last_id;
}

int
store_pg_in_transaction(const struct store_pg *pg)
{
	return pg->in_tx;
}

void
store_pg_set_lock_timeout(struct store_pg *pg, int ms)
{
	char err[256];

	pg->lock_ms = ms;
	if (PQstatus(pg->conn) == CONNECTION_OK && store_pg_session(pg, err, sizeof(err)) < 0)
		log_warnx("store: %s", err);
}
