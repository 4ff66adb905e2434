"""Hostile HTTP/2 clients against examples/http-sleep-server (h2c, prior
knowledge), with raw frames built here (Python 3 standard library only).

SPEC.md section 7: no peer holds a connection by doing nothing.  A stream
whose request body never ends is cut by -body-timeout; a stream the client
never gives flow-control window to is cut by -send-timeout; in a drain both
end it early (exit 0 well before -shutdown-timeout) and are counted as cut.
And one connection serves a thousand streams, one after another or in
batches of the advertised concurrency.

The client side is minimal on purpose: requests use HPACK literals without
indexing (no Huffman, no dynamic table), and of a response only :status is
decoded (static-table index or a literal, Huffman digits included).
"""

import signal
import socket
import struct
import threading
import time

import gracetest
from gracetest import bound, free_port, now
from test_http_hostile import cut_counts   # the drain report's "N cut"

SERVER = "http-sleep-server"
HELLO = b"Hello, World!\n"

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, \
    WINDOW_UPDATE, CONTINUATION = range(10)
FRAME_NAMES = ["DATA", "HEADERS", "PRIORITY", "RST_STREAM", "SETTINGS",
               "PUSH_PROMISE", "PING", "GOAWAY", "WINDOW_UPDATE", "CONTINUATION"]
END_STREAM, ACK, END_HEADERS, PADDED, PRIORITY_FLAG = 0x1, 0x1, 0x4, 0x8, 0x20

SETTINGS_MAX_CONCURRENT_STREAMS = 0x3
SETTINGS_INITIAL_WINDOW_SIZE = 0x4

# --------------------------------------------------------------------------
# Frames and a little HPACK

def frame(ftype, flags, stream_id, payload=b""):
    return struct.pack(">I", len(payload))[1:] + struct.pack(">BBI", ftype, flags,
                                                              stream_id) + payload


def settings_frame(values=None):
    payload = b"".join(struct.pack(">HI", k, v) for k, v in (values or {}).items())
    return frame(SETTINGS, 0, 0, payload)


