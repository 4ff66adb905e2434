/*
 * Unit tests for src/grpc/client.c and client_conn.c: the gRPC client
 * channel against an in-process fake gRPC server built on nghttp2's server
 * session, on a real loopback socket, in a thread of its own.
 *
 * The fake server is scripted by the calls themselves: the request message
 * of a call to /test.Fake/Call is a command ("ok:hi", "status:5:text",
 * "hold", "goaway", ...; see fake_dispatch) saying how to answer, so each
 * test reads as the exchange it checks.  Replies of "ok" carry "@<n>", the
 * number of the connection that served them, which is how the tests see
 * which connection a call went to.  /Greeter/SayHello speaks the seed's
 * protobuf messages.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <nghttp2/nghttp2.h>
#include <protobuf-c/protobuf-c.h>

#include "grace/grpc_client.h"
#include "grpc/wire.h"
#include "helloworld.pb-c.h"

#define CALL "/test.Fake/Call"
#define MAX_CONNS 32

/* ---- The fake server ---------------------------------------------------- */

typedef struct fstream fstream;
typedef struct fconn fconn;
typedef struct fserver fserver;

struct fstream {
  fstream *next;
  fconn *fc;
  int32_t id;
  char path[128], method[16], scheme[16], authority[128], ct[64], te[32];
  char ua[64], timeout[32];
  uint8_t body[8192]; /* the first bytes of the request body */
  size_t body_len;
  size_t body_total; /* all of it */
  int held;
  size_t unconsumed; /* DATA not yet consumed (manual_window) */
  /* The response body and what follows it. */
  uint8_t *out;
  size_t out_len, out_off;
  int trailers; /* send trailers after |out|, else END_STREAM on DATA */
  nghttp2_nv tnv[2];
  size_t ntnv;
  char tname[2][32], tvalue[2][512];
};

struct fconn {
  int fd;
  int index; /* 1 for the first connection accepted */
  nghttp2_session *s;
  fserver *srv;
  fstream *streams;
  int close_now;
  int linger; /* stay open until the client closes */
};

/* What the tests read, under |lock|. */
typedef struct fstats {
  int conns;
  int requests;
  int held;
  int rst[16]; /* RST_STREAM received, by error code */
  int refuse_once_seen;
  int peer_closed; /* connections the client closed */
  /* The last request's headers and body. */
  char path[128], method[16], scheme[16], authority[128], ct[64], te[32];
  char ua[64], timeout[32];
  uint8_t body[8192];
  size_t body_len;
  size_t body_sent; /* response body bytes handed to nghttp2, all streams */
  size_t data_recv; /* request DATA bytes received, all streams */
} fstats;

struct fserver {
  int lfd, port, stop_fd;
  pthread_t thread;
  pthread_mutex_t lock;
  fstats st;
  int release;          /* answer every held call */
  int goaway_on_accept; /* GOAWAY(0) right after SETTINGS */
  int manual_window;    /* reopen no window until |release| */
  fconn *conns[MAX_CONNS];
  int nconns;
};

static uint8_t *nvp(const char *s) { return (uint8_t *)(uintptr_t)s; }

static nghttp2_nv mknv(const char *name, const char *value) {
  nghttp2_nv nv;

  nv.name = nvp(name);
  nv.namelen = strlen(name);
  nv.value = nvp(value);
  nv.valuelen = strlen(value);
  nv.flags = NGHTTP2_NV_FLAG_NONE;
  return nv;
}

static ssize_t fs_read(nghttp2_session *s, int32_t id, uint8_t *buf, size_t len,
                       uint32_t *flags, nghttp2_data_source *src, void *ud) {
  fstream *st = src->ptr;
  size_t n = st->out_len - st->out_off;

  (void)ud;
  if (n > len)
    n = len;
  if (n > 0)
    memcpy(buf, st->out + st->out_off, n);
  st->out_off += n;
  pthread_mutex_lock(&st->fc->srv->lock);
  st->fc->srv->st.body_sent += n;
  pthread_mutex_unlock(&st->fc->srv->lock);
  if (st->out_off == st->out_len) {
    *flags |= NGHTTP2_DATA_FLAG_EOF;
    if (st->trailers) {
      *flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
      assert_int_equal(nghttp2_submit_trailer(s, id, st->tnv, st->ntnv), 0);
    }
  }
  return (ssize_t)n;
}

static void add_trailer(fstream *st, const char *name, const char *value) {
  size_t i = st->ntnv++;

  snprintf(st->tname[i], sizeof(st->tname[i]), "%s", name);
  snprintf(st->tvalue[i], sizeof(st->tvalue[i]), "%s", value);
  st->tnv[i] = mknv(st->tname[i], st->tvalue[i]);
}

/* Answers with :status |http|, content-type |ct| (NULL: none, and
 * grpc-encoding |enc| if not NULL), the body |data| (sent as it is: the
 * caller frames it) and, if |gstatus| is not NULL, trailers grpc-status
 * |gstatus| and the percent-encoded |gmsg|; otherwise the DATA ends the
 * stream. */
static void respond(fstream *st, const char *http, const char *ct,
                    const char *enc, const void *data, size_t len,
                    const char *gstatus, const char *gmsg) {
  nghttp2_data_provider prd;
  nghttp2_nv nva[3];
  size_t n = 0;

  if (http != NULL)
    nva[n++] = mknv(":status", http);
  if (ct != NULL)
    nva[n++] = mknv("content-type", ct);
  if (enc != NULL)
    nva[n++] = mknv("grpc-encoding", enc);
  st->out = malloc(len > 0 ? len : 1);
  assert_non_null(st->out);
  if (len > 0)
    memcpy(st->out, data, len);
  st->out_len = len;
  st->out_off = 0;
  st->ntnv = 0;
  st->trailers = gstatus != NULL;
  if (gstatus != NULL) {
    add_trailer(st, "grpc-status", gstatus);
    if (gmsg != NULL) {
      char enc_msg[512];
      size_t m = grace__grpc_message_encode(enc_msg, sizeof(enc_msg) - 1, gmsg,
                                            strlen(gmsg));

      enc_msg[m] = '\0';
      add_trailer(st, "grpc-message", enc_msg);
    }
  }
  memset(&prd, 0, sizeof(prd));
  prd.source.ptr = st;
  prd.read_callback = fs_read;
  assert_int_equal(nghttp2_submit_response(st->fc->s, st->id, nva, n, &prd), 0);
}

/* A gRPC reply carrying one message, |text|, and OK. */
static void respond_msg(fstream *st, const void *msg, size_t len) {
  uint8_t *framed = malloc(len + 5);

  assert_non_null(framed);
  grace__grpc_prefix_encode(framed, 0, len);
  memcpy(framed + 5, msg, len);
  respond(st, "200", "application/grpc", NULL, framed, len + 5, "0", NULL);
  free(framed);
}

static void respond_ok(fstream *st, const char *text) {
  char reply[600];

  snprintf(reply, sizeof(reply), "%s@%d", text, st->fc->index);
  respond_msg(st, reply, strlen(reply));
}

/* Trailers-only: one HEADERS with END_STREAM. */
static void respond_trailers_only(fstream *st, const char *gstatus,
                                  const char *gmsg) {
  char enc_msg[512];
  nghttp2_nv nva[4];
  size_t n = 0, m;

  nva[n++] = mknv(":status", "200");
  nva[n++] = mknv("content-type", "application/grpc");
  if (gstatus != NULL)
    nva[n++] = mknv("grpc-status", gstatus);
  if (gmsg != NULL) {
    m = grace__grpc_message_encode(enc_msg, sizeof(enc_msg) - 1, gmsg,
                                   strlen(gmsg));
    enc_msg[m] = '\0';
    nva[n++] = mknv("grpc-message", enc_msg);
  }
  assert_int_equal(nghttp2_submit_response(st->fc->s, st->id, nva, n, NULL), 0);
}

static void fake_say_hello(fstream *st) {
  HelloRequest *req;
  HelloReply reply;
  char text[256];
  uint8_t buf[300];
  size_t len;

  req = hello_request__unpack(NULL, st->body_len - 5, st->body + 5);
  assert_non_null(req);
  snprintf(text, sizeof(text), "Hello %s", req->name);
  hello_request__free_unpacked(req, NULL);
  hello_reply__init(&reply);
  reply.message = text;
  len = hello_reply__pack(&reply, buf);
  respond_msg(st, buf, len);
}

