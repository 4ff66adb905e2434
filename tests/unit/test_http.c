/*
 * In-process tests of the HTTP server: a real server on 127.0.0.1 and
 * raw client sockets, so each behaviour is checked byte for byte.
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <semaphore.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "grace/http.h"

#include "loopback.h"

/* ---- time ------------------------------------------------------------------ */

static int64_t now_ms(void) { return grace_now() / GRACE_MILLISECOND; }

/* ---- handlers ------------------------------------------------------------ */

static void hello(grace_http_request *req, void *data) {
  (void)data;
  grace_http_respond(req, 200, "hello\n", 6);
}

static void echo_query(grace_http_request *req, void *data) {
  char buf[128];
  (void)data;
  int n = grace_http_request_query(req, "q", buf, sizeof(buf));
  if (n < 0)
    grace_http_respond(req, 200, "<none>", 6);
  else
    grace_http_respond(req, 200, buf, strlen(buf));
}

static void echo_body(grace_http_request *req, void *data) {
  size_t len;
  const void *body = grace_http_request_body(req, &len);
  (void)data;
  grace_http_response_header(req, "X-Method", grace_http_request_method(req));
  grace_http_respond(req, 200, body, len);
}

/* Holds the request until released from the test thread. */
typedef struct held {
  grace_http_request *req;
  int cancelled;
} held;

static void hold(grace_http_request *req, void *data) {
  held *h = data;
  __atomic_store_n(&h->req, req, __ATOMIC_RELEASE);
}

static void hold_cancel(grace_http_request *req, void *data) {
  held *h = data;
  __atomic_store_n(&h->req, NULL, __ATOMIC_RELEASE);
  __atomic_store_n(&h->cancelled, 1, __ATOMIC_RELEASE);
  grace_http_request_abandon(req);
}

static void hold_cancellable(grace_http_request *req, void *data) {
  held *h = data;
  grace_http_request_on_cancel(req, hold_cancel, h);
  __atomic_store_n(&h->req, req, __ATOMIC_RELEASE);
}

static grace_http_server *start_server(grace_http_options *opts, held *h) {
  grace_http_server *srv;
  assert_int_equal(grace_http_server_new(opts, &srv), 0);
  assert_int_equal(grace_http_server_handle(srv, "/hello", hello, NULL), 0);
  assert_int_equal(grace_http_server_handle(srv, "/q", echo_query, NULL), 0);
  assert_int_equal(grace_http_server_handle(srv, "/echo", echo_body, NULL), 0);
  assert_int_equal(grace_http_server_handle(srv, "/hold", hold, h), 0);
  assert_int_equal(
      grace_http_server_handle(srv, "/holdc", hold_cancellable, h), 0);
  assert_int_equal(grace_http_server_handle(srv, "/tree/", hello, NULL), 0);
  assert_int_equal(grace_http_server_listen(srv, "127.0.0.1:0"), 0);
  assert_int_equal(grace_http_server_start(srv), 0);
  return srv;
}

static void wait_held(held *h) {
  for (int i = 0; i < 2000 && __atomic_load_n(&h->req, __ATOMIC_ACQUIRE) == NULL; i++)
    usleep(1000);
  assert_non_null(__atomic_load_n(&h->req, __ATOMIC_ACQUIRE));
}

/* ---- tests --------------------------------------------------------------- */

static void test_keepalive_and_pipelining(void **state) {
  (void)state;
  held h = {0};
  grace_http_server *srv = start_server(NULL, &h);
  int fd = dial(grace_http_server_port(srv, 0));
  char buf[4096];
  assert_true(fd >= 0);
  send_str(fd, "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n"
               "GET /q?q=a%20b+c HTTP/1.1\r\nHost: x\r\n\r\n"
               "GET /nope HTTP/1.1\r\nHost: x\r\n\r\n");
  recv_until(fd, buf, sizeof(buf), "404 page not found\n", 2000);
  char *a = strstr(buf, "hello\n");
  char *b = strstr(buf, "a b c");
  char *c = strstr(buf, "HTTP/1.1 404 Not Found");
  assert_non_null(a);
  assert_non_null(b);
  assert_non_null(c);
  assert_true(a < b && b < c);
  assert_null(strstr(buf, "Connection: close"));
  assert_non_null(strstr(buf, "Content-Length: 6\r\n"));
  assert_non_null(strstr(buf, "Date: "));
  close(fd);
  grace_http_server_free(srv);
}

/* A request arriving one byte per read, with a second one pipelined
 * behind it, exercises every partial-input path of the parser glue. */
static void test_byte_at_a_time(void **state) {
  (void)state;
  held h = {0};
  grace_http_server *srv = start_server(NULL, &h);
  int fd = dial(grace_http_server_port(srv, 0));
  char buf[4096];
  const char *req = "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: "
                    "chunked\r\n\r\n2\r\nab\r\n0\r\n\r\n"
                    "GET /q?q=%41 HTTP/1.1\r\nHost: x\r\n\r\n";
  for (const char *p = req; *p; p++) {
    assert_int_equal(send(fd, p, 1, MSG_NOSIGNAL), 1);
    usleep(200);
  }
  recv_until(fd, buf, sizeof(buf), "\r\n\r\nA", 2000);
  char *first = strstr(buf, "\r\n\r\nab");
  char *second = strstr(buf, "\r\n\r\nA");
  assert_non_null(first);
  assert_non_null(second);
  assert_true(first < second);
  close(fd);
  grace_http_server_free(srv);
}

