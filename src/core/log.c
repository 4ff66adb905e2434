/*
 * grace: logging in Go's default log format (log.LstdFlags).
 *
 * A line is built in a stack buffer and handed to write(2) once.  Lines are
 * capped at LINE_MAX_BYTES (PIPE_BUF on Linux), so a write to a pipe is
 * atomic and lines from different threads, or from a parent and a
 * forked child, never interleave.  No lock is taken: a lock could be held
 * by another thread at fork(2), and grace_log_fatal must work in a child.
 */
#include <limits.h>
#include <poll.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "grace/log.h"

/* A whole line, timestamp and newline included, is at most this long: the
 * POSIX PIPE_BUF of Linux, the largest write(2) to a pipe that is atomic. */
#define LINE_MAX_BYTES 4096
#ifdef PIPE_BUF
_Static_assert(LINE_MAX_BYTES <= PIPE_BUF, "a log line must fit one atomic pipe write");
#endif

/* "2024/08/22 09:24:46 " */
#define STAMP_LEN 20

/* How long a write to a full non-blocking descriptor may wait for room. */
#define EAGAIN_WAIT_MS 1000

static atomic_int log_fd = 2;

/* Writes |v| as exactly |width| decimal digits (zero padded, like Go's
 * itoa(buf, v, width)); |v| must fit. */
static void put_digits(char *p, int v, int width) {
  while (width-- > 0) {
    p[width] = (char)('0' + v % 10);
    v /= 10;
  }
}

/* Fills |p| with "YYYY/MM/DD hh:mm:ss " in local time; returns its length. */
static size_t format_stamp(char *p) {
  struct timespec ts;
  struct tm tm;
  time_t now;

  if (clock_gettime(CLOCK_REALTIME, &ts) != 0)
    ts.tv_sec = time(NULL);
  now = ts.tv_sec;
  if (localtime_r(&now, &tm) == NULL)
    memset(&tm, 0, sizeof(tm));
  /* Go pads the year to 4 digits but prints longer years whole; years
   * past 9999 or before 0 are beyond any clock this runs on, so clamp. */
  if (tm.tm_year + 1900 > 9999)
    tm.tm_year = 9999 - 1900;
  if (tm.tm_year + 1900 < 0)
    tm.tm_year = -1900;
  put_digits(p, tm.tm_year + 1900, 4);
  p[4] = '/';
  put_digits(p + 5, tm.tm_mon + 1, 2);
  p[7] = '/';
  put_digits(p + 8, tm.tm_mday, 2);
  p[10] = ' ';
  put_digits(p + 11, tm.tm_hour, 2);
  p[13] = ':';
  put_digits(p + 14, tm.tm_min, 2);
  p[16] = ':';
  put_digits(p + 17, tm.tm_sec, 2);
  p[19] = ' ';
  return STAMP_LEN;
}

/* Writes all |n| bytes, retrying on EINTR and after a partial write, and
 * waiting a bounded time for room on a non-blocking descriptor.  A log line
 * that cannot be written is dropped: there is nowhere to report it. */
static void write_all(int fd, const char *p, size_t n) {
  while (n > 0) {
    ssize_t r = write(fd, p, n);

    if (r > 0) {
      p += r;
      n -= (size_t)r;
    } else if (r < 0 && errno == EINTR) {
      continue;
    } else if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      struct pollfd pfd = {fd, POLLOUT, 0};

      if (poll(&pfd, 1, EAGAIN_WAIT_MS) <= 0)
        return;
    } else {
      return;
    }
  }
}

/* Returns the largest length <= |n| that does not end inside a UTF-8
 * sequence of |s|, so truncation never leaves half a character. */
static size_t utf8_boundary(const char *s, size_t n) {
  const unsigned char *p = (const unsigned char *)s;
  size_t i = n, lead;

  /* Step back over at most three continuation bytes to the lead byte. */
  while (i > 0 && n - i < 3 && (p[i - 1] & 0xC0) == 0x80)
    i--;
  if (i == 0 || (p[i - 1] & 0xC0) != 0xC0)
    return n; /* no multi-byte lead byte: nothing is cut */
  lead = p[i - 1];
  i--; /* the sequence starts at i */
  if ((lead >= 0xC0 && lead < 0xE0 && n - i >= 2) ||
      (lead >= 0xE0 && lead < 0xF0 && n - i >= 3) || (lead >= 0xF0 && n - i >= 4))
    return n; /* the sequence is complete */
  return i;
}

void grace_vlog(const char *fmt, va_list ap) {
  char line[LINE_MAX_BYTES + 1]; /* + 1 for vsnprintf's NUL */
  const size_t room = LINE_MAX_BYTES - STAMP_LEN - 1; /* - 1 for '\n' */
  size_t len = format_stamp(line), msg;
  int saved_errno = errno;
  int r;

  /* A NULL format logs an empty message rather than crashing. */
  r = fmt != NULL ? vsnprintf(line + len, room + 1, fmt, ap) : 0;
  if (r < 0) {
    static const char bad[] = "(grace_log: bad format)";

    memcpy(line + len, bad, sizeof(bad) - 1);
    msg = sizeof(bad) - 1;
  } else if ((size_t)r > room) {
    msg = utf8_boundary(line + len, room);
  } else {
    msg = (size_t)r;
  }
  len += msg;
  /* As Go's log.Output: add a newline unless the message ends with one. */
  if (msg == 0 || line[len - 1] != '\n')
    line[len++] = '\n';
  write_all(atomic_load(&log_fd), line, len);
  errno = saved_errno;
}

void grace_log(const char *fmt, ...) {
  va_list ap;

  va_start(ap, fmt);
  grace_vlog(fmt, ap);
  va_end(ap);
}

void grace_log_fatal(const char *fmt, ...) {
  va_list ap;

  va_start(ap, fmt);
  grace_vlog(fmt, ap);
  va_end(ap);
  exit(1);
}

int grace_log_set_fd(int fd) {
  return atomic_exchange(&log_fd, fd);
}
