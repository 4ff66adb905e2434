/*
 * Servers (HTTP, gRPC, the caller's own TCP protocol) on a libuv loop the
 * caller owns (grace/uv.h): a "host" thread
 * plays the caller (its own loop, its own async handle and periodic
 * timer, the server started on that loop), and the test thread drives
 * real client sockets against it.  Each shutdown scenario of the threaded
 * servers is played again: in-flight request finished, idle keep-alive
 * closed at once, deadline cuts a handler that never answers, force.
 * Every scenario ends with the host's uv_run returning and
 * uv_loop_close succeeding: nothing of the server is left on the loop.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "grace/grpc_client.h"
#include "grace/uv.h"

#include "loopback.h"

/* ---- time ------------------------------------------------------------------
 */

static int64_t now_ms(void) { return grace_now() / GRACE_MILLISECOND; }

#define LOAD(p) __atomic_load_n((p), __ATOMIC_ACQUIRE)
#define STORE(p, v) __atomic_store_n((p), (v), __ATOMIC_RELEASE)

/* Waits up to |ms| for *|p| to become non-zero. */
static int wait_set(const int *p, int ms) {
  for (int i = 0; i < ms && LOAD(p) == 0; i++)
    usleep(1000);
  return LOAD(p);
}

/* ---- the host: the caller's loop and thread ------------------------------ */

typedef struct host host;
typedef int (*host_fn)(host *h);

struct host {
  uv_loop_t loop;
  uv_async_t cmd;  /* the test thread's requests, run on the loop */
  uv_timer_t tick; /* the caller's own periodic work */
  pthread_t thread;
  grace_http_server *http; /* one of the three */
  grace_grpc_server *grpc;
  grace_tcp_server *tcp;
  int ticks;
  int start_rv, started;
  host_fn fn; /* the pending request and its answer */
  int fn_rv, fn_done;
  /* What the stop callback saw. */
  int done_calls, status, cut;
  int64_t done_at;
  int loop_close_rv, exited;
};

static void on_tick(uv_timer_t *t) {
  host *h = t->data;
  STORE(&h->ticks, LOAD(&h->ticks) + 1);
}

static void on_cmd(uv_async_t *a) {
  host *h = a->data;
  host_fn fn = LOAD(&h->fn);
  if (fn == NULL)
    return;
  STORE(&h->fn, NULL);
  STORE(&h->fn_rv, fn(h));
  STORE(&h->fn_done, 1);
}

/* The caller's own handles go once the server is stopped: uv_run ends. */
static void host_stopped(host *h, int status, int cut) {
  STORE(&h->status, status);
  STORE(&h->cut, cut);
  STORE(&h->done_at, now_ms());
  STORE(&h->done_calls, LOAD(&h->done_calls) + 1);
  uv_close((uv_handle_t *)&h->cmd, NULL);
  uv_close((uv_handle_t *)&h->tick, NULL);
}

static void http_stopped(grace_http_server *srv, int status, int cut,
                         void *data) {
  host *h = data;
  assert_ptr_equal(srv, h->http);
  host_stopped(h, status, cut);
}

static void grpc_stopped(grace_grpc_server *srv, int status, int cut,
                         void *data) {
  host *h = data;
  assert_ptr_equal(srv, h->grpc);
  host_stopped(h, status, cut);
}

static void tcp_stopped(grace_tcp_server *srv, int status, int cut,
                        void *data) {
  host *h = data;
  assert_ptr_equal(srv, h->tcp);
  host_stopped(h, status, cut);
}

static void *host_main(void *arg) {
  host *h = arg;
  int rv = h->http != NULL   ? grace_http_server_start_uv(h->http, &h->loop)
           : h->grpc != NULL ? grace_grpc_server_start_uv(h->grpc, &h->loop)
                             : grace_tcp_server_start_uv(h->tcp, &h->loop);
  STORE(&h->start_rv, rv);
  STORE(&h->started, 1);
  if (rv != 0)
    return NULL;
  uv_run(&h->loop, UV_RUN_DEFAULT);
  STORE(&h->loop_close_rv, uv_loop_close(&h->loop));
  STORE(&h->exited, 1);
  return NULL;
}

