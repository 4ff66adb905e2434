/*
 * The handlers of the exchange tests, shared by tests/unit/
 * test_http_exchange.c (HTTP/1.1 over raw sockets) and tests/programs/
 * http-exchange-server.c (HTTP/1.1 and HTTP/2 from real clients), so both
 * versions run the very same handler code.
 *
 *   /stream?n=N&piece=P   N bytes of pattern in P-byte writes, written until
 *                         GRACE_EBUSY and resumed from the writable
 *                         callback, then two trailers (x-trailer-one: 1,
 *                         x-trailer-bytes: N)
 *   /ww?count=C&size=S    from a grace_http_run_blocking thread: C writes of
 *                         S bytes with grace_http_response_write_wait
 *   /ww-until?ms=M        from a thread: 64 KiB writes with write_wait until
 *                         one fails (ctx of M ms, 0: no ctx); the result is
 *                         left in exch_stats
 *   /upload   (streamed)  echoes the request body as it arrives, pausing it
 *                         every 64 KiB (resumed from a uv timer) and while a
 *                         write waits; trailer x-body-bytes
 *   /upload-hold (streamed) pauses at the first piece until
 *                         exch_stats.release is set, checks the pattern;
 *                         answers "bytes=N order=ok"
 *   /framing?mode=respond|stream  sets Content-Length: 999,
 *                         Transfer-Encoding: chunked, Connection: keep-alive
 *                         and X-Custom: yes, answers "hello"
 *   /status?code=N&mode=respond|stream  answers N with body "body!"
 *   /headers              "name: value\n" per field (header_next), then
 *                         "peer: <ip>\n"
 *
 * The pattern: byte i of a body is exch_pat(i).
 */
#ifndef GRACE_TESTS_EXCHANGE_HANDLERS_H
#define GRACE_TESTS_EXCHANGE_HANDLERS_H

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "grace/http.h"

static inline unsigned char exch_pat(uint64_t i) {
  return (unsigned char)((i % 251) ^ (i >> 12));
}

/* What the handlers saw, for the in-process tests. */
typedef struct exch_stats_t {
  atomic_ullong accepted;    /* /stream: body bytes accepted by write */
  atomic_ullong eagains;     /* /stream: writes refused with GRACE_EBUSY */
  atomic_int ww_done;        /* /ww-until finished */
  atomic_int ww_result;      /* /ww-until: the error that ended it */
  atomic_ullong ww_accepted; /* /ww-until: bytes accepted */
  atomic_ullong seen;        /* /upload-hold: body bytes delivered */
  atomic_int paused;         /* /upload-hold: paused at its first piece */
  atomic_int release;        /* /upload-hold: may resume */
  atomic_int ends;           /* ends delivered to /upload and /upload-hold */
} exch_stats_t;

static exch_stats_t exch_stats;

static long exch_query_long(grace_http_request *req, const char *key,
                            long def) {
  char buf[32];
  if (grace_http_request_query(req, key, buf, sizeof(buf)) < 0)
    return def;
  return strtol(buf, NULL, 10);
}

/* ---- /stream ------------------------------------------------------------- */

typedef struct exch_stream {
  uint64_t total, sent;
  size_t piece;
  unsigned char *buf;
  int in_pump;
} exch_stream;

static void exch_stream_free_end(grace_http_request *req, exch_stream *s) {
  free(s->buf);
  free(s);
  grace_http_response_end(req);
}

static void exch_stream_pump(grace_http_request *req, void *data) {
  exch_stream *s = data;
  s->in_pump = 1;
  while (s->sent < s->total) {
    size_t n = s->piece;
    if (n > s->total - s->sent)
      n = (size_t)(s->total - s->sent);
    for (size_t i = 0; i < n; i++)
      s->buf[i] = exch_pat(s->sent + i);
    int rv = grace_http_response_write(req, s->buf, n);
    if (rv == GRACE_EBUSY) {
      atomic_fetch_add(&exch_stats.eagains, 1);
      s->in_pump = 0;
      return; /* exch_stream_pump runs again once writable */
    }
    if (rv != 0) {
      exch_stream_free_end(req, s);
      return;
    }
    s->sent += n;
    atomic_fetch_add(&exch_stats.accepted, n);
  }
  char v[32];
  snprintf(v, sizeof(v), "%llu", (unsigned long long)s->total);
  grace_http_response_trailer(req, "X-Trailer-One", "1");
  grace_http_response_trailer(req, "X-Trailer-Bytes", v);
  exch_stream_free_end(req, s);
}

