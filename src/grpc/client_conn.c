/*
 * grace: the gRPC client channel's connections: dialing, the nghttp2
 * client session callbacks and response handling, and the I/O thread.
 * The design (threads, ownership, connection states) is described in
 * client_int.h; the public API is in client.c.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <nghttp2/nghttp2.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "grace/grpc_client.h"
#include "grpc/client_int.h"
#include "grpc/wire.h"
#include "net/list.h"

/* Our receive windows, stream and connection: one big message need not
 * wait for a WINDOW_UPDATE round trip every 64 KiB. */
#define LOCAL_WINDOW (1 << 20)

#define READ_CHUNK 16384
#define READS_PER_WAKE 64

/* A call is tried at most this often: the first attempt and one
 * transparent retry of a stream the server never processed. */
#define MAX_ATTEMPTS 2

/* ---- Texts ------------------------------------------------------------ */

/* Go's syscall.Errno texts are glibc's with a lower-case first letter
 * ("connection refused", "connection reset by peer", "broken pipe"). */
static const char *errno_text(int err, char *buf, size_t len) {
  const char *s = strerror_r(err, buf, len);

  if (s != buf)
    snprintf(buf, len, "%s", s);
  if (buf[0] >= 'A' && buf[0] <= 'Z' && !(buf[1] >= 'A' && buf[1] <= 'Z'))
    buf[0] = (char)(buf[0] - 'A' + 'a');
  return buf;
}

/* Writes |s| quoted as Go's %q does for the texts used here: '"' and '\'
 * escaped, control bytes as \n, \t, \r or \xNN, everything else kept. */
static void go_quote(char *dst, size_t len, const char *s) {
  static const char hex[] = "0123456789abcdef";
  size_t pos = 0;

#define PUT(c)                                                                 \
  do {                                                                         \
    if (pos + 1 < len)                                                         \
      dst[pos] = (c);                                                          \
    pos++;                                                                     \
  } while (0)
  PUT('"');
  for (; *s != '\0'; s++) {
    unsigned char c = (unsigned char)*s;

    if (c == '"' || c == '\\') {
      PUT('\\');
      PUT((char)c);
    } else if (c == '\n') {
      PUT('\\');
      PUT('n');
    } else if (c == '\t') {
      PUT('\\');
      PUT('t');
    } else if (c == '\r') {
      PUT('\\');
      PUT('r');
    } else if (c < 0x20 || c == 0x7f) {
      PUT('\\');
      PUT('x');
      PUT(hex[c >> 4]);
      PUT(hex[c & 0xf]);
    } else {
      PUT((char)c);
    }
  }
  PUT('"');
#undef PUT
  if (len > 0)
    dst[pos < len ? pos : len - 1] = '\0';
}

/* An address as Go's net package prints it: "127.0.0.1:50051",
 * "[::1]:50051". */
static void addr_text(const struct sockaddr *sa, char *buf, size_t len) {
  char host[INET6_ADDRSTRLEN];

  if (sa->sa_family == AF_INET6) {
    const struct sockaddr_in6 *in6 =
        (const struct sockaddr_in6 *)(const void *)sa;

    inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host));
    snprintf(buf, len, "[%s]:%u", host, (unsigned)ntohs(in6->sin6_port));
  } else if (sa->sa_family == AF_INET) {
    const struct sockaddr_in *in = (const struct sockaddr_in *)(const void *)sa;

    inet_ntop(AF_INET, &in->sin_addr, host, sizeof(host));
    snprintf(buf, len, "%s:%u", host, (unsigned)ntohs(in->sin_port));
  } else {
    snprintf(buf, len, "?");
  }
}

/* Go's http.StatusText for the codes a gRPC peer or proxy may send; ""
 * for others, as Go returns. */
static const char *http_status_text(int code) {
  static const struct {
    int code;
    const char *text;
  } table[] = {
      {200, "OK"},
      {201, "Created"},
      {202, "Accepted"},
      {204, "No Content"},
      {301, "Moved Permanently"},
      {302, "Found"},
      {304, "Not Modified"},
      {307, "Temporary Redirect"},
      {308, "Permanent Redirect"},
      {400, "Bad Request"},
      {401, "Unauthorized"},
      {403, "Forbidden"},
      {404, "Not Found"},
      {405, "Method Not Allowed"},
      {406, "Not Acceptable"},
      {408, "Request Timeout"},
      {409, "Conflict"},
      {410, "Gone"},
      {411, "Length Required"},
      {412, "Precondition Failed"},
      {413, "Request Entity Too Large"},
      {414, "Request URI Too Long"},
      {415, "Unsupported Media Type"},
      {421, "Misdirected Request"},
      {426, "Upgrade Required"},
      {429, "Too Many Requests"},
      {431, "Request Header Fields Too Large"},
      {500, "Internal Server Error"},
      {501, "Not Implemented"},
      {502, "Bad Gateway"},
      {503, "Service Unavailable"},
      {504, "Gateway Timeout"},
      {505, "HTTP Version Not Supported"},
  };
  size_t i;

  for (i = 0; i < sizeof(table) / sizeof(table[0]); i++) {
    if (table[i].code == code)
      return table[i].text;
  }
  return "";
}

/* An HTTP/2 error code as Go's http2.ErrCode.String() prints it. */
static const char *h2_error_name(uint32_t code, char *buf, size_t len) {
  static const char *const names[] = {
      "NO_ERROR",
      "PROTOCOL_ERROR",
      "INTERNAL_ERROR",
      "FLOW_CONTROL_ERROR",
      "SETTINGS_TIMEOUT",
      "STREAM_CLOSED",
      "FRAME_SIZE_ERROR",
      "REFUSED_STREAM",
      "CANCEL",
      "COMPRESSION_ERROR",
      "CONNECT_ERROR",
      "ENHANCE_YOUR_CALM",
      "INADEQUATE_SECURITY",
      "HTTP_1_1_REQUIRED",
  };

  if (code < sizeof(names) / sizeof(names[0]))
    return names[code];
  snprintf(buf, len, "unknown error code 0x%" PRIx32, code);
  return buf;
}

/* ---- Ops ---------------------------------------------------------------- */

void grace__grpc_op_free(op *o) {
  grace_grpc_stream *call = o->call;

  if (call != NULL) {
    grace_grpc_channel *ch = o->ch;

    pthread_mutex_lock(&ch->lock);
    if (call->kicked) {
      grace__list_unlink(&call->kick_link);
      call->kicked = 0;
    }
    if (!call->w.done) {
      /* Cannot happen: every op gets its status before it dies.  Should
       * it, the caller must not wait forever. */
      call->w.code = GRACE_GRPC_INTERNAL;
      call->w.done = 1;
    }
    call->io_done = 1;
    pthread_cond_broadcast(&call->cond);
    pthread_mutex_unlock(&ch->lock);
    grace__grpc_stream_unref(call);
  }
  grace__grpc_md_free(o->h_md, o->h_nmd);
  grace__grpc_reader_free(&o->reader);
  grace_ctx_unref(o->ctx);
  free(o->path);
  free(o->req);
  free(o->msg);
  free(o->h_message);
  free(o);
}

/* Moves |o| to the dead list: it is detached from any stream. */
static void op_retire(op *o) {
  grace__list_unlink(&o->link);
  grace__list_push(&o->ch->dead_ops, &o->link);
  o->conn = NULL;
}

/* Hands the call its status and, for OK, the response.  The waiter is
 * forgotten from here on; the op stays where it is. */
static void op_complete(op *o, uint32_t code, const char *msg, size_t len) {
  grace_grpc_channel *ch = o->ch;
  waiter *w = o->w;
  char *copy = NULL;

  if (w == NULL)
    return;
  if (len > 0) {
    copy = grace__grpc_copy_bytes(msg, len);
    if (copy == NULL)
      len = 0;
  }
  pthread_mutex_lock(&ch->lock);
  w->code = code;
  w->message = copy;
  w->message_len = len;
  if (code == GRACE_GRPC_OK) {
    w->resp = o->msg;
    w->resp_len = o->msg_len;
    o->msg = NULL;
  }
  w->done = 1;
  if (o->call != NULL) {
    grace_grpc_stream *call = o->call;

    /* After a failure, what was not read is dropped (grpc-go's RecvMsg
     * returns the error, not the buffered messages). */
    if (code != GRACE_GRPC_OK) {
      while (call->rq_head != NULL) {
        rmsg *m = call->rq_head;

        call->rq_head = m->next;
        free(m);
      }
      call->rq_tail = NULL;
      call->rq_bytes = 0;
    }
    if (o->h_end) {
      call->trailers = o->h_md;
      call->ntrailers = o->h_nmd;
      o->h_md = NULL;
      o->h_nmd = 0;
    }
    pthread_cond_broadcast(&call->cond);
  } else {
    pthread_cond_broadcast(&ch->cond);
  }
  pthread_mutex_unlock(&ch->lock);
  o->w = NULL;
}

