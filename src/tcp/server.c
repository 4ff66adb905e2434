/*
 * The TCP server's face: options, listeners, loop threads, and the
 * coordination of the shutdown and the close across the loops.  The shape
 * is the HTTP server's (src/http/server.c); the protocol is the caller's
 * (conn.c).
 */
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "grace/signal.h"
#include "tcp/tcp_int.h"

void grace_tcp_options_init(grace_tcp_options *opts) {
  memset(opts, 0, sizeof(*opts));
  opts->size = sizeof(*opts);
  opts->idle_timeout = 0; /* no limit, as Redis' default */
  opts->read_timeout = 60 * GRACE_SECOND;
  opts->send_timeout = 60 * GRACE_SECOND;
  opts->close_spread = 0;
  opts->max_input = 64 * 1024;
  opts->write_high_water = 256 * 1024;
  opts->backlog = 511;
}

/* ---- the close spread ------------------------------------------------------
 */

static int64_t spread_now(const grace_tcp_server *srv) {
  return srv->clock.now != NULL ? srv->clock.now(srv->clock.data) : grace_now();
}

void grace__tcp_server_set_clock(grace_tcp_server *srv,
                                 const grace__clock *clock) {
  srv->clock = *clock;
}

void grace_tcp_server_set_close_spread(grace_tcp_server *srv,
                                       grace_duration d) {
  if (srv == NULL)
    return;
  grace_duration cur = atomic_load(&srv->close_spread);
  while (d > cur &&
         !atomic_compare_exchange_weak(&srv->close_spread, &cur, d)) {
  }
}

void grace__tcp_spread_begin(grace_tcp_server *srv) {
  srv->spread_len = atomic_load(&srv->close_spread);
  srv->spread_begin = spread_now(srv);
}

grace_duration grace__tcp_spread_offset(const grace_tcp_server *srv,
                                        uint64_t id) {
  /* As the HTTP server's: the fractional part of id * (golden ratio) is
   * equidistributed, and consecutive ids land spread out; the moments
   * fill the window's first nine tenths. */
  uint64_t mix = id * UINT64_C(0x9E3779B97F4A7C15);
  double frac = (double)(mix >> 11) * 0x1p-53;
  return (grace_duration)((double)srv->spread_len * 0.9 * frac);
}

int grace__tcp_drain_stage(const grace_tcp_conn *t) {
  const grace_tcp_server *srv = t->srv;
  if (!grace__conn_shutting_down(t->c))
    return GRACE__TCP_DRAIN_NONE;
  if (srv->spread_len <= 0 || (t->tl != NULL && t->tl->spread_over))
    return GRACE__TCP_DRAIN_NOW;
  int64_t elapsed = spread_now(srv) - srv->spread_begin;
  if (elapsed >= srv->spread_len)
    return GRACE__TCP_DRAIN_NOW;
  return elapsed >= grace__tcp_spread_offset(srv, t->c->id)
             ? GRACE__TCP_DRAIN_DUE
             : GRACE__TCP_DRAIN_NONE;
}

static void on_spread_over(uv_timer_t *timer) {
  grace__tcp_loop *tl = timer->data;
  tl->spread_over = 1;
  if (!tl->cl.closing)
    grace__conn_loop_each(&tl->cl, grace__tcp_spread_over);
}

/* The shutdown reached this loop: arms the end of the window. */
static void spread_start(grace__tcp_loop *tl) {
  grace_tcp_server *srv = tl->srv;
  if (srv->spread_len <= 0)
    return;
  grace_duration left = srv->spread_len - (spread_now(srv) - srv->spread_begin);
  if (left <= 0) {
    tl->spread_over = 1;
    return;
  }
  uint64_t ms = (uint64_t)((left + GRACE_MILLISECOND - 1) / GRACE_MILLISECOND);
  uv_timer_start(&tl->spread_timer, on_spread_over, ms, 0);
}

/* ---- connections ----------------------------------------------------------
 */

