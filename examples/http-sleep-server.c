/*
 * http-sleep-server: the seed's HTTP example, in C with grace.
 *
 *   GET /sleep?duration=5s   sleeps that long (without blocking anything
 *                            else), then answers "Welcome HTTP Server";
 *                            a bad duration answers 400 with Go's error
 *   GET /                    "Hello, World!\n" (a fixed body for benchmarks)
 *
 * The first SIGINT/SIGTERM shuts the server down gracefully within
 * -shutdown-timeout; a second one exits at once with status 1.
 *
 * SIGUSR2 (or `grace-upgrade -socket <-upgrade-socket>`) is a zero-downtime
 * upgrade: the binary at this program's path is started with the same
 * arguments on the same listening socket; once it serves, this process
 * stops accepting, drains and exits 0 (see grace/upgrade.h).
 */
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "grace/context.h"
#include "grace/duration.h"
#include "grace/flags.h"
#include "grace/http.h"
#include "grace/log.h"
#include "grace/signal.h"
#include "grace/upgrade.h"

#include "sleep_handler.h" /* the /sleep and / routes */

static void on_listeners_closed(grace_http_server *srv, void *data) {
  (void)srv;
  (void)data;
  grace_log("Stopped serving new connections");
}

/* Waits until |a| or |b| is done; returns 0 for |a|, 1 for |b|. */
static int wait_either(grace_ctx *a, grace_ctx *b) {
  struct pollfd fds[2] = {{.fd = grace_ctx_done_fd(a), .events = POLLIN},
                          {.fd = grace_ctx_done_fd(b), .events = POLLIN}};
  for (;;) {
    if (grace_ctx_err(a) != 0)
      return 0;
    if (grace_ctx_err(b) != 0)
      return 1;
    (void)poll(fds, 2, -1);
  }
}

