/*
 * The TCP server's face: options, and what the shared server layer
 * (src/net/server.c: listeners, loops, shutdown, drain, close) needs to
 * know of the caller's protocol (conn.c).
 */
#include <stdlib.h>
#include <string.h>

#include "grace/uv.h"
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

void grace__tcp_server_set_clock(grace_tcp_server *srv,
                                 const grace__clock *clock) {
  srv->sv.clock = *clock;
}

void grace_tcp_server_set_close_spread(grace_tcp_server *srv,
                                       grace_duration d) {
  if (srv != NULL)
    grace__server_set_close_spread(&srv->sv, d);
}

void grace__tcp_spread_begin(grace_tcp_server *srv) {
  grace__server_spread_begin(&srv->sv);
}

grace_duration grace__tcp_spread_offset(const grace_tcp_server *srv,
                                        uint64_t id) {
  return grace__server_spread_offset(&srv->sv, id);
}

int grace__tcp_drain_stage(const grace_tcp_conn *t) {
  if (!grace__conn_shutting_down(t->c))
    return GRACE__DRAIN_NONE;
  return grace__server_drain_stage(&t->srv->sv,
                                   t->tl != NULL ? &t->tl->base : NULL,
                                   t->c->id);
}

/* ---- the shared server layer's callbacks ---------------------------------- */

#define SRV(p) grace__container_of(p, grace_tcp_server, sv)
#define TL(p) grace__container_of(p, grace__tcp_loop, base)

static grace__server_loop *loop_at(grace__server *sv, unsigned index) {
  return &SRV(sv)->tls[index].base;
}

static uint64_t ms(grace_duration d) {
  return (uint64_t)(d / GRACE_MILLISECOND);
}

static void loop_open(grace__server_loop *sl) {
  grace_tcp_server *srv = SRV(sl->sv);
  grace__conn_loop *cl = &sl->cl;
  /* The read slot: HEADER is the read timeout (a partial command), IDLE
   * the idle timeout. */
  grace__conn_loop_timeout(cl, GRACE__TL_HEADER, ms(srv->opts.read_timeout));
  grace__conn_loop_timeout(cl, GRACE__TL_IDLE, ms(srv->opts.idle_timeout));
  grace__conn_loop_timeout(cl, GRACE__TL_LINGER, GRACE__CONN_LINGER_MS);
  grace__conn_loop_timeout(cl, GRACE__TL_SEND, ms(srv->opts.send_timeout));
}

/* On the connection's own loop: its protocol state, the socket, on_open. */
static void adopt(grace__server_loop *sl, grace__conn *c) {
  grace_tcp_conn *t = grace__tcp_conn_new(SRV(sl->sv), TL(sl), c);
  if (t == NULL) {
    grace__conn_discard(c);
    return;
  }
  grace__conn_set_proto(c, &grace__tcp_proto, t);
  grace__conn_ref(c); /* so that a failed start leaves |c| to look at */
  if (grace__conn_start(c, &sl->cl) == 0)
    grace__tcp_conn_open(t);
  grace__conn_unref(c);
}

static void on_drained(grace__server *sv) {
  grace_tcp_server *srv = SRV(sv);
  if (srv->drained_cb != NULL)
    srv->drained_cb(srv, srv->drained_data);
}

static void stopped(grace__server *sv, int status, int cut) {
  grace_tcp_server *srv = SRV(sv);
  if (srv->uv_done != NULL)
    srv->uv_done(srv, status, cut, srv->uv_done_data);
}

static const grace__server_ops ops = {
    .proto = &grace__tcp_proto,
    .loop_at = loop_at,
    .loop_open = loop_open,
    .adopt = adopt,
    .spread_over = grace__tcp_spread_over,
    .drained = on_drained,
    .stopped = stopped,
};

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
  srv->cb = *cb;
  srv->data = data;
  rv = grace__server_init(&srv->sv, &ops, srv->opts.loops, srv->opts.backlog,
                          srv->opts.close_spread);
  if (rv != 0) {
    free(srv);
    return rv;
  }
  srv->opts.loops = srv->sv.nloops;
  srv->sv.reg.rmax = srv->opts.max_input;
  srv->tls = calloc(srv->opts.loops, sizeof(*srv->tls));
  if (srv->tls == NULL) {
    grace__server_free(&srv->sv, "grace_tcp_server_new");
    free(srv);
    return GRACE_ENOMEM;
  }
  *out = srv;
  return 0;
}

