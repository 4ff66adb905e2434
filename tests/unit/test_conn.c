/*
 * Unit tests for src/net/conn.c, the transport, in its socketless memory
 * mode (grace__conn_new_mem) under a tiny fake protocol that records every
 * callback and takes only as many bytes as the test allows.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "grace/error.h"
#include "net/conn.h"

/* ---- the fake protocol
 * ------------------------------------------------------- */

typedef struct fake {
  size_t budget; /* bytes on_read may still take (SIZE_MAX: all) */
  char got[256 * 1024];
  size_t glen;
  unsigned reads, eofs, flushed, shutdowns, forces, closes, frees;
  unsigned force_cut; /* what on_force returns */
  ssize_t fail;       /* on_read returns this when nonzero */
  /* Switching: after |switch_after| bytes, hand the connection to
   * |next|/|next_data| and return |switch_ret| bytes taken. */
  size_t switch_after;
  const grace__conn_proto *next;
  void *next_data;
  /* Line mode: takes everything up to its last newline, nothing of a
   * line not yet complete (a parser that needs more bytes). */
  int lines;
} fake;

static ssize_t fake_read(grace__conn *c, const uint8_t *p, size_t n) {
  fake *f = c->pdata;
  f->reads++;
  if (f->fail)
    return f->fail;
  size_t take = n < f->budget ? n : f->budget;
  if (f->lines) {
    while (take > 0 && p[take - 1] != '\n')
      take--;
  }
  if (f->next != NULL && f->glen + take >= f->switch_after) {
    take = f->switch_after - f->glen;
    memcpy(f->got + f->glen, p, take);
    f->glen += take;
    grace__conn_set_proto(c, f->next, f->next_data);
    f->next = NULL;
    return (ssize_t)take;
  }
  assert_true(f->glen + take <= sizeof(f->got));
  memcpy(f->got + f->glen, p, take);
  f->glen += take;
  if (f->budget != SIZE_MAX)
    f->budget -= take;
  return (ssize_t)take;
}

static void fake_eof(grace__conn *c) { ((fake *)c->pdata)->eofs++; }
static void fake_flushed(grace__conn *c) { ((fake *)c->pdata)->flushed++; }
static void fake_shutdown(grace__conn *c) { ((fake *)c->pdata)->shutdowns++; }
static unsigned fake_force(grace__conn *c) {
  fake *f = c->pdata;
  f->forces++;
  return f->force_cut;
}
static void fake_close(grace__conn *c) { ((fake *)c->pdata)->closes++; }
static void fake_free(grace__conn *c) { ((fake *)c->pdata)->frees++; }

static const grace__conn_proto fake_proto = {
    .on_read = fake_read,
    .on_eof = fake_eof,
    .on_flushed = fake_flushed,
    .on_shutdown = fake_shutdown,
    .on_force = fake_force,
    .on_close = fake_close,
    .on_free = fake_free,
};

/* The same callbacks under another table: a switch of protocol is a
 * change of table (HTTP/1.1 to HTTP/2), not only of state. */
static const grace__conn_proto fake_proto_b = {
    .on_read = fake_read,
    .on_eof = fake_eof,
    .on_flushed = fake_flushed,
    .on_shutdown = fake_shutdown,
    .on_force = fake_force,
    .on_close = fake_close,
    .on_free = fake_free,
};

/* The same, for a protocol that waits for more bytes (reoffer). */
static const grace__conn_proto fake_proto_reoffer = {
    .on_read = fake_read,
    .on_eof = fake_eof,
    .on_flushed = fake_flushed,
    .on_shutdown = fake_shutdown,
    .on_force = fake_force,
    .on_close = fake_close,
    .on_free = fake_free,
    .reoffer = 1,
};

typedef struct fixture {
  grace__conn_reg reg;
  fake a, b;
  grace__conn *c;
} fixture;

static fixture *fx_new(size_t room) {
  fixture *fx = calloc(1, sizeof(*fx));
  assert_non_null(fx);
  fx->a.budget = SIZE_MAX;
  fx->b.budget = SIZE_MAX;
  fx->c = grace__conn_new_mem(&fx->reg, &fake_proto, &fx->a, room);
  assert_non_null(fx->c);
  assert_int_equal(atomic_load(&fx->reg.nconns), 1);
  return fx;
}

