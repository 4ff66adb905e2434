#!/usr/bin/env bash
# demo.sh BIN_DIR [SCENARIO...]
#
# Plays the seed article's scenarios end to end with the real programs, real
# signals and curl, and prints a transcript: what is done, the server's log,
# curl's output and the exit codes, with what each shows.  `make demo` runs it
# after the build with BIN_DIR = build/examples.  Exits non-zero if a scenario
# did not behave as the seed says.  Everything listens on 127.0.0.1 only.
#
# Adding a scenario (gRPC, syncer, ...): write a function scenario_<name> that
# tells its story with title/explain/step/show_file, starts processes with
# start_server/start_bg (they are killed by pid when it ends), reaps them with
# wait_exit, and states each expectation with `check DESCRIPTION expect_...`;
# a failed check (or a non-zero return) fails the scenario.  Then add <name>
# to ALL_SCENARIOS below.  `demo.sh BIN_DIR NAME...` plays only those.

# Functions are called through "scenario_$name", `check` and the EXIT trap.
# shellcheck disable=SC2317
set -u

ALL_SCENARIOS=(http_one_signal http_two_signals http_deadline)
# shellcheck source=scripts/demo_syncer.sh
. "$(dirname "${BASH_SOURCE[0]}")/demo_syncer.sh"
ALL_SCENARIOS+=(syncer_one_signal syncer_two_signals)
# shellcheck source=scripts/demo_grpc.sh
. "$(dirname "${BASH_SOURCE[0]}")/demo_grpc.sh"
ALL_SCENARIOS+=(grpc_one_signal grpc_two_signals)
# shellcheck source=scripts/demo_group.sh
. "$(dirname "${BASH_SOURCE[0]}")/demo_group.sh"
ALL_SCENARIOS+=(group_readiness)
# shellcheck source=scripts/demo_upgrade.sh
. "$(dirname "${BASH_SOURCE[0]}")/demo_upgrade.sh"
ALL_SCENARIOS+=(upgrade_under_load)

BIN_DIR=${1:?usage: demo.sh BIN_DIR [SCENARIO...]}
shift
SCENARIOS=("${ALL_SCENARIOS[@]}")
[ $# -gt 0 ] && SCENARIOS=("$@")

WORK=$(mktemp -d "${TMPDIR:-/tmp}/grace-demo.XXXXXX")
PIDS=()        # every process this script started, killed by pid on exit
server_pid=    # set by start_bg server ...
curl_pid=      # set by start_bg curl ...

cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do
    kill -9 "$pid" 2>/dev/null
  done
  rm -rf "$WORK"
}
trap cleanup EXIT

# signal_and_collect SIG NOTE CLIENT LABEL: sends SIG to the server (NOTE is
# the comment shown beside the command), waits for the server, then for the
# client started as CLIENT with start_bg; shows their output and sets rc,
# crc and dt (signal -> server exit, in ms; LABEL names it in the summary).
signal_and_collect() {
  local sig=$1 note=$2 client=$3 label=$4 pid_var="${3}_pid" t_sig t_exit
  step "kill -$sig $server_pid        $note"
  t_sig=$(now_ms)
  kill "-$sig" "$server_pid"
  wait_exit "$server_pid" 10
  rc=$RC
  t_exit=$(now_ms)
  wait_exit "${!pid_var}" 10
  crc=$RC
  dt=$((t_exit - t_sig))
  show_file "server log (stderr)" "$WORK/server.err"
  show_file "$client stdout" "$WORK/$client.out"
  show_file "$client stderr" "$WORK/$client.err"
  printf '    server exit status: %s, %s exit status: %s, %s -> exit: %d ms\n' \
    "$rc" "$client" "$crc" "$label" "$dt"
}

# ---------------------------------------------------------------------------
# Transcript helpers

title()   { printf '\n==== %s ====\n' "$*"; }
explain() { printf '  %s\n' "$*"; }
step()    { printf '\n  $ %s\n' "$*"; }
indent()  { sed 's/^/      /'; }
show_file() { # show_file LABEL FILE
  printf '    %s:\n' "$1"
  if [ ! -s "$2" ]; then printf '      (nothing)\n'; return; fi
  indent <"$2"
  [ -z "$(tail -c 1 "$2")" ] || printf '\n'    # the body may lack a final newline
}

