"""HTTP/2 cleartext (prior knowledge) on http-sleep-server's port, driven by
real HTTP/2 clients from Debian (nghttp, h2load, curl): requests are served
beside HTTP/1.1 on the same listener, and graceful shutdown sends the
two-phase GOAWAY (2^31-1 and a PING, then the real last stream id once the
PING is acknowledged) while the stream in flight completes.
"""

import errno
import os
import re
import shutil
import signal
import tempfile
import time
import unittest

import gracetest
from gracetest import bound, free_port

NGHTTP = shutil.which("nghttp")
H2LOAD = shutil.which("h2load")


def frames(text):
    """The frames an `nghttp -v` run received, in order, as (kind, detail)."""
    out = []
    lines = text.splitlines()
    for i, line in enumerate(lines):
        m = re.search(r"recv (\w+) frame <[^>]*stream_id=(\d+)>", line)
        if not m:
            continue
        detail = lines[i + 1] if i + 1 < len(lines) else ""
        out.append((m.group(1), int(m.group(2)), detail.strip()))
    return out


@unittest.skipUnless(NGHTTP and H2LOAD, "nghttp2-client (nghttp, h2load) is not installed")
class Http2(gracetest.ProgramTestCase):
    def start_server(self, *extra):
        port = free_port()
        p = self.start("http-sleep-server", "-addr", "127.0.0.1:%d" % port, *extra)
        p.wait_port(port)
        return p, port

    def tmpdir(self):
        d = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, d)
        return d

    def test_get_and_bad_duration_over_h2c(self):
        p, port = self.start_server("-max-body-bytes", "1000")
        c = self.client(gracetest.Client(["curl", "-s", "-i", "--http2-prior-knowledge",
                         "http://127.0.0.1:%d/sleep?duration=10ms" % port]))
        self.assertEqual(c.wait(10), 0)
        self.assertTrue(c.stdout.startswith(b"HTTP/2 200"), c.stdout)
        self.assertTrue(c.stdout.endswith(b"\r\n\r\nWelcome HTTP Server"), c.stdout)
        c = self.client(gracetest.Client(["curl", "-s", "-i", "--http2-prior-knowledge",
                         "http://127.0.0.1:%d/sleep?duration=abc" % port]))
        self.assertEqual(c.wait(10), 0)
        self.assertTrue(c.stdout.startswith(b"HTTP/2 400"), c.stdout)
        self.assertIn(b'time: invalid duration "abc"\n', c.stdout)
        # A body over -max-body-bytes: 413, as over HTTP/1.1.
        body = os.path.join(self.tmpdir(), "body")
        with open(body, "wb") as f:
            f.write(b"x" * 5000)
        # nghttp, not curl: the 413 goes out before the whole body is read,
        # then RST_STREAM(NO_ERROR) asks the client to stop sending (RFC 9113
        # 8.1, as Go does); curl 7.88 sometimes drops the response when that
        # reset arrives during its upload, nghttp never does.
        c = self.client(gracetest.Client([NGHTTP, "-v", "-d", body,
                                          "http://127.0.0.1:%d/" % port]))
        self.assertEqual(c.wait(10), 0)
        self.assertIn(":status: 413", c.stdout.decode())
        # HTTP/1.1 still works on the same port.
        r = gracetest.get(port, "/")
        self.assertEqual(r.status, 200)

    def test_h2load_many_streams(self):
        p, port = self.start_server()
        c = self.client(gracetest.Client([H2LOAD, "-n", "20000", "-c", "8", "-m", "16", "-t", "2",
                         "http://127.0.0.1:%d/" % port]))
        self.assertEqual(c.wait(60), 0, c.stderr)
        out = c.stdout.decode()
        self.assertIn("20000 succeeded, 0 failed, 0 errored", out)
        self.assertIn("status codes: 20000 2xx", out)

    def test_graceful_shutdown_two_phase_goaway(self):
        p, port = self.start_server()
        c = self.client(gracetest.Client([NGHTTP, "-v", "-n",
                         "http://127.0.0.1:%d/sleep?duration=600ms" % port]))
        time.sleep(0.25)
        t_sig = p.send_signal(signal.SIGTERM)
        rc = p.wait_exit(5.0)
        self.assertEqual(c.wait(5.0), 0, c.stderr)
        self.assertEqual(rc, 0)
        self.assertEqual(p.messages(), ["Shutdown Server...",
                                        "Stopped serving new connections",
                                        "HTTP server graceful shutdown completed"])
        got = [(k, d) for k, sid, d in frames(c.stdout.decode()) if k in
               ("GOAWAY", "PING", "HEADERS", "DATA")]
        kinds = [k for k, _ in got]
        # GOAWAY(2^31-1), PING, final GOAWAY(last stream), then the answer.
        self.assertEqual(kinds[:3], ["GOAWAY", "PING", "GOAWAY"], got)
        self.assertIn("last_stream_id=2147483647", got[0][1])
        self.assertIn("error_code=NO_ERROR", got[0][1])
        self.assertIn("opaque_data=0106010800030309", got[1][1])
        self.assertRegex(got[2][1], r"last_stream_id=\d+,")
        self.assertNotIn("2147483647", got[2][1])
        self.assertEqual(kinds[3:5], ["HEADERS", "DATA"], got)
        self.assertRegex(c.stdout.decode(),
                         r"recv DATA frame <length=19, flags=0x01, stream_id=13>")
        # The process exits as soon as the stream is done: no straggler wait.
        self.assertGreater(p.exit_time - t_sig, 0.25)
        self.assertLess(p.exit_time - t_sig, 0.35 + bound(0.2, 0.6))

    def test_new_connection_refused_after_signal(self):
        p, port = self.start_server()
        c = self.client(gracetest.Client([NGHTTP, "-n",
                         "http://127.0.0.1:%d/sleep?duration=800ms" % port]))
        time.sleep(0.25)
        p.send_signal(signal.SIGTERM)
        p.wait_line("Stopped serving new connections", timeout=2.0)
        self.assertEqual(gracetest.connect_error(port), errno.ECONNREFUSED)
        self.assertEqual(c.wait(5.0), 0)
        self.assertEqual(p.wait_exit(5.0), 0)

    def test_second_signal_cuts_h2_stream(self):
        p, port = self.start_server()
        c = self.client(gracetest.Client(["curl", "-s", "--http2-prior-knowledge",
                         "http://127.0.0.1:%d/sleep?duration=5s" % port]))
        time.sleep(0.25)
        p.send_signal(signal.SIGTERM)
        p.wait_line("Stopped serving new connections", timeout=2.0)
        p.send_signal(signal.SIGINT)
        self.assertEqual(p.wait_exit(2.0), 1)
        self.assertNotEqual(c.wait(5.0), 0)
        self.assertEqual(c.stdout, b"")


if __name__ == "__main__":
    gracetest.main()
