/*
 * A gRPC server for the streaming tests (not an example): raw-byte methods
 * of every kind, answered from the loop thread or from another thread.
 *
 *   /Echo/Unary         replies with the request
 *   /Echo/ServerStream  request "N" (ASCII digits): N replies "0".."N-1",
 *                       sent as fast as the client reads them (on the
 *                       loop thread: send until GRACE_EBUSY, go on from
 *                       grace_grpc_call_on_ready)
 *   /Echo/ThreadStream  the same from a thread of its own, with
 *                       grace_grpc_call_send_bytes_wait
 *   /Echo/WaitTimeout   request "N": a thread sends "0", "1"... with
 *                       send_bytes_wait and a 200 ms timeout until one
 *                       times out, then ends with DEADLINE_EXCEEDED and
 *                       "sent N" (what the client must have received)
 *   /Echo/ClientStream  replies, once the client is done, with the count
 *                       of messages and their total length, "count/bytes"
 *   /Echo/Bidi          echoes each message at once, from a worker thread;
 *                       ends OK when the client is done
 *   /Echo/Forever       never answers until cancelled or cut by a stop
 *   /Echo/UntilStop     a long-lived stream that ends by itself with "bye"
 *                       and OK the moment a graceful stop begins (it
 *                       watches grace_grpc_server_stopping_ctx)
 *
 * Flags: -port N, -shutdown-timeout D, -watch-end-pause D (tests only:
 * a graceful stop waits D before it finishes each health Watch call it
 * took off its list, so a test can reset a Watch in that window).
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <uv.h>

#include "grace/flags.h"
#include "grace/grpc.h"
#include "grace/log.h"
#include "grace/signal.h"

static void unary(grace_grpc_call *call, const void *msg, void *data) {
  const grace_grpc_bytes *b = msg;
  (void)data;
  int rv = grace_grpc_call_send_bytes(call, b->data, b->len);
  grace_grpc_call_finish(call, rv == 0 ? GRACE_GRPC_OK : GRACE_GRPC_INTERNAL,
                         rv == 0 ? NULL : grace_strerror(rv));
}

/* A server stream in progress: the next message and the count. */
typedef struct counter {
  long next, count;
  pthread_t thread;
} counter;

static long parse_count(const grace_grpc_bytes *b) {
  char num[32];
  size_t n = b->len < sizeof(num) ? b->len : sizeof(num) - 1;
  memcpy(num, b->data, n);
  num[n] = '\0';
  return strtol(num, NULL, 10);
}

/* Sends what the queue takes; on GRACE_EBUSY, goes on when it has room. */
static void counter_pump(grace_grpc_call *call, void *data) {
  counter *c = data;
  char num[32];
  while (c->next < c->count) {
    int len = snprintf(num, sizeof(num), "%ld", c->next);
    int rv = grace_grpc_call_send_bytes(call, num, (size_t)len);
    if (rv == GRACE_EBUSY) {
      rv = grace_grpc_call_on_ready(call, counter_pump, c);
      if (rv == 0)
        return;
    }
    if (rv == GRACE_ECLOSED)
      return; /* cancelled: on_cancel finishes */
    if (rv != 0) {
      grace_grpc_call_set_data(call, NULL);
      free(c);
      grace_grpc_call_finish(call, GRACE_GRPC_INTERNAL, grace_strerror(rv));
      return;
    }
    c->next++;
  }
  grace_grpc_call_set_data(call, NULL);
  free(c);
  grace_grpc_call_finish(call, GRACE_GRPC_OK, NULL);
}

static void server_stream(grace_grpc_call *call, const void *msg, void *data) {
  (void)data;
  counter *c = calloc(1, sizeof(*c));
  if (c == NULL) {
    grace_grpc_call_finish(call, GRACE_GRPC_RESOURCE_EXHAUSTED, NULL);
    return;
  }
  c->count = parse_count(msg);
  grace_grpc_call_set_data(call, c);
  counter_pump(call, c);
}

