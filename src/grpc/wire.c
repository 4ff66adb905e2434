/*
 * grace: the gRPC wire format over HTTP/2, without sockets.
 *
 * See wire.h for the contracts.  The grpc-go functions each piece matches
 * are named at the piece, so a reader can put the two side by side.
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "grpc/wire.h"

/* ---- Small text helpers ---------------------------------------------- */

/* A bounded, always NUL-terminated text buffer for error messages. */
typedef struct textbuf {
  char *buf;
  size_t len; /* size of |buf|; 0 means write nothing */
  size_t pos; /* bytes the whole text has so far */
} textbuf;

static void text_putc(textbuf *t, char c) {
  if (t->pos + 1 < t->len)
    t->buf[t->pos] = c;
  t->pos++;
}

static void text_puts(textbuf *t, const char *s) {
  while (*s != '\0')
    text_putc(t, *s++);
}

static void text_end(textbuf *t) {
  if (t->len > 0)
    t->buf[t->pos < t->len ? t->pos : t->len - 1] = '\0';
}

/*
 * Returns the length of the well-formed UTF-8 sequence that starts |s|
 * (|n| > 0 bytes available), or 0 if |s| does not start one.  These are the
 * rules of Go's utf8.DecodeRune, which returns (RuneError, 1) exactly when
 * this returns 0: no overlong forms, no surrogates (U+D800..U+DFFF), nothing
 * above U+10FFFF, no truncated sequence (Unicode table 3-7).
 */
static size_t utf8_seq_len(const uint8_t *s, size_t n) {
  uint8_t c = s[0];
  uint8_t lo = 0x80, hi = 0xBF;
  size_t need, i;

  if (c < 0x80)
    return 1;
  if (c < 0xC2)
    return 0;
  if (c < 0xE0) {
    need = 2;
  } else if (c < 0xF0) {
    need = 3;
    if (c == 0xE0)
      lo = 0xA0;
    else if (c == 0xED)
      hi = 0x9F;
  } else if (c < 0xF5) {
    need = 4;
    if (c == 0xF0)
      lo = 0x90;
    else if (c == 0xF4)
      hi = 0x8F;
  } else {
    return 0;
  }
  if (n < need || s[1] < lo || s[1] > hi)
    return 0;
  for (i = 2; i < need; i++) {
    if (s[i] < 0x80 || s[i] > 0xBF)
      return 0;
  }
  return need;
}

/*
 * Appends |s| (|n| bytes) quoted as Go's %q verb (strconv.Quote) does for
 * the text it is used on here: printable ASCII kept, '"' and '\' escaped,
 * the C escapes \a \b \f \n \r \t \v, other control bytes and invalid UTF-8
 * bytes as \xNN in lower-case hex.  Valid non-ASCII characters are kept as
 * they are; Go would escape the few that Unicode calls unprintable, which
 * header values in practice never carry.
 */
static void text_quote(textbuf *t, const char *s, size_t n) {
  static const char hex[] = "0123456789abcdef";
  const uint8_t *p = (const uint8_t *)s;
  size_t i = 0, k, w;

  text_putc(t, '"');
  while (i < n) {
    uint8_t c = p[i];

    w = utf8_seq_len(p + i, n - i);
    if (w > 1) {
      for (k = 0; k < w; k++)
        text_putc(t, (char)p[i + k]);
      i += w;
      continue;
    }
    i++;
    if (w == 1 && c >= 0x20 && c < 0x7F) {
      if (c == '"' || c == '\\')
        text_putc(t, '\\');
      text_putc(t, (char)c);
      continue;
    }
    text_putc(t, '\\');
    switch (c) {
    case '\a':
      text_putc(t, 'a');
      break;
    case '\b':
      text_putc(t, 'b');
      break;
    case '\f':
      text_putc(t, 'f');
      break;
    case '\n':
      text_putc(t, 'n');
      break;
    case '\r':
      text_putc(t, 'r');
      break;
    case '\t':
      text_putc(t, 't');
      break;
    case '\v':
      text_putc(t, 'v');
      break;
    default:
      text_putc(t, 'x');
      text_putc(t, hex[c >> 4]);
      text_putc(t, hex[c & 0xF]);
      break;
    }
  }
  text_putc(t, '"');
}

static int hex_value(char c) {
  if (c >= '0' && c <= '9')
    return c - '0';
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  if (c >= 'A' && c <= 'F')
    return c - 'A' + 10;
  return -1;
}

