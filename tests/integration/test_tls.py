"""TLS on grace's servers (grace/tls.h), with real clients: curl over HTTPS
(HTTP/1.1 and HTTP/2, ALPN), `openssl s_client` (TLS 1.2 and 1.3), Debian's
python3-grpcio over TLS, and Python's ssl module where the exact ending of a
connection matters.  Certificates are made here with the openssl CLI, in a
temporary directory: self-signed, for localhost, each with its own serial.

Covers: both HTTP versions on one port, chosen by ALPN; a graceful shutdown
with TLS requests in flight (all complete) and with an idle keep-alive TLS
connection (it gets close_notify, not a reset or a bare FIN); a certificate
reload under load (no failed request, new handshakes see the new
certificate, an established connection keeps working), a bad certificate
refused with the old one kept; plaintext HTTP on the TLS port, a truncated
ClientHello and a handshake that never finishes (cut at the handshake
timeout); a shutdown during a handshake (closed at once).
"""

import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import unittest

import gracetest
from gracetest import HOST, bound, free_port

from grpctest import IDENT, GrpcTestCase, grpc, needs_grpc

OPENSSL = shutil.which("openssl")
CURL = shutil.which("curl")

needs_tools = unittest.skipUnless(OPENSSL and CURL, "needs the openssl and curl commands")


