/*
 * grace_tls: certificate and key files loaded into an SSL_CTX, reloaded
 * in place.  See grace/tls.h and net/tls.h.
 */
#include "net/tls.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>

#include "grace/log.h"

struct grace_tls {
  atomic_int refs;
  pthread_mutex_t lock; /* guards ctx */
  SSL_CTX *ctx;         /* the current context; one reference is ours */
  char *cert_file;
  char *key_file;
  uint64_t handshake_ms;
};

void grace_tls_options_init(grace_tls_options *opts) {
  memset(opts, 0, sizeof(*opts));
  opts->handshake_timeout = 10 * GRACE_SECOND;
}

/* ALPN: "h2" when the client offers it, else "http/1.1"; a client that
 * offers neither gets no ALPN answer (and HTTP/1.1 or HTTP/2 with prior
 * knowledge, as on a plaintext port). */
static int select_alpn(SSL *ssl, const unsigned char **out,
                       unsigned char *outlen, const unsigned char *in,
                       unsigned int inlen, void *arg) {
  static const unsigned char ours[] = "\x02h2\x08http/1.1";
  unsigned char *sel = NULL;
  (void)ssl;
  (void)arg;
  if (SSL_select_next_proto(&sel, outlen, ours, sizeof(ours) - 1, in, inlen) !=
      OPENSSL_NPN_NEGOTIATED)
    return SSL_TLSEXT_ERR_NOACK;
  *out = sel;
  return SSL_TLSEXT_ERR_OK;
}

/* Logs what OpenSSL says went wrong with |what| and empties its error
 * queue. */
static void log_ssl_error(const char *what, const char *file) {
  unsigned long e = ERR_get_error();
  char buf[256];
  if (e != 0)
    ERR_error_string_n(e, buf, sizeof(buf));
  else
    snprintf(buf, sizeof(buf), "unknown error");
  ERR_clear_error();
  grace_log("tls: %s %s: %s", what, file, buf);
}

/* 0 when |file| can be opened, else GRACE_ENOENT or GRACE_ENOMEM
 * (logged): unreadable files are told apart from bad contents. */
static int check_readable(const char *file) {
  FILE *f = fopen(file, "r");
  if (f == NULL) {
    int err = errno;
    grace_log("tls: cannot read %s: %s", file, strerror(err));
    return err == ENOMEM ? GRACE_ENOMEM : GRACE_ENOENT;
  }
  fclose(f);
  return 0;
}

/* A context for |method| speaking TLS 1.2 and 1.3, or NULL. */
static SSL_CTX *ctx_new(const SSL_METHOD *method) {
  ERR_clear_error();
  SSL_CTX *ctx = SSL_CTX_new(method);
  if (ctx == NULL)
    ERR_clear_error();
  else
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  return ctx;
}

/* A new context from the files of |tls|, or a negative error (logged). */
static int load_ctx(const grace_tls *tls, SSL_CTX **out) {
  SSL_CTX *ctx;
  int rv;

  if ((rv = check_readable(tls->cert_file)) != 0 ||
      (rv = check_readable(tls->key_file)) != 0)
    return rv;
  ctx = ctx_new(TLS_server_method());
  if (ctx == NULL)
    return GRACE_ENOMEM;
  SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
  /* No server-side session cache (a connection resumes with a ticket,
   * which the server does not store), as nginx's default. */
  SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
  SSL_CTX_set_alpn_select_cb(ctx, select_alpn, NULL);
  if (SSL_CTX_use_certificate_chain_file(ctx, tls->cert_file) != 1) {
    log_ssl_error("bad certificate chain in", tls->cert_file);
    SSL_CTX_free(ctx);
    return GRACE_EINVAL;
  }
  if (SSL_CTX_use_PrivateKey_file(ctx, tls->key_file, SSL_FILETYPE_PEM) != 1) {
    log_ssl_error("bad private key in", tls->key_file);
    SSL_CTX_free(ctx);
    return GRACE_EINVAL;
  }
  if (SSL_CTX_check_private_key(ctx) != 1) {
    log_ssl_error("key does not match the certificate:", tls->key_file);
    SSL_CTX_free(ctx);
    return GRACE_EINVAL;
  }
  *out = ctx;
  return 0;
}

