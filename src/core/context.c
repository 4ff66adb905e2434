/*
 * Cancellation contexts (see include/grace/context.h).
 *
 * A context is passive: nothing runs behind it.  Its state is one atomic
 * word that says whether it is done, why, and since when.  grace_ctx_err
 * computes the answer when asked (a passed deadline or a done ancestor
 * settles the word on the spot), and the kernel does the waiting: the done
 * descriptor is an epoll instance whose members become readable exactly
 * when the context is done.
 *
 * The done descriptor is flat, not nested.  It holds
 *
 *   - the context's own eventfd, written when the context is cancelled and
 *     never read, so it stays readable;
 *   - the eventfd of every ancestor below background, for a cancellation
 *     that reaches it from above;
 *   - a timerfd armed at the effective deadline (the earliest of its own and
 *     its ancestors'), for any deadline in the chain.
 *
 * Putting the parent's epoll descriptor inside the child's would be shorter,
 * but Linux refuses epoll instances nested more than five deep (ELOOP), and
 * the caller's own event loop is one more level: a chain of four contexts
 * would fail under libuv.  The flat set costs one epoll_ctl per ancestor,
 * once, and stays one level deep whatever the tree.
 *
 * Lifetime: the descriptor of a child refers to the eventfds of its
 * ancestors, and the child holds a reference on its parent, so every
 * ancestor, and every eventfd in the set, outlives the child's descriptor.
 */
#include "grace/context.h"
#include "core/clock_int.h"
#include "core/context_int.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>

#include <poll.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/timerfd.h>
#include <unistd.h>

/*
 * grace_ctx_cancel and grace_ctx_err run inside signal handlers; they touch
 * only these atomics, so the atomics must not be emulated with a lock.
 */
_Static_assert(ATOMIC_INT_LOCK_FREE == 2, "atomic int must be lock-free");
_Static_assert(ATOMIC_LLONG_LOCK_FREE == 2, "atomic llong must be lock-free");

/*
 * The state word: 0 while the context is not done, else
 * (when << STATE_SHIFT) | kind, where |when| is the monotonic time in
 * nanoseconds at which the context became done (the moment of the
 * cancellation, or the deadline itself) and |kind| says why.  One word, so
 * that the error and its time are set together by a single CAS.
 */
#define STATE_SHIFT 2
#define KIND_CANCELED 1
#define KIND_TIMEDOUT 2
#define WHEN_MAX (LLONG_MAX >> STATE_SHIFT)

struct grace_ctx {
  atomic_int refs;
  atomic_llong state;
  /* Own eventfd, -1 until created; published by CAS, closed at free. */
  atomic_int event_fd;
  /* The epoll descriptor, -1 until created under |lock|. */
  atomic_int done_fd;
  /* The timerfd in the epoll set, or -1; written under |lock|. */
  int timer_fd;
  /* Background and the static signal context are never freed. */
  bool immortal;
  /*
   * The effective deadline: the earliest of its own and its ancestors'.
   * The own deadline alone is never needed once this is known.
   */
  bool has_eff;
  int64_t eff_deadline;
  /* A reference, NULL only for background. */
  grace_ctx *parent;
  pthread_mutex_t lock;
};

#define STATIC_CTX(parent_)                                                    \
  {                                                                            \
    .refs = 1, .state = 0, .event_fd = -1, .done_fd = -1, .timer_fd = -1,      \
    .immortal = true, .parent = (parent_), .lock = PTHREAD_MUTEX_INITIALIZER,  \
  }

/* Never done; its done descriptor is an empty epoll instance. */
static grace_ctx background = STATIC_CTX(NULL);
/* The signal context: reachable from a signal handler at any moment, so it
 * is never freed, and static so that nothing of it is left on the heap. */
static grace_ctx static_cancel = STATIC_CTX(&background);

grace_ctx *grace__ctx_static_cancel(void) { return &static_cancel; }

