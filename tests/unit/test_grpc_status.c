/*
 * Unit tests for include/grace/grpc_status.h: code names as grpc-go prints
 * them, the status error text, grpc-status parsing and the HTTP and HTTP/2
 * mappings.
 */
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "grace/grpc_status.h"

/* grpc-go's codes.Code.String() and doc/statuscodes.md, in code order. */
static const struct {
  uint32_t code;
  const char *go;
  const char *canonical;
} all_codes[] = {
    {GRACE_GRPC_OK, "OK", "OK"},
    {GRACE_GRPC_CANCELLED, "Canceled", "CANCELLED"},
    {GRACE_GRPC_UNKNOWN, "Unknown", "UNKNOWN"},
    {GRACE_GRPC_INVALID_ARGUMENT, "InvalidArgument", "INVALID_ARGUMENT"},
    {GRACE_GRPC_DEADLINE_EXCEEDED, "DeadlineExceeded", "DEADLINE_EXCEEDED"},
    {GRACE_GRPC_NOT_FOUND, "NotFound", "NOT_FOUND"},
    {GRACE_GRPC_ALREADY_EXISTS, "AlreadyExists", "ALREADY_EXISTS"},
    {GRACE_GRPC_PERMISSION_DENIED, "PermissionDenied", "PERMISSION_DENIED"},
    {GRACE_GRPC_RESOURCE_EXHAUSTED, "ResourceExhausted", "RESOURCE_EXHAUSTED"},
    {GRACE_GRPC_FAILED_PRECONDITION, "FailedPrecondition",
     "FAILED_PRECONDITION"},
    {GRACE_GRPC_ABORTED, "Aborted", "ABORTED"},
    {GRACE_GRPC_OUT_OF_RANGE, "OutOfRange", "OUT_OF_RANGE"},
    {GRACE_GRPC_UNIMPLEMENTED, "Unimplemented", "UNIMPLEMENTED"},
    {GRACE_GRPC_INTERNAL, "Internal", "INTERNAL"},
    {GRACE_GRPC_UNAVAILABLE, "Unavailable", "UNAVAILABLE"},
    {GRACE_GRPC_DATA_LOSS, "DataLoss", "DATA_LOSS"},
    {GRACE_GRPC_UNAUTHENTICATED, "Unauthenticated", "UNAUTHENTICATED"},
};

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

static void code_values_match_the_protocol(void **state) {
  size_t i;

  (void)state;
  assert_int_equal(COUNT(all_codes), GRACE_GRPC_CODE_COUNT);
  for (i = 0; i < COUNT(all_codes); i++)
    assert_int_equal(all_codes[i].code, i);
}

static void code_names_are_grpc_go_spelling(void **state) {
  size_t i;

  (void)state;
  for (i = 0; i < COUNT(all_codes); i++) {
    assert_string_equal(grace_grpc_code_name(all_codes[i].code),
                        all_codes[i].go);
    assert_string_equal(grace_grpc_code_canonical(all_codes[i].code),
                        all_codes[i].canonical);
  }
  assert_null(grace_grpc_code_name(17));
  assert_null(grace_grpc_code_name(UINT32_MAX));
  assert_null(grace_grpc_code_canonical(17));
}

static void error_text_is_grpc_go_status_error(void **state) {
  char buf[128];
  int n;

  (void)state;
  n = grace_grpc_error_format(buf, sizeof(buf), GRACE_GRPC_UNAVAILABLE,
                              "connection refused", 18);
  assert_string_equal(
      buf, "rpc error: code = Unavailable desc = connection refused");
  assert_int_equal(n, (int)strlen(buf));

  n = grace_grpc_error_format(buf, sizeof(buf), GRACE_GRPC_DEADLINE_EXCEEDED,
                              "context deadline exceeded", 25);
  assert_string_equal(
      buf,
      "rpc error: code = DeadlineExceeded desc = context deadline exceeded");

  /* An empty description keeps the trailing space, as Go's format does. */
  n = grace_grpc_error_format(buf, sizeof(buf), GRACE_GRPC_OK, NULL, 0);
  assert_string_equal(buf, "rpc error: code = OK desc = ");
  assert_int_equal(n, 28);
}

static void error_text_prints_undefined_codes_like_go(void **state) {
  char buf[128];

  (void)state;
  grace_grpc_error_format(buf, sizeof(buf), 17, "x", 1);
  assert_string_equal(buf, "rpc error: code = Code(17) desc = x");
  grace_grpc_error_format(buf, sizeof(buf), UINT32_MAX, "", 0);
  assert_string_equal(buf, "rpc error: code = Code(4294967295) desc = ");
}

