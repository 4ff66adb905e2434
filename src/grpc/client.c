/*
 * grace: the gRPC client channel, its public API: channels, calls, status
 * formatting and the protobuf-c helper.  The design (threads, ownership,
 * connection states) is described in client_int.h; connections and the
 * I/O thread are in client_conn.c.
 */
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <protobuf-c/protobuf-c.h>

#include "grace/grpc_client.h"
#include "grpc/client_int.h"
#include "grpc/wire.h"
#include "net/list.h"
#include "net/tls.h"

#define DEFAULT_USER_AGENT "grpc-c-grace/0.1.0"
#define DEFAULT_PORT "443" /* grpc-go's dns resolver default */

const char grace__grpc_msg_closing[] = "grpc: the client connection is closing";

/* ---- Statuses ----------------------------------------------------------- */

/* Copies |len| bytes of |s| into a new NUL-terminated string, or NULL. */
char *grace__grpc_copy_bytes(const char *s, size_t len) {
  char *p = malloc(len + 1);

  if (p != NULL) {
    if (len > 0)
      memcpy(p, s, len);
    p[len] = '\0';
  }
  return p;
}

/* Stores |code| and a copy of |msg| in |st| and returns what
 * grace_grpc_channel_unary returns for it.  Out of memory, the message is
 * dropped and the code kept. */
int grace__grpc_status_set(grace_grpc_status *st, uint32_t code,
                           const char *msg, size_t len) {
  st->code = code;
  st->message = len > 0 ? grace__grpc_copy_bytes(msg, len) : NULL;
  st->message_len = st->message != NULL ? len : 0;
  if (code == GRACE_GRPC_OK)
    return 0;
  return code <= INT_MAX ? (int)code : (int)GRACE_GRPC_UNKNOWN;
}

/* The status of a call whose context is done: grpc-go's errContextDeadline
 * and errContextCanceled (rpc_util.go). */
uint32_t grace__grpc_ctx_code(int err) {
  return err == GRACE_ETIMEDOUT ? GRACE_GRPC_DEADLINE_EXCEEDED
                                : GRACE_GRPC_CANCELLED;
}

void grace_grpc_status_clear(grace_grpc_status *st) {
  if (st == NULL)
    return;
  free(st->message);
  st->code = GRACE_GRPC_OK;
  st->message = NULL;
  st->message_len = 0;
}

int grace_grpc_status_format(const grace_grpc_status *st, char *buf,
                             size_t len) {
  if (st == NULL)
    return GRACE_EINVAL;
  return grace_grpc_error_format(buf, len, st->code, st->message,
                                 st->message != NULL ? st->message_len : 0);
}

/* ---- Channel ------------------------------------------------------------ */

void grace_grpc_channel_options_init(grace_grpc_channel_options *opts) {
  if (opts == NULL)
    return;
  memset(opts, 0, sizeof(*opts));
  opts->max_recv_msg_size = GRACE_GRPC_DEFAULT_MAX_RECV_MSG_SIZE;
  opts->connect_timeout = GRACE_GRPC_DEFAULT_CONNECT_TIMEOUT;
  opts->stream_send_buffer = GRACE_GRPC_DEFAULT_STREAM_BUFFER;
  opts->stream_recv_buffer = GRACE_GRPC_DEFAULT_STREAM_BUFFER;
}

/* Splits |target| into host and port (both new strings) and the
 * authority (a new string).  Returns 0, GRACE_EINVAL or GRACE_ENOMEM. */
