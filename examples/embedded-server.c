/*
 * embedded-server: the seed's HTTP server on a libuv loop the program owns
 * (grace/uv.h), beside the program's own handles.
 *
 *   GET /sleep?duration=5s   sleeps that long, then "Welcome HTTP Server"
 *   GET /                    "Hello, World!\n"
 *
 * One loop, one thread (the main one): a uv_signal_t for SIGTERM and one
 * for SIGINT, a uv_timer_t that does the program's own periodic work every
 * -tick, and the HTTP server.  The first signal shuts the server down
 * gracefully within -shutdown-timeout without blocking the loop (the
 * periodic work goes on meanwhile); when the server has stopped, the
 * program closes its own handles, uv_run returns, uv_loop_close succeeds
 * and it exits 0 (1 when the deadline cut requests).  A second signal
 * exits at once with status 1.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "grace/duration.h"
#include "grace/flags.h"
#include "grace/http.h"
#include "grace/log.h"
#include "grace/uv.h"

#include "sleep_handler.h" /* the /sleep and / routes */

typedef struct app {
  uv_loop_t loop;
  uv_signal_t sigterm, sigint;
  uv_timer_t tick;
  grace_http_server *srv;
  grace_duration shutdown_timeout;
  unsigned long ticks;
  int signals;
  int code;
} app;

/* The program's own periodic work: here it only counts its runs. */
static void on_tick(uv_timer_t *t) {
  app *a = t->data;
  a->ticks++;
}

static void on_listeners_closed(grace_http_server *srv, void *data) {
  (void)srv;
  (void)data;
  grace_log("Stopped serving new connections");
}

/* The server has stopped and left nothing on the loop: the program's own
 * handles go too, and uv_run returns. */
static void on_stopped(grace_http_server *srv, int status, int cut,
                       void *data) {
  app *a = data;
  (void)srv;
  if (status != 0) {
    grace_log("HTTP server Shutdown: %s", grace_strerror(status));
    grace_log("HTTP server closed: %d request(s) cut", cut);
    a->code = 1;
  } else {
    grace_log("HTTP server graceful shutdown completed");
  }
  uv_close((uv_handle_t *)&a->sigterm, NULL);
  uv_close((uv_handle_t *)&a->sigint, NULL);
  uv_close((uv_handle_t *)&a->tick, NULL);
}

static void on_signal(uv_signal_t *s, int signum) {
  app *a = s->data;
  (void)signum;
  if (++a->signals > 1) {
    /* The second signal: now, whatever is still running. */
    grace_log("Second signal: exit now");
    exit(1);
  }
  grace_log("Shutdown Server...");
  int rv =
      grace_http_server_shutdown_uv(a->srv, a->shutdown_timeout, on_stopped, a);
  if (rv != 0)
    grace_log_fatal("HTTP server Shutdown: %s", grace_strerror(rv));
}

int main(int argc, char **argv) {
  const char *addr = ":8000";
  grace_duration tick = GRACE_SECOND;
  app a;
  int rv;

  memset(&a, 0, sizeof(a));
  a.shutdown_timeout = 10 * GRACE_SECOND;
  grace_flags *flags = grace_flags_new(argv[0]);
  if (flags == NULL)
    grace_log_fatal("out of memory");
  grace_flags_string(flags, "addr", &addr, "listen address (host:port)");
  grace_flags_duration(flags, "shutdown-timeout", &a.shutdown_timeout,
                       "deadline of the graceful shutdown");
  grace_flags_duration(flags, "tick", &tick,
                       "period of the program's own work on the loop");
  grace_flags_parse_or_exit(flags, argc, argv);
  grace_flags_free(flags);
  if (tick < GRACE_MILLISECOND || a.shutdown_timeout < 0) {
    fprintf(stderr, "invalid -tick or -shutdown-timeout\n");
    return 2;
  }

  if ((rv = uv_loop_init(&a.loop)) != 0)
    grace_log_fatal("uv_loop_init: %s", uv_strerror(rv));
  if ((rv = uv_signal_init(&a.loop, &a.sigterm)) != 0 ||
      (rv = uv_signal_init(&a.loop, &a.sigint)) != 0 ||
      (rv = uv_timer_init(&a.loop, &a.tick)) != 0)
    grace_log_fatal("libuv: %s", uv_strerror(rv));
  a.sigterm.data = a.sigint.data = a.tick.data = &a;
  if ((rv = uv_signal_start(&a.sigterm, on_signal, SIGTERM)) != 0 ||
      (rv = uv_signal_start(&a.sigint, on_signal, SIGINT)) != 0)
    grace_log_fatal("uv_signal_start: %s", uv_strerror(rv));
  uint64_t ms = (uint64_t)(tick / GRACE_MILLISECOND);
  if ((rv = uv_timer_start(&a.tick, on_tick, ms, ms)) != 0)
    grace_log_fatal("uv_timer_start: %s", uv_strerror(rv));

  rv = grace_http_server_new(NULL, &a.srv);
  if (rv != 0)
    grace_log_fatal("HTTP server error: %s", grace_strerror(rv));
  if ((rv = grace_http_server_handle(a.srv, "/sleep", handle_sleep, NULL)) ||
      (rv = grace_http_server_handle(a.srv, "/", handle_root, NULL)) ||
      (rv = grace_http_server_on_shutdown(a.srv, on_listeners_closed, NULL)))
    grace_log_fatal("HTTP server error: %s", grace_strerror(rv));
  rv = grace_http_server_listen(a.srv, addr);
  if (rv != 0)
    grace_log_fatal("HTTP server error: listen tcp %s: %s", addr,
                    grace_strerror(rv));
  rv = grace_http_server_start_uv(a.srv, &a.loop);
  if (rv != 0)
    grace_log_fatal("HTTP server error: %s", grace_strerror(rv));

  uv_run(&a.loop, UV_RUN_DEFAULT);

  grace_http_server_free(a.srv);
  rv = uv_loop_close(&a.loop);
  if (rv != 0)
    grace_log_fatal("uv_loop_close: %s", uv_strerror(rv));
  grace_log("Periodic work ran %lu time(s)", a.ticks);
  return a.code;
}
