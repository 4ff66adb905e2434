/*
 * HTTP/2 on a server connection: the glue between the socket side of a
 * connection (h1.c) and the sans-I/O HTTP/2 session (h2.c).  A connection
 * whose first bytes are the client preface switches here for good
 * (prior knowledge, RFC 9113 section 3.3); its requests are the same
 * grace_http_request objects HTTP/1.1 requests are, so every handler serves
 * both.
 *
 * Shutdown is the two-phase GOAWAY of h2.c (GOAWAY 2^31-1 and a PING, the
 * final GOAWAY on the PING's ack or after GOAWAY_ACK_MS), and the connection
 * closes the moment the final GOAWAY is out and no stream is left.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "http/internal.h"

int grace__h2c_is_preface(const char *data, size_t n) {
  /* "PRI " starts no HTTP/1.1 request llhttp accepts, so four bytes
   * decide; fewer that match so far are undecided. */
  size_t m = n < 4 ? n : 4;
  if (memcmp(data, GRACE__H2_PREFACE, m) != 0)
    return 0;
  return n < 4 ? -1 : 1;
}

/* Keeps the connection's state and idle timer in step with its streams. */
static void update_idle(h1conn *c) {
  h1loop *hl = c->hl;
  if (grace__conn_closing(c))
    return;
  if (grace__h2_stream_count(c->h2) > 0) {
    grace__conn_set_state(c, GRACE_CONN_ACTIVE);
    if (!hl->shutting_down)
      grace__loop_tlist_remove(hl->loop, &c->timeout);
  } else {
    grace__conn_set_state(c, GRACE_CONN_IDLE);
    if (!hl->shutting_down &&
        c->timeout.link.next == &c->timeout.link)
      grace__loop_tlist_add(hl->loop, TL_IDLE, &c->timeout);
  }
}

void grace__h2c_flush(h1conn *c) {
  if (grace__conn_closing(c) || (c->flags & (CF_WRITING | CF_H2_BUSY)))
    return;
  for (;;) {
    const uint8_t *p;
    size_t n;
    /* Pulling output can close streams, whose callbacks may answer and
     * ask for a flush: this loop is that flush. */
    c->flags |= CF_H2_BUSY;
    int rv = grace__h2_output(c->h2, &p, &n);
    c->flags &= (uint16_t)~CF_H2_BUSY;
    if (rv != 0) {
      grace__conn_close(c);
      return;
    }
    if (n == 0)
      break;
    size_t off = 0;
    while (off < n) {
      ssize_t w = send(c->fd, p + off, n - off, MSG_NOSIGNAL);
      if (w < 0 && errno == EINTR)
        continue;
      if (w < 0 && errno == EAGAIN) {
        /* The session's bytes are only valid until the next pull: keep
         * the rest and wait for the socket. */
        c->wbuf = malloc(n - off);
        if (c->wbuf == NULL) {
          grace__conn_close(c);
          return;
        }
        memcpy(c->wbuf, p + off, n - off);
        c->wlen = (uint32_t)(n - off);
        c->woff = 0;
        c->flags |= CF_WRITING;
        grace__conn_poll(c, UV_READABLE | UV_WRITABLE);
        return;
      }
      if (w < 0) {
        grace__conn_close(c);
        return;
      }
      off += (size_t)w;
    }
  }
  if (grace__h2_is_drained(c->h2) || grace__h2_want_io(c->h2) == 0) {
    grace__conn_close(c);
    return;
  }
  update_idle(c);
}

void grace__h2c_write_done(h1conn *c) {
  grace__conn_poll(c, UV_READABLE);
  grace__h2c_flush(c);
}

/* ---- session callbacks ---------------------------------------------------- */

