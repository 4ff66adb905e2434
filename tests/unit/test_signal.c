/*
 * Unit tests for include/grace/signal.h.  Signal handlers are process-wide
 * and the signal context can be set up once per process, so every case runs
 * in a forked child; the parent drives it with real signals (kill(2)) and
 * reads what it reports, line by line, through a pipe.
 */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <poll.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "grace/context.h"
#include "grace/signal.h"

/* Generous: the children may run under valgrind. */
#define CHILD_TIMEOUT_MS 20000

struct child {
  pid_t pid;
  int report; /* read end of the child's report pipe */
  int err;    /* read end of the child's standard error */
  int input;  /* write end of the child's input pipe */
};

/* In the child: the fds the body talks through. */
static int report_fd = -1;
static int input_fd = -1;

/* Child side: one line to the parent, or exit 99 if that fails. */
static void say(const char *line) {
  size_t len = strlen(line);

  if (write(report_fd, line, len) != (ssize_t)len ||
      write(report_fd, "\n", 1) != 1)
    _exit(99);
}

/* Child side: exits with |code| unless |ok|; codes name the failed check. */
static void check(int ok, int code) {
  if (!ok)
    _exit(code);
}

static int readable(int fd, int ms) {
  struct pollfd pfd = {.fd = fd, .events = POLLIN};
  int rv;

  do {
    rv = poll(&pfd, 1, ms);
  } while (rv < 0 && errno == EINTR);
  return rv > 0 && (pfd.revents & POLLIN) != 0;
}

static void sleep_ms(long ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000};

  while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {
  }
}

static void spawn(struct child *c, void (*body)(void)) {
  int rep[2], err[2], in[2];

  assert_int_equal(pipe(rep), 0);
  assert_int_equal(pipe(err), 0);
  assert_int_equal(pipe(in), 0);
  c->pid = fork();
  assert_true(c->pid >= 0);
  if (c->pid == 0) {
    close(rep[0]);
    close(err[0]);
    close(in[1]);
    if (dup2(err[1], STDERR_FILENO) < 0)
      _exit(98);
    close(err[1]);
    report_fd = rep[1];
    input_fd = in[0];
    body();
    _exit(0);
  }
  close(rep[1]);
  close(err[1]);
  close(in[0]);
  c->report = rep[0];
  c->err = err[0];
  c->input = in[1];
}

/* Reads one line from the child and checks it is |expected|. */
static void expect_line(struct child *c, const char *expected) {
  char line[128];
  size_t n = 0;

  for (;;) {
    assert_true(readable(c->report, CHILD_TIMEOUT_MS));
    assert_int_equal(read(c->report, &line[n], 1), 1);
    if (line[n] == '\n')
      break;
    assert_true(++n < sizeof(line));
  }
  line[n] = '\0';
  assert_string_equal(line, expected);
}

/* Waits for the child to end (killing it after the timeout) and returns its
 * wait status; |errbuf| receives its standard error. */
static int reap(struct child *c, char *errbuf, size_t errlen) {
  size_t n = 0;
  int status = 0;
  int waited = 0;
  pid_t rv;

  while ((rv = waitpid(c->pid, &status, WNOHANG)) == 0 &&
         waited < CHILD_TIMEOUT_MS) {
    sleep_ms(5);
    waited += 5;
  }
  if (rv == 0) {
    kill(c->pid, SIGKILL);
    waitpid(c->pid, &status, 0);
    fail_msg("child %d did not end", (int)c->pid);
  }
  while (n + 1 < errlen && readable(c->err, 0)) {
    ssize_t got = read(c->err, errbuf + n, errlen - 1 - n);

    if (got <= 0)
      break;
    n += (size_t)got;
  }
  if (errlen > 0)
    errbuf[n] = '\0';
  close(c->report);
  close(c->err);
  close(c->input);
  return status;
}

static void expect_exit(struct child *c, int code) {
  char err[1024];
  int status = reap(c, err, sizeof(err));

  if (!WIFEXITED(status) || WEXITSTATUS(status) != code)
    fail_msg("child status %#x (exit %d, signal %d), want exit %d; stderr: %s",
             status, WIFEXITED(status) ? WEXITSTATUS(status) : -1,
             WIFSIGNALED(status) ? WTERMSIG(status) : 0, code, err);
}

/* ---- children --------------------------------------------------------- */

/* Set up, report, wait for the first signal, report again. */
static grace_ctx *setup_and_wait_for_first_signal(void) {
  grace_ctx *ctx = grace_signal_context();

  check(ctx != NULL, 10);
  check(grace_ctx_err(ctx) == 0, 11);
  say("ready");
  check(grace_ctx_wait(ctx, -1) == GRACE_ECANCELED, 12);
  check(readable(grace_ctx_done_fd(ctx), 0), 13);
  say("canceled");
  return ctx;
}

