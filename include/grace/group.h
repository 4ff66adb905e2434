/*
 * grace: a lifecycle group.  Servers, workers and hooks run as one unit and
 * shut down together, in phases, under one overall deadline.
 *
 *   grace_group *g;
 *   grace_group_options opts;
 *   grace_group_options_init(&opts);
 *   opts.shutdown_delay = 5 * GRACE_SECOND;  // let load balancers notice
 *   grace_group_new(&opts, &g);
 *   grace_group_http_health(g, srv);         // /readyz /livez /metrics
 *   grace_group_add_http(g, "http", srv);
 *   grace_group_result res;
 *   int rv = grace_group_run(g, grace_signal_context(), &res);
 *   grace_group_free(g);
 *   grace_http_server_free(srv);
 *   return rv == 0 ? 0 : 1;
 *
 * grace_group_run starts every part, sends systemd READY=1, and waits for
 * its stop context (normally the signal context).  Then, from the moment
 * the stop context is done, within the overall deadline:
 *
 *  1. not ready: grace_group_ready turns false, so /readyz answers 503 and
 *     a gRPC health service says NOT_SERVING; /livez stays 200; systemd
 *     gets STOPPING=1;
 *  2. shutdown delay: everything keeps serving for opts.shutdown_delay
 *     (0 by default, as Kubernetes' apiserver --shutdown-delay-duration),
 *     so load balancers stop sending traffic before the listeners close;
 *     the deadline cuts the delay short;
 *  3. drain: the pre-drain hooks run in registration order, each awaited;
 *     then every part is told to begin its graceful stop, all at once, and
 *     drains in parallel with the others; the phase ends the moment the
 *     last part reports that it is drained (no polling); then the
 *     post-drain hooks run, each awaited;
 *  4. force, only if the deadline passes first: every part still draining
 *     (or never begun) is forced, the hook being awaited is given up, the
 *     pre-drain hooks not yet run are skipped, and the post-drain hooks not
 *     yet run are run once without being awaited.  What was cut is
 *     reported.
 *
 * Each phase is logged (grace_log, Go's log format) with how long it took,
 * and the shutdown ends with one drain report line:
 *
 *   Drain report: result=clean duration=1.502s requests_completed=1
 *   rpcs_completed=0 idle_closed=2 requests_cut=0
 *
 * (one line; with result=forced and cut="http (1 request cut, 1
 * connection closed)" when forced).  While the shutdown goes on, systemd
 * gets EXTEND_TIMEOUT_USEC every opts.notify_interval.
 *
 * Parts.  The group knows a part only through one shape: begin (start a
 * graceful stop), a notifier the part calls when it is drained
 * (grace_group_part_done, from any thread), and force (cut what is left).
 * grace_group_add_http adapts an HTTP server, grace_group_add_grpc a gRPC
 * server, grace_group_add_tcp a TCP server of the caller's own protocol,
 * grace_group_add_worker a periodic worker; anything else is added with
 * grace_group_add and its own ops.
 *
 * Threads.  grace_group_run blocks the calling thread; everything it waits
 * for is a file descriptor (the stop context's, the deadline's, an eventfd
 * the notifiers write), so a drain that ends early ends the phase at once.
 * grace_group_part_done, grace_group_hook_done, grace_group_ready,
 * grace_group_phase and grace_group_metrics may be called from any thread.
 */
#ifndef GRACE_GROUP_H
#define GRACE_GROUP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "grace/context.h"
#include "grace/duration.h"
#include "grace/error.h"
#include "grace/http.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A group of parts and hooks.  Opaque; grace_group_new / grace_group_free. */
typedef struct grace_group grace_group;

/* One registered part, owned by its group (valid until grace_group_free). */
typedef struct grace_group_part grace_group_part;

/* One registered hook, owned by its group (valid until grace_group_free). */
typedef struct grace_group_hook grace_group_hook;

/* The phases, as the grace_shutdown_phase gauge shows them. */
typedef enum grace_group_phase {
  GRACE_GROUP_SERVING = 0,   /* not shutting down (also before run) */
  GRACE_GROUP_NOT_READY = 1, /* phase 1: readiness turned false */
  GRACE_GROUP_DELAY = 2,     /* phase 2: serving through the delay */
  GRACE_GROUP_DRAIN = 3,     /* phase 3: hooks and drain */
  GRACE_GROUP_FORCE = 4      /* phase 4: the deadline passed */
} grace_group_phase;

