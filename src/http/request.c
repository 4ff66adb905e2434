/*
 * Requests: storage, accessors, routing, and the response bytes.
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "http/internal.h"
#include "http/token.h"

/* ---- dbuf --------------------------------------------------------------- */

int grace__dbuf_reserve(grace__dbuf *b, size_t n, size_t max) {
  if (n > max || b->len > max - n)
    return GRACE_ERANGE;
  if (b->len + n > b->cap) {
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + n)
      cap *= 2;
    char *np = realloc(b->p, cap);
    if (np == NULL)
      return GRACE_ENOMEM;
    b->p = np;
    b->cap = (uint32_t)cap;
  }
  return 0;
}

int grace__dbuf_append(grace__dbuf *b, const void *p, size_t n, size_t max) {
  int rv = grace__dbuf_reserve(b, n, max);
  if (rv != 0)
    return rv;
  if (n > 0)
    memcpy(b->p + b->len, p, n);
  b->len += (uint32_t)n;
  return 0;
}

void grace__dbuf_free(grace__dbuf *b) {
  free(b->p);
  b->p = NULL;
  b->len = b->cap = 0;
}

/* ---- lifecycle ---------------------------------------------------------- */

grace_http_request *grace__req_new(grace_http_server *srv, grace__http_loop *hl,
                                   grace__conn *c, void *proto,
                                   const grace__exch_ops *ops) {
  grace_http_request *req = calloc(1, sizeof(*req));
  if (req == NULL)
    return NULL;
  req->conn = c;
  req->proto = proto;
  req->ops = ops;
  req->srv = srv;
  req->hl = hl;
  req->keep_alive = 1;
  req->minor = 1;
  atomic_init(&req->cancelled, 0);
  atomic_init(&req->ctx, NULL);
  return req;
}

void grace__req_free(grace_http_request *req) {
  if (req->in_cb) {
    /* Ended from inside its own body callback: freed when it returns. */
    req->free_pending = 1;
    return;
  }
  grace__req_fail_wait(req);
  grace__dbuf_free(&req->trailers);
  grace__dbuf_free(&req->head);
  grace__dbuf_free(&req->body);
  grace__dbuf_free(&req->resp_fields);
  free(req->resp_body);
  grace_ctx_unref(atomic_load(&req->ctx));
  free(req);
}

void grace__req_uncount(grace_http_request *req) {
  if (req->counted) {
    req->counted = 0;
    atomic_fetch_sub(&req->srv->st_inflight, 1);
  }
}

void grace__req_done(grace_http_request *req) {
  grace__conn *c = req->conn;
  int held = req->with_handler;
  grace__req_uncount(req);
  grace__req_free(req);
  if (held && c != NULL)
    grace__conn_unref(c);
}

/* Tells the handler holding the request that it is cancelled.  The cancel
 * callback may answer (and free) the request, so nothing touches it after. */
void grace__req_cancel(grace_http_request *req) {
  if (atomic_exchange(&req->cancelled, 1))
    return;
  atomic_fetch_add(&req->srv->sv.reg.cut, 1);
  grace__req_fail_wait(req);
  grace_ctx *ctx = atomic_load(&req->ctx);
  if (ctx != NULL)
    grace_ctx_cancel(ctx);
  if (req->on_cancel != NULL)
    req->on_cancel(req, req->on_cancel_data);
}

static long unescape(const char *s, size_t n, char *out, int plus) {
  size_t o = 0;
  for (size_t i = 0; i < n; i++) {
    if (s[i] == '%') {
      int hi, lo;
      if (i + 2 >= n)
        return -1;
      hi = grace__hexval((unsigned char)s[i + 1]);
      lo = grace__hexval((unsigned char)s[i + 2]);
      if (hi < 0 || lo < 0)
        return -1;
      out[o++] = (char)(hi * 16 + lo);
      i += 2;
    } else if (plus && s[i] == '+') {
      out[o++] = ' ';
    } else {
      out[o++] = s[i];
    }
  }
  return (long)o;
}

