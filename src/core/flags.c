/*
 * Command-line flags with the semantics of Go's flag package (see
 * include/grace/flags.h).  The parsing loop is flag.(*FlagSet).parseOne,
 * the integer syntax is strconv.ParseInt(s, 0, 64), booleans are
 * strconv.ParseBool, values in messages are quoted as Go's %q quotes them,
 * and the usage text is flag.(*FlagSet).PrintDefaults, byte for byte.
 */
#include "grace/flags.h"

#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef enum kind { K_STRING, K_DURATION, K_INT, K_BOOL } kind;

typedef struct flag {
  const char *name;  /* borrowed from the caller */
  const char *usage; /* borrowed from the caller */
  kind kind;
  void *value; /* the caller's variable */
  char *def;   /* the default as Go's DefValue (owned) */
} flag;

struct grace_flags {
  char *prog;  /* owned */
  flag *flags; /* owned array, in registration order */
  size_t n;
  char *err; /* the last parse error (owned), or NULL */
};

/* A growable string for messages and the usage text. */
typedef struct buf {
  char *p;
  size_t len, cap;
  bool oom;
} buf;

static void buf_put(buf *b, const char *s, size_t n) {
  if (b->oom)
    return;
  if (b->len + n + 1 > b->cap) {
    size_t cap = b->cap ? b->cap : 128;
    char *p;

    while (cap < b->len + n + 1)
      cap *= 2;
    p = realloc(b->p, cap);
    if (p == NULL) {
      b->oom = true;
      return;
    }
    b->p = p;
    b->cap = cap;
  }
  memcpy(b->p + b->len, s, n);
  b->len += n;
  b->p[b->len] = '\0';
}

static void buf_puts(buf *b, const char *s) { buf_put(b, s, strlen(s)); }

#if defined(__GNUC__)
static void buf_printf(buf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
#endif

static void buf_printf(buf *b, const char *fmt, ...) {
  char small[128];
  va_list ap;
  int n;

  va_start(ap, fmt);
  n = vsnprintf(small, sizeof(small), fmt, ap);
  va_end(ap);
  if (n < 0)
    return;
  if ((size_t)n < sizeof(small)) {
    buf_put(b, small, (size_t)n);
    return;
  }
  char *big = malloc((size_t)n + 1);
  if (big == NULL) {
    b->oom = true;
    return;
  }
  va_start(ap, fmt);
  vsnprintf(big, (size_t)n + 1, fmt, ap);
  va_end(ap);
  buf_put(b, big, (size_t)n);
  free(big);
}

/*
 * Length of the UTF-8 sequence at |s| (at most |n| bytes) and its code
 * point in |*cp|, or 0 if it is not valid UTF-8 (overlong forms,
 * surrogates and values above U+10FFFF are invalid, as in Go).
 */
static size_t utf8_decode(const unsigned char *s, size_t n, unsigned *cp) {
  size_t len;
  unsigned c, min;

  if (s[0] < 0x80) {
    *cp = s[0];
    return 1;
  }
  if ((s[0] & 0xe0) == 0xc0) {
    len = 2, c = s[0] & 0x1f, min = 0x80;
  } else if ((s[0] & 0xf0) == 0xe0) {
    len = 3, c = s[0] & 0x0f, min = 0x800;
  } else if ((s[0] & 0xf8) == 0xf0) {
    len = 4, c = s[0] & 0x07, min = 0x10000;
  } else {
    return 0;
  }
  if (n < len)
    return 0;
  for (size_t i = 1; i < len; i++) {
    if ((s[i] & 0xc0) != 0x80)
      return 0;
    c = (c << 6) | (s[i] & 0x3f);
  }
  if (c < min || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff))
    return 0;
  *cp = c;
  return len;
}

/*
 * Appends |s| quoted as Go's %q (strconv.Quote) does: backslash escapes
 * for quotes, backslashes and control characters, \x for bytes that are
 * not UTF-8, \u for the C1 controls and the soft hyphen.  Other valid code
 * points are kept as they are (Go also escapes a few rarer unprintable
 * ones, such as unassigned code points; flag values do not contain them).
 */
