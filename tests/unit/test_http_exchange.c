/*
 * The exchange model of grace/http.h ("Exchanges that stream") on
 * HTTP/1.1: a real server on 127.0.0.1 running the handlers of
 * tests/programs/exchange_handlers.h (the ones the HTTP/2 integration test
 * drives too), and raw client sockets that check every byte of framing.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "grace/http.h"

#include "../programs/exchange_handlers.h"

/* ---- client helpers ------------------------------------------------------ */

/* Connects to 127.0.0.1:|port|; a |rcvbuf| > 0 caps the client's receive
 * buffer first, so a client that does not read stops the server soon. */
static int dial_buf(int port, int rcvbuf) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_in sa;
  assert_true(fd >= 0);
  if (rcvbuf > 0)
    assert_int_equal(
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf)), 0);
  memset(&sa, 0, sizeof(sa));
  sa.sin_family = AF_INET;
  sa.sin_port = htons((uint16_t)port);
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
  return fd;
}

static int dial(int port) { return dial_buf(port, 0); }

static void send_all(int fd, const void *p, size_t len) {
  size_t off = 0;
  while (off < len) {
    ssize_t n = send(fd, (const char *)p + off, len - off, MSG_NOSIGNAL);
    assert_true(n > 0);
    off += (size_t)n;
  }
}

static void send_str(int fd, const char *s) { send_all(fd, s, strlen(s)); }

/* A buffered reader over a client socket. */
typedef struct rd {
  int fd;
  size_t off, len;
  char buf[65536];
} rd;

/* Reads more; returns 0 on EOF, error or |ms| without data. */
static int rd_fill(rd *r, int ms) {
  if (r->off > 0) {
    memmove(r->buf, r->buf + r->off, r->len - r->off);
    r->len -= r->off;
    r->off = 0;
  }
  if (r->len == sizeof(r->buf))
    return 0;
  struct pollfd p = {.fd = r->fd, .events = POLLIN};
  if (poll(&p, 1, ms) <= 0)
    return 0;
  ssize_t n = recv(r->fd, r->buf + r->len, sizeof(r->buf) - r->len, 0);
  if (n <= 0)
    return 0;
  r->len += (size_t)n;
  return 1;
}

/* One CRLF-terminated line, without the CRLF; -1 if none came. */
static int rd_line(rd *r, char *out, size_t cap) {
  for (;;) {
    char *crlf = memmem(r->buf + r->off, r->len - r->off, "\r\n", 2);
    if (crlf != NULL) {
      size_t n = (size_t)(crlf - (r->buf + r->off));
      if (n >= cap)
        return -1;
      memcpy(out, r->buf + r->off, n);
      out[n] = '\0';
      r->off += n + 2;
      return (int)n;
    }
    if (!rd_fill(r, 5000))
      return -1;
  }
}

/* Exactly |n| bytes into |out|; 0 or -1. */
static int rd_bytes(rd *r, void *out, size_t n) {
  size_t got = 0;
  while (got < n) {
    if (r->off == r->len && !rd_fill(r, 5000))
      return -1;
    size_t take = r->len - r->off;
    if (take > n - got)
      take = n - got;
    memcpy((char *)out + got, r->buf + r->off, take);
    r->off += take;
    got += take;
  }
  return 0;
}

/* A response head: its status, and the field lines "Name: value\n". */
typedef struct head {
  int status;
  char fields[8192];
} head;

static int read_head(rd *r, head *h) {
  char line[4096];
  size_t at = 0;
  if (rd_line(r, line, sizeof(line)) < 0 ||
      sscanf(line, "HTTP/1.1 %d ", &h->status) != 1)
    return -1;
  h->fields[0] = '\0';
  for (;;) {
    int n = rd_line(r, line, sizeof(line));
    if (n < 0)
      return -1;
    if (n == 0)
      return 0;
    at +=
        (size_t)snprintf(h->fields + at, sizeof(h->fields) - at, "%s\n", line);
  }
}

