#!/usr/bin/python3
"""Embedded (the caller's libuv loop) vs threaded (one loop thread of ours).

What: the same HTTP server, "GET /" answering "Hello, World!\\n", run two
ways, ROUNDS times each (default 5), interleaved so that the machine's load
falls on both alike:

  embedded  examples/embedded-server: the server on the program's own
            uv_loop_t, in its main thread, beside its uv_signal_t handles
            and a uv_timer_t that does the program's periodic work every
            -tick (100 ms here: it runs during the measurement);
  threaded  examples/http-sleep-server -loops 1: the server on one loop
            thread of its own (the main thread waits for the signal).

Each round: wrk -t2 -c64 -dDURATION (keep-alive) against each; the figure
is the median of the rounds' requests/s, and the ratio embedded/threaded
(of the medians, and the median of each round's own ratio), which should
be 1 within noise: the embedded mode runs the same loop code
with one uv_async_t and one timer more on it.  Both servers are then sent
SIGTERM and must exit 0; a wrk socket error or non-2xx answer is reported
and fails the run.

Binaries: GRACE_BENCH_EMBED_DIR if set, else the first of build-bench-embed/
(bench/run_all.sh builds it), build-release/, build/ that has both, under
<dir>/examples/.  A sanitizer build is refused (its figures mean nothing).

Usage: /usr/bin/python3 bench/embed.py [--rounds 5] [--duration 5]
"""

import argparse
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import benchlib
from benchlib import log, median, ratio

REPO = Path(__file__).resolve().parent.parent
PORTS = {"embedded": 18401, "threaded": 18402}
PROGS = {"embedded": "embedded-server", "threaded": "http-sleep-server"}
ARGS = {"embedded": ["-tick", "100ms"], "threaded": ["-loops", "1"]}


def find_dir():
    explicit = os.environ.get("GRACE_BENCH_EMBED_DIR")
    dirs = [Path(explicit)] if explicit else [REPO / d for d in
                                              ("build-bench-embed", "build-release", "build")]
    for d in dirs:
        if all(os.access(d / "examples" / p, os.X_OK) for p in PROGS.values()):
            return d / "examples"
    raise SystemExit("embed.py: no build with both %s (tried %s)"
                     % (" and ".join(PROGS.values()), ", ".join(map(str, dirs))))


def wrk(port, duration):
    out = subprocess.run(["wrk", "-t2", "-c64", "-d%ds" % duration,
                          "http://127.0.0.1:%d/" % port],
                         check=True, capture_output=True, text=True).stdout
    m = re.search(r"^Requests/sec:\s+([\d.]+)", out, re.M)
    if m is None:
        raise SystemExit("embed.py: no Requests/sec in wrk's output:\n" + out)
    bad = re.findall(r"^\s*(Socket errors.*|Non-2xx.*)$", out, re.M)
    return float(m.group(1)), bad


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--duration", type=int, default=5, help="seconds of each wrk run")
    a = ap.parse_args()
    d = find_dir()
    for p in PROGS.values():
        if benchlib.is_sanitized(d / p):
            raise SystemExit("embed.py: %s is a sanitizer build: no figures from it" % (d / p))
    procs = {}
    for n, prog in PROGS.items():
        procs[n] = subprocess.Popen([str(d / prog), "-addr", "127.0.0.1:%d" % PORTS[n]] + ARGS[n],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        benchlib.wait_port(PORTS[n], procs[n])
    failed = False
    rps = {n: [] for n in PROGS}
    try:
        for n in PROGS:  # warm-up
            wrk(PORTS[n], 1)
        for r in range(1, a.rounds + 1):
            line = "round %d/%d:" % (r, a.rounds)
            for n in PROGS:
                v, bad = wrk(PORTS[n], a.duration)
                rps[n].append(v)
                line += " %s %.0f" % (n, v)
                if bad:
                    line += " (%s)" % "; ".join(bad)
                    failed = True
            log(line)
    finally:
        for n, p in procs.items():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
            try:
                st = p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                st = p.wait()
            if st != 0:
                log("%s exited with status %d after SIGTERM" % (n, st))
                failed = True
    print("embedding: wrk -t2 -c64 -d%ds on /, keep-alive, %d rounds, median req/s"
          % (a.duration, a.rounds))
    m = {n: median(v) for n, v in rps.items()}
    for n in PROGS:
        print("%-9s %10.0f req/s   (rounds: %s)" % (n, m[n], " ".join("%.0f" % x for x in rps[n])))
    print("ratio embedded/threaded = %s (1 means the same)" % ratio(m["embedded"], m["threaded"]))
    # Each round measures both back to back: the median of the rounds'
    # own ratios is less moved by a noisy phase of the machine.
    paired = [e / t for e, t in zip(rps["embedded"], rps["threaded"]) if t > 0]
    print("median of the rounds' ratios = %s" % ("%.3g" % median(paired) if paired else "n/a"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
