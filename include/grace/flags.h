/*
 * grace: command-line flags parsed like Go's flag package.
 *
 * Flags are "-name value", "-name=value", "--name" forms; a boolean flag
 * takes no value unless written "-name=false".  Parsing stops at "--" or
 * at the first argument that is not a flag.  Errors use Go's texts
 * ("flag provided but not defined: -x", `invalid value "abc" for flag
 * -interval: parse error`, "flag needs an argument: -addr"), and the usage
 * text is Go's PrintDefaults layout, so programs behave like their Go
 * twins.
 *
 * Values are written through the pointers given at registration, which
 * also hold the defaults; a registered string pointer is set to point into
 * argv (borrowed for the life of the process), never to a copy.
 */
#ifndef GRACE_FLAGS_H
#define GRACE_FLAGS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "grace/duration.h"
#include "grace/error.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct grace_flags grace_flags;

/*
 * Creates an empty flag set for program |prog| (argv[0]; its base name is
 * used in "Usage of <prog>:").  |prog| is copied.  Returns NULL if out of
 * memory.
 */
GRACE_EXTERN grace_flags *grace_flags_new(const char *prog);

/* Frees the set; the variables keep their values.  NULL-safe. */
GRACE_EXTERN void grace_flags_free(grace_flags *f);

/*
 * Registers a flag.  |name| and |usage| are borrowed: they must outlive
 * the set (string literals do).  The variable's current value is the
 * default shown in the usage.  Each returns 0, GRACE_EINVAL (NULL
 * argument, empty name, name starting with '-' or containing '='),
 * GRACE_EBUSY (name registered twice) or GRACE_ENOMEM.
 */
GRACE_EXTERN int grace_flags_string(grace_flags *f, const char *name,
                                    const char **value, const char *usage);
GRACE_EXTERN int grace_flags_duration(grace_flags *f, const char *name,
                                      grace_duration *value,
                                      const char *usage);
GRACE_EXTERN int grace_flags_int(grace_flags *f, const char *name,
                                 int64_t *value, const char *usage);
GRACE_EXTERN int grace_flags_bool(grace_flags *f, const char *name,
                                  bool *value, const char *usage);

/*
 * Parses argv[1..argc-1].  On success returns the index in argv of the
 * first argument that is not a flag (argc if none).  On error writes Go's
 * message into |err| (NUL terminated, truncated to |errlen|; may be NULL)
 * and returns GRACE_ESYNTAX; for "-h" or "-help" (when no such flag is
 * registered) it returns GRACE_ENOENT.
 */
GRACE_EXTERN int grace_flags_parse(grace_flags *f, int argc, char **argv,
                                   char *err, size_t errlen);

/* Writes "Usage of <prog>:" and one entry per flag, sorted by name. */
GRACE_EXTERN void grace_flags_usage(const grace_flags *f, FILE *out);

/*
 * grace_flags_parse with Go's ExitOnError behaviour: on an error prints the
 * message and the usage to standard error and exits with status 2; on -h
 * prints the usage and exits 0.  Returns the index of the first non-flag
 * argument.  Every path that exits frees |f| first.
 */
GRACE_EXTERN int grace_flags_parse_or_exit(grace_flags *f, int argc,
                                           char **argv);

#ifdef __cplusplus
}
#endif

#endif /* GRACE_FLAGS_H */
