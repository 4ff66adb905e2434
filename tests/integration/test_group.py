"""The lifecycle group end to end: examples/grace-demo-server as a process.

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


class GroupTest(gracetest.ProgramTestCase):

    def start_server(self, *flags, env=None):
        port = free_port()
        p = self.start(SERVER, "-addr", "127.0.0.1:%d" % port, *flags, env=env)
        p.wait_port(port)
        return p, port

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
        p = self.start(SERVER, wrapper=[tool, "-l", "127.0.0.1:%d" % port, "--fdname=web",
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
        port = free_port()
        p = self.start(SERVER, "-addr", "127.0.0.1:%d" % port, "-loops", "2",
                       "-shutdown-delay", "300ms", "-shutdown-timeout", "20s",
                       wrapper=["valgrind", "--leak-check=full",
                                "--errors-for-leak-kinds=definite,indirect",
                                "--error-exitcode=99"],
                       env={"NOTIFY_SOCKET": notify.path})
        p.wait_port(port, timeout=60.0)
        for path, status in [("/", 200), ("/readyz", 200), ("/livez", 200), ("/metrics", 200),
                             ("/sleep?duration=abc", 400), ("/nope", 404)]:
            self.assertEqual(gracetest.get(port, path, timeout=20.0).status, status, path)
        busy = self.conn(port, timeout=20.0)
        busy.send(gracetest.request("/sleep?duration=2s"))
        time.sleep(0.5)
        p.send_signal(signal.SIGTERM)
        r = busy.read_response(timeout=20.0)
        self.assertEqual((r.status, r.body), (200, b"Welcome HTTP Server"))
        rc = p.wait_exit(60.0)
        text = p.stderr_text()
        self.assertNotEqual(rc, 99, "valgrind found errors or leaks")
        self.assertEqual(rc, 0)
        self.assertRegex(text, r"ERROR SUMMARY: 0 errors")
        if "no leaks are possible" not in text:
            self.assertRegex(text, r"definitely lost: 0 bytes in 0 blocks")
            self.assertRegex(text, r"indirectly lost: 0 bytes in 0 blocks")
        self.assert_phases(p, PHASES)
        notify.wait_for("STATUS=Shut down: clean")


if __name__ == "__main__":
    gracetest.main()