int grace_tcp_server_listen(grace_tcp_server *srv, const char *addr) {
  if (srv == NULL)
    return GRACE_EINVAL;
  return grace__server_listen(&srv->sv, addr);
}

int grace_tcp_server_listen_fd(grace_tcp_server *srv, int fd) {
  if (srv == NULL)
    return GRACE_EINVAL;
  return grace__server_listen_fd(&srv->sv, fd);
}

int grace_tcp_server_port(grace_tcp_server *srv, unsigned index) {
  if (srv == NULL)
    return GRACE_EINVAL;
  return grace__server_port(&srv->sv, index);
}

int grace_tcp_server_start(grace_tcp_server *srv) {
  if (srv == NULL)
    return GRACE_EINVAL;
  return grace__server_start(&srv->sv, NULL);
}

int grace_tcp_server_start_uv(grace_tcp_server *srv, uv_loop_t *loop) {
  if (srv == NULL || loop == NULL)
    return GRACE_EINVAL;
  return grace__server_start(&srv->sv, loop);
}

/* ---- shutdown and close -------------------------------------------------
 */

typedef struct begin_arg {
  grace_tcp_cb drained;
  void *data;
} begin_arg;

static void shutdown_locked(grace__server *sv, void *arg) {
  const begin_arg *a = arg;
  SRV(sv)->drained_cb = a->drained;
  SRV(sv)->drained_data = a->data;
}

int grace_tcp_server_shutdown_begin(grace_tcp_server *srv, grace_tcp_cb drained,
                                    void *data) {
  if (srv == NULL)
    return GRACE_EINVAL;
  begin_arg a = {drained, data};
  grace__server_begin b = {shutdown_locked, NULL, &a};
  return grace__server_shutdown_begin(&srv->sv, &b);
}

int grace_tcp_server_shutdown(grace_tcp_server *srv, grace_ctx *ctx) {
  if (srv != NULL && grace__server_on_loop(&srv->sv))
    return GRACE_EDEADLK; /* it would wait for the loop it stops */
  int rv = grace_tcp_server_shutdown_begin(srv, NULL, NULL);
  if (rv != 0 && rv != GRACE_ESHUTDOWN)
    return rv;
  return grace__server_shutdown_wait(&srv->sv, ctx);
}

int grace_tcp_server_shutdown_uv(grace_tcp_server *srv, grace_duration timeout,
                                 grace_tcp_stop_cb done, void *data) {
  if (srv == NULL)
    return GRACE_EINVAL;
  begin_arg a = {NULL, NULL};
  grace__server_begin b = {shutdown_locked, NULL, &a};
  int rv = grace__server_shutdown_uv(&srv->sv, timeout, &b);
  if (rv < 0)
    return rv;
  srv->uv_done = done; /* for stopped(), on a later turn of the loop */
  srv->uv_done_data = data;
  return 0;
}

int grace_tcp_server_drained_fd(grace_tcp_server *srv) {
  return srv->sv.drained_fd;
}

int grace_tcp_server_close(grace_tcp_server *srv) {
  if (srv == NULL)
    return 0;
  return grace__server_close(&srv->sv);
}

void grace_tcp_server_free(grace_tcp_server *srv) {
  if (srv == NULL)
    return;
  grace__server_free(&srv->sv, "grace_tcp_server_free");
  free(srv->tls);
  free(srv);
}

void grace_tcp_server_stats(grace_tcp_server *srv, grace_tcp_stats *out) {
  memset(out, 0, sizeof(*out));
  out->conns_accepted = atomic_load(&srv->sv.reg.accepted);
  long open = atomic_load(&srv->sv.reg.nconns);
  out->conns_open = open > 0 ? (uint64_t)open : 0;
  out->conns_busy = atomic_load(&srv->sv.reg.active);
  out->conns_idle = atomic_load(&srv->sv.reg.idle);
  out->busy_total = atomic_load(&srv->st_busy_total);
  out->conns_cut = atomic_load(&srv->sv.reg.cut);
  out->idle_closed_on_shutdown = atomic_load(&srv->sv.reg.idle_closed);
  out->timeouts = atomic_load(&srv->sv.reg.timeouts);
  out->accept_backoffs = grace__server_accept_backoffs(&srv->sv);
}