#if defined(__GNUC__)
__attribute__((format(printf, 3, 4)))
#endif
static void
op_completef(op *o, uint32_t code, const char *fmt, ...) {
  char text[TEXT_LEN];
  va_list ap;
  int n;

  va_start(ap, fmt);
  n = vsnprintf(text, sizeof(text), fmt, ap);
  va_end(ap);
  if (n < 0)
    n = 0;
  op_complete(o, code, text,
              (size_t)n < sizeof(text) ? (size_t)n : sizeof(text) - 1);
}

/* Clears what the previous attempt received. */
static void op_reset_attempt(op *o) {
  o->req_off = 0;
  o->not_sent = 0;
  o->sent_body = 0;
  o->deferred = 0;
  o->got_headers = 0;
  o->rst_received = 0;
  o->rst_code = 0;
  o->invalid = 0;
  o->encoding[0] = '\0';
  o->nmsg = 0;
  free(o->msg);
  o->msg = NULL;
  o->msg_len = 0;
  grace__grpc_reader_free(&o->reader);
  grace__grpc_reader_init(&o->reader, o->ch->max_recv, NULL);
}

/* Clears the header block being received. */
static void op_reset_headers(op *o) {
  o->h_status = 0;
  o->h_ct = 0;
  o->h_ct_value[0] = '\0';
  o->h_has_grpc_status = 0;
  o->h_grpc_status_err = 0;
  o->h_grpc_status = 0;
  o->h_grpc_status_raw[0] = '\0';
  free(o->h_message);
  o->h_message = NULL;
  o->h_message_len = 0;
  grace__grpc_md_free(o->h_md, o->h_nmd);
  o->h_md = NULL;
  o->h_nmd = 0;
  o->h_md_bytes = 0;
  o->h_end = 0;
}

/* Resets |o|'s stream with |h2_code| if it is still open. */
static void op_reset_stream(op *o, uint32_t h2_code) {
  if (o->stream_id > 0 && o->conn != NULL && o->conn->session != NULL)
    nghttp2_submit_rst_stream(o->conn->session, NGHTTP2_FLAG_NONE, o->stream_id,
                              h2_code);
}

/* Ends |o| now with the status of |err| (GRACE_ETIMEDOUT or
 * GRACE_ECANCELED) and resets its stream if it has one. */
static void op_abort(op *o, int err) {
  op_complete(o, grace__grpc_ctx_code(err), grace_strerror(err),
              strlen(grace_strerror(err)));
  if (o->stream_id > 0)
    op_reset_stream(o, NGHTTP2_CANCEL);
  else
    op_retire(o);
}

/* The call's context is done: end it now (grpc-go's recvBufferReader
 * returning ctx.Err(), then closeStream with RST_STREAM(CANCEL)). */
static void op_expire(op *o) {
  int err = grace_ctx_err(o->ctx);

  if (o->w == NULL || err == 0)
    return;
  op_abort(o, err);
}

/* ---- Response handling (nghttp2 callbacks) ------------------------------ */

/* The stream ended with |code| and |msg|: finish the call as grpc-go's
 * invoke() sees it (call.go, stream.go csAttempt.recvMsg): a message cut
 * short is "unexpected EOF"; an OK status without a message is a
 * cardinality violation; otherwise the status decides. */
static void op_end(op *o, uint32_t code, const char *msg, size_t len) {
  int err = grace_ctx_err(o->ctx);

  if (err != 0 &&
      (code == GRACE_GRPC_DEADLINE_EXCEEDED || code == GRACE_GRPC_CANCELLED)) {
    /* A server that enforces our grpc-timeout answers DEADLINE_EXCEEDED
     * the moment our own deadline passes; whichever we read first, the
     * call reports its own context's error, as grpc-go's client does
     * when its timer wins (and as handleRSTStream does for CANCEL). */
    op_complete(o, grace__grpc_ctx_code(err), grace_strerror(err),
                strlen(grace_strerror(err)));
  } else if (grace__grpc_reader_is_mid_message(&o->reader)) {
    op_completef(o, GRACE_GRPC_INTERNAL, "unexpected EOF");
  } else if (o->call == NULL && o->nmsg == 0 && code == GRACE_GRPC_OK) {
    op_completef(o, GRACE_GRPC_INTERNAL,
                 "cardinality violation: received no response message from "
                 "non-server-streaming RPC");
  } else {
    op_complete(o, code, msg, len);
  }
  /* The server is done; if we are not, say so (grpc-go: "If client
   * received END_STREAM from server while stream was still active, send
   * RST_STREAM"). */
  if (o->stream_id > 0 && o->conn->session != NULL &&
      nghttp2_session_get_stream_local_close(o->conn->session, o->stream_id) ==
          0)
    op_reset_stream(o, NGHTTP2_NO_ERROR);
}

/* A complete header block arrived (operateHeaders). */
static void op_headers_done(op *o, int end_stream) {
  char quoted[300], detail[TEXT_LEN];
  uint32_t code;
  size_t len;
  int st = o->h_status;

  if (!o->got_headers) {
    if (st >= 100 && st < 200) {
      /* Informational: the real response follows. */
      if (end_stream) {
        op_completef(o, GRACE_GRPC_INTERNAL,
                     "protocol error: informational header with status code "
                     "%d must not have END_STREAM set",
                     st);
        op_reset_stream(o, NGHTTP2_PROTOCOL_ERROR);
      }
      return;
    }
    o->got_headers = 1;
    if (o->h_ct != 1) {
      /* Not a gRPC response: the HTTP status and the content-type say
       * why, joined by "; " as grpc-go joins them. */
      const char *ct_err = "malformed header: missing HTTP content-type";

      if (o->h_ct == -1) {
        go_quote(quoted, sizeof(quoted), o->h_ct_value);
        snprintf(detail, sizeof(detail),
                 "transport: received unexpected content-type %s", quoted);
        ct_err = detail;
      }
      if (st == 0)
        op_completef(o, GRACE_GRPC_INTERNAL,
                     "malformed header: missing HTTP status; %s", ct_err);
      else
        op_completef(o, grace_grpc_code_from_http_status(st),
                     "unexpected HTTP status code received from server: %d "
                     "(%s); %s",
                     st, http_status_text(st), ct_err);
      op_reset_stream(o, NGHTTP2_PROTOCOL_ERROR);
      return;
    }
    if (st != 200 && !o->h_has_grpc_status) {
      /* doc/http-grpc-status-mapping.md: a gRPC-looking response with
       * another HTTP status and no grpc-status gets the mapped code. */
      op_completef(o, grace_grpc_code_from_http_status(st),
                   "unexpected HTTP status code received from server: %d (%s)",
                   st, http_status_text(st));
      op_reset_stream(o, NGHTTP2_PROTOCOL_ERROR);
      return;
    }
    if (!end_stream)
      return;
    /* Trailers-only: this block is the trailers too. */
  }

  if (o->h_grpc_status_err != 0) {
    go_quote(quoted, sizeof(quoted), o->h_grpc_status_raw);
    op_completef(o, GRACE_GRPC_UNKNOWN,
                 "transport: malformed grpc-status: strconv.ParseInt: parsing "
                 "%s: %s",
                 quoted,
                 o->h_grpc_status_err == GRACE_ERANGE ? "value out of range"
                                                      : "invalid syntax");
    op_reset_stream(o, NGHTTP2_PROTOCOL_ERROR);
    return;
  }
  /* A missing grpc-status is UNKNOWN, as in grpc-go. */
  code = o->h_has_grpc_status ? o->h_grpc_status : GRACE_GRPC_UNKNOWN;
  o->h_end = 1; /* this block is the trailers */
  len = 0;
  if (o->h_message != NULL)
    len = grace__grpc_message_decode(o->h_message, o->h_message,
                                     o->h_message_len);
  op_end(o, code, o->h_message, len);
}

