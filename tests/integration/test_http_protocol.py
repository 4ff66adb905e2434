"""HTTP/1.x behaviour of examples/http-sleep-server with raw sockets.

Keep-alive, pipelining, HTTP/1.0, request bodies, routes, Go's error texts,
malformed input, size limits and timeouts, concurrency, and the command line.
Each bad-input case runs beside a normal client that must keep getting 200.
"""

import re
import threading
import time

import gracetest
from gracetest import BackgroundClient, bound, free_port, now, request

SERVER = "http-sleep-server"
HELLO = b"Hello, World!\n"
WELCOME = b"Welcome HTTP Server"
NOT_FOUND = b"404 page not found\n"


class HttpProtocol(gracetest.ProgramTestCase):

    def start_server(self, *flags):
        port = free_port()
        p = self.start(SERVER, "-addr", "127.0.0.1:%d" % port, *flags)
        p.wait_port(port)
        return p, port

    def tearDown(self):
        # Nothing here may have made the server exit or log anything.
        try:
            for p in self.programs:
                self.assertTrue(p.running(), "%s exited during the test" % p.name)
                self.assertEqual(p.lines(), [], "%s logged something" % p.name)
        finally:
            super().tearDown()

    # -- connection reuse -------------------------------------------------

    def test_keepalive_several_requests_on_one_connection(self):
        _, port = self.start_server()
        c = self.conn(port)
        expect = [("/", 200, HELLO), ("/sleep?duration=10ms", 200, WELCOME),
                  ("/nope", 404, NOT_FOUND), ("/", 200, HELLO),
                  ("/sleep?duration=abc", 400, b'time: invalid duration "abc"\n'),
                  ("/", 200, HELLO)]
        for path, status, body in expect:
            c.send(request(path))
            r = c.read_response()
            self.assertEqual((r.status, r.body), (status, body), path)
            self.assertEqual(r.version, "HTTP/1.1")
            self.assertFalse(r.has_token("connection", "close"), r)
        self.assertIsNone(c.closed)

    def test_pipelining_three_requests_in_one_write_answered_in_order(self):
        _, port = self.start_server()
        c = self.conn(port)
        # The first is the slowest: its answer must still come first.
        c.send(request("/sleep?duration=300ms") + request("/") + request("/nope"))
        r1, r2, r3 = (c.read_response(timeout=3.0) for _ in range(3))
        self.assertEqual((r1.status, r1.body), (200, WELCOME))
        self.assertEqual((r2.status, r2.body), (200, HELLO))
        self.assertEqual((r3.status, r3.body), (404, NOT_FOUND))
        # Still usable afterwards.
        c.send(request("/"))
        self.assertEqual(c.read_response().body, HELLO)

    def test_http11_connection_close_is_honoured(self):
        _, port = self.start_server()
        c = self.conn(port)
        c.send(request("/", headers=[("Connection", "close")]))
        r = c.read_response()
        self.assertEqual((r.status, r.body), (200, HELLO))
        self.assertTrue(r.has_token("connection", "close"), r)
        c.expect_close(timeout=1.0)

    def test_http10_closes_by_default(self):
        _, port = self.start_server()
        c = self.conn(port)
        c.send(request("/", version="HTTP/1.0"))
        r = c.read_response()
        self.assertEqual((r.status, r.body), (200, HELLO))
        self.assertTrue(r.version.startswith("HTTP/1."))
        self.assertFalse(r.has_token("connection", "keep-alive"), r)
        c.expect_close(timeout=1.0)

    def test_http10_keepalive_when_asked(self):
        _, port = self.start_server()
        c = self.conn(port)
        ka = [("Connection", "keep-alive")]
        for path, status, body in [("/", 200, HELLO), ("/sleep?duration=10ms", 200, WELCOME)]:
            c.send(request(path, version="HTTP/1.0", headers=ka))
            r = c.read_response()
            self.assertEqual((r.status, r.body), (status, body))
            # An HTTP/1.0 client keeps the connection only when told so.
            self.assertTrue(r.has_token("connection", "keep-alive"), r)
            self.assertEqual(r.header("content-length"), str(len(body)))
        # The last one without keep-alive: closed after it.
        c.send(request("/", version="HTTP/1.0"))
        self.assertEqual(c.read_response().body, HELLO)
        c.expect_close(timeout=1.0)

    # -- request bodies -----------------------------------------------------

    def test_post_chunked_body_accepted(self):
        _, port = self.start_server()
        c = self.conn(port)
        chunked = (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                   b"5\r\nhello\r\n6;ext=1\r\n world\r\n10\r\n" + b"x" * 16 +
                   b"\r\n0\r\nX-Trailer: t\r\n\r\n")
        # The request after the body proves the body was consumed exactly.
        c.send(chunked + request("/nope"))
        r = c.read_response()
        self.assertEqual((r.status, r.body), (200, HELLO))
        self.assertEqual(c.read_response().status, 404)
        # Byte at a time, too.
        for i in range(len(chunked)):
            c.send(chunked[i:i + 1])
        self.assertEqual(c.read_response().body, HELLO)

    def test_post_content_length_body_accepted(self):
        _, port = self.start_server()
        c = self.conn(port)
        body = bytes(range(256)) * 4
        req = request("/", method="POST", body=body,
                      headers=[("Content-Type", "application/octet-stream")])
        head, body_part = req[:-len(body)], req[-len(body):]
        c.send(head)
        time.sleep(0.05)
        c.send(body_part[:100])
        time.sleep(0.05)
        c.send(body_part[100:] + request("/nope"))
        r = c.read_response()
        self.assertEqual((r.status, r.body), (200, HELLO))
        self.assertEqual(c.read_response().status, 404)

    # -- routes and Go's error texts -----------------------------------------

    def test_sleep_ok_headers(self):
        _, port = self.start_server()
        t0 = now()
        r = gracetest.get(port, "/sleep?duration=150ms")
        self.assertGreaterEqual(now() - t0, 0.14)
        self.assertEqual((r.status, r.body), (200, WELCOME))
        self.assertEqual(r.header("content-type"), "text/plain; charset=utf-8")
        self.assertEqual(r.header("content-length"), str(len(WELCOME)))

    def test_unknown_paths_404(self):
        _, port = self.start_server()
        for path in ("/nope", "/favicon.ico", "/sleep/extra", "/sleepy"):
            r = gracetest.get(port, path)
            self.assertEqual((r.status, r.body), (404, NOT_FOUND), path)

    def test_bad_duration_400_with_go_error_text(self):
        _, port = self.start_server()
        cases = [("/sleep?duration=abc", b'time: invalid duration "abc"\n'),
                 ("/sleep", b'time: invalid duration ""\n'),
                 ("/sleep?duration=", b'time: invalid duration ""\n'),
                 ("/sleep?duration=5", b'time: missing unit in duration "5"\n'),
                 ("/sleep?duration=5x", b'time: unknown unit "x" in duration "5x"\n')]
        with BackgroundClient(port):
            for path, body in cases:
                r = gracetest.get(port, path)
                self.assertEqual((r.status, r.body), (400, body), path)

    # -- malformed input and limits ---------------------------------------------

    def test_garbage_request_line_400_then_close(self):
        _, port = self.start_server()
        with BackgroundClient(port):
            data, how, _ = gracetest.exchange(port, b"THIS IS NOT HTTP\r\n\r\n", timeout=3.0)
            self.assertNotEqual(how, "timeout", "connection not closed after a garbage request")
            self.assertRegex(data, rb"^HTTP/1\.[01] 400 ")

    def test_100kb_of_headers_431(self):
        _, port = self.start_server()
        with BackgroundClient(port):
            headers = [("X-Filler-%d" % i, "v" * 1000) for i in range(100)]
            r = gracetest.exchange_response(port, request("/", headers=headers), timeout=3.0)
            self.assertEqual(r.status, 431, r)

    def test_body_over_max_body_bytes_413(self):
        _, port = self.start_server("-max-body-bytes", "1000")
        close = [("Connection", "close")]
        with BackgroundClient(port):
            r = gracetest.exchange_response(
                port, request("/", method="POST", body=b"a" * 1000, headers=close))
            self.assertEqual((r.status, r.body), (200, HELLO), "a body at the limit is fine")
            r = gracetest.exchange_response(
                port, request("/", method="POST", body=b"a" * 1001, headers=close))
            self.assertEqual(r.status, 413, r)
            r = gracetest.exchange_response(
                port, request("/", method="POST", body=b"a" * 5000, headers=close))
            self.assertEqual(r.status, 413, r)
            chunked = (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                       b"Connection: close\r\n\r\n" +
                       (b"1f4\r\n" + b"b" * 500 + b"\r\n") * 3 + b"0\r\n\r\n")
            r = gracetest.exchange_response(port, chunked)
            self.assertEqual(r.status, 413, r)

    # -- timeouts ---------------------------------------------------------------

    def test_slow_header_client_closed_at_read_header_timeout(self):
        _, port = self.start_server("-read-header-timeout", "1s")
        with BackgroundClient(port):
            c = self.conn(port)
            stop = threading.Event()

            def drip():
                for b in request("/"):
                    if not c.try_send(bytes([b])) or stop.wait(1.0):
                        return
            t = threading.Thread(target=drip, daemon=True)
            t.start()
            try:
                data, how, t_close = c.read_until_close(timeout=5.0)
            finally:
                stop.set()
                t.join(3.0)
            self.assertNotEqual(how, "timeout", "slow client never cut off")
            took = t_close - c.connect_time
            self.report("slow client cut off after", took * 1000)
            self.assertGreaterEqual(took, 0.9)
            self.assertLessEqual(took, 2.5)
            # Closed silently, or with 408 (RFC 9110 15.5.9), or 400 as Go 1.19 does.
            self.assertTrue(data == b"" or re.match(rb"HTTP/1\.1 40[08] ", data), data)

    def test_idle_keepalive_closed_at_idle_timeout(self):
        _, port = self.start_server("-idle-timeout", "1s")
        with BackgroundClient(port):
            c = self.conn(port)
            c.send(request("/"))
            c.read_response()
            time.sleep(0.5)
            # A request within the idle timeout is served and restarts it.
            c.send(request("/"))
            r = c.read_response()
            self.assertEqual(r.body, HELLO)
            t_eof = c.expect_close(timeout=4.0)
            idle = t_eof - r.t_done
            self.report("idle connection closed after", idle * 1000)
            self.assertGreaterEqual(idle, 0.9)
            self.assertLessEqual(idle, 2.5)

    # -- concurrency ------------------------------------------------------------

    def concurrent_sleeps(self, *flags):
        _, port = self.start_server(*flags)
        conns = [self.conn(port) for _ in range(10)]
        results = [None] * len(conns)

        def one(i):
            try:
                results[i] = conns[i].read_response(timeout=5.0)
            except AssertionError as e:
                results[i] = e
        t0 = now()
        for c in conns:
            c.send(request("/sleep?duration=1s"))
        threads = [threading.Thread(target=one, args=(i,)) for i in range(len(conns))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10.0)
        total = now() - t0
        self.report("10 concurrent 1s sleeps %s" % " ".join(flags), total * 1000)
        for r in results:
            self.assertIsInstance(r, gracetest.Response)
            self.assertEqual((r.status, r.body), (200, WELCOME))
            self.assertGreaterEqual(r.t_done - t0, 0.95)
        self.assertLess(total, bound(1.8, 2.5))

    def test_sleeping_requests_do_not_block_each_other(self):
        self.concurrent_sleeps()

    def test_sleeping_requests_do_not_block_each_other_one_loop(self):
        self.concurrent_sleeps("-loops", "1")


