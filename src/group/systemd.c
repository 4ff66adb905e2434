/*
 * systemd's notification and socket-activation protocols, written from
 * their documentation (sd_notify(3), sd_listen_fds(3)), without libsystemd.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "grace/systemd.h"
#include "group/systemd_int.h"

int grace__sd_address(const char *text, struct sockaddr_un *sa,
                      socklen_t *len) {
  size_t n = strlen(text);
  if (n == 0)
    return GRACE_EINVAL;
  if (text[0] != '/' && text[0] != '@')
    return -EAFNOSUPPORT;
  memset(sa, 0, sizeof(*sa));
  sa->sun_family = AF_UNIX;
  if (text[0] == '/') {
    /* A path keeps its terminating NUL inside sun_path. */
    if (n >= sizeof(sa->sun_path))
      return GRACE_EINVAL;
    memcpy(sa->sun_path, text, n + 1);
    *len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + 1);
  } else {
    /* An abstract name: a leading NUL, then exactly the name's bytes. */
    if (n < 2 || n > sizeof(sa->sun_path))
      return GRACE_EINVAL;
    sa->sun_path[0] = '\0';
    memcpy(sa->sun_path + 1, text + 1, n - 1);
    *len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n);
  }
  return 0;
}

bool grace_sd_notify_wanted(void) {
  const char *e = getenv("NOTIFY_SOCKET");
  return e != NULL && e[0] != '\0';
}

int grace_sd_notify(const char *state) {
  return grace_sd_notify_with_fds(state, NULL, 0);
}

int grace_sd_notify_with_fds(const char *state, const int *fds, size_t n) {
  struct sockaddr_un sa;
  socklen_t salen;
  ssize_t sent;
  int rv;

  if (state == NULL || state[0] == '\0' || (n > 0 && fds == NULL) ||
      n > GRACE_SD_NOTIFY_MAX_FDS)
    return GRACE_EINVAL;
  const char *e = getenv("NOTIFY_SOCKET");
  if (e == NULL || e[0] == '\0')
    return 0;
  rv = grace__sd_address(e, &sa, &salen);
  if (rv != 0)
    return rv;
  int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0)
    return -errno;
  /* sendmsg does not write through iov_base; the cast only drops const. */
  struct iovec iov = {.iov_base = (void *)(uintptr_t)state,
                      .iov_len = strlen(state)};
  struct msghdr msg = {.msg_name = &sa,
                       .msg_namelen = salen,
                       .msg_iov = &iov,
                       .msg_iovlen = 1};
  /* Room for the largest list of descriptors, aligned for cmsghdr. */
  union {
    char buf[CMSG_SPACE(sizeof(int) * GRACE_SD_NOTIFY_MAX_FDS)];
    struct cmsghdr align;
  } control;
  if (n > 0) {
    memset(&control, 0, sizeof(control));
    msg.msg_control = control.buf;
    msg.msg_controllen = CMSG_SPACE(sizeof(int) * n);
    struct cmsghdr *cm = CMSG_FIRSTHDR(&msg);
    cm->cmsg_level = SOL_SOCKET;
    cm->cmsg_type = SCM_RIGHTS;
    cm->cmsg_len = CMSG_LEN(sizeof(int) * n);
    memcpy(CMSG_DATA(cm), fds, sizeof(int) * n);
  }
  do
    sent = sendmsg(fd, &msg, MSG_NOSIGNAL);
  while (sent < 0 && errno == EINTR);
  rv = sent < 0 ? -errno : 1;
  close(fd);
  return rv;
}

int grace_sd_notifyf(const char *fmt, ...) {
  char buf[4096];
  va_list ap;
  if (fmt == NULL)
    return GRACE_EINVAL;
  va_start(ap, fmt);
  int n = vsnprintf(buf, sizeof(buf), fmt, ap);
  va_end(ap);
  if (n < 0 || (size_t)n >= sizeof(buf))
    return GRACE_EINVAL;
  return grace_sd_notify(buf);
}

