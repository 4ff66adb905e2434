/*
 * The gRPC server: calls on HTTP/2 streams (http/stream.h), protobuf-c
 * messages, status trailers, grpc-timeout deadlines, the health service,
 * and grpc-go's GracefulStop with a deadline that escalates to Stop.
 *
 * A call lives on its connection's loop thread.  Its stream side (the
 * grace_http_request) ends when the handler finishes the call; the call
 * object itself is released once that is done and no callback of it is
 * running (|busy|), so a handler may finish a call from inside on_message.
 * Sends go through the call's bounded send queue (see send_framed): from
 * any thread, in order, then the finish; the loop thread drains it into
 * the stream as the stream takes it (on_send_ready).
 */
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "grace/grpc.h"
#include "grace/uv.h"
#include "grpc/wire.h"
#include "grace_health.pb-c.h"
#include "http/internal.h"
#include "http/stream.h"
#include "net/list.h"

/* The health service: its wire names are grpc.health.v1's; its messages
 * come from the library's private copy of health.proto (grace_health.proto:
 * same messages, C symbols of their own; see there), named shortly here. */
#define HEALTH_CHECK "/grpc.health.v1.Health/Check"
#define HEALTH_WATCH "/grpc.health.v1.Health/Watch"
typedef Grace__Internal__Health__V1__HealthCheckRequest health_request;
typedef Grace__Internal__Health__V1__HealthCheckResponse health_response;
typedef Grace__Internal__Health__V1__HealthCheckResponse__ServingStatus
    health_status_t;
#define health_request_descriptor                                            \
  grace__internal__health__v1__health_check_request__descriptor
#define health_response_init                                                 \
  grace__internal__health__v1__health_check_response__init
#define HEALTH_SERVING                                                       \
  GRACE__INTERNAL__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING
#define HEALTH_NOT_SERVING                                                   \
  GRACE__INTERNAL__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING
#define HEALTH_SERVICE_UNKNOWN                                               \
  GRACE__INTERNAL__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVICE_UNKNOWN

typedef struct method_entry {
  grace_grpc_method m;
  char *path;
} method_entry;

typedef struct health_entry {
  char *service;
  int serving;
} health_entry;

struct grace_grpc_server {
  grace_grpc_options opts;
  grace_http_server *http;
  method_entry *methods;
  size_t nmethods;
  pthread_mutex_t lock; /* health, watches, stopping */
  health_entry *health;
  size_t nhealth;
  grace__list watches;
  int stopping;
  int all_not_serving; /* grace_grpc_server_set_all_not_serving */
  int started;
  void (*done)(grace_grpc_server *srv, void *data);
  void *done_data;
  grace_grpc_stop_cb uv_done; /* grace_grpc_server_graceful_stop_uv */
  void *uv_done_data;
};

/* A framed message waiting in a call's send queue. */
typedef struct send_buf {
  struct send_buf *next;
  size_t len;
  uint8_t data[];
} send_buf;

/* What a queued message counts against max_send_buffer: its bytes and its
 * entry, so a stream of tiny messages is bounded in memory too, not only
 * in payload. */
#define QUEUED_SIZE(b) (sizeof(send_buf) + (b)->len)

/* Response metadata added by the handler (names and values owned). */
typedef struct md_list {
  grace__h2_header *h;
  size_t n;
} md_list;

static void md_free(md_list *l) {
  for (size_t i = 0; i < l->n; i++) {
    free((char *)(uintptr_t)l->h[i].name);
    free((char *)(uintptr_t)l->h[i].value);
  }
  free(l->h);
  l->h = NULL;
  l->n = 0;
}

static int md_add(md_list *l, const char *key, const char *value) {
  grace__h2_header *h = realloc(l->h, (l->n + 1) * sizeof(*h));
  if (h == NULL)
    return GRACE_ENOMEM;
  l->h = h;
  char *k = strdup(key), *v = strdup(value);
  if (k == NULL || v == NULL) {
    free(k);
    free(v);
    return GRACE_ENOMEM;
  }
  h[l->n].name = k;
  h[l->n].value = v;
  l->n++;
  return 0;
}

/* Copies |extra| after the |n| fields of |base| into a new array. */
static grace__h2_header *md_join(const grace__h2_header *base, size_t n,
                                 const md_list *a, const md_list *b,
                                 size_t *out_n) {
  size_t total = n + a->n + (b != NULL ? b->n : 0);
  grace__h2_header *h = malloc((total ? total : 1) * sizeof(*h));
  if (h == NULL)
    return NULL;
  memcpy(h, base, n * sizeof(*h));
  memcpy(h + n, a->h, a->n * sizeof(*h));
  if (b != NULL)
    memcpy(h + n + a->n, b->h, b->n * sizeof(*h));
  *out_n = total;
  return h;
}

struct grace_grpc_call {
  grace_grpc_server *srv;
  grace_http_request *req; /* the stream side; NULL once finished */
  const method_entry *me;
  grace__loop *loop;
  grace__grpc_reader reader;
  uv_timer_t *deadline;
  grace_ctx *ctx;
  void *data;
  grace__list watch_link; /* in srv->watches while a Watch is open */
  char *watch_service;
  struct grace_grpc_call *watch_next; /* a graceful stop ending watches */
  int64_t deadline_at; /* grpc-timeout, monotonic ns; 0: none */
  int busy;            /* callbacks of this call running (loop thread) */
  uint8_t cancelled, deadline_passed, user_finished, headers_sent;
  uint8_t flushing; /* flush() is running (loop thread) */

  /* The send queue, shared with other threads: messages accepted by a
   * send and not yet handed to the stream (whose own queue is bounded
   * by the HTTP/2 layer), in order, then the finish.  Bounded by
   * opts.max_send_buffer: a send past it is refused with GRACE_EBUSY
   * (grace_grpc_call_on_ready and grace_grpc_call_send_wait wait for
   * room), never dropped. */
  pthread_mutex_t lock;
  pthread_cond_t room; /* the queue fell to half, or sends ended */
  send_buf *head, *tail;
  size_t queued; /* bytes held by head..tail (see QUEUED_SIZE) */
  int send_err;  /* nonzero: every send fails with it */
  grace__post flush_post;
  uint8_t flush_posted;     /* flush_post is on the loop's list */
  uint8_t want_room;        /* a send was refused: wake the waiters */
  uint8_t finish_requested; /* grace_grpc_call_finish was called */
  grace_grpc_code finish_code;
  char *finish_message;
  grace_grpc_ready_cb ready_cb; /* grace_grpc_call_on_ready, one shot */
  void *ready_data;
  uint8_t accepted_any;      /* a send was accepted: the headers are set */
  md_list headers, trailers; /* response metadata, under the lock */
};