static void server_stream_cancel(grace_grpc_call *call, void *data) {
  (void)data;
  free(grace_grpc_call_data(call));
  grace_grpc_call_set_data(call, NULL);
  grace_grpc_call_finish(call, GRACE_GRPC_CANCELLED, NULL);
}

/* /Echo/ThreadStream: a thread sends, blocking while the queue is full,
 * and finishes; a cancel wakes it (GRACE_ECLOSED) and the thread, not
 * on_cancel, finishes the call (a call is never finished while another
 * thread may still use it). */
static void *thread_stream_run(void *arg) {
  grace_grpc_call *call = arg;
  counter *c = grace_grpc_call_data(call);
  char num[32];
  int rv = 0;
  for (; c->next < c->count; c->next++) {
    int len = snprintf(num, sizeof(num), "%ld", c->next);
    rv = grace_grpc_call_send_bytes_wait(call, num, (size_t)len, -1);
    if (rv != 0)
      break;
  }
  free(c);
  if (rv == 0)
    grace_grpc_call_finish(call, GRACE_GRPC_OK, NULL);
  else if (rv == GRACE_ECLOSED)
    grace_grpc_call_finish(call, GRACE_GRPC_CANCELLED, NULL);
  else
    grace_grpc_call_finish(call, GRACE_GRPC_INTERNAL, grace_strerror(rv));
  return NULL;
}

/* /Echo/WaitTimeout: sends until a send times out, and says so.  Its
 * method data points here (any non-NULL data picks this mode). */
static int wait_timeout_mode;

static void *wait_timeout_run(void *arg) {
  grace_grpc_call *call = arg;
  char num[32];
  long sent = 0;
  int rv;
  for (;; sent++) {
    int len = snprintf(num, sizeof(num), "%ld", sent);
    rv = grace_grpc_call_send_bytes_wait(call, num, (size_t)len,
                                         200 * GRACE_MILLISECOND);
    if (rv != 0)
      break;
  }
  free(grace_grpc_call_data(call));
  if (rv == GRACE_ETIMEDOUT) {
    char msg[64];
    snprintf(msg, sizeof(msg), "sent %ld", sent);
    grace_grpc_call_finish(call, GRACE_GRPC_DEADLINE_EXCEEDED, msg);
  } else {
    grace_grpc_call_finish(call, GRACE_GRPC_CANCELLED, grace_strerror(rv));
  }
  return NULL;
}

static void thread_stream(grace_grpc_call *call, const void *msg, void *data) {
  int timeout_mode = data != NULL;
  counter *c = calloc(1, sizeof(*c));
  if (c == NULL) {
    grace_grpc_call_finish(call, GRACE_GRPC_RESOURCE_EXHAUSTED, NULL);
    return;
  }
  c->count = parse_count(msg);
  grace_grpc_call_set_data(call, c);
  if (pthread_create(&c->thread, NULL,
                     timeout_mode ? wait_timeout_run : thread_stream_run,
                     call) != 0) {
    free(c);
    grace_grpc_call_set_data(call, NULL);
    grace_grpc_call_finish(call, GRACE_GRPC_INTERNAL, NULL);
    return;
  }
  /* Reaped by the detached thread itself: the call is its to finish. */
  pthread_detach(c->thread);
}

static void thread_stream_cancel(grace_grpc_call *call, void *data) {
  (void)call;
  (void)data; /* the thread wakes with GRACE_ECLOSED and finishes */
}

typedef struct tally {
  long count, bytes;
} tally;

static void client_stream(grace_grpc_call *call, const void *msg, void *data) {
  const grace_grpc_bytes *b = msg;
  tally *t = grace_grpc_call_data(call);
  (void)data;
  if (t == NULL) {
    t = calloc(1, sizeof(*t));
    if (t == NULL) {
      grace_grpc_call_finish(call, GRACE_GRPC_RESOURCE_EXHAUSTED, NULL);
      return;
    }
    grace_grpc_call_set_data(call, t);
  }
  t->count++;
  t->bytes += (long)b->len;
}