/* ---- grpc-message ---------------------------------------------------- */

static void out_byte(char *dst, size_t dstlen, size_t *pos, char c) {
  if (*pos < dstlen)
    dst[*pos] = c;
  (*pos)++;
}

static void out_pct(char *dst, size_t dstlen, size_t *pos, uint8_t b) {
  static const char hex[] = "0123456789ABCDEF";

  out_byte(dst, dstlen, pos, '%');
  out_byte(dst, dstlen, pos, hex[b >> 4]);
  out_byte(dst, dstlen, pos, hex[b & 0xF]);
}

size_t grace__grpc_message_encode(char *dst, size_t dstlen, const char *src,
                                  size_t srclen) {
  const uint8_t *s = (const uint8_t *)src;
  size_t i = 0, pos = 0, n, k;

  /* encodeGrpcMessageUnchecked walks runes: an invalid byte is RuneError,
   * whose UTF-8 form EF BF BD is then escaped byte by byte; every byte of a
   * multi-byte rune is escaped; a one-byte rune is kept if it is 0x20..0x7E
   * and not '%'. */
  while (i < srclen) {
    n = utf8_seq_len(s + i, srclen - i);
    if (n == 0) {
      out_pct(dst, dstlen, &pos, 0xEF);
      out_pct(dst, dstlen, &pos, 0xBF);
      out_pct(dst, dstlen, &pos, 0xBD);
      i++;
    } else if (n == 1 && s[i] >= 0x20 && s[i] <= 0x7E && s[i] != '%') {
      out_byte(dst, dstlen, &pos, (char)s[i]);
      i++;
    } else {
      for (k = 0; k < n; k++)
        out_pct(dst, dstlen, &pos, s[i + k]);
      i += n;
    }
  }
  return pos;
}

size_t grace__grpc_message_decode(char *dst, const char *src, size_t srclen) {
  size_t i, pos = 0;
  int hi, lo;

  /* decodeGrpcMessageUnchecked: strconv.ParseUint(msg[i+1:i+3], 16, 8)
   * accepts exactly two hex digits of either case.  Writing never runs
   * ahead of reading (pos <= i), which makes decoding in place safe. */
  for (i = 0; i < srclen; i++) {
    if (src[i] == '%' && i + 2 < srclen) {
      hi = hex_value(src[i + 1]);
      lo = hex_value(src[i + 2]);
      if (hi >= 0 && lo >= 0) {
        dst[pos++] = (char)((hi << 4) | lo);
        i += 2;
        continue;
      }
    }
    dst[pos++] = src[i];
  }
  return pos;
}

/* ---- grpc-timeout ---------------------------------------------------- */

/* At most 8 digits (doc/PROTOCOL-HTTP2.md, TimeoutValue). */
#define TIMEOUT_MAX_VALUE 99999999

static const struct {
  char symbol;
  grace_duration unit;
} timeout_units[] = {
    {'n', GRACE_NANOSECOND}, {'u', GRACE_MICROSECOND}, {'m', GRACE_MILLISECOND},
    {'S', GRACE_SECOND},     {'M', GRACE_MINUTE},      {'H', GRACE_HOUR},
};

#define TIMEOUT_UNITS (sizeof(timeout_units) / sizeof(timeout_units[0]))

/* |d| / |r| rounded up, for |d| > 0, as grpcutil's div. */
static int64_t div_up(grace_duration d, grace_duration r) {
  int64_t q = d / r;

  if (d % r > 0)
    q++;
  return q;
}

size_t grace__grpc_timeout_encode(grace_duration d,
                                  char buf[GRACE__GRPC_TIMEOUT_BUFLEN]) {
  size_t i;
  int64_t value;
  int n;

  /* grpcutil.EncodeDuration: the largest unit that divides |d| exactly,
   * then coarser units (rounding up) while the value has over 8 digits.
   * INT64_MAX nanoseconds is 2562048H, so the last unit always fits. */
  if (d <= 0) {
    memcpy(buf, "0S", 3);
    return 2;
  }
  for (i = TIMEOUT_UNITS - 1; i > 0; i--) {
    if (d % timeout_units[i].unit == 0)
      break;
  }
  value = div_up(d, timeout_units[i].unit);
  while (value > TIMEOUT_MAX_VALUE && i + 1 < TIMEOUT_UNITS) {
    i++;
    value = div_up(d, timeout_units[i].unit);
  }
  n = snprintf(buf, GRACE__GRPC_TIMEOUT_BUFLEN, "%" PRId64 "%c", value,
               timeout_units[i].symbol);
  return (size_t)n;
}

