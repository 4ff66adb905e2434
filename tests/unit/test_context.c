/*
 * Unit tests for include/grace/context.h: the tree semantics, the done
 * descriptor (readable exactly when the context is done, with no thread and
 * no call in between), waits that never end early, concurrency (run this
 * under TSan too) and descriptor-exhaustion unwinding.
 */
#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include <poll.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cmocka.h>

#include "grace/context.h"
#include "grace/error.h"

/* Whether |fd| is readable within |ms| milliseconds (0: right now). */
static int readable(int fd, int ms) {
  struct pollfd pfd = {.fd = fd, .events = POLLIN};
  int rv;

  do {
    rv = poll(&pfd, 1, ms);
  } while (rv < 0 && errno == EINTR);
  assert_true(rv >= 0);
  return rv > 0 && (pfd.revents & POLLIN) != 0;
}

static void sleep_ns(int64_t ns) {
  struct timespec ts = {(time_t)(ns / 1000000000), (long)(ns % 1000000000)};

  while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {
  }
}

/* Counts entries of a /proc/self directory (open descriptors, threads). */
static int count_entries(const char *path) {
  DIR *dir = opendir(path);
  struct dirent *e;
  int n = 0;

  assert_non_null(dir);
  while ((e = readdir(dir)) != NULL) {
    if (e->d_name[0] != '.')
      n++;
  }
  closedir(dir);
  return n - (strcmp(path, "/proc/self/fd") == 0); /* opendir's own fd */
}

static grace_ctx *new_cancel(grace_ctx *parent) {
  grace_ctx *ctx = NULL;

  assert_int_equal(grace_ctx_with_cancel(parent, &ctx), 0);
  assert_non_null(ctx);
  return ctx;
}

static grace_ctx *new_timeout(grace_ctx *parent, grace_duration timeout) {
  grace_ctx *ctx = NULL;

  assert_int_equal(grace_ctx_with_timeout(parent, timeout, &ctx), 0);
  assert_non_null(ctx);
  return ctx;
}

static grace_ctx *new_deadline(grace_ctx *parent, int64_t deadline) {
  grace_ctx *ctx = NULL;

  assert_int_equal(grace_ctx_with_deadline(parent, deadline, &ctx), 0);
  assert_non_null(ctx);
  return ctx;
}

static void test_now_is_monotonic(void **state) {
  struct timespec ts;
  int64_t a, b, c;

  (void)state;
  a = grace_now();
  clock_gettime(CLOCK_MONOTONIC, &ts);
  b = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
  c = grace_now();
  assert_true(a <= b && b <= c);
  sleep_ns(2 * GRACE_MILLISECOND);
  assert_true(grace_now() - c >= 2 * GRACE_MILLISECOND);
}

static void test_invalid_arguments(void **state) {
  grace_ctx *untouched = (grace_ctx *)&untouched;
  grace_ctx *bg = grace_ctx_background();

  (void)state;
  assert_int_equal(grace_ctx_with_cancel(NULL, &untouched), GRACE_EINVAL);
  assert_int_equal(grace_ctx_with_timeout(NULL, 1, &untouched), GRACE_EINVAL);
  assert_int_equal(grace_ctx_with_deadline(NULL, 1, &untouched), GRACE_EINVAL);
  assert_ptr_equal(untouched, (grace_ctx *)&untouched);
  assert_int_equal(grace_ctx_with_cancel(bg, NULL), GRACE_EINVAL);
  assert_int_equal(grace_ctx_with_timeout(bg, 1, NULL), GRACE_EINVAL);
  assert_int_equal(grace_ctx_with_deadline(bg, 1, NULL), GRACE_EINVAL);
  assert_int_equal(grace_ctx_err(NULL), GRACE_EINVAL);
  assert_int_equal(grace_ctx_done_fd(NULL), GRACE_EINVAL);
  assert_int_equal(grace_ctx_wait(NULL, 0), GRACE_EINVAL);
  assert_false(grace_ctx_deadline(NULL, NULL));
  assert_null(grace_ctx_ref(NULL));
  grace_ctx_cancel(NULL);
  grace_ctx_unref(NULL);
}

