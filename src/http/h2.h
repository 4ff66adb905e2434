/*
 * grace internal: the HTTP/2 server connection, sans-I/O, on nghttp2.
 *
 * A grace__h2 is one server-side HTTP/2 connection with no socket and no
 * event loop: the caller feeds it the bytes it read (grace__h2_recv), pulls
 * the bytes to write (grace__h2_output), and gets the requests as events
 * through callbacks.  The HTTP server and the gRPC server sit on it; tests
 * and the fuzzer drive it from memory.
 *
 * The caller's loop, in short:
 *
 *   grace__h2_new(&cbs, user, &opts, &h2);
 *   for (;;) {
 *     while (grace__h2_output(h2, &p, &n) == 0 && n > 0) write all n bytes;
 *     if (grace__h2_want_io(h2) == 0 || grace__h2_is_drained(h2)) break;
 *     read bytes; if the peer closed, break;
 *     if (grace__h2_recv(h2, buf, len) < 0) { flush output once more; break; }
 *   }
 *   grace__h2_free(h2);  (fires on_stream_close for streams still open)
 *
 * Threads: a grace__h2 and its streams belong to one thread at a time (the
 * connection's loop); nothing here locks.
 *
 * Re-entrancy: callbacks run inside grace__h2_recv, grace__h2_output and
 * grace__h2_force_close.  Inside a callback the application may call every
 * stream function and grace__h2_shutdown_begin, grace__h2_shutdown_timeout
 * and grace__h2_force_close, but never grace__h2_recv, grace__h2_output
 * (they return GRACE_ESTATE) or grace__h2_free.  Frames submitted by any
 * call are written only when the caller next pulls grace__h2_output, so
 * after calling a stream function outside grace__h2_recv (from a timer, a
 * worker's answer...) the caller pulls the output.
 *
 * Stream lifetime: a grace__h2_stream is owned by the connection.  The
 * application sees a stream first in on_request_headers; the pointer stays
 * valid until on_stream_close for it returns, and not one moment longer:
 * there is no reference count.  on_stream_close fires exactly once for every
 * stream given to on_request_headers and for no other: when the stream ends
 * normally (error code NGHTTP2_NO_ERROR), when the peer resets it (the
 * peer's code), when the application reset it (its code, once the
 * RST_STREAM is out), on grace__h2_force_close (its code) and on
 * grace__h2_free (NGHTTP2_CANCEL: the connection was lost).  An application
 * that hands a stream to other code keeps its own object, points it at the
 * stream with grace__h2_stream_set_data, and forgets the stream in
 * on_stream_close.
 *
 * Flow control (RFC 9113 section 5.2): request bodies are delivered as they
 * arrive (on_data), never buffered here.  The connection window is
 * replenished as soon as bytes arrive, as grpc-go does, so one slow stream
 * cannot starve the others; a stream's window is replenished either when
 * on_data returns (the default) or, with the manual_consume option, only as
 * the application calls grace__h2_stream_consume.  With manual_consume the
 * bytes a stream can have delivered and not yet consumed are bounded by the
 * stream window (initial_window), so an application that queues what it
 * received holds at most max_concurrent_streams * initial_window bytes per
 * connection.
 *
 * Response bodies are copied into a per-stream queue bounded by
 * max_send_buffer and sent through an nghttp2 data provider as the peer's
 * windows allow; an empty queue defers the provider
 * (NGHTTP2_ERR_DEFERRED) and the next grace__h2_send_data resumes it.
 *
 * Graceful shutdown follows grpc-go's http2Server (internal/transport/
 * http2_server.go: Drain, outgoingGoAwayHandler, handlePing) and h2o's
 * lib/http2/connection.c (initiate_graceful_shutdown,
 * graceful_shutdown_resend_goaway), RFC 9113 section 6.8:
 *
 *   1. grace__h2_shutdown_begin: GOAWAY with last-stream-id 2^31-1 and
 *      NO_ERROR, and once it is written a PING with the payload
 *      GRACE__H2_SHUTDOWN_PING (grpc-go's goAwayPing).  Streams keep being
 *      accepted: the client may have sent them before it saw the GOAWAY.
 *   2. When the PING's ACK arrives (everything the client sent before it
 *      saw the GOAWAY has then been read), or when the caller's timer calls
 *      grace__h2_shutdown_timeout (grpc-go waits 5 s, h2o 1 s), the final
 *      GOAWAY with the last stream id really processed; nghttp2 ignores
 *      every stream opened after it, and the client retries those
 *      elsewhere.
 *   3. grace__h2_is_drained turns true once that GOAWAY is written and no
 *      stream is left; the caller then closes the connection at once,
 *      without waiting for the client to hang up.  Streams that never end
 *      are the caller's to cut with grace__h2_force_close (h2o's
 *      graceful_shutdown_close_straggler).
 *
 * A client with no stream open may not ACK at all: an nghttp2 client
 * (curl, nghttp, h2load) that gets a GOAWAY while idle stops reading and
 * closes instead, so the caller sees EOF (or its timer fires) rather than
 * the ACK.  grpc-go clients ACK.
 */
