/*
 * Unit tests for src/http/h2.c, the sans-I/O HTTP/2 server connection.
 *
 * No sockets: each test owns a grace__h2 server and an in-memory nghttp2
 * CLIENT session, and shuttles the bytes between them itself, so it can
 * hold bytes "on the wire", deliver them one byte at a time, or inject
 * garbage.  The client validates what the server sends as any HTTP/2 peer
 * would (nghttp2's HTTP messaging checks), and records every frame it
 * receives so a test can assert exact frame sequences.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "http/h2.h"

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))
#define MAX_FRAMES 4096
#define MAX_STREAMS 64

/* ---- byte buffers ---------------------------------------------------------- */

typedef struct bytes {
  uint8_t *p;
  size_t len, cap;
} bytes;

static void bytes_add(bytes *b, const void *p, size_t n) {
  if (b->len + n > b->cap) {
    size_t cap = b->cap ? b->cap : 1024;
    while (cap < b->len + n)
      cap *= 2;
    b->p = realloc(b->p, cap);
    assert_non_null(b->p);
    b->cap = cap;
  }
  if (n > 0)
    memcpy(b->p + b->len, p, n);
  b->len += n;
}

static void bytes_free(bytes *b) {
  free(b->p);
  memset(b, 0, sizeof(*b));
}

/* ---- the client ------------------------------------------------------------ */

typedef struct rec_frame {
  uint8_t type, flags;
  int32_t stream_id;
  size_t length;
  int32_t last_stream_id; /* GOAWAY */
  uint32_t error_code;    /* GOAWAY, RST_STREAM */
  uint8_t opaque[8];      /* PING */
} rec_frame;

typedef struct cstream {
  int32_t id;
  int status;
  bytes headers;  /* "name: value\n" of the response head */
  bytes trailers; /* the same for trailers */
  bytes body;
  int closed;
  uint32_t close_code;
  /* the request body */
  const uint8_t *up;
  size_t up_len, up_off, up_chunk;
  int up_hold;          /* defer at the end instead of ending */
  int up_trailer;       /* end with a trailer field instead */
} cstream;

typedef struct client {
  nghttp2_session *s;
  rec_frame frames[MAX_FRAMES];
  size_t nframes;
  cstream streams[MAX_STREAMS];
  size_t nstreams;
} client;

static cstream *find_cs(client *c, int32_t id) {
  for (size_t i = 0; i < c->nstreams; i++)
    if (c->streams[i].id == id)
      return &c->streams[i];
  return NULL;
}

/* The client stream |id|, which must exist. */
static cstream *cs(client *c, int32_t id) {
  cstream *st = find_cs(c, id);
  if (st == NULL) {
    fail_msg("no client stream %d", id);
    abort();
  }
  return st;
}

static int c_on_frame_recv(nghttp2_session *s, const nghttp2_frame *f,
                           void *user) {
  client *c = user;
  rec_frame *r;
  (void)s;
  assert_true(c->nframes < MAX_FRAMES);
  r = &c->frames[c->nframes++];
  memset(r, 0, sizeof(*r));
  r->type = f->hd.type;
  r->flags = f->hd.flags;
  r->stream_id = f->hd.stream_id;
  r->length = f->hd.length;
  if (f->hd.type == NGHTTP2_GOAWAY) {
    r->last_stream_id = f->goaway.last_stream_id;
    r->error_code = f->goaway.error_code;
  } else if (f->hd.type == NGHTTP2_RST_STREAM) {
    r->error_code = f->rst_stream.error_code;
  } else if (f->hd.type == NGHTTP2_PING) {
    memcpy(r->opaque, f->ping.opaque_data, 8);
  }
  return 0;
}

static int c_on_header(nghttp2_session *s, const nghttp2_frame *f,
                       const uint8_t *name, size_t namelen,
                       const uint8_t *value, size_t valuelen, uint8_t flags,
                       void *user) {
  client *c = user;
  cstream *st = find_cs(c, f->hd.stream_id);
  (void)s;
  (void)flags;
  if (st == NULL)
    return 0;
  if (namelen == 7 && memcmp(name, ":status", 7) == 0) {
    char tmp[8] = {0};
    memcpy(tmp, value, valuelen < 7 ? valuelen : 7);
    st->status = atoi(tmp);
    return 0;
  }
  bytes *b = f->headers.cat == NGHTTP2_HCAT_HEADERS ? &st->trailers
                                                     : &st->headers;
  bytes_add(b, name, namelen);
  bytes_add(b, ": ", 2);
  bytes_add(b, value, valuelen);
  bytes_add(b, "\n", 1);
  return 0;
}

static int c_on_data(nghttp2_session *s, uint8_t flags, int32_t id,
                     const uint8_t *data, size_t len, void *user) {
  client *c = user;
  cstream *st = find_cs(c, id);
  (void)s;
  (void)flags;
  if (st != NULL)
    bytes_add(&st->body, data, len);
  return 0;
}

static int c_on_close(nghttp2_session *s, int32_t id, uint32_t code,
                      void *user) {
  client *c = user;
  cstream *st = find_cs(c, id);
  (void)s;
  if (st != NULL) {
    st->closed = 1;
    st->close_code = code;
  }
  return 0;
}

static ssize_t c_read_body(nghttp2_session *s, int32_t id, uint8_t *buf,
                           size_t length, uint32_t *flags,
                           nghttp2_data_source *src, void *user) {
  cstream *st = src->ptr;
  size_t take = st->up_len - st->up_off;
  (void)user;
  if (take > length)
    take = length;
  if (st->up_chunk > 0 && take > st->up_chunk)
    take = st->up_chunk;
  if (take == 0 && st->up_hold)
    return NGHTTP2_ERR_DEFERRED;
  if (take > 0)
    memcpy(buf, st->up + st->up_off, take);
  st->up_off += take;
  if (st->up_off == st->up_len && !st->up_hold) {
    *flags |= NGHTTP2_DATA_FLAG_EOF;
    if (st->up_trailer) {
      static const nghttp2_nv tr[] = {{(uint8_t *)(uintptr_t) "x-trailer",
                                       (uint8_t *)(uintptr_t) "t", 9, 1, 0}};
      *flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
      assert_int_equal(nghttp2_submit_trailer(s, id, tr, 1), 0);
    }
  }
  return (ssize_t)take;
}

static void client_init(client *c, size_t max_send_header_block) {
  nghttp2_session_callbacks *cbs;
  nghttp2_option *opt;
  memset(c, 0, sizeof(*c));
  assert_int_equal(nghttp2_session_callbacks_new(&cbs), 0);
  nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, c_on_frame_recv);
  nghttp2_session_callbacks_set_on_header_callback(cbs, c_on_header);
  nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, c_on_data);
  nghttp2_session_callbacks_set_on_stream_close_callback(cbs, c_on_close);
  assert_int_equal(nghttp2_option_new(&opt), 0);
  if (max_send_header_block > 0)
    nghttp2_option_set_max_send_header_block_length(opt,
                                                    max_send_header_block);
  assert_int_equal(nghttp2_session_client_new2(&c->s, cbs, c, opt), 0);
  nghttp2_option_del(opt);
  nghttp2_session_callbacks_del(cbs);
  assert_int_equal(nghttp2_submit_settings(c->s, NGHTTP2_FLAG_NONE, NULL, 0),
                   0);
}

static void client_free(client *c) {
  nghttp2_session_del(c->s);
  for (size_t i = 0; i < c->nstreams; i++) {
    bytes_free(&c->streams[i].headers);
    bytes_free(&c->streams[i].trailers);
    bytes_free(&c->streams[i].body);
  }
}

/* Submits a request; |body| NULL and |hold| 0 means no body.  With |hold|
 * the body provider defers at the end of |body| instead of ending. */
static int32_t request(client *c, const char *method, const char *path,
                       const grace__h2_header *extra, size_t n,
                       const void *body, size_t len, size_t chunk, int hold) {
  nghttp2_nv nv[128];
  size_t k = 0;
  nghttp2_data_provider prd;
  cstream *st;
  int32_t id;

#define NV(nm, val)                                                            \
  nv[k++] = (nghttp2_nv) {                                                     \
    (uint8_t *)(uintptr_t)(nm), (uint8_t *)(uintptr_t)(val), strlen(nm),      \
        strlen(val), NGHTTP2_NV_FLAG_NONE                                      \
  }
  NV(":method", method);
  NV(":scheme", "http");
  NV(":authority", "example.com");
  NV(":path", path);
  assert_true(n <= COUNT(nv) - k);
  for (size_t i = 0; i < n; i++)
    NV(extra[i].name, extra[i].value);
#undef NV
  assert_true(c->nstreams < MAX_STREAMS);
  st = &c->streams[c->nstreams];
  memset(st, 0, sizeof(*st));
  st->up = body;
  st->up_len = len;
  st->up_chunk = chunk;
  st->up_hold = hold;
  prd.source.ptr = st;
  prd.read_callback = c_read_body;
  id = nghttp2_submit_request(c->s, NULL, nv, k,
                              (body != NULL || hold) ? &prd : NULL, NULL);
  assert_true(id > 0);
  st->id = id;
  c->nstreams++;
  return id;
}

static int header_has(const bytes *b, const char *line) {
  size_t n = strlen(line);
  for (size_t i = 0; i + n <= b->len; i++)
    if (memcmp(b->p + i, line, n) == 0 && (i == 0 || b->p[i - 1] == '\n'))
      return 1;
  return 0;
}

/* ---- the server application ----------------------------------------------- */

typedef struct sreq {
  grace__h2_stream *s; /* NULL once closed */
  int32_t id;
  char method[16], path[256], query[256], authority[64];
  int has_query;
  bytes body;
  size_t data_calls;
  int ended, closed;
  uint32_t close_code;
} sreq;

typedef struct fixture fixture;
typedef void (*hook_fn)(fixture *f, sreq *r);

struct fixture {
  grace__h2 *h2;
  client c;
  sreq reqs[MAX_STREAMS];
  size_t nreqs;
  int byte_at_a_time;
  int respond_on_end; /* answer each request whole with its body, echoed */
  hook_fn on_headers, on_data, on_end, on_ready;
  size_t closes, send_ready;
  /* a test's own state */
  size_t sent, total, ebusy;
  uint8_t *big;
};

static sreq *req_of(grace__h2_stream *s) { return grace__h2_stream_data(s); }

static void copy_str(char *dst, size_t cap, const char *src) {
  snprintf(dst, cap, "%s", src != NULL ? src : "");
}

static void a_on_headers(grace__h2_stream *s, void *user) {
  fixture *f = user;
  sreq *r;
  assert_true(f->nreqs < MAX_STREAMS);
  r = &f->reqs[f->nreqs++];
  memset(r, 0, sizeof(*r));
  r->s = s;
  r->id = grace__h2_stream_id(s);
  grace__h2_stream_set_data(s, r);
  assert_ptr_equal(grace__h2_stream_conn(s), f->h2);
  copy_str(r->method, sizeof(r->method), grace__h2_stream_method(s));
  copy_str(r->path, sizeof(r->path), grace__h2_stream_path(s));
  copy_str(r->authority, sizeof(r->authority), grace__h2_stream_authority(s));
  r->has_query = grace__h2_stream_query(s) != NULL;
  copy_str(r->query, sizeof(r->query), grace__h2_stream_query(s));
  if (f->on_headers != NULL)
    f->on_headers(f, r);
}

