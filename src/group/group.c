/*
 * The lifecycle group: parts and hooks, and the four shutdown phases under
 * one deadline (see include/grace/group.h for the contract).
 *
 * Everything the group's thread waits for is a descriptor: the stop
 * context's, the deadline context's (a timerfd behind an epoll, so the
 * deadline costs no thread), the eventfd that grace_group_part_done and
 * grace_group_hook_done write, and the done descriptors parts may name.
 * ppoll(2) sleeps on them with a timeout only for the shutdown delay and
 * the next systemd EXTEND_TIMEOUT_USEC, so a drain that ends early ends its
 * phase at once.
 */
#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "group/group_int.h"
#include "group/systemd_int.h"
#include "grace/systemd.h"

const char *grace_group_phase_name(grace_group_phase phase) {
  switch (phase) {
  case GRACE_GROUP_SERVING:
    return "serving";
  case GRACE_GROUP_NOT_READY:
    return "not_ready";
  case GRACE_GROUP_DELAY:
    return "delay";
  case GRACE_GROUP_DRAIN:
    return "drain";
  case GRACE_GROUP_FORCE:
    return "force";
  }
  return "";
}

void grace__group_log(grace_group *g, const char *fmt, ...) {
  va_list ap;
  if (g->opts.quiet)
    return;
  va_start(ap, fmt);
  grace_vlog(fmt, ap);
  va_end(ap);
}

/* Go's Duration.String() of |d|, in |buf|. */
static const char *dur(char *buf, grace_duration d) {
  grace_duration_format(d, buf, GRACE_DURATION_STRLEN);
  return buf;
}

static void wake(grace_group *g) {
  uint64_t one = 1;
  ssize_t rv;
  do
    rv = write(g->wake_fd, &one, sizeof(one));
  while (rv < 0 && errno == EINTR);
  /* EAGAIN means the counter is already non-zero: the group will wake. */
}

static void set_phase(grace_group *g, grace_group_phase phase) {
  atomic_store(&g->phase, (int)phase);
}

int64_t grace__group_now(grace_group *g) {
  return g->clock.now != NULL ? g->clock.now(g->clock.data) : grace_now();
}

void grace__group_set_clock(grace_group *g, const grace__clock *clock) {
  g->clock = *clock;
}

void grace__group_wake(grace_group *g) { wake(g); }

void grace__group_handover(grace_group *g, int pid, grace_duration spread) {
  atomic_store(&g->handover_spread, spread);
  atomic_store(&g->handover_pid, pid);
}

void grace__group_ready_at_start(grace_group *g) { g->ready_at_start = true; }

grace_group *grace__part_group(grace_group_part *part) { return part->g; }

void grace__part_begin_first(grace_group_part *part) {
  part->begin_first = true;
}

grace_duration grace__group_handover_spread(grace_group *g) {
  return atomic_load(&g->handover_pid) != 0 ? atomic_load(&g->handover_spread)
                                            : 0;
}

/* The overall deadline, |timeout| from now on the group's clock. */
static int new_deadline(grace_group *g, grace_duration timeout,
                        grace_ctx **out) {
  if (g->clock.with_timeout != NULL)
    return g->clock.with_timeout(g->clock.data, grace_ctx_background(), timeout,
                                 out);
  return grace_ctx_with_timeout(grace_ctx_background(), timeout, out);
}

/* ---- construction --------------------------------------------------------- */

void grace_group_options_init(grace_group_options *opts) {
  memset(opts, 0, sizeof(*opts));
  opts->size = sizeof(*opts);
}

int grace_group_new(const grace_group_options *opts, grace_group **out) {
  grace_group_options o;
  grace_duration timeout;
  int rv;

  if (out == NULL)
    return GRACE_EINVAL;
  grace_group_options_init(&o);
  if (opts != NULL) {
    if (opts->size > sizeof(o) || opts->size < sizeof(size_t))
      return GRACE_EINVAL;
    /* A caller built against a shorter struct gets defaults for the rest. */
    memcpy(&o, opts, opts->size);
    o.size = sizeof(o);
  }
  if (o.shutdown_delay < 0 || o.shutdown_timeout < 0 || o.notify_interval < 0)
    return GRACE_EINVAL;
  if (o.notify_interval == 0)
    o.notify_interval = GRACE_GROUP_DEFAULT_NOTIFY_INTERVAL;
  timeout = o.shutdown_timeout;
  if (timeout == 0) {
    rv = grace_group_env_timeout(&timeout, NULL, 0);
    if (rv == GRACE_ENOENT)
      timeout = GRACE_GROUP_DEFAULT_TIMEOUT;
    else if (rv != 0)
      return rv;
  }

  grace_group *g = calloc(1, sizeof(*g));
  if (g == NULL)
    return GRACE_ENOMEM;
  g->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (g->wake_fd < 0) {
    rv = -errno;
    free(g);
    return rv;
  }
  if ((rv = pthread_mutex_init(&g->lock, NULL)) != 0) {
    close(g->wake_fd);
    free(g);
    return -rv;
  }
  g->opts = o;
  g->timeout = timeout;
  g->parts_tail = &g->parts;
  g->hooks_tail = &g->hooks;
  atomic_init(&g->ready, false);
  atomic_init(&g->phase, GRACE_GROUP_SERVING);
  *out = g;
  return 0;
}

