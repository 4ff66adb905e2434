/*
 * Unit tests for src/http/h1.c, HTTP/1.1 as a sans-I/O protocol on a
 * memory connection (net/conn.h): no socket, no loop, no thread.  Each
 * test owns a server that is created but never started, opens memory
 * connections on it, feeds them a client's bytes and reads the answers
 * the protocol wrote, as fuzz/fuzz_http.c does.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "grace/error.h"
#include "grace/http.h"
#include "http/internal.h"
#include "net/conn.h"

#include "fake_clock.h"

/* ---- the server and its handler --------------------------------------------
 */

#define MAX_HELD 16

static grace_http_server *srv;
static int hold; /* the handler keeps requests to answer later */
static grace_http_request *held[MAX_HELD];
static size_t nheld;
static unsigned handled, cancels;
static size_t big_len; /* /big answers this many bytes */

static void on_cancel(grace_http_request *req, void *data) {
  (void)data;
  cancels++;
  for (size_t i = 0; i < nheld; i++)
    if (held[i] == req) {
      memmove(held + i, held + i + 1, (nheld - i - 1) * sizeof(*held));
      nheld--;
      break;
    }
  grace_http_request_abandon(req);
}

/* Answers "<method> <path> <body>", or what the path asks for:
 *   /status/N   status N with a body
 *   /framing    with the handler's own framing fields
 *   /big        big_len bytes */
static void answer(grace_http_request *req) {
  const char *path = grace_http_request_path(req);
  size_t blen;
  const char *body = grace_http_request_body(req, &blen);
  char out[512];
  if (strncmp(path, "/status/", 8) == 0) {
    grace_http_respond(req, atoi(path + 8), "body", 4);
    return;
  }
  if (strcmp(path, "/framing") == 0) {
    assert_int_equal(grace_http_response_header(req, "Content-Length", "99"),
                     0);
    assert_int_equal(grace_http_response_header(req, "Connection", "close"), 0);
    assert_int_equal(
        grace_http_response_header(req, "Transfer-Encoding", "chunked"), 0);
    assert_int_equal(grace_http_response_header(req, "X-Kept", "yes"), 0);
    /* A name is a token; a value has no control character but a tab. */
    static const char *const bad_names[] = {
        "", "X Bad", "X:y", "X\x01", "X(y)", "X\"y", "caf\xc3\xa9"};
    for (size_t i = 0; i < sizeof(bad_names) / sizeof(bad_names[0]); i++)
      assert_int_equal(grace_http_response_header(req, bad_names[i], "v"),
                       GRACE_EINVAL);
    static const char *const bad_values[] = {"a\r\nX-Evil: 1", "a\nb", "a\rb",
                                             "a\x01", "\x7f"};
    for (size_t i = 0; i < sizeof(bad_values) / sizeof(bad_values[0]); i++)
      assert_int_equal(grace_http_response_header(req, "X-V", bad_values[i]),
                       GRACE_EINVAL);
    assert_int_equal(
        grace_http_response_header(req, "X-Tab", "a\tb caf\xc3\xa9"), 0);
    assert_int_equal(grace_http_response_header(req, "!#$%&'*+-.^_`|~09az", ""),
                     0);
    grace_http_respond(req, 200, "abc", 3);
    return;
  }
  if (strcmp(path, "/big") == 0) {
    char *b = malloc(big_len);
    assert_non_null(b);
    memset(b, 'b', big_len);
    grace_http_respond(req, 200, b, big_len);
    free(b);
    return;
  }
  int n =
      snprintf(out, sizeof(out), "%s %s %.*s", grace_http_request_method(req),
               path, (int)blen, body != NULL ? body : "");
  grace_http_respond(req, 200, out, (size_t)n);
}

static void handler(grace_http_request *req, void *data) {
  (void)data;
  handled++;
  if (hold) {
    assert_true(nheld < MAX_HELD);
    held[nheld++] = req;
    grace_http_request_on_cancel(req, on_cancel, NULL);
    return;
  }
  answer(req);
}

/* Answers the oldest held request. */
static void answer_held(void) {
  assert_true(nheld > 0);
  grace_http_request *req = held[0];
  memmove(held, held + 1, (nheld - 1) * sizeof(*held));
  nheld--;
  answer(req);
}

static int setup(void **state) {
  grace_http_options opts;
  (void)state;
  grace_http_options_init(&opts);
  opts.loops = 1;
  hold = 0;
  nheld = 0;
  handled = cancels = 0;
  big_len = 0;
  if (grace_http_server_new(&opts, &srv) != 0 ||
      grace_http_server_handle(srv, "/", handler, NULL) != 0)
    return -1;
  return 0;
}

static int teardown(void **state) {
  (void)state;
  /* Every connection and every request was released. */
  assert_int_equal(atomic_load(&srv->sv.reg.nconns), 0);
  assert_int_equal(atomic_load(&srv->st_inflight), 0);
  grace_http_server_free(srv);
  srv = NULL;
  return 0;
}