static int on_begin_headers(nghttp2_session *session,
                            const nghttp2_frame *frame, void *user_data) {
  op *o;

  (void)user_data;
  if (frame->hd.type != NGHTTP2_HEADERS)
    return 0;
  o = nghttp2_session_get_stream_user_data(session, frame->hd.stream_id);
  if (o != NULL)
    op_reset_headers(o);
  return 0;
}

static int name_is(const uint8_t *name, size_t namelen, const char *want) {
  return namelen == strlen(want) && memcmp(name, want, namelen) == 0;
}

/* Copies |len| bytes of |v| into |dst| (|size| bytes), cut and NUL
 * terminated. */
static void copy_cut(char *dst, size_t size, const uint8_t *v, size_t len) {
  if (len >= size)
    len = size - 1;
  memcpy(dst, v, len);
  dst[len] = '\0';
}

/* Keeps a field of the header block being received, for a streaming
 * call's trailers, within the caps (MAX_TRAILERS, MAX_TRAILER_BYTES). */
static void op_keep_md(op *o, const uint8_t *name, size_t namelen,
                       const uint8_t *value, size_t valuelen) {
  grace_grpc_metadata *md;
  char *n, *v;

  if (o->h_nmd >= MAX_TRAILERS ||
      o->h_md_bytes + namelen + valuelen > MAX_TRAILER_BYTES)
    return;
  if (o->h_nmd % 8 == 0) {
    md = realloc(o->h_md, (o->h_nmd + 8) * sizeof(*md));
    if (md == NULL)
      return;
    o->h_md = md;
  }
  n = grace__grpc_copy_bytes((const char *)name, namelen);
  v = grace__grpc_copy_bytes((const char *)value, valuelen);
  if (n == NULL || v == NULL) {
    free(n);
    free(v);
    return;
  }
  o->h_md[o->h_nmd].name = n;
  o->h_md[o->h_nmd].value = v;
  o->h_md[o->h_nmd].value_len = valuelen;
  o->h_nmd++;
  o->h_md_bytes += namelen + valuelen;
}

static int on_header(nghttp2_session *session, const nghttp2_frame *frame,
                     const uint8_t *name, size_t namelen, const uint8_t *value,
                     size_t valuelen, uint8_t flags, void *user_data) {
  op *o;

  (void)flags;
  (void)user_data;
  if (frame->hd.type != NGHTTP2_HEADERS)
    return 0;
  o = nghttp2_session_get_stream_user_data(session, frame->hd.stream_id);
  if (o == NULL || o->w == NULL)
    return 0;
  if (o->call != NULL && namelen > 0 && name[0] != ':')
    op_keep_md(o, name, namelen, value, valuelen);
  if (name_is(name, namelen, ":status")) {
    /* nghttp2 has checked it is three digits. */
    o->h_status = valuelen == 3 ? (value[0] - '0') * 100 +
                                      (value[1] - '0') * 10 + (value[2] - '0')
                                : 0;
  } else if (name_is(name, namelen, "content-type")) {
    o->h_ct =
        grace__grpc_is_content_type((const char *)value, valuelen, NULL, NULL)
            ? 1
            : -1;
    copy_cut(o->h_ct_value, sizeof(o->h_ct_value), value, valuelen);
  } else if (name_is(name, namelen, "grpc-status")) {
    o->h_has_grpc_status = 1;
    o->h_grpc_status_err = grace_grpc_status_parse((const char *)value,
                                                   valuelen, &o->h_grpc_status);
    copy_cut(o->h_grpc_status_raw, sizeof(o->h_grpc_status_raw), value,
             valuelen);
  } else if (name_is(name, namelen, "grpc-message")) {
    char *p = grace__grpc_copy_bytes((const char *)value, valuelen);

    /* Out of memory, the description is lost, never the status. */
    free(o->h_message);
    o->h_message = p;
    o->h_message_len = p != NULL ? valuelen : 0;
  } else if (name_is(name, namelen, "grpc-encoding") && !o->got_headers) {
    copy_cut(o->encoding, sizeof(o->encoding), value, valuelen);
  }
  return 0;
}

/* Queues a message of a streaming call for its caller.  Returns 0, or -1
 * when the call failed (out of memory). */
static int op_deliver(op *o, const uint8_t *data, size_t len) {
  grace_grpc_stream *call = o->call;
  size_t head = sizeof(rmsg);
  rmsg *m;

  /* One block, the node then the payload; grace_grpc_stream_recv moves the
   * payload to the front and hands the block to the caller. */
  m = malloc(head + len);
  if (m == NULL) {
    op_completef(o, GRACE_GRPC_RESOURCE_EXHAUSTED,
                 "grpc: cannot allocate memory for a message of %zu bytes",
                 len);
    op_reset_stream(o, NGHTTP2_CANCEL);
    return -1;
  }
  m->next = NULL;
  m->len = len;
  if (len > 0)
    memcpy(m->data, data, len);
  pthread_mutex_lock(&o->ch->lock);
  if (call->discard) {
    free(m);
  } else {
    if (call->rq_tail != NULL)
      call->rq_tail->next = m;
    else
      call->rq_head = m;
    call->rq_tail = m;
    call->rq_bytes += len;
    pthread_cond_broadcast(&call->cond);
  }
  pthread_mutex_unlock(&o->ch->lock);
  return 0;
}

/* |len| more DATA bytes of a streaming call were received: its stream
 * window reopens now if the caller keeps up (its queue is under
 * stream_recv_buffer), else once it has read (process_kicks). */
static void op_consume(op *o, size_t len) {
  grace_grpc_stream *call = o->call;
  size_t now = 0;

  pthread_mutex_lock(&o->ch->lock);
  if (call->discard || call->rq_bytes < call->recv_limit) {
    now = len + call->owed;
    call->owed = 0;
  } else {
    call->owed += len;
  }
  pthread_mutex_unlock(&o->ch->lock);
  if (now > 0 && o->stream_id > 0)
    nghttp2_session_consume_stream(o->conn->session, o->stream_id, now);
}

static int on_data_chunk_recv(nghttp2_session *session, uint8_t flags,
                              int32_t stream_id, const uint8_t *data,
                              size_t len, void *user_data) {
  char text[TEXT_LEN];
  grace__grpc_msg msg;
  grace_grpc_code code;
  const char *why;
  size_t used, total;
  op *o;
  int rv;

  (void)flags;
  (void)user_data;
  o = nghttp2_session_get_stream_user_data(session, stream_id);
  /* The session does not reopen windows by itself (conn_start_session):
   * the connection's window reopens as bytes arrive, so that a stalled
   * stream never stalls the others; a streaming call's own window
   * reopens as its caller reads (op_consume), everything else's at once. */
  if (o == NULL || o->w == NULL || !o->got_headers || o->call == NULL) {
    nghttp2_session_consume(session, stream_id, len);
    if (o == NULL || o->w == NULL || !o->got_headers)
      return 0;
  } else {
    nghttp2_session_consume_connection(session, len);
  }
  total = len;
  while (len > 0) {
    rv = grace__grpc_reader_read(&o->reader, data, len, &used, &msg);
    if (rv < 0) {
      /* Too large (RESOURCE_EXHAUSTED), or out of memory. */
      code = grace__grpc_reader_status(&o->reader, &why);
      op_complete(o, code, why, strlen(why));
      op_reset_stream(o, NGHTTP2_CANCEL);
      return 0;
    }
    data += used;
    len -= used;
    if (rv == 0)
      break;
    code = grace__grpc_check_payload(
        msg.flag, o->encoding[0] != '\0' ? o->encoding : NULL, 0, 0, text,
        sizeof(text));
    if (code != GRACE_GRPC_OK) {
      op_complete(o, code, text, strlen(text));
      op_reset_stream(o, NGHTTP2_CANCEL);
      return 0;
    }
    o->nmsg++;
    if (o->call != NULL) {
      if (op_deliver(o, msg.data, msg.len) != 0)
        return 0;
      continue;
    }
    if (o->nmsg > 1) {
      op_completef(o, GRACE_GRPC_INTERNAL,
                   "cardinality violation: expected <EOF> for non "
                   "server-streaming RPCs, but received another message");
      op_reset_stream(o, NGHTTP2_CANCEL);
      return 0;
    }
    o->msg = malloc(msg.len > 0 ? msg.len : 1);
    if (o->msg == NULL) {
      op_completef(o, GRACE_GRPC_RESOURCE_EXHAUSTED,
                   "grpc: cannot allocate memory for a message of %zu bytes",
                   msg.len);
      op_reset_stream(o, NGHTTP2_CANCEL);
      return 0;
    }
    if (msg.len > 0)
      memcpy(o->msg, msg.data, msg.len);
    o->msg_len = msg.len;
  }
  if (o->call != NULL)
    op_consume(o, total);
  return 0;
}

