/*
 * Tests for grace_duration_parse and grace_duration_format.
 *
 * The first tables are Go's own: parseDurationTests, parseDurationErrorTests
 * and durationTests from src/time/time_test.go (Go 1.19), translated to C.
 * Go's error table only checks that the quoted input appears in the error;
 * here each entry carries the full error text Go prints and the grace code.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cmocka.h>

#include "grace/duration.h"

#define NS GRACE_NANOSECOND
#define US GRACE_MICROSECOND
#define MS GRACE_MILLISECOND
#define SEC GRACE_SECOND
#define MIN GRACE_MINUTE
#define HOUR GRACE_HOUR

/* Go's parseDurationTests.  "\xC2\xB5" is U+00B5, "\xCE\xBC" is U+03BC. */
static const struct {
  const char *in;
  grace_duration want;
} parse_tests[] = {
    /* simple */
    {"0", 0},
    {"5s", 5 * SEC},
    {"30s", 30 * SEC},
    {"1478s", 1478 * SEC},
    /* sign */
    {"-5s", -5 * SEC},
    {"+5s", 5 * SEC},
    {"-0", 0},
    {"+0", 0},
    /* decimal */
    {"5.0s", 5 * SEC},
    {"5.6s", 5 * SEC + 600 * MS},
    {"5.s", 5 * SEC},
    {".5s", 500 * MS},
    {"1.0s", 1 * SEC},
    {"1.00s", 1 * SEC},
    {"1.004s", 1 * SEC + 4 * MS},
    {"1.0040s", 1 * SEC + 4 * MS},
    {"100.00100s", 100 * SEC + 1 * MS},
    /* different units */
    {"10ns", 10 * NS},
    {"11us", 11 * US},
    {"12\xC2\xB5s", 12 * US},
    {"12\xCE\xBCs", 12 * US},
    {"13ms", 13 * MS},
    {"14s", 14 * SEC},
    {"15m", 15 * MIN},
    {"16h", 16 * HOUR},
    /* composite durations */
    {"3h30m", 3 * HOUR + 30 * MIN},
    {"10.5s4m", 4 * MIN + 10 * SEC + 500 * MS},
    {"-2m3.4s", -(2 * MIN + 3 * SEC + 400 * MS)},
    {"1h2m3s4ms5us6ns", 1 * HOUR + 2 * MIN + 3 * SEC + 4 * MS + 5 * US + 6 * NS},
    {"39h9m14.425s", 39 * HOUR + 9 * MIN + 14 * SEC + 425 * MS},
    /* large value */
    {"52763797000ns", 52763797000 * NS},
    /* more than 9 digits after decimal point, see golang.org/issue/6617 */
    {"0.3333333333333333333h", 20 * MIN},
    /* 9007199254740993 = 1<<53+1 cannot be stored precisely in a float64 */
    {"9007199254740993ns", ((INT64_C(1) << 53) + 1) * NS},
    /* largest duration that can be represented by int64 in nanoseconds */
    {"9223372036854775807ns", INT64_MAX},
    {"9223372036854775.807us", INT64_MAX},
    {"9223372036s854ms775us807ns", INT64_MAX},
    {"-9223372036854775808ns", INT64_MIN},
    {"-9223372036854775.808us", INT64_MIN},
    {"-9223372036s854ms775us808ns", INT64_MIN},
    /* largest negative value */
    {"-9223372036854775808ns", INT64_MIN},
    /* largest negative round trip value, see golang.org/issue/48629 */
    {"-2562047h47m16.854775808s", INT64_MIN},
    /* huge string; issue 15011. */
    {"0.100000000000000000000h", 6 * MIN},
    /* This value tests the first overflow check in leadingFraction. */
    {"0.830103483285477580700h", 49 * MIN + 48 * SEC + 372539827 * NS},
};

struct error_case {
  const char *in;
  const char *text; /* Go's err.Error(), in full */
  int rc;
};

#define INVALID(q) "time: invalid duration " q