#ifndef GRACE_HTTP_H2_H
#define GRACE_HTTP_H2_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <nghttp2/nghttp2.h>

#include "grace/error.h"

/* The client connection preface (RFC 9113 section 3.4); a connection whose
 * first bytes are these speaks HTTP/2 with prior knowledge. */
#define GRACE__H2_PREFACE "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
#define GRACE__H2_PREFACE_LEN 24

/* The opaque data of the shutdown PING, grpc-go's goAwayPing. */
#define GRACE__H2_SHUTDOWN_PING "\x01\x06\x01\x08\x00\x03\x03\x09"

/* The peer broke the protocol: a bad preface, a flood, or a frame nghttp2
 * answered with GOAWAY. */
#define GRACE__H2_EPROTO GRACE_EPROTO

/* Bits of grace__h2_want_io. */
#define GRACE__H2_WANT_READ 0x1u
#define GRACE__H2_WANT_WRITE 0x2u

typedef struct grace__h2 grace__h2;
typedef struct grace__h2_stream grace__h2_stream;

/* A header field; both strings NUL terminated.  Copied by every function
 * that takes one. */
typedef struct grace__h2_header {
  const char *name;
  const char *value;
} grace__h2_header;

/*
 * The events of a connection.  Every callback may be NULL.  |user| is the
 * pointer given to grace__h2_new.  Streams passed to a callback are
 * borrowed: see "Stream lifetime" above.
 */
typedef struct grace__h2_callbacks {
  /* A request's header block is complete and valid: method, path,
   * authority and headers can be read.  The application may answer at
   * once or keep the stream for later. */
  void (*on_request_headers)(grace__h2_stream *s, void *user);
  /* |len| bytes of the request body, in order; |data| is borrowed until
   * the callback returns.  Called as DATA frames arrive, possibly one byte
   * at a time. */
  void (*on_data)(grace__h2_stream *s, const uint8_t *data, size_t len,
                  void *user);
  /* The request is complete (END_STREAM): no more on_data.  Not called
   * when the stream is reset or the body limit is exceeded first. */
  void (*on_request_end)(grace__h2_stream *s, void *user);
  /* The stream is gone; |s| must not be used after this returns.
   * |error_code| is an HTTP/2 error code: NGHTTP2_NO_ERROR for a stream
   * that ended normally. */
  void (*on_stream_close)(grace__h2_stream *s, uint32_t error_code,
                          void *user);
  /* grace__h2_send_data refused bytes with GRACE_EBUSY before, and the
   * stream's send queue has since fallen to half of max_send_buffer or
   * less: send again. */
  void (*on_send_ready)(grace__h2_stream *s, void *user);
} grace__h2_callbacks;

/* Connection options.  A zero field means the default; a NULL pointer for
 * the whole struct means every default. */
