/*
 * grace: durations, parsed and printed exactly like Go's time package.
 *
 * This is a line-by-line translation of ParseDuration, leadingInt,
 * leadingFraction, unitMap and quote from Go's src/time/format.go, and of
 * Duration.String, fmtFrac and fmtInt from src/time/time.go (Go 1.19).  The
 * arithmetic is done in uint64_t and double as Go does it, including where
 * the result is surprising, so that a duration accepted or rejected by a Go
 * program is accepted or rejected here with the same value or error text.
 *
 * The parser measures its input once with strlen() and from then on only
 * reads bytes before the terminating NUL.
 */
#include <stdbool.h>
#include <string.h>

#include "grace/duration.h"

#define U64_SIGN_BIT ((uint64_t)1 << 63) /* Go's 1<<63 as a uint64 */

/* A bounded writer for the error text: it keeps what fits in |len| - 1
 * bytes and always leaves the buffer NUL terminated. */
struct errwriter {
  char *buf;
  size_t len;
  size_t pos;
};

static void err_putc(struct errwriter *w, char c) {
  if (w->buf == NULL || w->len == 0)
    return;
  if (w->pos + 1 < w->len)
    w->buf[w->pos++] = c;
  w->buf[w->pos] = '\0';
}

static void err_puts(struct errwriter *w, const char *s) {
  while (*s != '\0')
    err_putc(w, *s++);
}

/*
 * Go's time.quote: wraps |s| in double quotes, escapes '"' and '\\' with a
 * backslash, and writes every byte of a control character, of a non-ASCII
 * character or of an invalid UTF-8 sequence as \xHH (lower-case hex).
 *
 * Go walks the string by rune and escapes all the bytes of each non-ASCII
 * rune (a valid sequence whole, an invalid byte on its own).  Every byte of
 * a multi-byte UTF-8 sequence is >= 0x80, and an invalid byte is always
 * taken alone, so the result is exactly "escape each byte that is >= 0x80
 * or < 0x20": that is what is done here, with no UTF-8 decoding to get
 * wrong.  (DEL, 0x7f, is below utf8.RuneSelf and is printed as is.)
 */
static void err_quote(struct errwriter *w, const char *s, size_t n) {
  static const char lowerhex[] = "0123456789abcdef";
  const unsigned char *p = (const unsigned char *)s;
  size_t i;

  err_putc(w, '"');
  for (i = 0; i < n; i++) {
    unsigned char c = p[i];

    if (c >= 0x80 || c < ' ') {
      err_putc(w, '\\');
      err_putc(w, 'x');
      err_putc(w, lowerhex[c >> 4]);
      err_putc(w, lowerhex[c & 0xF]);
    } else {
      if (c == '"' || c == '\\')
        err_putc(w, '\\');
      err_putc(w, (char)c);
    }
  }
  err_putc(w, '"');
}

/* Go's leadingInt: consumes the leading [0-9]* of |*s|, or fails (returns
 * false) once the value passes 1<<63. */
static bool leading_int(const char **s, size_t *n, uint64_t *out) {
  const char *p = *s;
  size_t i;
  uint64_t x = 0;

  for (i = 0; i < *n; i++) {
    char c = p[i];

    if (c < '0' || c > '9')
      break;
    if (x > U64_SIGN_BIT / 10)
      return false;
    x = x * 10 + (uint64_t)(c - '0');
    if (x > U64_SIGN_BIT)
      return false;
  }
  *out = x;
  *s = p + i;
  *n -= i;
  return true;
}

/* Go's leadingFraction: consumes the leading [0-9]* of |*s|; past 63 bits
 * it keeps consuming digits but stops accumulating precision. */
static void leading_fraction(const char **s, size_t *n, uint64_t *out,
                             double *scale_out) {
  const char *p = *s;
  size_t i;
  uint64_t x = 0, y;
  double scale = 1;
  bool overflow = false;

  for (i = 0; i < *n; i++) {
    char c = p[i];

    if (c < '0' || c > '9')
      break;
    if (overflow)
      continue;
    if (x > (U64_SIGN_BIT - 1) / 10) {
      overflow = true;
      continue;
    }
    y = x * 10 + (uint64_t)(c - '0');
    if (y > U64_SIGN_BIT) {
      overflow = true;
      continue;
    }
    x = y;
    scale *= 10;
  }
  *out = x;
  *scale_out = scale;
  *s = p + i;
  *n -= i;
}

