/*
 * Zero-downtime restart: see grace/upgrade.h.
 *
 * What crosses the exec.  The successor gets the named descriptors as 3,
 * 4, ..., 3+n-1 and a stream socket (the control channel) as 3+n, with
 *
 *   GRACE_UPGRADE_FDS=<n>  GRACE_UPGRADE_FDNAMES=<name>:<name>:...
 *   GRACE_UPGRADE_CTL=<3+n>  GRACE_UPGRADE_PARENT=<pid>
 *   GRACE_UPGRADE_GENERATION=<generation of the successor>
 *
 * The control channel carries lines.  Successor to predecessor: "ready"
 * (serving), "stopping" (a plain shutdown began: its exit is no crash),
 * "handover <pid>" (it handed over in turn).  Predecessor to successor:
 * "ack <older>" (the hand-over is done; <older> generations older than the
 * predecessor still drain) and "older <n>" when that number changes.
 *
 * The thread.  Once ready, one thread per upgrader waits with poll(2) on
 * the signal's pipe, a wake-up eventfd (API calls, stop, free), the
 * control listener and its clients, the successor (its control channel
 * and a pidfd) and the predecessor's control channel.  The only timeout is
 * the successor's ready deadline.
 */
#include "grace/upgrade.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdarg.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "grace/log.h"
#include "grace/systemd.h"
#include "group/group_int.h"
#include "net/listener.h"

extern char **environ;

#define ENV_FDS "GRACE_UPGRADE_FDS"
#define ENV_NAMES "GRACE_UPGRADE_FDNAMES"
#define ENV_CTL "GRACE_UPGRADE_CTL"
#define ENV_PARENT "GRACE_UPGRADE_PARENT"
#define ENV_GEN "GRACE_UPGRADE_GENERATION"

#define MAX_FDS 64        /* named descriptors handed over */
#define MAX_CLIENTS 8     /* control connections at once */
#define LINE_MAX_LEN 256  /* one control line */
#define ROLLBACK_TRIES 3  /* rollback attempts after a crash */
#define CHECK_RETRY_MS 10 /* ready_check said "not yet" */
/* A successor that failed before it was ready gets SIGTERM, and so drains
 * what it accepted from the shared queues; SIGKILL after this long. */
#define TERM_GRACE (10 * GRACE_SECOND)

/* One named descriptor: a listener or passed state. */
typedef struct named_fd {
  char *name;
  int fd;         /* the upgrader's copy, or -1 once taken / closed */
  bool listener;  /* a listening socket */
  bool inherited; /* from the predecessor or systemd */
  bool claimed;   /* the program asked for it */
} named_fd;

/* A line-buffered stream socket. */
typedef struct chan {
  int fd;
  size_t len;
  char buf[LINE_MAX_LEN];
} chan;

/* A request for an upgrade, from the API (waits on the condition
 * variable), the signal, or a control client. */
typedef struct request {
  struct request *next;
  int client; /* control client descriptor, or -1 */
  pid_t from; /* the signal's sender, or 0 */
  bool api;   /* grace_upgrader_upgrade waits for it */
  bool done;
  int result;
  char msg[384]; /* what the requester is told */
} request;

enum state {
  ST_NEW,      /* before grace_upgrader_ready */
  ST_CHECKING, /* serving; the readiness check has not passed yet */
  ST_SERVING,  /* ready: upgrades are taken */
  ST_SPAWNED,  /* a successor runs and is not ready yet */
  ST_REAPING,  /* a successor that failed is stopping (SIGTERM sent) */
  ST_HANDED,  /* handed over; watching the successor for a rollback */
  ST_STOPPED  /* a plain shutdown began, or freed */
};

struct grace_upgrader {
  grace_upgrader_options opts;
  char *exe;
  char **argv;
  char *pidfile;
  char *control_path;
  unsigned generation;
  named_fd fds[MAX_FDS];
  unsigned nfds;
  size_t ninherited; /* listeners inherited, for grace_upgrader_inherited_name */
  char *inherited_names[MAX_FDS];

  pthread_mutex_t lock; /* guards state, requests, stop_req */
  pthread_cond_t cond;
  enum state state;
  request *queue; /* API requests not yet seen by the thread */
  bool stop_req;  /* a plain shutdown was asked for */
  bool stopped;   /* the thread has done it (grace_upgrader_stop waits) */
  bool quit_req;  /* grace_upgrader_free */
  pthread_t thread;
  bool thread_started;
  int wake_fd;

  /* The predecessor. */
  chan parent;
  pid_t parent_pid;
  bool acked;
  unsigned parent_older; /* generations older than the predecessor */

  /* The successor. */
  pid_t child;
  int child_pidfd;
  chan cchan;
  int64_t child_deadline;
  int64_t reap_deadline; /* ST_REAPING: SIGKILL then */
  int64_t child_started;
  bool child_rollback;
  bool child_stopping; /* it said "stopping" or "handover" */
  request *waiters;    /* requests answered when the successor is ready */
  int rollbacks;
  pid_t handed_to;

  /* The control socket. */
  int control_fd; /* listener (the upgrader's copy is in fds too) */
  chan clients[MAX_CLIENTS];

  grace_ctx *ctx; /* cancelled at the hand-over */
  /* The group part, when added to a group. */
  grace_group *group;
  grace_group_part *part;
  struct sigaction old_action;
  int signo;
};

static grace_upgrader *the_upgrader;
static int sig_pipe[2] = {-1, -1};

/* ---- small helpers -------------------------------------------------------- */

static void ulog(grace_upgrader *u, const char *fmt, ...) GRACE_PRINTF(2, 3);
static void ulog(grace_upgrader *u, const char *fmt, ...) {
  if (u->opts.quiet)
    return;
  va_list ap;
  va_start(ap, fmt);
  grace_vlog(fmt, ap);
  va_end(ap);
}

static void set_msg(char *msg, size_t len, const char *fmt, ...)
    GRACE_PRINTF(3, 4);
static void set_msg(char *msg, size_t len, const char *fmt, ...) {
  if (msg == NULL || len == 0)
    return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, len, fmt, ap);
  va_end(ap);
}

static char *xstrdup(const char *s) { return s != NULL ? strdup(s) : NULL; }

static int write_all(int fd, const char *p, size_t n) {
  while (n > 0) {
    ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
    if (w < 0) {
      if (errno == EINTR)
        continue;
      return -errno;
    }
    p += w;
    n -= (size_t)w;
  }
  return 0;
}

static int send_line(int fd, const char *fmt, ...) GRACE_PRINTF(2, 3);
static int send_line(int fd, const char *fmt, ...) {
  char buf[LINE_MAX_LEN + 2];
  va_list ap;
  if (fd < 0)
    return GRACE_EINVAL;
  va_start(ap, fmt);
  int n = vsnprintf(buf, sizeof(buf) - 1, fmt, ap);
  va_end(ap);
  if (n < 0)
    return GRACE_EINVAL;
  if ((size_t)n > sizeof(buf) - 2)
    n = (int)sizeof(buf) - 2;
  buf[n++] = '\n';
  return write_all(fd, buf, (size_t)n);
}

static void chan_init(chan *c, int fd) {
  c->fd = fd;
  c->len = 0;
}

static void chan_close(chan *c) {
  if (c->fd >= 0)
    close(c->fd);
  c->fd = -1;
  c->len = 0;
}

/*
 * Reads what is there and returns the next complete line (NUL terminated,
 * without its newline) in |line|: 1 for a line, 0 for nothing yet, -1 for
 * the end of the stream or an error (or a line too long).
 */
static int chan_read(chan *c, char *line, size_t linelen) {
  for (;;) {
    char *nl = memchr(c->buf, '\n', c->len);
    if (nl != NULL) {
      size_t n = (size_t)(nl - c->buf);
      if (n >= linelen)
        return -1;
      memcpy(line, c->buf, n);
      line[n] = '\0';
      c->len -= n + 1;
      memmove(c->buf, nl + 1, c->len);
      return 1;
    }
    if (c->len == sizeof(c->buf))
      return -1;
    ssize_t r = recv(c->fd, c->buf + c->len, sizeof(c->buf) - c->len,
                     MSG_DONTWAIT);
    if (r > 0) {
      c->len += (size_t)r;
      continue;
    }
    if (r < 0 && (errno == EAGAIN || errno == EINTR))
      return 0;
    return -1;
  }
}