static void buf_quote(buf *b, const char *s) {
  const unsigned char *p = (const unsigned char *)s;
  size_t n = strlen(s);

  buf_put(b, "\"", 1);
  while (n > 0) {
    unsigned cp;
    size_t len = utf8_decode(p, n, &cp);

    if (len == 0) {
      buf_printf(b, "\\x%02x", p[0]);
      len = 1;
    } else if (cp == '"' || cp == '\\') {
      buf_printf(b, "\\%c", (char)cp);
    } else if (cp < 0x20 || cp == 0x7f) {
      static const char named[] = "\a\b\f\n\r\t\v";
      static const char letter[] = "abfnrtv";
      const char *q = cp != 0 ? strchr(named, (int)cp) : NULL;

      if (q != NULL)
        buf_printf(b, "\\%c", letter[q - named]);
      else
        buf_printf(b, "\\x%02x", cp);
    } else if ((cp >= 0x80 && cp < 0xa0) || cp == 0xad) {
      buf_printf(b, "\\u%04x", cp);
    } else {
      buf_put(b, (const char *)p, len);
    }
    p += len;
    n -= len;
  }
  buf_put(b, "\"", 1);
}

grace_flags *grace_flags_new(const char *prog) {
  grace_flags *f = calloc(1, sizeof(*f));
  const char *base;

  if (f == NULL)
    return NULL;
  if (prog == NULL || prog[0] == '\0')
    prog = "program";
  base = strrchr(prog, '/');
  f->prog = strdup(base != NULL && base[1] != '\0' ? base + 1 : prog);
  if (f->prog == NULL) {
    free(f);
    return NULL;
  }
  return f;
}

void grace_flags_free(grace_flags *f) {
  if (f == NULL)
    return;
  for (size_t i = 0; i < f->n; i++)
    free(f->flags[i].def);
  free(f->flags);
  free(f->err);
  free(f->prog);
  free(f);
}

static flag *lookup(const grace_flags *f, const char *name, size_t len) {
  for (size_t i = 0; i < f->n; i++) {
    if (strncmp(f->flags[i].name, name, len) == 0 &&
        f->flags[i].name[len] == '\0')
      return &f->flags[i];
  }
  return NULL;
}

/* The current value of |value| as Go's Value.String() prints it. */
static char *format_value(kind k, const void *value) {
  char tmp[GRACE_DURATION_STRLEN];
  const char *s = tmp;

  switch (k) {
  case K_STRING:
    s = *(const char *const *)value;
    if (s == NULL)
      s = "";
    break;
  case K_DURATION:
    grace_duration_format(*(const grace_duration *)value, tmp, sizeof(tmp));
    break;
  case K_INT:
    snprintf(tmp, sizeof(tmp), "%lld", (long long)*(const int64_t *)value);
    break;
  case K_BOOL:
    s = *(const bool *)value ? "true" : "false";
    break;
  }
  return strdup(s);
}

static int add(grace_flags *f, const char *name, kind k, void *value,
               const char *usage) {
  flag *flags;
  char *def;

  if (f == NULL || name == NULL || value == NULL || name[0] == '\0' ||
      name[0] == '-' || strchr(name, '=') != NULL)
    return GRACE_EINVAL;
  if (lookup(f, name, strlen(name)) != NULL)
    return GRACE_EBUSY; /* Go panics: "flag redefined" */
  def = format_value(k, value);
  if (def == NULL)
    return GRACE_ENOMEM;
  flags = realloc(f->flags, (f->n + 1) * sizeof(*flags));
  if (flags == NULL) {
    free(def);
    return GRACE_ENOMEM;
  }
  f->flags = flags;
  flags[f->n++] = (flag){.name = name,
                         .usage = usage != NULL ? usage : "",
                         .kind = k,
                         .value = value,
                         .def = def};
  return 0;
}

int grace_flags_string(grace_flags *f, const char *name, const char **value,
                       const char *usage) {
  return add(f, name, K_STRING, (void *)value, usage);
}