/* Returns "serving", "not_ready", "delay", "drain", "force" or "". */
GRACE_EXTERN const char *grace_group_phase_name(grace_group_phase phase);

/*
 * The overall deadline used when neither the options nor the environment
 * give one: what the rule of grace_group_timeout_for_grace_period gives
 * for Kubernetes' default terminationGracePeriodSeconds of 30.
 */
#define GRACE_GROUP_DEFAULT_TIMEOUT (27 * GRACE_SECOND)

/* How often EXTEND_TIMEOUT_USEC is sent while shutting down, by default. */
#define GRACE_GROUP_DEFAULT_NOTIFY_INTERVAL (5 * GRACE_SECOND)

/*
 * The group's settings.  Fill it with grace_group_options_init, then set
 * the fields you need; every field's zero value is its default.
 */
typedef struct grace_group_options {
  /* sizeof(grace_group_options) as the caller compiled it; set by
   * grace_group_options_init.  Do not change it. */
  size_t size;
  /* Phase 2: how long to keep serving, not ready, before draining.  It
   * counts against shutdown_timeout.  Default 0. */
  grace_duration shutdown_delay;
  /* The overall deadline, from the moment the stop context is done to
   * the end of phase 4.  0 (the default) means: from the environment
   * (grace_group_env_timeout), else GRACE_GROUP_DEFAULT_TIMEOUT.  A
   * negative value is an error. */
  grace_duration shutdown_timeout;
  /* Period of the EXTEND_TIMEOUT_USEC messages; each asks for one and a
   * half periods, a bit beyond the next message.  0 means
   * GRACE_GROUP_DEFAULT_NOTIFY_INTERVAL. */
  grace_duration notify_interval;
  /* Do not log the phases and the drain report. */
  bool quiet;
  /* Send no systemd notification even when NOTIFY_SOCKET is set. */
  bool no_notify;
} grace_group_options;

/* Fills |opts| with the defaults (all zero, |size| set). */
GRACE_EXTERN void grace_group_options_init(grace_group_options *opts);

/*
 * Creates an empty group; |opts| is copied (NULL means the defaults).
 * When opts->shutdown_timeout is 0 the environment is read now
 * (grace_group_env_timeout).  Returns 0 and stores the group in |*out|, or
 * one of the following negative error codes:
 *
 * GRACE_EINVAL   |out| is NULL, or an option is negative, or opts->size
 *                is larger than this library knows
 * GRACE_ESYNTAX  an environment variable holds no valid value (call
 *                grace_group_env_timeout first to get the message)
 * GRACE_ERANGE   an environment variable's value is out of range
 * GRACE_ENOMEM   out of memory, or no eventfd (a negated errno then)
 */
GRACE_EXTERN int grace_group_new(const grace_group_options *opts,
                                 grace_group **out);

/*
 * Frees the group, its parts and its hooks; it does not free what they
 * adapt (an HTTP server stays the caller's).  Not while grace_group_run
 * runs; every notifier call (grace_group_part_done, grace_group_hook_done)
 * must have returned, and none may come after.  NULL-safe.
 */
GRACE_EXTERN void grace_group_free(grace_group *g);

/* The overall deadline in force (after the environment was read). */
GRACE_EXTERN grace_duration grace_group_timeout(grace_group *g);

/* ---- parts -------------------------------------------------------------- */

/* What a part's stats callback fills in; see grace_group_stats.has. */
#define GRACE_GROUP_HAS_REQUESTS 1u /* requests_* are meaningful */
#define GRACE_GROUP_HAS_RPCS 2u     /* rpcs_* are meaningful */
#define GRACE_GROUP_HAS_CONNS 4u    /* conns_* are meaningful */

/*
 * A part's counters, for the drain report and /metrics.  Totals count
 * since the part started and never decrease.
 */
typedef struct grace_group_stats {
  unsigned has; /* GRACE_GROUP_HAS_* bits */
  uint64_t requests_total;    /* HTTP requests received */
  uint64_t requests_inflight; /* received, not yet answered */
  uint64_t requests_cut;      /* cancelled before their answer */
  uint64_t rpcs_total;        /* RPCs received */
  uint64_t rpcs_inflight;
  uint64_t rpcs_cut;
  uint64_t conns_new;         /* open, no request read yet */
  uint64_t conns_active;      /* open, a request in progress */
  uint64_t conns_idle;        /* open, keep-alive between requests */
  uint64_t conns_idle_closed; /* idle connections closed by the shutdown */
} grace_group_stats;