typedef struct grace__h2_options {
  /* SETTINGS_MAX_CONCURRENT_STREAMS; default 100 (grpc-go, h2o). */
  uint32_t max_concurrent_streams;
  /* SETTINGS_INITIAL_WINDOW_SIZE for each request stream, at most
   * 2^31-1; default 65535 (the protocol's). */
  uint32_t initial_window;
  /* The connection's receive window, at most 2^31-1; default 1 MiB. */
  uint32_t conn_window;
  /* SETTINGS_MAX_HEADER_LIST_SIZE: the sum over a request's header fields
   * of name + value + 32 bytes (RFC 9113 section 6.5.2); default 64 KiB,
   * at most 1 GiB.
   * A larger request is answered 431 without reaching the application,
   * as Go's net/http does (a REFUSED_STREAM would invite a retry that
   * fails the same way). */
  uint32_t max_header_list;
  /* Largest request body; 0 means no limit.  A content-length above it
   * is answered 413 before the application sees the request; a body that
   * grows past it without one stops being delivered, and the stream is
   * answered 413 if no response has started, else reset with CANCEL. */
  uint64_t max_request_body;
  /* Bytes grace__h2_send_data may queue per stream before it answers
   * GRACE_EBUSY; default 256 KiB. */
  size_t max_send_buffer;
  /* Nonzero: a stream's window is replenished only by
   * grace__h2_stream_consume.  Zero: when on_data returns. */
  int manual_consume;
  /* The allocator for nghttp2 and for this module, borrowed until
   * grace__h2_free; NULL means malloc(3) and friends.  Tests use it to
   * fail allocations. */
  const nghttp2_mem *mem;
} grace__h2_options;

/* ---- the connection --------------------------------------------------- */

/*
 * Creates a server connection and queues its preface (SETTINGS, and a
 * WINDOW_UPDATE when conn_window is above 65535) for grace__h2_output.
 * |cb| is copied; |user| is passed to every callback; |opts| is copied (NULL
 * for the defaults).  The connection expects the client preface as its first
 * input: pass every byte from the first one on, preface included.
 *
 * On success stores the connection in |*out| and returns 0.  Otherwise
 * leaves |*out| untouched and returns one of:
 *
 * GRACE_EINVAL   |cb| or |out| is NULL, or an option is out of range
 * GRACE_ENOMEM   out of memory
 */
int grace__h2_new(const grace__h2_callbacks *cb, void *user,
                  const grace__h2_options *opts, grace__h2 **out);

/*
 * Frees |h2| and every stream.  Streams the application still holds get
 * on_stream_close with NGHTTP2_CANCEL first, as the connection is lost.
 * Never call it from a callback of |h2|.  NULL is a no-op.
 */
void grace__h2_free(grace__h2 *h2);

/*
 * Feeds |len| bytes read from the peer (|data| borrowed for the call; NULL
 * when |len| is 0), in chunks of any size.  Callbacks fire from here.
 *
 * Returns |len| (every byte is consumed), or one of the following negative
 * error codes; after any of them |h2| is failed: grace__h2_output still
 * gives what is left to write (a GOAWAY when the peer broke the protocol),
 * every later grace__h2_recv returns the same code, and the caller closes
 * the connection once the output is flushed.
 *
 * GRACE__H2_EPROTO  the peer broke the protocol: a bad client preface
 *                   (GOAWAY PROTOCOL_ERROR queued), a flood of frames
 *                   nghttp2 refuses, or a connection error nghttp2
 *                   answered with GOAWAY that was already written
 * GRACE_ENOMEM      out of memory (nothing more is written)
 * GRACE_ECLOSED     the connection was force-closed or its final GOAWAY
 *                   with an error is out; input is ignored
 * GRACE_ESTATE      called from a callback of |h2|; nothing is consumed
 *                   and |h2| is not failed
 *
 * A connection error found inside a frame (a DATA frame on stream 0, a bad
 * HPACK block...) is answered by nghttp2 with GOAWAY and may only show in
 * the next grace__h2_output: once that GOAWAY is written, want_io is 0 and
 * later calls return GRACE__H2_EPROTO.
 */
ssize_t grace__h2_recv(grace__h2 *h2, const uint8_t *data, size_t len);

/*
 * Pulls the next bytes to write.  Stores in |*ptr| and |*len| up to about
 * 64 KiB of frames (|*len| 0 when nothing is pending); the bytes belong to
 * |h2| and stay valid until the next grace__h2_output or grace__h2_free,
 * whichever comes first, so the caller writes them (or copies them) before
 * pulling again.  Call it until |*len| is 0.  Callbacks may fire from here
 * (streams close as their last frame goes out).
 *
 * Returns 0, or one of the following negative error codes, with |*len| 0:
 *
 * GRACE_ENOMEM   out of memory; |h2| is failed
 * GRACE_ESTATE   called from a callback of |h2|
 * GRACE_EINVAL   an argument is NULL
 */
int grace__h2_output(grace__h2 *h2, const uint8_t **ptr, size_t *len);

