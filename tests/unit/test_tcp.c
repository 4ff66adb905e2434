/*
 * Unit tests of the TCP server (grace/tcp.h): the protocol adapter in the
 * transport's memory mode (no socket; bytes fed, output read back), then
 * a real server on 127.0.0.1 for the loops, the shutdown across them, the
 * force and posts from another thread.
 *
 * The protocol under test is a small line protocol:
 *   PING  -> +PONG            BUSY  -> busy until the test says
 *   END   -> +BYE, then end   WAIT  -> busy, +OK 100 ms later (sockets)
 *   WORK  -> busy; another thread answers +DONE through a post (sockets)
 *   QUIT  -> closes at once
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <uv.h>

#include "grace/group.h"
#include "grace/tcp.h"
#include "tcp/tcp_int.h"
#include "loopback.h"

/* ---- the protocol -------------------------------------------------------- */

typedef struct proto {
  atomic_int opens, closes, shutdowns, writables, datas;
  atomic_int refused; /* writes refused with GRACE_EBUSY */
  int keep;           /* on_shutdown's answer */
} proto;

typedef struct wait_timer {
  uv_timer_t timer;
  grace_tcp_conn *conn; /* NULL once the connection closed */
} wait_timer;

static void wait_closed(uv_handle_t *h) { free(h->data); }

static void wait_done(uv_timer_t *timer) {
  wait_timer *w = timer->data;
  if (w->conn != NULL) {
    grace_tcp_conn_write(w->conn, "+OK\n", 4);
    grace_tcp_conn_set_data(w->conn, NULL);
    grace_tcp_conn_set_busy(w->conn, false);
  }
  uv_close((uv_handle_t *)timer, wait_closed);
}

static void *work_thread(void *arg);

/* Answers one line; returns 0, or -1 when its answer was refused (the
 * line is then left for later). */
static int one_line(grace_tcp_conn *conn, proto *pr, const char *line,
                    size_t len) {
  if (len == 4 && memcmp(line, "PING", 4) == 0) {
    int rv = grace_tcp_conn_write(conn, "+PONG\n", 6);
    if (rv == GRACE_EBUSY) {
      atomic_fetch_add(&pr->refused, 1);
      return -1;
    }
  } else if (len == 4 && memcmp(line, "BUSY", 4) == 0) {
    grace_tcp_conn_set_busy(conn, true);
  } else if (len == 3 && memcmp(line, "END", 3) == 0) {
    grace_tcp_conn_write(conn, "+BYE\n", 5);
    grace_tcp_conn_end(conn);
  } else if (len == 4 && memcmp(line, "QUIT", 4) == 0) {
    grace_tcp_conn_close(conn);
  } else if (len == 4 && memcmp(line, "WAIT", 4) == 0) {
    wait_timer *w = calloc(1, sizeof(*w));
    assert_non_null(w);
    w->conn = conn;
    uv_timer_init(grace_tcp_conn_loop(conn), &w->timer);
    w->timer.data = w;
    grace_tcp_conn_set_data(conn, w);
    grace_tcp_conn_set_busy(conn, true);
    uv_timer_start(&w->timer, wait_done, 100, 0);
  } else if (len == 4 && memcmp(line, "WORK", 4) == 0) {
    pthread_t th;
    grace_tcp_conn_set_busy(conn, true);
    grace_tcp_conn_hold(conn);
    assert_int_equal(pthread_create(&th, NULL, work_thread, conn), 0);
    pthread_detach(th);
  } else {
    grace_tcp_conn_write(conn, "-ERR\n", 5);
  }
  return 0;
}

static size_t on_data(grace_tcp_conn *conn, const char *p, size_t n,
                      void *data) {
  proto *pr = data;
  size_t off = 0;
  atomic_fetch_add(&pr->datas, 1);
  while (off < n && !grace_tcp_conn_is_busy(conn) &&
         !grace_tcp_conn_closed(conn)) {
    const char *nl = memchr(p + off, '\n', n - off);
    if (nl == NULL)
      break;
    if (one_line(conn, pr, p + off, (size_t)(nl - (p + off))) != 0)
      break;
    off = (size_t)(nl - p) + 1;
  }
  return off;
}

static void on_open(grace_tcp_conn *conn, void *data) {
  proto *pr = data;
  (void)conn;
  atomic_fetch_add(&pr->opens, 1);
}