static void host_start(host *h) {
  assert_int_equal(uv_loop_init(&h->loop), 0);
  assert_int_equal(uv_async_init(&h->loop, &h->cmd, on_cmd), 0);
  h->cmd.data = h;
  assert_int_equal(uv_timer_init(&h->loop, &h->tick), 0);
  h->tick.data = h;
  assert_int_equal(uv_timer_start(&h->tick, on_tick, 5, 5), 0);
  assert_int_equal(pthread_create(&h->thread, NULL, host_main, h), 0);
  assert_int_equal(wait_set(&h->started, 2000), 1);
  assert_int_equal(LOAD(&h->start_rv), 0);
}

/* Runs |fn| on the host's loop thread; returns what it returned. */
static int on_loop(host *h, host_fn fn) {
  STORE(&h->fn_done, 0);
  STORE(&h->fn, fn);
  uv_async_send(&h->cmd);
  assert_int_equal(wait_set(&h->fn_done, 2000), 1);
  return LOAD(&h->fn_rv);
}

/* After the stop callback: uv_run returns, and the loop closes cleanly. */
static void host_join(host *h) {
  assert_int_equal(pthread_join(h->thread, NULL), 0);
  assert_int_equal(LOAD(&h->exited), 1);
  assert_int_equal(LOAD(&h->loop_close_rv), 0);
  assert_int_equal(LOAD(&h->done_calls), 1);
}

/* The stop asked by |stop| with a 100 ms deadline ends at the deadline,
 * with one request, call or connection cut. */
static grace_duration g_timeout;

static void stop_cuts_at_deadline(host *h, host_fn stop) {
  g_timeout = 100 * GRACE_MILLISECOND;
  int64_t t0 = now_ms();
  assert_int_equal(on_loop(h, stop), 0);
  assert_int_equal(wait_set(&h->done_calls, 3000), 1);
  int64_t dt = LOAD(&h->done_at) - t0;
  assert_true(dt >= 90 && dt < 1500);
  assert_int_equal(LOAD(&h->status), GRACE_ETIMEDOUT);
  assert_int_equal(LOAD(&h->cut), 1);
}

/* The stop callback ran, with everything drained and nothing cut. */
static void stopped_clean(host *h) {
  assert_int_equal(wait_set(&h->done_calls, 3000), 1);
  assert_int_equal(LOAD(&h->status), 0);
  assert_int_equal(LOAD(&h->cut), 0);
}

/* ---- HTTP ---------------------------------------------------------------- */

typedef struct held {
  grace_http_request *req;
  int cancelled;
} held;

static held g_held;

static void hello(grace_http_request *req, void *data) {
  (void)data;
  grace_http_respond(req, 200, "hello\n", 6);
}

static void hold(grace_http_request *req, void *data) {
  held *hd = data;
  STORE(&hd->req, req);
}

static void hold_cancel(grace_http_request *req, void *data) {
  held *hd = data;
  STORE(&hd->req, NULL);
  STORE(&hd->cancelled, 1);
  grace_http_request_abandon(req);
}

static void hold_cancellable(grace_http_request *req, void *data) {
  held *hd = data;
  grace_http_request_on_cancel(req, hold_cancel, hd);
  STORE(&hd->req, req);
}

static void wait_held(void) {
  for (int i = 0; i < 2000 && LOAD(&g_held.req) == NULL; i++)
    usleep(1000);
  assert_non_null(LOAD(&g_held.req));
}

static void http_host_start(host *h) {
  memset(h, 0, sizeof(*h));
  memset(&g_held, 0, sizeof(g_held));
  grace_http_options opts;
  grace_http_options_init(&opts);
  opts.loops = 4; /* ignored on the caller's loop */
  assert_int_equal(grace_http_server_new(&opts, &h->http), 0);
  assert_int_equal(grace_http_server_handle(h->http, "/hello", hello, NULL), 0);
  assert_int_equal(grace_http_server_handle(h->http, "/hold", hold, &g_held),
                   0);
  assert_int_equal(
      grace_http_server_handle(h->http, "/holdc", hold_cancellable, &g_held),
      0);
  assert_int_equal(grace_http_server_listen(h->http, "127.0.0.1:0"), 0);
  host_start(h);
}

