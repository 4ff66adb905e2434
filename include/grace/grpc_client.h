/*
 * grace: a gRPC client channel over HTTP/2 cleartext, with grpc-go's
 * semantics and error texts.
 *
 * A channel talks to one target ("host:port") over HTTP/2 with prior
 * knowledge (h2c, RFC 9113 section 3.3), the way grpc-go's
 * grpc.NewClient(addr, grpc.WithTransportCredentials(insecure...)) does:
 *
 *   grace_grpc_channel *ch;
 *   grace_grpc_channel_new("localhost:50051", NULL, &ch);
 *   grace_ctx *ctx;
 *   grace_ctx_with_timeout(grace_ctx_background(), 60 * GRACE_SECOND, &ctx);
 *   grace_grpc_status st = GRACE_GRPC_STATUS_INIT;
 *   uint8_t *resp;
 *   size_t resp_len;
 *   if (grace_grpc_channel_unary(ch, "/Greeter/SayHello", req, req_len, ctx,
 *                                &resp, &resp_len, &st) != 0) {
 *     char text[1024];
 *     grace_grpc_status_format(&st, text, sizeof(text));
 *     ... "rpc error: code = Unavailable desc = ..." ...
 *   }
 *   grace_grpc_status_clear(&st);
 *   grace_ctx_cancel(ctx);
 *   grace_ctx_unref(ctx);
 *   grace_grpc_channel_free(ch);
 *
 * Threads: each channel runs one I/O thread of its own (started by
 * grace_grpc_channel_new, all signals blocked in it).  That thread owns the
 * sockets and the nghttp2 client sessions and drives them with poll(2); it
 * also watches the done descriptor (grace_ctx_done_fd) of every call in
 * flight, so a deadline or a cancellation is acted on the moment it
 * happens, whatever the caller is doing.  A call blocks its calling thread
 * on a condition variable until the I/O thread hands it its status.  Any
 * number of threads may call concurrently on one channel; their calls are
 * multiplexed as streams of one connection.
 *
 * Connections: the first call dials (the channel is lazy, as grpc-go's
 * NewClient is).  The target is resolved with getaddrinfo(3) on the I/O
 * thread and each address is tried in turn; the first error is the one
 * reported, as Go's dialer does.  A connection is usable once the server's
 * SETTINGS frame has arrived, and stays open, idle, for later calls.  When
 * the server sends GOAWAY, calls already in flight with a stream id up to
 * its last-stream-id complete on that connection; a call the GOAWAY
 * refused (id above it, or not yet sent: the server never processed it) is
 * retried once, transparently, on a fresh connection; every new call goes
 * to a fresh connection.  The draining connection is closed when its last
 * stream ends.  A failed dial is not retried with backoff: the calls
 * waiting on it fail with UNAVAILABLE and the next call dials again.
 *
 * Errors follow grpc-go (internal/transport/http2_client.go, stream.go,
 * rpc_util.go), texts included, so a program prints what its Go twin
 * prints, for example:
 *
 *   rpc error: code = Unavailable desc = connection error: desc =
 *     "transport: Error while dialing: dial tcp 127.0.0.1:50051: connect:
 *     connection refused"
 *   rpc error: code = DeadlineExceeded desc = context deadline exceeded
 *   rpc error: code = Unavailable desc = error reading from server: EOF
 *   rpc error: code = ResourceExhausted desc = grpc: received message
 *     larger than max (5000000 vs. 4194304)
 *
 * A response whose HTTP status is not 200 and that carries no grpc-status
 * gets the code of doc/http-grpc-status-mapping.md
 * (grace_grpc_code_from_http_status).
 *
 * Dependencies: this header needs no other library's header.  The typed
 * helper (grace_grpc_channel_unary_pb) takes protobuf-c messages: a program
 * that uses it includes its generated *.pb-c.h and links libprotobuf-c
 * itself (pkg-config libprotobuf-c).
 */
#ifndef GRACE_GRPC_CLIENT_H
#define GRACE_GRPC_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "grace/context.h"
#include "grace/duration.h"
#include "grace/error.h"
#include "grace/grpc_status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* protobuf-c's types, for the typed helper; include
 * <protobuf-c/protobuf-c.h> to use it. */
struct ProtobufCMessage;
struct ProtobufCMessageDescriptor;