static int parse_target(const char *target, char **authority, char **host,
                        char **port) {
  static const char *const schemes[] = {"dns:///", "passthrough:///"};
  const char *h, *p = NULL, *colon;
  size_t hlen, i;

  for (i = 0; i < sizeof(schemes) / sizeof(schemes[0]); i++) {
    if (strncmp(target, schemes[i], strlen(schemes[i])) == 0) {
      target += strlen(schemes[i]);
      break;
    }
  }
  if (target[0] == '\0')
    return GRACE_EINVAL;
  if (target[0] == '[') {
    const char *end = strchr(target, ']');

    if (end == NULL || end == target + 1)
      return GRACE_EINVAL;
    h = target + 1;
    hlen = (size_t)(end - h);
    if (end[1] == ':')
      p = end + 2;
    else if (end[1] != '\0')
      return GRACE_EINVAL;
  } else {
    colon = strrchr(target, ':');
    if (colon != NULL && strchr(target, ':') != colon) {
      /* An IPv6 literal without brackets and without a port. */
      h = target;
      hlen = strlen(target);
    } else if (colon != NULL) {
      h = target;
      hlen = (size_t)(colon - target);
      p = colon + 1;
    } else {
      h = target;
      hlen = strlen(target);
    }
  }
  if (p != NULL && p[0] == '\0')
    return GRACE_EINVAL; /* grpc-go: "missing port after port-separator colon"
                          */
  if (hlen == 0) {
    /* ":50051": the local host, as grpc-go's dns resolver does. */
    h = "localhost";
    hlen = strlen(h);
  }
  *host = grace__grpc_copy_bytes(h, hlen);
  *port = grace__grpc_copy_bytes(p != NULL ? p : DEFAULT_PORT,
                                 strlen(p != NULL ? p : DEFAULT_PORT));
  *authority = grace__grpc_copy_bytes(target, strlen(target));
  if (*host == NULL || *port == NULL || *authority == NULL) {
    free(*host);
    free(*port);
    free(*authority);
    return GRACE_ENOMEM;
  }
  return 0;
}

static void channel_destroy(grace_grpc_channel *ch) {
  free(ch->authority);
  free(ch->host);
  free(ch->port);
  free(ch->user_agent);
  SSL_CTX_free(ch->tls_ctx);
  free(ch->tls_server_name);
  free(ch->pfds);
  free(ch->pobj);
  free(ch->pkind);
  free(ch);
}

int grace_grpc_channel_new(const char *target,
                           const grace_grpc_channel_options *opts,
                           grace_grpc_channel **out) {
  grace_grpc_channel_options defaults;
  grace_grpc_channel *ch;
  sigset_t all, old;
  const char *ua;
  int rv;

  if (target == NULL || out == NULL)
    return GRACE_EINVAL;
  if (opts == NULL) {
    grace_grpc_channel_options_init(&defaults);
    opts = &defaults;
  }
  ch = calloc(1, sizeof(*ch));
  if (ch == NULL)
    return GRACE_ENOMEM;
  ch->wake_fd = -1;
  rv = parse_target(target, &ch->authority, &ch->host, &ch->port);
  if (rv != 0) {
    free(ch);
    return rv;
  }
  ua = opts->user_agent != NULL ? opts->user_agent : DEFAULT_USER_AGENT;
  ch->user_agent = grace__grpc_copy_bytes(ua, strlen(ua));
  if (ch->user_agent == NULL) {
    rv = GRACE_ENOMEM;
    goto fail_strings;
  }
  ch->max_recv = opts->max_recv_msg_size > 0
                     ? opts->max_recv_msg_size
                     : GRACE_GRPC_DEFAULT_MAX_RECV_MSG_SIZE;
  ch->connect_timeout = opts->connect_timeout > 0
                            ? opts->connect_timeout
                            : GRACE_GRPC_DEFAULT_CONNECT_TIMEOUT;
  ch->stream_send_buffer = opts->stream_send_buffer > 0
                               ? opts->stream_send_buffer
                               : GRACE_GRPC_DEFAULT_STREAM_BUFFER;
  ch->stream_recv_buffer = opts->stream_recv_buffer > 0
                               ? opts->stream_recv_buffer
                               : GRACE_GRPC_DEFAULT_STREAM_BUFFER;
  if (opts->tls) {
    const char *name =
        opts->tls_server_name != NULL ? opts->tls_server_name : ch->host;
    rv = grace__tls_client_ctx_new(opts->tls_ca_file, &ch->tls_ctx);
    if (rv != 0)
      goto fail_strings;
    ch->tls_server_name = grace__grpc_copy_bytes(name, strlen(name));
    if (ch->tls_server_name == NULL) {
      rv = GRACE_ENOMEM;
      goto fail_strings;
    }
  }
  grace__list_init(&ch->submitted);
  grace__list_init(&ch->kicked);
  grace__list_init(&ch->conns);
  grace__list_init(&ch->retry);
  grace__list_init(&ch->dead_ops);
  grace__list_init(&ch->dead_conns);
  ch->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (ch->wake_fd < 0) {
    rv = -errno;
    goto fail_strings;
  }
  rv = -pthread_mutex_init(&ch->lock, NULL);
  if (rv != 0)
    goto fail_fd;
  rv = -pthread_cond_init(&ch->cond, NULL);
  if (rv != 0)
    goto fail_mutex;
  /* The I/O thread takes no process signal: they belong to the
   * application's threads (see src/net/loop.c). */
  sigfillset(&all);
  sigdelset(&all, SIGSEGV);
  sigdelset(&all, SIGBUS);
  sigdelset(&all, SIGFPE);
  sigdelset(&all, SIGILL);
  pthread_sigmask(SIG_BLOCK, &all, &old);
  rv = -pthread_create(&ch->thread, NULL, grace__grpc_io_main, ch);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  if (rv != 0)
    goto fail_cond;
  *out = ch;
  return 0;

fail_cond:
  pthread_cond_destroy(&ch->cond);
fail_mutex:
  pthread_mutex_destroy(&ch->lock);
fail_fd:
  close(ch->wake_fd);
fail_strings:
  channel_destroy(ch);
  return rv;
}

