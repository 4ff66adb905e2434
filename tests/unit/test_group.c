/*
 * Unit tests of the lifecycle group (src/group/): the phases and their
 * order, zero-lag completion, escalation at the deadline, hooks, the
 * shutdown delay, the deadline from the environment, the metrics text, the
 * HTTP and gRPC adapters against real servers on 127.0.0.1 (the gRPC calls
 * made by grace's own client), and the worker adapter with a tick in
 * progress.
 *
 * Parts and hooks here are small real implementations of the part shape:
 * they record what the group asked of them and when.  Time is a manual
 * clock (fake_clock.h) installed in the group: a part that "drains 50 ms
 * after its begin" reports from a timer of that clock, which runs when the
 * test moves the clock past it, and the group's deadline and shutdown
 * delay expire when the test moves the clock to them.  So each test says
 * exactly what happens before and at a given moment ("not forced at
 * 299.999999 ms, forced at 300 ms") whatever the load on the machine.  The
 * adapters' tests run real servers and a real worker on real threads;
 * only the group's clock is manual there, and what they wait for is an
 * event (a request in flight, a cleanup begun), never a duration.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <regex.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "grace/context.h"
#include "grace/group.h"
#include "grace/grpc.h"
#include "grace/grpc_client.h"
#include "grace/http.h"
#include "grace/log.h"
#include "grace/worker.h"
#include "group/group_int.h"
#include "health.pb-c.h"

#include "../../examples/greeter_handler.h"
#include "../../examples/sleep_handler.h"
#include "fake_clock.h"

#define MS GRACE_MILLISECOND

/* The clock of the test running now (one at a time). */
static fake_clock fc;

/* The time the events are stamped with: the group's clock. */
static int64_t now(void) { return fc_now(&fc); }

/* Time on the test's clock since it started. */
static int64_t since_start(int64_t t) { return t - FC_START; }

/* ---- a record of what happened, in order ---------------------------------- */

#define MAX_EVENTS 64

static pthread_mutex_t ev_lock = PTHREAD_MUTEX_INITIALIZER;
static struct {
  char what[48];
  int64_t t;
} events[MAX_EVENTS];
static int nevents;

static void record(const char *fmt, ...) GRACE_PRINTF(1, 2);
static void record(const char *fmt, ...) {
  va_list ap;
  pthread_mutex_lock(&ev_lock);
  if (nevents < MAX_EVENTS) {
    va_start(ap, fmt);
    vsnprintf(events[nevents].what, sizeof(events[nevents].what), fmt, ap);
    va_end(ap);
    events[nevents].t = now();
    nevents++;
  }
  pthread_mutex_unlock(&ev_lock);
}

static void events_reset(void) {
  pthread_mutex_lock(&ev_lock);
  nevents = 0;
  pthread_mutex_unlock(&ev_lock);
}

/* The index of event |what|, or -1. */
static int event_index(const char *what) {
  int found = -1;
  pthread_mutex_lock(&ev_lock);
  for (int i = 0; i < nevents && found < 0; i++)
    if (strcmp(events[i].what, what) == 0)
      found = i;
  pthread_mutex_unlock(&ev_lock);
  return found;
}

static int64_t event_time(const char *what) {
  int i = event_index(what);
  assert_true(i >= 0);
  pthread_mutex_lock(&ev_lock);
  int64_t t = events[i].t;
  pthread_mutex_unlock(&ev_lock);
  return t;
}

static void dump_events(void) {
  pthread_mutex_lock(&ev_lock);
  for (int i = 0; i < nevents; i++)
    fprintf(stderr, "  event %d: %s\n", i, events[i].what);
  pthread_mutex_unlock(&ev_lock);
}

/* Asserts that the events in the NULL-terminated list happened in order. */
static void assert_events_in_order(const char *const *list) {
  int prev = -1;
  for (; *list != NULL; list++) {
    int i = event_index(*list);
    if (i <= prev) {
      fprintf(stderr, "event %s at %d, expected after %d\n", *list, i, prev);
      dump_events();
      fail();
    }
    prev = i;
  }
}

/* ---- the log ------------------------------------------------------------- */

static int cap_fds[2] = {-1, -1};
static int cap_prev = 2;
static char cap_text[65536];

static void capture_start(void) {
  assert_int_equal(pipe2(cap_fds, O_CLOEXEC | O_NONBLOCK), 0);
  cap_prev = grace_log_set_fd(cap_fds[1]);
}

static const char *capture_end(void) {
  size_t len = 0;
  ssize_t n;
  grace_log_set_fd(cap_prev);
  close(cap_fds[1]);
  while (len < sizeof(cap_text) - 1 &&
         (n = read(cap_fds[0], cap_text + len, sizeof(cap_text) - 1 - len)) >
             0)
    len += (size_t)n;
  cap_text[len] = '\0';
  close(cap_fds[0]);
  return cap_text;
}

/* Asserts that every string of the NULL-terminated list appears in |log|,
 * each after the previous one. */
static void assert_log_in_order(const char *log, const char *const *list) {
  const char *at = log;
  for (; *list != NULL; list++) {
    const char *p = strstr(at, *list);
    if (p == NULL) {
      fprintf(stderr, "log line with \"%s\" missing (or out of order) in:\n%s",
              *list, log);
      fail();
    }
    at = p + strlen(*list);
  }
}

/* ---- parts ----------------------------------------------------------------- */

typedef struct fake {
  const char *name;
  /* < 0: never; 0: inside begin; > 0: that long after begin, on the
   * group's clock */
  grace_duration drain_after;
  grace_duration stop_after; /* > 0: stops on its own that long after start */
  int start_err, begin_err, done_err;
  int cut; /* what force says it cut */
  grace_group_stats stats;
  bool with_stats;
  atomic_int started, begun, forced;
  grace_group_part *part;
} fake;

/* A timer of the clock: the part reports, as its own thread would. */
static void fake_report(void *arg) {
  fake *f = arg;
  record("done:%s", f->name);
  grace_group_part_done(f->part, f->done_err);
}

static int fake_start(grace_group_part *part, void *data) {
  fake *f = data;
  assert_ptr_equal(part, f->part);
  atomic_fetch_add(&f->started, 1);
  record("start:%s", f->name);
  if (f->start_err == 0 && f->stop_after > 0)
    fc_after(&fc, f->stop_after, fake_report, f);
  return f->start_err;
}

static int fake_begin(grace_group_part *part, grace_ctx *deadline,
                      void *data) {
  fake *f = data;
  assert_ptr_equal(part, f->part);
  assert_non_null(deadline);
  atomic_fetch_add(&f->begun, 1);
  record("begin:%s", f->name);
  if (f->begin_err != 0)
    return f->begin_err;
  if (f->drain_after == 0) {
    record("done:%s", f->name);
    grace_group_part_done(part, f->done_err);
  } else if (f->drain_after > 0) {
    fc_after(&fc, f->drain_after, fake_report, f);
  }
  return 0;
}

static int fake_force(grace_group_part *part, char *what, size_t len,
                      void *data) {
  fake *f = data;
  (void)part;
  atomic_fetch_add(&f->forced, 1);
  record("force:%s", f->name);
  if (f->cut > 0)
    snprintf(what, len, "%d tasks cut", f->cut);
  return f->cut;
}

static void fake_stats(grace_group_part *part, grace_group_stats *out,
                       void *data) {
  fake *f = data;
  (void)part;
  *out = f->stats;
}

static void fake_add(grace_group *g, fake *f, const char *name) {
  grace_group_part_ops ops = {
      .start = fake_start,
      .begin = fake_begin,
      .force = fake_force,
      .stats = f->with_stats ? fake_stats : NULL,
  };
  f->name = name;
  assert_int_equal(grace_group_add(g, name, &ops, f, &f->part), 0);
}

/* ---- hooks ---------------------------------------------------------------- */

typedef struct fake_hook {
  const char *name;
  /* < 0: never done; 0: synchronous; > 0: that long after it is called,
   * on the group's clock */
  grace_duration after;
  int err;
  atomic_int calls;
  int deadline_err; /* grace_ctx_err(deadline) when it was called */
  grace_group_hook *hook;
} fake_hook;

static void hook_report(void *arg) {
  fake_hook *h = arg;
  record("hookdone:%s", h->name);
  grace_group_hook_done(h->hook, h->err);
}

static int hook_fn(grace_group_hook *hook, grace_ctx *deadline, void *data) {
  fake_hook *h = data;
  atomic_fetch_add(&h->calls, 1);
  h->deadline_err = grace_ctx_err(deadline);
  h->hook = hook;
  record("hook:%s", h->name);
  if (h->after == 0) {
    record("hookdone:%s", h->name);
    return h->err;
  }
  if (h->after > 0)
    fc_after(&fc, h->after, hook_report, h);
  return GRACE_GROUP_PENDING;
}

static void hook_add(grace_group *g, grace_group_when when, fake_hook *h,
                     const char *name) {
  h->name = name;
  assert_int_equal(grace_group_add_hook(g, when, name, hook_fn, h), 0);
}

/* ---- running the group ---------------------------------------------------- */

static void fc_wake_group(void *target) { grace__group_wake(target); }

/* A group whose clock is the test's (started afresh), with the given
 * delay and deadline. */
static grace_group *new_group(grace_duration delay, grace_duration timeout) {
  grace_group_options opts;
  grace_group *g = NULL;
  grace_group_options_init(&opts);
  opts.shutdown_delay = delay;
  opts.shutdown_timeout = timeout;
  assert_int_equal(grace_group_new(&opts, &g), 0);
  fc_destroy(&fc);
  fc_init(&fc);
  grace__clock c = fc_clock(&fc);
  grace__group_set_clock(g, &c);
  fc.wake = fc_wake_group;
  fc.target = g;
  return g;
}

/* A stop context that is already cancelled: run shuts down at once. */
static grace_ctx *cancelled_stop(void) {
  grace_ctx *stop;
  assert_int_equal(grace_ctx_with_cancel(grace_ctx_background(), &stop), 0);
  grace_ctx_cancel(stop);
  return stop;
}