/* Go's parseDurationErrorTests. */
static const struct error_case go_error_tests[] = {
    /* invalid */
    {"", INVALID("\"\""), GRACE_ESYNTAX},
    {"3", "time: missing unit in duration \"3\"", GRACE_ESYNTAX},
    {"-", INVALID("\"-\""), GRACE_ESYNTAX},
    {"s", INVALID("\"s\""), GRACE_ESYNTAX},
    {".", INVALID("\".\""), GRACE_ESYNTAX},
    {"-.", INVALID("\"-.\""), GRACE_ESYNTAX},
    {".s", INVALID("\".s\""), GRACE_ESYNTAX},
    {"+.s", INVALID("\"+.s\""), GRACE_ESYNTAX},
    {"1d", "time: unknown unit \"d\" in duration \"1d\"", GRACE_ESYNTAX},
    {"\x85\x85", INVALID("\"\\x85\\x85\""), GRACE_ESYNTAX},
    {"\xff"
     "ff",
     INVALID("\"\\xffff\""), GRACE_ESYNTAX},
    {"hello \xff"
     "ff world",
     INVALID("\"hello \\xffff world\""), GRACE_ESYNTAX},
    /* utf8.RuneError */
    {"\xEF\xBF\xBD", INVALID("\"\\xef\\xbf\\xbd\""), GRACE_ESYNTAX},
    {"\xEF\xBF\xBD hello \xEF\xBF\xBD world",
     INVALID("\"\\xef\\xbf\\xbd hello \\xef\\xbf\\xbd world\""), GRACE_ESYNTAX},
    /* overflow */
    {"9223372036854775810ns", INVALID("\"9223372036854775810ns\""), GRACE_ERANGE},
    {"9223372036854775808ns", INVALID("\"9223372036854775808ns\""), GRACE_ERANGE},
    {"-9223372036854775809ns", INVALID("\"-9223372036854775809ns\""), GRACE_ERANGE},
    {"9223372036854776us", INVALID("\"9223372036854776us\""), GRACE_ERANGE},
    {"3000000h", INVALID("\"3000000h\""), GRACE_ERANGE},
    {"9223372036854775.808us", INVALID("\"9223372036854775.808us\""), GRACE_ERANGE},
    {"9223372036854ms775us808ns", INVALID("\"9223372036854ms775us808ns\""), GRACE_ERANGE},
};

