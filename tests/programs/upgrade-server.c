/*
 * upgrade-server: the smallest program with zero-downtime upgrades, for
 * tests/integration/test_upgrade.py.  It is built twice, as
 * upgrade-server-a and upgrade-server-b (tests/CMakeLists.txt), which
 * differ only in GRACE_BUILD_ID: every answer carries "X-Build: <id>", so
 * a test that alternates the two binaries behind one path sees which
 * process answered.  Build b also listens on -extra-addr (a listener
 * added by the new version; going back to a removes it).  Both builds
 * listen on -second-addr when given (a second listener every generation
 * has: bench/upgrade.py's program with two listeners).
 *
 *   GET /            "<id>\n"
 *   GET /pid         this process's pid
 *   GET /sleep?duration=300ms   answers after that long
 *
 * -fail-file names a file read (and removed) once at start, so that only
 * the next process to start fails, as the test asks: "exit" (exit 1
 * before it is ready), "hang" (never ready), "crash" (abort 200 ms after
 * it is ready).
 *
 * -shutdown-delay is the group's shutdown delay (phase 2 of a plain
 * shutdown; a hand-over has none), for the stop + start rolling restarts
 * of tests/integration/test_upgrade_fleet.py.  -shutdown-timeout 0s
 * takes the deadline from the environment (GRACE_SHUTDOWN_TIMEOUT or
 * TERMINATION_GRACE_PERIOD_SECONDS).
 */
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <uv.h>

#include "grace/context.h"
#include "grace/duration.h"
#include "grace/flags.h"
#include "grace/group.h"
#include "grace/http.h"
#include "grace/log.h"
#include "grace/signal.h"
#include "grace/upgrade.h"

#ifndef GRACE_BUILD_ID
#define GRACE_BUILD_ID "a"
#endif

static void answer(grace_http_request *req, const char *body) {
  grace_http_response_header(req, "X-Build", GRACE_BUILD_ID);
  grace_http_respond(req, 200, body, strlen(body));
}

static void handle_root(grace_http_request *req, void *data) {
  (void)data;
  answer(req, GRACE_BUILD_ID "\n");
}

static void handle_pid(grace_http_request *req, void *data) {
  char buf[32];
  (void)data;
  snprintf(buf, sizeof(buf), "%ld\n", (long)getpid());
  answer(req, buf);
}

typedef struct sleeper {
  uv_timer_t timer;
  grace_http_request *req;
} sleeper;

static void sleeper_closed(uv_handle_t *h) { free(h->data); }

static void sleeper_fire(uv_timer_t *t) {
  sleeper *s = t->data;
  answer(s->req, "slept\n");
  uv_close((uv_handle_t *)&s->timer, sleeper_closed);
}

/* The request was cut (the deadline's force, or the client left): no
 * answer, and the request is given back before the server is freed. */
static void sleeper_cancel(grace_http_request *req, void *data) {
  sleeper *s = data;
  uv_timer_stop(&s->timer);
  grace_http_request_abandon(req);
  uv_close((uv_handle_t *)&s->timer, sleeper_closed);
}

static void handle_sleep(grace_http_request *req, void *data) {
  (void)data;
  grace_duration d = 300 * GRACE_MILLISECOND;
  char text[32];
  if (grace_http_request_query(req, "duration", text, sizeof(text)) >= 0)
    (void)grace_duration_parse(text, &d, NULL, 0);
  sleeper *s = malloc(sizeof(*s));
  if (s == NULL) {
    grace_http_respond(req, 500, NULL, 0);
    return;
  }
  s->req = req;
  uv_timer_init(grace_http_request_loop(req), &s->timer);
  s->timer.data = s;
  grace_http_request_on_cancel(req, sleeper_cancel, s);
  uv_timer_start(&s->timer, sleeper_fire, (uint64_t)(d / GRACE_MILLISECOND),
                 0);
}

/* The failure this process was asked to have, read once. */
static char fail_mode[16];

static void read_fail_file(const char *path) {
  if (path == NULL)
    return;
  FILE *f = fopen(path, "r");
  if (f == NULL)
    return;
  if (fgets(fail_mode, sizeof(fail_mode), f) == NULL)
    fail_mode[0] = '\0';
  fclose(f);
  unlink(path);
  fail_mode[strcspn(fail_mode, "\n")] = '\0';
}

static void *crasher(void *arg) {
  (void)arg;
  struct timespec ts = {0, 200 * 1000 * 1000};
  nanosleep(&ts, NULL);
  grace_log("crashing on purpose (-fail-file said crash)");
  abort();
}

static int check_ready(grace_upgrader *u, void *data) {
  (void)u;
  (void)data;
  if (strcmp(fail_mode, "hang") == 0)
    return GRACE_EBUSY; /* never ready: the old process's timeout kills us */
  if (strcmp(fail_mode, "crash") == 0) {
    pthread_t t;
    pthread_create(&t, NULL, crasher, NULL);
    pthread_detach(t);
  }
  return 0;
}