int grace_flags_duration(grace_flags *f, const char *name,
                         grace_duration *value, const char *usage) {
  return add(f, name, K_DURATION, value, usage);
}

int grace_flags_int(grace_flags *f, const char *name, int64_t *value,
                    const char *usage) {
  return add(f, name, K_INT, value, usage);
}

int grace_flags_bool(grace_flags *f, const char *name, bool *value,
                     const char *usage) {
  return add(f, name, K_BOOL, value, usage);
}

/* strconv.ParseBool. */
static int parse_bool(const char *s, bool *out) {
  static const char *const yes[] = {"1", "t", "T", "TRUE", "true", "True"};
  static const char *const no[] = {"0", "f", "F", "FALSE", "false", "False"};

  for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
    if (strcmp(s, yes[i]) == 0) {
      *out = true;
      return 0;
    }
    if (strcmp(s, no[i]) == 0) {
      *out = false;
      return 0;
    }
  }
  return GRACE_ESYNTAX;
}

static int lower(int c) { return c | ('x' - 'X'); }

/* strconv's underscoreOK: underscores only between digits (a base prefix
 * counts as a digit), never at either end. */
static bool underscore_ok(const char *s) {
  char saw = '^';
  bool hex = false;
  size_t i = 0;

  if (s[0] == '-' || s[0] == '+')
    s++;
  if (s[0] == '0' &&
      (lower(s[1]) == 'b' || lower(s[1]) == 'o' || lower(s[1]) == 'x')) {
    i = 2;
    saw = '0';
    hex = lower(s[1]) == 'x';
  }
  for (; s[i] != '\0'; i++) {
    if ((s[i] >= '0' && s[i] <= '9') ||
        (hex && lower(s[i]) >= 'a' && lower(s[i]) <= 'f')) {
      saw = '0';
      continue;
    }
    if (s[i] == '_') {
      if (saw != '0')
        return false;
      saw = '_';
      continue;
    }
    if (saw == '_')
      return false;
    saw = '!';
  }
  return saw != '_';
}

/*
 * strconv.ParseInt(s, 0, 64): optional sign, then a 0x, 0o, 0b or 0
 * (octal) prefix or none, then digits with optional '_' separators.
 * Returns 0, GRACE_ESYNTAX or GRACE_ERANGE, in the order Go finds them.
 */
static int parse_int(const char *s0, int64_t *out) {
  const char *s = s0;
  const uint64_t cutoff = (uint64_t)1 << 63;
  bool neg = false, underscores = false;
  uint64_t n = 0, base = 10;

  if (s[0] == '+' || s[0] == '-') {
    neg = s[0] == '-';
    s++;
  }
  if (s[0] == '\0')
    return GRACE_ESYNTAX;
  if (s[0] == '0') {
    if (s[1] != '\0' && s[2] != '\0' && lower(s[1]) == 'b') {
      base = 2, s += 2;
    } else if (s[1] != '\0' && s[2] != '\0' && lower(s[1]) == 'o') {
      base = 8, s += 2;
    } else if (s[1] != '\0' && s[2] != '\0' && lower(s[1]) == 'x') {
      base = 16, s += 2;
    } else {
      base = 8, s += 1;
    }
  }
  for (; *s != '\0'; s++) {
    uint64_t d;

    if (*s == '_') {
      underscores = true;
      continue;
    }
    if (*s >= '0' && *s <= '9')
      d = (uint64_t)(*s - '0');
    else if (lower(*s) >= 'a' && lower(*s) <= 'z')
      d = (uint64_t)(lower(*s) - 'a' + 10);
    else
      return GRACE_ESYNTAX;
    if (d >= base)
      return GRACE_ESYNTAX;
    /* ParseUint's 64-bit overflow checks come before any later syntax
     * error, so "99999999999999999999x" is out of range, as in Go. */
    if (n >= UINT64_MAX / base + 1)
      return GRACE_ERANGE;
    n *= base;
    if (n + d < n)
      return GRACE_ERANGE;
    n += d;
  }
  if (underscores && !underscore_ok(s0))
    return GRACE_ESYNTAX;
  if ((!neg && n >= cutoff) || (neg && n > cutoff))
    return GRACE_ERANGE;
  *out = neg ? (int64_t)(0 - n) : (int64_t)n;
  return 0;
}