/* Regression: the path was copied from the request buffer while that
 * buffer grew, reading freed memory (found by fuzz_http; ASan builds
 * catch it).  Heads of every size around the growth steps. */
static void test_head_sizes_around_buffer_growth(void **state) {
  (void)state;
  held h = {0};
  grace_http_server *srv = start_server(NULL, &h);
  int fd = dial(grace_http_server_port(srv, 0));
  char req[1200], pad[1100], buf[4096];
  for (size_t n = 200; n < 1100; n++) {
    memset(pad, 'p', n);
    pad[n] = '\0';
    snprintf(req, sizeof(req),
             "GET /q?q=v%zu HTTP/1.1\r\nHost: x\r\nX-Pad: %s\r\n\r\n",
             n, pad);
    send_str(fd, req);
    char want[32];
    snprintf(want, sizeof(want), "v%zu", n);
    recv_until(fd, buf, sizeof(buf), want, 2000);
    assert_non_null(strstr(buf, want));
  }
  close(fd);
  grace_http_server_free(srv);
}

/* More pipelined requests than answers may nest on the stack: the rest are
 * resumed from the loop, none lost, all in order. */
static void test_deep_pipelining(void **state) {
  (void)state;
  held h = {0};
  grace_http_server *srv = start_server(NULL, &h);
  int fd = dial(grace_http_server_port(srv, 0));
  char req[64], all[64 * 64], buf[65536];
  all[0] = '\0';
  for (int i = 0; i < 60; i++) {
    snprintf(req, sizeof(req), "GET /q?q=r%d HTTP/1.1\r\nHost: x\r\n\r\n", i);
    strcat(all, req);
  }
  send_str(fd, all);
  recv_until(fd, buf, sizeof(buf), "r59", 3000);
  const char *p = buf;
  for (int i = 0; i < 60; i++) {
    char want[16];
    snprintf(want, sizeof(want), "\r\n\r\nr%d", i);
    p = strstr(p, want);
    if (p == NULL)
      fail_msg("answer %d missing or out of order", i);
    p += strlen(want);
  }
  close(fd);
  grace_http_server_free(srv);
}

static void test_routes_subtree_and_exact(void **state) {
  (void)state;
  held h = {0};
  grace_http_server *srv = start_server(NULL, &h);
  int port = grace_http_server_port(srv, 0);
  char buf[4096];
  const char *cases[][2] = {{"/tree/a/b", "200"}, {"/tree/", "200"},
                            {"/tree", "404"},     {"/hello/", "404"},
                            {"/hello%2Fx", "404"}, {"/hell%6F", "200"}};
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    int fd = dial(port);
    char req[256];
    snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: x\r\n\r\n",
             cases[i][0]);
    send_str(fd, req);
    recv_until(fd, buf, sizeof(buf), "\r\n\r\n", 2000);
    char want[32];
    snprintf(want, sizeof(want), "HTTP/1.1 %s ", cases[i][1]);
    if (strncmp(buf, want, strlen(want)) != 0)
      fail_msg("%s: got %.40s", cases[i][0], buf);
    close(fd);
  }
  grace_http_server_free(srv);
}

