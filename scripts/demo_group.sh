# demo_group.sh: the lifecycle group, for scripts/demo.sh.
#
# Sourced by demo.sh (not run on its own); it uses demo.sh's helpers (title,
# explain, step, show_file, start_bg, wait_exit, check, expect_*, now_ms,
# free_port, wait_port, log_messages) and its variables (BIN_DIR, WORK,
# server_pid, RC).
#
# Beyond the seed: grace-demo-server runs an HTTP server, a gRPC server and
# the Syncer in one group.  Readiness goes first: at the signal /readyz
# answers 503 at once, but requests are still served for the shutdown
# delay (so a load balancer can stop sending traffic); then every server
# drains in parallel, the Syncer cleans up, each phase is logged, and one
# drain report ends the log.
# shellcheck shell=bash disable=SC2317,SC2154

# http_status PORT PATH: the HTTP status of GET PATH ("000" if none).
http_status() {
  curl -s -o /dev/null -w '%{http_code}' --max-time 2 "http://127.0.0.1:$1$2"
}

scenario_group_readiness() {
  title "Group: readiness before drain (HTTP + gRPC + Syncer in one group)"
  explain "grace-demo-server -shutdown-delay 1s; a /sleep request and a SayHello call in"
  explain "flight; SIGTERM: /readyz 503 at once, a new request still served during the"
  explain "delay, then both servers drain in parallel; phases, drain report, exit 0."
  local hport gport t_sig t_exit rc crc ccrc ready_before ready_after during
  hport=$(free_port) || { echo "    no free port found"; return 1; }
  gport=$(free_port) || { echo "    no free port found"; return 1; }
  step "grace-demo-server -addr 127.0.0.1:$hport -grpc-addr 127.0.0.1:$gport -shutdown-delay 1s -shutdown-timeout 10s -interval 500ms -cleanup 300ms &"
  start_bg server "$BIN_DIR/grace-demo-server" -addr "127.0.0.1:$hport" \
    -grpc-addr "127.0.0.1:$gport" -shutdown-delay 1s -shutdown-timeout 10s \
    -interval 500ms -cleanup 300ms
  if ! wait_port "$hport" "$server_pid" || ! wait_port "$gport" "$server_pid"; then
    echo "    the server did not start listening:"
    indent <"$WORK/server.err"
    return 1
  fi
  ready_before=$(http_status "$hport" /readyz)
  step "curl /readyz  -> $ready_before"
  step "curl http://127.0.0.1:$hport/sleep?duration=2s &"
  start_bg curl curl -s --max-time 10 "http://127.0.0.1:$hport/sleep?duration=2s"
  step "greeter-client -addr localhost:$gport -name world -duration 2s -timeout 60s &"
  start_bg client "$BIN_DIR/greeter-client" -addr "localhost:$gport" -name world \
    -duration 2s -timeout 60s
  sleep 0.5
  step "kill -TERM $server_pid"
  t_sig=$(now_ms)
  kill -TERM "$server_pid"
  ready_after=$(http_status "$hport" /readyz)
  step "curl /readyz  -> $ready_after        # at once"
  sleep 0.3
  during=$(http_status "$hport" /)
  step "curl /        -> $during        # a new request, during the delay"
  wait_exit "$server_pid" 10
  rc=$RC
  t_exit=$(now_ms)
  wait_exit "$curl_pid" 5
  ccrc=$RC
  wait_exit "$client_pid" 5
  crc=$RC
  show_file "server log (stderr)" "$WORK/server.err"
  show_file "curl output" "$WORK/curl.out"
  show_file "client log (stderr)" "$WORK/client.err"
  printf '    server exit status: %s, signal -> exit: %d ms\n' "$rc" $((t_exit - t_sig))
  explain "What it shows: not ready first, still serving through the delay, then a"
  explain "parallel drain in which both calls in flight completed; exit 0."
  check "/readyz 200 before the signal" expect_eq "$ready_before" 200
  check "/readyz 503 at once after the signal" expect_eq "$ready_after" 503
  check "a new request is still served during the delay" expect_eq "$during" 200
  check "curl got Welcome HTTP Server" expect_file_eq "$WORK/curl.out" "Welcome HTTP Server"
  check "curl exits 0" expect_eq "$ccrc" 0
  check "client: Greeting: Hello world" expect_grep "$WORK/client.err" "Greeting: Hello world"
  check "client exits 0" expect_eq "$crc" 0
  check "phases in order" expect_eq "$(log_messages | grep -oE '^Shutdown phase [0-9]' | tr '\n' ' ')" \
    "Shutdown phase 1 Shutdown phase 2 Shutdown phase 3 "
  check "the drain report says clean, 1 request and 1 RPC completed" \
    expect_grep "$WORK/server.err" "result=clean"
  check "requests_completed=1 rpcs_completed=1" \
    expect_grep "$WORK/server.err" "requests_completed=1 rpcs_completed=1 "
  check "the Syncer cleaned up" expect_grep "$WORK/server.err" "Stop Syncer done"
  check "server exits 0" expect_eq "$rc" 0
}
