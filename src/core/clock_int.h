/*
 * An injectable clock for the modules that wait on time (the lifecycle
 * group, the periodic worker), so their unit tests drive time instead of
 * sleeping, as h2o's timer wheel takes |now| from its caller
 * (h2o_timerwheel_run).  Internal: no public header names it.
 *
 * Without a clock installed a module reads grace_now, makes its deadlines
 * with grace_ctx_with_timeout, and sleeps with a timeout; that is the
 * production path.  A manual clock's time moves only when its owner moves
 * it, so the module sleeps with no timeout of its own, and whoever moves
 * the clock must wake the module (the module's grace__*_wake) for it to
 * look at the time again.
 */
#ifndef GRACE_CORE_CLOCK_INT_H
#define GRACE_CORE_CLOCK_INT_H

#include <stdbool.h>
#include <stdint.h>

#include "grace/context.h"
#include "grace/duration.h"

typedef struct grace__clock {
  /* The time now, on grace_now's scale (nanoseconds).  Any thread. */
  int64_t (*now)(void *data);
  /* Like grace_ctx_with_timeout, on this clock: |*out| becomes done with
   * GRACE_ETIMEDOUT once now() reaches now() + |timeout|. */
  int (*with_timeout)(void *data, grace_ctx *parent, grace_duration timeout,
                      grace_ctx **out);
  /* Optional: called by the waiting thread each time it is about to
   * sleep, after it has read now() and found nothing to do (with a
   * manual clock: nothing ready on its descriptors either).  A test
   * counts these to see that a module sleeps until something happens
   * rather than polling. */
  void (*idle)(void *data);
  /* Time moves only when the owner moves it (see above). */
  bool manual;
  void *data;
} grace__clock;

/* Marks |ctx| done with GRACE_ETIMEDOUT now, as if its deadline had
 * passed (for a manual clock's deadlines).  Does nothing if it is done
 * already.  Defined in context.c. */
void grace__ctx_expire(grace_ctx *ctx);

#endif /* GRACE_CORE_CLOCK_INT_H */
