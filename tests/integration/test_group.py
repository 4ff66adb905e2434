"""The lifecycle group end to end: examples/grace-demo-server as a process.

The issue's scenario: one signal with an HTTP request, a gRPC call (Debian's
python3-grpcio) and a Syncer tick in flight: all three complete, the phases
are logged in order, exit 0.  gRPC health turns NOT_SERVING at the first
signal on an open channel (for "" and for "Greeter") while calls are still
served through the delay; a stuck gRPC call is cut at the deadline, exit 1,
and the report names the gRPC part.

One signal with a request in flight: every phase is logged, in order, the
request is served, the drain report says clean, exit 0.  Readiness: with
-shutdown-delay, /readyz answers 503 at once while new requests are still
served for the delay, then the listener closes.  A stuck request under a
short overall deadline is cut: exit 1 and the report says what was cut.  The
deadline from the environment.  systemd: READY=1, STOPPING=1 and
EXTEND_TIMEOUT_USEC on a real NOTIFY_SOCKET, and socket activation
(LISTEN_FDS=1, the socket on descriptor 3) by a small activator and by the
real systemd-socket-activate.  A graceful run under valgrind.
"""

import os
import re
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time

import gracetest
from gracetest import bound, curl, free_port, now
from grpctest import IDENT, grpc, needs_grpc

SERVER = "grace-demo-server"

# How long after an event (signal, last response byte) the server must act.
PROMPT = bound(0.100, 0.300)

PHASES = [
    r"^Serving HTTP on ",
    r"^Shutdown started \(context canceled\): deadline \S+, delay \S+$",
    r"^Shutdown phase 1 \(not ready\) took \S+$",
    r"^Shutdown phase 2 \(delay \S+\) took \S+$",
    r'^Part "http" draining \(began in \S+\)$',
    r'^Part "http" drained in \S+$',
    r"^Shutdown phase 3 \(drain\) took \S+$",
    r"^Drain report: result=clean duration=\S+ requests_completed=\d+ "
    r"rpcs_completed=0 idle_closed=\d+ requests_cut=0$",
]

REPORT_RE = re.compile(
    r"^Drain report: result=(\w+) duration=(\S+) requests_completed=(\d+) "
    r"rpcs_completed=(\d+) idle_closed=(\d+) requests_cut=(\d+)(?: cut=\"(.*)\")?$")

# A stand-in for systemd's socket activation: bind the socket, put it on
# descriptor 3, set LISTEN_FDS/LISTEN_PID/LISTEN_FDNAMES, exec the service
# (same pid, as systemd's own exec).
ACTIVATOR = r"""
import os, socket, sys
host, port, names = sys.argv[1], int(sys.argv[2]), sys.argv[3]
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((host, port))
s.listen(128)
if s.fileno() != 3:
    os.dup2(s.fileno(), 3)
os.set_inheritable(3, True)
os.environ.update(LISTEN_FDS="1", LISTEN_PID=str(os.getpid()), LISTEN_FDNAMES=names)
os.execv(sys.argv[4], sys.argv[4:])
"""


def parse_duration(s):
    """Seconds from a Go Duration.String() ("1.5s", "2m3s", "812µs")."""
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "µs": 1e-6, "us": 1e-6, "ns": 1e-9}
    total = 0.0
    for num, unit in re.findall(r"([0-9.]+)(h|ms|m|s|µs|us|ns)", s):
        total += float(num) * units[unit]
    return total


class NotifySocket:
    """systemd's side of sd_notify: a datagram socket that records each
    message with its arrival time."""

    def __init__(self, directory):
        self.path = os.path.join(directory, "notify")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.05)
        self.messages = []          # (time, text)
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except socket.timeout:
                continue
            except OSError:
                return
            with self._cond:
                self.messages.append((now(), data.decode("utf-8", "replace")))
                self._cond.notify_all()

    def wait_for(self, text, timeout=5.0):
        """Wait for a message containing `text` (one of its lines); return
        its arrival time."""
        deadline = now() + timeout
        with self._cond:
            while True:
                for t, m in self.messages:
                    if text in m.split("\n"):
                        return t
                left = deadline - now()
                if left <= 0:
                    raise AssertionError("no notification %r within %.1fs; got %r"
                                         % (text, timeout, self.messages))
                self._cond.wait(left)

    def texts(self):
        with self._cond:
            return [m for _, m in self.messages]

    def close(self):
        self._stop.set()
        self._thread.join(2.0)
        self.sock.close()


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


