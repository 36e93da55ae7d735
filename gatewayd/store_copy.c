#include <stdio.h>
#include <string.h>
#include <time.h>

#include "store.h"
#include "store_impl.h"
#include "util.h"

/*
 * gatewayd --migrate-db: one store copied into another through the public walks of the
 * source and the id-keeping writes of store_impl.h on the target. Backend-neutral: the
 * usual way is SQLite into PostgreSQL, but either direction works.
 */

struct store_copy {
	struct store *to;
	struct store_copy_counts *counts;
	int failed; /* a write on the target failed: its message is in store_error(to) */
};

/* A walk callback's answer after a write: go on, or stop the walk at the first failure. */
static int
store_copy_result(struct store_copy *c, int ret, int *count)
{
	if (ret != 0) {
		c->failed = 1;
		return 1;
	}
	(*count)++;
	return 0;
}

static int
store_copy_user(const struct store_user *u, void *arg)
{
	struct store_copy *c = arg;

	return store_copy_result(c, store_user_import(c->to, u), &c->counts->users);
}

static int
store_copy_key(const struct store_key *k, void *arg)
{
	struct store_copy *c = arg;

	return store_copy_result(c, store_key_create(c->to, k), &c->counts->keys);
}

static int
store_copy_block(const struct store_block *b, void *arg)
{
	struct store_copy *c = arg;

	return store_copy_result(c, store_block_import(c->to, b), &c->counts->blocks);
}

static int
store_copy_ban(const struct store_ban *b, void *arg)
{
	struct store_copy *c = arg;

	return store_copy_result(c, store_ban_set(c->to, b->kind, b->value, b->until, b->level),
	                         &c->counts->bans);
}

static int
store_copy_revocation(const struct store_revocation *r, void *arg)
{
	struct store_copy *c = arg;

	return store_copy_result(c, store_revoke_jti(c->to, r->jti, r->expires_at),
	                         &c->counts->revocations);
}

static int
store_copy_audit(const struct store_audit_entry *e, void *arg)
{
	struct store_copy *c = arg;

	return store_copy_result(c, store_audit_import(c->to, e), &c->counts->audit);
}

/* The generated JWT secret, so that tokens issued before the move stay valid. */
static int
store_copy_settings(struct store *from, struct store_copy *c, const char **failed_on)
{
	char value[STORE_VALUE_MAX];
	int ret = store_setting_get(from, "jwt_secret", value, sizeof(value));

	if (ret == STORE_NOTFOUND)
		return 0;
	if (ret != 0) {
		*failed_on = "from";
		return -1;
	}
	ret = store_setting_set(c->to, "jwt_secret", value);
	explicit_bzero(value, sizeof(value));
	if (ret != 0) {
		*failed_on = "to";
		return -1;
	}
	c->counts->settings++;
	return 0;
}

/*
 * Every walk in turn. A failure is on the source (the walk returned -1) or on the target
 * (a callback's write failed); *failed_on says which.
 */
static int
store_copy_all(struct store *from, struct store_copy *c, const char **failed_on)
{
	int64_t now = (int64_t)time(NULL);
	int r;

	r = store_user_list(from, store_copy_user, c);
	if (r == 0 && !c->failed)
		r = store_key_all(from, store_copy_key, c);
	if (r == 0 && !c->failed)
		r = store_blocks_all(from, now, store_copy_block, c);
	if (r == 0 && !c->failed)
		r = store_bans_all(from, now, store_copy_ban, c);
	if (r == 0 && !c->failed)
		r = store_revocations_all(from, now, store_copy_revocation, c);
	if (r == 0 && !c->failed)
		r = store_audit_list(from, 0, store_copy_audit, c);
	if (r != 0 || c->failed) {
		*failed_on = c->failed ? "to" : "from";
		return -1;
	}
	if (store_copy_settings(from, c, failed_on) < 0)
		return -1;
	if (store_import_finish(c->to) < 0) {
		*failed_on = "to";
		return -1;
	}
	return 0;
}

int
store_copy(const char *from_url, const char *to_url, struct store_copy_counts *counts, char *err,
           size_t errlen)
{
	struct store_copy_counts local;
	struct store *from, *to;
	struct store_copy c;
	const char *failed_on = "to";
	int64_t n;
	int r = -1;

	if ((from = store_open(from_url, err, errlen)) == NULL)
		return -1;
	if ((to = store_open(to_url, err, errlen)) == NULL) {
		store_close(from);
		return -1;
	}
	memset(&local, 0, sizeof(local));
	c = (struct store_copy){to, counts != NULL ? counts : &local, 0};
	memset(c.counts, 0, sizeof(*c.counts));
	if ((n = store_row_count(to)) != 0) {
		if (n > 0)
			snprintf(
			    err, errlen,
			    "the target database already holds users or API keys: copy into an "
			    "empty one (gatewayd --fresh-db --yes on it erases it)");
		else
			snprintf(err, errlen, "target: %s", store_error(to));
	} else if (store_begin(to) != 0) {
		snprintf(err, errlen, "target: %s", store_error(to));
	} else if (store_copy_all(from, &c, &failed_on) != 0) {
		snprintf(err, errlen, "%s: %s", strcmp(failed_on, "to") == 0 ? "target" : "source",
		         store_error(strcmp(failed_on, "to") == 0 ? to : from));
		store_rollback(to);
	} else if (store_commit(to) != 0) {
		snprintf(err, errlen, "target: %s", store_error(to));
		store_rollback(to);
	} else {
		r = 0;
	}
	store_close(to);
	store_close(from);
	return r;
}