/* Called once the headers are complete: records the method and decodes
 * the path; a malformed target sets error_status 400. */
void grace__req_finish_head(grace_http_request *req, const char *method) {
  size_t mlen = strlen(method);
  const char *target = req->head.p ? req->head.p : "";
  size_t tlen = strnlen(target, req->headers_off);
  size_t skip = 0;
  size_t max = req->srv->opts.max_header_bytes * 2 + 64;
  uint32_t at;

  if (req->head.len == 0 || target[0] != '/') {
    /* The absolute form (RFC 9112 section 3.2.2) is what a server must
     * accept from proxies: serve its path.  "*" is OPTIONS'. */
    if (tlen > 7 && (strncasecmp(target, "http://", 7) == 0 ||
                     (tlen > 8 && strncasecmp(target, "https://", 8) == 0))) {
      const char *auth = strstr(target, "://") + 3;
      const char *slash = memchr(auth, '/', tlen - (size_t)(auth - target));
      const char *qm = memchr(auth, '?', tlen - (size_t)(auth - target));
      if (auth == target + tlen || (slash == NULL && qm == NULL) ||
          (qm != NULL && (slash == NULL || qm < slash))) {
        /* "http://host" or "http://host?q": the path is "/". */
        skip = tlen;
        if (qm != NULL)
          skip = (size_t)(qm - target);
      } else {
        skip = (size_t)(slash - target);
      }
    } else if (!(tlen == 1 && target[0] == '*')) {
      req->error_status = 400;
      return;
    }
  }
  const char *q = memchr(target + skip, '?', tlen - skip);
  size_t plen = q ? (size_t)(q - target) - skip : tlen - skip;
  int root = plen == 0; /* an absolute form with no path */
  if (root)
    plen = 1;
  /* The path is copied from the same buffer: reserve first, so the
   * source does not move under the copy. */
  int rv = grace__dbuf_reserve(&req->head, plen + 1 + mlen + 1, max);
  if (rv != 0) {
    req->error_status = rv == GRACE_ENOMEM ? 503 : 431;
    return;
  }
  target = req->head.p;
  at = req->head.len;
  memcpy(req->head.p + at, root ? "/" : target + skip, plen);
  req->head.p[at + plen] = '\0';
  memcpy(req->head.p + at + plen + 1, method, mlen + 1);
  req->head.len += (uint32_t)(plen + 1 + mlen + 1);
  long dl = unescape(req->head.p + at, plen, req->head.p + at, 0);
  if (dl < 0) {
    req->error_status = 400;
    return;
  }
  req->head.p[at + (size_t)dl] = '\0';
  req->path_off = at;
  req->method_off = at + (uint32_t)plen + 1;
}

/* ---- accessors ---------------------------------------------------------- */

const char *grace_http_request_method(grace_http_request *req) {
  return req->head.p + req->method_off;
}

const char *grace_http_request_target(grace_http_request *req) {
  return req->head.p;
}

const char *grace_http_request_path(grace_http_request *req) {
  return req->head.p + req->path_off;
}

int grace_http_request_minor(grace_http_request *req) { return req->minor; }

uv_loop_t *grace_http_request_loop(grace_http_request *req) {
  grace__loop *loop = grace__conn_get_loop(req->conn);
  return loop != NULL ? loop->uv : NULL;
}

grace_http_server *grace_http_request_server(grace_http_request *req) {
  return req->srv;
}

/* Walks the "name\0value\0" pairs of |p| (|len| bytes) from |*iter|:
 * stores the next pair and returns 1, or returns 0 at the end.  Request
 * headers, answer fields and trailers are all kept this way. */
static int pair_next(const char *p, size_t len, size_t *iter, const char **name,
                     const char **value) {
  if (*iter >= len)
    return 0;
  const char *n = p + *iter;
  size_t nl = strlen(n);
  *name = n;
  *value = n + nl + 1;
  *iter += nl + 1 + strlen(*value) + 1;
  return 1;
}

const char *grace_http_request_header(grace_http_request *req,
                                      const char *name) {
  size_t iter = 0;
  const char *n, *v;
  while (grace_http_request_header_next(req, &iter, &n, &v))
    if (strcasecmp(n, name) == 0)
      return v;
  return NULL;
}

