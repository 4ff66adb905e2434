/*
 * grace: zero-downtime restart.  The running process starts its successor,
 * hands it the same listening sockets, waits until the successor says it
 * is ready, and only then stops accepting and drains (nginx's binary
 * upgrade, HAProxy's master-worker reload, Envoy's hot restart, tableflip).
 *
 *   grace_upgrader *u;
 *   grace_upgrader_options uo;
 *   grace_upgrader_options_init(&uo);
 *   uo.pidfile = "/run/app.pid";
 *   grace_upgrader_new(&uo, argc, argv, &u);    // early in main, no threads
 *   grace_ctx *stop = grace_signal_context();
 *   int fd;
 *   grace_upgrader_listen(u, "http", ":8000", &fd);  // inherited or bound
 *   grace_http_server_listen_fd(srv, fd);
 *   grace_group_add_http(g, "http", srv);
 *   grace_group_add_upgrader(g, "upgrade", u);  // after the servers
 *   grace_group_run(g, stop, &res);             // SIGUSR2 upgrades
 *   grace_group_free(g);
 *   ...
 *   grace_upgrader_free(u);
 *
 * The sequence.  An upgrade is asked for by the signal (SIGUSR2 unless
 * options.signal says otherwise), by grace_upgrader_upgrade, or by the
 * control command grace-upgrade over options.control_path.  The running
 * process then:
 *
 *  1. starts the executable it was started from: argv[0] made absolute when
 *     grace_upgrader_new ran (a binary replaced at that path is the one
 *     started; symbolic links are not resolved, so a "current" link that
 *     was switched is followed), or options.exe, with the same arguments
 *     and environment.  The named descriptors (the listeners, and any
 *     grace_upgrader_pass_fd) are inherited as descriptors 3, 4, ... with
 *     their names, and a control socket after them: never a second bind
 *     beside the first (closing that one would reset its accept queue);
 *  2. waits until the successor is ready: its group has started every part
 *     (so every inherited listener is served) and options.ready_check, if
 *     any, has passed.  Meanwhile both processes accept from the shared
 *     queues, and the successor's readiness (/readyz) already says ready:
 *     it answers for an endpoint that is ready, so that a load balancer's
 *     health check landing on it while it starts sees no flap;
 *  3. writes the PID file naming the successor, tells systemd
 *     MAINPID=<successor> (so that systemd follows it and does not kill
 *     it), and stops accepting: its group drains as for a signal, minus
 *     the not-ready phase and the shutdown delay (the endpoint stays up,
 *     only the process behind it changes), and minus STOPPING=1.  Idle
 *     HTTP/1.1 keep-alive connections are not closed at once: each one's
 *     next response says Connection: close, spread over
 *     options.close_spread, so that no client's next request races a
 *     close.  HTTP/2 connections get the two-phase GOAWAY;
 *  4. exits 0 once drained (grace_group_run returns 0,
 *     result->handed_over names the successor).
 *
 * Failure before ready (the successor exits, crashes, says it is not
 * ready, or is not ready within options.ready_timeout): the running
 * process goes on serving as if nothing happened, logs why, and the
 * requester learns it (grace_upgrader_upgrade's return value and message,
 * grace-upgrade's exit status).  A successor that still runs is told to
 * stop (SIGTERM): it served the shared queues meanwhile, and drains what
 * it accepted instead of losing it; it is killed (SIGKILL) if it has not
 * exited 10 s later, and reaped either way.  Failure after ready,
 * while the old process drains: the old process still holds a copy of
 * every listening socket (nothing is refused, connections wait in the
 * queues), starts the binary it runs itself (/proc/self/exe: the previous
 * version) on them, and hands over to that one: the rollback is logged.
 *
 * One upgrade at a time: a request while one is in flight, while this
 * process's own predecessor is still handing over, after this process
 * handed over, or while options.max_draining older generations still
 * drain, is refused with a message saying which.  Every generation drains
 * under its group's deadline, so none lingers past it.
 *
 * Threads.  grace_upgrader_new reads and clears the environment and
 * installs the signal handler: call it early in main, before any thread
 * starts (as grace_signal_context).  Once ready, the upgrader runs one
 * thread of its own that waits on descriptors only (signal, control
 * socket, successor, predecessor): no polling.  grace_upgrader_upgrade
 * may be called from any thread.
 *
 * Children.  A process reaps the successors it starts while it lives.  A
 * generation that outlives its parent is reparented (to init, systemd, or
 * a subreaper) as for any daemon.
 */
