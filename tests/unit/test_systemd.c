/*
 * Unit tests of the systemd protocols (src/group/systemd.c): notification
 * datagrams read back from a real NOTIFY_SOCKET (with the descriptors
 * grace_sd_notify_with_fds attaches), the group's READY=1,
 * STOPPING=1 and EXTEND_TIMEOUT_USEC messages, and socket activation with
 * real listening sockets on descriptor 3, in forked children (the
 * descriptor numbers and the environment are process-wide).
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
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "grace/context.h"
#include "grace/group.h"
#include "grace/http.h"
#include "grace/log.h"
#include "grace/systemd.h"
#include "group/systemd_int.h"

#define MS GRACE_MILLISECOND

static char tmpdir[64];

/* A datagram socket bound to |path| ("@name" for an abstract name), as
 * systemd's notification socket is. */
static int notify_listener(const char *path) {
  struct sockaddr_un sa;
  socklen_t len;
  int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  assert_true(fd >= 0);
  assert_int_equal(grace__sd_address(path, &sa, &len), 0);
  assert_int_equal(bind(fd, (struct sockaddr *)&sa, len), 0);
  return fd;
}

/* Reads one datagram (waiting up to |ms|) into |buf|; its length or -1. */
static int recv_msg(int fd, char *buf, size_t cap, int ms) {
  struct pollfd p = {.fd = fd, .events = POLLIN};
  if (poll(&p, 1, ms) != 1)
    return -1;
  ssize_t n = recv(fd, buf, cap - 1, 0);
  assert_true(n >= 0);
  buf[n] = '\0';
  return (int)n;
}

static void sock_path(char *buf, size_t len, const char *name) {
  snprintf(buf, len, "%s/%s", tmpdir, name);
}

static void test_notify_without_socket_does_nothing(void **state) {
  (void)state;
  unsetenv("NOTIFY_SOCKET");
  assert_false(grace_sd_notify_wanted());
  assert_int_equal(grace_sd_notify("READY=1"), 0);
  assert_int_equal(grace_sd_notifyf("STATUS=%d", 1), 0);
  setenv("NOTIFY_SOCKET", "", 1);
  assert_false(grace_sd_notify_wanted());
  assert_int_equal(grace_sd_notify("READY=1"), 0);
  unsetenv("NOTIFY_SOCKET");
}

static void test_notify_to_a_path(void **state) {
  (void)state;
  char path[128], buf[4096];
  sock_path(path, sizeof(path), "notify");
  int fd = notify_listener(path);
  setenv("NOTIFY_SOCKET", path, 1);
  assert_true(grace_sd_notify_wanted());

  assert_int_equal(grace_sd_notify("READY=1"), 1);
  assert_int_equal(recv_msg(fd, buf, sizeof(buf), 1000), 7);
  assert_string_equal(buf, "READY=1");
  assert_int_equal(grace_sd_notify("STOPPING=1\nSTATUS=draining 3"), 1);
  recv_msg(fd, buf, sizeof(buf), 1000);
  assert_string_equal(buf, "STOPPING=1\nSTATUS=draining 3");
  assert_int_equal(grace_sd_notifyf("EXTEND_TIMEOUT_USEC=%d", 7500000), 1);
  recv_msg(fd, buf, sizeof(buf), 1000);
  assert_string_equal(buf, "EXTEND_TIMEOUT_USEC=7500000");
  /* The variable stays for the next call (and for children). */
  assert_string_equal(getenv("NOTIFY_SOCKET"), path);

  assert_int_equal(grace_sd_notify(""), GRACE_EINVAL);
  assert_int_equal(grace_sd_notify(NULL), GRACE_EINVAL);
  char big[5000];
  memset(big, 'x', sizeof(big) - 1);
  big[sizeof(big) - 1] = '\0';
  assert_int_equal(grace_sd_notifyf("STATUS=%s", big), GRACE_EINVAL);
  assert_int_equal(recv_msg(fd, buf, sizeof(buf), 0), -1);

  close(fd);
  unlink(path);
  unsetenv("NOTIFY_SOCKET");
}

static void test_notify_to_an_abstract_name(void **state) {
  (void)state;
  char name[64], buf[256];
  snprintf(name, sizeof(name), "@grace-test-%d", (int)getpid());
  int fd = notify_listener(name);
  setenv("NOTIFY_SOCKET", name, 1);
  assert_int_equal(grace_sd_notify("READY=1\nSTATUS=Serving"), 1);
  recv_msg(fd, buf, sizeof(buf), 1000);
  assert_string_equal(buf, "READY=1\nSTATUS=Serving");
  close(fd);
  unsetenv("NOTIFY_SOCKET");
}