const void *grace_http_request_body(grace_http_request *req, size_t *len) {
  if (len)
    *len = req->body.len;
  return req->body.p ? req->body.p : "";
}

int grace_http_request_query(grace_http_request *req, const char *key,
                             char *buf, size_t len) {
  const char *target = req->head.p;
  const char *q = strchr(target, '?');
  size_t klen = strlen(key);
  if (q == NULL)
    return GRACE_ENOENT;
  for (const char *p = q + 1; *p;) {
    const char *amp = strchr(p, '&');
    const char *end = amp ? amp : p + strlen(p);
    const char *eq = memchr(p, '=', (size_t)(end - p));
    const char *kend = eq ? eq : end;
    size_t kl = (size_t)(kend - p);
    char kbuf[256];
    long dk = -1;
    if (kl < sizeof(kbuf))
      dk = unescape(p, kl, kbuf, 1);
    if (dk == (long)klen && memcmp(kbuf, key, klen) == 0) {
      const char *v = eq ? eq + 1 : end;
      size_t vl = (size_t)(end - v);
      char *tmp = malloc(vl + 1);
      if (tmp == NULL)
        return GRACE_ENOMEM;
      long dv = unescape(v, vl, tmp, 1);
      if (dv >= 0) {
        /* Go's ParseQuery skips pairs with bad escapes. */
        if (len > 0) {
          size_t cp = (size_t)dv < len - 1 ? (size_t)dv : len - 1;
          memcpy(buf, tmp, cp);
          buf[cp] = '\0';
        }
        free(tmp);
        return (int)dv;
      }
      free(tmp);
    }
    p = amp ? amp + 1 : end;
  }
  return GRACE_ENOENT;
}

grace_ctx *grace_http_request_ctx(grace_http_request *req) {
  /* Any thread may ask (a handler on the thread pool): the first context
   * made wins, and a cancellation that raced with it is not lost, since
   * both sides check the other's flag after publishing their own. */
  grace_ctx *ctx = atomic_load(&req->ctx);
  if (ctx != NULL)
    return ctx;
  grace_ctx *made;
  if (grace_ctx_with_cancel(req->srv->force_ctx, &made) != 0)
    return NULL;
  grace_ctx *expected = NULL;
  if (!atomic_compare_exchange_strong(&req->ctx, &expected, made)) {
    grace_ctx_unref(made);
    return expected;
  }
  if (atomic_load(&req->cancelled))
    grace_ctx_cancel(made);
  return made;
}

void grace_http_request_on_cancel(grace_http_request *req,
                                  grace_http_handler cb, void *data) {
  req->on_cancel = cb;
  req->on_cancel_data = data;
}

/* ---- answers ------------------------------------------------------------ */

/* A field name: a token (RFC 9110 section 5.1). */
static int valid_field_name(const char *s) {
  if (*s == '\0')
    return 0;
  for (; *s; s++)
    if (!grace__is_tchar((uint8_t)*s))
      return 0;
  return 1;
}

/* A field value: visible characters, spaces, tabs and obs-text; no other
 * control character (RFC 9110 section 5.5), so never CR or LF. */
static int valid_field_value(const char *s) {
  for (; *s; s++)
    if (((uint8_t)*s < 0x20 && *s != '\t') || *s == 0x7f)
      return 0;
  return 1;
}

int grace__is_framing_field(const char *name) {
  static const char *const fields[] = {
      "content-length", "transfer-encoding", "connection", "keep-alive",
      "upgrade",        "proxy-connection",  "te"};
  for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++)
    if (strcasecmp(name, fields[i]) == 0)
      return 1;
  return 0;
}

/* 1 for a field name and value a handler may set. */
static int valid_field(const char *name, const char *value) {
  return name != NULL && value != NULL && valid_field_name(name) &&
         valid_field_value(value);
}

/* Appends the pair |name|, |value| to |b| and counts it in |*count| (at
 * most UINT16_MAX pairs).  Returns 0 or GRACE_ENOMEM. */
