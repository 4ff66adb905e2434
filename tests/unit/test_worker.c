/*
 * Periodic workers: schedule (interval, overrun, custom delays, NOMORE),
 * the stop shape (stop_begin, cleanup deadline, force, wait, done fd,
 * on_done) and the API's contracts.
 *
 * The schedule is tested on a manual clock (fake_clock.h): the test moves
 * time and checks that each tick comes exactly when it is due, not a
 * nanosecond early, and that a stop wakes the worker although time does not
 * move at all.  Work that must still be running when the test looks (a
 * stubborn tick, a cleanup) blocks on a latch the test opens, not on a
 * sleep.  The few checks on the real clock are bounds a worker that polls
 * or ignores a stop would break by seconds, and scheduler noise would not.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "grace/worker.h"
#include "worker/worker_int.h"

#include "fake_clock.h"

#define MS GRACE_MILLISECOND
#define MAX_TICKS 64

/* What the callbacks saw, shared with the test thread. */
typedef struct probe {
  pthread_mutex_t mu;
  pthread_cond_t cond;
  int ticks;
  int64_t tick_start[MAX_TICKS];
  int64_t tick_end[MAX_TICKS];
  int tick_ctx_err[MAX_TICKS]; /* grace_ctx_err of the tick ctx at its end */
  bool started;                /* a tick has started (stays true) */

  /* Task behaviour. */
  int stop_after;                  /* return NOMORE at this tick (1-based) */
  grace_duration busy[MAX_TICKS];  /* sleep this long in tick i, ignoring ctx */
  grace_duration delay[MAX_TICKS]; /* return value of tick i (0 = DEFAULT) */
  bool set_delay;
  bool wait_ctx;       /* block in each tick until ctx is done */
  grace_duration linger; /* then go on this long, ignoring it */
  bool stop_from_task; /* call stop_begin inside tick 1 */
  int stop_rv;         /* what that call returned */
  int wait_rv;         /* grace_worker_wait inside the task */
  bool check_thread;
  char thread_name[16];
  bool sigint_blocked, sigterm_blocked;

  /* Cleanup behaviour and observations. */
  int cleanups;
  bool in_cleanup;
  int64_t cleanup_start, cleanup_end;
  grace_ctx *cleanup_ctx; /* the cleanup's context (borrowed) */
  int cleanup_ctx_err_at_start;
  int cleanup_rv;
  grace_duration cleanup_wait; /* wait on ctx up to this long; <0 forever */
  int ticks_at_cleanup;

  /* The latch: while |hold| is set, tick |hold_tick| and the cleanup
   * (if |hold_cleanup|) block, ignoring their context, until |release|. */
  bool hold, hold_cleanup, release;
  int hold_tick;
  /* The manual clock, or NULL for the real one. */
  fake_clock *fc;

  /* on_done observations. */
  int dones;
  int done_status;
  int done_fd_readable_in_cb;
  int status_in_cb;
  grace_worker *w;
} probe;

static void probe_init(probe *p) {
  memset(p, 0, sizeof(*p));
  pthread_mutex_init(&p->mu, NULL);
  pthread_cond_init(&p->cond, NULL);
  p->cleanup_wait = 0;
}

/* The probe's time: the manual clock's, or grace_now. */
static int64_t p_now(probe *p) {
  return p->fc != NULL ? fc_now(p->fc) : grace_now();
}

/* Blocks on the latch (see probe.hold) until the test opens it. */
static void hold(probe *p) {
  pthread_mutex_lock(&p->mu);
  while (!p->release)
    pthread_cond_wait(&p->cond, &p->mu);
  pthread_mutex_unlock(&p->mu);
}

static void release(probe *p) {
  pthread_mutex_lock(&p->mu);
  p->release = true;
  pthread_cond_broadcast(&p->cond);
  pthread_mutex_unlock(&p->mu);
}

/* The number of ticks finished so far. */
static int ticks(probe *p) {
  pthread_mutex_lock(&p->mu);
  int n = p->ticks;
  pthread_mutex_unlock(&p->mu);
  return n;
}

static void probe_destroy(probe *p) {
  pthread_cond_destroy(&p->cond);
  pthread_mutex_destroy(&p->mu);
}

static void sleep_ns(grace_duration d) {
  struct timespec ts = {(time_t)(d / GRACE_SECOND), (long)(d % GRACE_SECOND)};

  while (nanosleep(&ts, &ts) != 0) {
  }
}

/* Waits (bounded, 5 s) until |*flag| (read under p->mu) is true. */
static void await(probe *p, const bool *flag) {
  struct timespec ts;

  clock_gettime(CLOCK_REALTIME, &ts);
  ts.tv_sec += 5;
  pthread_mutex_lock(&p->mu);
  while (!*flag) {
    if (pthread_cond_timedwait(&p->cond, &p->mu, &ts) != 0)
      break;
  }
  assert_true(*flag);
  pthread_mutex_unlock(&p->mu);
}

