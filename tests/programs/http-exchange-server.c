/*
 * http-exchange-server: the handlers of tests/programs/exchange_handlers.h
 * on one port, for HTTP/1.1 and HTTP/2 clients alike (the integration test
 * test_http_exchange_h2.py drives it with nghttp and curl).
 *
 *   http-exchange-server -addr 127.0.0.1:8000 [-max-body-bytes N]
 *
 * The first SIGINT/SIGTERM shuts it down gracefully; it exits 0 once
 * drained, 1 if the drain did not finish within -shutdown-timeout.
 */
#include <stdio.h>
#include <stdlib.h>

#include "grace/context.h"
#include "grace/flags.h"
#include "grace/http.h"
#include "grace/log.h"
#include "grace/signal.h"

#include "exchange_handlers.h"

int main(int argc, char **argv) {
  const char *addr = ":8000";
  grace_duration shutdown_timeout = 10 * GRACE_SECOND;
  grace_http_options opts;
  grace_http_server *srv;
  grace_ctx *ctx;
  int64_t max_body = 16 << 20, loops = 1;
  int rv, code = 0;

  grace_http_options_init(&opts);
  grace_flags *flags = grace_flags_new(argv[0]);
  if (flags == NULL)
    grace_log_fatal("out of memory");
  grace_flags_string(flags, "addr", &addr, "listen address (host:port)");
  grace_flags_duration(flags, "shutdown-timeout", &shutdown_timeout,
                       "deadline of the graceful shutdown");
  grace_flags_int(flags, "max-body-bytes", &max_body,
                  "largest request body (413 above)");
  grace_flags_int(flags, "loops", &loops,
                  "event-loop threads (0: one per core)");
  grace_flags_parse_or_exit(flags, argc, argv);
  grace_flags_free(flags);
  if (max_body < 0 || loops < 0 || loops > 256) {
    fprintf(stderr, "invalid -max-body-bytes or -loops\n");
    return 2;
  }
  opts.max_body_bytes = (size_t)max_body;
  opts.loops = (unsigned)loops;

  grace_ctx *stop = grace_signal_context();
  rv = grace_http_server_new(&opts, &srv);
  if (rv != 0)
    grace_log_fatal("HTTP server error: %s", grace_strerror(rv));
  if ((rv = exch_routes(srv)) != 0)
    grace_log_fatal("HTTP server error: %s", grace_strerror(rv));
  if ((rv = grace_http_server_listen(srv, addr)) != 0)
    grace_log_fatal("HTTP server error: listen tcp %s: %s", addr,
                    grace_strerror(rv));
  if ((rv = grace_http_server_start(srv)) != 0)
    grace_log_fatal("HTTP server error: %s", grace_strerror(rv));

  grace_ctx_wait(stop, -1);
  grace_log("Shutdown Server...");
  rv = grace_ctx_with_timeout(grace_ctx_background(), shutdown_timeout, &ctx);
  if (rv != 0)
    grace_log_fatal("HTTP server Shutdown: %s", grace_strerror(rv));
  rv = grace_http_server_shutdown(srv, ctx);
  if (rv != 0) {
    grace_log("HTTP server Shutdown: %s", grace_strerror(rv));
    grace_http_server_close(srv);
    code = 1;
  } else {
    grace_log("HTTP server graceful shutdown completed");
  }
  grace_ctx_cancel(ctx);
  grace_ctx_unref(ctx);
  grace_http_server_free(srv);
  return code;
}