static int pair_add(grace__dbuf *b, uint16_t *count, const char *name,
                    const char *value) {
  size_t max = 1u << 20;
  if (*count == UINT16_MAX ||
      grace__dbuf_append(b, name, strlen(name) + 1, max) != 0 ||
      grace__dbuf_append(b, value, strlen(value) + 1, max) != 0)
    return GRACE_ENOMEM;
  (*count)++;
  return 0;
}

int grace_http_response_header(grace_http_request *req, const char *name,
                               const char *value) {
  if (!valid_field(name, value))
    return GRACE_EINVAL;
  /* The library alone frames the message, identically on HTTP/1.1 and
   * HTTP/2: a handler's Content-Length, Transfer-Encoding or Connection
   * would contradict it (and be sent twice), so they are not kept. */
  if (grace__is_framing_field(name))
    return 0;
  int rv = pair_add(&req->resp_fields, &req->nresp, name, value);
  if (rv == 0 && strcasecmp(name, "Content-Type") == 0)
    req->has_content_type = 1;
  return rv;
}

int grace__req_resp_next(const grace_http_request *req, size_t *iter,
                         const char **name, const char **value) {
  return pair_next(req->resp_fields.p, req->resp_fields.len, iter, name, value);
}

int grace__status_no_body(int status) { return status == 204 || status == 304; }

int grace__req_status(const grace_http_request *req) {
  /* An interim (1xx) status is not an answer, and HTTP/2 carries only
   * three digits from 200 up: both versions answer 500 instead. */
  if (req->status < 200 || req->status > 599)
    return 500;
  return req->status;
}

/* The handler's answer reaches the loop: it is no longer in flight (a
 * client that has read the answer sees the counters agree), then the
 * protocol writes it. */
static void finish_on_loop(grace_http_request *req) {
  grace__req_uncount(req);
  req->ops->finish(req);
}

static void on_answer_post(grace__loop *loop, grace__post *post) {
  (void)loop;
  finish_on_loop(grace__container_of(post, grace_http_request, done));
}

static int answer(grace_http_request *req) {
  grace__loop *loop = grace__conn_get_loop(req->conn);
  if (loop == NULL || grace__loop_is_current(loop)) {
    finish_on_loop(req);
  } else {
    req->done.fn = on_answer_post;
    grace__list_init(&req->done.link);
    grace__loop_post(loop, &req->done);
  }
  return 0;
}

int grace_http_respond(grace_http_request *req, int status, const void *body,
                       size_t len) {
  int rv = 0;
  req->status = status;
  if (len > 0) {
    req->resp_body = malloc(len);
    if (req->resp_body == NULL) {
      req->abandoned = 1;
      rv = GRACE_ENOMEM;
    } else {
      memcpy(req->resp_body, body, len);
      req->resp_len = len;
    }
  }
  answer(req);
  return rv;
}

void grace_http_request_abandon(grace_http_request *req) {
  req->abandoned = 1;
  answer(req);
}

typedef struct blocking_job {
  uv_work_t work;
  grace_http_request *req;
  grace_http_handler fn;
  void *data;
} blocking_job;

static void blocking_work(uv_work_t *w) {
  blocking_job *job = w->data;
  job->fn(job->req, job->data);
}

static void blocking_after(uv_work_t *w, int status) {
  (void)status;
  free(w->data);
}

int grace_http_run_blocking(grace_http_request *req, grace_http_handler fn,
                            void *data) {
  blocking_job *job = malloc(sizeof(*job));
  if (job == NULL)
    return GRACE_ENOMEM;
  job->req = req;
  job->fn = fn;
  job->data = data;
  job->work.data = job;
  int rv = uv_queue_work(grace__conn_get_loop(req->conn)->uv, &job->work,
                         blocking_work, blocking_after);
  if (rv != 0)
    free(job);
  return rv;
}