typedef struct runner {
  grace_group *g;
  grace_ctx *stop;
  grace_group_result res;
  int rv;
  int64_t t_end; /* on the group's clock */
  atomic_bool done;
  pthread_t thread;
} runner;

static void *run_main(void *arg) {
  runner *r = arg;
  r->rv = grace_group_run(r->g, r->stop, &r->res);
  r->t_end = now();
  atomic_store(&r->done, true);
  return NULL;
}

static bool runner_done(void *arg) {
  runner *r = arg;
  return atomic_load(&r->done);
}

/* Runs |g| on a thread of its own, with a stop context the test cancels;
 * the clock's settling knows when it has returned. */
static void runner_start(runner *r, grace_group *g) {
  memset(r, 0, sizeof(*r));
  r->g = g;
  atomic_init(&r->done, false);
  fc.finished = runner_done;
  fc.finished_arg = r;
  assert_int_equal(grace_ctx_with_cancel(grace_ctx_background(), &r->stop),
                   0);
  assert_int_equal(pthread_create(&r->thread, NULL, run_main, r), 0);
}

/* As runner_start, then the stop, and returns once the group has begun
 * its shutdown and sleeps (or has returned). */
static void runner_start_stopped(runner *r, grace_group *g) {
  runner_start(r, g);
  grace_ctx_cancel(r->stop);
  fc_poke(&fc);
}

static void runner_join(runner *r) {
  pthread_join(r->thread, NULL);
  grace_ctx_unref(r->stop);
}

/* After the clock moved to the moment run must end: it has ended (the
 * clock's settling waited for that, or for the group to sleep again). */
static void runner_ended(runner *r) {
  if (!atomic_load(&r->done)) {
    dump_events();
    fail_msg("grace_group_run has not returned");
  }
  runner_join(r);
}

/* Real time, for the waits below: bounded waits for events, never
 * durations a test depends on. */
static void sleep_for(grace_duration d) {
  struct timespec ts = {(time_t)(d / GRACE_SECOND), (long)(d % GRACE_SECOND)};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
    ;
}

static void wait_ready(grace_group *g) {
  int64_t until = grace_now() + 5 * GRACE_SECOND;
  while (!grace_group_ready(g)) {
    assert_true(grace_now() < until);
    sleep_for(MS);
  }
}

/* ---- tests: phases -------------------------------------------------------- */

static void test_phases_run_in_order(void **state) {
  (void)state;
  fake a = {.drain_after = 100 * MS}, b = {.drain_after = 0};
  fake_hook pre1 = {.after = 0}, pre2 = {.after = 50 * MS}, post = {0};
  runner r;

  events_reset();
  grace_group *g = new_group(0, 5 * GRACE_SECOND);
  fake_add(g, &a, "a");
  fake_add(g, &b, "b");
  hook_add(g, GRACE_GROUP_PRE_DRAIN, &pre1, "pre1");
  hook_add(g, GRACE_GROUP_POST_DRAIN, &post, "post");
  hook_add(g, GRACE_GROUP_PRE_DRAIN, &pre2, "pre2");

  capture_start();
  runner_start_stopped(&r, g);
  /* Awaiting pre2: no part begun. */
  assert_int_equal(a.begun + b.begun, 0);
  fc_advance(&fc, 50 * MS);
  /* pre2 done: both parts begun, b drained, a draining. */
  assert_false(atomic_load(&r.done));
  assert_int_equal(a.begun + b.begun, 2);
  assert_int_equal(grace_group_part_get_state(a.part),
                   GRACE_GROUP_PART_DRAINING);
  assert_int_equal(event_index("hook:post"), -1);
  fc_advance(&fc, 100 * MS);
  runner_ended(&r);
  const char *log = capture_end();
  grace_group_result res = r.res;

  assert_int_equal(r.rv, 0);
  assert_int_equal(res.status, 0);
  assert_int_equal(res.cause, GRACE_ECANCELED);
  assert_false(res.forced);
  assert_string_equal(res.cut, "");
  assert_int_equal(res.parts_forced + res.parts_failed + res.hooks_cut, 0);
  /* On the group's clock: the drain from the begins (50 ms) to a's report
   * (150 ms), the whole shutdown from the stop (0) to the end. */
  assert_int_equal(res.drain, 100 * MS);
  assert_int_equal(res.total, 150 * MS);
  assert_int_equal(res.phase[GRACE_GROUP_DRAIN], 150 * MS);
  assert_int_equal(a.started, 1);
  assert_int_equal(a.begun, 1);
  assert_int_equal(a.forced + b.forced, 0);
  assert_int_equal(grace_group_part_get_state(a.part),
                   GRACE_GROUP_PART_DRAINED);
  assert_int_equal(grace_group_part_get_state(b.part),
                   GRACE_GROUP_PART_DRAINED);
  assert_int_equal(grace_group_phase_now(g), GRACE_GROUP_DRAIN);
  assert_false(grace_group_ready(g));
  /* Starts in order; pre-drain hooks in registration order, each awaited;
   * parts begun together; post-drain hooks once every part drained. */
  assert_events_in_order((const char *const[]){
      "start:a", "start:b", "hook:pre1", "hookdone:pre1", "hook:pre2",
      "hookdone:pre2", "begin:a", "begin:b", "done:b", "done:a", "hook:post",
      NULL});
  assert_log_in_order(
      log,
      (const char *const[]){
          "Shutdown started (context canceled): deadline 5s, delay 0s",
          "Shutdown phase 1 (not ready) took ",
          "Shutdown phase 2 (delay 0s) took ",
          "Pre-drain hook \"pre1\" done in ",
          "Pre-drain hook \"pre2\" done in 50ms",
          "Part \"a\" draining (began in ", "Part \"b\" draining (began in ",
          "Part \"b\" drained in 0s", "Part \"a\" drained in 100ms",
          "Post-drain hook \"post\" done in ",
          "Shutdown phase 3 (drain) took 150ms",
          "Drain report: result=clean duration=100ms", NULL});
  assert_null(strstr(log, "phase 4"));

  /* A second run is refused; so is adding once run. */
  grace_ctx *stop = cancelled_stop();
  assert_int_equal(grace_group_run(g, stop, NULL), GRACE_ESTATE);
  fake late = {0};
  grace_group_part_ops ops = {.begin = fake_begin, .force = fake_force};
  assert_int_equal(grace_group_add(g, "late", &ops, &late, NULL),
                   GRACE_ESTATE);
  assert_int_equal(
      grace_group_add_hook(g, GRACE_GROUP_PRE_DRAIN, "late", hook_fn, &pre1),
      GRACE_ESTATE);
  grace_group_free(g);
  grace_ctx_unref(stop);
}

/* What the real clock's group does each time it is about to sleep. */
static atomic_uint real_idles;
static void count_idle(void *data) {
  (void)data;
  atomic_fetch_add(&real_idles, 1);
}

/* Waits (bounded) until the group has gone to sleep |n| times. */
static void wait_idles(unsigned n) {
  int64_t until = grace_now() + 5 * GRACE_SECOND;
  while (atomic_load(&real_idles) < n) {
    assert_true(grace_now() < until);
    sleep_for(MS);
  }
}

/*
 * The drain phase ends the moment the last part reports, not at a tick,
 * and the group does not wake while it waits.  On the real clock (this is
 * the production wait), with the group's sleeps counted: while both parts
 * drain the group sleeps once and stays asleep, through a 600 ms window
 * (a group that polled every 500 ms or less would wake in it); each
 * report wakes it once; after the last one it returns without sleeping
 * again.  Nothing here depends on how long anything takes.
 */
static void test_drain_completes_with_zero_lag(void **state) {
  (void)state;
  fake a = {.drain_after = -1}, b = {.drain_after = -1};
  runner r;

  events_reset();
  grace_group *g = new_group(0, 10 * GRACE_SECOND);
  grace__clock real = {.idle = count_idle}; /* grace_now, real timeouts */
  grace__group_set_clock(g, &real);
  atomic_store(&real_idles, 0);
  fake_add(g, &a, "a");
  fake_add(g, &b, "b");
  capture_start();
  runner_start(&r, g);
  wait_idles(1); /* waiting for the stop */
  grace_ctx_cancel(r.stop);
  wait_idles(2); /* both parts begun, draining */
  assert_int_equal(a.begun + b.begun, 2);
  sleep_for(600 * MS);
  assert_int_equal(atomic_load(&real_idles), 2);
  grace_group_part_done(b.part, 0);
  wait_idles(3);
  assert_false(atomic_load(&r.done));
  grace_group_part_done(a.part, 0);
  runner_join(&r);
  capture_end();

  assert_int_equal(r.rv, 0);
  assert_int_equal(atomic_load(&real_idles), 3);
  assert_true(r.res.drain >= 600 * MS);
  grace_group_free(g);
}

