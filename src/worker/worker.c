/*
 * Periodic workers (see include/grace/worker.h).
 *
 * One thread per worker, one mutex, one condition variable on the
 * monotonic clock.  The thread sleeps on the condition variable until its
 * next tick is due; every state change (stop, force, done) broadcasts it,
 * so a stop wakes the thread at once and a waiter wakes the moment the
 * worker is done.  Nothing here polls.
 *
 * The states only move forward:
 *
 *   NEW --start--> RUNNING --stop_begin / force / NOMORE--> STOPPING
 *       --cleanup and on_done returned--> DONE
 *
 * Callbacks run without the mutex held, so they may call stop_begin,
 * force and status on their own worker.
 */
#include "grace/worker.h"
#include "worker/worker_int.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#define DEFAULT_NAME "grace-worker"
/* pthread_setname_np's limit on Linux, terminating NUL included. */
#define NAME_MAX_LEN 16

typedef enum state { S_NEW, S_RUNNING, S_STOPPING, S_DONE } state;

struct grace_worker {
  grace_worker_options opts; /* copied; opts.name points at name below */
  char name[NAME_MAX_LEN];

  pthread_mutex_t mu;
  pthread_cond_t cond; /* CLOCK_MONOTONIC; broadcast at every change */
  pthread_t thread;

  /* Everything below is guarded by mu. */
  state st;
  bool forced;
  int status;           /* the stop status, once S_DONE */
  grace_ctx *run_ctx;   /* given to the task; cancelled when stop begins */
  grace_ctx *stop_ctx;  /* stop_begin's context (a reference), or NULL */
  grace_ctx *clean_ctx; /* the cleanup's context while it runs, or NULL */
  int done_fd;          /* eventfd, written once when done */
  grace__clock clock;   /* the schedule's clock; grace_now by default */
};

/* Saturating a + b for non-negative b, so a huge delay cannot overflow. */
static int64_t add_sat(int64_t a, int64_t b) {
  return a > INT64_MAX - b ? INT64_MAX : a + b;
}

/* The schedule's time now. */
static int64_t now_of(grace_worker *w) {
  return w->clock.now != NULL ? w->clock.now(w->clock.data) : grace_now();
}

void grace__worker_set_clock(grace_worker *w, const grace__clock *clock) {
  w->clock = *clock;
}

void grace__worker_wake(grace_worker *w) {
  pthread_mutex_lock(&w->mu);
  pthread_cond_broadcast(&w->cond);
  pthread_mutex_unlock(&w->mu);
}

/*
 * Waits on w->cond until |deadline| (monotonic nanoseconds).  Returns like
 * pthread_cond_timedwait.  Called with w->mu held.
 */
static int wait_until(grace_worker *w, int64_t deadline) {
  struct timespec ts;

  ts.tv_sec = (time_t)(deadline / GRACE_SECOND);
  ts.tv_nsec = (long)(deadline % GRACE_SECOND);
  return pthread_cond_timedwait(&w->cond, &w->mu, &ts);
}

/*
 * Moves a running worker to STOPPING: cancels the tick context and wakes
 * the thread.  Called with w->mu held.
 */
static void begin_stop_locked(grace_worker *w) {
  if (w->st != S_RUNNING)
    return;
  w->st = S_STOPPING;
  grace_ctx_cancel(w->run_ctx);
  pthread_cond_broadcast(&w->cond);
}

/* Runs ticks until a stop begins or the task returns NOMORE. */
static void run_ticks(grace_worker *w) {
  int64_t due;

  pthread_mutex_lock(&w->mu);
  due = now_of(w);
  if (!w->opts.tick_at_start)
    due = add_sat(due, w->opts.interval);
  for (;;) {
    grace_duration next;
    int64_t now;

    /* Sleep until the tick is due; a stop broadcasts the condvar. */
    while (w->st == S_RUNNING && now_of(w) < due) {
      if (w->clock.idle != NULL)
        w->clock.idle(w->clock.data);
      if (w->clock.manual)
        pthread_cond_wait(&w->cond, &w->mu); /* grace__worker_wake */
      else
        wait_until(w, due);
    }
    if (w->st != S_RUNNING)
      break;
    pthread_mutex_unlock(&w->mu);

    next = w->opts.task(w, w->run_ctx, w->opts.data);

    pthread_mutex_lock(&w->mu);
    if (next == GRACE_WORKER_NOMORE) {
      begin_stop_locked(w);
      break;
    }
    if (next < 0)
      next = w->opts.interval;
    /*
     * Count from the moment the tick was due, so wake-up latency does not
     * make the schedule drift; if that moment has passed (the task
     * overran), the next tick starts now, once: the ticks missed in the
     * meantime are dropped, as time.Ticker drops them.
     */
    due = add_sat(due, next);
    now = now_of(w);
    if (due < now)
      due = now;
  }
  pthread_mutex_unlock(&w->mu);
}

