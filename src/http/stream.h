/*
 * Internal: streaming requests on HTTP/2, for protocols built on the HTTP
 * server (gRPC).  A request whose content-type is gRPC goes to the stream
 * hooks instead of a handler: its body arrives piece by piece, and its
 * answer is sent piece by piece (headers, data, trailers), all on the
 * connection's loop thread.
 *
 * Lifetime: a streaming request is owned by the hooks' user from on_start
 * until one of the *_finish calls below, which frees it.  If the stream
 * goes away first (the client reset it, the connection was lost or
 * closed), on_cancel tells the user, who must still finish it (the finish
 * then only frees).  The connection, and the server's drain, wait for that.
 */
#ifndef GRACE_HTTP_STREAM_H
#define GRACE_HTTP_STREAM_H

#include <stddef.h>
#include <stdint.h>

#include "grace/http.h"
#include "http/h2.h"
#include "net/loop.h"

typedef struct grace__stream_hooks {
  /* The headers of an HTTP/2 request are in.  Returns 1 to take it as a
   * streaming request, 0 to leave it to the ordinary handlers. */
  int (*on_start)(grace_http_request *req, void *data);
  void (*on_data)(grace_http_request *req, const uint8_t *p, size_t n,
                  void *data);
  void (*on_end)(grace_http_request *req, void *data);
  void (*on_cancel)(grace_http_request *req, void *data);
  /* grace__req_send_data refused bytes with GRACE_EBUSY, and the stream's
   * send queue has since drained to half: send again (optional). */
  void (*on_send_ready)(grace_http_request *req, void *data);
  void *data;
} grace__stream_hooks;

/* Sets the hooks (copied); before grace_http_server_start. */
void grace__http_set_stream_hooks(grace_http_server *srv,
                                  const grace__stream_hooks *hooks);

/* Bytes the HTTP/2 layer queues per stream before a send answers
 * GRACE_EBUSY (0: its default, 256 KiB); before grace_http_server_start. */
void grace__http_set_stream_send_buffer(grace_http_server *srv, size_t n);

/* The user's pointer for a streaming request. */
void grace__req_set_user(grace_http_request *req, void *user);
void *grace__req_user(const grace_http_request *req);

/* The loop the request lives on, for posting work to its thread. */
grace__loop *grace__req_loop(const grace_http_request *req);

/* 1 while the stream is there (not reset, connection not lost). */
int grace__req_stream_alive(const grace_http_request *req);

/* Loop thread only.  Each returns 0 or a negative error (the stream is
 * gone: GRACE_ECLOSED; GRACE_EBUSY: the send queue is full). */
int grace__req_send_headers(grace_http_request *req, int status,
                            const grace__h2_header *h, size_t n);
int grace__req_send_data(grace_http_request *req, const void *p, size_t n);

/* Ends the request and frees it: trailers after the data (the headers
 * must have been sent), a trailers-only answer (headers never sent), or a
 * reset with an HTTP/2 error code. */
void grace__req_finish_trailers(grace_http_request *req,
                                const grace__h2_header *h, size_t n);
void grace__req_finish_trailers_only(grace_http_request *req, int status,
                                     const grace__h2_header *h, size_t n);
void grace__req_finish_reset(grace_http_request *req, uint32_t code);

#endif /* GRACE_HTTP_STREAM_H */