static int on_shutdown(grace_tcp_conn *conn, void *data) {
  proto *pr = data;
  (void)conn;
  atomic_fetch_add(&pr->shutdowns, 1);
  return pr->keep;
}

static void on_writable(grace_tcp_conn *conn, void *data) {
  proto *pr = data;
  atomic_fetch_add(&pr->writables, 1);
  grace_tcp_conn_resume(conn);
}

static void on_close(grace_tcp_conn *conn, void *data) {
  proto *pr = data;
  wait_timer *w = grace_tcp_conn_data(conn);
  if (w != NULL) {
    /* A WAIT in progress: its timer answers nobody. */
    w->conn = NULL;
    uv_timer_stop(&w->timer);
    uv_close((uv_handle_t *)&w->timer, wait_closed);
  }
  atomic_fetch_add(&pr->closes, 1);
}

static const grace_tcp_callbacks callbacks = {
    .on_open = on_open,
    .on_data = on_data,
    .on_shutdown = on_shutdown,
    .on_writable = on_writable,
    .on_close = on_close,
};

/* ---- memory mode ----------------------------------------------------------
 */

typedef struct fixture {
  proto pr;
  grace_tcp_server *srv;
  grace__conn *c;
} fixture;

static fixture *fx_new_opts(const grace_tcp_options *opts, size_t room) {
  fixture *fx = calloc(1, sizeof(*fx));
  assert_non_null(fx);
  assert_int_equal(grace_tcp_server_new(opts, &callbacks, &fx->pr, &fx->srv),
                   0);
  fx->c = grace__tcp_mem_conn(fx->srv, room);
  assert_non_null(fx->c);
  assert_int_equal(atomic_load(&fx->pr.opens), 1);
  return fx;
}

static fixture *fx_new(void) { return fx_new_opts(NULL, SIZE_MAX); }

static void fx_free(fixture *fx) {
  grace__conn_mem_free(fx->c);
  assert_int_equal(atomic_load(&fx->pr.closes), 1);
  grace_tcp_stats st;
  grace_tcp_server_stats(fx->srv, &st);
  assert_int_equal(st.conns_open, 0);
  grace_tcp_server_free(fx->srv);
  free(fx);
}

static grace_tcp_conn *tconn(fixture *fx) { return fx->c->pdata; }

static ssize_t feed(fixture *fx, const char *s) {
  return grace__conn_mem_feed(fx->c, s, strlen(s));
}

/* The output so far as a string (taken: the peer read it). */
static char *output(fixture *fx) {
  size_t len;
  const uint8_t *p = grace__conn_mem_output(fx->c, &len);
  char *s = malloc(len + 1);
  assert_non_null(s);
  if (len > 0)
    memcpy(s, p, len);
  s[len] = '\0';
  grace__conn_mem_take(fx->c, len);
  return s;
}

static void assert_output(fixture *fx, const char *want) {
  char *got = output(fx);
  assert_string_equal(got, want);
  free(got);
}

static grace_tcp_stats stats(fixture *fx) {
  grace_tcp_stats st;
  grace_tcp_server_stats(fx->srv, &st);
  return st;
}

static void shut(fixture *fx) {
  grace__tcp_spread_begin(fx->srv);
  grace__conn_shutdown(fx->c);
}

static void partial_lines_wait_for_their_end(void **state) {
  fixture *fx = fx_new();
  (void)state;
  assert_int_equal(feed(fx, "PI"), 2);
  assert_output(fx, "");
  assert_int_equal(feed(fx, "NG\nPING\nPI"), 10);
  assert_output(fx, "+PONG\n+PONG\n");
  assert_int_equal(feed(fx, "NG\n"), 3);
  assert_output(fx, "+PONG\n");
  assert_int_equal(fx->c->rlen, 0);
  fx_free(fx);
}

static void pipelined_commands_are_all_answered_in_order(void **state) {
  fixture *fx = fx_new();
  size_t n = 1000, len = 5 * n;
  char *in = malloc(len + 1);
  (void)state;
  assert_non_null(in);
  for (size_t i = 0; i < n; i++)
    memcpy(in + 5 * i, "PING\n", 5);
  in[len] = '\0';
  assert_int_equal(grace__conn_mem_feed(fx->c, in, len), (ssize_t)len);
  char *out = output(fx);
  assert_int_equal(strlen(out), 6 * n);
  for (size_t i = 0; i < n; i++)
    assert_memory_equal(out + 6 * i, "+PONG\n", 6);
  free(out);
  free(in);
  fx_free(fx);
}