/* ---- connections
 * ---------------------------------------------------------------- */

static grace__conn *open_conn(size_t room) {
  grace__conn *c =
      grace__conn_new_mem(&srv->sv.reg, &grace__h1_idle_proto, srv, room);
  assert_non_null(c);
  return c;
}

static int is_closed(const grace__conn *c) {
  return (c->flags & GRACE__CF_CLOSED) != 0;
}

static ssize_t send_str(grace__conn *c, const char *s) {
  return grace__conn_mem_feed(c, s, strlen(s));
}

/* Feeds all of |s|, one byte at a time. */
static void send_bytes_one_by_one(grace__conn *c, const char *s) {
  for (size_t i = 0; s[i] != '\0'; i++)
    assert_int_equal(grace__conn_mem_feed(c, s + i, 1), 1);
}

/* What was written so far, as a NUL-terminated copy (freed by the caller). */
static char *output(grace__conn *c) {
  size_t len;
  const uint8_t *p = grace__conn_mem_output(c, &len);
  char *s = malloc(len + 1);
  assert_non_null(s);
  if (len > 0)
    memcpy(s, p, len);
  s[len] = '\0';
  return s;
}

/* ---- reading answers
 * -------------------------------------------------------------- */

typedef struct answer_t {
  int status;
  char head[2048]; /* the status line and fields, with their CRLFs */
  const char *body;
  size_t blen;
  int has_length;
} answer_t;

/* Reads one answer at |*p| (of |n| bytes); returns 0 when none is
 * complete.  Its body is |Content-Length| long, or none. */
static int next_answer(const char *p, size_t n, size_t *used, answer_t *a) {
  const char *end = NULL;
  for (size_t i = 0; i + 4 <= n; i++)
    if (memcmp(p + i, "\r\n\r\n", 4) == 0) {
      end = p + i + 4;
      break;
    }
  if (end == NULL)
    return 0;
  size_t hlen = (size_t)(end - p);
  assert_true(hlen < sizeof(a->head));
  memcpy(a->head, p, hlen);
  a->head[hlen] = '\0';
  assert_int_equal(strncmp(a->head, "HTTP/1.1 ", 9), 0);
  a->status = atoi(a->head + 9);
  const char *cl = strstr(a->head, "\r\nContent-Length: ");
  a->has_length = cl != NULL;
  a->blen = cl != NULL ? strtoul(cl + 18, NULL, 10) : 0;
  if (hlen + a->blen > n)
    return 0;
  a->body = end;
  *used = hlen + a->blen;
  return 1;
}

/* Reads every complete answer written so far, and lets the peer take
 * them.  Returns how many there were. */
static size_t take_answers(grace__conn *c, answer_t *a, size_t max) {
  size_t len, off = 0, used, k = 0;
  const char *p = (const char *)grace__conn_mem_output(c, &len);
  while (k < max && next_answer(p + off, len - off, &used, &a[k])) {
    off += used;
    k++;
  }
  grace__conn_mem_take(c, off);
  return k;
}

/* The connection got exactly one answer, of |status|. */
static void expect_one(grace__conn *c, int status, answer_t *a) {
  size_t len;
  assert_int_equal(take_answers(c, a, 1), 1);
  assert_int_equal(a->status, status);
  grace__conn_mem_output(c, &len);
  assert_int_equal(len, 0);
}

/* |req| alone on a new connection reaches the handler and gets |status|. */
static void expect_status(const char *req, int status) {
  grace__conn *c = open_conn(SIZE_MAX);
  unsigned before = handled;
  answer_t a;
  send_str(c, req);
  assert_int_equal(handled, before + 1);
  expect_one(c, status, &a);
  grace__conn_mem_free(c);
}

/* |req| alone on a new connection is refused with |status| before any
 * handler sees it, and the answer ends the connection. */
static void expect_refused(const char *req, int status) {
  grace__conn *c = open_conn(SIZE_MAX);
  unsigned before = handled;
  answer_t a;
  send_str(c, req);
  assert_int_equal(handled, before);
  expect_one(c, status, &a);
  assert_non_null(strstr(a.head, "\r\nConnection: close\r\n"));
  assert_true(is_closed(c));
  grace__conn_mem_free(c);
}

static int count(const char *hay, const char *needle) {
  int k = 0;
  for (const char *p = hay; (p = strstr(p, needle)) != NULL; p++)
    k++;
  return k;
}

#define GET(path) "GET " path " HTTP/1.1\r\nHost: x\r\n\r\n"

/* ---- answers
 * --------------------------------------------------------------------- */

static void request_is_answered_at_once(void **state) {
  grace__conn *c = open_conn(SIZE_MAX);
  answer_t a;
  (void)state;
  assert_int_equal(send_str(c, GET("/hello")), (ssize_t)strlen(GET("/hello")));
  expect_one(c, 200, &a);
  assert_int_equal(a.blen, strlen("GET /hello "));
  assert_memory_equal(a.body, "GET /hello ", a.blen);
  assert_false(grace__conn_closing(c)); /* kept alive */
  assert_int_equal(c->state, GRACE__CS_IDLE);
  grace__conn_mem_free(c);
}