void grace_group_free(grace_group *g) {
  if (g == NULL)
    return;
  for (grace_group_part *p = g->parts, *next; p != NULL; p = next) {
    next = p->next;
    free(p->name);
    free(p);
  }
  for (grace_group_hook *h = g->hooks, *next; h != NULL; h = next) {
    next = h->next;
    free(h->name);
    free(h);
  }
  grace_ctx_unref(g->deadline);
  close(g->wake_fd);
  pthread_mutex_destroy(&g->lock);
  free(g);
}

grace_duration grace_group_timeout(grace_group *g) { return g->timeout; }

bool grace_group_ready(grace_group *g) { return atomic_load(&g->ready); }

grace_group_phase grace_group_phase_now(grace_group *g) {
  return (grace_group_phase)atomic_load(&g->phase);
}

/* ---- parts ---------------------------------------------------------------- */

int grace_group_add(grace_group *g, const char *name,
                    const grace_group_part_ops *ops, void *data,
                    grace_group_part **out) {
  if (g == NULL || name == NULL || name[0] == '\0' || ops == NULL ||
      ops->begin == NULL || ops->force == NULL)
    return GRACE_EINVAL;
  grace_group_part *p = calloc(1, sizeof(*p));
  if (p == NULL)
    return GRACE_ENOMEM;
  p->name = strdup(name);
  if (p->name == NULL) {
    free(p);
    return GRACE_ENOMEM;
  }
  p->g = g;
  p->ops = *ops;
  p->data = data;
  p->done_fd = -1;
  atomic_init(&p->state, GRACE_GROUP_PART_ADDED);
  atomic_init(&p->t_begin, 0);
  atomic_init(&p->t_end, 0);

  int rv = 0;
  pthread_mutex_lock(&g->lock);
  if (g->ran) {
    rv = GRACE_ESTATE;
  } else {
    for (grace_group_part *q = g->parts; q != NULL; q = q->next)
      if (strcmp(q->name, name) == 0)
        rv = GRACE_EBUSY;
  }
  if (rv == 0) {
    *g->parts_tail = p;
    g->parts_tail = &p->next;
    g->nparts++;
  }
  pthread_mutex_unlock(&g->lock);
  if (rv != 0) {
    free(p->name);
    free(p);
    return rv;
  }
  if (out != NULL)
    *out = p;
  return 0;
}

grace_group_part *grace__group_parts(grace_group *g, unsigned *n) {
  pthread_mutex_lock(&g->lock);
  grace_group_part *first = g->parts;
  *n = g->nparts;
  pthread_mutex_unlock(&g->lock);
  return first;
}

grace_group_part *grace_group_find(grace_group *g, const char *name) {
  unsigned n;
  grace_group_part *p = grace__group_parts(g, &n);
  for (; n > 0; n--, p = p->next)
    if (strcmp(p->name, name) == 0)
      return p;
  return NULL;
}

const char *grace_group_part_name(grace_group_part *part) {
  return part->name;
}

grace_group_part_state grace_group_part_get_state(grace_group_part *part) {
  return (grace_group_part_state)atomic_load(&part->state);
}

void grace__part_stats(grace_group_part *p, grace_group_stats *out) {
  memset(out, 0, sizeof(*out));
  if (p->ops.stats != NULL)
    p->ops.stats(p, out, p->data);
}

/* Under g->lock: the part stopped draining (or running) with |err|. */
static void settle_part(grace_group_part *p, int err) {
  atomic_store(&p->t_end, grace__group_now(p->g));
  p->err = err;
  atomic_store(&p->state,
               err != 0 ? GRACE_GROUP_PART_FAILED : GRACE_GROUP_PART_DRAINED);
}

void grace_group_part_done(grace_group_part *part, int err) {
  grace_group *g = part->g;
  pthread_mutex_lock(&g->lock);
  int st = atomic_load(&part->state);
  if (st == GRACE_GROUP_PART_RUNNING) {
    settle_part(part, err);
    g->part_stopped = true;
  } else if (st == GRACE_GROUP_PART_DRAINING) {
    settle_part(part, err);
  }
  pthread_mutex_unlock(&g->lock);
  wake(g);
}

void grace_group_part_done_fd(grace_group_part *part, int fd) {
  grace_group *g = part->g;
  pthread_mutex_lock(&g->lock);
  part->done_fd = fd;
  pthread_mutex_unlock(&g->lock);
  wake(g);
}

/* ---- hooks ---------------------------------------------------------------- */

