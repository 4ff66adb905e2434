# benchlib.sh: shell helpers shared by the bench/*_throughput.sh scripts.
# Sourced, not run.  The caller declares the associative array `pid`
# (server name -> pid) before sourcing; the EXIT trap kills what is left.
# shellcheck shell=bash disable=SC2154

# shellcheck disable=SC2317  # called by the EXIT trap
cleanup() {
  local n
  for n in "${!pid[@]}"; do
    kill -KILL "${pid[$n]}" 2>/dev/null || true
  done
}
trap cleanup EXIT

wait_port() { # port pid: poll-connect every 10 ms, up to 10 s
  local i
  for ((i = 0; i < 1000; i++)); do
    kill -0 "$2" 2>/dev/null || { echo "server (pid $2) exited early" >&2; return 1; }
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.01
  done
  echo "nothing accepts on 127.0.0.1:$1" >&2
  return 1
}
