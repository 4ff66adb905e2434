"""Shared helpers for grace's integration tests.

The tests run the real example programs (from $GRACE_BIN_DIR, default
<repo>/build/examples) as processes on 127.0.0.1, send them real signals and
talk to them with real clients: curl where the seed used curl, and the raw
sockets below where the exact bytes matter.  Python 3 standard library only.

Every wait here is bounded.  A program that does not exit in time is killed
with SIGKILL and the test fails.  Timing bounds are scaled by `bound()` when the
programs are built with sanitizers (GRACE_SANITIZE=1 or GRACE_TSAN=1), but are
kept tight enough that a design which polls (for example every 500 ms) still
breaks them.

A test module does:

    import gracetest
    class T(gracetest.ProgramTestCase):
        def test_x(self):
            port = gracetest.free_port()
            prog = self.start("http-sleep-server", "-addr", f"127.0.0.1:{port}")
            prog.wait_port(port)
            ...
    if __name__ == "__main__":
        gracetest.main()
"""

import errno
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import unittest

HOST = "127.0.0.1"

_TRUE = ("1", "on", "yes", "true", "y")


def _env_flag(name):
    return os.environ.get(name, "").strip().lower() in _TRUE


SANITIZE = _env_flag("GRACE_SANITIZE")
TSAN = _env_flag("GRACE_TSAN")
SLOW = SANITIZE or TSAN


def bin_dir():
    """The directory of the example programs: $GRACE_BIN_DIR, else build/examples."""
    d = os.environ.get("GRACE_BIN_DIR")
    if d:
        return d
    here = os.path.dirname(os.path.abspath(__file__))
    return os.path.join(os.path.dirname(os.path.dirname(here)), "build", "examples")


def bin_path(name):
    return os.path.join(bin_dir(), name)


def bound(normal, slow):
    """A timing bound: `normal` for plain builds, `slow` under sanitizers."""
    return slow if SLOW else normal


def free_port():
    """A TCP port on 127.0.0.1 that was free a moment ago (the kernel picks it)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind((HOST, 0))
        return s.getsockname()[1]
    finally:
        s.close()


def now():
    return time.monotonic()


# --------------------------------------------------------------------------
# Go log lines: "2024/08/22 09:24:46 message"

GO_LOG_RE = re.compile(r"^(\d{4}/\d\d/\d\d \d\d:\d\d:\d\d) (.*)$")


def parse_go_log(line):
    """Return (struct_time, message) for a Go `log` line, or None."""
    m = GO_LOG_RE.match(line)
    if not m:
        return None
    try:
        ts = time.strptime(m.group(1), "%Y/%m/%d %H:%M:%S")
    except ValueError:
        return None
    return ts, m.group(2)


# Lines a sanitizer or valgrind prints when it finds a bug.
SANITIZER_REPORT_RE = re.compile(
    r"ERROR: (AddressSanitizer|LeakSanitizer|ThreadSanitizer)|"
    r"WARNING: ThreadSanitizer|runtime error: |SUMMARY: UndefinedBehaviorSanitizer")


class LogLine:
    """One line of a program's output with its arrival time (monotonic)."""

    __slots__ = ("t", "text", "go_time", "msg")

    def __init__(self, t, text):
        self.t = t
        self.text = text
        parsed = parse_go_log(text)
        self.go_time = parsed[0] if parsed else None
        self.msg = parsed[1] if parsed else None

    def __repr__(self):
        return "LogLine(%.3f, %r)" % (self.t, self.text)


# --------------------------------------------------------------------------
# Processes