static void test_deadline_forces_what_is_left(void **state) {
  (void)state;
  fake good = {.drain_after = 50 * MS}, stuck = {.drain_after = -1, .cut = 3};
  fake_hook post = {.after = 0};
  runner r;

  events_reset();
  grace_group *g = new_group(0, 300 * MS);
  fake_add(g, &good, "good");
  fake_add(g, &stuck, "stuck");
  hook_add(g, GRACE_GROUP_POST_DRAIN, &post, "post");
  capture_start();
  runner_start_stopped(&r, g);
  fc_advance(&fc, 50 * MS);
  assert_int_equal(grace_group_part_get_state(good.part),
                   GRACE_GROUP_PART_DRAINED);
  /* Not forced a nanosecond before the deadline... */
  fc_advance(&fc, 250 * MS - 1);
  assert_false(atomic_load(&r.done));
  assert_int_equal(stuck.forced, 0);
  assert_int_equal(grace_group_phase_now(g), GRACE_GROUP_DRAIN);
  /* ...and forced at it. */
  fc_advance(&fc, 1);
  runner_ended(&r);
  const char *log = capture_end();
  grace_group_result res = r.res;

  assert_int_equal(r.rv, GRACE_ETIMEDOUT);
  assert_int_equal(res.status, GRACE_ETIMEDOUT);
  assert_true(res.forced);
  assert_int_equal(res.parts_forced, 1);
  assert_string_equal(res.cut, "stuck (3 tasks cut)");
  assert_int_equal(res.requests_cut, 3);
  assert_int_equal(good.forced, 0);
  assert_int_equal(stuck.forced, 1);
  assert_int_equal(grace_group_part_get_state(good.part),
                   GRACE_GROUP_PART_DRAINED);
  assert_int_equal(grace_group_part_get_state(stuck.part),
                   GRACE_GROUP_PART_FORCED);
  assert_int_equal(grace_group_phase_now(g), GRACE_GROUP_FORCE);
  /* Forced at the deadline, not later. */
  assert_int_equal(since_start(event_time("force:stuck")), 300 * MS);
  assert_int_equal(res.total, 300 * MS);
  assert_int_equal(since_start(r.t_end), 300 * MS);
  /* The post-drain hook still runs, with the deadline already done. */
  assert_int_equal(post.calls, 1);
  assert_int_equal(post.deadline_err, GRACE_ETIMEDOUT);
  assert_events_in_order(
      (const char *const[]){"done:good", "force:stuck", "hook:post", NULL});
  assert_log_in_order(
      log,
      (const char *const[]){
          "Part \"good\" drained in 50ms",
          "Shutdown phase 3 (drain) cut short by the deadline after "
          "300ms",
          "Part \"stuck\" forced in ", ": 3 tasks cut",
          "Post-drain hook \"post\" done in ", "Shutdown phase 4 (force) took ",
          "Drain report: result=forced duration=300ms",
          "requests_cut=3 cut=\"stuck (3 tasks cut)\"", NULL});

  /* A report after the force changes nothing. */
  grace_group_part_done(stuck.part, 0);
  assert_int_equal(grace_group_part_get_state(stuck.part),
                   GRACE_GROUP_PART_FORCED);
  grace_group_free(g);
}

static void test_hooks_are_awaited(void **state) {
  (void)state;
  fake a = {.drain_after = 0};
  fake_hook pre = {.after = 120 * MS}, post = {.after = 120 * MS};
  runner r;

  events_reset();
  grace_group *g = new_group(0, 5 * GRACE_SECOND);
  fake_add(g, &a, "a");
  hook_add(g, GRACE_GROUP_PRE_DRAIN, &pre, "pre");
  hook_add(g, GRACE_GROUP_POST_DRAIN, &post, "post");
  capture_start();
  runner_start_stopped(&r, g);
  /* The drain waits for the pre-drain hook... */
  fc_advance(&fc, 120 * MS - 1);
  assert_int_equal(a.begun, 0);
  fc_advance(&fc, 1);
  assert_int_equal(a.begun, 1);
  /* ...and the end for the post-drain one. */
  fc_advance(&fc, 120 * MS - 1);
  assert_false(atomic_load(&r.done));
  fc_advance(&fc, 1);
  runner_ended(&r);
  capture_end();

  assert_int_equal(r.rv, 0);
  assert_events_in_order((const char *const[]){
      "hook:pre", "hookdone:pre", "begin:a", "done:a", "hook:post",
      "hookdone:post", NULL});
  /* Neither wait lagged: each next step came at the moment of the report,
   * on the group's clock. */
  assert_int_equal(event_time("begin:a"), event_time("hookdone:pre"));
  assert_int_equal(r.t_end, event_time("hookdone:post"));
  assert_int_equal(r.res.phase[GRACE_GROUP_DRAIN], 240 * MS);
  grace_group_free(g);
}

static void test_hook_error_is_reported(void **state) {
  (void)state;
  fake a = {.drain_after = 0};
  fake_hook pre = {.after = 0, .err = GRACE_EINVAL},
            post = {.after = 30 * MS, .err = -EIO};
  runner r;

  events_reset();
  grace_group *g = new_group(0, 5 * GRACE_SECOND);
  fake_add(g, &a, "a");
  hook_add(g, GRACE_GROUP_PRE_DRAIN, &pre, "pre");
  hook_add(g, GRACE_GROUP_POST_DRAIN, &post, "post");
  capture_start();
  runner_start_stopped(&r, g);
  fc_advance(&fc, 30 * MS);
  runner_ended(&r);
  const char *log = capture_end();

  /* A failed hook does not stop the shutdown, but the result says so. */
  assert_int_equal(r.rv, GRACE_EINVAL);
  assert_false(r.res.forced);
  assert_int_equal(r.res.hooks_failed, 2);
  assert_int_equal(a.begun, 1);
  assert_log_in_order(
      log, (const char *const[]){"Pre-drain hook \"pre\" failed in ",
                                 ": Invalid argument",
                                 "Post-drain hook \"post\" failed in ",
                                 "Drain report: result=failed", NULL});
  grace_group_free(g);
}

static void test_hook_given_up_at_deadline(void **state) {
  (void)state;
  fake a = {.drain_after = 0, .cut = 1};
  fake_hook stuck = {.after = -1}, next = {.after = 0}, post = {.after = -1};
  runner r;

  events_reset();
  grace_group *g = new_group(0, 200 * MS);
  fake_add(g, &a, "a");
  hook_add(g, GRACE_GROUP_PRE_DRAIN, &stuck, "stuck");
  hook_add(g, GRACE_GROUP_PRE_DRAIN, &next, "next");
  hook_add(g, GRACE_GROUP_POST_DRAIN, &post, "post");
  capture_start();
  runner_start_stopped(&r, g);
  fc_advance(&fc, 200 * MS - 1);
  assert_false(atomic_load(&r.done));
  assert_int_equal(a.forced, 0);
  fc_advance(&fc, 1);
  runner_ended(&r);
  const char *log = capture_end();
  grace_group_result res = r.res;

  assert_int_equal(r.rv, GRACE_ETIMEDOUT);
  assert_int_equal(res.total, 200 * MS);
  /* The part never began its drain: it is forced directly. */
  assert_int_equal(a.begun, 0);
  assert_int_equal(a.forced, 1);
  assert_int_equal(next.calls, 0);
  /* The post-drain hook runs, but nobody waits for it. */
  assert_int_equal(post.calls, 1);
  assert_int_equal(post.deadline_err, GRACE_ETIMEDOUT);
  assert_int_equal(res.hooks_cut, 3);
  assert_int_equal(res.parts_forced, 1);
  assert_string_equal(res.cut, "hook \"stuck\" given up; a (1 tasks cut); "
                               "hook \"next\" skipped; hook \"post\" given up");
  assert_log_in_order(
      log, (const char *const[]){
               "Pre-drain hook \"stuck\" given up at the deadline after "
               "200ms",
               "Shutdown phase 3 (drain) cut short by the deadline",
               "Part \"a\" forced in ",
               "Pre-drain hook \"next\" skipped: deadline exceeded",
               "Post-drain hook \"post\" given up",
               "Shutdown phase 4 (force) took ", "result=forced", NULL});

  /* A late report of a given-up hook is ignored. */
  grace_group_hook_done(stuck.hook, 0);
  grace_group_hook_done(post.hook, 0);
  grace_group_free(g);
}

/* ---- tests: readiness and the shutdown delay ------------------------------ */

static void test_shutdown_delay_is_honoured(void **state) {
  (void)state;
  fake a = {.drain_after = 0};
  runner r;
  char *text;

  events_reset();
  grace_group *g = new_group(300 * MS, 5 * GRACE_SECOND);
  fake_add(g, &a, "a");
  assert_false(grace_group_ready(g));
  capture_start();
  runner_start(&r, g);
  wait_ready(g);
  assert_int_equal(grace_group_phase_now(g), GRACE_GROUP_SERVING);
  assert_int_equal(grace_group_metrics(g, &text, NULL), 0);
  assert_non_null(strstr(text, "\ngrace_ready 1\n"));
  assert_non_null(strstr(text, "\ngrace_shutdown_phase 0\n"));
  free(text);

  grace_ctx_cancel(r.stop);
  fc_poke(&fc);
  /* Readiness went false at once (the clock has not moved), and the part
   * still serves. */
  assert_int_equal(grace_group_phase_now(g), GRACE_GROUP_DELAY);
  assert_false(grace_group_ready(g));
  assert_int_equal(a.begun, 0);
  assert_int_equal(grace_group_metrics(g, &text, NULL), 0);
  assert_non_null(strstr(text, "\ngrace_ready 0\n"));
  assert_non_null(strstr(text, "\ngrace_shutdown_phase 2\n"));
  free(text);
  fc_advance(&fc, 150 * MS);
  assert_int_equal(a.begun, 0);
  assert_int_equal(grace_group_phase_now(g), GRACE_GROUP_DELAY);
  fc_advance(&fc, 150 * MS - 1);
  assert_int_equal(a.begun, 0);
  fc_advance(&fc, 1);
  runner_ended(&r);
  const char *log = capture_end();
  assert_int_equal(r.rv, 0);
  assert_int_equal(since_start(event_time("begin:a")), 300 * MS);
  assert_int_equal(r.res.phase[GRACE_GROUP_NOT_READY], 0);
  assert_int_equal(r.res.phase[GRACE_GROUP_DELAY], 300 * MS);
  assert_log_in_order(
      log, (const char *const[]){"Shutdown phase 1 (not ready)",
                                 "Shutdown phase 2 (delay 300ms) took 300ms",
                                 "Part \"a\" draining", NULL});
  grace_group_free(g);
}

