"""grpc-interop-server against Debian's python3-grpcio, case by case as the
gRPC interop test descriptions (doc/interop-test-descriptions.md of
grpc/grpc) specify the client side: empty_unary, large_unary,
client_streaming, server_streaming, ping_pong, empty_stream,
cancel_after_begin, cancel_after_first_response,
timeout_on_sleeping_server, status_code_and_message,
special_status_message, unimplemented_method, unimplemented_service and
custom_metadata; plus a server stream and a client stream of 100,000
messages each, every message in order, then OK.

The messages (proto/grpc/testing/messages.proto) are encoded and decoded
by hand here: the stdlib has no protobuf, and grpcio's generic handlers
take raw bytes.
"""

import queue
import signal
import threading
import time

import gracetest
from gracetest import free_port

from grpctest import IDENT, GrpcTestCase, grpc, needs_grpc

SVC = "/grpc.testing.TestService/"

# ---- protobuf wire format, the little of it these messages use ----------


def varint(n):
    out = bytearray()
    n &= (1 << 64) - 1
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def f_varint(field, n):
    return varint(field << 3) + varint(n)


def f_bytes(field, b):
    return varint(field << 3 | 2) + varint(len(b)) + b


def parse(b):
    """{field: [value, ...]}: ints for varints, bytes for length-delimited."""
    out, i = {}, 0
    while i < len(b):
        key, i = read_varint(b, i)
        field, wt = key >> 3, key & 7
        if wt == 0:
            v, i = read_varint(b, i)
        elif wt == 2:
            n, i = read_varint(b, i)
            v, i = b[i:i + n], i + n
        else:
            raise ValueError("wire type %d" % wt)
        out.setdefault(field, []).append(v)
    return out


def read_varint(b, i):
    shift = n = 0
    while True:
        c = b[i]
        i += 1
        n |= (c & 0x7F) << shift
        shift += 7
        if not c & 0x80:
            return n, i


def payload(size):
    # Payload{type: COMPRESSABLE (0, the default), body: size zero bytes}
    return f_bytes(2, bytes(size)) if size else b""


def echo_status(code, message):
    return f_varint(1, code) + f_bytes(2, message.encode())


def simple_request(response_size=0, payload_size=0, status=None):
    m = b""
    if response_size:
        m += f_varint(2, response_size)
    if payload_size:
        m += f_bytes(3, payload(payload_size))
    if status is not None:
        m += f_bytes(7, echo_status(*status))
    return m


def output_request(sizes=(), payload_size=0, status=None, interval_us=0):
    m = b""
    for s in sizes:
        rp = (f_varint(1, s) if s else b"") + (f_varint(2, interval_us) if interval_us else b"")
        m += f_bytes(2, rp)
    if payload_size:
        m += f_bytes(3, payload(payload_size))
    if status is not None:
        m += f_bytes(7, echo_status(*status))
    return m


def input_request(payload_size):
    return f_bytes(1, payload(payload_size))


def payload_body(response):
    """The payload body of a SimpleResponse or StreamingOutputCallResponse."""
    p = parse(response).get(1, [b""])[0]
    return parse(p).get(2, [b""])[0]


def aggregated_size(response):
    return parse(response).get(1, [0])[0]


LARGE_REQ, LARGE_RESP = 271828, 314159
REQ_SIZES = (27182, 8, 1828, 45904)
RESP_SIZES = (31415, 9, 2653, 58979)
SPECIAL = "\t\ntest with whitespace\r\nand Unicode BMP \u263a and non-BMP \U0001f608\t\n"