int grace_group_add_hook(grace_group *g, grace_group_when when,
                         const char *name, grace_group_hook_fn fn,
                         void *data) {
  if (g == NULL || name == NULL || fn == NULL ||
      (when != GRACE_GROUP_PRE_DRAIN && when != GRACE_GROUP_POST_DRAIN))
    return GRACE_EINVAL;
  grace_group_hook *h = calloc(1, sizeof(*h));
  if (h == NULL)
    return GRACE_ENOMEM;
  h->name = strdup(name);
  if (h->name == NULL) {
    free(h);
    return GRACE_ENOMEM;
  }
  h->g = g;
  h->when = when;
  h->fn = fn;
  h->data = data;
  h->state = HOOK_IDLE;
  pthread_mutex_lock(&g->lock);
  bool ran = g->ran;
  if (!ran) {
    *g->hooks_tail = h;
    g->hooks_tail = &h->next;
  }
  pthread_mutex_unlock(&g->lock);
  if (ran) {
    free(h->name);
    free(h);
    return GRACE_ESTATE;
  }
  return 0;
}

void grace_group_hook_done(grace_group_hook *hook, int err) {
  grace_group *g = hook->g;
  pthread_mutex_lock(&g->lock);
  if (hook->state == HOOK_RUNNING) {
    hook->state = HOOK_DONE;
    hook->err = err;
  }
  pthread_mutex_unlock(&g->lock);
  wake(g);
}

/* ---- waiting -------------------------------------------------------------- */

/* What one run of the shutdown has gathered. */
typedef struct run_state {
  grace_group_result *res;
  int first_err;
  int64_t t_stop;
  struct pollfd *fds;      /* room for 2 + nparts */
  grace_group_part **fdpart; /* the part of fds[2 + i] */
} run_state;

enum { W_COND, W_UNTIL, W_DEADLINE, W_ERROR };

typedef bool (*cond_fn)(grace_group *g, run_state *r, void *arg);

static bool deadline_passed(grace_group *g) {
  return g->deadline != NULL && grace_ctx_err(g->deadline) != 0;
}

static void notify_extend(grace_group *g, int64_t now) {
  if (g->notify_next == 0 || now < g->notify_next)
    return;
  /* Each extension reaches a half period beyond the next message. */
  int64_t usec = g->opts.notify_interval / 1000 * 3 / 2;
  grace_sd_notifyf("EXTEND_TIMEOUT_USEC=%lld", (long long)usec);
  g->notify_next = now + g->opts.notify_interval;
}

/* Marks the parts whose done descriptor is readable as drained. */
static void poll_done_fds(grace_group *g, run_state *r, nfds_t nfds) {
  for (nfds_t i = 2; i < nfds; i++) {
    if (r->fds[i].revents == 0)
      continue;
    grace_group_part *p = r->fdpart[i - 2];
    pthread_mutex_lock(&g->lock);
    if (atomic_load(&p->state) == GRACE_GROUP_PART_DRAINING)
      settle_part(p, 0);
    pthread_mutex_unlock(&g->lock);
  }
}

/*
 * Blocks until cond(g, r, arg) holds (W_COND), the group's clock reaches
 * |until| (W_UNTIL; 0 means no limit), or the deadline passes (W_DEADLINE),
 * whichever comes first; cond is checked first, so work that ends at the
 * deadline counts as done.  Sends the periodic systemd extensions
 * meanwhile.
 */
static int wait_for(grace_group *g, run_state *r, cond_fn cond, void *arg,
                    int64_t until) {
  int dfd = grace_ctx_done_fd(g->deadline);
  if (dfd < 0)
    return W_ERROR;
  for (;;) {
    /* The time first: a manual clock's owner (a test) that moved it and
     * woke us knows that everything it did before is looked at below. */
    int64_t now = grace__group_now(g);
    if (cond != NULL && cond(g, r, arg))
      return W_COND;
    if (deadline_passed(g))
      return W_DEADLINE;
    if (until != 0 && now >= until)
      return W_UNTIL;
    notify_extend(g, now);

    nfds_t nfds = 2;
    r->fds[0] = (struct pollfd){.fd = g->wake_fd, .events = POLLIN};
    r->fds[1] = (struct pollfd){.fd = dfd, .events = POLLIN};
    pthread_mutex_lock(&g->lock);
    for (grace_group_part *p = g->parts; p != NULL; p = p->next) {
      if (p->done_fd < 0 ||
          atomic_load(&p->state) != GRACE_GROUP_PART_DRAINING)
        continue;
      r->fdpart[nfds - 2] = p;
      r->fds[nfds++] = (struct pollfd){.fd = p->done_fd, .events = POLLIN};
    }
    pthread_mutex_unlock(&g->lock);

    int64_t wake_at = until;
    if (g->notify_next != 0 && (wake_at == 0 || g->notify_next < wake_at))
      wake_at = g->notify_next;
    struct timespec ts = {0, 0}, *tsp = NULL;
    if (g->clock.manual) {
      /* Say we sleep only once no descriptor is ready, then sleep until
       * one is (whoever moves the clock wakes us). */
      if (ppoll(r->fds, nfds, &ts, NULL) == 0 && g->clock.idle != NULL)
        g->clock.idle(g->clock.data);
    } else {
      if (g->clock.idle != NULL)
        g->clock.idle(g->clock.data);
      if (wake_at != 0) {
        int64_t left = wake_at - now;
        ts.tv_sec = (time_t)(left / GRACE_SECOND);
        ts.tv_nsec = (long)(left % GRACE_SECOND);
        tsp = &ts;
      }
    }
    int n = ppoll(r->fds, nfds, tsp, NULL);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      return W_ERROR;
    }
    if (r->fds[0].revents & POLLIN) {
      uint64_t v;
      ssize_t rv = read(g->wake_fd, &v, sizeof(v));
      (void)rv; /* EAGAIN: another reader of nothing; harmless */
    }
    poll_done_fds(g, r, nfds);
  }
}