/* More error texts, each checked against Go 1.19's ParseDuration. */
static const struct error_case more_error_tests[] = {
    {"1", "time: missing unit in duration \"1\"", GRACE_ESYNTAX},
    {"1x", "time: unknown unit \"x\" in duration \"1x\"", GRACE_ESYNTAX},
    {"1.5.5s", "time: missing unit in duration \"1.5.5s\"", GRACE_ESYNTAX},
    {"1s1", "time: missing unit in duration \"1s1\"", GRACE_ESYNTAX},
    {"1.", "time: missing unit in duration \"1.\"", GRACE_ESYNTAX},
    {"1\"s", "time: unknown unit \"\\\"s\" in duration \"1\\\"s\"", GRACE_ESYNTAX},
    {"1\\s", "time: unknown unit \"\\\\s\" in duration \"1\\\\s\"", GRACE_ESYNTAX},
    {"1\x01s", "time: unknown unit \"\\x01s\" in duration \"1\\x01s\"", GRACE_ESYNTAX},
    {"1\ts", "time: unknown unit \"\\x09s\" in duration \"1\\x09s\"", GRACE_ESYNTAX},
    /* DEL is below utf8.RuneSelf and printed as is. */
    {"1\x7fs", "time: unknown unit \"\x7fs\" in duration \"1\x7fs\"", GRACE_ESYNTAX},
    /* A micro sign without the s; a valid character is escaped whole. */
    {"1\xC2\xB5", "time: unknown unit \"\\xc2\\xb5\" in duration \"1\\xc2\\xb5\"",
     GRACE_ESYNTAX},
    {"1\xCE\xBCss", "time: unknown unit \"\\xce\\xbcss\" in duration \"1\\xce\\xbcss\"",
     GRACE_ESYNTAX},
    {"\xCE\xBCs", INVALID("\"\\xce\\xbcs\""), GRACE_ESYNTAX},
    /* Invalid UTF-8: surrogate, overlong, past U+10FFFF, truncated. */
    {"1\xED\xA0\x80s",
     "time: unknown unit \"\\xed\\xa0\\x80s\" in duration \"1\\xed\\xa0\\x80s\"",
     GRACE_ESYNTAX},
    {"1\xC0\x80", "time: unknown unit \"\\xc0\\x80\" in duration \"1\\xc0\\x80\"",
     GRACE_ESYNTAX},
    {"1\xF4\x90\x80\x80",
     "time: unknown unit \"\\xf4\\x90\\x80\\x80\" in duration "
     "\"1\\xf4\\x90\\x80\\x80\"",
     GRACE_ESYNTAX},
    {"1\xEF\xBF", "time: unknown unit \"\\xef\\xbf\" in duration \"1\\xef\\xbf\"",
     GRACE_ESYNTAX},
    {"1h-1s", "time: unknown unit \"h-\" in duration \"1h-1s\"", GRACE_ESYNTAX},
    {" 1s", INVALID("\" 1s\""), GRACE_ESYNTAX},
    {"1s ", "time: unknown unit \"s \" in duration \"1s \"", GRACE_ESYNTAX},
    {"1e3s", "time: unknown unit \"e\" in duration \"1e3s\"", GRACE_ESYNTAX},
    {"0x10s", "time: unknown unit \"x\" in duration \"0x10s\"", GRACE_ESYNTAX},
    {"2562047h47m16.854775808s", INVALID("\"2562047h47m16.854775808s\""),
     GRACE_ERANGE},
    {"18446744073709551616ns", INVALID("\"18446744073709551616ns\""), GRACE_ERANGE},
};

/* Go's durationTests. */
static const struct {
  const char *str;
  grace_duration d;
} format_tests[] = {
    {"0s", 0},
    {"1ns", 1 * NS},
    {"1.1\xC2\xB5s", 1100 * NS},
    {"2.2ms", 2200 * US},
    {"3.3s", 3300 * MS},
    {"4m5s", 4 * MIN + 5 * SEC},
    {"4m5.001s", 4 * MIN + 5001 * MS},
    {"5h6m7.001s", 5 * HOUR + 6 * MIN + 7001 * MS},
    {"8m0.000000001s", 8 * MIN + 1 * NS},
    {"2562047h47m16.854775807s", INT64_MAX},
    {"-2562047h47m16.854775808s", INT64_MIN},
};

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

static void check_error(const struct error_case *tc) {
  char err[256];
  grace_duration d = 42;
  int rc = grace_duration_parse(tc->in, &d, err, sizeof(err));

  if (rc != tc->rc || strcmp(err, tc->text) != 0)
    print_error("input \"%s\": rc %d, error '%s'\n", tc->in, rc, err);
  assert_int_equal(rc, tc->rc);
  assert_string_equal(err, tc->text);
  assert_int_equal(d, 42); /* left untouched on failure */
}

static void parse_accepts_go_parse_duration_tests(void **state) {
  size_t i;

  (void)state;
  for (i = 0; i < COUNT(parse_tests); i++) {
    char err[128] = "sentinel";
    grace_duration d = 42;

    if (grace_duration_parse(parse_tests[i].in, &d, err, sizeof(err)) != 0)
      print_error("input \"%s\": %s\n", parse_tests[i].in, err);
    assert_int_equal(grace_duration_parse(parse_tests[i].in, &d, err, sizeof(err)), 0);
    assert_int_equal(d, parse_tests[i].want);
    assert_string_equal(err, ""); /* cleared on success */
  }
}