static bool valid_name(const char *name) {
  if (name == NULL || name[0] == '\0' || strlen(name) > 64)
    return false;
  for (const char *p = name; *p; p++)
    if (*p == ':' || *p == '=' || *p == '\n' || (unsigned char)*p < 0x20)
      return false;
  return true;
}

static named_fd *find(grace_upgrader *u, const char *name) {
  for (unsigned i = 0; i < u->nfds; i++)
    if (strcmp(u->fds[i].name, name) == 0)
      return &u->fds[i];
  return NULL;
}

static named_fd *add_fd(grace_upgrader *u, const char *name, int fd,
                        bool listener, bool inherited) {
  if (u->nfds == MAX_FDS)
    return NULL;
  char *n = strdup(name);
  if (n == NULL)
    return NULL;
  named_fd *e = &u->fds[u->nfds++];
  e->name = n;
  e->fd = fd;
  e->listener = listener;
  e->inherited = inherited;
  e->claimed = false;
  /* The control socket is the upgrader's own, not the program's. */
  if (inherited && listener && u->ninherited < MAX_FDS &&
      strcmp(name, GRACE_UPGRADE_CONTROL_NAME) != 0)
    u->inherited_names[u->ninherited++] = n;
  return e;
}

static bool is_listener(int fd) {
  int acc = 0;
  socklen_t len = sizeof(acc);
  return getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &acc, &len) == 0 && acc;
}

static int parse_int(const char *s, long min, long max, long *out) {
  char *end;
  if (s == NULL || s[0] == '\0')
    return GRACE_EINVAL;
  errno = 0;
  long v = strtol(s, &end, 10);
  if (errno != 0 || *end != '\0' || v < min || v > max)
    return GRACE_EINVAL;
  *out = v;
  return 0;
}

/* ---- what this process inherited ------------------------------------------ */

/* Splits "a:b:c" into exactly |n| names, adding the descriptors
 * first..first+n-1 under them. */
static int adopt_named(grace_upgrader *u, const char *names, int first, int n,
                       bool from_systemd) {
  const char *p = names;
  for (int i = 0; i < n; i++) {
    char name[80];
    const char *end = p != NULL ? strchr(p, ':') : NULL;
    size_t len = p == NULL ? 0 : end != NULL ? (size_t)(end - p) : strlen(p);
    if (p == NULL || len == 0 || len >= sizeof(name))
      snprintf(name, sizeof(name), "%s", from_systemd ? "unknown" : "");
    else {
      memcpy(name, p, len);
      name[len] = '\0';
    }
    if (p != NULL)
      p = end != NULL ? end + 1 : NULL;
    int fd = first + i;
    if (fcntl(fd, F_GETFD) < 0)
      return -EBADF;
    (void)fcntl(fd, F_SETFD, FD_CLOEXEC);
    bool l = is_listener(fd);
    if (l && grace__adopt_listen_fd(fd) != 0)
      return GRACE_EINVAL;
    if (!valid_name(name))
      return GRACE_EINVAL;
    /* systemd may pass several sockets under one name ("unknown"): keep
     * each, numbered after the first. */
    if (find(u, name) != NULL) {
      if (!from_systemd)
        return GRACE_EINVAL;
      char alt[sizeof(name)];
      for (unsigned k = 2;; k++) {
        snprintf(alt, sizeof(alt), "%.64s.%u", name, k);
        if (find(u, alt) == NULL)
          break;
      }
      snprintf(name, sizeof(name), "%s", alt);
    }
    if (add_fd(u, name, fd, l, true) == NULL)
      return GRACE_ENOMEM;
  }
  return 0;
}

static int adopt_predecessor(grace_upgrader *u) {
  const char *fds = getenv(ENV_FDS);
  if (fds == NULL)
    return 0;
  long n = 0, ctl, parent, gen = 2;
  int rv = parse_int(fds, 0, MAX_FDS - 1, &n);
  if (rv == 0)
    rv = parse_int(getenv(ENV_CTL), 3, INT_MAX, &ctl);
  if (rv == 0)
    rv = parse_int(getenv(ENV_PARENT), 1, INT_MAX, &parent);
  if (rv == 0 && getenv(ENV_GEN) != NULL)
    rv = parse_int(getenv(ENV_GEN), 2, INT_MAX, &gen);
  if (rv == 0 && ctl != 3 + n)
    rv = GRACE_EINVAL;
  /* Exactly one name per descriptor, as spawn writes them. */
  const char *names = n > 0 ? getenv(ENV_NAMES) : "";
  if (rv == 0 && n > 0) {
    long count = names != NULL ? 1 : 0;
    for (const char *q = names; q != NULL && *q != '\0'; q++)
      count += *q == ':';
    if (count != n)
      rv = GRACE_EINVAL;
  }
  if (rv == 0)
    rv = adopt_named(u, names, 3, (int)n, false);
  if (rv != 0)
    return rv;
  int type = 0;
  socklen_t tl = sizeof(type);
  if (getsockopt((int)ctl, SOL_SOCKET, SO_TYPE, &type, &tl) != 0 ||
      type != SOCK_STREAM)
    return GRACE_EINVAL;
  (void)fcntl((int)ctl, F_SETFD, FD_CLOEXEC);
  chan_init(&u->parent, (int)ctl);
  u->parent_pid = (pid_t)parent;
  u->generation = (unsigned)gen;
  return 0;
}

static void unset_env(void) {
  unsetenv(ENV_FDS);
  unsetenv(ENV_NAMES);
  unsetenv(ENV_CTL);
  unsetenv(ENV_PARENT);
  unsetenv(ENV_GEN);
}

/* argv[0] made absolute: relative to the working directory when it has a
 * '/', else searched in PATH as execvp would. */
static char *absolute_exe(const char *arg0) {
  char buf[PATH_MAX];
  if (arg0 == NULL || arg0[0] == '\0')
    return NULL;
  if (arg0[0] == '/')
    return strdup(arg0);
  if (strchr(arg0, '/') != NULL) {
    while (arg0[0] == '.' && arg0[1] == '/')
      arg0 += 2; /* "./app" is "app" in the working directory */
    if (getcwd(buf, sizeof(buf)) == NULL)
      return NULL;
    size_t cl = strlen(buf), al = strlen(arg0);
    if (cl + 1 + al + 1 > sizeof(buf))
      return NULL;
    buf[cl] = '/';
    memcpy(buf + cl + 1, arg0, al + 1);
    return strdup(buf);
  }
  const char *path = getenv("PATH");
  if (path == NULL)
    path = "/usr/local/bin:/usr/bin:/bin";
  for (const char *p = path; *p;) {
    const char *end = strchr(p, ':');
    size_t dl = end != NULL ? (size_t)(end - p) : strlen(p);
    if (dl > 0 && dl + 1 + strlen(arg0) + 1 <= sizeof(buf)) {
      memcpy(buf, p, dl);
      buf[dl] = '/';
      strcpy(buf + dl + 1, arg0);
      if (access(buf, X_OK) == 0) {
        if (buf[0] == '/')
          return strdup(buf);
        return absolute_exe(buf); /* a relative PATH entry */
      }
    }
    if (end == NULL)
      break;
    p = end + 1;
  }
  return NULL;
}

/* ---- the signal ------------------------------------------------------------ */

static void on_signal(int signo, siginfo_t *info, void *uctx) {
  (void)signo;
  (void)uctx;
  int saved = errno;
  pid_t from = info != NULL ? info->si_pid : 0;
  ssize_t rv = write(sig_pipe[1], &from, sizeof(from));
  (void)rv; /* a full pipe: upgrades are asked for already */
  errno = saved;
}

/* ---- life cycle ------------------------------------------------------------ */

void grace_upgrader_options_init(grace_upgrader_options *opts) {
  memset(opts, 0, sizeof(*opts));
  opts->size = sizeof(*opts);
}

static void free_upgrader(grace_upgrader *u) {
  for (unsigned i = 0; i < u->nfds; i++) {
    if (u->fds[i].fd >= 0)
      close(u->fds[i].fd);
    free(u->fds[i].name);
  }
  chan_close(&u->parent);
  chan_close(&u->cchan);
  for (int i = 0; i < MAX_CLIENTS; i++)
    chan_close(&u->clients[i]);
  if (u->child_pidfd >= 0)
    close(u->child_pidfd);
  if (u->wake_fd >= 0)
    close(u->wake_fd);
  if (u->argv != NULL)
    for (char **a = u->argv; *a; a++)
      free(*a);
  free(u->argv);
  free(u->exe);
  free(u->pidfile);
  free(u->control_path);
  if (u->ctx != NULL)
    grace_ctx_unref(u->ctx);
  pthread_mutex_destroy(&u->lock);
  pthread_cond_destroy(&u->cond);
  free(u);
}

