/*
 * grace: a TCP server for a protocol of the caller's own (a line protocol,
 * a binary framing, anything that is not HTTP or gRPC), with the graceful
 * shutdown the HTTP server has.
 *
 * The caller implements its protocol in a few callbacks; the library owns
 * the sockets (the same transport as HTTP and gRPC: read-ahead, write
 * queue, timeouts, lingering close), the listeners, the event loops, and
 * the drain:
 *
 *   static size_t on_data(grace_tcp_conn *conn, const char *p, size_t n,
 *                         void *data) {
 *     const char *nl = memchr(p, '\n', n);
 *     if (nl == NULL)
 *       return 0;                            // wait for the rest of the line
 *     grace_tcp_conn_write(conn, "+PONG\r\n", 7);
 *     return (size_t)(nl - p) + 1;           // one line taken
 *   }
 *
 *   grace_tcp_callbacks cb = {.on_data = on_data};
 *   grace_tcp_server *srv;
 *   grace_tcp_server_new(NULL, &cb, NULL, &srv);
 *   grace_tcp_server_listen(srv, ":6380");
 *   grace_group_add_tcp(group, "line", srv);   // or _start and _shutdown
 *
 * Busy and idle.  A connection is idle unless its protocol says it is busy
 * (grace_tcp_conn_set_busy): a command is in progress, its answer is still
 * to come.  Busy connections are "active" in the counters, and a graceful
 * shutdown waits for them; idle ones are closed by it.
 *
 * Shutdown (grace_tcp_server_shutdown_begin, or the group's drain):
 *  1. every listener is closed at once (connections already in the accept
 *     queue are accepted first, so they are not reset): a new connection
 *     is refused from then on;
 *  2. on_shutdown runs for every connection;
 *  3. an idle connection is closed at once, after the bytes it had already
 *     sent are offered to on_data (a command that arrived just before is
 *     answered) and its answers are written; unless on_shutdown asked to
 *     keep it (the protocol then ends it itself), or it holds the first
 *     bytes of a command (input on_data left: it is closed once that
 *     command is answered, or by the read timeout);
 *  4. a busy connection is left to finish: it is closed once it turns idle
 *     (grace_tcp_conn_set_busy false, after the commands already received
 *     are served) or when the protocol ends it (grace_tcp_conn_end);
 *  5. the shutdown is complete the moment the last connection has closed:
 *     a descriptor (grace_tcp_server_drained_fd) becomes readable, no
 *     polling.
 * With a close spread (options.close_spread, raised by a hand-over to a
 * new process, grace/upgrade.h), step 3 waits: each idle connection gets
 * its moment in the window, after which it is closed the next time it
 * turns idle after a command; what is still idle at the window's end is
 * closed then.  A client that opened a connection an instant before the
 * listener closed thus has the window to send its command.
 * grace_tcp_server_close cuts whatever is left, at once, and says how many
 * busy connections it cut.
 *
 * Threads.  The server runs one libuv loop per thread; each connection
 * lives on one loop for its whole life, and every callback of a connection
 * runs on that loop's thread.  The grace_tcp_conn_* functions are called on
 * that thread too: in a callback, or from a libuv handle (a timer) on
 * grace_tcp_conn_loop(conn).  Another thread hands work back with
 * grace_tcp_conn_hold and grace_tcp_conn_post.  The grace_tcp_server_*
 * functions are called from any thread but the loops'.
 *
 * Dependencies: this header needs no other library's header.  A protocol
 * that starts timers on grace_tcp_conn_loop includes <uv.h> and links
 * libuv itself (pkg-config libuv).
 */
#ifndef GRACE_TCP_H
#define GRACE_TCP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <sys/socket.h>

#include "grace/context.h"
#include "grace/duration.h"
#include "grace/error.h"

