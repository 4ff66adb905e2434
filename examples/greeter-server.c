/*
 * greeter-server: the seed's gRPC Greeter server, in C with grace.
 *
 * SayHello(HelloRequest{name, duration}) logs "Received: <name>", sleeps
 * |duration| (on a timer: other calls go on meanwhile) and replies
 * "Hello <name>".  The first SIGINT/SIGTERM stops the server gracefully
 * (grpc-go's GracefulStop: health NOT_SERVING, listeners closed, two-phase
 * GOAWAY, wait for every call); with -shutdown-timeout the stop escalates
 * to a hard stop at that deadline.  A second signal exits 1 at once.
 * With -tls-cert and -tls-key it serves gRPC over TLS only.
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
#include "grace/tls.h"
#include "helloworld.pb-c.h"

#include "greeter_handler.h"
#include "tls_flags.h"

int main(int argc, char **argv) {
  int64_t port = 50051, loops = 0;
  grace_duration shutdown_timeout = 0;
  bool h2_only = false;
  const char *tls_cert = NULL, *tls_key = NULL;
  grace_tls *tls = NULL;
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
  grace_flags_bool(flags, "h2-only", &h2_only,
                   "serve HTTP/2 only (as grpc-go), no HTTP/1.1 fallback");
  grace_flags_int(flags, "loops", &loops,
                  "event-loop threads (0: one per core)");
  grace_flags_string(flags, "tls-cert", &tls_cert,
                     "PEM certificate chain: serve gRPC over TLS (with "
                     "-tls-key)");
  grace_flags_string(flags, "tls-key", &tls_key,
                     "PEM private key of -tls-cert");
  grace_flags_parse_or_exit(flags, argc, argv);
  grace_flags_free(flags);
  if (port < 0 || port > 65535 || loops < 0 || loops > 256) {
    fprintf(stderr, "invalid -port or -loops\n");
    return 2;
  }
  tls = example_tls(tls_cert, tls_key, 10 * GRACE_SECOND);

  grace_ctx *stop = grace_signal_context();

  grace_grpc_options_init(&opts);
  opts.http.loops = (unsigned)loops;
  opts.http.h2_only = h2_only;
  opts.http.tls = tls;
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
  grace_tls_free(tls);
  return code;
}