/* Frees the connection; the struct must be gone and freed exactly once. */
static void fx_free(fixture *fx) {
  grace__conn_mem_free(fx->c);
  assert_int_equal(atomic_load(&fx->reg.nconns), 0);
  assert_int_equal(fx->a.frees + fx->b.frees, 1);
  free(fx);
}

static ssize_t feed(grace__conn *c, const char *s) {
  return grace__conn_mem_feed(c, s, strlen(s));
}

/* ---- reading
 * ------------------------------------------------------------------- */

static void untaken_bytes_are_kept_and_offered_again_on_resume(void **state) {
  fixture *fx = fx_new(SIZE_MAX);
  (void)state;
  fx->a.budget = 3;
  assert_int_equal(feed(fx->c, "abcdefgh"), 8);
  assert_int_equal(fx->a.glen, 3);
  assert_int_equal(fx->c->rlen, 5); /* "defgh" kept */
  unsigned reads = fx->a.reads;

  /* Paused: more input joins the read-ahead without an offer. */
  assert_int_equal(feed(fx->c, "ij"), 2);
  assert_int_equal(fx->a.reads, reads);
  assert_int_equal(fx->c->rlen, 7);

  /* Resumed with room for two: "de" taken, the rest kept in order. */
  fx->a.budget = 2;
  grace__conn_resume(fx->c);
  assert_int_equal(fx->a.glen, 5);
  assert_int_equal(fx->c->rlen, 5);

  fx->a.budget = SIZE_MAX;
  grace__conn_resume(fx->c);
  assert_int_equal(fx->c->rlen, 0);
  assert_int_equal(fx->a.glen, 10);
  assert_memory_equal(fx->a.got, "abcdefghij", 10);

  /* Not paused any more: the next bytes go straight to the protocol. */
  reads = fx->a.reads;
  assert_int_equal(feed(fx->c, "k"), 1);
  assert_int_equal(fx->a.reads, reads + 1);
  assert_int_equal(fx->a.glen, 11);
  fx_free(fx);
}

static void resume_with_nothing_kept_offers_nothing(void **state) {
  fixture *fx = fx_new(SIZE_MAX);
  (void)state;
  assert_int_equal(feed(fx->c, "abc"), 3);
  unsigned reads = fx->a.reads;
  grace__conn_resume(fx->c);
  assert_int_equal(fx->a.reads, reads);
  fx_free(fx);
}

static void read_ahead_stops_at_its_cap(void **state) {
  fixture *fx = fx_new(SIZE_MAX);
  size_t big = GRACE__CONN_READ_AHEAD + 4096;
  char *buf = malloc(big);
  assert_non_null(buf);
  for (size_t i = 0; i < big; i++)
    buf[i] = (char)('a' + i % 26);
  (void)state;
  fx->a.budget = 10;
  /* The protocol takes 10, then at most the read-ahead is kept. */
  ssize_t took = grace__conn_mem_feed(fx->c, buf, big);
  assert_true(took >= 10);
  assert_true((size_t)took <= 10 + GRACE__CONN_READ_AHEAD);
  assert_true(fx->c->rlen <= GRACE__CONN_READ_AHEAD);
  /* Full: nothing more is taken while paused. */
  if (fx->c->rlen == GRACE__CONN_READ_AHEAD)
    assert_int_equal(grace__conn_mem_feed(fx->c, buf, 100), 0);
  /* Whatever was taken reaches the protocol, in order, once it reads. */
  fx->a.budget = SIZE_MAX;
  grace__conn_resume(fx->c);
  assert_int_equal(fx->c->rlen, 0);
  assert_int_equal(fx->a.glen, (size_t)took);
  assert_memory_equal(fx->a.got, buf, (size_t)took);
  /* The rest follows. */
  assert_int_equal(grace__conn_mem_feed(fx->c, buf + took, big - (size_t)took),
                   (ssize_t)(big - (size_t)took));
  assert_int_equal(fx->a.glen, big);
  assert_memory_equal(fx->a.got, buf, big);
  free(buf);
  fx_free(fx);
}

