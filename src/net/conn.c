/*
 * The transport: one connection, its socket, read-ahead, write queue,
 * timers and close.  See conn.h for the contracts.
 */
#include "net/conn.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "grace/error.h"
#include "net/tls.h"

_Static_assert(GRACE__TL_COUNT <= GRACE__TLISTS,
               "every deadline list of a connection needs a list of the loop");

/* Deepest nesting of resumes that deliver inline before the rest is
 * deferred to the loop. */
#define MAX_DEPTH 8

static void on_poll(uv_poll_t *handle, int status, int events);
static void deliver(grace__conn *c);
static void tls_kick(grace__conn *c);
static int tls_close_notify(grace__conn *c);

/* Ciphertext read from a socket at a time (a TLS record is at most 16 KiB
 * plus overhead). */
#define TBUF_SIZE (32 * 1024)

/* Plaintext handed to SSL_write at a time: one record. */
#define TLS_WRITE_CHUNK (16 * 1024)

/* A connection's TLS state: its SSL and the memory BIOs between it and
 * the socket. */
struct grace__conn_tls {
  grace__conn *conn;
  SSL *ssl;
  BIO *rbio;         /* ciphertext read, for the SSL (owned by ssl) */
  BIO *wbio;         /* ciphertext the SSL wrote (owned by ssl) */
  grace__post post;  /* a read of what the SSL holds already */
  int posted;        /* post is queued (holding a reference) */
  int established;   /* the handshake is done */
  int sent_shutdown; /* close_notify is written */
};

static ssize_t discard_read(grace__conn *c, const uint8_t *p, size_t n) {
  (void)c;
  (void)p;
  return (ssize_t)n;
}

/* The protocol of a connection dropped before it started. */
static const grace__conn_proto discarded = {.on_read = discard_read};

/* The read-ahead |c| may keep while its protocol is paused. */
static size_t rmax_of(const grace__conn *c) {
  return c->reg != NULL && c->reg->rmax != 0 ? c->reg->rmax
                                             : GRACE__CONN_READ_AHEAD;
}

static unsigned slot_of(unsigned list) {
  return list == GRACE__TL_SEND ? 1 : 0;
}

/* The lists whose entries are a protocol's own (grace__conn_ptimer). */
static int is_protocol_list(unsigned list) {
  return list == GRACE__TL_GOAWAY || list == GRACE__TL_STREAM;
}

/* ---- the loop side --------------------------------------------------------
 */

int grace__conn_loop_init(grace__conn_loop *cl, grace__loop *loop) {
  memset(cl, 0, sizeof(*cl));
  cl->loop = loop;
  grace__list_init(&cl->conns);
  grace__list_init(&cl->pending);
  cl->rbuf_size = 64 * 1024;
  cl->rbuf = malloc(cl->rbuf_size);
  cl->tbuf = malloc(TBUF_SIZE);
  if (cl->rbuf == NULL || cl->tbuf == NULL) {
    grace__conn_loop_free(cl);
    return GRACE_ENOMEM;
  }
  return 0;
}

static void flush_pending(uv_prepare_t *handle);

int grace__conn_loop_open(grace__conn_loop *cl) {
  int rv = uv_prepare_init(cl->loop->uv, &cl->prepare);
  if (rv != 0)
    return rv;
  cl->prepare.data = cl;
  cl->prepare_open = 1;
  return 0;
}

void grace__conn_loop_close(grace__conn_loop *cl) {
  if (!cl->prepare_open)
    return;
  cl->prepare_open = 0;
  grace__loop_close_handle(cl->loop, (uv_handle_t *)&cl->prepare);
}

/* Marks |c| as having bytes to send before the loop waits. */
static void want_flush(grace__conn *c) {
  grace__conn_loop *cl = c->cl;
  if (!grace__list_empty(&c->plink))
    return;
  if (grace__list_empty(&cl->pending) && cl->prepare_open)
    uv_prepare_start(&cl->prepare, flush_pending);
  grace__list_push(&cl->pending, &c->plink);
}

void grace__conn_loop_free(grace__conn_loop *cl) {
  free(cl->rbuf);
  free(cl->tbuf);
  cl->rbuf = NULL;
  cl->tbuf = NULL;
}

void grace__conn_loop_timeout(grace__conn_loop *cl, unsigned list,
                              uint64_t ms) {
  grace__loop_tlist_set(cl->loop, list, ms);
}

void grace__conn_loop_expire(grace__conn_loop *cl, unsigned list,
                             grace__tnode *node) {
  grace__conn *c;
  (void)cl;
  if (is_protocol_list(list)) {
    c = grace__container_of(node, grace__conn_ptimer, node)->conn;
    if (grace__conn_closing(c) || c->proto->on_timer == NULL)
      return; /* an ending connection's protocol deadlines are over */
  } else {
    unsigned slot = slot_of(list);
    c = (grace__conn *)(void *)((char *)(node - slot) -
                                offsetof(grace__conn, timer));
    if (list == GRACE__TL_LINGER || list == GRACE__TL_HANDSHAKE ||
        c->proto->on_timer == NULL) {
      grace__conn_close(c);
      return;
    }
  }
  grace__conn_ref(c);
  c->proto->on_timer(c, list);
  grace__conn_unref(c);
}