/*
 * The shape every part has.  |data| is the pointer given to
 * grace_group_add.  The ops are copied.
 */
typedef struct grace_group_part_ops {
  /*
   * Optional.  Called by grace_group_run, on its thread, in registration
   * order, before it waits for the stop context.  Returns 0 or a negative
   * error, which makes grace_group_run force the parts already started
   * and return that error.
   */
  int (*start)(grace_group_part *part, void *data);
  /*
   * Required.  Begins a graceful stop: stop taking new work (close the
   * listeners) and let the work in progress finish.  Called on the group's
   * thread in phase 3, for every part one after the other, so it must
   * return promptly (once the part no longer accepts work), not when it is
   * drained.  The part then calls grace_group_part_done(part, 0), from any
   * thread and at any time (even before begin returns), when it is
   * drained; or grace_group_part_done_fd names a descriptor to watch.
   * |deadline| is done at the overall deadline; borrowed until the part is
   * drained or forced.  Returns 0, or a negative error: the part is then
   * forced at once and the error reported.
   */
  int (*begin)(grace_group_part *part, grace_ctx *deadline, void *data);
  /*
   * Required.  Cuts whatever is left, at once, and returns when nothing of
   * the part runs any more.  Called on the group's thread, once, at most,
   * when the deadline passes before the part is drained (also for a part
   * whose begin was never called or failed).  May write what it cut into
   * |what| (|len| bytes, NUL terminated, for example "2 requests cut").
   * Returns how many units of work (requests, RPCs, tasks) it cut, >= 0.
   * A part that was forced must not call grace_group_part_done after the
   * group may have been freed (grace_group_part_done_fd has no such
   * constraint: the group stops watching when grace_group_run returns).
   */
  int (*force)(grace_group_part *part, char *what, size_t len, void *data);
  /* Optional.  Fills |out| (zeroed before the call); any thread, must
   * not block: it is called while /metrics is served. */
  void (*stats)(grace_group_part *part, grace_group_stats *out, void *data);
  /*
   * Optional.  Phase 1: readiness has turned false.  A part with a
   * readiness of its own (a gRPC health service) turns it false too, and
   * goes on serving.  Called on the group's thread, once, for every part
   * still running, before the shutdown delay; must return promptly.
   */
  void (*not_ready)(grace_group_part *part, void *data);
} grace_group_part_ops;

/*
 * Adds a part named |name| (copied; unique in the group; printed in logs
 * and as the label part="<name>" in /metrics).  |ops| is copied; |data| is
 * borrowed until grace_group_free.  Only before grace_group_run.  Stores
 * the part in |*out| if |out| is not NULL.  Returns 0 or one of:
 *
 * GRACE_EINVAL  NULL or empty |name|, NULL |ops|, no begin or no force
 * GRACE_EBUSY   a part with this name exists
 * GRACE_ESTATE  grace_group_run has been called
 * GRACE_ENOMEM  out of memory
 */
GRACE_EXTERN int grace_group_add(grace_group *g, const char *name,
                                 const grace_group_part_ops *ops, void *data,
                                 grace_group_part **out);

/*
 * Adds HTTP server |srv| as a part: start is grace_http_server_start (a
 * server already started is accepted as it is), begin is
 * grace_http_server_shutdown_begin (listeners closed, idle connections
 * closed, drained the moment the last connection closes: the group
 * watches grace_http_server_drained_fd), force is
 * grace_http_server_close, and the stats come from grace_http_server_stats.
 * |srv| is borrowed until grace_group_free, and must not be freed before.
 * Returns as grace_group_add.
 */
GRACE_EXTERN int grace_group_add_http(grace_group *g, const char *name,
                                      grace_http_server *srv);

/* Declared in grace/grpc.h and grace/worker.h. */
typedef struct grace_grpc_server grace_grpc_server;
typedef struct grace_worker grace_worker;

/*
 * Adds gRPC server |srv| as a part: start is grace_grpc_server_start (a
 * server already started is accepted as it is); in phase 1 the health
 * service turns NOT_SERVING, for the whole server and for every service
 * (grace_grpc_server_set_all_not_serving), while the calls go on being
 * served through the shutdown delay; begin is
 * grace_grpc_server_graceful_stop_begin (listeners closed, the two-phase
 * GOAWAY, drained the moment the last connection closes: the group
 * watches grace_grpc_server_drained_fd); force is grace_grpc_server_stop,
 * and the stats (RPCs, not HTTP requests, and connections) come from the
 * HTTP server underneath.  |srv| is borrowed until grace_group_free, and
 * must not be freed before.  Returns as grace_group_add.
 */
