#!/usr/bin/python3
"""Zero-downtime restart under load: ours beside nginx's binary upgrade and
HAProxy's reload, in one run.

What: each contender serves two listeners on 127.0.0.1 and is restarted 20
times (one restart about every second, the next one only once the previous
old generation has exited) while wrk loads its first listener:

  ours       tests/programs/upgrade-server, builds a and b (they differ in
             the X-Build header), -loops 0, listeners "http" and "second";
             before each restart the other build is copied over the path the
             process was started from (copy to a temporary name, rename over
             it), then SIGUSR2 to the process named by its -pidfile. Nothing
             else: the new process says ready, the old one drains (its
             keep-alive connections told Connection: close over the default
             1 s close spread) and exits by itself.
  nginx      Debian's nginx (daemon on, worker_processes auto, both
             listeners; bench/nginx/upgrade.conf.in), its binary copied the
             same way before each restart; SIGUSR2 to the master (it renames
             nginx.pid to nginx.pid.oldbin and starts the new binary on the
             inherited sockets); then the operator's step, done here as a
             script would: wait until nginx.pid names a new master and that
             master has its workers, then SIGQUIT to the old master.
  haproxy    Debian's HAProxy 2.6 standalone (bench/haproxy/reload.cfg.in),
             its binary copied the same way; the reload is a new process
             started with -sf <old pid>: it binds new sockets beside the old
             ones (SO_REUSEPORT), then tells the old process to stop.
  haproxy-x  the same with -x <stats socket>: the new process takes the old
             one's listening sockets (expose-fd listeners) instead.
  haproxy-xs (only when asked for with --contenders) haproxy-x plus
             close-spread-time 1s, HAProxy 2.6's spreading of its old
             process's connection closes over a window, like ours' default.

Two passes, each with all four contenders: wrk -t2 -c50 keep-alive, and wrk
-t2 -c50 -H 'Connection: close' (a new connection per request: the accept
queues are what the hand-over must not lose).

How:
  failures   wrk's "Non-2xx or 3xx responses" and its socket errors by kind
             (connect = refused, read, write, timeout), over the whole pass;
             two probe threads, one per listener, each sending one request
             at a time on a new connection (Connection: close) every 0.5 ms,
             log every failure with its time relative to the
             restart before it; the kernel's TcpExt ListenOverflows and
             ListenDrops (/proc/net/netstat) before and after the pass
             (machine-wide counters).
  serving    signal -> new process serving: from just before the signal
             (ours, nginx: kill; HAProxy: the start of the new process) to
             the first probe answer from a process of the new generation on
             EACH of the two listeners (the later of the two). Every answer
             names the PID of the process that served it (ours: GET /pid;
             nginx: $pid, a worker; HAProxy: %pid); a PID not among the
             generation's processes before the signal is the new generation.
             One probe thread per listener; resolution: one probe request
             (its median time is shown).
  start-up   the program's own start-up, named separately: before the
             restarts of each run, 5 fresh starts of the same program and
             configuration on two other ports, under the same load, timed
             from the exec to the first answer on both listeners.
             signal -> serving minus this (medians) is what the restart
             itself costs.
  memory     a thread sums VmRSS (statm) over every process of the contender
             (this script is a child subreaper: every generation is one of
             its descendants) every 5 ms; per restart the baseline (the last
             sample before the signal) and the peak between the signal and
             the old generation's exit. RSS counts pages shared between
             processes once per process.
  ours also  the upgrader's own "Upgrade: pid N is ready after X ms" (spawn
             -> ready as the old process sees it), from its log.

Target (ours): 0 failed requests and 0 refused connections in every run
(wrk and probe), every old process exits by itself with status 0, and
signal -> serving under 50 ms median, excluding the program's own start-up
(the fresh starts' median).

Usage: /usr/bin/python3 bench/upgrade.py [--restarts 20] [--interval 1.0]
           [--contenders ours,nginx,haproxy,haproxy-x[,haproxy-xs]] [--passes keepalive,close]
           [--conns 50] [--fresh 5]
Ports 21100-21199. Output: the table to stdout and bench/out/upgrade.txt;
per-restart lines to stderr; per run (bench/out/upgrade/<contender>-<pass>/):
configs, logs, wrk.txt, restarts.jsonl, probe_failures.txt. Exit 1 if ours
missed the target or a run could not complete. About 3.5 minutes.
"""

import argparse
import ctypes
import errno
import grp
import json
import os
import pwd
import re
import shutil
import signal
import socket
import sys
import threading
import time
from pathlib import Path

import benchlib
from benchlib import log, median, percentile, ratio

OUT = benchlib.OUT_DIR / "upgrade"
BASE_PORT = 21100
HAPROXY = os.environ.get("GRACE_BENCH_HAPROXY") or shutil.which("haproxy") or "/usr/sbin/haproxy"
NGINX = benchlib.NGINX
PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024
TARGET_MS = 50.0
ALL = ("ours", "nginx", "haproxy", "haproxy-x")
OPTIONAL = ("haproxy-xs",)  # -x and close-spread-time 1s: not run by default