static void test_notify_bad_addresses(void **state) {
  (void)state;
  char path[200];
  setenv("NOTIFY_SOCKET", "relative/notify", 1);
  assert_int_equal(grace_sd_notify("READY=1"), -EAFNOSUPPORT);
  setenv("NOTIFY_SOCKET", "vsock:2:1234", 1);
  assert_int_equal(grace_sd_notify("READY=1"), -EAFNOSUPPORT);
  setenv("NOTIFY_SOCKET", "@", 1);
  assert_int_equal(grace_sd_notify("READY=1"), GRACE_EINVAL);
  memset(path, 'a', sizeof(path) - 1);
  path[0] = '/';
  path[sizeof(path) - 1] = '\0';
  setenv("NOTIFY_SOCKET", path, 1);
  assert_int_equal(grace_sd_notify("READY=1"), GRACE_EINVAL);
  /* Nobody there: the error is the system's. */
  sock_path(path, sizeof(path), "nobody");
  setenv("NOTIFY_SOCKET", path, 1);
  assert_int_equal(grace_sd_notify("READY=1"), -ENOENT);
  int fd = notify_listener(path);
  close(fd); /* the file stays, nobody reads */
  assert_int_equal(grace_sd_notify("READY=1"), -ECONNREFUSED);
  unlink(path);
  unsetenv("NOTIFY_SOCKET");
}

/* A listening TCP socket on 127.0.0.1 (any port). */
static int tcp_listener(void) {
  struct sockaddr_in sa = {.sin_family = AF_INET};
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  assert_true(fd >= 0);
  assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
  assert_int_equal(listen(fd, 4), 0);
  return fd;
}

/* Reads one datagram (waiting up to 1 s) with the descriptors that came
 * with it: its length; |*nfds| descriptors stored in |fds|. */
static int recv_with_fds(int fd, char *buf, size_t cap, int *fds, int maxfds,
                         int *nfds) {
  struct pollfd p = {.fd = fd, .events = POLLIN};
  if (poll(&p, 1, 1000) != 1)
    return -1;
  union {
    char buf[CMSG_SPACE(sizeof(int) * 8)];
    struct cmsghdr align;
  } control;
  struct iovec iov = {.iov_base = buf, .iov_len = cap - 1};
  struct msghdr msg = {.msg_iov = &iov,
                       .msg_iovlen = 1,
                       .msg_control = control.buf,
                       .msg_controllen = sizeof(control.buf)};
  assert_true(maxfds <= 8);
  ssize_t n = recvmsg(fd, &msg, MSG_CMSG_CLOEXEC);
  assert_true(n >= 0);
  assert_int_equal(msg.msg_flags & (MSG_CTRUNC | MSG_TRUNC), 0);
  buf[n] = '\0';
  *nfds = 0;
  for (struct cmsghdr *cm = CMSG_FIRSTHDR(&msg); cm != NULL;
       cm = CMSG_NXTHDR(&msg, cm)) {
    assert_int_equal(cm->cmsg_level, SOL_SOCKET);
    assert_int_equal(cm->cmsg_type, SCM_RIGHTS);
    size_t k = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    assert_true(*nfds + (int)k <= maxfds);
    memcpy(fds + *nfds, CMSG_DATA(cm), k * sizeof(int));
    *nfds += (int)k;
  }
  return (int)n;
}

/* |a| and |b| are the same open file (socket, pipe): same inode. */
static bool same_file(int a, int b) {
  struct stat sa, sb;
  return fstat(a, &sa) == 0 && fstat(b, &sb) == 0 && sa.st_dev == sb.st_dev &&
         sa.st_ino == sb.st_ino;
}

static int local_port(int fd) {
  struct sockaddr_in sa;
  socklen_t len = sizeof(sa);
  assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
  return ntohs(sa.sin_port);
}

