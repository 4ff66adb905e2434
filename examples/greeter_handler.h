/*
 * The seed's Greeter.SayHello handler, shared by greeter-server and
 * grace-demo-server (header-only: static functions, included once per
 * program).
 *
 * SayHello(HelloRequest{name, duration}) logs "Received: <name>", sleeps
 * |duration| on a timer of the call's loop (other calls go on meanwhile)
 * and replies "Hello <name>".  A cancelled call (client gone, deadline,
 * hard stop) stops its timer and finishes at once.  Register it with:
 *
 *   grace_grpc_method m = {.path = "/Greeter/SayHello",
 *                          .input = &hello_request__descriptor,
 *                          .on_message = say_hello,
 *                          .on_cancel = say_hello_cancel};
 */
#ifndef GRACE_EXAMPLES_GREETER_HANDLER_H
#define GRACE_EXAMPLES_GREETER_HANDLER_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "grace/duration.h"
#include "grace/grpc.h"
#include "grace/log.h"
#include "helloworld.pb-c.h"

/* A SayHello waiting for its timer. */
typedef struct greet_wait {
  uv_timer_t timer;
  grace_grpc_call *call;
  char *name;
} greet_wait;

static void greet_closed(uv_handle_t *handle) {
  greet_wait *h = handle->data;
  free(h->name);
  free(h);
}

static void greet_reply(grace_grpc_call *call, const char *name) {
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

static void greet_wake(uv_timer_t *timer) {
  greet_wait *h = timer->data;
  /* Answered from here on: the send in greet_reply can end the stream (no
   * memory for its frames), and the cancel that runs then must neither
   * close this timer nor finish the call a second time. */
  grace_grpc_call_set_data(h->call, NULL);
  greet_reply(h->call, h->name);
  uv_close((uv_handle_t *)&h->timer, greet_closed);
}

static void say_hello_cancel(grace_grpc_call *call, void *data) {
  greet_wait *h = grace_grpc_call_data(call);
  (void)data;
  if (h == NULL)
    return; /* answered already */
  uv_timer_stop(&h->timer);
  uv_close((uv_handle_t *)&h->timer, greet_closed);
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
    greet_reply(call, name);
    return;
  }
  greet_wait *h = calloc(1, sizeof(*h));
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
  uv_timer_start(&h->timer, greet_wake, ms, 0);
}

#endif /* GRACE_EXAMPLES_GREETER_HANDLER_H */
