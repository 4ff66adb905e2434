/*
 * grace: the two systemd protocols a service needs, written directly (no
 * libsystemd): readiness notification (sd_notify) and socket activation
 * (sd_listen_fds).
 *
 * Notification.  When systemd starts a Type=notify service it sets
 * NOTIFY_SOCKET to the address of a datagram socket: an absolute path
 * ("/run/systemd/notify") or an abstract name written with a leading '@'.
 * The service sends newline-separated KEY=VALUE assignments to it:
 * "READY=1" once it serves, "STOPPING=1" when it begins to shut down,
 * "EXTEND_TIMEOUT_USEC=<usec>" to ask for more time while a long drain goes
 * on, "STATUS=<text>" for systemctl status.  Without NOTIFY_SOCKET every
 * call is a no-op, so a program may always call them.
 *
 * Socket activation.  systemd (or systemd-socket-activate) opens the
 * listening sockets itself and passes them as descriptors 3, 4, ... with
 * LISTEN_FDS=<count>, LISTEN_PID=<pid of the service> and optionally
 * LISTEN_FDNAMES=<name>:<name>:...  The descriptors are adopted with
 * grace_http_server_listen_fd.
 *
 * The grace_group (grace/group.h) sends READY=1, STOPPING=1 and the
 * EXTEND_TIMEOUT_USEC messages itself.
 */
#ifndef GRACE_SYSTEMD_H
#define GRACE_SYSTEMD_H

#include <stdbool.h>
#include <stddef.h>

#include "grace/error.h"
#include "grace/log.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The first descriptor passed by socket activation (SD_LISTEN_FDS_START). */
#define GRACE_SD_LISTEN_FDS_START 3

/*
 * Sends |state| (for example "READY=1" or "STOPPING=1\nSTATUS=draining")
 * as one datagram to $NOTIFY_SOCKET.  The environment is read at each call
 * and left as it is.  Thread-safe; never blocks (the socket is
 * non-blocking: a full queue drops the message and reports -EAGAIN).
 *
 * Returns 1 if the message was sent, 0 if NOTIFY_SOCKET is unset or empty
 * (nothing to do), or one of the following negative error codes:
 *
 * GRACE_EINVAL     |state| is NULL or empty, or the address does not fit
 *                  in a sockaddr_un
 * -EAFNOSUPPORT    NOTIFY_SOCKET is neither an absolute path nor '@'name
 *                  (systemd's vsock: addresses are not supported)
 * another negated errno from socket(2) or sendto(2) (-ECONNREFUSED when
 * nobody listens, -EAGAIN when the queue is full)
 */
GRACE_EXTERN int grace_sd_notify(const char *state);

/* The most descriptors grace_sd_notify_with_fds sends in one message. */
#define GRACE_SD_NOTIFY_MAX_FDS 64

/*
 * grace_sd_notify with descriptors attached (sd_pid_notify_with_fds(3)):
 * the |n| descriptors of |fds| travel with the message as SCM_RIGHTS, as
 * systemd's file descriptor store wants them ("FDSTORE=1\nFDNAME=http";
 * the unit needs FileDescriptorStoreMax=).  The descriptors stay the
 * caller's.  Returns as grace_sd_notify; GRACE_EINVAL also when |n| is
 * larger than GRACE_SD_NOTIFY_MAX_FDS or |fds| is NULL with |n| > 0.
 */
GRACE_EXTERN int grace_sd_notify_with_fds(const char *state, const int *fds,
                                          size_t n);

/*
 * grace_sd_notify with a printf format; the message is at most 4095 bytes
 * (GRACE_EINVAL beyond).  Returns as grace_sd_notify.
 */
GRACE_EXTERN int grace_sd_notifyf(const char *fmt, ...) GRACE_PRINTF(1, 2);

/*
 * True if NOTIFY_SOCKET is set and not empty: the process runs under a
 * service manager that wants notifications.
 */
GRACE_EXTERN bool grace_sd_notify_wanted(void);

/*
 * sd_listen_fds(3): returns how many listening descriptors were passed to
 * this process (they are GRACE_SD_LISTEN_FDS_START to
 * GRACE_SD_LISTEN_FDS_START + n - 1), and sets FD_CLOEXEC on each, so they
 * do not leak into programs this process runs.  Returns 0 when LISTEN_FDS
 * or LISTEN_PID is unset, or when LISTEN_PID is not this process (the
 * variables were meant for a parent).  If |unset_environment| is true,
 * LISTEN_PID, LISTEN_FDS and LISTEN_FDNAMES are removed from the
 * environment in every case, errors included, so children do not see
 * them.  Not thread-safe (it changes the environment): call it early in
 * main, before any thread starts.
 *
 * Returns the count (>= 0), or one of the following negative error codes:
 *
 * GRACE_EINVAL  LISTEN_PID or LISTEN_FDS is not a valid number
 * GRACE_ERANGE  LISTEN_FDS is too large
 * -EBADF        a passed descriptor is not open
 */
GRACE_EXTERN int grace_sd_listen_fds(bool unset_environment);

/*
 * Like grace_sd_listen_fds, and also stores in |*names| a new array of
 * n + 1 pointers: the name of each descriptor from LISTEN_FDNAMES
 * (systemd's FileDescriptorName=, "unknown" when the variable is unset),
 * then NULL.  The array and its strings are allocated together and
 * transferred to the caller, who frees them with one
 * grace_sd_listen_names_free.  When the count is 0, |*names| is set to
 * NULL.  On error |*names| is left untouched.  Besides the codes of
 * grace_sd_listen_fds it returns GRACE_EINVAL when LISTEN_FDNAMES does not
 * hold exactly one name per descriptor, and GRACE_ENOMEM.
 */
GRACE_EXTERN int grace_sd_listen_fds_with_names(bool unset_environment,
                                                char ***names);

/* Frees an array from grace_sd_listen_fds_with_names.  NULL-safe. */
GRACE_EXTERN void grace_sd_listen_names_free(char **names);

#ifdef __cplusplus
}
#endif

#endif /* GRACE_SYSTEMD_H */
