/*
 * Unit tests for src/net/tls.c, grace_tls: loading a certificate and key,
 * refusing bad ones, reloading in place (new SSLs get the new certificate,
 * an SSL made before keeps its own even after the configuration is gone),
 * and the CA file of a TLS gRPC channel.
 * The certificates are made by the openssl command in a temporary
 * directory.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/x509.h>

#include "grace/error.h"
#include "grace/grpc_client.h"
#include "grace/tls.h"
#include "net/tls.h"

static char dir[64];
static char a_cert[128], a_key[128], b_cert[128], b_key[128], junk[128];
static char missing[128];

static void make_cert(const char *name, long serial, char *cert, char *key) {
  char cmd[1024];
  snprintf(cert, 128, "%s/%s.crt", dir, name);
  snprintf(key, 128, "%s/%s.key", dir, name);
  snprintf(cmd, sizeof(cmd),
           "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 "
           "-nodes -keyout %s -out %s -days 2 -subj /CN=localhost "
           "-set_serial %ld >/dev/null 2>&1",
           key, cert, serial);
  if (system(cmd) != 0)
    fail_msg("openssl req failed: %s", cmd);
}

static int setup(void **state) {
  (void)state;
  snprintf(dir, sizeof(dir), "/tmp/grace-test-tls-XXXXXX");
  if (mkdtemp(dir) == NULL)
    return -1;
  make_cert("a", 0xA1, a_cert, a_key);
  make_cert("b", 0xB2, b_cert, b_key);
  snprintf(junk, sizeof(junk), "%s/junk.pem", dir);
  snprintf(missing, sizeof(missing), "%s/missing.pem", dir);
  FILE *f = fopen(junk, "w");
  if (f == NULL)
    return -1;
  fputs("-----BEGIN CERTIFICATE-----\nnot base64 at all\n"
        "-----END CERTIFICATE-----\n",
        f);
  fclose(f);
  return 0;
}

static int teardown(void **state) {
  char cmd[128];
  (void)state;
  snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
  return system(cmd) == 0 ? 0 : -1;
}

/* The serial of the certificate an SSL made now would present. */
static long serial_of(SSL *ssl) {
  X509 *x = SSL_get_certificate(ssl);
  assert_non_null(x);
  return ASN1_INTEGER_get(X509_get0_serialNumber(x));
}

static long current_serial(grace_tls *tls) {
  SSL *ssl = grace__tls_ssl_new(tls);
  assert_non_null(ssl);
  long s = serial_of(ssl);
  SSL_free(ssl);
  return s;
}

/* Copies |src| over |dst|. */
static void copy(const char *src, const char *dst) {
  char cmd[512];
  snprintf(cmd, sizeof(cmd), "cp %s %s", src, dst);
  assert_int_equal(system(cmd), 0);
}

static void bad_options_are_refused(void **state) {
  grace_tls_options o;
  grace_tls *tls = (grace_tls *)(uintptr_t)1; /* must stay untouched */
  (void)state;
  grace_tls_options_init(&o);
  assert_int_equal(o.handshake_timeout, 10 * GRACE_SECOND);
  assert_int_equal(grace_tls_new(NULL, &tls), GRACE_EINVAL);
  assert_int_equal(grace_tls_new(&o, &tls), GRACE_EINVAL); /* no files */
  o.cert_file = a_cert;
  o.key_file = a_key;
  assert_int_equal(grace_tls_new(&o, NULL), GRACE_EINVAL);
  o.handshake_timeout = -1;
  assert_int_equal(grace_tls_new(&o, &tls), GRACE_EINVAL);
  o.handshake_timeout = 0;
  o.cert_file = missing;
  assert_int_equal(grace_tls_new(&o, &tls), GRACE_ENOENT);
  o.cert_file = junk;
  assert_int_equal(grace_tls_new(&o, &tls), GRACE_EINVAL);
  o.cert_file = a_cert;
  o.key_file = junk;
  assert_int_equal(grace_tls_new(&o, &tls), GRACE_EINVAL);
  o.key_file = b_key; /* not a_cert's key */
  assert_int_equal(grace_tls_new(&o, &tls), GRACE_EINVAL);
  assert_ptr_equal(tls, (grace_tls *)(uintptr_t)1);
  assert_int_equal(grace_tls_reload(NULL), GRACE_EINVAL);
  grace_tls_free(NULL);
}

