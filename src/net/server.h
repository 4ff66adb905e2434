/*
 * The server layer the HTTP server (src/http/server.c) and the caller's
 * own TCP protocol (src/tcp/server.c) share: listeners, the loops (threads
 * of ours or the caller's loop), connections handed round robin to the
 * loops, the close spread's window, and the coordination of shutdown,
 * drain and close across the loops.  The protocol embeds a grace__server
 * and supplies what differs through grace__server_ops.
 */
#ifndef GRACE_NET_SERVER_H
#define GRACE_NET_SERVER_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include <uv.h>

#include "core/clock_int.h"
#include "grace/context.h"
#include "grace/duration.h"
#include "net/conn.h"
#include "net/listener.h"
#include "net/loop.h"

/* Event bits raised on the loops. */
#define GRACE__SV_EV_SHUTDOWN 0x1u
#define GRACE__SV_EV_CLOSE 0x2u

/* Where a graceful shutdown stands for one connection
 * (grace__server_drain_stage). */
enum {
  GRACE__DRAIN_NONE = 0, /* none began, or the close spread has not reached
                          * the connection yet */
  GRACE__DRAIN_DUE,      /* its moment in the close spread passed */
  GRACE__DRAIN_NOW       /* draining (no spread, or its window is over) */
};

typedef struct grace__server grace__server;

/* Per-loop state; the protocol's per-loop struct embeds it. */
typedef struct grace__server_loop {
  grace__server *sv;
  grace__conn_loop cl;
  /* The end of the close spread's window on this loop (one timer for
   * every connection); spread_over once it fired. */
  uv_timer_t spread_timer;
  uint8_t spread_over;
} grace__server_loop;

typedef struct grace__server_ops {
  /* The protocol table an accepted connection starts with. */
  const grace__conn_proto *proto;
  /* The per-loop state of loop |index|. */
  grace__server_loop *(*loop_at)(grace__server *sv, unsigned index);
  /* On the loop thread, once the loop's handles are open: sets the
   * connection timeouts of |sl| (grace__conn_loop_timeout). */
  void (*loop_open)(grace__server_loop *sl);
  /* On the connection's loop: gives |c| its protocol and starts it (or
   * discards it). */
  void (*adopt)(grace__server_loop *sl, grace__conn *c);
  /* The window of the close spread is over: called for each connection. */
  void (*spread_over)(grace__conn *c);
  /* The drain completed: the protocol's drained callback, if any. */
  void (*drained)(grace__server *sv);
  /* Embedded mode: every handle closed; reports the stop's end (may be
   * NULL for a protocol that is never embedded). */
  void (*stopped)(grace__server *sv, int status, int cut);
} grace__server_ops;

struct grace__server {
  const grace__server_ops *ops;
  unsigned nloops;
  int backlog;
  grace__conn_reg reg;
  grace__loopset set;
  grace__listener *listeners; /* after start, owned by loop 0 */
  int *listen_fds;            /* -1 once a listener owns it */
  int *ports;
  unsigned nlisteners;
  atomic_uint next_loop;
  atomic_uint_fast64_t next_id;
  atomic_int started;
  atomic_int shutdown;
  atomic_int listeners_closed;
  atomic_int drained;
  atomic_int closed;
  /* The close spread (the option, raised by grace__server_set_close_spread
   * until shutdown begins), and the window the shutdown opened: spread_len
   * long from spread_begin (server clock); written before the loops learn
   * of the shutdown, read only after it. */
  _Atomic grace_duration close_spread;
  int64_t spread_begin;
  grace_duration spread_len;
  grace__clock clock; /* grace_now unless a test installs one */
  int drained_fd;
  pthread_mutex_t lock;
  pthread_cond_t cond;
  unsigned loops_acked; /* under lock: loops that finished a close */
  int cut;              /* under lock: what the close cut */
  /* Embedded mode, on the loop thread: the stop asked by
   * grace__server_shutdown_uv and how it ended. */
  int uv_stop_asked;
  int uv_status;
  atomic_int uv_stopped; /* every handle of ours closed */
};

