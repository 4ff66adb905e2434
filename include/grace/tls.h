/*
 * TLS for grace's servers: a certificate and key loaded once, shared by
 * every server given it (grace_http_options.tls, and so
 * grace_grpc_options.http.tls), and reloaded in place.
 *
 * The transport runs TLS itself (OpenSSL 3, memory BIOs): protocols see
 * plaintext, backpressure and graceful shutdown work as without TLS.  A
 * connection still in its handshake counts as new (a graceful shutdown
 * closes it at once); an established one drains as usual and ends with a
 * close_notify alert.  TLS 1.2 and 1.3 are offered; ALPN selects "h2" when
 * the client offers it, else "http/1.1" (a client without ALPN gets
 * HTTP/1.1, or HTTP/2 with prior knowledge, as on a plaintext port).
 *
 * Threads: every function may be called from any thread; a reload may run
 * while servers accept connections.
 */
#ifndef GRACE_TLS_H
#define GRACE_TLS_H

#include "grace/duration.h"
#include "grace/error.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A TLS configuration: the current certificate chain and key.  Opaque. */
typedef struct grace_tls grace_tls;

typedef struct grace_tls_options {
  /* PEM file holding the certificate chain, the server's certificate
   * first (required). */
  const char *cert_file;
  /* PEM file holding the private key of that certificate (required). */
  const char *key_file;
  /* Longest time a handshake may take, from the accept; a connection
   * that has not finished its handshake by then is closed.  0 disables
   * it.  Default 10 s. */
  grace_duration handshake_timeout;
} grace_tls_options;

/* Fills |opts| with the defaults documented above (no files). */
GRACE_EXTERN void grace_tls_options_init(grace_tls_options *opts);

/*
 * Loads the certificate chain and key named by |opts| (the names are
 * copied, for grace_tls_reload).  Returns 0 and stores the configuration
 * in |*out|, or (|*out| untouched, the reason logged with grace_log):
 *
 * GRACE_EINVAL  |opts| or |out| is NULL, a file name is missing, the
 *               timeout is negative, or a file does not hold a valid
 *               certificate chain or key, or the key does not match
 * GRACE_ENOENT  a file cannot be read
 * GRACE_ENOMEM  out of memory
 */
GRACE_EXTERN int grace_tls_new(const grace_tls_options *opts, grace_tls **out);

/*
 * Reads the certificate chain and key files again.  Handshakes that begin
 * after it returns 0 use the new certificate; established connections
 * keep the one they were made with.  When the new files are bad, nothing
 * changes: the old certificate stays in use, the reason is logged with
 * grace_log, and the error is returned (as for grace_tls_new).
 */
GRACE_EXTERN int grace_tls_reload(grace_tls *tls);

/*
 * Releases the caller's hold on |tls| (NULL is ignored).  Servers created
 * with it hold their own until they are freed, so it may be called as
 * soon as the last server is created.
 */
GRACE_EXTERN void grace_tls_free(grace_tls *tls);

#ifdef __cplusplus
}
#endif

#endif /* GRACE_TLS_H */
