/*
 * grace: error codes shared by every module.
 *
 * Every function of grace that can fail returns an int: 0 on success or one
 * of the negative GRACE_E* codes below.  Codes that mirror a system error are
 * the negated errno value, as in libuv, so a caller can compare against
 * -errno directly.
 */
#ifndef GRACE_ERROR_H
#define GRACE_ERROR_H

#include <errno.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define GRACE_EXTERN __attribute__((visibility("default")))
#else
#define GRACE_EXTERN
#endif

/* System errors, as negated errno values. */
#define GRACE_EINVAL (-EINVAL)         /* invalid argument */
#define GRACE_ENOMEM (-ENOMEM)         /* out of memory */
#define GRACE_EBUSY (-EBUSY)           /* busy: not now (a full queue: try again
                                          when told), or state forbids it */
#define GRACE_EADDRINUSE (-EADDRINUSE) /* address already in use */
#define GRACE_ECANCELED (-ECANCELED)   /* context canceled */
#define GRACE_ETIMEDOUT (-ETIMEDOUT)   /* context deadline exceeded */
#define GRACE_EMFILE (-EMFILE)         /* too many open files */
#define GRACE_ECONNRESET (-ECONNRESET) /* connection reset by peer */
#define GRACE_EPIPE (-EPIPE)           /* broken pipe */
#define GRACE_ENOENT (-ENOENT)         /* no such entry */
#define GRACE_EPROTO (-EPROTO)         /* the peer broke the protocol */
#define GRACE_ECHILD (-ECHILD)         /* a child process ended too early */

/* grace's own errors, below every errno value. */
#define GRACE_ERR_BASE (-10000)
#define GRACE_ESYNTAX (GRACE_ERR_BASE - 1)   /* malformed input text */
#define GRACE_ERANGE (GRACE_ERR_BASE - 2)    /* value out of range */
#define GRACE_ECLOSED (GRACE_ERR_BASE - 3)   /* server or handle closed */
#define GRACE_ESHUTDOWN (GRACE_ERR_BASE - 4) /* shutdown in progress */
#define GRACE_ESTATE (GRACE_ERR_BASE - 5)    /* called in the wrong state */
/* A blocking call made on the server's own loop thread, where waiting
 * would stop the very loop that has to finish the work (use the
 * non-blocking form of grace/uv.h there). */
#define GRACE_EDEADLK (GRACE_ERR_BASE - 6)

/*
 * Returns a static, human readable message for |err|.  GRACE_ECANCELED and
 * GRACE_ETIMEDOUT print as Go's context errors ("context canceled",
 * "context deadline exceeded"); other negated errno codes, named above or
 * not, print as strerror(3) does ("Invalid argument").  0 gives "success".
 * Never returns NULL; an unknown code, or a positive one, gives
 * "unknown error".  Thread-safe: the text is static and never rewritten.
 */
GRACE_EXTERN const char *grace_strerror(int err);

/*
 * Returns the symbolic name of |err| ("GRACE_ETIMEDOUT", "GRACE_EINVAL"...)
 * for each code defined above, or "GRACE_EUNKNOWN" for any other value
 * (0, and errno codes this header does not name, included).  Never returns
 * NULL; thread-safe.
 */
GRACE_EXTERN const char *grace_err_name(int err);

#ifdef __cplusplus
}
#endif

#endif /* GRACE_ERROR_H */
