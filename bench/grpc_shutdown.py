#!/usr/bin/python3
"""gRPC graceful stop: ours (examples/greeter-server) against grpc-go's
GracefulStop and gRPC C-core's Server::Shutdown (bench/grpc/), in four
scenarios, each server started afresh for every run and the runs
interleaved (ours, go, cpp, ours, ...). Every server gets SIGTERM.

(a) lag: one HTTP/2 connection, a first SayHello{"warm"} (so the connection
    is surely accepted and served), then SayHello{"world", duration 300ms};
    SIGTERM 20 ms after it is sent. The client behaves as gRPC clients do: it
    answers SETTINGS and PINGs (so a two-phase GOAWAY completes) and hangs up
    once it has seen a GOAWAY and has no call open. One epoll set holds the
    socket and a pidfd of the server: t_last = wake-up that delivered the end
    of the slow call (its trailers), t_exit = pidfd readable. lag = t_exit -
    t_last, median and p90 over RUNS runs (default 10). A run fails without
    the whole reply ("Hello world", grpc-status 0), exit status 0 and an exit
    within 15 s. Target: ours' median < 1 ms.
(b) a client that keeps its connection open after its reply: as (a), but the
    client never hangs up by itself until HOLD (2 s) after the reply. Reports
    reply -> exit and who closed the connection: the server (right after the
    final GOAWAY once it has no streams: ours, C-core) or the client at HOLD
    (grpc-go 1.33 waits for the client when the call was in flight at the
    signal). KEEP runs (default 3). A run fails without the whole reply or
    without exit status 0 within 15 s. Target: ours' reply -> exit < 1 ms.
(c) a handler that never returns: SayHello{duration 1h}, each server run
    with -shutdown-timeout 1s (ours: graceful stop escalates at the deadline;
    grpc-go peer: Stop() at the deadline; C++ peer: Shutdown(deadline)),
    SIGTERM 50 ms after the call. Reports signal -> exit (none within STUCK_BOUND,
    5 s, is reported and the server killed: C-core cancels the call at the
    deadline but its process still waits for the handler thread), the exit
    status, and what the client saw of the stuck call. STUCK runs (default 2).
    Target: ours exits at the deadline (1 s + a few ms).
(d) an h2load run that spans a graceful stop: h2load -n 1000000 -c 16 -m 32
    -t 2 (as the throughput benchmark), SIGTERM 0.5 s after it starts.
    accepted = the server's "Received:" log lines (handlers that ran);
    replied = h2load's DATA bytes / 18 (calls that got their whole reply);
    h2load's own counts are shown: started, 2xx (h2load's "succeeded": it
    counts a 200 with an error grpc-status too), 2xx no reply = 2xx - replied
    (calls refused with a status, e.g. C-core's UNAVAILABLE), failed.
    lost = accepted - replied must be 0 for every server, else the run fails.
    SPAN runs (default 2).

Ports: ours 19201, grpc-go 19202, C++ 19203 (each server is started afresh
on its port for every run). Logs: bench/out/logs/grpc-<scenario>-<name>.log,
h2load outputs: bench/out/h2load/span-<name>-<run>.txt.

Usage: /usr/bin/python3 bench/grpc_shutdown.py [--runs 10] [--keep 3] [--stuck 2]
           [--span 2] [--servers ours,go,cpp] [--only a,b,c,d]
Needs python3-hpack (the client's header decoding) and nghttp2-client (h2load).
Total time: about 40 s with the defaults.
"""

import argparse
import importlib.util
import os
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "grpc"))

import benchlib  # noqa: E402
import grpclib  # noqa: E402
import payload  # noqa: E402
from benchlib import OUT_DIR, log, median, percentile, ratio  # noqa: E402

PORTS = {"ours": 19201, "go": 19202, "cpp": 19203}
REPLY_BYTES = len(payload.frame(payload.hello_reply("Hello world")))  # 18
HOLD = 2.0
STUCK_BOUND = 5.0


