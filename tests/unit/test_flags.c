/*
 * Flags parsed like Go's flag package: forms, stops, errors, usage text.
 *
 * Every expected text below was produced by Go 1.19's flag package on the
 * same flag set and the same arguments (a throw-away program using
 * flag.NewFlagSet("prog", flag.ContinueOnError)), so these tests pin the
 * byte-for-byte compatibility, not our own reading of it.
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
  grace_flags *f;

  v->addr = ":8000";
  v->timeout = 10 * GRACE_SECOND;
  v->n = 0;
  v->verbose = false;
  f = grace_flags_new("/usr/bin/prog");
  assert_non_null(f);
  assert_int_equal(grace_flags_string(f, "addr", &v->addr, "listen address"),
                   0);
  assert_int_equal(grace_flags_duration(f, "timeout", &v->timeout, "how long"),
                   0);
  assert_int_equal(grace_flags_int(f, "n", &v->n, "count"), 0);
  assert_int_equal(grace_flags_bool(f, "v", &v->verbose, "verbose"), 0);
  return f;
}

/* Parses "prog" plus the NULL-terminated arguments. */
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
  vars v;
  grace_flags *f = make(&v);
  char err[256];

  (void)state;
  assert_int_equal(parse(f, err, sizeof(err), "-addr", ":9000",
                         "--timeout=1.5s", "-n=0x10", "-v", "rest", "-n", "7",
                         (char *)NULL),
                   6);
  assert_string_equal(v.addr, ":9000");
  assert_int_equal(v.timeout, 1500 * GRACE_MILLISECOND);
  assert_int_equal(v.n, 16);
  assert_true(v.verbose);
  assert_null(grace_flags_error(f));
  /* "--" is consumed and ends the flags. */
  assert_int_equal(
      parse(f, err, sizeof(err), "-v=false", "--", "-n", "3", (char *)NULL), 3);
  assert_false(v.verbose);
  assert_int_equal(v.n, 16);
  /* A boolean does not take the next argument: "false" is positional. */
  assert_int_equal(parse(f, err, sizeof(err), "-v", "false", (char *)NULL), 2);
  assert_true(v.verbose);
  /* "-" alone is positional; "--addr value" and "--addr=" work. */
  assert_int_equal(
      parse(f, err, sizeof(err), "--addr", "x", "-", "-v", (char *)NULL), 3);
  assert_string_equal(v.addr, "x");
  assert_int_equal(parse(f, err, sizeof(err), "--addr=", (char *)NULL), 2);
  assert_string_equal(v.addr, "");
  /* A value that looks like a flag is still the value. */
  assert_int_equal(parse(f, err, sizeof(err), "-addr", "-v", (char *)NULL), 3);
  assert_string_equal(v.addr, "-v");
  /* No arguments at all. */
  assert_int_equal(parse(f, err, sizeof(err), (char *)NULL), 1);
  grace_flags_free(f);
}

static void test_errors_use_go_texts(void **state) {
  vars v;
  grace_flags *f = make(&v);
  char err[256];
  struct {
    const char *a, *b;
    const char *want;
  } cases[] = {
      {"-x", NULL, "flag provided but not defined: -x"},
      {"--x=1", NULL, "flag provided but not defined: -x"},
      {"-x=1", NULL, "flag provided but not defined: -x"},
      {"-timeout", "abc",
       "invalid value \"abc\" for flag -timeout: parse error"},
      {"-timeout=", NULL, "invalid value \"\" for flag -timeout: parse error"},
      {"-addr", NULL, "flag needs an argument: -addr"},
      {"---x", NULL, "bad flag syntax: ---x"},
      {"-=x", NULL, "bad flag syntax: -=x"},
      {"-v=maybe", NULL, "invalid boolean value \"maybe\" for -v: parse error"},
      /* Go's %q: escapes, invalid UTF-8 as \x, C1 controls as \u. */
      {"-timeout", "a\"b\n\xff",
       "invalid value \"a\\\"b\\n\\xff\" for flag -timeout: parse error"},
      {"-timeout", "\xc2\xad\xc2\x85\xc3\xa9",
       "invalid value \"\\u00ad\\u0085\xc3\xa9\" for flag -timeout: parse "
       "error"},
  };

  (void)state;
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    int rv = cases[i].b ? parse(f, err, sizeof(err), cases[i].a, cases[i].b,
                                (char *)NULL)
                        : parse(f, err, sizeof(err), cases[i].a, (char *)NULL);
    assert_int_equal(rv, GRACE_ESYNTAX);
    assert_string_equal(err, cases[i].want);
    assert_string_equal(grace_flags_error(f), cases[i].want);
  }
  /* A value that failed leaves the variable alone. */
  assert_int_equal(v.timeout, 10 * GRACE_SECOND);
  grace_flags_free(f);
}

