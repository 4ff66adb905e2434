"""A fleet behind a real load balancer: rolling restarts under load lose no
request.

Three instances of tests/programs/upgrade-server (each on its own port of
127.0.0.1, with its own copy of the binary, PID file and control socket in a
temporary directory) behind HAProxy 2.6 (Debian's haproxy, generated config,
run in the foreground), and wrk sending requests through HAProxy for the
whole scenario.  HAProxy retries nothing and redispatches nothing, so every
failure reaches wrk; every non-2xx answer and every socket error is counted
and each scenario asserts there were none.

 * Upgrades in place: 10 rolling restarts, one instance after the other, by
   swapping the binary (build a <-> b, renamed over the program's path) and
   running grace-upgrade.  Both builds answer, every old generation exits 0
   on its own (this process is a child subreaper: the generations are
   reparented to it and reaped here), and HAProxy never marks a server DOWN:
   a hand-over does not even flap readiness.
 * While a new process starts (it serves the shared listener before it is
   ready), its /readyz says ready: made long with a new process whose
   readiness check never passes, every /readyz answer of either process is
   200 and HAProxy's checks never fail.
 * Stop + start: 10 rolling restarts by SIGTERM (/readyz turns 503 at once,
   the instance serves through its 1 s shutdown delay while HAProxy's health
   check takes it out, then drains and exits 0) and a fresh process on the
   same port, brought back once HAProxy sees it UP.
 * Kubernetes' termination sequence, played: the endpoint is removed (the
   server put in maintenance through HAProxy's admin socket) concurrently
   with SIGTERM, the grace period runs, SIGKILL.  With the manifest's rule
   (the deadline derived from TERMINATION_GRACE_PERIOD_SECONDS by
   grace_group_timeout_for_grace_period) the instance exits 0 by itself
   with a request in flight served; a request longer than the period is
   cut by the program's own deadline, which reports it, before the
   SIGKILL; with a deadline longer than the period the SIGKILL lands and
   cuts the request: the harness tells good numbers from bad.

Load: two wrk processes (one thread each, paced by a Lua delay so that they
leave CPU to the programs): 8 keep-alive connections, and 4 connections
that send "Connection: close" (each request the first of its client
connection).  The Lua script counts the answers by status and X-Build;
wrk's own "Non-2xx or 3xx responses" and "Socket errors" lines are parsed
too.  The whole module takes about 40 s in a plain build, 75 s under ASan.

The HAProxy settings, chosen so that it can hide nothing:

 * retries 0, retry-on none, no option redispatch: a failed connection or a
   request that got no answer is not replayed on another server.
 * http-reuse always: idle server-side connections are pooled and any
   request, also the first of a client connection, may be sent on one.
   That is the case a drain must get right: a connection the old process
   closes while HAProxy sends a request on it loses that request (a 502,
   or, for a request that is not the first of its client connection, a
   silent close of the client connection meant for a browser to retry,
   which wrk counts as a read error).  With "option http-server-close" no
   server connection would ever be idle, with "never" only those of
   keep-alive clients, and with the default "safe" no first request would
   use one: the close spread (Connection: close on each connection's next
   answer during an upgrade) would be tested less, or not at all.
 * option httpchk GET /readyz, inter 100ms, fall 1, rise 1: one failed
   check marks a server DOWN, which makes "never DOWN during an upgrade"
   the strictest test of readiness, and takes a stopping instance out
   within about 100 ms, well inside its 1 s shutdown delay; one good check
   brings a fresh one back (its /readyz says 200 only once it serves).

The harness is sensitive (measured by hand on the same machine, one run
each, not part of the test): SIGKILL + start instead of stop + start,
about 550 failed requests; stop + start without a shutdown delay, about
370 (503s from HAProxy for refused connections, 502s, read errors);
upgrades in place with a 1 ms close spread, 1 to 3 read errors per run;
the Kubernetes play without a shutdown delay, about 50.
"""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

import gracetest
from gracetest import bound, free_port, now

PROGRAM = "upgrade-server"
HAPROXY = shutil.which("haproxy")
WRK = shutil.which("wrk")

RESTARTS = 10
# HAProxy's health check interval (inter, fastinter, downinter).
CHECK_INTER = "100ms"
# The shutdown delay of the stop + start restarts and of the Kubernetes play:
# longer than HAProxy's detection (one check: inter + the check itself).
DELAY = "1s"
# How long a fresh process, or a new generation, may take to be ready.
READY = bound(5.0, 20.0)
# How long an old generation may take to drain and exit after its hand-over
# (the close spread of an upgrade is 1 s) or after the shutdown delay.
DRAIN = bound(3.0, 10.0)
# Pause between two rolling restarts (so that one instance's old
# generation still drains while the next instance is upgraded).
PAUSE = 0.3