static void body_first_signal_keeps_running(void) {
  grace_ctx *ctx = setup_and_wait_for_first_signal();

  /* The process goes on with its graceful shutdown. */
  sleep_ms(20);
  check(grace_ctx_err(ctx) == GRACE_ECANCELED, 20);
  say("alive");
}

static void body_paused(void) {
  (void)setup_and_wait_for_first_signal();
  for (;;)
    pause();
}

static void body_sleeping(void) {
  (void)setup_and_wait_for_first_signal();
  sleep_ms(60000);
  _exit(30);
}

/* Waits for input that never comes.  poll first: ThreadSanitizer (clang
 * 14) runs a signal handler at once only for a thread inside a call it
 * knows blocks (poll is one, read is not): a signal that lands during a
 * read would wait for the read to return, which is never here. */
static void *block_on_input(void *arg) {
  struct pollfd pfd = {.fd = input_fd, .events = POLLIN};
  char c;

  (void)arg;
  for (;;) {
    if (poll(&pfd, 1, -1) < 0 && errno != EINTR)
      break;
    if ((pfd.revents & (POLLIN | POLLHUP)) != 0 && read(input_fd, &c, 1) <= 0)
      break;
  }
  return NULL;
}

#if defined(__SANITIZE_THREAD__)
#define UNDER_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define UNDER_TSAN 1
#endif
#endif

/* Every thread stuck: the main one joins one that waits for a silent pipe.
 * ThreadSanitizer defers a signal that lands on a thread inside
 * pthread_join until the join returns (never, here), so under it the main
 * thread is stuck waiting for the same pipe instead, and the new thread
 * starts with both signals blocked so that they land on the main thread:
 * one landing on the new thread while it is still starting inside the
 * sanitizer's runtime would be held there.  Either way no thread ever gets
 * back to the program, and the handler alone must end the process.  "stuck"
 * is said just before the last blocking call; the parent sends the second
 * signal only then. */
static void body_all_threads_stuck(void) {
  pthread_t thread;
#ifdef UNDER_TSAN
  sigset_t both, old;
#endif

  (void)setup_and_wait_for_first_signal();
#ifdef UNDER_TSAN
  sigemptyset(&both);
  sigaddset(&both, SIGINT);
  sigaddset(&both, SIGTERM);
  check(pthread_sigmask(SIG_BLOCK, &both, &old) == 0, 32);
  check(pthread_create(&thread, NULL, block_on_input, NULL) == 0, 30);
  check(pthread_sigmask(SIG_SETMASK, &old, NULL) == 0, 33);
  say("stuck");
  (void)block_on_input(NULL);
#else
  check(pthread_create(&thread, NULL, block_on_input, NULL) == 0, 30);
  say("stuck");
  pthread_join(thread, NULL);
#endif
  _exit(31);
}

static void *spin_on(void *arg) {
  for (;;) {
    (void)grace_ctx_err(arg);
    (void)grace_ctx_done_fd(arg);
  }
  return NULL;
}

static void body_spinning(void) {
  grace_ctx *ctx = grace_signal_context();
  pthread_t thread;

  check(pthread_create(&thread, NULL, spin_on, ctx) == 0, 10);
  say("ready");
  spin_on(ctx);
}

static void body_setup_twice(void) {
  struct rlimit no_core = {0, 0};

  (void)setrlimit(RLIMIT_CORE, &no_core);
  (void)grace_signal_context();
  say("first");
  (void)grace_signal_context();
  say("unreachable");
}

static void body_request_shutdown(void) {
  grace_ctx *ctx;

  check(!grace_request_shutdown(), 10);
  ctx = grace_signal_context();
  check(grace_ctx_err(ctx) == 0, 11);
  check(grace_request_shutdown(), 12);
  check(grace_ctx_err(ctx) == GRACE_ECANCELED, 13);
  check(readable(grace_ctx_done_fd(ctx), 0), 14);
  say("first");
  (void)grace_request_shutdown();
  _exit(15);
}

static void body_request_then_signal(void) {
  check(grace_signal_context() != NULL, 10);
  check(grace_request_shutdown(), 11);
  say("first");
  raise(SIGINT);
  _exit(12);
}

static void *request_from_thread(void *arg) {
  (void)arg;
  return (void *)(intptr_t)grace_request_shutdown();
}