/* Waits for |stop| or for a part that stops on its own. */
static int wait_stop(grace_group *g, grace_ctx *stop) {
  int sfd = grace_ctx_done_fd(stop);
  if (sfd < 0)
    return sfd;
  for (;;) {
    /* The time first, as in wait_for (only a test's clock cares). */
    if (g->clock.idle != NULL)
      (void)grace__group_now(g);
    int err = grace_ctx_err(stop);
    if (err != 0)
      return err;
    pthread_mutex_lock(&g->lock);
    bool stopped = g->part_stopped;
    pthread_mutex_unlock(&g->lock);
    if (stopped)
      return GRACE_ESHUTDOWN;
    struct pollfd fds[2] = {{.fd = sfd, .events = POLLIN},
                            {.fd = g->wake_fd, .events = POLLIN}};
    /* As in wait_for: with a manual clock, say we sleep only once
     * nothing is ready. */
    if (g->clock.idle != NULL && (!g->clock.manual || poll(fds, 2, 0) == 0))
      g->clock.idle(g->clock.data);
    if (poll(fds, 2, -1) < 0) {
      if (errno == EINTR)
        continue;
      return -errno;
    }
    if (fds[1].revents & POLLIN) {
      uint64_t v;
      ssize_t rv = read(g->wake_fd, &v, sizeof(v));
      (void)rv;
    }
  }
}

/* ---- result bookkeeping --------------------------------------------------- */

static void note_error(run_state *r, int err) {
  if (err < 0 && r->first_err == 0)
    r->first_err = err;
}

/* Appends one item to result->cut, "; "-separated, truncating safely. */
static void note_cut(run_state *r, const char *fmt, ...) GRACE_PRINTF(2, 3);
static void note_cut(run_state *r, const char *fmt, ...) {
  char *buf = r->res->cut;
  size_t used = strlen(buf);
  va_list ap;
  if (used + 3 >= GRACE_GROUP_TEXT_LEN)
    return;
  if (used > 0) {
    memcpy(buf + used, "; ", 3);
    used += 2;
  }
  va_start(ap, fmt);
  vsnprintf(buf + used, GRACE_GROUP_TEXT_LEN - used, fmt, ap);
  va_end(ap);
}

/* ---- hooks ---------------------------------------------------------------- */

static const char *when_name(grace_group_when when) {
  return when == GRACE_GROUP_PRE_DRAIN ? "Pre-drain" : "Post-drain";
}

static bool hook_settled(grace_group *g, run_state *r, void *arg) {
  grace_group_hook *h = arg;
  (void)r;
  pthread_mutex_lock(&g->lock);
  bool settled = h->state != HOOK_RUNNING;
  pthread_mutex_unlock(&g->lock);
  return settled;
}

/*
 * Runs hook |h|; waits for it if it is asynchronous and |await| is set.
 * Returns false if the deadline passed while it was awaited.
 */
static bool run_hook(grace_group *g, run_state *r, grace_group_hook *h,
                     bool await) {
  char b1[GRACE_DURATION_STRLEN];
  pthread_mutex_lock(&g->lock);
  h->state = HOOK_RUNNING;
  pthread_mutex_unlock(&g->lock);

  int64_t t0 = grace__group_now(g);
  int rv = h->fn(h, g->deadline, h->data);
  if (rv != GRACE_GROUP_PENDING)
    grace_group_hook_done(h, rv < 0 ? rv : 0);
  else if (await)
    wait_for(g, r, hook_settled, h, 0);
  /* Still running: the deadline passed (or it is not awaited). */
  pthread_mutex_lock(&g->lock);
  if (h->state == HOOK_RUNNING)
    h->state = HOOK_GIVEN_UP;
  int st = h->state, err = h->err;
  pthread_mutex_unlock(&g->lock);

  grace_duration took = grace__group_now(g) - t0;
  if (st == HOOK_GIVEN_UP) {
    r->res->hooks_cut++;
    note_cut(r, "hook \"%s\" given up", h->name);
    grace__group_log(g, "%s hook \"%s\" given up at the deadline after %s",
                     when_name(h->when), h->name, dur(b1, took));
    return !await;
  }
  if (err != 0) {
    r->res->hooks_failed++;
    note_error(r, err);
    grace__group_log(g, "%s hook \"%s\" failed in %s: %s", when_name(h->when),
                     h->name, dur(b1, took), grace_strerror(err));
  } else {
    grace__group_log(g, "%s hook \"%s\" done in %s", when_name(h->when),
                     h->name, dur(b1, took));
  }
  return true;
}