static void client_stream_end(grace_grpc_call *call, void *data) {
  tally *t = grace_grpc_call_data(call);
  char out[64];
  (void)data;
  int len = snprintf(out, sizeof(out), "%ld/%ld", t ? t->count : 0,
                     t ? t->bytes : 0);
  free(t);
  grace_grpc_call_set_data(call, NULL);
  grace_grpc_call_send_bytes(call, out, (size_t)len);
  grace_grpc_call_finish(call, GRACE_GRPC_OK, NULL);
}

static void client_stream_cancel(grace_grpc_call *call, void *data) {
  (void)data;
  free(grace_grpc_call_data(call));
  grace_grpc_call_set_data(call, NULL);
  grace_grpc_call_finish(call, GRACE_GRPC_CANCELLED, NULL);
}

typedef struct echo_job {
  grace_grpc_call *call;
  size_t len;
  unsigned char data[];
} echo_job;

static void *echo_thread(void *arg) {
  echo_job *job = arg;
  int rv = grace_grpc_call_send_bytes_wait(job->call, job->data, job->len,
                                           10 * GRACE_SECOND);
  if (rv != 0 && rv != GRACE_ECLOSED)
    grace_log("Bidi send: %s", grace_strerror(rv));
  free(job);
  return NULL;
}

static void bidi(grace_grpc_call *call, const void *msg, void *data) {
  const grace_grpc_bytes *b = msg;
  (void)data;
  echo_job *job = malloc(sizeof(*job) + b->len);
  pthread_t t;
  if (job == NULL) {
    grace_grpc_call_finish(call, GRACE_GRPC_RESOURCE_EXHAUSTED, NULL);
    return;
  }
  job->call = call;
  job->len = b->len;
  memcpy(job->data, b->data, b->len);
  /* Answer from another thread, then wait for it: the send is posted to
   * the loop and goes out in order before the finish. */
  if (pthread_create(&t, NULL, echo_thread, job) != 0) {
    free(job);
    grace_grpc_call_finish(call, GRACE_GRPC_INTERNAL, NULL);
    return;
  }
  pthread_join(t, NULL);
}

static void bidi_end(grace_grpc_call *call, void *data) {
  (void)data;
  grace_grpc_call_finish(call, GRACE_GRPC_OK, NULL);
}

static void cancel_ok(grace_grpc_call *call, void *data) {
  (void)data;
  grace_grpc_call_finish(call, GRACE_GRPC_CANCELLED, "cancelled");
}

static void forever(grace_grpc_call *call, const void *msg, void *data) {
  (void)call;
  (void)msg;
  (void)data;
  grace_log("Forever started");
}

static grace_grpc_server *server;

/* The library's test hook (src/grpc/server.c). */
extern void (*grace__grpc_test_watch_end_pause)(void);
static grace_duration watch_end_pause;

static void pause_watch_end(void) {
  struct timespec ts = {(time_t)(watch_end_pause / GRACE_SECOND),
                        (long)(watch_end_pause % GRACE_SECOND)};
  grace_log("Watch end paused");
  nanosleep(&ts, NULL);
}

/* An /Echo/UntilStop call waiting for the stop. */
typedef struct until_stop {
  uv_poll_t poll;
  grace_grpc_call *call;
} until_stop;

static void until_stop_closed(uv_handle_t *h) { free(h->data); }

static void until_stop_end(until_stop *u, int stopping) {
  grace_grpc_call *call = u->call;
  grace_grpc_call_set_data(call, NULL);
  uv_poll_stop(&u->poll);
  uv_close((uv_handle_t *)&u->poll, until_stop_closed);
  if (stopping) {
    grace_grpc_call_send_bytes(call, "bye", 3);
    grace_grpc_call_finish(call, GRACE_GRPC_OK, NULL);
  } else {
    grace_grpc_call_finish(call, GRACE_GRPC_CANCELLED, NULL);
  }
}