static void a_on_data(grace__h2_stream *s, const uint8_t *data, size_t len,
                      void *user) {
  fixture *f = user;
  sreq *r = req_of(s);
  assert_false(r->ended);
  bytes_add(&r->body, data, len);
  r->data_calls++;
  if (f->on_data != NULL)
    f->on_data(f, r);
}

static void a_on_end(grace__h2_stream *s, void *user) {
  fixture *f = user;
  sreq *r = req_of(s);
  assert_false(r->ended);
  r->ended = 1;
  if (f->respond_on_end) {
    grace__h2_header h[] = {{"Content-Type", "text/plain"}};
    assert_int_equal(grace__h2_respond(s, 200, h, 1, r->body.p, r->body.len),
                     0);
  }
  if (f->on_end != NULL)
    f->on_end(f, r);
}

static void a_on_close(grace__h2_stream *s, uint32_t code, void *user) {
  fixture *f = user;
  sreq *r = req_of(s);
  assert_non_null(r);
  assert_false(r->closed);
  r->closed = 1;
  r->close_code = code;
  r->s = NULL;
  f->closes++;
  /* Still valid inside the callback, and closed to every call. */
  assert_int_equal(grace__h2_send_data(s, "x", 1, 0), GRACE_ECLOSED);
  assert_int_equal(grace__h2_reset(s, NGHTTP2_CANCEL), GRACE_ECLOSED);
}

static void a_on_ready(grace__h2_stream *s, void *user) {
  fixture *f = user;
  f->send_ready++;
  if (f->on_ready != NULL)
    f->on_ready(f, req_of(s));
}

static const grace__h2_callbacks app_cbs = {
    a_on_headers, a_on_data, a_on_end, a_on_close, a_on_ready};

/* ---- shuttling bytes ------------------------------------------------------- */

static void to_client(fixture *f, const uint8_t *p, size_t n) {
  if (f->byte_at_a_time) {
    for (size_t i = 0; i < n; i++)
      assert_int_equal(nghttp2_session_mem_recv(f->c.s, p + i, 1), 1);
  } else if (n > 0) {
    assert_int_equal(nghttp2_session_mem_recv(f->c.s, p, n), (ssize_t)n);
  }
}

static void to_server(fixture *f, const uint8_t *p, size_t n) {
  if (f->byte_at_a_time) {
    for (size_t i = 0; i < n; i++)
      assert_int_equal(grace__h2_recv(f->h2, p + i, 1), 1);
  } else if (n > 0) {
    assert_int_equal(grace__h2_recv(f->h2, p, n), (ssize_t)n);
  }
}

/* Pulls everything the server has to write into |b|. */
static size_t collect_server(fixture *f, bytes *b) {
  size_t total = 0;
  for (;;) {
    const uint8_t *p;
    size_t n;
    assert_int_equal(grace__h2_output(f->h2, &p, &n), 0);
    if (n == 0)
      return total;
    bytes_add(b, p, n);
    total += n;
  }
}

/* Pulls everything the client has to write into |b|. */
static size_t collect_client(fixture *f, bytes *b) {
  size_t total = 0;
  for (;;) {
    const uint8_t *p;
    ssize_t n = nghttp2_session_mem_send(f->c.s, &p);
    assert_true(n >= 0);
    if (n == 0)
      return total;
    bytes_add(b, p, (size_t)n);
    total += (size_t)n;
  }
}

static size_t server_to_client(fixture *f) {
  bytes b = {0};
  size_t n = collect_server(f, &b);
  to_client(f, b.p, b.len);
  bytes_free(&b);
  return n;
}

static size_t client_to_server(fixture *f) {
  bytes b = {0};
  size_t n = collect_client(f, &b);
  to_server(f, b.p, b.len);
  bytes_free(&b);
  return n;
}

static void pump(fixture *f) {
  for (int i = 0; i < 100000; i++)
    if (server_to_client(f) + client_to_server(f) == 0)
      return;
  fail_msg("the connection never went quiet");
}

static fixture *setup(const grace__h2_options *opts, size_t max_send_header) {
  fixture *f = calloc(1, sizeof(*f));
  assert_non_null(f);
  assert_int_equal(grace__h2_new(&app_cbs, f, opts, &f->h2), 0);
  client_init(&f->c, max_send_header);
  pump(f);
  return f;
}

static void teardown(fixture *f) {
  grace__h2_free(f->h2);
  client_free(&f->c);
  for (size_t i = 0; i < f->nreqs; i++)
    bytes_free(&f->reqs[i].body);
  free(f);
}

static size_t frames_of(const client *c, size_t from, uint8_t type) {
  size_t n = 0;
  for (size_t i = from; i < c->nframes; i++)
    n += c->frames[i].type == type;
  return n;
}

/* Walks raw frames in |b| (after the server preface); returns the number
 * of GOAWAY frames and stores the last one's fields. */
static size_t raw_goaways(const bytes *b, int32_t *last, uint32_t *code) {
  size_t off = 0, n = 0;
  while (off + 9 <= b->len) {
    const uint8_t *h = b->p + off;
    size_t len = ((size_t)h[0] << 16) | ((size_t)h[1] << 8) | h[2];
    assert_true(off + 9 + len <= b->len);
    if (h[3] == NGHTTP2_GOAWAY) {
      const uint8_t *p = h + 9;
      *last = (int32_t)((((uint32_t)p[0] & 0x7f) << 24) |
                        ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3]);
      *code = ((uint32_t)p[4] << 24) | ((uint32_t)p[5] << 16) |
              ((uint32_t)p[6] << 8) | p[7];
      n++;
    }
    off += 9 + len;
  }
  assert_int_equal(off, b->len);
  return n;
}

/* ---- requests and responses ------------------------------------------------ */

static void headers_and_path_are_parsed(void **state) {
  fixture *f = setup(NULL, 0);
  grace__h2_header h[] = {
      {"x-custom", "v1"}, {"user-agent", "test"}, {"x-custom", "v2"}};
  (void)state;

  int32_t id = request(&f->c, "GET", "/a/b%20c?x=1&y=2", h, 3, NULL, 0, 0, 0);
  /* Hold the answer: inspect the stream first. */
  client_to_server(f);
  assert_int_equal(f->nreqs, 1);
  sreq *r = &f->reqs[0];
  grace__h2_stream *s = r->s;
  assert_int_equal(r->id, id);
  assert_string_equal(r->method, "GET");
  assert_string_equal(r->path, "/a/b%20c");
  assert_true(r->has_query);
  assert_string_equal(r->query, "x=1&y=2");
  assert_string_equal(r->authority, "example.com");
  assert_string_equal(grace__h2_stream_scheme(s), "http");
  assert_true(r->ended);
  assert_int_equal(r->data_calls, 0);
  /* Lookup ignores case; the first of repeated fields wins. */
  assert_string_equal(grace__h2_stream_header(s, "X-Custom"), "v1");
  assert_string_equal(grace__h2_stream_header(s, "USER-AGENT"), "test");
  assert_null(grace__h2_stream_header(s, "x-missing"));
  assert_null(grace__h2_stream_header(s, ":method"));
  /* Iteration: every regular field, in order, no pseudo-headers. */
  size_t it = 0, k = 0;
  const char *name, *value;
  const char *want[][2] = {{"x-custom", "v1"}, {"user-agent", "test"},
                           {"x-custom", "v2"}};
  while (grace__h2_stream_header_next(s, &it, &name, &value)) {
    assert_true(k < 3);
    assert_string_equal(name, want[k][0]);
    assert_string_equal(value, want[k][1]);
    k++;
  }
  assert_int_equal(k, 3);
  assert_int_equal(grace__h2_stream_count(f->h2), 1);

  /* The whole answer: names lower-cased, connection headers dropped,
   * content-length added. */
  grace__h2_header rh[] = {{"Content-Type", "text/plain"},
                           {"X-Reply", "yes"},
                           {"Connection", "close"}};
  assert_int_equal(grace__h2_respond(s, 200, rh, 3, "hello", 5), 0);
  assert_int_equal(grace__h2_respond(s, 200, rh, 3, "again", 5),
                   GRACE_ESTATE);
  pump(f);
  cstream *c = cs(&f->c, id);
  assert_true(c->closed);
  assert_int_equal(c->close_code, NGHTTP2_NO_ERROR);
  assert_int_equal(c->status, 200);
  assert_true(header_has(&c->headers, "content-type: text/plain"));
  assert_true(header_has(&c->headers, "x-reply: yes"));
  assert_true(header_has(&c->headers, "content-length: 5"));
  assert_false(header_has(&c->headers, "connection:"));
  assert_int_equal(c->body.len, 5);
  assert_memory_equal(c->body.p, "hello", 5);
  assert_true(r->closed);
  assert_int_equal(r->close_code, NGHTTP2_NO_ERROR);
  assert_int_equal(grace__h2_stream_count(f->h2), 0);
  assert_int_equal(grace__h2_want_io(f->h2), GRACE__H2_WANT_READ);
  assert_int_equal(grace__h2_error(f->h2), 0);
  teardown(f);
}

static void on_headers_record_only(fixture *f, sreq *r) {
  (void)f;
  (void)r;
}

static void authority_falls_back_to_host_and_query_may_be_absent(void **st) {
  fixture *f = setup(NULL, 0);
  nghttp2_nv nv[] = {
      {(uint8_t *)(uintptr_t) ":method", (uint8_t *)(uintptr_t) "GET", 7, 3, 0},
      {(uint8_t *)(uintptr_t) ":scheme", (uint8_t *)(uintptr_t) "https", 7, 5,
       0},
      {(uint8_t *)(uintptr_t) ":path", (uint8_t *)(uintptr_t) "/plain", 5, 6,
       0},
      {(uint8_t *)(uintptr_t) "host", (uint8_t *)(uintptr_t) "h.example", 4, 9,
       0},
  };
  (void)st;
  f->on_headers = on_headers_record_only;
  cstream *c = &f->c.streams[f->c.nstreams++];
  memset(c, 0, sizeof(*c));
  c->id = nghttp2_submit_request(f->c.s, NULL, nv, COUNT(nv), NULL, NULL);
  assert_true(c->id > 0);
  client_to_server(f);
  assert_int_equal(f->nreqs, 1);
  assert_string_equal(f->reqs[0].authority, "h.example");
  assert_string_equal(f->reqs[0].path, "/plain");
  assert_false(f->reqs[0].has_query);
  assert_string_equal(grace__h2_stream_scheme(f->reqs[0].s), "https");
  assert_string_equal(grace__h2_stream_header(f->reqs[0].s, "Host"),
                      "h.example");
  assert_int_equal(grace__h2_respond(f->reqs[0].s, 204, NULL, 0, NULL, 0), 0);
  pump(f);
  assert_int_equal(c->status, 204);
  assert_false(header_has(&c->headers, "content-length:"));
  teardown(f);
}

