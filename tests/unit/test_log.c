/*
 * Tests for grace_log: Go's log.LstdFlags format, whole lines under
 * concurrency, truncation, retries, and grace_log_fatal's exit status.
 *
 * Output is captured through a pipe whose read end a thread drains into a
 * growing buffer, so writers never block on a full pipe.
 */
#include <fcntl.h>
#include <pthread.h>
#include <regex.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "grace/log.h"

#define STAMP_RE "[0-9]{4}/[0-9]{2}/[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2} "
#define STAMP_LEN 20
#define LINE_MAX_BYTES 4096 /* PIPE_BUF: the longest line, newline included */

struct capture {
  int rfd, wfd;
  int delay_ms;     /* the reader waits this long before draining */
  size_t read_size; /* 0: large reads; else this many bytes at a time */
  long nap_ns;      /* pause after each read */
  char *buf;
  size_t len, cap;
  pthread_t reader;
};

static void *reader_main(void *arg) {
  struct capture *c = arg;
  char chunk[8192];
  ssize_t r;

  if (c->delay_ms > 0)
    nanosleep(&(struct timespec){0, (long)c->delay_ms * 1000000L}, NULL);
  for (;;) {
    r = read(c->rfd, chunk, c->read_size != 0 ? c->read_size : sizeof(chunk));
    if (r < 0 && errno == EINTR)
      continue;
    if (r <= 0)
      break;
    if (c->len + (size_t)r + 1 > c->cap) {
      c->cap = (c->len + (size_t)r + 1) * 2;
      c->buf = realloc(c->buf, c->cap);
      if (c->buf == NULL)
        abort();
    }
    memcpy(c->buf + c->len, chunk, (size_t)r);
    c->len += (size_t)r;
    c->buf[c->len] = '\0';
    if (c->nap_ns > 0)
      nanosleep(&(struct timespec){0, c->nap_ns}, NULL);
  }
  return NULL;
}

/* Starts draining |rfd| in a thread; |wfd| becomes the log descriptor.  The
 * reader runs with every signal blocked, so signals reach the writer. */
static void capture_start_fds(struct capture *c, int rfd, int wfd, int delay_ms,
                              size_t read_size, long nap_ns) {
  sigset_t all, old;

  memset(c, 0, sizeof(*c));
  c->rfd = rfd;
  c->wfd = wfd;
  c->delay_ms = delay_ms;
  c->read_size = read_size;
  c->nap_ns = nap_ns;
  c->cap = 1;
  c->buf = calloc(1, 1);
  assert_non_null(c->buf);
  sigfillset(&all);
  assert_int_equal(pthread_sigmask(SIG_SETMASK, &all, &old), 0);
  assert_int_equal(pthread_create(&c->reader, NULL, reader_main, c), 0);
  assert_int_equal(pthread_sigmask(SIG_SETMASK, &old, NULL), 0);
  grace_log_set_fd(wfd);
}

static void capture_start(struct capture *c) {
  int fds[2];

  assert_int_equal(pipe(fds), 0);
  capture_start_fds(c, fds[0], fds[1], 0, 0, 0);
}

/* Restores standard error, closes the write end and returns everything
 * logged, NUL terminated; the caller frees c->buf. */
static char *capture_stop(struct capture *c) {
  assert_int_equal(grace_log_set_fd(2), c->wfd);
  assert_int_equal(close(c->wfd), 0);
  assert_int_equal(pthread_join(c->reader, NULL), 0);
  assert_int_equal(close(c->rfd), 0);
  return c->buf;
}

static void assert_matches(const char *text, const char *pattern) {
  regex_t re;
  int rc;

  assert_int_equal(regcomp(&re, pattern, REG_EXTENDED | REG_NOSUB), 0);
  rc = regexec(&re, text, 0, NULL, 0);
  regfree(&re);
  if (rc != 0)
    print_error("'%s' does not match /%s/\n", text, pattern);
  assert_int_equal(rc, 0);
}

