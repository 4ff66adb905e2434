/*
 * grace-stream-server: ours in bench/grpc_stream.sh (not an example).
 * Raw-byte methods (no protobuf on either side, as the grpc-go peer in
 * bench/grpc/go-stream/server uses a raw-bytes codec):
 *
 *   /Bench/ServerStream  request "N SIZE" (ASCII): N messages of SIZE bytes
 *                        (a fixed pattern), then OK; sent on the loop
 *                        thread with backpressure: send until GRACE_EBUSY,
 *                        go on from grace_grpc_call_on_ready (as
 *                        tests/programs/grpc-stream-server.c's
 *                        /Echo/ServerStream)
 *   /Bench/Bidi          echoes each message at once, from the loop
 *                        thread; OK when the client half-closes
 *
 * Default grace_grpc_options (max_send_buffer 256 KiB), default loops (one
 * per core).  Flags: -port N.  SIGTERM/SIGINT: graceful stop with a 5 s
 * deadline, exit 0 if it completed, 1 if calls had to be cut.
 *
 * Built by bench/grpc/grace-stream/build.sh against a Release libgrace.a.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "grace/flags.h"
#include "grace/grpc.h"
#include "grace/log.h"
#include "grace/signal.h"

typedef struct pump {
  long next, count;
  size_t size;
  uint8_t buf[];
} pump;

static void pump_free(grace_grpc_call *call) {
  free(grace_grpc_call_data(call));
  grace_grpc_call_set_data(call, NULL);
}

static void pump_run(grace_grpc_call *call, void *data) {
  pump *p = data;
  while (p->next < p->count) {
    int rv = grace_grpc_call_send_bytes(call, p->buf, p->size);
    if (rv == GRACE_EBUSY) {
      rv = grace_grpc_call_on_ready(call, pump_run, p);
      if (rv == 0)
        return;
    }
    if (rv == GRACE_ECLOSED)
      return; /* cancelled: on_cancel frees and finishes */
    if (rv != 0) {
      pump_free(call);
      grace_grpc_call_finish(call, GRACE_GRPC_INTERNAL, grace_strerror(rv));
      return;
    }
    p->next++;
  }
  pump_free(call);
  grace_grpc_call_finish(call, GRACE_GRPC_OK, NULL);
}

static void server_stream(grace_grpc_call *call, const void *msg,
                          void *data) {
  const grace_grpc_bytes *b = msg;
  char req[64];
  long count = 0, size = 0;
  (void)data;
  if (grace_grpc_call_data(call) != NULL) {
    grace_grpc_call_finish(call, GRACE_GRPC_INVALID_ARGUMENT, "one request");
    return;
  }
  size_t n = b->len < sizeof(req) ? b->len : sizeof(req) - 1;
  memcpy(req, b->data, n);
  req[n] = '\0';
  if (sscanf(req, "%ld %ld", &count, &size) != 2 || count < 0 || size < 0 ||
      size > 4 * 1024 * 1024 - 16) {
    grace_grpc_call_finish(call, GRACE_GRPC_INVALID_ARGUMENT, "want \"N SIZE\"");
    return;
  }
  pump *p = malloc(sizeof(*p) + (size_t)size);
  if (p == NULL) {
    grace_grpc_call_finish(call, GRACE_GRPC_RESOURCE_EXHAUSTED, NULL);
    return;
  }
  p->next = 0;
  p->count = count;
  p->size = (size_t)size;
  for (long i = 0; i < size; i++)
    p->buf[i] = (uint8_t)('a' + i % 26);
  grace_grpc_call_set_data(call, p);
  pump_run(call, p);
}

static void server_stream_cancel(grace_grpc_call *call, void *data) {
  (void)data;
  pump_free(call);
  grace_grpc_call_finish(call, GRACE_GRPC_CANCELLED, NULL);
}

static void bidi(grace_grpc_call *call, const void *msg, void *data) {
  const grace_grpc_bytes *b = msg;
  (void)data;
  /* Ping-pong: one message in flight, the queue is never full. */
  int rv = grace_grpc_call_send_bytes(call, b->data, b->len);
  if (rv != 0 && rv != GRACE_ECLOSED)
    grace_log("Bidi send: %s", grace_strerror(rv));
}

static void bidi_end(grace_grpc_call *call, void *data) {
  (void)data;
  grace_grpc_call_finish(call, GRACE_GRPC_OK, NULL);
}

static void cancel_ok(grace_grpc_call *call, void *data) {
  (void)data;
  grace_grpc_call_finish(call, GRACE_GRPC_CANCELLED, NULL);
}

int main(int argc, char **argv) {
  int64_t port = 50051;
  grace_grpc_server *srv;
  grace_ctx *ctx = NULL;
  char addr[32];
  int cut = 0;

  grace_flags *flags = grace_flags_new(argv[0]);
  grace_flags_int(flags, "port", &port, "port");
  grace_flags_parse_or_exit(flags, argc, argv);
  grace_flags_free(flags);

  grace_ctx *stop = grace_signal_context();
  if (grace_grpc_server_new(NULL, &srv) != 0)
    return 1;
  const grace_grpc_method methods[] = {
      {.path = "/Bench/ServerStream",
       .on_message = server_stream,
       .on_cancel = server_stream_cancel},
      {.path = "/Bench/Bidi",
       .on_message = bidi,
       .on_half_close = bidi_end,
       .on_cancel = cancel_ok},
  };
  for (size_t i = 0; i < sizeof(methods) / sizeof(methods[0]); i++)
    if (grace_grpc_server_register(srv, &methods[i]) != 0)
      return 1;
  snprintf(addr, sizeof(addr), "127.0.0.1:%d", (int)port);
  if (grace_grpc_server_listen(srv, addr) != 0 ||
      grace_grpc_server_start(srv) != 0)
    return 1;
  grace_log("listening on %d", grace_grpc_server_port(srv, 0));
  grace_ctx_wait(stop, -1);
  grace_ctx_with_timeout(grace_ctx_background(), 5 * GRACE_SECOND, &ctx);
  int rv = grace_grpc_server_graceful_stop(srv, ctx, &cut);
  if (rv != 0)
    grace_log("stopped: %s, %d call(s) cut", grace_strerror(rv), cut);
  else
    grace_log("gRPC server graceful shutdown completed");
  grace_ctx_unref(ctx);
  grace_grpc_server_free(srv);
  return rv != 0;
}
