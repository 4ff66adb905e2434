/*
 * The HTTP/2 server connection on nghttp2, sans-I/O: see h2.h for the
 * contract.  This file is the glue between nghttp2's callbacks and the
 * application's events; the protocol itself (framing, HPACK, flow-control
 * accounting, stream states, request validation) is nghttp2's.
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
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "http/h2.h"
#include "net/list.h"

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

#define NONE UINT32_MAX
#define NO_LENGTH UINT64_MAX

/* The graceful shutdown, in order. */
enum {
  SHUT_NONE,
  SHUT_NOTICE_QUEUED, /* GOAWAY(2^31-1) submitted */
  SHUT_AWAIT_ACK,     /* it is out, and the PING was submitted */
  SHUT_FINAL_PENDING, /* ACK or timeout: final GOAWAY at the next output */
  SHUT_FINAL_QUEUED,  /* final GOAWAY submitted */
  SHUT_FINAL_SENT     /* final GOAWAY handed out */
};

/* Stream flags. */
enum {
  SF_DISPATCHED = 1 << 0, /* given to on_request_headers */
  SF_CLOSED = 1 << 1,     /* gone: on the dead list */
  SF_TOO_LARGE = 1 << 2,  /* header list over max_header_list */
  SF_BODY_OVER = 1 << 3,  /* body over max_request_body */
  SF_RESPONDED = 1 << 4,  /* response HEADERS submitted */
  SF_DATA_END = 1 << 5,   /* nothing follows the queued bytes */
  SF_DEFERRED = 1 << 6,   /* the data provider returned DEFERRED */
  SF_WANT_READY = 1 << 7, /* a send was refused: on_send_ready owed */
  SF_HEAD = 1 << 8,       /* a HEAD request: no response body */
  SF_REQ_ENDED = 1 << 9,  /* on_request_end fired */
  SF_RESET = 1 << 10      /* grace__h2_reset was called */
};

/* A piece of response body waiting for the data provider. */
typedef struct chunk {
  struct chunk *next;
  size_t len, off;
  uint8_t data[];
} chunk;

struct grace__h2_stream {
  grace__h2 *h2;
  grace__list link; /* in h2->live, then in h2->dead */
  int32_t id;
  uint16_t flags;
  void *data;
  /* The request head: "name\0value\0" for each field as received (pseudo
   * fields included), then, once complete, "path\0" and "query\0". */
  char *head;
  size_t head_len, head_cap;
  size_t fields_end;   /* end of the field pairs in |head| */
  size_t header_bytes; /* the list size as RFC 9113 counts it */
  uint32_t method_off, scheme_off, authority_off, host_off, rawpath_off;
  uint32_t path_off, query_off;
  uint64_t content_length;
  uint64_t body_received;
  size_t unconsumed; /* manual_consume: delivered, not yet consumed */
  /* The response. */
  chunk *qhead, *qtail;
  size_t queued;
  nghttp2_nv *trailers; /* one allocation: the array, then the strings */
  size_t ntrailers;
};