FAILED_CHECKS=0
check() { # check DESCRIPTION COMMAND...: one expectation, printed as ok/FAIL
  local what=$1
  shift
  if "$@"; then
    printf '    ok    %s\n' "$what"
  else
    printf '    FAIL  %s\n' "$what"
    FAILED_CHECKS=$((FAILED_CHECKS + 1))
  fi
}
expect_eq() { [ "$1" = "$2" ]; }
expect_file_eq() { [ "$(cat "$1")" = "$2" ]; }
expect_grep() { grep -qF -- "$2" "$1"; }
expect_between() { [ "$1" -ge "$2" ] && [ "$1" -le "$3" ]; }

now_ms() { date +%s%3N; }

# ---------------------------------------------------------------------------
# Process helpers

# A port on 127.0.0.1 that nothing answers on right now, below the
# ephemeral range: a port clients use for their own end (wrk's, under
# load) cannot be bound for listening.
free_port() {
  local _ port low=32768
  read -r low _ </proc/sys/net/ipv4/ip_local_port_range 2>/dev/null
  [ "$low" -gt 12000 ] 2>/dev/null || low=32768
  for _ in $(seq 1 50); do
    port=$((10000 + RANDOM % (low - 10000)))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      echo "$port"
      return 0
    fi
  done
  return 1
}

# Poll-connect every 10 ms, up to 10 s, while the process lives.
wait_port() { # wait_port PORT PID
  local _
  for _ in $(seq 1 1000); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    exited "$2" && return 1
    sleep 0.01
  done
  return 1
}

# True once the child has exited (it is a zombie until `wait` reaps it).
exited() {
  local state
  state=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1) || return 0
  [ -z "$state" ] || [ "$state" = Z ]
}

# wait_exit PID SECONDS: waits for the child, sets RC to its exit status; after
# SECONDS it is killed with SIGKILL and RC is "timeout".
wait_exit() {
  local deadline=$(($(now_ms) + $2 * 1000))
  RC=
  while ! exited "$1"; do
    if [ "$(now_ms)" -gt "$deadline" ]; then
      kill -9 "$1" 2>/dev/null
      RC=timeout
      break
    fi
    sleep 0.005
  done
  wait "$1"
  local status=$?
  [ -n "$RC" ] || RC=$status
  forget "$1"
}

# A reaped child is no longer ours to kill.
forget() {
  local keep=() p
  for p in "${PIDS[@]}"; do [ "$p" = "$1" ] || keep+=("$p"); done
  PIDS=("${keep[@]}")
}

# start_bg NAME CMD...: runs CMD in the background, stdout and stderr in
# $WORK/NAME.out and $WORK/NAME.err; its pid in the variable NAME_pid.
start_bg() {
  local name=$1
  shift
  "$@" >"$WORK/$name.out" 2>"$WORK/$name.err" &
  PIDS+=($!)
  printf -v "${name}_pid" '%s' "$!"
}

# start_server PROGRAM FLAGS...: starts $BIN_DIR/PROGRAM on a free port (flag
# -addr added), waits until it listens; sets server_pid and PORT.
start_server() {
  local prog=$1
  shift
  PORT=$(free_port) || { echo "    no free port found"; return 1; }
  step "$prog -addr 127.0.0.1:$PORT${*:+ $*} &"
  start_bg server "$BIN_DIR/$prog" -addr "127.0.0.1:$PORT" "$@"
  if ! wait_port "$PORT" "$server_pid"; then
    echo "    the server did not start listening:"
    indent <"$WORK/server.err"
    return 1
  fi
}

# The messages of the server's Go log lines ("2024/08/22 09:24:46 message").
log_messages() {
  sed -n 's#^[0-9]\{4\}/[0-9][0-9]/[0-9][0-9] [0-9][0-9]:[0-9][0-9]:[0-9][0-9] ##p' "$WORK/server.err"
}

# ---------------------------------------------------------------------------
# Scenarios (seed: "HTTP Server 优雅退出")

