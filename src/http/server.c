/*
 * The HTTP server's face: options, routes, listeners, threads, and the
 * coordination of shutdown and close across the loops.
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "grace/signal.h"
#include "grace/uv.h"
#include "http/internal.h"

const char *grace_conn_state_name(grace_conn_state state) {
  switch (state) {
  case GRACE_CONN_NEW:
    return "new";
  case GRACE_CONN_ACTIVE:
    return "active";
  case GRACE_CONN_IDLE:
    return "idle";
  case GRACE_CONN_CLOSED:
    return "closed";
  }
  return "unknown";
}

void grace_http_options_init(grace_http_options *opts) {
  memset(opts, 0, sizeof(*opts));
  opts->read_header_timeout = 10 * GRACE_SECOND;
  opts->idle_timeout = 120 * GRACE_SECOND;
  opts->body_timeout = 60 * GRACE_SECOND;
  opts->send_timeout = 60 * GRACE_SECOND;
  opts->close_spread = 0; /* idle connections close at once */
  opts->max_header_bytes = 64 * 1024;
  opts->max_body_bytes = 1024 * 1024;
  opts->backlog = 511;
}

/* ---- the close spread ------------------------------------------------------
 */

static int64_t spread_now(const grace_http_server *srv) {
  return srv->clock.now != NULL ? srv->clock.now(srv->clock.data) : grace_now();
}

void grace_http_server_set_close_spread(grace_http_server *srv,
                                        grace_duration d) {
  if (srv == NULL)
    return;
  grace_duration cur = atomic_load(&srv->close_spread);
  while (d > cur &&
         !atomic_compare_exchange_weak(&srv->close_spread, &cur, d)) {
  }
}

void grace__http_server_set_clock(grace_http_server *srv,
                                  const grace__clock *clock) {
  srv->clock = *clock;
}

void grace__http_spread_begin(grace_http_server *srv) {
  srv->spread_len = atomic_load(&srv->close_spread);
  srv->spread_begin = spread_now(srv);
}

grace_duration grace__http_spread_offset(const grace_http_server *srv,
                                         uint64_t conn_id) {
  /* The fractional parts of id * (golden ratio) (Fibonacci hashing):
   * equidistributed, and any run of consecutive ids lands spread out. */
  uint64_t mix = conn_id * UINT64_C(0x9E3779B97F4A7C15);
  double frac = (double)(mix >> 11) * 0x1p-53; /* [0, 1) */
  return (grace_duration)((double)srv->spread_len * 0.9 * frac);
}

int grace__http_drain_stage(const grace_http_server *srv,
                            const grace__http_loop *hl, uint64_t conn_id) {
  if (srv->spread_len <= 0 || (hl != NULL && hl->spread_over))
    return GRACE__DRAIN_NOW;
  int64_t elapsed = spread_now(srv) - srv->spread_begin;
  if (elapsed >= srv->spread_len)
    return GRACE__DRAIN_NOW;
  return elapsed >= grace__http_spread_offset(srv, conn_id) ? GRACE__DRAIN_DUE
                                                            : GRACE__DRAIN_NONE;
}

/* The window is over on this loop: every HTTP/1.1 connection still open
 * is drained as without a spread. */
static void on_spread_over(uv_timer_t *t) {
  grace__http_loop *hl = t->data;
  hl->spread_over = 1;
  if (!hl->cl.closing)
    grace__conn_loop_each(&hl->cl, grace__h1_spread_over);
}

/* A graceful shutdown reached this loop: arms the end of the window (or
 * ends it now if it is over already). */
static void spread_start(grace__http_loop *hl) {
  grace_http_server *srv = hl->srv;
  if (srv->spread_len <= 0)
    return;
  grace_duration left = srv->spread_len - (spread_now(srv) - srv->spread_begin);
  if (left <= 0) {
    hl->spread_over = 1;
    return;
  }
  /* Rounded up; whenever it fires, spread_over ends the window on this
   * loop (the loop's time may lag the server clock a little). */
  uint64_t ms = (uint64_t)((left + GRACE_MILLISECOND - 1) / GRACE_MILLISECOND);
  uv_timer_start(&hl->spread_timer, on_spread_over, ms, 0);
}

/* ---- connections ----------------------------------------------------------
 */