def rpc_run(srv, duration, signal_after, mode, bound=15.0):
    """One connection, a warm call, a slow call, SIGTERM during the slow call.

    mode "drain": hang up once a GOAWAY came and no call is open (a gRPC
    client's behaviour); "hold": hang up HOLD seconds after the slow reply.
    Returns a dict of monotonic times (sig, last, exit, eof, hangup), the
    exit status (None: no exit within bound, killed), the slow Stream and a
    failure text for the set-up steps.
    """
    srv.start()
    pidfd = os.pidfd_open(srv.pid)
    sel = selectors.DefaultSelector()
    conn = None
    r = {"sig": None, "last": None, "exit": None, "eof": None, "hangup": None,
         "code": None, "slow": None, "fail": None, "goaways": []}
    try:
        conn = grpclib.H2Client(srv.port)
        warm = conn.call("warm")
        if not conn.wait(lambda: warm.done) or not warm.ok():
            r["fail"] = f"first call: {warm.describe()}"
            return r
        slow = conn.call("world", duration)
        r["slow"] = slow
        time.sleep(signal_after)
        r["sig"] = time.monotonic()
        os.kill(srv.pid, srv.stop_signal)
        conn.sock.setblocking(False)
        sel.register(conn.sock, selectors.EVENT_READ, "sock")
        sel.register(pidfd, selectors.EVENT_READ, "pid")
        deadline = r["sig"] + bound
        while not (r["exit"] is not None and (conn.closed or conn.eof)):
            now = time.monotonic()
            if now >= deadline:
                break
            timeout = deadline - now
            if mode == "hold" and r["last"] is not None and not conn.closed and not conn.eof:
                timeout = min(timeout, max(0.0, r["last"] + HOLD - now))
            events = sel.select(timeout)
            now = time.monotonic()
            for key, _ in events:
                if key.data == "pid":
                    r["exit"] = now
                    sel.unregister(pidfd)
                    continue
                for ev in conn.on_readable():
                    if ev[0] == "end" and ev[1] is slow:
                        r["last"] = now
                    elif ev[0] == "eof":
                        r["eof"] = now
                        sel.unregister(conn.sock)
            if conn.closed or conn.eof:
                continue
            if (mode == "drain" and conn.goaways and not conn.open_streams()) or (
                    mode == "hold" and r["last"] is not None and now >= r["last"] + HOLD):
                sel.unregister(conn.sock)
                conn.close()
                r["hangup"] = now
        r["goaways"] = list(conn.goaways)
        if r["exit"] is None:
            srv.kill()
            return r
        _, wstatus = os.waitpid(srv.pid, 0)
        r["code"] = os.waitstatus_to_exitcode(wstatus)
        srv.proc.returncode = r["code"]
        return r
    finally:
        sel.close()
        if conn:
            conn.close()
        os.close(pidfd)
        srv.kill()


def ms(x):
    return "-" if x is None or x != x else f"{x * 1e3:.3f} ms"


def scenario_a(names, servers, args):
    lags = {n: [] for n in names}
    drains = {n: [] for n in names}
    fails = {n: [] for n in names}
    for i in range(args.runs):
        line = []
        for n in names:
            r = rpc_run(servers[n], "300ms", 0.020, "drain")
            fail = r["fail"]
            if not fail:
                if r["exit"] is None:
                    fail = "no exit within 15 s"
                elif not r["slow"].ok():
                    fail = f"slow call: {r['slow'].describe()}"
                elif r["code"] != 0:
                    fail = f"exit status {r['code']}"
            if r["exit"] is not None:
                drains[n].append(r["exit"] - r["sig"])
            if fail:
                fails[n].append(fail)
                line.append(f"{n} FAIL ({fail})")
            else:
                lags[n].append(r["exit"] - r["last"])
                line.append(f"{n} {ms(lags[n][-1])}")
            if i == 0:
                log(f"  {n}: GOAWAYs seen (last-stream-id, code): {r['goaways']}")
        log(f"(a) run {i + 1}/{args.runs}: " + "  ".join(line))
    out = [f"(a) graceful-stop lag: end of the last reply -> process exit, {args.runs} runs, "
           "one 300 ms call in flight, client hangs up after GOAWAY",
           f"{'server':8} {'ok':>4} {'fail':>4} {'lag median':>13} {'lag p90':>13} {'signal->exit med':>17}"]
    med = {}
    for n in names:
        med[n] = median(lags[n])
        out.append(f"{n:8} {len(lags[n]):4d} {len(fails[n]):4d} {ms(med[n]):>13} "
                   f"{ms(percentile(lags[n], 90)):>13} {ms(median(drains[n])):>17}")
    out += ratios(names, med, "lag median", "lower is better; target: ours < 1 ms")
    return out, any(fails[n] for n in names)


