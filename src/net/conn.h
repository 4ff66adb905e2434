/*
 * The one transport under every protocol: a connection that owns its
 * socket, its read-ahead, its write queue, its timers, its lingering close
 * and its state (new, active, idle, closed), and drives whatever protocol
 * speaks on it (HTTP/1.1, HTTP/2, a caller's own) through a small table of
 * callbacks: bytes in, flushed out, timer, shutdown, force, close.
 *
 * This is h2o's h2o_socket_t under its per-protocol h2o_conn_callbacks_t:
 * only this file touches the socket, so protocol code is sans-I/O.  A
 * connection can also run with no socket at all (grace__conn_new_mem):
 * tests and fuzzers feed it bytes and read what the protocol wrote.
 *
 * TLS (grace__conn_set_tls) lives here too, on OpenSSL memory BIOs:
 * ciphertext from the socket goes into the SSL, its plaintext to on_read;
 * grace__conn_write goes through SSL_write and the ciphertext joins the
 * write queue, so read-ahead, backpressure and the timers are the same
 * with or without it.
 *
 * Threads: a connection belongs to one loop thread for its whole life;
 * nothing here locks, except the counters of its registry (atomics).
 *
 * Lifetime: the connection holds one reference for its socket; a protocol
 * takes one more for each exchange a handler holds (grace__conn_ref).  The
 * socket closes with grace__conn_close (at once) or grace__conn_end (after
 * the write queue is flushed, lingering while the peer may still send);
 * the struct is freed when the socket is closed and the last reference is
 * gone, never inside the call stack that closed it.
 */
#ifndef GRACE_NET_CONN_H
#define GRACE_NET_CONN_H

#include <netinet/in.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

#include <uv.h>

#include "net/list.h"
#include "net/loop.h"

typedef struct grace__conn grace__conn;
typedef struct grace__conn_loop grace__conn_loop;
typedef struct grace__conn_reg grace__conn_reg;
typedef struct grace__conn_tls grace__conn_tls;
typedef struct grace_tls grace_tls;

/* The deadline lists of a loop, shared by every connection on it.  Each
 * list belongs to one of a connection's timer slots. */
enum {
  GRACE__TL_HEADER = 0, /* read slot: a request's head is being read */
  GRACE__TL_IDLE,       /* read slot: keep-alive, waiting */
  GRACE__TL_BODY,       /* read slot: a body is being read */
  GRACE__TL_LINGER,     /* read slot: lingering close */
  GRACE__TL_SEND,       /* send slot: queued bytes make no progress */
  GRACE__TL_GOAWAY,     /* protocol slot: HTTP/2 PING ack awaited */
  GRACE__TL_STREAM,     /* protocol slot: HTTP/2 stream inactivity sweep */
  GRACE__TL_HANDSHAKE,  /* read slot: TLS handshake (closes, as linger) */
  GRACE__TL_LAST_CALL,  /* read slot: a close spread is over, but the
                         * connection was answered a moment ago */
  GRACE__TL_COUNT
};

/* Connection states, the values of grace_conn_state (grace/http.h). */
enum { GRACE__CS_NEW = 0, GRACE__CS_ACTIVE, GRACE__CS_IDLE, GRACE__CS_CLOSED };

/* What a protocol does with a connection.  Every member but on_read may be
 * NULL.  All run on the connection's loop thread. */
typedef struct grace__conn_proto {
  /* |n| bytes arrived (borrowed for the call).  Returns how many it took
   * (0..n); the rest is kept as read-ahead and offered again after
   * grace__conn_resume, so a protocol that cannot take more (a request is
   * with its handler) pauses the peer: reading stops once the read-ahead
   * is full.  A negative return is a protocol error: reading stops and
   * the protocol is expected to have ended or closed the connection. */
  ssize_t (*on_read)(grace__conn *c, const uint8_t *p, size_t n);
  /* The peer closed its side; every byte before it was offered. */
  void (*on_eof)(grace__conn *c);
  /* The write queue is empty again after it was not. */
  void (*on_flushed)(grace__conn *c);
  /* A deadline of list |list| passed (never GRACE__TL_LINGER, which the
   * connection handles).  Default: close. */
  void (*on_timer)(grace__conn *c, unsigned list);
  /* A graceful shutdown began. */
  void (*on_shutdown)(grace__conn *c);
  /* The connection is about to be closed by force: cancel what handlers
   * hold; returns how many exchanges were cut. */
  unsigned (*on_force)(grace__conn *c);
  /* The socket is closed (for any reason); the protocol cancels its
   * exchanges.  No callback but on_free follows. */
  void (*on_close)(grace__conn *c);
  /* The struct is about to be freed: release the protocol's state. */
  void (*on_free)(grace__conn *c);
  /* Nonzero for a protocol that takes 0 bytes when it needs more to make
   * progress (a line or frame parser, not a paused handler): what it left
   * is offered again, with the bytes that arrived after it, at every
   * read, rather than only after grace__conn_resume.  The read-ahead
   * still bounds what is kept. */
  int reoffer;
} grace__conn_proto;