static void parse_rejects_go_parse_duration_error_tests(void **state) {
  size_t i;

  (void)state;
  for (i = 0; i < COUNT(go_error_tests); i++)
    check_error(&go_error_tests[i]);
}

static void parse_error_text_quotes_like_go(void **state) {
  size_t i;

  (void)state;
  for (i = 0; i < COUNT(more_error_tests); i++)
    check_error(&more_error_tests[i]);
}

static void parse_keeps_go_overflow_quirks(void **state) {
  grace_duration d = 42;

  (void)state;
  /* Go adds the terms in a uint64 that wraps when both are 1<<63; the
   * result is 0 with no error.  Being exact means keeping this. */
  assert_int_equal(grace_duration_parse("9223372036854775808ns9223372036854775808ns",
                                        &d, NULL, 0),
                   0);
  assert_int_equal(d, 0);
  /* 1<<63 is accepted only with a minus sign. */
  assert_int_equal(grace_duration_parse("-9223372036854775808ns", &d, NULL, 0), 0);
  assert_int_equal(d, INT64_MIN);
  assert_int_equal(grace_duration_parse("+9223372036854775808ns", &d, NULL, 0),
                   GRACE_ERANGE);
  /* Fraction digits past 63 bits are consumed but ignored. */
  assert_int_equal(grace_duration_parse("1.00000000000000000000000000009s", &d, NULL, 0),
                   0);
  assert_int_equal(d, SEC);
  /* "0" alone is special; "00" and "0.0" still need a unit. */
  assert_int_equal(grace_duration_parse("00", &d, NULL, 0), GRACE_ESYNTAX);
  assert_int_equal(grace_duration_parse("0.0", &d, NULL, 0), GRACE_ESYNTAX);
}

static void parse_rejects_null_arguments(void **state) {
  char err[64];
  grace_duration d = 42;

  (void)state;
  assert_int_equal(grace_duration_parse(NULL, &d, err, sizeof(err)), GRACE_EINVAL);
  assert_string_equal(err, grace_strerror(GRACE_EINVAL));
  assert_int_equal(d, 42);
  assert_int_equal(grace_duration_parse("1s", NULL, err, sizeof(err)), GRACE_EINVAL);
  assert_int_equal(grace_duration_parse(NULL, NULL, NULL, 0), GRACE_EINVAL);
}

static void parse_truncates_error_text_to_errlen(void **state) {
  const char *full = "time: unknown unit \"x\" in duration \"1x\"";
  char err[16];
  size_t len;

  (void)state;
  for (len = 1; len <= sizeof(err); len++) {
    memset(err, 'Z', sizeof(err));
    assert_int_equal(grace_duration_parse("1x", &(grace_duration){0}, err, len),
                     GRACE_ESYNTAX);
    assert_int_equal(strlen(err), len - 1);
    assert_memory_equal(err, full, len - 1);
    if (len < sizeof(err))
      assert_int_equal(err[len], 'Z'); /* nothing written past errlen */
  }
  /* errlen 0 writes nothing; a NULL errbuf is allowed. */
  err[0] = 'Z';
  assert_int_equal(grace_duration_parse("1x", &(grace_duration){0}, err, 0),
                   GRACE_ESYNTAX);
  assert_int_equal(err[0], 'Z');
  assert_int_equal(grace_duration_parse("1x", &(grace_duration){0}, NULL, 99),
                   GRACE_ESYNTAX);
}

static void format_matches_go_duration_tests(void **state) {
  char buf[GRACE_DURATION_STRLEN], neg[GRACE_DURATION_STRLEN + 1];
  size_t i;

  (void)state;
  for (i = 0; i < COUNT(format_tests); i++) {
    int n = grace_duration_format(format_tests[i].d, buf, sizeof(buf));

    assert_string_equal(buf, format_tests[i].str);
    assert_int_equal(n, strlen(format_tests[i].str));
    if (format_tests[i].d > 0) {
      neg[0] = '-';
      strcpy(neg + 1, format_tests[i].str);
      n = grace_duration_format(-format_tests[i].d, buf, sizeof(buf));
      assert_string_equal(buf, neg);
      assert_int_equal(n, strlen(neg));
    }
  }
}