static void test_help_is_err_help_unless_defined(void **state) {
  vars v;
  grace_flags *f = make(&v);
  bool h = false;
  char err[16];

  (void)state;
  assert_int_equal(parse(f, err, sizeof(err), "-h", (char *)NULL),
                   GRACE_ENOENT);
  assert_int_equal(parse(f, err, sizeof(err), "--help", (char *)NULL),
                   GRACE_ENOENT);
  assert_int_equal(parse(f, err, sizeof(err), "-help=1", (char *)NULL),
                   GRACE_ENOENT);
  assert_int_equal(parse(f, err, sizeof(err), "-hh", (char *)NULL),
                   GRACE_ESYNTAX);
  /* A program that defines -h gets it as a flag. */
  assert_int_equal(grace_flags_bool(f, "h", &h, "help me"), 0);
  assert_int_equal(parse(f, err, sizeof(err), "-h", (char *)NULL), 2);
  assert_true(h);
  grace_flags_free(f);
}

static void test_long_error_is_kept_whole(void **state) {
  vars v;
  grace_flags *f = make(&v);
  char big[3000], err[32];

  (void)state;
  memset(big, 'z', sizeof(big) - 1);
  big[sizeof(big) - 1] = '\0';
  assert_int_equal(parse(f, err, sizeof(err), "-timeout", big, (char *)NULL),
                   GRACE_ESYNTAX);
  /* |err| is truncated, NUL terminated; the stored message is whole. */
  assert_int_equal(strlen(err), sizeof(err) - 1);
  assert_int_equal(strlen(grace_flags_error(f)),
                   strlen("invalid value \"\" for flag -timeout: parse error") +
                       sizeof(big) - 1);
  /* A NULL buffer is fine. */
  assert_int_equal(parse(f, NULL, 0, "-x", (char *)NULL), GRACE_ESYNTAX);
  assert_string_equal(grace_flags_error(f),
                      "flag provided but not defined: -x");
  assert_int_equal(grace_flags_parse(NULL, 1, NULL, NULL, 0), GRACE_EINVAL);
  grace_flags_free(f);
}

/* strconv.ParseInt(s, 0, 64), as Go's int flag sees it. */
static void test_int_syntax_is_strconv(void **state) {
  static const struct {
    const char *in;
    int rv;
    int64_t want;
  } cases[] = {
      {"1_0", 0, 10},
      {"0b101", 0, 5},
      {"0o17", 0, 15},
      {"017", 0, 15},
      {"0X1F", 0, 31},
      {"0x_ff", 0, 255},
      {"0_7", 0, 7},
      {"+7", 0, 7},
      {"0", 0, 0},
      {"-0", 0, 0},
      {"-9223372036854775808", 0, INT64_MIN},
      {"9223372036854775807", 0, INT64_MAX},
      {"9223372036854775808", GRACE_ERANGE, 0},
      {"-9223372036854775809", GRACE_ERANGE, 0},
      {"99999999999999999999", GRACE_ERANGE, 0},
      {"99999999999999999999x", GRACE_ERANGE, 0},
      {"1.5", GRACE_ESYNTAX, 0},
      {"0x", GRACE_ESYNTAX, 0},
      {"1__0", GRACE_ESYNTAX, 0},
      {"_10", GRACE_ESYNTAX, 0},
      {"10_", GRACE_ESYNTAX, 0},
      {"08", GRACE_ESYNTAX, 0},
      {" 7", GRACE_ESYNTAX, 0},
      {"7 ", GRACE_ESYNTAX, 0},
      {"", GRACE_ESYNTAX, 0},
      {"-", GRACE_ESYNTAX, 0},
      {"+", GRACE_ESYNTAX, 0},
      {"0b2", GRACE_ESYNTAX, 0},
  };

  (void)state;
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    vars v;
    grace_flags *f = make(&v);
    char err[128], want[128];
    int rv;

    v.n = 123;
    rv = parse(f, err, sizeof(err), "-n", cases[i].in, (char *)NULL);
    if (cases[i].rv == 0) {
      assert_int_equal(rv, 3);
      assert_true(v.n == cases[i].want);
    } else {
      assert_int_equal(rv, GRACE_ESYNTAX);
      snprintf(want, sizeof(want), "invalid value \"%s\" for flag -n: %s",
               cases[i].in,
               cases[i].rv == GRACE_ERANGE ? "value out of range"
                                           : "parse error");
      assert_string_equal(err, want);
      assert_int_equal(v.n, 123);
    }
    grace_flags_free(f);
  }
}

