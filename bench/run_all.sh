#!/bin/bash
# Build what the HTTP benchmarks need, run the three of them, and write the
# summary to stdout and bench/out/summary.txt.
#
#   1. ours: a Release build of the repo in build-bench/ (only the source
#      dirs the HTTP server needs, only the http-sleep-server program, no
#      tests), when src/http exists. If it does not build, the benchmarks run
#      the peers alone and say that ours was skipped.
#   2. the Go peer: go build of bench/go/http-sleep-server (GO111MODULE=off,
#      GOCACHE under bench/out/go, no network).
#   3. bench/http_throughput.sh, bench/shutdown_lag.py, bench/idle_conns.py.
#
# Environment: GRACE_BENCH_SRC_DIRS (default: every src/ dir; http-sleep-server
# uses the upgrader, which is built on the group),
# GRACE_BENCH_SKIP_BUILD=1 to use build-bench/ as it is. Options after the
# script name are not taken; run the scripts one by one to change theirs.
# Total time: about 2 minutes on 2 cores, plus about 3.5 for the gRPC
# benchmarks (steps 4-6 below), 1.5 for the HAProxy drain (steps 7-8),
# 3.5 for the zero-downtime restarts (steps 9-10), 1 for embedding
# (steps 11-12) and 2 for TLS (tls.py).
set -uo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
out=${GRACE_BENCH_OUT:-$here/out}
mkdir -p "$out/logs"
summary=$out/summary.txt
status=0

if [[ ${GRACE_BENCH_SKIP_BUILD:-0} != 1 ]]; then
  if [[ -d $repo/src/http ]]; then
    echo "building ours (Release) in $repo/build-bench ..." >&2
    if cmake -S "$repo" -B "$repo/build-bench" -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF \
          -DGRACE_SANITIZE=OFF -DGRACE_TSAN=OFF \
          "-DGRACE_SRC_DIRS=${GRACE_BENCH_SRC_DIRS:-core;net;http;grpc;worker;group;upgrade;tcp}" \
          '-DGRACE_TEST_FILTER=^http-sleep-server$' >"$out/logs/cmake.log" 2>&1 &&
       cmake --build "$repo/build-bench" -j2 --target http-sleep-server >>"$out/logs/cmake.log" 2>&1; then
      echo "built $repo/build-bench/examples/http-sleep-server" >&2
    else
      echo "ours did not build (see $out/logs/cmake.log); the benchmarks run without it" >&2
      rm -f "$repo/build-bench/examples/http-sleep-server"
    fi
  else
    echo "src/http does not exist yet: no build of ours" >&2
  fi
fi
/usr/bin/python3 "$here/benchlib.py" build-go >/dev/null || { echo "go build failed" >&2; exit 1; }

{
  echo "grace HTTP benchmarks, $(date -u '+%Y-%m-%d %H:%M:%S UTC'), $(nproc) cores, $(uname -r)"
  echo "ours:  $(/usr/bin/python3 "$here/benchlib.py" find-ours 2>&1 || echo 'not built (skipped)')"
  echo "go:    $(go version)"
  echo "nginx: $(/usr/sbin/nginx -v 2>&1)"
  echo
} | tee "$summary"

for cmd in "$here/http_throughput.sh" "/usr/bin/python3 $here/shutdown_lag.py" \
           "/usr/bin/python3 $here/idle_conns.py"; do
  name=$(basename "${cmd##* }")
  echo "== $name" >&2
  # Per-round progress goes to stderr (and the log); the tables to stdout.
  $cmd 2> >(tee "$out/logs/$name.stderr" >&2) | tee -a "$summary"
  rc=${PIPESTATUS[0]}
  if [[ $rc != 0 ]]; then
    echo "($name exited with status $rc: see $out/logs/$name.stderr)" | tee -a "$summary"
    status=1
  fi
  echo | tee -a "$summary"
done

