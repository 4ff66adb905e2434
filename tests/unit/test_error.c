/*
 * Tests for grace_strerror and grace_err_name.
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "grace/error.h"
#include "grace/grace.h" /* the umbrella header compiles on its own */

/* Every code declared in include/grace/error.h. */
static const struct {
  int code;
  const char *name;
} all_codes[] = {
    {GRACE_EINVAL, "GRACE_EINVAL"},
    {GRACE_ENOMEM, "GRACE_ENOMEM"},
    {GRACE_EBUSY, "GRACE_EBUSY"},
    {GRACE_EADDRINUSE, "GRACE_EADDRINUSE"},
    {GRACE_ECANCELED, "GRACE_ECANCELED"},
    {GRACE_ETIMEDOUT, "GRACE_ETIMEDOUT"},
    {GRACE_EMFILE, "GRACE_EMFILE"},
    {GRACE_ECONNRESET, "GRACE_ECONNRESET"},
    {GRACE_EPIPE, "GRACE_EPIPE"},
    {GRACE_ENOENT, "GRACE_ENOENT"},
    {GRACE_EPROTO, "GRACE_EPROTO"},
    {GRACE_ESYNTAX, "GRACE_ESYNTAX"},
    {GRACE_ERANGE, "GRACE_ERANGE"},
    {GRACE_ECLOSED, "GRACE_ECLOSED"},
    {GRACE_ESHUTDOWN, "GRACE_ESHUTDOWN"},
    {GRACE_ESTATE, "GRACE_ESTATE"},
    {GRACE_EDEADLK, "GRACE_EDEADLK"},
};

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

static void context_errors_print_as_go(void **state) {
  (void)state;
  assert_string_equal(grace_strerror(GRACE_ECANCELED), "context canceled");
  assert_string_equal(grace_strerror(GRACE_ETIMEDOUT), "context deadline exceeded");
}

static void errno_codes_print_as_strerror(void **state) {
  static const int errnos[] = {EINVAL, ENOMEM, EBUSY, EADDRINUSE, EMFILE,
                               ECONNRESET, EPIPE, ENOENT, EACCES, EAGAIN};
  size_t i;

  (void)state;
  for (i = 0; i < COUNT(errnos); i++)
    assert_string_equal(grace_strerror(-errnos[i]), strerror(errnos[i]));
  assert_string_equal(grace_strerror(GRACE_EINVAL), "Invalid argument");
  assert_string_equal(grace_strerror(GRACE_EADDRINUSE), "Address already in use");
}

static void every_code_has_its_name_and_a_message(void **state) {
  size_t i, j;

  (void)state;
  for (i = 0; i < COUNT(all_codes); i++) {
    const char *msg = grace_strerror(all_codes[i].code);

    assert_true(all_codes[i].code < 0);
    assert_string_equal(grace_err_name(all_codes[i].code), all_codes[i].name);
    assert_non_null(msg);
    assert_string_not_equal(msg, "unknown error");
    /* Distinct codes read differently. */
    for (j = 0; j < i; j++)
      assert_string_not_equal(msg, grace_strerror(all_codes[j].code));
  }
}

static void grace_codes_sit_below_every_errno(void **state) {
  (void)state;
  assert_true(GRACE_ESYNTAX < -4096);
  assert_string_equal(grace_strerror(GRACE_ESYNTAX), "invalid syntax");
  assert_string_equal(grace_strerror(GRACE_ERANGE), "value out of range");
  assert_string_equal(grace_strerror(GRACE_ECLOSED), "server or handle closed");
  assert_string_equal(grace_strerror(GRACE_ESHUTDOWN), "shutdown in progress");
  assert_string_equal(grace_strerror(GRACE_ESTATE), "called in the wrong state");
  assert_string_equal(grace_strerror(GRACE_EDEADLK),
                      "blocking call on the server's own loop thread");
}

static void unknown_codes_never_give_null(void **state) {
  static const int odd[] = {INT32_MIN, INT32_MIN + 1, GRACE_ERR_BASE, GRACE_ERR_BASE - 7,
                            -4095, -9999, 1, EINVAL, INT32_MAX};
  size_t i;

  (void)state;
  for (i = 0; i < COUNT(odd); i++) {
    assert_string_equal(grace_strerror(odd[i]), "unknown error");
    assert_string_equal(grace_err_name(odd[i]), "GRACE_EUNKNOWN");
  }
  /* An errno code the header does not name still prints its text. */
  assert_string_equal(grace_strerror(-EACCES), "Permission denied");
  assert_string_equal(grace_err_name(-EACCES), "GRACE_EUNKNOWN");
  assert_string_equal(grace_strerror(0), "success");
  assert_string_equal(grace_err_name(0), "GRACE_EUNKNOWN");
}

/* Two threads asking for different codes at once must each get their own
 * text: the messages come from static storage, never a shared buffer. */
struct hammer {
  int code;
  const char *expect;
  int bad;
};

static void *hammer_thread(void *arg) {
  struct hammer *h = arg;
  int i;

  for (i = 0; i < 200000; i++) {
    const char *s = grace_strerror(h->code);

    if (s != h->expect || strcmp(s, h->expect) != 0)
      h->bad++;
  }
  return NULL;
}

static void strerror_is_thread_safe(void **state) {
  struct hammer h[3] = {{GRACE_EPIPE, NULL, 0}, {-4000, NULL, 0}, {-ENOENT, NULL, 0}};
  pthread_t t[3];
  size_t i;

  (void)state;
  for (i = 0; i < 3; i++)
    h[i].expect = grace_strerror(h[i].code);
  for (i = 0; i < 3; i++)
    assert_int_equal(pthread_create(&t[i], NULL, hammer_thread, &h[i]), 0);
  for (i = 0; i < 3; i++) {
    assert_int_equal(pthread_join(t[i], NULL), 0);
    assert_int_equal(h[i].bad, 0);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(context_errors_print_as_go),
      cmocka_unit_test(errno_codes_print_as_strerror),
      cmocka_unit_test(every_code_has_its_name_and_a_message),
      cmocka_unit_test(grace_codes_sit_below_every_errno),
      cmocka_unit_test(unknown_codes_never_give_null),
      cmocka_unit_test(strerror_is_thread_safe),
  };

  return cmocka_run_group_tests_name("error", tests, NULL, NULL);
}
