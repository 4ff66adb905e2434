"""The guides' programs (docs/examples/<part>.c) run as the guides say.

    test_doc_examples.py PART     PART: http, grpc, tcp, worker, group,
                                  upgrade, tls, embed (one ctest each:
                                  docs.example.PART)

Each test starts the program the guide includes, makes one real request of
it (or watches it work, for the worker), sends SIGTERM and expects exit
status 0 with the shutdown the guide describes.  $GRACE_DOC_BIN_DIR holds
the programs (<build>/docs/examples); $GRACE_BIN_DIR the tree's examples
(greeter-client, the gRPC test's client).  Standard library only, and for
TLS the openssl and curl commands.
"""

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
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


class Tls(DocExample):
    part = "tls"

    def setUp(self):
        super().setUp()
        for tool in ("openssl", "curl"):
            self.assertIsNotNone(shutil.which(tool), "the test needs " + tool)
        self.dir = tempfile.mkdtemp(prefix="grace-doc-tls-")
        self.addCleanup(shutil.rmtree, self.dir, True)
        # What the program reads at its start and rereads at SIGHUP.
        self.cert = os.path.join(self.dir, "server.crt")
        self.key = os.path.join(self.dir, "server.key")

    def make_cert(self, name, serial):
        """A self-signed certificate for 127.0.0.1 with |serial|; returns
        (cert path, key path)."""
        cert = os.path.join(self.dir, name + ".crt")
        key = os.path.join(self.dir, name + ".key")
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
             "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", key,
             "-out", cert, "-days", "2", "-subj", "/CN=localhost",
             "-set_serial", str(serial),
             "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return cert, key

    def install(self, cert_data, key_data):
        """Replaces the files the program reads (each renamed into place)."""
        for data, dst in ((cert_data, self.cert), (key_data, self.key)):
            with open(dst + ".tmp", "wb") as f:
                f.write(data)
            os.replace(dst + ".tmp", dst)

    def curl(self, port, ca, flag):
        """(body, HTTP version) of GET /hello with curl."""
        c = subprocess.run(
            ["curl", "-sS", "--max-time", "10", "--cacert", ca, flag,
             "-w", "\n%{http_version}", "https://%s:%d/hello" % (HOST, port)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.assertEqual(c.returncode, 0, c.stderr.decode())
        body, version = c.stdout.decode().rsplit("\n", 1)
        return body, version

    def serial(self, port):
        """The serial of the certificate a new handshake gets."""
        hs = subprocess.run(
            ["openssl", "s_client", "-connect", "%s:%d" % (HOST, port)],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL, timeout=10)
        x = subprocess.run(["openssl", "x509", "-noout", "-serial"],
                           input=hs.stdout, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=10)
        self.assertEqual(x.returncode, 0, x.stderr.decode())
        return x.stdout.decode().strip()

    def test_https_both_versions_reload_then_sigterm(self):
        a_cert, a_key = self.make_cert("a", 1)
        b_cert, b_key = self.make_cert("b", 2)
        with open(a_cert, "rb") as f:
            a = f.read()
        with open(a_key, "rb") as f:
            self.install(a, f.read())
        prog, port = self.start_part("%s:0" % HOST, self.cert, self.key)
        # One port, both versions: ALPN chooses.
        self.assertEqual(self.curl(port, a_cert, "--http1.1"), ("hello\n", "1.1"))
        self.assertEqual(self.curl(port, a_cert, "--http2"), ("hello\n", "2"))
        self.assertEqual(self.serial(port), "serial=01")
        # A bad pair (certificate b, key a) is refused: a stays.
        with open(b_cert, "rb") as f:
            b = f.read()
        with open(a_key, "rb") as f:
            self.install(b, f.read())
        prog.send_signal(signal.SIGHUP)
        prog.wait_line(r"SIGHUP: reload refused", timeout=EXIT)
        self.assertEqual(self.serial(port), "serial=01")
        # The good pair b: new handshakes get it.
        with open(b_key, "rb") as f:
            self.install(b, f.read())
        prog.send_signal(signal.SIGHUP)
        prog.wait_line(r"SIGHUP: TLS certificate reloaded$", timeout=EXIT)
        self.assertEqual(self.serial(port), "serial=02")
        self.assertEqual(self.curl(port, b_cert, "--http2"), ("hello\n", "2"))
        self.stop(prog, "Shutdown Server", "HTTPS server graceful shutdown completed")
        self.assertIsNotNone(gracetest.connect_error(port))


class Embed(DocExample):
    part = "embed"

    def test_request_then_sigterm(self):
        prog, port = self.start_part("%s:0" % HOST)
        c = subprocess.run(["curl", "-sS", "--max-time", "10",
                            "http://%s:%d/hello" % (HOST, port)],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.assertEqual((c.returncode, c.stdout), (0, b"hello\n"),
                         c.stderr.decode())
        self.stop(prog, "Shutdown Server",
                  "blocking shutdown on the loop thread: GRACE_EDEADLK",
                  "graceful shutdown completed")
        self.assertIsNotNone(gracetest.connect_error(port))


PARTS = {c.part: c for c in (Http, Tcp, Worker, Group, Grpc, Upgrade, Tls,
                             Embed)}

if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1] not in PARTS:
        sys.stderr.write("usage: test_doc_examples.py {%s}\n"
                         % ",".join(sorted(PARTS)))
        sys.exit(2)
    import unittest
    suite = unittest.defaultTestLoader.loadTestsFromTestCase(PARTS[sys.argv[1]])
    result = unittest.TextTestRunner(verbosity=2).run(suite)
    sys.exit(0 if result.wasSuccessful() else 1)
