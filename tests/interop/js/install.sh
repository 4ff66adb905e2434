#!/bin/bash
# Installs the grpc-js interop client's npm packages (@grpc/grpc-js and
# @grpc/proto-loader, exactly as package-lock.json beside this script pins
# them) into DIR/node_modules with `npm ci --prefix DIR`.
#
#   install.sh DIR        (e.g. build/interop-js)
#
# Idempotent: does nothing when DIR/node_modules was installed from the
# same package.json and package-lock.json.  Called by `make test` for each
# build directory and by tests/integration/test_grpc_interop_js.py when the
# packages are missing.
#
# Exit status: 0 installed (or already); 77 npm is missing or cannot reach
# its registry (the reason on stderr); 1 any other failure.
set -uo pipefail

here=$(cd "$(dirname "$0")" && pwd)
dir=${1:?usage: install.sh DIR}
mkdir -p "$dir" && dir=$(cd "$dir" && pwd) || exit 1
stamp=$dir/node_modules/.grace-installed

if [[ -f $stamp ]] && cmp -s "$here/package.json" "$dir/package.json" &&
   cmp -s "$here/package-lock.json" "$dir/package-lock.json"; then
  exit 0
fi
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "interop-js: node or npm not found (Debian packages nodejs and npm; make deps installs them)" >&2
  exit 77
fi
cp "$here/package.json" "$here/package-lock.json" "$dir/"
log=$dir/npm-ci.log
if timeout 600 npm ci --prefix "$dir" --ignore-scripts --no-audit --no-fund \
     --fetch-retries=2 --fetch-timeout=60000 >"$log" 2>&1; then
  touch "$stamp"
  exit 0
fi
# Failed: is it the registry that cannot be reached?
if ! timeout 120 npm ping --fetch-retries=0 --fetch-timeout=30000 >>"$log" 2>&1; then
  echo "interop-js: npm cannot reach its registry (npm ping failed); see $log" >&2
  tail -5 "$log" >&2
  exit 77
fi
echo "interop-js: npm ci --prefix $dir failed:" >&2
cat "$log" >&2
exit 1