static void test_shutdown_delay_cut_by_deadline(void **state) {
  (void)state;
  fake a = {.drain_after = 0};
  runner r;

  events_reset();
  grace_group *g = new_group(10 * GRACE_SECOND, 200 * MS);
  fake_add(g, &a, "a");
  capture_start();
  runner_start_stopped(&r, g);
  fc_advance(&fc, 200 * MS - 1);
  assert_false(atomic_load(&r.done));
  assert_int_equal(grace_group_phase_now(g), GRACE_GROUP_DELAY);
  assert_int_equal(a.forced, 0);
  fc_advance(&fc, 1);
  runner_ended(&r);
  const char *log = capture_end();

  assert_int_equal(r.rv, GRACE_ETIMEDOUT);
  assert_int_equal(r.res.total, 200 * MS);
  assert_int_equal(a.begun, 0);
  assert_int_equal(a.forced, 1);
  assert_string_equal(r.res.cut, "a");
  assert_log_in_order(
      log, (const char *const[]){
               "Shutdown phase 2 (delay 10s) cut short by the deadline after "
               "200ms",
               "Part \"a\" forced in ", "result=forced", NULL});
  grace_group_free(g);
}

/* ---- tests: parts that fail or stop on their own -------------------------- */

static void test_part_stopping_on_its_own_stops_the_group(void **state) {
  (void)state;
  fake w = {.stop_after = 80 * MS}, a = {.drain_after = 0};
  runner r;

  events_reset();
  grace_group *g = new_group(0, 5 * GRACE_SECOND);
  fake_add(g, &w, "worker");
  fake_add(g, &a, "a");
  capture_start();
  runner_start(&r, g); /* the stop context is never cancelled */
  wait_ready(g);
  fc_advance(&fc, 80 * MS - 1);
  assert_false(atomic_load(&r.done));
  assert_true(grace_group_ready(g));
  fc_advance(&fc, 1);
  runner_ended(&r);
  const char *log = capture_end();

  assert_int_equal(r.rv, 0);
  assert_int_equal(r.res.cause, GRACE_ESHUTDOWN);
  assert_int_equal(w.begun, 0);
  assert_int_equal(a.begun, 1);
  /* The shutdown began at the report, and took no time of its own. */
  assert_int_equal(r.t_end, event_time("done:worker"));
  assert_int_equal(r.res.phase[GRACE_GROUP_SERVING], 80 * MS);
  assert_log_in_order(log, (const char *const[]){
                               "Shutdown started (part \"worker\" stopped)",
                               "Part \"a\" drained", "result=clean", NULL});
  grace_group_free(g);
}

static void test_part_failures(void **state) {
  (void)state;
  grace_group_result res;

  /* A part that stops on its own with an error: the result is the error. */
  fake w = {.stop_after = 20 * MS, .done_err = -EIO};
  grace_group *g = new_group(0, 5 * GRACE_SECOND);
  fake_add(g, &w, "worker");
  runner r;
  capture_start();
  runner_start(&r, g);
  wait_ready(g);
  fc_advance(&fc, 20 * MS);
  runner_ended(&r);
  capture_end();
  assert_int_equal(r.rv, -EIO);
  assert_int_equal(r.res.parts_failed, 1);
  assert_int_equal(grace_group_part_get_state(w.part),
                   GRACE_GROUP_PART_FAILED);
  grace_group_free(g);

  /* begin fails: the part is forced at once, the others drain. */
  fake bad = {.begin_err = GRACE_EINVAL, .cut = 2}, ok = {.drain_after = 0};
  events_reset();
  g = new_group(0, 5 * GRACE_SECOND);
  fake_add(g, &bad, "bad");
  fake_add(g, &ok, "ok");
  grace_ctx *stop = cancelled_stop();
  capture_start();
  int rv = grace_group_run(g, stop, &res);
  const char *log = capture_end();
  assert_int_equal(rv, GRACE_EINVAL);
  assert_false(res.forced);
  assert_int_equal(res.parts_failed, 1);
  assert_int_equal(bad.forced, 1);
  assert_int_equal(ok.forced, 0);
  assert_int_equal(grace_group_part_get_state(bad.part),
                   GRACE_GROUP_PART_FAILED);
  assert_events_in_order((const char *const[]){"begin:bad", "force:bad",
                                               "begin:ok", NULL});
  assert_non_null(strstr(log, "Part \"bad\" could not begin to drain: "
                              "Invalid argument"));
  grace_group_free(g);

  /* A part that does not start: those started are stopped, the others
   * never start, and run returns the error without waiting. */
  fake s1 = {0}, s2 = {.start_err = GRACE_EADDRINUSE}, s3 = {0};
  events_reset();
  g = new_group(0, 5 * GRACE_SECOND);
  fake_add(g, &s1, "s1");
  fake_add(g, &s2, "s2");
  fake_add(g, &s3, "s3");
  grace_ctx *never;
  assert_int_equal(grace_ctx_with_cancel(grace_ctx_background(), &never), 0);
  capture_start();
  rv = grace_group_run(g, never, &res);
  log = capture_end();
  assert_int_equal(rv, GRACE_EADDRINUSE);
  assert_int_equal(res.parts_failed, 1);
  assert_int_equal(s1.forced, 1);
  assert_int_equal(s2.forced + s3.started + s1.begun, 0);
  assert_false(grace_group_ready(g));
  assert_non_null(
      strstr(log, "Part \"s2\" failed to start: Address already in use"));
  grace_group_free(g);
  grace_ctx_unref(never);
  grace_ctx_unref(stop);
}

/* A part that records, when it starts, whether its group says ready. */
static atomic_int ready_seen_at_start = -1;

static int ready_probe_start(grace_group_part *part, void *data) {
  (void)data;
  atomic_store(&ready_seen_at_start,
               grace_group_ready(grace__part_group(part)) ? 1 : 0);
  return 0;
}

static void ready_probe_add(grace_group *g) {
  grace_group_part_ops ops = {
      .start = ready_probe_start,
      .begin = fake_begin,
      .force = fake_force,
  };
  static fake probe;
  memset(&probe, 0, sizeof(probe));
  probe.name = "probe";
  assert_int_equal(grace_group_add(g, "probe", &ops, &probe, &probe.part), 0);
}

/* A successor of an upgrade (grace__group_ready_at_start) is ready while
 * its parts start; a plain group only once they all have; a successor
 * whose part fails to start is not ready afterwards. */
static void test_ready_at_start(void **state) {
  (void)state;
  grace_group_result res;
  grace_ctx *stop = cancelled_stop();

  events_reset();
  grace_group *g = new_group(0, 5 * GRACE_SECOND);
  ready_probe_add(g);
  capture_start();
  assert_int_equal(grace_group_run(g, stop, &res), 0);
  capture_end();
  assert_int_equal(atomic_load(&ready_seen_at_start), 0);
  grace_group_free(g);

  events_reset();
  g = new_group(0, 5 * GRACE_SECOND);
  grace__group_ready_at_start(g);
  ready_probe_add(g);
  capture_start();
  assert_int_equal(grace_group_run(g, stop, &res), 0);
  capture_end();
  assert_int_equal(atomic_load(&ready_seen_at_start), 1);
  assert_false(grace_group_ready(g)); /* the shutdown turned it false */
  grace_group_free(g);

  fake bad = {.start_err = GRACE_EADDRINUSE};
  events_reset();
  g = new_group(0, 5 * GRACE_SECOND);
  grace__group_ready_at_start(g);
  ready_probe_add(g);
  fake_add(g, &bad, "bad");
  grace_ctx *never;
  assert_int_equal(grace_ctx_with_cancel(grace_ctx_background(), &never), 0);
  capture_start();
  assert_int_equal(grace_group_run(g, never, &res), GRACE_EADDRINUSE);
  capture_end();
  assert_int_equal(atomic_load(&ready_seen_at_start), 1);
  assert_false(grace_group_ready(g));
  grace_group_free(g);
  grace_ctx_unref(never);
  grace_ctx_unref(stop);
}

static void test_api_misuse(void **state) {
  (void)state;
  grace_group_options opts;
  grace_group *g;
  fake f = {0};
  grace_group_part_ops ops = {.begin = fake_begin, .force = fake_force};
  grace_group_part_ops no_force = {.begin = fake_begin};

  assert_int_equal(grace_group_new(NULL, NULL), GRACE_EINVAL);
  grace_group_options_init(&opts);
  opts.shutdown_delay = -1;
  assert_int_equal(grace_group_new(&opts, &g), GRACE_EINVAL);
  grace_group_options_init(&opts);
  opts.shutdown_timeout = -GRACE_SECOND;
  assert_int_equal(grace_group_new(&opts, &g), GRACE_EINVAL);
  grace_group_options_init(&opts);
  opts.size = sizeof(opts) + 8;
  assert_int_equal(grace_group_new(&opts, &g), GRACE_EINVAL);

  g = new_group(0, GRACE_SECOND);
  assert_int_equal(grace_group_add(g, "", &ops, &f, NULL), GRACE_EINVAL);
  assert_int_equal(grace_group_add(g, NULL, &ops, &f, NULL), GRACE_EINVAL);
  assert_int_equal(grace_group_add(g, "x", NULL, &f, NULL), GRACE_EINVAL);
  assert_int_equal(grace_group_add(g, "x", &no_force, &f, NULL),
                   GRACE_EINVAL);
  assert_int_equal(grace_group_add(g, "x", &ops, &f, NULL), 0);
  assert_int_equal(grace_group_add(g, "x", &ops, &f, NULL), GRACE_EBUSY);
  assert_int_equal(grace_group_add_http(g, "h", NULL), GRACE_EINVAL);
  assert_int_equal(grace_group_add_hook(g, (grace_group_when)7, "h", hook_fn,
                                        NULL),
                   GRACE_EINVAL);
  assert_int_equal(
      grace_group_add_hook(g, GRACE_GROUP_PRE_DRAIN, "h", NULL, NULL),
      GRACE_EINVAL);
  assert_non_null(grace_group_find(g, "x"));
  assert_string_equal(grace_group_part_name(grace_group_find(g, "x")), "x");
  assert_null(grace_group_find(g, "y"));
  assert_int_equal(grace_group_part_get_state(grace_group_find(g, "x")),
                   GRACE_GROUP_PART_ADDED);
  assert_int_equal(grace_group_run(g, NULL, NULL), GRACE_EINVAL);
  assert_int_equal(grace_group_run(NULL, grace_ctx_background(), NULL),
                   GRACE_EINVAL);
  assert_int_equal(grace_group_metrics(g, NULL, NULL), GRACE_EINVAL);
  assert_int_equal(grace_group_http_health(g, NULL), GRACE_EINVAL);
  assert_string_equal(grace_group_phase_name(GRACE_GROUP_FORCE), "force");
  assert_string_equal(grace_group_phase_name((grace_group_phase)9), "");
  grace_group_free(g);
  grace_group_free(NULL);
}

