/*
 * The HTTP/2 server connection on nghttp2, sans-I/O: see h2.h for the
 * contract.  This file is the glue between nghttp2's callbacks and the
 * application's events; the protocol itself (framing, HPACK, flow-control
 * accounting, stream states, request validation) is nghttp2's.
 *
 * Here is the connection: its life cycle, recv and output, shutdown
 * and the nghttp2 callbacks for incoming frames.  The stream side (the
 * request accessors, the response and its send queue) is h2_stream.c; what
 * the two share is in h2_int.h.
 *
 * Memory: nothing here buffers request bytes.  A stream holds its request
 * head (bounded by max_header_list), its send queue (bounded by
 * max_send_buffer, or by the one body handed to grace__h2_respond) and its
 * trailers until they are submitted.  The output buffer is bounded by
 * OUT_TARGET plus one frame and is freed whenever the connection has
 * nothing to write, so an idle connection holds no buffer.
 *
 * Streams are never freed inside a callback chain: a stream that closes is
 * moved to h2->dead and freed by reap() when the outermost public call
 * returns (redis' freeClientAsync idea).  Every nghttp2 callback finds its
 * stream through nghttp2's stream user data, which is cleared the moment a
 * stream closes, so no callback can reach a dead stream.
 */
#include <stdlib.h>
#include <string.h>

#include "http/h2_int.h"

#define DEFAULT_MAX_STREAMS 100u
#define DEFAULT_WINDOW 65535u
#define DEFAULT_CONN_WINDOW (1u << 20)
#define DEFAULT_MAX_HEADER_LIST (64u * 1024)
#define DEFAULT_MAX_SEND_BUFFER (256u * 1024)
#define MAX_WINDOW 0x7fffffffu

/* grace__h2_output stops pulling frames once it holds this many bytes. */
#define OUT_TARGET (48u * 1024)

/* RFC 9113 section 6.5.2: each field counts its name, its value and 32. */
#define FIELD_OVERHEAD 32u

/* The graceful shutdown, in order. */
enum {
  SHUT_NONE,
  SHUT_NOTICE_QUEUED, /* GOAWAY(2^31-1) submitted */
  SHUT_AWAIT_ACK,     /* it is out, and the PING was submitted */
  SHUT_FINAL_PENDING, /* ACK or timeout: final GOAWAY at the next output */
  SHUT_FINAL_QUEUED,  /* final GOAWAY submitted */
  SHUT_FINAL_SENT     /* final GOAWAY handed out */
};

/* ---- allocation ---------------------------------------------------------- */

static void *std_malloc(size_t n, void *ud) {
  (void)ud;
  return malloc(n);
}

static void std_free(void *p, void *ud) {
  (void)ud;
  free(p);
}

static void *std_calloc(size_t n, size_t size, void *ud) {
  (void)ud;
  return calloc(n, size);
}

static void *std_realloc(void *p, size_t n, void *ud) {
  (void)ud;
  return realloc(p, n);
}

static const nghttp2_mem std_mem = {NULL, std_malloc, std_free, std_calloc,
                                    std_realloc};

void *grace__h2_alloc(grace__h2 *h2, size_t n) {
  return h2->mem.malloc(n, h2->mem.mem_user_data);
}

static void *h2_realloc(grace__h2 *h2, void *p, size_t n) {
  return h2->mem.realloc(p, n, h2->mem.mem_user_data);
}

void grace__h2_dealloc(grace__h2 *h2, void *p) {
  if (p != NULL)
    h2->mem.free(p, h2->mem.mem_user_data);
}

/* Grows |*buf| (capacity |*cap|) to hold |need| bytes. */
static int grow(grace__h2 *h2, void **buf, size_t *cap, size_t need) {
  size_t ncap = *cap ? *cap : 256;
  void *np;
  if (need <= *cap)
    return 0;
  while (ncap < need)
    ncap *= 2;
  np = h2_realloc(h2, *buf, ncap);
  if (np == NULL)
    return GRACE_ENOMEM;
  *buf = np;
  *cap = ncap;
  return 0;
}

int grace__h2_map_ng(int rv) {
  switch (rv) {
  case 0:
    return 0;
  case NGHTTP2_ERR_NOMEM:
    return GRACE_ENOMEM;
  case NGHTTP2_ERR_STREAM_CLOSED:
  case NGHTTP2_ERR_STREAM_CLOSING:
  case NGHTTP2_ERR_STREAM_SHUT_WR:
    return GRACE_ECLOSED;
  case NGHTTP2_ERR_INVALID_ARGUMENT:
    return GRACE_EINVAL;
  default:
    return GRACE_ESTATE;
  }
}

