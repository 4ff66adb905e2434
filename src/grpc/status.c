/*
 * grace: gRPC status codes, their names and the tables that map other
 * protocols' errors onto them.
 *
 * The names follow grpc-go (codes/code_string.go) because grace's programs
 * print errors the way the seed's Go programs do; the mappings follow
 * grpc-go's internal/transport/http_util.go.
 */
#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "grace/grpc_status.h"

static const struct {
  const char *go;
  const char *canonical;
} code_names[GRACE_GRPC_CODE_COUNT] = {
    {"OK", "OK"},
    {"Canceled", "CANCELLED"},
    {"Unknown", "UNKNOWN"},
    {"InvalidArgument", "INVALID_ARGUMENT"},
    {"DeadlineExceeded", "DEADLINE_EXCEEDED"},
    {"NotFound", "NOT_FOUND"},
    {"AlreadyExists", "ALREADY_EXISTS"},
    {"PermissionDenied", "PERMISSION_DENIED"},
    {"ResourceExhausted", "RESOURCE_EXHAUSTED"},
    {"FailedPrecondition", "FAILED_PRECONDITION"},
    {"Aborted", "ABORTED"},
    {"OutOfRange", "OUT_OF_RANGE"},
    {"Unimplemented", "UNIMPLEMENTED"},
    {"Internal", "INTERNAL"},
    {"Unavailable", "UNAVAILABLE"},
    {"DataLoss", "DATA_LOSS"},
    {"Unauthenticated", "UNAUTHENTICATED"},
};

const char *grace_grpc_code_name(uint32_t code) {
  return code < GRACE_GRPC_CODE_COUNT ? code_names[code].go : NULL;
}

const char *grace_grpc_code_canonical(uint32_t code) {
  return code < GRACE_GRPC_CODE_COUNT ? code_names[code].canonical : NULL;
}

/* Copies |n| bytes of |src| to |buf| + |*pos| as far as |len| - 1 allows
 * (one byte stays free for the NUL), and advances |*pos| by |n| in any case,
 * so that |*pos| ends as the length of the whole text. */
static void put(char *buf, size_t len, size_t *pos, const char *src, size_t n) {
  if (*pos + 1 < len) {
    size_t room = len - 1 - *pos;

    memcpy(buf + *pos, src, n < room ? n : room);
  }
  *pos += n;
}

int grace_grpc_error_format(char *buf, size_t len, uint32_t code,
                            const char *desc, size_t desc_len) {
  static const char head[] = "rpc error: code = ";
  static const char mid[] = " desc = ";
  char unknown[sizeof("Code(4294967295)")];
  const char *name = grace_grpc_code_name(code);
  size_t pos = 0;

  if ((desc == NULL && desc_len != 0) || (buf == NULL && len != 0))
    return GRACE_EINVAL;
  /* grpc-go prints an undefined code as "Code(17)"
   * (codes/code_string.go, the default case). */
  if (name == NULL) {
    snprintf(unknown, sizeof(unknown), "Code(%lu)", (unsigned long)code);
    name = unknown;
  }
  if (desc_len >
      (size_t)INT_MAX - (sizeof(head) + sizeof(mid) + sizeof(unknown)))
    return GRACE_ERANGE;
  put(buf, len, &pos, head, sizeof(head) - 1);
  put(buf, len, &pos, name, strlen(name));
  put(buf, len, &pos, mid, sizeof(mid) - 1);
  if (desc_len > 0)
    put(buf, len, &pos, desc, desc_len);
  if (len > 0)
    buf[pos < len ? pos : len - 1] = '\0';
  return (int)pos;
}