def now():
    return time.monotonic()


# ---- processes -----------------------------------------------------------

class Reaper:
    """This script is a child subreaper: every process of every generation
    ends up as its child, and is reaped here (and only here: no
    subprocess.Popen, whose own waitpid would race this one)."""

    def __init__(self):
        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_CHILD_SUBREAPER = 36
        if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")
        self.status = {}

    def reap(self):
        """Reap every child that has exited, keeping its exit status."""
        while True:
            try:
                pid, st = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self.status[pid] = os.waitstatus_to_exitcode(st)

    def alive(self, pid):
        self.reap()
        if pid in self.status:
            return False
        try:
            with open(f"/proc/{pid}/stat") as f:
                st = f.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            return False
        return st != "Z"

    def exit_status(self, pid, timeout=0.2):
        """The exit status of a child that has exited (None if it was not
        this script's child when it exited)."""
        deadline = now() + timeout
        while True:
            self.reap()
            if pid in self.status or now() > deadline:
                return self.status.get(pid)
            time.sleep(0.001)

    def wait(self, pids, timeout):
        """Wait until none of pids is alive; True if so within timeout."""
        deadline = now() + timeout
        while any(self.alive(p) for p in pids):
            if now() > deadline:
                return False
            time.sleep(0.001)
        return True


REAPER = None


def spawn(argv, logpath, mode="ab"):
    """Start argv in its own session with stdout/stderr to logpath."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if "a" in mode else os.O_TRUNC)
    return os.posix_spawnp(argv[0], argv, os.environ, setsid=True, file_actions=[
        (os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0),
        (os.POSIX_SPAWN_OPEN, 1, str(logpath), flags, 0o644),
        (os.POSIX_SPAWN_DUP2, 1, 2),
    ])


def kill(pid, sig):
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def children(pid):
    out = []
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for t in tids:
        try:
            with open(f"/proc/{pid}/task/{t}/children") as f:
                out += [int(x) for x in f.read().split()]
        except OSError:
            pass
    return out


# Children this process had before it started anything: a shell's process
# substitution (run_all.sh's `2> >(tee ...)`) forks tee and then execs
# python3, so tee is a child of this script. Not counted, not killed.
FOREIGN = set()


def descendants(root, exclude=()):
    seen, stack = [], children(root)
    while stack:
        p = stack.pop()
        if p in exclude or p in FOREIGN:
            continue
        seen.append(p)
        stack += children(p)
    return seen


def rss_kib(pids):
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/statm") as f:
                total += int(f.read().split()[1]) * PAGE_KIB
        except (OSError, IndexError, ValueError):
            pass
    return total


def copy_over(src, dst):
    """Install src at dst as a deploy does: copy to a temporary name, rename."""
    tmp = f"{dst}.tmp"
    shutil.copyfile(src, tmp)
    os.chmod(tmp, 0o755)
    os.rename(tmp, dst)


def read_int(path):
    try:
        return int(Path(path).read_text().split()[0])
    except (OSError, IndexError, ValueError):
        return None


def netstat():
    """TcpExt ListenOverflows and ListenDrops (machine-wide)."""
    with open("/proc/net/netstat") as f:
        lines = f.read().splitlines()
    for i in range(0, len(lines) - 1, 2):
        if lines[i].startswith("TcpExt:"):
            d = dict(zip(lines[i].split()[1:], (int(x) for x in lines[i + 1].split()[1:])))
            return d.get("ListenOverflows", 0), d.get("ListenDrops", 0)
    return 0, 0


# ---- one HTTP request on a new connection --------------------------------

def request(port, path, timeout=2.0):
    """GET path on a new connection. Returns (pid, headers, None) or
    (None, None, error kind)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        try:
            s.connect(("127.0.0.1", port))
        except ConnectionRefusedError:
            return None, None, "refused"
        except socket.timeout:
            return None, None, "connect-timeout"
        except OSError as e:
            return None, None, f"connect-{errno.errorcode.get(e.errno, e.errno)}"
        try:
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
            buf = b""
            while True:
                end = buf.find(b"\r\n\r\n")
                if end >= 0:
                    head = buf[:end].decode("latin-1").split("\r\n")
                    hdr = {}
                    for line in head[1:]:
                        k, _, v = line.partition(":")
                        hdr[k.strip().lower()] = v.strip()
                    n = int(hdr.get("content-length", "-1"))
                    if n >= 0 and len(buf) - end - 4 >= n:
                        break
                d = s.recv(4096)
                if not d:
                    if end >= 0 and hdr.get("content-length") is None:
                        break
                    return None, None, "eof" if buf == b"" else "eof-partial"
                buf += d
        except socket.timeout:
            return None, None, "timeout"
        except ConnectionResetError:
            return None, None, "reset"
        except OSError as e:
            return None, None, f"io-{errno.errorcode.get(e.errno, e.errno)}"
        status = head[0].split()
        if len(status) < 2 or status[1] != "200":
            return None, None, f"status-{status[1] if len(status) > 1 else '?'}"
        body = buf[end + 4:].strip()
        try:
            return int(body), hdr, None
        except ValueError:
            return None, None, "bad-body"
    finally:
        s.close()