static void test_http10_and_bodies(void **state) {
  (void)state;
  held h = {0};
  grace_http_server *srv = start_server(NULL, &h);
  int port = grace_http_server_port(srv, 0);
  char buf[4096];

  /* HTTP/1.0 without keep-alive: answered, then closed. */
  int fd = dial(port);
  send_str(fd, "GET /hello HTTP/1.0\r\n\r\n");
  recv_until(fd, buf, sizeof(buf), "hello\n", 2000);
  assert_non_null(strstr(buf, "Connection: close"));
  assert_true(peer_closed(fd, 2000));
  close(fd);

  /* HTTP/1.0 keep-alive stays open. */
  fd = dial(port);
  send_str(fd, "GET /hello HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
  recv_until(fd, buf, sizeof(buf), "hello\n", 2000);
  assert_non_null(strstr(buf, "Connection: keep-alive"));
  assert_false(peer_closed(fd, 100));
  close(fd);

  /* Chunked body, then a Content-Length body on the same connection. */
  fd = dial(port);
  send_str(fd, "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked"
               "\r\n\r\n3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n"
               "PUT /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n"
               "12345");
  recv_until(fd, buf, sizeof(buf), "12345", 2000);
  assert_non_null(strstr(buf, "X-Method: POST\r\n"));
  assert_non_null(strstr(buf, "abcdefg"));
  assert_non_null(strstr(buf, "X-Method: PUT\r\n"));
  close(fd);

  /* HEAD: headers with the length, no body. */
  fd = dial(port);
  send_str(fd, "HEAD /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
  size_t n = recv_until(fd, buf, sizeof(buf), NULL, 2000);
  assert_non_null(strstr(buf, "Content-Length: 6\r\n"));
  assert_int_equal(n, (size_t)(strstr(buf, "\r\n\r\n") + 4 - buf));
  close(fd);
  grace_http_server_free(srv);
}

static void test_bad_input(void **state) {
  (void)state;
  held h = {0};
  grace_http_options opts;
  grace_http_options_init(&opts);
  opts.max_header_bytes = 4096;
  opts.max_body_bytes = 100;
  grace_http_server *srv = start_server(&opts, &h);
  int port = grace_http_server_port(srv, 0);
  char buf[8192];
  struct {
    const char *req;
    const char *want;
  } cases[] = {
      {"GARBAGE\r\n\r\n", "HTTP/1.1 400 Bad Request\r\n"},
      {"GET /hello HTTP/1.1\r\nBad Header\r\n\r\n", "HTTP/1.1 400 "},
      {"GET /%zz HTTP/1.1\r\nHost: x\r\n\r\n", "HTTP/1.1 400 "},
      {"GET /hello HTTP/2.0\r\nHost: x\r\n\r\n", "HTTP/1.1 505 "},
      {"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 101\r\n\r\n",
       "HTTP/1.1 413 "},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    int fd = dial(port);
    send_str(fd, cases[i].req);
    recv_until(fd, buf, sizeof(buf), "\r\n\r\n", 2000);
    if (strncmp(buf, cases[i].want, strlen(cases[i].want)) != 0)
      fail_msg("case %zu: got %.60s", i, buf);
    assert_non_null(strstr(buf, "Connection: close"));
    assert_true(peer_closed(fd, 2000));
    close(fd);
  }
  /* Oversized headers: 431, and the response survives the unread rest. */
  int fd = dial(port);
  send_str(fd, "GET /hello HTTP/1.1\r\nHost: x\r\nX-Big: ");
  char big[6000];
  memset(big, 'a', sizeof(big) - 1);
  big[sizeof(big) - 1] = '\0';
  send_str(fd, big);
  send_str(fd, "\r\n\r\n");
  recv_until(fd, buf, sizeof(buf), "\r\n\r\n", 2000);
  assert_memory_equal(buf, "HTTP/1.1 431 ", 13);
  close(fd);
  /* A chunked body over the limit: 413. */
  fd = dial(port);
  send_str(fd, "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked"
               "\r\n\r\n");
  for (int i = 0; i < 30; i++)
    send_str(fd, "a\r\n0123456789\r\n");
  recv_until(fd, buf, sizeof(buf), "\r\n\r\n", 2000);
  assert_memory_equal(buf, "HTTP/1.1 413 ", 13);
  close(fd);
  /* The server is still fine. */
  fd = dial(port);
  send_str(fd, "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n");
  recv_until(fd, buf, sizeof(buf), "hello\n", 2000);
  assert_non_null(strstr(buf, "200 OK"));
  close(fd);
  grace_http_server_free(srv);
}

static void test_timeouts(void **state) {
  (void)state;
  held h = {0};
  grace_http_options opts;
  grace_http_options_init(&opts);
  opts.read_header_timeout = 200 * GRACE_MILLISECOND;
  opts.idle_timeout = 300 * GRACE_MILLISECOND;
  grace_http_server *srv = start_server(&opts, &h);
  int port = grace_http_server_port(srv, 0);
  char buf[4096];

  /* Slow header: closed at the read-header timeout. */
  int64_t t0 = now_ms();
  int fd = dial(port);
  send_str(fd, "GET /hel");
  assert_true(peer_closed(fd, 3000));
  int64_t dt = now_ms() - t0;
  assert_true(dt >= 150 && dt < 1500);
  close(fd);

  /* Idle keep-alive: closed at the idle timeout. */
  fd = dial(port);
  send_str(fd, "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n");
  recv_until(fd, buf, sizeof(buf), "hello\n", 2000);
  t0 = now_ms();
  assert_true(peer_closed(fd, 3000));
  dt = now_ms() - t0;
  assert_true(dt >= 250 && dt < 1500);
  close(fd);
  grace_http_server_free(srv);
}

typedef struct drained_flag {
  int64_t at;
} drained_flag;

static void on_drained(grace_http_server *srv, void *data) {
  (void)srv;
  __atomic_store_n(&((drained_flag *)data)->at, now_ms(), __ATOMIC_RELEASE);
}

static int hooks_run;
static void count_hook(grace_http_server *srv, void *data) {
  (void)srv;
  (void)data;
  hooks_run++;
}

static void test_graceful_shutdown(void **state) {
  (void)state;
  held h = {0};
  drained_flag d = {0};
  grace_http_server *srv = start_server(NULL, &h);
  int port = grace_http_server_port(srv, 0);
  char buf[4096];
  hooks_run = 0;
  assert_int_equal(grace_http_server_on_shutdown(srv, count_hook, NULL), 0);

  /* An idle keep-alive connection and one with a request in flight. */
  int idle = dial(port);
  send_str(idle, "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n");
  recv_until(idle, buf, sizeof(buf), "hello\n", 2000);
  int busy = dial(port);
  send_str(busy, "GET /hold HTTP/1.1\r\nHost: x\r\n\r\n");
  wait_held(&h);

  assert_int_equal(grace_http_server_shutdown_begin(srv, on_drained, &d), 0);
  assert_int_equal(hooks_run, 1);
  assert_int_equal(grace_http_server_shutdown_begin(srv, NULL, NULL),
                   GRACE_ESHUTDOWN);
  assert_int_equal(grace_ctx_err(grace_http_server_shutdown_ctx(srv)),
                   GRACE_ECANCELED);
  /* Listeners are closed when shutdown_begin returns. */
  assert_int_equal(dial(port), -ECONNREFUSED);
  /* The idle connection is closed at once. */
  assert_true(peer_closed(idle, 200));
  close(idle);
  /* Not drained while a request is in flight. */
  usleep(50000);
  assert_int_equal(__atomic_load_n(&d.at, __ATOMIC_ACQUIRE), 0);
  struct pollfd p = {.fd = grace_http_server_drained_fd(srv),
                     .events = POLLIN};
  assert_int_equal(poll(&p, 1, 0), 0);

  int64_t t_answer = now_ms();
  grace_http_respond(__atomic_load_n(&h.req, __ATOMIC_ACQUIRE), 200, "late", 4);
  recv_until(busy, buf, sizeof(buf), "late", 2000);
  assert_non_null(strstr(buf, "Connection: close\r\n"));
  assert_true(peer_closed(busy, 1000));
  close(busy);
  /* Drained the moment the connection closed: no polling interval. */
  assert_int_equal(poll(&p, 1, 1000), 1);
  int64_t at = __atomic_load_n(&d.at, __ATOMIC_ACQUIRE);
  assert_true(at > 0 && at - t_answer < 100);
  assert_int_equal(grace_http_server_shutdown(srv, NULL), 0);

  grace_http_stats st;
  grace_http_server_stats(srv, &st);
  assert_int_equal(st.conns_open, 0);
  assert_int_equal(st.requests_inflight, 0);
  assert_true(st.idle_closed_on_shutdown >= 1);
  grace_http_server_free(srv);
}

/* With a close spread, idle keep-alive connections stay open through the
 * window (one timer per loop ends it), a request in it is served, and the
 * drain completes the moment the window's end closes them. */
static void test_close_spread_closes_idle_at_window_end(void **state) {
  (void)state;
  held h = {0};
  drained_flag d = {0};
  grace_http_options opts;
  grace_http_options_init(&opts);
  opts.loops = 2;
  opts.close_spread = 500 * GRACE_MILLISECOND;
  grace_http_server *srv = start_server(&opts, &h);
  int port = grace_http_server_port(srv, 0);
  char buf[4096];

  /* Three idle keep-alive connections, over both loops. */
  int fds[3];
  for (int i = 0; i < 3; i++) {
    fds[i] = dial(port);
    send_str(fds[i], "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n");
    recv_until(fds[i], buf, sizeof(buf), "hello\n", 2000);
    assert_non_null(strstr(buf, "200 OK"));
  }
  int64_t t0 = now_ms();
  assert_int_equal(grace_http_server_shutdown_begin(srv, on_drained, &d), 0);
  assert_int_equal(dial(port), -ECONNREFUSED);
  /* A request on one of them during the window is served. */
  send_str(fds[2], "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n");
  recv_until(fds[2], buf, sizeof(buf), "hello\n", 2000);
  assert_non_null(strstr(buf, "200 OK"));
  /* The idle ones are closed when the window ends, not before. */
  for (int i = 0; i < 2; i++) {
    assert_true(peer_closed(fds[i], 3000));
    int64_t dt = now_ms() - t0;
    assert_true(dt >= 490 && dt < 2000);
    close(fds[i]);
  }
  assert_true(peer_closed(fds[2], 3000));
  close(fds[2]);
  struct pollfd p = {.fd = grace_http_server_drained_fd(srv),
                     .events = POLLIN};
  assert_int_equal(poll(&p, 1, 1000), 1);
  int64_t at = __atomic_load_n(&d.at, __ATOMIC_ACQUIRE);
  assert_true(at - t0 >= 490 && at - t0 < 2000);
  assert_int_equal(grace_http_server_shutdown(srv, NULL), 0);
  grace_http_stats st;
  grace_http_server_stats(srv, &st);
  assert_true(st.idle_closed_on_shutdown >= 2);
  grace_http_server_free(srv);
}

/* A long close spread does not hold the drain once nothing is left: the
 * idle timeout still runs in the window, and the drain completes when the
 * last connection closes. */
static void test_close_spread_does_not_hold_the_drain(void **state) {
  (void)state;
  held h = {0};
  drained_flag d = {0};
  grace_http_options opts;
  grace_http_options_init(&opts);
  opts.close_spread = 60 * GRACE_SECOND;
  opts.idle_timeout = 300 * GRACE_MILLISECOND;
  grace_http_server *srv = start_server(&opts, &h);
  int port = grace_http_server_port(srv, 0);
  char buf[4096];

  int gone = dial(port), idle = dial(port);
  send_str(gone, "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n");
  recv_until(gone, buf, sizeof(buf), "hello\n", 2000);
  send_str(idle, "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n");
  recv_until(idle, buf, sizeof(buf), "hello\n", 2000);
  int64_t t_idle = now_ms();
  assert_int_equal(grace_http_server_shutdown_begin(srv, on_drained, &d), 0);
  close(gone); /* the client leaves */
  assert_true(peer_closed(idle, 3000));
  int64_t t_closed = now_ms();
  assert_true(t_closed - t_idle >= 250 && t_closed - t_idle < 2000);
  close(idle);
  struct pollfd p = {.fd = grace_http_server_drained_fd(srv),
                     .events = POLLIN};
  assert_int_equal(poll(&p, 1, 1000), 1);
  int64_t at = __atomic_load_n(&d.at, __ATOMIC_ACQUIRE);
  assert_true(at > 0 && at - t_closed < 500);
  assert_int_equal(grace_http_server_shutdown(srv, NULL), 0);
  grace_http_server_free(srv);
}

/* grace_http_server_close during a close spread cuts everything at once. */
static void test_close_spread_close_cuts_at_once(void **state) {
  (void)state;
  held h = {0};
  grace_http_options opts;
  grace_http_options_init(&opts);
  opts.close_spread = 60 * GRACE_SECOND;
  grace_http_server *srv = start_server(&opts, &h);
  int port = grace_http_server_port(srv, 0);
  char buf[4096];

  int idle = dial(port), busy = dial(port);
  send_str(idle, "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n");
  recv_until(idle, buf, sizeof(buf), "hello\n", 2000);
  send_str(busy, "GET /holdc HTTP/1.1\r\nHost: x\r\n\r\n");
  wait_held(&h);
  assert_int_equal(grace_http_server_shutdown_begin(srv, NULL, NULL), 0);
  int64_t t0 = now_ms();
  assert_int_equal(grace_http_server_close(srv), 1);
  assert_true(peer_closed(idle, 1000));
  assert_true(peer_closed(busy, 1000));
  assert_true(now_ms() - t0 < 1000);
  assert_int_equal(__atomic_load_n(&h.cancelled, __ATOMIC_ACQUIRE), 1);
  close(idle);
  close(busy);
  grace_http_server_free(srv);
}

static void test_shutdown_deadline_then_close(void **state) {
  (void)state;
  held h = {0};
  grace_http_server *srv = start_server(NULL, &h);
  int port = grace_http_server_port(srv, 0);
  int busy = dial(port);
  send_str(busy, "GET /holdc HTTP/1.1\r\nHost: x\r\n\r\n");
  wait_held(&h);
  grace_ctx *ctx;
  assert_int_equal(grace_ctx_with_timeout(grace_ctx_background(),
                                          100 * GRACE_MILLISECOND, &ctx),
                   0);
  int64_t t0 = now_ms();
  assert_int_equal(grace_http_server_shutdown(srv, ctx), GRACE_ETIMEDOUT);
  int64_t dt = now_ms() - t0;
  assert_true(dt >= 90 && dt < 1000);
  /* close cuts the request: its cancel callback runs and abandons it. */
  assert_int_equal(grace_http_server_close(srv), 1);
  assert_true(peer_closed(busy, 1000));
  assert_int_equal(__atomic_load_n(&h.cancelled, __ATOMIC_ACQUIRE), 1);
  close(busy);
  grace_ctx_unref(ctx);
  grace_http_server_free(srv);
}

static void test_client_gone_cancels(void **state) {
  (void)state;
  held h = {0};
  grace_http_server *srv = start_server(NULL, &h);
  int busy = dial(grace_http_server_port(srv, 0));
  send_str(busy, "GET /holdc HTTP/1.1\r\nHost: x\r\n\r\n");
  wait_held(&h);
  close(busy);
  for (int i = 0; i < 1000 && !__atomic_load_n(&h.cancelled, __ATOMIC_ACQUIRE); i++)
    usleep(1000);
  assert_int_equal(__atomic_load_n(&h.cancelled, __ATOMIC_ACQUIRE), 1);
  grace_http_stats st;
  grace_http_server_stats(srv, &st);
  assert_int_equal(st.requests_cut, 1);
  grace_http_server_free(srv);
}

static void *answer_later(void *arg) {
  held *h = arg;
  usleep(20000);
  grace_http_respond(__atomic_load_n(&h->req, __ATOMIC_ACQUIRE), 201,
                     "from thread", 11);
  return NULL;
}

static void test_answer_from_other_thread(void **state) {
  (void)state;
  held h = {0};
  grace_http_server *srv = start_server(NULL, &h);
  int fd = dial(grace_http_server_port(srv, 0));
  char buf[4096];
  send_str(fd, "GET /hold HTTP/1.1\r\nHost: x\r\n\r\n");
  wait_held(&h);
  pthread_t t;
  pthread_create(&t, NULL, answer_later, &h);
  recv_until(fd, buf, sizeof(buf), "from thread", 2000);
  assert_non_null(strstr(buf, "HTTP/1.1 201 Created"));
  pthread_join(t, NULL);
  close(fd);
  grace_http_server_free(srv);
}

typedef struct states {
  int seen[4];
} states;

static void on_state(uint64_t id, grace_conn_state st, void *data) {
  (void)id;
  __atomic_fetch_add(&((states *)data)->seen[st], 1, __ATOMIC_RELAXED);
}

/* Released by the test once it saw the loop answer meanwhile. */
static sem_t blocking_release;
static int blocking_started;

static void blocking_wait(grace_http_request *req, void *data) {
  (void)data;
  __atomic_fetch_add(&blocking_started, 1, __ATOMIC_RELEASE);
  /* Blocks a pool thread, not the loop, until the test says so. */
  while (sem_wait(&blocking_release) != 0 && errno == EINTR) {
  }
  grace_http_respond(req, 200, "slept", 5);
}

static void blocking(grace_http_request *req, void *data) {
  if (grace_http_run_blocking(req, blocking_wait, data) != 0)
    grace_http_respond(req, 500, NULL, 0);
}

/* Blocking handlers run on the thread pool: while several are blocked, the
 * loop answers other requests.  No clock: the blocked ones are released
 * only after another request was answered, so a loop that ran them itself
 * would never answer it (recv_until fails after 2 s). */
static void test_run_blocking_keeps_loop_free(void **state) {
  (void)state;
  grace_http_options opts;
  grace_http_options_init(&opts);
  opts.loops = 1;
  grace_http_server *srv;
  assert_int_equal(sem_init(&blocking_release, 0, 0), 0);
  blocking_started = 0;
  assert_int_equal(grace_http_server_new(&opts, &srv), 0);
  assert_int_equal(grace_http_server_handle(srv, "/block", blocking, NULL), 0);
  assert_int_equal(grace_http_server_handle(srv, "/hello", hello, NULL), 0);
  assert_int_equal(grace_http_server_listen(srv, "127.0.0.1:0"), 0);
  assert_int_equal(grace_http_server_start(srv), 0);
  int port = grace_http_server_port(srv, 0);
  int slow[3];
  char buf[4096];
  for (int i = 0; i < 3; i++) {
    slow[i] = dial(port);
    send_str(slow[i], "GET /block HTTP/1.1\r\nHost: x\r\n\r\n");
  }
  /* All three are blocked before the next request (a loop running them
   * itself would be stuck in the first). */
  for (int waited = 0; __atomic_load_n(&blocking_started, __ATOMIC_ACQUIRE) < 3;
       waited++) {
    assert_true(waited < 2000);
    usleep(1000);
  }
  int fd = dial(port);
  send_str(fd, "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n");
  recv_until(fd, buf, sizeof(buf), "hello\n", 2000);
  assert_non_null(strstr(buf, "200 OK"));
  close(fd);
  for (int i = 0; i < 3; i++) {
    struct pollfd pfd = {.fd = slow[i], .events = POLLIN};
    assert_int_equal(poll(&pfd, 1, 0), 0); /* still blocked: no answer */
  }
  for (int i = 0; i < 3; i++)
    assert_int_equal(sem_post(&blocking_release), 0);
  for (int i = 0; i < 3; i++) {
    recv_until(slow[i], buf, sizeof(buf), "slept", 2000);
    assert_non_null(strstr(buf, "slept"));
    close(slow[i]);
  }
  grace_http_server_free(srv);
  sem_destroy(&blocking_release);
}

static void test_conn_states_observed(void **state) {
  (void)state;
  held h = {0};
  states s = {{0}};
  grace_http_options opts;
  grace_http_options_init(&opts);
  opts.conn_state = on_state;
  opts.conn_state_data = &s;
  grace_http_server *srv = start_server(&opts, &h);
  int fd = dial(grace_http_server_port(srv, 0));
  char buf[4096];
  send_str(fd, "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n");
  recv_until(fd, buf, sizeof(buf), "hello\n", 2000);
  usleep(20000);
  close(fd);
  for (int i = 0; i < 1000 && !__atomic_load_n(&s.seen[GRACE_CONN_CLOSED], __ATOMIC_RELAXED); i++)
    usleep(1000);
  assert_int_equal(s.seen[GRACE_CONN_NEW], 1);
  assert_int_equal(s.seen[GRACE_CONN_ACTIVE], 1);
  assert_int_equal(s.seen[GRACE_CONN_IDLE], 1);
  assert_int_equal(s.seen[GRACE_CONN_CLOSED], 1);
  assert_string_equal(grace_conn_state_name(GRACE_CONN_IDLE), "idle");
  grace_http_server_free(srv);
}

static void test_listen_errors(void **state) {
  (void)state;
  grace_http_server *srv, *other;
  assert_int_equal(grace_http_server_new(NULL, &srv), 0);
  assert_int_equal(grace_http_server_listen(srv, "8000"), GRACE_EINVAL);
  assert_int_equal(grace_http_server_listen(srv, "127.0.0.1:99999"),
                   GRACE_EINVAL);
  assert_int_equal(grace_http_server_listen(srv, "127.0.0.1:http"),
                   GRACE_EINVAL);
  assert_int_equal(grace_http_server_start(srv), GRACE_ESTATE);
  assert_int_equal(grace_http_server_listen(srv, "127.0.0.1:0"), 0);
  int port = grace_http_server_port(srv, 0);
  assert_true(port > 0);
  assert_int_equal(grace_http_server_new(NULL, &other), 0);
  char addr[64];
  snprintf(addr, sizeof(addr), "127.0.0.1:%d", port);
  assert_int_equal(grace_http_server_listen(other, addr), GRACE_EADDRINUSE);
  assert_int_equal(grace_http_server_listen_fd(other, 0), GRACE_EINVAL);
  grace_http_server_free(other);
  assert_int_equal(grace_http_server_handle(srv, "nope", hello, NULL),
                   GRACE_EINVAL);
  grace_http_options bad;
  grace_http_options_init(&bad);
  bad.max_header_bytes = 10;
  assert_int_equal(grace_http_server_new(&bad, &other), GRACE_EINVAL);
  grace_http_server_free(srv);
}

static void test_listen_fd_adopted(void **state) {
  (void)state;
  held h = {0};
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in sa;
  socklen_t len = sizeof(sa);
  memset(&sa, 0, sizeof(sa));
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
  /* Not listening yet: refused. */
  grace_http_server *srv;
  assert_int_equal(grace_http_server_new(NULL, &srv), 0);
  assert_int_equal(grace_http_server_listen_fd(srv, fd), GRACE_EINVAL);
  assert_int_equal(listen(fd, 16), 0);
  assert_int_equal(grace_http_server_listen_fd(srv, fd), 0);
  assert_int_equal(grace_http_server_handle(srv, "/hello", hello, &h), 0);
  assert_int_equal(grace_http_server_start(srv), 0);
  getsockname(fd, (struct sockaddr *)&sa, &len);
  int c = dial(ntohs(sa.sin_port));
  char buf[1024];
  send_str(c, "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n");
  recv_until(c, buf, sizeof(buf), "hello\n", 2000);
  assert_non_null(strstr(buf, "200 OK"));
  close(c);
  grace_http_server_free(srv);
}

/* With every descriptor in use, accept fails with EMFILE; the server must
 * back off (not spin) and recover once descriptors are free again. */
#if defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define GRACE_TEST_TSAN 1
#endif
#endif

static void test_emfile_backoff(void **state) {
  (void)state;
#ifdef GRACE_TEST_TSAN
  /* ThreadSanitizer opens descriptors of its own at unpredictable moments,
   * so it cannot run with every descriptor in use; the plain and ASan
   * builds run this test. */
  skip();
#endif
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    held h = {0};
    grace_http_options opts;
    grace_http_options_init(&opts);
    opts.loops = 1;
    grace_http_server *srv;
    if (grace_http_server_new(&opts, &srv) != 0 ||
        grace_http_server_handle(srv, "/hello", hello, &h) != 0 ||
        grace_http_server_listen(srv, "127.0.0.1:0") != 0 ||
        grace_http_server_start(srv) != 0)
      _exit(10);
    int port = grace_http_server_port(srv, 0);
    /* Use up the descriptors, keeping the client end for the test. */
    int client = dial(port);
    if (client < 0)
      _exit(11);
    /* A full exchange, so the server has surely accepted this connection
     * (else its later accept would take the descriptor freed below). */
    char first[1024];
    send_str(client, "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n");
    recv_until(client, first, sizeof(first), "hello\n", 3000);
    if (strstr(first, "200 OK") == NULL)
      _exit(16);
    int hogs[4096], nh = 0;
    struct rlimit rl = {64, 64};
    setrlimit(RLIMIT_NOFILE, &rl);
    while (nh < 4096) {
      int f = dup(0);
      if (f < 0)
        break;
      hogs[nh++] = f;
    }
    /* Free one descriptor for our own client socket, then connect: the
     * server cannot accept it (no descriptor left) and must back off. */
    close(hogs[--nh]);
    int c2 = dial(port);
    if (c2 < 0)
      _exit(12);
    struct timespec t0, t1;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t0);
    usleep(300000);
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t1);
    double cpu = (double)(t1.tv_sec - t0.tv_sec) +
                 (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    grace_http_stats st;
    grace_http_server_stats(srv, &st);
    if (st.accept_backoffs < 2 || st.accept_backoffs > 12) {
      fprintf(stderr, "accept backoffs: %llu\n",
              (unsigned long long)st.accept_backoffs);
      _exit(13);
    }
    if (cpu > 0.1)
      _exit(14); /* spinning */
    for (int i = 0; i < nh; i++)
      close(hogs[i]);
    char buf[1024];
    send_str(c2, "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n");
    recv_until(c2, buf, sizeof(buf), "hello\n", 3000);
    if (strstr(buf, "200 OK") == NULL)
      _exit(15);
    close(c2);
    close(client);
    grace_http_server_free(srv);
    _exit(0);
  }
  int status;
  waitpid(pid, &status, 0);
  assert_true(WIFEXITED(status));
  assert_int_equal(WEXITSTATUS(status), 0);
}