int grace__sd_parse_uint(const char *text, uint64_t max, uint64_t *out) {
  uint64_t v = 0;
  if (text == NULL || text[0] == '\0')
    return GRACE_EINVAL;
  for (const char *p = text; *p != '\0'; p++) {
    if (*p < '0' || *p > '9')
      return GRACE_EINVAL;
    unsigned d = (unsigned)(*p - '0');
    if (v > (UINT64_MAX - d) / 10)
      return GRACE_ERANGE;
    v = v * 10 + d;
  }
  if (v > max)
    return GRACE_ERANGE;
  *out = v;
  return 0;
}

/* Copies LISTEN_FDNAMES (or n times "unknown") into one allocation: the
 * n + 1 pointers, then the strings. */
static int copy_names(const char *e, unsigned n, char ***names) {
  static const char unknown[] = "unknown";
  size_t textlen;

  if (e != NULL) {
    unsigned count = 1;
    for (const char *p = e; *p != '\0'; p++)
      count += *p == ':';
    if (count != n)
      return GRACE_EINVAL;
    textlen = strlen(e) + 1;
  } else {
    textlen = (size_t)n * sizeof(unknown);
  }
  char **v = malloc(((size_t)n + 1) * sizeof(char *) + textlen);
  if (v == NULL)
    return GRACE_ENOMEM;
  char *text = (char *)(v + n + 1);
  if (e != NULL) {
    memcpy(text, e, textlen);
    for (unsigned i = 0; i < n; i++) {
      v[i] = text;
      text = strchr(text, ':');
      if (text != NULL)
        *text++ = '\0';
    }
  } else {
    for (unsigned i = 0; i < n; i++) {
      memcpy(text, unknown, sizeof(unknown));
      v[i] = text;
      text += sizeof(unknown);
    }
  }
  v[n] = NULL;
  *names = v;
  return 0;
}

static int listen_fds(bool unset_environment, char ***names) {
  uint64_t pid, n = 0;
  int rv;
  const char *e = getenv("LISTEN_PID");

  if (e == NULL) {
    rv = 0;
    goto finish;
  }
  rv = grace__sd_parse_uint(e, INT_MAX, &pid);
  if (rv != 0 || pid == 0) {
    rv = GRACE_EINVAL;
    goto finish;
  }
  /* The variables were meant for another process (a parent that forked
   * us, or the process we were exec'd from). */
  if ((pid_t)pid != getpid()) {
    rv = 0;
    goto finish;
  }
  e = getenv("LISTEN_FDS");
  if (e == NULL) {
    rv = 0;
    goto finish;
  }
  rv = grace__sd_parse_uint(e, (uint64_t)INT_MAX - GRACE_SD_LISTEN_FDS_START,
                            &n);
  if (rv != 0)
    goto finish;
  for (int fd = GRACE_SD_LISTEN_FDS_START;
       fd < GRACE_SD_LISTEN_FDS_START + (int)n; fd++) {
    int flags = fcntl(fd, F_GETFD);
    if (flags < 0 || fcntl(fd, F_SETFD, flags | FD_CLOEXEC) < 0) {
      rv = -errno;
      goto finish;
    }
  }
  if (names != NULL) {
    if (n == 0) {
      *names = NULL;
    } else {
      /* Copied before the variable is removed below. */
      rv = copy_names(getenv("LISTEN_FDNAMES"), (unsigned)n, names);
      if (rv != 0)
        goto finish;
    }
  }
  rv = (int)n;

finish:
  if (unset_environment) {
    unsetenv("LISTEN_PID");
    unsetenv("LISTEN_FDS");
    unsetenv("LISTEN_FDNAMES");
  }
  return rv;
}

int grace_sd_listen_fds(bool unset_environment) {
  return listen_fds(unset_environment, NULL);
}

int grace_sd_listen_fds_with_names(bool unset_environment, char ***names) {
  if (names == NULL)
    return GRACE_EINVAL;
  int rv = listen_fds(unset_environment, names);
  if (rv == 0)
    *names = NULL;
  return rv;
}

void grace_sd_listen_names_free(char **names) { free(names); }
