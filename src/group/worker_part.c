/*
 * A periodic worker as a group part, built only on the public worker API
 * (grace/worker.h): begin is stop_begin with the group's deadline, drained
 * is the worker's done descriptor, force is grace_worker_force.
 */
#include <stdio.h>

#include "grace/worker.h"
#include "group/group_int.h"

/* How long force waits for a task or cleanup that watches its context:
 * long enough for one that returns on cancellation, short enough not to
 * matter against a deadline. */
#define FORCE_WAIT (100 * GRACE_MILLISECOND)

static int worker_start(grace_group_part *part, void *data) {
  (void)part;
  int rv = grace_worker_start(data);
  /* GRACE_ESTATE: its owner started it already, which is fine. */
  return rv == GRACE_ESTATE ? 0 : rv;
}

/*
 * The worker finishes its tick, runs its cleanup under the group's
 * deadline (|deadline| is referenced by the worker until it is done), and
 * is drained when its done descriptor turns readable.  The descriptor
 * belongs to the worker and stays open until grace_worker_free, which the
 * caller may only call after grace_group_free.
 */
static int worker_begin(grace_group_part *part, grace_ctx *deadline,
                        void *data) {
  grace_worker *w = data;
  int rv = grace_worker_stop_begin(w, deadline);
  if (rv != 0)
    return rv;
  int fd = grace_worker_done_fd(w);
  if (fd < 0)
    return fd;
  grace_group_part_done_fd(part, fd);
  return 0;
}

static int worker_force(grace_group_part *part, char *what, size_t len,
                        void *data) {
  grace_worker *w = data;
  int status = 0;
  (void)part;
  int rv = grace_worker_force(w);
  if (rv == GRACE_EBUSY)
    rv = grace_worker_wait(w, FORCE_WAIT);
  if (rv == 0)
    rv = grace_worker_status(w, &status);
  if (rv != 0) {
    /* A task or cleanup that does not watch its context keeps the thread;
     * grace_worker_free waits for it. */
    snprintf(what, len, "task or cleanup still running");
    return 1;
  }
  if (status != 0) {
    snprintf(what, len, "cleanup cut short: %s", grace_strerror(status));
    return 1;
  }
  snprintf(what, len, "cleanup finished");
  return 0;
}

int grace_group_add_worker(grace_group *g, const char *name,
                           grace_worker *w) {
  static const grace_group_part_ops ops = {
      .start = worker_start,
      .begin = worker_begin,
      .force = worker_force,
  };
  if (w == NULL)
    return GRACE_EINVAL;
  return grace_group_add(g, name, &ops, w, NULL);
}
