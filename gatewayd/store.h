#ifndef GW_STORE_H
#define GW_STORE_H

#include <stddef.h>
#include <stdint.h>

/*
 * The persistent store of the identity layer: users, API keys, refresh-token families,
 * access-token revocations, admin blocks, progressive bans, the admin audit log and a few
 * settings (the generated JWT secret).
 *
 * Backends: "sqlite:PATH" (store.c) and "postgresql://..." (store_pg.c, libpq). Callers
 * see only this interface (an opaque struct store, plain structs, Unix-second times) and
 * get the same results and return codes from both.
 *
 * Threads: one struct store is one connection, used by one thread at a time (the daemon
 * opens one per pool thread). Separate connections, in one process or several, may be
 * used concurrently: SQLite runs in WAL mode, readers never wait for the writer, writers
 * wait up to the busy timeout (5000 ms) for each other and then fail with -1; PostgreSQL
 * waits for row locks up to the same time (lock_timeout). A PostgreSQL connection that
 * broke (server restarted or down) fails its call with -1 at once and is reconnected by
 * the next call.
 *
 * Durability: every write function is its own transaction (autocommit) unless the caller
 * opened one with store_begin(); it returns only after the commit reached the disk
 * (synchronous=FULL), so a 201 sent after a successful write means the data is on disk.
 *
 * Return codes: 0 success; STORE_EXISTS / STORE_NOTFOUND where a prototype says so; -1
 * failure, with a message readable through store_error() (a locked database after the
 * busy timeout, a read-only file or a full disk are -1 with a message, never a crash).
 * Strings in the structs are NUL-terminated fixed-size fields; an input string that
 * does not fit its field is refused with -1 rather than truncated. Times are Unix
 * seconds; 0 in an expiry field means "never".
 *
 * Callbacks (the *_all and *_list functions) see each row in turn: return 0 to go on,
 * anything else to stop early (the walk still returns 0). The row pointer is valid only
 * during the call. A callback must not call into the same struct store.
 */

#define STORE_EXISTS 1   /* a unique value (email, key hash, ...) is already taken */
#define STORE_NOTFOUND 2 /* no such row */

#define STORE_EMAIL_MAX 256  /* field sizes, NUL included */
#define STORE_PWHASH_MAX 128 /* bcrypt "$2b$..." is 60 */
#define STORE_TIER_MAX 32
#define STORE_ROLE_MAX 16
#define STORE_HASH_MAX 65 /* SHA-256 hex */
#define STORE_PREFIX_MAX 16
#define STORE_JTI_MAX 65 /* token ids and refresh families */
#define STORE_KIND_MAX 16
#define STORE_VALUE_MAX 128 /* block/ban values: key hash, user id, CIDR, identity */
#define STORE_ACTOR_MAX 128
#define STORE_ACTION_MAX 64
#define STORE_TARGET_MAX 256
#define STORE_DETAIL_MAX 2048 /* audit detail JSON */

struct store;

struct store_user {
	int64_t id;
	char email[STORE_EMAIL_MAX]; /* lower-cased */
	char pwhash[STORE_PWHASH_MAX];
	char tier[STORE_TIER_MAX];
	char role[STORE_ROLE_MAX]; /* "user" or "admin" */
	int64_t created_at;
};

struct store_key {
	char hash[STORE_HASH_MAX];     /* SHA-256 hex of the whole key: the primary key */
	char prefix[STORE_PREFIX_MAX]; /* the part shown to people */
	char tier[STORE_TIER_MAX];
	int64_t user_id; /* owner; 0 = none (a legacy key) */
	int64_t created_at;
	int64_t last_used;  /* 0 = never */
	int64_t expires_at; /* 0 = never */
	int revoked;
};

struct store_refresh {
	char jti[STORE_JTI_MAX];
	char family[STORE_JTI_MAX];
	int64_t user_id;
	int64_t expires_at;
	int used;
	int revoked;
};

struct store_revocation {
	char jti[STORE_JTI_MAX];
	int64_t expires_at;
};