/* ---- tests: the deadline from the environment ----------------------------- */

static void clear_env(void) {
  unsetenv("GRACE_SHUTDOWN_TIMEOUT");
  unsetenv("TERMINATION_GRACE_PERIOD_SECONDS");
}

static void test_timeout_for_grace_period(void **state) {
  (void)state;
  static const struct {
    int64_t period_ms, want_ms;
  } cases[] = {
      {30000, 27000},   {60000, 55000}, {120000, 115000}, {5000, 4000},
      {10000, 9000},    {2000, 1000},   {1000, 500},      {1, 0},
      {0, 0},           {-5, 0},        {3600000, 3595000},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    grace_duration got =
        grace_group_timeout_for_grace_period(cases[i].period_ms * MS);
    if (cases[i].period_ms == 1)
      assert_int_equal(got, MS / 2); /* half of 1 ms */
    else
      assert_int_equal(got, cases[i].want_ms * MS);
  }
  assert_int_equal(GRACE_GROUP_DEFAULT_TIMEOUT,
                   grace_group_timeout_for_grace_period(30 * GRACE_SECOND));
}

static void test_env_timeout(void **state) {
  (void)state;
  grace_duration d = 42;
  char err[256];

  clear_env();
  assert_int_equal(grace_group_env_timeout(&d, err, sizeof(err)),
                   GRACE_ENOENT);
  assert_int_equal(d, 42);
  assert_string_equal(err, "");

  setenv("GRACE_SHUTDOWN_TIMEOUT", "1m30.5s", 1);
  assert_int_equal(grace_group_env_timeout(&d, err, sizeof(err)), 0);
  assert_int_equal(d, 90 * GRACE_SECOND + 500 * MS);

  /* GRACE_SHUTDOWN_TIMEOUT wins over the grace period. */
  setenv("TERMINATION_GRACE_PERIOD_SECONDS", "60", 1);
  assert_int_equal(grace_group_env_timeout(&d, err, sizeof(err)), 0);
  assert_int_equal(d, 90 * GRACE_SECOND + 500 * MS);

  setenv("GRACE_SHUTDOWN_TIMEOUT", "abc", 1);
  assert_int_equal(grace_group_env_timeout(&d, err, sizeof(err)),
                   GRACE_ESYNTAX);
  assert_string_equal(err,
                      "GRACE_SHUTDOWN_TIMEOUT: time: invalid duration \"abc\"");
  setenv("GRACE_SHUTDOWN_TIMEOUT", "10", 1);
  assert_int_equal(grace_group_env_timeout(&d, err, sizeof(err)),
                   GRACE_ESYNTAX);
  assert_string_equal(
      err, "GRACE_SHUTDOWN_TIMEOUT: time: missing unit in duration \"10\"");
  setenv("GRACE_SHUTDOWN_TIMEOUT", "-1s", 1);
  assert_int_equal(grace_group_env_timeout(&d, err, sizeof(err)),
                   GRACE_ERANGE);
  assert_string_equal(err,
                      "GRACE_SHUTDOWN_TIMEOUT: -1s is not a positive duration");
  setenv("GRACE_SHUTDOWN_TIMEOUT", "99999999999h", 1);
  assert_int_equal(grace_group_env_timeout(&d, NULL, 0), GRACE_ERANGE);

  /* An empty variable counts as unset. */
  setenv("GRACE_SHUTDOWN_TIMEOUT", "", 1);
  assert_int_equal(grace_group_env_timeout(&d, err, sizeof(err)), 0);
  assert_int_equal(d, 55 * GRACE_SECOND);
  setenv("TERMINATION_GRACE_PERIOD_SECONDS", "30", 1);
  assert_int_equal(grace_group_env_timeout(&d, err, sizeof(err)), 0);
  assert_int_equal(d, 27 * GRACE_SECOND);
  setenv("TERMINATION_GRACE_PERIOD_SECONDS", "0", 1);
  assert_int_equal(grace_group_env_timeout(&d, err, sizeof(err)), 0);
  assert_int_equal(d, 0);
  setenv("TERMINATION_GRACE_PERIOD_SECONDS", "30s", 1);
  assert_int_equal(grace_group_env_timeout(&d, err, sizeof(err)),
                   GRACE_ESYNTAX);
  assert_string_equal(err, "TERMINATION_GRACE_PERIOD_SECONDS: invalid value "
                           "\"30s\": want a whole number of seconds");
  setenv("TERMINATION_GRACE_PERIOD_SECONDS", "-30", 1);
  assert_int_equal(grace_group_env_timeout(&d, err, sizeof(err)),
                   GRACE_ESYNTAX);
  setenv("TERMINATION_GRACE_PERIOD_SECONDS", "99999999999999999999", 1);
  assert_int_equal(grace_group_env_timeout(&d, err, sizeof(err)),
                   GRACE_ERANGE);
  assert_non_null(strstr(err, "too large"));

  /* The group reads the environment when no timeout is given... */
  grace_group_options opts;
  grace_group *g;
  setenv("TERMINATION_GRACE_PERIOD_SECONDS", "10", 1);
  g = new_group(0, 0);
  assert_int_equal(grace_group_timeout(g), 9 * GRACE_SECOND);
  grace_group_free(g);
  /* ...an explicit one wins... */
  g = new_group(0, 3 * GRACE_SECOND);
  assert_int_equal(grace_group_timeout(g), 3 * GRACE_SECOND);
  grace_group_free(g);
  /* ...a bad value is refused... */
  setenv("GRACE_SHUTDOWN_TIMEOUT", "soon", 1);
  grace_group_options_init(&opts);
  assert_int_equal(grace_group_new(&opts, &g), GRACE_ESYNTAX);
  /* ...and without either variable the default applies. */
  clear_env();
  g = new_group(0, 0);
  assert_int_equal(grace_group_timeout(g), GRACE_GROUP_DEFAULT_TIMEOUT);
  grace_group_free(g);
}

/* ---- tests: metrics ------------------------------------------------------- */

/* Checks |text| against the Prometheus text format 0.0.4: every family has
 * one # HELP then one # TYPE line, then its samples (named as the family),
 * families do not repeat, values are floats, the text ends with a newline.
 * Returns the number of samples. */
static int check_exposition(const char *text) {
  regex_t help, type, sample;
  regmatch_t m[4];
  char family[128] = "", seen[4096] = " ";
  int samples = 0;

  assert_int_equal(regcomp(&help, "^# HELP ([a-zA-Z_:][a-zA-Z0-9_:]*) [^\n]+$",
                           REG_EXTENDED),
                   0);
  assert_int_equal(
      regcomp(&type,
              "^# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) "
              "(counter|gauge|histogram|summary|untyped)$",
              REG_EXTENDED),
      0);
  assert_int_equal(
      regcomp(&sample,
              "^([a-zA-Z_:][a-zA-Z0-9_:]*)"
              "(\\{[a-zA-Z_][a-zA-Z0-9_]*=\"([^\"\\\\]|\\\\.)*\""
              "(,[a-zA-Z_][a-zA-Z0-9_]*=\"([^\"\\\\]|\\\\.)*\")*\\})? "
              "([^ ]+)$",
              REG_EXTENDED),
      0);
  assert_true(strlen(text) > 0 && text[strlen(text) - 1] == '\n');
  const char *line = text;
  bool want_type = false;
  while (*line != '\0') {
    const char *nl = strchr(line, '\n');
    char buf[512];
    size_t len = (size_t)(nl - line);
    assert_true(len < sizeof(buf));
    memcpy(buf, line, len);
    buf[len] = '\0';
    line = nl + 1;
    if (regexec(&help, buf, 2, m, 0) == 0) {
      assert_false(want_type);
      int n = (int)(m[1].rm_eo - m[1].rm_so);
      snprintf(family, sizeof(family), "%.*s", n, buf + m[1].rm_so);
      char key[140];
      snprintf(key, sizeof(key), " %s ", family);
      if (strstr(seen, key) != NULL) {
        fprintf(stderr, "family %s twice\n", family);
        fail();
      }
      strncat(seen, key + 1, sizeof(seen) - strlen(seen) - 1);
      want_type = true;
    } else if (regexec(&type, buf, 2, m, 0) == 0) {
      assert_true(want_type);
      assert_int_equal((int)(m[1].rm_eo - m[1].rm_so), (int)strlen(family));
      assert_memory_equal(buf + m[1].rm_so, family, strlen(family));
      want_type = false;
    } else if (regexec(&sample, buf, 1, m, 0) == 0) {
      assert_false(want_type);
      assert_true(family[0] != '\0');
      size_t n = strcspn(buf, "{ ");
      if (n != strlen(family) || strncmp(buf, family, n) != 0) {
        fprintf(stderr, "sample outside its family %s: %s\n", family, buf);
        fail();
      }
      char *end;
      const char *v = strrchr(buf, ' ') + 1;
      strtod(v, &end);
      assert_true(*end == '\0' && end != v);
      samples++;
    } else {
      fprintf(stderr, "not exposition format: \"%s\"\n", buf);
      fail();
    }
  }
  assert_false(want_type);
  regfree(&help);
  regfree(&type);
  regfree(&sample);
  return samples;
}

