#!/bin/bash
# Build the gRPC C-core peer (bench/grpc/cpp-greeter/greeter_server.cc) with
# Debian's libgrpc++-dev; print the binary's path on stdout.
#
#   protoc --cpp_out + grpc_cpp_plugin (protobuf-compiler-grpc) generate the
#   messages and the service from examples/proto/helloworld.proto into OUT/cpp-gen,
#   then one g++ -O2 call links them with pkg-config grpc++ protobuf.
#
# Needs: g++, pkg-config, libgrpc++-dev, protobuf-compiler, protobuf-compiler-grpc.
# Usage: build.sh [OUT]   (default bench/out/grpc; binary OUT/greeter-server-cpp)
# Rebuilds only when the source, the proto or this script is newer than the binary.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../../.." && pwd)
out=${1:-${GRACE_BENCH_OUT:-$repo/bench/out}/grpc}
bin=$out/greeter-server-cpp
src=$here/greeter_server.cc
proto=$repo/examples/proto/helloworld.proto

if [[ -x $bin && $bin -nt $src && $bin -nt $proto && $bin -nt $0 ]]; then
  echo "$bin"
  exit 0
fi
for tool in g++ pkg-config protoc grpc_cpp_plugin; do
  command -v "$tool" >/dev/null || {
    echo "cpp-greeter: $tool not found (apt-get install g++ pkg-config libgrpc++-dev protobuf-compiler protobuf-compiler-grpc)" >&2
    exit 1
  }
done
pkg-config --exists grpc++ protobuf || {
  echo "cpp-greeter: pkg-config finds no grpc++/protobuf (apt-get install libgrpc++-dev)" >&2
  exit 1
}

gen=$out/cpp-gen
mkdir -p "$gen"
protoc -I "$(dirname "$proto")" --cpp_out="$gen" --grpc_out="$gen" \
  --plugin=protoc-gen-grpc="$(command -v grpc_cpp_plugin)" "$proto"
# shellcheck disable=SC2046  # pkg-config output is a word list on purpose
g++ -std=c++17 -O2 -pthread -I "$gen" -o "$bin.tmp" "$src" "$gen/helloworld.pb.cc" \
  "$gen/helloworld.grpc.pb.cc" $(pkg-config --cflags --libs grpc++ protobuf)
mv "$bin.tmp" "$bin"
echo "$bin"