static void paused_feed_fills_the_read_ahead_to_its_cap(void **state) {
  fixture *fx = fx_new(SIZE_MAX);
  static char buf[GRACE__CONN_READ_AHEAD];
  (void)state;
  fx->a.budget = 0;
  assert_int_equal(feed(fx->c, "x"), 1);
  assert_int_equal(fx->c->rlen, 1);
  assert_int_equal(grace__conn_mem_feed(fx->c, buf, sizeof(buf)),
                   GRACE__CONN_READ_AHEAD - 1);
  assert_int_equal(fx->c->rlen, GRACE__CONN_READ_AHEAD);
  assert_int_equal(grace__conn_mem_feed(fx->c, buf, 1), 0);
  fx_free(fx);
}

static void protocol_error_ends_the_connection(void **state) {
  fixture *fx = fx_new(SIZE_MAX);
  (void)state;
  fx->a.fail = -1;
  feed(fx->c, "bad");
  assert_true(grace__conn_closing(fx->c));
  assert_int_equal(fx->a.closes, 1);
  assert_int_equal(feed(fx->c, "more"), GRACE_ECLOSED);
  fx_free(fx);
}

static void eof_reaches_the_protocol(void **state) {
  fixture *fx = fx_new(SIZE_MAX);
  (void)state;
  assert_int_equal(grace__conn_mem_feed(fx->c, NULL, 0), 0);
  assert_int_equal(fx->a.eofs, 1);
  assert_int_equal(fx->a.closes, 0); /* the protocol decides */
  fx_free(fx);
}

static void reoffer_offers_what_was_left_with_what_follows(void **state) {
  fixture *fx = fx_new(SIZE_MAX);
  (void)state;
  grace__conn_set_proto(fx->c, &fake_proto_reoffer, &fx->a);
  fx->a.lines = 1;
  assert_int_equal(feed(fx->c, "PI"), 2);
  assert_int_equal(fx->a.glen, 0);
  assert_int_equal(fx->c->rlen, 2);
  unsigned reads = fx->a.reads;
  /* The rest of the line arrives: offered with what was left, at once. */
  assert_int_equal(feed(fx->c, "NG\nEC"), 5);
  assert_true(fx->a.reads > reads);
  assert_int_equal(fx->a.glen, 5);
  assert_memory_equal(fx->a.got, "PING\n", 5);
  assert_int_equal(fx->c->rlen, 2); /* "EC" */
  assert_int_equal(feed(fx->c, "HO x\n"), 5);
  assert_int_equal(fx->a.glen, 12);
  assert_memory_equal(fx->a.got, "PING\nECHO x\n", 12);
  assert_int_equal(fx->c->rlen, 0);
  fx_free(fx);
}

static void reoffer_keeps_no_more_than_the_read_ahead(void **state) {
  fixture *fx = fx_new(SIZE_MAX);
  size_t big = 2 * GRACE__CONN_READ_AHEAD;
  char *buf = malloc(big);
  assert_non_null(buf);
  memset(buf, 'x', big);
  (void)state;
  grace__conn_set_proto(fx->c, &fake_proto_reoffer, &fx->a);
  fx->a.lines = 1;
  /* A line that never ends: kept up to the read-ahead, then refused. */
  ssize_t took = grace__conn_mem_feed(fx->c, buf, big);
  assert_true(took > 0);
  assert_true((size_t)took <= GRACE__CONN_READ_AHEAD);
  assert_int_equal(fx->c->rlen, (size_t)took);
  assert_int_equal(grace__conn_mem_feed(fx->c, buf, 10), 0);
  assert_int_equal(fx->a.glen, 0);
  free(buf);
  fx_free(fx);
}

