"""Helpers of bench/haproxy_drain.sh (HAProxy in front of two instances, one
of them shut down under load). Standard library only; run with
/usr/bin/python3.

    drainlib.py conf OUT FE_PORT STATS_PORT A_PORT B_PORT CHECK_PATH RETRY
        write OUT from haproxy.cfg.in; RETRY is none, conn or empty (below)
    drainlib.py wait-up STATS_PORT
        wait (up to 10 s) until HAProxy's stats say both servers are UP
    drainlib.py probe PORT SECONDS OUT.json
        the per-request client (below); writes its counts to OUT.json
    drainlib.py round DIR RESULTS.jsonl
        read one round's files in DIR, append its figures to RESULTS.jsonl
        as one JSON line, print them in a line to stderr
    drainlib.py summary RESULTS.jsonl
        print the table of all rounds; exit 1 if a scenario with a target
        missed it
"""

import json
import re
import socket
import sys
import threading
import time
import urllib.request
from datetime import datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent

# The backend's retry policy, by name.
#   none:  HAProxy retries nothing: every failure reaches the client.
#   conn:  retry-on conn-failure (HAProxy's default) with "option redispatch
#          1", so a refused connection is retried at once on the other
#          server: what an operator who knows HAProxy sets.
#   empty: as conn, plus empty-response: a request sent on a reused
#          connection that the server closes without answering is replayed
#          (HAProxy then buffers every request; only safe for idempotent
#          requests).
RETRY = {
    "none": ["retry-on none"],
    "conn": ["retries 3", "retry-on conn-failure", "option redispatch 1"],
    "empty": ["retries 3", "retry-on conn-failure empty-response", "option redispatch 1"],
}

BODY = b"Hello, World!\n"


def conf(out, fe, stats, a, b, check, retry):
    text = (HERE / "haproxy.cfg.in").read_text()
    subst = {"@FE_PORT@": fe, "@STATS_PORT@": stats, "@A_PORT@": a, "@B_PORT@": b,
             "@CHECK_PATH@": check, "@RETRY@": "\n    ".join(RETRY[retry])}
    for k, v in subst.items():
        text = text.replace(k, v)
    Path(out).write_text(text)