static void test_notify_with_fds(void **state) {
  (void)state;
  char path[128], buf[256];
  int got[8], ngot, acc = 0;
  socklen_t alen = sizeof(acc);
  sock_path(path, sizeof(path), "notify-fds");
  int fd = notify_listener(path);
  int l = tcp_listener();
  int pp[2];
  assert_int_equal(pipe2(pp, O_CLOEXEC), 0);

  /* Without NOTIFY_SOCKET: nothing to do, nothing sent. */
  unsetenv("NOTIFY_SOCKET");
  assert_int_equal(grace_sd_notify_with_fds("FDSTORE=1\nFDNAME=x", &l, 1), 0);

  setenv("NOTIFY_SOCKET", path, 1);
  assert_int_equal(recv_msg(fd, buf, sizeof(buf), 0), -1);
  /* One listening socket: the text, and the same socket as SCM_RIGHTS. */
  assert_int_equal(grace_sd_notify_with_fds("FDSTORE=1\nFDNAME=x", &l, 1), 1);
  assert_int_equal(recv_with_fds(fd, buf, sizeof(buf), got, 8, &ngot), 18);
  assert_string_equal(buf, "FDSTORE=1\nFDNAME=x");
  assert_int_equal(ngot, 1);
  assert_true(got[0] != l);
  assert_true(same_file(got[0], l));
  assert_int_equal(local_port(got[0]), local_port(l));
  assert_int_equal(
      getsockopt(got[0], SOL_SOCKET, SO_ACCEPTCONN, &acc, &alen), 0);
  assert_true(acc);
  close(got[0]);
  /* The caller's descriptor stays its own, open. */
  assert_true(fcntl(l, F_GETFD) >= 0);

  /* Several, in their order. */
  int two[2] = {pp[0], l};
  assert_int_equal(grace_sd_notify_with_fds("FDSTORE=1\nFDNAME=a", two, 2), 1);
  assert_int_equal(recv_with_fds(fd, buf, sizeof(buf), got, 8, &ngot), 18);
  assert_string_equal(buf, "FDSTORE=1\nFDNAME=a");
  assert_int_equal(ngot, 2);
  assert_true(same_file(got[0], pp[0]));
  assert_true(same_file(got[1], l));
  close(got[0]);
  close(got[1]);

  /* None: a plain message (fds may be NULL). */
  assert_int_equal(grace_sd_notify_with_fds("STATUS=none", NULL, 0), 1);
  assert_int_equal(recv_with_fds(fd, buf, sizeof(buf), got, 8, &ngot), 11);
  assert_string_equal(buf, "STATUS=none");
  assert_int_equal(ngot, 0);

  /* Refused: too many, or none given for a count, or no text. */
  int many[GRACE_SD_NOTIFY_MAX_FDS + 1];
  for (size_t i = 0; i < GRACE_SD_NOTIFY_MAX_FDS + 1; i++)
    many[i] = l;
  assert_int_equal(grace_sd_notify_with_fds("FDSTORE=1", many,
                                            GRACE_SD_NOTIFY_MAX_FDS + 1),
                   GRACE_EINVAL);
  assert_int_equal(grace_sd_notify_with_fds("FDSTORE=1", NULL, 1),
                   GRACE_EINVAL);
  assert_int_equal(grace_sd_notify_with_fds("", &l, 1), GRACE_EINVAL);
  assert_int_equal(grace_sd_notify_with_fds(NULL, &l, 1), GRACE_EINVAL);
  assert_int_equal(recv_msg(fd, buf, sizeof(buf), 0), -1);
  /* The largest count is sent. */
  assert_int_equal(
      grace_sd_notify_with_fds("FDSTORE=1", many, GRACE_SD_NOTIFY_MAX_FDS), 1);
  assert_int_equal(recv_msg(fd, buf, sizeof(buf), 1000), 9);

  close(pp[0]);
  close(pp[1]);
  close(l);
  close(fd);
  unlink(path);
  unsetenv("NOTIFY_SOCKET");
}

/* ---- the group's notifications ------------------------------------------- */

typedef struct drainer {
  grace_group_part *part;
  grace_duration after;
  pthread_t thread;
} drainer;

static void *drain_later(void *arg) {
  drainer *d = arg;
  struct timespec ts = {0, (long)d->after};
  nanosleep(&ts, NULL);
  grace_group_part_done(d->part, 0);
  return NULL;
}

static int drainer_begin(grace_group_part *part, grace_ctx *deadline,
                         void *data) {
  drainer *d = data;
  (void)deadline;
  d->part = part;
  return pthread_create(&d->thread, NULL, drain_later, d) == 0 ? 0
                                                                : GRACE_ENOMEM;
}

static int drainer_force(grace_group_part *part, char *what, size_t len,
                         void *data) {
  (void)part;
  (void)what;
  (void)len;
  (void)data;
  return 0;
}