/* ---- streams: bookkeeping ------------------------------------------------ */

grace__h2_stream *grace__h2_stream_of(grace__h2 *h2, int32_t id) {
  if (id <= 0 || h2->session_dead)
    return NULL;
  return nghttp2_session_get_stream_user_data(h2->session, id);
}

static void stream_free(grace__h2_stream *s) {
  grace__h2 *h2 = s->h2;
  grace__h2_queue_clear(h2, s);
  grace__h2_dealloc(h2, s->trailers);
  grace__h2_dealloc(h2, s->head);
  grace__h2_dealloc(h2, s);
}

/* Frees the streams that closed during the public call now ending. */
static void reap(grace__h2 *h2) {
  if (h2->busy > 0)
    return;
  while (!grace__list_empty(&h2->dead)) {
    grace__h2_stream *s =
        grace__container_of(h2->dead.next, grace__h2_stream, link);
    grace__list_unlink(&s->link);
    stream_free(s);
  }
}

/* The stream is gone: detach it from nghttp2, tell the application if it
 * holds it, and leave it for reap(). */
static void stream_kill(grace__h2 *h2, grace__h2_stream *s,
                        uint32_t error_code) {
  if (s->flags & SF_CLOSED)
    return;
  s->flags |= SF_CLOSED;
  if (!h2->session_dead)
    nghttp2_session_set_stream_user_data(h2->session, s->id, NULL);
  grace__list_unlink(&s->link);
  grace__list_push(&h2->dead, &s->link);
  h2->nstreams--;
  if ((s->flags & SF_DISPATCHED) && h2->cb.on_stream_close != NULL)
    h2->cb.on_stream_close(s, error_code, h2->user);
}

/* ---- streams: the request ------------------------------------------------- */

/* Answers a request the application never sees (or must stop seeing) with
 * an error status; resets the stream if even that fails. */
static void respond_error(grace__h2 *h2, grace__h2_stream *s, int status) {
  static const grace__h2_header ct[] = {
      {"content-type", "text/plain; charset=utf-8"}};
  const char *text = status == 431 ? "431 Request Header Fields Too Large"
                                   : "413 Request Entity Too Large";
  (void)h2;
  if (grace__h2_respond(s, status, ct, 1, text, strlen(text)) != 0)
    grace__h2_reset(s, NGHTTP2_INTERNAL_ERROR);
}

static int head_append(grace__h2 *h2, grace__h2_stream *s, const void *p,
                       size_t n) {
  void *buf = s->head;
  int rv = grow(h2, &buf, &s->head_cap, s->head_len + n + 1);
  if (rv != 0)
    return rv;
  s->head = buf;
  memcpy(s->head + s->head_len, p, n);
  s->head[s->head_len + n] = '\0';
  s->head_len += n + 1;
  return 0;
}

static uint64_t parse_length(const uint8_t *v, size_t n) {
  uint64_t x = 0;
  if (n == 0)
    return NO_LENGTH;
  for (size_t i = 0; i < n; i++) {
    if (v[i] < '0' || v[i] > '9' || x > (UINT64_MAX - 9) / 10)
      return NO_LENGTH;
    x = x * 10 + (uint64_t)(v[i] - '0');
  }
  return x;
}

/* Appends the split :path; the head is then complete. */
static int finish_head(grace__h2 *h2, grace__h2_stream *s) {
  const char *raw = s->rawpath_off != NONE ? s->head + s->rawpath_off : "";
  size_t rlen = strlen(raw);
  const char *q = memchr(raw, '?', rlen);
  size_t plen = q != NULL ? (size_t)(q - raw) : rlen;
  size_t at = s->head_len;
  int rv;

  s->fields_end = s->head_len;
  /* Reserve room first: appending may move |head|, and |raw| with it. */
  {
    void *buf = s->head;
    rv = grow(h2, &buf, &s->head_cap, s->head_len + rlen + 2);
    if (rv != 0)
      return rv;
    s->head = buf;
    raw = s->rawpath_off != NONE ? s->head + s->rawpath_off : "";
  }
  memcpy(s->head + at, raw, plen);
  s->head[at + plen] = '\0';
  s->path_off = (uint32_t)at;
  if (q != NULL) {
    memcpy(s->head + at + plen + 1, raw + plen + 1, rlen - plen - 1);
    s->head[at + rlen] = '\0';
    s->query_off = (uint32_t)(at + plen + 1);
    s->head_len = at + rlen + 1;
  } else {
    s->head_len = at + plen + 1;
  }
  return 0;
}

