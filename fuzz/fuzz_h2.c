/*
 * libFuzzer target for src/http/h2.c and h2_stream.c, the sans-I/O HTTP/2
 * server.
 *
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -Iinclude -Isrc \
 *     fuzz/fuzz_h2.c src/http/h2.c src/http/h2_stream.c \
 *     $(pkg-config --cflags --libs libnghttp2) \
 *     -o fuzz_h2
 *   ./fuzz_h2 -max_total_time=60 fuzz/corpus/h2
 *
 * (The clang sanitizer build of CMake builds it too, as fuzz_h2, and runs
 * it briefly over fuzz/corpus/h2.)
 *
 * Input: byte 0 picks the connection options and the application's
 * behaviour, byte 1 seeds how input past the schedule is chunked, byte 2
 * is the number n (at most 64) of schedule steps that follow, two bytes
 * each; the rest is what a client sends after its preface, which the
 * target sends first.  Step i says how many bytes the i-th
 * grace__h2_recv gets (its first byte plus one) and what the application
 * does then (its second byte: see act()): respond, stream, end, reset,
 * consume, begin or time out the shutdown, force the close, or pull no
 * output this turn; with bit 0x10 the action runs instead inside the next
 * callback, so re-entrant calls are explored.  Past the schedule the input
 * is cut in pseudo-random chunks.  The seeds in fuzz/corpus/h2 are real
 * client conversations (SETTINGS, requests with bodies and trailers, PING,
 * WINDOW_UPDATE, RST_STREAM, a big header block) from an nghttp2 client,
 * with empty schedules but one.
 *
 * The application answers in every way the API allows (whole responses,
 * streamed bodies with trailers, trailers-only, resets, holding streams,
 * manual consumption, graceful shutdown and its timeout, force close from
 * inside a callback), and checks the contract: every stream it is given
 * is closed exactly once (its state is freed in on_stream_close, so a
 * second close or a late callback is a use after free, and a missing one
 * is a leak), no callback arrives for a stream after its close, the body
 * arrives only between the headers and the end, and the stream count
 * never falls below the streams the application holds.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "http/h2.h"

#define CHECK(cond)                                                            \
  do {                                                                         \
    if (!(cond))                                                               \
      abort();                                                                 \
  } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_LIST 512
#define MAX_STEPS 64

typedef struct req req;

typedef struct app {
  grace__h2 *h2;
  unsigned mode;
  size_t held; /* streams the application holds */
  size_t events;
  req *list[MAX_LIST]; /* the held streams the actions pick from */
  size_t nlist;
  int pending; /* an action for the next callback, or -1 */
  int in_action;
} app;

struct req {
  grace__h2_stream *s;
  unsigned what;
  size_t body;
  size_t unconsumed;
  int ended;
  size_t at; /* index in app.list, or MAX_LIST */
};

static void list_remove(app *a, req *r) {
  if (r->at == MAX_LIST)
    return;
  CHECK(r->at < a->nlist && a->list[r->at] == r);
  a->list[r->at] = a->list[--a->nlist];
  a->list[r->at]->at = r->at;
  r->at = MAX_LIST;
}

/*
 * The application's action |op| (a schedule byte): bits 0-3 the action,
 * bits 5-7 which held stream.  Returns 1 when the caller should not pull
 * the output this turn.  Every return value is allowed; only crashes and
 * broken contracts (CHECK) count.
 */
