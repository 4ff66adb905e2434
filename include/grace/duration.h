/*
 * grace: durations, parsed and printed exactly like Go's time package.
 *
 * A duration is a signed count of nanoseconds in an int64_t, the same
 * representation as Go's time.Duration.
 */
#ifndef GRACE_DURATION_H
#define GRACE_DURATION_H

#include <stddef.h>
#include <stdint.h>

#include "grace/error.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef int64_t grace_duration;

#define GRACE_NANOSECOND ((grace_duration)1)
#define GRACE_MICROSECOND ((grace_duration)1000)
#define GRACE_MILLISECOND ((grace_duration)1000000)
#define GRACE_SECOND ((grace_duration)1000000000)
#define GRACE_MINUTE (60 * GRACE_SECOND)
#define GRACE_HOUR (60 * GRACE_MINUTE)

/* Room for any formatted duration, terminating NUL included. */
#define GRACE_DURATION_STRLEN 32

/*
 * Parses |s| like Go's time.ParseDuration: an optional sign, then a sequence
 * of decimal numbers, each with an optional fraction and a unit suffix
 * ("300ms", "-1.5h", "2h45m", ".5s").  Valid units are "ns", "us", "µs" (U+00B5
 * and U+03BC), "ms", "s", "m", "h".  "0" alone is valid.
 *
 * On success stores the duration in |*out| and returns 0.  On failure leaves
 * |*out| untouched, writes Go's exact error text into |errbuf| (truncated to
 * |errlen|, always NUL terminated when |errlen| > 0; |errbuf| may be NULL),
 * for example `time: invalid duration "abc"`, `time: missing unit in
 * duration "1"`, `time: unknown unit "x" in duration "1x"`, and returns:
 *
 * GRACE_EINVAL   |s| or |out| is NULL
 * GRACE_ESYNTAX  |s| is not a valid duration
 * GRACE_ERANGE   the value overflows int64 nanoseconds (Go reports this as
 *                `time: invalid duration "..."` too)
 */
GRACE_EXTERN int grace_duration_parse(const char *s, grace_duration *out,
                                      char *errbuf, size_t errlen);

/*
 * Formats |d| like Go's time.Duration.String(): "72h3m0.5s", "1.5s",
 * "300ms", "2µs", "1ns", "0s", "-1.5s".  Writes at most |len| bytes
 * including the terminating NUL into |buf| and returns the length the full
 * string has (snprintf semantics).  GRACE_DURATION_STRLEN always suffices.
 */
GRACE_EXTERN int grace_duration_format(grace_duration d, char *buf, size_t len);

#ifdef __cplusplus
}
#endif

#endif /* GRACE_DURATION_H */
