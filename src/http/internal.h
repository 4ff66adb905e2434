/*
 * Internals of the HTTP server.  Only src/http/ includes this.
 *
 * The layers, each using only those below it:
 *
 *   server.c    options, routes, listeners, loops, shutdown and close
 *   h1.c        HTTP/1.1 as a protocol on a grace__conn (net/conn.h):
 *               llhttp for the head, h1_body.c for the body framing
 *   h2conn.c    HTTP/2 as a protocol on a grace__conn, over the sans-I/O
 *               session of h2.c
 *   request.c   the exchange both protocols hand to handlers: request
 *               fields, the answer, routing, cancellation
 *   net/conn.c  the transport: socket, read-ahead, write queue, timers
 *
 * request.c never calls into h1.c or h2conn.c by name: an exchange carries
 * its protocol's operations (grace__exch_ops), so there is no cycle.
 */
#ifndef GRACE_HTTP_INTERNAL_H
#define GRACE_HTTP_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include <uv.h>

#include "core/clock_int.h"
#include "grace/http.h"
#include "http/h2.h"
#include "http/stream.h"
#include "net/conn.h"
#include "net/listener.h"
#include "net/loop.h"
#include "net/server.h"

/* How long an HTTP/2 connection waits for the PING ack of its first GOAWAY
 * before it sends the final one (h2o waits 1 s, grpc-go 5 s). */
#define GRACE__GOAWAY_ACK_MS 1000

/* When a close spread's window ends, an idle HTTP/1.1 connection that was
 * answered during the window is not closed at once: its client is using
 * it and may be sending its next request at that very moment (one that
 * was starved of CPU past its connection's moment, say), and a close would
 * fail that request.  It gets this long more for it (the answer says
 * Connection: close).  One idle since before the shutdown began is closed
 * at the window's end, as an idle timeout would close it. */
#define GRACE__LAST_CALL_MS 250

/* Most request header fields (Apache's LimitRequestFields); more is 431. */
#define GRACE__MAX_HEADER_FIELDS 100

/* Bytes a connection may have queued for writing before HTTP/1.1 stops
 * reading the next pipelined request and HTTP/2 stops reading frames:
 * a peer that does not read costs at most about this much. */
#define GRACE__WRITE_HIGH (256 * 1024)

typedef struct grace__http_route {
  char *pattern;
  size_t len;
  int subtree;
  int stream; /* the handler reads the body as it arrives */
  grace_http_handler handler;
  void *data;
} grace__http_route;

typedef struct grace__http_hook {
  grace_http_cb fn;
  void *data;
} grace__http_hook;

/* A growable byte buffer with a hard cap (curl's dynbuf idea). */
typedef struct grace__dbuf {
  char *p;
  uint32_t len, cap;
} grace__dbuf;

/* Per-loop state of a server: the shared layer's, and the Date cache. */
typedef struct grace__http_loop {
  grace__server_loop base;
  char date[40]; /* cached Date header value */
  int64_t date_sec;
} grace__http_loop;

/* The HTTP state of the loop |c| lives on, or NULL (a memory
 * connection). */
static inline grace__http_loop *grace__http_loop_of(const grace__conn *c) {
  grace__loop *loop = grace__conn_get_loop(c);
  return loop != NULL && loop->data != NULL
             ? grace__container_of(loop->data, grace__http_loop, base)
             : NULL;
}

typedef struct grace__wait_write grace__wait_write;

/* What the protocol under an exchange does with it; on the loop thread. */
typedef struct grace__exch_ops {
  /* The handler answered (or abandoned) |req| at once: the protocol sends
   * the whole answer and frees |req|. */
  void (*finish)(grace_http_request *req);
  /* A streamed answer: the head goes out (req->status, the fields). */
  int (*start)(grace_http_request *req);
  /* |n| bytes of body: 0, GRACE_EBUSY (nothing taken; the protocol calls
   * grace__req_writable when it may go on), or an error. */
  int (*write)(grace_http_request *req, const void *p, size_t n);
  /* The streamed answer ends (trailers); the protocol frees |req|. */
  void (*end)(grace_http_request *req);
  /* The handler reads (or resumes reading) a streamed body: deliver what
   * is held, then go on reading. */
  void (*read_body)(grace_http_request *req);
} grace__exch_ops;