/* Counters and observers shared by the connections of one server, read
 * from any thread. */
struct grace__conn_reg {
  /* Connections not yet done: allocated, and not lingering with every
   * answer written (a drain waits for 0). */
  atomic_long nconns;
  atomic_uint_fast64_t accepted, active, idle, cut, idle_closed, timeouts;
  /* Read-ahead kept per connection while its protocol is paused (0:
   * GRACE__CONN_READ_AHEAD); set before the first connection. */
  size_t rmax;
  /* Every state change, on the loop thread; may be NULL. */
  void (*on_state)(grace__conn *c, int state, void *data);
  /* A connection was freed (nconns already decremented); may be NULL. */
  void (*on_gone)(grace__conn_reg *reg, void *data);
  void *data;
};

/* The per-loop side: the connections living on a loop, and the buffer
 * every socket read goes through (an idle connection holds no buffer). */
struct grace__conn_loop {
  grace__loop *loop;
  grace__list conns;
  /* Connections with bytes written this loop turn and not yet sent: they
   * are sent together just before the loop waits (one send per connection
   * per turn, not one per answer or frame). */
  grace__list pending;
  uv_prepare_t prepare;
  int prepare_open;
  uint8_t *rbuf;
  size_t rbuf_size;
  uint8_t *tbuf;     /* TLS: ciphertext read from a socket, on its way in */
  int shutting_down; /* a graceful shutdown began */
  int closing;       /* everything is being closed */
};

/* Timer slots of a connection: read (header, idle, body, linger) and
 * send.  A protocol's own deadlines (HTTP/2's GOAWAY and stream sweep)
 * live in its state (grace__conn_ptimer), so a connection that speaks
 * HTTP/1.1, or is idle, carries none of them. */
#define GRACE__CONN_TIMERS 2

/* A deadline of a protocol's own, embedded in the protocol's state: its
 * expiry calls the connection's on_timer with its list (while the
 * connection is neither closed nor ending).  The protocol stops it before
 * its state is freed. */
typedef struct grace__conn_ptimer {
  grace__tnode node;
  grace__conn *conn;
} grace__conn_ptimer;

/* Connection flags. */
enum {
  GRACE__CF_MEM = 1 << 0,         /* no socket: grace__conn_new_mem */
  GRACE__CF_CLOSED = 1 << 1,      /* socket closed */
  GRACE__CF_HANDLE_OPEN = 1 << 2, /* uv_poll handle not yet closed */
  GRACE__CF_EOF = 1 << 3,         /* the peer closed its side */
  GRACE__CF_ENDING = 1 << 4,      /* grace__conn_end: close after flush */
  GRACE__CF_LINGER = 1 << 5,      /* write side shut, discarding input */
  GRACE__CF_PAUSED = 1 << 6,      /* the protocol took less than offered */
  GRACE__CF_IN_READ = 1 << 7,     /* inside on_read */
  GRACE__CF_CUT = 1 << 8,         /* counted as cut already */
  GRACE__CF_RESUME_POSTED = 1 << 9,
  GRACE__CF_SHUTDOWN = 1 << 10,  /* a graceful shutdown began */
  GRACE__CF_UNCOUNTED = 1 << 11, /* no longer in reg->nconns (lingering) */
  /* The protocol kept the connection alive with an answer after its
   * graceful shutdown began (HTTP/1.1 in a close spread's window). */
  GRACE__CF_KEPT_IN_DRAIN = 1 << 12
};