def make_cert(d, name, serial):
    """A self-signed P-256 certificate for localhost and 127.0.0.1 with
    |serial| (an int); returns (cert path, key path)."""
    cert = os.path.join(d, name + ".crt")
    key = os.path.join(d, name + ".key")
    subprocess.run(
        [OPENSSL, "req", "-x509", "-newkey", "ec", "-pkeyopt",
         "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", key, "-out", cert,
         "-days", "2", "-subj", "/CN=localhost", "-set_serial", str(serial),
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return cert, key


def install(src_cert, src_key, cert, key):
    """Replaces |cert| and |key| with copies of the sources (each renamed
    into place, so a reader never sees half a file)."""
    for src, dst in ((src_cert, cert), (src_key, key)):
        shutil.copyfile(src, dst + ".tmp")
        os.replace(dst + ".tmp", dst)


def read_response(s):
    """Reads one HTTP/1.1 response with a Content-Length from |s|; returns
    (status, body)."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(65536)
        if not chunk:
            raise AssertionError("connection closed before the head: %r" % buf)
        buf += chunk
    head, body = buf.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    length = 0
    for l in lines[1:]:
        k, v = l.split(":", 1)
        if k.strip().lower() == "content-length":
            length = int(v)
    while len(body) < length:
        chunk = s.recv(65536)
        if not chunk:
            raise AssertionError("connection closed in the body")
        body += chunk
    return status, body


def client_hello():
    """The bytes of a real ClientHello (TLS 1.2 and 1.3, ALPN h2)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(inc, out, server_hostname="localhost")
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return out.read()


@needs_tools
class TlsTest(GrpcTestCase):
    def setUp(self):
        super().setUp()
        self.dir = tempfile.mkdtemp(prefix="grace-tls-")
        self.a_cert, self.a_key = make_cert(self.dir, "a", 0xA1)
        self.b_cert, self.b_key = make_cert(self.dir, "b", 0xB2)
        # What the server reads (and rereads at SIGHUP).
        self.cert = os.path.join(self.dir, "server.crt")
        self.key = os.path.join(self.dir, "server.key")
        install(self.a_cert, self.a_key, self.cert, self.key)
        # Clients trust both.
        self.ca = os.path.join(self.dir, "ca.pem")
        with open(self.ca, "wb") as f:
            for c in (self.a_cert, self.b_cert):
                with open(c, "rb") as g:
                    f.write(g.read())

    def tearDown(self):
        super().tearDown()
        shutil.rmtree(self.dir, ignore_errors=True)

    def start_demo(self, *extra):
        port, gport = free_port(), free_port()
        p = self.start("grace-demo-server", "-addr", "%s:%d" % (HOST, port),
                       "-grpc-addr", "%s:%d" % (HOST, gport), "-loops", "2",
                       "-tls-cert", self.cert, "-tls-key", self.key, *extra)
        p.wait_port(port)
        p.wait_port(gport)
        return p, port, gport

    def ssl_context(self, alpn=None):
        ctx = ssl.create_default_context(cafile=self.ca)
        # Debian's Python takes an EOF without close_notify as a clean
        # close; the tests tell them apart.
        ctx.options &= ~ssl.OP_IGNORE_UNEXPECTED_EOF
        if alpn:
            ctx.set_alpn_protocols(alpn)
        return ctx

    def tls_conn(self, port, alpn=None, timeout=5.0):
        raw = socket.create_connection((HOST, port), timeout=timeout)
        s = self.ssl_context(alpn).wrap_socket(
            raw, server_hostname="localhost", suppress_ragged_eofs=False)
        self.conns.append(s)
        return s

    def serial(self, port):
        s = self.tls_conn(port)
        try:
            return int(s.getpeercert()["serialNumber"], 16)
        finally:
            s.close()

    def curl(self, port, *args, path="/"):
        return gracetest.curl("--cacert", self.ca, "-w", "\n%{http_version}",
                              *args, "https://localhost:%d%s" % (port, path))

    def wait_inflight(self, port, n):
        """Waits until |n| requests besides the asking one are with their
        handlers (the demo's /metrics)."""
        deadline = time.monotonic() + bound(5, 20)
        while True:
            s = self.tls_conn(port, alpn=["http/1.1"])
            s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            status, body = read_response(s)
            s.close()
            m = re.search(rb'grace_http_requests_inflight\{part="http"\} (\d+)', body)
            self.assertIsNotNone(m, body)
            if int(m.group(1)) >= n + 1:
                return
            self.assertLess(time.monotonic(), deadline, "requests in flight: %s" % m.group(1))
            time.sleep(0.05)

    def test_curl_http1_and_http2_by_alpn(self):
        p, port, _ = self.start_demo()
        for flag, version in (("--http1.1", "1.1"), ("--http2", "2")):
            c = self.client(self.curl(port, flag))
            self.assertEqual(c.wait(10), 0, c.stderr)
            body, got = c.stdout.decode().rsplit("\n", 1)
            self.assertEqual(body, "Hello, World!\n")
            self.assertEqual(got, version, "ALPN should choose HTTP/%s" % version)
        # Without ALPN: HTTP/1.1, as on a plaintext port.
        s = self.tls_conn(port)
        self.assertIsNone(s.selected_alpn_protocol())
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertEqual(read_response(s), (200, b"Hello, World!\n"))

    def test_openssl_s_client_versions_and_alpn(self):
        p, port, _ = self.start_demo()
        for version, name in (("-tls1_2", "TLSv1.2"), ("-tls1_3", "TLSv1.3")):
            for alpn, chosen in (("h2,http/1.1", "h2"), ("http/1.1", "http/1.1")):
                r = subprocess.run(
                    [OPENSSL, "s_client", "-connect", "127.0.0.1:%d" % port,
                     "-servername", "localhost", "-CAfile", self.ca,
                     "-verify_return_error", version, "-alpn", alpn]
                    + (["-ign_eof"] if chosen == "http/1.1" else []),
                    input=b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                    if chosen == "http/1.1" else b"",
                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=10)
                out = r.stdout.decode("latin-1")
                self.assertIn("ALPN protocol: %s" % chosen, out)
                # Printed once the handshake is done (the session block
                # of TLS 1.3 waits for a ticket s_client may not read).
                self.assertIn("New, %s, Cipher is" % name, out)
                self.assertIn("Verify return code: 0 (ok)", out)
                if chosen == "http/1.1":
                    self.assertIn("Hello, World!", out)
        # TLS 1.1 is refused, with the alert that says why (not a reset).
        r = subprocess.run(
            [OPENSSL, "s_client", "-connect", "127.0.0.1:%d" % port, "-tls1_1"],
            input=b"", stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=10)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn(b"alert protocol version", r.stdout)

    @needs_grpc
    def test_grpc_greeter_over_tls(self):
        port = free_port()
        p = self.start("greeter-server", "-port", str(port), "-tls-cert",
                       self.cert, "-tls-key", self.key)
        p.wait_port(port)
        with open(self.ca, "rb") as f:
            creds = grpc.ssl_channel_credentials(root_certificates=f.read())
        ch = grpc.secure_channel("localhost:%d" % port, creds)
        self.channels.append(ch)
        say = ch.unary_unary("/Greeter/SayHello", request_serializer=IDENT,
                             response_deserializer=IDENT)
        reply = say(b"\x0a\x03tls", timeout=10)
        self.assertEqual(reply, b"\x0a\x09Hello tls")
        # A call in flight across SIGTERM completes.
        fut = say.future(b"\x0a\x04slow\x12\x05500ms", timeout=10)
        p.wait_line("Received: slow")
        p.send_signal(signal.SIGTERM)
        self.assertEqual(fut.result(), b"\x0a\x0aHello slow")
        self.assertEqual(p.wait_exit(10), 0)
        # The demo's gRPC port speaks TLS too.
        p2, _, gport = self.start_demo()
        ch2 = grpc.secure_channel("localhost:%d" % gport, creds)
        self.channels.append(ch2)
        say2 = ch2.unary_unary("/Greeter/SayHello", request_serializer=IDENT,
                               response_deserializer=IDENT)
        self.assertEqual(say2(b"\x0a\x03tls", timeout=10), b"\x0a\x09Hello tls")

    def test_pipelined_records(self):
        # Many requests, each its own TLS record, in one burst behind a slow
        # one: records the server reads together wait in its SSL while the
        # first request pauses the connection, and are all answered (none
        # waits for the socket to become readable again).
        p, port, _ = self.start_demo()
        s = self.tls_conn(port, alpn=["http/1.1"])
        n = 40
        s.sendall(b"GET /sleep?duration=300ms HTTP/1.1\r\nHost: x\r\n\r\n")
        for i in range(n):
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        s.settimeout(5)
        status, body = read_response(s)
        self.assertEqual(status, 200)
        for i in range(n):
            self.assertEqual(read_response(s), (200, b"Hello, World!\n"), i)

    def test_paused_connection_pauses_the_peer(self):
        # A request with its handler holds the connection: past the
        # read-ahead the server stops reading its socket, so a client
        # pipelining more stalls (kernel buffers hold a few MiB) instead of
        # streaming everything into the server.
        p, port, _ = self.start_demo()
        s = self.tls_conn(port, alpn=["http/1.1"])
        s.sendall(b"GET /sleep?duration=5s HTTP/1.1\r\nHost: x\r\n\r\n")
        s.settimeout(1.0)
        chunk = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" * 2400
        total, stalled = 0, False
        try:
            while total < 256 << 20:
                s.sendall(chunk)
                total += len(chunk)
        except socket.timeout:
            stalled = True
        self.report("pipelined bytes accepted before the stall", total >> 10, "KiB")
        self.assertTrue(stalled, "256 MiB went in while the connection was paused")
        self.assertLess(total, 64 << 20)
        s.close()
        self.assertEqual(self.serial(port), 0xA1)

    def test_greeter_client_over_tls(self):
        # Our own gRPC client (grace/grpc_client.h, channel option tls).
        port = free_port()
        p = self.start("greeter-server", "-port", str(port), "-tls-cert",
                       self.cert, "-tls-key", self.key)
        p.wait_port(port)

        def client(*args, addr="localhost:%d" % port):
            return gracetest.run_program(
                "greeter-client", ["-addr", addr, "-duration", "0s",
                                   "-timeout", "10s"] + list(args), timeout=20)

        # By name and by address; a 100 KB name makes the request and the
        # reply span many TLS records and partial writes.
        for addr in ("localhost:%d" % port, "127.0.0.1:%d" % port):
            c = client("-tls-ca", self.ca, addr=addr)
            self.assertEqual(c.returncode, 0, c.describe())
            self.assertTrue(any(l.text.endswith("Greeting: Hello world")
                                for l in c.lines()), c.describe())
        big = "x" * 100000
        c = client("-tls-ca", self.ca, "-name", big)
        self.assertEqual(c.returncode, 0, c.describe())
        # (grace_log cuts the line at 4 KiB; the call's success says the
        # 100 KB each way arrived whole: gRPC's length prefix and protobuf
        # parse the exact bytes.)
        self.assertIn("Greeting: Hello xxx", c.stderr_text(), c.describe()[:2000])
        # A certificate the CA file does not hold, a name the certificate
        # does not have, no TLS at all: each refused, none hangs.
        other = os.path.join(self.dir, "other-ca.pem")
        make_cert(self.dir, "other", 0xC3)
        shutil.copyfile(os.path.join(self.dir, "other.crt"), other)
        for args, want in ((("-tls-ca", other), "certificate verify failed"),
                           (("-tls-ca", self.ca, "-tls-server-name", "other.example"),
                            "hostname mismatch"),
                           ((), "error reading server preface")):
            c = client(*args)
            self.assertEqual(c.returncode, 1, c.describe())
            text = "\n".join(l.text for l in c.lines())
            self.assertIn("code = Unavailable", text)
            self.assertIn(want, text)
        # A call in flight across the server's graceful stop completes.
        slow = self.start("greeter-client", "-addr", "localhost:%d" % port,
                          "-tls-ca", self.ca, "-name", "slow", "-duration", "1s")
        p.wait_line("Received: slow")
        p.send_signal(signal.SIGTERM)
        self.assertEqual(slow.wait_exit(10), 0, slow.describe())
        self.assertTrue(any(l.text.endswith("Greeting: Hello slow")
                            for l in slow.lines()))
        self.assertEqual(p.wait_exit(10), 0)

    def test_greeter_client_tls_to_plaintext_server(self):
        port = free_port()
        p = self.start("greeter-server", "-port", str(port))
        p.wait_port(port)
        c = gracetest.run_program(
            "greeter-client", ["-addr", "localhost:%d" % port, "-tls-ca", self.ca,
                               "-duration", "0s", "-timeout", "10s"], timeout=20)
        self.assertEqual(c.returncode, 1, c.describe())
        self.assertIn("authentication handshake failed",
                      "\n".join(l.text for l in c.lines()))

    def test_shutdown_completes_requests_in_flight(self):
        p, port, _ = self.start_demo()
        clients = []
        for flag in ("--http1.1", "--http2") * 3:
            clients.append(self.client(self.curl(port, flag, path="/sleep?duration=1s")))
        # Every request with its handler before the signal (a connection
        # still in its handshake would be closed at once, as it should).
        self.wait_inflight(port, len(clients))
        p.send_signal(signal.SIGTERM)
        for c in clients:
            self.assertEqual(c.wait(10), 0, c.stderr)
            body, version = c.stdout.decode().rsplit("\n", 1)
            self.assertEqual(body.strip(), "Welcome HTTP Server")
            self.assertIn(version, ("1.1", "2"))
        self.assertEqual(p.wait_exit(10), 0)

    def test_graceful_shutdown_under_valgrind_is_clean(self):
        """TLS connections of every kind through a graceful shutdown under
        valgrind: no memory error, no definite or indirect leak (OpenSSL's
        SSL objects, their contexts and the reloaded certificate included)."""
        if gracetest.SANITIZE or gracetest.TSAN:
            self.skipTest("valgrind does not mix with sanitizers: run it on a plain build")
        self.assertIsNotNone(shutil.which("valgrind"), "valgrind is not installed")
        port, gport = free_port(), free_port()
        p = self.start("grace-demo-server", "-addr", "%s:%d" % (HOST, port),
                       "-grpc-addr", "%s:%d" % (HOST, gport), "-loops", "2",
                       "-tls-cert", self.cert, "-tls-key", self.key,
                       wrapper=["valgrind", "--leak-check=full",
                                "--errors-for-leak-kinds=definite,indirect",
                                "--error-exitcode=99"])
        p.wait_port(port, timeout=60.0)
        p.wait_port(gport, timeout=60.0)
        for flag in ("--http1.1", "--http2"):
            c = self.client(self.curl(port, flag))
            self.assertEqual(c.wait(60), 0, c.stderr)
        # A reload (a new context), a refused one, then connections that
        # stay: an idle keep-alive one, one in its handshake, one in flight.
        install(self.b_cert, self.b_key, self.cert, self.key)
        p.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 60
        while self.serial(port) != 0xB2:
            self.assertLess(time.monotonic(), deadline, "the reload was not taken")
            time.sleep(0.2)
        install(self.a_cert, self.b_key, self.cert, self.key)  # mismatched
        p.send_signal(signal.SIGHUP)
        idle = self.tls_conn(port, alpn=["http/1.1"], timeout=60.0)
        idle.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertEqual(read_response(idle)[0], 200)
        half = socket.create_connection((HOST, port), timeout=60.0)
        self.conns.append(half)
        half.sendall(client_hello()[:40])
        busy = self.client(self.curl(port, "--http2", path="/sleep?duration=2s"))
        self.wait_inflight(port, 1)
        p.send_signal(signal.SIGTERM)
        self.assertEqual(busy.wait(60), 0, busy.stderr)
        rc = p.wait_exit(60.0)
        self.assert_valgrind_clean(p, rc)

    def test_idle_keepalive_gets_close_notify(self):
        p, port, _ = self.start_demo()
        # TLS over memory BIOs, so that what ends the stream is seen
        # exactly: the socket's bytes until its EOF, then the SSL's verdict.
        raw = socket.create_connection((HOST, port), timeout=5)
        self.conns.append(raw)
        ctx = self.ssl_context(["http/1.1"])
        inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
        obj = ctx.wrap_bio(inc, out, server_hostname="localhost")

        def pump(step):
            while True:
                try:
                    return step()
                except ssl.SSLWantReadError:
                    raw.sendall(out.read())
                    data = raw.recv(65536)
                    if not data:
                        inc.write_eof()
                    else:
                        inc.write(data)
                finally:
                    if out.pending:
                        raw.sendall(out.read())

        pump(obj.do_handshake)
        obj.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        got = b""
        while not got.endswith(b"Hello, World!\n"):
            got += pump(lambda: obj.read(65536))
        self.assertTrue(got.startswith(b"HTTP/1.1 200 OK\r\n"), got)
        p.send_signal(signal.SIGTERM)
        # close_notify, then the socket's EOF: read returns b"".  A bare
        # EOF would raise SSLEOFError, a reset ConnectionResetError.
        self.assertEqual(pump(lambda: obj.read(65536)), b"")
        self.assertEqual(raw.recv(100), b"")
        self.assertEqual(p.wait_exit(10), 0)

    def test_reload_under_load(self):
        p, port, _ = self.start_demo()
        self.assertEqual(self.serial(port), 0xA1)
        kept = self.tls_conn(port, alpn=["http/1.1"])
        kept.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertEqual(read_response(kept), (200, b"Hello, World!\n"))
        stop = threading.Event()
        results = []

        def load():
            while not stop.is_set():
                r = subprocess.run(
                    [CURL, "-sS", "--cacert", self.ca, "--http1.1",
                     "https://localhost:%d/" % port, "https://localhost:%d/" % port],
                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=10)
                results.append((r.returncode, r.stdout, r.stderr))

        threads = [threading.Thread(target=load) for _ in range(3)]
        for t in threads:
            t.start()
        try:
            time.sleep(0.3)
            install(self.b_cert, self.b_key, self.cert, self.key)
            n = len(p.lines())
            p.send_signal(signal.SIGHUP)
            p.wait_line("TLS certificate reloaded", start=n)
            # Load goes on across and after the reload.
            after = len(results) + 6
            deadline = time.monotonic() + bound(10, 30)
            while len(results) < after and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            stop.set()
            for t in threads:
                t.join(20)
        failed = [r for r in results if r[0] != 0 or r[1] != b"Hello, World!\n" * 2]
        self.assertGreater(len(results), 6)
        self.assertEqual(failed, [])
        self.assertEqual(self.serial(port), 0xB2)
        # The connection made before the reload keeps its certificate and
        # keeps working.
        self.assertEqual(int(kept.getpeercert()["serialNumber"], 16), 0xA1)
        kept.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertEqual(read_response(kept), (200, b"Hello, World!\n"))

    def test_bad_certificate_refused_old_kept(self):
        p, port, _ = self.start_demo()
        # Garbage for a certificate, then a key that is not the
        # certificate's, then a missing file: each refused.
        with open(self.cert, "w") as f:
            f.write("not a certificate\n")
        n = len(p.lines())
        p.send_signal(signal.SIGHUP)
        p.wait_line("reload refused", start=n)
        self.assertEqual(self.serial(port), 0xA1)
        install(self.a_cert, self.b_key, self.cert, self.key)
        n = len(p.lines())
        p.send_signal(signal.SIGHUP)
        p.wait_line("reload refused", start=n)
        self.assertEqual(self.serial(port), 0xA1)
        os.unlink(self.key)
        n = len(p.lines())
        p.send_signal(signal.SIGHUP)
        p.wait_line("reload refused", start=n)
        self.assertEqual(self.serial(port), 0xA1)
        self.assertTrue(p.running())
        # A good pair again is taken.
        install(self.b_cert, self.b_key, self.cert, self.key)
        n = len(p.lines())
        p.send_signal(signal.SIGHUP)
        p.wait_line("TLS certificate reloaded", start=n)
        self.assertEqual(self.serial(port), 0xB2)

    def test_bad_certificate_at_start(self):
        with open(self.cert, "w") as f:
            f.write("not a certificate\n")
        p = gracetest.run_program(
            "grace-demo-server", ["-addr", "%s:%d" % (HOST, free_port()),
                                  "-grpc-addr", "%s:%d" % (HOST, free_port()),
                                  "-tls-cert", self.cert, "-tls-key", self.key])
        self.assertNotEqual(p.returncode, 0)
        self.assertTrue(any("bad certificate" in l.text for l in p.lines()), p.describe())

    def test_plaintext_request_on_tls_port(self):
        p, port, _ = self.start_demo()
        raw = socket.create_connection((HOST, port), timeout=5)
        self.conns.append(raw)
        raw.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        try:
            while True:
                chunk = raw.recv(4096)
                if not chunk:
                    break
                data += chunk
        except ConnectionResetError:
            pass
        self.assertNotIn(b"HTTP/1.1", data)
        # Still serving.
        self.assertEqual(self.serial(port), 0xA1)
        self.assertTrue(p.running())

    def test_truncated_client_hello_and_stalled_handshake(self):
        p, port, _ = self.start_demo("-tls-handshake-timeout", "300ms")
        hello = client_hello()
        self.assertGreater(len(hello), 40)
        # Half a ClientHello, then EOF: closed, no crash.
        raw = socket.create_connection((HOST, port), timeout=5)
        raw.sendall(hello[:len(hello) // 2])
        raw.shutdown(socket.SHUT_WR)
        self.assertEqual(raw.recv(100), b"")
        raw.close()
        # Half a ClientHello, then nothing; and nothing at all: both cut at
        # the handshake timeout, not before.
        for data in (hello[:len(hello) // 2], b""):
            raw = socket.create_connection((HOST, port), timeout=10)
            self.conns.append(raw)
            t0 = time.monotonic()
            if data:
                raw.sendall(data)
            try:
                self.assertEqual(raw.recv(100), b"")
            except ConnectionResetError:
                pass
            took = time.monotonic() - t0
            self.assertGreater(took, 0.25)
            self.assertLess(took, bound(2.0, 4.0))
        self.assertEqual(self.serial(port), 0xA1)

    def test_shutdown_closes_handshakes_at_once(self):
        p, port, _ = self.start_demo()  # handshake timeout: 10 s
        raw = socket.create_connection((HOST, port), timeout=10)
        self.conns.append(raw)
        raw.sendall(client_hello()[:20])
        time.sleep(0.2)
        t0 = time.monotonic()
        p.send_signal(signal.SIGTERM)
        try:
            self.assertEqual(raw.recv(100), b"")
        except ConnectionResetError:
            pass
        self.assertEqual(p.wait_exit(10), 0)
        self.assertLess(time.monotonic() - t0, bound(2.0, 4.0))


if __name__ == "__main__":
    gracetest.main()
