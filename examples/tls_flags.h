/*
 * The -tls-cert/-tls-key flags of the example servers (grace-demo-server,
 * greeter-server), turned into a grace_tls.
 *
 * Header-only on purpose, as sleep_handler.h: examples/CMakeLists.txt makes
 * every examples/<name>.c a program of its own.
 */
#ifndef GRACE_EXAMPLES_TLS_FLAGS_H
#define GRACE_EXAMPLES_TLS_FLAGS_H

#include <stdio.h>
#include <stdlib.h>

#include "grace/duration.h"
#include "grace/log.h"
#include "grace/tls.h"

/* NULL when neither flag was given (plaintext); exits 2 when only one was,
 * 1 (with the reason logged) when the files cannot be loaded.  The caller
 * frees the result with grace_tls_free. */
static grace_tls *example_tls(const char *cert, const char *key,
                              grace_duration handshake_timeout) {
  grace_tls_options topts;
  grace_tls *tls;
  if ((cert == NULL) != (key == NULL)) {
    fprintf(stderr, "-tls-cert and -tls-key go together\n");
    exit(2);
  }
  if (cert == NULL)
    return NULL;
  grace_tls_options_init(&topts);
  topts.cert_file = cert;
  topts.key_file = key;
  topts.handshake_timeout = handshake_timeout;
  int rv = grace_tls_new(&topts, &tls);
  if (rv != 0)
    grace_log_fatal("failed to load TLS credentials: %s", grace_strerror(rv));
  return tls;
}

#endif /* GRACE_EXAMPLES_TLS_FLAGS_H */