static void busy_holds_what_follows_until_idle(void **state) {
  fixture *fx = fx_new();
  (void)state;
  assert_int_equal(feed(fx, "BUSY\nPING\n"), 10);
  assert_true(grace_tcp_conn_is_busy(tconn(fx)));
  assert_output(fx, "");
  grace_tcp_stats st = stats(fx);
  assert_int_equal(st.conns_busy, 1);
  assert_int_equal(st.conns_idle, 0);
  assert_int_equal(st.busy_total, 1);
  /* More arrives meanwhile: still held. */
  assert_int_equal(feed(fx, "PING\n"), 5);
  assert_output(fx, "");
  grace_tcp_conn_set_busy(tconn(fx), false);
  assert_output(fx, "+PONG\n+PONG\n");
  st = stats(fx);
  assert_int_equal(st.conns_busy, 0);
  assert_int_equal(st.conns_idle, 1);
  assert_int_equal(st.conns_cut, 0);
  fx_free(fx);
}

static void writes_past_the_high_water_mark_are_refused(void **state) {
  grace_tcp_options o;
  grace_tcp_options_init(&o);
  o.write_high_water = 60; /* ten answers */
  fixture *fx = fx_new_opts(&o, 0); /* the peer reads nothing */
  size_t n = 100, len = 5 * n;
  char *in = malloc(len);
  (void)state;
  assert_non_null(in);
  for (size_t i = 0; i < n; i++)
    memcpy(in + 5 * i, "PING\n", 5);
  ssize_t took = grace__conn_mem_feed(fx->c, in, len);
  assert_int_equal(took, (ssize_t)len); /* kept: under max_input */
  /* Answers up to the mark plus one; the rest of the input waits. */
  size_t queued = grace_tcp_conn_queued(tconn(fx));
  assert_true(queued > 60 && queued <= 66);
  assert_int_equal(atomic_load(&fx->pr.refused), 1);
  assert_true(fx->c->rlen > 0);
  /* Held: more input does not reach on_data. */
  int datas = atomic_load(&fx->pr.datas);
  assert_int_equal(feed(fx, "PING\n"), 5);
  assert_int_equal(atomic_load(&fx->pr.datas), datas);
  /* The peer reads: writable, and the rest is served, round after round,
   * nothing lost. */
  size_t answers = 0;
  for (int round = 0; round < 100 && answers < n + 1; round++) {
    char *out = output(fx);
    answers += strlen(out) / 6;
    free(out);
  }
  assert_int_equal(answers, n + 1);
  assert_true(atomic_load(&fx->pr.writables) >= 1);
  assert_int_equal(fx->c->rlen, 0);
  free(in);
  fx_free(fx);
}

static void input_past_max_input_is_not_taken(void **state) {
  grace_tcp_options o;
  grace_tcp_options_init(&o);
  o.max_input = 4096;
  fixture *fx = fx_new_opts(&o, SIZE_MAX);
  char buf[3 * 4096];
  (void)state;
  memset(buf, 'x', sizeof(buf));
  ssize_t took = grace__conn_mem_feed(fx->c, buf, sizeof(buf));
  assert_true(took > 0 && took <= 4096);
  assert_int_equal(grace__conn_mem_feed(fx->c, buf, 10), 0);
  fx_free(fx);
}

static void end_writes_then_closes_and_a_busy_end_is_not_cut(void **state) {
  fixture *fx = fx_new();
  (void)state;
  assert_int_equal(feed(fx, "BUSY\n"), 5);
  grace_tcp_conn *conn = tconn(fx);
  assert_int_equal(grace_tcp_conn_write(conn, "+OK\n", 4), 0);
  grace_tcp_conn_end(conn);
  assert_true(grace_tcp_conn_closed(conn));
  assert_int_equal(grace_tcp_conn_write(conn, "x", 1), GRACE_ECLOSED);
  assert_output(fx, "+OK\n");
  grace_tcp_stats st = stats(fx);
  assert_int_equal(st.conns_cut, 0);
  assert_int_equal(st.conns_busy, 0);
  assert_int_equal(atomic_load(&fx->pr.closes), 1);
  fx_free(fx);
}