static void maybe_drained(grace_tcp_server *srv) {
  if (!atomic_load(&srv->shutdown) || !atomic_load(&srv->listeners_closed) ||
      atomic_load(&srv->reg.nconns) != 0)
    return;
  int expected = 0;
  if (!atomic_compare_exchange_strong(&srv->drained, &expected, 1))
    return;
  /* The callback first, so whoever wakes on the descriptor sees what it
   * did. */
  if (srv->drained_cb != NULL)
    srv->drained_cb(srv, srv->drained_data);
  uint64_t one = 1;
  ssize_t rv;
  do
    rv = write(srv->drained_fd, &one, sizeof(one));
  while (rv < 0 && errno == EINTR);
}

static void on_conn_gone(grace__conn_reg *reg, void *data) {
  (void)reg;
  maybe_drained(data);
}

/* On the connection's own loop: its protocol state, the socket, on_open. */
static void adopt(grace__tcp_loop *tl, grace__conn *c) {
  grace_tcp_conn *t = grace__tcp_conn_new(tl->srv, tl, c);
  if (t == NULL) {
    grace__conn_discard(c);
    return;
  }
  grace__conn_set_proto(c, &grace__tcp_proto, t);
  grace__conn_ref(c); /* so that a failed start leaves |c| to look at */
  if (grace__conn_start(c, &tl->cl) == 0)
    grace__tcp_conn_open(t);
  grace__conn_unref(c);
}

static void on_handoff(grace__loop *loop, grace__post *post) {
  grace__conn *c = grace__container_of(post, grace__conn, post);
  adopt(loop->data, c);
}

static void on_accept(grace__listener *l, int fd) {
  grace_tcp_server *srv = l->data;
  grace__conn *c = grace__conn_new(&srv->reg, fd, &grace__tcp_proto, NULL);
  if (c == NULL) {
    close(fd);
    return;
  }
  c->id = atomic_fetch_add(&srv->next_id, 1) + 1;
  c->rmax = srv->opts.max_input;
  unsigned i = atomic_fetch_add(&srv->next_loop, 1) % srv->set.n;
  grace__loop *target = &srv->set.loops[i];
  if (target == l->loop) {
    adopt(target->data, c);
  } else {
    c->post.fn = on_handoff;
    grace__loop_post(target, &c->post);
  }
}

static uint64_t ms(grace_duration d) {
  return (uint64_t)(d / GRACE_MILLISECOND);
}

static int on_open(grace__loop *loop) {
  grace_tcp_server *srv = loop->set->data;
  grace__tcp_loop *tl = &srv->tls[loop->index];
  grace__conn_loop *cl = &tl->cl;
  loop->data = tl;
  cl->loop = loop;
  int rv = grace__conn_loop_open(cl);
  if (rv != 0)
    return rv;
  rv = uv_timer_init(loop->uv, &tl->spread_timer);
  if (rv != 0)
    return rv;
  tl->spread_timer.data = tl;
  /* The read slot: HEADER is the read timeout (a partial command), IDLE
   * the idle timeout. */
  grace__conn_loop_timeout(cl, GRACE__TL_HEADER, ms(srv->opts.read_timeout));
  grace__conn_loop_timeout(cl, GRACE__TL_IDLE, ms(srv->opts.idle_timeout));
  grace__conn_loop_timeout(cl, GRACE__TL_LINGER, GRACE__CONN_LINGER_MS);
  grace__conn_loop_timeout(cl, GRACE__TL_SEND, ms(srv->opts.send_timeout));
  if (loop->index != 0)
    return 0;
  for (unsigned i = 0; i < srv->nlisteners; i++) {
    rv = grace__listener_start(&srv->listeners[i], loop, srv->listen_fds[i],
                               on_accept, srv);
    if (rv != 0)
      return rv;
  }
  return 0;
}

static void close_listeners(grace_tcp_server *srv, int drain) {
  for (unsigned i = 0; i < srv->nlisteners; i++)
    grace__listener_close(&srv->listeners[i], drain);
  pthread_mutex_lock(&srv->lock);
  atomic_store(&srv->listeners_closed, 1);
  pthread_cond_broadcast(&srv->cond);
  pthread_mutex_unlock(&srv->lock);
}