/*
 * A client channel to one target.  The details are private.
 */
typedef struct grace_grpc_channel grace_grpc_channel;

/*
 * The outcome of a call: a status code and its description.
 *
 * |code| is one of grace_grpc_code or, when a server sent an undefined
 * value, that value.  |message| is the description, grpc-message
 * percent-decoded, NUL terminated, |message_len| bytes (it may contain NUL
 * bytes; |message_len| is authoritative); it is NULL when the description
 * is empty.  The message is heap memory owned by the status: release it
 * with grace_grpc_status_clear.
 */
typedef struct grace_grpc_status {
  uint32_t code;
  char *message;
  size_t message_len;
} grace_grpc_status;

/* An OK status with no message, for initialization. */
#define GRACE_GRPC_STATUS_INIT                                                 \
  { GRACE_GRPC_OK, NULL, 0 }

/* Frees the message of |st| and makes it an OK status.  NULL-safe. */
GRACE_EXTERN void grace_grpc_status_clear(grace_grpc_status *st);

/*
 * Formats |st| as grpc-go's status error prints, "rpc error: code =
 * NotFound desc = no such name", into |buf| (|len| bytes, NUL terminated
 * when |len| > 0, truncated as snprintf does).  Returns the length of the
 * whole text, or a negative error code of grace_grpc_error_format
 * (GRACE_EINVAL when |st| is NULL).
 */
GRACE_EXTERN int grace_grpc_status_format(const grace_grpc_status *st,
                                          char *buf, size_t len);

/* grpc-go's defaults: 4 MiB (MaxCallRecvMsgSize) and 20 s (minConnectTimeout).
 */
#define GRACE_GRPC_DEFAULT_MAX_RECV_MSG_SIZE (4u * 1024 * 1024)
#define GRACE_GRPC_DEFAULT_CONNECT_TIMEOUT (20 * GRACE_SECOND)
/* The default send and receive buffers of a streaming call. */
#define GRACE_GRPC_DEFAULT_STREAM_BUFFER (256u * 1024)

typedef struct grace_grpc_channel_options {
  /* The largest response message accepted; a larger one fails the call
   * with RESOURCE_EXHAUSTED before any of it is buffered.  0 means the
   * default, GRACE_GRPC_DEFAULT_MAX_RECV_MSG_SIZE. */
  size_t max_recv_msg_size;
  /* How long a new connection may take to connect and to receive the
   * server's SETTINGS; calls waiting on it then fail with UNAVAILABLE.
   * <= 0 means the default, GRACE_GRPC_DEFAULT_CONNECT_TIMEOUT.  A call's
   * own deadline applies as well. */
  grace_duration connect_timeout;
  /* The user-agent header; NULL means "grpc-c-grace/<version>".  Copied
   * by grace_grpc_channel_new. */
  const char *user_agent;
  /* Streaming calls (grace_grpc_stream_start): how many bytes of messages a
   * call queues for sending before grace_grpc_stream_send waits, and how
   * many bytes of received messages it holds for the caller before it
   * stops reopening the stream's HTTP/2 receive window (so a server
   * faster than its reader is paused by flow control, not buffered).
   * 0 means the defaults, GRACE_GRPC_DEFAULT_STREAM_BUFFER each.  One
   * message is always accepted into an empty send queue, whatever its
   * size. */
  size_t stream_send_buffer;
  size_t stream_recv_buffer;
  /* TLS: when true, every connection runs TLS (1.2 or 1.3, ALPN "h2")
   * and the server's certificate chain must verify against the PEM
   * certificates of |tls_ca_file| (NULL: the system's default roots) and
   * name |tls_server_name| (a DNS name or an IP address; NULL: the host
   * of the target), else calls fail with UNAVAILABLE, "connection error:
   * desc = "transport: authentication handshake failed: ..."".  The
   * strings are read by grace_grpc_channel_new (the CA file is loaded
   * there) and not kept.  Default false: plaintext HTTP/2. */
  bool tls;
  const char *tls_ca_file;
  const char *tls_server_name;
} grace_grpc_channel_options;

/* Fills |opts| with the defaults. */
GRACE_EXTERN void
grace_grpc_channel_options_init(grace_grpc_channel_options *opts);