/* Go's unitMap.  Both spellings of the micro sign are accepted. */
static const struct {
  const char *name;
  uint64_t ns;
} units[] = {
    {"ns", (uint64_t)GRACE_NANOSECOND},
    {"us", (uint64_t)GRACE_MICROSECOND},
    {"\xC2\xB5s", (uint64_t)GRACE_MICROSECOND}, /* U+00B5 micro sign */
    {"\xCE\xBCs", (uint64_t)GRACE_MICROSECOND}, /* U+03BC Greek mu */
    {"ms", (uint64_t)GRACE_MILLISECOND},
    {"s", (uint64_t)GRACE_SECOND},
    {"m", (uint64_t)GRACE_MINUTE},
    {"h", (uint64_t)GRACE_HOUR},
};

/* Returns the nanoseconds in the unit spelled by the |n| bytes at |u|, or 0
 * if there is no such unit. */
static uint64_t lookup_unit(const char *u, size_t n) {
  size_t i;

  for (i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
    if (strlen(units[i].name) == n && memcmp(units[i].name, u, n) == 0)
      return units[i].ns;
  }
  return 0;
}

/* Writes `time: invalid duration "<orig>"` and returns |rc|. */
static int fail_invalid(struct errwriter *w, const char *orig, size_t n,
                        int rc) {
  err_puts(w, "time: invalid duration ");
  err_quote(w, orig, n);
  return rc;
}

int grace_duration_parse(const char *str, grace_duration *out, char *errbuf,
                         size_t errlen) {
  struct errwriter w = {errbuf, errlen, 0};
  const char *s = str;
  size_t n, origlen;
  uint64_t d = 0;
  bool neg = false;

  if (errbuf != NULL && errlen > 0)
    errbuf[0] = '\0';
  if (str == NULL || out == NULL) {
    err_puts(&w, grace_strerror(GRACE_EINVAL));
    return GRACE_EINVAL;
  }
  origlen = n = strlen(str);

  /* Consume [-+]? */
  if (n > 0 && (s[0] == '-' || s[0] == '+')) {
    neg = s[0] == '-';
    s++;
    n--;
  }
  /* Special case: if all that is left is "0", this is zero. */
  if (n == 1 && s[0] == '0') {
    *out = 0;
    return 0;
  }
  if (n == 0)
    return fail_invalid(&w, str, origlen, GRACE_ESYNTAX);

  while (n > 0) {
    uint64_t v = 0, f = 0, unit; /* integers before, after decimal point */
    double scale = 1;            /* value = v + f/scale */
    size_t pl, i;
    bool pre, post = false;

    /* The next character must be [0-9.] */
    if (!(s[0] == '.' || (s[0] >= '0' && s[0] <= '9')))
      return fail_invalid(&w, str, origlen, GRACE_ESYNTAX);
    /* Consume [0-9]* */
    pl = n;
    if (!leading_int(&s, &n, &v))
      return fail_invalid(&w, str, origlen, GRACE_ERANGE);
    pre = pl != n; /* whether we consumed anything before a period */

    /* Consume (\.[0-9]*)? */
    if (n > 0 && s[0] == '.') {
      s++;
      n--;
      pl = n;
      leading_fraction(&s, &n, &f, &scale);
      post = pl != n;
    }
    if (!pre && !post) /* no digits (e.g. ".s" or "-.s") */
      return fail_invalid(&w, str, origlen, GRACE_ESYNTAX);

    /* Consume unit. */
    for (i = 0; i < n; i++) {
      if (s[i] == '.' || (s[i] >= '0' && s[i] <= '9'))
        break;
    }
    if (i == 0) {
      err_puts(&w, "time: missing unit in duration ");
      err_quote(&w, str, origlen);
      return GRACE_ESYNTAX;
    }
    unit = lookup_unit(s, i);
    if (unit == 0) {
      err_puts(&w, "time: unknown unit ");
      err_quote(&w, s, i);
      err_puts(&w, " in duration ");
      err_quote(&w, str, origlen);
      return GRACE_ESYNTAX;
    }
    s += i;
    n -= i;

    if (v > U64_SIGN_BIT / unit)
      return fail_invalid(&w, str, origlen, GRACE_ERANGE);
    v *= unit;
    if (f > 0) {
      /* double is needed to be nanosecond accurate for fractions of hours:
       * (f*unit/scale) <= 3.6e+12 (ns/h, h is the largest unit). */
      v += (uint64_t)((double)f * ((double)unit / scale));
      if (v > U64_SIGN_BIT)
        return fail_invalid(&w, str, origlen, GRACE_ERANGE);
    }
    /* As in Go, the sum wraps modulo 2^64 when both terms are exactly
     * 1<<63 ("9223372036854775808ns9223372036854775808ns" parses as 0). */
    d += v;
    if (d > U64_SIGN_BIT)
      return fail_invalid(&w, str, origlen, GRACE_ERANGE);
  }
  if (neg) {
    /* d <= 1<<63 here; 1<<63 itself is INT64_MIN. */
    *out = d == U64_SIGN_BIT ? INT64_MIN : -(grace_duration)d;
    return 0;
  }
  if (d > U64_SIGN_BIT - 1)
    return fail_invalid(&w, str, origlen, GRACE_ERANGE);
  *out = (grace_duration)d;
  return 0;
}