static void close_while_busy_is_cut(void **state) {
  fixture *fx = fx_new();
  (void)state;
  assert_int_equal(feed(fx, "BUSY\n"), 5);
  assert_int_equal(grace__conn_force(fx->c), 1);
  assert_int_equal(atomic_load(&fx->pr.closes), 1);
  grace_tcp_stats st = stats(fx);
  assert_int_equal(st.conns_cut, 1);
  assert_int_equal(st.conns_busy, 0);
  /* Closed: busy or not, nothing changes any more. */
  grace_tcp_conn_set_busy(tconn(fx), true);
  assert_int_equal(stats(fx).busy_total, 1);
  fx_free(fx);
}

static void idle_close_is_not_cut(void **state) {
  fixture *fx = fx_new();
  (void)state;
  assert_int_equal(grace__conn_force(fx->c), 0);
  assert_int_equal(stats(fx).conns_cut, 0);
  fx_free(fx);
}

static void eof_when_idle_closes(void **state) {
  fixture *fx = fx_new();
  (void)state;
  assert_int_equal(feed(fx, "PING\nPIN"), 8);
  assert_int_equal(grace__conn_mem_feed(fx->c, NULL, 0), 0);
  assert_true(grace_tcp_conn_closed(tconn(fx)));
  assert_int_equal(atomic_load(&fx->pr.closes), 1);
  assert_output(fx, "+PONG\n");
  fx_free(fx);
}

static void eof_while_busy_waits_for_the_answer(void **state) {
  fixture *fx = fx_new();
  (void)state;
  assert_int_equal(feed(fx, "BUSY\nPING\n"), 10);
  assert_int_equal(grace__conn_mem_feed(fx->c, NULL, 0), 0);
  assert_false(grace_tcp_conn_closed(tconn(fx)));
  grace_tcp_conn_write(tconn(fx), "+OK\n", 4);
  grace_tcp_conn_set_busy(tconn(fx), false);
  /* The command received before the EOF is served, then the close. */
  assert_true(grace_tcp_conn_closed(tconn(fx)));
  assert_output(fx, "+OK\n+PONG\n");
  assert_int_equal(stats(fx).conns_cut, 0);
  fx_free(fx);
}

/* ---- memory mode: the shutdown ------------------------------------------ */

static void shutdown_closes_an_idle_connection_at_once(void **state) {
  fixture *fx = fx_new();
  (void)state;
  assert_int_equal(feed(fx, "PING\n"), 5);
  shut(fx);
  assert_int_equal(atomic_load(&fx->pr.shutdowns), 1);
  assert_true(grace_tcp_conn_closed(tconn(fx)));
  assert_true(grace_tcp_conn_shutting_down(tconn(fx)));
  assert_int_equal(atomic_load(&fx->pr.closes), 1);
  assert_int_equal(stats(fx).idle_closed_on_shutdown, 1);
  assert_output(fx, "+PONG\n");
  fx_free(fx);
}

static void shutdown_waits_for_a_busy_connection(void **state) {
  fixture *fx = fx_new();
  (void)state;
  assert_int_equal(feed(fx, "BUSY\nPING\n"), 10);
  shut(fx);
  assert_false(grace_tcp_conn_closed(tconn(fx)));
  assert_int_equal(atomic_load(&fx->pr.closes), 0);
  grace_tcp_conn_write(tconn(fx), "+OK\n", 4);
  grace_tcp_conn_set_busy(tconn(fx), false);
  /* Idle with nothing left: closed, after the command already received
   * is served. */
  assert_true(grace_tcp_conn_closed(tconn(fx)));
  assert_output(fx, "+OK\n+PONG\n");
  grace_tcp_stats st = stats(fx);
  assert_int_equal(st.conns_cut, 0);
  assert_int_equal(st.idle_closed_on_shutdown, 0); /* closed after answers */
  fx_free(fx);
}

static void shutdown_lets_a_partial_command_finish(void **state) {
  fixture *fx = fx_new();
  (void)state;
  assert_int_equal(feed(fx, "PI"), 2);
  shut(fx);
  assert_false(grace_tcp_conn_closed(tconn(fx)));
  assert_int_equal(feed(fx, "NG\n"), 3);
  assert_true(grace_tcp_conn_closed(tconn(fx)));
  assert_output(fx, "+PONG\n");
  fx_free(fx);
}