/* ---- call lifetime -------------------------------------------------------- */

static void timer_closed(uv_handle_t *h) { free(h); }

static void free_queue(send_buf *b) {
  while (b != NULL) {
    send_buf *next = b->next;
    free(b);
    b = next;
  }
}

static void call_release(grace_grpc_call *call) {
  grace__grpc_reader_free(&call->reader);
  grace_ctx_unref(call->ctx);
  if (call->deadline != NULL)
    uv_close((uv_handle_t *)call->deadline, timer_closed);
  free_queue(call->head);
  free(call->finish_message);
  md_free(&call->headers);
  md_free(&call->trailers);
  pthread_cond_destroy(&call->room);
  pthread_mutex_destroy(&call->lock);
  free(call->watch_service);
  free(call);
}

static void call_maybe_release(grace_grpc_call *call) {
  if (!call->user_finished || call->req != NULL || call->busy != 0)
    return;
  pthread_mutex_lock(&call->lock);
  int posted = call->flush_posted;
  pthread_mutex_unlock(&call->lock);
  if (!posted)
    call_release(call);
}

static void stop_deadline(grace_grpc_call *call) {
  if (call->deadline != NULL)
    uv_timer_stop(call->deadline);
}

/* Ends the sends of a call for good with |err|: the queue is dropped (its
 * stream is gone, or the call is over) and every waiter wakes. */
static void sends_end(grace_grpc_call *call, int err) {
  pthread_mutex_lock(&call->lock);
  if (call->send_err == 0 || err == GRACE_ECLOSED)
    call->send_err = err;
  send_buf *q = err == GRACE_ECLOSED ? call->head : NULL;
  if (q != NULL) {
    call->head = call->tail = NULL;
    call->queued = 0;
  }
  call->ready_cb = NULL;
  pthread_cond_broadcast(&call->room);
  pthread_mutex_unlock(&call->lock);
  free_queue(q);
}

/* Tells the handler its call is cancelled, once. */
static void call_cancel(grace_grpc_call *call) {
  if (call->cancelled)
    return;
  call->cancelled = 1;
  stop_deadline(call);
  sends_end(call, GRACE_ECLOSED);
  if (call->ctx != NULL)
    grace_ctx_cancel(call->ctx);
  if (!call->user_finished && call->me != NULL &&
      call->me->m.on_cancel != NULL) {
    call->busy++;
    call->me->m.on_cancel(call, call->me->m.data);
    call->busy--;
  }
}

/* Sends grpc-status and grpc-message and ends the stream side. */
static void end_stream(grace_grpc_call *call, grace_grpc_code code,
                       const char *message) {
  grace_http_request *req = call->req;
  char status[16], *enc = NULL;
  grace__h2_header h[3];
  size_t n = 0;

  if (req == NULL)
    return;
  call->req = NULL;
  stop_deadline(call);
  if (!grace__req_stream_alive(req)) {
    grace__req_finish_reset(req, NGHTTP2_CANCEL);
    return;
  }
  snprintf(status, sizeof(status), "%u", (unsigned)code);
  if (!call->headers_sent)
    h[n++] = (grace__h2_header){"content-type", "application/grpc"};
  h[n++] = (grace__h2_header){"grpc-status", status};
  if (message != NULL && message[0] != '\0') {
    size_t len = strlen(message);
    size_t elen = grace__grpc_message_encode(NULL, 0, message, len);
    enc = malloc(elen + 1);
    if (enc != NULL) {
      grace__grpc_message_encode(enc, elen, message, len);
      enc[elen] = '\0';
      h[n++] = (grace__h2_header){"grpc-message", enc};
    }
  }
  /* The handler's metadata: its trailers, and in a trailers-only answer
   * its headers too.  Without memory to copy them the call fails
   * (RESOURCE_EXHAUSTED): its status never goes out without them. */
  size_t all_n = n;
  grace__h2_header *all = NULL;
  pthread_mutex_lock(&call->lock);
  int with_md =
      call->trailers.n > 0 || (!call->headers_sent && call->headers.n > 0);
  if (with_md)
    all = md_join(h, n, &call->trailers,
                  call->headers_sent ? NULL : &call->headers, &all_n);
  pthread_mutex_unlock(&call->lock);
  if (with_md && all == NULL) {
    snprintf(status, sizeof(status), "%u",
             (unsigned)GRACE_GRPC_RESOURCE_EXHAUSTED);
    if (enc != NULL)
      n--; /* the handler's grpc-message, last */
    h[n++] = (grace__h2_header){"grpc-message", "out of memory"};
    all_n = n;
  }
  if (call->headers_sent)
    grace__req_finish_trailers(req, all != NULL ? all : h, all_n);
  else
    grace__req_finish_trailers_only(req, 200, all != NULL ? all : h, all_n);
  free(all);
  free(enc);
}

/* Fails the call from the server's side: the status goes out now and the
 * handler, if it holds the call, is told to stop. */
static void call_fail(grace_grpc_call *call, grace_grpc_code code,
                      const char *message) {
  end_stream(call, code, message);
  call_cancel(call);
}

/* ---- the send queue, drained on the loop thread ------------------------ */

/* The handler has nothing more to say: finished, being finished (a finish
 * waits behind the queue), or cancelled. */
static int call_done(grace_grpc_call *call) {
  if (call->user_finished || call->cancelled)
    return 1;
  pthread_mutex_lock(&call->lock);
  int fin = call->finish_requested;
  pthread_mutex_unlock(&call->lock);
  return fin;
}

/* Hands one framed message to the stream: 0, GRACE_EBUSY (the stream's
 * queue is full: on_send_ready follows), or GRACE_ECLOSED. */