int grace_tls_new(const grace_tls_options *opts, grace_tls **out) {
  grace_tls *tls;
  int rv;

  if (opts == NULL || out == NULL || opts->cert_file == NULL ||
      opts->key_file == NULL || opts->handshake_timeout < 0)
    return GRACE_EINVAL;
  tls = calloc(1, sizeof(*tls));
  if (tls == NULL)
    return GRACE_ENOMEM;
  tls->cert_file = strdup(opts->cert_file);
  tls->key_file = strdup(opts->key_file);
  if (tls->cert_file == NULL || tls->key_file == NULL) {
    rv = GRACE_ENOMEM;
    goto fail;
  }
  tls->handshake_ms = (uint64_t)(opts->handshake_timeout / GRACE_MILLISECOND);
  rv = load_ctx(tls, &tls->ctx);
  if (rv != 0)
    goto fail;
  if (pthread_mutex_init(&tls->lock, NULL) != 0) {
    SSL_CTX_free(tls->ctx);
    rv = GRACE_ENOMEM;
    goto fail;
  }
  atomic_init(&tls->refs, 1);
  *out = tls;
  return 0;
fail:
  free(tls->cert_file);
  free(tls->key_file);
  free(tls);
  return rv;
}

int grace_tls_reload(grace_tls *tls) {
  SSL_CTX *ctx, *old;
  int rv;

  if (tls == NULL)
    return GRACE_EINVAL;
  rv = load_ctx(tls, &ctx);
  if (rv != 0) {
    grace_log("tls: reload refused, the old certificate stays in use");
    return rv;
  }
  pthread_mutex_lock(&tls->lock);
  old = tls->ctx;
  tls->ctx = ctx;
  pthread_mutex_unlock(&tls->lock);
  /* Connections made with it hold their own references. */
  SSL_CTX_free(old);
  return 0;
}

void grace__tls_ref(grace_tls *tls) { atomic_fetch_add(&tls->refs, 1); }

void grace_tls_free(grace_tls *tls) {
  if (tls == NULL || atomic_fetch_sub(&tls->refs, 1) != 1)
    return;
  SSL_CTX_free(tls->ctx);
  pthread_mutex_destroy(&tls->lock);
  free(tls->cert_file);
  free(tls->key_file);
  free(tls);
}

SSL *grace__tls_ssl_new(grace_tls *tls) {
  SSL *ssl;
  pthread_mutex_lock(&tls->lock);
  ssl = SSL_new(tls->ctx); /* takes its own reference to the context */
  pthread_mutex_unlock(&tls->lock);
  if (ssl == NULL)
    ERR_clear_error();
  return ssl;
}

int grace__tls_client_ctx_new(const char *ca_file, SSL_CTX **out) {
  SSL_CTX *ctx;
  int rv;
  if (ca_file != NULL && (rv = check_readable(ca_file)) != 0)
    return rv;
  ctx = ctx_new(TLS_client_method());
  if (ctx == NULL)
    return GRACE_ENOMEM;
  SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
  /* Writes resume with what is left after a partial one, from wherever
   * the caller's buffer now is (the plaintext path's send semantics). */
  SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE |
                            SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  int ok = ca_file != NULL ? SSL_CTX_load_verify_locations(ctx, ca_file, NULL)
                           : SSL_CTX_set_default_verify_paths(ctx);
  if (ok != 1) {
    log_ssl_error("no CA certificates in", ca_file ? ca_file : "(default)");
    SSL_CTX_free(ctx);
    return GRACE_EINVAL;
  }
  if (SSL_CTX_set_alpn_protos(ctx, (const unsigned char *)"\x02h2", 3) != 0) {
    ERR_clear_error();
    SSL_CTX_free(ctx);
    return GRACE_ENOMEM;
  }
  *out = ctx;
  return 0;
}

uint64_t grace__tls_handshake_ms(const grace_tls *tls) {
  return tls->handshake_ms;
}