GRACE_EXTERN int grace_group_add_grpc(grace_group *g, const char *name,
                                      grace_grpc_server *srv);

/*
 * Adds periodic worker |w| as a part: start is grace_worker_start (a
 * worker already started is accepted as it is); begin is
 * grace_worker_stop_begin with the group's deadline (no tick is scheduled
 * any more, a tick in progress finishes, then the cleanup runs, bounded by
 * the deadline); drained when the worker is done (the group watches
 * grace_worker_done_fd); force is grace_worker_force, then a wait of at
 * most 100 ms for a task or cleanup that watches its context to return,
 * and the report says whether the cleanup finished ("cleanup cut short:
 * operation canceled", "task or cleanup still running").  |w| is
 * borrowed until grace_group_free, and must not be freed before.
 * Returns as grace_group_add.
 */
GRACE_EXTERN int grace_group_add_worker(grace_group *g, const char *name,
                                        grace_worker *w);

/* Declared in grace/tcp.h. */
typedef struct grace_tcp_server grace_tcp_server;

/*
 * Adds TCP server |srv| (a protocol of the caller's own, grace/tcp.h) as a
 * part: start is grace_tcp_server_start (a server already started is
 * accepted as it is); begin is grace_tcp_server_shutdown_begin (listeners
 * closed, idle connections closed, busy ones left to finish; drained the
 * moment the last connection closes: the group watches
 * grace_tcp_server_drained_fd), with the close spread a hand-over asks
 * for; force is grace_tcp_server_close (what it cut is the busy
 * connections); the stats count each busy period as a request (a command:
 * requests_total is busy_total, requests_inflight the busy connections,
 * requests_cut conns_cut) and the connections as the HTTP part does.  |srv|
 * is borrowed until grace_group_free, and must not be freed before.
 * Returns as grace_group_add.
 */
GRACE_EXTERN int grace_group_add_tcp(grace_group *g, const char *name,
                                     grace_tcp_server *srv);

/*
 * The notifier: the part is drained (|err| 0) or its stop failed (|err| <
 * 0, reported, and the group's result is then that error).  Callable from
 * any thread, also from inside begin.  Called while the part runs, before
 * any shutdown, it means the part stopped on its own: the group then
 * shuts everything down (as errgroup and oklog/run do), and the part's
 * begin is not called.  Calls after the first, and calls after the part
 * was forced, are ignored.
 */
GRACE_EXTERN void grace_group_part_done(grace_group_part *part, int err);

/*
 * Alternative notifier: the part is drained once descriptor |fd| is
 * readable (for example grace_http_server_drained_fd, a worker's done
 * descriptor, a context's done descriptor).  |fd| is borrowed: it must
 * stay open until the part is drained or forced.  Call it from begin.
 */
GRACE_EXTERN void grace_group_part_done_fd(grace_group_part *part, int fd);

/* How a part ended. */
typedef enum grace_group_part_state {
  GRACE_GROUP_PART_ADDED = 0, /* not started */
  GRACE_GROUP_PART_RUNNING,   /* started, no shutdown yet */
  GRACE_GROUP_PART_DRAINING,  /* begin called, not drained yet */
  GRACE_GROUP_PART_DRAINED,   /* reported drained, or stopped on its own */
  GRACE_GROUP_PART_FORCED,    /* forced at the deadline */
  GRACE_GROUP_PART_FAILED     /* start, begin or the stop failed */
} grace_group_part_state;

/* The part's state now; any thread. */
GRACE_EXTERN grace_group_part_state
grace_group_part_get_state(grace_group_part *part);

/* The part's name (borrowed from the group). */
GRACE_EXTERN const char *grace_group_part_name(grace_group_part *part);

/* The part named |name|, or NULL. */
GRACE_EXTERN grace_group_part *grace_group_find(grace_group *g,
                                                const char *name);

/* ---- hooks -------------------------------------------------------------- */

typedef enum grace_group_when {
  GRACE_GROUP_PRE_DRAIN = 0, /* phase 3, before any part begins */
  GRACE_GROUP_POST_DRAIN     /* phase 3, after every part drained */
} grace_group_when;

