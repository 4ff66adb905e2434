/*
 * grace: the gRPC client's streaming calls, the caller's side: sending
 * into the call's send queue, receiving from its receive queue,
 * half-close, cancel, status and trailers.  The I/O thread's side (the
 * data provider that drains the send queue, the DATA handler that fills
 * the receive queue, and the window it reopens as the caller reads) is in
 * client_conn.c; the design of the channel is described in client_int.h.
 *
 * The caller never touches an nghttp2 session: whatever needs the I/O
 * thread (data to send after the provider was deferred, window to reopen,
 * a cancellation, a half-close) "kicks" the call: it is queued on the
 * channel's kicked list, once, and the thread is woken.
 */
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdalign.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "grace/grpc_client.h"
#include "grpc/client_int.h"
#include "grpc/wire.h"
#include "net/list.h"

/* ---- Shared with the I/O thread ---------------------------------------- */

int grace__grpc_stream_kick_locked(grace_grpc_stream *call) {
  if (call->io_done || call->kicked)
    return 0;
  call->kicked = 1;
  grace__list_push(&call->ch->kicked, &call->kick_link);
  return 1;
}

void grace__grpc_md_free(grace_grpc_metadata *md, size_t n) {
  size_t i;

  for (i = 0; i < n; i++) {
    free((char *)(uintptr_t)md[i].name);
    free((char *)(uintptr_t)md[i].value);
  }
  free(md);
}

static void call_destroy(grace_grpc_stream *call) {
  rmsg *m;

  while ((m = call->rq_head) != NULL) {
    call->rq_head = m->next;
    free(m);
  }
  grace__grpc_md_free(call->trailers, call->ntrailers);
  free(call->w.message);
  free(call->sbuf);
  pthread_cond_destroy(&call->cond);
  free(call);
}

void grace__grpc_stream_unref(grace_grpc_stream *call) {
  grace_grpc_channel *ch = call->ch;
  int last;

  pthread_mutex_lock(&ch->lock);
  last = --call->refs == 0;
  pthread_mutex_unlock(&ch->lock);
  if (last)
    call_destroy(call);
}

/* ---- Waiting ------------------------------------------------------------ */

/* An absolute CLOCK_MONOTONIC time |timeout| from now. */
static struct timespec abstime_after(grace_duration timeout) {
  struct timespec ts;
  int64_t ns;

  clock_gettime(CLOCK_MONOTONIC, &ts);
  ns = (int64_t)ts.tv_nsec + timeout % GRACE_SECOND;
  ts.tv_sec += (time_t)(timeout / GRACE_SECOND) + (time_t)(ns / GRACE_SECOND);
  ts.tv_nsec = (long)(ns % GRACE_SECOND);
  return ts;
}

/* Waits on |call|'s condition variable, the channel's lock held: until
 * |until| when |timed|, else as long as it takes.  Returns 0, or
 * ETIMEDOUT once |until| has passed. */
static int call_wait(grace_grpc_stream *call, int timed,
                     const struct timespec *until) {
  if (!timed) {
    pthread_cond_wait(&call->cond, &call->ch->lock);
    return 0;
  }
  return pthread_cond_timedwait(&call->cond, &call->ch->lock, until);
}

/* Drops the receive queue; the lock is held. */
static void drop_queue_locked(grace_grpc_stream *call) {
  rmsg *m;

  while ((m = call->rq_head) != NULL) {
    call->rq_head = m->next;
    free(m);
  }
  call->rq_tail = NULL;
  call->rq_bytes = 0;
}

/* ---- The API ------------------------------------------------------------ */

