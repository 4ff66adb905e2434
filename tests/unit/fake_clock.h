/*
 * A manual clock for the unit tests of the modules that wait on time (the
 * group, the worker; see src/core/clock_int.h), after h2o's timer wheel:
 * time moves only when the test moves it, timers due by then run in the
 * test's thread in the order they are due, and the test then waits until
 * the module has looked at the new time and gone back to sleep.  So a
 * test states "nothing happens before 300 ms, and it happens at 300 ms"
 * exactly, whatever the load on the machine.
 *
 * Header-only, included by one test file each.
 */
#ifndef GRACE_TEST_FAKE_CLOCK_H
#define GRACE_TEST_FAKE_CLOCK_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "core/clock_int.h"
#include "grace/context.h"

#define FC_MAX_TIMERS 32

typedef void (*fc_fn)(void *arg);

typedef struct fake_clock {
  pthread_mutex_t mu;
  pthread_cond_t cond;
  int64_t now;
  /* Bumped each time the test moves the clock or pokes the module; the
   * module's last idle says which epoch it had read (see fc_idle). */
  uint64_t epoch, idle_epoch;
  struct {
    int64_t at;
    fc_fn fn;       /* run at |at|, or */
    grace_ctx *ctx; /* expired at |at| (a reference) */
    void *arg;
    bool fired;
  } timers[FC_MAX_TIMERS];
  int ntimers;
  /* Wakes the module (grace__group_wake, grace__worker_wake). */
  void (*wake)(void *target);
  void *target;
  /* True once the module will not sleep on the clock again. */
  bool (*finished)(void *arg);
  void *finished_arg;
} fake_clock;

/* The epoch the calling thread read with its last fc_now. */
static _Thread_local uint64_t fc_read_epoch;

/* An arbitrary start, far from 0 (which some fields use for "not yet"). */
#define FC_START ((int64_t)1000 * GRACE_SECOND)

static inline void fc_init(fake_clock *fc) {
  memset(fc, 0, sizeof(*fc));
  pthread_mutex_init(&fc->mu, NULL);
  pthread_cond_init(&fc->cond, NULL);
  fc->now = FC_START;
}

static inline void fc_destroy(fake_clock *fc) {
  for (int i = 0; i < fc->ntimers; i++)
    grace_ctx_unref(fc->timers[i].ctx);
  pthread_cond_destroy(&fc->cond);
  pthread_mutex_destroy(&fc->mu);
}

static inline int64_t fc_now(void *data) {
  fake_clock *fc = data;
  pthread_mutex_lock(&fc->mu);
  int64_t now = fc->now;
  fc_read_epoch = fc->epoch;
  pthread_mutex_unlock(&fc->mu);
  return now;
}

static inline void fc_idle(void *data) {
  fake_clock *fc = data;
  pthread_mutex_lock(&fc->mu);
  if (fc_read_epoch > fc->idle_epoch)
    fc->idle_epoch = fc_read_epoch;
  pthread_cond_broadcast(&fc->cond);
  pthread_mutex_unlock(&fc->mu);
}

static inline void fc_add_timer(fake_clock *fc, int64_t at, fc_fn fn,
                                grace_ctx *ctx, void *arg) {
  pthread_mutex_lock(&fc->mu);
  assert_true(fc->ntimers < FC_MAX_TIMERS);
  fc->timers[fc->ntimers].at = at;
  fc->timers[fc->ntimers].fn = fn;
  fc->timers[fc->ntimers].ctx = ctx;
  fc->timers[fc->ntimers].arg = arg;
  fc->timers[fc->ntimers].fired = false;
  fc->ntimers++;
  pthread_mutex_unlock(&fc->mu);
}

/* Runs fn(arg) when the clock reaches now + |after|, in the thread that
 * moves it. */
static inline void fc_after(fake_clock *fc, grace_duration after, fc_fn fn,
                            void *arg) {
  fc_add_timer(fc, fc_now(fc) + after, fn, NULL, arg);
}

/* grace__clock.with_timeout: a cancel context this clock expires. */
static inline int fc_with_timeout(void *data, grace_ctx *parent,
                                  grace_duration timeout, grace_ctx **out) {
  fake_clock *fc = data;
  int rv = grace_ctx_with_cancel(parent, out);
  if (rv != 0)
    return rv;
  if (timeout <= 0) {
    grace__ctx_expire(*out);
    return 0;
  }
  fc_add_timer(fc, fc_now(fc) + timeout, NULL, grace_ctx_ref(*out), NULL);
  return 0;
}

