/*
 * Unit tests for src/http/h1_body.c, the strict HTTP/1.1 body framing
 * (Content-Length and chunked, RFC 9112 sections 6 and 7).
 *
 * Every input is run whole, in every 2-way split and one byte at a time,
 * and each run must give the same body, the same result and stop at the
 * same byte.  Each piece handed to the parser sits at the very end of a
 * readable region followed by a PROT_NONE page (picohttpparser's test.c),
 * so reading one byte past the input faults.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cmocka.h>

#include "http/h1_body.h"

/* ---- the guard page -------------------------------------------------------
 */

#define ARENA_SIZE (64 * 1024)

static uint8_t *arena; /* ARENA_SIZE readable bytes, then a PROT_NONE page */
static size_t page;

static int arena_setup(void **state) {
  (void)state;
  page = (size_t)sysconf(_SC_PAGESIZE);
  uint8_t *m = mmap(NULL, ARENA_SIZE + page, PROT_READ | PROT_WRITE,
                    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (m == MAP_FAILED)
    return -1;
  if (mprotect(m + ARENA_SIZE, page, PROT_NONE) != 0)
    return -1;
  arena = m;
  return 0;
}

static int arena_teardown(void **state) {
  (void)state;
  munmap(arena, ARENA_SIZE + page);
  return 0;
}

/* Copies |p|/|n| so that its last byte is the last readable one. */
static const uint8_t *at_guard(const void *p, size_t n) {
  assert_true(n <= ARENA_SIZE);
  uint8_t *dst = arena + ARENA_SIZE - n;
  memcpy(dst, p, n);
  return dst;
}

/* ---- a driver -------------------------------------------------------------
 */

typedef struct outcome {
  int rv;          /* DONE, a negative error, or 0 (wants more input) */
  size_t consumed; /* input bytes used */
  char body[65536];
  size_t blen;
} outcome;

/* Feeds one piece (at the guard page) until the parser has used it all,
 * finished or failed.  Returns the parser's last result. */
static int feed_piece(grace__h1_body *b, const uint8_t *src, size_t n,
                      outcome *o) {
  const uint8_t *p = at_guard(src, n);
  size_t off = 0;
  int rv = 0;
  while (off < n) {
    size_t used = 0, len = 0;
    const uint8_t *data = NULL;
    rv = grace__h1_body_next(b, p + off, n - off, &used, &data, &len);
    if (rv < 0)
      return rv;
    assert_true(used <= n - off);
    if (len > 0) {
      /* Body bytes are a part of the consumed input. */
      assert_true(data >= p + off && data + len <= p + off + used);
      assert_true(o->blen + len <= sizeof(o->body));
      memcpy(o->body + o->blen, data, len);
      o->blen += len;
    }
    off += used;
    o->consumed += used;
    if (rv == GRACE__H1_BODY_DONE)
      return rv;
    assert_true(used > 0); /* progress, or the caller would spin */
  }
  return rv;
}

/* Runs |in|/|n| cut at |cuts| (ascending offsets, |ncuts| of them). */
static void run_cuts(int chunked, uint64_t length, size_t max_trailer,
                     const char *in, size_t n, const size_t *cuts, size_t ncuts,
                     outcome *o) {
  grace__h1_body b;
  size_t from = 0;
  memset(o, 0, offsetof(outcome, body));
  o->blen = 0;
  grace__h1_body_init(&b, chunked, length, max_trailer);
  for (size_t i = 0; i <= ncuts; i++) {
    size_t to = i < ncuts ? cuts[i] : n;
    if (to == from)
      continue;
    o->rv = feed_piece(&b, (const uint8_t *)in + from, to - from, o);
    if (o->rv != 0)
      return;
    from = to;
  }
}

static void assert_same(const outcome *a, const outcome *b) {
  assert_int_equal(a->rv, b->rv);
  assert_int_equal(a->blen, b->blen);
  assert_memory_equal(a->body, b->body, a->blen);
  if (a->rv >= 0)
    assert_int_equal(a->consumed, b->consumed);
}

/* Runs |in| whole, in every 2-way split and byte at a time; every run must
 * agree.  Returns the whole run's outcome in |o|. */
static void run_all_ways(int chunked, uint64_t length, size_t max_trailer,
                         const char *in, size_t n, outcome *o) {
  static outcome other;
  run_cuts(chunked, length, max_trailer, in, n, NULL, 0, o);
  for (size_t cut = 1; cut < n; cut++) {
    run_cuts(chunked, length, max_trailer, in, n, &cut, 1, &other);
    assert_same(o, &other);
  }
  size_t *cuts = malloc((n ? n : 1) * sizeof(*cuts));
  assert_non_null(cuts);
  for (size_t i = 0; i + 1 < n; i++)
    cuts[i] = i + 1;
  run_cuts(chunked, length, max_trailer, in, n, cuts, n ? n - 1 : 0, &other);
  free(cuts);
  assert_same(o, &other);
}

static outcome out;

#define NEXT_REQUEST "GET / HTTP/1.1\r\n"

/* A chunked body followed by the next request: the body must be |want|
 * and the parser must stop exactly where the request starts. */
static void assert_chunked_body(const char *framing, const char *want) {
  char in[16384];
  int n = snprintf(in, sizeof(in), "%s%s", framing, NEXT_REQUEST);
  assert_true(n > 0 && (size_t)n < sizeof(in));
  run_all_ways(1, 0, 4096, in, (size_t)n, &out);
  assert_int_equal(out.rv, GRACE__H1_BODY_DONE);
  assert_int_equal(out.consumed, strlen(framing));
  assert_int_equal(out.blen, strlen(want));
  assert_memory_equal(out.body, want, out.blen);
}

/* |in| is refused with |err| however it is cut. */
static void assert_chunked_rejects(const char *in, size_t n, size_t max_trailer,
                                   int err) {
  run_all_ways(1, 0, max_trailer, in, n, &out);
  assert_int_equal(out.rv, err);
}

#define REJECTS(s, err) assert_chunked_rejects(s, sizeof(s) - 1, 4096, err)

/* ---- Content-Length ---------------------------------------------------------
 */

static void content_length_body_ends_at_its_length(void **state) {
  static const char in[] = "hello world" NEXT_REQUEST;
  (void)state;
  run_all_ways(0, 11, 4096, in, sizeof(in) - 1, &out);
  assert_int_equal(out.rv, GRACE__H1_BODY_DONE);
  assert_int_equal(out.consumed, 11);
  assert_int_equal(out.blen, 11);
  assert_memory_equal(out.body, "hello world", 11);
}

static void content_length_body_short_of_its_length_wants_more(void **state) {
  static const char in[] = "hello";
  (void)state;
  run_all_ways(0, 11, 4096, in, sizeof(in) - 1, &out);
  assert_int_equal(out.rv, 0);
  assert_int_equal(out.consumed, 5);
  assert_int_equal(out.blen, 5);
}

static void zero_length_body_is_done_without_input(void **state) {
  grace__h1_body b;
  size_t used = 99, len = 99;
  const uint8_t *data = (const uint8_t *)"x";
  const uint8_t *p = at_guard(NEXT_REQUEST, sizeof(NEXT_REQUEST) - 1);
  (void)state;
  grace__h1_body_init(&b, 0, 0, 4096);
  assert_int_equal(
      grace__h1_body_next(&b, p, sizeof(NEXT_REQUEST) - 1, &used, &data, &len),
      GRACE__H1_BODY_DONE);
  assert_int_equal(used, 0);
  assert_int_equal(len, 0);
  assert_null(data);
}

/* ---- chunked: valid
 * ----------------------------------------------------------- */

static void chunked_body_is_reassembled(void **state) {
  (void)state;
  assert_chunked_body("5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", "hello world");
}

static void chunk_sizes_take_both_cases_and_leading_zeros(void **state) {
  (void)state;
  assert_chunked_body("A\r\n0123456789\r\n00000000000000b\r\nabcdefghijk\r\n"
                      "000\r\n\r\n",
                      "0123456789abcdefghijk");
  /* Sixteen digits is the most a size may have. */
  assert_chunked_body("0000000000000003\r\nabc\r\n0\r\n\r\n", "abc");
}

static void largest_chunk_size_is_accepted(void **state) {
  static const char in[] = "7fffffffffffffff\r\nab";
  (void)state;
  run_all_ways(1, 0, 4096, in, sizeof(in) - 1, &out);
  assert_int_equal(out.rv, 0); /* 2^63 - 1: more data wanted */
  assert_int_equal(out.blen, 2);
  assert_int_equal(out.consumed, sizeof(in) - 1);
}

static void chunk_extensions_are_skipped(void **state) {
  (void)state;
  assert_chunked_body("5;flag\r\nhello\r\n"
                      "6;name=value;q=\"a b;c\"\r\n world\r\n"
                      "0;last=1\r\n\r\n",
                      "hello world");
}

static void whitespace_before_an_extension_is_accepted(void **state) {
  (void)state;
  /* BWS before ';' (RFC 9112 section 7.1.1). */
  assert_chunked_body("5 ;a=b\r\nhello\r\n6\t \t;c\r\n world\r\n0 ;z\r\n\r\n",
                      "hello world");
}

static void extension_of_the_limit_is_accepted(void **state) {
  char in[GRACE__H1_MAX_CHUNK_EXT + 64];
  (void)state;
  /* The extension counts from its ';'. */
  strcpy(in, "3;");
  memset(in + 2, 'e', GRACE__H1_MAX_CHUNK_EXT - 1);
  strcpy(in + 1 + GRACE__H1_MAX_CHUNK_EXT, "\r\nabc\r\n0\r\n\r\n");
  assert_chunked_body(in, "abc");
}

static void trailers_are_accepted_and_dropped(void **state) {
  (void)state;
  assert_chunked_body("3\r\nabc\r\n0\r\nX-Sum: 42\r\nX-Empty:\r\n"
                      "x-tab:\tv a l\t\r\n\r\n",
                      "abc");
}

static void trailer_fields_up_to_the_limit_are_accepted(void **state) {
  char in[8192];
  size_t at = 0;
  (void)state;
  at += (size_t)sprintf(in, "0\r\n");
  for (int i = 0; i < GRACE__H1_MAX_TRAILER_FIELDS; i++)
    at += (size_t)sprintf(in + at, "a:b\r\n");
  strcpy(in + at, "\r\n");
  assert_chunked_body(in, "");
}

/* ---- chunked: rejected
 * ---------------------------------------------------------- */

static void bad_hex_in_a_chunk_size_is_rejected(void **state) {
  (void)state;
  REJECTS("g\r\nx\r\n0\r\n\r\n", GRACE__H1_BODY_EBAD);
  REJECTS("5x\r\nhello\r\n0\r\n\r\n", GRACE__H1_BODY_EBAD);
  REJECTS("-5\r\nhello\r\n0\r\n\r\n", GRACE__H1_BODY_EBAD);
  REJECTS("0x5\r\nhello\r\n0\r\n\r\n", GRACE__H1_BODY_EBAD);
  REJECTS("\r\nhello\r\n0\r\n\r\n", GRACE__H1_BODY_EBAD); /* no digits */
  REJECTS(";a\r\nhello\r\n0\r\n\r\n", GRACE__H1_BODY_EBAD);
  REJECTS(" 5\r\nhello\r\n0\r\n\r\n", GRACE__H1_BODY_EBAD);
}

static void seventeen_hex_digits_are_rejected(void **state) {
  (void)state;
  REJECTS("00000000000000005\r\nhello\r\n0\r\n\r\n", GRACE__H1_BODY_EBAD);
}

static void chunk_size_of_two_to_the_63_is_rejected(void **state) {
  (void)state;
  REJECTS("8000000000000000\r\n", GRACE__H1_BODY_EBAD);
  REJECTS("ffffffffffffffff\r\n", GRACE__H1_BODY_EBAD);
  REJECTS("10000000000000000\r\n", GRACE__H1_BODY_EBAD); /* 2^64 */
}

static void bare_lf_in_framing_is_rejected(void **state) {
  (void)state;
  REJECTS("5\nhello\r\n0\r\n\r\n", GRACE__H1_BODY_EBAD);   /* size line */
  REJECTS("5;a\nhello\r\n0\r\n\r\n", GRACE__H1_BODY_EBAD); /* extension */
  REJECTS("5 \nhello\r\n0\r\n\r\n", GRACE__H1_BODY_EBAD);  /* BWS */
  REJECTS("5\r\nhello\n0\r\n\r\n", GRACE__H1_BODY_EBAD);   /* after data */
  REJECTS("0\n\r\n", GRACE__H1_BODY_EBAD);                 /* last chunk */
  REJECTS("0\r\n\n", GRACE__H1_BODY_EBAD);                 /* final line */
  REJECTS("0\r\na:b\n\r\n", GRACE__H1_BODY_EBAD);          /* trailer */
}

static void bare_cr_in_framing_is_rejected(void **state) {
  (void)state;
  REJECTS("5\rhello\r\n0\r\n\r\n", GRACE__H1_BODY_EBAD);
  REJECTS("5;a\rhello\r\n0\r\n\r\n", GRACE__H1_BODY_EBAD);
  REJECTS("5;a\r\rhello\r\n0\r\n\r\n", GRACE__H1_BODY_EBAD);
  REJECTS("5\r\nhello\r\r\n0\r\n\r\n", GRACE__H1_BODY_EBAD);
  REJECTS("5\r\nhello\rX0\r\n\r\n", GRACE__H1_BODY_EBAD);
  REJECTS("0\r\n\rX", GRACE__H1_BODY_EBAD);
  REJECTS("0\r\na:b\rX\r\n\r\n", GRACE__H1_BODY_EBAD);
  REJECTS("0\r\na:b\r\n\r\r", GRACE__H1_BODY_EBAD);
}

static void data_not_followed_by_crlf_is_rejected(void **state) {
  (void)state;
  /* The smuggling vector: "XX0\r\n\r\n" must never be read as framing
   * (or as the next request). */
  REJECTS("5\r\nhelloXX0\r\n\r\n", GRACE__H1_BODY_EBAD);
  REJECTS("5\r\nhelloX\r\n0\r\n\r\n", GRACE__H1_BODY_EBAD);
  REJECTS("5\r\nhello0\r\n\r\n", GRACE__H1_BODY_EBAD);
  /* The data before the bad framing is all it delivered. */
  assert_int_equal(out.blen, 5);
}

static void two_numbers_as_a_size_are_rejected(void **state) {
  (void)state;
  REJECTS("5 5\r\nhello\r\n0\r\n\r\n", GRACE__H1_BODY_EBAD);
  REJECTS("5\t0\r\nhello\r\n0\r\n\r\n", GRACE__H1_BODY_EBAD);
}

static void control_bytes_in_an_extension_are_rejected(void **state) {
  (void)state;
  REJECTS("5;a\001b\r\nhello\r\n0\r\n\r\n", GRACE__H1_BODY_EBAD);
  REJECTS("5;a\177\r\nhello\r\n0\r\n\r\n", GRACE__H1_BODY_EBAD);
  static const char nul[] = "5;a\0b\r\nhello\r\n0\r\n\r\n";
  assert_chunked_rejects(nul, sizeof(nul) - 1, 4096, GRACE__H1_BODY_EBAD);
}

static void extension_over_the_limit_is_too_big(void **state) {
  char in[GRACE__H1_MAX_CHUNK_EXT + 64];
  (void)state;
  strcpy(in, "3;");
  memset(in + 2, 'e', GRACE__H1_MAX_CHUNK_EXT);
  strcpy(in + 2 + GRACE__H1_MAX_CHUNK_EXT, "\r\nabc\r\n0\r\n\r\n");
  assert_chunked_rejects(in, strlen(in), 4096, GRACE__H1_BODY_EBIG);
}

static void whitespace_over_the_extension_limit_is_too_big(void **state) {
  char in[GRACE__H1_MAX_CHUNK_EXT + 64];
  (void)state;
  strcpy(in, "3");
  /* The first blank ends the size; the limit counts the ones after it. */
  memset(in + 1, ' ', GRACE__H1_MAX_CHUNK_EXT + 2);
  strcpy(in + 3 + GRACE__H1_MAX_CHUNK_EXT, "\r\nabc\r\n0\r\n\r\n");
  assert_chunked_rejects(in, strlen(in), 4096, GRACE__H1_BODY_EBIG);
}

static void trailer_section_over_its_limit_is_too_big(void **state) {
  char in[1024];
  size_t at;
  (void)state;
  /* One long line. */
  at = (size_t)sprintf(in, "0\r\nX-Long: ");
  memset(in + at, 'v', 200);
  strcpy(in + at + 200, "\r\n\r\n");
  assert_chunked_rejects(in, strlen(in), 64, GRACE__H1_BODY_EBIG);
  /* The same bytes are fine under a larger limit. */
  run_all_ways(1, 0, 4096, in, strlen(in), &out);
  assert_int_equal(out.rv, GRACE__H1_BODY_DONE);
  /* Short lines that add up: the limit is on the section. */
  at = (size_t)sprintf(in, "0\r\n");
  for (int i = 0; i < 20; i++)
    at += (size_t)sprintf(in + at, "x%02d:v\r\n", i);
  strcpy(in + at, "\r\n");
  assert_chunked_rejects(in, strlen(in), 64, GRACE__H1_BODY_EBIG);
}

static void too_many_trailer_fields_are_too_big(void **state) {
  char in[8192];
  size_t at = 0;
  (void)state;
  at += (size_t)sprintf(in, "0\r\n");
  for (int i = 0; i < GRACE__H1_MAX_TRAILER_FIELDS + 1; i++)
    at += (size_t)sprintf(in + at, "a:b\r\n");
  strcpy(in + at, "\r\n");
  assert_chunked_rejects(in, strlen(in), 8192, GRACE__H1_BODY_EBIG);
}

static void trailer_line_without_colon_is_rejected(void **state) {
  (void)state;
  REJECTS("0\r\nX-Sum\r\n\r\n", GRACE__H1_BODY_EBAD);
  REJECTS("0\r\n:v\r\n\r\n", GRACE__H1_BODY_EBAD); /* empty name */
}

static void whitespace_before_a_trailer_colon_is_rejected(void **state) {
  (void)state;
  REJECTS("0\r\nX-Sum : 1\r\n\r\n", GRACE__H1_BODY_EBAD);
  REJECTS("0\r\nX-Sum\t: 1\r\n\r\n", GRACE__H1_BODY_EBAD);
}

static void folded_trailer_line_is_rejected(void **state) {
  (void)state;
  REJECTS("0\r\nX-A: 1\r\n 2\r\n\r\n", GRACE__H1_BODY_EBAD);
  REJECTS("0\r\nX-A: 1\r\n\t2\r\n\r\n", GRACE__H1_BODY_EBAD);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(content_length_body_ends_at_its_length),
      cmocka_unit_test(content_length_body_short_of_its_length_wants_more),
      cmocka_unit_test(zero_length_body_is_done_without_input),
      cmocka_unit_test(chunked_body_is_reassembled),
      cmocka_unit_test(chunk_sizes_take_both_cases_and_leading_zeros),
      cmocka_unit_test(largest_chunk_size_is_accepted),
      cmocka_unit_test(chunk_extensions_are_skipped),
      cmocka_unit_test(whitespace_before_an_extension_is_accepted),
      cmocka_unit_test(extension_of_the_limit_is_accepted),
      cmocka_unit_test(trailers_are_accepted_and_dropped),
      cmocka_unit_test(trailer_fields_up_to_the_limit_are_accepted),
      cmocka_unit_test(bad_hex_in_a_chunk_size_is_rejected),
      cmocka_unit_test(seventeen_hex_digits_are_rejected),
      cmocka_unit_test(chunk_size_of_two_to_the_63_is_rejected),
      cmocka_unit_test(bare_lf_in_framing_is_rejected),
      cmocka_unit_test(bare_cr_in_framing_is_rejected),
      cmocka_unit_test(data_not_followed_by_crlf_is_rejected),
      cmocka_unit_test(two_numbers_as_a_size_are_rejected),
      cmocka_unit_test(control_bytes_in_an_extension_are_rejected),
      cmocka_unit_test(extension_over_the_limit_is_too_big),
      cmocka_unit_test(whitespace_over_the_extension_limit_is_too_big),
      cmocka_unit_test(trailer_section_over_its_limit_is_too_big),
      cmocka_unit_test(too_many_trailer_fields_are_too_big),
      cmocka_unit_test(trailer_line_without_colon_is_rejected),
      cmocka_unit_test(whitespace_before_a_trailer_colon_is_rejected),
      cmocka_unit_test(folded_trailer_line_is_rejected),
  };
  return cmocka_run_group_tests(tests, arena_setup, arena_teardown);
}
