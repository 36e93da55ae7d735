#ifndef GW_IDENTITY_H
#define GW_IDENTITY_H

#include <stddef.h>
#include <stdint.h>

#include "cidr.h"

/*
 * The in-memory side of identity: what the hot path needs to know about API keys,
 * users, revoked tokens, blocks and bans, without touching the database. Loaded from
 * the store at start-up, updated by whoever changes the store (the job that wrote the
 * row updates the table right after), read by every worker under a read lock.
 *
 * Names: an "identity" for limits and bans is "u:<user id>" for a user, "k:<key hash
 * prefix>" for a key that no user owns.
 */

#define IDENTITY_TIER_MAX 32
#define IDENTITY_HASH_MAX 65

struct identity_key {
	char hash[IDENTITY_HASH_MAX]; /* SHA-256 hex of the full key */
	char prefix[16];
	char tier[IDENTITY_TIER_MAX];
	int64_t user_id;    /* 0: no owner */
	int64_t expires_at; /* Unix seconds, 0 never */
	int revoked;
};

struct identity_user {
	int64_t id;
	char tier[IDENTITY_TIER_MAX];
	char role[16];
};

/* The caller, as the pipeline found it (struct exchange holds one). */
enum identity_kind { IDENTITY_NONE, IDENTITY_USER, IDENTITY_KEY };

struct identity {
	uint8_t kind;
	uint8_t via_query; /* ?api_key=: answered with Deprecation: true */
	uint8_t via_jwt;
	int64_t user_id;
	char sub[64]; /* the user as the token names it (the user id in decimal for ours) */
	char key_hash[IDENTITY_HASH_MAX];
	char key_prefix[16];
	char tier[IDENTITY_TIER_MAX];
	char role[16];
	char jti[65];
	int64_t exp;
	char name[80]; /* "u:42" or "k:gk_ab12cd" */
};

void identity_init(void);
/* 1 when any key/user block, or any ban, exists (no lock: a cheap hot-path test). */
int identity_blocks_present(void);
int identity_bans_present(void);

/* Counts one request of the identity name; the count since start-up (for /usage). */
void identity_count(const char *name);
uint64_t identity_count_get(const char *name);
/* 1 (and remembers now) when key hash's last_used was not written in the last `every`
 * seconds: last_used is kept to the minute without a database write per request. */
int identity_touch_due(const char *hash, int64_t now, int64_t every);

struct store_key;
struct store_user;

/* The hot path's copy of a stored key or user (what the tables keep of the row). */
void identity_key_from_store(struct identity_key *out, const struct store_key *k);
void identity_user_from_store(struct identity_user *out, const struct store_user *u);

/* keys */
void identity_key_put(const struct identity_key *k);
/* 1 found (copied into out), 0 not. */
int identity_key_get(const char *hash, struct identity_key *out);

/* users: tier and role as last written */
void identity_user_put(const struct identity_user *u);
int identity_user_get(int64_t id, struct identity_user *out);

/* revoked access tokens, by jti, until their expiry */
void identity_revoke(const char *jti, int64_t expires_at);
int identity_revoked(const char *jti, int64_t now);

/*
 * Blocks: kind "key" (value: key hash), "user" (user id), "ip" (address or CIDR).
 * until 0 = until removed. identity_blocked_ip returns the seconds left (or INT64_MAX
 * for a permanent block) when addr is blocked, 0 when not.
 */
void identity_block(const char *kind, const char *value, int64_t until);
/* 1 when it was there. */
int identity_unblock(const char *kind, const char *value);
int identity_blocked(const char *kind, const char *value, int64_t now);
int identity_blocked_ip(const uint8_t addr[16], int64_t now);

/*
 * Progressive bans (SPEC section 5): a rejection by a limit is reported with
 * identity_ban_reject(); more than threshold rejections inside one window of the
 * limit bans the name for base, then base*multiplier, ... up to max. Returns the
 * ban's length in seconds when this rejection started a ban (0 otherwise), so the
 * caller can persist it.
 */
int64_t identity_ban_reject(const char *name, int64_t now, uint64_t window_s, uint64_t threshold,
                            uint64_t base_s, uint64_t multiplier, uint64_t max_s, int *level);
/* Seconds of ban left for name (0: not banned). */
int64_t identity_banned(const char *name, int64_t now);
void identity_ban_set(const char *name, int64_t until, int level);
int identity_ban_clear(const char *name);
/* Number of bans in force (for /stats). */
uint64_t identity_bans_active(int64_t now);
/*
 * Forgets state a flood of names would otherwise pile up: rejection counts of names
 * never banned once their window is over (identity_ban_reject also drops those of the
 * bucket a new name goes in), levels of bans over for a day, revocations of expired
 * tokens. Returns the entries removed. Any thread (the worker tick asks the job pool).
 */
size_t identity_expire(int64_t now);

/*
 * Told of every change made through the functions above after it is applied (redis.c
 * shares them with other instances). Set once, before the threads that change the
 * tables start; NULL (the default) costs one test per change. A ban or unblock with
 * until -1 is a removal.
 */
struct identity_hooks {
	void (*block)(const char *kind, const char *value, int64_t until);
	void (*revoke)(const char *jti, int64_t expires_at);
	void (*ban)(const char *name, int64_t until, int level);
	void (*key)(const struct identity_key *k);
	void (*user)(const struct identity_user *u);
};
void identity_set_hooks(const struct identity_hooks *h);

#endif