void grace__conn_loop_each(grace__conn_loop *cl, void (*fn)(grace__conn *c)) {
  grace__list *it, *next;
  for (it = cl->conns.next; it != &cl->conns; it = next) {
    grace__conn *c = grace__container_of(it, grace__conn, link);
    grace__conn_ref(c); /* keeps |next| reachable: c stays linked */
    fn(c);
    next = it->next;
    grace__conn_unref(c);
  }
}

void grace__conn_loop_shutdown(grace__conn_loop *cl) {
  cl->shutting_down = 1;
  grace__conn_loop_each(cl, grace__conn_shutdown);
}

unsigned grace__conn_loop_close_all(grace__conn_loop *cl) {
  grace__list *it, *next;
  unsigned cut = 0;
  cl->closing = 1;
  cl->shutting_down = 1;
  for (it = cl->conns.next; it != &cl->conns; it = next) {
    grace__conn *c = grace__container_of(it, grace__conn, link);
    grace__conn_ref(c);
    cut += grace__conn_force(c);
    next = it->next;
    grace__conn_unref(c);
  }
  return cut;
}

unsigned grace__conn_force(grace__conn *c) {
  unsigned cut = 0;
  if (c->flags & GRACE__CF_CLOSED)
    return 0;
  grace__conn_ref(c);
  if (c->proto->on_force != NULL)
    cut = c->proto->on_force(c);
  grace__conn_close(c);
  grace__conn_unref(c);
  return cut;
}

/* ---- lifetime -------------------------------------------------------------
 */

static grace__conn *conn_alloc(grace__conn_reg *reg,
                               const grace__conn_proto *proto, void *pdata) {
  grace__conn *c = calloc(1, sizeof(*c));
  if (c == NULL)
    return NULL;
  c->reg = reg;
  c->proto = proto;
  c->pdata = pdata;
  c->fd = -1;
  c->refs = 1;                 /* the socket's */
  c->state = GRACE__CS_CLOSED; /* so the first set_state reports NEW */
  grace__list_init(&c->link);
  grace__list_init(&c->plink);
  for (int i = 0; i < GRACE__CONN_TIMERS; i++)
    grace__list_init(&c->timer[i].link);
  grace__list_init(&c->post.link);
  atomic_fetch_add(&reg->nconns, 1);
  return c;
}

grace__conn *grace__conn_new(grace__conn_reg *reg, int fd,
                             const grace__conn_proto *proto, void *pdata) {
  grace__conn *c = conn_alloc(reg, proto, pdata);
  if (c == NULL)
    return NULL;
  c->fd = fd;
  atomic_fetch_add(&reg->accepted, 1);
  return c;
}

/* Takes |c| out of its registry's count (once): its drain is over. */
static void uncount(grace__conn *c) {
  grace__conn_reg *reg = c->reg;
  if (c->flags & GRACE__CF_UNCOUNTED)
    return;
  c->flags |= GRACE__CF_UNCOUNTED;
  atomic_fetch_sub(&reg->nconns, 1);
  if (reg->on_gone != NULL)
    reg->on_gone(reg, reg->data);
}

static void conn_free(grace__conn *c) {
  grace__list_unlink(&c->link);
  grace__list_unlink(&c->plink);
  if (c->proto->on_free != NULL)
    c->proto->on_free(c);
  free(c->rp);
  free(c->wp);
  c->rp = NULL;
  c->wp = NULL;
  if (c->tls != NULL) {
    SSL_free(c->tls->ssl); /* and its BIOs */
    free(c->tls);
    c->tls = NULL;
  }
  uncount(c);
  free(c);
}

void grace__conn_ref(grace__conn *c) { c->refs++; }

void grace__conn_unref(grace__conn *c) {
  if (--c->refs == 0)
    conn_free(c);
}

static void on_handle_closed(uv_handle_t *handle) {
  grace__conn *c = handle->data;
  grace__conn_unref(c); /* the socket's reference */
}

void grace__conn_discard(grace__conn *c) {
  if (c->fd >= 0)
    close(c->fd);
  c->fd = -1;
  c->flags |= GRACE__CF_CLOSED;
  c->proto = &discarded;
  grace__conn_unref(c);
}