/*
 * Runs the |when| hooks not run yet, in order, each awaited.  Returns false
 * if the deadline passed first.
 */
static int hook_state(grace_group *g, grace_group_hook *h) {
  pthread_mutex_lock(&g->lock);
  int st = h->state;
  pthread_mutex_unlock(&g->lock);
  return st;
}

static bool run_hooks(grace_group *g, run_state *r, grace_group_when when) {
  for (grace_group_hook *h = g->hooks; h != NULL; h = h->next) {
    if (h->when != when || hook_state(g, h) != HOOK_IDLE)
      continue;
    if (deadline_passed(g))
      return false;
    if (!run_hook(g, r, h, true))
      return false;
  }
  return true;
}

/* Phase 4: the pre-drain hooks not run are skipped; the post-drain hooks
 * not run are run once, not awaited. */
static void finish_hooks(grace_group *g, run_state *r) {
  for (grace_group_hook *h = g->hooks; h != NULL; h = h->next) {
    if (hook_state(g, h) != HOOK_IDLE)
      continue;
    if (h->when == GRACE_GROUP_PRE_DRAIN) {
      r->res->hooks_cut++;
      note_cut(r, "hook \"%s\" skipped", h->name);
      grace__group_log(g, "Pre-drain hook \"%s\" skipped: deadline exceeded",
                       h->name);
    } else {
      run_hook(g, r, h, false);
    }
  }
}

/* ---- parts ---------------------------------------------------------------- */

/* Logs the parts that settled since the last look; true when none is
 * draining any more. */
static bool parts_settled(grace_group *g, run_state *r, void *arg) {
  char b1[GRACE_DURATION_STRLEN];
  bool all = true;
  (void)arg;
  for (grace_group_part *p = g->parts; p != NULL; p = p->next) {
    int st = atomic_load(&p->state);
    if (st == GRACE_GROUP_PART_DRAINING) {
      all = false;
      continue;
    }
    if (!p->begun || p->reported || p->forcing)
      continue;
    p->reported = true;
    grace_duration took = atomic_load(&p->t_end) - atomic_load(&p->t_begin);
    if (st == GRACE_GROUP_PART_DRAINED) {
      grace__group_log(g, "Part \"%s\" drained in %s", p->name, dur(b1, took));
    } else if (st == GRACE_GROUP_PART_FAILED) {
      pthread_mutex_lock(&g->lock);
      int err = p->err;
      pthread_mutex_unlock(&g->lock);
      r->res->parts_failed++;
      note_error(r, err);
      grace__group_log(g, "Part \"%s\" failed to drain in %s: %s", p->name,
                       dur(b1, took), grace_strerror(err));
    }
  }
  return all;
}

/* Calls force on |p| (the group's thread, no lock held). */
static void force_part(grace_group *g, run_state *r, grace_group_part *p,
                       bool at_deadline) {
  char b1[GRACE_DURATION_STRLEN];
  int64_t t0 = grace__group_now(g);
  p->what[0] = '\0';
  int cut = p->ops.force(p, p->what, sizeof(p->what), p->data);
  p->what[sizeof(p->what) - 1] = '\0';
  p->forced_cut = cut > 0 ? cut : 0;
  atomic_store(&p->t_end, grace__group_now(p->g));
  if (!at_deadline)
    return;
  r->res->parts_forced++;
  if (p->what[0] != '\0')
    note_cut(r, "%s (%s)", p->name, p->what);
  else
    note_cut(r, "%s", p->name);
  grace__group_log(g, "Part \"%s\" forced in %s%s%s", p->name,
                   dur(b1, grace__group_now(g) - t0), p->what[0] ? ": " : "",
                   p->what);
}

/* Phase 3: begins every running part's graceful stop. */
static void begin_part(grace_group *g, run_state *r, grace_group_part *p);

/* Parts marked begin_first (the upgrader: its copies of the listeners
 * close before the servers close theirs), then the others, each in
 * registration order. */
static void begin_parts(grace_group *g, run_state *r) {
  atomic_store(&g->drain_begin, grace__group_now(g));
  for (int pass = 0; pass < 2; pass++)
    for (grace_group_part *p = g->parts; p != NULL; p = p->next)
      if (p->begin_first == (pass == 0))
        begin_part(g, r, p);
}

static void begin_part(grace_group *g, run_state *r, grace_group_part *p) {
  char b1[GRACE_DURATION_STRLEN];
  grace__part_stats(p, &p->at_begin);
  int64_t t0 = grace__group_now(g);
  pthread_mutex_lock(&g->lock);
  /* A part that stopped on its own before the shutdown is not begun. */
  if (atomic_load(&p->state) == GRACE_GROUP_PART_RUNNING) {
    atomic_store(&p->t_begin, t0);
    atomic_store(&p->state, GRACE_GROUP_PART_DRAINING);
    p->begun = true;
  }
  pthread_mutex_unlock(&g->lock);
  if (!p->begun)
    return;
  int rv = p->ops.begin(p, g->deadline, p->data);
  if (rv != 0) {
    pthread_mutex_lock(&g->lock);
    int st = atomic_load(&p->state);
    if (st == GRACE_GROUP_PART_DRAINING)
      settle_part(p, rv);
    pthread_mutex_unlock(&g->lock);
    if (st != GRACE_GROUP_PART_DRAINING)
      return; /* it reported first: that report stands */
    p->reported = true;
    r->res->parts_failed++;
    note_error(r, rv);
    grace__group_log(g, "Part \"%s\" could not begin to drain: %s", p->name,
                     grace_strerror(rv));
    force_part(g, r, p, false);
    return;
  }
  grace__group_log(g, "Part \"%s\" draining (began in %s)", p->name,
                   dur(b1, grace__group_now(g) - t0));
}

