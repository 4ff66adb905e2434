/*
 * The HTTP/1.1 connection state machine: reading with llhttp, pipelining,
 * keep-alive, timeouts, writing responses, and each connection's part in
 * graceful shutdown.
 *
 * Everything here runs on the connection's loop thread.  A connection is
 * never freed inside the call stack that closes it: closing calls
 * uv_close, and the struct is freed from the close callback (or, if a
 * handler still holds its request, when that request is answered).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "http/internal.h"

static void on_poll(uv_poll_t *handle, int status, int events);
static void parse(h1conn *c, const char *data, size_t n, int from_pending);
static void send_error(h1conn *c, int status);

/* Deepest synchronous recursion (respond inside a handler, then the next
 * pipelined request) before the rest is deferred to the next loop turn. */
#define MAX_DEPTH 8

/* ---- state and bookkeeping -------------------------------------------- */

void grace__conn_set_state(h1conn *c, grace_conn_state st) {
  grace_http_server *srv = c->hl->srv;
  if (c->state == st)
    return;
  if (c->state == GRACE_CONN_ACTIVE)
    atomic_fetch_sub(&srv->st_active, 1);
  else if (c->state == GRACE_CONN_IDLE)
    atomic_fetch_sub(&srv->st_idle, 1);
  if (st == GRACE_CONN_ACTIVE)
    atomic_fetch_add(&srv->st_active, 1);
  else if (st == GRACE_CONN_IDLE)
    atomic_fetch_add(&srv->st_idle, 1);
  c->state = (uint8_t)st;
  if (srv->opts.conn_state)
    srv->opts.conn_state(c->id, st, srv->opts.conn_state_data);
}

static void maybe_drained(grace_http_server *srv) {
  if (!atomic_load(&srv->shutdown) || !atomic_load(&srv->listeners_closed) ||
      atomic_load(&srv->nconns) != 0)
    return;
  int expected = 0;
  if (!atomic_compare_exchange_strong(&srv->drained, &expected, 1))
    return;
  /* The callback first, so whoever wakes on the descriptor sees what the
   * callback did. */
  if (srv->drained_cb)
    srv->drained_cb(srv, srv->drained_data);
  uint64_t one = 1;
  ssize_t rv;
  do
    rv = write(srv->drained_fd, &one, sizeof(one));
  while (rv < 0 && errno == EINTR);
}

void grace__h1_conn_dec(grace_http_server *srv) {
  atomic_fetch_sub(&srv->nconns, 1);
  maybe_drained(srv);
}

void grace__h1_check_drained(grace_http_server *srv) { maybe_drained(srv); }

void grace__conn_poll(h1conn *c, int events) {
  if (c->flags & CF_CLOSED)
    return;
  if (events == c->events)
    return;
  c->events = events;
  if (events == 0)
    uv_poll_stop(&c->poll);
  else
    uv_poll_start(&c->poll, events, on_poll);
}

void grace__conn_free(h1conn *c) {
  grace_http_server *srv = c->hl->srv;
  grace__list_unlink(&c->link);
  if (c->req != NULL)
    grace__req_free(c->req);
  grace__dbuf_free(&c->pending);
  free(c->wbuf);
  free(c);
  grace__h1_conn_dec(srv);
}

static void on_conn_closed(uv_handle_t *handle) {
  h1conn *c = handle->data;
  c->flags |= CF_CLOSED;
  if (!(c->flags & CF_IN_HANDLER) && c->nreqs == 0)
    grace__conn_free(c);
}

/* Tells the handler holding the request that it is cancelled.  The cancel
 * callback may answer (and free) the request, so nothing touches it after. */
void grace__req_cancel(grace_http_request *req) {
  if (req->cancelled)
    return;
  req->cancelled = 1;
  atomic_fetch_add(&req->srv->st_cut, 1);
  if (req->ctx != NULL)
    grace_ctx_cancel(req->ctx);
  if (req->on_cancel != NULL)
    req->on_cancel(req, req->on_cancel_data);
}

int grace__conn_closing(const h1conn *c) {
  return c->fd < 0;
}