/* The script: how to answer the command in the request message. */
static void fake_dispatch(fstream *st) {
  fconn *fc = st->fc;
  fserver *srv = fc->srv;
  char cmd[512];
  size_t len = st->body_len >= 5 ? st->body_len - 5 : 0;
  fstream *o;
  int n;

  pthread_mutex_lock(&srv->lock);
  srv->st.requests++;
  memcpy(srv->st.path, st->path, sizeof(st->path));
  memcpy(srv->st.method, st->method, sizeof(st->method));
  memcpy(srv->st.scheme, st->scheme, sizeof(st->scheme));
  memcpy(srv->st.authority, st->authority, sizeof(st->authority));
  memcpy(srv->st.ct, st->ct, sizeof(st->ct));
  memcpy(srv->st.te, st->te, sizeof(st->te));
  memcpy(srv->st.ua, st->ua, sizeof(st->ua));
  memcpy(srv->st.timeout, st->timeout, sizeof(st->timeout));
  memcpy(srv->st.body, st->body, st->body_len);
  srv->st.body_len = st->body_len;
  pthread_mutex_unlock(&srv->lock);

  if (strcmp(st->path, "/Greeter/SayHello") == 0) {
    fake_say_hello(st);
    return;
  }
  if (strcmp(st->path, "/Greeter/Garbage") == 0) {
    respond_msg(st, "\xff\xff\xff", 3);
    return;
  }
  if (len >= sizeof(cmd))
    len = sizeof(cmd) - 1;
  memcpy(cmd, st->body + 5, len);
  cmd[len] = '\0';

  if (strncmp(cmd, "ok:", 3) == 0) {
    respond_ok(st, cmd + 3);
  } else if (strncmp(cmd, "count:", 6) == 0) {
    char total[32];

    snprintf(total, sizeof(total), "%zu", st->body_total);
    respond_ok(st, total);
  } else if (strncmp(cmd, "status:", 7) == 0 ||
             strncmp(cmd, "tonly:", 6) == 0) {
    char *code = strchr(cmd, ':') + 1, *msg = strchr(code, ':');

    *msg++ = '\0';
    if (cmd[0] == 's')
      respond(st, "200", "application/grpc", NULL, NULL, 0, code, msg);
    else
      respond_trailers_only(st, code, msg);
  } else if (strcmp(cmd, "hold") == 0) {
    st->held = 1;
    pthread_mutex_lock(&srv->lock);
    srv->st.held++;
    pthread_mutex_unlock(&srv->lock);
  } else if (strcmp(cmd, "goaway") == 0) {
    /* The final GOAWAY: the held call (the lowest id) is the last one
     * processed; this one and any later are refused. */
    for (o = fc->streams; o != NULL && !o->held; o = o->next)
      ;
    if (o == NULL) {
      respond_ok(st, "fresh");
      return;
    }
    assert_int_equal(nghttp2_submit_goaway(fc->s, NGHTTP2_FLAG_NONE, o->id,
                                           NGHTTP2_NO_ERROR, NULL, 0),
                     0);
    o->held = 0;
    respond_ok(o, "held");
  } else if (strcmp(cmd, "notice") == 0) {
    /* The first of grpc-go's two GOAWAYs: last-stream-id 2^31-1. */
    assert_int_equal(nghttp2_submit_shutdown_notice(fc->s), 0);
    respond_ok(st, "notice");
  } else if (strcmp(cmd, "close") == 0) {
    fc->close_now = 1;
  } else if (strncmp(cmd, "flood:", 6) == 0) {
    /* <n> messages of 1 KiB, "000000xxx...", "000001xxx...", then OK. */
    size_t count = (size_t)atol(cmd + 6), i, m = 5 + 1024;
    uint8_t *body = malloc(count * m);

    assert_non_null(body);
    for (i = 0; i < count; i++) {
      grace__grpc_prefix_encode(body + i * m, 0, 1024);
      memset(body + i * m + 5, 'x', 1024);
      char num[32];

      snprintf(num, sizeof(num), "%06zu", i % 1000000);
      memcpy(body + i * m + 5, num, 6);
    }
    respond(st, "200", "application/grpc", NULL, body, count * m, "0", NULL);
    add_trailer(st, "x-count", cmd + 6);
    free(body);
  } else if (strncmp(cmd, "big:", 4) == 0) {
    size_t size = (size_t)atol(cmd + 4);
    char *big = malloc(size);

    assert_non_null(big);
    memset(big, 'x', size);
    respond_msg(st, big, size);
    free(big);
  } else if (strncmp(cmd, "prefix:", 7) == 0) {
    uint8_t prefix[5];

    grace__grpc_prefix_encode(prefix, 0, (size_t)atol(cmd + 7));
    respond(st, "200", "application/grpc", NULL, prefix, 5, "0", NULL);
  } else if (strcmp(cmd, "badflag") == 0) {
    respond(st, "200", "application/grpc", NULL, "\x02\0\0\0\x01x", 6, "0",
            NULL);
  } else if (strcmp(cmd, "gzip") == 0) {
    respond(st, "200", "application/grpc", "gzip", "\x01\0\0\0\x01x", 6, "0",
            NULL);
  } else if (strcmp(cmd, "truncated") == 0) {
    respond(st, "200", "application/grpc", NULL,
            "\0\0\0\0\x0a"
            "abc",
            8, "0", NULL);
  } else if (strcmp(cmd, "two") == 0) {
    respond(st, "200", "application/grpc", NULL, "\0\0\0\0\x01x\0\0\0\0\x01y",
            12, "0", NULL);
  } else if (strcmp(cmd, "empty") == 0) {
    respond(st, "200", "application/grpc", NULL, NULL, 0, "0", NULL);
  } else if (strcmp(cmd, "nostatus") == 0) {
    respond(st, "200", "application/grpc", NULL, "\0\0\0\0\x01x", 6, NULL,
            NULL);
    /* Trailers without grpc-status. */
    st->trailers = 1;
    add_trailer(st, "x-trailer", "1");
  } else if (strcmp(cmd, "badstatus") == 0) {
    respond(st, "200", "application/grpc", NULL, "\0\0\0\0\x01x", 6, "abc",
            NULL);
  } else if (strcmp(cmd, "dataend") == 0) {
    respond(st, "200", "application/grpc", NULL, "\0\0\0\0\x01x", 6, NULL,
            NULL);
  } else if (strncmp(cmd, "http:", 5) == 0) {
    respond(st, cmd + 5, "text/plain", NULL, "oops", 4, NULL, NULL);
  } else if (strncmp(cmd, "httpgrpc:", 9) == 0) {
    nghttp2_nv nva[2] = {mknv(":status", cmd + 9),
                         mknv("content-type", "application/grpc")};

    assert_int_equal(nghttp2_submit_response(fc->s, st->id, nva, 2, NULL), 0);
  } else if (strcmp(cmd, "noct") == 0) {
    respond(st, "200", NULL, NULL, "\0\0\0\0\x01x", 6, "0", NULL);
  } else if (strcmp(cmd, "nostatusline") == 0) {
    respond(st, NULL, "application/grpc", NULL, "\0\0\0\0\x01x", 6, "0", NULL);
  } else if (strncmp(cmd, "rst:", 4) == 0) {
    assert_int_equal(nghttp2_submit_rst_stream(fc->s, NGHTTP2_FLAG_NONE, st->id,
                                               (uint32_t)atoi(cmd + 4)),
                     0);
  } else if (strcmp(cmd, "refuse") == 0 || strcmp(cmd, "refuse-once") == 0) {
    pthread_mutex_lock(&srv->lock);
    n = srv->st.refuse_once_seen++;
    pthread_mutex_unlock(&srv->lock);
    if (strcmp(cmd, "refuse") == 0 || n == 0)
      assert_int_equal(nghttp2_submit_rst_stream(fc->s, NGHTTP2_FLAG_NONE,
                                                 st->id,
                                                 NGHTTP2_REFUSED_STREAM),
                       0);
    else
      respond_ok(st, "second");
  } else {
    fail_msg("unknown command %s", cmd);
  }
}

static fstream *fs_get(nghttp2_session *s, int32_t id) {
  return nghttp2_session_get_stream_user_data(s, id);
}

static int fs_on_begin_headers(nghttp2_session *s, const nghttp2_frame *f,
                               void *ud) {
  fconn *fc = ud;
  fstream *st;

  if (f->hd.type != NGHTTP2_HEADERS || f->headers.cat != NGHTTP2_HCAT_REQUEST)
    return 0;
  st = calloc(1, sizeof(*st));
  assert_non_null(st);
  st->id = f->hd.stream_id;
  st->fc = fc;
  st->next = fc->streams;
  fc->streams = st;
  nghttp2_session_set_stream_user_data(s, st->id, st);
  return 0;
}

#define COPY_HDR(field, want)                                                  \
  if (namelen == strlen(want) && memcmp(name, want, namelen) == 0) {           \
    snprintf(st->field, sizeof(st->field), "%.*s", (int)valuelen,              \
             (const char *)value);                                             \
  }

static int fs_on_header(nghttp2_session *s, const nghttp2_frame *f,
                        const uint8_t *name, size_t namelen,
                        const uint8_t *value, size_t valuelen, uint8_t flags,
                        void *ud) {
  fstream *st = fs_get(s, f->hd.stream_id);

  (void)flags;
  (void)ud;
  if (st == NULL)
    return 0;
  COPY_HDR(path, ":path")
  COPY_HDR(method, ":method")
  COPY_HDR(scheme, ":scheme")
  COPY_HDR(authority, ":authority")
  COPY_HDR(ct, "content-type")
  COPY_HDR(te, "te")
  COPY_HDR(ua, "user-agent")
  COPY_HDR(timeout, "grpc-timeout")
  return 0;
}

static int fs_on_data(nghttp2_session *s, uint8_t flags, int32_t id,
                      const uint8_t *data, size_t len, void *ud) {
  fstream *st = fs_get(s, id);

  (void)flags;
  (void)ud;
  if (st == NULL)
    return 0;
  st->body_total += len;
  st->unconsumed += len;
  pthread_mutex_lock(&st->fc->srv->lock);
  st->fc->srv->st.data_recv += len;
  pthread_mutex_unlock(&st->fc->srv->lock);
  if (len > sizeof(st->body) - st->body_len)
    len = sizeof(st->body) - st->body_len;
  memcpy(st->body + st->body_len, data, len);
  st->body_len += len;
  return 0;
}

static int fs_on_frame_recv(nghttp2_session *s, const nghttp2_frame *f,
                            void *ud) {
  fconn *fc = ud;
  fstream *st;

  if ((f->hd.type == NGHTTP2_HEADERS || f->hd.type == NGHTTP2_DATA) &&
      (f->hd.flags & NGHTTP2_FLAG_END_STREAM)) {
    st = fs_get(s, f->hd.stream_id);
    if (st != NULL)
      fake_dispatch(st);
  } else if (f->hd.type == NGHTTP2_RST_STREAM) {
    pthread_mutex_lock(&fc->srv->lock);
    fc->srv->st
        .rst[f->rst_stream.error_code < 16 ? f->rst_stream.error_code : 15]++;
    pthread_mutex_unlock(&fc->srv->lock);
  }
  return 0;
}

static void fstream_free(fstream *st) {
  free(st->out);
  free(st);
}

