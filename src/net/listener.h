/*
 * Listening sockets: Go-style address parsing, bind and listen, and an
 * acceptor on one loop that backs off on EMFILE/ENFILE (5 ms doubling to
 * 1 s, as grpc-go) instead of spinning, and that can drain its accept queue
 * before closing so that no connection the kernel already completed is
 * reset by the close.
 */
#ifndef GRACE_NET_LISTENER_H
#define GRACE_NET_LISTENER_H

#include <stdatomic.h>
#include <stdint.h>

#include <uv.h>

#include "net/loop.h"

typedef struct grace__listener grace__listener;

/* Called on the listener's loop thread for each accepted socket; the
 * callee owns |fd| (non-blocking, close-on-exec). */
typedef void (*grace__accept_cb)(grace__listener *l, int fd);

struct grace__listener {
  uv_poll_t poll;
  uv_timer_t backoff;
  grace__loop *loop;
  grace__accept_cb on_accept;
  void *data;
  int fd;
  unsigned backoff_ms; /* current back-off delay, 0 when not backing off */
  atomic_uint_fast64_t backoffs; /* times accept backed off; any thread */
  int open;            /* poll and timer handles are initialised */
};

/*
 * Parses |addr| ("host:port", ":port", "[v6]:port", "localhost:port"),
 * creates a socket, binds and listens with |backlog|.  Stores the fd in
 * |*fd|.  Returns 0, GRACE_EINVAL for a malformed address (with no port,
 * a bad port, an unknown host), or a negative errno.
 */
int grace__listen(const char *addr, int backlog, int *fd);

/* Returns the local port of listening socket |fd|, or a negative errno. */
int grace__socket_port(int fd);

/* Checks that |fd| is a listening stream socket and makes it non-blocking
 * and close-on-exec.  Returns 0 or GRACE_EINVAL. */
int grace__adopt_listen_fd(int fd);

/* Starts accepting on |fd| on |loop| (call on the loop thread).  The
 * listener owns |fd| from then on. */
int grace__listener_start(grace__listener *l, grace__loop *loop, int fd,
                          grace__accept_cb on_accept, void *data);

/* Accepts what is already queued (handing each socket to on_accept), then
 * closes the socket and the handles.  On the loop thread; idempotent.
 * |l| must stay allocated until the loop has run once more (uv_close). */
void grace__listener_close(grace__listener *l, int drain);

#endif /* GRACE_NET_LISTENER_H */