static int on_begin_headers(nghttp2_session *session, const nghttp2_frame *f,
                            void *user) {
  grace__h2 *h2 = user;
  grace__h2_stream *s;
  if (f->hd.type != NGHTTP2_HEADERS || f->headers.cat != NGHTTP2_HCAT_REQUEST)
    return 0;
  s = h2->mem.calloc(1, sizeof(*s), h2->mem.mem_user_data);
  if (s == NULL)
    return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE; /* RST INTERNAL_ERROR */
  s->h2 = h2;
  s->id = f->hd.stream_id;
  s->method_off = s->scheme_off = s->authority_off = s->host_off = NONE;
  s->rawpath_off = s->path_off = s->query_off = NONE;
  s->content_length = NO_LENGTH;
  if (nghttp2_session_set_stream_user_data(session, s->id, s) != 0) {
    grace__h2_dealloc(h2, s);
    return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
  }
  grace__list_init(&s->link);
  grace__list_push(&h2->live, &s->link);
  h2->nstreams++;
  return 0;
}

static int on_header(nghttp2_session *session, const nghttp2_frame *f,
                     const uint8_t *name, size_t namelen, const uint8_t *value,
                     size_t valuelen, uint8_t flags, void *user) {
  grace__h2 *h2 = user;
  grace__h2_stream *s;
  uint32_t *slot = NULL;
  size_t at;
  (void)session;
  (void)flags;

  if (f->hd.type != NGHTTP2_HEADERS || f->headers.cat != NGHTTP2_HCAT_REQUEST)
    return 0; /* request trailers are not kept */
  s = grace__h2_stream_of(h2, f->hd.stream_id);
  if (s == NULL || (s->flags & SF_TOO_LARGE))
    return 0;
  /* nghttp2 has validated the field (RFC 9113 section 8.2.1); stored as C
   * strings, a NUL would cut it, so be sure. */
  if (memchr(name, '\0', namelen) != NULL ||
      memchr(value, '\0', valuelen) != NULL)
    return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
  s->header_bytes += namelen + valuelen + FIELD_OVERHEAD;
  if (s->header_bytes > h2->max_header_list) {
    /* Keep decoding (the HPACK state must follow) but keep nothing. */
    s->flags |= SF_TOO_LARGE;
    grace__h2_dealloc(h2, s->head);
    s->head = NULL;
    s->head_len = s->head_cap = 0;
    s->method_off = s->scheme_off = s->authority_off = s->host_off = NONE;
    s->rawpath_off = NONE;
    return 0;
  }
  if (namelen == 7 && memcmp(name, ":method", 7) == 0) {
    slot = &s->method_off;
    if (valuelen == 4 && memcmp(value, "HEAD", 4) == 0)
      s->flags |= SF_HEAD;
  } else if (namelen == 7 && memcmp(name, ":scheme", 7) == 0) {
    slot = &s->scheme_off;
  } else if (namelen == 10 && memcmp(name, ":authority", 10) == 0) {
    slot = &s->authority_off;
  } else if (namelen == 5 && memcmp(name, ":path", 5) == 0) {
    slot = &s->rawpath_off;
  } else if (namelen == 4 && memcmp(name, "host", 4) == 0) {
    if (s->host_off == NONE)
      slot = &s->host_off;
  } else if (namelen == 14 && memcmp(name, "content-length", 14) == 0) {
    s->content_length = parse_length(value, valuelen);
  }
  if (head_append(h2, s, name, namelen) != 0)
    return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
  at = s->head_len;
  if (head_append(h2, s, value, valuelen) != 0)
    return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
  if (slot != NULL)
    *slot = (uint32_t)at;
  return 0;
}

static void request_end(grace__h2 *h2, grace__h2_stream *s) {
  if ((s->flags & (SF_DISPATCHED | SF_CLOSED | SF_BODY_OVER | SF_REQ_ENDED |
                   SF_RESET)) != SF_DISPATCHED)
    return;
  s->flags |= SF_REQ_ENDED;
  if (h2->cb.on_request_end != NULL)
    h2->cb.on_request_end(s, h2->user);
}