def stats_csv(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats;csv", timeout=2) as r:
        lines = r.read().decode().splitlines()
    head = lines[0].lstrip("# ").split(",")
    rows = {}
    for line in lines[1:]:
        if line:
            row = dict(zip(head, line.split(",")))
            rows[(row["pxname"], row["svname"])] = row
    return rows


def wait_up(port):
    deadline = time.monotonic() + 10
    last = None
    while time.monotonic() < deadline:
        try:
            rows = stats_csv(port)
            last = [rows[("be", s)]["status"] for s in ("a", "b")]
            if last == ["UP", "UP"]:
                return 0
        except (OSError, KeyError):
            pass
        time.sleep(0.05)
    print(f"HAProxy did not see both servers UP within 10 s (status {last})", file=sys.stderr)
    return 1


def probe(port, seconds, out):
    """Two keep-alive connections, each: GET /, read the whole answer, wait
    1 ms, again. A request fails unless it gets 200 with the exact body; a
    failure is counted by kind (status code or exception) with its wall-clock
    time, and the connection is opened anew (as wrk does). Paced so that it
    costs little CPU beside wrk; its counts are exact per request."""
    end = time.time() + seconds
    lock = threading.Lock()
    res = {"ok": 0, "failed": 0, "kinds": {}, "fail_times": []}

    def fail(kind, t):
        with lock:
            res["failed"] += 1
            res["kinds"][kind] = res["kinds"].get(kind, 0) + 1
            res["fail_times"].append(t)

    def worker():
        sock = None
        buf = b""
        while time.time() < end:
            t = time.time()
            try:
                if sock is None:
                    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
                    buf = b""
                sock.sendall(b"GET / HTTP/1.1\r\nHost: haproxy\r\n\r\n")
                status, body, close = read_response(sock, buf)
                buf = b""
                if status == 200 and body == BODY:
                    with lock:
                        res["ok"] += 1
                else:
                    fail(str(status), t)
                if close:
                    sock.close()
                    sock = None
            except Closed:
                fail("closed without a response", t)
                if sock is not None:
                    sock.close()
                sock = None
            except (OSError, ValueError) as e:
                fail(type(e).__name__, t)
                if sock is not None:
                    sock.close()
                sock = None
            time.sleep(0.001)
        if sock is not None:
            sock.close()

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    Path(out).write_text(json.dumps(res))


class Closed(ValueError):
    """The connection ended before a whole response."""


def read_response(sock, buf):
    """One HTTP/1.1 response with Content-Length (HAProxy and both servers
    send one for these answers). Returns (status, body, connection_close)."""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise Closed("closed before the response headers" if not buf else "closed in headers")
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    length = None
    close = False
    for h in lines[1:]:
        name, _, value = h.partition(":")
        name = name.strip().lower()
        if name == "content-length":
            length = int(value)
        elif name == "connection" and "close" in value.lower():
            close = True
    if length is None:
        raise ValueError("no Content-Length")
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise Closed("closed in the body")
        rest += chunk
    return status, rest[:length], close


def iso_time(s):
    return datetime.fromisoformat(s).timestamp()


def parse_wrk(text):
    r = {"wrk_requests": 0, "wrk_non2xx": 0, "wrk_sock": 0, "wrk_sock_detail": ""}
    m = re.search(r"^\s*(\d+) requests in", text, re.M)
    if m:
        r["wrk_requests"] = int(m.group(1))
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    if m:
        r["wrk_non2xx"] = int(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    if m:
        c, rd, w, to = (int(x) for x in m.groups())
        r["wrk_sock"] = c + rd + w + to
        r["wrk_sock_detail"] = f"connect {c}, read {rd}, write {w}, timeout {to}"
    return r


# HAProxy's httplog line, after the ISO timestamp of "log ... format iso":
# ... fe be/a Tq/Tw/Tc/Tr/Ta status bytes - - TERM act/fe/be/srv/retries sq/bq "req"
LOG_RE = re.compile(r"^(\S+) \S+ \[[^\]]+\] fe (\S+) \S+ (-?\d+) \S+ \S+ \S+ (\S{4}) "
                    r"\d+/\d+/\d+/\d+/(\+?)(\d+) ")
DOWN_RE = re.compile(r"^(\S+) Server be/a is DOWN")


def parse_haproxy_log(text):
    """What HAProxy logged (only abnormal requests are): failures by status
    and termination state, requests it retried or redispatched and served,
    and when server a was marked DOWN."""
    r = {"hap_failed": {}, "hap_masked": 0, "down_at": None, "hap_fail_times": []}
    for line in text.splitlines():
        m = DOWN_RE.match(line)
        if m and r["down_at"] is None:
            r["down_at"] = iso_time(m.group(1))
            continue
        m = LOG_RE.match(line)
        if not m:
            continue
        t, srv, status, term, redisp, retries = m.groups()
        if srv == "fe/<NOSRV>" and term.startswith("CR"):
            # wrk's address check: a connection closed before any request.
            continue
        if status.startswith("2") and (redisp or int(retries) > 0):
            r["hap_masked"] += 1
            continue
        key = f"{status} {term}"
        r["hap_failed"][key] = r["hap_failed"].get(key, 0) + 1
        r["hap_fail_times"].append(iso_time(t))
    return r


def round_figures(d):
    d = Path(d)
    meta = json.loads((d / "meta.json").read_text())
    r = dict(meta)
    r.update(parse_wrk((d / "wrk.txt").read_text()))
    hl = parse_haproxy_log((d / "haproxy.log").read_text(errors="replace"))
    sig = meta["sigterm_at"]
    r["hap_failed"] = hl["hap_failed"]
    r["hap_masked"] = hl["hap_masked"]
    r["down_ms"] = None if hl["down_at"] is None else (hl["down_at"] - sig) * 1000
    pr = json.loads((d / "probe.json").read_text())
    r["probe_ok"] = pr["ok"]
    r["probe_failed"] = pr["failed"]
    r["probe_kinds"] = pr["kinds"]
    times = pr["fail_times"] + hl["hap_fail_times"]
    r["fail_window_ms"] = ([(min(times) - sig) * 1000, (max(times) - sig) * 1000]
                           if times else None)
    rows = {}
    with open(d / "stats.csv") as f:
        lines = f.read().splitlines()
    head = lines[0].lstrip("# ").split(",")
    for line in lines[1:]:
        if line:
            row = dict(zip(head, line.split(",")))
            rows[(row["pxname"], row["svname"])] = row
    num = lambda s: int(s) if s else 0  # noqa: E731
    r["served_a"] = num(rows[("be", "a")]["hrsp_2xx"])
    r["served_b"] = num(rows[("be", "b")]["hrsp_2xx"])
    be = rows[("be", "BACKEND")]
    r["be_econ"] = num(be["econ"])
    r["be_eresp"] = num(be["eresp"])
    r["be_wretr"] = num(be["wretr"])
    r["be_wredis"] = num(be["wredis"])
    r["fe_5xx"] = num(rows[("fe", "FRONTEND")]["hrsp_5xx"])
    r["wrk_failed"] = r["wrk_non2xx"] + r["wrk_sock"]
    return r


def median(xs):
    s = sorted(xs)
    n = len(s)
    if n == 0:
        return float("nan")
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2


def fmt_ms(v):
    return "n/a" if v is None else f"{v:.0f} ms"


def fmt_kinds(d):
    return ", ".join(f"{v}x {k}" for k, v in sorted(d.items(), key=lambda kv: -kv[1])) or "-"


def summary(path):
    p = Path(path)
    rounds = [json.loads(line) for line in p.read_text().splitlines()
              if line.strip()] if p.exists() else []
    if not rounds:
        print("haproxy drain: no round ran")
        return 1
    order = []
    by = {}
    for r in rounds:
        key = (r["scenario"], r["retry"])
        if key not in by:
            order.append(key)
            by[key] = []
        by[key].append(r)
    n = max(len(v) for v in by.values())
    print("haproxy drain: HAProxy (http, round robin, keep-alive, check every 200 ms, fall 1)"
          " in front of instances a and b;")
    print(f"wrk -t1 -c16 and a per-request probe on / through it, SIGTERM to a under load;"
          f" median of {n} rounds")
    print(f"{'scenario':<13} {'retry':<6} {'failed (wrk)':>12} {'requests':>9} {'probe':>9} "
          f"{'redisp.':>7} {'a served':>8} {'a DOWN':>7} {'a exit':>13}")
    bad = 0
    for key in order:
        name, retry = key
        rs = by[key]
        m = lambda k: median([x[k] for x in rs])  # noqa: E731
        down = [x["down_ms"] for x in rs if x["down_ms"] is not None]
        exits = "/".join(str(e) for e in sorted({x["a_status"] for x in rs}))
        print(f"{name:<13} {retry:<6} {m('wrk_failed'):>12.0f} {m('wrk_requests'):>9.0f} "
              f"{m('probe_failed'):>3.0f}/{m('probe_ok') + m('probe_failed'):<5.0f} "
              f"{m('be_wredis'):>7.0f} {m('served_a'):>8.0f} "
              f"{fmt_ms(median(down) if down else None):>7} "
              f"{exits:>3} {m('a_exit_ms'):>6.0f} ms")
        per = ", ".join(f"{x['wrk_failed']}+{x['probe_failed']}" for x in rs)
        kinds = {}
        pk = {}
        for x in rs:
            for k, v in x["hap_failed"].items():
                kinds[k] = kinds.get(k, 0) + v
            for k, v in x["probe_kinds"].items():
                pk[k] = pk.get(k, 0) + v
        reads = sum(x["be_eresp"] for x in rs)
        windows = [x["fail_window_ms"] for x in rs if x["fail_window_ms"]]
        win = (f"; failures between +{min(w[0] for w in windows):.0f} and "
               f"+{max(w[1] for w in windows):.0f} ms after SIGTERM") if windows else ""
        print(f"    rounds (wrk+probe failed): {per}; HAProxy logged {fmt_kinds(kinds)}; probe saw "
              f"{fmt_kinds(pk)}; a closed a reused connection without answering (eresp): {reads}{win}")
        if rs[0].get("target_zero"):
            fails = sum(x["wrk_failed"] + x["probe_failed"] for x in rs)
            exit_bad = any(x["a_status"] != 0 for x in rs)
            verdict = "MET" if fails == 0 and not exit_bad else "MISSED"
            print(f"    target: 0 failed requests and exit 0 in all {len(rs)} rounds: {verdict}")
            if verdict != "MET":
                bad = 1
    print("failed (wrk) = wrk's 'Non-2xx or 3xx responses' + 'Socket errors'; requests = wrk's;"
          " probe = failed/sent by the probe;")
    print("redisp. = requests HAProxy moved to b after a refused connection or an empty response"
          " (wredis), i.e. masked;")
    print("eresp: HAProxy replays those under 'empty'; otherwise it closes the client's connection"
          " without a response (wrk: read error) and logs nothing;")
    print("a DOWN = SIGTERM -> HAProxy marks a DOWN; a exit = a's exit status and SIGTERM -> exit.")
    return bad


def main(argv):
    if len(argv) == 9 and argv[1] == "conf":
        conf(*argv[2:])
        return 0
    if len(argv) == 3 and argv[1] == "wait-up":
        return wait_up(int(argv[2]))
    if len(argv) == 5 and argv[1] == "probe":
        probe(int(argv[2]), float(argv[3]), argv[4])
        return 0
    if len(argv) == 4 and argv[1] == "round":
        x = round_figures(argv[2])
        with open(argv[3], "a") as f:
            f.write(json.dumps(x) + "\n")
        print(f"round {x['round']} {x['scenario']:<12} retry={x['retry']:<5} "
              f"wrk failed {x['wrk_failed']:>4} of {x['wrk_requests']:>6} ({x['wrk_non2xx']} non-2xx; "
              f"{x['wrk_sock_detail'] or 'no socket errors'}), probe failed {x['probe_failed']:>3} of "
              f"{x['probe_ok'] + x['probe_failed']}, redispatched {x['be_wredis']}, eresp {x['be_eresp']}, "
              f"a served {x['served_a']}, a DOWN at +{fmt_ms(x['down_ms'])}, "
              f"a exit {x['a_status']} at +{x['a_exit_ms']:.0f} ms", file=sys.stderr)
        return 0
    if len(argv) == 3 and argv[1] == "summary":
        return summary(argv[2])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
