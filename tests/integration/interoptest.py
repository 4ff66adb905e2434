"""The gRPC interop cases against grpc-interop-server from a client of
another stack (tests/interop/<stack>/), one test method per case, shared by
test_grpc_interop_go.py and test_grpc_interop_js.py.

The client is a program that runs one case: `<argv> -port N -case NAME
-timeout-ms T`, printing "PASS NAME" and exiting 0, or "FAIL NAME: why"
and exiting non-zero.  Each case gets a fresh server on 127.0.0.1, its own
client process bounded in time, and ends with the server draining on
SIGTERM and exiting 0.
"""

import os
import signal
import subprocess
import sys

import gracetest
from gracetest import bound, free_port

SKIP = 77

# The cases of doc/interop-test-descriptions.md (grpc/grpc) that
# test_grpc_interop.py runs with python3-grpcio, then the two 100,000-message
# streams.
CASES = (
    "empty_unary", "large_unary", "client_streaming", "server_streaming",
    "ping_pong", "empty_stream", "cancel_after_begin",
    "cancel_after_first_response", "timeout_on_sleeping_server",
    "status_code_and_message", "special_status_message",
    "unimplemented_method", "unimplemented_service", "custom_metadata",
)
LONG_CASES = ("server_stream_100000", "client_stream_100000")

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
PROTO_DIR = os.path.join(REPO, "proto")
PROTOS = ("grpc/testing/empty.proto", "grpc/testing/messages.proto",
          "grpc/testing/test.proto")


def build_dir():
    """The CMake build directory (the parent of GRACE_BIN_DIR)."""
    return os.path.dirname(os.path.abspath(gracetest.bin_dir()))


def newer_than(target, sources):
    """Whether target exists and is newer than every source."""
    try:
        t = os.stat(target).st_mtime
    except OSError:
        return False
    return all(os.stat(s).st_mtime < t for s in sources)


def skip(message):
    print("SKIP: " + message)
    sys.stdout.flush()
    sys.exit(SKIP)


def missing_debs(packages):
    """The Debian packages of the list that dpkg does not call installed."""
    missing = []
    for p in packages:
        r = subprocess.run(["dpkg-query", "-W", "-f=${Status}", p],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        if b"ok installed" not in r.stdout:
            missing.append(p)
    return missing


class InteropCases(gracetest.ProgramTestCase):
    """Subclasses set `stack` (a name for messages) and a classmethod
    `client_argv()` returning the client's argv prefix, computed once in
    setUpClass (where the client is built)."""

    stack = None
    argv = None

    def run_case(self, case):
        port = free_port()
        server = self.start("grpc-interop-server", "-port", str(port))
        server.wait_port(port)
        long_case = case in LONG_CASES
        limit = bound(120, 240) if long_case else bound(10, 30)
        cmd = list(self.argv) + ["-port", str(port), "-case", case,
                                 "-timeout-ms", str(limit * 1000)]
        try:
            r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               timeout=limit + 30)
            out = r.stdout.decode("utf-8", "replace")
            rc = r.returncode
        except subprocess.TimeoutExpired as e:
            out = (e.stdout or b"").decode("utf-8", "replace")
            rc = "timed out after %ds" % (limit + 30)
        sys.stderr.write("    %s %s: %s\n" % (self.stack, case,
                                               (out.strip().splitlines() or ["?"])[-1]))
        alive = server.running()
        if alive:
            server.send_signal(signal.SIGTERM)
            src = server.wait_exit(bound(10, 30))
        self.assertTrue(rc == 0 and ("PASS %s" % case) in out.splitlines(),
                        "%s client, case %s: exit %s\n%s" % (self.stack, case, rc, out))
        self.assertTrue(alive, "grpc-interop-server died during %s" % case)
        self.assertEqual(src, 0, "grpc-interop-server did not drain cleanly after %s"
                         % case)

    @classmethod
    def add_cases(cls):
        """A test method per case: test_<case>."""
        for case in CASES + LONG_CASES:
            def t(self, case=case):
                self.run_case(case)
            t.__name__ = "test_" + case
            t.__doc__ = "%s interop case %s" % (cls.stack, case)
            setattr(cls, t.__name__, t)
