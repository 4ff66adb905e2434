"""The close spread (-close-spread) of http-sleep-server and grace-demo-server,
end to end.

Without it a graceful shutdown closes every idle HTTP/1.1 keep-alive
connection at once, which races a client sending its next request on it at
that instant: the request fails (a reset, or EOF without an answer).  With it,
each connection gets its own moment in the window; answers before it keep the
connection alive, the first one after it carries "Connection: close", and the
connection closes after it.  Here keep-alive clients that send a request every
20 ms from before SIGTERM until they are told to close lose no request, are
told within the window, at different moments, and the server exits the moment
the last of them has closed.  An idle connection is closed at the window's
end, not at once; without the flag (or with 0) it is closed at once as
before; HTTP/2 gets its GOAWAY at once either way.
"""

import errno
import signal
import socket
import struct
import threading
import time

import gracetest
from gracetest import HOST, bound, free_port, now, request

SERVER = "http-sleep-server"
DEMO = "grace-demo-server"

SHUTDOWN = "Shutdown Server..."
STOPPED = "Stopped serving new connections"
COMPLETED = "HTTP server graceful shutdown completed"

# How long after an event (signal, last connection closed) the server must
# act; a design that polls misses it.
PROMPT = bound(0.100, 0.300)

INTERVAL = 0.02  # between two requests of a keep-alive client
HELLO = b"Hello, World!\n"


class KeepAliveClient(threading.Thread):
    """One keep-alive connection: GET / every INTERVAL until an answer says
    "Connection: close", then the server must close it with no more bytes.
    Any failure (a reset, EOF without an answer, a wrong answer, a timeout)
    ends it with .error set."""

    def __init__(self, port):
        super().__init__(daemon=True)
        self.conn = gracetest.HttpConn(port, timeout=5.0)
        self.answers = []  # (time sent, time answered, says close)
        self.error = None
        self.t_told = None  # the "Connection: close" answer arrived
        self.t_eof = None  # then the server closed
        self.stop = threading.Event()

    def run(self):
        try:
            while not self.stop.is_set():
                t = now()
                self.conn.send(request("/"))
                r = self.conn.read_response(timeout=5.0)
                if (r.status, r.body) != (200, HELLO):
                    raise AssertionError("unexpected answer %r" % r)
                close = r.has_token("connection", "close")
                self.answers.append((t, r.t_done, close))
                if close:
                    self.t_told = r.t_done
                    data, how, t_end = self.conn.read_until_close(timeout=5.0)
                    if data or how != "eof":
                        raise AssertionError("after Connection: close: %s, %r"
                                             % (how, data[:200]))
                    self.t_eof = t_end
                    return
                self.stop.wait(INTERVAL)
        except Exception as e:  # the failure is the test's finding
            self.error = "%s: %s (after %d answers)" % (type(e).__name__, e,
                                                        len(self.answers))
        finally:
            self.conn.close()


