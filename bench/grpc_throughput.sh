#!/bin/bash
# gRPC unary throughput of Greeter.SayHello{name:"world"}: ours
# (examples/greeter-server) against grpc-go's Greeter (bench/grpc/go-greeter)
# and the C++ Greeter on gRPC C-core (bench/grpc/cpp-greeter), in the same run.
#
# How: the three servers are started on 127.0.0.1 (ours 19101, grpc-go 19102,
# C++ 19103; ours listens on all addresses, the peers on loopback), each is
# checked once with a real gRPC client (grpcio: reply "Hello world", status
# OK), warmed up with 20,000 requests, then ROUNDS (default 3) rounds of
#     h2load -n 200000 -c 16 -m 32 -t 2 -H 'content-type: application/grpc'
#            -H 'te: trailers' -d PAYLOAD http://127.0.0.1:PORT/Greeter/SayHello
# run in turn ours, go, cpp, so a slow phase of the shared machine hits all
# three alike. PAYLOAD is bench/grpc/payload.py's 12 bytes (5-byte prefix +
# HelloRequest{name:"world"}). The report is each server's median req/s and
# the ratios ours/go and ours/cpp (higher is better).
# A round counts as failed (reported, exit 1) unless every request succeeded,
# every status is 2xx, and h2load's DATA bytes are exactly 18 per request
# (the 5-byte prefix + HelloReply{"Hello world"}): h2load cannot see trailers,
# so that is what says every call carried its reply; the grpcio check is what
# sees grpc-status 0. After the graceful stop, each server's "Received:" log
# lines must equal the requests sent (every call reached the handler).
# All three log "Received: world" per call (the seed's handler), to a file.
#
# Usage: bench/grpc_throughput.sh [-n REQUESTS] [-r ROUNDS] [-s ours,go,cpp]
# Total time: about ROUNDS * (n/rate of each server) + 10 s; with the
# defaults, 3 * (200k/125k + 200k/47k + ours) ~ 25 s.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
out=${GRACE_BENCH_OUT:-$here/out}
lib=$here/grpc/grpclib.py
requests=200000
rounds=3
servers=ours,go,cpp
while getopts n:r:s:h opt; do
  case $opt in
    n) requests=$OPTARG ;;
    r) rounds=$OPTARG ;;
    s) servers=$OPTARG ;;
    h) sed -n '2,/^set -e/p' "$0" | sed 's/^# \{0,1\}//;$d'; exit 0 ;;
    *) echo "usage: $0 [-n REQUESTS] [-r ROUNDS] [-s ours,go,cpp]" >&2; exit 2 ;;
  esac
done
mkdir -p "$out/logs" "$out/h2load"
warmup=20000
reply_bytes=18 # 5-byte prefix + 0a 0b "Hello world"
payload=$out/grpc/hello-world.bin
mkdir -p "$out/grpc"
/usr/bin/python3 "$here/grpc/payload.py" "$payload"

declare -A port=([ours]=19101 [go]=19102 [cpp]=19103)
declare -A bin=() pid=() sent=()
names=()

# shellcheck source=bench/benchlib.sh
. "$here/benchlib.sh"

h2() { # port n outfile
  h2load -n "$2" -c 16 -m 32 -t 2 -H 'content-type: application/grpc' -H 'te: trailers' \
    -d "$payload" "http://127.0.0.1:$1/Greeter/SayHello" >"$3" 2>&1
}

# Prints "" when the h2load output in $1 shows n=$2 whole replies, else the problem.
verdict() {
  awk -v n="$2" -v rb="$reply_bytes" '
    /^requests:/ { succ = $8; fail = $10; err = $12; tmo = $14 }
    /^status codes:/ { ok2 = $3 }
    /^traffic:/ { for (i = 1; i <= NF; i++) if ($i == "data") { d = $(i - 1); gsub(/[()]/, "", d) } }
    END {
      p = ""
      if (succ != n) p = p sprintf("%s of %d succeeded (failed %s, errored %s, timeout %s); ", succ, n, fail, err, tmo)
      if (ok2 != n) p = p sprintf("%s of %d 2xx; ", ok2, n)
      if (d != n * rb) p = p sprintf("DATA %s bytes, not %d x %d; ", d, n, rb)
      printf "%s", p
    }' "$1"
}

