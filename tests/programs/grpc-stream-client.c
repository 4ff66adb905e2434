/*
 * A gRPC client for the streaming tests (not an example): runs every kind
 * of call through grace_grpc_stream_* against the grpcio server of
 * tests/integration/test_grpc_client_streaming.py, and prints one line per
 * scenario, "PASS <name> <figures>" or "FAIL <name> <why>".  Exits 0 when
 * every scenario passed, 1 otherwise, 2 on bad usage.
 *
 *   grpc-stream-client <target> [scenario...]
 *
 * Scenarios (all by default): unary, status, server-stream, client-stream,
 * bidi, cancel, deadline, backpressure.  The methods it calls:
 *
 *   /test.Stream/Unary         echoes; "fail" aborts NOT_FOUND with a
 *                              message that needs percent-encoding
 *   /test.Stream/ServerStream  request "N": N replies "0".."N-1", then
 *                              trailer x-count: N
 *   /test.Stream/ClientStream  checks the messages are "0","1",... and
 *                              replies with their count
 *   /test.Stream/Bidi          echoes each message
 *   /test.Stream/Forever       replies "tick" forever (until cancelled)
 *   /test.Stream/Sleep         unary that sleeps 5 s
 *   /test.Stream/Stall         client stream that does not read until
 *                              /test.Stream/Release is called, then
 *                              replies with the count of messages
 *   /test.Stream/Cancelled     unary: "yes" once a Forever call has seen
 *                              its cancellation
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "grace/grpc_client.h"

#define SVC "/test.Stream/"

static grace_grpc_channel *ch;
static int failures;

static double secs(int64_t ns) { return (double)ns / 1e9; }

#if defined(__GNUC__)
__attribute__((format(printf, 2, 3)))
#endif
static int
fail(const char *name, const char *fmt, ...) {
  va_list ap;

  printf("FAIL %s ", name);
  va_start(ap, fmt);
  vprintf(fmt, ap);
  va_end(ap);
  printf("\n");
  fflush(stdout);
  failures++;
  return -1;
}

/* Finishes |s|, expecting |want|; returns 0 or -1 (and reports). */
static int finish(const char *name, grace_grpc_stream *s, uint32_t want,
                  char *text, size_t len) {
  grace_grpc_status st = GRACE_GRPC_STATUS_INIT;
  int rv = grace_grpc_stream_finish(s, &st);

  grace_grpc_status_format(&st, text, len);
  grace_grpc_status_clear(&st);
  if (rv < 0)
    return fail(name, "finish: %s", grace_strerror(rv));
  if ((uint32_t)rv != want)
    return fail(name, "status %s", text);
  return 0;
}

static int start(const char *name, const char *method, grace_ctx *ctx,
                 grace_grpc_stream **s) {
  int rv = grace_grpc_stream_start(ch, method, ctx, s);

  if (rv != 0)
    return fail(name, "start: %s", grace_strerror(rv));
  return 0;
}

static int send_str(const char *name, grace_grpc_stream *s, const char *str) {
  int rv = grace_grpc_stream_send(s, str, strlen(str), 10 * GRACE_SECOND);

  if (rv != 0)
    return fail(name, "send: %s", grace_strerror(rv));
  return 0;
}

/* Receives one message into |buf| as a string; 1, 0 at the end, or -1. */
static int recv_str(const char *name, grace_grpc_stream *s, char *buf,
                    size_t size) {
  uint8_t *m;
  size_t len;
  int rv = grace_grpc_stream_recv(s, &m, &len, 10 * GRACE_SECOND);

  if (rv < 0)
    return fail(name, "recv: %s", grace_strerror(rv));
  if (rv == 1) {
    if (len >= size)
      len = size - 1;
    memcpy(buf, m, len);
    buf[len] = '\0';
    free(m);
  }
  return rv;
}

