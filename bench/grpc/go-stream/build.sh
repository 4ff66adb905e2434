#!/bin/bash
# Build the grpc-go programs of bench/grpc_stream.sh offline, in GOPATH mode,
# from Debian's golang-google-grpc-dev: the peer server
# (go-stream/server/main.go -> OUT/stream-server-go) and the one client both
# servers are read with (go-stream/client/main.go -> OUT/stream-client-go).
# No generated code: raw-byte methods, a codec that passes []byte through.
# Usage: build.sh [OUT]   (default bench/out/grpc); prints the two paths.
# Rebuilds a binary only when its main.go or this script is newer.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../../.." && pwd)
out=${1:-${GRACE_BENCH_OUT:-$repo/bench/out}/grpc}
command -v go >/dev/null || { echo "go-stream: go not found (apt-get install golang-go)" >&2; exit 1; }
[[ -d /usr/share/gocode/src/google.golang.org/grpc ]] || {
  echo "go-stream: grpc-go not found (apt-get install golang-google-grpc-dev golang-github-golang-protobuf-1-5-dev)" >&2
  exit 1
}
mkdir -p "$out/go"
for prog in server client; do
  bin=$out/stream-$prog-go
  if ! [[ -x $bin && $bin -nt $here/$prog/main.go && $bin -nt $0 ]]; then
    (
      cd "$here/$prog"
      GO111MODULE=off GOFLAGS='' GOPROXY=off GOTOOLCHAIN=local GOCACHE="$out/go/cache" \
        GOPATH="/usr/share/gocode" go build -o "$bin" .
    )
  fi
  echo "$bin"
done