const char *grace_http_status_text(int status) {
  switch (status) {
  case 100:
    return "Continue";
  case 200:
    return "OK";
  case 201:
    return "Created";
  case 202:
    return "Accepted";
  case 204:
    return "No Content";
  case 206:
    return "Partial Content";
  case 301:
    return "Moved Permanently";
  case 302:
    return "Found";
  case 304:
    return "Not Modified";
  case 307:
    return "Temporary Redirect";
  case 308:
    return "Permanent Redirect";
  case 400:
    return "Bad Request";
  case 401:
    return "Unauthorized";
  case 403:
    return "Forbidden";
  case 404:
    return "Not Found";
  case 405:
    return "Method Not Allowed";
  case 408:
    return "Request Timeout";
  case 409:
    return "Conflict";
  case 411:
    return "Length Required";
  case 413:
    return "Request Entity Too Large";
  case 414:
    return "Request URI Too Long";
  case 415:
    return "Unsupported Media Type";
  case 429:
    return "Too Many Requests";
  case 431:
    return "Request Header Fields Too Large";
  case 500:
    return "Internal Server Error";
  case 501:
    return "Not Implemented";
  case 502:
    return "Bad Gateway";
  case 503:
    return "Service Unavailable";
  case 504:
    return "Gateway Timeout";
  case 505:
    return "HTTP Version Not Supported";
  default:
    return "";
  }
}

const char *grace__date_header(grace__http_loop *hl) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME_COARSE, &ts);
  if (ts.tv_sec != hl->date_sec) {
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    strftime(hl->date, sizeof(hl->date), "%a, %d %b %Y %H:%M:%S GMT", &tm);
    hl->date_sec = ts.tv_sec;
  }
  return hl->date;
}

/* ---- routing ------------------------------------------------------------ */

const grace__http_route *grace__req_route(grace_http_request *req) {
  grace_http_server *srv = req->srv;
  if (req->routed)
    return req->route;
  const char *path = grace_http_request_path(req);
  size_t plen = strlen(path);
  const grace__http_route *best = NULL;
  for (size_t i = 0; i < srv->nroutes; i++) {
    const grace__http_route *r = &srv->routes[i];
    int match = r->subtree
                    ? (plen >= r->len && memcmp(path, r->pattern, r->len) == 0)
                    : (plen == r->len && memcmp(path, r->pattern, r->len) == 0);
    if (match && (best == NULL || r->len > best->len))
      best = r;
  }
  req->routed = 1;
  req->route = best;
  return best;
}

int grace__req_streams_body(grace_http_request *req) {
  const grace__http_route *r = grace__req_route(req);
  return r != NULL && r->stream;
}

void grace__req_dispatch(grace_http_request *req) {
  grace_http_server *srv = req->srv;
  req->with_handler = 1;
  req->counted = 1;
  if (req->conn != NULL)
    grace__conn_ref(req->conn);
  atomic_fetch_add(&srv->st_requests, 1);
  atomic_fetch_add(&srv->st_inflight, 1);
  const grace__http_route *best = grace__req_route(req);
  if (best == NULL) {
    static const char nf[] = "404 page not found\n";
    grace_http_respond(req, 404, nf, sizeof(nf) - 1);
    return;
  }
  req->stream_body = (uint8_t)best->stream;
  best->handler(req, best->data);
}

/* ---- exchanges that stream ----------------------------------------------- */

int grace_http_request_header_next(grace_http_request *req, size_t *iter,
                                   const char **name, const char **value) {
  if (req->head.p == NULL)
    return 0;
  return pair_next(req->head.p + req->headers_off,
                   req->headers_end - req->headers_off, iter, name, value);
}

int grace_http_request_peer(grace_http_request *req, struct sockaddr *addr,
                            socklen_t *len) {
  grace__conn *c = req->conn;
  if (c == NULL || c->peer_len == 0)
    return GRACE_ENOENT;
  socklen_t n = c->peer_len < *len ? c->peer_len : *len;
  memcpy(addr, &c->peer, n);
  *len = c->peer_len;
  return 0;
}

/* 1 when the exchange can no longer be written to. */
static int gone(const grace_http_request *req) {
  return atomic_load(&req->cancelled) || grace__conn_closing(req->conn);
}