static void shutdown_kept_by_the_protocol_stays_open(void **state) {
  fixture *fx = fx_new();
  (void)state;
  fx->pr.keep = 1;
  shut(fx);
  assert_false(grace_tcp_conn_closed(tconn(fx)));
  assert_int_equal(feed(fx, "PING\n"), 5);
  assert_false(grace_tcp_conn_closed(tconn(fx)));
  assert_int_equal(feed(fx, "END\n"), 4);
  assert_true(grace_tcp_conn_closed(tconn(fx)));
  assert_output(fx, "+PONG\n+BYE\n");
  assert_int_equal(stats(fx).idle_closed_on_shutdown, 0);
  fx_free(fx);
}

/* A clock the test moves. */
static int64_t fake_now_ns;
static int64_t fake_now(void *data) {
  (void)data;
  return fake_now_ns;
}

static void close_spread_gives_each_idle_connection_its_moment(void **state) {
  grace_tcp_options o;
  grace_tcp_options_init(&o);
  o.close_spread = GRACE_SECOND;
  fixture *fx = fx_new_opts(&o, SIZE_MAX);
  grace__clock clock = {.now = fake_now};
  (void)state;
  grace__tcp_server_set_clock(fx->srv, &clock);
  fake_now_ns = 1000 * GRACE_SECOND;
  shut(fx);
  grace_duration at = grace__tcp_spread_offset(fx->srv, fx->c->id);
  assert_true(at > 0 && at < GRACE_SECOND);
  /* Before its moment: served, kept open, idle or not. */
  assert_false(grace_tcp_conn_closed(tconn(fx)));
  assert_int_equal(feed(fx, "PING\n"), 5);
  assert_false(grace_tcp_conn_closed(tconn(fx)));
  /* After it: idle it stays, but its next command is its last. */
  fake_now_ns += at + 1;
  assert_false(grace_tcp_conn_closed(tconn(fx)));
  assert_int_equal(feed(fx, "PING\n"), 5);
  assert_true(grace_tcp_conn_closed(tconn(fx)));
  assert_output(fx, "+PONG\n+PONG\n");
  fx_free(fx);
}

static void close_spread_closes_what_is_idle_at_its_end(void **state) {
  grace_tcp_options o;
  grace_tcp_options_init(&o);
  o.close_spread = GRACE_SECOND;
  fixture *fx = fx_new_opts(&o, SIZE_MAX);
  grace__clock clock = {.now = fake_now};
  (void)state;
  grace__tcp_server_set_clock(fx->srv, &clock);
  fake_now_ns = 1000 * GRACE_SECOND;
  shut(fx);
  assert_false(grace_tcp_conn_closed(tconn(fx)));
  fake_now_ns += GRACE_SECOND;
  grace__tcp_spread_over(fx->c);
  assert_true(grace_tcp_conn_closed(tconn(fx)));
  assert_int_equal(stats(fx).idle_closed_on_shutdown, 1);
  fx_free(fx);
}

static void the_group_part_counts_connections_and_commands(void **state) {
  fixture *fx = fx_new();
  grace_group *g;
  grace_group_options go;
  char *text;
  (void)state;
  grace_group_options_init(&go);
  go.quiet = true;
  assert_int_equal(grace_group_new(&go, &g), 0);
  assert_int_equal(grace_group_add_tcp(g, "line", fx->srv), 0);
  assert_int_equal(grace_group_add_tcp(g, "again", NULL), GRACE_EINVAL);
  grace__conn *busy = grace__tcp_mem_conn(fx->srv, SIZE_MAX);
  assert_non_null(busy);
  assert_int_equal(grace__conn_mem_feed(busy, "BUSY\n", 5), 5);
  assert_int_equal(grace_group_metrics(g, &text, NULL), 0);
  assert_non_null(strstr(text, "grace_http_connections{part=\"line\","
                               "state=\"active\"} 1\n"));
  assert_non_null(strstr(text, "grace_http_connections{part=\"line\","
                               "state=\"idle\"} 1\n"));
  assert_non_null(strstr(text, "grace_http_requests_inflight{part=\"line\"} "
                               "1\n"));
  assert_non_null(strstr(text, "grace_http_requests_total{part=\"line\"} "
                               "1\n"));
  free(text);
  grace_tcp_conn_end(busy->pdata); /* answered: completed, not cut */
  assert_int_equal(grace_group_metrics(g, &text, NULL), 0);
  assert_non_null(strstr(text, "grace_requests_cut_total{part=\"line\"} 0\n"));
  assert_non_null(strstr(text, "grace_http_requests_inflight{part=\"line\"} "
                               "0\n"));
  free(text);
  grace__conn_mem_free(busy);
  grace_group_free(g);
  assert_int_equal(atomic_load(&fx->pr.closes), 1);
  atomic_store(&fx->pr.closes, 0);
  fx_free(fx);
}

