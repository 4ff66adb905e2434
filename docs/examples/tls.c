/*
 * The TLS guide's program (docs/guide/tls.md): HTTPS, HTTP/1.1 and HTTP/2
 * on one port (ALPN), the certificate reread on SIGHUP, and the graceful
 * shutdown of the HTTP guide.
 *
 *   tls addr cert.pem key.pem     port 0 in addr picks a free one
 *   curl --cacert cert.pem https://localhost:8443/hello          -> hello
 *   curl --cacert cert.pem --http2 https://localhost:8443/hello  (HTTP/2)
 *   kill -HUP <pid>        rereads cert.pem and key.pem
 *
 * The first SIGINT or SIGTERM drains within 10 s and exits 0 (1 if the
 * deadline cut requests); a second one exits 1 at once.
 */
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <string.h>

#include "grace/context.h"
#include "grace/duration.h"
#include "grace/error.h"
#include "grace/http.h"
#include "grace/log.h"
#include "grace/signal.h"
#include "grace/tls.h"

/* GET /hello answers "hello" over HTTP/1.1 or HTTP/2, whichever ALPN
 * chose: the handler does not see the difference, nor TLS. */
static void hello(grace_http_request *req, void *data) {
  (void)data;
  grace_http_respond(req, 200, "hello\n", 6);
}

/* SIGHUP rereads the certificate and key: a thread of ours takes it with
 * sigwait (the signal is blocked in every thread, so no other takes it). */
typedef struct reloader {
  grace_tls *tls;
  pthread_t thread;
  atomic_bool stop;
} reloader;

static void *reload_main(void *arg) {
  reloader *r = arg;
  sigset_t hup;
  int sig;
  sigemptyset(&hup);
  sigaddset(&hup, SIGHUP);
  while (sigwait(&hup, &sig) == 0 && !atomic_load(&r->stop)) {
    int rv = grace_tls_reload(r->tls);
    if (rv == 0)
      grace_log("SIGHUP: TLS certificate reloaded");
    else
      grace_log("SIGHUP: reload refused (%s), the old certificate stays",
                grace_strerror(rv));
  }
  return NULL;
}

int main(int argc, char **argv) {
  if (argc != 4)
    grace_log_fatal("usage: tls addr cert.pem key.pem");
  /* First, before any thread: SIGINT and SIGTERM cancel this context, and
   * SIGHUP is blocked here so that every thread started later inherits
   * the mask and only the reloader's sigwait takes it. */
  grace_ctx *stop = grace_signal_context();
  sigset_t hup;
  sigemptyset(&hup);
  sigaddset(&hup, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &hup, NULL);

  grace_tls_options topts;
  grace_tls_options_init(&topts);
  topts.cert_file = argv[2];
  topts.key_file = argv[3];
  topts.handshake_timeout = 5 * GRACE_SECOND; /* default 10 s */
  grace_tls *tls;
  int rv = grace_tls_new(&topts, &tls);
  if (rv != 0)
    grace_log_fatal("TLS: %s", grace_strerror(rv)); /* the reason is logged */

  grace_http_options hopts;
  grace_http_options_init(&hopts);
  hopts.tls = tls; /* HTTPS only: this server speaks no plaintext */
  grace_http_server *srv;
  if ((rv = grace_http_server_new(&hopts, &srv)) != 0)
    grace_log_fatal("HTTP server: %s", grace_strerror(rv));
  if ((rv = grace_http_server_handle(srv, "/hello", hello, NULL)) != 0 ||
      (rv = grace_http_server_listen(srv, argv[1])) != 0 ||
      (rv = grace_http_server_start(srv)) != 0)
    grace_log_fatal("serve %s: %s", argv[1], grace_strerror(rv));
  grace_log("listening on port %d", grace_http_server_port(srv, 0));

  reloader rl = {.tls = tls};
  atomic_init(&rl.stop, false);
  if ((rv = pthread_create(&rl.thread, NULL, reload_main, &rl)) != 0)
    grace_log_fatal("reload thread: %s", strerror(rv));

  grace_ctx_wait(stop, -1); /* the first SIGINT or SIGTERM */
  grace_log("Shutdown Server...");
  grace_ctx *deadline;
  rv = grace_ctx_with_timeout(grace_ctx_background(), 10 * GRACE_SECOND,
                              &deadline);
  if (rv != 0)
    grace_log_fatal("Shutdown: %s", grace_strerror(rv));
  /* Handshakes in progress are closed at once; established connections
   * drain as over plaintext and end with close_notify. */
  rv = grace_http_server_shutdown(srv, deadline);
  if (rv == 0) {
    grace_log("HTTPS server graceful shutdown completed");
  } else {
    grace_log("HTTPS server Shutdown: %s", grace_strerror(rv));
    grace_log("%d request(s) cut", grace_http_server_close(srv));
  }
  grace_ctx_unref(deadline);

  /* The reloader ends at its next SIGHUP, which is this one. */
  atomic_store(&rl.stop, true);
  pthread_kill(rl.thread, SIGHUP);
  pthread_join(rl.thread, NULL);
  grace_http_server_free(srv);
  grace_tls_free(tls); /* the server held its own reference until freed */
  return rv == 0 ? 0 : 1;
}
