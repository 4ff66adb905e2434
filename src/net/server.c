/*
 * The server layer HTTP and the caller's TCP protocol share: listeners,
 * loops, the close spread's window, shutdown, drain and close.  See
 * server.h for the contracts.
 */
#include "net/server.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "grace/error.h"
#include "grace/signal.h"

/* ---- the close spread ------------------------------------------------------
 */

static int64_t spread_now(const grace__server *sv) {
  return sv->clock.now != NULL ? sv->clock.now(sv->clock.data) : grace_now();
}

void grace__server_set_close_spread(grace__server *sv, grace_duration d) {
  grace_duration cur = atomic_load(&sv->close_spread);
  while (d > cur && !atomic_compare_exchange_weak(&sv->close_spread, &cur, d)) {
  }
}

void grace__server_spread_begin(grace__server *sv) {
  sv->spread_len = atomic_load(&sv->close_spread);
  sv->spread_begin = spread_now(sv);
}

grace_duration grace__server_spread_offset(const grace__server *sv,
                                           uint64_t id) {
  /* The fractional parts of id * (golden ratio) (Fibonacci hashing):
   * equidistributed, and any run of consecutive ids lands spread out; the
   * moments fill the window's first nine tenths. */
  uint64_t mix = id * UINT64_C(0x9E3779B97F4A7C15);
  double frac = (double)(mix >> 11) * 0x1p-53; /* [0, 1) */
  return (grace_duration)((double)sv->spread_len * 0.9 * frac);
}

int grace__server_drain_stage(const grace__server *sv,
                              const grace__server_loop *sl, uint64_t id) {
  if (sv->spread_len <= 0 || (sl != NULL && sl->spread_over))
    return GRACE__DRAIN_NOW;
  int64_t elapsed = spread_now(sv) - sv->spread_begin;
  if (elapsed >= sv->spread_len)
    return GRACE__DRAIN_NOW;
  return elapsed >= grace__server_spread_offset(sv, id) ? GRACE__DRAIN_DUE
                                                        : GRACE__DRAIN_NONE;
}

/* The window is over on this loop: every connection still open is
 * drained as without a spread. */
static void on_spread_over(uv_timer_t *t) {
  grace__server_loop *sl = t->data;
  sl->spread_over = 1;
  if (!sl->cl.closing)
    grace__conn_loop_each(&sl->cl, sl->sv->ops->spread_over);
}

/* A graceful shutdown reached this loop: arms the end of the window (or
 * ends it now if it is over already). */
static void spread_start(grace__server_loop *sl) {
  grace__server *sv = sl->sv;
  if (sv->spread_len <= 0)
    return;
  grace_duration left = sv->spread_len - (spread_now(sv) - sv->spread_begin);
  if (left <= 0) {
    sl->spread_over = 1;
    return;
  }
  /* Rounded up; whenever it fires, spread_over ends the window on this
   * loop (the loop's time may lag the server clock a little). */
  uint64_t ms = (uint64_t)((left + GRACE_MILLISECOND - 1) / GRACE_MILLISECOND);
  uv_timer_start(&sl->spread_timer, on_spread_over, ms, 0);
}

/* ---- connections ----------------------------------------------------------
 */

static void maybe_drained(grace__server *sv) {
  if (!atomic_load(&sv->shutdown) || !atomic_load(&sv->listeners_closed) ||
      atomic_load(&sv->reg.nconns) != 0)
    return;
  int expected = 0;
  if (!atomic_compare_exchange_strong(&sv->drained, &expected, 1))
    return;
  /* The callback first, so whoever wakes on the descriptor sees what the
   * callback did. */
  sv->ops->drained(sv);
  uint64_t one = 1;
  ssize_t rv;
  do
    rv = write(sv->drained_fd, &one, sizeof(one));
  while (rv < 0 && errno == EINTR);
  /* Embedded: the stop closes our handles (through the async handle, as
   * this may run inside a connection's callback). */
  if (sv->set.external && sv->uv_stop_asked)
    grace__loopset_stop(&sv->set);
}

static void on_conn_gone(grace__conn_reg *reg, void *data) {
  (void)reg;
  maybe_drained(data);
}

static void on_handoff(grace__loop *loop, grace__post *post) {
  grace__conn *c = grace__container_of(post, grace__conn, post);
  grace__server_loop *sl = loop->data;
  sl->sv->ops->adopt(sl, c);
}

static void on_accept(grace__listener *l, int fd) {
  grace__server *sv = l->data;
  grace__conn *c = grace__conn_new(&sv->reg, fd, sv->ops->proto, NULL);
  if (c == NULL) {
    close(fd);
    return;
  }
  c->id = atomic_fetch_add(&sv->next_id, 1) + 1;
  unsigned i = atomic_fetch_add(&sv->next_loop, 1) % sv->set.n;
  grace__loop *target = &sv->set.loops[i];
  if (target == l->loop) {
    grace__server_loop *sl = target->data;
    sv->ops->adopt(sl, c);
  } else {
    c->post.fn = on_handoff;
    grace__loop_post(target, &c->post);
  }
}

