/*
 * grace: logging in Go's default log format.
 *
 * Each line is "YYYY/MM/DD hh:mm:ss message\n" in local time, the format of
 * Go's log.Println with the standard flags (LstdFlags).  A line is written
 * to standard error with a single write(2) of at most 4096 bytes (PIPE_BUF),
 * so lines from different threads, or from processes sharing a pipe, never
 * interleave.  No lock is taken, so logging is also safe in a child after
 * fork(2).  Local time follows TZ as last read by tzset(3).
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
 * added unless the message ends with one (as Go's log does), so an empty
 * message gives an empty line.  A line, the 20-byte timestamp and the
 * newline included, is at most 4096 bytes: a longer message is cut to 4075
 * bytes, never inside a UTF-8 character, and ends with a newline.  A NULL
 * |fmt| logs an empty message.
 *
 * The write is retried after EINTR and after a partial write; on a
 * non-blocking descriptor that stays full for a second, or on any other
 * write error, the line is dropped.  errno is preserved.  Thread-safe.
 */
GRACE_EXTERN void grace_log(const char *fmt, ...) GRACE_PRINTF(1, 2);

/* grace_log with a va_list. */
GRACE_EXTERN void grace_vlog(const char *fmt, va_list ap) GRACE_PRINTF(1, 0);

/* Logs like grace_log, then calls exit(1), like Go's log.Fatalf.  Unlike
 * Go's os.Exit, exit(3) runs atexit handlers and flushes stdio. */
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
