/*
 * libFuzzer target for src/grpc/wire.c.
 *
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -Iinclude -Isrc \
 *     fuzz/fuzz_grpc_wire.c src/grpc/wire.c src/grpc/status.c -o fuzz_grpc_wire
 *   ./fuzz_grpc_wire -max_total_time=60 fuzz/corpus/grpc_wire
 *
 * Input: byte 0 seeds the chunking, byte 1 picks the message size limit,
 * the rest is a stream of length-prefixed messages.  The reader is fed that
 * stream in pseudo-random chunks and must hand out exactly what a plain
 * parse of the whole stream finds, fail exactly where that parse finds a
 * too-large prefix, keep its buffer within the limit, and end mid-message
 * exactly when the parse does.  The same bytes then go through the
 * grpc-message, grpc-timeout, grpc-status and content-type functions,
 * with their round-trip properties checked.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "grace/grpc_status.h"
#include "grpc/wire.h"

#define CHECK(cond)                                                            \
  do {                                                                         \
    if (!(cond))                                                               \
      abort();                                                                 \
  } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* What the plain parse expects, message by message. */
typedef struct expect {
  const uint8_t *in;
  size_t offsets[4096]; /* payload offsets into |in| */
  size_t lens[4096];
  uint8_t flags[4096];
  size_t count;
  size_t next; /* the next message the reader should hand out */
} expect;

static int check_cb(const grace__grpc_msg *msg, void *data) {
  expect *e = data;

  CHECK(e->next < e->count);
  CHECK(msg->len == e->lens[e->next]);
  CHECK(msg->flag == e->flags[e->next]);
  CHECK(msg->len == 0 ||
        memcmp(msg->data, e->in + e->offsets[e->next], msg->len) == 0);
  e->next++;
  return 0;
}

/* A small xorshift generator for the chunk sizes. */
static uint32_t next_rand(uint32_t *s) {
  *s ^= *s << 13;
  *s ^= *s >> 17;
  *s ^= *s << 5;
  return *s;
}

static void fuzz_reader(uint8_t seed, uint8_t limit, const uint8_t *in,
                        size_t n) {
  static expect e;
  grace__grpc_reader r;
  size_t max_msg, pos = 0, len, chunk;
  int too_large = 0, mid = 0, rv = 0;
  uint32_t rnd = 0x9e3779b9u ^ seed;

  /* Small limits find the too-large path; the top bit means "large". */
  max_msg = (limit & 0x80) != 0 ? (size_t)1 << 20 : (size_t)(limit & 0x7f);

  /* The plain parse. */
  e.in = in;
  e.count = 0;
  e.next = 0;
  while (pos < n) {
    if (n - pos < GRACE__GRPC_PREFIX_LEN) {
      mid = 1;
      break;
    }
    len = (size_t)in[pos + 1] << 24 | (size_t)in[pos + 2] << 16 |
          (size_t)in[pos + 3] << 8 | (size_t)in[pos + 4];
    if (len > max_msg) {
      too_large = 1;
      break;
    }
    if (n - pos - GRACE__GRPC_PREFIX_LEN < len) {
      mid = 1;
      break;
    }
    if (e.count == sizeof(e.lens) / sizeof(e.lens[0]))
      return; /* more messages than the oracle holds: skip the input */
    e.flags[e.count] = in[pos];
    e.lens[e.count] = len;
    e.offsets[e.count] = pos + GRACE__GRPC_PREFIX_LEN;
    e.count++;
    pos += GRACE__GRPC_PREFIX_LEN + len;
  }

  /* The reader, fed in chunks of 0..64 bytes (seed 0: all at once). */
  grace__grpc_reader_init(&r, max_msg, NULL);
  pos = 0;
  while (pos < n || pos == 0) {
    chunk = seed == 0 ? n : next_rand(&rnd) % 65;
    if (chunk > n - pos)
      chunk = n - pos;
    rv = grace__grpc_reader_feed(&r, chunk > 0 ? in + pos : NULL, chunk,
                                 check_cb, &e);
    CHECK(grace__grpc_reader_buffer_size(&r) <= max_msg);
    if (rv != 0)
      break;
    pos += chunk;
    if (n == 0)
      break;
  }
  CHECK(e.next == e.count);
  if (too_large) {
    CHECK(rv == GRACE_ERANGE);
    CHECK(grace__grpc_reader_status(&r, NULL) == GRACE_GRPC_RESOURCE_EXHAUSTED);
  } else {
    CHECK(rv == 0);
    CHECK(grace__grpc_reader_is_mid_message(&r) == mid);
    CHECK(grace__grpc_reader_finish(&r) == (mid ? GRACE_ESYNTAX : 0));
  }
  grace__grpc_reader_free(&r);
}