struct grace_http_request {
  grace__conn *conn; /* referenced while a handler holds the request */
  void *proto;       /* the protocol's per-connection state */
  const grace__exch_ops *ops;
  grace_http_server *srv;
  grace__http_loop *hl;
  grace__h2_stream *stream; /* HTTP/2: the stream, NULL once it closed */
  uint8_t is_h2;
  uint8_t streaming; /* owned by the stream hooks (stream.h) */
  void *user;        /* the stream hooks' pointer */
  grace__post done;  /* answered from another thread */
  grace__dbuf head;  /* target\0(name\0value\0)* path\0method\0 */
  grace__dbuf body;
  uint32_t method_off;
  uint32_t headers_off;
  uint32_t headers_end;
  uint32_t path_off;
  uint16_t nheaders;
  uint8_t minor;
  uint8_t in_value; /* the last header callback was a value */
  uint8_t complete;
  uint8_t keep_alive;
  uint8_t is_head;
  uint8_t abandoned;
  uint8_t with_handler; /* handed to a handler: holds a conn ref */
  uint8_t counted;      /* in st_inflight */
  atomic_int cancelled;
  int error_status; /* 400/413/431 found while parsing */
  /* the answer */
  int status;
  grace__dbuf resp_fields; /* name\0value\0 ... */
  uint16_t nresp;
  uint8_t has_content_type;
  char *resp_body;
  size_t resp_len;
  _Atomic(grace_ctx *) ctx;
  grace_http_handler on_cancel;
  void *on_cancel_data;
  const struct grace__http_route *route;
  uint8_t routed;
  /* a streamed answer */
  uint8_t resp_started;
  uint8_t resp_ended;
  uint8_t resp_chunked;  /* HTTP/1.1: chunked framing */
  uint8_t resp_no_body;  /* HEAD, 204, 304: writes are not sent */
  uint8_t resp_close;    /* HTTP/1.x: close after it */
  uint8_t want_writable; /* a write got GRACE_EBUSY */
  grace_http_handler on_writable;
  void *on_writable_data;
  grace__wait_write *wait; /* a write from another thread, pending */
  grace__dbuf trailers;    /* name\0value\0 ... */
  uint16_t ntrailers;
  /* a streamed body */
  uint8_t stream_body;
  uint8_t body_paused;
  uint8_t body_ended; /* its end was delivered */
  grace_http_body_cb on_body;
  void *on_body_data;
  grace__dbuf held; /* HTTP/2: arrived while paused */
  uint8_t held_end;
  uint8_t in_cb;        /* inside its body callback */
  uint8_t free_pending; /* ended there: freed when it returns */
};

struct grace_http_server {
  grace__server sv; /* listeners, loops, shutdown, drain, close */
  grace_http_options opts;
  grace__http_loop *hls;
  grace__http_route *routes;
  size_t nroutes;
  grace__http_hook *hooks; /* under sv.lock */
  size_t nhooks;
  grace_ctx *shutdown_ctx;
  grace_ctx *force_ctx;
  grace__stream_hooks stream_hooks; /* on_start NULL: none */
  size_t h2_send_buffer;            /* per stream; 0: h2.c's default */
  grace_http_cb drained_cb;
  void *drained_data;
  /* Embedded mode: what grace_http_server_shutdown_uv reports to. */
  void (*uv_done)(grace_http_server *srv, int status, int cut, void *data);
  void *uv_done_data;
  /* stats */
  atomic_uint_fast64_t st_requests, st_inflight;
};

/* True when the caller is on one of |srv|'s loop threads (the caller's
 * own thread for an embedded server). */
int grace__http_server_on_loop(grace_http_server *srv);

/* ---- server.c: the close spread ----------------------------------------- */

/* Installs the clock the close spread reads (tests); before the shutdown
 * begins. */
void grace__http_server_set_clock(grace_http_server *srv,
                                  const grace__clock *clock);

/* Opens the close spread's window now (grace_http_server_shutdown_begin
 * calls it; a test of a server never started calls it itself before it
 * shuts its memory connections down). */
void grace__http_spread_begin(grace_http_server *srv);

/* Where HTTP/1.1 connection |conn_id| of |srv| on |hl| (NULL: a memory
 * connection) stands once the graceful shutdown has reached it:
 * GRACE__DRAIN_NONE before its moment in the close spread, _DUE from it,
 * _NOW once the window is over or when there is no spread. */
int grace__http_drain_stage(const grace_http_server *srv,
                            const grace__http_loop *hl, uint64_t conn_id);

/* How long after the window opens the moment of connection |conn_id|
 * comes: spread over the window's first nine tenths by the golden ratio
 * (consecutive connections fall far apart), so the last tenth leaves a
 * busy connection time to be told before idle ones are closed. */