static void conn_on_goaway(conn *c) {
  /* grpc-go's handleGoAway: the transport drains; the channel stops
   * using it for new streams at once.  nghttp2 itself closes the streams
   * above the last-stream-id, with REFUSED_STREAM, right after this. */
  c->goaway = 1;
  if (c->ch->current == c)
    c->ch->current = NULL;
  if (c->state == CONN_READY)
    c->state = CONN_DRAINING;
}

static int on_frame_recv(nghttp2_session *session, const nghttp2_frame *frame,
                         void *user_data) {
  conn *c = user_data;
  op *o;

  switch (frame->hd.type) {
  case NGHTTP2_HEADERS:
    o = nghttp2_session_get_stream_user_data(session, frame->hd.stream_id);
    if (o != NULL && o->w != NULL)
      op_headers_done(o, (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0);
    break;
  case NGHTTP2_DATA:
    o = nghttp2_session_get_stream_user_data(session, frame->hd.stream_id);
    if (o != NULL && o->w != NULL &&
        (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0)
      op_end(o, GRACE_GRPC_INTERNAL,
             "server closed the stream without sending trailers",
             strlen("server closed the stream without sending trailers"));
    break;
  case NGHTTP2_RST_STREAM:
    o = nghttp2_session_get_stream_user_data(session, frame->hd.stream_id);
    if (o != NULL) {
      o->rst_received = 1;
      o->rst_code = frame->rst_stream.error_code;
    }
    break;
  case NGHTTP2_SETTINGS:
    if ((frame->hd.flags & NGHTTP2_FLAG_ACK) == 0)
      c->got_settings = 1;
    break;
  case NGHTTP2_GOAWAY:
    conn_on_goaway(c);
    break;
  default:
    break;
  }
  return 0;
}

/* The stream of |o| is gone from nghttp2 with |error_code|. */
static void op_stream_closed(conn *c, op *o, uint32_t error_code) {
  grace_grpc_channel *ch = c->ch;
  char name[32];
  int64_t dl;
  uint32_t code;

  o->stream_id = 0;
  if (o->w == NULL) {
    op_retire(o);
    return;
  }
  if (error_code == NGHTTP2_REFUSED_STREAM && !o->got_headers &&
      !o->sent_body) {
    /* Refused by a GOAWAY, or by RST_STREAM(REFUSED_STREAM): the server
     * never processed it, so it may go again (grpc-go marks the stream
     * unprocessed and retries it transparently). */
    if (o->attempts < MAX_ATTEMPTS) {
      grace__list_unlink(&o->link);
      grace__list_push(&ch->retry, &o->link);
      o->conn = NULL;
      return;
    }
    if (o->rst_received)
      op_completef(o, GRACE_GRPC_UNAVAILABLE,
                   "stream terminated by RST_STREAM with error code: "
                   "REFUSED_STREAM");
    else
      op_completef(o, GRACE_GRPC_UNAVAILABLE, "the connection is draining");
  } else if (o->rst_received) {
    code = grace_grpc_code_from_h2_error(o->rst_code);
    /* handleRSTStream: a CANCEL after our deadline passed is the
     * deadline's doing. */
    if (code == GRACE_GRPC_CANCELLED && grace_ctx_deadline(o->ctx, &dl) &&
        dl <= grace_now())
      code = GRACE_GRPC_DEADLINE_EXCEEDED;
    op_completef(o, code, "stream terminated by RST_STREAM with error code: %s",
                 h2_error_name(o->rst_code, name, sizeof(name)));
  } else if (error_code != NGHTTP2_NO_ERROR) {
    /* nghttp2 reset it: the response broke HTTP/2's rules (grpc-go's
     * framer StreamError path). */
    op_completef(o, grace_grpc_code_from_h2_error(error_code), "%s",
                 o->invalid != 0 ? nghttp2_strerror(o->invalid)
                                 : "received invalid frame");
  } else {
    op_completef(o, GRACE_GRPC_INTERNAL,
                 "server closed the stream without sending trailers");
  }
  op_retire(o);
}

static int on_stream_close(nghttp2_session *session, int32_t stream_id,
                           uint32_t error_code, void *user_data) {
  op *o = nghttp2_session_get_stream_user_data(session, stream_id);

  if (o != NULL && o->stream_id == stream_id)
    op_stream_closed(user_data, o, error_code);
  return 0;
}

static int on_frame_not_send(nghttp2_session *session,
                             const nghttp2_frame *frame, int lib_error_code,
                             void *user_data) {
  conn *c = user_data;
  grace__list *l;

  (void)session;
  (void)lib_error_code;
  if (frame->hd.type != NGHTTP2_HEADERS)
    return 0;
  /* A request that could not go out (a GOAWAY arrived first).  Whether
   * nghttp2 also reports its stream closed depends on its version, so the
   * op is only marked here, and conn_sweep_unsent() finishes the job. */
  for (l = c->streams.next; l != &c->streams; l = l->next) {
    op *o = grace__container_of(l, op, link);

    if (o->stream_id == frame->hd.stream_id)
      o->not_sent = 1;
  }
  return 0;
}

static int on_invalid_frame_recv(nghttp2_session *session,
                                 const nghttp2_frame *frame, int lib_error_code,
                                 void *user_data) {
  op *o;

  (void)user_data;
  if (frame->hd.stream_id == 0)
    return 0;
  o = nghttp2_session_get_stream_user_data(session, frame->hd.stream_id);
  if (o != NULL)
    o->invalid = lib_error_code;
  return 0;
}

static int on_frame_send(nghttp2_session *session, const nghttp2_frame *frame,
                         void *user_data) {
  conn *c = user_data;

  (void)session;
  if (frame->hd.type == NGHTTP2_GOAWAY) {
    c->sent_goaway = 1;
    c->sent_goaway_code = frame->goaway.error_code;
  }
  return 0;
}

/* The request body: the 5-byte prefix and the message, from the op's copy. */
static ssize_t read_request(nghttp2_session *session, int32_t stream_id,
                            uint8_t *buf, size_t length, uint32_t *data_flags,
                            nghttp2_data_source *source, void *user_data) {
  op *o = source->ptr;
  size_t n = o->req_len - o->req_off;

  (void)session;
  (void)stream_id;
  (void)user_data;
  if (n > length)
    n = length;
  memcpy(buf, o->req + o->req_off, n);
  o->req_off += n;
  if (o->req_off == o->req_len)
    *data_flags |= NGHTTP2_DATA_FLAG_EOF;
  return (ssize_t)n;
}

/* A streaming call's request body: what its caller queued.  An empty
 * queue defers the stream until the caller sends more or half-closes
 * (process_kicks resumes it). */
static ssize_t read_stream(nghttp2_session *session, int32_t stream_id,
                           uint8_t *buf, size_t length, uint32_t *data_flags,
                           nghttp2_data_source *source, void *user_data) {
  op *o = source->ptr;
  grace_grpc_stream *call = o->call;
  size_t n;

  (void)session;
  (void)stream_id;
  (void)user_data;
  pthread_mutex_lock(&o->ch->lock);
  n = call->slen - call->soff;
  if (n > length)
    n = length;
  if (n > 0) {
    memcpy(buf, call->sbuf + call->soff, n);
    call->soff += n;
    if (call->soff == call->slen)
      call->soff = call->slen = 0;
    /* Room in the queue: a sender waiting for it goes on. */
    pthread_cond_broadcast(&call->cond);
    o->sent_body = 1;
  }
  if (call->slen == 0 && call->send_closed) {
    *data_flags |= NGHTTP2_DATA_FLAG_EOF;
  } else if (n == 0) {
    pthread_mutex_unlock(&o->ch->lock);
    o->deferred = 1;
    return NGHTTP2_ERR_DEFERRED;
  }
  pthread_mutex_unlock(&o->ch->lock);
  return (ssize_t)n;
}

/* ---- Connections ----------------------------------------------------------
 */

/* Ends |c|: every call still on it ends with |code| and |msg|, every op is
 * detached, the session, socket and addresses are released.  Loop level
 * only: never from an nghttp2 callback. */
static void conn_fail(conn *c, uint32_t code, const char *msg) {
  grace_grpc_channel *ch = c->ch;
  grace__list *lists[2] = {&c->waiting, &c->streams};
  size_t i;

  if (c->state == CONN_DEAD)
    return;
  snprintf(c->fail_text, sizeof(c->fail_text), "%s", msg);
  for (i = 0; i < 2; i++) {
    while (!grace__list_empty(lists[i])) {
      op *o = grace__container_of(lists[i]->next, op, link);

      op_complete(o, code, msg, strlen(msg));
      o->stream_id = 0;
      op_retire(o);
    }
  }
  if (c->session != NULL) {
    nghttp2_session_del(c->session);
    c->session = NULL;
  }
  if (c->ssl != NULL) {
    SSL_free(c->ssl);
    c->ssl = NULL;
  }
  if (c->fd >= 0) {
    close(c->fd);
    c->fd = -1;
  }
  if (c->addrs != NULL) {
    freeaddrinfo(c->addrs);
    c->addrs = NULL;
  }
  c->state = CONN_DEAD;
  if (ch->current == c)
    ch->current = NULL;
  grace__list_unlink(&c->link);
  grace__list_push(&ch->dead_conns, &c->link);
}

/* A failure while dialing or waiting for the server's preface: the calls
 * get grpc-go's ConnectionError text, `connection error: desc = "..."`. */
static void conn_fail_connecting(conn *c, const char *desc) {
  char quoted[TEXT_LEN - 32], text[TEXT_LEN];

  go_quote(quoted, sizeof(quoted), desc);
  snprintf(text, sizeof(text), "connection error: desc = %s", quoted);
  conn_fail(c, GRACE_GRPC_UNAVAILABLE, text);
}

static void conn_fail_dial(conn *c) {
  char desc[TEXT_LEN - 64];

  snprintf(desc, sizeof(desc), "transport: Error while dialing: %s",
           c->first_err);
  conn_fail_connecting(c, desc);
}

/* Reading failed with |what| ("EOF", "read tcp ...: read: ..."). */
static void conn_fail_read(conn *c, const char *what) {
  char text[TEXT_LEN];

  if (c->state == CONN_HANDSHAKE) {
    snprintf(text, sizeof(text), "error reading server preface: %s", what);
    conn_fail_connecting(c, text);
  } else {
    snprintf(text, sizeof(text), "error reading from server: %s", what);
    conn_fail(c, GRACE_GRPC_UNAVAILABLE, text);
  }
}

#if defined(__GNUC__)
__attribute__((format(printf, 2, 3)))
#endif
static void
conn_dial_error(conn *c, const char *fmt, ...) {
  va_list ap;

  /* Go's dialSerial reports the first error. */
  if (c->first_err[0] != '\0')
    return;
  va_start(ap, fmt);
  vsnprintf(c->first_err, sizeof(c->first_err), fmt, ap);
  va_end(ap);
}

static int conn_start_session(conn *c) {
  nghttp2_session_callbacks *cbs;
  nghttp2_option *opt;
  nghttp2_settings_entry iv[2] = {
      {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
      {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, LOCAL_WINDOW},
  };
  int rv;

  rv = nghttp2_session_callbacks_new(&cbs);
  if (rv != 0)
    return rv;
  nghttp2_session_callbacks_set_on_begin_headers_callback(cbs,
                                                          on_begin_headers);
  nghttp2_session_callbacks_set_on_header_callback(cbs, on_header);
  nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs,
                                                            on_data_chunk_recv);
  nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, on_frame_recv);
  nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_stream_close);
  nghttp2_session_callbacks_set_on_frame_not_send_callback(cbs,
                                                           on_frame_not_send);
  nghttp2_session_callbacks_set_on_invalid_frame_recv_callback(
      cbs, on_invalid_frame_recv);
  nghttp2_session_callbacks_set_on_frame_send_callback(cbs, on_frame_send);
  rv = nghttp2_option_new(&opt);
  if (rv != 0) {
    nghttp2_session_callbacks_del(cbs);
    return rv;
  }
  /* Windows reopen when the data is consumed, not when it arrives
   * (on_data_chunk_recv): that is what bounds a streaming call's memory. */
  nghttp2_option_set_no_auto_window_update(opt, 1);
  rv = nghttp2_session_client_new2(&c->session, cbs, c, opt);
  nghttp2_option_del(opt);
  nghttp2_session_callbacks_del(cbs);
  if (rv != 0)
    return rv;
  rv = nghttp2_submit_settings(c->session, NGHTTP2_FLAG_NONE, iv, 2);
  if (rv == 0)
    rv = nghttp2_session_set_local_window_size(c->session, NGHTTP2_FLAG_NONE, 0,
                                               LOCAL_WINDOW);
  return rv;
}