static int fs_on_stream_close(nghttp2_session *s, int32_t id, uint32_t code,
                              void *ud) {
  fconn *fc = ud;
  fstream *st = fs_get(s, id), **pp;

  (void)code;
  if (st == NULL)
    return 0;
  if (st->unconsumed > 0)
    nghttp2_session_consume_connection(s, st->unconsumed);
  for (pp = &fc->streams; *pp != NULL; pp = &(*pp)->next) {
    if (*pp == st) {
      *pp = st->next;
      break;
    }
  }
  fstream_free(st);
  return 0;
}

static void fconn_new(fserver *srv, int fd) {
  nghttp2_session_callbacks *cbs;
  nghttp2_settings_entry iv[1] = {
      {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, 100}};
  fconn *fc = calloc(1, sizeof(*fc));
  int one = 1;

  assert_non_null(fc);
  assert_true(srv->nconns < MAX_CONNS);
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  fc->fd = fd;
  fc->srv = srv;
  assert_int_equal(nghttp2_session_callbacks_new(&cbs), 0);
  nghttp2_session_callbacks_set_on_begin_headers_callback(cbs,
                                                          fs_on_begin_headers);
  nghttp2_session_callbacks_set_on_header_callback(cbs, fs_on_header);
  nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, fs_on_data);
  nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, fs_on_frame_recv);
  nghttp2_session_callbacks_set_on_stream_close_callback(cbs,
                                                         fs_on_stream_close);
  {
    nghttp2_option *opt;

    assert_int_equal(nghttp2_option_new(&opt), 0);
    nghttp2_option_set_no_auto_window_update(opt, 1);
    assert_int_equal(nghttp2_session_server_new2(&fc->s, cbs, fc, opt), 0);
    nghttp2_option_del(opt);
  }
  nghttp2_session_callbacks_del(cbs);
  assert_int_equal(nghttp2_submit_settings(fc->s, NGHTTP2_FLAG_NONE, iv, 1), 0);
  pthread_mutex_lock(&srv->lock);
  fc->index = ++srv->st.conns;
  fc->linger = srv->goaway_on_accept;
  if (srv->goaway_on_accept)
    assert_int_equal(nghttp2_submit_goaway(fc->s, NGHTTP2_FLAG_NONE, 0,
                                           NGHTTP2_NO_ERROR, NULL, 0),
                     0);
  pthread_mutex_unlock(&srv->lock);
  srv->conns[srv->nconns++] = fc;
}

static void fconn_free(fconn *fc) {
  fstream *st;

  nghttp2_session_del(fc->s);
  while ((st = fc->streams) != NULL) {
    fc->streams = st->next;
    fstream_free(st);
  }
  close(fc->fd);
  free(fc);
}

/* Writes what nghttp2 has; the socket is blocking for writes. */
static int fconn_flush(fconn *fc) {
  const uint8_t *p;
  ssize_t n, w;

  for (;;) {
    n = nghttp2_session_mem_send(fc->s, &p);
    if (n < 0)
      return -1;
    if (n == 0)
      return 0;
    while (n > 0) {
      w = send(fc->fd, p, (size_t)n, MSG_NOSIGNAL);
      if (w < 0 && errno == EINTR)
        continue;
      if (w <= 0)
        return -1;
      p += w;
      n -= w;
    }
  }
}

/* Reads what is there; returns -1 when the connection is over. */
static int fconn_read(fconn *fc) {
  uint8_t buf[16384];
  ssize_t n;

  for (;;) {
    n = recv(fc->fd, buf, sizeof(buf), MSG_DONTWAIT);
    if (n > 0) {
      if (nghttp2_session_mem_recv(fc->s, buf, (size_t)n) < 0)
        return -1;
      continue;
    }
    if (n == 0)
      return -1;
    if (errno == EINTR)
      continue;
    return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : -1;
  }
}

static void *fserver_main(void *arg) {
  fserver *srv = arg;
  struct pollfd pfds[MAX_CONNS + 2];
  int i, n, release, manual, fd;

  for (;;) {
    pfds[0].fd = srv->stop_fd;
    pfds[0].events = POLLIN;
    pfds[1].fd = srv->lfd;
    pfds[1].events = POLLIN;
    for (i = 0; i < srv->nconns; i++) {
      pfds[i + 2].fd = srv->conns[i]->fd;
      pfds[i + 2].events = POLLIN;
    }
    n = srv->nconns + 2;
    if (poll(pfds, (nfds_t)n, 20) < 0)
      continue;
    if (pfds[0].revents)
      break;
    if (pfds[1].revents & POLLIN) {
      fd = accept4(srv->lfd, NULL, NULL, SOCK_CLOEXEC);
      if (fd >= 0)
        fconn_new(srv, fd);
    }
    for (i = 0; i < n - 2; i++) {
      if (pfds[i + 2].revents != 0 && fconn_read(srv->conns[i]) < 0) {
        srv->conns[i]->close_now = 1;
        pthread_mutex_lock(&srv->lock);
        srv->st.peer_closed++;
        pthread_mutex_unlock(&srv->lock);
      }
    }
    pthread_mutex_lock(&srv->lock);
    release = srv->release;
    srv->release = 0;
    manual = srv->manual_window;
    if (release)
      srv->manual_window = 0;
    pthread_mutex_unlock(&srv->lock);
    for (i = 0; i < srv->nconns; i++) {
      fconn *fc = srv->conns[i];
      fstream *st;

      for (st = fc->streams; st != NULL; st = st->next) {
        /* The session reopens windows by hand: at once, unless the test
         * asked for a server that does not read. */
        if (st->unconsumed > 0 && (release || !manual)) {
          nghttp2_session_consume(fc->s, st->id, st->unconsumed);
          st->unconsumed = 0;
        }
        if (release && st->held) {
          st->held = 0;
          respond_ok(st, "held");
        }
      }
      if (!fc->close_now && fconn_flush(fc) < 0)
        fc->close_now = 1;
      /* A session with nothing left to do closes, unless it refused the
       * connection at once: then it waits for the client to hang up, as
       * closing under the client's first request would reset it before
       * the GOAWAY is read. */
      if (!fc->close_now && !fc->linger && !nghttp2_session_want_read(fc->s) &&
          !nghttp2_session_want_write(fc->s))
        fc->close_now = 1;
      if (fc->close_now) {
        fconn_free(fc);
        srv->conns[i] = srv->conns[--srv->nconns];
        i--;
      }
    }
  }
  for (i = 0; i < srv->nconns; i++)
    fconn_free(srv->conns[i]);
  return NULL;
}

/* A listening socket on 127.0.0.1 with a kernel-chosen port. */
static int listen_any(int *port) {
  struct sockaddr_in sa;
  socklen_t len = sizeof(sa);
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;

  assert_true(fd >= 0);
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  memset(&sa, 0, sizeof(sa));
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
  assert_int_equal(listen(fd, 64), 0);
  assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
  *port = ntohs(sa.sin_port);
  return fd;
}

static fserver *fserver_start(void) {
  fserver *srv = calloc(1, sizeof(*srv));

  assert_non_null(srv);
  srv->lfd = listen_any(&srv->port);
  srv->stop_fd = eventfd(0, EFD_CLOEXEC);
  assert_true(srv->stop_fd >= 0);
  assert_int_equal(pthread_mutex_init(&srv->lock, NULL), 0);
  assert_int_equal(pthread_create(&srv->thread, NULL, fserver_main, srv), 0);
  return srv;
}

static void fserver_stop(fserver *srv) {
  uint64_t one = 1;

  assert_int_equal(write(srv->stop_fd, &one, sizeof(one)),
                   (ssize_t)sizeof(one));
  assert_int_equal(pthread_join(srv->thread, NULL), 0);
  close(srv->stop_fd);
  close(srv->lfd);
  pthread_mutex_destroy(&srv->lock);
  free(srv);
}

static fstats fserver_stats(fserver *srv) {
  fstats st;

  pthread_mutex_lock(&srv->lock);
  st = srv->st;
  pthread_mutex_unlock(&srv->lock);
  return st;
}

static void fserver_release(fserver *srv) {
  pthread_mutex_lock(&srv->lock);
  srv->release = 1;
  pthread_mutex_unlock(&srv->lock);
}

/* Waits up to 5 s for the server to have seen |n| held calls. */
static void wait_held(fserver *srv, int n) {
  int i;

  for (i = 0; i < 500 && fserver_stats(srv).held < n; i++)
    usleep(10000);
  assert_true(fserver_stats(srv).held >= n);
}

/* Waits up to 5 s for the client to have closed |n| connections. */
static void wait_peer_closed(fserver *srv, int n) {
  int i;

  for (i = 0; i < 500 && fserver_stats(srv).peer_closed < n; i++)
    usleep(10000);
  assert_int_equal(fserver_stats(srv).peer_closed, n);
}

/* ---- Helpers --------------------------------------------------------------
 */

typedef struct fixture {
  fserver *srv;
  grace_grpc_channel *ch;
  char target[64];
  /* Streams a failed test left open: teardown frees them, or
   * grace_grpc_channel_free would wait for them forever. */
  grace_grpc_stream *open[4];
} fixture;

static int setup(void **state) {
  fixture *f = calloc(1, sizeof(*f));

  assert_non_null(f);
  f->srv = fserver_start();
  snprintf(f->target, sizeof(f->target), "127.0.0.1:%d", f->srv->port);
  assert_int_equal(grace_grpc_channel_new(f->target, NULL, &f->ch), 0);
  *state = f;
  return 0;
}

static int teardown(void **state) {
  fixture *f = *state;
  size_t i;

  for (i = 0; i < sizeof(f->open) / sizeof(f->open[0]); i++)
    grace_grpc_stream_free(f->open[i]);
  grace_grpc_channel_free(f->ch);
  fserver_stop(f->srv);
  free(f);
  return 0;
}

/* The result of one call. */
typedef struct result {
  int rv;
  grace_grpc_status st;
  char resp[8192];
  size_t resp_len;
  char text[1024]; /* the status as grpc-go prints it */
  int64_t elapsed;
} result;

