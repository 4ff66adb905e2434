/*
 * libFuzzer target for the HTTP/1.1 server: each input is sent as the
 * bytes of one client connection to a real server on 127.0.0.1 (started
 * once), then the client half-closes and reads until the server closes.
 * ASan/UBSan catch memory errors in the parser glue, pipelining, limits and
 * error paths; libFuzzer's -timeout catches a connection the server never
 * closes.
 *
 *   cmake -B build-asan -DGRACE_SANITIZE=ON (with CC=clang) builds it;
 *   ./build-asan/tests/fuzz_http -max_total_time=300 NEW_DIR fuzz/corpus/http
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "grace/http.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int port;

static void echo(grace_http_request *req, void *data) {
  size_t len;
  const void *body = grace_http_request_body(req, &len);
  char q[64];
  (void)data;
  grace_http_request_query(req, "q", q, sizeof(q));
  grace_http_request_header(req, "Host");
  grace_http_respond(req, 200, body, len);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  grace_http_options opts;
  grace_http_server *srv;
  grace_http_options_init(&opts);
  opts.loops = 1;
  opts.max_header_bytes = 4096;
  opts.max_body_bytes = 4096;
  opts.read_header_timeout = 500 * GRACE_MILLISECOND;
  opts.idle_timeout = 500 * GRACE_MILLISECOND;
  if (grace_http_server_new(&opts, &srv) != 0 ||
      grace_http_server_handle(srv, "/", echo, NULL) != 0 ||
      grace_http_server_listen(srv, "127.0.0.1:0") != 0 ||
      grace_http_server_start(srv) != 0)
    abort();
  port = grace_http_server_port(srv, 0);
  /* The server lives for the whole fuzzing process. */
  return 0;
}

/* poll(2) on one descriptor, resumed after EINTR with the time left. */
static int wait_for(struct pollfd *p, int ms) {
  int64_t end = grace_now() / GRACE_MILLISECOND + ms;
  for (;;) {
    int rv = poll(p, 1, ms);
    if (rv >= 0 || errno != EINTR)
      return rv;
    ms = (int)(end - grace_now() / GRACE_MILLISECOND);
    if (ms <= 0)
      return 0;
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in sa;
  memset(&sa, 0, sizeof(sa));
  sa.sin_family = AF_INET;
  sa.sin_port = htons((uint16_t)port);
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  /* libFuzzer's SIGALRM (for -timeout) interrupts calls: retry them. */
  if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
    struct pollfd p = {.fd = fd, .events = POLLOUT};
    if (errno != EINTR || wait_for(&p, 2000) <= 0) {
      perror("fuzz_http: connect");
      abort();
    }
  }
  size_t off = 0;
  char buf[65536];
  while (off < size) {
    ssize_t n = send(fd, data + off, size - off, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0) {
      off += (size_t)n;
      continue;
    }
    /* The server may close early (an error response): stop sending. */
    if (n < 0 && errno == EINTR)
      continue;
    struct pollfd p = {.fd = fd, .events = POLLIN | POLLOUT};
    if (wait_for(&p, 1000) <= 0 || (p.revents & (POLLERR | POLLHUP)))
      break;
    if (p.revents & POLLIN && recv(fd, buf, sizeof(buf), 0) <= 0)
      break;
  }
  shutdown(fd, SHUT_WR);
  for (;;) {
    struct pollfd p = {.fd = fd, .events = POLLIN};
    if (wait_for(&p, 2000) <= 0) {
      /* The server neither answered nor closed. */
      fprintf(stderr, "fuzz_http: no close from the server\n");
      abort();
    }
    ssize_t n = recv(fd, buf, sizeof(buf), 0);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      break;
  }
  close(fd);
  return 0;
}