/* Asserts that the family |name| has type |type| in |text|. */
static void assert_family(const char *text, const char *name,
                          const char *type) {
  char want[160];
  snprintf(want, sizeof(want), "# TYPE %s %s\n", name, type);
  if (strstr(text, want) == NULL) {
    fprintf(stderr, "missing \"%s\" in:\n%s", want, text);
    fail();
  }
}

static void test_metrics_text_format(void **state) {
  (void)state;
  fake web = {.with_stats = true, .drain_after = 5 * MS},
       rpc = {.with_stats = true, .drain_after = 0}, plain = {.drain_after = 0};
  web.stats = (grace_group_stats){
      .has = GRACE_GROUP_HAS_REQUESTS | GRACE_GROUP_HAS_CONNS,
      .requests_total = 17,
      .requests_inflight = 2,
      .requests_cut = 1,
      .conns_new = 4,
      .conns_active = 3,
      .conns_idle = 5,
      .conns_idle_closed = 6};
  rpc.stats = (grace_group_stats){.has = GRACE_GROUP_HAS_RPCS,
                                  .rpcs_total = 9,
                                  .rpcs_inflight = 1,
                                  .rpcs_cut = 2};
  char *text;
  size_t len;

  grace_group *g = new_group(0, GRACE_SECOND);
  fake_add(g, &web, "we\"b\\1\n");
  fake_add(g, &rpc, "rpc");
  fake_add(g, &plain, "plain");
  assert_int_equal(grace_group_metrics(g, &text, &len), 0);
  assert_int_equal(len, strlen(text));
  int n = check_exposition(text);
  assert_true(n >= 20);
  assert_family(text, "grace_ready", "gauge");
  assert_family(text, "grace_shutdown_phase", "gauge");
  assert_family(text, "grace_shutdown_phase_duration_seconds", "gauge");
  assert_family(text, "grace_drain_duration_seconds", "gauge");
  assert_family(text, "grace_part_drain_duration_seconds", "gauge");
  assert_family(text, "grace_requests_cut_total", "counter");
  assert_family(text, "grace_http_requests_inflight", "gauge");
  assert_family(text, "grace_http_requests_total", "counter");
  assert_family(text, "grace_http_connections", "gauge");
  assert_family(text, "grace_http_connections_idle_closed_total", "counter");
  assert_family(text, "grace_grpc_rpcs_inflight", "gauge");
  assert_family(text, "grace_grpc_rpcs_total", "counter");
  static const char *const want[] = {
      "\ngrace_ready 0\n",
      "\ngrace_shutdown_phase 0\n",
      "\ngrace_drain_duration_seconds 0.000000000\n",
      "\ngrace_http_requests_inflight{part=\"we\\\"b\\\\1\\n\"} 2\n",
      "\ngrace_http_requests_total{part=\"we\\\"b\\\\1\\n\"} 17\n",
      "\ngrace_http_connections{part=\"we\\\"b\\\\1\\n\",state=\"new\"} 4\n",
      "\ngrace_http_connections{part=\"we\\\"b\\\\1\\n\",state=\"active\"} 3\n",
      "\ngrace_http_connections{part=\"we\\\"b\\\\1\\n\",state=\"idle\"} 5\n",
      "\ngrace_http_connections_idle_closed_total{part=\"we\\\"b\\\\1\\n\"} 6\n",
      "\ngrace_requests_cut_total{part=\"we\\\"b\\\\1\\n\"} 1\n",
      "\ngrace_requests_cut_total{part=\"rpc\"} 2\n",
      "\ngrace_grpc_rpcs_inflight{part=\"rpc\"} 1\n",
      "\ngrace_grpc_rpcs_total{part=\"rpc\"} 9\n",
      "\ngrace_part_drain_duration_seconds{part=\"plain\"} 0.000000000\n",
      NULL};
  for (const char *const *w = want; *w != NULL; w++)
    if (strstr(text, *w) == NULL) {
      fprintf(stderr, "missing %s in:\n%s", *w, text);
      fail();
    }
  /* Only parts with such counters appear in a family. */
  assert_null(strstr(text, "grace_http_requests_total{part=\"rpc\"}"));
  assert_null(strstr(text, "grace_grpc_rpcs_total{part=\"plain\"}"));
  assert_null(strstr(text, "{part=\"plain\"} 0\n"));
  free(text);

  /* After a shutdown in which "we..." drained in 5 ms: phase 3, drain
   * durations filled in. */
  runner r;
  capture_start();
  runner_start_stopped(&r, g);
  fc_advance(&fc, 5 * MS);
  runner_ended(&r);
  capture_end();
  assert_int_equal(r.rv, 0);
  assert_int_equal(grace_group_metrics(g, &text, NULL), 0);
  check_exposition(text);
  assert_non_null(strstr(text, "\ngrace_shutdown_phase 3\n"));
  assert_non_null(strstr(text, "\ngrace_drain_duration_seconds 0.005000000\n"));
  assert_non_null(strstr(text, "{phase=\"drain\"} 0.005000000\n"));
  assert_non_null(strstr(text, "{phase=\"force\"} 0.000000000\n"));
  assert_non_null(strstr(
      text, "grace_part_drain_duration_seconds{part=\"rpc\"} 0.000000000\n"));
  assert_non_null(strstr(text, "grace_part_drain_duration_seconds{part=\"we"
                               "\\\"b\\\\1\\n\"} 0.005000000\n"));
  free(text);
  grace_group_free(g);

  /* No parts at all is still valid. */
  g = new_group(0, GRACE_SECOND);
  assert_int_equal(grace_group_metrics(g, &text, NULL), 0);
  check_exposition(text);
  free(text);
  grace_group_free(g);
}

/* ---- tests: the HTTP adapter on a real server ----------------------------- */

static int tcp_connect(int port) {
  struct sockaddr_in sa = {.sin_family = AF_INET,
                           .sin_port = htons((uint16_t)port)};
  struct timeval tv = {5, 0};
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  assert_true(fd >= 0);
  assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  return fd;
}

static void send_text(int fd, const char *s) {
  assert_int_equal(send(fd, s, strlen(s), MSG_NOSIGNAL), (ssize_t)strlen(s));
}

/* Reads one response (headers and Content-Length body) into |buf|. */
static void read_response(int fd, char *buf, size_t cap) {
  size_t len = 0;
  for (;;) {
    buf[len] = '\0';
    char *end = strstr(buf, "\r\n\r\n");
    if (end != NULL) {
      const char *cl = strcasestr(buf, "\r\nContent-Length: ");
      size_t body = cl != NULL ? strtoul(cl + 18, NULL, 10) : 0;
      if (len >= (size_t)(end + 4 - buf) + body)
        return;
    }
    assert_true(len < cap - 1);
    ssize_t n = recv(fd, buf + len, cap - 1 - len, 0);
    assert_true(n > 0);
    len += (size_t)n;
  }
}

/* Asserts that the server closes |fd| without sending anything more. */
static void expect_eof(int fd) {
  char c;
  ssize_t n = recv(fd, &c, 1, 0);
  assert_true(n == 0 || (n < 0 && errno == ECONNRESET));
}

static grace_http_server *http_server(grace_group *g, int *port) {
  grace_http_options opts;
  grace_http_server *srv;
  grace_http_options_init(&opts);
  opts.loops = 2;
  assert_int_equal(grace_http_server_new(&opts, &srv), 0);
  assert_int_equal(grace_http_server_handle(srv, "/sleep", handle_sleep, NULL),
                   0);
  assert_int_equal(grace_http_server_handle(srv, "/", handle_root, NULL), 0);
  assert_int_equal(grace_group_http_health(g, srv), 0);
  assert_int_equal(grace_http_server_listen(srv, "127.0.0.1:0"), 0);
  *port = grace_http_server_port(srv, 0);
  assert_true(*port > 0);
  assert_int_equal(grace_group_add_http(g, "http", srv), 0);
  return srv;
}

/* Waits (bounded) until /metrics shows |total| HTTP requests received,
 * all but the last one answered: the last one is in flight.  (A request
 * counts as in flight until its answer is written out, a little after the
 * client may have read it.) */
static void wait_http_inflight(grace_group *g, int total) {
  char want[80];
  snprintf(want, sizeof(want), "grace_http_requests_total{part=\"http\"} %d\n",
           total);
  for (int64_t until = grace_now() + 5 * GRACE_SECOND;;) {
    char *text;
    assert_int_equal(grace_group_metrics(g, &text, NULL), 0);
    bool inflight = strstr(text, "grace_http_requests_inflight{part=\"http\"} "
                                 "1\n") != NULL &&
                    strstr(text, want) != NULL;
    free(text);
    if (inflight)
      return;
    assert_true(grace_now() < until);
    sleep_for(MS);
  }
}

static void test_http_part_drains_a_real_server(void **state) {
  (void)state;
  char buf[8192];
  int port;
  runner r;

  grace_group *g = new_group(0, 10 * GRACE_SECOND);
  grace_http_server *srv = http_server(g, &port);
  capture_start();
  runner_start(&r, g);
  wait_ready(g);

  /* An idle keep-alive connection, and a request in flight. */
  int idle = tcp_connect(port);
  send_text(idle, "GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n");
  read_response(idle, buf, sizeof(buf));
  assert_non_null(strstr(buf, "HTTP/1.1 200 "));
  assert_non_null(strstr(buf, "\r\n\r\nok"));
  int busy = tcp_connect(port);
  send_text(busy, "GET /sleep?duration=300ms HTTP/1.1\r\nHost: x\r\n\r\n");
  wait_http_inflight(g, 2);

  grace_ctx_cancel(r.stop);
  expect_eof(idle); /* closed at once by the drain */
  read_response(busy, buf, sizeof(buf));
  assert_non_null(strstr(buf, "HTTP/1.1 200 "));
  assert_non_null(strstr(buf, "Welcome HTTP Server"));
  assert_non_null(strcasestr(buf, "\r\nConnection: close\r\n"));
  expect_eof(busy);
  runner_join(&r);
  const char *log = capture_end();

  /* The group's clock is manual and never moved: no timer of the group
   * can have ended the drain, only the server's drained descriptor. */
  assert_int_equal(r.rv, 0);
  assert_int_equal(r.res.requests_completed, 1);
  assert_int_equal(r.res.idle_closed, 1);
  assert_int_equal(r.res.requests_cut, 0);
  assert_int_equal(grace_group_part_get_state(grace_group_find(g, "http")),
                   GRACE_GROUP_PART_DRAINED);
  assert_log_in_order(log, (const char *const[]){
                               "Part \"http\" draining",
                               "Part \"http\" drained in ",
                               "Drain report: result=clean duration=",
                               " requests_completed=1 rpcs_completed=0 "
                               "idle_closed=1 requests_cut=0",
                               NULL});
  close(idle);
  close(busy);
  grace_group_free(g);
  grace_http_server_free(srv);
}

