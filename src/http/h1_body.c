/*
 * HTTP/1.1 body framing; see h1_body.h.
 */
#include "http/h1_body.h"
#include "http/token.h"

enum {
  S_SIZE,       /* chunk-size hex digits */
  S_SIZE_WS,    /* whitespace after the chunk-size */
  S_EXT,        /* chunk extension, up to CR */
  S_SIZE_LF,    /* LF after the chunk line's CR */
  S_DATA,       /* chunk data */
  S_DATA_CR,    /* CR after chunk data */
  S_DATA_LF,    /* LF after chunk data */
  S_TRAILER,    /* start of a trailer line (or the final CRLF) */
  S_TRAILER_IN, /* inside a trailer field line */
  S_TRAILER_LF, /* LF ending a trailer field line */
  S_END_LF,     /* LF of the final empty line */
  S_LENGTH      /* Content-Length body */
};

void grace__h1_body_init(grace__h1_body *b, int chunked, uint64_t length,
                         size_t max_trailer) {
  b->chunked = (uint8_t)(chunked != 0);
  b->state = chunked ? S_SIZE : S_LENGTH;
  b->done = !chunked && length == 0;
  b->digits = 0;
  b->remaining = chunked ? 0 : length;
  b->line = 0;
  b->trailer = 0;
  b->max_trailer = max_trailer;
  b->fields = 0;
  b->in_value = 0;
}

int grace__h1_body_next(grace__h1_body *b, const uint8_t *p, size_t n,
                        size_t *used, const uint8_t **data, size_t *len) {
  size_t i = 0;
  *data = NULL;
  *len = 0;
  if (b->done) {
    *used = 0;
    return GRACE__H1_BODY_DONE;
  }
  while (i < n) {
    uint8_t ch = p[i];
    switch (b->state) {
    case S_LENGTH: {
      size_t take = n - i;
      if ((uint64_t)take > b->remaining)
        take = (size_t)b->remaining;
      *data = p + i;
      *len = take;
      b->remaining -= take;
      *used = i + take;
      if (b->remaining == 0) {
        b->done = 1;
        return GRACE__H1_BODY_DONE;
      }
      return 0;
    }
    case S_SIZE: {
      int v = grace__hexval(ch);
      if (v >= 0) {
        /* 16 digits hold any size below 2^63; more cannot be real. */
        if (b->digits == 15 && b->remaining >> 59 != 0)
          return GRACE__H1_BODY_EBAD;
        if (b->digits == 16)
          return GRACE__H1_BODY_EBAD;
        b->remaining = b->remaining * 16 + (uint64_t)v;
        b->digits++;
        i++;
        break;
      }
      if (b->digits == 0)
        return GRACE__H1_BODY_EBAD;
      if (ch == ';') {
        b->state = S_EXT;
        b->line = 0;
        break; /* the same byte is read as extension */
      }
      if (ch == ' ' || ch == '\t') {
        b->state = S_SIZE_WS; /* BWS: then ';' or the line's end */
        b->line = 0;
        i++;
        break;
      }
      if (ch == '\r') {
        b->state = S_SIZE_LF;
        i++;
        break;
      }
      return GRACE__H1_BODY_EBAD;
    }
    case S_SIZE_WS:
      if (ch == ' ' || ch == '\t') {
        if (++b->line > GRACE__H1_MAX_CHUNK_EXT)
          return GRACE__H1_BODY_EBIG;
        i++;
      } else if (ch == ';') {
        b->state = S_EXT;
      } else if (ch == '\r') {
        b->state = S_SIZE_LF;
        i++;
      } else {
        return GRACE__H1_BODY_EBAD; /* "5 5" is no chunk size */
      }
      break;
    case S_EXT:
      if (ch == '\r') {
        b->state = S_SIZE_LF;
        i++;
        break;
      }
      /* Any visible byte, space or tab; never a bare LF or a control. */
      if ((ch < 0x20 && ch != '\t') || ch == 0x7f)
        return GRACE__H1_BODY_EBAD;
      if (++b->line > GRACE__H1_MAX_CHUNK_EXT)
        return GRACE__H1_BODY_EBIG;
      i++;
      break;
    case S_SIZE_LF:
      if (ch != '\n')
        return GRACE__H1_BODY_EBAD;
      i++;
      b->digits = 0;
      if (b->remaining == 0) {
        b->state = S_TRAILER;
        b->line = 0;
      } else {
        b->state = S_DATA;
      }
      break;
    case S_DATA: {
      size_t take = n - i;
      if ((uint64_t)take > b->remaining)
        take = (size_t)b->remaining;
      *data = p + i;
      *len = take;
      b->remaining -= take;
      if (b->remaining == 0)
        b->state = S_DATA_CR;
      *used = i + take;
      return 0;
    }
    case S_DATA_CR:
      /* RFC 9112 section 7.1: chunk data is followed by CRLF; anything
       * else would let the body's bytes be read as a request. */
      if (ch != '\r')
        return GRACE__H1_BODY_EBAD;
      b->state = S_DATA_LF;
      i++;
      break;
    case S_DATA_LF:
      if (ch != '\n')
        return GRACE__H1_BODY_EBAD;
      b->state = S_SIZE;
      i++;
      break;
    case S_TRAILER:
      if (ch == '\r') {
        b->state = S_END_LF;
        i++;
        break;
      }
      if (!grace__is_tchar(ch))
        return GRACE__H1_BODY_EBAD; /* no obs-fold, no empty name */
      if (++b->fields > GRACE__H1_MAX_TRAILER_FIELDS)
        return GRACE__H1_BODY_EBIG;
      b->state = S_TRAILER_IN;
      b->line = 0;
      b->in_value = 0;
      break;
    case S_TRAILER_IN:
      if (++b->trailer > b->max_trailer)
        return GRACE__H1_BODY_EBIG;
      if (ch == '\r') {
        if (!b->in_value)
          return GRACE__H1_BODY_EBAD; /* a line with no colon */
        b->state = S_TRAILER_LF;
        i++;
        break;
      }
      if ((ch < 0x20 && ch != '\t') || ch == 0x7f)
        return GRACE__H1_BODY_EBAD;
      if (!b->in_value) {
        /* The name: tchars only, then the colon (no whitespace before
         * it, RFC 9112 section 5.1). */
        if (ch == ':') {
          if (b->line == 0)
            return GRACE__H1_BODY_EBAD;
          b->in_value = 1;
        } else if (!grace__is_tchar(ch)) {
          return GRACE__H1_BODY_EBAD;
        } else {
          b->line++;
        }
      }
      i++;
      break;
    case S_TRAILER_LF:
      if (ch != '\n')
        return GRACE__H1_BODY_EBAD;
      b->state = S_TRAILER;
      b->in_value = 0;
      b->line = 0;
      i++;
      break;
    case S_END_LF:
      if (ch != '\n')
        return GRACE__H1_BODY_EBAD;
      i++;
      b->done = 1;
      *used = i;
      return GRACE__H1_BODY_DONE;
    default:
      return GRACE__H1_BODY_EBAD;
    }
  }
  *used = i;
  return 0;
}