#ifdef __cplusplus
extern "C" {
#endif

/* libuv's loop (uv_loop_t of <uv.h>), declared so that this header does
 * not need <uv.h>. */
struct uv_loop_s;

/* The server.  Opaque; grace_tcp_server_new / grace_tcp_server_free. */
typedef struct grace_tcp_server grace_tcp_server;

/*
 * One connection, handed to the callbacks.  Valid from on_open until
 * on_close has returned (longer while held: grace_tcp_conn_hold).
 */
typedef struct grace_tcp_conn grace_tcp_conn;

/*
 * The protocol: the callbacks the library calls, each on the connection's
 * loop thread, each with the |data| given to grace_tcp_server_new.  Only
 * on_data is required.  The struct is copied.
 */
typedef struct grace_tcp_callbacks {
  /*
   * A connection was accepted.  The protocol may set its user data
   * (grace_tcp_conn_set_data), write a greeting, or close it.
   */
  void (*on_open)(grace_tcp_conn *conn, void *data);
  /*
   * |len| bytes arrived (|bytes| borrowed for the call; len > 0).
   * Returns how many it consumed, from the front: 0..len.  The rest is
   * kept and offered again, with the bytes that arrive after it, at the
   * next read; also at grace_tcp_conn_resume, when the connection stops
   * being busy, and when its write queue has drained.  A protocol takes
   * every complete message it can handle now and leaves a partial one
   * for later.  When it consumed some but not all, it is called again at
   * once with the rest; when it consumed nothing, the rest waits.  At
   * most options.max_input bytes are kept: past that the library stops
   * reading, and TCP flow control pauses the peer (backpressure).  While
   * more than options.write_high_water bytes wait to be written, on_data
   * is not called: a peer that does not read its answers is not read
   * either.  May write, set busy, end or close the connection.
   */
  size_t (*on_data)(grace_tcp_conn *conn, const char *bytes, size_t len,
                    void *data);
  /*
   * A graceful shutdown began (once per connection; for a connection
   * accepted during the shutdown, right after on_open).  The protocol may
   * write a last word.  Returns 0 to let the library close the connection
   * as the top of this file says, or 1 to keep it: the library then never
   * closes it for the drain, and the protocol ends it itself (the drain
   * waits for it, and the deadline cuts it).
   */
  int (*on_shutdown)(grace_tcp_conn *conn, void *data);
  /*
   * Writing may go on: the write queue drained after a write was refused
   * with GRACE_EBUSY (once per refusal).
   */
  void (*on_writable)(grace_tcp_conn *conn, void *data);
  /*
   * The connection is closed, for whatever reason (the protocol, the
   * peer, a timeout, the shutdown, a force), and nothing was written
   * after that.  Called on the loop, never from inside a call of the
   * protocol's (grace_tcp_conn_write, _end, _close), so the protocol may
   * free its user data here; stop its timers too.  No callback follows.
   * Only for connections that had on_open.
   */
  void (*on_close)(grace_tcp_conn *conn, void *data);
} grace_tcp_callbacks;

/* A completion callback (grace_tcp_server_shutdown_begin). */
typedef void (*grace_tcp_cb)(grace_tcp_server *srv, void *data);

/*
 * The settings.  Fill with grace_tcp_options_init, then set what you
 * need.
 */
typedef struct grace_tcp_options {
  /* sizeof(grace_tcp_options) as the caller compiled it; set by
   * grace_tcp_options_init.  Do not change it. */
  size_t size;
  /* Event-loop threads; 0 means one per available core. */
  unsigned loops;
  /* How long an idle connection (not busy, no partial command) may stay
   * silent before it is closed (Redis' timeout).  0 (the default): no
   * limit. */
  grace_duration idle_timeout;
  /* Longest pause between two reads while a command is partly received
   * (bytes on_data left, the connection not busy): a peer that stalls
   * longer is cut (counted in timeouts).  0 disables it.  Default 60 s. */
  grace_duration read_timeout;
  /* Longest pause between two writes that make progress while answers
   * wait to be written (nginx's send_timeout): a peer that stops reading
   * is cut (counted in timeouts).  0 disables it.  Default 60 s. */
  grace_duration send_timeout;
  /* Spread the closing of idle connections over this long once a graceful
   * shutdown begins (see the top of this file).  0 (the default): idle
   * connections are closed at once.  Negative is GRACE_EINVAL. */
  grace_duration close_spread;
  /* Most input kept that on_data did not consume, per connection; past
   * it reading stops.  Default 64 KiB; 1 KiB to 1 GiB. */
  size_t max_input;
  /* Bytes queued for writing past which grace_tcp_conn_write refuses
   * (GRACE_EBUSY) and on_data is not called.  A connection holds at most
   * this plus one write.  Default 256 KiB; at most 1 GiB. */
  size_t write_high_water;
  /* listen(2) backlog.  Default 511. */
  int backlog;
} grace_tcp_options;

/* Fills |opts| with the defaults documented above. */
GRACE_EXTERN void grace_tcp_options_init(grace_tcp_options *opts);

/*
 * Creates a server for the protocol |cb| (copied; on_data required).
 * |opts| is copied (NULL means the defaults).  |data| is passed to every
 * callback; borrowed until grace_tcp_server_free.  Ignores SIGPIPE for the
 * process.  Returns 0 and stores the server in |*out|, or:
 *
 * GRACE_EINVAL  |cb|, cb->on_data or |out| is NULL, an option is out of
 *               range, or opts->size is larger than this library knows
 * GRACE_ENOMEM  out of memory (or another negated errno: no eventfd)
 */
GRACE_EXTERN int grace_tcp_server_new(const grace_tcp_options *opts,
                                      const grace_tcp_callbacks *cb,
                                      void *data, grace_tcp_server **out);

/*
 * Opens a listening TCP socket on |addr|, Go style: "host:port", ":port"
 * (every address), "[::1]:port"; port 0 picks a free port (see
 * grace_tcp_server_port).  May be called several times.  Only before
 * grace_tcp_server_start.  Returns 0 or GRACE_EINVAL (bad address text),
 * GRACE_EADDRINUSE, another bind or listen errno, GRACE_ESTATE (started).
 */
GRACE_EXTERN int grace_tcp_server_listen(grace_tcp_server *srv,
                                         const char *addr);

/*
 * Adopts an already listening socket |fd| (systemd socket activation,
 * grace_upgrader_listen).  Ownership of |fd| is transferred on success.
 * Returns 0, GRACE_EINVAL (not a listening stream socket), GRACE_ESTATE.
 */
GRACE_EXTERN int grace_tcp_server_listen_fd(grace_tcp_server *srv, int fd);

/*
 * The local port of listener number |index| (in the order they were
 * added), or GRACE_EINVAL if there is no such listener.
 */
GRACE_EXTERN int grace_tcp_server_port(grace_tcp_server *srv, unsigned index);

/*
 * Starts the loop threads and accepting.  Returns at once with 0, or
 * GRACE_ESTATE (no listener, or started already), or a negative system
 * error.
 */
GRACE_EXTERN int grace_tcp_server_start(grace_tcp_server *srv);

/*
 * Raises the close spread (options.close_spread) to |d| if |d| is larger:
 * a program handing over to a successor asks for one just before the
 * drain begins (the group's part does).  Any thread; a later call does not
 * change a shutdown that has begun.  NULL-safe.
 */
GRACE_EXTERN void grace_tcp_server_set_close_spread(grace_tcp_server *srv,
                                                    grace_duration d);

/*
 * Begins a graceful shutdown (see the top of this file) and returns once
 * every listener is closed.  |drained| (may be NULL) is called once, on a
 * loop thread, the moment the last connection has closed; the drained
 * descriptor becomes readable at the same moment.  Returns 0, or
 * GRACE_ESTATE (not started), GRACE_ESHUTDOWN (begun already: nothing is
 * done), GRACE_EINVAL.
 */
GRACE_EXTERN int grace_tcp_server_shutdown_begin(grace_tcp_server *srv,
                                                 grace_tcp_cb drained,
                                                 void *data);

/*
 * Begins the shutdown if it has not begun, then blocks until every
 * connection has closed (returns 0) or |ctx| is done (returns
 * grace_ctx_err(ctx): GRACE_ETIMEDOUT or GRACE_ECANCELED; the connections
 * are left open, for grace_tcp_server_close).  |ctx| NULL waits without
 * limit.  On one of the server's own loop threads it returns GRACE_EDEADLK
 * at once (grace_tcp_server_shutdown_uv of grace/uv.h is the form for a
 * server on the caller's loop).
 */
GRACE_EXTERN int grace_tcp_server_shutdown(grace_tcp_server *srv,
                                           grace_ctx *ctx);

/*
 * A descriptor that becomes readable once the shutdown has begun and the
 * last connection has closed.  Owned by the server.
 */
GRACE_EXTERN int grace_tcp_server_drained_fd(grace_tcp_server *srv);

/*
 * Closes every listener and every connection at once (a force).  Blocks
 * until every connection's socket is closed and its on_close has run (on
 * its loop's thread).  Returns the number of busy connections that were
 * cut, or GRACE_EDEADLK on one of the server's loop threads (on the loop
 * of a server started with grace_tcp_server_start_uv it cuts at once).
 * Calls after the first return 0.
 */
GRACE_EXTERN int grace_tcp_server_close(grace_tcp_server *srv);

/*
 * Stops the loops and frees the server, closing it first if it runs.
 * Every hold (grace_tcp_conn_hold) must have been posted before.  Not
 * from a loop thread.  NULL-safe.
 */
GRACE_EXTERN void grace_tcp_server_free(grace_tcp_server *srv);

/* Counters, read at any time from any thread (each value is atomic). */
typedef struct grace_tcp_stats {
  uint64_t conns_accepted;
  uint64_t conns_open; /* open, not yet closed (or lingering) */
  uint64_t conns_busy; /* of which busy: a command in progress */
  uint64_t conns_idle; /* of which idle */
  uint64_t busy_total; /* times a connection turned busy (commands) */
  /* Busy connections closed before they turned idle other than by
   * grace_tcp_conn_end: by a force, a timeout, the peer leaving, or the
   * protocol's grace_tcp_conn_close. */
  uint64_t conns_cut;
  /* Connections the shutdown closed idle (at its beginning, or at the end
   * of the close spread); not those it closed after an answer. */
  uint64_t idle_closed_on_shutdown;
  uint64_t timeouts;        /* connections cut by the read or send timeout */
  uint64_t accept_backoffs; /* times accept backed off on EMFILE/ENFILE */
} grace_tcp_stats;

/* Fills |out|.  Any thread. */
GRACE_EXTERN void grace_tcp_server_stats(grace_tcp_server *srv,
                                         grace_tcp_stats *out);

/* ---- connections -------------------------------------------------------
 *
 * On the connection's loop thread (see the top of this file), except
 * grace_tcp_conn_post.
 */

/*
 * Queues |len| bytes (copied) to be sent.  Returns:
 *
 * 0              accepted (all of it)
 * GRACE_EBUSY    more than options.write_high_water bytes wait to be
 *                written: nothing was taken; on_writable runs once they
 *                have been
 * GRACE_ECLOSED  the connection is closed or ending (nothing is sent)
 * GRACE_ENOMEM   out of memory (the connection is then closed)
 *
 * A write that finds the peer gone closes the connection and returns
 * GRACE_ECLOSED; on_close follows later, on the loop.
 */
GRACE_EXTERN int grace_tcp_conn_write(grace_tcp_conn *conn, const void *bytes,
                                      size_t len);

/*
 * Marks a command in progress (|busy| true: the connection is active, a
 * graceful shutdown waits for it, the read and idle timeouts do not run)
 * or done (false: idle again).  Turning idle offers the input kept
 * meanwhile to on_data again; during a shutdown, a connection that is
 * then idle with nothing left to serve is closed after its answers are
 * written (unless on_shutdown kept it; with a close spread, once its
 * moment has come).  Each turn to busy counts one in busy_total.  Does
 * nothing on a closed connection.
 */
GRACE_EXTERN void grace_tcp_conn_set_busy(grace_tcp_conn *conn, bool busy);

/* True while busy. */
GRACE_EXTERN bool grace_tcp_conn_is_busy(grace_tcp_conn *conn);

/*
 * Closes the connection once its answers are written: the command in
 * progress is done (the connection is no longer busy, and counts as
 * completed, not cut); no more input is delivered; the write side is shut
 * and what the peer still sends is read and discarded until it closes or
 * half a second passes (a lingering close, so that the close does not
 * reset the last answer).  Idempotent.
 */
GRACE_EXTERN void grace_tcp_conn_end(grace_tcp_conn *conn);

/*
 * Closes the connection now; what is queued is dropped.  A busy connection
 * counts as cut.  Idempotent.
 */
GRACE_EXTERN void grace_tcp_conn_close(grace_tcp_conn *conn);

/* True once the connection is closed or ending: writes are refused. */
GRACE_EXTERN bool grace_tcp_conn_closed(grace_tcp_conn *conn);

/* True once a graceful shutdown reached the connection. */
GRACE_EXTERN bool grace_tcp_conn_shutting_down(grace_tcp_conn *conn);

/*
 * Offers the input kept (what on_data left) to on_data again, now: for a
 * protocol that left input for a reason of its own.  Safe from a callback.
 */
GRACE_EXTERN void grace_tcp_conn_resume(grace_tcp_conn *conn);

/* Bytes accepted by grace_tcp_conn_write and not yet sent. */
GRACE_EXTERN size_t grace_tcp_conn_queued(grace_tcp_conn *conn);

/* The protocol's pointer for this connection (NULL until set). */
GRACE_EXTERN void grace_tcp_conn_set_data(grace_tcp_conn *conn, void *data);
GRACE_EXTERN void *grace_tcp_conn_data(grace_tcp_conn *conn);

/* A number unique to the connection for the server's lifetime (from 1). */
GRACE_EXTERN uint64_t grace_tcp_conn_id(grace_tcp_conn *conn);

/* The server the connection was accepted by. */
GRACE_EXTERN grace_tcp_server *grace_tcp_conn_server(grace_tcp_conn *conn);

/*
 * Copies the peer's address into |addr| (at most |*len| bytes) and stores
 * its length in |*len|.  Returns 0, or GRACE_ENOENT when it is not known.
 */
GRACE_EXTERN int grace_tcp_conn_peer(grace_tcp_conn *conn,
                                     struct sockaddr *addr, socklen_t *len);

/*
 * The loop the connection lives on (a uv_loop_t *: include <uv.h> to use
 * it), for timers that answer later; the protocol closes them itself (in
 * on_close at the latest).
 */
GRACE_EXTERN struct uv_loop_s *grace_tcp_conn_loop(grace_tcp_conn *conn);

/* Runs on the connection's loop thread (grace_tcp_conn_post). */
typedef void (*grace_tcp_post_cb)(grace_tcp_conn *conn, void *data);

/*
 * Keeps |conn| (the handle, not the socket) valid until a matching
 * grace_tcp_conn_post has run, so that another thread working on a
 * command can hand its answer back.  Each hold is released by exactly one
 * post.  On the loop thread.
 */
GRACE_EXTERN void grace_tcp_conn_hold(grace_tcp_conn *conn);

/*
 * From any thread, for a connection held with grace_tcp_conn_hold: runs
 * |fn|(|conn|, |data|) on the connection's loop thread, then releases the
 * hold.  |fn| runs even if the connection closed meanwhile (its writes
 * then fail: check grace_tcp_conn_closed).  Returns 0, or GRACE_ENOMEM
 * (nothing posted, the hold stays), GRACE_ESTATE (a connection with no
 * loop).
 */
GRACE_EXTERN int grace_tcp_conn_post(grace_tcp_conn *conn,
                                     grace_tcp_post_cb fn, void *data);

#ifdef __cplusplus
}
#endif

#endif /* GRACE_TCP_H */