static void test_http_part_forced_at_deadline(void **state) {
  (void)state;
  char buf[8192];
  int port;
  runner r;

  grace_group *g = new_group(0, 250 * MS);
  grace_http_server *srv = http_server(g, &port);
  capture_start();
  runner_start(&r, g);
  wait_ready(g);
  int busy = tcp_connect(port);
  send_text(busy, "GET /sleep?duration=30s HTTP/1.1\r\nHost: x\r\n\r\n");
  wait_http_inflight(g, 1);
  grace_ctx_cancel(r.stop);
  fc_poke(&fc);
  /* Draining, the request still in flight, until the deadline. */
  fc_advance(&fc, 250 * MS - 1);
  assert_false(atomic_load(&r.done));
  assert_int_equal(grace_group_part_get_state(grace_group_find(g, "http")),
                   GRACE_GROUP_PART_DRAINING);
  fc_advance(&fc, 1);
  runner_ended(&r);
  expect_eof(busy);
  const char *log = capture_end();

  assert_int_equal(r.rv, GRACE_ETIMEDOUT);
  assert_int_equal(since_start(r.t_end), 250 * MS);
  assert_int_equal(r.res.parts_forced, 1);
  assert_int_equal(r.res.requests_cut, 1);
  assert_int_equal(r.res.requests_completed, 0);
  assert_string_equal(r.res.cut,
                      "http (1 request cut, 1 connection closed)");
  assert_log_in_order(
      log, (const char *const[]){
               "Part \"http\" forced in ",
               ": 1 request cut, 1 connection closed",
               "Drain report: result=forced",
               "cut=\"http (1 request cut, 1 connection closed)\"", NULL});
  close(busy);
  grace_group_free(g);
  grace_http_server_free(srv);
  (void)buf;
}

/* ---- tests: the gRPC adapter on a real server ----------------------------- */

static grace_grpc_server *grpc_server(grace_group *g, int *port) {
  grace_grpc_options opts;
  grace_grpc_server *srv;
  grace_grpc_options_init(&opts);
  opts.http.loops = 2;
  assert_int_equal(grace_grpc_server_new(&opts, &srv), 0);
  grace_grpc_method m = {.path = "/Greeter/SayHello",
                         .input = &hello_request__descriptor,
                         .on_message = say_hello,
                         .on_cancel = say_hello_cancel};
  assert_int_equal(grace_grpc_server_register(srv, &m), 0);
  assert_int_equal(grace_grpc_server_listen(srv, "127.0.0.1:0"), 0);
  *port = grace_grpc_server_port(srv, 0);
  assert_true(*port > 0);
  assert_int_equal(grace_group_add_grpc(g, "grpc", srv), 0);
  return srv;
}

/* One SayHello made on its own thread, as a client process would. */
typedef struct hello_call {
  grace_grpc_channel *ch;
  char duration[16];
  int rv;
  char reply[64];
  pthread_t thread;
} hello_call;

static void *hello_main(void *arg) {
  hello_call *c = arg;
  HelloRequest req;
  ProtobufCMessage *resp = NULL;
  grace_grpc_status st = GRACE_GRPC_STATUS_INIT;
  char name[] = "world";
  hello_request__init(&req);
  req.name = name;
  req.duration = c->duration;
  c->rv = grace_grpc_channel_unary_pb(c->ch, "/Greeter/SayHello", &req.base,
                                      &hello_reply__descriptor, NULL, &resp,
                                      &st);
  if (c->rv == 0) {
    snprintf(c->reply, sizeof(c->reply), "%s", ((HelloReply *)resp)->message);
    protobuf_c_message_free_unpacked(resp, NULL);
  }
  grace_grpc_status_clear(&st);
  return NULL;
}

static void hello_start(hello_call *c, grace_grpc_channel *ch,
                        const char *duration) {
  memset(c, 0, sizeof(*c));
  c->ch = ch;
  snprintf(c->duration, sizeof(c->duration), "%s", duration);
  assert_int_equal(pthread_create(&c->thread, NULL, hello_main, c), 0);
}

/* Health Check of |service| on |ch|: the serving status, or -code. */
static int health_check(grace_grpc_channel *ch, const char *service) {
  Grpc__Health__V1__HealthCheckRequest req;
  ProtobufCMessage *resp = NULL;
  grace_grpc_status st = GRACE_GRPC_STATUS_INIT;
  char name[32];
  snprintf(name, sizeof(name), "%s", service);
  grpc__health__v1__health_check_request__init(&req);
  req.service = name;
  int rv = grace_grpc_channel_unary_pb(
      ch, "/grpc.health.v1.Health/Check", &req.base,
      &grpc__health__v1__health_check_response__descriptor, NULL, &resp, &st);
  grace_grpc_status_clear(&st);
  if (rv != 0)
    return -rv;
  int status = (int)((Grpc__Health__V1__HealthCheckResponse *)resp)->status;
  protobuf_c_message_free_unpacked(resp, NULL);
  return status;
}

/* Waits (bounded) until /metrics shows |n| RPCs in flight. */
static void wait_rpcs_inflight(grace_group *g, int n) {
  char want[80];
  snprintf(want, sizeof(want), "grace_grpc_rpcs_inflight{part=\"grpc\"} %d\n",
           n);
  for (int64_t until = grace_now() + 5 * GRACE_SECOND;;) {
    char *text;
    assert_int_equal(grace_group_metrics(g, &text, NULL), 0);
    bool found = strstr(text, want) != NULL;
    free(text);
    if (found)
      return;
    assert_true(grace_now() < until);
    sleep_for(MS);
  }
}

#define SERVING GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING
#define NOT_SERVING                                                            \
  GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING

static void test_grpc_part_not_serving_then_drains_a_call(void **state) {
  (void)state;
  int port;
  char target[32];
  runner r;
  hello_call c;
  grace_grpc_channel *ch;

  grace_group *g = new_group(300 * MS, 10 * GRACE_SECOND);
  grace_grpc_server *srv = grpc_server(g, &port);
  snprintf(target, sizeof(target), "127.0.0.1:%d", port);
  assert_int_equal(grace_grpc_channel_new(target, NULL, &ch), 0);
  capture_start();
  runner_start(&r, g);
  wait_ready(g);
  assert_int_equal(health_check(ch, ""), SERVING);
  assert_int_equal(health_check(ch, "Greeter"), SERVING);

  /* A call answered by the server's timer 2 s later (real time), in
   * flight at the stop and, with room to spare, at the drain's begin. */
  hello_start(&c, ch, "2s");
  wait_rpcs_inflight(g, 1);
  grace_ctx_cancel(r.stop);
  fc_poke(&fc);
  /* Phase 1 is over, phase 2 holds until the group's clock moves:
   * NOT_SERVING for the server and for each service, while the server
   * still serves calls through the delay. */
  assert_int_equal(grace_group_phase_now(g), GRACE_GROUP_DELAY);
  assert_int_equal(health_check(ch, ""), NOT_SERVING);
  assert_int_equal(health_check(ch, "Greeter"), NOT_SERVING);
  assert_int_equal(grace_group_phase_now(g), GRACE_GROUP_DELAY);
  assert_int_equal(grace_group_part_get_state(grace_group_find(g, "grpc")),
                   GRACE_GROUP_PART_RUNNING);
  fc_advance(&fc, 300 * MS);
  assert_int_equal(grace_group_part_get_state(grace_group_find(g, "grpc")),
                   GRACE_GROUP_PART_DRAINING);
  pthread_join(c.thread, NULL);
  runner_join(&r);
  const char *log = capture_end();

  /* The clock stayed at the end of the delay: the drain ended on the
   * server's drained descriptor, not on a timer of the group. */
  assert_int_equal(c.rv, 0);
  assert_string_equal(c.reply, "Hello world");
  assert_int_equal(r.rv, 0);
  assert_int_equal(r.res.phase[GRACE_GROUP_DELAY], 300 * MS);
  assert_int_equal(r.res.rpcs_completed, 1);
  assert_int_equal(r.res.requests_completed, 0);
  assert_int_equal(r.res.requests_cut, 0);
  assert_int_equal(grace_group_part_get_state(grace_group_find(g, "grpc")),
                   GRACE_GROUP_PART_DRAINED);
  /* The handler logs the call when it runs, which may be a little after
   * the call counts as in flight, so before or after the stop. */
  assert_non_null(strstr(log, "Received: world"));
  assert_log_in_order(log,
                      (const char *const[]){
                          "Shutdown phase 1 (not ready)",
                          "Part \"grpc\" draining", "Part \"grpc\" drained in ",
                          "Drain report: result=clean duration=",
                          " requests_completed=0 rpcs_completed=1 ", NULL});
  grace_grpc_channel_free(ch);
  grace_group_free(g);
  grace_grpc_server_free(srv);
}