int grace_grpc_stream_start(grace_grpc_channel *ch, const char *method,
                            grace_ctx *ctx, grace_grpc_stream **out) {
  pthread_condattr_t attr;
  grace_grpc_stream *call;
  op *o = NULL;
  int err, fd = -1, rv;

  if (ch == NULL || method == NULL || method[0] != '/' || out == NULL)
    return GRACE_EINVAL;
  if (ctx == NULL)
    ctx = grace_ctx_background();
  if (ctx != grace_ctx_background() && grace_ctx_err(ctx) == 0) {
    fd = grace_ctx_done_fd(ctx);
    if (fd < 0)
      return fd;
  }
  call = calloc(1, sizeof(*call));
  if (call == NULL)
    return GRACE_ENOMEM;
  rv = -pthread_condattr_init(&attr);
  if (rv == 0) {
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    rv = -pthread_cond_init(&call->cond, &attr);
    pthread_condattr_destroy(&attr);
  }
  if (rv != 0) {
    free(call);
    return rv;
  }
  call->ch = ch;
  call->send_limit = ch->stream_send_buffer;
  call->recv_limit = ch->stream_recv_buffer;
  grace__list_init(&call->kick_link);
  call->refs = 1;
  call->io_done = 1;

  err = grace_ctx_err(ctx);
  if (err == 0) {
    o = calloc(1, sizeof(*o));
    if (o == NULL)
      goto fail_call;
    grace__list_init(&o->link);
    grace__grpc_reader_init(&o->reader, ch->max_recv, NULL);
    o->ch = ch;
    o->ctx = grace_ctx_ref(ctx);
    o->done_fd = fd;
    o->path = grace__grpc_copy_bytes(method, strlen(method));
    if (o->path == NULL)
      goto fail_op;
    o->call = call;
    o->w = &call->w;
    call->op = o;
  }

  pthread_mutex_lock(&ch->lock);
  ch->callers++;
  if (o != NULL && ch->closing) {
    /* grpc-go's ErrClientConnClosing. */
    call->w.code = GRACE_GRPC_CANCELLED;
    call->w.message = grace__grpc_copy_bytes(grace__grpc_msg_closing,
                                             strlen(grace__grpc_msg_closing));
    call->w.message_len =
        call->w.message != NULL ? strlen(grace__grpc_msg_closing) : 0;
    call->w.done = 1;
    pthread_mutex_unlock(&ch->lock);
    o->call = NULL;
    grace__grpc_op_free(o);
    *out = call;
    return 0;
  }
  if (o == NULL) {
    /* grpc-go's newClientStream: a context already done fails at once. */
    const char *text = grace_strerror(err);

    call->w.code = grace__grpc_ctx_code(err);
    call->w.message = grace__grpc_copy_bytes(text, strlen(text));
    call->w.message_len = call->w.message != NULL ? strlen(text) : 0;
    call->w.done = 1;
    pthread_mutex_unlock(&ch->lock);
    *out = call;
    return 0;
  }
  call->refs = 2; /* the caller's and the op's */
  call->io_done = 0;
  grace__list_push(&ch->submitted, &o->link);
  pthread_mutex_unlock(&ch->lock);
  grace__grpc_channel_wake(ch);
  *out = call;
  return 0;

fail_op:
  o->call = NULL;
  grace__grpc_op_free(o);
fail_call:
  pthread_cond_destroy(&call->cond);
  free(call);
  return GRACE_ENOMEM;
}

/* Makes room for |need| more bytes at the end of the send queue; the lock
 * is held.  Returns 0 or GRACE_ENOMEM. */
static int sendq_reserve(grace_grpc_stream *call, size_t need) {
  uint8_t *p;
  size_t cap;

  if (call->soff > 0) {
    memmove(call->sbuf, call->sbuf + call->soff, call->slen - call->soff);
    call->slen -= call->soff;
    call->soff = 0;
  }
  if (call->scap - call->slen >= need)
    return 0;
  cap = call->scap > 0 ? call->scap : 4096;
  while (cap - call->slen < need)
    cap *= 2;
  p = realloc(call->sbuf, cap);
  if (p == NULL)
    return GRACE_ENOMEM;
  call->sbuf = p;
  call->scap = cap;
  return 0;
}

int grace_grpc_stream_send(grace_grpc_stream *call, const void *msg, size_t len,
                           grace_duration timeout) {
  grace_grpc_channel *ch;
  struct timespec until;
  size_t need, queued;
  int rv, wake = 0;

  if (call == NULL || (msg == NULL && len > 0))
    return GRACE_EINVAL;
  if (len > INT32_MAX)
    return GRACE_ERANGE; /* grpc-go's default send limit, math.MaxInt32 */
  ch = call->ch;
  need = GRACE__GRPC_PREFIX_LEN + len;
  if (timeout > 0)
    until = abstime_after(timeout);
  pthread_mutex_lock(&ch->lock);
  for (;;) {
    if (call->w.done) {
      rv = GRACE_ECLOSED;
      goto out;
    }
    if (call->send_closed) {
      rv = GRACE_ESTATE;
      goto out;
    }
    queued = call->slen - call->soff;
    /* One message always fits into an empty queue, whatever its size. */
    if (queued == 0 || queued + need <= call->send_limit)
      break;
    if (timeout == 0 || call_wait(call, timeout > 0, &until) == ETIMEDOUT) {
      rv = GRACE_EBUSY;
      goto out;
    }
  }
  rv = sendq_reserve(call, need);
  if (rv != 0)
    goto out;
  grace__grpc_prefix_encode(call->sbuf + call->slen, 0, len);
  if (len > 0)
    memcpy(call->sbuf + call->slen + GRACE__GRPC_PREFIX_LEN, msg, len);
  call->slen += need;
  /* The data provider defers only on an empty queue: only then does the
   * I/O thread need to hear about this message. */
  if (queued == 0)
    wake = grace__grpc_stream_kick_locked(call);
out:
  pthread_mutex_unlock(&ch->lock);
  if (wake)
    grace__grpc_channel_wake(ch);
  return rv;
}

