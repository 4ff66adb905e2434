/*
 * grace internal: the gRPC wire format over HTTP/2, without sockets.
 *
 * Everything here takes bytes and returns bytes or events, so the gRPC
 * server and client can be built on any HTTP/2 stream and every piece can
 * be tested and fuzzed alone.  The reference is doc/PROTOCOL-HTTP2.md of
 * grpc/grpc; where the document leaves a choice open, grace does what
 * grpc-go does (internal/transport/http_util.go, internal/grpcutil,
 * rpc_util.go), and says so at the declaration.
 *
 * Pieces:
 *   - grpc-message percent-encoding (Status-Message in "Responses");
 *   - grpc-timeout encoding and decoding ("Requests", Timeout);
 *   - the 5-byte Length-Prefixed-Message prefix, and a streaming reader of
 *     length-prefixed messages with a size limit;
 *   - the content-type check and the payload-format check.
 *
 * Unless a comment says otherwise, a function is pure and thread-safe; a
 * grace__grpc_reader belongs to one thread at a time (its stream's loop).
 */
#ifndef GRACE_GRPC_WIRE_H
#define GRACE_GRPC_WIRE_H

#include <stddef.h>
#include <stdint.h>

#include "grace/duration.h"
#include "grace/error.h"
#include "grace/grpc_status.h"

/* ---- grpc-message --------------------------------------------------- */

/*
 * Percent-encodes the |srclen| bytes at |src| for a grpc-message trailer,
 * exactly as grpc-go's encodeGrpcMessage: bytes 0x20..0x7E other than '%'
 * are kept, every other byte becomes "%XX" with upper-case hex, and each
 * byte that is not part of valid UTF-8 (as Go's utf8.DecodeRune judges it:
 * no overlongs, no surrogates, nothing above U+10FFFF) is first replaced by
 * U+FFFD, giving "%EF%BF%BD".
 *
 * Writes at most |dstlen| bytes to |dst| (no NUL is added; |dst| may be
 * NULL when |dstlen| is 0) and returns the length of the whole encoding,
 * like snprintf: the output is complete only if the return value is <=
 * |dstlen|.  Call it once with |dstlen| 0 to size the buffer.  The result
 * is at most 9 * |srclen|; a |srclen| above SIZE_MAX / 9 is not supported.
 */
size_t grace__grpc_message_encode(char *dst, size_t dstlen, const char *src,
                                  size_t srclen);

/*
 * Decodes a grpc-message value, exactly as grpc-go's decodeGrpcMessage:
 * "%" followed by two hex digits (either case) becomes that byte; a "%"
 * without two hex digits after it is kept as it is, so a broken value is
 * never an error (doc/PROTOCOL-HTTP2.md: "implementations MUST NOT error").
 *
 * |dst| needs room for |srclen| bytes, as decoding never lengthens; it may
 * be the same pointer as |src| to decode in place.  No NUL is added.
 * Returns the decoded length.
 */
size_t grace__grpc_message_decode(char *dst, const char *src, size_t srclen);

/* ---- grpc-timeout --------------------------------------------------- */

/* Room for any encoded timeout: 8 digits, the unit, the NUL. */
#define GRACE__GRPC_TIMEOUT_BUFLEN 10

/*
 * Encodes |d| as a grpc-timeout value the way grpc-go's
 * grpcutil.EncodeDuration does: the largest unit (H M S m u n) that
 * divides |d| exactly, moving to coarser units, rounding up, until the
 * value has at most 8 digits; a |d| <= 0 encodes as "0S".  Examples:
 * 1s "1S", 1500ms "1500m", 100000001ns "100001u", the largest duration
 * "2562048H".
 *
 * Writes the NUL-terminated value into |buf| and returns its length
 * (2..9).
 */
size_t grace__grpc_timeout_encode(grace_duration d,
                                  char buf[GRACE__GRPC_TIMEOUT_BUFLEN]);