static void request_headers(grace__h2 *h2, grace__h2_stream *s,
                            const nghttp2_frame *f) {
  if (s->flags & SF_TOO_LARGE) {
    respond_error(h2, s, 431);
    return;
  }
  if (h2->max_request_body > 0 && s->content_length != NO_LENGTH &&
      s->content_length > h2->max_request_body) {
    s->flags |= SF_BODY_OVER;
    respond_error(h2, s, 413);
    return;
  }
  if (finish_head(h2, s) != 0) {
    nghttp2_submit_rst_stream(h2->session, NGHTTP2_FLAG_NONE, s->id,
                              NGHTTP2_INTERNAL_ERROR);
    return;
  }
  s->flags |= SF_DISPATCHED;
  if (h2->cb.on_request_headers != NULL)
    h2->cb.on_request_headers(s, h2->user);
  if (f->hd.flags & NGHTTP2_FLAG_END_STREAM)
    request_end(h2, s);
}

/* Gives |n| received bytes of |id| back to the peer's windows. */
static int consume_all(grace__h2 *h2, int32_t id, size_t n) {
  int rv = nghttp2_session_consume(h2->session, id, n);
  if (rv != 0 && nghttp2_is_fatal(rv)) {
    h2->cb_error = GRACE_ENOMEM;
    return NGHTTP2_ERR_CALLBACK_FAILURE;
  }
  return 0;
}

static int on_data_chunk(nghttp2_session *session, uint8_t flags, int32_t id,
                         const uint8_t *data, size_t len, void *user) {
  grace__h2 *h2 = user;
  grace__h2_stream *s = grace__h2_stream_of(h2, id);
  (void)session;
  (void)flags;

  if (s == NULL || (s->flags & (SF_CLOSED | SF_BODY_OVER | SF_RESET)) ||
      !(s->flags & SF_DISPATCHED))
    return consume_all(h2, id, len);
  s->body_received += len;
  if (h2->max_request_body > 0 && s->body_received > h2->max_request_body) {
    s->flags |= SF_BODY_OVER;
    if (!(s->flags & (SF_RESPONDED | SF_RESET)))
      respond_error(h2, s, 413);
    else if (!(s->flags & SF_RESET))
      nghttp2_submit_rst_stream(h2->session, NGHTTP2_FLAG_NONE, id,
                                NGHTTP2_CANCEL);
    return consume_all(h2, id, len);
  }
  if (h2->manual_consume) {
    /* The connection window does not wait for the application (grpc-go's
     * decoupling): only the stream's does. */
    int rv = nghttp2_session_consume_connection(h2->session, len);
    if (rv != 0 && nghttp2_is_fatal(rv)) {
      h2->cb_error = GRACE_ENOMEM;
      return NGHTTP2_ERR_CALLBACK_FAILURE;
    }
    s->unconsumed += len;
    if (h2->cb.on_data != NULL)
      h2->cb.on_data(s, data, len, h2->user);
    return 0;
  }
  if (h2->cb.on_data != NULL)
    h2->cb.on_data(s, data, len, h2->user);
  return consume_all(h2, id, len);
}

int grace__h2_stream_consume(grace__h2_stream *s, size_t n) {
  grace__h2 *h2;
  int rv;
  if (s == NULL)
    return GRACE_EINVAL;
  h2 = s->h2;
  if (!h2->manual_consume)
    return GRACE_ESTATE;
  if ((s->flags & SF_CLOSED) || h2->session_dead || h2->forced)
    return GRACE_ECLOSED;
  if (n > s->unconsumed)
    return GRACE_ERANGE;
  rv = nghttp2_session_consume_stream(h2->session, s->id, n);
  if (rv != 0)
    return grace__h2_map_ng(rv);
  s->unconsumed -= n;
  return 0;
}

/* ---- frames in and out ---------------------------------------------------- */

static void id_mark(grace__h2 *h2, int32_t id, int opened) {
  uint32_t bit = ((uint32_t)id / 2) % ID_WINDOW;
  if (opened)
    h2->opened[bit / 64] |= (uint64_t)1 << (bit % 64);
  else
    h2->opened[bit / 64] &= ~((uint64_t)1 << (bit % 64));
}

static int id_opened(const grace__h2 *h2, int32_t id) {
  uint32_t bit = ((uint32_t)id / 2) % ID_WINDOW;
  return (h2->opened[bit / 64] >> (bit % 64)) & 1;
}