class Program:
    """A running program: stderr/stdout lines with arrival times, signals, exit.

    `wrapper` is a command prefix (e.g. valgrind and its options); signals go to
    the process itself, which is the program under valgrind too.
    """

    def __init__(self, name, args, wrapper=(), env=None, pass_fds=()):
        self.name = name
        path = name if os.path.isabs(name) else bin_path(name)
        if not os.access(path, os.X_OK):
            raise AssertionError(
                "program %s not found or not executable (GRACE_BIN_DIR=%s); "
                "build it first" % (path, bin_dir()))
        self.argv = list(wrapper) + [path] + [str(a) for a in args]
        self._cond = threading.Condition()
        self._lines = []        # stderr
        self._out = []          # stdout
        self.exit_time = None
        self.returncode = None
        self.signals = []       # (time, signal number)
        full_env = dict(os.environ)
        if env:
            full_env.update(env)
        self.start_time = now()
        self.proc = subprocess.Popen(
            self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, env=full_env, pass_fds=tuple(pass_fds))
        self.pid = self.proc.pid
        self._threads = [
            threading.Thread(target=self._read, args=(self.proc.stderr, self._lines), daemon=True),
            threading.Thread(target=self._read, args=(self.proc.stdout, self._out), daemon=True),
            threading.Thread(target=self._wait, daemon=True),
        ]
        for t in self._threads:
            t.start()

    def _read(self, stream, sink):
        for raw in iter(stream.readline, b""):
            t = now()
            line = LogLine(t, raw.decode("utf-8", "replace").rstrip("\r\n"))
            if os.environ.get("GRACE_TEST_ECHO"):
                sys.stderr.write("  [%s %d] %s\n" % (self.name, self.pid, line.text))
            with self._cond:
                sink.append(line)
                self._cond.notify_all()
        stream.close()

    def _wait(self):
        # A thread blocked in waitpid() learns of the exit at once; its
        # timestamp is the exit time the drain-lag measurements use.
        rc = self.proc.wait()
        t = now()
        with self._cond:
            self.exit_time = t
            self.returncode = rc
            self._cond.notify_all()

    # -- state --------------------------------------------------------------

    def running(self):
        with self._cond:
            return self.returncode is None

    def lines(self):
        """Every stderr line so far (LogLine objects)."""
        with self._cond:
            return list(self._lines)

    def stdout_lines(self):
        with self._cond:
            return list(self._out)

    def stderr_text(self):
        return "\n".join(l.text for l in self.lines())

    def go_lines(self):
        """The stderr lines in Go log format (LogLine with .msg)."""
        return [l for l in self.lines() if l.msg is not None]

    def messages(self):
        """The messages of the Go log lines, in order."""
        return [l.msg for l in self.go_lines()]

    def describe(self):
        """A dump of the program's output, for failure messages."""
        with self._cond:
            lines = list(self._lines)
            out = list(self._out)
            rc = self.returncode
        s = ["--- %s (pid %d) argv=%s exit=%s" % (self.name, self.pid, self.argv, rc)]
        for l in lines:
            s.append("  stderr +%.3fs: %s" % (l.t - self.start_time, l.text))
        for l in out:
            s.append("  stdout +%.3fs: %s" % (l.t - self.start_time, l.text))
        return "\n".join(s)

    # -- waiting ------------------------------------------------------------

    def wait_port(self, port, timeout=10.0, host=HOST):
        """Poll-connect to the port every 10 ms until it accepts (or fail)."""
        deadline = now() + timeout
        while True:
            if not self.running():
                raise AssertionError("%s exited (status %s) before listening on %d\n%s"
                                     % (self.name, self.returncode, port, self.describe()))
            try:
                s = socket.create_connection((host, port), timeout=1.0)
                s.close()
                return
            except OSError:
                pass
            if now() > deadline:
                self.kill()
                raise AssertionError("%s did not listen on %s:%d within %.1fs\n%s"
                                     % (self.name, host, port, timeout, self.describe()))
            time.sleep(0.01)

    def wait_line(self, pattern, timeout=5.0, start=0):
        """Wait for a stderr line matching the regex `pattern` (searched in the
        whole line); return the LogLine, or fail after `timeout` seconds."""
        rx = re.compile(pattern)
        deadline = now() + timeout
        with self._cond:
            while True:
                for l in self._lines[start:]:
                    if rx.search(l.text):
                        return l
                left = deadline - now()
                if left <= 0:
                    break
                if self.returncode is not None and not self._threads[0].is_alive():
                    break
                self._cond.wait(min(left, 0.05))
        raise AssertionError("no line matching %r from %s within %.1fs\n%s"
                             % (pattern, self.name, timeout, self.describe()))

    def send_signal(self, sig):
        """Send a signal; return the time it was sent."""
        t = now()
        self.proc.send_signal(sig)
        self.signals.append((t, sig))
        return t

    def wait_exit(self, timeout):
        """Wait for the exit; return the exit status.  On timeout, SIGKILL the
        program and fail."""
        deadline = now() + timeout
        with self._cond:
            while self.returncode is None:
                left = deadline - now()
                if left <= 0:
                    break
                self._cond.wait(left)
            rc = self.returncode
        if rc is None:
            stacks = self.thread_stacks()
            self.kill()
            raise AssertionError("%s did not exit within %.1fs; killed with SIGKILL\n%s%s"
                                 % (self.name, timeout, self.describe(), stacks))
        self._join_readers()
        return rc

    def thread_stacks(self):
        """What every thread of the program is doing (gdb, when installed and
        allowed to attach), for a failure that found it stuck; "" otherwise."""
        gdb = shutil.which("gdb")
        if gdb is None or self.returncode is not None:
            return ""
        try:
            out = subprocess.run([gdb, "-p", str(self.proc.pid), "-batch", "-nx",
                                  "-ex", "thread apply all bt"],
                                 stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, timeout=30).stdout
        except (OSError, subprocess.TimeoutExpired):
            return ""
        lines = [l for l in out.decode(errors="replace").splitlines()
                 if l.startswith(("Thread ", "#"))]
        return "--- its threads when it was found stuck:\n%s\n" % "\n".join(lines[:200])

    def _join_readers(self):
        # Output written just before the exit is still in the pipes; the
        # readers end at EOF (bounded: a leftover child holding the pipe would
        # otherwise keep them alive).
        for t in self._threads[:2]:
            t.join(2.0)

    def kill(self):
        """SIGKILL the program if it still runs and reap it."""
        if self.running():
            try:
                self.proc.kill()
            except ProcessLookupError:
                pass
        self._threads[2].join(10.0)
        self._join_readers()

    def sanitizer_reports(self):
        """Lines where a sanitizer reported a bug."""
        return [l.text for l in self.lines() if SANITIZER_REPORT_RE.search(l.text)]