static void test_background_is_never_done(void **state) {
  grace_ctx *bg = grace_ctx_background();
  int64_t deadline = 42, t0;
  int fd;

  (void)state;
  assert_ptr_equal(grace_ctx_background(), bg);
  assert_ptr_equal(grace_ctx_ref(bg), bg);
  grace_ctx_unref(bg);
  grace_ctx_unref(bg);
  grace_ctx_cancel(bg);
  assert_int_equal(grace_ctx_err(bg), 0);
  assert_false(grace_ctx_deadline(bg, &deadline));
  assert_int_equal(deadline, 42);

  fd = grace_ctx_done_fd(bg);
  assert_true(fd >= 0);
  assert_int_equal(grace_ctx_done_fd(bg), fd);
  assert_false(readable(fd, 20));

  t0 = grace_now();
  assert_int_equal(grace_ctx_wait(bg, 20 * GRACE_MILLISECOND), 0);
  assert_true(grace_now() - t0 >= 20 * GRACE_MILLISECOND);
  assert_int_equal(grace_ctx_err(bg), 0);
}

static void test_errors_print_as_go(void **state) {
  grace_ctx *ctx;

  (void)state;
  ctx = new_cancel(grace_ctx_background());
  grace_ctx_cancel(ctx);
  assert_string_equal(grace_strerror(grace_ctx_err(ctx)), "context canceled");
  grace_ctx_unref(ctx);

  ctx = new_timeout(grace_ctx_background(), GRACE_MILLISECOND);
  assert_int_equal(grace_ctx_wait(ctx, -1), GRACE_ETIMEDOUT);
  assert_string_equal(grace_strerror(grace_ctx_err(ctx)),
                      "context deadline exceeded");
  grace_ctx_unref(ctx);
}

static void test_cancel_propagates_down_not_up(void **state) {
  grace_ctx *a, *b, *c, *sibling;
  int fa, fb, fc, fs;

  (void)state;
  a = new_cancel(grace_ctx_background());
  b = new_cancel(a);
  c = new_cancel(b);
  sibling = new_cancel(a);
  fa = grace_ctx_done_fd(a);
  fb = grace_ctx_done_fd(b);
  fc = grace_ctx_done_fd(c);
  fs = grace_ctx_done_fd(sibling);
  assert_true(fa >= 0 && fb >= 0 && fc >= 0 && fs >= 0);

  grace_ctx_cancel(b);
  assert_int_equal(grace_ctx_err(b), GRACE_ECANCELED);
  assert_int_equal(grace_ctx_err(c), GRACE_ECANCELED);
  assert_int_equal(grace_ctx_err(a), 0);
  assert_int_equal(grace_ctx_err(sibling), 0);
  assert_true(readable(fb, 0));
  assert_true(readable(fc, 0));
  assert_false(readable(fa, 0));
  assert_false(readable(fs, 0));

  grace_ctx_cancel(a);
  assert_int_equal(grace_ctx_err(a), GRACE_ECANCELED);
  assert_int_equal(grace_ctx_err(sibling), GRACE_ECANCELED);
  assert_true(readable(fa, 0));
  assert_true(readable(fs, 0));

  grace_ctx_unref(sibling);
  grace_ctx_unref(c);
  grace_ctx_unref(b);
  grace_ctx_unref(a);
}