/*
 * Decodes a grpc-timeout value: 1 to 8 ASCII digits, then exactly one unit,
 * H (hour), M (minute), S (second), m (millisecond), u (microsecond) or
 * n (nanosecond) (doc/PROTOCOL-HTTP2.md, TimeoutValue and TimeoutUnit).
 * Like grpc-go's decodeTimeout, a value in hours beyond the int64 range is
 * clamped to INT64_MAX nanoseconds, and "0S" is valid (a deadline that has
 * already passed).  |s| is |len| bytes and need not be NUL terminated.
 *
 * On success stores the duration in |*out| and returns 0.  On failure
 * leaves |*out| untouched, writes grpc-go's error text into |errbuf|
 * (truncated to |errlen|, NUL terminated when |errlen| > 0; |errbuf| may
 * be NULL), for example `transport: timeout unit is not recognized:
 * "1234x"`, and returns:
 *
 * GRACE_EINVAL   |s| or |out| is NULL
 * GRACE_ESYNTAX  |s| is not 1-8 digits and a unit
 */
int grace__grpc_timeout_decode(const char *s, size_t len, grace_duration *out,
                               char *errbuf, size_t errlen);

/*
 * The deadline |d| (>= 0, as decoded above) after |now| (monotonic ns, >= 0),
 * saturating at INT64_MAX: "99999999H" decodes to INT64_MAX, and adding
 * it to the clock must not overflow (signed overflow is undefined).
 */
int64_t grace__grpc_deadline_after(int64_t now, grace_duration d);

/* |d| (>= 0) in whole milliseconds, rounded up, for a uv timer; no
 * overflow for any |d|. */
uint64_t grace__grpc_timeout_ms(grace_duration d);

/* ---- Length-Prefixed-Message ---------------------------------------- */

/* Compressed-Flag (1 byte) and Message-Length (4 bytes, big endian). */
#define GRACE__GRPC_PREFIX_LEN 5

/* grpc-go's default limit on a received message, 4 MiB. */
#define GRACE__GRPC_DEFAULT_MAX_RECV (4u * 1024 * 1024)

/*
 * Writes the 5-byte prefix of a message of |len| bytes into |out|:
 * |compressed| (0 or 1) then |len| as a big-endian uint32.
 *
 * Returns 0, or one of the following negative error codes (|out| is left
 * untouched):
 *
 * GRACE_EINVAL   |out| is NULL or |compressed| is not 0 or 1
 * GRACE_ERANGE   |len| does not fit 32 bits (grpc-go: RESOURCE_EXHAUSTED,
 *                "grpc: message too large (%d bytes)")
 */
int grace__grpc_prefix_encode(uint8_t out[GRACE__GRPC_PREFIX_LEN],
                              unsigned compressed, size_t len);

/* A complete message handed out by the reader. */
typedef struct grace__grpc_msg {
  /* The payload, |len| bytes; borrowed: see grace__grpc_reader_read(). */
  const uint8_t *data;
  size_t len;
  /* The Compressed-Flag byte as received.  The reader does not judge it:
   * grace__grpc_check_payload() does, once the stream's grpc-encoding is
   * known. */
  uint8_t flag;
} grace__grpc_msg;

/*
 * An allocator for the reader, so tests can make allocations fail (the
 * nghttp2_mem idea).  |realloc_fn| behaves as realloc(3) (never asked for
 * 0 bytes), |free_fn| as free(3); |data| is passed to both.
 */
typedef struct grace__grpc_mem {
  void *(*realloc_fn)(void *ptr, size_t size, void *data);
  void (*free_fn)(void *ptr, void *data);
  void *data;
} grace__grpc_mem;

/*
 * The streaming reader of Length-Prefixed-Messages on one stream: feed it
 * the DATA bytes as they arrive, in chunks of any size (DATA frame
 * boundaries have no relation to message boundaries, doc/PROTOCOL-HTTP2.md),
 * and it hands out each complete message.
 *
 * Memory: a message that arrives whole within one chunk is handed out in
 * place, with no copy.  A message split across chunks is copied into a
 * buffer that grows only as its bytes arrive, so a peer that announces a
 * large length and sends little costs little.  The buffer never exceeds
 * the message size limit: a length above the limit is refused as soon as
 * the 5-byte prefix is complete, before anything is buffered.
 *
 * Errors are fatal to the reader (the nghttp2 ERR_FATAL idea): after any
 * call has returned a negative code, every later call returns GRACE_ESTATE
 * and only grace__grpc_reader_status() and grace__grpc_reader_free() are
 * useful.  The status then says what to send the peer.
 *
 * The fields are private; the struct is public so it can be embedded in a
 * stream.
 */