int grace__conn_start(grace__conn *c, grace__conn_loop *cl) {
  c->cl = cl;
  grace__list_push(&cl->conns, &c->link);
  if (cl->closing || uv_poll_init_socket(cl->loop->uv, &c->poll, c->fd) != 0) {
    close(c->fd);
    c->fd = -1;
    c->flags |= GRACE__CF_CLOSED;
    if (c->proto->on_close != NULL)
      c->proto->on_close(c);
    grace__conn_unref(c);
    return GRACE_ECLOSED;
  }
  c->poll.data = c;
  c->flags |= GRACE__CF_HANDLE_OPEN;
  c->peer_len = sizeof(c->peer);
  if (getpeername(c->fd, &c->peer.sa, &c->peer_len) != 0 ||
      c->peer_len > sizeof(c->peer))
    c->peer_len = 0;
  grace__conn_set_state(c, GRACE__CS_NEW);
  grace__conn_timer(c, c->tls != NULL ? GRACE__TL_HANDSHAKE : GRACE__TL_HEADER);
  c->events = UV_READABLE;
  uv_poll_start(&c->poll, UV_READABLE, on_poll);
  if (cl->shutting_down)
    grace__conn_shutdown(c);
  return 0;
}

grace__conn *grace__conn_new_mem(grace__conn_reg *reg,
                                 const grace__conn_proto *proto, void *pdata,
                                 size_t room) {
  grace__conn *c = conn_alloc(reg, proto, pdata);
  if (c == NULL)
    return NULL;
  c->flags |= GRACE__CF_MEM;
  c->wmem_room = room;
  c->refs++; /* the test's, dropped by grace__conn_mem_free */
  grace__conn_set_state(c, GRACE__CS_NEW);
  return c;
}

void grace__conn_mem_free(grace__conn *c) {
  if (c == NULL)
    return;
  grace__conn_close(c);
  grace__conn_unref(c);
}

/* ---- polling --------------------------------------------------------------
 */

static void set_events(grace__conn *c, int events) {
  if ((c->flags & (GRACE__CF_MEM | GRACE__CF_CLOSED)) || events == c->events)
    return;
  c->events = events;
  if (events == 0)
    uv_poll_stop(&c->poll);
  else
    uv_poll_start(&c->poll, events, on_poll);
}

/* Reading is wanted unless the peer is done, the read-ahead is full or
 * the connection is ending without lingering. */
static void update_read(grace__conn *c) {
  int want = !(c->flags & GRACE__CF_EOF) &&
             ((c->flags & GRACE__CF_LINGER) || c->rlen < rmax_of(c));
  if ((c->flags & GRACE__CF_ENDING) && !(c->flags & GRACE__CF_LINGER))
    want = 0;
  set_events(c, want ? (c->events | UV_READABLE) : (c->events & ~UV_READABLE));
  if (want && c->tls != NULL)
    tls_kick(c);
}

/* ---- closing --------------------------------------------------------------
 */

int grace__conn_closing(const grace__conn *c) {
  return (c->flags & (GRACE__CF_CLOSED | GRACE__CF_ENDING)) != 0;
}

void grace__conn_close(grace__conn *c) {
  if (c->flags & GRACE__CF_CLOSED)
    return;
  c->flags |= GRACE__CF_CLOSED;
  grace__list_unlink(&c->plink);
  for (unsigned i = 0; i < GRACE__CONN_TIMERS; i++)
    grace__list_unlink(&c->timer[i].link);
  if (c->flags & GRACE__CF_HANDLE_OPEN) {
    c->flags &= ~(uint32_t)GRACE__CF_HANDLE_OPEN;
    /* uv_close unregisters the descriptor synchronously, so it can be
     * closed right away; the struct waits for the close callback. */
    uv_close((uv_handle_t *)&c->poll, on_handle_closed);
    close(c->fd);
  } else if (!(c->flags & GRACE__CF_MEM) && c->fd >= 0) {
    close(c->fd);
  }
  c->fd = -1;
  free(c->rp);
  c->rp = NULL;
  c->rlen = c->rcap = 0;
  if (!(c->flags & GRACE__CF_MEM))
    c->wlen = c->woff = 0; /* a memory connection keeps its output */
  grace__conn_set_state(c, GRACE__CS_CLOSED);
  if (c->proto->on_close != NULL)
    c->proto->on_close(c);
  if (c->flags & GRACE__CF_MEM)
    grace__conn_unref(c); /* the socket's reference */
}

static void finish_end(grace__conn *c) {
  int linger = (c->flags & GRACE__CF_LINGER) || c->rlen > 0 ||
               (c->flags & GRACE__CF_PAUSED);
  if ((c->flags & GRACE__CF_MEM) || (c->flags & GRACE__CF_EOF) || !linger) {
    grace__conn_close(c);
    return;
  }
  /* Half-close, then read and discard until the peer closes or the
   * linger time passes.  Every answer is with the kernel now: the
   * connection no longer holds a drain. */
  shutdown(c->fd, SHUT_WR);
  uncount(c);
  c->flags |= GRACE__CF_LINGER;
  c->flags &= ~(uint32_t)GRACE__CF_PAUSED;
  free(c->rp);
  c->rp = NULL;
  c->rlen = c->rcap = 0;
  for (unsigned i = 1; i < GRACE__CONN_TIMERS; i++)
    grace__list_unlink(&c->timer[i].link);
  grace__conn_timer(c, GRACE__TL_LINGER);
  set_events(c, UV_READABLE);
}