#ifndef GRACE_UPGRADE_H
#define GRACE_UPGRADE_H

#include <stdbool.h>
#include <stddef.h>

#include "grace/context.h"
#include "grace/duration.h"
#include "grace/error.h"
#include "grace/group.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The upgrader.  Opaque; grace_upgrader_new / grace_upgrader_free. */
typedef struct grace_upgrader grace_upgrader;

/* The ready timeout used when options.ready_timeout is 0. */
#define GRACE_UPGRADE_DEFAULT_READY_TIMEOUT (30 * GRACE_SECOND)

/* The close spread used when options.close_spread is 0. */
#define GRACE_UPGRADE_DEFAULT_CLOSE_SPREAD (1 * GRACE_SECOND)

/* The name under which the control socket is handed over. */
#define GRACE_UPGRADE_CONTROL_NAME "grace.control"

/*
 * A readiness check of the program's own, run in the successor after its
 * group has started every part and before it says ready: first within
 * grace_upgrader_ready, then, while it answers "not yet", on the
 * upgrader's thread every 10 ms (meanwhile the process serves).  Returns
 * 0 when ready, GRACE_EBUSY when not yet, or another negative error: the
 * successor then tells its predecessor that it is not ready and the
 * upgrade fails.  Also run in a first process, before it writes the PID
 * file.
 */
typedef int (*grace_upgrader_check_fn)(grace_upgrader *u, void *data);

/*
 * The settings.  Fill with grace_upgrader_options_init, then set what you
 * need; every field's zero value is its default.
 */
typedef struct grace_upgrader_options {
  /* sizeof(grace_upgrader_options) as the caller compiled it; set by
   * grace_upgrader_options_init.  Do not change it. */
  size_t size;
  /* The signal that asks for an upgrade: 0 means SIGUSR2, a negative
   * value none (upgrades only by API or control socket).  SIGINT, SIGTERM,
   * SIGKILL, SIGSTOP, SIGPIPE and SIGCHLD are refused (GRACE_EINVAL). */
  int signal;
  /* The executable to start; NULL (the default) means argv[0] as given to
   * grace_upgrader_new, made absolute then (searched in PATH when it has
   * no '/', as the shell did). */
  const char *exe;
  /* How long the successor may take to become ready; 0 means
   * GRACE_UPGRADE_DEFAULT_READY_TIMEOUT. */
  grace_duration ready_timeout;
  /* Keep-alive close spread of the old process's drain (see above); 0
   * means GRACE_UPGRADE_DEFAULT_CLOSE_SPREAD.  A server's own larger
   * close_spread wins. */
  grace_duration close_spread;
  /* Older generations that may still be draining when an upgrade starts;
   * 0 means 1: an upgrade waits for the previous old process to exit. */
  unsigned max_draining;
  /* A file that always names the process that accepts (decimal PID and a
   * newline), written atomically (a temporary file renamed over it): by
   * the first process once ready, by the old process once its successor
   * is ready, by a rollback.  Removed by grace_upgrader_free in the
   * process it names, unless that process handed over.  NULL: none. */
  const char *pidfile;
  /* A Unix socket path where grace-upgrade (or anything that writes
   * "upgrade\n" and reads one line) asks for an upgrade and gets "ok
   * <pid>\n" once the successor is ready, or "error <reason>\n".  Handed
   * over like a listener, so the path keeps working across upgrades.
   * Created with mode 0600; a stale socket file at the path is replaced,
   * while a live one, or a file that is no socket, makes
   * grace_upgrader_ready fail with GRACE_EADDRINUSE.  NULL: none. */
  const char *control_path;
  /* Also park the listeners in systemd's file descriptor store
   * (FDSTORE=1 with their names; needs FileDescriptorStoreMax= in the
   * unit), so that a `systemctl restart` finds them in LISTEN_FDS and
   * refuses nothing.  Ignored without NOTIFY_SOCKET. */
  bool fdstore;
  /* Optional readiness check (see grace_upgrader_check_fn) and its data. */
  grace_upgrader_check_fn ready_check;
  void *ready_data;
  /* Do not log. */
  bool quiet;
} grace_upgrader_options;