/*
 * Says what the connection wants: GRACE__H2_WANT_READ, GRACE__H2_WANT_WRITE
 * (call grace__h2_output; it may still find nothing when every pending
 * DATA waits for the peer's window), both, or 0.  0 means the connection
 * is over (nghttp2's rule: neither nghttp2_session_want_read nor
 * nghttp2_session_want_write): close it once the output is flushed.
 * During the first phase of a graceful shutdown the connection still
 * wants to read with no stream open, since the PING's ACK is awaited
 * (unless the client sent a GOAWAY of its own).
 */
unsigned grace__h2_want_io(const grace__h2 *h2);

/*
 * Returns the sticky error of a failed connection (see grace__h2_recv), or
 * 0 while it is healthy.
 */
int grace__h2_error(const grace__h2 *h2);

/* Returns how many streams are open: the streams the application holds
 * plus those being refused or answered by this module. */
size_t grace__h2_stream_count(const grace__h2 *h2);

/* ---- shutdown --------------------------------------------------------- */

/*
 * Starts the graceful shutdown described at the top of this file: queues
 * GOAWAY(2^31-1, NO_ERROR); the PING follows once that GOAWAY is written.
 * Idempotent: later calls, and calls after grace__h2_force_close, do
 * nothing.  Returns 0, or GRACE_ENOMEM (nothing was queued).
 */
int grace__h2_shutdown_begin(grace__h2 *h2);

/*
 * The caller's shutdown timer fired before the PING's ACK arrived: the
 * final GOAWAY is queued at once, as grpc-go does after 5 s and h2o after
 * 1 s.  Does nothing when no shutdown is under way or the final GOAWAY is
 * already queued.  Returns 0.
 */
int grace__h2_shutdown_timeout(grace__h2 *h2);

/*
 * Returns 1 once the final GOAWAY of a graceful shutdown has been written
 * (handed out by grace__h2_output) and no stream is left, else 0.  The
 * caller then flushes what grace__h2_output gave and closes the
 * connection.
 */
int grace__h2_is_drained(const grace__h2 *h2);

/*
 * Cuts the connection now: queues GOAWAY(last processed stream,
 * |error_code|) and tears down every stream: each one the application
 * holds gets on_stream_close(|error_code|) before this returns (it may be
 * called from a callback, even one about a stream it closes).  Nothing
 * after the GOAWAY is written; want_io turns 0 once it is.  Returns 0, or
 * GRACE_ENOMEM if the GOAWAY could not be queued (the streams are torn
 * down anyway and nothing more is written).  Calling it again does
 * nothing.
 */
int grace__h2_force_close(grace__h2 *h2, uint32_t error_code);

/* ---- streams: the request --------------------------------------------- */

/* The stream's HTTP/2 id (odd, as clients open them). */
int32_t grace__h2_stream_id(const grace__h2_stream *s);

/* The connection |s| belongs to. */
grace__h2 *grace__h2_stream_conn(const grace__h2_stream *s);

/* The application's pointer for |s|, NULL until set; not used here. */
void grace__h2_stream_set_data(grace__h2_stream *s, void *data);
void *grace__h2_stream_data(const grace__h2_stream *s);

/*
 * The request's pseudo-header fields, valid as long as |s|.  :method;
 * :scheme ("" when absent, as for CONNECT); the :path before any '?',
 * raw (not percent-decoded: gRPC method names are matched as sent; "" for
 * CONNECT); the query after the first '?', or NULL when the :path has no
 * '?'; :authority, or the host header when there is no :authority
 * (RFC 9113 section 8.3.1), or "".
 */
const char *grace__h2_stream_method(const grace__h2_stream *s);
const char *grace__h2_stream_scheme(const grace__h2_stream *s);
const char *grace__h2_stream_path(const grace__h2_stream *s);
const char *grace__h2_stream_query(const grace__h2_stream *s);
const char *grace__h2_stream_authority(const grace__h2_stream *s);

/* 1 once the client ended its side of |s| (the request is whole). */
int grace__h2_stream_request_ended(const grace__h2_stream *s);

/*
 * Returns the value of the first request header named |name| (compared
 * without regard to case; pseudo-headers are not listed), or NULL.  Valid
 * as long as |s|.  Trailers a client sends after the body are not kept.
 */
const char *grace__h2_stream_header(const grace__h2_stream *s,
                                    const char *name);