void grace__conn_end(grace__conn *c, int linger) {
  if (grace__conn_closing(c))
    return;
  c->flags |= GRACE__CF_ENDING;
  if (linger)
    c->flags |= GRACE__CF_LINGER;
  grace__list_unlink(&c->timer[0].link);
  if (tls_close_notify(c) != 0)
    return; /* closed */
  if (grace__conn_queued(c) == 0)
    finish_end(c);
  else
    update_read(c);
}

/* ---- writing --------------------------------------------------------------
 */

/* Writes from the queue what the socket takes.  Returns 0, or -1 when the
 * connection was closed on an error. */
static int flush(grace__conn *c) {
  size_t before = c->wlen;
  while (c->wlen > 0) {
    ssize_t n;
    if (c->flags & GRACE__CF_MEM) {
      /* The memory "socket" keeps everything; room is what it takes. */
      break;
    }
    n = send(c->fd, c->wp + c->woff, c->wlen, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      if (errno == EAGAIN)
        break;
      grace__conn_close(c); /* the peer is gone */
      return -1;
    }
    c->woff += (size_t)n;
    c->wlen -= (size_t)n;
  }
  if (c->wlen == 0) {
    /* An idle connection holds no buffer: writes go straight to the
     * socket again until it is full. */
    free(c->wp);
    c->wp = NULL;
    c->woff = c->wcap = 0;
    grace__list_unlink(&c->timer[1].link);
    set_events(c, c->events & ~UV_WRITABLE);
  } else {
    if (c->wlen < before || grace__list_empty(&c->timer[1].link))
      grace__conn_timer(c, GRACE__TL_SEND); /* progress: a new deadline */
    set_events(c, c->events | UV_WRITABLE);
  }
  return 0;
}

/* Queues |n| bytes for the socket (ciphertext under TLS), even while
 * ending (close_notify). */
static int write_raw(grace__conn *c, const void *p, size_t n) {
  if (c->flags & GRACE__CF_CLOSED)
    return GRACE_ECLOSED;
  if (n == 0)
    return 0;
  if (c->flags & GRACE__CF_MEM) {
    /* The "socket" takes up to wmem_room bytes; the rest queues. */
    if (c->wlen + c->woff + n > c->wcap) {
      size_t cap = c->wcap ? c->wcap : 4096;
      while (cap < c->wlen + c->woff + n)
        cap *= 2;
      uint8_t *np = realloc(c->wp, cap);
      if (np == NULL)
        return GRACE_ENOMEM;
      c->wp = np;
      c->wcap = cap;
    }
    memcpy(c->wp + c->woff + c->wlen, p, n);
    c->wlen += n;
    return 0;
  }
  int first = grace__list_empty(&c->plink) && !(c->events & UV_WRITABLE);
  if (c->wlen == 0 && (first || n >= GRACE__CONN_DIRECT_WRITE)) {
    /* The first write of a loop turn (one answer to one request, the
     * common case), or a large one, goes to the socket at once without a
     * copy; what follows it in the same turn is gathered for one send
     * before the loop waits. */
    if (first)
      want_flush(c);
    for (;;) {
      ssize_t w = send(c->fd, p, n, MSG_NOSIGNAL);
      if (w < 0 && errno == EINTR)
        continue;
      if (w < 0 && errno != EAGAIN) {
        grace__conn_close(c);
        return GRACE_ECLOSED;
      }
      if (w > 0) {
        p = (const uint8_t *)p + w;
        n -= (size_t)w;
      }
      break;
    }
    if (n == 0)
      return 0;
  }
  if (c->woff > 0 && c->woff + c->wlen + n > c->wcap) {
    memmove(c->wp, c->wp + c->woff, c->wlen);
    c->woff = 0;
  }
  if (c->woff + c->wlen + n > c->wcap) {
    size_t cap = c->wcap ? c->wcap : 4096;
    while (cap < c->wlen + n)
      cap *= 2;
    uint8_t *np = realloc(c->wp, cap);
    if (np == NULL) {
      grace__conn_close(c);
      return GRACE_ENOMEM;
    }
    c->wp = np;
    c->wcap = cap;
  }
  memcpy(c->wp + c->woff + c->wlen, p, n);
  c->wlen += n;
  /* Sent before the loop waits, with whatever else is written in this
   * turn; a socket already full is waited for (flush). */
  if (!(c->events & UV_WRITABLE))
    want_flush(c);
  return 0;
}

/* Queues what the SSL of |c| wrote.  Returns 0, or a negative error once
 * |c| is closed. */
static int tls_drain(grace__conn *c) {
  char *data;
  long len = BIO_get_mem_data(c->tls->wbio, &data);
  if (len <= 0)
    return 0;
  int rv = write_raw(c, data, (size_t)len);
  (void)BIO_reset(c->tls->wbio);
  return rv;
}