struct grace__conn {
  uv_poll_t poll;
  grace__conn_loop *cl; /* NULL for a memory connection */
  grace__conn_reg *reg;
  grace__list link;  /* in cl->conns */
  grace__list plink; /* in cl->pending while it has bytes to send */
  grace__tnode timer[GRACE__CONN_TIMERS]; /* read, send */
  grace__post post; /* hand-over to the owning loop, deferred resume */
  const grace__conn_proto *proto;
  void *pdata; /* the protocol's state */
  uint64_t id;
  int fd;
  uint32_t flags;
  int refs;
  int events; /* UV_READABLE / UV_WRITABLE being polled */
  uint8_t state;
  /* Read-ahead: bytes read but not yet taken by the protocol. */
  uint8_t *rp;
  size_t rlen, rcap; /* at most the registry's rmax */
  /* Write queue: bytes accepted but not yet written. */
  uint8_t *wp;
  size_t woff, wlen, wcap;
  size_t wmem_room; /* memory connection: bytes the "socket" takes */
  union {
    struct sockaddr sa;
    struct sockaddr_in in;
    struct sockaddr_in6 in6;
  } peer; /* the client's address (TCP) */
  socklen_t peer_len;
  int depth; /* nesting of deliveries (resume inside a read) */
  /* TLS (grace__conn_set_tls): the socket carries ciphertext, the read-ahead
   * and the protocol plaintext; the write queue holds ciphertext. */
  grace__conn_tls *tls;
};

/* A write at least this large, with nothing queued, goes to the socket at
 * once rather than being copied for the end of the loop turn. */
#define GRACE__CONN_DIRECT_WRITE (64 * 1024)

/* Read-ahead kept while the protocol is paused; past it reading stops. */
#define GRACE__CONN_READ_AHEAD (64 * 1024)

/* How long a lingering close waits for the peer's EOF (Go's
 * rstAvoidanceDelay is 500 ms). */
#define GRACE__CONN_LINGER_MS 500

/* Initialises |cl| for |loop|.  Returns 0 or GRACE_ENOMEM. */
int grace__conn_loop_init(grace__conn_loop *cl, grace__loop *loop);
/* On |cl|'s loop (its uv loop initialised): the handle that sends what
 * connections wrote during a loop turn before the loop waits.  Returns 0
 * or a negative libuv error.  The loop closes it with its other handles. */
int grace__conn_loop_open(grace__conn_loop *cl);

/* External loop mode, at stop: closes the handle conn_loop_open opened
 * (grace__loop_close_handle counts it). */
void grace__conn_loop_close(grace__conn_loop *cl);

/* Frees the read buffer; every connection must be gone. */
void grace__conn_loop_free(grace__conn_loop *cl);

/* Sets the timeout of a deadline list on |cl|'s loop (milliseconds; 0:
 * never expires). */
void grace__conn_loop_timeout(grace__conn_loop *cl, unsigned list, uint64_t ms);

/* Routes an expired deadline of |cl|'s loop to its connection. */
void grace__conn_loop_expire(grace__conn_loop *cl, unsigned list,
                             grace__tnode *node);

/* Calls on_shutdown of every connection on |cl| (once). */
void grace__conn_loop_shutdown(grace__conn_loop *cl);

/* Calls |fn| on every connection on |cl|; |fn| may close the one it is
 * given. */
void grace__conn_loop_each(grace__conn_loop *cl, void (*fn)(grace__conn *c));

/* Calls on_force then closes every connection on |cl|; returns the sum of
 * what on_force cut. */
unsigned grace__conn_loop_close_all(grace__conn_loop *cl);

/*
 * Allocates a connection for accepted socket |fd| (any thread: the loop is
 * chosen later) and counts it in |reg|.  Returns NULL when out of memory
 * (|fd| is then still the caller's).
 */
grace__conn *grace__conn_new(grace__conn_reg *reg, int fd,
                             const grace__conn_proto *proto, void *pdata);

/*
 * Runs TLS on |c| (not yet started, not a memory connection) as a server,
 * with the current certificate of |tls|: the handshake (deadline list
 * GRACE__TL_HANDSHAKE) comes before any byte reaches the protocol, which
 * then reads and writes plaintext; grace__conn_end sends close_notify
 * first.  Returns 0 or GRACE_ENOMEM, GRACE_EINVAL.
 */
int grace__conn_set_tls(grace__conn *c, grace_tls *tls);

/* The ALPN protocol the TLS client and |c| agreed on ("h2", "http/1.1"),
 * or NULL (no TLS, no ALPN, handshake not done).  |*len| is its length. */
const char *grace__conn_alpn(const grace__conn *c, unsigned *len);

/* Closes the socket of a connection never started and frees it, without
 * any protocol callback. */
void grace__conn_discard(grace__conn *c);

/* Starts |c| on |cl| (on that loop's thread): registers the socket, state
 * NEW.  On failure closes and frees it and returns a negative error. */
int grace__conn_start(grace__conn *c, grace__conn_loop *cl);

/*
 * A connection with no socket, for tests and fuzzers: what the protocol
 * writes is kept (grace__conn_mem_output), the "socket" takes up to
 * |room| bytes before writes queue (SIZE_MAX: everything), and timers do
 * nothing.  Returns NULL when out of memory.
 */
