/*
 * Unit tests of the zero-downtime upgrader (src/upgrade/upgrade.c).  One
 * upgrader may exist per process, and it reads and clears the environment,
 * adopts descriptors 3, 4, ... and installs a signal handler: every case
 * runs in a forked child.  The predecessor's side of an inheritance is
 * played by the test (descriptors moved to 3, 4, 5 and the variables set
 * by hand, the control channel read and written on the other end of a
 * socketpair); a real upgrade re-executes this test program with
 * "--successor" (see successor_main), which then behaves as the next
 * generation would.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "grace/context.h"
#include "grace/upgrade.h"

#define MS GRACE_MILLISECOND

/* The mode of a re-executed successor (successor_main). */
#define MODE_ENV "GRACE_TEST_SUCCESSOR"
/* A file the "hang" successor creates once it runs. */
#define MARK_ENV "GRACE_TEST_MARK"
/* What the predecessor passes under "state" and the successor reads. */
#define STATE_TEXT "from generation 1"

static char tmpdir[64];
static char self_exe[PATH_MAX]; /* argv[0] of this program */
static char arg_successor[] = "--successor";

/* ---- helpers ------------------------------------------------------------- */

/* In the children: a failed check prints where and exits non-zero. */
#define CHECK(cond)                                                            \
  do {                                                                         \
    if (!(cond)) {                                                             \
      fprintf(stderr, "child check failed at line %d: %s\n", __LINE__, #cond); \
      return __LINE__ % 250 + 1;                                               \
    }                                                                          \
  } while (0)

/* An integer comparison that prints both values when it fails. */
#define CHECK_EQ(a, b)                                                         \
  do {                                                                         \
    long a_ = (long)(a), b_ = (long)(b);                                       \
    if (a_ != b_) {                                                            \
      fprintf(stderr, "child check failed at line %d: %s == %s (%ld, %ld)\n",  \
              __LINE__, #a, #b, a_, b_);                                       \
      return __LINE__ % 250 + 1;                                               \
    }                                                                          \
  } while (0)

/* A substring check on a message, printing it when it fails. */
#define CHECK_HAS(msg, want)                                                   \
  do {                                                                         \
    if (strstr((msg), (want)) == NULL) {                                       \
      fprintf(stderr, "child check failed at line %d: \"%s\" lacks \"%s\"\n",  \
              __LINE__, (msg), (want));                                        \
      return __LINE__ % 250 + 1;                                               \
    }                                                                          \
  } while (0)

/* Runs |fn| in a child process; asserts that it returned 0.  The child
 * exits with exit(3), not _exit, so that a leak check runs there. */
static void in_child(int (*fn)(void)) {
  fflush(NULL);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    alarm(30); /* a hang fails the case rather than the whole run */
    exit(fn());
  }
  int status;
  assert_int_equal(waitpid(pid, &status, 0), pid);
  assert_true(WIFEXITED(status));
  assert_int_equal(WEXITSTATUS(status), 0);
}

static void sleep_ms(long ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}

static int tcp_port(int fd) {
  struct sockaddr_in sa;
  socklen_t len = sizeof(sa);
  if (getsockname(fd, (struct sockaddr *)&sa, &len) != 0 ||
      sa.sin_family != AF_INET)
    return -1;
  return ntohs(sa.sin_port);
}

/* Connects to 127.0.0.1:|port|: 0, or the negated errno. */
static int connect_port(int port) {
  struct sockaddr_in sa = {.sin_family = AF_INET,
                           .sin_port = htons((uint16_t)port)};
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return -errno;
  int rv = connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 ? 0 : -errno;
  close(fd);
  return rv;
}

static void unix_addr(struct sockaddr_un *sa, const char *path) {
  memset(sa, 0, sizeof(*sa));
  sa->sun_family = AF_UNIX;
  snprintf(sa->sun_path, sizeof(sa->sun_path), "%s", path);
}

/* A stream socket connected to |path|, or the negated errno. */
static int connect_unix(const char *path) {
  struct sockaddr_un sa;
  unix_addr(&sa, path);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return -errno;
  if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
    int rv = -errno;
    close(fd);
    return rv;
  }
  return fd;
}

/* A stream socket bound to |path|, listening when |listening|. */
static int bind_unix(const char *path, bool listening) {
  struct sockaddr_un sa;
  unix_addr(&sa, path);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 ||
      (listening && listen(fd, 4) != 0))
    return -1;
  return fd;
}

/* Reads one line (without its newline) within |ms|: its length, or -1. */
static int read_line(int fd, char *buf, size_t cap, int ms) {
  size_t n = 0;
  int64_t until = grace_now() + (int64_t)ms * MS;
  while (n + 1 < cap) {
    int64_t left = (until - grace_now()) / MS;
    struct pollfd p = {.fd = fd, .events = POLLIN};
    if (left < 0 || poll(&p, 1, (int)left) != 1)
      return -1;
    char c;
    if (read(fd, &c, 1) != 1)
      return -1;
    if (c == '\n') {
      buf[n] = '\0';
      return (int)n;
    }
    buf[n++] = c;
  }
  return -1;
}

static bool write_str(int fd, const char *s) {
  size_t n = strlen(s);
  return write(fd, s, n) == (ssize_t)n;
}

/* The PID in |path|; 0 if the file is missing or holds no number. */
static long pidfile_pid(const char *path) {
  char text[32];
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return 0;
  ssize_t n = read(fd, text, sizeof(text) - 1);
  close(fd);
  if (n <= 0 || text[n - 1] != '\n')
    return 0;
  text[n] = '\0';
  return strtol(text, NULL, 10);
}

static bool cloexec(int fd) {
  int fl = fcntl(fd, F_GETFD);
  return fl >= 0 && (fl & FD_CLOEXEC) != 0;
}

static bool is_open(int fd) { return fcntl(fd, F_GETFD) >= 0; }

