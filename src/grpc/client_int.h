/*
 * grace: the gRPC client channel.  See include/grace/grpc_client.h for the
 * contract; the grpc-go code each behaviour follows is named where it is
 * implemented (internal/transport/http2_client.go unless said otherwise).
 *
 * Threads and ownership.  A channel has one I/O thread that owns every
 * connection, every nghttp2 session and every call in flight ("op"); it
 * sleeps in poll(2) on a wake-up eventfd, the sockets, and the done
 * descriptor of each call's context.  A caller builds its op (copying the
 * method and the request), queues it under the channel's lock, wakes the
 * thread, and waits on the channel's condition variable for its "waiter",
 * a small struct on its own stack.  The I/O thread fills the waiter under
 * the lock and never touches it again, so the caller may return at once.
 *
 * An op outlives its call when its stream is still open in nghttp2 (a reset
 * is on its way): nghttp2's stream user data points to it until
 * on_stream_close.  Ops and connections are therefore never freed where
 * they are finished: they move to the channel's dead lists and are freed
 * by reap() at the top of the loop, where no callback and no poll entry
 * can still refer to them (redis' freeClientAsync idea).  Every op is on
 * exactly one list at a time: submitted, retry, a connection's waiting or
 * streams list, or dead.
 *
 * Connections: CONNECTING (a non-blocking connect(2) to one of the
 * resolved addresses), HANDSHAKE (connected, our preface and SETTINGS
 * queued, the server's SETTINGS not yet received: calls wait, as grpc-go's
 * addrConn waits for onPrefaceReceipt), READY (the channel's current
 * connection), DRAINING (a GOAWAY arrived: no new stream; closed when the
 * last one ends) and DEAD.  conn_fail(), the only place a connection dies,
 * is only ever called from the loop, never from an nghttp2 callback.
 */
#ifndef GRACE_GRPC_CLIENT_INT_H
#define GRACE_GRPC_CLIENT_INT_H

/* grace internal: what src/grpc/client.c (the public API: channels, calls,
 * statuses) and src/grpc/client_conn.c (connections, the nghttp2 client
 * session, the I/O thread) share. */

#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include <nghttp2/nghttp2.h>
#include <openssl/ssl.h>

#include "grace/grpc_client.h"
#include "grpc/wire.h"
#include "net/list.h"

/* Room for the descriptions the client writes itself. */
#define TEXT_LEN 512

enum { CONN_CONNECTING, CONN_HANDSHAKE, CONN_READY, CONN_DRAINING, CONN_DEAD };

/* What a blocked caller receives; lives on the caller's stack. */
typedef struct waiter {
  int done;
  uint32_t code;
  char *message;
  size_t message_len;
  uint8_t *resp;
  size_t resp_len;
} waiter;

typedef struct conn conn;
typedef struct op op;

/* A received message waiting for grace_grpc_stream_recv. */
typedef struct rmsg {
  struct rmsg *next;
  size_t len;
  uint8_t data[];
} rmsg;

/* Caps on the trailers a streaming call keeps. */
#define MAX_TRAILERS 64
#define MAX_TRAILER_BYTES (16 * 1024)

/*
 * A streaming call: what its caller and the I/O thread share.  Every field
 * below |lock-guarded| is guarded by the channel's lock; the caller waits
 * on |cond|.  Two references: the caller's (grace_grpc_stream_free) and the
 * op's (dropped when the I/O thread frees the op); the last one frees it.
 */
struct grace_grpc_stream {
  grace_grpc_channel *ch;
  pthread_cond_t cond;
  op *op; /* the I/O thread's alone; valid while on ch->kicked */
  /* lock-guarded */
  int refs;
  waiter w;    /* the status, once w.done */
  int io_done; /* the op is gone: nothing will change any more */
  int kicked;  /* on ch->kicked */
  grace__list kick_link;
  int cancel;  /* grace_grpc_stream_cancel was called */
  int discard; /* grace_grpc_stream_finish: drop what arrives */
  int send_closed;
  uint8_t *sbuf; /* the send queue: framed messages, [soff, slen) */
  size_t scap, soff, slen;
  size_t send_limit;
  rmsg *rq_head, *rq_tail; /* the receive queue */
  size_t rq_bytes;
  size_t recv_limit;
  size_t owed; /* DATA bytes whose stream window is not yet reopened */
  grace_grpc_metadata *trailers;
  size_t ntrailers;
};