/*
 * Walks the request headers in the order received: start with |*iter| 0;
 * each call stores the next field in |*name| and |*value| (valid as long
 * as |s|; names are lower case, as HTTP/2 sends them) and returns 1, or
 * returns 0 when there are no more.
 */
int grace__h2_stream_header_next(const grace__h2_stream *s, size_t *iter,
                                 const char **name, const char **value);

/*
 * With the manual_consume option: the application is done with |n| more
 * bytes it received through on_data, so the peer may send that many more
 * (a WINDOW_UPDATE goes out once enough has been consumed).  Returns 0,
 * or one of:
 *
 * GRACE_ERANGE   |n| is more than was delivered and not yet consumed
 * GRACE_ESTATE   the connection does not use manual_consume
 * GRACE_ECLOSED  the stream or the connection is closed
 * GRACE_ENOMEM   out of memory
 */
int grace__h2_stream_consume(grace__h2_stream *s, size_t n);

/* ---- streams: the response -------------------------------------------- */

/*
 * The response functions below copy every header and byte they are given.
 * Header names are lower-cased as HTTP/2 requires; connection-specific
 * fields (connection, keep-alive, proxy-connection, transfer-encoding,
 * upgrade), which HTTP/2 forbids (RFC 9113 section 8.2.2), are dropped, as
 * Go's net/http drops them.  |status| is 200..599 (no interim responses).
 * Each returns 0, or one of the following negative error codes, and then
 * nothing was queued:
 *
 * GRACE_EINVAL   a bad argument: status out of range, a NULL, an empty or
 *                pseudo (":x") header name, a name or value HTTP/2 cannot
 *                carry (RFC 9113 section 8.2.1)
 * GRACE_ESTATE   the call does not fit the response so far (headers twice,
 *                data before headers, anything after the end)
 * GRACE_ECLOSED  the stream or the connection is closed
 * GRACE_EBUSY    (grace__h2_send_data only) the send queue is full: wait
 *                for on_send_ready
 * GRACE_ENOMEM   out of memory
 */

/* Starts a response: queues HEADERS with :status |status| and |n| fields
 * of |h|; the body follows with grace__h2_send_data and the end with
 * grace__h2_send_data(..., end 1) or grace__h2_send_trailers. */
int grace__h2_respond_headers(grace__h2_stream *s, int status,
                              const grace__h2_header *h, size_t n);

/* A trailers-only response: one HEADERS frame with END_STREAM carrying
 * :status and the fields (gRPC puts grpc-status and grpc-message there
 * when it fails before any message). */
int grace__h2_respond_trailers_only(grace__h2_stream *s, int status,
                                    const grace__h2_header *h, size_t n);

/* The whole response at once, for plain HTTP handlers: headers, |len|
 * bytes of |body| (copied; not subject to max_send_buffer) and the end.
 * Adds content-length when |h| has none.  For a HEAD request the body is
 * not sent (its length still is). */
int grace__h2_respond(grace__h2_stream *s, int status,
                      const grace__h2_header *h, size_t n, const void *body,
                      size_t len);

/* Queues |len| bytes of body (copied) and, when |end| is nonzero, ends the
 * stream after them.  Bytes that would take a non-empty queue past
 * max_send_buffer are refused with GRACE_EBUSY, and on_send_ready follows
 * once the queue has drained to half of it (an empty queue takes any
 * |len|, so one message larger than the limit still goes).  For a HEAD
 * request the bytes are dropped. */
int grace__h2_send_data(grace__h2_stream *s, const void *data, size_t len,
                        int end);

/* Ends the stream with a trailing HEADERS frame carrying the |n| fields of
 * |h|, after every queued byte (gRPC: grpc-status, grpc-message). */
int grace__h2_send_trailers(grace__h2_stream *s, const grace__h2_header *h,
                            size_t n);

/* Bytes queued on |s| and not yet handed to nghttp2. */
size_t grace__h2_stream_send_queued(const grace__h2_stream *s);

/*
 * Resets the stream: queues RST_STREAM(|error_code|) and drops whatever is
 * queued.  on_stream_close(|error_code|) fires once the frame is written.
 * Returns 0, GRACE_ECLOSED, or GRACE_ENOMEM.
 */
int grace__h2_reset(grace__h2_stream *s, uint32_t error_code);

#endif /* GRACE_HTTP_H2_H */