static int apply_send(grace_grpc_call *call, const uint8_t *bytes, size_t len) {
  if (call->req == NULL || call->cancelled ||
      !grace__req_stream_alive(call->req))
    return GRACE_ECLOSED;
  if (!call->headers_sent) {
    static const grace__h2_header ct[] = {{"content-type", "application/grpc"}};
    size_t n = 1;
    pthread_mutex_lock(&call->lock);
    int with_md = call->headers.n > 0;
    grace__h2_header *h =
        with_md ? md_join(ct, 1, &call->headers, NULL, &n) : NULL;
    pthread_mutex_unlock(&call->lock);
    if (with_md && h == NULL)
      return GRACE_ENOMEM; /* never the headers without the handler's */
    int rv = grace__req_send_headers(call->req, 200, h != NULL ? h : ct,
                                     h != NULL ? n : 1);
    free(h);
    if (rv != 0)
      return rv;
    call->headers_sent = 1;
  }
  return grace__req_send_data(call->req, bytes, len);
}

static void apply_finish(grace_grpc_call *call, grace_grpc_code code,
                         const char *message) {
  if (call->user_finished)
    return;
  call->user_finished = 1;
  if (call->deadline_passed) {
    code = GRACE_GRPC_DEADLINE_EXCEEDED;
    message = "context deadline exceeded";
  }
  end_stream(call, code, message);
}

/* True when a refused send may go on: the queue is at half or less. */
static int has_room(const grace_grpc_call *call) {
  return call->queued <= call->srv->opts.max_send_buffer / 2;
}

/* Under the call's lock: whether the caller, not on the loop thread, must
 * post a flush (one at a time). */
static int want_post(grace_grpc_call *call) {
  if (call->flush_posted)
    return 0;
  call->flush_posted = 1;
  return 1;
}

/* Bytes one flush hands to the stream before it yields to the loop: a
 * handler thread that refills the queue as fast as the client reads must
 * not keep the loop from reading (a RST_STREAM, other connections). */
#define FLUSH_BUDGET (64 * 1024)

static void on_flush_post(grace__loop *loop, grace__post *post);

/* Moves queued messages to the stream while it takes them, then, once the
 * queue is empty, applies a requested finish.  Runs the handler's ready
 * callback when a refused send may go on.  Loop thread; reentrant calls
 * (a ready callback that sends) return at once and the outer run goes on. */
static void flush(grace_grpc_call *call) {
  size_t moved = 0;
  if (call->flushing)
    return;
  call->flushing = 1;
  call->busy++;
  for (;;) {
    grace_grpc_ready_cb cb = NULL;
    void *cb_data = NULL;
    pthread_mutex_lock(&call->lock);
    send_buf *b = call->head;
    int fin = b == NULL && call->finish_requested && !call->user_finished;
    grace_grpc_code code = call->finish_code;
    char *message = NULL;
    if (fin) {
      message = call->finish_message;
      call->finish_message = NULL;
    }
    pthread_mutex_unlock(&call->lock);
    if (fin) {
      apply_finish(call, code, message);
      free(message);
      break;
    }
    if (b == NULL || call->user_finished)
      break;
    int rv = apply_send(call, b->data, b->len);
    if (rv == GRACE_EBUSY)
      break; /* hook_send_ready comes back */
    if (rv != 0) {
      /* The stream is gone, or could not take the message (no memory):
       * then the call fails, and never ends OK without its message. */
      if (rv != GRACE_ECLOSED)
        call_fail(call,
                  rv == GRACE_ENOMEM ? GRACE_GRPC_RESOURCE_EXHAUSTED
                                     : GRACE_GRPC_INTERNAL,
                  grace_strerror(rv));
      sends_end(call, GRACE_ECLOSED);
      continue;
    }
    pthread_mutex_lock(&call->lock);
    call->head = b->next;
    if (call->head == NULL)
      call->tail = NULL;
    call->queued -= QUEUED_SIZE(b);
    if (has_room(call)) {
      if (call->want_room) {
        call->want_room = 0;
        pthread_cond_broadcast(&call->room);
      }
      cb = call->ready_cb;
      cb_data = call->ready_data;
      call->ready_cb = NULL;
    }
    int yield = 0, post = 0;
    moved += b->len;
    if (moved >= FLUSH_BUDGET && call->head != NULL) {
      yield = 1; /* the rest in a later turn of the loop */
      post = want_post(call);
    }
    pthread_mutex_unlock(&call->lock);
    free(b);
    if (cb != NULL)
      cb(call, cb_data);
    if (post)
      grace__loop_post(call->loop, &call->flush_post);
    if (yield)
      break;
  }
  /* A ready callback asked for while the queue had room already. */
  pthread_mutex_lock(&call->lock);
  grace_grpc_ready_cb cb = has_room(call) ? call->ready_cb : NULL;
  void *cb_data = call->ready_data;
  if (cb != NULL)
    call->ready_cb = NULL;
  pthread_mutex_unlock(&call->lock);
  call->flushing = 0;
  if (cb != NULL) {
    cb(call, cb_data);
    flush(call);
  }
  call->busy--;
  call_maybe_release(call);
}

static void on_flush_post(grace__loop *loop, grace__post *post) {
  grace_grpc_call *call =
      grace__container_of(post, grace_grpc_call, flush_post);
  (void)loop;
  pthread_mutex_lock(&call->lock);
  call->flush_posted = 0;
  pthread_mutex_unlock(&call->lock);
  flush(call);
}

/* Frames a message into a new queue entry: |msg| packed, or |len| bytes
 * of |raw|. */
static send_buf *frame(grace_grpc_call *call, const ProtobufCMessage *msg,
                       const void *raw, size_t len, int *err) {
  size_t body = msg != NULL ? protobuf_c_message_get_packed_size(msg) : len;
  if (body > call->srv->opts.max_send_message) {
    *err = GRACE_ERANGE;
    return NULL;
  }
  send_buf *b = malloc(sizeof(*b) + GRACE__GRPC_PREFIX_LEN + body);
  if (b == NULL) {
    *err = GRACE_ENOMEM;
    return NULL;
  }
  b->next = NULL;
  grace__grpc_prefix_encode(b->data, 0, body);
  if (msg != NULL)
    protobuf_c_message_pack(msg, b->data + GRACE__GRPC_PREFIX_LEN);
  else if (raw != NULL && body > 0)
    memcpy(b->data + GRACE__GRPC_PREFIX_LEN, raw, body);
  b->len = GRACE__GRPC_PREFIX_LEN + body;
  return b;
}