/* ---- the loops ------------------------------------------------------------
 */

static int on_open(grace__loop *loop) {
  grace__server *sv = loop->set->data;
  grace__server_loop *sl = sv->ops->loop_at(sv, loop->index);
  loop->data = sl;
  sl->cl.loop = loop;
  int rv = grace__conn_loop_open(&sl->cl);
  if (rv != 0)
    return rv;
  rv = uv_timer_init(loop->uv, &sl->spread_timer);
  if (rv != 0)
    return rv;
  sl->spread_timer.data = sl;
  sv->ops->loop_open(sl);
  if (loop->index != 0)
    return 0;
  for (unsigned i = 0; i < sv->nlisteners; i++) {
    rv = grace__listener_start(&sv->listeners[i], loop, sv->listen_fds[i],
                               on_accept, sv);
    if (rv != 0)
      return rv;
  }
  return 0;
}

static void close_listeners(grace__server *sv, int drain) {
  for (unsigned i = 0; i < sv->nlisteners; i++)
    grace__listener_close(&sv->listeners[i], drain);
  pthread_mutex_lock(&sv->lock);
  atomic_store(&sv->listeners_closed, 1);
  pthread_cond_broadcast(&sv->cond);
  pthread_mutex_unlock(&sv->lock);
}

static void on_events(grace__loop *loop, unsigned bits) {
  grace__server_loop *sl = loop->data;
  grace__server *sv = sl->sv;

  if ((bits & GRACE__SV_EV_SHUTDOWN) && !sl->cl.shutting_down) {
    if (loop->index == 0) {
      close_listeners(sv, 1);
      maybe_drained(sv);
    }
    spread_start(sl);
    grace__conn_loop_shutdown(&sl->cl);
  }
  if ((bits & GRACE__SV_EV_CLOSE) && !sl->cl.closing) {
    if (loop->index == 0 && !atomic_load(&sv->listeners_closed))
      close_listeners(sv, 0);
    unsigned cut = grace__conn_loop_close_all(&sl->cl);
    pthread_mutex_lock(&sv->lock);
    sv->cut += (int)cut;
    sv->loops_acked++;
    pthread_cond_broadcast(&sv->cond);
    pthread_mutex_unlock(&sv->lock);
  }
}

static void on_expire(grace__loop *loop, unsigned list, grace__tnode *node) {
  grace__server_loop *sl = loop->data;
  grace__conn_loop_expire(&sl->cl, list, node);
}

static void on_stop(grace__loop *loop) {
  grace__server_loop *sl = loop->data;
  if (loop->index == 0 && !atomic_load(&sl->sv->listeners_closed))
    close_listeners(sl->sv, 0);
  grace__conn_loop_close_all(&sl->cl);
}

/* Embedded: the per-loop handles on_open opened. */
static void on_close(grace__loop *loop) {
  grace__server_loop *sl = loop->data;
  grace__loop_close_handle(loop, (uv_handle_t *)&sl->spread_timer);
  grace__conn_loop_close(&sl->cl);
}

static void on_closed(grace__loop *loop) {
  grace__server_loop *sl = loop->data;
  grace__server *sv = sl->sv;
  atomic_store(&sv->uv_stopped, 1);
  if (sv->ops->stopped != NULL)
    sv->ops->stopped(sv, sv->uv_status, sv->cut);
}

/* Embedded: the shutdown's deadline passed; the rest is cut. */
static void on_deadline(grace__loop *loop) {
  grace__server_loop *sl = loop->data;
  grace__server *sv = sl->sv;
  if (atomic_load(&sv->drained))
    return;
  sv->uv_status = GRACE_ETIMEDOUT;
  grace__server_close(sv);
}

/* ---- construction ---------------------------------------------------------
 */

int grace__server_init(grace__server *sv, const grace__server_ops *ops,
                       unsigned nloops, int backlog,
                       grace_duration close_spread) {
  if (nloops == 0) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    nloops = n > 0 ? (unsigned)(n > 256 ? 256 : n) : 1;
  }
  if (nloops > 256)
    return GRACE_EINVAL;
  sv->ops = ops;
  sv->nloops = nloops;
  sv->backlog = backlog;
  grace_ignore_sigpipe();
  sv->drained_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (sv->drained_fd < 0)
    return -errno;
  atomic_init(&sv->close_spread, close_spread);
  sv->reg.on_gone = on_conn_gone;
  sv->reg.data = sv;
  pthread_mutex_init(&sv->lock, NULL);
  pthread_cond_init(&sv->cond, NULL);
  return 0;
}