static void test_bool_syntax_is_strconv(void **state) {
  static const char *const yes[] = {"1", "t", "T", "TRUE", "true", "True"};
  static const char *const no[] = {"0", "f", "F", "FALSE", "false", "False"};
  static const char *const bad[] = {"yes", "tRUE", "", "2", "on"};
  char arg[32], err[128];

  (void)state;
  for (size_t i = 0; i < 6; i++) {
    vars v;
    grace_flags *f = make(&v);

    snprintf(arg, sizeof(arg), "-v=%s", yes[i]);
    assert_int_equal(parse(f, err, sizeof(err), arg, (char *)NULL), 2);
    assert_true(v.verbose);
    snprintf(arg, sizeof(arg), "-v=%s", no[i]);
    assert_int_equal(parse(f, err, sizeof(err), arg, (char *)NULL), 2);
    assert_false(v.verbose);
    grace_flags_free(f);
  }
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    vars v;
    grace_flags *f = make(&v);
    char want[128];

    snprintf(arg, sizeof(arg), "-v=%s", bad[i]);
    assert_int_equal(parse(f, err, sizeof(err), arg, (char *)NULL),
                     GRACE_ESYNTAX);
    snprintf(want, sizeof(want),
             "invalid boolean value \"%s\" for -v: parse error", bad[i]);
    assert_string_equal(err, want);
    grace_flags_free(f);
  }
}

static void test_registration_errors(void **state) {
  vars v;
  grace_flags *f = make(&v);
  int64_t x = 0;

  (void)state;
  assert_int_equal(grace_flags_int(f, "n", &x, ""), GRACE_EBUSY);
  assert_int_equal(grace_flags_int(f, "", &x, ""), GRACE_EINVAL);
  assert_int_equal(grace_flags_int(f, "-a", &x, ""), GRACE_EINVAL);
  assert_int_equal(grace_flags_int(f, "a=b", &x, ""), GRACE_EINVAL);
  assert_int_equal(grace_flags_int(f, "ok", NULL, ""), GRACE_EINVAL);
  assert_int_equal(grace_flags_int(f, NULL, &x, ""), GRACE_EINVAL);
  assert_int_equal(grace_flags_int(NULL, "ok", &x, ""), GRACE_EINVAL);
  /* A prefix of a registered name is another name. */
  assert_int_equal(grace_flags_int(f, "add", &x, ""), 0);
  assert_int_equal(parse(f, NULL, 0, "-add", "5", (char *)NULL), 3);
  assert_int_equal(x, 5);
  assert_string_equal(v.addr, ":8000");
  grace_flags_free(f);
}

static char *usage_of(const grace_flags *f) {
  char *buf = NULL;
  size_t len = 0;
  FILE *out = open_memstream(&buf, &len);

  assert_non_null(out);
  grace_flags_usage(f, out);
  fclose(out);
  return buf;
}

static void test_usage_matches_go_print_defaults(void **state) {
  vars v;
  grace_flags *f = make(&v);
  char *text = usage_of(f);

  (void)state;
  assert_string_equal(text, "Usage of prog:\n"
                            "  -addr string\n"
                            "    \tlisten address (default \":8000\")\n"
                            "  -n int\n"
                            "    \tcount\n"
                            "  -timeout duration\n"
                            "    \thow long (default 10s)\n"
                            "  -v\tverbose\n");
  free(text);
  grace_flags_free(f);
}

/* The richer set of the Go reference run: back-quoted names, multi-line
 * usage, defaults that need quoting, zero defaults left out. */
static void test_usage_edge_cases_match_go(void **state) {
  const char *addr = ":8000", *q = "a\"b\\c\t\xc3\xa9\x01", *e = "";
  grace_duration timeout = 10 * GRACE_SECOND, z = 0;
  int64_t n = 0, big = -42;
  bool verbose = false, keep = true;
  grace_flags *f = grace_flags_new("prog");
  char *text;

  (void)state;
  assert_non_null(f);
  assert_int_equal(grace_flags_string(f, "addr", &addr, "listen `address`"), 0);
  assert_int_equal(grace_flags_duration(f, "timeout", &timeout, "how long"), 0);
  assert_int_equal(grace_flags_int(f, "n", &n, "count"), 0);
  assert_int_equal(grace_flags_bool(f, "v", &verbose, "verbose"), 0);
  assert_int_equal(
      grace_flags_bool(f, "keep", &keep, "keep going\nsecond line"), 0);
  assert_int_equal(grace_flags_string(f, "q", &q, "quoted default"), 0);
  assert_int_equal(grace_flags_string(f, "e", &e, "empty"), 0);
  assert_int_equal(grace_flags_duration(f, "z", &z, "zero duration"), 0);
  assert_int_equal(grace_flags_int(f, "big", &big, "negative"), 0);
  text = usage_of(f);
  assert_string_equal(text, "Usage of prog:\n"
                            "  -addr address\n"
                            "    \tlisten address (default \":8000\")\n"
                            "  -big int\n"
                            "    \tnegative (default -42)\n"
                            "  -e string\n"
                            "    \tempty\n"
                            "  -keep\n"
                            "    \tkeep going\n"
                            "    \tsecond line (default true)\n"
                            "  -n int\n"
                            "    \tcount\n"
                            "  -q string\n"
                            "    \tquoted default (default "
                            "\"a\\\"b\\\\c\\t\xc3\xa9\\x01\")\n"
                            "  -timeout duration\n"
                            "    \thow long (default 10s)\n"
                            "  -v\tverbose\n"
                            "  -z duration\n"
                            "    \tzero duration\n");
  free(text);
  /* The default is the value at registration, not the parsed one. */
  assert_int_equal(parse(f, NULL, 0, "-big", "7", (char *)NULL), 3);
  text = usage_of(f);
  assert_non_null(strstr(text, "negative (default -42)\n"));
  free(text);
  grace_flags_free(f);
}

