/*
 * HTTP/2 as a protocol on a grace__conn: the glue between the transport
 * (net/conn.c) and the sans-I/O HTTP/2 session (h2.c).  A connection whose
 * first bytes are the client preface switches here for good (prior
 * knowledge, RFC 9113 section 3.3); its requests are the same exchanges
 * HTTP/1.1 requests are, so every handler serves both.
 *
 * Output is pulled from the session only while the transport's write
 * queue is below GRACE__WRITE_HIGH, and frames are read only then: a peer
 * that does not read costs a bounded amount of memory, and its stalled
 * writes end at the send timeout.
 *
 * Shutdown is the two-phase GOAWAY of h2.c (GOAWAY 2^31-1 and a PING, the
 * final GOAWAY on the PING's ack or after GRACE__GOAWAY_ACK_MS); the
 * connection ends the moment the final GOAWAY is out and no stream is
 * left, lingering so that frames still in flight from the client do not
 * turn the close into a reset that destroys the last response.
 */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "http/internal.h"

/* What the connection tracks of each stream it was given: the exchange
 * (NULL before it exists, or once answered or freed) and the times the
 * body and send timeouts are measured from. */
typedef struct h2x {
  grace__list link; /* in h2c->streams */
  grace__h2_stream *s;
  grace_http_request *req;
  uint64_t last_rx; /* the request's last HEADERS or DATA */
  uint64_t last_tx; /* the response's last progress */
  size_t last_q;    /* bytes queued at the last sweep */
  uint8_t rx_done;  /* the request ended */
} h2x;

typedef struct h2c {
  grace__list streams; /* h2x */
  grace__conn *conn;
  grace_http_server *srv;
  grace__http_loop *hl;
  grace__h2 *h2;
  int busy;       /* inside a call into h2.c: no pull, no free */
  int dead;       /* the socket closed while busy: free the session later */
  unsigned nreqs; /* exchanges held by handlers or stream hooks */
  grace__conn_ptimer goaway_timer; /* PING ack awaited (GRACE__TL_GOAWAY) */
  grace__conn_ptimer sweep_timer;  /* stream timeouts (GRACE__TL_STREAM) */
} h2c;

static const grace__exch_ops h2_ops;

int grace__h2c_is_preface(const char *data, size_t n) {
  /* "PRI " starts no HTTP/1.1 request llhttp accepts, so four bytes
   * decide; fewer that match so far are undecided. */
  size_t m = n < 4 ? n : 4;
  if (memcmp(data, GRACE__H2_PREFACE, m) != 0)
    return 0;
  return n < 4 ? -1 : 1;
}

/* Keeps the connection's state and idle timer in step with its streams. */
static void update_idle(h2c *h) {
  grace__conn *c = h->conn;
  if (grace__conn_closing(c))
    return;
  if (grace__h2_stream_count(h->h2) > 0) {
    grace__conn_set_state(c, GRACE__CS_ACTIVE);
    grace__conn_timer_stop(c, GRACE__TL_IDLE);
  } else {
    grace__conn_set_state(c, GRACE__CS_IDLE);
    if (!grace__conn_shutting_down(c) &&
        !grace__conn_timer_armed(c, GRACE__TL_IDLE))
      grace__conn_timer(c, GRACE__TL_IDLE);
  }
}

static uint64_t now_ms(const h2c *h) {
  grace__loop *loop = grace__conn_get_loop(h->conn);
  return loop != NULL ? uv_now(loop->uv) : 0;
}

static grace_http_request *stream_req(grace__h2_stream *s) {
  h2x *x = grace__h2_stream_data(s);
  return x != NULL ? x->req : NULL;
}

/* Forgets the exchange of |s| (answered, freed or handed back). */
static void stream_forget(grace__h2_stream *s) {
  h2x *x = grace__h2_stream_data(s);
  if (x != NULL)
    x->req = NULL;
}

/* Arms the sweep that enforces the body and send timeouts on streams. */
static void arm_sweep(h2c *h) {
  if (!grace__list_empty(&h->streams) &&
      !grace__conn_ptimer_armed(&h->sweep_timer))
    grace__conn_ptimer_arm(&h->sweep_timer, GRACE__TL_STREAM);
}