/* How many fields named |name| the head has; the last value in |value|. */
static int field_count(const head *h, const char *name, char *value,
                       size_t cap) {
  int count = 0;
  size_t nl = strlen(name);
  for (const char *p = h->fields; *p;) {
    const char *eol = strchr(p, '\n');
    if (strncasecmp(p, name, nl) == 0 && p[nl] == ':') {
      count++;
      if (value != NULL) {
        const char *v = p + nl + 2;
        size_t vl = (size_t)(eol - v);
        if (vl >= cap)
          vl = cap - 1;
        memcpy(value, v, vl);
        value[vl] = '\0';
      }
    }
    p = eol + 1;
  }
  return count;
}

/* Reads a chunked body, checking byte i is exch_pat(i) unless |copy| is
 * given (then the body goes there, up to |cap|).  The trailer lines go to
 * |trailers|.  Returns the body length, or -1 for broken framing or a
 * byte out of order.  |received| (may be NULL) is updated as bytes come. */
static long read_chunked(rd *r, char *copy, size_t cap, char *trailers,
                         size_t tcap, _Atomic long *received) {
  char line[256];
  long total = 0;
  static unsigned char chunk[1 << 17];
  for (;;) {
    if (rd_line(r, line, sizeof(line)) <= 0)
      return -1;
    char *end;
    unsigned long size = strtoul(line, &end, 16);
    if (end == line || *end != '\0' || size > sizeof(chunk))
      return -1;
    if (size == 0)
      break;
    if (rd_bytes(r, chunk, size) != 0)
      return -1;
    for (size_t i = 0; i < size; i++) {
      if (copy != NULL) {
        if ((size_t)total + i < cap)
          copy[total + (long)i] = (char)chunk[i];
      } else if (chunk[i] != exch_pat((uint64_t)total + i)) {
        fprintf(stderr, "byte %ld out of order\n", total + (long)i);
        return -1;
      }
    }
    total += (long)size;
    if (received != NULL)
      atomic_store(received, total);
    if (rd_bytes(r, line, 2) != 0 || memcmp(line, "\r\n", 2) != 0)
      return -1;
  }
  size_t at = 0;
  if (trailers != NULL)
    trailers[0] = '\0';
  for (;;) {
    int n = rd_line(r, line, sizeof(line));
    if (n < 0)
      return -1;
    if (n == 0)
      break;
    if (trailers != NULL)
      at += (size_t)snprintf(trailers + at, tcap - at, "%s\n", line);
  }
  return total;
}

static void reset_stats(void) {
  atomic_store(&exch_stats.accepted, 0);
  atomic_store(&exch_stats.eagains, 0);
  atomic_store(&exch_stats.ww_done, 0);
  atomic_store(&exch_stats.ww_result, 0);
  atomic_store(&exch_stats.ww_accepted, 0);
  atomic_store(&exch_stats.seen, 0);
  atomic_store(&exch_stats.paused, 0);
  atomic_store(&exch_stats.release, 0);
  atomic_store(&exch_stats.ends, 0);
}

/* The send buffer of the server's sockets: fixed (which turns the kernel's
 * autotuning off, up to 4 MiB on loopback), so that what a client that
 * does not read leaves in the kernel is known and small, and a handler
 * meets GRACE_EBUSY after a known number of bytes. */
#define SERVER_SNDBUF 65536

static int server_sndbuf;

/* A listening socket whose accepted sockets inherit SERVER_SNDBUF. */
static int listen_small(void) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int one = 1, snd = SERVER_SNDBUF;
  struct sockaddr_in sa;
  socklen_t len = sizeof(server_sndbuf);
  assert_true(fd >= 0);
  assert_int_equal(setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)),
                   0);
  assert_int_equal(setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &snd, sizeof(snd)), 0);
  assert_int_equal(getsockopt(fd, SOL_SOCKET, SO_SNDBUF, &server_sndbuf, &len),
                   0);
  memset(&sa, 0, sizeof(sa));
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
  assert_int_equal(listen(fd, 64), 0);
  return fd;
}

static grace_http_server *start_server(void) {
  grace_http_options opts;
  grace_http_server *srv;
  grace_http_options_init(&opts);
  opts.loops = 2;
  opts.max_body_bytes = 16u << 20;
  assert_int_equal(grace_http_server_new(&opts, &srv), 0);
  assert_int_equal(exch_routes(srv), 0);
  assert_int_equal(grace_http_server_listen_fd(srv, listen_small()), 0);
  assert_int_equal(grace_http_server_start(srv), 0);
  reset_stats();
  return srv;
}