static void test_program_name_is_base_name(void **state) {
  grace_flags *f;
  char *text;

  (void)state;
  f = grace_flags_new("./build/examples/syncer");
  text = usage_of(f);
  assert_string_equal(text, "Usage of syncer:\n");
  free(text);
  grace_flags_free(f);
  f = grace_flags_new(NULL);
  text = usage_of(f);
  assert_string_equal(text, "Usage of program:\n");
  free(text);
  grace_flags_free(f);
  grace_flags_free(NULL);
}

/* Runs parse_or_exit in a child; returns its exit status and what it wrote
 * to standard error in |out|. */
static int run_or_exit(char **args, int argc, char *out, size_t outlen) {
  int fds[2], status;
  size_t len = 0;
  ssize_t r;
  pid_t pid;

  assert_int_equal(pipe(fds), 0);
  pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    vars v;
    grace_flags *f;

    dup2(fds[1], 2);
    close(fds[0]);
    close(fds[1]);
    f = make(&v);
    grace_flags_parse_or_exit(f, argc, args);
    _exit(99);
  }
  close(fds[1]);
  while ((r = read(fds[0], out + len, outlen - 1 - len)) > 0)
    len += (size_t)r;
  out[len] = '\0';
  close(fds[0]);
  assert_int_equal(waitpid(pid, &status, 0), pid);
  assert_true(WIFEXITED(status));
  return WEXITSTATUS(status);
}

static void test_parse_or_exit_statuses_and_output(void **state) {
  static char prog[] = "prog", x[] = "-x", h[] = "-h", t[] = "-timeout",
              abc[] = "abc";
  static const char usage[] = "Usage of prog:\n"
                              "  -addr string\n"
                              "    \tlisten address (default \":8000\")\n"
                              "  -n int\n"
                              "    \tcount\n"
                              "  -timeout duration\n"
                              "    \thow long (default 10s)\n"
                              "  -v\tverbose\n";
  char *args_x[] = {prog, x, NULL}, *args_h[] = {prog, h, NULL},
       *args_t[] = {prog, t, abc, NULL};
  char out[4096], want[4096];

  (void)state;
  assert_int_equal(run_or_exit(args_x, 2, out, sizeof(out)), 2);
  snprintf(want, sizeof(want), "flag provided but not defined: -x\n%s", usage);
  assert_string_equal(out, want);
  assert_int_equal(run_or_exit(args_t, 3, out, sizeof(out)), 2);
  snprintf(want, sizeof(want),
           "invalid value \"abc\" for flag -timeout: parse error\n%s", usage);
  assert_string_equal(out, want);
  /* -h: the usage alone, exit 0. */
  assert_int_equal(run_or_exit(args_h, 2, out, sizeof(out)), 0);
  assert_string_equal(out, usage);
  /* Success returns to the caller (the child then exits 99). */
  assert_int_equal(run_or_exit(args_h, 1, out, sizeof(out)), 99);
  assert_string_equal(out, "");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_every_form_sets_values),
      cmocka_unit_test(test_errors_use_go_texts),
      cmocka_unit_test(test_help_is_err_help_unless_defined),
      cmocka_unit_test(test_long_error_is_kept_whole),
      cmocka_unit_test(test_int_syntax_is_strconv),
      cmocka_unit_test(test_bool_syntax_is_strconv),
      cmocka_unit_test(test_registration_errors),
      cmocka_unit_test(test_usage_matches_go_print_defaults),
      cmocka_unit_test(test_usage_edge_cases_match_go),
      cmocka_unit_test(test_program_name_is_base_name),
      cmocka_unit_test(test_parse_or_exit_statuses_and_output),
  };
  return cmocka_run_group_tests_name("flags", tests, NULL, NULL);
}
