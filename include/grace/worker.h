/*
 * grace: periodic workers, the seed's Syncer in C.
 *
 * A worker runs a task every interval on a thread of its own, and stops
 * with the shape every part of grace shares: grace_worker_stop_begin
 * starts a graceful stop, on_done and grace_worker_wait/grace_worker_done_fd
 * say the moment it is done, and grace_worker_force cuts what is left.
 *
 *   grace_worker_options opts;
 *   grace_worker_options_init(&opts);
 *   opts.interval = GRACE_SECOND;
 *   opts.task = sync_once;            // logs "do something"
 *   opts.cleanup = flush;             // runs once, after the last tick
 *   grace_worker_new(&opts, &w);
 *   grace_worker_start(w);
 *   ...                               // first signal
 *   grace_worker_stop_begin(w, NULL); // no deadline but the cleanup's own
 *   grace_worker_wait(w, -1);
 *   grace_worker_free(w);
 *
 * Scheduling follows Go's time.Ticker: the first tick comes one interval
 * after grace_worker_start, and each tick's task returns when the next one
 * is due, counted from the moment the tick was due (so ticks do not drift).
 * A task that overruns does not make ticks pile up: the next tick starts at
 * once, but only once, and the ticks it missed are dropped, as a Ticker's
 * one-slot channel drops them.
 *
 * Stopping.  grace_worker_stop_begin makes the thread schedule no more
 * ticks; a tick in progress finishes first (its context is cancelled, so it
 * may end early); then the cleanup runs once, on the worker thread, with a
 * context that ends at the earlier of cleanup_timeout (from the moment the
 * cleanup starts) and the deadline of the context given to stop_begin.
 * When the cleanup returns, on_done is called on the worker thread, and
 * then the worker is done: grace_worker_wait returns and the done
 * descriptor becomes readable.
 *
 * Forcing.  A C thread cannot be killed safely, so grace_worker_force
 * cancels the contexts the task and the cleanup were given and stops
 * waiting for them: code that watches its context ends at once, code that
 * does not keeps the thread until it returns.  grace_worker_force reports
 * whether the worker has finished, and on_done's status says whether the
 * cleanup completed.
 *
 * Threads.  Every function may be called from any thread, except where
 * noted: grace_worker_wait and grace_worker_free must not be called from
 * the worker's own callbacks.  The worker thread blocks every signal it can
 * (SIGINT and SIGTERM then reach the program's other threads, where the
 * signal context's handler runs).
 */
#ifndef GRACE_WORKER_H
#define GRACE_WORKER_H

#include <stdbool.h>
#include <stddef.h>
#include <string.h>

#include "grace/context.h"
#include "grace/duration.h"
#include "grace/error.h"