/* TLS over c->fd, as a client of the channel's context, checking the
 * certificate names tls_server_name (SNI too, unless it is an address).
 * The handshake runs inside the first reads and writes. */
static int conn_tls_start(conn *c) {
  const char *name = c->ch->tls_server_name;
  unsigned char addr[16];
  int is_ip = inet_pton(AF_INET, name, addr) == 1 ||
              inet_pton(AF_INET6, name, addr) == 1;
  SSL *ssl = SSL_new(c->ch->tls_ctx);

  if (ssl == NULL || SSL_set_fd(ssl, c->fd) != 1 ||
      (is_ip ? X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), name) != 1
             /* SSL_set_tlsext_host_name, whose cast drops const. */
             : (SSL_ctrl(ssl, SSL_CTRL_SET_TLSEXT_HOSTNAME,
                         TLSEXT_NAMETYPE_host_name,
                         (void *)(uintptr_t)name) != 1 ||
                SSL_set1_host(ssl, name) != 1))) {
    SSL_free(ssl);
    ERR_clear_error();
    return GRACE_ENOMEM;
  }
  SSL_set_connect_state(ssl);
  c->ssl = ssl;
  return 0;
}

/* What an SSL_read_ex or SSL_write_ex that returned |r| means, as
 * recv/send would say it: 0 for the peer's close_notify, else -1 with
 * errno (EAGAIN: the handshake or the socket wants to wait); EPROTO for a
 * TLS failure, whose reason goes to |why|. */
static ssize_t conn_tls_result(conn *c, int r, char *why, size_t wlen) {
  int e = SSL_get_error(c->ssl, r);
  unsigned long q = ERR_get_error();

  ERR_clear_error();
  if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
    errno = EAGAIN;
    return -1;
  }
  if (e == SSL_ERROR_ZERO_RETURN)
    return 0;
  if (e == SSL_ERROR_SYSCALL && q == 0) {
    if (errno == 0)
      errno = EPIPE;
    return -1;
  }
  if (q != 0)
    ERR_error_string_n(q, why, wlen);
  else
    snprintf(why, wlen, "TLS error %d", e);
  if (SSL_get_verify_result(c->ssl) != X509_V_OK)
    snprintf(why + strlen(why), wlen - strlen(why), " (%s)",
             X509_verify_cert_error_string(SSL_get_verify_result(c->ssl)));
  errno = EPROTO;
  return -1;
}

/* recv(2), or its plaintext under TLS. */
static ssize_t conn_recv(conn *c, void *buf, size_t len, char *why,
                         size_t wlen) {
  size_t got = 0;
  int r;

  if (c->ssl == NULL)
    return recv(c->fd, buf, len, 0);
  ERR_clear_error();
  r = SSL_read_ex(c->ssl, buf, len, &got);
  return r == 1 ? (ssize_t)got : conn_tls_result(c, r, why, wlen);
}

/* send(2) (without SIGPIPE), or through TLS. */
static ssize_t conn_send(conn *c, const void *p, size_t len, char *why,
                         size_t wlen) {
  size_t done = 0;
  int r;

  if (c->ssl == NULL)
    return send(c->fd, p, len, MSG_NOSIGNAL | MSG_DONTWAIT);
  ERR_clear_error();
  r = SSL_write_ex(c->ssl, p, len, &done);
  if (r == 1)
    return (ssize_t)done;
  if (conn_tls_result(c, r, why, wlen) == 0)
    errno = EPIPE; /* the peer's close_notify: it takes nothing more */
  return -1;
}

