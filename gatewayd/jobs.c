#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "jobs.h"
#include "log.h"
#include "proxy.h"
#include "store.h"
#include "util.h"
#include "xmalloc.h"

#define JOBS_MAX_THREADS 16

static pthread_mutex_t jobs_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t jobs_cond = PTHREAD_COND_INITIALIZER;
static struct job *jobs_head, *jobs_tail;
static int jobs_stopping;
static pthread_t jobs_threads[JOBS_MAX_THREADS];
static struct store *jobs_stores[JOBS_MAX_THREADS];
static int jobs_nthreads;

struct job *
jobs_new(struct exchange *x, void (*run)(struct job *, struct store *))
{
	struct job *j = xcalloc(1, sizeof(*j));

	j->x = x;
	j->w = x->w;
	j->run = run;
	j->status = 500;
	return j;
}

static void
jobs_free(struct job *j)
{
	if (j->free_arg != NULL)
		j->free_arg(j->arg);
	free(j->body);
	free(j);
}

void
jobs_set_json(struct job *j, int status, const char *json)
{
	free(j->body);
	j->status = status;
	j->body_len = strlen(json);
	j->body = xstrndup(json, j->body_len);
}

void
jobs_set_error(struct job *j, int status, const char *code, const char *message)
{
	char buf[512];

	/* code and message are the gateway's own constants: nothing to escape */
	snprintf(buf, sizeof(buf), "{\"error\":\"%s\",\"message\":\"%s\"}", code, message);
	jobs_set_json(j, status, buf);
}

void
jobs_respond(struct job *j)
{
	respond_json(j->x, j->status, j->body ? j->body : "{}", j->body ? j->body_len : 2,
	             j->extra[0] ? j->extra : NULL);
}

/* Hands a finished job back to its worker. */
static void
jobs_return(struct job *j)
{
	struct worker *w = j->w;
	uint64_t one = 1;

	pthread_mutex_lock(&w->done_lock);
	j->next = w->done_head;
	w->done_head = j;
	pthread_mutex_unlock(&w->done_lock);
	if (write(w->done_fd, &one, sizeof(one)) < 0 && errno != EAGAIN)
		log_warn("jobs: wake worker %d", w->id);
}

static void *
jobs_main(void *arg)
{
	struct store *st = arg;

	for (;;) {
		struct job *j;

		pthread_mutex_lock(&jobs_lock);
		while (jobs_head == NULL && !jobs_stopping)
			pthread_cond_wait(&jobs_cond, &jobs_lock);
		if (jobs_head == NULL) {
			pthread_mutex_unlock(&jobs_lock);
			return NULL;
		}
		j = jobs_head;
		jobs_head = j->next;
		if (jobs_head == NULL)
			jobs_tail = NULL;
		pthread_mutex_unlock(&jobs_lock);
		j->next = NULL;
		j->run(j, st);
		if (j->w == NULL)
			jobs_free(j); /* detached: nobody waits for it */
		else
			jobs_return(j);
	}
}

int
jobs_start(int n, const char *db_url, char *err, size_t errlen)
{
	if (n > JOBS_MAX_THREADS)
		n = JOBS_MAX_THREADS;
	for (int i = 0; i < n; i++) {
		if (db_url != NULL && (jobs_stores[i] = store_open(db_url, err, errlen)) == NULL)
			return -1;
		if (pthread_create(&jobs_threads[i], NULL, jobs_main, jobs_stores[i]) != 0) {
			snprintf(err, errlen, "jobs: pthread_create: %s", strerror(errno));
			return -1;
		}
		pthread_setname_np(jobs_threads[i], "gw-jobs"); /* top -H, perf */
		jobs_nthreads++;
	}
	return 0;
}

void
jobs_stop(void)
{
	pthread_mutex_lock(&jobs_lock);
	jobs_stopping = 1;
	pthread_cond_broadcast(&jobs_cond);
	pthread_mutex_unlock(&jobs_lock);
	for (int i = 0; i < jobs_nthreads; i++) {
		pthread_join(jobs_threads[i], NULL);
		if (jobs_stores[i] != NULL)
			store_close(jobs_stores[i]);
	}
	jobs_nthreads = 0;
}

static void
jobs_enqueue(struct job *j)
{
	pthread_mutex_lock(&jobs_lock);
	if (jobs_tail != NULL)
		jobs_tail->next = j;
	else
		jobs_head = j;
	jobs_tail = j;
	pthread_cond_signal(&jobs_cond);
	pthread_mutex_unlock(&jobs_lock);
}

struct jobs_detached_arg {
	void (*fn)(struct store *st, void *arg);
	void *arg;
	void (*free_arg)(void *);
};

static void
jobs_detached_run(struct job *j, struct store *st)
{
	struct jobs_detached_arg *d = j->arg;

	d->fn(st, d->arg);
}

static void
jobs_detached_free(void *p)
{
	struct jobs_detached_arg *d = p;

	if (d->free_arg != NULL)
		d->free_arg(d->arg);
	free(d);
}

void
jobs_detached(void (*fn)(struct store *st, void *arg), void *arg, void (*free_arg)(void *))
{
	struct job *j = xcalloc(1, sizeof(*j));
	struct jobs_detached_arg *d = xmalloc(sizeof(*d));

	d->fn = fn;
	d->arg = arg;
	d->free_arg = free_arg;
	j->run = jobs_detached_run;
	j->arg = d;
	j->free_arg = jobs_detached_free;
	if (jobs_nthreads == 0) {
		/* no pool (tests, tools): do it here */
		j->run(j, NULL);
		jobs_free(j);
		return;
	}
	jobs_enqueue(j);
}

void
jobs_submit(struct job *j)
{
	struct exchange *x = j->x;

	x->phase = X_WAIT;
	x->job_pending = 1;
	/* The wait is for an answer, as for a backend's: the client's header deadline,
	 * still running from the request's first byte, must not cut it (a statement the
	 * database holds for seconds, bcrypt behind a queue). Past it the client gets a
	 * 504 (client_wait_expired); the store bounds its own waits (STORE_PG_ANSWER_MS,
	 * lock_timeout, connect_timeout) well inside the default. */
	x->c->deadline_ms = x->w->now_ms + x->rt->cfg->timeouts.response_ms;
	jobs_enqueue(j);
}

struct client *
jobs_wait_end(struct exchange *x)
{
	struct client *c = x->c;

	x->job_pending = 0;
	if (c == NULL) {
		client_exchange_release(x); /* the client left while x waited */
		return NULL;
	}
	x->phase = X_HEAD; /* no longer waiting; the answer sets the phase */
	return c;
}

void
jobs_wait_resume(struct client *c)
{
	if (!c->closed)
		client_run(c);
}

void
jobs_complete(struct worker *w)
{
	struct job *list, *rev = NULL;

	pthread_mutex_lock(&w->done_lock);
	list = w->done_head;
	w->done_head = NULL;
	pthread_mutex_unlock(&w->done_lock);
	/* the list was pushed LIFO: answer in submission order */
	while (list != NULL) {
		struct job *next = list->next;
		list->next = rev;
		rev = list;
		list = next;
	}
	while (rev != NULL) {
		struct job *j = rev;
		struct client *c = jobs_wait_end(j->x);

		rev = j->next;
		if (c != NULL && j->done != NULL)
			j->done(j);
		else if (c != NULL)
			jobs_respond(j);
		jobs_free(j);
		if (c != NULL)
			jobs_wait_resume(c);
	}
}