void grace__grpc_channel_wake(grace_grpc_channel *ch) {
  uint64_t one = 1;

  /* EAGAIN means the counter is already non-zero: the thread wakes. */
  while (write(ch->wake_fd, &one, sizeof(one)) < 0 && errno == EINTR)
    ;
}

void grace_grpc_channel_close(grace_grpc_channel *ch) {
  if (ch == NULL)
    return;
  pthread_mutex_lock(&ch->lock);
  ch->closing = 1;
  pthread_mutex_unlock(&ch->lock);
  grace__grpc_channel_wake(ch);
}

void grace_grpc_channel_free(grace_grpc_channel *ch) {
  if (ch == NULL)
    return;
  grace_grpc_channel_close(ch);
  pthread_join(ch->thread, NULL);
  /* Every call has its status now; wait until each caller has taken it
   * and let go of the lock. */
  pthread_mutex_lock(&ch->lock);
  while (ch->callers > 0)
    pthread_cond_wait(&ch->cond, &ch->lock);
  pthread_mutex_unlock(&ch->lock);
  pthread_cond_destroy(&ch->cond);
  pthread_mutex_destroy(&ch->lock);
  close(ch->wake_fd);
  channel_destroy(ch);
}

int grace_grpc_channel_unary(grace_grpc_channel *ch, const char *method,
                             const void *req, size_t req_len, grace_ctx *ctx,
                             uint8_t **resp, size_t *resp_len,
                             grace_grpc_status *status) {
  char text[128];
  waiter w;
  op *o;
  int err, fd = -1;

  if (ch == NULL || method == NULL || method[0] != '/' ||
      (req == NULL && req_len > 0) || resp == NULL || resp_len == NULL ||
      status == NULL)
    return GRACE_EINVAL;
  if (ctx == NULL)
    ctx = grace_ctx_background();
  /* grpc-go's newClientStream: a context already done fails at once. */
  err = grace_ctx_err(ctx);
  if (err != 0)
    return grace__grpc_status_set(status, grace__grpc_ctx_code(err),
                                  grace_strerror(err),
                                  strlen(grace_strerror(err)));
  if (req_len > INT32_MAX) {
    /* grpc-go's default send limit is math.MaxInt32. */
    snprintf(text, sizeof(text),
             "grpc: trying to send message larger than max (%zu vs. %d)",
             req_len, INT32_MAX);
    return grace__grpc_status_set(status, GRACE_GRPC_RESOURCE_EXHAUSTED, text,
                                  strlen(text));
  }
  if (ctx != grace_ctx_background()) {
    fd = grace_ctx_done_fd(ctx);
    if (fd < 0)
      return fd;
  }

  o = calloc(1, sizeof(*o));
  if (o == NULL)
    return GRACE_ENOMEM;
  grace__list_init(&o->link);
  grace__grpc_reader_init(&o->reader, ch->max_recv, NULL);
  o->ch = ch;
  o->ctx = grace_ctx_ref(ctx);
  o->done_fd = fd;
  o->path = grace__grpc_copy_bytes(method, strlen(method));
  o->req_len = GRACE__GRPC_PREFIX_LEN + req_len;
  o->req = malloc(o->req_len);
  if (o->path == NULL || o->req == NULL) {
    grace__grpc_op_free(o);
    return GRACE_ENOMEM;
  }
  grace__grpc_prefix_encode(o->req, 0, req_len);
  if (req_len > 0)
    memcpy(o->req + GRACE__GRPC_PREFIX_LEN, req, req_len);
  memset(&w, 0, sizeof(w));
  o->w = &w;

  pthread_mutex_lock(&ch->lock);
  if (ch->closing) {
    pthread_mutex_unlock(&ch->lock);
    grace__grpc_op_free(o);
    return grace__grpc_status_set(status, GRACE_GRPC_CANCELLED,
                                  grace__grpc_msg_closing,
                                  strlen(grace__grpc_msg_closing));
  }
  ch->callers++;
  grace__list_push(&ch->submitted, &o->link);
  pthread_mutex_unlock(&ch->lock);
  grace__grpc_channel_wake(ch);

  pthread_mutex_lock(&ch->lock);
  while (!w.done)
    pthread_cond_wait(&ch->cond, &ch->lock);
  if (--ch->callers == 0 && ch->closing)
    pthread_cond_broadcast(&ch->cond);
  pthread_mutex_unlock(&ch->lock);

  status->code = w.code;
  status->message = w.message;
  status->message_len = w.message_len;
  if (w.code != GRACE_GRPC_OK)
    return w.code <= INT_MAX ? (int)w.code : (int)GRACE_GRPC_UNKNOWN;
  *resp = w.resp;
  *resp_len = w.resp_len;
  return 0;
}