static void maybe_drained(grace_http_server *srv) {
  if (!atomic_load(&srv->shutdown) || !atomic_load(&srv->listeners_closed) ||
      atomic_load(&srv->reg.nconns) != 0)
    return;
  int expected = 0;
  if (!atomic_compare_exchange_strong(&srv->drained, &expected, 1))
    return;
  /* The callback first, so whoever wakes on the descriptor sees what the
   * callback did. */
  if (srv->drained_cb)
    srv->drained_cb(srv, srv->drained_data);
  uint64_t one = 1;
  ssize_t rv;
  do
    rv = write(srv->drained_fd, &one, sizeof(one));
  while (rv < 0 && errno == EINTR);
  /* Embedded: the stop closes our handles (through the async handle, as
   * this may run inside a connection's callback). */
  if (srv->set.external && srv->uv_stop_asked)
    grace__loopset_stop(&srv->set);
}

static void on_conn_gone(grace__conn_reg *reg, void *data) {
  (void)reg;
  maybe_drained(data);
}

static void on_conn_state(grace__conn *c, int state, void *data) {
  grace_http_server *srv = data;
  if (srv->opts.conn_state)
    srv->opts.conn_state(c->id, (grace_conn_state)state,
                         srv->opts.conn_state_data);
}

/* On the connection's own loop: its socket is registered there; its
 * HTTP/1.1 state waits for its first bytes (grace__h1_idle_proto). */
static void adopt(grace__http_loop *hl, grace__conn *c) {
  grace__conn_start(c, &hl->cl);
}

static void on_handoff(grace__loop *loop, grace__post *post) {
  grace__conn *c = grace__container_of(post, grace__conn, post);
  adopt(loop->data, c);
}

static void on_accept(grace__listener *l, int fd) {
  grace_http_server *srv = l->data;
  grace__conn *c = grace__conn_new(&srv->reg, fd, &grace__h1_idle_proto, srv);
  if (c == NULL) {
    close(fd);
    return;
  }
  c->id = atomic_fetch_add(&srv->next_id, 1) + 1;
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
  grace_http_server *srv = loop->set->data;
  grace__http_loop *hl = &srv->hls[loop->index];
  grace__conn_loop *cl = &hl->cl;
  loop->data = hl;
  cl->loop = loop;
  int orv = grace__conn_loop_open(cl);
  if (orv != 0)
    return orv;
  orv = uv_timer_init(loop->uv, &hl->spread_timer);
  if (orv != 0)
    return orv;
  hl->spread_timer.data = hl;
  grace__conn_loop_timeout(cl, GRACE__TL_HEADER,
                           ms(srv->opts.read_header_timeout));
  grace__conn_loop_timeout(cl, GRACE__TL_IDLE, ms(srv->opts.idle_timeout));
  grace__conn_loop_timeout(cl, GRACE__TL_BODY, ms(srv->opts.body_timeout));
  grace__conn_loop_timeout(cl, GRACE__TL_LINGER, GRACE__CONN_LINGER_MS);
  grace__conn_loop_timeout(cl, GRACE__TL_SEND, ms(srv->opts.send_timeout));
  grace__conn_loop_timeout(cl, GRACE__TL_GOAWAY, GRACE__GOAWAY_ACK_MS);
  /* HTTP/2 streams are swept for both timeouts at the shorter one. */
  uint64_t body = ms(srv->opts.body_timeout), send = ms(srv->opts.send_timeout);
  grace__conn_loop_timeout(cl, GRACE__TL_STREAM,
                           body == 0     ? send
                           : send == 0   ? body
                           : body < send ? body
                                         : send);
  if (loop->index != 0)
    return 0;
  for (unsigned i = 0; i < srv->nlisteners; i++) {
    int rv = grace__listener_start(&srv->listeners[i], loop, srv->listen_fds[i],
                                   on_accept, srv);
    if (rv != 0)
      return rv;
  }
  return 0;
}

static void close_listeners(grace_http_server *srv, int drain) {
  for (unsigned i = 0; i < srv->nlisteners; i++)
    grace__listener_close(&srv->listeners[i], drain);
  pthread_mutex_lock(&srv->lock);
  atomic_store(&srv->listeners_closed, 1);
  pthread_cond_broadcast(&srv->cond);
  pthread_mutex_unlock(&srv->lock);
}

