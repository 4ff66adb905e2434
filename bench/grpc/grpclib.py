"""Shared helpers of the grace gRPC benchmarks: find or build the three
Greeter servers (ours = examples/greeter-server, the grpc-go peer, the C++
gRPC C-core peer), start and stop them on 127.0.0.1, check them with a real
gRPC client (grpcio), and a small HTTP/2 gRPC client whose every frame and
every wake-up we control (for the shutdown timings).

Used as a module by bench/grpc_shutdown.py, and as a small command line by
bench/grpc_throughput.sh:

    python3 grpclib.py find-ours       # path of our greeter-server, or exit 1
    python3 grpclib.py build-go        # build the grpc-go peer, print its path
    python3 grpclib.py build-cpp       # build the C++ peer, print its path
    python3 grpclib.py check PORT      # one SayHello with grpcio: exit 0 if OK
    python3 grpclib.py count-received LOG   # "Received:" lines in a server log

Needs /usr/bin/python3 with python3-grpcio (check) and python3-hpack (the
HTTP/2 client's header decoding).
"""

import os
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

GRPC_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(GRPC_DIR.parent))

import benchlib  # noqa: E402  (bench/benchlib.py: log, wait_port, median...)
import payload  # noqa: E402  (bench/grpc/payload.py: protobuf and gRPC framing)

from benchlib import REPO_DIR, OUT_DIR, log  # noqa: E402

OURS_NAME = "greeter-server"
SERVER_NAMES = ("ours", "go", "cpp")
METHOD = "/Greeter/SayHello"  # examples/proto/helloworld.proto has no package


def find_ours():
    """Our greeter-server, or None.

    GRACE_BENCH_GRPC_OURS wins; then build-bench-grpc/ (run_all.sh's
    Release build of it), build-bench/, then the developers' build/ tree.
    """
    explicit = os.environ.get("GRACE_BENCH_GRPC_OURS")
    if explicit:
        return explicit if os.access(explicit, os.X_OK) else None
    for d in ("build-bench-grpc", "build-bench", "build"):
        p = REPO_DIR / d / "examples" / OURS_NAME
        if p.is_file() and os.access(p, os.X_OK):
            return str(p)
    return None


def _build(script):
    r = subprocess.run([str(script), str(OUT_DIR / "grpc")], stdout=subprocess.PIPE, check=True)
    return r.stdout.decode().strip().splitlines()[-1]


def build_go():
    """bench/grpc/go-greeter/build.sh: GOPATH mode, Debian's grpc-go, offline."""
    return _build(GRPC_DIR / "go-greeter" / "build.sh")


def build_cpp():
    """bench/grpc/cpp-greeter/build.sh: g++ with Debian's libgrpc++-dev."""
    return _build(GRPC_DIR / "cpp-greeter" / "build.sh")


def select_servers(arg):
    """Parse --servers; drop ours with a SKIP line when it is not built."""
    names = [s.strip() for s in arg.split(",") if s.strip()]
    for n in names:
        if n not in SERVER_NAMES:
            raise SystemExit(f"unknown server {n!r} (ours, go, cpp)")
    paths = {}
    if "ours" in names:
        ours = find_ours()
        if ours is None:
            log("SKIP ours: examples/greeter-server is not built (looked in "
                "$GRACE_BENCH_GRPC_OURS, build-bench-grpc/examples, build-bench/examples, "
                "build/examples)")
            names.remove("ours")
        else:
            log(f"ours: {ours}")
            if benchlib.is_sanitized(ours):
                log("WARNING: ours is built with a sanitizer; its figures are not meaningful")
            paths["ours"] = ours
    if "go" in names:
        paths["go"] = build_go()
    if "cpp" in names:
        paths["cpp"] = build_cpp()
    return names, paths