static int fd_readable(int fd) {
  struct pollfd pfd = {.fd = fd, .events = POLLIN};

  return poll(&pfd, 1, 0);
}

static grace_duration task(grace_worker *w, grace_ctx *ctx, void *data) {
  probe *p = data;
  grace_duration ret = GRACE_WORKER_DEFAULT;
  int64_t start = p_now(p);
  int i;

  pthread_mutex_lock(&p->mu);
  i = p->ticks;
  p->started = true;
  pthread_cond_broadcast(&p->cond);
  pthread_mutex_unlock(&p->mu);

  if (p->check_thread) {
    sigset_t set;

    pthread_getname_np(pthread_self(), p->thread_name, sizeof(p->thread_name));
    pthread_sigmask(SIG_SETMASK, NULL, &set);
    p->sigint_blocked = sigismember(&set, SIGINT) == 1;
    p->sigterm_blocked = sigismember(&set, SIGTERM) == 1;
    p->wait_rv = grace_worker_wait(w, 0);
  }
  if (i < MAX_TICKS && p->busy[i] > 0) {
    if (p->fc != NULL)
      fc_move(p->fc, p->busy[i]); /* work that takes that long */
    else
      sleep_ns(p->busy[i]);
  }
  if (p->hold && i == p->hold_tick)
    hold(p);
  if (p->wait_ctx)
    grace_ctx_wait(ctx, 60 * GRACE_SECOND);
  if (p->linger > 0)
    sleep_ns(p->linger);
  if (p->stop_from_task && i == 0)
    p->stop_rv = grace_worker_stop_begin(w, NULL);
  if (p->set_delay && i < MAX_TICKS)
    ret = p->delay[i];

  pthread_mutex_lock(&p->mu);
  if (i < MAX_TICKS) {
    p->tick_start[i] = start;
    p->tick_end[i] = p_now(p);
    p->tick_ctx_err[i] = grace_ctx_err(ctx);
  }
  p->ticks++;
  if (p->stop_after > 0 && p->ticks >= p->stop_after)
    ret = GRACE_WORKER_NOMORE;
  pthread_cond_broadcast(&p->cond);
  pthread_mutex_unlock(&p->mu);
  return ret;
}

static int cleanup(grace_worker *w, grace_ctx *ctx, void *data) {
  probe *p = data;
  int rv = 0;

  (void)w;
  pthread_mutex_lock(&p->mu);
  p->cleanups++;
  p->in_cleanup = true;
  p->cleanup_start = p_now(p);
  p->ticks_at_cleanup = p->ticks;
  p->cleanup_ctx_err_at_start = grace_ctx_err(ctx);
  p->cleanup_ctx = ctx;
  pthread_cond_broadcast(&p->cond);
  pthread_mutex_unlock(&p->mu);

  if (p->hold_cleanup)
    hold(p);
  if (p->cleanup_wait != 0) {
    rv = grace_ctx_wait(ctx, p->cleanup_wait);
    if (rv > 0)
      rv = 0;
  }

  pthread_mutex_lock(&p->mu);
  p->cleanup_end = p_now(p);
  p->cleanup_rv = rv;
  pthread_mutex_unlock(&p->mu);
  return rv;
}

static void on_done(grace_worker *w, int status, void *data) {
  probe *p = data;
  int st;

  pthread_mutex_lock(&p->mu);
  p->dones++;
  p->done_status = status;
  p->done_fd_readable_in_cb = fd_readable(grace_worker_done_fd(w));
  p->status_in_cb = grace_worker_status(w, &st);
  pthread_mutex_unlock(&p->mu);
}

static grace_worker *make(probe *p, grace_duration interval) {
  grace_worker_options opts;
  grace_worker *w = NULL;

  grace_worker_options_init(&opts);
  opts.interval = interval;
  opts.task = task;
  opts.cleanup = cleanup;
  opts.on_done = on_done;
  opts.data = p;
  assert_int_equal(grace_worker_new(&opts, &w), 0);
  assert_non_null(w);
  p->w = w;
  return w;
}

static void fc_wake_worker(void *target) { grace__worker_wake(target); }

static bool fc_worker_done(void *arg) {
  int st;
  return grace_worker_status(arg, &st) == 0;
}

/* A worker of |p| on manual clock |fc|, started, and settled: it has read
 * the start time (FC_START) and sleeps until its first tick. */
static grace_worker *start_on(probe *p, fake_clock *fc,
                              grace_duration interval) {
  fc_init(fc);
  p->fc = fc;
  grace_worker *w = make(p, interval);
  grace__clock c = fc_clock(fc);
  grace__worker_set_clock(w, &c);
  fc->wake = fc_wake_worker;
  fc->target = w;
  fc->finished = fc_worker_done;
  fc->finished_arg = w;
  assert_int_equal(grace_worker_start(w), 0);
  fc_poke(fc);
  return w;
}

/* Moves |fc| to just before |at| (from FC_START): no new tick; then to
 * |at|: tick |n| runs, exactly then. */