static void unary(void) {
  const char *name = "unary";
  grace_grpc_stream *s;
  char buf[64], text[256];

  if (start(name, SVC "Unary", NULL, &s) != 0)
    return;
  if (send_str(name, s, "hello") == 0 && grace_grpc_stream_close_send(s) == 0 &&
      recv_str(name, s, buf, sizeof(buf)) == 1) {
    if (strcmp(buf, "hello") != 0)
      fail(name, "got %s", buf);
    else if (recv_str(name, s, buf, sizeof(buf)) != 0)
      fail(name, "a second message");
    else if (finish(name, s, GRACE_GRPC_OK, text, sizeof(text)) == 0)
      printf("PASS %s\n", name);
  }
  grace_grpc_stream_free(s);
}

static void status(void) {
  const char *name = "status";
  const grace_grpc_metadata *md;
  grace_grpc_stream *s;
  char buf[64], text[256];
  size_t n, i;
  int seen = 0;

  if (start(name, SVC "Unary", NULL, &s) != 0)
    return;
  if (send_str(name, s, "fail") == 0 && grace_grpc_stream_close_send(s) == 0 &&
      recv_str(name, s, buf, sizeof(buf)) == 0 &&
      finish(name, s, GRACE_GRPC_NOT_FOUND, text, sizeof(text)) == 0) {
    grace_grpc_stream_trailers(s, &md, &n);
    for (i = 0; i < n; i++)
      seen |= strcmp(md[i].name, "x-why") == 0 &&
              strcmp(md[i].value, "because") == 0;
    if (strcmp(text, "rpc error: code = NotFound desc = n\xc3\xb6t found: "
                     "100% \"gone\"") != 0)
      fail(name, "text %s", text);
    else if (!seen)
      fail(name, "no x-why trailer among %zu", n);
    else
      printf("PASS %s %s\n", name, text);
  }
  grace_grpc_stream_free(s);
}

static void server_stream(long count) {
  const char *name = "server-stream";
  const grace_grpc_metadata *md;
  grace_grpc_stream *s;
  char buf[64], want[32], text[256];
  int64_t t0 = grace_now();
  long i = 0;
  size_t n, k;
  int rv, seen = 0;

  if (start(name, SVC "ServerStream", NULL, &s) != 0)
    return;
  snprintf(buf, sizeof(buf), "%ld", count);
  if (send_str(name, s, buf) != 0 || grace_grpc_stream_close_send(s) != 0)
    goto out;
  while ((rv = recv_str(name, s, buf, sizeof(buf))) == 1) {
    snprintf(want, sizeof(want), "%ld", i);
    if (strcmp(buf, want) != 0) {
      fail(name, "message %ld is %s", i, buf);
      goto out;
    }
    i++;
  }
  if (rv < 0)
    goto out;
  if (i != count) {
    fail(name, "%ld messages", i);
    goto out;
  }
  if (finish(name, s, GRACE_GRPC_OK, text, sizeof(text)) != 0)
    goto out;
  grace_grpc_stream_trailers(s, &md, &n);
  snprintf(want, sizeof(want), "%ld", count);
  for (k = 0; k < n; k++)
    seen |=
        strcmp(md[k].name, "x-count") == 0 && strcmp(md[k].value, want) == 0;
  if (!seen) {
    fail(name, "no x-count trailer");
    goto out;
  }
  printf("PASS %s %ld messages in %.3f s, %.0f msg/s\n", name, count,
         secs(grace_now() - t0), (double)count / secs(grace_now() - t0));
out:
  grace_grpc_stream_free(s);
}

static void client_stream(long count) {
  const char *name = "client-stream";
  grace_grpc_stream *s;
  char buf[64], text[256];
  int64_t t0 = grace_now();
  long i;

  if (start(name, SVC "ClientStream", NULL, &s) != 0)
    return;
  for (i = 0; i < count; i++) {
    snprintf(buf, sizeof(buf), "%ld", i);
    if (send_str(name, s, buf) != 0)
      goto out;
  }
  grace_grpc_stream_close_send(s);
  if (recv_str(name, s, buf, sizeof(buf)) != 1)
    goto out;
  if (atol(buf) != count) {
    fail(name, "server counted %s", buf);
    goto out;
  }
  if (finish(name, s, GRACE_GRPC_OK, text, sizeof(text)) != 0)
    goto out;
  printf("PASS %s %ld messages in %.3f s, %.0f msg/s\n", name, count,
         secs(grace_now() - t0), (double)count / secs(grace_now() - t0));
out:
  grace_grpc_stream_free(s);
}