int grace__grpc_timeout_decode(const char *s, size_t len, grace_duration *out,
                               char *errbuf, size_t errlen) {
  textbuf t = {errbuf, errbuf != NULL ? errlen : 0, 0};
  grace_duration unit = 0;
  uint64_t value = 0;
  size_t i;

  if (s == NULL || out == NULL)
    return GRACE_EINVAL;
  /* decodeTimeout's checks, in its order and with its words. */
  if (len < 2) {
    text_puts(&t, "transport: timeout string is too short: ");
    goto quoted;
  }
  if (len > 9) {
    text_puts(&t, "transport: timeout string is too long: ");
    goto quoted;
  }
  for (i = 0; i < TIMEOUT_UNITS; i++) {
    if (timeout_units[i].symbol == s[len - 1])
      unit = timeout_units[i].unit;
  }
  if (unit == 0) {
    text_puts(&t, "transport: timeout unit is not recognized: ");
    goto quoted;
  }
  for (i = 0; i + 1 < len; i++) {
    if (s[i] < '0' || s[i] > '9') {
      /* strconv.ParseUint's error, as decodeTimeout returns it. */
      text_puts(&t, "strconv.ParseUint: parsing ");
      text_quote(&t, s, len - 1);
      text_puts(&t, ": invalid syntax");
      text_end(&t);
      return GRACE_ESYNTAX;
    }
    value = value * 10 + (uint64_t)(s[i] - '0');
  }
  /* Eight digits of anything but hours fit an int64 of nanoseconds
   * (99999999M is about 6.0e18 ns); hours beyond 2562047 are clamped, as
   * grpc-go does. */
  if (unit == GRACE_HOUR && value > (uint64_t)(INT64_MAX / GRACE_HOUR))
    *out = INT64_MAX;
  else
    *out = (grace_duration)value * unit;
  return 0;

quoted:
  text_quote(&t, s, len);
  text_end(&t);
  return GRACE_ESYNTAX;
}

int64_t grace__grpc_deadline_after(int64_t now, grace_duration d) {
  if (d <= 0)
    return now;
  if (now > INT64_MAX - d)
    return INT64_MAX;
  return now + d;
}

uint64_t grace__grpc_timeout_ms(grace_duration d) {
  if (d <= 0)
    return 0;
  /* Divide first: d + 999999 would overflow for d near INT64_MAX. */
  uint64_t ms = (uint64_t)d / (uint64_t)GRACE_MILLISECOND;
  return (uint64_t)d % (uint64_t)GRACE_MILLISECOND != 0 ? ms + 1 : ms;
}

/* ---- Length-Prefixed-Message ---------------------------------------- */

int grace__grpc_prefix_encode(uint8_t out[GRACE__GRPC_PREFIX_LEN],
                              unsigned compressed, size_t len) {
  if (out == NULL || compressed > 1)
    return GRACE_EINVAL;
  if ((uint64_t)len > UINT32_MAX)
    return GRACE_ERANGE;
  out[0] = (uint8_t)compressed;
  out[1] = (uint8_t)(len >> 24);
  out[2] = (uint8_t)(len >> 16);
  out[3] = (uint8_t)(len >> 8);
  out[4] = (uint8_t)len;
  return 0;
}

/* A buffer this large or smaller is kept for the next split message; a
 * larger one is given back once its message has been handed out, so a
 * stream that once carried a big message does not hold it for its life. */
#define READER_RETAIN 65536
/* The smallest buffer worth allocating. */
#define READER_MIN_ALLOC 256

static const uint8_t empty_payload[1];

static void *mem_realloc(const grace__grpc_mem *mem, void *ptr, size_t size) {
  if (mem != NULL)
    return mem->realloc_fn(ptr, size, mem->data);
  return realloc(ptr, size);
}

static void mem_free(const grace__grpc_mem *mem, void *ptr) {
  if (ptr == NULL)
    return;
  if (mem != NULL)
    mem->free_fn(ptr, mem->data);
  else
    free(ptr);
}

void grace__grpc_reader_init(grace__grpc_reader *r, size_t max_msg,
                             const grace__grpc_mem *mem) {
  memset(r, 0, sizeof(*r));
  r->mem = mem;
  r->max_msg = max_msg;
  r->code = GRACE_GRPC_OK;
}

