/*
 * grace: a gRPC server with grpc-go's GracefulStop semantics, and more.
 *
 * The server is an HTTP/2 server (grace/http.h) whose requests with a gRPC
 * content-type become calls; plain HTTP handlers can share its port
 * (grace_grpc_server_http).  Messages are protobuf-c messages, decoded
 * before a handler sees them and encoded from what it sends.
 *
 *   grace_grpc_server_new(NULL, &srv);
 *   grace_grpc_server_register(srv, &(grace_grpc_method){
 *       .path = "/Greeter/SayHello", .input = &hello_request__descriptor,
 *       .on_message = say_hello, .on_cancel = say_hello_cancel});
 *   grace_grpc_server_listen(srv, ":50051");
 *   grace_grpc_server_start(srv);
 *   grace_ctx_wait(grace_signal_context(), -1);
 *   grace_grpc_server_graceful_stop(srv, NULL);   (grpc-go's GracefulStop)
 *   grace_grpc_server_free(srv);
 *
 * graceful_stop: the health service turns NOT_SERVING; every listener is
 * closed; each HTTP/2 connection gets GOAWAY(2^31-1) and a PING, then, on
 * the PING's ack, the final GOAWAY with the real last stream id, so no call
 * in flight on the wire is lost; it returns the moment every connection has
 * closed and every handler has finished its call.  With a context it
 * escalates to grace_grpc_server_stop when the context ends (grpc-go's
 * GracefulStop would wait forever for a handler that never returns).
 *
 * Calls: a method's callbacks run on the loop thread of the call's
 * connection.  A handler may answer at once or later, from a timer on
 * grace_grpc_call_loop(call) or from any thread: grace_grpc_call_send and
 * grace_grpc_call_finish are thread-safe.  Sends are flow-controlled: a
 * send the client is not reading fast enough for is refused with
 * GRACE_EBUSY, and grace_grpc_call_on_ready (loop handlers) or
 * grace_grpc_call_send_wait (handlers on threads) wait for room, so a
 * stream's memory stays bounded and no message is dropped.  Every call a
 * handler receives must be finished exactly once, also after it was cancelled
 * (on_cancel): the finish then only releases the call.
 *
 * Dependencies: messages are protobuf-c's.  This header only declares
 * protobuf-c's types, so it compiles without <protobuf-c/protobuf-c.h>;
 * a program that registers typed methods or sends messages includes its
 * generated *.pb-c.h (which includes protobuf-c's header) and links
 * libprotobuf-c itself (pkg-config libprotobuf-c), as its generated code
 * needs.  grace_grpc_call_loop returns libuv's loop: include <uv.h> and
 * link libuv (pkg-config libuv) to start timers on it.
 */
#ifndef GRACE_GRPC_H
#define GRACE_GRPC_H

#include <stddef.h>
#include <stdint.h>

#include "grace/context.h"
#include "grace/error.h"
#include "grace/grpc_status.h"
#include "grace/http.h"