static int http_shutdown_uv(host *h) {
  return grace_http_server_shutdown_uv(h->http, g_timeout, http_stopped, h);
}

static int http_shutdown_blocking(host *h) {
  return grace_http_server_shutdown(h->http, NULL);
}

static int http_close(host *h) { return grace_http_server_close(h->http); }

static void test_http_inflight_finished_idle_closed(void **state) {
  (void)state;
  host h;
  char buf[4096];
  http_host_start(&h);
  int port = grace_http_server_port(h.http, 0);

  int idle = dial(port);
  send_str(idle, "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n");
  recv_until(idle, buf, sizeof(buf), "hello\n", 2000);
  assert_non_null(strstr(buf, "HTTP/1.1 200 OK"));
  int busy = dial(port);
  send_str(busy, "GET /hold HTTP/1.1\r\nHost: x\r\n\r\n");
  wait_held();
  /* The caller's own timer runs on the same loop as the server. */
  assert_true(wait_set(&h.ticks, 2000) > 0);

  /* Waiting on the loop's own thread would stop that loop: refused. */
  assert_int_equal(on_loop(&h, http_shutdown_blocking), GRACE_EDEADLK);
  /* The non-blocking form belongs to the loop's thread. */
  assert_int_equal(grace_http_server_shutdown_uv(h.http, 0, http_stopped, &h),
                   GRACE_ESTATE);

  g_timeout = 0;
  assert_int_equal(on_loop(&h, http_shutdown_uv), 0);
  assert_int_equal(on_loop(&h, http_shutdown_uv), GRACE_ESHUTDOWN);
  /* Listeners were closed before it returned; idle closed at once. */
  assert_int_equal(dial(port), -ECONNREFUSED);
  assert_true(peer_closed(idle, 200));
  close(idle);
  /* Not stopped while a request is in flight. */
  usleep(50000);
  assert_int_equal(LOAD(&h.done_calls), 0);

  /* Answered from this thread: the answer reaches the loop through the
   * server's async handle; the connection closes after it. */
  int64_t t_answer = now_ms();
  grace_http_respond(LOAD(&g_held.req), 200, "late", 4);
  recv_until(busy, buf, sizeof(buf), "late", 2000);
  assert_non_null(strstr(buf, "HTTP/1.1 200 OK"));
  assert_non_null(strstr(buf, "Connection: close\r\n"));
  assert_true(peer_closed(busy, 1000));
  close(busy);
  stopped_clean(&h);
  assert_true(LOAD(&h.done_at) - t_answer < 500);
  host_join(&h);

  grace_http_stats st;
  grace_http_server_stats(h.http, &st);
  assert_int_equal(st.conns_open, 0);
  assert_int_equal(st.requests_cut, 0);
  assert_true(st.idle_closed_on_shutdown >= 1);
  grace_http_server_free(h.http);
}

static void test_http_deadline_cuts_handler_that_never_answers(void **state) {
  (void)state;
  host h;
  http_host_start(&h);
  int busy = dial(grace_http_server_port(h.http, 0));
  send_str(busy, "GET /holdc HTTP/1.1\r\nHost: x\r\n\r\n");
  wait_held();

  stop_cuts_at_deadline(&h, http_shutdown_uv);
  assert_int_equal(LOAD(&g_held.cancelled), 1);
  assert_true(peer_closed(busy, 1000));
  close(busy);
  host_join(&h);
  grace_http_stats st;
  grace_http_server_stats(h.http, &st);
  assert_int_equal(st.requests_cut, 1);
  grace_http_server_free(h.http);
}

