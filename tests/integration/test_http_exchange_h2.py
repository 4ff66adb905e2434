"""One exchange model on HTTP/1.1 and HTTP/2: the handlers of
tests/programs/exchange_handlers.h (http-exchange-server, the same code the
cmocka test test_http_exchange drives over raw HTTP/1.1 sockets) reached by
real clients from Debian, curl and nghttp, over both versions.  A streamed
answer carries its trailers, statuses without a body (204, 304, HEAD) and
statuses out of range (1xx, 700: 500) come out the same on both, the
handler's framing headers never appear, and a streamed upload, paused and
resumed by its handler, is echoed byte for byte.
"""

import os
import re
import shutil
import signal
import tempfile
import unittest

import gracetest
from gracetest import free_port

NGHTTP = shutil.which("nghttp")
CURL = shutil.which("curl")

# The version flags of curl.
H1 = "--http1.1"
H2 = "--http2-prior-knowledge"


def pattern(n):
    """The first n bytes of exch_pat: byte i is (i % 251) ^ (i >> 12)."""
    return bytes(((i % 251) ^ (i >> 12)) & 0xFF for i in range(n))


def fields(text):
    """Header and trailer lines of a curl -D file: [(lower name, value)]."""
    out = []
    for line in text.splitlines():
        m = re.match(r"([!#$%&'*+.^_`|~0-9A-Za-z-]+):\s*(.*?)\s*$", line)
        if m:
            out.append((m.group(1).lower(), m.group(2)))
    return out