static void call_method(grace_grpc_channel *ch, const char *method,
                        const char *cmd, grace_ctx *ctx, result *r) {
  uint8_t *resp = NULL;
  size_t len = 0;
  int64_t t0 = grace_now();

  memset(r, 0, sizeof(*r));
  r->rv = grace_grpc_channel_unary(ch, method, cmd, strlen(cmd), ctx, &resp,
                                   &len, &r->st);
  r->elapsed = grace_now() - t0;
  if (r->rv == 0) {
    assert_non_null(resp);
    assert_int_equal(r->st.code, GRACE_GRPC_OK);
    assert_null(r->st.message);
    assert_true(len < sizeof(r->resp));
    memcpy(r->resp, resp, len);
    r->resp_len = len;
    free(resp);
  } else {
    assert_true(r->rv > 0);
    assert_int_equal((uint32_t)r->rv, r->st.code);
  }
  grace_grpc_status_format(&r->st, r->text, sizeof(r->text));
  grace_grpc_status_clear(&r->st);
}

static void call(grace_grpc_channel *ch, const char *cmd, grace_ctx *ctx,
                 result *r) {
  call_method(ch, CALL, cmd, ctx, r);
}

static void expect_ok(grace_grpc_channel *ch, const char *cmd,
                      const char *want) {
  result r;

  call(ch, cmd, NULL, &r);
  if (r.rv != 0)
    fail_msg("%s: %s", cmd, r.text);
  assert_string_equal(r.resp, want);
}

static void expect_error(grace_grpc_channel *ch, const char *cmd,
                         grace_grpc_code code, const char *text) {
  result r;

  call(ch, cmd, NULL, &r);
  if (r.rv != (int)code || strcmp(r.text, text) != 0)
    fail_msg("%s: got %d \"%s\", want %d \"%s\"", cmd, r.rv, r.text, (int)code,
             text);
}

/* A call made on another thread. */
typedef struct bg_call {
  pthread_t thread;
  grace_grpc_channel *ch;
  const char *cmd;
  grace_ctx *ctx;
  result r;
} bg_call;

static void *bg_main(void *arg) {
  bg_call *b = arg;

  call(b->ch, b->cmd, b->ctx, &b->r);
  return NULL;
}

static void bg_start(bg_call *b, grace_grpc_channel *ch, const char *cmd,
                     grace_ctx *ctx) {
  b->ch = ch;
  b->cmd = cmd;
  b->ctx = ctx;
  assert_int_equal(pthread_create(&b->thread, NULL, bg_main, b), 0);
}

static void bg_join(bg_call *b) {
  assert_int_equal(pthread_join(b->thread, NULL), 0);
}

/* ---- Tests ------------------------------------------------------------------
 */

static void ok_reply_and_request_headers(void **state) {
  fixture *f = *state;
  char want_authority[64];
  fstats st;

  expect_ok(f->ch, "ok:hi", "hi@1");
  st = fserver_stats(f->srv);
  /* doc/PROTOCOL-HTTP2.md "Requests", as grpc-go's createHeaderFields. */
  assert_string_equal(st.method, "POST");
  assert_string_equal(st.scheme, "http");
  assert_string_equal(st.path, CALL);
  snprintf(want_authority, sizeof(want_authority), "127.0.0.1:%d",
           f->srv->port);
  assert_string_equal(st.authority, want_authority);
  assert_string_equal(st.ct, "application/grpc");
  assert_string_equal(st.te, "trailers");
  assert_memory_equal(st.ua, "grpc-c-grace/", 13);
  /* No deadline, no grpc-timeout. */
  assert_string_equal(st.timeout, "");
  /* The body is one length-prefixed, uncompressed message. */
  assert_int_equal(st.body_len, 5 + 5);
  assert_memory_equal(st.body, "\0\0\0\0\x05ok:hi", 10);
  /* The connection stays and serves the next call. */
  expect_ok(f->ch, "ok:again", "again@1");
  assert_int_equal(fserver_stats(f->srv).conns, 1);
}

static void empty_request_and_response_messages(void **state) {
  fixture *f = *state;
  uint8_t *resp = NULL;
  size_t len = 99;
  grace_grpc_status st = GRACE_GRPC_STATUS_INIT;

  /* A reply of two bytes ("ok:" answers "@1"), then a zero-length
   * request: an empty HelloRequest. */
  expect_ok(f->ch, "ok:", "@1");
  assert_int_equal(grace_grpc_channel_unary(f->ch, "/Greeter/SayHello", NULL, 0,
                                            NULL, &resp, &len, &st),
                   0);
  /* An empty HelloRequest has an empty name. */
  assert_int_equal(len, 8);
  assert_memory_equal(resp, "\x0a\x06Hello ", 8);
  free(resp);
  grace_grpc_status_clear(&st);
}

static void status_with_percent_encoded_message(void **state) {
  fixture *f = *state;
  result r;

  call(f->ch, "status:5:caf\xc3\xa9 50% off\n", NULL, &r);
  assert_int_equal(r.rv, GRACE_GRPC_NOT_FOUND);
  assert_string_equal(
      r.text, "rpc error: code = NotFound desc = caf\xc3\xa9 50% off\n");
  /* The status owns a NUL-terminated copy with its length. */
  {
    grace_grpc_status st = GRACE_GRPC_STATUS_INIT;
    uint8_t *resp;
    size_t len;

    assert_int_equal(grace_grpc_channel_unary(f->ch, CALL, "status:3:ab", 11,
                                              NULL, &resp, &len, &st),
                     GRACE_GRPC_INVALID_ARGUMENT);
    assert_int_equal(st.code, GRACE_GRPC_INVALID_ARGUMENT);
    assert_int_equal(st.message_len, 2);
    assert_string_equal(st.message, "ab");
    grace_grpc_status_clear(&st);
    assert_null(st.message);
    assert_int_equal(st.code, GRACE_GRPC_OK);
  }
  /* An empty message is NULL, and prints as an empty desc. */
  call(f->ch, "status:14:", NULL, &r);
  assert_int_equal(r.rv, GRACE_GRPC_UNAVAILABLE);
  assert_string_equal(r.text, "rpc error: code = Unavailable desc = ");
  /* A code no enum has is kept and printed as grpc-go does. */
  call(f->ch, "status:42:odd", NULL, &r);
  assert_int_equal(r.rv, 42);
  assert_string_equal(r.text, "rpc error: code = Code(42) desc = odd");
}

static void trailers_only_error(void **state) {
  fixture *f = *state;

  expect_error(f->ch, "tonly:7:denied here", GRACE_GRPC_PERMISSION_DENIED,
               "rpc error: code = PermissionDenied desc = denied here");
  /* Trailers-only with no grpc-status: UNKNOWN, as grpc-go. */
  expect_error(f->ch, "httpgrpc:200", GRACE_GRPC_UNKNOWN,
               "rpc error: code = Unknown desc = ");
}

static void deadline_sends_grpc_timeout_and_resets_stream(void **state) {
  fixture *f = *state;
  grace_duration timeout;
  grace_ctx *ctx;
  result r;
  fstats st;
  int i;

  assert_int_equal(grace_ctx_with_timeout(grace_ctx_background(),
                                          300 * GRACE_MILLISECOND, &ctx),
                   0);
  call(f->ch, "hold", ctx, &r);
  assert_int_equal(r.rv, GRACE_GRPC_DEADLINE_EXCEEDED);
  assert_string_equal(r.text,
                      "rpc error: code = DeadlineExceeded desc = context "
                      "deadline exceeded");
  /* It ended at the deadline, not at some poll interval after it. */
  assert_true(r.elapsed >= 290 * GRACE_MILLISECOND);
  assert_true(r.elapsed < 2 * GRACE_SECOND);
  st = fserver_stats(f->srv);
  assert_int_equal(grace__grpc_timeout_decode(st.timeout, strlen(st.timeout),
                                              &timeout, NULL, 0),
                   0);
  /* What was left of the 300 ms when the stream went out. */
  assert_true(timeout > 0);
  assert_true(timeout <= 300 * GRACE_MILLISECOND);
  /* The server learns the call is over: RST_STREAM(CANCEL). */
  for (i = 0; i < 500 && fserver_stats(f->srv).rst[NGHTTP2_CANCEL] == 0; i++)
    usleep(10000);
  assert_int_equal(fserver_stats(f->srv).rst[NGHTTP2_CANCEL], 1);
  grace_ctx_cancel(ctx);
  grace_ctx_unref(ctx);
  /* The connection is still good. */
  expect_ok(f->ch, "ok:after", "after@1");
}

static void expired_context_fails_before_any_io(void **state) {
  fixture *f = *state;
  grace_ctx *ctx;
  result r;

  assert_int_equal(grace_ctx_with_timeout(grace_ctx_background(), 0, &ctx), 0);
  call(f->ch, "ok:x", ctx, &r);
  assert_int_equal(r.rv, GRACE_GRPC_DEADLINE_EXCEEDED);
  assert_string_equal(r.text, "rpc error: code = DeadlineExceeded desc = "
                              "context deadline exceeded");
  grace_ctx_unref(ctx);
  assert_int_equal(grace_ctx_with_cancel(grace_ctx_background(), &ctx), 0);
  grace_ctx_cancel(ctx);
  call(f->ch, "ok:x", ctx, &r);
  assert_int_equal(r.rv, GRACE_GRPC_CANCELLED);
  assert_string_equal(r.text,
                      "rpc error: code = Canceled desc = context canceled");
  grace_ctx_unref(ctx);
  assert_int_equal(fserver_stats(f->srv).conns, 0);
}

