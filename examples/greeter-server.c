/*
 * greeter-server: the seed's gRPC Greeter server, in C with grace.
 *
 * SayHello(HelloRequest{name, duration}) logs "Received: <name>", sleeps
 * |duration| (on a timer: other calls go on meanwhile) and replies
 * "Hello <name>".  The first SIGINT/SIGTERM stops the server gracefully
 * (grpc-go's GracefulStop: health NOT_SERVING, listeners closed, two-phase
 * GOAWAY, wait for every call); with -shutdown-timeout the stop escalates
 * to a hard stop at that deadline.  A second signal exits 1 at once.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "grace/context.h"
#include "grace/duration.h"
#include "grace/flags.h"
#include "grace/grpc.h"
#include "grace/log.h"
#include "grace/signal.h"
#include "helloworld.pb-c.h"

/* A SayHello waiting for its timer. */
typedef struct hello {
  uv_timer_t timer;
  grace_grpc_call *call;
  char *name;
} hello;

static void hello_closed(uv_handle_t *handle) {
  hello *h = handle->data;
  free(h->name);
  free(h);
}

static void reply(grace_grpc_call *call, const char *name) {
  HelloReply rep;
  size_t len = strlen(name);
  char *message = malloc(len + 7);
  if (message == NULL) {
    grace_grpc_call_finish(call, GRACE_GRPC_RESOURCE_EXHAUSTED, NULL);
    return;
  }
  memcpy(message, "Hello ", 6);
  memcpy(message + 6, name, len + 1);
  hello_reply__init(&rep);
  rep.message = message;
  int rv = grace_grpc_call_send(call, &rep.base);
  free(message);
  grace_grpc_call_finish(call, rv == 0 ? GRACE_GRPC_OK : GRACE_GRPC_INTERNAL,
                         rv == 0 ? NULL : grace_strerror(rv));
}

static void on_wake(uv_timer_t *timer) {
  hello *h = timer->data;
  reply(h->call, h->name);
  uv_close((uv_handle_t *)&h->timer, hello_closed);
}

static void say_hello_cancel(grace_grpc_call *call, void *data) {
  hello *h = grace_grpc_call_data(call);
  (void)data;
  if (h == NULL)
    return; /* answered already */
  uv_timer_stop(&h->timer);
  uv_close((uv_handle_t *)&h->timer, hello_closed);
  grace_grpc_call_finish(call, GRACE_GRPC_CANCELLED, "context canceled");
}

static void say_hello(grace_grpc_call *call, const void *msg, void *data) {
  const HelloRequest *in = msg;
  const char *name = in->name ? in->name : "";
  grace_duration d = 0;
  (void)data;

  grace_log("Received: %s", name);
  /* As the seed: a bad duration is ignored (time.ParseDuration's error is
   * dropped, the sleep is 0). */
  if (in->duration != NULL &&
      grace_duration_parse(in->duration, &d, NULL, 0) != 0)
    d = 0;
  if (d <= 0) {
    reply(call, name);
    return;
  }
  hello *h = calloc(1, sizeof(*h));
  if (h == NULL || (h->name = strdup(name)) == NULL ||
      uv_timer_init(grace_grpc_call_loop(call), &h->timer) != 0) {
    if (h != NULL)
      free(h->name);
    free(h);
    grace_grpc_call_finish(call, GRACE_GRPC_RESOURCE_EXHAUSTED, NULL);
    return;
  }
  h->call = call;
  h->timer.data = h;
  grace_grpc_call_set_data(call, h);
  uint64_t ms = (uint64_t)((d + GRACE_MILLISECOND - 1) / GRACE_MILLISECOND);
  uv_timer_start(&h->timer, on_wake, ms, 0);
}

int main(int argc, char **argv) {
  int64_t port = 50051, loops = 0;
  grace_duration shutdown_timeout = 0;
  grace_grpc_options opts;
  grace_grpc_server *srv;
  grace_ctx *ctx = NULL;
  char addr[32];
  int rv, cut = 0;

  grace_flags *flags = grace_flags_new(argv[0]);
  if (flags == NULL)
    grace_log_fatal("out of memory");
  grace_flags_int(flags, "port", &port, "The server port");
  grace_flags_duration(flags, "shutdown-timeout", &shutdown_timeout,
                       "deadline of the graceful stop, then a hard stop "
                       "(0: wait for every call, as grpc-go)");
  grace_flags_int(flags, "loops", &loops,
                  "event-loop threads (0: one per core)");
  grace_flags_parse_or_exit(flags, argc, argv);
  grace_flags_free(flags);
  if (port < 0 || port > 65535 || loops < 0 || loops > 256) {
    fprintf(stderr, "invalid -port or -loops\n");
    return 2;
  }

  grace_ctx *stop = grace_signal_context();

  grace_grpc_options_init(&opts);
  opts.http.loops = (unsigned)loops;
  rv = grace_grpc_server_new(&opts, &srv);
  if (rv != 0)
    grace_log_fatal("failed to create server: %s", grace_strerror(rv));
  grace_grpc_method m = {.path = "/Greeter/SayHello",
                         .input = &hello_request__descriptor,
                         .on_message = say_hello,
                         .on_cancel = say_hello_cancel};
  rv = grace_grpc_server_register(srv, &m);
  if (rv != 0)
    grace_log_fatal("failed to register: %s", grace_strerror(rv));
  snprintf(addr, sizeof(addr), ":%d", (int)port);
  rv = grace_grpc_server_listen(srv, addr);
  if (rv != 0)
    grace_log_fatal("failed to listen: listen tcp %s: %s", addr,
                    grace_strerror(rv));
  grace_log("server listening at [::]:%d", grace_grpc_server_port(srv, 0));
  rv = grace_grpc_server_start(srv);
  if (rv != 0)
    grace_log_fatal("failed to serve: %s", grace_strerror(rv));

  grace_ctx_wait(stop, -1);
  grace_log("Shutdown Server...");
  if (shutdown_timeout > 0) {
    rv = grace_ctx_with_timeout(grace_ctx_background(), shutdown_timeout,
                                &ctx);
    if (rv != 0)
      grace_log_fatal("Shutdown: %s", grace_strerror(rv));
  }
  rv = grace_grpc_server_graceful_stop(srv, ctx, &cut);
  int code = 0;
  if (rv != 0) {
    grace_log("gRPC server GracefulStop: %s; stopped, %d call(s) cut",
              grace_strerror(rv), cut);
    code = 1;
  } else {
    grace_log("gRPC server graceful shutdown completed");
  }
  grace_ctx_unref(ctx);
  grace_grpc_server_free(srv);
  return code;
}