static uint8_t *pattern(size_t len, unsigned seed) {
  uint8_t *p = malloc(len ? len : 1);
  assert_non_null(p);
  for (size_t i = 0; i < len; i++)
    p[i] = (uint8_t)((i * 31u + seed) ^ (i >> 8));
  return p;
}

/* Counts how much body had arrived when the server first saw data. */
static size_t first_data_len;
static void note_first_data(fixture *f, sreq *r) {
  (void)f;
  if (r->data_calls == 1)
    first_data_len = r->body.len;
}

static void post_body_arrives_incrementally(void **state) {
  fixture *f = setup(NULL, 0);
  size_t len = 200000;
  uint8_t *body = pattern(len, 7);
  (void)state;
  f->respond_on_end = 1;
  f->on_data = note_first_data;
  first_data_len = 0;

  /* 1000-byte DATA frames; the body is three times the stream window. */
  int32_t id = request(&f->c, "POST", "/upload", NULL, 0, body, len, 1000, 0);
  pump(f);
  sreq *r = &f->reqs[0];
  assert_int_equal(r->body.len, len);
  assert_memory_equal(r->body.p, body, len);
  assert_true(r->data_calls >= len / 1000);
  assert_int_equal(first_data_len, 1000); /* not buffered until the end */
  assert_true(r->ended);
  cstream *c = cs(&f->c, id);
  assert_int_equal(c->status, 200);
  assert_int_equal(c->body.len, len);
  assert_memory_equal(c->body.p, body, len);
  assert_int_equal(c->close_code, NGHTTP2_NO_ERROR);
  free(body);
  teardown(f);
}

static void manual_consume_bounds_what_the_peer_may_send(void **state) {
  grace__h2_options o = {.manual_consume = 1, .initial_window = 16384};
  fixture *f = setup(&o, 0);
  size_t len = 100000;
  uint8_t *body = pattern(len, 3);
  (void)state;

  request(&f->c, "POST", "/slow", NULL, 0, body, len, 0, 0);
  pump(f);
  sreq *r = &f->reqs[0];
  /* Nothing consumed: exactly one stream window arrived, and no more. */
  assert_int_equal(r->body.len, 16384);
  pump(f);
  assert_int_equal(r->body.len, 16384);
  assert_int_equal(grace__h2_stream_consume(r->s, 16385), GRACE_ERANGE);
  size_t consumed = 0;
  while (!r->ended) {
    size_t n = r->body.len - consumed;
    assert_true(n > 0);
    assert_int_equal(grace__h2_stream_consume(r->s, n), 0);
    consumed += n;
    pump(f);
    /* Never more in flight than the window. */
    assert_true(r->body.len - consumed <= 16384);
  }
  assert_int_equal(r->body.len, len);
  assert_memory_equal(r->body.p, body, len);
  assert_int_equal(grace__h2_respond(r->s, 200, NULL, 0, "ok", 2), 0);
  pump(f);
  assert_true(r->closed);
  free(body);
  teardown(f);

  /* Without the option the call is refused. */
  f = setup(NULL, 0);
  request(&f->c, "GET", "/", NULL, 0, NULL, 0, 0, 0);
  client_to_server(f);
  assert_int_equal(grace__h2_stream_consume(f->reqs[0].s, 0), GRACE_ESTATE);
  teardown(f);
}

static void concurrent_streams_complete_in_any_order(void **state) {
  fixture *f = setup(NULL, 0);
  int32_t ids[10];
  char path[32];
  (void)state;
  for (int i = 0; i < 10; i++) {
    snprintf(path, sizeof(path), "/r%d", i);
    ids[i] = request(&f->c, "GET", path, NULL, 0, NULL, 0, 0, 0);
  }
  pump(f);
  assert_int_equal(f->nreqs, 10);
  assert_int_equal(grace__h2_stream_count(f->h2), 10);
  /* Answer in reverse order, one at a time. */
  for (int i = 9; i >= 0; i--) {
    sreq *r = &f->reqs[i];
    assert_int_equal(grace__h2_respond(r->s, 200, NULL, 0, r->path,
                                       strlen(r->path)),
                     0);
    pump(f);
    assert_int_equal(grace__h2_stream_count(f->h2), (size_t)i);
  }
  for (int i = 0; i < 10; i++) {
    cstream *c = cs(&f->c, ids[i]);
    snprintf(path, sizeof(path), "/r%d", i);
    assert_true(c->closed);
    assert_int_equal(c->body.len, strlen(path));
    assert_memory_equal(c->body.p, path, strlen(path));
  }
  teardown(f);
}

static void streams_over_the_limit_are_refused(void **state) {
  grace__h2_options o = {.max_concurrent_streams = 2};
  fixture *f = calloc(1, sizeof(*f));
  (void)state;
  assert_int_equal(grace__h2_new(&app_cbs, f, &o, &f->h2), 0);
  client_init(&f->c, 0);
  /* The client sends three requests before it has seen our SETTINGS. */
  int32_t a = request(&f->c, "GET", "/1", NULL, 0, NULL, 0, 0, 0);
  int32_t b = request(&f->c, "GET", "/2", NULL, 0, NULL, 0, 0, 0);
  int32_t c = request(&f->c, "GET", "/3", NULL, 0, NULL, 0, 0, 0);
  client_to_server(f);
  pump(f);
  assert_int_equal(f->nreqs, 2);
  assert_int_equal(f->reqs[0].id, a);
  assert_int_equal(f->reqs[1].id, b);
  assert_true(cs(&f->c, c)->closed);
  assert_int_equal(cs(&f->c, c)->close_code, NGHTTP2_REFUSED_STREAM);
  teardown(f);
}

/* ---- response bodies, flow control, trailers ------------------------------ */

static void respond_headers_then_stream(fixture *f, sreq *r) {
  grace__h2_header h[] = {{"content-type", "application/octet-stream"}};
  (void)f;
  assert_int_equal(grace__h2_respond_headers(r->s, 200, h, 1), 0);
}

/* Queues the big body until the queue refuses, continuing on_send_ready. */
static void push_big_body(fixture *f, sreq *r) {
  const uint8_t *data = f->big;
  while (f->sent < f->total) {
    size_t n = f->total - f->sent < 10000 ? f->total - f->sent : 10000;
    int rv = grace__h2_send_data(r->s, data + f->sent, n,
                                 f->sent + n == f->total);
    if (rv == GRACE_EBUSY) {
      f->ebusy++;
      assert_true(grace__h2_stream_send_queued(r->s) > 0);
      return;
    }
    assert_int_equal(rv, 0);
    f->sent += n;
  }
}

static void large_response_waits_for_the_peer_window(void **state) {
  grace__h2_options o = {.max_send_buffer = 32768};
  fixture *f = setup(&o, 0);
  (void)state;
  f->on_headers = respond_headers_then_stream;
  f->on_ready = push_big_body;
  f->total = 1u << 20;
  f->big = pattern(f->total, 11);

  int32_t id = request(&f->c, "GET", "/big", NULL, 0, NULL, 0, 0, 0);
  client_to_server(f);
  sreq *r = &f->reqs[0];
  push_big_body(f, r);
  assert_true(f->ebusy > 0); /* the queue is bounded */
  assert_true(grace__h2_stream_send_queued(r->s) <= 32768 + 10000);

  /* Only server -> client: the client's window (65535) stops the body. */
  for (int i = 0; i < 50; i++)
    server_to_client(f);
  cstream *c = cs(&f->c, id);
  assert_int_equal(c->body.len, 65535);
  assert_false(c->closed);

  pump(f);
  assert_true(c->closed);
  assert_int_equal(c->close_code, NGHTTP2_NO_ERROR);
  assert_int_equal(c->body.len, 1u << 20);
  uint8_t *want = pattern(1u << 20, 11);
  assert_memory_equal(c->body.p, want, 1u << 20);
  free(want);
  assert_true(f->send_ready > 0);
  free(f->big);
  teardown(f);
}

static void empty_queue_defers_and_send_resumes(void **state) {
  fixture *f = setup(NULL, 0);
  (void)state;
  f->on_headers = respond_headers_then_stream;
  int32_t id = request(&f->c, "GET", "/stream", NULL, 0, NULL, 0, 0, 0);
  pump(f);
  cstream *c = cs(&f->c, id);
  sreq *r = &f->reqs[0];
  assert_int_equal(c->status, 200);
  assert_int_equal(c->body.len, 0);
  assert_false(c->closed);
  assert_int_equal(grace__h2_want_io(f->h2), GRACE__H2_WANT_READ);
  /* A second HEADERS is refused; data resumes the deferred provider. */
  assert_int_equal(grace__h2_respond_headers(r->s, 200, NULL, 0),
                   GRACE_ESTATE);
  assert_int_equal(grace__h2_send_data(r->s, "abc", 3, 0), 0);
  assert_true(grace__h2_want_io(f->h2) & GRACE__H2_WANT_WRITE);
  pump(f);
  assert_int_equal(c->body.len, 3);
  assert_false(c->closed);
  assert_int_equal(grace__h2_send_data(r->s, "def", 3, 0), 0);
  assert_int_equal(grace__h2_send_data(r->s, NULL, 0, 1), 0);
  assert_int_equal(grace__h2_send_data(r->s, "x", 1, 0), GRACE_ESTATE);
  pump(f);
  assert_true(c->closed);
  assert_int_equal(c->body.len, 6);
  assert_memory_equal(c->body.p, "abcdef", 6);
  teardown(f);
}

static void send_data_before_headers_is_refused(void **state) {
  fixture *f = setup(NULL, 0);
  (void)state;
  request(&f->c, "GET", "/", NULL, 0, NULL, 0, 0, 0);
  client_to_server(f);
  grace__h2_stream *s = f->reqs[0].s;
  grace__h2_header bad1[] = {{":status", "200"}};
  grace__h2_header bad2[] = {{"x-bad", "a\r\nb"}};
  grace__h2_header bad3[] = {{"bad name", "v"}};
  assert_int_equal(grace__h2_send_data(s, "x", 1, 0), GRACE_ESTATE);
  assert_int_equal(grace__h2_send_trailers(s, NULL, 0), GRACE_ESTATE);
  assert_int_equal(grace__h2_respond(s, 99, NULL, 0, NULL, 0), GRACE_EINVAL);
  assert_int_equal(grace__h2_respond(s, 600, NULL, 0, NULL, 0), GRACE_EINVAL);
  assert_int_equal(grace__h2_respond(s, 200, bad1, 1, NULL, 0), GRACE_EINVAL);
  assert_int_equal(grace__h2_respond(s, 200, bad2, 1, NULL, 0), GRACE_EINVAL);
  assert_int_equal(grace__h2_respond(s, 200, bad3, 1, NULL, 0), GRACE_EINVAL);
  assert_int_equal(grace__h2_respond(s, 204, NULL, 0, "x", 1), GRACE_EINVAL);
  assert_int_equal(grace__h2_respond(s, 200, NULL, 0, NULL, 3), GRACE_EINVAL);
  /* After all those, a good answer still works. */
  assert_int_equal(grace__h2_respond(s, 200, NULL, 0, NULL, 0), 0);
  pump(f);
  assert_int_equal(f->c.streams[0].status, 200);
  assert_true(f->c.streams[0].closed);
  teardown(f);
}

