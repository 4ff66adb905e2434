/*
 * The upgrade guide's program (docs/guide/upgrade.md): an HTTP server in a
 * group with the upgrader.  SIGUSR2 starts the binary at this program's
 * path on the same listening socket; once it serves, this process stops
 * accepting, drains and exits 0.
 *
 *   upgrade [addr]    addr defaults to ":8080"; port 0 picks a free one,
 *                     which every generation then shares
 *   curl localhost:8080/pid                 -> the PID that answered
 *   kill -USR2 <pid>                        -> a new generation takes over
 */
#include <stdio.h>
#include <unistd.h>

#include "grace/context.h"
#include "grace/error.h"
#include "grace/group.h"
#include "grace/http.h"
#include "grace/log.h"
#include "grace/signal.h"
#include "grace/upgrade.h"

static void pid(grace_http_request *req, void *data) {
  (void)data;
  char body[32];
  int n = snprintf(body, sizeof(body), "%d\n", (int)getpid());
  grace_http_respond(req, 200, body, (size_t)n);
}

int main(int argc, char **argv) {
  const char *addr = argc > 1 ? argv[1] : ":8080";
  /* First, before any thread: it adopts what a predecessor handed over
   * and installs the SIGUSR2 handler. */
  grace_upgrader *up;
  int rv = grace_upgrader_new(NULL, argc, argv, &up);
  if (rv != 0)
    grace_log_fatal("upgrader: %s", grace_strerror(rv));
  grace_ctx *stop = grace_signal_context();

  /* The listener: inherited under its name, or bound the first time. */
  int fd;
  bool inherited;
  if ((rv = grace_upgrader_listen(up, "http", addr, 0, &fd, &inherited)) != 0)
    grace_log_fatal("listen %s: %s", addr, grace_strerror(rv));
  grace_http_server *srv;
  if ((rv = grace_http_server_new(NULL, &srv)) != 0 ||
      (rv = grace_http_server_handle(srv, "/pid", pid, NULL)) != 0 ||
      (rv = grace_http_server_listen_fd(srv, fd)) != 0)
    grace_log_fatal("HTTP server: %s", grace_strerror(rv));
  grace_log("generation %u listening on port %d (%s)",
            grace_upgrader_generation(up), grace_http_server_port(srv, 0),
            inherited ? "inherited" : "bound");

  grace_group *g;
  if ((rv = grace_group_new(NULL, &g)) != 0 ||
      (rv = grace_group_add_http(g, "http", srv)) != 0 ||
      (rv = grace_group_add_upgrader(g, "upgrade", up)) != 0) /* last */
    grace_log_fatal("group: %s", grace_strerror(rv));
  grace_group_result res;
  rv = grace_group_run(g, stop, &res); /* a signal, or a hand-over */
  if (res.handed_over != 0)
    grace_log("handed over to %d", res.handed_over);
  grace_group_free(g);
  grace_http_server_free(srv);
  grace_upgrader_free(up); /* after the group */
  return rv == 0 ? 0 : 1;
}