static void expect_tick_at(probe *p, fake_clock *fc, int n, int64_t at) {
  fc_advance(fc, FC_START + at - 1 - fc_now(fc));
  assert_int_equal(ticks(p), n);
  fc_advance(fc, 1);
  assert_int_equal(ticks(p), n + 1);
  assert_int_equal(p->tick_start[n] - FC_START, at);
}

static void test_interval_ticks_within_bounds(void **state) {
  fake_clock fc;
  probe p;
  grace_worker *w;
  int status = 1;

  (void)state;
  probe_init(&p);
  p.stop_after = 10;
  w = start_on(&p, &fc, 20 * MS);
  /* Tick i comes i + 1 intervals after the start, not a nanosecond
   * earlier, and not later either. */
  for (int i = 0; i < 10; i++)
    expect_tick_at(&p, &fc, i, (i + 1) * 20 * MS);
  assert_int_equal(grace_worker_wait(w, 5 * GRACE_SECOND), 0);
  assert_int_equal(p.ticks, 10);
  /* NOMORE stops the worker: the cleanup ran once, then on_done. */
  assert_int_equal(p.cleanups, 1);
  assert_int_equal(p.dones, 1);
  assert_int_equal(grace_worker_status(w, &status), 0);
  assert_int_equal(status, 0);
  grace_worker_free(w);
  fc_destroy(&fc);
  probe_destroy(&p);
}

static void test_first_tick_one_interval_after_start(void **state) {
  grace_worker_options opts;
  fake_clock fc;
  grace_worker *w;
  probe p;

  (void)state;
  probe_init(&p);
  p.stop_after = 1;
  w = start_on(&p, &fc, 100 * MS);
  expect_tick_at(&p, &fc, 0, 100 * MS);
  assert_int_equal(grace_worker_wait(w, 5 * GRACE_SECOND), 0);
  grace_worker_free(w);
  fc_destroy(&fc);

  /* tick_at_start: the first tick at once, before time moves at all. */
  memset(&p.tick_start, 0, sizeof(p.tick_start));
  p.ticks = 0;
  fc_init(&fc);
  grace_worker_options_init(&opts);
  opts.interval = 10 * GRACE_SECOND;
  opts.task = task;
  opts.data = &p;
  opts.tick_at_start = true;
  assert_int_equal(grace_worker_new(&opts, &w), 0);
  grace__clock c = fc_clock(&fc);
  grace__worker_set_clock(w, &c);
  assert_int_equal(grace_worker_start(w), 0);
  assert_int_equal(grace_worker_wait(w, 5 * GRACE_SECOND), 0);
  assert_int_equal(p.ticks, 1);
  assert_int_equal(p.tick_start[0], FC_START);
  grace_worker_free(w);
  fc_destroy(&fc);
  probe_destroy(&p);
}

/*
 * A tick that overruns by five intervals is followed by exactly one tick
 * at once; the one after that comes a full interval later (Go's Ticker
 * drops the missed ticks; a naive "next += interval" loop would fire five
 * ticks back to back).  The long tick moves the manual clock itself.
 */
static void test_overrun_does_not_pile_up(void **state) {
  fake_clock fc;
  probe p;
  grace_worker *w;

  (void)state;
  probe_init(&p);
  p.busy[0] = 260 * MS;
  p.stop_after = 4;
  w = start_on(&p, &fc, 50 * MS);
  /* Tick 1 is due at 50 ms and ends at 310 ms; tick 2 follows at once,
   * without the clock moving, and then the worker sleeps. */
  fc_advance(&fc, 50 * MS);
  assert_int_equal(ticks(&p), 2);
  assert_int_equal(p.tick_start[0] - FC_START, 50 * MS);
  assert_int_equal(p.tick_end[0] - FC_START, 310 * MS);
  assert_int_equal(p.tick_start[1], p.tick_end[0]);
  /* Ticks 3 and 4 one and two intervals later, not at once. */
  expect_tick_at(&p, &fc, 2, 360 * MS);
  expect_tick_at(&p, &fc, 3, 410 * MS);
  assert_int_equal(grace_worker_wait(w, 5 * GRACE_SECOND), 0);
  assert_int_equal(p.ticks, 4);
  grace_worker_free(w);
  fc_destroy(&fc);
  probe_destroy(&p);
}