typedef struct grace__grpc_reader {
  const grace__grpc_mem *mem; /* NULL: libc */
  size_t max_msg;             /* the limit as configured */
  uint8_t prefix[GRACE__GRPC_PREFIX_LEN];
  uint8_t prefix_have; /* bytes of |prefix| received, 0..5 */
  uint32_t msg_len;    /* the announced length, once prefix_have == 5 */
  uint8_t *buf;        /* the split message being gathered */
  size_t buf_cap;
  size_t buf_have;
  int emitted_buf;      /* |buf| was handed out; reset it on the next call */
  int error;            /* the sticky negative code, or 0 */
  grace_grpc_code code; /* the status to send once |error| is set */
  char message[96];     /* its grpc-message, NUL terminated */
} grace__grpc_reader;

/*
 * Initializes |r| for a stream whose messages may be at most |max_msg|
 * bytes (grpc-go's MaxRecvMsgSize; GRACE__GRPC_DEFAULT_MAX_RECV is its
 * default).  |mem| is borrowed until grace__grpc_reader_free(); NULL means
 * realloc(3) and free(3).  Cannot fail: nothing is allocated until a split
 * message needs it.
 */
void grace__grpc_reader_init(grace__grpc_reader *r, size_t max_msg,
                             const grace__grpc_mem *mem);

/*
 * Frees what |r| holds.  |r| may then be initialized again.  Any message it
 * handed out is invalid from here on.
 */
void grace__grpc_reader_free(grace__grpc_reader *r);

/*
 * The pull interface: consumes bytes of |data| (|len| bytes, borrowed for
 * the call; NULL when |len| is 0) until one message is complete or the
 * bytes run out, and stores in |*consumed| how many bytes it used.
 *
 * Returns 1 when a message is complete: |*msg| describes it, and the caller
 * calls again with the bytes after |*consumed| for the next one.
 * |msg->data| points either into |data| or into the reader's buffer; it is
 * valid until the next call on |r| or until |data| is released, whichever
 * comes first.
 *
 * Returns 0 when all |len| bytes were consumed without completing a
 * message (|*msg| untouched).
 *
 * Otherwise returns one of the following negative error codes, with
 * |*consumed| and |*msg| untouched and |r| unusable (see above):
 *
 * GRACE_EINVAL   |r|, |consumed| or |msg| is NULL, or |data| is NULL with
 *                |len| > 0 (|r| stays usable for this one)
 * GRACE_ERANGE   the prefix announced a message longer than the limit;
 *                status RESOURCE_EXHAUSTED, "grpc: received message larger
 *                than max (<len> vs. <max>)" as grpc-go words it
 * GRACE_ENOMEM   out of memory; status RESOURCE_EXHAUSTED
 * GRACE_ESTATE   |r| failed earlier
 */
int grace__grpc_reader_read(grace__grpc_reader *r, const uint8_t *data,
                            size_t len, size_t *consumed, grace__grpc_msg *msg);

/*
 * Called by grace__grpc_reader_feed() for each complete message.  |msg| is
 * borrowed until the callback returns.  Returns 0 to go on, or any nonzero
 * value to stop: grace__grpc_reader_feed() then returns that value, drops
 * the rest of its input, and |r| is left unusable.  The callback must not
 * call functions on the reader.
 */
typedef int (*grace__grpc_msg_cb)(const grace__grpc_msg *msg, void *data);