/* Go's fmtFrac: formats the fraction of v/10**prec (".12345") into the tail
 * of buf[0..w), omitting trailing zeros, and the decimal point too when the
 * fraction is 0.  Returns the new start and stores v/10**prec in |*v|. */
static size_t fmt_frac(char *buf, size_t w, uint64_t *v, int prec) {
  bool print = false;
  int i;

  for (i = 0; i < prec; i++) {
    uint64_t digit = *v % 10;

    print = print || digit != 0;
    if (print)
      buf[--w] = (char)('0' + digit);
    *v /= 10;
  }
  if (print)
    buf[--w] = '.';
  return w;
}

/* Go's fmtInt: formats v into the tail of buf[0..w); returns the start. */
static size_t fmt_int(char *buf, size_t w, uint64_t v) {
  if (v == 0) {
    buf[--w] = '0';
  } else {
    while (v > 0) {
      buf[--w] = (char)('0' + v % 10);
      v /= 10;
    }
  }
  return w;
}

int grace_duration_format(grace_duration d, char *out, size_t len) {
  /* Largest is "-2562047h47m16.854775808s", 25 bytes. */
  char buf[GRACE_DURATION_STRLEN];
  size_t w = sizeof(buf), n;
  uint64_t u = (uint64_t)d;
  bool neg = d < 0;

  if (neg)
    u = 0 - u; /* well defined for INT64_MIN too */

  if (u == 0) {
    w -= 2;
    memcpy(buf + w, "0s", 2);
  } else if (u < (uint64_t)GRACE_SECOND) {
    /* Special case: if duration is smaller than a second, use smaller
     * units, like 1.2ms. */
    int prec;

    buf[--w] = 's';
    if (u < (uint64_t)GRACE_MICROSECOND) {
      prec = 0; /* print nanoseconds */
      buf[--w] = 'n';
    } else if (u < (uint64_t)GRACE_MILLISECOND) {
      prec = 3; /* print microseconds, U+00B5 micro sign */
      w -= 2;
      memcpy(buf + w, "\xC2\xB5", 2);
    } else {
      prec = 6; /* print milliseconds */
      buf[--w] = 'm';
    }
    w = fmt_frac(buf, w, &u, prec);
    w = fmt_int(buf, w, u);
  } else {
    buf[--w] = 's';
    w = fmt_frac(buf, w, &u, 9);
    /* u is now integer seconds */
    w = fmt_int(buf, w, u % 60);
    u /= 60;
    /* u is now integer minutes */
    if (u > 0) {
      buf[--w] = 'm';
      w = fmt_int(buf, w, u % 60);
      u /= 60;
      /* u is now integer hours; stop at hours because days can be
       * different lengths. */
      if (u > 0) {
        buf[--w] = 'h';
        w = fmt_int(buf, w, u);
      }
    }
  }
  if (neg)
    buf[--w] = '-';

  n = sizeof(buf) - w;
  if (out != NULL && len > 0) {
    size_t copy = n < len - 1 ? n : len - 1;

    memcpy(out, buf + w, copy);
    out[copy] = '\0';
  }
  return (int)n;
}