/* Each delay a task returns is counted from the moment its tick was due. */
static void test_task_returns_next_delay(void **state) {
  fake_clock fc;
  probe p;
  grace_worker *w;

  (void)state;
  probe_init(&p);
  p.set_delay = true;
  p.delay[0] = 250 * MS;             /* long */
  p.delay[1] = 0;                    /* at once */
  p.delay[2] = GRACE_WORKER_DEFAULT; /* the interval: 100 ms */
  p.delay[3] = -12345;               /* other negatives: the interval */
  p.stop_after = 5;
  w = start_on(&p, &fc, 100 * MS);
  /* The first tick one interval after the start, the second 250 ms
   * later, the third at once (the clock does not move). */
  expect_tick_at(&p, &fc, 0, 100 * MS);
  fc_advance(&fc, 250 * MS - 1);
  assert_int_equal(ticks(&p), 1);
  fc_advance(&fc, 1);
  assert_int_equal(ticks(&p), 3);
  assert_int_equal(p.tick_start[1] - FC_START, 350 * MS);
  assert_int_equal(p.tick_start[2] - FC_START, 350 * MS);
  /* DEFAULT, then -12345: one interval each after that. */
  expect_tick_at(&p, &fc, 3, 450 * MS);
  expect_tick_at(&p, &fc, 4, 550 * MS);
  assert_int_equal(grace_worker_wait(w, 5 * GRACE_SECOND), 0);
  assert_int_equal(p.ticks, 5);
  grace_worker_free(w);
  fc_destroy(&fc);
  probe_destroy(&p);
}

static void test_nomore_stops_and_later_stop_is_noop(void **state) {
  fake_clock fc;
  probe p;
  grace_worker *w;
  int status = 1;

  (void)state;
  probe_init(&p);
  p.stop_after = 3;
  w = start_on(&p, &fc, 5 * MS);
  for (int i = 0; i < 3; i++)
    expect_tick_at(&p, &fc, i, (i + 1) * 5 * MS);
  assert_int_equal(grace_worker_wait(w, 5 * GRACE_SECOND), 0);
  /* Once done, stop and force change nothing and report done; however
   * far time moves, no tick comes. */
  assert_int_equal(grace_worker_stop_begin(w, NULL), 0);
  assert_int_equal(grace_worker_force(w), 0);
  fc_advance(&fc, GRACE_SECOND);
  assert_int_equal(p.ticks, 3);
  assert_int_equal(p.cleanups, 1);
  assert_int_equal(p.ticks_at_cleanup, 3);
  assert_int_equal(p.dones, 1);
  assert_int_equal(grace_worker_status(w, &status), 0);
  assert_int_equal(status, 0);
  assert_int_equal(fd_readable(grace_worker_done_fd(w)), 1);
  grace_worker_free(w);
  fc_destroy(&fc);
  probe_destroy(&p);
}

static void test_stop_while_idle_wakes_at_once(void **state) {
  fake_clock fc;
  probe p;
  grace_worker *w;

  (void)state;
  /* On a manual clock that never moves: only the stop can wake it. */
  probe_init(&p);
  w = start_on(&p, &fc, 10 * GRACE_SECOND);
  assert_int_equal(grace_worker_stop_begin(w, NULL), 0);
  assert_int_equal(grace_worker_wait(w, 5 * GRACE_SECOND), 0);
  assert_int_equal(fc_now(&fc), FC_START);
  assert_int_equal(p.ticks, 0);
  assert_int_equal(p.cleanups, 1);
  assert_int_equal(p.dones, 1);
  grace_worker_free(w);
  fc_destroy(&fc);
  probe_destroy(&p);

  /* The real clock's timed wait is woken too: a worker that slept out
   * its 60 s interval would miss the 5 s by 55 s. */
  probe_init(&p);
  w = make(&p, 60 * GRACE_SECOND);
  assert_int_equal(grace_worker_start(w), 0);
  assert_int_equal(grace_worker_stop_begin(w, NULL), 0);
  assert_int_equal(grace_worker_wait(w, 5 * GRACE_SECOND), 0);
  assert_int_equal(p.ticks, 0);
  assert_int_equal(p.cleanups, 1);
  grace_worker_free(w);
  probe_destroy(&p);
}

/* A tick in progress ends early through its context, then the cleanup.
 * The tick would otherwise wait 60 s for its context, far beyond the 5 s
 * the test waits. */
static void test_stop_during_tick_cancels_it_then_cleans(void **state) {
  probe p;
  grace_worker *w;

  (void)state;
  probe_init(&p);
  p.wait_ctx = true;
  w = make(&p, 10 * MS);
  assert_int_equal(grace_worker_start(w), 0);
  await(&p, &p.started);
  assert_int_equal(grace_worker_stop_begin(w, NULL), 0);
  assert_int_equal(grace_worker_wait(w, 5 * GRACE_SECOND), 0);
  assert_int_equal(p.ticks, 1);
  assert_int_equal(p.tick_ctx_err[0], GRACE_ECANCELED);
  assert_int_equal(p.cleanups, 1);
  assert_true(p.cleanup_start >= p.tick_end[0]);
  grace_worker_free(w);
  probe_destroy(&p);
}

