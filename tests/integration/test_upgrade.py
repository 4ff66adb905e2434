#!/usr/bin/env python3
"""Zero-downtime upgrades (grace/upgrade.h) with real processes, real
signals and real load.

The programs: upgrade-server-a and upgrade-server-b (tests/programs, the same
program built twice: every answer says "X-Build: a" or "b", and build b has
an extra listener), grace-demo-server (HTTP + gRPC), http-sleep-server (no
group), and the control command grace-upgrade.  A test installs a binary at
a path of its own (a temporary file renamed over it, as a deployment does),
starts it from there and upgrades it with SIGUSR2 or grace-upgrade.

Each generation is the child of the one before; when a parent exits its
child is reparented.  This process makes itself a child subreaper, so every
generation ends up its child: it reaps each one and checks its exit status,
and no zombie is left.
"""

import errno
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import unittest

import gracetest
from gracetest import HOST, bound, now

try:
    import grpc
except ImportError:  # pragma: no cover - depends on the machine
    grpc = None

gracetest.become_subreaper()

BUILD_A = "upgrade-server-a"
BUILD_B = "upgrade-server-b"


def listen_counters():
    """The kernel's (ListenOverflows, ListenDrops) from /proc/net/netstat."""
    with open("/proc/net/netstat") as f:
        lines = f.read().splitlines()
    for i in range(0, len(lines) - 1, 2):
        if lines[i].startswith("TcpExt:"):
            names = lines[i].split()[1:]
            values = [int(v) for v in lines[i + 1].split()[1:]]
            d = dict(zip(names, values))
            return d.get("ListenOverflows", 0), d.get("ListenDrops", 0)
    return 0, 0