void grace__conn_close(h1conn *c) {
  if (grace__conn_closing(c))
    return;
  grace__loop_tlist_remove(c->hl->loop, &c->timeout);
  /* uv_close unregisters the descriptor synchronously, so it can be
   * closed right away; the struct waits for the close callback. */
  uv_close((uv_handle_t *)&c->poll, on_conn_closed);
  close(c->fd);
  c->fd = -1;
  grace__conn_set_state(c, GRACE_CONN_CLOSED);
  if (c->h2 != NULL)
    grace__h2c_teardown(c); /* cancels the requests of open streams */
  if ((c->flags & CF_IN_HANDLER) && c->req != NULL)
    grace__req_cancel(c->req);
}

/* ---- adoption ----------------------------------------------------------- */

static const llhttp_settings_t *h1_settings(void);

h1conn *grace__h1_conn_new(grace_http_server *srv, int fd) {
  h1conn *c = calloc(1, sizeof(*c));
  if (c == NULL)
    return NULL;
  c->fd = fd;
  c->id = atomic_fetch_add(&srv->next_id, 1) + 1;
  grace__list_init(&c->link);
  grace__list_init(&c->timeout.link);
  return c;
}

static void try_read(h1conn *c);

void grace__h1_adopt(h1loop *hl, h1conn *c) {
  c->hl = hl;
  if (hl->closing ||
      uv_poll_init_socket(&hl->loop->uv, &c->poll, c->fd) != 0) {
    close(c->fd);
    free(c);
    grace__h1_conn_dec(hl->srv);
    return;
  }
  c->poll.data = c;
  llhttp_init(&c->parser, HTTP_REQUEST, h1_settings());
  c->parser.data = c;
  grace__list_push(&hl->conns, &c->link);
  c->state = GRACE_CONN_CLOSED; /* so grace__conn_set_state reports NEW */
  grace__conn_set_state(c, GRACE_CONN_NEW);
  grace__loop_tlist_add(hl->loop, TL_HEADER, &c->timeout);
  grace__conn_poll(c, UV_READABLE);
  if (hl->shutting_down) {
    /* Accepted while draining: serve what it already sent, else close. */
    try_read(c);
    if (!grace__conn_closing(c) && c->req == NULL && c->h2 == NULL) {
      atomic_fetch_add(&hl->srv->st_idle_closed, 1);
      grace__conn_close(c);
    }
  }
}

/* ---- writing ------------------------------------------------------------ */

static void continue_pending(h1conn *c);

static void linger_close(h1conn *c) {
  /* Half-close, then read and discard until the client closes or the
   * linger time passes. */
  shutdown(c->fd, SHUT_WR);
  c->flags |= CF_LINGER;
  c->flags &= (uint16_t)~CF_READ_PAUSED;
  grace__dbuf_free(&c->pending);
  grace__loop_tlist_add(c->hl->loop, TL_LINGER, &c->timeout);
  grace__conn_poll(c, UV_READABLE);
}

static void write_done(h1conn *c) {
  h1loop *hl = c->hl;
  free(c->wbuf);
  c->wbuf = NULL;
  c->wlen = c->woff = 0;
  c->flags &= (uint16_t)~CF_WRITING;
  if (c->h2 != NULL) {
    grace__h2c_write_done(c);
    return;
  }
  if (c->req != NULL) {
    grace__req_free(c->req);
    c->req = NULL;
  }
  if (c->flags & CF_CLOSE_AFTER) {
    if (c->flags & CF_LINGER)
      return;
    /* Unread request bytes would make close() send a reset that can
     * destroy the response in flight; linger in that case. */
    if (c->pending.len > 0 || llhttp_get_errno(&c->parser) != HPE_OK)
      linger_close(c);
    else
      grace__conn_close(c);
    return;
  }
  if (c->flags & CF_READ_PAUSED)
    c->flags &= (uint16_t)~CF_READ_PAUSED;
  if (c->pending.len > 0) {
    continue_pending(c);
    return;
  }
  if (hl->shutting_down) {
    atomic_fetch_add(&hl->srv->st_idle_closed, 1);
    grace__conn_close(c);
    return;
  }
  grace__conn_set_state(c, GRACE_CONN_IDLE);
  grace__loop_tlist_add(hl->loop, TL_IDLE, &c->timeout);
  grace__conn_poll(c, UV_READABLE);
}

