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
 * |s| is a NUL-terminated string; no byte past its NUL is read.  Go's
 * arithmetic is kept exactly, quirks included: for example
 * "-9223372036854775808ns" is valid (INT64_MIN) while
 * "9223372036854775808ns" overflows, and fractions are scaled through a
 * double as Go does ("0.3333333333333333333h" is exactly 20m).
 *
 * On success stores the duration in |*out|, makes |errbuf| the empty string
 * (when |errbuf| is not NULL and |errlen| > 0) and returns 0.  On failure
 * leaves |*out| untouched, writes Go's exact error text into |errbuf|
 * (truncated to |errlen|, always NUL terminated when |errlen| > 0; |errbuf|
 * may be NULL), for example `time: invalid duration "abc"`, `time: missing
 * unit in duration "1"`, `time: unknown unit "x" in duration "1x"`, and
 * returns one of:
 *
 * GRACE_EINVAL   |s| or |out| is NULL; |errbuf| gets
 *                grace_strerror(GRACE_EINVAL), as Go has no text for this
 * GRACE_ESYNTAX  |s| is not a valid duration
 * GRACE_ERANGE   the value overflows int64 nanoseconds (Go reports this as
 *                `time: invalid duration "..."` too)
 *
 * Like Go, the error text quotes the input with every byte that is a
 * control character or not ASCII written as \xHH, and '"' and '\\'
 * escaped with a backslash.  Thread-safe.
 */
GRACE_EXTERN int grace_duration_parse(const char *s, grace_duration *out,
                                      char *errbuf, size_t errlen);

/*
 * Formats |d| like Go's time.Duration.String(): "72h3m0.5s", "1.5s",
 * "300ms", "2µs", "1ns", "0s", "-1.5s" (the micro sign is U+00B5, two
 * bytes in UTF-8).  Writes at most |len| bytes including the terminating
 * NUL into |buf| and returns the length the full string has, NUL excluded
 * (snprintf semantics); |buf| may be NULL when |len| is 0.
 * GRACE_DURATION_STRLEN always suffices: the longest result is
 * "-2562047h47m16.854775808s", 25 bytes.  Thread-safe.
 */
GRACE_EXTERN int grace_duration_format(grace_duration d, char *buf, size_t len);

#ifdef __cplusplus
}
#endif

#endif /* GRACE_DURATION_H */