/* A connection holds HTTP/1.1 state only while a request is read or
 * answered: new and idle ones speak grace__h1_idle_proto (no state), and
 * each request wakes it again, pipelined or one by one. */
static void idle_connection_holds_no_http_state(void **state) {
  grace__conn *c = open_conn(SIZE_MAX);
  answer_t a[2];
  (void)state;
  assert_ptr_equal(c->proto, &grace__h1_idle_proto);
  assert_int_equal(c->state, GRACE__CS_NEW);
  send_str(c, "GE"); /* a request begun wakes it */
  assert_ptr_equal(c->proto, &grace__h1_proto);
  send_str(c, "T /one HTTP/1.1\r\nHost: x\r\n\r\n");
  expect_one(c, 200, &a[0]);
  assert_ptr_equal(c->proto, &grace__h1_idle_proto);
  assert_int_equal(c->state, GRACE__CS_IDLE);
  send_str(c, GET("/two") GET("/three"));
  assert_int_equal(take_answers(c, a, 2), 2);
  assert_memory_equal(a[1].body, "GET /three ", a[1].blen);
  assert_ptr_equal(c->proto, &grace__h1_idle_proto);
  /* With its handler, the request holds the state until it is answered. */
  hold = 1;
  send_str(c, GET("/held"));
  assert_int_equal(nheld, 1);
  assert_ptr_equal(c->proto, &grace__h1_proto);
  answer_held();
  expect_one(c, 200, &a[0]);
  assert_memory_equal(a[0].body, "GET /held ", a[0].blen);
  assert_ptr_equal(c->proto, &grace__h1_idle_proto);
  assert_int_equal(c->state, GRACE__CS_IDLE);
  assert_false(grace__conn_closing(c));
  grace__conn_mem_free(c);
}

static const char chunked_post[] =
    "POST /up?x=1 HTTP/1.1\r\nHost: example.com\r\nX-One: 1\r\n"
    "Transfer-Encoding: chunked\r\nX-Two: two\r\n\r\n"
    "5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n" GET("/next");

static void byte_at_a_time_delivery_gives_the_same_answer(void **state) {
  grace__conn *whole = open_conn(SIZE_MAX);
  grace__conn *bytes = open_conn(SIZE_MAX);
  answer_t a[2];
  (void)state;
  send_str(whole, chunked_post);
  send_bytes_one_by_one(bytes, chunked_post);
  char *w = output(whole), *b = output(bytes);
  assert_string_equal(w, b);
  assert_int_equal(take_answers(whole, a, 2), 2);
  assert_int_equal(a[0].status, 200);
  assert_memory_equal(a[0].body, "POST /up hello world", a[0].blen);
  assert_int_equal(a[1].status, 200);
  assert_memory_equal(a[1].body, "GET /next ", a[1].blen);
  free(w);
  free(b);
  grace__conn_mem_free(whole);
  grace__conn_mem_free(bytes);
}

static void upgrade_request_leaves_the_connection_usable(void **state) {
  static const char up[] =
      "GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\n"
      "Upgrade: websocket\r\n\r\n" GET("/after");
  answer_t a[2];
  (void)state;
  /* In one piece, and with the second request in its own read (the
   * parser must not be left paused on the upgrade). */
  for (int split = 0; split < 2; split++) {
    grace__conn *c = open_conn(SIZE_MAX);
    if (split) {
      size_t first = strlen(up) - strlen(GET("/after"));
      assert_int_equal(grace__conn_mem_feed(c, up, first), (ssize_t)first);
      send_str(c, GET("/after"));
    } else {
      send_str(c, up);
    }
    assert_int_equal(take_answers(c, a, 2), 2);
    assert_int_equal(a[0].status, 200);
    assert_memory_equal(a[0].body, "GET /ws ", a[0].blen);
    assert_int_equal(a[1].status, 200);
    assert_memory_equal(a[1].body, "GET /after ", a[1].blen);
    assert_false(grace__conn_closing(c));
    grace__conn_mem_free(c);
  }
}

/* ---- pipelining and backpressure
 * ------------------------------------------------- */

#define PIPELINED 10000

