/*
 * grace: cancellation contexts, the C analogue of Go's context.Context.
 *
 * A context is cancelled explicitly (grace_ctx_cancel), when its deadline
 * passes, or when its parent is done, whichever comes first.  Its error is
 * then GRACE_ECANCELED ("context canceled") or GRACE_ETIMEDOUT ("context
 * deadline exceeded"), and it never changes again.
 *
 * Contexts are passive: no thread runs behind them.  Whether a context is
 * done is computed when asked (grace_ctx_err), and grace_ctx_done_fd gives a
 * file descriptor the kernel makes readable at the moment the context is
 * done, for any event loop (epoll, poll, uv_poll_t) to wait on; this is the
 * analogue of `<-ctx.Done()`.
 *
 * Every function here is thread-safe.  grace_ctx_cancel and grace_ctx_err
 * are also async-signal-safe once the context's done descriptor exists (see
 * grace_ctx_done_fd), which is how the signal context is cancelled from a
 * signal handler.
 *
 * Ownership: the grace_ctx_with_* constructors return a new reference that
 * the caller must release with grace_ctx_unref.  A child holds a reference on
 * its parent, so a parent may be released before its children.  Releasing a
 * context does not cancel its children (Go's "defer cancel()" is
 * grace_ctx_cancel followed by grace_ctx_unref).
 */
#ifndef GRACE_CONTEXT_H
#define GRACE_CONTEXT_H

#include <stdbool.h>
#include <stdint.h>

#include "grace/duration.h"
#include "grace/error.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct grace_ctx grace_ctx;

/*
 * Returns the background context: never cancelled, no deadline, no
 * parent.  It is a static object; ref and unref on it do nothing.
 */
GRACE_EXTERN grace_ctx *grace_ctx_background(void);

/*
 * Creates a context that is done when grace_ctx_cancel is called on it or
 * when |parent| is done.  |parent| is referenced (not copied) until the new
 * context is freed.  Returns 0 and stores a new reference in |*out|, or:
 *
 * GRACE_EINVAL  |parent| or |out| is NULL
 * GRACE_ENOMEM  out of memory
 */
GRACE_EXTERN int grace_ctx_with_cancel(grace_ctx *parent, grace_ctx **out);

/*
 * Like grace_ctx_with_cancel, and also done (GRACE_ETIMEDOUT) once
 * |timeout| has elapsed from now on the monotonic clock.  A timeout <= 0
 * gives a context that is already done.  If the parent's deadline is
 * earlier, the parent's deadline is the effective one, as in Go.  A deadline
 * beyond the clock's range saturates at INT64_MAX.
 */
GRACE_EXTERN int grace_ctx_with_timeout(grace_ctx *parent,
                                        grace_duration timeout,
                                        grace_ctx **out);

/*
 * Like grace_ctx_with_timeout with an absolute |deadline| in nanoseconds of
 * the monotonic clock (see grace_now).  A deadline that has passed gives a
 * context that is already done.
 */
GRACE_EXTERN int grace_ctx_with_deadline(grace_ctx *parent, int64_t deadline,
                                         grace_ctx **out);

/* Takes one more reference on |ctx| and returns it.  NULL-safe. */
GRACE_EXTERN grace_ctx *grace_ctx_ref(grace_ctx *ctx);

/*
 * Releases one reference; the last one frees the context and closes its
 * done descriptor.  NULL-safe.
 */
GRACE_EXTERN void grace_ctx_unref(grace_ctx *ctx);

/*
 * Cancels |ctx| with GRACE_ECANCELED, or with GRACE_ETIMEDOUT if its
 * deadline has already passed.  Cancelling a done context does nothing.
 * Descendants see the cancellation through their parent.  The background
 * context cannot be cancelled (the call is ignored).
 */
GRACE_EXTERN void grace_ctx_cancel(grace_ctx *ctx);

/*
 * Returns 0 while |ctx| is not done, GRACE_ECANCELED after a cancellation
 * (its own or an ancestor's), GRACE_ETIMEDOUT after a deadline passed (its
 * own or an ancestor's), or GRACE_EINVAL if |ctx| is NULL.  grace_strerror
 * turns these into Go's texts.  When several causes have happened, the
 * earliest decides, whenever the question is first asked: an ancestor
 * cancelled before the deadline gives GRACE_ECANCELED even if it is asked
 * after the deadline.
 */
GRACE_EXTERN int grace_ctx_err(grace_ctx *ctx);

/*
 * Stores the effective deadline of |ctx| (the earliest of its own and its
 * ancestors') in |*deadline| and returns true, or returns false if it has
 * none.  |deadline| may be NULL.
 */
GRACE_EXTERN bool grace_ctx_deadline(grace_ctx *ctx, int64_t *deadline);

/*
 * Returns a file descriptor that becomes readable, and stays readable, once
 * |ctx| is done, for whatever reason (its own cancellation or deadline, or an
 * ancestor's), without any thread or further call; never read from it or
 * close it: it belongs to |ctx| and is closed when the last reference is
 * released, so stop watching it (epoll_ctl DEL, uv_poll_stop) before that.
 * It is an epoll instance (it may itself be added to an epoll set); the
 * same descriptor is returned by every call.  The descriptor is created on
 * the first call, with one eventfd for |ctx| and for each ancestor that
 * lacks one, and a timerfd if a deadline applies.  A failed call leaks
 * nothing (an eventfd it made stays with its context until that is freed)
 * and a later call may succeed.  Returns a negative error code on failure
 * (GRACE_EMFILE, or another negated errno such as -ENFILE or GRACE_ENOMEM;
 * GRACE_EINVAL for NULL).  The background context returns an empty epoll
 * instance, created once and kept open for the life of the process, that
 * never becomes readable.
 */
GRACE_EXTERN int grace_ctx_done_fd(grace_ctx *ctx);

/*
 * Blocks the calling thread until |ctx| is done or |timeout| elapses; a
 * negative |timeout| waits forever, a zero one only checks.  It never
 * returns 0 before |timeout| has elapsed, and it resumes waiting for the
 * time left when a signal interrupts it.  Returns the context's error
 * (GRACE_ECANCELED or GRACE_ETIMEDOUT) if it is done, 0 if the wait timed
 * out first, GRACE_EINVAL if |ctx| is NULL, or a negative system error if
 * the done descriptor cannot be created or the wait itself failed.
 */
GRACE_EXTERN int grace_ctx_wait(grace_ctx *ctx, grace_duration timeout);

/* Returns the monotonic clock in nanoseconds (CLOCK_MONOTONIC). */
GRACE_EXTERN int64_t grace_now(void);

#ifdef __cplusplus
}
#endif

#endif /* GRACE_CONTEXT_H */