@needs_grpc
class GrpcInterop(GrpcTestCase):
    def setUp(self):
        super().setUp()
        port = free_port()
        self.p = self.start("grpc-interop-server", "-port", str(port))
        self.p.wait_port(port)
        self.ch = self.channel(port)

    def tearDown(self):
        if self.p.running():
            self.p.send_signal(signal.SIGTERM)
            self.assertEqual(self.p.wait_exit(10.0), 0)
        super().tearDown()

    def uu(self, name):
        return self.ch.unary_unary(name if name.startswith("/") else SVC + name,
                                   request_serializer=IDENT, response_deserializer=IDENT)

    def us(self, name):
        return self.ch.unary_stream(SVC + name, request_serializer=IDENT,
                                    response_deserializer=IDENT)

    def su(self, name):
        return self.ch.stream_unary(SVC + name, request_serializer=IDENT,
                                    response_deserializer=IDENT)

    def ss(self, name):
        return self.ch.stream_stream(SVC + name, request_serializer=IDENT,
                                     response_deserializer=IDENT)

    def test_empty_unary(self):
        self.assertEqual(self.uu("EmptyCall")(b"", timeout=10), b"")

    def test_large_unary(self):
        r = self.uu("UnaryCall")(simple_request(LARGE_RESP, LARGE_REQ), timeout=10)
        self.assertEqual(payload_body(r), bytes(LARGE_RESP))

    def test_client_streaming(self):
        r = self.su("StreamingInputCall")(iter([input_request(s) for s in REQ_SIZES]),
                                          timeout=10)
        self.assertEqual(aggregated_size(r), 74922)

    def test_server_streaming(self):
        call = self.us("StreamingOutputCall")(output_request(RESP_SIZES), timeout=10)
        self.assertEqual([len(payload_body(m)) for m in call], list(RESP_SIZES))
        self.assertEqual(call.code(), grpc.StatusCode.OK)

    def test_ping_pong(self):
        q = queue.Queue()

        def requests():
            while True:
                m = q.get()
                if m is None:
                    return
                yield m

        call = self.ss("FullDuplexCall")(requests(), timeout=10)
        for req, resp in zip(REQ_SIZES, RESP_SIZES):
            q.put(output_request([resp], req))
            self.assertEqual(payload_body(next(call)), bytes(resp))
        q.put(None)
        self.assertEqual(list(call), [])
        self.assertEqual(call.code(), grpc.StatusCode.OK)

    def test_empty_stream(self):
        call = self.ss("FullDuplexCall")(iter([]), timeout=10)
        self.assertEqual(list(call), [])
        self.assertEqual(call.code(), grpc.StatusCode.OK)

    def test_cancel_after_begin(self):
        never = threading.Event()

        def requests():
            never.wait(10)
            return
            yield  # a generator that sends nothing

        fut = self.su("StreamingInputCall").future(requests(), timeout=10)
        time.sleep(0.2)
        fut.cancel()
        never.set()
        with self.assertRaises(grpc.FutureCancelledError):
            fut.result()
        self.assertTrue(fut.cancelled())

    def test_cancel_after_first_response(self):
        q = queue.Queue()

        def requests():
            while True:
                m = q.get()
                if m is None:
                    return
                yield m

        call = self.ss("FullDuplexCall")(requests(), timeout=10)
        q.put(output_request([31415], 27182))
        self.assertEqual(len(payload_body(next(call))), 31415)
        call.cancel()
        q.put(None)
        self.assertEqual(call.code(), grpc.StatusCode.CANCELLED)

    def test_timeout_on_sleeping_server(self):
        # As the interop description says, the client sends its request and
        # keeps its side open: the server, asked for no response, waits for
        # more, so only the 1 ms deadline can end the call.  (A request
        # stream that ended would let the server answer OK, which a loaded
        # machine sometimes sent before the client's deadline.)
        done = threading.Event()

        def requests():
            yield output_request(payload_size=27182)
            done.wait(10)

        call = self.ss("FullDuplexCall")(requests(), timeout=0.001)
        try:
            with self.assertRaises(grpc.RpcError) as cm:
                list(call)
        finally:
            done.set()
        self.assertEqual(cm.exception.code(), grpc.StatusCode.DEADLINE_EXCEEDED)

    def test_status_code_and_message(self):
        with self.assertRaises(grpc.RpcError) as cm:
            self.uu("UnaryCall")(simple_request(status=(2, "test status message")),
                                 timeout=10)
        self.assertEqual(cm.exception.code(), grpc.StatusCode.UNKNOWN)
        self.assertEqual(cm.exception.details(), "test status message")
        call = self.ss("FullDuplexCall")(
            iter([output_request(status=(2, "test status message"))]), timeout=10)
        with self.assertRaises(grpc.RpcError) as cm:
            list(call)
        self.assertEqual(cm.exception.code(), grpc.StatusCode.UNKNOWN)
        self.assertEqual(cm.exception.details(), "test status message")

    def test_special_status_message(self):
        with self.assertRaises(grpc.RpcError) as cm:
            self.uu("UnaryCall")(simple_request(status=(2, SPECIAL)), timeout=10)
        self.assertEqual(cm.exception.code(), grpc.StatusCode.UNKNOWN)
        self.assertEqual(cm.exception.details(), SPECIAL)

    def test_unimplemented_method(self):
        with self.assertRaises(grpc.RpcError) as cm:
            self.uu("UnimplementedCall")(b"", timeout=10)
        self.assertEqual(cm.exception.code(), grpc.StatusCode.UNIMPLEMENTED)

    def test_unimplemented_service(self):
        with self.assertRaises(grpc.RpcError) as cm:
            self.uu("/grpc.testing.UnimplementedService/UnimplementedCall")(b"", timeout=10)
        self.assertEqual(cm.exception.code(), grpc.StatusCode.UNIMPLEMENTED)

    def test_custom_metadata(self):
        md = (("x-grpc-test-echo-initial", "test_initial_metadata_value"),
              ("x-grpc-test-echo-trailing-bin", b"\xab\xab\xab"))
        r, call = self.uu("UnaryCall").with_call(simple_request(LARGE_RESP, LARGE_REQ),
                                                 metadata=md, timeout=10)
        self.assertEqual(payload_body(r), bytes(LARGE_RESP))
        self.assertIn(md[0], tuple(call.initial_metadata()))
        self.assertIn(md[1], tuple(call.trailing_metadata()))
        call = self.ss("FullDuplexCall")(iter([output_request([LARGE_RESP], LARGE_REQ)]),
                                         metadata=md, timeout=10)
        self.assertEqual([payload_body(m) for m in call], [bytes(LARGE_RESP)])
        self.assertEqual(call.code(), grpc.StatusCode.OK)
        self.assertIn(md[0], tuple(call.initial_metadata()))
        self.assertIn(md[1], tuple(call.trailing_metadata()))

    # ---- beyond the interop cases: long streams, every message in order ----

    def test_server_stream_of_100000_messages(self):
        n = 100000
        sizes = [i % 251 for i in range(n)]
        call = self.us("StreamingOutputCall")(output_request(sizes), timeout=120)
        got = [len(payload_body(m)) for m in call]
        self.assertEqual(len(got), n)
        self.assertEqual(got, sizes)
        self.assertEqual(call.code(), grpc.StatusCode.OK)

    def test_client_stream_of_100000_messages(self):
        n = 100000
        sizes = [i % 251 for i in range(n)]
        r = self.su("StreamingInputCall")((input_request(s) for s in sizes), timeout=120)
        self.assertEqual(aggregated_size(r), sum(sizes))
        # In order: each request of a full-duplex stream asks for a reply
        # of its own size, so the replies show the order they were read in.
        call = self.ss("FullDuplexCall")((output_request([s]) for s in sizes),
                                         timeout=120)
        got = [len(payload_body(m)) for m in call]
        self.assertEqual(len(got), n)
        self.assertEqual(got, sizes)
        self.assertEqual(call.code(), grpc.StatusCode.OK)


if __name__ == "__main__":
    gracetest.main()
