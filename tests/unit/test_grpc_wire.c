/*
 * Unit tests for src/grpc/wire.c: grpc-message and grpc-timeout as grpc-go
 * encodes them (the tables of grpc-go's http_util_test.go and
 * encode_duration_test.go, plus edge cases), the length-prefixed message
 * reader fed in every way a network can split a stream, and a protobuf-c
 * round trip of the seed's HelloRequest.
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

#include "grpc/wire.h"
#include "health.pb-c.h"
#include "helloworld.pb-c.h"

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

/* ---- grpc-message ---------------------------------------------------- */

/* Encodes |len| bytes of |in| into a fresh NUL-terminated string, checking
 * that the sizing call and the real call agree. */
static char *encode_msg(const char *in, size_t len) {
  size_t need = grace__grpc_message_encode(NULL, 0, in, len);
  char *out = malloc(need + 1);

  assert_non_null(out);
  assert_int_equal(grace__grpc_message_encode(out, need, in, len), need);
  out[need] = '\0';
  return out;
}

static void message_encode_matches_grpc_go(void **state) {
  /* TestEncodeGrpcMessage, then more of what utf8.DecodeRune rejects. */
  static const struct {
    const char *in;
    size_t len;
    const char *want;
  } cases[] = {
      {"", 0, ""},
      {"Hello", 5, "Hello"},
      {"\0", 1, "%00"},
      {"%", 1, "%25"},
      {"\xe7\xb3\xbb\xe7\xbb\x9f", 6, "%E7%B3%BB%E7%BB%9F"}, /* 系统 */
      {"\xff\xfe\xfd", 3, "%EF%BF%BD%EF%BF%BD%EF%BF%BD"},
      {"a b~", 4, "a b~"},
      {"\x7f", 1, "%7F"},
      {"\n", 1, "%0A"},
      {"100%", 4, "100%25"},
      /* A valid U+FFFD is escaped like any multi-byte rune. */
      {"\xef\xbf\xbd", 3, "%EF%BF%BD"},
      /* Overlong '/', a surrogate, a code point above U+10FFFF: each
       * byte is invalid on its own and becomes U+FFFD. */
      {"\xc0\xaf", 2, "%EF%BF%BD%EF%BF%BD"},
      {"\xed\xa0\x80", 3, "%EF%BF%BD%EF%BF%BD%EF%BF%BD"},
      {"\xf4\x90\x80\x80", 4, "%EF%BF%BD%EF%BF%BD%EF%BF%BD%EF%BF%BD"},
      /* Overlong 3- and 4-byte forms; the smallest valid ones. */
      {"\xe0\x9f\xbf", 3, "%EF%BF%BD%EF%BF%BD%EF%BF%BD"},
      {"\xf0\x8f\xbf\xbf", 4, "%EF%BF%BD%EF%BF%BD%EF%BF%BD%EF%BF%BD"},
      {"\xc2\x80", 2, "%C2%80"},
      {"\xe0\xa0\x80", 3, "%E0%A0%80"},
      {"\xf0\x90\x80\x80", 4, "%F0%90%80%80"},
      /* Just below the surrogates, and lead bytes that never start one. */
      {"\xed\x9f\xbf", 3, "%ED%9F%BF"},
      {"\xf5\x80\x80\x80", 4, "%EF%BF%BD%EF%BF%BD%EF%BF%BD%EF%BF%BD"},
      {"\x80", 1, "%EF%BF%BD"},
      /* A truncated sequence: the lead byte alone is invalid, the ASCII
       * after it is kept. */
      {"\xe7\xb3z", 3, "%EF%BF%BD%EF%BF%BDz"},
      /* The largest code point and a 4-byte emoji are valid. */
      {"\xf4\x8f\xbf\xbf", 4, "%F4%8F%BF%BF"},
      {"\xf0\x9f\x98\x80!", 5, "%F0%9F%98%80!"},
  };
  size_t i;
  char *out;

  (void)state;
  for (i = 0; i < COUNT(cases); i++) {
    out = encode_msg(cases[i].in, cases[i].len);
    assert_string_equal(out, cases[i].want);
    free(out);
  }
}

static void message_encode_keeps_visible_ascii_only(void **state) {
  char in[1], want[4];
  char *out;
  int c;

  (void)state;
  /* The two loops of TestEncodeGrpcMessage, over all of ASCII. */
  for (c = 0; c < 128; c++) {
    in[0] = (char)c;
    out = encode_msg(in, 1);
    if (c >= ' ' && c <= '~' && c != '%') {
      assert_int_equal(strlen(out), 1);
      assert_int_equal(out[0], c);
    } else {
      snprintf(want, sizeof(want), "%%%02X", c);
      assert_string_equal(out, want);
    }
    free(out);
  }
}

static void message_encode_truncates_like_snprintf(void **state) {
  char buf[8];

  (void)state;
  memset(buf, 'Z', sizeof(buf));
  assert_int_equal(grace__grpc_message_encode(buf, 4, "a%b", 3), 5);
  assert_memory_equal(buf, "a%25ZZZZ", 8);
}

static char *decode_msg(const char *in) {
  size_t len = strlen(in);
  char *out = malloc(len + 1);

  assert_non_null(out);
  out[grace__grpc_message_decode(out, in, len)] = '\0';
  return out;
}

static void message_decode_matches_grpc_go(void **state) {
  /* TestDecodeGrpcMessage, plus the lenient cases around it. */
  static const struct {
    const char *in;
    const char *want;
  } cases[] = {
      {"", ""},
      {"Hello", "Hello"},
      {"H%61o", "Hao"},
      {"H%6", "H%6"},
      {"%G0", "%G0"},
      {"%E7%B3%BB%E7%BB%9F", "\xe7\xb3\xbb\xe7\xbb\x9f"},
      {"%EF%BF%BD", "\xef\xbf\xbd"},
      {"%e7%b3%bb", "\xe7\xb3\xbb"},
      {"%", "%"},
      {"%%", "%%"},
      {"%%41", "%A"},
      {"%4", "%4"},
      {"%4G", "%4G"},
      {"%+1", "%+1"},
      {"a%2", "a%2"},
      {"%25", "%"},
      {"%2525", "%25"},
      {"100%", "100%"},
  };
  size_t i;
  char *out;

  (void)state;
  for (i = 0; i < COUNT(cases); i++) {
    out = decode_msg(cases[i].in);
    assert_string_equal(out, cases[i].want);
    free(out);
  }
}

static void message_decode_round_trips_all_ascii(void **state) {
  char in[4], out[4];
  int c;

  (void)state;
  for (c = 0; c < 128; c++) {
    snprintf(in, sizeof(in), "%%%02X", c);
    assert_int_equal(grace__grpc_message_decode(out, in, 3), 1);
    assert_int_equal((unsigned char)out[0], c);
    if (c >= ' ' && c <= '~' && c != '%') {
      in[0] = (char)c;
      assert_int_equal(grace__grpc_message_decode(out, in, 1), 1);
      assert_int_equal(out[0], c);
    }
  }
}