/*
 * Creates a channel to |target| and starts its I/O thread; nothing is
 * dialed until the first call.  |target| is "host:port", "[ipv6]:port",
 * ":port" (the local host) or "host" (port 443, as grpc-go's resolver
 * defaults), optionally prefixed with "dns:///" or "passthrough:///"; it
 * is copied, and sent as the :authority of every call.  |opts| is copied;
 * NULL means the defaults.
 *
 * On success stores the channel in |*out| and returns 0.  On failure
 * leaves |*out| untouched and returns one of:
 *
 * GRACE_EINVAL  |target| or |out| is NULL, or |target| is malformed, or
 *               opts->tls_ca_file holds no valid certificate
 * GRACE_ENOENT  opts->tls_ca_file cannot be read
 * GRACE_ENOMEM  out of memory
 * or another negated errno if the thread or its wake-up descriptor cannot
 * be created.
 */
GRACE_EXTERN int grace_grpc_channel_new(const char *target,
                                        const grace_grpc_channel_options *opts,
                                        grace_grpc_channel **out);

/*
 * Closes |ch|, as grpc-go's ClientConn.Close: every call in flight fails at
 * once with CANCELLED, "grpc: the client connection is closing", every
 * later call fails the same way without doing anything, and the
 * connections are closed (a GOAWAY is sent on each, as far as the socket
 * takes it without blocking).  Returns without waiting for the I/O thread.
 * Idempotent; safe from any thread.  NULL-safe.
 */
GRACE_EXTERN void grace_grpc_channel_close(grace_grpc_channel *ch);

/*
 * Closes |ch| as grace_grpc_channel_close does, waits until every call in
 * flight has returned to its caller and the I/O thread has ended, and frees
 * the channel.  No call may start on |ch| once this has been called.
 * NULL-safe.
 */
GRACE_EXTERN void grace_grpc_channel_free(grace_grpc_channel *ch);

/*
 * Makes one unary call and blocks until its status is known.
 *
 * |method| is the full method path, "/<package>.<Service>/<Method>" (for
 * the seed's proto, which has no package, "/Greeter/SayHello"); copied.
 * |req| is the serialized request message, |req_len| bytes (NULL when 0);
 * copied.  |ctx| bounds the call (NULL means the background context): its
 * deadline is sent as grpc-timeout, and when it is done the call ends at
 * once with DEADLINE_EXCEEDED ("context deadline exceeded") or CANCELLED
 * ("context canceled"), and its stream is reset with RST_STREAM(CANCEL).
 * |ctx| is borrowed for the duration of the call.
 *
 * Returns 0 when the call succeeded: |*resp| is then the response message,
 * |*resp_len| bytes in a buffer allocated with malloc(3) (never NULL, even
 * for an empty message) that the caller frees with free(3), and |*status|
 * is OK with no message.
 *
 * Returns a positive value when the call failed: the status code, also
 * stored with its description in |*status| (a code above INT_MAX, which
 * only a misbehaving server sends, returns GRACE_GRPC_UNKNOWN while
 * |status->code| keeps the value); |*resp| and |*resp_len| are untouched.
 * Failures of the transport are statuses too, as in grpc-go (UNAVAILABLE
 * for a connection that could not be made or was lost, INTERNAL for a
 * malformed response...).  |*status| must not hold a message on entry (it
 * is overwritten, not freed: clear it between calls).
 *
 * Returns a negative error code when the call could not be started, with
 * every out-parameter untouched:
 *
 * GRACE_EINVAL  |ch|, |method|, |resp|, |resp_len| or |status| is NULL,
 *               |req| is NULL with |req_len| > 0, or |method| does not
 *               start with '/'
 * GRACE_ENOMEM  out of memory
 * or the error of grace_ctx_done_fd(|ctx|) (GRACE_EMFILE...).
 *
 * Thread-safe.  Must not be called from a signal handler.
 */
GRACE_EXTERN int grace_grpc_channel_unary(grace_grpc_channel *ch,
                                          const char *method, const void *req,
                                          size_t req_len, grace_ctx *ctx,
                                          uint8_t **resp, size_t *resp_len,
                                          grace_grpc_status *status);

