/*
 * Character classes of HTTP's grammar (RFC 9110 section 5.6), shared by
 * the parsers and by the checks on what handlers set.
 */
#ifndef GRACE_HTTP_TOKEN_H
#define GRACE_HTTP_TOKEN_H

#include <stdint.h>

/* The value of hex digit |ch|, or -1. */
static inline int grace__hexval(int ch) {
  if (ch >= '0' && ch <= '9')
    return ch - '0';
  if (ch >= 'a' && ch <= 'f')
    return ch - 'a' + 10;
  if (ch >= 'A' && ch <= 'F')
    return ch - 'A' + 10;
  return -1;
}

/* tchar of RFC 9110 section 5.6.2: what a token (a field name, a method)
 * is made of. */
static inline int grace__is_tchar(uint8_t ch) {
  if ((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'z') ||
      (ch >= 'A' && ch <= 'Z'))
    return 1;
  switch (ch) {
  case '!':
  case '#':
  case '$':
  case '%':
  case '&':
  case '\'':
  case '*':
  case '+':
  case '-':
  case '.':
  case '^':
  case '_':
  case '`':
  case '|':
  case '~':
    return 1;
  default:
    return 0;
  }
}

#endif /* GRACE_HTTP_TOKEN_H */