/* Waits on |cond| until |deadline| (monotonic ns; INT64_MAX: no limit).
 * Returns 0, or GRACE_ETIMEDOUT once it has passed. */
static int cond_wait_until(pthread_cond_t *cond, pthread_mutex_t *lock,
                           int64_t deadline) {
  if (deadline == INT64_MAX) {
    pthread_cond_wait(cond, lock);
    return 0;
  }
  if (grace_now() >= deadline)
    return GRACE_ETIMEDOUT;
  struct timespec ts = {(time_t)(deadline / GRACE_SECOND),
                        (long)(deadline % GRACE_SECOND)};
  pthread_cond_timedwait(cond, lock, &ts);
  return 0;
}

/* Queues a message: 0, or GRACE_EBUSY when the queue is full (after
 * waiting up to |timeout| for room when |timeout| is not 0; negative: no
 * limit), or an error of the call. */
static int send_framed(grace_grpc_call *call, const ProtobufCMessage *msg,
                       const void *raw, size_t len, grace_duration timeout) {
  int err = 0;
  send_buf *b = frame(call, msg, raw, len, &err);
  if (b == NULL)
    return err;
  int current = grace__loop_is_current(call->loop);
  int64_t deadline = timeout < 0
                         ? INT64_MAX
                         : grace__grpc_deadline_after(grace_now(), timeout);
  int rv, post = 0;
  pthread_mutex_lock(&call->lock);
  for (;;) {
    rv = call->send_err;
    if (rv != 0)
      break;
    /* An empty queue takes any message, so one larger than the bound
     * still goes; past the bound a send waits its turn. */
    if (call->queued == 0 ||
        call->queued + QUEUED_SIZE(b) <= call->srv->opts.max_send_buffer) {
      if (call->tail != NULL)
        call->tail->next = b;
      else
        call->head = b;
      call->tail = b;
      call->queued += QUEUED_SIZE(b);
      call->accepted_any = 1;
      b = NULL;
      if (!current)
        post = want_post(call);
      break;
    }
    call->want_room = 1;
    rv = GRACE_EBUSY;
    /* The loop thread never blocks: it would wait for itself. */
    if (timeout == 0 || current ||
        cond_wait_until(&call->room, &call->lock, deadline) != 0)
      break;
  }
  pthread_mutex_unlock(&call->lock);
  free(b);
  if (rv == GRACE_EBUSY && timeout != 0 && !current)
    rv = GRACE_ETIMEDOUT;
  if (rv != 0)
    return rv;
  if (current)
    flush(call);
  else if (post)
    grace__loop_post(call->loop, &call->flush_post);
  return 0;
}

int grace_grpc_call_send(grace_grpc_call *call, const ProtobufCMessage *msg) {
  if (call == NULL || msg == NULL)
    return GRACE_EINVAL;
  return send_framed(call, msg, NULL, 0, 0);
}

int grace_grpc_call_send_bytes(grace_grpc_call *call, const void *data,
                               size_t len) {
  if (call == NULL || (data == NULL && len > 0))
    return GRACE_EINVAL;
  return send_framed(call, NULL, data, len, 0);
}

int grace_grpc_call_send_wait(grace_grpc_call *call,
                              const ProtobufCMessage *msg,
                              grace_duration timeout) {
  if (call == NULL || msg == NULL)
    return GRACE_EINVAL;
  return send_framed(call, msg, NULL, 0, timeout);
}

int grace_grpc_call_send_bytes_wait(grace_grpc_call *call, const void *data,
                                    size_t len, grace_duration timeout) {
  if (call == NULL || (data == NULL && len > 0))
    return GRACE_EINVAL;
  return send_framed(call, NULL, data, len, timeout);
}

int grace_grpc_call_on_ready(grace_grpc_call *call, grace_grpc_ready_cb cb,
                             void *data) {
  if (call == NULL || cb == NULL)
    return GRACE_EINVAL;
  int post = 0, rv;
  pthread_mutex_lock(&call->lock);
  rv = call->send_err;
  if (rv == 0) {
    call->ready_cb = cb;
    call->ready_data = data;
    /* Room already: the callback still runs later, from the loop, never
     * from inside this call. */
    if (has_room(call))
      post = want_post(call);
  }
  pthread_mutex_unlock(&call->lock);
  if (post)
    grace__loop_post(call->loop, &call->flush_post);
  return rv;
}

/* A metadata key the handler may set: lower-case token characters, not
 * reserved for the protocol (RFC 9113 section 8.2; grpc-go's checks). */
static int md_key_ok(const char *key) {
  if (key[0] == '\0' || strncmp(key, "grpc-", 5) == 0 ||
      strcmp(key, "content-type") == 0 || strcmp(key, "te") == 0)
    return 0;
  for (const char *p = key; *p != '\0'; p++)
    if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '-' ||
          *p == '_' || *p == '.'))
      return 0;
  return 1;
}

static int md_value_ok(const char *v) {
  for (const unsigned char *p = (const unsigned char *)v; *p != '\0'; p++)
    if (*p < 0x20 && *p != '\t')
      return 0;
  return 1;
}

static int add_metadata(grace_grpc_call *call, const char *key,
                        const char *value, int trailer) {
  if (call == NULL || key == NULL || value == NULL || !md_key_ok(key) ||
      !md_value_ok(value))
    return GRACE_EINVAL;
  int rv;
  pthread_mutex_lock(&call->lock);
  if (call->finish_requested || (!trailer && call->accepted_any))
    rv = GRACE_ESTATE;
  else
    rv = md_add(trailer ? &call->trailers : &call->headers, key, value);
  pthread_mutex_unlock(&call->lock);
  return rv;
}

int grace_grpc_call_add_header(grace_grpc_call *call, const char *key,
                               const char *value) {
  return add_metadata(call, key, value, 0);
}

int grace_grpc_call_add_trailer(grace_grpc_call *call, const char *key,
                                const char *value) {
  return add_metadata(call, key, value, 1);
}