/* Phase 4: forces every part still running or draining. */
static void force_parts(grace_group *g, run_state *r) {
  pthread_mutex_lock(&g->lock);
  for (grace_group_part *p = g->parts; p != NULL; p = p->next) {
    int st = atomic_load(&p->state);
    if (st == GRACE_GROUP_PART_RUNNING || st == GRACE_GROUP_PART_DRAINING) {
      /* From here on a late grace_group_part_done is ignored. */
      atomic_store(&p->state, GRACE_GROUP_PART_FORCED);
      p->forcing = true;
    }
  }
  pthread_mutex_unlock(&g->lock);
  for (grace_group_part *p = g->parts; p != NULL; p = p->next)
    if (p->forcing)
      force_part(g, r, p, true);
}

/* Adds the parts' drain counters to the result. */
static void count_drain(grace_group *g, run_state *r) {
  grace_group_result *res = r->res;
  for (grace_group_part *p = g->parts; p != NULL; p = p->next) {
    if (!p->begun) {
      res->requests_cut += (uint64_t)p->forced_cut;
      continue;
    }
    grace_group_stats end, *b = &p->at_begin;
    grace__part_stats(p, &end);
    if (end.has & (GRACE_GROUP_HAS_REQUESTS | GRACE_GROUP_HAS_RPCS)) {
      uint64_t rcut = end.requests_cut - b->requests_cut;
      uint64_t pcut = end.rpcs_cut - b->rpcs_cut;
      /* Completed: in flight at the start or received since, neither
       * still in flight nor cut. */
      uint64_t rin = b->requests_inflight + (end.requests_total -
                                             b->requests_total);
      uint64_t rout = end.requests_inflight + rcut;
      uint64_t pin = b->rpcs_inflight + (end.rpcs_total - b->rpcs_total);
      uint64_t pout = end.rpcs_inflight + pcut;
      res->requests_completed += rin > rout ? rin - rout : 0;
      res->rpcs_completed += pin > pout ? pin - pout : 0;
      res->requests_cut += rcut + pcut;
    } else {
      res->requests_cut += (uint64_t)p->forced_cut;
    }
    if (end.has & GRACE_GROUP_HAS_CONNS)
      res->idle_closed += end.conns_idle_closed - b->conns_idle_closed;
  }
}

/* ---- starting ------------------------------------------------------------- */

static int start_parts(grace_group *g, run_state *r) {
  char b1[GRACE_DURATION_STRLEN];
  for (grace_group_part *p = g->parts; p != NULL; p = p->next) {
    atomic_store(&p->state, GRACE_GROUP_PART_RUNNING);
    int rv = p->ops.start != NULL ? p->ops.start(p, p->data) : 0;
    if (rv == 0)
      continue;
    pthread_mutex_lock(&g->lock);
    settle_part(p, rv);
    pthread_mutex_unlock(&g->lock);
    r->res->parts_failed++;
    grace__group_log(g, "Part \"%s\" failed to start: %s", p->name,
                     grace_strerror(rv));
    /* Stop what runs already, at once: nothing was served for long. */
    for (grace_group_part *q = g->parts; q != p; q = q->next) {
      pthread_mutex_lock(&g->lock);
      bool running = atomic_load(&q->state) == GRACE_GROUP_PART_RUNNING;
      if (running)
        atomic_store(&q->state, GRACE_GROUP_PART_FORCED);
      pthread_mutex_unlock(&g->lock);
      if (running) {
        int64_t t0 = grace__group_now(g);
        force_part(g, r, q, false);
        grace__group_log(g, "Part \"%s\" stopped in %s", q->name,
                         dur(b1, grace__group_now(g) - t0));
      }
    }
    return rv;
  }
  return 0;
}

/* ---- the shutdown --------------------------------------------------------- */

static void end_phase(grace_group *g, run_state *r, grace_group_phase phase,
                      int64_t t0) {
  grace_duration took = grace__group_now(g) - t0;
  r->res->phase[phase] = took;
  atomic_store(&g->phase_ns[phase], took);
}

