/*
 * Internals of the HTTP server: the server object, per-loop state, the
 * HTTP/1.1 connection and the request.  Only src/http/ includes this.
 */
#ifndef GRACE_HTTP_INTERNAL_H
#define GRACE_HTTP_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include <llhttp.h>
#include <uv.h>

#include "grace/http.h"
#include "http/h2.h"
#include "http/stream.h"
#include "net/listener.h"
#include "net/loop.h"

/* Event bits raised on loops. */
#define EV_SHUTDOWN 0x1u
#define EV_CLOSE 0x2u

/* Deadline lists of each loop. */
enum { TL_HEADER = 0, TL_IDLE = 1, TL_LINGER = 2, TL_GOAWAY = 3 };

/* How long an HTTP/2 connection waits for the PING ack of its first GOAWAY
 * before it sends the final one (h2o waits 1 s, grpc-go 5 s). */
#define GOAWAY_ACK_MS 1000

/* How long a connection closed after an error keeps reading and discarding
 * what the client still sends, so the close does not turn into a reset
 * that destroys the error response in flight (Go's rstAvoidanceDelay). */
#define LINGER_MS 500

/* Read-ahead a connection keeps while a request is being handled, to see
 * pipelined requests and a vanished client; past it reading pauses. */
#define PENDING_CAP (64 * 1024)

#define READ_BUF_SIZE (64 * 1024)

typedef struct route {
  char *pattern;
  size_t len;
  int subtree;
  grace_http_handler handler;
  void *data;
} route;

typedef struct hook {
  grace_http_cb fn;
  void *data;
} hook;

/* A growable byte buffer with a hard cap (curl's dynbuf idea). */
typedef struct dbuf {
  char *p;
  uint32_t len, cap;
} dbuf;

typedef struct h1loop {
  grace_http_server *srv;
  grace__loop *loop;
  grace__list conns;  /* every connection of this loop */
  char *rbuf;         /* shared read buffer: idle connections hold none */
  char date[40];      /* cached Date header value */
  int64_t date_sec;
  int shutting_down;
  int closing;
} h1loop;

/* Connection flags. */
enum {
  CF_IN_HANDLER = 1 << 0, /* a request is with the handler */
  CF_WRITING = 1 << 1,    /* a response is being written */
  CF_CLOSE_AFTER = 1 << 2,/* close once the current response is written */
  CF_PEER_EOF = 1 << 3,   /* the client closed its side */
  CF_CLOSED = 1 << 4,     /* socket closed; the struct waits for its request */
  CF_LINGER = 1 << 5,     /* write side shut, draining input before close */
  CF_READ_PAUSED = 1 << 6,/* read-ahead full */
  CF_PARSER_PAUSED = 1 << 7,
  CF_SEEN_BYTES = 1 << 8, /* some request bytes were ever received */
  CF_H2_BUSY = 1 << 9  /* inside a call into h2.c: no pull, no close */
};

typedef struct h1conn {
  uv_poll_t poll;
  h1loop *hl;
  grace__list link;      /* in hl->conns */
  grace__tnode timeout;  /* in at most one deadline list */
  grace__post handoff;   /* acceptor loop -> owning loop */
  uint64_t id;
  int fd;
  uint16_t flags;
  uint8_t state; /* grace_conn_state */
  int events;    /* UV_READABLE / UV_WRITABLE being polled */
  llhttp_t parser;
  struct grace_http_request *req; /* being read, handled or written */
  dbuf pending;                   /* bytes read but not yet parsed */
  char *wbuf;                     /* response being written */
  uint32_t wlen, woff;
  grace__h2 *h2;   /* set once the connection speaks HTTP/2 */
  uint32_t nreqs;  /* HTTP/2 requests with handlers */
} h1conn;