IFS=, read -r -a want <<<"$servers"
for n in "${want[@]}"; do
  case $n in
    ours)
      if bin[ours]=$(/usr/bin/python3 "$lib" find-ours); then
        echo "ours: ${bin[ours]}" >&2
        names+=(ours)
      else
        echo "SKIP ours: examples/greeter-server is not built (looked in \$GRACE_BENCH_GRPC_OURS," \
          "build-bench-grpc/examples, build-bench/examples, build/examples)" >&2
      fi ;;
    go) bin[go]=$(/usr/bin/python3 "$lib" build-go); names+=(go) ;;
    cpp) bin[cpp]=$(/usr/bin/python3 "$lib" build-cpp); names+=(cpp) ;;
    *) echo "unknown server '$n' (ours, go, cpp)" >&2; exit 2 ;;
  esac
done

for n in "${names[@]}"; do
  p=${port[$n]}
  cmd=("${bin[$n]}" -port "$p")
  [[ $n == ours ]] || cmd+=(-host 127.0.0.1)
  setsid "${cmd[@]}" </dev/null >"$out/logs/grpc-throughput-$n.log" 2>&1 &
  pid[$n]=$!
  wait_port "$p" "${pid[$n]}"
  if ! /usr/bin/python3 "$lib" check "$p"; then
    echo "$n: the grpcio check of SayHello failed" >&2
    exit 1
  fi
  h2 "$p" "$warmup" "$out/h2load/$n-warmup.txt"
  sent[$n]=$((1 + warmup))
done

bad=0
declare -A rps=()
for ((r = 1; r <= rounds; r++)); do
  line="round $r/$rounds:"
  for n in "${names[@]}"; do
    f="$out/h2load/$n-$r.txt"
    h2 "${port[$n]}" "$requests" "$f" || true
    sent[$n]=$((sent[$n] + requests))
    v=$(awk '/^finished in/ {print $4}' "$f")
    rps[$n]+="$v "
    line+=" $n ${v:-?}"
    problem=$(verdict "$f" "$requests")
    if [[ -z $v || -n $problem ]]; then
      line+=" (FAIL: ${problem:-no h2load result, see $f})"
      bad=1
    fi
  done
  echo "$line" >&2
done

# Graceful stop; then every call must have reached the handler once.
declare -A recv=()
for n in "${names[@]}"; do
  kill -TERM "${pid[$n]}"
  st=0
  wait "${pid[$n]}" || st=$?
  unset "pid[$n]"
  [[ $st == 0 ]] || echo "$n exited with status $st after SIGTERM" >&2
  recv[$n]=$(/usr/bin/python3 "$lib" count-received "$out/logs/grpc-throughput-$n.log")
  if [[ ${recv[$n]} != "${sent[$n]}" ]]; then
    echo "$n: ${recv[$n]} \"Received:\" log lines for ${sent[$n]} calls" >&2
    bad=1
  fi
done

med() { tr ' ' '\n' | sed '/^$/d' | sort -g | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }
declare -A m=()
echo "gRPC throughput: h2load -n $requests -c 16 -m 32 -t 2, unary SayHello{name:\"world\"}, $rounds rounds, median req/s"
for n in "${names[@]}"; do
  m[$n]=$(med <<<"${rps[$n]}")
  printf '%-8s %12.0f req/s   (rounds: %s; handler calls %s of %s)\n' "$n" "${m[$n]}" "${rps[$n]% }" \
    "${recv[$n]}" "${sent[$n]}"
done
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.3g", a / b}'; }
if [[ -n ${m[ours]:-} ]]; then
  [[ -n ${m[go]:-} ]] && echo "ratio ours/go  = $(ratio "${m[ours]}" "${m[go]}") (higher is better; target >= 1.5, aim 2)"
  [[ -n ${m[cpp]:-} ]] && echo "ratio ours/cpp = $(ratio "${m[ours]}" "${m[cpp]}") (higher is better)"
elif [[ -n ${m[go]:-} && -n ${m[cpp]:-} ]]; then
  echo "ratio go/cpp   = $(ratio "${m[go]}" "${m[cpp]}") (ours not built)"
fi
exit $bad
