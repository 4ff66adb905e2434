"""Shared helpers of the grace HTTP benchmarks: find or build the three
servers (ours, Go's net/http peer, nginx), start them on 127.0.0.1, wait until
they accept, read their memory, stop them.

Used as a module by shutdown_lag.py and idle_conns.py, and as a small command
line by the shell scripts:

    python3 benchlib.py find-ours          # path of our binary, or exit 1
    python3 benchlib.py build-go           # build the Go peer, print its path
    python3 benchlib.py nginx-conf PORT    # write a config, print its path

Standard library only; run with /usr/bin/python3.
"""

import os
import resource
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
OUT_DIR = Path(os.environ.get("GRACE_BENCH_OUT", BENCH_DIR / "out"))
NGINX = os.environ.get("GRACE_BENCH_NGINX", "/usr/sbin/nginx")
OURS_NAME = "http-sleep-server"

# The nginx slow download (see nginx/nginx.conf.in): one SLOW_CHUNK every
# SLOW_CHUNK / SLOW_RATE = 100 ms, so (chunks - 1) * 100 ms in all.
SLOW_CHUNK = 8192
SLOW_RATE = 81920


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def raise_nofile():
    """Raise RLIMIT_NOFILE's soft limit to the hard one (children inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def is_sanitized(path):
    """True when the binary was built with ASan/TSan: its figures mean nothing."""
    try:
        data = Path(path).read_bytes()
    except OSError:
        return False
    return b"__asan_init" in data or b"__tsan_init" in data


def find_ours():
    """Our example program, or None.

    GRACE_BENCH_OURS wins; then the Release build of run_all.sh
    (build-bench/), then the developers' build/ tree.
    """
    explicit = os.environ.get("GRACE_BENCH_OURS")
    if explicit:
        return explicit if os.access(explicit, os.X_OK) else None
    for d in ("build-bench", "build"):
        p = REPO_DIR / d / "examples" / OURS_NAME
        if p.is_file() and os.access(p, os.X_OK):
            return str(p)
    return None


def build_go():
    """Build bench/go/http-sleep-server into OUT_DIR/go (offline, no module)."""
    src = BENCH_DIR / "go" / "http-sleep-server"
    gout = OUT_DIR / "go"
    binary = gout / "http-sleep-server-go"
    if binary.exists() and binary.stat().st_mtime >= (src / "main.go").stat().st_mtime:
        return str(binary)
    gout.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env.update(GO111MODULE="off", GOFLAGS="", GOPROXY="off",
               GOCACHE=str(gout / "cache"), GOPATH=str(gout / "gopath"),
               GOTOOLCHAIN="local")
    subprocess.run(["go", "build", "-o", str(binary), "."], cwd=src, env=env, check=True)
    return str(binary)


def nginx_conf(port, slow_bytes=4 * SLOW_CHUNK):
    """Write OUT_DIR/nginx-PORT/{nginx.conf,html/slow.bin}; return the conf path."""
    prefix = OUT_DIR / f"nginx-{port}"
    for sub in ("html", "tmp"):
        (prefix / sub).mkdir(parents=True, exist_ok=True)
    slow = prefix / "html" / "slow.bin"
    # A fixed pattern (not zeros) so a truncated body cannot pass the check.
    pattern = bytes(range(256)) * (slow_bytes // 256 + 1)
    slow.write_bytes(pattern[:slow_bytes])
    import grp
    import pwd
    subst = {
        "@PREFIX@": str(prefix), "@PORT@": str(port), "@DOCROOT@": str(prefix / "html"),
        "@USER@": pwd.getpwuid(os.getuid()).pw_name, "@GROUP@": grp.getgrgid(os.getgid()).gr_name,
        "@SLOW_RATE@": str(SLOW_RATE), "@SLOW_CHUNK@": str(SLOW_CHUNK),
    }
    text = (BENCH_DIR / "nginx" / "nginx.conf.in").read_text()
    for k, v in subst.items():
        text = text.replace(k, v)
    conf = prefix / "nginx.conf"
    conf.write_text(text)
    return str(conf)


def slow_pattern(n):
    return (bytes(range(256)) * (n // 256 + 1))[:n]


def wait_port(port, proc, timeout=10.0):
    """Poll-connect every 10 ms until the server accepts (contract: up to 10 s)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited early with status {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.01)
    raise RuntimeError(f"nothing accepts on 127.0.0.1:{port} after {timeout} s")