static void format_has_snprintf_semantics(void **state) {
  const char *full = "-2562047h47m16.854775808s";
  char buf[GRACE_DURATION_STRLEN];
  size_t len;

  (void)state;
  assert_int_equal(grace_duration_format(INT64_MIN, NULL, 0), strlen(full));
  assert_true(strlen(full) < GRACE_DURATION_STRLEN);
  for (len = 1; len <= strlen(full) + 1; len++) {
    memset(buf, 'Z', sizeof(buf));
    assert_int_equal(grace_duration_format(INT64_MIN, buf, len), strlen(full));
    assert_int_equal(strlen(buf), len - 1);
    assert_memory_equal(buf, full, len - 1);
    assert_int_equal(buf[len], 'Z');
  }
  memset(buf, 'Z', sizeof(buf));
  assert_int_equal(grace_duration_format(SEC, buf, 0), 2);
  assert_int_equal(buf[0], 'Z');
}

/* A small deterministic generator (xorshift64*), so failures repeat. */
static uint64_t next_random(uint64_t *s) {
  *s ^= *s >> 12;
  *s ^= *s << 25;
  *s ^= *s >> 27;
  return *s * UINT64_C(2685821657736338717);
}

static void round_trip(grace_duration d0) {
  char buf[GRACE_DURATION_STRLEN], err[128];
  grace_duration d1 = 0;
  int rc;

  grace_duration_format(d0, buf, sizeof(buf));
  rc = grace_duration_parse(buf, &d1, err, sizeof(err));
  if (rc != 0 || d1 != d0)
    print_error("%lld -> \"%s\" -> %lld (%s)\n", (long long)d0, buf, (long long)d1, err);
  assert_int_equal(rc, 0);
  assert_int_equal(d1, d0);
}

static void format_then_parse_round_trips(void **state) {
  uint64_t seed = UINT64_C(0x9E3779B97F4A7C15);
  int i;

  (void)state;
  /* Go's TestParseDurationRoundTrip: the extremes, then random values.
   * String() always prints every nanosecond, so any value round-trips. */
  round_trip(INT64_MAX);
  round_trip(INT64_MIN);
  round_trip(INT64_MIN + 1);
  round_trip(0);
  for (i = 0; i < 100000; i++) {
    uint64_t r = next_random(&seed);

    switch (i % 4) {
    case 0:
      round_trip((grace_duration)(r >> 1) * ((r & 1) ? -1 : 1));
      break;
    case 1:
      round_trip((grace_duration)(r % INT64_C(2147483648)) * MS); /* Go's case */
      break;
    case 2:
      round_trip((grace_duration)(r % (UINT64_C(1) << (r % 62 + 1))));
      break;
    default:
      round_trip(-(grace_duration)(r % 1000000000));
      break;
    }
  }
}

/*
 * Guard-page harness (picohttpparser): the string, NUL included, ends on the
 * last byte of a readable page followed by a PROT_NONE page, so a read past
 * the NUL faults.  Every input and every prefix of it (byte-at-a-time) is
 * parsed there and must give the same result as in an ordinary buffer.
 */
struct guard {
  char *page;
  size_t size;
};

static int guard_setup(void **state) {
  struct guard *g = malloc(sizeof(*g));
  char *map;

  assert_non_null(g);
  g->size = (size_t)sysconf(_SC_PAGESIZE);
  map = mmap(NULL, 2 * g->size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
             -1, 0);
  assert_true(map != MAP_FAILED);
  assert_int_equal(mprotect(map + g->size, g->size, PROT_NONE), 0);
  g->page = map;
  *state = g;
  return 0;
}

static int guard_teardown(void **state) {
  struct guard *g = *state;

  assert_int_equal(munmap(g->page, 2 * g->size), 0);
  free(g);
  return 0;
}