REPORT_RE = re.compile(
    r"Drain report: result=(\w+) duration=(\S+) requests_completed=(\d+) "
    r"rpcs_completed=(\d+) idle_closed=(\d+) requests_cut=(\d+)(?: cut=\"(.*)\")?$")

# wrk's script: a pause between requests (the pace), and the answers
# counted by status and X-Build (HAProxy sends header names in lower case).
WRK_LUA = r"""
counts = {}
local threads = {}
function setup(thread) table.insert(threads, thread) end
function delay() return %(delay_ms)d end
function response(status, headers, body)
  local b = headers["x-build"] or headers["X-Build"] or "-"
  local k = tostring(status) .. " " .. b
  counts[k] = (counts[k] or 0) + 1
end
function done(summary, latency, requests)
  local all = {}
  for _, t in ipairs(threads) do
    for k, v in pairs(t:get("counts")) do all[k] = (all[k] or 0) + v end
  end
  local parts = {}
  for k, v in pairs(all) do table.insert(parts, string.format("%%q:%%d", k, v)) end
  io.write("COUNTS {" .. table.concat(parts, ",") .. "}\n")
  local e = summary.errors
  io.write(string.format("ERRORS connect=%%d read=%%d write=%%d status=%%d timeout=%%d\n",
                         e.connect, e.read, e.write, e.status, e.timeout))
end
"""


def note(text):
    sys.stderr.write("    %s\n" % text)


def timeout_for_grace_period(period):
    """grace_group_timeout_for_grace_period, in seconds."""
    if period <= 0:
        return 0.0
    margin = min(max(period / 10.0, 1.0), 5.0)
    return max(period - margin, period / 2.0)


def go_seconds(d):
    """A Go duration string for a number of seconds ("4s", "500ms")."""
    if d == int(d):
        return "%ds" % d
    return "%dms" % round(d * 1000)


class Generation:
    """One process of an instance: the first one is a gracetest.Program
    (our child, reaped by its thread); the next ones are started by their
    predecessor and become our children when it exits (subreaper)."""

    def __init__(self, pid, build, program=None):
        self.pid = pid
        self.build = build
        self.program = program
        self.status = None      # exit code (negative: killed by that signal)

    def poll(self):
        """True once the exit status is known."""
        if self.status is not None:
            return True
        if self.program is not None:
            if self.program.running():
                return False
            self.status = self.program.returncode
            return True
        try:
            pid, st = os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:
            # Not our child (yet): its parent still runs.  Or gone without us
            # (reaped by its parent, which may happen only to a successor that
            # failed before ready): then it is no generation of ours.
            if gracetest.proc_state(self.pid) is None:
                raise AssertionError("generation %d vanished without being reaped here"
                                     % self.pid)
            return False
        if pid == 0:
            return False
        self.status = os.waitstatus_to_exitcode(st)
        return True

    def wait(self, timeout):
        deadline = now() + timeout
        while not self.poll():
            if now() > deadline:
                raise AssertionError("generation %d did not exit within %.1fs"
                                     % (self.pid, timeout))
            time.sleep(0.01)
        return self.status

    def kill(self):
        if self.status is None:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


class Instance:
    """One server of the fleet: its directory (binary copy, PID file,
    control socket), its port, and its generations."""

    def __init__(self, test, root, index, flags=(), env=None):
        self.test = test
        self.name = "s%d" % (index + 1)
        self.dir = os.path.join(root, self.name)
        os.mkdir(self.dir)
        self.exe = os.path.join(self.dir, PROGRAM)
        self.pidfile = os.path.join(self.dir, "pid")
        self.sock = os.path.join(self.dir, "control.sock")
        self.port = free_port()
        self.flags = list(flags)
        self.env = env
        self.generations = []
        self.build = None

    def install(self, build):
        """Puts build |build| at the program's path as a deployment does: a
        new file in the same directory renamed over the old one."""
        tmp = self.exe + ".new"
        shutil.copyfile(gracetest.bin_path("%s-%s" % (PROGRAM, build)), tmp)
        os.chmod(tmp, 0o755)
        os.rename(tmp, self.exe)
        self.build = build

    @property
    def current(self):
        return self.generations[-1]

    def read_pidfile(self):
        try:
            with open(self.pidfile) as f:
                text = f.read()
        except FileNotFoundError:
            return None
        return int(text) if text.endswith("\n") and text.strip().isdigit() else None

    def wait_pidfile(self, pid, timeout=READY):
        deadline = now() + timeout
        while self.read_pidfile() != pid:
            if now() > deadline:
                raise AssertionError("%s: the PID file says %r, not %d, after %.1fs"
                                     % (self.name, self.read_pidfile(), pid, timeout))
            time.sleep(0.01)

    def start(self, build="a", flags=(), env=None):
        """A fresh first generation; returns once ready (the PID file, which
        the first process writes once ready, names it)."""
        self.install(build)
        e = dict(self.env or {})
        e.update(env or {})
        p = self.test.start(self.exe, "-addr", "127.0.0.1:%d" % self.port,
                            "-pidfile", self.pidfile, "-upgrade-socket", self.sock,
                            *self.flags, *flags, env=e)
        self.generations.append(Generation(p.pid, build, program=p))
        self.wait_pidfile(p.pid)
        return p

    def upgrade(self):
        """Swaps the binary and upgrades in place through the control socket.
        Returns the old generation (draining)."""
        old = self.current
        self.install("b" if self.build == "a" else "a")
        r = subprocess.run([gracetest.bin_path("grace-upgrade"), "-socket", self.sock,
                            "-timeout", go_seconds(round(READY))],
                           stdin=subprocess.DEVNULL, capture_output=True,
                           timeout=READY + 5)
        out = r.stdout.decode() + r.stderr.decode()
        self.test.assertEqual(r.returncode, 0, "%s: grace-upgrade failed: %s" % (self.name, out))
        m = re.search(r"upgraded: pid (\d+) serves", out)
        self.test.assertIsNotNone(m, out)
        new = int(m.group(1))
        self.test.assertNotEqual(new, old.pid)
        # The old process writes the PID file before it answers.
        self.test.assertEqual(self.read_pidfile(), new,
                              "%s: the PID file does not name the new process" % self.name)
        self.generations.append(Generation(new, self.build))
        return old

    def kill_all(self):
        for g in self.generations:
            g.kill()