class Window:
    """One restart as the probe sees it."""

    def __init__(self, t0, old, ports, want_build=None):
        self.t0 = t0
        self.old = set(old)
        self.first = {}       # port -> time of the first new-generation answer
        self.new_pids = set()
        self.want_build = want_build
        self.wrong_build = 0
        self.done = threading.Event()
        self.ports = ports
        self.trace = []  # (sent, answered) ms after t0, port, "old"/"new"/error: until done


class Probe(threading.Thread):
    """One request at a time on a new connection to one listener (one such
    thread per listener), 0.5 ms apart."""

    def __init__(self, port, path, pause=0.0005):
        super().__init__(daemon=True)
        self.port, self.path, self.pause = port, path, pause
        self.stop = threading.Event()
        self.window = None
        self.sent = 0
        self.rtts = []      # ms, every answered request
        self.failures = []  # (t_start, t_end, port, kind)

    def run(self):
        port = self.port
        while not self.stop.is_set():
            t1 = now()
            pid, hdr, err = request(port, self.path)
            t2 = now()
            self.sent += 1
            w = self.window
            if w is not None and not w.done.is_set():
                w.trace.append((round((t1 - w.t0) * 1e3, 2), round((t2 - w.t0) * 1e3, 2), port,
                                err or ("old" if pid in w.old else "new")))
            if err:
                self.failures.append((t1, t2, port, err))
            else:
                self.rtts.append((t2 - t1) * 1e3)
                if w is not None and pid not in w.old:
                    w.new_pids.add(pid)
                    if w.want_build and hdr.get("x-build") != w.want_build:
                        w.wrong_build += 1
                    elif port not in w.first:
                        w.first[port] = t2
                        if len(w.first) == len(w.ports):
                            w.done.set()
            time.sleep(self.pause)


class Sampler(threading.Thread):
    """Sum of RSS over this script's descendants but `exclude`, every 5 ms."""

    def __init__(self, exclude):
        super().__init__(daemon=True)
        self.exclude = exclude
        self.stop = threading.Event()
        self.samples = []  # (t, KiB)

    def run(self):
        me = os.getpid()
        while not self.stop.is_set():
            t = now()
            self.samples.append((t, rss_kib(descendants(me, self.exclude))))
            time.sleep(0.005)

    def window(self, t0, t1):
        base = [k for t, k in self.samples if t < t0]
        inside = [k for t, k in self.samples if t0 <= t <= t1]
        return (base[-1] if base else None), (max(inside) if inside else None)


# ---- the contenders --------------------------------------------------------

def wait_serving(ports, path, procs_alive, timeout=10.0):
    """Poll both ports on new connections until each answers 200; returns the
    time of the later first answer."""
    deadline = now() + timeout
    got = {}
    while len(got) < len(ports):
        if now() > deadline:
            raise RuntimeError(f"no answer on {ports} within {timeout} s")
        if not procs_alive():
            raise RuntimeError("the server exited")
        for p in ports:
            if p in got:
                continue
            pid, _, err = request(p, path, timeout=1.0)
            if err is None:
                got[p] = now()
        if len(got) < len(ports):
            time.sleep(0.0005)
    return max(got.values())


class Contender:
    path = "/"
    build_check = False

    def __init__(self, name, d, ports):
        self.name, self.d, self.ports = name, d, ports
        d.mkdir(parents=True, exist_ok=True)

    def operator_step(self, t0, old):
        return None

    def fresh_start(self, ports):
        """Start the same program on other ports; return (t_exec, t_serving)
        and stop it."""
        raise NotImplementedError


class Ours(Contender):
    path = "/pid"
    build_check = True

    def __init__(self, name, d, ports, bins):
        super().__init__(name, d, ports)
        self.bins = bins  # {"a": path, "b": path}
        self.exe = d / "upgrade-server"
        self.build = "a"
        self.pidfile = d / "server.pid"
        self.log = d / "server.log"

    def argv(self, ports, extra=()):
        return [str(self.exe), "-addr", f"127.0.0.1:{ports[0]}", "-second-addr",
                f"127.0.0.1:{ports[1]}", "-loops", "0", "-shutdown-timeout", "10s", *extra]

    def start(self):
        copy_over(self.bins[self.build], self.exe)
        self.pid = spawn(self.argv(self.ports, ["-pidfile", str(self.pidfile),
                                                "-upgrade-socket", str(self.d / "control.sock")]),
                         self.log, "wb")
        wait_serving(self.ports, self.path, lambda: REAPER.alive(self.pid))
        deadline = now() + 5
        while read_int(self.pidfile) != self.pid and now() < deadline:
            time.sleep(0.001)

    def generation(self):
        return [self.pid]

    def prepare(self):
        self.build = "b" if self.build == "a" else "a"
        copy_over(self.bins[self.build], self.exe)
        return self.build

    def trigger(self):
        os.kill(self.pid, signal.SIGUSR2)

    def adopt(self, w):
        """After the restart: the process the PID file names (the old one
        rewrote it at the hand-over), which must be one that answered."""
        p = read_int(self.pidfile)
        self.pid = p if p in w.new_pids else next(iter(w.new_pids))

    def stop(self):
        kill(self.pid, signal.SIGTERM)
        return REAPER.wait([self.pid], 15)

    def fresh_start(self, ports):
        t = now()
        pid = spawn(self.argv(ports), self.d / "fresh.log")
        t1 = wait_serving(ports, self.path, lambda: REAPER.alive(pid))
        kill(pid, signal.SIGTERM)
        REAPER.wait([pid], 15)
        return t1 - t


