/*
 * The worker guide's program (docs/guide/worker.md): a task every 100 ms
 * and a cleanup that runs once, after the last tick, when the program
 * stops.
 *
 *   worker            logs "tick 1", "tick 2", ... until SIGINT/SIGTERM,
 *                     then "flushed after N ticks", and exits 0
 */
#include "grace/context.h"
#include "grace/duration.h"
#include "grace/error.h"
#include "grace/log.h"
#include "grace/signal.h"
#include "grace/worker.h"

/* The worker's state: touched on the worker thread only, until it is
 * done. */
typedef struct counter {
  unsigned ticks;
} counter;

/* Each tick, on the worker thread; |ctx| is cancelled when a stop begins. */
static grace_duration tick(grace_worker *w, grace_ctx *ctx, void *data) {
  (void)w;
  (void)ctx;
  counter *c = data;
  grace_log("tick %u", ++c->ticks);
  return GRACE_WORKER_DEFAULT; /* the next one an interval later */
}

/* Once, after the last tick; |ctx| ends at the stop's deadline. */
static int flush(grace_worker *w, grace_ctx *ctx, void *data) {
  (void)w;
  const counter *c = data;
  if (grace_ctx_err(ctx) != 0)
    return grace_ctx_err(ctx); /* cut short: say so */
  grace_log("flushed after %u ticks", c->ticks);
  return 0;
}

int main(void) {
  grace_ctx *stop = grace_signal_context();

  counter c = {0};
  grace_worker_options opts;
  grace_worker_options_init(&opts);
  opts.interval = 100 * GRACE_MILLISECOND;
  opts.task = tick;
  opts.cleanup = flush;
  opts.data = &c;
  grace_worker *w;
  int rv = grace_worker_new(&opts, &w);
  if (rv != 0 || (rv = grace_worker_start(w)) != 0)
    grace_log_fatal("worker: %s", grace_strerror(rv));

  grace_ctx_wait(stop, -1);
  grace_ctx *deadline;
  rv = grace_ctx_with_timeout(grace_ctx_background(), 5 * GRACE_SECOND,
                              &deadline);
  if (rv != 0)
    grace_log_fatal("stop: %s", grace_strerror(rv));
  grace_worker_stop_begin(w, deadline); /* returns at once */
  grace_worker_wait(w, -1);             /* the cleanup has returned */
  int status = 0;
  grace_worker_status(w, &status);
  grace_ctx_unref(deadline);
  grace_worker_free(w);
  return status == 0 ? 0 : 1;
}