class HttpFlags(gracetest.ProgramTestCase):

    def run_flags(self, *args):
        return gracetest.run_program(SERVER, args, timeout=bound(5.0, 15.0))

    def assert_exit_2(self, args, *needles):
        p = self.run_flags(*args)
        err = p.stderr_text()
        self.assertEqual(p.returncode, 2, err)
        for n in needles:
            self.assertIn(n, err)
        return err

    def test_addr_without_port(self):
        self.assert_exit_2(["-addr", "127.0.0.1"], "127.0.0.1", "missing port")

    def test_bad_shutdown_timeout(self):
        self.assert_exit_2(["-shutdown-timeout", "abc"],
                           'invalid value "abc" for flag -shutdown-timeout')

    def test_unknown_flag(self):
        err = self.assert_exit_2(["-nope"], "flag provided but not defined: -nope")
        self.assertIn("-shutdown-timeout", err, "no usage printed")

    def test_help_exit_0(self):
        p = self.run_flags("-h")
        self.assertEqual(p.returncode, 0)
        text = p.stderr_text() + "\n".join(l.text for l in p.stdout_lines())
        for flag in ("-addr", "-shutdown-timeout", "-read-header-timeout", "-idle-timeout",
                     "-max-header-bytes", "-max-body-bytes", "-loops"):
            self.assertIn(flag, text)


if __name__ == "__main__":
    gracetest.main()