static void test_child_error_is_the_parents(void **state) {
  grace_ctx *p, *c;

  (void)state;
  /* The parent's deadline passed: the child reports deadline exceeded,
   * and cancelling the child afterwards changes nothing. */
  p = new_timeout(grace_ctx_background(), 0);
  c = new_cancel(p);
  grace_ctx_cancel(c);
  assert_int_equal(grace_ctx_err(c), GRACE_ETIMEDOUT);
  assert_int_equal(grace_ctx_err(p), GRACE_ETIMEDOUT);
  grace_ctx_unref(c);
  grace_ctx_unref(p);

  /* The parent was cancelled: the child's later deadline does not turn its
   * error into deadline exceeded, even if nobody asked before it passed. */
  p = new_cancel(grace_ctx_background());
  c = new_timeout(p, 100 * GRACE_MILLISECOND);
  grace_ctx_cancel(p);
  sleep_ns(120 * GRACE_MILLISECOND);
  assert_int_equal(grace_ctx_err(c), GRACE_ECANCELED);
  grace_ctx_unref(c);
  grace_ctx_unref(p);

  /* The child's deadline passed first, the parent was cancelled later:
   * the earliest cause wins, whenever the question is asked. */
  p = new_cancel(grace_ctx_background());
  c = new_timeout(p, GRACE_MILLISECOND);
  sleep_ns(5 * GRACE_MILLISECOND);
  grace_ctx_cancel(p);
  assert_int_equal(grace_ctx_err(c), GRACE_ETIMEDOUT);
  assert_int_equal(grace_ctx_err(p), GRACE_ECANCELED);
  grace_ctx_unref(c);
  grace_ctx_unref(p);
}

static void test_error_is_sticky(void **state) {
  grace_ctx *ctx;

  (void)state;
  /* Cancelled before the deadline: stays cancelled after it. */
  ctx = new_timeout(grace_ctx_background(), 100 * GRACE_MILLISECOND);
  assert_int_equal(grace_ctx_err(ctx), 0);
  grace_ctx_cancel(ctx);
  assert_int_equal(grace_ctx_err(ctx), GRACE_ECANCELED);
  sleep_ns(120 * GRACE_MILLISECOND);
  assert_int_equal(grace_ctx_err(ctx), GRACE_ECANCELED);
  grace_ctx_unref(ctx);

  /* Cancelled after the deadline: deadline exceeded, as the header says. */
  ctx = new_timeout(grace_ctx_background(), GRACE_MILLISECOND);
  sleep_ns(3 * GRACE_MILLISECOND);
  grace_ctx_cancel(ctx);
  assert_int_equal(grace_ctx_err(ctx), GRACE_ETIMEDOUT);
  grace_ctx_cancel(ctx);
  assert_int_equal(grace_ctx_err(ctx), GRACE_ETIMEDOUT);
  grace_ctx_unref(ctx);
}

static void test_timeout_at_or_below_zero_is_done(void **state) {
  grace_ctx *ctx;
  int64_t deadline;

  (void)state;
  ctx = new_timeout(grace_ctx_background(), 0);
  assert_int_equal(grace_ctx_err(ctx), GRACE_ETIMEDOUT);
  assert_true(readable(grace_ctx_done_fd(ctx), 0));
  grace_ctx_unref(ctx);

  ctx = new_timeout(grace_ctx_background(), INT64_MIN);
  assert_int_equal(grace_ctx_err(ctx), GRACE_ETIMEDOUT);
  assert_true(readable(grace_ctx_done_fd(ctx), 0));
  grace_ctx_unref(ctx);

  /* A deadline before the clock's epoch still arms a (past) timer. */
  ctx = new_deadline(grace_ctx_background(), -5);
  assert_true(grace_ctx_deadline(ctx, &deadline));
  assert_int_equal(deadline, -5);
  assert_true(readable(grace_ctx_done_fd(ctx), 1000));
  assert_int_equal(grace_ctx_err(ctx), GRACE_ETIMEDOUT);
  grace_ctx_unref(ctx);

  /* The far end saturates instead of wrapping into the past. */
  ctx = new_timeout(grace_ctx_background(), INT64_MAX);
  assert_true(grace_ctx_deadline(ctx, &deadline));
  assert_int_equal(deadline, INT64_MAX);
  assert_int_equal(grace_ctx_err(ctx), 0);
  assert_false(readable(grace_ctx_done_fd(ctx), 0));
  grace_ctx_unref(ctx);
}

