/*
 * Intrusive circular doubly linked lists, as the Linux kernel and libuv's
 * queue.h do them: the list head is a sentinel node, and an unlinked node
 * points to itself so grace__list_unlink is always safe.
 */
#ifndef GRACE_NET_LIST_H
#define GRACE_NET_LIST_H

#include <stdbool.h>
#include <stddef.h>

typedef struct grace__list {
  struct grace__list *prev;
  struct grace__list *next;
} grace__list;

#define grace__container_of(ptr, type, member)                                \
  ((type *)(void *)((char *)(ptr)-offsetof(type, member)))

static inline void grace__list_init(grace__list *l) { l->prev = l->next = l; }

static inline bool grace__list_empty(const grace__list *l) {
  return l->next == l;
}

/* Appends |n| at the tail of |head|. */
static inline void grace__list_push(grace__list *head, grace__list *n) {
  n->prev = head->prev;
  n->next = head;
  head->prev->next = n;
  head->prev = n;
}

/* Unlinks |n| from whatever list holds it; a no-op for an unlinked node. */
static inline void grace__list_unlink(grace__list *n) {
  n->prev->next = n->next;
  n->next->prev = n->prev;
  n->prev = n->next = n;
}

#endif /* GRACE_NET_LIST_H */