static int act(app *a, unsigned op) {
  static const grace__h2_header h[] = {{"content-type", "text/plain"}};
  static const grace__h2_header tr[] = {{"grpc-status", "13"}};
  req *r = a->nlist > 0 ? a->list[(op >> 5) % a->nlist] : NULL;
  int skip = 0;
  a->in_action++;
  switch (op & 0x0f) {
  case 1:
    if (r != NULL)
      grace__h2_respond(r->s, 200, h, 1, "body", 4);
    break;
  case 2:
    if (r != NULL) {
      grace__h2_respond_headers(r->s, 200, h, 1);
      grace__h2_send_data(r->s, "more", 4, 0);
    }
    break;
  case 3:
    if (r != NULL)
      grace__h2_send_data(r->s, "end", 3, 1);
    break;
  case 4:
    if (r != NULL)
      grace__h2_send_trailers(r->s, tr, 1);
    break;
  case 5:
    if (r != NULL)
      grace__h2_reset(r->s, op >> 5);
    break;
  case 6:
    if (r != NULL && r->unconsumed > 0 &&
        grace__h2_stream_consume(r->s, r->unconsumed) == 0)
      r->unconsumed = 0;
    break;
  case 7:
    grace__h2_shutdown_begin(a->h2);
    break;
  case 8:
    grace__h2_shutdown_timeout(a->h2);
    break;
  case 9:
    grace__h2_force_close(a->h2, op >> 5);
    break;
  case 10:
    skip = 1;
    break;
  case 11:
    if (r != NULL)
      grace__h2_respond_trailers_only(r->s, 503, tr, 1);
    break;
  default:
    break;
  }
  a->in_action--;
  return skip;
}

/* Runs the action saved for the next callback, once. */
static void pending(app *a) {
  int op = a->pending;
  if (op < 0 || a->in_action > 0)
    return;
  a->pending = -1;
  act(a, (unsigned)op);
}

static void answer(app *a, req *r) {
  static const grace__h2_header ct[] = {{"content-type", "application/grpc"},
                                        {"X-Mixed-Case", "v"}};
  static const grace__h2_header tr[] = {{"grpc-status", "0"},
                                        {"grpc-message", "ok"}};
  static const uint8_t msg[] = {0, 0, 0, 0, 3, 'a', 'b', 'c'};
  switch (r->what % 6) {
  case 0:
    grace__h2_respond(r->s, 200, ct, 2, "hello", 5);
    break;
  case 1:
    if (grace__h2_respond_headers(r->s, 200, ct, 1) == 0) {
      grace__h2_send_data(r->s, msg, sizeof(msg), 0);
      grace__h2_send_trailers(r->s, tr, 2);
    }
    break;
  case 2:
    grace__h2_respond_trailers_only(r->s, 200, tr, 2);
    break;
  case 3:
    grace__h2_reset(r->s, NGHTTP2_CANCEL);
    break;
  case 4:
    if (grace__h2_respond_headers(r->s, 200, NULL, 0) == 0)
      grace__h2_send_data(r->s, msg, sizeof(msg), 1);
    break;
  default:
    break; /* held until the connection ends */
  }
  (void)a;
}

static void on_headers(grace__h2_stream *s, void *user) {
  app *a = user;
  req *r = calloc(1, sizeof(*r));
  const char *n, *v;
  size_t it = 0;
  CHECK(r != NULL);
  r->s = s;
  r->what = (unsigned)grace__h2_stream_id(s) / 2 + a->mode;
  r->at = MAX_LIST;
  if (a->nlist < MAX_LIST) {
    r->at = a->nlist;
    a->list[a->nlist++] = r;
  }
  grace__h2_stream_set_data(s, r);
  a->held++;
  a->events++;
  CHECK(grace__h2_stream_count(a->h2) >= a->held);
  CHECK(grace__h2_stream_method(s)[0] != '\0');
  CHECK(grace__h2_stream_path(s) != NULL);
  CHECK(grace__h2_stream_authority(s) != NULL);
  while (grace__h2_stream_header_next(s, &it, &n, &v))
    CHECK(n[0] != ':' && grace__h2_stream_header(s, n) != NULL);
  if (r->what % 3 == 0)
    answer(a, r); /* at once; otherwise at the end of the request */
  if ((a->mode & 0x30) == 0x10 && a->events == 2)
    grace__h2_shutdown_begin(a->h2);
  pending(a);
}

static void on_data(grace__h2_stream *s, const uint8_t *d, size_t len,
                    void *user) {
  app *a = user;
  req *r = grace__h2_stream_data(s);
  CHECK(r != NULL && r->s == s && !r->ended);
  (void)d;
  r->body += len;
  a->events++;
  /* Manual consumption: at once on even streams, by action on odd ones. */
  if ((a->mode & 0x40) && (grace__h2_stream_id(s) & 2) == 0)
    grace__h2_stream_consume(s, len);
  else if (a->mode & 0x40)
    r->unconsumed += len;
  if ((a->mode & 0x30) == 0x30 && a->events == 6)
    grace__h2_force_close(a->h2, NGHTTP2_INTERNAL_ERROR);
  pending(a);
}