static void test_http_force_on_the_loop(void **state) {
  (void)state;
  host h;
  http_host_start(&h);
  int busy = dial(grace_http_server_port(h.http, 0));
  send_str(busy, "GET /holdc HTTP/1.1\r\nHost: x\r\n\r\n");
  wait_held();

  g_timeout = 0; /* no deadline: only the force ends it */
  assert_int_equal(on_loop(&h, http_shutdown_uv), 0);
  usleep(50000);
  assert_int_equal(LOAD(&h.done_calls), 0);
  /* On the loop's thread the close does not wait: it cuts at once. */
  assert_int_equal(on_loop(&h, http_close), 1);
  assert_int_equal(wait_set(&h.done_calls, 2000), 1);
  assert_int_equal(LOAD(&h.status), 0);
  assert_int_equal(LOAD(&h.cut), 1);
  assert_int_equal(LOAD(&g_held.cancelled), 1);
  assert_true(peer_closed(busy, 1000));
  close(busy);
  host_join(&h);
  grace_http_server_free(h.http);
}

/* Nothing open: the stop completes on the next turn of the loop. */
static void test_http_stop_with_nothing_open(void **state) {
  (void)state;
  host h;
  http_host_start(&h);
  g_timeout = 0;
  assert_int_equal(on_loop(&h, http_shutdown_uv), 0);
  assert_int_equal(wait_set(&h.done_calls, 2000), 1);
  assert_int_equal(LOAD(&h.status), 0);
  host_join(&h);
  grace_http_server_free(h.http);
}

/* ---- gRPC ---------------------------------------------------------------- */

static grace_grpc_call *g_call;
static int g_call_cancelled;

static void grpc_hold(grace_grpc_call *call, const void *msg, void *data) {
  (void)msg;
  (void)data;
  STORE(&g_call, call);
}

static void grpc_hold_cancel(grace_grpc_call *call, void *data) {
  (void)data;
  STORE(&g_call, NULL);
  STORE(&g_call_cancelled, 1);
  grace_grpc_call_finish(call, GRACE_GRPC_CANCELLED, NULL);
}

static void grpc_host_start(host *h) {
  memset(h, 0, sizeof(*h));
  STORE(&g_call, NULL);
  STORE(&g_call_cancelled, 0);
  assert_int_equal(grace_grpc_server_new(NULL, &h->grpc), 0);
  grace_grpc_method m = {.path = "/t.T/Hold",
                         .on_message = grpc_hold,
                         .on_cancel = grpc_hold_cancel};
  assert_int_equal(grace_grpc_server_register(h->grpc, &m), 0);
  assert_int_equal(grace_grpc_server_listen(h->grpc, "127.0.0.1:0"), 0);
  host_start(h);
}

/* One unary call on its own thread (the channel blocks). */
typedef struct client_call {
  pthread_t thread;
  grace_grpc_channel *ch;
  int rv, done;
  char resp[64];
} client_call;

static void *client_main(void *arg) {
  client_call *c = arg;
  uint8_t *resp = NULL;
  size_t len = 0;
  grace_grpc_status st;
  memset(&st, 0, sizeof(st));
  int rv = grace_grpc_channel_unary(c->ch, "/t.T/Hold", "x", 1, NULL, &resp,
                                    &len, &st);
  if (rv == 0) {
    size_t n = len < sizeof(c->resp) - 1 ? len : sizeof(c->resp) - 1;
    memcpy(c->resp, resp, n);
    c->resp[n] = '\0';
    free(resp);
  }
  grace_grpc_status_clear(&st);
  STORE(&c->rv, rv);
  STORE(&c->done, 1);
  return NULL;
}

static void client_start(client_call *c, int port) {
  char target[32];
  memset(c, 0, sizeof(*c));
  snprintf(target, sizeof(target), "127.0.0.1:%d", port);
  assert_int_equal(grace_grpc_channel_new(target, NULL, &c->ch), 0);
  assert_int_equal(pthread_create(&c->thread, NULL, client_main, c), 0);
  for (int i = 0; i < 2000 && LOAD(&g_call) == NULL; i++)
    usleep(1000);
  assert_non_null(LOAD(&g_call));
}

static void client_end(client_call *c) {
  assert_int_equal(pthread_join(c->thread, NULL), 0);
  grace_grpc_channel_free(c->ch);
}

static int grpc_stop_uv(host *h) {
  return grace_grpc_server_graceful_stop_uv(h->grpc, g_timeout, grpc_stopped,
                                            h);
}

static int grpc_stop_blocking(host *h) {
  return grace_grpc_server_graceful_stop(h->grpc, NULL, NULL);
}