/* A hook's return value: it finishes later, with grace_group_hook_done. */
#define GRACE_GROUP_PENDING 1

/*
 * A hook, called on the group's thread.  |deadline| is done at the overall
 * deadline (already done for a post-drain hook run in phase 4); borrowed
 * until the hook is done.  Returns 0 when it has finished, a negative
 * error when it has failed (reported; the result is then that error), or
 * GRACE_GROUP_PENDING when it goes on asynchronously and will call
 * grace_group_hook_done.
 */
typedef int (*grace_group_hook_fn)(grace_group_hook *hook, grace_ctx *deadline,
                                   void *data);

/*
 * Adds a hook run in phase 3 (see grace_group_when), after the hooks of
 * the same kind added before it.  |name| is copied (for the logs); |data|
 * is borrowed until grace_group_free.  Only before grace_group_run.
 * Returns 0, GRACE_EINVAL, GRACE_ESTATE or GRACE_ENOMEM.
 */
GRACE_EXTERN int grace_group_add_hook(grace_group *g, grace_group_when when,
                                      const char *name, grace_group_hook_fn fn,
                                      void *data);

/*
 * Reports that an asynchronous hook has finished (|err| 0) or failed.  Any
 * thread; calls after the first, or after the hook was given up at the
 * deadline, are ignored.
 */
GRACE_EXTERN void grace_group_hook_done(grace_group_hook *hook, int err);

/* ---- running ------------------------------------------------------------ */

/* Room for grace_group_result.cut, NUL included. */
#define GRACE_GROUP_TEXT_LEN 512

/* What grace_group_run reports. */
typedef struct grace_group_result {
  /* The return value of grace_group_run. */
  int status;
  /* Why the shutdown began: grace_ctx_err of the stop context
   * (GRACE_ECANCELED for a signal), or GRACE_ESHUTDOWN when a part
   * stopped on its own; 0 if it never began (start failed). */
  int cause;
  /* True when the deadline passed and something was forced, given up or
   * skipped. */
  bool forced;
  unsigned parts_forced; /* parts forced at the deadline */
  unsigned parts_failed; /* parts whose start, begin or stop failed */
  unsigned hooks_cut;    /* hooks given up or skipped at the deadline */
  unsigned hooks_failed; /* hooks that returned an error */
  /* How long each phase took, indexed by grace_group_phase (index 0: how
   * long the group served, from the end of the starts to the stop). */
  grace_duration phase[5];
  /* From the first part's begin to the last part drained or forced. */
  grace_duration drain;
  /* From the stop to the end of the shutdown. */
  grace_duration total;
  /* Counted over the drain (from each part's begin to its end). */
  uint64_t requests_completed;
  uint64_t rpcs_completed;
  uint64_t idle_closed;
  uint64_t requests_cut; /* requests and RPCs cut */
  /* What was cut, for people: "http (1 request cut, 1 connection
   * closed); hook \"flush\" given up"; "" when nothing was. */
  char cut[GRACE_GROUP_TEXT_LEN];
  /* The PID of the successor this process handed over to (grace/upgrade.h):
   * the shutdown was a hand-over, with no not-ready phase and no delay;
   * 0 otherwise. */
  int handed_over;
} grace_group_result;

/*
 * Runs the group: starts every part, sends READY=1, blocks until |stop|
 * is done (or a part stops on its own), then shuts down as described at
 * the top of this file and returns when everything has drained or been
 * forced.  Call it once per group.  |result| may be NULL.
 *
 * Returns 0 when everything drained and every hook finished in time, or
 * one of the following negative error codes (also in result->status):
 *
 * GRACE_ETIMEDOUT  the deadline passed: something was forced (see
 *                  result->cut)
 * GRACE_EINVAL     |g| or |stop| is NULL
 * GRACE_ESTATE     grace_group_run was already called
 * another negative code: a part's start failed (the parts already started
 * were forced), or a part's stop or a hook failed (the first such error)
 *
 * A program turns it into its exit status: 0 for 0, 1 otherwise.
 */
GRACE_EXTERN int grace_group_run(grace_group *g, grace_ctx *stop,
                                 grace_group_result *result);

/*
 * True while the group serves and is not shutting down: from the moment
 * every part has started to the first phase of the shutdown (in the
 * successor of an upgrade, from the start of grace_group_run: see
 * grace_group_add_upgrader).  What /readyz and a gRPC health service
 * report.  Any thread.
 */