static void body_request_from_thread(void) {
  grace_ctx *ctx = grace_signal_context();
  pthread_t thread;
  void *ret;

  check(pthread_create(&thread, NULL, request_from_thread, NULL) == 0, 10);
  pthread_join(thread, &ret);
  check((intptr_t)ret == 1, 11);
  check(grace_ctx_wait(ctx, -1) == GRACE_ECANCELED, 12);
}

/* Writes to a pipe whose reader is gone; returns errno, or 0. */
static int write_to_closed_pipe(void) {
  int p[2];
  ssize_t rv;

  check(pipe(p) == 0, 40);
  close(p[0]);
  rv = write(p[1], "x", 1);
  close(p[1]);
  return rv < 0 ? errno : 0;
}

static void body_sigpipe_default(void) {
  signal(SIGPIPE, SIG_DFL);
  (void)write_to_closed_pipe();
  _exit(41); /* not reached: SIGPIPE kills */
}

static void body_sigpipe_ignored(void) {
  signal(SIGPIPE, SIG_DFL);
  check(grace_ignore_sigpipe() == 0, 10);
  check(grace_ignore_sigpipe() == 0, 11);
  check(write_to_closed_pipe() == EPIPE, 12);
}

static void body_sigpipe_ignored_by_setup(void) {
  signal(SIGPIPE, SIG_DFL);
  check(grace_signal_context() != NULL, 10);
  check(write_to_closed_pipe() == EPIPE, 11);
}

static void body_done_fd_without_calls(void) {
  grace_ctx *ctx = grace_signal_context();
  int fd = grace_ctx_done_fd(ctx);

  check(fd >= 0, 10);
  check(!readable(fd, 0), 11);
  say("ready");
  /* Nothing but poll(2) from here until the signal has been handled. */
  check(readable(fd, CHILD_TIMEOUT_MS), 12);
  say("readable");
  check(grace_ctx_err(ctx) == GRACE_ECANCELED, 13);
}

static void body_raise_in_handler_preserves_errno(void) {
  grace_ctx *ctx = grace_signal_context();
  int fd = grace_ctx_done_fd(ctx);

  check(!readable(fd, 0), 10);
  errno = EDOM;
  raise(SIGTERM); /* the handler has run when raise returns */
  check(errno == EDOM, 11);
  check(readable(fd, 0), 12);
  check(grace_ctx_err(ctx) == GRACE_ECANCELED, 13);
}

static void body_handlers_restart_syscalls(void) {
  struct sigaction sa;
  grace_ctx *ctx = grace_signal_context();
  char c;

  check(sigaction(SIGINT, NULL, &sa) == 0, 10);
  check(sa.sa_handler != SIG_DFL && sa.sa_handler != SIG_IGN, 11);
  check((sa.sa_flags & SA_RESTART) != 0, 12);
  check(sigaction(SIGTERM, NULL, &sa) == 0, 13);
  check(sa.sa_handler != SIG_DFL && sa.sa_handler != SIG_IGN, 14);
  check((sa.sa_flags & SA_RESTART) != 0, 15);
  check(sigaction(SIGPIPE, NULL, &sa) == 0, 16);
  check(sa.sa_handler == SIG_IGN, 17);
  say("ready");
  /* The first signal comes while this read blocks: it must not fail. */
  check(read(input_fd, &c, 1) == 1, 18);
  check(grace_ctx_err(ctx) == GRACE_ECANCELED, 19);
}

/* ---- tests ------------------------------------------------------------- */

static void test_first_sigterm_cancels_and_process_keeps_running(void **state) {
  struct child c;

  (void)state;
  spawn(&c, body_first_signal_keeps_running);
  expect_line(&c, "ready");
  assert_int_equal(kill(c.pid, SIGTERM), 0);
  expect_line(&c, "canceled");
  expect_line(&c, "alive");
  expect_exit(&c, 0);
}

static void second_signal_exits(void (*body)(void), int first, int second) {
  struct child c;

  spawn(&c, body);
  expect_line(&c, "ready");
  assert_int_equal(kill(c.pid, first), 0);
  expect_line(&c, "canceled");
  assert_int_equal(kill(c.pid, second), 0);
  expect_exit(&c, 1);
}

static void test_second_signal_exits_1_while_paused(void **state) {
  (void)state;
  second_signal_exits(body_paused, SIGTERM, SIGINT);
  second_signal_exits(body_paused, SIGINT, SIGINT);
}

static void test_second_signal_exits_1_while_sleeping(void **state) {
  (void)state;
  second_signal_exits(body_sleeping, SIGTERM, SIGINT);
  second_signal_exits(body_sleeping, SIGTERM, SIGTERM);
}