static void on_events(grace__loop *loop, unsigned bits) {
  grace__http_loop *hl = loop->data;
  grace_http_server *srv = hl->srv;

  if ((bits & GRACE__EV_SHUTDOWN) && !hl->cl.shutting_down) {
    if (loop->index == 0) {
      close_listeners(srv, 1);
      maybe_drained(srv);
    }
    spread_start(hl);
    grace__conn_loop_shutdown(&hl->cl);
  }
  if ((bits & GRACE__EV_CLOSE) && !hl->cl.closing) {
    if (loop->index == 0 && !atomic_load(&srv->listeners_closed))
      close_listeners(srv, 0);
    unsigned cut = grace__conn_loop_close_all(&hl->cl);
    pthread_mutex_lock(&srv->lock);
    srv->cut += (int)cut;
    srv->loops_acked++;
    pthread_cond_broadcast(&srv->cond);
    pthread_mutex_unlock(&srv->lock);
  }
}

static void on_expire(grace__loop *loop, unsigned list, grace__tnode *node) {
  grace__http_loop *hl = loop->data;
  grace__conn_loop_expire(&hl->cl, list, node);
}

static void on_stop(grace__loop *loop) {
  grace__http_loop *hl = loop->data;
  if (loop->index == 0 && !atomic_load(&hl->srv->listeners_closed))
    close_listeners(hl->srv, 0);
  grace__conn_loop_close_all(&hl->cl);
}

/* Embedded: the per-loop handles on_open opened. */
static void on_close(grace__loop *loop) {
  grace__http_loop *hl = loop->data;
  grace__loop_close_handle(loop, (uv_handle_t *)&hl->spread_timer);
  grace__conn_loop_close(&hl->cl);
}

static void on_closed(grace__loop *loop) {
  grace__http_loop *hl = loop->data;
  grace_http_server *srv = hl->srv;
  atomic_store(&srv->uv_stopped, 1);
  if (srv->uv_done != NULL)
    srv->uv_done(srv, srv->uv_status, srv->cut, srv->uv_done_data);
}

/* Embedded: the shutdown's deadline passed; the rest is cut. */
static void on_deadline(grace__loop *loop) {
  grace__http_loop *hl = loop->data;
  grace_http_server *srv = hl->srv;
  if (atomic_load(&srv->drained))
    return;
  srv->uv_status = GRACE_ETIMEDOUT;
  grace_http_server_close(srv);
}

/* ---- construction ------------------------------------------------------- */

int grace_http_server_new(const grace_http_options *opts,
                          grace_http_server **out) {
  grace_http_server *srv;
  int rv;

  if (out == NULL)
    return GRACE_EINVAL;
  srv = calloc(1, sizeof(*srv));
  if (srv == NULL)
    return GRACE_ENOMEM;
  if (opts != NULL)
    srv->opts = *opts;
  else
    grace_http_options_init(&srv->opts);
  if (srv->opts.read_header_timeout < 0 || srv->opts.idle_timeout < 0 ||
      srv->opts.body_timeout < 0 || srv->opts.send_timeout < 0 ||
      srv->opts.close_spread < 0 || srv->opts.max_header_bytes < 256 ||
      srv->opts.max_header_bytes > (1u << 30) ||
      srv->opts.max_body_bytes > (1u << 30) || srv->opts.backlog < 0) {
    free(srv);
    return GRACE_EINVAL;
  }
  if (srv->opts.loops == 0) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    srv->opts.loops = n > 0 ? (unsigned)n : 1;
  }
  if (srv->opts.loops > 256) {
    free(srv);
    return GRACE_EINVAL;
  }
  grace_ignore_sigpipe();
  srv->drained_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (srv->drained_fd < 0) {
    rv = -errno;
    goto fail_srv;
  }
  rv = grace_ctx_with_cancel(grace_ctx_background(), &srv->shutdown_ctx);
  if (rv != 0)
    goto fail_fd;
  rv = grace_ctx_with_cancel(grace_ctx_background(), &srv->force_ctx);
  if (rv != 0)
    goto fail_shutdown_ctx;
  srv->hls = calloc(srv->opts.loops, sizeof(*srv->hls));
  if (srv->hls == NULL) {
    rv = GRACE_ENOMEM;
    goto fail_force_ctx;
  }
  atomic_init(&srv->close_spread, srv->opts.close_spread);
  srv->reg.on_state = on_conn_state;
  srv->reg.on_gone = on_conn_gone;
  srv->reg.data = srv;
  pthread_mutex_init(&srv->lock, NULL);
  pthread_cond_init(&srv->cond, NULL);
  *out = srv;
  return 0;