struct store_block {
	char kind[STORE_KIND_MAX];   /* "key" | "user" | "ip" */
	char value[STORE_VALUE_MAX]; /* key hash, user id in decimal, address or CIDR */
	int64_t until;               /* 0 = until removed */
	int64_t created_at;
};

struct store_ban {
	char kind[STORE_KIND_MAX]; /* "identity" | "ip" */
	char value[STORE_VALUE_MAX];
	int64_t until; /* 0 = until removed */
	int level;     /* how many bans in a row: the next one is multiplied again */
};

struct store_audit_entry {
	int64_t id;
	int64_t at;
	char actor[STORE_ACTOR_MAX];
	char action[STORE_ACTION_MAX];
	char target[STORE_TARGET_MAX];
	char detail[STORE_DETAIL_MAX]; /* JSON text as given, "" when none */
};

typedef int (*store_user_fn)(const struct store_user *u, void *arg);
typedef int (*store_key_fn)(const struct store_key *k, void *arg);
typedef int (*store_revocation_fn)(const struct store_revocation *r, void *arg);
typedef int (*store_block_fn)(const struct store_block *b, void *arg);
typedef int (*store_ban_fn)(const struct store_ban *b, void *arg);
typedef int (*store_audit_fn)(const struct store_audit_entry *e, void *arg);

/* --- connections and schema ------------------------------------------------------- */

/*
 * Opens a connection: url is "sqlite:PATH" (PATH relative to the working directory, or
 * an SQLite URI such as "sqlite:file:PATH?mode=ro"). Creates the file when missing, sets
 * WAL, synchronous=FULL, busy_timeout 5000 ms, foreign keys, then applies the pending
 * migrations, each in its own BEGIN IMMEDIATE transaction (so processes starting
 * together migrate once). Refuses a database whose schema is newer than this program.
 * url may also be a libpq URI, "postgresql://[user[:password]@]host[:port]/db[?param=..]"
 * (or postgres://): the same migrations in PostgreSQL DDL, each in a transaction holding
 * an advisory lock, so that instances starting together migrate once.
 * Returns a connection that the caller frees with store_close(), or NULL with a message
 * in err (an unreachable server: "cannot connect to PostgreSQL: ...", within 3 s).
 */
struct store *store_open(const char *url, char *err, size_t errlen);
/* Checks a database URL's syntax without opening anything (for gatewayd -t). 0, or -1
 * with a message in err. */
int store_url_check(const char *url, char *err, size_t errlen);
/* url for logs and messages: a postgresql:// URL's password (user:PASSWORD@ or
 * ?password=) replaced by "***". Writes into buf (truncated to len) and returns it. */
const char *store_url_redact(const char *url, char *buf, size_t len);
/* Finalizes the cached statements and closes the connection. NULL is allowed. */
void store_close(struct store *st);
/* The last failure's message on this connection ("" when none yet). Owned by st, valid
 * until the next call on st. */
const char *store_error(const struct store *st);
/* How long a write waits for another writer before failing with -1 (default 5000). */
void store_set_busy_timeout(struct store *st, int ms);

/* Schema versions: the newest this program knows. */
int store_schema_latest(void);
/* The version of the open database (0 before any migration), or -1. */
int store_schema_version(struct store *st);
/*
 * For `gatewayd --migrate-status`: writes into out (NUL-terminated, truncated to outlen)
 * the database's version, the latest version and every migration as applied (with its
 * time) or pending. Applies nothing and does not create a missing database file (that
 * reads as version 0). 0, or -1 with the message in out.
 */
int store_migrate_status(const char *url, char *out, size_t outlen);
/*
 * For `gatewayd --fresh-db --yes` (asking for --yes is the caller's job): erases every
 * table, index and row in the database, then applies every migration. Fails with -1
 * (message in err) while another connection is using the database.
 */
int store_fresh(const char *url, char *err, size_t errlen);

/*
 * Explicit transactions, for writes that must land together (a user and the key they
 * migrate, a rotated key and its successor). store_begin takes the write lock at once
 * (BEGIN IMMEDIATE); the writes in between are durable only once store_commit returned
 * 0. store_rollback is safe to call when no transaction is open.
 */