int grace_grpc_channel_unary_pb(
    grace_grpc_channel *ch, const char *method,
    const struct ProtobufCMessage *req,
    const struct ProtobufCMessageDescriptor *resp_desc, grace_ctx *ctx,
    struct ProtobufCMessage **resp, grace_grpc_status *status) {
  /* grpc-go's codec error (rpc_util.go recv), with the text Go's proto
   * package gives for bytes it cannot parse. */
  static const char unmarshal[] =
      "grpc: failed to unmarshal the received message: proto: cannot parse "
      "invalid wire-format data";
  ProtobufCMessage *m;
  uint8_t *buf, *data;
  size_t size, len;
  int rv;

  if (req == NULL || resp_desc == NULL || resp == NULL)
    return GRACE_EINVAL;
  size = protobuf_c_message_get_packed_size(req);
  buf = malloc(size > 0 ? size : 1);
  if (buf == NULL)
    return GRACE_ENOMEM;
  protobuf_c_message_pack(req, buf);
  rv =
      grace_grpc_channel_unary(ch, method, buf, size, ctx, &data, &len, status);
  free(buf);
  if (rv != 0)
    return rv;
  m = protobuf_c_message_unpack(resp_desc, NULL, len, data);
  free(data);
  if (m == NULL) {
    free(status->message);
    return grace__grpc_status_set(status, GRACE_GRPC_INTERNAL, unmarshal,
                                  sizeof(unmarshal) - 1);
  }
  *resp = m;
  return 0;
}
