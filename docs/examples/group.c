/*
 * The group guide's program (docs/guide/group.md): an HTTP server and a
 * periodic worker as one unit, with /readyz, /livez and /metrics, shut
 * down in phases (not ready, a 1 s delay, drain) under one deadline.
 *
 *   group [addr]      addr defaults to ":8080"; port 0 picks a free one
 *   curl localhost:8080/hello                         -> hello
 *   curl localhost:8080/readyz                        -> ok (503 once
 *                                                        shutting down)
 *
 * The first SIGINT or SIGTERM shuts everything down; exit status 0 when
 * everything drained in time.
 */
#include "grace/context.h"
#include "grace/duration.h"
#include "grace/error.h"
#include "grace/group.h"
#include "grace/http.h"
#include "grace/log.h"
#include "grace/signal.h"
#include "grace/worker.h"

static void hello(grace_http_request *req, void *data) {
  (void)data;
  grace_http_respond(req, 200, "hello\n", 6);
}

/* The worker's task: nothing to do in this example but to be there. */
static grace_duration tick(grace_worker *w, grace_ctx *ctx, void *data) {
  (void)w;
  (void)ctx;
  (void)data;
  return GRACE_WORKER_DEFAULT;
}

/* A pre-drain hook: runs in phase 3, before any part begins to drain. */
static int say_draining(grace_group_hook *hook, grace_ctx *deadline,
                        void *data) {
  (void)hook;
  (void)deadline;
  (void)data;
  grace_log("draining");
  return 0;
}

int main(int argc, char **argv) {
  const char *addr = argc > 1 ? argv[1] : ":8080";
  grace_ctx *stop = grace_signal_context();

  grace_group_options gopts;
  grace_group_options_init(&gopts);
  gopts.shutdown_delay = GRACE_SECOND;       /* let load balancers notice */
  gopts.shutdown_timeout = 10 * GRACE_SECOND; /* else from the environment */
  grace_group *g;
  int rv = grace_group_new(&gopts, &g);
  if (rv != 0)
    grace_log_fatal("group: %s", grace_strerror(rv));

  grace_http_server *srv;
  if ((rv = grace_http_server_new(NULL, &srv)) != 0 ||
      (rv = grace_http_server_handle(srv, "/hello", hello, NULL)) != 0 ||
      (rv = grace_group_http_health(g, srv)) != 0 ||
      (rv = grace_http_server_listen(srv, addr)) != 0)
    grace_log_fatal("HTTP server %s: %s", addr, grace_strerror(rv));
  grace_log("listening on port %d", grace_http_server_port(srv, 0));

  grace_worker_options wopts;
  grace_worker_options_init(&wopts);
  wopts.interval = GRACE_SECOND;
  wopts.task = tick;
  grace_worker *w;
  if ((rv = grace_worker_new(&wopts, &w)) != 0)
    grace_log_fatal("worker: %s", grace_strerror(rv));

  /* The group starts the parts (in this order) and drains them. */
  if ((rv = grace_group_add_http(g, "http", srv)) != 0 ||
      (rv = grace_group_add_worker(g, "ticker", w)) != 0 ||
      (rv = grace_group_add_hook(g, GRACE_GROUP_PRE_DRAIN, "say", say_draining,
                                 NULL)) != 0)
    grace_log_fatal("group: %s", grace_strerror(rv));

  grace_group_result res;
  rv = grace_group_run(g, stop, &res); /* until the signal, then drains */
  grace_group_free(g);                 /* before what its parts adapt */
  grace_worker_free(w);
  grace_http_server_free(srv);
  return rv == 0 ? 0 : 1;
}
