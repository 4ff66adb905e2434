"""deploy/: the systemd units and the Kubernetes manifest, checked against
the program they run (examples/grace-demo-server from $GRACE_BIN_DIR).

systemd (deploy/systemd/): `systemd-analyze verify` on the three units, in a
scratch root (--root) holding the host's unit directory and this build's
programs at the paths the units name; the settings the upgrade path depends
on (Type=notify, NotifyAccess=all, KillMode=mixed, no PIDFile=, ExecReload=
talking to the -upgrade-socket the program listens on, the socket names
"http" and "grpc" on the ports of -addr and -grpc-addr); the timing:
-shutdown-timeout is what grace_group_timeout_for_grace_period gives for
TimeoutStopSec=, TimeoutStartSec= (which bounds ExecReload=) outlasts
-upgrade-timeout, and delay + close spread + longest request + margin fit
the deadline.

Kubernetes (deploy/kubernetes/grace-demo.yaml, read by a small strict YAML
reader, compared with PyYAML when that is installed): the deadline the
program derives from TERMINATION_GRACE_PERIOD_SECONDS follows the rule and
is below terminationGracePeriodSeconds, and the env var equals that field;
-shutdown-delay covers the readiness probe's detection time plus a stated
propagation slack; the same budget; maxUnavailable 0, maxSurge 1; the probes
(/readyz, /livez, native gRPC) on the ports the program listens on; the
Service and PodDisruptionBudget select the pods.

Both: every flag is one the program accepts (the whole argument vector is
parsed by the program, with -h at the end), and the program, started with
the file's timing flags and environment, logs the deadline and delay the
arithmetic assumes.

When systemd-analyze cannot run here, that one check is skipped, saying why,
and the test exits 77 (CTest's SKIP_RETURN_CODE) if everything else passed.
"""

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import unittest

import gracetest
from gracetest import bound, free_port

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
DEPLOY = os.path.join(REPO, "deploy")
UNITS = os.path.join(DEPLOY, "systemd")
MANIFEST = os.path.join(DEPLOY, "kubernetes", "grace-demo.yaml")
SERVER = "grace-demo-server"
UPGRADE = "grace-upgrade"
SKIP = 77

# What the budget keeps after the drain, inside the deadline: post-drain
# hooks, the Syncer's cleanup, the report (the force and the exit have the
# deadline's own margin before SIGKILL).
MARGIN = 5.0
# Time for "endpoint not ready" to reach kube-proxy and the ingresses after
# the kubelet marks the pod not ready.  Kubernetes bounds none of this; 5s
# is the assumption deploy/README.md states.
PROPAGATION_SLACK = 5.0

# Set when systemd-analyze verify could not run here (the reason).
VERIFY_SKIPPED = []


# ---- durations -------------------------------------------------------------

