#!/bin/bash
# Readiness before drain, behind a real load balancer: HAProxy (Debian's
# haproxy, http mode, round robin, keep-alive to the servers, health check
# every 200 ms with fall 1 / rise 2) in front of two instances a and b of
# one server, wrk and a per-request probe sending steady load through it;
# SIGTERM to instance a under load; count the requests that failed at the
# client. Target: zero for ours with a shutdown delay.
#
# Scenarios (each ROUNDS rounds, interleaved; medians):
#   ours-delay1s  examples/grace-demo-server -shutdown-delay 1s: /readyz
#                 answers 503 from the signal on while a keeps serving, so
#                 HAProxy marks a DOWN (one check, <= ~200 ms) before a
#                 stops accepting. HAProxy retries nothing (retry-on none).
#                 Target: 0 failed requests and exit status 0, every round.
#   ours-delay0   the same program with -shutdown-delay 0s: its listener
#                 closes at the signal, before HAProxy knows.
#   go            bench/go/http-sleep-server (net/http Shutdown at the
#                 signal; no readiness endpoint, so the check is GET /).
# The last two run under three HAProxy retry policies (RETRY in
# bench/haproxy/drainlib.py), to show what HAProxy masks and what not:
#   none   retry-on none: every failure reaches the client;
#   conn   retry-on conn-failure (HAProxy's default) + option redispatch 1:
#          a refused connection is retried on b;
#   empty  conn + empty-response: also a request sent on a reused server
#          connection that the server closes without answering.
#
# Per round: start a and b on 127.0.0.1, HAProxy (config from
# bench/haproxy/haproxy.cfg.in), wait until HAProxy has both UP; start
# `wrk -t1 -c16 -dDs` on HAProxy's / and the probe (bench/haproxy/drainlib.py
# probe: two keep-alive connections, one request at a time, 1 ms apart,
# each checked for 200 "Hello, World!\n"); 1 s later SIGTERM a and wait for
# its exit (SIGKILL after 15 s); after the run read HAProxy's stats (per
# server 2xx, econ, eresp, retries, redispatches) and its log (only abnormal
# requests and state changes are logged), then stop HAProxy and b.
# Failed at the client = wrk's "Non-2xx or 3xx responses" + "Socket errors"
# (wrk keeps one request in flight per connection: one error, one lost
# request), and separately the probe's failed requests.
#
# Usage: bench/haproxy_drain.sh [-r ROUNDS] [-d SECONDS] [-s ours,go]
# Ports 20000-20995 (6 per round: HAProxy, its stats, a, b, and the gRPC
# ports of a and b: grace-demo-server also serves gRPC). Output in
# bench/out/haproxy/ (a directory per round: config, logs, wrk output, stats,
# probe counts; results.jsonl). Exit 1 if the target is missed or a round
# could not run. Time: about 7 scenarios * ROUNDS * (SECONDS + 1) s, 85 s
# with the defaults (3 rounds of 3 s).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
out=${GRACE_BENCH_OUT:-$here/out}
rounds=3
duration=3
signal_after=1
servers=ours,go
while getopts r:d:s:h opt; do
  case $opt in
    r) rounds=$OPTARG ;;
    d) duration=$OPTARG ;;
    s) servers=$OPTARG ;;
    h) sed -n '2,/^set -e/p' "$0" | sed 's/^# \{0,1\}//;$d'; exit 0 ;;
    *) echo "usage: $0 [-r ROUNDS] [-d SECONDS] [-s ours,go]" >&2; exit 2 ;;
  esac
done
if ((duration < signal_after + 2)); then
  echo "-d must be at least $((signal_after + 2)) s (SIGTERM at ${signal_after} s, then a's delay)" >&2
  exit 2
fi
hdir=$out/haproxy
rm -rf "$hdir"
mkdir -p "$hdir"
results=$hdir/results.jsonl
lib=(/usr/bin/python3 "$here/haproxy/drainlib.py")

for tool in haproxy wrk curl; do
  command -v "$tool" >/dev/null || { echo "$tool is not installed (Debian package $tool)" >&2; exit 1; }
done

find_demo() { # our grace-demo-server: $GRACE_BENCH_DEMO, else the build trees
  if [[ -n ${GRACE_BENCH_DEMO:-} ]]; then
    if [[ -x $GRACE_BENCH_DEMO ]]; then echo "$GRACE_BENCH_DEMO"; fi
    return 0
  fi
  local d
  for d in build-bench-demo build-bench build; do
    if [[ -x $repo/$d/examples/grace-demo-server ]]; then
      echo "$repo/$d/examples/grace-demo-server"
      return
    fi
  done
}

# scenario name | server | -shutdown-delay | retry policy | target 0 failures
scenarios=()
IFS=, read -r -a want <<<"$servers"
for n in "${want[@]}"; do
  case $n in
    ours)
      ours=$(find_demo)
      if [[ -z $ours ]]; then
        echo "SKIP ours: examples/grace-demo-server is not built (looked in \$GRACE_BENCH_DEMO," \
          "build-bench-demo/, build-bench/, build/ examples); run bench/run_all.sh to build it" >&2
        continue
      fi
      echo "ours: $ours" >&2
      if grep -qaE '__asan_init|__tsan_init' "$ours"; then
        echo "WARNING: ours is built with a sanitizer" >&2
      fi
      ours_grpc=0
      grep -q -- '-grpc-addr' <<<"$("$ours" -h 2>&1)" && ours_grpc=1
      scenarios+=("ours-delay1s|ours|1s|none|1" "ours-delay0|ours|0s|none|0"
                  "ours-delay0|ours|0s|conn|0" "ours-delay0|ours|0s|empty|0") ;;
    go)
      gobin=$("${lib[0]}" "$here/benchlib.py" build-go)
      echo "go: $gobin" >&2
      scenarios+=("go|go||none|0" "go|go||conn|0" "go|go||empty|0") ;;
    *) echo "unknown server '$n' (ours, go)" >&2; exit 2 ;;
  esac