class HAProxy:
    """HAProxy in the foreground (-db) in front of the instances."""

    def __init__(self, test, root, instances, checks=True):
        self.test = test
        self.port = free_port()
        self.admin = os.path.join(root, "admin.sock")
        self.cfg = os.path.join(root, "haproxy.cfg")
        check = " check" if checks else ""
        servers = "\n".join("    server %s 127.0.0.1:%d%s" % (i.name, i.port, check)
                            for i in instances)
        targets = "\n".join("    use-server %s if { req.hdr(x-target) -m str %s }"
                            % (i.name, i.name) for i in instances)
        with open(self.cfg, "w") as f:
            f.write(HAPROXY_CFG % {"port": self.port, "admin": self.admin,
                                   "inter": CHECK_INTER, "servers": servers,
                                   "targets": targets,
                                   "httpchk": ("option httpchk GET /readyz\n"
                                               "    http-check expect status 200"
                                               if checks else "# no health checks")})
        self.program = test.start(HAPROXY, "-f", self.cfg, "-db")
        self.program.wait_port(self.port)
        deadline = now() + 10.0
        while not os.path.exists(self.admin):
            test.assertLess(now(), deadline, "no HAProxy admin socket")
            time.sleep(0.01)

    def command(self, cmd):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(5.0)
        try:
            s.connect(self.admin)
            s.sendall(cmd.encode() + b"\n")
            data = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        finally:
            s.close()
        return data.decode()

    def stats(self):
        """{server name: row} of backend be, from `show stat`."""
        lines = self.command("show stat").splitlines()
        head = lines[0].lstrip("# ").split(",")
        rows = {}
        for line in lines[1:]:
            if line:
                row = dict(zip(head, line.split(",")))
                if row["pxname"] == "be":
                    rows[row["svname"]] = row
        return rows

    def wait_status(self, name, status, timeout):
        deadline = now() + timeout
        while True:
            st = self.stats()[name]["status"]
            if st == status:
                return now()
            if now() > deadline:
                raise AssertionError("HAProxy: %s is %s, not %s, after %.1fs"
                                     % (name, st, status, timeout))
            time.sleep(0.01)

    def log(self):
        """What HAProxy logged: only abnormal requests, check results that
        changed and state changes (option dontlog-normal)."""
        return [l.text for l in self.program.stdout_lines() + self.program.lines()]


HAPROXY_CFG = """\
# Generated by tests/integration/test_upgrade_fleet.py (see its docstring).
global
    nbthread 1
    maxconn 4096
    log stdout format iso local0 info
    # The admin socket: `show stat`, and `set server be/sN state maint` for
    # the Kubernetes play (the endpoint removed).
    stats socket %(admin)s level admin

defaults
    mode http
    log global
    option httplog
    # Only errors, retries, redispatches, checks that changed and state
    # changes are logged.
    option dontlog-normal
    option log-health-checks
    option http-keep-alive
    # Idle server connections shared by every request, the first of a
    # client connection too: the most requests on connections that a drain
    # could close under them.
    http-reuse always
    # Nothing is replayed: every failure reaches the client.
    retries 0
    retry-on none
    no option redispatch
    timeout connect 1s
    timeout client 10s
    # Longer than the longest request of the Kubernetes play.
    timeout server 60s
    timeout http-request 5s
    timeout http-keep-alive 10s
    timeout check 1s

frontend fe
    bind 127.0.0.1:%(port)d
    default_backend be

backend be
    balance roundrobin
    # /readyz: 200 while ready, 503 from the start of a plain shutdown.
    %(httpchk)s
    # One failed check marks a server DOWN, one good one UP (see the
    # docstring); the interval is the same whatever the state.
    default-server inter %(inter)s fastinter %(inter)s downinter %(inter)s fall 1 rise 1
    # Which server answered, and a way to aim a request at one.
    http-response set-header X-Served-By %%s
%(targets)s
%(servers)s
"""