void grace__grpc_reader_free(grace__grpc_reader *r) {
  if (r == NULL)
    return;
  mem_free(r->mem, r->buf);
  r->buf = NULL;
  r->buf_cap = 0;
  r->buf_have = 0;
}

/* Makes |r| fail with |err|, answering the peer with |code| and the text
 * |fmt| (a printf format). */
#if defined(__GNUC__)
__attribute__((format(printf, 4, 5)))
#endif
static int
reader_fail(grace__grpc_reader *r, int err, grace_grpc_code code,
            const char *fmt, ...) {
  va_list ap;

  r->error = err;
  r->code = code;
  va_start(ap, fmt);
  vsnprintf(r->message, sizeof(r->message), fmt, ap);
  va_end(ap);
  return err;
}

/* Forgets the message handed out from the buffer by the previous call. */
static void reader_recycle(grace__grpc_reader *r) {
  if (!r->emitted_buf)
    return;
  r->emitted_buf = 0;
  r->buf_have = 0;
  if (r->buf_cap > READER_RETAIN) {
    mem_free(r->mem, r->buf);
    r->buf = NULL;
    r->buf_cap = 0;
  }
}

/* Makes room in the buffer for |more| bytes beyond those it has, growing
 * by doubling but never past the announced message length. */
static int reader_reserve(grace__grpc_reader *r, size_t more) {
  size_t need = r->buf_have + more;
  size_t cap;
  uint8_t *p;

  if (need <= r->buf_cap)
    return 0;
  cap = r->buf_cap > 0 ? r->buf_cap : READER_MIN_ALLOC;
  while (cap < need)
    cap = cap > SIZE_MAX / 2 ? need : cap * 2;
  if (cap > r->msg_len)
    cap = r->msg_len;
  p = mem_realloc(r->mem, r->buf, cap);
  if (p == NULL)
    return GRACE_ENOMEM;
  r->buf = p;
  r->buf_cap = cap;
  return 0;
}

int grace__grpc_reader_read(grace__grpc_reader *r, const uint8_t *data,
                            size_t len, size_t *consumed,
                            grace__grpc_msg *msg) {
  size_t pos = 0, take;
  int rv;

  if (r == NULL || consumed == NULL || msg == NULL || (data == NULL && len > 0))
    return GRACE_EINVAL;
  if (r->error != 0)
    return GRACE_ESTATE;
  reader_recycle(r);

  /* The prefix arrives byte by byte if need be; nothing else is done with
   * a message until its length is known. */
  if (r->prefix_have < GRACE__GRPC_PREFIX_LEN) {
    take = GRACE__GRPC_PREFIX_LEN - r->prefix_have;
    if (take > len)
      take = len;
    if (take > 0)
      memcpy(r->prefix + r->prefix_have, data, take);
    r->prefix_have = (uint8_t)(r->prefix_have + take);
    pos = take;
    if (r->prefix_have < GRACE__GRPC_PREFIX_LEN) {
      *consumed = pos;
      return 0;
    }
    r->msg_len = (uint32_t)r->prefix[1] << 24 | (uint32_t)r->prefix[2] << 16 |
                 (uint32_t)r->prefix[3] << 8 | (uint32_t)r->prefix[4];
    /* grpc-go's recvMsg refuses the length before reading the payload,
     * so a peer cannot make the receiver hold more than the limit. */
    if (r->msg_len > r->max_msg)
      return reader_fail(r, GRACE_ERANGE, GRACE_GRPC_RESOURCE_EXHAUSTED,
                         "grpc: received message larger than max (%" PRIu32
                         " vs. %zu)",
                         r->msg_len, r->max_msg);
  }

  if (r->buf_have == 0 && len - pos >= r->msg_len) {
    /* The whole payload is in this chunk: hand it out in place. */
    msg->data = r->msg_len > 0 ? data + pos : empty_payload;
    pos += r->msg_len;
  } else {
    take = r->msg_len - r->buf_have;
    if (take > len - pos)
      take = len - pos;
    if (take > 0) {
      rv = reader_reserve(r, take);
      if (rv != 0)
        return reader_fail(r, rv, GRACE_GRPC_RESOURCE_EXHAUSTED,
                           "grpc: cannot allocate memory for a message of "
                           "%" PRIu32 " bytes",
                           r->msg_len);
      memcpy(r->buf + r->buf_have, data + pos, take);
      r->buf_have += take;
      pos += take;
    }
    if (r->buf_have < r->msg_len) {
      *consumed = pos;
      return 0;
    }
    msg->data = r->buf;
    r->emitted_buf = 1;
  }
  msg->len = r->msg_len;
  msg->flag = r->prefix[0];
  r->prefix_have = 0;
  *consumed = pos;
  return 1;
}

