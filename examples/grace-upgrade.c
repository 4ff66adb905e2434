/*
 * grace-upgrade: asks a running grace program for a zero-downtime upgrade
 * over its control socket (the program's -upgrade-socket) and waits for
 * the outcome.
 *
 *   grace-upgrade -socket /run/app/control.sock [-timeout 60s]
 *
 * Prints "upgraded: pid <new pid> serves" and exits 0 once the new process
 * is ready (the old one then drains on its own); prints the reason and
 * exits 1 when the upgrade was refused or failed (the old process goes on
 * serving), or when no answer came within -timeout; exits 2 for a bad
 * flag.  As an ExecReload= of a systemd unit, it makes `systemctl reload`
 * report a failed upgrade.
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "grace/context.h"
#include "grace/duration.h"
#include "grace/flags.h"

int main(int argc, char **argv) {
  const char *path = NULL;
  grace_duration timeout = 60 * GRACE_SECOND;

  grace_flags *flags = grace_flags_new(argv[0]);
  if (flags == NULL) {
    fprintf(stderr, "grace-upgrade: out of memory\n");
    return 1;
  }
  grace_flags_string(flags, "socket", &path,
                     "the program's control socket (its -upgrade-socket)");
  grace_flags_duration(flags, "timeout", &timeout,
                       "how long to wait for the outcome (the program's "
                       "own -upgrade-timeout kills a new process that is "
                       "not ready before that)");
  grace_flags_parse_or_exit(flags, argc, argv);
  grace_flags_free(flags);
  if (path == NULL || path[0] == '\0' || timeout <= 0) {
    fprintf(stderr, "grace-upgrade: -socket is required and -timeout must "
                    "be positive\n");
    return 2;
  }

  struct sockaddr_un sa;
  memset(&sa, 0, sizeof(sa));
  sa.sun_family = AF_UNIX;
  if (strlen(path) >= sizeof(sa.sun_path)) {
    fprintf(stderr, "grace-upgrade: socket path too long: %s\n", path);
    return 2;
  }
  memcpy(sa.sun_path, path, strlen(path) + 1);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
    fprintf(stderr, "grace-upgrade: cannot connect to %s: %s\n", path,
            strerror(errno));
    return 1;
  }
  static const char req[] = "upgrade\n";
  if (send(fd, req, sizeof(req) - 1, MSG_NOSIGNAL) != (ssize_t)sizeof(req) - 1) {
    fprintf(stderr, "grace-upgrade: cannot send to %s: %s\n", path,
            strerror(errno));
    close(fd);
    return 1;
  }

  char line[512];
  size_t len = 0;
  int64_t until = grace_now() + timeout;
  for (;;) {
    char *nl = memchr(line, '\n', len);
    if (nl != NULL) {
      *nl = '\0';
      break;
    }
    int64_t left = until - grace_now();
    if (left <= 0) {
      fprintf(stderr, "grace-upgrade: no answer within the timeout\n");
      close(fd);
      return 1;
    }
    struct pollfd p = {.fd = fd, .events = POLLIN};
    int ms = (int)((left + GRACE_MILLISECOND - 1) / GRACE_MILLISECOND);
    if (poll(&p, 1, ms) < 0 && errno != EINTR)
      break;
    if (len == sizeof(line) - 1) {
      fprintf(stderr, "grace-upgrade: answer too long\n");
      close(fd);
      return 1;
    }
    ssize_t r = recv(fd, line + len, sizeof(line) - 1 - len, MSG_DONTWAIT);
    if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR)) {
      fprintf(stderr, "grace-upgrade: the program closed the connection "
                      "without an answer\n");
      close(fd);
      return 1;
    }
    if (r > 0)
      len += (size_t)r;
  }
  close(fd);
  line[len < sizeof(line) ? len : sizeof(line) - 1] = '\0';
  if (strncmp(line, "ok ", 3) == 0) {
    printf("upgraded: pid %s serves\n", line + 3);
    return 0;
  }
  fprintf(stderr, "grace-upgrade: upgrade failed: %s\n",
          strncmp(line, "error ", 6) == 0 ? line + 6 : line);
  return 1;
}
