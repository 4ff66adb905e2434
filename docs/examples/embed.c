/*
 * The embedding guide's program (docs/guide/embed.md): the HTTP server on
 * the program's own libuv loop, on its main thread, beside the program's
 * own handles (here the two signal watchers).
 *
 *   embed [addr]      addr defaults to ":8080"; port 0 picks a free one
 *   curl localhost:8080/hello                    -> hello
 *
 * The first SIGINT or SIGTERM drains within 10 s without blocking the
 * loop, then uv_run returns and the program exits 0 (1 if the deadline cut
 * requests); a second one exits 1 at once.
 */
#include <stdlib.h>

#include <uv.h>

#include "grace/duration.h"
#include "grace/error.h"
#include "grace/http.h"
#include "grace/log.h"
#include "grace/uv.h"

typedef struct app {
  uv_loop_t loop;
  uv_signal_t sigterm, sigint; /* the program's own handles */
  grace_http_server *srv;
  int signals;
  int code;
} app;

static void hello(grace_http_request *req, void *data) {
  (void)data;
  grace_http_respond(req, 200, "hello\n", 6);
}

/* The end of the shutdown, on the loop: the server has left nothing on
 * it.  The program closes its own handles, and uv_run returns. */
static void stopped(grace_http_server *srv, int status, int cut, void *data) {
  app *a = data;
  (void)srv;
  if (status == 0) {
    grace_log("HTTP server graceful shutdown completed");
  } else {
    grace_log("HTTP server Shutdown: %s, %d request(s) cut",
              grace_strerror(status), cut);
    a->code = 1;
  }
  uv_close((uv_handle_t *)&a->sigterm, NULL);
  uv_close((uv_handle_t *)&a->sigint, NULL);
}

/* SIGINT or SIGTERM, on the loop's thread. */
static void on_signal(uv_signal_t *s, int signum) {
  app *a = s->data;
  (void)signum;
  if (++a->signals > 1) {
    grace_log("Second signal: exit now");
    exit(1);
  }
  grace_log("Shutdown Server...");
  /* The blocking form would wait for this very loop: it refuses. */
  int rv = grace_http_server_shutdown(a->srv, NULL);
  grace_log("blocking shutdown on the loop thread: %s",
            rv == GRACE_EDEADLK ? "GRACE_EDEADLK" : grace_strerror(rv));
  /* The loop's form: it begins now and calls stopped() when done. */
  rv = grace_http_server_shutdown_uv(a->srv, 10 * GRACE_SECOND, stopped, a);
  if (rv != 0)
    grace_log_fatal("HTTP server Shutdown: %s", grace_strerror(rv));
}

int main(int argc, char **argv) {
  const char *addr = argc > 1 ? argv[1] : ":8080";
  app a = {.code = 0};
  int rv;

  if ((rv = uv_loop_init(&a.loop)) != 0 ||
      (rv = uv_signal_init(&a.loop, &a.sigterm)) != 0 ||
      (rv = uv_signal_init(&a.loop, &a.sigint)) != 0)
    grace_log_fatal("libuv: %s", uv_strerror(rv));
  a.sigterm.data = a.sigint.data = &a;
  if ((rv = uv_signal_start(&a.sigterm, on_signal, SIGTERM)) != 0 ||
      (rv = uv_signal_start(&a.sigint, on_signal, SIGINT)) != 0)
    grace_log_fatal("uv_signal_start: %s", uv_strerror(rv));

  if ((rv = grace_http_server_new(NULL, &a.srv)) != 0)
    grace_log_fatal("HTTP server: %s", grace_strerror(rv));
  if ((rv = grace_http_server_handle(a.srv, "/hello", hello, NULL)) != 0 ||
      (rv = grace_http_server_listen(a.srv, addr)) != 0 ||
      (rv = grace_http_server_start_uv(a.srv, &a.loop)) != 0)
    grace_log_fatal("serve %s: %s", addr, grace_strerror(rv));
  grace_log("listening on port %d", grace_http_server_port(a.srv, 0));

  /* Runs the server and the program's handles until all of them closed. */
  uv_run(&a.loop, UV_RUN_DEFAULT);

  grace_http_server_free(a.srv);
  if ((rv = uv_loop_close(&a.loop)) != 0) /* nothing of the server left */
    grace_log_fatal("uv_loop_close: %s", uv_strerror(rv));
  return a.code;
}