static void cancel_ends_call_at_once(void **state) {
  fixture *f = *state;
  grace_ctx *ctx;
  bg_call b;

  assert_int_equal(grace_ctx_with_cancel(grace_ctx_background(), &ctx), 0);
  bg_start(&b, f->ch, "hold", ctx);
  wait_held(f->srv, 1);
  grace_ctx_cancel(ctx);
  bg_join(&b);
  assert_int_equal(b.r.rv, GRACE_GRPC_CANCELLED);
  assert_string_equal(b.r.text,
                      "rpc error: code = Canceled desc = context canceled");
  grace_ctx_unref(ctx);
}

static void goaway_completes_in_flight_and_retries_refused(void **state) {
  fixture *f = *state;
  bg_call a, b;

  /* A is in flight and held; B arrives after it on the same connection
   * and makes the server send GOAWAY(last-stream-id = A) and answer A.  A
   * completes on connection 1; B (refused, never processed) is retried
   * once on a fresh connection, where it is answered. */
  bg_start(&a, f->ch, "hold", NULL);
  wait_held(f->srv, 1);
  bg_start(&b, f->ch, "goaway", NULL);
  bg_join(&a);
  bg_join(&b);
  if (a.r.rv != 0 || b.r.rv != 0)
    fail_msg("A: %s; B: %s", a.r.text, b.r.text);
  assert_string_equal(a.r.resp, "held@1");
  assert_string_equal(b.r.resp, "fresh@2");
  /* The server saw B twice: refused on 1, served on 2. */
  assert_int_equal(fserver_stats(f->srv).requests, 3);
  /* New calls go to the fresh connection. */
  expect_ok(f->ch, "ok:c", "c@2");
  assert_int_equal(fserver_stats(f->srv).conns, 2);
}

static void goaway_notice_sends_new_calls_to_fresh_connection(void **state) {
  fixture *f = *state;
  bg_call a;

  /* grpc-go's graceful stop, first phase: GOAWAY(2^31-1).  The held call
   * A stays on connection 1 and completes there later; every new call
   * goes to connection 2 at once. */
  bg_start(&a, f->ch, "hold", NULL);
  wait_held(f->srv, 1);
  expect_ok(f->ch, "notice", "notice@1");
  expect_ok(f->ch, "ok:c", "c@2");
  expect_ok(f->ch, "ok:d", "d@2");
  fserver_release(f->srv);
  bg_join(&a);
  if (a.r.rv != 0)
    fail_msg("A: %s", a.r.text);
  assert_string_equal(a.r.resp, "held@1");
  assert_int_equal(fserver_stats(f->srv).conns, 2);
  /* Once A was done, the draining connection 1 was closed. */
  wait_peer_closed(f->srv, 1);
  expect_ok(f->ch, "ok:e", "e@2");
}

static void goaway_at_every_handshake_gives_up(void **state) {
  fixture *f = *state;

  /* Each connection is refused before its first stream: the call tries a
   * second connection, then fails; it does not dial forever. */
  pthread_mutex_lock(&f->srv->lock);
  f->srv->goaway_on_accept = 1;
  pthread_mutex_unlock(&f->srv->lock);
  expect_error(f->ch, "ok:x", GRACE_GRPC_UNAVAILABLE,
               "rpc error: code = Unavailable desc = the connection is "
               "draining");
  assert_int_equal(fserver_stats(f->srv).conns, 2);
  assert_int_equal(fserver_stats(f->srv).requests, 0);
  pthread_mutex_lock(&f->srv->lock);
  f->srv->goaway_on_accept = 0;
  pthread_mutex_unlock(&f->srv->lock);
  expect_ok(f->ch, "ok:y", "y@3");
}

static void refused_stream_is_retried_once(void **state) {
  fixture *f = *state;

  /* RST_STREAM(REFUSED_STREAM): not processed, retried once. */
  expect_ok(f->ch, "refuse-once", "second@1");
  assert_int_equal(fserver_stats(f->srv).requests, 2);
  /* Refused again: no third try. */
  expect_error(f->ch, "refuse", GRACE_GRPC_UNAVAILABLE,
               "rpc error: code = Unavailable desc = stream terminated by "
               "RST_STREAM with error code: REFUSED_STREAM");
  assert_int_equal(fserver_stats(f->srv).requests, 4);
}

static void connection_refused_is_unavailable(void **state) {
  grace_grpc_channel *ch;
  char target[64], want[256];
  result r;
  int port, fd;

  (void)state;
  /* A port that was free a moment ago. */
  fd = listen_any(&port);
  close(fd);
  snprintf(target, sizeof(target), "127.0.0.1:%d", port);
  assert_int_equal(grace_grpc_channel_new(target, NULL, &ch), 0);
  call(ch, "ok:x", NULL, &r);
  assert_int_equal(r.rv, GRACE_GRPC_UNAVAILABLE);
  snprintf(want, sizeof(want),
           "rpc error: code = Unavailable desc = connection error: desc = "
           "\"transport: Error while dialing: dial tcp 127.0.0.1:%d: connect: "
           "connection refused\"",
           port);
  assert_string_equal(r.text, want);
  /* The next call dials again (and fails the same way). */
  call(ch, "ok:x", NULL, &r);
  assert_string_equal(r.text, want);
  grace_grpc_channel_free(ch);
}

static void silent_server_times_out_the_handshake(void **state) {
  grace_grpc_channel_options opts;
  grace_grpc_channel *ch;
  char target[64];
  result r;
  int port, fd;

  (void)state;
  /* A listener that never accepts: the kernel completes the TCP handshake,
   * nobody sends SETTINGS. */
  fd = listen_any(&port);
  snprintf(target, sizeof(target), "127.0.0.1:%d", port);
  grace_grpc_channel_options_init(&opts);
  opts.connect_timeout = 200 * GRACE_MILLISECOND;
  assert_int_equal(grace_grpc_channel_new(target, &opts, &ch), 0);
  call(ch, "ok:x", NULL, &r);
  assert_int_equal(r.rv, GRACE_GRPC_UNAVAILABLE);
  assert_string_equal(r.text,
                      "rpc error: code = Unavailable desc = connection error: "
                      "desc = \"error reading server preface: context deadline "
                      "exceeded\"");
  assert_true(r.elapsed >= 190 * GRACE_MILLISECOND);
  assert_true(r.elapsed < 3 * GRACE_SECOND);
  grace_grpc_channel_free(ch);
  close(fd);
}

static void server_closing_mid_call_is_unavailable(void **state) {
  fixture *f = *state;
  result r;

  call(f->ch, "close", NULL, &r);
  assert_int_equal(r.rv, GRACE_GRPC_UNAVAILABLE);
  /* "EOF", or a reset if the close raced our last bytes. */
  if (strcmp(r.text, "rpc error: code = Unavailable desc = error reading from "
                     "server: EOF") != 0)
    assert_non_null(strstr(r.text, "desc = error reading from server: read tcp "
                                   "127.0.0.1:"));
  /* The channel dials again for the next call. */
  expect_ok(f->ch, "ok:back", "back@2");
}

static void oversize_message_is_resource_exhausted(void **state) {
  fixture *f = *state;
  grace_grpc_channel_options opts;
  grace_grpc_channel *ch;

  grace_grpc_channel_options_init(&opts);
  opts.max_recv_msg_size = 1024;
  assert_int_equal(grace_grpc_channel_new(f->target, &opts, &ch), 0);
  expect_error(ch, "big:2000", GRACE_GRPC_RESOURCE_EXHAUSTED,
               "rpc error: code = ResourceExhausted desc = grpc: received "
               "message larger than max (2000 vs. 1024)");
  /* At the limit exactly: fine. */
  {
    result r;

    call(ch, "big:1024", NULL, &r);
    assert_int_equal(r.rv, 0);
    assert_int_equal(r.resp_len, 1024);
  }
  grace_grpc_channel_free(ch);
  /* The default limit, 4 MiB: refused at the prefix, nothing buffered. */
  expect_error(f->ch, "prefix:4194305", GRACE_GRPC_RESOURCE_EXHAUSTED,
               "rpc error: code = ResourceExhausted desc = grpc: received "
               "message larger than max (4194305 vs. 4194304)");
}

static void malformed_responses_are_internal(void **state) {
  fixture *f = *state;
  static const struct {
    const char *cmd;
    grace_grpc_code code;
    const char *text;
  } cases[] = {
      {"badflag", GRACE_GRPC_INTERNAL,
       "rpc error: code = Internal desc = grpc: received unexpected payload "
       "format 2"},
      {"gzip", GRACE_GRPC_INTERNAL,
       "rpc error: code = Internal desc = grpc: Decompressor is not installed "
       "for grpc-encoding \"gzip\""},
      {"truncated", GRACE_GRPC_INTERNAL,
       "rpc error: code = Internal desc = unexpected EOF"},
      {"two", GRACE_GRPC_INTERNAL,
       "rpc error: code = Internal desc = cardinality violation: expected "
       "<EOF> for non server-streaming RPCs, but received another message"},
      {"empty", GRACE_GRPC_INTERNAL,
       "rpc error: code = Internal desc = cardinality violation: received no "
       "response message from non-server-streaming RPC"},
      {"dataend", GRACE_GRPC_INTERNAL,
       "rpc error: code = Internal desc = server closed the stream without "
       "sending trailers"},
      {"nostatus", GRACE_GRPC_UNKNOWN, "rpc error: code = Unknown desc = "},
      {"badstatus", GRACE_GRPC_UNKNOWN,
       "rpc error: code = Unknown desc = transport: malformed grpc-status: "
       "strconv.ParseInt: parsing \"abc\": invalid syntax"},
      {"noct", GRACE_GRPC_UNKNOWN,
       "rpc error: code = Unknown desc = unexpected HTTP status code received "
       "from server: 200 (OK); malformed header: missing HTTP content-type"},
      /* nghttp2 refuses a response without :status (RFC 9113 section
       * 8.3.2) and resets the stream with PROTOCOL_ERROR. */
      {"nostatusline", GRACE_GRPC_INTERNAL,
       "rpc error: code = Internal desc = Violation in HTTP messaging rule"},
  };
  size_t i;

  for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
    expect_error(f->ch, cases[i].cmd, cases[i].code, cases[i].text);
  /* None of this broke the connection. */
  expect_ok(f->ch, "ok:fine", "fine@1");
}