class Nginx(Contender):
    def __init__(self, name, d, ports):
        super().__init__(name, d, ports)
        self.exe = d / "nginx"

    def conf(self, prefix, ports):
        for sub in ("tmp",):
            (prefix / sub).mkdir(parents=True, exist_ok=True)
        subst = {"@PREFIX@": str(prefix), "@PORT1@": str(ports[0]), "@PORT2@": str(ports[1]),
                 "@USER@": pwd.getpwuid(os.getuid()).pw_name,
                 "@GROUP@": grp.getgrgid(os.getgid()).gr_name}
        text = (benchlib.BENCH_DIR / "nginx" / "upgrade.conf.in").read_text()
        for k, v in subst.items():
            text = text.replace(k, v)
        (prefix / "nginx.conf").write_text(text)
        return prefix / "nginx.conf"

    def launch(self, prefix, ports):
        """nginx daemonizes: the process started exits once the master runs."""
        conf = self.conf(prefix, ports)
        pidfile = prefix / "nginx.pid"
        try:
            pidfile.unlink()
        except FileNotFoundError:
            pass
        t = now()
        starter = spawn([str(self.exe), "-p", str(prefix), "-c", str(conf),
                         "-e", str(prefix / "error.log")], prefix / "stderr.log")
        deadline = now() + 10
        master = None
        while now() < deadline:
            master = read_int(pidfile)
            if master and REAPER.alive(master):
                break
            if not REAPER.alive(starter) and REAPER.status.get(starter, 0) != 0:
                raise RuntimeError(f"nginx did not start: see {prefix}/error.log")
            time.sleep(0.001)
        return t, master

    def start(self):
        copy_over(NGINX, self.exe)
        _, self.master = self.launch(self.d, self.ports)
        wait_serving(self.ports, self.path, lambda: REAPER.alive(self.master))
        self.workers = self.wait_workers(self.master)

    def wait_workers(self, master, timeout=10):
        deadline = now() + timeout
        while now() < deadline:
            w = children(master)
            if len(w) >= (os.cpu_count() or 1):
                return w
            time.sleep(0.001)
        raise RuntimeError(f"nginx master {master} has no workers")

    def generation(self):
        return [self.master] + children(self.master)

    def prepare(self):
        copy_over(NGINX, self.exe)

    def trigger(self):
        os.kill(self.master, signal.SIGUSR2)

    def operator_step(self, t0, old):
        """USR2 done; wait for the new master's pid file and workers, then
        QUIT the old master (what an upgrade script does)."""
        deadline = t0 + 10
        pidfile = self.d / "nginx.pid"
        while now() < deadline:
            m = read_int(pidfile)
            if m and m != self.master and REAPER.alive(m) and len(children(m)) >= (os.cpu_count() or 1):
                os.kill(self.master, signal.SIGQUIT)
                self.new_master = m
                return now()
            time.sleep(0.001)
        raise RuntimeError("nginx: no new master with workers within 10 s of SIGUSR2")

    def adopt(self, w):
        self.master = self.new_master

    def stop(self):
        m = self.master
        kill(m, signal.SIGQUIT)
        return REAPER.wait([m], 15)

    def fresh_start(self, ports):
        prefix = self.d / "fresh"
        t, master = self.launch(prefix, ports)
        t1 = wait_serving(ports, self.path, lambda: REAPER.alive(master))
        kill(master, signal.SIGQUIT)
        REAPER.wait([master], 15)
        return t1 - t


