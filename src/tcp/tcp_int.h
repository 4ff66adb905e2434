/*
 * Internals of the TCP server (grace/tcp.h).  Only src/tcp/ and the unit
 * tests include this.
 *
 *   server.c  options, listeners, loops, the shutdown and the close
 *             across the loops, counters
 *   conn.c    the caller's protocol as a grace__conn_proto on the one
 *             transport (net/conn.h), and the connection handle
 */
#ifndef GRACE_TCP_INT_H
#define GRACE_TCP_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include <uv.h>

#include "core/clock_int.h"
#include "grace/tcp.h"
#include "net/conn.h"
#include "net/listener.h"
#include "net/loop.h"
#include "net/server.h"

/* Per-loop state: the shared layer's. */
typedef struct grace__tcp_loop {
  grace__server_loop base;
} grace__tcp_loop;

/* Where a graceful shutdown stands for one connection: GRACE__DRAIN_NONE
 * (none began, or the close spread has not reached it yet), _DUE (its
 * moment passed: closed the next time it turns idle after a command),
 * _NOW (no spread, or its window is over: closed as soon as it is idle). */

struct grace_tcp_server {
  grace__server sv; /* listeners, loops, shutdown, drain, close */
  grace_tcp_options opts;
  grace_tcp_callbacks cb;
  void *data;
  grace__tcp_loop *tls;
  atomic_uint_fast64_t st_busy_total;
  grace_tcp_cb drained_cb;
  void *drained_data;
  /* Embedded mode: what grace_tcp_server_shutdown_uv reports to. */
  void (*uv_done)(grace_tcp_server *srv, int status, int cut, void *data);
  void *uv_done_data;
};

/* Connection flags (grace_tcp_conn.flags). */
enum {
  GRACE__TC_OPENED = 1 << 0,      /* on_open ran: callbacks may follow */
  GRACE__TC_BUSY = 1 << 1,        /* a command in progress */
  GRACE__TC_EOF = 1 << 2,         /* the peer closed its side */
  GRACE__TC_KEEP = 1 << 3,        /* on_shutdown kept it */
  GRACE__TC_WRITE_HELD = 1 << 4,  /* input held: too much to write */
  GRACE__TC_WANT_WRITABLE = 1 << 5, /* a write was refused */
  GRACE__TC_IN_DATA = 1 << 6,     /* inside on_data */
  GRACE__TC_SHUTDOWN_PENDING = 1 << 7 /* shutdown came before on_open */
};

struct grace_tcp_conn {
  grace__conn *c;
  grace_tcp_server *srv;
  grace__tcp_loop *tl; /* NULL for a memory connection */
  void *user;
  uint32_t flags;
  grace__post close_post; /* on_close, delivered on the loop */
};

/* The transport's protocol table of a caller's protocol. */
extern const grace__conn_proto grace__tcp_proto;

/* Allocates the protocol state of connection |c| (not yet started). */
grace_tcp_conn *grace__tcp_conn_new(grace_tcp_server *srv, grace__tcp_loop *tl,
                                    grace__conn *c);

/* On the loop, once |t|'s connection has started: on_open, then what a
 * shutdown that came first asks. */
void grace__tcp_conn_open(grace_tcp_conn *t);

/* The window of the close spread is over on a loop: closes |c| if idle. */
void grace__tcp_spread_over(grace__conn *c);

/* Where the shutdown stands for |t| (GRACE__DRAIN_*). */
int grace__tcp_drain_stage(const grace_tcp_conn *t);

/* Where in the close spread connection |id| gets its moment. */
grace_duration grace__tcp_spread_offset(const grace_tcp_server *srv,
                                        uint64_t id);

/* For tests: the server reads time from |clock| (copied). */
void grace__tcp_server_set_clock(grace_tcp_server *srv,
                                 const grace__clock *clock);

/*
 * For tests: a connection with no socket (grace__conn_new_mem) speaking
 * the protocol of |srv|, which need not be started; on_open has run.
 * |room| as grace__conn_new_mem.  Its on_close runs at once, not on a
 * loop.  Returns NULL when out of memory.  Free with grace__conn_mem_free.
 */
grace__conn *grace__tcp_mem_conn(grace_tcp_server *srv, size_t room);

/* For tests: fixes the close spread of a server that is not started as
 * if its shutdown began now. */
void grace__tcp_spread_begin(grace_tcp_server *srv);

#endif /* GRACE_TCP_INT_H */