def run_program(name, args, timeout=10.0, wrapper=(), env=None):
    """Run a program to completion; return the Program (exit status in
    .returncode).  Fails (after SIGKILL) if it runs longer than `timeout`."""
    p = Program(name, args, wrapper=wrapper, env=env)
    p.wait_exit(timeout)
    return p


class Client:
    """An external client process (curl, ...) with its output and exit time."""

    def __init__(self, argv):
        self.argv = list(argv)
        self.start_time = now()
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.exit_time = None
        self.stdout = b""
        self.stderr = b""
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        out, err = self.proc.communicate()
        # communicate() returns at EOF of both pipes, i.e. when the process
        # exits (it does not fork); the waitpid below is immediate.
        self.proc.wait()
        self.exit_time = now()
        self.stdout, self.stderr = out, err
        self._done.set()

    def running(self):
        return not self._done.is_set()

    def wait(self, timeout):
        if not self._done.wait(timeout):
            self.proc.kill()
            self._done.wait(5.0)
            raise AssertionError("%s did not finish within %.1fs" % (self.argv, timeout))
        return self.proc.returncode

    def kill(self):
        if self.running():
            try:
                self.proc.kill()
            except ProcessLookupError:
                pass
            self._done.wait(5.0)


def curl(*args):
    """Start curl (silent, but errors shown, as `curl -sS`)."""
    return Client(["curl", "-sS", "--no-progress-meter"] + [str(a) for a in args])


# --------------------------------------------------------------------------
# Raw HTTP/1.x client

class Response:
    __slots__ = ("version", "status", "reason", "headers", "body", "raw", "t_done")

    def __init__(self, version, status, reason, headers, body, raw, t_done):
        self.version = version
        self.status = status
        self.reason = reason
        self.headers = headers      # list of (lower-case name, value)
        self.body = body
        self.raw = raw
        self.t_done = t_done        # arrival time of the last byte

    def header(self, name):
        """The value of the first header called `name`, or None."""
        name = name.lower()
        for k, v in self.headers:
            if k == name:
                return v
        return None

    def header_values(self, name):
        name = name.lower()
        return [v for k, v in self.headers if k == name]

    def has_token(self, name, token):
        """True if the comma-separated header `name` contains `token`."""
        token = token.lower()
        for v in self.header_values(name):
            if token in [t.strip().lower() for t in v.split(",")]:
                return True
        return False

    def __repr__(self):
        return "Response(%s %d %r, headers=%r, body=%r)" % (
            self.version, self.status, self.reason, self.headers, self.body[:200])