static void parse_at_guard(struct guard *g, const char *in, size_t n) {
  char *copy = malloc(n + 1);
  char *at = g->page + g->size - (n + 1);
  char err1[256], err2[256];
  grace_duration d1 = 7, d2 = 7;
  int rc1, rc2;

  assert_non_null(copy);
  assert_true(n + 1 <= g->size);
  memcpy(copy, in, n);
  copy[n] = '\0';
  memcpy(at, in, n);
  at[n] = '\0';
  rc1 = grace_duration_parse(copy, &d1, err1, sizeof(err1));
  rc2 = grace_duration_parse(at, &d2, err2, sizeof(err2));
  assert_int_equal(rc1, rc2);
  assert_int_equal(d1, d2);
  assert_string_equal(err1, err2);
  if (rc2 != 0)
    assert_memory_equal(err2, "time: ", 6);
  free(copy);
}

static void parse_never_reads_past_nul(void **state) {
  struct guard *g = *state;
  size_t i, n;

  for (i = 0; i < COUNT(parse_tests); i++) {
    for (n = 0; n <= strlen(parse_tests[i].in); n++)
      parse_at_guard(g, parse_tests[i].in, n);
  }
  for (i = 0; i < COUNT(go_error_tests); i++) {
    for (n = 0; n <= strlen(go_error_tests[i].in); n++)
      parse_at_guard(g, go_error_tests[i].in, n);
  }
  for (i = 0; i < COUNT(more_error_tests); i++) {
    for (n = 0; n <= strlen(more_error_tests[i].in); n++)
      parse_at_guard(g, more_error_tests[i].in, n);
  }
  /* Truncated multi-byte characters right before the NUL. */
  parse_at_guard(g, "1\xC2", 2);
  parse_at_guard(g, "1\xE2\x82", 3);
  parse_at_guard(g, "1\xF0\x9F\x98", 4);
  parse_at_guard(g, "\xEF\xBF", 2);
}

static void parse_prefixes_give_partial_sums(void **state) {
  /* Byte-at-a-time over a composite input: each prefix that ends after a
   * unit is the sum so far; the others are errors. */
  static const struct {
    size_t len;
    grace_duration want; /* -1: an error */
  } steps[] = {{1, -1}, {2, HOUR}, {3, -1}, {4, HOUR + 2 * MIN}, {5, -1},
               {6, -1}, {7, -1}, {8, HOUR + 2 * MIN + 3 * SEC + 500 * MS},
               {9, -1}, {10, HOUR + 2 * MIN + 3 * SEC + 500 * MS + 4 * MIN}};
  const char *in = "1h2m3.5s4m";
  char buf[16];
  size_t i;

  (void)state;
  for (i = 0; i < COUNT(steps); i++) {
    grace_duration d = 0;
    int rc;

    memcpy(buf, in, steps[i].len);
    buf[steps[i].len] = '\0';
    rc = grace_duration_parse(buf, &d, NULL, 0);
    if (steps[i].want < 0) {
      assert_int_equal(rc, GRACE_ESYNTAX);
    } else {
      assert_int_equal(rc, 0);
      assert_int_equal(d, steps[i].want);
    }
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(parse_accepts_go_parse_duration_tests),
      cmocka_unit_test(parse_rejects_go_parse_duration_error_tests),
      cmocka_unit_test(parse_error_text_quotes_like_go),
      cmocka_unit_test(parse_keeps_go_overflow_quirks),
      cmocka_unit_test(parse_rejects_null_arguments),
      cmocka_unit_test(parse_truncates_error_text_to_errlen),
      cmocka_unit_test(parse_prefixes_give_partial_sums),
      cmocka_unit_test_setup_teardown(parse_never_reads_past_nul, guard_setup,
                                      guard_teardown),
      cmocka_unit_test(format_matches_go_duration_tests),
      cmocka_unit_test(format_has_snprintf_semantics),
      cmocka_unit_test(format_then_parse_round_trips),
  };

  return cmocka_run_group_tests_name("duration", tests, NULL, NULL);
}
