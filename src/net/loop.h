/*
 * A set of libuv event loops, one per thread, and the three services every
 * server built on them needs:
 *
 *  - events: bits any thread can raise on a loop (shutdown, close, stop),
 *    delivered on the loop's thread through one uv_async_t;
 *  - posts: intrusive work items any thread can queue to a loop (a new
 *    connection handed over, a response produced on another thread);
 *  - deadline lists: per-loop FIFO lists whose entries all share one
 *    timeout, so appending keeps them sorted and one uv_timer_t per loop
 *    serves every connection (an idle connection holds no timer handle).
 *
 * A set of one loop can also run on a uv_loop_t its caller owns and runs
 * (grace__loopset_start_on, "external" mode): no thread of ours, our
 * handles are opened on that loop and closed by grace__loopset_stop, after
 * which the caller's uv_run can end and uv_loop_close succeed.
 */
#ifndef GRACE_NET_LOOP_H
#define GRACE_NET_LOOP_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include <uv.h>

#include "net/list.h"

#define GRACE__TLISTS 10

typedef struct grace__loop grace__loop;
typedef struct grace__loopset grace__loopset;
typedef struct grace__post grace__post;

/* A queued work item; embed it in the object it concerns. */
struct grace__post {
  grace__list link;
  void (*fn)(grace__loop *loop, grace__post *post);
};

/* An entry of a deadline list; embed it in the object it concerns. */
typedef struct grace__tnode {
  grace__list link;
  uint64_t deadline; /* uv_now() milliseconds */
} grace__tnode;

typedef struct grace__tlist {
  grace__list head;
  uint64_t timeout; /* milliseconds; 0 means entries never expire */
} grace__tlist;

typedef struct grace__loop_callbacks {
  /* Raised event bits, on the loop thread. */
  void (*on_events)(grace__loop *loop, unsigned bits);
  /* An entry of list |list| reached its deadline; it is already unlinked. */
  void (*on_expire)(grace__loop *loop, unsigned list, grace__tnode *node);
  /* Runs on the starting thread once the loop is initialised and before
   * its thread starts; a non-zero return fails grace__loopset_start. */
  int (*on_open)(grace__loop *loop);
  /* Runs on the loop thread before uv_run, and after it returns. */
  void (*on_start)(grace__loop *loop);
  void (*on_stop)(grace__loop *loop);
  /* External mode, at stop, after on_stop: closes the protocol's own
   * per-loop handles through grace__loop_close_handle. */
  void (*on_close)(grace__loop *loop);
  /* External mode: every handle of ours has closed (the protocol may free
   * the set from here on). */
  void (*on_closed)(grace__loop *loop);
  /* External mode: the timer of grace__loop_deadline fired. */
  void (*on_deadline)(grace__loop *loop);
} grace__loop_callbacks;

struct grace__loop {
  uv_loop_t *uv; /* &own, or the caller's loop in external mode */
  uv_loop_t own;
  grace__loopset *set;
  unsigned index;
  pthread_t thread;
  pthread_t self; /* set by the loop thread itself (__atomic builtins) */
  uv_async_t async;
  uv_timer_t timer;
  uint64_t timer_due; /* deadline the timer is armed for, 0 if stopped */
  uv_timer_t deadline;  /* external mode: grace__loop_deadline */
  unsigned closing;     /* external mode: our handles not yet closed */
  int stopping;         /* external mode: the stop began */
  grace__tlist tl[GRACE__TLISTS];
  pthread_mutex_t lock; /* guards posts */
  grace__list posts;
  atomic_uint events;
  void *data; /* the protocol's per-loop state */
};

/* The reserved event bit that stops a loop (grace__loopset_stop). */
#define GRACE__EV_STOP 0x80000000u

struct grace__loopset {
  grace__loop *loops;
  unsigned n;
  grace__loop_callbacks cb;
  void *data;
  int started;
  int external; /* runs on the caller's uv_loop_t (grace__loopset_start_on) */
  /* External mode: some handle of ours is open or closing on the caller's
   * loop, so the set must not be freed yet. */
  int live;
};

/* Initialises |n| loops (not yet running).  Returns 0 or a negative error. */
int grace__loopset_init(grace__loopset *set, unsigned n,
                        const grace__loop_callbacks *cb, void *data);

/* Starts one thread per loop.  Returns 0 or a negative error (then no
 * thread is left running). */
int grace__loopset_start(grace__loopset *set);

/* Starts a set of one loop on |uv|, the caller's loop, on the thread that
 * runs it (the call must be made there).  Opens our handles on |uv| and
 * runs on_open, then on_start.  Returns 0 or a negative error; on failure
 * the handles opened so far are closing (set->live until they have). */
int grace__loopset_start_on(grace__loopset *set, uv_loop_t *uv);

/* Stops every loop (each closes its handles after on_stop) and joins the
 * threads.  Safe if never started.  In external mode it does not wait:
 * the stop runs on the loop (at once when called there), closes every
 * handle of ours (on_stop, on_close, then the loop's own) and ends with
 * on_closed. */
void grace__loopset_stop(grace__loopset *set);

/* The loop of |set| whose thread is the caller's, or NULL. */
grace__loop *grace__loopset_current(const grace__loopset *set);

/* Delivers |bits| to |loop|: on_events runs at once when the caller is on
 * the loop's thread of an external set (nothing of ours waits there), and
 * is raised otherwise (grace__loop_raise). */
void grace__loop_deliver(grace__loop *loop, unsigned bits);

/* External mode, on the loop thread: runs on_deadline in |ms| ms. */
void grace__loop_deadline(grace__loop *loop, uint64_t ms);

/* External mode, from on_close: closes |handle| and counts it until its
 * close callback has run (its data pointer is overwritten). */
void grace__loop_close_handle(grace__loop *loop, uv_handle_t *handle);

/* Frees what init allocated; after stop. */
void grace__loopset_free(grace__loopset *set);

/* Raises |bits| on |loop|; any thread. */
void grace__loop_raise(grace__loop *loop, unsigned bits);

/* Queues |post| to run on |loop|'s thread; any thread. */
void grace__loop_post(grace__loop *loop, grace__post *post);

/* True when called on |loop|'s own thread. */
int grace__loop_is_current(const grace__loop *loop);

/* Sets the timeout of deadline list |list| (milliseconds). */
void grace__loop_tlist_set(grace__loop *loop, unsigned list, uint64_t timeout);

/* Appends |node| to list |list| with deadline now + the list's timeout
 * (no-op when that timeout is 0); unlinks it from any list first. */
void grace__loop_tlist_add(grace__loop *loop, unsigned list,
                           grace__tnode *node);

/* Appends |node| to list |list| with the explicit |deadline|, which must
 * not be earlier than the list's tail (the caller guarantees order). */
void grace__loop_tlist_add_at(grace__loop *loop, unsigned list,
                              grace__tnode *node, uint64_t deadline);

/* Unlinks |node| from its list (no-op when unlinked). */
void grace__loop_tlist_remove(grace__loop *loop, grace__tnode *node);

#endif /* GRACE_NET_LOOP_H */