/* The client left: a pump waiting for the writable callback ends here; a
 * pump on the stack sees its write fail and ends itself. */
static void exch_stream_cancel(grace_http_request *req, void *data) {
  exch_stream *s = data;
  if (!s->in_pump)
    exch_stream_free_end(req, s);
}

static void exch_stream_handler(grace_http_request *req, void *data) {
  (void)data;
  exch_stream *s = calloc(1, sizeof(*s));
  s->total = (uint64_t)exch_query_long(req, "n", 4 << 20);
  s->piece = (size_t)exch_query_long(req, "piece", 1024);
  s->buf = malloc(s->piece);
  grace_http_response_header(req, "Content-Type", "application/octet-stream");
  grace_http_response_on_writable(req, exch_stream_pump, s);
  grace_http_request_on_cancel(req, exch_stream_cancel, s);
  if (grace_http_response_start(req, 200) != 0) {
    exch_stream_free_end(req, s);
    return;
  }
  exch_stream_pump(req, s);
}

/* ---- /ww and /ww-until ----------------------------------------------------
 */

static void exch_ww_thread(grace_http_request *req, void *data) {
  (void)data;
  long count = exch_query_long(req, "count", 200);
  long size = exch_query_long(req, "size", 16384);
  unsigned char *buf = malloc((size_t)size);
  uint64_t off = 0;
  for (long i = 0; i < count; i++) {
    for (long j = 0; j < size; j++)
      buf[j] = exch_pat(off + (uint64_t)j);
    if (grace_http_response_write_wait(req, buf, (size_t)size, NULL) != 0)
      break;
    off += (uint64_t)size;
  }
  free(buf);
  grace_http_response_end(req);
}

static void exch_ww_handler(grace_http_request *req, void *data) {
  if (grace_http_run_blocking(req, exch_ww_thread, data) != 0)
    grace_http_respond(req, 500, NULL, 0);
}

static void exch_ww_until_thread(grace_http_request *req, void *data) {
  (void)data;
  long ms = exch_query_long(req, "ms", 0);
  grace_ctx *ctx = NULL;
  static unsigned char buf[65536];
  int rv;
  if (ms > 0 && grace_ctx_with_timeout(grace_ctx_background(),
                                       ms * GRACE_MILLISECOND, &ctx) != 0)
    ctx = NULL;
  for (uint64_t i = 0; i < sizeof(buf); i++)
    buf[i] = exch_pat(i);
  do {
    rv = grace_http_response_write_wait(req, buf, sizeof(buf), ctx);
    if (rv == 0)
      atomic_fetch_add(&exch_stats.ww_accepted, sizeof(buf));
  } while (rv == 0);
  atomic_store(&exch_stats.ww_result, rv);
  atomic_store(&exch_stats.ww_done, 1);
  if (ctx != NULL)
    grace_ctx_unref(ctx);
  grace_http_response_end(req);
}

static void exch_ww_until_handler(grace_http_request *req, void *data) {
  if (grace_http_run_blocking(req, exch_ww_until_thread, data) != 0)
    grace_http_respond(req, 500, NULL, 0);
}

/* ---- /upload: a streamed body echoed ---------------------------------------
 */

typedef struct exch_echo {
  uv_timer_t timer;
  grace_http_request *req;
  uint64_t got;
  uint64_t since_pause;
  unsigned char *held; /* a piece write refused, to write when writable */
  size_t held_len;
  int timer_paused;
  int cancelled;
  int end_pending; /* the end came with (or after) a held piece */
} exch_echo;

static void exch_echo_closed(uv_handle_t *h) { free(h->data); }

static void exch_echo_finish(exch_echo *e) {
  char v[32];
  grace_http_request *req = e->req;
  snprintf(v, sizeof(v), "%llu", (unsigned long long)e->got);
  grace_http_response_trailer(req, "X-Body-Bytes", v);
  uv_close((uv_handle_t *)&e->timer, exch_echo_closed);
  grace_http_response_end(req);
}