static void line_has_go_lstdflags_format(void **state) {
  struct capture c;
  char *out;

  (void)state;
  capture_start(&c);
  grace_log("Shutdown Server %s %d", "...", 42);
  out = capture_stop(&c);
  assert_matches(out, "^" STAMP_RE "Shutdown Server \\.\\.\\. 42\n$");
  free(out);
}

/* Formats |t| as Go's log would, for comparison. */
static void expected_stamp(time_t t, char *buf, size_t len) {
  struct tm tm;

  assert_non_null(localtime_r(&t, &tm));
  assert_int_equal(strftime(buf, len, "%Y/%m/%d %H:%M:%S ", &tm), STAMP_LEN);
}

static void stamp_is_local_time_now(void **state) {
  char *old_tz = getenv("TZ") ? strdup(getenv("TZ")) : NULL;
  char before[32], after[32], utc[32];
  struct capture c;
  struct tm tm;
  time_t t0, t1;
  char *out;

  (void)state;
  /* A zone 5h30 east of UTC with no DST, so local time != UTC. */
  assert_int_equal(setenv("TZ", "IST-5:30", 1), 0);
  tzset();
  capture_start(&c);
  t0 = time(NULL);
  grace_log("tick");
  t1 = time(NULL);
  out = capture_stop(&c);

  expected_stamp(t0, before, sizeof(before));
  expected_stamp(t1, after, sizeof(after));
  assert_int_equal(strlen(out), STAMP_LEN + strlen("tick\n"));
  assert_true(memcmp(out, before, STAMP_LEN) == 0 || memcmp(out, after, STAMP_LEN) == 0);
  assert_non_null(gmtime_r(&t0, &tm));
  strftime(utc, sizeof(utc), "%Y/%m/%d %H:%M:%S ", &tm);
  assert_true(memcmp(out, utc, STAMP_LEN) != 0);
  free(out);

  if (old_tz != NULL)
    setenv("TZ", old_tz, 1);
  else
    unsetenv("TZ");
  free(old_tz);
  tzset();
}

static void newline_is_added_unless_present(void **state) {
  struct capture c;
  char *out;

  (void)state;
  capture_start(&c);
  grace_log("one");
  grace_log("two\n");
  grace_log("%s", "");
  grace_log("three\nfour");
  grace_log("five\n\n");
  out = capture_stop(&c);
  assert_matches(out, "^" STAMP_RE "one\n" STAMP_RE "two\n" STAMP_RE "\n" STAMP_RE
                      "three\nfour\n" STAMP_RE "five\n\n$");
  free(out);
}

static void vlog_call(const char *fmt, ...) GRACE_PRINTF(1, 2);
static void vlog_call(const char *fmt, ...) {
  va_list ap;

  va_start(ap, fmt);
  grace_vlog(fmt, ap);
  va_end(ap);
}

static void vlog_takes_a_va_list(void **state) {
  struct capture c;
  char *out;

  (void)state;
  capture_start(&c);
  vlog_call("%s=%d %5.2f|%-3s|", "x", -7, 3.14159, "a");
  out = capture_stop(&c);
  assert_matches(out, "^" STAMP_RE "x=-7  3\\.14\\|a  \\|\n$");
  free(out);
}

static void null_format_logs_an_empty_line(void **state) {
  /* Through a pointer, so the compiler's format check does not see NULL. */
  void (*volatile log_fn)(const char *, ...) = grace_log;
  struct capture c;
  char *out;

  (void)state;
  capture_start(&c);
  log_fn(NULL);
  out = capture_stop(&c);
  assert_matches(out, "^" STAMP_RE "\n$");
  free(out);
}