static int tls_write(grace__conn *c, const uint8_t *p, size_t n) {
  if (!c->tls->established)
    return GRACE_ESTATE; /* no protocol has had a byte yet */
  while (n > 0) {
    size_t chunk = n < TLS_WRITE_CHUNK ? n : TLS_WRITE_CHUNK, done = 0;
    ERR_clear_error();
    if (SSL_write_ex(c->tls->ssl, p, chunk, &done) != 1) {
      ERR_clear_error();
      grace__conn_close(c);
      return GRACE_ECLOSED;
    }
    int rv = tls_drain(c);
    if (rv != 0)
      return rv;
    p += done;
    n -= done;
  }
  return 0;
}

/* Writes close_notify (once, after a finished handshake) ahead of the end
 * of the write side.  Returns 0, or -1 once |c| is closed. */
static int tls_close_notify(grace__conn *c) {
  if (c->tls == NULL || !c->tls->established || c->tls->sent_shutdown)
    return 0;
  c->tls->sent_shutdown = 1;
  ERR_clear_error();
  (void)SSL_shutdown(c->tls->ssl); /* 0: sent, the peer's is not awaited */
  ERR_clear_error();
  return tls_drain(c) != 0 ? -1 : 0;
}

int grace__conn_write(grace__conn *c, const void *p, size_t n) {
  if (grace__conn_closing(c))
    return GRACE_ECLOSED;
  if (n == 0)
    return 0;
  if (c->tls != NULL)
    return tls_write(c, p, n);
  return write_raw(c, p, n);
}

size_t grace__conn_queued(const grace__conn *c) {
  if (c->flags & GRACE__CF_MEM)
    return c->wlen + c->woff > c->wmem_room ? c->wlen + c->woff - c->wmem_room
                                            : 0;
  return c->wlen;
}

/* The queue emptied: end a pending close, or tell the protocol. */
static void after_flush(grace__conn *c) {
  if (c->flags & GRACE__CF_CLOSED)
    return;
  if (c->flags & GRACE__CF_ENDING) {
    finish_end(c);
    return;
  }
  if (c->proto->on_flushed != NULL)
    c->proto->on_flushed(c);
}

/* Just before the loop waits: each connection written to in this turn
 * sends its bytes (one send for many answers or frames). */
static void flush_pending(uv_prepare_t *handle) {
  grace__conn_loop *cl = handle->data;
  while (!grace__list_empty(&cl->pending)) {
    grace__conn *c = grace__container_of(cl->pending.next, grace__conn, plink);
    grace__list_unlink(&c->plink);
    if (c->flags & GRACE__CF_CLOSED)
      continue;
    grace__conn_ref(c);
    size_t before = c->wlen;
    if (flush(c) == 0 && before > 0 && c->wlen == 0)
      after_flush(c); /* may write again: back on the list */
    grace__conn_unref(c);
  }
  uv_prepare_stop(handle);
}

const uint8_t *grace__conn_mem_output(grace__conn *c, size_t *len) {
  *len = c->wlen + c->woff;
  return c->wp;
}

void grace__conn_mem_take(grace__conn *c, size_t n) {
  size_t have = c->wlen + c->woff;
  size_t queued_before = grace__conn_queued(c);
  if (n > have)
    n = have;
  if (n > 0)
    memmove(c->wp, c->wp + n, have - n);
  c->wlen = have - n;
  c->woff = 0;
  if (queued_before > 0 && grace__conn_queued(c) == 0) {
    grace__conn_ref(c);
    after_flush(c);
    grace__conn_unref(c);
  }
}

/* ---- reading --------------------------------------------------------------
 */

static int keep(grace__conn *c, const uint8_t *p, size_t n) {
  if (c->rlen + n > c->rcap) {
    size_t cap = c->rcap ? c->rcap : 4096;
    while (cap < c->rlen + n)
      cap *= 2;
    uint8_t *np = realloc(c->rp, cap);
    if (np == NULL)
      return GRACE_ENOMEM;
    c->rp = np;
    c->rcap = cap;
  }
  if (c->rp + c->rlen != p)
    memmove(c->rp + c->rlen, p, n);
  c->rlen += n;
  return 0;
}

/* Offers |p|/|n| (the shared buffer, or the read-ahead itself) to the
 * protocol until it stops taking; keeps the rest as read-ahead. */
static void offer(grace__conn *c, const uint8_t *p, size_t n, int from_rp) {
  while (n > 0 && !grace__conn_closing(c)) {
    const grace__conn_proto *proto = c->proto;
    c->flags |= GRACE__CF_IN_READ;
    ssize_t took = proto->on_read(c, p, n);
    c->flags &= ~(uint32_t)GRACE__CF_IN_READ;
    if (took < 0 || (c->flags & GRACE__CF_CLOSED)) {
      if (!grace__conn_closing(c))
        grace__conn_end(c, 1);
      if (from_rp)
        c->rlen = 0;
      return;
    }
    p += took;
    n -= (size_t)took;
    if ((size_t)took == 0 && c->proto == proto)
      break; /* paused */
  }
  if (from_rp) {
    if (n > 0 && p != c->rp)
      memmove(c->rp, p, n);
    c->rlen = grace__conn_closing(c) ? 0 : n;
  } else if (n > 0 && !grace__conn_closing(c)) {
    if (keep(c, p, n) != 0) {
      grace__conn_close(c);
      return;
    }
  }
  if (grace__conn_closing(c))
    return;
  if (c->rlen > 0)
    c->flags |= GRACE__CF_PAUSED;
  else
    c->flags &= ~(uint32_t)GRACE__CF_PAUSED;
}

