/*
 * A caller's protocol on the one transport (net/conn.h): the protocol
 * table that turns the transport's events into the callbacks of
 * grace/tcp.h, the busy / idle bookkeeping that the drain follows, and the
 * connection handle.
 *
 * What a connection does with its input: on_data gets everything kept
 * and newly read (the transport's read-ahead, offered again at each read:
 * the reoffer mode), takes what it can, and what it leaves waits.  The
 * read slot of the transport's timers holds the read timeout while a
 * partial command waits, the idle timeout while nothing does, and nothing
 * while the connection is busy or its input is held for its writes.
 */
#include <stdlib.h>
#include <string.h>

#include "tcp/tcp_int.h"

static int has(const grace_tcp_conn *t, uint32_t f) {
  return (t->flags & f) != 0;
}

/* The read slot's timer for a connection that is not closing: |pending|
 * bytes of input wait. */
static void arm_read(grace_tcp_conn *t, size_t pending) {
  grace__conn *c = t->c;
  if (has(t, GRACE__TC_BUSY | GRACE__TC_WRITE_HELD) || has(t, GRACE__TC_EOF))
    grace__conn_timer_stop(c, GRACE__TL_IDLE);
  else if (pending > 0)
    grace__conn_timer(c, GRACE__TL_HEADER);
  else
    grace__conn_timer(c, GRACE__TL_IDLE);
}

/* The connection is idle with no input left to serve, after a command
 * (|min| DUE) or at a moment of the shutdown, its beginning or the end of
 * the close spread (|min| NOW): it closes when the peer is gone, or when
 * the drain has reached it at stage |min| or later.  Only the second kind
 * counts as idle_closed: the first is closed after its answer. */
static void idle_now(grace_tcp_conn *t, int min) {
  grace__conn *c = t->c;
  if (grace__conn_closing(c) || has(t, GRACE__TC_BUSY | GRACE__TC_IN_DATA))
    return;
  if (has(t, GRACE__TC_EOF)) {
    grace__conn_end(c, 0); /* answers go out, then the close */
    return;
  }
  if (!has(t, GRACE__TC_OPENED) || has(t, GRACE__TC_KEEP))
    return;
  if (grace__tcp_drain_stage(t) >= min) {
    if (min == GRACE__DRAIN_NOW)
      atomic_fetch_add(&c->reg->idle_closed, 1);
    grace__conn_end(c, 1);
  }
}

/* After something that may have changed whether the connection waits on
 * its protocol (turned idle, its queue drained, the peer's EOF): the
 * timers, and the close an idle connection gets at its end or in a
 * drain.  Not inside on_data (the read callback settles then). */
static void settle(grace_tcp_conn *t) {
  grace__conn *c = t->c;
  if (grace__conn_closing(c) || has(t, GRACE__TC_IN_DATA) ||
      !has(t, GRACE__TC_OPENED) || has(t, GRACE__TC_BUSY))
    return;
  if (has(t, GRACE__TC_EOF) && !has(t, GRACE__TC_WRITE_HELD)) {
    /* Everything before the EOF was offered: what is left is a command
     * that will never be complete. */
    grace__conn_end(c, 0);
    return;
  }
  arm_read(t, c->rlen);
  if (c->rlen == 0)
    idle_now(t, GRACE__DRAIN_DUE);
}

/* ---- the protocol table ---------------------------------------------------
 */

static ssize_t tcp_on_read(grace__conn *c, const uint8_t *p, size_t n) {
  grace_tcp_conn *t = c->pdata;
  grace_tcp_server *srv = t->srv;
  if (!has(t, GRACE__TC_OPENED))
    return 0;
  if (grace__conn_queued(c) > srv->opts.write_high_water) {
    /* The peer does not read its answers: read no more of its commands
     * until it does (on_flushed); the send timeout cuts one that never
     * does. */
    t->flags |= GRACE__TC_WRITE_HELD;
    grace__conn_timer_stop(c, GRACE__TL_IDLE);
    return 0;
  }
  t->flags |= GRACE__TC_IN_DATA;
  size_t took = srv->cb.on_data(t, (const char *)p, n, srv->data);
  t->flags &= ~(uint32_t)GRACE__TC_IN_DATA;
  if (took > n)
    took = n;
  if (grace__conn_closing(c))
    return (ssize_t)took;
  arm_read(t, n - took);
  if (took == n)
    idle_now(t, GRACE__DRAIN_DUE);
  return (ssize_t)took;
}