def fd_count(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


def alive(pid):
    st = gracetest.proc_state(pid)
    return st is not None and st != "Z"


def zombie_children():
    """Our children that are zombies (exited, not reaped)."""
    return [pid for pid, st in gracetest.children() if st == "Z"]


def wrk_result(text):
    """(requests, non-2xx, socket errors dict) from wrk's output."""
    m = re.search(r"(\d+) requests in", text)
    req = int(m.group(1)) if m else 0
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    bad = int(m.group(1)) if m else 0
    errs = {"connect": 0, "read": 0, "write": 0, "timeout": 0}
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    if m:
        errs = dict(zip(("connect", "read", "write", "timeout"), map(int, m.groups())))
    return req, bad, errs


class Sampler:
    """A client beside the load: a fresh connection per request every
    `interval`, recording which build answered and every failure."""

    def __init__(self, port, interval=0.02):
        self.port = port
        self.interval = interval
        self.builds = {}
        self.errors = []
        self.refused = 0
        self.ok = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            try:
                r = gracetest.get(self.port, "/", timeout=5.0)
                if r.status == 200:
                    b = r.header("X-Build") or "?"
                    self.builds[b] = self.builds.get(b, 0) + 1
                    self.ok += 1
                else:
                    self.errors.append("status %d" % r.status)
            except ConnectionRefusedError as e:
                self.refused += 1
                self.errors.append("refused: %s" % e)
            except (OSError, AssertionError) as e:
                self.errors.append("%s: %s" % (type(e).__name__, e))
            self._stop.wait(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(10.0)
        return False


class Chain:
    """One upgradable program at a path of its own, and its generations."""

    def __init__(self, test, binary, *args, pidfile=True, control=True, env=None):
        self.test = test
        self.dir = tempfile.mkdtemp(prefix="grace-upgrade-")
        test.addCleanup(shutil.rmtree, self.dir, True)
        self.path = os.path.join(self.dir, "app")
        self.pidfile = os.path.join(self.dir, "app.pid") if pidfile else None
        self.control = os.path.join(self.dir, "control.sock") if control else None
        self.install(binary)
        argv = list(args)
        if self.pidfile:
            argv += ["-pidfile", self.pidfile]
        if self.control:
            argv += ["-upgrade-socket", self.control]
        self.first = test.start(self.path, *argv, env=env)
        self.pids = [self.first.pid]  # every generation, oldest first
        self.status = {}              # pid -> exit status, once reaped
        test.addCleanup(self.kill_all)

    def install(self, binary):
        """Puts |binary| at the program's path as a deployment does: a new
        file renamed over the old one (the running process keeps its own)."""
        tmp = self.path + ".new"
        shutil.copyfile(gracetest.bin_path(binary), tmp)
        os.chmod(tmp, 0o755)
        os.rename(tmp, self.path)

    def pid(self):
        with open(self.pidfile) as f:
            return int(f.read().strip())

    def wait_pidfile(self, timeout=10.0):
        deadline = now() + timeout
        while now() < deadline:
            try:
                return self.pid()
            except (FileNotFoundError, ValueError):
                time.sleep(0.005)
        raise AssertionError("no PID file %s within %.1fs" % (self.pidfile, timeout))

    def upgrade(self, timeout=60.0):
        """grace-upgrade; returns (exit status, stdout, stderr)."""
        r = subprocess.run([gracetest.bin_path("grace-upgrade"), "-socket", self.control,
                            "-timeout", "%ds" % timeout],
                           capture_output=True, text=True, timeout=timeout + 10)
        return r.returncode, r.stdout, r.stderr

    def note(self, pid):
        if pid not in self.pids:
            self.pids.append(pid)

    def reap(self, pid, timeout):
        """Waits for generation |pid| to exit and returns its status (as
        subprocess does: negative for a signal)."""
        if pid == self.first.pid:
            return self.first.wait_exit(timeout)
        if pid in self.status:
            return self.status[pid]
        deadline = now() + timeout
        while True:
            try:
                got, st = os.waitpid(pid, os.WNOHANG)
                if got == pid:
                    code = os.waitstatus_to_exitcode(st)
                    self.status[pid] = code
                    return code
            except ChildProcessError:
                # Not our child yet: its parent still runs.
                pass
            if now() > deadline:
                raise AssertionError("generation %d did not exit within %.1fs\n%s"
                                     % (pid, timeout, self.test.dump()))
            time.sleep(0.005)

    def kill_all(self):
        for pid in self.pids:
            if pid != self.first.pid and pid not in self.status and alive(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        for pid in self.pids:
            if pid != self.first.pid and pid not in self.status:
                try:
                    self.reap(pid, 10.0)
                except AssertionError:
                    pass


class UpgradeTest(gracetest.ProgramTestCase):

    def serve(self, binary=BUILD_A, *extra, **kw):
        port = gracetest.free_port()
        c = Chain(self, binary, "-addr", "%s:%d" % (HOST, port), "-loops", "1", *extra, **kw)
        c.first.wait_port(port)
        c.wait_pidfile()
        return c, port

    def build_of(self, port):
        r = gracetest.get(port, "/")
        self.assertEqual(r.status, 200)
        return r.header("X-Build")

    def upgraded(self, c, old, timeout=30.0):
        """Waits until the PID file names a new process; returns its pid."""
        deadline = now() + timeout
        while now() < deadline:
            try:
                p = c.pid()
            except (FileNotFoundError, ValueError):
                p = old
            if p != old:
                c.note(p)
                return p
            time.sleep(0.005)
        self.fail("the PID file still names %d after %.1fs\n%s" % (old, timeout, self.dump()))

    # -- load ------------------------------------------------------------------

    def run_under_load(self, close, count=20, every=2.0):
        """|count| upgrades, one every |every| seconds, alternating builds a
        and b and the two ways to ask (grace-upgrade, SIGUSR2), under wrk."""
        c, port = self.serve(BUILD_A)
        self.assertEqual(self.build_of(port), "a")
        duration = count * every + 3
        base0 = listen_counters()
        time.sleep(1.0)  # the baseline: the same machine, no upgrade
        base1 = listen_counters()
        args = ["wrk", "-t", "2", "-c", "16", "-d", "%ds" % duration, "--timeout", "5s"]
        if close:
            args += ["-H", "Connection: close"]
        wrk = subprocess.Popen(args + ["http://%s:%d/" % (HOST, port)],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.addCleanup(lambda: wrk.poll() is None and wrk.kill())
        t0 = listen_counters()
        fds_first = fd_count(c.first.pid)
        with Sampler(port) as s:
            time.sleep(1.0)
            for i in range(count):
                t_next = now() + every
                old = c.pid()
                # The previous old process has finished its drain (else this
                # upgrade would be refused: one draining generation at most).
                if i > 0:
                    self.assertEqual(c.reap(c.pids[-2], bound(5.0, 15.0)), 0,
                                     "generation %d did not exit 0" % c.pids[-2])
                c.install(BUILD_B if i % 2 == 0 else BUILD_A)
                if i % 2 == 0:
                    rc, out, err = c.upgrade()
                    self.assertEqual(rc, 0, "grace-upgrade: %s %s" % (out, err))
                    self.assertRegex(out, r"^upgraded: pid \d+ serves")
                else:
                    os.kill(old, signal.SIGUSR2)
                self.upgraded(c, old)
                time.sleep(max(0.0, t_next - now()))
            out, _ = wrk.communicate(timeout=duration + 30)
        t1 = listen_counters()
        req, bad, errs = wrk_result(out)
        sys.stderr.write("    measured: %d upgrades, wrk %s: %d requests, non-2xx %d, errors %s; "
                         "sampler %d ok %s\n" % (count, "close" if close else "keep-alive",
                                                 req, bad, errs, s.ok, s.builds))
        self.assertGreater(req, 1000, out)
        self.assertEqual(bad, 0, out)
        self.assertEqual(errs, {"connect": 0, "read": 0, "write": 0, "timeout": 0}, out)
        self.assertEqual(s.errors, [])
        self.assertGreater(s.builds.get("a", 0), 0)
        self.assertGreater(s.builds.get("b", 0), 0)
        # Nothing was dropped from an accept queue beyond what the machine
        # did anyway (the counters are the whole network namespace's).
        grew = (t1[0] - t0[0], t1[1] - t0[1])
        base = (base1[0] - base0[0], base1[1] - base0[1])
        self.assertLessEqual(grew[0], base[0] * (duration + 1), (grew, base))
        self.assertLessEqual(grew[1], base[1] * (duration + 1), (grew, base))
        # Every old generation drained and exited 0; only the last serves.
        for pid in c.pids[:-1]:
            self.assertEqual(c.reap(pid, bound(5.0, 15.0)), 0, "generation %d" % pid)
        self.assertTrue(alive(c.pids[-1]))
        self.assertEqual(len(c.pids), count + 1)
        # No descriptor leaks: once its clients are gone, the last
        # generation holds what the first held before any client came.
        deadline = now() + bound(3.0, 10.0)
        while fd_count(c.pids[-1]) != fds_first and now() < deadline:
            time.sleep(0.02)
        self.assertEqual(fd_count(c.pids[-1]), fds_first,
                         sorted(os.readlink("/proc/%d/fd/%s" % (c.pids[-1], f))
                                for f in os.listdir("/proc/%d/fd" % c.pids[-1])))
        self.assertEqual(zombie_children(), [])
        # The last one stops as any: exit 0, PID file and socket removed.
        os.kill(c.pids[-1], signal.SIGTERM)
        self.assertEqual(c.reap(c.pids[-1], bound(10.0, 30.0)), 0)
        self.assertFalse(os.path.exists(c.pidfile))
        self.assertFalse(os.path.exists(c.control))

    def test_20_upgrades_under_keepalive_load(self):
        self.run_under_load(close=False)

    def test_20_upgrades_under_connection_close_load(self):
        self.run_under_load(close=True)

    # -- what crosses the hand-over ----------------------------------------------

    def test_inflight_request_and_idle_keepalive_connection(self):
        c, port = self.serve(BUILD_A)
        first = c.first
        idle = self.conn(port)
        idle.send(gracetest.request("/"))
        self.assertEqual(idle.read_response().header("X-Build"), "a")
        slow = self.conn(port)
        slow.send(gracetest.request("/sleep?duration=1s"))
        time.sleep(0.1)
        c.install(BUILD_B)
        t_sig = now()
        first.send_signal(signal.SIGUSR2)
        new = self.upgraded(c, first.pid)
        first.wait_line(r"Shutdown started \(handed over to pid %d\)" % new)
        self.assertLess(now() - t_sig, bound(1.0, 5.0))
        # The idle keep-alive connection was not cut: the old process
        # answers its requests until, at its moment in the close spread
        # (1 s), an answer says it closes.
        t_ho = now()
        while True:
            idle.send(gracetest.request("/"))
            r = idle.read_response()
            self.assertEqual((r.status, r.header("X-Build")), (200, "a"))
            if r.has_token("Connection", "close"):
                break
            self.assertLess(now() - t_ho, bound(1.5, 5.0), "never told to close")
            time.sleep(0.02)
        idle.expect_close()
        # The request in flight finishes on the old process.
        r = slow.read_response(timeout=5.0)
        self.assertEqual((r.status, r.body, r.header("X-Build")), (200, b"slept\n", "a"))
        # New connections reach the new one.
        self.assertEqual(self.build_of(port), "b")
        self.assertEqual(first.wait_exit(bound(5.0, 15.0)), 0)
        first.wait_line(r"Drain report: result=clean")
        # The old process skipped the not-ready phase and the delay.
        self.assertFalse(any("phase 1 (not ready) took" in l.text for l in first.lines()))

    def test_listener_added_then_removed(self):
        extra = gracetest.free_port()
        c, port = self.serve(BUILD_A, "-extra-addr", "%s:%d" % (HOST, extra))
        self.assertIsNotNone(gracetest.connect_error(extra))  # a has no extra listener
        c.install(BUILD_B)
        rc, out, err = c.upgrade()
        self.assertEqual(rc, 0, err)
        gen2 = self.upgraded(c, c.first.pid)
        self.assertEqual(self.build_of(extra), "b")
        self.assertEqual(self.build_of(port), "b")
        self.assertEqual(c.reap(c.first.pid, bound(5.0, 15.0)), 0)
        c.install(BUILD_A)
        rc, out, err = c.upgrade()
        self.assertEqual(rc, 0, err)
        self.upgraded(c, gen2)
        self.assertEqual(c.reap(gen2, bound(5.0, 15.0)), 0)
        # a does not want it: closed with the last process that had it.
        self.assertIsNotNone(gracetest.connect_error(extra))
        self.assertEqual(self.build_of(port), "a")
        c.first.wait_line(r'inherited listener "extra" is not used: closed')

    # -- failures --------------------------------------------------------------

    def failing(self, mode, *extra):
        failfile = os.path.join(tempfile.gettempdir(), "grace-fail-%d-%d" % (os.getpid(), id(self)))
        self.addCleanup(lambda: os.path.exists(failfile) and os.unlink(failfile))
        c, port = self.serve(BUILD_A, "-fail-file", failfile, *extra)
        with open(failfile, "w") as f:
            f.write(mode + "\n")
        c.install(BUILD_B)
        return c, port

    def assert_still_serving(self, c, port, sampler):
        self.assertEqual(c.pid(), c.first.pid)
        self.assertTrue(c.first.running())
        self.assertEqual(self.build_of(port), "a")
        self.assertEqual(sampler.errors, [])
        self.assertGreater(sampler.ok, 0)

    def test_new_process_exits_before_ready(self):
        c, port = self.failing("exit")
        with Sampler(port) as s:
            time.sleep(0.2)
            rc, out, err = c.upgrade()
            time.sleep(0.2)
        self.assertEqual(rc, 1)
        self.assertRegex(err, r"upgrade failed: pid \d+ exited with status 1 before it was ready")
        c.first.wait_line(r"Upgrade failed: pid \d+ exited with status 1 before it was ready; "
                          r"pid %d goes on serving" % c.first.pid)
        self.assert_still_serving(c, port, s)
        # A later upgrade works.
        rc, out, err = c.upgrade()
        self.assertEqual(rc, 0, err)
        self.upgraded(c, c.first.pid)
        self.assertEqual(c.reap(c.first.pid, bound(5.0, 15.0)), 0)

    def test_new_process_not_ready_in_time_is_stopped(self):
        # The new process serves from the shared queues while its readiness
        # check says "not yet"; at the timeout it is told to stop (SIGTERM)
        # and drains what it accepted: no client sees a failure.
        c, port = self.failing("hang", "-upgrade-timeout", "1s")
        with Sampler(port, interval=0.005) as s:
            t0 = now()
            rc, out, err = c.upgrade()
            took = now() - t0
            hung = int(re.search(r"pid (\d+) was not ready within 1s: it is told to stop",
                                 err).group(1))
            c.first.wait_line(r"Upgrade: the failed pid %d exited with status 0" % hung,
                              timeout=bound(5.0, 15.0))
        self.assertEqual(rc, 1)
        self.assertFalse(alive(hung))
        self.assertGreaterEqual(took, 0.9)
        self.assertLess(took, bound(3.0, 8.0))
        self.assert_still_serving(c, port, s)
        self.assertEqual(zombie_children(), [])

    def test_second_upgrade_while_one_is_in_flight_is_refused(self):
        c, port = self.failing("hang", "-upgrade-timeout", "3s")
        first = subprocess.Popen([gracetest.bin_path("grace-upgrade"), "-socket", c.control],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.addCleanup(lambda: first.poll() is None and first.kill())
        c.first.wait_line(r"Upgrade: started pid \d+")
        rc, out, err = c.upgrade()
        self.assertEqual(rc, 1)
        self.assertIn("an upgrade is in flight", err)
        c.first.send_signal(signal.SIGUSR2)
        c.first.wait_line(r"Upgrade refused: an upgrade is in flight")
        _, err1 = first.communicate(timeout=15)
        self.assertEqual(first.returncode, 1, err1)
        self.assertIn("not ready within 3s", err1)
        # The failed successor accepts from the shared queue until it has
        # stopped (it drains what it took): ask only once it is gone.
        hung = int(re.search(r"pid (\d+) was not ready within 3s", err1).group(1))
        c.first.wait_line(r"Upgrade: the failed pid %d exited" % hung,
                          timeout=bound(5.0, 15.0))
        self.assertEqual(self.build_of(port), "a")

    def test_upgrade_waits_for_the_older_generation_to_drain(self):
        c, port = self.serve(BUILD_A)
        slow = self.conn(port)
        slow.send(gracetest.request("/sleep?duration=2s"))
        time.sleep(0.1)
        c.install(BUILD_B)
        self.assertEqual(c.upgrade()[0], 0)
        gen2 = self.upgraded(c, c.first.pid)
        # Generation 1 still drains (its request sleeps): one generation may
        # drain at a time, so generation 2 refuses to start a third.
        rc, out, err = c.upgrade()
        self.assertEqual(rc, 1)
        self.assertIn("older generation is still draining", err)
        self.assertEqual(slow.read_response(timeout=5.0).status, 200)
        self.assertEqual(c.reap(c.first.pid, bound(5.0, 15.0)), 0)
        # Once it is gone, the next upgrade goes.
        deadline = now() + bound(5.0, 15.0)
        while True:
            rc, out, err = c.upgrade()
            if rc == 0 or now() > deadline:
                break
            time.sleep(0.05)  # the "older" news travels over a socket
        self.assertEqual(rc, 0, err)
        self.upgraded(c, gen2)

    def test_crash_after_ready_rolls_back(self):
        c, port = self.failing("crash")
        # The old process must still be draining when the new one crashes:
        # a request keeps it busy for 2 s.
        slow = self.conn(port)
        slow.send(gracetest.request("/sleep?duration=2s"))
        time.sleep(0.1)
        refused = []
        with Sampler(port) as s:
            time.sleep(0.2)
            rc, out, err = c.upgrade()
            self.assertEqual(rc, 0, err)
            crashed = self.upgraded(c, c.first.pid)
            line = c.first.wait_line(r"Rollback: successor pid %d was killed by signal 6" % crashed,
                                     timeout=bound(5.0, 15.0))
            back = self.upgraded(c, crashed)
            c.first.wait_line(r"Rollback: pid %d is ready" % back)
            time.sleep(0.3)
        # The rollback runs the binary the old process ran (a), not the one
        # now at the path (b).
        self.assertEqual(self.build_of(port), "a")
        self.assertEqual(gracetest.get(port, "/pid").body.decode().strip(), str(back))
        self.assertEqual(slow.read_response(timeout=5.0).status, 200)
        self.assertEqual(c.reap(c.first.pid, bound(5.0, 15.0)), 0)
        # Nothing was refused: between the crash and the rollback the
        # connections waited in the queue the old process kept open.  Only
        # what the crashed process itself held may have failed.
        self.assertEqual(s.refused, 0, s.errors)
        self.assertLessEqual(len(s.errors), 3, s.errors)
        self.assertTrue(alive(back))
        self.assertEqual(zombie_children(), [])

    def test_plain_stop_refuses_new_connections_at_once(self):
        # The upgrader's copies of the listeners close with the servers':
        # after a plain SIGTERM nothing keeps the port open, also in a
        # successor (whose sockets were inherited).
        c, port = self.serve(BUILD_A)
        c.install(BUILD_B)
        self.assertEqual(c.upgrade()[0], 0)
        new = self.upgraded(c, c.first.pid)
        self.assertEqual(c.reap(c.first.pid, bound(5.0, 15.0)), 0)
        slow = self.conn(port)
        slow.send(gracetest.request("/sleep?duration=1s"))
        time.sleep(0.1)
        os.kill(new, signal.SIGTERM)
        deadline = now() + bound(0.5, 2.0)
        while gracetest.connect_error(port) != errno.ECONNREFUSED:
            self.assertLess(now(), deadline, "the port still accepts after SIGTERM")
            time.sleep(0.005)
        self.assertTrue(alive(new))  # still draining its request
        self.assertEqual(slow.read_response(timeout=5.0).status, 200)
        self.assertEqual(c.reap(new, bound(5.0, 15.0)), 0)

    # -- valgrind ----------------------------------------------------------------

    def test_both_generations_under_valgrind_are_clean(self):
        if gracetest.SANITIZE or gracetest.TSAN:
            self.skipTest("valgrind does not mix with sanitizers: run it on a plain build")
        self.assertIsNotNone(shutil.which("valgrind"), "valgrind is not installed")
        # A script runs the real binary under valgrind (which gives the
        # program the binary's path as argv[0]); -exe makes the upgrade
        # start the script, so the successor is checked too.
        port = gracetest.free_port()
        d = tempfile.mkdtemp(prefix="grace-upgrade-vg-")
        self.addCleanup(shutil.rmtree, d, True)
        script = os.path.join(d, "app")
        with open(script, "w") as f:
            f.write("#!/bin/sh\nexec valgrind -q --leak-check=full "
                    "--errors-for-leak-kinds=definite,indirect --error-exitcode=99 "
                    "%s \"$@\"\n" % gracetest.bin_path(BUILD_A))
        os.chmod(script, 0o755)
        pidfile, control = os.path.join(d, "app.pid"), os.path.join(d, "control.sock")
        first = self.start(script, "-addr", "%s:%d" % (HOST, port), "-loops", "1",
                           "-pidfile", pidfile, "-upgrade-socket", control,
                           "-upgrade-timeout", "60s", "-exe", script)
        first.wait_port(port, timeout=60.0)
        self.assertEqual(self.build_of(port), "a")
        r = subprocess.run([gracetest.bin_path("grace-upgrade"), "-socket", control],
                           capture_output=True, text=True, timeout=90)
        self.assertEqual(r.returncode, 0, r.stderr)
        new = int(re.search(r"pid (\d+) serves", r.stdout).group(1))
        self.addCleanup(lambda: alive(new) and os.kill(new, signal.SIGKILL))
        # The successor runs under valgrind too (its executable is memcheck's).
        self.assertIn("memcheck", os.readlink("/proc/%d/exe" % new))
        self.assertEqual(first.wait_exit(60.0), 0, first.describe())
        self.assertEqual(self.build_of(port), "a")
        os.kill(new, signal.SIGTERM)
        deadline = now() + 60.0
        while True:
            try:
                got, st = os.waitpid(new, os.WNOHANG)
            except ChildProcessError:
                got, st = 0, 0
            if got == new:
                break
            self.assertLess(now(), deadline, "the successor did not exit")
            time.sleep(0.05)
        self.assertEqual(os.waitstatus_to_exitcode(st), 0, first.describe())

    # -- the example programs ------------------------------------------------------

    def test_http_sleep_server_upgrade_and_plain_stop(self):
        port = gracetest.free_port()
        c = Chain(self, "http-sleep-server", "-addr", "%s:%d" % (HOST, port), "-loops", "1")
        c.first.wait_port(port)
        c.wait_pidfile()
        with gracetest.BackgroundClient(port, check=lambda r: r.status == 200):
            c.first.send_signal(signal.SIGUSR2)
            new = self.upgraded(c, c.first.pid)
            c.first.wait_line(r"Handed over: Shutdown Server")
            self.assertEqual(c.first.wait_exit(bound(5.0, 15.0)), 0)
            c.first.wait_line(r"graceful shutdown completed")
        slow = self.conn(port)
        slow.send(gracetest.request("/sleep?duration=1s"))
        time.sleep(0.1)
        os.kill(new, signal.SIGTERM)
        deadline = now() + bound(0.5, 2.0)
        while gracetest.connect_error(port) != errno.ECONNREFUSED:
            self.assertLess(now(), deadline, "the port still accepts after SIGTERM")
            time.sleep(0.005)
        self.assertEqual(slow.read_response(timeout=5.0).status, 200)
        self.assertEqual(c.reap(new, bound(10.0, 30.0)), 0)
        self.assertFalse(os.path.exists(c.pidfile))

    @unittest.skipIf(grpc is None, "python3-grpcio is not importable by /usr/bin/python3")
    def test_grpc_calls_across_upgrades(self):
        port, gport = gracetest.free_port(), gracetest.free_port()
        c = Chain(self, "grace-demo-server", "-addr", "%s:%d" % (HOST, port),
                  "-grpc-addr", "%s:%d" % (HOST, gport), "-loops", "1")
        c.first.wait_port(gport)
        c.wait_pidfile()
        payload = os.path.join(c.dir, "hello.bin")
        with open(payload, "wb") as f:  # the 5-byte prefix, HelloRequest{name: "world"}
            f.write(b"\x00\x00\x00\x00\x07\x0a\x05world")
        stop = threading.Event()
        calls = {"ok": 0, "failed": []}
        h2 = {"runs": 0, "ok": 0, "failed": []}

        def grpc_client():
            ch = grpc.insecure_channel("%s:%d" % (HOST, gport))
            call = ch.unary_unary("/Greeter/SayHello")
            while not stop.is_set():
                try:
                    if call(b"\x0a\x05world", timeout=5) != b"\x0a\x0bHello world":
                        calls["failed"].append("bad reply")
                    calls["ok"] += 1
                except grpc.RpcError as e:
                    calls["failed"].append("%s %s" % (e.code(), e.details()))
            ch.close()

        def h2load_client():
            # One call per connection, sent with the connection's first
            # bytes: h2load never opens a new connection after a GOAWAY, so
            # a long-lived h2load connection would count the calls it had
            # not submitted yet as failed whatever the server does.
            while not stop.is_set():
                r = subprocess.run(["h2load", "-n", "8", "-c", "8", "-m", "1",
                                    "-H", "content-type: application/grpc", "-H", "te: trailers",
                                    "-d", payload, "http://%s:%d/Greeter/SayHello" % (HOST, gport)],
                                   capture_output=True, text=True, timeout=30)
                m = re.search(r"requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded, "
                              r"(\d+) failed", r.stdout)
                st = re.search(r"status codes: (\d+) 2xx", r.stdout)
                h2["runs"] += 1
                if not m or m.group(1) != "8" or not st or st.group(1) != "8":
                    h2["failed"].append(r.stdout[-400:])
                else:
                    h2["ok"] += 8

        threads = [threading.Thread(target=grpc_client, daemon=True),
                   threading.Thread(target=h2load_client, daemon=True)]
        for t in threads:
            t.start()
        time.sleep(0.5)
        for i in range(6):
            old = c.pid()
            rc, out, err = c.upgrade()
            self.assertEqual(rc, 0, err)
            self.upgraded(c, old)
            self.assertEqual(c.reap(old, bound(5.0, 15.0)), 0)
            time.sleep(0.3)
        stop.set()
        for t in threads:
            t.join(30)
        sys.stderr.write("    measured: 6 upgrades: grpcio %d calls ok, h2load %d calls ok\n"
                         % (calls["ok"], h2["ok"]))
        self.assertEqual(calls["failed"], [])
        self.assertEqual(h2["failed"], [])
        self.assertGreater(calls["ok"], 50)
        self.assertGreater(h2["ok"], 40)

    def test_systemd_mainpid_and_fd_store(self):
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        path = os.path.join(tempfile.mkdtemp(prefix="grace-notify-"), "notify")
        self.addCleanup(shutil.rmtree, os.path.dirname(path), True)
        notify.bind(path)
        self.addCleanup(notify.close)
        port, gport = gracetest.free_port(), gracetest.free_port()
        c = Chain(self, "grace-demo-server", "-addr", "%s:%d" % (HOST, port),
                  "-grpc-addr", "%s:%d" % (HOST, gport), "-loops", "1", "-fdstore",
                  env={"NOTIFY_SOCKET": path})
        c.first.wait_port(port)
        stored = {}
        texts = []

        def receive(until):
            notify.settimeout(0.1)
            while now() < until:
                try:
                    msg, anc, _, _ = notify.recvmsg(4096, socket.CMSG_SPACE(64 * 4))
                except socket.timeout:
                    continue
                text = msg.decode()
                texts.append(text)
                fds = []
                for level, kind, data in anc:
                    if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                        fds += list(struct.unpack("%di" % (len(data) // 4), data))
                m = re.search(r"FDNAME=(\S+)", text)
                if "FDSTORE=1" in text and m and len(fds) == 1:
                    stored[m.group(1)] = fds[0]
                else:
                    for fd in fds:
                        os.close(fd)

        receive(now() + 1.0)
        self.addCleanup(lambda: [os.close(fd) for fd in stored.values()])
        self.assertEqual(sorted(stored), ["grpc", "http"], texts)
        self.assertIn("READY=1\nSTATUS=Serving", texts)
        rc, out, err = c.upgrade()
        self.assertEqual(rc, 0, err)
        new = self.upgraded(c, c.first.pid)
        self.assertEqual(c.first.wait_exit(bound(10.0, 30.0)), 0)
        receive(now() + 0.5)
        self.assertIn("MAINPID=%d\nSTATUS=Handed over to pid %d" % (new, new), texts)
        # The old process said nothing about stopping: systemd follows the
        # new main process, the service does not stop.
        self.assertFalse(any("STOPPING=1" in t for t in texts), texts)
        # `systemctl restart`: the service stops, systemd keeps the stored
        # sockets, and a new process gets them.  Connections made while no
        # process runs wait in the queue: nothing is refused.
        os.kill(new, signal.SIGTERM)
        self.assertEqual(c.reap(new, bound(10.0, 30.0)), 0)
        waiting = socket.create_connection((HOST, port), timeout=5.0)  # queued
        self.addCleanup(waiting.close)
        waiting.sendall(gracetest.request("/", headers=(("Connection", "close"),)))
        activator = ("import os, sys\n"
                     "fds = [int(x) for x in sys.argv[1:3]]\n"
                     "for i, fd in enumerate(fds):\n"
                     "    os.dup2(fd, 3 + i)\n"
                     "os.environ.update(LISTEN_FDS='2', LISTEN_PID=str(os.getpid()),"
                     " LISTEN_FDNAMES='http:grpc')\n"
                     "os.execv(sys.argv[3], sys.argv[3:])\n")
        p = self.start(sys.executable, "-c", activator, stored["http"], stored["grpc"],
                       gracetest.bin_path("grace-demo-server"), "-loops", "1",
                       pass_fds=(stored["http"], stored["grpc"]))
        p.wait_line(r"Serving HTTP on 1 socket from systemd \(LISTEN_FDS\)")
        data = b""
        waiting.settimeout(5.0)
        while True:
            chunk = waiting.recv(4096)
            if not chunk:
                break
            data += chunk
        self.assertTrue(data.startswith(b"HTTP/1.1 200 "), data[:200])
        p.send_signal(signal.SIGTERM)
        self.assertEqual(p.wait_exit(bound(10.0, 30.0)), 0)


if __name__ == "__main__":
    gracetest.main()
