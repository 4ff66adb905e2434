"""gRPC streaming methods of every kind against Debian's python3-grpcio:
server streaming, client streaming, bidirectional (answered from another
thread), and a stream that never ends, which a graceful stop with a
deadline escalates on, reporting the call it cut.
"""

import re
import signal
import time

import gracetest
from gracetest import bound, free_port

from grpctest import IDENT, GrpcTestCase, grpc, needs_grpc


@needs_grpc
class GrpcStreaming(GrpcTestCase):
    def start_server(self, *extra, options=None):
        port = free_port()
        p = self.start("grpc-stream-server", "-port", str(port), *extra)
        p.wait_port(port)
        return p, self.channel(port, options)

    def test_every_kind(self):
        p, ch = self.start_server()
        unary = ch.unary_unary("/Echo/Unary", request_serializer=IDENT,
                               response_deserializer=IDENT)
        self.assertEqual(unary(b"ping", timeout=5), b"ping")
        self.assertEqual(unary(b"", timeout=5), b"")
        ss = ch.unary_stream("/Echo/ServerStream", request_serializer=IDENT,
                             response_deserializer=IDENT)
        self.assertEqual(list(ss(b"200", timeout=10)),
                         [str(i).encode() for i in range(200)])
        cs = ch.stream_unary("/Echo/ClientStream", request_serializer=IDENT,
                             response_deserializer=IDENT)
        msgs = [bytes([i % 256]) * i for i in range(300)]
        self.assertEqual(cs(iter(msgs), timeout=10),
                         ("%d/%d" % (len(msgs), sum(map(len, msgs)))).encode())
        bidi = ch.stream_stream("/Echo/Bidi", request_serializer=IDENT,
                                response_deserializer=IDENT)
        words = [("w%d" % i).encode() * (i + 1) for i in range(100)]
        self.assertEqual(list(bidi(iter(words), timeout=10)), words)
        # Large messages both ways, over the flow-control windows.
        big = b"z" * (3 << 20)
        self.assertEqual(len(unary(big, timeout=20)), len(big))

    def test_stuck_stream_escalates_at_deadline(self):
        p, ch = self.start_server("-shutdown-timeout", "400ms")
        forever = ch.unary_stream("/Echo/Forever", request_serializer=IDENT,
                                  response_deserializer=IDENT)
        stream = forever(b"x", timeout=30)
        p.wait_line("Forever started", timeout=5.0)
        t_sig = p.send_signal(signal.SIGTERM)
        self.assertEqual(p.wait_exit(5.0), 1)
        dt = p.exit_time - t_sig
        self.assertGreater(dt, 0.38)
        self.assertLess(dt, 0.4 + bound(0.3, 1.0))
        self.assertTrue(any(re.search(r"context deadline exceeded, 1 call\(s\) cut", m)
                            for m in p.messages()), p.messages())
        with self.assertRaises(grpc.RpcError) as cm:
            list(stream)
        self.assertIn(cm.exception.code(), (grpc.StatusCode.UNAVAILABLE,
                                            grpc.StatusCode.CANCELLED))

    def test_long_stream_ends_itself_when_stop_begins(self):
        # A handler that watches grace_grpc_server_stopping_ctx ends its
        # stream at once, so the graceful stop does not wait for it.
        p, ch = self.start_server()
        until = ch.unary_stream("/Echo/UntilStop", request_serializer=IDENT,
                                response_deserializer=IDENT)
        stream = until(b"", timeout=30)
        self.assertEqual(next(stream), b"hello")
        t_sig = p.send_signal(signal.SIGTERM)
        self.assertEqual(list(stream), [b"bye"])
        self.assertEqual(stream.code(), grpc.StatusCode.OK)
        self.assertEqual(p.wait_exit(5.0), 0)
        self.assertLess(p.exit_time - t_sig, 1.0 + bound(0.5, 1.5))

    def test_client_cancels_streams(self):
        p, ch = self.start_server()
        forever = ch.unary_stream("/Echo/Forever", request_serializer=IDENT,
                                  response_deserializer=IDENT)
        for _ in range(5):
            s = forever(b"x", timeout=30)
            p.wait_line("Forever started", timeout=5.0)
            s.cancel()
        cs = ch.stream_unary("/Echo/ClientStream", request_serializer=IDENT,
                             response_deserializer=IDENT)

        def slow():
            yield b"a"
            time.sleep(5)
            yield b"b"

        fut = cs.future(slow(), timeout=30)
        time.sleep(0.3)
        fut.cancel()
        time.sleep(0.3)
        # Every handler was told and finished: the stop does not wait.
        t_sig = p.send_signal(signal.SIGTERM)
        self.assertEqual(p.wait_exit(5.0), 0)
        self.assertLess(p.exit_time - t_sig, 1.0 + bound(0.5, 1.5))

    def test_watch_reset_while_stop_ends_it_is_finished_once(self):
        # The stop takes the Watch calls off its list, then finishes them
        # one by one (each held open here by -watch-end-pause); the client
        # resets its Watches in between.  Before the fix the cancel still
        # found a watch linked (on the stop's own list, read there without
        # the lock), took it for its own and finished it too: a use after
        # free (ASan), a double finish, a crash or a hang.
        p, ch = self.start_server("-watch-end-pause", "300ms")
        watch = ch.unary_stream("/grpc.health.v1.Health/Watch",
                                request_serializer=IDENT,
                                response_deserializer=IDENT)
        streams = [watch(b"", timeout=30) for _ in range(3)]
        for s in streams:
            self.assertEqual(next(s), b"\x08\x01")  # SERVING
        p.send_signal(signal.SIGTERM)
        for s in streams:
            self.assertEqual(next(s), b"\x08\x02")  # NOT_SERVING
        p.wait_line("Watch end paused", timeout=5.0)
        for s in streams:
            s.cancel()
        self.assertEqual(p.wait_exit(5.0), 0)
        self.assertIn("gRPC server graceful shutdown completed", p.messages())

    def test_100000_message_server_streams_arrive_whole_and_in_order(self):
        # Backpressure: a handler that sends faster than the client reads
        # is told GRACE_EBUSY and goes on when there is room, on the loop
        # thread (ServerStream, grace_grpc_call_on_ready) or from a thread
        # of its own (ThreadStream, grace_grpc_call_send_bytes_wait).
        # Before, sends past the stream's queue were dropped: about 27,000
        # of 100,000 arrived, then OK.
        p, ch = self.start_server()
        n = 100000
        want = [str(i).encode() for i in range(n)]
        for path in ("/Echo/ServerStream", "/Echo/ThreadStream"):
            ss = ch.unary_stream(path, request_serializer=IDENT,
                                 response_deserializer=IDENT)
            call = ss(str(n).encode(), timeout=120)
            got = list(call)
            self.assertEqual(len(got), n, path)
            self.assertEqual(got, want, path)
            self.assertEqual(call.code(), grpc.StatusCode.OK, path)
        p.send_signal(signal.SIGTERM)
        self.assertEqual(p.wait_exit(10.0), 0)

    def test_client_that_stops_reading_costs_bounded_memory_then_resumes(self):
        # grpcio keeps reading into its own buffers while the application
        # does not, growing its windows (BDP probing): without the probe
        # its windows stay put, and the server really is held.
        p, ch = self.start_server(options=STILL_WINDOWS)
        n = 300000
        for path in ("/Echo/ServerStream", "/Echo/ThreadStream"):
            ss = ch.unary_stream(path, request_serializer=IDENT,
                                 response_deserializer=IDENT)
            rss0 = rss_kib(p.pid)
            call = ss(str(n).encode(), timeout=120)
            self.assertEqual(next(call), b"0")
            # The client stops reading: the windows fill, then the
            # stream's queues, then the handler is held.
            time.sleep(1.0)
            rss1 = rss_kib(p.pid)
            time.sleep(1.0)
            rss2 = rss_kib(p.pid)
            print("%s: RSS %d KiB before, %d KiB and %d KiB with the client "
                  "not reading" % (path, rss0, rss1, rss2))
            if not (gracetest.SANITIZE or gracetest.TSAN):
                # All 300,000 messages queued would take over 12 MiB.
                self.assertLess(rss1 - rss0, 6 * 1024, path)
                self.assertLess(rss2 - rss1, 512, path)
            # It reads again: the rest arrives, whole and in order.
            rest = list(call)
            self.assertEqual(len(rest), n - 1, path)
            self.assertEqual(rest[0], b"1")
            self.assertEqual(rest[-1], str(n - 1).encode())
            self.assertEqual(call.code(), grpc.StatusCode.OK, path)
        p.send_signal(signal.SIGTERM)
        self.assertEqual(p.wait_exit(10.0), 0)

    def test_send_wait_timeout_is_an_error_the_handler_sees(self):
        # A send that cannot be done in time fails, and the handler says
        # how many it sent: exactly those arrive, none is dropped.
        p, ch = self.start_server(options=STILL_WINDOWS)
        ss = ch.unary_stream("/Echo/WaitTimeout", request_serializer=IDENT,
                             response_deserializer=IDENT)
        call = ss(b"", timeout=60)
        self.assertEqual(next(call), b"0")
        time.sleep(1.0)  # not reading: the handler's send times out
        rest = []
        with self.assertRaises(grpc.RpcError) as cm:
            for m in call:
                rest.append(m)
        self.assertEqual(cm.exception.code(), grpc.StatusCode.DEADLINE_EXCEEDED)
        sent = int(cm.exception.details().split()[1])
        self.assertGreater(sent, 1)
        self.assertEqual([b"0"] + rest, [str(i).encode() for i in range(sent)])
        p.send_signal(signal.SIGTERM)
        self.assertEqual(p.wait_exit(5.0), 0)

    def test_stop_reading_then_cancel_wakes_the_blocked_sender(self):
        p, ch = self.start_server()
        for path in ("/Echo/ServerStream", "/Echo/ThreadStream"):
            ss = ch.unary_stream(path, request_serializer=IDENT,
                                 response_deserializer=IDENT)
            call = ss(b"10000000", timeout=60)
            self.assertEqual(next(call), b"0")
            time.sleep(0.5)  # held by backpressure now
            call.cancel()
        # Both handlers were woken and finished: the stop does not wait.
        time.sleep(0.3)
        t_sig = p.send_signal(signal.SIGTERM)
        self.assertEqual(p.wait_exit(5.0), 0)
        self.assertLess(p.exit_time - t_sig, 1.0 + bound(0.5, 1.5))


STILL_WINDOWS = [("grpc.http2.bdp_probe", 0)]


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


if __name__ == "__main__":
    gracetest.main()