/* Sets |fl| from |s|: 0, GRACE_ESYNTAX or GRACE_ERANGE; on error the
 * variable is left alone. */
static int set_value(flag *fl, const char *s) {
  switch (fl->kind) {
  case K_STRING:
    *(const char **)fl->value = s;
    return 0;
  case K_DURATION: {
    grace_duration d;

    /* flag's durationValue reports every failure as a parse error. */
    if (grace_duration_parse(s, &d, NULL, 0) != 0)
      return GRACE_ESYNTAX;
    *(grace_duration *)fl->value = d;
    return 0;
  }
  case K_INT:
    return parse_int(s, fl->value);
  case K_BOOL:
    return parse_bool(s, fl->value);
  }
  return GRACE_ESYNTAX;
}

/* Records the error message (as the last one) and copies it into |err|. */
static int fail(grace_flags *f, char *err, size_t errlen, buf *msg) {
  free(f->err);
  f->err = msg->oom ? NULL : msg->p;
  if (msg->oom)
    free(msg->p);
  if (err != NULL && errlen > 0)
    snprintf(err, errlen, "%s", f->err != NULL ? f->err : "out of memory");
  return GRACE_ESYNTAX;
}

int grace_flags_parse(grace_flags *f, int argc, char **argv, char *err,
                      size_t errlen) {
  int i = 1;

  if (f == NULL || argc < 0 || (argc > 0 && argv == NULL))
    return GRACE_EINVAL;
  if (err != NULL && errlen > 0)
    err[0] = '\0';
  free(f->err);
  f->err = NULL;
  while (i < argc) {
    const char *arg = argv[i], *name, *eq, *value;
    buf msg = {0};
    size_t nlen;
    flag *fl;
    int rv;

    if (arg[0] != '-' || arg[1] == '\0')
      break; /* the first non-flag argument */
    name = arg + 1;
    if (name[0] == '-') {
      name++;
      if (name[0] == '\0') { /* "--" ends the flags */
        i++;
        break;
      }
    }
    if (name[0] == '-' || name[0] == '=') {
      buf_printf(&msg, "bad flag syntax: %s", arg);
      return fail(f, err, errlen, &msg);
    }
    i++;
    eq = strchr(name, '=');
    nlen = eq != NULL ? (size_t)(eq - name) : strlen(name);
    fl = lookup(f, name, nlen);
    if (fl == NULL) {
      if ((nlen == 1 && name[0] == 'h') ||
          (nlen == 4 && strncmp(name, "help", 4) == 0))
        return GRACE_ENOENT; /* Go's flag.ErrHelp */
      buf_printf(&msg, "flag provided but not defined: -%.*s", (int)nlen, name);
      return fail(f, err, errlen, &msg);
    }
    if (fl->kind == K_BOOL) {
      /* A boolean takes no value unless written -name=value. */
      value = eq != NULL ? eq + 1 : "true";
      rv = set_value(fl, value);
      if (rv != 0) {
        buf_puts(&msg, "invalid boolean value ");
        buf_quote(&msg, value);
        buf_printf(&msg, " for -%s: parse error", fl->name);
        return fail(f, err, errlen, &msg);
      }
      continue;
    }
    if (eq != NULL) {
      value = eq + 1;
    } else if (i < argc) {
      value = argv[i++];
    } else {
      buf_printf(&msg, "flag needs an argument: -%s", fl->name);
      return fail(f, err, errlen, &msg);
    }
    rv = set_value(fl, value);
    if (rv != 0) {
      buf_puts(&msg, "invalid value ");
      buf_quote(&msg, value);
      buf_printf(&msg, " for flag -%s: %s", fl->name,
                 rv == GRACE_ERANGE ? "value out of range" : "parse error");
      return fail(f, err, errlen, &msg);
    }
  }
  return i;
}

const char *grace_flags_error(const grace_flags *f) {
  return f != NULL ? f->err : NULL;
}