static void do_write(h1conn *c) {
  while (c->woff < c->wlen) {
    ssize_t n = send(c->fd, c->wbuf + c->woff, c->wlen - c->woff,
                     MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      if (errno == EAGAIN) {
        grace__conn_poll(c, UV_READABLE | UV_WRITABLE);
        return;
      }
      /* The client is gone; the response cannot be delivered. */
      c->flags &= (uint16_t)~CF_WRITING;
      grace__conn_close(c);
      return;
    }
    c->woff += (uint32_t)n;
  }
  write_done(c);
}

static void start_write(h1conn *c, char *buf, uint32_t len) {
  c->wbuf = buf;
  c->wlen = len;
  c->woff = 0;
  c->flags |= CF_WRITING;
  do_write(c);
}

/* Answers |req| on the loop thread; the common end of every request. */
void grace__h1_finish(grace_http_request *req) {
  h1conn *c = req->conn;
  h1loop *hl = c->hl;
  int close;
  char *out;
  uint32_t outlen;

  atomic_fetch_sub(&hl->srv->st_inflight, 1);
  if (req->is_h2) {
    grace__h2c_answer(req);
    return;
  }
  c->flags &= (uint16_t)~CF_IN_HANDLER;
  if (grace__conn_closing(c)) {
    /* Cancelled: the client went away or the server was closed. */
    if (c->flags & CF_CLOSED)
      grace__conn_free(c); /* frees req too */
    return;
  }
  if (req->abandoned) {
    grace__conn_close(c);
    return;
  }
  /* During shutdown the last response carries Connection: close; a
   * request already pipelined behind it is served first. */
  close = !req->keep_alive || (c->flags & CF_PEER_EOF) ||
          (hl->shutting_down && c->pending.len == 0) || req->error_status;
  const char *body = req->resp_body;
  if (grace__req_serialize(req, hl, body, req->resp_len, close, &out,
                           &outlen) != 0) {
    grace__conn_close(c);
    return;
  }
  if (close)
    c->flags |= CF_CLOSE_AFTER;
  start_write(c, out, outlen);
}

/* ---- reading and parsing ------------------------------------------------ */

static void dispatch(h1conn *c) {
  grace_http_request *req = c->req;
  grace__loop_tlist_remove(c->hl->loop, &c->timeout);
  c->flags |= CF_IN_HANDLER;
  atomic_fetch_add(&c->hl->srv->st_requests, 1);
  atomic_fetch_add(&c->hl->srv->st_inflight, 1);
  grace__route(req); /* may answer, and even close c; c stays allocated */
}

static void save_leftover(h1conn *c, const char *from, size_t n,
                          int from_pending) {
  if (from_pending) {
    memmove(c->pending.p, from, n);
    c->pending.len = (uint32_t)n;
    if (n == 0)
      grace__dbuf_free(&c->pending);
  } else if (n > 0) {
    /* Cannot fail past the cap: leftover of one read <= READ_BUF_SIZE. */
    if (grace__dbuf_append(&c->pending, from, n, 4 * PENDING_CAP) != 0)
      c->flags |= CF_CLOSE_AFTER;
  }
}

static void parse(h1conn *c, const char *data, size_t n, int from_pending) {
  enum llhttp_errno err = llhttp_execute(&c->parser, data, n);
  if (err == HPE_OK) {
    if (from_pending)
      grace__dbuf_free(&c->pending);
    return;
  }
  if (err == HPE_PAUSED || err == HPE_PAUSED_UPGRADE) {
    const char *pos = llhttp_get_error_pos(&c->parser);
    size_t used = (size_t)(pos - data);
    llhttp_resume(&c->parser);
    if (err == HPE_PAUSED_UPGRADE) {
      /* We do not switch protocols: answer, then close. */
      c->req->keep_alive = 0;
      used = n;
    }
    save_leftover(c, data + used, n - used, from_pending);
    if (c->req != NULL && c->req->complete) {
      dispatch(c);
    }
    return;
  }
  int status = 400;
  if (c->req != NULL && c->req->error_status)
    status = c->req->error_status;
  if (from_pending)
    grace__dbuf_free(&c->pending);
  send_error(c, status);
}