static bool listening(int fd) {
  int acc = 0;
  socklen_t len = sizeof(acc);
  return getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &acc, &len) == 0 && acc;
}

/* True when process |pid| does not exist (reaped, not a zombie). */
static bool gone(long pid) {
  return kill((pid_t)pid, 0) != 0 && errno == ESRCH;
}

/* Waits up to 5 s until |pid| has exited: gone, or a zombie (a successor
 * told to stop is reaped by the upgrader's thread, or by nobody once the
 * upgrader is freed, until this process exits). */
static bool ended(long pid) {
  for (int i = 0; i < 500; i++) {
    char path[64], buf[512];
    snprintf(path, sizeof(path), "/proc/%ld/stat", pid);
    FILE *f = fopen(path, "r");
    if (f == NULL)
      return true;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char *paren = strrchr(buf, ')');
    if (paren != NULL && paren[1] == ' ' && paren[2] == 'Z')
      return true;
    sleep_ms(10);
  }
  return false;
}

/* The handler of |signo| is this disposition. */
static bool disposition_is(int signo, void (*handler)(int)) {
  struct sigaction sa;
  return sigaction(signo, NULL, &sa) == 0 &&
         (sa.sa_flags & SA_SIGINFO) == 0 && sa.sa_handler == handler;
}

/* The handler of |signo| is a function of the upgrader's (SA_SIGINFO). */
static bool upgrader_handles(int signo) {
  struct sigaction sa;
  return sigaction(signo, NULL, &sa) == 0 && (sa.sa_flags & SA_SIGINFO) != 0 &&
         sa.sa_sigaction != NULL;
}

static bool upgrade_env_gone(void) {
  static const char *const vars[] = {
      "GRACE_UPGRADE_FDS", "GRACE_UPGRADE_FDNAMES", "GRACE_UPGRADE_CTL",
      "GRACE_UPGRADE_PARENT", "GRACE_UPGRADE_GENERATION"};
  for (size_t i = 0; i < sizeof(vars) / sizeof(vars[0]); i++)
    if (getenv(vars[i]) != NULL)
      return false;
  return true;
}

/* grace_upgrader_upgrade while it is refused as busy, until its message
 * holds |want| (the upgrader's thread may not have read what the test
 * wrote yet), at most ~2 s. */
static int upgrade_until(grace_upgrader *u, char *msg, size_t len,
                         const char *want) {
  int rv = 0;
  for (int i = 0; i < 200; i++) {
    rv = grace_upgrader_upgrade(u, msg, len);
    if (rv != GRACE_EBUSY || strstr(msg, want) != NULL)
      break;
    sleep_ms(10);
  }
  return rv;
}

static void quiet_options(grace_upgrader_options *o) {
  grace_upgrader_options_init(o);
  o->quiet = true;
}

/* ---- the successor: this program re-executed ----------------------------- */

/*
 * argv: self "--successor" [pidfile].  $GRACE_TEST_SUCCESSOR says how to
 * behave: "fail" exits 1 at once; "hang" creates the file $GRACE_TEST_MARK
 * (if set), sleeps 10 s and never says ready; "ok" checks what it
 * inherited (the listener "http", the state "state"), says ready, waits
 * for SIGTERM (at most 10 s), frees the upgrader and exits 0.  A failed
 * check exits before ready with a status naming it, which the
 * predecessor's grace_upgrader_upgrade reports.
 */
static int successor_main(int argc, char **argv) {
  const char *mode = getenv(MODE_ENV);
  if (mode == NULL)
    return 10;
  if (strcmp(mode, "fail") == 0)
    return 1;
  if (strcmp(mode, "hang") == 0) {
    const char *mark = getenv(MARK_ENV);
    if (mark != NULL)
      close(open(mark, O_WRONLY | O_CREAT | O_CLOEXEC, 0600));
    sleep_ms(10000);
    return 11;
  }
  if (strcmp(mode, "ok") != 0)
    return 12;

  sigset_t term;
  sigemptyset(&term);
  sigaddset(&term, SIGTERM);
  sigprocmask(SIG_BLOCK, &term, NULL);
  grace_upgrader_options o;
  grace_upgrader *u;
  quiet_options(&o);
  o.pidfile = argc > 2 ? argv[2] : NULL;
  if (grace_upgrader_new(&o, argc, argv, &u) != 0)
    return 20;
  if (!grace_upgrader_is_successor(u))
    return 21;
  if (grace_upgrader_generation(u) != 2)
    return 22;
  const char *n0 = grace_upgrader_inherited_name(u, 0);
  if (n0 == NULL || strcmp(n0, "http") != 0 ||
      grace_upgrader_inherited_name(u, 1) != NULL)
    return 23;
  if (!upgrade_env_gone())
    return 24;
  int fd;
  bool inherited = false;
  if (grace_upgrader_listen(u, "http", NULL, 0, &fd, &inherited) != 0 ||
      !inherited || !listening(fd))
    return 25;
  char text[64] = "";
  int state = grace_upgrader_take_fd(u, "state");
  if (state < 0 ||
      pread(state, text, sizeof(text) - 1, 0) != (ssize_t)strlen(STATE_TEXT) ||
      strcmp(text, STATE_TEXT) != 0)
    return 26;
  if (grace_upgrader_ready(u) != 0)
    return 27;
  struct timespec limit = {10, 0};
  int sig = sigtimedwait(&term, NULL, &limit);
  close(state);
  close(fd);
  grace_upgrader_free(u);
  return sig == SIGTERM ? 0 : 28;
}

/* ---- 1. options and creation --------------------------------------------- */