static int port_of(grace_http_server *srv) {
  return grace_http_server_port(srv, 0);
}

/* Waits until |v| has not changed for |quiet_ms| (at most 15 s). */
static unsigned long long settle(atomic_ullong *v, int quiet_ms) {
  unsigned long long last = atomic_load(v);
  int quiet = 0;
  for (int i = 0; i < 1500 && quiet < quiet_ms; i++) {
    usleep(10000);
    unsigned long long now = atomic_load(v);
    quiet = now == last ? quiet + 10 : 0;
    last = now;
  }
  return last;
}

/* What the kernel may hold between the handler and a client that does not
 * read: the server socket's send buffer and the client's receive buffer
 * (each as getsockopt reports it: doubled for bookkeeping). */
static unsigned long long kernel_buffers(int client_fd) {
  int rcv = 0;
  socklen_t len = sizeof(rcv);
  assert_int_equal(getsockopt(client_fd, SOL_SOCKET, SO_RCVBUF, &rcv, &len), 0);
  return (unsigned long long)server_sndbuf + (unsigned long long)rcv;
}

/* ---- (a) a streamed answer with trailers --------------------------------- */

static void test_streamed_answer_with_trailers(void **state) {
  (void)state;
  grace_http_server *srv = start_server();
  int fd = dial_buf(port_of(srv), 65536);
  rd *r = calloc(1, sizeof(*r));
  head h;
  char v[64], trailers[1024];
  r->fd = fd;
  send_str(fd, "GET /stream?n=4194304&piece=1024 HTTP/1.1\r\nHost: x\r\n\r\n");
  /* Not reading for a moment makes the handler meet GRACE_EBUSY. */
  settle(&exch_stats.accepted, 200);
  assert_int_equal(read_head(r, &h), 0);
  assert_int_equal(h.status, 200);
  assert_int_equal(field_count(&h, "Transfer-Encoding", v, sizeof(v)), 1);
  assert_string_equal(v, "chunked");
  assert_int_equal(field_count(&h, "Content-Length", NULL, 0), 0);
  assert_int_equal(field_count(&h, "Connection", NULL, 0), 0);
  assert_int_equal(read_chunked(r, NULL, 0, trailers, sizeof(trailers), NULL),
                   4194304);
  assert_string_equal(trailers, "X-Trailer-One: 1\nX-Trailer-Bytes: 4194304\n");
  assert_true(atomic_load(&exch_stats.eagains) > 0);
  assert_int_equal(atomic_load(&exch_stats.accepted), 4194304);
  /* The connection is still usable. */
  send_str(fd, "GET /status?code=200 HTTP/1.1\r\nHost: x\r\n\r\n");
  assert_int_equal(read_head(r, &h), 0);
  assert_int_equal(h.status, 200);
  assert_int_equal(rd_bytes(r, v, 5), 0);
  assert_memory_equal(v, "body!", 5);
  close(fd);
  free(r);
  grace_http_server_free(srv);
}

/* ---- (b) a client that does not read costs bounded memory ---------------- */