/*
 * The push interface: consumes all |len| bytes of |data| (borrowed for the
 * call) and calls |cb| with |cbdata| for each message they complete, in
 * order.  Returns 0 when all bytes were consumed, the callback's nonzero
 * value if it stopped, or a negative code of grace__grpc_reader_read().
 */
int grace__grpc_reader_feed(grace__grpc_reader *r, const uint8_t *data,
                            size_t len, grace__grpc_msg_cb cb, void *cbdata);

/*
 * Says whether |r| stopped inside a message: part of a prefix, or a prefix
 * and only part of its payload, has been received.  Returns 1 or 0.
 */
int grace__grpc_reader_is_mid_message(const grace__grpc_reader *r);

/*
 * Tells |r| the stream has ended (END_STREAM).  Returns 0 if it ended
 * between messages.  If it ended inside one ("length prefix longer than the
 * data"), returns GRACE_ESYNTAX with status INTERNAL, "unexpected EOF" (how
 * grpc-go reports io.ErrUnexpectedEOF), and |r| becomes unusable.  Returns
 * GRACE_ESTATE if |r| had failed before, GRACE_EINVAL if |r| is NULL.
 */
int grace__grpc_reader_finish(grace__grpc_reader *r);

/*
 * Returns the status to send the peer after |r| failed and, if |message|
 * is not NULL, stores in |*message| the grpc-message text, NUL terminated,
 * owned by |r|.  The text is to be percent-encoded before it goes on the
 * wire.  While |r| has not failed, and after a callback of
 * grace__grpc_reader_feed() stopped it (the caller knows why), the status
 * is GRACE_GRPC_OK with an empty text.
 */
grace_grpc_code grace__grpc_reader_status(const grace__grpc_reader *r,
                                          const char **message);

/*
 * Returns how many bytes |r|'s buffer holds allocated now, for tests and
 * metrics.  Never more than the message size limit.
 */
size_t grace__grpc_reader_buffer_size(const grace__grpc_reader *r);

/* ---- Checks on headers and messages --------------------------------- */

/*
 * Says whether the content-type |value| (|len| bytes, borrowed) is a gRPC
 * one: "application/grpc", alone or followed by "+<subtype>" or
 * ";<parameters>" (doc/PROTOCOL-HTTP2.md, Content-Type).  The
 * "application/grpc" part is compared without regard to case, as RFC 9110
 * section 8.3.1 says media types are; grpc-go compares it as is, and
 * grpc-java lowercases it first, so grace accepts what either accepts.  A
 * server answers anything else with HTTP 415.
 *
 * Returns 1 if it is, and if |subtype| and |subtype_len| are not NULL
 * stores there the subtype: the bytes after '+' up to any ';' (a pointer
 * into |value|), or an empty one (length 0) for "application/grpc" and
 * "application/grpc;...", which mean the proto codec.  Returns 0 if it is
 * not, with the out-parameters untouched.
 */
int grace__grpc_is_content_type(const char *value, size_t len,
                                const char **subtype, size_t *subtype_len);

/*
 * Checks a received message's Compressed-Flag |flag| against the stream's
 * grpc-encoding header |encoding| (NUL terminated, or NULL when absent)
 * and whether a decompressor for it is installed, exactly as grpc-go's
 * checkRecvPayload:
 *
 *   0                              OK
 *   1 with no or "identity" encoding
 *                                  INTERNAL, "grpc: compressed flag set
 *                                  with identity or empty encoding"
 *   1 without a decompressor       UNIMPLEMENTED on a server (|is_server|
 *                                  nonzero), INTERNAL on a client,
 *                                  "grpc: Decompressor is not installed
 *                                  for grpc-encoding \"gzip\""
 *   anything else                  INTERNAL, "grpc: received unexpected
 *                                  payload format 2"
 *
 * Returns the code and, unless it is OK, writes the message into |buf|
 * (truncated to |len|, NUL terminated when |len| > 0; |buf| may be NULL).
 */
grace_grpc_code grace__grpc_check_payload(uint8_t flag, const char *encoding,
                                          int have_decompressor, int is_server,
                                          char *buf, size_t len);

#endif /* GRACE_GRPC_WIRE_H */