int main(int argc, char **argv) {
  const char *addr = ":8000", *pidfile = NULL, *upgrade_socket = NULL;
  grace_duration upgrade_timeout = 0;
  grace_upgrader_options uopts;
  grace_upgrader *up;
  grace_duration shutdown_timeout = 10 * GRACE_SECOND;
  grace_http_options opts;
  grace_http_server *srv;
  grace_ctx *ctx;
  int64_t loops = 0, max_header = 0, max_body = 0;
  int rv, code = 0;

  grace_http_options_init(&opts);
  max_header = (int64_t)opts.max_header_bytes;
  max_body = (int64_t)opts.max_body_bytes;

  grace_flags *flags = grace_flags_new(argv[0]);
  if (flags == NULL)
    grace_log_fatal("out of memory");
  grace_flags_string(flags, "addr", &addr, "listen address (host:port)");
  grace_flags_duration(flags, "shutdown-timeout", &shutdown_timeout,
                       "deadline of the graceful shutdown");
  grace_flags_duration(flags, "read-header-timeout",
                       &opts.read_header_timeout,
                       "time allowed to read a request's headers");
  grace_flags_duration(flags, "idle-timeout", &opts.idle_timeout,
                       "how long a keep-alive connection may stay idle");
  grace_flags_duration(flags, "body-timeout", &opts.body_timeout,
                       "longest pause between two reads of a request body");
  grace_flags_duration(flags, "send-timeout", &opts.send_timeout,
                       "longest pause between two writes that make progress");
  grace_flags_duration(flags, "close-spread", &opts.close_spread,
                       "spread the closing of idle HTTP/1.1 keep-alive "
                       "connections over this long at shutdown: each "
                       "connection's next response says Connection: close "
                       "(0: close idle connections at once)");
  grace_flags_int(flags, "max-header-bytes", &max_header,
                  "largest request head (431 above)");
  grace_flags_int(flags, "max-body-bytes", &max_body,
                  "largest request body (413 above)");
  grace_flags_bool(flags, "h2-only", &opts.h2_only,
                   "serve HTTP/2 (prior knowledge) only, no HTTP/1.1");
  grace_flags_int(flags, "loops", &loops,
                  "event-loop threads (0: one per core)");
  grace_flags_string(flags, "pidfile", &pidfile,
                     "write the PID of the process that accepts to this "
                     "file (rewritten by an upgrade)");
  grace_flags_string(flags, "upgrade-socket", &upgrade_socket,
                     "Unix socket where grace-upgrade asks for an upgrade");
  grace_flags_duration(flags, "upgrade-timeout", &upgrade_timeout,
                       "how long an upgrade's new process may take to be "
                       "ready (0: 30s)");
  grace_flags_parse_or_exit(flags, argc, argv);
  grace_flags_free(flags);
  if (loops < 0 || loops > 256 || max_header < 256 || max_body < 0 ||
      opts.close_spread < 0 || upgrade_timeout < 0) {
    fprintf(stderr, "invalid -loops, -max-header-bytes, -max-body-bytes, "
                    "-close-spread or -upgrade-timeout\n");
    return 2;
  }
  opts.loops = (unsigned)loops;
  opts.max_header_bytes = (size_t)max_header;
  opts.max_body_bytes = (size_t)max_body;

  /* The upgrader first: it takes what a predecessor handed over, before
   * any thread exists. */
  grace_upgrader_options_init(&uopts);
  uopts.pidfile = pidfile;
  uopts.control_path = upgrade_socket;
  uopts.ready_timeout = upgrade_timeout;
  rv = grace_upgrader_new(&uopts, argc, argv, &up);
  if (rv != 0)
    grace_log_fatal("upgrade: %s", grace_strerror(rv));
  grace_ctx *stop = grace_signal_context();

  rv = grace_http_server_new(&opts, &srv);
  if (rv != 0)
    grace_log_fatal("HTTP server error: %s", grace_strerror(rv));
  if ((rv = grace_http_server_handle(srv, "/sleep", handle_sleep, NULL)) ||
      (rv = grace_http_server_handle(srv, "/", handle_root, NULL)) ||
      (rv = grace_http_server_on_shutdown(srv, on_listeners_closed, NULL)))
    grace_log_fatal("HTTP server error: %s", grace_strerror(rv));
  int fd;
  bool inherited;
  rv = grace_upgrader_listen(up, "http", addr, opts.backlog, &fd, &inherited);
  if (rv == 0)
    rv = grace_http_server_listen_fd(srv, fd);
  if (rv == GRACE_EINVAL) {
    /* A malformed -addr is a bad flag value: exit 2 like Go's flag. */
    fprintf(stderr, "invalid value \"%s\" for flag -addr: address %s: %s\n",
            addr, addr,
            strchr(addr, ':') ? "invalid host or port"
                              : "missing port in address");
    grace_http_server_free(srv);
    grace_upgrader_free(up);
    return 2;
  }
  if (rv != 0)
    grace_log_fatal("HTTP server error: listen tcp %s: %s", addr,
                    grace_strerror(rv));
  rv = grace_http_server_start(srv);
  if (rv != 0)
    grace_log_fatal("HTTP server error: %s", grace_strerror(rv));
  if (inherited)
    grace_log("Serving HTTP on the socket handed over by the previous "
              "process (generation %u)",
              grace_upgrader_generation(up));
  rv = grace_upgrader_ready(up);
  if (rv != 0)
    grace_log_fatal("upgrade: %s", grace_strerror(rv));

  if (wait_either(stop, grace_upgrader_context(up)) == 1) {
    /* The new process serves the same socket: idle keep-alive connections
     * are told to close with their next response rather than cut. */
    grace_log("Handed over: Shutdown Server...");
    if (opts.close_spread < GRACE_UPGRADE_DEFAULT_CLOSE_SPREAD)
      grace_http_server_set_close_spread(srv, GRACE_UPGRADE_DEFAULT_CLOSE_SPREAD);
  } else {
    grace_log("Shutdown Server...");
    /* No upgrade from now on; the listening socket closes with the
     * server's. */
    grace_upgrader_stop(up);
  }

  rv = grace_ctx_with_timeout(grace_ctx_background(), shutdown_timeout, &ctx);
  if (rv != 0)
    grace_log_fatal("HTTP server Shutdown: %s", grace_strerror(rv));
  rv = grace_http_server_shutdown(srv, ctx);
  if (rv != 0) {
    /* Error from closing listeners, or context timeout. */
    grace_log("HTTP server Shutdown: %s", grace_strerror(rv));
    int cut = grace_http_server_close(srv);
    grace_log("HTTP server closed: %d request(s) cut", cut);
    code = 1;
  } else {
    grace_http_stats st;
    grace_http_server_stats(srv, &st);
    /* What the body and send timeouts cut is part of the drain's story. */
    if (st.requests_cut > 0)
      grace_log("HTTP server drain: %llu request(s) cut by timeouts",
                (unsigned long long)st.requests_cut);
    grace_log("HTTP server graceful shutdown completed");
  }
  grace_ctx_cancel(ctx);
  grace_ctx_unref(ctx);
  grace_http_server_free(srv);
  grace_upgrader_free(up);
  return code;
}
