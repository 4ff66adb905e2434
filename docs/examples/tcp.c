/*
 * The TCP guide's program (docs/guide/tcp.md): a line protocol of its own
 * on grace_tcp_server.  "PING\n" answers "+PONG\r\n"; "SLOW\n" answers
 * "+DONE\r\n" 200 ms later, the connection busy meanwhile (a graceful
 * shutdown waits for it); anything else answers "-ERR unknown command".
 *
 *   tcp [addr]        addr defaults to ":6380"; port 0 picks a free one
 *   printf 'PING\n' | nc -q1 localhost 6380          -> +PONG
 *
 * The first SIGINT or SIGTERM drains within 10 s and exits 0.
 */
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "grace/context.h"
#include "grace/duration.h"
#include "grace/error.h"
#include "grace/log.h"
#include "grace/signal.h"
#include "grace/tcp.h"

/* A SLOW command in progress: its timer on the connection's loop. */
typedef struct slow {
  uv_timer_t timer;
  grace_tcp_conn *conn;
} slow;

static void slow_closed(uv_handle_t *h) { free(h->data); }

static void slow_done(uv_timer_t *t) {
  slow *s = t->data;
  grace_tcp_conn_write(s->conn, "+DONE\r\n", 7);
  grace_tcp_conn_set_data(s->conn, NULL);
  grace_tcp_conn_set_busy(s->conn, false); /* idle: a drain may close it */
  uv_close((uv_handle_t *)t, slow_closed);
}

/* Takes every complete line in |p|; leaves a partial one for later. */
static size_t on_data(grace_tcp_conn *conn, const char *p, size_t n,
                      void *data) {
  (void)data;
  const char *nl = memchr(p, '\n', n);
  if (nl == NULL)
    return 0; /* wait for the rest of the line */
  if (grace_tcp_conn_is_busy(conn))
    return 0; /* one command at a time: the rest waits until idle */
  size_t len = (size_t)(nl - p);
  if (len > 0 && p[len - 1] == '\r')
    len--;
  if (len == 4 && memcmp(p, "PING", 4) == 0) {
    grace_tcp_conn_write(conn, "+PONG\r\n", 7);
  } else if (len == 4 && memcmp(p, "SLOW", 4) == 0) {
    slow *s = malloc(sizeof(*s));
    if (s == NULL) {
      grace_tcp_conn_close(conn);
      return n;
    }
    s->conn = conn;
    uv_timer_init(grace_tcp_conn_loop(conn), &s->timer);
    s->timer.data = s;
    uv_timer_start(&s->timer, slow_done, 200, 0);
    grace_tcp_conn_set_data(conn, s);
    grace_tcp_conn_set_busy(conn, true); /* a shutdown waits for it */
  } else {
    grace_tcp_conn_write(conn, "-ERR unknown command\r\n", 22);
  }
  return (size_t)(nl - p) + 1; /* one line taken */
}

/* Closed, for whatever reason (the peer, a timeout, a force): a SLOW
 * still in progress stops its timer, which must outlive neither. */
static void on_close(grace_tcp_conn *conn, void *data) {
  (void)data;
  slow *s = grace_tcp_conn_data(conn);
  if (s != NULL)
    uv_close((uv_handle_t *)&s->timer, slow_closed);
}

int main(int argc, char **argv) {
  const char *addr = argc > 1 ? argv[1] : ":6380";
  grace_ctx *stop = grace_signal_context();

  grace_tcp_callbacks cb = {.on_data = on_data, .on_close = on_close};
  grace_tcp_server *srv;
  int rv = grace_tcp_server_new(NULL, &cb, NULL, &srv);
  if (rv != 0)
    grace_log_fatal("TCP server: %s", grace_strerror(rv));
  if ((rv = grace_tcp_server_listen(srv, addr)) != 0 ||
      (rv = grace_tcp_server_start(srv)) != 0)
    grace_log_fatal("serve %s: %s", addr, grace_strerror(rv));
  grace_log("listening on port %d", grace_tcp_server_port(srv, 0));

  grace_ctx_wait(stop, -1);
  grace_log("Shutdown Server...");
  grace_ctx *deadline;
  rv = grace_ctx_with_timeout(grace_ctx_background(), 10 * GRACE_SECOND,
                              &deadline);
  if (rv != 0)
    grace_log_fatal("Shutdown: %s", grace_strerror(rv));
  rv = grace_tcp_server_shutdown(srv, deadline);
  if (rv == 0)
    grace_log("TCP server graceful shutdown completed");
  else
    grace_log("TCP server Shutdown: %s; %d busy connection(s) cut",
              grace_strerror(rv), grace_tcp_server_close(srv));
  grace_ctx_unref(deadline);
  grace_tcp_server_free(srv);
  return rv == 0 ? 0 : 1;
}