def h2_frame(kind, flags, stream, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + \
        struct.pack(">I", stream) + payload


def h2_read_frame(sock, buf, deadline):
    """One frame (kind, flags, payload) from sock, or None at its end."""
    while True:
        if len(buf) >= 9:
            length = int.from_bytes(buf[0:3], "big")
            if len(buf) >= 9 + length:
                kind, flags = buf[3], buf[4]
                payload = bytes(buf[9:9 + length])
                del buf[:9 + length]
                return kind, flags, payload
        left = deadline - now()
        if left <= 0:
            raise AssertionError("no HTTP/2 frame in time")
        sock.settimeout(left)
        data = sock.recv(65536)
        if not data:
            return None
        buf += data


H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
H2_SETTINGS, H2_PING, H2_GOAWAY = 4, 6, 7


class CloseSpread(gracetest.ProgramTestCase):

    def start_server(self, *flags):
        port = free_port()
        p = self.start(SERVER, "-addr", "127.0.0.1:%d" % port, *flags)
        p.wait_port(port)
        return p, port

    def run_clients(self, p, port, n, window):
        """n keep-alive clients busy from before SIGTERM until they are told
        to close; checks them and returns (clients, signal time)."""
        clients = [KeepAliveClient(port) for _ in range(n)]
        for c in clients:
            c.start()
        time.sleep(0.2)  # every connection is in use before the signal
        t_sig = p.send_signal(signal.SIGTERM)
        for c in clients:
            c.join(window + bound(5.0, 10.0))
        for c in clients:
            if c.is_alive():
                c.stop.set()
                self.fail("a client still runs %.1fs after the signal"
                          % (now() - t_sig))
        errors = [c.error for c in clients if c.error]
        self.assertEqual(errors, [], "requests failed during the close spread")
        told = sorted(c.t_told - t_sig for c in clients)
        self.report("signal -> first Connection: close", told[0] * 1000)
        self.report("signal -> last Connection: close", told[-1] * 1000)
        # Every one was told within the window (its moments fall in the first
        # nine tenths; one request interval later the next answer says so).
        self.assertLess(told[-1], window + bound(0.05, 0.3))
        # Not all at once: the clients reconnect spread over the window.
        self.assertGreater(told[-1] - told[0], window / 4)
        # Before its moment a connection was kept alive: answers after the
        # signal without "Connection: close".
        kept = sum(1 for c in clients for t, _, close in c.answers
                   if t > t_sig and not close)
        self.assertGreater(kept, n)
        return clients, t_sig

    def test_keepalive_clients_lose_no_request(self):
        p, port = self.start_server("-close-spread", "1s", "-loops", "2")
        clients, t_sig = self.run_clients(p, port, 8, 1.0)
        self.assertEqual(p.wait_exit(bound(3.0, 6.0)), 0)
        self.assertEqual(p.messages(), [SHUTDOWN, STOPPED, COMPLETED])
        # The server exits the moment the last connection closed, without
        # waiting for the rest of the window.
        last = max(c.t_eof for c in clients)
        lag = p.exit_time - last
        self.report("last connection closed -> exit", lag * 1000)
        self.assertLess(lag, PROMPT)

    def test_idle_connection_closed_at_window_end(self):
        p, port = self.start_server("-close-spread", "500ms")
        idle = self.conn(port)
        idle.send(request("/"))
        r = idle.read_response()
        self.assertEqual((r.status, r.body), (200, HELLO))
        self.assertFalse(r.has_token("connection", "close"), r)
        t_sig = p.send_signal(signal.SIGTERM)
        stopped = p.wait_line(STOPPED + "$", timeout=2.0)
        self.assertLess(stopped.t - t_sig, PROMPT)
        # The listener closed at once, as without a spread.
        self.assertEqual(gracetest.connect_error(port), errno.ECONNREFUSED)
        t_eof = idle.expect_close(timeout=3.0)
        self.report("signal -> idle connection closed", (t_eof - t_sig) * 1000)
        self.assertGreaterEqual(t_eof - t_sig, 0.45)
        self.assertLess(t_eof - t_sig, 0.5 + PROMPT)
        self.assertEqual(p.wait_exit(2.0), 0)
        self.assertLess(p.exit_time - t_eof, PROMPT)
        self.assertEqual(p.messages(), [SHUTDOWN, STOPPED, COMPLETED])

    def test_connection_used_in_the_window_gets_a_last_call(self):
        """A connection answered keep-alive during the window (its client
        uses it) is idle at the window's end: it is not closed then, since
        its next request may be on its way; it gets GRACE__LAST_CALL_MS
        (250 ms) more, and a request in that time is answered with
        Connection: close.  One that sends nothing more is closed then."""
        window = 1.0
        p, port = self.start_server("-close-spread", "%gs" % window)
        conns = [self.conn(port) for _ in range(8)]
        for c in conns:  # every connection is accepted before the signal
            c.send(request("/"))
            self.assertEqual(c.read_response().status, 200)
        t_sig = p.send_signal(signal.SIGTERM)
        p.wait_line(STOPPED + "$", timeout=2.0)
        # At once: an answer before its moment keeps the connection.
        kept = []
        for c in conns:
            c.send(request("/"))
            r = c.read_response()
            self.assertEqual((r.status, r.body), (200, HELLO))
            if not r.has_token("connection", "close"):
                kept.append(c)
        self.assertGreaterEqual(len(kept), 2, "the moments are spread over the window")
        used, silent = kept[0], kept[1]
        # Past the window's end, within the last call: answered, then closed.
        time.sleep(max(0.0, t_sig + window + 0.1 - now()))
        used.send(request("/"))
        r = used.read_response()
        self.assertEqual((r.status, r.body), (200, HELLO))
        self.assertTrue(r.has_token("connection", "close"), r)
        used.expect_close(timeout=2.0)
        # The one that sent nothing is closed at the last call's end.
        t_eof = silent.expect_close(timeout=3.0)
        self.report("signal -> silent connection closed", (t_eof - t_sig) * 1000)
        self.assertGreaterEqual(t_eof - t_sig, window + 0.2)
        self.assertLess(t_eof - t_sig, window + 0.25 + PROMPT)
        self.assertEqual(p.wait_exit(2.0), 0)

    def test_without_close_spread_idle_connection_closed_at_once(self):
        for flags in ((), ("-close-spread", "0s")):
            p, port = self.start_server(*flags)
            idle = self.conn(port)
            idle.send(request("/"))
            r = idle.read_response()
            self.assertEqual((r.status, r.body), (200, HELLO))
            t_sig = p.send_signal(signal.SIGTERM)
            t_eof = idle.expect_close(timeout=2.0)
            self.report("signal -> idle connection closed %s" % (flags,),
                        (t_eof - t_sig) * 1000)
            self.assertLess(t_eof - t_sig, PROMPT)
            self.assertEqual(p.wait_exit(2.0), 0)

    def test_h2c_gets_goaway_at_once(self):
        p, port = self.start_server("-close-spread", "5s")
        s = socket.create_connection((HOST, port), timeout=5.0)
        self.addCleanup(s.close)
        s.sendall(H2_PREFACE + h2_frame(H2_SETTINGS, 0, 0))
        buf = bytearray()
        deadline = now() + 5.0
        while True:
            f = h2_read_frame(s, buf, deadline)
            self.assertIsNotNone(f, "closed before SETTINGS")
            if f[0] == H2_SETTINGS and not f[1] & 1:
                s.sendall(h2_frame(H2_SETTINGS, 1, 0))
                break
        t_sig = p.send_signal(signal.SIGTERM)
        deadline = now() + 5.0
        t_goaway = None
        while True:
            f = h2_read_frame(s, buf, deadline)
            if f is None:
                break
            kind, flags, payload = f
            if kind == H2_GOAWAY and t_goaway is None:
                t_goaway = now()
            if kind == H2_PING and not flags & 1:
                s.sendall(h2_frame(H2_PING, 1, 0, payload))
        self.assertIsNotNone(t_goaway, "no GOAWAY")
        self.report("signal -> GOAWAY", (t_goaway - t_sig) * 1000)
        self.assertLess(t_goaway - t_sig, PROMPT)
        # The HTTP/2 connection does not wait for the 5 s window.
        self.assertEqual(p.wait_exit(bound(2.0, 4.0)), 0)

    def test_bad_close_spread_exits_2(self):
        for prog in (SERVER, DEMO):
            for value in ("-1s", "abc"):
                r = gracetest.run_program(prog, ["-close-spread", value])
                self.assertEqual(r.returncode, 2, r.describe())
                self.assertIn("-close-spread", r.stderr_text())

    def test_demo_server_keepalive_clients_lose_no_request(self):
        port, grpc_port = free_port(), free_port()
        p = self.start(DEMO, "-addr", "127.0.0.1:%d" % port,
                       "-grpc-addr", "127.0.0.1:%d" % grpc_port,
                       "-close-spread", "1s", "-loops", "2")
        p.wait_port(port)
        p.wait_port(grpc_port)
        deadline = now() + 10.0
        while gracetest.get(port, "/readyz").status != 200:
            self.assertLess(now(), deadline, "never ready")
            time.sleep(0.01)
        self.run_clients(p, port, 4, 1.0)
        self.assertEqual(p.wait_exit(bound(5.0, 10.0)), 0)
        self.assertIn("Shutdown phase 3 (drain)", p.stderr_text())


if __name__ == "__main__":
    gracetest.main()