/* Initialises |sv| (|nloops| loops; 0: one per core).  Returns 0,
 * GRACE_EINVAL (more than 256 loops) or a negative errno. */
int grace__server_init(grace__server *sv, const grace__server_ops *ops,
                       unsigned nloops, int backlog,
                       grace_duration close_spread);

/* Stops what runs (threads: joined; embedded: it must have stopped, or
 * the process aborts with a message naming |who|) and frees what init
 * and start allocated. */
void grace__server_free(grace__server *sv, const char *who);

/* grace_*_server_listen, _listen_fd and _port. */
int grace__server_listen(grace__server *sv, const char *addr);
int grace__server_listen_fd(grace__server *sv, int fd);
int grace__server_port(grace__server *sv, unsigned index);

/* Starts on loop threads of ours (|uv| NULL), or on the caller's loop
 * |uv| from its thread (one loop).  Returns 0, GRACE_ESTATE (no listener,
 * already started), GRACE_ENOMEM or a negative libuv error. */
int grace__server_start(grace__server *sv, uv_loop_t *uv);

/* True when the caller is on one of |sv|'s loop threads. */
int grace__server_on_loop(grace__server *sv);

/* What the protocol does when its shutdown begins (each may be NULL):
 * |locked| under sv->lock just before the shutdown flag is set (what the
 * drain's callbacks read), |begun| once it is set, before the loops learn
 * of it.  Neither runs when the shutdown had begun already. */
typedef struct grace__server_begin {
  void (*locked)(grace__server *sv, void *arg);
  void (*begun)(grace__server *sv, void *arg);
  void *arg;
} grace__server_begin;

/* Begins the graceful shutdown and returns once the listeners are closed
 * (on the loop of an embedded server: at once).  |b| may be NULL.
 * Returns 0, GRACE_ESTATE, GRACE_ESHUTDOWN (begun already) or
 * GRACE_EDEADLK (on the thread of loop 0 of a threaded server). */
int grace__server_shutdown_begin(grace__server *sv,
                                 const grace__server_begin *b);

/* Waits until drained (0) or |ctx| ends (its error); GRACE_EDEADLK on one
 * of the server's loop threads.  The shutdown must have begun. */
int grace__server_shutdown_wait(grace__server *sv, grace_ctx *ctx);

/* Cuts every connection left; returns how many requests were cut, or
 * GRACE_EDEADLK on a loop thread of a threaded server. */
int grace__server_close(grace__server *sv);

/* Embedded: begins the shutdown (if not begun, with |b| as for
 * grace__server_shutdown_begin) and, once drained or cut at |timeout|
 * (> 0), closes every handle and calls ops->stopped.  On the loop's
 * thread; ops->stopped runs on a later turn of the loop, never before
 * this has returned.  Returns 0 (begun now), 1 (joined a shutdown begun
 * before), GRACE_EINVAL, GRACE_ESTATE or GRACE_ESHUTDOWN (asked already). */
int grace__server_shutdown_uv(grace__server *sv, grace_duration timeout,
                              const grace__server_begin *b);

/* The close spread: raises the option (never lowers it). */
void grace__server_set_close_spread(grace__server *sv, grace_duration d);
/* Fixes the window as if the shutdown began now. */
void grace__server_spread_begin(grace__server *sv);
/* Where in the window connection |id| gets its moment. */
grace_duration grace__server_spread_offset(const grace__server *sv,
                                           uint64_t id);
/* Where the shutdown stands for connection |id| on |sl| (NULL: a memory
 * connection); GRACE__DRAIN_*. */
int grace__server_drain_stage(const grace__server *sv,
                              const grace__server_loop *sl, uint64_t id);

/* Accept back-offs summed over the listeners. */
uint64_t grace__server_accept_backoffs(grace__server *sv);

#endif /* GRACE_NET_SERVER_H */