@unittest.skipUnless(NGHTTP and CURL, "nghttp2-client (nghttp) or curl is not installed")
class Exchange(gracetest.ProgramTestCase):
    def setUp(self):
        super().setUp()
        self.port = free_port()
        self.server = self.start("http-exchange-server", "-addr",
                                 "127.0.0.1:%d" % self.port, "-loops", "2")
        self.server.wait_port(self.port)
        self.dir = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.dir)

    def url(self, path):
        return "http://127.0.0.1:%d%s" % (self.port, path)

    def tearDown(self):
        # Every exchange ended: the server drains at once and exits 0 (and
        # a sanitizer build checks for leaks at that exit).
        if self.server.running():
            self.server.send_signal(signal.SIGTERM)
            rc = self.server.wait_exit(10.0)
            self.assertIn("HTTP server graceful shutdown completed", self.server.messages())
            self.assertEqual(rc, 0)
        super().tearDown()

    def urls(self, paths):
        """curl arguments fetching |paths| in turn, bodies discarded."""
        out = []
        for p in paths:
            out += ["-o", "/dev/null", self.url(p)]
        return out

    def curl(self, version, path, *args, timeout=30):
        """Runs curl; returns (status, fields of the head and trailers,
        body, connections opened)."""
        hdr = os.path.join(self.dir, "h")
        body = os.path.join(self.dir, "b")
        for f in (hdr, body):
            if os.path.exists(f):
                os.unlink(f)
        c = self.client(gracetest.curl(version, "-D", hdr, "-o", body, "-w",
                                       "%{http_code} %{num_connects}", *args,
                                       self.url(path)))
        self.assertEqual(c.wait(timeout), 0, c.stderr)
        status, conns = c.stdout.decode().split()
        with open(hdr) as f:
            head = fields(f.read())
        data = b""
        if os.path.exists(body):
            with open(body, "rb") as f:
                data = f.read()
        return int(status), head, data, int(conns)

    def assertNoFraming(self, version, head, body_len, streamed):
        """The only framing fields are the library's own."""
        names = [n for n, _ in head]
        self.assertNotIn("connection", names)
        if version == H2:
            self.assertNotIn("transfer-encoding", names)
            self.assertNotIn("999", [v for n, v in head if n == "content-length"])
            self.assertLessEqual(names.count("content-length"), 1)
        elif streamed:
            self.assertEqual([v for n, v in head if n == "transfer-encoding"], ["chunked"])
            self.assertNotIn("content-length", names)
        else:
            self.assertEqual([v for n, v in head if n == "content-length"], [str(body_len)])
            self.assertNotIn("transfer-encoding", names)

    def test_streamed_answer_with_trailers(self):
        n = 4 << 20
        want = pattern(n)
        for version in (H1, H2):
            status, head, body, _ = self.curl(version, "/stream?n=%d&piece=1024" % n)
            self.assertEqual(status, 200, version)
            self.assertEqual(len(body), n, version)
            self.assertTrue(body == want, "%s: body out of order" % version)
            self.assertIn(("x-trailer-one", "1"), head, version)
            self.assertIn(("x-trailer-bytes", str(n)), head, version)
            self.assertNoFraming(version, head, n, True)
        # The HTTP/2 trailers are a HEADERS frame ending the stream, after
        # the DATA frames.
        c = self.client(gracetest.Client([NGHTTP, "-v", "-n",
                                          self.url("/stream?n=100000&piece=1024")]))
        self.assertEqual(c.wait(30), 0, c.stderr)
        out = c.stdout.decode()
        # nghttp prints the fields of a HEADERS frame just before it.
        tail = out[out.rindex("recv DATA frame"):]
        self.assertNotIn("END_STREAM", tail.splitlines()[1])
        self.assertRegex(tail, r"recv HEADERS frame <length=\d+, flags=0x05")  # END_STREAM|END_HEADERS
        self.assertIn("x-trailer-bytes: 100000", tail)
        self.assertIn("x-trailer-one: 1", tail)

    def test_status_rules_same_on_both_versions(self):
        cases = [(204, 204, 0), (304, 304, 0), (101, 500, 5), (150, 500, 5),
                 (700, 500, 5), (201, 201, 5)]
        for code, want, size in cases:
            for mode in ("respond", "stream"):
                seen = []
                for version in (H1, H2):
                    status, head, body, _ = self.curl(
                        version, "/status?code=%d&mode=%s" % (code, mode))
                    what = "%s %d %s" % (version, code, mode)
                    self.assertEqual(status, want, what)
                    self.assertEqual(len(body), size, what)
                    names = [n for n, _ in head]
                    if size == 0:
                        self.assertNotIn("content-length", names, what)
                        self.assertNotIn("transfer-encoding", names, what)
                    seen.append((status, body))
                self.assertEqual(seen[0], seen[1], "%d %s" % (code, mode))
        # HEAD of a streamed answer: the head only, on both.
        for version in (H1, H2):
            c = self.client(gracetest.curl(version, "-sS", "-I", "-w", "%{size_download}",
                                           self.url("/stream?n=100000")))
            self.assertEqual(c.wait(10), 0, c.stderr)
            self.assertTrue(c.stdout.decode().endswith("\r\n\r\n0"), c.stdout)
        # On HTTP/2, no content for 204 and HEAD, streamed or not: the
        # HEADERS frame itself ends the stream (no empty DATA frame after).
        for path, extra in (("/status?code=204&mode=stream", []),
                            ("/status?code=204", []),
                            ("/stream?n=1000", ["-H", ":method: HEAD"])):
            argv = [NGHTTP, "-v", "-n", self.url(path)] + extra
            c = self.client(gracetest.Client(argv))
            self.assertEqual(c.wait(10), 0, c.stderr)
            out = c.stdout.decode()
            self.assertEqual(re.findall(r"recv DATA frame", out), [], path)
            self.assertRegex(out, r"recv HEADERS frame <length=\d+, flags=0x05, stream_id=13>",
                             path)  # END_STREAM|END_HEADERS on the answer's own stream
            self.assertIn(":status: %s" % ("204" if "204" in path else "200"), out)
        # The connection stays usable after each of them (HTTP/1.1): curl
        # sends all of them on one connection.
        paths = ["/status?code=204&mode=stream", "/status?code=304",
                 "/status?code=700&mode=stream", "/status?code=201"]
        c = self.client(gracetest.curl(H1, "-s", "-w", "%{http_code} %{num_connects}\n",
                                       *self.urls(paths)))
        self.assertEqual(c.wait(10), 0, c.stderr)
        self.assertEqual(c.stdout.decode().split("\n")[:4],
                         ["204 1", "304 0", "500 0", "201 0"])

    def test_framing_headers_of_handler_not_sent(self):
        for version in (H1, H2):
            for mode, streamed in (("respond", False), ("stream", True)):
                status, head, body, _ = self.curl(version, "/framing?mode=" + mode)
                what = "%s %s" % (version, mode)
                self.assertEqual(status, 200, what)
                self.assertEqual(body, b"hello", what)
                self.assertIn(("x-custom", "yes"), head, what)
                self.assertNoFraming(version, head, 5, streamed)
        # HTTP/1.1 keep-alive still works after them.
        c = self.client(gracetest.curl(H1, "-s", "-w", "%{http_code} %{num_connects}\n",
                                       *self.urls(["/framing?mode=respond",
                                                   "/framing?mode=stream",
                                                   "/status?code=200"])))
        self.assertEqual(c.wait(10), 0, c.stderr)
        self.assertEqual(c.stdout.decode().split("\n")[:3], ["200 1", "200 0", "200 0"])

    def test_streamed_upload_echoed(self):
        n = 1 << 20
        data = pattern(n)
        path = os.path.join(self.dir, "upload")
        with open(path, "wb") as f:
            f.write(data)
        runs = [(H1, []), (H1, ["-H", "Transfer-Encoding: chunked"]), (H2, [])]
        for version, extra in runs:
            status, head, body, _ = self.curl(version, "/upload", "--data-binary",
                                              "@" + path, *extra)
            what = "%s %s" % (version, extra)
            self.assertEqual(status, 200, what)
            self.assertEqual(len(body), n, what)
            self.assertTrue(body == data, "%s: echo out of order" % what)
            self.assertIn(("x-body-bytes", str(n)), head, what)
        # nghttp, another HTTP/2 client, uploads too.
        c = self.client(gracetest.Client([NGHTTP, "-d", path, self.url("/upload")]))
        self.assertEqual(c.wait(30), 0, c.stderr)
        self.assertTrue(c.stdout == data, "nghttp: echo differs")

    def test_header_order_and_peer_on_h2(self):
        status, head, body, _ = self.curl(H2, "/headers", "-H", "X-Rep: one",
                                          "-H", "X-Other: o", "-H", "X-Rep: two")
        self.assertEqual(status, 200)
        lines = body.decode().splitlines()
        got = [l for l in lines if l.startswith(("x-rep", "x-other"))]
        self.assertEqual(got, ["x-rep: one", "x-other: o", "x-rep: two"])
        self.assertRegex(lines[-1], r"^peer: 127\.0\.0\.1 \d+$")


if __name__ == "__main__":
    gracetest.main()