static void bidi(long rounds) {
  const char *name = "bidi";
  grace_grpc_stream *s;
  char buf[64], got[64], text[256];
  int64_t t0 = grace_now();
  long i;

  if (start(name, SVC "Bidi", NULL, &s) != 0)
    return;
  for (i = 0; i < rounds; i++) {
    snprintf(buf, sizeof(buf), "ping %ld", i);
    if (send_str(name, s, buf) != 0 || recv_str(name, s, got, sizeof(got)) != 1)
      goto out;
    if (strcmp(got, buf) != 0) {
      fail(name, "round %ld: %s", i, got);
      goto out;
    }
  }
  grace_grpc_stream_close_send(s);
  if (recv_str(name, s, got, sizeof(got)) != 0 ||
      finish(name, s, GRACE_GRPC_OK, text, sizeof(text)) != 0)
    goto out;
  printf("PASS %s %ld round trips in %.3f s, %.1f us each\n", name, rounds,
         secs(grace_now() - t0), secs(grace_now() - t0) * 1e6 / (double)rounds);
out:
  grace_grpc_stream_free(s);
}

static void cancel(void) {
  const char *name = "cancel";
  grace_grpc_stream *s;
  char buf[64], text[256];
  uint8_t *m;
  size_t len;
  int i, rv;

  if (start(name, SVC "Forever", NULL, &s) != 0)
    return;
  if (send_str(name, s, "go") != 0)
    goto out;
  grace_grpc_stream_close_send(s);
  for (i = 0; i < 10; i++) {
    if (recv_str(name, s, buf, sizeof(buf)) != 1) {
      fail(name, "message %d missing", i);
      goto out;
    }
  }
  grace_grpc_stream_cancel(s);
  rv = grace_grpc_stream_recv(s, &m, &len, GRACE_SECOND);
  if (rv != 0) {
    fail(name, "recv after cancel gives %d", rv);
    if (rv == 1)
      free(m);
    goto out;
  }
  if (grace_grpc_stream_send(s, "x", 1, 0) != GRACE_ECLOSED) {
    fail(name, "send after cancel is not ECLOSED");
    goto out;
  }
  if (finish(name, s, GRACE_GRPC_CANCELLED, text, sizeof(text)) != 0)
    goto out;
  grace_grpc_stream_free(s);
  s = NULL;
  /* The server saw it too: its handler ended on the RST_STREAM. */
  for (i = 0; i < 50; i++) {
    if (start(name, SVC "Cancelled", NULL, &s) != 0)
      return;
    if (send_str(name, s, "?") != 0)
      goto out;
    grace_grpc_stream_close_send(s);
    if (recv_str(name, s, buf, sizeof(buf)) != 1)
      goto out;
    grace_grpc_stream_free(s);
    s = NULL;
    if (strcmp(buf, "yes") == 0) {
      printf("PASS %s %s\n", name, text);
      return;
    }
    usleep(100 * 1000);
  }
  fail(name, "the server never saw the cancellation");
out:
  grace_grpc_stream_free(s);
}

static void deadline(void) {
  const char *name = "deadline";
  grace_grpc_stream *s;
  grace_ctx *ctx;
  char buf[64], text[256];
  int64_t t0 = grace_now(), took;

  if (grace_ctx_with_timeout(grace_ctx_background(), 300 * GRACE_MILLISECOND,
                             &ctx) != 0) {
    fail(name, "ctx");
    return;
  }
  if (start(name, SVC "Sleep", ctx, &s) != 0)
    goto out_ctx;
  if (send_str(name, s, "zzz") == 0) {
    grace_grpc_stream_close_send(s);
    if (recv_str(name, s, buf, sizeof(buf)) == 0 &&
        finish(name, s, GRACE_GRPC_DEADLINE_EXCEEDED, text, sizeof(text)) ==
            0) {
      took = grace_now() - t0;
      if (took > 2 * GRACE_SECOND)
        fail(name, "took %.3f s", secs(took));
      else
        printf("PASS %s %s after %.3f s\n", name, text, secs(took));
    }
  }
  grace_grpc_stream_free(s);
out_ctx:
  grace_ctx_cancel(ctx);
  grace_ctx_unref(ctx);
}

