/*
 * HTTP/1.1 as a protocol on a grace__conn: sans-I/O, it takes the bytes
 * the transport offers and writes answers through it.
 *
 * One request at a time: llhttp reads the head (strict mode) and pauses
 * there; h1_body.c reads the body framing; the complete request goes to
 * its handler, and until the answer is written the protocol takes no more
 * bytes, so the transport keeps pipelined requests as read-ahead and
 * stops reading once that is full (the peer is paused, never failed).  A
 * peer that sends requests without reading the answers is paused the same
 * way once GRACE__WRITE_HIGH bytes wait to be written.
 *
 * Between requests a connection holds no HTTP/1.1 state: it dozes off to
 * grace__h1_idle_proto, and the state (llhttp's parser, the framing) is
 * allocated again by its next byte.  An idle keep-alive connection costs
 * its transport alone.
 *
 * Everything here runs on the connection's loop thread.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <llhttp.h>

#include "http/h1_body.h"
#include "http/internal.h"

enum { P_IDLE, P_HEAD, P_BODY, P_HANDLER, P_DEAD };

typedef struct h1 {
  grace__conn *conn;
  grace_http_server *srv;
  grace__http_loop *hl;
  llhttp_t parser;
  grace__h1_body body;
  grace_http_request *req; /* being read, or with its handler */
  uint8_t phase;
  uint8_t sniffed; /* the first bytes were looked at */
  uint8_t sniff_len;
  char sniff[4];
  uint8_t eof;           /* the peer closed its side */
  uint8_t in_read;       /* inside on_read */
  uint8_t waiting_flush; /* paused until the write queue drains */
  size_t avail;          /* inside on_read: bytes after the request */
  unsigned fields;       /* header fields of the request being read */
  unsigned hosts;        /* Host fields among them */
  uint8_t field_is_host;
  uint32_t name_off; /* where the header name being read starts */
  uint8_t te_seen;   /* Transfer-Encoding fields seen */
  uint8_t prev_lf;   /* the last head byte scanned was LF */
  uint8_t body_open; /* a streamed body is still being read */
  uint64_t streamed; /* bytes of it delivered so far */
  int te_status;     /* a Transfer-Encoding we refuse: its status */
  uint8_t dozing;    /* idle: the state goes once no caller holds it */
} h1;

static const llhttp_settings_t settings;
static const grace__exch_ops h1_ops;

/* A fresh parser for each message, so that no state (an upgrade it paused
 * on, an error) carries over from one request to the next. */
static void parser_init(h1 *h) {
  llhttp_init(&h->parser, HTTP_REQUEST, &settings);
  h->parser.data = h;
  /* Any HTTP/1.x version is read; above 1.1 it is answered as 1.1 (RFC
   * 9110 section 6.2), another major version gets 505. */
  h->parser.lenient_flags |= LENIENT_VERSION;
}

/* The HTTP/1.1 state of connection |c| of |srv|, which has just received
 * bytes: a new connection's first ones are sniffed for the HTTP/2
 * preface, an idle one's start its next request.  The connection speaks
 * grace__h1_proto from now on.  Returns NULL when out of memory. */
static h1 *h1_wake(grace__conn *c, grace_http_server *srv) {
  h1 *h = calloc(1, sizeof(*h));
  if (h == NULL)
    return NULL;
  h->conn = c;
  h->srv = srv;
  h->hl = grace__http_loop_of(c);
  if (c->state != GRACE__CS_NEW)
    h->sniffed = 1; /* an idle connection's next request is HTTP/1.1 */
  parser_init(h);
  grace__conn_set_proto(c, &grace__h1_proto, h);
  return h;
}

/* Called where no HTTP/1.1 code of |h| is left on the stack: a
 * connection gone idle (go_idle) with nothing pending lets its state go. */
static void h1_doze(h1 *h) {
  grace__conn *c = h->conn;
  if (!h->dozing || h->in_read || h->phase != P_IDLE || h->req != NULL ||
      h->waiting_flush || h->body_open || h->eof || c->rlen > 0 ||
      c->proto != &grace__h1_proto || grace__conn_closing(c) ||
      c->state != GRACE__CS_IDLE)
    return;
  grace__conn_set_proto(c, &grace__h1_idle_proto, h->srv);
  free(h);
}

/* ---- answers --------------------------------------------------------------
 */

/* Writes an error answer for a request the parser rejected, then ends
 * the connection, lingering: input may still be arriving. */
