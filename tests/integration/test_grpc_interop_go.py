"""grpc-interop-server against grpc-go: the interop cases of
test_grpc_interop.py (doc/interop-test-descriptions.md of grpc/grpc), and
the two 100,000-message streams, from tests/interop/go/main.go on Debian's
grpc-go (golang-google-grpc-dev 1.33), one client process per case (see
interoptest.py).

Debian ships no grpc-go interop client, so the test builds ours once into
<build>/interop-go/: protoc with Debian's protoc-gen-go and
protoc-gen-go-grpc generates package graceinterop/pb from
proto/grpc/testing/{empty,messages,test}.proto, and `go build` runs offline
in GOPATH mode (GO111MODULE=off, GOPATH=<scratch>:/usr/share/gocode), as
bench/grpc/go-greeter/build.sh does.  It rebuilds when main.go, a proto or
this file is newer than the binary.

Exit status 77 (CTest's SKIP_RETURN_CODE) only when a Debian package it
needs is missing; it names them (the Makefile's DEBS installs them).
"""

import os
import shutil
import subprocess

import gracetest
import interoptest
from interoptest import PROTO_DIR, PROTOS, REPO

DEBS = ("golang-go", "golang-google-grpc-dev", "golang-github-golang-protobuf-1-5-dev",
        "protobuf-compiler", "protoc-gen-go", "protoc-gen-go-grpc")
MAIN = os.path.join(REPO, "tests", "interop", "go", "main.go")
PKG = "graceinterop"


def client_binary():
    """The client in the build directory, built when missing or stale."""
    out = os.path.join(interoptest.build_dir(), "interop-go")
    binary = os.path.join(out, "interop-client-go")
    sources = [MAIN, os.path.abspath(__file__)] + [os.path.join(PROTO_DIR, p) for p in PROTOS]
    if os.access(binary, os.X_OK) and interoptest.newer_than(binary, sources):
        return binary
    gopath = os.path.join(out, "gopath")
    shutil.rmtree(gopath, ignore_errors=True)
    src = os.path.join(gopath, "src", PKG)
    os.makedirs(os.path.join(src, "client"))
    # protoc-gen-go needs each file's Go import path: all in graceinterop/pb.
    m = ",".join("M%s=%s/pb" % (p, PKG) for p in PROTOS)
    log = []

    def run(argv, **kw):
        r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           timeout=900, **kw)
        log.append("$ %s\n%s" % (" ".join(argv), r.stdout.decode("utf-8", "replace")))
        if r.returncode != 0:
            raise AssertionError("building the grpc-go interop client failed:\n"
                                 + "\n".join(log))

    run(["protoc", "-I", PROTO_DIR,
         "--go_out=" + os.path.join(gopath, "src"), "--go_opt=" + m,
         "--go-grpc_out=" + os.path.join(gopath, "src"), "--go-grpc_opt=" + m]
        + list(PROTOS))
    shutil.copy(MAIN, os.path.join(src, "client", "main.go"))
    env = dict(os.environ, GO111MODULE="off", GOFLAGS="", GOPROXY="off",
               GOTOOLCHAIN="local", GOCACHE=os.path.join(out, "gocache"),
               GOPATH=gopath + ":/usr/share/gocode")
    run(["go", "build", "-o", binary + ".tmp", "."], cwd=os.path.join(src, "client"),
        env=env)
    os.replace(binary + ".tmp", binary)
    return binary


class GrpcInteropGo(interoptest.InteropCases):
    stack = "grpc-go"

    @classmethod
    def setUpClass(cls):
        cls.argv = (client_binary(),)


GrpcInteropGo.add_cases()


if __name__ == "__main__":
    missing = interoptest.missing_debs(DEBS)
    if missing:
        interoptest.skip("the grpc-go interop client needs Debian packages that are "
                         "not installed: %s (make deps installs them)" % " ".join(missing))
    gracetest.main()