static void test_unread_client_bounded(void **state) {
  (void)state;
  const unsigned long long total = 64ull << 20;
  grace_http_server *srv = start_server();
  int fd = dial_buf(port_of(srv), 65536);
  rd *r = calloc(1, sizeof(*r));
  head h;
  char trailers[1024];
  r->fd = fd;
  send_str(fd,
           "GET /stream?n=67108864&piece=65536 HTTP/1.1\r\nHost: x\r\n\r\n");
  unsigned long long accepted = settle(&exch_stats.accepted, 300);
  /* The server may hold what it queued (GRACE__WRITE_HIGH plus one
   * piece), well under 1 MiB; the kernel holds the rest.  A server that
   * queues every write has taken all 64 MiB by now. */
  unsigned long long bound = (1u << 20) + kernel_buffers(fd);
  fprintf(stderr, "accepted %llu of %llu while unread (bound %llu)\n", accepted,
          total, bound);
  assert_true(atomic_load(&exch_stats.eagains) > 0);
  assert_true(accepted < bound);
  assert_true(accepted < total);
  /* Now the client reads everything; what the handler has accepted stays
   * within the bound of what the client has received. */
  assert_int_equal(read_head(r, &h), 0);
  assert_int_equal(h.status, 200);
  _Atomic long received = 0;
  /* Read in slices so the bound is checked as the stream goes. */
  char line[64];
  long got = 0;
  unsigned long long worst = 0;
  for (;;) {
    assert_true(rd_line(r, line, sizeof(line)) > 0);
    unsigned long size = strtoul(line, NULL, 16);
    if (size == 0)
      break;
    static unsigned char chunk[65536];
    assert_true(size <= sizeof(chunk));
    assert_int_equal(rd_bytes(r, chunk, size), 0);
    for (size_t i = 0; i < size; i++)
      if (chunk[i] != exch_pat((uint64_t)got + i))
        fail_msg("byte %ld out of order", got + (long)i);
    got += (long)size;
    atomic_store(&received, got);
    assert_int_equal(rd_bytes(r, line, 2), 0);
    unsigned long long acc = atomic_load(&exch_stats.accepted);
    if (acc > (unsigned long long)got && acc - (unsigned long long)got > worst)
      worst = acc - (unsigned long long)got;
  }
  fprintf(stderr, "worst accepted-received while reading: %llu\n", worst);
  assert_true(worst < bound);
  assert_int_equal(got, (long)total);
  assert_int_equal(rd_line(r, trailers, sizeof(trailers)),
                   (int)strlen("X-Trailer-One: 1"));
  close(fd);
  free(r);
  grace_http_server_free(srv);
}

/* ---- (c) write_wait from another thread ---------------------------------- */

static void test_write_wait_slow_client(void **state) {
  (void)state;
  grace_http_server *srv = start_server();
  int fd = dial_buf(port_of(srv), 32768);
  rd *r = calloc(1, sizeof(*r));
  head h;
  r->fd = fd;
  send_str(fd, "GET /ww?count=200&size=16384 HTTP/1.1\r\nHost: x\r\n\r\n");
  usleep(300000);
  assert_int_equal(read_head(r, &h), 0);
  assert_int_equal(h.status, 200);
  /* A slow reader: small reads with pauses. */
  char line[64];
  long got = 0;
  static unsigned char chunk[16384];
  for (;;) {
    assert_true(rd_line(r, line, sizeof(line)) > 0);
    unsigned long size = strtoul(line, NULL, 16);
    if (size == 0)
      break;
    assert_int_equal(size, 16384);
    assert_int_equal(rd_bytes(r, chunk, size), 0);
    for (size_t i = 0; i < size; i++)
      if (chunk[i] != exch_pat((uint64_t)got + i))
        fail_msg("byte %ld out of order", got + (long)i);
    got += (long)size;
    assert_int_equal(rd_bytes(r, line, 2), 0);
    usleep(500);
  }
  assert_int_equal(got, 200 * 16384);
  assert_int_equal(rd_line(r, line, sizeof(line)), 0);
  close(fd);
  free(r);
  grace_http_server_free(srv);
}

static void wait_ww_done(void) {
  for (int i = 0; i < 1500 && !atomic_load(&exch_stats.ww_done); i++)
    usleep(10000);
  assert_true(atomic_load(&exch_stats.ww_done));
}

static void test_write_wait_ctx_expires(void **state) {
  (void)state;
  grace_http_server *srv = start_server();
  int fd = dial_buf(port_of(srv), 32768);
  int64_t t0 = grace_now();
  send_str(fd, "GET /ww-until?ms=500 HTTP/1.1\r\nHost: x\r\n\r\n");
  wait_ww_done();
  assert_int_equal(atomic_load(&exch_stats.ww_result), GRACE_ETIMEDOUT);
  assert_true(grace_now() - t0 >= 450 * GRACE_MILLISECOND);
  assert_true(atomic_load(&exch_stats.ww_accepted) > 0);
  assert_true(atomic_load(&exch_stats.ww_accepted) <
              (1u << 20) + kernel_buffers(fd));
  close(fd);
  grace_http_server_free(srv);
}