class Load:
    """wrk through HAProxy from start() to stop(): 8 keep-alive connections
    and 4 that send Connection: close, one thread each, paced."""

    def __init__(self, test, root, port):
        self.test = test
        lua = os.path.join(root, "count.lua")
        with open(lua, "w") as f:
            f.write(WRK_LUA % {"delay_ms": 2})
        url = "http://127.0.0.1:%d/" % port
        # A cap only: stop() ends wrk with SIGINT (it then prints its figures).
        cap = "%ds" % bound(180, 600)
        timeout = "%ds" % bound(2, 5)
        self.start_time = now()
        self.wrks = [
            test.start(WRK, "-t1", "-c8", "-d", cap, "--timeout", timeout, "-s", lua, url),
            test.start(WRK, "-t1", "-c4", "-d", cap, "--timeout", timeout, "-s", lua,
                       "-H", "Connection: close", url),
        ]

    def stop(self):
        """Ends wrk; returns {"requests", "failed", "counts", "detail"}."""
        for w in self.wrks:
            self.test.assertTrue(w.running(), "wrk ended early:\n%s" % w.describe())
            w.send_signal(signal.SIGINT)
        res = {"requests": 0, "failed": 0, "counts": {}, "detail": [],
               "seconds": now() - self.start_time}
        for w in self.wrks:
            self.test.assertEqual(w.wait_exit(10.0), 0, w.describe())
            out = "\n".join(l.text for l in w.stdout_lines())
            m = re.search(r"^\s*(\d+) requests in", out, re.M)
            self.test.assertIsNotNone(m, "no wrk summary:\n%s" % w.describe())
            res["requests"] += int(m.group(1))
            # wrk prints these two lines only when they are not zero.
            m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
            if m:
                res["failed"] += int(m.group(1))
                res["detail"].append(m.group(0))
            m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), "
                          r"timeout (\d+)", out)
            if m:
                res["failed"] += sum(int(x) for x in m.groups())
                res["detail"].append(m.group(0))
            m = re.search(r"^COUNTS (\{.*\})$", out, re.M)
            self.test.assertIsNotNone(m, "no counts from wrk's script:\n%s" % out)
            for k, v in json.loads(m.group(1)).items():
                res["counts"][k] = res["counts"].get(k, 0) + v
            m = re.search(r"^ERRORS connect=(\d+) read=(\d+) write=(\d+) status=(\d+) "
                          r"timeout=(\d+)$", out, re.M)
            self.test.assertIsNotNone(m, out)
            # The script's own view agrees with wrk's lines.
            script_errors = sum(int(x) for x in m.groups()[:3]) + int(m.group(5))
            m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), "
                          r"timeout (\d+)", out)
            self.test.assertEqual(script_errors, sum(int(x) for x in m.groups()) if m else 0,
                                  out)
        # Counted by the script too: any answer but 200 is a failure here
        # (wrk's line counts only statuses >= 400).
        res["not_200"] = sum(v for k, v in res["counts"].items() if not k.startswith("200 "))
        res["builds"] = {}
        for k, v in res["counts"].items():
            b = k.split(" ", 1)[1]
            res["builds"][b] = res["builds"].get(b, 0) + v
        return res