static void report(grace_group *g, run_state *r) {
  char b1[GRACE_DURATION_STRLEN];
  grace_group_result *res = r->res;
  if (res->forced)
    grace__group_log(g,
                     "Drain report: result=forced duration=%s "
                     "requests_completed=%llu rpcs_completed=%llu "
                     "idle_closed=%llu requests_cut=%llu cut=\"%s\"",
                     dur(b1, res->drain),
                     (unsigned long long)res->requests_completed,
                     (unsigned long long)res->rpcs_completed,
                     (unsigned long long)res->idle_closed,
                     (unsigned long long)res->requests_cut, res->cut);
  else
    grace__group_log(g,
                     "Drain report: result=%s duration=%s "
                     "requests_completed=%llu rpcs_completed=%llu "
                     "idle_closed=%llu requests_cut=%llu",
                     res->status == 0 ? "clean" : "failed",
                     dur(b1, res->drain),
                     (unsigned long long)res->requests_completed,
                     (unsigned long long)res->rpcs_completed,
                     (unsigned long long)res->idle_closed,
                     (unsigned long long)res->requests_cut);
}

static void shutdown_phases(grace_group *g, run_state *r) {
  char b1[GRACE_DURATION_STRLEN], b2[GRACE_DURATION_STRLEN];
  grace_group_result *res = r->res;
  bool in_time = true;
  int64_t t0;

  /* A hand-over: the endpoint stays up (the successor serves the same
   * sockets), so readiness stays true and there is nothing for a load
   * balancer to notice; systemd follows the successor (MAINPID), so it
   * hears nothing from this process any more. */
  if (res->handed_over != 0) {
    g->notify = false;
    grace__group_log(g, "Shutdown phases 1 (not ready) and 2 (delay) "
                        "skipped: pid %d serves the same sockets",
                     res->handed_over);
    goto drain;
  }

  /* Phase 1: readiness goes false, and the manager learns we stop. */
  t0 = grace__group_now(g);
  set_phase(g, GRACE_GROUP_NOT_READY);
  atomic_store(&g->ready, false);
  /* Parts with a readiness of their own (a gRPC health service) follow. */
  for (grace_group_part *p = g->parts; p != NULL; p = p->next)
    if (p->ops.not_ready != NULL &&
        atomic_load(&p->state) == GRACE_GROUP_PART_RUNNING)
      p->ops.not_ready(p, p->data);
  if (g->notify) {
    grace_sd_notify("STOPPING=1\nSTATUS=Shutting down: not ready");
    g->notify_next = r->t_stop; /* the first extension now */
    notify_extend(g, grace__group_now(g));
  }
  end_phase(g, r, GRACE_GROUP_NOT_READY, t0);
  grace__group_log(g, "Shutdown phase 1 (not ready) took %s",
                   dur(b1, res->phase[GRACE_GROUP_NOT_READY]));

  /* Phase 2: keep serving while load balancers notice. */
  t0 = grace__group_now(g);
  set_phase(g, GRACE_GROUP_DELAY);
  if (g->opts.shutdown_delay > 0) {
    if (g->notify)
      grace_sd_notify("STATUS=Shutting down: delay");
    int w = wait_for(g, r, NULL, NULL, t0 + g->opts.shutdown_delay);
    in_time = w == W_UNTIL;
  }
  end_phase(g, r, GRACE_GROUP_DELAY, t0);
  if (in_time)
    grace__group_log(g, "Shutdown phase 2 (delay %s) took %s",
                     dur(b1, g->opts.shutdown_delay),
                     dur(b2, res->phase[GRACE_GROUP_DELAY]));
  else
    grace__group_log(g,
                     "Shutdown phase 2 (delay %s) cut short by the deadline "
                     "after %s",
                     dur(b1, g->opts.shutdown_delay),
                     dur(b2, res->phase[GRACE_GROUP_DELAY]));

drain:
  /* Phase 3: hooks, then every part drains in parallel, then hooks. */
  t0 = grace__group_now(g);
  set_phase(g, GRACE_GROUP_DRAIN);
  if (g->notify)
    grace_sd_notify("STATUS=Shutting down: draining");
  if (in_time)
    in_time = run_hooks(g, r, GRACE_GROUP_PRE_DRAIN);
  if (in_time && !deadline_passed(g)) {
    begin_parts(g, r);
    int w = wait_for(g, r, parts_settled, NULL, 0);
    in_time = w == W_COND;
  } else {
    in_time = false;
  }
  atomic_store(&g->drain_end, grace__group_now(g));
  if (in_time)
    in_time = run_hooks(g, r, GRACE_GROUP_POST_DRAIN);
  end_phase(g, r, GRACE_GROUP_DRAIN, t0);
  if (in_time)
    grace__group_log(g, "Shutdown phase 3 (drain) took %s",
                     dur(b1, res->phase[GRACE_GROUP_DRAIN]));
  else
    grace__group_log(g, "Shutdown phase 3 (drain) cut short by the deadline "
                        "after %s",
                     dur(b1, res->phase[GRACE_GROUP_DRAIN]));

  /* Phase 4: the deadline has passed; force what is left. */
  if (!in_time) {
    t0 = grace__group_now(g);
    set_phase(g, GRACE_GROUP_FORCE);
    if (g->notify)
      grace_sd_notify("STATUS=Shutting down: forcing");
    parts_settled(g, r, NULL); /* those that made it just in time */
    force_parts(g, r);
    parts_settled(g, r, NULL);
    atomic_store(&g->drain_end, grace__group_now(g));
    finish_hooks(g, r);
    end_phase(g, r, GRACE_GROUP_FORCE, t0);
    grace__group_log(g, "Shutdown phase 4 (force) took %s",
                     dur(b1, res->phase[GRACE_GROUP_FORCE]));
  }
  res->forced = res->parts_forced > 0 || res->hooks_cut > 0;

  int64_t db = atomic_load(&g->drain_begin);
  res->drain = db != 0 ? atomic_load(&g->drain_end) - db : 0;
  res->total = grace__group_now(g) - r->t_stop;
  count_drain(g, r);
}