static int child_options(void) {
  grace_upgrader_options o, zero;
  grace_upgrader *u = NULL, *u2 = NULL;
  char *argv[] = {self_exe, NULL};

  memset(&o, 0xAA, sizeof(o));
  grace_upgrader_options_init(&o);
  memset(&zero, 0, sizeof(zero));
  zero.size = sizeof(zero);
  CHECK(memcmp(&o, &zero, sizeof(o)) == 0);
  o.quiet = true;

  /* Refused arguments. */
  CHECK_EQ(grace_upgrader_new(&o, 1, argv, NULL), GRACE_EINVAL);
  CHECK_EQ(grace_upgrader_new(&o, 1, NULL, &u), GRACE_EINVAL);
  CHECK_EQ(grace_upgrader_new(&o, 0, argv, &u), GRACE_EINVAL);
  CHECK_EQ(grace_upgrader_new(&o, -1, argv, &u), GRACE_EINVAL);
  char *noarg[] = {NULL};
  CHECK_EQ(grace_upgrader_new(&o, 1, noarg, &u), GRACE_EINVAL);
  o.ready_timeout = -1;
  CHECK_EQ(grace_upgrader_new(&o, 1, argv, &u), GRACE_EINVAL);
  o.ready_timeout = 0;
  o.close_spread = -MS;
  CHECK_EQ(grace_upgrader_new(&o, 1, argv, &u), GRACE_EINVAL);
  o.close_spread = 0;
  static const int refused[] = {SIGINT,  SIGTERM, SIGKILL,  SIGSTOP,
                                SIGPIPE, SIGCHLD, NSIG,     NSIG + 1,
                                1000};
  for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++) {
    o.signal = refused[i];
    if (grace_upgrader_new(&o, 1, argv, &u) != GRACE_EINVAL) {
      fprintf(stderr, "signal %d was not refused\n", refused[i]);
      return 1;
    }
  }
  o.signal = 0;
  o.size = 0; /* not filled by grace_upgrader_options_init */
  CHECK_EQ(grace_upgrader_new(&o, 1, argv, &u), GRACE_EINVAL);
  o.size = sizeof(o) + 8;
  CHECK_EQ(grace_upgrader_new(&o, 1, argv, &u), GRACE_EINVAL);
  o.size = sizeof(o);
  char longpath[200];
  memset(longpath, 'c', sizeof(longpath) - 1);
  longpath[0] = '/';
  longpath[sizeof(longpath) - 1] = '\0';
  o.control_path = longpath;
  CHECK_EQ(grace_upgrader_new(&o, 1, argv, &u), GRACE_EINVAL);
  o.control_path = NULL;
  /* Nothing refused installed a handler. */
  CHECK(disposition_is(SIGUSR2, SIG_DFL));

  /* argv[0] nowhere in PATH, unless options.exe names the program. */
  char nowhere[] = "grace-test-no-such-program-3b1f";
  char *missing[] = {nowhere, NULL};
  CHECK_EQ(grace_upgrader_new(&o, 1, missing, &u), GRACE_ENOENT);
  o.exe = "/bin/true";
  CHECK_EQ(grace_upgrader_new(&o, 1, missing, &u), 0);
  grace_upgrader_free(u);
  o.exe = NULL;

  /* One upgrader at a time; the default signal is SIGUSR2. */
  u = NULL;
  CHECK_EQ(grace_upgrader_new(&o, 1, argv, &u), 0);
  CHECK(u != NULL);
  CHECK(upgrader_handles(SIGUSR2));
  CHECK(!grace_upgrader_is_successor(u));
  CHECK_EQ(grace_upgrader_generation(u), 1);
  CHECK(grace_upgrader_inherited_name(u, 0) == NULL);
  CHECK(grace_upgrader_context(u) != NULL);
  CHECK_EQ(grace_ctx_err(grace_upgrader_context(u)), 0);
  CHECK_EQ(grace_upgrader_new(&o, 1, argv, &u2), GRACE_ESTATE);
  o.signal = -1;
  CHECK_EQ(grace_upgrader_new(&o, 1, argv, &u2), GRACE_ESTATE);
  o.signal = 0;
  grace_upgrader_free(u);
  CHECK(disposition_is(SIGUSR2, SIG_DFL));
  CHECK_EQ(grace_upgrader_new(&o, 1, argv, &u), 0);
  grace_upgrader_free(u);

  /* The previous disposition comes back at free; another signal. */
  signal(SIGUSR2, SIG_IGN);
  o.signal = SIGUSR1;
  CHECK_EQ(grace_upgrader_new(&o, 1, argv, &u), 0);
  CHECK(upgrader_handles(SIGUSR1));
  CHECK(disposition_is(SIGUSR2, SIG_IGN));
  grace_upgrader_free(u);
  CHECK(disposition_is(SIGUSR1, SIG_DFL));
  o.signal = 0;
  CHECK_EQ(grace_upgrader_new(&o, 1, argv, &u), 0);
  CHECK(upgrader_handles(SIGUSR2));
  grace_upgrader_free(u);
  CHECK(disposition_is(SIGUSR2, SIG_IGN));
  signal(SIGUSR2, SIG_DFL);
  /* No signal at all. */
  o.signal = -1;
  CHECK_EQ(grace_upgrader_new(&o, 1, argv, &u), 0);
  CHECK(disposition_is(SIGUSR2, SIG_DFL));
  grace_upgrader_free(u);
  o.signal = 0;

  /* The longest control path that fits a sockaddr_un is taken. */
  longpath[sizeof(((struct sockaddr_un *)0)->sun_path) - 1] = '\0';
  o.control_path = longpath;
  CHECK_EQ(grace_upgrader_new(&o, 1, argv, &u), 0);
  grace_upgrader_free(u);
  o.control_path = NULL;

  /* NULL upgrader. */
  int fd;
  CHECK_EQ(grace_upgrader_listen(NULL, "x", ":0", 0, &fd, NULL), GRACE_EINVAL);
  CHECK_EQ(grace_upgrader_ready(NULL), GRACE_EINVAL);
  CHECK_EQ(grace_upgrader_upgrade(NULL, NULL, 0), GRACE_EINVAL);
  CHECK_EQ(grace_upgrader_take_fd(NULL, "x"), GRACE_EINVAL);
  CHECK_EQ(grace_upgrader_pass_fd(NULL, "x", 0), GRACE_EINVAL);
  CHECK(!grace_upgrader_is_successor(NULL));
  CHECK_EQ(grace_upgrader_generation(NULL), 0);
  CHECK(grace_upgrader_context(NULL) == NULL);
  CHECK(grace_upgrader_inherited_name(NULL, 0) == NULL);
  grace_upgrader_free(NULL);
  return 0;
}