_GO_UNITS = {"ns": 1e-9, "us": 1e-6, "\u00b5s": 1e-6, "\u03bcs": 1e-6,
             "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_GO_RE = re.compile(r"([0-9]*(?:\.[0-9]*)?)(ns|us|\u00b5s|\u03bcs|ms|s|m|h)")


def go_duration(text):
    """Seconds in a Go duration ("1m30s", "500ms", "0"); ValueError if bad."""
    s = text
    sign = 1.0
    if s[:1] in ("+", "-"):
        sign = -1.0 if s[0] == "-" else 1.0
        s = s[1:]
    if s == "0":
        return 0.0
    if not s:
        raise ValueError("invalid duration %r" % text)
    total, pos = 0.0, 0
    while pos < len(s):
        m = _GO_RE.match(s, pos)
        if not m or m.group(1) in ("", "."):
            raise ValueError("invalid duration %r" % text)
        total += float(m.group(1)) * _GO_UNITS[m.group(2)]
        pos = m.end()
    return sign * total


_SD_UNITS = {"us": 1e-6, "usec": 1e-6, "ms": 1e-3, "msec": 1e-3,
             "s": 1.0, "sec": 1.0, "second": 1.0, "seconds": 1.0,
             "m": 60.0, "min": 60.0, "minute": 60.0, "minutes": 60.0,
             "h": 3600.0, "hr": 3600.0, "hour": 3600.0, "hours": 3600.0}


def systemd_timespan(text):
    """Seconds in a systemd time span ("30", "30s", "1min 30s")."""
    s = text.strip()
    if re.fullmatch(r"[0-9]+", s):
        return float(s)
    total, pos = 0.0, 0
    rx = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([a-z]+)")
    while pos < len(s):
        m = rx.match(s, pos)
        if not m or m.group(2) not in _SD_UNITS:
            raise ValueError("time span %r not understood" % text)
        total += float(m.group(1)) * _SD_UNITS[m.group(2)]
        pos = m.end()
    return total


def timeout_for_grace_period(period):
    """include/grace/group.h, grace_group_timeout_for_grace_period:
    margin = period/10 within [1s, 5s]; deadline = period - margin, but at
    least period/2; a period <= 0 gives 0."""
    if period <= 0:
        return 0.0
    margin = min(max(period / 10.0, 1.0), 5.0)
    return max(period - margin, period / 2.0)


# ---- the program's flags ---------------------------------------------------

def usage_flags(name):
    """{flag: type or None for a bool} from `name -h`."""
    p = gracetest.run_program(name, ["-h"], timeout=bound(10, 60))
    if p.returncode != 0:
        raise AssertionError("%s -h exited %s\n%s" % (name, p.returncode, p.describe()))
    flags = {}
    for line in p.lines() + p.stdout_lines():
        m = re.match(r"^  -([A-Za-z0-9][A-Za-z0-9_.-]*)(?: (\S+))?$", line.text)
        if m:
            flags[m.group(1)] = m.group(2)
    if not flags:
        raise AssertionError("no flags in %s -h\n%s" % (name, p.describe()))
    return flags


def flag_pairs(argv):
    """[(name, value)] from `-name value` pairs; fails on anything else (a
    positional argument would stop the program's flag parsing)."""
    pairs = []
    i = 0
    while i < len(argv):
        tok = argv[i]
        if not re.fullmatch(r"--?[A-Za-z0-9][A-Za-z0-9_.-]*(=.*)?", tok):
            raise AssertionError("argument %r is not a flag (in %r)" % (tok, argv))
        name = tok.lstrip("-")
        if "=" in name:
            name, value = name.split("=", 1)
            i += 1
        else:
            if i + 1 >= len(argv):
                raise AssertionError("flag %s has no value (in %r)" % (tok, argv))
            value = argv[i + 1]
            i += 2
        pairs.append((name, value))
    return pairs


def check_flags(test, program, argv, where):
    """Every flag of argv is one `program` declares, and the program parses
    the whole vector (values included): argv + -h must exit 0."""
    pairs = flag_pairs(argv)
    known = usage_flags(program)
    missing = sorted({n for n, _ in pairs if n not in known})
    if missing:
        test.fail("%s uses flags that this build's %s does not declare (%s -h): %s.  "
                  "-pidfile, -upgrade-socket, -upgrade-timeout and -close-spread come "
                  "with the zero-downtime upgrade work; run this test on a build that "
                  "has it." % (where, program, program, ", ".join("-" + n for n in missing)))
    p = gracetest.run_program(program, list(argv) + ["-h"], timeout=bound(10, 60))
    test.assertEqual(p.returncode, 0, "%s: %s rejects the arguments %r\n%s"
                     % (where, program, argv, p.describe()))


def program_deadline(test, args, env):
    """Start the server with `args` (addresses on loopback), send SIGTERM and
    return (deadline, delay) in seconds as its log states them."""
    port, gport = free_port(), free_port()
    # Empty values are ignored: only what the file sets counts.
    full_env = {"GRACE_SHUTDOWN_TIMEOUT": "", "TERMINATION_GRACE_PERIOD_SECONDS": "",
                "NOTIFY_SOCKET": ""}
    full_env.update(env)
    prog = test.start(SERVER, *args, "-addr", "127.0.0.1:%d" % port,
                      "-grpc-addr", "127.0.0.1:%d" % gport, env=full_env)
    prog.wait_port(port, timeout=bound(10, 60))
    prog.send_signal(signal.SIGTERM)
    line = prog.wait_line(r"Shutdown started \(.*\): deadline (\S+), delay (\S+)$",
                          timeout=bound(5, 30))
    m = re.search(r"deadline (\S+), delay (\S+)$", line.text)
    # The second signal ends it at once (exit 1): no need to sit out the delay.
    prog.send_signal(signal.SIGINT)
    prog.wait_exit(bound(10, 60))
    return go_duration(m.group(1)), go_duration(m.group(2))


# ---- systemd unit files ----------------------------------------------------

def parse_unit(path):
    """{section: [(key, value)]} of a unit file: comments, blank lines and
    backslash continuations as systemd reads them.  Strict: a comment inside a
    continued line, or a line outside key=value, fails."""
    sections = {}
    current = None
    pending = None  # (key, text so far, line number)
    with open(path, encoding="utf-8") as f:
        for no, raw in enumerate(f, 1):
            line = raw.rstrip("\n")
            s = line.strip()
            if pending is not None:
                if s.startswith(("#", ";")):
                    raise AssertionError("%s:%d: comment inside a continued line" % (path, no))
                key, text, start = pending
                if s.endswith("\\"):
                    pending = (key, text + " " + s[:-1].strip(), start)
                else:
                    sections[current].append((key, (text + " " + s).strip()))
                    pending = None
                continue
            if not s or s.startswith(("#", ";")):
                continue
            m = re.fullmatch(r"\[([^\]]+)\]", s)
            if m:
                current = m.group(1)
                sections.setdefault(current, [])
                continue
            m = re.fullmatch(r"([A-Za-z0-9-]+)\s*=\s*(.*)", s)
            if not m or current is None:
                raise AssertionError("%s:%d: not a key=value line in a section: %r" % (path, no, line))
            key, value = m.group(1), m.group(2)
            if value.endswith("\\"):
                pending = (key, value[:-1].strip(), no)
            else:
                sections[current].append((key, value.strip()))
    if pending is not None:
        raise AssertionError("%s: file ends in a continued line" % path)
    return sections


def unit_values(unit, section, key):
    return [v for k, v in unit.get(section, []) if k == key]


def unit_value(test, unit, section, key):
    vals = unit_values(unit, section, key)
    test.assertEqual(len(vals), 1, "[%s] %s= set %d times, want once" % (section, key, len(vals)))
    return vals[0]


def expand_specifiers(text, runtime_dir):
    """%t (the runtime directory root) and %%; any other specifier fails."""
    def repl(m):
        if m.group(1) == "t":
            return runtime_dir
        if m.group(1) == "%":
            return "%"
        raise AssertionError("specifier %%%s not handled by this test" % m.group(1))
    return re.sub(r"%(.)", repl, text)


def command_line(text, runtime_dir="/run"):
    """An Exec*= value as an argument vector (no prefixes, no $VAR)."""
    if text[:1] in "@-:+!":
        raise AssertionError("Exec prefix %r not handled by this test" % text[0])
    return shlex.split(expand_specifiers(text, runtime_dir))


def port_of(addr):
    """The port of "host:port" / ":port" / a bare port (ListenStream=)."""
    return int(addr.rsplit(":", 1)[-1])


# ---- a small strict YAML reader ---------------------------------------------

class YamlError(ValueError):
    pass


class _Line:
    __slots__ = ("no", "indent", "text")

    def __init__(self, no, indent, text):
        self.no, self.indent, self.text = no, indent, text


def _strip_comment(line):
    quote = None
    i = 0
    while i < len(line):
        ch = line[i]
        if quote == '"':
            if ch == "\\":
                i += 1
            elif ch == '"':
                quote = None
        elif quote == "'":
            if ch == "'":
                quote = None
        elif ch in "\"'":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1] in " \t"):
            return line[:i]
        i += 1
    return line