int grace_upgrader_new(const grace_upgrader_options *opts, int argc,
                       char **argv, grace_upgrader **out) {
  grace_upgrader_options o;
  int rv;

  if (out == NULL || argv == NULL || argc < 1 || argv[0] == NULL)
    return GRACE_EINVAL;
  grace_upgrader_options_init(&o);
  if (opts != NULL) {
    if (opts->size > sizeof(o) || opts->size == 0)
      return GRACE_EINVAL;
    memcpy(&o, opts, opts->size);
    o.size = sizeof(o);
  }
  int signo = o.signal == 0 ? SIGUSR2 : o.signal;
  if (o.ready_timeout < 0 || o.close_spread < 0 ||
      (signo > 0 && (signo == SIGINT || signo == SIGTERM || signo == SIGKILL ||
                     signo == SIGSTOP || signo == SIGPIPE || signo == SIGCHLD ||
                     signo >= NSIG)))
    return GRACE_EINVAL;
  if (the_upgrader != NULL)
    return GRACE_ESTATE;
  if (o.ready_timeout == 0)
    o.ready_timeout = GRACE_UPGRADE_DEFAULT_READY_TIMEOUT;
  if (o.close_spread == 0)
    o.close_spread = GRACE_UPGRADE_DEFAULT_CLOSE_SPREAD;
  if (o.max_draining == 0)
    o.max_draining = 1;

  grace_upgrader *u = calloc(1, sizeof(*u));
  if (u == NULL)
    return GRACE_ENOMEM;
  pthread_mutex_init(&u->lock, NULL);
  pthread_cond_init(&u->cond, NULL);
  u->wake_fd = -1;
  u->child_pidfd = -1;
  u->control_fd = -1;
  chan_init(&u->parent, -1);
  chan_init(&u->cchan, -1);
  for (int i = 0; i < MAX_CLIENTS; i++)
    chan_init(&u->clients[i], -1);
  u->generation = 1;
  u->state = ST_NEW;
  u->signo = signo;
  u->opts = o;
  u->opts.exe = NULL;
  u->opts.pidfile = NULL;
  u->opts.control_path = NULL;

  rv = GRACE_ENOMEM;
  u->exe = o.exe != NULL ? strdup(o.exe) : absolute_exe(argv[0]);
  if (u->exe == NULL) {
    rv = o.exe != NULL ? GRACE_ENOMEM : GRACE_ENOENT;
    goto fail;
  }
  if ((o.pidfile != NULL && (u->pidfile = strdup(o.pidfile)) == NULL) ||
      (o.control_path != NULL &&
       (u->control_path = strdup(o.control_path)) == NULL))
    goto fail;
  if (u->control_path != NULL &&
      strlen(u->control_path) >= sizeof(((struct sockaddr_un *)0)->sun_path)) {
    rv = GRACE_EINVAL;
    goto fail;
  }
  u->argv = calloc((size_t)argc + 1, sizeof(char *));
  if (u->argv == NULL)
    goto fail;
  for (int i = 0; i < argc; i++)
    if ((u->argv[i] = xstrdup(argv[i])) == NULL)
      goto fail;

  /* What was inherited: from a predecessor, then from systemd.  Before
   * this process opens any descriptor of its own: one opened first would
   * take the number of an inherited descriptor that is missing, which
   * would then be adopted in its place instead of being refused. */
  rv = adopt_predecessor(u);
  unset_env();
  if (rv != 0)
    goto fail;
  char **sdnames = NULL;
  int nsd = grace_sd_listen_fds_with_names(true, &sdnames);
  if (nsd < 0) {
    rv = nsd;
    goto fail;
  }
  if (nsd > 0) {
    /* The names as one "a:b" string for adopt_named. */
    size_t total = 1;
    for (int i = 0; i < nsd; i++)
      total += strlen(sdnames[i]) + 1;
    char *joined = calloc(1, total);
    if (joined == NULL) {
      grace_sd_listen_names_free(sdnames);
      rv = GRACE_ENOMEM;
      goto fail;
    }
    for (int i = 0; i < nsd; i++) {
      if (i > 0)
        strcat(joined, ":");
      strcat(joined, sdnames[i]);
    }
    grace_sd_listen_names_free(sdnames);
    rv = adopt_named(u, joined, GRACE_SD_LISTEN_FDS_START, nsd, true);
    free(joined);
    if (rv != 0)
      goto fail;
  }

  u->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (u->wake_fd < 0) {
    rv = -errno;
    goto fail;
  }
  rv = grace_ctx_with_cancel(grace_ctx_background(), &u->ctx);
  if (rv != 0)
    goto fail;

  if (signo > 0) {
    if (sig_pipe[0] < 0 && pipe2(sig_pipe, O_CLOEXEC | O_NONBLOCK) != 0) {
      rv = -errno;
      goto fail;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_sigaction = on_signal;
    sa.sa_flags = SA_SIGINFO | SA_RESTART;
    sigemptyset(&sa.sa_mask);
    if (sigaction(signo, &sa, &u->old_action) != 0) {
      rv = -errno;
      goto fail;
    }
  }
  the_upgrader = u;
  *out = u;
  return 0;

fail:
  free_upgrader(u);
  return rv;
}

/* ---- listeners and state ---------------------------------------------------- */

int grace_upgrader_listen(grace_upgrader *u, const char *name, const char *addr,
                          int backlog, int *fd, bool *inherited) {
  if (u == NULL || fd == NULL || !valid_name(name) || backlog < 0)
    return GRACE_EINVAL;
  if (u->state != ST_NEW)
    return GRACE_ESTATE;
  named_fd *e = find(u, name);
  if (e != NULL && (e->claimed || !e->listener))
    return GRACE_EBUSY;
  if (e != NULL) {
    int copy = fcntl(e->fd, F_DUPFD_CLOEXEC, 3);
    if (copy < 0)
      return -errno;
    e->claimed = true;
    *fd = copy;
    if (inherited != NULL)
      *inherited = true;
    return 0;
  }
  if (addr == NULL)
    return GRACE_EINVAL;
  if (u->nfds == MAX_FDS)
    return GRACE_ENOMEM;
  int lfd, rv = grace__listen(addr, backlog == 0 ? 511 : backlog, &lfd);
  if (rv != 0)
    return rv;
  int copy = fcntl(lfd, F_DUPFD_CLOEXEC, 3);
  if (copy < 0) {
    rv = -errno;
    close(lfd);
    return rv;
  }
  e = add_fd(u, name, lfd, true, false);
  if (e == NULL) {
    close(lfd);
    close(copy);
    return GRACE_ENOMEM;
  }
  e->claimed = true;
  *fd = copy;
  if (inherited != NULL)
    *inherited = false;
  return 0;
}

const char *grace_upgrader_inherited_name(grace_upgrader *u, size_t index) {
  if (u == NULL || index >= u->ninherited)
    return NULL;
  return u->inherited_names[index];
}

int grace_upgrader_pass_fd(grace_upgrader *u, const char *name, int fd) {
  if (u == NULL || !valid_name(name) || fd < 0)
    return GRACE_EINVAL;
  pthread_mutex_lock(&u->lock);
  int rv = 0;
  named_fd *e = find(u, name);
  if (e != NULL && e->fd >= 0 && (e->claimed || !e->inherited || e->listener))
    rv = GRACE_EBUSY;
  else if (e == NULL && u->nfds == MAX_FDS)
    rv = GRACE_ENOMEM;
  if (rv == 0) {
    int copy = fcntl(fd, F_DUPFD_CLOEXEC, 3);
    if (copy < 0) {
      rv = -errno;
    } else if (e != NULL) {
      /* Replaces an inherited state descriptor the program did not take. */
      if (e->fd >= 0)
        close(e->fd);
      e->fd = copy;
      e->claimed = true;
    } else if ((e = add_fd(u, name, copy, false, false)) == NULL) {
      close(copy);
      rv = GRACE_ENOMEM;
    } else {
      e->claimed = true;
    }
  }
  pthread_mutex_unlock(&u->lock);
  return rv;
}

int grace_upgrader_take_fd(grace_upgrader *u, const char *name) {
  if (u == NULL || name == NULL)
    return GRACE_EINVAL;
  pthread_mutex_lock(&u->lock);
  named_fd *e = find(u, name);
  int fd = GRACE_ENOENT;
  if (e != NULL && !e->listener && e->inherited && !e->claimed && e->fd >= 0) {
    fd = e->fd;
    e->fd = -1;
    e->claimed = true;
  }
  pthread_mutex_unlock(&u->lock);
  return fd;
}

bool grace_upgrader_is_successor(grace_upgrader *u) {
  return u != NULL && u->parent_pid != 0;
}

unsigned grace_upgrader_generation(grace_upgrader *u) {
  return u != NULL ? u->generation : 0;
}

grace_ctx *grace_upgrader_context(grace_upgrader *u) {
  return u != NULL ? u->ctx : NULL;
}

/* ---- the PID file ------------------------------------------------------------ */

static int write_pidfile(grace_upgrader *u, pid_t pid) {
  if (u->pidfile == NULL)
    return 0;
  char tmp[PATH_MAX], text[32];
  int n = snprintf(tmp, sizeof(tmp), "%s.tmp.%ld", u->pidfile, (long)getpid());
  if (n < 0 || (size_t)n >= sizeof(tmp))
    return GRACE_EINVAL;
  int tl = snprintf(text, sizeof(text), "%ld\n", (long)pid);
  int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0)
    return -errno;
  int rv = 0;
  if (write(fd, text, (size_t)tl) != tl || fsync(fd) != 0)
    rv = -errno;
  close(fd);
  if (rv == 0 && rename(tmp, u->pidfile) != 0)
    rv = -errno;
  if (rv != 0) {
    unlink(tmp);
    ulog(u, "Upgrade: cannot write the PID file %s: %s", u->pidfile,
         grace_strerror(rv));
  }
  return rv;
}