/* A tick that ignores its context is waited for before the cleanup. */
static void test_stop_waits_for_stubborn_tick(void **state) {
  probe p;
  grace_worker *w;

  (void)state;
  probe_init(&p);
  p.hold = true; /* tick 0 runs until the test releases it */
  w = make(&p, 10 * MS);
  assert_int_equal(grace_worker_start(w), 0);
  await(&p, &p.started);
  assert_int_equal(grace_worker_stop_begin(w, NULL), 0);
  /* Not done while the tick runs. */
  assert_int_equal(grace_worker_wait(w, 50 * MS), GRACE_ETIMEDOUT);
  assert_int_equal(p.cleanups, 0);
  release(&p);
  assert_int_equal(grace_worker_wait(w, 5 * GRACE_SECOND), 0);
  assert_int_equal(p.ticks, 1);
  assert_int_equal(p.cleanups, 1);
  assert_true(p.cleanup_start >= p.tick_end[0]);
  assert_int_equal(p.cleanup_ctx_err_at_start, 0);
  grace_worker_free(w);
  probe_destroy(&p);
}

/* A worker of |opts| on manual clock |fc|, started. */
static grace_worker *start_opts_on(grace_worker_options *opts, probe *p,
                                   fake_clock *fc) {
  grace_worker *w;
  fc_init(fc);
  p->fc = fc;
  assert_int_equal(grace_worker_new(opts, &w), 0);
  grace__clock c = fc_clock(fc);
  grace__worker_set_clock(w, &c);
  fc->wake = fc_wake_worker;
  fc->target = w;
  fc->finished = fc_worker_done;
  fc->finished_arg = w;
  assert_int_equal(grace_worker_start(w), 0);
  return w;
}

static void test_cleanup_timeout_expires(void **state) {
  grace_worker_options opts;
  fake_clock fc;
  grace_worker *w;
  probe p;
  int status = 0;

  (void)state;
  probe_init(&p);
  p.cleanup_wait = -1; /* wait for the context, however long */
  grace_worker_options_init(&opts);
  opts.interval = GRACE_SECOND;
  opts.task = task;
  opts.cleanup = cleanup;
  opts.cleanup_timeout = 60 * MS;
  opts.on_done = on_done;
  opts.data = &p;
  w = start_opts_on(&opts, &p, &fc);
  assert_int_equal(grace_worker_stop_begin(w, NULL), 0);
  await(&p, &p.in_cleanup);
  /* Not a nanosecond before its timeout (the cleanup waits on its
   * context: only the clock's timer can end it; the clock holds a
   * reference on the contexts it made, so looking at it is safe)... */
  fc_run(&fc, 60 * MS - 1);
  assert_int_equal(grace_ctx_err(p.cleanup_ctx), 0);
  assert_int_equal(grace_worker_wait(w, 0), GRACE_ETIMEDOUT);
  /* ...and at it. */
  fc_run(&fc, 1);
  assert_int_equal(grace_ctx_err(p.cleanup_ctx), GRACE_ETIMEDOUT);
  assert_int_equal(grace_worker_wait(w, 5 * GRACE_SECOND), 0);
  assert_int_equal(p.cleanup_end - p.cleanup_start, 60 * MS);
  assert_int_equal(p.cleanup_rv, GRACE_ETIMEDOUT);
  assert_int_equal(p.done_status, GRACE_ETIMEDOUT);
  assert_int_equal(grace_worker_status(w, &status), 0);
  assert_int_equal(status, GRACE_ETIMEDOUT);
  grace_worker_free(w);
  fc_destroy(&fc);
  probe_destroy(&p);
}

/* The stop context's deadline, if earlier, wins over cleanup_timeout. */
static void test_stop_ctx_deadline_bounds_cleanup(void **state) {
  grace_worker_options opts;
  fake_clock fc;
  grace_worker *w;
  grace_ctx *ctx;
  probe p;

  (void)state;
  probe_init(&p);
  p.cleanup_wait = -1;
  grace_worker_options_init(&opts);
  opts.interval = GRACE_SECOND;
  opts.task = task;
  opts.cleanup = cleanup;
  opts.cleanup_timeout = 5 * GRACE_SECOND;
  opts.data = &p;
  w = start_opts_on(&opts, &p, &fc);
  /* A stop context with a 60 ms deadline on the same clock. */
  assert_int_equal(fc_with_timeout(&fc, grace_ctx_background(), 60 * MS, &ctx),
                   0);
  assert_int_equal(grace_worker_stop_begin(w, ctx), 0);
  /* The worker holds its own reference: releasing ours is fine. */
  grace_ctx_unref(ctx);
  await(&p, &p.in_cleanup);
  fc_run(&fc, 60 * MS - 1);
  assert_int_equal(grace_ctx_err(p.cleanup_ctx), 0);
  assert_int_equal(grace_worker_wait(w, 0), GRACE_ETIMEDOUT);
  fc_run(&fc, 1);
  assert_int_equal(grace_ctx_err(p.cleanup_ctx), GRACE_ETIMEDOUT);
  assert_int_equal(grace_worker_wait(w, 5 * GRACE_SECOND), 0);
  assert_int_equal(p.cleanup_end - p.cleanup_start, 60 * MS);
  assert_int_equal(p.cleanup_rv, GRACE_ETIMEDOUT);
  grace_worker_free(w);
  fc_destroy(&fc);

  /* Cancelling the stop context cancels the cleanup's. */
  probe_destroy(&p);
  probe_init(&p);
  p.cleanup_wait = -1;
  assert_int_equal(grace_worker_new(&opts, &w), 0);
  assert_int_equal(grace_worker_start(w), 0);
  assert_int_equal(grace_ctx_with_cancel(grace_ctx_background(), &ctx), 0);
  assert_int_equal(grace_worker_stop_begin(w, ctx), 0);
  await(&p, &p.in_cleanup);
  grace_ctx_cancel(ctx);
  assert_int_equal(grace_worker_wait(w, 5 * GRACE_SECOND), 0);
  assert_int_equal(p.cleanup_rv, GRACE_ECANCELED);
  grace_ctx_unref(ctx);
  grace_worker_free(w);
  probe_destroy(&p);
}

