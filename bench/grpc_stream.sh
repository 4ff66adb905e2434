#!/bin/bash
# gRPC streaming: ours (bench/grpc/grace-stream/stream_server.c on libgrace)
# beside grpc-go (bench/grpc/go-stream/server), both read by the same grpc-go
# client (bench/grpc/go-stream/client), in the same run. Three parts:
#
#  tput  server-streaming throughput: one /Bench/ServerStream call per run
#        (after a warm-up stream of N/10 on the same connection), N messages
#        of 16 B, 1 KiB (messages/s) and 1 MiB (MB/s), default N = 200,000,
#        100,000 and 500; ROUNDS rounds, each round runs every size on ours
#        then grpc-go. Also the server's CPU time (utime+stime from
#        /proc/PID/stat around the run) per message: a figure the shared
#        client does not limit.
#  pp    bidi ping-pong latency: one /Bench/Bidi call, 1,000 round trips
#        unmeasured, then 10,000 of a 16-byte message, each timed from send
#        to echo; p50 and p99 per round, medians over the rounds.
#  mem   memory per stalled stream: per round and server, a fresh server,
#        one short warm-up stream, idle RSS; then 1,000 server streams of
#        endless 1 KiB messages over 20 connections whose client reads each
#        stream's first message and then nothing (fixed 64 KiB windows, so
#        at most 64 KiB per stream sits in the client); once RSS stays within
#        1 % for 1 s (at most 30 s), (RSS - idle RSS) / 1,000 = bytes per
#        stream. RSS = VmRSS; kernel socket buffers are not in it.
#
# Both servers run with default options (ours: grace_grpc_options defaults,
# max_send_buffer 256 KiB, one loop per core; grpc-go: NewServer() defaults,
# GOMAXPROCS = cores) and raw-byte messages (no protobuf on any side).
# 127.0.0.1 only: ports 19301 (ours) / 19302 (grpc-go) for tput and pp,
# 19303 / 19304 for mem. Every client run is bounded by `timeout`, every
# wait by a count; the EXIT trap kills what this script started.
#
# Usage: bench/grpc_stream.sh [-r ROUNDS] [-s ours,go] [-o tput,pp,mem]
#                             [-S STREAMS] [-C CONNS]
# Exit status 1 if a run failed (wrong count, size or status; a server that
# did not exit 0 after SIGTERM). About 2 minutes with the defaults.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
out=${GRACE_BENCH_OUT:-$here/out}
rounds=3
servers=ours,go
only=tput,pp,mem
streams=1000
conns=20
while getopts r:s:o:S:C:h opt; do
  case $opt in
    r) rounds=$OPTARG ;;
    s) servers=$OPTARG ;;
    o) only=$OPTARG ;;
    S) streams=$OPTARG ;;
    C) conns=$OPTARG ;;
    h) sed -n '2,/^set -e/p' "$0" | sed 's/^# \{0,1\}//;$d'; exit 0 ;;
    *) echo "usage: $0 [-r ROUNDS] [-s ours,go] [-o tput,pp,mem] [-S STREAMS] [-C CONNS]" >&2; exit 2 ;;
  esac
done
mkdir -p "$out/logs" "$out/grpc"
sizes=(16 1024 1048576)
declare -A count=([16]=200000 [1024]=100000 [1048576]=500)
pp_n=10000
hold_size=1024

declare -A port=([ours]=19301 [go]=19302) mport=([ours]=19303 [go]=19304)
declare -A bin=() pid=()
names=()
client_pid=
# shellcheck source=bench/benchlib.sh
. "$here/benchlib.sh"
trap 'cleanup; [[ -n $client_pid ]] && kill -KILL "$client_pid" 2>/dev/null; true' EXIT

client=
if ! go_bins=$("$here/grpc/go-stream/build.sh" "$out/grpc"); then
  echo "the grpc-go programs did not build (Debian packages in bench/README.md)" >&2
  exit 1
fi
client=$(sed -n 2p <<<"$go_bins")
IFS=, read -r -a want <<<"$servers"
for n in "${want[@]}"; do
  case $n in
    ours)
      if bin[ours]=$("$here/grpc/grace-stream/build.sh" "$out/grpc"); then
        echo "ours: ${bin[ours]}" >&2
        names+=(ours)
      else
        echo "SKIP ours: bench/grpc/grace-stream/build.sh found or built nothing" >&2
      fi ;;
    go) bin[go]=$(sed -n 1p <<<"$go_bins"); names+=(go) ;;
    *) echo "unknown server '$n' (ours, go)" >&2; exit 2 ;;
  esac