static void http_status_and_reset_mapping(void **state) {
  fixture *f = *state;

  expect_error(f->ch, "http:503", GRACE_GRPC_UNAVAILABLE,
               "rpc error: code = Unavailable desc = unexpected HTTP status "
               "code received from server: 503 (Service Unavailable); "
               "transport: received unexpected content-type \"text/plain\"");
  expect_error(f->ch, "http:404", GRACE_GRPC_UNIMPLEMENTED,
               "rpc error: code = Unimplemented desc = unexpected HTTP status "
               "code received from server: 404 (Not Found); transport: "
               "received unexpected content-type \"text/plain\"");
  /* doc/http-grpc-status-mapping.md with a gRPC content-type too. */
  expect_error(f->ch, "httpgrpc:429", GRACE_GRPC_UNAVAILABLE,
               "rpc error: code = Unavailable desc = unexpected HTTP status "
               "code received from server: 429 (Too Many Requests)");
  expect_error(f->ch, "httpgrpc:401", GRACE_GRPC_UNAUTHENTICATED,
               "rpc error: code = Unauthenticated desc = unexpected HTTP "
               "status code received from server: 401 (Unauthorized)");
  expect_error(f->ch, "rst:2", GRACE_GRPC_INTERNAL,
               "rpc error: code = Internal desc = stream terminated by "
               "RST_STREAM with error code: INTERNAL_ERROR");
  expect_error(f->ch, "rst:8", GRACE_GRPC_CANCELLED,
               "rpc error: code = Canceled desc = stream terminated by "
               "RST_STREAM with error code: CANCEL");
  expect_error(f->ch, "rst:11", GRACE_GRPC_RESOURCE_EXHAUSTED,
               "rpc error: code = ResourceExhausted desc = stream terminated "
               "by RST_STREAM with error code: ENHANCE_YOUR_CALM");
  expect_error(f->ch, "rst:99", GRACE_GRPC_UNKNOWN,
               "rpc error: code = Unknown desc = stream terminated by "
               "RST_STREAM with error code: unknown error code 0x63");
  expect_ok(f->ch, "ok:fine", "fine@1");
}

static void large_messages_both_ways(void **state) {
  fixture *f = *state;
  grace_grpc_status st = GRACE_GRPC_STATUS_INIT;
  const size_t req_len = 300 * 1024;
  char *req = malloc(req_len);
  uint8_t *resp = NULL;
  size_t len = 0, i;
  char want[64];
  result r;

  /* A request beyond the server's 64 KiB stream window: it goes out as
   * the server's WINDOW_UPDATEs allow. */
  assert_non_null(req);
  memset(req, '.', req_len);
  memcpy(req, "count:", 6);
  assert_int_equal(grace_grpc_channel_unary(f->ch, CALL, req, req_len, NULL,
                                            &resp, &len, &st),
                   0);
  snprintf(want, sizeof(want), "%zu@1", req_len + 5);
  assert_int_equal(len, strlen(want));
  assert_memory_equal(resp, want, len);
  free(resp);
  free(req);
  /* A reply of 3 MB, beyond our 1 MiB windows, under the 4 MiB limit. */
  assert_int_equal(grace_grpc_channel_unary(f->ch, CALL, "big:3000000", 11,
                                            NULL, &resp, &len, &st),
                   0);
  assert_int_equal(len, 3000000);
  for (i = 0; i < len && resp[i] == 'x'; i++)
    ;
  assert_int_equal(i, len);
  free(resp);
  call(f->ch, "ok:after", NULL, &r);
  assert_string_equal(r.resp, "after@1");
}

typedef struct worker_arg {
  pthread_t thread;
  grace_grpc_channel *ch;
  int id, ok;
} worker_arg;

static void *worker_main(void *p) {
  worker_arg *w = p;
  char cmd[64], want[64];
  result r;
  int i;

  for (i = 0; i < 25; i++) {
    snprintf(cmd, sizeof(cmd), "ok:w%d-%d", w->id, i);
    snprintf(want, sizeof(want), "w%d-%d@1", w->id, i);
    call(w->ch, cmd, NULL, &r);
    if (r.rv == 0 && strcmp(r.resp, want) == 0)
      w->ok++;
  }
  return NULL;
}

static void concurrent_calls_share_one_connection(void **state) {
  fixture *f = *state;
  worker_arg w[4];
  int i;

  /* Warm up so every worker finds the connection ready. */
  expect_ok(f->ch, "ok:warm", "warm@1");
  for (i = 0; i < 4; i++) {
    w[i].ch = f->ch;
    w[i].id = i;
    w[i].ok = 0;
    assert_int_equal(pthread_create(&w[i].thread, NULL, worker_main, &w[i]), 0);
  }
  for (i = 0; i < 4; i++) {
    assert_int_equal(pthread_join(w[i].thread, NULL), 0);
    assert_int_equal(w[i].ok, 25);
  }
  assert_int_equal(fserver_stats(f->srv).conns, 1);
}

static void close_fails_calls_in_flight(void **state) {
  fixture *f = *state;
  bg_call a;
  result r;

  bg_start(&a, f->ch, "hold", NULL);
  wait_held(f->srv, 1);
  grace_grpc_channel_close(f->ch);
  bg_join(&a);
  assert_int_equal(a.r.rv, GRACE_GRPC_CANCELLED);
  assert_string_equal(a.r.text, "rpc error: code = Canceled desc = grpc: the "
                                "client connection is closing");
  call(f->ch, "ok:late", NULL, &r);
  assert_int_equal(r.rv, GRACE_GRPC_CANCELLED);
  assert_string_equal(r.text, a.r.text);
  grace_grpc_channel_close(f->ch); /* idempotent */
}

static void free_waits_for_calls_in_flight(void **state) {
  fserver *srv = fserver_start();
  grace_grpc_channel *ch;
  char target[64];
  bg_call a;

  (void)state;
  snprintf(target, sizeof(target), "127.0.0.1:%d", srv->port);
  assert_int_equal(grace_grpc_channel_new(target, NULL, &ch), 0);
  bg_start(&a, ch, "hold", NULL);
  wait_held(srv, 1);
  grace_grpc_channel_free(ch);
  bg_join(&a);
  assert_int_equal(a.r.rv, GRACE_GRPC_CANCELLED);
  fserver_stop(srv);
}

static void protobuf_helper_round_trip(void **state) {
  fixture *f = *state;
  grace_grpc_status st = GRACE_GRPC_STATUS_INIT;
  ProtobufCMessage *reply = NULL;
  HelloRequest req;
  char name[] = "world", dur[] = "10s";
  int rv;

  hello_request__init(&req);
  req.name = name;
  req.duration = dur;
  rv = grace_grpc_channel_unary_pb(f->ch, "/Greeter/SayHello", &req.base,
                                   &hello_reply__descriptor, NULL, &reply, &st);
  assert_int_equal(rv, 0);
  assert_non_null(reply);
  assert_string_equal(((HelloReply *)(void *)reply)->message, "Hello world");
  protobuf_c_message_free_unpacked(reply, NULL);
  /* The server decoded what protobuf-c packed. */
  {
    fstats s = fserver_stats(f->srv);
    HelloRequest *got = hello_request__unpack(NULL, s.body_len - 5, s.body + 5);

    assert_non_null(got);
    assert_string_equal(got->name, "world");
    assert_string_equal(got->duration, "10s");
    hello_request__free_unpacked(got, NULL);
  }
  reply = NULL;
  rv = grace_grpc_channel_unary_pb(f->ch, "/Greeter/Garbage", &req.base,
                                   &hello_reply__descriptor, NULL, &reply, &st);
  assert_int_equal(rv, GRACE_GRPC_INTERNAL);
  assert_null(reply);
  assert_string_equal(st.message,
                      "grpc: failed to unmarshal the received message: proto: "
                      "cannot parse invalid wire-format data");
  grace_grpc_status_clear(&st);
  assert_int_equal(grace_grpc_channel_unary_pb(f->ch, "/Greeter/SayHello", NULL,
                                               &hello_reply__descriptor, NULL,
                                               &reply, &st),
                   GRACE_EINVAL);
}

static void invalid_arguments_and_targets(void **state) {
  fixture *f = *state;
  grace_grpc_status st = GRACE_GRPC_STATUS_INIT;
  grace_grpc_channel *ch = NULL;
  uint8_t *resp = NULL;
  size_t len = 0;
  char target[64];

  assert_int_equal(
      grace_grpc_channel_unary(NULL, CALL, "x", 1, NULL, &resp, &len, &st),
      GRACE_EINVAL);
  assert_int_equal(grace_grpc_channel_unary(f->ch, "no/slash", "x", 1, NULL,
                                            &resp, &len, &st),
                   GRACE_EINVAL);
  assert_int_equal(
      grace_grpc_channel_unary(f->ch, CALL, NULL, 1, NULL, &resp, &len, &st),
      GRACE_EINVAL);
  assert_int_equal(
      grace_grpc_channel_unary(f->ch, CALL, "x", 1, NULL, NULL, &len, &st),
      GRACE_EINVAL);
  assert_int_equal(
      grace_grpc_channel_unary(f->ch, CALL, "x", 1, NULL, &resp, &len, NULL),
      GRACE_EINVAL);
  assert_null(resp);
  assert_int_equal(len, 0);
  assert_int_equal(st.code, GRACE_GRPC_OK);

  assert_int_equal(grace_grpc_channel_new(NULL, NULL, &ch), GRACE_EINVAL);
  assert_int_equal(grace_grpc_channel_new("x:1", NULL, NULL), GRACE_EINVAL);
  assert_int_equal(grace_grpc_channel_new("", NULL, &ch), GRACE_EINVAL);
  assert_int_equal(grace_grpc_channel_new("host:", NULL, &ch), GRACE_EINVAL);
  assert_int_equal(grace_grpc_channel_new("[::1", NULL, &ch), GRACE_EINVAL);
  assert_int_equal(grace_grpc_channel_new("[::1]x", NULL, &ch), GRACE_EINVAL);
  assert_null(ch);

  /* The scheme prefixes grpc-go accepts; the authority drops them. */
  snprintf(target, sizeof(target), "dns:///127.0.0.1:%d", f->srv->port);
  assert_int_equal(grace_grpc_channel_new(target, NULL, &ch), 0);
  expect_ok(ch, "ok:dns", "dns@1");
  assert_string_equal(fserver_stats(f->srv).authority, target + 7);
  grace_grpc_channel_free(ch);
  /* "localhost" resolves; every address is tried until one connects. */
  snprintf(target, sizeof(target), "passthrough:///localhost:%d", f->srv->port);
  assert_int_equal(grace_grpc_channel_new(target, NULL, &ch), 0);
  expect_ok(ch, "ok:lh", "lh@2");
  grace_grpc_channel_free(ch);
  grace_grpc_channel_close(NULL);
  grace_grpc_channel_free(NULL);
}