static void trailers_end_the_stream(void **state) {
  fixture *f = setup(NULL, 0);
  grace__h2_header ct[] = {{"content-type", "application/grpc"}};
  grace__h2_header tr[] = {{"grpc-status", "0"}, {"grpc-message", "fine"}};
  static const uint8_t msg[] = {0, 0, 0, 0, 2, 'h', 'i'};
  (void)state;
  int32_t id = request(&f->c, "POST", "/pkg.Svc/Method", ct, 1, msg,
                       sizeof(msg), 0, 0);
  pump(f);
  sreq *r = &f->reqs[0];
  assert_true(r->ended);
  size_t mark = f->c.nframes;
  assert_int_equal(grace__h2_respond_headers(r->s, 200, ct, 1), 0);
  assert_int_equal(grace__h2_send_data(r->s, msg, sizeof(msg), 0), 0);
  assert_int_equal(grace__h2_send_trailers(r->s, tr, 2), 0);
  assert_int_equal(grace__h2_send_trailers(r->s, tr, 2), GRACE_ESTATE);
  pump(f);
  cstream *c = cs(&f->c, id);
  assert_true(c->closed);
  assert_int_equal(c->close_code, NGHTTP2_NO_ERROR);
  assert_int_equal(c->status, 200);
  assert_true(header_has(&c->headers, "content-type: application/grpc"));
  assert_int_equal(c->body.len, sizeof(msg));
  assert_true(header_has(&c->trailers, "grpc-status: 0"));
  assert_true(header_has(&c->trailers, "grpc-message: fine"));
  /* HEADERS, DATA (no END_STREAM), HEADERS with END_STREAM. */
  size_t seen = 0;
  for (size_t i = mark; i < f->c.nframes; i++) {
    rec_frame *fr = &f->c.frames[i];
    if (fr->stream_id != id)
      continue;
    switch (seen++) {
    case 0:
      assert_int_equal(fr->type, NGHTTP2_HEADERS);
      assert_false(fr->flags & NGHTTP2_FLAG_END_STREAM);
      break;
    case 1:
      assert_int_equal(fr->type, NGHTTP2_DATA);
      assert_int_equal(fr->length, sizeof(msg));
      assert_false(fr->flags & NGHTTP2_FLAG_END_STREAM);
      break;
    case 2:
      assert_int_equal(fr->type, NGHTTP2_HEADERS);
      assert_true(fr->flags & NGHTTP2_FLAG_END_STREAM);
      break;
    default:
      fail_msg("unexpected frame type %u", fr->type);
    }
  }
  assert_int_equal(seen, 3);
  teardown(f);
}

static void trailers_only_response_is_one_headers_frame(void **state) {
  fixture *f = setup(NULL, 0);
  grace__h2_header tr[] = {{"content-type", "application/grpc"},
                           {"grpc-status", "12"},
                           {"grpc-message", "unknown method"}};
  (void)state;
  int32_t id = request(&f->c, "POST", "/pkg.Svc/Nope", tr, 1, NULL, 0, 0, 0);
  pump(f);
  size_t mark = f->c.nframes;
  assert_int_equal(
      grace__h2_respond_trailers_only(f->reqs[0].s, 200, tr, COUNT(tr)), 0);
  pump(f);
  cstream *c = cs(&f->c, id);
  assert_true(c->closed);
  assert_int_equal(c->status, 200);
  assert_true(header_has(&c->headers, "grpc-status: 12"));
  assert_true(header_has(&c->headers, "grpc-message: unknown method"));
  size_t n = 0;
  for (size_t i = mark; i < f->c.nframes; i++) {
    if (f->c.frames[i].stream_id != id)
      continue;
    n++;
    assert_int_equal(f->c.frames[i].type, NGHTTP2_HEADERS);
    assert_true(f->c.frames[i].flags & NGHTTP2_FLAG_END_STREAM);
  }
  assert_int_equal(n, 1);
  teardown(f);
}

static void head_response_has_length_but_no_body(void **state) {
  fixture *f = setup(NULL, 0);
  (void)state;
  int32_t id = request(&f->c, "HEAD", "/", NULL, 0, NULL, 0, 0, 0);
  client_to_server(f);
  assert_int_equal(grace__h2_respond(f->reqs[0].s, 200, NULL, 0, "hello", 5),
                   0);
  pump(f);
  cstream *c = cs(&f->c, id);
  assert_true(c->closed);
  assert_int_equal(c->close_code, NGHTTP2_NO_ERROR);
  assert_true(header_has(&c->headers, "content-length: 5"));
  assert_int_equal(c->body.len, 0);
  teardown(f);
}

static void respond_on_headers(fixture *f, sreq *r) {
  (void)f;
  assert_int_equal(grace__h2_respond(r->s, 200, NULL, 0, "early", 5), 0);
}

static void early_response_stops_the_upload_with_no_error(void **state) {
  fixture *f = setup(NULL, 0);
  static const uint8_t part[] = "partial body";
  (void)state;
  f->on_headers = respond_on_headers;
  /* The client keeps its body open (the provider defers). */
  int32_t id = request(&f->c, "POST", "/early", NULL, 0, part,
                       sizeof(part) - 1, 0, 1);
  size_t mark = f->c.nframes;
  pump(f);
  cstream *c = cs(&f->c, id);
  assert_int_equal(c->status, 200);
  assert_int_equal(c->body.len, 5);
  assert_true(c->closed);
  assert_int_equal(c->close_code, NGHTTP2_NO_ERROR);
  /* The server asked the client to stop: RST_STREAM(NO_ERROR). */
  int found = 0;
  for (size_t i = mark; i < f->c.nframes; i++)
    if (f->c.frames[i].type == NGHTTP2_RST_STREAM &&
        f->c.frames[i].stream_id == id) {
      assert_int_equal(f->c.frames[i].error_code, NGHTTP2_NO_ERROR);
      found = 1;
    }
  assert_true(found);
  assert_true(f->reqs[0].closed);
  assert_false(f->reqs[0].ended);
  assert_int_equal(grace__h2_stream_count(f->h2), 0);
  teardown(f);
}

static void request_trailers_end_the_request(void **state) {
  fixture *f = setup(NULL, 0);
  (void)state;
  f->respond_on_end = 1;
  int32_t id = request(&f->c, "POST", "/t", NULL, 0, "body", 4, 0, 0);
  cs(&f->c, id)->up_trailer = 1;
  pump(f);
  assert_int_equal(f->nreqs, 1);
  assert_true(f->reqs[0].ended);
  assert_int_equal(f->reqs[0].body.len, 4);
  assert_int_equal(cs(&f->c, id)->status, 200);
  assert_memory_equal(cs(&f->c, id)->body.p, "body", 4);
  teardown(f);
}

static void head_with_streamed_body_sends_none(void **state) {
  fixture *f = setup(NULL, 0);
  grace__h2_header h[] = {{"Content-Length", "3"}};
  (void)state;
  int32_t id = request(&f->c, "HEAD", "/s", NULL, 0, NULL, 0, 0, 0);
  client_to_server(f);
  grace__h2_stream *s = f->reqs[0].s;
  assert_int_equal(grace__h2_respond_headers(s, 200, h, 1), 0);
  assert_int_equal(grace__h2_send_data(s, "abc", 3, 1), 0);
  pump(f);
  cstream *c = cs(&f->c, id);
  assert_true(c->closed);
  assert_int_equal(c->close_code, NGHTTP2_NO_ERROR);
  assert_int_equal(c->body.len, 0);
  assert_true(header_has(&c->headers, "content-length: 3"));
  /* A content-length given by the application is not doubled. */
  id = request(&f->c, "GET", "/s", NULL, 0, NULL, 0, 0, 0);
  client_to_server(f);
  assert_int_equal(grace__h2_respond(f->reqs[1].s, 200, h, 1, "abc", 3), 0);
  pump(f);
  c = cs(&f->c, id);
  assert_int_equal(c->status, 200);
  assert_int_equal(c->body.len, 3);
  size_t n = 0;
  for (size_t i = 0; i + 15 <= c->headers.len; i++)
    n += memcmp(c->headers.p + i, "content-length:", 15) == 0;
  assert_int_equal(n, 1);
  teardown(f);
}

static void ping_flood_is_fatal(void **state) {
  fixture *f = setup(NULL, 0);
  bytes in = {0};
  static const uint8_t ping[] = {0, 0, 8, 6, 0, 0, 0, 0, 0,
                                 1, 2, 3, 4, 5, 6, 7, 8};
  (void)state;
  /* The client never reads the ACKs: nghttp2 stops at its outbound
   * limit, and the connection is over. */
  for (int i = 0; i < 5000; i++)
    bytes_add(&in, ping, sizeof(ping));
  assert_int_equal(grace__h2_recv(f->h2, in.p, in.len), GRACE__H2_EPROTO);
  assert_int_equal(grace__h2_error(f->h2), GRACE__H2_EPROTO);
  assert_int_equal(grace__h2_want_io(f->h2), 0);
  const uint8_t *p;
  size_t n;
  assert_int_equal(grace__h2_output(f->h2, &p, &n), 0);
  assert_int_equal(n, 0);
  assert_int_equal(grace__h2_recv(f->h2, ping, sizeof(ping)),
                   GRACE__H2_EPROTO);
  bytes_free(&in);
  teardown(f);
}

/* ---- resets and limits ----------------------------------------------------- */

static void client_reset_closes_the_stream(void **state) {
  fixture *f = setup(NULL, 0);
  (void)state;
  int32_t id = request(&f->c, "POST", "/long", NULL, 0, "", 0, 0, 1);
  pump(f);
  assert_int_equal(f->nreqs, 1);
  sreq *r = &f->reqs[0];
  assert_false(r->closed);
  assert_int_equal(grace__h2_respond_headers(r->s, 200, NULL, 0), 0);
  assert_int_equal(nghttp2_submit_rst_stream(f->c.s, NGHTTP2_FLAG_NONE, id,
                                             NGHTTP2_CANCEL),
                   0);
  pump(f);
  assert_true(r->closed);
  assert_int_equal(r->close_code, NGHTTP2_CANCEL);
  assert_null(r->s);
  assert_false(r->ended);
  assert_int_equal(f->closes, 1);
  assert_int_equal(grace__h2_stream_count(f->h2), 0);
  teardown(f);
}

static void reset_on_headers(fixture *f, sreq *r) {
  (void)f;
  assert_int_equal(grace__h2_reset(r->s, NGHTTP2_ENHANCE_YOUR_CALM), 0);
  assert_int_equal(grace__h2_respond(r->s, 200, NULL, 0, NULL, 0),
                   GRACE_ECLOSED);
  assert_false(r->closed); /* until the RST_STREAM is written */
}

