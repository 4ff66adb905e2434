/*
 * line-server: a Redis-style line protocol on grace_tcp_server, with the
 * same graceful shutdown and zero-downtime upgrade as the HTTP examples.
 *
 *   PING            +PONG
 *   PING <text>     $<text>
 *   ECHO <text>     $<text>
 *   SLEEP <dur>     +OK after that long (Go duration: 500ms, 2s, 1h); the
 *                   connection is busy meanwhile, and commands sent behind
 *                   it wait their turn
 *   QUIT            +BYE, then the connection closes
 *   anything else   -ERR unknown command
 *
 * Commands are case-insensitive, one per line (LF or CRLF); answers end
 * with CRLF; empty lines are ignored; a line longer than -max-line gets
 * "-ERR line too long" and the connection closes.  Clients may pipeline.
 *
 *   first SIGINT/SIGTERM  the listener closes (new connections are
 *                         refused); idle connections are closed at once,
 *                         after any command they had already sent is
 *                         answered; a SLEEP in progress finishes, its
 *                         answer goes out, then its connection closes; a
 *                         drain report ends the log; exit 0
 *   -shutdown-timeout     the deadline: connections still busy then are
 *                         cut, the report says how many, exit 1
 *   second signal         exit 1 at once
 *   SIGUSR2               a zero-downtime upgrade (grace/upgrade.h): the
 *                         binary at this path starts on the same listening
 *                         socket; once it serves, this process drains
 *                         (idle connections closed over a one-second
 *                         spread, each after its next answer) and exits 0
 *
 *   line-server -addr :6380 -shutdown-timeout 10s
 *   printf 'PING\r\nECHO hi\r\nSLEEP 1s\r\nQUIT\r\n' | nc localhost 6380
 */
#include <ctype.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "grace/context.h"
#include "grace/duration.h"
#include "grace/flags.h"
#include "grace/group.h"
#include "grace/log.h"
#include "grace/signal.h"
#include "grace/tcp.h"
#include "grace/upgrade.h"

/* The server's settings, given to every callback. */
typedef struct line_server {
  size_t max_line;
} line_server;

/*
 * A SLEEP in progress: the connection's user data while it runs.  Its
 * timer is closed (and the struct freed) when it fires, or in on_close
 * when the connection goes first.
 */
typedef struct sleeper {
  uv_timer_t timer;
  grace_tcp_conn *conn;
  bool answer_waits;    /* +OK was refused (GRACE_EBUSY): on_writable */
} sleeper;

static const char ok[] = "+OK\r\n";

static void sleeper_closed(uv_handle_t *handle) { free(handle->data); }

/* The SLEEP's answer is out: the command is done.  Idle again, the
 * connection is served on (commands it sent meanwhile), or, during a
 * shutdown, closed by the library once nothing is left to serve. */
static void sleep_done(grace_tcp_conn *conn, sleeper *s) {
  grace_tcp_conn_set_data(conn, NULL);
  uv_close((uv_handle_t *)&s->timer, sleeper_closed);
  grace_tcp_conn_set_busy(conn, false);
}

static void on_wake(uv_timer_t *timer) {
  sleeper *s = timer->data;
  int rv = grace_tcp_conn_write(s->conn, ok, sizeof(ok) - 1);
  if (rv == GRACE_EBUSY) {
    /* The client does not read its answers: this one waits for room. */
    s->answer_waits = true;
    return;
  }
  sleep_done(s->conn, s);
}

static void on_writable(grace_tcp_conn *conn, void *data) {
  sleeper *s = grace_tcp_conn_data(conn);
  (void)data;
  if (s == NULL || !s->answer_waits)
    return;
  if (grace_tcp_conn_write(conn, ok, sizeof(ok) - 1) == GRACE_EBUSY)
    return; /* refused again: on_writable comes again */
  sleep_done(conn, s);
}

static void on_close(grace_tcp_conn *conn, void *data) {
  sleeper *s = grace_tcp_conn_data(conn);
  (void)data;
  if (s == NULL)
    return;
  /* Cut mid-SLEEP (a force, the client gone): nobody to answer. */
  uv_timer_stop(&s->timer);
  uv_close((uv_handle_t *)&s->timer, sleeper_closed);
}

/* Writes "<prefix><text>\r\n". */
static int reply(grace_tcp_conn *conn, char prefix, const char *text,
                 size_t len) {
  char small[256];
  char *buf = len + 3 <= sizeof(small) ? small : malloc(len + 3);
  if (buf == NULL)
    return GRACE_ENOMEM;
  buf[0] = prefix;
  memcpy(buf + 1, text, len);
  memcpy(buf + 1 + len, "\r\n", 2);
  int rv = grace_tcp_conn_write(conn, buf, len + 3);
  if (buf != small)
    free(buf);
  return rv;
}

static bool is_word(const char *p, size_t len, const char *word) {
  size_t wl = strlen(word);
  if (len != wl)
    return false;
  for (size_t i = 0; i < len; i++)
    if (toupper((unsigned char)p[i]) != word[i])
      return false;
  return true;
}

