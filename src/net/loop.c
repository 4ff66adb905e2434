/*
 * Event loop threads, cross-thread events and posts, deadline lists.
 * See loop.h for the contracts.
 */
#include "net/loop.h"

#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "grace/error.h"

static void on_async(uv_async_t *handle);
static void on_timer(uv_timer_t *handle);

int grace__loopset_init(grace__loopset *set, unsigned n,
                        const grace__loop_callbacks *cb, void *data) {
  memset(set, 0, sizeof(*set));
  if (n == 0)
    return GRACE_EINVAL;
  set->loops = calloc(n, sizeof(*set->loops));
  if (set->loops == NULL)
    return GRACE_ENOMEM;
  set->n = n;
  set->cb = *cb;
  set->data = data;
  for (unsigned i = 0; i < n; i++) {
    grace__loop *loop = &set->loops[i];
    loop->set = set;
    loop->index = i;
    grace__list_init(&loop->posts);
    for (unsigned l = 0; l < GRACE__TLISTS; l++)
      grace__list_init(&loop->tl[l].head);
    atomic_init(&loop->events, 0);
    pthread_mutex_init(&loop->lock, NULL);
  }
  return 0;
}

/*
 * The uv handles are initialised on the creating thread before the loop
 * thread starts; that is allowed because nothing runs the loop yet, and it
 * lets start report failures synchronously.  With |ext| (external mode)
 * they are opened on the caller's loop, from the thread that runs it.
 */
static int loop_open(grace__loop *loop, uv_loop_t *ext) {
  int rv;
  if (ext == NULL) {
    rv = uv_loop_init(&loop->own);
    if (rv != 0)
      return rv;
    loop->uv = &loop->own;
    loop->own.data = loop;
  } else {
    loop->uv = ext;
  }
  rv = uv_async_init(loop->uv, &loop->async, on_async);
  if (rv != 0)
    goto fail_loop;
  loop->async.data = loop;
  if (ext != NULL) {
    /* uv_timer_init cannot fail (libuv returns 0): on the caller's loop
     * only uv_async_init can, and then nothing of ours is open there. */
    uv_timer_init(loop->uv, &loop->timer);
    loop->timer.data = loop;
    uv_timer_init(loop->uv, &loop->deadline);
    loop->deadline.data = loop;
    return 0;
  }
  rv = uv_timer_init(loop->uv, &loop->timer);
  if (rv != 0)
    goto fail_async;
  loop->timer.data = loop;
  return 0;

fail_async:
  uv_close((uv_handle_t *)&loop->async, NULL);
  uv_run(loop->uv, UV_RUN_NOWAIT);
fail_loop:
  if (ext == NULL)
    uv_loop_close(loop->uv);
  return rv;
}

static void close_walk_cb(uv_handle_t *handle, void *arg) {
  (void)arg;
  if (!uv_is_closing(handle))
    uv_close(handle, NULL);
}

static void *loop_thread(void *arg) {
  grace__loop *loop = arg;
  /* Atomic: any thread may ask whether it is this loop's (the blocking
   * calls refuse there). */
  __atomic_store_n(&loop->self, pthread_self(), __ATOMIC_RELEASE);
  if (loop->set->cb.on_start)
    loop->set->cb.on_start(loop);
  uv_run(loop->uv, UV_RUN_DEFAULT);
  if (loop->set->cb.on_stop)
    loop->set->cb.on_stop(loop);
  /* Everything the protocol left open (it should have closed it all) and
   * our own handles are closed here so uv_loop_close succeeds. */
  uv_walk(loop->uv, close_walk_cb, NULL);
  uv_run(loop->uv, UV_RUN_DEFAULT);
  uv_loop_close(loop->uv);
  return NULL;
}

int grace__loopset_start(grace__loopset *set) {
  unsigned opened = 0, running = 0;
  int rv = 0;
  for (; opened < set->n; opened++) {
    rv = loop_open(&set->loops[opened], NULL);
    if (rv != 0)
      goto fail;
    if (set->cb.on_open != NULL) {
      rv = set->cb.on_open(&set->loops[opened]);
      if (rv != 0) {
        opened++;
        goto fail;
      }
    }
  }
  /* Loop threads never take process signals (SIGINT, SIGTERM, SIGHUP...):
   * they go to the application's threads, where the signal context's
   * handler runs at once even under sanitizers that defer signals until
   * the receiving thread makes a call they intercept. */
  sigset_t all, old;
  sigfillset(&all);
  sigdelset(&all, SIGSEGV);
  sigdelset(&all, SIGBUS);
  sigdelset(&all, SIGFPE);
  sigdelset(&all, SIGILL);
  pthread_sigmask(SIG_BLOCK, &all, &old);
  for (; running < set->n; running++) {
    rv = -pthread_create(&set->loops[running].thread, NULL, loop_thread,
                         &set->loops[running]);
    if (rv != 0)
      break;
  }
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  if (rv != 0)
    goto fail;
  set->started = 1;
  return 0;

fail:
  for (unsigned i = 0; i < running; i++) {
    grace__loop_raise(&set->loops[i], GRACE__EV_STOP);
    pthread_join(set->loops[i].thread, NULL);
  }
  for (unsigned i = running; i < opened; i++) {
    grace__loop *loop = &set->loops[i];
    uv_walk(loop->uv, close_walk_cb, NULL);
    uv_run(loop->uv, UV_RUN_DEFAULT);
    uv_loop_close(loop->uv);
  }
  return rv;
}

