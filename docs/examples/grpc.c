/*
 * The gRPC guide's program (docs/guide/grpc.md): the seed's Greeter
 * (examples/proto/helloworld.proto) answering at once, and grpc-go's
 * GracefulStop with a deadline.
 *
 *   grpc [addr]       addr defaults to ":50051"; port 0 picks a free one
 *   greeter-client -addr localhost:50051 -duration 0s   -> Hello world
 *
 * The first SIGINT or SIGTERM stops gracefully within 10 s, then hard;
 * exit status 0 when no call was cut.
 */
#include <stdio.h>

#include "grace/context.h"
#include "grace/duration.h"
#include "grace/error.h"
#include "grace/grpc.h"
#include "grace/log.h"
#include "grace/signal.h"
#include "helloworld.pb-c.h" /* protoc-c --c_out: HelloRequest, HelloReply */

/* SayHello: |msg| is the HelloRequest, decoded already. */
static void say_hello(grace_grpc_call *call, const void *msg, void *data) {
  (void)data;
  const HelloRequest *in = msg;
  char text[128];
  snprintf(text, sizeof(text), "Hello %s", in->name ? in->name : "");
  HelloReply out;
  hello_reply__init(&out);
  out.message = text;
  int rv = grace_grpc_call_send(call, &out.base); /* packed (copied) now */
  /* Exactly once per call, whatever happened. */
  grace_grpc_call_finish(call, rv == 0 ? GRACE_GRPC_OK : GRACE_GRPC_INTERNAL,
                         rv == 0 ? NULL : grace_strerror(rv));
}

int main(int argc, char **argv) {
  const char *addr = argc > 1 ? argv[1] : ":50051";
  grace_ctx *stop = grace_signal_context();

  grace_grpc_server *srv;
  int rv = grace_grpc_server_new(NULL, &srv); /* health service included */
  if (rv != 0)
    grace_log_fatal("gRPC server: %s", grace_strerror(rv));
  grace_grpc_method m = {.path = "/Greeter/SayHello",
                         .input = &hello_request__descriptor,
                         .on_message = say_hello};
  if ((rv = grace_grpc_server_register(srv, &m)) != 0 ||
      (rv = grace_grpc_server_listen(srv, addr)) != 0 ||
      (rv = grace_grpc_server_start(srv)) != 0)
    grace_log_fatal("serve %s: %s", addr, grace_strerror(rv));
  grace_log("listening on port %d", grace_grpc_server_port(srv, 0));

  grace_ctx_wait(stop, -1);
  grace_log("Shutdown Server...");
  grace_ctx *deadline;
  rv = grace_ctx_with_timeout(grace_ctx_background(), 10 * GRACE_SECOND,
                              &deadline);
  if (rv != 0)
    grace_log_fatal("Shutdown: %s", grace_strerror(rv));
  int cut = 0;
  rv = grace_grpc_server_graceful_stop(srv, deadline, &cut);
  if (rv == 0)
    grace_log("gRPC server graceful shutdown completed");
  else
    grace_log("gRPC server GracefulStop: %s; %d call(s) cut",
              grace_strerror(rv), cut);
  grace_ctx_unref(deadline);
  grace_grpc_server_free(srv);
  return rv == 0 ? 0 : 1;
}