/*
 * Every frame header, before nghttp2 acts on the frame.  A client's new
 * stream ids must grow (RFC 9113 section 5.1.1): a HEADERS frame for an id
 * below the highest one used, on a stream that never opened, is a
 * connection error of type PROTOCOL_ERROR.  nghttp2 ignores such a frame
 * (it cannot tell a skipped id from a stream it forgot), so the ids are
 * tracked here.  An id that did open is left to nghttp2: trailers on an
 * open stream, STREAM_CLOSED on one the client closed, and silence on one
 * this side reset (the client may not have seen the RST_STREAM yet).  Ids
 * older than the window are given the benefit of the doubt, as nghttp2
 * does.  Even ids are nghttp2's to refuse.
 */
static int on_begin_frame(nghttp2_session *session, const nghttp2_frame_hd *hd,
                          void *user) {
  grace__h2 *h2 = user;
  int32_t id = hd->stream_id;

  if (hd->type != NGHTTP2_HEADERS || id <= 0 || (id & 1) == 0)
    return 0;
  if (id > h2->max_peer_id) {
    /* Forget what the window drops; the ids skipped never opened. */
    if (((uint32_t)id - (uint32_t)h2->max_peer_id) / 2 >= ID_WINDOW) {
      memset(h2->opened, 0, sizeof(h2->opened));
    } else {
      for (int32_t skipped = h2->max_peer_id + 2; skipped < id; skipped += 2)
        id_mark(h2, skipped, 0);
    }
    id_mark(h2, id, 1);
    h2->max_peer_id = id;
    return 0;
  }
  if ((uint32_t)(h2->max_peer_id - id) / 2 >= ID_WINDOW || id_opened(h2, id))
    return 0;
  /* nghttp2 then ignores the rest of the input and writes the GOAWAY. */
  if (nghttp2_session_terminate_session(session, NGHTTP2_PROTOCOL_ERROR) !=
      0) {
    h2->cb_error = GRACE_ENOMEM;
    return NGHTTP2_ERR_CALLBACK_FAILURE;
  }
  return 0;
}

static int on_frame_recv(nghttp2_session *session, const nghttp2_frame *f,
                         void *user) {
  grace__h2 *h2 = user;
  grace__h2_stream *s;
  (void)session;

  switch (f->hd.type) {
  case NGHTTP2_HEADERS:
    s = grace__h2_stream_of(h2, f->hd.stream_id);
    if (s == NULL)
      return 0;
    if (f->headers.cat == NGHTTP2_HCAT_REQUEST)
      request_headers(h2, s, f);
    else if (f->hd.flags & NGHTTP2_FLAG_END_STREAM)
      request_end(h2, s); /* trailers */
    return 0;
  case NGHTTP2_DATA:
    s = grace__h2_stream_of(h2, f->hd.stream_id);
    if (s != NULL && (f->hd.flags & NGHTTP2_FLAG_END_STREAM))
      request_end(h2, s);
    return 0;
  case NGHTTP2_PING:
    /* grpc-go's handlePing: the ACK of the shutdown PING means every
     * stream the client opened before it saw the GOAWAY has arrived. */
    if ((f->hd.flags & NGHTTP2_FLAG_ACK) && h2->shut == SHUT_AWAIT_ACK &&
        memcmp(f->ping.opaque_data, GRACE__H2_SHUTDOWN_PING, 8) == 0)
      h2->shut = SHUT_FINAL_PENDING;
    return 0;
  default:
    return 0;
  }
}

