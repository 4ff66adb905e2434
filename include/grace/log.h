/*
 * grace: logging in Go's default log format.
 *
 * Each line is "YYYY/MM/DD hh:mm:ss message\n" in local time, the format of
 * Go's log.Println with the standard flags (LstdFlags).  A line is written
 * to standard error with a single write(2), so lines from different threads
 * never interleave.
 */
#ifndef GRACE_LOG_H
#define GRACE_LOG_H

#include <stdarg.h>

#include "grace/error.h"

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define GRACE_PRINTF(f, a) __attribute__((format(printf, f, a)))
#define GRACE_NORETURN __attribute__((noreturn))
#else
#define GRACE_PRINTF(f, a)
#define GRACE_NORETURN
#endif

/*
 * Logs one line: the timestamp, then the formatted message; a newline is
 * added unless the message ends with one (as Go's log does).  Messages
 * longer than 4 KiB are truncated.  Thread-safe.
 */
GRACE_EXTERN void grace_log(const char *fmt, ...) GRACE_PRINTF(1, 2);

/* grace_log with a va_list. */
GRACE_EXTERN void grace_vlog(const char *fmt, va_list ap) GRACE_PRINTF(1, 0);

/* Logs like grace_log, then exits with status 1, like Go's log.Fatalf. */
GRACE_EXTERN void grace_log_fatal(const char *fmt, ...) GRACE_PRINTF(1, 2)
    GRACE_NORETURN;

/*
 * Redirects log output to |fd| (standard error, 2, by default).  Returns
 * the previous descriptor.  Meant for tests; not synchronised with
 * concurrent logging.
 */
GRACE_EXTERN int grace_log_set_fd(int fd);

#ifdef __cplusplus
}
#endif

#endif /* GRACE_LOG_H */
