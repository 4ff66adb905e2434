/*
 * grpc-interop-server: grpc.testing.TestService (proto/grpc/testing/) as
 * the gRPC interop test descriptions specify the server side
 * (doc/interop-test-descriptions.md of grpc/grpc, "Server"), for the
 * interop cases run by tests/integration/test_grpc_interop.py.
 *
 *   EmptyCall            an empty reply
 *   UnaryCall,           a payload of response_size zero bytes, or the
 *   CacheableUnaryCall   response_status asked for
 *   StreamingOutputCall  one reply per response_parameters entry (size,
 *                        after interval_us), then OK or response_status
 *   StreamingInputCall   the sum of the payload sizes, once the client is
 *                        done
 *   FullDuplexCall       for each request, its response_parameters as
 *                        above; ends when the client is done (or with a
 *                        request's response_status)
 *   HalfDuplexCall       the same, answered once the client is done
 *
 * UnimplementedCall and grpc.testing.UnimplementedService are not
 * registered: the server answers UNIMPLEMENTED for them, as it must.
 * UnaryCall and FullDuplexCall echo the request metadata
 * x-grpc-test-echo-initial in the response headers and
 * x-grpc-test-echo-trailing-bin in the trailers (custom_metadata).
 *
 * Replies respect backpressure: on GRACE_EBUSY a stream goes on from
 * grace_grpc_call_on_ready, so a client that reads slowly gets every
 * message, in order.  The first SIGINT/SIGTERM stops gracefully.
 *
 * Flags: -port N (default 10000, as the interop servers), -shutdown-timeout D.
 */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "empty.pb-c.h"
#include "grace/flags.h"
#include "grace/grpc.h"
#include "grace/log.h"
#include "grace/signal.h"
#include "messages.pb-c.h"

#define SVC "/grpc.testing.TestService/"

/* ---- helpers ---------------------------------------------------------- */

/* The custom_metadata case: echo the two request keys back. */
static int echo_metadata(grace_grpc_call *call) {
  const char *v = grace_grpc_call_metadata(call, "x-grpc-test-echo-initial");
  int rv = 0;
  if (v != NULL)
    rv = grace_grpc_call_add_header(call, "x-grpc-test-echo-initial", v);
  v = grace_grpc_call_metadata(call, "x-grpc-test-echo-trailing-bin");
  if (rv == 0 && v != NULL)
    rv = grace_grpc_call_add_trailer(call, "x-grpc-test-echo-trailing-bin", v);
  return rv;
}

/* A payload of |size| zero bytes (type COMPRESSABLE); |*body| to free. */
static int make_payload(Grpc__Testing__Payload *p, int32_t size,
                        uint8_t **body) {
  grpc__testing__payload__init(p);
  p->type = GRPC__TESTING__PAYLOAD_TYPE__COMPRESSABLE;
  *body = calloc(1, size > 0 ? (size_t)size : 1);
  if (*body == NULL)
    return GRACE_ENOMEM;
  p->body.data = *body;
  p->body.len = (size_t)size;
  return 0;
}

/* Finishes with the status a request asked for; 1 if it asked for one. */
static int finish_echo_status(grace_grpc_call *call,
                              const Grpc__Testing__EchoStatus *st) {
  if (st == NULL || st->code == 0)
    return 0;
  grace_grpc_call_finish(call, (grace_grpc_code)st->code, st->message);
  return 1;
}

/* ---- unary ------------------------------------------------------------ */

static void empty_call(grace_grpc_call *call, const void *msg, void *data) {
  Grpc__Testing__Empty out;
  (void)msg;
  (void)data;
  grpc__testing__empty__init(&out);
  int rv = grace_grpc_call_send(call, &out.base);
  grace_grpc_call_finish(call, rv == 0 ? GRACE_GRPC_OK : GRACE_GRPC_INTERNAL,
                         rv == 0 ? NULL : grace_strerror(rv));
}