struct grace_http_request {
  h1conn *conn;
  grace__h2_stream *stream; /* HTTP/2: the stream, NULL once it closed */
  uint8_t is_h2;
  uint8_t streaming;        /* owned by the stream hooks (stream.h) */
  void *user;               /* the stream hooks' pointer */
  grace_http_server *srv;
  grace__post done;         /* answered from another thread */
  dbuf head; /* target\0(name\0value\0)* path\0method\0 */
  dbuf body;
  uint32_t method_off;
  uint32_t headers_off;
  uint32_t headers_end;
  uint32_t path_off;
  uint16_t nheaders;
  uint8_t minor;
  uint8_t in_value;         /* the last header callback was a value */
  uint8_t complete;
  uint8_t keep_alive;
  uint8_t is_head;
  uint8_t cancelled;
  uint8_t abandoned;
  int error_status;         /* 400/413/431 found while parsing */
  /* the answer */
  int status;
  dbuf resp_headers;        /* "Name: value\r\n"... */
  int has_content_type;
  char *resp_body;          /* copied when answered off the loop thread */
  size_t resp_len;
  grace_ctx *ctx;
  grace_http_handler on_cancel;
  void *on_cancel_data;
};

struct grace_http_server {
  grace_http_options opts;
  grace__loopset set;
  h1loop *hls;
  route *routes;
  size_t nroutes;
  hook *hooks;
  size_t nhooks;
  int *listen_fds;            /* before start */
  grace__listener *listeners; /* after start, owned by loop 0 */
  unsigned nlisteners;
  int *ports;
  atomic_uint next_loop;
  atomic_uint_fast64_t next_id;
  atomic_int started;
  atomic_int shutdown;
  atomic_int listeners_closed;
  atomic_int drained;
  atomic_int closed;
  atomic_long nconns; /* live connections, all loops */
  grace_ctx *shutdown_ctx;
  grace_ctx *force_ctx;
  int drained_fd;
  grace__stream_hooks stream_hooks; /* on_start NULL: none */
  grace_http_cb drained_cb;
  void *drained_data;
  pthread_mutex_t lock;
  pthread_cond_t cond;
  unsigned loops_acked; /* loops that finished an EV_CLOSE */
  int cut;
  /* stats */
  atomic_uint_fast64_t st_accepted, st_active, st_idle, st_requests,
      st_inflight, st_cut, st_idle_closed;
};

/* h1.c: the connection state machine. */
void grace__h1_adopt(h1loop *hl, h1conn *c);
h1conn *grace__h1_conn_new(grace_http_server *srv, int fd);
void grace__h1_shutdown(h1loop *hl);
int grace__h1_close_all(h1loop *hl);
void grace__h1_expire(h1loop *hl, unsigned list, grace__tnode *node);
void grace__h1_finish(grace_http_request *req);
void grace__h1_conn_dec(grace_http_server *srv);
void grace__h1_check_drained(grace_http_server *srv);
void grace__conn_set_state(h1conn *c, grace_conn_state st);
void grace__conn_poll(h1conn *c, int events);
void grace__conn_close(h1conn *c);
int grace__conn_closing(const h1conn *c);
void grace__conn_free(h1conn *c);
void grace__req_cancel(grace_http_request *req);

/* h2conn.c: HTTP/2 on a connection (prior knowledge, RFC 9113 3.3). */
/* 1: the bytes open an HTTP/2 connection; 0: they do not; -1: too few
 * bytes to tell. */
int grace__h2c_is_preface(const char *data, size_t n);
void grace__h2c_start(h1conn *c, const char *data, size_t n);
void grace__h2c_read(h1conn *c, const char *data, size_t n);
void grace__h2c_flush(h1conn *c);
void grace__h2c_write_done(h1conn *c);
void grace__h2c_answer(grace_http_request *req);
void grace__h2c_shutdown(h1conn *c);
void grace__h2c_expire(h1conn *c, unsigned list);
int grace__h2c_force_close(h1conn *c);
void grace__h2c_teardown(h1conn *c);

/* request.c */
grace_http_request *grace__req_new(h1conn *c);
void grace__req_free(grace_http_request *req);
int grace__dbuf_reserve(dbuf *b, size_t n, size_t max);
int grace__dbuf_append(dbuf *b, const void *p, size_t n, size_t max);
void grace__dbuf_free(dbuf *b);
int grace__req_serialize(grace_http_request *req, h1loop *hl,
                         const char *body, size_t len, int close,
                         char **out, uint32_t *outlen);
void grace__req_finish_head(grace_http_request *req, const char *method);
void grace__route(grace_http_request *req);

#endif /* GRACE_HTTP_INTERNAL_H */