static void reload_swaps_for_new_ssls_only(void **state) {
  char cert[160], key[160];
  grace_tls_options o;
  grace_tls *tls = NULL;
  (void)state;
  snprintf(cert, sizeof(cert), "%s/server.crt", dir);
  snprintf(key, sizeof(key), "%s/server.key", dir);
  copy(a_cert, cert);
  copy(a_key, key);
  grace_tls_options_init(&o);
  o.cert_file = cert;
  o.key_file = key;
  o.handshake_timeout = 1500 * GRACE_MILLISECOND;
  assert_int_equal(grace_tls_new(&o, &tls), 0);
  assert_int_equal(grace__tls_handshake_ms(tls), 1500);
  assert_int_equal(current_serial(tls), 0xA1);
  SSL *before = grace__tls_ssl_new(tls);
  assert_non_null(before);

  /* Bad new files: refused, the old pair stays. */
  copy(junk, cert);
  assert_int_equal(grace_tls_reload(tls), GRACE_EINVAL);
  assert_int_equal(current_serial(tls), 0xA1);
  copy(b_cert, cert); /* b's certificate with a's key */
  assert_int_equal(grace_tls_reload(tls), GRACE_EINVAL);
  assert_int_equal(current_serial(tls), 0xA1);
  assert_int_equal(unlink(key), 0);
  assert_int_equal(grace_tls_reload(tls), GRACE_ENOENT);
  assert_int_equal(current_serial(tls), 0xA1);

  /* A good pair: new SSLs get it, the one made before keeps its own. */
  copy(b_key, key);
  assert_int_equal(grace_tls_reload(tls), 0);
  assert_int_equal(current_serial(tls), 0xB2);
  assert_int_equal(serial_of(before), 0xA1);

  /* A server's hold keeps it after the caller's free; the old SSL
   * outlives both (ASan sees any use after free). */
  grace__tls_ref(tls);
  grace_tls_free(tls);
  assert_int_equal(current_serial(tls), 0xB2);
  grace_tls_free(tls);
  assert_int_equal(serial_of(before), 0xA1);
  SSL_free(before);
}

static void channel_ca_file_is_checked(void **state) {
  grace_grpc_channel_options o;
  grace_grpc_channel *ch = (grace_grpc_channel *)(uintptr_t)1;
  (void)state;
  grace_grpc_channel_options_init(&o);
  assert_false(o.tls);
  o.tls = true;
  o.tls_ca_file = missing;
  assert_int_equal(grace_grpc_channel_new("localhost:1", &o, &ch), GRACE_ENOENT);
  o.tls_ca_file = junk;
  assert_int_equal(grace_grpc_channel_new("localhost:1", &o, &ch), GRACE_EINVAL);
  assert_ptr_equal(ch, (grace_grpc_channel *)(uintptr_t)1);
  o.tls_ca_file = a_cert;
  assert_int_equal(grace_grpc_channel_new("localhost:1", &o, &ch), 0);
  grace_grpc_channel_free(ch);
  o.tls_ca_file = NULL; /* the system's roots */
  o.tls_server_name = "example.org";
  assert_int_equal(grace_grpc_channel_new("127.0.0.1:1", &o, &ch), 0);
  grace_grpc_channel_free(ch);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(bad_options_are_refused),
      cmocka_unit_test(reload_swaps_for_new_ssls_only),
      cmocka_unit_test(channel_ca_file_is_checked),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