static void server_reset_reaches_the_client(void **state) {
  fixture *f = setup(NULL, 0);
  (void)state;
  f->on_headers = reset_on_headers;
  int32_t id = request(&f->c, "POST", "/x", NULL, 0, "abc", 3, 1, 0);
  pump(f);
  cstream *c = cs(&f->c, id);
  assert_true(c->closed);
  assert_int_equal(c->close_code, NGHTTP2_ENHANCE_YOUR_CALM);
  assert_true(f->reqs[0].closed);
  assert_int_equal(f->reqs[0].close_code, NGHTTP2_ENHANCE_YOUR_CALM);
  assert_false(f->reqs[0].ended);
  /* The connection lives on. */
  f->on_headers = NULL;
  f->respond_on_end = 1;
  id = request(&f->c, "GET", "/y", NULL, 0, NULL, 0, 0, 0);
  pump(f);
  assert_int_equal(cs(&f->c, id)->status, 200);
  teardown(f);
}

static const char *expect_x_h59;
static void check_x_h59(fixture *f, sreq *r) {
  (void)f;
  assert_string_equal(grace__h2_stream_header(r->s, "x-h59"), expect_x_h59);
}

static void too_large_header_list_gets_431(void **state) {
  fixture *f = setup(NULL, 1u << 20);
  grace__h2_header h[80];
  char names[80][16], value[1001];
  (void)state;
  memset(value, 'v', 1000);
  value[1000] = '\0';
  for (int i = 0; i < 80; i++) {
    snprintf(names[i], sizeof(names[i]), "x-h%d", i);
    h[i].name = names[i];
    h[i].value = value;
  }
  f->respond_on_end = 1;
  int32_t id = request(&f->c, "GET", "/big-head", h, 80, NULL, 0, 0, 0);
  pump(f);
  cstream *c = cs(&f->c, id);
  assert_true(c->closed);
  assert_int_equal(c->status, 431);
  assert_int_equal(f->nreqs, 0); /* the application never saw it */
  assert_int_equal(grace__h2_stream_count(f->h2), 0);
  /* The same fields under the limit pass, and HPACK state is intact. */
  expect_x_h59 = value;
  f->on_headers = check_x_h59;
  id = request(&f->c, "GET", "/ok", h, 60, NULL, 0, 0, 0);
  pump(f);
  assert_int_equal(cs(&f->c, id)->status, 200);
  assert_int_equal(f->nreqs, 1);
  teardown(f);

  /* A small limit. */
  grace__h2_options o = {.max_header_list = 200};
  f = setup(&o, 0);
  grace__h2_header one[] = {{"x-long", value}};
  id = request(&f->c, "POST", "/p", one, 1, "body", 4, 0, 0);
  pump(f);
  assert_int_equal(cs(&f->c, id)->status, 431);
  assert_int_equal(f->nreqs, 0);
  teardown(f);
}

static void body_over_the_limit_gets_413(void **state) {
  grace__h2_options o = {.max_request_body = 1000};
  fixture *f = setup(&o, 0);
  uint8_t *body = pattern(3000, 1);
  char clen[16];
  (void)state;
  f->respond_on_end = 1;
  /* A declared length over the limit: refused before the application. */
  snprintf(clen, sizeof(clen), "%d", 3000);
  grace__h2_header h[] = {{"content-length", clen}};
  int32_t id = request(&f->c, "POST", "/a", h, 1, body, 3000, 0, 0);
  pump(f);
  assert_int_equal(cs(&f->c, id)->status, 413);
  assert_true(cs(&f->c, id)->closed);
  assert_int_equal(f->nreqs, 0);
  /* No length: the body stops being delivered at the limit. */
  id = request(&f->c, "POST", "/b", NULL, 0, body, 3000, 100, 0);
  pump(f);
  assert_int_equal(cs(&f->c, id)->status, 413);
  assert_int_equal(f->nreqs, 1);
  assert_true(f->reqs[0].body.len <= 1000);
  assert_false(f->reqs[0].ended);
  assert_true(f->reqs[0].closed);
  /* Past the limit after the answer started: reset with CANCEL. */
  f->respond_on_end = 0;
  f->on_headers = respond_headers_then_stream;
  id = request(&f->c, "POST", "/d", NULL, 0, body, 3000, 100, 0);
  pump(f);
  assert_true(cs(&f->c, id)->closed);
  assert_int_equal(cs(&f->c, id)->close_code, NGHTTP2_CANCEL);
  assert_int_equal(f->reqs[1].close_code, NGHTTP2_CANCEL);
  f->on_headers = NULL;
  f->respond_on_end = 1;
  /* Exactly at the limit is fine. */
  id = request(&f->c, "POST", "/c", NULL, 0, body, 1000, 100, 0);
  pump(f);
  assert_int_equal(cs(&f->c, id)->status, 200);
  assert_int_equal(cs(&f->c, id)->body.len, 1000);
  assert_int_equal(grace__h2_stream_count(f->h2), 0);
  free(body);
  teardown(f);
}

/* ---- graceful shutdown ----------------------------------------------------- */

static void hold_request(fixture *f, sreq *r) {
  (void)f;
  (void)r;
}

static void shutdown_sends_goaway_ping_then_final_goaway(void **state) {
  fixture *f = setup(NULL, 0);
  (void)state;
  f->respond_on_end = 1;
  int32_t first = request(&f->c, "GET", "/before", NULL, 0, NULL, 0, 0, 0);
  pump(f);
  assert_true(cs(&f->c, first)->closed);
  /* A stream still open: an idle nghttp2 client would not ACK a PING
   * after a GOAWAY but close the connection instead. */
  f->respond_on_end = 0;
  f->on_headers = hold_request;
  int32_t held = request(&f->c, "GET", "/held", NULL, 0, NULL, 0, 0, 0);
  pump(f);

  size_t mark = f->c.nframes;
  assert_int_equal(grace__h2_shutdown_begin(f->h2), 0);
  assert_int_equal(grace__h2_shutdown_begin(f->h2), 0); /* idempotent */
  assert_false(grace__h2_is_drained(f->h2));
  server_to_client(f);
  /* Exactly GOAWAY(2^31-1, NO_ERROR), then PING with the known payload. */
  assert_int_equal(f->c.nframes - mark, 2);
  rec_frame *g = &f->c.frames[mark];
  assert_int_equal(g->type, NGHTTP2_GOAWAY);
  assert_int_equal(g->last_stream_id, 0x7fffffff);
  assert_int_equal(g->error_code, NGHTTP2_NO_ERROR);
  rec_frame *p = &f->c.frames[mark + 1];
  assert_int_equal(p->type, NGHTTP2_PING);
  assert_false(p->flags & NGHTTP2_FLAG_ACK);
  assert_memory_equal(p->opaque, GRACE__H2_SHUTDOWN_PING, 8);
  /* Without the ACK nothing more is sent, and reading goes on. */
  assert_int_equal(server_to_client(f), 0);
  assert_true(grace__h2_want_io(f->h2) & GRACE__H2_WANT_READ);
  assert_false(grace__h2_is_drained(f->h2));

  /* The client's ACK brings the final GOAWAY with the real last id. */
  mark = f->c.nframes;
  assert_true(client_to_server(f) > 0);
  assert_true(grace__h2_want_io(f->h2) & GRACE__H2_WANT_WRITE);
  server_to_client(f);
  assert_int_equal(f->c.nframes - mark, 1);
  g = &f->c.frames[mark];
  assert_int_equal(g->type, NGHTTP2_GOAWAY);
  assert_int_equal(g->last_stream_id, held);
  assert_int_equal(g->error_code, NGHTTP2_NO_ERROR);
  /* Later ACKs or timeouts change nothing. */
  assert_int_equal(grace__h2_shutdown_timeout(f->h2), 0);
  assert_int_equal(server_to_client(f), 0);
  assert_false(grace__h2_is_drained(f->h2));
  assert_true(grace__h2_want_io(f->h2) & GRACE__H2_WANT_READ);

  /* The held stream ends: drained, and nghttp2 wants nothing more. */
  assert_int_equal(grace__h2_respond(f->reqs[1].s, 200, NULL, 0, "ok", 2), 0);
  pump(f);
  assert_int_equal(cs(&f->c, held)->status, 200);
  assert_true(grace__h2_is_drained(f->h2));
  assert_int_equal(grace__h2_want_io(f->h2), 0);
  teardown(f);
}

static void stream_in_flight_before_the_ack_completes(void **state) {
  fixture *f = setup(NULL, 0);
  bytes held = {0}, wire = {0};
  (void)state;
  f->on_headers = hold_request;
  int32_t s1 = request(&f->c, "GET", "/one", NULL, 0, NULL, 0, 0, 0);
  pump(f);
  assert_int_equal(f->nreqs, 1);

  assert_int_equal(grace__h2_shutdown_begin(f->h2), 0);
  collect_server(f, &held); /* GOAWAY + PING, still on the wire */
  /* The client, not having seen them, opens another stream. */
  int32_t s3 = request(&f->c, "POST", "/three", NULL, 0, "x", 1, 0, 0);
  collect_client(f, &wire);
  to_server(f, wire.p, wire.len);
  assert_int_equal(f->nreqs, 2); /* accepted: it was in flight */
  assert_int_equal(f->reqs[1].id, s3);
  /* Now the client reads GOAWAY and PING, and ACKs. */
  size_t mark = f->c.nframes;
  to_client(f, held.p, held.len);
  assert_int_equal(frames_of(&f->c, mark, NGHTTP2_GOAWAY), 1);
  client_to_server(f);
  mark = f->c.nframes;
  server_to_client(f);
  assert_int_equal(f->c.nframes - mark, 1);
  assert_int_equal(f->c.frames[mark].type, NGHTTP2_GOAWAY);
  assert_int_equal(f->c.frames[mark].last_stream_id, s3);
  assert_false(grace__h2_is_drained(f->h2));
  assert_true(grace__h2_want_io(f->h2) & GRACE__H2_WANT_READ);

  /* Both streams finish; the last one drains the connection. */
  assert_int_equal(grace__h2_respond(f->reqs[0].s, 200, NULL, 0, "1", 1), 0);
  pump(f);
  assert_true(cs(&f->c, s1)->closed);
  assert_int_equal(cs(&f->c, s1)->status, 200);
  assert_false(grace__h2_is_drained(f->h2));
  assert_int_equal(grace__h2_stream_count(f->h2), 1);
  assert_true(f->reqs[1].ended);
  assert_int_equal(grace__h2_respond(f->reqs[1].s, 200, NULL, 0, "3", 1), 0);
  pump(f);
  assert_true(cs(&f->c, s3)->closed);
  assert_int_equal(cs(&f->c, s3)->status, 200);
  assert_int_equal(cs(&f->c, s3)->close_code, NGHTTP2_NO_ERROR);
  assert_true(grace__h2_is_drained(f->h2));
  assert_int_equal(grace__h2_want_io(f->h2), 0);
  bytes_free(&held);
  bytes_free(&wire);
  teardown(f);
}

