/*
 * The group seen from outside: /readyz, /livez and /metrics, the last in
 * the Prometheus text exposition format 0.0.4 (one "# HELP" and one
 * "# TYPE" line per family, then its samples, each family's samples
 * together; label values escaped as the format says: \\, \" and \n).
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "group/group_int.h"

/* Largest text /metrics renders (a hard cap: parts are few). */
#define METRICS_MAX (4u << 20)

typedef struct textbuf {
  char *p;
  size_t len, cap;
  int err;
} textbuf;

static void tb_add(textbuf *b, const char *fmt, ...) GRACE_PRINTF(2, 3);
static void tb_add(textbuf *b, const char *fmt, ...) {
  va_list ap;
  if (b->err != 0)
    return;
  for (;;) {
    size_t room = b->cap - b->len;
    va_start(ap, fmt);
    int n = vsnprintf(b->p != NULL ? b->p + b->len : NULL, room, fmt, ap);
    va_end(ap);
    if (n < 0) {
      b->err = GRACE_EINVAL;
      return;
    }
    if ((size_t)n < room) {
      b->len += (size_t)n;
      return;
    }
    size_t cap = b->cap != 0 ? b->cap * 2 : 4096;
    while (cap < b->len + (size_t)n + 1)
      cap *= 2;
    if (cap > METRICS_MAX) {
      b->err = GRACE_ENOMEM;
      return;
    }
    char *p = realloc(b->p, cap);
    if (p == NULL) {
      b->err = GRACE_ENOMEM;
      return;
    }
    b->p = p;
    b->cap = cap;
  }
}

/* Appends |s| as a label value, escaped. */
static void tb_label(textbuf *b, const char *s) {
  for (; *s != '\0'; s++) {
    if (*s == '\\')
      tb_add(b, "\\\\");
    else if (*s == '"')
      tb_add(b, "\\\"");
    else if (*s == '\n')
      tb_add(b, "\\n");
    else
      tb_add(b, "%c", *s);
  }
}