static void send_error(h1 *h, int status) {
  grace__conn *c = h->conn;
  char buf[512];
  char body[64];
  int blen = snprintf(body, sizeof(body), "%d %s", status,
                      grace_http_status_text(status));
  int len =
      snprintf(buf, sizeof(buf),
               "HTTP/1.1 %d %s\r\nDate: %s\r\nContent-Length: %d\r\n"
               "Content-Type: text/plain; charset=utf-8\r\n"
               "Connection: close\r\n\r\n%s",
               status, grace_http_status_text(status),
               h->hl != NULL ? grace__date_header(h->hl) : "", blen, body);
  if (h->req != NULL && !h->req->with_handler) {
    grace__req_free(h->req);
    h->req = NULL;
  }
  h->phase = P_DEAD;
  grace__conn_timer_stop(c, GRACE__TL_HEADER);
  if (len > 0 && (size_t)len < sizeof(buf))
    (void)grace__conn_write(c, buf, (size_t)len);
  grace__conn_end(c, 1);
}

/* Appends |s| to |out| at |*at|, within |cap|. */
static void put(char *out, size_t *at, const char *s, size_t n) {
  memcpy(out + *at, s, n);
  *at += n;
}

/* Serialises the answer of |req| (status line, framing fields owned by
 * the library, the handler's fields, the body) and writes it. */
static int write_answer(h1 *h, grace_http_request *req, int close) {
  int status = grace__req_status(req);
  int no_body = grace__status_no_body(status);
  size_t blen = no_body ? 0 : req->resp_len;
  size_t send_body = req->is_head ? 0 : blen;
  const char *name, *value;
  size_t iter = 0, fields = 0;
  int has_date = 0;
  char line[256];

  while (grace__req_resp_next(req, &iter, &name, &value)) {
    fields += strlen(name) + 2 + strlen(value) + 2;
    if (strcasecmp(name, "Date") == 0)
      has_date = 1;
  }
  int n = snprintf(line, sizeof(line), "HTTP/1.1 %d %s\r\n", status,
                   grace_http_status_text(status));
  if (n < 0 || (size_t)n >= sizeof(line))
    return GRACE_EINVAL;
  size_t cap = (size_t)n + 64 + 48 + 48 + 64 + fields + 2 + send_body;
  char stack[8192];
  char *out = cap <= sizeof(stack) ? stack : malloc(cap);
  if (out == NULL)
    return GRACE_ENOMEM;
  size_t at = 0;
  put(out, &at, line, (size_t)n);
  if (!has_date && h->hl != NULL) {
    put(out, &at, "Date: ", 6);
    const char *d = grace__date_header(h->hl);
    put(out, &at, d, strlen(d));
    put(out, &at, "\r\n", 2);
  }
  if (!no_body) {
    n = snprintf(line, sizeof(line), "Content-Length: %zu\r\n", blen);
    put(out, &at, line, (size_t)n);
    if (blen > 0 && !req->has_content_type) {
      static const char ct[] = "Content-Type: text/plain; charset=utf-8\r\n";
      put(out, &at, ct, sizeof(ct) - 1);
    }
  }
  if (close) {
    put(out, &at, "Connection: close\r\n", 19);
  } else if (req->minor == 0) {
    put(out, &at, "Connection: keep-alive\r\n", 24);
  }
  iter = 0;
  while (grace__req_resp_next(req, &iter, &name, &value)) {
    put(out, &at, name, strlen(name));
    put(out, &at, ": ", 2);
    put(out, &at, value, strlen(value));
    put(out, &at, "\r\n", 2);
  }
  put(out, &at, "\r\n", 2);
  if (send_body)
    put(out, &at, req->resp_body, send_body);
  int rv = grace__conn_write(h->conn, out, at);
  if (out != stack)
    free(out);
  return rv;
}

/* Bytes of the peer not yet parsed: the rest of the current read, or the
 * transport's read-ahead. */
static int input_pending(const h1 *h) {
  return h->in_read ? h->avail > 0 : h->conn->rlen > 0;
}

/* Where a graceful shutdown stands for this connection (a GRACE__DRAIN_
 * value): without a close spread, NOW from its beginning; with one, NONE
 * until the connection's moment, DUE from it, NOW once the window is
 * over. */
static int drain_stage_of(grace__conn *c, grace_http_server *srv) {
  if (!grace__conn_shutting_down(c))
    return GRACE__DRAIN_NONE;
  return grace__http_drain_stage(srv, grace__http_loop_of(c), c->id);
}

static int drain_stage(const h1 *h) { return drain_stage_of(h->conn, h->srv); }

/* The connection has nothing to do: keep it alive, or close it when a
 * shutdown is draining it (during a close spread an idle connection
 * stays open until the window ends: closing it could race its client's
 * next request). */
static void go_idle(h1 *h) {
  grace__conn *c = h->conn;
  if (drain_stage(h) == GRACE__DRAIN_NOW) {
    atomic_fetch_add(&c->reg->idle_closed, 1);
    grace__conn_end(c, 0);
    return;
  }
  grace__conn_set_state(c, GRACE__CS_IDLE);
  grace__conn_timer(c, GRACE__TL_IDLE);
  if (grace__conn_shutting_down(c))
    c->flags |= GRACE__CF_KEPT_IN_DRAIN; /* see grace__h1_spread_over */
  h->dozing = 1;
}