/* Fills |opts| with the defaults (all zero, |size| set). */
GRACE_EXTERN void grace_upgrader_options_init(grace_upgrader_options *opts);

/*
 * Creates the upgrader of this process.  |opts| is copied (NULL: the
 * defaults); |argc| and |argv| are the program's, copied to start the
 * successor with.  Adopts what this process inherited: from its
 * predecessor (an upgrade), or from systemd (LISTEN_FDS with
 * LISTEN_FDNAMES, socket activation or the fd store); the variables are
 * removed from the environment.  Installs the upgrade signal's handler.
 * Only one upgrader may exist in a process.  Call it before any thread
 * starts.  Returns 0 and stores the upgrader in |*out|, or:
 *
 * GRACE_EINVAL  NULL |out| or |argv|, argc < 1, a bad option, or the
 *               inherited descriptors do not match their variables
 * GRACE_ESTATE  an upgrader exists already
 * GRACE_ENOENT  argv[0] cannot be found (and no options.exe)
 * GRACE_ENOMEM  out of memory, or another negative errno
 */
GRACE_EXTERN int grace_upgrader_new(const grace_upgrader_options *opts,
                                    int argc, char **argv,
                                    grace_upgrader **out);

/*
 * Closes every descriptor the upgrader holds, restores the signal's
 * disposition, removes the PID file if it names this process and this
 * process did not hand over, and frees |u|.  Call it after the group was
 * freed (or stopped).  NULL-safe.
 */
GRACE_EXTERN void grace_upgrader_free(grace_upgrader *u);

/*
 * A listening socket named |name| (for example "http"): the one this
 * process inherited under that name if any, else a new one bound to
 * |addr| ("host:port", ":port", as grace_http_server_listen) with
 * |backlog| (0: 511).  Stores in |*fd| a descriptor the caller owns (give
 * it to grace_http_server_listen_fd, which takes it); the upgrader keeps a
 * copy of its own to hand to successors.  Sets |*inherited| (may be NULL)
 * to whether it was inherited.  Before grace_group_run.  Returns 0 or:
 *
 * GRACE_EINVAL  NULL or empty |name|, a name with ':' or '=' or a
 *               newline, |addr| malformed, or NULL and nothing inherited
 * GRACE_EBUSY   |name| was already taken
 * GRACE_ESTATE  the upgrader is running already
 * a negative errno from socket, bind or listen (GRACE_EADDRINUSE)
 */
GRACE_EXTERN int grace_upgrader_listen(grace_upgrader *u, const char *name,
                                       const char *addr, int backlog, int *fd,
                                       bool *inherited);

/*
 * The name of inherited listener number |index| (0, 1, ... in the order
 * they were passed), or NULL past the last one.  Lets a program serve
 * whatever it was given (grace_upgrader_listen(u, name, NULL, ...)).
 */
GRACE_EXTERN const char *grace_upgrader_inherited_name(grace_upgrader *u,
                                                       size_t index);

/*
 * State that is not a listener (a memfd holding a counter, a cache file)
 * handed to every successor under |name|.  |fd| is borrowed: the upgrader
 * duplicates it.  Returns 0, GRACE_EINVAL, GRACE_EBUSY (name taken),
 * GRACE_ENOMEM.
 */
