/*
 * Command-line flags with Go's flag package semantics.  See flags.h.
 */
#include "grace/flags.h"

#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

typedef enum kind { K_STRING, K_DURATION, K_INT, K_BOOL } kind;

typedef struct flag {
  const char *name;
  const char *usage;
  kind kind;
  void *value;
  char def[64]; /* the default, formatted for the usage text */
  int def_is_zero;
} flag;

struct grace_flags {
  char *prog;
  flag *flags;
  size_t n;
};

grace_flags *grace_flags_new(const char *prog) {
  grace_flags *f = calloc(1, sizeof(*f));
  if (f == NULL)
    return NULL;
  const char *base = prog ? strrchr(prog, '/') : NULL;
  f->prog = strdup(base ? base + 1 : (prog ? prog : "program"));
  if (f->prog == NULL) {
    free(f);
    return NULL;
  }
  return f;
}

void grace_flags_free(grace_flags *f) {
  if (f == NULL)
    return;
  free(f->flags);
  free(f->prog);
  free(f);
}

static flag *lookup(const grace_flags *f, const char *name, size_t len) {
  for (size_t i = 0; i < f->n; i++)
    if (strlen(f->flags[i].name) == len &&
        memcmp(f->flags[i].name, name, len) == 0)
      return &f->flags[i];
  return NULL;
}

static int add(grace_flags *f, const char *name, kind k, void *value,
               const char *usage) {
  if (f == NULL || name == NULL || value == NULL || name[0] == '\0' ||
      name[0] == '-' || strchr(name, '=') != NULL)
    return GRACE_EINVAL;
  if (lookup(f, name, strlen(name)) != NULL)
    return GRACE_EBUSY;
  flag *flags = realloc(f->flags, (f->n + 1) * sizeof(*flags));
  if (flags == NULL)
    return GRACE_ENOMEM;
  f->flags = flags;
  flag *fl = &flags[f->n++];
  memset(fl, 0, sizeof(*fl));
  fl->name = name;
  fl->usage = usage ? usage : "";
  fl->kind = k;
  fl->value = value;
  switch (k) {
  case K_STRING: {
    const char *s = *(const char **)value;
    fl->def_is_zero = s == NULL || s[0] == '\0';
    snprintf(fl->def, sizeof(fl->def), "\"%s\"", s ? s : "");
    break;
  }
  case K_DURATION:
    fl->def_is_zero = *(grace_duration *)value == 0;
    grace_duration_format(*(grace_duration *)value, fl->def, sizeof(fl->def));
    break;
  case K_INT:
    fl->def_is_zero = *(int64_t *)value == 0;
    snprintf(fl->def, sizeof(fl->def), "%lld",
             (long long)*(int64_t *)value);
    break;
  case K_BOOL:
    fl->def_is_zero = !*(bool *)value;
    snprintf(fl->def, sizeof(fl->def), "true");
    break;
  }
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

static int set_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int set_err(char *err, size_t errlen, const char *fmt, ...) {
  if (err != NULL && errlen > 0) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
  }
  return GRACE_ESYNTAX;
}

/* strconv.ParseBool */
static int parse_bool(const char *s, bool *out) {
  static const char *const yes[] = {"1", "t", "T", "TRUE", "true", "True"};
  static const char *const no[] = {"0", "f", "F", "FALSE", "false", "False"};
  for (size_t i = 0; i < 6; i++) {
    if (strcmp(s, yes[i]) == 0) {
      *out = true;
      return 0;
    }
    if (strcmp(s, no[i]) == 0) {
      *out = false;
      return 0;
    }
  }
  return -1;
}

/* Sets |fl| from |s|; returns 0, or -1 (parse error), -2 (out of range). */
static int set_value(flag *fl, const char *s) {
  switch (fl->kind) {
  case K_STRING:
    *(const char **)fl->value = s;
    return 0;
  case K_DURATION: {
    grace_duration d;
    if (grace_duration_parse(s, &d, NULL, 0) != 0)
      return -1;
    *(grace_duration *)fl->value = d;
    return 0;
  }
  case K_INT: {
    char *end;
    if (s[0] == '\0')
      return -1;
    errno = 0;
    long long v = strtoll(s, &end, 0);
    if (*end != '\0')
      return -1;
    if (errno == ERANGE)
      return -2;
    *(int64_t *)fl->value = v;
    return 0;
  }
  case K_BOOL:
    return parse_bool(s, (bool *)fl->value);
  }
  return -1;
}