static void tcp_on_eof(grace__conn *c) {
  grace_tcp_conn *t = c->pdata;
  t->flags |= GRACE__TC_EOF;
  if (!has(t, GRACE__TC_OPENED)) {
    grace__conn_close(c);
    return;
  }
  settle(t);
}

static void tcp_on_flushed(grace__conn *c) {
  grace_tcp_conn *t = c->pdata;
  grace_tcp_server *srv = t->srv;
  if (has(t, GRACE__TC_WANT_WRITABLE)) {
    t->flags &= ~(uint32_t)GRACE__TC_WANT_WRITABLE;
    if (srv->cb.on_writable != NULL)
      srv->cb.on_writable(t, srv->data);
    if (grace__conn_closing(c))
      return;
  }
  if (has(t, GRACE__TC_WRITE_HELD) &&
      grace__conn_queued(c) <= srv->opts.write_high_water) {
    t->flags &= ~(uint32_t)GRACE__TC_WRITE_HELD;
    grace__conn_resume(c);
    settle(t);
  }
}

static void tcp_on_timer(grace__conn *c, unsigned list) {
  /* The idle timeout closes quietly; the read and send timeouts cut a
   * peer that stalls (a busy connection is counted as cut on close). */
  if (list == GRACE__TL_HEADER || list == GRACE__TL_SEND)
    atomic_fetch_add(&c->reg->timeouts, 1);
  grace__conn_close(c);
}

/* Begins the drain of |t| (on_open has run). */
static void shutdown_now(grace_tcp_conn *t) {
  grace__conn *c = t->c;
  grace_tcp_server *srv = t->srv;
  if (srv->cb.on_shutdown != NULL &&
      srv->cb.on_shutdown(t, srv->data) != 0)
    t->flags |= GRACE__TC_KEEP;
  if (grace__conn_closing(c) || has(t, GRACE__TC_KEEP | GRACE__TC_BUSY))
    return;
  if (grace__tcp_drain_stage(t) != GRACE__DRAIN_NOW)
    return; /* a close spread: its moment, or the window's end, decides */
  /* Idle: serve what it has already sent (a command that arrived just
   * before is answered), then close unless that made it busy or left a
   * partial command. */
  if (c->rlen > 0)
    grace__conn_resume(c);
  else
    grace__conn_read_now(c);
  if (!grace__conn_closing(c) && c->rlen == 0)
    idle_now(t, GRACE__DRAIN_NOW);
}

static void tcp_on_shutdown(grace__conn *c) {
  grace_tcp_conn *t = c->pdata;
  if (grace__conn_closing(c))
    return; /* ending already: nothing to tell */
  if (!has(t, GRACE__TC_OPENED)) {
    t->flags |= GRACE__TC_SHUTDOWN_PENDING; /* after on_open */
    return;
  }
  shutdown_now(t);
}

void grace__tcp_spread_over(grace__conn *c) {
  grace_tcp_conn *t = c->pdata;
  if (c->proto != &grace__tcp_proto || grace__conn_closing(c) ||
      !grace__conn_shutting_down(c) || !has(t, GRACE__TC_OPENED) ||
      c->rlen > 0)
    return;
  idle_now(t, GRACE__DRAIN_NOW);
}

static unsigned tcp_on_force(grace__conn *c) {
  grace_tcp_conn *t = c->pdata;
  return has(t, GRACE__TC_BUSY) ? 1 : 0;
}

static void run_on_close(grace_tcp_conn *t) {
  grace_tcp_server *srv = t->srv;
  if (srv->cb.on_close != NULL)
    srv->cb.on_close(t, srv->data);
}

static void on_close_post(grace__loop *loop, grace__post *post) {
  grace_tcp_conn *t = grace__container_of(post, grace_tcp_conn, close_post);
  grace__conn *c = t->c;
  (void)loop;
  run_on_close(t);
  grace__conn_unref(c);
}