static void
pipelined_requests_are_answered_in_order_one_at_a_time(void **state) {
  size_t cap = (size_t)PIPELINED * 48, len = 0;
  char *in = malloc(cap);
  answer_t a;
  (void)state;
  assert_non_null(in);
  for (int i = 0; i < PIPELINED; i++)
    len += (size_t)snprintf(in + len, cap - len,
                            "GET /p/%d HTTP/1.1\r\nHost: x\r\n\r\n", i);
  hold = 1;
  grace__conn *c = open_conn(SIZE_MAX);
  size_t fed = (size_t)grace__conn_mem_feed(c, in, len);
  /* One request is taken; the rest waits as read-ahead, at most its cap. */
  assert_int_equal(handled, 1);
  assert_int_equal(nheld, 1);
  assert_true(fed < len);
  assert_true(c->rlen <= GRACE__CONN_READ_AHEAD);
  for (int i = 0; i < PIPELINED; i++) {
    char want[64];
    if (nheld == 0 && fed < len) {
      /* The read-ahead is drained: the peer's next bytes are read. */
      ssize_t n = grace__conn_mem_feed(c, in + fed, len - fed);
      assert_true(n > 0);
      fed += (size_t)n;
      assert_true(c->rlen <= GRACE__CONN_READ_AHEAD);
    }
    assert_int_equal(nheld, 1); /* one at a time */
    answer_held();
    assert_true(c->rlen <= GRACE__CONN_READ_AHEAD);
    expect_one(c, 200, &a);
    int n = snprintf(want, sizeof(want), "GET /p/%d ", i);
    assert_int_equal(a.blen, (size_t)n);
    assert_memory_equal(a.body, want, a.blen);
  }
  assert_int_equal(fed, len);
  assert_int_equal(handled, PIPELINED);
  assert_int_equal(nheld, 0);
  assert_false(grace__conn_closing(c));
  grace__conn_mem_free(c);
  free(in);
}

static void peer_that_never_reads_is_no_longer_read(void **state) {
  const int total = 40;
  char in[40 * 40];
  size_t len = 0;
  answer_t a[40];
  size_t got = 0;
  (void)state;
  big_len = 16 * 1024;
  for (int i = 0; i < total; i++)
    len += (size_t)sprintf(in + len, GET("/big"));
  grace__conn *c = open_conn(64);
  assert_int_equal(grace__conn_mem_feed(c, in, len), (ssize_t)len);
  int rounds = 0;
  while (got < (size_t)total) {
    /* It answered until more than GRACE__WRITE_HIGH bytes waited, and
     * then took no more requests. */
    size_t queued = grace__conn_queued(c);
    if (handled < (unsigned)total) {
      assert_true(queued > GRACE__WRITE_HIGH);
      assert_true(queued <= GRACE__WRITE_HIGH + big_len + 256);
      assert_true(c->rlen > 0);
    }
    unsigned before = handled;
    /* The peer reads everything: the protocol goes on. */
    size_t k = take_answers(c, a + got, (size_t)total - got);
    assert_true(k > 0);
    got += k;
    if (got < (size_t)total)
      assert_true(handled > before);
    rounds++;
  }
  assert_true(rounds > 1);
  for (int i = 0; i < total; i++) {
    assert_int_equal(a[i].status, 200);
    assert_int_equal(a[i].blen, big_len);
  }
  assert_int_equal(handled, (unsigned)total);
  assert_false(grace__conn_closing(c));
  grace__conn_mem_free(c);
}

/* ---- request rules
 * -------------------------------------------------------------- */

