"""grace's gRPC client, all four kinds of call, against a real server: grpcio.

The server is written here on grpcio's generic handlers with identity
(bytes) serializers, so no generated code is needed; the client is
tests/programs/grpc-stream-client.c (see its header for the methods and
the scenarios).  Each scenario prints "PASS <name> <figures>" or
"FAIL <name> <why>":

  unary          one request, one reply
  status         NOT_FOUND with a grpc-message that needs percent-encoding,
                 decoded, and a custom trailer
  server-stream  100,000 messages received in order, then trailers
  client-stream  100,000 messages sent, counted by the server
  bidi           1,000 ping-pong round trips
  cancel         a cancel mid-stream: CANCELLED, and the server's handler
                 sees its context cancelled
  deadline       DEADLINE_EXCEEDED at a 300 ms deadline, not after the
                 server's 5 s
  backpressure   a server that does not read: sends report GRACE_EBUSY
                 after a bounded amount, and go on once it reads

Skipped with a message when /usr/bin/python3 cannot import grpc (Debian
package python3-grpcio).
"""

import threading
import time
import unittest

import gracetest
from gracetest import free_port

try:
    import grpc
    from concurrent import futures
    GRPC_ERROR = None
except ImportError as e:  # pragma: no cover - depends on the machine
    grpc = None
    GRPC_ERROR = str(e)

CLIENT = "grpc-stream-client"


class StreamServer:
    """The grpcio server: one method of each kind, and a few for the tests."""

    def __init__(self, port):
        self.cancelled = threading.Event()
        self.release = threading.Event()
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
        ident = dict(request_deserializer=None, response_serializer=None)
        handlers = {
            "Unary": grpc.unary_unary_rpc_method_handler(self.unary, **ident),
            "Sleep": grpc.unary_unary_rpc_method_handler(self.sleep, **ident),
            "Release": grpc.unary_unary_rpc_method_handler(self.do_release, **ident),
            "Cancelled": grpc.unary_unary_rpc_method_handler(self.was_cancelled, **ident),
            "ServerStream": grpc.unary_stream_rpc_method_handler(self.server_stream, **ident),
            "Forever": grpc.unary_stream_rpc_method_handler(self.forever, **ident),
            "ClientStream": grpc.stream_unary_rpc_method_handler(self.client_stream, **ident),
            "Stall": grpc.stream_unary_rpc_method_handler(self.stall, **ident),
            "Bidi": grpc.stream_stream_rpc_method_handler(self.bidi, **ident),
        }
        self.server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler("test.Stream", handlers),))
        self.server.add_insecure_port(f"127.0.0.1:{port}")
        self.server.start()

    def stop(self):
        self.release.set()
        self.server.stop(0).wait()

    def unary(self, req, context):
        if req == b"fail":
            context.set_trailing_metadata((("x-why", "because"),))
            context.abort(grpc.StatusCode.NOT_FOUND, 'n\u00f6t found: 100% "gone"')
        return req

    def sleep(self, req, context):
        time.sleep(5)
        return req

    def server_stream(self, req, context):
        n = int(req)
        context.set_trailing_metadata((("x-count", str(n)),))
        for i in range(n):
            yield str(i).encode()

    def forever(self, req, context):
        try:
            while context.is_active():
                yield b"tick"
                time.sleep(0.001)
        finally:
            if not context.is_active():
                self.cancelled.set()

    def was_cancelled(self, req, context):
        return b"yes" if self.cancelled.is_set() else b"no"

    def client_stream(self, it, context):
        n = 0
        for msg in it:
            if msg != str(n).encode():
                context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                              f"message {n} is {msg[:20]!r}")
            n += 1
        return str(n).encode()

    def stall(self, it, context):
        # Read nothing until told to: the client must feel it.
        self.release.wait(60)
        return str(sum(1 for _ in it)).encode()

    def do_release(self, req, context):
        self.release.set()
        return b"ok"

    def bidi(self, it, context):
        for msg in it:
            yield msg


@unittest.skipIf(grpc is None, f"python3-grpcio is not available: {GRPC_ERROR}")
class GrpcClientStreaming(gracetest.ProgramTestCase):

    def setUp(self):
        super().setUp()
        self.port = free_port()
        self.srv = StreamServer(self.port)
        self.addCleanup(self.srv.stop)

    def run_client(self, *scenarios, timeout=None):
        timeout = timeout or gracetest.bound(120, 600)
        prog = self.start(CLIENT, f"127.0.0.1:{self.port}", *scenarios)
        code = prog.wait_exit(timeout)
        out = [l.text for l in prog.stdout_lines()]
        for line in out:
            print(line)
        return code, out, prog

    def check(self, *scenarios):
        code, out, prog = self.run_client(*scenarios)
        fails = [l for l in out if l.startswith("FAIL")]
        self.assertEqual(fails, [], prog.describe())
        for name in scenarios:
            self.assertTrue(any(l.startswith(f"PASS {name}") for l in out),
                            f"{name} did not report\n{prog.describe()}")
        self.assertEqual(code, 0, prog.describe())
        self.assertEqual(prog.sanitizer_reports(), [], prog.describe())
        return out

    def test_unary_and_status(self):
        out = self.check("unary", "status")
        self.assertIn('PASS status rpc error: code = NotFound desc = n\u00f6t found: '
                      '100% "gone"', out)

    def test_server_stream_100k_in_order(self):
        self.check("server-stream")

    def test_client_stream_100k(self):
        self.check("client-stream")

    def test_bidi_1000_round_trips(self):
        self.check("bidi")

    def test_cancel_mid_stream(self):
        self.check("cancel")
        self.assertTrue(self.srv.cancelled.is_set())

    def test_deadline_exceeded(self):
        self.check("deadline")

    def test_backpressure_when_server_stops_reading(self):
        self.check("backpressure")


if __name__ == "__main__":
    gracetest.main()