/* The cleanup waits for its context forever: only force can end it. */
static void test_force_cuts_cleanup(void **state) {
  probe p;
  grace_worker *w;
  int status = 0;

  (void)state;
  probe_init(&p);
  p.cleanup_wait = -1;
  w = make(&p, GRACE_SECOND);
  assert_int_equal(grace_worker_start(w), 0);
  assert_int_equal(grace_worker_stop_begin(w, NULL), 0);
  await(&p, &p.in_cleanup);
  assert_int_equal(grace_worker_wait(w, 30 * MS), GRACE_ETIMEDOUT);
  /* The cleanup is still running when force returns. */
  assert_int_equal(grace_worker_force(w), GRACE_EBUSY);
  assert_int_equal(grace_worker_wait(w, 5 * GRACE_SECOND), 0);
  assert_int_equal(grace_worker_status(w, &status), 0);
  assert_int_equal(status, GRACE_ECANCELED);
  assert_int_equal(p.done_status, GRACE_ECANCELED);
  grace_worker_free(w);
  probe_destroy(&p);
}

/* Forced before the cleanup started: it starts with a done context. */
static void test_force_before_cleanup_starts(void **state) {
  probe p;
  grace_worker *w;

  (void)state;
  probe_init(&p);
  p.hold = true; /* tick 0 runs until the test releases it */
  w = make(&p, 5 * MS);
  assert_int_equal(grace_worker_start(w), 0);
  await(&p, &p.started);
  /* force alone begins the stop too. */
  assert_int_equal(grace_worker_force(w), GRACE_EBUSY);
  release(&p);
  assert_int_equal(grace_worker_wait(w, 5 * GRACE_SECOND), 0);
  assert_int_equal(p.ticks, 1);
  assert_int_equal(p.tick_ctx_err[0], GRACE_ECANCELED);
  assert_int_equal(p.cleanups, 1);
  assert_int_equal(p.cleanup_ctx_err_at_start, GRACE_ECANCELED);
  grace_worker_free(w);
  probe_destroy(&p);
}

static void test_done_fd_readable_exactly_when_done(void **state) {
  probe p;
  grace_worker *w;
  struct pollfd pfd;
  int fd;

  (void)state;
  probe_init(&p);
  p.cleanup_wait = -1;
  w = make(&p, 10 * MS);
  fd = grace_worker_done_fd(w);
  assert_true(fd >= 0);
  assert_int_equal(fd_readable(fd), 0);
  assert_int_equal(grace_worker_start(w), 0);
  await(&p, &p.started);
  assert_int_equal(fd_readable(fd), 0);
  assert_int_equal(grace_worker_stop_begin(w, NULL), 0);
  await(&p, &p.in_cleanup);
  assert_int_equal(fd_readable(fd), 0);
  grace_worker_force(w);
  /* An event loop's view: poll blocks until the worker is done. */
  pfd.fd = fd;
  pfd.events = POLLIN;
  assert_int_equal(poll(&pfd, 1, 5000), 1);
  assert_true(pfd.revents & POLLIN);
  /* Done means on_done has returned, so the state agrees with the fd. */
  assert_int_equal(grace_worker_wait(w, 0), 0);
  assert_int_equal(p.dones, 1);
  /* In on_done the worker was not done yet. */
  assert_int_equal(p.done_fd_readable_in_cb, 0);
  assert_int_equal(p.status_in_cb, GRACE_EBUSY);
  /* It stays readable. */
  assert_int_equal(fd_readable(fd), 1);
  assert_int_equal(fd_readable(fd), 1);
  grace_worker_free(w);
  probe_destroy(&p);
}

static void test_stop_from_inside_the_task(void **state) {
  probe p;
  grace_worker *w;

  (void)state;
  probe_init(&p);
  p.stop_from_task = true;
  p.check_thread = true;
  w = make(&p, 5 * MS);
  assert_int_equal(grace_worker_start(w), 0);
  assert_int_equal(grace_worker_wait(w, 5 * GRACE_SECOND), 0);
  assert_int_equal(p.stop_rv, 0);
  assert_int_equal(p.ticks, 1);
  assert_int_equal(p.tick_ctx_err[0], GRACE_ECANCELED);
  /* Waiting on itself would never end. */
  assert_int_equal(p.wait_rv, GRACE_ESTATE);
  assert_int_equal(p.cleanups, 1);
  grace_worker_free(w);
  probe_destroy(&p);
}