int grace_http_response_start(grace_http_request *req, int status) {
  if (req->resp_started || req->resp_ended)
    return GRACE_ESTATE;
  req->status = status;
  if (gone(req))
    return GRACE_ECLOSED;
  req->resp_started = 1;
  return req->ops->start(req);
}

int grace_http_response_write(grace_http_request *req, const void *data,
                              size_t len) {
  if (req->resp_ended)
    return GRACE_ESTATE;
  if (!req->resp_started) {
    int rv = grace_http_response_start(req, 200);
    if (rv != 0)
      return rv;
  }
  if (gone(req))
    return GRACE_ECLOSED;
  if (len == 0)
    return 0;
  int rv = req->ops->write(req, data, len);
  if (rv == GRACE_EBUSY)
    req->want_writable = 1;
  return rv;
}

void grace_http_response_on_writable(grace_http_request *req,
                                     grace_http_handler cb, void *data) {
  req->on_writable = cb;
  req->on_writable_data = data;
}

int grace_http_response_trailer(grace_http_request *req, const char *name,
                                const char *value) {
  if (!valid_field(name, value) || grace__is_framing_field(name))
    return GRACE_EINVAL;
  return pair_add(&req->trailers, &req->ntrailers, name, value);
}

int grace__req_trailer_next(const grace_http_request *req, size_t *iter,
                            const char **name, const char **value) {
  return pair_next(req->trailers.p, req->trailers.len, iter, name, value);
}

/* The end of an answer, on the loop thread. */
static void end_on_loop(grace_http_request *req) {
  req->resp_ended = 1;
  if (!req->resp_started) {
    if (req->status == 0)
      req->status = 200;
    finish_on_loop(req);
    return;
  }
  grace__req_uncount(req);
  req->ops->end(req);
}

static void on_end_post(grace__loop *loop, grace__post *post) {
  (void)loop;
  end_on_loop(grace__container_of(post, grace_http_request, done));
}

int grace_http_response_end(grace_http_request *req) {
  grace__loop *loop = grace__conn_get_loop(req->conn);
  if (loop == NULL || grace__loop_is_current(loop)) {
    end_on_loop(req);
  } else {
    req->done.fn = on_end_post;
    grace__list_init(&req->done.link);
    grace__loop_post(loop, &req->done);
  }
  return 0;
}

/* A write from another thread, waiting on the loop until it is accepted.
 * Shared by the writer and the loop (two references); the data is copied
 * so that a writer that gives up may return at once. */
struct grace__wait_write {
  grace__post post;
  grace_http_request *req;
  uint8_t *data;
  size_t len;
  pthread_mutex_t lock;
  int fd; /* eventfd: readable once |rv| is final */
  int rv;
  int done;
  int abandoned;
  atomic_int refs;
};

static void wait_unref(grace__wait_write *w) {
  if (atomic_fetch_sub(&w->refs, 1) != 1)
    return;
  pthread_mutex_destroy(&w->lock);
  close(w->fd);
  free(w->data);
  free(w);
}

/* Finishes |w| with |rv| (on the loop thread) and drops the loop's hold. */
static void wait_complete(grace__wait_write *w, int rv) {
  uint64_t one = 1;
  pthread_mutex_lock(&w->lock);
  w->rv = rv;
  w->done = 1;
  pthread_mutex_unlock(&w->lock);
  if (write(w->fd, &one, sizeof(one)) < 0) {
    /* An eventfd write only fails on overflow, impossible here. */
  }
  wait_unref(w);
}

/* Tries the write of |w| on the loop thread; keeps it pending on
 * GRACE_EBUSY (grace__req_writable retries). */
static void wait_try(grace__wait_write *w) {
  grace_http_request *req = w->req;
  pthread_mutex_lock(&w->lock);
  int abandoned = w->abandoned;
  pthread_mutex_unlock(&w->lock);
  if (abandoned) {
    req->wait = NULL;
    wait_complete(w, GRACE_ECANCELED);
    return;
  }
  int rv = grace_http_response_write(req, w->data, w->len);
  if (rv == GRACE_EBUSY) {
    req->wait = w;
    return;
  }
  req->wait = NULL;
  wait_complete(w, rv);
}