static void status_helpers(void **state) {
  grace_grpc_status st = GRACE_GRPC_STATUS_INIT;
  char buf[16];

  (void)state;
  assert_int_equal(grace_grpc_status_format(NULL, buf, sizeof(buf)),
                   GRACE_EINVAL);
  st.code = GRACE_GRPC_ABORTED;
  /* Truncated like snprintf; the full length is returned. */
  assert_int_equal(grace_grpc_status_format(&st, buf, sizeof(buf)),
                   (int)strlen("rpc error: code = Aborted desc = "));
  assert_string_equal(buf, "rpc error: code");
  grace_grpc_status_clear(&st);
  assert_int_equal(st.code, GRACE_GRPC_OK);
  grace_grpc_status_clear(NULL);
}

/* ---- Streaming calls ------------------------------------------------------
 */

static grace_grpc_stream *stream_start(fixture *f, grace_ctx *ctx) {
  grace_grpc_stream *s = NULL;
  size_t i;

  assert_int_equal(grace_grpc_stream_start(f->ch, CALL, ctx, &s), 0);
  assert_non_null(s);
  for (i = 0; f->open[i] != NULL; i++)
    assert_true(i + 1 < sizeof(f->open) / sizeof(f->open[0]));
  f->open[i] = s;
  return s;
}

static void stream_free(fixture *f, grace_grpc_stream *s) {
  size_t i;

  for (i = 0; i < sizeof(f->open) / sizeof(f->open[0]); i++) {
    if (f->open[i] == s)
      f->open[i] = NULL;
  }
  grace_grpc_stream_free(s);
}

static void stream_send_str(grace_grpc_stream *s, const char *text) {
  assert_int_equal(grace_grpc_stream_send(s, text, strlen(text), GRACE_SECOND),
                   0);
}

/* Receives one message as a string into |buf|; returns recv's value. */
static int stream_recv_str(grace_grpc_stream *s, char *buf, size_t size,
                           grace_duration timeout) {
  uint8_t *m;
  size_t len;
  int rv = grace_grpc_stream_recv(s, &m, &len, timeout);

  if (rv == 1) {
    assert_non_null(m);
    assert_true(len < size);
    memcpy(buf, m, len);
    buf[len] = '\0';
    free(m);
  }
  return rv;
}

static int stream_finish(grace_grpc_stream *s, char *text, size_t len) {
  grace_grpc_status st = GRACE_GRPC_STATUS_INIT;
  int rv = grace_grpc_stream_finish(s, &st);

  grace_grpc_status_format(&st, text, len);
  grace_grpc_status_clear(&st);
  return rv;
}

static void stream_many_messages_then_trailers(void **state) {
  fixture *f = *state;
  const grace_grpc_metadata *md;
  grace_grpc_stream *s = stream_start(f, NULL);
  char buf[64], text[256];
  size_t n, i;
  int found = 0;

  /* Messages a unary call refuses as a cardinality violation are a
   * stream's normal life. */
  stream_send_str(s, "two");
  assert_int_equal(grace_grpc_stream_close_send(s), 0);
  /* Half-closed: no more sending. */
  assert_int_equal(grace_grpc_stream_send(s, "x", 1, 0), GRACE_ESTATE);
  assert_int_equal(stream_recv_str(s, buf, sizeof(buf), 5 * GRACE_SECOND), 1);
  assert_string_equal(buf, "x");
  assert_int_equal(stream_recv_str(s, buf, sizeof(buf), 5 * GRACE_SECOND), 1);
  assert_string_equal(buf, "y");
  assert_int_equal(stream_recv_str(s, buf, sizeof(buf), 5 * GRACE_SECOND), 0);
  assert_int_equal(stream_finish(s, text, sizeof(text)), 0);
  assert_int_equal(grace_grpc_stream_trailers(s, &md, &n), 0);
  for (i = 0; i < n; i++)
    found |=
        strcmp(md[i].name, "grpc-status") == 0 && strcmp(md[i].value, "0") == 0;
  assert_true(found);
  /* Ended: sends say so. */
  assert_int_equal(grace_grpc_stream_send(s, "x", 1, 0), GRACE_ECLOSED);
  stream_free(f, s);
}

static void stream_error_status_decoded_with_trailers(void **state) {
  fixture *f = *state;
  const grace_grpc_metadata *md;
  grace_grpc_stream *s = stream_start(f, NULL);
  char buf[64], text[256];
  size_t n;

  stream_send_str(s, "tonly:5:no such 100% thing");
  grace_grpc_stream_close_send(s);
  assert_int_equal(stream_recv_str(s, buf, sizeof(buf), 5 * GRACE_SECOND), 0);
  assert_int_equal(stream_finish(s, text, sizeof(text)), GRACE_GRPC_NOT_FOUND);
  assert_string_equal(text,
                      "rpc error: code = NotFound desc = no such 100% thing");
  assert_int_equal(grace_grpc_stream_trailers(s, &md, &n), 0);
  /* Trailers-only: the one block is the trailers, content-type and all. */
  assert_int_equal(n, 3);
  assert_string_equal(md[0].name, "content-type");
  assert_string_equal(md[1].name, "grpc-status");
  assert_string_equal(md[1].value, "5");
  assert_string_equal(md[2].name, "grpc-message");
  assert_string_equal(md[2].value, "no such 100%25 thing"); /* as received */
  stream_free(f, s);
}

/* Waits until the server's count of response bytes sent stops growing. */
static size_t wait_body_sent_settles(fserver *srv) {
  size_t last = (size_t)-1, now;
  int stable = 0, i;

  for (i = 0; i < 500 && stable < 5; i++) {
    usleep(20000);
    now = fserver_stats(srv).body_sent;
    stable = now == last && now > 0 ? stable + 1 : 0;
    last = now;
  }
  return last;
}

static void stream_reader_that_does_not_read_stops_the_server(void **state) {
  fixture *f = *state;
  grace_grpc_stream *s = stream_start(f, NULL);
  const size_t count = 8000, m = 5 + 1024; /* 8 MiB */
  char text[256], want[8];
  size_t sent, i;
  uint8_t *msg;
  size_t len;

  stream_send_str(s, "flood:8000");
  grace_grpc_stream_close_send(s);
  /* We do not read: the server may send our receive queue's worth
   * (256 KiB) plus one stream window (1 MiB), and no more. */
  sent = wait_body_sent_settles(f->srv);
  assert_true(sent >= GRACE_GRPC_DEFAULT_STREAM_BUFFER);
  assert_true(sent <= GRACE_GRPC_DEFAULT_STREAM_BUFFER + (1u << 20) + m);
  /* Reading lets it go on, to the end, in order. */
  for (i = 0; i < count; i++) {
    assert_int_equal(grace_grpc_stream_recv(s, &msg, &len, 5 * GRACE_SECOND),
                     1);
    assert_int_equal(len, 1024);
    snprintf(want, sizeof(want), "%06zu", i);
    assert_memory_equal(msg, want, 6);
    free(msg);
  }
  assert_int_equal(grace_grpc_stream_recv(s, &msg, &len, 5 * GRACE_SECOND), 0);
  assert_int_equal(stream_finish(s, text, sizeof(text)), 0);
  assert_int_equal(fserver_stats(f->srv).body_sent, count * m);
  stream_free(f, s);
}

static void stream_finish_drops_unread_and_lets_server_end(void **state) {
  fixture *f = *state;
  grace_grpc_stream *s = stream_start(f, NULL);
  char text[256];

  stream_send_str(s, "flood:8000");
  grace_grpc_stream_close_send(s);
  wait_body_sent_settles(f->srv);
  assert_int_equal(stream_finish(s, text, sizeof(text)), 0);
  stream_free(f, s);
}