fail_force_ctx:
  grace_ctx_unref(srv->force_ctx);
fail_shutdown_ctx:
  grace_ctx_unref(srv->shutdown_ctx);
fail_fd:
  close(srv->drained_fd);
fail_srv:
  free(srv);
  return rv;
}

static int add_route(grace_http_server *srv, const char *pattern,
                     grace_http_handler handler, void *data, int stream) {
  if (srv == NULL || pattern == NULL || pattern[0] != '/' || handler == NULL)
    return GRACE_EINVAL;
  if (atomic_load(&srv->started))
    return GRACE_ESTATE;
  grace__http_route *routes =
      realloc(srv->routes, (srv->nroutes + 1) * sizeof(*routes));
  if (routes == NULL)
    return GRACE_ENOMEM;
  srv->routes = routes;
  grace__http_route *r = &routes[srv->nroutes];
  r->pattern = strdup(pattern);
  if (r->pattern == NULL)
    return GRACE_ENOMEM;
  r->len = strlen(pattern);
  r->subtree = pattern[r->len - 1] == '/';
  r->stream = stream;
  r->handler = handler;
  r->data = data;
  srv->nroutes++;
  return 0;
}

int grace_http_server_handle(grace_http_server *srv, const char *pattern,
                             grace_http_handler handler, void *data) {
  return add_route(srv, pattern, handler, data, 0);
}

int grace_http_server_handle_stream(grace_http_server *srv, const char *pattern,
                                    grace_http_handler handler, void *data) {
  return add_route(srv, pattern, handler, data, 1);
}