/*
 * Creates the cleanup's context, a child of the stop context (or of
 * background), limited by cleanup_timeout.  If it cannot be allocated,
 * the cleanup gets the tick context instead, which is already cancelled
 * by now: the cleanup then knows it has no time at all rather than
 * believing it has all the time in the world.
 */
static grace_ctx *make_cleanup_ctx(grace_worker *w, grace_ctx *parent) {
  grace_ctx *ctx = NULL;
  int rv;

  if (parent == NULL)
    parent = grace_ctx_background();
  if (w->opts.cleanup_timeout > 0 && w->clock.with_timeout != NULL)
    rv = w->clock.with_timeout(w->clock.data, parent, w->opts.cleanup_timeout,
                               &ctx);
  else if (w->opts.cleanup_timeout > 0)
    rv = grace_ctx_with_timeout(parent, w->opts.cleanup_timeout, &ctx);
  else
    rv = grace_ctx_with_cancel(parent, &ctx);
  if (rv != 0)
    ctx = grace_ctx_ref(w->run_ctx);
  return ctx;
}

/* The stop: the cleanup, on_done, then DONE, in that order. */
static void run_stop(grace_worker *w) {
  grace_ctx *ctx = NULL;
  uint64_t one = 1;
  int status = 0;

  if (w->opts.cleanup != NULL) {
    pthread_mutex_lock(&w->mu);
    ctx = make_cleanup_ctx(w, w->stop_ctx);
    w->clean_ctx = ctx;
    if (w->forced)
      grace_ctx_cancel(ctx);
    pthread_mutex_unlock(&w->mu);

    status = w->opts.cleanup(w, ctx, w->opts.data);

    pthread_mutex_lock(&w->mu);
    w->clean_ctx = NULL;
    pthread_mutex_unlock(&w->mu);
    grace_ctx_unref(ctx);
  }

  if (w->opts.on_done != NULL)
    w->opts.on_done(w, status, w->opts.data);

  pthread_mutex_lock(&w->mu);
  w->status = status;
  w->st = S_DONE;
  /* Readable before anyone can see S_DONE, so fd and state agree.  An
   * eventfd write of 1 cannot fail or block here. */
  while (write(w->done_fd, &one, sizeof(one)) < 0 && errno == EINTR) {
  }
  pthread_cond_broadcast(&w->cond);
  pthread_mutex_unlock(&w->mu);
}

static void *worker_main(void *arg) {
  grace_worker *w = arg;

  pthread_setname_np(pthread_self(), w->name);
  run_ticks(w);
  run_stop(w);
  return NULL;
}

/* True if every byte of |p|[from, to) is zero. */
static bool zero_tail(const void *p, size_t from, size_t to) {
  const unsigned char *b = p;

  for (size_t i = from; i < to; i++) {
    if (b[i] != 0)
      return false;
  }
  return true;
}

int grace_worker_new(const grace_worker_options *opts, grace_worker **out) {
  pthread_condattr_t attr;
  grace_worker *w;
  int rv;

  if (opts == NULL || out == NULL)
    return GRACE_EINVAL;
  /*
   * A caller built against a newer header may pass a larger struct; that
   * is fine as long as every field this library does not know is zero,
   * its default (the convention of Linux's clone3 and openat2).
   */
  if (opts->size < sizeof(*opts) || !zero_tail(opts, sizeof(*opts), opts->size))
    return GRACE_EINVAL;
  if (opts->task == NULL || opts->interval <= 0)
    return GRACE_EINVAL;

  w = calloc(1, sizeof(*w));
  if (w == NULL)
    return GRACE_ENOMEM;
  w->opts = *opts;
  w->opts.size = sizeof(w->opts);
  snprintf(w->name, sizeof(w->name), "%s",
           opts->name != NULL ? opts->name : DEFAULT_NAME);
  w->opts.name = w->name;
  w->st = S_NEW;

  rv = pthread_mutex_init(&w->mu, NULL);
  if (rv != 0) {
    rv = -rv;
    goto fail_mutex;
  }
  /* The interval wait runs on the monotonic clock, like grace_now. */
  rv = pthread_condattr_init(&attr);
  if (rv == 0) {
    rv = pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    if (rv == 0)
      rv = pthread_cond_init(&w->cond, &attr);
    pthread_condattr_destroy(&attr);
  }
  if (rv != 0) {
    rv = -rv;
    goto fail_cond;
  }
  w->done_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (w->done_fd < 0) {
    rv = errno == ENFILE ? GRACE_EMFILE : -errno;
    goto fail_fd;
  }
  rv = grace_ctx_with_cancel(grace_ctx_background(), &w->run_ctx);
  if (rv != 0)
    goto fail_ctx;

  *out = w;
  return 0;

fail_ctx:
  close(w->done_fd);
fail_fd:
  pthread_cond_destroy(&w->cond);
fail_cond:
  pthread_mutex_destroy(&w->mu);
fail_mutex:
  free(w);
  return rv;
}