static void deliver(grace__conn *c) {
  if (c->rlen == 0 || (c->flags & GRACE__CF_IN_READ))
    return;
  c->flags &= ~(uint32_t)GRACE__CF_PAUSED;
  offer(c, c->rp, c->rlen, 1);
}

/* The peer closed its side: a connection that is ending closes once its
 * queue is out; otherwise the protocol decides (default: close). */
static void peer_eof(grace__conn *c) {
  c->flags |= GRACE__CF_EOF;
  update_read(c);
  if (c->flags & GRACE__CF_ENDING) {
    if (grace__conn_queued(c) == 0)
      grace__conn_close(c);
    return;
  }
  if (c->proto->on_eof != NULL)
    c->proto->on_eof(c);
  else
    grace__conn_close(c);
}

/* The handshake is done: the protocol's own header deadline begins. */
static void tls_established(grace__conn *c) {
  c->tls->established = 1;
  grace__list_unlink(&c->timer[0].link);
  grace__conn_timer(c, GRACE__TL_HEADER);
}

/* Reads up to |room| plaintext bytes into |buf| as read(2) would: a
 * count, 0 at the peer's EOF (close_notify or the socket's), -1 with
 * errno (EAGAIN: nothing yet; EPROTO: a TLS error, alert queued). */
static ssize_t tls_recv(grace__conn *c, uint8_t *buf, size_t room) {
  grace__conn_tls *t = c->tls;
  for (;;) {
    size_t got = 0;
    int r;
    ERR_clear_error();
    if (!t->established)
      r = SSL_do_handshake(t->ssl);
    else
      r = SSL_read_ex(t->ssl, buf, room, &got);
    int err = r == 1 ? SSL_ERROR_NONE : SSL_get_error(t->ssl, r);
    ERR_clear_error();
    if (tls_drain(c) != 0) {
      errno = EPIPE;
      return -1;
    }
    if (err == SSL_ERROR_NONE) {
      if (t->established)
        return (ssize_t)got;
      tls_established(c);
      continue;
    }
    if (err == SSL_ERROR_ZERO_RETURN)
      return 0;
    if (err != SSL_ERROR_WANT_READ) {
      errno = EPROTO;
      return -1;
    }
    ssize_t n;
    do
      n = read(c->fd, c->cl->tbuf, TBUF_SIZE);
    while (n < 0 && errno == EINTR);
    if (n <= 0)
      return n;
    if (BIO_write(t->rbio, c->cl->tbuf, (int)n) != (int)n) {
      errno = ENOMEM;
      return -1;
    }
  }
}

/* read(2) on the socket, or its plaintext under TLS. */
static ssize_t conn_recv(grace__conn *c, uint8_t *buf, size_t room) {
  ssize_t n;
  if (c->tls != NULL)
    return tls_recv(c, buf, room);
  do
    n = read(c->fd, buf, room);
  while (n < 0 && errno == EINTR);
  return n;
}

static void do_read(grace__conn *c) {
  grace__conn_loop *cl = c->cl;
  ssize_t n;

  if (c->flags & GRACE__CF_LINGER) {
    do
      n = read(c->fd, cl->rbuf, cl->rbuf_size);
    while (n < 0 && errno == EINTR);
    if (n < 0 && errno != EAGAIN) {
      grace__conn_close(c);
    } else if (n == 0) {
      /* The peer is done; what is still queued goes out first. */
      c->flags |= GRACE__CF_EOF;
      if (c->wlen == 0)
        grace__conn_close(c);
      else
        update_read(c);
    }
    return;
  }
  size_t room = cl->rbuf_size;
  if (c->flags & GRACE__CF_PAUSED) {
    room = c->rlen < rmax_of(c) ? rmax_of(c) - c->rlen : 0;
    if (room > cl->rbuf_size)
      room = cl->rbuf_size;
    if (room == 0) {
      update_read(c);
      return;
    }
  }
  n = conn_recv(c, cl->rbuf, room);
  if (c->flags & GRACE__CF_CLOSED)
    return; /* a TLS answer could not be sent */
  if (n > 0) {
    if (c->flags & GRACE__CF_PAUSED) {
      /* Read-ahead while the protocol is paused: pipelined requests, and
       * an EOF that tells a handler its client left.  A protocol that
       * waits for more bytes (reoffer) gets them with what it left. */
      if (keep(c, cl->rbuf, (size_t)n) != 0) {
        grace__conn_close(c);
        return;
      }
      if (c->proto->reoffer)
        deliver(c);
      if (!grace__conn_closing(c))
        update_read(c);
      return;
    }
    if (c->rlen > 0) {
      if (keep(c, cl->rbuf, (size_t)n) != 0) {
        grace__conn_close(c);
        return;
      }
      deliver(c);
    } else {
      offer(c, cl->rbuf, (size_t)n, 0);
    }
    if (!grace__conn_closing(c))
      update_read(c);
    return;
  }
  if (n == 0) {
    peer_eof(c);
    return;
  }
  if (errno != EAGAIN)
    grace__conn_close(c);
}

