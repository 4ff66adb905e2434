#!/bin/bash
# Build ours for bench/grpc_stream.sh: bench/grpc/grace-stream/stream_server.c
# linked against a libgrace.a already built by CMake (not part of the CMake
# tree: BUILD_TESTING=OFF builds no test programs, and this is not an
# example). Prints the binary's path on stdout.
#
# The library: $GRACE_BENCH_STREAM_LIB (a CMake build dir) wins, then
# build-bench-grpc/, build-bench/, build/ — the first whose libgrace.a has the
# gRPC server in it. Its CMAKE_BUILD_TYPE is printed on stderr (anything but
# Release is flagged), and a sanitizer build is refused.
# Usage: build.sh [OUT]  (default bench/out/grpc; binary OUT/grace-stream-server)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../../.." && pwd)
out=${1:-${GRACE_BENCH_OUT:-$repo/bench/out}/grpc}
bin=$out/grace-stream-server
src=$here/stream_server.c

dirs=()
if [[ -n ${GRACE_BENCH_STREAM_LIB:-} ]]; then dirs=("$GRACE_BENCH_STREAM_LIB")
else dirs=("$repo/build-bench-grpc" "$repo/build-bench" "$repo/build"); fi
lib=
for d in "${dirs[@]}"; do
  if [[ -f $d/libgrace.a ]] && nm -g "$d/libgrace.a" 2>/dev/null | grep -c ' T grace_grpc_call_on_ready$' >/dev/null; then
    lib=$d
    break
  fi
done
if [[ -z $lib ]]; then
  echo "grace-stream: no libgrace.a with the gRPC server in ${dirs[*]} (build one:" \
    "cmake -S . -B build-bench -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF && cmake --build build-bench -j2)" >&2
  exit 1
fi
type=$(sed -n 's/^CMAKE_BUILD_TYPE:[A-Z]*=//p' "$lib/CMakeCache.txt" 2>/dev/null || true)
if nm "$lib/libgrace.a" 2>/dev/null | grep -c '__asan_\|__tsan_' >/dev/null; then
  echo "grace-stream: $lib/libgrace.a is a sanitizer build; its figures would mean nothing" >&2
  exit 1
fi
echo "grace-stream: library $lib/libgrace.a (CMAKE_BUILD_TYPE=${type:-?})" >&2
[[ $type == Release ]] || echo "WARNING: $lib is not a Release build" >&2

mkdir -p "$out"
if [[ -x $bin && $bin -nt $src && $bin -nt $lib/libgrace.a && $bin -nt $0 ]]; then
  echo "$bin"
  exit 0
fi
# shellcheck disable=SC2046
cc -std=c11 -O2 -D_GNU_SOURCE -Wall -Wextra -Werror -I "$repo/include" -I "$lib/include" -o "$bin" "$src" \
  "$lib/libgrace.a" \
  $(pkg-config --cflags --libs libuv libnghttp2 libprotobuf-c) -lpthread
echo "$bin"