def hpack_int(value, prefix_bits, first_byte=0):
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes([first_byte | value])
    out = [first_byte | limit]
    value -= limit
    while value >= 128:
        out.append((value & 0x7f) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def hpack_string(s):
    return hpack_int(len(s), 7) + s


def encode_headers(headers):
    """A header block of literals without indexing, new names, no Huffman."""
    out = b""
    for name, value in headers:
        out += b"\x00" + hpack_string(name.encode()) + hpack_string(value.encode())
    return out


def request_headers(method, path, port):
    return encode_headers([(":method", method), (":scheme", "http"),
                           (":authority", "127.0.0.1:%d" % port), (":path", path)])


# HPACK static table entries 8..14 are :status values.
STATIC_STATUS = {8: 200, 9: 204, 10: 206, 11: 304, 12: 400, 13: 404, 14: 500}
# Huffman codes (RFC 7541 appendix B) of the ten digits: (code, bits).
HUFFMAN_DIGITS = {(0x0, 5): "0", (0x1, 5): "1", (0x2, 5): "2", (0x19, 6): "3",
                  (0x1a, 6): "4", (0x1b, 6): "5", (0x1c, 6): "6", (0x1d, 6): "7",
                  (0x1e, 6): "8", (0x1f, 6): "9"}


def hpack_read_int(data, pos, prefix_bits):
    limit = (1 << prefix_bits) - 1
    value = data[pos] & limit
    pos += 1
    if value < limit:
        return value, pos
    shift = 0
    while True:
        b = data[pos]
        pos += 1
        value += (b & 0x7f) << shift
        shift += 7
        if not b & 0x80:
            return value, pos


def huffman_digits(raw):
    bits = "".join("{:08b}".format(b) for b in raw)
    out, i = "", 0
    while i < len(bits):
        for n in (5, 6):
            if i + n <= len(bits) and (int(bits[i:i + n], 2), n) in HUFFMAN_DIGITS:
                out += HUFFMAN_DIGITS[(int(bits[i:i + n], 2), n)]
                i += n
                break
        else:
            if set(bits[i:]) <= {"1"} and len(bits) - i < 8:   # EOS padding
                return out
            return None
    return out


def decode_status(block):
    """The :status of a response header block (the first field), or None."""
    try:
        pos = 0
        while block[pos] & 0xe0 == 0x20:            # dynamic table size update
            _, pos = hpack_read_int(block, pos, 5)
        b = block[pos]
        if b & 0x80:                                # indexed
            idx, _ = hpack_read_int(block, pos, 7)
            return STATIC_STATUS.get(idx)
        prefix = 6 if b & 0x40 else 4
        idx, pos = hpack_read_int(block, pos, prefix)
        if idx not in STATIC_STATUS:
            return None
        huff = block[pos] & 0x80
        n, pos = hpack_read_int(block, pos, 7)
        raw = block[pos:pos + n]
        text = huffman_digits(raw) if huff else raw.decode("ascii")
        return int(text) if text and text.isdigit() else None
    except (IndexError, ValueError):
        return None


class Frame:
    __slots__ = ("t", "type", "flags", "stream", "payload")

    def __init__(self, t, ftype, flags, stream, payload):
        self.t, self.type, self.flags, self.stream, self.payload = \
            t, ftype, flags, stream, payload

    def name(self):
        return FRAME_NAMES[self.type] if self.type < len(FRAME_NAMES) else str(self.type)

    def __repr__(self):
        extra = ""
        if self.type in (RST_STREAM, GOAWAY):
            code = struct.unpack(">I", self.payload[-4:] if self.type == RST_STREAM
                                 else self.payload[4:8])[0]
            extra = " error=%d" % code
            if self.type == GOAWAY:
                extra += " last=%d" % (struct.unpack(">I", self.payload[:4])[0] & 0x7fffffff)
        return "%s(stream=%d flags=0x%x len=%d%s)" % (self.name(), self.stream, self.flags,
                                                      len(self.payload), extra)


class H2Conn:
    """A raw h2c client connection.  A reader thread collects every frame
    with its arrival time, answers SETTINGS and PING, and records the end of
    the connection in .closed as ("eof" | "reset", time)."""

    def __init__(self, port, settings=None, conn_window=1 << 30):
        self.sock = socket.create_connection((gracetest.HOST, port), timeout=5.0)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.settimeout(None)
        self.connect_time = now()
        self.frames = []
        self.by_stream = {}
        self.closed = None
        self.server_settings = {}
        self._cond = threading.Condition()
        self._wlock = threading.Lock()
        first = PREFACE + settings_frame(settings)
        if conn_window:
            first += frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", conn_window))
        self.send(first)
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def send(self, data):
        with self._wlock:
            self.sock.sendall(data)

    def try_send(self, data):
        try:
            self.send(data)
            return True
        except OSError:
            return False

    def _read(self):
        buf = b""
        how = "eof"
        while True:
            try:
                data = self.sock.recv(65536)
            except ConnectionResetError:
                how = "reset"
                break
            except OSError:
                break
            if not data:
                break
            buf += data
            while len(buf) >= 9:
                length = struct.unpack(">I", b"\0" + buf[:3])[0]
                if len(buf) < 9 + length:
                    break
                ftype, flags, sid = struct.unpack(">BBI", buf[3:9])
                f = Frame(now(), ftype, flags, sid & 0x7fffffff, buf[9:9 + length])
                buf = buf[9 + length:]
                if ftype == SETTINGS and not flags & ACK:
                    for i in range(0, len(f.payload) - 5, 6):
                        k, v = struct.unpack(">HI", f.payload[i:i + 6])
                        self.server_settings[k] = v
                    self.try_send(frame(SETTINGS, ACK, 0))
                elif ftype == PING and not flags & ACK:
                    self.try_send(frame(PING, ACK, 0, f.payload))
                with self._cond:
                    self.frames.append(f)
                    self.by_stream.setdefault(f.stream, []).append(f)
                    self._cond.notify_all()
        with self._cond:
            self.closed = (how, now())
            self._cond.notify_all()

    def wait_for(self, pred, timeout, start=0):
        """The first frame (from index `start` of .frames) satisfying pred,
        or None at the connection's end or after `timeout` seconds."""
        deadline = now() + timeout
        seen = start
        with self._cond:
            while True:
                for f in self.frames[seen:]:
                    if pred(f):
                        return f
                seen = len(self.frames)
                left = deadline - now()
                if left <= 0 or self.closed:
                    return None
                self._cond.wait(left)

    def wait_settings(self, timeout=3.0):
        f = self.wait_for(lambda f: f.type == SETTINGS and not f.flags & ACK, timeout)
        if f is None:
            raise AssertionError("no SETTINGS from the server within %.1fs: %r"
                                 % (timeout, self.frames))
        return f

    def wait_stream_cut(self, sid, timeout):
        """Wait for RST_STREAM on `sid`, or the connection's end; return the
        time it happened and what it was, or (None, None) on timeout."""
        f = self.wait_for(lambda f: f.type == RST_STREAM and f.stream == sid, timeout)
        if f is not None:
            return f.t, repr(f)
        with self._cond:
            if self.closed:
                return self.closed[1], "connection %s" % self.closed[0]
        return None, None

    def stream_frames(self, sid):
        with self._cond:
            return list(self.by_stream.get(sid, ()))

    def count(self):
        with self._cond:
            return len(self.frames)

    def close(self):
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        try:
            self.sock.close()
        except OSError:
            pass
        self._thread.join(2.0)


class H2Hostile(gracetest.ProgramTestCase):

    def start_server(self, *flags):
        port = free_port()
        p = self.start(SERVER, "-addr", "127.0.0.1:%d" % port, *flags)
        p.wait_port(port)
        return p, port

    def h2(self, port, **kw):
        c = H2Conn(port, **kw)
        self.addCleanup(c.close)
        return c

    def assert_still_serving(self, p, port, what):
        self.assertTrue(p.running(), "server exited (status %s) after %s"
                        % (p.returncode, what))
        c = self.h2(port)
        c.send(frame(HEADERS, END_STREAM | END_HEADERS, 1, request_headers("GET", "/", port)))
        f = c.wait_for(lambda f: f.stream == 1 and f.type == DATA and f.flags & END_STREAM,
                       3.0)
        self.assertIsNotNone(f, "a fresh h2 connection is not answered after %s: %r"
                             % (what, c.frames))
        r = gracetest.get(port, "/", timeout=3.0)
        self.assertEqual((r.status, r.body), (200, HELLO),
                         "a fresh HTTP/1.1 connection is not answered after %s" % what)

    # -- (a) a request body that never ends ----------------------------------------

    def stalled_upload(self, port):
        c = self.h2(port)
        c.wait_settings()
        c.send(frame(HEADERS, END_HEADERS, 1, request_headers("POST", "/", port)) +
               frame(DATA, 0, 1, b"x" * 10))
        return c

    def test_h2_stalled_request_body_reset_at_body_timeout(self):
        p, port = self.start_server("-body-timeout", "1s")
        c = self.stalled_upload(port)
        t_cut, what = c.wait_stream_cut(1, 6.0)
        self.assertIsNotNone(t_cut, "a stream whose body stopped after 10 bytes was "
                             "neither reset nor its connection closed within 6 s "
                             "(-body-timeout 1s); frames: %r" % c.frames)
        took = t_cut - c.connect_time
        self.report("h2 stalled upload cut after", took * 1000)
        self.assertGreaterEqual(took, 0.5, "stalled stream cut before the body "
                                "timeout: %s" % what)
        self.assertLessEqual(took, 5.0, "stalled stream cut %.1fs later (%s), body "
                             "timeout 1s" % (took, what))
        self.assert_still_serving(p, port, "an h2 stalled upload")

    def test_h2_drain_cuts_stalled_request_body_exit_0_reports_cut(self):
        p, port = self.start_server("-body-timeout", "1s", "-shutdown-timeout", "10s")
        c = self.stalled_upload(port)
        time.sleep(0.3)
        self.assertIsNone(c.closed, "connection closed before the signal: %r" % c.frames)
        t_sig = p.send_signal(signal.SIGINT)
        rc = p.wait_exit(12.0)
        took = p.exit_time - t_sig
        self.report("signal -> exit with an h2 stalled upload", took * 1000)
        self.assertEqual(rc, 0, "drain with a stalled h2 upload must end at the body "
                         "timeout and exit 0")
        self.assertLess(took, bound(3.0, 4.0), "the stalled h2 upload held the drain "
                        "%.1fs (body timeout 1s, shutdown timeout 10s)" % took)
        counts = cut_counts(p.lines())
        self.assertTrue(any(n > 0 for n in counts),
                        "the drain report does not count the cut h2 stream (want a "
                        "nonzero number next to 'cut'); log:\n%s" % p.stderr_text())

    # -- (b) a client that gives no flow-control window ---------------------------

    def zero_window_request(self, port):
        c = self.h2(port, settings={SETTINGS_INITIAL_WINDOW_SIZE: 0})
        c.wait_settings()
        c.send(frame(HEADERS, END_STREAM | END_HEADERS, 1, request_headers("GET", "/", port)))
        return c

    def test_h2_zero_window_stream_cut_at_send_timeout(self):
        p, port = self.start_server("-send-timeout", "1s")
        c = self.zero_window_request(port)
        t_cut, what = c.wait_stream_cut(1, 6.0)
        self.assertIsNotNone(t_cut, "a stream the client gave no window was neither "
                             "reset nor its connection closed within 6 s "
                             "(-send-timeout 1s); frames: %r" % c.frames)
        took = t_cut - c.connect_time
        self.report("h2 zero-window stream cut after", took * 1000)
        self.assertGreaterEqual(took, 0.5, "zero-window stream cut before the send "
                                "timeout: %s" % what)
        self.assertLessEqual(took, 5.0, "zero-window stream cut %.1fs later (%s), send "
                             "timeout 1s" % (took, what))
        data = [f for f in c.stream_frames(1) if f.type == DATA and f.payload]
        self.assertEqual(data, [], "DATA sent beyond a zero flow-control window")
        self.assert_still_serving(p, port, "an h2 zero-window client")

    def test_h2_drain_cuts_zero_window_stream_exit_0_reports_cut(self):
        p, port = self.start_server("-send-timeout", "1s", "-shutdown-timeout", "10s")
        c = self.zero_window_request(port)
        time.sleep(0.3)
        self.assertIsNone(c.closed, "connection closed before the signal: %r" % c.frames)
        t_sig = p.send_signal(signal.SIGINT)
        rc = p.wait_exit(12.0)
        took = p.exit_time - t_sig
        self.report("signal -> exit with an h2 zero-window stream", took * 1000)
        self.assertEqual(rc, 0, "drain with a zero-window h2 stream must end at the "
                         "send timeout and exit 0")
        self.assertLess(took, bound(3.0, 4.0), "the zero-window stream held the drain "
                        "%.1fs (send timeout 1s, shutdown timeout 10s)" % took)
        counts = cut_counts(p.lines())
        self.assertTrue(any(n > 0 for n in counts),
                        "the drain report does not count the cut h2 stream (want a "
                        "nonzero number next to 'cut'); log:\n%s" % p.stderr_text())

    # -- (c) many streams on one connection -----------------------------------------

    def check_answer(self, c, sid):
        fs = c.stream_frames(sid)
        heads = [f for f in fs if f.type == HEADERS]
        body = b"".join(f.payload for f in fs if f.type == DATA)
        if not heads:
            self.fail("stream %d: no HEADERS: %r" % (sid, fs))
        status = decode_status(heads[0].payload)
        self.assertEqual((status, body), (200, HELLO), "stream %d: %r" % (sid, fs))

    def test_h2_1000_sequential_streams_on_one_connection(self):
        p, port = self.start_server()
        c = self.h2(port)
        c.wait_settings()
        n = 1000
        for i in range(n):
            sid = 2 * i + 1
            start = c.count()
            c.send(frame(HEADERS, END_STREAM | END_HEADERS, sid,
                         request_headers("GET", "/", port)))
            f = c.wait_for(lambda f, sid=sid: f.stream == sid and f.flags & END_STREAM
                           and f.type in (DATA, HEADERS) or f.type == RST_STREAM
                           and f.stream == sid or f.type == GOAWAY, 3.0, start)
            if f is None or f.type in (RST_STREAM, GOAWAY):
                self.fail("stream %d of %d on one connection not answered: %r "
                          "(connection %s; last frames %r)"
                          % (i + 1, n, f, c.closed, c.frames[-6:]))
            self.check_answer(c, sid)
        self.assertIsNone(c.closed)
        self.assert_still_serving(p, port, "1000 sequential streams")

    def test_h2_1000_streams_in_batches_of_max_concurrency(self):
        p, port = self.start_server()
        c = self.h2(port)
        c.wait_settings()
        batch = min(c.server_settings.get(SETTINGS_MAX_CONCURRENT_STREAMS, 100), 100)
        n = 1000
        sid = 1
        for b in range(0, n, batch):
            sids = list(range(sid, sid + 2 * batch, 2))
            sid += 2 * batch
            start = c.count()       # before the send: answers come at once
            # Every request of a batch in one write.
            c.send(b"".join(frame(HEADERS, END_STREAM | END_HEADERS, s,
                                  request_headers("GET", "/", port)) for s in sids))
            last = sids[-1]
            for s in sids:
                f = c.wait_for(lambda f, s=s: (f.stream == s and f.flags & END_STREAM
                                               and f.type in (DATA, HEADERS))
                               or (f.type == RST_STREAM and f.stream == s)
                               or f.type == GOAWAY, 5.0, start)
                if f is None or f.type in (RST_STREAM, GOAWAY):
                    self.fail("stream %d (batch of %d ending at %d) not answered: %r "
                              "(connection %s; last frames %r)"
                              % (s, batch, last, f, c.closed, c.frames[-6:]))
                self.check_answer(c, s)
        self.assertIsNone(c.closed)
        self.assert_still_serving(p, port, "1000 streams in batches")


if __name__ == "__main__":
    gracetest.main()