grace_duration grace__http_spread_offset(const grace_http_server *srv,
                                         uint64_t conn_id);

/* ---- h1.c: HTTP/1.1 on a connection ------------------------------------- */

/* HTTP/1.1 while a request is read or answered; it switches to HTTP/2
 * when a new connection's first bytes are the client preface. */
extern const grace__conn_proto grace__h1_proto;

/* The protocol every accepted connection starts with (its pdata is the
 * grace_http_server): a connection that has sent nothing yet, or a
 * keep-alive one between requests, holds no protocol state at all; its
 * next bytes allocate the HTTP/1.1 state (grace__h1_proto) again. */
extern const grace__conn_proto grace__h1_idle_proto;

/* The close spread's window is over: |c|, if it speaks HTTP/1.1 and is
 * shutting down, is drained as a shutdown without a spread drains it at
 * once (idle: served what it sent, else closed). */
void grace__h1_spread_over(grace__conn *c);

/* ---- h2conn.c: HTTP/2 on a connection (prior knowledge, RFC 9113 3.3) -- */

/* 1: the bytes open an HTTP/2 connection; 0: they do not; -1: too few
 * bytes to tell. */
int grace__h2c_is_preface(const char *data, size_t n);

/* Switches |c| to HTTP/2.  Returns 0, or a negative error (|c| is then
 * closed). */
int grace__h2c_start(grace__conn *c, grace_http_server *srv,
                     grace__http_loop *hl);

/* ---- request.c: the exchange --------------------------------------------- */

grace_http_request *grace__req_new(grace_http_server *srv, grace__http_loop *hl,
                                   grace__conn *c, void *proto,
                                   const grace__exch_ops *ops);
void grace__req_free(grace_http_request *req);
/* Hands |req| to its handler (routing); counts it in flight and keeps
 * its connection referenced until the answer. */
void grace__req_dispatch(grace_http_request *req);
/* The request is no longer in flight (its answer is being written). */
void grace__req_uncount(grace_http_request *req);
/* The protocol is done with an answered request: the counters and the
 * connection's reference, then frees it. */
void grace__req_done(grace_http_request *req);
/* The client went away or the server is closing: cancels the context and
 * runs the cancel callback (which may answer and free |req|). */
void grace__req_cancel(grace_http_request *req);
void grace__req_finish_head(grace_http_request *req, const char *method);
/* The route of |req| (found once), NULL for none (404). */
const struct grace__http_route *grace__req_route(grace_http_request *req);
/* 1 when the route of |req| reads its body as it arrives. */
int grace__req_streams_body(grace_http_request *req);
/* Writing may go on: retries a waiting write or runs on_writable. */
void grace__req_writable(grace_http_request *req);
/* Fails a write waiting from another thread (the exchange is gone). */
void grace__req_fail_wait(grace_http_request *req);
/* Hands a piece of a streamed body to the handler's callback.  Returns 1
 * when it was taken, 0 when the handler is not reading (not yet, or
 * paused): the protocol holds it and pauses the peer; -1 when the handler
 * ended the exchange from the callback: |req| is freed. */
int grace__req_deliver(grace_http_request *req, const void *p, size_t n,
                       int end);
/* Walks the trailers of a streamed answer. */
int grace__req_trailer_next(const grace_http_request *req, size_t *iter,
                            const char **name, const char **value);
/* The status the answer goes out with: 500 in place of one HTTP cannot
 * carry as a final status (below 200 or above 599), on both versions. */
int grace__req_status(const grace_http_request *req);
/* 1 when the status forbids a body (204, 304). */
int grace__status_no_body(int status);
/* Walks the answer's header fields (|*iter| from 0). */
int grace__req_resp_next(const grace_http_request *req, size_t *iter,
                         const char **name, const char **value);
/* 1 for the fields the library alone writes: Content-Length,
 * Transfer-Encoding, Connection, Keep-Alive, Upgrade, and the rest
 * HTTP/2 forbids; a handler's values for them are ignored. */
int grace__is_framing_field(const char *name);
const char *grace__date_header(grace__http_loop *hl);

int grace__dbuf_reserve(grace__dbuf *b, size_t n, size_t max);
int grace__dbuf_append(grace__dbuf *b, const void *p, size_t n, size_t max);
void grace__dbuf_free(grace__dbuf *b);

#endif /* GRACE_HTTP_INTERNAL_H */
