#!/bin/bash
# Build the grpc-go peer (bench/grpc/go-greeter/main.go) offline, in GOPATH
# mode, from Debian's packages; print the binary's path on stdout.
#
#   protoc + protoc-gen-go (Debian protoc-gen-go) + protoc-gen-go-grpc (Debian
#   protoc-gen-go-grpc) generate package "gracebench/pb" from
#   examples/proto/helloworld.proto into a scratch GOPATH under OUT; then
#   GO111MODULE=off GOPATH=OUT/gopath:/usr/share/gocode go build.
#
# Needs: golang-go, golang-google-grpc-dev, golang-github-golang-protobuf-1-5-dev
# (with -1-3-dev instead, grpc-go panics at start), protobuf-compiler,
# protoc-gen-go, protoc-gen-go-grpc. No network, no modules.
# Usage: build.sh [OUT]   (default bench/out/grpc; binary OUT/greeter-server-go)
# Rebuilds only when main.go, the proto or this script is newer than the binary.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../../.." && pwd)
out=${1:-${GRACE_BENCH_OUT:-$repo/bench/out}/grpc}
bin=$out/greeter-server-go
proto=$repo/examples/proto/helloworld.proto

if [[ -x $bin && $bin -nt $here/main.go && $bin -nt $proto && $bin -nt $0 ]]; then
  echo "$bin"
  exit 0
fi
for tool in go protoc protoc-gen-go protoc-gen-go-grpc; do
  command -v "$tool" >/dev/null || {
    echo "go-greeter: $tool not found (apt-get install golang-go protobuf-compiler protoc-gen-go protoc-gen-go-grpc)" >&2
    exit 1
  }
done
[[ -d /usr/share/gocode/src/google.golang.org/grpc ]] || {
  echo "go-greeter: grpc-go not found (apt-get install golang-google-grpc-dev golang-github-golang-protobuf-1-5-dev)" >&2
  exit 1
}
# Debian's grpc depends on protobuf-1-3-dev OR -1-5-dev; with 1.3 the server
# panics at start, so say so here rather than at run time.
if command -v dpkg-query >/dev/null &&
   ! dpkg-query -W -f='${Status}' golang-github-golang-protobuf-1-5-dev 2>/dev/null | grep -q 'ok installed'; then
  echo "go-greeter: golang-github-golang-protobuf-1-5-dev is not installed (grpc-go panics with -1-3-dev):" \
    "apt-get install golang-github-golang-protobuf-1-5-dev" >&2
  exit 1
fi

gopath=$out/go/gopath
pb=$gopath/src/gracebench/pb
main=$gopath/src/gracebench/greeter
mkdir -p "$pb" "$main"
protoc -I "$(dirname "$proto")" --go_out="$pb" --go-grpc_out="$pb" "$proto"
cp "$here/main.go" "$main/main.go"
(
  cd "$main"
  GO111MODULE=off GOFLAGS='' GOPROXY=off GOTOOLCHAIN=local GOCACHE="$out/go/cache" \
    GOPATH="$gopath:/usr/share/gocode" go build -o "$bin" .
)
echo "$bin"