class ProtocolError(AssertionError):
    pass


class HttpConn:
    """A raw TCP connection to an HTTP/1.x server: send bytes, parse responses.

    Reads are bounded by the `timeout` of each call.  The end of the stream is
    recorded as ("eof" | "reset", time) in .closed.
    """

    def __init__(self, port, host=HOST, timeout=5.0):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.connect_time = now()
        self.buf = b""
        self.closed = None

    def send(self, data):
        self.sock.sendall(data)

    def try_send(self, data):
        """Send, ignoring a connection the server has already closed.
        Returns True if every byte was handed to the kernel."""
        try:
            self.sock.sendall(data)
            return True
        except (BrokenPipeError, ConnectionResetError):
            return False

    def _fill(self, deadline):
        """Read more bytes into buf; False at end of stream; fails on timeout."""
        if self.closed:
            return False
        left = deadline - now()
        if left <= 0:
            raise socket.timeout("timed out")
        self.sock.settimeout(left)
        try:
            data = self.sock.recv(65536)
        except ConnectionResetError:
            self.closed = ("reset", now())
            return False
        if not data:
            self.closed = ("eof", now())
            return False
        self.buf += data
        return True

    def read_response(self, timeout=5.0, head_request=False):
        """Read one response (status line, headers, body by Content-Length,
        chunked, or until close).  Fails on timeout or a premature close."""
        deadline = now() + timeout
        try:
            while b"\r\n\r\n" not in self.buf:
                if not self._fill(deadline):
                    raise ProtocolError("connection %s before a complete response head; got %r"
                                        % (self.closed[0], self.buf[:500]))
            head, _, rest = self.buf.partition(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            m = re.match(r"^(HTTP/\d\.\d) (\d{3})(?: (.*))?$", lines[0])
            if not m:
                raise ProtocolError("bad status line %r" % lines[0])
            version, status, reason = m.group(1), int(m.group(2)), m.group(3) or ""
            headers = []
            for l in lines[1:]:
                name, sep, value = l.partition(":")
                if not sep or not name or name != name.strip():
                    raise ProtocolError("bad header line %r" % l)
                headers.append((name.lower(), value.strip()))
            resp = Response(version, status, reason, headers, b"", head + b"\r\n\r\n", None)
            self.buf = rest
            te = resp.header("transfer-encoding")
            cl = resp.header("content-length")
            if head_request or status in (204, 304) or 100 <= status < 200:
                body = b""
            elif te is not None and "chunked" in te.lower():
                body = self._read_chunked(deadline)
            elif cl is not None:
                if len(resp.header_values("content-length")) != 1 or not cl.isdigit():
                    raise ProtocolError("bad Content-Length in %r" % resp.headers)
                n = int(cl)
                while len(self.buf) < n:
                    if not self._fill(deadline):
                        raise ProtocolError("connection %s after %d of %d body bytes"
                                            % (self.closed[0], len(self.buf), n))
                body, self.buf = self.buf[:n], self.buf[n:]
            else:
                while self._fill(deadline):
                    pass
                body, self.buf = self.buf, b""
            resp.body = body
            resp.raw += body
            resp.t_done = now()
            return resp
        except socket.timeout:
            raise AssertionError("no complete response within %.1fs; got %r"
                                 % (timeout, self.buf[:500]))

    def _read_chunked(self, deadline):
        body = b""
        while True:
            while b"\r\n" not in self.buf:
                if not self._fill(deadline):
                    raise ProtocolError("closed inside chunked body")
            line, _, self.buf = self.buf.partition(b"\r\n")
            size = int(line.split(b";")[0].strip(), 16)
            if size == 0:
                while True:     # trailers, up to the empty line
                    while b"\r\n" not in self.buf:
                        if not self._fill(deadline):
                            raise ProtocolError("closed inside chunked trailers")
                    t, _, self.buf = self.buf.partition(b"\r\n")
                    if t == b"":
                        return body
            while len(self.buf) < size + 2:
                if not self._fill(deadline):
                    raise ProtocolError("closed inside a chunk")
            body += self.buf[:size]
            if self.buf[size:size + 2] != b"\r\n":
                raise ProtocolError("chunk not followed by CRLF")
            self.buf = self.buf[size + 2:]

    def read_until_close(self, timeout=5.0):
        """Read until the server closes; return (bytes, how, time) where how is
        "eof", "reset" or "timeout" (time is None on timeout)."""
        deadline = now() + timeout
        try:
            while self._fill(deadline):
                pass
        except socket.timeout:
            data, self.buf = self.buf, b""
            return data, "timeout", None
        data, self.buf = self.buf, b""
        return data, self.closed[0], self.closed[1]

    def expect_close(self, timeout=2.0):
        """Assert that the server closes with no further bytes; return the time."""
        data, how, t = self.read_until_close(timeout)
        if how == "timeout":
            raise AssertionError("connection still open %.1fs later (got %r)" % (timeout, data))
        if data:
            raise AssertionError("unexpected bytes before close: %r" % data[:500])
        return t

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def request(path="/", method="GET", version="HTTP/1.1", headers=(), body=b""):
    """The bytes of one request; Host is added for HTTP/1.1."""
    lines = ["%s %s %s" % (method, path, version)]
    names = [h[0].lower() for h in headers]
    if version == "HTTP/1.1" and "host" not in names:
        lines.append("Host: %s" % HOST)
    for k, v in headers:
        lines.append("%s: %s" % (k, v))
    if body and "content-length" not in names and "transfer-encoding" not in names:
        lines.append("Content-Length: %d" % len(body))
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def get(port, path="/", timeout=5.0, headers=(("Connection", "close"),)):
    """One request on a fresh connection; return the Response."""
    c = HttpConn(port, timeout=timeout)
    try:
        c.send(request(path, headers=headers))
        return c.read_response(timeout)
    finally:
        c.close()


def exchange(port, data, timeout=5.0):
    """Connect, send `data` (from a thread, tolerating a server that answers
    and closes before reading it all), read until the server closes.
    Returns (bytes, how, time) as HttpConn.read_until_close."""
    c = HttpConn(port, timeout=timeout)
    sender = threading.Thread(target=c.try_send, args=(data,), daemon=True)
    sender.start()
    try:
        return c.read_until_close(timeout)
    finally:
        c.close()
        sender.join(timeout)


def exchange_response(port, data, timeout=5.0):
    """Connect, send `data` from a thread (tolerating an early close), and
    return the first Response."""
    c = HttpConn(port, timeout=timeout)
    sender = threading.Thread(target=c.try_send, args=(data,), daemon=True)
    sender.start()
    try:
        return c.read_response(timeout)
    finally:
        c.close()
        sender.join(timeout)


def connect_error(port, host=HOST, timeout=1.0):
    """Try to connect; return None if accepted, else the errno."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect((host, port))
        return None
    except socket.timeout:
        return errno.ETIMEDOUT
    except OSError as e:
        return e.errno
    finally:
        s.close()


# --------------------------------------------------------------------------
# Processes that outlive their parent (zero-downtime upgrades)

PR_SET_CHILD_SUBREAPER = 36


def become_subreaper():
    """Makes this process a child subreaper: descendants orphaned by their
    parent's exit (the generations of an upgraded program) are reparented
    to it instead of init, so a test can reap them and see their status."""
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")


def proc_state(pid):
    """The state letter of |pid| ("Z" for a zombie), or None if it is gone."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            stat = f.read()
    except OSError:
        return None
    return stat[stat.rindex(")") + 2:].split()[0]


def children():
    """(pid, state letter) of every process whose parent is this one."""
    me = os.getpid()
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % d) as f:
                stat = f.read()
        except OSError:
            continue
        rest = stat[stat.rindex(")") + 2:].split()
        if int(rest[1]) == me:
            out.append((int(d), rest[0]))
    return out