/* Whether the answer to |req| closes the connection.  During shutdown
 * the last answer carries Connection: close; a request already pipelined
 * behind it is served first.  Shutdown counts from drain stage |stage|:
 * GRACE__DRAIN_DUE when the answer starts (the first one to start after
 * the connection's moment in the close spread closes it), _NOW at the end
 * of a streamed answer (one that started keep-alive before that moment
 * stays so unless the window ended meanwhile).  A body the handler did not
 * read to its end leaves the connection unreadable. */
static int must_close_now(const h1 *h, const grace_http_request *req,
                          int stage) {
  /* While a streamed body is open, the input pending is that body, not a
   * pipelined request to serve first. */
  return !req->keep_alive || h->eof ||
         (drain_stage(h) >= stage && (h->body_open || !input_pending(h)));
}

static int must_close(const h1 *h, const grace_http_request *req, int stage) {
  return must_close_now(h, req, stage) || h->body_open;
}

/* The answer to |req| is written: the next request, idle, or the end. */
static void after_answer(h1 *h, grace_http_request *req, int close) {
  grace__conn *c = h->conn;
  int pending = input_pending(h);
  h->req = NULL;
  grace__req_done(req);
  if (close) {
    h->phase = P_DEAD;
    grace__conn_end(c, pending || h->body_open);
    return;
  }
  h->phase = P_IDLE;
  if (grace__conn_queued(c) > GRACE__WRITE_HIGH) {
    /* The peer does not read its answers: read no more requests from it
     * until it does (the send timeout cuts one that never does). */
    h->waiting_flush = 1;
    return;
  }
  if (!pending) {
    go_idle(h);
    h1_doze(h); /* the last use of |h| on this path */
    return;
  }
  if (!h->in_read)
    grace__conn_resume(c);
}

/* The exchange is gone (client left, server closed): free it. */
static int drop_if_gone(h1 *h, grace_http_request *req) {
  if (!grace__conn_closing(req->conn))
    return 0;
  if (h->req == req)
    h->req = NULL;
  grace__req_done(req);
  return 1;
}

/* The handler answered |req| at once (ops->finish); on the loop thread. */
static void h1_finish(grace_http_request *req) {
  h1 *h = req->proto;
  if (drop_if_gone(h, req))
    return;
  if (req->abandoned) {
    h->req = NULL;
    grace__req_done(req);
    grace__conn_close(h->conn);
    return;
  }
  int close = must_close(h, req, GRACE__DRAIN_DUE);
  if (write_answer(h, req, close) != 0) {
    h->req = NULL;
    grace__req_done(req);
    grace__conn_close(h->conn);
    return;
  }
  after_answer(h, req, close);
}

/* A streamed answer: the head, with chunked framing on HTTP/1.1 and a
 * body that runs to the close on HTTP/1.0. */
static int h1_start(grace_http_request *req) {
  h1 *h = req->proto;
  int status = grace__req_status(req);
  const char *name, *value;
  size_t iter = 0;
  grace__dbuf out = {0};
  char line[256];
  int n, rv = 0;
  const size_t max = 1u << 20;

  req->resp_no_body = (uint8_t)(req->is_head || grace__status_no_body(status));
  req->resp_chunked =
      (uint8_t)(!grace__status_no_body(status) && req->minor == 1);
  /* A body still being read does not announce the close: the handler
   * may read it to its end before it ends the answer (an echo), and
   * h1_end closes then if it did not (a delimited answer may be followed
   * by a close without "Connection: close"). */
  req->resp_close =
      (uint8_t)(must_close_now(h, req, GRACE__DRAIN_DUE) ||
                (!req->resp_chunked && !grace__status_no_body(status)));
  n = snprintf(line, sizeof(line), "HTTP/1.1 %d %s\r\nDate: %s\r\n%s%s", status,
               grace_http_status_text(status),
               h->hl != NULL ? grace__date_header(h->hl) : "",
               req->resp_chunked ? "Transfer-Encoding: chunked\r\n" : "",
               req->resp_close ? "Connection: close\r\n" : "");
  rv |= grace__dbuf_append(&out, line, (size_t)n, max);
  while (grace__req_resp_next(req, &iter, &name, &value)) {
    rv |= grace__dbuf_append(&out, name, strlen(name), max);
    rv |= grace__dbuf_append(&out, ": ", 2, max);
    rv |= grace__dbuf_append(&out, value, strlen(value), max);
    rv |= grace__dbuf_append(&out, "\r\n", 2, max);
  }
  rv |= grace__dbuf_append(&out, "\r\n", 2, max);
  if (rv == 0)
    rv = grace__conn_write(h->conn, out.p, out.len);
  else
    rv = GRACE_ENOMEM;
  grace__dbuf_free(&out);
  return rv;
}