int grace_flags_parse(grace_flags *f, int argc, char **argv, char *err,
                      size_t errlen) {
  int i = 1;
  if (err != NULL && errlen > 0)
    err[0] = '\0';
  while (i < argc) {
    const char *arg = argv[i];
    if (arg[0] != '-' || arg[1] == '\0')
      break;
    const char *name = arg + 1;
    if (name[0] == '-') {
      name++;
      if (name[0] == '\0') { /* "--" ends the flags */
        i++;
        break;
      }
    }
    if (name[0] == '-' || name[0] == '=')
      return set_err(err, errlen, "bad flag syntax: %s", arg);
    i++;
    const char *eq = strchr(name, '=');
    size_t nlen = eq ? (size_t)(eq - name) : strlen(name);
    flag *fl = lookup(f, name, nlen);
    if (fl == NULL) {
      if ((nlen == 1 && name[0] == 'h') ||
          (nlen == 4 && memcmp(name, "help", 4) == 0))
        return GRACE_ENOENT;
      return set_err(err, errlen, "flag provided but not defined: -%.*s",
                     (int)nlen, name);
    }
    const char *value;
    if (eq != NULL) {
      value = eq + 1;
    } else if (fl->kind == K_BOOL) {
      value = "true";
    } else {
      if (i >= argc)
        return set_err(err, errlen, "flag needs an argument: -%s", name);
      value = argv[i++];
    }
    int rv = set_value(fl, value);
    if (rv != 0) {
      if (fl->kind == K_BOOL && eq != NULL)
        return set_err(err, errlen,
                       "invalid boolean value \"%s\" for -%s: parse error",
                       value, fl->name);
      return set_err(err, errlen, "invalid value \"%s\" for flag -%s: %s",
                     value, fl->name,
                     rv == -2 ? "value out of range" : "parse error");
    }
  }
  return i;
}

static int by_name(const void *a, const void *b) {
  return strcmp(((const flag *)a)->name, ((const flag *)b)->name);
}

void grace_flags_usage(const grace_flags *f, FILE *out) {
  flag *sorted = malloc((f->n ? f->n : 1) * sizeof(*sorted));
  if (sorted == NULL)
    return;
  memcpy(sorted, f->flags, f->n * sizeof(*sorted));
  qsort(sorted, f->n, sizeof(*sorted), by_name);
  fprintf(out, "Usage of %s:\n", f->prog);
  for (size_t i = 0; i < f->n; i++) {
    const flag *fl = &sorted[i];
    static const char *const types[] = {"string", "duration", "int", ""};
    const char *type = types[fl->kind];
    int len = fprintf(out, "  -%s%s%s", fl->name, type[0] ? " " : "", type);
    /* Go keeps a one-letter untyped flag's usage on the same line. */
    fputs(len <= 4 ? "\t" : "\n    \t", out);
    for (const char *u = fl->usage; *u; u++) {
      if (*u == '\n')
        fputs("\n    \t", out);
      else
        fputc(*u, out);
    }
    if (!fl->def_is_zero && fl->kind != K_BOOL)
      fprintf(out, " (default %s)", fl->def);
    else if (!fl->def_is_zero)
      fprintf(out, " (default true)");
    fputc('\n', out);
  }
  free(sorted);
}

int grace_flags_parse_or_exit(grace_flags *f, int argc, char **argv) {
  char err[512];
  int rv = grace_flags_parse(f, argc, argv, err, sizeof(err));
  if (rv >= 0)
    return rv;
  if (rv == GRACE_ESYNTAX)
    fprintf(stderr, "%s\n", err);
  grace_flags_usage(f, stderr);
  grace_flags_free(f);
  exit(rv == GRACE_ENOENT ? 0 : 2);
}
