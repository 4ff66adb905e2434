/*
 * The HTTP guide's program (docs/guide/http.md): one route, the signal
 * context, and net/http's Shutdown then Close.
 *
 *   http [addr]       addr defaults to ":8080"; port 0 picks a free one
 *   curl 'localhost:8080/hello?name=grace'       -> hello, grace
 *
 * The first SIGINT or SIGTERM drains within 10 s and exits 0 (1 if the
 * deadline cut requests); a second one exits 1 at once.
 */
#include <stdio.h>

#include "grace/context.h"
#include "grace/duration.h"
#include "grace/error.h"
#include "grace/http.h"
#include "grace/log.h"
#include "grace/signal.h"

/* GET /hello?name=x answers "hello, x" (or "hello, world"). */
static void hello(grace_http_request *req, void *data) {
  (void)data;
  char name[64], body[96];
  if (grace_http_request_query(req, "name", name, sizeof(name)) < 0)
    snprintf(name, sizeof(name), "world");
  int n = snprintf(body, sizeof(body), "hello, %s\n", name);
  grace_http_respond(req, 200, body, (size_t)n);
}

int main(int argc, char **argv) {
  const char *addr = argc > 1 ? argv[1] : ":8080";
  /* First, before any thread: SIGINT and SIGTERM cancel this context. */
  grace_ctx *stop = grace_signal_context();

  grace_http_server *srv;
  int rv = grace_http_server_new(NULL, &srv);
  if (rv != 0)
    grace_log_fatal("HTTP server: %s", grace_strerror(rv));
  if ((rv = grace_http_server_handle(srv, "/hello", hello, NULL)) != 0 ||
      (rv = grace_http_server_listen(srv, addr)) != 0 ||
      (rv = grace_http_server_start(srv)) != 0)
    grace_log_fatal("serve %s: %s", addr, grace_strerror(rv));
  grace_log("listening on port %d", grace_http_server_port(srv, 0));

  grace_ctx_wait(stop, -1); /* the first signal */
  grace_log("Shutdown Server...");
  grace_ctx *deadline;
  rv = grace_ctx_with_timeout(grace_ctx_background(), 10 * GRACE_SECOND,
                              &deadline);
  if (rv != 0)
    grace_log_fatal("Shutdown: %s", grace_strerror(rv));
  rv = grace_http_server_shutdown(srv, deadline);
  if (rv == 0) {
    grace_log("HTTP server graceful shutdown completed");
  } else {
    grace_log("HTTP server Shutdown: %s", grace_strerror(rv));
    grace_log("%d request(s) cut", grace_http_server_close(srv));
  }
  grace_ctx_unref(deadline);
  grace_http_server_free(srv);
  return rv == 0 ? 0 : 1;
}