# --- gRPC benchmarks (bench/README.md, "gRPC benchmarks") ---
#   4. ours: a Release build of examples/greeter-server in build-bench-grpc/
#      (GRACE_SRC_DIRS from GRACE_BENCH_GRPC_SRC_DIRS, default
#      "core;net;http;grpc"; only the greeter-server target), when
#      examples/greeter-server.c exists; if it does not build, the scripts
#      take build-bench/ or build/ (they print which), else skip ours.
#   5. the peers: bench/grpc/go-greeter/build.sh (grpc-go, GOPATH mode,
#      offline) and bench/grpc/cpp-greeter/build.sh (gRPC C-core, g++).
#   6. bench/grpc_throughput.sh, bench/grpc_shutdown.py, bench/grpc_stream.sh
#      (which links its own server, bench/grpc/grace-stream, against the
#      libgrace.a of build-bench-grpc/, and builds its grpc-go server and
#      client). About 3.5 minutes.
if [[ ${GRACE_BENCH_SKIP_BUILD:-0} != 1 ]]; then
  if [[ -f $repo/examples/greeter-server.c && -d $repo/src/grpc ]]; then
    echo "building ours (Release) greeter-server in $repo/build-bench-grpc ..." >&2
    if cmake -S "$repo" -B "$repo/build-bench-grpc" -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF \
          -DGRACE_SANITIZE=OFF -DGRACE_TSAN=OFF \
          "-DGRACE_SRC_DIRS=${GRACE_BENCH_GRPC_SRC_DIRS:-core;net;http;grpc}" \
          '-DGRACE_TEST_FILTER=^greeter-server$' >"$out/logs/cmake-grpc.log" 2>&1 &&
       cmake --build "$repo/build-bench-grpc" -j2 --target greeter-server >>"$out/logs/cmake-grpc.log" 2>&1; then
      echo "built $repo/build-bench-grpc/examples/greeter-server" >&2
    else
      echo "ours' greeter-server did not build in Release (see $out/logs/cmake-grpc.log);" \
        "the gRPC benchmarks take build-bench/ or build/ if there is one" >&2
      rm -f "$repo/build-bench-grpc/examples/greeter-server"
    fi
  else
    echo "examples/greeter-server.c does not exist yet: no build of ours for gRPC" >&2
  fi
fi
grpc_peers=1
for b in build-go build-cpp; do
  if ! /usr/bin/python3 "$here/grpc/grpclib.py" "$b" >/dev/null 2>>"$out/logs/grpc-peers.log"; then
    echo "gRPC peer $b failed (see $out/logs/grpc-peers.log; Debian packages in bench/README.md)" | tee -a "$summary"
    grpc_peers=0
    status=1
  fi
done

if [[ $grpc_peers == 1 ]]; then
  {
    echo "grace gRPC benchmarks, $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
    echo "ours:    $(/usr/bin/python3 "$here/grpc/grpclib.py" find-ours 2>&1 || echo 'not built (skipped)')"
    echo "grpc-go: $(dpkg-query -W -f='${Version}' golang-google-grpc-dev 2>/dev/null) (Debian golang-google-grpc-dev), $(go version | cut -d' ' -f3)"
    echo "C-core:  $(pkg-config --modversion grpc++ 2>/dev/null) (Debian libgrpc++-dev, sync server)"
    echo "h2load:  $(h2load --version 2>&1 | head -1)"
    echo
  } | tee -a "$summary"
  for cmd in "$here/grpc_throughput.sh" "/usr/bin/python3 $here/grpc_shutdown.py" "$here/grpc_stream.sh"; do
    name=$(basename "${cmd##* }")
    echo "== $name" >&2
    $cmd 2> >(tee "$out/logs/$name.stderr" >&2) | tee -a "$summary"
    rc=${PIPESTATUS[0]}
    if [[ $rc != 0 ]]; then
      echo "($name exited with status $rc: see $out/logs/$name.stderr)" | tee -a "$summary"
      status=1
    fi
    echo | tee -a "$summary"
  done