static void timeout_sends_final_goaway_and_later_streams_are_refused(
    void **state) {
  fixture *f = setup(NULL, 0);
  bytes held = {0}, late = {0};
  (void)state;
  f->on_headers = hold_request;
  int32_t s1 = request(&f->c, "GET", "/one", NULL, 0, NULL, 0, 0, 0);
  pump(f);
  assert_int_equal(grace__h2_shutdown_timeout(f->h2), 0); /* no-op yet */
  assert_int_equal(grace__h2_shutdown_begin(f->h2), 0);
  collect_server(f, &held);
  /* Stream 3 reaches the server before the final GOAWAY... */
  int32_t s3 = request(&f->c, "GET", "/three", NULL, 0, NULL, 0, 0, 0);
  client_to_server(f);
  /* ...stream 5 is on the wire when the timer fires (no ACK came). */
  int32_t s5 = request(&f->c, "GET", "/five", NULL, 0, NULL, 0, 0, 0);
  collect_client(f, &late);
  assert_int_equal(grace__h2_shutdown_timeout(f->h2), 0);
  assert_true(grace__h2_want_io(f->h2) & GRACE__H2_WANT_WRITE);
  collect_server(f, &held);
  int32_t last = 0;
  uint32_t code = 99;
  assert_int_equal(raw_goaways(&held, &last, &code), 2);
  assert_int_equal(last, s3);
  assert_int_equal(code, NGHTTP2_NO_ERROR);
  /* Stream 5 arrives after the final GOAWAY: ignored. */
  to_server(f, late.p, late.len);
  assert_int_equal(f->nreqs, 2);
  assert_int_equal(grace__h2_stream_count(f->h2), 2);
  /* The client learns stream 5 was not processed: safe to retry. */
  to_client(f, held.p, held.len);
  assert_true(cs(&f->c, s5)->closed);
  assert_int_equal(cs(&f->c, s5)->close_code, NGHTTP2_REFUSED_STREAM);
  assert_false(cs(&f->c, s1)->closed);
  assert_false(cs(&f->c, s3)->closed);
  assert_false(grace__h2_is_drained(f->h2));

  for (size_t i = 0; i < 2; i++) {
    assert_int_equal(grace__h2_respond(f->reqs[i].s, 200, NULL, 0, "ok", 2),
                     0);
    pump(f);
  }
  assert_int_equal(cs(&f->c, s1)->status, 200);
  assert_int_equal(cs(&f->c, s3)->status, 200);
  assert_true(grace__h2_is_drained(f->h2));
  assert_int_equal(grace__h2_want_io(f->h2), 0);
  bytes_free(&held);
  bytes_free(&late);
  teardown(f);
}

static void idle_shutdown_drains_on_the_timer(void **state) {
  fixture *f = setup(NULL, 0);
  (void)state;
  assert_int_equal(grace__h2_shutdown_begin(f->h2), 0);
  pump(f);
  /* The idle nghttp2 client does not ACK (it wants to close), so the
   * server waits for its timer: a stream could still be on the wire. */
  assert_int_equal(frames_of(&f->c, 0, NGHTTP2_GOAWAY), 1);
  assert_false(grace__h2_is_drained(f->h2));
  assert_true(grace__h2_want_io(f->h2) & GRACE__H2_WANT_READ);
  assert_int_equal(nghttp2_session_want_read(f->c.s), 0);
  assert_int_equal(grace__h2_shutdown_timeout(f->h2), 0);
  bytes out = {0};
  collect_server(f, &out);
  int32_t last = -1;
  uint32_t code = 99;
  assert_int_equal(raw_goaways(&out, &last, &code), 1);
  assert_int_equal(last, 0);
  assert_int_equal(code, NGHTTP2_NO_ERROR);
  bytes_free(&out);
  assert_true(grace__h2_is_drained(f->h2));
  assert_int_equal(grace__h2_want_io(f->h2), 0);
  teardown(f);
}

/* ---- force close, garbage, byte at a time ---------------------------------- */

static void force_close_resets_every_stream(void **state) {
  fixture *f = setup(NULL, 0);
  bytes out = {0};
  (void)state;
  f->on_headers = hold_request;
  request(&f->c, "GET", "/a", NULL, 0, NULL, 0, 0, 0);
  int32_t b = request(&f->c, "POST", "/b", NULL, 0, "", 0, 0, 1);
  pump(f);
  assert_int_equal(f->nreqs, 2);
  assert_int_equal(grace__h2_respond_headers(f->reqs[0].s, 200, NULL, 0), 0);
  assert_int_equal(grace__h2_force_close(f->h2, NGHTTP2_INTERNAL_ERROR), 0);
  assert_true(f->reqs[0].closed);
  assert_true(f->reqs[1].closed);
  assert_int_equal(f->reqs[0].close_code, NGHTTP2_INTERNAL_ERROR);
  assert_int_equal(f->reqs[1].close_code, NGHTTP2_INTERNAL_ERROR);
  assert_int_equal(f->closes, 2);
  assert_int_equal(grace__h2_stream_count(f->h2), 0);
  assert_int_equal(grace__h2_force_close(f->h2, NGHTTP2_NO_ERROR), 0);
  assert_int_equal(f->closes, 2);
  collect_server(f, &out);
  int32_t last = 0;
  uint32_t code = 0;
  assert_int_equal(raw_goaways(&out, &last, &code), 1);
  assert_int_equal(last, b);
  assert_int_equal(code, NGHTTP2_INTERNAL_ERROR);
  assert_int_equal(grace__h2_want_io(f->h2), 0);
  assert_int_equal(grace__h2_recv(f->h2, (const uint8_t *)"x", 1),
                   GRACE_ECLOSED);
  assert_int_equal(grace__h2_error(f->h2), GRACE_ECLOSED);
  assert_int_equal(grace__h2_shutdown_begin(f->h2), 0);
  assert_false(grace__h2_is_drained(f->h2));
  bytes_free(&out);
  teardown(f);
}

static void force_close_inside_on_data(fixture *f, sreq *r) {
  (void)r;
  assert_int_equal(grace__h2_force_close(f->h2, NGHTTP2_CANCEL), 0);
}

static void force_close_from_a_callback_is_safe(void **state) {
  fixture *f = setup(NULL, 0);
  (void)state;
  f->on_headers = hold_request;
  request(&f->c, "GET", "/other", NULL, 0, NULL, 0, 0, 0);
  pump(f);
  f->on_data = force_close_inside_on_data;
  request(&f->c, "POST", "/x", NULL, 0, "abcdef", 6, 1, 0);
  bytes wire = {0};
  collect_client(f, &wire);
  /* The rest of the input after the force close is ignored. */
  assert_int_equal(grace__h2_recv(f->h2, wire.p, wire.len),
                   (ssize_t)wire.len);
  assert_int_equal(f->closes, 2);
  assert_true(f->reqs[0].closed && f->reqs[1].closed);
  assert_int_equal(f->reqs[1].close_code, NGHTTP2_CANCEL);
  assert_int_equal(f->reqs[1].data_calls, 1);
  bytes_free(&wire);
  teardown(f);
}

static void free_with_open_streams_reports_them_lost(void **state) {
  fixture *f = setup(NULL, 0);
  (void)state;
  f->on_headers = hold_request;
  request(&f->c, "GET", "/a", NULL, 0, NULL, 0, 0, 0);
  pump(f);
  grace__h2_free(f->h2);
  f->h2 = NULL;
  assert_true(f->reqs[0].closed);
  assert_int_equal(f->reqs[0].close_code, NGHTTP2_CANCEL);
  teardown(f);
}

/* ---- stream states (RFC 9113 section 5.1), raw frames ----------------------- */

/* Appends one frame to |b|. */
static void raw_frame(bytes *b, uint8_t type, uint8_t flags, int32_t id,
                      const void *payload, size_t n) {
  uint8_t h[9] = {(uint8_t)(n >> 16), (uint8_t)(n >> 8), (uint8_t)n, type,
                  flags, (uint8_t)((uint32_t)id >> 24), (uint8_t)(id >> 16),
                  (uint8_t)(id >> 8), (uint8_t)id};
  bytes_add(b, h, sizeof(h));
  bytes_add(b, payload, n);
}

/* A request header block that leaves the HPACK tables alone: GET, http,
 * "/" from the static table, :authority as a literal never indexed. */
static const uint8_t get_block[] = {0x82, 0x86, 0x84, 0x01, 0x0b, 'e', 'x',
                                    'a',  'm',  'p',  'l',  'e',  '.', 'c',
                                    'o',  'm'};
/* A trailer block: "x-t: 1", a literal never indexed. */
static const uint8_t trailer_block[] = {0x00, 0x03, 'x', '-', 't', 0x01, '1'};

#define F_ES NGHTTP2_FLAG_END_STREAM
#define F_EH NGHTTP2_FLAG_END_HEADERS

/* A server with no client session: the test writes the frames itself. */
static fixture *setup_raw(void) {
  static const uint8_t settings[] = {0, 0, 0, 4, 0, 0, 0, 0, 0};
  fixture *f = calloc(1, sizeof(*f));
  assert_non_null(f);
  assert_int_equal(grace__h2_new(&app_cbs, f, NULL, &f->h2), 0);
  to_server(f, (const uint8_t *)GRACE__H2_PREFACE, GRACE__H2_PREFACE_LEN);
  to_server(f, settings, sizeof(settings));
  return f;
}

/* Feeds |in| to the server and returns what it writes back. */
static bytes raw_exchange(fixture *f, bytes *in) {
  bytes out = {0};
  to_server(f, in->p, in->len);
  bytes_free(in);
  collect_server(f, &out);
  return out;
}

/* Counts the frames of |type| on |id| in |b| (|code| the error code of a
 * GOAWAY or RST_STREAM, UINT32_MAX for any). */
static size_t raw_count(const bytes *b, uint8_t type, int32_t id,
                        uint32_t code) {
  size_t off = 0, n = 0;
  while (off + 9 <= b->len) {
    const uint8_t *h = b->p + off;
    size_t len = ((size_t)h[0] << 16) | ((size_t)h[1] << 8) | h[2];
    int32_t sid = (int32_t)((((uint32_t)h[5] & 0x7f) << 24) |
                            ((uint32_t)h[6] << 16) | ((uint32_t)h[7] << 8) |
                            h[8]);
    const uint8_t *p = h + 9 + (type == NGHTTP2_GOAWAY ? 4 : 0);
    assert_true(off + 9 + len <= b->len);
    if (h[3] == type && sid == id) {
      uint32_t c = UINT32_MAX;
      if (type == NGHTTP2_GOAWAY || type == NGHTTP2_RST_STREAM)
        c = ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) |
            ((uint32_t)p[2] << 8) | p[3];
      n += code == UINT32_MAX || c == code;
    }
    off += 9 + len;
  }
  assert_int_equal(off, b->len);
  return n;
}

/* h2spec 5.1/11, 5.1/12 (and 5.1/5, 5.1/6, 6.1/2 when the response wins the
 * race): DATA or HEADERS on a stream both sides closed is STREAM_CLOSED. */