static int h1_write(grace_http_request *req, const void *p, size_t n) {
  h1 *h = req->proto;
  grace__conn *c = h->conn;
  if (req->resp_no_body)
    return 0;
  if (grace__conn_queued(c) > GRACE__WRITE_HIGH)
    return GRACE_EBUSY;
  if (req->resp_chunked) {
    char size[24];
    int len = snprintf(size, sizeof(size), "%zx\r\n", n);
    int rv = grace__conn_write(c, size, (size_t)len);
    if (rv == 0)
      rv = grace__conn_write(c, p, n);
    if (rv == 0)
      rv = grace__conn_write(c, "\r\n", 2);
    return rv == 0 ? 0 : GRACE_ECLOSED;
  }
  return grace__conn_write(c, p, n) == 0 ? 0 : GRACE_ECLOSED;
}

static void h1_end(grace_http_request *req) {
  h1 *h = req->proto;
  const char *name, *value;
  size_t iter = 0;
  if (drop_if_gone(h, req))
    return;
  /* The answer to HEAD announces chunked framing as GET's would, but has
   * no body, not even its last chunk (RFC 9110 section 9.3.2). */
  if (req->resp_chunked && !req->resp_no_body) {
    int rv = grace__conn_write(h->conn, "0\r\n", 3);
    while (rv == 0 && grace__req_trailer_next(req, &iter, &name, &value)) {
      rv |= grace__conn_write(h->conn, name, strlen(name));
      rv |= grace__conn_write(h->conn, ": ", 2);
      rv |= grace__conn_write(h->conn, value, strlen(value));
      rv |= grace__conn_write(h->conn, "\r\n", 2);
    }
    if (rv == 0)
      rv = grace__conn_write(h->conn, "\r\n", 2);
    if (rv != 0) {
      h->req = NULL;
      grace__req_done(req);
      return;
    }
  }
  after_answer(h, req, req->resp_close || must_close(h, req, GRACE__DRAIN_NOW));
}

/* The handler reads its streamed body: what the transport holds is
 * offered again, or the end is delivered if the body is over. */
static void h1_read_body(grace_http_request *req) {
  h1 *h = req->proto;
  if (grace__conn_closing(h->conn))
    return;
  if (!h->body_open) {
    if (!req->body_ended)
      grace__req_deliver(req, "", 0, 1);
    return;
  }
  grace__conn_timer(h->conn, GRACE__TL_BODY);
  grace__conn_resume(h->conn);
}

static const grace__exch_ops h1_ops = {
    .finish = h1_finish,
    .start = h1_start,
    .write = h1_write,
    .end = h1_end,
    .read_body = h1_read_body,
};

/* ---- reading ----------------------------------------------------------------
 */

/* The request is complete: to its handler. */
static void dispatch(h1 *h) {
  grace_http_request *req = h->req;
  grace__conn *c = h->conn;
  h->phase = P_HANDLER;
  grace__conn_timer_stop(c, GRACE__TL_HEADER);
  req->complete = 1;
  grace__req_dispatch(req); /* may answer at once (h1_finish) */
}

/* Starts reading the body the head announced, or dispatches at once. */
static int begin_body(h1 *h) {
  llhttp_t *p = &h->parser;
  grace_http_request *req = h->req;
  int chunked = (p->flags & F_CHUNKED) != 0;
  uint64_t length = (p->flags & F_CONTENT_LENGTH) ? p->content_length : 0;
  parser_init(h);
  if (!chunked && length == 0) {
    dispatch(h);
    return 0;
  }
  int stream = grace__req_streams_body(req);
  if (length > h->srv->opts.max_body_bytes)
    return 413;
  grace__h1_body_init(&h->body, chunked, length, h->srv->opts.max_header_bytes);
  h->phase = P_BODY;
  grace__conn_timer_stop(h->conn, GRACE__TL_HEADER);
  grace__conn_timer(h->conn, GRACE__TL_BODY);
  const char *expect = grace_http_request_header(req, "Expect");
  if (expect != NULL && strcasecmp(expect, "100-continue") == 0 &&
      req->minor == 1) {
    static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
    /* Through the write queue: a full socket delays it, never cuts it. */
    (void)grace__conn_write(h->conn, cont, sizeof(cont) - 1);
  }
  if (stream) {
    /* The handler gets the request now and reads the body itself; the
     * body timeout runs while it reads. */
    h->body_open = 1;
    h->streamed = 0;
    grace__conn_timer_stop(h->conn, GRACE__TL_BODY);
    dispatch(h);
  }
  return 0;
}

/* Reads a streamed body into its handler's callback, as far as the
 * handler takes it.  Returns the bytes used, or -1 when the framing is
 * broken (the request is cancelled and the connection ends). */
