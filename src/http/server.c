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
#include "net/tls.h"

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

void grace_http_server_set_close_spread(grace_http_server *srv,
                                        grace_duration d) {
  if (srv != NULL)
    grace__server_set_close_spread(&srv->sv, d);
}

void grace__http_server_set_clock(grace_http_server *srv,
                                  const grace__clock *clock) {
  srv->sv.clock = *clock;
}

void grace__http_spread_begin(grace_http_server *srv) {
  grace__server_spread_begin(&srv->sv);
}

grace_duration grace__http_spread_offset(const grace_http_server *srv,
                                         uint64_t conn_id) {
  return grace__server_spread_offset(&srv->sv, conn_id);
}

int grace__http_drain_stage(const grace_http_server *srv,
                            const grace__http_loop *hl, uint64_t conn_id) {
  return grace__server_drain_stage(&srv->sv, hl != NULL ? &hl->base : NULL,
                                   conn_id);
}

/* ---- the shared server layer's callbacks ---------------------------------- */

#define SRV(p) grace__container_of(p, grace_http_server, sv)
#define HL(p) grace__container_of(p, grace__http_loop, base)

static void on_conn_state(grace__conn *c, int state, void *data) {
  grace_http_server *srv = SRV((grace__server *)data);
  if (srv->opts.conn_state)
    srv->opts.conn_state(c->id, (grace_conn_state)state,
                         srv->opts.conn_state_data);
}

static grace__server_loop *loop_at(grace__server *sv, unsigned index) {
  return &SRV(sv)->hls[index].base;
}

static uint64_t ms(grace_duration d) {
  return (uint64_t)(d / GRACE_MILLISECOND);
}

static void loop_open(grace__server_loop *sl) {
  grace_http_server *srv = SRV(sl->sv);
  grace__conn_loop *cl = &sl->cl;
  grace__conn_loop_timeout(cl, GRACE__TL_HEADER,
                           ms(srv->opts.read_header_timeout));
  grace__conn_loop_timeout(cl, GRACE__TL_IDLE, ms(srv->opts.idle_timeout));
  grace__conn_loop_timeout(cl, GRACE__TL_BODY, ms(srv->opts.body_timeout));
  grace__conn_loop_timeout(cl, GRACE__TL_LINGER, GRACE__CONN_LINGER_MS);
  grace__conn_loop_timeout(cl, GRACE__TL_SEND, ms(srv->opts.send_timeout));
  grace__conn_loop_timeout(cl, GRACE__TL_GOAWAY, GRACE__GOAWAY_ACK_MS);
  grace__conn_loop_timeout(cl, GRACE__TL_LAST_CALL, GRACE__LAST_CALL_MS);
  if (srv->opts.tls != NULL)
    grace__conn_loop_timeout(cl, GRACE__TL_HANDSHAKE,
                             grace__tls_handshake_ms(srv->opts.tls));
  /* HTTP/2 streams are swept for both timeouts at the shorter one. */
  uint64_t body = ms(srv->opts.body_timeout), send = ms(srv->opts.send_timeout);
  grace__conn_loop_timeout(cl, GRACE__TL_STREAM,
                           body == 0     ? send
                           : send == 0   ? body
                           : body < send ? body
                                         : send);
}

/* On the connection's own loop: TLS if the server has it, then its
 * socket is registered there; its HTTP/1.1 state waits for its first
 * bytes (grace__h1_idle_proto). */
static void adopt(grace__server_loop *sl, grace__conn *c) {
  grace_http_server *srv = SRV(sl->sv);
  if (srv->opts.tls != NULL && grace__conn_set_tls(c, srv->opts.tls) != 0) {
    grace__conn_discard(c);
    return;
  }
  grace__conn_set_proto(c, &grace__h1_idle_proto, srv);
  grace__conn_start(c, &sl->cl);
}

static void on_drained(grace__server *sv) {
  grace_http_server *srv = SRV(sv);
  if (srv->drained_cb)
    srv->drained_cb(srv, srv->drained_data);
}

static void stopped(grace__server *sv, int status, int cut) {
  grace_http_server *srv = SRV(sv);
  if (srv->uv_done != NULL)
    srv->uv_done(srv, status, cut, srv->uv_done_data);
}

