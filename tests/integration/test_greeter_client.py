"""examples/greeter-client against a real gRPC server: Python's grpcio.

The server is written here, in the test, on grpcio's generic handlers (no
generated code): Greeter.SayHello of the seed's helloworld.proto, whose two
messages are encoded by hand (HelloRequest: field 1 name, field 2 duration;
HelloReply: field 1 message; all strings).  It sleeps the request's duration
and answers "Hello <name>", as the seed's Go server does; a name of "abort"
makes it fail with NOT_FOUND instead.

Checks: the greeting and exit 0; a server status printed as grpc-go prints
it, exit 1; a deadline shorter than the server's sleep, DeadlineExceeded,
exit 1, at the deadline; no server, Unavailable with grpc-go's dial error,
exit 1; and the client under valgrind.

Skipped with a message when /usr/bin/python3 cannot import grpc (Debian
package python3-grpcio).
"""

import re
import shutil
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

CLIENT = "greeter-client"
VALGRIND = ["valgrind", "--leak-check=full", "--errors-for-leak-kinds=definite,indirect",
            "--error-exitcode=99"]


# --------------------------------------------------------------------------
# protobuf, by hand: every field of these messages is a length-delimited string

def _varint(n):
    out = b""
    while True:
        if n < 0x80:
            return out + bytes([n])
        out += bytes([(n & 0x7F) | 0x80])
        n >>= 7


def encode_strings(fields):
    """{field number: str} -> protobuf bytes (wire type 2 for each)."""
    out = b""
    for num in sorted(fields):
        data = fields[num].encode("utf-8")
        out += _varint((num << 3) | 2) + _varint(len(data)) + data
    return out


def decode_strings(data):
    """protobuf bytes of string fields -> {field number: str}."""
    fields, i = {}, 0
    while i < len(data):
        key, shift = 0, 0
        while True:
            b = data[i]
            i += 1
            key |= (b & 0x7F) << shift
            shift += 7
            if b < 0x80:
                break
        if key & 7 != 2:
            raise ValueError("unexpected wire type %d" % (key & 7))
        n, shift = 0, 0
        while True:
            b = data[i]
            i += 1
            n |= (b & 0x7F) << shift
            shift += 7
            if b < 0x80:
                break
        fields[key >> 3] = data[i:i + n].decode("utf-8")
        i += n
    return fields