static int add_listen_fd(grace_http_server *srv, int fd) {
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

int grace_http_server_listen(grace_http_server *srv, const char *addr) {
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

int grace_http_server_listen_fd(grace_http_server *srv, int fd) {
  if (srv == NULL)
    return GRACE_EINVAL;
  if (atomic_load(&srv->started))
    return GRACE_ESTATE;
  int rv = grace__adopt_listen_fd(fd);
  if (rv != 0)
    return rv;
  return add_listen_fd(srv, fd);
}

int grace_http_server_port(grace_http_server *srv, unsigned index) {
  if (srv == NULL || index >= srv->nlisteners)
    return GRACE_EINVAL;
  return srv->ports[index];
}

int grace_http_server_on_shutdown(grace_http_server *srv, grace_http_cb fn,
                                  void *data) {
  if (srv == NULL || fn == NULL)
    return GRACE_EINVAL;
  pthread_mutex_lock(&srv->lock);
  grace__http_hook *hooks =
      realloc(srv->hooks, (srv->nhooks + 1) * sizeof(*hooks));
  if (hooks == NULL) {
    pthread_mutex_unlock(&srv->lock);
    return GRACE_ENOMEM;
  }
  srv->hooks = hooks;
  hooks[srv->nhooks].fn = fn;
  hooks[srv->nhooks].data = data;
  srv->nhooks++;
  pthread_mutex_unlock(&srv->lock);
  return 0;
}

/* Starts on loop threads of our own, or on |uv| (embedded). */
static int start_on(grace_http_server *srv, uv_loop_t *uv) {
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

  if (srv == NULL)
    return GRACE_EINVAL;
  if (srv->nlisteners == 0 || atomic_load(&srv->started))
    return GRACE_ESTATE;
  if (uv != NULL)
    srv->opts.loops = 1;
  srv->listeners = calloc(srv->nlisteners, sizeof(*srv->listeners));
  if (srv->listeners == NULL)
    return GRACE_ENOMEM;
  for (unsigned i = 0; i < srv->opts.loops; i++) {
    grace__http_loop *hl = &srv->hls[i];
    hl->srv = srv;
    rv = grace__conn_loop_init(&hl->cl, NULL);
    if (rv != 0)
      goto fail;
  }
  rv = grace__loopset_init(&srv->set, srv->opts.loops, &cbs, srv);
  if (rv != 0)
    goto fail;
  rv = uv != NULL ? grace__loopset_start_on(&srv->set, uv)
                  : grace__loopset_start(&srv->set);
  if (rv != 0) {
    if (srv->set.live)
      return rv; /* handles closing on |uv|: free after it ran */
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
    grace__conn_loop_free(&srv->hls[i].cl);
  free(srv->listeners);
  srv->listeners = NULL;
  return rv;
}

int grace_http_server_start(grace_http_server *srv) {
  return start_on(srv, NULL);
}

int grace_http_server_start_uv(grace_http_server *srv, uv_loop_t *loop) {
  if (loop == NULL)
    return GRACE_EINVAL;
  return start_on(srv, loop);
}

int grace__http_server_on_loop(grace_http_server *srv) {
  return atomic_load(&srv->started) &&
         grace__loopset_current(&srv->set) != NULL;
}

/* ---- shutdown and close ------------------------------------------------- */

int grace_http_server_shutdown_begin(grace_http_server *srv,
                                     grace_http_cb drained, void *data) {
  if (srv == NULL)
    return GRACE_EINVAL;
  if (!atomic_load(&srv->started))
    return GRACE_ESTATE;
  /* Loop 0 closes the listeners, which this waits for. */
  if (!srv->set.external &&
      grace__loopset_current(&srv->set) == &srv->set.loops[0])
    return GRACE_EDEADLK;
  pthread_mutex_lock(&srv->lock);
  if (atomic_load(&srv->shutdown)) {
    pthread_mutex_unlock(&srv->lock);
    return GRACE_ESHUTDOWN;
  }
  srv->drained_cb = drained;
  srv->drained_data = data;
  /* Before the loops learn of the shutdown (grace__loop_raise orders it
   * before their reads). */
  grace__http_spread_begin(srv);
  atomic_store(&srv->shutdown, 1);
  pthread_mutex_unlock(&srv->lock);

  grace_ctx_cancel(srv->shutdown_ctx);
  for (unsigned i = 0; i < srv->set.n; i++)
    grace__loop_deliver(&srv->set.loops[i], GRACE__EV_SHUTDOWN);

  /* Like Go, Shutdown returns to its caller only once the listeners are
   * closed: from here on a new connection is refused. */
  pthread_mutex_lock(&srv->lock);
  while (!atomic_load(&srv->listeners_closed))
    pthread_cond_wait(&srv->cond, &srv->lock);
  /* Each hook is read under the lock: a hook (or another thread) may
   * register more, which moves the array; those run too. */
  for (size_t i = 0; i < srv->nhooks; i++) {
    grace__http_hook hook = srv->hooks[i];
    pthread_mutex_unlock(&srv->lock);
    hook.fn(srv, hook.data);
    pthread_mutex_lock(&srv->lock);
  }
  pthread_mutex_unlock(&srv->lock);
  return 0;
}

int grace_http_server_shutdown(grace_http_server *srv, grace_ctx *ctx) {
  if (srv != NULL && grace__http_server_on_loop(srv))
    return GRACE_EDEADLK; /* it would wait for the loop it stops */
  int rv = grace_http_server_shutdown_begin(srv, NULL, NULL);
  if (rv != 0 && rv != GRACE_ESHUTDOWN)
    return rv;
  struct pollfd fds[2];
  int nfds = 1;
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
    /* Both descriptors are level-triggered and never drained, so one
     * wake-up is enough: no polling interval. */
    if (poll(fds, (nfds_t)nfds, -1) < 0 && errno != EINTR)
      return -errno;
  }
}

int grace_http_server_drained_fd(grace_http_server *srv) {
  return srv->drained_fd;
}

int grace_http_server_shutdown_uv(grace_http_server *srv,
                                  grace_duration timeout,
                                  grace_http_stop_cb done, void *data) {
  if (srv == NULL || timeout < 0)
    return GRACE_EINVAL;
  if (!atomic_load(&srv->started) || !srv->set.external ||
      !grace__loop_is_current(&srv->set.loops[0]))
    return GRACE_ESTATE;
  if (srv->uv_stop_asked)
    return GRACE_ESHUTDOWN;
  int rv = grace_http_server_shutdown_begin(srv, NULL, NULL);
  if (rv != 0 && rv != GRACE_ESHUTDOWN)
    return rv;
  srv->uv_stop_asked = 1;
  srv->uv_status = 0;
  srv->uv_done = done;
  srv->uv_done_data = data;
  /* Drained already (nothing was open, or a close came first), or later
   * from the last connection's close. */
  maybe_drained(srv);
  if (atomic_load(&srv->drained))
    grace__loopset_stop(&srv->set);
  else if (timeout > 0)
    grace__loop_deadline(&srv->set.loops[0],
                         (uint64_t)((timeout + GRACE_MILLISECOND - 1) /
                                    GRACE_MILLISECOND));
  return 0;
}

int grace_http_server_close(grace_http_server *srv) {
  if (srv == NULL || !atomic_load(&srv->started) ||
      atomic_load(&srv->uv_stopped))
    return 0;
  /* Every loop acknowledges the close, which this waits for. */
  if (!srv->set.external && grace__loopset_current(&srv->set) != NULL)
    return GRACE_EDEADLK;
  if (atomic_exchange(&srv->closed, 1))
    return 0;
  grace_ctx_cancel(srv->shutdown_ctx);
  grace_ctx_cancel(srv->force_ctx);
  pthread_mutex_lock(&srv->lock);
  srv->loops_acked = 0;
  srv->cut = 0;
  pthread_mutex_unlock(&srv->lock);
  for (unsigned i = 0; i < srv->set.n; i++)
    grace__loop_deliver(&srv->set.loops[i], GRACE__EV_CLOSE);
  pthread_mutex_lock(&srv->lock);
  while (srv->loops_acked < srv->set.n)
    pthread_cond_wait(&srv->cond, &srv->lock);
  int cut = srv->cut;
  pthread_mutex_unlock(&srv->lock);
  return cut;
}

void grace_http_server_free(grace_http_server *srv) {
  if (srv == NULL)
    return;
  if (srv->set.external && srv->set.live) {
    /* Its handles are on the caller's loop, which would run them after
     * the free; nothing here can wait for that loop. */
    fprintf(stderr, "grace_http_server_free: the server is still running "
                    "on the caller's loop; free it once the callback of "
                    "grace_http_server_shutdown_uv has run\n");
    abort();
  }
  if (atomic_load(&srv->started) && !srv->set.external) {
    grace_http_server_close(srv);
    grace__loopset_stop(&srv->set);
  }
  if (srv->set.loops != NULL)
    grace__loopset_free(&srv->set);
  for (unsigned i = 0; i < srv->nlisteners; i++)
    if (srv->listen_fds[i] >= 0)
      close(srv->listen_fds[i]);
  for (unsigned i = 0; i < srv->opts.loops; i++)
    grace__conn_loop_free(&srv->hls[i].cl);
  for (size_t i = 0; i < srv->nroutes; i++)
    free(srv->routes[i].pattern);
  free(srv->routes);
  free(srv->hooks);
  free(srv->listen_fds);
  free(srv->ports);
  free(srv->listeners);
  free(srv->hls);
  grace_ctx_unref(srv->shutdown_ctx);
  grace_ctx_unref(srv->force_ctx);
  close(srv->drained_fd);
  pthread_cond_destroy(&srv->cond);
  pthread_mutex_destroy(&srv->lock);
  free(srv);
}

grace_ctx *grace_http_server_shutdown_ctx(grace_http_server *srv) {
  return srv->shutdown_ctx;
}

void grace_http_server_stats(grace_http_server *srv, grace_http_stats *out) {
  memset(out, 0, sizeof(*out));
  out->conns_accepted = atomic_load(&srv->reg.accepted);
  long open = atomic_load(&srv->reg.nconns);
  out->conns_open = open > 0 ? (uint64_t)open : 0;
  out->conns_active = atomic_load(&srv->reg.active);
  out->conns_idle = atomic_load(&srv->reg.idle);
  out->requests_total = atomic_load(&srv->st_requests);
  out->requests_inflight = atomic_load(&srv->st_inflight);
  out->requests_cut = atomic_load(&srv->reg.cut);
  out->idle_closed_on_shutdown = atomic_load(&srv->reg.idle_closed);
  out->timeouts = atomic_load(&srv->reg.timeouts);
  if (srv->listeners != NULL)
    for (unsigned i = 0; i < srv->nlisteners; i++)
      out->accept_backoffs += atomic_load(&srv->listeners[i].backoffs);
}