/* Says whether |s| is well-formed UTF-8, written out independently of
 * wire.c's table so the two check each other. */
static int valid_utf8(const uint8_t *s, size_t n) {
  size_t i = 0, k, need;
  uint32_t cp;

  while (i < n) {
    if (s[i] < 0x80) {
      i++;
      continue;
    }
    if ((s[i] & 0xE0) == 0xC0) {
      need = 1;
      cp = s[i] & 0x1F;
    } else if ((s[i] & 0xF0) == 0xE0) {
      need = 2;
      cp = s[i] & 0x0F;
    } else if ((s[i] & 0xF8) == 0xF0) {
      need = 3;
      cp = s[i] & 0x07;
    } else {
      return 0;
    }
    if (n - i <= need)
      return 0;
    for (k = 1; k <= need; k++) {
      if ((s[i + k] & 0xC0) != 0x80)
        return 0;
      cp = cp << 6 | (s[i + k] & 0x3F);
    }
    if ((need == 1 && cp < 0x80) || (need == 2 && cp < 0x800) ||
        (need == 3 && cp < 0x10000) || cp > 0x10FFFF ||
        (cp >= 0xD800 && cp <= 0xDFFF))
      return 0;
    i += need + 1;
  }
  return 1;
}

static void fuzz_message(const uint8_t *in, size_t n) {
  const char *s = (const char *)in;
  size_t need = grace__grpc_message_encode(NULL, 0, s, n), m, i;
  char *enc = malloc(need + 1), *dec = malloc(need + n + 1);

  CHECK(enc != NULL && dec != NULL);
  CHECK(grace__grpc_message_encode(enc, need, s, n) == need);
  /* The encoding is header-safe: visible ASCII and space only. */
  for (i = 0; i < need; i++)
    CHECK(enc[i] >= 0x20 && enc[i] <= 0x7E);
  /* Decoding gives the input back exactly when it was valid UTF-8. */
  m = grace__grpc_message_decode(dec, enc, need);
  if (valid_utf8(in, n))
    CHECK(m == n && memcmp(dec, s, n) == 0);
  /* Decoding any text never lengthens it. */
  CHECK(grace__grpc_message_decode(dec, s, n) <= n);
  free(dec);
  free(enc);
}

static void fuzz_headers(const uint8_t *in, size_t n) {
  char buf[GRACE__GRPC_TIMEOUT_BUFLEN], err[64], text[256];
  grace_duration d, d2;
  const char *sub;
  size_t sub_len, m;
  uint32_t code;

  /* A timeout decoded and encoded again comes back no shorter. */
  if (grace__grpc_timeout_decode((const char *)in, n, &d, err, sizeof(err)) ==
      0) {
    CHECK(n >= 2 && n <= 9 && d >= 0);
    m = grace__grpc_timeout_encode(d, buf);
    CHECK(m >= 2 && m <= 9 && buf[m] == '\0');
    CHECK(grace__grpc_timeout_decode(buf, m, &d2, NULL, 0) == 0);
    CHECK(d2 >= d);
  }
  if (grace__grpc_is_content_type((const char *)in, n, &sub, &sub_len) == 1)
    CHECK(sub >= (const char *)in && sub + sub_len <= (const char *)in + n);
  if (grace_grpc_status_parse((const char *)in, n, &code) == 0)
    CHECK(grace_grpc_error_format(text, sizeof(text), code, (const char *)in,
                                  n) > 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 2)
    return 0;
  fuzz_reader(data[0], data[1], data + 2, size - 2);
  fuzz_message(data + 2, size - 2);
  fuzz_headers(data + 2, size - 2);
  return 0;
}