int grace_worker_start(grace_worker *w) {
  sigset_t all, old;
  int rv;

  if (w == NULL)
    return GRACE_EINVAL;
  pthread_mutex_lock(&w->mu);
  if (w->st != S_NEW) {
    pthread_mutex_unlock(&w->mu);
    return GRACE_ESTATE;
  }
  /*
   * The thread inherits the creator's signal mask: block everything while
   * creating it, so SIGINT and SIGTERM are handled by the program's own
   * threads and never interrupt a task.
   */
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  rv = pthread_create(&w->thread, NULL, worker_main, w);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  if (rv == 0)
    w->st = S_RUNNING;
  pthread_mutex_unlock(&w->mu);
  return -rv;
}

int grace_worker_stop_begin(grace_worker *w, grace_ctx *ctx) {
  if (w == NULL)
    return GRACE_EINVAL;
  pthread_mutex_lock(&w->mu);
  if (w->st == S_NEW) {
    pthread_mutex_unlock(&w->mu);
    return GRACE_ESTATE;
  }
  if (w->st == S_RUNNING) {
    w->stop_ctx = ctx != NULL ? grace_ctx_ref(ctx) : NULL;
    begin_stop_locked(w);
  }
  pthread_mutex_unlock(&w->mu);
  return 0;
}

int grace_worker_force(grace_worker *w) {
  int rv;

  if (w == NULL)
    return GRACE_EINVAL;
  pthread_mutex_lock(&w->mu);
  if (w->st == S_NEW) {
    pthread_mutex_unlock(&w->mu);
    return GRACE_ESTATE;
  }
  begin_stop_locked(w);
  w->forced = true;
  if (w->clean_ctx != NULL)
    grace_ctx_cancel(w->clean_ctx);
  rv = w->st == S_DONE ? 0 : GRACE_EBUSY;
  pthread_mutex_unlock(&w->mu);
  return rv;
}

int grace_worker_wait(grace_worker *w, grace_duration timeout) {
  int64_t deadline;
  int rv = 0;

  if (w == NULL)
    return GRACE_EINVAL;
  pthread_mutex_lock(&w->mu);
  if (w->st == S_NEW ||
      (w->st != S_DONE && pthread_equal(pthread_self(), w->thread))) {
    pthread_mutex_unlock(&w->mu);
    return GRACE_ESTATE;
  }
  deadline = timeout < 0 ? INT64_MAX : add_sat(grace_now(), timeout);
  while (w->st != S_DONE) {
    if (timeout < 0) {
      pthread_cond_wait(&w->cond, &w->mu);
    } else if (grace_now() >= deadline) {
      rv = GRACE_ETIMEDOUT;
      break;
    } else {
      wait_until(w, deadline);
    }
  }
  pthread_mutex_unlock(&w->mu);
  return rv;
}

int grace_worker_done_fd(grace_worker *w) {
  return w == NULL ? GRACE_EINVAL : w->done_fd;
}

int grace_worker_status(grace_worker *w, int *status) {
  int rv = GRACE_EBUSY;

  if (w == NULL || status == NULL)
    return GRACE_EINVAL;
  pthread_mutex_lock(&w->mu);
  if (w->st == S_DONE) {
    *status = w->status;
    rv = 0;
  }
  pthread_mutex_unlock(&w->mu);
  return rv;
}

void grace_worker_free(grace_worker *w) {
  bool started;

  if (w == NULL)
    return;
  pthread_mutex_lock(&w->mu);
  started = w->st != S_NEW;
  pthread_mutex_unlock(&w->mu);
  if (started) {
    if (pthread_equal(pthread_self(), w->thread)) {
      fprintf(stderr, "grace: grace_worker_free called from the worker's "
                      "own thread\n");
      abort();
    }
    grace_worker_force(w);
    /* The thread returns right after marking the worker done. */
    pthread_join(w->thread, NULL);
  }
  grace_ctx_unref(w->stop_ctx);
  grace_ctx_unref(w->run_ctx);
  close(w->done_fd);
  pthread_cond_destroy(&w->cond);
  pthread_mutex_destroy(&w->mu);
  free(w);
}