grace__conn *grace__conn_new_mem(grace__conn_reg *reg,
                                 const grace__conn_proto *proto, void *pdata,
                                 size_t room);
/* Offers |n| bytes to the protocol as if read; |n| 0 is the peer's EOF.
 * As socket reads would, it offers at most GRACE__CONN_READ_AHEAD bytes
 * at a time and stops once the protocol pauses and the read-ahead is
 * full.  Returns how many the connection took (into the protocol or its
 * read-ahead; the caller feeds the rest later), or a negative error once
 * it is closed. */
ssize_t grace__conn_mem_feed(grace__conn *c, const void *p, size_t n);
/* The bytes "written" so far, borrowed; with |take| they are forgotten
 * and |room| more may be written (the peer read them). */
const uint8_t *grace__conn_mem_output(grace__conn *c, size_t *len);
void grace__conn_mem_take(grace__conn *c, size_t n);
/* Frees a memory connection (closing it first). */
void grace__conn_mem_free(grace__conn *c);

/* Replaces the protocol (HTTP/1.1 seeing the HTTP/2 preface); bytes not
 * taken by the old protocol's on_read are offered to the new one. */
void grace__conn_set_proto(grace__conn *c, const grace__conn_proto *proto,
                           void *pdata);

/* Queues |n| bytes (copied); they are sent with everything else written
 * in this loop turn, just before the loop waits (a large write goes to the
 * socket at once when nothing is queued).  Returns 0, or GRACE_ECLOSED
 * (closed or ending), GRACE_ENOMEM, GRACE_ESTATE (TLS handshake not yet
 * done: no protocol has had a byte). */
int grace__conn_write(grace__conn *c, const void *p, size_t n);

/* Bytes accepted and not yet written. */
size_t grace__conn_queued(const grace__conn *c);

/* Offers the read-ahead to the protocol again (it can take more now);
 * safe from inside any callback: deep nesting is deferred to the loop. */
void grace__conn_resume(grace__conn *c);

/* Reads once from the socket now, if it is readable (a graceful shutdown
 * serves what a new or idle connection already sent before closing it). */
void grace__conn_read_now(grace__conn *c);

/* Cuts |c| now: on_force, then close.  Returns what on_force cut. */
unsigned grace__conn_force(grace__conn *c);

/* Closes the socket now (pending writes are dropped). Idempotent. */
void grace__conn_close(grace__conn *c);

/* Closes once the write queue is flushed: shuts the write side down and,
 * when |linger| is set or input is still unread, reads and discards what
 * the peer still sends until its EOF or GRACE__CONN_LINGER_MS, so the
 * close does not become a reset that destroys the last response. */
void grace__conn_end(grace__conn *c, int linger);

/* 1 once close or end was called. */
int grace__conn_closing(const grace__conn *c);

/* Arms the timer slot of |list| (deadline: now + the list's timeout);
 * disarm removes whatever list that slot is in. */
void grace__conn_timer(grace__conn *c, unsigned list);
void grace__conn_timer_stop(grace__conn *c, unsigned list);
/* 1 while the slot of |list| holds a deadline (of any of its lists). */
int grace__conn_timer_armed(const grace__conn *c, unsigned list);

/* A protocol's own deadline for |c| (lists GRACE__TL_GOAWAY and
 * GRACE__TL_STREAM): init once, then arm (now + the list's timeout),
 * stop (idempotent), armed. */
void grace__conn_ptimer_init(grace__conn_ptimer *t, grace__conn *c);
void grace__conn_ptimer_arm(grace__conn_ptimer *t, unsigned list);
void grace__conn_ptimer_stop(grace__conn_ptimer *t);
int grace__conn_ptimer_armed(const grace__conn_ptimer *t);

/* Sets the state reported to the registry (NEW, ACTIVE, IDLE). */
void grace__conn_set_state(grace__conn *c, int state);

/* Counts the connection's exchanges as cut by a timeout (once per call,
 * added to reg->cut and reg->timeouts). */
void grace__conn_count_cut(grace__conn *c, unsigned n);

/* References held by exchanges; the last unref of a closed connection
 * frees it. */
void grace__conn_ref(grace__conn *c);
void grace__conn_unref(grace__conn *c);

/* Begins the graceful shutdown of |c| (once): on_shutdown. */
void grace__conn_shutdown(grace__conn *c);

/* The loop of |c| (NULL for a memory connection), and whether its
 * graceful shutdown began. */
grace__loop *grace__conn_get_loop(const grace__conn *c);
int grace__conn_shutting_down(const grace__conn *c);

#endif /* GRACE_NET_CONN_H */