static void
stream_send_backpressure_from_server_that_does_not_read(void **state) {
  fixture *f = *state;
  grace_grpc_channel_options opts;
  grace_grpc_channel *ch;
  grace_grpc_stream *s;
  static char chunk[4096];
  char text[256], buf[64], want[64];
  int rv, sent = 0, i;
  int64_t t0;

  grace_grpc_channel_options_init(&opts);
  opts.stream_send_buffer = 16 * 1024;
  assert_int_equal(grace_grpc_channel_new(f->target, &opts, &ch), 0);
  pthread_mutex_lock(&f->srv->lock);
  f->srv->manual_window = 1;
  pthread_mutex_unlock(&f->srv->lock);
  assert_int_equal(grace_grpc_stream_start(ch, CALL, NULL, &s), 0);
  memset(chunk, 'c', sizeof(chunk));
  /* The first message is the command, read once the stream ends. */
  assert_int_equal(grace_grpc_stream_send(s, "count:", 6, GRACE_SECOND), 0);
  /* Each send may wait for the I/O thread to move the queue into the
   * window (a loaded machine can take a while); only the one that finds
   * both full waits the whole second. */
  for (;;) {
    rv = grace_grpc_stream_send(s, chunk, sizeof(chunk), GRACE_SECOND);
    if (rv == GRACE_EBUSY)
      break;
    assert_int_equal(rv, 0);
    assert_true(++sent < 1000);
  }
  /* The server's 64 KiB window plus our 16 KiB queue, about. */
  assert_true(sent >= 16 && sent <= 24);
  assert_true(fserver_stats(f->srv).data_recv <= 65535);
  t0 = grace_now();
  assert_int_equal(grace_grpc_stream_send(s, chunk, sizeof(chunk), 0),
                   GRACE_EBUSY);
  assert_true(grace_now() - t0 < 50 * GRACE_MILLISECOND);
  /* The server reads: a waiting send goes through. */
  fserver_release(f->srv);
  for (i = 0; i < 100; i++)
    assert_int_equal(
        grace_grpc_stream_send(s, chunk, sizeof(chunk), 5 * GRACE_SECOND), 0);
  sent += 100;
  grace_grpc_stream_close_send(s);
  assert_int_equal(stream_recv_str(s, buf, sizeof(buf), 5 * GRACE_SECOND), 1);
  snprintf(want, sizeof(want), "%d@1", 11 + sent * (5 + 4096));
  assert_string_equal(buf, want);
  assert_int_equal(stream_finish(s, text, sizeof(text)), 0);
  grace_grpc_stream_free(s);
  grace_grpc_channel_free(ch);
}

typedef struct bg_recv {
  pthread_t thread;
  grace_grpc_stream *s;
  int rv;
  int64_t elapsed;
} bg_recv;

static void *bg_recv_main(void *arg) {
  bg_recv *b = arg;
  char buf[64];
  int64_t t0 = grace_now();

  b->rv = stream_recv_str(b->s, buf, sizeof(buf), -1);
  b->elapsed = grace_now() - t0;
  return NULL;
}

static void stream_cancel_wakes_blocked_reader_and_resets(void **state) {
  fixture *f = *state;
  grace_grpc_stream *s = stream_start(f, NULL);
  char text[256];
  bg_recv b;
  int i;

  /* Not half-closed: the fake server waits for more, forever. */
  stream_send_str(s, "ok:never");
  memset(&b, 0, sizeof(b));
  b.s = s;
  assert_int_equal(pthread_create(&b.thread, NULL, bg_recv_main, &b), 0);
  usleep(100000);
  grace_grpc_stream_cancel(s);
  assert_int_equal(pthread_join(b.thread, NULL), 0);
  assert_int_equal(b.rv, 0);
  assert_int_equal(stream_finish(s, text, sizeof(text)), GRACE_GRPC_CANCELLED);
  assert_string_equal(text,
                      "rpc error: code = Canceled desc = context canceled");
  for (i = 0; i < 500 && fserver_stats(f->srv).rst[NGHTTP2_CANCEL] == 0; i++)
    usleep(10000);
  assert_int_equal(fserver_stats(f->srv).rst[NGHTTP2_CANCEL], 1);
  stream_free(f, s);
}

static void stream_deadline_ends_stream(void **state) {
  fixture *f = *state;
  grace_grpc_stream *s;
  grace_ctx *ctx;
  char buf[64], text[256];
  int64_t t0 = grace_now();

  assert_int_equal(grace_ctx_with_timeout(grace_ctx_background(),
                                          200 * GRACE_MILLISECOND, &ctx),
                   0);
  s = stream_start(f, ctx);
  stream_send_str(s, "hold");
  grace_grpc_stream_close_send(s);
  assert_int_equal(stream_recv_str(s, buf, sizeof(buf), -1), 0);
  assert_true(grace_now() - t0 >= 190 * GRACE_MILLISECOND);
  assert_true(grace_now() - t0 < 2 * GRACE_SECOND);
  assert_int_equal(stream_finish(s, text, sizeof(text)),
                   GRACE_GRPC_DEADLINE_EXCEEDED);
  assert_true(fserver_stats(f->srv).timeout[0] != '\0');
  /* A recv that times out itself is "not now", not the end. */
  stream_free(f, s);
  s = stream_start(f, NULL);
  stream_send_str(s, "ok:never");
  assert_int_equal(stream_recv_str(s, buf, sizeof(buf), 50 * GRACE_MILLISECOND),
                   GRACE_EBUSY);
  assert_int_equal(stream_recv_str(s, buf, sizeof(buf), 0), GRACE_EBUSY);
  stream_free(f, s);
  grace_ctx_cancel(ctx);
  grace_ctx_unref(ctx);
}

static void stream_channel_close_and_invalid_arguments(void **state) {
  fixture *f = *state;
  grace_grpc_stream *s = stream_start(f, NULL), *s2 = NULL;
  char buf[64], text[256];
  uint8_t *m;
  size_t len;
  const grace_grpc_metadata *md;

  assert_int_equal(grace_grpc_stream_start(NULL, CALL, NULL, &s2),
                   GRACE_EINVAL);
  assert_int_equal(grace_grpc_stream_start(f->ch, "nope", NULL, &s2),
                   GRACE_EINVAL);
  assert_int_equal(grace_grpc_stream_start(f->ch, CALL, NULL, NULL),
                   GRACE_EINVAL);
  assert_null(s2);
  assert_int_equal(grace_grpc_stream_send(NULL, "x", 1, 0), GRACE_EINVAL);
  assert_int_equal(grace_grpc_stream_send(s, NULL, 1, 0), GRACE_EINVAL);
  assert_int_equal(grace_grpc_stream_recv(s, NULL, &len, 0), GRACE_EINVAL);
  assert_int_equal(grace_grpc_stream_recv(s, &m, NULL, 0), GRACE_EINVAL);
  assert_int_equal(grace_grpc_stream_trailers(s, NULL, &len), GRACE_EINVAL);
  assert_int_equal(grace_grpc_stream_finish(s, NULL), GRACE_EINVAL);
  assert_int_equal(grace_grpc_stream_close_send(NULL), GRACE_EINVAL);
  grace_grpc_stream_cancel(NULL);
  grace_grpc_stream_free(NULL);

  stream_send_str(s, "ok:never");
  grace_grpc_channel_close(f->ch);
  assert_int_equal(stream_recv_str(s, buf, sizeof(buf), -1), 0);
  assert_int_equal(stream_finish(s, text, sizeof(text)), GRACE_GRPC_CANCELLED);
  assert_string_equal(text,
                      "rpc error: code = Canceled desc = grpc: the client "
                      "connection is closing");
  /* Not ended by trailers: none. */
  assert_int_equal(grace_grpc_stream_trailers(s, &md, &len), 0);
  assert_int_equal(len, 0);
  stream_free(f, s);
  /* A stream started on a closed channel is born finished. */
  s = stream_start(f, NULL);
  assert_int_equal(grace_grpc_stream_send(s, "x", 1, 0), GRACE_ECLOSED);
  assert_int_equal(stream_finish(s, text, sizeof(text)), GRACE_GRPC_CANCELLED);
  stream_free(f, s);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(ok_reply_and_request_headers, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(empty_request_and_response_messages,
                                      setup, teardown),
      cmocka_unit_test_setup_teardown(status_with_percent_encoded_message,
                                      setup, teardown),
      cmocka_unit_test_setup_teardown(trailers_only_error, setup, teardown),
      cmocka_unit_test_setup_teardown(
          deadline_sends_grpc_timeout_and_resets_stream, setup, teardown),
      cmocka_unit_test_setup_teardown(expired_context_fails_before_any_io,
                                      setup, teardown),
      cmocka_unit_test_setup_teardown(cancel_ends_call_at_once, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(
          goaway_completes_in_flight_and_retries_refused, setup, teardown),
      cmocka_unit_test_setup_teardown(
          goaway_notice_sends_new_calls_to_fresh_connection, setup, teardown),
      cmocka_unit_test_setup_teardown(goaway_at_every_handshake_gives_up, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(refused_stream_is_retried_once, setup,
                                      teardown),
      cmocka_unit_test(connection_refused_is_unavailable),
      cmocka_unit_test(silent_server_times_out_the_handshake),
      cmocka_unit_test_setup_teardown(server_closing_mid_call_is_unavailable,
                                      setup, teardown),
      cmocka_unit_test_setup_teardown(oversize_message_is_resource_exhausted,
                                      setup, teardown),
      cmocka_unit_test_setup_teardown(malformed_responses_are_internal, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(http_status_and_reset_mapping, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(large_messages_both_ways, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(concurrent_calls_share_one_connection,
                                      setup, teardown),
      cmocka_unit_test_setup_teardown(close_fails_calls_in_flight, setup,
                                      teardown),
      cmocka_unit_test(free_waits_for_calls_in_flight),
      cmocka_unit_test_setup_teardown(protobuf_helper_round_trip, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(invalid_arguments_and_targets, setup,
                                      teardown),
      cmocka_unit_test(status_helpers),
      cmocka_unit_test_setup_teardown(stream_many_messages_then_trailers, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(stream_error_status_decoded_with_trailers,
                                      setup, teardown),
      cmocka_unit_test_setup_teardown(
          stream_reader_that_does_not_read_stops_the_server, setup, teardown),
      cmocka_unit_test_setup_teardown(
          stream_finish_drops_unread_and_lets_server_end, setup, teardown),
      cmocka_unit_test_setup_teardown(
          stream_send_backpressure_from_server_that_does_not_read, setup,
          teardown),
      cmocka_unit_test_setup_teardown(
          stream_cancel_wakes_blocked_reader_and_resets, setup, teardown),
      cmocka_unit_test_setup_teardown(stream_deadline_ends_stream, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(
          stream_channel_close_and_invalid_arguments, setup, teardown),
  };

  return cmocka_run_group_tests(tests, NULL, NULL);
}