/* A TLS failure: before the handshake is done it is grpc-go's
 * "authentication handshake failed"; after, an I/O error. */
static void conn_fail_tls(conn *c, const char *why) {
  char text[TEXT_LEN - 64];

  if (!SSL_is_init_finished(c->ssl)) {
    snprintf(text, sizeof(text),
             "transport: authentication handshake failed: %s", why);
    conn_fail_connecting(c, text);
  } else {
    snprintf(text, sizeof(text), "%s: tls: %s", c->names, why);
    conn_fail_read(c, text);
  }
}

/* The TCP connection is up on c->fd. */
static void conn_connected(conn *c) {
  struct sockaddr_storage ss;
  socklen_t sl = sizeof(ss);
  char local[64] = "?";
  int rv;

  if (getsockname(c->fd, (struct sockaddr *)&ss, &sl) == 0)
    addr_text((struct sockaddr *)&ss, local, sizeof(local));
  snprintf(c->names, sizeof(c->names), "tcp %s->%s", local, c->cur_addr);
  freeaddrinfo(c->addrs);
  c->addrs = NULL;
  c->next_addr = NULL;
  c->state = CONN_HANDSHAKE;
  if (c->ch->tls_ctx != NULL && conn_tls_start(c) != 0) {
    conn_fail_connecting(c, "transport: cannot start TLS: out of memory");
    return;
  }
  rv = conn_start_session(c);
  if (rv != 0) {
    char text[TEXT_LEN];

    snprintf(text, sizeof(text), "transport: cannot start HTTP/2: %s",
             nghttp2_strerror(rv));
    conn_fail_connecting(c, text);
  }
}

/* Tries the remaining addresses until one connects or is connecting. */
static void conn_try_next(conn *c) {
  char err[128];
  struct addrinfo *ai;
  int fd, one = 1;

  while (c->next_addr != NULL) {
    ai = c->next_addr;
    c->next_addr = ai->ai_next;
    addr_text(ai->ai_addr, c->cur_addr, sizeof(c->cur_addr));
    fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
                ai->ai_protocol);
    if (fd < 0) {
      conn_dial_error(c, "dial tcp %s: socket: %s", c->cur_addr,
                      errno_text(errno, err, sizeof(err)));
      continue;
    }
    /* grpc-go's connections are TCP_NODELAY, as all of Go's. */
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0) {
      c->fd = fd;
      conn_connected(c);
      return;
    }
    if (errno == EINPROGRESS || errno == EINTR) {
      c->fd = fd;
      c->state = CONN_CONNECTING;
      return;
    }
    conn_dial_error(c, "dial tcp %s: connect: %s", c->cur_addr,
                    errno_text(errno, err, sizeof(err)));
    close(fd);
  }
  conn_fail_dial(c);
}

/* The non-blocking connect(2) on c->fd finished, one way or the other. */
static void conn_connect_done(conn *c) {
  char text[128];
  socklen_t len = sizeof(int);
  int err = 0;

  if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0)
    err = errno;
  if (err == 0) {
    conn_connected(c);
    return;
  }
  conn_dial_error(c, "dial tcp %s: connect: %s", c->cur_addr,
                  errno_text(err, text, sizeof(text)));
  close(c->fd);
  c->fd = -1;
  conn_try_next(c);
}

/* Starts a new connection to the channel's target.  Returns NULL if out of
 * memory; otherwise the connection, which may already be DEAD (every
 * address failed at once), with its reason in fail_text. */
static conn *conn_dial(grace_grpc_channel *ch) {
  struct addrinfo hints;
  conn *c = calloc(1, sizeof(*c));
  int rv;

  if (c == NULL)
    return NULL;
  c->ch = ch;
  c->fd = -1;
  grace__list_init(&c->waiting);
  grace__list_init(&c->streams);
  grace__list_push(&ch->conns, &c->link);
  c->deadline = grace_now() + ch->connect_timeout;
  memset(&hints, 0, sizeof(hints));
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  /* Blocking, on the I/O thread: the channel's calls wait for it anyway,
   * and "localhost" or an address needs no DNS round trip. */
  rv = getaddrinfo(ch->host, ch->port, &hints, &c->addrs);
  if (rv != 0) {
    /* Go prints a missing name as "no such host". */
    const char *why = rv == EAI_NONAME
#ifdef EAI_NODATA
                              || rv == EAI_NODATA
#endif
                          ? "no such host"
                          : gai_strerror(rv);

    c->addrs = NULL;
    conn_dial_error(c, "dial tcp: lookup %s: %s", ch->host, why);
    conn_fail_dial(c);
    return c;
  }
  c->next_addr = c->addrs;
  conn_try_next(c);
  return c;
}

/* nghttp2_nv wants non-const pointers; nghttp2 copies and never writes
 * through them (nghttp2_submit_request). */
static uint8_t *nv_bytes(const char *s) { return (uint8_t *)(uintptr_t)s; }

/* Submits |o| as a stream on the READY connection |c|. */
static void op_submit(conn *c, op *o) {
  grace_grpc_channel *ch = c->ch;
  char timeout[GRACE__GRPC_TIMEOUT_BUFLEN];
  nghttp2_data_provider prd;
  nghttp2_nv nva[8];
  size_t n = 0;
  int64_t dl;
  int32_t id;

#define NV(k, v)                                                               \
  do {                                                                         \
    nva[n].name = nv_bytes(k);                                                 \
    nva[n].namelen = strlen(k);                                                \
    nva[n].value = nv_bytes(v);                                                \
    nva[n].valuelen = strlen(v);                                               \
    nva[n].flags = NGHTTP2_NV_FLAG_NONE;                                       \
    n++;                                                                       \
  } while (0)
  /* createHeaderFields, in its order. */
  NV(":method", "POST");
  NV(":scheme", "http");
  NV(":path", o->path);
  NV(":authority", ch->authority);
  NV("content-type", "application/grpc");
  NV("user-agent", ch->user_agent);
  NV("te", "trailers");
  if (grace_ctx_deadline(o->ctx, &dl)) {
    grace_duration left = dl - grace_now();

    if (left <= 0) {
      op_complete(o, GRACE_GRPC_DEADLINE_EXCEEDED,
                  grace_strerror(GRACE_ETIMEDOUT),
                  strlen(grace_strerror(GRACE_ETIMEDOUT)));
      op_retire(o);
      return;
    }
    grace__grpc_timeout_encode(left, timeout);
    NV("grpc-timeout", timeout);
  }
#undef NV
  op_reset_attempt(o);
  op_reset_headers(o);
  memset(&prd, 0, sizeof(prd));
  prd.source.ptr = o;
  prd.read_callback = o->call != NULL ? read_stream : read_request;
  id = nghttp2_submit_request(c->session, NULL, nva, n, &prd, o);
  if (id == NGHTTP2_ERR_STREAM_ID_NOT_AVAILABLE) {
    /* Stream ids ran out: this connection can only drain now. */
    conn_on_goaway(c);
    grace__list_unlink(&o->link);
    grace__list_push(&ch->retry, &o->link);
    o->conn = NULL;
    return;
  }
  if (id < 0) {
    op_completef(o, GRACE_GRPC_INTERNAL, "grpc: cannot start a stream: %s",
                 nghttp2_strerror(id));
    op_retire(o);
    return;
  }
  o->attempts++;
  o->stream_id = id;
  o->conn = c;
  grace__list_unlink(&o->link);
  grace__list_push(&c->streams, &o->link);
}

/* After the server's SETTINGS: the handshake is over, the waiting calls
 * go out (or elsewhere, if a GOAWAY came with it). */
static void conn_after_recv(conn *c) {
  grace_grpc_channel *ch = c->ch;

  if (c->state != CONN_HANDSHAKE || !c->got_settings)
    return;
  c->state = c->goaway ? CONN_DRAINING : CONN_READY;
  c->deadline = 0;
  while (!grace__list_empty(&c->waiting)) {
    op *o = grace__container_of(c->waiting.next, op, link);

    if (c->state == CONN_READY) {
      op_submit(c, o);
    } else if (++o->attempts < MAX_ATTEMPTS) {
      /* A GOAWAY before the first stream: another connection, once, so
       * a server that refuses every connection cannot keep us dialing. */
      grace__list_unlink(&o->link);
      grace__list_push(&ch->retry, &o->link);
      o->conn = NULL;
    } else {
      op_completef(o, GRACE_GRPC_UNAVAILABLE, "the connection is draining");
      op_retire(o);
    }
  }
}