int grace__grpc_reader_feed(grace__grpc_reader *r, const uint8_t *data,
                            size_t len, grace__grpc_msg_cb cb, void *cbdata) {
  grace__grpc_msg msg;
  size_t used = 0;
  int rv;

  if (cb == NULL)
    return GRACE_EINVAL;
  for (;;) {
    rv = grace__grpc_reader_read(r, data, len, &used, &msg);
    if (rv <= 0)
      return rv;
    /* Advance only by what was used: NULL + 0 is undefined in C. */
    if (used > 0) {
      data += used;
      len -= used;
    }
    rv = cb(&msg, cbdata);
    if (rv != 0) {
      r->error = GRACE_ESTATE;
      return rv;
    }
  }
}

int grace__grpc_reader_is_mid_message(const grace__grpc_reader *r) {
  return r != NULL && r->prefix_have > 0;
}

int grace__grpc_reader_finish(grace__grpc_reader *r) {
  if (r == NULL)
    return GRACE_EINVAL;
  if (r->error != 0)
    return GRACE_ESTATE;
  /* io.ReadFull in grpc-go's recvMsg turns a stream that ends inside the
   * prefix or the payload into io.ErrUnexpectedEOF, and toRPCErr makes
   * that INTERNAL with the error's text. */
  if (r->prefix_have > 0)
    return reader_fail(r, GRACE_ESYNTAX, GRACE_GRPC_INTERNAL, "unexpected EOF");
  return 0;
}

grace_grpc_code grace__grpc_reader_status(const grace__grpc_reader *r,
                                          const char **message) {
  if (message != NULL)
    *message = r->error != 0 ? r->message : "";
  return r->error != 0 ? r->code : GRACE_GRPC_OK;
}

size_t grace__grpc_reader_buffer_size(const grace__grpc_reader *r) {
  return r->buf_cap;
}

/* ---- Checks on headers and messages --------------------------------- */

int grace__grpc_is_content_type(const char *value, size_t len,
                                const char **subtype, size_t *subtype_len) {
  static const char base[] = "application/grpc";
  const size_t base_len = sizeof(base) - 1;
  const char *sub = value;
  size_t sub_len = 0, i;
  char c;

  if (value == NULL || len < base_len)
    return 0;
  for (i = 0; i < base_len; i++) {
    c = value[i];
    if (c >= 'A' && c <= 'Z')
      c = (char)(c - 'A' + 'a');
    if (c != base[i])
      return 0;
  }
  if (len > base_len) {
    if (value[base_len] == '+') {
      sub = value + base_len + 1;
      while (base_len + 1 + sub_len < len && sub[sub_len] != ';')
        sub_len++;
    } else if (value[base_len] != ';') {
      return 0;
    }
  }
  if (subtype != NULL && subtype_len != NULL) {
    *subtype = sub;
    *subtype_len = sub_len;
  }
  return 1;
}

grace_grpc_code grace__grpc_check_payload(uint8_t flag, const char *encoding,
                                          int have_decompressor, int is_server,
                                          char *buf, size_t len) {
  textbuf t = {buf, buf != NULL ? len : 0, 0};
  grace_grpc_code code;
  char num[4];

  switch (flag) {
  case 0:
    return GRACE_GRPC_OK;
  case 1:
    if (encoding == NULL || encoding[0] == '\0' ||
        strcmp(encoding, "identity") == 0) {
      text_puts(&t,
                "grpc: compressed flag set with identity or empty encoding");
      code = GRACE_GRPC_INTERNAL;
      break;
    }
    if (have_decompressor)
      return GRACE_GRPC_OK;
    text_puts(&t, "grpc: Decompressor is not installed for grpc-encoding ");
    text_quote(&t, encoding, strlen(encoding));
    code = is_server ? GRACE_GRPC_UNIMPLEMENTED : GRACE_GRPC_INTERNAL;
    break;
  default:
    snprintf(num, sizeof(num), "%u", (unsigned)flag);
    text_puts(&t, "grpc: received unexpected payload format ");
    text_puts(&t, num);
    code = GRACE_GRPC_INTERNAL;
    break;
  }
  text_end(&t);
  return code;
}