static void tcp_on_close(grace__conn *c) {
  grace_tcp_conn *t = c->pdata;
  if (has(t, GRACE__TC_BUSY))
    atomic_fetch_add(&c->reg->cut, 1); /* closed before it was done */
  if (!has(t, GRACE__TC_OPENED))
    return;
  /* The protocol hears of the close on a fresh stack, never inside one of
   * its own calls (a write that met a reset), so that it may free its
   * state in on_close.  A force (close_all, from the loop's own event)
   * and a memory connection call it at once. */
  if (t->tl == NULL || t->tl->base.cl.closing) {
    run_on_close(t);
    return;
  }
  grace__conn_ref(c);
  t->close_post.fn = on_close_post;
  grace__loop_post(t->tl->base.cl.loop, &t->close_post);
}

static void tcp_on_free(grace__conn *c) { free(c->pdata); }

const grace__conn_proto grace__tcp_proto = {
    .on_read = tcp_on_read,
    .on_eof = tcp_on_eof,
    .on_flushed = tcp_on_flushed,
    .on_timer = tcp_on_timer,
    .on_shutdown = tcp_on_shutdown,
    .on_force = tcp_on_force,
    .on_close = tcp_on_close,
    .on_free = tcp_on_free,
    .reoffer = 1,
};

/* ---- lifetime -------------------------------------------------------------
 */

grace_tcp_conn *grace__tcp_conn_new(grace_tcp_server *srv, grace__tcp_loop *tl,
                                    grace__conn *c) {
  grace_tcp_conn *t = calloc(1, sizeof(*t));
  if (t == NULL)
    return NULL;
  t->c = c;
  t->srv = srv;
  t->tl = tl;
  grace__list_init(&t->close_post.link);
  return t;
}

void grace__tcp_conn_open(grace_tcp_conn *t) {
  grace__conn *c = t->c;
  grace_tcp_server *srv = t->srv;
  t->flags |= GRACE__TC_OPENED;
  grace__conn_ref(c);
  if (srv->cb.on_open != NULL)
    srv->cb.on_open(t, srv->data);
  if (!grace__conn_closing(c)) {
    if (!has(t, GRACE__TC_BUSY))
      grace__conn_set_state(c, GRACE__CS_IDLE);
    arm_read(t, c->rlen);
    if (has(t, GRACE__TC_SHUTDOWN_PENDING)) {
      t->flags &= ~(uint32_t)GRACE__TC_SHUTDOWN_PENDING;
      shutdown_now(t);
    }
  }
  grace__conn_unref(c);
}

grace__conn *grace__tcp_mem_conn(grace_tcp_server *srv, size_t room) {
  grace__conn *c = grace__conn_new_mem(&srv->sv.reg, &grace__tcp_proto, NULL,
                                       room);
  if (c == NULL)
    return NULL;
  grace_tcp_conn *t = grace__tcp_conn_new(srv, NULL, c);
  if (t == NULL) {
    grace__conn_mem_free(c);
    return NULL;
  }
  c->id = atomic_fetch_add(&srv->sv.next_id, 1) + 1;
  grace__conn_set_proto(c, &grace__tcp_proto, t);
  grace__tcp_conn_open(t);
  return c;
}

/* ---- the handle -----------------------------------------------------------
 */

int grace_tcp_conn_write(grace_tcp_conn *conn, const void *bytes, size_t len) {
  grace__conn *c = conn->c;
  if (grace__conn_closing(c))
    return GRACE_ECLOSED;
  if (grace__conn_queued(c) > conn->srv->opts.write_high_water) {
    conn->flags |= GRACE__TC_WANT_WRITABLE;
    return GRACE_EBUSY;
  }
  return grace__conn_write(c, bytes, len);
}

void grace_tcp_conn_set_busy(grace_tcp_conn *conn, bool busy) {
  grace__conn *c = conn->c;
  if (grace__conn_closing(c) || busy == has(conn, GRACE__TC_BUSY))
    return;
  if (busy) {
    conn->flags |= GRACE__TC_BUSY;
    atomic_fetch_add(&conn->srv->st_busy_total, 1);
    grace__conn_set_state(c, GRACE__CS_ACTIVE);
    grace__conn_timer_stop(c, GRACE__TL_IDLE);
    return;
  }
  conn->flags &= ~(uint32_t)GRACE__TC_BUSY;
  grace__conn_set_state(c, GRACE__CS_IDLE);
  if (has(conn, GRACE__TC_IN_DATA))
    return; /* the read callback settles once on_data returns */
  grace__conn_ref(c);
  /* Commands that arrived meanwhile are served first. */
  if (c->rlen > 0)
    grace__conn_resume(c);
  settle(conn);
  grace__conn_unref(c);
}