GRACE_EXTERN bool grace_group_ready(grace_group *g);

/* The current phase; any thread. */
GRACE_EXTERN grace_group_phase grace_group_phase_now(grace_group *g);

/* ---- health and metrics ------------------------------------------------- */

/*
 * Routes three paths of |srv| to the group (before the server starts):
 *
 *   /readyz   200 "ok" while grace_group_ready, else 503 "shutting down"
 *             (or "not ready" before the group serves)
 *   /livez    200 "ok" as long as the process answers
 *   /metrics  the Prometheus text exposition format 0.0.4
 *             (grace_group_metrics)
 *
 * GET and HEAD only (405 otherwise).  |srv| need not be a part of the
 * group.  Returns 0 or an error of grace_http_server_handle.
 */
GRACE_EXTERN int grace_group_http_health(grace_group *g,
                                         grace_http_server *srv);

/*
 * Renders the group's metrics in the Prometheus text format 0.0.4, each
 * family with its # HELP and # TYPE lines:
 *
 *   grace_ready                          gauge, 1 while ready
 *   grace_shutdown_phase                 gauge, 0..4 (grace_group_phase)
 *   grace_shutdown_phase_duration_seconds{phase}  gauge, finished phases
 *   grace_drain_duration_seconds         gauge, the drain so far or in all
 *   grace_part_drain_duration_seconds{part}       gauge, per part
 *   grace_requests_cut_total{part}       counter, requests and RPCs cut
 *   grace_http_requests_inflight{part}   gauge   (parts with requests)
 *   grace_http_requests_total{part}      counter
 *   grace_http_connections{part,state}   gauge, state new|active|idle
 *                                        (parts with connections)
 *   grace_http_connections_idle_closed_total{part}  counter
 *   grace_grpc_rpcs_inflight{part}       gauge   (parts with RPCs)
 *   grace_grpc_rpcs_total{part}          counter
 *
 * Stores a new NUL-terminated text in |*text| (free it with free(3)) and
 * its length in |*len| (may be NULL).  Any thread.  Returns 0 or
 * GRACE_EINVAL, GRACE_ENOMEM.
 */
GRACE_EXTERN int grace_group_metrics(grace_group *g, char **text,
                                     size_t *len);

/* The Content-Type of grace_group_metrics' text. */
#define GRACE_GROUP_METRICS_CONTENT_TYPE \
  "text/plain; version=0.0.4; charset=utf-8"

/* ---- the deadline from the environment ---------------------------------- */

/*
 * Reads the overall deadline from the environment:
 *
 *  1. GRACE_SHUTDOWN_TIMEOUT, a Go duration ("25s", "1m30s") > 0, if set
 *     and not empty;
 *  2. else TERMINATION_GRACE_PERIOD_SECONDS, a whole number of seconds
 *     >= 0 (the pod's terminationGracePeriodSeconds, passed in by the pod
 *     spec), turned into a deadline by
 *     grace_group_timeout_for_grace_period.
 *
 * Returns 0 and stores the deadline in |*out|; GRACE_ENOENT when neither
 * variable is set (|*out| untouched); or GRACE_ESYNTAX / GRACE_ERANGE with
 * a message naming the variable in |err| (|errlen| bytes, NUL terminated;
 * may be NULL), for example
 * `GRACE_SHUTDOWN_TIMEOUT: time: invalid duration "abc"`.
 */
GRACE_EXTERN int grace_group_env_timeout(grace_duration *out, char *err,
                                         size_t errlen);

/*
 * The rule that fits the overall deadline under a grace period |period|
 * (after which Kubernetes or systemd sends SIGKILL), leaving a margin for
 * the force, the last log lines and the exit:
 *
 *   margin   = period / 10, at least 1 s and at most 5 s
 *   deadline = period - margin, but at least period / 2
 *
 * so 30 s gives 27 s, 60 s gives 55 s, 120 s gives 115 s, 5 s gives 4 s,
 * 1 s gives 500 ms; a period <= 0 gives 0 (force at once).  Kubernetes
 * counts a preStop hook's time in the grace period: subtract it first.
 */
GRACE_EXTERN grace_duration
grace_group_timeout_for_grace_period(grace_duration period);

#ifdef __cplusplus
}
#endif

#endif /* GRACE_GROUP_H */