done
[[ ${#names[@]} -gt 0 ]] || exit 1

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
hz=$(getconf CLK_TCK)
med() { tr ' ' '\n' | sed '/^$/d' | sort -g | awk '{a[NR]=$1} END {if (NR == 0) print "nan"; else if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {if (a == "nan" || b == "nan" || b == 0) print "n/a"; else printf "%.3g", a / b}'; }
field() { sed -n "s/.*\<$1=\([^ ]*\).*/\1/p" <<<"$2"; } # key line

start() { # name port tag
  local cmd=("${bin[$1]}" -port "$2")
  [[ $1 == go ]] && cmd+=(-host 127.0.0.1)
  setsid "${cmd[@]}" </dev/null >"$out/logs/grpc-stream-$3-$1.log" 2>&1 &
  pid[$1]=$!
  wait_port "$2" "${pid[$1]}"
}
stop() { # name: graceful stop, prints nothing, returns the exit status
  local st=0
  kill -TERM "${pid[$1]}"
  wait "${pid[$1]}" || st=$?
  unset "pid[$1]"
  return $st
}

bad=0
has() { [[ ,$only, == *,$1,* ]]; }
declare -A tput=() cpu=() p50=() p99=() mem=() idle=() mexit=()

if has tput || has pp; then
  for n in "${names[@]}"; do start "$n" "${port[$n]}" main; done
  for ((r = 1; r <= rounds; r++)); do
    if has tput; then
      for s in "${sizes[@]}"; do
        line="round $r/$rounds stream ${s}B x ${count[$s]}:"
        for n in "${names[@]}"; do
          c0=$(cpu_ticks "${pid[$n]}")
          res=$(timeout 120 "$client" stream -addr "127.0.0.1:${port[$n]}" -n "${count[$s]}" -size "$s" \
            -timeout 110s 2>>"$out/logs/grpc-stream-client.log") || res=
          c1=$(cpu_ticks "${pid[$n]}")
          secs=$(field secs "$res")
          if [[ -z $secs ]]; then
            line+=" $n FAIL (see $out/logs/grpc-stream-client.log)"
            bad=1
            continue
          fi
          # messages/s for 16 B and 1 KiB, MB/s (10^6 bytes) for 1 MiB;
          # server CPU per message counts the warm-up stream too (1.1 N).
          v=$(awk -v n="${count[$s]}" -v s="$s" -v t="$secs" \
            'BEGIN {if (s >= 1048576) printf "%.1f", n * s / t / 1e6; else printf "%.0f", n / t}')
          u=$(awk -v d="$((c1 - c0))" -v hz="$hz" -v n="${count[$s]}" -v s="$s" \
            'BEGIN {printf "%.3g", d / hz * 1e6 / (n * 1.1)}')
          tput[$n,$s]+="$v "
          cpu[$n,$s]+="$u "
          line+=" $n $v ($u us cpu/msg)"
        done
        echo "$line" >&2
      done
    fi
    if has pp; then
      line="round $r/$rounds ping-pong 16B x $pp_n:"
      for n in "${names[@]}"; do
        res=$(timeout 120 "$client" pingpong -addr "127.0.0.1:${port[$n]}" -n "$pp_n" -size 16 \
          -timeout 110s 2>>"$out/logs/grpc-stream-client.log") || res=
        a=$(field p50_us "$res") b=$(field p99_us "$res")
        if [[ -z $a || -z $b ]]; then
          line+=" $n FAIL"
          bad=1
          continue
        fi
        p50[$n]+="$a " p99[$n]+="$b "
        line+=" $n p50 ${a}us p99 ${b}us"
      done
      echo "$line" >&2
    fi
  done
  for n in "${names[@]}"; do
    st=0
    stop "$n" || st=$?
    if [[ $st != 0 ]]; then
      echo "$n exited with status $st after SIGTERM" >&2
      bad=1
    fi
  done
fi

if has mem; then
  fifo=$out/grpc/hold.fifo
  for ((r = 1; r <= rounds; r++)); do
    line="round $r/$rounds memory, $streams stalled streams on $conns connections:"
    for n in "${names[@]}"; do
      start "$n" "${mport[$n]}" mem
      sp=${pid[$n]}
      timeout 30 "$client" stream -addr "127.0.0.1:${mport[$n]}" -n 100 -size "$hold_size" -warm 0 \
        >/dev/null 2>>"$out/logs/grpc-stream-client.log" || { line+=" $n FAIL(warm-up)"; bad=1; stop "$n" || true; continue; }
      sleep 0.2
      i0=$(rss_kib "$sp")
      rm -f "$fifo"
      mkfifo "$fifo"
      hold_out=$out/grpc/hold-$n.out
      timeout 150 "$client" hold -addr "127.0.0.1:${mport[$n]}" -streams "$streams" -conns "$conns" \
        -size "$hold_size" -max-hold 120s -timeout 60s <"$fifo" >"$hold_out" 2>>"$out/logs/grpc-stream-client.log" &
      client_pid=$!
      exec 7>"$fifo" # the client holds until this closes
      ok=0
      for ((i = 0; i < 600; i++)); do # up to 60 s for every stream's first message
        if grep -q '^ready' "$hold_out"; then ok=1; break; fi
        kill -0 "$client_pid" 2>/dev/null || break
        sleep 0.1
      done
      rss=nan
      if [[ $ok == 1 ]]; then
        # Stalled: RSS within 1 % over the last 5 samples 200 ms apart (at most 30 s).
        hist=()
        for ((i = 0; i < 150; i++)); do
          hist+=("$(rss_kib "$sp")")
          if ((${#hist[@]} >= 6)); then
            lo=${hist[-6]} hi=${hist[-1]}
            if ((hi - lo <= hi / 100 && lo - hi <= hi / 100)); then rss=$hi; break; fi
          fi
          sleep 0.2
        done
        [[ $rss == nan ]] && rss=${hist[-1]} && line+=" ($n: RSS still moving after 30 s)"
      fi
      exec 7>&- # EOF: the client exits, its streams are cut
      wait "$client_pid" || true
      client_pid=
      rm -f "$fifo"
      st=0
      stop "$n" || st=$?
      mexit[$n]+="$st "
      if [[ $ok != 1 || $st != 0 ]]; then
        line+=" $n FAIL(ready=$ok exit=$st)"
        bad=1
        continue
      fi
      per=$(awk -v a="$rss" -v b="$i0" -v s="$streams" 'BEGIN {printf "%.0f", (a - b) * 1024 / s}')
      mem[$n]+="$per " idle[$n]+="$i0 "
      line+=" $n idle ${i0} KiB, stalled ${rss} KiB: $per B/stream"
    done
    echo "$line" >&2
  done
fi

# ---- report ----
echo "gRPC streaming: ours vs grpc-go, both read by the same grpc-go client, $rounds rounds, medians"
declare -A m=()
if has tput; then
  for s in "${sizes[@]}"; do
    unit="msg/s"; [[ $s == 1048576 ]] && unit="MB/s"
    label=$s; [[ $s == 1024 ]] && label=1KiB; [[ $s == 1048576 ]] && label=1MiB; [[ $s == 16 ]] && label=16B
    for n in "${names[@]}"; do
      m[$n]=$(med <<<"${tput[$n,$s]:-}")
      c=$(med <<<"${cpu[$n,$s]:-}")
      printf 'server-stream %-5s x %-7s %-5s %12s %-6s (rounds: %s; server cpu %s us/msg)\n' "$label" "${count[$s]}" \
        "$n" "${m[$n]}" "$unit" "${tput[$n,$s]% }" "$c"
    done
    [[ -n ${m[ours]:-} && -n ${m[go]:-} ]] &&
      echo "  ratio ours/go = $(ratio "${m[ours]}" "${m[go]}") (higher is better; target >= 2)"
  done
fi
if has pp; then
  for n in "${names[@]}"; do
    a=$(med <<<"${p50[$n]:-}") b=$(med <<<"${p99[$n]:-}")
    m[$n,50]=$a m[$n,99]=$b
    printf 'bidi ping-pong 16B x %s  %-5s p50 %8s us  p99 %8s us  (rounds p50: %s; p99: %s)\n' "$pp_n" "$n" "$a" "$b" \
      "${p50[$n]% }" "${p99[$n]% }"
  done
  [[ -n ${m[ours,50]:-} && -n ${m[go,50]:-} ]] &&
    echo "  ratio ours/go p50 = $(ratio "${m[ours,50]}" "${m[go,50]}"), p99 = $(ratio "${m[ours,99]}" "${m[go,99]}") (lower is better)"
fi
if has mem; then
  for n in "${names[@]}"; do
    a=$(med <<<"${mem[$n]:-}")
    m[$n,mem]=$a
    case $n in
      # grace_grpc_options.max_send_buffer (256 KiB) + the HTTP/2 stream's
      # queue (256 KiB) + up to two messages past them (grpc.h) + this
      # stream's share of its connection's 256 KiB write queue.
      ours) bound=$(awk -v m="$hold_size" -v c="$conns" -v s="$streams" \
              'BEGIN {printf "%.0f", 262144 + 262144 + 2 * (m + 5 + 24) + 262144 * c / s}')
            what="bound $bound B = max_send_buffer 256 KiB + HTTP/2 stream queue 256 KiB + 2 msgs + 1/$((streams / conns)) of the 256 KiB conn write queue; +64 KiB window on the client" ;;
      go) what="grpc-go: 64 KiB write quota per stream (transport defaultWriteQuota) + the goroutine; +64 KiB window on the client" ;;
    esac
    printf 'memory, %s stalled streams, %-5s %9s B/stream  (rounds: %s; idle RSS KiB: %s)\n' "$streams" "$n" "$a" \
      "${mem[$n]% }" "${idle[$n]% }"
    echo "  $what"
  done
  [[ -n ${m[ours,mem]:-} && -n ${m[go,mem]:-} ]] &&
    echo "  ratio ours/go = $(ratio "${m[ours,mem]}" "${m[go,mem]}") (lower is better)"
fi
exit $bad