/* Frees the session once no call into it is on the stack. */
static void free_session(h2c *h) {
  grace__h2 *h2 = h->h2;
  if (h2 == NULL || h->busy > 0)
    return;
  h->h2 = NULL;
  /* Fires on_stream_close for every open stream, which cancels the
   * requests their handlers hold. */
  grace__h2_free(h2);
}

/* A call into h2.c returned: a socket closed meanwhile frees the session
 * now that nothing of it is on the stack. */
static void unbusy(h2c *h) {
  if (--h->busy == 0 && h->dead) {
    h->dead = 0;
    free_session(h);
  }
}

/* Pulls the session's output into the transport while its queue has
 * room, then ends the connection if the session is done. */
static void flush(h2c *h) {
  grace__conn *c = h->conn;
  if (h->busy > 0 || h->h2 == NULL || grace__conn_closing(c))
    return;
  while (grace__conn_queued(c) < GRACE__WRITE_HIGH) {
    const uint8_t *p;
    size_t n;
    /* Pulling output can close streams, whose callbacks may answer and
     * ask for a flush: this loop is that flush. */
    h->busy++;
    int rv = grace__h2_output(h->h2, &p, &n);
    unbusy(h);
    if (h->h2 == NULL)
      return;
    if (rv != 0) {
      grace__conn_close(c);
      return;
    }
    if (n == 0)
      break;
    if (grace__conn_write(c, p, n) != 0)
      return;
  }
  if (grace__h2_is_drained(h->h2) || grace__h2_want_io(h->h2) == 0) {
    grace__conn_end(c, 1);
    return;
  }
  update_idle(h);
}

/* ---- session callbacks ----------------------------------------------------
 */

/* Appends to |req|'s head unless |*status| is already set; sets it to 431
 * (too big: the client's doing) or 503 (no memory: ours) on failure. */
static void head_add(grace_http_request *req, const char *p, size_t n,
                     size_t max, int *status) {
  if (*status != 0)
    return;
  int rv = grace__dbuf_append(&req->head, p, n, max);
  if (rv != 0)
    *status = rv == GRACE_ENOMEM ? 503 : 431;
}