static void without_reoffer_what_was_left_waits_for_resume(void **state) {
  fixture *fx = fx_new(SIZE_MAX);
  (void)state;
  fx->a.lines = 1;
  assert_int_equal(feed(fx->c, "PI"), 2);
  unsigned reads = fx->a.reads;
  assert_int_equal(feed(fx->c, "NG\n"), 3);
  assert_int_equal(fx->a.reads, reads); /* paused: kept, not offered */
  assert_int_equal(fx->c->rlen, 5);
  grace__conn_resume(fx->c);
  assert_int_equal(fx->a.glen, 5);
  assert_int_equal(fx->c->rlen, 0);
  fx_free(fx);
}

/* ---- writing
 * ------------------------------------------------------------------- */

static void bytes_past_the_room_are_queued_until_the_peer_reads(void **state) {
  fixture *fx = fx_new(10);
  size_t len;
  (void)state;
  assert_int_equal(grace__conn_write(fx->c, "0123456789abcdefghijklmno", 25),
                   0);
  assert_int_equal(grace__conn_queued(fx->c), 15);
  const uint8_t *out = grace__conn_mem_output(fx->c, &len);
  assert_int_equal(len, 25);
  assert_memory_equal(out, "0123456789abcdefghijklmno", 25);
  assert_int_equal(fx->a.flushed, 0);

  grace__conn_mem_take(fx->c, 10);
  assert_int_equal(grace__conn_queued(fx->c), 5);
  assert_int_equal(fx->a.flushed, 0);
  out = grace__conn_mem_output(fx->c, &len);
  assert_int_equal(len, 15);
  assert_memory_equal(out, "abcdefghijklmno", 15);

  grace__conn_mem_take(fx->c, 10);
  assert_int_equal(grace__conn_queued(fx->c), 0);
  assert_int_equal(fx->a.flushed, 1);
  grace__conn_mem_take(fx->c, 5);
  assert_int_equal(fx->a.flushed, 1); /* once per emptying */

  /* A second round flushes a second time. */
  assert_int_equal(grace__conn_write(fx->c, "0123456789ABC", 13), 0);
  assert_int_equal(grace__conn_queued(fx->c), 3);
  grace__conn_mem_take(fx->c, 13);
  assert_int_equal(fx->a.flushed, 2);
  fx_free(fx);
}

static void writes_within_the_room_never_queue(void **state) {
  fixture *fx = fx_new(SIZE_MAX);
  size_t len;
  (void)state;
  assert_int_equal(grace__conn_write(fx->c, "hello", 5), 0);
  assert_int_equal(grace__conn_write(fx->c, "", 0), 0);
  assert_int_equal(grace__conn_queued(fx->c), 0);
  grace__conn_mem_output(fx->c, &len);
  assert_int_equal(len, 5);
  grace__conn_mem_take(fx->c, len);
  assert_int_equal(fx->a.flushed, 0);
  fx_free(fx);
}

static void end_waits_for_the_queue_before_closing(void **state) {
  fixture *fx = fx_new(0);
  (void)state;
  assert_int_equal(grace__conn_write(fx->c, "bye", 3), 0);
  grace__conn_end(fx->c, 0);
  assert_true(grace__conn_closing(fx->c));
  assert_int_equal(fx->a.closes, 0);
  /* Ending: no new writes, and what the peer sends is discarded. */
  assert_int_equal(grace__conn_write(fx->c, "x", 1), GRACE_ECLOSED);
  unsigned reads = fx->a.reads;
  assert_int_equal(feed(fx->c, "late"), 4);
  assert_int_equal(fx->a.reads, reads);

  grace__conn_mem_take(fx->c, 2);
  assert_int_equal(fx->a.closes, 0);
  grace__conn_mem_take(fx->c, 1);
  assert_int_equal(fx->a.closes, 1);
  assert_int_equal(fx->a.flushed, 0); /* the end, not the protocol, ran */
  fx_free(fx);
}

static void end_with_nothing_queued_closes_at_once(void **state) {
  fixture *fx = fx_new(0);
  (void)state;
  grace__conn_end(fx->c, 1);
  assert_int_equal(fx->a.closes, 1);
  fx_free(fx);
}