static void test_options_and_new(void **state) {
  (void)state;
  in_child(child_options);
}

/* ---- 2. grace_upgrader_listen -------------------------------------------- */

static int child_listen(void) {
  grace_upgrader_options o;
  grace_upgrader *u;
  char *argv[] = {self_exe, NULL};
  char msg[256];
  int fd = -1, fd2 = -1;
  bool inherited = true;

  quiet_options(&o);
  CHECK_EQ(grace_upgrader_new(&o, 1, argv, &u), 0);

  char name65[66], name64[65];
  memset(name65, 'n', sizeof(name65) - 1);
  name65[sizeof(name65) - 1] = '\0';
  memcpy(name64, name65, sizeof(name64) - 1);
  name64[sizeof(name64) - 1] = '\0';
  const char *bad[] = {"", "a:b", "a=b", "a\nb", ":", name65};
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
    CHECK_EQ(grace_upgrader_listen(u, bad[i], "127.0.0.1:0", 0, &fd, NULL),
             GRACE_EINVAL);
  CHECK_EQ(grace_upgrader_listen(u, NULL, "127.0.0.1:0", 0, &fd, NULL),
           GRACE_EINVAL);
  CHECK_EQ(grace_upgrader_listen(u, "http", "127.0.0.1:0", 0, NULL, NULL),
           GRACE_EINVAL);
  CHECK_EQ(grace_upgrader_listen(u, "http", "127.0.0.1:0", -1, &fd, NULL),
           GRACE_EINVAL);
  /* 64 bytes is still a name. */
  CHECK_EQ(grace_upgrader_listen(u, name64, "127.0.0.1:0", 0, &fd2, NULL), 0);
  close(fd2);

  /* Nothing inherited: NULL is no address; malformed ones. */
  CHECK_EQ(grace_upgrader_listen(u, "http", NULL, 0, &fd, &inherited),
           GRACE_EINVAL);
  const char *bad_addr[] = {"nonsense", "127.0.0.1", "127.0.0.1:99999",
                            "127.0.0.1:http", "1:2:3", "[::1:0", ""};
  for (size_t i = 0; i < sizeof(bad_addr) / sizeof(bad_addr[0]); i++)
    if (grace_upgrader_listen(u, "http", bad_addr[i], 0, &fd, NULL) !=
        GRACE_EINVAL) {
      fprintf(stderr, "address \"%s\" was not refused\n", bad_addr[i]);
      return 1;
    }

  /* Refused names were not taken: "http" binds now. */
  CHECK_EQ(grace_upgrader_listen(u, "http", "127.0.0.1:0", 0, &fd, &inherited),
           0);
  CHECK(!inherited);
  CHECK(fd > 2 && listening(fd) && cloexec(fd));
  int port = tcp_port(fd);
  CHECK(port > 0);
  CHECK_EQ(grace_upgrader_listen(u, "http", "127.0.0.1:0", 0, &fd2, NULL),
           GRACE_EBUSY);
  CHECK_EQ(grace_upgrader_listen(u, "http", NULL, 0, &fd2, NULL), GRACE_EBUSY);
  /* The port is taken by "http": bind's error. */
  char same[32];
  snprintf(same, sizeof(same), "127.0.0.1:%d", port);
  CHECK_EQ(grace_upgrader_listen(u, "other", same, 0, &fd2, NULL),
           GRACE_EADDRINUSE);
  CHECK(grace_upgrader_inherited_name(u, 0) == NULL);

  /* The caller's descriptor is its own: closed, the upgrader's copy
   * still listens. */
  CHECK_EQ(connect_port(port), 0);
  close(fd);
  CHECK_EQ(connect_port(port), 0);

  CHECK_EQ(grace_upgrader_upgrade(u, msg, sizeof(msg)), GRACE_ESTATE);
  CHECK_HAS(msg, "not ready yet");
  CHECK_EQ(grace_upgrader_ready(u), 0);
  CHECK_EQ(grace_upgrader_ready(u), GRACE_ESTATE);
  CHECK_EQ(grace_upgrader_listen(u, "late", "127.0.0.1:0", 0, &fd2, NULL),
           GRACE_ESTATE);
  CHECK_EQ(connect_port(port), 0);
  grace_upgrader_free(u);
  CHECK_EQ(connect_port(port), -ECONNREFUSED);
  return 0;
}

static void test_listen(void **state) {
  (void)state;
  in_child(child_listen);
}

/* ---- 3. inheritance from a (simulated) predecessor ----------------------- */

/* |fd| moved to |at| (inheritable, as an exec leaves it). */
static bool move_fd(int fd, int at) {
  if (fd < 0 || dup2(fd, at) != at)
    return false;
  close(fd);
  return true;
}

/* |fd| moved above the low numbers, so that dup2 onto 3..5 overwrites no
 * source still to be moved. */
static int high_fd(int fd) {
  if (fd < 0)
    return -1;
  int h = fcntl(fd, F_DUPFD_CLOEXEC, 20);
  close(fd);
  return h;
}

/*
 * What a predecessor leaves to its successor: a listening socket at 3, a
 * memfd holding "counter=41" at 4, one end of a stream socketpair at 5
 * (the control channel), and the variables.  Returns the listener's port
 * (or -1) and stores the channel's other end in |*peer|.
 */