static void test_deadline_is_the_earliest_of_ancestors(void **state) {
  grace_ctx *bg = grace_ctx_background();
  grace_ctx *p, *later, *sooner, *c;
  int64_t now = grace_now();
  int64_t d = 0;

  (void)state;
  assert_false(grace_ctx_deadline(bg, &d));
  c = new_cancel(bg);
  assert_false(grace_ctx_deadline(c, &d));
  grace_ctx_unref(c);

  p = new_deadline(bg, now + GRACE_HOUR);
  later = new_deadline(p, now + 2 * GRACE_HOUR);
  sooner = new_deadline(later, now + GRACE_MINUTE);
  c = new_cancel(sooner);
  assert_true(grace_ctx_deadline(p, &d));
  assert_int_equal(d, now + GRACE_HOUR);
  assert_true(grace_ctx_deadline(later, &d));
  assert_int_equal(d, now + GRACE_HOUR);
  assert_true(grace_ctx_deadline(sooner, &d));
  assert_int_equal(d, now + GRACE_MINUTE);
  assert_true(grace_ctx_deadline(c, &d));
  assert_int_equal(d, now + GRACE_MINUTE);
  assert_true(grace_ctx_deadline(c, NULL));
  grace_ctx_unref(c);
  grace_ctx_unref(sooner);
  grace_ctx_unref(later);
  grace_ctx_unref(p);

  /* with_timeout is with_deadline at now + timeout. */
  now = grace_now();
  c = new_timeout(bg, GRACE_SECOND);
  assert_true(grace_ctx_deadline(c, &d));
  assert_true(d >= now + GRACE_SECOND && d <= grace_now() + GRACE_SECOND);
  grace_ctx_unref(c);
}

/*
 * Deadlines in these tests are 100 ms away wherever the test checks that
 * the context is not done yet, so that a loaded machine does not fail them.
 *
 * The done descriptor, once obtained, is watched with poll(2) alone: no
 * grace call is made between the moment it is checked not readable and the
 * moment it becomes readable, and no thread exists to make it so.
 */
static void test_done_fd_readable_after_cancel(void **state) {
  int threads = count_entries("/proc/self/task");
  grace_ctx *ctx;
  int fd;

  (void)state;
  ctx = new_cancel(grace_ctx_background());
  fd = grace_ctx_done_fd(ctx);
  assert_true(fd >= 0);
  assert_int_equal(grace_ctx_done_fd(ctx), fd);
  assert_false(readable(fd, 0));
  assert_false(readable(fd, 10));
  grace_ctx_cancel(ctx);
  assert_true(readable(fd, 0));
  /* It stays readable: nothing consumes it. */
  assert_true(readable(fd, 0));
  assert_int_equal(grace_ctx_err(ctx), GRACE_ECANCELED);
  assert_int_equal(count_entries("/proc/self/task"), threads);
  grace_ctx_unref(ctx);
}

static void test_done_fd_readable_at_own_deadline(void **state) {
  int threads = count_entries("/proc/self/task");
  grace_ctx *ctx;
  int64_t deadline;
  int fd;

  (void)state;
  ctx = new_timeout(grace_ctx_background(), 100 * GRACE_MILLISECOND);
  assert_true(grace_ctx_deadline(ctx, &deadline));
  fd = grace_ctx_done_fd(ctx);
  assert_true(fd >= 0);
  assert_false(readable(fd, 0));
  assert_true(readable(fd, 5000));
  assert_true(grace_now() >= deadline);
  assert_int_equal(count_entries("/proc/self/task"), threads);
  assert_int_equal(grace_ctx_err(ctx), GRACE_ETIMEDOUT);
  grace_ctx_unref(ctx);
}

static void test_done_fd_readable_after_ancestor_cancel(void **state) {
  grace_ctx *a, *b, *c;
  int fd;

  (void)state;
  /* Only the grandchild's descriptor is ever asked for. */
  a = new_cancel(grace_ctx_background());
  b = new_timeout(a, GRACE_HOUR);
  c = new_cancel(b);
  fd = grace_ctx_done_fd(c);
  assert_true(fd >= 0);
  assert_false(readable(fd, 0));
  grace_ctx_cancel(a);
  assert_true(readable(fd, 0));
  assert_int_equal(grace_ctx_err(c), GRACE_ECANCELED);
  grace_ctx_unref(c);
  grace_ctx_unref(b);
  grace_ctx_unref(a);
}

