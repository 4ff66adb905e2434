/*
 * The periodic worker's test hooks (see core/clock_int.h).
 */
#ifndef GRACE_WORKER_INT_H
#define GRACE_WORKER_INT_H

#include "core/clock_int.h"
#include "grace/worker.h"

/*
 * Makes the worker schedule its ticks on |clock| (copied) instead of
 * grace_now, and make the cleanup's timeout with clock->with_timeout.
 * With a manual clock (clock->manual) the worker thread waits for a
 * tick with no timeout: after moving the clock, call grace__worker_wake.
 * grace_worker_wait's own timeout stays on grace_now (it is the caller's
 * bound, not the worker's schedule).  Only before grace_worker_start.
 */
void grace__worker_set_clock(grace_worker *w, const grace__clock *clock);

/* Wakes the worker thread so that it looks at the time again.  Any
 * thread. */
void grace__worker_wake(grace_worker *w);

#endif /* GRACE_WORKER_INT_H */