scenario_http_one_signal() {
  title "HTTP 1: one Ctrl+C while a slow request is in flight"
  explain "The seed's first run: a client asks for /sleep?duration=5s (3s here), the"
  explain "operator presses Ctrl+C once. The server stops accepting, lets the request"
  explain "finish, and exits 0 the moment the last connection closes."
  start_server http-sleep-server || return 1
  step "curl \"http://127.0.0.1:$PORT/sleep?duration=3s\" &"
  start_bg curl curl -sS --max-time 15 "http://127.0.0.1:$PORT/sleep?duration=3s"
  sleep 0.5
  local rc crc dt
  signal_and_collect INT "# Ctrl+C once" curl "signal"
  explain "What it shows: the in-flight client still got its answer; exit 0."
  check "server exits 0" expect_eq "$rc" 0
  check "curl exits 0" expect_eq "$crc" 0
  check "curl prints 'Welcome HTTP Server'" expect_file_eq "$WORK/curl.out" "Welcome HTTP Server"
  check "log: Shutdown Server... / Stopped serving new connections / HTTP server graceful shutdown completed" \
    expect_eq "$(log_messages)" "Shutdown Server...
Stopped serving new connections
HTTP server graceful shutdown completed"
  check "the request was finished, not cut (signal -> exit >= 2 s)" \
    expect_between "$dt" 2000 5000
}

scenario_http_two_signals() {
  title "HTTP 2: Ctrl+C twice"
  explain "The seed's second run: a second Ctrl+C during the graceful shutdown ends the"
  explain "process at once with status 1; the in-flight client gets no reply at all."
  start_server http-sleep-server || return 1
  step "curl \"http://127.0.0.1:$PORT/sleep?duration=5s\" &"
  start_bg curl curl -sS --max-time 15 "http://127.0.0.1:$PORT/sleep?duration=5s"
  sleep 0.5
  step "kill -INT $server_pid        # Ctrl+C"
  kill -INT "$server_pid"
  sleep 0.3
  local rc crc dt
  signal_and_collect INT "# Ctrl+C again" curl "second signal"
  explain "What it shows: a second signal does not wait for anything."
  check "server exits 1" expect_eq "$rc" 1
  check "server exits at once (< 1 s after the second signal)" \
    expect_between "$dt" 0 1000
  check "curl exits 52" expect_eq "$crc" 52
  check "curl: (52) Empty reply from server" expect_grep "$WORK/curl.err" "curl: (52) Empty reply from server"
  check "log: Shutdown Server... / Stopped serving new connections" \
    expect_eq "$(log_messages)" "Shutdown Server...
Stopped serving new connections"
}

scenario_http_deadline() {
  title "HTTP 3: the shutdown deadline"
  explain "A request that outlives the deadline (10 s request, -shutdown-timeout 1s): the"
  explain "shutdown gives up after 1 s, drops the connection and exits 1."
  start_server http-sleep-server -shutdown-timeout 1s || return 1
  step "curl \"http://127.0.0.1:$PORT/sleep?duration=10s\" &"
  start_bg curl curl -sS --max-time 15 "http://127.0.0.1:$PORT/sleep?duration=10s"
  sleep 0.5
  local rc crc dt
  signal_and_collect TERM "# what Kubernetes sends" curl "signal"
  explain "What it shows: the deadline bounds the shutdown; what is left is cut."
  check "server exits 1" expect_eq "$rc" 1
  check "exit about 1 s after the signal (0.9 .. 2.5 s)" expect_between "$dt" 900 2500
  check "log: HTTP server Shutdown: context deadline exceeded" \
    expect_grep "$WORK/server.err" "HTTP server Shutdown: context deadline exceeded"
  check "curl gets no reply (exit 52)" expect_eq "$crc" 52
}

# ---------------------------------------------------------------------------

command -v curl >/dev/null || { echo "demo.sh: curl is needed" >&2; exit 2; }
[ -x "$BIN_DIR/http-sleep-server" ] || { echo "demo.sh: no $BIN_DIR/http-sleep-server (build first)" >&2; exit 2; }

for s in "${SCENARIOS[@]}"; do
  if ! declare -F "scenario_$s" >/dev/null; then
    echo "demo.sh: no scenario '$s' (known: ${ALL_SCENARIOS[*]})" >&2
    exit 2
  fi
done

failed=()
for s in "${SCENARIOS[@]}"; do
  FAILED_CHECKS=0
  if ! "scenario_$s" || [ "$FAILED_CHECKS" -ne 0 ]; then
    failed+=("$s")
  fi
  # Nothing a scenario started outlives it.
  for pid in "${PIDS[@]}"; do kill -9 "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; done
  PIDS=()
done

printf '\n==== summary ====\n'
if [ ${#failed[@]} -eq 0 ]; then
  echo "  all ${#SCENARIOS[@]} scenarios behaved as the seed says"
  exit 0
fi
echo "  FAILED: ${failed[*]}"
exit 1