static void test_done_fd_readable_at_ancestor_deadline(void **state) {
  grace_ctx *a, *b, *c;
  int64_t deadline;
  int fd;

  (void)state;
  a = new_timeout(grace_ctx_background(), 100 * GRACE_MILLISECOND);
  b = new_cancel(a);
  c = new_timeout(b, GRACE_HOUR);
  assert_true(grace_ctx_deadline(a, &deadline));
  fd = grace_ctx_done_fd(c);
  assert_true(fd >= 0);
  assert_false(readable(fd, 0));
  assert_true(readable(fd, 5000));
  assert_true(grace_now() >= deadline);
  assert_int_equal(grace_ctx_err(c), GRACE_ETIMEDOUT);
  assert_int_equal(grace_ctx_err(b), GRACE_ETIMEDOUT);
  grace_ctx_unref(c);
  grace_ctx_unref(b);
  grace_ctx_unref(a);
}

static void test_done_fd_of_a_done_context(void **state) {
  grace_ctx *a, *b;

  (void)state;
  /* Cancelled before any descriptor existed, its own or its parent's. */
  a = new_cancel(grace_ctx_background());
  b = new_cancel(a);
  grace_ctx_cancel(a);
  assert_true(readable(grace_ctx_done_fd(b), 0));
  assert_true(readable(grace_ctx_done_fd(a), 0));
  grace_ctx_unref(b);
  grace_ctx_unref(a);

  a = new_cancel(grace_ctx_background());
  grace_ctx_cancel(a);
  assert_true(readable(grace_ctx_done_fd(a), 0));
  grace_ctx_unref(a);
}

/*
 * A chain deeper than Linux's limit on nested epoll instances (five), with
 * the done descriptor then put into an epoll set of ours, as an event loop
 * would.
 */
static void test_deep_chain_done_fd(void **state) {
  enum { DEPTH = 12 };
  grace_ctx *chain[DEPTH];
  struct epoll_event ev = {.events = EPOLLIN};
  int ep, fd, i;

  (void)state;
  chain[0] = new_cancel(grace_ctx_background());
  for (i = 1; i < DEPTH; i++)
    chain[i] = new_cancel(chain[i - 1]);
  for (i = DEPTH - 1; i >= 0; i -= 3)
    assert_true(grace_ctx_done_fd(chain[i]) >= 0);
  fd = grace_ctx_done_fd(chain[DEPTH - 1]);
  ep = epoll_create1(EPOLL_CLOEXEC);
  assert_true(ep >= 0);
  assert_int_equal(epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev), 0);
  assert_int_equal(epoll_wait(ep, &ev, 1, 0), 0);
  grace_ctx_cancel(chain[0]);
  assert_int_equal(epoll_wait(ep, &ev, 1, 1000), 1);
  assert_true(readable(fd, 0));
  close(ep);
  /* Releasing the root first: the chain keeps it alive. */
  for (i = 0; i < DEPTH; i++)
    grace_ctx_unref(chain[i]);
}

static void test_wait_never_returns_early(void **state) {
  static const grace_duration timeouts[] = {
      1,
      GRACE_MICROSECOND,
      GRACE_MILLISECOND - 1,
      GRACE_MILLISECOND + 1,
      2 * GRACE_MILLISECOND + GRACE_MILLISECOND / 2,
      10 * GRACE_MILLISECOND + 1,
  };
  grace_ctx *ctx;
  size_t i;

  (void)state;
  ctx = new_cancel(grace_ctx_background());
  for (i = 0; i < sizeof(timeouts) / sizeof(timeouts[0]); i++) {
    int64_t t0 = grace_now();

    assert_int_equal(grace_ctx_wait(ctx, timeouts[i]), 0);
    assert_true(grace_now() - t0 >= timeouts[i]);
  }
  /* A zero timeout only looks. */
  assert_int_equal(grace_ctx_wait(ctx, 0), 0);
  grace_ctx_cancel(ctx);
  assert_int_equal(grace_ctx_wait(ctx, 0), GRACE_ECANCELED);
  assert_int_equal(grace_ctx_wait(ctx, -1), GRACE_ECANCELED);
  grace_ctx_unref(ctx);

  /* Waiting on a deadline ends at it, not before. */
  ctx = new_timeout(grace_ctx_background(), 15 * GRACE_MILLISECOND);
  {
    int64_t deadline;

    assert_true(grace_ctx_deadline(ctx, &deadline));
    assert_int_equal(grace_ctx_wait(ctx, GRACE_HOUR), GRACE_ETIMEDOUT);
    assert_true(grace_now() >= deadline);
  }
  grace_ctx_unref(ctx);
}