static void on_events(grace__loop *loop, unsigned bits) {
  grace__tcp_loop *tl = loop->data;
  grace_tcp_server *srv = tl->srv;

  if ((bits & GRACE__TCP_EV_SHUTDOWN) && !tl->cl.shutting_down) {
    if (loop->index == 0) {
      close_listeners(srv, 1);
      maybe_drained(srv);
    }
    spread_start(tl);
    grace__conn_loop_shutdown(&tl->cl);
  }
  if ((bits & GRACE__TCP_EV_CLOSE) && !tl->cl.closing) {
    if (loop->index == 0 && !atomic_load(&srv->listeners_closed))
      close_listeners(srv, 0);
    unsigned cut = grace__conn_loop_close_all(&tl->cl);
    pthread_mutex_lock(&srv->lock);
    srv->cut += (int)cut;
    srv->loops_acked++;
    pthread_cond_broadcast(&srv->cond);
    pthread_mutex_unlock(&srv->lock);
  }
}

static void on_expire(grace__loop *loop, unsigned list, grace__tnode *node) {
  grace__tcp_loop *tl = loop->data;
  grace__conn_loop_expire(&tl->cl, list, node);
}

static void on_stop(grace__loop *loop) {
  grace__tcp_loop *tl = loop->data;
  if (loop->index == 0 && !atomic_load(&tl->srv->listeners_closed))
    close_listeners(tl->srv, 0);
  grace__conn_loop_close_all(&tl->cl);
}

/* ---- construction -------------------------------------------------------
 */

static int check_options(const grace_tcp_options *o) {
  if (o->read_timeout < 0 || o->idle_timeout < 0 || o->send_timeout < 0 ||
      o->close_spread < 0 || o->max_input < 1024 ||
      o->max_input > (1u << 30) || o->write_high_water > (1u << 30) ||
      o->backlog < 0 || o->loops > 256)
    return GRACE_EINVAL;
  return 0;
}

int grace_tcp_server_new(const grace_tcp_options *opts,
                         const grace_tcp_callbacks *cb, void *data,
                         grace_tcp_server **out) {
  grace_tcp_server *srv;
  int rv;

  if (cb == NULL || cb->on_data == NULL || out == NULL)
    return GRACE_EINVAL;
  if (opts != NULL && (opts->size == 0 || opts->size > sizeof(*opts)))
    return GRACE_EINVAL;
  srv = calloc(1, sizeof(*srv));
  if (srv == NULL)
    return GRACE_ENOMEM;
  /* A caller compiled against an older, shorter struct gets the defaults
   * for the fields it does not know. */
  grace_tcp_options_init(&srv->opts);
  if (opts != NULL)
    memcpy(&srv->opts, opts, opts->size);
  srv->opts.size = sizeof(srv->opts);
  if (check_options(&srv->opts) != 0) {
    free(srv);
    return GRACE_EINVAL;
  }
  if (srv->opts.loops == 0) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    srv->opts.loops = n > 0 ? (unsigned)(n > 256 ? 256 : n) : 1;
  }
  srv->cb = *cb;
  srv->data = data;
  grace_ignore_sigpipe();
  srv->drained_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (srv->drained_fd < 0) {
    rv = -errno;
    free(srv);
    return rv;
  }
  srv->tls = calloc(srv->opts.loops, sizeof(*srv->tls));
  if (srv->tls == NULL) {
    close(srv->drained_fd);
    free(srv);
    return GRACE_ENOMEM;
  }
  atomic_init(&srv->close_spread, srv->opts.close_spread);
  srv->reg.on_gone = on_conn_gone;
  srv->reg.data = srv;
  pthread_mutex_init(&srv->lock, NULL);
  pthread_cond_init(&srv->cond, NULL);
  *out = srv;
  return 0;
}