static int more_hooks_run;

static void counting_hook(grace_http_server *srv, void *data) {
  (void)srv;
  (void)data;
  more_hooks_run++;
}

static void registering_hook(grace_http_server *srv, void *data) {
  (void)data;
  more_hooks_run++;
  /* Registering from a hook moves the array shutdown is walking. */
  for (int i = 0; i < 64; i++)
    assert_int_equal(grace_http_server_on_shutdown(srv, counting_hook, NULL),
                     0);
}

/* A hook that registers hooks while shutdown runs them: the array grows
 * under the walk (a use-after-free before), and the new ones run too. */
static void test_hook_registers_hooks_during_shutdown(void **state) {
  (void)state;
  held h = {0};
  grace_http_server *srv = start_server(NULL, &h);
  more_hooks_run = 0;
  assert_int_equal(grace_http_server_on_shutdown(srv, registering_hook, NULL),
                   0);
  assert_int_equal(grace_http_server_shutdown_begin(srv, NULL, NULL), 0);
  assert_int_equal(more_hooks_run, 65);
  assert_int_equal(grace_http_server_shutdown(srv, NULL), 0);
  grace_http_server_free(srv);
}

static void ctx_on_pool(grace_http_request *req, void *data) {
  (void)data;
  /* Asked for on a pool thread while the loop thread cancels the request
   * as its client leaves: the context is made once, and cancelled. */
  grace_ctx *ctx = grace_http_request_ctx(req);
  assert_non_null(ctx);
  assert_true(grace_http_request_ctx(req) == ctx);
  assert_true(grace_ctx_wait(ctx, 3 * GRACE_SECOND) == GRACE_ECANCELED ||
              grace_ctx_err(ctx) == GRACE_ECANCELED);
  grace_http_respond(req, 200, "late", 4);
}

