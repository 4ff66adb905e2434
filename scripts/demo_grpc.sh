# demo_grpc.sh: the seed's gRPC scenarios, for scripts/demo.sh.
#
# Sourced by demo.sh (not run on its own); it uses demo.sh's helpers (title,
# explain, step, show_file, start_bg, wait_exit, signal_and_collect, check,
# expect_*, now_ms, free_port, wait_port, log_messages) and its variables
# (BIN_DIR, WORK, server_pid, RC).
#
# Seed: "gRPC Server 优雅退出" — greeter-server's SayHello sleeps `duration`
# and replies "Hello <name>"; greeter-client calls it with name "world",
# duration 10s (3s here) and a 60 s deadline; at the server's first signal
# GracefulStop lets the call finish, at the second the process exits 1.
# shellcheck shell=bash disable=SC2317,SC2154

# start_greeter: starts greeter-server on a free port; sets PORT.
start_greeter() {
  PORT=$(free_port) || { echo "    no free port found"; return 1; }
  step "greeter-server -port $PORT &"
  start_bg server "$BIN_DIR/greeter-server" -port "$PORT"
  if ! wait_port "$PORT" "$server_pid"; then
    echo "    the server did not start listening:"
    indent <"$WORK/server.err"
    return 1
  fi
}

scenario_grpc_one_signal() {
  title "gRPC 1: one Ctrl+C while a call is in flight"
  explain "greeter-client calls SayHello(world, 3s); Ctrl+C at the server 0.5 s later."
  explain "GracefulStop: listeners closed, GOAWAY(2^31-1)+PING, then the final GOAWAY;"
  explain "the call completes, and the server exits 0 the moment it is done."
  start_greeter || return 1
  step "greeter-client -addr localhost:$PORT -name world -duration 3s -timeout 60s &"
  start_bg client "$BIN_DIR/greeter-client" -addr "localhost:$PORT" -name world \
    -duration 3s -timeout 60s
  sleep 0.5
  local rc crc dt
  signal_and_collect INT "# Ctrl+C once" client "signal"
  explain "What it shows: the call in flight still got its reply; exit 0."
  check "server exits 0" expect_eq "$rc" 0
  check "client exits 0" expect_eq "$crc" 0
  check "client: Greeting: Hello world" expect_grep "$WORK/client.err" "Greeting: Hello world"
  check "log ends: Shutdown Server... / gRPC server graceful shutdown completed" \
    expect_eq "$(log_messages | tail -2)" "Shutdown Server...
gRPC server graceful shutdown completed"
  check "the call was finished, not cut (signal -> exit >= 2 s)" \
    expect_between "$dt" 2000 5000
}

scenario_grpc_two_signals() {
  title "gRPC 2: Ctrl+C twice"
  explain "A second Ctrl+C during GracefulStop ends the server at once with status 1;"
  explain "the client's call fails (Unavailable) instead of hanging."
  start_greeter || return 1
  step "greeter-client -addr localhost:$PORT -duration 10s &"
  start_bg client "$BIN_DIR/greeter-client" -addr "localhost:$PORT" -duration 10s
  sleep 0.5
  step "kill -INT $server_pid        # Ctrl+C"
  kill -INT "$server_pid"
  sleep 0.3
  local rc crc dt
  signal_and_collect INT "# Ctrl+C again" client "second signal"
  check "server exits 1" expect_eq "$rc" 1
  check "server exits at once (< 1 s after the second signal)" \
    expect_between "$dt" 0 1000
  check "client exits 1" expect_eq "$crc" 1
  check "client: could not greet: rpc error: code = Unavailable" \
    expect_grep "$WORK/client.err" "could not greet: rpc error: code = Unavailable"
}