int grace_group_run(grace_group *g, grace_ctx *stop,
                    grace_group_result *result) {
  char b1[GRACE_DURATION_STRLEN], b2[GRACE_DURATION_STRLEN];
  grace_group_result local;
  run_state r;
  int rv;

  if (result == NULL)
    result = &local;
  memset(result, 0, sizeof(*result));
  if (g == NULL || stop == NULL)
    return result->status = GRACE_EINVAL;
  pthread_mutex_lock(&g->lock);
  bool ran = g->ran;
  g->ran = true;
  pthread_mutex_unlock(&g->lock);
  if (ran)
    return result->status = GRACE_ESTATE;

  memset(&r, 0, sizeof(r));
  r.res = result;
  r.fds = calloc(2 + (size_t)g->nparts, sizeof(*r.fds));
  r.fdpart = calloc(1 + (size_t)g->nparts, sizeof(*r.fdpart));
  if (r.fds == NULL || r.fdpart == NULL) {
    rv = GRACE_ENOMEM;
    goto out;
  }
  g->notify = !g->opts.no_notify && grace_sd_notify_wanted();

  /* A successor answers for an endpoint that is ready already: its
   * predecessor serves the same sockets until the hand-over. */
  if (g->ready_at_start)
    atomic_store(&g->ready, true);
  rv = start_parts(g, &r);
  if (rv != 0) {
    atomic_store(&g->ready, false);
    goto out;
  }
  int64_t t_start = grace__group_now(g);
  atomic_store(&g->ready, true);
  if (g->notify)
    grace_sd_notify("READY=1\nSTATUS=Serving");

  int cause = wait_stop(g, stop);
  if (cause != GRACE_ECANCELED && cause != GRACE_ETIMEDOUT &&
      cause != GRACE_ESHUTDOWN) {
    /* The stop context cannot be waited for: shut down rather than hang. */
    grace__group_log(g, "Shutdown: cannot wait for the stop context: %s",
                     grace_strerror(cause));
  }
  r.t_stop = grace__group_now(g);
  result->cause = cause;
  result->phase[GRACE_GROUP_SERVING] = r.t_stop - t_start;
  rv = new_deadline(g, g->timeout, &g->deadline);
  if (rv != 0) {
    /* No deadline context: shut down with an expired deadline, forcing
     * everything, rather than not at all. */
    grace__group_log(g, "Shutdown: no deadline: %s", grace_strerror(rv));
    rv = new_deadline(g, 0, &g->deadline);
    if (rv != 0)
      goto out;
  }
  result->handed_over =
      cause == GRACE_ESHUTDOWN ? atomic_load(&g->handover_pid) : 0;
  if (result->handed_over != 0) {
    grace__group_log(g, "Shutdown started (handed over to pid %d): "
                        "deadline %s, no delay",
                     result->handed_over, dur(b1, g->timeout));
  } else if (cause == GRACE_ESHUTDOWN) {
    const char *who = "";
    for (grace_group_part *p = g->parts; p != NULL; p = p->next)
      if (atomic_load(&p->state) >= GRACE_GROUP_PART_DRAINED) {
        who = p->name;
        break;
      }
    grace__group_log(g, "Shutdown started (part \"%s\" stopped): deadline "
                        "%s, delay %s",
                     who, dur(b1, g->timeout),
                     dur(b2, g->opts.shutdown_delay));
  } else {
    grace__group_log(g, "Shutdown started (%s): deadline %s, delay %s",
                     grace_strerror(cause), dur(b1, g->timeout),
                     dur(b2, g->opts.shutdown_delay));
  }

  shutdown_phases(g, &r);

  /* A part that stopped on its own with an error counts too. */
  for (grace_group_part *p = g->parts; p != NULL; p = p->next)
    if (!p->begun && atomic_load(&p->state) == GRACE_GROUP_PART_FAILED) {
      result->parts_failed++;
      note_error(&r, p->err);
    }
  if (result->forced)
    rv = GRACE_ETIMEDOUT;
  else
    rv = r.first_err;
  result->status = rv;
  report(g, &r);
  if (g->notify)
    grace_sd_notifyf("STATUS=Shut down: %s",
                     rv == 0 ? "clean" : result->forced ? "forced" : "failed");

out:
  free(r.fds);
  free(r.fdpart);
  result->status = rv;
  return rv;
}