static int start_sleep(grace_tcp_conn *conn, const char *arg, size_t len) {
  char err[256], line[300];
  grace_duration d = 0;
  char *text = malloc(len + 1);
  if (text == NULL)
    return reply(conn, '-', "ERR out of memory", 17);
  memcpy(text, arg, len);
  text[len] = '\0';
  int rv = grace_duration_parse(text, &d, err, sizeof(err));
  free(text);
  if (rv != 0 || d < 0) {
    /* Go's text: time: invalid duration "abc" */
    int n = snprintf(line, sizeof(line), "ERR %s",
                     rv != 0 ? err : "negative duration");
    if (n < 0 || (size_t)n >= sizeof(line))
      n = (int)sizeof(line) - 1;
    return reply(conn, '-', line, (size_t)n);
  }
  sleeper *s = calloc(1, sizeof(*s));
  if (s == NULL)
    return reply(conn, '-', "ERR out of memory", 17);
  rv = uv_timer_init(grace_tcp_conn_loop(conn), &s->timer);
  if (rv != 0) {
    free(s);
    return reply(conn, '-', "ERR no timer", 12);
  }
  s->timer.data = s;
  s->conn = conn;
  grace_tcp_conn_set_data(conn, s);
  grace_tcp_conn_set_busy(conn, true);
  uint64_t ms = (uint64_t)(d / GRACE_MILLISECOND);
  uv_timer_start(&s->timer, on_wake, ms, 0);
  return 0;
}

/*
 * One command (|len| bytes, no line end).  Returns 0, or GRACE_EBUSY when
 * its answer was refused: the line is then left for later (on_data is
 * called again once the client has read its answers).
 */
static int command(grace_tcp_conn *conn, const char *p, size_t len) {
  size_t wl = 0;
  while (wl < len && p[wl] != ' ')
    wl++;
  const char *arg = wl < len ? p + wl + 1 : NULL;
  size_t alen = arg != NULL ? len - wl - 1 : 0;

  if (is_word(p, wl, "PING"))
    return arg == NULL ? reply(conn, '+', "PONG", 4)
                       : reply(conn, '$', arg, alen);
  if (is_word(p, wl, "ECHO")) {
    if (arg == NULL)
      return reply(conn, '-', "ERR wrong number of arguments for 'echo'",
                   40);
    return reply(conn, '$', arg, alen);
  }
  if (is_word(p, wl, "SLEEP")) {
    if (arg == NULL)
      return reply(conn, '-', "ERR wrong number of arguments for 'sleep'",
                   41);
    return start_sleep(conn, arg, alen);
  }
  if (is_word(p, wl, "QUIT")) {
    int rv = reply(conn, '+', "BYE", 3);
    if (rv == GRACE_EBUSY)
      return rv;
    grace_tcp_conn_end(conn);
    return 0;
  }
  return reply(conn, '-', "ERR unknown command", 19);
}

/* Takes every complete line it can answer now; leaves a partial one, the
 * lines behind a SLEEP in progress, and a line whose answer was refused. */
static size_t on_data(grace_tcp_conn *conn, const char *p, size_t n,
                      void *data) {
  const line_server *ls = data;
  size_t off = 0;
  while (off < n && !grace_tcp_conn_is_busy(conn) &&
         !grace_tcp_conn_closed(conn)) {
    const char *nl = memchr(p + off, '\n', n - off);
    size_t len = nl != NULL ? (size_t)(nl - (p + off)) : n - off;
    if (len > ls->max_line) {
      reply(conn, '-', "ERR line too long", 17);
      grace_tcp_conn_end(conn);
      return n;
    }
    if (nl == NULL)
      break; /* the rest of the line is still to come */
    size_t cmd = len;
    if (cmd > 0 && p[off + cmd - 1] == '\r')
      cmd--;
    if (cmd > 0 && command(conn, p + off, cmd) == GRACE_EBUSY)
      break;
    off += len + 1;
  }
  return off;
}

/* Prints Go's message for a bad address flag; returns 2 for main. */
static int bad_addr(const char *addr) {
  fprintf(stderr, "invalid value \"%s\" for flag -addr: address %s: %s\n",
          addr, addr,
          strchr(addr, ':') ? "invalid host or port"
                            : "missing port in address");
  return 2;
}