static void error_text_truncates_like_snprintf(void **state) {
  const char *full = "rpc error: code = Internal desc = boom";
  char buf[64];
  int n;

  (void)state;
  /* Sizing call. */
  n = grace_grpc_error_format(NULL, 0, GRACE_GRPC_INTERNAL, "boom", 4);
  assert_int_equal(n, (int)strlen(full));
  /* Room for 10 bytes: 9 characters and the NUL. */
  memset(buf, 'Z', sizeof(buf));
  n = grace_grpc_error_format(buf, 10, GRACE_GRPC_INTERNAL, "boom", 4);
  assert_int_equal(n, (int)strlen(full));
  assert_string_equal(buf, "rpc error");
  assert_int_equal(buf[10], 'Z');
  /* Exactly enough room. */
  n = grace_grpc_error_format(buf, strlen(full) + 1, GRACE_GRPC_INTERNAL,
                              "boom", 4);
  assert_string_equal(buf, full);
  /* One byte short: the last character gives way to the NUL. */
  grace_grpc_error_format(buf, strlen(full), GRACE_GRPC_INTERNAL, "boom", 4);
  assert_string_equal(buf, "rpc error: code = Internal desc = boo");
  /* A one-byte buffer holds just the NUL. */
  buf[0] = 'Z';
  grace_grpc_error_format(buf, 1, GRACE_GRPC_INTERNAL, "boom", 4);
  assert_int_equal(buf[0], '\0');
}

static void error_text_keeps_every_description_byte(void **state) {
  static const char desc[] = {'a', '\0', 'b'};
  static const char want[] = "rpc error: code = Unknown desc = a\0b";
  char buf[64];
  int n;

  (void)state;
  n = grace_grpc_error_format(buf, sizeof(buf), GRACE_GRPC_UNKNOWN, desc, 3);
  assert_int_equal(n, (int)sizeof(want) - 1);
  assert_memory_equal(buf, want, sizeof(want));
}

static void error_text_rejects_bad_arguments(void **state) {
  char buf[8];

  (void)state;
  assert_int_equal(grace_grpc_error_format(buf, sizeof(buf), 0, NULL, 1),
                   GRACE_EINVAL);
  assert_int_equal(grace_grpc_error_format(NULL, 4, 0, "x", 1), GRACE_EINVAL);
  assert_int_equal(grace_grpc_error_format(NULL, 0, 0, "x", (size_t)INT_MAX),
                   GRACE_ERANGE);
}

static void status_parses_like_go_parseint32(void **state) {
  static const struct {
    const char *in;
    int rv;
    uint32_t code;
  } cases[] = {
      {"0", 0, 0},
      {"14", 0, 14},
      {"16", 0, 16},
      {"17", 0, 17},
      {"007", 0, 7},
      {"+5", 0, 5},
      {"-0", 0, 0},
      {"-1", 0, UINT32_MAX},
      {"2147483647", 0, 2147483647u},
      {"-2147483648", 0, 0x80000000u},
      {"2147483648", GRACE_ERANGE, 0},
      {"-2147483649", GRACE_ERANGE, 0},
      {"99999999999999999999", GRACE_ERANGE, 0},
      /* ParseUint stops at the overflow before it sees the 'x'... */
      {"5000000000x", GRACE_ERANGE, 0},
      /* ...but reaches the 'x' when the digits alone fit 32 bits. */
      {"3000000000x", GRACE_ESYNTAX, 0},
      {"", GRACE_ESYNTAX, 0},
      {"+", GRACE_ESYNTAX, 0},
      {"-", GRACE_ESYNTAX, 0},
      {"1a", GRACE_ESYNTAX, 0},
      {" 1", GRACE_ESYNTAX, 0},
      {"1 ", GRACE_ESYNTAX, 0},
      {"1_0", GRACE_ESYNTAX, 0},
      {"0x1", GRACE_ESYNTAX, 0},
      {"++1", GRACE_ESYNTAX, 0},
  };
  size_t i;
  uint32_t code;

  (void)state;
  for (i = 0; i < COUNT(cases); i++) {
    code = 12345;
    assert_int_equal(
        grace_grpc_status_parse(cases[i].in, strlen(cases[i].in), &code),
        cases[i].rv);
    assert_int_equal(code, cases[i].rv == 0 ? cases[i].code : 12345);
  }
  /* Only |len| bytes count. */
  assert_int_equal(grace_grpc_status_parse("14xyz", 2, &code), 0);
  assert_int_equal(code, 14);
  assert_int_equal(grace_grpc_status_parse(NULL, 0, &code), GRACE_EINVAL);
  assert_int_equal(grace_grpc_status_parse("1", 1, NULL), GRACE_EINVAL);
}