static int add_listen_fd(grace_tcp_server *srv, int fd) {
  unsigned n = srv->nlisteners + 1;
  int *fds = realloc(srv->listen_fds, n * sizeof(*fds));
  if (fds == NULL)
    return GRACE_ENOMEM;
  srv->listen_fds = fds;
  int *ports = realloc(srv->ports, n * sizeof(*ports));
  if (ports == NULL)
    return GRACE_ENOMEM;
  srv->ports = ports;
  fds[n - 1] = fd;
  ports[n - 1] = grace__socket_port(fd);
  srv->nlisteners = n;
  return 0;
}

int grace_tcp_server_listen(grace_tcp_server *srv, const char *addr) {
  int fd, rv;
  if (srv == NULL || addr == NULL)
    return GRACE_EINVAL;
  if (atomic_load(&srv->started))
    return GRACE_ESTATE;
  rv = grace__listen(addr, srv->opts.backlog, &fd);
  if (rv != 0)
    return rv;
  rv = add_listen_fd(srv, fd);
  if (rv != 0)
    close(fd);
  return rv;
}

int grace_tcp_server_listen_fd(grace_tcp_server *srv, int fd) {
  if (srv == NULL)
    return GRACE_EINVAL;
  if (atomic_load(&srv->started))
    return GRACE_ESTATE;
  int rv = grace__adopt_listen_fd(fd);
  if (rv != 0)
    return rv;
  return add_listen_fd(srv, fd);
}

int grace_tcp_server_port(grace_tcp_server *srv, unsigned index) {
  if (srv == NULL || index >= srv->nlisteners)
    return GRACE_EINVAL;
  return srv->ports[index];
}

int grace_tcp_server_start(grace_tcp_server *srv) {
  static const grace__loop_callbacks cbs = {
      .on_events = on_events,
      .on_expire = on_expire,
      .on_open = on_open,
      .on_stop = on_stop,
  };
  int rv;

  if (srv == NULL)
    return GRACE_EINVAL;
  if (srv->nlisteners == 0 || atomic_load(&srv->started))
    return GRACE_ESTATE;
  srv->listeners = calloc(srv->nlisteners, sizeof(*srv->listeners));
  if (srv->listeners == NULL)
    return GRACE_ENOMEM;
  for (unsigned i = 0; i < srv->opts.loops; i++) {
    srv->tls[i].srv = srv;
    rv = grace__conn_loop_init(&srv->tls[i].cl, NULL);
    if (rv != 0)
      goto fail;
  }
  rv = grace__loopset_init(&srv->set, srv->opts.loops, &cbs, srv);
  if (rv != 0)
    goto fail;
  rv = grace__loopset_start(&srv->set);
  if (rv != 0) {
    grace__loopset_free(&srv->set);
    goto fail;
  }
  /* The listeners own their descriptors now. */
  for (unsigned i = 0; i < srv->nlisteners; i++)
    srv->listen_fds[i] = -1;
  atomic_store(&srv->started, 1);
  return 0;

fail:
  for (unsigned i = 0; i < srv->opts.loops; i++)
    grace__conn_loop_free(&srv->tls[i].cl);
  free(srv->listeners);
  srv->listeners = NULL;
  return rv;
}

/* ---- shutdown and close -------------------------------------------------
 */

int grace_tcp_server_shutdown_begin(grace_tcp_server *srv, grace_tcp_cb drained,
                                    void *data) {
  if (srv == NULL)
    return GRACE_EINVAL;
  if (!atomic_load(&srv->started))
    return GRACE_ESTATE;
  pthread_mutex_lock(&srv->lock);
  if (atomic_load(&srv->shutdown)) {
    pthread_mutex_unlock(&srv->lock);
    return GRACE_ESHUTDOWN;
  }
  srv->drained_cb = drained;
  srv->drained_data = data;
  /* Before the loops learn of the shutdown (grace__loop_raise orders it
   * before their reads). */
  grace__tcp_spread_begin(srv);
  atomic_store(&srv->shutdown, 1);
  pthread_mutex_unlock(&srv->lock);

  for (unsigned i = 0; i < srv->set.n; i++)
    grace__loop_raise(&srv->set.loops[i], GRACE__TCP_EV_SHUTDOWN);

  /* Returns once the listeners are closed: from here on a new connection
   * is refused. */
  pthread_mutex_lock(&srv->lock);
  while (!atomic_load(&srv->listeners_closed))
    pthread_cond_wait(&srv->cond, &srv->lock);
  pthread_mutex_unlock(&srv->lock);
  return 0;
}