SERVING, NOT_SERVING = 1, 2


def health_status(b):
    return b[1] if len(b) >= 2 and b[0] == 0x08 else 0


def grpc_flag():
    """-grpc-addr on a free port: never the default :50051, which other
    programs on this machine may hold."""
    port = free_port()
    return ["-grpc-addr", "127.0.0.1:%d" % port], port


class GroupTest(gracetest.ProgramTestCase):

    def setUp(self):
        super().setUp()
        self.channels = []

    def tearDown(self):
        for ch in self.channels:
            ch.close()
        super().tearDown()

    def start_server(self, *flags, env=None, wrapper=(), timeout=10.0):
        port = free_port()
        gflag, self.grpc_port = grpc_flag()
        p = self.start(SERVER, "-addr", "127.0.0.1:%d" % port, *gflag, *flags, env=env,
                       wrapper=wrapper)
        p.wait_port(port, timeout=timeout)
        p.wait_port(self.grpc_port, timeout=timeout)
        # Listening comes before ready: /readyz says 503 "not ready" until
        # every part has started.
        deadline = now() + timeout
        while gracetest.get(port, "/readyz").status != 200:
            self.assertLess(now(), deadline, "never ready")
            time.sleep(0.01)
        return p, port

    def channel(self, port):
        ch = grpc.insecure_channel("127.0.0.1:%d" % port)
        self.channels.append(ch)
        return ch

    @staticmethod
    def say_hello(ch):
        return ch.unary_unary("/Greeter/SayHello", request_serializer=IDENT,
                              response_deserializer=IDENT)

    @staticmethod
    def check(ch, service=""):
        rpc = ch.unary_unary("/grpc.health.v1.Health/Check", request_serializer=IDENT,
                             response_deserializer=IDENT)
        return health_status(rpc(health_request(service), timeout=5.0))

    def assert_phases(self, p, patterns):
        msgs = p.messages()
        i = 0
        for pat in patterns:
            while i < len(msgs) and not re.search(pat, msgs[i]):
                i += 1
            self.assertLess(i, len(msgs), "no log line matching %r after the previous ones:\n%s"
                            % (pat, "\n".join(msgs)))
            i += 1

    def report(self, p):
        lines = [m for m in p.messages() if m.startswith("Drain report:")]
        self.assertEqual(len(lines), 1, "one drain report line expected: %r" % p.messages())
        m = REPORT_RE.match(lines[0])
        self.assertIsNotNone(m, "malformed drain report: %r" % lines[0])
        return m

    def assert_go_log_only(self, p):
        other = [l.text for l in p.lines() if l.msg is None]
        self.assertEqual(other, [], "stderr lines not in Go log format")

    # -- one signal ----------------------------------------------------------

    def test_one_signal_inflight_phases_in_order_exit_0(self):
        p, port = self.start_server("-shutdown-timeout", "10s")
        c = self.client(curl("--max-time", "10",
                             "http://127.0.0.1:%d/sleep?duration=1s" % port))
        idle = self.conn(port)
        idle.send(gracetest.request("/livez"))
        self.assertEqual(idle.read_response().body, b"ok")
        time.sleep(0.3)
        self.assertTrue(c.running(), "curl finished before the signal")
        t_sig = p.send_signal(signal.SIGINT)

        idle.expect_close(timeout=PROMPT + 1.0)
        self.assertEqual(c.wait(5.0), 0, "curl failed: %r" % c.stderr)
        self.assertEqual(c.stdout, b"Welcome HTTP Server")
        self.assertEqual(p.wait_exit(5.0), 0)
        self.assert_go_log_only(p)
        self.assert_phases(p, PHASES)
        self.assertIn("Shutdown started (context canceled): deadline 10s, delay 0s", p.messages())
        m = self.report(p)
        self.assertEqual(m.group(1), "clean")
        self.assertEqual(m.group(3), "1", "the in-flight request completed during the drain")
        self.assertEqual(m.group(5), "1", "the idle keep-alive connection was closed")
        self.assertGreaterEqual(parse_duration(m.group(2)), 0.5)
        started = p.wait_line(r"Shutdown started")
        self.assertLess(started.t - t_sig, PROMPT)
        # The process exits the moment the last response is done.
        lag = p.exit_time - c.exit_time
        self.report_value("curl exit -> server exit", lag * 1000)
        self.assertLess(lag, PROMPT)

    def report_value(self, what, value):
        gracetest.ProgramTestCase.report(self, what, value)

    def test_idle_server_exits_at_once(self):
        p, port = self.start_server()
        t_sig = p.send_signal(signal.SIGTERM)
        self.assertEqual(p.wait_exit(5.0), 0)
        self.assert_phases(p, PHASES)
        m = self.report(p)
        self.assertEqual(m.group(3), "0")
        self.assertLess(p.exit_time - t_sig, PROMPT)

    # -- readiness and the shutdown delay -----------------------------------

    def test_readiness_turns_503_while_serving_through_the_delay(self):
        p, port = self.start_server("-shutdown-delay", "2s", "-shutdown-timeout", "10s")
        r = gracetest.get(port, "/readyz")
        self.assertEqual((r.status, r.body), (200, b"ok"))
        r = gracetest.get(port, "/metrics")
        self.assertEqual(r.header("content-type"), "text/plain; version=0.0.4; charset=utf-8")
        self.assertIn(b"\ngrace_ready 1\n", r.body)
        self.assertIn(b"\ngrace_shutdown_phase 0\n", r.body)

        t_sig = p.send_signal(signal.SIGTERM)
        # /readyz turns 503 at once...
        while True:
            r = gracetest.get(port, "/readyz")
            if r.status == 503:
                break
            self.assertEqual(r.status, 200)
            self.assertLess(now() - t_sig, PROMPT, "/readyz still 200 after the signal")
        t_503 = now()
        self.report_value("signal -> /readyz 503", (t_503 - t_sig) * 1000)
        self.assertEqual(r.body, b"shutting down")
        # ...while /livez stays 200 and new connections are still served.
        self.assertEqual(gracetest.get(port, "/livez").status, 200)
        r = gracetest.get(port, "/metrics")
        self.assertIn(b"\ngrace_ready 0\n", r.body)
        self.assertIn(b"\ngrace_shutdown_phase 2\n", r.body)
        with gracetest.BackgroundClient(port) as bg:
            while now() < t_sig + 1.7:
                time.sleep(0.05)
        self.assertGreater(bg.ok, 10)
        self.assertEqual(gracetest.get(port, "/").status, 200)
        # Then the listener closes, at the end of the delay.
        while gracetest.connect_error(port) is None:
            self.assertLess(now() - t_sig, 2.0 + PROMPT + 0.5, "listener still open")
            time.sleep(0.01)
        t_closed = now()
        self.assertGreaterEqual(t_closed - t_sig, 1.95)
        self.assertEqual(p.wait_exit(5.0), 0)
        draining = p.wait_line(r'Part "http" draining')
        self.assertGreaterEqual(draining.t - t_sig, 1.95)
        self.assert_phases(p, PHASES)
        phase2 = [m for m in p.messages() if m.startswith("Shutdown phase 2")][0]
        self.assertRegex(phase2, r"^Shutdown phase 2 \(delay 2s\) took 2\.\d+s$")

    def test_second_signal_during_the_delay_exits_1_at_once(self):
        p, port = self.start_server("-shutdown-delay", "5s")
        p.send_signal(signal.SIGTERM)
        p.wait_line(r"Shutdown phase 1")
        t2 = p.send_signal(signal.SIGTERM)
        self.assertEqual(p.wait_exit(3.0), 1)
        # ThreadSanitizer runs a signal's handler only once the receiving
        # thread makes a call it intercepts, which can take a second while
        # the thread sits in ppoll(2) (as in test_http_shutdown).
        self.assertLess(p.exit_time - t2, 2.0 if gracetest.TSAN else PROMPT)
        self.assertFalse(any(m.startswith("Drain report") for m in p.messages()))

    # -- the deadline ---------------------------------------------------------

    def test_stuck_request_is_cut_at_the_deadline_exit_1(self):
        p, port = self.start_server("-shutdown-timeout", "1s")
        c = self.client(curl("--max-time", "10",
                             "http://127.0.0.1:%d/sleep?duration=30s" % port))
        time.sleep(0.3)
        t_sig = p.send_signal(signal.SIGTERM)
        self.assertEqual(p.wait_exit(5.0), 1)
        took = p.exit_time - t_sig
        self.report_value("signal -> forced exit (deadline 1s)", took * 1000)
        self.assertGreaterEqual(took, 1.0)
        self.assertLess(took, 1.0 + PROMPT)
        self.assertNotEqual(c.wait(5.0), 0, "curl got an answer from a cut request")
        self.assertEqual(c.stdout, b"")
        self.assert_go_log_only(p)
        self.assert_phases(p, [
            r"^Shutdown started \(context canceled\): deadline 1s, delay 0s$",
            r'^Part "http" draining',
            r"^Shutdown phase 3 \(drain\) cut short by the deadline after \S+$",
            r'^Part "http" forced in \S+: 1 request cut, 1 connection closed$',
            r"^Shutdown phase 4 \(force\) took \S+$",
            r"^Drain report: result=forced ",
        ])
        m = self.report(p)
        self.assertEqual(m.group(1), "forced")
        self.assertEqual(m.group(6), "1")
        self.assertEqual(m.group(7), "http (1 request cut, 1 connection closed)")

    def test_deadline_from_the_environment(self):
        # GRACE_SHUTDOWN_TIMEOUT, a Go duration.
        p, port = self.start_server(env={"GRACE_SHUTDOWN_TIMEOUT": "600ms"})
        c = self.client(curl("--max-time", "10",
                             "http://127.0.0.1:%d/sleep?duration=30s" % port))
        time.sleep(0.3)
        t_sig = p.send_signal(signal.SIGTERM)
        self.assertEqual(p.wait_exit(5.0), 1)
        self.assertGreaterEqual(p.exit_time - t_sig, 0.6)
        self.assertLess(p.exit_time - t_sig, 0.6 + PROMPT)
        self.assertIn("Shutdown started (context canceled): deadline 600ms, delay 0s",
                      p.messages())
        c.wait(5.0)
        # TERMINATION_GRACE_PERIOD_SECONDS=2: 2 s less the 1 s margin.
        p, port = self.start_server(env={"TERMINATION_GRACE_PERIOD_SECONDS": "2"})
        p.send_signal(signal.SIGTERM)
        self.assertEqual(p.wait_exit(5.0), 0)
        self.assertIn("Shutdown started (context canceled): deadline 1s, delay 0s",
                      p.messages())
        # The flag wins over the environment.
        p, port = self.start_server("-shutdown-timeout", "3s",
                                    env={"GRACE_SHUTDOWN_TIMEOUT": "1s"})
        p.send_signal(signal.SIGTERM)
        self.assertEqual(p.wait_exit(5.0), 0)
        self.assertIn("Shutdown started (context canceled): deadline 3s, delay 0s",
                      p.messages())
        # A bad value: the message, exit 2, as a bad flag.
        p = gracetest.run_program(SERVER, ["-addr", "127.0.0.1:%d" % free_port()],
                                  env={"GRACE_SHUTDOWN_TIMEOUT": "soon"})
        self.programs.append(p)
        self.assertEqual(p.returncode, 2)
        self.assertEqual(p.stderr_text(),
                         'GRACE_SHUTDOWN_TIMEOUT: time: invalid duration "soon"')

    # -- the whole group: HTTP, gRPC and the Syncer -----------------------------

    @needs_grpc
    def test_one_signal_http_grpc_and_tick_in_flight_all_complete_exit_0(self):
        # Ticks back to back, each working 800 ms: the Syncer is always
        # mid-tick.
        p, port = self.start_server("-shutdown-timeout", "10s", "-interval", "50ms",
                                    "-tick-work", "800ms", "-cleanup", "300ms")
        ch = self.channel(self.grpc_port)
        self.assertEqual(hello_reply_message(self.say_hello(ch)(hello_request("warm"),
                                                                timeout=5.0)),
                         "Hello warm")
        p.wait_line(r" do something$")
        c = self.client(curl("--max-time", "10",
                             "http://127.0.0.1:%d/sleep?duration=1s" % port))
        fut = self.say_hello(ch).future(hello_request("world", "1s"), timeout=10)
        p.wait_line(r" Received: world$")
        time.sleep(0.3)
        self.assertTrue(c.running(), "curl finished before the signal")
        self.assertFalse(fut.done(), "the call finished before the signal")
        n_before = len(p.messages())
        t_sig = p.send_signal(signal.SIGTERM)

        self.assertEqual(hello_reply_message(fut.result(timeout=5.0)), "Hello world")
        self.assertEqual(c.wait(5.0), 0, "curl failed: %r" % c.stderr)
        self.assertEqual(c.stdout, b"Welcome HTTP Server")
        self.assertEqual(p.wait_exit(10.0), 0)
        self.assert_go_log_only(p)
        self.assert_phases(p, [
            r"^Serving HTTP on ",
            r"^Serving gRPC on port \d+$",
            r"^Shutdown started \(context canceled\): deadline 10s, delay 0s$",
            r"^Shutdown phase 1 \(not ready\) took \S+$",
            r"^Shutdown phase 2 \(delay 0s\) took \S+$",
            r'^Part "http" draining \(began in \S+\)$',
            r'^Part "grpc" draining \(began in \S+\)$',
            r'^Part "syncer" draining \(began in \S+\)$',
            r"^Shutdown phase 3 \(drain\) took \S+$",
            r"^Drain report: result=clean duration=\S+ requests_completed=1 "
            r"rpcs_completed=1 idle_closed=\d+ requests_cut=0$",
        ])
        msgs = p.messages()
        for part in ("http", "grpc", "syncer"):
            self.assertTrue(any(re.match(r'^Part "%s" drained in \S+$' % part, m)
                                for m in msgs), "%s not drained: %r" % (part, msgs))
        # The tick in progress at the signal finished, no tick began after
        # it, then the cleanup ran to its end.
        after = msgs[n_before:]
        self.assertIn("did something in 800ms", after)
        self.assertNotIn("do something", after[after.index("did something in 800ms"):])
        self.assertLess(after.index("did something in 800ms"), after.index("Stop Syncer start"))
        self.assertIn("Stop Syncer done", after)
        m = self.report(p)
        self.assertEqual(m.group(1), "clean")
        self.assertGreaterEqual(parse_duration(m.group(2)), 0.5)
        self.assertLess(p.exit_time - t_sig, 3.0)

    @needs_grpc
    def test_grpc_health_not_serving_at_once_while_serving_through_the_delay(self):
        p, port = self.start_server("-shutdown-delay", "1500ms", "-shutdown-timeout", "10s")
        ch = self.channel(self.grpc_port)
        self.assertEqual(self.check(ch), SERVING)
        self.assertEqual(self.check(ch, "Greeter"), SERVING)
        t_sig = p.send_signal(signal.SIGTERM)
        # On the channel opened before the signal: NOT_SERVING at once...
        while True:
            st = self.check(ch)
            if st == NOT_SERVING:
                break
            self.assertEqual(st, SERVING)
            self.assertLess(now() - t_sig, PROMPT, "gRPC health still SERVING after the signal")
        self.report_value("signal -> gRPC health NOT_SERVING", (now() - t_sig) * 1000)
        self.assertEqual(self.check(ch, "Greeter"), NOT_SERVING)
        self.assertEqual(gracetest.get(port, "/readyz").status, 503)
        # ...while calls are still served during the delay, on it and on a
        # new connection.
        self.assertEqual(hello_reply_message(self.say_hello(ch)(hello_request("late"),
                                                                timeout=5.0)),
                         "Hello late")
        ch2 = self.channel(self.grpc_port)
        self.assertEqual(hello_reply_message(self.say_hello(ch2)(hello_request("new"),
                                                                 timeout=5.0)),
                         "Hello new")
        self.assertEqual(self.check(ch2, "Greeter"), NOT_SERVING)
        self.assertLess(now() - t_sig, 1.4, "the checks took the whole delay")
        self.assertEqual(p.wait_exit(5.0), 0)
        draining = p.wait_line(r'Part "grpc" draining')
        self.assertGreaterEqual(draining.t - t_sig, 1.45)
        m = self.report(p)
        self.assertEqual(m.group(1), "clean")

    @needs_grpc
    def test_stuck_grpc_call_is_cut_at_the_deadline_exit_1(self):
        p, port = self.start_server("-shutdown-timeout", "1s")
        ch = self.channel(self.grpc_port)
        fut = self.say_hello(ch).future(hello_request("stuck", "30s"), timeout=20)
        p.wait_line(r" Received: stuck$")
        t_sig = p.send_signal(signal.SIGTERM)
        self.assertEqual(p.wait_exit(5.0), 1)
        took = p.exit_time - t_sig
        self.report_value("signal -> forced exit, gRPC call stuck (deadline 1s)", took * 1000)
        self.assertGreaterEqual(took, 1.0)
        self.assertLess(took, 1.0 + PROMPT)
        with self.assertRaises(grpc.RpcError) as cm:
            fut.result(timeout=5.0)
        self.assertEqual(cm.exception.code(), grpc.StatusCode.UNAVAILABLE)
        self.assert_go_log_only(p)
        self.assert_phases(p, [
            r"^Shutdown started \(context canceled\): deadline 1s, delay 0s$",
            r'^Part "grpc" draining',
            r"^Shutdown phase 3 \(drain\) cut short by the deadline after \S+$",
            r'^Part "grpc" forced in \S+: 1 RPC cut, 1 connection closed$',
            r"^Shutdown phase 4 \(force\) took \S+$",
            r"^Drain report: result=forced ",
        ])
        m = self.report(p)
        self.assertEqual(m.group(1), "forced")
        self.assertEqual(m.group(6), "1")
        self.assertEqual(m.group(7), "grpc (1 RPC cut, 1 connection closed)")

    # -- systemd --------------------------------------------------------------

    def notify_socket(self):
        d = tempfile.mkdtemp(prefix="grace-notify-")
        n = NotifySocket(d)
        self.addCleanup(shutil.rmtree, d, True)
        self.addCleanup(n.close)
        return n

    def test_systemd_notify_and_socket_activation(self):
        notify = self.notify_socket()
        port = free_port()
        # -addr names a port that is taken: under socket activation it must
        # not be used.
        taken = socket.socket()
        taken.bind((gracetest.HOST, 0))
        taken.listen(1)
        self.addCleanup(taken.close)
        p = self.start(SERVER, "-addr", "127.0.0.1:%d" % taken.getsockname()[1],
                       *grpc_flag()[0],
                       wrapper=[sys.executable, "-c", ACTIVATOR, gracetest.HOST,
                                str(port), "http"],
                       env={"NOTIFY_SOCKET": notify.path})
        p.wait_port(port)
        t_ready = notify.wait_for("READY=1")
        p.wait_line(r"Serving HTTP on 1 socket from systemd \(LISTEN_FDS\)$")
        r = gracetest.get(port, "/")
        self.assertEqual((r.status, r.body), (200, b"Hello, World!\n"))
        self.assertEqual(gracetest.get(port, "/readyz").status, 200)

        c = self.client(curl("--max-time", "10",
                             "http://127.0.0.1:%d/sleep?duration=1s" % port))
        time.sleep(0.3)
        t_sig = p.send_signal(signal.SIGTERM)
        t_stopping = notify.wait_for("STOPPING=1")
        self.assertLess(t_stopping - t_sig, PROMPT)
        self.assertGreater(t_stopping, t_ready)
        notify.wait_for("EXTEND_TIMEOUT_USEC=7500000")
        self.assertEqual(c.wait(5.0), 0)
        self.assertEqual(c.stdout, b"Welcome HTTP Server")
        self.assertEqual(p.wait_exit(5.0), 0)
        notify.wait_for("STATUS=Shut down: clean")
        texts = notify.texts()
        self.assertEqual(texts[0], "READY=1\nSTATUS=Serving")
        self.assertEqual(texts[1], "STOPPING=1\nSTATUS=Shutting down: not ready")
        self.assert_phases(p, PHASES)

    def test_real_systemd_socket_activate(self):
        tool = shutil.which("systemd-socket-activate")
        if tool is None:
            self.skipTest("systemd-socket-activate is not installed (Debian package systemd)")
        notify = self.notify_socket()
        port = free_port()
        # It listens, and execs the service (same pid) at the first connection.
        p = self.start(SERVER, *grpc_flag()[0], wrapper=[tool, "-l", "127.0.0.1:%d" % port, "--fdname=web",
                                        "-E", "NOTIFY_SOCKET=" + notify.path])
        p.wait_port(port)
        notify.wait_for("READY=1")
        p.wait_line(r"Serving HTTP on 1 socket from systemd \(LISTEN_FDS\)$")
        r = gracetest.get(port, "/sleep?duration=10ms")
        self.assertEqual((r.status, r.body), (200, b"Welcome HTTP Server"))
        p.send_signal(signal.SIGTERM)
        notify.wait_for("STOPPING=1")
        self.assertEqual(p.wait_exit(5.0), 0)
        self.assertEqual(self.report(p).group(1), "clean")

    # -- valgrind -------------------------------------------------------------

    def test_graceful_run_under_valgrind_is_clean(self):
        if gracetest.SANITIZE or gracetest.TSAN:
            self.skipTest("valgrind does not mix with sanitizers: run it on a plain build")
        self.assertIsNotNone(shutil.which("valgrind"), "valgrind is not installed")
        notify = self.notify_socket()
        p, port = self.start_server("-loops", "2", "-shutdown-delay", "300ms",
                                    "-shutdown-timeout", "20s", "-interval", "200ms",
                                    "-cleanup", "200ms",
                                    wrapper=["valgrind", "--leak-check=full",
                                             "--errors-for-leak-kinds=definite,indirect",
                                             "--error-exitcode=99"],
                                    env={"NOTIFY_SOCKET": notify.path}, timeout=60.0)
        fut = None
        if grpc is not None:
            ch = self.channel(self.grpc_port)
            self.assertEqual(self.check(ch, "Greeter"), SERVING)
            fut = self.say_hello(ch).future(hello_request("world", "2s"), timeout=30)
        for path, status in [("/", 200), ("/readyz", 200), ("/livez", 200), ("/metrics", 200),
                             ("/sleep?duration=abc", 400), ("/nope", 404)]:
            self.assertEqual(gracetest.get(port, path, timeout=20.0).status, status, path)
        busy = self.conn(port, timeout=20.0)
        busy.send(gracetest.request("/sleep?duration=2s"))
        time.sleep(0.5)
        p.send_signal(signal.SIGTERM)
        r = busy.read_response(timeout=20.0)
        self.assertEqual((r.status, r.body), (200, b"Welcome HTTP Server"))
        if fut is not None:
            self.assertEqual(hello_reply_message(fut.result(timeout=20.0)), "Hello world")
        rc = p.wait_exit(60.0)
        self.assert_valgrind_clean(p, rc)
        self.assert_phases(p, PHASES[:-1] + [
            r"^Drain report: result=clean duration=\S+ requests_completed=1 "
            r"rpcs_completed=%d idle_closed=\d+ requests_cut=0$" % (fut is not None)])
        notify.wait_for("STATUS=Shut down: clean")


if __name__ == "__main__":
    gracetest.main()