static void http_status_maps_as_grpc_go(void **state) {
  static const struct {
    int http;
    grace_grpc_code code;
  } cases[] = {
      {400, GRACE_GRPC_INTERNAL},
      {401, GRACE_GRPC_UNAUTHENTICATED},
      {403, GRACE_GRPC_PERMISSION_DENIED},
      {404, GRACE_GRPC_UNIMPLEMENTED},
      {429, GRACE_GRPC_UNAVAILABLE},
      {502, GRACE_GRPC_UNAVAILABLE},
      {503, GRACE_GRPC_UNAVAILABLE},
      {504, GRACE_GRPC_UNAVAILABLE},
      {200, GRACE_GRPC_UNKNOWN},
      {402, GRACE_GRPC_UNKNOWN},
      {415, GRACE_GRPC_UNKNOWN},
      {500, GRACE_GRPC_UNKNOWN},
      {501, GRACE_GRPC_UNKNOWN},
      {0, GRACE_GRPC_UNKNOWN},
      {-1, GRACE_GRPC_UNKNOWN},
  };
  size_t i;

  (void)state;
  for (i = 0; i < COUNT(cases); i++)
    assert_int_equal(grace_grpc_code_from_http_status(cases[i].http),
                     cases[i].code);
}

static void rst_stream_codes_map_as_grpc_go(void **state) {
  static const grace_grpc_code want[] = {
      GRACE_GRPC_INTERNAL,          GRACE_GRPC_INTERNAL,
      GRACE_GRPC_INTERNAL,          GRACE_GRPC_RESOURCE_EXHAUSTED,
      GRACE_GRPC_INTERNAL,          GRACE_GRPC_INTERNAL,
      GRACE_GRPC_INTERNAL,          GRACE_GRPC_UNAVAILABLE,
      GRACE_GRPC_CANCELLED,         GRACE_GRPC_INTERNAL,
      GRACE_GRPC_INTERNAL,          GRACE_GRPC_RESOURCE_EXHAUSTED,
      GRACE_GRPC_PERMISSION_DENIED, GRACE_GRPC_INTERNAL,
  };
  uint32_t i;

  (void)state;
  for (i = 0; i < COUNT(want); i++)
    assert_int_equal(grace_grpc_code_from_h2_error(i), want[i]);
  assert_int_equal(grace_grpc_code_from_h2_error(0xe), GRACE_GRPC_UNKNOWN);
  assert_int_equal(grace_grpc_code_from_h2_error(UINT32_MAX),
                   GRACE_GRPC_UNKNOWN);
}

static void grace_errors_map_to_codes(void **state) {
  (void)state;
  assert_int_equal(grace_grpc_code_from_error(0), GRACE_GRPC_OK);
  assert_int_equal(grace_grpc_code_from_error(GRACE_ECANCELED),
                   GRACE_GRPC_CANCELLED);
  assert_int_equal(grace_grpc_code_from_error(GRACE_ETIMEDOUT),
                   GRACE_GRPC_DEADLINE_EXCEEDED);
  assert_int_equal(grace_grpc_code_from_error(GRACE_ENOMEM),
                   GRACE_GRPC_RESOURCE_EXHAUSTED);
  assert_int_equal(grace_grpc_code_from_error(GRACE_EINVAL),
                   GRACE_GRPC_UNKNOWN);
  assert_int_equal(grace_grpc_code_from_error(GRACE_ESHUTDOWN),
                   GRACE_GRPC_UNKNOWN);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(code_values_match_the_protocol),
      cmocka_unit_test(code_names_are_grpc_go_spelling),
      cmocka_unit_test(error_text_is_grpc_go_status_error),
      cmocka_unit_test(error_text_prints_undefined_codes_like_go),
      cmocka_unit_test(error_text_truncates_like_snprintf),
      cmocka_unit_test(error_text_keeps_every_description_byte),
      cmocka_unit_test(error_text_rejects_bad_arguments),
      cmocka_unit_test(status_parses_like_go_parseint32),
      cmocka_unit_test(http_status_maps_as_grpc_go),
      cmocka_unit_test(rst_stream_codes_map_as_grpc_go),
      cmocka_unit_test(grace_errors_map_to_codes),
  };

  return cmocka_run_group_tests_name("grpc_status", tests, NULL, NULL);
}