static void on_request_headers(grace__h2_stream *s, void *user) {
  h2c *h = user;
  grace_http_server *srv = h->srv;
  h2x *x = calloc(1, sizeof(*x));
  grace_http_request *req = grace__req_new(srv, h->hl, h->conn, h, &h2_ops);
  size_t max = srv->opts.max_header_bytes;
  const char *query = grace__h2_stream_query(s);
  const char *name, *value;
  size_t iter = 0;
  int bad = 0;

  if (x == NULL || req == NULL) {
    free(x);
    if (req != NULL)
      grace__req_free(req);
    grace__h2_reset(s, NGHTTP2_INTERNAL_ERROR);
    return;
  }
  x->s = s;
  x->last_rx = x->last_tx = now_ms(h);
  grace__list_push(&h->streams, &x->link);
  grace__h2_stream_set_data(s, x);
  arm_sweep(h);
  req->is_h2 = 1;
  req->stream = s;
  req->keep_alive = 1;
  /* The same layout as an HTTP/1.1 request: target, then the headers. */
  const char *path = grace__h2_stream_path(s);
  head_add(req, path, strlen(path), max, &bad);
  if (query != NULL) {
    head_add(req, "?", 1, max, &bad);
    head_add(req, query, strlen(query), max, &bad);
  }
  head_add(req, "", 1, max, &bad);
  req->headers_off = req->head.len;
  while (grace__h2_stream_header_next(s, &iter, &name, &value)) {
    head_add(req, name, strlen(name) + 1, max, &bad);
    head_add(req, value, strlen(value) + 1, max, &bad);
    req->nheaders++;
  }
  const char *authority = grace__h2_stream_authority(s);
  if (authority[0] != '\0' && grace__h2_stream_header(s, "host") == NULL) {
    head_add(req, "host", 5, max, &bad);
    head_add(req, authority, strlen(authority) + 1, max, &bad);
    req->nheaders++;
  }
  req->headers_end = req->head.len;
  if (!bad)
    grace__req_finish_head(req, grace__h2_stream_method(s));
  if (bad || req->error_status) {
    int status = bad ? bad : req->error_status;
    char body[64];
    int len = snprintf(body, sizeof(body), "%d %s", status,
                       grace_http_status_text(status));
    grace__req_free(req);
    if (grace__h2_respond(s, status, NULL, 0, body, (size_t)len) != 0)
      grace__h2_reset(s, NGHTTP2_INTERNAL_ERROR);
    return;
  }
  req->is_head = strcmp(grace__h2_stream_method(s), "HEAD") == 0;
  x->req = req;
  const grace__stream_hooks *hooks = &srv->stream_hooks;
  if (hooks->on_start == NULL && grace__req_streams_body(req)) {
    /* The handler reads the body as it arrives: it gets the request now. */
    req->complete = 1;
    h->nreqs++;
    grace__req_dispatch(req);
    return;
  }
  if (hooks->on_start != NULL) {
    /* Held by the hooks' user from now on, as by a handler. */
    req->streaming = 1;
    req->complete = 1;
    req->with_handler = 1;
    req->counted = 1;
    h->nreqs++;
    grace__conn_ref(h->conn);
    atomic_fetch_add(&srv->st_requests, 1);
    atomic_fetch_add(&srv->st_inflight, 1);
    if (!hooks->on_start(req, hooks->data)) {
      req->streaming = 0;
      req->complete = 0;
      req->with_handler = 0;
      req->counted = 0;
      h->nreqs--;
      grace__conn_unref(h->conn);
      atomic_fetch_sub(&srv->st_requests, 1);
      atomic_fetch_sub(&srv->st_inflight, 1);
    }
  }
}

static void on_data(grace__h2_stream *s, const uint8_t *data, size_t len,
                    void *user) {
  h2x *x = grace__h2_stream_data(s);
  grace_http_request *req = stream_req(s);
  h2c *h = user;
  if (x != NULL)
    x->last_rx = now_ms(h);
  if (req != NULL && req->stream_body) {
    /* A handler reads this body: what it does not take now is held, and
     * the stream's window stays closed until it is taken (the client is
     * paused by flow control, so at most one window is held). */
    int took = req->held.len == 0 ? grace__req_deliver(req, data, len, 0) : 0;
    if (took != 0) {
      grace__h2_stream_consume(s, len); /* taken, or its exchange ended */
    } else if (grace__dbuf_append(&req->held, data, len, UINT32_MAX) != 0) {
      grace__h2_reset(s, NGHTTP2_INTERNAL_ERROR);
    }
    return;
  }
  grace__h2_stream_consume(s, len);
  if (req != NULL && req->streaming) {
    const grace__stream_hooks *hooks = &h->srv->stream_hooks;
    hooks->on_data(req, data, len, hooks->data);
    return;
  }
  if (req != NULL && !req->complete &&
      grace__dbuf_append(&req->body, data, len,
                         req->srv->opts.max_body_bytes) != 0) {
    static const char body[] = "413 Request Entity Too Large";
    stream_forget(s);
    grace__req_free(req);
    if (grace__h2_respond(s, 413, NULL, 0, body, sizeof(body) - 1) != 0)
      grace__h2_reset(s, NGHTTP2_CANCEL);
  }
}

static void on_request_end(grace__h2_stream *s, void *user) {
  h2c *h = user;
  h2x *x = grace__h2_stream_data(s);
  grace_http_request *req = stream_req(s);
  if (x != NULL)
    x->rx_done = 1;
  if (req != NULL && req->stream_body) {
    if (req->held.len > 0 || !grace__req_deliver(req, "", 0, 1))
      req->held_end = 1;
    return;
  }
  if (req != NULL && req->streaming) {
    const grace__stream_hooks *hooks = &h->srv->stream_hooks;
    hooks->on_end(req, hooks->data);
    return;
  }
  if (req == NULL || req->complete)
    return;
  req->complete = 1;
  h->nreqs++;
  grace__req_dispatch(req); /* may answer at once; the answer is queued */
}