static void message_decode_works_in_place(void **state) {
  char buf[] = "a%20b%2";
  size_t n;

  (void)state;
  n = grace__grpc_message_decode(buf, buf, strlen(buf));
  assert_int_equal(n, 5);
  assert_memory_equal(buf, "a b%2", 5);
}

/* Returns a buffer of |len| bytes that ends where an inaccessible page
 * begins (picohttpparser's guard page), so reading past it faults.  Free it
 * with guard_free(). */
static uint8_t *guard_alloc(size_t len, uint8_t **region) {
  long page = sysconf(_SC_PAGESIZE);

  assert_true(len < (size_t)page);
  *region = mmap(NULL, (size_t)page * 2, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  assert_true(*region != MAP_FAILED);
  assert_int_equal(mprotect(*region + page, (size_t)page, PROT_NONE), 0);
  return *region + page - len;
}

static void guard_free(uint8_t *region) {
  assert_int_equal(munmap(region, (size_t)sysconf(_SC_PAGESIZE) * 2), 0);
}

static void message_codecs_never_read_past_the_input(void **state) {
  static const char *inputs[] = {"%",    "%4",       "a%",           "%41",
                                 "\xe7", "\xe7\xb3", "\xf0\x9f\x98", "x"};
  char out[64];
  uint8_t *region, *in;
  size_t i, len;

  (void)state;
  for (i = 0; i < COUNT(inputs); i++) {
    len = strlen(inputs[i]);
    in = guard_alloc(len, &region);
    memcpy(in, inputs[i], len);
    (void)grace__grpc_message_decode(out, (const char *)in, len);
    (void)grace__grpc_message_encode(out, sizeof(out), (const char *)in, len);
    guard_free(region);
  }
}

static void message_round_trips_as_grpc_go(void **state) {
  /* TestDecodeEncodeGrpcMessage. */
  static const struct {
    const char *in;
    const char *want;
  } cases[] = {
      {"", ""},
      {"hello", "hello"},
      {"h%6", "h%6"},
      {"%G0", "%G0"},
      {"\xe7\xb3\xbb\xe7\xbb\x9f", "\xe7\xb3\xbb\xe7\xbb\x9f"},
      {"Hello, \xe4\xb8\x96\xe7\x95\x8c", "Hello, \xe4\xb8\x96\xe7\x95\x8c"},
      {"\xff\xfe\xfd", "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"},
      {"\xffHello\xfe\xe4\xb8\x96\xe7\x95\x8c\xfd",
       "\xef\xbf\xbdHello\xef\xbf\xbd\xe4\xb8\x96\xe7\x95\x8c\xef\xbf\xbd"},
  };
  size_t i;
  char *enc, *dec;

  (void)state;
  for (i = 0; i < COUNT(cases); i++) {
    enc = encode_msg(cases[i].in, strlen(cases[i].in));
    dec = decode_msg(enc);
    assert_string_equal(dec, cases[i].want);
    free(dec);
    free(enc);
  }
}

/* ---- grpc-timeout ---------------------------------------------------- */

static void timeout_encode_matches_grpc_go(void **state) {
  /* TestEncodeDuration of internal/grpcutil. */
  static const struct {
    grace_duration d;
    const char *want;
  } cases[] = {
      {0, "0S"},
      {1, "1n"},
      {99999999, "99999999n"},
      {GRACE_MICROSECOND, "1u"},
      {99999999 * GRACE_MICROSECOND, "99999999u"},
      {GRACE_MILLISECOND, "1m"},
      {99999999 * GRACE_MILLISECOND, "99999999m"},
      {GRACE_SECOND, "1S"},
      {99999999 * GRACE_SECOND, "99999999S"},
      {GRACE_MINUTE, "1M"},
      {99999999 * GRACE_MINUTE, "99999999M"},
      {GRACE_HOUR, "1H"},
      /* Rounding. */
      {100000001, "100001u"},
      {100000001 * GRACE_MICROSECOND, "100001m"},
      {100000001 * GRACE_MILLISECOND, "100001S"},
      {100000000 * GRACE_SECOND, "1666667M"},
      {100000000 * GRACE_MINUTE, "1666667H"},
      /* Boundary conditions. */
      {-1, "0S"},
      {INT64_MIN, "0S"},
      {INT64_MAX, "2562048H"},
      /* The seed client's 60 s deadline, and a value needing a unit
       * change to fit. */
      {60 * GRACE_SECOND, "1M"},
      {1500 * GRACE_MILLISECOND, "1500m"},
      {GRACE_SECOND + 1, "1000001u"},
  };
  char buf[GRACE__GRPC_TIMEOUT_BUFLEN];
  size_t i;

  (void)state;
  for (i = 0; i < COUNT(cases); i++) {
    assert_int_equal(grace__grpc_timeout_encode(cases[i].d, buf),
                     strlen(cases[i].want));
    assert_string_equal(buf, cases[i].want);
  }
}

static void timeout_decode_matches_grpc_go(void **state) {
  /* TestTimeoutDecode, then every unit, the limits and grpc-go's texts. */
  static const struct {
    const char *in;
    int rv;
    grace_duration d;
    const char *err;
  } cases[] = {
      {"1234S", 0, 1234 * GRACE_SECOND, NULL},
      {"1234x", GRACE_ESYNTAX, 0,
       "transport: timeout unit is not recognized: \"1234x\""},
      {"1", GRACE_ESYNTAX, 0, "transport: timeout string is too short: \"1\""},
      {"", GRACE_ESYNTAX, 0, "transport: timeout string is too short: \"\""},
      {"1H", 0, GRACE_HOUR, NULL},
      {"2M", 0, 2 * GRACE_MINUTE, NULL},
      {"3S", 0, 3 * GRACE_SECOND, NULL},
      {"4m", 0, 4 * GRACE_MILLISECOND, NULL},
      {"5u", 0, 5 * GRACE_MICROSECOND, NULL},
      {"6n", 0, 6, NULL},
      {"0S", 0, 0, NULL},
      {"00000000n", 0, 0, NULL},
      {"99999999n", 0, 99999999, NULL},
      {"99999999M", 0, 99999999 * GRACE_MINUTE, NULL},
      {"2562047H", 0, 2562047 * GRACE_HOUR, NULL},
      /* Beyond int64 nanoseconds: clamped, as grpc-go does. */
      {"2562048H", 0, INT64_MAX, NULL},
      {"99999999H", 0, INT64_MAX, NULL},
      {"123456789S", GRACE_ESYNTAX, 0,
       "transport: timeout string is too long: \"123456789S\""},
      {"S", GRACE_ESYNTAX, 0, "transport: timeout string is too short: \"S\""},
      {"1s", GRACE_ESYNTAX, 0,
       "transport: timeout unit is not recognized: \"1s\""},
      {"1h", GRACE_ESYNTAX, 0,
       "transport: timeout unit is not recognized: \"1h\""},
      {"10", GRACE_ESYNTAX, 0,
       "transport: timeout unit is not recognized: \"10\""},
      {"1S ", GRACE_ESYNTAX, 0,
       "transport: timeout unit is not recognized: \"1S \""},
      {"+1S", GRACE_ESYNTAX, 0,
       "strconv.ParseUint: parsing \"+1\": invalid syntax"},
      {"-1S", GRACE_ESYNTAX, 0,
       "strconv.ParseUint: parsing \"-1\": invalid syntax"},
      {" 1S", GRACE_ESYNTAX, 0,
       "strconv.ParseUint: parsing \" 1\": invalid syntax"},
      {"1.5S", GRACE_ESYNTAX, 0,
       "strconv.ParseUint: parsing \"1.5\": invalid syntax"},
      {"SS", GRACE_ESYNTAX, 0,
       "strconv.ParseUint: parsing \"S\": invalid syntax"},
      {"1\tS", GRACE_ESYNTAX, 0,
       "strconv.ParseUint: parsing \"1\\t\": invalid syntax"},
      {"\x01\xffS", GRACE_ESYNTAX, 0,
       "strconv.ParseUint: parsing \"\\x01\\xff\": invalid syntax"},
      {"\"\\", GRACE_ESYNTAX, 0,
       "transport: timeout unit is not recognized: \"\\\"\\\\\""},
  };
  char err[128];
  grace_duration d;
  size_t i;

  (void)state;
  for (i = 0; i < COUNT(cases); i++) {
    d = 777;
    err[0] = '\0';
    assert_int_equal(grace__grpc_timeout_decode(cases[i].in,
                                                strlen(cases[i].in), &d, err,
                                                sizeof(err)),
                     cases[i].rv);
    if (cases[i].rv == 0) {
      assert_int_equal(d, cases[i].d);
    } else {
      assert_int_equal(d, 777);
      assert_string_equal(err, cases[i].err);
    }
  }
}

static void timeout_decode_reads_only_len_bytes(void **state) {
  grace_duration d;
  char err[8];

  (void)state;
  assert_int_equal(grace__grpc_timeout_decode("15Sxyz", 3, &d, NULL, 0), 0);
  assert_int_equal(d, 15 * GRACE_SECOND);
  /* The error text is cut to the buffer and still terminated. */
  assert_int_equal(grace__grpc_timeout_decode("x", 1, &d, err, sizeof(err)),
                   GRACE_ESYNTAX);
  assert_string_equal(err, "transpo");
  assert_int_equal(grace__grpc_timeout_decode(NULL, 0, &d, NULL, 0),
                   GRACE_EINVAL);
  assert_int_equal(grace__grpc_timeout_decode("1S", 2, NULL, NULL, 0),
                   GRACE_EINVAL);
}

/* "99999999H" decodes to INT64_MAX ns; the server adds it to its clock
 * and turns it into a timer: both saturate instead of overflowing. */
static void largest_timeout_saturates_deadline_and_timer(void **state) {
  grace_duration d;

  (void)state;
  assert_int_equal(grace__grpc_timeout_decode("99999999H", 9, &d, NULL, 0), 0);
  assert_true(d == INT64_MAX);
  assert_true(grace__grpc_deadline_after(1, d) == INT64_MAX);
  assert_true(grace__grpc_deadline_after(INT64_MAX - 5, 5) == INT64_MAX);
  assert_true(grace__grpc_deadline_after(INT64_MAX - 5, 6) == INT64_MAX);
  assert_true(grace__grpc_deadline_after(100, 23) == 123);
  assert_true(grace__grpc_deadline_after(100, 0) == 100);
  assert_true(grace__grpc_timeout_ms(d) == (uint64_t)INT64_MAX / 1000000u + 1u);
  assert_true(grace__grpc_timeout_ms(0) == 0);
  assert_true(grace__grpc_timeout_ms(1) == 1);
  assert_true(grace__grpc_timeout_ms(GRACE_MILLISECOND) == 1);
  assert_true(grace__grpc_timeout_ms(GRACE_MILLISECOND + 1) == 2);
}

static void timeout_round_trips_never_shorter(void **state) {
  static const grace_duration samples[] = {1,
                                           999,
                                           1001,
                                           123456789,
                                           987654321012LL,
                                           5 * GRACE_SECOND + 3,
                                           GRACE_HOUR + 1,
                                           3 * GRACE_HOUR,
                                           1000 * GRACE_HOUR + 7,
                                           INT64_MAX - 1};
  char buf[GRACE__GRPC_TIMEOUT_BUFLEN];
  grace_duration d;
  size_t i, n;

  (void)state;
  /* Encoding rounds up, never down, so a server never sees a deadline
   * earlier than the client's. */
  for (i = 0; i < COUNT(samples); i++) {
    n = grace__grpc_timeout_encode(samples[i], buf);
    assert_in_range(n, 2, 9);
    assert_int_equal(grace__grpc_timeout_decode(buf, n, &d, NULL, 0), 0);
    assert_true(d >= samples[i]);
  }
}

/* ---- Prefix ---------------------------------------------------------- */

static void prefix_encodes_big_endian(void **state) {
  uint8_t out[GRACE__GRPC_PREFIX_LEN];
  static const uint8_t want1[] = {0, 0, 0, 0, 0};
  static const uint8_t want2[] = {1, 0x01, 0x02, 0x03, 0x04};
  static const uint8_t want3[] = {0, 0xff, 0xff, 0xff, 0xff};

  (void)state;
  assert_int_equal(grace__grpc_prefix_encode(out, 0, 0), 0);
  assert_memory_equal(out, want1, 5);
  assert_int_equal(grace__grpc_prefix_encode(out, 1, 0x01020304), 0);
  assert_memory_equal(out, want2, 5);
  assert_int_equal(grace__grpc_prefix_encode(out, 0, UINT32_MAX), 0);
  assert_memory_equal(out, want3, 5);
  assert_int_equal(grace__grpc_prefix_encode(out, 2, 1), GRACE_EINVAL);
  assert_int_equal(grace__grpc_prefix_encode(NULL, 0, 1), GRACE_EINVAL);
#if SIZE_MAX > UINT32_MAX
  assert_int_equal(grace__grpc_prefix_encode(out, 0, (size_t)UINT32_MAX + 1),
                   GRACE_ERANGE);
  assert_memory_equal(out, want3, 5); /* untouched */
#endif
}

/* ---- Reader ---------------------------------------------------------- */

/* A byte stream of messages built for a test. */
typedef struct stream {
  uint8_t *data;
  size_t len;
} stream;

static void stream_add(stream *s, uint8_t flag, const void *payload,
                       size_t len) {
  uint8_t *p = realloc(s->data, s->len + GRACE__GRPC_PREFIX_LEN + len);

  assert_non_null(p);
  s->data = p;
  assert_int_equal(grace__grpc_prefix_encode(p + s->len, flag, len), 0);
  if (len > 0)
    memcpy(p + s->len + GRACE__GRPC_PREFIX_LEN, payload, len);
  s->len += GRACE__GRPC_PREFIX_LEN + len;
}

/* Appends a message of |len| bytes whose content depends on |seed|. */
static void stream_add_pattern(stream *s, uint8_t flag, size_t len,
                               unsigned seed) {
  uint8_t *payload = malloc(len + 1);
  size_t i;

  assert_non_null(payload);
  for (i = 0; i < len; i++)
    payload[i] = (uint8_t)(seed * 31 + i * 7);
  stream_add(s, flag, payload, len);
  free(payload);
}

/* What a test collected: copies of the messages the reader handed out. */
typedef struct collected {
  size_t count;
  uint8_t flags[4096];
  size_t lens[4096];
  uint8_t *bytes;
  size_t bytes_len;
  int stop_after; /* return 99 from the callback after this many; 0 never */
} collected;

static int collect_cb(const grace__grpc_msg *msg, void *data) {
  collected *c = data;
  uint8_t *p;

  assert_true(c->count < COUNT(c->lens));
  assert_non_null(msg->data);
  c->flags[c->count] = msg->flag;
  c->lens[c->count] = msg->len;
  c->count++;
  p = realloc(c->bytes, c->bytes_len + msg->len + 1);
  assert_non_null(p);
  c->bytes = p;
  if (msg->len > 0)
    memcpy(c->bytes + c->bytes_len, msg->data, msg->len);
  c->bytes_len += msg->len;
  if (c->stop_after > 0 && c->count == (size_t)c->stop_after)
    return 99;
  return 0;
}

/* Checks that |c| holds exactly the messages of |s|. */
static void assert_collected(const collected *c, const stream *s) {
  size_t pos = 0, i = 0, bytes = 0, len;

  while (pos < s->len) {
    assert_true(i < c->count);
    len = (size_t)s->data[pos + 1] << 24 | (size_t)s->data[pos + 2] << 16 |
          (size_t)s->data[pos + 3] << 8 | (size_t)s->data[pos + 4];
    assert_int_equal(c->flags[i], s->data[pos]);
    assert_int_equal(c->lens[i], len);
    assert_memory_equal(c->bytes + bytes, s->data + pos + 5, len);
    bytes += len;
    pos += 5 + len;
    i++;
  }
  assert_int_equal(c->count, i);
  assert_int_equal(c->bytes_len, bytes);
}

static void collected_free(collected *c) { free(c->bytes); }

/* A stream exercising zero-length, one-byte, split and larger messages,
 * and both flag values. */
static void make_mixed_stream(stream *s) {
  stream_add_pattern(s, 0, 0, 1);
  stream_add_pattern(s, 0, 1, 2);
  stream_add_pattern(s, 1, 13, 3);
  stream_add_pattern(s, 0, 0, 4);
  stream_add_pattern(s, 0, 300, 5);
  stream_add_pattern(s, 0, 0, 6);
}

/* Says whether |pos| is where a message of |s| ends (or |s| begins). */
static int is_boundary(const stream *s, size_t pos) {
  size_t at = 0, len;

  while (at < pos) {
    len = (size_t)s->data[at + 1] << 24 | (size_t)s->data[at + 2] << 16 |
          (size_t)s->data[at + 3] << 8 | (size_t)s->data[at + 4];
    at += 5 + len;
  }
  return at == pos;
}

static void reader_hands_out_whole_chunk_messages_in_place(void **state) {
  stream s = {NULL, 0};
  grace__grpc_reader r;
  grace__grpc_msg msg;
  size_t used;

  (void)state;
  stream_add(&s, 0, "hello", 5);
  stream_add(&s, 1, "", 0);
  grace__grpc_reader_init(&r, 100, NULL);
  assert_int_equal(grace__grpc_reader_read(&r, s.data, s.len, &used, &msg), 1);
  assert_int_equal(used, 10);
  assert_ptr_equal(msg.data, s.data + 5); /* no copy */
  assert_int_equal(msg.len, 5);
  assert_int_equal(msg.flag, 0);
  assert_int_equal(
      grace__grpc_reader_read(&r, s.data + 10, s.len - 10, &used, &msg), 1);
  assert_int_equal(used, 5);
  assert_int_equal(msg.len, 0);
  assert_int_equal(msg.flag, 1);
  assert_false(grace__grpc_reader_is_mid_message(&r));
  assert_int_equal(grace__grpc_reader_buffer_size(&r), 0);
  assert_int_equal(grace__grpc_reader_finish(&r), 0);
  grace__grpc_reader_free(&r);
  free(s.data);
}

static void reader_decodes_byte_at_a_time(void **state) {
  stream s = {NULL, 0};
  collected c = {0};
  grace__grpc_reader r;
  size_t i;

  (void)state;
  make_mixed_stream(&s);
  grace__grpc_reader_init(&r, 1000, NULL);
  for (i = 0; i < s.len; i++) {
    assert_int_equal(grace__grpc_reader_feed(&r, s.data + i, 1, collect_cb, &c),
                     0);
    /* Mid-message exactly when the bytes so far do not end a message. */
    assert_int_equal(grace__grpc_reader_is_mid_message(&r),
                     !is_boundary(&s, i + 1));
  }
  assert_false(grace__grpc_reader_is_mid_message(&r));
  assert_int_equal(grace__grpc_reader_finish(&r), 0);
  assert_collected(&c, &s);
  assert_int_equal(c.count, 6);
  grace__grpc_reader_free(&r);
  collected_free(&c);
  free(s.data);
}

static void reader_decodes_every_three_way_split(void **state) {
  stream s = {NULL, 0};
  grace__grpc_reader r;
  size_t i, j;

  (void)state;
  stream_add_pattern(&s, 0, 7, 1);
  stream_add_pattern(&s, 0, 0, 2);
  stream_add_pattern(&s, 1, 9, 3);
  for (i = 0; i <= s.len; i++) {
    for (j = i; j <= s.len; j++) {
      collected c = {0};

      grace__grpc_reader_init(&r, 9, NULL);
      assert_int_equal(grace__grpc_reader_feed(&r, s.data, i, collect_cb, &c),
                       0);
      assert_int_equal(
          grace__grpc_reader_feed(&r, s.data + i, j - i, collect_cb, &c), 0);
      assert_int_equal(
          grace__grpc_reader_feed(&r, s.data + j, s.len - j, collect_cb, &c),
          0);
      assert_int_equal(grace__grpc_reader_finish(&r), 0);
      assert_collected(&c, &s);
      grace__grpc_reader_free(&r);
      collected_free(&c);
    }
  }
  free(s.data);
}

static void reader_decodes_many_messages_in_one_chunk(void **state) {
  stream s = {NULL, 0};
  collected c = {0};
  grace__grpc_reader r;
  unsigned i;

  (void)state;
  for (i = 0; i < 3000; i++)
    stream_add_pattern(&s, (uint8_t)(i % 2), i % 17, i);
  grace__grpc_reader_init(&r, GRACE__GRPC_DEFAULT_MAX_RECV, NULL);
  assert_int_equal(grace__grpc_reader_feed(&r, s.data, s.len, collect_cb, &c),
                   0);
  assert_int_equal(c.count, 3000);
  assert_collected(&c, &s);
  /* Every message was whole in the chunk: nothing was buffered. */
  assert_int_equal(grace__grpc_reader_buffer_size(&r), 0);
  grace__grpc_reader_free(&r);
  collected_free(&c);
  free(s.data);
}

static void reader_handles_zero_length_messages(void **state) {
  static const uint8_t zeros[15] = {0};
  static const uint8_t one_prefix[4] = {0};
  collected c = {0};
  grace__grpc_reader r;

  (void)state;
  grace__grpc_reader_init(&r, 0, NULL);
  /* Three empty messages at once; then one whose prefix ends a chunk. */
  assert_int_equal(
      grace__grpc_reader_feed(&r, zeros, sizeof(zeros), collect_cb, &c), 0);
  assert_int_equal(c.count, 3);
  assert_int_equal(grace__grpc_reader_feed(&r, one_prefix, 4, collect_cb, &c),
                   0);
  assert_int_equal(c.count, 3);
  assert_true(grace__grpc_reader_is_mid_message(&r));
  assert_int_equal(grace__grpc_reader_feed(&r, zeros, 1, collect_cb, &c), 0);
  assert_int_equal(c.count, 4);
  assert_int_equal(c.lens[3], 0);
  assert_false(grace__grpc_reader_is_mid_message(&r));
  /* An empty chunk, even a NULL one, changes nothing. */
  assert_int_equal(grace__grpc_reader_feed(&r, NULL, 0, collect_cb, &c), 0);
  assert_int_equal(c.count, 4);
  assert_int_equal(grace__grpc_reader_buffer_size(&r), 0);
  grace__grpc_reader_free(&r);
  collected_free(&c);
}

static void reader_refuses_too_large_at_the_prefix(void **state) {
  static const uint8_t prefix[5] = {0, 0, 0, 0, 5};
  collected c = {0};
  grace__grpc_reader r;
  grace__grpc_msg msg;
  const char *text;
  size_t used = 1234;

  (void)state;
  grace__grpc_reader_init(&r, 4, NULL);
  /* Four bytes of the prefix: nothing is known yet. */
  assert_int_equal(grace__grpc_reader_feed(&r, prefix, 4, collect_cb, &c), 0);
  assert_int_equal(grace__grpc_reader_status(&r, &text), GRACE_GRPC_OK);
  assert_string_equal(text, "");
  /* The fifth: refused before a payload byte arrives. */
  assert_int_equal(grace__grpc_reader_read(&r, prefix + 4, 1, &used, &msg),
                   GRACE_ERANGE);
  assert_int_equal(used, 1234); /* untouched */
  assert_int_equal(grace__grpc_reader_status(&r, &text),
                   GRACE_GRPC_RESOURCE_EXHAUSTED);
  assert_string_equal(text, "grpc: received message larger than max (5 vs. 4)");
  assert_int_equal(grace__grpc_reader_buffer_size(&r), 0);
  /* The failure is sticky. */
  assert_int_equal(grace__grpc_reader_feed(&r, prefix, 5, collect_cb, &c),
                   GRACE_ESTATE);
  assert_int_equal(grace__grpc_reader_finish(&r), GRACE_ESTATE);
  assert_int_equal(grace__grpc_reader_status(&r, NULL),
                   GRACE_GRPC_RESOURCE_EXHAUSTED);
  assert_int_equal(c.count, 0);
  grace__grpc_reader_free(&r);
}

static void reader_accepts_exactly_the_limit(void **state) {
  stream s = {NULL, 0};
  collected c = {0};
  grace__grpc_reader r;
  const char *text;

  (void)state;
  stream_add_pattern(&s, 0, 4, 1);
  grace__grpc_reader_init(&r, 4, NULL);
  assert_int_equal(grace__grpc_reader_feed(&r, s.data, s.len, collect_cb, &c),
                   0);
  assert_collected(&c, &s);
  grace__grpc_reader_free(&r);
  collected_free(&c);

  /* The largest length the wire can carry, against grpc-go's default. */
  {
    static const uint8_t huge[5] = {0, 0xff, 0xff, 0xff, 0xff};
    collected none = {0};

    grace__grpc_reader_init(&r, GRACE__GRPC_DEFAULT_MAX_RECV, NULL);
    assert_int_equal(grace__grpc_reader_feed(&r, huge, 5, collect_cb, &none),
                     GRACE_ERANGE);
    assert_int_equal(none.count, 0);
    grace__grpc_reader_status(&r, &text);
    assert_string_equal(
        text,
        "grpc: received message larger than max (4294967295 vs. 4194304)");
    grace__grpc_reader_free(&r);
  }
  free(s.data);
}

static void reader_reports_truncated_stream(void **state) {
  stream s = {NULL, 0};
  grace__grpc_reader r;
  const char *text;
  size_t cut;

  (void)state;
  stream_add_pattern(&s, 0, 10, 1);
  /* Ending inside the prefix (1..4 bytes) or the payload (5..14). */
  for (cut = 1; cut < s.len; cut++) {
    collected c = {0};

    grace__grpc_reader_init(&r, 100, NULL);
    assert_int_equal(grace__grpc_reader_feed(&r, s.data, cut, collect_cb, &c),
                     0);
    assert_true(grace__grpc_reader_is_mid_message(&r));
    assert_int_equal(grace__grpc_reader_finish(&r), GRACE_ESYNTAX);
    assert_int_equal(grace__grpc_reader_status(&r, &text), GRACE_GRPC_INTERNAL);
    assert_string_equal(text, "unexpected EOF");
    assert_int_equal(c.count, 0);
    grace__grpc_reader_free(&r);
  }
  /* The whole message: a clean end. */
  grace__grpc_reader_init(&r, 100, NULL);
  {
    collected c = {0};

    assert_int_equal(grace__grpc_reader_feed(&r, s.data, s.len, collect_cb, &c),
                     0);
    assert_false(grace__grpc_reader_is_mid_message(&r));
    assert_int_equal(grace__grpc_reader_finish(&r), 0);
    collected_free(&c);
  }
  grace__grpc_reader_free(&r);
  free(s.data);
}

static void reader_buffer_grows_with_data_not_with_claims(void **state) {
  static const uint8_t prefix[6] = {0,    0x00, 0x40,
                                    0x00, 0x00, 0xAA}; /* 4 MiB */
  grace__grpc_reader r;
  collected c = {0};

  (void)state;
  grace__grpc_reader_init(&r, GRACE__GRPC_DEFAULT_MAX_RECV, NULL);
  /* The prefix alone allocates nothing; one payload byte, a little. */
  assert_int_equal(grace__grpc_reader_feed(&r, prefix, 5, collect_cb, &c), 0);
  assert_int_equal(grace__grpc_reader_buffer_size(&r), 0);
  assert_int_equal(grace__grpc_reader_feed(&r, prefix + 5, 1, collect_cb, &c),
                   0);
  assert_in_range(grace__grpc_reader_buffer_size(&r), 1, 256);
  grace__grpc_reader_free(&r);
}

static void reader_buffer_stays_within_the_message(void **state) {
  stream s = {NULL, 0};
  collected c = {0};
  grace__grpc_reader r;
  size_t pos, n;

  (void)state;
  stream_add_pattern(&s, 0, 100000, 1);
  stream_add_pattern(&s, 0, 1000, 2);
  stream_add_pattern(&s, 0, 100, 3);
  grace__grpc_reader_init(&r, 100000, NULL);
  for (pos = 0; pos < s.len; pos += n) {
    n = s.len - pos < 999 ? s.len - pos : 999;
    assert_int_equal(
        grace__grpc_reader_feed(&r, s.data + pos, n, collect_cb, &c), 0);
    /* The hard cap: never more than the largest message so far. */
    assert_true(grace__grpc_reader_buffer_size(&r) <= 100000);
    if (c.count >= 2) {
      /* The 100000-byte buffer was given back once used. */
      assert_true(grace__grpc_reader_buffer_size(&r) <= 1000);
    }
  }
  assert_collected(&c, &s);
  grace__grpc_reader_free(&r);
  assert_int_equal(grace__grpc_reader_buffer_size(&r), 0);
  collected_free(&c);
  free(s.data);
}

static void reader_pull_api_steps_one_message_at_a_time(void **state) {
  stream s = {NULL, 0};
  grace__grpc_reader r;
  grace__grpc_msg msg;
  size_t pos = 0, used, count = 0;
  int rv;

  (void)state;
  make_mixed_stream(&s);
  grace__grpc_reader_init(&r, 1000, NULL);
  while (pos < s.len) {
    rv = grace__grpc_reader_read(&r, s.data + pos, s.len - pos, &used, &msg);
    assert_int_equal(rv, 1);
    pos += used;
    count++;
  }
  assert_int_equal(count, 6);
  assert_int_equal(grace__grpc_reader_read(&r, NULL, 0, &used, &msg), 0);
  assert_int_equal(used, 0);
  grace__grpc_reader_free(&r);
  free(s.data);
}

static void reader_stops_when_the_callback_says_so(void **state) {
  stream s = {NULL, 0};
  collected c = {0};
  grace__grpc_reader r;

  (void)state;
  make_mixed_stream(&s);
  c.stop_after = 2;
  grace__grpc_reader_init(&r, 1000, NULL);
  assert_int_equal(grace__grpc_reader_feed(&r, s.data, s.len, collect_cb, &c),
                   99);
  assert_int_equal(c.count, 2);
  assert_int_equal(grace__grpc_reader_feed(&r, s.data, s.len, collect_cb, &c),
                   GRACE_ESTATE);
  assert_int_equal(grace__grpc_reader_status(&r, NULL), GRACE_GRPC_OK);
  grace__grpc_reader_free(&r);
  collected_free(&c);
  free(s.data);
}

static void reader_rejects_bad_arguments(void **state) {
  grace__grpc_reader r;
  grace__grpc_msg msg;
  size_t used;
  uint8_t byte = 0;

  (void)state;
  grace__grpc_reader_init(&r, 10, NULL);
  assert_int_equal(grace__grpc_reader_read(NULL, &byte, 1, &used, &msg),
                   GRACE_EINVAL);
  assert_int_equal(grace__grpc_reader_read(&r, NULL, 1, &used, &msg),
                   GRACE_EINVAL);
  assert_int_equal(grace__grpc_reader_read(&r, &byte, 1, NULL, &msg),
                   GRACE_EINVAL);
  assert_int_equal(grace__grpc_reader_read(&r, &byte, 1, &used, NULL),
                   GRACE_EINVAL);
  assert_int_equal(grace__grpc_reader_feed(&r, &byte, 1, NULL, NULL),
                   GRACE_EINVAL);
  assert_int_equal(grace__grpc_reader_finish(NULL), GRACE_EINVAL);
  assert_false(grace__grpc_reader_is_mid_message(NULL));
  /* None of those broke the reader. */
  assert_int_equal(grace__grpc_reader_read(&r, &byte, 1, &used, &msg), 0);
  assert_true(grace__grpc_reader_is_mid_message(&r));
  grace__grpc_reader_free(&r);
  grace__grpc_reader_free(NULL);
}

/* An allocator that counts calls and fails the |fail_at|-th (1-based; 0
 * never), and tracks live blocks so leaks show. */
typedef struct failmalloc {
  int calls;
  int fail_at;
  int live;
} failmalloc;

static void *fm_realloc(void *ptr, size_t size, void *data) {
  failmalloc *fm = data;
  void *p;

  fm->calls++;
  if (fm->fail_at != 0 && fm->calls == fm->fail_at)
    return NULL;
  p = realloc(ptr, size);
  if (p != NULL && ptr == NULL)
    fm->live++;
  return p;
}

static void fm_free(void *ptr, void *data) {
  failmalloc *fm = data;

  fm->live--;
  free(ptr);
}

/* Feeds |s| in 7-byte chunks; returns the first error, or 0. */
static int feed_in_sevens(grace__grpc_reader *r, const stream *s,
                          collected *c) {
  size_t pos, n;
  int rv;

  for (pos = 0; pos < s->len; pos += n) {
    n = s->len - pos < 7 ? s->len - pos : 7;
    rv = grace__grpc_reader_feed(r, s->data + pos, n, collect_cb, c);
    if (rv != 0)
      return rv;
  }
  return 0;
}

static void reader_survives_every_allocation_failure(void **state) {
  stream s = {NULL, 0};
  failmalloc fm = {0, 0, 0};
  grace__grpc_mem mem = {fm_realloc, fm_free, &fm};
  grace__grpc_reader r;
  const char *text;
  int total, i;

  (void)state;
  stream_add_pattern(&s, 0, 600, 1);   /* grows 256 -> 512 -> 600 */
  stream_add_pattern(&s, 0, 70000, 2); /* freed after use */
  stream_add_pattern(&s, 0, 300, 3);
  /* Count the allocations of a clean run. */
  {
    collected c = {0};

    grace__grpc_reader_init(&r, 100000, &mem);
    assert_int_equal(feed_in_sevens(&r, &s, &c), 0);
    assert_collected(&c, &s);
    grace__grpc_reader_free(&r);
    collected_free(&c);
  }
  total = fm.calls;
  assert_true(total >= 4);
  assert_int_equal(fm.live, 0);
  /* Then fail each one in turn. */
  for (i = 1; i <= total; i++) {
    collected c = {0};

    fm.calls = 0;
    fm.fail_at = i;
    grace__grpc_reader_init(&r, 100000, &mem);
    assert_int_equal(feed_in_sevens(&r, &s, &c), GRACE_ENOMEM);
    assert_int_equal(grace__grpc_reader_status(&r, &text),
                     GRACE_GRPC_RESOURCE_EXHAUSTED);
    assert_non_null(strstr(text, "cannot allocate"));
    assert_int_equal(grace__grpc_reader_feed(&r, s.data, 1, collect_cb, &c),
                     GRACE_ESTATE);
    grace__grpc_reader_free(&r);
    assert_int_equal(fm.live, 0);
    collected_free(&c);
  }
  free(s.data);
}

static void reader_never_reads_past_the_input(void **state) {
  stream s = {NULL, 0};
  uint8_t *region, *input, *last;
  grace__grpc_reader r;
  size_t i;

  (void)state;
  make_mixed_stream(&s);
  input = guard_alloc(s.len, &region);
  last = input + s.len - 1;
  memcpy(input, s.data, s.len);
  /* All at once, then as single bytes each ending at the guard page. */
  {
    collected c = {0};

    grace__grpc_reader_init(&r, 1000, NULL);
    assert_int_equal(grace__grpc_reader_feed(&r, input, s.len, collect_cb, &c),
                     0);
    assert_collected(&c, &s);
    grace__grpc_reader_free(&r);
    collected_free(&c);
  }
  {
    collected c = {0};

    grace__grpc_reader_init(&r, 1000, NULL);
    for (i = 0; i < s.len; i++) {
      *last = s.data[i];
      assert_int_equal(grace__grpc_reader_feed(&r, last, 1, collect_cb, &c), 0);
    }
    assert_collected(&c, &s);
    grace__grpc_reader_free(&r);
    collected_free(&c);
  }
  guard_free(region);
  free(s.data);
}

/* ---- Checks ---------------------------------------------------------- */

static void content_type_accepts_grpc_only(void **state) {
  static const struct {
    const char *in;
    int ok;
    const char *subtype;
  } cases[] = {
      {"application/grpc", 1, ""},
      {"application/grpc+proto", 1, "proto"},
      {"application/grpc+json", 1, "json"},
      {"application/grpc;charset=utf-8", 1, ""},
      {"application/grpc+proto;charset=utf-8", 1, "proto"},
      {"application/grpc+", 1, ""},
      {"application/grpc;", 1, ""},
      {"Application/GRPC+proto", 1, "proto"},
      {"application/grpc-web", 0, NULL},
      {"application/grpc-web+proto", 0, NULL},
      {"application/grpcx", 0, NULL},
      {"application/grpc ", 0, NULL},
      {"application/grp", 0, NULL},
      {"application/json", 0, NULL},
      {"text/plain", 0, NULL},
      {"", 0, NULL},
      {" application/grpc", 0, NULL},
  };
  const char *sub;
  size_t sub_len, i;

  (void)state;
  for (i = 0; i < COUNT(cases); i++) {
    sub = NULL;
    sub_len = 999;
    assert_int_equal(grace__grpc_is_content_type(
                         cases[i].in, strlen(cases[i].in), &sub, &sub_len),
                     cases[i].ok);
    if (cases[i].ok) {
      assert_int_equal(sub_len, strlen(cases[i].subtype));
      assert_memory_equal(sub, cases[i].subtype, sub_len);
    } else {
      assert_null(sub);
      assert_int_equal(sub_len, 999);
    }
  }
  /* Only |len| bytes count; the out-parameters are optional. */
  assert_int_equal(
      grace__grpc_is_content_type("application/grpc+proto", 16, NULL, NULL), 1);
  assert_int_equal(grace__grpc_is_content_type(NULL, 0, NULL, NULL), 0);
}

static void payload_check_matches_grpc_go(void **state) {
  char buf[128];

  (void)state;
  buf[0] = 'Z';
  assert_int_equal(grace__grpc_check_payload(0, NULL, 0, 1, buf, sizeof(buf)),
                   GRACE_GRPC_OK);
  assert_int_equal(buf[0], 'Z');
  assert_int_equal(grace__grpc_check_payload(0, "gzip", 0, 1, buf, sizeof(buf)),
                   GRACE_GRPC_OK);
  assert_int_equal(grace__grpc_check_payload(1, "gzip", 1, 1, buf, sizeof(buf)),
                   GRACE_GRPC_OK);

  assert_int_equal(grace__grpc_check_payload(1, NULL, 1, 1, buf, sizeof(buf)),
                   GRACE_GRPC_INTERNAL);
  assert_string_equal(
      buf, "grpc: compressed flag set with identity or empty encoding");
  assert_int_equal(grace__grpc_check_payload(1, "", 0, 1, buf, sizeof(buf)),
                   GRACE_GRPC_INTERNAL);
  assert_int_equal(
      grace__grpc_check_payload(1, "identity", 0, 0, buf, sizeof(buf)),
      GRACE_GRPC_INTERNAL);
  assert_string_equal(
      buf, "grpc: compressed flag set with identity or empty encoding");

  assert_int_equal(grace__grpc_check_payload(1, "gzip", 0, 1, buf, sizeof(buf)),
                   GRACE_GRPC_UNIMPLEMENTED);
  assert_string_equal(
      buf, "grpc: Decompressor is not installed for grpc-encoding \"gzip\"");
  assert_int_equal(grace__grpc_check_payload(1, "gzip", 0, 0, buf, sizeof(buf)),
                   GRACE_GRPC_INTERNAL);
  assert_int_equal(grace__grpc_check_payload(1, "a\"b", 0, 1, buf, sizeof(buf)),
                   GRACE_GRPC_UNIMPLEMENTED);
  assert_string_equal(
      buf, "grpc: Decompressor is not installed for grpc-encoding \"a\\\"b\"");

  assert_int_equal(grace__grpc_check_payload(2, NULL, 0, 1, buf, sizeof(buf)),
                   GRACE_GRPC_INTERNAL);
  assert_string_equal(buf, "grpc: received unexpected payload format 2");
  assert_int_equal(
      grace__grpc_check_payload(255, "gzip", 1, 0, buf, sizeof(buf)),
      GRACE_GRPC_INTERNAL);
  assert_string_equal(buf, "grpc: received unexpected payload format 255");
  /* The text is optional and cut to the buffer. */
  assert_int_equal(grace__grpc_check_payload(2, NULL, 0, 1, NULL, 0),
                   GRACE_GRPC_INTERNAL);
  assert_int_equal(grace__grpc_check_payload(2, NULL, 0, 1, buf, 5),
                   GRACE_GRPC_INTERNAL);
  assert_string_equal(buf, "grpc");
}

/* ---- protobuf-c ------------------------------------------------------ */

static int keep_first_cb(const grace__grpc_msg *msg, void *data) {
  HelloRequest **out = data;

  /* The message is borrowed: unpack (which copies) inside the callback. */
  assert_null(*out);
  *out = hello_request__unpack(NULL, msg->len, msg->data);
  assert_non_null(*out);
  return 0;
}

static void hello_request_round_trips_through_framing(void **state) {
  /* HelloRequest{name: "world", duration: "10s"}, the seed client's call,
   * in proto3 wire format: field 1 (0x0a) len 5, field 2 (0x12) len 3. */
  static const uint8_t want[] = {0x0a, 5,    'w', 'o', 'r', 'l',
                                 'd',  0x12, 3,   '1', '0', 's'};
  HelloRequest req;
  HelloRequest *got = NULL;
  grace__grpc_reader r;
  uint8_t frame[GRACE__GRPC_PREFIX_LEN + sizeof(want)];
  size_t n, i;

  (void)state;
  hello_request__init(&req);
  req.name = (char[]){"world"};
  req.duration = (char[]){"10s"};
  n = hello_request__get_packed_size(&req);
  assert_int_equal(n, sizeof(want));
  assert_int_equal(grace__grpc_prefix_encode(frame, 0, n), 0);
  assert_int_equal(hello_request__pack(&req, frame + GRACE__GRPC_PREFIX_LEN),
                   n);
  assert_memory_equal(frame + GRACE__GRPC_PREFIX_LEN, want, sizeof(want));

  grace__grpc_reader_init(&r, GRACE__GRPC_DEFAULT_MAX_RECV, NULL);
  for (i = 0; i < sizeof(frame); i++)
    assert_int_equal(
        grace__grpc_reader_feed(&r, frame + i, 1, keep_first_cb, &got), 0);
  assert_int_equal(grace__grpc_reader_finish(&r), 0);
  grace__grpc_reader_free(&r);
  assert_non_null(got);
  assert_string_equal(got->name, "world");
  assert_string_equal(got->duration, "10s");
  hello_request__free_unpacked(got, NULL);
}

static void health_response_packs_serving_status(void **state) {
  Grpc__Health__V1__HealthCheckResponse resp;
  Grpc__Health__V1__HealthCheckResponse *got;
  uint8_t buf[8];
  size_t n;

  (void)state;
  grpc__health__v1__health_check_response__init(&resp);
  resp.status =
      GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING;
  n = grpc__health__v1__health_check_response__pack(&resp, buf);
  /* Field 1, varint 2. */
  assert_int_equal(n, 2);
  assert_int_equal(buf[0], 0x08);
  assert_int_equal(buf[1], 2);
  got = grpc__health__v1__health_check_response__unpack(NULL, n, buf);
  assert_non_null(got);
  assert_int_equal(
      got->status,
      GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING);
  grpc__health__v1__health_check_response__free_unpacked(got, NULL);
  /* The service descriptor names the methods as :path carries them. */
  assert_string_equal(grpc__health__v1__health__descriptor.name,
                      "grpc.health.v1.Health");
  assert_int_equal(grpc__health__v1__health__descriptor.n_methods, 2);
  assert_string_equal(greeter__descriptor.name, "Greeter");
  assert_string_equal(greeter__descriptor.methods[0].name, "SayHello");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(message_encode_matches_grpc_go),
      cmocka_unit_test(message_encode_keeps_visible_ascii_only),
      cmocka_unit_test(message_encode_truncates_like_snprintf),
      cmocka_unit_test(message_decode_matches_grpc_go),
      cmocka_unit_test(message_decode_round_trips_all_ascii),
      cmocka_unit_test(message_decode_works_in_place),
      cmocka_unit_test(message_codecs_never_read_past_the_input),
      cmocka_unit_test(message_round_trips_as_grpc_go),
      cmocka_unit_test(timeout_encode_matches_grpc_go),
      cmocka_unit_test(timeout_decode_matches_grpc_go),
      cmocka_unit_test(timeout_decode_reads_only_len_bytes),
      cmocka_unit_test(timeout_round_trips_never_shorter),
      cmocka_unit_test(largest_timeout_saturates_deadline_and_timer),
      cmocka_unit_test(prefix_encodes_big_endian),
      cmocka_unit_test(reader_hands_out_whole_chunk_messages_in_place),
      cmocka_unit_test(reader_decodes_byte_at_a_time),
      cmocka_unit_test(reader_decodes_every_three_way_split),
      cmocka_unit_test(reader_decodes_many_messages_in_one_chunk),
      cmocka_unit_test(reader_handles_zero_length_messages),
      cmocka_unit_test(reader_refuses_too_large_at_the_prefix),
      cmocka_unit_test(reader_accepts_exactly_the_limit),
      cmocka_unit_test(reader_reports_truncated_stream),
      cmocka_unit_test(reader_buffer_grows_with_data_not_with_claims),
      cmocka_unit_test(reader_buffer_stays_within_the_message),
      cmocka_unit_test(reader_pull_api_steps_one_message_at_a_time),
      cmocka_unit_test(reader_stops_when_the_callback_says_so),
      cmocka_unit_test(reader_rejects_bad_arguments),
      cmocka_unit_test(reader_survives_every_allocation_failure),
      cmocka_unit_test(reader_never_reads_past_the_input),
      cmocka_unit_test(content_type_accepts_grpc_only),
      cmocka_unit_test(payload_check_matches_grpc_go),
      cmocka_unit_test(hello_request_round_trips_through_framing),
      cmocka_unit_test(health_response_packs_serving_status),
  };

  return cmocka_run_group_tests_name("grpc_wire", tests, NULL, NULL);
}
