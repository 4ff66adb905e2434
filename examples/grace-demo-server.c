/*
 * grace-demo-server: the whole lifecycle in one program.  An HTTP server
 * (the seed's /sleep and / routes, plus /readyz, /livez and /metrics) runs
 * in a grace_group, which shuts it down in phases under one deadline:
 *
 *   first SIGINT/SIGTERM  /readyz answers 503 at once; the server keeps
 *                         serving for -shutdown-delay; then it stops
 *                         accepting and drains; each phase is logged; a
 *                         drain report ends the log; exit 0
 *   -shutdown-timeout     the overall deadline: what is left then is cut,
 *                         the report says what, exit 1
 *   second signal         exit 1 at once
 *
 * Under systemd (Type=notify) it sends READY=1, STOPPING=1 and
 * EXTEND_TIMEOUT_USEC while draining; with socket activation (LISTEN_FDS)
 * it serves the sockets it was given instead of -addr.
 *
 *   grace-demo-server -addr :8000 -shutdown-delay 5s -shutdown-timeout 25s
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "grace/context.h"
#include "grace/duration.h"
#include "grace/flags.h"
#include "grace/group.h"
#include "grace/http.h"
#include "grace/log.h"
#include "grace/signal.h"
#include "grace/systemd.h"

#include "sleep_handler.h"

int main(int argc, char **argv) {
  const char *addr = ":8000";
  grace_duration delay = 0, timeout = 0;
  int64_t loops = 0;
  char err[512];
  char **fdnames = NULL;
  int rv;

  grace_flags *flags = grace_flags_new(argv[0]);
  if (flags == NULL)
    grace_log_fatal("out of memory");
  grace_flags_string(flags, "addr", &addr,
                     "listen address (host:port); ignored under socket "
                     "activation (LISTEN_FDS)");
  grace_flags_duration(flags, "shutdown-delay", &delay,
                       "keep serving this long after the first signal, "
                       "not ready, before draining");
  grace_flags_duration(flags, "shutdown-timeout", &timeout,
                       "overall deadline of the shutdown (0: "
                       "$GRACE_SHUTDOWN_TIMEOUT, else from "
                       "$TERMINATION_GRACE_PERIOD_SECONDS, else 27s)");
  grace_flags_int(flags, "loops", &loops,
                  "event-loop threads (0: one per core)");
  grace_flags_parse_or_exit(flags, argc, argv);
  grace_flags_free(flags);
  if (delay < 0 || timeout < 0 || loops < 0 || loops > 256) {
    fprintf(stderr, "invalid -shutdown-delay, -shutdown-timeout or -loops\n");
    return 2;
  }
  if (timeout == 0) {
    grace_duration d;
    rv = grace_group_env_timeout(&d, err, sizeof(err));
    if (rv != 0 && rv != GRACE_ENOENT) {
      fprintf(stderr, "%s\n", err);
      return 2;
    }
  }

  /* Socket activation: take the descriptors before any thread starts, and
   * hide the variables from anything this process would run. */
  int nfds = grace_sd_listen_fds_with_names(true, &fdnames);
  if (nfds < 0)
    grace_log_fatal("socket activation: %s", grace_strerror(nfds));

  grace_ctx *stop = grace_signal_context();

  grace_group_options gopts;
  grace_group_options_init(&gopts);
  gopts.shutdown_delay = delay;
  gopts.shutdown_timeout = timeout;
  grace_group *group;
  rv = grace_group_new(&gopts, &group);
  if (rv != 0)
    grace_log_fatal("group: %s", grace_strerror(rv));

  grace_http_options hopts;
  grace_http_options_init(&hopts);
  hopts.loops = (unsigned)loops;
  grace_http_server *srv;
  rv = grace_http_server_new(&hopts, &srv);
  if (rv != 0)
    grace_log_fatal("HTTP server error: %s", grace_strerror(rv));
  if ((rv = grace_http_server_handle(srv, "/sleep", handle_sleep, NULL)) ||
      (rv = grace_http_server_handle(srv, "/", handle_root, NULL)) ||
      (rv = grace_group_http_health(group, srv)))
    grace_log_fatal("HTTP server error: %s", grace_strerror(rv));

  if (nfds > 0) {
    /* Every passed socket serves HTTP.  When the gRPC server joins, the
     * sockets named "grpc" (FileDescriptorName=grpc) will go to it. */
    for (int i = 0; i < nfds; i++) {
      rv = grace_http_server_listen_fd(srv, GRACE_SD_LISTEN_FDS_START + i);
      if (rv != 0)
        grace_log_fatal("socket activation: descriptor %d (%s): %s",
                        GRACE_SD_LISTEN_FDS_START + i, fdnames[i],
                        grace_strerror(rv));
    }
    grace_log("Serving HTTP on %d socket%s from systemd (LISTEN_FDS)", nfds,
              nfds == 1 ? "" : "s");
  } else {
    rv = grace_http_server_listen(srv, addr);
    if (rv == GRACE_EINVAL) {
      fprintf(stderr, "invalid value \"%s\" for flag -addr: address %s: %s\n",
              addr, addr,
              strchr(addr, ':') ? "invalid host or port"
                                : "missing port in address");
      grace_http_server_free(srv);
      grace_group_free(group);
      return 2;
    }
    if (rv != 0)
      grace_log_fatal("HTTP server error: listen tcp %s: %s", addr,
                      grace_strerror(rv));
    grace_log("Serving HTTP on %s", addr);
  }
  grace_sd_listen_names_free(fdnames);

  rv = grace_group_add_http(group, "http", srv);
  if (rv != 0)
    grace_log_fatal("group: %s", grace_strerror(rv));

  /* More parts join the same group, and so the same phases and deadline:
   *  - the gRPC server (greeter + grpc.health.v1, which reports
   *    NOT_SERVING once grace_group_ready(group) turns false);
   *  - the seed's Syncer worker (a periodic task with a cleanup).
   * Each is one grace_group_add... call here. */

  grace_group_result res;
  rv = grace_group_run(group, stop, &res);
  grace_group_free(group);
  grace_http_server_free(srv);
  return rv == 0 ? 0 : 1;
}
