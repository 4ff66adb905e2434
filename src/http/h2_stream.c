/*
 * The stream side of the HTTP/2 server connection (h2.c): the request
 * accessors and the response (HEADERS, the send queue and its data
 * provider, trailers, RST_STREAM).  See h2.h for the contract and h2.c
 * for the memory and lifetime rules this file follows.
 */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "http/h2_int.h"

/* ---- streams: bookkeeping ------------------------------------------------ */

void grace__h2_queue_clear(grace__h2 *h2, grace__h2_stream *s) {
  chunk *c = s->qhead, *next;
  for (; c != NULL; c = next) {
    next = c->next;
    grace__h2_dealloc(h2, c);
  }
  s->qhead = s->qtail = NULL;
  s->queued = 0;
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

  nghttp2_nv *nv = grace__h2_alloc(h2, count * sizeof(*nv) + bytes);
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
      grace__h2_dealloc(h2, nv);
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
  grace__h2_stream *s = grace__h2_stream_of(h2, id);
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
      grace__h2_dealloc(h2, c);
    }
  }
  s->queued -= n;
  if (s->queued == 0 && (s->flags & SF_DATA_END)) {
    *data_flags |= NGHTTP2_DATA_FLAG_EOF;
    if (s->trailers != NULL) {
      /* nghttp2 allows this inside the callback; it copies the fields. */
      int rv = nghttp2_submit_trailer(session, id, s->trailers, s->ntrailers);
      grace__h2_dealloc(h2, s->trailers);
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
  c = grace__h2_alloc(h2, sizeof(*c) + len);
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
  grace__h2_dealloc(h2, c);
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
  grace__h2_dealloc(h2, nv);
  if (rv != 0)
    return grace__h2_map_ng(rv);
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
    grace__h2_queue_clear(h2, s);
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
    grace__h2_dealloc(h2, s->trailers);
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
  if (rv == NGHTTP2_ERR_NOMEM) {
    /* No memory for the RST_STREAM: a stream that cannot be ended would
     * wait forever, so the connection ends (the transport's flush closes
     * it once the session is dead; every stream on it is then closed). */
    h2->session_dead = 1;
    if (h2->error == 0)
      h2->error = GRACE_ENOMEM;
  }
  if (rv != 0)
    return grace__h2_map_ng(rv);
  s->flags |= SF_RESET;
  grace__h2_queue_clear(h2, s);
  grace__h2_dealloc(h2, s->trailers);
  s->trailers = NULL;
  return 0;
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

int grace__h2_stream_request_ended(const grace__h2_stream *s) {
  return (s->flags & SF_REQ_ENDED) != 0;
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