/* ---- external mode: the caller's loop ---------------------------------- */

static void on_deadline(uv_timer_t *handle) {
  grace__loop *loop = handle->data;
  if (loop->set->cb.on_deadline != NULL)
    loop->set->cb.on_deadline(loop);
}

/* The async handle closes last, alone, once every other handle of ours
 * has closed: uv_close made from a close callback lands in the loop's
 * next closing pass, so every handle closed before (a connection's, a
 * listener's) has had its callback by then and on_closed may free all. */
static void on_async_closed(uv_handle_t *handle) {
  grace__loop *loop = handle->data;
  grace__loopset *set = loop->set;
  set->live = 0;
  set->started = 0;
  if (set->cb.on_closed != NULL)
    set->cb.on_closed(loop);
}

static void on_handle_closed(uv_handle_t *handle) {
  grace__loop *loop = handle->data;
  if (--loop->closing == 0)
    uv_close((uv_handle_t *)&loop->async, on_async_closed);
}

void grace__loop_close_handle(grace__loop *loop, uv_handle_t *handle) {
  handle->data = loop;
  loop->closing++;
  uv_close(handle, on_handle_closed);
}

static void external_stop(grace__loop *loop) {
  if (loop->stopping)
    return;
  loop->stopping = 1;
  loop->closing++; /* held until every close below has been made */
  if (loop->set->cb.on_stop != NULL)
    loop->set->cb.on_stop(loop);
  if (loop->set->cb.on_close != NULL)
    loop->set->cb.on_close(loop);
  loop->timer_due = 0;
  grace__loop_close_handle(loop, (uv_handle_t *)&loop->timer);
  grace__loop_close_handle(loop, (uv_handle_t *)&loop->deadline);
  /* The closes above all complete in a later closing pass. */
  loop->closing--;
}

int grace__loopset_start_on(grace__loopset *set, uv_loop_t *uv) {
  if (set->n != 1 || uv == NULL)
    return GRACE_EINVAL;
  grace__loop *loop = &set->loops[0];
  set->external = 1;
  int rv = loop_open(loop, uv);
  if (rv != 0)
    return rv; /* nothing of ours is open on |uv| */
  set->live = 1;
  set->started = 1;
  __atomic_store_n(&loop->self, pthread_self(), __ATOMIC_RELEASE);
  if (set->cb.on_open != NULL) {
    rv = set->cb.on_open(loop);
    if (rv != 0) {
      external_stop(loop);
      return rv;
    }
  }
  if (set->cb.on_start != NULL)
    set->cb.on_start(loop);
  return 0;
}

grace__loop *grace__loopset_current(const grace__loopset *set) {
  if (!set->started)
    return NULL;
  for (unsigned i = 0; i < set->n; i++)
    if (grace__loop_is_current(&set->loops[i]))
      return &set->loops[i];
  return NULL;
}

void grace__loop_deliver(grace__loop *loop, unsigned bits) {
  if (loop->set->external && grace__loop_is_current(loop)) {
    if ((bits & GRACE__EV_STOP) != 0)
      external_stop(loop);
    else if (loop->set->cb.on_events != NULL)
      loop->set->cb.on_events(loop, bits);
    return;
  }
  grace__loop_raise(loop, bits);
}

void grace__loop_deadline(grace__loop *loop, uint64_t ms) {
  uv_timer_start(&loop->deadline, on_deadline, ms, 0);
}

void grace__loopset_stop(grace__loopset *set) {
  if (!set->started)
    return;
  if (set->external) {
    /* Deferred through the async handle when on the loop thread as well:
     * the caller may be in the middle of a connection's callback. */
    grace__loop_raise(&set->loops[0], GRACE__EV_STOP);
    return;
  }
  for (unsigned i = 0; i < set->n; i++)
    grace__loop_raise(&set->loops[i], GRACE__EV_STOP);
  for (unsigned i = 0; i < set->n; i++)
    pthread_join(set->loops[i].thread, NULL);
  set->started = 0;
}