static void conn_read(conn *c) {
  char text[256], err[128], why[160] = "";
  uint8_t buf[READ_CHUNK];
  ssize_t n, rv;
  int i;

  for (i = 0; i < READS_PER_WAKE && c->state != CONN_DEAD; i++) {
    n = conn_recv(c, buf, sizeof(buf), why, sizeof(why));
    if (n > 0) {
      rv = nghttp2_session_mem_recv(c->session, buf, (size_t)n);
      if (rv < 0) {
        conn_fail_read(c, nghttp2_strerror((int)rv));
        return;
      }
      conn_after_recv(c);
      continue;
    }
    if (n == 0) {
      conn_fail_read(c, "EOF");
      return;
    }
    if (errno == EINTR)
      continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK)
      return;
    if (errno == EPROTO && c->ssl != NULL) {
      conn_fail_tls(c, why);
      return;
    }
    snprintf(text, sizeof(text), "read %s: read: %s", c->names,
             errno_text(errno, err, sizeof(err)));
    conn_fail_read(c, text);
    return;
  }
}

/* Writes what nghttp2 has to send until the socket is full. */
static void conn_flush(conn *c) {
  char text[256], err[128], why[160] = "";
  ssize_t n;
  int e;

  while (c->state != CONN_DEAD) {
    if (c->out_len == 0) {
      n = nghttp2_session_mem_send(c->session, &c->out);
      if (n < 0) {
        snprintf(text, sizeof(text), "grpc: HTTP/2 session failed: %s",
                 nghttp2_strerror((int)n));
        conn_fail(c, GRACE_GRPC_INTERNAL, text);
        return;
      }
      if (n == 0)
        return;
      c->out_len = (size_t)n;
    }
    n = conn_send(c, c->out, c->out_len, why, sizeof(why));
    if (n < 0) {
      e = errno;
      if (e == EINTR)
        continue;
      if (e == EAGAIN || e == EWOULDBLOCK)
        return;
      if (e == EPROTO && c->ssl != NULL) {
        conn_fail_tls(c, why);
        return;
      }
      /* The peer is gone.  What it sent before going (a response, a
       * GOAWAY, the reason of a reset) is read first, and usually ends
       * the connection with the better description. */
      conn_read(c);
      if (c->state == CONN_DEAD)
        return;
      snprintf(text, sizeof(text), "write %s: write: %s", c->names,
               errno_text(e, err, sizeof(err)));
      if (c->state == CONN_HANDSHAKE) {
        char desc[TEXT_LEN - 64];

        snprintf(desc, sizeof(desc),
                 "transport: failed to write client preface: %s", text);
        conn_fail_connecting(c, desc);
      } else {
        char msg[TEXT_LEN];

        snprintf(msg, sizeof(msg), "error writing to server: %s", text);
        conn_fail(c, GRACE_GRPC_UNAVAILABLE, msg);
      }
      return;
    }
    c->out += n;
    c->out_len -= (size_t)n;
  }
}

/* Ops whose request HEADERS nghttp2 refused to send and whose stream it
 * did not report closed: they were never seen by the server. */
static void conn_sweep_unsent(conn *c) {
  grace__list *l, *next;

  for (l = c->streams.next; l != &c->streams; l = next) {
    op *o = grace__container_of(l, op, link);

    next = l->next;
    if (o->not_sent &&
        nghttp2_session_find_stream(c->session, o->stream_id) == NULL)
      op_stream_closed(c, o, NGHTTP2_REFUSED_STREAM);
  }
}

/* Flushes |c| and closes it if it is done: a draining connection with no
 * stream left, or a session nghttp2 has ended (it sent or received a
 * GOAWAY and nothing is left to do). */
static void conn_service(conn *c) {
  char text[TEXT_LEN], name[32];

  if (c->state == CONN_CONNECTING || c->state == CONN_DEAD)
    return;
  conn_flush(c);
  if (c->state == CONN_DEAD)
    return;
  conn_sweep_unsent(c);
  if (c->state == CONN_DRAINING && grace__list_empty(&c->streams) &&
      grace__list_empty(&c->waiting) && c->out_len == 0) {
    /* grpc-go: "no active streams left to process while draining". */
    conn_fail(c, GRACE_GRPC_UNAVAILABLE, "the connection is draining");
    return;
  }
  if (c->out_len == 0 && !nghttp2_session_want_read(c->session) &&
      !nghttp2_session_want_write(c->session)) {
    if (c->sent_goaway)
      snprintf(text, sizeof(text),
               "error reading from server: connection error: %s",
               h2_error_name(c->sent_goaway_code, name, sizeof(name)));
    else
      snprintf(text, sizeof(text), "error reading from server: EOF");
    conn_fail(c, GRACE_GRPC_UNAVAILABLE, text);
  }
}

/* Writes what the socket takes without blocking, ignoring errors: the
 * last words (a GOAWAY) of a connection being closed. */
static void conn_flush_quietly(conn *c) {
  const uint8_t *p;
  ssize_t n;

  if (c->session == NULL || c->fd < 0)
    return;
  for (;;) {
    if (c->out_len == 0) {
      n = nghttp2_session_mem_send(c->session, &p);
      if (n <= 0)
        return;
      c->out = p;
      c->out_len = (size_t)n;
    }
    char why[160];
    n = conn_send(c, c->out, c->out_len, why, sizeof(why));
    if (n <= 0)
      return;
    c->out += n;
    c->out_len -= (size_t)n;
  }
}

/* ---- The I/O thread ---------------------------------------------------- */

/* Starts (or restarts) |o| on the channel's current connection, dialing
 * one if there is none. */
static void op_start(grace_grpc_channel *ch, op *o) {
  conn *c;
  int err;

  err = grace_ctx_err(o->ctx);
  if (err != 0) {
    op_complete(o, grace__grpc_ctx_code(err), grace_strerror(err),
                strlen(grace_strerror(err)));
    op_retire(o);
    return;
  }
  c = ch->current;
  if (c == NULL) {
    c = conn_dial(ch);
    if (c == NULL) {
      op_completef(o, GRACE_GRPC_UNAVAILABLE,
                   "connection error: desc = \"grace: out of memory\"");
      op_retire(o);
      return;
    }
    if (c->state == CONN_DEAD) {
      op_complete(o, GRACE_GRPC_UNAVAILABLE, c->fail_text,
                  strlen(c->fail_text));
      op_retire(o);
      return;
    }
    ch->current = c;
  }
  o->conn = c;
  if (c->state == CONN_READY) {
    op_submit(c, o);
  } else {
    grace__list_unlink(&o->link);
    grace__list_push(&c->waiting, &o->link);
  }
}

/* Acts on what callers of streaming calls asked for since the last time:
 * cancellation, data to send or a half-close (resume the deferred data
 * provider), window to reopen. */
static void process_kicks(grace_grpc_channel *ch) {
  pthread_mutex_lock(&ch->lock);
  while (!grace__list_empty(&ch->kicked)) {
    grace_grpc_stream *call =
        grace__container_of(ch->kicked.next, grace_grpc_stream, kick_link);
    op *o = call->op;
    size_t release = 0;
    int cancel;

    grace__list_unlink(&call->kick_link);
    call->kicked = 0;
    cancel = call->cancel;
    if (call->discard || call->rq_bytes < call->recv_limit) {
      release = call->owed;
      call->owed = 0;
    }
    pthread_mutex_unlock(&ch->lock);
    if (cancel && o->w != NULL) {
      op_abort(o, GRACE_ECANCELED);
    } else if (o->stream_id > 0 && o->conn != NULL &&
               o->conn->session != NULL) {
      if (release > 0)
        nghttp2_session_consume_stream(o->conn->session, o->stream_id, release);
      if (o->deferred) {
        o->deferred = 0;
        nghttp2_session_resume_data(o->conn->session, o->stream_id);
      }
    }
    pthread_mutex_lock(&ch->lock);
  }
  pthread_mutex_unlock(&ch->lock);
}