bool grace_tcp_conn_is_busy(grace_tcp_conn *conn) {
  return has(conn, GRACE__TC_BUSY);
}

void grace_tcp_conn_end(grace_tcp_conn *conn) {
  grace__conn *c = conn->c;
  if (grace__conn_closing(c))
    return;
  if (has(conn, GRACE__TC_BUSY)) {
    /* Answered: done, not cut. */
    conn->flags &= ~(uint32_t)GRACE__TC_BUSY;
    grace__conn_set_state(c, GRACE__CS_IDLE);
  }
  grace__conn_end(c, 1);
}

void grace_tcp_conn_close(grace_tcp_conn *conn) { grace__conn_close(conn->c); }

bool grace_tcp_conn_closed(grace_tcp_conn *conn) {
  return grace__conn_closing(conn->c) != 0;
}

bool grace_tcp_conn_shutting_down(grace_tcp_conn *conn) {
  return grace__conn_shutting_down(conn->c) != 0;
}

void grace_tcp_conn_resume(grace_tcp_conn *conn) {
  grace__conn *c = conn->c;
  if (grace__conn_closing(c) || has(conn, GRACE__TC_IN_DATA))
    return;
  grace__conn_ref(c);
  grace__conn_resume(c);
  settle(conn);
  grace__conn_unref(c);
}

size_t grace_tcp_conn_queued(grace_tcp_conn *conn) {
  return grace__conn_queued(conn->c);
}

void grace_tcp_conn_set_data(grace_tcp_conn *conn, void *data) {
  conn->user = data;
}

void *grace_tcp_conn_data(grace_tcp_conn *conn) { return conn->user; }

uint64_t grace_tcp_conn_id(grace_tcp_conn *conn) { return conn->c->id; }

grace_tcp_server *grace_tcp_conn_server(grace_tcp_conn *conn) {
  return conn->srv;
}

int grace_tcp_conn_peer(grace_tcp_conn *conn, struct sockaddr *addr,
                        socklen_t *len) {
  grace__conn *c = conn->c;
  if (addr == NULL || len == NULL)
    return GRACE_EINVAL;
  if (c->peer_len == 0)
    return GRACE_ENOENT;
  socklen_t n = c->peer_len < *len ? c->peer_len : *len;
  memcpy(addr, &c->peer, n);
  *len = c->peer_len;
  return 0;
}

struct uv_loop_s *grace_tcp_conn_loop(grace_tcp_conn *conn) {
  grace__loop *loop = grace__conn_get_loop(conn->c);
  return loop != NULL ? loop->uv : NULL;
}

void grace_tcp_conn_hold(grace_tcp_conn *conn) { grace__conn_ref(conn->c); }

typedef struct tcp_post {
  grace__post post;
  grace_tcp_conn *conn;
  grace_tcp_post_cb fn;
  void *data;
} tcp_post;

static void on_post(grace__loop *loop, grace__post *post) {
  tcp_post *tp = grace__container_of(post, tcp_post, post);
  grace_tcp_conn *conn = tp->conn;
  (void)loop;
  tp->fn(conn, tp->data);
  free(tp);
  grace__conn_unref(conn->c); /* the hold */
}

int grace_tcp_conn_post(grace_tcp_conn *conn, grace_tcp_post_cb fn,
                        void *data) {
  if (conn == NULL || fn == NULL)
    return GRACE_EINVAL;
  /* The loop pointer was set when the connection started and never
   * changes; the hold keeps the struct. */
  grace__loop *loop = conn->tl != NULL ? conn->tl->base.cl.loop : NULL;
  if (loop == NULL)
    return GRACE_ESTATE;
  tcp_post *tp = malloc(sizeof(*tp));
  if (tp == NULL)
    return GRACE_ENOMEM;
  tp->conn = conn;
  tp->fn = fn;
  tp->data = data;
  tp->post.fn = on_post;
  grace__list_init(&tp->post.link);
  grace__loop_post(loop, &tp->post);
  return 0;
}