static int simulate_predecessor(int *peer) {
  struct sockaddr_in sa = {.sin_family = AF_INET};
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  int l = high_fd(socket(AF_INET, SOCK_STREAM, 0));
  if (l < 0 || bind(l, (struct sockaddr *)&sa, sizeof(sa)) != 0 ||
      listen(l, 16) != 0)
    return -1;
  int port = tcp_port(l);
  int m = high_fd(memfd_create("state", 0));
  if (m < 0 || !write_str(m, "counter=41"))
    return -1;
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0)
    return -1;
  sv[0] = high_fd(sv[0]);
  sv[1] = high_fd(sv[1]);
  if (!move_fd(l, 3) || !move_fd(m, 4) || !move_fd(sv[1], 5))
    return -1;
  *peer = sv[0];
  char parent[32];
  snprintf(parent, sizeof(parent), "%d", (int)getppid());
  setenv("GRACE_UPGRADE_FDS", "2", 1);
  setenv("GRACE_UPGRADE_FDNAMES", "http:state", 1);
  setenv("GRACE_UPGRADE_CTL", "5", 1);
  setenv("GRACE_UPGRADE_PARENT", parent, 1);
  setenv("GRACE_UPGRADE_GENERATION", "3", 1);
  return port;
}

static int child_inherits(void) {
  grace_upgrader_options o;
  grace_upgrader *u;
  char *argv[] = {self_exe, NULL};
  char msg[256], line[128], ppid[32];
  int peer, fd = -1, fd2;
  bool inherited = false;

  int port = simulate_predecessor(&peer);
  CHECK(port > 0);
  CHECK(!cloexec(3) && !cloexec(4) && !cloexec(5));
  snprintf(ppid, sizeof(ppid), "pid %d", (int)getppid());
  quiet_options(&o);
  o.exe = "/bin/false"; /* never started: every upgrade here is refused */
  CHECK_EQ(grace_upgrader_new(&o, 1, argv, &u), 0);
  CHECK(grace_upgrader_is_successor(u));
  CHECK_EQ(grace_upgrader_generation(u), 3);
  CHECK(grace_upgrader_inherited_name(u, 0) != NULL);
  CHECK(strcmp(grace_upgrader_inherited_name(u, 0), "http") == 0);
  CHECK(grace_upgrader_inherited_name(u, 1) == NULL); /* state: no listener */
  CHECK(upgrade_env_gone());
  CHECK(cloexec(3) && cloexec(4) && cloexec(5));

  /* The listener is inherited whatever the address says. */
  CHECK_EQ(grace_upgrader_listen(u, "state", "127.0.0.1:0", 0, &fd2, NULL),
           GRACE_EBUSY);
  CHECK_EQ(grace_upgrader_listen(u, "http", NULL, 0, &fd, &inherited), 0);
  CHECK(inherited);
  CHECK(fd != 3 && listening(fd) && cloexec(fd));
  CHECK_EQ(tcp_port(fd), port);
  CHECK_EQ(grace_upgrader_listen(u, "http", NULL, 0, &fd2, NULL), GRACE_EBUSY);

  /* The state descriptor is transferred once. */
  CHECK_EQ(grace_upgrader_take_fd(u, "http"), GRACE_ENOENT);
  CHECK_EQ(grace_upgrader_take_fd(u, "nope"), GRACE_ENOENT);
  int sfd = grace_upgrader_take_fd(u, "state");
  CHECK_EQ(sfd, 4);
  char text[32] = "";
  CHECK_EQ(pread(sfd, text, sizeof(text) - 1, 0), 10);
  CHECK(strcmp(text, "counter=41") == 0);
  CHECK_EQ(grace_upgrader_take_fd(u, "state"), GRACE_ENOENT);

  /* Ready: the predecessor hears it; upgrades wait for its "ack", then
   * for the older generations' drain (max_draining 1). */
  CHECK_EQ(grace_upgrader_upgrade(u, msg, sizeof(msg)), GRACE_ESTATE);
  CHECK_EQ(grace_upgrader_ready(u), 0);
  CHECK_EQ(read_line(peer, line, sizeof(line), 2000), 5);
  CHECK(strcmp(line, "ready") == 0);
  CHECK_EQ(grace_upgrader_upgrade(u, msg, sizeof(msg)), GRACE_EBUSY);
  CHECK_HAS(msg, "not finished");
  CHECK_HAS(msg, ppid);
  CHECK(write_str(peer, "ack 0\n"));
  CHECK_EQ(upgrade_until(u, msg, sizeof(msg), "draining"), GRACE_EBUSY);
  CHECK_HAS(msg, "1 older generation is still draining");
  CHECK_HAS(msg, ppid);
  CHECK(write_str(peer, "older 1\n"));
  CHECK_EQ(upgrade_until(u, msg, sizeof(msg), "2 older"), GRACE_EBUSY);
  CHECK_HAS(msg, "2 older generations are still draining");
  CHECK_EQ(tcp_port(fd), port);

  /* A plain exit: the predecessor hears that it is no crash. */
  grace_upgrader_free(u);
  CHECK_EQ(read_line(peer, line, sizeof(line), 2000), 8);
  CHECK(strcmp(line, "stopping") == 0);
  CHECK(!is_open(3) && !is_open(5));
  CHECK(listening(fd) && is_open(sfd));
  close(fd);
  close(sfd);
  close(peer);
  return 0;
}

static void test_successor_adopts(void **state) {
  (void)state;
  in_child(child_inherits);
}