static void ctx_race(grace_http_request *req, void *data) {
  if (grace_http_run_blocking(req, ctx_on_pool, data) != 0)
    grace_http_respond(req, 500, NULL, 0);
}

/* grace_http_request_ctx from a pool thread races with the cancellation
 * of a client that leaves (ThreadSanitizer saw the unsynchronised lazy
 * creation); the context is cancelled either way. */
static void test_request_ctx_from_pool_races_cancel(void **state) {
  (void)state;
  grace_http_options opts;
  grace_http_options_init(&opts);
  opts.loops = 1;
  grace_http_server *srv;
  assert_int_equal(grace_http_server_new(&opts, &srv), 0);
  assert_int_equal(grace_http_server_handle(srv, "/ctx", ctx_race, NULL), 0);
  assert_int_equal(grace_http_server_listen(srv, "127.0.0.1:0"), 0);
  assert_int_equal(grace_http_server_start(srv), 0);
  int port = grace_http_server_port(srv, 0);
  for (int i = 0; i < 20; i++) {
    int fd = dial(port);
    send_str(fd, "GET /ctx HTTP/1.1\r\nHost: x\r\n\r\n");
    close(fd);
  }
  assert_int_equal(grace_http_server_shutdown(srv, NULL), 0);
  grace_http_stats st;
  grace_http_server_stats(srv, &st);
  assert_int_equal(st.requests_cut, 20);
  grace_http_server_free(srv);
}