static int on_frame_send(nghttp2_session *session, const nghttp2_frame *f,
                         void *user) {
  grace__h2 *h2 = user;
  grace__h2_stream *s;

  if (f->hd.type == NGHTTP2_GOAWAY) {
    if (h2->forced)
      return 0;
    if (f->goaway.error_code != NGHTTP2_NO_ERROR) {
      /* nghttp2 answered a connection error of the peer. */
      if (h2->error == 0)
        h2->error = GRACE__H2_EPROTO;
      return 0;
    }
    if (!h2->notice_sent) {
      /* The GOAWAY(2^31-1) is written; ask for the round trip now, so
       * the PING follows it (grpc-go writes them back to back). */
      h2->notice_sent = 1;
      if (h2->shut == SHUT_NOTICE_QUEUED) {
        if (nghttp2_submit_ping(session, NGHTTP2_FLAG_NONE,
                                (const uint8_t *)GRACE__H2_SHUTDOWN_PING) == 0)
          h2->shut = SHUT_AWAIT_ACK;
        else
          h2->shut = SHUT_FINAL_PENDING; /* no PING: go straight on */
      }
    } else if (h2->shut == SHUT_FINAL_QUEUED) {
      h2->shut = SHUT_FINAL_SENT;
    }
    return 0;
  }
  if (f->hd.type != NGHTTP2_HEADERS && f->hd.type != NGHTTP2_DATA)
    return 0;
  s = grace__h2_stream_of(h2, f->hd.stream_id);
  if (s == NULL)
    return 0;
  if ((f->hd.flags & NGHTTP2_FLAG_END_STREAM) &&
      nghttp2_session_get_stream_remote_close(session, s->id) == 0) {
    /* The response is complete and the client is still sending: ask it to
     * stop without error (RFC 9113 section 8.1), as Go's net/http and
     * grpc-go do, so the stream closes now. */
    nghttp2_submit_rst_stream(session, NGHTTP2_FLAG_NONE, s->id,
                              NGHTTP2_NO_ERROR);
  }
  if (f->hd.type == NGHTTP2_DATA && (s->flags & SF_WANT_READY) &&
      s->queued <= h2->max_send_buffer / 2) {
    s->flags &= (uint16_t)~SF_WANT_READY;
    if ((s->flags & SF_DISPATCHED) && h2->cb.on_send_ready != NULL)
      h2->cb.on_send_ready(s, h2->user);
  }
  return 0;
}

static int on_stream_close(nghttp2_session *session, int32_t id,
                           uint32_t error_code, void *user) {
  grace__h2 *h2 = user;
  grace__h2_stream *s = grace__h2_stream_of(h2, id);
  (void)session;
  if (s != NULL)
    stream_kill(h2, s, error_code);
  return 0;
}

/* ---- the connection ------------------------------------------------------- */

int grace__h2_new(const grace__h2_callbacks *cb, void *user,
                  const grace__h2_options *opts, grace__h2 **out) {
  grace__h2_options o;
  nghttp2_session_callbacks *cbs = NULL;
  nghttp2_option *opt = NULL;
  nghttp2_settings_entry iv[3];
  size_t niv = 0;
  grace__h2 *h2;
  int rv;

  if (cb == NULL || out == NULL)
    return GRACE_EINVAL;
  if (opts != NULL)
    o = *opts;
  else
    memset(&o, 0, sizeof(o));
  if (o.max_concurrent_streams == 0)
    o.max_concurrent_streams = DEFAULT_MAX_STREAMS;
  if (o.initial_window == 0)
    o.initial_window = DEFAULT_WINDOW;
  if (o.conn_window == 0)
    o.conn_window = DEFAULT_CONN_WINDOW;
  if (o.max_header_list == 0)
    o.max_header_list = DEFAULT_MAX_HEADER_LIST;
  if (o.max_send_buffer == 0)
    o.max_send_buffer = DEFAULT_MAX_SEND_BUFFER;
  if (o.initial_window > MAX_WINDOW || o.conn_window > MAX_WINDOW ||
      o.conn_window < DEFAULT_WINDOW || o.max_header_list > (1u << 30))
    return GRACE_EINVAL;

  const nghttp2_mem *mem = o.mem != NULL ? o.mem : &std_mem;
  h2 = mem->calloc(1, sizeof(*h2), mem->mem_user_data);
  if (h2 == NULL)
    return GRACE_ENOMEM;
  h2->mem = *mem;
  h2->cb = *cb;
  h2->user = user;
  h2->max_header_list = o.max_header_list;
  h2->max_request_body = o.max_request_body;
  h2->max_send_buffer = o.max_send_buffer;
  h2->manual_consume = o.manual_consume != 0;
  grace__list_init(&h2->live);
  grace__list_init(&h2->dead);
  h2->max_peer_id = -1; /* none yet: the first skipped id is 1 */

  rv = GRACE_ENOMEM;
  if (nghttp2_session_callbacks_new(&cbs) != 0)
    goto fail_h2;
  nghttp2_session_callbacks_set_on_begin_frame_callback(cbs, on_begin_frame);
  nghttp2_session_callbacks_set_on_begin_headers_callback(cbs,
                                                           on_begin_headers);
  nghttp2_session_callbacks_set_on_header_callback(cbs, on_header);
  nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, on_frame_recv);
  nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs,
                                                            on_data_chunk);
  nghttp2_session_callbacks_set_on_frame_send_callback(cbs, on_frame_send);
  nghttp2_session_callbacks_set_on_stream_close_callback(cbs,
                                                         on_stream_close);
  if (nghttp2_option_new(&opt) != 0)
    goto fail_cbs;
  /* Windows are replenished here, as the application takes the bytes. */
  nghttp2_option_set_no_auto_window_update(opt, 1);
  /* Closed streams are kept (nghttp2 keeps at most max_concurrent_streams
   * of them, a few hundred bytes each): only a stream it remembers as
   * closed by the client lets nghttp2 answer a DATA or HEADERS frame on it
   * with STREAM_CLOSED (RFC 9113 section 5.1) instead of ignoring it. */
  if (nghttp2_session_server_new3(&h2->session, cbs, h2, opt, &h2->mem) != 0)
    goto fail_opt;

  iv[niv++] = (nghttp2_settings_entry){NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS,
                                       o.max_concurrent_streams};
  iv[niv++] = (nghttp2_settings_entry){NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE,
                                       o.max_header_list};
  if (o.initial_window != DEFAULT_WINDOW)
    iv[niv++] = (nghttp2_settings_entry){NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE,
                                         o.initial_window};
  if (nghttp2_submit_settings(h2->session, NGHTTP2_FLAG_NONE, iv, niv) != 0)
    goto fail_session;
  if (o.conn_window != DEFAULT_WINDOW &&
      nghttp2_session_set_local_window_size(h2->session, NGHTTP2_FLAG_NONE, 0,
                                            (int32_t)o.conn_window) != 0)
    goto fail_session;

  nghttp2_option_del(opt);
  nghttp2_session_callbacks_del(cbs);
  *out = h2;
  return 0;