static void close_is_idempotent(void **state) {
  fixture *fx = fx_new(SIZE_MAX);
  (void)state;
  grace__conn_close(fx->c);
  grace__conn_close(fx->c);
  grace__conn_end(fx->c, 1);
  assert_int_equal(fx->a.closes, 1);
  assert_int_equal(fx->c->state, GRACE__CS_CLOSED);
  assert_int_equal(feed(fx->c, "x"), GRACE_ECLOSED);
  assert_int_equal(grace__conn_write(fx->c, "x", 1), GRACE_ECLOSED);
  assert_int_equal(grace__conn_force(fx->c), 0);
  assert_int_equal(fx->a.forces, 0);
  grace__conn_shutdown(fx->c);
  assert_int_equal(fx->a.shutdowns, 0);
  fx_free(fx); /* closes once more: still one on_close */
  /* fx is gone; its counters were checked by fx_free. */
}

/* ---- lifetime
 * ------------------------------------------------------------------ */

static void references_keep_the_struct_until_the_last_unref(void **state) {
  grace__conn_reg reg;
  fake f;
  (void)state;
  memset(&reg, 0, sizeof(reg));
  memset(&f, 0, sizeof(f));
  f.budget = SIZE_MAX;
  grace__conn *c = grace__conn_new_mem(&reg, &fake_proto, &f, SIZE_MAX);
  assert_non_null(c);
  grace__conn_ref(c);
  grace__conn_ref(c);
  grace__conn_mem_free(c); /* closes; two references remain */
  assert_int_equal(f.closes, 1);
  assert_int_equal(f.frees, 0);
  assert_int_equal(atomic_load(&reg.nconns), 1);
  assert_true(grace__conn_closing(c)); /* still readable */
  grace__conn_unref(c);
  assert_int_equal(f.frees, 0);
  grace__conn_unref(c);
  assert_int_equal(f.frees, 1);
  assert_int_equal(f.closes, 1);
  assert_int_equal(atomic_load(&reg.nconns), 0);
}

static void reference_taken_in_a_callback_outlives_the_close(void **state) {
  fixture *fx = fx_new(SIZE_MAX);
  (void)state;
  grace__conn_ref(fx->c); /* an exchange a handler holds */
  grace__conn_close(fx->c);
  assert_int_equal(fx->a.frees, 0);
  grace__conn *c = fx->c;
  grace__conn_mem_free(c);
  assert_int_equal(fx->a.frees, 0);
  grace__conn_unref(c);
  assert_int_equal(fx->a.frees, 1);
  assert_int_equal(atomic_load(&fx->reg.nconns), 0);
  free(fx);
}

/* ---- protocol services
 * --------------------------------------------------------- */

static void switching_protocols_mid_read_hands_over_the_rest(void **state) {
  fixture *fx = fx_new(SIZE_MAX);
  (void)state;
  fx->a.switch_after = 4;
  fx->a.next = &fake_proto_b;
  fx->a.next_data = &fx->b;
  assert_int_equal(feed(fx->c, "PRI rest of it"), 14);
  assert_int_equal(fx->a.glen, 4);
  assert_memory_equal(fx->a.got, "PRI ", 4);
  assert_int_equal(fx->b.glen, 10);
  assert_memory_equal(fx->b.got, "rest of it", 10);
  assert_ptr_equal(fx->c->pdata, &fx->b);
  fx_free(fx);
  /* Only the new protocol's on_free ran (checked by fx_free). */
}

static void
switching_protocols_without_taking_hands_over_everything(void **state) {
  fixture *fx = fx_new(SIZE_MAX);
  (void)state;
  /* HTTP/1.1 seeing the HTTP/2 preface takes nothing and switches. */
  fx->a.switch_after = 0;
  fx->a.next = &fake_proto_b;
  fx->a.next_data = &fx->b;
  assert_int_equal(feed(fx->c, "PRI * HTTP/2.0"), 14);
  assert_int_equal(fx->a.glen, 0);
  assert_int_equal(fx->b.glen, 14);
  assert_int_equal(fx->c->rlen, 0);
  fx_free(fx);
}