static void long_message_is_truncated_to_pipe_buf(void **state) {
  const size_t room = LINE_MAX_BYTES - STAMP_LEN - 1; /* message bytes */
  /* Message length, whether it ends with '\n', and the line it gives. */
  static const struct {
    size_t extra; /* added to room */
    int own_newline;
    size_t line_len;
  } cases[] = {
      {10000, 0, LINE_MAX_BYTES},    /* cut, newline added */
      {0, 0, LINE_MAX_BYTES},        /* exactly fits */
      {1, 1, LINE_MAX_BYTES},        /* only its own '\n' is cut: same line */
      {0, 1, LINE_MAX_BYTES - 1},    /* fits with its own newline */
  };
  char *msg = malloc(room + 10001);
  struct capture c;
  char *out, *line;
  size_t i, j;

  (void)state;
  assert_non_null(msg);
  for (i = 0; i < room + 10000; i++)
    msg[i] = (char)('a' + i % 26);
  capture_start(&c);
  for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    size_t n = room + cases[i].extra;
    char saved = msg[n - 1];

    if (cases[i].own_newline)
      msg[n - 1] = '\n';
    msg[n] = '\0';
    grace_log("%s", msg);
    msg[n - 1] = saved;
    msg[n] = (char)('a' + n % 26);
  }
  out = capture_stop(&c);

  line = out;
  for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    size_t len = cases[i].line_len;

    assert_true(line + len <= out + strlen(out));
    assert_memory_equal(line + STAMP_LEN, msg, len - STAMP_LEN - 1);
    assert_int_equal(line[len - 1], '\n');
    for (j = STAMP_LEN; j < len - 1; j++)
      assert_int_not_equal(line[j], '\n');
    line += len;
  }
  assert_int_equal(line - out, strlen(out));
  free(out);
  free(msg);
}

static void truncation_never_splits_a_character(void **state) {
  const size_t room = LINE_MAX_BYTES - STAMP_LEN - 1;
  char msg[8192];
  struct capture c;
  size_t shift, len;
  char *out;

  (void)state;
  /* "€" is 3 bytes; shift the sequence so that the cut falls on every
   * byte of a character. */
  capture_start(&c);
  for (shift = 0; shift < 3; shift++) {
    memset(msg, 'a', shift);
    for (len = shift; len + 3 < sizeof(msg); len += 3)
      memcpy(msg + len, "\xE2\x82\xAC", 3);
    msg[len] = '\0';
    grace_log("%s", msg);
  }
  out = capture_stop(&c);
  /* Each line ends with whole characters: (room - shift) / 3 of them. */
  len = 0;
  for (shift = 0; shift < 3; shift++) {
    size_t keep = shift + (room - shift) / 3 * 3;
    const char *line = out + len;

    assert_true(keep <= room && keep > room - 3);
    assert_int_equal(line[STAMP_LEN + keep], '\n');
    assert_memory_equal(line + STAMP_LEN + keep - 3, "\xE2\x82\xAC", 3);
    len += STAMP_LEN + keep + 1;
  }
  assert_int_equal(strlen(out), len);
  free(out);
}

#define THREADS 4
#define LINES_PER_THREAD 400

static void *logger_thread(void *arg) {
  int id = (int)(intptr_t)arg;
  char pad[3000];
  int i;

  for (i = 0; i < LINES_PER_THREAD; i++) {
    /* Lengths up to 3000 bytes: a pipe write that large is atomic only
     * because it is a single write(2) of at most PIPE_BUF bytes. */
    size_t n = (size_t)(i * 37 + id * 101) % sizeof(pad);

    memset(pad, 'a' + id, n);
    pad[n] = '\0';
    grace_log("thread %d line %d len %zu %s", id, i, n, pad);
  }
  return NULL;
}

