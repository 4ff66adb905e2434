"""TLS benchmark: ours (grace-demo-server with -tls-cert/-tls-key) beside
nginx (Debian's nginx-light), same certificate, same machine, same run.

Three figures, each the median of --rounds rounds, ours and nginx
alternating round by round:

  h1 keep-alive   wrk -t2 -c64 -d5s https://127.0.0.1:PORT/   (requests/s)
  h2 keep-alive   h2load -t2 -c64 -m10 -D5 https://127.0.0.1:PORT/
                  (requests/s, ALPN h2)
  new handshakes  wrk -t2 -c32 -d5s -H 'Connection: close' (every request
                  a new TCP connection and a full handshake: handshakes/s)

Both servers: 2 workers (ours -loops 2, nginx worker_processes 2), the same
P-256 ECDSA certificate, OpenSSL 3's default ciphers and TLS 1.2 and 1.3
(both negotiate TLS 1.3 with TLS_AES_256_GCM_SHA384; printed), no
server-side session cache (nginx ssl_session_cache off; ours has none),
session tickets on (both defaults; wrk and h2load do not resume anyway),
access logs off.  Ours serves "Hello, World!\\n" at /, nginx `return 200`
with the same body.

    /usr/bin/python3 bench/tls.py [--rounds 3] [--ours PATH]

Ours: --ours, else $GRACE_BENCH_TLS_OURS, else build-bench-tls/ (built here,
Release, target grace-demo-server), refused when built with sanitizers.
"""

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib  # noqa: E402
from benchlib import log, median, ratio, wait_port  # noqa: E402

NGINX_CONF = """daemon off;
master_process on;
worker_processes 2;
worker_rlimit_nofile 20000;
pid {d}/nginx.pid;
lock_file {d}/nginx.lock;
error_log {d}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    server_tokens off;
    client_body_temp_path {d}/tmp;
    proxy_temp_path {d}/tmp;
    fastcgi_temp_path {d}/tmp;
    uwsgi_temp_path {d}/tmp;
    scgi_temp_path {d}/tmp;
    keepalive_timeout 120s;
    keepalive_requests 1000000000;
    server {{
        listen 127.0.0.1:{port} ssl http2;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_session_cache off;
        location / {{
            default_type text/plain;
            return 200 "Hello, World!\\n";
        }}
    }}
}}
"""


def build_ours():
    repo = benchlib.REPO_DIR
    bdir = repo / "build-bench-tls"
    out = benchlib.OUT_DIR / "logs"
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "tls-cmake.log", "w") as f:
        subprocess.run(["cmake", "-S", str(repo), "-B", str(bdir),
                        "-DCMAKE_BUILD_TYPE=Release", "-DBUILD_TESTING=OFF",
                        "-DGRACE_SANITIZE=OFF", "-DGRACE_TSAN=OFF"],
                       stdout=f, stderr=f, check=True)
        subprocess.run(["cmake", "--build", str(bdir), "-j2", "--target",
                        "grace-demo-server"], stdout=f, stderr=f, check=True)
    return str(bdir / "examples" / "grace-demo-server")


def free_port():
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def start_ours(path, cert, key):
    port, gport = free_port(), free_port()
    proc = subprocess.Popen(
        [path, "-addr", f"127.0.0.1:{port}", "-grpc-addr", f"127.0.0.1:{gport}",
         "-loops", "2", "-tls-cert", cert, "-tls-key", key],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port, proc)
    return proc, port


def start_nginx(d, cert, key):
    port = free_port()
    nd = Path(d) / f"nginx-{port}"
    (nd / "tmp").mkdir(parents=True)
    conf = nd / "nginx.conf"
    conf.write_text(NGINX_CONF.format(d=nd, port=port, cert=cert, key=key))
    proc = subprocess.Popen([benchlib.NGINX, "-c", str(conf), "-p", str(nd)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port, proc)
    return proc, port


def stop(proc, sig=15):
    proc.send_signal(sig)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def wrk(port, close=False):
    args = ["wrk", "-t2", "-c32" if close else "-c64", "-d5s"]
    if close:
        args += ["-H", "Connection: close"]
    r = subprocess.run(args + [f"https://127.0.0.1:{port}/"],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    m = re.search(r"Requests/sec:\s+([\d.]+)", r.stdout)
    errs = re.search(r"Non-2xx or 3xx responses: (\d+)|Socket errors: (.*)", r.stdout)
    if m is None:
        raise RuntimeError("wrk: " + r.stdout)
    if errs and not close:
        log("wrk reported: " + errs.group(0))
    return float(m.group(1))


def h2load(port):
    r = subprocess.run(["h2load", "-t2", "-c64", "-m10", "-D5",
                        f"https://127.0.0.1:{port}/"],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    m = re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", r.stdout)
    proto = re.search(r"Application protocol: (\S+)", r.stdout)
    if m is None or proto is None or proto.group(1) != "h2":
        raise RuntimeError("h2load: " + r.stdout)
    failed = re.search(r"(\d+) failed", r.stdout)
    if failed and int(failed.group(1)) > 0:
        log("h2load: " + failed.group(0))
    return float(m.group(1))


def negotiated(port):
    r = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}",
                        "-alpn", "h2"], input=b"", stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=10)
    m = re.search(rb"New, (\S+), Cipher is (\S+)", r.stdout)
    return m.group(1).decode() + " " + m.group(2).decode() if m else "?"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--ours", default=os.environ.get("GRACE_BENCH_TLS_OURS"))
    a = ap.parse_args()
    benchlib.raise_nofile()
    ours = a.ours or build_ours()
    if benchlib.is_sanitized(ours):
        raise SystemExit(f"{ours} is built with sanitizers: its figures mean nothing")
    d = tempfile.mkdtemp(prefix="grace-bench-tls-")
    cert, key = f"{d}/cert.pem", f"{d}/key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", key,
                    "-out", cert, "-days", "2", "-subj", "/CN=localhost"],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    tests = [("requests/s, HTTP/1.1 keep-alive, wrk -t2 -c64 -d5s", lambda p: wrk(p)),
             ("requests/s, HTTP/2 keep-alive, h2load -t2 -c64 -m10 -D5", h2load),
             ("new handshakes/s, wrk -t2 -c32 -d5s Connection: close",
              lambda p: wrk(p, close=True))]
    res = {(t, s): [] for t, _ in tests for s in ("ours", "nginx")}
    info = {}
    for rnd in range(a.rounds):
        for name in ("ours", "nginx"):
            proc, port = start_ours(ours, cert, key) if name == "ours" \
                else start_nginx(d, cert, key)
            try:
                info.setdefault(name, negotiated(port))
                for t, fn in tests:
                    v = fn(port)
                    res[(t, name)].append(v)
                    log(f"round {rnd + 1} {name}: {t}: {v:,.0f}")
            finally:
                stop(proc, 15 if name == "ours" else 3)  # nginx: SIGQUIT
    print(f"TLS, ours ({ours}) vs nginx ({benchlib.NGINX}), {a.rounds} rounds, medians")
    print(f"negotiated: ours {info.get('ours')}, nginx {info.get('nginx')}")
    print(f"{'':58} {'ours':>10} {'nginx':>10} {'ours/nginx':>10}")
    for t, _ in tests:
        o, n = median(res[(t, "ours")]), median(res[(t, "nginx")])
        print(f"{t:58} {o:10,.0f} {n:10,.0f} {ratio(o, n):>10}")


if __name__ == "__main__":
    main()
