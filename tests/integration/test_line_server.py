#!/usr/bin/env python3
"""examples/line-server end to end: a caller's own TCP protocol (grace/tcp.h)
gets the graceful shutdown of the HTTP server.

The protocol: PING -> +PONG, ECHO x -> $x, SLEEP d -> +OK after d (busy
meanwhile), QUIT -> +BYE and close, anything else -ERR unknown command, a
line over -max-line -> -ERR line too long and close.

At the first signal: a client mid-command (SLEEP 1s) gets its answer and
the server exits 0 right after it; an idle client is closed at once; new
connections are refused.  A command that never ends (SLEEP 1h) is cut at
-shutdown-timeout: exit 1, the drain report says 1 cut.  1,000 pipelined
commands in one write are all answered, in order.  A client that never
reads does not grow the server's memory: the server stops reading it, and
once it reads, every answer is there.  A second signal exits 1 at once.  An
upgrade (SIGUSR2) under PING loops loses nothing.  A graceful run under
valgrind is clean.
"""

import ctypes
import errno
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
from gracetest import HOST, bound, free_port, now

SERVER = "line-server"

# How long after an event (signal, last answer) the server must act.
PROMPT = bound(0.100, 0.300)

REPORT_RE = re.compile(
    r"Drain report: result=(\w+) duration=(\S+) requests_completed=(\d+) "
    r"rpcs_completed=(\d+) idle_closed=(\d+) requests_cut=(\d+)(?: cut=\"(.*)\")?$")

PR_SET_CHILD_SUBREAPER = 36