static void unary_call(grace_grpc_call *call, const void *msg, void *data) {
  const Grpc__Testing__SimpleRequest *in = msg;
  Grpc__Testing__SimpleResponse out;
  Grpc__Testing__Payload payload;
  uint8_t *body = NULL;
  (void)data;

  if (echo_metadata(call) != 0) {
    grace_grpc_call_finish(call, GRACE_GRPC_INTERNAL, "metadata");
    return;
  }
  /* This server never receives a compressed message (it has no
   * decompressor): a client expecting one is told so, as the spec says. */
  if (in->expect_compressed != NULL && in->expect_compressed->value) {
    grace_grpc_call_finish(call, GRACE_GRPC_INVALID_ARGUMENT,
                           "Expected compressed request, got uncompressed");
    return;
  }
  if (finish_echo_status(call, in->response_status))
    return;
  if (in->response_size < 0) {
    grace_grpc_call_finish(call, GRACE_GRPC_INVALID_ARGUMENT,
                           "negative response_size");
    return;
  }
  grpc__testing__simple_response__init(&out);
  if (make_payload(&payload, in->response_size, &body) != 0) {
    grace_grpc_call_finish(call, GRACE_GRPC_RESOURCE_EXHAUSTED, NULL);
    return;
  }
  out.payload = &payload;
  int rv = grace_grpc_call_send(call, &out.base);
  free(body);
  grace_grpc_call_finish(call, rv == 0 ? GRACE_GRPC_OK : GRACE_GRPC_INTERNAL,
                         rv == 0 ? NULL : grace_strerror(rv));
}

/* ---- StreamingInputCall ------------------------------------------------- */

typedef struct in_sum {
  int64_t bytes;
} in_sum;

static void input_message(grace_grpc_call *call, const void *msg, void *data) {
  const Grpc__Testing__StreamingInputCallRequest *in = msg;
  in_sum *s = grace_grpc_call_data(call);
  (void)data;
  if (s == NULL) {
    if ((s = calloc(1, sizeof(*s))) == NULL) {
      grace_grpc_call_finish(call, GRACE_GRPC_RESOURCE_EXHAUSTED, NULL);
      return;
    }
    grace_grpc_call_set_data(call, s);
  }
  if (in->payload != NULL)
    s->bytes += (int64_t)in->payload->body.len;
}

static void input_done(grace_grpc_call *call, void *data) {
  in_sum *s = grace_grpc_call_data(call);
  Grpc__Testing__StreamingInputCallResponse out;
  (void)data;
  grpc__testing__streaming_input_call_response__init(&out);
  out.aggregated_payload_size =
      s == NULL ? 0 : (int32_t)(s->bytes > INT32_MAX ? INT32_MAX : s->bytes);
  free(s);
  grace_grpc_call_set_data(call, NULL);
  int rv = grace_grpc_call_send(call, &out.base);
  grace_grpc_call_finish(call, rv == 0 ? GRACE_GRPC_OK : GRACE_GRPC_INTERNAL,
                         rv == 0 ? NULL : grace_strerror(rv));
}

static void input_cancel(grace_grpc_call *call, void *data) {
  (void)data;
  free(grace_grpc_call_data(call));
  grace_grpc_call_set_data(call, NULL);
  grace_grpc_call_finish(call, GRACE_GRPC_CANCELLED, NULL);
}

/* ---- output streams: StreamingOutputCall, Full- and HalfDuplexCall --------
 */

typedef struct out_item {
  int32_t size;
  int32_t interval_us;
} out_item;

typedef enum { OUT_SERVER, OUT_FULL, OUT_HALF } out_kind;

typedef struct ostream {
  grace_grpc_call *call;
  out_kind kind;
  out_item *items;
  size_t n, cap, next;
  uv_timer_t timer;
  uint8_t blocked;    /* waiting for the timer or for room */
  uint8_t waited;     /* items[next]'s interval has passed */
  uint8_t input_done; /* the client finished sending */
  uint8_t echoed;     /* metadata echoed */
  uint8_t has_status; /* a request asked for a status */
  grace_grpc_code code;
  char *message;
} ostream;

static void ostream_closed(uv_handle_t *h) {
  ostream *os = h->data;
  free(os->items);
  free(os->message);
  free(os);
}

/* Finishes the call and frees the stream (once its timer is closed). */
static void ostream_end(ostream *os, grace_grpc_code code,
                        const char *message) {
  grace_grpc_call_set_data(os->call, NULL);
  grace_grpc_call_finish(os->call, code, message);
  uv_timer_stop(&os->timer);
  uv_close((uv_handle_t *)&os->timer, ostream_closed);
}

static void pump(ostream *os);

static void on_room(grace_grpc_call *call, void *data) {
  ostream *os = data;
  (void)call;
  os->blocked = 0;
  pump(os);
}

static void on_interval(uv_timer_t *t) {
  ostream *os = t->data;
  os->blocked = 0;
  os->waited = 1;
  pump(os);
}