static void options_are_checked(void **state) {
  grace_tcp_server *srv = NULL;
  grace_tcp_options o;
  grace_tcp_callbacks none = {0};
  proto pr;
  (void)state;
  memset(&pr, 0, sizeof(pr));
  assert_int_equal(grace_tcp_server_new(NULL, NULL, NULL, &srv), GRACE_EINVAL);
  assert_int_equal(grace_tcp_server_new(NULL, &none, NULL, &srv),
                   GRACE_EINVAL);
  assert_int_equal(grace_tcp_server_new(NULL, &callbacks, &pr, NULL),
                   GRACE_EINVAL);
  grace_tcp_options_init(&o);
  o.max_input = 10;
  assert_int_equal(grace_tcp_server_new(&o, &callbacks, &pr, &srv),
                   GRACE_EINVAL);
  grace_tcp_options_init(&o);
  o.read_timeout = -1;
  assert_int_equal(grace_tcp_server_new(&o, &callbacks, &pr, &srv),
                   GRACE_EINVAL);
  grace_tcp_options_init(&o);
  o.size = sizeof(o) + 8;
  assert_int_equal(grace_tcp_server_new(&o, &callbacks, &pr, &srv),
                   GRACE_EINVAL);
  assert_null(srv);
  /* Not started: nothing to shut down; listen on a bad address. */
  assert_int_equal(grace_tcp_server_new(NULL, &callbacks, &pr, &srv), 0);
  assert_int_equal(grace_tcp_server_start(srv), GRACE_ESTATE);
  assert_int_equal(grace_tcp_server_shutdown_begin(srv, NULL, NULL),
                   GRACE_ESTATE);
  assert_int_equal(grace_tcp_server_listen(srv, "nocolon"), GRACE_EINVAL);
  assert_int_equal(grace_tcp_server_port(srv, 0), GRACE_EINVAL);
  assert_int_equal(grace_tcp_server_close(srv), 0);
  grace_tcp_server_free(srv);
  grace_tcp_server_free(NULL);
}

/* ---- a real server ------------------------------------------------------- */

static void work_done(grace_tcp_conn *conn, void *data) {
  (void)data;
  if (grace_tcp_conn_closed(conn))
    return;
  grace_tcp_conn_write(conn, "+DONE\n", 6);
  grace_tcp_conn_set_busy(conn, false);
}

/* Another thread's work: its answer goes back through a post. */
static void *work_thread(void *arg) {
  struct timespec ts = {.tv_sec = 0, .tv_nsec = 50 * 1000 * 1000};
  nanosleep(&ts, NULL);
  if (grace_tcp_conn_post(arg, work_done, NULL) != 0)
    abort();
  return NULL;
}

static int64_t now_ms(void) { return grace_now() / GRACE_MILLISECOND; }

typedef struct live {
  proto pr;
  grace_tcp_server *srv;
  int port;
} live;

static live *live_start(grace_tcp_options *o) {
  live *lv = calloc(1, sizeof(*lv));
  grace_tcp_options d;
  assert_non_null(lv);
  if (o == NULL) {
    grace_tcp_options_init(&d);
    o = &d;
  }
  if (o->loops == 0)
    o->loops = 2;
  assert_int_equal(grace_tcp_server_new(o, &callbacks, &lv->pr, &lv->srv), 0);
  assert_int_equal(grace_tcp_server_listen(lv->srv, "127.0.0.1:0"), 0);
  lv->port = grace_tcp_server_port(lv->srv, 0);
  assert_true(lv->port > 0);
  assert_int_equal(grace_tcp_server_start(lv->srv), 0);
  return lv;
}

