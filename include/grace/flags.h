/*
 * grace: command-line flags parsed like Go's flag package.
 *
 * Flags are written "-name value", "-name=value", "--name value" or
 * "--name=value"; a boolean flag takes no value unless written
 * "-name=false".  Parsing stops at "--" (which is consumed), at "-" or at
 * the first argument that does not start with '-'.  Errors use Go's texts,
 * values quoted as Go's %q quotes them:
 *
 *   flag provided but not defined: -x
 *   invalid value "abc" for flag -interval: parse error
 *   invalid value "99999999999999999999" for flag -n: value out of range
 *   invalid boolean value "maybe" for -v: parse error
 *   flag needs an argument: -addr
 *   bad flag syntax: ---x
 *
 * Values are parsed as Go parses them: durations by time.ParseDuration,
 * integers by strconv.ParseInt(s, 0, 64) (0x, 0o, 0b and 0 prefixes, '_'
 * separators between digits), booleans by strconv.ParseBool ("1", "t",
 * "true", "TRUE", "True", "0", "f", "false"...).  The usage text is Go's
 * PrintDefaults layout, byte for byte, so programs behave like their Go
 * twins.
 *
 * Values are written through the pointers given at registration, which
 * also hold the defaults; a registered string pointer is set to point into
 * argv (borrowed for the life of the process), never to a copy.  A flag
 * set is not thread-safe; use it from one thread, typically main's.
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
 * used in "Usage of <prog>:"; NULL or "" gives "program").  |prog| is
 * copied.  Returns NULL if out of memory.
 */
GRACE_EXTERN grace_flags *grace_flags_new(const char *prog);

/* Frees the set; the variables keep their values.  NULL-safe. */
GRACE_EXTERN void grace_flags_free(grace_flags *f);

/*
 * Registers a flag.  |name| and |usage| are borrowed: they must outlive
 * the set (string literals do).  The variable's current value is the
 * default shown in the usage (copied at registration).  A word of |usage|
 * in back quotes names the value in the usage text, as in Go:
 * "listen `address`" prints "-addr address" instead of "-addr string".
 * Each returns 0 or one of:
 *
 * GRACE_EINVAL  a NULL argument, an empty name, a name starting with '-'
 *               or containing '='
 * GRACE_EBUSY   the name is registered already (Go panics: "flag
 *               redefined")
 * GRACE_ENOMEM  out of memory
 */
GRACE_EXTERN int grace_flags_string(grace_flags *f, const char *name,
                                    const char **value, const char *usage);
GRACE_EXTERN int grace_flags_duration(grace_flags *f, const char *name,
                                      grace_duration *value, const char *usage);
GRACE_EXTERN int grace_flags_int(grace_flags *f, const char *name,
                                 int64_t *value, const char *usage);
GRACE_EXTERN int grace_flags_bool(grace_flags *f, const char *name, bool *value,
                                  const char *usage);

/*
 * Parses argv[1..argc-1] (argv[0], the program, is skipped).  On success
 * returns the index in argv of the first argument that is not a flag (argc
 * if none), so the positional arguments are argv[rv..argc-1].  Flags are
 * set in order; the first error stops the parse, leaving that flag's
 * variable untouched.  Prints nothing.  On error returns one of:
 *
 * GRACE_ESYNTAX  a bad flag or value: Go's message is written into |err|
 *                (NUL terminated, truncated to |errlen|; |err| may be
 *                NULL) and kept, whole, for grace_flags_error
 * GRACE_ENOENT   "-h", "-help", "--h" or "--help" was given and no flag of
 *                that name is registered (Go's flag.ErrHelp)
 * GRACE_EINVAL   |f| is NULL, |argc| < 0 or |argv| is NULL
 */
GRACE_EXTERN int grace_flags_parse(grace_flags *f, int argc, char **argv,
                                   char *err, size_t errlen);

/*
 * Returns the message of the last failed grace_flags_parse, untruncated,
 * or NULL if the last parse succeeded (or none ran).  Owned by |f|: valid
 * until the next parse or grace_flags_free.
 */
GRACE_EXTERN const char *grace_flags_error(const grace_flags *f);

/*
 * Writes "Usage of <prog>:" and one entry per flag, sorted by name, in
 * Go's PrintDefaults format:
 *
 *   -interval duration
 *     \ttime between two syncs (default 1s)
 *   -v\tverbose
 *
 * (two spaces before '-', four spaces and a tab before the usage; a
 * one-letter boolean keeps its usage on the same line; the default is
 * shown unless it is the type's zero value, quoted for strings).
 */
GRACE_EXTERN void grace_flags_usage(const grace_flags *f, FILE *out);

/*
 * grace_flags_parse with Go's ExitOnError behaviour: on an error prints the
 * message and the usage to standard error (one write) and exits with
 * status 2; on -h prints the usage and exits 0.  Returns the index of the
 * first non-flag argument.  Every path that exits frees |f| first; on
 * success |f| is still the caller's to free.
 */
GRACE_EXTERN int grace_flags_parse_or_exit(grace_flags *f, int argc,
                                           char **argv);

#ifdef __cplusplus
}
#endif

#endif /* GRACE_FLAGS_H */