static void test_grpc_part_forced_at_deadline(void **state) {
  (void)state;
  int port;
  char target[32];
  runner r;
  hello_call c;
  grace_grpc_channel *ch;

  grace_group *g = new_group(0, 250 * MS);
  grace_grpc_server *srv = grpc_server(g, &port);
  snprintf(target, sizeof(target), "127.0.0.1:%d", port);
  assert_int_equal(grace_grpc_channel_new(target, NULL, &ch), 0);
  capture_start();
  runner_start(&r, g);
  wait_ready(g);
  hello_start(&c, ch, "30s");
  wait_rpcs_inflight(g, 1);
  grace_ctx_cancel(r.stop);
  fc_poke(&fc);
  /* Draining, the call still in flight, until the deadline. */
  fc_advance(&fc, 250 * MS - 1);
  assert_false(atomic_load(&r.done));
  assert_int_equal(grace_group_part_get_state(grace_group_find(g, "grpc")),
                   GRACE_GROUP_PART_DRAINING);
  fc_advance(&fc, 1);
  runner_ended(&r);
  pthread_join(c.thread, NULL);
  const char *log = capture_end();

  assert_int_equal(c.rv, GRACE_GRPC_UNAVAILABLE);
  assert_int_equal(r.rv, GRACE_ETIMEDOUT);
  assert_int_equal(since_start(r.t_end), 250 * MS);
  assert_int_equal(r.res.parts_forced, 1);
  assert_int_equal(r.res.requests_cut, 1);
  assert_int_equal(r.res.rpcs_completed, 0);
  assert_string_equal(r.res.cut, "grpc (1 RPC cut, 1 connection closed)");
  assert_log_in_order(
      log, (const char *const[]){
               "Part \"grpc\" forced in ", ": 1 RPC cut, 1 connection closed",
               "Drain report: result=forced",
               "cut=\"grpc (1 RPC cut, 1 connection closed)\"", NULL});
  grace_grpc_channel_free(ch);
  grace_group_free(g);
  grace_grpc_server_free(srv);
}

/* ---- tests: the worker adapter -------------------------------------------- */

/* A latch the test opens: work that runs until the test says so. */
typedef struct latch {
  pthread_mutex_t mu;
  pthread_cond_t cond;
  bool open;
} latch;

static void latch_init(latch *l) {
  pthread_mutex_init(&l->mu, NULL);
  pthread_cond_init(&l->cond, NULL);
  l->open = false;
}

static void latch_wait(latch *l) {
  pthread_mutex_lock(&l->mu);
  while (!l->open)
    pthread_cond_wait(&l->cond, &l->mu);
  pthread_mutex_unlock(&l->mu);
}

static void latch_open(latch *l) {
  pthread_mutex_lock(&l->mu);
  l->open = true;
  pthread_cond_broadcast(&l->cond);
  pthread_mutex_unlock(&l->mu);
}

static void latch_destroy(latch *l) {
  pthread_cond_destroy(&l->cond);
  pthread_mutex_destroy(&l->mu);
}

typedef struct ticker {
  latch work;    /* tick 0 runs until it opens, ignoring its context */
  latch cleanup; /* so does the cleanup */
  atomic_int ticks;
} ticker;

static grace_duration tick(grace_worker *w, grace_ctx *ctx, void *data) {
  ticker *t = data;
  (void)w;
  (void)ctx;
  int n = atomic_fetch_add(&t->ticks, 1);
  record("tick %d begin", n);
  if (n == 0)
    latch_wait(&t->work);
  record("tick %d end", n);
  return GRACE_WORKER_DEFAULT;
}

static int tick_cleanup(grace_worker *w, grace_ctx *ctx, void *data) {
  ticker *t = data;
  (void)w;
  (void)ctx;
  record("cleanup begin");
  latch_wait(&t->cleanup);
  record("cleanup end");
  return 0;
}

static void ticker_init(ticker *t) {
  latch_init(&t->work);
  latch_init(&t->cleanup);
  atomic_init(&t->ticks, 0);
}

static void ticker_destroy(ticker *t) {
  latch_destroy(&t->work);
  latch_destroy(&t->cleanup);
}

static grace_worker *ticker_worker(grace_group *g, ticker *t) {
  grace_worker_options opts;
  grace_worker *w;
  grace_worker_options_init(&opts);
  opts.interval = 10 * MS;
  opts.task = tick;
  opts.cleanup = tick_cleanup;
  opts.data = t;
  assert_int_equal(grace_worker_new(&opts, &w), 0);
  assert_int_equal(grace_group_add_worker(g, "syncer", w), 0);
  return w;
}

/* Waits (bounded) until event |what| has been recorded. */
static void wait_event(const char *what) {
  for (int64_t until = grace_now() + 5 * GRACE_SECOND; event_index(what) < 0;) {
    assert_true(grace_now() < until);
    sleep_for(MS);
  }
}

static void test_worker_part_finishes_its_tick_then_cleans_up(void **state) {
  (void)state;
  runner r;
  ticker t;
  ticker_init(&t);
  events_reset();

  grace_group *g = new_group(0, 10 * GRACE_SECOND);
  grace_worker *w = ticker_worker(g, &t);
  grace_group_part *part = grace_group_find(g, "syncer");
  capture_start();
  runner_start(&r, g);
  wait_ready(g);
  wait_event("tick 0 begin");
  record("stop");
  grace_ctx_cancel(r.stop);
  fc_poke(&fc);
  /* Mid-tick: the part drains, and is not drained while the tick runs. */
  assert_int_equal(grace_group_part_get_state(part), GRACE_GROUP_PART_DRAINING);
  latch_open(&t.work);
  wait_event("cleanup begin");
  fc_poke(&fc);
  /* Nor while the cleanup runs. */
  assert_int_equal(grace_group_part_get_state(part), GRACE_GROUP_PART_DRAINING);
  assert_false(atomic_load(&r.done));
  latch_open(&t.cleanup);
  runner_join(&r);
  const char *log = capture_end();

  assert_int_equal(r.rv, 0);
  assert_false(r.res.forced);
  /* The tick in progress finished, none began after the stop, then the
   * cleanup ran to its end before the part was drained (the group's
   * clock never moved: the worker's done descriptor ended the drain). */
  assert_events_in_order((const char *const[]){
      "tick 0 begin", "stop", "tick 0 end", "cleanup begin", "cleanup end",
      NULL});
  assert_int_equal(event_index("tick 1 begin"), -1);
  assert_int_equal(grace_group_part_get_state(part), GRACE_GROUP_PART_DRAINED);
  int status = -1;
  assert_int_equal(grace_worker_status(w, &status), 0);
  assert_int_equal(status, 0);
  assert_log_in_order(log, (const char *const[]){
                               "Part \"syncer\" draining",
                               "Part \"syncer\" drained in ",
                               "Drain report: result=clean", NULL});
  grace_group_free(g);
  grace_worker_free(w);
  ticker_destroy(&t);
}

static void test_worker_part_forced_at_deadline(void **state) {
  (void)state;
  runner r;
  ticker t;
  ticker_init(&t);
  latch_open(&t.work); /* ticks take no time */
  events_reset();

  grace_group *g = new_group(0, 200 * MS);
  grace_worker *w = ticker_worker(g, &t);
  capture_start();
  runner_start(&r, g);
  wait_ready(g);
  grace_ctx_cancel(r.stop);
  fc_poke(&fc);
  wait_event("cleanup begin");
  fc_advance(&fc, 200 * MS - 1);
  assert_false(atomic_load(&r.done));
  assert_int_equal(grace_group_part_get_state(grace_group_find(g, "syncer")),
                   GRACE_GROUP_PART_DRAINING);
  int64_t t0 = grace_now();
  fc_advance(&fc, 1); /* returns once run has */
  int64_t forcing = grace_now() - t0;
  runner_ended(&r);
  const char *log = capture_end();

  /* The cleanup does not watch its context: force waits its 100 ms (real
   * time, the worker's own wait), then says the cleanup is still running;
   * the cleanup is held until after the run, so a force that waited for it
   * would never return. */
  assert_int_equal(r.rv, GRACE_ETIMEDOUT);
  assert_int_equal(since_start(r.t_end), 200 * MS);
  assert_true(forcing >= 100 * MS);
  assert_int_equal(r.res.parts_forced, 1);
  assert_int_equal(r.res.requests_cut, 1);
  assert_string_equal(r.res.cut, "syncer (task or cleanup still running)");
  assert_int_equal(event_index("cleanup end"), -1);
  assert_log_in_order(log, (const char *const[]){
                               "Part \"syncer\" forced in ",
                               ": task or cleanup still running",
                               "Drain report: result=forced", NULL});
  grace_group_free(g);
  latch_open(&t.cleanup);
  grace_worker_free(w); /* waits for the cleanup to return */
  assert_true(event_index("cleanup end") >= 0);
  ticker_destroy(&t);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_phases_run_in_order),
      cmocka_unit_test(test_ready_at_start),
      cmocka_unit_test(test_drain_completes_with_zero_lag),
      cmocka_unit_test(test_deadline_forces_what_is_left),
      cmocka_unit_test(test_hooks_are_awaited),
      cmocka_unit_test(test_hook_error_is_reported),
      cmocka_unit_test(test_hook_given_up_at_deadline),
      cmocka_unit_test(test_shutdown_delay_is_honoured),
      cmocka_unit_test(test_shutdown_delay_cut_by_deadline),
      cmocka_unit_test(test_part_stopping_on_its_own_stops_the_group),
      cmocka_unit_test(test_part_failures),
      cmocka_unit_test(test_api_misuse),
      cmocka_unit_test(test_timeout_for_grace_period),
      cmocka_unit_test(test_env_timeout),
      cmocka_unit_test(test_metrics_text_format),
      cmocka_unit_test(test_http_part_drains_a_real_server),
      cmocka_unit_test(test_http_part_forced_at_deadline),
      cmocka_unit_test(test_grpc_part_not_serving_then_drains_a_call),
      cmocka_unit_test(test_grpc_part_forced_at_deadline),
      cmocka_unit_test(test_worker_part_finishes_its_tick_then_cleans_up),
      cmocka_unit_test(test_worker_part_forced_at_deadline),
  };
  /* The environment of the test run must not steer the groups. */
  unsetenv("NOTIFY_SOCKET");
  clear_env();
  return cmocka_run_group_tests(tests, NULL, NULL);
}