static int grpc_stop_hard(host *h) { return grace_grpc_server_stop(h->grpc); }

static void test_grpc_inflight_call_finished(void **state) {
  (void)state;
  host h;
  client_call c;
  grpc_host_start(&h);
  int port = grace_grpc_server_port(h.grpc, 0);
  client_start(&c, port);

  assert_int_equal(on_loop(&h, grpc_stop_blocking), GRACE_EDEADLK);
  g_timeout = 0;
  assert_int_equal(on_loop(&h, grpc_stop_uv), 0);
  assert_int_equal(on_loop(&h, grpc_stop_uv), GRACE_ESHUTDOWN);
  assert_int_equal(dial(port), -ECONNREFUSED);
  usleep(50000);
  assert_int_equal(LOAD(&h.done_calls), 0);
  assert_int_equal(LOAD(&c.done), 0);

  /* Finished from this thread: the call completes, then the stop. */
  grace_grpc_call *call = LOAD(&g_call);
  assert_int_equal(grace_grpc_call_send_bytes(call, "done", 4), 0);
  grace_grpc_call_finish(call, GRACE_GRPC_OK, NULL);
  client_end(&c);
  assert_int_equal(c.rv, 0);
  assert_string_equal(c.resp, "done");
  stopped_clean(&h);
  assert_int_equal(LOAD(&g_call_cancelled), 0);
  host_join(&h);
  grace_grpc_server_free(h.grpc);
}

static void test_grpc_deadline_cuts_call(void **state) {
  (void)state;
  host h;
  client_call c;
  grpc_host_start(&h);
  client_start(&c, grace_grpc_server_port(h.grpc, 0));

  stop_cuts_at_deadline(&h, grpc_stop_uv);
  assert_int_equal(LOAD(&g_call_cancelled), 1);
  client_end(&c);
  assert_int_equal(c.rv, GRACE_GRPC_UNAVAILABLE);
  host_join(&h);
  grace_grpc_server_free(h.grpc);
}

static void test_grpc_force_on_the_loop(void **state) {
  (void)state;
  host h;
  client_call c;
  grpc_host_start(&h);
  client_start(&c, grace_grpc_server_port(h.grpc, 0));
  g_timeout = 0;
  assert_int_equal(on_loop(&h, grpc_stop_uv), 0);
  assert_int_equal(on_loop(&h, grpc_stop_hard), 1);
  assert_int_equal(wait_set(&h.done_calls, 2000), 1);
  assert_int_equal(LOAD(&h.cut), 1);
  assert_int_equal(LOAD(&g_call_cancelled), 1);
  client_end(&c);
  assert_int_equal(c.rv, GRACE_GRPC_UNAVAILABLE);
  host_join(&h);
  grace_grpc_server_free(h.grpc);
}

/* ---- the caller's own TCP protocol --------------------------------------- */

/* "PING\n" answers "PONG\n"; "HOLD\n" makes the connection busy until the
 * test answers it from its own thread; "BUSY\n" makes it busy for ever. */
static grace_tcp_conn *g_tcp_held;
static int g_tcp_closed;

static size_t tcp_data(grace_tcp_conn *conn, const char *p, size_t n,
                       void *data) {
  (void)data;
  const char *nl = memchr(p, '\n', n);
  if (nl == NULL)
    return 0;
  if (strncmp(p, "PING\n", 5) == 0) {
    grace_tcp_conn_write(conn, "PONG\n", 5);
  } else if (strncmp(p, "HOLD\n", 5) == 0) {
    grace_tcp_conn_set_busy(conn, true);
    grace_tcp_conn_hold(conn); /* released by the test's post */
    STORE(&g_tcp_held, conn);
  } else if (strncmp(p, "BUSY\n", 5) == 0) {
    grace_tcp_conn_set_busy(conn, true); /* for ever */
    STORE(&g_tcp_held, conn);
  }
  return (size_t)(nl - p) + 1;
}

static void tcp_close(grace_tcp_conn *conn, void *data) {
  (void)conn;
  (void)data;
  STORE(&g_tcp_closed, LOAD(&g_tcp_closed) + 1);
}