static ssize_t feed_body(h1 *h, const uint8_t *p, size_t n) {
  grace_http_request *req = h->req;
  size_t off = 0;
  while (h->body_open && !grace__conn_closing(h->conn)) {
    size_t used;
    const uint8_t *data;
    size_t len;
    if (req->on_body == NULL || req->body_paused) {
      grace__conn_timer_stop(h->conn, GRACE__TL_BODY);
      break; /* the handler is not reading: the peer waits */
    }
    if (off == n && !h->body.done)
      break;
    int rv =
        grace__h1_body_next(&h->body, p + off, n - off, &used, &data, &len);
    h->streamed += len;
    if (rv < 0 || h->streamed > h->srv->opts.max_body_bytes) {
      /* Broken framing, or a chunked body past max_body_bytes. */
      h->body_open = 0;
      grace__req_cancel(req);
      grace__conn_end(h->conn, 1);
      return -1;
    }
    off += used;
    if (used > 0)
      grace__conn_timer(h->conn, GRACE__TL_BODY);
    if (rv == GRACE__H1_BODY_DONE) {
      h->body_open = 0;
      grace__conn_timer_stop(h->conn, GRACE__TL_BODY);
      h->avail = n - off;
      grace__req_deliver(req, data, len, 1);
      break;
    }
    if (len > 0 && grace__req_deliver(req, data, len, 0) < 0)
      break; /* the exchange ended in its callback */
  }
  return (ssize_t)off;
}

static ssize_t read_body(h1 *h, const uint8_t *p, size_t n) {
  size_t used;
  const uint8_t *data;
  size_t len;
  int rv = grace__h1_body_next(&h->body, p, n, &used, &data, &len);
  if (rv < 0) {
    send_error(h, rv == GRACE__H1_BODY_EBIG ? 431 : 400);
    return -1;
  }
  if (len > 0) {
    int arv = grace__dbuf_append(&h->req->body, data, len,
                                 h->srv->opts.max_body_bytes);
    if (arv != 0) {
      send_error(h, arv == GRACE_ENOMEM ? 503 : 413);
      return -1;
    }
  }
  if (used > 0)
    grace__conn_timer(h->conn, GRACE__TL_BODY); /* progress */
  if (rv == GRACE__H1_BODY_DONE) {
    grace__conn_timer_stop(h->conn, GRACE__TL_BODY);
    h->avail = n - used;
    dispatch(h);
  }
  return (ssize_t)used;
}

/* Scans head bytes for a line that starts with whitespace after the
 * request line: an obs-fold. */
static int has_fold(h1 *h, const uint8_t *p, size_t n) {
  for (size_t i = 0; i < n; i++) {
    if (h->prev_lf && (p[i] == ' ' || p[i] == '\t'))
      return 1;
    h->prev_lf = p[i] == '\n';
  }
  return 0;
}

static ssize_t read_head(h1 *h, const uint8_t *p, size_t n) {
  grace__conn *c = h->conn;
  if (h->phase == P_IDLE) {
    h->phase = P_HEAD;
    h->prev_lf = 0;
    h->dozing = 0;
    if (c->state != GRACE__CS_ACTIVE) {
      /* The read-header timeout runs from the request's first byte (a new
       * connection's from the accept). */
      if (c->state == GRACE__CS_IDLE)
        grace__conn_timer(c, GRACE__TL_HEADER); /* replaces the idle one */
      grace__conn_set_state(c, GRACE__CS_ACTIVE);
    }
  }
  enum llhttp_errno err = llhttp_execute(&h->parser, (const char *)p, n);
  size_t used = n;
  if (err == HPE_PAUSED || err == HPE_PAUSED_UPGRADE)
    used = (size_t)(llhttp_get_error_pos(&h->parser) - (const char *)p);
  if ((err == HPE_OK || err == HPE_PAUSED || err == HPE_PAUSED_UPGRADE) &&
      has_fold(h, p, used)) {
    /* RFC 9112 section 5.2: obs-fold is rejected, not unfolded (llhttp
     * would unfold it). */
    send_error(h, 400);
    return -1;
  }
  if (err == HPE_OK)
    return (ssize_t)n;
  if (err == HPE_PAUSED || err == HPE_PAUSED_UPGRADE) {
    /* Paused at the end of the head; an Upgrade is not acted on (we do not
     * switch protocols: the request is answered as HTTP/1.1). */
    h->avail = n - used;
    int status = begin_body(h);
    if (status != 0) {
      send_error(h, status);
      return -1;
    }
    return (ssize_t)used;
  }
  int status = 400;
  if (h->req != NULL && h->req->error_status)
    status = h->req->error_status;
  else if (err == HPE_CB_MESSAGE_BEGIN)
    status = 503; /* no memory for the request (on_message_begin) */
  send_error(h, status);
  return -1;
}