int store_begin(struct store *st);
int store_commit(struct store *st);
int store_rollback(struct store *st);

/* --- users --------------------------------------------------------------------------- */

/*
 * Creates a user; email is stored lower-cased (ASCII) and is unique regardless of case.
 * created_at is now. On 0, *out (when not NULL) receives the row with its new id.
 * STORE_EXISTS when the email is taken, -1 on error.
 */
int store_user_create(struct store *st, const char *email, const char *pwhash, const char *tier,
                      const char *role, struct store_user *out);
/* 0 found (*out filled), STORE_NOTFOUND, -1. The email is matched case-insensitively. */
int store_user_by_email(struct store *st, const char *email, struct store_user *out);
int store_user_by_id(struct store *st, int64_t id, struct store_user *out);
/* 0, STORE_NOTFOUND, -1. */
int store_user_set_tier(struct store *st, int64_t id, const char *tier);
int store_user_set_role(struct store *st, int64_t id, const char *role);
/* Every user in id order. 0 or -1. */
int store_user_list(struct store *st, store_user_fn fn, void *arg);

/* --- API keys ------------------------------------------------------------------------ */

/*
 * Stores a key described by *k (hash, prefix, tier, user_id, expires_at, last_used,
 * revoked; created_at 0 means now). 0, STORE_EXISTS when the hash is taken, -1 (also
 * when user_id names no user).
 */
int store_key_create(struct store *st, const struct store_key *k);
/* 0 found, STORE_NOTFOUND, -1. Revoked and expired keys are found too: check them. */
int store_key_by_hash(struct store *st, const char *hash, struct store_key *out);
/*
 * The key of user_id (0: the ownerless keys) shown as prefix. Prefixes are not unique:
 * when several match, the newest unrevoked one wins. 0, STORE_NOTFOUND, -1.
 */
int store_key_by_prefix(struct store *st, int64_t user_id, const char *prefix,
                        struct store_key *out);
/* Every key of user_id, revoked ones included, oldest first. 0 or -1. */
int store_key_list_user(struct store *st, int64_t user_id, store_key_fn fn, void *arg);
/* Every key (load at start-up). 0 or -1. */
int store_key_all(struct store *st, store_key_fn fn, void *arg);
/* 0, STORE_NOTFOUND, -1. Revoking a revoked key is 0. */
int store_key_set_expiry(struct store *st, const char *hash, int64_t expires_at);
int store_key_revoke(struct store *st, const char *hash);
int store_key_set_tier(struct store *st, const char *hash, const char *tier);
/* user_id 0 removes the owner; a user_id that names no user is -1. */
int store_key_set_owner(struct store *st, const char *hash, int64_t user_id);
/*
 * Records a use: last_used only moves forward. Each call is a durable write (an fsync),
 * so callers should write at most once a minute or so per key. 0 (also when the key is
 * unknown or last_used was already later) or -1.
 */
int store_key_touch(struct store *st, const char *hash, int64_t last_used);

/* --- refresh tokens ------------------------------------------------------------------ */

/* 0, STORE_EXISTS when the jti is taken, -1 (also when user_id names no user). */
int store_refresh_create(struct store *st, const char *jti, const char *family, int64_t user_id,
                         int64_t expires_at);
/* 0 found, STORE_NOTFOUND, -1. */
int store_refresh_get(struct store *st, const char *jti, struct store_refresh *out);
/*
 * Claims a refresh token for one rotation, atomically: of any number of concurrent calls
 * for one jti, across connections and processes, exactly one gets 0. STORE_EXISTS when
 * it was already used or its family is revoked (reuse: revoke the family),
 * STORE_NOTFOUND when there is no such token, -1 on error.
 */
int store_refresh_mark_used(struct store *st, const char *jti);
/* Revokes every token of the family. 0 (also when it has none) or -1. */
int store_family_revoke(struct store *st, const char *family);

/* --- access-token revocations --------------------------------------------------------- */

