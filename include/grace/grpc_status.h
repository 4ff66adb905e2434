/*
 * grace: gRPC status codes, named and printed exactly as grpc-go does.
 *
 * A status code travels in the "grpc-status" trailer as a decimal number
 * (doc/PROTOCOL-HTTP2.md, "Responses").  The 17 codes of doc/statuscodes.md
 * have the values below; any other value can still arrive on the wire, so
 * the functions here take a uint32_t, as grpc-go's codes.Code is one.
 *
 * Every function in this header is pure: no allocation, no global state,
 * safe to call from any thread.
 */
#ifndef GRACE_GRPC_STATUS_H
#define GRACE_GRPC_STATUS_H

#include <stddef.h>
#include <stdint.h>

#include "grace/error.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The status codes of doc/statuscodes.md; the comments give grpc-go's
 * spelling, which is what grace_grpc_code_name() returns. */
typedef enum grace_grpc_code {
  GRACE_GRPC_OK = 0,                  /* OK */
  GRACE_GRPC_CANCELLED = 1,           /* Canceled */
  GRACE_GRPC_UNKNOWN = 2,             /* Unknown */
  GRACE_GRPC_INVALID_ARGUMENT = 3,    /* InvalidArgument */
  GRACE_GRPC_DEADLINE_EXCEEDED = 4,   /* DeadlineExceeded */
  GRACE_GRPC_NOT_FOUND = 5,           /* NotFound */
  GRACE_GRPC_ALREADY_EXISTS = 6,      /* AlreadyExists */
  GRACE_GRPC_PERMISSION_DENIED = 7,   /* PermissionDenied */
  GRACE_GRPC_RESOURCE_EXHAUSTED = 8,  /* ResourceExhausted */
  GRACE_GRPC_FAILED_PRECONDITION = 9, /* FailedPrecondition */
  GRACE_GRPC_ABORTED = 10,            /* Aborted */
  GRACE_GRPC_OUT_OF_RANGE = 11,       /* OutOfRange */
  GRACE_GRPC_UNIMPLEMENTED = 12,      /* Unimplemented */
  GRACE_GRPC_INTERNAL = 13,           /* Internal */
  GRACE_GRPC_UNAVAILABLE = 14,        /* Unavailable */
  GRACE_GRPC_DATA_LOSS = 15,          /* DataLoss */
  GRACE_GRPC_UNAUTHENTICATED = 16     /* Unauthenticated */
} grace_grpc_code;

/* One past the highest defined code. */
#define GRACE_GRPC_CODE_COUNT 17

/*
 * Returns |code| as grpc-go's codes.Code.String() spells it ("OK",
 * "Canceled", "InvalidArgument", "Unavailable"...), or NULL for a value
 * that is not one of the 17 codes (grpc-go prints those as "Code(17)";
 * grace_grpc_error_format() does the same).  The string is static.
 */
GRACE_EXTERN const char *grace_grpc_code_name(uint32_t code);

/*
 * Returns the canonical upper-case name of |code| from doc/statuscodes.md
 * ("OK", "CANCELLED", "INVALID_ARGUMENT", "UNAVAILABLE"...), the spelling
 * of gRPC's C core and of the JSON form, or NULL for an undefined value.
 * The string is static.
 */
GRACE_EXTERN const char *grace_grpc_code_canonical(uint32_t code);

/*
 * Formats the text of a grpc-go status error,
 *
 *   rpc error: code = Unavailable desc = connection refused
 *
 * from |code| and the |desc_len| bytes at |desc| (the decoded
 * grpc-message; copied, may contain any byte; NULL with |desc_len| 0 is an
 * empty description).  An undefined code prints as "Code(<n>)", as in
 * grpc-go.  Writes at most |len| bytes, terminating NUL included, into
 * |buf| (which may be NULL when |len| is 0) and, like snprintf, returns the
 * length the whole text has, NUL excluded.
 *
 * Returns that length, or one of the following negative error codes:
 *
 * GRACE_EINVAL   |desc| is NULL and |desc_len| is not 0, or |buf| is NULL
 *                and |len| is not 0
 * GRACE_ERANGE   the whole text would be longer than INT_MAX
 */
GRACE_EXTERN int grace_grpc_error_format(char *buf, size_t len, uint32_t code,
                                         const char *desc, size_t desc_len);

/*
 * Parses the value of a "grpc-status" trailer like grpc-go does
 * (strconv.ParseInt(v, 10, 32), then conversion to codes.Code): an optional
 * sign and one or more decimal digits that fit an int32.  A negative value
 * wraps to its uint32_t bit pattern, as in Go.  |value| is |len| bytes,
 * borrowed for the call and need not be NUL terminated.
 *
 * On success stores the code in |*code| and returns 0.  On failure leaves
 * |*code| untouched and returns one of the following negative error codes
 * (grpc-go then fails the call with INTERNAL, "transport: malformed
 * grpc-status"):
 *
 * GRACE_EINVAL   |value| or |code| is NULL
 * GRACE_ESYNTAX  |value| is not an optional sign followed by digits
 * GRACE_ERANGE   the number does not fit an int32
 */
GRACE_EXTERN int grace_grpc_status_parse(const char *value, size_t len,
                                         uint32_t *code);

/*
 * Returns the code a client synthesizes for a response whose HTTP
 * status is |http_status| and which carries no grpc-status
 * (doc/http-grpc-status-mapping.md, grpc-go's HTTPStatusConvTab):
 *
 *   400 INTERNAL, 401 UNAUTHENTICATED, 403 PERMISSION_DENIED,
 *   404 UNIMPLEMENTED, 429 502 503 504 UNAVAILABLE, anything else UNKNOWN.
 *
 * 200 is "anything else" here: a 200 response without grpc-status is
 * UNKNOWN too.
 */
GRACE_EXTERN grace_grpc_code grace_grpc_code_from_http_status(int http_status);

/*
 * Returns the code for a stream reset by RST_STREAM with the HTTP/2 error
 * code |h2_error| (RFC 9113 section 7), as grpc-go's http2ErrConvTab has it:
 * NO_ERROR, PROTOCOL_ERROR, INTERNAL_ERROR, SETTINGS_TIMEOUT,
 * STREAM_CLOSED, FRAME_SIZE_ERROR, COMPRESSION_ERROR, CONNECT_ERROR and
 * HTTP_1_1_REQUIRED give INTERNAL; FLOW_CONTROL_ERROR and
 * ENHANCE_YOUR_CALM give RESOURCE_EXHAUSTED; REFUSED_STREAM gives
 * UNAVAILABLE; CANCEL gives CANCELLED; INADEQUATE_SECURITY gives
 * PERMISSION_DENIED; an unknown error code gives UNKNOWN.  (grpc-go turns
 * CANCELLED into DEADLINE_EXCEEDED when the call's deadline has passed;
 * that check is the caller's, who knows the deadline.)
 */
GRACE_EXTERN grace_grpc_code grace_grpc_code_from_h2_error(uint32_t h2_error);

/*
 * Returns the code for a grace error |err| a handler returns: 0 gives OK,
 * GRACE_ECANCELED CANCELLED and GRACE_ETIMEDOUT DEADLINE_EXCEEDED (grpc-go's
 * status.FromContextError), GRACE_ENOMEM RESOURCE_EXHAUSTED (grace's own
 * choice; grpc-go has no such error), and any other value UNKNOWN (grpc-go's
 * status.Convert of an error that carries no status).
 */
GRACE_EXTERN grace_grpc_code grace_grpc_code_from_error(int err);

#ifdef __cplusplus
}
#endif

#endif /* GRACE_GRPC_STATUS_H */