static ssize_t h1_on_read(grace__conn *c, const uint8_t *p, size_t n) {
  h1 *h = c->pdata;
  size_t off = 0;

  h->conn = c;
  if (!h->sniffed) {
    /* HTTP/2 with prior knowledge on the same port (RFC 9113 section
     * 3.3)?  The first four bytes decide; fewer wait here. */
    size_t want = 4u - (size_t)h->sniff_len;
    size_t take = want < n ? want : n;
    memcpy(h->sniff + h->sniff_len, p, take);
    int is_h2 = grace__h2c_is_preface(h->sniff, h->sniff_len + take);
    if (h->srv->opts.h2_only)
      is_h2 = 1; /* the session answers a bad preface with GOAWAY */
    if (is_h2 < 0) {
      h->sniff_len = (uint8_t)(h->sniff_len + take);
      return (ssize_t)take;
    }
    h->sniffed = 1;
    if (is_h2 > 0) {
      size_t held = h->sniff_len;
      char sniff[4];
      memcpy(sniff, h->sniff, held);
      if (grace__h2c_start(c, h->srv, h->hl) != 0)
        return -1;
      free(h); /* the connection speaks HTTP/2 from now on */
      if (held > 0 && c->proto->on_read(c, (const uint8_t *)sniff, held) < 0)
        return -1;
      return 0; /* the transport offers |p| to HTTP/2 */
    }
    if (h->sniff_len > 0) {
      /* Too short to hold a request: only the parser's state changes. */
      h->phase = P_IDLE;
      if (read_head(h, (const uint8_t *)h->sniff, h->sniff_len) < 0)
        return -1;
    }
  }
  h->in_read = 1;
  while (off < n && !grace__conn_closing(c) && !h->waiting_flush) {
    ssize_t used;
    if (h->phase == P_HANDLER && h->body_open) {
      used = feed_body(h, p + off, n - off);
      if (used < 0) {
        h->in_read = 0;
        return -1;
      }
      off += (size_t)used;
      if (h->body_open)
        break; /* paused, or waiting for more */
      continue;
    }
    if (h->phase == P_HANDLER || h->phase == P_DEAD)
      break;
    if (h->phase == P_BODY)
      used = read_body(h, p + off, n - off);
    else
      used = read_head(h, p + off, n - off);
    if (used < 0) {
      h->in_read = 0;
      return -1;
    }
    off += (size_t)used;
  }
  h->in_read = 0;
  if (h->phase == P_DEAD)
    return (ssize_t)n; /* ending: the rest is discarded */
  if (off == n)
    h1_doze(h); /* nothing of the bytes left: an idle connection dozes */
  return (ssize_t)off;
}

static void h1_on_eof(grace__conn *c) {
  h1 *h = c->pdata;
  h->conn = c;
  h->eof = 1;
  if (h->phase == P_HANDLER) {
    /* Go cancels the request's context when the client closes; the
     * handler decides whether to finish (its answer closes). */
    if (h->req != NULL)
      grace__req_cancel(h->req);
    return;
  }
  if (h->waiting_flush || c->rlen > 0)
    return; /* pipelined requests are served first */
  if (grace__conn_queued(c) > 0)
    grace__conn_end(c, 0);
  else
    grace__conn_close(c);
}

static void h1_on_flushed(grace__conn *c) {
  h1 *h = c->pdata;
  h->conn = c;
  if (h->phase == P_HANDLER && h->req != NULL && h->req->want_writable) {
    grace__req_writable(h->req);
    return;
  }
  if (!h->waiting_flush)
    return;
  h->waiting_flush = 0;
  if (c->rlen > 0)
    grace__conn_resume(c);
  else if (h->eof)
    grace__conn_close(c);
  else if (h->phase == P_IDLE) {
    go_idle(h);
    h1_doze(h);
  }
}

static void h1_on_timer(grace__conn *c, unsigned list) {
  h1 *h = c->pdata;
  h->conn = c;
  switch (list) {
  case GRACE__TL_BODY:
    /* The client stopped sending its body (nginx's client_body_timeout):
     * the request is cut. */
    if (h->phase == P_HANDLER && h->req != NULL) {
      /* A handler reads it: its request is cancelled (and so counted). */
      atomic_fetch_add(&c->reg->timeouts, 1);
      grace__conn_close(c);
      break;
    }
    grace__conn_count_cut(c, 1);
    send_error(h, 408);
    break;
  case GRACE__TL_SEND:
    /* The client stopped reading its answer (nginx's send_timeout). */
    grace__conn_count_cut(c, 1);
    grace__conn_close(c);
    break;
  default:
    /* Header or idle timeout: close quietly, as Go does. */
    grace__conn_close(c);
    break;
  }
}

static void h1_on_shutdown(grace__conn *c) {
  h1 *h = c->pdata;
  h->conn = c;
  if (drain_stage(h) != GRACE__DRAIN_NOW)
    return; /* a close spread: its answers say when (must_close_now) */
  if (h->phase != P_IDLE || h->waiting_flush)
    return; /* its answer will carry Connection: close */
  /* New or idle: serve the bytes it has already sent, else close. */
  if (c->rlen > 0)
    grace__conn_resume(c);
  else
    grace__conn_read_now(c);
  if (c->proto != &grace__h1_proto)
    return; /* it spoke HTTP/2, which began its own shutdown */
  if (grace__conn_closing(c) || h->phase != P_IDLE || c->rlen > 0 ||
      h->sniff_len > 0 || h->waiting_flush)
    return;
  atomic_fetch_add(&c->reg->idle_closed, 1);
  grace__conn_end(c, 0);
}