def scenario_b(names, servers, args):
    after = {n: [] for n in names}
    closer = {n: [] for n in names}
    fails = {n: [] for n in names}
    for i in range(args.keep):
        line = []
        for n in names:
            r = rpc_run(servers[n], "300ms", 0.020, "hold")
            fail = r["fail"]
            if not fail:
                if r["exit"] is None:
                    fail = "no exit within 15 s"
                elif not r["slow"].ok():
                    fail = f"slow call: {r['slow'].describe()}"
                elif r["code"] != 0:
                    fail = f"exit status {r['code']}"
            if fail:
                fails[n].append(fail)
                line.append(f"{n} FAIL ({fail})")
                continue
            by = "client" if r["hangup"] is not None and (r["eof"] is None or r["hangup"] < r["eof"]) \
                else "server"
            closer[n].append(by)
            after[n].append(r["exit"] - r["last"])
            line.append(f"{n} {ms(after[n][-1])} (closed by {by})")
        log(f"(b) run {i + 1}/{args.keep}: " + "  ".join(line))
    out = [f"(b) a client that keeps its connection open after its reply (hangs up {HOLD:g} s after it), "
           f"{args.keep} runs",
           f"{'server':8} {'ok':>4} {'fail':>4} {'reply->exit med':>16} {'closed by server':>17}"]
    med = {}
    for n in names:
        med[n] = median(after[n])
        out.append(f"{n:8} {len(after[n]):4d} {len(fails[n]):4d} {ms(med[n]):>16} "
                   f"{closer[n].count('server'):>13d}/{len(closer[n])}")
    out += ratios(names, med, "reply->exit median", "lower is better; target: ours < 1 ms")
    return out, any(fails[n] for n in names)


def scenario_c(names, paths, args):
    exits = {n: [] for n in names}
    noexit = {n: 0 for n in names}
    codes = {n: [] for n in names}
    seen = {n: [] for n in names}
    fails = {n: [] for n in names}
    servers = {n: grpclib.GreeterServer(n, PORTS[n], paths[n], "stuck", shutdown_timeout="1s")
               for n in names}
    for i in range(args.stuck):
        line = []
        for n in names:
            r = rpc_run(servers[n], "1h", 0.050, "drain", bound=STUCK_BOUND)
            if r["fail"]:
                fails[n].append(r["fail"])
                line.append(f"{n} FAIL ({r['fail']})")
                continue
            st = r["slow"]
            what = st.describe() if st.done else (
                "connection closed, no status" if r["eof"] is not None else "nothing")
            seen[n].append(what)
            if r["exit"] is None:
                noexit[n] += 1
                line.append(f"{n} no exit in {STUCK_BOUND:g} s (killed); call: {what}")
            else:
                exits[n].append(r["exit"] - r["sig"])
                codes[n].append(r["code"])
                line.append(f"{n} exit {r['code']} after {ms(exits[n][-1])}; call: {what}")
        log(f"(c) run {i + 1}/{args.stuck}: " + "  ".join(line))
    out = [f"(c) a handler that never returns (duration 1h), -shutdown-timeout 1s, {args.stuck} runs",
           f"{'server':8} {'signal->exit med':>17} {'no exit in ' + format(STUCK_BOUND, 'g') + ' s':>15} "
           f"{'exit status':>12}  the stuck call, as the client saw it"]
    med = {}
    for n in names:
        med[n] = median(exits[n])
        cs = ",".join(str(c) for c in sorted(set(codes[n]))) or "-"
        whats = "; ".join(sorted(set(seen[n]))) or "-"
        out.append(f"{n:8} {ms(med[n]):>17} {noexit[n]:>13d}/{args.stuck} {cs:>12}  {whats}")
    out.append("target: ours exits at the deadline (1 s + a few ms)")
    return out, any(fails[n] for n in names)


def h2load_counts(text):
    c = {}
    for line in text.splitlines():
        w = line.split()
        if line.startswith("requests:"):
            c.update(started=int(w[3]), done=int(w[5]), succeeded=int(w[7]), failed=int(w[9]),
                     errored=int(w[11]), timeout=int(w[13]))
        elif line.startswith("status codes:"):
            c["2xx"] = int(w[2])
        elif line.startswith("traffic:"):
            i = w.index("data")
            c["data"] = int(w[i - 1].strip("()"))
    return c