static void on_request_headers(grace__h2_stream *s, void *user) {
  h1conn *c = user;
  grace_http_server *srv = c->hl->srv;
  grace_http_request *req = grace__req_new(c);
  size_t max = srv->opts.max_header_bytes;
  const char *query = grace__h2_stream_query(s);
  const char *name, *value;
  size_t iter = 0;
  int bad = 0;

  if (req == NULL) {
    grace__h2_reset(s, NGHTTP2_INTERNAL_ERROR);
    return;
  }
  req->is_h2 = 1;
  req->stream = s;
  req->keep_alive = 1;
  /* The same layout as an HTTP/1.1 request: target, then the headers. */
  const char *path = grace__h2_stream_path(s);
  bad |= grace__dbuf_append(&req->head, path, strlen(path), max);
  if (query != NULL) {
    bad |= grace__dbuf_append(&req->head, "?", 1, max);
    bad |= grace__dbuf_append(&req->head, query, strlen(query), max);
  }
  bad |= grace__dbuf_append(&req->head, "", 1, max);
  req->headers_off = req->head.len;
  while (grace__h2_stream_header_next(s, &iter, &name, &value)) {
    bad |= grace__dbuf_append(&req->head, name, strlen(name) + 1, max);
    bad |= grace__dbuf_append(&req->head, value, strlen(value) + 1, max);
    req->nheaders++;
  }
  const char *authority = grace__h2_stream_authority(s);
  if (authority[0] != '\0' && grace__h2_stream_header(s, "host") == NULL) {
    bad |= grace__dbuf_append(&req->head, "host", 5, max);
    bad |= grace__dbuf_append(&req->head, authority, strlen(authority) + 1,
                              max);
    req->nheaders++;
  }
  req->headers_end = req->head.len;
  if (!bad)
    grace__req_finish_head(req, grace__h2_stream_method(s));
  if (bad || req->error_status) {
    int status = bad ? 431 : req->error_status;
    char body[64];
    int len = snprintf(body, sizeof(body), "%d %s", status,
                       grace_http_status_text(status));
    grace__req_free(req);
    grace__h2_respond(s, status, NULL, 0, body, (size_t)len);
    return;
  }
  req->is_head = strcmp(grace__h2_stream_method(s), "HEAD") == 0;
  grace__h2_stream_set_data(s, req);
  const grace__stream_hooks *hooks = &srv->stream_hooks;
  if (hooks->on_start != NULL) {
    req->streaming = 1;
    req->complete = 1; /* with its owner from now on */
    c->nreqs++;
    atomic_fetch_add(&srv->st_requests, 1);
    atomic_fetch_add(&srv->st_inflight, 1);
    if (!hooks->on_start(req, hooks->data)) {
      req->streaming = 0;
      req->complete = 0;
      c->nreqs--;
      atomic_fetch_sub(&srv->st_requests, 1);
      atomic_fetch_sub(&srv->st_inflight, 1);
    }
  }
}

static void on_data(grace__h2_stream *s, const uint8_t *data, size_t len,
                    void *user) {
  grace_http_request *req = grace__h2_stream_data(s);
  h1conn *c = user;
  if (req != NULL && req->streaming) {
    const grace__stream_hooks *hooks = &c->hl->srv->stream_hooks;
    hooks->on_data(req, data, len, hooks->data);
    return;
  }
  if (req != NULL && !req->complete &&
      grace__dbuf_append(&req->body, data, len,
                         req->srv->opts.max_body_bytes) != 0) {
    static const char body[] = "413 Request Entity Too Large";
    grace__h2_stream_set_data(s, NULL);
    grace__req_free(req);
    if (grace__h2_respond(s, 413, NULL, 0, body, sizeof(body) - 1) != 0)
      grace__h2_reset(s, NGHTTP2_CANCEL);
  }
}

static void on_request_end(grace__h2_stream *s, void *user) {
  h1conn *c = user;
  grace_http_request *req = grace__h2_stream_data(s);
  if (req != NULL && req->streaming) {
    const grace__stream_hooks *hooks = &c->hl->srv->stream_hooks;
    hooks->on_end(req, hooks->data);
    return;
  }
  if (req == NULL || req->complete)
    return;
  req->complete = 1;
  c->nreqs++;
  atomic_fetch_add(&c->hl->srv->st_requests, 1);
  atomic_fetch_add(&c->hl->srv->st_inflight, 1);
  grace__route(req); /* may answer at once; the answer is queued */
}

static void on_stream_close(grace__h2_stream *s, uint32_t error_code,
                            void *user) {
  grace_http_request *req = grace__h2_stream_data(s);
  (void)error_code;
  if (req == NULL)
    return;
  grace__h2_stream_set_data(s, NULL);
  req->stream = NULL;
  if (req->streaming) {
    h1conn *c = user;
    const grace__stream_hooks *hooks = &c->hl->srv->stream_hooks;
    atomic_fetch_add(&c->hl->srv->st_cut, 1);
    hooks->on_cancel(req, hooks->data);
    return;
  }
  if (!req->complete) {
    /* Reset before the request was whole: it never reached a handler. */
    grace__req_free(req);
    return;
  }
  /* With its handler: cancel it; the handler answers (discarded). */
  grace__req_cancel(req);
}

