/*
 * grace: an HTTP/1.1 server with net/http-grade graceful shutdown.
 *
 * The server runs one libuv event loop per thread (one per core by
 * default).  The first loop accepts connections and hands them out round
 * robin; each connection then lives on one loop for its whole life.
 *
 * Lifecycle, Go's http.Server in C:
 *
 *   grace_http_options opts;
 *   grace_http_options_init(&opts);
 *   grace_http_server *srv;
 *   grace_http_server_new(&opts, &srv);
 *   grace_http_server_handle(srv, "/sleep", sleep_handler, NULL);
 *   grace_http_server_listen(srv, ":8000");
 *   grace_http_server_start(srv);
 *   grace_ctx_wait(grace_signal_context(), -1);
 *   grace_ctx_with_timeout(grace_ctx_background(), 10 * GRACE_SECOND, &ctx);
 *   if (grace_http_server_shutdown(srv, ctx) != 0)
 *     grace_http_server_close(srv);
 *   grace_http_server_free(srv);
 *
 * Shutdown (grace_http_server_shutdown or _shutdown_begin):
 *  1. every listener is closed at once (connections waiting in the accept
 *     queue are accepted first, so a client that connected before the
 *     shutdown is not reset);
 *  2. the hooks registered with grace_http_server_on_shutdown run on the
 *     calling thread, while the loops go on with step 3;
 *  3. idle keep-alive connections, and new connections that have sent
 *     nothing, are closed at once (bytes already received are served
 *     first); every in-flight response carries "Connection: close" and its
 *     connection is closed right after it.  With a close spread
 *     (grace_http_options.close_spread) HTTP/1.1 connections are instead
 *     closed one by one over that window, each by a response that carries
 *     "Connection: close", and only what is idle at its end is closed
 *     unasked (one answered during the window, whose client is using it,
 *     gets 250 ms more for its next request first); HTTP/2 connections get
 *     their GOAWAY at once either way;
 *  4. completion is reported the moment the last connection closes: no
 *     polling interval, no timer tick.
 * grace_http_server_close drops whatever is left.
 *
 * Dependencies: this header needs no other library's header.  The server
 * runs on libuv, which the library links; a handler that uses the loop of
 * grace_http_request_loop (a timer that answers later) includes <uv.h> and
 * links libuv itself (pkg-config libuv).
 */
#ifndef GRACE_HTTP_H
#define GRACE_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <sys/socket.h>

#include "grace/context.h"
#include "grace/duration.h"
#include "grace/error.h"
#include "grace/tls.h"

