"""greeter-server against real gRPC peers: Debian's python3-grpcio client
(this test runs under /usr/bin/python3, which has it), nghttp for the exact
HTTP/2 frames of a graceful stop, curl for plain-HTTP misuse of gRPC paths.

Covers the seed's scenario (a call in flight across SIGTERM completes, the
server logs the seed's lines and exits 0 right after the reply), two
signals, the two-phase GOAWAY, refused connections and calls after the stop
began, deadlines, cancellation, server streaming (health Watch), health
Check, the escalating -shutdown-timeout, bad input, and valgrind.
"""

import errno
import gzip
import os
import re
import shutil
import signal
import struct
import tempfile
import time
import unittest

import gracetest
from gracetest import bound, free_port

from grpctest import IDENT, GrpcTestCase, grpc, needs_grpc

NGHTTP = shutil.which("nghttp")
VALGRIND = shutil.which("valgrind")

SHUTDOWN = "Shutdown Server..."
DONE = "gRPC server graceful shutdown completed"


def pb_string(field, s):
    b = s.encode()
    return bytes([field << 3 | 2, len(b)]) + b


def hello_request(name="world", duration=""):
    return pb_string(1, name) + (pb_string(2, duration) if duration else b"")


def hello_reply_message(b):
    assert b[0] == 0x0A, b
    return b[2:2 + b[1]].decode()


def health_request(service=""):
    return pb_string(1, service) if service else b""


def health_status(b):
    return b[1] if len(b) >= 2 and b[0] == 0x08 else 0


def framed(msg):
    return struct.pack(">BI", 0, len(msg)) + msg



