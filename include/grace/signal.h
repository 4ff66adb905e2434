/*
 * grace: the signal context, with Kubernetes' SetupSignalContext semantics.
 *
 * grace_signal_context installs handlers for SIGINT and SIGTERM.  The first
 * of these signals cancels the returned context; the second ends the process
 * at once with exit status 1, from inside the signal handler (_exit), so it
 * works even when every thread is stuck.  SIGPIPE is ignored, so a peer that
 * hangs up never kills the process.
 *
 * No thread is started: the handler itself counts the signals and cancels
 * the context through the async-signal-safe path of grace_ctx_cancel.  The
 * handlers are installed with SA_RESTART, so the first signal does not make
 * blocked system calls fail with EINTR (poll(2) and a few others fail
 * anyway, as always on Linux).  The exit at the second signal is _exit(1):
 * atexit handlers do not run and stdio buffers are not flushed.
 */
#ifndef GRACE_SIGNAL_H
#define GRACE_SIGNAL_H

#include <stdbool.h>

#include "grace/context.h"

#ifdef __cplusplus
extern "C" {
#endif

/*
 * Installs the SIGINT and SIGTERM handlers and returns the signal context,
 * a child of the background context cancelled (GRACE_ECANCELED) at the
 * first signal.  The context has static storage and lives until the process
 * exits; the caller does not own it (ref and unref on it do nothing, so it
 * may be the parent of other contexts).  Its done descriptor
 * (grace_ctx_done_fd) exists from the start.  SIGPIPE is ignored as by
 * grace_ignore_sigpipe.
 *
 * Calling it a second time is a programming error: it prints
 * "grace: grace_signal_context called twice" to standard error and aborts,
 * as Go panics on the second close of a channel.  If the handlers cannot be
 * installed it prints why and aborts as well.
 */
GRACE_EXTERN grace_ctx *grace_signal_context(void);

/*
 * Acts as if SIGTERM had been received: the first call (or first signal)
 * cancels the signal context, the next one exits the process with status 1
 * (_exit, as the handler does) and does not return, as in Kubernetes where
 * RequestShutdown feeds the same channel as the signals.  Returns true if
 * grace_signal_context was set up and was notified, false otherwise.  Never
 * blocks; safe from any thread and from signal handlers.
 */
GRACE_EXTERN bool grace_request_shutdown(void);

/*
 * Sets SIGPIPE to be ignored for the whole process (idempotent).  Servers
 * call it themselves; it is exposed for programs that write to sockets
 * without a grace server.  Returns 0 or a negative system error.
 */
GRACE_EXTERN int grace_ignore_sigpipe(void);

#ifdef __cplusplus
}
#endif

#endif /* GRACE_SIGNAL_H */