static void reap(grace_grpc_channel *ch) {
  while (!grace__list_empty(&ch->dead_ops)) {
    op *o = grace__container_of(ch->dead_ops.next, op, link);

    grace__list_unlink(&o->link);
    grace__grpc_op_free(o);
  }
  while (!grace__list_empty(&ch->dead_conns)) {
    conn *c = grace__container_of(ch->dead_conns.next, conn, link);

    grace__list_unlink(&c->link);
    free(c);
  }
}

/* Fails every call and closes every connection: the channel is closing. */
static void shutdown_all(grace_grpc_channel *ch) {
  grace__list *l, *m;

  /* Every call gets its status first, so that whatever the sessions do
   * while they close (a callback moving a stream to the retry list) finds
   * only finished ops. */
  for (m = ch->retry.next; m != &ch->retry; m = m->next)
    op_complete(grace__container_of(m, op, link), GRACE_GRPC_CANCELLED,
                grace__grpc_msg_closing, strlen(grace__grpc_msg_closing));
  for (l = ch->conns.next; l != &ch->conns; l = l->next) {
    conn *c = grace__container_of(l, conn, link);
    grace__list *lists[2] = {&c->waiting, &c->streams};
    size_t i;

    for (i = 0; i < 2; i++) {
      for (m = lists[i]->next; m != lists[i]; m = m->next)
        op_complete(grace__container_of(m, op, link), GRACE_GRPC_CANCELLED,
                    grace__grpc_msg_closing, strlen(grace__grpc_msg_closing));
    }
  }
  while (!grace__list_empty(&ch->conns)) {
    conn *c = grace__container_of(ch->conns.next, conn, link);

    if (c->session != NULL) {
      /* grpc-go's Close sends GOAWAY(NO_ERROR) before closing. */
      nghttp2_session_terminate_session(c->session, NGHTTP2_NO_ERROR);
      conn_flush_quietly(c);
    }
    conn_fail(c, GRACE_GRPC_CANCELLED, grace__grpc_msg_closing);
  }
  while (!grace__list_empty(&ch->retry))
    op_retire(grace__container_of(ch->retry.next, op, link));
  reap(ch);
}

static int grow_poll(grace_grpc_channel *ch, size_t need) {
  struct pollfd *p;
  void **o;
  unsigned char *k;
  size_t cap;

  if (need <= ch->pcap)
    return 0;
  cap = ch->pcap > 0 ? ch->pcap * 2 : 16;
  while (cap < need)
    cap *= 2;
  p = realloc(ch->pfds, cap * sizeof(*p));
  if (p == NULL)
    return GRACE_ENOMEM;
  ch->pfds = p;
  o = realloc(ch->pobj, cap * sizeof(*o));
  if (o == NULL)
    return GRACE_ENOMEM;
  ch->pobj = o;
  k = realloc(ch->pkind, cap);
  if (k == NULL)
    return GRACE_ENOMEM;
  ch->pkind = k;
  ch->pcap = cap;
  return 0;
}

enum { PK_WAKE, PK_CONN, PK_OP };

static size_t poll_add(grace_grpc_channel *ch, size_t n, int fd, short events,
                       unsigned char kind, void *obj, int *short_of_memory) {
  if (grow_poll(ch, n + 1) != 0) {
    *short_of_memory = 1; /* not watched: poll again soon */
    return n;
  }
  ch->pfds[n].fd = fd;
  ch->pfds[n].events = events;
  ch->pfds[n].revents = 0;
  ch->pkind[n] = kind;
  ch->pobj[n] = obj;
  return n + 1;
}

/* Builds the poll set; returns its size and stores the timeout (ms). */
static size_t build_poll(grace_grpc_channel *ch, int *timeout) {
  int64_t now = grace_now(), first = INT64_MAX;
  grace__list *l, *m;
  size_t n = 0;
  int oom = 0;

  n = poll_add(ch, n, ch->wake_fd, POLLIN, PK_WAKE, NULL, &oom);
  for (l = ch->conns.next; l != &ch->conns; l = l->next) {
    conn *c = grace__container_of(l, conn, link);
    grace__list *lists[2] = {&c->waiting, &c->streams};
    size_t i;

    if (c->state == CONN_CONNECTING)
      n = poll_add(ch, n, c->fd, POLLOUT, PK_CONN, c, &oom);
    else
      /* A TLS write that waits for the server's handshake messages waits
       * for POLLIN only (POLLOUT would wake the thread at once). */
      n = poll_add(ch, n, c->fd,
                   (short)(POLLIN | (c->out_len > 0 && !(c->ssl != NULL &&
                                                         SSL_want_read(c->ssl))
                                         ? POLLOUT
                                         : 0)),
                   PK_CONN, c, &oom);
    if (c->deadline != 0 && c->deadline < first)
      first = c->deadline;
    for (i = 0; i < 2; i++) {
      for (m = lists[i]->next; m != lists[i]; m = m->next) {
        op *o = grace__container_of(m, op, link);

        if (o->w != NULL && o->done_fd >= 0)
          n = poll_add(ch, n, o->done_fd, POLLIN, PK_OP, o, &oom);
      }
    }
  }
  if (first == INT64_MAX) {
    *timeout = -1;
  } else if (first <= now) {
    *timeout = 0;
  } else {
    int64_t ms = (first - now + GRACE_MILLISECOND - 1) / GRACE_MILLISECOND;

    *timeout = ms > INT_MAX ? INT_MAX : (int)ms;
  }
  if (oom && (*timeout < 0 || *timeout > 10))
    *timeout = 10;
  return n;
}

/* Connections past their connect + handshake deadline. */
static void check_deadlines(grace_grpc_channel *ch) {
  int64_t now = grace_now();
  grace__list *l, *next;

  for (l = ch->conns.next; l != &ch->conns; l = next) {
    conn *c = grace__container_of(l, conn, link);

    next = l->next;
    if (c->deadline == 0 || c->deadline > now)
      continue;
    if (c->state == CONN_CONNECTING) {
      conn_dial_error(c, "dial tcp %s: i/o timeout", c->cur_addr);
      conn_fail_dial(c);
    } else if (c->state == CONN_HANDSHAKE) {
      conn_fail_connecting(
          c, "error reading server preface: context deadline exceeded");
    }
  }
}

void *grace__grpc_io_main(void *arg) {
  grace_grpc_channel *ch = arg;
  grace__list *l, *next;
  uint64_t count;
  size_t n, i;
  int closing, timeout;

  for (;;) {
    pthread_mutex_lock(&ch->lock);
    while (!grace__list_empty(&ch->submitted)) {
      l = ch->submitted.next;
      grace__list_unlink(l);
      grace__list_push(&ch->retry, l);
    }
    closing = ch->closing;
    pthread_mutex_unlock(&ch->lock);
    if (closing)
      break;
    process_kicks(ch);

    /* New calls and retries; then everything each connection has to
     * say.  Flushing can refuse streams (a GOAWAY that arrived while a
     * request was queued), which go round again at once. */
    do {
      while (!grace__list_empty(&ch->retry))
        op_start(ch, grace__container_of(ch->retry.next, op, link));
      for (l = ch->conns.next; l != &ch->conns; l = next) {
        next = l->next;
        conn_service(grace__container_of(l, conn, link));
      }
    } while (!grace__list_empty(&ch->retry));
    reap(ch);

    n = build_poll(ch, &timeout);
    if (poll(ch->pfds, n, timeout) < 0)
      continue; /* EINTR; anything else cannot happen with valid fds */
    /* Contexts first: a deadline and the server's reply to it (a server
     * enforcing our grpc-timeout) often arrive in the same wake-up. */
    for (i = 0; i < n; i++) {
      if (ch->pkind[i] == PK_OP && ch->pfds[i].revents != 0)
        op_expire(ch->pobj[i]);
    }
    for (i = 0; i < n; i++) {
      short re = ch->pfds[i].revents;

      if (re == 0 || ch->pkind[i] == PK_OP)
        continue;
      if (ch->pkind[i] == PK_WAKE) {
        while (read(ch->wake_fd, &count, sizeof(count)) < 0 && errno == EINTR)
          ;
      } else {
        conn *c = ch->pobj[i];

        if (c->state == CONN_CONNECTING)
          conn_connect_done(c);
        else if (c->state != CONN_DEAD &&
                 (re & (POLLIN | POLLHUP | POLLERR | POLLNVAL)))
          conn_read(c);
      }
    }
    check_deadlines(ch);
  }
  shutdown_all(ch);
  return NULL;
}