class Haproxy(Contender):
    def __init__(self, name, d, ports, transfer, spread=False):
        super().__init__(name, d, ports)
        self.exe = d / "haproxy"
        self.transfer = transfer
        self.spread = spread
        self.sock = d / "stats.sock"
        self.log = d / "haproxy.log"
        self.cfg = self.conf(d / "haproxy.cfg", ports, self.sock)

    def conf(self, path, ports, sock):
        text = (benchlib.BENCH_DIR / "haproxy" / "reload.cfg.in").read_text()
        extra = "close-spread-time 1s" if self.spread else ""
        for k, v in {"@PORT1@": str(ports[0]), "@PORT2@": str(ports[1]), "@SOCK@": str(sock),
                     "@GLOBAL_EXTRA@": extra}.items():
            text = text.replace(k, v)
        path.write_text(text)
        return path

    def start(self):
        copy_over(HAPROXY, self.exe)
        self.pid = spawn([str(self.exe), "-f", str(self.cfg)], self.log, "wb")
        wait_serving(self.ports, self.path, lambda: REAPER.alive(self.pid))

    def generation(self):
        return [self.pid]

    def prepare(self):
        copy_over(HAPROXY, self.exe)

    def trigger(self):
        argv = [str(self.exe), "-f", str(self.cfg)]
        if self.transfer:
            argv += ["-x", str(self.sock)]
        self.new_pid = spawn(argv + ["-sf", str(self.pid)], self.log)

    def adopt(self, w):
        self.pid = self.new_pid

    def stop(self):
        kill(self.pid, signal.SIGUSR1)  # soft stop
        return REAPER.wait([self.pid], 15)

    def fresh_start(self, ports):
        cfg = self.conf(self.d / "fresh.cfg", ports, self.d / "fresh.sock")
        t = now()
        pid = spawn([str(self.exe), "-f", str(cfg)], self.d / "fresh.log")
        t1 = wait_serving(ports, self.path, lambda: REAPER.alive(pid))
        kill(pid, signal.SIGUSR1)
        REAPER.wait([pid], 15)
        return t1 - t


# ---- wrk ------------------------------------------------------------------