static void test_write_wait_client_gone(void **state) {
  (void)state;
  grace_http_server *srv = start_server();
  int fd = dial_buf(port_of(srv), 32768);
  send_str(fd, "GET /ww-until?ms=0 HTTP/1.1\r\nHost: x\r\n\r\n");
  settle(&exch_stats.ww_accepted, 300);
  assert_true(atomic_load(&exch_stats.ww_accepted) > 0);
  assert_false(atomic_load(&exch_stats.ww_done)); /* it is waiting */
  close(fd); /* with unread bytes: a reset */
  wait_ww_done();
  assert_int_equal(atomic_load(&exch_stats.ww_result), GRACE_ECLOSED);
  grace_http_server_free(srv);
}

/* ---- (d) streamed request bodies ----------------------------------------- */

typedef struct sender {
  int fd;
  int chunked;
  size_t total;
} sender;

/* Sends the body of |s| (pattern bytes) in uneven pieces. */
static void *send_body(void *arg) {
  sender *s = arg;
  static unsigned char piece[9000];
  size_t off = 0;
  unsigned seed = 12345;
  while (off < s->total) {
    seed = seed * 1103515245u + 12345u;
    size_t n = 1 + (seed >> 8) % sizeof(piece);
    if (n > s->total - off)
      n = s->total - off;
    for (size_t i = 0; i < n; i++)
      piece[i] = exch_pat(off + i);
    if (s->chunked) {
      char size[32];
      snprintf(size, sizeof(size), "%zx\r\n", n);
      send_str(s->fd, size);
    }
    send_all(s->fd, piece, n);
    if (s->chunked)
      send_str(s->fd, "\r\n");
    off += n;
  }
  if (s->chunked)
    send_str(s->fd, "0\r\n\r\n");
  return NULL;
}

static void upload_echoed(int chunked) {
  const size_t total = 1u << 20;
  grace_http_server *srv = start_server();
  int fd = dial(port_of(srv));
  rd *r = calloc(1, sizeof(*r));
  head h;
  char trailers[256], req[256];
  pthread_t t;
  sender s = {.fd = fd, .chunked = chunked, .total = total};
  r->fd = fd;
  if (chunked)
    snprintf(req, sizeof(req),
             "POST /upload HTTP/1.1\r\nHost: x\r\n"
             "Transfer-Encoding: chunked\r\n\r\n");
  else
    snprintf(req, sizeof(req),
             "POST /upload HTTP/1.1\r\nHost: x\r\n"
             "Content-Length: %zu\r\n\r\n",
             total);
  send_str(fd, req);
  assert_int_equal(pthread_create(&t, NULL, send_body, &s), 0);
  assert_int_equal(read_head(r, &h), 0);
  assert_int_equal(h.status, 200);
  /* Started while the body was still arriving, read to its end: nothing
   * announces a close. */
  assert_int_equal(field_count(&h, "Connection", NULL, 0), 0);
  long got = read_chunked(r, NULL, 0, trailers, sizeof(trailers), NULL);
  pthread_join(t, NULL);
  assert_int_equal(got, (long)total);
  assert_string_equal(trailers, "X-Body-Bytes: 1048576\n");
  assert_int_equal(atomic_load(&exch_stats.ends), 1);
  /* The body was read to its end: the connection goes on. */
  send_str(fd, "GET /status?code=200 HTTP/1.1\r\nHost: x\r\n\r\n");
  assert_int_equal(read_head(r, &h), 0);
  assert_int_equal(h.status, 200);
  close(fd);
  free(r);
  grace_http_server_free(srv);
  assert_int_equal(atomic_load(&exch_stats.ends), 1);
}

static void test_upload_chunked_paused_and_resumed(void **state) {
  (void)state;
  upload_echoed(1);
}

static void test_upload_content_length_paused_and_resumed(void **state) {
  (void)state;
  upload_echoed(0);
}

/* During a shutdown, a streamed answer begun while its body arrives says
 * "Connection: close", and the connection closes after it. */