void grace_grpc_call_finish(grace_grpc_call *call, grace_grpc_code code,
                            const char *message) {
  int current = grace__loop_is_current(call->loop), post = 0;
  /* Without memory the status text is dropped, never the finish. */
  char *copy = message != NULL ? strdup(message) : NULL;
  pthread_mutex_lock(&call->lock);
  if (call->finish_requested) {
    pthread_mutex_unlock(&call->lock);
    free(copy);
    return;
  }
  call->finish_requested = 1;
  call->finish_code = code;
  call->finish_message = copy;
  if (call->send_err == 0)
    call->send_err = GRACE_ESTATE;
  call->ready_cb = NULL;
  pthread_cond_broadcast(&call->room);
  if (!current)
    post = want_post(call);
  pthread_mutex_unlock(&call->lock);
  if (current)
    flush(call);
  else if (post)
    grace__loop_post(call->loop, &call->flush_post);
}

/* ---- call accessors ------------------------------------------------------- */

const char *grace_grpc_call_path(grace_grpc_call *call) {
  return call->me != NULL ? call->me->path : "";
}

const char *grace_grpc_call_metadata(grace_grpc_call *call, const char *key) {
  return call->req != NULL ? grace_http_request_header(call->req, key) : NULL;
}

uv_loop_t *grace_grpc_call_loop(grace_grpc_call *call) {
  return call->loop->uv;
}

void grace_grpc_call_set_data(grace_grpc_call *call, void *data) {
  call->data = data;
}

void *grace_grpc_call_data(grace_grpc_call *call) { return call->data; }

grace_ctx *grace_grpc_call_ctx(grace_grpc_call *call) {
  if (call->ctx == NULL) {
    int rv = call->deadline_at != 0
                 ? grace_ctx_with_deadline(grace_ctx_background(),
                                           call->deadline_at, &call->ctx)
                 : grace_ctx_with_cancel(grace_ctx_background(), &call->ctx);
    if (rv != 0)
      return NULL;
    if (call->cancelled)
      grace_ctx_cancel(call->ctx);
  }
  return call->ctx;
}

/* ---- the stream hooks ----------------------------------------------------- */

static const method_entry *find_method(grace_grpc_server *srv,
                                       const char *path, size_t len) {
  for (size_t i = 0; i < srv->nmethods; i++)
    if (strlen(srv->methods[i].path) == len &&
        memcmp(srv->methods[i].path, path, len) == 0)
      return &srv->methods[i];
  return NULL;
}

static void on_deadline(uv_timer_t *t) {
  grace_grpc_call *call = t->data;
  /* Like grpc-go: the handler's context ends; whatever it finishes with,
   * the client is told DEADLINE_EXCEEDED. */
  call->deadline_passed = 1;
  /* The handler may finish the call from its on_cancel: it is released
   * here, after the callback, or it would stay behind for good (the
   * stream side is gone, nothing else comes back to it). */
  call->busy++;
  call_cancel(call);
  call->busy--;
  call_maybe_release(call);
}

static int hook_start(grace_http_request *req, void *data) {
  grace_grpc_server *srv = data;
  const char *ct = grace_http_request_header(req, "content-type");
  if (ct == NULL || !grace__grpc_is_content_type(ct, strlen(ct), NULL, NULL))
    return 0;

  const char *target = grace_http_request_target(req);
  const char *q = strchr(target, '?');
  size_t plen = q != NULL ? (size_t)(q - target) : strlen(target);
  const method_entry *me = find_method(srv, target, plen);
  grace_grpc_call *call = calloc(1, sizeof(*call));
  if (call == NULL) {
    grace__req_finish_reset(req, NGHTTP2_INTERNAL_ERROR);
    return 1;
  }
  call->srv = srv;
  call->req = req;
  call->me = me;
  call->loop = grace__req_loop(req);
  call->flush_post.fn = on_flush_post;
  pthread_mutex_init(&call->lock, NULL);
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC); /* as grace_now */
  pthread_cond_init(&call->room, &ca);
  pthread_condattr_destroy(&ca);
  grace__list_init(&call->watch_link);
  grace__grpc_reader_init(&call->reader, srv->opts.max_recv_message, NULL);
  grace__req_set_user(req, call);
  if (me == NULL) {
    /* grpc-go's texts for an unknown service or method. */
    char msg[512];
    const char *slash = plen > 1 ? memchr(target + 1, '/', plen - 1) : NULL;
    if (slash == NULL)
      snprintf(msg, sizeof(msg), "malformed method name: %.*s", (int)plen,
               target);
    else {
      size_t slen = (size_t)(slash - target);
      int known = 0;
      for (size_t i = 0; i < srv->nmethods && !known; i++)
        known = strncmp(srv->methods[i].path, target, slen + 1) == 0;
      if (known)
        snprintf(msg, sizeof(msg), "unknown method %.*s for service %.*s",
                 (int)(plen - slen - 1), slash + 1, (int)(slen - 1),
                 target + 1);
      else
        snprintf(msg, sizeof(msg), "unknown service %.*s", (int)(slen - 1),
                 target + 1);
    }
    call->user_finished = 1;
    end_stream(call, GRACE_GRPC_UNIMPLEMENTED, msg);
    call_maybe_release(call);
    return 1;
  }
  const char *timeout = grace_http_request_header(req, "grpc-timeout");
  if (timeout != NULL) {
    grace_duration d;
    char err[128];
    if (grace__grpc_timeout_decode(timeout, strlen(timeout), &d, err,
                                   sizeof(err)) != 0) {
      call->user_finished = 1;
      end_stream(call, GRACE_GRPC_INTERNAL, err);
      call_maybe_release(call);
      return 1;
    }
    call->deadline_at = grace__grpc_deadline_after(grace_now(), d);
    call->deadline = malloc(sizeof(*call->deadline));
    if (call->deadline != NULL) {
      uv_timer_init(call->loop->uv, call->deadline);
      call->deadline->data = call;
      uv_timer_start(call->deadline, on_deadline, grace__grpc_timeout_ms(d), 0);
    }
  }
  return 1;
}

