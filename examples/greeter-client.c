/*
 * greeter-client: the seed's gRPC client, with grace.
 *
 *   greeter-client [-addr localhost:50051] [-name world] [-duration 10s]
 *                  [-timeout 60s] [-tls] [-tls-ca FILE]
 *                  [-tls-server-name NAME]
 *
 * With -tls (or -tls-ca) it calls over TLS, verifying the server against
 * -tls-ca (else the system's roots) and -tls-server-name (else the host of
 * -addr).
 *
 * Calls Greeter.SayHello(HelloRequest{name, duration}) on -addr over h2c
 * with a -timeout deadline and logs "Greeting: Hello world".  On failure it
 * logs "could not greet: rpc error: code = ... desc = ..." and exits 1, as
 * the Go original's log.Fatalf does.
 *
 * The Go original, for comparison:
 *
 *   conn, err := grpc.NewClient(*addr, grpc.WithTransportCredentials(
 *       insecure.NewCredentials()))
 *   if err != nil {
 *       log.Fatalf("did not connect: %v", err)
 *   }
 *   defer conn.Close()
 *   c := pb.NewGreeterClient(conn)
 *   ctx, cancel := context.WithTimeout(context.Background(), time.Second*60)
 *   defer cancel()
 *   r, err := c.SayHello(ctx, &pb.HelloRequest{Name: *name, Duration: "10s"})
 *   if err != nil {
 *       log.Fatalf("could not greet: %v", err)
 *   }
 *   log.Printf("Greeting: %s", r.GetMessage())
 */
#include <stdlib.h>

#include <protobuf-c/protobuf-c.h>

#include "grace/context.h"
#include "grace/duration.h"
#include "grace/flags.h"
#include "grace/grpc_client.h"
#include "grace/log.h"
#include "helloworld.pb-c.h"

/* The seed's proto has no package, so the service is plain "Greeter". */
#define SAY_HELLO "/Greeter/SayHello"

int main(int argc, char **argv) {
  const char *addr = "localhost:50051";
  const char *name = "world";
  grace_duration duration = 10 * GRACE_SECOND;
  grace_duration timeout = 60 * GRACE_SECOND;
  char dur_text[GRACE_DURATION_STRLEN], err_text[4096];
  grace_grpc_status st = GRACE_GRPC_STATUS_INIT;
  ProtobufCMessage *reply = NULL;
  HelloRequest req;
  grace_grpc_channel *ch;
  grace_flags *flags;
  grace_ctx *ctx;
  grace_grpc_channel_options copts;
  bool tls = false;
  const char *tls_ca = NULL, *tls_server_name = NULL;
  int rv, status = 0;

  flags = grace_flags_new(argv[0]);
  if (flags == NULL)
    grace_log_fatal("flags: %s", grace_strerror(GRACE_ENOMEM));
  if (grace_flags_string(flags, "addr", &addr, "the address to connect to") !=
          0 ||
      grace_flags_string(flags, "name", &name, "Name to greet") != 0 ||
      grace_flags_duration(flags, "duration", &duration,
                           "how long the server takes to answer") != 0 ||
      grace_flags_duration(flags, "timeout", &timeout,
                           "the deadline of the call") != 0 ||
      grace_flags_bool(flags, "tls", &tls,
                       "call over TLS (the system's roots unless -tls-ca)") !=
          0 ||
      grace_flags_string(flags, "tls-ca", &tls_ca,
                         "PEM CA certificates the server's certificate must "
                         "chain to (implies -tls)") != 0 ||
      grace_flags_string(flags, "tls-server-name", &tls_server_name,
                         "the name the server's certificate must have "
                         "(default: the host of -addr)") != 0)
    grace_log_fatal("flags: cannot register the flags");
  grace_flags_parse_or_exit(flags, argc, argv);
  grace_flags_free(flags);

  /* grpc.NewClient: nothing is dialed until the call. */
  grace_grpc_channel_options_init(&copts);
  copts.tls = tls || tls_ca != NULL;
  copts.tls_ca_file = tls_ca;
  copts.tls_server_name = tls_server_name;
  rv = grace_grpc_channel_new(addr, &copts, &ch);
  if (rv != 0)
    grace_log_fatal("did not connect: %s", grace_strerror(rv));

  rv = grace_ctx_with_timeout(grace_ctx_background(), timeout, &ctx);
  if (rv != 0) {
    grace_grpc_channel_free(ch);
    grace_log_fatal("context: %s", grace_strerror(rv));
  }

  hello_request__init(&req);
  req.name = (char *)(uintptr_t)name;
  grace_duration_format(duration, dur_text, sizeof(dur_text));
  req.duration = dur_text;
  rv = grace_grpc_channel_unary_pb(ch, SAY_HELLO, &req.base,
                                   &hello_reply__descriptor, ctx, &reply, &st);
  if (rv < 0) {
    grace_log("could not greet: %s", grace_strerror(rv));
    status = 1;
  } else if (rv > 0) {
    grace_grpc_status_format(&st, err_text, sizeof(err_text));
    grace_log("could not greet: %s", err_text);
    status = 1;
  } else {
    grace_log("Greeting: %s", ((HelloReply *)(void *)reply)->message);
    protobuf_c_message_free_unpacked(reply, NULL);
  }
  grace_grpc_status_clear(&st);
  /* defer cancel(); defer conn.Close() */
  grace_ctx_cancel(ctx);
  grace_ctx_unref(ctx);
  grace_grpc_channel_free(ch);
  return status;
}