static void test_upload_answer_during_shutdown_closes(void **state) {
  (void)state;
  const size_t total = 256u << 10;
  grace_http_server *srv = start_server();
  int fd = dial(port_of(srv));
  rd *r = calloc(1, sizeof(*r));
  head h;
  char req[256], trailers[256];
  pthread_t t;
  sender s = {.fd = fd, .chunked = 0, .total = total};
  r->fd = fd;
  snprintf(req, sizeof(req),
           "POST /upload HTTP/1.1\r\nHost: x\r\n"
           "Content-Length: %zu\r\n\r\n",
           total);
  send_str(fd, req);
  usleep(100000); /* the handler has the request and reads */
  assert_int_equal(grace_http_server_shutdown_begin(srv, NULL, NULL), 0);
  assert_int_equal(pthread_create(&t, NULL, send_body, &s), 0);
  assert_int_equal(read_head(r, &h), 0);
  assert_int_equal(h.status, 200);
  char v[32];
  assert_int_equal(field_count(&h, "Connection", v, sizeof(v)), 1);
  assert_string_equal(v, "close");
  assert_int_equal(read_chunked(r, NULL, 0, trailers, sizeof(trailers), NULL),
                   (long)total);
  pthread_join(t, NULL);
  assert_int_equal(rd_fill(r, 2000), 0); /* closed */
  assert_int_equal(r->len - r->off, 0);
  assert_int_equal(grace_http_server_shutdown(srv, NULL), 0);
  close(fd);
  free(r);
  grace_http_server_free(srv);
}

static void test_paused_handler_pauses_client(void **state) {
  (void)state;
  const size_t total = 8u << 20;
  grace_http_server *srv = start_server();
  int fd = dial(port_of(srv));
  rd *r = calloc(1, sizeof(*r));
  char req[256], body[128];
  head h;
  r->fd = fd;
  snprintf(req, sizeof(req),
           "POST /upload-hold HTTP/1.1\r\nHost: x\r\n"
           "Content-Length: %zu\r\n\r\n",
           total);
  send_str(fd, req);
  /* Send without blocking until the server stops taking bytes. */
  unsigned char *data = malloc(total);
  for (size_t i = 0; i < total; i++)
    data[i] = exch_pat(i);
  size_t sent = 0;
  int quiet = 0;
  while (sent < total && quiet < 300) {
    ssize_t n =
        send(fd, data + sent, total - sent, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0) {
      sent += (size_t)n;
      quiet = 0;
    } else {
      assert_true(n < 0 && errno == EAGAIN);
      usleep(10000);
      quiet += 10;
    }
  }
  unsigned long long seen = atomic_load(&exch_stats.seen);
  fprintf(stderr, "paused: client sent %zu, handler saw %llu of %zu\n", sent,
          seen, total);
  assert_true(atomic_load(&exch_stats.paused));
  assert_true(sent < total);
  assert_true(seen < total);
  assert_true(seen <= sent);
  usleep(100000);
  assert_int_equal(atomic_load(&exch_stats.seen), seen); /* still paused */
  atomic_store(&exch_stats.release, 1);
  send_all(fd, data + sent, total - sent);
  assert_int_equal(read_head(r, &h), 0);
  assert_int_equal(h.status, 200);
  char v[32];
  assert_int_equal(field_count(&h, "Content-Length", v, sizeof(v)), 1);
  size_t blen = (size_t)atoi(v);
  assert_true(blen < sizeof(body));
  assert_int_equal(rd_bytes(r, body, blen), 0);
  body[blen] = '\0';
  assert_string_equal(body, "bytes=8388608 order=ok");
  assert_int_equal(atomic_load(&exch_stats.ends), 1);
  free(data);
  close(fd);
  free(r);
  grace_http_server_free(srv);
}

/* ---- (e) framing belongs to the library ---------------------------------- */

