/*
 * The internals of grace_tls (grace/tls.h): the current SSL_CTX, swapped
 * by a reload under a lock.  A connection's SSL holds its own reference
 * to the SSL_CTX it was made with (SSL_new takes one), so a reload never
 * frees a context under a live connection.
 */
#ifndef GRACE_NET_TLS_H
#define GRACE_NET_TLS_H

#include <openssl/ssl.h>
#include <stdint.h>

#include "grace/tls.h"

/* Takes one more hold on |tls| (a server's). */
void grace__tls_ref(grace_tls *tls);

/* A new server-side SSL on the current certificate, or NULL when out of
 * memory. */
SSL *grace__tls_ssl_new(grace_tls *tls);

/*
 * A client context (gRPC channels): TLS 1.2 and 1.3, ALPN "h2", the peer's
 * certificate verified against the PEM file |ca_file| (NULL: the system's
 * default roots).  Returns 0 and stores it in |*out|, or GRACE_ENOENT (the
 * file cannot be read), GRACE_EINVAL (no certificate in it; logged),
 * GRACE_ENOMEM.
 */
int grace__tls_client_ctx_new(const char *ca_file, SSL_CTX **out);

/* The handshake timeout in milliseconds (0: none). */
uint64_t grace__tls_handshake_ms(const grace_tls *tls);

#endif /* GRACE_NET_TLS_H */