fail_session:
  nghttp2_session_del(h2->session);
fail_opt:
  nghttp2_option_del(opt);
fail_cbs:
  nghttp2_session_callbacks_del(cbs);
fail_h2:
  mem->free(h2, mem->mem_user_data);
  return rv;
}

void grace__h2_free(grace__h2 *h2) {
  if (h2 == NULL)
    return;
  h2->busy++;
  while (!grace__list_empty(&h2->live)) {
    grace__h2_stream *s =
        grace__container_of(h2->live.next, grace__h2_stream, link);
    stream_kill(h2, s, NGHTTP2_CANCEL);
  }
  h2->busy--;
  reap(h2);
  nghttp2_session_del(h2->session);
  grace__h2_dealloc(h2, h2->obuf);
  h2->mem.free(h2, h2->mem.mem_user_data);
}

/* nghttp2 failed fatally: the session may only be deleted now. */
static int session_failed(grace__h2 *h2, int ngrv) {
  h2->session_dead = 1;
  if (ngrv == NGHTTP2_ERR_NOMEM)
    h2->error = GRACE_ENOMEM;
  else if (ngrv == NGHTTP2_ERR_CALLBACK_FAILURE && h2->cb_error != 0)
    h2->error = h2->cb_error;
  else
    h2->error = GRACE__H2_EPROTO;
  return h2->error;
}

ssize_t grace__h2_recv(grace__h2 *h2, const uint8_t *data, size_t len) {
  ssize_t rv;
  if (h2 == NULL || (data == NULL && len > 0))
    return GRACE_EINVAL;
  if (h2->busy > 0)
    return GRACE_ESTATE;
  if (h2->error != 0)
    return h2->error;
  if (len == 0)
    return 0;
  if (h2->preface_seen < GRACE__H2_PREFACE_LEN) {
    /* Checked here rather than by nghttp2, whose BAD_CLIENT_MAGIC would
     * leave a session unable to say GOAWAY (RFC 9113 section 3.4). */
    size_t n = GRACE__H2_PREFACE_LEN - h2->preface_seen;
    if (n > len)
      n = len;
    if (memcmp(data, &GRACE__H2_PREFACE[h2->preface_seen], n) != 0) {
      h2->error = GRACE__H2_EPROTO;
      if (nghttp2_session_terminate_session(h2->session,
                                            NGHTTP2_PROTOCOL_ERROR) != 0)
        h2->session_dead = 1;
      return h2->error;
    }
    h2->preface_seen += n;
  }
  h2->busy++;
  rv = nghttp2_session_mem_recv(h2->session, data, len);
  h2->busy--;
  if (rv < 0)
    rv = session_failed(h2, (int)rv);
  reap(h2);
  return rv;
}