static void lines_from_threads_never_interleave(void **state) {
  int next[THREADS] = {0};
  pthread_t t[THREADS];
  struct capture c;
  regex_t re;
  char *out, *line, *end;
  int i, lines = 0;

  (void)state;
  capture_start(&c);
  for (i = 0; i < THREADS; i++)
    assert_int_equal(pthread_create(&t[i], NULL, logger_thread, (void *)(intptr_t)i), 0);
  for (i = 0; i < THREADS; i++)
    assert_int_equal(pthread_join(t[i], NULL), 0);
  out = capture_stop(&c);

  assert_int_equal(regcomp(&re, "^" STAMP_RE "thread [0-9] line [0-9]+ len [0-9]+ [a-d]*$",
                           REG_EXTENDED | REG_NOSUB),
                   0);
  for (line = out; *line != '\0'; line = end + 1) {
    int id, n;
    size_t len;
    char *pad;

    end = strchr(line, '\n');
    assert_non_null(end);
    *end = '\0';
    assert_int_equal(regexec(&re, line, 0, NULL, 0), 0);
    assert_int_equal(sscanf(line + STAMP_LEN, "thread %d line %d len %zu", &id, &n, &len), 3);
    assert_true(id >= 0 && id < THREADS);
    /* Each thread's lines arrive whole, in order, with its own padding. */
    assert_int_equal(n, next[id]);
    next[id]++;
    pad = strrchr(line, ' ') + 1;
    assert_int_equal(strlen(pad), len);
    assert_int_equal(strspn(pad, (char[]){(char)('a' + id), '\0'}), len);
    lines++;
  }
  regfree(&re);
  assert_int_equal(lines, THREADS * LINES_PER_THREAD);
  free(out);
}

static void fatal_logs_then_exits_with_status_1(void **state) {
  int fds[2], status;
  char buf[256];
  ssize_t n;
  pid_t pid;

  (void)state;
  assert_int_equal(pipe(fds), 0);
  pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    close(fds[0]);
    grace_log_set_fd(fds[1]);
    grace_log_fatal("HTTP server Shutdown: %s", "context deadline exceeded");
  }
  close(fds[1]);
  assert_int_equal(waitpid(pid, &status, 0), pid);
  assert_true(WIFEXITED(status));
  assert_int_equal(WEXITSTATUS(status), 1);
  n = read(fds[0], buf, sizeof(buf) - 1);
  assert_true(n > 0);
  buf[n] = '\0';
  close(fds[0]);
  assert_matches(buf, "^" STAMP_RE "HTTP server Shutdown: context deadline exceeded\n$");
}

static void set_fd_returns_the_previous_fd(void **state) {
  int fd = dup(2);

  (void)state;
  assert_true(fd >= 0);
  assert_int_equal(grace_log_set_fd(fd), 2);
  assert_int_equal(grace_log_set_fd(2), fd);
  assert_int_equal(grace_log_set_fd(2), 2);
  close(fd);
}

static void log_preserves_errno(void **state) {
  struct capture c;

  (void)state;
  capture_start(&c);
  errno = ENOTSOCK;
  grace_log("keep errno");
  assert_int_equal(errno, ENOTSOCK);
  /* Even when the write fails. */
  grace_log_set_fd(-1);
  errno = ECHILD;
  grace_log("to nowhere");
  assert_int_equal(errno, ECHILD);
  grace_log_set_fd(c.wfd);
  free(capture_stop(&c));
}

/* Connects two TCP sockets over 127.0.0.1 with small buffers. */
static void tcp_pair(int *rfd, int *wfd) {
  struct sockaddr_in addr;
  socklen_t alen = sizeof(addr);
  int lfd, small = 2048;

  memset(&addr, 0, sizeof(addr));
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  lfd = socket(AF_INET, SOCK_STREAM, 0);
  assert_true(lfd >= 0);
  assert_int_equal(setsockopt(lfd, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small)), 0);
  assert_int_equal(bind(lfd, (struct sockaddr *)&addr, sizeof(addr)), 0);
  assert_int_equal(listen(lfd, 1), 0);
  assert_int_equal(getsockname(lfd, (struct sockaddr *)&addr, &alen), 0);
  *wfd = socket(AF_INET, SOCK_STREAM, 0);
  assert_true(*wfd >= 0);
  assert_int_equal(setsockopt(*wfd, SOL_SOCKET, SO_SNDBUF, &small, sizeof(small)), 0);
  assert_int_equal(connect(*wfd, (struct sockaddr *)&addr, sizeof(addr)), 0);
  *rfd = accept(lfd, NULL, NULL);
  assert_true(*rfd >= 0);
  close(lfd);
}

