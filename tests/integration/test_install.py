"""Installing grace and building against it from outside the tree.

`cmake --install <build> --prefix <tmp>` (the build directory this test
belongs to: $GRACE_BUILD_DIR), then, from a scratch directory outside the
repository, tests/install/app.c (an HTTP server on 127.0.0.1:0 that makes one
request to itself over a raw socket, shuts down gracefully, creates a gRPC
server, prints grace_version_string() and exits 0) is built and run four ways:

  pkg-config, shared   cc app.c $(pkg-config --cflags --libs grace ...),
                       run with LD_LIBRARY_PATH=<prefix>/lib
  pkg-config, static   the same with pkg-config --static and libgrace.a
                       (-l:libgrace.a); no libgrace.so needed to run
  find_package, shared tests/install/CMakeLists.txt with
  find_package, static CMAKE_PREFIX_PATH=<prefix>: grace::grace and
                       grace::grace_static, run as built (CMake's RPATH)

The pkg-config builds also link the program's own copy of the standard
health.proto (grpc.health.v1, generated with protoc-c): its symbols must not
clash with the library's (libgrace.a holds every object globally).

The installed files are checked too: the SONAME is libgrace.so.<major> with
the usual symlinks, libgrace.so exports grace_* functions only (nm -D
--defined-only), neither library defines the example messages (hello_*,
greeter__*) or grpc__health__v1__*, and no installed header includes <uv.h>
or protobuf-c's header.

In sanitizer builds the library is instrumented, so the programs are built
with the same compiler ($GRACE_CC) and -fsanitize flags.
"""

import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
APP_DIR = os.path.join(REPO, "tests", "install")

_TRUE = ("1", "on", "yes", "true", "y")
SANITIZE = os.environ.get("GRACE_SANITIZE", "").lower() in _TRUE
TSAN = os.environ.get("GRACE_TSAN", "").lower() in _TRUE
if SANITIZE:
    SAN_FLAGS = ["-fsanitize=address,undefined", "-fno-omit-frame-pointer"]
elif TSAN:
    SAN_FLAGS = ["-fsanitize=thread", "-fno-omit-frame-pointer"]
else:
    SAN_FLAGS = []

BUILD_DIR = os.environ.get("GRACE_BUILD_DIR") or os.path.join(REPO, "build")
CMAKE = os.environ.get("GRACE_CMAKE") or "cmake"
CC = os.environ.get("GRACE_CC") or "cc"
CFLAGS = ["-std=c11", "-D_GNU_SOURCE", "-Wall", "-Wextra", "-Wpedantic", "-Werror"]

# What libgrace.so may export besides grace_*: the linker's own symbols,
# should a toolchain define them in the dynamic table.
LINKER_SYMBOLS = {"_init", "_fini", "_edata", "_end", "__bss_start"}


def run(args, timeout=300, env=None, cwd=None):
    """Runs |args|; its output on failure, stdout on success."""
    p = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       timeout=timeout, env=env, cwd=cwd, universal_newlines=True)
    if p.returncode != 0:
        raise AssertionError("%s exited %d:\n%s" % (" ".join(args), p.returncode, p.stdout))
    return p.stdout


def dynamic(path):
    """readelf -d: (NEEDED list, SONAME or None, RPATH/RUNPATH list)."""
    out = run(["readelf", "-d", path])
    needed = re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", out)
    soname = re.findall(r"\(SONAME\)\s+Library soname: \[([^\]]+)\]", out)
    rpath = re.findall(r"\((?:RPATH|RUNPATH)\)\s+Library r(?:un)?path: \[([^\]]+)\]", out)
    return needed, (soname[0] if soname else None), rpath


class InstallTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="grace-install-")
        cls.prefix = os.path.join(cls.tmp, "prefix")
        run([CMAKE, "--install", BUILD_DIR, "--prefix", cls.prefix])
        pcs = glob.glob(os.path.join(cls.prefix, "**", "pkgconfig", "grace.pc"), recursive=True)
        if len(pcs) != 1:
            raise AssertionError("grace.pc installed %d times under %s" % (len(pcs), cls.prefix))
        cls.pcdir = os.path.dirname(pcs[0])
        cls.libdir = os.path.dirname(cls.pcdir)
        cls.incdir = os.path.join(cls.prefix, "include")
        with open(os.path.join(cls.incdir, "grace", "version.h")) as f:
            text = f.read()
        cls.major = int(re.search(r"#define GRACE_VERSION_MAJOR (\d+)", text).group(1))
        cls.version = re.search(r'#define GRACE_VERSION_STRING "([^"]+)"', text).group(1)
        # The program's sources, copied out of the tree: nothing below may
        # find grace's headers anywhere but under the prefix.
        cls.src = os.path.join(cls.tmp, "src")
        shutil.copytree(APP_DIR, cls.src)
        protoc_c = shutil.which("protoc-c")
        if protoc_c is None:
            raise AssertionError("protoc-c not found (apt-get install protobuf-c-compiler)")
        shutil.copy(os.path.join(REPO, "proto", "health.proto"), cls.src)
        run([protoc_c, "--proto_path=" + cls.src, "--c_out=" + cls.src,
             os.path.join(cls.src, "health.proto")])
        cls.env = dict(os.environ)
        cls.env["PKG_CONFIG_PATH"] = cls.pcdir
        cls.env.pop("LD_LIBRARY_PATH", None)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def pkg_config(self, *args):
        return run(["pkg-config"] + list(args), env=self.env).split()

    def run_app(self, path, env=None):
        out = run([path], timeout=60, env=env or self.env)
        self.assertEqual(out.strip().splitlines()[-1], self.version, out)

    # ---- the installed files ------------------------------------------

    def test_shared_library_names(self):
        real = os.path.join(self.libdir, "libgrace.so." + self.version)
        soname = "libgrace.so.%d" % self.major
        self.assertTrue(os.path.isfile(real) and not os.path.islink(real), real)
        self.assertEqual(os.readlink(os.path.join(self.libdir, soname)), os.path.basename(real))
        self.assertEqual(os.readlink(os.path.join(self.libdir, "libgrace.so")), soname)
        needed, got, rpath = dynamic(real)
        self.assertEqual(got, soname)
        self.assertEqual(rpath, [], "an installed library carries no RPATH")
        for dep in ("libuv.so", "libnghttp2.so", "libprotobuf-c.so"):
            self.assertTrue(any(n.startswith(dep) for n in needed), (dep, needed))
        self.assertTrue(os.path.isfile(os.path.join(self.libdir, "libgrace.a")))

    def test_exports_grace_only(self):
        out = run(["nm", "-D", "--defined-only", os.path.join(self.libdir, "libgrace.so")])
        names = [line.split()[-1] for line in out.splitlines() if line.strip()]
        self.assertGreater(len(names), 100)
        # A sanitizer build's coverage instrumentation (-fsanitize=fuzzer-no-link,
        # for the fuzzers) makes the linker define and export the bounds of its
        # __sancov_* sections; a plain or Release build has none.
        sancov = re.compile(r"^__(start|stop)___sancov_\w+$")
        stray = [n for n in names if not n.startswith("grace_") and n not in LINKER_SYMBOLS
                 and not (SANITIZE and sancov.match(n))]
        self.assertEqual(stray, [], "exported by libgrace.so but not grace_*")
        # The public API is there (a sample from each header).
        for name in ("grace_strerror", "grace_duration_parse", "grace_ctx_with_timeout",
                     "grace_http_server_new", "grace_grpc_server_new",
                     "grace_grpc_channel_new", "grace_group_new", "grace_worker_new",
                     "grace_upgrader_new", "grace_version", "grace_version_string"):
            self.assertIn(name, names)
        # grace__* are the library's internals: hidden.
        self.assertFalse([n for n in names if n.startswith("grace__")])

    def test_no_example_or_standard_health_symbols(self):
        bad = re.compile(r"^(hello_|helloworld|greeter__|grpc__health__v1__)")
        for lib, args in (("libgrace.so", ["-D"]), ("libgrace.a", [])):
            out = run(["nm"] + args + [os.path.join(self.libdir, lib)])
            names = [l.split()[-1] for l in out.splitlines()
                     if l.strip() and not l.endswith(":") and len(l.split()) >= 2]
            self.assertEqual([n for n in names if bad.match(n)], [], lib)
        # The library's own health messages are in libgrace.a, renamed.
        out = run(["nm", "--defined-only", os.path.join(self.libdir, "libgrace.a")])
        self.assertIn("grace__internal__health__v1__health_check_request__descriptor", out)

    def test_headers(self):
        headers = sorted(glob.glob(os.path.join(self.incdir, "grace", "*.h")))
        names = [os.path.basename(h) for h in headers]
        for name in ("grace.h", "version.h", "error.h", "http.h", "grpc.h"):
            self.assertIn(name, names)
        self.assertFalse(glob.glob(os.path.join(self.incdir, "grace", "*.in")))
        for h in headers:
            with open(h) as f:
                text = f.read()
            if os.path.basename(h) == "uv.h":
                # grace/uv.h, the embedding API, is the one header that
                # needs libuv's, and says so; nothing else includes it.
                self.assertRegex(text, r"#\s*include\s*<uv\.h>")
                self.assertIsNone(re.search(r"#\s*include\s*[<\"]protobuf-c/", text), h)
                continue
            self.assertIsNone(re.search(r"#\s*include\s*[<\"](uv\.h|protobuf-c/|grace/uv\.h)", text),
                              "%s includes libuv's or protobuf-c's header" % h)
        # Each header compiles on its own.
        for name in names:
            c = os.path.join(self.tmp, "h_%s.c" % name[:-2])
            with open(c, "w") as f:
                f.write("#include <grace/%s>\nint main(void) { return 0; }\n" % name)
            run([CC] + CFLAGS + ["-I", self.incdir, "-c", c, "-o", c + ".o"])

    def test_pkg_config_file(self):
        run(["pkg-config", "--validate", "grace"], env=self.env)
        self.assertEqual(self.pkg_config("--modversion", "grace"), [self.version])
        self.assertEqual(self.pkg_config("--variable=prefix", "grace"), [self.prefix])
        self.assertIn("-I" + self.incdir, self.pkg_config("--cflags", "grace"))
        libs = self.pkg_config("--libs", "grace")
        self.assertIn("-L" + self.libdir, libs)
        self.assertIn("-lgrace", libs)
        self.assertNotIn("-luv", libs, "a shared link needs libgrace only")
        static = self.pkg_config("--libs", "--static", "grace")
        for lib in ("-lgrace", "-luv", "-lnghttp2", "-lprotobuf-c", "-lpthread"):
            self.assertIn(lib, static)

    # ---- programs built against it --------------------------------------

    def build_pkg_config(self, name, static):
        out = os.path.join(self.tmp, name)
        flags = self.pkg_config("--cflags", "grace", "libprotobuf-c")
        if static:
            libs = self.pkg_config("--libs", "--static", "grace", "libprotobuf-c")
            libs = ["-l:libgrace.a" if a == "-lgrace" else a for a in libs]
        else:
            libs = self.pkg_config("--libs", "grace", "libprotobuf-c")
        run([CC] + CFLAGS + SAN_FLAGS + ["-DAPP_OWN_HEALTH", "-I", self.src] + flags +
            ["-o", out, os.path.join(self.src, "app.c"), os.path.join(self.src, "health.pb-c.c")] +
            libs + SAN_FLAGS, cwd=self.tmp)
        return out

    def test_pkg_config_shared(self):
        app = self.build_pkg_config("app-pc-shared", static=False)
        needed, _, _ = dynamic(app)
        self.assertIn("libgrace.so.%d" % self.major, needed)
        env = dict(self.env)
        env["LD_LIBRARY_PATH"] = self.libdir
        out = run(["ldd", app], env=env)
        self.assertIn(os.path.join(self.libdir, "libgrace.so.%d" % self.major), out)
        self.run_app(app, env)

    def test_pkg_config_static(self):
        app = self.build_pkg_config("app-pc-static", static=True)
        needed, _, _ = dynamic(app)
        self.assertFalse([n for n in needed if n.startswith("libgrace")], needed)
        self.run_app(app)

    def test_find_package(self):
        build = os.path.join(self.tmp, "cmake-build")
        args = [CMAKE, "-S", self.src, "-B", build,
                "-DCMAKE_PREFIX_PATH=" + self.prefix,
                "-DCMAKE_C_COMPILER=" + CC,
                "-DCMAKE_BUILD_TYPE=RelWithDebInfo"]
        if SAN_FLAGS:
            args += ["-DCMAKE_C_FLAGS=" + " ".join(SAN_FLAGS),
                     "-DCMAKE_EXE_LINKER_FLAGS=" + " ".join(SAN_FLAGS)]
        out = run(args, env=self.env)
        run([CMAKE, "--build", build, "-j2"], env=self.env)
        with open(os.path.join(build, "CMakeCache.txt")) as f:
            cache = f.read()
        self.assertIn("grace_DIR:PATH=" + self.libdir, cache, out)
        shared = os.path.join(build, "app-shared")
        needed, _, rpath = dynamic(shared)
        self.assertIn("libgrace.so.%d" % self.major, needed)
        self.assertTrue(any(self.libdir in r for r in rpath), rpath)
        self.run_app(shared)
        static = os.path.join(build, "app-static")
        needed, _, _ = dynamic(static)
        self.assertFalse([n for n in needed if n.startswith("libgrace")], needed)
        self.run_app(static)
        # The version file: this version is found, an older major is not.
        req = os.path.join(self.tmp, "cmake-req")
        os.makedirs(req)
        with open(os.path.join(req, "CMakeLists.txt"), "w") as f:
            f.write("cmake_minimum_required(VERSION 3.16)\nproject(req C)\n"
                    "find_package(grace %s EXACT REQUIRED)\n"
                    "find_package(grace %d QUIET)\n"
                    "if(grace_FOUND)\n  message(FATAL_ERROR \"major %d matched\")\nendif()\n"
                    % (self.version, self.major + 1, self.major + 1))
        run([CMAKE, "-S", req, "-B", os.path.join(req, "build"),
             "-DCMAKE_PREFIX_PATH=" + self.prefix], env=self.env)


if __name__ == "__main__":
    sys.stderr.write("GRACE_BUILD_DIR=%s sanitizers=%s\n"
                     % (BUILD_DIR, " ".join(SAN_FLAGS) or "no"))
    runner = unittest.TextTestRunner(verbosity=2)
    prog = unittest.main(testRunner=runner, exit=False)
    sys.exit(0 if prog.result.wasSuccessful() else 1)