static void backpressure(void) {
  const char *name = "backpressure";
  static char chunk[64 * 1024];
  grace_grpc_stream *s, *r = NULL;
  char buf[64], text[256];
  long sent = 0, i;
  int rv;

  memset(chunk, 'b', sizeof(chunk));
  if (start(name, SVC "Stall", NULL, &s) != 0)
    return;
  /* The server does not read: its windows fill, then our queue. */
  for (;;) {
    rv = grace_grpc_stream_send(s, chunk, sizeof(chunk),
                                200 * GRACE_MILLISECOND);
    if (rv == GRACE_EBUSY)
      break;
    if (rv != 0) {
      fail(name, "send: %s", grace_strerror(rv));
      goto out;
    }
    if (++sent > 4096) {
      fail(name, "256 MiB accepted from a server that does not read");
      goto out;
    }
  }
  /* Still not now, without waiting. */
  if (grace_grpc_stream_send(s, chunk, sizeof(chunk), 0) != GRACE_EBUSY) {
    fail(name, "a send went through while the server still stalls");
    goto out;
  }
  if (start(name, SVC "Release", NULL, &r) != 0 || send_str(name, r, "go") ||
      grace_grpc_stream_close_send(r) != 0 ||
      recv_str(name, r, buf, sizeof(buf)) != 1 ||
      finish(name, r, GRACE_GRPC_OK, text, sizeof(text)) != 0)
    goto out;
  /* The server reads now: sending goes on. */
  for (i = 0; i < 64; i++) {
    rv = grace_grpc_stream_send(s, chunk, sizeof(chunk), 10 * GRACE_SECOND);
    if (rv != 0) {
      fail(name, "send after release: %s", grace_strerror(rv));
      goto out;
    }
  }
  grace_grpc_stream_close_send(s);
  if (recv_str(name, s, buf, sizeof(buf)) != 1)
    goto out;
  if (atol(buf) != sent + 64) {
    fail(name, "server got %s messages, sent %ld", buf, sent + 64);
    goto out;
  }
  if (finish(name, s, GRACE_GRPC_OK, text, sizeof(text)) != 0)
    goto out;
  printf("PASS %s blocked after %ld messages of 64 KiB (%.1f MiB in flight), "
         "resumed\n",
         name, sent, (double)sent / 16.0);
out:
  grace_grpc_stream_free(r);
  grace_grpc_stream_free(s);
}

int main(int argc, char **argv) {
  static const char *const all[] = {
      "unary", "status", "server-stream", "client-stream",
      "bidi",  "cancel", "deadline",      "backpressure"};
  const char *const *names = all;
  int n = (int)(sizeof(all) / sizeof(all[0])), i, rv;

  if (argc < 2) {
    fprintf(stderr, "usage: %s target [scenario...]\n", argv[0]);
    return 2;
  }
  if (argc > 2) {
    names = (const char *const *)(argv + 2);
    n = argc - 2;
  }
  rv = grace_grpc_channel_new(argv[1], NULL, &ch);
  if (rv != 0) {
    fprintf(stderr, "channel: %s\n", grace_strerror(rv));
    return 1;
  }
  for (i = 0; i < n; i++) {
    if (strcmp(names[i], "unary") == 0)
      unary();
    else if (strcmp(names[i], "status") == 0)
      status();
    else if (strcmp(names[i], "server-stream") == 0)
      server_stream(100000);
    else if (strcmp(names[i], "client-stream") == 0)
      client_stream(100000);
    else if (strcmp(names[i], "bidi") == 0)
      bidi(1000);
    else if (strcmp(names[i], "cancel") == 0)
      cancel();
    else if (strcmp(names[i], "deadline") == 0)
      deadline();
    else if (strcmp(names[i], "backpressure") == 0)
      backpressure();
    else
      fail(names[i], "unknown scenario");
    fflush(stdout);
  }
  grace_grpc_channel_free(ch);
  return failures > 0 ? 1 : 0;
}