/* Sends what is due, as fast as the client takes it. */
static void pump(ostream *os) {
  grace_grpc_call *call = os->call;
  if (os->blocked)
    return;
  while (os->next < os->n) {
    out_item *it = &os->items[os->next];
    if (it->interval_us > 0 && !os->waited) {
      os->blocked = 1;
      uv_timer_start(&os->timer, on_interval,
                     ((uint64_t)it->interval_us + 999) / 1000, 0);
      return;
    }
    Grpc__Testing__StreamingOutputCallResponse out;
    Grpc__Testing__Payload payload;
    uint8_t *body;
    if (make_payload(&payload, it->size, &body) != 0) {
      ostream_end(os, GRACE_GRPC_RESOURCE_EXHAUSTED, NULL);
      return;
    }
    grpc__testing__streaming_output_call_response__init(&out);
    out.payload = &payload;
    int rv = grace_grpc_call_send(call, &out.base);
    free(body);
    if (rv == GRACE_EBUSY) {
      os->blocked = 1;
      if (grace_grpc_call_on_ready(call, on_room, os) == 0)
        return;
      os->blocked = 0;
      return; /* the call ended: on_cancel finishes it */
    }
    if (rv == GRACE_ECLOSED)
      return; /* cancelled: on_cancel finishes it */
    if (rv != 0) {
      ostream_end(os, GRACE_GRPC_INTERNAL, grace_strerror(rv));
      return;
    }
    os->waited = 0;
    os->next++;
  }
  if (os->has_status) {
    ostream_end(os, os->code, os->message);
    return;
  }
  if (os->kind == OUT_SERVER || os->input_done)
    ostream_end(os, GRACE_GRPC_OK, NULL);
}

static ostream *ostream_of(grace_grpc_call *call, out_kind kind) {
  ostream *os = grace_grpc_call_data(call);
  if (os != NULL)
    return os;
  os = calloc(1, sizeof(*os));
  if (os == NULL)
    return NULL;
  if (uv_timer_init(grace_grpc_call_loop(call), &os->timer) != 0) {
    free(os);
    return NULL;
  }
  os->call = call;
  os->kind = kind;
  os->timer.data = os;
  grace_grpc_call_set_data(call, os);
  return os;
}

/* Queues one request's response_parameters and status. */
static int ostream_take(ostream *os,
                        const Grpc__Testing__StreamingOutputCallRequest *in) {
  if (os->n + in->n_response_parameters > os->cap) {
    size_t cap = os->cap ? os->cap : 16;
    while (cap < os->n + in->n_response_parameters)
      cap *= 2;
    out_item *items = realloc(os->items, cap * sizeof(*items));
    if (items == NULL)
      return GRACE_ENOMEM;
    os->items = items;
    os->cap = cap;
  }
  for (size_t i = 0; i < in->n_response_parameters; i++) {
    const Grpc__Testing__ResponseParameters *rp = in->response_parameters[i];
    if (rp->size < 0 || rp->interval_us < 0)
      return GRACE_EINVAL;
    os->items[os->n].size = rp->size;
    os->items[os->n].interval_us = rp->interval_us;
    os->n++;
  }
  if (in->response_status != NULL && in->response_status->code != 0 &&
      !os->has_status) {
    os->has_status = 1;
    os->code = (grace_grpc_code)in->response_status->code;
    if (in->response_status->message != NULL &&
        (os->message = strdup(in->response_status->message)) == NULL)
      return GRACE_ENOMEM;
  }
  return 0;
}

static void output_message(grace_grpc_call *call, const void *msg,
                           out_kind kind) {
  ostream *os = ostream_of(call, kind);
  if (os == NULL) {
    grace_grpc_call_finish(call, GRACE_GRPC_RESOURCE_EXHAUSTED, NULL);
    return;
  }
  if (kind == OUT_FULL && !os->echoed) {
    os->echoed = 1;
    if (echo_metadata(call) != 0) {
      ostream_end(os, GRACE_GRPC_INTERNAL, "metadata");
      return;
    }
  }
  int rv = ostream_take(os, msg);
  if (rv != 0) {
    ostream_end(os,
                rv == GRACE_EINVAL ? GRACE_GRPC_INVALID_ARGUMENT
                                   : GRACE_GRPC_RESOURCE_EXHAUSTED,
                rv == GRACE_EINVAL ? "negative size or interval" : NULL);
    return;
  }
  if (kind != OUT_HALF)
    pump(os);
}

static void streaming_output(grace_grpc_call *call, const void *msg,
                             void *data) {
  (void)data;
  output_message(call, msg, OUT_SERVER);
}

static void full_duplex(grace_grpc_call *call, const void *msg, void *data) {
  (void)data;
  output_message(call, msg, OUT_FULL);
}

