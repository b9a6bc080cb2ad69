#!/usr/bin/env bash
# The aarch64 build, run under qemu-aarch64 beside the machine's own (x86_64)
# build:
#
#   scripts/cross-test.sh [x86_64-binary]   (default target/debug/signal-server)
#
# 1. installs what is missing (scripts/install-cross-deps.sh);
# 2. cross-compiles signal-server for aarch64-unknown-linux-gnu with the
#    `smoke` profile (a debug build without debug info: quick to build and
#    link; kept in target/ between runs) and checks it is an aarch64 ELF;
# 3. tests/smoke/smoke.py twice, through real loopback sockets:
#    - the x86_64 server, and the aarch64 binary under qemu as
#      `signal-server bridge` hosting a room for a scripted webrtc_ros
#      stand-in: its `init`, a viewer's join, and messages relayed both ways
#      through it;
#    - the aarch64 binary as the server (page, /healthz, init, join, relay)
#      with the x86_64 bridge.
# Prints "cross-test: N passed, N failed" last; exit code 0 when all passed.
set -euo pipefail
cd "$(dirname "$0")/.."

x86="${1:-target/debug/signal-server}"
target=aarch64-unknown-linux-gnu
bin="target/$target/smoke/signal-server"

scripts/install-cross-deps.sh
if [[ ! -x "$x86" ]]; then
  cargo build --locked --bin signal-server
  x86=target/debug/signal-server
fi

echo "cross-test: cargo build --profile smoke --target $target"
started=$SECONDS
cargo build --locked --profile smoke --target "$target" --bin signal-server
echo "cross-test: built in $((SECONDS - started)) s: $(file -b "$bin" | cut -d, -f1-2)"
if ! file -b "$bin" | grep -q 'ARM aarch64'; then
  echo "cross-test: $bin is not an aarch64 binary"
  echo "cross-test: 0 passed, 1 failed"
  exit 1
fi

emulated="qemu-aarch64 -L /usr/aarch64-linux-gnu $bin"
passed=0 failed=0
run() {
  echo "cross-test: $1"
  if python3 tests/smoke/smoke.py --server "$2" --bridge "$3"; then
    passed=$((passed + 1))
  else
    failed=$((failed + 1))
  fi
}
run "x86_64 server, aarch64 bridge under qemu" "$x86" "$emulated"
run "aarch64 server under qemu, x86_64 bridge" "$emulated" "$x86"
echo "cross-test: $passed passed, $failed failed"
[[ $failed -eq 0 ]]
