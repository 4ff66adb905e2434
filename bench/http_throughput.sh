#!/bin/bash
# HTTP/1.1 keep-alive throughput of "/" ("Hello, World!\n"): ours against
# Go's net/http (bench/go/http-sleep-server) and nginx (bench/nginx), in the
# same run.
#
# How: all three servers are started on 127.0.0.1 (ours 18101, Go 18102,
# nginx 18103; each checked to answer "Hello, World!\n" first), then
# ROUNDS (default 5) rounds of
#     wrk -t2 -c64 -d${DURATION}s http://127.0.0.1:PORT/
# run in turn ours, go, nginx, so a slow phase of the shared machine hits all
# three alike. A 1 s warm-up run precedes each server's first round. The
# report is the median req/s per server and the ratios ours/go and
# ours/nginx (higher is better); a round with socket errors or non-2xx
# answers is reported and makes the script exit 1.
# Servers use their defaults: ours and nginx one event loop / worker per core
# (worker_processes auto), Go GOMAXPROCS = cores. wrk shares the same cores.
#
# Usage: bench/http_throughput.sh [-d SECONDS] [-r ROUNDS] [-s ours,go,nginx]
# Total time: about ROUNDS * servers * (SECONDS + 0.2) + 3 s (default 5*3*5 s, about 80 s).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
out=${GRACE_BENCH_OUT:-$here/out}
duration=5
rounds=5
servers=ours,go,nginx
while getopts d:r:s:h opt; do
  case $opt in
    d) duration=$OPTARG ;;
    r) rounds=$OPTARG ;;
    s) servers=$OPTARG ;;
    h) sed -n '2,/^set -e/p' "$0" | sed 's/^# \{0,1\}//;$d'; exit 0 ;;
    *) echo "usage: $0 [-d SECONDS] [-r ROUNDS] [-s ours,go,nginx]" >&2; exit 2 ;;
  esac
done
mkdir -p "$out/logs" "$out/wrk"

declare -A port=([ours]=18101 [go]=18102 [nginx]=18103)
declare -A pid=()
names=()

# shellcheck source=bench/benchlib.sh
. "$here/benchlib.sh"

start() { # name
  local n=$1 p=${port[$1]} log="$out/logs/throughput-$1.log" cmd
  case $n in
    ours) cmd=("$ours" -addr "127.0.0.1:$p") ;;
    go) cmd=("$gobin" -addr "127.0.0.1:$p") ;;
    nginx)
      local conf
      conf=$(/usr/bin/python3 "$here/benchlib.py" nginx-conf "$p")
      cmd=(/usr/sbin/nginx -p "$(dirname "$conf")" -c "$conf" -e "$(dirname "$conf")/error.log") ;;
  esac
  # setsid: the servers do not get the terminal's Ctrl+C; we stop them.
  setsid "${cmd[@]}" </dev/null >"$log" 2>&1 &
  pid[$n]=$!
  wait_port "$p" "${pid[$n]}"
  local body
  body=$(curl -sS --max-time 5 "http://127.0.0.1:$p/")
  if [[ $body != "Hello, World!" ]]; then
    echo "$n: GET / answered '$body', not 'Hello, World!'" >&2
    exit 1
  fi
}

IFS=, read -r -a want <<<"$servers"
for n in "${want[@]}"; do
  case $n in
    ours)
      if ours=$(/usr/bin/python3 "$here/benchlib.py" find-ours); then
        echo "ours: $ours" >&2
        names+=(ours)
      else
        echo "SKIP ours: examples/http-sleep-server is not built (looked in \$GRACE_BENCH_OURS," \
          "build-bench/examples, build/examples); run bench/run_all.sh to build it" >&2
      fi ;;
    go) gobin=$(/usr/bin/python3 "$here/benchlib.py" build-go); names+=(go) ;;
    nginx) names+=(nginx) ;;
    *) echo "unknown server '$n' (ours, go, nginx)" >&2; exit 2 ;;
  esac
done

for n in "${names[@]}"; do
  start "$n"
  wrk -t2 -c64 -d1s "http://127.0.0.1:${port[$n]}/" >/dev/null
done

bad=0
declare -A rps=()
for ((r = 1; r <= rounds; r++)); do
  line="round $r/$rounds:"
  for n in "${names[@]}"; do
    f="$out/wrk/$n-$r.txt"
    wrk -t2 -c64 -d"${duration}s" "http://127.0.0.1:${port[$n]}/" >"$f"
    v=$(awk '/^Requests\/sec:/ {print $2}' "$f")
    rps[$n]+="$v "
    line+=" $n $v"
    if grep -qE '^ *(Socket errors|Non-2xx)' "$f"; then
      line+=" ($(grep -E '^ *(Socket errors|Non-2xx)' "$f" | tr -s ' ' | tr '\n' ';'))"
      bad=1
    fi
  done
  echo "$line" >&2
done

# Graceful stop; the exit status of each server is reported, not judged here.
for n in "${names[@]}"; do
  if [[ $n == nginx ]]; then kill -QUIT "${pid[$n]}"; else kill -TERM "${pid[$n]}"; fi
  st=0
  wait "${pid[$n]}" || st=$?
  unset "pid[$n]"
  [[ $st == 0 ]] || echo "$n exited with status $st after its stop signal" >&2
done

med() { tr ' ' '\n' | sed '/^$/d' | sort -g | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }
declare -A m=()
echo "throughput: wrk -t2 -c64 -d${duration}s on /, keep-alive, $rounds rounds, median req/s"
for n in "${names[@]}"; do
  m[$n]=$(med <<<"${rps[$n]}")
  printf '%-8s %12.0f req/s   (rounds: %s)\n' "$n" "${m[$n]}" "${rps[$n]% }"
done
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.3g", a / b}'; }
if [[ -n ${m[ours]:-} ]]; then
  [[ -n ${m[go]:-} ]] && echo "ratio ours/go    = $(ratio "${m[ours]}" "${m[go]}") (higher is better)"
  [[ -n ${m[nginx]:-} ]] && echo "ratio ours/nginx = $(ratio "${m[ours]}" "${m[nginx]}") (higher is better)"
elif [[ -n ${m[go]:-} && -n ${m[nginx]:-} ]]; then
  echo "ratio nginx/go   = $(ratio "${m[nginx]}" "${m[go]}") (ours not built)"
fi
exit $bad