typedef struct received {
  char text[32][256];
  int64_t t[32];
  int n;
} received;

static void drain_socket(int fd, received *rcv) {
  char buf[256];
  while (rcv->n < 32 && recv_msg(fd, buf, sizeof(buf), 0) >= 0) {
    snprintf(rcv->text[rcv->n], sizeof(rcv->text[0]), "%s", buf);
    rcv->n++;
  }
}

static void run_group_with_notify(bool no_notify, grace_duration drain,
                                  received *rcv) {
  char path[128];
  grace_group_options opts;
  grace_group *g;
  drainer d = {.after = drain};
  grace_group_part_ops ops = {.begin = drainer_begin, .force = drainer_force};
  grace_ctx *stop;

  sock_path(path, sizeof(path), "group-notify");
  unlink(path);
  int fd = notify_listener(path);
  setenv("NOTIFY_SOCKET", path, 1);
  grace_group_options_init(&opts);
  opts.shutdown_timeout = 5 * GRACE_SECOND;
  opts.notify_interval = 50 * MS;
  opts.no_notify = no_notify;
  opts.quiet = true;
  assert_int_equal(grace_group_new(&opts, &g), 0);
  assert_int_equal(grace_group_add(g, "slow", &ops, &d, NULL), 0);
  assert_int_equal(grace_ctx_with_cancel(grace_ctx_background(), &stop), 0);
  grace_ctx_cancel(stop);
  assert_int_equal(grace_group_run(g, stop, NULL), 0);
  pthread_join(d.thread, NULL);
  memset(rcv, 0, sizeof(*rcv));
  drain_socket(fd, rcv);
  grace_group_free(g);
  grace_ctx_unref(stop);
  close(fd);
  unlink(path);
  unsetenv("NOTIFY_SOCKET");
}

static void test_group_notifies_systemd(void **state) {
  (void)state;
  received rcv;
  run_group_with_notify(false, 180 * MS, &rcv);

  assert_true(rcv.n >= 6);
  assert_string_equal(rcv.text[0], "READY=1\nSTATUS=Serving");
  assert_string_equal(rcv.text[1],
                      "STOPPING=1\nSTATUS=Shutting down: not ready");
  /* Extensions from the first signal on, one per period (at 0, 50, 100
   * and 150 ms of a 180 ms drain), each 1.5 periods long. */
  int extends = 0;
  for (int i = 2; i < rcv.n - 1; i++) {
    if (strncmp(rcv.text[i], "EXTEND_TIMEOUT_USEC=", 20) == 0) {
      assert_string_equal(rcv.text[i], "EXTEND_TIMEOUT_USEC=75000");
      extends++;
    } else {
      assert_string_equal(rcv.text[i], "STATUS=Shutting down: draining");
    }
  }
  assert_string_equal(rcv.text[2], "EXTEND_TIMEOUT_USEC=75000");
  assert_true(extends >= 4 && extends <= 5);
  assert_string_equal(rcv.text[rcv.n - 1], "STATUS=Shut down: clean");
}

static void test_group_no_notify_option(void **state) {
  (void)state;
  received rcv;
  run_group_with_notify(true, 20 * MS, &rcv);
  assert_int_equal(rcv.n, 0);
}

/* ---- socket activation, in forked children ------------------------------- */

#define CHECK(cond)                                                            \
  do {                                                                         \
    if (!(cond)) {                                                             \
      fprintf(stderr, "child check failed at line %d: %s\n", __LINE__, #cond); \
      return __LINE__ % 250 + 1;                                               \
    }                                                                          \
  } while (0)

/* Runs |fn| in a child process; asserts that it returned 0. */
static void in_child(int (*fn)(void)) {
  fflush(NULL);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0)
    _exit(fn());
  int status;
  assert_int_equal(waitpid(pid, &status, 0), pid);
  assert_true(WIFEXITED(status));
  assert_int_equal(WEXITSTATUS(status), 0);
}

/* A listening TCP socket on 127.0.0.1 at descriptor |at|; its port. */
static int listen_at(int at) {
  struct sockaddr_in sa = {.sin_family = AF_INET};
  socklen_t len = sizeof(sa);
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 ||
      listen(fd, 16) != 0 || getsockname(fd, (struct sockaddr *)&sa, &len))
    return -1;
  if (fd != at) {
    if (dup2(fd, at) != at)
      return -1;
    close(fd);
  }
  return ntohs(sa.sin_port);
}