static void continue_pending(h1conn *c) {
  /* Per loop thread: how deep answers and next requests have nested. */
  static _Thread_local int depth;
  if (depth >= MAX_DEPTH) {
    /* Resume through the poll: a writable socket wakes us at once. */
    grace__conn_poll(c, UV_READABLE | UV_WRITABLE);
    return;
  }
  depth++;
  grace__conn_set_state(c, GRACE_CONN_ACTIVE);
  parse(c, c->pending.p, c->pending.len, 1);
  depth--;
}

static void on_eof(h1conn *c) {
  c->flags |= CF_PEER_EOF;
  if (c->flags & CF_IN_HANDLER) {
    /* Go cancels the request context when the client closes; the handler
     * decides whether to finish. */
    grace__conn_poll(c, c->events & ~UV_READABLE);
    if (c->req != NULL)
      grace__req_cancel(c->req);
    return;
  }
  if (c->flags & CF_WRITING) {
    grace__conn_poll(c, c->events & ~UV_READABLE);
    return;
  }
  grace__conn_close(c);
}

/* Reads once from the socket and acts on what arrived. */
static void try_read(h1conn *c) {
  h1loop *hl = c->hl;
  ssize_t n;

  if (c->h2 != NULL) {
    do
      n = read(c->fd, hl->rbuf, READ_BUF_SIZE);
    while (n < 0 && errno == EINTR);
    if (n > 0)
      grace__h2c_read(c, hl->rbuf, (size_t)n);
    else if (n == 0 || errno != EAGAIN)
      grace__conn_close(c);
    return;
  }
  if (c->flags & CF_LINGER) {
    do
      n = read(c->fd, hl->rbuf, READ_BUF_SIZE);
    while (n < 0 && errno == EINTR);
    if (n == 0 || (n < 0 && errno != EAGAIN))
      grace__conn_close(c);
    return;
  }
  if (c->flags & (CF_IN_HANDLER | CF_WRITING)) {
    /* Read ahead while the request is handled: pipelined requests, and an
     * EOF that cancels the handler. */
    size_t room = PENDING_CAP > c->pending.len ? PENDING_CAP - c->pending.len
                                               : 0;
    if (room == 0) {
      c->flags |= CF_READ_PAUSED;
      grace__conn_poll(c, c->events & ~UV_READABLE);
      return;
    }
    do
      n = read(c->fd, hl->rbuf, room < READ_BUF_SIZE ? room : READ_BUF_SIZE);
    while (n < 0 && errno == EINTR);
    if (n > 0) {
      if (grace__dbuf_append(&c->pending, hl->rbuf, (size_t)n,
                             PENDING_CAP) != 0)
        grace__conn_close(c);
    } else if (n == 0) {
      on_eof(c);
    } else if (errno != EAGAIN) {
      if (c->flags & CF_IN_HANDLER && c->req != NULL)
        grace__req_cancel(c->req);
      grace__conn_close(c);
    }
    return;
  }
  do
    n = read(c->fd, hl->rbuf, READ_BUF_SIZE);
  while (n < 0 && errno == EINTR);
  if (n > 0) {
    if (!(c->flags & CF_SEEN_BYTES)) {
      /* HTTP/2 with prior knowledge on the same port (RFC 9113 3.3)?  The
       * first bytes decide; a few that could go either way wait. */
      if (grace__dbuf_append(&c->pending, hl->rbuf, (size_t)n,
                             4 * PENDING_CAP) != 0) {
        grace__conn_close(c);
        return;
      }
      int h2 = grace__h2c_is_preface(c->pending.p, c->pending.len);
      if (h2 < 0)
        return;
      c->flags |= CF_SEEN_BYTES;
      if (h2 > 0) {
        grace__h2c_start(c, c->pending.p, c->pending.len);
        grace__dbuf_free(&c->pending);
        return;
      }
      grace__conn_set_state(c, GRACE_CONN_ACTIVE);
      grace__loop_tlist_add(hl->loop, TL_HEADER, &c->timeout);
      parse(c, c->pending.p, c->pending.len, 1);
      return;
    }
    if (c->state != GRACE_CONN_ACTIVE) {
      grace__conn_set_state(c, GRACE_CONN_ACTIVE);
      /* The read-header timeout runs from the request's first byte. */
      grace__loop_tlist_add(hl->loop, TL_HEADER, &c->timeout);
    }
    if (c->pending.len > 0) {
      if (grace__dbuf_append(&c->pending, hl->rbuf, (size_t)n,
                             4 * PENDING_CAP) != 0) {
        send_error(c, 431);
        return;
      }
      parse(c, c->pending.p, c->pending.len, 1);
    } else {
      parse(c, hl->rbuf, (size_t)n, 0);
    }
  } else if (n == 0) {
    on_eof(c);
  } else if (errno != EAGAIN) {
    grace__conn_close(c);
  }
}

