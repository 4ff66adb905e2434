/*
 * Internals shared by the two halves of the HTTP/2 server connection:
 * h2.c (the connection and the incoming frames) and h2_stream.c (the
 * request accessors and the response).  Not for use outside them; the
 * rest of the tree uses h2.h.
 */
#ifndef GRACE_HTTP_H2_INT_H
#define GRACE_HTTP_H2_INT_H

#include <stddef.h>
#include <stdint.h>

#include "http/h2.h"
#include "net/list.h"

#define NONE UINT32_MAX
#define NO_LENGTH UINT64_MAX

/* How many of the client's most recent odd stream ids are remembered as
 * opened or skipped (see grace__h2.opened). */
#define ID_WINDOW 1024u

/* Stream flags. */
enum {
  SF_DISPATCHED = 1 << 0, /* given to on_request_headers */
  SF_CLOSED = 1 << 1,     /* gone: on the dead list */
  SF_TOO_LARGE = 1 << 2,  /* header list over max_header_list */
  SF_BODY_OVER = 1 << 3,  /* body over max_request_body */
  SF_RESPONDED = 1 << 4,  /* response HEADERS submitted */
  SF_DATA_END = 1 << 5,   /* nothing follows the queued bytes */
  SF_DEFERRED = 1 << 6,   /* the data provider returned DEFERRED */
  SF_WANT_READY = 1 << 7, /* a send was refused: on_send_ready owed */
  SF_HEAD = 1 << 8,       /* a HEAD request: no response body */
  SF_REQ_ENDED = 1 << 9,  /* on_request_end fired */
  SF_RESET = 1 << 10      /* grace__h2_reset was called */
};

/* A piece of response body waiting for the data provider. */
typedef struct chunk {
  struct chunk *next;
  size_t len, off;
  uint8_t data[];
} chunk;

struct grace__h2_stream {
  grace__h2 *h2;
  grace__list link; /* in h2->live, then in h2->dead */
  int32_t id;
  uint16_t flags;
  void *data;
  /* The request head: "name\0value\0" for each field as received (pseudo
   * fields included), then, once complete, "path\0" and "query\0". */
  char *head;
  size_t head_len, head_cap;
  size_t fields_end;   /* end of the field pairs in |head| */
  size_t header_bytes; /* the list size as RFC 9113 counts it */
  uint32_t method_off, scheme_off, authority_off, host_off, rawpath_off;
  uint32_t path_off, query_off;
  uint64_t content_length;
  uint64_t body_received;
  size_t unconsumed; /* manual_consume: delivered, not yet consumed */
  /* The response. */
  chunk *qhead, *qtail;
  size_t queued;
  nghttp2_nv *trailers; /* one allocation: the array, then the strings */
  size_t ntrailers;
};

struct grace__h2 {
  nghttp2_session *session;
  grace__h2_callbacks cb;
  void *user;
  nghttp2_mem mem;
  uint32_t max_header_list;
  uint64_t max_request_body;
  size_t max_send_buffer;
  int manual_consume;
  grace__list live; /* open streams */
  grace__list dead; /* closed streams waiting for reap() */
  size_t nstreams;
  int busy;          /* depth of public calls that run callbacks */
  int error;         /* sticky; see grace__h2_recv */
  int cb_error;      /* why a callback failed nghttp2 */
  int session_dead;  /* nghttp2 failed fatally: only _del is allowed */
  int forced;        /* grace__h2_force_close was called */
  int notice_sent;   /* the GOAWAY(2^31-1) is out */
  int shut;          /* SHUT_* */
  size_t preface_seen;
  /* RFC 9113 section 5.1.1: the client's stream ids only grow.  The
   * highest id a HEADERS frame used (-1 before the first), and for the ID_WINDOW odd ids up to
   * it, whether a HEADERS frame opened it (bit (id / 2) % ID_WINDOW): a
   * HEADERS frame for a lower id that never opened is a connection error
   * nghttp2 cannot see, as it forgets closed streams. */
  int32_t max_peer_id;
  uint64_t opened[ID_WINDOW / 64];
  uint8_t *obuf;
  size_t olen, ocap;
};

/* Allocate and free through the connection's nghttp2_mem (h2.c). */
void *grace__h2_alloc(grace__h2 *h2, size_t n);
void grace__h2_dealloc(grace__h2 *h2, void *p);

/* Maps an nghttp2 error code to a GRACE_E* one (h2.c). */
int grace__h2_map_ng(int rv);

/* The open stream |id| of |h2|, or NULL (h2.c). */
grace__h2_stream *grace__h2_stream_of(grace__h2 *h2, int32_t id);

/* Frees the send queue of |s| (h2_stream.c). */
void grace__h2_queue_clear(grace__h2 *h2, grace__h2_stream *s);

#endif