#ifdef __cplusplus
extern "C" {
#endif

/* libuv's loop (uv_loop_t of <uv.h>), declared here so that this header
 * does not need <uv.h>. */
struct uv_loop_s;

typedef struct grace_http_server grace_http_server;

/*
 * One request/response exchange.  It is handed to a handler, which owns it
 * until it calls grace_http_respond or grace_http_request_abandon exactly
 * once; after that call the pointer is invalid.
 */
typedef struct grace_http_request grace_http_request;

/* Connection states, as Go's http.ConnState. */
typedef enum grace_conn_state {
  GRACE_CONN_NEW = 0, /* accepted, no byte of a request read yet */
  GRACE_CONN_ACTIVE,  /* a request is being read, handled or answered */
  GRACE_CONN_IDLE,    /* keep-alive, waiting for the next request */
  GRACE_CONN_CLOSED   /* closed; the last state a connection reports */
} grace_conn_state;

/* Returns "new", "active", "idle" or "closed". */
GRACE_EXTERN const char *grace_conn_state_name(grace_conn_state state);

/*
 * A request handler.  Called on the loop thread of the connection once the
 * request (headers and body) has been read.  It may answer at once, or keep
 * |req| and answer later from a timer on grace_http_request_loop(req) or
 * from any other thread.
 */
typedef void (*grace_http_handler)(grace_http_request *req, void *data);

/*
 * Called on the connection's loop thread at every state change.  |conn_id|
 * is unique for the server's lifetime.  Must not block.
 */
typedef void (*grace_http_conn_state_cb)(uint64_t conn_id,
                                         grace_conn_state state, void *data);

/* A shutdown hook or a completion callback. */
typedef void (*grace_http_cb)(grace_http_server *srv, void *data);

typedef struct grace_http_options {
  /* Event-loop threads; 0 means one per available core. */
  unsigned loops;
  /* Time allowed to read a request's headers, from its first byte (or
   * from the accept for a new connection); 0 disables it.  Default 10 s. */
  grace_duration read_header_timeout;
  /* How long a keep-alive connection may wait for its next request; 0
   * disables it.  Default 120 s. */
  grace_duration idle_timeout;
  /* Longest pause between two reads of a request body (nginx's
   * client_body_timeout): a body that stalls longer is cut (408, counted
   * in requests_cut).  On HTTP/2, a stream whose body stalls is reset.
   * 0 disables it.  Default 60 s. */
  grace_duration body_timeout;
  /* Longest pause between two writes that make progress (nginx's
   * send_timeout), also an HTTP/2 flow-control window that stays at 0: a
   * client that stops reading is cut (counted in requests_cut).  0
   * disables it.  Default 60 s. */
  grace_duration send_timeout;
  /* Spreads the closing of HTTP/1.1 keep-alive connections over this long
   * once a graceful shutdown begins (HAProxy's close-spread-time, Envoy's
   * drain time), so that an idle connection is not closed under a request
   * its client is sending at that instant, and clients do not all
   * reconnect at once.  Each connection gets its own moment in the window
   * (spread over its first nine tenths); answers that start before it
   * keep the connection alive as if no shutdown had begun; the first
   * answer that starts after it carries "Connection: close" and the
   * connection closes after it.  Requests arriving on an idle connection
   * during the window are served normally.  At the window's end, every
   * HTTP/1.1 connection still idle is closed (one that was answered during
   * the window first gets 250 ms more for its next request, since its
   * client is using it) and every answer still to start carries
   * "Connection: close", as without a spread.  HTTP/2
   * connections (prior knowledge, gRPC) get their GOAWAY at once whatever
   * this says.  The timeouts keep running during the window; the drain
   * still completes the moment the last connection closes (before the
   * window ends if nothing is left); grace_http_server_close cuts
   * everything at once.  0 (the default): idle connections are closed
   * the moment shutdown begins.  Negative is GRACE_EINVAL. */
  grace_duration close_spread;
  /* Largest request line plus headers; larger gets 431.  Default 64 KiB. */
  size_t max_header_bytes;
  /* Largest request body; larger gets 413.  Default 1 MiB. */
  size_t max_body_bytes;
  /* Serve HTTP/2 only (prior knowledge, as grpc-go and nghttpd do): a
   * connection that does not open with the HTTP/2 client preface is a
   * connection error (GOAWAY PROTOCOL_ERROR, RFC 9113 section 3.4)
   * instead of an HTTP/1.1 request.  Default false: both on one port. */
  bool h2_only;
  /* listen(2) backlog.  Default 511. */
  int backlog;
  /* Optional connection state observer and its data. */
  grace_http_conn_state_cb conn_state;
  void *conn_state_data;
  /* Serve HTTPS: every connection runs TLS with this configuration
   * (grace/tls.h), ALPN choosing HTTP/2 or HTTP/1.1.  The server holds
   * its own reference until it is freed; a reload of |tls| applies to
   * the server's new connections.  Its handshake_timeout bounds each
   * handshake.  NULL (the default): plaintext. */
  grace_tls *tls;
} grace_http_options;

/* Fills |opts| with the defaults documented above. */
GRACE_EXTERN void grace_http_options_init(grace_http_options *opts);

/*
 * Creates a server; |opts| is copied (NULL means defaults).  Ignores
 * SIGPIPE for the process.  Returns 0 and stores the server in |*out|, or:
 *
 * GRACE_EINVAL  |out| is NULL, or an option is out of range
 * GRACE_ENOMEM  out of memory
 */
GRACE_EXTERN int grace_http_server_new(const grace_http_options *opts,
                                       grace_http_server **out);

/*
 * Routes |pattern| to |handler| with Go ServeMux rules: a pattern ending in
 * '/' matches its whole subtree, any other pattern the exact path; the
 * longest match wins.  Requests no route matches get 404.  |pattern| is
 * copied.  Only before grace_http_server_start.  Returns 0 or GRACE_EINVAL,
 * GRACE_ENOMEM, GRACE_ESTATE (already started).
 */
GRACE_EXTERN int grace_http_server_handle(grace_http_server *srv,
                                          const char *pattern,
                                          grace_http_handler handler,
                                          void *data);

/*
 * Opens a listening TCP socket on |addr|, Go style: "host:port", ":port"
 * (every address), "[::1]:port"; port 0 picks a free port (see
 * grace_http_server_port).  May be called several times.  Only before
 * grace_http_server_start.  Returns 0 or a negative error: GRACE_EINVAL
 * (bad address text), GRACE_EADDRINUSE, another bind/listen errno,
 * GRACE_ESTATE.
 */
GRACE_EXTERN int grace_http_server_listen(grace_http_server *srv,
                                          const char *addr);

/*
 * Adopts an already listening socket |fd| (systemd socket activation, a
 * predecessor's hand-over).  Ownership of |fd| is transferred on success.
 * Returns 0, GRACE_EINVAL (not a listening stream socket), GRACE_ESTATE.
 */
GRACE_EXTERN int grace_http_server_listen_fd(grace_http_server *srv, int fd);

/*
 * Returns the local port of listener number |index| (in the order they
 * were added), or a negative error if there is no such listener.
 */
GRACE_EXTERN int grace_http_server_port(grace_http_server *srv,
                                        unsigned index);

/*
 * Registers |hook| to run when shutdown begins, on the thread that calls
 * shutdown, after the listeners are closed; hooks run in registration
 * order and must not block for long (Go's RegisterOnShutdown).
 * Returns 0 or GRACE_ENOMEM, GRACE_EINVAL.
 */
GRACE_EXTERN int grace_http_server_on_shutdown(grace_http_server *srv,
                                               grace_http_cb hook, void *data);

/*
 * Starts the loop threads.  Returns at once with 0, or GRACE_ESTATE (no
 * listener, or already started), or a negative system error.
 */
GRACE_EXTERN int grace_http_server_start(grace_http_server *srv);

/*
 * Raises the close spread (grace_http_options.close_spread) of |srv| to
 * |d| if |d| is larger: a program that is handing over to a successor
 * (grace/upgrade.h) asks for one just before it begins the drain.  Any
 * thread, before grace_http_server_shutdown_begin; a later call does not
 * change a shutdown that has begun.  NULL-safe.
 */
GRACE_EXTERN void grace_http_server_set_close_spread(grace_http_server *srv,
                                                     grace_duration d);

/*
 * Begins a graceful shutdown and returns once every listener is closed
 * and the hooks have run.  |drained| (may be NULL) is called once, on a
 * loop thread, the moment the last connection has closed; the server's
 * drained descriptor (grace_http_server_drained_fd) becomes readable at the
 * same moment.  Calling it again does nothing and returns GRACE_ESHUTDOWN.
 * Returns 0, GRACE_ESTATE (not started), GRACE_ESHUTDOWN, GRACE_EDEADLK
 * (called on the thread of the loop that closes the listeners, which it
 * would wait for; on the loop of a server started with
 * grace_http_server_start_uv it acts at once instead, grace/uv.h).
 */
GRACE_EXTERN int grace_http_server_shutdown_begin(grace_http_server *srv,
                                                  grace_http_cb drained,
                                                  void *data);

/*
 * Go's Server.Shutdown: begins the shutdown if it has not begun, then
 * blocks until every connection has closed (returns 0) or |ctx| is done
 * (returns grace_ctx_err(ctx): GRACE_ETIMEDOUT or GRACE_ECANCELED), the
 * connections left open then.  |ctx| NULL waits without limit.  On one of
 * the server's own loop threads it returns GRACE_EDEADLK at once (it would
 * wait for the loop it stops; grace_http_server_shutdown_uv of grace/uv.h
 * is the form for a server on the caller's loop).
 */
GRACE_EXTERN int grace_http_server_shutdown(grace_http_server *srv,
                                            grace_ctx *ctx);

/*
 * A descriptor that becomes readable once shutdown has begun and the last
 * connection has closed.  Owned by the server.
 */
GRACE_EXTERN int grace_http_server_drained_fd(grace_http_server *srv);

/*
 * Closes every listener and drops every connection at once (Go's
 * Server.Close).  Requests still held by handlers are cancelled: their
 * contexts are cancelled and their cancel callbacks run; their answers will
 * be discarded.  Blocks until every connection's socket is closed.
 * Returns the number of requests that were cut (in flight at the call), or
 * GRACE_EDEADLK on one of the server's loop threads (on the loop of a
 * server started with grace_http_server_start_uv it cuts at once).
 */
GRACE_EXTERN int grace_http_server_close(grace_http_server *srv);

/*
 * Stops the loops and frees the server.  Closes the server first if it is
 * still running.  Every request handed to a handler must have been
 * answered or abandoned before this call (a cancelled request's handler
 * answers it from its cancel callback).  NULL-safe.
 */
GRACE_EXTERN void grace_http_server_free(grace_http_server *srv);

/*
 * A context cancelled the moment shutdown begins: long-lived handlers
 * (streams, long polls) watch it to finish early.  Borrowed from the
 * server; valid until grace_http_server_free.
 */
GRACE_EXTERN grace_ctx *grace_http_server_shutdown_ctx(grace_http_server *srv);

/* Counters, read at any time from any thread (each value is atomic). */
typedef struct grace_http_stats {
  uint64_t conns_accepted;
  uint64_t conns_open;        /* currently open connections */
  uint64_t conns_active;      /* of which active */
  uint64_t conns_idle;        /* of which idle */
  uint64_t requests_total;    /* requests handed to handlers or answered */
  uint64_t requests_inflight; /* handed to handlers, not yet answered */
  uint64_t requests_cut;      /* cancelled by close or a vanished client */
  uint64_t accept_backoffs;   /* times accept backed off on EMFILE/ENFILE */
  uint64_t idle_closed_on_shutdown;
  uint64_t timeouts; /* connections cut by the body or send timeout */
} grace_http_stats;

GRACE_EXTERN void grace_http_server_stats(grace_http_server *srv,
                                          grace_http_stats *out);

/* ---- Requests ---------------------------------------------------------- */

/* The method ("GET"), NUL terminated, borrowed from |req|. */
GRACE_EXTERN const char *grace_http_request_method(grace_http_request *req);

/* The request target as received ("/sleep?duration=5s"), borrowed. */
GRACE_EXTERN const char *grace_http_request_target(grace_http_request *req);

/* The path, percent-decoded, without the query ("/sleep"), borrowed. */
GRACE_EXTERN const char *grace_http_request_path(grace_http_request *req);

/*
 * Finds query parameter |key| and copies its decoded value (%XX and '+'
 * decoded) into |buf| (NUL terminated, truncated to |len|).  Returns the
 * full decoded length (may exceed |len| - 1), or GRACE_ENOENT if the key is
 * absent.  Go's r.FormValue gives "" for a missing key; callers wanting
 * that treat GRACE_ENOENT as an empty value.
 */
GRACE_EXTERN int grace_http_request_query(grace_http_request *req,
                                          const char *key, char *buf,
                                          size_t len);

/*
 * The first value of header |name| (case-insensitive), borrowed, or NULL.
 */
GRACE_EXTERN const char *grace_http_request_header(grace_http_request *req,
                                                   const char *name);

/* The body (may be empty, never NULL) and its length, borrowed. */
GRACE_EXTERN const void *grace_http_request_body(grace_http_request *req,
                                                 size_t *len);

/* 0 for HTTP/1.0, 1 for HTTP/1.1. */
GRACE_EXTERN int grace_http_request_minor(grace_http_request *req);

/*
 * The loop the request's connection lives on: a handler that answers later
 * may start libuv timers on it (and must close them itself).  A uv_loop_t *
 * (include <uv.h> to use it).
 */
GRACE_EXTERN struct uv_loop_s *
grace_http_request_loop(grace_http_request *req);

/*
 * The server the request arrived at.
 */
GRACE_EXTERN grace_http_server *
grace_http_request_server(grace_http_request *req);

/*
 * A context cancelled when the client goes away (EOF, reset) or the server
 * is closed; Go's r.Context().  Borrowed; valid until the request is
 * answered.  Returns NULL only if out of memory.
 */
GRACE_EXTERN grace_ctx *grace_http_request_ctx(grace_http_request *req);

/*
 * Registers |cb| to run once on the loop thread if the request is
 * cancelled (see grace_http_request_ctx) before it is answered; an
 * asynchronous handler uses it to stop its timers and call
 * grace_http_request_abandon.  Only from the loop thread (in the handler).
 */
GRACE_EXTERN void grace_http_request_on_cancel(grace_http_request *req,
                                               grace_http_handler cb,
                                               void *data);

/*
 * Adds a response header; |name| and |value| are copied.  Content-Length,
 * Date and Connection are set by the server.  Returns 0, GRACE_EINVAL (a
 * name that is not a token of RFC 9110 (letters, digits and
 * !#$%&'*+-.^_`|~), or a control character other than a tab in the value:
 * CR and LF would split the answer), GRACE_ENOMEM.
 */
GRACE_EXTERN int grace_http_response_header(grace_http_request *req,
                                            const char *name,
                                            const char *value);

/*
 * Answers |req| with |status| and |body| (copied; NULL with len 0 for
 * none).  Content-Type defaults to "text/plain; charset=utf-8" when a body
 * is sent and none was set.  Callable from any thread, exactly once per
 * request; |req| is invalid afterwards.  If the request was cancelled the
 * answer is discarded.  Returns 0, or GRACE_ENOMEM (the connection is then
 * closed; |req| is still consumed).
 */
GRACE_EXTERN int grace_http_respond(grace_http_request *req, int status,
                                    const void *body, size_t len);

/*
 * Ends |req| without an answer and closes its connection.  Callable from
 * any thread, instead of grace_http_respond.  |req| is invalid afterwards.
 */
GRACE_EXTERN void grace_http_request_abandon(grace_http_request *req);

/*
 * Runs |fn| on libuv's thread pool, for handlers that block (disk, a
 * blocking client library); |fn| must answer |req| itself (respond is
 * thread-safe).  Returns 0, or a negative libuv error (then |fn| is never
 * called and the caller still owns |req|).
 */
GRACE_EXTERN int grace_http_run_blocking(grace_http_request *req,
                                         grace_http_handler fn, void *data);

/* ---- Exchanges that stream ----------------------------------------------
 *
 * The same exchange on HTTP/1.1 and HTTP/2: the library alone writes the
 * framing (Content-Length, Transfer-Encoding: chunked, Connection; HTTP/2
 * DATA frames and END_STREAM), and applies the status rules (no body for
 * HEAD, 204 and 304; a status outside 200..599 is answered 500) the same
 * way on both.  Every write is accepted, or refused for now with
 * GRACE_EBUSY and followed by the writable callback, or fails with an
 * error the caller sees: nothing is dropped, and a client that does not
 * read costs a bounded amount of memory (its writes wait, and the send
 * timeout cuts it).
 *
 * The functions below run on the request's loop thread (in the handler,
 * or from a timer or callback on grace_http_request_loop(req)), except
 * grace_http_response_write_wait and grace_http_response_end, which any
 * thread may call.
 */

/*
 * Walks the request's header fields in the order received, several values
 * of one name included: start with |*iter| 0; each call stores the next
 * field (borrowed from |req|; HTTP/2 names are lower case) and returns 1,
 * or returns 0 when there are no more.
 */
GRACE_EXTERN int grace_http_request_header_next(grace_http_request *req,
                                                size_t *iter,
                                                const char **name,
                                                const char **value);

/*
 * Copies the client's address into |addr| (at most |*len| bytes) and
 * stores its length in |*len|.  Returns 0, or GRACE_ENOENT when it is not
 * known (a socket that closed before it was read).
 */
GRACE_EXTERN int grace_http_request_peer(grace_http_request *req,
                                         struct sockaddr *addr,
                                         socklen_t *len);

/*
 * Starts a streamed answer: the status line and the headers added so far
 * go out now, and the body follows with grace_http_response_write.  Its
 * length is not known: HTTP/1.1 sends it chunked, HTTP/1.0 until the
 * connection closes, HTTP/2 in DATA frames.  Returns 0, GRACE_ESTATE
 * (started already), GRACE_ECLOSED (the client is gone), GRACE_ENOMEM.
 */
GRACE_EXTERN int grace_http_response_start(grace_http_request *req,
                                           int status);

/*
 * Writes |len| bytes of body (copied), starting the answer with 200 if it
 * was not started.  Returns:
 *
 * 0              accepted
 * GRACE_EBUSY   not now: nothing was taken; the writable callback
 *                (grace_http_response_on_writable) runs when it may go on
 * GRACE_ECLOSED  the client is gone or the request was cancelled
 * GRACE_ESTATE   the answer has ended
 * GRACE_ENOMEM   out of memory
 *
 * For HEAD, 204 and 304 the bytes are accepted and not sent.
 */
GRACE_EXTERN int grace_http_response_write(grace_http_request *req,
                                           const void *data, size_t len);

/*
 * Sets the callback that runs (once per GRACE_EBUSY, on the loop thread)
 * when writing may go on.  NULL removes it.
 */
GRACE_EXTERN void grace_http_response_on_writable(grace_http_request *req,
                                                  grace_http_handler cb,
                                                  void *data);

/*
 * From any thread but the loop's: writes |len| bytes (copied), waiting
 * while the client is slow, until they are accepted, the client is gone
 * (GRACE_ECLOSED), or |ctx| is done (its error; nothing was taken then).
 * |ctx| NULL waits without limit (the send timeout still ends a client
 * that never reads).  Returns 0 or one of those errors, or GRACE_ESTATE
 * when called on the loop thread.
 */
GRACE_EXTERN int grace_http_response_write_wait(grace_http_request *req,
                                                const void *data, size_t len,
                                                grace_ctx *ctx);

/*
 * Adds a trailer field sent after a streamed body (HTTP/1.1 chunked
 * trailers, HTTP/2 trailing HEADERS); copied.  Before
 * grace_http_response_end.  Returns 0, GRACE_EINVAL, GRACE_ENOMEM.
 */
GRACE_EXTERN int grace_http_response_trailer(grace_http_request *req,
                                             const char *name,
                                             const char *value);

/*
 * Ends the answer: a streamed body ends (with its trailers); an answer
 * never started is sent with an empty body and the status set by
 * grace_http_response_start (200 if none).  Any thread.  |req| is invalid
 * afterwards.  Returns 0.
 */
GRACE_EXTERN int grace_http_response_end(grace_http_request *req);

/* A piece of a streamed request body, on the loop thread: |len| bytes
 * (borrowed for the call), |end| 1 with the last piece (possibly empty).
 * Returning nonzero pauses the body: nothing more is delivered, and the
 * client is paused by flow control, until grace_http_request_resume. */
typedef int (*grace_http_body_cb)(grace_http_request *req, const void *data,
                                  size_t len, int end, void *user);

/*
 * Like grace_http_server_handle, but |handler| runs as soon as the request
 * head is in, and its body is not buffered: the handler reads it with
 * grace_http_request_read as it arrives.  max_body_bytes still bounds it
 * (413 before the handler for a larger Content-Length; a chunked body that
 * grows past it cancels the request); the body timeout applies while the
 * handler reads.
 */
GRACE_EXTERN int grace_http_server_handle_stream(grace_http_server *srv,
                                                 const char *pattern,
                                                 grace_http_handler handler,
                                                 void *data);

/*
 * Starts delivering the body of a request of a streaming route to |cb|
 * (first call), or sets a new callback.  Pieces that arrived already (or
 * the end of an empty body) may be delivered before this call returns.
 * The exchange may be ended from inside |cb|.  Returns 0, or GRACE_ESTATE
 * (not a streaming route).
 */
GRACE_EXTERN int grace_http_request_read(grace_http_request *req,
                                         grace_http_body_cb cb, void *user);

/* Delivers the body again after |cb| returned nonzero. */
GRACE_EXTERN void grace_http_request_resume(grace_http_request *req);

/* The reason phrase of |status| ("OK", "Not Found"), or "". */
GRACE_EXTERN const char *grace_http_status_text(int status);

#ifdef __cplusplus
}
#endif

#endif /* GRACE_HTTP_H */
