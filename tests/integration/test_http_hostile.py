"""Hostile HTTP/1.x input against examples/http-sleep-server, with raw sockets.

Regression tests for defects reproduced on the server's connection layer
(SPEC.md section 7, "Trust"): Upgrade requests, request smuggling through
chunked framing and Content-Length/Transfer-Encoding, the Host and field
syntax rules of RFC 9112, deep pipelines, body and send inactivity timeouts
(also during a drain, where what they cut must be counted), bounded chunk
extensions, trailers and field counts, HEAD framing and a slowloris client.

Every test is bounded in time; bad input must get a clear 4xx (or a close),
never a smuggled second response, never a crash: after each test the server
must still be running and answer a fresh connection (except where the test
shuts it down itself, and then it must exit 0).
"""

import re
import signal
import socket
import threading
import time

import gracetest
from gracetest import bound, free_port, now, request

SERVER = "http-sleep-server"
HELLO = b"Hello, World!\n"
WELCOME = b"Welcome HTTP Server"

# A status line at the start of the data or of a line: a crude but safe way
# to count responses, since no body this server sends contains one.
STATUS_RE = re.compile(rb"(?:^|\n)HTTP/1\.[01] (\d{3}) ")

# What a drain report must say when it cut something: a nonzero count next
# to the word "cut" in a log message, e.g. "HTTP server closed: 1 request(s)
# cut", "... completed, 1 connection(s) cut" or "... completed (cut: 1)".
CUT_RE = re.compile(r"(\d+)[^\d\n,;.]{0,30}\bcut\b|\bcut\b[\s:=]*(\d+)")


def statuses(data):
    """The status codes of every response found in raw bytes, in order."""
    return [int(s) for s in STATUS_RE.findall(data)]


def cut_counts(lines):
    """The counts next to "cut" in the log lines."""
    out = []
    for l in lines:
        # The message of a Go log line: its timestamp's digits are no count.
        for m in CUT_RE.finditer(l.msg if l.msg is not None else l.text):
            out.append(int(m.group(1) or m.group(2)))
    return out


class HostileBase(gracetest.ProgramTestCase):

    def start_server(self, *flags):
        port = free_port()
        p = self.start(SERVER, "-addr", "127.0.0.1:%d" % port, *flags)
        p.wait_port(port)
        return p, port

    def assert_still_serving(self, p, port, what):
        """The server survived `what`: still running, and a fresh connection
        gets 200 for GET /."""
        time.sleep(0.05)
        self.assertTrue(p.running(), "server exited (status %s) after %s"
                        % (p.returncode, what))
        try:
            r = gracetest.get(port, "/", timeout=3.0)
        except (OSError, AssertionError) as e:
            self.fail("server no longer answers a fresh connection after %s: %s" % (what, e))
        self.assertEqual((r.status, r.body), (200, HELLO),
                         "fresh connection after %s not answered 200" % what)

    def assert_sigint_exit_0(self, p, what):
        p.send_signal(signal.SIGINT)
        rc = p.wait_exit(bound(5.0, 10.0))
        self.assertEqual(rc, 0, "server did not exit 0 on SIGINT after %s" % what)

    def send_collect(self, port, data, timeout=3.0):
        """Send `data` on a fresh connection (from a thread) and read until the
        server closes or `timeout`; return (bytes, how)."""
        data, how, _ = gracetest.exchange(port, data, timeout=timeout)
        return data, how

    def assert_rejected(self, port, data, what, allowed=(400,), allow_close_only=False):
        """`data` is malformed: the server answers at most one response,
        whose status is in `allowed` (or, with allow_close_only, sends nothing),
        then closes the connection; never a second (smuggled) response."""
        got, how = self.send_collect(port, data)
        sts = statuses(got)
        self.assertLessEqual(len(sts), 1,
                             "%s: more than one response (a smuggled request was "
                             "answered): statuses %s, got %r" % (what, sts, got[:600]))
        if sts or not allow_close_only:
            self.assertTrue(sts, "%s: no response before %s (want %s); got %r"
                            % (what, how, allowed, got[:600]))
            self.assertIn(sts[0], allowed, "%s: answered %d, want one of %s; got %r"
                          % (what, sts[0], allowed, got[:600]))
        self.assertNotEqual(how, "timeout", "%s: connection left open after the "
                            "response (got %r)" % (what, got[:600]))