static void on_end(grace__h2_stream *s, void *user) {
  app *a = user;
  req *r = grace__h2_stream_data(s);
  CHECK(r != NULL && r->s == s && !r->ended);
  r->ended = 1;
  a->events++;
  if (r->what % 3 != 0)
    answer(a, r);
  pending(a);
}

static void on_close(grace__h2_stream *s, uint32_t code, void *user) {
  app *a = user;
  req *r = grace__h2_stream_data(s);
  (void)code;
  CHECK(r != NULL && r->s == s);
  CHECK(a->held > 0);
  a->held--;
  list_remove(a, r);
  /* Still valid here, and closed to every call. */
  CHECK(grace__h2_send_data(s, "x", 1, 0) == GRACE_ECLOSED);
  grace__h2_stream_set_data(s, NULL);
  free(r);
  pending(a);
}

static void on_ready(grace__h2_stream *s, void *user) {
  app *a = user;
  req *r = grace__h2_stream_data(s);
  CHECK(r != NULL && r->s == s);
  pending(a);
}

static const grace__h2_callbacks cbs = {on_headers, on_data, on_end, on_close,
                                        on_ready};

static void drain_output(grace__h2 *h2) {
  const uint8_t *p;
  size_t n;
  while (grace__h2_output(h2, &p, &n) == 0 && n > 0)
    CHECK(p != NULL);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static app a;
  grace__h2_options o;
  uint32_t seed;
  size_t off, nsteps, step = 0;
  const uint8_t *steps;

  if (size < 3)
    return 0;
  memset(&a, 0, sizeof(a));
  memset(&o, 0, sizeof(o));
  a.mode = data[0];
  a.pending = -1;
  seed = data[1] * 2654435761u + 1;
  nsteps = data[2] % (MAX_STEPS + 1);
  if (size < 3 + 2 * nsteps)
    return 0;
  steps = data + 3;
  off = 3 + 2 * nsteps;
  o.manual_consume = (a.mode & 0x40) != 0;
  if (a.mode & 0x80) {
    /* Small limits, so the fuzzer reaches 431, 413, EBUSY and refusals. */
    o.max_concurrent_streams = 3;
    o.initial_window = 1024;
    o.max_header_list = 256;
    o.max_request_body = 100;
    o.max_send_buffer = 16;
  }
  CHECK(grace__h2_new(&cbs, &a, &o, &a.h2) == 0);
  CHECK(grace__h2_recv(a.h2, (const uint8_t *)GRACE__H2_PREFACE,
                       GRACE__H2_PREFACE_LEN) == GRACE__H2_PREFACE_LEN);
  drain_output(a.h2);
  while (off < size || step < nsteps) {
    size_t chunk;
    ssize_t rv;
    int skip = 0;
    if (step < nsteps) {
      chunk = (size_t)steps[2 * step] + 1;
    } else {
      seed = seed * 1103515245u + 12345u;
      chunk = 1 + (seed >> 16) % 97;
    }
    if (chunk > size - off)
      chunk = size - off;
    rv = grace__h2_recv(a.h2, chunk > 0 ? data + off : NULL, chunk);
    CHECK(rv == (ssize_t)chunk || rv < 0);
    if (step < nsteps) {
      unsigned op = steps[2 * step + 1];
      step++;
      if (op & 0x10)
        a.pending = (int)(op & ~0x10u);
      else
        skip = act(&a, op);
    }
    if (!skip)
      drain_output(a.h2);
    CHECK(grace__h2_stream_count(a.h2) >= a.held);
    if (rv < 0 || grace__h2_want_io(a.h2) == 0)
      break;
    off += chunk;
  }
  if ((a.mode & 0x30) == 0x20) {
    grace__h2_shutdown_begin(a.h2);
    drain_output(a.h2);
  }
  grace__h2_shutdown_timeout(a.h2);
  drain_output(a.h2);
  if (grace__h2_is_drained(a.h2))
    CHECK(grace__h2_stream_count(a.h2) == 0);
  grace__h2_free(a.h2); /* closes, and frees, what is still held */
  CHECK(a.held == 0);
  return 0;
}
