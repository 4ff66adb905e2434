/*
 * The lifecycle group's internals, shared by group.c (parts, hooks and the
 * phases), metrics.c (/metrics and the health routes) and http_part.c (the
 * HTTP server adapter).
 *
 * Locking.  g->lock guards the lists while parts and hooks are added, and
 * every state change a notifier can race with (grace_group_part_done and
 * grace_group_hook_done come from any thread).  States only move forward,
 * and part states are also atomic, so the group's thread and the metrics
 * handler read them without the lock.  Parts and hooks are separately
 * allocated nodes appended at the tail and never moved or freed before
 * grace_group_free, so a reader that took the count under the lock may walk
 * that many nodes without it.
 */
#ifndef GRACE_GROUP_INT_H
#define GRACE_GROUP_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "core/clock_int.h"
#include "grace/group.h"
#include "grace/log.h"

/* Room for what a part's force says it cut. */
#define GRACE__PART_WHAT_LEN 160

struct grace_group_part {
  grace_group *g;
  grace_group_part *next;
  char *name;
  grace_group_part_ops ops;
  void *data;
  atomic_int state; /* grace_group_part_state; changed under g->lock */
  int err;          /* under g->lock: the error its stop reported */
  int done_fd;      /* under g->lock: descriptor to watch, or -1 */
  /* grace_now() at begin and when it settled (drained, failed, forced);
   * 0 until then.  Read by /metrics. */
  _Atomic int64_t t_begin;
  _Atomic int64_t t_end;
  /* The group's thread only. */
  bool begun;
  bool begin_first; /* begun before the parts without it */
  bool reported;
  bool forcing;
  int forced_cut;
  grace_group_stats at_begin;
  char what[GRACE__PART_WHAT_LEN];
};

/* Hook states, under g->lock. */
enum { HOOK_IDLE, HOOK_RUNNING, HOOK_DONE, HOOK_GIVEN_UP };

struct grace_group_hook {
  grace_group *g;
  grace_group_hook *next;
  char *name;
  grace_group_when when;
  grace_group_hook_fn fn;
  void *data;
  int state;
  int err;
};

struct grace_group {
  grace_group_options opts;
  grace_duration timeout; /* the overall deadline in force */
  pthread_mutex_t lock;
  int wake_fd; /* eventfd: a notifier has reported */
  grace_group_part *parts;
  grace_group_part **parts_tail;
  unsigned nparts;
  grace_group_hook *hooks;
  grace_group_hook **hooks_tail;
  bool ran;          /* under lock: grace_group_run was called */
  /* Set before a part stops on its own to hand over (grace/upgrade.h):
   * the successor's PID and the keep-alive close spread of the drain. */
  atomic_int handover_pid;
  _Atomic grace_duration handover_spread;
  bool part_stopped; /* under lock: a part stopped on its own */
  /* Ready from the start of grace_group_run (grace__group_ready_at_start). */
  bool ready_at_start;
  atomic_bool ready;
  atomic_int phase;
  /* Finished phases' durations (ns), and the drain's bounds (grace_now),
   * for /metrics. */
  _Atomic int64_t phase_ns[5];
  _Atomic int64_t drain_begin;
  _Atomic int64_t drain_end;
  /* The group's thread only, while running. */
  grace_ctx *deadline;
  int64_t notify_next; /* next EXTEND_TIMEOUT_USEC, 0 when none */
  bool notify;         /* systemd notifications are wanted */
  /* Where time comes from: grace_now and real timeouts unless a test
   * installed a clock of its own (grace__group_set_clock). */
  grace__clock clock;
};

/* The group's time now: grace_now, or the installed clock's.  Any
 * thread. */
int64_t grace__group_now(grace_group *g);

/*
 * For tests: makes the group read time from |clock| (copied) instead of
 * grace_now, and make its deadline with clock->with_timeout.  With a
 * manual clock (clock->manual) the group sleeps only on descriptors:
 * after moving the clock, call grace__group_wake.  Only before
 * grace_group_run.
 */
void grace__group_set_clock(grace_group *g, const grace__clock *clock);

/* Wakes the group's thread so that it looks at the time and its parts
 * again.  Any thread. */
void grace__group_wake(grace_group *g);

/*
 * Marks the coming stop of a part as a hand-over to process |pid| (call
 * it before grace_group_part_done): the group then drains without the
 * not-ready phase, the shutdown delay and systemd's STOPPING=1, and the
 * HTTP and gRPC parts spread the closing of idle keep-alive connections
 * over at least |spread|.  Any thread.
 */
void grace__group_handover(grace_group *g, int pid, grace_duration spread);

/*
 * Makes the group say ready from the start of grace_group_run, before its
 * parts start, instead of once they all have: for the successor of an
 * upgrade (grace/upgrade.h), which serves the inherited listeners beside
 * its ready predecessor while it starts, so that a health check landing
 * on it then does not see the endpoint turn "not ready".  If a part fails
 * to start, readiness turns false again.  Before grace_group_run.
 */
void grace__group_ready_at_start(grace_group *g);

/* The close spread a hand-over asks of the parts that serve, or 0. */
grace_duration grace__group_handover_spread(grace_group *g);

/* The group |part| belongs to. */
grace_group *grace__part_group(grace_group_part *part);

/* Makes |part| begin its drain before the parts without this mark (phase
 * 3).  Before grace_group_run. */
void grace__part_begin_first(grace_group_part *part);

/* Logs a line unless the group is quiet. */
void grace__group_log(grace_group *g, const char *fmt, ...) GRACE_PRINTF(2, 3);

/* Reads |p|'s counters; zeroes |out| first (no counters without a stats
 * op). */
void grace__part_stats(grace_group_part *p, grace_group_stats *out);

/* The parts as they are now: the first one and how many to walk. */
grace_group_part *grace__group_parts(grace_group *g, unsigned *n);

/* Fills the connection counters of |out| from an HTTP server's stats
 * (http_part.c; the gRPC part's server is an HTTP server too). */
void grace__group_conn_stats(const grace_http_stats *st,
                             grace_group_stats *out);

#endif /* GRACE_GROUP_INT_H */