static atomic_int usr1_count;

static void on_usr1(int signo) {
  (void)signo;
  atomic_fetch_add(&usr1_count, 1);
}

struct interrupter {
  pthread_t target;
  atomic_bool stop;
};

static void *interrupt_main(void *arg) {
  struct interrupter *it = arg;

  while (!atomic_load(&it->stop)) {
    pthread_kill(it->target, SIGUSR1);
    sleep_ns(2 * GRACE_MILLISECOND);
  }
  return NULL;
}

static void test_wait_resumes_after_eintr(void **state) {
  struct sigaction sa, old;
  struct interrupter it;
  pthread_t thread;
  grace_ctx *ctx;
  int64_t t0, elapsed;

  (void)state;
  memset(&sa, 0, sizeof(sa));
  sa.sa_handler = on_usr1;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = 0; /* no SA_RESTART: poll fails with EINTR */
  assert_int_equal(sigaction(SIGUSR1, &sa, &old), 0);
  atomic_store(&usr1_count, 0);
  it.target = pthread_self();
  atomic_init(&it.stop, false);
  ctx = new_cancel(grace_ctx_background());

  assert_int_equal(pthread_create(&thread, NULL, interrupt_main, &it), 0);
  t0 = grace_now();
  assert_int_equal(grace_ctx_wait(ctx, 60 * GRACE_MILLISECOND), 0);
  elapsed = grace_now() - t0;
  atomic_store(&it.stop, true);
  pthread_join(thread, NULL);

  assert_true(elapsed >= 60 * GRACE_MILLISECOND);
  assert_true(atomic_load(&usr1_count) >= 2);
  assert_int_equal(sigaction(SIGUSR1, &old, NULL), 0);
  grace_ctx_unref(ctx);
}

/* ---- concurrency --------------------------------------------------- */

enum { NTHREADS = 4, ROUNDS = 100 };

struct race {
  pthread_barrier_t barrier;
  grace_ctx *parent;
  grace_ctx *child;
  int parent_fd[NTHREADS];
  int child_fd[NTHREADS];
};

struct racer {
  struct race *race;
  int id;
};

static void *race_main(void *arg) {
  struct racer *r = arg;
  struct race *race = r->race;
  int round;

  for (round = 0; round < ROUNDS; round++) {
    grace_ctx *leaf;

    pthread_barrier_wait(&race->barrier);
    switch (r->id) {
    case 0:
      grace_ctx_cancel(race->parent);
      break;
    case 1:
      (void)grace_ctx_err(race->child);
      grace_ctx_cancel(race->child);
      break;
    case 2:
      leaf = new_cancel(race->child);
      (void)grace_ctx_done_fd(leaf);
      grace_ctx_unref(leaf);
      break;
    default:
      (void)grace_ctx_wait(race->child, 0);
      break;
    }
    race->parent_fd[r->id] = grace_ctx_done_fd(race->parent);
    race->child_fd[r->id] = grace_ctx_done_fd(race->child);
    (void)grace_ctx_err(race->child);
    pthread_barrier_wait(&race->barrier);
    /* The main thread checks and sets up the next round. */
    pthread_barrier_wait(&race->barrier);
  }
  return NULL;
}