static int child_predecessor_gone(void) {
  grace_upgrader_options o;
  grace_upgrader *u;
  char *argv[] = {self_exe, NULL};
  char msg[256], line[128], pidfile[128];
  int peer, fd;

  snprintf(pidfile, sizeof(pidfile), "%s/gone-%d.pid", tmpdir, (int)getpid());
  int port = simulate_predecessor(&peer);
  CHECK(port > 0);
  quiet_options(&o);
  o.pidfile = pidfile;
  o.exe = "/bin/false";
  CHECK_EQ(grace_upgrader_new(&o, 1, argv, &u), 0);
  CHECK_EQ(grace_upgrader_listen(u, "http", NULL, 0, &fd, NULL), 0);
  /* "state" is not taken: closed at ready. */
  CHECK(is_open(4));
  CHECK_EQ(grace_upgrader_ready(u), 0);
  CHECK(!is_open(4));
  CHECK_EQ(read_line(peer, line, sizeof(line), 2000), 5);
  /* The predecessor writes the PID file once it hands over, not this
   * process; it dies before its "ack": this process serves alone. */
  CHECK_EQ(pidfile_pid(pidfile), 0);
  close(peer);
  for (int i = 0; i < 200 && pidfile_pid(pidfile) != getpid(); i++)
    sleep_ms(10);
  CHECK_EQ(pidfile_pid(pidfile), getpid());
  /* Nothing older drains: an upgrade is started (and /bin/false fails). */
  CHECK_EQ(grace_upgrader_upgrade(u, msg, sizeof(msg)), GRACE_ECHILD);
  CHECK_HAS(msg, "exited with status 1");
  CHECK_EQ(pidfile_pid(pidfile), getpid());
  CHECK_EQ(connect_port(port), 0);
  grace_upgrader_free(u);
  CHECK(access(pidfile, F_OK) != 0 && errno == ENOENT);
  close(fd);
  return 0;
}

static void test_successor_predecessor_gone(void **state) {
  (void)state;
  in_child(child_predecessor_gone);
}

/* grace_upgrader_new with the variables as they are now: its result, with
 * the check that they are gone afterwards in any case. */
static int new_with_env(void) {
  grace_upgrader_options o;
  grace_upgrader *u = NULL;
  char *argv[] = {self_exe, NULL};
  quiet_options(&o);
  int rv = grace_upgrader_new(&o, 1, argv, &u);
  if (rv == 0)
    grace_upgrader_free(u);
  if (!upgrade_env_gone())
    return 1000;
  return rv;
}

static int child_bad_variables(void) {
  int peer;

  CHECK(simulate_predecessor(&peer) > 0);
  setenv("GRACE_UPGRADE_CTL", "4", 1);
  CHECK_EQ(new_with_env(), GRACE_EINVAL);
  close(peer);

  CHECK(simulate_predecessor(&peer) > 0);
  setenv("GRACE_UPGRADE_CTL", "6", 1);
  CHECK_EQ(new_with_env(), GRACE_EINVAL);
  close(peer);

  CHECK(simulate_predecessor(&peer) > 0);
  setenv("GRACE_UPGRADE_FDNAMES", "http", 1);
  CHECK_EQ(new_with_env(), GRACE_EINVAL);
  close(peer);

  CHECK(simulate_predecessor(&peer) > 0);
  setenv("GRACE_UPGRADE_FDNAMES", "http:state:extra", 1);
  CHECK_EQ(new_with_env(), GRACE_EINVAL);
  close(peer);

  CHECK(simulate_predecessor(&peer) > 0);
  unsetenv("GRACE_UPGRADE_FDNAMES");
  CHECK_EQ(new_with_env(), GRACE_EINVAL);
  close(peer);

  CHECK(simulate_predecessor(&peer) > 0);
  setenv("GRACE_UPGRADE_FDNAMES", "http:http", 1);
  CHECK_EQ(new_with_env(), GRACE_EINVAL);
  close(peer);

  CHECK(simulate_predecessor(&peer) > 0);
  setenv("GRACE_UPGRADE_FDS", "two", 1);
  CHECK_EQ(new_with_env(), GRACE_EINVAL);
  close(peer);

  CHECK(simulate_predecessor(&peer) > 0);
  setenv("GRACE_UPGRADE_GENERATION", "1", 1);
  CHECK_EQ(new_with_env(), GRACE_EINVAL);
  close(peer);

  CHECK(simulate_predecessor(&peer) > 0);
  setenv("GRACE_UPGRADE_PARENT", "0", 1);
  CHECK_EQ(new_with_env(), GRACE_EINVAL);
  close(peer);

  /* A descriptor the variables name is not open. */
  CHECK(simulate_predecessor(&peer) > 0);
  close(4);
  CHECK_EQ(new_with_env(), -EBADF);
  close(peer);

  /* The control channel is no stream socket. */
  CHECK(simulate_predecessor(&peer) > 0);
  int pp[2];
  CHECK(pipe(pp) == 0);
  CHECK(move_fd(pp[0], 5));
  CHECK_EQ(new_with_env(), GRACE_EINVAL);
  close(pp[1]);
  close(peer);

  /* None of these left an upgrader behind; without variables, a first
   * generation. */
  for (int fd = 3; fd < 6; fd++)
    close(fd);
  grace_upgrader_options o;
  grace_upgrader *u;
  char *argv[] = {self_exe, NULL};
  quiet_options(&o);
  CHECK_EQ(grace_upgrader_new(&o, 1, argv, &u), 0);
  CHECK(!grace_upgrader_is_successor(u));
  CHECK_EQ(grace_upgrader_generation(u), 1);
  grace_upgrader_free(u);
  return 0;
}

static void test_successor_bad_variables(void **state) {
  (void)state;
  in_child(child_bad_variables);
}

/* ---- 4. real upgrades: this program re-executed -------------------------- */

/* A memfd holding STATE_TEXT. */
static int state_memfd(void) {
  int m = memfd_create("state", MFD_CLOEXEC);
  if (m >= 0 && !write_str(m, STATE_TEXT)) {
    close(m);
    return -1;
  }
  return m;
}