static void set_listen_env(const char *pid, const char *fds,
                           const char *names) {
  char own[32];
  if (pid == NULL) {
    snprintf(own, sizeof(own), "%d", (int)getpid());
    pid = own;
  }
  setenv("LISTEN_PID", pid, 1);
  setenv("LISTEN_FDS", fds, 1);
  if (names != NULL)
    setenv("LISTEN_FDNAMES", names, 1);
  else
    unsetenv("LISTEN_FDNAMES");
}

static bool listen_env_gone(void) {
  return getenv("LISTEN_PID") == NULL && getenv("LISTEN_FDS") == NULL &&
         getenv("LISTEN_FDNAMES") == NULL;
}

static void root_handler(grace_http_request *req, void *data) {
  (void)data;
  grace_http_respond(req, 200, "activated", 9);
}

static int child_serves_an_activated_socket(void) {
  char **names = NULL, buf[1024];
  int port = listen_at(3);
  CHECK(port > 0);
  /* dup2 leaves the descriptor inheritable, as systemd passes it. */
  CHECK((fcntl(3, F_GETFD) & FD_CLOEXEC) == 0);
  set_listen_env(NULL, "1", "web");

  CHECK(grace_sd_listen_fds_with_names(true, &names) == 1);
  CHECK(names != NULL && strcmp(names[0], "web") == 0 && names[1] == NULL);
  grace_sd_listen_names_free(names);
  CHECK((fcntl(3, F_GETFD) & FD_CLOEXEC) != 0);
  CHECK(listen_env_gone());
  /* Read once: the variables are gone, so a second call finds nothing. */
  CHECK(grace_sd_listen_fds(true) == 0);

  grace_http_options opts;
  grace_http_server *srv;
  grace_http_options_init(&opts);
  opts.loops = 1;
  CHECK(grace_http_server_new(&opts, &srv) == 0);
  CHECK(grace_http_server_handle(srv, "/", root_handler, NULL) == 0);
  CHECK(grace_http_server_listen_fd(srv, GRACE_SD_LISTEN_FDS_START) == 0);
  CHECK(grace_http_server_port(srv, 0) == port);
  CHECK(grace_http_server_start(srv) == 0);

  struct sockaddr_in sa = {.sin_family = AF_INET,
                           .sin_port = htons((uint16_t)port)};
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  int c = socket(AF_INET, SOCK_STREAM, 0);
  CHECK(connect(c, (struct sockaddr *)&sa, sizeof(sa)) == 0);
  static const char req[] = "GET / HTTP/1.1\r\nHost: x\r\nConnection: close"
                            "\r\n\r\n";
  CHECK(write(c, req, sizeof(req) - 1) == (ssize_t)sizeof(req) - 1);
  size_t len = 0;
  ssize_t n;
  while (len < sizeof(buf) - 1 &&
         (n = read(c, buf + len, sizeof(buf) - 1 - len)) > 0)
    len += (size_t)n;
  buf[len] = '\0';
  close(c);
  CHECK(strncmp(buf, "HTTP/1.1 200 ", 13) == 0);
  CHECK(strstr(buf, "\r\n\r\nactivated") != NULL);
  grace_http_server_free(srv);
  return 0;
}

static void test_listen_fds_serves_an_activated_socket(void **state) {
  (void)state;
  in_child(child_serves_an_activated_socket);
}