static void
switching_protocols_from_the_read_ahead_hands_over_the_rest(void **state) {
  fixture *fx = fx_new(SIZE_MAX);
  (void)state;
  fx->a.budget = 0;
  assert_int_equal(feed(fx->c, "abcdef"), 6);
  assert_int_equal(fx->c->rlen, 6);
  fx->a.budget = SIZE_MAX;
  fx->a.switch_after = 2;
  fx->a.next = &fake_proto_b;
  fx->a.next_data = &fx->b;
  grace__conn_resume(fx->c);
  assert_memory_equal(fx->a.got, "ab", 2);
  assert_int_equal(fx->b.glen, 4);
  assert_memory_equal(fx->b.got, "cdef", 4);
  assert_int_equal(fx->c->rlen, 0);
  fx_free(fx);
}

static void shutdown_runs_once(void **state) {
  fixture *fx = fx_new(SIZE_MAX);
  (void)state;
  assert_false(grace__conn_shutting_down(fx->c));
  grace__conn_shutdown(fx->c);
  grace__conn_shutdown(fx->c);
  assert_int_equal(fx->a.shutdowns, 1);
  assert_true(grace__conn_shutting_down(fx->c));
  assert_false(grace__conn_closing(fx->c)); /* the protocol decides */
  fx_free(fx);
}

static void force_counts_what_the_protocol_cut_and_closes(void **state) {
  fixture *fx = fx_new(SIZE_MAX);
  (void)state;
  fx->a.force_cut = 3;
  assert_int_equal(grace__conn_force(fx->c), 3);
  assert_int_equal(fx->a.forces, 1);
  assert_int_equal(fx->a.closes, 1);
  assert_int_equal(grace__conn_force(fx->c), 0);
  assert_int_equal(fx->a.forces, 1);
  fx_free(fx);
}

static void states_are_counted_in_the_registry(void **state) {
  fixture *fx = fx_new(SIZE_MAX);
  (void)state;
  assert_int_equal(fx->c->state, GRACE__CS_NEW);
  grace__conn_set_state(fx->c, GRACE__CS_ACTIVE);
  assert_int_equal(atomic_load(&fx->reg.active), 1);
  grace__conn_set_state(fx->c, GRACE__CS_IDLE);
  assert_int_equal(atomic_load(&fx->reg.active), 0);
  assert_int_equal(atomic_load(&fx->reg.idle), 1);
  grace__conn_close(fx->c);
  assert_int_equal(atomic_load(&fx->reg.idle), 0);
  fx_free(fx);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(untaken_bytes_are_kept_and_offered_again_on_resume),
      cmocka_unit_test(resume_with_nothing_kept_offers_nothing),
      cmocka_unit_test(read_ahead_stops_at_its_cap),
      cmocka_unit_test(paused_feed_fills_the_read_ahead_to_its_cap),
      cmocka_unit_test(protocol_error_ends_the_connection),
      cmocka_unit_test(eof_reaches_the_protocol),
      cmocka_unit_test(reoffer_offers_what_was_left_with_what_follows),
      cmocka_unit_test(reoffer_keeps_no_more_than_the_read_ahead),
      cmocka_unit_test(without_reoffer_what_was_left_waits_for_resume),
      cmocka_unit_test(bytes_past_the_room_are_queued_until_the_peer_reads),
      cmocka_unit_test(writes_within_the_room_never_queue),
      cmocka_unit_test(end_waits_for_the_queue_before_closing),
      cmocka_unit_test(end_with_nothing_queued_closes_at_once),
      cmocka_unit_test(close_is_idempotent),
      cmocka_unit_test(references_keep_the_struct_until_the_last_unref),
      cmocka_unit_test(reference_taken_in_a_callback_outlives_the_close),
      cmocka_unit_test(switching_protocols_mid_read_hands_over_the_rest),
      cmocka_unit_test(
          switching_protocols_without_taking_hands_over_everything),
      cmocka_unit_test(
          switching_protocols_from_the_read_ahead_hands_over_the_rest),
      cmocka_unit_test(shutdown_runs_once),
      cmocka_unit_test(force_counts_what_the_protocol_cut_and_closes),
      cmocka_unit_test(states_are_counted_in_the_registry),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
