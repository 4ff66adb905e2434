"""examples/embedded-server: the HTTP server on the program's own libuv loop.

SIGTERM mid-request: the request completes (with "Connection: close"), the
idle keep-alive connection is closed at once, new connections are refused,
the program's own periodic timer kept running on the same loop, and the
process exits 0 once the server has left nothing on the loop (uv_loop_close
succeeded, or the program would exit 1).  The deadline cuts a request that
outlives it (exit 1), a second signal exits 1 at once, and under valgrind a
graceful shutdown leaks nothing.
"""

import re
import shutil
import signal
import sys
import time

import gracetest
from gracetest import bound, free_port, request

SERVER = "embedded-server"
VALGRIND = ["valgrind", "--leak-check=full", "--errors-for-leak-kinds=definite,indirect",
            "--error-exitcode=99"]

SHUTDOWN = "Shutdown Server..."
STOPPED = "Stopped serving new connections"
COMPLETED = "HTTP server graceful shutdown completed"
DEADLINE = "HTTP server Shutdown: context deadline exceeded"


class EmbeddedServer(gracetest.ProgramTestCase):

    def start_server(self, *flags, wrapper=(), timeout=10.0):
        port = free_port()
        p = self.start(SERVER, "-addr", "127.0.0.1:%d" % port, *flags, wrapper=wrapper)
        p.wait_port(port, timeout=timeout)
        return p, port

    def ticks(self, p):
        m = [re.match(r"Periodic work ran (\d+) time", t) for t in p.messages()]
        m = [x for x in m if x]
        self.assertEqual(len(m), 1, p.messages())
        return int(m[0].group(1))

    def scenario(self, p, port, timeout=5.0):
        idle = self.conn(port, timeout=timeout)
        idle.send(request("/"))
        r = idle.read_response(timeout=timeout)
        self.assertEqual((r.status, r.body), (200, b"Hello, World!\n"))
        busy = self.conn(port, timeout=timeout)
        busy.send(request("/sleep?duration=1500ms"))
        time.sleep(0.5)
        p.send_signal(signal.SIGTERM)
        # The idle keep-alive connection is closed at once, while the
        # request in flight goes on; no new connection is accepted.
        idle.expect_close(timeout=timeout)
        r = busy.read_response(timeout=timeout + 5.0)
        self.assertEqual((r.status, r.body), (200, b"Welcome HTTP Server"))
        self.assertTrue(r.has_token("connection", "close"))
        busy.expect_close(timeout=timeout)
        self.assertIsNotNone(gracetest.connect_error(port))

    def test_sigterm_mid_request_completes_and_exits_0(self):
        p, port = self.start_server("-tick", "20ms")
        self.scenario(p, port)
        self.assertEqual(p.wait_exit(5.0), 0)
        msgs = p.messages()
        self.assertEqual(msgs[:3], [SHUTDOWN, STOPPED, COMPLETED])
        # The program's own timer ran on the loop the whole time, the
        # 1.5 s of the drain included (every 20 ms: about 100 runs).
        self.assertGreater(self.ticks(p), 40)

    def test_deadline_cuts_the_request_exit_1(self):
        p, port = self.start_server("-shutdown-timeout", "300ms")
        busy = self.conn(port)
        busy.send(request("/sleep?duration=30s"))
        time.sleep(0.3)
        t_sig = p.send_signal(signal.SIGTERM)
        busy.expect_close(timeout=5.0)
        self.assertEqual(p.wait_exit(5.0), 1)
        lag = p.exit_time - t_sig
        self.assertGreater(lag, 0.25)
        self.assertLess(lag, 0.3 + bound(0.5, 2.0))
        self.assertEqual(p.messages()[:4], [SHUTDOWN, STOPPED, DEADLINE,
                                            "HTTP server closed: 1 request(s) cut"])

    def test_second_signal_exits_1_at_once(self):
        p, port = self.start_server()
        busy = self.conn(port)
        busy.send(request("/sleep?duration=30s"))
        time.sleep(0.3)
        p.send_signal(signal.SIGTERM)
        p.wait_line(re.escape(STOPPED))
        p.send_signal(signal.SIGINT)
        self.assertEqual(p.wait_exit(5.0), 1)
        data, how, _ = busy.read_until_close(timeout=5.0)
        self.assertEqual(data, b"")
        self.assertNotEqual(how, "timeout")

    def test_graceful_shutdown_under_valgrind_is_clean(self):
        if gracetest.SANITIZE or gracetest.TSAN:
            self.skipTest("valgrind does not mix with sanitizers "
                          "(GRACE_SANITIZE=1 or GRACE_TSAN=1): run it on a plain build")
        self.assertIsNotNone(shutil.which("valgrind"), "valgrind is not installed")
        p, port = self.start_server("-tick", "50ms", wrapper=VALGRIND, timeout=60.0)
        self.scenario(p, port, timeout=20.0)
        rc = p.wait_exit(60.0)
        self.assertEqual(p.messages()[:3], [SHUTDOWN, STOPPED, COMPLETED])
        self.assert_valgrind_clean(p, rc)


if __name__ == "__main__":
    gracetest.main()