static void host_is_required_once_on_http_1_1(void **state) {
  (void)state;
  expect_refused("GET / HTTP/1.1\r\n\r\n", 400);
  expect_refused("GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n", 400);
  expect_status("GET / HTTP/1.0\r\n\r\n", 200);
  expect_refused("GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n", 400);
  expect_refused("GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", 400);
  expect_refused("GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400);
  expect_status(GET("/"), 200);
}

static void whitespace_before_a_colon_is_rejected(void **state) {
  (void)state;
  expect_refused("GET / HTTP/1.1\r\nHost : x\r\n\r\n", 400);
  expect_refused("GET / HTTP/1.1\r\nHost: x\r\nX-A : 1\r\n\r\n", 400);
}

static void obs_fold_is_rejected(void **state) {
  (void)state;
  expect_refused("GET / HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n 2\r\n\r\n", 400);
  expect_refused("GET / HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n\t2\r\n\r\n", 400);
}

static void absolute_form_target_is_served(void **state) {
  grace__conn *c = open_conn(SIZE_MAX);
  answer_t a;
  (void)state;
  send_str(c, "GET http://example.com/abs/path?q=1 HTTP/1.1\r\n"
              "Host: example.com\r\n\r\n");
  expect_one(c, 200, &a);
  assert_memory_equal(a.body, "GET /abs/path ", a.blen);
  send_str(c, "GET http://example.com HTTP/1.1\r\nHost: example.com\r\n\r\n");
  expect_one(c, 200, &a);
  assert_memory_equal(a.body, "GET / ", a.blen);
  grace__conn_mem_free(c);
}

static void newer_minor_version_is_answered_as_1_1(void **state) {
  grace__conn *c = open_conn(SIZE_MAX);
  answer_t a;
  (void)state;
  send_str(c, "GET / HTTP/1.2\r\nHost: x\r\n\r\n");
  expect_one(c, 200, &a); /* next_answer checks "HTTP/1.1 " */
  grace__conn_mem_free(c);
}

static void other_major_version_gets_505(void **state) {
  (void)state;
  expect_refused("GET / HTTP/2.0\r\nHost: x\r\n\r\n", 505);
}

static void too_many_header_fields_get_431(void **state) {
  char req[8192];
  size_t at = (size_t)sprintf(req, "GET / HTTP/1.1\r\nHost: x\r\n");
  (void)state;
  for (int i = 1; i < GRACE__MAX_HEADER_FIELDS; i++)
    at += (size_t)sprintf(req + at, "X-%d: v\r\n", i);
  strcpy(req + at, "\r\n");
  expect_status(req, 200); /* exactly the limit */
  strcpy(req + at, "X-Last: v\r\n\r\n");
  expect_refused(req, 431);
}

static void transfer_encoding_must_end_in_chunked(void **state) {
  (void)state;
  expect_refused("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: identity\r\n"
                 "\r\n",
                 400);
  expect_refused(
      "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", 400);
  expect_refused("POST / HTTP/1.1\r\nHost: x\r\n"
                 "Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
                 501);
  expect_refused("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                 "Content-Length: 5\r\n\r\n0\r\n\r\n",
                 400);
  expect_refused("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                 "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
                 400);
}

static void bad_body_framing_gets_400_and_ends_the_connection(void **state) {
  (void)state;
  /* The smuggling vector: never read "XX0..." as the next request. */
  expect_refused("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                 "\r\n5\r\nhelloXX0\r\n\r\n" GET("/smuggled"),
                 400);
  assert_int_equal(handled, 0);
}

static void expect_100_continue_goes_through_the_write_queue(void **state) {
  static const char head[] =
      "POST /e HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
      "Expect: 100-continue\r\n\r\n";
  static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
  size_t len;
  answer_t a;
  (void)state;
  /* A "socket" that takes nothing: the interim answer is queued. */
  grace__conn *c = open_conn(0);
  send_str(c, head);
  const uint8_t *out = grace__conn_mem_output(c, &len);
  assert_int_equal(len, sizeof(cont) - 1);
  assert_memory_equal(out, cont, len);
  assert_int_equal(grace__conn_queued(c), sizeof(cont) - 1);
  send_str(c, "hello");
  /* The final answer follows it, in order. */
  out = grace__conn_mem_output(c, &len);
  assert_true(len > sizeof(cont) - 1);
  assert_memory_equal(out, cont, sizeof(cont) - 1);
  grace__conn_mem_take(c, sizeof(cont) - 1);
  expect_one(c, 200, &a);
  assert_memory_equal(a.body, "POST /e hello", a.blen);
  grace__conn_mem_free(c);
}

/* ---- shutdown and force
 * ---------------------------------------------------------- */

static void shutdown_ends_an_idle_connection(void **state) {
  answer_t a;
  (void)state;
  /* Served, then idle. */
  grace__conn *c = open_conn(SIZE_MAX);
  send_str(c, GET("/"));
  expect_one(c, 200, &a);
  grace__conn_shutdown(c);
  assert_true(is_closed(c));
  grace__conn_mem_free(c);
  /* Never sent a byte. */
  c = open_conn(SIZE_MAX);
  grace__conn_shutdown(c);
  assert_true(is_closed(c));
  grace__conn_mem_free(c);
  assert_int_equal(atomic_load(&srv->sv.reg.idle_closed), 2);
}

static void shutdown_answers_a_held_request_with_close(void **state) {
  answer_t a;
  (void)state;
  hold = 1;
  grace__conn *c = open_conn(SIZE_MAX);
  send_str(c, GET("/held"));
  assert_int_equal(nheld, 1);
  grace__conn_shutdown(c);
  assert_false(grace__conn_closing(c)); /* the request is still served */
  answer_held();
  expect_one(c, 200, &a);
  assert_non_null(strstr(a.head, "\r\nConnection: close\r\n"));
  assert_true(is_closed(c));
  assert_int_equal(cancels, 0);
  grace__conn_mem_free(c);
}

static void force_cuts_a_held_request_and_cancels_it(void **state) {
  size_t len;
  (void)state;
  hold = 1;
  grace__conn *c = open_conn(SIZE_MAX);
  send_str(c, GET("/held"));
  assert_int_equal(nheld, 1);
  uint64_t cut = atomic_load(&srv->sv.reg.cut);
  assert_int_equal(grace__conn_force(c), 1);
  assert_int_equal(cancels, 1); /* the callback abandoned it */
  assert_int_equal(nheld, 0);
  assert_true(is_closed(c));
  assert_int_equal(atomic_load(&srv->sv.reg.cut), cut + 1);
  grace__conn_mem_output(c, &len);
  assert_int_equal(len, 0); /* no answer was written */
  grace__conn_mem_free(c);
}

static void force_of_an_idle_connection_cuts_nothing(void **state) {
  answer_t a;
  (void)state;
  grace__conn *c = open_conn(SIZE_MAX);
  send_str(c, GET("/"));
  expect_one(c, 200, &a);
  assert_int_equal(grace__conn_force(c), 0);
  assert_true(is_closed(c));
  grace__conn_mem_free(c);
}

/* ---- the close spread
 * ------------------------------------------------------------ */

#define SPREAD GRACE_SECOND
/* A connection id whose moment falls well inside the window. */
#define SPREAD_ID 8

static fake_clock fclock;

/* Gives |srv| a close spread of SPREAD read from a manual clock, and opens
 * its window (what grace_http_server_shutdown_begin does) at FC_START. */
static void begin_spread(void) {
  fc_init(&fclock);
  grace__clock clk = fc_clock(&fclock);
  grace__http_server_set_clock(srv, &clk);
  grace_http_server_set_close_spread(srv, SPREAD);
  grace__http_spread_begin(srv);
}

/* Sets the manual clock to |at| after the window opened. */
static void clock_at(grace_duration at) {
  pthread_mutex_lock(&fclock.mu);
  fclock.now = FC_START + at;
  pthread_mutex_unlock(&fclock.mu);
}

/* The moment of |c| in the window, checked to be strictly inside it. */
static grace_duration moment_of(const grace__conn *c) {
  grace_duration m = grace__http_spread_offset(srv, c->id);
  assert_true(m > GRACE_MILLISECOND && m < SPREAD);
  return m;
}

static void
close_spread_option_defaults_to_0_and_refuses_negative(void **state) {
  grace_http_options opts;
  grace_http_server *other;
  (void)state;
  grace_http_options_init(&opts);
  assert_int_equal(opts.close_spread, 0);
  opts.close_spread = -1;
  assert_int_equal(grace_http_server_new(&opts, &other), GRACE_EINVAL);
  opts.close_spread = 2 * GRACE_SECOND;
  assert_int_equal(grace_http_server_new(&opts, &other), 0);
  /* The internal setter only raises it. */
  grace_http_server_set_close_spread(other, GRACE_SECOND);
  assert_int_equal(atomic_load(&other->sv.close_spread), 2 * GRACE_SECOND);
  grace_http_server_set_close_spread(other, 3 * GRACE_SECOND);
  assert_int_equal(atomic_load(&other->sv.close_spread), 3 * GRACE_SECOND);
  grace_http_server_free(other);
}

static void close_spread_moments_fall_apart_in_the_window(void **state) {
  grace_duration m[64];
  (void)state;
  begin_spread();
  for (uint64_t id = 1; id <= 64; id++) {
    m[id - 1] = grace__http_spread_offset(srv, id);
    /* In the window's first nine tenths. */
    assert_true(m[id - 1] >= 0 && m[id - 1] < SPREAD * 9 / 10);
  }
  /* Consecutive connections are far apart: no two of the first 8 within
   * a twentieth of the window of each other. */
  for (int i = 0; i < 8; i++)
    for (int j = i + 1; j < 8; j++) {
      grace_duration d = m[i] > m[j] ? m[i] - m[j] : m[j] - m[i];
      assert_true(d > SPREAD / 20);
    }
  fc_destroy(&fclock);
}

static void
close_spread_keeps_an_idle_connection_alive_until_its_moment(void **state) {
  answer_t a;
  (void)state;
  grace__conn *c = open_conn(SIZE_MAX);
  c->id = SPREAD_ID;
  send_str(c, GET("/before"));
  expect_one(c, 200, &a);
  begin_spread();
  grace_duration moment = moment_of(c);
  /* The shutdown begins: the idle connection is not closed. */
  grace__conn_shutdown(c);
  assert_false(grace__conn_closing(c));
  assert_int_equal(c->state, GRACE__CS_IDLE);
  /* A request before its moment is served and keeps it alive. */
  clock_at(moment - GRACE_MILLISECOND);
  send_str(c, GET("/during"));
  expect_one(c, 200, &a);
  assert_memory_equal(a.body, "GET /during ", a.blen);
  assert_null(strstr(a.head, "Connection"));
  assert_false(grace__conn_closing(c));
  assert_int_equal(c->state, GRACE__CS_IDLE);
  /* The first answer that starts at or after it says close, and the
   * connection closes after it. */
  clock_at(moment);
  send_str(c, GET("/after"));
  expect_one(c, 200, &a);
  assert_memory_equal(a.body, "GET /after ", a.blen);
  assert_non_null(strstr(a.head, "\r\nConnection: close\r\n"));
  assert_true(is_closed(c));
  assert_int_equal(atomic_load(&srv->sv.reg.idle_closed), 0);
  assert_int_equal(handled, 3);
  grace__conn_mem_free(c);
  fc_destroy(&fclock);
}

static void
close_spread_closes_idle_connections_when_the_window_ends(void **state) {
  answer_t a;
  (void)state;
  /* Served then idle, and new (no byte sent). */
  grace__conn *idle = open_conn(SIZE_MAX);
  idle->id = SPREAD_ID;
  send_str(idle, GET("/"));
  expect_one(idle, 200, &a);
  grace__conn *fresh = open_conn(SIZE_MAX);
  fresh->id = SPREAD_ID + 1;
  begin_spread();
  grace__conn_shutdown(idle);
  grace__conn_shutdown(fresh);
  assert_false(grace__conn_closing(idle));
  assert_false(grace__conn_closing(fresh));
  /* Past their moments, idle, they stay open until the window ends. */
  clock_at(SPREAD - GRACE_MILLISECOND);
  grace__h1_spread_over(idle); /* (the loop's timer would not fire yet) */
  assert_false(grace__conn_closing(idle));
  /* What the loop's timer does at the window's end. */
  clock_at(SPREAD);
  grace__h1_spread_over(idle);
  grace__h1_spread_over(fresh);
  assert_true(is_closed(idle));
  assert_true(is_closed(fresh));
  size_t len;
  grace__conn_mem_output(idle, &len);
  assert_int_equal(len, 0); /* closed without another byte */
  assert_int_equal(atomic_load(&srv->sv.reg.idle_closed), 2);
  grace__conn_mem_free(idle);
  grace__conn_mem_free(fresh);
  fc_destroy(&fclock);
}

static void
close_spread_serves_requests_in_flight_and_ends_with_close(void **state) {
  answer_t a;
  (void)state;
  hold = 1;
  grace__conn *early = open_conn(SIZE_MAX);
  early->id = SPREAD_ID;
  grace__conn *late = open_conn(SIZE_MAX);
  late->id = SPREAD_ID;
  send_str(early, GET("/early"));
  send_str(late, GET("/late"));
  assert_int_equal(nheld, 2);
  begin_spread();
  grace__conn_shutdown(early);
  grace__conn_shutdown(late);
  /* Answered before the connection's moment: kept alive. */
  clock_at(moment_of(early) / 2);
  answer_held();
  expect_one(early, 200, &a);
  assert_null(strstr(a.head, "Connection"));
  assert_false(grace__conn_closing(early));
  /* The window ends with a request in flight: not cut; its answer says
   * close. */
  clock_at(SPREAD);
  grace__h1_spread_over(late);
  assert_false(grace__conn_closing(late));
  answer_held();
  expect_one(late, 200, &a);
  assert_non_null(strstr(a.head, "\r\nConnection: close\r\n"));
  assert_true(is_closed(late));
  /* The idle one, kept alive by an answer in the window, gets its last
   * call: a request now is answered with close... */
  grace__h1_spread_over(early);
  assert_false(grace__conn_closing(early));
  send_str(early, GET("/last"));
  answer_held();
  expect_one(early, 200, &a);
  assert_non_null(strstr(a.head, "\r\nConnection: close\r\n"));
  assert_true(is_closed(early));
  assert_int_equal(cancels, 0);
  /* ...and one that sends nothing is closed when the last call ends. */
  grace__conn *quiet = open_conn(SIZE_MAX);
  quiet->id = SPREAD_ID;
  send_str(quiet, GET("/quiet"));
  grace__conn_shutdown(quiet);
  clock_at(moment_of(quiet) / 2);
  answer_held();
  expect_one(quiet, 200, &a);
  assert_null(strstr(a.head, "Connection"));
  assert_false(grace__conn_closing(quiet));
  clock_at(SPREAD);
  grace__h1_spread_over(quiet);
  assert_false(grace__conn_closing(quiet));
  quiet->proto->on_timer(quiet, GRACE__TL_LAST_CALL);
  assert_true(grace__conn_closing(quiet));
  grace__conn_mem_free(quiet);
  grace__conn_mem_free(early);
  grace__conn_mem_free(late);
  fc_destroy(&fclock);
}

static void close_spread_streamed_answer_started_before_the_moment_stays_open(
    void **state) {
  size_t len;
  answer_t a;
  (void)state;
  hold = 1;
  grace__conn *c = open_conn(SIZE_MAX);
  c->id = SPREAD_ID;
  send_str(c, GET("/stream"));
  assert_int_equal(nheld, 1);
  grace_http_request *req = held[0];
  nheld = 0;
  begin_spread();
  grace__conn_shutdown(c);
  grace_duration moment = moment_of(c);
  /* It starts before the moment (keep-alive announced) and ends after. */
  clock_at(moment - GRACE_MILLISECOND);
  assert_int_equal(grace_http_response_start(req, 200), 0);
  assert_int_equal(grace_http_response_write(req, "abc", 3), 0);
  clock_at(moment);
  assert_int_equal(grace_http_response_end(req), 0);
  char *out = output(c);
  assert_non_null(strstr(out, "\r\nTransfer-Encoding: chunked\r\n"));
  assert_null(strstr(out, "Connection"));
  assert_non_null(strstr(out, "\r\n\r\n3\r\nabc\r\n0\r\n\r\n"));
  grace__conn_mem_output(c, &len);
  grace__conn_mem_take(c, len);
  free(out);
  assert_false(grace__conn_closing(c));
  /* The next answer starts after the moment: it closes. */
  hold = 0;
  send_str(c, GET("/next"));
  expect_one(c, 200, &a);
  assert_non_null(strstr(a.head, "\r\nConnection: close\r\n"));
  assert_true(is_closed(c));
  grace__conn_mem_free(c);
  fc_destroy(&fclock);
}

static void no_close_spread_keeps_the_shutdown_at_once(void **state) {
  answer_t a;
  (void)state;
  /* The window opens with no spread: an idle connection closes at once,
   * whatever its moment would have been. */
  grace__conn *c = open_conn(SIZE_MAX);
  c->id = SPREAD_ID;
  send_str(c, GET("/"));
  expect_one(c, 200, &a);
  grace__http_spread_begin(srv);
  grace__conn_shutdown(c);
  assert_true(is_closed(c));
  assert_int_equal(atomic_load(&srv->sv.reg.idle_closed), 1);
  grace__conn_mem_free(c);
}

/* ---- what the answer carries
 * ---------------------------------------------------- */

static void handler_framing_fields_are_not_sent(void **state) {
  answer_t a;
  (void)state;
  grace__conn *c = open_conn(SIZE_MAX);
  send_str(c, GET("/framing") GET("/again"));
  answer_t both[2];
  assert_int_equal(take_answers(c, both, 2), 2);
  a = both[0];
  assert_int_equal(a.status, 200);
  assert_int_equal(count(a.head, "Content-Length"), 1);
  assert_non_null(strstr(a.head, "\r\nContent-Length: 3\r\n"));
  assert_null(strstr(a.head, "Transfer-Encoding"));
  assert_null(strstr(a.head, "Connection"));
  assert_non_null(strstr(a.head, "\r\nX-Kept: yes\r\n"));
  assert_non_null(strstr(a.head, "\r\nX-Tab: a\tb caf\xc3\xa9\r\n"));
  assert_null(strstr(a.head, "X-Evil"));
  assert_memory_equal(a.body, "abc", 3);
  /* The handler's "Connection: close" did not close it. */
  assert_int_equal(both[1].status, 200);
  assert_false(grace__conn_closing(c));
  grace__conn_mem_free(c);
}

static void no_body_statuses_send_no_body_and_no_length(void **state) {
  (void)state;
  for (int i = 0; i < 2; i++) {
    const char *req = i == 0 ? GET("/status/204") GET("/next")
                             : GET("/status/304") GET("/next");
    grace__conn *c = open_conn(SIZE_MAX);
    answer_t a[2];
    send_str(c, req);
    assert_int_equal(take_answers(c, a, 2), 2);
    assert_int_equal(a[0].status, i == 0 ? 204 : 304);
    assert_false(a[0].has_length);
    assert_int_equal(a[0].blen, 0);
    /* Nothing of "body" was sent: the next answer starts right after. */
    assert_int_equal(a[1].status, 200);
    assert_memory_equal(a[1].body, "GET /next ", a[1].blen);
    grace__conn_mem_free(c);
  }
}

static void statuses_outside_200_to_599_become_500(void **state) {
  (void)state;
  expect_status(GET("/status/150"), 500);
  expect_status(GET("/status/700"), 500);
  expect_status(GET("/status/599"), 599);
}

int main(void) {
  const struct CMUnitTest tests[] = {
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
      T(request_is_answered_at_once),
      T(idle_connection_holds_no_http_state),
      T(byte_at_a_time_delivery_gives_the_same_answer),
      T(upgrade_request_leaves_the_connection_usable),
      T(pipelined_requests_are_answered_in_order_one_at_a_time),
      T(peer_that_never_reads_is_no_longer_read),
      T(host_is_required_once_on_http_1_1),
      T(whitespace_before_a_colon_is_rejected),
      T(obs_fold_is_rejected),
      T(absolute_form_target_is_served),
      T(newer_minor_version_is_answered_as_1_1),
      T(other_major_version_gets_505),
      T(too_many_header_fields_get_431),
      T(transfer_encoding_must_end_in_chunked),
      T(bad_body_framing_gets_400_and_ends_the_connection),
      T(expect_100_continue_goes_through_the_write_queue),
      T(shutdown_ends_an_idle_connection),
      T(shutdown_answers_a_held_request_with_close),
      T(force_cuts_a_held_request_and_cancels_it),
      T(force_of_an_idle_connection_cuts_nothing),
      T(close_spread_option_defaults_to_0_and_refuses_negative),
      T(close_spread_moments_fall_apart_in_the_window),
      T(close_spread_keeps_an_idle_connection_alive_until_its_moment),
      T(close_spread_closes_idle_connections_when_the_window_ends),
      T(close_spread_serves_requests_in_flight_and_ends_with_close),
      T(close_spread_streamed_answer_started_before_the_moment_stays_open),
      T(no_close_spread_keeps_the_shutdown_at_once),
      T(handler_framing_fields_are_not_sent),
      T(no_body_statuses_send_no_body_and_no_length),
      T(statuses_outside_200_to_599_become_500),
#undef T
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