static void test_thread_name_and_signal_mask(void **state) {
  grace_worker_options opts;
  grace_worker *w;
  probe p;

  (void)state;
  probe_init(&p);
  p.check_thread = true;
  p.stop_after = 1;
  grace_worker_options_init(&opts);
  opts.interval = 5 * MS;
  opts.task = task;
  opts.data = &p;
  opts.name = "a-name-longer-than-fifteen";
  assert_int_equal(grace_worker_new(&opts, &w), 0);
  assert_int_equal(grace_worker_start(w), 0);
  assert_int_equal(grace_worker_wait(w, 5 * GRACE_SECOND), 0);
  assert_string_equal(p.thread_name, "a-name-longer-t");
  assert_true(p.sigint_blocked);
  assert_true(p.sigterm_blocked);
  grace_worker_free(w);

  /* The default name, and the creator's mask is left as it was. */
  {
    sigset_t set;

    pthread_sigmask(SIG_SETMASK, NULL, &set);
    assert_int_equal(sigismember(&set, SIGINT), 0);
  }
  p.ticks = 0;
  opts.name = NULL;
  assert_int_equal(grace_worker_new(&opts, &w), 0);
  assert_int_equal(grace_worker_start(w), 0);
  assert_int_equal(grace_worker_wait(w, 5 * GRACE_SECOND), 0);
  assert_string_equal(p.thread_name, "grace-worker");
  grace_worker_free(w);
  probe_destroy(&p);
}

static void test_free_in_every_state(void **state) {
  probe p;
  grace_worker *w;
  int64_t t0;

  (void)state;
  /* Never started. */
  probe_init(&p);
  w = make(&p, GRACE_SECOND);
  grace_worker_free(w);
  assert_int_equal(p.cleanups, 0);
  assert_int_equal(p.dones, 0);
  grace_worker_free(NULL);

  /* Running and idle: free stops it, runs the cleanup, joins; a worker
   * that slept out its 60 s interval would miss the 5 s by 55 s. */
  w = make(&p, 60 * GRACE_SECOND);
  assert_int_equal(grace_worker_start(w), 0);
  t0 = grace_now();
  grace_worker_free(w);
  assert_true(grace_now() - t0 < 5 * GRACE_SECOND);
  assert_int_equal(p.cleanups, 1);
  assert_int_equal(p.dones, 1);
  /* Forced: the cleanup started with a done context. */
  assert_int_equal(p.cleanup_ctx_err_at_start, GRACE_ECANCELED);

  /* Running a tick that goes on after its context is cancelled: free
   * waits for it.  (The tick cannot end before the stop, so exactly one
   * tick runs whenever the test thread gets to call free.) */
  probe_destroy(&p);
  probe_init(&p);
  p.wait_ctx = true;
  p.linger = 80 * MS;
  w = make(&p, 5 * MS);
  assert_int_equal(grace_worker_start(w), 0);
  await(&p, &p.started);
  grace_worker_free(w);
  assert_int_equal(p.ticks, 1);
  assert_int_equal(p.dones, 1);
  probe_destroy(&p);
}

static void test_api_contracts(void **state) {
  grace_worker_options opts;
  static char sentinel;
  grace_worker *w = NULL, *keep = (grace_worker *)(void *)&sentinel;
  unsigned char bigger[sizeof(grace_worker_options) + 16];
  int status = 42;

  (void)state;
  grace_worker_options_init(&opts);
  assert_int_equal(opts.size, sizeof(opts));
  assert_int_equal(opts.interval, 0);
  assert_null(opts.task);
  opts.interval = GRACE_SECOND;
  w = keep;
  /* Bad options leave *out untouched. */
  assert_int_equal(grace_worker_new(&opts, &w), GRACE_EINVAL); /* no task */
  assert_ptr_equal(w, keep);
  opts.task = task;
  opts.interval = 0;
  assert_int_equal(grace_worker_new(&opts, &w), GRACE_EINVAL);
  opts.interval = -GRACE_SECOND;
  assert_int_equal(grace_worker_new(&opts, &w), GRACE_EINVAL);
  opts.interval = GRACE_SECOND;
  assert_int_equal(grace_worker_new(NULL, &w), GRACE_EINVAL);
  assert_int_equal(grace_worker_new(&opts, NULL), GRACE_EINVAL);
  opts.size = sizeof(opts) - 1;
  assert_int_equal(grace_worker_new(&opts, &w), GRACE_EINVAL);
  assert_ptr_equal(w, keep);

  /* A newer caller's larger struct: fine while the unknown tail is zero. */
  memset(bigger, 0, sizeof(bigger));
  opts.size = sizeof(bigger);
  memcpy(bigger, &opts, sizeof(opts));
  assert_int_equal(
      grace_worker_new((const grace_worker_options *)(void *)bigger, &w), 0);
  grace_worker_free(w);
  bigger[sizeof(bigger) - 1] = 1;
  w = keep;
  assert_int_equal(
      grace_worker_new((const grace_worker_options *)(void *)bigger, &w),
      GRACE_EINVAL);
  assert_ptr_equal(w, keep);

  /* State errors. */
  opts.size = sizeof(opts);
  assert_int_equal(grace_worker_new(&opts, &w), 0);
  assert_int_equal(grace_worker_stop_begin(w, NULL), GRACE_ESTATE);
  assert_int_equal(grace_worker_force(w), GRACE_ESTATE);
  assert_int_equal(grace_worker_wait(w, 0), GRACE_ESTATE);
  assert_int_equal(grace_worker_status(w, &status), GRACE_EBUSY);
  assert_int_equal(status, 42);
  assert_true(grace_worker_done_fd(w) >= 0);
  grace_worker_free(w);

  assert_int_equal(grace_worker_start(NULL), GRACE_EINVAL);
  assert_int_equal(grace_worker_stop_begin(NULL, NULL), GRACE_EINVAL);
  assert_int_equal(grace_worker_force(NULL), GRACE_EINVAL);
  assert_int_equal(grace_worker_wait(NULL, 0), GRACE_EINVAL);
  assert_int_equal(grace_worker_done_fd(NULL), GRACE_EINVAL);
  assert_int_equal(grace_worker_status(NULL, &status), GRACE_EINVAL);
}

