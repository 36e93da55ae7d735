#ifndef GW_JOBS_H
#define GW_JOBS_H

#include <stddef.h>

/*
 * Blocking work — bcrypt, database writes — runs on a small pool of threads, never on a
 * worker's event loop, so a login never stalls proxying. A job is submitted by a worker
 * for one exchange; run() executes on a pool thread, with that thread's own database
 * connection; then the job travels back to the submitting worker (a locked list and an
 * eventfd) where done() runs on the worker's loop and answers the client.
 *
 * The exchange waits in phase X_WAIT. If its client goes away meanwhile, the exchange
 * is kept (orphaned) until the job returns, then released without calling done():
 * the job's memory and the exchange's never dangle.
 */

struct exchange;
struct worker;
struct store;

struct job {
	struct job *next;
	struct exchange *x;
	struct worker *w;
	/* on a pool thread; st is that thread's store (NULL when no database is open) */
	void (*run)(struct job *j, struct store *st);
	/* on the worker; NULL means jobs_respond() */
	void (*done)(struct job *j);
	void (*free_arg)(void *arg);
	void *arg; /* the job's own data, freed with free_arg (may be NULL) */

	/* the answer run() prepares for jobs_respond() */
	int status;
	char *body; /* malloc'd JSON, owned by the job */
	size_t body_len;
	char extra[512]; /* extra header lines, each ending in CRLF */
};

/* Starts n pool threads, each with a store opened on db_url (NULL: none). */
int jobs_start(int n, const char *db_url, char *err, size_t errlen);
void jobs_stop(void);
/*
 * Allocates a job for x (phase becomes X_WAIT when submitted). Owned by the jobs module
 * after jobs_submit().
 */
struct job *jobs_new(struct exchange *x, void (*run)(struct job *, struct store *));
void jobs_submit(struct job *j);
/* Sets the answer from run(): status and a JSON body (copied). */
void jobs_set_json(struct job *j, int status, const char *json);
/* Sets a SPEC section 4 error answer. */
void jobs_set_error(struct job *j, int status, const char *code, const char *message);
/* The default done(): answers the client with the job's status, body and headers. */
void jobs_respond(struct job *j);
/*
 * Runs fn(st, arg) on a pool thread for nobody in particular (persisting a ban, a
 * last_used stamp); arg is freed with free_arg afterwards. No answer goes anywhere.
 */
void jobs_detached(void (*fn)(struct store *st, void *arg), void *arg, void (*free_arg)(void *));
/* Called by a worker's eventfd handler: runs done() for every finished job. */
void jobs_complete(struct worker *w);

struct client;
/*
 * Ends the wait of x in X_WAIT (for a job, and the same for a geolocation lookup or a
 * Redis reply): x goes back to X_HEAD for its caller to answer, then
 * jobs_wait_resume(the client returned). NULL when the client left meanwhile: x is
 * released then and must not be touched again.
 */
struct client *jobs_wait_end(struct exchange *x);
/* Runs c again once the caller of jobs_wait_end answered it (unless c closed). */
void jobs_wait_resume(struct client *c);

#endif