class GreeterServer:
    """One running Greeter server: ours, go or cpp; SIGTERM is the graceful stop."""

    def __init__(self, name, port, path, tag, shutdown_timeout=None):
        self.name = name
        self.port = port
        self.proc = None
        logs = OUT_DIR / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        self.log_path = logs / f"grpc-{tag}-{name}.log"
        # Ours listens on all addresses (its contract has -port only); the
        # peers are told to keep to loopback. Clients use 127.0.0.1 for all.
        self.argv = [path, "-port", str(port)]
        if name != "ours":
            self.argv += ["-host", "127.0.0.1"]
        if shutdown_timeout:
            self.argv += ["-shutdown-timeout", shutdown_timeout]
        self.stop_signal = signal.SIGTERM

    @property
    def pid(self):
        return self.proc.pid

    def start(self):
        """Start with a fresh log (so "Received:" lines count this run only)."""
        logf = open(self.log_path, "wb")
        try:
            self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL,
                                         stdout=logf, stderr=logf, start_new_session=True)
        finally:
            logf.close()
        try:
            benchlib.wait_port(self.port, self.proc)
        except Exception:
            self.kill()
            raise
        return self

    def kill(self):
        if self.proc and self.proc.poll() is None:
            try:
                os.kill(self.proc.pid, signal.SIGKILL)
            except OSError:
                pass
            self.proc.wait()

    def stop(self, timeout=15):
        """Graceful stop; SIGKILL after timeout. Returns the exit status."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, self.stop_signal)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.proc.returncode

    def received(self):
        return count_received(self.log_path)


def count_received(path):
    """How many handlers started: the "Received: " lines of a server log."""
    n = 0
    with open(path, "rb") as f:
        for line in f:
            if b"Received: " in line:
                n += 1
    return n


def check(port, timeout=5.0):
    """One SayHello{name:"world"} with grpcio. Returns None if the reply is
    "Hello world" with status OK, else the failure text."""
    import grpc
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        call = ch.unary_unary(METHOD, request_serializer=lambda b: b,
                              response_deserializer=lambda b: b)
        try:
            reply, c = call.with_call(payload.hello_request("world"), timeout=timeout)
        except grpc.RpcError as e:
            return f"grpcio: {e.code()} {e.details()}"
        if c.code() != grpc.StatusCode.OK or reply != payload.hello_reply("Hello world"):
            return f"grpcio: status {c.code()}, reply {reply!r}"
    return None


# --- a minimal HTTP/2 gRPC client (RFC 9113 framing, HPACK via python3-hpack) ---

DATA, HEADERS, RST_STREAM, SETTINGS, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = 0, 1, 3, 4, 6, 7, 8, 9
END_STREAM, ACK, END_HEADERS, PADDED, PRIORITY = 0x1, 0x1, 0x4, 0x8, 0x20
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


class Stream:
    def __init__(self, sid, name):
        self.sid = sid
        self.name = name
        self.headers = None   # first header block (dict)
        self.trailers = None  # second header block (dict)
        self.data = b""
        self.rst = None       # RST_STREAM error code
        self.done = False

    def grpc_status(self):
        block = self.trailers if self.trailers is not None else self.headers
        if block is None or "grpc-status" not in block:
            return None
        return int(block["grpc-status"])

    def ok(self):
        """The whole expected reply: 200, "Hello <name>", grpc-status 0."""
        return (self.done and self.rst is None and self.headers is not None
                and self.headers.get(":status") == "200" and self.grpc_status() == 0
                and self.data == payload.frame(payload.hello_reply("Hello " + self.name)))

    def describe(self):
        if self.rst is not None:
            return f"RST_STREAM code {self.rst}"
        if not self.done:
            return "no end of stream"
        st = self.grpc_status()
        block = self.trailers if self.trailers is not None else self.headers
        msg = block.get("grpc-message", "") if block else ""
        return f"grpc-status {st}" + (f" ({msg})" if msg else "") + (
            "" if st != 0 else f", data {self.data!r}")


class H2Client:
    """One HTTP/2 connection to 127.0.0.1:port carrying unary SayHello calls.

    The caller owns the event loop: register .sock for reading, call
    .on_readable() at each wake-up; it answers SETTINGS and PINGs (so a
    two-phase GOAWAY can complete) and returns what happened. It never closes
    the connection by itself: .close() is the caller's decision, which is
    what the shutdown scenarios vary.
    """

    def __init__(self, port):
        import hpack
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.authority = f"127.0.0.1:{port}"
        self.enc = hpack.Encoder()
        self.dec = hpack.Decoder()
        self.buf = b""
        self.next_sid = 1
        self.streams = {}
        self.goaways = []      # (last stream id, error code)
        self.eof = False       # the server closed (or reset) the connection
        self.closed = False    # we closed it
        self._hdr = None       # (sid, flags, fragments) of a header block in progress
        self.sock.sendall(PREFACE + self._frame(SETTINGS, 0, 0, b""))

    @staticmethod
    def _frame(ftype, flags, sid, body):
        return struct.pack(">I", len(body))[1:] + struct.pack(">BBI", ftype, flags, sid) + body

    def call(self, name, duration="", timeout=None):
        """Send SayHello{name, duration} on a new stream; returns its Stream."""
        sid = self.next_sid
        self.next_sid += 2
        hdrs = [(":method", "POST"), (":scheme", "http"), (":path", METHOD),
                (":authority", self.authority), ("content-type", "application/grpc"),
                ("te", "trailers")]
        if timeout is not None:
            hdrs.append(("grpc-timeout", f"{int(timeout * 1000)}m"))
        block = self.enc.encode(hdrs)
        body = payload.frame(payload.hello_request(name, duration))
        self.sock.sendall(self._frame(HEADERS, END_HEADERS, sid, block)
                          + self._frame(DATA, END_STREAM, sid, body))
        st = Stream(sid, name)
        self.streams[sid] = st
        return st

    def open_streams(self):
        return [s for s in self.streams.values() if not s.done]

    def close(self):
        if not self.closed:
            self.closed = True
            self.sock.close()

    def wait(self, pred, timeout=5.0):
        """Blocking helper for set-up steps: read until pred() or timeout."""
        self.sock.settimeout(timeout)
        deadline = time.monotonic() + timeout
        while not pred():
            if self.eof or time.monotonic() > deadline:
                return False
            try:
                self.on_readable()
            except socket.timeout:
                return False
        return True

    def on_readable(self):
        """Read what is there; returns a list of events:
        ("end", Stream), ("goaway", last_id, code), ("eof",)."""
        try:
            data = self.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return []
        except ConnectionResetError:
            data = b""
        if not data:
            self.eof = True
            return [("eof",)]
        self.buf += data
        events = []
        out = b""
        while len(self.buf) >= 9:
            length = int.from_bytes(self.buf[:3], "big")
            if len(self.buf) < 9 + length:
                break
            ftype, flags, sid = self.buf[3], self.buf[4], int.from_bytes(self.buf[5:9], "big") & 0x7FFFFFFF
            body = self.buf[9:9 + length]
            self.buf = self.buf[9 + length:]
            if ftype == SETTINGS and not flags & ACK:
                out += self._frame(SETTINGS, ACK, 0, b"")
            elif ftype == PING and not flags & ACK:
                out += self._frame(PING, ACK, 0, body)
            elif ftype == GOAWAY:
                last, code = struct.unpack(">II", body[:8])
                self.goaways.append((last & 0x7FFFFFFF, code))
                events.append(("goaway", last & 0x7FFFFFFF, code))
            elif ftype == DATA:
                if flags & PADDED:
                    body = body[1:len(body) - body[0]]
                st = self.streams.get(sid)
                if st:
                    st.data += body
                    if length:
                        # Give the window back, so long runs never stall.
                        out += self._frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", length))
                    if flags & END_STREAM:
                        st.done = True
                        events.append(("end", st))
            elif ftype in (HEADERS, CONTINUATION):
                if ftype == HEADERS:
                    if flags & PADDED:
                        body = body[1:len(body) - body[0]]
                    if flags & PRIORITY:
                        body = body[5:]
                    self._hdr = (sid, flags, [body])
                else:
                    self._hdr[2].append(body)
                if flags & END_HEADERS:
                    hsid, hflags, frags = self._hdr
                    self._hdr = None
                    block = dict(self.dec.decode(b"".join(frags)))
                    st = self.streams.get(hsid)
                    if st:
                        if st.headers is None:
                            st.headers = block
                        else:
                            st.trailers = block
                        if hflags & END_STREAM:
                            st.done = True
                            events.append(("end", st))
            elif ftype == RST_STREAM:
                st = self.streams.get(sid)
                if st and not st.done:
                    st.rst = struct.unpack(">I", body[:4])[0]
                    st.done = True
                    events.append(("end", st))
        if out and not self.eof:
            try:
                self.sock.sendall(out)
            except OSError:
                pass
        return events


def main(argv):
    if len(argv) >= 2 and argv[1] == "find-ours":
        p = find_ours()
        if p is None:
            return 1
        print(p)
        if benchlib.is_sanitized(p):
            log(f"WARNING: {p} is built with a sanitizer")
        return 0
    if len(argv) >= 2 and argv[1] == "build-go":
        print(build_go())
        return 0
    if len(argv) >= 2 and argv[1] == "build-cpp":
        print(build_cpp())
        return 0
    if len(argv) == 3 and argv[1] == "check":
        err = check(int(argv[2]))
        if err:
            log(err)
            return 1
        return 0
    if len(argv) == 3 and argv[1] == "count-received":
        print(count_received(argv[2]))
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