static const grace__h2_callbacks callbacks = {
    .on_request_headers = on_request_headers,
    .on_data = on_data,
    .on_request_end = on_request_end,
    .on_stream_close = on_stream_close,
};

/* ---- the connection ------------------------------------------------------- */

void grace__h2c_read(h1conn *c, const char *data, size_t n) {
  c->flags |= CF_H2_BUSY;
  ssize_t rv = grace__h2_recv(c->h2, (const uint8_t *)data, n);
  c->flags &= (uint16_t)~CF_H2_BUSY;
  /* On an error the session still has its GOAWAY to write. */
  grace__h2c_flush(c);
  if (rv < 0 && !grace__conn_closing(c) && !(c->flags & CF_WRITING))
    grace__conn_close(c);
}

void grace__h2c_start(h1conn *c, const char *data, size_t n) {
  grace_http_server *srv = c->hl->srv;
  grace__h2_options opts;
  memset(&opts, 0, sizeof(opts));
  opts.max_header_list = (uint32_t)srv->opts.max_header_bytes;
  /* With streaming requests (gRPC) the body is a stream of messages
   * whose limits the protocol enforces; plain requests are held to
   * max_body_bytes in on_data. */
  opts.max_request_body =
      srv->stream_hooks.on_start != NULL ? 0 : srv->opts.max_body_bytes;
  grace__loop_tlist_remove(c->hl->loop, &c->timeout);
  if (grace__h2_new(&callbacks, c, &opts, &c->h2) != 0) {
    grace__conn_close(c);
    return;
  }
  if (c->hl->shutting_down)
    grace__h2_shutdown_begin(c->h2);
  grace__h2c_read(c, data, n);
  if (!grace__conn_closing(c) && c->hl->shutting_down)
    grace__loop_tlist_add(c->hl->loop, TL_GOAWAY, &c->timeout);
}

/* Turns the "Name: value\r\n" lines of an answer into HTTP/2 fields. */
static int answer_headers(grace_http_request *req, grace__h2_header **out,
                          size_t *n) {
  size_t cap = 2, count = 0;
  for (uint32_t i = 0; i < req->resp_headers.len; i++)
    if (req->resp_headers.p[i] == '\n')
      cap++;
  grace__h2_header *h = calloc(cap, sizeof(*h));
  if (h == NULL)
    return GRACE_ENOMEM;
  char *p = req->resp_headers.p;
  char *end = p != NULL ? p + req->resp_headers.len : NULL;
  while (p != NULL && p < end) {
    char *colon = memchr(p, ':', (size_t)(end - p));
    char *eol = memchr(p, '\r', (size_t)(end - p));
    if (colon == NULL || eol == NULL)
      break;
    *colon = '\0';
    *eol = '\0';
    h[count].name = p;
    h[count].value = colon + 2;
    count++;
    p = eol + 2;
  }
  if (!req->has_content_type && req->resp_len > 0) {
    h[count].name = "content-type";
    h[count].value = "text/plain; charset=utf-8";
    count++;
  }
  *out = h;
  *n = count;
  return 0;
}

void grace__h2c_answer(grace_http_request *req) {
  h1conn *c = req->conn;
  grace__h2_stream *s = req->stream;
  grace__h2_header *h = NULL;
  size_t n = 0;

  c->nreqs--;
  if (grace__conn_closing(c) || s == NULL) {
    /* Cancelled: the stream or the whole connection is gone. */
    grace__req_free(req);
    if ((c->flags & CF_CLOSED) && c->nreqs == 0)
      grace__conn_free(c);
    return;
  }
  grace__h2_stream_set_data(s, NULL);
  if (req->abandoned) {
    grace__h2_reset(s, NGHTTP2_CANCEL);
  } else if (answer_headers(req, &h, &n) != 0 ||
             grace__h2_respond(s, req->status, h, n, req->resp_body,
                               req->resp_len) != 0) {
    grace__h2_reset(s, NGHTTP2_INTERNAL_ERROR);
  }
  free(h);
  grace__req_free(req);
  grace__h2c_flush(c);
}

