/*
 * The signal context (see include/grace/signal.h), after Kubernetes'
 * SetupSignalContext:
 *
 *     shutdownHandler = make(chan os.Signal, 2)
 *     go func() {
 *         <-shutdownHandler
 *         cancel()
 *         <-shutdownHandler
 *         os.Exit(1) // second signal. Exit directly.
 *     }()
 *
 * There is no goroutine here: the handler counts the signals itself.  The
 * first one cancels the context, through the async-signal-safe path of
 * grace_ctx_cancel (its done descriptor is created before the handlers are
 * installed, so the cancellation only writes an eventfd); the second calls
 * _exit(1) at once, whatever the other threads are doing.
 *
 * The context is a static object (grace__ctx_static_cancel), never freed: a
 * signal can arrive at any moment until the process is gone.
 */
#include "grace/signal.h"
#include "core/context_int.h"

#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

_Static_assert(ATOMIC_INT_LOCK_FREE == 2, "atomic int must be lock-free");
_Static_assert(ATOMIC_POINTER_LOCK_FREE == 2,
               "atomic pointers must be lock-free");


/* Set once by the first grace_signal_context; the second one aborts. */
static atomic_flag setup_done = ATOMIC_FLAG_INIT;
/* The signal context once its handlers may run, NULL before. */
static grace_ctx *_Atomic signal_ctx;
/* Signals (and shutdown requests) received so far. */
static atomic_int received;

/* Both the handler and grace_request_shutdown.  Async-signal-safe. */
static void shutdown_event(grace_ctx *ctx) {
  if (atomic_fetch_add(&received, 1) == 0)
    grace_ctx_cancel(ctx);
  else
    _exit(1); /* second signal: exit directly */
}

static void on_signal(int signo) {
  int saved = errno;
  grace_ctx *ctx = atomic_load(&signal_ctx);

  (void)signo;
  if (ctx != NULL)
    shutdown_event(ctx);
  errno = saved;
}

/* Prints "grace: <what>[: <why>]" and aborts.  Setup time only. */
static void die(const char *what, int err) {
  if (err != 0)
    fprintf(stderr, "grace: %s: %s\n", what, grace_strerror(err));
  else
    fprintf(stderr, "grace: %s\n", what);
  abort();
}

int grace_ignore_sigpipe(void) {
  struct sigaction sa;

  memset(&sa, 0, sizeof(sa));
  sa.sa_handler = SIG_IGN;
  sigemptyset(&sa.sa_mask);
  return sigaction(SIGPIPE, &sa, NULL) < 0 ? -errno : 0;
}

grace_ctx *grace_signal_context(void) {
  static const int signals[] = {SIGINT, SIGTERM};
  struct sigaction sa;
  grace_ctx *ctx;
  size_t i;
  int rv;

  if (atomic_flag_test_and_set(&setup_done))
    die("grace_signal_context called twice", 0);
  ctx = grace__ctx_static_cancel();
  rv = grace_ctx_done_fd(ctx);
  if (rv < 0)
    die("grace_signal_context: cannot create the done descriptor", rv);
  rv = grace_ignore_sigpipe();
  if (rv < 0)
    die("grace_signal_context: cannot ignore SIGPIPE", rv);
  /* Published before the handlers exist, so they always find it. */
  atomic_store(&signal_ctx, ctx);

  memset(&sa, 0, sizeof(sa));
  sa.sa_handler = on_signal;
  sa.sa_flags = SA_RESTART;
  /* One handler at a time per thread; a second signal waits its turn. */
  sigemptyset(&sa.sa_mask);
  for (i = 0; i < sizeof(signals) / sizeof(signals[0]); i++)
    sigaddset(&sa.sa_mask, signals[i]);
  for (i = 0; i < sizeof(signals) / sizeof(signals[0]); i++) {
    if (sigaction(signals[i], &sa, NULL) < 0)
      die("grace_signal_context: cannot install the signal handlers", -errno);
  }
  return ctx;
}

bool grace_request_shutdown(void) {
  grace_ctx *ctx = atomic_load(&signal_ctx);

  if (ctx == NULL)
    return false;
  shutdown_event(ctx);
  return true;
}