static int on_grpc_message(const grace__grpc_msg *msg, void *data) {
  grace_grpc_call *call = data;
  char why[160];
  const char *enc =
      call->req ? grace_http_request_header(call->req, "grpc-encoding") : NULL;
  grace_grpc_code code =
      grace__grpc_check_payload(msg->flag, enc, 0, 1, why, sizeof(why));
  if (code != GRACE_GRPC_OK) {
    call_fail(call, code, why);
    return 1;
  }
  if (call_done(call))
    return 1;
  const grace_grpc_method *m = &call->me->m;
  call->busy++;
  if (m->input != NULL) {
    ProtobufCMessage *pm =
        protobuf_c_message_unpack(m->input, NULL, msg->len, msg->data);
    if (pm == NULL) {
      call->busy--;
      call_fail(call, GRACE_GRPC_INTERNAL,
                "grpc: error unmarshalling request: proto: cannot parse "
                "invalid wire-format data");
      return 1;
    }
    m->on_message(call, pm, m->data);
    protobuf_c_message_free_unpacked(pm, NULL);
  } else {
    grace_grpc_bytes b = {msg->data, msg->len};
    m->on_message(call, &b, m->data);
  }
  call->busy--;
  return call_done(call) ? 1 : 0;
}

static void hook_data(grace_http_request *req, const uint8_t *p, size_t n,
                      void *data) {
  grace_grpc_call *call = grace__req_user(req);
  (void)data;
  if (call_done(call))
    return; /* the rest of the body is dropped */
  call->busy++;
  int rv = grace__grpc_reader_feed(&call->reader, p, n, on_grpc_message, call);
  call->busy--;
  if (rv < 0) {
    const char *msg;
    grace_grpc_code code = grace__grpc_reader_status(&call->reader, &msg);
    call_fail(call, code, msg);
  }
  call_maybe_release(call);
}

static void hook_end(grace_http_request *req, void *data) {
  grace_grpc_call *call = grace__req_user(req);
  (void)data;
  if (call_done(call))
    return;
  if (grace__grpc_reader_finish(&call->reader) != 0) {
    const char *msg;
    grace_grpc_code code = grace__grpc_reader_status(&call->reader, &msg);
    call_fail(call, code, msg);
    call_maybe_release(call);
    return;
  }
  if (call->me->m.on_half_close != NULL) {
    call->busy++;
    call->me->m.on_half_close(call, call->me->m.data);
    call->busy--;
    call_maybe_release(call);
  }
}

static void hook_cancel(grace_http_request *req, void *data) {
  grace_grpc_call *call = grace__req_user(req);
  (void)data;
  /* The stream is gone (reset, connection lost or closed).  The stream
   * side is finished when the handler finishes, so the drain waits for
   * the handler, as grpc-go's does. */
  call->busy++;
  call_cancel(call);
  flush(call); /* a finish waiting behind the dropped queue goes now */
  call->busy--;
  if (call->user_finished && call->req != NULL) {
    grace_http_request *r = call->req;
    call->req = NULL;
    grace__req_finish_reset(r, NGHTTP2_CANCEL);
  }
  call_maybe_release(call);
}

static void hook_send_ready(grace_http_request *req, void *data) {
  grace_grpc_call *call = grace__req_user(req);
  (void)data;
  flush(call);
}

/* Plain HTTP on the gRPC port: what is not a gRPC call. */
static void http_fallback(grace_http_request *req, void *data) {
  grace_grpc_server *srv = data;
  const char *ct = grace_http_request_header(req, "content-type");
  const char *path = grace_http_request_path(req);
  if (ct != NULL && grace__grpc_is_content_type(ct, strlen(ct), NULL, NULL)) {
    static const char msg[] = "gRPC requires HTTP/2\n";
    grace_http_respond(req, 505, msg, sizeof(msg) - 1);
    return;
  }
  if (find_method(srv, path, strlen(path)) != NULL) {
    static const char msg[] = "invalid gRPC request content-type\n";
    grace_http_respond(req, 415, msg, sizeof(msg) - 1);
    return;
  }
  static const char nf[] = "404 page not found\n";
  grace_http_respond(req, 404, nf, sizeof(nf) - 1);
}

/* ---- health --------------------------------------------------------------- */

/* The serving status of |service| under the lock: SERVING, NOT_SERVING,
 * or SERVICE_UNKNOWN. */
static int health_status(grace_grpc_server *srv, const char *service) {
  int known = service[0] == '\0';
  for (size_t i = 0; i < srv->nhealth; i++)
    if (strcmp(srv->health[i].service, service) == 0) {
      if (srv->stopping || srv->all_not_serving)
        return HEALTH_NOT_SERVING;
      return srv->health[i].serving ? HEALTH_SERVING : HEALTH_NOT_SERVING;
    }
  size_t slen = strlen(service);
  for (size_t i = 0; i < srv->nmethods && !known; i++)
    known = strncmp(srv->methods[i].path + 1, service, slen) == 0 &&
            srv->methods[i].path[slen + 1] == '/';
  if (!known)
    return HEALTH_SERVICE_UNKNOWN;
  return srv->stopping || srv->all_not_serving ? HEALTH_NOT_SERVING
                                               : HEALTH_SERVING;
}

static int send_health(grace_grpc_call *call, int status) {
  health_response resp;
  health_response_init(&resp);
  resp.status = (health_status_t)status;
  return grace_grpc_call_send(call, &resp.base);
}

static void health_check(grace_grpc_call *call, const void *msg, void *data) {
  const health_request *req = msg;
  grace_grpc_server *srv = data;
  pthread_mutex_lock(&srv->lock);
  int status = health_status(srv, req->service ? req->service : "");
  pthread_mutex_unlock(&srv->lock);
  if (status == HEALTH_SERVICE_UNKNOWN) {
    grace_grpc_call_finish(call, GRACE_GRPC_NOT_FOUND, "unknown service");
    return;
  }
  send_health(call, status);
  grace_grpc_call_finish(call, GRACE_GRPC_OK, NULL);
}

static void health_watch(grace_grpc_call *call, const void *msg, void *data) {
  const health_request *req = msg;
  grace_grpc_server *srv = data;
  const char *service = req->service ? req->service : "";
  call->watch_service = strdup(service);
  if (call->watch_service == NULL) {
    grace_grpc_call_finish(call, GRACE_GRPC_RESOURCE_EXHAUSTED, NULL);
    return;
  }
  pthread_mutex_lock(&srv->lock);
  int status = health_status(srv, service);
  int stopping = srv->stopping;
  if (!stopping)
    grace__list_push(&srv->watches, &call->watch_link);
  pthread_mutex_unlock(&srv->lock);
  send_health(call, status);
  /* A Watch started while stopping ends at once, like those open then. */
  if (stopping)
    grace_grpc_call_finish(call, GRACE_GRPC_OK, NULL);
}