/*
 * grace_grpc_channel_unary for protobuf-c messages: packs |req|, makes the
 * call, and unpacks the response as a |resp_desc| message.  On success
 * returns 0 and stores in |*resp| a message the caller frees with
 * protobuf_c_message_free_unpacked(*resp, NULL).  A response that does not
 * parse fails the call with INTERNAL, "grpc: failed to unmarshal the
 * received message: ..." (grpc-go's text).  Other results, and the
 * arguments, are as for grace_grpc_channel_unary; |req| and |resp_desc|
 * are borrowed for the call, and NULL ones give GRACE_EINVAL.
 */
GRACE_EXTERN int
grace_grpc_channel_unary_pb(grace_grpc_channel *ch, const char *method,
                            const struct ProtobufCMessage *req,
                            const struct ProtobufCMessageDescriptor *resp_desc,
                            grace_ctx *ctx, struct ProtobufCMessage **resp,
                            grace_grpc_status *status);

/* ---- Streaming calls ----------------------------------------------------
 *
 * One API for the four kinds of call (unary, server streaming, client
 * streaming, bidi streaming), as grpc-go's ClientStream:
 *
 *   grace_grpc_stream *call;
 *   grace_grpc_stream_start(ch, "/pkg.Svc/Method", ctx, &call);
 *   grace_grpc_stream_send(call, msg, len, GRACE_SECOND);   (any number)
 *   grace_grpc_stream_close_send(call);                     (half-close)
 *   while ((rv = grace_grpc_stream_recv(call, &m, &n, -1)) == 1)
 *     ... use m, n bytes; free(m) ...
 *   grace_grpc_stream_finish(call, &status);  status and trailers
 *   grace_grpc_stream_free(call);
 *
 * Flow control runs end to end.  A message sent is copied into the call's
 * send queue (grace_grpc_channel_options.stream_send_buffer bytes); the
 * I/O thread moves it to the socket as the server's HTTP/2 window allows
 * (RFC 9113 section 5.2), so a server that does not read fills its window,
 * then the queue, and then grace_grpc_stream_send waits and, past its
 * timeout, says "not now" (GRACE_EBUSY): nothing is dropped.  Received
 * messages are queued for grace_grpc_stream_recv; once the queue holds
 * stream_recv_buffer bytes, the stream's receive window is no longer
 * reopened (WINDOW_UPDATE) until the caller reads, so a call holds at
 * most that plus one window (1 MiB) plus one message, however fast the
 * server writes.  The connection's window is reopened as bytes arrive, so
 * one slow reader never stalls the other calls of the connection.
 *
 * Threads: a call belongs to the thread that uses it, but sending on one
 * thread while receiving on another is allowed, as is
 * grace_grpc_stream_cancel from any thread.  The call's context (deadline,
 * cancellation, grpc-timeout) and the channel's GOAWAY handling apply as
 * for unary calls; a call is retried transparently after a refused stream
 * only while none of its request bytes have gone out.
 */

/* A streaming call on a channel.  The details are private. */
typedef struct grace_grpc_stream grace_grpc_stream;

/* One metadata entry: |name| (lower case, NUL terminated) and |value|,
 * |value_len| bytes (NUL terminated too, but may contain NUL bytes). */
typedef struct grace_grpc_metadata {
  const char *name;
  const char *value;
  size_t value_len;
} grace_grpc_metadata;

/*
 * Starts a call of |method| on |ch|.  |method| is copied; |ctx| (NULL: the
 * background context) bounds the whole call as for
 * grace_grpc_channel_unary and is borrowed until grace_grpc_stream_free.
 * The request HEADERS go out at once (dialing first if needed); messages
 * follow with grace_grpc_stream_send.
 *
 * On success stores the call in |*out| and returns 0.  A call that cannot
 * run (the channel is closing, |ctx| is already done) is still returned:
 * it is already finished and grace_grpc_stream_finish gives its status.  On
 * failure leaves |*out| untouched and returns one of:
 *
 * GRACE_EINVAL  |ch|, |method| or |out| is NULL, or |method| does not
 *               start with '/'
 * GRACE_ENOMEM  out of memory
 * or the error of grace_ctx_done_fd(|ctx|).
 *
 * Every call must be freed with grace_grpc_stream_free before
 * grace_grpc_channel_free, which waits for it.  Thread-safe.
 */
GRACE_EXTERN int grace_grpc_stream_start(grace_grpc_channel *ch,
                                         const char *method, grace_ctx *ctx,
                                         grace_grpc_stream **out);