static int child_listen_fds_rules(void) {
  char **names = (char **)1, other[32];

  /* Nothing passed. */
  unsetenv("LISTEN_PID");
  unsetenv("LISTEN_FDS");
  CHECK(grace_sd_listen_fds(true) == 0);
  CHECK(grace_sd_listen_fds_with_names(true, &names) == 0 && names == NULL);

  /* Two sockets, names given; without unsetting, the variables stay. */
  CHECK(listen_at(3) > 0 && listen_at(4) > 0);
  set_listen_env(NULL, "2", "http:grpc");
  CHECK(grace_sd_listen_fds_with_names(false, &names) == 2);
  CHECK(strcmp(names[0], "http") == 0 && strcmp(names[1], "grpc") == 0 &&
        names[2] == NULL);
  grace_sd_listen_names_free(names);
  CHECK(getenv("LISTEN_FDS") != NULL && getenv("LISTEN_FDNAMES") != NULL);
  CHECK((fcntl(4, F_GETFD) & FD_CLOEXEC) != 0);

  /* No names: each is "unknown". */
  set_listen_env(NULL, "2", NULL);
  CHECK(grace_sd_listen_fds_with_names(true, &names) == 2);
  CHECK(strcmp(names[0], "unknown") == 0 && strcmp(names[1], "unknown") == 0 &&
        names[2] == NULL);
  grace_sd_listen_names_free(names);

  /* Meant for another process: nothing, and the variables go. */
  snprintf(other, sizeof(other), "%d", (int)getpid() + 1);
  set_listen_env(other, "1", NULL);
  CHECK(grace_sd_listen_fds(true) == 0);
  CHECK(listen_env_gone());

  /* Malformed values are errors, and the variables still go. */
  set_listen_env("abc", "1", NULL);
  CHECK(grace_sd_listen_fds(true) == GRACE_EINVAL);
  CHECK(listen_env_gone());
  set_listen_env("0", "1", NULL);
  CHECK(grace_sd_listen_fds(true) == GRACE_EINVAL);
  set_listen_env(NULL, "-1", NULL);
  CHECK(grace_sd_listen_fds(true) == GRACE_EINVAL);
  set_listen_env(NULL, "1x", NULL);
  CHECK(grace_sd_listen_fds(true) == GRACE_EINVAL);
  set_listen_env(NULL, "99999999999", NULL);
  CHECK(grace_sd_listen_fds(true) == GRACE_ERANGE);
  set_listen_env(NULL, "1", "a:b");
  names = NULL;
  CHECK(grace_sd_listen_fds_with_names(true, &names) == GRACE_EINVAL);
  CHECK(names == NULL);
  CHECK(listen_env_gone());
  set_listen_env(NULL, "0", NULL);
  CHECK(grace_sd_listen_fds(true) == 0);

  /* A descriptor that is not open. */
  close(4);
  set_listen_env(NULL, "2", NULL);
  CHECK(grace_sd_listen_fds(true) == -EBADF);
  CHECK(grace_sd_listen_fds_with_names(true, NULL) == GRACE_EINVAL);
  return 0;
}

static void test_listen_fds_rules(void **state) {
  (void)state;
  in_child(child_listen_fds_rules);
}

static void test_parse_uint(void **state) {
  (void)state;
  uint64_t v = 7;
  assert_int_equal(grace__sd_parse_uint("0", 10, &v), 0);
  assert_int_equal(v, 0);
  assert_int_equal(grace__sd_parse_uint("10", 10, &v), 0);
  assert_int_equal(v, 10);
  assert_int_equal(grace__sd_parse_uint("11", 10, &v), GRACE_ERANGE);
  assert_int_equal(grace__sd_parse_uint("18446744073709551615", UINT64_MAX,
                                        &v),
                   0);
  assert_int_equal(v, UINT64_MAX);
  assert_int_equal(
      grace__sd_parse_uint("18446744073709551616", UINT64_MAX, &v),
      GRACE_ERANGE);
  assert_int_equal(grace__sd_parse_uint("", 10, &v), GRACE_EINVAL);
  assert_int_equal(grace__sd_parse_uint(" 1", 10, &v), GRACE_EINVAL);
  assert_int_equal(grace__sd_parse_uint("+1", 10, &v), GRACE_EINVAL);
  assert_int_equal(grace__sd_parse_uint(NULL, 10, &v), GRACE_EINVAL);
}

static int setup(void **state) {
  (void)state;
  snprintf(tmpdir, sizeof(tmpdir), "/tmp/grace-sd-XXXXXX");
  return mkdtemp(tmpdir) == NULL ? -1 : 0;
}

static int teardown(void **state) {
  (void)state;
  return rmdir(tmpdir);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_notify_without_socket_does_nothing),
      cmocka_unit_test(test_notify_to_a_path),
      cmocka_unit_test(test_notify_to_an_abstract_name),
      cmocka_unit_test(test_notify_bad_addresses),
      cmocka_unit_test(test_notify_with_fds),
      cmocka_unit_test(test_listen_fds_serves_an_activated_socket),
      cmocka_unit_test(test_listen_fds_rules),
      cmocka_unit_test(test_parse_uint),
      cmocka_unit_test(test_group_notifies_systemd),
      cmocka_unit_test(test_group_no_notify_option),
  };
  unsetenv("GRACE_SHUTDOWN_TIMEOUT");
  unsetenv("TERMINATION_GRACE_PERIOD_SECONDS");
  return cmocka_run_group_tests(tests, setup, teardown);
}