@needs_grpc
class GreeterServer(GrpcTestCase):
    def start_server(self, *extra, wrapper=()):
        port = free_port()
        p = self.start("greeter-server", "-port", str(port), *extra, wrapper=wrapper)
        p.wait_port(port, timeout=30.0 if wrapper else 10.0)
        return p, port

    def say_hello(self, ch):
        return ch.unary_unary("/Greeter/SayHello", request_serializer=IDENT,
                              response_deserializer=IDENT)

    def test_seed_scenario_call_survives_sigterm(self):
        p, port = self.start_server()
        ch = self.channel(port)
        fut = self.say_hello(ch).future(hello_request("world", "1500ms"), timeout=60)
        p.wait_line("Received: world", timeout=5.0)
        time.sleep(0.5)
        t_sig = p.send_signal(signal.SIGTERM)
        reply = fut.result(timeout=10)
        t_reply = gracetest.now()
        self.assertEqual(hello_reply_message(reply), "Hello world")
        self.assertEqual(p.wait_exit(5.0), 0)
        lag = p.exit_time - t_reply
        print("    measured: exit after the reply = %.1f ms" % (lag * 1000))
        self.assertLess(lag, bound(0.1, 0.3))
        self.assertGreater(p.exit_time - t_sig, 0.8)
        msgs = p.messages()
        self.assertEqual(msgs[-2:], [SHUTDOWN, DONE], msgs)
        self.assertIn("Received: world", msgs)
        self.assertRegex(msgs[0], r"^server listening at \[::\]:%d$" % port)

    def test_seed_scenario_with_greeter_client(self):
        # The seed, both halves ours: a 3 s call, SIGTERM after 0.5 s.
        p, port = self.start_server()
        c = self.start("greeter-client", "-addr", "localhost:%d" % port,
                       "-name", "world", "-duration", "3s", "-timeout", "60s")
        p.wait_line("Received: world", timeout=5.0)
        time.sleep(0.5)
        p.send_signal(signal.SIGTERM)
        self.assertEqual(c.wait_exit(10.0), 0, c.stderr_text())
        self.assertEqual(c.messages(), ["Greeting: Hello world"])
        self.assertEqual(p.wait_exit(5.0), 0)
        lag = p.exit_time - c.exit_time
        print("    measured: server exit - client exit = %.1f ms" % (lag * 1000))
        self.assertLess(lag, bound(0.1, 0.3))
        self.assertEqual(p.messages()[-2:], [SHUTDOWN, DONE])

    def test_two_signals_greeter_client_fails_unavailable(self):
        p, port = self.start_server()
        c = self.start("greeter-client", "-addr", "localhost:%d" % port,
                       "-duration", "10s")
        p.wait_line("Received: world", timeout=5.0)
        p.send_signal(signal.SIGTERM)
        p.wait_line(re.escape(SHUTDOWN), timeout=2.0)
        p.send_signal(signal.SIGINT)
        self.assertEqual(p.wait_exit(3.0), 1)
        self.assertEqual(c.wait_exit(5.0), 1)
        msgs = c.messages()
        self.assertEqual(len(msgs), 1, msgs)
        self.assertRegex(msgs[0], r"^could not greet: rpc error: code = (Unavailable|Internal) desc = ")

    def test_two_signals_exit_1_call_fails(self):
        p, port = self.start_server()
        ch = self.channel(port)
        fut = self.say_hello(ch).future(hello_request("world", "5s"), timeout=60)
        p.wait_line("Received: world", timeout=5.0)
        p.send_signal(signal.SIGTERM)
        p.wait_line(re.escape(SHUTDOWN), timeout=2.0)
        p.send_signal(signal.SIGINT)
        self.assertEqual(p.wait_exit(3.0), 1)
        with self.assertRaises(grpc.RpcError) as cm:
            fut.result(timeout=10)
        self.assertIn(cm.exception.code(), (grpc.StatusCode.UNAVAILABLE,
                                            grpc.StatusCode.INTERNAL,
                                            grpc.StatusCode.UNKNOWN))
        self.assertNotIn(DONE, p.messages())

    @unittest.skipUnless(NGHTTP, "nghttp is not installed")
    def test_graceful_stop_frames_two_phase_goaway(self):
        p, port = self.start_server()
        with tempfile.NamedTemporaryFile(suffix=".bin", delete=False) as f:
            f.write(framed(hello_request("world", "700ms")))
            payload = f.name
        self.addCleanup(os.unlink, payload)
        c = self.client(gracetest.Client([
            NGHTTP, "-v", "-n", "-H", "content-type: application/grpc",
            "-H", "te: trailers", "-d", payload,
            "http://127.0.0.1:%d/Greeter/SayHello" % port]))
        p.wait_line("Received: world", timeout=5.0)
        p.send_signal(signal.SIGTERM)
        self.assertEqual(p.wait_exit(5.0), 0)
        self.assertEqual(c.wait(5.0), 0, c.stderr)
        out = c.stdout.decode()
        seq = re.findall(r"recv (GOAWAY|PING|HEADERS|DATA) frame[^\n]*\n\s*([^\n]*)", out)
        kinds = [k for k, _ in seq]
        self.assertEqual(kinds[:3], ["GOAWAY", "PING", "GOAWAY"], seq)
        self.assertIn("last_stream_id=2147483647", seq[0][1])
        self.assertRegex(seq[2][1], r"last_stream_id=13,")
        # Then the reply: headers, the message, trailers with grpc-status 0.
        self.assertEqual(kinds[3:], ["HEADERS", "DATA", "HEADERS"], seq)
        self.assertIn("grpc-status: 0", out)
        # The PING is answered before the final GOAWAY goes out.
        self.assertLess(out.index("send PING frame"),
                        out.index("last_stream_id=13"))

    def test_new_connection_and_new_call_refused_after_stop_began(self):
        p, port = self.start_server()
        ch = self.channel(port)
        fut = self.say_hello(ch).future(hello_request("world", "1500ms"), timeout=60)
        p.wait_line("Received: world", timeout=5.0)
        p.send_signal(signal.SIGTERM)
        p.wait_line(re.escape(SHUTDOWN), timeout=2.0)
        time.sleep(0.2)
        self.assertEqual(gracetest.connect_error(port), errno.ECONNREFUSED)
        # A new call on the same channel cannot use the draining connection
        # and cannot open another: a retryable UNAVAILABLE, at once.
        t0 = time.monotonic()
        with self.assertRaises(grpc.RpcError) as cm:
            self.say_hello(ch)(hello_request("late"), timeout=5)
        self.assertEqual(cm.exception.code(), grpc.StatusCode.UNAVAILABLE)
        self.assertLess(time.monotonic() - t0, 2.0)
        self.assertEqual(hello_reply_message(fut.result(timeout=10)), "Hello world")
        self.assertEqual(p.wait_exit(5.0), 0)
        self.assertNotIn("Received: late", p.messages())

    def test_deadline_and_cancellation(self):
        p, port = self.start_server()
        ch = self.channel(port)
        with self.assertRaises(grpc.RpcError) as cm:
            self.say_hello(ch)(hello_request("slow", "5s"), timeout=0.3)
        self.assertEqual(cm.exception.code(), grpc.StatusCode.DEADLINE_EXCEEDED)
        # The server's deadline first, for sure: nghttp never resets the
        # stream itself, so the server's own timer cancels the handler,
        # which finishes the call from on_cancel.  (With grpcio, the
        # client's RST_STREAM and the server's timer raced: when the timer
        # won, the call leaked, and LeakSanitizer failed this test.)
        if NGHTTP:
            with tempfile.NamedTemporaryFile(suffix=".bin", delete=False) as f:
                f.write(framed(hello_request("timer", "5s")))
                slow = f.name
            self.addCleanup(os.unlink, slow)
            c = self.client(gracetest.Client([
                NGHTTP, "-v", "-H", "content-type: application/grpc",
                "-H", "te: trailers", "-H", "grpc-timeout: 200m", "-d", slow,
                "http://127.0.0.1:%d/Greeter/SayHello" % port]))
            self.assertEqual(c.wait(10), 0)
            self.assertIn("grpc-status: 4", c.stdout.decode())
        fut = self.say_hello(ch).future(hello_request("cancelme", "5s"), timeout=60)
        p.wait_line("Received: cancelme", timeout=5.0)
        fut.cancel()
        # Both handlers were cancelled: a graceful stop does not wait for
        # their 5 s sleeps.  (This client does not read its socket while the
        # test sleeps, so it never acks the shutdown PING: the final GOAWAY
        # goes out after the 1 s ack wait, as h2o's does.)
        time.sleep(0.2)
        t_sig = p.send_signal(signal.SIGTERM)
        self.assertEqual(p.wait_exit(4.0), 0)
        self.assertLess(p.exit_time - t_sig, 1.0 + bound(0.5, 1.5))
        # Other calls went on meanwhile.
        p2, port2 = self.start_server()
        ch2 = self.channel(port2)
        r = self.say_hello(ch2)(hello_request("again"), timeout=5)
        self.assertEqual(hello_reply_message(r), "Hello again")

    def test_concurrent_calls_do_not_block_each_other(self):
        p, port = self.start_server("-loops", "1")
        ch = self.channel(port)
        t0 = time.monotonic()
        futs = [self.say_hello(ch).future(hello_request("n%d" % i, "500ms"), timeout=10)
                for i in range(10)]
        for i, f in enumerate(futs):
            self.assertEqual(hello_reply_message(f.result()), "Hello n%d" % i)
        self.assertLess(time.monotonic() - t0, 1.5)

    def test_health_check_and_watch_turns_not_serving(self):
        p, port = self.start_server()
        ch = self.channel(port)
        check = ch.unary_unary("/grpc.health.v1.Health/Check",
                               request_serializer=IDENT, response_deserializer=IDENT)
        self.assertEqual(health_status(check(health_request(""), timeout=5)), 1)
        self.assertEqual(health_status(check(health_request("Greeter"), timeout=5)), 1)
        with self.assertRaises(grpc.RpcError) as cm:
            check(health_request("Nope"), timeout=5)
        self.assertEqual(cm.exception.code(), grpc.StatusCode.NOT_FOUND)
        watch = ch.unary_stream("/grpc.health.v1.Health/Watch",
                                request_serializer=IDENT, response_deserializer=IDENT)
        stream = watch(health_request(""), timeout=30)
        first = next(stream)
        self.assertEqual(health_status(first), 1)
        p.send_signal(signal.SIGTERM)
        rest = list(stream)  # NOT_SERVING, then the stream ends with OK
        self.assertEqual([health_status(m) for m in rest], [2])
        self.assertEqual(stream.code(), grpc.StatusCode.OK)
        self.assertEqual(p.wait_exit(5.0), 0)

    def test_shutdown_timeout_escalates_and_cuts(self):
        p, port = self.start_server("-shutdown-timeout", "500ms")
        ch = self.channel(port)
        fut = self.say_hello(ch).future(hello_request("stuck", "1h"), timeout=60)
        p.wait_line("Received: stuck", timeout=5.0)
        t_sig = p.send_signal(signal.SIGTERM)
        self.assertEqual(p.wait_exit(5.0), 1)
        dt = p.exit_time - t_sig
        self.assertGreater(dt, 0.45)
        self.assertLess(dt, 0.5 + bound(0.3, 1.0))
        msgs = p.messages()
        self.assertTrue(any("context deadline exceeded" in m and "1 call(s) cut" in m
                            for m in msgs), msgs)
        with self.assertRaises(grpc.RpcError) as cm:
            fut.result(timeout=10)
        self.assertIn(cm.exception.code(), (grpc.StatusCode.UNAVAILABLE,
                                            grpc.StatusCode.CANCELLED))

    def test_bad_input(self):
        p, port = self.start_server()
        ch = self.channel(port)
        # Unknown service and method.
        for path, want in (("/Nope/X", "unknown service Nope"),
                           ("/Greeter/Nope", "unknown method Nope for service Greeter")):
            with self.assertRaises(grpc.RpcError) as cm:
                ch.unary_unary(path, request_serializer=IDENT,
                               response_deserializer=IDENT)(b"", timeout=5)
            self.assertEqual(cm.exception.code(), grpc.StatusCode.UNIMPLEMENTED)
            self.assertEqual(cm.exception.details(), want)
        # 5 MiB message: RESOURCE_EXHAUSTED.
        big = hello_request("x" * 100) + b"\x1a\x80\x80\x80\x05" + b"y" * (5 << 20)
        with self.assertRaises(grpc.RpcError) as cm:
            self.say_hello(ch)(big, timeout=10)
        self.assertEqual(cm.exception.code(), grpc.StatusCode.RESOURCE_EXHAUSTED)
        # Not protobuf: INTERNAL.
        with self.assertRaises(grpc.RpcError) as cm:
            self.say_hello(ch)(b"\xff\xff\xff", timeout=5)
        self.assertEqual(cm.exception.code(), grpc.StatusCode.INTERNAL)
        # Wrong content-type over HTTP/2, and gRPC over HTTP/1.1.
        c = self.client(gracetest.Client([
            "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--http2-prior-knowledge",
            "-H", "content-type: text/plain", "--data-binary", "x",
            "http://127.0.0.1:%d/Greeter/SayHello" % port]))
        self.assertEqual(c.wait(10), 0)
        self.assertEqual(c.stdout, b"415")
        c = self.client(gracetest.Client([
            "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--http1.1",
            "-H", "content-type: application/grpc", "--data-binary", "x",
            "http://127.0.0.1:%d/Greeter/SayHello" % port]))
        self.assertEqual(c.wait(10), 0)
        self.assertEqual(c.stdout, b"505")
        # A length prefix longer than the data: INTERNAL, seen in the trailers.
        if NGHTTP:
            with tempfile.NamedTemporaryFile(suffix=".bin", delete=False) as f:
                f.write(struct.pack(">BI", 0, 100) + b"short")
                bad = f.name
            self.addCleanup(os.unlink, bad)
            c = self.client(gracetest.Client([
                NGHTTP, "-v", "-H", "content-type: application/grpc",
                "-H", "te: trailers", "-d", bad,
                "http://127.0.0.1:%d/Greeter/SayHello" % port]))
            self.assertEqual(c.wait(10), 0)
            self.assertIn("grpc-status: 13", c.stdout.decode())
            # A compressed message (flag 1, grpc-encoding gzip): no
            # decompressor here, so UNIMPLEMENTED, as grpc-go's server says.
            gz = gzip.compress(hello_request("zip"))
            with tempfile.NamedTemporaryFile(suffix=".bin", delete=False) as f:
                f.write(struct.pack(">BI", 1, len(gz)) + gz)
                zipped = f.name
            self.addCleanup(os.unlink, zipped)
            c = self.client(gracetest.Client([
                NGHTTP, "-v", "-H", "content-type: application/grpc",
                "-H", "te: trailers", "-H", "grpc-encoding: gzip", "-d", zipped,
                "http://127.0.0.1:%d/Greeter/SayHello" % port]))
            self.assertEqual(c.wait(10), 0)
            out = c.stdout.decode()
            self.assertIn("grpc-status: 12", out)
            self.assertIn("grpc-message: grpc: Decompressor is not installed for "
                          'grpc-encoding "gzip"', out)
            # The largest grpc-timeout (99999999 hours, past the int64 of
            # nanoseconds) saturates: the call is served as one without a
            # deadline (UBSan aborted on the signed overflow here before).
            with tempfile.NamedTemporaryFile(suffix=".bin", delete=False) as f:
                f.write(framed(hello_request("forever")))
                forever = f.name
            self.addCleanup(os.unlink, forever)
            for timeout in ("99999999H", "99999999M", "99999999n"):
                c = self.client(gracetest.Client([
                    NGHTTP, "-v", "-H", "content-type: application/grpc",
                    "-H", "te: trailers", "-H", "grpc-timeout: " + timeout,
                    "-d", forever,
                    "http://127.0.0.1:%d/Greeter/SayHello" % port]))
                self.assertEqual(c.wait(10), 0)
                out = c.stdout.decode()
                self.assertIn("grpc-status: 0", out, timeout)
                self.assertIn("Hello forever", out, timeout)
        # And other calls go on.
        r = self.say_hello(ch)(hello_request("after"), timeout=5)
        self.assertEqual(hello_reply_message(r), "Hello after")
        self.assertTrue(p.running())

    @unittest.skipUnless(VALGRIND, "valgrind is not installed")
    def test_graceful_stop_under_valgrind_is_clean(self):
        if gracetest.SANITIZE or gracetest.TSAN:
            self.skipTest("valgrind does not mix with sanitizers")
        p, port = self.start_server(wrapper=(
            VALGRIND, "--leak-check=full", "--errors-for-leak-kinds=definite,indirect",
            "--error-exitcode=99", "-q"))
        ch = self.channel(port)
        r = self.say_hello(ch)(hello_request("v"), timeout=30)
        self.assertEqual(hello_reply_message(r), "Hello v")
        fut = self.say_hello(ch).future(hello_request("w", "1s"), timeout=60)
        p.wait_line("Received: w", timeout=10.0)
        p.send_signal(signal.SIGTERM)
        self.assertEqual(hello_reply_message(fut.result(timeout=30)), "Hello w")
        self.assertEqual(p.wait_exit(60.0), 0, p.stderr_text())
        self.assertNotIn("definitely lost", p.stderr_text())


if __name__ == "__main__":
    gracetest.main()