static int add_listen_fd(grace__server *sv, int fd) {
  unsigned n = sv->nlisteners + 1;
  int *fds = realloc(sv->listen_fds, n * sizeof(*fds));
  if (fds == NULL)
    return GRACE_ENOMEM;
  sv->listen_fds = fds;
  int *ports = realloc(sv->ports, n * sizeof(*ports));
  if (ports == NULL)
    return GRACE_ENOMEM;
  sv->ports = ports;
  fds[n - 1] = fd;
  ports[n - 1] = grace__socket_port(fd);
  sv->nlisteners = n;
  return 0;
}

int grace__server_listen(grace__server *sv, const char *addr) {
  int fd, rv;
  if (addr == NULL)
    return GRACE_EINVAL;
  if (atomic_load(&sv->started))
    return GRACE_ESTATE;
  rv = grace__listen(addr, sv->backlog, &fd);
  if (rv != 0)
    return rv;
  rv = add_listen_fd(sv, fd);
  if (rv != 0)
    close(fd);
  return rv;
}

int grace__server_listen_fd(grace__server *sv, int fd) {
  if (atomic_load(&sv->started))
    return GRACE_ESTATE;
  int rv = grace__adopt_listen_fd(fd);
  if (rv != 0)
    return rv;
  return add_listen_fd(sv, fd);
}

int grace__server_port(grace__server *sv, unsigned index) {
  if (index >= sv->nlisteners)
    return GRACE_EINVAL;
  return sv->ports[index];
}

int grace__server_start(grace__server *sv, uv_loop_t *uv) {
  static const grace__loop_callbacks cbs = {
      .on_events = on_events,
      .on_expire = on_expire,
      .on_open = on_open,
      .on_stop = on_stop,
      .on_close = on_close,
      .on_closed = on_closed,
      .on_deadline = on_deadline,
  };
  int rv;

  if (sv->nlisteners == 0 || atomic_load(&sv->started))
    return GRACE_ESTATE;
  if (uv != NULL)
    sv->nloops = 1;
  sv->listeners = calloc(sv->nlisteners, sizeof(*sv->listeners));
  if (sv->listeners == NULL)
    return GRACE_ENOMEM;
  for (unsigned i = 0; i < sv->nloops; i++) {
    grace__server_loop *sl = sv->ops->loop_at(sv, i);
    sl->sv = sv;
    rv = grace__conn_loop_init(&sl->cl, NULL);
    if (rv != 0)
      goto fail;
  }
  rv = grace__loopset_init(&sv->set, sv->nloops, &cbs, sv);
  if (rv != 0)
    goto fail;
  rv = uv != NULL ? grace__loopset_start_on(&sv->set, uv)
                  : grace__loopset_start(&sv->set);
  if (rv != 0) {
    if (sv->set.live)
      return rv; /* handles closing on |uv|: free after it ran */
    grace__loopset_free(&sv->set);
    goto fail;
  }
  /* The listeners own their descriptors now. */
  for (unsigned i = 0; i < sv->nlisteners; i++)
    sv->listen_fds[i] = -1;
  atomic_store(&sv->started, 1);
  return 0;

fail:
  for (unsigned i = 0; i < sv->nloops; i++)
    grace__conn_loop_free(&sv->ops->loop_at(sv, i)->cl);
  free(sv->listeners);
  sv->listeners = NULL;
  return rv;
}

int grace__server_on_loop(grace__server *sv) {
  return atomic_load(&sv->started) && grace__loopset_current(&sv->set) != NULL;
}

/* ---- shutdown and close ---------------------------------------------------
 */

int grace__server_shutdown_begin(grace__server *sv,
                                 const grace__server_begin *b) {
  if (!atomic_load(&sv->started))
    return GRACE_ESTATE;
  /* Loop 0 closes the listeners, which this waits for. */
  if (!sv->set.external &&
      grace__loopset_current(&sv->set) == &sv->set.loops[0])
    return GRACE_EDEADLK;
  pthread_mutex_lock(&sv->lock);
  if (atomic_load(&sv->shutdown)) {
    pthread_mutex_unlock(&sv->lock);
    return GRACE_ESHUTDOWN;
  }
  /* Before the loops learn of the shutdown (grace__loop_raise orders it
   * before their reads). */
  grace__server_spread_begin(sv);
  if (b != NULL && b->locked != NULL)
    b->locked(sv, b->arg);
  atomic_store(&sv->shutdown, 1);
  pthread_mutex_unlock(&sv->lock);

  if (b != NULL && b->begun != NULL)
    b->begun(sv, b->arg);
  for (unsigned i = 0; i < sv->set.n; i++)
    grace__loop_deliver(&sv->set.loops[i], GRACE__SV_EV_SHUTDOWN);

  /* Like Go, Shutdown returns to its caller only once the listeners are
   * closed: from here on a new connection is refused. */
  pthread_mutex_lock(&sv->lock);
  while (!atomic_load(&sv->listeners_closed))
    pthread_cond_wait(&sv->cond, &sv->lock);
  pthread_mutex_unlock(&sv->lock);
  return 0;
}