fi
# --- HAProxy drain (bench/README.md, "haproxy_drain.sh") ---
#   7. ours: a Release build of examples/grace-demo-server in
#      build-bench-demo/ (GRACE_SRC_DIRS from GRACE_BENCH_DEMO_SRC_DIRS,
#      default all of src/; only the grace-demo-server target), when
#      examples/grace-demo-server.c exists; if it does not build, the script
#      takes build-bench/ or build/ (it prints which), else skips ours.
#   8. bench/haproxy_drain.sh: HAProxy in front of two instances, one shut
#      down under load; failed requests at the client. About 1.5 minutes.
if [[ ${GRACE_BENCH_SKIP_BUILD:-0} != 1 ]]; then
  if [[ -f $repo/examples/grace-demo-server.c && -d $repo/src/group ]]; then
    echo "building ours (Release) grace-demo-server in $repo/build-bench-demo ..." >&2
    if cmake -S "$repo" -B "$repo/build-bench-demo" -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF \
          -DGRACE_SANITIZE=OFF -DGRACE_TSAN=OFF \
          "-DGRACE_SRC_DIRS=${GRACE_BENCH_DEMO_SRC_DIRS:-core;net;http;grpc;worker;group;upgrade;tcp}" \
          '-DGRACE_TEST_FILTER=^grace-demo-server$' >"$out/logs/cmake-demo.log" 2>&1 &&
       cmake --build "$repo/build-bench-demo" -j2 --target grace-demo-server >>"$out/logs/cmake-demo.log" 2>&1; then
      echo "built $repo/build-bench-demo/examples/grace-demo-server" >&2
    else
      echo "ours' grace-demo-server did not build in Release (see $out/logs/cmake-demo.log);" \
        "haproxy_drain.sh takes build-bench/ or build/ if there is one" >&2
      rm -f "$repo/build-bench-demo/examples/grace-demo-server"
    fi
  else
    echo "examples/grace-demo-server.c does not exist yet: no build of ours for the HAProxy drain" >&2
  fi
fi
{
  echo "grace HAProxy drain benchmark, $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
  echo "haproxy: $(haproxy -v 2>&1 | head -1)"
  echo
} | tee -a "$summary"
echo "== haproxy_drain.sh" >&2
"$here/haproxy_drain.sh" 2> >(tee "$out/logs/haproxy_drain.sh.stderr" >&2) | tee -a "$summary"
rc=${PIPESTATUS[0]}
if [[ $rc != 0 ]]; then
  echo "(haproxy_drain.sh exited with status $rc: see $out/logs/haproxy_drain.sh.stderr)" | tee -a "$summary"
  status=1
fi
echo | tee -a "$summary"

# --- zero-downtime restart (bench/README.md, "upgrade.py") ---
#   9. ours: a Release build of tests/programs/upgrade-server, twice (builds
#      a and b), in build-bench-upgrade/ (BUILD_TESTING=ON, as the program
#      lives in tests/programs; GRACE_SRC_DIRS from
#      GRACE_BENCH_UPGRADE_SRC_DIRS, default all of src/; only the targets
#      upgrade-server-a and upgrade-server-b); if it does not build, the
#      script takes build-bench/, build-release/ or build/ (it prints
#      which), else skips ours.
#  10. bench/upgrade.py: ours, nginx's binary upgrade and HAProxy's reload
#      (-sf without and with -x), 20 restarts each under wrk, keep-alive and
#      Connection: close. About 3.5 minutes.
if [[ ${GRACE_BENCH_SKIP_BUILD:-0} != 1 ]]; then
  if [[ -f $repo/tests/programs/upgrade-server.c && -d $repo/src/upgrade ]]; then
    echo "building ours (Release) upgrade-server-a/-b in $repo/build-bench-upgrade ..." >&2
    if cmake -S "$repo" -B "$repo/build-bench-upgrade" -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=ON \
          -DGRACE_SANITIZE=OFF -DGRACE_TSAN=OFF \
          "-DGRACE_SRC_DIRS=${GRACE_BENCH_UPGRADE_SRC_DIRS:-core;net;http;grpc;worker;group;upgrade;tcp}" \
          '-DGRACE_TEST_FILTER=^upgrade-server$' >"$out/logs/cmake-upgrade.log" 2>&1 &&
       cmake --build "$repo/build-bench-upgrade" -j2 --target upgrade-server-a upgrade-server-b \
          >>"$out/logs/cmake-upgrade.log" 2>&1; then
      echo "built $repo/build-bench-upgrade/examples/upgrade-server-a and -b" >&2
    else
      echo "ours' upgrade-server did not build in Release (see $out/logs/cmake-upgrade.log);" \
        "upgrade.py takes build-bench/, build-release/ or build/ if there is one" >&2
      rm -f "$repo/build-bench-upgrade/examples/upgrade-server-a" "$repo/build-bench-upgrade/examples/upgrade-server-b"
    fi
  else
    echo "tests/programs/upgrade-server.c does not exist yet: no build of ours for the upgrade benchmark" >&2
  fi