static void family(textbuf *b, const char *name, const char *type,
                   const char *help) {
  tb_add(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* One sample "name{part="<part>"[,state="<state>"]} value". */
static void part_sample(textbuf *b, const char *name, const char *part,
                        const char *state, uint64_t value) {
  tb_add(b, "%s{part=\"", name);
  tb_label(b, part);
  if (state != NULL)
    tb_add(b, "\",state=\"%s", state);
  tb_add(b, "\"} %llu\n", (unsigned long long)value);
}

static double seconds(int64_t ns) { return (double)ns / 1e9; }

/* A span from |begin| to |end| (grace_now values; 0 means not yet). */
static int64_t span(int64_t begin, int64_t end, int64_t now) {
  if (begin == 0)
    return 0;
  return (end != 0 ? end : now) - begin;
}

int grace_group_metrics(grace_group *g, char **text, size_t *len) {
  static const char *const phase_help =
      "Shutdown phase: 0 serving, 1 not ready, 2 delay, 3 drain, 4 force.";
  textbuf b = {0};
  unsigned n, has = 0;

  if (g == NULL || text == NULL)
    return GRACE_EINVAL;
  grace_group_part *first = grace__group_parts(g, &n);
  grace_group_stats *st = calloc(n + 1, sizeof(*st));
  if (st == NULL)
    return GRACE_ENOMEM;
  grace_group_part *p = first;
  for (unsigned i = 0; i < n; i++, p = p->next) {
    grace__part_stats(p, &st[i]);
    has |= st[i].has;
  }
  int64_t now = grace__group_now(g);

  family(&b, "grace_ready", "gauge",
         "1 while the group is ready to serve (what /readyz answers), else 0.");
  tb_add(&b, "grace_ready %d\n", grace_group_ready(g) ? 1 : 0);
  family(&b, "grace_shutdown_phase", "gauge", phase_help);
  tb_add(&b, "grace_shutdown_phase %d\n", (int)grace_group_phase_now(g));
  family(&b, "grace_shutdown_phase_duration_seconds", "gauge",
         "How long each finished shutdown phase took (0 until it ends).");
  for (int ph = GRACE_GROUP_NOT_READY; ph <= GRACE_GROUP_FORCE; ph++)
    tb_add(&b, "grace_shutdown_phase_duration_seconds{phase=\"%s\"} %.9f\n",
           grace_group_phase_name((grace_group_phase)ph),
           seconds(atomic_load(&g->phase_ns[ph])));
  family(&b, "grace_drain_duration_seconds", "gauge",
         "Duration of the drain: so far while it runs, in all once it "
         "ended, 0 before.");
  tb_add(&b, "grace_drain_duration_seconds %.9f\n",
         seconds(span(atomic_load(&g->drain_begin),
                       atomic_load(&g->drain_end), now)));
  if (n > 0) {
    family(&b, "grace_part_drain_duration_seconds", "gauge",
           "Duration of each part's drain, from its begin to its end.");
    p = first;
    for (unsigned i = 0; i < n; i++, p = p->next) {
      tb_add(&b, "grace_part_drain_duration_seconds{part=\"");
      tb_label(&b, p->name);
      tb_add(&b, "\"} %.9f\n",
             seconds(span(atomic_load(&p->t_begin), atomic_load(&p->t_end),
                          now)));
    }
  }
  if (has & (GRACE_GROUP_HAS_REQUESTS | GRACE_GROUP_HAS_RPCS)) {
    family(&b, "grace_requests_cut_total", "counter",
           "Requests and RPCs cut before their answer (forced, or the "
           "client went away).");
    p = first;
    for (unsigned i = 0; i < n; i++, p = p->next)
      if (st[i].has & (GRACE_GROUP_HAS_REQUESTS | GRACE_GROUP_HAS_RPCS))
        part_sample(&b, "grace_requests_cut_total", p->name, NULL,
                    st[i].requests_cut + st[i].rpcs_cut);
  }
  if (has & GRACE_GROUP_HAS_REQUESTS) {
    family(&b, "grace_http_requests_inflight", "gauge",
           "HTTP requests handed to handlers and not yet answered.");
    p = first;
    for (unsigned i = 0; i < n; i++, p = p->next)
      if (st[i].has & GRACE_GROUP_HAS_REQUESTS)
        part_sample(&b, "grace_http_requests_inflight", p->name, NULL,
                    st[i].requests_inflight);
    family(&b, "grace_http_requests_total", "counter",
           "HTTP requests received.");
    p = first;
    for (unsigned i = 0; i < n; i++, p = p->next)
      if (st[i].has & GRACE_GROUP_HAS_REQUESTS)
        part_sample(&b, "grace_http_requests_total", p->name, NULL,
                    st[i].requests_total);
  }
  if (has & GRACE_GROUP_HAS_CONNS) {
    family(&b, "grace_http_connections", "gauge",
           "Open connections by state.");
    p = first;
    for (unsigned i = 0; i < n; i++, p = p->next) {
      if (!(st[i].has & GRACE_GROUP_HAS_CONNS))
        continue;
      part_sample(&b, "grace_http_connections", p->name, "new",
                  st[i].conns_new);
      part_sample(&b, "grace_http_connections", p->name, "active",
                  st[i].conns_active);
      part_sample(&b, "grace_http_connections", p->name, "idle",
                  st[i].conns_idle);
    }
    family(&b, "grace_http_connections_idle_closed_total", "counter",
           "Idle connections closed by the shutdown.");
    p = first;
    for (unsigned i = 0; i < n; i++, p = p->next)
      if (st[i].has & GRACE_GROUP_HAS_CONNS)
        part_sample(&b, "grace_http_connections_idle_closed_total", p->name,
                    NULL, st[i].conns_idle_closed);
  }
  if (has & GRACE_GROUP_HAS_RPCS) {
    family(&b, "grace_grpc_rpcs_inflight", "gauge",
           "RPCs handed to handlers and not yet finished.");
    p = first;
    for (unsigned i = 0; i < n; i++, p = p->next)
      if (st[i].has & GRACE_GROUP_HAS_RPCS)
        part_sample(&b, "grace_grpc_rpcs_inflight", p->name, NULL,
                    st[i].rpcs_inflight);
    family(&b, "grace_grpc_rpcs_total", "counter", "RPCs received.");
    p = first;
    for (unsigned i = 0; i < n; i++, p = p->next)
      if (st[i].has & GRACE_GROUP_HAS_RPCS)
        part_sample(&b, "grace_grpc_rpcs_total", p->name, NULL,
                    st[i].rpcs_total);
  }
  free(st);
  if (b.err != 0) {
    free(b.p);
    return b.err;
  }
  *text = b.p;
  if (len != NULL)
    *len = b.len;
  return 0;
}

/* ---- the health routes ---------------------------------------------------- */

/* Answers 405 to anything but GET and HEAD; true if it did. */
static bool refuse_method(grace_http_request *req) {
  const char *m = grace_http_request_method(req);
  if (strcmp(m, "GET") == 0 || strcmp(m, "HEAD") == 0)
    return false;
  static const char msg[] = "method not allowed\n";
  grace_http_response_header(req, "Allow", "GET, HEAD");
  grace_http_respond(req, 405, msg, sizeof(msg) - 1);
  return true;
}

static void handle_readyz(grace_http_request *req, void *data) {
  grace_group *g = data;
  if (refuse_method(req))
    return;
  grace_http_response_header(req, "Cache-Control", "no-store");
  if (grace_group_ready(g)) {
    grace_http_respond(req, 200, "ok", 2);
    return;
  }
  const char *why = grace_group_phase_now(g) == GRACE_GROUP_SERVING
                        ? "not ready"
                        : "shutting down";
  grace_http_respond(req, 503, why, strlen(why));
}

static void handle_livez(grace_http_request *req, void *data) {
  (void)data;
  if (refuse_method(req))
    return;
  grace_http_response_header(req, "Cache-Control", "no-store");
  grace_http_respond(req, 200, "ok", 2);
}

static void handle_metrics(grace_http_request *req, void *data) {
  char *text;
  size_t len;
  if (refuse_method(req))
    return;
  int rv = grace_group_metrics(data, &text, &len);
  if (rv != 0) {
    const char *msg = grace_strerror(rv);
    grace_http_respond(req, 500, msg, strlen(msg));
    return;
  }
  grace_http_response_header(req, "Content-Type",
                             GRACE_GROUP_METRICS_CONTENT_TYPE);
  grace_http_respond(req, 200, text, len);
  free(text);
}

int grace_group_http_health(grace_group *g, grace_http_server *srv) {
  int rv;
  if (g == NULL || srv == NULL)
    return GRACE_EINVAL;
  if ((rv = grace_http_server_handle(srv, "/readyz", handle_readyz, g)) ||
      (rv = grace_http_server_handle(srv, "/livez", handle_livez, g)) ||
      (rv = grace_http_server_handle(srv, "/metrics", handle_metrics, g)))
    return rv;
  return 0;
}
