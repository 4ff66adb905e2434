/*
 * Client sockets on 127.0.0.1 for the unit tests that drive a real server
 * (test_http, test_tcp, test_embed): dial, send, read until a marker,
 * and wait for the peer's close.  Header-only, included by one test file
 * each, after <cmocka.h>.
 */
#ifndef GRACE_TEST_LOOPBACK_H
#define GRACE_TEST_LOOPBACK_H

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* Connects to 127.0.0.1:|port|; returns the descriptor or -errno. */
static int dial(int port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_in sa;
  memset(&sa, 0, sizeof(sa));
  sa.sin_family = AF_INET;
  sa.sin_port = htons((uint16_t)port);
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
    int err = -errno;
    close(fd);
    return err;
  }
  return fd;
}

/* Sends all of |s|. */
static void send_str(int fd, const char *s) {
  size_t len = strlen(s), off = 0;
  while (off < len) {
    ssize_t n = send(fd, s + off, len - off, MSG_NOSIGNAL);
    assert_true(n > 0);
    off += (size_t)n;
  }
}

/* Reads until |want| (NULL: nothing) is in |buf| (or EOF, or |ms| pass
 * without a byte); |buf| stays a string.  Returns the bytes read. */
static size_t recv_until(int fd, char *buf, size_t cap, const char *want,
                         int ms) {
  size_t len = 0;
  buf[0] = '\0';
  while (len + 1 < cap) {
    struct pollfd p = {.fd = fd, .events = POLLIN};
    if (poll(&p, 1, ms) <= 0)
      break;
    ssize_t n = recv(fd, buf + len, cap - 1 - len, 0);
    if (n <= 0)
      break;
    len += (size_t)n;
    buf[len] = '\0';
    if (want != NULL && strstr(buf, want) != NULL)
      break;
  }
  return len;
}

/* True if the peer closed (EOF or reset) within |ms|; what it sent before
 * is read and dropped. */
static int peer_closed(int fd, int ms) {
  char b[4096];
  for (;;) {
    struct pollfd p = {.fd = fd, .events = POLLIN};
    if (poll(&p, 1, ms) <= 0)
      return 0;
    ssize_t n = recv(fd, b, sizeof(b), 0);
    if (n == 0)
      return 1;
    if (n < 0)
      return errno == ECONNRESET;
  }
}

#endif /* GRACE_TEST_LOOPBACK_H */