void grace__h2c_shutdown(h1conn *c) {
  grace__h2_shutdown_begin(c->h2);
  grace__loop_tlist_add(c->hl->loop, TL_GOAWAY, &c->timeout);
  grace__h2c_flush(c);
}

void grace__h2c_expire(h1conn *c, unsigned list) {
  if (list == TL_GOAWAY) {
    /* No PING ack in time: send the final GOAWAY anyway. */
    grace__h2_shutdown_timeout(c->h2);
    grace__h2c_flush(c);
    return;
  }
  grace__conn_close(c); /* idle timeout */
}

int grace__h2c_force_close(h1conn *c) {
  int cut = (int)c->nreqs;
  c->flags |= CF_H2_BUSY; /* its callbacks must not flush or close */
  grace__h2_force_close(c->h2, NGHTTP2_NO_ERROR);
  c->flags &= (uint16_t)~CF_H2_BUSY;
  grace__h2c_flush(c); /* best effort: the GOAWAY */
  return cut;
}

void grace__h2c_teardown(h1conn *c) {
  grace__h2 *h2 = c->h2;
  c->h2 = NULL;
  /* Fires on_stream_close for every open stream, which cancels the
   * requests their handlers hold. */
  grace__h2_free(h2);
}

/* ---- streaming requests (stream.h) ---------------------------------------- */

void grace__http_set_stream_hooks(grace_http_server *srv,
                                  const grace__stream_hooks *hooks) {
  srv->stream_hooks = *hooks;
}

void grace__req_set_user(grace_http_request *req, void *user) {
  req->user = user;
}

void *grace__req_user(const grace_http_request *req) { return req->user; }

grace__loop *grace__req_loop(const grace_http_request *req) {
  return req->conn->hl->loop;
}

int grace__req_stream_alive(const grace_http_request *req) {
  return req->stream != NULL && !grace__conn_closing(req->conn);
}

/* Pulls the session's output unless inside its callbacks, where the
 * reader flushes once they return. */
static void after_send(h1conn *c) {
  if (!grace__conn_closing(c))
    grace__h2c_flush(c);
}

int grace__req_send_headers(grace_http_request *req, int status,
                            const grace__h2_header *h, size_t n) {
  if (!grace__req_stream_alive(req))
    return GRACE_ECLOSED;
  int rv = grace__h2_respond_headers(req->stream, status, h, n);
  after_send(req->conn);
  return rv;
}

int grace__req_send_data(grace_http_request *req, const void *p, size_t n) {
  if (!grace__req_stream_alive(req))
    return GRACE_ECLOSED;
  int rv = grace__h2_send_data(req->stream, p, n, 0);
  after_send(req->conn);
  return rv;
}

/* Ends a streaming request: forgets it on both sides and frees it. */
static void stream_done(grace_http_request *req) {
  h1conn *c = req->conn;
  if (req->stream != NULL)
    grace__h2_stream_set_data(req->stream, NULL);
  grace__req_free(req);
  c->nreqs--;
  atomic_fetch_sub(&c->hl->srv->st_inflight, 1);
  if (grace__conn_closing(c)) {
    if ((c->flags & CF_CLOSED) && c->nreqs == 0)
      grace__conn_free(c);
    return;
  }
  after_send(c);
}

void grace__req_finish_trailers(grace_http_request *req,
                                const grace__h2_header *h, size_t n) {
  if (grace__req_stream_alive(req) &&
      grace__h2_send_trailers(req->stream, h, n) != 0)
    grace__h2_reset(req->stream, NGHTTP2_INTERNAL_ERROR);
  stream_done(req);
}

void grace__req_finish_trailers_only(grace_http_request *req, int status,
                                     const grace__h2_header *h, size_t n) {
  if (grace__req_stream_alive(req) &&
      grace__h2_respond_trailers_only(req->stream, status, h, n) != 0)
    grace__h2_reset(req->stream, NGHTTP2_INTERNAL_ERROR);
  stream_done(req);
}

void grace__req_finish_reset(grace_http_request *req, uint32_t code) {
  if (grace__req_stream_alive(req))
    grace__h2_reset(req->stream, code);
  stream_done(req);
}