_UNITS = {"ns": 1e-9, "us": 1e-6, "\u00b5s": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_go_duration(s):
    """Enough of Go's time.ParseDuration for the seed ("10s", "1.5s", "200ms")."""
    if s in ("", "0"):
        return 0.0
    parts = re.findall(r"([0-9.]+)(ns|us|\u00b5s|ms|s|m|h)", s)
    if not parts or "".join(a + b for a, b in parts) != s:
        raise ValueError("bad duration %r" % s)
    return sum(float(a) * _UNITS[b] for a, b in parts)


# --------------------------------------------------------------------------

class GreeterServer:
    """The seed's Greeter on grpcio, on 127.0.0.1 and a kernel-chosen port."""

    ABORT_TEXT = "no greeting for abort: caf\u00e9 100%"

    def __init__(self):
        self.requests = []          # (fields, time_remaining)
        self._lock = threading.Lock()
        handler = grpc.method_handlers_generic_handler("Greeter", {
            "SayHello": grpc.unary_unary_rpc_method_handler(self._say_hello),
        })
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        self.server.add_generic_rpc_handlers((handler,))
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    def _say_hello(self, request, context):
        fields = decode_strings(request)
        with self._lock:
            self.requests.append((fields, context.time_remaining()))
        name = fields.get(1, "")
        if name == "abort":
            context.abort(grpc.StatusCode.NOT_FOUND, self.ABORT_TEXT)
        # log.Printf("Received: %v", in.GetName()); time.Sleep(duration)
        deadline = time.monotonic() + parse_go_duration(fields.get(2, ""))
        while time.monotonic() < deadline and context.is_active():
            time.sleep(0.01)
        return encode_strings({1: "Hello " + name})

    def stop(self):
        self.server.stop(0).wait(5)


@unittest.skipIf(grpc is None, "python3-grpcio is not importable by /usr/bin/python3 "
                 "(%s): apt-get install python3-grpcio" % GRPC_ERROR)
class GreeterClient(gracetest.ProgramTestCase):

    def setUp(self):
        super().setUp()
        self.server = GreeterServer()

    def tearDown(self):
        self.server.stop()
        super().tearDown()

    def run_client(self, *args, timeout=None, wrapper=()):
        p = self.start(CLIENT, *args, wrapper=wrapper)
        p.wait_exit(timeout or gracetest.bound(10.0, 30.0))
        return p

    def last_message(self, p):
        msgs = p.messages()
        self.assertTrue(msgs, "no Go log line from the client\n" + p.describe())
        return msgs[-1]

    def test_greeting(self):
        t0 = time.monotonic()
        p = self.run_client("-addr", "localhost:%d" % self.server.port, "-duration", "300ms")
        elapsed = time.monotonic() - t0
        self.assertEqual(p.returncode, 0, p.describe())
        self.assertEqual(self.last_message(p), "Greeting: Hello world")
        self.assertEqual(len(p.go_lines()), 1, p.describe())
        fields, remaining = self.server.requests[-1]
        self.assertEqual(fields, {1: "world", 2: "300ms"})
        # The 60 s default deadline went out as grpc-timeout.
        self.assertIsNotNone(remaining)
        self.assertTrue(50 < remaining <= 60, remaining)
        self.assertGreaterEqual(elapsed, 0.3)

    def test_name_flag(self):
        p = self.run_client("-addr", "127.0.0.1:%d" % self.server.port, "-name", "grace",
                            "-duration", "0s")
        self.assertEqual(p.returncode, 0, p.describe())
        self.assertEqual(self.last_message(p), "Greeting: Hello grace")

    def test_server_status_is_printed_as_grpc_go_does(self):
        p = self.run_client("-addr", "127.0.0.1:%d" % self.server.port, "-name", "abort")
        self.assertEqual(p.returncode, 1, p.describe())
        self.assertEqual(self.last_message(p),
                         "could not greet: rpc error: code = NotFound desc = "
                         + GreeterServer.ABORT_TEXT)

    def test_deadline_shorter_than_the_work(self):
        t0 = time.monotonic()
        p = self.run_client("-addr", "127.0.0.1:%d" % self.server.port,
                            "-duration", "10s", "-timeout", "1s")
        elapsed = time.monotonic() - t0
        self.assertEqual(p.returncode, 1, p.describe())
        # grpcio enforces the grpc-timeout we sent, with millisecond timers:
        # its own DEADLINE_EXCEEDED ("Deadline Exceeded") can arrive just
        # before our deadline fires.  Whichever comes first decides the
        # text, exactly as for a grpc-go client; the code is the same.
        self.assertIn(self.last_message(p),
                      ["could not greet: rpc error: code = DeadlineExceeded "
                       "desc = context deadline exceeded",
                       "could not greet: rpc error: code = DeadlineExceeded "
                       "desc = Deadline Exceeded"])
        # At the deadline, not after the server's 10 s.
        self.assertGreaterEqual(elapsed, 0.95)
        self.assertLess(elapsed, gracetest.bound(3.0, 5.0))
        # grpcio saw the deadline (grpc-timeout) on its side.
        self.assertEqual(len(self.server.requests), 1)
        _, remaining = self.server.requests[-1]
        self.assertIsNotNone(remaining)
        self.assertTrue(0 < remaining <= 1.0, remaining)

    def test_no_server_is_unavailable(self):
        port = free_port()
        p = self.run_client("-addr", "127.0.0.1:%d" % port)
        self.assertEqual(p.returncode, 1, p.describe())
        self.assertEqual(self.last_message(p),
                         "could not greet: rpc error: code = Unavailable desc = "
                         "connection error: desc = \"transport: Error while dialing: "
                         "dial tcp 127.0.0.1:%d: connect: connection refused\"" % port)

    def test_bad_flag_exits_2_like_go(self):
        p = self.run_client("-timeout", "abc")
        self.assertEqual(p.returncode, 2, p.describe())
        self.assertIn('invalid value "abc" for flag -timeout: parse error', p.stderr_text())

    def test_under_valgrind(self):
        if gracetest.SANITIZE or gracetest.TSAN:
            self.skipTest("valgrind does not mix with sanitizers: run it on a plain build")
        if shutil.which("valgrind") is None:
            self.skipTest("valgrind is not installed")
        p = self.run_client("-addr", "127.0.0.1:%d" % self.server.port, "-duration", "0s",
                            timeout=60.0, wrapper=VALGRIND)
        self.assertEqual(p.returncode, 0, p.describe())
        self.assertIn("Greeting: Hello world", p.messages())
        p = self.run_client("-addr", "127.0.0.1:%d" % self.server.port, "-name", "abort",
                            timeout=60.0, wrapper=VALGRIND)
        self.assertEqual(p.returncode, 1, p.describe())


if __name__ == "__main__":
    gracetest.main()