static void test_concurrent_cancel_err_done_fd(void **state) {
  struct race race;
  struct racer racers[NTHREADS];
  pthread_t threads[NTHREADS];
  int round, i;

  (void)state;
  memset(&race, 0, sizeof(race));
  assert_int_equal(pthread_barrier_init(&race.barrier, NULL, NTHREADS + 1), 0);
  for (i = 0; i < NTHREADS; i++) {
    racers[i].race = &race;
    racers[i].id = i;
  }
  race.parent = new_cancel(grace_ctx_background());
  race.child = new_timeout(race.parent, GRACE_HOUR);
  for (i = 0; i < NTHREADS; i++)
    assert_int_equal(pthread_create(&threads[i], NULL, race_main, &racers[i]),
                     0);
  for (round = 0; round < ROUNDS; round++) {
    pthread_barrier_wait(&race.barrier); /* go */
    pthread_barrier_wait(&race.barrier); /* done */
    for (i = 0; i < NTHREADS; i++) {
      assert_true(race.parent_fd[i] >= 0);
      assert_int_equal(race.parent_fd[i], race.parent_fd[0]);
      assert_int_equal(race.child_fd[i], race.child_fd[0]);
    }
    assert_int_equal(grace_ctx_err(race.parent), GRACE_ECANCELED);
    assert_int_equal(grace_ctx_err(race.child), GRACE_ECANCELED);
    assert_true(readable(race.parent_fd[0], 0));
    assert_true(readable(race.child_fd[0], 0));
    grace_ctx_unref(race.child);
    grace_ctx_unref(race.parent);
    race.parent = new_cancel(grace_ctx_background());
    race.child = new_timeout(race.parent, GRACE_HOUR);
    pthread_barrier_wait(&race.barrier); /* next */
  }
  for (i = 0; i < NTHREADS; i++)
    pthread_join(threads[i], NULL);
  grace_ctx_unref(race.child);
  grace_ctx_unref(race.parent);
  pthread_barrier_destroy(&race.barrier);
}

static void *wait_forever(void *arg) {
  return (void *)(intptr_t)grace_ctx_wait(arg, -1);
}

static void test_waiters_wake_on_cancel_from_another_thread(void **state) {
  pthread_t threads[NTHREADS];
  grace_ctx *ctx;
  void *ret;
  int i;

  (void)state;
  ctx = new_cancel(grace_ctx_background());
  for (i = 0; i < NTHREADS; i++)
    assert_int_equal(pthread_create(&threads[i], NULL, wait_forever, ctx), 0);
  sleep_ns(10 * GRACE_MILLISECOND);
  grace_ctx_cancel(ctx);
  for (i = 0; i < NTHREADS; i++) {
    pthread_join(threads[i], &ret);
    assert_int_equal((intptr_t)ret, GRACE_ECANCELED);
  }
  grace_ctx_unref(ctx);
}

/* ---- ownership ----------------------------------------------------- */

static void test_parent_released_before_child(void **state) {
  grace_ctx *p, *extra, *c, *g;
  int64_t deadline, d;
  int fd;

  (void)state;
  p = new_timeout(grace_ctx_background(), 100 * GRACE_MILLISECOND);
  assert_true(grace_ctx_deadline(p, &deadline));
  extra = grace_ctx_ref(p);
  assert_ptr_equal(extra, p);
  c = new_cancel(p);
  grace_ctx_unref(p);
  grace_ctx_unref(extra);
  /* Only |c| holds the parent now. */
  fd = grace_ctx_done_fd(c);
  assert_true(fd >= 0);
  g = new_cancel(c);
  assert_true(grace_ctx_deadline(g, &d));
  assert_int_equal(d, deadline);
  assert_false(readable(fd, 0));
  assert_true(readable(fd, 5000));
  assert_int_equal(grace_ctx_err(c), GRACE_ETIMEDOUT);
  assert_int_equal(grace_ctx_err(g), GRACE_ETIMEDOUT);
  grace_ctx_unref(c);
  assert_true(readable(grace_ctx_done_fd(g), 0));
  grace_ctx_unref(g);
}