static void test_handler_framing_headers_ignored(void **state) {
  (void)state;
  grace_http_server *srv = start_server();
  int fd = dial(port_of(srv));
  rd *r = calloc(1, sizeof(*r));
  head h;
  char v[64], body[64];
  r->fd = fd;
  send_str(fd, "GET /framing?mode=respond HTTP/1.1\r\nHost: x\r\n\r\n");
  assert_int_equal(read_head(r, &h), 0);
  assert_int_equal(h.status, 200);
  assert_int_equal(field_count(&h, "Content-Length", v, sizeof(v)), 1);
  assert_string_equal(v, "5");
  assert_int_equal(field_count(&h, "Transfer-Encoding", NULL, 0), 0);
  assert_int_equal(field_count(&h, "Connection", NULL, 0), 0);
  assert_int_equal(field_count(&h, "X-Custom", v, sizeof(v)), 1);
  assert_string_equal(v, "yes");
  assert_int_equal(rd_bytes(r, body, 5), 0);
  assert_memory_equal(body, "hello", 5);
  /* Same connection: the streamed form. */
  send_str(fd, "GET /framing?mode=stream HTTP/1.1\r\nHost: x\r\n\r\n");
  assert_int_equal(read_head(r, &h), 0);
  assert_int_equal(h.status, 200);
  assert_int_equal(field_count(&h, "Transfer-Encoding", v, sizeof(v)), 1);
  assert_string_equal(v, "chunked");
  assert_int_equal(field_count(&h, "Content-Length", NULL, 0), 0);
  assert_int_equal(field_count(&h, "Connection", NULL, 0), 0);
  assert_int_equal(read_chunked(r, body, sizeof(body), NULL, 0, NULL), 5);
  assert_memory_equal(body, "hello", 5);
  /* And on HTTP/1.0 keep-alive is the library's too. */
  send_str(fd, "GET /framing?mode=respond HTTP/1.0\r\n"
               "Connection: keep-alive\r\n\r\n");
  assert_int_equal(read_head(r, &h), 0);
  assert_int_equal(field_count(&h, "Content-Length", v, sizeof(v)), 1);
  assert_string_equal(v, "5");
  assert_int_equal(field_count(&h, "Connection", v, sizeof(v)), 1);
  assert_string_equal(v, "keep-alive");
  assert_int_equal(rd_bytes(r, body, 5), 0);
  send_str(fd, "GET /status?code=200 HTTP/1.1\r\nHost: x\r\n\r\n");
  assert_int_equal(read_head(r, &h), 0);
  assert_int_equal(h.status, 200);
  close(fd);
  free(r);
  grace_http_server_free(srv);
}

/* ---- (f) status rules ------------------------------------------------------
 */

/* After an answer without a body, the next one on the connection must
 * start right where the head ended. */
static void expect_next_answer(int fd, rd *r) {
  head h;
  char body[8];
  send_str(fd, "GET /status?code=201 HTTP/1.1\r\nHost: x\r\n\r\n");
  assert_int_equal(read_head(r, &h), 0);
  assert_int_equal(h.status, 201);
  assert_int_equal(rd_bytes(r, body, 5), 0);
  assert_memory_equal(body, "body!", 5);
}

static void test_no_body_statuses(void **state) {
  (void)state;
  static const int codes[] = {204, 304};
  static const char *const modes[] = {"respond", "stream"};
  grace_http_server *srv = start_server();
  int fd = dial(port_of(srv));
  rd *r = calloc(1, sizeof(*r));
  head h;
  char req[128];
  r->fd = fd;
  for (size_t c = 0; c < 2; c++) {
    for (size_t m = 0; m < 2; m++) {
      snprintf(req, sizeof(req),
               "GET /status?code=%d&mode=%s HTTP/1.1\r\nHost: x\r\n\r\n",
               codes[c], modes[m]);
      send_str(fd, req);
      assert_int_equal(read_head(r, &h), 0);
      assert_int_equal(h.status, codes[c]);
      assert_int_equal(field_count(&h, "Content-Length", NULL, 0), 0);
      assert_int_equal(field_count(&h, "Transfer-Encoding", NULL, 0), 0);
      assert_int_equal(field_count(&h, "Connection", NULL, 0), 0);
      expect_next_answer(fd, r);
    }
  }
  close(fd);
  free(r);
  grace_http_server_free(srv);
}

static void test_bad_final_status_is_500(void **state) {
  (void)state;
  static const int codes[] = {101, 150, 700, 99};
  grace_http_server *srv = start_server();
  int fd = dial(port_of(srv));
  rd *r = calloc(1, sizeof(*r));
  head h;
  char req[128], body[16];
  r->fd = fd;
  for (size_t c = 0; c < sizeof(codes) / sizeof(codes[0]); c++) {
    snprintf(req, sizeof(req),
             "GET /status?code=%d&mode=respond HTTP/1.1\r\nHost: x\r\n\r\n",
             codes[c]);
    send_str(fd, req);
    assert_int_equal(read_head(r, &h), 0);
    assert_int_equal(h.status, 500);
    assert_int_equal(rd_bytes(r, body, 5), 0);
    snprintf(req, sizeof(req),
             "GET /status?code=%d&mode=stream HTTP/1.1\r\nHost: x\r\n\r\n",
             codes[c]);
    send_str(fd, req);
    assert_int_equal(read_head(r, &h), 0);
    assert_int_equal(h.status, 500);
    assert_int_equal(read_chunked(r, body, sizeof(body), NULL, 0, NULL), 5);
    expect_next_answer(fd, r);
  }
  close(fd);
  free(r);
  grace_http_server_free(srv);
}