static void on_poll(uv_poll_t *handle, int status, int events) {
  h1conn *c = handle->data;
  if (grace__conn_closing(c))
    return;
  if (status < 0) {
    if (c->flags & CF_IN_HANDLER && c->req != NULL)
      grace__req_cancel(c->req);
    grace__conn_close(c);
    return;
  }
  if (events & UV_WRITABLE) {
    if (c->flags & CF_WRITING) {
      do_write(c);
    } else {
      grace__conn_poll(c, c->events & ~UV_WRITABLE);
      if (c->pending.len > 0 && !(c->flags & CF_IN_HANDLER))
        continue_pending(c);
    }
    if (grace__conn_closing(c))
      return;
  }
  if ((events & UV_READABLE) && (c->events & UV_READABLE))
    try_read(c);
}

/* Answers a request the parser rejected, then closes. */
static void send_error(h1conn *c, int status) {
  grace_http_request *req = c->req;
  char *out;
  uint32_t outlen;
  char body[64];

  if (req == NULL) {
    req = grace__req_new(c);
    if (req == NULL) {
      grace__conn_close(c);
      return;
    }
    c->req = req;
  }
  req->status = status;
  req->error_status = status;
  req->keep_alive = 0;
  req->is_head = 0;
  grace__loop_tlist_remove(c->hl->loop, &c->timeout);
  int len = snprintf(body, sizeof(body), "%d %s", status,
                     grace_http_status_text(status));
  if (grace__req_serialize(req, c->hl, body, (size_t)len, 1, &out,
                           &outlen) != 0) {
    grace__conn_close(c);
    return;
  }
  /* write_done lingers: the parser is in error, so input may remain. */
  c->flags |= CF_CLOSE_AFTER;
  start_write(c, out, outlen);
}

/* ---- llhttp callbacks --------------------------------------------------- */

static grace_http_request *cur(llhttp_t *p) {
  return ((h1conn *)p->data)->req;
}

static int head_append(llhttp_t *p, const char *at, size_t len) {
  grace_http_request *req = cur(p);
  h1conn *c = p->data;
  if (grace__dbuf_append(&req->head, at, len,
                         c->hl->srv->opts.max_header_bytes) != 0) {
    req->error_status = 431;
    return -1;
  }
  return 0;
}

static int on_message_begin(llhttp_t *p) {
  h1conn *c = p->data;
  if (c->req == NULL) {
    c->req = grace__req_new(c);
    if (c->req == NULL)
      return -1;
  }
  if (c->state != GRACE_CONN_ACTIVE)
    grace__conn_set_state(c, GRACE_CONN_ACTIVE);
  if (c->timeout.link.next == &c->timeout.link)
    grace__loop_tlist_add(c->hl->loop, TL_HEADER, &c->timeout);
  return 0;
}

static int on_url(llhttp_t *p, const char *at, size_t len) {
  return head_append(p, at, len);
}

static int on_url_complete(llhttp_t *p) {
  grace_http_request *req = cur(p);
  if (head_append(p, "", 1) != 0)
    return -1;
  req->headers_off = req->head.len;
  return 0;
}

static int on_header_field(llhttp_t *p, const char *at, size_t len) {
  return head_append(p, at, len);
}

static int on_header_field_complete(llhttp_t *p) {
  return head_append(p, "", 1);
}

static int on_header_value(llhttp_t *p, const char *at, size_t len) {
  return head_append(p, at, len);
}

static int on_header_value_complete(llhttp_t *p) {
  grace_http_request *req = cur(p);
  req->nheaders++;
  return head_append(p, "", 1);
}