def parse_wrk(text):
    r = {"requests": 0, "non2xx": 0, "connect": 0, "read": 0, "write": 0, "timeout": 0}
    m = re.search(r"(\d+) requests in", text)
    if m:
        r["requests"] = int(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    if m:
        r["connect"], r["read"], r["write"], r["timeout"] = map(int, m.groups())
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    if m:
        r["non2xx"] = int(m.group(1))
    r["parsed"] = bool(re.search(r"requests in", text))
    return r


# ---- one run: a contender, a pass -------------------------------------------

def make(name, d, ports, bins):
    if name == "ours":
        return Ours(name, d, ports, bins)
    if name == "nginx":
        return Nginx(name, d, ports)
    return Haproxy(name, d, ports, transfer=name in ("haproxy-x", "haproxy-xs"),
                   spread=name == "haproxy-xs")


def ready_ms_from_log(path):
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return []
    return [float(x) for x in re.findall(r"Upgrade: pid \d+ is ready after ([0-9.]+)ms", text)]


def one_run(name, pas, k, args, bins):
    d = OUT / f"{name}-{pas}"
    shutil.rmtree(d, ignore_errors=True)
    base = BASE_PORT + 10 * k
    ports = (base, base + 1)
    c = make(name, d, ports, bins)
    res = {"contender": name, "pass": pas, "restarts": [], "fresh_ms": [], "error": None}
    wrk_pid = None
    probes = []
    sampler = None
    ovf0, drop0 = netstat()
    try:
        c.start()
        exclude = set()
        sampler = Sampler(exclude)
        probes = [Probe(p, c.path) for p in ports]
        wrk_argv = ["wrk", "-t2", f"-c{args.conns}", "-d300s", "--timeout", "2s"]
        if pas == "close":
            wrk_argv += ["-H", "Connection: close"]
        wrk_argv.append(f"http://127.0.0.1:{ports[0]}/")
        wrk_pid = spawn(wrk_argv, d / "wrk.txt", "wb")
        exclude.add(wrk_pid)
        sampler.start()
        for p in probes:
            p.start()
        time.sleep(1.0)  # warm-up under load
        if args.fresh:
            for _ in range(args.fresh):
                res["fresh_ms"].append(c.fresh_start((base + 2, base + 3)) * 1e3)
                time.sleep(0.05)
        next_at = now()
        for i in range(1, args.restarts + 1):
            while now() < next_at:
                time.sleep(0.001)
            build = c.prepare()
            old = c.generation()
            t0 = now()
            w = Window(t0, old, list(ports), want_build=build if c.build_check else None)
            for p in probes:
                p.window = w
            c.trigger()
            t_op = c.operator_step(t0, old)
            served = w.done.wait(10)
            t_serve = max(w.first.values()) if served else None
            if not served:
                for p in probes:
                    p.window = None
                raise RuntimeError(f"restart {i}: no answer from a new process on both "
                                   f"listeners within 10 s (new pids seen: {sorted(w.new_pids)})")
            c.adopt(w)
            exited = REAPER.wait(old, 15)
            t_exit = now()
            for p in probes:
                p.window = None
            status = REAPER.exit_status(old[0])  # the old process / master
            base_kib, peak_kib = sampler.window(t0, t_exit)
            r = {"i": i, "t0": t0, "serving_ms": (t_serve - t0) * 1e3,
                 "per_port_ms": {str(p): (t - t0) * 1e3 for p, t in w.first.items()},
                 "operator_ms": (t_op - t0) * 1e3 if t_op else None,
                 "old_exit_ms": (t_exit - t0) * 1e3 if exited else None,
                 "old_status": status, "rss_base_kib": base_kib, "rss_peak_kib": peak_kib,
                 "wrong_build": w.wrong_build, "old": old, "new": sorted(w.new_pids),
                 "probe_trace": w.trace}
            res["restarts"].append(r)
            log(f"  {name}/{pas} restart {i:2d}: serving {r['serving_ms']:7.2f} ms"
                + (f", QUIT old at {r['operator_ms']:6.1f} ms" if t_op else "")
                + (f", old exit {r['old_exit_ms']:7.1f} ms status {r['old_status']}" if exited
                   else ", OLD DID NOT EXIT in 15 s")
                + f", RSS {base_kib} -> peak {peak_kib} KiB")
            if not exited:
                for p in old:
                    kill(p, signal.SIGKILL)
                REAPER.wait(old, 5)
            next_at = max(t0 + args.interval, now() + 0.05)
        time.sleep(0.3)
    except Exception as e:  # noqa: BLE001 - reported in the table, exit 1
        res["error"] = str(e)
        log(f"  {name}/{pas}: ERROR {e}")
    finally:
        if wrk_pid is not None:
            kill(wrk_pid, signal.SIGINT)
            if not REAPER.wait([wrk_pid], 10):
                kill(wrk_pid, signal.SIGKILL)
                REAPER.wait([wrk_pid], 5)
        for p in probes:
            p.stop.set()
        for p in probes:
            p.join(5)
        if sampler is not None:
            sampler.stop.set()
            sampler.join(5)
        ovf1, drop1 = netstat()
        try:
            if not c.stop():
                log(f"  {name}/{pas}: did not stop within 15 s; SIGKILL")
        except Exception as e:  # noqa: BLE001
            log(f"  {name}/{pas}: stop: {e}")
        for p in descendants(os.getpid()):
            kill(p, signal.SIGKILL)  # only what this run started is left
        REAPER.wait(descendants(os.getpid()), 5)
    wtext = (d / "wrk.txt").read_text(errors="replace") if (d / "wrk.txt").exists() else ""
    res["wrk"] = parse_wrk(wtext)
    res["listen_overflows"] = ovf1 - ovf0
    res["listen_drops"] = drop1 - drop0
    res["probe_sent"] = sum(p.sent for p in probes)
    res["probe_rtt_ms"] = median([x for p in probes for x in p.rtts])
    fails = sorted(f for p in probes for f in p.failures)
    res["probe_failed"] = len(fails)
    t0s = [r["t0"] for r in res["restarts"]]
    with open(d / "probe_failures.txt", "w") as f:
        for t1, t2, port, kind in fails:
            before = [t for t in t0s if t <= t1]
            rel = (f"restart {len(before)} +{(t1 - before[-1]) * 1e3:.1f} ms" if before
                   else "before the first restart")
            f.write(f"{kind} port {port} sent at {rel}, failed after {(t2 - t1) * 1e3:.1f} ms\n")
    res["probe_failure_kinds"] = {}
    for *_, kind in fails:
        res["probe_failure_kinds"][kind] = res["probe_failure_kinds"].get(kind, 0) + 1
    if name == "ours":
        res["ready_ms"] = ready_ms_from_log(d / "server.log")
    with open(d / "restarts.jsonl", "w") as f:
        for r in res["restarts"]:
            f.write(json.dumps(r) + "\n")
    w = res["wrk"]
    log(f"  {name}/{pas}: wrk {w['requests']} requests, non-2xx {w['non2xx']}, connect {w['connect']}, "
        f"read {w['read']}, write {w['write']}, timeout {w['timeout']}; probe {res['probe_failed']} "
        f"failed of {res['probe_sent']} {res['probe_failure_kinds'] or ''}; ListenOverflows "
        f"+{res['listen_overflows']} ListenDrops +{res['listen_drops']}")
    return res


# ---- the table ----------------------------------------------------------------

def fmt_ms(x):
    return "-" if x is None or x != x else f"{x:.1f}"


def table(results, args, bins):
    out = []
    out.append(f"zero-downtime restart under load: {args.restarts} restarts per contender and load, "
               f"one every >= {args.interval:g} s once the old generation has exited")
    out.append("ours: " + (f"{bins['a']} / -b alternated (2 listeners, -loops 0), SIGUSR2"
                           if bins else "not built (skipped)"))
    out.append("nginx: SIGUSR2, then SIGQUIT to the old master once the new one has its workers; "
               "haproxy: new process with -sf <old> (haproxy-x: and -x <stats socket>)")
    for pas in args.passes:
        rs = [r for r in results if r["pass"] == pas]
        if not rs:
            continue
        load = (f"wrk -t2 -c{args.conns} keep-alive" if pas == "keepalive"
                else f"wrk -t2 -c{args.conns} -H 'Connection: close'")
        out.append("")
        out.append(f"{load} on listener 1 during the restarts; probe: a new connection per "
                   f"request on each listener")
        out.append(f"  {'':10} {'wrk reqs':>9} {'non-2xx':>7} {'refused':>7} {'read':>5} {'write':>5} "
                   f"{'timeout':>7}  {'probe failed':>14}  {'ListenOverflows':>15} {'ListenDrops':>11}  "
                   f"{'old exit 0':>10}")
        for r in rs:
            w = r["wrk"]
            rr = r["restarts"]
            ok0 = sum(1 for x in rr if x["old_status"] == 0)
            out.append(f"  {r['contender']:10} {w['requests']:>9} {w['non2xx']:>7} {w['connect']:>7} "
                       f"{w['read']:>5} {w['write']:>5} {w['timeout']:>7}  "
                       f"{r['probe_failed']:>5} of {r['probe_sent']:<6}  {r['listen_overflows']:>15} "
                       f"{r['listen_drops']:>11}  {ok0:>4} of {len(rr):<2}"
                       + (f"  ERROR: {r['error']}" if r["error"] else ""))
        out.append(f"  {'':10} {'signal->serving med (p90)':>25} {'fresh start':>11} {'difference':>10} "
                   f"{'probe rtt':>9} {'signal->old exit':>16} {'RSS 1 gen':>9} {'RSS both (peak)':>15}")
        med = {}
        for r in rs:
            rr = r["restarts"]
            serv = [x["serving_ms"] for x in rr]
            med[r["contender"]] = median(serv)
            ex = [x["old_exit_ms"] for x in rr if x["old_exit_ms"] is not None]
            base = [x["rss_base_kib"] for x in rr if x["rss_base_kib"]]
            peak = [x["rss_peak_kib"] for x in rr if x["rss_peak_kib"]]
            fresh = median(r["fresh_ms"]) if r["fresh_ms"] else None
            diff = med[r["contender"]] - fresh if fresh is not None and serv else None
            out.append(f"  {r['contender']:10} {fmt_ms(median(serv)):>15} ms ({fmt_ms(percentile(serv, 90)):>5}) "
                       f"{fmt_ms(fresh):>8} ms {fmt_ms(diff):>7} ms {fmt_ms(r.get('probe_rtt_ms')):>6} ms "
                       f"{fmt_ms(median(ex)):>13} ms {mb(base):>6} MB {mb(peak):>12} MB")
        if "ours" in med:
            parts = [f"ours/{n} = {ratio(med['ours'], v)}" for n, v in med.items() if n != "ours"]
            if parts:
                out.append("  ratio signal->serving median (lower is better): " + ", ".join(parts))
        for r in rs:
            ops = [x["operator_ms"] for x in r["restarts"] if x["operator_ms"] is not None]
            if ops:
                out.append(f"  {r['contender']}: its operator's step, SIGQUIT to the old master once the new "
                           f"master has its workers, came {median(ops):.1f} ms median after SIGUSR2; the new "
                           f"workers get connections only once the old ones stop accepting")
            if r["contender"] == "ours" and r.get("ready_ms"):
                out.append(f"  ours: the upgrader's own spawn->ready (its log: the successor's start-up "
                           f"included) {median(r['ready_ms']):.1f} ms median of {len(r['ready_ms'])}")
    out.append("")
    out.append("refused = wrk's connect errors; probe failed: see bench/out/upgrade/*/probe_failures.txt; "
               "ListenOverflows/ListenDrops: TcpExt delta over the run (machine-wide); old exit 0: old "
               "processes (nginx: masters) that exited by themselves with status 0")
    out.append("signal->serving: until a process of the new generation has answered on both listeners; "
               "fresh start = the program's own start-up: exec -> both listeners answer, on other ports, "
               f"{args.fresh} starts under the same load before the restarts; difference = signal->serving "
               "median - fresh start median, the restart's own cost; probe rtt: median time of one probe request "
               "(the resolution); RSS: sum over the contender's processes, just before the signal and the "
               "peak from the signal to the old generation's exit (medians)")
    return out


def mb(kibs):
    return f"{median(kibs) / 1024:.1f}" if kibs else "-"


def ours_verdict(results):
    """Target for ours: 0 failed, 0 refused in every run; old exits 0 by
    itself; median signal -> serving < 50 ms."""
    problems = []
    for r in results:
        if r["contender"] != "ours":
            continue
        w = r["wrk"]
        bad = w["non2xx"] + w["connect"] + w["read"] + w["write"] + w["timeout"] + r["probe_failed"]
        if r["error"]:
            problems.append(f"{r['pass']}: {r['error']}")
        if bad:
            problems.append(f"{r['pass']}: {bad} failed requests (wrk + probe)")
        if any(x["wrong_build"] for x in r["restarts"]):
            problems.append(f"{r['pass']}: a new process answered with the old build's X-Build")
        if any(x["old_status"] != 0 for x in r["restarts"]):
            problems.append(f"{r['pass']}: an old process did not exit 0 by itself")
        if r["restarts"]:
            # The target excludes the program's own start-up, which
            # the fresh starts measure; without them, the whole figure counts.
            m = median([x["serving_ms"] for x in r["restarts"]])
            fresh = median(r["fresh_ms"]) if r["fresh_ms"] else 0.0
            if m - fresh >= TARGET_MS:
                problems.append(f"{r['pass']}: signal->serving median {m:.1f} ms minus the fresh start "
                                f"{fresh:.1f} ms >= {TARGET_MS:g} ms")
        if not w["parsed"]:
            problems.append(f"{r['pass']}: no wrk result")
    return problems


def find_ours():
    """upgrade-server-a and -b: $GRACE_BENCH_UPGRADE_DIR, else the build trees."""
    dirs = []
    if os.environ.get("GRACE_BENCH_UPGRADE_DIR"):
        dirs.append(Path(os.environ["GRACE_BENCH_UPGRADE_DIR"]))
    else:
        dirs += [benchlib.REPO_DIR / b / "examples" for b in
                 ("build-bench-upgrade", "build-bench", "build-release", "build")]
    for dd in dirs:
        a, b = dd / "upgrade-server-a", dd / "upgrade-server-b"
        if os.access(a, os.X_OK) and os.access(b, os.X_OK):
            return {"a": str(a), "b": str(b)}
    return None


def build_type(bindir):
    try:
        text = (Path(bindir).parent / "CMakeCache.txt").read_text()
    except OSError:
        return "?"
    m = re.search(r"^CMAKE_BUILD_TYPE:\w+=(.*)$", text, re.M)
    return m.group(1) if m else "?"


def main():
    global REAPER
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--restarts", type=int, default=20)
    ap.add_argument("--interval", type=float, default=1.0)
    ap.add_argument("--contenders", default=",".join(ALL))
    ap.add_argument("--passes", default="keepalive,close")
    ap.add_argument("--conns", type=int, default=50)
    ap.add_argument("--fresh", type=int, default=5, help="fresh starts per contender (keep-alive pass)")
    args = ap.parse_args()
    args.passes = [p for p in args.passes.split(",") if p]
    for p in args.passes:
        if p not in ("keepalive", "close"):
            ap.error(f"unknown pass {p!r}")
    names = [n for n in args.contenders.split(",") if n]
    for n in names:
        if n not in ALL + OPTIONAL:
            ap.error(f"unknown contender {n!r} ({', '.join(ALL + OPTIONAL)})")
    benchlib.raise_nofile()
    FOREIGN.update(descendants(os.getpid()))
    REAPER = Reaper()
    for tool in ("wrk",):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is not installed")
    bins = None
    if "ours" in names:
        bins = find_ours()
        if bins is None:
            log("SKIP ours: tests/programs/upgrade-server-a/-b are not built (looked in "
                "$GRACE_BENCH_UPGRADE_DIR, build-bench-upgrade/, build-bench/, build-release/, build/ "
                "examples; they need -DBUILD_TESTING=ON); run bench/run_all.sh to build them")
            names.remove("ours")
        else:
            bt = build_type(Path(bins["a"]).parent)
            log(f"ours: {bins['a']} and -b ({bt})")
            if benchlib.is_sanitized(bins["a"]):
                log("WARNING: ours is built with a sanitizer; its figures are not meaningful")
            elif bt not in ("Release", "?"):
                log(f"WARNING: ours is a {bt} build, not Release")
    for n, exe in (("nginx", NGINX), ("haproxy", HAPROXY)):
        if any(x.startswith(n) for x in names) and not os.access(exe, os.X_OK):
            raise SystemExit(f"{exe} is not installed")
    OUT.mkdir(parents=True, exist_ok=True)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    results = []
    k = 0
    t_start = now()
    for pas in args.passes:
        for n in names:
            log(f"== {n}, {pas}")
            results.append(one_run(n, pas, k, args, bins))
            k += 1
    log(f"total {now() - t_start:.0f} s")
    out = table(results, args, bins)
    problems = ours_verdict(results) if "ours" in names else []
    if "ours" in names:
        out.append("target (ours: 0 failed and 0 refused in every run, every old process exits 0 by itself, "
                   "signal->serving median minus the program's own start-up < 50 ms): "
                   + ("met" if not problems else "MISSED: " + "; ".join(problems)))
    text = "\n".join(out)
    print(text, flush=True)
    (benchlib.OUT_DIR / "upgrade.txt").write_text(text + "\n")
    with open(OUT / "results.json", "w") as f:
        json.dump(results, f, indent=1)
    bad_runs = [r for r in results if r["error"]]
    return 1 if problems or bad_runs else 0


if __name__ == "__main__":
    sys.exit(main())