static void frames_on_a_closed_stream_are_stream_closed(void **state) {
  (void)state;
  for (int headers = 0; headers < 2; headers++) {
    fixture *f = setup_raw();
    bytes in = {0}, out;
    f->respond_on_end = 1;
    raw_frame(&in, NGHTTP2_HEADERS, F_EH | F_ES, 1, get_block,
              sizeof(get_block));
    out = raw_exchange(f, &in);
    assert_int_equal(raw_count(&out, NGHTTP2_HEADERS, 1, UINT32_MAX), 1);
    assert_true(f->reqs[0].closed);
    bytes_free(&out);
    if (headers)
      raw_frame(&in, NGHTTP2_HEADERS, F_EH | F_ES, 1, get_block,
                sizeof(get_block));
    else
      raw_frame(&in, NGHTTP2_DATA, F_ES, 1, "test", 4);
    out = raw_exchange(f, &in);
    assert_int_equal(raw_count(&out, NGHTTP2_GOAWAY, 0, NGHTTP2_STREAM_CLOSED),
                     1);
    assert_int_equal(grace__h2_want_io(f->h2), 0);
    assert_int_equal(f->nreqs, 1);
    bytes_free(&out);
    teardown(f);
  }
}

/* h2spec 5.1/8, 5.1/9: DATA or HEADERS after the client's own RST_STREAM. */
static void frames_after_the_client_reset_are_stream_closed(void **state) {
  static const uint8_t cancel[] = {0, 0, 0, NGHTTP2_CANCEL};
  (void)state;
  for (int headers = 0; headers < 2; headers++) {
    fixture *f = setup_raw();
    bytes in = {0}, out;
    raw_frame(&in, NGHTTP2_HEADERS, F_EH, 1, get_block, sizeof(get_block));
    raw_frame(&in, NGHTTP2_RST_STREAM, 0, 1, cancel, sizeof(cancel));
    if (headers)
      raw_frame(&in, NGHTTP2_HEADERS, F_EH | F_ES, 1, trailer_block,
                sizeof(trailer_block));
    else
      raw_frame(&in, NGHTTP2_DATA, F_ES, 1, "test", 4);
    out = raw_exchange(f, &in);
    assert_int_equal(raw_count(&out, NGHTTP2_GOAWAY, 0, NGHTTP2_STREAM_CLOSED),
                     1);
    assert_int_equal(f->nreqs, 1);
    assert_true(f->reqs[0].closed);
    assert_int_equal(f->reqs[0].close_code, NGHTTP2_CANCEL);
    assert_false(f->reqs[0].ended);
    bytes_free(&out);
    teardown(f);
  }
}

/* h2spec 5.1.1/2: a new stream id below the last one is PROTOCOL_ERROR, and
 * the request is never seen. */
static void lower_stream_id_that_never_opened_is_protocol_error(void **state) {
  fixture *f = setup_raw();
  bytes in = {0}, out;
  (void)state;
  raw_frame(&in, NGHTTP2_HEADERS, F_EH | F_ES, 5, get_block,
            sizeof(get_block));
  raw_frame(&in, NGHTTP2_HEADERS, F_EH | F_ES, 3, get_block,
            sizeof(get_block));
  raw_frame(&in, NGHTTP2_HEADERS, F_EH | F_ES, 7, get_block,
            sizeof(get_block));
  out = raw_exchange(f, &in);
  assert_int_equal(raw_count(&out, NGHTTP2_GOAWAY, 0, NGHTTP2_PROTOCOL_ERROR),
                   1);
  assert_int_equal(f->nreqs, 1); /* 5; nothing after the error */
  assert_int_equal(f->reqs[0].id, 5);
  assert_int_equal(grace__h2_want_io(f->h2), 0);
  assert_int_equal(grace__h2_error(f->h2), GRACE__H2_EPROTO);
  bytes_free(&out);
  teardown(f);
}

static void reset_stream_5(fixture *f, sreq *r) {
  (void)f;
  if (r->id == 5)
    assert_int_equal(grace__h2_reset(r->s, NGHTTP2_REFUSED_STREAM), 0);
}

/* What must stay legal: trailers on an older stream that is still open,
 * and frames on a stream this side reset (the client may not have seen the
 * RST_STREAM yet: RFC 9113 section 5.4.2), even after 2000 more streams. */
static void older_open_and_server_reset_streams_stay_legal(void **state) {
  fixture *f = setup_raw();
  bytes in = {0}, out;
  (void)state;
  f->on_headers = reset_stream_5;
  raw_frame(&in, NGHTTP2_HEADERS, F_EH, 1, get_block, sizeof(get_block));
  raw_frame(&in, NGHTTP2_HEADERS, F_EH | F_ES, 3, get_block,
            sizeof(get_block));
  raw_frame(&in, NGHTTP2_HEADERS, F_EH, 5, get_block, sizeof(get_block));
  raw_frame(&in, NGHTTP2_HEADERS, F_EH | F_ES, 1, trailer_block,
            sizeof(trailer_block));
  out = raw_exchange(f, &in);
  assert_int_equal(raw_count(&out, NGHTTP2_RST_STREAM, 5,
                             NGHTTP2_REFUSED_STREAM),
                   1);
  assert_int_equal(f->nreqs, 3);
  assert_true(f->reqs[0].ended);
  assert_true(f->reqs[2].closed);
  bytes_free(&out);
  raw_frame(&in, NGHTTP2_DATA, F_ES, 5, "late", 4);
  raw_frame(&in, NGHTTP2_HEADERS, F_EH | F_ES, 5, trailer_block,
            sizeof(trailer_block));
  out = raw_exchange(f, &in);
  assert_int_equal(raw_count(&out, NGHTTP2_GOAWAY, 0, UINT32_MAX), 0);
  bytes_free(&out);
  /* Far past the window of remembered ids, an old id is not an error.
   * Each stream below closes within its turn, so its record is reused. */
  assert_int_equal(grace__h2_respond(f->reqs[0].s, 200, NULL, 0, NULL, 0), 0);
  assert_int_equal(grace__h2_respond(f->reqs[1].s, 200, NULL, 0, NULL, 0), 0);
  out = (bytes){0};
  collect_server(f, &out);
  bytes_free(&out);
  assert_int_equal(grace__h2_stream_count(f->h2), 0);
  f->on_headers = NULL;
  f->respond_on_end = 1;
  for (int32_t id = 7; id < 7 + 2 * 2000; id += 2) {
    raw_frame(&in, NGHTTP2_HEADERS, F_EH | F_ES, id, get_block,
              sizeof(get_block));
    to_server(f, in.p, in.len);
    in.len = 0;
    f->nreqs = 0;
    out = (bytes){0};
    collect_server(f, &out);
    bytes_free(&out);
  }
  raw_frame(&in, NGHTTP2_DATA, F_ES, 5, "late", 4);
  raw_frame(&in, NGHTTP2_HEADERS, F_EH | F_ES, 5, trailer_block,
            sizeof(trailer_block));
  out = raw_exchange(f, &in);
  assert_int_equal(raw_count(&out, NGHTTP2_GOAWAY, 0, UINT32_MAX), 0);
  assert_int_equal(grace__h2_error(f->h2), 0);
  bytes_free(&out);
  teardown(f);
}

static void bad_preface_is_fatal_with_goaway(void **state) {
  grace__h2 *h2;
  static const char junk[] = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
  bytes out = {0};
  const uint8_t *p;
  size_t n;
  int calls = 0;
  (void)state;
  assert_int_equal(grace__h2_new(&app_cbs, &calls, NULL, &h2), 0);
  assert_int_equal(grace__h2_recv(h2, (const uint8_t *)junk, sizeof(junk) - 1),
                   GRACE__H2_EPROTO);
  assert_int_equal(grace__h2_error(h2), GRACE__H2_EPROTO);
  assert_true(grace__h2_want_io(h2) & GRACE__H2_WANT_WRITE);
  while (grace__h2_output(h2, &p, &n) == 0 && n > 0)
    bytes_add(&out, p, n);
  /* SETTINGS (the server preface) and GOAWAY(0, PROTOCOL_ERROR). */
  assert_int_equal(out.p[3], NGHTTP2_SETTINGS);
  int32_t last = -1;
  uint32_t code = 0;
  assert_int_equal(raw_goaways(&out, &last, &code), 1);
  assert_int_equal(last, 0);
  assert_int_equal(code, NGHTTP2_PROTOCOL_ERROR);
  assert_int_equal(grace__h2_want_io(h2), 0);
  assert_int_equal(grace__h2_recv(h2, (const uint8_t *)"PRI", 3),
                   GRACE__H2_EPROTO);
  /* A preface broken at its last byte, fed byte by byte. */
  grace__h2_free(h2);
  assert_int_equal(grace__h2_new(&app_cbs, &calls, NULL, &h2), 0);
  for (size_t i = 0; i < GRACE__H2_PREFACE_LEN - 1; i++)
    assert_int_equal(
        grace__h2_recv(h2, (const uint8_t *)GRACE__H2_PREFACE + i, 1), 1);
  assert_int_equal(grace__h2_recv(h2, (const uint8_t *)"X", 1),
                   GRACE__H2_EPROTO);
  grace__h2_free(h2);
  bytes_free(&out);
}

static void protocol_error_after_preface_sends_goaway(void **state) {
  grace__h2 *h2;
  int calls = 0;
  bytes in = {0}, out = {0};
  const uint8_t *p;
  size_t n;
  /* An empty SETTINGS, then DATA on stream 0 (RFC 9113 section 6.1). */
  static const uint8_t settings[] = {0, 0, 0, 4, 0, 0, 0, 0, 0};
  static const uint8_t data0[] = {0, 0, 1, 0, 0, 0, 0, 0, 0, 'x'};
  (void)state;
  assert_int_equal(grace__h2_new(&app_cbs, &calls, NULL, &h2), 0);
  bytes_add(&in, GRACE__H2_PREFACE, GRACE__H2_PREFACE_LEN);
  bytes_add(&in, settings, sizeof(settings));
  bytes_add(&in, data0, sizeof(data0));
  assert_int_equal(grace__h2_recv(h2, in.p, in.len), (ssize_t)in.len);
  while (grace__h2_output(h2, &p, &n) == 0 && n > 0)
    bytes_add(&out, p, n);
  int32_t last = -1;
  uint32_t code = 0;
  assert_int_equal(raw_goaways(&out, &last, &code), 1);
  assert_int_equal(code, NGHTTP2_PROTOCOL_ERROR);
  assert_int_equal(grace__h2_want_io(h2), 0);
  assert_int_equal(grace__h2_error(h2), GRACE__H2_EPROTO);
  assert_int_equal(grace__h2_recv(h2, data0, sizeof(data0)),
                   GRACE__H2_EPROTO);
  grace__h2_free(h2);
  bytes_free(&in);
  bytes_free(&out);
}

static uint32_t rnd_state;
static uint32_t rnd(void) {
  rnd_state = rnd_state * 1103515245u + 12345u;
  return rnd_state >> 8;
}

