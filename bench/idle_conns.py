#!/usr/bin/python3
"""Idle keep-alive connections: memory per connection and signal -> exit.

What: for each server (ours, Go net/http, nginx), ROUNDS times (default 5,
interleaved ours/go/nginx), start it, open CONNS (default 5,000) keep-alive
connections that each do one "GET /" and then stay idle, and measure:

  memory per connection = (RSS with the idle connections - RSS before) / CONNS
      RSS is VmRSS from /proc/<pid>/status, read 0.5 s after the last
      connection went idle; "before" is read after one warm-up request on a
      connection that was then closed. For nginx it is the sum over the
      master and its workers (the workers hold the connections; the master's
      share does not change). It counts user-space memory only: the kernel's
      socket buffers are not in RSS, for any of the three.
  signal -> exit = from just before kill() (SIGTERM for ours and Go, SIGQUIT,
      the graceful shutdown, for nginx) until the server's pidfd becomes
      readable; this process waits on the pidfd alone, so reading the 5,000
      sockets does not delay that measurement.

Then every connection must have seen EOF (a FIN, not a reset, not still
open) and the server must have exited with status 0; anything else is
counted as a failure. (On the wire, a FIN sent by the server's close and one
sent by the kernel when the process exits look the same; the exit status 0
of a graceful shutdown is what says the server closed them itself.)

The connections are opened with non-blocking sockets, at most 256 connecting
at a time so the listen backlog never overflows; RLIMIT_NOFILE's soft limit
is raised to the hard one first (the servers inherit it).

Usage: /usr/bin/python3 bench/idle_conns.py [--conns 5000] [--rounds 3] [--servers ours,go,nginx]
"""

import argparse
import errno
import os
import select
import selectors
import socket
import sys
import time

import benchlib
from benchlib import log, median, ratio

PORTS = {"ours": 18301, "go": 18302, "nginx": 18303}
REQUEST = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n"
WINDOW = 256


def response_done(buf):
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return False
    n = 0
    for line in buf[:end].split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        if k.strip().lower() == b"content-length":
            n = int(v)
    return len(buf) >= end + 4 + n


def open_idle(port, count, timeout=30.0):
    """Open `count` connections, one request each; return them once all are idle."""
    sel = selectors.DefaultSelector()
    socks = []
    bufs = {}
    pending = 0
    done = 0
    deadline = time.monotonic() + timeout
    try:
        while done < count:
            while pending < WINDOW and len(socks) < count:
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                s.setblocking(False)
                err = s.connect_ex(("127.0.0.1", port))
                if err not in (0, errno.EINPROGRESS):
                    s.close()
                    raise OSError(err, f"connect: {os.strerror(err)}")
                socks.append(s)
                bufs[s] = b""
                sel.register(s, selectors.EVENT_WRITE, "connect")
                pending += 1
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {done} of {count} connections idle after {timeout} s")
            for key, _ in sel.select(1.0):
                s = key.fileobj
                if key.data == "connect":
                    err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    if err:
                        raise OSError(err, f"connect: {os.strerror(err)}")
                    s.send(REQUEST)  # 32 bytes into an empty send buffer
                    sel.modify(s, selectors.EVENT_READ, "read")
                else:
                    data = s.recv(4096)
                    if not data:
                        raise RuntimeError("server closed a connection before answering")
                    bufs[s] += data
                    if response_done(bufs[s]):
                        if not bufs[s].startswith(b"HTTP/1.1 200"):
                            raise RuntimeError(f"unexpected answer {bufs[s][:40]!r}")
                        sel.unregister(s)
                        pending -= 1
                        done += 1
        return socks
    except BaseException:
        for s in socks:
            s.close()
        raise
    finally:
        sel.close()


def check_closed(socks):
    """Count (eof, reset, still_open_or_data) over the sockets, after the exit."""
    eof = rst = other = 0
    for s in socks:
        try:
            data = s.recv(4096)
            if data:
                other += 1
            else:
                eof += 1
        except ConnectionResetError:
            rst += 1
        except BlockingIOError:
            other += 1
    return eof, rst, other


def one_round(srv, conns):
    srv.start()
    socks = []
    pidfd = os.pidfd_open(srv.pid)
    try:
        with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
            s.sendall(REQUEST)
            buf = b""
            while not response_done(buf):
                buf += s.recv(4096)
        time.sleep(0.2)
        before = srv.rss_kib()
        socks = open_idle(srv.port, conns)
        time.sleep(0.5)
        after = srv.rss_kib()
        per_conn = (after - before) * 1024 / conns

        t_sig = time.monotonic()
        os.kill(srv.pid, srv.stop_signal)
        p = select.poll()
        p.register(pidfd, select.POLLIN)
        if not p.poll(15000):
            srv.kill()
            return per_conn, None, "did not exit within 15 s"
        t_exit = time.monotonic()
        _, wstatus = os.waitpid(srv.pid, 0)
        code = os.waitstatus_to_exitcode(wstatus)
        srv.proc.returncode = code
        eof, rst, other = check_closed(socks)
        fail = None
        if code != 0 or eof != conns:
            fail = f"exit status {code}, EOF on {eof}/{conns}, reset {rst}, open/data {other}"
        return per_conn, t_exit - t_sig, fail
    finally:
        for s in socks:
            s.close()
        os.close(pidfd)
        srv.kill()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--conns", type=int, default=5000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--servers", default="ours,go,nginx")
    args = ap.parse_args()
    hard = benchlib.raise_nofile()
    if args.conns + 100 > hard:
        ap.error(f"--conns {args.conns} needs more than the fd limit {hard}")
    names, ours = benchlib.select_servers(args.servers)
    servers = {n: benchlib.Server(n, PORTS[n], ours_path=ours) for n in names}
    mem = {n: [] for n in names}
    exits = {n: [] for n in names}
    fails = {n: [] for n in names}
    for i in range(args.rounds):
        line = []
        for n in names:
            per_conn, exit_s, fail = one_round(servers[n], args.conns)
            mem[n].append(per_conn)
            if exit_s is not None:
                exits[n].append(exit_s)
            if fail:
                fails[n].append(fail)
            line.append(f"{n} {per_conn:.0f} B/conn "
                        + (f"{exit_s * 1e3:.1f} ms" if exit_s is not None else "no exit")
                        + (f" FAIL ({fail})" if fail else ""))
        log(f"round {i + 1}/{args.rounds}: " + "  ".join(line))

    out = [f"idle keep-alive connections: {args.conns} per server, {args.rounds} rounds, medians"]
    out.append(f"{'server':8} {'bytes/conn':>10} {'signal->exit':>13} {'failed rounds':>14}")
    mm = {n: median(mem[n]) for n in names}
    em = {n: median(exits[n]) for n in names}
    for n in names:
        out.append(f"{n:8} {mm[n]:10.0f} {em[n] * 1e3:10.1f} ms {len(fails[n]):14d}")
    if "ours" in names:
        for peer in ("go", "nginx"):
            if peer in names:
                out.append(f"ratio ours/{peer}: memory/conn {ratio(mm['ours'], mm[peer])}, "
                           f"signal->exit {ratio(em['ours'], em[peer])} (lower is better)")
    elif "go" in names and "nginx" in names:
        out.append(f"ratio go/nginx: memory/conn {ratio(mm['go'], mm['nginx'])}, "
                   f"signal->exit {ratio(em['go'], em['nginx'])} (ours not built)")
    print("\n".join(out), flush=True)
    return 1 if any(fails[n] for n in names) else 0


if __name__ == "__main__":
    sys.exit(main())
