# Thin wrapper over CMake + CTest for the two commands of README.md:
#   make demo   builds, then plays the seed's scenarios with the real programs
#   make test   builds everything (gcc, clang + ASan/UBSan, clang + TSan) and
#               runs every test in each build; valgrind checks run in the first
# Both install the Debian packages they need when missing (idempotent).
#   make docs   the API reference and the guides (Doxygen, every warning an
#               error) into build/docs/html; make test runs it too
#   make install [PREFIX=/usr/local] [DESTDIR=/staging]
#               installs the library (libgrace.so.X and libgrace.a), its
#               headers, grace.pc and the CMake package from the Release build

SHELL := /bin/bash
JOBS ?= $(shell nproc)
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
PREFIX ?= /usr/local

# What building and testing need (wrk and haproxy drive the upgrade tests,
# tests/integration/test_upgrade*.py; the Go packages build h2spec, from
# ../shared/tools, for tests/integration/test_h2spec.py, and the grpc-go
# interop client, tests/interop/go, for test_grpc_interop_go.py; doxygen
# builds the API reference and the guides, make docs).
DEBS := cmake make gcc clang pkg-config libuv1-dev libnghttp2-dev node-llhttp libcmocka-dev protobuf-c-compiler libprotobuf-c-dev \
        libclang-rt-14-dev curl valgrind python3 ca-certificates doxygen libssl-dev openssl \
        nghttp2-client python3-grpcio systemd wrk haproxy \
        golang-go golang-github-spf13-cobra-dev golang-github-fatih-color-dev golang-golang-x-net-dev \
        golang-google-grpc-dev golang-github-golang-protobuf-1-5-dev \
        protobuf-compiler protoc-gen-go protoc-gen-go-grpc nodejs
# npm runs the grpc-js interop client's install (tests/interop/js/install.sh,
# for test_grpc_interop_js.py).  Debian's npm is a package of its own; a
# nodejs that bundles npm conflicts with it, so it is installed only when no
# npm command is there.
NPM_DEB := npm
# What bench/ needs on top (the peers).
BENCH_DEBS := wrk nginx-light golang-go haproxy nghttp2-client g++ \
        golang-google-grpc-dev golang-github-golang-protobuf-1-5-dev \
        protobuf-compiler protoc-gen-go protoc-gen-go-grpc libgrpc++-dev \
        protobuf-compiler-grpc python3-grpcio python3-hpack

.PHONY: all deps bench-deps build build-asan build-tsan build-release test test-default \
        test-asan test-tsan docs demo bench install clean

all: build

deps:
	@missing=""; for p in $(DEBS); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'ok installed' || missing="$$missing $$p"; \
	done; \
	command -v npm >/dev/null || missing="$$missing $(NPM_DEB)"; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi

# The grpc-js interop client's npm packages, as package-lock.json pins them,
# into <build dir>/interop-js (idempotent; run before each build's tests).
# When npm cannot reach its registry this only warns: test_grpc_interop_js
# then says so and is skipped.
INTEROP_JS = tests/interop/js/install.sh $(1)/interop-js || \
	  echo "warning: npm packages for the grpc-js interop client not installed ($(1)/interop-js)"

bench-deps: deps
	@missing=""; for p in $(BENCH_DEBS); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'ok installed' || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi

build: deps
	cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
	cmake --build build -j $(JOBS)

build-asan: deps
	CC=clang cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DGRACE_SANITIZE=ON >/dev/null
	cmake --build build-asan -j $(JOBS)

build-tsan: deps
	CC=clang cmake -S . -B build-tsan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DGRACE_TSAN=ON >/dev/null
	cmake --build build-tsan -j $(JOBS)

test-default: build
	@$(call INTEROP_JS,build)
	ctest --test-dir build --output-on-failure -j 2

test-asan: build-asan
	@$(call INTEROP_JS,build-asan)
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
	UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	ctest --test-dir build-asan --output-on-failure -j 2

# Release (-O3) finds warnings the other builds do not; it is what bench/ runs.
build-release: deps
	cmake -S . -B build-release -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF >/dev/null
	cmake --build build-release -j $(JOBS)

test-tsan: build-tsan
	@$(call INTEROP_JS,build-tsan)
	TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1 \
	ctest --test-dir build-tsan --output-on-failure -j 2

# The API reference and the guides, from the headers' comments and
# docs/guide/ (docs/Doxyfile.in): a warning (a \ref to nothing, a bad
# command) fails it.  Only the configure step of the build is needed.
docs: deps
	cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
	cmake --build build --target docs

test: docs test-default test-asan test-tsan build-release
	@echo "make test: every build passed"

# cmake --install takes the prefix now (grace.pc is written for it) and
# DESTDIR from the environment; both are passed on explicitly.
install: build-release
	DESTDIR="$(DESTDIR)" cmake --install build-release --prefix "$(PREFIX)"

demo: build
	bash scripts/demo.sh build/examples

bench: bench-deps
	bash bench/run_all.sh

clean:
	rm -rf build build-asan build-tsan build-release build-bench build-bench-grpc
