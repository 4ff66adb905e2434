/*
 * HTTP/1.1 message body framing, sans-I/O and strict (RFC 9112 sections 6
 * and 7): a Content-Length body, or chunked transfer coding with bounded
 * chunk extensions and trailer section.  llhttp reads the head; this reads
 * what follows it, so every framing decision that request smuggling
 * exploits is made here, and made the way nginx and Go make it:
 *
 *  - a chunk-size is 1 to 16 hex digits, its value below 2^63;
 *  - every line ends in CRLF (a bare LF or CR is an error);
 *  - chunk data is followed by exactly CRLF (anything else is an error,
 *    never the start of the next request);
 *  - a chunk extension is at most GRACE__H1_MAX_CHUNK_EXT bytes, the
 *    trailer section at most the caller's limit, in both bytes and fields;
 *    trailer fields are checked for syntax and dropped.
 */
#ifndef GRACE_HTTP_H1_BODY_H
#define GRACE_HTTP_H1_BODY_H

#include <stddef.h>
#include <stdint.h>

/* Longest chunk extension accepted on one chunk line (Go's chunked reader
 * refuses chunk lines over 4 KiB). */
#define GRACE__H1_MAX_CHUNK_EXT 4096

/* Most trailer fields accepted. */
#define GRACE__H1_MAX_TRAILER_FIELDS 100

typedef struct grace__h1_body {
  uint8_t chunked;
  uint8_t state;
  uint8_t done;
  uint8_t digits;
  uint8_t in_value;   /* a trailer line's colon was seen */
  uint64_t remaining; /* of the body (length) or of the chunk (chunked) */
  size_t line;        /* bytes of the current chunk extension or trailer */
  size_t trailer;     /* bytes of the trailer section */
  size_t max_trailer;
  unsigned fields;
} grace__h1_body;

/* Results of grace__h1_body_next besides 0. */
#define GRACE__H1_BODY_DONE 1
#define GRACE__H1_BODY_EBAD (-1) /* malformed framing: 400 */
#define GRACE__H1_BODY_EBIG (-2) /* extension or trailer too large: 431 */

/* Starts a body of |length| bytes, or a chunked one when |chunked|, with
 * a trailer section of at most |max_trailer| bytes. */
void grace__h1_body_init(grace__h1_body *b, int chunked, uint64_t length,
                         size_t max_trailer);

/*
 * Reads framing from |p|/|n| until it finds body bytes, the end, or the
 * end of the input.  Stores in |*used| how many input bytes it consumed
 * and in |*data|/|*len| the body bytes found (a part of |p|, |*len| 0 when
 * none; they are among the consumed bytes).  Returns 0 (call again with
 * the rest, or with more input), GRACE__H1_BODY_DONE (the body ended:
 * |*used| is where the next message starts), or a negative error; after
 * an error the connection cannot be read further.
 */
int grace__h1_body_next(grace__h1_body *b, const uint8_t *p, size_t n,
                        size_t *used, const uint8_t **data, size_t *len);

#endif /* GRACE_HTTP_H1_BODY_H */