done
((${#scenarios[@]} > 0)) || { echo "nothing to run" >&2; exit 1; }

declare -A pid=()
# shellcheck source=bench/benchlib.sh
. "$here/benchlib.sh"

exited() { # pid: true once our child is gone or a zombie (kill -0 sees zombies)
  local st
  st=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 0
  [[ -z $st || $st == Z ]]
}

wait_exit() { # key timeout_s: wait for pid[key] (SIGKILL at the timeout); sets $exit_status
  local p=${pid[$1]} i
  for ((i = 0; i < $2 * 200; i++)); do
    exited "$p" && break
    sleep 0.005
  done
  exited "$p" || { echo "pid $p ($1) did not exit within $2 s: SIGKILL" >&2; kill -KILL "$p" 2>/dev/null || true; }
  exit_status=0
  wait "$p" || exit_status=$?
  unset "pid[$1]"
}

now() { date +%s.%N; }

start_server() { # key server delay port grpc_port log
  local cmd
  if [[ $2 == ours ]]; then
    cmd=("$ours" -addr "127.0.0.1:$4" -shutdown-delay "$3" -shutdown-timeout 10s)
    # The demo also serves gRPC (default :50051): give each instance its own
    # private port. (Builds from before the gRPC part have no such flag.)
    ((ours_grpc)) && cmd+=(-grpc-addr "127.0.0.1:$5")
  else
    cmd=("$gobin" -addr "127.0.0.1:$4" -shutdown-timeout 10s)
  fi
  # setsid: the servers do not get the terminal's Ctrl+C; we signal them.
  setsid "${cmd[@]}" </dev/null >"$6" 2>&1 &
  pid[$1]=$!
  wait_port "$4" "${pid[$1]}"
}

run_round() { # r si scenario-line
  local r=$1 si=$2 name server delay retry target
  IFS='|' read -r name server delay retry target <<<"$3"
  local k=$(((r - 1) * ${#scenarios[@]} + si))
  local base=$((20000 + (k % 166) * 6))
  local fe=$base st=$((base + 1)) pa=$((base + 2)) pb=$((base + 3))
  local d=$hdir/$name-$retry-r$r
  mkdir -p "$d"
  # Called from an if: errexit is off in here, hence the explicit returns.
  start_server a "$server" "$delay" "$pa" $((base + 4)) "$d/a.log" || return 1
  start_server b "$server" "$delay" "$pb" $((base + 5)) "$d/b.log" || return 1
  local check=/readyz
  [[ $server == go ]] && check=/
  "${lib[@]}" conf "$d/haproxy.cfg" "$fe" "$st" "$pa" "$pb" "$check" "$retry" || return 1
  haproxy -q -c -f "$d/haproxy.cfg" || return 1
  setsid haproxy -db -f "$d/haproxy.cfg" </dev/null >"$d/haproxy.log" 2>&1 &
  pid[haproxy]=$!
  wait_port "$fe" "${pid[haproxy]}" || return 1
  "${lib[@]}" wait-up "$st" || return 1

  "${lib[@]}" probe "$fe" "$duration" "$d/probe.json" &
  pid[probe]=$!
  wrk -t1 -c16 -d"${duration}s" "http://127.0.0.1:$fe/" >"$d/wrk.txt" 2>&1 &
  pid[wrk]=$!
  sleep "$signal_after"
  local sig
  sig=$(now)
  kill -TERM "${pid[a]}"
  wait_exit a 15
  local a_status=$exit_status a_exit_ms
  a_exit_ms=$(awk -v a="$sig" -v b="$(now)" 'BEGIN {printf "%.1f", (b - a) * 1000}')
  wait "${pid[wrk]}" || { echo "wrk failed: $(cat "$d/wrk.txt")" >&2; return 1; }
  unset "pid[wrk]"
  wait "${pid[probe]}" || { echo "probe failed" >&2; return 1; }
  unset "pid[probe]"
  curl -sS --max-time 5 "http://127.0.0.1:$st/stats;csv" >"$d/stats.csv" || return 1
  kill -TERM "${pid[haproxy]}"
  wait_exit haproxy 5
  kill -TERM "${pid[b]}"
  wait_exit b 15
  local b_status=$exit_status
  printf '{"scenario": "%s", "server": "%s", "delay": "%s", "retry": "%s", "round": %d, "target_zero": %d, "sigterm_at": %s, "a_status": %d, "a_exit_ms": %s, "b_status": %d}\n' \
    "$name" "$server" "$delay" "$retry" "$r" "$target" "$sig" "$a_status" "$a_exit_ms" "$b_status" >"$d/meta.json"
  "${lib[@]}" round "$d" "$results" || return 1
}

echo "haproxy: $(haproxy -v | head -1)" >&2
failed_rounds=0
for ((r = 1; r <= rounds; r++)); do
  for si in "${!scenarios[@]}"; do
    if ! run_round "$r" "$si" "${scenarios[$si]}"; then
      echo "round $r of ${scenarios[$si]} could not run" >&2
      failed_rounds=1
      cleanup
      pid=()
    fi
  done
done

status=0
"${lib[@]}" summary "$results" || status=1
((failed_rounds == 0)) || status=1
exit $status