struct conn {
  grace__list link; /* ch->conns, then ch->dead_conns */
  grace_grpc_channel *ch;
  int state;
  int fd;
  struct addrinfo *addrs; /* while dialing */
  struct addrinfo *next_addr;
  char cur_addr[64];   /* the address being dialed, as Go prints it */
  char first_err[256]; /* the first dial error, "dial tcp ...: connect: ..." */
  char names[160];     /* "tcp <local>-><remote>" for I/O errors */
  char fail_text[TEXT_LEN]; /* why it died, when it died while dialing */
  int64_t deadline; /* end of connect + handshake (grace_now); 0: none */
  nghttp2_session *session;
  SSL *ssl; /* TLS over fd (the channel's tls_ctx), NULL for plaintext */
  const uint8_t *out; /* bytes from nghttp2_session_mem_send not yet sent */
  size_t out_len;
  int got_settings;
  int goaway;      /* a GOAWAY arrived */
  int sent_goaway; /* we sent one (a connection error we detected) */
  uint32_t sent_goaway_code;
  grace__list waiting; /* ops waiting for the handshake */
  grace__list streams; /* ops with a stream on this connection */
};

struct op {
  grace__list link;
  grace_grpc_channel *ch;
  waiter *w;      /* NULL once the call is finished */
  grace_ctx *ctx; /* a reference */
  int done_fd;    /* the ctx's done descriptor, -1 if it can never be done */
  char *path;
  uint8_t *req; /* prefix + message */
  size_t req_len, req_off;
  int attempts;
  conn *conn;              /* the connection it waits on or streams on */
  int32_t stream_id;       /* > 0 while nghttp2 has the stream */
  int not_sent;            /* nghttp2 refused to send the request HEADERS */
  grace_grpc_stream *call; /* a streaming call, or NULL for a unary one */
  int sent_body;           /* request bytes went out on this attempt */
  int deferred;            /* the data provider is waiting for more */
  /* The trailers being received (streaming calls). */
  grace_grpc_metadata *h_md;
  size_t h_nmd, h_md_bytes;
  int h_end; /* the block received last ended the stream: trailers */

  /* The response of the current attempt. */
  int got_headers; /* a final (non-1xx) response header block arrived */
  int rst_received;
  uint32_t rst_code;
  int invalid; /* nghttp2's lib error for an invalid frame, or 0 */
  /* The header block being received. */
  int h_status; /* :status, 0 if absent */
  int h_ct;     /* content-type: 0 absent, 1 gRPC, -1 something else */
  char h_ct_value[128];
  int h_has_grpc_status;
  int h_grpc_status_err; /* GRACE_ESYNTAX or GRACE_ERANGE, or 0 */
  uint32_t h_grpc_status;
  char h_grpc_status_raw[64];
  char *h_message; /* grpc-message as received */
  size_t h_message_len;
  char encoding[64]; /* grpc-encoding of the response headers */
  grace__grpc_reader reader;
  int nmsg;
  uint8_t *msg; /* the first message, copied */
  size_t msg_len;
};

struct grace_grpc_channel {
  char *authority;
  char *host;
  char *port;
  char *user_agent;
  size_t max_recv;
  size_t stream_send_buffer;
  size_t stream_recv_buffer;
  grace_duration connect_timeout;
  SSL_CTX *tls_ctx;      /* NULL: plaintext */
  char *tls_server_name; /* what the server's certificate must name */
  int wake_fd;
  pthread_t thread;
  pthread_mutex_t lock;
  pthread_cond_t cond; /* a call finished; the callers count fell to 0 */
  /* Guarded by |lock|. */
  grace__list submitted;
  grace__list kicked; /* streaming calls with news for the I/O thread */
  int closing;
  unsigned callers;
  /* The I/O thread's alone. */
  conn *current;
  grace__list conns;
  grace__list retry;
  grace__list dead_ops;
  grace__list dead_conns;
  struct pollfd *pfds;
  void **pobj;
  unsigned char *pkind;
  size_t pcap;
};

/* ---- client.c ----------------------------------------------------------- */

extern const char grace__grpc_msg_closing[];

char *grace__grpc_copy_bytes(const char *s, size_t len);
uint32_t grace__grpc_ctx_code(int err);
void grace__grpc_channel_wake(grace_grpc_channel *ch);
/* Stores |code| and a copy of |msg| in |st|; returns what
 * grace_grpc_channel_unary returns for it. */
int grace__grpc_status_set(grace_grpc_status *st, uint32_t code,
                           const char *msg, size_t len);

/* ---- client_conn.c ------------------------------------------------------ */

void grace__grpc_op_free(op *o);
/* Drops a reference to |call| (the channel's lock not held). */
void grace__grpc_stream_unref(grace_grpc_stream *call);
/* Frees trailers made by the I/O thread. */
void grace__grpc_md_free(grace_grpc_metadata *md, size_t n);
/* Queues |call| for the I/O thread; the channel's lock is held.  Returns
 * 1 if the thread must be woken. */
int grace__grpc_stream_kick_locked(grace_grpc_stream *call);
/* The channel's I/O thread; |arg| is the grace_grpc_channel. */
void *grace__grpc_io_main(void *arg);

#endif