class LineConn:
    """A client connection: send lines, read lines (CRLF), see the close."""

    def __init__(self, port, timeout=5.0):
        self.sock = socket.create_connection((HOST, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.closed = None  # ("eof" | "reset", time)

    def send(self, data):
        self.sock.sendall(data if isinstance(data, bytes) else data.encode())

    def _fill(self, deadline):
        if self.closed:
            return False
        left = deadline - now()
        if left <= 0:
            raise socket.timeout("timed out")
        self.sock.settimeout(left)
        try:
            data = self.sock.recv(1 << 20)
        except ConnectionResetError:
            self.closed = ("reset", now())
            return False
        if not data:
            self.closed = ("eof", now())
            return False
        self.buf += data
        return True

    def line(self, timeout=5.0):
        """The next line without its CRLF, or None at the close."""
        deadline = now() + timeout
        while b"\r\n" not in self.buf:
            if not self._fill(deadline):
                return None
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line.decode("utf-8", "replace")

    def lines(self, n, timeout=10.0):
        deadline = now() + timeout
        out = []
        while len(out) < n:
            l = self.line(max(0.001, deadline - now()))
            if l is None:
                break
            out.append(l)
        return out

    def wait_close(self, timeout=2.0):
        """(bytes before the close, how, time); how is "timeout" if open."""
        deadline = now() + timeout
        try:
            while self._fill(deadline):
                pass
        except socket.timeout:
            data, self.buf = self.buf, b""
            return data, "timeout", None
        data, self.buf = self.buf, b""
        return data, self.closed[0], self.closed[1]

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for l in f:
            if l.startswith("VmRSS:"):
                return int(l.split()[1])
    return 0


class LineServerTest(gracetest.ProgramTestCase):

    def serve(self, *flags, wrapper=(), timeout=10.0):
        port = free_port()
        p = self.start(SERVER, "-addr", "%s:%d" % (HOST, port), *flags, wrapper=wrapper)
        p.wait_port(port, timeout=timeout)
        p.wait_line(r"Serving the line protocol on ", timeout=timeout)
        return p, port

    def line_conn(self, port, timeout=5.0):
        c = LineConn(port, timeout)
        self.conns.append(c)
        return c

    def drain_report(self, p):
        l = p.wait_line(r"Drain report: ")
        m = REPORT_RE.search(l.text)
        self.assertIsNotNone(m, l.text)
        return m

    # -- the protocol ----------------------------------------------------------

    def test_commands(self):
        p, port = self.serve("-max-line", "64")
        c = self.line_conn(port)
        c.send("PING\r\nping\nECHO hello world\r\nPING hi\r\nNOPE\r\n\r\n"
               "SLEEP 50ms\r\nSLEEP abc\r\nECHO\r\n")
        self.assertEqual(c.lines(8), [
            "+PONG", "+PONG", "$hello world", "$hi", "-ERR unknown command", "+OK",
            '-ERR time: invalid duration "abc"',
            "-ERR wrong number of arguments for 'echo'"])
        c.send("QUIT\r\nPING\r\n")
        self.assertEqual(c.line(), "+BYE")
        data, how, _ = c.wait_close()
        self.assertEqual((data, how), (b"", "eof"))
        # A line over -max-line: the error, then the close, even unfinished.
        for tail in (b"\r\n", b""):
            d = self.line_conn(port)
            d.send(b"ECHO " + b"x" * 100 + tail)
            self.assertEqual(d.line(), "-ERR line too long")
            self.assertEqual(d.wait_close()[1], "eof")
        p.send_signal(signal.SIGTERM)
        self.assertEqual(p.wait_exit(10.0), 0)

    def test_pipelined_commands_in_one_write_are_all_answered_in_order(self):
        p, port = self.serve("-loops", "2")
        c = self.line_conn(port)
        c.send(b"".join(b"ECHO %d\r\n" % i for i in range(1000)) +
               b"PING\r\n" * 1000)
        got = c.lines(2000, timeout=bound(10.0, 30.0))
        self.assertEqual(got, ["$%d" % i for i in range(1000)] + ["+PONG"] * 1000)
        p.send_signal(signal.SIGTERM)
        self.assertEqual(p.wait_exit(10.0), 0)

    # -- the shutdown ----------------------------------------------------------

    def test_signal_answers_the_command_in_progress_closes_idle_refuses_new(self):
        p, port = self.serve("-loops", "2", "-shutdown-timeout", "10s")
        idle = self.line_conn(port)
        idle.send("PING\r\n")
        self.assertEqual(idle.line(), "+PONG")
        busy = self.line_conn(port)
        t_cmd = now()
        busy.send("SLEEP 1s\r\n")
        time.sleep(0.2)
        t_sig = p.send_signal(signal.SIGTERM)
        # The idle client: closed at once, nothing written.
        data, how, t_close = idle.wait_close(2.0)
        self.assertEqual((data, how), (b"", "eof"))
        self.assertLess(t_close - t_sig, PROMPT)
        # New connections: refused once the signal is handled.
        deadline = now() + PROMPT
        while gracetest.connect_error(port) != errno.ECONNREFUSED:
            self.assertLess(now(), deadline, "a new connection was accepted after the signal")
            time.sleep(0.005)
        # The client mid-command: its answer, then the close, then the exit.
        self.assertEqual(busy.line(3.0), "+OK")
        t_ok = now()
        self.assertGreater(t_ok - t_cmd, 0.95)
        self.assertEqual(busy.wait_close(2.0)[1], "eof")
        self.assertEqual(p.wait_exit(5.0), 0)
        self.report("last answer to exit", (p.exit_time - t_ok) * 1000)
        self.assertLess(p.exit_time - t_ok, PROMPT)
        m = self.drain_report(p)
        self.assertEqual(m.group(1), "clean")
        self.assertEqual(m.group(3), "1")   # the SLEEP completed
        self.assertEqual(m.group(5), "1")   # the idle client
        self.assertEqual(m.group(6), "0")

    def test_a_command_that_never_ends_is_cut_at_the_deadline(self):
        p, port = self.serve("-shutdown-timeout", "1s")
        c = self.line_conn(port)
        c.send("PING\r\nSLEEP 1h\r\n")
        self.assertEqual(c.line(), "+PONG")
        time.sleep(0.1)
        t_sig = p.send_signal(signal.SIGTERM)
        data, how, t_close = c.wait_close(bound(3.0, 6.0))
        self.assertEqual(data, b"")
        self.assertIn(how, ("eof", "reset"))
        self.assertGreater(t_close - t_sig, 0.95)
        self.assertEqual(p.wait_exit(5.0), 1)
        self.assertLess(p.exit_time - t_sig, 1.0 + bound(0.5, 1.5))
        m = self.drain_report(p)
        self.assertEqual(m.group(1), "forced")
        self.assertEqual(m.group(6), "1")
        self.assertEqual(m.group(7), "line (1 busy connection cut, 1 connection closed)")

    def test_second_signal_exits_1_at_once(self):
        p, port = self.serve()
        c = self.line_conn(port)
        c.send("SLEEP 10s\r\n")
        time.sleep(0.1)
        p.send_signal(signal.SIGTERM)
        p.wait_line(r"draining")
        t = p.send_signal(signal.SIGINT)
        self.assertEqual(p.wait_exit(5.0), 1)
        # ThreadSanitizer runs a signal's handler only once the receiving
        # thread makes a call it intercepts, which can take a second while
        # the thread sits in poll(2) (as in test_group and
        # test_http_shutdown).
        self.assertLess(p.exit_time - t, 2.0 if gracetest.TSAN else PROMPT)
        self.assertFalse(any("Drain report" in l.text for l in p.lines()))

    # -- backpressure ----------------------------------------------------------

    def test_a_client_that_never_reads_does_not_grow_the_server(self):
        p, port = self.serve("-loops", "1")
        c = self.line_conn(port, timeout=60.0)
        c.sock.setblocking(True)
        c.sock.settimeout(None)
        chunk = b"PING\r\n" * 10000        # 60,000 bytes per send call
        sent = [0]
        stop = threading.Event()

        def sender():
            while not stop.is_set():
                view = memoryview(chunk)
                while view:
                    n = c.sock.send(view)
                    view = view[n:]
                    sent[0] += n
        rss0 = rss_kb(p.pid)
        th = threading.Thread(target=sender, daemon=True)
        th.start()
        # The server stops reading: the client's sends stall (kernel
        # buffers, 64 KiB of input and 256 KiB of answers per connection)
        # for good.  Wait for that stall rather than a fixed time (a server
        # slowed by a sanitizer or a loaded machine gets there later, not
        # never); one that kept reading would have the client send on,
        # well past 64 MB, and its answers would grow its memory.
        deadline = now() + bound(20.0, 60.0)
        last, still_since = sent[0], now()
        while now() - still_since < 1.5:
            self.assertLess(now(), deadline,
                            "the client could still send (%d bytes so far)" % sent[0])
            self.assertLess(sent[0], 64e6)
            time.sleep(0.1)
            if sent[0] != last:
                last, still_since = sent[0], now()
        s2 = sent[0]
        rss1 = rss_kb(p.pid)
        self.report("sent before the server stopped reading", s2 / 1e6, "MB")
        self.report("server RSS growth", (rss1 - rss0) / 1024.0, "MB")
        self.assertLess(s2, 64e6)
        self.assertLess(rss1 - rss0, bound(32 * 1024, 400 * 1024))
        # Once the client reads, every answer is there, nothing dropped.
        stop.set()
        want = None
        count = 0
        deadline = now() + bound(30.0, 120.0)
        c.sock.settimeout(5.0)
        buf = b""
        while True:
            if want is None and not th.is_alive():
                want = sent[0] // 6
            if want is not None and count >= want:
                break
            self.assertLess(now(), deadline, "answers missing: %d of %s" % (count, want))
            data = c.sock.recv(1 << 20)
            self.assertTrue(data, "closed after %d answers" % count)
            buf += data
            end = buf.rfind(b"\r\n") + 2
            whole, buf = buf[:end], buf[end:]
            k = whole.count(b"+PONG\r\n")
            self.assertEqual(k * 7, len(whole), "not only +PONG: %r" % whole[:200])
            count += k
        th.join(5.0)
        self.assertEqual(count, sent[0] // 6)
        p.send_signal(signal.SIGTERM)
        self.assertEqual(p.wait_exit(10.0), 0)

    # -- upgrade ---------------------------------------------------------------

    def test_upgrade_under_ping_loops_loses_nothing(self):
        libc = ctypes.CDLL(None, use_errno=True)
        self.assertEqual(libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0), 0)
        tmp = tempfile.mkdtemp(prefix="grace-line-")
        self.addCleanup(shutil.rmtree, tmp, True)
        pidfile = os.path.join(tmp, "line.pid")
        p, port = self.serve("-loops", "2", "-pidfile", pidfile,
                             "-upgrade-socket", os.path.join(tmp, "control.sock"))
        pids = [p.pid]
        self.addCleanup(self.kill_generations, pids)
        stop = threading.Event()
        probe = {"ok": 0, "errors": []}
        loop = {"ok": 0, "reconnects": 0, "errors": []}

        def prober():
            # A new connection for each PING.
            while not stop.is_set():
                try:
                    c = LineConn(port, timeout=5.0)
                    try:
                        c.send("PING\r\n")
                        l = c.line(5.0)
                    finally:
                        c.close()
                    if l == "+PONG":
                        probe["ok"] += 1
                    else:
                        probe["errors"].append("got %r (%s)" % (l, c.closed))
                except OSError as e:
                    probe["errors"].append("%s: %s" % (type(e).__name__, e))
                stop.wait(0.003)

        def looper():
            # One connection, PING after PING; a close between two of them
            # is followed by a new connection and the same PING again.
            c = None
            while not stop.is_set():
                try:
                    if c is None:
                        c = LineConn(port, timeout=5.0)
                    c.send("PING\r\n")
                    l = c.line(5.0)
                    if l == "+PONG":
                        loop["ok"] += 1
                        continue
                    if l is not None:
                        loop["errors"].append("got %r" % l)
                    loop["reconnects"] += 1
                    c.close()
                    c = None
                except (BrokenPipeError, ConnectionResetError):
                    loop["reconnects"] += 1
                    c.close()
                    c = None
                except OSError as e:
                    loop["errors"].append("%s: %s" % (type(e).__name__, e))
                    stop.set()
            if c is not None:
                c.close()

        threads = [threading.Thread(target=prober, daemon=True),
                   threading.Thread(target=looper, daemon=True)]
        for t in threads:
            t.start()
        time.sleep(0.5)
        for _ in range(3):
            old = pids[-1]
            os.kill(old, signal.SIGUSR2)
            deadline = now() + bound(10.0, 30.0)
            new = old
            while new == old:
                self.assertLess(now(), deadline, "no upgrade\n" + self.dump())
                try:
                    with open(pidfile) as f:
                        new = int(f.read().strip() or old)
                except (FileNotFoundError, ValueError):
                    pass
                time.sleep(0.005)
            pids.append(new)
            # The old generation drains (its idle connections over the
            # one-second spread) and exits 0.
            self.assertEqual(self.reap(old, bound(10.0, 30.0)), 0)
            time.sleep(0.3)
        stop.set()
        for t in threads:
            t.join(10.0)
        self.report("PINGs on fresh connections", probe["ok"], "")
        self.report("PINGs on one connection", loop["ok"], "")
        self.report("its reconnections between PINGs", loop["reconnects"], "")
        self.assertEqual(probe["errors"], [])
        self.assertEqual(loop["errors"], [])
        self.assertGreater(probe["ok"], 50)
        self.assertGreater(loop["ok"], 50)
        for m in [REPORT_RE.search(l.text) for l in p.lines() if "Drain report" in l.text]:
            self.assertEqual(m.group(1), "clean")
        os.kill(pids[-1], signal.SIGTERM)
        self.assertEqual(self.reap(pids[-1], 10.0), 0)

    def reap(self, pid, timeout):
        if pid == self.programs[0].pid:
            return self.programs[0].wait_exit(timeout)
        deadline = now() + timeout
        while True:
            try:
                got, st = os.waitpid(pid, os.WNOHANG)
                if got == pid:
                    return os.waitstatus_to_exitcode(st)
            except ChildProcessError:
                pass  # its parent still runs: not ours yet
            if now() > deadline:
                raise AssertionError("generation %d did not exit within %.1fs\n%s"
                                     % (pid, timeout, self.dump()))
            time.sleep(0.005)

    def kill_generations(self, pids):
        for pid in pids[1:]:
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass

    # -- valgrind --------------------------------------------------------------

    def test_graceful_run_under_valgrind_is_clean(self):
        if gracetest.SANITIZE or gracetest.TSAN:
            self.skipTest("valgrind does not mix with sanitizers: run it on a plain build")
        self.assertIsNotNone(shutil.which("valgrind"), "valgrind is not installed")
        p, port = self.serve("-loops", "2", "-shutdown-timeout", "20s",
                             wrapper=["valgrind", "--leak-check=full",
                                      "--errors-for-leak-kinds=definite,indirect",
                                      "--error-exitcode=99"], timeout=60.0)
        a = self.line_conn(port, timeout=30.0)
        a.send("PING\r\nECHO valgrind\r\nSLEEP 10ms\r\nNOPE\r\n" + "PING\r\n" * 100)
        self.assertEqual(a.lines(104, timeout=30.0)[:4],
                         ["+PONG", "$valgrind", "+OK", "-ERR unknown command"])
        b = self.line_conn(port, timeout=30.0)
        b.send("QUIT\r\n")
        self.assertEqual(b.line(30.0), "+BYE")
        busy = self.line_conn(port, timeout=30.0)
        busy.send("SLEEP 1s\r\n")
        time.sleep(0.3)
        p.send_signal(signal.SIGTERM)
        self.assertEqual(busy.line(30.0), "+OK")
        rc = p.wait_exit(60.0)
        self.assert_valgrind_clean(p, rc)
        self.assertEqual(self.drain_report(p).group(1), "clean")


if __name__ == "__main__":
    gracetest.main()