static void on_stream_close(grace__h2_stream *s, uint32_t error_code,
                            void *user) {
  h2x *x = grace__h2_stream_data(s);
  h2c *h = user;
  (void)error_code;
  if (x == NULL)
    return;
  grace_http_request *req = x->req;
  grace__h2_stream_set_data(s, NULL);
  grace__list_unlink(&x->link);
  free(x);
  if (req == NULL)
    return;
  req->stream = NULL;
  if (req->streaming) {
    const grace__stream_hooks *hooks = &h->srv->stream_hooks;
    atomic_fetch_add(&h->srv->sv.reg.cut, 1);
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

static void on_send_ready(grace__h2_stream *s, void *user) {
  grace_http_request *req = stream_req(s);
  h2c *h = user;
  if (req != NULL && !req->streaming) {
    grace__req_writable(req);
    return;
  }
  if (req != NULL && req->streaming && h->srv->stream_hooks.on_send_ready)
    h->srv->stream_hooks.on_send_ready(req, h->srv->stream_hooks.data);
}

/* The body and send timeouts of the streams (HTTP/2 has no socket-level
 * stall to see: a stream whose body stops, or whose window the client
 * keeps at 0, is found here).  Each one found is reset and counted. */
static void sweep(h2c *h) {
  grace_http_server *srv = h->srv;
  uint64_t now = now_ms(h);
  uint64_t body_ms = (uint64_t)(srv->opts.body_timeout / GRACE_MILLISECOND);
  uint64_t send_ms = (uint64_t)(srv->opts.send_timeout / GRACE_MILLISECOND);
  grace__list *it, *next;
  h->busy++;
  for (it = h->streams.next; it != &h->streams; it = next) {
    h2x *x = grace__container_of(it, h2x, link);
    next = it->next;
    size_t q = grace__h2_stream_send_queued(x->s);
    int cut = 0;
    if (!x->rx_done && body_ms > 0 && now - x->last_rx >= body_ms)
      cut = 1;
    if (q == 0 || q < x->last_q)
      x->last_tx = now;
    else if (send_ms > 0 && now - x->last_tx >= send_ms)
      cut = 1;
    x->last_q = q;
    if (!cut)
      continue;
    atomic_fetch_add(&h->conn->reg->timeouts, 1);
    /* An exchange with its handler is counted by its cancellation. */
    if (x->req == NULL || !x->req->with_handler)
      atomic_fetch_add(&h->conn->reg->cut, 1);
    grace__h2_reset(x->s, NGHTTP2_CANCEL);
  }
  unbusy(h);
  flush(h);
  if (!grace__conn_closing(h->conn) && h->h2 != NULL)
    arm_sweep(h);
}

static const grace__h2_callbacks callbacks = {
    .on_request_headers = on_request_headers,
    .on_data = on_data,
    .on_request_end = on_request_end,
    .on_stream_close = on_stream_close,
    .on_send_ready = on_send_ready,
};

/* ---- answers ----------------------------------------------------------------
 */

/* The handler's fields as HTTP/2 fields, plus the default content-type. */
static int answer_headers(grace_http_request *req, grace__h2_header **out,
                          size_t *n) {
  grace__h2_header *h = calloc((size_t)req->nresp + 1, sizeof(*h));
  size_t count = 0, iter = 0;
  const char *name, *value;
  if (h == NULL)
    return GRACE_ENOMEM;
  while (grace__req_resp_next(req, &iter, &name, &value)) {
    h[count].name = name;
    h[count].value = value;
    count++;
  }
  int status = grace__req_status(req);
  if (!req->has_content_type && req->resp_len > 0 &&
      !grace__status_no_body(status)) {
    h[count].name = "content-type";
    h[count].value = "text/plain; charset=utf-8";
    count++;
  }
  *out = h;
  *n = count;
  return 0;
}

/* The handler answered |req| (ops->finish); on the loop thread. */
static void h2_finish(grace_http_request *req) {
  h2c *h = req->proto;
  grace__h2_stream *s = req->stream;
  grace__h2_header *fields = NULL;
  size_t n = 0;

  h->nreqs--;
  if (grace__conn_closing(h->conn) || s == NULL || h->h2 == NULL) {
    /* Cancelled: the stream or the whole connection is gone. */
    grace__req_done(req);
    return;
  }
  stream_forget(s);
  if (req->abandoned) {
    grace__h2_reset(s, NGHTTP2_CANCEL);
  } else {
    int status = grace__req_status(req);
    size_t len = grace__status_no_body(status) ? 0 : req->resp_len;
    if (answer_headers(req, &fields, &n) != 0 ||
        grace__h2_respond(s, status, fields, n, req->resp_body, len) != 0)
      grace__h2_reset(s, NGHTTP2_INTERNAL_ERROR);
  }
  free(fields);
  grace__conn *c = h->conn;
  grace__conn_ref(c);
  grace__req_done(req);
  flush(h);
  grace__conn_unref(c);
}

static int h2_start(grace_http_request *req) {
  h2c *h = req->proto;
  grace__h2_header *fields = NULL;
  size_t n = 0;
  int status = grace__req_status(req);
  if (req->stream == NULL || h->h2 == NULL)
    return GRACE_ECLOSED;
  req->resp_no_body = (uint8_t)(req->is_head || grace__status_no_body(status));
  if (answer_headers(req, &fields, &n) != 0)
    return GRACE_ENOMEM;
  grace__h2_stream *s = req->stream;
  int rv;
  if (req->resp_no_body && grace__h2_stream_request_ended(s)) {
    /* Nothing can follow (RFC 9110 sections 9.3.2, 15.3.5, 15.4.5) and
     * nothing more comes in: the HEADERS frame ends the stream, as for an
     * answer given whole, rather than an empty DATA frame at the
     * handler's end.  The exchange lets go of the stream now; its writes
     * are discarded and its end only ends it. */
    rv = grace__h2_respond_trailers_only(s, status, fields, n);
    if (rv == 0) {
      stream_forget(s);
      req->stream = NULL;
    }
  } else {
    rv = grace__h2_respond_headers(s, status, fields, n);
  }
  free(fields);
  flush(h);
  return rv;
}

static int h2_write(grace_http_request *req, const void *p, size_t n) {
  h2c *h = req->proto;
  if (req->resp_no_body)
    return 0;
  if (req->stream == NULL || h->h2 == NULL)
    return GRACE_ECLOSED;
  int rv = grace__h2_send_data(req->stream, p, n, 0);
  flush(h);
  return rv;
}

static void h2_end(grace_http_request *req) {
  h2c *h = req->proto;
  grace__h2_stream *s = req->stream;
  h->nreqs--;
  if (!grace__conn_closing(h->conn) && s != NULL && h->h2 != NULL) {
    stream_forget(s);
    int rv;
    if (req->ntrailers > 0) {
      grace__h2_header *t = calloc(req->ntrailers, sizeof(*t));
      size_t iter = 0, n = 0;
      if (t == NULL) {
        rv = GRACE_ENOMEM;
      } else {
        while (grace__req_trailer_next(req, &iter, &t[n].name, &t[n].value))
          n++;
        rv = grace__h2_send_trailers(s, t, n);
        free(t);
      }
    } else {
      rv = grace__h2_send_data(s, NULL, 0, 1);
    }
    if (rv != 0)
      grace__h2_reset(s, NGHTTP2_INTERNAL_ERROR);
  }
  grace__conn *c = h->conn;
  grace__conn_ref(c);
  grace__req_done(req);
  flush(h);
  grace__conn_unref(c);
}

/* The handler reads its streamed body: what arrived meanwhile first, and
 * the window it held closed is opened again as it is taken. */
static void h2_read_body(grace_http_request *req) {
  h2c *h = req->proto;
  if (req->stream == NULL || h->h2 == NULL || req->body_paused)
    return;
  if (req->held.len > 0) {
    size_t n = req->held.len;
    grace__h2_stream *s = req->stream;
    int took = grace__req_deliver(req, req->held.p, n, 0);
    if (took <= 0)
      return; /* paused, or the exchange ended (its stream may be gone) */
    grace__dbuf_free(&req->held);
    if (req->stream != NULL)
      grace__h2_stream_consume(s, n);
    flush(h);
  }
  if (req->held_end && !req->body_paused && !req->body_ended)
    grace__req_deliver(req, "", 0, 1);
}

static const grace__exch_ops h2_ops = {
    .finish = h2_finish,
    .start = h2_start,
    .write = h2_write,
    .end = h2_end,
    .read_body = h2_read_body,
};

/* ---- the protocol
 * ------------------------------------------------------------ */

static ssize_t h2_on_read(grace__conn *c, const uint8_t *p, size_t n) {
  h2c *h = c->pdata;
  if (h->h2 == NULL)
    return -1;
  if (grace__conn_queued(c) >= GRACE__WRITE_HIGH)
    return 0; /* the peer does not read: neither do we, until it does */
  h->busy++;
  ssize_t rv = grace__h2_recv(h->h2, p, n);
  unbusy(h);
  /* On an error the session still has its GOAWAY to write. */
  flush(h);
  if (rv < 0) {
    grace__conn_end(c, 1);
    return -1;
  }
  return (ssize_t)n;
}

static void h2_on_eof(grace__conn *c) { grace__conn_close(c); }

static void h2_on_flushed(grace__conn *c) {
  h2c *h = c->pdata;
  flush(h);
  if (!grace__conn_closing(c) && c->rlen > 0)
    grace__conn_resume(c);
}

static void h2_on_timer(grace__conn *c, unsigned list) {
  h2c *h = c->pdata;
  if (h->h2 == NULL)
    return;
  switch (list) {
  case GRACE__TL_GOAWAY:
    /* No PING ack in time: send the final GOAWAY anyway. */
    grace__h2_shutdown_timeout(h->h2);
    flush(h);
    break;
  case GRACE__TL_STREAM:
    sweep(h);
    break;
  case GRACE__TL_SEND:
    /* The client stopped reading: every stream it had is cut. */
    grace__conn_count_cut(c, h->nreqs);
    grace__conn_close(c);
    break;
  default:
    grace__conn_close(c); /* idle timeout */
    break;
  }
}

static void h2_on_shutdown(grace__conn *c) {
  h2c *h = c->pdata;
  if (h->h2 == NULL)
    return;
  grace__h2_shutdown_begin(h->h2);
  grace__conn_ptimer_arm(&h->goaway_timer, GRACE__TL_GOAWAY);
  grace__conn_timer_stop(c, GRACE__TL_IDLE);
  flush(h);
}

static unsigned h2_on_force(grace__conn *c) {
  h2c *h = c->pdata;
  unsigned cut = h->nreqs;
  if (h->h2 == NULL)
    return cut;
  h->busy++; /* its callbacks must not flush or close */
  grace__h2_force_close(h->h2, NGHTTP2_NO_ERROR);
  unbusy(h);
  flush(h); /* best effort: the GOAWAY */
  return cut;
}

static void h2_on_close(grace__conn *c) {
  h2c *h = c->pdata;
  grace__conn_ptimer_stop(&h->goaway_timer);
  grace__conn_ptimer_stop(&h->sweep_timer);
  if (h->busy > 0)
    h->dead = 1; /* freed when the call into h2.c returns (unbusy) */
  else
    free_session(h);
}

static void h2_on_free(grace__conn *c) {
  h2c *h = c->pdata;
  grace__conn_ptimer_stop(&h->goaway_timer);
  grace__conn_ptimer_stop(&h->sweep_timer);
  h->busy = 0;
  free_session(h);
  free(h);
}

static const grace__conn_proto h2_proto = {
    .on_read = h2_on_read,
    .on_eof = h2_on_eof,
    .on_flushed = h2_on_flushed,
    .on_timer = h2_on_timer,
    .on_shutdown = h2_on_shutdown,
    .on_force = h2_on_force,
    .on_close = h2_on_close,
    .on_free = h2_on_free,
};

int grace__h2c_start(grace__conn *c, grace_http_server *srv,
                     grace__http_loop *hl) {
  grace__h2_options opts;
  h2c *h = calloc(1, sizeof(*h));
  if (h == NULL) {
    grace__conn_close(c);
    return GRACE_ENOMEM;
  }
  h->conn = c;
  h->srv = srv;
  h->hl = hl;
  grace__list_init(&h->streams);
  grace__conn_ptimer_init(&h->goaway_timer, c);
  grace__conn_ptimer_init(&h->sweep_timer, c);
  memset(&opts, 0, sizeof(opts));
  opts.max_header_list = (uint32_t)srv->opts.max_header_bytes;
  /* With streaming requests (gRPC) the body is a stream of messages
   * whose limits the protocol enforces; plain requests are held to
   * max_body_bytes in on_data. */
  opts.max_request_body =
      srv->stream_hooks.on_start != NULL ? 0 : srv->opts.max_body_bytes;
  opts.max_send_buffer = srv->h2_send_buffer;
  /* Stream windows open as the application takes what arrived, so a
   * handler that does not read its body pauses its client. */
  opts.manual_consume = 1;
  int rv = grace__h2_new(&callbacks, h, &opts, &h->h2);
  if (rv != 0) {
    free(h);
    grace__conn_close(c);
    return rv;
  }
  grace__conn_timer_stop(c, GRACE__TL_HEADER);
  grace__conn_set_proto(c, &h2_proto, h);
  grace__conn_set_state(c, GRACE__CS_ACTIVE);
  if (grace__conn_shutting_down(c))
    h2_on_shutdown(c);
  return 0;
}

/* ---- streaming requests (stream.h) ----------------------------------------
 */

void grace__http_set_stream_hooks(grace_http_server *srv,
                                  const grace__stream_hooks *hooks) {
  srv->stream_hooks = *hooks;
}

void grace__http_set_stream_send_buffer(grace_http_server *srv, size_t n) {
  srv->h2_send_buffer = n;
}

void grace__req_set_user(grace_http_request *req, void *user) {
  req->user = user;
}

void *grace__req_user(const grace_http_request *req) { return req->user; }

grace__loop *grace__req_loop(const grace_http_request *req) {
  return grace__conn_get_loop(req->conn);
}

int grace__req_stream_alive(const grace_http_request *req) {
  return req->stream != NULL && !grace__conn_closing(req->conn);
}

/* Pulls the session's output unless inside its callbacks, where the
 * reader flushes once they return. */
/* The flush can end the connection (the session failed: no memory to
 * serialise a frame), and with it the stream, whose owner was told so in
 * its callbacks and dropped what it had queued: a send that was accepted
 * then reports GRACE_ECLOSED, not success. */
static int after_send(grace_http_request *req, int rv) {
  flush(req->proto);
  if (rv == 0 && !grace__req_stream_alive(req))
    rv = GRACE_ECLOSED;
  return rv;
}

int grace__req_send_headers(grace_http_request *req, int status,
                            const grace__h2_header *h, size_t n) {
  if (!grace__req_stream_alive(req))
    return GRACE_ECLOSED;
  return after_send(req, grace__h2_respond_headers(req->stream, status, h, n));
}

int grace__req_send_data(grace_http_request *req, const void *p, size_t n) {
  if (!grace__req_stream_alive(req))
    return GRACE_ECLOSED;
  return after_send(req, grace__h2_send_data(req->stream, p, n, 0));
}

/* Ends a streaming request: forgets it on both sides and frees it. */
static void stream_done(grace_http_request *req) {
  h2c *h = req->proto;
  grace__conn *c = req->conn;
  if (req->stream != NULL)
    stream_forget(req->stream);
  h->nreqs--;
  grace__conn_ref(c);
  grace__req_done(req);
  flush(h);
  grace__conn_unref(c);
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