static void test_releasing_does_not_cancel(void **state) {
  grace_ctx *p, *c;

  (void)state;
  p = new_cancel(grace_ctx_background());
  c = new_cancel(p);
  grace_ctx_unref(p);
  assert_int_equal(grace_ctx_err(c), 0);
  assert_false(readable(grace_ctx_done_fd(c), 0));
  grace_ctx_unref(c);
}

/*
 * Runs out of descriptors at every step of building a done descriptor:
 * each failure reports GRACE_EMFILE, leaks nothing, and leaves the context
 * able to build it later.
 */
static void test_done_fd_unwinds_on_emfile(void **state) {
  struct rlimit old, low;
  int baseline = count_entries("/proc/self/fd");
  int fillers[64];
  int free_fds, nfill, i, rv = -1;

  (void)state;
  assert_int_equal(getrlimit(RLIMIT_NOFILE, &old), 0);
  low = old;
  low.rlim_cur = 64;
  assert_int_equal(setrlimit(RLIMIT_NOFILE, &low), 0);

  for (free_fds = 0; free_fds <= 8 && rv < 0; free_fds++) {
    grace_ctx *a = new_cancel(grace_ctx_background());
    grace_ctx *b = new_timeout(a, GRACE_HOUR);
    grace_ctx *c = new_cancel(b);

    nfill = 0;
    while (nfill < 64 && (fillers[nfill] = dup(0)) >= 0)
      nfill++;
    assert_int_equal(errno, EMFILE);
    for (i = 0; i < free_fds; i++)
      close(fillers[--nfill]);

    rv = grace_ctx_done_fd(c);
    if (rv < 0)
      assert_int_equal(rv, GRACE_EMFILE);
    for (i = 0; i < nfill; i++)
      close(fillers[i]);

    /* Whatever happened, the context works now. */
    assert_true(grace_ctx_done_fd(c) >= 0);
    assert_false(readable(grace_ctx_done_fd(c), 0));
    grace_ctx_cancel(a);
    assert_true(readable(grace_ctx_done_fd(c), 0));
    grace_ctx_unref(c);
    grace_ctx_unref(b);
    grace_ctx_unref(a);
    assert_int_equal(count_entries("/proc/self/fd"), baseline);
  }
  /* It took five: the epoll instance, the eventfds of c, b and a, and the
   * timerfd; every step before that failed cleanly. */
  assert_true(rv >= 0);
  assert_int_equal(free_fds - 1, 5);
  assert_int_equal(setrlimit(RLIMIT_NOFILE, &old), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_now_is_monotonic),
      cmocka_unit_test(test_invalid_arguments),
      cmocka_unit_test(test_background_is_never_done),
      cmocka_unit_test(test_errors_print_as_go),
      cmocka_unit_test(test_cancel_propagates_down_not_up),
      cmocka_unit_test(test_child_error_is_the_parents),
      cmocka_unit_test(test_error_is_sticky),
      cmocka_unit_test(test_timeout_at_or_below_zero_is_done),
      cmocka_unit_test(test_deadline_is_the_earliest_of_ancestors),
      cmocka_unit_test(test_done_fd_readable_after_cancel),
      cmocka_unit_test(test_done_fd_readable_at_own_deadline),
      cmocka_unit_test(test_done_fd_readable_after_ancestor_cancel),
      cmocka_unit_test(test_done_fd_readable_at_ancestor_deadline),
      cmocka_unit_test(test_done_fd_of_a_done_context),
      cmocka_unit_test(test_deep_chain_done_fd),
      cmocka_unit_test(test_wait_never_returns_early),
      cmocka_unit_test(test_wait_resumes_after_eintr),
      cmocka_unit_test(test_concurrent_cancel_err_done_fd),
      cmocka_unit_test(test_waiters_wake_on_cancel_from_another_thread),
      cmocka_unit_test(test_parent_released_before_child),
      cmocka_unit_test(test_releasing_does_not_cancel),
      cmocka_unit_test(test_done_fd_unwinds_on_emfile),
  };

  return cmocka_run_group_tests(tests, NULL, NULL);
}