static void test_head_of_streamed_answer(void **state) {
  (void)state;
  grace_http_server *srv = start_server();
  int fd = dial(port_of(srv));
  rd *r = calloc(1, sizeof(*r));
  head h;
  r->fd = fd;
  send_str(fd, "HEAD /stream?n=100000 HTTP/1.1\r\nHost: x\r\n\r\n");
  assert_int_equal(read_head(r, &h), 0);
  assert_int_equal(h.status, 200);
  assert_int_equal(field_count(&h, "Content-Length", NULL, 0), 0);
  expect_next_answer(fd, r);
  send_str(fd, "HEAD /status?code=200 HTTP/1.1\r\nHost: x\r\n\r\n");
  assert_int_equal(read_head(r, &h), 0);
  assert_int_equal(h.status, 200);
  expect_next_answer(fd, r);
  send_str(fd, "HEAD /status?code=200&mode=stream HTTP/1.1\r\nHost: x\r\n\r\n");
  assert_int_equal(read_head(r, &h), 0);
  assert_int_equal(h.status, 200);
  expect_next_answer(fd, r);
  /* Nothing stray followed. */
  assert_int_equal(rd_fill(r, 100), 0);
  assert_int_equal(r->len - r->off, 0);
  close(fd);
  free(r);
  grace_http_server_free(srv);
}

/* ---- (g) header iteration and peer ----------------------------------------
 */

static void test_header_next_and_peer(void **state) {
  (void)state;
  grace_http_server *srv = start_server();
  int fd = dial(port_of(srv));
  rd *r = calloc(1, sizeof(*r));
  head h;
  char v[32], body[1024], want[256];
  struct sockaddr_in me;
  socklen_t len = sizeof(me);
  r->fd = fd;
  assert_int_equal(getsockname(fd, (struct sockaddr *)&me, &len), 0);
  send_str(fd, "GET /headers HTTP/1.1\r\nHost: x\r\nX-Rep: one\r\n"
               "X-Other: o\r\nX-Rep: two\r\nx-rep: three\r\n\r\n");
  assert_int_equal(read_head(r, &h), 0);
  assert_int_equal(h.status, 200);
  assert_int_equal(field_count(&h, "Content-Length", v, sizeof(v)), 1);
  size_t blen = (size_t)atoi(v);
  assert_true(blen < sizeof(body));
  assert_int_equal(rd_bytes(r, body, blen), 0);
  body[blen] = '\0';
  snprintf(want, sizeof(want),
           "Host: x\nX-Rep: one\nX-Other: o\nX-Rep: two\nx-rep: three\n"
           "peer: 127.0.0.1 %d\n",
           ntohs(me.sin_port));
  assert_string_equal(body, want);
  close(fd);
  free(r);
  grace_http_server_free(srv);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_streamed_answer_with_trailers),
      cmocka_unit_test(test_unread_client_bounded),
      cmocka_unit_test(test_write_wait_slow_client),
      cmocka_unit_test(test_write_wait_ctx_expires),
      cmocka_unit_test(test_write_wait_client_gone),
      cmocka_unit_test(test_upload_chunked_paused_and_resumed),
      cmocka_unit_test(test_upload_content_length_paused_and_resumed),
      cmocka_unit_test(test_upload_answer_during_shutdown_closes),
      cmocka_unit_test(test_paused_handler_pauses_client),
      cmocka_unit_test(test_handler_framing_headers_ignored),
      cmocka_unit_test(test_no_body_statuses),
      cmocka_unit_test(test_bad_final_status_is_500),
      cmocka_unit_test(test_head_of_streamed_answer),
      cmocka_unit_test(test_header_next_and_peer),
  };
  return cmocka_run_group_tests_name("http_exchange", tests, NULL, NULL);
}