/*
 * Queues one message, |len| bytes of |msg| (copied; NULL when |len| is
 * 0), for sending on |call|.  When the send queue is full, waits up to
 * |timeout| for the I/O thread to make room (0: do not wait; < 0: wait as
 * long as the call lasts).
 *
 * Returns 0 when the message was accepted; it then goes out in order
 * unless the call ends first.  Otherwise returns one of the following
 * negative error codes, and the message was not taken:
 *
 * GRACE_EBUSY    backpressure: the queue stayed full for |timeout| (the
 *                server is not reading); try again later
 * GRACE_ECLOSED  the call has ended (the server answered, or it failed):
 *                grace_grpc_stream_finish says how
 * GRACE_ESTATE   grace_grpc_stream_close_send was called before
 * GRACE_ERANGE   |len| is above INT32_MAX (the call is not affected)
 * GRACE_EINVAL   |call| is NULL, or |msg| is NULL with |len| > 0
 * GRACE_ENOMEM   out of memory
 */
GRACE_EXTERN int grace_grpc_stream_send(grace_grpc_stream *call,
                                        const void *msg, size_t len,
                                        grace_duration timeout);

/*
 * Half-closes |call|: once the queued messages are out, the request stream
 * ends (END_STREAM).  Returns 0, also when the call has already ended or
 * was half-closed before; GRACE_EINVAL when |call| is NULL.
 */
GRACE_EXTERN int grace_grpc_stream_close_send(grace_grpc_stream *call);

/*
 * Takes the next received message of |call|, waiting up to |timeout| for
 * one (0: do not wait; < 0: wait as long as the call lasts).
 *
 * Returns 1 with the message in |*msg|, |*len| bytes, in a buffer
 * allocated with malloc(3) (never NULL, even when empty) that the caller
 * frees.  Returns 0, with |*msg| and |*len| untouched, at the end of the
 * messages: the server ended the call (after an OK status, every message
 * it sent has been returned first; after a failure, unread messages are
 * dropped, as grpc-go's RecvMsg does) and grace_grpc_stream_finish gives the
 * status at once.  Otherwise returns:
 *
 * GRACE_EBUSY   no message arrived within |timeout|
 * GRACE_EINVAL  |call|, |msg| or |len| is NULL
 */
GRACE_EXTERN int grace_grpc_stream_recv(grace_grpc_stream *call, uint8_t **msg,
                                        size_t *len, grace_duration timeout);

/*
 * Cancels |call| as cancelling its context does: if it has not ended, it
 * ends now with CANCELLED, "context canceled", and its stream is reset
 * with RST_STREAM(CANCEL).  Safe from any thread.  NULL-safe.
 */
GRACE_EXTERN void grace_grpc_stream_cancel(grace_grpc_stream *call);

/*
 * Waits until |call| has its status (its context bounds the wait) and
 * stores it in |*status| (see grace_grpc_channel_unary: |*status| must
 * not hold a message; clear it afterwards).  Messages not yet received are
 * dropped, and the receive window reopened so the server can end.
 *
 * Returns 0 for OK, the status code for a failure (as
 * grace_grpc_channel_unary does), or GRACE_EINVAL when |call| or |status|
 * is NULL.
 */
GRACE_EXTERN int grace_grpc_stream_finish(grace_grpc_stream *call,
                                          grace_grpc_status *status);

/*
 * Stores in |*md| and |*n| the trailing metadata of |call| (every
 * non-pseudo field of the block that ended the response, grpc-status and
 * grpc-message included, values as received); empty until the call has
 * ended, or when it ended without trailers.  |*md| is borrowed until
 * grace_grpc_stream_free.  Trailers above 64 entries or 16 KiB in all are
 * not kept.  Returns 0, or GRACE_EINVAL when an argument is NULL.
 */
GRACE_EXTERN int grace_grpc_stream_trailers(grace_grpc_stream *call,
                                            const grace_grpc_metadata **md,
                                            size_t *n);

/*
 * Frees |call|, cancelling it first if it has not ended.  No other
 * function may be running on |call|.  NULL-safe.
 */
GRACE_EXTERN void grace_grpc_stream_free(grace_grpc_stream *call);

#ifdef __cplusplus
}
#endif

#endif /* GRACE_GRPC_CLIENT_H */
