/*
 * A TCP server of the caller's own protocol as a group part, built only on
 * the public API (grace/tcp.h): begin is shutdown_begin, drained is the
 * server's drained descriptor, force is close.
 */
#include <stdio.h>

#include "grace/tcp.h"
#include "group/group_int.h"

static int tcp_start(grace_group_part *part, void *data) {
  grace_tcp_server *srv = data;
  (void)part;
  int rv = grace_tcp_server_start(srv);
  /* GRACE_ESTATE means "no listener" or "already started"; a server with a
   * listener was started by its owner, which is fine. */
  if (rv == GRACE_ESTATE && grace_tcp_server_port(srv, 0) >= 0)
    rv = 0;
  return rv;
}

/*
 * Drained when the server's drained descriptor turns readable, the moment
 * its last connection closes: a descriptor rather than the drained
 * callback, for the reason http_part.c gives (after a force the callback
 * could still fire on a loop thread after grace_group_free).
 */
static int tcp_begin(grace_group_part *part, grace_ctx *deadline,
                     void *data) {
  grace_tcp_server *srv = data;
  (void)deadline;
  /* A hand-over: a client that connected an instant before the listener
   * closed gets the window to send its command rather than a close. */
  grace_tcp_server_set_close_spread(
      srv, grace__group_handover_spread(grace__part_group(part)));
  int rv = grace_tcp_server_shutdown_begin(srv, NULL, NULL);
  /* GRACE_ESHUTDOWN: someone else began it; the descriptor says the same. */
  if (rv != 0 && rv != GRACE_ESHUTDOWN)
    return rv;
  grace_group_part_done_fd(part, grace_tcp_server_drained_fd(srv));
  return 0;
}

static int tcp_force(grace_group_part *part, char *what, size_t len,
                     void *data) {
  grace_tcp_server *srv = data;
  grace_tcp_stats st;
  (void)part;
  grace_tcp_server_stats(srv, &st);
  int cut = grace_tcp_server_close(srv);
  snprintf(what, len, "%d busy connection%s cut, %llu connection%s closed",
           cut, cut == 1 ? "" : "s", (unsigned long long)st.conns_open,
           st.conns_open == 1 ? "" : "s");
  return cut;
}

/* A busy period is a command: the request counters. */
static void tcp_stats(grace_group_part *part, grace_group_stats *out,
                      void *data) {
  grace_tcp_stats st;
  (void)part;
  grace_tcp_server_stats(data, &st);
  out->has = GRACE_GROUP_HAS_REQUESTS | GRACE_GROUP_HAS_CONNS;
  out->requests_total = st.busy_total;
  out->requests_inflight = st.conns_busy;
  out->requests_cut = st.conns_cut;
  out->conns_active = st.conns_busy;
  out->conns_idle = st.conns_idle;
  /* The counters are read one by one: never let "new" go negative. */
  uint64_t known = st.conns_busy + st.conns_idle;
  out->conns_new = st.conns_open > known ? st.conns_open - known : 0;
  out->conns_idle_closed = st.idle_closed_on_shutdown;
}

int grace_group_add_tcp(grace_group *g, const char *name,
                        grace_tcp_server *srv) {
  static const grace_group_part_ops ops = {
      .start = tcp_start,
      .begin = tcp_begin,
      .force = tcp_force,
      .stats = tcp_stats,
  };
  if (srv == NULL)
    return GRACE_EINVAL;
  return grace_group_add(g, name, &ops, srv, NULL);
}
