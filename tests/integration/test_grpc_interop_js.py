"""grpc-interop-server against grpc-js: the interop cases of
test_grpc_interop.py (doc/interop-test-descriptions.md of grpc/grpc), and
the two 100,000-message streams, from tests/interop/js/client.js on
@grpc/grpc-js with the messages loaded from proto/grpc/testing/ by
@grpc/proto-loader, under Debian's node; one client process per case (see
interoptest.py).

The npm packages are the ones tests/interop/js/package-lock.json pins,
installed by tests/interop/js/install.sh (`npm ci --prefix
<build>/interop-js`), which `make test` runs for each build directory; the
test runs it too when they are missing (it does nothing when they are
there).  Exit status 77 (CTest's SKIP_RETURN_CODE) only when npm cannot
reach its registry, or node/npm are not installed, saying which.
"""

import os
import subprocess
import sys

import gracetest
import interoptest
from interoptest import REPO

JS = os.path.join(REPO, "tests", "interop", "js")
CLIENT = os.path.join(JS, "client.js")


def install():
    """<build>/interop-js/node_modules, installed by install.sh when needed;
    exits 77 when npm cannot reach its registry."""
    out = os.path.join(interoptest.build_dir(), "interop-js")
    try:
        r = subprocess.run([os.path.join(JS, "install.sh"), out], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=900)
    except subprocess.TimeoutExpired:
        interoptest.skip("npm ci did not finish in 900 s: npm cannot reach its registry")
    log = r.stdout.decode("utf-8", "replace")
    if r.returncode == interoptest.SKIP:
        interoptest.skip("the grpc-js client's npm packages cannot be installed: "
                         + log.strip())
    if r.returncode != 0:
        sys.stderr.write(log)
        raise SystemExit("tests/interop/js/install.sh %s failed (exit %d)"
                         % (out, r.returncode))
    return os.path.join(out, "node_modules")


class GrpcInteropJs(interoptest.InteropCases):
    stack = "grpc-js"
    node_modules = None

    @classmethod
    def setUpClass(cls):
        cls.argv = ("env", "NODE_PATH=" + cls.node_modules, "node", CLIENT)


GrpcInteropJs.add_cases()


if __name__ == "__main__":
    GrpcInteropJs.node_modules = install()
    gracetest.main()