/* Revokes jti until expires_at (the token's exp; after that it is dead anyway). Revoking
 * twice keeps the later expiry. 0 or -1. */
int store_revoke_jti(struct store *st, const char *jti, int64_t expires_at);
/* The revocations with expires_at > now. 0 or -1. */
int store_revocations_all(struct store *st, int64_t now, store_revocation_fn fn, void *arg);
/* Deletes the revocations with expires_at <= now. 0 or -1. */
int store_revocations_purge(struct store *st, int64_t now);
/* Deletes everything that expired by now (revocations, refresh tokens, blocks, bans) in
 * one transaction of its own (so not between store_begin and store_commit). 0 or -1. */
int store_purge_expired(struct store *st, int64_t now);

/* --- admin blocks -------------------------------------------------------------------- */

/* Blocks kind ("key" | "user" | "ip") value until `until` (0 = until removed); setting
 * an existing block replaces its until. 0 or -1 (also for an unknown kind). */
int store_block_set(struct store *st, const char *kind, const char *value, int64_t until);
/* 0, STORE_NOTFOUND, -1. */
int store_block_remove(struct store *st, const char *kind, const char *value);
/* The blocks in force at now (until 0 or > now). 0 or -1. */
int store_blocks_all(struct store *st, int64_t now, store_block_fn fn, void *arg);

/* --- progressive bans ----------------------------------------------------------------- */

/* Bans kind ("identity" | "ip") value until `until` at level; replaces an existing ban.
 * 0 or -1. */
int store_ban_set(struct store *st, const char *kind, const char *value, int64_t until, int level);
/* 0, STORE_NOTFOUND, -1. */
int store_ban_remove(struct store *st, const char *kind, const char *value);
/* The bans in force at now (until 0 or > now). 0 or -1. */
int store_bans_all(struct store *st, int64_t now, store_ban_fn fn, void *arg);

/* --- audit log ----------------------------------------------------------------------- */

/* Appends an admin action, stamped now. target and detail_json may be NULL. 0 or -1. */
int store_audit(struct store *st, const char *actor, const char *action, const char *target,
                const char *detail_json);
/* The newest `limit` entries (limit <= 0: all), newest first. 0 or -1. */
int store_audit_list(struct store *st, int limit, store_audit_fn fn, void *arg);

/* --- settings ------------------------------------------------------------------------ */

/* Copies the value into buf (NUL-terminated). 0, STORE_NOTFOUND, -1 (also when the value
 * does not fit in len). */
int store_setting_get(struct store *st, const char *name, char *buf, size_t len);
/* Inserts or replaces. 0 or -1. */
int store_setting_set(struct store *st, const char *name, const char *value);
/*
 * Sets name to value only if it has no value yet, then reads back the value that won:
 * for a generated secret that several threads or processes may generate at once. 0
 * (buf holds the stored value) or -1.
 */
int store_setting_set_once(struct store *st, const char *name, const char *value, char *buf,
                           size_t len);

/* --- copying a store ------------------------------------------------------------------ */

struct store_copy_counts {
	int users, keys, blocks, bans, revocations, audit, settings;
};

/*
 * For `gatewayd --migrate-db FROM TO`: copies users (ids, password hashes and times kept),
 * API keys, the blocks and bans in force, the live access-token revocations, the audit
 * log and the generated JWT secret from the store at from_url into the one at to_url
 * (migrated to the latest schema first), in one transaction on the target. Refresh
 * tokens are not copied: users log in again. The target must hold no users and no keys.
 * 0 with *counts filled (when not NULL), or -1 with a message in err (nothing written).
 */
int store_copy(const char *from_url, const char *to_url, struct store_copy_counts *counts,
               char *err, size_t errlen);

/* --- test hooks (not for the daemon) -------------------------------------------------- */

/* store_open, but migrates only up to `version` (0: none), to build older schemas. */
struct store *store_open_at_version(const char *url, int version, char *err, size_t errlen);
/* Caps the database at its current size, so that the next write needing a new page
 * fails as a full disk would. 0 or -1. */
int store_test_cap_size(struct store *st);

#endif