#ifdef __cplusplus
extern "C" {
#endif

/* protobuf-c's message types (ProtobufCMessage and
 * ProtobufCMessageDescriptor of <protobuf-c/protobuf-c.h>) and libuv's loop
 * (uv_loop_t of <uv.h>), declared here so that this header needs neither. */
struct ProtobufCMessage;
struct ProtobufCMessageDescriptor;
struct uv_loop_s;

typedef struct grace_grpc_server grace_grpc_server;
typedef struct grace_grpc_call grace_grpc_call;

typedef struct grace_grpc_method {
  /* "/package.Service/Method"; copied at registration. */
  const char *path;
  /* The request message type; every received message is unpacked with it
   * before on_message.  NULL: on_message gets a grace_grpc_bytes. */
  const struct ProtobufCMessageDescriptor *input;
  /* A request message: a ProtobufCMessage * of type |input| (or a
   * grace_grpc_bytes *), borrowed until the callback returns. */
  void (*on_message)(grace_grpc_call *call, const void *msg, void *data);
  /* The client finished sending (optional). */
  void (*on_half_close)(grace_grpc_call *call, void *data);
  /* The call was cancelled: the client reset the stream, its deadline
   * (grpc-timeout) passed, or the server is stopping hard.  The handler
   * stops its work and finishes the call (optional: without it, a
   * cancelled call waits for the handler's own finish). */
  void (*on_cancel)(grace_grpc_call *call, void *data);
  void *data;
} grace_grpc_method;

/* A message as bytes, for methods without an input descriptor. */
typedef struct grace_grpc_bytes {
  const uint8_t *data;
  size_t len;
} grace_grpc_bytes;

typedef struct grace_grpc_options {
  /* The HTTP/2 server underneath (loops, timeouts, listen backlog).  Its
   * body_timeout and send_timeout apply to every call's stream: a client
   * that sends nothing for body_timeout before it half-closes (a bidi
   * stream that idles, too), or whose window stays shut for send_timeout,
   * has its call reset and cancelled (set 0 to disable either). */
  grace_http_options http;
  /* Largest message received; larger fails the call with
   * RESOURCE_EXHAUSTED.  Default 4 MiB, as grpc-go. */
  size_t max_recv_message;
  /* Largest message sent; default 4 MiB. */
  size_t max_send_message;
  /* Bytes of messages a call may hold accepted but not yet taken by its
   * HTTP/2 stream (whose own queue holds up to as much again), each
   * message counted with its queue entry (about 24 bytes more); a send
   * past it is refused with GRACE_EBUSY (see grace_grpc_call_send).  With
   * one message of up to max_send_message always taken by an empty queue,
   * a client that never reads costs a stream at most about
   * 2 * max_send_buffer + 2 * max_send_message.  Default 256 KiB. */
  size_t max_send_buffer;
} grace_grpc_options;

/* Fills |opts| with the defaults. */
GRACE_EXTERN void grace_grpc_options_init(grace_grpc_options *opts);

/*
 * Creates a server (|opts| copied; NULL for the defaults), with the
 * standard health service grpc.health.v1.Health (Check and Watch) already
 * registered and SERVING.  Returns 0 or GRACE_EINVAL, GRACE_ENOMEM.
 */
GRACE_EXTERN int grace_grpc_server_new(const grace_grpc_options *opts,
                                       grace_grpc_server **out);

/*
 * Registers a method (|m| copied; |m->data| borrowed).  Before start.
 * Returns 0, GRACE_EINVAL (no path or on_message, a path not of the form
 * "/service/method"), GRACE_EBUSY (path registered twice), GRACE_ENOMEM,
 * GRACE_ESTATE (started).
 */
GRACE_EXTERN int grace_grpc_server_register(grace_grpc_server *srv,
                                            const grace_grpc_method *m);

/* Listens on |addr| ("host:port", ":port"), or adopts the listening
 * socket |fd|; see grace_http_server_listen. */
GRACE_EXTERN int grace_grpc_server_listen(grace_grpc_server *srv,
                                          const char *addr);
GRACE_EXTERN int grace_grpc_server_listen_fd(grace_grpc_server *srv, int fd);

/* The local port of listener |index|, or a negative error. */
GRACE_EXTERN int grace_grpc_server_port(grace_grpc_server *srv,
                                        unsigned index);

/*
 * The HTTP server underneath, to add plain HTTP routes on the same port
 * (before start) or read its stats.  Owned by |srv|.
 */
GRACE_EXTERN grace_http_server *grace_grpc_server_http(grace_grpc_server *srv);

/* Starts serving; returns at once.  0 or a negative error. */
GRACE_EXTERN int grace_grpc_server_start(grace_grpc_server *srv);

/*
 * Sets the health status reported for |service| ("" is the whole server)
 * to SERVING (|serving| nonzero) or NOT_SERVING, and tells every Watch.
 * Returns 0, GRACE_ENOMEM, GRACE_ESHUTDOWN (a graceful stop has begun: the
 * status stays NOT_SERVING).  Thread-safe.
 */
GRACE_EXTERN int grace_grpc_server_set_serving(grace_grpc_server *srv,
                                               const char *service,
                                               int serving);

/*
 * Turns every health status NOT_SERVING, for good: the whole server ("")
 * and every service, set or registered (Check("Greeter") too), and tells
 * every Watch; later grace_grpc_server_set_serving calls do not undo it.
 * Calls go on being served: this is readiness, not a stop (a lifecycle
 * group calls it at its first shutdown phase, before its delay).
 * Thread-safe.  Returns 0, or GRACE_EINVAL for NULL.
 */
GRACE_EXTERN int grace_grpc_server_set_all_not_serving(grace_grpc_server *srv);

/*
 * Begins a graceful stop without waiting: health turns NOT_SERVING (Watch
 * calls get it, then end with OK), listeners close, connections get the
 * two-phase GOAWAY.  Returns once the listeners are closed.  |done| (may
 * be NULL) is called once, on a loop thread, the moment the last
 * connection has closed; grace_grpc_server_drained_fd turns readable then.
 * Returns 0, GRACE_ESTATE (not started), GRACE_ESHUTDOWN (already begun).
 */
GRACE_EXTERN int grace_grpc_server_graceful_stop_begin(
    grace_grpc_server *srv, void (*done)(grace_grpc_server *srv, void *data),
    void *data);

/*
 * grpc-go's GracefulStop: begins the graceful stop if it has not begun and
 * blocks until every connection has closed and every call has been
 * finished (returns 0).  If |ctx| ends first it escalates to
 * grace_grpc_server_stop and returns GRACE_ETIMEDOUT (or GRACE_ECANCELED);
 * |cut| (may be NULL) then receives how many calls were cut.  |ctx| NULL
 * waits without limit, as grpc-go does.  On one of the server's own loop
 * threads it returns GRACE_EDEADLK at once (grace_grpc_server_graceful_stop_uv
 * of grace/uv.h is the form for a server on the caller's loop).
 */
GRACE_EXTERN int grace_grpc_server_graceful_stop(grace_grpc_server *srv,
                                                 grace_ctx *ctx, int *cut);

/* Readable once a graceful stop has begun and everything has drained. */
GRACE_EXTERN int grace_grpc_server_drained_fd(grace_grpc_server *srv);

/*
 * grpc-go's Stop: closes every listener and connection at once; calls in
 * flight are cancelled (their on_cancel runs), clients see UNAVAILABLE.
 * Blocks until every connection's socket is closed; returns how many calls
 * were cut.
 */
GRACE_EXTERN int grace_grpc_server_stop(grace_grpc_server *srv);

/*
 * Stops the loops and frees the server (stopping it first if needed).
 * Every call handed to a handler must have been finished.  NULL-safe.
 */
GRACE_EXTERN void grace_grpc_server_free(grace_grpc_server *srv);

/*
 * A context cancelled the moment a graceful stop begins: long-lived
 * streaming handlers watch it to finish early.  Borrowed.
 */
GRACE_EXTERN grace_ctx *grace_grpc_server_stopping_ctx(grace_grpc_server *srv);

/* ---- calls ------------------------------------------------------------- */

/* The method's path ("/Greeter/SayHello"). */
GRACE_EXTERN const char *grace_grpc_call_path(grace_grpc_call *call);

/* The first value of request metadata |key| (lower case), or NULL. */
GRACE_EXTERN const char *grace_grpc_call_metadata(grace_grpc_call *call,
                                                  const char *key);

/* The loop of the call's connection, for timers; loop thread only. */
GRACE_EXTERN struct uv_loop_s *grace_grpc_call_loop(grace_grpc_call *call);

/*
 * A context cancelled when the call is cancelled (see on_cancel) and that
 * carries the call's deadline from grpc-timeout.  Borrowed until the call
 * is finished.  NULL only if out of memory.
 */
GRACE_EXTERN grace_ctx *grace_grpc_call_ctx(grace_grpc_call *call);

/* The handler's own pointer for this call. */
GRACE_EXTERN void grace_grpc_call_set_data(grace_grpc_call *call, void *data);
GRACE_EXTERN void *grace_grpc_call_data(grace_grpc_call *call);

/*
 * Sends a response message: |msg| is packed (copied) at once and queued;
 * messages go out in the order they were accepted, before the finish.
 * Thread-safe; never blocks.  Nothing accepted is dropped while the
 * stream lives; nothing refused is queued.  Returns 0 or one of:
 *
 * GRACE_EBUSY    the call's send queue is full (max_send_buffer: the
 *                client reads slower than the handler writes): nothing
 *                was sent; send again once grace_grpc_call_on_ready's
 *                callback runs, or use grace_grpc_call_send_wait
 * GRACE_ERANGE   larger than max_send_message
 * GRACE_ENOMEM   out of memory
 * GRACE_ESTATE   the call was finished
 * GRACE_ECLOSED  the call was cancelled: nothing more is sent
 */
GRACE_EXTERN int grace_grpc_call_send(grace_grpc_call *call,
                                      const struct ProtobufCMessage *msg);

/* grace_grpc_call_send with raw message bytes (copied). */
GRACE_EXTERN int grace_grpc_call_send_bytes(grace_grpc_call *call,
                                            const void *data, size_t len);

/*
 * grace_grpc_call_send for a handler on a thread of its own: when the
 * queue is full it blocks until there is room (the queue has drained to
 * half), the call ends, or |timeout| passes (negative: no limit; 0: do
 * not wait, as grace_grpc_call_send).  On the call's loop thread it never
 * blocks (it would wait for itself) and answers GRACE_EBUSY at once.
 * Returns what grace_grpc_call_send returns, and GRACE_ETIMEDOUT when
 * |timeout| passed with the queue still full (nothing was sent).  A
 * handler must not finish the call while another of its threads waits
 * here: on_cancel wakes such a waiter (GRACE_ECLOSED) first.
 */
GRACE_EXTERN int grace_grpc_call_send_wait(grace_grpc_call *call,
                                           const struct ProtobufCMessage *msg,
                                           grace_duration timeout);

/* grace_grpc_call_send_wait with raw message bytes (copied). */
GRACE_EXTERN int grace_grpc_call_send_bytes_wait(grace_grpc_call *call,
                                                 const void *data, size_t len,
                                                 grace_duration timeout);

/* Called on the call's loop thread when a send may go on. */
typedef void (*grace_grpc_ready_cb)(grace_grpc_call *call, void *data);

/*
 * Asks for |cb| (with |data|, borrowed until it runs) once, on the call's
 * loop thread, when its send queue has room: at once (from the loop, never
 * from inside this function) if it has room now, else when it has drained
 * to half.  A later call replaces an earlier callback not yet run.  It
 * does not run once the call is cancelled (on_cancel runs instead) or
 * finished.  Thread-safe.  Returns 0, GRACE_EINVAL, GRACE_ESTATE
 * (finished), GRACE_ECLOSED (cancelled); on an error |cb| never runs.
 */
GRACE_EXTERN int grace_grpc_call_on_ready(grace_grpc_call *call,
                                          grace_grpc_ready_cb cb, void *data);

/*
 * Adds response metadata |key|: |value| (both copied) to the call's
 * headers (initial metadata), sent with its first message or, in a
 * trailers-only answer, with its status; or to its trailers, sent with
 * the status.  |key| is lower case (token characters), not "grpc-*",
 * "content-type" nor "te"; a "-bin" key takes its value base64-encoded,
 * as it arrives in grace_grpc_call_metadata.  Keys may repeat.
 * Thread-safe.  Returns 0, GRACE_EINVAL (NULL or a key or value not
 * allowed), GRACE_ENOMEM, GRACE_ESTATE (headers: a message was already
 * sent; both: the call was finished).
 */
GRACE_EXTERN int grace_grpc_call_add_header(grace_grpc_call *call,
                                            const char *key, const char *value);
GRACE_EXTERN int grace_grpc_call_add_trailer(grace_grpc_call *call,
                                             const char *key,
                                             const char *value);

/*
 * Ends the call with status |code| and |message| (copied; NULL for none;
 * sent percent-encoded in grpc-message).  Thread-safe; exactly once per
 * call; |call| is invalid afterwards.  On a cancelled call it only
 * releases the call.
 */
GRACE_EXTERN void grace_grpc_call_finish(grace_grpc_call *call,
                                         grace_grpc_code code,
                                         const char *message);

#ifdef __cplusplus
}
#endif

#endif /* GRACE_GRPC_H */