static void exch_echo_writable(grace_http_request *req, void *data) {
  exch_echo *e = data;
  int rv = grace_http_response_write(req, e->held, e->held_len);
  if (rv == GRACE_EBUSY)
    return;
  free(e->held);
  e->held = NULL;
  if (e->end_pending) {
    exch_echo_finish(e);
    return;
  }
  if (!e->timer_paused)
    grace_http_request_resume(req);
}

static void exch_echo_timer(uv_timer_t *t) {
  exch_echo *e = t->data;
  e->timer_paused = 0;
  if (e->held == NULL)
    grace_http_request_resume(e->req);
}

static int exch_echo_body(grace_http_request *req, const void *p, size_t n,
                          int end, void *user) {
  exch_echo *e = user;
  e->got += n;
  e->since_pause += n;
  if (end)
    atomic_fetch_add(&exch_stats.ends, 1);
  int rv = n > 0 ? grace_http_response_write(req, p, n) : 0;
  if (e->cancelled)
    return 1;
  if (rv == GRACE_EBUSY) {
    e->held = malloc(n);
    memcpy(e->held, p, n);
    e->held_len = n;
    e->end_pending = end;
    return 1; /* exch_echo_writable resumes */
  }
  if (end) {
    exch_echo_finish(e);
    return 0;
  }
  if (e->since_pause >= 65536) {
    e->since_pause = 0;
    e->timer_paused = 1;
    uv_timer_start(&e->timer, exch_echo_timer, 2, 0);
    return 1;
  }
  return 0;
}

static void exch_echo_cancel(grace_http_request *req, void *data) {
  exch_echo *e = data;
  e->cancelled = 1;
  free(e->held);
  e->held = NULL;
  uv_close((uv_handle_t *)&e->timer, exch_echo_closed);
  grace_http_request_abandon(req);
}

static void exch_upload_handler(grace_http_request *req, void *data) {
  (void)data;
  exch_echo *e = calloc(1, sizeof(*e));
  e->req = req;
  uv_timer_init(grace_http_request_loop(req), &e->timer);
  e->timer.data = e;
  grace_http_request_on_cancel(req, exch_echo_cancel, e);
  grace_http_response_on_writable(req, exch_echo_writable, e);
  grace_http_response_header(req, "Content-Type", "application/octet-stream");
  grace_http_request_read(req, exch_echo_body, e);
}

/* ---- /upload-hold: paused until released -----------------------------------
 */

typedef struct exch_hold {
  uv_timer_t timer;
  grace_http_request *req;
  uint64_t got;
  int bad;
} exch_hold;

static void exch_hold_closed(uv_handle_t *h) { free(h->data); }

static void exch_hold_timer(uv_timer_t *t) {
  exch_hold *s = t->data;
  if (!atomic_load(&exch_stats.release))
    return;
  uv_timer_stop(t);
  grace_http_request_resume(s->req);
}

static int exch_hold_body(grace_http_request *req, const void *p, size_t n,
                          int end, void *user) {
  exch_hold *s = user;
  const unsigned char *b = p;
  for (size_t i = 0; i < n; i++)
    if (b[i] != exch_pat(s->got + i))
      s->bad = 1;
  s->got += n;
  atomic_store(&exch_stats.seen, s->got);
  if (end) {
    char body[64];
    atomic_fetch_add(&exch_stats.ends, 1);
    int len = snprintf(body, sizeof(body), "bytes=%llu order=%s",
                       (unsigned long long)s->got, s->bad ? "bad" : "ok");
    uv_close((uv_handle_t *)&s->timer, exch_hold_closed);
    grace_http_respond(req, 200, body, (size_t)len);
    return 0;
  }
  if (!atomic_load(&exch_stats.release) && !atomic_load(&exch_stats.paused)) {
    atomic_store(&exch_stats.paused, 1);
    uv_timer_start(&s->timer, exch_hold_timer, 5, 5);
    return 1;
  }
  return 0;
}