static void partial_writes_are_completed(void **state) {
  const size_t room = LINE_MAX_BYTES - STAMP_LEN - 1;
  char msg[4096];
  struct capture c;
  int rfd, wfd, flags, i;
  char *out;

  (void)state;
  /* A non-blocking TCP socket with small buffers, drained slowly in small
   * reads, takes a long line in pieces (a short write(2), or EAGAIN, as
   * room opens up); an AF_UNIX socket or a pipe would not: they take
   * such a write whole or not at all. */
  tcp_pair(&rfd, &wfd);
  flags = fcntl(wfd, F_GETFL);
  assert_int_equal(fcntl(wfd, F_SETFL, flags | O_NONBLOCK), 0);
  memset(msg, 'p', room);
  msg[room] = '\0';
  capture_start_fds(&c, rfd, wfd, 20, 512, 200000);
  for (i = 0; i < 16; i++)
    grace_log("%s", msg);
  out = capture_stop(&c);
  assert_int_equal(strlen(out), 16 * LINE_MAX_BYTES);
  for (i = 0; i < 16; i++) {
    assert_memory_equal(out + i * LINE_MAX_BYTES + STAMP_LEN, msg, room);
    assert_int_equal(out[(i + 1) * LINE_MAX_BYTES - 1], '\n');
  }
  free(out);
}

static volatile sig_atomic_t alarms;

static void on_alarm(int sig) {
  (void)sig;
  alarms++;
}

static void interrupted_writes_are_retried(void **state) {
  struct sigaction sa, old_sa;
  struct itimerval it = {{0, 10000}, {0, 10000}}, off = {{0, 0}, {0, 0}};
  char fill[4096];
  struct capture c;
  int fds[2], flags;
  size_t filled = 0;
  ssize_t r;
  char *out;

  (void)state;
  /* Fill a blocking pipe, so the log write blocks until the late reader
   * drains it; meanwhile SIGALRM (no SA_RESTART) interrupts it with
   * EINTR every 10 ms. */
  assert_int_equal(pipe(fds), 0);
  flags = fcntl(fds[1], F_GETFL);
  assert_int_equal(fcntl(fds[1], F_SETFL, flags | O_NONBLOCK), 0);
  memset(fill, 'f', sizeof(fill));
  while ((r = write(fds[1], fill, sizeof(fill))) > 0)
    filled += (size_t)r;
  assert_int_equal(fcntl(fds[1], F_SETFL, flags), 0);

  memset(&sa, 0, sizeof(sa));
  sa.sa_handler = on_alarm;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = 0;
  assert_int_equal(sigaction(SIGALRM, &sa, &old_sa), 0);
  alarms = 0;
  capture_start_fds(&c, fds[0], fds[1], 200, 0, 0);
  assert_int_equal(setitimer(ITIMER_REAL, &it, NULL), 0);
  grace_log("after the storm");
  assert_int_equal(setitimer(ITIMER_REAL, &off, NULL), 0);
  out = capture_stop(&c);
  assert_int_equal(sigaction(SIGALRM, &old_sa, NULL), 0);

  assert_true(alarms > 0);
  assert_int_equal(c.len, filled + STAMP_LEN + strlen("after the storm\n"));
  assert_matches(out + filled, "^" STAMP_RE "after the storm\n$");
  free(out);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(line_has_go_lstdflags_format),
      cmocka_unit_test(stamp_is_local_time_now),
      cmocka_unit_test(newline_is_added_unless_present),
      cmocka_unit_test(vlog_takes_a_va_list),
      cmocka_unit_test(null_format_logs_an_empty_line),
      cmocka_unit_test(long_message_is_truncated_to_pipe_buf),
      cmocka_unit_test(truncation_never_splits_a_character),
      cmocka_unit_test(lines_from_threads_never_interleave),
      cmocka_unit_test(fatal_logs_then_exits_with_status_1),
      cmocka_unit_test(set_fd_returns_the_previous_fd),
      cmocka_unit_test(log_preserves_errno),
      cmocka_unit_test(partial_writes_are_completed),
      cmocka_unit_test(interrupted_writes_are_retried),
  };

  return cmocka_run_group_tests_name("log", tests, NULL, NULL);
}