def _entry(text):
    """(key, rest) when text is `key: rest` / `key:`, else None."""
    quote = None
    for i, ch in enumerate(text):
        if quote:
            if ch == quote:
                quote = None
            continue
        if ch in "\"'" and i == 0:
            quote = ch
            continue
        if ch == ":" and (i + 1 == len(text) or text[i + 1] == " "):
            key = text[:i].strip()
            if not key:
                return None
            if key[0] in "\"'":
                key = _scalar(key, None)
                if not isinstance(key, str):
                    return None
            elif key[0] in "?&*!|>[]{}%@`":
                raise YamlError("key %r not supported" % key)
            return key, text[i + 1:].strip()
    return None


_BOOL_LIKE = {"yes", "no", "on", "off", "y", "n", "Yes", "No", "On", "Off",
              "YES", "NO", "ON", "OFF", "True", "False", "TRUE", "FALSE", "Null", "NULL"}


def _scalar(text, no):
    where = "line %s: " % no if no else ""
    if text.startswith('"'):
        if len(text) < 2 or not text.endswith('"'):
            raise YamlError(where + "unterminated string %r" % text)
        body = text[1:-1]
        out, i = [], 0
        while i < len(body):
            ch = body[i]
            if ch == '"':
                raise YamlError(where + "stray quote in %r" % text)
            if ch == "\\":
                nxt = body[i + 1:i + 2]
                if nxt not in ('"', "\\", "n", "t"):
                    raise YamlError(where + "escape \\%s not supported" % nxt)
                out.append({"n": "\n", "t": "\t"}.get(nxt, nxt))
                i += 2
                continue
            out.append(ch)
            i += 1
        return "".join(out)
    if text.startswith("'"):
        if len(text) < 2 or not text.endswith("'"):
            raise YamlError(where + "unterminated string %r" % text)
        body = text[1:-1]
        if re.search(r"(?<!')'(?!')", body.replace("''", "")):
            raise YamlError(where + "stray quote in %r" % text)
        return body.replace("''", "'")
    if text[0] in "[]{}&*!|>%@`,?":
        raise YamlError(where + "%r: flow, anchors, tags and block scalars not supported" % text)
    if text in ("true", "false"):
        return text == "true"
    if text in ("null", "~"):
        return None
    if re.fullmatch(r"-?(0|[1-9][0-9]*)", text):
        return int(text)
    if text in _BOOL_LIKE or re.fullmatch(r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?", text) \
            or re.fullmatch(r"0[0-9xo].*", text):
        raise YamlError(where + "%r reads differently across YAML versions: quote it" % text)
    if ": " in text or text.endswith(":"):
        raise YamlError(where + "%r: a colon in a plain scalar" % text)
    return text


class _Reader:
    def __init__(self, lines):
        self.lines = lines
        self.i = 0

    def peek(self):
        return self.lines[self.i] if self.i < len(self.lines) else None

    @staticmethod
    def _is_item(text):
        return text == "-" or text.startswith("- ")

    def node(self):
        ln = self.peek()
        return self.seq(ln.indent) if self._is_item(ln.text) else self.map(ln.indent)

    def seq(self, indent):
        items = []
        while True:
            ln = self.peek()
            if ln is None or ln.indent < indent:
                break
            if ln.indent > indent or not self._is_item(ln.text):
                raise YamlError("line %d: unexpected %r in a sequence" % (ln.no, ln.text))
            rest = ln.text[1:].lstrip(" ")
            if not rest:
                self.i += 1
                nxt = self.peek()
                items.append(self.node() if nxt is not None and nxt.indent > indent else None)
            elif _entry(rest) is not None:
                # "- key: value": a mapping whose first key sits after "- ".
                col = indent + len(ln.text) - len(rest)
                self.lines[self.i] = _Line(ln.no, col, rest)
                items.append(self.map(col))
            else:
                self.i += 1
                items.append(_scalar(rest, ln.no))
        return items

    def map(self, indent):
        out = {}
        while True:
            ln = self.peek()
            if ln is None or ln.indent < indent:
                break
            if ln.indent > indent:
                raise YamlError("line %d: unexpected indentation" % ln.no)
            kv = _entry(ln.text)
            if kv is None:
                raise YamlError("line %d: %r is not `key: value`" % (ln.no, ln.text))
            key, rest = kv
            if key in out:
                raise YamlError("line %d: duplicate key %r" % (ln.no, key))
            self.i += 1
            if rest:
                out[key] = _scalar(rest, ln.no)
                continue
            nxt = self.peek()
            if nxt is not None and nxt.indent > indent:
                out[key] = self.node()
            elif nxt is not None and nxt.indent == indent and self._is_item(nxt.text):
                out[key] = self.seq(indent)
            else:
                out[key] = None
        return out


def load_yaml_documents(text):
    """The documents of a YAML stream, for the block subset the manifest uses
    (mappings, sequences, plain and quoted scalars, comments, ---)."""
    docs, lines = [], []
    for no, raw in enumerate(text.split("\n"), 1):
        line = _strip_comment(raw).rstrip()
        if not line.strip():
            continue
        if "\t" in line[:len(line) - len(line.lstrip())]:
            raise YamlError("line %d: tab in indentation" % no)
        if line == "---":
            docs.append(lines)
            lines = []
            continue
        if line.startswith(("...", "%")):
            raise YamlError("line %d: %r not supported" % (no, line))
        body = line.lstrip(" ")
        lines.append(_Line(no, len(line) - len(body), body))
    docs.append(lines)
    out = []
    for lines in docs:
        if not lines:
            continue
        r = _Reader(lines)
        if lines[0].indent != 0:
            raise YamlError("line %d: a document must start at column 0" % lines[0].no)
        out.append(r.node())
        if r.peek() is not None:
            raise YamlError("line %d: unexpected %r" % (r.peek().no, r.peek().text))
    return out


# ---- the tests ---------------------------------------------------------------

class Rule(unittest.TestCase):
    def test_rule_matches_the_header(self):
        # The examples of grace_group_timeout_for_grace_period's comment.
        for period, deadline in ((30, 27), (60, 55), (120, 115), (5, 4), (1, 0.5), (0, 0)):
            self.assertAlmostEqual(timeout_for_grace_period(period), deadline)

    def test_durations(self):
        self.assertEqual(go_duration("1m30s"), 90.0)
        self.assertEqual(go_duration("500ms"), 0.5)
        self.assertEqual(systemd_timespan("1min 30s"), 90.0)
        self.assertEqual(systemd_timespan("30"), 30.0)
        for bad in ("", "5", "1x", "s"):
            self.assertRaises(ValueError, go_duration, bad)

    def test_yaml_reader(self):
        docs = load_yaml_documents(
            "a: 1\nb:\n  - x\n  - \":8000\"\n  - k: v # c\n    n: \"2\"\nc:\n- 'it''s'\n---\nd: true\n")
        self.assertEqual(docs, [{"a": 1, "b": ["x", ":8000", {"k": "v", "n": "2"}],
                                 "c": ["it's"]}, {"d": True}])
        for bad in ("a: yes\n", "a: [1]\n", "a: 1\na: 2\n", "a:\n   b: 1\n  c: 2\n", "a: 1.5\n"):
            self.assertRaises(YamlError, load_yaml_documents, bad)


class Systemd(gracetest.ProgramTestCase):
    @classmethod
    def setUpClass(cls):
        cls.service = parse_unit(os.path.join(UNITS, "grace-demo.service"))
        cls.http_socket = parse_unit(os.path.join(UNITS, "grace-demo.socket"))
        cls.grpc_socket = parse_unit(os.path.join(UNITS, "grace-demo-grpc.socket"))

    def exec_start(self, runtime_dir="/run"):
        argv = command_line(unit_value(self, self.service, "Service", "ExecStart"), runtime_dir)
        self.assertEqual(os.path.basename(argv[0]), SERVER)
        return argv

    def flags(self):
        pairs = flag_pairs(self.exec_start()[1:])
        d = dict(pairs)
        self.assertEqual(len(d), len(pairs), "a flag given twice in ExecStart=")
        return d

    def test_verify(self):
        """systemd-analyze verify, in a scratch root with the host's units and
        this build's programs at /usr/local/bin."""
        tool = shutil.which("systemd-analyze")
        host_units = next((d for d in ("/usr/lib/systemd/system", "/lib/systemd/system")
                           if os.path.isdir(d)), None)
        if tool is None or host_units is None:
            VERIFY_SKIPPED.append("systemd-analyze or the host's unit directory is missing")
            self.skipTest(VERIFY_SKIPPED[-1])
        root = tempfile.mkdtemp(prefix="grace-deploy-root-")
        try:
            shutil.copytree(host_units, os.path.join(root, "usr/lib/systemd/system"), symlinks=True)
            etc = os.path.join(root, "etc/systemd/system")
            os.makedirs(etc)
            bindir = os.path.join(root, "usr/local/bin")
            os.makedirs(bindir)
            shutil.copy(gracetest.bin_path(SERVER), bindir)
            # grace-upgrade is checked by test_grace_upgrade; without it in
            # the build, a stand-in lets verify judge the units themselves.
            upgrade = gracetest.bin_path(UPGRADE)
            if os.access(upgrade, os.X_OK):
                shutil.copy(upgrade, bindir)
            else:
                with open(os.path.join(bindir, UPGRADE), "w") as f:
                    f.write("#!/bin/sh\nexit 1\n")
                os.chmod(os.path.join(bindir, UPGRADE), 0o755)

            def verify(unit):
                r = subprocess.run([tool, "verify", "--man=no", "--recursive-errors=no",
                                    "--root=" + root, unit],
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=120)
                return r.returncode, r.stdout.decode("utf-8", "replace").strip()

            # A unit that must verify cleanly: if it does not, this machine
            # cannot run the check (no working systemd-analyze), and says so.
            with open(os.path.join(etc, "grace-deploy-control.service"), "w") as f:
                f.write("[Service]\nExecStart=/usr/local/bin/%s\n" % SERVER)
            rc, out = verify("grace-deploy-control.service")
            if rc != 0 or out:
                VERIFY_SKIPPED.append("systemd-analyze verify does not work here (a trivial "
                                      "unit gives exit %d: %s)" % (rc, out))
                self.skipTest(VERIFY_SKIPPED[-1])
            os.remove(os.path.join(etc, "grace-deploy-control.service"))
            for name in sorted(os.listdir(UNITS)):
                if name.endswith((".service", ".socket")):
                    shutil.copy(os.path.join(UNITS, name), etc)
            for name in ("grace-demo.service", "grace-demo.socket", "grace-demo-grpc.socket"):
                rc, out = verify(name)
                self.assertEqual((rc, out), (0, ""), "systemd-analyze verify %s" % name)
        finally:
            shutil.rmtree(root, ignore_errors=True)

    def test_service_settings(self):
        S = "Service"
        self.assertEqual(unit_value(self, self.service, S, "Type"), "notify")
        self.assertEqual(unit_value(self, self.service, S, "NotifyAccess"), "all")
        self.assertEqual(unit_value(self, self.service, S, "KillMode"), "mixed")
        self.assertEqual(unit_value(self, self.service, S, "Restart"), "on-failure")
        self.assertEqual(unit_values(self.service, S, "PIDFile"), [],
                         "no PIDFile=: MAINPID= hands the service over (deploy/README.md)")
        rundir = unit_value(self, self.service, S, "RuntimeDirectory")
        flags = self.flags()
        for f in ("upgrade-socket", "pidfile"):
            self.assertTrue(flags[f].startswith("/run/%s/" % rundir),
                            "-%s %s is not in RuntimeDirectory=%s" % (f, flags[f], rundir))
        reload_argv = command_line(unit_value(self, self.service, S, "ExecReload"))
        self.assertEqual(os.path.basename(reload_argv[0]), UPGRADE)
        self.assertEqual(os.path.dirname(reload_argv[0]), os.path.dirname(self.exec_start()[0]),
                         "grace-upgrade is installed beside the server")
        self.assertEqual(dict(flag_pairs(reload_argv[1:])), {"socket": flags["upgrade-socket"]})

    def test_sockets(self):
        sockets = " ".join(unit_values(self.service, "Service", "Sockets")).split()
        self.assertEqual(sorted(sockets), ["grace-demo-grpc.socket", "grace-demo.socket"])
        store = int(unit_value(self, self.service, "Service", "FileDescriptorStoreMax"))
        self.assertGreaterEqual(store, len(sockets), "the fd store must hold every listener")
        flags = self.flags()
        for unit, name, flag in ((self.http_socket, "http", "addr"),
                                 (self.grpc_socket, "grpc", "grpc-addr")):
            self.assertEqual(unit_value(self, unit, "Socket", "FileDescriptorName"), name)
            self.assertEqual(unit_value(self, unit, "Socket", "Service"), "grace-demo.service")
            listen = unit_value(self, unit, "Socket", "ListenStream")
            self.assertEqual(port_of(listen), port_of(flags[flag]),
                             "%s socket and -%s disagree on the port" % (name, flag))

    def test_timing(self):
        flags = self.flags()
        stop = systemd_timespan(unit_value(self, self.service, "Service", "TimeoutStopSec"))
        start = systemd_timespan(unit_value(self, self.service, "Service", "TimeoutStartSec"))
        deadline = go_duration(flags["shutdown-timeout"])
        self.assertEqual(deadline, timeout_for_grace_period(stop),
                         "-shutdown-timeout should be the rule's deadline for TimeoutStopSec=")
        self.assertLess(deadline, stop)
        self.assertGreater(start, go_duration(flags["upgrade-timeout"]),
                           "ExecReload= runs under TimeoutStartSec=, which must outlast "
                           "-upgrade-timeout")
        longest = go_duration(unit_value(self, self.service, "Service", "X-Grace-Longest-Request"))
        delay = go_duration(flags["shutdown-delay"])
        spread = go_duration(flags["close-spread"])
        self.assertLessEqual(delay + spread + longest + MARGIN, deadline,
                             "delay %gs + close spread %gs + longest request %gs + margin %gs "
                             "do not fit the deadline %gs" % (delay, spread, longest, MARGIN, deadline))

    def test_flags_accepted(self):
        argv = self.exec_start(tempfile.gettempdir())
        check_flags(self, SERVER, argv[1:], "grace-demo.service ExecStart=")

    def test_grace_upgrade(self):
        path = gracetest.bin_path(UPGRADE)
        if not os.access(path, os.X_OK):
            self.fail("%s is not in this build (%s); it comes with the zero-downtime "
                      "upgrade work, and ExecReload= runs it" % (UPGRADE, gracetest.bin_dir()))
        argv = command_line(unit_value(self, self.service, "Service", "ExecReload"),
                            tempfile.gettempdir())
        check_flags(self, UPGRADE, argv[1:], "grace-demo.service ExecReload=")

    def test_program_deadline(self):
        flags = self.flags()
        deadline, delay = program_deadline(
            self, ["-shutdown-delay", flags["shutdown-delay"],
                   "-shutdown-timeout", flags["shutdown-timeout"]], {})
        self.assertEqual(deadline, go_duration(flags["shutdown-timeout"]))
        self.assertEqual(delay, go_duration(flags["shutdown-delay"]))


class Kubernetes(gracetest.ProgramTestCase):
    @classmethod
    def setUpClass(cls):
        with open(MANIFEST, encoding="utf-8") as f:
            text = f.read()
        cls.docs = load_yaml_documents(text)
        try:
            import yaml
        except ImportError:
            yaml = None
        if yaml is not None:
            theirs = [d for d in yaml.safe_load_all(text) if d is not None]
            if theirs != cls.docs:
                raise AssertionError("the YAML reader and PyYAML disagree on %s" % MANIFEST)
        kinds = {}
        for d in cls.docs:
            kinds.setdefault(d["kind"], []).append(d)
        for k in ("Deployment", "Service", "PodDisruptionBudget"):
            if len(kinds.get(k, [])) != 1:
                raise AssertionError("want one %s in %s" % (k, MANIFEST))
        cls.deployment = kinds["Deployment"][0]
        cls.service = kinds["Service"][0]
        cls.pdb = kinds["PodDisruptionBudget"][0]
        cls.pod = cls.deployment["spec"]["template"]["spec"]
        servers = [c for c in cls.pod["containers"]
                   if os.path.basename(c["command"][0]) == SERVER]
        if len(servers) != 1:
            raise AssertionError("want one %s container" % SERVER)
        cls.container = servers[0]

    def flags(self):
        pairs = flag_pairs(self.container.get("args", []))
        d = dict(pairs)
        self.assertEqual(len(d), len(pairs), "a flag given twice in args")
        return d

    def env(self):
        return {e["name"]: e["value"] for e in self.container.get("env", [])}

    def grace_and_deadline(self):
        grace = self.pod["terminationGracePeriodSeconds"]
        self.assertIsInstance(grace, int)
        return float(grace), timeout_for_grace_period(float(grace))

    def test_rollout(self):
        spec = self.deployment["spec"]
        self.assertEqual(spec["strategy"]["type"], "RollingUpdate")
        self.assertEqual(spec["strategy"]["rollingUpdate"]["maxUnavailable"], 0)
        self.assertEqual(spec["strategy"]["rollingUpdate"]["maxSurge"], 1)
        labels = spec["template"]["metadata"]["labels"]
        self.assertEqual(spec["selector"]["matchLabels"], labels)
        self.assertTrue(all(labels.get(k) == v for k, v in self.service["spec"]["selector"].items()))
        pdb = self.pdb["spec"]
        self.assertTrue(all(labels.get(k) == v for k, v in pdb["selector"]["matchLabels"].items()))
        self.assertEqual(pdb.get("maxUnavailable"), 1)
        self.assertGreater(spec["replicas"], pdb["maxUnavailable"],
                           "the budget must leave a pod serving")

    def test_grace_period_and_env(self):
        grace, deadline = self.grace_and_deadline()
        env = self.env()
        self.assertEqual(env.get("TERMINATION_GRACE_PERIOD_SECONDS"), str(int(grace)),
                         "TERMINATION_GRACE_PERIOD_SECONDS must repeat terminationGracePeriodSeconds")
        self.assertNotIn("GRACE_SHUTDOWN_TIMEOUT", env, "it would override the derived deadline")
        self.assertNotIn("shutdown-timeout", self.flags(), "it would override the derived deadline")
        self.assertNotIn("preStop", self.container.get("lifecycle", {}) or {},
                         "a preStop hook's time counts in the grace period: the env value and "
                         "this test would have to subtract it")
        self.assertLess(deadline, grace)

    def test_readiness_covers_the_delay(self):
        r = self.container["readinessProbe"]
        self.assertEqual(r["httpGet"]["path"], "/readyz")
        period = r.get("periodSeconds", 10)
        failures = r.get("failureThreshold", 3)
        timeout = r.get("timeoutSeconds", 1)
        delay = go_duration(self.flags()["shutdown-delay"])
        need = period * failures + timeout + PROPAGATION_SLACK
        self.assertGreaterEqual(delay, need,
                                "-shutdown-delay %gs < %d failures x %ds + %ds timeout + %gs "
                                "propagation" % (delay, failures, period, timeout, PROPAGATION_SLACK))

    def test_budget(self):
        _, deadline = self.grace_and_deadline()
        flags = self.flags()
        longest = go_duration(self.deployment["spec"]["template"]["metadata"]["annotations"]
                              ["grace-demo/longest-request"])
        delay = go_duration(flags["shutdown-delay"])
        spread = go_duration(flags.get("close-spread", "0"))
        self.assertLessEqual(delay + spread + longest + MARGIN, deadline,
                             "delay %gs + close spread %gs + longest request %gs + margin %gs "
                             "do not fit the deadline %gs" % (delay, spread, longest, MARGIN, deadline))

    def test_probes_and_ports(self):
        ports = {p["name"]: p["containerPort"] for p in self.container["ports"]}
        flags = self.flags()
        self.assertEqual(ports["http"], port_of(flags["addr"]))
        self.assertEqual(ports["grpc"], port_of(flags["grpc-addr"]))
        self.assertEqual(self.container["readinessProbe"]["httpGet"]["port"], ports["http"])
        live = self.container["livenessProbe"]
        self.assertEqual(live["httpGet"], {"path": "/livez", "port": ports["http"]})
        self.assertEqual(self.container["startupProbe"]["grpc"]["port"], ports["grpc"])
        targets = {p["targetPort"] for p in self.service["spec"]["ports"]}
        self.assertEqual(targets, {"http", "grpc"})

    def test_strings_where_the_api_wants_strings(self):
        # command, args and env values are []string / string in the API: an
        # unquoted 2 or 60 is a number, which the API server refuses.
        for field in ("command", "args"):
            for v in self.container.get(field, []):
                self.assertIsInstance(v, str, "%s item %r must be quoted" % (field, v))
        for e in self.container.get("env", []):
            self.assertIsInstance(e["value"], str, "env %s must be quoted" % e["name"])

    def test_flags_accepted(self):
        check_flags(self, SERVER, self.container.get("args", []), "grace-demo.yaml args")

    def test_program_deadline(self):
        grace, deadline = self.grace_and_deadline()
        delay_flag = self.flags()["shutdown-delay"]
        got_deadline, got_delay = program_deadline(
            self, ["-shutdown-delay", delay_flag],
            {"TERMINATION_GRACE_PERIOD_SECONDS": self.env()["TERMINATION_GRACE_PERIOD_SECONDS"]})
        self.assertEqual(got_deadline, deadline,
                         "the program derives %gs from %d, the rule %gs" % (got_deadline, grace, deadline))
        self.assertEqual(got_delay, go_duration(delay_flag))


def main():
    sys.stderr.write("GRACE_BIN_DIR=%s\n" % gracetest.bin_dir())
    runner = unittest.TextTestRunner(verbosity=2, resultclass=gracetest._Result)
    prog = unittest.main(module="__main__", testRunner=runner, exit=False)
    if not prog.result.wasSuccessful():
        sys.exit(1)
    if VERIFY_SKIPPED:
        sys.stderr.write("systemd-analyze verify skipped (%s); every other check passed: "
                         "exit %d\n" % (VERIFY_SKIPPED[0], SKIP))
        sys.exit(SKIP)
    sys.exit(0)


if __name__ == "__main__":
    main()