GRACE_EXTERN int grace_upgrader_pass_fd(grace_upgrader *u, const char *name,
                                        int fd);

/*
 * A descriptor (not a listener) inherited under |name|, transferred to
 * the caller (a second call returns GRACE_ENOENT), or GRACE_ENOENT.
 */
GRACE_EXTERN int grace_upgrader_take_fd(grace_upgrader *u, const char *name);

/* True when this process was started by an upgrade (or a rollback). */
GRACE_EXTERN bool grace_upgrader_is_successor(grace_upgrader *u);

/* The generation: 1 for the first process, one more at each upgrade. */
GRACE_EXTERN unsigned grace_upgrader_generation(grace_upgrader *u);

/*
 * Says that this process is ready: in a successor, tells the predecessor
 * (which then drains); in the first process, writes the PID file.  Runs
 * options.ready_check first (while it says "not yet", the thread asks it
 * again and says ready later).  Starts the upgrader's thread, which
 * answers the signal and the control socket.  grace_group_add_upgrader
 * calls it when the group has started every other part; a program
 * without a group calls it once its servers serve.  Returns 0, or:
 *
 * GRACE_ESTATE      called twice
 * GRACE_EADDRINUSE  options.control_path is another live socket, or not a
 *                   socket
 * a negative errno (no thread, no control socket)
 */
GRACE_EXTERN int grace_upgrader_ready(grace_upgrader *u);

/*
 * Starts an upgrade and waits for its end.  Any thread (not the group's
 * own thread inside a hook).  Returns 0 once the successor is ready (this
 * process then drains), or one of the following, with a message for
 * people in |msg| (|len| bytes, NUL terminated; may be NULL):
 *
 * GRACE_EBUSY      an upgrade is in flight, the predecessor is still
 *                  handing over, or max_draining generations still drain
 * GRACE_ESTATE     not ready yet, shutting down, or handed over already
 * GRACE_ETIMEDOUT  the successor was not ready in time (it is told to
 *                  stop)
 * GRACE_ECHILD     the successor exited, was killed, or said it is not
 *                  ready
 * another negative errno: the successor could not be started
 */
GRACE_EXTERN int grace_upgrader_upgrade(grace_upgrader *u, char *msg,
                                        size_t len);

/*
 * Stops upgrading, for a plain shutdown: a successor not ready yet is
 * killed, later requests are refused, the control socket is closed and
 * removed, and the upgrader's copies of the listeners are closed, so that
 * the sockets close when the servers close theirs (new connections are
 * then refused, as after any shutdown).  Returns once done.  The group
 * part calls it at the start of a shutdown; a program without a group
 * calls it before it shuts its servers down.  Any thread; idempotent;
 * nothing to do after a hand-over.  NULL-safe.
 */
GRACE_EXTERN void grace_upgrader_stop(grace_upgrader *u);

/*
 * A context cancelled once this process has handed over to a ready
 * successor: the stop context of a program that runs without a group.
 * Owned by the upgrader.
 */
GRACE_EXTERN grace_ctx *grace_upgrader_context(grace_upgrader *u);

/*
 * Adds the upgrader to a group as a part named |name|, to be added after
 * the servers, so that it starts last (grace_upgrader_ready, once every
 * server serves); a hand-over makes the group drain as described at the
 * top of this file; a shutdown by signal stops upgrading at its first
 * phase (grace_upgrader_stop).  In a successor the group is ready
 * (grace_group_ready) from the start of grace_group_run rather than once
 * every part has started (the endpoint is ready: its predecessor serves
 * it), and turns not ready again if a part fails to start.  |u| is
 * borrowed until grace_group_free.  Returns as grace_group_add.
 */
GRACE_EXTERN int grace_group_add_upgrader(grace_group *g, const char *name,
                                          grace_upgrader *u);

#ifdef __cplusplus
}
#endif

#endif /* GRACE_UPGRADE_H */