struct grace__h2 {
  nghttp2_session *session;
  grace__h2_callbacks cb;
  void *user;
  nghttp2_mem mem;
  uint32_t max_header_list;
  uint64_t max_request_body;
  size_t max_send_buffer;
  int manual_consume;
  grace__list live; /* open streams */
  grace__list dead; /* closed streams waiting for reap() */
  size_t nstreams;
  int busy;          /* depth of public calls that run callbacks */
  int error;         /* sticky; see grace__h2_recv */
  int cb_error;      /* why a callback failed nghttp2 */
  int session_dead;  /* nghttp2 failed fatally: only _del is allowed */
  int forced;        /* grace__h2_force_close was called */
  int notice_sent;   /* the GOAWAY(2^31-1) is out */
  int shut;          /* SHUT_* */
  size_t preface_seen;
  uint8_t *obuf;
  size_t olen, ocap;
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

static void *h2_alloc(grace__h2 *h2, size_t n) {
  return h2->mem.malloc(n, h2->mem.mem_user_data);
}

static void *h2_realloc(grace__h2 *h2, void *p, size_t n) {
  return h2->mem.realloc(p, n, h2->mem.mem_user_data);
}

static void h2_dealloc(grace__h2 *h2, void *p) {
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

static int map_ng(int rv) {
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

static grace__h2_stream *stream_of(grace__h2 *h2, int32_t id) {
  if (id <= 0 || h2->session_dead)
    return NULL;
  return nghttp2_session_get_stream_user_data(h2->session, id);
}

static void queue_clear(grace__h2 *h2, grace__h2_stream *s) {
  chunk *c = s->qhead, *next;
  for (; c != NULL; c = next) {
    next = c->next;
    h2_dealloc(h2, c);
  }
  s->qhead = s->qtail = NULL;
  s->queued = 0;
}

static void stream_free(grace__h2_stream *s) {
  grace__h2 *h2 = s->h2;
  queue_clear(h2, s);
  h2_dealloc(h2, s->trailers);
  h2_dealloc(h2, s->head);
  h2_dealloc(h2, s);
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

/* Response functions may act on |s|; returns 0 or why not. */
static int stream_usable(const grace__h2_stream *s) {
  if (s == NULL)
    return GRACE_EINVAL;
  if ((s->flags & (SF_CLOSED | SF_RESET)) || s->h2->session_dead ||
      s->h2->forced)
    return GRACE_ECLOSED;
  return 0;
}

/* ---- building header lists ------------------------------------------------ */

static int is_connection_specific(const char *name) {
  static const char *const names[] = {"connection", "keep-alive",
                                      "proxy-connection", "transfer-encoding",
                                      "upgrade"};
  for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
    if (strcasecmp(name, names[i]) == 0)
      return 1;
  return 0;
}

/*
 * Builds an nghttp2 field list in one allocation: ":status" when |status|
 * is nonzero, the fields of |h| with names lower-cased and forbidden ones
 * dropped, and content-length |clen| when |clen| is not NO_LENGTH and |h|
 * has none.  The caller frees |*out| (the array; the strings follow it).
 */
static int build_nv(grace__h2 *h2, int status, const grace__h2_header *h,
                    size_t n, uint64_t clen, nghttp2_nv **out, size_t *outn) {
  char num[2][24];
  size_t bytes = 0, count = 0, i;
  int have_clen = 0;

  if (n > 0 && h == NULL)
    return GRACE_EINVAL;
  for (i = 0; i < n; i++) {
    if (h[i].name == NULL || h[i].value == NULL || h[i].name[0] == '\0' ||
        h[i].name[0] == ':')
      return GRACE_EINVAL;
    if (is_connection_specific(h[i].name))
      continue;
    if (strcasecmp(h[i].name, "content-length") == 0)
      have_clen = 1;
    bytes += strlen(h[i].name) + strlen(h[i].value) + 2;
    count++;
  }
  if (status != 0) {
    snprintf(num[0], sizeof(num[0]), "%d", status);
    bytes += strlen(num[0]) + 1;
    count++;
  }
  if (clen != NO_LENGTH && !have_clen) {
    snprintf(num[1], sizeof(num[1]), "%llu", (unsigned long long)clen);
    bytes += strlen(num[1]) + 1;
    count++;
  } else {
    clen = NO_LENGTH;
  }
  if (count == 0) {
    *out = NULL;
    *outn = 0;
    return 0;
  }

  nghttp2_nv *nv = h2_alloc(h2, count * sizeof(*nv) + bytes);
  if (nv == NULL)
    return GRACE_ENOMEM;
  char *p = (char *)(nv + count);
  size_t k = 0;
  if (status != 0) {
    size_t vl = strlen(num[0]);
    memcpy(p, num[0], vl + 1);
    nv[k++] = (nghttp2_nv){(uint8_t *)(uintptr_t) ":status", (uint8_t *)p, 7,
                           vl, NGHTTP2_NV_FLAG_NO_COPY_NAME};
    p += vl + 1;
  }
  for (i = 0; i < n; i++) {
    size_t nl, vl;
    if (is_connection_specific(h[i].name))
      continue;
    nl = strlen(h[i].name);
    vl = strlen(h[i].value);
    for (size_t j = 0; j < nl; j++) {
      char ch = h[i].name[j];
      p[j] = (ch >= 'A' && ch <= 'Z') ? (char)(ch - 'A' + 'a') : ch;
    }
    p[nl] = '\0';
    memcpy(p + nl + 1, h[i].value, vl + 1);
    if (!nghttp2_check_header_name((const uint8_t *)p, nl) ||
        !nghttp2_check_header_value_rfc9113((const uint8_t *)p + nl + 1,
                                            vl)) {
      h2_dealloc(h2, nv);
      return GRACE_EINVAL;
    }
    nv[k++] = (nghttp2_nv){(uint8_t *)p, (uint8_t *)p + nl + 1, nl, vl,
                           NGHTTP2_NV_FLAG_NONE};
    p += nl + vl + 2;
  }
  if (clen != NO_LENGTH) {
    size_t vl = strlen(num[1]);
    memcpy(p, num[1], vl + 1);
    nv[k++] = (nghttp2_nv){(uint8_t *)(uintptr_t) "content-length",
                           (uint8_t *)p, 14, vl, NGHTTP2_NV_FLAG_NO_COPY_NAME};
  }
  *out = nv;
  *outn = k;
  return 0;
}

/* ---- the data provider ---------------------------------------------------- */

static ssize_t read_body(nghttp2_session *session, int32_t id, uint8_t *buf,
                         size_t length, uint32_t *data_flags,
                         nghttp2_data_source *source, void *user) {
  grace__h2 *h2 = user;
  grace__h2_stream *s = stream_of(h2, id);
  size_t n = 0;
  (void)source;

  if (s == NULL)
    return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
  if (s->flags & SF_RESET) {
    /* The RST_STREAM goes out before any DATA, closing the stream. */
    s->flags |= SF_DEFERRED;
    return NGHTTP2_ERR_DEFERRED;
  }
  while (n < length && s->qhead != NULL) {
    chunk *c = s->qhead;
    size_t take = c->len - c->off;
    if (take > length - n)
      take = length - n;
    memcpy(buf + n, c->data + c->off, take);
    c->off += take;
    n += take;
    if (c->off == c->len) {
      s->qhead = c->next;
      if (s->qhead == NULL)
        s->qtail = NULL;
      h2_dealloc(h2, c);
    }
  }
  s->queued -= n;
  if (s->queued == 0 && (s->flags & SF_DATA_END)) {
    *data_flags |= NGHTTP2_DATA_FLAG_EOF;
    if (s->trailers != NULL) {
      /* nghttp2 allows this inside the callback; it copies the fields. */
      int rv = nghttp2_submit_trailer(session, id, s->trailers, s->ntrailers);
      h2_dealloc(h2, s->trailers);
      s->trailers = NULL;
      if (rv != 0)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE; /* reset the stream */
      *data_flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
    }
    return (ssize_t)n;
  }
  if (n == 0) {
    s->flags |= SF_DEFERRED;
    return NGHTTP2_ERR_DEFERRED;
  }
  return (ssize_t)n;
}

/* Resumes a deferred data provider after bytes or the end were queued. */
static int resume(grace__h2 *h2, grace__h2_stream *s) {
  int rv;
  if (!(s->flags & SF_DEFERRED))
    return 0;
  rv = nghttp2_session_resume_data(h2->session, s->id);
  if (rv == NGHTTP2_ERR_NOMEM)
    return GRACE_ENOMEM;
  s->flags &= (uint16_t)~SF_DEFERRED;
  return 0;
}

/* ---- the response --------------------------------------------------------- */

static int queue_bytes(grace__h2 *h2, grace__h2_stream *s, const void *data,
                       size_t len) {
  chunk *c;
  if (len == 0)
    return 0;
  if (len > SIZE_MAX - sizeof(*c))
    return GRACE_ENOMEM;
  c = h2_alloc(h2, sizeof(*c) + len);
  if (c == NULL)
    return GRACE_ENOMEM;
  c->next = NULL;
  c->len = len;
  c->off = 0;
  memcpy(c->data, data, len);
  if (s->qtail != NULL)
    s->qtail->next = c;
  else
    s->qhead = c;
  s->qtail = c;
  s->queued += len;
  return 0;
}

/* Removes the last chunk, queued by a call that then failed. */
static void unqueue_last(grace__h2 *h2, grace__h2_stream *s) {
  chunk *c = s->qhead, *prev = NULL;
  if (c == NULL)
    return;
  while (c->next != NULL) {
    prev = c;
    c = c->next;
  }
  if (prev != NULL)
    prev->next = NULL;
  else
    s->qhead = NULL;
  s->qtail = prev;
  s->queued -= c->len;
  h2_dealloc(h2, c);
}

static int valid_status(int status) { return status >= 200 && status <= 599; }

/* Submits HEADERS; with |body| false they end the stream. */
static int submit_headers(grace__h2 *h2, grace__h2_stream *s, int status,
                          const grace__h2_header *h, size_t n, uint64_t clen,
                          int body) {
  nghttp2_nv *nv;
  size_t nvlen;
  nghttp2_data_provider prd;
  int rv = build_nv(h2, status, h, n, clen, &nv, &nvlen);
  if (rv != 0)
    return rv;
  prd.source.ptr = NULL;
  prd.read_callback = read_body;
  rv = nghttp2_submit_response(h2->session, s->id, nv, nvlen,
                               body ? &prd : NULL);
  h2_dealloc(h2, nv);
  if (rv != 0)
    return map_ng(rv);
  s->flags |= SF_RESPONDED;
  if (!body)
    s->flags |= SF_DATA_END;
  return 0;
}

int grace__h2_respond_headers(grace__h2_stream *s, int status,
                              const grace__h2_header *h, size_t n) {
  int rv = stream_usable(s);
  if (rv != 0)
    return rv;
  if (!valid_status(status))
    return GRACE_EINVAL;
  if (s->flags & SF_RESPONDED)
    return GRACE_ESTATE;
  return submit_headers(s->h2, s, status, h, n, NO_LENGTH, 1);
}

int grace__h2_respond_trailers_only(grace__h2_stream *s, int status,
                                    const grace__h2_header *h, size_t n) {
  int rv = stream_usable(s);
  if (rv != 0)
    return rv;
  if (!valid_status(status))
    return GRACE_EINVAL;
  if (s->flags & SF_RESPONDED)
    return GRACE_ESTATE;
  return submit_headers(s->h2, s, status, h, n, NO_LENGTH, 0);
}

int grace__h2_respond(grace__h2_stream *s, int status,
                      const grace__h2_header *h, size_t n, const void *body,
                      size_t len) {
  grace__h2 *h2;
  int rv = stream_usable(s);
  int no_body;
  if (rv != 0)
    return rv;
  h2 = s->h2;
  if (!valid_status(status) || (len > 0 && body == NULL))
    return GRACE_EINVAL;
  /* RFC 9110 sections 15.3.5 and 15.4.5: no content, no length. */
  no_body = status == 204 || status == 304;
  if (no_body && len > 0)
    return GRACE_EINVAL;
  if (s->flags & SF_RESPONDED)
    return GRACE_ESTATE;
  if (len == 0 || (s->flags & SF_HEAD))
    return submit_headers(h2, s, status, h, n, no_body ? NO_LENGTH : len, 0);
  rv = queue_bytes(h2, s, body, len);
  if (rv != 0)
    return rv;
  rv = submit_headers(h2, s, status, h, n, len, 1);
  if (rv != 0) {
    queue_clear(h2, s);
    return rv;
  }
  s->flags |= SF_DATA_END;
  return 0;
}

int grace__h2_send_data(grace__h2_stream *s, const void *data, size_t len,
                        int end) {
  grace__h2 *h2;
  uint16_t old;
  int rv = stream_usable(s);
  if (rv != 0)
    return rv;
  h2 = s->h2;
  if (len > 0 && data == NULL)
    return GRACE_EINVAL;
  if (!(s->flags & SF_RESPONDED) || (s->flags & SF_DATA_END))
    return GRACE_ESTATE;
  if (s->flags & SF_HEAD)
    len = 0;
  if (len > 0 && s->queued > 0 &&
      (s->queued > h2->max_send_buffer ||
       len > h2->max_send_buffer - s->queued)) {
    s->flags |= SF_WANT_READY;
    return GRACE_EBUSY;
  }
  rv = queue_bytes(h2, s, data, len);
  if (rv != 0)
    return rv;
  old = s->flags;
  if (end)
    s->flags |= SF_DATA_END;
  if (len > 0 || end) {
    rv = resume(h2, s);
    if (rv != 0) {
      if (len > 0)
        unqueue_last(h2, s);
      s->flags = old;
      return rv;
    }
  }
  return 0;
}

int grace__h2_send_trailers(grace__h2_stream *s, const grace__h2_header *h,
                            size_t n) {
  grace__h2 *h2;
  nghttp2_nv *nv;
  size_t nvlen;
  int rv = stream_usable(s);
  if (rv != 0)
    return rv;
  h2 = s->h2;
  if (!(s->flags & SF_RESPONDED) || (s->flags & SF_DATA_END))
    return GRACE_ESTATE;
  rv = build_nv(h2, 0, h, n, NO_LENGTH, &nv, &nvlen);
  if (rv != 0)
    return rv;
  if (nvlen == 0) /* nothing left to send as trailers: a plain end */
    return grace__h2_send_data(s, NULL, 0, 1);
  s->trailers = nv;
  s->ntrailers = nvlen;
  s->flags |= SF_DATA_END;
  rv = resume(h2, s);
  if (rv != 0) {
    s->flags &= (uint16_t)~SF_DATA_END;
    h2_dealloc(h2, s->trailers);
    s->trailers = NULL;
    return rv;
  }
  return 0;
}

size_t grace__h2_stream_send_queued(const grace__h2_stream *s) {
  return s->queued;
}

int grace__h2_reset(grace__h2_stream *s, uint32_t error_code) {
  grace__h2 *h2;
  int rv = stream_usable(s);
  if (rv != 0)
    return rv;
  h2 = s->h2;
  rv = nghttp2_submit_rst_stream(h2->session, NGHTTP2_FLAG_NONE, s->id,
                                 error_code);
  if (rv != 0)
    return map_ng(rv);
  s->flags |= SF_RESET;
  queue_clear(h2, s);
  h2_dealloc(h2, s->trailers);
  s->trailers = NULL;
  return 0;
}

/* Answers a request the application never sees (or must stop seeing) with
 * an error status; resets the stream if even that fails. */
static void respond_error(grace__h2 *h2, grace__h2_stream *s, int status) {
  static const grace__h2_header ct[] = {
      {"content-type", "text/plain; charset=utf-8"}};
  const char *text = status == 431 ? "431 Request Header Fields Too Large"
                                   : "413 Request Entity Too Large";
  if (grace__h2_respond(s, status, ct, 1, text, strlen(text)) != 0)
    nghttp2_submit_rst_stream(h2->session, NGHTTP2_FLAG_NONE, s->id,
                              NGHTTP2_INTERNAL_ERROR);
}

/* ---- streams: the request ------------------------------------------------- */

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
    h2_dealloc(h2, s);
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
  s = stream_of(h2, f->hd.stream_id);
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
    h2_dealloc(h2, s->head);
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
  grace__h2_stream *s = stream_of(h2, id);
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
    return map_ng(rv);
  s->unconsumed -= n;
  return 0;
}

/* ---- frames in and out ---------------------------------------------------- */

static int on_frame_recv(nghttp2_session *session, const nghttp2_frame *f,
                         void *user) {
  grace__h2 *h2 = user;
  grace__h2_stream *s;
  (void)session;

  switch (f->hd.type) {
  case NGHTTP2_HEADERS:
    s = stream_of(h2, f->hd.stream_id);
    if (s == NULL)
      return 0;
    if (f->headers.cat == NGHTTP2_HCAT_REQUEST)
      request_headers(h2, s, f);
    else if (f->hd.flags & NGHTTP2_FLAG_END_STREAM)
      request_end(h2, s); /* trailers */
    return 0;
  case NGHTTP2_DATA:
    s = stream_of(h2, f->hd.stream_id);
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
  s = stream_of(h2, f->hd.stream_id);
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
  grace__h2_stream *s = stream_of(h2, id);
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

  rv = GRACE_ENOMEM;
  if (nghttp2_session_callbacks_new(&cbs) != 0)
    goto fail_h2;
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
  /* Closed streams are not kept for the RFC 7540 priority tree. */
  nghttp2_option_set_no_closed_streams(opt, 1);
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
  h2_dealloc(h2, h2->obuf);
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
    h2_dealloc(h2, h2->obuf);
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
    return map_ng(rv);
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

/* ---- accessors ------------------------------------------------------------ */

int32_t grace__h2_stream_id(const grace__h2_stream *s) { return s->id; }

grace__h2 *grace__h2_stream_conn(const grace__h2_stream *s) { return s->h2; }

void grace__h2_stream_set_data(grace__h2_stream *s, void *data) {
  s->data = data;
}

void *grace__h2_stream_data(const grace__h2_stream *s) { return s->data; }

static const char *at(const grace__h2_stream *s, uint32_t off) {
  return off != NONE && s->head != NULL ? s->head + off : "";
}

const char *grace__h2_stream_method(const grace__h2_stream *s) {
  return at(s, s->method_off);
}

const char *grace__h2_stream_scheme(const grace__h2_stream *s) {
  return at(s, s->scheme_off);
}

const char *grace__h2_stream_path(const grace__h2_stream *s) {
  return at(s, s->path_off);
}

const char *grace__h2_stream_query(const grace__h2_stream *s) {
  return s->query_off != NONE && s->head != NULL ? s->head + s->query_off
                                                 : NULL;
}

const char *grace__h2_stream_authority(const grace__h2_stream *s) {
  return at(s, s->authority_off != NONE ? s->authority_off : s->host_off);
}

int grace__h2_stream_header_next(const grace__h2_stream *s, size_t *iter,
                                 const char **name, const char **value) {
  size_t i = *iter;
  while (s->head != NULL && i < s->fields_end) {
    const char *n = s->head + i;
    const char *v = n + strlen(n) + 1;
    i = (size_t)(v - s->head) + strlen(v) + 1;
    if (n[0] == ':')
      continue;
    *iter = i;
    *name = n;
    *value = v;
    return 1;
  }
  *iter = i;
  return 0;
}

const char *grace__h2_stream_header(const grace__h2_stream *s,
                                    const char *name) {
  size_t it = 0;
  const char *n, *v;
  while (grace__h2_stream_header_next(s, &it, &n, &v))
    if (strcasecmp(n, name) == 0)
      return v;
  return NULL;
}