static void half_duplex(grace_grpc_call *call, const void *msg, void *data) {
  (void)data;
  output_message(call, msg, OUT_HALF);
}

static void duplex_done(grace_grpc_call *call, void *data) {
  ostream *os = grace_grpc_call_data(call);
  (void)data;
  if (os == NULL) {
    /* empty_stream: no request, no reply, OK (with any echo asked for). */
    if (echo_metadata(call) != 0) {
      grace_grpc_call_finish(call, GRACE_GRPC_INTERNAL, "metadata");
      return;
    }
    grace_grpc_call_finish(call, GRACE_GRPC_OK, NULL);
    return;
  }
  os->input_done = 1;
  pump(os);
}

static void output_cancel(grace_grpc_call *call, void *data) {
  ostream *os = grace_grpc_call_data(call);
  (void)data;
  if (os != NULL)
    ostream_end(os, GRACE_GRPC_CANCELLED, NULL);
  else
    grace_grpc_call_finish(call, GRACE_GRPC_CANCELLED, NULL);
}

static void plain_cancel(grace_grpc_call *call, void *data) {
  (void)call;
  (void)data; /* unary handlers finish at once: nothing holds the call */
}

/* ---- main ------------------------------------------------------------- */

int main(int argc, char **argv) {
  int64_t port = 10000;
  grace_duration shutdown_timeout = 0;
  grace_grpc_server *srv;
  grace_ctx *ctx = NULL;
  char addr[32];
  int cut = 0;

  grace_flags *flags = grace_flags_new(argv[0]);
  grace_flags_int(flags, "port", &port, "port to listen on");
  grace_flags_duration(flags, "shutdown-timeout", &shutdown_timeout,
                       "graceful stop deadline, then a hard stop");
  grace_flags_parse_or_exit(flags, argc, argv);
  grace_flags_free(flags);

  grace_ctx *stop = grace_signal_context();
  if (grace_grpc_server_new(NULL, &srv) != 0)
    return 1;
  const grace_grpc_method methods[] = {
      {.path = SVC "EmptyCall",
       .input = &grpc__testing__empty__descriptor,
       .on_message = empty_call,
       .on_cancel = plain_cancel},
      {.path = SVC "UnaryCall",
       .input = &grpc__testing__simple_request__descriptor,
       .on_message = unary_call,
       .on_cancel = plain_cancel},
      {.path = SVC "CacheableUnaryCall",
       .input = &grpc__testing__simple_request__descriptor,
       .on_message = unary_call,
       .on_cancel = plain_cancel},
      {.path = SVC "StreamingOutputCall",
       .input = &grpc__testing__streaming_output_call_request__descriptor,
       .on_message = streaming_output,
       .on_cancel = output_cancel},
      {.path = SVC "StreamingInputCall",
       .input = &grpc__testing__streaming_input_call_request__descriptor,
       .on_message = input_message,
       .on_half_close = input_done,
       .on_cancel = input_cancel},
      {.path = SVC "FullDuplexCall",
       .input = &grpc__testing__streaming_output_call_request__descriptor,
       .on_message = full_duplex,
       .on_half_close = duplex_done,
       .on_cancel = output_cancel},
      {.path = SVC "HalfDuplexCall",
       .input = &grpc__testing__streaming_output_call_request__descriptor,
       .on_message = half_duplex,
       .on_half_close = duplex_done,
       .on_cancel = output_cancel},
  };
  for (size_t i = 0; i < sizeof(methods) / sizeof(methods[0]); i++)
    if (grace_grpc_server_register(srv, &methods[i]) != 0)
      return 1;
  snprintf(addr, sizeof(addr), "127.0.0.1:%d", (int)port);
  if (grace_grpc_server_listen(srv, addr) != 0 ||
      grace_grpc_server_start(srv) != 0) {
    grace_log("cannot listen on %s", addr);
    grace_grpc_server_free(srv);
    return 1;
  }
  grace_log("listening on %d", grace_grpc_server_port(srv, 0));
  grace_ctx_wait(stop, -1);
  grace_log("Shutdown Server...");
  if (shutdown_timeout > 0 &&
      grace_ctx_with_timeout(grace_ctx_background(), shutdown_timeout, &ctx) !=
          0)
    ctx = NULL;
  int rv = grace_grpc_server_graceful_stop(srv, ctx, &cut);
  if (rv != 0)
    grace_log("stopped: %s, %d call(s) cut", grace_strerror(rv), cut);
  else
    grace_log("gRPC server graceful shutdown completed");
  grace_ctx_unref(ctx);
  grace_grpc_server_free(srv);
  return rv != 0;
}