static void random_bytes_after_preface_never_crash(void **state) {
  (void)state;
  for (unsigned round = 0; round < 300; round++) {
    fixture *f = calloc(1, sizeof(*f));
    uint8_t junk[512];
    const uint8_t *p;
    size_t n;
    rnd_state = round;
    f->respond_on_end = 1;
    assert_int_equal(grace__h2_new(&app_cbs, f, NULL, &f->h2), 0);
    assert_int_equal(grace__h2_recv(f->h2, (const uint8_t *)GRACE__H2_PREFACE,
                                    GRACE__H2_PREFACE_LEN),
                     GRACE__H2_PREFACE_LEN);
    size_t len = rnd() % sizeof(junk);
    for (size_t i = 0; i < len; i++)
      junk[i] = (uint8_t)rnd();
    if (round % 2 == 0 && len >= 9) {
      /* Half the time, start with a plausible SETTINGS header. */
      memcpy(junk, "\0\0\0\4\0\0\0\0\0", 9);
    }
    size_t off = 0;
    while (off < len) {
      size_t chunk = 1 + rnd() % 64;
      if (chunk > len - off)
        chunk = len - off;
      ssize_t rv = grace__h2_recv(f->h2, junk + off, chunk);
      assert_true(rv == (ssize_t)chunk || rv < 0);
      while (grace__h2_output(f->h2, &p, &n) == 0 && n > 0)
        ;
      if (rv < 0 || grace__h2_want_io(f->h2) == 0)
        break;
      off += chunk;
    }
    teardown(f);
  }
}

static void byte_at_a_time_exchange(void **state) {
  fixture *f = calloc(1, sizeof(*f));
  uint8_t *body = pattern(70000, 5);
  (void)state;
  f->byte_at_a_time = 1;
  f->respond_on_end = 1;
  assert_int_equal(grace__h2_new(&app_cbs, f, NULL, &f->h2), 0);
  client_init(&f->c, 0);
  grace__h2_header h[] = {{"x-a", "1"}};
  int32_t g = request(&f->c, "GET", "/get?q=1", h, 1, NULL, 0, 0, 0);
  int32_t p = request(&f->c, "POST", "/post", h, 1, body, 70000, 3000, 0);
  pump(f);
  assert_int_equal(f->nreqs, 2);
  assert_string_equal(f->reqs[0].query, "q=1");
  assert_int_equal(cs(&f->c, g)->status, 200);
  assert_int_equal(cs(&f->c, p)->body.len, 70000);
  assert_memory_equal(cs(&f->c, p)->body.p, body, 70000);
  assert_true(f->reqs[1].data_calls >= 70000 / 3000);
  assert_int_equal(grace__h2_shutdown_begin(f->h2), 0);
  pump(f);
  assert_false(grace__h2_is_drained(f->h2)); /* idle client: no ACK */
  assert_int_equal(grace__h2_shutdown_timeout(f->h2), 0);
  pump(f);
  assert_true(grace__h2_is_drained(f->h2));
  free(body);
  teardown(f);
}

static void reentrant_io_calls_are_refused(fixture *f, sreq *r) {
  const uint8_t *p;
  size_t n;
  (void)r;
  assert_int_equal(grace__h2_recv(f->h2, (const uint8_t *)"x", 1),
                   GRACE_ESTATE);
  assert_int_equal(grace__h2_output(f->h2, &p, &n), GRACE_ESTATE);
  assert_int_equal(n, 0);
}

static void io_from_callbacks_is_refused(void **state) {
  fixture *f = setup(NULL, 0);
  (void)state;
  f->on_headers = reentrant_io_calls_are_refused;
  f->respond_on_end = 1;
  int32_t id = request(&f->c, "GET", "/", NULL, 0, NULL, 0, 0, 0);
  pump(f);
  assert_int_equal(cs(&f->c, id)->status, 200);
  assert_int_equal(grace__h2_error(f->h2), 0);
  teardown(f);
}

static void options_are_checked(void **state) {
  grace__h2 *h2 = NULL;
  grace__h2_options o = {.initial_window = 0x80000000u};
  (void)state;
  assert_int_equal(grace__h2_new(NULL, NULL, NULL, &h2), GRACE_EINVAL);
  assert_int_equal(grace__h2_new(&app_cbs, NULL, NULL, NULL), GRACE_EINVAL);
  assert_int_equal(grace__h2_new(&app_cbs, NULL, &o, &h2), GRACE_EINVAL);
  o.initial_window = 0;
  o.conn_window = 1000;
  assert_int_equal(grace__h2_new(&app_cbs, NULL, &o, &h2), GRACE_EINVAL);
  o.conn_window = 0;
  o.max_header_list = (1u << 30) + 1;
  assert_int_equal(grace__h2_new(&app_cbs, NULL, &o, &h2), GRACE_EINVAL);
  assert_null(h2);
  grace__h2_free(NULL);
}

/* ---- allocation failures ---------------------------------------------------- */

typedef struct failmem {
  long count;   /* allocations so far */
  long fail_at; /* the one that fails; -1 for none */
} failmem;

static int fm_fail(failmem *m) { return m->count++ == m->fail_at; }

static void *fm_malloc(size_t n, void *ud) {
  return fm_fail(ud) ? NULL : malloc(n);
}

static void fm_free(void *p, void *ud) {
  (void)ud;
  free(p);
}

static void *fm_calloc(size_t n, size_t size, void *ud) {
  return fm_fail(ud) ? NULL : calloc(n, size);
}

static void *fm_realloc(void *p, size_t n, void *ud) {
  return fm_fail(ud) ? NULL : realloc(p, n);
}

static void lenient_respond(fixture *f, sreq *r) {
  static const grace__h2_header tr[] = {{"grpc-status", "0"}};
  (void)f;
  if (strcmp(r->path, "/trailers") == 0) {
    if (grace__h2_respond_headers(r->s, 200, NULL, 0) == 0 &&
        grace__h2_send_data(r->s, "data", 4, 0) == 0)
      grace__h2_send_trailers(r->s, tr, 1);
  } else {
    grace__h2_respond(r->s, 200, NULL, 0, r->body.p, r->body.len);
  }
}

/* A whole conversation that tolerates any failure of the server; returns
 * how many of its three requests got a 200. */
static int scenario(failmem *m) {
  nghttp2_mem mem = {m, fm_malloc, fm_free, fm_calloc, fm_realloc};
  grace__h2_options o = {.mem = &mem};
  fixture *f = calloc(1, sizeof(*f));
  static uint8_t body[20000];
  assert_non_null(f);
  f->on_end = lenient_respond;
  if (grace__h2_new(&app_cbs, f, &o, &f->h2) != 0) {
    free(f);
    return 0;
  }
  client_init(&f->c, 0);
  grace__h2_header h[] = {{"x-a", "1"}, {"x-b", "2"}};
  request(&f->c, "GET", "/get?x", h, 2, NULL, 0, 0, 0);
  request(&f->c, "POST", "/post", h, 2, body, sizeof(body), 4000, 0);
  request(&f->c, "GET", "/trailers", NULL, 0, NULL, 0, 0, 0);
  for (int round = 0; round < 200; round++) {
    bytes sb = {0}, cb = {0};
    const uint8_t *p;
    size_t n;
    if (round == 3)
      grace__h2_shutdown_begin(f->h2);
    while (grace__h2_output(f->h2, &p, &n) == 0 && n > 0)
      bytes_add(&sb, p, n);
    if (sb.len > 0 &&
        nghttp2_session_mem_recv(f->c.s, sb.p, sb.len) != (ssize_t)sb.len)
      round = 1000;
    for (;;) {
      ssize_t k = nghttp2_session_mem_send(f->c.s, &p);
      if (k <= 0)
        break;
      bytes_add(&cb, p, (size_t)k);
    }
    if (cb.len > 0 && grace__h2_recv(f->h2, cb.p, cb.len) < 0)
      round = 1000;
    if (sb.len == 0 && cb.len == 0)
      round = 1000;
    bytes_free(&sb);
    bytes_free(&cb);
  }
  int ok = 0;
  for (size_t i = 0; i < f->c.nstreams; i++)
    ok += f->c.streams[i].closed && f->c.streams[i].status == 200 &&
          f->c.streams[i].close_code == NGHTTP2_NO_ERROR;
  teardown(f);
  return ok;
}

static void every_allocation_failure_is_survived(void **state) {
  failmem m = {0, -1};
  (void)state;
  assert_int_equal(scenario(&m), 3);
  long total = m.count;
  assert_true(total > 20);
  for (long i = 0; i < total; i++) {
    failmem k = {0, i};
    scenario(&k);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(headers_and_path_are_parsed),
      cmocka_unit_test(authority_falls_back_to_host_and_query_may_be_absent),
      cmocka_unit_test(post_body_arrives_incrementally),
      cmocka_unit_test(manual_consume_bounds_what_the_peer_may_send),
      cmocka_unit_test(concurrent_streams_complete_in_any_order),
      cmocka_unit_test(streams_over_the_limit_are_refused),
      cmocka_unit_test(large_response_waits_for_the_peer_window),
      cmocka_unit_test(empty_queue_defers_and_send_resumes),
      cmocka_unit_test(send_data_before_headers_is_refused),
      cmocka_unit_test(trailers_end_the_stream),
      cmocka_unit_test(trailers_only_response_is_one_headers_frame),
      cmocka_unit_test(head_response_has_length_but_no_body),
      cmocka_unit_test(early_response_stops_the_upload_with_no_error),
      cmocka_unit_test(request_trailers_end_the_request),
      cmocka_unit_test(head_with_streamed_body_sends_none),
      cmocka_unit_test(ping_flood_is_fatal),
      cmocka_unit_test(client_reset_closes_the_stream),
      cmocka_unit_test(server_reset_reaches_the_client),
      cmocka_unit_test(too_large_header_list_gets_431),
      cmocka_unit_test(body_over_the_limit_gets_413),
      cmocka_unit_test(shutdown_sends_goaway_ping_then_final_goaway),
      cmocka_unit_test(stream_in_flight_before_the_ack_completes),
      cmocka_unit_test(
          timeout_sends_final_goaway_and_later_streams_are_refused),
      cmocka_unit_test(idle_shutdown_drains_on_the_timer),
      cmocka_unit_test(force_close_resets_every_stream),
      cmocka_unit_test(force_close_from_a_callback_is_safe),
      cmocka_unit_test(free_with_open_streams_reports_them_lost),
      cmocka_unit_test(frames_on_a_closed_stream_are_stream_closed),
      cmocka_unit_test(frames_after_the_client_reset_are_stream_closed),
      cmocka_unit_test(lower_stream_id_that_never_opened_is_protocol_error),
      cmocka_unit_test(older_open_and_server_reset_streams_stay_legal),
      cmocka_unit_test(bad_preface_is_fatal_with_goaway),
      cmocka_unit_test(protocol_error_after_preface_sends_goaway),
      cmocka_unit_test(random_bytes_after_preface_never_crash),
      cmocka_unit_test(byte_at_a_time_exchange),
      cmocka_unit_test(io_from_callbacks_is_refused),
      cmocka_unit_test(options_are_checked),
      cmocka_unit_test(every_allocation_failure_is_survived),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