/* On the loop, posted from the test thread. */
static void tcp_answer(grace_tcp_conn *conn, void *data) {
  (void)data;
  if (!grace_tcp_conn_closed(conn)) {
    grace_tcp_conn_write(conn, "DONE\n", 5);
    grace_tcp_conn_set_busy(conn, false);
  }
}

static void tcp_host_start(host *h) {
  memset(h, 0, sizeof(*h));
  STORE(&g_tcp_held, NULL);
  STORE(&g_tcp_closed, 0);
  grace_tcp_callbacks cb = {.on_data = tcp_data, .on_close = tcp_close};
  assert_int_equal(grace_tcp_server_new(NULL, &cb, NULL, &h->tcp), 0);
  assert_int_equal(grace_tcp_server_listen(h->tcp, "127.0.0.1:0"), 0);
  host_start(h);
}

static void wait_tcp_held(void) {
  for (int i = 0; i < 2000 && LOAD(&g_tcp_held) == NULL; i++)
    usleep(1000);
  assert_non_null(LOAD(&g_tcp_held));
}

static int tcp_shutdown_uv(host *h) {
  return grace_tcp_server_shutdown_uv(h->tcp, g_timeout, tcp_stopped, h);
}

static int tcp_shutdown_blocking(host *h) {
  return grace_tcp_server_shutdown(h->tcp, NULL);
}

static void test_tcp_busy_finished_idle_closed(void **state) {
  (void)state;
  host h;
  char buf[256];
  tcp_host_start(&h);
  int port = grace_tcp_server_port(h.tcp, 0);
  int idle = dial(port);
  send_str(idle, "PING\n");
  recv_until(idle, buf, sizeof(buf), "PONG\n", 2000);
  assert_string_equal(buf, "PONG\n");
  int busy = dial(port);
  send_str(busy, "HOLD\n");
  wait_tcp_held();

  assert_int_equal(on_loop(&h, tcp_shutdown_blocking), GRACE_EDEADLK);
  g_timeout = 0;
  assert_int_equal(on_loop(&h, tcp_shutdown_uv), 0);
  assert_int_equal(dial(port), -ECONNREFUSED);
  assert_true(peer_closed(idle, 200));
  close(idle);
  usleep(50000);
  assert_int_equal(LOAD(&h.done_calls), 0);

  /* Answered through the loop's async handle, from this thread. */
  assert_int_equal(grace_tcp_conn_post(LOAD(&g_tcp_held), tcp_answer, NULL), 0);
  recv_until(busy, buf, sizeof(buf), "DONE\n", 2000);
  assert_string_equal(buf, "DONE\n");
  assert_true(peer_closed(busy, 1000));
  close(busy);
  stopped_clean(&h);
  assert_int_equal(LOAD(&g_tcp_closed), 2);
  host_join(&h);
  grace_tcp_server_free(h.tcp);
}

static void test_tcp_deadline_cuts_busy_connection(void **state) {
  (void)state;
  host h;
  tcp_host_start(&h);
  int busy = dial(grace_tcp_server_port(h.tcp, 0));
  send_str(busy, "BUSY\n");
  wait_tcp_held();
  stop_cuts_at_deadline(&h, tcp_shutdown_uv);
  assert_true(peer_closed(busy, 1000));
  close(busy);
  host_join(&h);
  grace_tcp_stats st;
  grace_tcp_server_stats(h.tcp, &st);
  assert_int_equal(st.conns_cut, 1);
  grace_tcp_server_free(h.tcp);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_http_inflight_finished_idle_closed),
      cmocka_unit_test(test_http_deadline_cuts_handler_that_never_answers),
      cmocka_unit_test(test_http_force_on_the_loop),
      cmocka_unit_test(test_http_stop_with_nothing_open),
      cmocka_unit_test(test_grpc_inflight_call_finished),
      cmocka_unit_test(test_grpc_deadline_cuts_call),
      cmocka_unit_test(test_grpc_force_on_the_loop),
      cmocka_unit_test(test_tcp_busy_finished_idle_closed),
      cmocka_unit_test(test_tcp_deadline_cuts_busy_connection),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