static pid_t read_pidfile(grace_upgrader *u) {
  char text[32];
  int fd = open(u->pidfile, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return 0;
  ssize_t n = read(fd, text, sizeof(text) - 1);
  close(fd);
  if (n <= 0)
    return 0;
  text[n] = '\0';
  return (pid_t)strtol(text, NULL, 10);
}

/* ---- starting a successor ---------------------------------------------------- */

static char *env_pair(const char *name, const char *value) {
  size_t n = strlen(name) + 1 + strlen(value) + 1;
  char *s = malloc(n);
  if (s != NULL)
    snprintf(s, n, "%s=%s", name, value);
  return s;
}

static bool env_is_ours(const char *e) {
  static const char *const drop[] = {ENV_FDS "=",     ENV_NAMES "=",
                                     ENV_CTL "=",     ENV_PARENT "=",
                                     ENV_GEN "=",     "LISTEN_FDS=",
                                     "LISTEN_PID=",   "LISTEN_FDNAMES="};
  for (size_t i = 0; i < sizeof(drop) / sizeof(drop[0]); i++)
    if (strncmp(e, drop[i], strlen(drop[i])) == 0)
      return true;
  return false;
}

/*
 * Starts |path| with the named descriptors and a new control channel.
 * Stores the child's pid and our end of the channel.  Returns 0 or a
 * negative errno (with a message).
 */
static int spawn(grace_upgrader *u, const char *path, pid_t *pid, int *ctl,
                 char *msg, size_t msglen) {
  int pass[MAX_FDS];
  char *names = NULL, **envp = NULL;
  int sv[2] = {-1, -1}, high[MAX_FDS + 1];
  unsigned n = 0, nhigh = 0;
  size_t nenv = 0, namelen = 1;
  int rv;
  posix_spawn_file_actions_t fa;
  posix_spawnattr_t attr;
  bool fa_init = false, attr_init = false;

  for (unsigned i = 0; i < u->nfds; i++)
    if (u->fds[i].fd >= 0 && u->fds[i].claimed) {
      pass[n++] = (int)i;
      namelen += strlen(u->fds[i].name) + 1;
    }
  names = calloc(1, namelen);
  if (names == NULL) {
    rv = GRACE_ENOMEM;
    goto out;
  }
  for (unsigned i = 0; i < n; i++) {
    if (i > 0)
      strcat(names, ":");
    strcat(names, u->fds[pass[i]].name);
  }
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
    rv = -errno;
    goto out;
  }
  /* Copies above every target number, so that no dup2 overwrites a
   * source still to be copied. */
  int floor = 3 + (int)n + 1;
  for (unsigned i = 0; i <= n; i++) {
    int src = i < n ? u->fds[pass[i]].fd : sv[1];
    high[i] = fcntl(src, F_DUPFD_CLOEXEC, floor);
    if (high[i] < 0) {
      rv = -errno;
      goto out;
    }
    nhigh++;
  }

  for (char **e = environ; *e; e++)
    nenv++;
  envp = calloc(nenv + 6, sizeof(char *));
  if (envp == NULL) {
    rv = GRACE_ENOMEM;
    goto out;
  }
  size_t k = 0;
  for (char **e = environ; *e; e++)
    if (!env_is_ours(*e) && (envp[k] = strdup(*e)) != NULL)
      k++;
  char num[32];
  snprintf(num, sizeof(num), "%u", n);
  envp[k++] = env_pair(ENV_FDS, num);
  envp[k++] = env_pair(ENV_NAMES, names);
  snprintf(num, sizeof(num), "%u", 3 + n);
  envp[k++] = env_pair(ENV_CTL, num);
  snprintf(num, sizeof(num), "%ld", (long)getpid());
  envp[k++] = env_pair(ENV_PARENT, num);
  snprintf(num, sizeof(num), "%u", u->generation + 1);
  envp[k++] = env_pair(ENV_GEN, num);
  for (size_t i = k - 5; i < k; i++)
    if (envp[i] == NULL) {
      rv = GRACE_ENOMEM;
      goto out;
    }

  if ((rv = posix_spawn_file_actions_init(&fa)) != 0) {
    rv = -rv;
    goto out;
  }
  fa_init = true;
  for (unsigned i = 0; i <= n; i++)
    if ((rv = posix_spawn_file_actions_adddup2(&fa, high[i], 3 + (int)i)) !=
        0) {
      rv = -rv;
      goto out;
    }
  if ((rv = posix_spawnattr_init(&attr)) != 0) {
    rv = -rv;
    goto out;
  }
  attr_init = true;
  sigset_t none, all;
  sigemptyset(&none);
  sigfillset(&all);
  sigdelset(&all, SIGKILL);
  sigdelset(&all, SIGSTOP);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setsigdefault(&attr, &all);
  posix_spawnattr_setflags(&attr,
                           POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  rv = posix_spawn(pid, path, &fa, &attr, u->argv, envp);
  if (rv != 0) {
    rv = -rv;
    set_msg(msg, msglen, "cannot start %s: %s", path, grace_strerror(rv));
    goto out;
  }
  *ctl = sv[0];
  sv[0] = -1;
  rv = 0;

out:
  if (rv != 0 && (msg == NULL || msg[0] == '\0'))
    set_msg(msg, msglen, "cannot start %s: %s", path, grace_strerror(rv));
  if (fa_init)
    posix_spawn_file_actions_destroy(&fa);
  if (attr_init)
    posix_spawnattr_destroy(&attr);
  for (unsigned i = 0; i < nhigh; i++)
    close(high[i]);
  if (sv[0] >= 0)
    close(sv[0]);
  if (sv[1] >= 0)
    close(sv[1]);
  if (envp != NULL) {
    for (size_t i = 0; i < nenv + 6; i++)
      free(envp[i]);
    free(envp);
  }
  free(names);
  return rv;
}

/* ---- the thread ---------------------------------------------------------------- */

static unsigned older(grace_upgrader *u) {
  return u->parent.fd >= 0 && u->acked ? 1 + u->parent_older : 0;
}

static void answer(grace_upgrader *u, request *r, int result, const char *msg) {
  r->result = result;
  snprintf(r->msg, sizeof(r->msg), "%s", msg);
  if (r->client >= 0) {
    if (result == 0)
      (void)send_line(r->client, "ok %s", msg);
    else
      (void)send_line(r->client, "error %s", msg);
    /* The client's descriptor stays in clients[]; it sees EOF when it is
     * done and closes; we close on its EOF. */
  }
  if (r->api) {
    pthread_mutex_lock(&u->lock);
    r->done = true;
    pthread_cond_broadcast(&u->cond);
    pthread_mutex_unlock(&u->lock);
  } else {
    free(r);
  }
}

static void answer_waiters(grace_upgrader *u, int result, const char *msg) {
  while (u->waiters != NULL) {
    request *r = u->waiters;
    u->waiters = r->next;
    answer(u, r, result, msg);
  }
}

static void child_clear(grace_upgrader *u) {
  chan_close(&u->cchan);
  if (u->child_pidfd >= 0)
    close(u->child_pidfd);
  u->child_pidfd = -1;
  u->child = 0;
  u->child_stopping = false;
}

/* Describes how |status| ended a process. */
static void describe_exit(int status, char *buf, size_t len) {
  if (WIFEXITED(status))
    snprintf(buf, len, "exited with status %d", WEXITSTATUS(status));
  else if (WIFSIGNALED(status))
    snprintf(buf, len, "was killed by signal %d (%s)", WTERMSIG(status),
             strsignal(WTERMSIG(status)));
  else
    snprintf(buf, len, "ended");
}

/*
 * Reaps the successor and says in |how| how it ended.  If it still runs,
 * |kill_it| kills it first (SIGKILL); else this returns false and leaves it
 * running.
 */
static bool child_wait(grace_upgrader *u, bool kill_it, char *how,
                       size_t len) {
  int status = 0;
  pid_t r = waitpid(u->child, &status, WNOHANG);
  if (r == 0) {
    if (!kill_it)
      return false;
    kill(u->child, SIGKILL);
    do
      r = waitpid(u->child, &status, 0);
    while (r < 0 && errno == EINTR);
    if (r == u->child && WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) {
      snprintf(how, len, "was killed");
      return true;
    }
  }
  if (r == u->child)
    describe_exit(status, how, len); /* it ended on its own */
  else
    snprintf(how, len, "is gone");
  return true;
}

static int start_child(grace_upgrader *u, bool rollback, char *msg,
                       size_t msglen) {
  /* A rollback runs the binary this process runs (the previous version),
   * which /proc/self/exe names even once the file was replaced. */
  const char *path = rollback ? "/proc/self/exe" : u->exe;
  pid_t pid;
  int ctl;
  int rv = spawn(u, path, &pid, &ctl, msg, msglen);
  if (rv != 0)
    return rv;
  u->child = pid;
  chan_init(&u->cchan, ctl);
  u->child_pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
  u->child_started = grace_now();
  u->child_deadline = u->child_started + u->opts.ready_timeout;
  u->child_rollback = rollback;
  u->child_stopping = false;
  u->state = ST_SPAWNED;
  ulog(u, "%s: started pid %ld (%s, generation %u); waiting up to %.3gs for "
          "it to be ready",
       rollback ? "Rollback" : "Upgrade", (long)pid, path, u->generation + 1,
       (double)u->opts.ready_timeout / GRACE_SECOND);
  return 0;
}

/* The successor failed before it was ready. */
/*
 * The successor failed before it was ready: it exited (|why| NULL), or
 * |why| says what it did not do.  One that still runs is told to stop
 * (SIGTERM: it drains what it accepted meanwhile from the shared queues,
 * nothing it holds is cut) and reaped later (ST_REAPING); a rollback that
 * fails is killed and tried again.  The requesters learn it now.
 */
static void child_failed(grace_upgrader *u, const char *why, int err) {
  char how[128], msg[320];
  pid_t pid = u->child;
  bool rollback = u->child_rollback;
  if (child_wait(u, rollback, how, sizeof(how))) {
    child_clear(u);
    if (why != NULL)
      snprintf(msg, sizeof(msg), "pid %ld %s: it %s", (long)pid, why, how);
    else
      snprintf(msg, sizeof(msg), "pid %ld %s before it was ready", (long)pid,
               how);
  } else {
    kill(pid, SIGTERM);
    chan_close(&u->cchan);
    u->reap_deadline = grace_now() + TERM_GRACE;
    snprintf(msg, sizeof(msg),
             "pid %ld %s: it is told to stop (SIGTERM; SIGKILL in %llds)",
             (long)pid, why != NULL ? why : "ended its channel",
             (long long)(TERM_GRACE / GRACE_SECOND));
  }
  if (rollback) {
    u->state = ST_HANDED;
    ulog(u, "Rollback failed: %s", msg);
    if (!u->quit_req && ++u->rollbacks < ROLLBACK_TRIES) {
      char why2[256] = "";
      if (start_child(u, true, why2, sizeof(why2)) == 0)
        return;
      ulog(u, "Rollback failed: %s", why2);
    }
    ulog(u, "Rollback given up: no process accepts on the listeners after "
            "this one exits");
    return;
  }
  u->state = u->child != 0 ? ST_REAPING : u->stop_req ? ST_STOPPED : ST_SERVING;
  (void)write_pidfile(u, getpid()); /* in case the successor wrote it */
  ulog(u, "Upgrade failed: %s; pid %ld goes on serving", msg,
       (long)getpid());
  answer_waiters(u, err, msg);
}

/* ST_REAPING: the failed successor exited, or its time is up. */
static void child_reap(grace_upgrader *u, bool timed_out) {
  char how[128];
  pid_t pid = u->child;
  if (!child_wait(u, timed_out, how, sizeof(how)))
    return; /* not yet */
  child_clear(u);
  u->state = u->stop_req ? ST_STOPPED : ST_SERVING;
  ulog(u, "Upgrade: the failed pid %ld %s", (long)pid, how);
}

/* The successor said it is ready: hand over. */
static void child_ready(grace_upgrader *u) {
  char msg[128];
  pid_t pid = u->child;
  double ms = (double)(grace_now() - u->child_started) / GRACE_MILLISECOND;
  (void)write_pidfile(u, pid);
  if (grace_sd_notify_wanted())
    grace_sd_notifyf("MAINPID=%ld\nSTATUS=Handed over to pid %ld",
                     (long)pid, (long)pid);
  (void)send_line(u->cchan.fd, "ack %u", older(u));
  bool first = u->handed_to == 0;
  u->handed_to = pid;
  u->state = ST_HANDED;
  u->rollbacks = 0;
  snprintf(msg, sizeof(msg), "%ld", (long)pid);
  if (u->child_rollback) {
    ulog(u, "Rollback: pid %ld is ready after %.1fms; it accepts now",
         (long)pid, ms);
  } else {
    ulog(u, "Upgrade: pid %ld is ready after %.1fms; pid %ld stops accepting "
            "and drains",
         (long)pid, ms, (long)getpid());
  }
  if (first) {
    if (u->parent.fd >= 0)
      (void)send_line(u->parent.fd, "handover %ld", (long)pid);
    if (u->group != NULL) {
      grace__group_handover(u->group, pid, u->opts.close_spread);
      grace_group_part_done(u->part, 0);
    }
    grace_ctx_cancel(u->ctx);
  }
  /* The requesters learn it once the hand-over is done here: their
   * grace_upgrader_upgrade returns 0 with the context cancelled. */
  answer_waiters(u, 0, msg);
  /* Our control listener is the successor's now. */
  for (int i = 0; i < MAX_CLIENTS; i++)
    chan_close(&u->clients[i]);
  if (u->control_fd >= 0) {
    close(u->control_fd);
    u->control_fd = -1;
  }
}

/* The successor ended after it was ready. */
static void child_gone(grace_upgrader *u) {
  char how[128];
  int status = 0;
  pid_t pid = u->child, r;
  do
    r = waitpid(pid, &status, 0);
  while (r < 0 && errno == EINTR);
  bool stopping = u->child_stopping;
  child_clear(u);
  if (r == pid)
    describe_exit(status, how, sizeof(how));
  else
    snprintf(how, sizeof(how), "is gone");
  if (stopping || u->quit_req)
    return; /* it stopped on purpose, or handed over in turn */
  ulog(u, "Rollback: successor pid %ld %s after it was ready; starting the "
          "previous binary again on the same sockets",
       (long)pid, how);
  char err[256] = "";
  if (start_child(u, true, err, sizeof(err)) != 0) {
    ulog(u, "Rollback failed: %s", err);
    ulog(u, "Rollback given up: no process accepts on the listeners after "
            "this one exits");
  }
}

static bool can_upgrade(grace_upgrader *u, char *msg, size_t len, int *err) {
  switch (u->state) {
  case ST_NEW:
  case ST_CHECKING:
    *err = GRACE_ESTATE;
    set_msg(msg, len, "pid %ld is not ready yet", (long)getpid());
    return false;
  case ST_SPAWNED:
    *err = GRACE_EBUSY;
    set_msg(msg, len, "an upgrade is in flight (pid %ld is starting)",
            (long)u->child);
    return false;
  case ST_REAPING:
    *err = GRACE_EBUSY;
    set_msg(msg, len, "pid %ld of the failed upgrade is still stopping",
            (long)u->child);
    return false;
  case ST_HANDED:
    *err = GRACE_ESTATE;
    set_msg(msg, len, "pid %ld handed over to pid %ld already",
            (long)getpid(), (long)u->handed_to);
    return false;
  case ST_STOPPED:
    *err = GRACE_ESTATE;
    set_msg(msg, len, "pid %ld is shutting down", (long)getpid());
    return false;
  case ST_SERVING:
    break;
  }
  if (u->parent.fd >= 0 && !u->acked) {
    *err = GRACE_EBUSY;
    set_msg(msg, len, "the hand-over from pid %ld is not finished",
            (long)u->parent_pid);
    return false;
  }
  if (older(u) >= u->opts.max_draining) {
    *err = GRACE_EBUSY;
    set_msg(msg, len,
            "%u older generation%s still draining (pid %ld%s; at most %u)",
            older(u), older(u) == 1 ? " is" : "s are", (long)u->parent_pid,
            older(u) > 1 ? " and older" : "", u->opts.max_draining);
    return false;
  }
  return true;
}

/* A request arrived on the thread. */
static void take_request(grace_upgrader *u, request *r) {
  int err = 0;
  char msg[256] = "";
  if (r->from != 0 || (!r->api && r->client < 0))
    ulog(u, "Upgrade requested (signal %d from pid %ld)", u->signo,
         (long)r->from);
  else if (r->client >= 0)
    ulog(u, "Upgrade requested (control socket)");
  if (!can_upgrade(u, msg, sizeof(msg), &err)) {
    ulog(u, "Upgrade refused: %s", msg);
    answer(u, r, err, msg);
    return;
  }
  err = start_child(u, false, msg, sizeof(msg));
  if (err != 0) {
    ulog(u, "Upgrade failed: %s; pid %ld goes on serving", msg,
         (long)getpid());
    answer(u, r, err, msg);
    return;
  }
  r->next = u->waiters;
  u->waiters = r;
}

static void wake(grace_upgrader *u) {
  uint64_t one = 1;
  ssize_t rv = write(u->wake_fd, &one, sizeof(one));
  (void)rv;
}

static void on_parent_line(grace_upgrader *u, const char *line) {
  unsigned n;
  if (sscanf(line, "ack %u", &n) == 1) {
    u->acked = true;
    u->parent_older = n;
    ulog(u, "Upgrade: pid %ld handed over to this process (generation %u)",
         (long)u->parent_pid, u->generation);
  } else if (sscanf(line, "older %u", &n) == 1) {
    u->parent_older = n;
  } else {
    return;
  }
  if (u->state == ST_HANDED && u->cchan.fd >= 0 && !u->child_stopping)
    (void)send_line(u->cchan.fd, "older %u", older(u));
}

static void on_parent_gone(grace_upgrader *u) {
  bool acked = u->acked;
  if (u->parent.fd < 0)
    return;
  chan_close(&u->parent);
  if (!acked && u->state != ST_NEW) {
    /* The predecessor died before its "ack": nobody else will say that
     * this process accepts (check_ready says it once it is ready). */
    ulog(u, "Upgrade: predecessor pid %ld is gone before it handed over; "
            "this process serves alone",
         (long)u->parent_pid);
    if (u->state == ST_SERVING)
      (void)write_pidfile(u, getpid());
  }
  if (u->state == ST_HANDED && u->cchan.fd >= 0 && !u->child_stopping)
    (void)send_line(u->cchan.fd, "older %u", older(u));
}

static void on_child_line(grace_upgrader *u, const char *line) {
  if (strcmp(line, "ready") == 0 && u->state == ST_SPAWNED) {
    child_ready(u);
  } else if (strncmp(line, "notready ", 9) == 0 && u->state == ST_SPAWNED) {
    char why[LINE_MAX_LEN + 32];
    snprintf(why, sizeof(why), "is not ready (%s)", line + 9);
    child_failed(u, why, GRACE_ECHILD);
  }
  else if (strcmp(line, "stopping") == 0 ||
           strncmp(line, "handover ", 9) == 0)
    u->child_stopping = true;
}

static void accept_client(grace_upgrader *u) {
  int fd = accept4(u->control_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
  if (fd < 0)
    return;
  for (int i = 0; i < MAX_CLIENTS; i++)
    if (u->clients[i].fd < 0) {
      chan_init(&u->clients[i], fd);
      return;
    }
  (void)send_line(fd, "error too many control connections");
  close(fd);
}

static void on_client(grace_upgrader *u, chan *c) {
  char line[LINE_MAX_LEN];
  for (;;) {
    int r = chan_read(c, line, sizeof(line));
    if (r == 0)
      return;
    if (r < 0) {
      /* The client left; a request of its own still waiting is answered
       * into the void. */
      for (request *w = u->waiters; w != NULL; w = w->next)
        if (w->client == c->fd)
          w->client = -1;
      chan_close(c);
      return;
    }
    if (strcmp(line, "upgrade") == 0) {
      request *rq = calloc(1, sizeof(*rq));
      if (rq == NULL) {
        (void)send_line(c->fd, "error out of memory");
        continue;
      }
      rq->client = c->fd;
      take_request(u, rq);
    } else if (strcmp(line, "pid") == 0) {
      (void)send_line(c->fd, "ok %ld", (long)getpid());
    } else {
      (void)send_line(c->fd, "error unknown command (want \"upgrade\")");
    }
  }
}

/* Handles a plain shutdown: no more upgrades; a successor not ready yet
 * is killed. */
static void do_stop(grace_upgrader *u) {
  /* A rollback in flight is left to finish: it is what will accept once
   * this process is gone. */
  if (u->state == ST_SPAWNED && !u->child_rollback)
    child_failed(u, "was not ready when this process began to shut down",
                 GRACE_ESTATE);
  if (u->state == ST_SERVING || u->state == ST_NEW || u->state == ST_CHECKING)
    u->state = ST_STOPPED;
  if (u->parent.fd >= 0)
    (void)send_line(u->parent.fd, "stopping");
  for (int i = 0; i < MAX_CLIENTS; i++)
    chan_close(&u->clients[i]);
  if (u->control_fd >= 0 &&
      (u->state == ST_STOPPED || u->state == ST_REAPING)) {
    /* Nothing will answer on the path any more. */
    close(u->control_fd);
    u->control_fd = -1;
    if (u->control_path != NULL)
      unlink(u->control_path);
  }
  /* Our copies of the listeners: with no successor to hand them to, they
   * would only keep the sockets open once the servers close theirs, and
   * what the kernel queued there would be reset at exit instead of
   * refused now. */
  if (u->state == ST_STOPPED || u->state == ST_REAPING)
    for (unsigned i = 0; i < u->nfds; i++)
      if (u->fds[i].listener && u->fds[i].fd >= 0) {
        close(u->fds[i].fd);
        u->fds[i].fd = -1;
      }
}

/* ST_CHECKING, on the thread: the program's readiness check, then "ready"
 * (to the predecessor, or the PID file for a first process). */
static void check_ready(grace_upgrader *u) {
  int rv = u->opts.ready_check != NULL
               ? u->opts.ready_check(u, u->opts.ready_data)
               : 0;
  if (rv == GRACE_EBUSY)
    return; /* again CHECK_RETRY_MS later */
  if (rv != 0) {
    ulog(u, "Upgrade: this process is not ready: %s", grace_strerror(rv));
    if (u->parent.fd >= 0)
      (void)send_line(u->parent.fd, "notready %s", grace_strerror(rv));
    u->state = ST_STOPPED; /* it takes no upgrade either */
    return;
  }
  u->state = ST_SERVING;
  if (u->parent.fd >= 0 && send_line(u->parent.fd, "ready") == 0)
    return; /* the predecessor writes the PID file once it hands over */
  on_parent_gone(u);
  if (u->parent_pid == 0 || !u->acked)
    (void)write_pidfile(u, getpid()); /* a first process, or an orphan */
}

static void *run(void *arg) {
  grace_upgrader *u = arg;
  sigset_t all;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, NULL);

  for (;;) {
    struct pollfd pfd[6 + MAX_CLIENTS];
    enum { PF_WAKE, PF_SIG, PF_CONTROL, PF_PARENT, PF_CHILD, PF_PIDFD };
    nfds_t n = 6;
    pthread_mutex_lock(&u->lock);
    bool quit = u->quit_req, stop = u->stop_req;
    request *q = NULL;
    if (!quit) {
      q = u->queue; /* once quitting, grace_upgrader_free answers them */
      u->queue = NULL;
    }
    pthread_mutex_unlock(&u->lock);
    if (quit)
      break; /* grace_upgrader_free finishes, on its own thread */
    /* API requests in the order they came. */
    request *rev = NULL;
    while (q != NULL) {
      request *nx = q->next;
      q->next = rev;
      rev = q;
      q = nx;
    }
    while (rev != NULL) {
      request *nx = rev->next;
      rev->next = NULL;
      take_request(u, rev);
      rev = nx;
    }
    if (u->state == ST_CHECKING && !stop)
      check_ready(u);
    if (stop && !u->stopped) {
      if (u->state != ST_STOPPED && u->state != ST_HANDED)
        do_stop(u);
      pthread_mutex_lock(&u->lock);
      u->stopped = true;
      pthread_cond_broadcast(&u->cond);
      pthread_mutex_unlock(&u->lock);
    }

    pfd[PF_WAKE] = (struct pollfd){.fd = u->wake_fd, .events = POLLIN};
    pfd[PF_SIG] = (struct pollfd){.fd = u->signo > 0 ? sig_pipe[0] : -1,
                                 .events = POLLIN};
    /* A successor shares the control socket with its predecessor, which
     * answers on it until it has handed over: the successor accepts there
     * only once that is done (or the predecessor is gone). */
    bool control = u->parent.fd < 0 || u->acked;
    pfd[PF_CONTROL] = (struct pollfd){.fd = control ? u->control_fd : -1,
                                      .events = POLLIN};
    pfd[PF_PARENT] = (struct pollfd){.fd = u->parent.fd, .events = POLLIN};
    pfd[PF_CHILD] = (struct pollfd){.fd = u->cchan.fd, .events = POLLIN};
    pfd[PF_PIDFD] = (struct pollfd){.fd = u->child_pidfd, .events = POLLIN};
    for (int i = 0; i < MAX_CLIENTS; i++)
      pfd[n++] = (struct pollfd){.fd = u->clients[i].fd, .events = POLLIN};
    int timeout = -1;
    if (u->state == ST_SPAWNED || u->state == ST_REAPING) {
      int64_t left = (u->state == ST_SPAWNED ? u->child_deadline
                                              : u->reap_deadline) -
                     grace_now();
      timeout = left <= 0 ? 0 : (int)((left + GRACE_MILLISECOND - 1) /
                                      GRACE_MILLISECOND);
      if (u->child_pidfd < 0 && timeout > 50)
        timeout = 50; /* no pidfd: look at the child now and then */
    } else if (u->state == ST_CHECKING) {
      timeout = CHECK_RETRY_MS;
    }
    int rv = poll(pfd, n, timeout);
    if (rv < 0 && errno != EINTR)
      break;
    if (rv < 0)
      continue;

    if (pfd[PF_WAKE].revents) {
      uint64_t v;
      ssize_t r = read(u->wake_fd, &v, sizeof(v));
      (void)r;
    }
    if (pfd[PF_SIG].revents) {
      pid_t from;
      while (read(sig_pipe[0], &from, sizeof(from)) == sizeof(from)) {
        request *rq = calloc(1, sizeof(*rq));
        if (rq == NULL)
          continue;
        rq->client = -1;
        rq->from = from != 0 ? from : -1;
        take_request(u, rq);
      }
    }
    if (pfd[PF_CONTROL].revents && u->control_fd >= 0)
      accept_client(u);
    for (int i = 0; i < MAX_CLIENTS; i++)
      if (pfd[6 + i].revents && u->clients[i].fd == pfd[6 + i].fd)
        on_client(u, &u->clients[i]);
    if (pfd[PF_PARENT].revents && u->parent.fd >= 0) {
      char line[LINE_MAX_LEN];
      int r;
      while ((r = chan_read(&u->parent, line, sizeof(line))) > 0)
        on_parent_line(u, line);
      if (r < 0)
        on_parent_gone(u);
    }
    if (pfd[PF_CHILD].revents && u->cchan.fd >= 0) {
      char line[LINE_MAX_LEN];
      int r;
      while (u->cchan.fd >= 0 &&
             (r = chan_read(&u->cchan, line, sizeof(line))) > 0)
        on_child_line(u, line);
      if (u->cchan.fd >= 0 && r < 0) {
        /* Its end of the channel closed: it exits.  Its pidfd says when
         * (then how it ended can be told); without one, reap it now. */
        chan_close(&u->cchan);
        if (u->child_pidfd < 0 && u->child != 0) {
          if (u->state == ST_SPAWNED)
            child_failed(u, NULL, GRACE_ECHILD);
          else if (u->state == ST_HANDED)
            child_gone(u);
        }
      }
    }
    if (pfd[PF_PIDFD].revents && u->child_pidfd >= 0) {
      if (u->state == ST_SPAWNED)
        child_failed(u, NULL, GRACE_ECHILD);
      else if (u->state == ST_HANDED)
        child_gone(u);
    }
    if (u->state == ST_SPAWNED && grace_now() >= u->child_deadline) {
      char why[96];
      snprintf(why, sizeof(why), "was not ready within %.3gs",
               (double)u->opts.ready_timeout / GRACE_SECOND);
      child_failed(u, why, GRACE_ETIMEDOUT);
    }
    if (u->state == ST_REAPING && (pfd[PF_PIDFD].revents ||
                                   grace_now() >= u->reap_deadline ||
                                   u->child_pidfd < 0))
      child_reap(u, grace_now() >= u->reap_deadline);

  }
  return NULL;
}

/* ---- ready ----------------------------------------------------------------------- */

static int bind_control(grace_upgrader *u) {
  struct sockaddr_un sa;
  memset(&sa, 0, sizeof(sa));
  sa.sun_family = AF_UNIX;
  snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", u->control_path);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0)
    return -errno;
  /* A socket file nobody listens on is stale: replace it.  One somebody
   * listens on is another process's.  connect also says ECONNREFUSED for
   * a file that is no socket at all: that one is left alone (bind then
   * fails with EADDRINUSE). */
  int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (probe >= 0) {
    struct stat st;
    if (connect(probe, (struct sockaddr *)&sa, sizeof(sa)) == 0) {
      close(probe);
      close(fd);
      return GRACE_EADDRINUSE;
    }
    if (errno == ECONNREFUSED && lstat(u->control_path, &st) == 0 &&
        S_ISSOCK(st.st_mode))
      unlink(u->control_path);
    close(probe);
  }
  /* A socket file is created with 0777 less the umask: owner only
   * (0700) from the start, then 0600 as documented (connecting needs
   * write permission; x means nothing on a socket).  Not umask(0177):
   * the umask is the whole process's, and a directory another thread
   * made meanwhile would lose its owner's x. */
  mode_t old = umask(0077);
  int rv = bind(fd, (struct sockaddr *)&sa, sizeof(sa));
  umask(old);
  if (rv == 0)
    (void)chmod(u->control_path, 0600);
  if (rv != 0 || listen(fd, 16) != 0) {
    rv = -errno;
    close(fd);
    return rv;
  }
  return fd;
}

int grace_upgrader_ready(grace_upgrader *u) {
  if (u == NULL)
    return GRACE_EINVAL;
  pthread_mutex_lock(&u->lock);
  enum state st = u->state;
  pthread_mutex_unlock(&u->lock);
  if (st != ST_NEW || u->thread_started)
    return GRACE_ESTATE;
  int rv;
  /* Inherited descriptors nobody asked for (a listener removed by the new
   * version) are closed: what waits in their queues is refused by the
   * predecessor's close, as the new version wants. */
  for (unsigned i = 0; i < u->nfds; i++) {
    named_fd *e = &u->fds[i];
    if (e->inherited && !e->claimed && e->fd >= 0 &&
        strcmp(e->name, GRACE_UPGRADE_CONTROL_NAME) != 0) {
      ulog(u, "Upgrade: inherited %s \"%s\" is not used: closed",
           e->listener ? "listener" : "descriptor", e->name);
      close(e->fd);
      e->fd = -1;
    }
  }
  /* The control socket: inherited, or bound now. */
  if (u->control_path != NULL) {
    named_fd *e = find(u, GRACE_UPGRADE_CONTROL_NAME);
    if (e != NULL && e->fd >= 0) {
      e->claimed = true;
      u->control_fd = fcntl(e->fd, F_DUPFD_CLOEXEC, 3);
    } else {
      int fd = bind_control(u);
      if (fd < 0) {
        ulog(u, "Upgrade: control socket %s: %s", u->control_path,
             grace_strerror(fd));
        return fd;
      }
      e = add_fd(u, GRACE_UPGRADE_CONTROL_NAME, fd, true, false);
      if (e == NULL) {
        close(fd);
        return GRACE_ENOMEM;
      }
      e->claimed = true;
      u->control_fd = fcntl(fd, F_DUPFD_CLOEXEC, 3);
    }
    if (u->control_fd < 0)
      return -errno;
    (void)fcntl(u->control_fd, F_SETFL,
                fcntl(u->control_fd, F_GETFL) | O_NONBLOCK);
  } else {
    named_fd *e = find(u, GRACE_UPGRADE_CONTROL_NAME);
    if (e != NULL && e->fd >= 0) {
      close(e->fd);
      e->fd = -1;
    }
  }
  if (u->opts.fdstore && grace_sd_notify_wanted()) {
    for (unsigned i = 0; i < u->nfds; i++) {
      named_fd *e = &u->fds[i];
      /* The control socket stays out: a process systemd starts fresh
       * binds its own. */
      if (e->fd < 0 || !e->listener ||
          strcmp(e->name, GRACE_UPGRADE_CONTROL_NAME) == 0)
        continue;
      char state[128];
      snprintf(state, sizeof(state), "FDSTORE=1\nFDNAME=%s", e->name);
      int sr = grace_sd_notify_with_fds(state, &e->fd, 1);
      if (sr < 0)
        ulog(u, "Upgrade: cannot store listener \"%s\" in systemd: %s",
             e->name, grace_strerror(sr));
    }
  }

  /* The readiness check once here (without one, or when it passes at
   * once, the process is ready when this returns); if it says "not yet",
   * the thread asks again every CHECK_RETRY_MS and says ready later. */
  u->state = ST_CHECKING;
  check_ready(u);
  pthread_mutex_lock(&u->lock);
  rv = pthread_create(&u->thread, NULL, run, u);
  if (rv == 0)
    u->thread_started = true;
  pthread_mutex_unlock(&u->lock);
  return -rv;
}

/* ---- requests from other threads -------------------------------------------------- */

int grace_upgrader_upgrade(grace_upgrader *u, char *msg, size_t len) {
  if (msg != NULL && len > 0)
    msg[0] = '\0';
  if (u == NULL)
    return GRACE_EINVAL;
  request r;
  memset(&r, 0, sizeof(r));
  r.client = -1;
  r.api = true;
  pthread_mutex_lock(&u->lock);
  if (!u->thread_started || u->quit_req) {
    pthread_mutex_unlock(&u->lock);
    set_msg(msg, len, "pid %ld is not ready yet", (long)getpid());
    return GRACE_ESTATE;
  }
  r.next = u->queue;
  u->queue = &r;
  pthread_mutex_unlock(&u->lock);
  wake(u);
  pthread_mutex_lock(&u->lock);
  while (!r.done)
    pthread_cond_wait(&u->cond, &u->lock);
  pthread_mutex_unlock(&u->lock);
  set_msg(msg, len, "%s", r.msg);
  return r.result;
}

/* Asks the thread for a plain stop (the group's shutdown began). */
void grace_upgrader_stop(grace_upgrader *u) {
  if (u == NULL)
    return;
  pthread_mutex_lock(&u->lock);
  u->stop_req = true;
  if (!u->thread_started) {
    pthread_mutex_unlock(&u->lock);
    /* No thread (not ready yet): nothing runs beside us. */
    if (u->state != ST_STOPPED && u->state != ST_HANDED)
      do_stop(u);
    return;
  }
  pthread_mutex_unlock(&u->lock);
  wake(u);
  pthread_mutex_lock(&u->lock);
  while (!u->stopped && !u->quit_req)
    pthread_cond_wait(&u->cond, &u->lock);
  pthread_mutex_unlock(&u->lock);
}

void grace_upgrader_free(grace_upgrader *u) {
  if (u == NULL)
    return;
  pthread_mutex_lock(&u->lock);
  u->stop_req = true;
  u->quit_req = true;
  pthread_mutex_unlock(&u->lock);
  pthread_mutex_lock(&u->lock);
  bool started = u->thread_started;
  request *q = u->queue;
  u->queue = NULL;
  pthread_mutex_unlock(&u->lock);
  if (started) {
    wake(u);
    pthread_join(u->thread, NULL);
  }
  /* API requests the thread never took (they were posted as it quit). */
  while (q != NULL) {
    request *next = q->next;
    answer(u, q, GRACE_ESTATE, "shutting down");
    q = next;
  }
  /* The thread is gone: finish here what a plain stop does (a successor
   * not ready yet is told to stop; the predecessor hears that this exit
   * is no crash). */
  if (u->state != ST_HANDED && u->state != ST_STOPPED)
    do_stop(u);
  else if (u->state == ST_STOPPED && u->parent.fd >= 0)
    (void)send_line(u->parent.fd, "stopping");
  /* A failed successor told to stop is waited for (it drains what it
   * accepted; SIGKILL at its deadline), so that this process leaves no
   * child behind. */
  while (u->state == ST_REAPING) {
    child_reap(u, grace_now() >= u->reap_deadline);
    if (u->state == ST_REAPING) {
      struct timespec ts = {0, 5 * 1000 * 1000};
      nanosleep(&ts, NULL);
    }
  }
  /* Requests nobody will answer now. */
  answer_waiters(u, GRACE_ESTATE, "shutting down");
  if (u->signo > 0)
    sigaction(u->signo, &u->old_action, NULL);
  if (u->pidfile != NULL && u->state != ST_HANDED &&
      read_pidfile(u) == getpid())
    unlink(u->pidfile);
  if (u->control_fd >= 0)
    close(u->control_fd);
  the_upgrader = NULL;
  free_upgrader(u);
}

/* ---- the group part ---------------------------------------------------------------- */

static int part_start(grace_group_part *part, void *data) {
  grace_upgrader *u = data;
  u->part = part;
  return grace_upgrader_ready(u);
}

/* Asks the thread for a plain stop and returns without waiting. */
static void request_stop(grace_upgrader *u) {
  pthread_mutex_lock(&u->lock);
  u->stop_req = true;
  bool started = u->thread_started;
  pthread_mutex_unlock(&u->lock);
  if (started)
    wake(u);
}

/* Phase 1 of a shutdown (a hand-over skips it): stop upgrading from now
 * on.  Phase 1 must be prompt, so this only asks; begin waits for it. */
static void part_not_ready(grace_group_part *part, void *data) {
  (void)part;
  request_stop(data);
}

/* Phase 3, before the servers begin (begin_first): the upgrader's copies
 * of the listeners are closed by the time the servers close theirs. */
static int part_begin(grace_group_part *part, grace_ctx *deadline, void *data) {
  (void)deadline;
  grace_upgrader_stop(data);
  grace_group_part_done(part, 0);
  return 0;
}

static int part_force(grace_group_part *part, char *what, size_t len,
                      void *data) {
  (void)part;
  (void)what;
  (void)len;
  grace_upgrader_stop(data);
  return 0;
}

int grace_group_add_upgrader(grace_group *g, const char *name,
                             grace_upgrader *u) {
  static const grace_group_part_ops ops = {
      .start = part_start,
      .not_ready = part_not_ready,
      .begin = part_begin,
      .force = part_force,
  };
  if (g == NULL || u == NULL)
    return GRACE_EINVAL;
  if (u->group != NULL)
    return GRACE_EBUSY;
  int rv = grace_group_add(g, name, &ops, u, &u->part);
  if (rv == 0) {
    u->group = g;
    grace__part_begin_first(u->part);
    /* A successor serves the inherited listeners while its group starts,
     * beside its ready predecessor: /readyz must not say "not ready"
     * then (a load balancer would take the endpoint out). */
    if (grace_upgrader_is_successor(u))
      grace__group_ready_at_start(g);
  }
  return rv;
}