static void health_watch_cancel(grace_grpc_call *call, void *data) {
  grace_grpc_server *srv = data;
  int mine;
  pthread_mutex_lock(&srv->lock);
  /* Whoever unlinks the watch finishes it: here, or a graceful stop. */
  mine = call->watch_link.next != &call->watch_link;
  grace__list_unlink(&call->watch_link);
  pthread_mutex_unlock(&srv->lock);
  if (mine || call->watch_service == NULL)
    grace_grpc_call_finish(call, GRACE_GRPC_CANCELLED, NULL);
}

/* Sends every Watch of |service| ("*": all) its status; |end| finishes
 * them.  Called with no lock held. */
/* Tests only: a graceful stop calls it, when set, before it finishes each
 * Watch call it took off the list, to hold that window open. */
extern void (*grace__grpc_test_watch_end_pause)(void);
void (*grace__grpc_test_watch_end_pause)(void);

static void notify_watches(grace_grpc_server *srv, const char *service,
                           int end) {
  grace_grpc_call *done = NULL;
  pthread_mutex_lock(&srv->lock);
  grace__list *it, *next;
  for (it = srv->watches.next; it != &srv->watches; it = next) {
    grace_grpc_call *call = grace__container_of(it, grace_grpc_call,
                                                watch_link);
    next = it->next;
    if (strcmp(service, "*") != 0 && strcmp(call->watch_service, service) != 0)
      continue;
    send_health(call, health_status(srv, call->watch_service));
    if (end) {
      /* Off the list, and so ours: health_watch_cancel finishes only a
       * watch it still finds linked.  (These calls once went on a local
       * list through the same link, which looked linked to the cancel: a
       * stream reset in this window was finished twice.) */
      grace__list_unlink(&call->watch_link);
      call->watch_next = done;
      done = call;
    }
  }
  pthread_mutex_unlock(&srv->lock);
  while (done != NULL) {
    grace_grpc_call *call = done;
    done = call->watch_next;
    if (grace__grpc_test_watch_end_pause != NULL)
      grace__grpc_test_watch_end_pause();
    grace_grpc_call_finish(call, GRACE_GRPC_OK, NULL);
  }
}

int grace_grpc_server_set_serving(grace_grpc_server *srv, const char *service,
                                  int serving) {
  if (srv == NULL || service == NULL)
    return GRACE_EINVAL;
  pthread_mutex_lock(&srv->lock);
  if (srv->stopping) {
    pthread_mutex_unlock(&srv->lock);
    return GRACE_ESHUTDOWN;
  }
  size_t i;
  for (i = 0; i < srv->nhealth; i++)
    if (strcmp(srv->health[i].service, service) == 0)
      break;
  if (i == srv->nhealth) {
    health_entry *h = realloc(srv->health, (i + 1) * sizeof(*h));
    char *name = strdup(service);
    if (h == NULL || name == NULL) {
      if (h != NULL)
        srv->health = h;
      free(name);
      pthread_mutex_unlock(&srv->lock);
      return GRACE_ENOMEM;
    }
    srv->health = h;
    h[i].service = name;
    srv->nhealth++;
  }
  srv->health[i].serving = serving != 0;
  pthread_mutex_unlock(&srv->lock);
  notify_watches(srv, service, 0);
  return 0;
}

int grace_grpc_server_set_all_not_serving(grace_grpc_server *srv) {
  if (srv == NULL)
    return GRACE_EINVAL;
  pthread_mutex_lock(&srv->lock);
  srv->all_not_serving = 1;
  pthread_mutex_unlock(&srv->lock);
  notify_watches(srv, "*", 0);
  return 0;
}

/* ---- the server ----------------------------------------------------------- */

void grace_grpc_options_init(grace_grpc_options *opts) {
  memset(opts, 0, sizeof(*opts));
  grace_http_options_init(&opts->http);
  opts->max_recv_message = GRACE__GRPC_DEFAULT_MAX_RECV;
  opts->max_send_message = 4u * 1024 * 1024;
  opts->max_send_buffer = 256u * 1024;
}

static int add_method(grace_grpc_server *srv, const grace_grpc_method *m) {
  const char *p = m->path;
  if (p == NULL || m->on_message == NULL || p[0] != '/' ||
      strchr(p + 1, '/') == NULL || strchr(p + 1, '/')[1] == '\0')
    return GRACE_EINVAL;
  if (find_method(srv, p, strlen(p)) != NULL)
    return GRACE_EBUSY;
  method_entry *ms = realloc(srv->methods, (srv->nmethods + 1) * sizeof(*ms));
  if (ms == NULL)
    return GRACE_ENOMEM;
  srv->methods = ms;
  char *copy = strdup(p);
  if (copy == NULL)
    return GRACE_ENOMEM;
  ms[srv->nmethods].m = *m;
  ms[srv->nmethods].path = copy;
  ms[srv->nmethods].m.path = copy;
  srv->nmethods++;
  return 0;
}

int grace_grpc_server_new(const grace_grpc_options *opts,
                          grace_grpc_server **out) {
  grace_grpc_server *srv;
  int rv;
  if (out == NULL)
    return GRACE_EINVAL;
  srv = calloc(1, sizeof(*srv));
  if (srv == NULL)
    return GRACE_ENOMEM;
  if (opts != NULL)
    srv->opts = *opts;
  else
    grace_grpc_options_init(&srv->opts);
  if (srv->opts.max_recv_message == 0 || srv->opts.max_send_message == 0 ||
      srv->opts.max_send_buffer == 0 ||
      srv->opts.max_send_message > UINT32_MAX) {
    free(srv);
    return GRACE_EINVAL;
  }
  pthread_mutex_init(&srv->lock, NULL);
  grace__list_init(&srv->watches);
  rv = grace_http_server_new(&srv->opts.http, &srv->http);
  if (rv != 0)
    goto fail;
  grace__stream_hooks hooks = {.on_start = hook_start,
                               .on_data = hook_data,
                               .on_end = hook_end,
                               .on_cancel = hook_cancel,
                               .on_send_ready = hook_send_ready,
                               .data = srv};
  grace__http_set_stream_hooks(srv->http, &hooks);
  /* The HTTP/2 stream under a call queues no more than the call itself,
   * so a client that never reads holds about twice max_send_buffer (plus
   * its flow-control windows) per call. */
  grace__http_set_stream_send_buffer(srv->http, srv->opts.max_send_buffer);
  grace_grpc_method check = {
      .path = HEALTH_CHECK,
      .input = &health_request_descriptor,
      .on_message = health_check,
      .data = srv};
  grace_grpc_method watch = {
      .path = HEALTH_WATCH,
      .input = &health_request_descriptor,
      .on_message = health_watch,
      .on_cancel = health_watch_cancel,
      .data = srv};
  if ((rv = add_method(srv, &check)) != 0 ||
      (rv = add_method(srv, &watch)) != 0 ||
      (rv = grace_http_server_handle(srv->http, "/", http_fallback, srv)) !=
          0)
    goto fail;
  *out = srv;
  return 0;

fail:
  grace_grpc_server_free(srv);
  return rv;
}