static void exch_hold_cancel(grace_http_request *req, void *data) {
  exch_hold *s = data;
  uv_close((uv_handle_t *)&s->timer, exch_hold_closed);
  grace_http_request_abandon(req);
}

static void exch_upload_hold_handler(grace_http_request *req, void *data) {
  (void)data;
  exch_hold *s = calloc(1, sizeof(*s));
  s->req = req;
  uv_timer_init(grace_http_request_loop(req), &s->timer);
  s->timer.data = s;
  grace_http_request_on_cancel(req, exch_hold_cancel, s);
  grace_http_request_read(req, exch_hold_body, s);
}

/* ---- framing, status, headers ----------------------------------------------
 */

static int exch_mode_stream(grace_http_request *req) {
  char mode[16];
  return grace_http_request_query(req, "mode", mode, sizeof(mode)) >= 0 &&
         strcmp(mode, "stream") == 0;
}

static void exch_answer(grace_http_request *req, int status, const char *body) {
  if (!exch_mode_stream(req)) {
    grace_http_respond(req, status, body, strlen(body));
    return;
  }
  if (grace_http_response_start(req, status) == 0)
    grace_http_response_write(req, body, strlen(body));
  grace_http_response_end(req);
}

static void exch_framing_handler(grace_http_request *req, void *data) {
  (void)data;
  grace_http_response_header(req, "Content-Length", "999");
  grace_http_response_header(req, "Transfer-Encoding", "chunked");
  grace_http_response_header(req, "Connection", "keep-alive");
  grace_http_response_header(req, "X-Custom", "yes");
  exch_answer(req, 200, "hello");
}

static void exch_status_handler(grace_http_request *req, void *data) {
  (void)data;
  exch_answer(req, (int)exch_query_long(req, "code", 200), "body!");
}

static void exch_headers_handler(grace_http_request *req, void *data) {
  (void)data;
  char out[8192];
  size_t at = 0, iter = 0;
  const char *name, *value;
  while (grace_http_request_header_next(req, &iter, &name, &value) &&
         at < sizeof(out) - 512)
    at += (size_t)snprintf(out + at, sizeof(out) - at, "%s: %s\n", name, value);
  struct sockaddr_storage ss;
  socklen_t len = sizeof(ss);
  char ip[INET6_ADDRSTRLEN] = "?";
  int port = 0;
  if (grace_http_request_peer(req, (struct sockaddr *)&ss, &len) == 0) {
    if (ss.ss_family == AF_INET) {
      struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
      inet_ntop(AF_INET, &sin->sin_addr, ip, sizeof(ip));
      port = ntohs(sin->sin_port);
    } else if (ss.ss_family == AF_INET6) {
      struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;
      inet_ntop(AF_INET6, &sin6->sin6_addr, ip, sizeof(ip));
      port = ntohs(sin6->sin6_port);
    }
  }
  at += (size_t)snprintf(out + at, sizeof(out) - at, "peer: %s %d\n", ip, port);
  grace_http_respond(req, 200, out, at);
}

/* Routes every handler above on |srv|.  Returns 0 or the first error. */
static int exch_routes(grace_http_server *srv) {
  int rv;
  if ((rv = grace_http_server_handle(srv, "/stream", exch_stream_handler,
                                     NULL)) ||
      (rv = grace_http_server_handle(srv, "/ww", exch_ww_handler, NULL)) ||
      (rv = grace_http_server_handle(srv, "/ww-until", exch_ww_until_handler,
                                     NULL)) ||
      (rv = grace_http_server_handle_stream(srv, "/upload", exch_upload_handler,
                                            NULL)) ||
      (rv = grace_http_server_handle_stream(srv, "/upload-hold",
                                            exch_upload_hold_handler, NULL)) ||
      (rv = grace_http_server_handle(srv, "/framing", exch_framing_handler,
                                     NULL)) ||
      (rv = grace_http_server_handle(srv, "/status", exch_status_handler,
                                     NULL)) ||
      (rv = grace_http_server_handle(srv, "/headers", exch_headers_handler,
                                     NULL)))
    return rv;
  return 0;
}

#endif /* GRACE_TESTS_EXCHANGE_HANDLERS_H */