static const grace__server_ops ops = {
    .proto = &grace__h1_idle_proto,
    .loop_at = loop_at,
    .loop_open = loop_open,
    .adopt = adopt,
    .spread_over = grace__h1_spread_over,
    .drained = on_drained,
    .stopped = stopped,
};

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
      srv->opts.max_body_bytes > (1u << 30) || srv->opts.backlog < 0 ||
      srv->opts.loops > 256) {
    free(srv);
    return GRACE_EINVAL;
  }
  rv = grace__server_init(&srv->sv, &ops, srv->opts.loops, srv->opts.backlog,
                          srv->opts.close_spread);
  if (rv != 0)
    goto fail_srv;
  srv->opts.loops = srv->sv.nloops;
  srv->sv.reg.on_state = on_conn_state;
  rv = grace_ctx_with_cancel(grace_ctx_background(), &srv->shutdown_ctx);
  if (rv != 0)
    goto fail_sv;
  rv = grace_ctx_with_cancel(grace_ctx_background(), &srv->force_ctx);
  if (rv != 0)
    goto fail_shutdown_ctx;
  srv->hls = calloc(srv->opts.loops, sizeof(*srv->hls));
  if (srv->hls == NULL) {
    rv = GRACE_ENOMEM;
    goto fail_force_ctx;
  }
  if (srv->opts.tls != NULL)
    grace__tls_ref(srv->opts.tls); /* dropped by grace_http_server_free */
  *out = srv;
  return 0;

fail_force_ctx:
  grace_ctx_unref(srv->force_ctx);
fail_shutdown_ctx:
  grace_ctx_unref(srv->shutdown_ctx);
fail_sv:
  grace__server_free(&srv->sv, "grace_http_server_new");