/* The clock to install in the module. */
static inline grace__clock fc_clock(fake_clock *fc) {
  grace__clock c = {.now = fc_now,
                    .with_timeout = fc_with_timeout,
                    .idle = fc_idle,
                    .manual = true,
                    .data = fc};
  return c;
}

/*
 * Moves the clock |d| on without waking anyone (for a callback that runs
 * on the module's own thread, standing for work that takes that long).
 * Timers that fall due are not run here.
 */
static inline void fc_move(fake_clock *fc, grace_duration d) {
  pthread_mutex_lock(&fc->mu);
  fc->now += d;
  pthread_mutex_unlock(&fc->mu);
}

/*
 * Waits until the module has read the clock at or after epoch |target|
 * and gone back to sleep, or has finished.  Bounded (5 s of real time):
 * a module that never settles fails the test.
 */
static inline void fc_settle_to(fake_clock *fc, uint64_t target) {
  struct timespec until;
  clock_gettime(CLOCK_REALTIME, &until);
  until.tv_sec += 5;
  pthread_mutex_lock(&fc->mu);
  for (;;) {
    if (fc->idle_epoch >= target)
      break;
    pthread_mutex_unlock(&fc->mu);
    bool done = fc->finished != NULL && fc->finished(fc->finished_arg);
    pthread_mutex_lock(&fc->mu);
    if (done)
      break;
    /* Short slices: |finished| is not signalled on our condvar. */
    struct timespec now, slice;
    clock_gettime(CLOCK_REALTIME, &now);
    if (now.tv_sec > until.tv_sec ||
        (now.tv_sec == until.tv_sec && now.tv_nsec >= until.tv_nsec)) {
      pthread_mutex_unlock(&fc->mu);
      fail_msg("the module did not settle");
    }
    slice = now;
    slice.tv_nsec += 1000000;
    if (slice.tv_nsec >= 1000000000) {
      slice.tv_sec++;
      slice.tv_nsec -= 1000000000;
    }
    pthread_cond_timedwait(&fc->cond, &fc->mu, &slice);
  }
  pthread_mutex_unlock(&fc->mu);
}

/* Lets the module look at everything the test did so far, and waits until
 * it sleeps again (or has finished). */
static inline void fc_poke(fake_clock *fc) {
  pthread_mutex_lock(&fc->mu);
  uint64_t target = ++fc->epoch;
  pthread_mutex_unlock(&fc->mu);
  if (fc->wake != NULL)
    fc->wake(fc->target);
  fc_settle_to(fc, target);
}

/*
 * Moves the clock |d| on.  The timers due by then run in the order they
 * are due, each with the clock set to its own due time.  Nobody is woken
 * (see fc_advance).
 */
static inline void fc_run(fake_clock *fc, grace_duration d) {
  pthread_mutex_lock(&fc->mu);
  int64_t end = fc->now + d;
  for (;;) {
    int next = -1;
    for (int i = 0; i < fc->ntimers; i++)
      if (!fc->timers[i].fired && fc->timers[i].at <= end &&
          (next < 0 || fc->timers[i].at < fc->timers[next].at))
        next = i;
    if (next < 0)
      break;
    fc->timers[next].fired = true;
    if (fc->timers[next].at > fc->now)
      fc->now = fc->timers[next].at;
    fc_fn fn = fc->timers[next].fn;
    grace_ctx *ctx = fc->timers[next].ctx;
    void *arg = fc->timers[next].arg;
    pthread_mutex_unlock(&fc->mu);
    if (ctx != NULL)
      grace__ctx_expire(ctx);
    else
      fn(arg);
    pthread_mutex_lock(&fc->mu);
  }
  fc->now = end;
  pthread_mutex_unlock(&fc->mu);
}

/*
 * Moves the clock |d| on (fc_run), then wakes the module, and returns once
 * it has looked at the new time and gone back to sleep (or finished).
 */
static inline void fc_advance(fake_clock *fc, grace_duration d) {
  fc_run(fc, d);
  fc_poke(fc);
}

#endif /* GRACE_TEST_FAKE_CLOCK_H */
