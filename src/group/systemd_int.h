/*
 * Internals of the systemd protocols (systemd.c), shared with the tests.
 */
#ifndef GRACE_GROUP_SYSTEMD_INT_H
#define GRACE_GROUP_SYSTEMD_INT_H

#include <stdint.h>
#include <sys/socket.h>
#include <sys/un.h>

/*
 * Turns a NOTIFY_SOCKET value into a socket address: "/path" is a path
 * (its terminating NUL counted in |*len|), "@name" an abstract name (the
 * '@' becomes a NUL byte, nothing after the name is counted).  Returns 0,
 * GRACE_EINVAL (empty, or too long for sun_path) or -EAFNOSUPPORT (any
 * other form).
 */
int grace__sd_address(const char *text, struct sockaddr_un *sa,
                      socklen_t *len);

/*
 * Parses a decimal number made of digits only (no sign, no space) that is
 * at most |max|.  Returns 0 and stores it, GRACE_EINVAL if it is not such a
 * number, GRACE_ERANGE if it is above |max|.
 */
int grace__sd_parse_uint(const char *text, uint64_t max, uint64_t *out);

#endif /* GRACE_GROUP_SYSTEMD_INT_H */