static void live_free(live *lv) {
  grace_tcp_server_free(lv->srv);
  assert_int_equal(atomic_load(&lv->pr.closes), atomic_load(&lv->pr.opens));
  free(lv);
}

static void on_drained(grace_tcp_server *srv, void *data) {
  (void)srv;
  atomic_store((atomic_int *)data, 1);
}

static void shutdown_closes_idle_waits_for_busy_refuses_new(void **state) {
  live *lv = live_start(NULL);
  char buf[256];
  atomic_int drained = 0;
  (void)state;
  int a = dial(lv->port), b = dial(lv->port), c = dial(lv->port);
  assert_true(a >= 0 && b >= 0 && c >= 0);
  send_str(a, "PING\n");
  recv_until(a, buf, sizeof(buf), "+PONG\n", 2000);
  assert_string_equal(buf, "+PONG\n");
  send_str(c, "PING\n");
  recv_until(c, buf, sizeof(buf), "+PONG\n", 2000);
  send_str(b, "WAIT\n");
  /* b's command is in progress when the shutdown begins. */
  while (atomic_load(&lv->pr.datas) < 3)
    usleep(1000);
  int64_t t0 = now_ms();
  assert_int_equal(grace_tcp_server_shutdown_begin(lv->srv, on_drained,
                                                   &drained),
                   0);
  assert_int_equal(grace_tcp_server_shutdown_begin(lv->srv, NULL, NULL),
                   GRACE_ESHUTDOWN);
  assert_int_equal(dial(lv->port), -ECONNREFUSED);
  assert_true(peer_closed(a, 1000));
  assert_true(peer_closed(c, 1000));
  assert_true(now_ms() - t0 < 90); /* at once, not after b's answer */
  recv_until(b, buf, sizeof(buf), "+OK\n", 2000);
  assert_string_equal(buf, "+OK\n");
  assert_true(peer_closed(b, 1000));
  struct pollfd p = {.fd = grace_tcp_server_drained_fd(lv->srv),
                     .events = POLLIN};
  assert_int_equal(poll(&p, 1, 2000), 1);
  assert_int_equal(atomic_load(&drained), 1);
  assert_int_equal(atomic_load(&lv->pr.shutdowns), 3);
  grace_tcp_stats st;
  grace_tcp_server_stats(lv->srv, &st);
  assert_int_equal(st.conns_accepted, 3);
  assert_int_equal(st.conns_open, 0);
  assert_int_equal(st.busy_total, 1);
  assert_int_equal(st.conns_cut, 0);
  assert_int_equal(st.idle_closed_on_shutdown, 2);
  assert_int_equal(grace_tcp_server_close(lv->srv), 0);
  close(a);
  close(b);
  close(c);
  live_free(lv);
}

static void close_cuts_busy_connections_and_counts_them(void **state) {
  live *lv = live_start(NULL);
  char buf[256];
  (void)state;
  int a = dial(lv->port), b = dial(lv->port), c = dial(lv->port);
  assert_true(a >= 0 && b >= 0 && c >= 0);
  send_str(a, "BUSY\n");
  send_str(b, "BUSY\n");
  send_str(c, "PING\n");
  recv_until(c, buf, sizeof(buf), "+PONG\n", 2000);
  while (atomic_load(&lv->pr.datas) < 3)
    usleep(1000);
  grace_ctx *ctx;
  assert_int_equal(
      grace_ctx_with_timeout(grace_ctx_background(), 100 * GRACE_MILLISECOND,
                             &ctx),
      0);
  assert_int_equal(grace_tcp_server_shutdown(lv->srv, ctx), GRACE_ETIMEDOUT);
  grace_ctx_unref(ctx);
  assert_true(peer_closed(c, 1000)); /* idle: closed by the shutdown */
  assert_int_equal(grace_tcp_server_close(lv->srv), 2);
  assert_int_equal(grace_tcp_server_close(lv->srv), 0);
  assert_true(peer_closed(a, 1000));
  assert_true(peer_closed(b, 1000));
  grace_tcp_stats st;
  grace_tcp_server_stats(lv->srv, &st);
  assert_int_equal(st.conns_cut, 2);
  assert_int_equal(st.conns_busy, 0);
  close(a);
  close(b);
  close(c);
  live_free(lv);
}