class BackgroundClient:
    """A normal client running beside a test: a fresh connection per request,
    one request every `interval`, each checked against `check(resp)` (default:
    200 "Hello, World!\\n" for GET /).  Use as a context manager; on exit it
    fails if any request failed or none completed."""

    def __init__(self, port, path="/", interval=0.02, timeout=2.0, check=None):
        self.port = port
        self.path = path
        self.interval = interval
        self.timeout = timeout
        self.check = check or (lambda r: r.status == 200 and r.body == b"Hello, World!\n")
        self.ok = 0
        self.errors = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while True:
            try:
                r = get(self.port, self.path, timeout=self.timeout)
                if self.check(r):
                    self.ok += 1
                else:
                    self.errors.append("unexpected response %r" % r)
            except (OSError, AssertionError) as e:
                self.errors.append("%s: %s" % (type(e).__name__, e))
            if self._stop.wait(self.interval):
                return

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(self.timeout + 5.0)
        if exc[0] is None:
            if self.errors:
                raise AssertionError("a concurrent normal client was disturbed (%d ok): %s"
                                     % (self.ok, self.errors[:5]))
            if self.ok < 1:
                raise AssertionError("the concurrent normal client completed no request")
        return False


# --------------------------------------------------------------------------
# unittest glue

class ProgramTestCase(unittest.TestCase):
    """A TestCase that owns the programs and clients it starts: they are
    killed after the test, their output is shown when the test fails, and a
    sanitizer report in their output fails the test."""

    def setUp(self):
        self.programs = []
        self.clients = []
        self.conns = []

    def tearDown(self):
        for c in self.conns:
            c.close()
        for c in self.clients:
            c.kill()
        for p in self.programs:
            p.kill()
        reports = [(p, p.sanitizer_reports()) for p in self.programs]
        for p, rep in reports:
            if rep:
                self.fail("sanitizer report from %s:\n%s" % (p.name, p.describe()))

    def start(self, name, *args, wrapper=(), env=None, pass_fds=()):
        p = Program(name, args, wrapper=wrapper, env=env, pass_fds=pass_fds)
        self.programs.append(p)
        return p

    def client(self, client):
        self.clients.append(client)
        return client

    def conn(self, port, timeout=5.0):
        c = HttpConn(port, timeout=timeout)
        self.conns.append(c)
        return c

    def dump(self):
        return "\n".join(p.describe() for p in getattr(self, "programs", []))

    def assert_valgrind_clean(self, p, rc, possibly=False):
        """Assert that `p`, run under `VALGRIND` and exited with `rc`, exited 0
        with no memory error and no definite or indirect leak (nor a possible
        one with `possibly`), and print valgrind's summary."""
        text = p.stderr_text()
        self.assertNotEqual(rc, 99, "valgrind found errors or leaks")
        self.assertEqual(rc, 0)
        self.assertRegex(text, r"ERROR SUMMARY: 0 errors")
        if "no leaks are possible" not in text:
            self.assertRegex(text, r"definitely lost: 0 bytes in 0 blocks")
            self.assertRegex(text, r"indirectly lost: 0 bytes in 0 blocks")
            if possibly:
                self.assertRegex(text, r"possibly lost: 0 bytes in 0 blocks")
        summary = [l for l in text.splitlines() if re.search(
            r"in use at exit|lost:|reachable:|no leaks are possible|ERROR SUMMARY", l)]
        sys.stderr.write("    valgrind: %s\n" % " | ".join(
            re.sub(r"^==\d+== *", "", l) for l in summary))

    def report(self, what, value, unit="ms"):
        """Print a measured value (seen in the test log)."""
        sys.stderr.write("    measured: %s = %.1f %s\n" % (what, value, unit))


class _Result(unittest.TextTestResult):
    """Shows the programs' output under a failing test."""

    def _dump(self, test):
        if isinstance(test, ProgramTestCase):
            d = test.dump()
            if d:
                self.stream.writeln(d)

    def addFailure(self, test, err):
        super().addFailure(test, err)
        self._dump(test)

    def addError(self, test, err):
        super().addError(test, err)
        self._dump(test)


def main():
    """Run the calling module's tests; exit 0 on success (skips included),
    1 on failure.  Output ends with unittest's usual summary."""
    sys.stderr.write("GRACE_BIN_DIR=%s sanitizers=%s\n" % (bin_dir(), "yes" if SLOW else "no"))
    runner = unittest.TextTestRunner(verbosity=2, resultclass=_Result)
    prog = unittest.main(module="__main__", testRunner=runner, exit=False)
    sys.exit(0 if prog.result.wasSuccessful() else 1)