static void test_status_text(void **state) {
  (void)state;
  assert_string_equal(grace_http_status_text(200), "OK");
  assert_string_equal(grace_http_status_text(431),
                      "Request Header Fields Too Large");
  assert_string_equal(grace_http_status_text(799), "");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      /* First: it forks, and a child forked from a process with threads
       * (libuv's pool, once test_run_blocking_keeps_loop_free has run)
       * had better not start more under sanitizers. */
      cmocka_unit_test(test_emfile_backoff),
      cmocka_unit_test(test_keepalive_and_pipelining),
      cmocka_unit_test(test_byte_at_a_time),
      cmocka_unit_test(test_head_sizes_around_buffer_growth),
      cmocka_unit_test(test_deep_pipelining),
      cmocka_unit_test(test_routes_subtree_and_exact),
      cmocka_unit_test(test_http10_and_bodies),
      cmocka_unit_test(test_bad_input),
      cmocka_unit_test(test_timeouts),
      cmocka_unit_test(test_graceful_shutdown),
      cmocka_unit_test(test_shutdown_deadline_then_close),
      cmocka_unit_test(test_close_spread_closes_idle_at_window_end),
      cmocka_unit_test(test_close_spread_does_not_hold_the_drain),
      cmocka_unit_test(test_close_spread_close_cuts_at_once),
      cmocka_unit_test(test_client_gone_cancels),
      cmocka_unit_test(test_answer_from_other_thread),
      cmocka_unit_test(test_run_blocking_keeps_loop_free),
      cmocka_unit_test(test_conn_states_observed),
      cmocka_unit_test(test_listen_errors),
      cmocka_unit_test(test_listen_fd_adopted),
      cmocka_unit_test(test_hook_registers_hooks_during_shutdown),
      cmocka_unit_test(test_request_ctx_from_pool_races_cancel),
      cmocka_unit_test(test_status_text),
  };
  return cmocka_run_group_tests_name("http", tests, NULL, NULL);
}
