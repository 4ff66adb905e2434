/*
 * grace on a libuv loop the caller owns ("embedded" mode).
 *
 * This header needs libuv's <uv.h> (pkg-config libuv); grace/http.h and
 * grace/grpc.h do not.  By default a server runs its own loop threads
 * (grace_http_server_start).  Started here instead, it runs on one
 * uv_loop_t of the caller, on the caller's thread, beside the caller's own
 * handles (timers, signals, other sockets):
 *
 *   uv_loop_t loop;
 *   uv_loop_init(&loop);
 *   grace_http_server_new(&opts, &srv);          (opts.loops is ignored)
 *   grace_http_server_handle(srv, "/sleep", sleep_handler, NULL);
 *   grace_http_server_listen(srv, ":8000");
 *   grace_http_server_start_uv(srv, &loop);
 *   ... on SIGTERM (a uv_signal_t callback):
 *       grace_http_server_shutdown_uv(srv, 10 * GRACE_SECOND, stopped, NULL);
 *   uv_run(&loop, UV_RUN_DEFAULT);      returns once stopped has run and
 *                                       the caller closed its own handles
 *   grace_http_server_free(srv);
 *   uv_loop_close(&loop);               succeeds: nothing of ours is left
 *
 * Shutdown, drain and force behave as with loop threads (grace/http.h,
 * grace/grpc.h): listeners close at once, idle keep-alive connections
 * close at once, in-flight requests finish with "Connection: close",
 * HTTP/2 and gRPC connections drain through GOAWAY.  Because the caller's
 * thread is the one that runs the loop, waiting there would stop the very
 * loop that has to do the work: the blocking forms (grace_http_server_shutdown,
 * grace_grpc_server_graceful_stop, grace_tcp_server_shutdown) return
 * GRACE_EDEADLK when called on a server's own loop thread, in either
 * mode.  On that thread grace_http_server_shutdown_begin,
 * grace_http_server_close, grace_grpc_server_stop and their TCP
 * counterparts (grace/tcp.h) do not wait in
 * embedded mode: they act at once.  From any other thread every call
 * works as in the threaded mode (it waits for the loop to act), and
 * handlers may answer from other threads: their answers reach the loop
 * through a uv_async_t of ours.
 */
#ifndef GRACE_UV_H
#define GRACE_UV_H

#include <uv.h>

#include "grace/duration.h"
#include "grace/error.h"
#include "grace/grpc.h"
#include "grace/http.h"
#include "grace/tcp.h"

#ifdef __cplusplus
extern "C" {
#endif

/*
 * The end of an embedded server's stop, on its loop: |status| is 0 when
 * everything drained, or GRACE_ETIMEDOUT when the deadline cut what was
 * left (|cut| requests, calls or connections were cut; 0 otherwise).
 * When it runs, every handle the server had on the loop has closed: the
 * caller may free the server here or after uv_run returns.
 */
typedef void (*grace_http_stop_cb)(grace_http_server *srv, int status, int cut,
                                   void *data);
typedef void (*grace_grpc_stop_cb)(grace_grpc_server *srv, int status, int cut,
                                   void *data);
typedef void (*grace_tcp_stop_cb)(grace_tcp_server *srv, int status, int cut,
                                  void *data);

/*
 * Starts |srv| on |loop|, the caller's libuv loop, instead of loop threads
 * of its own (grace_http_options.loops is ignored: one loop).  Call it on
 * the thread that runs |loop|, before or while uv_run runs it.  The server
 * opens its handles (listeners, one uv_async_t, timers) on |loop|; they
 * keep uv_run(UV_RUN_DEFAULT) running until grace_http_server_shutdown_uv
 * completes.  |loop| is borrowed until then.
 *
 * Returns 0, or one of: GRACE_EINVAL (NULL argument), GRACE_ESTATE (no
 * listener, or already started), GRACE_ENOMEM, or a negative libuv error
 * (then nothing of the server is left open on |loop|, except when a
 * listener failed to start: run |loop| once before freeing the server).
 */
GRACE_EXTERN int grace_http_server_start_uv(grace_http_server *srv,
                                            uv_loop_t *loop);

/*
 * The non-blocking graceful shutdown of a server started with
 * grace_http_server_start_uv; on its loop's thread.  It begins at once as
 * grace_http_server_shutdown_begin does (listeners closed and hooks run
 * before it returns), and when the last connection has closed (or, with
 * |timeout| > 0, when |timeout| has passed: the rest is then cut as
 * grace_http_server_close cuts it) it closes every handle of the server on
 * the loop and calls |done| (may be NULL) on the loop.  |timeout| 0 waits
 * without limit.  A shutdown begun before from another thread is joined.
 * grace_http_server_close, on the loop thread, forces it at any time:
 * |done| then reports status 0 and what was cut is counted in the stats.
 *
 * Returns 0 (|done| will run exactly once), or GRACE_EINVAL (NULL server,
 * negative timeout), GRACE_ESTATE (not started with _start_uv, or not on
 * its loop's thread), GRACE_ESHUTDOWN (already called); on error |done|
 * never runs.
 */
GRACE_EXTERN int grace_http_server_shutdown_uv(grace_http_server *srv,
                                               grace_duration timeout,
                                               grace_http_stop_cb done,
                                               void *data);

/* grace_http_server_start_uv for a gRPC server (same contract). */
GRACE_EXTERN int grace_grpc_server_start_uv(grace_grpc_server *srv,
                                            uv_loop_t *loop);

/*
 * grace_grpc_server_graceful_stop without blocking, on the loop's thread
 * of a server started with grace_grpc_server_start_uv: every Health Watch
 * is told NOT_SERVING and ended, connections drain in grpc-go's two GOAWAY
 * phases, and |done| runs on the loop once every connection has closed;
 * with |timeout| > 0 whatever is left then is cut as grace_grpc_server_stop
 * cuts it (|done| gets GRACE_ETIMEDOUT and the number of calls cut).
 * Returns as grace_http_server_shutdown_uv.
 */
GRACE_EXTERN int grace_grpc_server_graceful_stop_uv(grace_grpc_server *srv,
                                                    grace_duration timeout,
                                                    grace_grpc_stop_cb done,
                                                    void *data);

/* grace_http_server_start_uv for the caller's own TCP protocol
 * (grace/tcp.h; same contract, grace_tcp_options.loops is ignored). */
GRACE_EXTERN int grace_tcp_server_start_uv(grace_tcp_server *srv,
                                           uv_loop_t *loop);

/*
 * grace_http_server_shutdown_uv for a TCP server started with
 * grace_tcp_server_start_uv: listeners close at once, every connection is
 * asked to drain (its on_shutdown, idle ones closed, the close spread
 * honoured), and |done| runs on the loop once every connection has closed
 * and every handle of the server with it; with |timeout| > 0 what is left
 * then is cut as grace_tcp_server_close cuts it (GRACE_ETIMEDOUT, and the
 * number of connections cut).  Returns as grace_http_server_shutdown_uv.
 */
GRACE_EXTERN int grace_tcp_server_shutdown_uv(grace_tcp_server *srv,
                                              grace_duration timeout,
                                              grace_tcp_stop_cb done,
                                              void *data);

#ifdef __cplusplus
}
#endif

#endif /* GRACE_UV_H */
