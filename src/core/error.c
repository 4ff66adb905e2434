/*
 * grace: error codes to text.
 *
 * Every string returned here is static and never written to, so both
 * functions are thread-safe: no shared buffer is filled in on each call, as
 * strerror(3) may do for unknown codes.
 */
#include <string.h>

#include "grace/error.h"

/* The codes of include/grace/error.h, with grace's own messages where they
 * differ from strerror(3).  A NULL message means "ask the C library". */
static const struct {
  int code;
  const char *name;
  const char *message;
} known_errors[] = {
    {GRACE_EINVAL, "GRACE_EINVAL", NULL},
    {GRACE_ENOMEM, "GRACE_ENOMEM", NULL},
    {GRACE_EBUSY, "GRACE_EBUSY", NULL},
    {GRACE_EADDRINUSE, "GRACE_EADDRINUSE", NULL},
    /* Go's context.Canceled and context.DeadlineExceeded. */
    {GRACE_ECANCELED, "GRACE_ECANCELED", "context canceled"},
    {GRACE_ETIMEDOUT, "GRACE_ETIMEDOUT", "context deadline exceeded"},
    {GRACE_EMFILE, "GRACE_EMFILE", NULL},
    {GRACE_ECONNRESET, "GRACE_ECONNRESET", NULL},
    {GRACE_EPIPE, "GRACE_EPIPE", NULL},
    {GRACE_ENOENT, "GRACE_ENOENT", NULL},
    {GRACE_EPROTO, "GRACE_EPROTO", NULL},
    {GRACE_ECHILD, "GRACE_ECHILD", "child process ended too early"},
    /* Go's strconv.ErrSyntax and strconv.ErrRange read the same way. */
    {GRACE_ESYNTAX, "GRACE_ESYNTAX", "invalid syntax"},
    {GRACE_ERANGE, "GRACE_ERANGE", "value out of range"},
    {GRACE_ECLOSED, "GRACE_ECLOSED", "server or handle closed"},
    {GRACE_ESHUTDOWN, "GRACE_ESHUTDOWN", "shutdown in progress"},
    {GRACE_ESTATE, "GRACE_ESTATE", "called in the wrong state"},
    {GRACE_EDEADLK, "GRACE_EDEADLK",
     "blocking call on the server's own loop thread"},
};

#define KNOWN_COUNT (sizeof(known_errors) / sizeof(known_errors[0]))

/* Returns the index of |err| in known_errors, or -1. */
static int find_known(int err) {
  size_t i;

  for (i = 0; i < KNOWN_COUNT; i++) {
    if (known_errors[i].code == err)
      return (int)i;
  }
  return -1;
}

/* strerrordesc_np(3) (glibc 2.32) returns the static text strerror(3) would
 * give, or NULL for a number glibc does not know.  Unlike strerror(3) it
 * never formats "Unknown error N" into a shared buffer. */
static const char *errno_text(int err) {
  const char *text;

  /* grace's own codes sit far below any errno; -err is safe to take here
   * because GRACE_ERR_BASE < err < 0 rules out INT_MIN. */
  if (err >= 0 || err <= GRACE_ERR_BASE)
    return NULL;
  text = strerrordesc_np(-err);
  return text;
}

const char *grace_strerror(int err) {
  const char *text;
  int i;

  if (err == 0)
    return "success";
  i = find_known(err);
  if (i >= 0 && known_errors[i].message != NULL)
    return known_errors[i].message;
  text = errno_text(err);
  return text != NULL ? text : "unknown error";
}

const char *grace_err_name(int err) {
  int i = find_known(err);

  return i >= 0 ? known_errors[i].name : "GRACE_EUNKNOWN";
}