int grace_grpc_stream_close_send(grace_grpc_stream *call) {
  int wake = 0;

  if (call == NULL)
    return GRACE_EINVAL;
  pthread_mutex_lock(&call->ch->lock);
  if (!call->send_closed && !call->w.done) {
    call->send_closed = 1;
    wake = grace__grpc_stream_kick_locked(call);
  }
  pthread_mutex_unlock(&call->ch->lock);
  if (wake)
    grace__grpc_channel_wake(call->ch);
  return 0;
}

int grace_grpc_stream_recv(grace_grpc_stream *call, uint8_t **msg, size_t *len,
                           grace_duration timeout) {
  grace_grpc_channel *ch;
  struct timespec until;
  rmsg *m;
  int rv, wake = 0;

  if (call == NULL || msg == NULL || len == NULL)
    return GRACE_EINVAL;
  ch = call->ch;
  if (timeout > 0)
    until = abstime_after(timeout);
  pthread_mutex_lock(&ch->lock);
  for (;;) {
    m = call->rq_head;
    if (m != NULL) {
      call->rq_head = m->next;
      if (call->rq_head == NULL)
        call->rq_tail = NULL;
      call->rq_bytes -= m->len;
      /* Below the limit again: the window the server waits for can
       * reopen. */
      if (call->owed > 0 && call->rq_bytes < call->recv_limit)
        wake = grace__grpc_stream_kick_locked(call);
      rv = 1;
      break;
    }
    if (call->w.done) {
      rv = 0;
      break;
    }
    if (timeout == 0 || call_wait(call, timeout > 0, &until) == ETIMEDOUT) {
      rv = GRACE_EBUSY;
      break;
    }
  }
  pthread_mutex_unlock(&ch->lock);
  if (wake)
    grace__grpc_channel_wake(ch);
  if (rv == 1) {
    /* The message goes out in its own block: the payload moves to its
     * start, over the node's header (one allocation per message). */
    *len = m->len;
    *msg = (uint8_t *)m;
    memmove(m, m->data, m->len);
  }
  return rv;
}

void grace_grpc_stream_cancel(grace_grpc_stream *call) {
  int wake = 0;

  if (call == NULL)
    return;
  pthread_mutex_lock(&call->ch->lock);
  if (!call->w.done) {
    call->cancel = 1;
    wake = grace__grpc_stream_kick_locked(call);
  }
  pthread_mutex_unlock(&call->ch->lock);
  if (wake)
    grace__grpc_channel_wake(call->ch);
}

int grace_grpc_stream_finish(grace_grpc_stream *call,
                             grace_grpc_status *status) {
  grace_grpc_channel *ch;
  int wake = 0;
  uint32_t code;
  char *text;
  size_t len;

  if (call == NULL || status == NULL)
    return GRACE_EINVAL;
  ch = call->ch;
  pthread_mutex_lock(&ch->lock);
  /* Nothing more will be read: what is queued goes, what arrives is
   * dropped, and the window reopens so the server can reach its end. */
  call->discard = 1;
  drop_queue_locked(call);
  if (call->owed > 0)
    wake = grace__grpc_stream_kick_locked(call);
  if (wake) {
    pthread_mutex_unlock(&ch->lock);
    grace__grpc_channel_wake(ch);
    pthread_mutex_lock(&ch->lock);
  }
  while (!call->w.done)
    call_wait(call, 0, NULL);
  code = call->w.code;
  text = call->w.message;
  len = call->w.message_len;
  pthread_mutex_unlock(&ch->lock);
  /* The call keeps its own copy: finish may be asked again. */
  return grace__grpc_status_set(status, code, text, text != NULL ? len : 0);
}

int grace_grpc_stream_trailers(grace_grpc_stream *call,
                               const grace_grpc_metadata **md, size_t *n) {
  if (call == NULL || md == NULL || n == NULL)
    return GRACE_EINVAL;
  pthread_mutex_lock(&call->ch->lock);
  /* Set together with w.done and never changed after. */
  *md = call->w.done ? call->trailers : NULL;
  *n = call->w.done ? call->ntrailers : 0;
  pthread_mutex_unlock(&call->ch->lock);
  return 0;
}

void grace_grpc_stream_free(grace_grpc_stream *call) {
  grace_grpc_channel *ch;
  int wake = 0, last;

  if (call == NULL)
    return;
  ch = call->ch;
  pthread_mutex_lock(&ch->lock);
  if (!call->w.done) {
    call->cancel = 1;
    wake = grace__grpc_stream_kick_locked(call);
  }
  call->discard = 1;
  drop_queue_locked(call);
  last = --call->refs == 0;
  if (--ch->callers == 0 && ch->closing)
    pthread_cond_broadcast(&ch->cond);
  /* The channel may be freed once the lock is released with no caller
   * left, and the I/O thread is then gone: it is only woken before. */
  if (wake)
    grace__grpc_channel_wake(ch);
  pthread_mutex_unlock(&ch->lock);
  if (last)
    call_destroy(call);
}