void grace__conn_read_now(grace__conn *c) {
  if (grace__conn_closing(c) ||
      (c->flags & (GRACE__CF_MEM | GRACE__CF_EOF | GRACE__CF_IN_READ)))
    return;
  grace__conn_ref(c);
  do_read(c);
  grace__conn_unref(c);
}

ssize_t grace__conn_mem_feed(grace__conn *c, const void *p, size_t n) {
  if (c->flags & GRACE__CF_CLOSED)
    return GRACE_ECLOSED;
  grace__conn_ref(c);
  if (n == 0) {
    peer_eof(c);
  } else {
    /* As socket reads would: at most the read-ahead's worth is offered at
     * a time, and once the protocol pauses only what fits in the
     * read-ahead is kept, so a paused protocol holds at most rmax_of(c). */
    const uint8_t *b = p;
    size_t done = 0;
    while (done < n && !(c->flags & GRACE__CF_CLOSED)) {
      if (c->flags & GRACE__CF_ENDING) {
        done = n; /* lingering: input is discarded */
      } else if (c->rlen > 0 || (c->flags & GRACE__CF_PAUSED)) {
        size_t room = c->rlen < rmax_of(c) ? rmax_of(c) - c->rlen : 0;
        if (room > n - done)
          room = n - done;
        if (keep(c, b + done, room) != 0) {
          grace__conn_close(c);
          break;
        }
        done += room;
        if (c->proto->reoffer && room > 0) {
          /* Offered again with what it left; the loop goes on with the
           * rest, in pieces the read-ahead holds. */
          deliver(c);
          continue;
        }
        c->flags |= GRACE__CF_PAUSED;
        break;
      } else {
        size_t piece = n - done < rmax_of(c) ? n - done : rmax_of(c);
        offer(c, b + done, piece, 0);
        done += piece;
      }
    }
    n = done;
  }
  grace__conn_unref(c);
  return (ssize_t)n;
}

static void on_resume_post(grace__loop *loop, grace__post *post) {
  grace__conn *c = grace__container_of(post, grace__conn, post);
  (void)loop;
  c->flags &= ~(uint32_t)GRACE__CF_RESUME_POSTED;
  if (!grace__conn_closing(c)) {
    c->depth = 0;
    deliver(c);
    if (!grace__conn_closing(c))
      update_read(c);
  }
  grace__conn_unref(c);
}

void grace__conn_resume(grace__conn *c) {
  if (grace__conn_closing(c) || (c->flags & GRACE__CF_IN_READ))
    return;
  if (c->rlen == 0) {
    c->flags &= ~(uint32_t)GRACE__CF_PAUSED;
    update_read(c);
    return;
  }
  if (c->depth >= MAX_DEPTH && c->cl != NULL) {
    if (!(c->flags & GRACE__CF_RESUME_POSTED)) {
      c->flags |= GRACE__CF_RESUME_POSTED;
      grace__conn_ref(c);
      c->post.fn = on_resume_post;
      grace__loop_post(c->cl->loop, &c->post);
    }
    return;
  }
  grace__conn_ref(c);
  c->depth++;
  deliver(c);
  c->depth--;
  if (!grace__conn_closing(c))
    update_read(c);
  grace__conn_unref(c);
}

static void on_poll(uv_poll_t *handle, int status, int events) {
  grace__conn *c = handle->data;
  if (c->flags & GRACE__CF_CLOSED)
    return;
  grace__conn_ref(c);
  if (status < 0) {
    grace__conn_close(c);
    goto out;
  }
  if (events & UV_WRITABLE) {
    size_t before = c->wlen;
    if (flush(c) != 0)
      goto out;
    if (before > 0 && c->wlen == 0)
      after_flush(c);
    if (c->flags & GRACE__CF_CLOSED)
      goto out;
  }
  if ((events & (UV_READABLE | UV_DISCONNECT)) && (c->events & UV_READABLE))
    do_read(c);
out:
  grace__conn_unref(c);
}

/* ---- protocol services ----------------------------------------------------
 */

/* A TLS record may hold more than one read took, and the socket may have
 * nothing more to say: what the SSL holds is read in a later loop turn
 * (a post, which a poll on an empty socket would never give). */
static void on_tls_post(grace__loop *loop, grace__post *post) {
  grace__conn_tls *t = grace__container_of(post, grace__conn_tls, post);
  grace__conn *c = t->conn;
  (void)loop;
  t->posted = 0;
  if (!grace__conn_closing(c) && !(c->flags & GRACE__CF_EOF) &&
      (c->events & UV_READABLE))
    do_read(c);
  grace__conn_unref(c);
}