class Server:
    """One running server. `name` is ours, go or nginx."""

    def __init__(self, name, port, slow_bytes=4 * SLOW_CHUNK, ours_path=None, go_path=None):
        self.name = name
        self.port = port
        self.slow_bytes = slow_bytes
        self.proc = None
        logs = OUT_DIR / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        self.log_path = logs / f"{name}-{port}.log"
        if name == "ours":
            self.argv = [ours_path or find_ours(), "-addr", f"127.0.0.1:{port}"]
            # The graceful signal of ours and Go is SIGTERM; nginx's is SIGQUIT
            # (its SIGTERM is a fast shutdown that drops in-flight requests).
            self.stop_signal = signal.SIGTERM
        elif name == "go":
            self.argv = [go_path or build_go(), "-addr", f"127.0.0.1:{port}"]
            self.stop_signal = signal.SIGTERM
        elif name == "nginx":
            conf = nginx_conf(port, slow_bytes)
            prefix = str(Path(conf).parent)
            self.argv = [NGINX, "-p", prefix, "-c", conf, "-e", prefix + "/error.log"]
            self.stop_signal = signal.SIGQUIT
        else:
            raise ValueError(name)

    @property
    def pid(self):
        return self.proc.pid

    def start(self):
        logf = open(self.log_path, "ab")
        try:
            # Own session: a Ctrl+C in the terminal reaches the benchmark, not
            # the servers, whose signals we send ourselves.
            self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL,
                                         stdout=logf, stderr=logf, start_new_session=True)
        finally:
            logf.close()
        try:
            wait_port(self.port, self.proc)
        except Exception:
            self.kill()
            raise
        if self.name == "nginx":
            # The master listens before its workers exist; wait for them so
            # the memory baseline includes them.
            deadline = time.monotonic() + 5
            while len(self.pids()) < 2 and time.monotonic() < deadline:
                time.sleep(0.01)
        return self

    def pids(self):
        """The server's processes: the child itself and (nginx) its workers."""
        pids = [self.proc.pid]
        try:
            for tid in os.listdir(f"/proc/{self.proc.pid}/task"):
                with open(f"/proc/{self.proc.pid}/task/{tid}/children") as f:
                    pids += [int(x) for x in f.read().split()]
        except OSError:
            pass
        return pids

    def rss_kib(self):
        """Sum of VmRSS over pids() (master + workers for nginx), in KiB."""
        total = 0
        for pid in self.pids():
            try:
                with open(f"/proc/{pid}/status") as f:
                    for line in f:
                        if line.startswith("VmRSS:"):
                            total += int(line.split()[1])
            except OSError:
                pass
        return total

    def kill(self):
        """Last-resort cleanup of a server we started (by its own pid)."""
        if self.proc and self.proc.poll() is None:
            for pid in self.pids():
                try:
                    os.kill(pid, signal.SIGKILL)
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


def median(xs):
    s = sorted(xs)
    n = len(s)
    if n == 0:
        return float("nan")
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2


def percentile(xs, p):
    """Nearest-rank percentile (p in 0..100)."""
    s = sorted(xs)
    if not s:
        return float("nan")
    k = max(0, min(len(s) - 1, -(-p * len(s) // 100) - 1))
    return s[int(k)]


def ratio(a, b):
    if a != a or b != b:
        return "n/a"
    if b == 0:
        return "inf" if a > 0 else "n/a"
    return f"{a / b:.3g}"


def select_servers(arg):
    """Parse --servers, drop ours with a clear message when it is not built."""
    names = [s.strip() for s in arg.split(",") if s.strip()]
    for n in names:
        if n not in ("ours", "go", "nginx"):
            raise SystemExit(f"unknown server {n!r} (ours, go, nginx)")
    ours = None
    if "ours" in names:
        ours = find_ours()
        if ours is None:
            log("SKIP ours: examples/http-sleep-server is not built (looked in "
                "$GRACE_BENCH_OURS, build-bench/examples, build/examples); "
                "run bench/run_all.sh to build it")
            names.remove("ours")
        else:
            log(f"ours: {ours}")
            if is_sanitized(ours):
                log("WARNING: ours is built with a sanitizer; its figures are not meaningful")
    if "go" in names:
        build_go()
    return names, ours


def main(argv):
    if len(argv) >= 2 and argv[1] == "find-ours":
        p = find_ours()
        if p is None:
            return 1
        print(p)
        if is_sanitized(p):
            log(f"WARNING: {p} is built with a sanitizer")
        return 0
    if len(argv) >= 2 and argv[1] == "build-go":
        print(build_go())
        return 0
    if len(argv) == 3 and argv[1] == "nginx-conf":
        print(nginx_conf(int(argv[2])))
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