int main(int argc, char **argv) {
  const char *addr = "127.0.0.1:0", *extra_addr = NULL, *pidfile = NULL;
  const char *upgrade_socket = NULL, *fail_file = NULL, *exe = NULL;
  const char *second_addr = NULL;
  grace_duration timeout = 10 * GRACE_SECOND, upgrade_timeout = 0;
  grace_duration close_spread = 0, shutdown_delay = 0;
  int64_t loops = 1;

  grace_flags *flags = grace_flags_new(argv[0]);
  if (flags == NULL)
    grace_log_fatal("out of memory");
  grace_flags_string(flags, "addr", &addr, "HTTP listen address");
  grace_flags_string(flags, "extra-addr", &extra_addr,
                     "second listener (build b only)");
  grace_flags_string(flags, "second-addr", &second_addr,
                     "second listener (every build)");
  grace_flags_string(flags, "pidfile", &pidfile, "PID file");
  grace_flags_string(flags, "upgrade-socket", &upgrade_socket,
                     "control socket");
  grace_flags_duration(flags, "upgrade-timeout", &upgrade_timeout,
                       "ready timeout of a new process");
  grace_flags_duration(flags, "close-spread", &close_spread,
                       "keep-alive close spread of a hand-over");
  grace_flags_duration(flags, "shutdown-timeout", &timeout,
                       "deadline of the drain (0: from the environment)");
  grace_flags_duration(flags, "shutdown-delay", &shutdown_delay,
                       "not ready but serving this long at a plain shutdown");
  grace_flags_string(flags, "fail-file", &fail_file,
                     "a file naming how the next process to start fails");
  grace_flags_int(flags, "loops", &loops, "event-loop threads");
  grace_flags_string(flags, "exe", &exe,
                     "the executable an upgrade starts (default: this "
                     "program's path)");
  grace_flags_parse_or_exit(flags, argc, argv);
  grace_flags_free(flags);

  read_fail_file(fail_file);
  if (strcmp(fail_mode, "exit") == 0) {
    grace_log("exiting on purpose (-fail-file said exit)");
    return 1;
  }

  grace_upgrader_options uo;
  grace_upgrader_options_init(&uo);
  uo.pidfile = pidfile;
  uo.control_path = upgrade_socket;
  uo.ready_timeout = upgrade_timeout;
  uo.close_spread = close_spread;
  uo.ready_check = check_ready;
  uo.exe = exe;
  grace_upgrader *up;
  int rv = grace_upgrader_new(&uo, argc, argv, &up);
  if (rv != 0)
    grace_log_fatal("upgrade: %s", grace_strerror(rv));
  grace_ctx *stop = grace_signal_context();

  grace_group_options go;
  grace_group_options_init(&go);
  go.shutdown_timeout = timeout;
  go.shutdown_delay = shutdown_delay;
  grace_group *g;
  if ((rv = grace_group_new(&go, &g)) != 0)
    grace_log_fatal("group: %s", grace_strerror(rv));

  grace_http_options ho;
  grace_http_options_init(&ho);
  ho.loops = (unsigned)loops;
  grace_http_server *srv;
  if ((rv = grace_http_server_new(&ho, &srv)) != 0 ||
      (rv = grace_http_server_handle(srv, "/", handle_root, NULL)) != 0 ||
      (rv = grace_http_server_handle(srv, "/pid", handle_pid, NULL)) != 0 ||
      (rv = grace_http_server_handle(srv, "/sleep", handle_sleep, NULL)) != 0 ||
      (rv = grace_group_http_health(g, srv)) != 0)
    grace_log_fatal("HTTP server: %s", grace_strerror(rv));

  int fd;
  bool inherited;
  if ((rv = grace_upgrader_listen(up, "http", addr, 0, &fd, &inherited)) != 0 ||
      (rv = grace_http_server_listen_fd(srv, fd)) != 0)
    grace_log_fatal("listen %s: %s", addr, grace_strerror(rv));
  if (second_addr != NULL) {
    if ((rv = grace_upgrader_listen(up, "second", second_addr, 0, &fd,
                                    NULL)) != 0 ||
        (rv = grace_http_server_listen_fd(srv, fd)) != 0)
      grace_log_fatal("listen %s: %s", second_addr, grace_strerror(rv));
  }
  if (extra_addr != NULL && strcmp(GRACE_BUILD_ID, "b") == 0) {
    if ((rv = grace_upgrader_listen(up, "extra", extra_addr, 0, &fd, NULL)) !=
            0 ||
        (rv = grace_http_server_listen_fd(srv, fd)) != 0)
      grace_log_fatal("listen %s: %s", extra_addr, grace_strerror(rv));
  }
  grace_log("build %s pid %ld generation %u serving HTTP on port %d (%s)",
            GRACE_BUILD_ID, (long)getpid(), grace_upgrader_generation(up),
            grace_http_server_port(srv, 0),
            inherited ? "inherited" : "bound");

  if ((rv = grace_group_add_http(g, "http", srv)) != 0 ||
      (rv = grace_group_add_upgrader(g, "upgrade", up)) != 0)
    grace_log_fatal("group: %s", grace_strerror(rv));

  grace_group_result res;
  rv = grace_group_run(g, stop, &res);
  grace_group_free(g);
  grace_http_server_free(srv);
  grace_upgrader_free(up);
  return rv == 0 ? 0 : 1;
}