static void idle_on_shutdown(grace__conn *c);

void grace__h1_spread_over(grace__conn *c) {
  if (grace__conn_closing(c) || !grace__conn_shutting_down(c))
    return;
  if (c->proto == &grace__h1_proto) {
    h1_on_shutdown(c);
  } else if (c->proto == &grace__h1_idle_proto) {
    if (c->flags & GRACE__CF_KEPT_IN_DRAIN) {
      /* Answered during the window: its next request may be on its way
       * (see GRACE__LAST_CALL_MS); this replaces the idle deadline. */
      grace__conn_timer(c, GRACE__TL_LAST_CALL);
      return;
    }
    idle_on_shutdown(c);
  }
}

static unsigned h1_on_force(grace__conn *c) {
  h1 *h = c->pdata;
  if (h->phase == P_HANDLER && h->req != NULL &&
      !atomic_load(&h->req->cancelled))
    return 1;
  return 0;
}

static void h1_on_close(grace__conn *c) {
  h1 *h = c->pdata;
  grace_http_request *req = h->req;
  if (req == NULL)
    return;
  if (req->with_handler) {
    grace__req_cancel(req); /* its answer is discarded */
    return;
  }
  h->req = NULL;
  grace__req_free(req);
}

static void h1_on_free(grace__conn *c) {
  h1 *h = c->pdata;
  if (h->req != NULL && !h->req->with_handler)
    grace__req_free(h->req);
  free(h);
}

const grace__conn_proto grace__h1_proto = {
    .on_read = h1_on_read,
    .on_eof = h1_on_eof,
    .on_flushed = h1_on_flushed,
    .on_timer = h1_on_timer,
    .on_shutdown = h1_on_shutdown,
    .on_force = h1_on_force,
    .on_close = h1_on_close,
    .on_free = h1_on_free,
};

/* ---- a connection without HTTP/1.1 state ----------------------------------
 * (new, or idle between requests; its pdata is the server) */

static ssize_t idle_on_read(grace__conn *c, const uint8_t *p, size_t n) {
  (void)p;
  (void)n;
  if (h1_wake(c, c->pdata) == NULL)
    return -1; /* out of memory: the transport ends the connection */
  return 0;    /* the transport offers the bytes to HTTP/1.1 */
}

static void idle_on_eof(grace__conn *c) {
  if (grace__conn_queued(c) > 0)
    grace__conn_end(c, 0);
  else
    grace__conn_close(c);
}

static void idle_on_timer(grace__conn *c, unsigned list) {
  if (list == GRACE__TL_LAST_CALL) {
    idle_on_shutdown(c); /* no request came: closed as at the window's end */
    return;
  }
  if (list == GRACE__TL_SEND) {
    /* Its last answer is not being read (nginx's send_timeout). */
    grace__conn_count_cut(c, 1);
  }
  grace__conn_close(c); /* idle or read-header timeout: quietly */
}

static void idle_on_shutdown(grace__conn *c) {
  if (drain_stage_of(c, c->pdata) != GRACE__DRAIN_NOW)
    return; /* a close spread: the window's end closes it */
  /* Serve the bytes it has already sent, else close. */
  grace__conn_read_now(c);
  if (c->proto != &grace__h1_idle_proto || grace__conn_closing(c))
    return; /* it woke up: HTTP/1.1 (or HTTP/2) drains it */
  atomic_fetch_add(&c->reg->idle_closed, 1);
  grace__conn_end(c, 0);
}

const grace__conn_proto grace__h1_idle_proto = {
    .on_read = idle_on_read,
    .on_eof = idle_on_eof,
    .on_timer = idle_on_timer,
    .on_shutdown = idle_on_shutdown,
};

/* ---- llhttp callbacks -------------------------------------------------------
 */

static int head_append(h1 *h, const char *at, size_t len) {
  int rv =
      grace__dbuf_append(&h->req->head, at, len, h->srv->opts.max_header_bytes);
  if (rv != 0) {
    /* Too big is the client's doing; no memory is ours. */
    h->req->error_status = rv == GRACE_ENOMEM ? 503 : 431;
    return -1;
  }
  return 0;
}

static int on_message_begin(llhttp_t *p) {
  h1 *h = p->data;
  if (h->req == NULL) {
    h->req = grace__req_new(h->srv, h->hl, h->conn, h, &h1_ops);
    if (h->req == NULL)
      return -1;
  }
  h->fields = 0;
  h->hosts = 0;
  h->te_seen = 0;
  h->te_status = 0;
  return 0;
}

