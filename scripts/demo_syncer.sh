# demo_syncer.sh: the seed's Syncer scenarios, for scripts/demo.sh.
#
# Sourced by demo.sh (not run on its own); it uses demo.sh's helpers (title,
# explain, step, show_file, start_bg, wait_exit, check, expect_*, now_ms,
# log_messages) and its variables (BIN_DIR, WORK, server_pid, RC).  The
# program is examples/syncer, started as the "server" of the scenario so
# that log_messages reads its log.
#
# Seed: "普通 Go 程序的优雅退出" — a time.Ticker loop that logs "do something"
# every second; at Ctrl+C it logs "Stop loop", then Stop() logs "Stop Syncer
# start", sleeps 5 s and logs "Stop Syncer done"; a second Ctrl+C during
# those 5 s ends the program at once.

# Functions are called through "scenario_$name"; server_pid, WORK and
# BIN_DIR are demo.sh's.
# shellcheck shell=bash disable=SC2317,SC2154

# syncer_wait_line PATTERN SECONDS: waits until the syncer's log has a line
# matching the fixed string PATTERN; false after SECONDS or if it exited.
syncer_wait_line() {
  local deadline=$(($(now_ms) + $2 * 1000))
  until grep -qF -- "$1" "$WORK/server.err" 2>/dev/null; do
    exited "$server_pid" && return 1
    [ "$(now_ms)" -gt "$deadline" ] && return 1
    sleep 0.01
  done
}

# The number of "do something" lines so far.
syncer_ticks() {
  log_messages | grep -cx 'do something'
}

# start_syncer FLAGS...: starts $BIN_DIR/syncer in the background.
start_syncer() {
  if [ ! -x "$BIN_DIR/syncer" ]; then
    echo "    no $BIN_DIR/syncer (build first)"
    return 1
  fi
  step "syncer${*:+ $*} &"
  start_bg server "$BIN_DIR/syncer" "$@"
}

scenario_syncer_one_signal() {
  title "Syncer 1: one Ctrl+C while the loop runs"
  explain "The seed's periodic task: 'do something' every second. One Ctrl+C stops the"
  explain "loop at once (no waiting for the next tick), then the cleanup runs to its end"
  explain "(the seed's 5 s, 2 s here) and the program exits 0."
  start_syncer -interval 1s -cleanup 2s || return 1
  if ! syncer_wait_line "do something" 5; then
    echo "    the syncer did not tick:"
    indent <"$WORK/server.err"
    return 1
  fi
  sleep 2.3 # three ticks in all, then Ctrl+C between two ticks
  step "kill -INT $server_pid        # Ctrl+C once"
  local t_sig t_start t_exit rc ticks
  t_sig=$(now_ms)
  kill -INT "$server_pid"
  syncer_wait_line "Stop Syncer start" 5
  t_start=$(now_ms)
  wait_exit "$server_pid" 10
  rc=$RC
  t_exit=$(now_ms)
  ticks=$(syncer_ticks)
  show_file "syncer log (stderr)" "$WORK/server.err"
  printf '    exit status: %s, signal -> "Stop Syncer start": %d ms, signal -> exit: %d ms\n' \
    "$rc" $((t_start - t_sig)) $((t_exit - t_sig))
  explain "What it shows: the stop does not wait for a tick; the cleanup is not cut."
  check "syncer exits 0" expect_eq "$rc" 0
  check "3 ticks before the signal" expect_eq "$ticks" 3
  check "log: do something x3 / Stop loop / Stop Syncer start / Stop Syncer done" \
    expect_eq "$(log_messages)" "do something
do something
do something
Stop loop
Stop Syncer start
Stop Syncer done"
  check "the loop stops at once (signal -> 'Stop Syncer start' < 300 ms)" \
    expect_between $((t_start - t_sig)) 0 300
  check "the cleanup runs its 2 s, no more (signal -> exit 2.0 .. 2.6 s)" \
    expect_between $((t_exit - t_sig)) 2000 2600
}

scenario_syncer_two_signals() {
  title "Syncer 2: Ctrl+C twice"
  explain "The seed's second run: a second Ctrl+C during the cleanup ends the process at"
  explain "once with status 1; 'Stop Syncer done' is never printed."
  start_syncer -interval 1s -cleanup 5s || return 1
  if ! syncer_wait_line "do something" 5; then
    echo "    the syncer did not tick:"
    indent <"$WORK/server.err"
    return 1
  fi
  step "kill -INT $server_pid        # Ctrl+C"
  kill -INT "$server_pid"
  syncer_wait_line "Stop Syncer start" 5
  sleep 0.3
  step "kill -INT $server_pid        # Ctrl+C again, during the 5 s cleanup"
  local t_sig t_exit rc
  t_sig=$(now_ms)
  kill -INT "$server_pid"
  wait_exit "$server_pid" 10
  rc=$RC
  t_exit=$(now_ms)
  show_file "syncer log (stderr)" "$WORK/server.err"
  printf '    exit status: %s, second signal -> exit: %d ms\n' "$rc" $((t_exit - t_sig))
  explain "What it shows: a second signal does not wait for the cleanup."
  check "syncer exits 1" expect_eq "$rc" 1
  check "it exits at once (< 1 s after the second signal)" \
    expect_between $((t_exit - t_sig)) 0 1000
  check "log ends with Stop loop / Stop Syncer start" \
    expect_eq "$(log_messages | tail -n 2)" "Stop loop
Stop Syncer start"
  check "no 'Stop Syncer done'" expect_eq "$(log_messages | grep -c 'Stop Syncer done')" 0
}