#ifdef __cplusplus
extern "C" {
#endif

/*
 * A periodic worker: its thread, its schedule and its stop state.  The
 * details are intentionally hidden; the library allocates it
 * (grace_worker_new) and frees it (grace_worker_free).
 */
typedef struct grace_worker grace_worker;

/* A task's return value: run the next tick one configured interval on. */
#define GRACE_WORKER_DEFAULT ((grace_duration)-1)
/*
 * A task's return value: schedule no more ticks.  The worker then stops as
 * if grace_worker_stop_begin(w, NULL) had been called: the cleanup runs
 * and the worker becomes done (as redis' AE_NOMORE runs the timer's
 * finalizer).
 */
#define GRACE_WORKER_NOMORE ((grace_duration)-2)

/*
 * The periodic task, called on the worker thread at each tick.  |ctx| is
 * borrowed for the duration of the call; it is cancelled (GRACE_ECANCELED)
 * the moment a stop begins, so a long tick can end early by watching it
 * (grace_ctx_err, grace_ctx_wait, grace_ctx_done_fd).  |data| is the
 * options' data.
 *
 * Returns the delay to the next tick, counted from the moment this tick
 * was due: a value >= 0 (0 runs the next tick at once), or
 * GRACE_WORKER_DEFAULT for the configured interval, or GRACE_WORKER_NOMORE
 * to stop.  Any other negative value counts as GRACE_WORKER_DEFAULT.
 */
typedef grace_duration (*grace_worker_task_cb)(grace_worker *w, grace_ctx *ctx,
                                               void *data);

/*
 * The cleanup, called once on the worker thread after the last tick, when
 * the worker stops for any reason.  |ctx| is borrowed for the duration of
 * the call; it is done at the cleanup's deadline (GRACE_ETIMEDOUT) or when
 * grace_worker_force is called (GRACE_ECANCELED).  A cleanup should watch
 * it and return early when it is done.
 *
 * Returns 0 if the cleanup completed, or a negative error (typically
 * grace_ctx_err(ctx) when it was cut short); the value is the worker's
 * stop status, passed to on_done and reported by grace_worker_status.
 */
typedef int (*grace_worker_cleanup_cb)(grace_worker *w, grace_ctx *ctx,
                                       void *data);

/*
 * Called once on the worker thread when the stop is complete, after the
 * cleanup, with the stop status (the cleanup's return value, 0 without a
 * cleanup).  The worker is marked done only after it returns, so
 * grace_worker_wait returning means on_done has returned.  It must not
 * call grace_worker_wait or grace_worker_free on |w|.
 */
typedef void (*grace_worker_done_cb)(grace_worker *w, int status, void *data);

/*
 * The worker's settings.  Fill it with grace_worker_options_init, then set
 * the fields you need: every field's zero value is its default, so a
 * program built against an older, shorter version of this struct keeps
 * working with a newer library (|size| tells the library how much of the
 * struct the caller knows).
 */
typedef struct grace_worker_options {
  /* sizeof(grace_worker_options) as the caller compiled it; set by
   * grace_worker_options_init.  Do not change it. */
  size_t size;
  /* Time between ticks; must be > 0 (Go's NewTicker panics otherwise). */
  grace_duration interval;
  /* Required: the periodic task. */
  grace_worker_task_cb task;
  /* Optional: run once when the worker stops. */
  grace_worker_cleanup_cb cleanup;
  /* How long the cleanup may run, from the moment it starts; 0 (the
   * default) or less means no limit of its own (the stop context's
   * deadline, if any, still applies). */
  grace_duration cleanup_timeout;
  /* Optional: called on the worker thread when the stop is complete. */
  grace_worker_done_cb on_done;
  /* Passed, as is, to task, cleanup and on_done. */
  void *data;
  /* Run the first tick at once instead of one interval after start. */
  bool tick_at_start;
  /* The worker thread's name (pthread_setname_np, at most 15 bytes are
   * used; copied).  NULL (the default) means "grace-worker". */
  const char *name;
} grace_worker_options;

/*
 * Fills |opts| with the defaults (all zero) and records the struct's size
 * as this caller compiled it.  An inline function on purpose: the size
 * must be the caller's, not the library's.
 */
static inline void grace_worker_options_init(grace_worker_options *opts) {
  memset(opts, 0, sizeof(*opts));
  opts->size = sizeof(*opts);
}

/*
 * Creates a worker from |opts| (copied, name included; |opts| may be freed
 * afterwards).  The worker does not run until grace_worker_start.  On
 * success stores it in |*out| (the caller owns it: grace_worker_free) and
 * returns 0; on failure leaves |*out| untouched and returns one of:
 *
 * GRACE_EINVAL  |opts| or |out| is NULL, |opts->size| is not a known size
 *               (or larger with non-zero fields this library does not
 *               know), |opts->task| is NULL or |opts->interval| <= 0
 * GRACE_ENOMEM  out of memory
 * GRACE_EMFILE  no file descriptor left for the done descriptor
 */
GRACE_EXTERN int grace_worker_new(const grace_worker_options *opts,
                                  grace_worker **out);

/*
 * Starts the worker thread; the first tick comes one interval later (or at
 * once with tick_at_start).  Returns 0 or one of:
 *
 * GRACE_EINVAL  |w| is NULL
 * GRACE_ESTATE  the worker was already started
 * -EAGAIN       the thread could not be created (the worker stays
 *               unstarted; the call may be retried)
 */
GRACE_EXTERN int grace_worker_start(grace_worker *w);

/*
 * Begins a graceful stop and returns at once: no tick is scheduled any
 * more, a tick in progress has its context cancelled and is waited for,
 * then the cleanup runs with a deadline that is the earlier of
 * cleanup_timeout and |ctx|'s deadline; |ctx| being cancelled cancels the
 * cleanup's context too.  |ctx| may be NULL (no deadline from the caller);
 * otherwise it is referenced (grace_ctx_ref) until the worker is done.
 *
 * Calling it again, or after the worker stopped by itself
 * (GRACE_WORKER_NOMORE), does nothing and returns 0; the first stop's
 * context stays in force.  May be called from the task itself.  Returns 0
 * or one of:
 *
 * GRACE_EINVAL  |w| is NULL
 * GRACE_ESTATE  the worker was never started
 */
GRACE_EXTERN int grace_worker_stop_begin(grace_worker *w, grace_ctx *ctx);

/*
 * Cuts the stop short: begins a stop if none has begun, cancels the
 * task's context and the cleanup's (now, or as soon as the cleanup starts:
 * it then starts with a context that is already done).  Returns at once,
 * without waiting for the thread.  Returns:
 *
 * 0             the worker is done (the thread has finished its work)
 * GRACE_EBUSY   the task or the cleanup is still running; the thread will
 *               finish when it returns (wait with grace_worker_wait or the
 *               done descriptor)
 * GRACE_EINVAL  |w| is NULL
 * GRACE_ESTATE  the worker was never started
 */
GRACE_EXTERN int grace_worker_force(grace_worker *w);

/*
 * Blocks until the worker is done or |timeout| has elapsed (a negative
 * |timeout| waits forever, 0 only polls).  The wait is a condition
 * variable on the monotonic clock, woken the moment the worker is done.
 * Must not be called from the worker's callbacks.  Returns:
 *
 * 0               the worker is done
 * GRACE_ETIMEDOUT |timeout| elapsed first
 * GRACE_EINVAL    |w| is NULL
 * GRACE_ESTATE    the worker was never started, or the caller is the
 *                 worker thread (the wait could never end)
 */
GRACE_EXTERN int grace_worker_wait(grace_worker *w, grace_duration timeout);

/*
 * Returns a file descriptor that becomes readable, and stays readable, the
 * moment the worker is done (an eventfd), for event loops (epoll, poll,
 * uv_poll_t).  It belongs to the worker: never read from it or close it;
 * it is closed by grace_worker_free.  Returns GRACE_EINVAL for NULL.
 */
GRACE_EXTERN int grace_worker_done_fd(grace_worker *w);

/*
 * Stores the stop status (the cleanup's return value, or 0) in |*status|
 * once the worker is done.  Returns 0, GRACE_EBUSY if the worker is not
 * done yet (|*status| untouched), or GRACE_EINVAL if an argument is NULL.
 */
GRACE_EXTERN int grace_worker_status(grace_worker *w, int *status);

/*
 * Frees the worker.  An unstarted worker is freed at once.  A started one
 * is first stopped: if it is not done, the call begins a stop, forces it
 * (see grace_worker_force) and blocks until the thread has returned, so
 * freeing a worker whose task ignores its context waits for that task.
 * The thread is always joined.  Calling it from the worker's own callbacks
 * is a programming error: it prints a message and aborts.  NULL-safe.
 */
GRACE_EXTERN void grace_worker_free(grace_worker *w);

#ifdef __cplusplus
}
#endif

#endif /* GRACE_WORKER_H */