int grace_grpc_server_register(grace_grpc_server *srv,
                               const grace_grpc_method *m) {
  if (srv == NULL || m == NULL)
    return GRACE_EINVAL;
  if (srv->started)
    return GRACE_ESTATE;
  return add_method(srv, m);
}

int grace_grpc_server_listen(grace_grpc_server *srv, const char *addr) {
  return grace_http_server_listen(srv->http, addr);
}

int grace_grpc_server_listen_fd(grace_grpc_server *srv, int fd) {
  return grace_http_server_listen_fd(srv->http, fd);
}

int grace_grpc_server_port(grace_grpc_server *srv, unsigned index) {
  return grace_http_server_port(srv->http, index);
}

grace_http_server *grace_grpc_server_http(grace_grpc_server *srv) {
  return srv->http;
}

int grace_grpc_server_start(grace_grpc_server *srv) {
  int rv = grace_http_server_start(srv->http);
  if (rv == 0)
    srv->started = 1;
  return rv;
}

int grace_grpc_server_start_uv(grace_grpc_server *srv, uv_loop_t *loop) {
  if (srv == NULL)
    return GRACE_EINVAL;
  int rv = grace_http_server_start_uv(srv->http, loop);
  if (rv == 0)
    srv->started = 1;
  return rv;
}

grace_ctx *grace_grpc_server_stopping_ctx(grace_grpc_server *srv) {
  return grace_http_server_shutdown_ctx(srv->http);
}

static void http_drained(grace_http_server *http, void *data) {
  grace_grpc_server *srv = data;
  (void)http;
  if (srv->done != NULL)
    srv->done(srv, srv->done_data);
}

int grace_grpc_server_graceful_stop_begin(
    grace_grpc_server *srv, void (*done)(grace_grpc_server *srv, void *data),
    void *data) {
  if (srv == NULL)
    return GRACE_EINVAL;
  pthread_mutex_lock(&srv->lock);
  if (srv->stopping) {
    pthread_mutex_unlock(&srv->lock);
    return GRACE_ESHUTDOWN;
  }
  srv->stopping = 1;
  srv->done = done;
  srv->done_data = data;
  pthread_mutex_unlock(&srv->lock);
  /* NOT_SERVING to every Watch, which then ends: a long-lived health
   * stream must not hold the drain up. */
  notify_watches(srv, "*", 1);
  return grace_http_server_shutdown_begin(srv->http, http_drained, srv);
}

int grace_grpc_server_drained_fd(grace_grpc_server *srv) {
  return grace_http_server_drained_fd(srv->http);
}

int grace_grpc_server_graceful_stop(grace_grpc_server *srv, grace_ctx *ctx,
                                    int *cut) {
  if (srv != NULL && grace__http_server_on_loop(srv->http))
    return GRACE_EDEADLK; /* it would wait for the loop it stops */
  int rv = grace_grpc_server_graceful_stop_begin(srv, NULL, NULL);
  if (rv != 0 && rv != GRACE_ESHUTDOWN)
    return rv;
  if (cut != NULL)
    *cut = 0;
  rv = grace_http_server_shutdown(srv->http, ctx);
  if (rv == GRACE_ETIMEDOUT || rv == GRACE_ECANCELED) {
    int n = grace_grpc_server_stop(srv);
    if (cut != NULL)
      *cut = n;
  }
  return rv;
}

static void http_stopped(grace_http_server *http, int status, int cut,
                         void *data) {
  grace_grpc_server *srv = data;
  (void)http;
  if (srv->uv_done != NULL)
    srv->uv_done(srv, status, cut, srv->uv_done_data);
}

int grace_grpc_server_graceful_stop_uv(grace_grpc_server *srv,
                                       grace_duration timeout,
                                       grace_grpc_stop_cb done, void *data) {
  if (srv == NULL || timeout < 0)
    return GRACE_EINVAL;
  /* The checks of grace_http_server_shutdown_uv, before anything moves. */
  if (!srv->started || !grace__http_server_on_loop(srv->http) ||
      !srv->http->sv.set.external)
    return GRACE_ESTATE;
  if (srv->http->sv.uv_stop_asked)
    return GRACE_ESHUTDOWN;
  int rv = grace_grpc_server_graceful_stop_begin(srv, NULL, NULL);
  if (rv != 0 && rv != GRACE_ESHUTDOWN)
    return rv;
  srv->uv_done = done;
  srv->uv_done_data = data;
  return grace_http_server_shutdown_uv(srv->http, timeout, http_stopped, srv);
}

int grace_grpc_server_stop(grace_grpc_server *srv) {
  pthread_mutex_lock(&srv->lock);
  srv->stopping = 1;
  pthread_mutex_unlock(&srv->lock);
  return grace_http_server_close(srv->http);
}

void grace_grpc_server_free(grace_grpc_server *srv) {
  if (srv == NULL)
    return;
  grace_http_server_free(srv->http);
  for (size_t i = 0; i < srv->nmethods; i++)
    free(srv->methods[i].path);
  free(srv->methods);
  for (size_t i = 0; i < srv->nhealth; i++)
    free(srv->health[i].service);
  free(srv->health);
  pthread_mutex_destroy(&srv->lock);
  free(srv);
}