void grace__loopset_free(grace__loopset *set) {
  if (set->loops == NULL)
    return;
  for (unsigned i = 0; i < set->n; i++)
    pthread_mutex_destroy(&set->loops[i].lock);
  free(set->loops);
  set->loops = NULL;
}

void grace__loop_raise(grace__loop *loop, unsigned bits) {
  atomic_fetch_or(&loop->events, bits);
  uv_async_send(&loop->async);
}

void grace__loop_post(grace__loop *loop, grace__post *post) {
  pthread_mutex_lock(&loop->lock);
  grace__list_push(&loop->posts, &post->link);
  pthread_mutex_unlock(&loop->lock);
  uv_async_send(&loop->async);
}

int grace__loop_is_current(const grace__loop *loop) {
  return pthread_equal(__atomic_load_n(&loop->self, __ATOMIC_ACQUIRE),
                       pthread_self());
}

static void on_async(uv_async_t *handle) {
  grace__loop *loop = handle->data;
  grace__list batch;

  /* Posts first: a connection handed over before a shutdown event must be
   * adopted before the shutdown walks the connections. */
  grace__list_init(&batch);
  pthread_mutex_lock(&loop->lock);
  if (!grace__list_empty(&loop->posts)) {
    batch.next = loop->posts.next;
    batch.prev = loop->posts.prev;
    batch.next->prev = &batch;
    batch.prev->next = &batch;
    grace__list_init(&loop->posts);
  }
  pthread_mutex_unlock(&loop->lock);
  while (!grace__list_empty(&batch)) {
    grace__post *post = grace__container_of(batch.next, grace__post, link);
    grace__list_unlink(&post->link);
    post->fn(loop, post);
  }

  unsigned bits = atomic_exchange(&loop->events, 0);
  unsigned user = bits & ~GRACE__EV_STOP;
  if (user != 0 && loop->set->cb.on_events)
    loop->set->cb.on_events(loop, user);
  if ((bits & GRACE__EV_STOP) && loop->set->external)
    external_stop(loop);
  else if (bits & GRACE__EV_STOP)
    uv_stop(loop->uv);
}

static void timer_arm(grace__loop *loop, uint64_t due) {
  uint64_t now = uv_now(loop->uv);
  loop->timer_due = due;
  uv_timer_start(&loop->timer, on_timer, due > now ? due - now : 0, 0);
}

static void on_timer(uv_timer_t *handle) {
  grace__loop *loop = handle->data;
  uint64_t now = uv_now(loop->uv);
  uint64_t next = 0;

  loop->timer_due = 0;
  for (unsigned l = 0; l < GRACE__TLISTS; l++) {
    grace__list *head = &loop->tl[l].head;
    while (!grace__list_empty(head)) {
      grace__tnode *node = grace__container_of(head->next, grace__tnode, link);
      if (node->deadline > now) {
        if (next == 0 || node->deadline < next)
          next = node->deadline;
        break;
      }
      grace__list_unlink(&node->link);
      loop->set->cb.on_expire(loop, l, node);
    }
  }
  /* An expiry callback may have added entries and armed the timer. */
  if (next != 0 && (loop->timer_due == 0 || next < loop->timer_due))
    timer_arm(loop, next);
}

void grace__loop_tlist_set(grace__loop *loop, unsigned list,
                           uint64_t timeout) {
  loop->tl[list].timeout = timeout;
}

void grace__loop_tlist_add_at(grace__loop *loop, unsigned list,
                              grace__tnode *node, uint64_t deadline) {
  grace__list_unlink(&node->link);
  node->deadline = deadline;
  grace__list_push(&loop->tl[list].head, &node->link);
  /* Lazy arming: the timer only moves earlier; an entry removed early
   * leaves the timer to fire once for nothing and re-arm. */
  if (loop->timer_due == 0 || deadline < loop->timer_due)
    timer_arm(loop, deadline);
}

void grace__loop_tlist_add(grace__loop *loop, unsigned list,
                           grace__tnode *node) {
  uint64_t timeout = loop->tl[list].timeout;
  if (timeout == 0) {
    grace__list_unlink(&node->link);
    return;
  }
  grace__loop_tlist_add_at(loop, list, node, uv_now(loop->uv) + timeout);
}

void grace__loop_tlist_remove(grace__loop *loop, grace__tnode *node) {
  (void)loop;
  grace__list_unlink(&node->link);
}