static int on_url(llhttp_t *p, const char *at, size_t len) {
  return head_append(p->data, at, len);
}

static int on_url_complete(llhttp_t *p) {
  h1 *h = p->data;
  if (head_append(h, "", 1) != 0)
    return -1;
  h->req->headers_off = h->req->head.len;
  h->name_off = h->req->head.len;
  return 0;
}

static int on_header_field(llhttp_t *p, const char *at, size_t len) {
  return head_append(p->data, at, len);
}

static int on_header_field_complete(llhttp_t *p) {
  h1 *h = p->data;
  grace_http_request *req = h->req;
  if (++h->fields > GRACE__MAX_HEADER_FIELDS) {
    req->error_status = 431;
    return -1;
  }
  if (head_append(h, "", 1) != 0)
    return -1;
  h->field_is_host = strcasecmp(req->head.p + h->name_off, "host") == 0;
  return 0;
}

static int on_header_value(llhttp_t *p, const char *at, size_t len) {
  return head_append(p->data, at, len);
}

/* RFC 9112 section 3.2 / RFC 3986 section 3.2.2: reg-name, IP-literal or
 * IPv4 address, then an optional port; nothing that could be a path, a
 * user or whitespace. */
static int valid_host(const char *v) {
  for (; *v; v++) {
    unsigned char ch = (unsigned char)*v;
    if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
        (ch >= '0' && ch <= '9'))
      continue;
    if (strchr("-._~:[]!$&'()*+,;=%", ch) == NULL)
      return 0;
  }
  return 1;
}

static int on_header_value_complete(llhttp_t *p) {
  h1 *h = p->data;
  grace_http_request *req = h->req;
  req->nheaders++;
  if (head_append(h, "", 1) != 0)
    return -1;
  uint32_t name_off = h->name_off;
  h->name_off = req->head.len;
  const char *name = req->head.p + name_off;
  const char *value = name + strlen(name) + 1;
  if (strcasecmp(name, "transfer-encoding") == 0) {
    /* Only "chunked" is implemented (Go answers other codings 501);
     * a list or a second field is refused rather than guessed at. */
    size_t vl = strlen(value);
    while (vl > 0 && (value[vl - 1] == ' ' || value[vl - 1] == '\t'))
      vl--;
    const char *v = value;
    while (*v == ' ' || *v == '\t')
      v++, vl--;
    if (h->te_seen++ || vl != 7 || strncasecmp(v, "chunked", 7) != 0)
      h->te_status = h->te_status ? h->te_status : 501;
  }
  if (h->field_is_host) {
    h->hosts++;
    if (!valid_host(value)) {
      req->error_status = 400;
      return -1;
    }
  }
  return 0;
}

static int on_headers_complete(llhttp_t *p) {
  h1 *h = p->data;
  grace_http_request *req = h->req;

  req->headers_end = req->head.len;
  if (llhttp_get_http_major(p) != 1) {
    req->error_status = 505;
    return -1;
  }
  /* A version above 1.1 is answered as 1.1 (RFC 9110 section 6.2). */
  req->minor = (uint8_t)(llhttp_get_http_minor(p) > 0 ? 1 : 0);
  /* RFC 9112 section 3.2: a 1.1 request has exactly one Host, and no
   * request has two. */
  if (h->hosts > 1 || (req->minor == 1 && h->hosts == 0)) {
    req->error_status = 400;
    return -1;
  }
  /* RFC 9112 section 6.3: a request whose final transfer coding is not
   * chunked has no reliable length. */
  if ((p->flags & F_TRANSFER_ENCODING) && !(p->flags & F_CHUNKED)) {
    req->error_status = 400;
    return -1;
  }
  if (h->te_status) {
    req->error_status = h->te_status;
    return -1;
  }
  req->keep_alive = (uint8_t)llhttp_should_keep_alive(p);
  req->is_head = llhttp_get_method(p) == HTTP_HEAD;
  grace__req_finish_head(req, llhttp_method_name(llhttp_get_method(p)));
  if (req->error_status)
    return -1;
  /* The body, if any, is read by h1_body.c: tell llhttp there is none. */
  return 1;
}

static int on_message_complete(llhttp_t *p) {
  (void)p;
  /* Pause at the end of the head so the caller takes over. */
  return HPE_PAUSED;
}

/* Shared by every connection of every server, read-only: initialised
 * statically so no thread ever writes it. */
static const llhttp_settings_t settings = {
    .on_message_begin = on_message_begin,
    .on_url = on_url,
    .on_url_complete = on_url_complete,
    .on_header_field = on_header_field,
    .on_header_field_complete = on_header_field_complete,
    .on_header_value = on_header_value,
    .on_header_value_complete = on_header_value_complete,
    .on_headers_complete = on_headers_complete,
    .on_message_complete = on_message_complete,
};