static int child_real_upgrade(void) {
  grace_upgrader_options o;
  grace_upgrader *u;
  char pidfile[128], msg[256];
  snprintf(pidfile, sizeof(pidfile), "%s/up-%d.pid", tmpdir, (int)getpid());
  char *argv[] = {self_exe, arg_successor, pidfile, NULL};
  int fd;
  long pid;

  quiet_options(&o);
  o.pidfile = pidfile;
  CHECK_EQ(grace_upgrader_new(&o, 3, argv, &u), 0);
  CHECK_EQ(grace_upgrader_listen(u, "http", "127.0.0.1:0", 0, &fd, NULL), 0);
  int port = tcp_port(fd);
  CHECK(port > 0);
  int m = state_memfd();
  CHECK(m >= 0);
  CHECK_EQ(grace_upgrader_pass_fd(u, "state", m), 0);
  CHECK_EQ(grace_upgrader_pass_fd(u, "state", m), GRACE_EBUSY);
  close(m); /* borrowed: the upgrader has its own copy */
  CHECK_EQ(pidfile_pid(pidfile), 0);
  CHECK_EQ(grace_upgrader_ready(u), 0);
  CHECK_EQ(pidfile_pid(pidfile), getpid());
  grace_ctx *ctx = grace_upgrader_context(u);

  /* A successor that exits before it is ready. */
  setenv(MODE_ENV, "fail", 1);
  CHECK_EQ(grace_upgrader_upgrade(u, msg, sizeof(msg)), GRACE_ECHILD);
  CHECK_HAS(msg, "exited with status 1");
  CHECK(sscanf(msg, "pid %ld", &pid) == 1 && pid > 0 && pid != getpid());
  CHECK(gone(pid));
  CHECK_EQ(pidfile_pid(pidfile), getpid());
  CHECK_EQ(grace_ctx_err(ctx), 0);

  /* One that is ready: the hand-over. */
  setenv(MODE_ENV, "ok", 1);
  int rv = grace_upgrader_upgrade(u, msg, sizeof(msg));
  if (rv != 0)
    fprintf(stderr, "upgrade: %s: %s\n", grace_strerror(rv), msg);
  CHECK_EQ(rv, 0);
  char *end;
  pid = strtol(msg, &end, 10);
  CHECK(*end == '\0' && pid > 0 && pid != getpid());
  CHECK_EQ(kill((pid_t)pid, 0), 0);
  CHECK_EQ(grace_ctx_err(ctx), GRACE_ECANCELED);
  CHECK_EQ(pidfile_pid(pidfile), pid);
  CHECK_EQ(connect_port(port), 0);
  CHECK_EQ(grace_upgrader_upgrade(u, msg, sizeof(msg)), GRACE_ESTATE);
  CHECK_HAS(msg, "handed over");

  /* This process lets go of its copies: the successor's listen. */
  close(fd);
  grace_upgrader_free(u);
  CHECK_EQ(pidfile_pid(pidfile), pid); /* it names the successor: kept */
  CHECK_EQ(connect_port(port), 0);
  CHECK_EQ(kill((pid_t)pid, SIGTERM), 0);
  int status;
  CHECK_EQ(waitpid((pid_t)pid, &status, 0), pid);
  CHECK(WIFEXITED(status));
  CHECK_EQ(WEXITSTATUS(status), 0);
  /* The successor removed the PID file that named it, and nobody
   * listens any more. */
  CHECK(access(pidfile, F_OK) != 0 && errno == ENOENT);
  CHECK_EQ(connect_port(port), -ECONNREFUSED);
  return 0;
}

static void test_upgrade_hands_over(void **state) {
  (void)state;
  in_child(child_real_upgrade);
}

static int child_not_ready(void) {
  grace_upgrader_options o;
  grace_upgrader *u;
  char pidfile[128], msg[256];
  snprintf(pidfile, sizeof(pidfile), "%s/hang-%d.pid", tmpdir, (int)getpid());
  char *argv[] = {self_exe, arg_successor, NULL};
  int fd;
  long pid;

  setenv(MODE_ENV, "hang", 1);
  quiet_options(&o);
  o.pidfile = pidfile;
  o.ready_timeout = 300 * MS;
  CHECK_EQ(grace_upgrader_new(&o, 2, argv, &u), 0);
  CHECK_EQ(grace_upgrader_listen(u, "http", "127.0.0.1:0", 0, &fd, NULL), 0);
  CHECK_EQ(grace_upgrader_ready(u), 0);
  int64_t t0 = grace_now();
  CHECK_EQ(grace_upgrader_upgrade(u, msg, sizeof(msg)), GRACE_ETIMEDOUT);
  int64_t took = grace_now() - t0;
  CHECK_HAS(msg, "not ready within");
  CHECK(took >= 300 * MS && took < 5 * GRACE_SECOND);
  CHECK(sscanf(msg, "pid %ld", &pid) == 1 && pid > 0 && pid != getpid());
  CHECK(ended(pid)); /* told to stop (SIGTERM), which ends it */
  CHECK_EQ(pidfile_pid(pidfile), getpid());
  CHECK_EQ(grace_ctx_err(grace_upgrader_context(u)), 0);
  close(fd);
  grace_upgrader_free(u);
  CHECK(access(pidfile, F_OK) != 0 && errno == ENOENT);

  /* The signal asks for an upgrade; one in flight refuses another; free
   * tells a successor that is not ready to stop. */
  o.ready_timeout = 20 * GRACE_SECOND;
  CHECK_EQ(grace_upgrader_new(&o, 2, argv, &u), 0);
  CHECK_EQ(grace_upgrader_listen(u, "http", "127.0.0.1:0", 0, &fd, NULL), 0);
  CHECK_EQ(grace_upgrader_ready(u), 0);
  char mark[128];
  snprintf(mark, sizeof(mark), "%s/hang-%d.mark", tmpdir, (int)getpid());
  setenv(MARK_ENV, mark, 1);
  CHECK_EQ(kill(getpid(), SIGUSR2), 0);
  for (int i = 0; i < 500 && access(mark, F_OK) != 0; i++)
    sleep_ms(10);
  CHECK(access(mark, F_OK) == 0);
  unlink(mark);
  CHECK_EQ(grace_upgrader_upgrade(u, msg, sizeof(msg)), GRACE_EBUSY);
  CHECK_HAS(msg, "an upgrade is in flight");
  CHECK(sscanf(msg, "an upgrade is in flight (pid %ld", &pid) == 1);
  CHECK(pid > 0 && kill((pid_t)pid, 0) == 0);
  grace_upgrader_free(u);
  CHECK(ended(pid));
  CHECK(access(pidfile, F_OK) != 0 && errno == ENOENT);
  close(fd);
  return 0;
}