static void on_wait_post(grace__loop *loop, grace__post *post) {
  (void)loop;
  wait_try(grace__container_of(post, grace__wait_write, post));
}

void grace__req_writable(grace_http_request *req) {
  if (!req->want_writable)
    return;
  req->want_writable = 0;
  if (req->wait != NULL) {
    wait_try(req->wait);
    return;
  }
  if (req->on_writable != NULL)
    req->on_writable(req, req->on_writable_data);
}

void grace__req_fail_wait(grace_http_request *req) {
  grace__wait_write *w = req->wait;
  if (w == NULL)
    return;
  req->wait = NULL;
  wait_complete(w, GRACE_ECLOSED);
}

int grace_http_response_write_wait(grace_http_request *req, const void *data,
                                   size_t len, grace_ctx *ctx) {
  grace__loop *loop = grace__conn_get_loop(req->conn);
  if (loop == NULL || grace__loop_is_current(loop))
    return GRACE_ESTATE;
  grace__wait_write *w = calloc(1, sizeof(*w));
  if (w == NULL)
    return GRACE_ENOMEM;
  w->data = malloc(len > 0 ? len : 1);
  w->fd = eventfd(0, EFD_CLOEXEC);
  if (w->data == NULL || w->fd < 0) {
    if (w->fd >= 0)
      close(w->fd);
    free(w->data);
    free(w);
    return GRACE_ENOMEM;
  }
  memcpy(w->data, data, len);
  w->len = len;
  w->req = req;
  pthread_mutex_init(&w->lock, NULL);
  atomic_init(&w->refs, 2);
  w->post.fn = on_wait_post;
  grace__list_init(&w->post.link);
  grace__loop_post(loop, &w->post);

  struct pollfd fds[2] = {{.fd = w->fd, .events = POLLIN}, {.fd = -1}};
  if (ctx != NULL) {
    fds[1].fd = grace_ctx_done_fd(ctx);
    fds[1].events = POLLIN;
  }
  int rv;
  for (;;) {
    if (poll(fds, 2, -1) < 0 && errno != EINTR) {
      rv = -errno;
      break;
    }
    pthread_mutex_lock(&w->lock);
    if (w->done) {
      rv = w->rv;
      pthread_mutex_unlock(&w->lock);
      break;
    }
    if (ctx != NULL && grace_ctx_err(ctx) != 0) {
      /* Nothing was taken: the loop drops it when it gets to it. */
      w->abandoned = 1;
      rv = grace_ctx_err(ctx);
      pthread_mutex_unlock(&w->lock);
      break;
    }
    pthread_mutex_unlock(&w->lock);
  }
  wait_unref(w);
  return rv;
}

/* ---- streamed request bodies --------------------------------------------- */

int grace_http_request_read(grace_http_request *req, grace_http_body_cb cb,
                            void *user) {
  if (!req->stream_body)
    return GRACE_ESTATE;
  req->on_body = cb;
  req->on_body_data = user;
  req->body_paused = 0;
  req->ops->read_body(req);
  return 0;
}

void grace_http_request_resume(grace_http_request *req) {
  if (!req->stream_body || !req->body_paused)
    return;
  req->body_paused = 0;
  req->ops->read_body(req);
}

int grace__req_deliver(grace_http_request *req, const void *p, size_t n,
                       int end) {
  if (req->on_body == NULL || req->body_paused || req->body_ended)
    return 0;
  if (end)
    req->body_ended = 1;
  req->in_cb++;
  int pause = req->on_body(req, p, n, end, req->on_body_data);
  req->in_cb--;
  if (req->free_pending) {
    /* The handler ended the exchange from the callback (an answer, an
     * abandon in its cancel callback): nothing may touch it now. */
    req->free_pending = 0;
    grace__req_free(req);
    return -1;
  }
  if (pause != 0)
    req->body_paused = 1;
  return 1;
}
