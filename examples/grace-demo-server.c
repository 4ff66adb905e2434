/*
 * grace-demo-server: the whole lifecycle in one program.  An HTTP server
 * (the seed's /sleep and / routes, plus /readyz, /livez and /metrics), a
 * gRPC server (the seed's Greeter, plus grpc.health.v1) and the seed's
 * Syncer (a periodic worker) run in one grace_group, which shuts them down
 * together, in phases, under one deadline:
 *
 *   first SIGINT/SIGTERM  /readyz answers 503 and gRPC health NOT_SERVING
 *                         at once; both servers keep serving for
 *                         -shutdown-delay; then they stop accepting and
 *                         drain in parallel while the Syncer finishes its
 *                         tick and runs its cleanup; each phase is logged;
 *                         a drain report ends the log; exit 0
 *   -shutdown-timeout     the overall deadline: what is left then is cut,
 *                         the report says what, exit 1
 *   second signal         exit 1 at once
 *
 * Under systemd (Type=notify) it sends READY=1, STOPPING=1 and
 * EXTEND_TIMEOUT_USEC while draining; with socket activation (LISTEN_FDS)
 * it serves the sockets it was given instead of -addr: those named "grpc"
 * (FileDescriptorName=grpc) serve gRPC, the others HTTP.
 *
 * SIGUSR2 (or `grace-upgrade -socket <-upgrade-socket>`) is a zero-downtime
 * upgrade: the binary at this program's path starts with the same
 * arguments on the same listening sockets; once it serves, this process
 * stops accepting and drains (no not-ready phase, no delay: the endpoint
 * stays up), then exits 0.  A new process that fails before it is ready
 * is killed and this one goes on serving (see grace/upgrade.h).
 *
 * With -tls-cert and -tls-key both servers speak TLS only (HTTPS with ALPN
 * choosing HTTP/2 or HTTP/1.1, gRPC over TLS), and SIGHUP rereads the two
 * files: new handshakes use the new certificate, established connections
 * keep theirs, and a bad new pair is refused (logged) with the old one
 * kept.
 *
 *   grace-demo-server -addr :8000 -grpc-addr :50051 -shutdown-delay 5s \
 *       -shutdown-timeout 25s -interval 1s -cleanup 2s
 */
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "grace/context.h"
#include "grace/duration.h"
#include "grace/flags.h"
#include "grace/group.h"
#include "grace/grpc.h"
#include "grace/http.h"
#include "grace/log.h"
#include "grace/signal.h"
#include "grace/systemd.h"
#include "grace/tls.h"
#include "grace/upgrade.h"
#include "grace/worker.h"

#include "greeter_handler.h"
#include "sleep_handler.h"
#include "tls_flags.h"

/* The seed's Syncer: what a tick does and how long its cleanup takes. */
typedef struct syncer {
  grace_duration work;    /* how long one tick's work takes */
  grace_duration cleanup; /* how long the cleanup at stop takes */
} syncer;

/*
 * One tick: "do something", which takes s->work.  A tick that has begun
 * finishes its work even when the stop begins (as the seed's Go loop
 * finishes the select case it is in); the stop only prevents the next one.
 */
static grace_duration sync_once(grace_worker *w, grace_ctx *ctx, void *data) {
  const syncer *s = data;
  char b1[GRACE_DURATION_STRLEN];
  (void)w;
  (void)ctx;
  grace_log("do something");
  if (s->work > 0) {
    grace_ctx_wait(grace_ctx_background(), s->work);
    grace_duration_format(s->work, b1, sizeof(b1));
    grace_log("did something in %s", b1);
  }
  return GRACE_WORKER_DEFAULT;
}

/* The Syncer's Stop: takes s->cleanup, but gives up as soon as its
 * context is done (the group's deadline passed, or it was forced). */
static int stop_syncer(grace_worker *w, grace_ctx *ctx, void *data) {
  const syncer *s = data;
  (void)w;
  grace_log("Stop Syncer start");
  int rv = grace_ctx_wait(ctx, s->cleanup);
  if (rv == GRACE_ECANCELED || rv == GRACE_ETIMEDOUT) {
    grace_log("Stop Syncer cut short: %s", grace_strerror(rv));
    return rv;
  }
  if (rv < 0) {
    grace_log("Stop Syncer: %s", grace_strerror(rv));
    return rv;
  }
  grace_log("Stop Syncer done");
  return 0;
}