fail_srv:
  free(srv);
  return rv;
}
static int add_route(grace_http_server *srv, const char *pattern,
                     grace_http_handler handler, void *data, int stream) {
  if (srv == NULL || pattern == NULL || pattern[0] != '/' || handler == NULL)
    return GRACE_EINVAL;
  if (atomic_load(&srv->sv.started))
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

int grace_http_server_listen(grace_http_server *srv, const char *addr) {
  if (srv == NULL)
    return GRACE_EINVAL;
  return grace__server_listen(&srv->sv, addr);
}

int grace_http_server_listen_fd(grace_http_server *srv, int fd) {
  if (srv == NULL)
    return GRACE_EINVAL;
  return grace__server_listen_fd(&srv->sv, fd);
}

int grace_http_server_port(grace_http_server *srv, unsigned index) {
  if (srv == NULL)
    return GRACE_EINVAL;
  return grace__server_port(&srv->sv, index);
}

int grace_http_server_on_shutdown(grace_http_server *srv, grace_http_cb fn,
                                  void *data) {
  if (srv == NULL || fn == NULL)
    return GRACE_EINVAL;
  pthread_mutex_lock(&srv->sv.lock);
  grace__http_hook *hooks =
      realloc(srv->hooks, (srv->nhooks + 1) * sizeof(*hooks));
  if (hooks == NULL) {
    pthread_mutex_unlock(&srv->sv.lock);
    return GRACE_ENOMEM;
  }
  srv->hooks = hooks;
  hooks[srv->nhooks].fn = fn;
  hooks[srv->nhooks].data = data;
  srv->nhooks++;
  pthread_mutex_unlock(&srv->sv.lock);
  return 0;
}

int grace_http_server_start(grace_http_server *srv) {
  if (srv == NULL)
    return GRACE_EINVAL;
  return grace__server_start(&srv->sv, NULL);
}

int grace_http_server_start_uv(grace_http_server *srv, uv_loop_t *loop) {
  if (srv == NULL || loop == NULL)
    return GRACE_EINVAL;
  return grace__server_start(&srv->sv, loop);
}

int grace__http_server_on_loop(grace_http_server *srv) {
  return grace__server_on_loop(&srv->sv);
}

/* ---- shutdown and close ------------------------------------------------- */

typedef struct begin_arg {
  grace_http_cb drained;
  void *data;
} begin_arg;

static void shutdown_locked(grace__server *sv, void *arg) {
  const begin_arg *a = arg;
  SRV(sv)->drained_cb = a->drained;
  SRV(sv)->drained_data = a->data;
}

static void shutdown_begun(grace__server *sv, void *arg) {
  (void)arg;
  grace_ctx_cancel(SRV(sv)->shutdown_ctx);
}

/* The hooks, once the listeners are closed.  Each hook is read under the
 * lock: a hook (or another thread) may register more, which moves the
 * array; those run too. */
static void run_hooks(grace_http_server *srv) {
  pthread_mutex_lock(&srv->sv.lock);
  for (size_t i = 0; i < srv->nhooks; i++) {
    grace__http_hook hook = srv->hooks[i];
    pthread_mutex_unlock(&srv->sv.lock);
    hook.fn(srv, hook.data);
    pthread_mutex_lock(&srv->sv.lock);
  }
  pthread_mutex_unlock(&srv->sv.lock);
}

int grace_http_server_shutdown_begin(grace_http_server *srv,
                                     grace_http_cb drained, void *data) {
  if (srv == NULL)
    return GRACE_EINVAL;
  begin_arg a = {drained, data};
  grace__server_begin b = {shutdown_locked, shutdown_begun, &a};
  int rv = grace__server_shutdown_begin(&srv->sv, &b);
  if (rv == 0)
    run_hooks(srv);
  return rv;
}

int grace_http_server_shutdown(grace_http_server *srv, grace_ctx *ctx) {
  if (srv != NULL && grace__server_on_loop(&srv->sv))
    return GRACE_EDEADLK; /* it would wait for the loop it stops */
  int rv = grace_http_server_shutdown_begin(srv, NULL, NULL);
  if (rv != 0 && rv != GRACE_ESHUTDOWN)
    return rv;
  return grace__server_shutdown_wait(&srv->sv, ctx);
}

int grace_http_server_drained_fd(grace_http_server *srv) {
  return srv->sv.drained_fd;
}

int grace_http_server_shutdown_uv(grace_http_server *srv,
                                  grace_duration timeout,
                                  grace_http_stop_cb done, void *data) {
  if (srv == NULL)
    return GRACE_EINVAL;
  begin_arg a = {NULL, NULL};
  grace__server_begin b = {shutdown_locked, shutdown_begun, &a};
  int rv = grace__server_shutdown_uv(&srv->sv, timeout, &b);
  if (rv < 0)
    return rv;
  srv->uv_done = done; /* for stopped(), on a later turn of the loop */
  srv->uv_done_data = data;
  if (rv == 0)
    run_hooks(srv);
  return 0;
}

int grace_http_server_close(grace_http_server *srv) {
  if (srv == NULL || !atomic_load(&srv->sv.started) ||
      atomic_load(&srv->sv.uv_stopped))
    return 0;
  if (!srv->sv.set.external && grace__server_on_loop(&srv->sv))
    return GRACE_EDEADLK;
  grace_ctx_cancel(srv->shutdown_ctx);
  grace_ctx_cancel(srv->force_ctx);
  return grace__server_close(&srv->sv);
}

void grace_http_server_free(grace_http_server *srv) {
  if (srv == NULL)
    return;
  grace__server_free(&srv->sv, "grace_http_server_free");
  for (size_t i = 0; i < srv->nroutes; i++)
    free(srv->routes[i].pattern);
  free(srv->routes);
  free(srv->hooks);
  free(srv->hls);
  grace_ctx_unref(srv->shutdown_ctx);
  grace_ctx_unref(srv->force_ctx);
  grace_tls_free(srv->opts.tls);
  free(srv);
}

grace_ctx *grace_http_server_shutdown_ctx(grace_http_server *srv) {
  return srv->shutdown_ctx;
}

void grace_http_server_stats(grace_http_server *srv, grace_http_stats *out) {
  memset(out, 0, sizeof(*out));
  out->conns_accepted = atomic_load(&srv->sv.reg.accepted);
  long open = atomic_load(&srv->sv.reg.nconns);
  out->conns_open = open > 0 ? (uint64_t)open : 0;
  out->conns_active = atomic_load(&srv->sv.reg.active);
  out->conns_idle = atomic_load(&srv->sv.reg.idle);
  out->requests_total = atomic_load(&srv->st_requests);
  out->requests_inflight = atomic_load(&srv->st_inflight);
  out->requests_cut = atomic_load(&srv->sv.reg.cut);
  out->idle_closed_on_shutdown = atomic_load(&srv->sv.reg.idle_closed);
  out->timeouts = atomic_load(&srv->sv.reg.timeouts);
  out->accept_backoffs = grace__server_accept_backoffs(&srv->sv);
}