fi
# Runs bench/<name> (a Python script) with its tables appended to the
# summary and its progress to the log; a failure is noted and remembered.
run_py() {
  local name=$1
  echo "== $name" >&2
  /usr/bin/python3 "$here/$name" 2> >(tee "$out/logs/$name.stderr" >&2) | tee -a "$summary"
  local rc=${PIPESTATUS[0]}
  if [[ $rc != 0 ]]; then
    echo "($name exited with status $rc: see $out/logs/$name.stderr)" | tee -a "$summary"
    status=1
  fi
  echo | tee -a "$summary"
}
{
  echo "grace zero-downtime restart benchmark, $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
  echo "nginx:   $(/usr/sbin/nginx -v 2>&1)"
  echo "haproxy: $(haproxy -v 2>&1 | head -1)"
  echo
} | tee -a "$summary"
run_py upgrade.py

# --- embedding (bench/README.md, "embed.py") ---
#  11. ours, twice: a Release build of examples/embedded-server and
#      examples/http-sleep-server in build-bench-embed/ (GRACE_SRC_DIRS from
#      GRACE_BENCH_EMBED_SRC_DIRS, default all of src/); if it does not
#      build, embed.py takes build-release/ or build/.
#  12. bench/embed.py: the server on the program's own libuv loop vs on one
#      loop thread of ours (-loops 1), wrk keep-alive. About 1 minute.
if [[ ${GRACE_BENCH_SKIP_BUILD:-0} != 1 ]]; then
  echo "building ours (Release) embedded-server and http-sleep-server in $repo/build-bench-embed ..." >&2
  if cmake -S "$repo" -B "$repo/build-bench-embed" -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF \
        -DGRACE_SANITIZE=OFF -DGRACE_TSAN=OFF \
        "-DGRACE_SRC_DIRS=${GRACE_BENCH_EMBED_SRC_DIRS:-core;net;http;grpc;worker;group;upgrade;tcp}" \
        >"$out/logs/cmake-embed.log" 2>&1 &&
     cmake --build "$repo/build-bench-embed" -j2 --target embedded-server http-sleep-server \
        >>"$out/logs/cmake-embed.log" 2>&1; then
    echo "built $repo/build-bench-embed/examples/embedded-server and http-sleep-server" >&2
  else
    echo "ours' embedded-server did not build in Release (see $out/logs/cmake-embed.log);" \
      "embed.py takes build-release/ or build/ if there is one" >&2
    rm -f "$repo/build-bench-embed/examples/embedded-server"
  fi
fi
{
  echo "grace embedding benchmark, $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
  echo
} | tee -a "$summary"
echo "== embed.py" >&2
/usr/bin/python3 "$here/embed.py" 2> >(tee "$out/logs/embed.py.stderr" >&2) | tee -a "$summary"
rc=${PIPESTATUS[0]}
if [[ $rc != 0 ]]; then
  echo "(embed.py exited with status $rc: see $out/logs/embed.py.stderr)" | tee -a "$summary"
  status=1
fi
echo | tee -a "$summary"

# --- TLS benchmark (bench/tls.py): ours (grace-demo-server, Release, built
#   by the script in build-bench-tls/) beside nginx, same certificate. ---
{
  echo "grace TLS benchmark, $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
  echo "nginx:   $(/usr/sbin/nginx -v 2>&1)"
  echo
} | tee -a "$summary"
run_py tls.py

echo "summary written to $summary" >&2
exit $status
