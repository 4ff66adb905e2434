# demo_upgrade.sh: a zero-downtime upgrade, for scripts/demo.sh.
#
# Sourced by demo.sh (not run on its own); it uses demo.sh's helpers (title,
# explain, step, show_file, start_bg, wait_exit, check, expect_*, now_ms,
# free_port, wait_port, indent) and its variables (BIN_DIR, WORK, PIDS,
# server_pid, RC).
#
# Beyond the seed: grace-demo-server is installed at a path of its own and
# upgraded under load.  grace-upgrade asks the running process for the
# upgrade; it starts the binary at that path on the same listening sockets,
# waits until the new process serves, then drains and exits 0.  wrk and a
# slow request show that nothing was refused or lost.
# shellcheck shell=bash disable=SC2317,SC2154

# gone PID: true once a process that is not our child has exited.
gone() { [ ! -d "/proc/$1" ] || exited "$1"; }

scenario_upgrade_under_load() {
  title "Upgrade: a new process takes over the sockets under load"
  explain "grace-demo-server runs from $WORK/app; wrk keeps 8 keep-alive connections busy"
  explain "and a /sleep request is in flight.  A new binary is put at the path and"
  explain "grace-upgrade asks for the upgrade: the new process inherits the listening"
  explain "sockets, says it is ready, and only then does the old one stop accepting,"
  explain "finish what it has (keep-alive connections are told to close with their next"
  explain "answer) and exit 0."
  local hport gport old new rc urc wrc ccrc t0 t1
  hport=$(free_port) || { echo "    no free port found"; return 1; }
  gport=$(free_port) || { echo "    no free port found"; return 1; }
  cp "$BIN_DIR/grace-demo-server" "$WORK/app"
  step "grace-demo-server -addr 127.0.0.1:$hport -grpc-addr 127.0.0.1:$gport -pidfile $WORK/app.pid -upgrade-socket $WORK/control.sock &"
  start_bg server "$WORK/app" -addr "127.0.0.1:$hport" -grpc-addr "127.0.0.1:$gport" \
    -pidfile "$WORK/app.pid" -upgrade-socket "$WORK/control.sock" -interval 1s -loops 1
  if ! wait_port "$hport" "$server_pid" || ! wait_port "$gport" "$server_pid"; then
    echo "    the server did not start listening:"
    indent <"$WORK/server.err"
    return 1
  fi
  old=$server_pid
  step "wrk -t 2 -c 8 -d 4s http://127.0.0.1:$hport/ &"
  start_bg wrk wrk -t 2 -c 8 -d 4s "http://127.0.0.1:$hport/"
  step "curl http://127.0.0.1:$hport/sleep?duration=2s &"
  start_bg curl curl -sS --max-time 10 "http://127.0.0.1:$hport/sleep?duration=2s"
  sleep 1
  step "cp grace-demo-server $WORK/app.new && mv $WORK/app.new $WORK/app   # deploy"
  cp "$BIN_DIR/grace-demo-server" "$WORK/app.new" && mv "$WORK/app.new" "$WORK/app"
  step "grace-upgrade -socket $WORK/control.sock"
  t0=$(now_ms)
  "$BIN_DIR/grace-upgrade" -socket "$WORK/control.sock" >"$WORK/upgrade.out" 2>&1
  urc=$?
  t1=$(now_ms)
  indent <"$WORK/upgrade.out"
  new=$(cat "$WORK/app.pid" 2>/dev/null)
  [ -n "$new" ] && [ "$new" != "$old" ] && PIDS+=("$new")
  printf '    grace-upgrade exit status: %s after %d ms; PID file: %s (was %s)\n' \
    "$urc" $((t1 - t0)) "$new" "$old"
  wait_exit "$old" 15
  rc=$RC
  wait_exit "$wrk_pid" 15
  wrc=$RC
  wait_exit "$curl_pid" 5
  ccrc=$RC
  show_file "server log (both processes share stderr)" "$WORK/server.err"
  show_file "wrk" "$WORK/wrk.out"
  show_file "curl output" "$WORK/curl.out"
  local ready
  ready=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "http://127.0.0.1:$hport/readyz")
  step "curl /readyz -> $ready        # answered by pid $new"
  step "kill -TERM $new        # the new process stops as any would"
  kill -TERM "$new" 2>/dev/null
  local i
  for i in $(seq 1 1000); do gone "$new" && break; sleep 0.01; done
  explain "What it shows: the old process handed its sockets over and drained (its"
  explain "request finished, the report is clean, exit 0); wrk saw no error and no"
  explain "non-2xx answer while the process behind the port changed."
  check "grace-upgrade exits 0" expect_eq "$urc" 0
  check "grace-upgrade: upgraded: pid $new serves" expect_grep "$WORK/upgrade.out" "upgraded: pid $new serves"
  check "the PID file names the new process" expect_eq "$([ "$new" != "$old" ] && echo yes)" yes
  check "log: the new process is ready, the old one drains" \
    expect_grep "$WORK/server.err" "Upgrade: pid $new is ready after"
  check "log: Shutdown started (handed over to pid $new)" \
    expect_grep "$WORK/server.err" "Shutdown started (handed over to pid $new)"
  check "old process: drain report clean" expect_grep "$WORK/server.err" "Drain report: result=clean"
  check "old process exits 0" expect_eq "$rc" 0
  check "curl in flight got Welcome HTTP Server" expect_file_eq "$WORK/curl.out" "Welcome HTTP Server"
  check "curl exits 0" expect_eq "$ccrc" 0
  check "wrk exits 0" expect_eq "$wrc" 0
  check "wrk: no socket error" expect_eq "$(grep -c 'Socket errors' "$WORK/wrk.out")" 0
  check "wrk: no non-2xx answer" expect_eq "$(grep -c 'Non-2xx' "$WORK/wrk.out")" 0
  check "the new process serves: /readyz 200" expect_eq "$ready" 200
  check "the new process stopped on SIGTERM" gone "$new"
  check "its PID file is removed" expect_eq "$([ -e "$WORK/app.pid" ] || echo gone)" gone
}
