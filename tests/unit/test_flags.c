/*
 * Flags parsed like Go's flag package: forms, stops, errors, usage text.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "grace/flags.h"

typedef struct vars {
  const char *addr;
  grace_duration timeout;
  int64_t n;
  bool verbose;
} vars;

static grace_flags *make(vars *v) {
  v->addr = ":8000";
  v->timeout = 10 * GRACE_SECOND;
  v->n = 0;
  v->verbose = false;
  grace_flags *f = grace_flags_new("/usr/bin/prog");
  assert_non_null(f);
  assert_int_equal(grace_flags_string(f, "addr", &v->addr, "listen address"),
                   0);
  assert_int_equal(
      grace_flags_duration(f, "timeout", &v->timeout, "how long"), 0);
  assert_int_equal(grace_flags_int(f, "n", &v->n, "count"), 0);
  assert_int_equal(grace_flags_bool(f, "v", &v->verbose, "verbose"), 0);
  return f;
}

static int parse(grace_flags *f, char *err, size_t errlen, ...) {
  static char prog[] = "prog";
  char *argv[16];
  int argc = 0;
  va_list ap;
  va_start(ap, errlen);
  argv[argc++] = prog;
  for (char *a; (a = va_arg(ap, char *)) != NULL;)
    argv[argc++] = a;
  va_end(ap);
  return grace_flags_parse(f, argc, argv, err, errlen);
}

static void test_every_form_sets_values(void **state) {
  (void)state;
  vars v;
  grace_flags *f = make(&v);
  char err[256];
  assert_int_equal(parse(f, err, sizeof(err), "-addr", ":9000",
                         "--timeout=1.5s", "-n=0x10", "-v", "rest", "-n",
                         "7", (char *)NULL),
                   6);
  assert_string_equal(v.addr, ":9000");
  assert_int_equal(v.timeout, 1500 * GRACE_MILLISECOND);
  assert_int_equal(v.n, 16);
  assert_true(v.verbose);
  assert_int_equal(parse(f, err, sizeof(err), "-v=false", "--", "-n", "3",
                         (char *)NULL),
                   3);
  assert_false(v.verbose);
  assert_int_equal(v.n, 16);
  grace_flags_free(f);
}

static void test_errors_use_go_texts(void **state) {
  (void)state;
  vars v;
  grace_flags *f = make(&v);
  char err[256];
  struct {
    const char *a, *b;
    const char *want;
  } cases[] = {
      {"-x", NULL, "flag provided but not defined: -x"},
      {"-timeout", "abc", "invalid value \"abc\" for flag -timeout: parse "
                          "error"},
      {"-n", "1.5", "invalid value \"1.5\" for flag -n: parse error"},
      {"-n", "99999999999999999999",
       "invalid value \"99999999999999999999\" for flag -n: value out of "
       "range"},
      {"-addr", NULL, "flag needs an argument: -addr"},
      {"---x", NULL, "bad flag syntax: ---x"},
      {"-v=maybe", NULL,
       "invalid boolean value \"maybe\" for -v: parse error"},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    int rv = cases[i].b ? parse(f, err, sizeof(err), cases[i].a, cases[i].b,
                                (char *)NULL)
                        : parse(f, err, sizeof(err), cases[i].a, (char *)NULL);
    assert_int_equal(rv, GRACE_ESYNTAX);
    assert_string_equal(err, cases[i].want);
  }
  assert_int_equal(parse(f, err, sizeof(err), "-h", (char *)NULL),
                   GRACE_ENOENT);
  assert_int_equal(parse(f, err, sizeof(err), "--help", (char *)NULL),
                   GRACE_ENOENT);
  /* A value that failed leaves the variable alone. */
  assert_int_equal(v.timeout, 10 * GRACE_SECOND);
  grace_flags_free(f);
}

static void test_registration_errors(void **state) {
  (void)state;
  vars v;
  grace_flags *f = make(&v);
  int64_t x = 0;
  assert_int_equal(grace_flags_int(f, "n", &x, ""), GRACE_EBUSY);
  assert_int_equal(grace_flags_int(f, "", &x, ""), GRACE_EINVAL);
  assert_int_equal(grace_flags_int(f, "-a", &x, ""), GRACE_EINVAL);
  assert_int_equal(grace_flags_int(f, "a=b", &x, ""), GRACE_EINVAL);
  assert_int_equal(grace_flags_int(f, "ok", NULL, ""), GRACE_EINVAL);
  grace_flags_free(f);
}

static void test_usage_matches_go_print_defaults(void **state) {
  (void)state;
  vars v;
  grace_flags *f = make(&v);
  char *buf = NULL;
  size_t len = 0;
  FILE *out = open_memstream(&buf, &len);
  grace_flags_usage(f, out);
  fclose(out);
  assert_string_equal(buf, "Usage of prog:\n"
                           "  -addr string\n"
                           "    \tlisten address (default \":8000\")\n"
                           "  -n int\n"
                           "    \tcount\n"
                           "  -timeout duration\n"
                           "    \thow long (default 10s)\n"
                           "  -v\tverbose\n");
  free(buf);
  grace_flags_free(f);
}

static void test_parse_or_exit_statuses(void **state) {
  (void)state;
  static char prog[] = "prog", x[] = "-x", h[] = "-h";
  char *args[][3] = {{prog, x, NULL}, {prog, h, NULL}};
  int want[] = {2, 0};
  for (int i = 0; i < 2; i++) {
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
      vars v;
      freopen("/dev/null", "w", stderr);
      grace_flags *f = make(&v);
      grace_flags_parse_or_exit(f, 2, args[i]);
      _exit(99);
    }
    int status;
    waitpid(pid, &status, 0);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), want[i]);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_every_form_sets_values),
      cmocka_unit_test(test_errors_use_go_texts),
      cmocka_unit_test(test_registration_errors),
      cmocka_unit_test(test_usage_matches_go_print_defaults),
      cmocka_unit_test(test_parse_or_exit_statuses),
  };
  return cmocka_run_group_tests_name("flags", tests, NULL, NULL);
}