static void test_upgrade_not_ready(void **state) {
  (void)state;
  in_child(child_not_ready);
}

/* ---- 5. the control socket ----------------------------------------------- */

static int child_control_socket(void) {
  grace_upgrader_options o;
  grace_upgrader *u;
  char *argv[] = {self_exe, NULL};
  char path[128], line[300], want[64];
  struct stat st;

  snprintf(path, sizeof(path), "%s/ctl-%d", tmpdir, (int)getpid());
  /* A stale socket file: bound by a socket closed since. */
  int stale = bind_unix(path, false);
  CHECK(stale >= 0);
  close(stale);
  CHECK(stat(path, &st) == 0 && S_ISSOCK(st.st_mode));
  CHECK_EQ(connect_unix(path), -ECONNREFUSED);

  quiet_options(&o);
  o.control_path = path;
  o.exe = "/bin/false";
  CHECK_EQ(grace_upgrader_new(&o, 1, argv, &u), 0);
  CHECK(access(path, F_OK) == 0); /* replaced at ready, not before */
  CHECK_EQ(grace_upgrader_ready(u), 0);
  CHECK(stat(path, &st) == 0 && S_ISSOCK(st.st_mode));
  CHECK_EQ(st.st_mode & 0777, 0600);

  int c = connect_unix(path);
  CHECK(c >= 0);
  CHECK(write_str(c, "pid\n"));
  CHECK(read_line(c, line, sizeof(line), 2000) > 0);
  snprintf(want, sizeof(want), "ok %d", (int)getpid());
  CHECK(strcmp(line, want) == 0);
  CHECK(write_str(c, "nonsense\n"));
  CHECK(read_line(c, line, sizeof(line), 2000) > 0);
  CHECK(strncmp(line, "error ", 6) == 0);
  /* An upgrade asked for here; /bin/false is no successor. */
  CHECK(write_str(c, "upgrade\n"));
  CHECK(read_line(c, line, sizeof(line), 5000) > 0);
  CHECK(strncmp(line, "error ", 6) == 0);
  CHECK_HAS(line, "exited with status 1");
  /* Several clients at once. */
  int c2 = connect_unix(path);
  CHECK(c2 >= 0);
  CHECK(write_str(c2, "pid\n"));
  CHECK(read_line(c2, line, sizeof(line), 2000) > 0);
  CHECK(strcmp(line, want) == 0);
  close(c2);
  close(c);

  /* A plain exit removes the path. */
  grace_upgrader_free(u);
  CHECK(access(path, F_OK) != 0 && errno == ENOENT);

  /* Another live listener at the path: not ours to replace. */
  int other = bind_unix(path, true);
  CHECK(other >= 0);
  CHECK_EQ(grace_upgrader_new(&o, 1, argv, &u), 0);
  CHECK_EQ(grace_upgrader_ready(u), GRACE_EADDRINUSE);
  c = connect_unix(path);
  CHECK(c >= 0);
  close(c);
  grace_upgrader_free(u);
  c = connect_unix(path); /* still there after free */
  CHECK(c >= 0);
  close(c);
  close(other);
  unlink(path);

  /* A file that is no socket is nobody's stale socket: left alone. */
  int f = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  CHECK(f >= 0 && write_str(f, "keep me\n"));
  close(f);
  CHECK_EQ(grace_upgrader_new(&o, 1, argv, &u), 0);
  CHECK_EQ(grace_upgrader_ready(u), GRACE_EADDRINUSE);
  grace_upgrader_free(u);
  CHECK(stat(path, &st) == 0 && S_ISREG(st.st_mode) && st.st_size == 8);
  unlink(path);
  return 0;
}

static void test_control_socket(void **state) {
  (void)state;
  in_child(child_control_socket);
}

/* ---- main ---------------------------------------------------------------- */

static int setup(void **state) {
  (void)state;
  snprintf(tmpdir, sizeof(tmpdir), "/tmp/grace-uunit-XXXXXX");
  return mkdtemp(tmpdir) == NULL ? -1 : 0;
}

static int teardown(void **state) {
  (void)state;
  return rmdir(tmpdir);
}

int main(int argc, char **argv) {
  if (argc >= 2 && strcmp(argv[1], arg_successor) == 0)
    return successor_main(argc, argv);
  /* Started by an upgrade without "--successor" (a bug, in the upgrader
   * or here): running the cases again would recurse. */
  if (getenv("GRACE_UPGRADE_FDS") != NULL) {
    fprintf(stderr, "test_upgrade: started as a successor without %s\n",
            arg_successor);
    return 99;
  }
  snprintf(self_exe, sizeof(self_exe), "%s", argv[0]);
  /* Hermetic: nothing inherited, no service manager. */
  static const char *const clear[] = {
      "GRACE_UPGRADE_FDS",  "GRACE_UPGRADE_FDNAMES",    "GRACE_UPGRADE_CTL",
      "GRACE_UPGRADE_PARENT", "GRACE_UPGRADE_GENERATION", "LISTEN_FDS",
      "LISTEN_PID",         "LISTEN_FDNAMES",           "NOTIFY_SOCKET",
      MODE_ENV,             MARK_ENV};
  for (size_t i = 0; i < sizeof(clear) / sizeof(clear[0]); i++)
    unsetenv(clear[i]);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_options_and_new),
      cmocka_unit_test(test_listen),
      cmocka_unit_test(test_successor_adopts),
      cmocka_unit_test(test_successor_predecessor_gone),
      cmocka_unit_test(test_successor_bad_variables),
      cmocka_unit_test(test_upgrade_hands_over),
      cmocka_unit_test(test_upgrade_not_ready),
      cmocka_unit_test(test_control_socket),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