static void tls_kick(grace__conn *c) {
  grace__conn_tls *t = c->tls;
  if (t->posted || !t->established || c->cl == NULL ||
      (c->flags & (GRACE__CF_CLOSED | GRACE__CF_EOF | GRACE__CF_LINGER)) ||
      (!SSL_has_pending(t->ssl) && BIO_ctrl_pending(t->rbio) == 0))
    return;
  t->posted = 1;
  grace__conn_ref(c);
  t->post.fn = on_tls_post;
  grace__loop_post(c->cl->loop, &t->post);
}

int grace__conn_set_tls(grace__conn *c, grace_tls *tls) {
  grace__conn_tls *t;
  if (c->tls != NULL || (c->flags & GRACE__CF_MEM) || tls == NULL)
    return GRACE_EINVAL;
  t = calloc(1, sizeof(*t));
  if (t == NULL)
    return GRACE_ENOMEM;
  grace__list_init(&t->post.link);
  t->ssl = grace__tls_ssl_new(tls);
  t->rbio = BIO_new(BIO_s_mem());
  t->wbio = BIO_new(BIO_s_mem());
  if (t->ssl == NULL || t->rbio == NULL || t->wbio == NULL) {
    BIO_free(t->rbio);
    BIO_free(t->wbio);
    SSL_free(t->ssl);
    free(t);
    ERR_clear_error();
    return GRACE_ENOMEM;
  }
  /* An empty memory BIO reads as "retry", not EOF. */
  BIO_set_mem_eof_return(t->rbio, -1);
  SSL_set_bio(t->ssl, t->rbio, t->wbio);
  SSL_set_accept_state(t->ssl);
  t->conn = c;
  c->tls = t;
  return 0;
}

const char *grace__conn_alpn(const grace__conn *c, unsigned *len) {
  const unsigned char *p = NULL;
  *len = 0;
  if (c->tls == NULL || !c->tls->established)
    return NULL;
  SSL_get0_alpn_selected(c->tls->ssl, &p, len);
  return *len > 0 ? (const char *)p : NULL;
}

void grace__conn_set_proto(grace__conn *c, const grace__conn_proto *proto,
                           void *pdata) {
  c->proto = proto;
  c->pdata = pdata;
}

void grace__conn_timer(grace__conn *c, unsigned list) {
  if (c->cl == NULL || (c->flags & GRACE__CF_CLOSED))
    return;
  grace__loop_tlist_add(c->cl->loop, list, &c->timer[slot_of(list)]);
}

int grace__conn_timer_armed(const grace__conn *c, unsigned list) {
  return !grace__list_empty(&c->timer[slot_of(list)].link);
}

void grace__conn_timer_stop(grace__conn *c, unsigned list) {
  grace__list_unlink(&c->timer[slot_of(list)].link);
}

void grace__conn_ptimer_init(grace__conn_ptimer *t, grace__conn *c) {
  grace__list_init(&t->node.link);
  t->node.deadline = 0;
  t->conn = c;
}

void grace__conn_ptimer_arm(grace__conn_ptimer *t, unsigned list) {
  grace__conn *c = t->conn;
  if (c->cl == NULL || (c->flags & GRACE__CF_CLOSED) || !is_protocol_list(list))
    return;
  grace__loop_tlist_add(c->cl->loop, list, &t->node);
}

void grace__conn_ptimer_stop(grace__conn_ptimer *t) {
  grace__list_unlink(&t->node.link);
}

int grace__conn_ptimer_armed(const grace__conn_ptimer *t) {
  return !grace__list_empty(&t->node.link);
}

void grace__conn_set_state(grace__conn *c, int st) {
  grace__conn_reg *reg = c->reg;
  if (c->state == st)
    return;
  if (c->state == GRACE__CS_ACTIVE)
    atomic_fetch_sub(&reg->active, 1);
  else if (c->state == GRACE__CS_IDLE)
    atomic_fetch_sub(&reg->idle, 1);
  if (st == GRACE__CS_ACTIVE)
    atomic_fetch_add(&reg->active, 1);
  else if (st == GRACE__CS_IDLE)
    atomic_fetch_add(&reg->idle, 1);
  c->state = (uint8_t)st;
  if (reg->on_state != NULL)
    reg->on_state(c, st, reg->data);
}

void grace__conn_count_cut(grace__conn *c, unsigned n) {
  atomic_fetch_add(&c->reg->timeouts, 1);
  atomic_fetch_add(&c->reg->cut, n);
}

void grace__conn_shutdown(grace__conn *c) {
  if (c->flags & (GRACE__CF_SHUTDOWN | GRACE__CF_CLOSED))
    return;
  c->flags |= GRACE__CF_SHUTDOWN;
  if (c->proto->on_shutdown != NULL)
    c->proto->on_shutdown(c);
}

grace__loop *grace__conn_get_loop(const grace__conn *c) {
  return c->cl != NULL ? c->cl->loop : NULL;
}

int grace__conn_shutting_down(const grace__conn *c) {
  return (c->flags & GRACE__CF_SHUTDOWN) != 0;
}