int grace_tcp_server_shutdown(grace_tcp_server *srv, grace_ctx *ctx) {
  int rv = grace_tcp_server_shutdown_begin(srv, NULL, NULL);
  if (rv != 0 && rv != GRACE_ESHUTDOWN)
    return rv;
  struct pollfd fds[2];
  nfds_t nfds = 1;
  fds[0].fd = srv->drained_fd;
  fds[0].events = POLLIN;
  if (ctx != NULL) {
    int dfd = grace_ctx_done_fd(ctx);
    if (dfd < 0)
      return dfd;
    fds[1].fd = dfd;
    fds[1].events = POLLIN;
    nfds = 2;
  }
  for (;;) {
    if (atomic_load(&srv->drained))
      return 0;
    if (ctx != NULL && grace_ctx_err(ctx) != 0)
      return grace_ctx_err(ctx);
    /* Both descriptors stay readable once ready: one wake-up is enough. */
    if (poll(fds, nfds, -1) < 0 && errno != EINTR)
      return -errno;
  }
}

int grace_tcp_server_drained_fd(grace_tcp_server *srv) {
  return srv->drained_fd;
}

int grace_tcp_server_close(grace_tcp_server *srv) {
  if (srv == NULL || !atomic_load(&srv->started))
    return 0;
  if (atomic_exchange(&srv->closed, 1))
    return 0;
  pthread_mutex_lock(&srv->lock);
  srv->loops_acked = 0;
  srv->cut = 0;
  pthread_mutex_unlock(&srv->lock);
  for (unsigned i = 0; i < srv->set.n; i++)
    grace__loop_raise(&srv->set.loops[i], GRACE__TCP_EV_CLOSE);
  pthread_mutex_lock(&srv->lock);
  while (srv->loops_acked < srv->set.n)
    pthread_cond_wait(&srv->cond, &srv->lock);
  int cut = srv->cut;
  pthread_mutex_unlock(&srv->lock);
  return cut;
}

void grace_tcp_server_free(grace_tcp_server *srv) {
  if (srv == NULL)
    return;
  if (atomic_load(&srv->started)) {
    grace_tcp_server_close(srv);
    /* The loops run what is posted to them (the on_close callbacks of the
     * connections just closed) before they stop. */
    grace__loopset_stop(&srv->set);
    grace__loopset_free(&srv->set);
  }
  for (unsigned i = 0; i < srv->nlisteners; i++)
    if (srv->listen_fds[i] >= 0)
      close(srv->listen_fds[i]);
  for (unsigned i = 0; i < srv->opts.loops; i++)
    grace__conn_loop_free(&srv->tls[i].cl);
  free(srv->listen_fds);
  free(srv->ports);
  free(srv->listeners);
  free(srv->tls);
  close(srv->drained_fd);
  pthread_cond_destroy(&srv->cond);
  pthread_mutex_destroy(&srv->lock);
  free(srv);
}

void grace_tcp_server_stats(grace_tcp_server *srv, grace_tcp_stats *out) {
  memset(out, 0, sizeof(*out));
  out->conns_accepted = atomic_load(&srv->reg.accepted);
  long open = atomic_load(&srv->reg.nconns);
  out->conns_open = open > 0 ? (uint64_t)open : 0;
  out->conns_busy = atomic_load(&srv->reg.active);
  out->conns_idle = atomic_load(&srv->reg.idle);
  out->busy_total = atomic_load(&srv->st_busy_total);
  out->conns_cut = atomic_load(&srv->reg.cut);
  out->idle_closed_on_shutdown = atomic_load(&srv->reg.idle_closed);
  out->timeouts = atomic_load(&srv->reg.timeouts);
  if (srv->listeners != NULL)
    for (unsigned i = 0; i < srv->nlisteners; i++)
      out->accept_backoffs += atomic_load(&srv->listeners[i].backoffs);
}