static void test_start_twice_and_status_while_running(void **state) {
  probe p;
  grace_worker *w;
  int status = 42;

  (void)state;
  probe_init(&p);
  w = make(&p, 10 * GRACE_SECOND);
  assert_int_equal(grace_worker_start(w), 0);
  assert_int_equal(grace_worker_start(w), GRACE_ESTATE);
  assert_int_equal(grace_worker_status(w, &status), GRACE_EBUSY);
  assert_int_equal(status, 42);
  assert_int_equal(grace_worker_status(w, NULL), GRACE_EINVAL);
  assert_int_equal(grace_worker_wait(w, 0), GRACE_ETIMEDOUT);
  assert_int_equal(grace_worker_stop_begin(w, NULL), 0);
  assert_int_equal(grace_worker_stop_begin(w, NULL), 0);
  assert_int_equal(grace_worker_wait(w, -1), 0);
  assert_int_equal(grace_worker_start(w), GRACE_ESTATE);
  assert_int_equal(p.cleanups, 1);
  assert_int_equal(p.dones, 1);
  grace_worker_free(w);
  probe_destroy(&p);
}

/* Several threads wait at once; all wake when the worker is done. */
static void *waiter(void *arg) {
  grace_worker *w = arg;

  return (void *)(intptr_t)grace_worker_wait(w, 5 * GRACE_SECOND);
}

static void test_many_waiters_wake(void **state) {
  pthread_t t[4];
  probe p;
  grace_worker *w;

  (void)state;
  probe_init(&p);
  w = make(&p, 10 * GRACE_SECOND);
  assert_int_equal(grace_worker_start(w), 0);
  for (int i = 0; i < 4; i++)
    assert_int_equal(pthread_create(&t[i], NULL, waiter, w), 0);
  /* Most likely asleep in the wait by now; the test holds either way. */
  sleep_ns(20 * MS);
  assert_int_equal(grace_worker_stop_begin(w, NULL), 0);
  for (int i = 0; i < 4; i++) {
    void *rv;

    assert_int_equal(pthread_join(t[i], &rv), 0);
    assert_int_equal((int)(intptr_t)rv, 0);
  }
  grace_worker_free(w);
  probe_destroy(&p);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_interval_ticks_within_bounds),
      cmocka_unit_test(test_first_tick_one_interval_after_start),
      cmocka_unit_test(test_overrun_does_not_pile_up),
      cmocka_unit_test(test_task_returns_next_delay),
      cmocka_unit_test(test_nomore_stops_and_later_stop_is_noop),
      cmocka_unit_test(test_stop_while_idle_wakes_at_once),
      cmocka_unit_test(test_stop_during_tick_cancels_it_then_cleans),
      cmocka_unit_test(test_stop_waits_for_stubborn_tick),
      cmocka_unit_test(test_cleanup_timeout_expires),
      cmocka_unit_test(test_stop_ctx_deadline_bounds_cleanup),
      cmocka_unit_test(test_force_cuts_cleanup),
      cmocka_unit_test(test_force_before_cleanup_starts),
      cmocka_unit_test(test_done_fd_readable_exactly_when_done),
      cmocka_unit_test(test_stop_from_inside_the_task),
      cmocka_unit_test(test_thread_name_and_signal_mask),
      cmocka_unit_test(test_free_in_every_state),
      cmocka_unit_test(test_api_contracts),
      cmocka_unit_test(test_start_twice_and_status_while_running),
      cmocka_unit_test(test_many_waiters_wake),
  };
  return cmocka_run_group_tests_name("worker", tests, NULL, NULL);
}