static void on_stopping(uv_poll_t *p, int status, int events) {
  (void)status;
  (void)events;
  until_stop_end(p->data, 1);
}

static void until_stop_start(grace_grpc_call *call, const void *msg,
                             void *data) {
  (void)msg;
  (void)data;
  int fd = grace_ctx_done_fd(grace_grpc_server_stopping_ctx(server));
  until_stop *u = calloc(1, sizeof(*u));
  if (u == NULL || fd < 0 ||
      uv_poll_init(grace_grpc_call_loop(call), &u->poll, fd) != 0) {
    free(u);
    grace_grpc_call_finish(call, GRACE_GRPC_INTERNAL, NULL);
    return;
  }
  u->call = call;
  u->poll.data = u;
  grace_grpc_call_set_data(call, u);
  grace_grpc_call_send_bytes(call, "hello", 5);
  uv_poll_start(&u->poll, UV_READABLE, on_stopping);
}

static void until_stop_cancel(grace_grpc_call *call, void *data) {
  until_stop *u = grace_grpc_call_data(call);
  (void)data;
  if (u != NULL)
    until_stop_end(u, 0);
}

int main(int argc, char **argv) {
  int64_t port = 0;
  grace_duration shutdown_timeout = 0;
  grace_grpc_server *srv;
  grace_ctx *ctx = NULL;
  char addr[32];
  int cut = 0;

  grace_flags *flags = grace_flags_new(argv[0]);
  grace_flags_int(flags, "port", &port, "port");
  grace_flags_duration(flags, "shutdown-timeout", &shutdown_timeout,
                       "graceful stop deadline");
  grace_flags_duration(flags, "watch-end-pause", &watch_end_pause,
                       "tests: pause of a graceful stop before it ends the "
                       "health Watch calls");
  grace_flags_parse_or_exit(flags, argc, argv);
  if (watch_end_pause > 0)
    grace__grpc_test_watch_end_pause = pause_watch_end;
  grace_flags_free(flags);

  grace_ctx *stop = grace_signal_context();
  if (grace_grpc_server_new(NULL, &srv) != 0)
    return 1;
  server = srv;
  const grace_grpc_method methods[] = {
      {.path = "/Echo/Unary", .on_message = unary},
      {.path = "/Echo/ServerStream",
       .on_message = server_stream,
       .on_cancel = server_stream_cancel},
      {.path = "/Echo/ThreadStream",
       .on_message = thread_stream,
       .on_cancel = thread_stream_cancel},
      {.path = "/Echo/WaitTimeout",
       .on_message = thread_stream,
       .on_cancel = thread_stream_cancel,
       .data = &wait_timeout_mode},
      {.path = "/Echo/ClientStream",
       .on_message = client_stream,
       .on_half_close = client_stream_end,
       .on_cancel = client_stream_cancel},
      {.path = "/Echo/Bidi",
       .on_message = bidi,
       .on_half_close = bidi_end,
       .on_cancel = cancel_ok},
      {.path = "/Echo/Forever", .on_message = forever, .on_cancel = cancel_ok},
      {.path = "/Echo/UntilStop",
       .on_message = until_stop_start,
       .on_cancel = until_stop_cancel},
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
  grace_log("Shutdown Server...");
  if (shutdown_timeout > 0)
    grace_ctx_with_timeout(grace_ctx_background(), shutdown_timeout, &ctx);
  int rv = grace_grpc_server_graceful_stop(srv, ctx, &cut);
  if (rv != 0)
    grace_log("stopped: %s, %d call(s) cut", grace_strerror(rv), cut);
  else
    grace_log("gRPC server graceful shutdown completed");
  grace_ctx_unref(ctx);
  grace_grpc_server_free(srv);
  return rv != 0;
}
