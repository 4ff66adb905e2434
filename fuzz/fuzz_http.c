/*
 * libFuzzer target for HTTP/1.1 (and its switch to HTTP/2) as a sans-I/O
 * protocol on a memory connection (net/conn.h): no socket, no loop, no
 * thread, so every input is replayed exactly.
 *
 * The input is a schedule, then the client's bytes:
 *
 *   byte 0      mode: bits 0-1 how handlers answer (0 at once, 1 later,
 *               2 a streamed answer, 3 abandon); bit 2 a "socket" that
 *               takes only 64 bytes until the peer reads (writes queue);
 *               bit 3 handlers pause streamed bodies after each piece
 *   byte 1      number of steps (at most 64), two bytes each:
 *                 size of the next piece of input fed (0: none);
 *                 an action: answer the held requests, let the peer read
 *                 what was written, resume paused bodies, begin a graceful
 *                 shutdown, the peer's EOF, or force the connection
 *   the rest    the client's bytes, fed by the steps, then what is left in
 *               one piece, then EOF
 *
 * ASan/UBSan catch memory errors in the parser glue, pipelining, body
 * framing, limits, re-entrant answers and error paths; the final checks
 * catch a connection or request that is never released.
 *
 *   cmake -B build-asan -DGRACE_SANITIZE=ON (with CC=clang) builds it;
 *   ./build-asan/tests/fuzz_http -max_total_time=300 NEW_DIR fuzz/corpus/http
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "grace/http.h"
#include "http/internal.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_HELD 16

static grace_http_server *srv;
static unsigned mode;
static grace_http_request *held[MAX_HELD];
static size_t nheld;
static grace_http_request *paused[MAX_HELD];
static size_t npaused;

static void forget(grace_http_request **list, size_t *n,
                   grace_http_request *req) {
  for (size_t i = 0; i < *n; i++)
    if (list[i] == req) {
      list[i] = list[--*n];
      return;
    }
}

/* Answers |req| the way the mode says (at once, or when asked). */
static void answer(grace_http_request *req) {
  size_t len;
  const void *body = grace_http_request_body(req, &len);
  forget(paused, &npaused, req);
  switch (mode & 3) {
  case 2:
    grace_http_response_header(req, "X-Mode", "stream");
    (void)grace_http_response_write(req, "piece one,", 10);
    (void)grace_http_response_write(req, body, len);
    grace_http_response_trailer(req, "X-Done", "1");
    grace_http_response_end(req);
    break;
  case 3:
    grace_http_request_abandon(req);
    break;
  default:
    grace_http_response_header(req, "Content-Length", "7"); /* ignored */
    grace_http_respond(req, len > 0 ? 200 : 204, body, len);
    break;
  }
}

static void on_cancel(grace_http_request *req, void *data) {
  (void)data;
  forget(held, &nheld, req);
  forget(paused, &npaused, req);
  grace_http_request_abandon(req);
}

static void hold_or_answer(grace_http_request *req) {
  if ((mode & 3) == 1 && nheld < MAX_HELD) {
    held[nheld++] = req;
    grace_http_request_on_cancel(req, on_cancel, NULL);
    return;
  }
  answer(req);
}

static void echo(grace_http_request *req, void *data) {
  char q[64];
  size_t iter = 0;
  const char *name, *value;
  (void)data;
  grace_http_request_query(req, "q", q, sizeof(q));
  grace_http_request_header(req, "Host");
  while (grace_http_request_header_next(req, &iter, &name, &value))
    ;
  hold_or_answer(req);
}

static int on_body(grace_http_request *req, const void *p, size_t n, int end,
                   void *data) {
  (void)p;
  (void)n;
  (void)data;
  if (end) {
    hold_or_answer(req);
    return 0;
  }
  if ((mode & 8) && npaused < MAX_HELD) {
    paused[npaused++] = req;
    return 1;
  }
  return 0;
}

static void stream(grace_http_request *req, void *data) {
  (void)data;
  grace_http_request_on_cancel(req, on_cancel, NULL);
  grace_http_request_read(req, on_body, NULL);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  grace_http_options opts;
  (void)argc;
  (void)argv;
  grace_http_options_init(&opts);
  opts.loops = 1;
  opts.max_header_bytes = 4096;
  opts.max_body_bytes = 8192;
  if (grace_http_server_new(&opts, &srv) != 0 ||
      grace_http_server_handle(srv, "/", echo, NULL) != 0 ||
      grace_http_server_handle_stream(srv, "/s", stream, NULL) != 0)
    abort();
  return 0;
}

static void act(grace__conn *c, uint8_t action) {
  size_t len;
  switch (action % 8) {
  case 0: /* the handler answers what it held */
    while (nheld > 0) {
      grace_http_request *req = held[--nheld];
      answer(req);
    }
    break;
  case 1: /* the peer reads what was written */
    grace__conn_mem_output(c, &len);
    grace__conn_mem_take(c, len);
    break;
  case 2: /* a paused body goes on */
    while (npaused > 0)
      grace_http_request_resume(paused[--npaused]);
    break;
  case 3:
    grace__conn_shutdown(c);
    break;
  case 4:
    grace__conn_mem_feed(c, NULL, 0);
    break;
  case 5:
    grace__conn_force(c);
    break;
  default:
    break;
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 2)
    return 0;
  mode = data[0];
  size_t steps = data[1] % 65;
  data += 2;
  size -= 2;
  const uint8_t *sched = data;
  if (size < steps * 2)
    steps = size / 2;
  data += steps * 2;
  size -= steps * 2;

  grace__conn *c = grace__conn_new_mem(&srv->sv.reg, &grace__h1_idle_proto, srv,
                                       (mode & 4) ? 64 : SIZE_MAX);
  if (c == NULL)
    return 0;
  for (size_t i = 0; i < steps; i++) {
    size_t n = sched[2 * i];
    if (n > size)
      n = size;
    if (n > 0 && !(c->flags & GRACE__CF_CLOSED))
      grace__conn_mem_feed(c, data, n);
    data += n;
    size -= n;
    act(c, sched[2 * i + 1]);
  }
  if (size > 0 && !(c->flags & GRACE__CF_CLOSED))
    grace__conn_mem_feed(c, data, size);
  act(c, 1);
  act(c, 2);
  act(c, 0);
  if (!(c->flags & GRACE__CF_CLOSED))
    grace__conn_mem_feed(c, NULL, 0);
  act(c, 0);
  /* Closing cancels what handlers still hold; they abandon it. */
  grace__conn_mem_free(c);
  while (nheld > 0)
    answer(held[--nheld]);
  npaused = 0;
  if (atomic_load(&srv->sv.reg.nconns) != 0 ||
      atomic_load(&srv->st_inflight) != 0) {
    fprintf(stderr, "a connection or a request was never released\n");
    abort();
  }
  return 0;
}