int64_t grace_now(void) {
  struct timespec ts;

  /* CLOCK_MONOTONIC cannot fail on Linux; it is async-signal-safe. */
  (void)clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static long long make_state(int kind, int64_t when) {
  if (when < 0)
    when = 0;
  if (when > WHEN_MAX)
    when = WHEN_MAX;
  return ((long long)when << STATE_SHIFT) | kind;
}

static int state_err(long long state) {
  if (state == 0)
    return 0;
  return (state & ((1 << STATE_SHIFT) - 1)) == KIND_TIMEDOUT ? GRACE_ETIMEDOUT
                                                             : GRACE_ECANCELED;
}

static int64_t state_when(long long state) { return state >> STATE_SHIFT; }

/* Makes the eventfd readable, if it exists.  Async-signal-safe. */
static void notify(grace_ctx *ctx) {
  int fd = atomic_load(&ctx->event_fd);
  int saved = errno;
  uint64_t one = 1;

  /*
   * EAGAIN would need 2^64 - 2 writes; anything else means the counter is
   * already non-zero or the descriptor is gone, and nothing can be done
   * about it here.
   */
  if (fd >= 0) {
    while (write(fd, &one, sizeof(one)) < 0 && errno == EINTR) {
    }
  }
  errno = saved;
}

/*
 * Moves |ctx| from not done to |state| unless another caller got there first,
 * and returns the error that stuck.  The winner writes the eventfd.
 *
 * Memory order: seq_cst on the CAS here and on the eventfd's publication
 * (ensure_event_fd) is what makes "the CAS, then load event_fd" against
 * "store event_fd, then load the state" miss neither side: at least one of
 * the two sees the other's store, so the eventfd is always written.
 */
static int settle(grace_ctx *ctx, long long state) {
  long long expected = 0;

  if (atomic_compare_exchange_strong(&ctx->state, &expected, state)) {
    notify(ctx);
    return state_err(state);
  }
  return state_err(expected);
}

/*
 * The error of |ctx| at time |now| (only read when a deadline applies).
 * When several causes apply, the earliest wins, as in Go where the first
 * one cancels the context: the nearest done ancestor (an ancestor's state
 * can only be earlier than its descendants') against the effective deadline.
 * Async-signal-safe.
 */
static int ctx_err_at(grace_ctx *ctx, int64_t now) {
  long long own = atomic_load(&ctx->state);
  long long up = 0;
  grace_ctx *a;

  if (own != 0 || ctx->parent == NULL)
    return state_err(own);
  for (a = ctx->parent; a->parent != NULL && up == 0; a = a->parent)
    up = atomic_load(&a->state);
  if (ctx->has_eff && ctx->eff_deadline <= now &&
      (up == 0 || ctx->eff_deadline < state_when(up)))
    return settle(ctx, make_state(KIND_TIMEDOUT, ctx->eff_deadline));
  if (up != 0)
    return settle(ctx, up);
  return 0;
}

int grace_ctx_err(grace_ctx *ctx) {
  if (ctx == NULL)
    return GRACE_EINVAL;
  return ctx_err_at(ctx, ctx->has_eff ? grace_now() : 0);
}

void grace_ctx_cancel(grace_ctx *ctx) {
  int64_t now;

  if (ctx == NULL || ctx->parent == NULL)
    return;
  now = grace_now();
  /* Already done (or its deadline passed at |now|): nothing changes. */
  if (ctx_err_at(ctx, now) != 0)
    return;
  settle(ctx, make_state(KIND_CANCELED, now));
}

void grace__ctx_expire(grace_ctx *ctx) {
  int64_t now;

  if (ctx == NULL || ctx->parent == NULL)
    return;
  now = grace_now();
  if (ctx_err_at(ctx, now) != 0)
    return;
  settle(ctx, make_state(KIND_TIMEDOUT, now));
}

grace_ctx *grace_ctx_background(void) { return &background; }

grace_ctx *grace_ctx_ref(grace_ctx *ctx) {
  if (ctx != NULL && !ctx->immortal)
    atomic_fetch_add_explicit(&ctx->refs, 1, memory_order_relaxed);
  return ctx;
}

static void close_fd(int fd) {
  if (fd >= 0)
    (void)close(fd);
}

void grace_ctx_unref(grace_ctx *ctx) {
  /* A loop, not recursion: dropping a long chain's last leaf frees it all. */
  while (ctx != NULL && !ctx->immortal &&
         atomic_fetch_sub_explicit(&ctx->refs, 1, memory_order_acq_rel) == 1) {
    grace_ctx *parent = ctx->parent;

    close_fd(atomic_load(&ctx->done_fd));
    close_fd(ctx->timer_fd);
    close_fd(atomic_load(&ctx->event_fd));
    pthread_mutex_destroy(&ctx->lock);
    free(ctx);
    ctx = parent;
  }
}

static int ctx_new(grace_ctx *parent, bool has_deadline, int64_t deadline,
                   grace_ctx **out) {
  grace_ctx *ctx;
  int rv;

  if (parent == NULL || out == NULL)
    return GRACE_EINVAL;
  ctx = calloc(1, sizeof(*ctx));
  if (ctx == NULL)
    return GRACE_ENOMEM;
  rv = pthread_mutex_init(&ctx->lock, NULL);
  if (rv != 0) {
    free(ctx);
    return -rv;
  }
  atomic_init(&ctx->refs, 1);
  atomic_init(&ctx->state, 0);
  atomic_init(&ctx->event_fd, -1);
  atomic_init(&ctx->done_fd, -1);
  ctx->timer_fd = -1;
  ctx->immortal = false;
  ctx->has_eff = has_deadline || parent->has_eff;
  if (!has_deadline || (parent->has_eff && parent->eff_deadline < deadline))
    ctx->eff_deadline = parent->eff_deadline;
  else
    ctx->eff_deadline = deadline;
  ctx->parent = grace_ctx_ref(parent);
  *out = ctx;
  return 0;
}

int grace_ctx_with_cancel(grace_ctx *parent, grace_ctx **out) {
  return ctx_new(parent, false, 0, out);
}

int grace_ctx_with_deadline(grace_ctx *parent, int64_t deadline,
                            grace_ctx **out) {
  return ctx_new(parent, true, deadline, out);
}

int grace_ctx_with_timeout(grace_ctx *parent, grace_duration timeout,
                           grace_ctx **out) {
  int64_t now = grace_now();
  int64_t deadline;

  /* Saturate: a timeout of centuries is a deadline of centuries. */
  if (timeout > 0 && now > INT64_MAX - timeout)
    deadline = INT64_MAX;
  else
    deadline = now + timeout;
  return grace_ctx_with_deadline(parent, deadline, out);
}

bool grace_ctx_deadline(grace_ctx *ctx, int64_t *deadline) {
  if (ctx == NULL || !ctx->has_eff)
    return false;
  if (deadline != NULL)
    *deadline = ctx->eff_deadline;
  return true;
}

/*
 * Creates the eventfd of |ctx| if it has none, lock-free (the loser of a
 * race closes its own), then writes it if |ctx| is already done, so that a
 * cancellation that came before the eventfd existed is not lost.  Returns
 * the eventfd or a negative error.
 */
static int ensure_event_fd(grace_ctx *ctx) {
  int expected = -1;
  int fd = atomic_load(&ctx->event_fd);

  if (fd >= 0)
    return fd;
  fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (fd < 0)
    return -errno;
  if (!atomic_compare_exchange_strong(&ctx->event_fd, &expected, fd)) {
    (void)close(fd);
    return expected;
  }
  if (grace_ctx_err(ctx) != 0)
    notify(ctx);
  return fd;
}

static int epoll_add(int ep, int fd) {
  struct epoll_event ev = {.events = EPOLLIN, .data = {.fd = fd}};

  return epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0 ? -errno : 0;
}

/*
 * Builds the done descriptor of |ctx| (see the top of this file).  Called
 * with |ctx->lock| held.  On failure nothing is published and every
 * descriptor made here is closed; eventfds already published (the
 * context's own, its ancestors') stay, each complete and owned by its
 * context.
 */
static int build_done_fd(grace_ctx *ctx) {
  struct itimerspec its = {{0, 0}, {0, 0}};
  int tfd = -1;
  int ep;
  int rv;
  grace_ctx *a;

  ep = epoll_create1(EPOLL_CLOEXEC);
  if (ep < 0)
    return -errno;
  /* Background has no parent and no eventfd: its set stays empty. */
  for (a = ctx; a->parent != NULL; a = a->parent) {
    rv = ensure_event_fd(a);
    if (rv < 0)
      goto fail;
    rv = epoll_add(ep, rv);
    if (rv < 0)
      goto fail;
  }
  if (ctx->has_eff) {
    tfd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
    if (tfd < 0) {
      rv = -errno;
      goto fail;
    }
    /* A zero it_value would disarm the timer: a past deadline is 1 ns. */
    if (ctx->eff_deadline > 0) {
      its.it_value.tv_sec = (time_t)(ctx->eff_deadline / 1000000000);
      its.it_value.tv_nsec = (long)(ctx->eff_deadline % 1000000000);
    } else {
      its.it_value.tv_nsec = 1;
    }
    if (timerfd_settime(tfd, TFD_TIMER_ABSTIME, &its, NULL) < 0) {
      rv = -errno;
      goto fail;
    }
    rv = epoll_add(ep, tfd);
    if (rv < 0)
      goto fail;
  }
  ctx->timer_fd = tfd;
  atomic_store(&ctx->done_fd, ep);
  return ep;

fail:
  close_fd(tfd);
  (void)close(ep);
  return rv;
}

int grace_ctx_done_fd(grace_ctx *ctx) {
  int fd;

  if (ctx == NULL)
    return GRACE_EINVAL;
  fd = atomic_load(&ctx->done_fd);
  if (fd >= 0)
    return fd;
  pthread_mutex_lock(&ctx->lock);
  fd = atomic_load(&ctx->done_fd);
  if (fd < 0)
    fd = build_done_fd(ctx);
  pthread_mutex_unlock(&ctx->lock);
  return fd;
}

int grace_ctx_wait(grace_ctx *ctx, grace_duration timeout) {
  struct pollfd pfd;
  int64_t end = 0;
  int64_t left;
  int ms;
  int rv;

  if (ctx == NULL)
    return GRACE_EINVAL;
  rv = grace_ctx_err(ctx);
  if (rv != 0 || timeout == 0)
    return rv;
  pfd.fd = grace_ctx_done_fd(ctx);
  if (pfd.fd < 0)
    return pfd.fd;
  pfd.events = POLLIN;
  if (timeout > 0) {
    end = grace_now();
    end = end > INT64_MAX - timeout ? INT64_MAX : end + timeout;
  }
  for (;;) {
    ms = -1;
    if (timeout > 0) {
      left = end - grace_now();
      if (left <= 0)
        break;
      /* Round up: a wait must never end before its timeout. */
      left = (left + 999999) / 1000000;
      ms = left > INT_MAX ? INT_MAX : (int)left;
    }
    rv = poll(&pfd, 1, ms);
    if (rv > 0)
      break;
    if (rv < 0 && errno != EINTR)
      return -errno;
    /* Timed out, or interrupted: recompute what is left. */
  }
  return grace_ctx_err(ctx);
}