def span_run(srv, n_req, signal_after, h2out):
    """h2load -n n_req ... started, SIGTERM signal_after later; returns a dict."""
    srv.start()
    pidfd = os.pidfd_open(srv.pid)
    pl = OUT_DIR / "grpc" / "hello-world.bin"
    pl.write_bytes(payload.frame(payload.hello_request("world")))
    r = {"exit": None, "code": None}
    h = None
    try:
        with open(h2out, "wb") as f:
            h = subprocess.Popen(
                ["h2load", "-n", str(n_req), "-c", "16", "-m", "32", "-t", "2",
                 "-H", "content-type: application/grpc", "-H", "te: trailers", "-d", str(pl),
                 f"http://127.0.0.1:{srv.port}/Greeter/SayHello"],
                stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
        time.sleep(signal_after)
        t_sig = time.monotonic()
        os.kill(srv.pid, srv.stop_signal)
        sel = selectors.DefaultSelector()
        sel.register(pidfd, selectors.EVENT_READ)
        if sel.select(15):
            r["exit"] = time.monotonic() - t_sig
            _, wstatus = os.waitpid(srv.pid, 0)
            r["code"] = os.waitstatus_to_exitcode(wstatus)
            srv.proc.returncode = r["code"]
        sel.close()
        try:
            h.wait(30)
        except subprocess.TimeoutExpired:
            os.kill(h.pid, signal.SIGKILL)
            h.wait()
        h = None
        r.update(h2load_counts(Path(h2out).read_text(errors="replace")))
        r["accepted"] = srv.received()
        return r
    finally:
        if h is not None and h.poll() is None:
            os.kill(h.pid, signal.SIGKILL)
            h.wait()
        os.close(pidfd)
        srv.kill()


def scenario_d(names, paths, args):
    servers = {n: grpclib.GreeterServer(n, PORTS[n], paths[n], "span") for n in names}
    rows = {n: [] for n in names}
    bad = False
    (OUT_DIR / "h2load").mkdir(parents=True, exist_ok=True)
    for i in range(args.span):
        line = []
        for n in names:
            r = span_run(servers[n], 1000000, 0.5, OUT_DIR / "h2load" / f"span-{n}-{i + 1}.txt")
            if "data" not in r:
                bad = True
                line.append(f"{n} FAIL (no h2load result)")
                continue
            r["replied"] = r["data"] // REPLY_BYTES
            r["lost"] = r["accepted"] - r["replied"]
            ok = r["lost"] == 0 and r["data"] % REPLY_BYTES == 0 and r["code"] == 0
            bad |= not ok
            rows[n].append(r)
            line.append(f"{n} accepted {r['accepted']} replied {r['replied']} lost {r['lost']} "
                        f"exit {r['code']} after {ms(r['exit'])}" + ("" if ok else " FAIL"))
        log(f"(d) run {i + 1}/{args.span}: " + "  ".join(line))
    out = [f"(d) h2load -n 1000000 -c 16 -m 32 -t 2 spanning a graceful stop (SIGTERM at 0.5 s), "
           f"{args.span} runs; per run",
           f"{'server':8} {'accepted':>9} {'replied':>9} {'lost':>5} {'h2load: started':>16} "
           f"{'2xx':>8} {'2xx no reply':>13} {'failed':>8} {'signal->exit':>13} {'exit':>5}"]
    for n in names:
        for r in rows[n]:
            out.append(f"{n:8} {r['accepted']:9d} {r['replied']:9d} {r['lost']:5d} {r['started']:16d} "
                       f"{r['2xx']:8d} {r['2xx'] - r['replied']:13d} {r['failed']:8d} "
                       f"{ms(r['exit']):>13} {str(r['code']):>5}")
    out.append("2xx no reply: HTTP 200 with an error grpc-status and no message (refused calls); "
               "failed: h2load's count (never answered, incl. GOAWAY-refused and not sent)")
    out.append("target: lost = 0 (every call a server accepted gets its reply)")
    return out, bad


def ratios(names, med, what, note):
    out = []
    if "ours" in names:
        for peer in ("go", "cpp"):
            if peer in names:
                out.append(f"ratio {what} ours/{peer} = {ratio(med['ours'], med[peer])} ({note})")
    elif "go" in names and "cpp" in names:
        out.append(f"ratio {what} go/cpp = {ratio(med['go'], med['cpp'])} (ours not built)")
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=10, help="(a) runs per server")
    ap.add_argument("--keep", type=int, default=3, help="(b) runs per server")
    ap.add_argument("--stuck", type=int, default=2, help="(c) runs per server")
    ap.add_argument("--span", type=int, default=2, help="(d) runs per server")
    ap.add_argument("--servers", default="ours,go,cpp")
    ap.add_argument("--only", default="a,b,c,d", help="scenarios to run")
    args = ap.parse_args()
    only = set(args.only.split(","))
    if importlib.util.find_spec("hpack") is None:
        raise SystemExit("grpc_shutdown.py needs python3-hpack (apt-get install python3-hpack)")
    benchlib.raise_nofile()
    names, paths = grpclib.select_servers(args.servers)
    servers = {n: grpclib.GreeterServer(n, PORTS[n], paths[n], "lag") for n in names}
    bad = False
    first = True
    for key, fn, arg in (("a", scenario_a, servers), ("b", scenario_b, servers),
                         ("c", scenario_c, paths), ("d", scenario_d, paths)):
        if key not in only:
            continue
        out, failed = fn(names, arg, args)
        bad |= failed
        print(("" if first else "\n") + "\n".join(out), flush=True)
        first = False
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