class FleetTest(gracetest.ProgramTestCase):

    @classmethod
    def setUpClass(cls):
        for tool, pkg in ((HAPROXY, "haproxy"), (WRK, "wrk")):
            if tool is None:
                raise AssertionError("%s is not installed (Debian package %s)" % (pkg, pkg))
        gracetest.become_subreaper()

    def setUp(self):
        super().setUp()
        self.root = tempfile.mkdtemp(prefix="grace-fleet-")
        self.instances = []
        self.haproxy = None

    def tearDown(self):
        # Whatever still runs is killed: every generation, then (in
        # ProgramTestCase.tearDown) the programs we started ourselves.
        for i in self.instances:
            i.kill_all()
        deadline = now() + 10.0
        for i in self.instances:
            for g in i.generations:
                while g.status is None and now() < deadline:
                    try:
                        g.poll()
                    except AssertionError:
                        break
                    time.sleep(0.01)
        super().tearDown()
        # Leftovers (none expected): killed and reaped.
        for pid, _ in gracetest.children():
            if not any(p.pid == pid for p in self.programs):
                try:
                    os.kill(pid, signal.SIGKILL)
                    os.waitpid(pid, 0)
                except (ProcessLookupError, ChildProcessError):
                    pass
        shutil.rmtree(self.root, ignore_errors=True)

    # -- helpers -------------------------------------------------------------

    def fleet(self, n=3, flags=(), checks=True, first=((), None)):
        """n instances of build a (the first one with the extra flags and
        environment of |first|), HAProxy in front, all UP."""
        for k in range(n):
            inst = Instance(self, self.root, k, flags=flags)
            if k == 0:
                inst.start("a", flags=first[0], env=first[1])
            else:
                inst.start("a")
            self.instances.append(inst)
        self.haproxy = HAProxy(self, self.root, self.instances, checks=checks)
        for inst in self.instances:
            self.haproxy.wait_status(inst.name, "UP" if checks else "no check", READY)
        return self.instances

    def assert_no_failure(self, res, what, expected=None):
        """wrk saw no failure, and neither did HAProxy's counters but for
        |expected| ({(server, field): count}: what the test cut itself)."""
        expected = expected or {}
        self.report("%s: requests through HAProxy" % what, res["requests"], "")
        self.report("%s: failed" % what, res["failed"] + res["not_200"], "")
        self.report("%s: load time" % what, res["seconds"], "s")
        self.assertEqual(
            (res["failed"], res["not_200"]), (0, 0),
            "%s: failed requests: %s; answers %r; HAProxy logged:\n%s"
            % (what, res["detail"], res["counts"], "\n".join(self.haproxy.log()[-60:])))
        # At least 50 a second (12.5 under sanitizers) where wrk's pace
        # gives thousands: catches only a load that stalled.
        self.assertGreater(res["requests"], 50 * res["seconds"] / bound(1, 4),
                           "%s: too little load to mean anything: %r" % (what, res))
        # HAProxy's own counters agree: no server-side error, nothing retried
        # (per server; and for the backend, whose 5xx count includes the
        # answers HAProxy made itself, a 502 for a request cut).
        for name, row in self.haproxy.stats().items():
            for field in ("econ", "eresp", "wretr", "wredis", "hrsp_5xx"):
                self.assertEqual(int(row[field] or "0"), expected.get((name, field), 0),
                                 "%s: HAProxy counted %s=%s for %s" % (what, field, row[field], name))

    def assert_all_reaped(self):
        """No child of ours is left but the programs we started ourselves
        and that still run (HAProxy): no zombie, no stray generation."""
        ours = {p.pid for p in self.programs if p.running()}
        left = [(pid, st) for pid, st in gracetest.children() if pid not in ours]
        self.assertEqual(left, [], "children left unaccounted for (pid, state)")

    def stop_fleet(self):
        """SIGTERM to every current generation; each exits 0."""
        for inst in self.instances:
            g = inst.current
            os.kill(g.pid, signal.SIGTERM)
        for inst in self.instances:
            self.assertEqual(inst.current.wait(DRAIN + 2.0), 0,
                             "%s pid %d: exit status" % (inst.name, inst.current.pid))

    # -- the scenarios -------------------------------------------------------

    def test_rolling_upgrades_in_place_lose_no_request(self):
        instances = self.fleet()
        load = Load(self, self.root, self.haproxy.port)
        time.sleep(0.5)
        old_generations = []
        draining = {}           # instance name -> its old generation
        t0 = now()
        for k in range(RESTARTS):
            inst = instances[k % len(instances)]
            # An upgrade is refused while the instance's previous old
            # generation still drains (max_draining 1): wait for its exit.
            prev = draining.pop(inst.name, None)
            if prev is not None:
                self.assertEqual(prev.wait(DRAIN), 0,
                                 "%s: old generation %d" % (inst.name, prev.pid))
            # A slow request in flight at the old process during its upgrade
            # (on a connection it has answered already, so it is the old
            # process's, not one the new process could accept).
            c = self.conn(inst.port)
            c.send(gracetest.request("/pid"))
            self.assertEqual(int(c.read_response().body), inst.current.pid)
            c.send(gracetest.request("/sleep?duration=500ms"))
            old_build = inst.build
            old = inst.upgrade()
            draining[inst.name] = old
            old_generations.append(old)
            time.sleep(PAUSE)
            r = c.read_response(timeout=5.0)
            self.assertEqual((r.status, r.body, r.header("X-Build")), (200, b"slept\n", old_build),
                             "%s: the request in flight at the upgrade" % inst.name)
            c.close()
        upgrades_time = now() - t0
        for old in draining.values():
            self.assertEqual(old.wait(DRAIN), 0, "old generation %d" % old.pid)
        time.sleep(0.3)
        res = load.stop()
        stats = self.haproxy.stats()

        self.assert_no_failure(res, "upgrades in place")
        self.report("10 upgrades", upgrades_time, "s")
        self.assertEqual(len(old_generations), RESTARTS)
        self.assertEqual([g.status for g in old_generations], [0] * RESTARTS,
                         "every old generation exits 0 once drained")
        # Both builds answered through HAProxy.
        note("answers by build: %r" % res["builds"])
        self.assertGreater(res["builds"].get("a", 0), 0)
        self.assertGreater(res["builds"].get("b", 0), 0)
        # Each instance runs the build it was last given, in a new process.
        for inst in instances:
            r = gracetest.get(inst.port, "/pid")
            self.assertEqual(r.status, 200)
            self.assertEqual(r.header("X-Build"), inst.build)
            self.assertEqual(int(r.body), inst.current.pid)
            self.assertGreater(len(inst.generations), 1)
        # Readiness never flapped: no check failed, no server went DOWN.
        for inst in instances:
            row = stats[inst.name]
            self.assertEqual((row["status"], row["chkfail"], row["chkdown"]), ("UP", "0", "0"),
                             "HAProxy saw %s fail a check or go DOWN during an upgrade" % inst.name)
        downs = [l for l in self.haproxy.log()
                 if re.search(r"is DOWN|Health check for server \S+ failed", l)]
        self.assertEqual(downs, [], "HAProxy logged a check failure or a DOWN server")

        self.stop_fleet()
        self.assert_all_reaped()

    def test_rolling_stop_and_start_lose_no_request(self):
        instances = self.fleet(flags=("-shutdown-delay", DELAY))
        load = Load(self, self.root, self.haproxy.port)
        time.sleep(0.5)
        t0 = now()
        detection = []
        for k in range(RESTARTS):
            inst = instances[k % len(instances)]
            g = inst.current
            t_sig = g.program.send_signal(signal.SIGTERM)
            # HAProxy takes it out on its first failed check, within the
            # delay (while the instance still serves): checked below
            # against the end of the delay.
            t_down = self.haproxy.wait_status(inst.name, "DOWN", DRAIN)
            detection.append(t_down - t_sig)
            self.assertEqual(g.wait(DRAIN), 0, "%s pid %d: exit status" % (inst.name, g.pid))
            p = g.program
            self.assertIn("Shutdown started (context canceled): deadline 10s, delay %s" % DELAY,
                          p.messages())
            # It was DOWN before the delay ended (its listener closes then).
            delay_end = p.wait_line(r"Shutdown phase 2 \(delay \S+\) took")
            self.assertLess(t_down, delay_end.t, "HAProxy took %s out after its delay" % inst.name)
            inst.start(inst.build)
            self.haproxy.wait_status(inst.name, "UP", READY)
            time.sleep(PAUSE)
        restarts_time = now() - t0
        time.sleep(0.3)
        res = load.stop()
        stats = self.haproxy.stats()

        self.assert_no_failure(res, "stop + start")
        self.report("10 stop + start restarts", restarts_time, "s")
        self.report("SIGTERM -> HAProxy DOWN, longest", max(detection) * 1000)
        for inst in instances:
            self.assertEqual(stats[inst.name]["status"], "UP")
            # Each restart took it out exactly once.
            n = sum(1 for k in range(RESTARTS) if instances[k % len(instances)] is inst)
            self.assertEqual(stats[inst.name]["chkdown"], str(n))
        self.stop_fleet()
        self.assert_all_reaped()

    def test_successor_is_ready_while_it_starts(self):
        """A new process serves the shared listener from the moment its
        server starts, before it is ready (its group still starting, its
        readiness check still running): there its /readyz must say ready,
        as the endpoint is, or a health check that lands on it takes the
        server out (one flap in a few dozen upgrades under this module's
        load, before grace_group_add_upgrader made a successor's group
        ready from the start).  Made long here: the new process's
        readiness check never passes (-fail-file "hang"), so it serves
        beside the old one until the old one's -upgrade-timeout kills it.
        The probe stops well before that: the connections the new process
        holds when it is killed are cut."""
        fail = os.path.join(self.root, "fail")
        (inst,) = self.fleet(n=1, flags=("-fail-file", fail, "-upgrade-timeout", "3s"))
        first = inst.current.pid
        with open(fail, "w") as f:
            f.write("hang\n")
        up = subprocess.Popen([gracetest.bin_path("grace-upgrade"), "-socket", inst.sock],
                              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE)
        seen = {}               # pid -> its /readyz answers, [(status, body)]
        t0 = now()
        while now() < t0 + 1.5:
            self.assertIsNone(up.poll(), "grace-upgrade ended early")
            c = gracetest.HttpConn(inst.port)
            try:
                # Two requests on one connection: the same process answers.
                c.send(gracetest.request("/pid"))
                pid = int(c.read_response().body)
                c.send(gracetest.request("/readyz"))
                r = c.read_response()
            finally:
                c.close()
            seen.setdefault(pid, []).append((r.status, r.body))
        out, err = up.communicate(timeout=READY + 5.0)
        self.assertEqual(up.returncode, 1, out + err)
        self.assertIn(b"not ready within 3s", err)
        others = {pid: a for pid, a in seen.items() if pid != first}
        self.assertTrue(others, "the new process answered no connection: %r" % seen)
        for pid, answers in seen.items():
            self.assertEqual(set(answers), {(200, b"ok")},
                             "pid %d (%s) answered /readyz %r" %
                             (pid, "old" if pid == first else "new", answers))
        row = self.haproxy.stats()[inst.name]
        self.assertEqual((row["status"], row["chkfail"], row["chkdown"]), ("UP", "0", "0"))
        note("/readyz answers of the old and the new process: %r"
             % {pid: len(a) for pid, a in seen.items()})
        self.assertEqual(inst.read_pidfile(), first)
        self.stop_fleet()
        self.assert_all_reaped()

    def test_kubernetes_termination_sequence(self):
        """Kubernetes' sequence, with its numbers at a short scale.

        When a pod is deleted, the kubelet (preStop hook, then SIGTERM to the
        container) and the endpoint controllers (the pod's address removed
        from the EndpointSlices, then kube-proxy and the ingress controllers
        reprogram themselves) act concurrently, on their own schedules: no
        order is guaranteed, and the load balancer usually learns last.  The
        play: SIGTERM, and from another thread the server put in maintenance
        in HAProxy (the endpoint removed) after a propagation lag shorter than
        the shutdown delay; HAProxy runs no health check here (kube-proxy
        does not probe: the endpoint list is all it follows).  The grace
        period (terminationGracePeriodSeconds) after SIGTERM, then SIGKILL.

        The numbers follow deploy/kubernetes/grace-demo.yaml's rules at a
        short scale (there: grace period 60 s, deadline 55 s, delay 10 s,
        close spread 5 s, longest request 30 s, propagation 5 s; here: 5 s,
        4 s, 1 s, 500 ms, 2 s, 300 ms, and a grace period of 20 s, deadline
        18 s under sanitizers): the program reads
        TERMINATION_GRACE_PERIOD_SECONDS and derives its deadline by
        grace_group_timeout_for_grace_period; the delay covers the
        propagation lag; delay + close spread + longest request fit in the
        deadline, which leaves a margin before the SIGKILL."""
        # Under sanitizers the exit after the drain report (the teardown and
        # LeakSanitizer's scan) takes up to a few hundred ms where a plain
        # build takes 1 ms: a longer period, for a margin of 2 s by the same
        # rule, so that the test still tells whether the numbers are right.
        period = bound(5.0, 20.0)
        lag = 0.3
        deadline = timeout_for_grace_period(period)
        # The rule, as grace/group.h states it.
        self.assertEqual([timeout_for_grace_period(x) for x in (5.0, 20.0, 30.0, 60.0)],
                         [4.0, 18.0, 27.0, 55.0])
        longer = "/sleep?duration=%s" % go_seconds(period + 3)
        flags = ("-shutdown-delay", DELAY, "-close-spread", "500ms")
        good_env = {"TERMINATION_GRACE_PERIOD_SECONDS": "%d" % period}
        # s1 takes its deadline from the environment, as in the manifest.
        good = ("-shutdown-timeout", "0s")
        instances = self.fleet(flags=flags, checks=False, first=(good, good_env))
        s1 = instances[0]
        load = Load(self, self.root, self.haproxy.port)
        time.sleep(0.5)

        def terminate(inst, request):
            """|request| sent to |inst| through HAProxy (X-Target), then the
            sequence.  Returns (SIGKILLed?, exit status, {"resp": Response}
            or {"error": text}, SIGTERM -> exit in seconds, the Program,
            answers of |inst| from SIGTERM to exit)."""
            g = inst.current
            c = gracetest.HttpConn(self.haproxy.port, timeout=period + 10)
            c.send(gracetest.request(request, headers=(("X-Target", inst.name),)))
            # A head start, so that it is in flight at s1 at the SIGTERM (for
            # the first case, X-Served-By checks where it went; the cut ones
            # are counted by HAProxy for s1).
            time.sleep(0.3)
            result = {}

            def read():
                try:
                    result["resp"] = c.read_response(timeout=period + 10)
                except (AssertionError, OSError) as e:
                    result["error"] = "%s: %s" % (type(e).__name__, e)

            reader = threading.Thread(target=read, daemon=True)
            reader.start()
            served_before = int(self.haproxy.stats()[inst.name]["hrsp_2xx"])
            # Concurrently: the endpoint removal reaches HAProxy after `lag`.
            remover = threading.Timer(lag, self.haproxy.command,
                                      args=("set server be/%s state maint" % inst.name,))
            t_term = g.program.send_signal(signal.SIGTERM)
            remover.start()
            killed = False
            while not g.poll():
                if now() - t_term >= period:
                    g.program.send_signal(signal.SIGKILL)
                    killed = True
                    g.wait(5.0)
                    break
                time.sleep(0.01)
            remover.join()
            reader.join(period + 15)
            c.close()
            served = int(self.haproxy.stats()[inst.name]["hrsp_2xx"]) - served_before
            return killed, g.status, result, g.program.exit_time - t_term, g.program, served

        # 1. The manifest's numbers, a 2 s request in flight (it outlasts the
        #    delay, so the drain waits for it): served, exit 0 by itself long
        #    before the SIGKILL; the requests HAProxy still sent during the
        #    propagation lag were served too (wrk saw no failure).
        killed, status, result, took, p, served = terminate(s1, "/sleep?duration=2s")
        self.assertFalse(killed, "SIGKILL was needed:\n%s" % p.describe())
        self.assertEqual(status, 0, p.describe())
        self.assertIn("Shutdown started (context canceled): deadline %s, delay %s"
                      % (go_seconds(deadline), DELAY), p.messages())
        resp = result.get("resp")
        self.assertIsNotNone(resp, "the request in flight failed: %r" % result)
        self.assertEqual((resp.status, resp.body), (200, b"slept\n"))
        self.assertEqual(resp.header("X-Served-By"), "s1")
        # The drain waited for it (the answer reaches us through HAProxy, maybe
        # after the exit: the program's own report says it).
        m = REPORT_RE.search(p.wait_line(r"Drain report:").text)
        self.assertEqual(m.group(1), "clean", m.group(0))
        self.assertGreaterEqual(int(m.group(3)), 1, m.group(0))
        self.report("good numbers: SIGTERM -> exit", took * 1000)
        self.report("good numbers: answers of s1 after its SIGTERM (propagation lag)",
                    served, "")
        self.assertGreater(served, 1, "no load reached s1 during the lag: the play shows nothing")
        self.assertLess(took, period)

        # 2. The same numbers, a request longer than the grace period: the
        #    program's deadline cuts it and the program says so, exit 1,
        #    still before the SIGKILL (the margin).
        s1.start("a", flags=good, env=good_env)
        self.haproxy.command("set server be/s1 state ready")
        time.sleep(0.3)
        killed, status, result, took, p, _ = terminate(s1, longer)
        self.assertFalse(killed, "SIGKILL was needed:\n%s" % p.describe())
        self.assertEqual(status, 1, p.describe())
        m = REPORT_RE.search(p.wait_line(r"Drain report:").text)
        self.assertEqual((m.group(1), m.group(6)), ("forced", "1"), m.group(0))
        self.assertGreaterEqual(took, deadline)
        self.assertLess(took, period)
        self.assertNotEqual(getattr(result.get("resp"), "status", None), 200)
        cut = [result]
        self.report("good numbers, request longer than the period: SIGTERM -> exit",
                    took * 1000)

        # 3. Wrong numbers: a deadline longer than the grace period.  The
        #    program still waits for the request at the SIGKILL, which cuts
        #    it: no drain report, killed.
        s1.start("a", flags=("-shutdown-timeout", "30s"), env=good_env)
        self.haproxy.command("set server be/s1 state ready")
        time.sleep(0.3)
        killed, status, result, took, p, _ = terminate(s1, longer)
        self.assertTrue(killed, "the program exited before the SIGKILL:\n%s" % p.describe())
        self.assertEqual(status, -signal.SIGKILL)
        self.assertIn("Shutdown started (context canceled): deadline 30s, delay %s" % DELAY,
                      p.messages())
        self.assertFalse([m for m in p.messages() if m.startswith("Drain report:")],
                         "a drain report before the SIGKILL")
        resp = result.get("resp")
        cut.append(result)
        self.assertTrue(resp is None or resp.status == 502,
                        "the request in flight was not cut: %r" % result)
        note("wrong numbers: the SIGKILL cut the request in flight: %s"
             % (resp.status if resp else result.get("error")))

        res = load.stop()
        # HAProxy counted the two requests cut on purpose, and nothing else.
        answered_5xx = sum(1 for r in cut if "resp" in r and r["resp"].status >= 500)
        note("the two cut requests got: %r" % [r["resp"].status if "resp" in r else r["error"]
                                              for r in cut])
        self.assert_no_failure(res, "Kubernetes play",
                               expected={("s1", "eresp"): 2, ("BACKEND", "eresp"): 2,
                                         ("BACKEND", "hrsp_5xx"): answered_5xx})
        self.stop_fleet_but(s1)
        self.assert_all_reaped()

    def stop_fleet_but(self, skip):
        for inst in self.instances:
            if inst is not skip:
                os.kill(inst.current.pid, signal.SIGTERM)
        for inst in self.instances:
            if inst is not skip:
                self.assertEqual(inst.current.wait(DRAIN + 2.0), 0)


if __name__ == "__main__":
    gracetest.main()