/* SIGHUP reloads the certificate: a thread waits for it with sigwait (the
 * signal is blocked in every thread, so nothing else takes it). */
typedef struct reloader {
  grace_tls *tls;
  pthread_t thread;
  atomic_bool stop;
} reloader;

static void *reload_main(void *arg) {
  reloader *r = arg;
  sigset_t set;
  int sig;
  sigemptyset(&set);
  sigaddset(&set, SIGHUP);
  while (sigwait(&set, &sig) == 0 && !atomic_load(&r->stop)) {
    int rv = grace_tls_reload(r->tls);
    if (rv == 0)
      grace_log("SIGHUP: TLS certificate reloaded");
    else
      grace_log("SIGHUP: TLS certificate reload refused (%s), the old one "
                "stays in use",
                grace_strerror(rv));
  }
  return NULL;
}

/* Prints Go's message for a bad address flag; returns 2 for main. */
static int bad_addr(const char *flag, const char *addr) {
  fprintf(stderr, "invalid value \"%s\" for flag -%s: address %s: %s\n",
          addr, flag, addr,
          strchr(addr, ':') ? "invalid host or port"
                            : "missing port in address");
  return 2;
}

int main(int argc, char **argv) {
  const char *addr = ":8000", *grpc_addr = ":50051";
  const char *pidfile = NULL, *upgrade_socket = NULL;
  const char *tls_cert = NULL, *tls_key = NULL;
  grace_duration tls_handshake_timeout = 10 * GRACE_SECOND;
  grace_tls *tls = NULL;
  reloader rl = {.tls = NULL};
  bool reloading = false;
  grace_duration upgrade_timeout = 0;
  bool fdstore = false;
  grace_duration delay = 0, timeout = 0, interval = GRACE_SECOND;
  grace_duration body_timeout = 60 * GRACE_SECOND;
  grace_duration send_timeout = 60 * GRACE_SECOND;
  grace_duration close_spread = 0;
  syncer sy = {.work = 0, .cleanup = 0};
  int64_t loops = 0;
  char err[512];
  int rv, code = 2;

  grace_flags *flags = grace_flags_new(argv[0]);
  if (flags == NULL)
    grace_log_fatal("out of memory");
  if (grace_flags_string(flags, "addr", &addr,
                         "HTTP listen address (host:port); ignored under "
                         "socket activation (LISTEN_FDS)") != 0 ||
      grace_flags_string(flags, "grpc-addr", &grpc_addr,
                         "gRPC listen address (host:port); ignored under "
                         "socket activation with a socket named grpc") != 0 ||
      grace_flags_duration(flags, "shutdown-delay", &delay,
                           "keep serving this long after the first signal, "
                           "not ready, before draining") != 0 ||
      grace_flags_duration(flags, "shutdown-timeout", &timeout,
                           "overall deadline of the shutdown (0: "
                           "$GRACE_SHUTDOWN_TIMEOUT, else from "
                           "$TERMINATION_GRACE_PERIOD_SECONDS, else 27s)") !=
          0 ||
      grace_flags_duration(flags, "body-timeout", &body_timeout,
                           "longest pause between two reads of a request "
                           "body (HTTP and gRPC)") != 0 ||
      grace_flags_duration(flags, "send-timeout", &send_timeout,
                           "longest pause between two writes that make "
                           "progress (HTTP and gRPC)") != 0 ||
      grace_flags_duration(flags, "close-spread", &close_spread,
                           "spread the closing of idle HTTP/1.1 keep-alive "
                           "connections over this long at shutdown: each "
                           "connection's next response says Connection: close "
                           "(0: close idle connections at once)") != 0 ||
      grace_flags_duration(flags, "interval", &interval,
                           "time between two Syncer ticks") != 0 ||
      grace_flags_duration(flags, "tick-work", &sy.work,
                           "how long one Syncer tick works") != 0 ||
      grace_flags_duration(flags, "cleanup", &sy.cleanup,
                           "how long the Syncer's cleanup at stop takes") !=
          0 ||
      grace_flags_int(flags, "loops", &loops,
                      "event-loop threads per server (0: one per core)") != 0 ||
      grace_flags_string(flags, "pidfile", &pidfile,
                         "write the PID of the process that accepts to this "
                         "file (rewritten by an upgrade)") != 0 ||
      grace_flags_string(flags, "upgrade-socket", &upgrade_socket,
                         "Unix socket where grace-upgrade asks for an "
                         "upgrade") != 0 ||
      grace_flags_duration(flags, "upgrade-timeout", &upgrade_timeout,
                           "how long an upgrade's new process may take to "
                           "be ready (0: 30s)") != 0 ||
      grace_flags_bool(flags, "fdstore", &fdstore,
                       "also keep the listeners in systemd's file "
                       "descriptor store (FDSTORE=1)") != 0 ||
      grace_flags_string(flags, "tls-cert", &tls_cert,
                         "PEM certificate chain: serve HTTPS and gRPC over "
                         "TLS (with -tls-key; SIGHUP rereads both)") != 0 ||
      grace_flags_string(flags, "tls-key", &tls_key,
                         "PEM private key of -tls-cert") != 0 ||
      grace_flags_duration(flags, "tls-handshake-timeout",
                           &tls_handshake_timeout,
                           "longest TLS handshake (0: none)") != 0)
    grace_log_fatal("cannot register the flags");
  grace_flags_parse_or_exit(flags, argc, argv);
  grace_flags_free(flags);
  if (delay < 0 || timeout < 0 || loops < 0 || loops > 256 || interval <= 0 ||
      sy.work < 0 || sy.cleanup < 0 || body_timeout < 0 || send_timeout < 0 ||
      upgrade_timeout < 0 || close_spread < 0 || tls_handshake_timeout < 0) {
    fprintf(stderr, "invalid -shutdown-delay, -shutdown-timeout, -loops, "
                    "-interval, -tick-work, -cleanup, -body-timeout, "
                    "-send-timeout, -upgrade-timeout, -close-spread or "
                    "-tls-handshake-timeout\n");
    return 2;
  }
  tls = example_tls(tls_cert, tls_key, tls_handshake_timeout);
  if (tls != NULL) {
    /* Blocked before any thread exists, so that only the reloader's
     * sigwait takes it. */
    sigset_t hup;
    sigemptyset(&hup);
    sigaddset(&hup, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &hup, NULL);
  }
  if (timeout == 0) {
    grace_duration d;
    rv = grace_group_env_timeout(&d, err, sizeof(err));
    if (rv != 0 && rv != GRACE_ENOENT) {
      fprintf(stderr, "%s\n", err);
      return 2;
    }
  }

  /* The upgrader takes what this process inherited, from a predecessor
   * (an upgrade) or from systemd (socket activation, the fd store), before
   * any thread starts, and hides the variables from what this process
   * would run. */
  grace_upgrader_options uopts;
  grace_upgrader_options_init(&uopts);
  uopts.pidfile = pidfile;
  uopts.control_path = upgrade_socket;
  uopts.ready_timeout = upgrade_timeout;
  uopts.close_spread = close_spread;
  uopts.fdstore = fdstore;
  grace_upgrader *up;
  rv = grace_upgrader_new(&uopts, argc, argv, &up);
  if (rv != 0)
    grace_log_fatal("upgrade: %s", grace_strerror(rv));

  /* Before any thread exists (loops, the worker), so that the signals
   * always reach this thread's handler. */
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
  hopts.body_timeout = body_timeout;
  hopts.send_timeout = send_timeout;
  hopts.close_spread = close_spread;
  hopts.tls = tls;
  grace_http_server *srv;
  rv = grace_http_server_new(&hopts, &srv);
  if (rv != 0)
    grace_log_fatal("HTTP server error: %s", grace_strerror(rv));
  if ((rv = grace_http_server_handle(srv, "/sleep", handle_sleep, NULL)) ||
      (rv = grace_http_server_handle(srv, "/", handle_root, NULL)) ||
      (rv = grace_group_http_health(group, srv)))
    grace_log_fatal("HTTP server error: %s", grace_strerror(rv));

  grace_grpc_options gropts;
  grace_grpc_options_init(&gropts);
  gropts.http.loops = (unsigned)loops;
  gropts.http.body_timeout = body_timeout;
  gropts.http.send_timeout = send_timeout;
  gropts.http.close_spread = close_spread;
  gropts.http.tls = tls;
  grace_grpc_server *gsrv;
  rv = grace_grpc_server_new(&gropts, &gsrv);
  if (rv != 0)
    grace_log_fatal("gRPC server error: %s", grace_strerror(rv));
  grace_grpc_method m = {.path = "/Greeter/SayHello",
                         .input = &hello_request__descriptor,
                         .on_message = say_hello,
                         .on_cancel = say_hello_cancel};
  rv = grace_grpc_server_register(gsrv, &m);
  if (rv != 0)
    grace_log_fatal("gRPC server error: %s", grace_strerror(rv));

  grace_worker_options wopts;
  grace_worker_options_init(&wopts);
  wopts.interval = interval;
  wopts.task = sync_once;
  wopts.cleanup = stop_syncer;
  wopts.data = &sy;
  wopts.name = "syncer";
  grace_worker *w;
  rv = grace_worker_new(&wopts, &w);
  if (rv != 0)
    grace_log_fatal("Syncer run err: %s", grace_strerror(rv));

  /* Inherited sockets: those named "grpc" serve gRPC, the others HTTP. */
  int http_fds = 0, grpc_fds = 0, fd;
  const char *name;
  const char *from = grace_upgrader_is_successor(up)
                         ? "the previous process (upgrade)"
                         : "systemd (LISTEN_FDS)";
  for (size_t i = 0; (name = grace_upgrader_inherited_name(up, i)); i++) {
    bool is_grpc = strcmp(name, "grpc") == 0;
    rv = grace_upgrader_listen(up, name, NULL, 0, &fd, NULL);
    if (rv == 0)
      rv = is_grpc ? grace_grpc_server_listen_fd(gsrv, fd)
                   : grace_http_server_listen_fd(srv, fd);
    if (rv != 0)
      grace_log_fatal("inherited socket \"%s\": %s", name,
                      grace_strerror(rv));
    if (is_grpc)
      grpc_fds++;
    else
      http_fds++;
  }
  if (http_fds > 0) {
    grace_log("Serving HTTP on %d socket%s from %s", http_fds,
              http_fds == 1 ? "" : "s", from);
  } else {
    rv = grace_upgrader_listen(up, "http", addr, hopts.backlog, &fd, NULL);
    if (rv == 0)
      rv = grace_http_server_listen_fd(srv, fd);
    if (rv == GRACE_EINVAL) {
      code = bad_addr("addr", addr);
      goto out;
    }
    if (rv != 0)
      grace_log_fatal("HTTP server error: listen tcp %s: %s", addr,
                      grace_strerror(rv));
    grace_log("Serving HTTP on %s", addr);
  }
  if (grpc_fds > 0) {
    grace_log("Serving gRPC on %d socket%s from %s", grpc_fds,
              grpc_fds == 1 ? "" : "s", from);
  } else {
    rv = grace_upgrader_listen(up, "grpc", grpc_addr, hopts.backlog, &fd,
                               NULL);
    if (rv == 0)
      rv = grace_grpc_server_listen_fd(gsrv, fd);
    if (rv == GRACE_EINVAL) {
      code = bad_addr("grpc-addr", grpc_addr);
      goto out;
    }
    if (rv != 0)
      grace_log_fatal("gRPC server error: listen tcp %s: %s", grpc_addr,
                      grace_strerror(rv));
    grace_log("Serving gRPC on port %d", grace_grpc_server_port(gsrv, 0));
  }

  /* One group: the same phases and the same deadline for all three.  The
   * gRPC health service follows the group's readiness. */
  if ((rv = grace_group_add_http(group, "http", srv)) != 0 ||
      (rv = grace_group_add_grpc(group, "grpc", gsrv)) != 0 ||
      (rv = grace_group_add_worker(group, "syncer", w)) != 0 ||
      (rv = grace_group_add_upgrader(group, "upgrade", up)) != 0)
    grace_log_fatal("group: %s", grace_strerror(rv));

  if (tls != NULL) {
    rl.tls = tls;
    atomic_init(&rl.stop, false);
    rv = pthread_create(&rl.thread, NULL, reload_main, &rl);
    if (rv != 0)
      grace_log_fatal("TLS reload thread: %s", strerror(rv));
    reloading = true;
  }

  grace_group_result res;
  rv = grace_group_run(group, stop, &res);
  code = rv == 0 ? 0 : 1;

out:
  if (reloading) {
    atomic_store(&rl.stop, true);
    pthread_kill(rl.thread, SIGHUP);
    pthread_join(rl.thread, NULL);
  }
  /* The group first: it borrows the servers and the worker. */
  grace_group_free(group);
  grace_worker_free(w);
  grace_grpc_server_free(gsrv);
  grace_http_server_free(srv);
  grace_upgrader_free(up);
  grace_tls_free(tls);
  return code;
}
