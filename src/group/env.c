/*
 * The overall shutdown deadline from the environment, fitted under the
 * grace period after which Kubernetes (terminationGracePeriodSeconds) or
 * systemd (TimeoutStopSec=) kills the process.
 */
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "grace/group.h"
#include "grace/log.h"
#include "group/systemd_int.h"

#define TIMEOUT_VAR "GRACE_SHUTDOWN_TIMEOUT"
#define PERIOD_VAR "TERMINATION_GRACE_PERIOD_SECONDS"

grace_duration grace_group_timeout_for_grace_period(grace_duration period) {
  if (period <= 0)
    return 0;
  grace_duration margin = period / 10;
  if (margin < GRACE_SECOND)
    margin = GRACE_SECOND;
  if (margin > 5 * GRACE_SECOND)
    margin = 5 * GRACE_SECOND;
  grace_duration d = period - margin;
  if (d < period / 2)
    d = period / 2;
  return d;
}

static void set_err(char *err, size_t errlen, const char *fmt, ...)
    GRACE_PRINTF(3, 4);
static void set_err(char *err, size_t errlen, const char *fmt, ...) {
  va_list ap;
  if (err == NULL || errlen == 0)
    return;
  va_start(ap, fmt);
  vsnprintf(err, errlen, fmt, ap);
  va_end(ap);
}

int grace_group_env_timeout(grace_duration *out, char *err, size_t errlen) {
  char perr[256];
  grace_duration d;
  uint64_t secs;
  int rv;

  if (err != NULL && errlen > 0)
    err[0] = '\0';
  if (out == NULL)
    return GRACE_EINVAL;
  const char *e = getenv(TIMEOUT_VAR);
  if (e != NULL && e[0] != '\0') {
    rv = grace_duration_parse(e, &d, perr, sizeof(perr));
    if (rv != 0) {
      set_err(err, errlen, "%s: %s", TIMEOUT_VAR, perr);
      return rv == GRACE_ERANGE ? GRACE_ERANGE : GRACE_ESYNTAX;
    }
    if (d <= 0) {
      set_err(err, errlen, "%s: %s is not a positive duration", TIMEOUT_VAR,
              e);
      return GRACE_ERANGE;
    }
    *out = d;
    return 0;
  }
  e = getenv(PERIOD_VAR);
  if (e != NULL && e[0] != '\0') {
    /* Kubernetes' field is an int64 count of seconds; more than fits in
     * nanoseconds is refused rather than wrapped. */
    rv = grace__sd_parse_uint(e, (uint64_t)(INT64_MAX / GRACE_SECOND), &secs);
    if (rv != 0) {
      set_err(err, errlen, "%s: invalid value \"%s\": %s", PERIOD_VAR, e,
              rv == GRACE_ERANGE ? "too large"
                                 : "want a whole number of seconds");
      return rv == GRACE_ERANGE ? GRACE_ERANGE : GRACE_ESYNTAX;
    }
    *out = grace_group_timeout_for_grace_period((grace_duration)secs *
                                                GRACE_SECOND);
    return 0;
  }
  return GRACE_ENOENT;
}