class HttpHostile(HostileBase):

    # -- 1. Upgrade requests are answered as plain HTTP/1.1 ---------------------

    def upgrade_then_second_request(self, upgrade_headers, pipelined):
        p, port = self.start_server()
        c = self.conn(port, timeout=5.0)
        first = request("/", headers=upgrade_headers)
        second = request("/sleep?duration=0s")
        if pipelined:
            c.send(first + second)
        else:
            c.send(first)
        try:
            r1 = c.read_response(timeout=3.0)
        except AssertionError as e:
            self.fail("request with %r not answered: %s (server running: %s)"
                      % (upgrade_headers, e, p.running()))
        self.assertEqual((r1.status, r1.body), (200, HELLO),
                         "the Upgrade must be ignored and / answered as plain "
                         "HTTP/1.1: %r" % r1)
        self.assertEqual(r1.version, "HTTP/1.1")
        if not pipelined:
            c.try_send(second)
        # Either the second request is answered too, or the connection was
        # closed cleanly after the first response (no stray bytes).
        data, how, _ = c.read_until_close(timeout=2.0)
        if how == "timeout":
            self.assertRegex(data, rb"^HTTP/1\.1 200 ",
                             "second request on the connection of an ignored "
                             "Upgrade not answered (and the connection not "
                             "closed): got %r" % data[:600])
            self.assertTrue(data.endswith(WELCOME),
                            "second request answered wrongly: %r" % data[:600])
        else:
            self.assertTrue(data == b"" or (statuses(data) == [200] and
                                            data.endswith(WELCOME)),
                            "after the first response: %r then %s" % (data[:600], how))
        self.assert_still_serving(p, port, "an Upgrade request")
        self.assert_sigint_exit_0(p, "an Upgrade request")

    def test_upgrade_websocket_ignored_next_request_answered(self):
        self.upgrade_then_second_request(
            [("Connection", "Upgrade"), ("Upgrade", "websocket"),
             ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
             ("Sec-WebSocket-Version", "13")], pipelined=False)

    def test_upgrade_websocket_pipelined_next_request_answered(self):
        self.upgrade_then_second_request(
            [("Connection", "Upgrade"), ("Upgrade", "websocket"),
             ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
             ("Sec-WebSocket-Version", "13")], pipelined=True)

    def test_upgrade_h2c_ignored_next_request_answered(self):
        # What `curl --http2 http://...` sends.
        self.upgrade_then_second_request(
            [("Connection", "Upgrade, HTTP2-Settings"), ("Upgrade", "h2c"),
             ("HTTP2-Settings", "AAMAAABkAAQAoAAAAAIAAAAA")], pipelined=False)

    def test_upgrade_h2c_pipelined_next_request_answered(self):
        self.upgrade_then_second_request(
            [("Connection", "Upgrade, HTTP2-Settings"), ("Upgrade", "h2c"),
             ("HTTP2-Settings", "AAMAAABkAAQAoAAAAAIAAAAA")], pipelined=True)

    # -- 2. chunked framing and body length: no smuggling -----------------------

    SMUGGLED = b"GET /sleep?duration=0s HTTP/1.1\r\nHost: x\r\n\r\n"

    @staticmethod
    def chunked_post(body, te="chunked", extra=b""):
        return (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: " + te.encode() +
                b"\r\n" + extra + b"\r\n" + body)

    def test_chunk_data_longer_than_its_size_400_no_smuggled_request(self):
        p, port = self.start_server()
        data = self.chunked_post(b"5\r\nhelloXX0\r\n\r\n" + self.SMUGGLED)
        self.assert_rejected(port, data, "chunk data not followed by CRLF",
                             allow_close_only=True)
        self.assert_still_serving(p, port, "a smuggling attempt")

    def test_chunk_size_bad_hex_400(self):
        p, port = self.start_server()
        for size in (b"zz", b"5x", b"0x5", b"-5", b" 5", b"5 5", b""):
            with self.subTest(size=size):
                data = self.chunked_post(size + b"\r\nhello\r\n0\r\n\r\n" + self.SMUGGLED)
                self.assert_rejected(port, data, "chunk size %r" % size)
        self.assert_still_serving(p, port, "bad chunk sizes")

    def test_chunk_size_overflow_400(self):
        p, port = self.start_server()
        for size in (b"ffffffffffffffffff", b"10000000000000000",
                     b"00000000000000000000000000000000000000005"):
            with self.subTest(size=size):
                data = self.chunked_post(size + b"\r\nhello\r\n0\r\n\r\n" + self.SMUGGLED)
                if size.startswith(b"0000"):
                    # Leading zeros are valid hex: the chunk is 5 bytes and the
                    # next request is a legitimate pipelined one.  Only the
                    # overflow cases must be rejected.
                    got, how = self.send_collect(port, data)
                    self.assertIn(statuses(got), ([200, 200], [400]),
                                  "chunk size %r: %r" % (size, got[:600]))
                    continue
                self.assert_rejected(port, data, "chunk size %r" % size,
                                     allowed=(400, 413))
        self.assert_still_serving(p, port, "chunk size overflow")

    def test_chunked_lf_only_line_endings_400(self):
        p, port = self.start_server()
        cases = [b"5\nhello\n0\n\n",          # every chunk line LF-only
                 b"5\r\nhello\n0\r\n\r\n",    # chunk data ended by a bare LF
                 b"5\nhello\r\n0\r\n\r\n",    # chunk size ended by a bare LF
                 b"5\r\nhello\r\n0\n\r\n",    # last-chunk ended by a bare LF
                 b"5\r\nhello\r\n0\r\n\n"]    # body's final line a bare LF
        for body in cases:
            with self.subTest(body=body):
                self.assert_rejected(port, self.chunked_post(body + self.SMUGGLED),
                                     "LF-only chunk framing %r" % body)
        self.assert_still_serving(p, port, "LF-only chunk framing")

    def test_transfer_encoding_final_coding_not_chunked_400(self):
        # RFC 9112 6.1/6.3: in a request, a Transfer-Encoding whose final
        # coding is not chunked makes the length unknowable: 400 and close.
        p, port = self.start_server()
        for te in ("chunked, identity", "identity", "gzip", "chunked, gzip",
                   "chunked;q=1, identity"):
            with self.subTest(te=te):
                data = self.chunked_post(b"5\r\nhello\r\n0\r\n\r\n" + self.SMUGGLED, te=te)
                self.assert_rejected(port, data, "Transfer-Encoding: %s" % te)
        self.assert_still_serving(p, port, "a non-chunked final transfer coding")

    def test_transfer_encoding_unknown_coding_before_chunked_rejected(self):
        # "gzip, chunked" is framed by chunked, but the server cannot decode
        # gzip: 501 (RFC 9112 6.1, as Go does) or 400; never a smuggled request.
        p, port = self.start_server()
        for te in ("gzip, chunked", "chunked, chunked", "xyz, chunked"):
            with self.subTest(te=te):
                data = self.chunked_post(b"5\r\nhello\r\n0\r\n\r\n" + self.SMUGGLED, te=te)
                self.assert_rejected(port, data, "Transfer-Encoding: %s" % te,
                                     allowed=(400, 501))
        self.assert_still_serving(p, port, "an unknown transfer coding")

    def test_content_length_with_transfer_encoding_rejected_or_closed(self):
        # RFC 9112 6.3: 400, or Transfer-Encoding wins and the connection is
        # closed after the response; either way no second response.
        p, port = self.start_server()
        chunked = b"0\r\n\r\n" + self.SMUGGLED
        for cl in (len(b"0\r\n\r\n"), len(chunked), 3):
            with self.subTest(content_length=cl):
                data = self.chunked_post(chunked, extra=b"Content-Length: %d\r\n" % cl)
                self.assert_rejected(port, data, "Content-Length %d with chunked" % cl,
                                     allowed=(400, 200))
        # Transfer-Encoding first, Content-Length second.
        data = (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n" + chunked)
        self.assert_rejected(port, data, "Content-Length before Transfer-Encoding",
                             allowed=(400, 200))
        self.assert_still_serving(p, port, "Content-Length with Transfer-Encoding")

    def test_two_different_content_lengths_400(self):
        p, port = self.start_server()
        for fields in ([b"Content-Length: 5", b"Content-Length: 6"],
                       [b"Content-Length: 5, 6"],
                       [b"Content-Length: 6", b"Content-Length: 5"]):
            with self.subTest(fields=fields):
                data = (b"POST / HTTP/1.1\r\nHost: x\r\n" + b"\r\n".join(fields) +
                        b"\r\n\r\nhello!" + self.SMUGGLED)
                self.assert_rejected(port, data, "%r" % fields)
        self.assert_still_serving(p, port, "conflicting Content-Length fields")

    def test_content_length_with_sign_or_non_digits_400(self):
        p, port = self.start_server()
        for value in (b"+5", b"-5", b"5x", b"0x5", b"5.0", b"1e1", b"5 5", b"", b"\xd9\xa5"):
            with self.subTest(value=value):
                data = (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: " + value +
                        b"\r\n\r\nhello" + self.SMUGGLED)
                self.assert_rejected(port, data, "Content-Length: %r" % value)
        self.assert_still_serving(p, port, "bad Content-Length values")

    # -- 3. RFC 9112 Host and field syntax -----------------------------------------

    def test_http11_request_without_host_400(self):
        p, port = self.start_server()
        self.assert_rejected(port, b"GET / HTTP/1.1\r\n\r\n", "HTTP/1.1 without Host")
        self.assert_still_serving(p, port, "a request without Host")

    def test_two_host_fields_400(self):
        p, port = self.start_server()
        self.assert_rejected(port, b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
                             "two Host fields")
        self.assert_rejected(port, b"GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n",
                             "two identical Host fields")
        self.assert_still_serving(p, port, "two Host fields")

    def test_whitespace_between_field_name_and_colon_400(self):
        p, port = self.start_server()
        self.assert_rejected(port, b"GET / HTTP/1.1\r\nHost : x\r\n\r\n", "'Host : x'")
        self.assert_rejected(port, b"GET / HTTP/1.1\r\nHost: x\r\nX-A\t: y\r\n\r\n",
                             "'X-A<TAB>: y'")
        self.assert_still_serving(p, port, "whitespace before a colon")

    def test_obs_fold_400(self):
        p, port = self.start_server()
        self.assert_rejected(port, b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n",
                             "obs-fold with a space")
        self.assert_rejected(port, b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\r\n\tb\r\n\r\n",
                             "obs-fold with a tab")
        self.assert_still_serving(p, port, "obs-fold")

    def test_absolute_form_target_accepted(self):
        p, port = self.start_server()
        c = self.conn(port)
        c.send(b"GET http://x/ HTTP/1.1\r\nHost: x\r\n\r\n")
        r = c.read_response(timeout=3.0)
        self.assertEqual((r.status, r.body), (200, HELLO),
                         "absolute-form http://x/ must route to /: %r" % r)
        c.send(b"GET http://x/sleep?duration=0s HTTP/1.1\r\nHost: x\r\n\r\n")
        r = c.read_response(timeout=3.0)
        self.assertEqual((r.status, r.body), (200, WELCOME),
                         "absolute-form http://x/sleep?duration=0s: %r" % r)
        self.assert_still_serving(p, port, "absolute-form targets")

    def test_http_1_2_answered_as_http_1_1(self):
        p, port = self.start_server()
        c = self.conn(port)
        c.send(b"GET / HTTP/1.2\r\nHost: x\r\n\r\n")
        r = c.read_response(timeout=3.0)
        self.assertEqual((r.status, r.body), (200, HELLO), "HTTP/1.2 request: %r" % r)
        self.assertEqual(r.version, "HTTP/1.1",
                         "a response's version must be the server's (HTTP/1.1): %r" % r.raw)
        self.assert_still_serving(p, port, "an HTTP/1.2 request")

    def test_http10_without_host_accepted(self):
        p, port = self.start_server()
        c = self.conn(port)
        c.send(b"GET / HTTP/1.0\r\n\r\n")
        r = c.read_response(timeout=3.0)
        self.assertEqual((r.status, r.body), (200, HELLO),
                         "HTTP/1.0 needs no Host: %r" % r)
        self.assert_still_serving(p, port, "HTTP/1.0 without Host")

    # -- 4. deep pipelines ---------------------------------------------------------

    def test_10000_pipelined_requests_answered_in_order(self):
        p, port = self.start_server()
        n = 10000
        c = self.conn(port, timeout=30.0)
        # Alternate two routes so the order of the answers is checked.
        reqs = b"".join(request("/" if i % 2 == 0 else "/nope") for i in range(n))
        result = {}

        def reader():
            got = []
            try:
                for _ in range(n):
                    got.append(c.read_response(timeout=bound(20.0, 60.0)))
            except AssertionError as e:
                result["error"] = "after %d responses: %s" % (len(got), e)
            result["responses"] = got
        t = threading.Thread(target=reader, daemon=True)
        t.start()
        sent = c.try_send(reqs)
        t.join(bound(30.0, 90.0))
        self.assertFalse(t.is_alive(), "reading %d pipelined responses did not end" % n)
        self.assertTrue(sent, "the server closed while %d pipelined requests were "
                        "being sent (%d answered)" % (n, len(result["responses"])))
        got = result["responses"]
        if "error" in result:
            self.fail("%d pipelined requests in one write: %s" % (n, result["error"]))
        self.assertEqual(len(got), n)
        for i, r in enumerate(got):
            want = 200 if i % 2 == 0 else 404
            if r.status != want:
                self.fail("pipelined response %d: status %d, want %d (%r)"
                          % (i, r.status, want, r))
        # The connection stays usable.
        c.send(request("/"))
        r = c.read_response(timeout=3.0)
        self.assertEqual((r.status, r.body), (200, HELLO),
                         "connection unusable after %d pipelined requests" % n)
        self.assert_still_serving(p, port, "a deep pipeline")

    # -- 6. bounded chunk extensions, trailers and field counts ------------------------

    def test_huge_chunk_extension_rejected_quickly(self):
        p, port = self.start_server()
        body = b"1;" + b"a" * (100 * 1024) + b"\r\nx\r\n0\r\n\r\n"
        t0 = now()
        got, how = self.send_collect(port, self.chunked_post(body), timeout=5.0)
        took = now() - t0
        sts = statuses(got)
        self.assertEqual(len(sts), 1, "a 100 KiB chunk extension: want one 4xx, got %r"
                         % got[:600])
        self.assertIn(sts[0], (400, 413, 431), "a 100 KiB chunk extension: %r" % got[:600])
        self.assertNotEqual(how, "timeout", "connection left open after an unbounded "
                            "chunk extension")
        self.assertLess(took, 3.0, "a 100 KiB chunk extension took %.1fs to reject" % took)
        self.assert_still_serving(p, port, "a huge chunk extension")

    def test_huge_trailer_section_rejected(self):
        p, port = self.start_server()
        trailers = b"".join(b"X-T-%d: %s\r\n" % (i, b"t" * 1000) for i in range(100))
        body = b"5\r\nhello\r\n0\r\n" + trailers + b"\r\n"
        t0 = now()
        got, how = self.send_collect(port, self.chunked_post(body) + self.SMUGGLED,
                                     timeout=5.0)
        took = now() - t0
        sts = statuses(got)
        self.assertEqual(len(sts), 1, "a 100 KiB trailer section: want one 4xx, got %r"
                         % got[:600])
        self.assertIn(sts[0], (400, 413, 431), "a 100 KiB trailer section: %r" % got[:600])
        self.assertNotEqual(how, "timeout", "connection left open after a 100 KiB "
                            "trailer section")
        self.assertLess(took, 3.0)
        self.assert_still_serving(p, port, "a huge trailer section")

    def test_too_many_header_fields_431(self):
        p, port = self.start_server()
        # 500 tiny fields: about 5 KB, far below -max-header-bytes (64 KiB),
        # so only a bound on the number of fields can catch it.
        fields = b"".join(b"a%d:\r\n" % i for i in range(500))
        data = b"GET / HTTP/1.1\r\nHost: x\r\n" + fields + b"\r\n"
        self.assertLess(len(data), 8192)
        got, how = self.send_collect(port, data)
        sts = statuses(got)
        self.assertEqual(sts, [431], "500 header fields: want 431, got %r" % got[:600])
        self.assertNotEqual(how, "timeout", "connection left open after a 431")
        self.assert_still_serving(p, port, "500 header fields")

    # -- 8. HEAD framing ----------------------------------------------------------

    def test_head_has_get_headers_and_no_body(self):
        p, port = self.start_server()
        c = self.conn(port)
        c.send(request("/"))
        g = c.read_response(timeout=3.0)
        self.assertEqual((g.status, g.body), (200, HELLO))
        # The HEAD response is followed by the answer to /nope: any body
        # bytes after the HEAD response would break that one's status line.
        c.send(request("/", method="HEAD") + request("/nope"))
        h = c.read_response(timeout=3.0, head_request=True)
        self.assertEqual(h.status, 200, "HEAD /: %r" % h)
        self.assertIsNotNone(h.header("content-length"),
                             "HEAD / lacks the Content-Length GET / has: %r" % h)
        self.assertEqual(h.header("content-length"), g.header("content-length"),
                         "HEAD and GET Content-Length differ: %r vs %r" % (h, g))
        self.assertEqual(h.header("content-type"), g.header("content-type"))
        self.assertIsNone(h.header("transfer-encoding"), "HEAD / chunked: %r" % h)
        try:
            r = c.read_response(timeout=3.0)
        except AssertionError as e:
            self.fail("HEAD response followed by body bytes? next response broken: %s" % e)
        self.assertEqual(r.status, 404, "HEAD response was followed by body bytes: %r" % r)
        self.assert_still_serving(p, port, "HEAD")

    # -- 9. slowloris ------------------------------------------------------------

    def slowloris(self, keepalive_first):
        p, port = self.start_server("-read-header-timeout", "1s")
        c = self.conn(port)
        if keepalive_first:
            # A normal request first: the slow one is the connection's second.
            c.send(request("/"))
            r = c.read_response(timeout=3.0)
            self.assertEqual((r.status, r.body), (200, HELLO))
        stop = threading.Event()

        def drip():
            # A header that never ends, one byte every 200 ms: each byte
            # arrives well within any per-read timeout.
            data = b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: "
            i = 0
            while not stop.is_set():
                b = data[i:i + 1] if i < len(data) else b"a"
                if not c.try_send(b):
                    return
                i += 1
                if stop.wait(0.2):
                    return
        t_start = now()
        t = threading.Thread(target=drip, daemon=True)
        t.start()
        try:
            data, how, t_close = c.read_until_close(timeout=5.0)
        finally:
            stop.set()
            t.join(3.0)
        self.assertNotEqual(how, "timeout", "a client sending one header byte every "
                            "200 ms was not cut off by -read-header-timeout 1s within 5 s")
        took = t_close - t_start
        self.report("slowloris cut off after", took * 1000)
        self.assertGreaterEqual(took, 0.9, "closed before the read-header timeout")
        self.assertLessEqual(took, bound(2.5, 3.5), "closed %.2fs after the first "
                             "header byte, read-header timeout 1s" % took)
        self.assertTrue(data == b"" or re.match(rb"HTTP/1\.1 40[08] ", data), data)
        self.assert_still_serving(p, port, "a slowloris client")

    def test_slowloris_one_byte_per_200ms_closed_at_read_header_timeout(self):
        self.slowloris(keepalive_first=False)

    def test_slowloris_on_keepalive_connection_closed_at_read_header_timeout(self):
        self.slowloris(keepalive_first=True)


# -- 5. body and send timeouts ---------------------------------------------------

class HttpHostileTimeouts(HostileBase):

    TIMEOUT_FLAGS = ("-body-timeout", "1s", "-send-timeout", "1s")

    def stalled_upload(self, port):
        """A POST announcing 100 body bytes that sends 10 and stalls."""
        c = self.conn(port)
        c.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n" + b"x" * 10)
        return c

    def test_stalled_request_body_closed_at_body_timeout(self):
        p, port = self.start_server(*self.TIMEOUT_FLAGS)
        c = self.stalled_upload(port)
        data, how, t_close = c.read_until_close(timeout=6.0)
        self.assertNotEqual(how, "timeout", "a request body stalled after 10 of 100 bytes "
                            "was not cut off by -body-timeout 1s within 6 s")
        took = t_close - c.connect_time
        self.report("stalled upload cut off after", took * 1000)
        self.assertGreaterEqual(took, 0.5, "stalled upload closed before the body timeout")
        self.assertLessEqual(took, 5.0, "stalled upload closed %.1fs after the last byte, "
                             "body timeout 1s" % took)
        self.assertTrue(statuses(data) in ([], [408], [400]),
                        "stalled upload: unexpected answer %r" % data[:600])
        self.assert_still_serving(p, port, "a stalled upload")

    def test_client_not_reading_closed_at_send_timeout(self):
        p, port = self.start_server(*self.TIMEOUT_FLAGS)
        # 100,000 pipelined GET / (3.5 MB) ask for about 13 MB of responses:
        # more than the kernel's socket buffers on both sides can hold.
        n = 100000
        first = 1000
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        # A small receive buffer (set before connect) so the server's writes
        # block early once the client stops reading.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
        s.settimeout(10.0)
        s.connect((gracetest.HOST, port))
        c = gracetest.HttpConn.__new__(gracetest.HttpConn)
        c.sock, c.connect_time, c.buf, c.closed = s, now(), b"", None
        self.conns.append(c)
        sender = threading.Thread(target=c.try_send, args=(request("/") * n,), daemon=True)
        sender.start()
        # The connection works: the first responses arrive...
        for i in range(first):
            try:
                r = c.read_response(timeout=5.0)
            except AssertionError as e:
                self.fail("pipelined response %d of %d (read normally) failed: %s"
                          % (i + 1, first, e))
            self.assertEqual(r.status, 200, "pipelined response %d: %r" % (i + 1, r))
        # ...then the client reads nothing for 4 s: a server with a 1 s send
        # timeout gives up on it meanwhile.
        time.sleep(4.0)
        data, how, _ = c.read_until_close(timeout=5.0)
        sender.join(5.0)
        got = first + len(statuses(data))
        self.report("responses received before the cut", got, unit="")
        self.assertNotEqual(how, "timeout",
                            "a client that read nothing for 4 s was not cut off by "
                            "-send-timeout 1s (received %d of %d responses, the "
                            "connection still open)" % (got, n))
        self.assertLess(got, n, "every response was delivered to a client that "
                        "stopped reading for 4 s: no send timeout")
        self.assert_still_serving(p, port, "a client that does not read")

    def test_drain_cuts_stalled_upload_exit_0_reports_cut(self):
        p, port = self.start_server(*self.TIMEOUT_FLAGS, "-shutdown-timeout", "10s")
        c = self.stalled_upload(port)
        time.sleep(0.3)
        t_sig = p.send_signal(signal.SIGINT)
        rc = p.wait_exit(12.0)
        took = p.exit_time - t_sig
        self.report("signal -> exit with a stalled upload", took * 1000)
        self.assertEqual(rc, 0, "drain with a stalled upload must end at the body "
                         "timeout and exit 0")
        self.assertLess(took, bound(3.0, 4.0), "the stalled upload held the drain "
                        "%.1fs (body timeout 1s, shutdown timeout 10s)" % took)
        data, how, _ = c.read_until_close(timeout=2.0)
        self.assertNotEqual(how, "timeout")
        counts = cut_counts(p.lines())
        self.assertTrue(any(n > 0 for n in counts),
                        "the drain report does not count the cut upload (want a "
                        "nonzero number next to 'cut'); log:\n%s" % p.stderr_text())


if __name__ == "__main__":
    gracetest.main()