static void another_thread_answers_through_a_post(void **state) {
  live *lv = live_start(NULL);
  char buf[256];
  (void)state;
  int a = dial(lv->port);
  assert_true(a >= 0);
  send_str(a, "WORK\nPING\n");
  recv_until(a, buf, sizeof(buf), "+PONG\n", 2000);
  assert_string_equal(buf, "+DONE\n+PONG\n");
  close(a);
  grace_tcp_stats st;
  grace_tcp_server_stats(lv->srv, &st);
  assert_int_equal(st.busy_total, 1);
  live_free(lv);
}

static void a_post_after_the_close_finds_it_closed(void **state) {
  live *lv = live_start(NULL);
  (void)state;
  int a = dial(lv->port);
  assert_true(a >= 0);
  send_str(a, "WORK\n");
  while (atomic_load(&lv->pr.datas) < 1)
    usleep(1000);
  /* Gone before the work is done: a reset, not a half-close (which
   * would leave the answer wanted). */
  struct linger lg = {.l_onoff = 1, .l_linger = 0};
  assert_int_equal(setsockopt(a, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg)), 0);
  close(a);
  while (atomic_load(&lv->pr.closes) < 1)
    usleep(1000);
  usleep(150 * 1000); /* the post runs on a closed connection */
  grace_tcp_stats st;
  grace_tcp_server_stats(lv->srv, &st);
  assert_int_equal(st.conns_cut, 1); /* its client left mid-command */
  live_free(lv);
}

static void idle_and_read_timeouts_close(void **state) {
  grace_tcp_options o;
  grace_tcp_options_init(&o);
  o.idle_timeout = 100 * GRACE_MILLISECOND;
  o.read_timeout = 100 * GRACE_MILLISECOND;
  live *lv = live_start(&o);
  (void)state;
  int a = dial(lv->port), b = dial(lv->port), c = dial(lv->port);
  assert_true(a >= 0 && b >= 0 && c >= 0);
  send_str(b, "PI"); /* a command that stalls */
  send_str(c, "BUSY\n"); /* busy: no timeout runs */
  int64_t t0 = now_ms();
  assert_true(peer_closed(a, 2000));
  assert_true(peer_closed(b, 2000));
  assert_true(now_ms() - t0 >= 90);
  assert_false(peer_closed(c, 300));
  grace_tcp_stats st;
  grace_tcp_server_stats(lv->srv, &st);
  assert_int_equal(st.timeouts, 1);
  assert_int_equal(st.conns_busy, 1);
  close(a);
  close(b);
  close(c);
  live_free(lv);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(partial_lines_wait_for_their_end),
      cmocka_unit_test(pipelined_commands_are_all_answered_in_order),
      cmocka_unit_test(busy_holds_what_follows_until_idle),
      cmocka_unit_test(writes_past_the_high_water_mark_are_refused),
      cmocka_unit_test(input_past_max_input_is_not_taken),
      cmocka_unit_test(end_writes_then_closes_and_a_busy_end_is_not_cut),
      cmocka_unit_test(close_while_busy_is_cut),
      cmocka_unit_test(idle_close_is_not_cut),
      cmocka_unit_test(eof_when_idle_closes),
      cmocka_unit_test(eof_while_busy_waits_for_the_answer),
      cmocka_unit_test(shutdown_closes_an_idle_connection_at_once),
      cmocka_unit_test(shutdown_waits_for_a_busy_connection),
      cmocka_unit_test(shutdown_lets_a_partial_command_finish),
      cmocka_unit_test(shutdown_kept_by_the_protocol_stays_open),
      cmocka_unit_test(close_spread_gives_each_idle_connection_its_moment),
      cmocka_unit_test(close_spread_closes_what_is_idle_at_its_end),
      cmocka_unit_test(the_group_part_counts_connections_and_commands),
      cmocka_unit_test(options_are_checked),
      cmocka_unit_test(shutdown_closes_idle_waits_for_busy_refuses_new),
      cmocka_unit_test(close_cuts_busy_connections_and_counts_them),
      cmocka_unit_test(another_thread_answers_through_a_post),
      cmocka_unit_test(a_post_after_the_close_finds_it_closed),
      cmocka_unit_test(idle_and_read_timeouts_close),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