int grace_grpc_status_parse(const char *value, size_t len, uint32_t *code) {
  /* Magnitudes up to 2^31 are needed: -2147483648 is a valid int32. */
  const uint64_t limit_pos = (uint64_t)INT32_MAX;
  const uint64_t limit_neg = (uint64_t)INT32_MAX + 1;
  uint64_t n = 0;
  int negative = 0;
  size_t i = 0;

  if (value == NULL || code == NULL)
    return GRACE_EINVAL;
  /* strconv.ParseInt accepts one leading sign, then at least one digit;
   * base 10 allows no underscores. */
  if (len > 0 && (value[0] == '+' || value[0] == '-')) {
    negative = value[0] == '-';
    i = 1;
  }
  if (i == len)
    return GRACE_ESYNTAX;
  for (; i < len; i++) {
    if (value[i] < '0' || value[i] > '9')
      return GRACE_ESYNTAX;
    n = n * 10 + (uint64_t)(value[i] - '0');
    /* ParseInt(s, 10, 32) scans the digits with ParseUint(s, 10, 32),
     * which stops with a range error the moment the value passes
     * 2^32 - 1, before it looks at any later byte; then ParseInt checks
     * the int32 range.  Both checks are made here in the same order, so
     * "5000000000x" is a range error and "3000000000x" a syntax error, as
     * in Go. */
    if (n > UINT32_MAX)
      return GRACE_ERANGE;
  }
  if (n > (negative ? limit_neg : limit_pos))
    return GRACE_ERANGE;
  /* Go's codes.Code(int32(v)) keeps the bit pattern; so does this. */
  *code = negative ? (uint32_t)(0u - (uint32_t)n) : (uint32_t)n;
  return 0;
}

grace_grpc_code grace_grpc_code_from_http_status(int http_status) {
  switch (http_status) {
  case 400: /* Bad Request */
    return GRACE_GRPC_INTERNAL;
  case 401: /* Unauthorized */
    return GRACE_GRPC_UNAUTHENTICATED;
  case 403: /* Forbidden */
    return GRACE_GRPC_PERMISSION_DENIED;
  case 404: /* Not Found */
    return GRACE_GRPC_UNIMPLEMENTED;
  case 429: /* Too Many Requests */
  case 502: /* Bad Gateway */
  case 503: /* Service Unavailable */
  case 504: /* Gateway Timeout */
    return GRACE_GRPC_UNAVAILABLE;
  default:
    return GRACE_GRPC_UNKNOWN;
  }
}

grace_grpc_code grace_grpc_code_from_h2_error(uint32_t h2_error) {
  /* RFC 9113 section 7 error codes, in order, mapped as grpc-go's
   * http2ErrConvTab does.  grpc-go departs from doc/PROTOCOL-HTTP2.md in
   * one row: FLOW_CONTROL_ERROR is RESOURCE_EXHAUSTED there, INTERNAL in
   * the document; grace follows grpc-go. */
  static const grace_grpc_code table[] = {
      GRACE_GRPC_INTERNAL,           /* 0x0 NO_ERROR */
      GRACE_GRPC_INTERNAL,           /* 0x1 PROTOCOL_ERROR */
      GRACE_GRPC_INTERNAL,           /* 0x2 INTERNAL_ERROR */
      GRACE_GRPC_RESOURCE_EXHAUSTED, /* 0x3 FLOW_CONTROL_ERROR */
      GRACE_GRPC_INTERNAL,           /* 0x4 SETTINGS_TIMEOUT */
      GRACE_GRPC_INTERNAL,           /* 0x5 STREAM_CLOSED */
      GRACE_GRPC_INTERNAL,           /* 0x6 FRAME_SIZE_ERROR */
      GRACE_GRPC_UNAVAILABLE,        /* 0x7 REFUSED_STREAM */
      GRACE_GRPC_CANCELLED,          /* 0x8 CANCEL */
      GRACE_GRPC_INTERNAL,           /* 0x9 COMPRESSION_ERROR */
      GRACE_GRPC_INTERNAL,           /* 0xa CONNECT_ERROR */
      GRACE_GRPC_RESOURCE_EXHAUSTED, /* 0xb ENHANCE_YOUR_CALM */
      GRACE_GRPC_PERMISSION_DENIED,  /* 0xc INADEQUATE_SECURITY */
      GRACE_GRPC_INTERNAL,           /* 0xd HTTP_1_1_REQUIRED */
  };

  if (h2_error < sizeof(table) / sizeof(table[0]))
    return table[h2_error];
  return GRACE_GRPC_UNKNOWN;
}

grace_grpc_code grace_grpc_code_from_error(int err) {
  switch (err) {
  case 0:
    return GRACE_GRPC_OK;
  case GRACE_ECANCELED:
    return GRACE_GRPC_CANCELLED;
  case GRACE_ETIMEDOUT:
    return GRACE_GRPC_DEADLINE_EXCEEDED;
  case GRACE_ENOMEM:
    return GRACE_GRPC_RESOURCE_EXHAUSTED;
  default:
    return GRACE_GRPC_UNKNOWN;
  }
}
