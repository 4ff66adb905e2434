/*
 * The seed's HTTP routes, shared by the example programs
 * (http-sleep-server, grace-demo-server):
 *
 *   GET /sleep?duration=5s   sleeps that long (without blocking anything
 *                            else), then answers "Welcome HTTP Server";
 *                            a bad duration answers 400 with Go's error
 *   GET /                    "Hello, World!\n" (a fixed body for benchmarks)
 *
 * Header-only on purpose: examples/CMakeLists.txt makes every
 * examples/<name>.c a program of its own, and these routes are a demo, not
 * library API.  Each program includes it once; the functions are static.
 */
#ifndef GRACE_EXAMPLES_SLEEP_HANDLER_H
#define GRACE_EXAMPLES_SLEEP_HANDLER_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "grace/duration.h"
#include "grace/http.h"

static const char welcome[] = "Welcome HTTP Server";

/* A /sleep request waiting for its timer. */
typedef struct sleeper {
  uv_timer_t timer;
  grace_http_request *req;
} sleeper;

static void sleeper_closed(uv_handle_t *handle) { free(handle->data); }

static void on_wake(uv_timer_t *timer) {
  sleeper *s = timer->data;
  grace_http_respond(s->req, 200, welcome, sizeof(welcome) - 1);
  uv_close((uv_handle_t *)&s->timer, sleeper_closed);
}

/* The client went away or the server is being closed: stop sleeping. */
static void on_cancel(grace_http_request *req, void *data) {
  sleeper *s = data;
  uv_timer_stop(&s->timer);
  grace_http_request_abandon(req);
  uv_close((uv_handle_t *)&s->timer, sleeper_closed);
}

/* Go's http.Error: the message and a newline, as plain text. */
static void http_error(grace_http_request *req, const char *msg, int status) {
  char body[512];
  int n = snprintf(body, sizeof(body), "%s\n", msg);
  if (n < 0 || (size_t)n >= sizeof(body))
    n = (int)sizeof(body) - 1;
  grace_http_response_header(req, "X-Content-Type-Options", "nosniff");
  grace_http_respond(req, status, body, (size_t)n);
}

static void handle_sleep(grace_http_request *req, void *data) {
  char value[128], err[256];
  grace_duration d;
  (void)data;

  int n = grace_http_request_query(req, "duration", value, sizeof(value));
  if (n == GRACE_ENOENT) {
    value[0] = '\0';
  } else if (n < 0) {
    grace_http_respond(req, 500, NULL, 0);
    return;
  }
  /* A value longer than the buffer is not a valid duration anyway, but
   * the error must quote it whole, as Go does. */
  char *text = value;
  if (n >= (int)sizeof(value)) {
    text = malloc((size_t)n + 1);
    if (text == NULL) {
      grace_http_respond(req, 500, NULL, 0);
      return;
    }
    grace_http_request_query(req, "duration", text, (size_t)n + 1);
  }
  int rv = grace_duration_parse(text, &d, err, sizeof(err));
  if (text != value)
    free(text);
  if (rv != 0) {
    http_error(req, err, 400);
    return;
  }
  if (d <= 0) {
    grace_http_respond(req, 200, welcome, sizeof(welcome) - 1);
    return;
  }
  sleeper *s = malloc(sizeof(*s));
  if (s == NULL || uv_timer_init(grace_http_request_loop(req), &s->timer)) {
    free(s);
    grace_http_respond(req, 500, NULL, 0);
    return;
  }
  s->req = req;
  s->timer.data = s;
  grace_http_request_on_cancel(req, on_cancel, s);
  /* libuv timers count milliseconds: round up, never wake early. */
  uint64_t ms = (uint64_t)((d + GRACE_MILLISECOND - 1) / GRACE_MILLISECOND);
  uv_timer_start(&s->timer, on_wake, ms, 0);
}

static void handle_root(grace_http_request *req, void *data) {
  static const char hello[] = "Hello, World!\n";
  static const char nf[] = "404 page not found\n";
  (void)data;
  if (strcmp(grace_http_request_path(req), "/") != 0) {
    grace_http_response_header(req, "X-Content-Type-Options", "nosniff");
    grace_http_respond(req, 404, nf, sizeof(nf) - 1);
    return;
  }
  grace_http_respond(req, 200, hello, sizeof(hello) - 1);
}

#endif /* GRACE_EXAMPLES_SLEEP_HANDLER_H */
