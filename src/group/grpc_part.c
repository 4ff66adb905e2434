/*
 * The gRPC server as a group part, built only on the public gRPC API
 * (grace/grpc.h): not ready is the health service turning NOT_SERVING,
 * begin is graceful_stop_begin, drained is the server's drained
 * descriptor, force is stop.
 */
#include <stdio.h>

#include "grace/grpc.h"
#include "group/group_int.h"

static int grpc_start(grace_group_part *part, void *data) {
  grace_grpc_server *srv = data;
  (void)part;
  int rv = grace_grpc_server_start(srv);
  /* GRACE_ESTATE means "no listener" or "already started"; a server with a
   * listener was started by its owner, which is fine. */
  if (rv == GRACE_ESTATE && grace_grpc_server_port(srv, 0) >= 0)
    rv = 0;
  return rv;
}

/* Phase 1: health checks (and every Watch) see NOT_SERVING at once, for
 * the whole server and each service, while calls are still served. */
static void grpc_not_ready(grace_group_part *part, void *data) {
  (void)part;
  grace_grpc_server_set_all_not_serving(data);
}

/*
 * The part is drained when the server's drained descriptor turns readable,
 * the moment its last connection closes.  A descriptor rather than the
 * done callback, for the reason http_part.c gives: after a force the
 * callback may still fire on a loop thread, possibly after
 * grace_group_free.
 */
static int grpc_begin(grace_group_part *part, grace_ctx *deadline,
                      void *data) {
  grace_grpc_server *srv = data;
  (void)deadline;
  /* A hand-over: HTTP/2 connections get their GOAWAY at once, but one
   * accepted a moment ago whose first bytes are still on their way is
   * given the window to send them (its calls are then served) instead of
   * being closed unread. */
  grace_http_server_set_close_spread(
      grace_grpc_server_http(srv),
      grace__group_handover_spread(grace__part_group(part)));
  int rv = grace_grpc_server_graceful_stop_begin(srv, NULL, NULL);
  /* GRACE_ESHUTDOWN: someone else began it; the descriptor says the same. */
  if (rv != 0 && rv != GRACE_ESHUTDOWN)
    return rv;
  grace_group_part_done_fd(part, grace_grpc_server_drained_fd(srv));
  return 0;
}

static int grpc_force(grace_group_part *part, char *what, size_t len,
                      void *data) {
  grace_grpc_server *srv = data;
  grace_http_stats st;
  (void)part;
  grace_http_server_stats(grace_grpc_server_http(srv), &st);
  int cut = grace_grpc_server_stop(srv);
  snprintf(what, len, "%d RPC%s cut, %llu connection%s closed", cut,
           cut == 1 ? "" : "s", (unsigned long long)st.conns_open,
           st.conns_open == 1 ? "" : "s");
  return cut;
}

/* Each call is one HTTP/2 request of the server underneath: its request
 * counters are the RPC counters. */
static void grpc_stats(grace_group_part *part, grace_group_stats *out,
                       void *data) {
  grace_http_stats st;
  (void)part;
  grace_http_server_stats(grace_grpc_server_http(data), &st);
  out->has = GRACE_GROUP_HAS_RPCS | GRACE_GROUP_HAS_CONNS;
  out->rpcs_total = st.requests_total;
  out->rpcs_inflight = st.requests_inflight;
  out->rpcs_cut = st.requests_cut;
  grace__group_conn_stats(&st, out);
}

int grace_group_add_grpc(grace_group *g, const char *name,
                         grace_grpc_server *srv) {
  static const grace_group_part_ops ops = {
      .start = grpc_start,
      .begin = grpc_begin,
      .force = grpc_force,
      .stats = grpc_stats,
      .not_ready = grpc_not_ready,
  };
  if (srv == NULL)
    return GRACE_EINVAL;
  return grace_group_add(g, name, &ops, srv, NULL);
}
