/*
 * The HTTP server as a group part, built only on the public HTTP API
 * (grace/http.h): begin is shutdown_begin, drained is the server's drained
 * descriptor, force is close.
 */
#include <stdio.h>

#include "group/group_int.h"

static int http_start(grace_group_part *part, void *data) {
  grace_http_server *srv = data;
  (void)part;
  int rv = grace_http_server_start(srv);
  /* GRACE_ESTATE means "no listener" or "already started"; a server with a
   * listener was started by its owner, which is fine. */
  if (rv == GRACE_ESTATE && grace_http_server_port(srv, 0) >= 0)
    rv = 0;
  return rv;
}

/*
 * The part is drained when the server's drained descriptor turns readable,
 * the moment its last connection closes.  A descriptor rather than the
 * drained callback: after a force (grace_http_server_close) the callback
 * may still fire on a loop thread, when the closed connections are reaped,
 * which can be after grace_group_free; the descriptor belongs to the
 * server, and the group stops watching it when run returns.
 */
static int http_begin(grace_group_part *part, grace_ctx *deadline,
                      void *data) {
  grace_http_server *srv = data;
  (void)deadline;
  /* A hand-over: idle keep-alive connections are told to close with their
   * next answer rather than cut while a request may be on its way. */
  grace_http_server_set_close_spread(
      srv, grace__group_handover_spread(grace__part_group(part)));
  int rv = grace_http_server_shutdown_begin(srv, NULL, NULL);
  /* GRACE_ESHUTDOWN: someone else began it; the descriptor says the same. */
  if (rv != 0 && rv != GRACE_ESHUTDOWN)
    return rv;
  grace_group_part_done_fd(part, grace_http_server_drained_fd(srv));
  return 0;
}

static int http_force(grace_group_part *part, char *what, size_t len,
                      void *data) {
  grace_http_server *srv = data;
  grace_http_stats st;
  (void)part;
  grace_http_server_stats(srv, &st);
  int cut = grace_http_server_close(srv);
  snprintf(what, len, "%d request%s cut, %llu connection%s closed", cut,
           cut == 1 ? "" : "s", (unsigned long long)st.conns_open,
           st.conns_open == 1 ? "" : "s");
  return cut;
}

void grace__group_conn_stats(const grace_http_stats *st,
                             grace_group_stats *out) {
  out->conns_active = st->conns_active;
  out->conns_idle = st->conns_idle;
  /* The counters are read one by one: never let "new" go negative. */
  uint64_t busy = st->conns_active + st->conns_idle;
  out->conns_new = st->conns_open > busy ? st->conns_open - busy : 0;
  out->conns_idle_closed = st->idle_closed_on_shutdown;
}

static void http_stats(grace_group_part *part, grace_group_stats *out,
                       void *data) {
  grace_http_stats st;
  (void)part;
  grace_http_server_stats(data, &st);
  out->has = GRACE_GROUP_HAS_REQUESTS | GRACE_GROUP_HAS_CONNS;
  out->requests_total = st.requests_total;
  out->requests_inflight = st.requests_inflight;
  out->requests_cut = st.requests_cut;
  grace__group_conn_stats(&st, out);
}

int grace_group_add_http(grace_group *g, const char *name,
                         grace_http_server *srv) {
  static const grace_group_part_ops ops = {
      .start = http_start,
      .begin = http_begin,
      .force = http_force,
      .stats = http_stats,
  };
  if (srv == NULL)
    return GRACE_EINVAL;
  return grace_group_add(g, name, &ops, srv, NULL);
}
