"""The guides' programs (docs/examples/<part>.c) run as the guides say.

    test_doc_examples.py PART     PART: http, grpc, tcp, worker, group,
                                  upgrade (one ctest each: docs.example.PART)

Each test starts the program the guide includes, makes one real request of
it (or watches it work, for the worker), sends SIGTERM and expects exit
status 0 with the shutdown the guide describes.  $GRACE_DOC_BIN_DIR holds
the programs (<build>/docs/examples); $GRACE_BIN_DIR the tree's examples
(greeter-client, the gRPC test's client).  Standard library only.
"""

import os
import re
import signal
import socket
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))), "integration"))
import gracetest  # noqa: E402

HOST = gracetest.HOST
EXIT = gracetest.bound(10.0, 30.0)


def doc_bin(part):
    d = os.environ.get("GRACE_DOC_BIN_DIR")
    if not d:
        raise AssertionError("GRACE_DOC_BIN_DIR is not set")
    return os.path.join(d, part)


class DocExample(gracetest.ProgramTestCase):
    part = None

    def start_part(self, *args):
        prog = self.start(doc_bin(self.part), *args)
        line = prog.wait_line(r"listening on port (\d+)",
                              timeout=gracetest.bound(10.0, 30.0))
        return prog, int(re.search(r"port (\d+)", line.text).group(1))

    def stop(self, prog, *expected):
        """SIGTERM, exit status 0, and each of |expected| logged in order."""
        prog.send_signal(signal.SIGTERM)
        self.assertEqual(prog.wait_exit(EXIT), 0, prog.describe())
        msgs = prog.messages()
        at = 0
        for want in expected:
            found = [i for i, m in enumerate(msgs[at:], at) if re.search(want, m)]
            self.assertTrue(found, "no %r after %r\n%s" % (want, msgs[:at],
                                                            prog.describe()))
            at = found[0] + 1


class Http(DocExample):
    part = "http"

    def test_request_then_sigterm(self):
        prog, port = self.start_part("%s:0" % HOST)
        r = gracetest.get(port, "/hello?name=docs")
        self.assertEqual((r.status, r.body), (200, b"hello, docs\n"))
        self.stop(prog, "Shutdown Server", "graceful shutdown completed")
        self.assertIsNotNone(gracetest.connect_error(port))


class Tcp(DocExample):
    part = "tcp"

    def test_commands_then_sigterm_waits_for_busy(self):
        prog, port = self.start_part("%s:0" % HOST)
        s = socket.create_connection((HOST, port), timeout=EXIT)
        s.sendall(b"PING\nSLOW\n")
        got = b""
        while b"+PONG\r\n" not in got:
            got += s.recv(100)
        # SLOW is in progress (busy): the drain waits for its answer, then
        # closes the connection.
        prog.send_signal(signal.SIGTERM)
        while True:
            data = s.recv(100)
            if not data:
                break
            got += data
        s.close()
        self.assertEqual(got, b"+PONG\r\n+DONE\r\n")
        self.assertEqual(prog.wait_exit(EXIT), 0, prog.describe())
        self.assertIn("TCP server graceful shutdown completed", prog.messages())


class Worker(DocExample):
    part = "worker"

    def test_ticks_then_cleanup(self):
        prog = self.start(doc_bin("worker"))
        prog.wait_line(r"tick 2$", timeout=gracetest.bound(5.0, 15.0))
        self.stop(prog, r"^tick 1$", r"^tick 2$", r"^flushed after \d+ ticks$")


class Group(DocExample):
    part = "group"

    def test_phases(self):
        prog, port = self.start_part("%s:0" % HOST)
        self.assertEqual(gracetest.get(port, "/hello").body, b"hello\n")
        self.assertEqual(gracetest.get(port, "/readyz").status, 200)
        prog.send_signal(signal.SIGTERM)
        # Phase 2, the 1 s delay: not ready, still serving.
        deadline = time.monotonic() + 1.0
        while gracetest.get(port, "/readyz").status != 503:
            self.assertLess(time.monotonic(), deadline, prog.describe())
            time.sleep(0.01)
        self.assertEqual(gracetest.get(port, "/hello").body, b"hello\n")
        self.assertEqual(prog.wait_exit(EXIT), 0, prog.describe())
        msgs = prog.messages()
        self.assertIn("draining", msgs)
        self.assertTrue(any(m.startswith("Drain report: result=clean")
                            for m in msgs), prog.describe())


class Grpc(DocExample):
    part = "grpc"

    def test_say_hello_then_sigterm(self):
        prog, port = self.start_part("%s:0" % HOST)
        client = gracetest.run_program(
            "greeter-client", ["-addr", "%s:%d" % (HOST, port), "-name",
                               "docs", "-duration", "0s"],
            timeout=gracetest.bound(10.0, 30.0))
        self.assertEqual(client.returncode, 0, client.describe())
        self.assertIn("Greeting: Hello docs", client.messages())
        self.stop(prog, "Shutdown Server", "graceful shutdown completed")


class Upgrade(DocExample):
    part = "upgrade"

    def pid_of(self, port):
        return int(gracetest.get(port, "/pid").body)

    def test_sigusr2_hands_over_then_sigterm(self):
        gracetest.become_subreaper()  # the successor outlives its parent
        prog, port = self.start_part("%s:0" % HOST)
        self.assertEqual(self.pid_of(port), prog.pid)
        prog.send_signal(signal.SIGUSR2)
        # The old process exits 0 once the successor serves and it drained.
        self.assertEqual(prog.wait_exit(EXIT), 0, prog.describe())
        successor = self.pid_of(port)  # the port never stopped accepting
        self.assertNotEqual(successor, prog.pid)
        self.assertTrue(any(re.match(r"handed over to %d$" % successor, m)
                            for m in prog.messages()), prog.describe())
        os.kill(successor, signal.SIGTERM)
        deadline = time.monotonic() + EXIT
        while True:
            pid, status = os.waitpid(successor, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                os.kill(successor, signal.SIGKILL)
                os.waitpid(successor, 0)
                self.fail("successor %d did not exit\n%s"
                          % (successor, prog.describe()))
            time.sleep(0.01)
        self.assertTrue(os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0,
                        "successor status %#x\n%s" % (status, prog.describe()))
        self.assertIsNotNone(gracetest.connect_error(port))


PARTS = {c.part: c for c in (Http, Tcp, Worker, Group, Grpc, Upgrade)}

if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1] not in PARTS:
        sys.stderr.write("usage: test_doc_examples.py {%s}\n"
                         % ",".join(sorted(PARTS)))
        sys.exit(2)
    import unittest
    suite = unittest.defaultTestLoader.loadTestsFromTestCase(PARTS[sys.argv[1]])
    result = unittest.TextTestRunner(verbosity=2).run(suite)
    sys.exit(0 if result.wasSuccessful() else 1)