static int on_headers_complete(llhttp_t *p) {
  h1conn *c = p->data;
  grace_http_request *req = c->req;
  grace_http_server *srv = c->hl->srv;

  req->headers_end = req->head.len;
  req->minor = (uint8_t)llhttp_get_http_minor(p);
  if (llhttp_get_http_major(p) != 1) {
    req->error_status = 505;
    return -1;
  }
  req->keep_alive = (uint8_t)llhttp_should_keep_alive(p);
  req->is_head = llhttp_get_method(p) == HTTP_HEAD;
  grace__req_finish_head(req, llhttp_method_name(llhttp_get_method(p)));
  if (req->error_status)
    return -1;
  /* The read-header timeout ends with the headers. */
  grace__loop_tlist_remove(c->hl->loop, &c->timeout);
  if ((p->flags & F_CONTENT_LENGTH) &&
      p->content_length > srv->opts.max_body_bytes) {
    req->error_status = 413;
    return -1;
  }
  const char *expect = grace_http_request_header(req, "Expect");
  if (expect != NULL && strcasecmp(expect, "100-continue") == 0 &&
      req->minor == 1) {
    static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
    /* Best effort, like Go: a full socket buffer here is not fatal. */
    (void)!send(c->fd, cont, sizeof(cont) - 1, MSG_NOSIGNAL);
  }
  return 0;
}

static int on_body(llhttp_t *p, const char *at, size_t len) {
  h1conn *c = p->data;
  grace_http_request *req = c->req;
  if (grace__dbuf_append(&req->body, at, len,
                         c->hl->srv->opts.max_body_bytes) != 0) {
    req->error_status = 413;
    return -1;
  }
  return 0;
}

static int on_message_complete(llhttp_t *p) {
  grace_http_request *req = cur(p);
  req->complete = 1;
  /* One request at a time: pause so the caller dispatches this one and
   * keeps the bytes of the next. */
  return HPE_PAUSED;
}

/* Shared by every connection of every server, read-only: initialised
 * statically so no thread ever writes it (llhttp_settings_init only
 * zeroes what is not set here). */
static const llhttp_settings_t settings = {
    .on_message_begin = on_message_begin,
    .on_url = on_url,
    .on_url_complete = on_url_complete,
    .on_header_field = on_header_field,
    .on_header_field_complete = on_header_field_complete,
    .on_header_value = on_header_value,
    .on_header_value_complete = on_header_value_complete,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

static const llhttp_settings_t *h1_settings(void) { return &settings; }

/* ---- timeouts and shutdown ---------------------------------------------- */

void grace__h1_expire(h1loop *hl, unsigned list, grace__tnode *node) {
  h1conn *c = grace__container_of(node, h1conn, timeout);
  (void)hl;
  if (c->h2 != NULL) {
    grace__h2c_expire(c, list);
    return;
  }
  /* Header timeout, idle timeout or the end of a linger: close quietly. */
  grace__conn_close(c);
}

void grace__h1_shutdown(h1loop *hl) {
  grace__list *it, *next;
  hl->shutting_down = 1;
  for (it = hl->conns.next; it != &hl->conns; it = next) {
    h1conn *c = grace__container_of(it, h1conn, link);
    next = it->next;
    if (grace__conn_closing(c))
      continue;
    if (c->h2 != NULL) {
      grace__h2c_shutdown(c);
      continue;
    }
    if (c->req != NULL || (c->flags & CF_WRITING))
      continue;
    /* New or idle: serve the bytes it has already sent, else close. */
    if (c->pending.len > 0)
      continue_pending(c);
    else
      try_read(c);
    if (!grace__conn_closing(c) && c->req == NULL && c->h2 == NULL &&
        !(c->flags & CF_WRITING)) {
      atomic_fetch_add(&hl->srv->st_idle_closed, 1);
      grace__conn_close(c);
    }
  }
}

int grace__h1_close_all(h1loop *hl) {
  grace__list *it, *next;
  int cut = 0;
  hl->closing = 1;
  hl->shutting_down = 1;
  for (it = hl->conns.next; it != &hl->conns; it = next) {
    h1conn *c = grace__container_of(it, h1conn, link);
    next = it->next;
    if (grace__conn_closing(c))
      continue;
    if ((c->flags & CF_IN_HANDLER) && c->req != NULL && !c->req->cancelled)
      cut++;
    if (c->h2 != NULL)
      cut += grace__h2c_force_close(c);
    grace__conn_close(c);
  }
  return cut;
}
