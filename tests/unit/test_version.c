/*
 * Tests for grace_version and grace_version_string: the library answers
 * with the numbers of the headers it was built with, packed and printed
 * consistently.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <cmocka.h>

#include "grace/grace.h"

static void test_packed(void **state) {
  (void)state;
  assert_int_equal(grace_version(), GRACE_VERSION_HEX);
  assert_int_equal(grace_version() >> 16, GRACE_VERSION_MAJOR);
  assert_int_equal((grace_version() >> 8) & 0xff, GRACE_VERSION_MINOR);
  assert_int_equal(grace_version() & 0xff, GRACE_VERSION_PATCH);
  /* One byte each, so the packing is unambiguous. */
  assert_true(GRACE_VERSION_MINOR < 256 && GRACE_VERSION_PATCH < 256);
}

static void test_string(void **state) {
  (void)state;
  char want[32];
  snprintf(want, sizeof(want), "%d.%d.%d", GRACE_VERSION_MAJOR,
           GRACE_VERSION_MINOR, GRACE_VERSION_PATCH);
  assert_string_equal(grace_version_string(), want);
  assert_string_equal(grace_version_string(), GRACE_VERSION_STRING);
  /* Static: the same pointer every time. */
  assert_ptr_equal(grace_version_string(), grace_version_string());
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_packed),
      cmocka_unit_test(test_string),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