int main(int argc, char **argv) {
  const char *addr = ":6380", *pidfile = NULL, *upgrade_socket = NULL;
  grace_duration timeout = 10 * GRACE_SECOND, upgrade_timeout = 0;
  grace_tcp_options topts;
  int64_t loops = 0, max_line = 4096;
  char err[512];
  int rv, code = 2;

  grace_tcp_options_init(&topts);
  grace_flags *flags = grace_flags_new(argv[0]);
  if (flags == NULL)
    grace_log_fatal("out of memory");
  if (grace_flags_string(flags, "addr", &addr, "listen address (host:port)") !=
          0 ||
      grace_flags_duration(flags, "shutdown-timeout", &timeout,
                           "deadline of the graceful shutdown (0: "
                           "$GRACE_SHUTDOWN_TIMEOUT, else 27s)") != 0 ||
      grace_flags_int(flags, "loops", &loops,
                      "event-loop threads (0: one per core)") != 0 ||
      grace_flags_int(flags, "max-line", &max_line,
                      "longest command line in bytes") != 0 ||
      grace_flags_duration(flags, "idle-timeout", &topts.idle_timeout,
                           "close a connection idle this long (0: never)") !=
          0 ||
      grace_flags_duration(flags, "read-timeout", &topts.read_timeout,
                           "longest pause inside a command line") != 0 ||
      grace_flags_duration(flags, "close-spread", &topts.close_spread,
                           "spread the closing of idle connections over "
                           "this long at shutdown (0: at once)") != 0 ||
      grace_flags_string(flags, "pidfile", &pidfile,
                         "write the PID of the process that accepts to this "
                         "file (rewritten by an upgrade)") != 0 ||
      grace_flags_string(flags, "upgrade-socket", &upgrade_socket,
                         "Unix socket where grace-upgrade asks for an "
                         "upgrade") != 0 ||
      grace_flags_duration(flags, "upgrade-timeout", &upgrade_timeout,
                           "how long an upgrade's new process may take to "
                           "be ready (0: 30s)") != 0)
    grace_log_fatal("cannot register the flags");
  grace_flags_parse_or_exit(flags, argc, argv);
  grace_flags_free(flags);
  if (timeout < 0 || loops < 0 || loops > 256 || max_line < 1 ||
      max_line > 1024 * 1024 || topts.idle_timeout < 0 ||
      topts.read_timeout < 0 || topts.close_spread < 0 ||
      upgrade_timeout < 0) {
    fprintf(stderr, "invalid -shutdown-timeout, -loops, -max-line, "
                    "-idle-timeout, -read-timeout, -close-spread or "
                    "-upgrade-timeout\n");
    return 2;
  }
  if (timeout == 0) {
    grace_duration d;
    rv = grace_group_env_timeout(&d, err, sizeof(err));
    if (rv != 0 && rv != GRACE_ENOENT) {
      fprintf(stderr, "%s\n", err);
      return 2;
    }
  }

  /* First, before any thread: the sockets a predecessor handed over. */
  grace_upgrader_options uopts;
  grace_upgrader_options_init(&uopts);
  uopts.pidfile = pidfile;
  uopts.control_path = upgrade_socket;
  uopts.ready_timeout = upgrade_timeout;
  uopts.close_spread = topts.close_spread;
  grace_upgrader *up;
  rv = grace_upgrader_new(&uopts, argc, argv, &up);
  if (rv != 0)
    grace_log_fatal("upgrade: %s", grace_strerror(rv));
  grace_ctx *stop = grace_signal_context();

  grace_group_options gopts;
  grace_group_options_init(&gopts);
  gopts.shutdown_timeout = timeout;
  grace_group *group;
  rv = grace_group_new(&gopts, &group);
  if (rv != 0)
    grace_log_fatal("group: %s", grace_strerror(rv));

  line_server ls = {.max_line = (size_t)max_line};
  /* A whole line must fit in what a connection keeps unconsumed. */
  if ((size_t)max_line + 2 > topts.max_input)
    topts.max_input = (size_t)max_line + 2;
  topts.loops = (unsigned)loops;
  static const grace_tcp_callbacks cb = {
      .on_data = on_data,
      .on_writable = on_writable,
      .on_close = on_close,
  };
  grace_tcp_server *srv;
  rv = grace_tcp_server_new(&topts, &cb, &ls, &srv);
  if (rv != 0)
    grace_log_fatal("line server: %s", grace_strerror(rv));

  bool inherited = false;
  int fd;
  rv = grace_upgrader_listen(up, "line", addr, topts.backlog, &fd, &inherited);
  if (rv == 0)
    rv = grace_tcp_server_listen_fd(srv, fd);
  if (rv == GRACE_EINVAL) {
    code = bad_addr(addr);
    goto out;
  }
  if (rv != 0)
    grace_log_fatal("listen tcp %s: %s", addr, grace_strerror(rv));
  if (inherited)
    grace_log("Serving the line protocol on a socket from the previous "
              "process (upgrade)");
  else
    grace_log("Serving the line protocol on %s", addr);

  if ((rv = grace_group_add_tcp(group, "line", srv)) != 0 ||
      (rv = grace_group_add_upgrader(group, "upgrade", up)) != 0)
    grace_log_fatal("group: %s", grace_strerror(rv));
  grace_group_result res;
  rv = grace_group_run(group, stop, &res);
  code = rv == 0 ? 0 : 1;

out:
  /* The group first: it borrows the server and the upgrader. */
  grace_group_free(group);
  grace_tcp_server_free(srv);
  grace_upgrader_free(up);
  return code;
}
