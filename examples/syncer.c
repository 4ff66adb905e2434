/*
 * syncer: the seed's periodic Syncer, with grace.
 *
 *   syncer [-interval 1s] [-cleanup 5s]
 *
 * Logs "do something" every interval.  At the first SIGINT or SIGTERM it
 * logs "Stop loop", then "Stop Syncer start", spends -cleanup in its
 * cleanup, logs "Stop Syncer done" and exits 0.  A second signal during the
 * cleanup exits 1 at once (the signal context does that by itself).
 *
 * The Go original, for comparison:
 *
 *   func (s *Syncer) Run(quit <-chan struct{}) error {
 *       ticker := time.NewTicker(s.interval)
 *       defer ticker.Stop()
 *       for {
 *           select {
 *           case <-ticker.C:
 *               log.Println("do something")
 *           case <-quit:
 *               log.Println("Stop loop")
 *               s.Stop()
 *               return nil
 *           }
 *       }
 *   }
 */
#include <stdlib.h>

#include "grace/context.h"
#include "grace/duration.h"
#include "grace/flags.h"
#include "grace/log.h"
#include "grace/signal.h"
#include "grace/worker.h"

typedef struct syncer {
  grace_duration cleanup; /* how long the cleanup takes */
} syncer;

/* One tick of the business logic. */
static grace_duration sync_once(grace_worker *w, grace_ctx *ctx, void *data) {
  (void)w;
  (void)ctx;
  (void)data;
  grace_log("do something");
  return GRACE_WORKER_DEFAULT;
}

/*
 * The Syncer's Stop: a cleanup that takes s->cleanup, but gives up as soon
 * as its context is done (the worker was forced or its deadline passed).
 */
static int stop_syncer(grace_worker *w, grace_ctx *ctx, void *data) {
  const syncer *s = data;
  int rv;

  (void)w;
  grace_log("Stop Syncer start");
  rv = grace_ctx_wait(ctx, s->cleanup);
  if (rv == GRACE_ECANCELED || rv == GRACE_ETIMEDOUT) {
    grace_log("Stop Syncer cut short: %s", grace_strerror(rv));
    return rv;
  }
  if (rv < 0) /* the wait itself failed; the cleanup did not run */
    grace_log("Stop Syncer: %s", grace_strerror(rv));
  else
    grace_log("Stop Syncer done");
  return rv;
}

int main(int argc, char **argv) {
  syncer s = {.cleanup = 5 * GRACE_SECOND};
  grace_duration interval = GRACE_SECOND;
  grace_worker_options opts;
  grace_worker *w;
  grace_flags *flags;
  grace_ctx *quit;
  int rv, status = 0;

  flags = grace_flags_new(argv[0]);
  if (flags == NULL)
    grace_log_fatal("out of memory");
  if (grace_flags_duration(flags, "interval", &interval,
                           "time between two syncs") != 0 ||
      grace_flags_duration(flags, "cleanup", &s.cleanup,
                           "how long the cleanup at stop takes") != 0)
    grace_log_fatal("cannot register the flags");
  grace_flags_parse_or_exit(flags, argc, argv);
  grace_flags_free(flags);

  grace_worker_options_init(&opts);
  opts.interval = interval;
  opts.task = sync_once;
  opts.cleanup = stop_syncer;
  opts.data = &s;
  opts.name = "syncer";
  rv = grace_worker_new(&opts, &w);
  if (rv == GRACE_EINVAL)
    grace_log_fatal("Syncer run err: non-positive interval for NewTicker");
  if (rv != 0)
    grace_log_fatal("Syncer run err: %s", grace_strerror(rv));

  /* Before the worker thread exists, so that thread inherits nothing odd
   * and the signals always reach this thread's handler. */
  quit = grace_signal_context();
  rv = grace_worker_start(w);
  if (rv != 0)
    grace_log_fatal("Syncer run err: %s", grace_strerror(rv));

  /* <-quit */
  rv = grace_ctx_wait(quit, -1);
  if (rv != GRACE_ECANCELED)
    grace_log_fatal("Syncer run err: waiting for a signal: %s",
                    grace_strerror(rv));
  grace_log("Stop loop");

  rv = grace_worker_stop_begin(w, NULL);
  if (rv == 0)
    rv = grace_worker_wait(w, -1);
  if (rv == 0)
    rv = grace_worker_status(w, &status);
  grace_worker_free(w);
  if (rv != 0)
    grace_log_fatal("Syncer run err: %s", grace_strerror(rv));
  return status == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