/* Appends |n| bytes to the output buffer. */
static int out_append(grace__h2 *h2, const uint8_t *p, size_t n) {
  void *buf = h2->obuf;
  int rv = grow(h2, &buf, &h2->ocap, h2->olen + n);
  if (rv != 0)
    return rv;
  h2->obuf = buf;
  memcpy(h2->obuf + h2->olen, p, n);
  h2->olen += n;
  return 0;
}

int grace__h2_output(grace__h2 *h2, const uint8_t **ptr, size_t *len) {
  int rv = 0;
  if (h2 == NULL || ptr == NULL || len == NULL)
    return GRACE_EINVAL;
  *ptr = NULL;
  *len = 0;
  if (h2->busy > 0)
    return GRACE_ESTATE;
  h2->olen = 0;
  if (h2->session_dead)
    goto done;
  h2->busy++;
  if (h2->shut == SHUT_FINAL_PENDING && !h2->forced) {
    /* Submitted only now, so its last-stream-id counts every stream read
     * until the moment it is written. */
    int32_t last = nghttp2_session_get_last_proc_stream_id(h2->session);
    if (nghttp2_submit_goaway(h2->session, NGHTTP2_FLAG_NONE, last,
                              NGHTTP2_NO_ERROR, NULL, 0) == 0)
      h2->shut = SHUT_FINAL_QUEUED;
    else
      rv = GRACE_ENOMEM; /* retried at the next call */
  }
  while (h2->olen < OUT_TARGET) {
    const uint8_t *p;
    ssize_t n = nghttp2_session_mem_send(h2->session, &p);
    if (n < 0) {
      rv = session_failed(h2, (int)n);
      break;
    }
    if (n == 0)
      break;
    if (out_append(h2, p, (size_t)n) != 0) {
      /* The frame is lost, so the stream of frames is broken. */
      h2->session_dead = 1;
      h2->error = rv = GRACE_ENOMEM;
      break;
    }
  }
  h2->busy--;
  reap(h2);
done:
  if (h2->olen == 0) {
    grace__h2_dealloc(h2, h2->obuf);
    h2->obuf = NULL;
    h2->ocap = 0;
    return rv;
  }
  *ptr = h2->obuf;
  *len = h2->olen;
  return 0;
}

unsigned grace__h2_want_io(const grace__h2 *h2) {
  unsigned want = 0;
  if (h2->session_dead)
    return 0;
  if (nghttp2_session_want_read(h2->session))
    want |= GRACE__H2_WANT_READ;
  if (nghttp2_session_want_write(h2->session) ||
      (h2->shut == SHUT_FINAL_PENDING && !h2->forced))
    want |= GRACE__H2_WANT_WRITE;
  return want;
}

int grace__h2_error(const grace__h2 *h2) { return h2->error; }

size_t grace__h2_stream_count(const grace__h2 *h2) { return h2->nstreams; }

int grace__h2_shutdown_begin(grace__h2 *h2) {
  int rv;
  if (h2->shut != SHUT_NONE || h2->forced || h2->session_dead ||
      h2->error != 0)
    return 0;
  /* GOAWAY(2^31-1, NO_ERROR): nghttp2 keeps accepting streams after it. */
  rv = nghttp2_submit_shutdown_notice(h2->session);
  if (rv != 0)
    return grace__h2_map_ng(rv);
  h2->shut = SHUT_NOTICE_QUEUED;
  return 0;
}

int grace__h2_shutdown_timeout(grace__h2 *h2) {
  if (h2->shut == SHUT_NOTICE_QUEUED || h2->shut == SHUT_AWAIT_ACK)
    h2->shut = SHUT_FINAL_PENDING;
  return 0;
}

int grace__h2_is_drained(const grace__h2 *h2) {
  return h2->shut == SHUT_FINAL_SENT && h2->nstreams == 0;
}

int grace__h2_force_close(grace__h2 *h2, uint32_t error_code) {
  int rv = 0;
  if (h2->forced)
    return 0;
  h2->forced = 1;
  if (h2->error == 0)
    h2->error = GRACE_ECLOSED;
  if (!h2->session_dead &&
      nghttp2_session_terminate_session(h2->session, error_code) != 0) {
    h2->session_dead = 1;
    rv = GRACE_ENOMEM;
  }
  h2->busy++;
  while (!grace__list_empty(&h2->live)) {
    grace__h2_stream *s =
        grace__container_of(h2->live.next, grace__h2_stream, link);
    stream_kill(h2, s, error_code);
  }
  h2->busy--;
  reap(h2);
  return rv;
}