/* Go's isZeroValue: the default equals the zero value's String(). */
static bool is_zero(const flag *fl) {
  static const char *const zero[] = {"", "0s", "0", "false"};

  return strcmp(fl->def, zero[fl->kind]) == 0;
}

static int by_name(const void *a, const void *b) {
  return strcmp((*(const flag *const *)a)->name,
                (*(const flag *const *)b)->name);
}

/* Appends one PrintDefaults entry for |fl|. */
static void print_default(buf *b, const flag *fl) {
  static const char *const type[] = {"string", "duration", "int", ""};
  const char *usage = fl->usage, *name = type[fl->kind];
  const char *q1 = strchr(usage, '`');
  const char *q2 = q1 != NULL ? strchr(q1 + 1, '`') : NULL;
  size_t name_len = strlen(name), start = b->len;

  /* UnquoteUsage: a `back-quoted` word of the usage names the value. */
  if (q2 != NULL) {
    name = q1 + 1;
    name_len = (size_t)(q2 - q1 - 1);
  }
  buf_printf(b, "  -%s", fl->name);
  if (name_len > 0) {
    buf_put(b, " ", 1);
    buf_put(b, name, name_len);
  }
  /* Boolean flags of one ASCII letter keep their usage on the same line. */
  buf_puts(b, b->len - start <= 4 ? "\t" : "\n    \t");
  for (const char *u = usage; *u != '\0'; u++) {
    if (q2 != NULL && (u == q1 || u == q2))
      continue;
    if (*u == '\n')
      buf_puts(b, "\n    \t");
    else
      buf_put(b, u, 1);
  }
  if (!is_zero(fl)) {
    buf_puts(b, " (default ");
    if (fl->kind == K_STRING)
      buf_quote(b, fl->def);
    else
      buf_puts(b, fl->def);
    buf_puts(b, ")");
  }
  buf_puts(b, "\n");
}

/* Builds the whole usage text; NULL if out of memory. */
static char *usage_text(const grace_flags *f) {
  const flag **sorted = malloc((f->n ? f->n : 1) * sizeof(*sorted));
  buf b = {0};

  if (sorted == NULL)
    return NULL;
  for (size_t i = 0; i < f->n; i++)
    sorted[i] = &f->flags[i];
  qsort(sorted, f->n, sizeof(*sorted), by_name);
  buf_printf(&b, "Usage of %s:\n", f->prog);
  for (size_t i = 0; i < f->n; i++)
    print_default(&b, sorted[i]);
  free(sorted);
  if (b.oom) {
    free(b.p);
    return NULL;
  }
  return b.p;
}

void grace_flags_usage(const grace_flags *f, FILE *out) {
  char *text;

  if (f == NULL || out == NULL)
    return;
  text = usage_text(f);
  if (text != NULL)
    fputs(text, out);
  free(text);
}

/* Writes all of |s| to |fd|, retrying short writes. */
static void write_all(int fd, const char *s) {
  size_t n = strlen(s);

  while (n > 0) {
    ssize_t w = write(fd, s, n);

    if (w < 0) {
      if (errno == EINTR)
        continue;
      return;
    }
    s += w;
    n -= (size_t)w;
  }
}

int grace_flags_parse_or_exit(grace_flags *f, int argc, char **argv) {
  int rv = grace_flags_parse(f, argc, argv, NULL, 0);
  buf out = {0};
  char *usage;

  if (rv >= 0)
    return rv;
  if (rv == GRACE_EINVAL) {
    write_all(2, "grace_flags_parse_or_exit: invalid arguments\n");
    exit(2);
  }
  /* The message, then the usage, in one write: Go's failf then usage. */
  if (rv == GRACE_ESYNTAX) {
    buf_puts(&out, f->err != NULL ? f->err : "out of memory");
    buf_puts(&out, "\n");
  }
  usage = usage_text(f);
  buf_puts(&out, usage != NULL ? usage : "");
  free(usage);
  write_all(2, out.p != NULL ? out.p : "");
  free(out.p);
  grace_flags_free(f);
  exit(rv == GRACE_ENOENT ? 0 : 2);
}