static void test_second_signal_exits_1_with_all_threads_stuck(void **state) {
  struct child c;

  (void)state;
  spawn(&c, body_all_threads_stuck);
  expect_line(&c, "ready");
  assert_int_equal(kill(c.pid, SIGINT), 0);
  expect_line(&c, "canceled");
  expect_line(&c, "stuck");
  assert_int_equal(kill(c.pid, SIGTERM), 0);
  expect_exit(&c, 1);
}

/*
 * Both signals sent back to back at a process whose threads spin on the
 * context.  Two different signals, because POSIX merges two pending
 * instances of the same one into one delivery.
 */
static void test_back_to_back_signals_exit_1_while_spinning(void **state) {
  int round;

  (void)state;
  for (round = 0; round < 10; round++) {
    struct child c;

    spawn(&c, body_spinning);
    expect_line(&c, "ready");
    assert_int_equal(kill(c.pid, round % 2 ? SIGINT : SIGTERM), 0);
    assert_int_equal(kill(c.pid, round % 2 ? SIGTERM : SIGINT), 0);
    expect_exit(&c, 1);
  }
}

static void test_second_setup_aborts_with_message(void **state) {
  struct child c;
  char err[1024];
  int status;

  (void)state;
  spawn(&c, body_setup_twice);
  expect_line(&c, "first");
  status = reap(&c, err, sizeof(err));
  assert_true(WIFSIGNALED(status));
  assert_int_equal(WTERMSIG(status), SIGABRT);
  /* The message is the first line, whatever a tool adds after it. */
  assert_true(strncmp(err, "grace: grace_signal_context called twice\n",
                      strlen("grace: grace_signal_context called twice\n")) ==
              0);
}

static void test_request_shutdown(void **state) {
  struct child c;

  (void)state;
  spawn(&c, body_request_shutdown);
  expect_line(&c, "first");
  expect_exit(&c, 1);

  spawn(&c, body_request_then_signal);
  expect_line(&c, "first");
  expect_exit(&c, 1);

  spawn(&c, body_request_from_thread);
  expect_exit(&c, 0);
}

static void test_sigpipe_is_ignored(void **state) {
  struct child c;
  char err[256];
  int status;

  (void)state;
  /* Without grace, the write kills the process... */
  spawn(&c, body_sigpipe_default);
  status = reap(&c, err, sizeof(err));
  assert_true(WIFSIGNALED(status));
  assert_int_equal(WTERMSIG(status), SIGPIPE);
  /* ...with it, the write fails with EPIPE. */
  spawn(&c, body_sigpipe_ignored);
  expect_exit(&c, 0);
  spawn(&c, body_sigpipe_ignored_by_setup);
  expect_exit(&c, 0);
}

static void test_done_fd_readable_after_signal(void **state) {
  struct child c;

  (void)state;
  spawn(&c, body_done_fd_without_calls);
  expect_line(&c, "ready");
  assert_int_equal(kill(c.pid, SIGTERM), 0);
  expect_line(&c, "readable");
  expect_exit(&c, 0);

  spawn(&c, body_raise_in_handler_preserves_errno);
  expect_exit(&c, 0);
}

static void test_handlers_restart_interrupted_calls(void **state) {
  struct child c;

  (void)state;
  spawn(&c, body_handlers_restart_syscalls);
  expect_line(&c, "ready");
  /* Give the signal time to land inside the blocked read(2). */
  sleep_ms(50);
  assert_int_equal(kill(c.pid, SIGTERM), 0);
  sleep_ms(50);
  assert_int_equal(write(c.input, "x", 1), 1);
  expect_exit(&c, 0);
}

int main(void) {
  sigset_t none;
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_first_sigterm_cancels_and_process_keeps_running),
      cmocka_unit_test(test_second_signal_exits_1_while_paused),
      cmocka_unit_test(test_second_signal_exits_1_while_sleeping),
      cmocka_unit_test(test_second_signal_exits_1_with_all_threads_stuck),
      cmocka_unit_test(test_back_to_back_signals_exit_1_while_spinning),
      cmocka_unit_test(test_second_setup_aborts_with_message),
      cmocka_unit_test(test_request_shutdown),
      cmocka_unit_test(test_sigpipe_is_ignored),
      cmocka_unit_test(test_done_fd_readable_after_signal),
      cmocka_unit_test(test_handlers_restart_interrupted_calls),
  };

  /* A parent that ignores SIGPIPE or blocks signals must not skew the
   * children: start them from the defaults. */
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, NULL);
  signal(SIGINT, SIG_DFL);
  signal(SIGTERM, SIG_DFL);
  return cmocka_run_group_tests(tests, NULL, NULL);
}
