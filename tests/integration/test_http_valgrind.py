"""examples/http-sleep-server under valgrind: a graceful shutdown leaks nothing.

The server serves keep-alive requests, bad requests, keeps an idle keep-alive
connection and a /sleep in flight, gets SIGTERM, finishes the request and must
exit 0 with no memory error and no definite or indirect leak.  Skipped in
sanitizer builds (valgrind cannot run sanitized programs).
"""

import re
import shutil
import sys
import signal
import time

import gracetest
from gracetest import free_port, request

SERVER = "http-sleep-server"
VALGRIND = ["valgrind", "--leak-check=full", "--errors-for-leak-kinds=definite,indirect",
            "--error-exitcode=99"]


class HttpValgrind(gracetest.ProgramTestCase):

    def setUp(self):
        super().setUp()
        if gracetest.SANITIZE or gracetest.TSAN:
            self.skipTest("valgrind does not mix with sanitizers "
                          "(GRACE_SANITIZE=1 or GRACE_TSAN=1): run it on a plain build")
        self.assertIsNotNone(shutil.which("valgrind"), "valgrind is not installed")

    def test_graceful_shutdown_under_valgrind_is_clean(self):
        port = free_port()
        p = self.start(SERVER, "-addr", "127.0.0.1:%d" % port, "-loops", "2",
                       wrapper=VALGRIND)
        p.wait_port(port, timeout=60.0)

        # Keep-alive requests, including errors, on one connection; it stays
        # open and idle through the shutdown.
        idle = self.conn(port, timeout=20.0)
        for path, status in [("/", 200), ("/sleep?duration=10ms", 200), ("/nope", 404),
                             ("/sleep?duration=abc", 400), ("/", 200)]:
            idle.send(request(path))
            r = idle.read_response(timeout=20.0)
            self.assertEqual(r.status, status, path)
        # Malformed and oversized requests.
        data, how, _ = gracetest.exchange(port, b"NOT HTTP AT ALL\r\n\r\n", timeout=20.0)
        self.assertRegex(data, rb"^HTTP/1\.[01] 400 ")
        big = request("/", headers=[("X-Big-%d" % i, "v" * 1000) for i in range(100)])
        self.assertEqual(gracetest.exchange_response(port, big, timeout=20.0).status, 431)
        r = gracetest.exchange_response(
            port, b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                  b"Connection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n", timeout=20.0)
        self.assertEqual(r.status, 200)

        busy = self.conn(port, timeout=20.0)
        busy.send(request("/sleep?duration=3s"))
        time.sleep(1.0)
        p.send_signal(signal.SIGTERM)

        idle.expect_close(timeout=10.0)
        r = busy.read_response(timeout=20.0)
        self.assertEqual((r.status, r.body), (200, b"Welcome HTTP Server"))
        self.assertTrue(r.has_token("connection", "close"))
        rc = p.wait_exit(60.0)

        self.assertEqual(p.messages(), ["Shutdown Server...", "Stopped serving new connections",
                                        "HTTP server graceful shutdown completed"])
        self.assert_valgrind_clean(p, rc)


if __name__ == "__main__":
    gracetest.main()