int grace__server_shutdown_wait(grace__server *sv, grace_ctx *ctx) {
  if (grace__server_on_loop(sv))
    return GRACE_EDEADLK; /* it would wait for the loop it stops */
  struct pollfd fds[2];
  nfds_t nfds = 1;
  fds[0].fd = sv->drained_fd;
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
    if (atomic_load(&sv->drained))
      return 0;
    if (ctx != NULL && grace_ctx_err(ctx) != 0)
      return grace_ctx_err(ctx);
    /* Both descriptors are level-triggered and never drained, so one
     * wake-up is enough: no polling interval. */
    if (poll(fds, nfds, -1) < 0 && errno != EINTR)
      return -errno;
  }
}

int grace__server_close(grace__server *sv) {
  if (!atomic_load(&sv->started) || atomic_load(&sv->uv_stopped))
    return 0;
  /* Every loop acknowledges the close, which this waits for. */
  if (!sv->set.external && grace__loopset_current(&sv->set) != NULL)
    return GRACE_EDEADLK;
  if (atomic_exchange(&sv->closed, 1))
    return 0;
  pthread_mutex_lock(&sv->lock);
  sv->loops_acked = 0;
  sv->cut = 0;
  pthread_mutex_unlock(&sv->lock);
  for (unsigned i = 0; i < sv->set.n; i++)
    grace__loop_deliver(&sv->set.loops[i], GRACE__SV_EV_CLOSE);
  pthread_mutex_lock(&sv->lock);
  while (sv->loops_acked < sv->set.n)
    pthread_cond_wait(&sv->cond, &sv->lock);
  int cut = sv->cut;
  pthread_mutex_unlock(&sv->lock);
  return cut;
}

int grace__server_shutdown_uv(grace__server *sv, grace_duration timeout,
                              const grace__server_begin *b) {
  if (timeout < 0)
    return GRACE_EINVAL;
  if (!atomic_load(&sv->started) || !sv->set.external ||
      !grace__loop_is_current(&sv->set.loops[0]))
    return GRACE_ESTATE;
  if (sv->uv_stop_asked)
    return GRACE_ESHUTDOWN;
  int rv = grace__server_shutdown_begin(sv, b);
  if (rv != 0 && rv != GRACE_ESHUTDOWN)
    return rv;
  sv->uv_stop_asked = 1;
  sv->uv_status = 0;
  /* Drained already (nothing was open, or a close came first), or later
   * from the last connection's close. */
  maybe_drained(sv);
  if (atomic_load(&sv->drained))
    grace__loopset_stop(&sv->set);
  else if (timeout > 0)
    grace__loop_deadline(
        &sv->set.loops[0],
        (uint64_t)((timeout + GRACE_MILLISECOND - 1) / GRACE_MILLISECOND));
  return rv == 0 ? 0 : 1;
}

void grace__server_free(grace__server *sv, const char *who) {
  if (sv->set.external && sv->set.live) {
    /* Its handles are on the caller's loop, which would run them after
     * the free; nothing here can wait for that loop. */
    fprintf(stderr,
            "%s: the server is still running on the caller's loop; free it "
            "once the callback of its non-blocking shutdown has run\n",
            who);
    abort();
  }
  if (atomic_load(&sv->started) && !sv->set.external) {
    grace__server_close(sv);
    /* The loops run what is posted to them (the on_close callbacks of the
     * connections just closed) before they stop. */
    grace__loopset_stop(&sv->set);
  }
  if (sv->set.loops != NULL)
    grace__loopset_free(&sv->set);
  for (unsigned i = 0; i < sv->nlisteners; i++)
    if (sv->listen_fds[i] >= 0)
      close(sv->listen_fds[i]);
  for (unsigned i = 0; i < sv->nloops; i++)
    grace__conn_loop_free(&sv->ops->loop_at(sv, i)->cl);
  free(sv->listen_fds);
  free(sv->ports);
  free(sv->listeners);
  if (sv->drained_fd >= 0)
    close(sv->drained_fd);
  pthread_cond_destroy(&sv->cond);
  pthread_mutex_destroy(&sv->lock);
}

uint64_t grace__server_accept_backoffs(grace__server *sv) {
  uint64_t n = 0;
  if (sv->listeners != NULL)
    for (unsigned i = 0; i < sv->nlisteners; i++)
      n += atomic_load(&sv->listeners[i].backoffs);
  return n;
}
