/*
 * Listening sockets and the acceptor.  See listener.h.
 */
#include "net/listener.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "grace/error.h"

#define ACCEPTS_PER_WAKE 64
#define BACKOFF_FIRST_MS 5
#define BACKOFF_MAX_MS 1000

/* Splits "host:port" like Go's net.SplitHostPort into |host| and |port|. */
static int split_host_port(const char *addr, char *host, size_t hostlen,
                           char *port, size_t portlen) {
  const char *colon = strrchr(addr, ':');
  const char *h = addr, *hend;
  if (colon == NULL)
    return GRACE_EINVAL; /* missing port in address */
  if (addr[0] == '[') {
    const char *close = strchr(addr, ']');
    if (close == NULL || close + 1 != colon)
      return GRACE_EINVAL;
    h = addr + 1;
    hend = close;
  } else {
    hend = colon;
    if (memchr(addr, ':', (size_t)(colon - addr)) != NULL)
      return GRACE_EINVAL; /* too many colons */
  }
  size_t hl = (size_t)(hend - h), pl = strlen(colon + 1);
  if (hl >= hostlen || pl == 0 || pl >= portlen)
    return GRACE_EINVAL;
  memcpy(host, h, hl);
  host[hl] = '\0';
  memcpy(port, colon + 1, pl + 1);
  for (const char *p = port; *p; p++)
    if (*p < '0' || *p > '9')
      return GRACE_EINVAL;
  if (atol(port) > 65535)
    return GRACE_EINVAL;
  return 0;
}

static int bind_one(const struct addrinfo *ai, int backlog, int *out) {
  int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
                  ai->ai_protocol);
  if (fd < 0)
    return -errno;
  int one = 1, zero = 0;
  (void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  /* An empty host means every address, IPv4 included, as in Go. */
  if (ai->ai_family == AF_INET6)
    (void)setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof(zero));
  if (bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 || listen(fd, backlog) != 0) {
    int err = -errno;
    close(fd);
    return err;
  }
  *out = fd;
  return 0;
}

int grace__listen(const char *addr, int backlog, int *fd) {
  char host[256], port[16];
  struct addrinfo hints, *res = NULL;
  int rv;

  if (addr == NULL || fd == NULL)
    return GRACE_EINVAL;
  rv = split_host_port(addr, host, sizeof(host), port, sizeof(port));
  if (rv != 0)
    return rv;
  memset(&hints, 0, sizeof(hints));
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  if (host[0] == '\0') {
    /* "[::]" accepts IPv4 too (V6ONLY off); fall back to 0.0.0.0 on a
     * machine without IPv6. */
    hints.ai_family = AF_INET6;
    if (getaddrinfo("::", port, &hints, &res) == 0) {
      rv = bind_one(res, backlog, fd);
      freeaddrinfo(res);
      if (rv != GRACE_EINVAL && rv != -EAFNOSUPPORT &&
          rv != -EADDRNOTAVAIL)
        return rv;
    }
    hints.ai_family = AF_INET;
    if (getaddrinfo("0.0.0.0", port, &hints, &res) != 0)
      return GRACE_EINVAL;
  } else {
    hints.ai_family = AF_UNSPEC;
    if (getaddrinfo(host, port, &hints, &res) != 0)
      return GRACE_EINVAL;
  }
  rv = GRACE_EINVAL;
  for (struct addrinfo *ai = res; ai != NULL; ai = ai->ai_next) {
    rv = bind_one(ai, backlog, fd);
    if (rv == 0)
      break;
  }
  freeaddrinfo(res);
  return rv;
}

int grace__socket_port(int fd) {
  struct sockaddr_storage ss;
  socklen_t len = sizeof(ss);
  if (getsockname(fd, (struct sockaddr *)&ss, &len) != 0)
    return -errno;
  if (ss.ss_family == AF_INET)
    return ntohs(((struct sockaddr_in *)&ss)->sin_port);
  if (ss.ss_family == AF_INET6)
    return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
  return GRACE_EINVAL;
}

int grace__adopt_listen_fd(int fd) {
  int type = 0, acc = 0;
  socklen_t len = sizeof(type);
  if (fd < 0 || getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) != 0 ||
      type != SOCK_STREAM)
    return GRACE_EINVAL;
  len = sizeof(acc);
  if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &acc, &len) != 0 || !acc)
    return GRACE_EINVAL;
  int fl = fcntl(fd, F_GETFL);
  if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) != 0 ||
      fcntl(fd, F_SETFD, FD_CLOEXEC) != 0)
    return -errno;
  return 0;
}

static void on_readable(uv_poll_t *handle, int status, int events);

static void on_backoff(uv_timer_t *timer) {
  grace__listener *l = timer->data;
  if (l->fd >= 0)
    uv_poll_start(&l->poll, UV_READABLE, on_readable);
}

/* Accepts up to |max| queued connections.  Returns 1 if the queue may
 * hold more, 0 if it is empty, -1 if accept had to back off. */
static int accept_some(grace__listener *l, int max) {
  for (int i = 0; i < max; i++) {
    int cfd = accept4(l->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (cfd < 0) {
      switch (errno) {
      case EAGAIN:
        return 0;
      case EINTR:
      case ECONNABORTED:
      case EPROTO:
      case EPERM:
        continue;
      case EMFILE:
      case ENFILE:
      case ENOBUFS:
      case ENOMEM:
        /* Out of descriptors: stop polling (the listener would stay
         * readable and spin the loop) and retry later, doubling. */
        l->backoff_ms = l->backoff_ms == 0 ? BACKOFF_FIRST_MS
                                           : l->backoff_ms * 2;
        if (l->backoff_ms > BACKOFF_MAX_MS)
          l->backoff_ms = BACKOFF_MAX_MS;
        atomic_fetch_add(&l->backoffs, 1);
        uv_poll_stop(&l->poll);
        uv_timer_start(&l->backoff, on_backoff, l->backoff_ms, 0);
        return -1;
      default:
        return 0;
      }
    }
    l->backoff_ms = 0;
    int one = 1;
    (void)setsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    l->on_accept(l, cfd);
  }
  return 1;
}

static void on_readable(uv_poll_t *handle, int status, int events) {
  (void)status;
  (void)events;
  accept_some(handle->data, ACCEPTS_PER_WAKE);
}

int grace__listener_start(grace__listener *l, grace__loop *loop, int fd,
                          grace__accept_cb on_accept, void *data) {
  int rv;
  l->loop = loop;
  l->on_accept = on_accept;
  l->data = data;
  l->backoff_ms = 0;
  rv = uv_poll_init_socket(loop->uv, &l->poll, fd);
  if (rv != 0)
    return rv;
  l->poll.data = l;
  uv_timer_init(loop->uv, &l->backoff);
  l->backoff.data = l;
  l->fd = fd;
  l->open = 1;
  return uv_poll_start(&l->poll, UV_READABLE, on_readable);
}

void grace__listener_close(grace__listener *l, int drain) {
  if (!l->open)
    return;
  if (drain) {
    /* Connections the kernel completed before the close would be reset by
     * it; accept them so they are served (or closed cleanly) instead. */
    while (accept_some(l, 1024) > 0) {
    }
  }
  uv_poll_stop(&l->poll);
  uv_close((uv_handle_t *)&l->poll, NULL);
  uv_close((uv_handle_t *)&l->backoff, NULL);
  close(l->fd);
  l->fd = -1;
  l->open = 0;
}
