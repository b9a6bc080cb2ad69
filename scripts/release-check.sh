#!/usr/bin/env bash
# Checks a release binary the way the release workflow publishes it:
#
#   scripts/release-check.sh BINARY [RUNNER...]
#
# RUNNER runs a foreign binary (e.g. `qemu-aarch64 -L /usr/aarch64-linux-gnu`).
# - size: at most MAX_BYTES (default 20,000,000 bytes);
# - a panic report that helps: SIGNAL_SERVER_DEBUG_PANIC=1 makes the binary
#   panic in a task on its runtime (an operator-only switch, see src/main.rs);
#   with RUST_BACKTRACE=1 the report must name the panic's place and show a
#   backtrace whose frames carry function names and source lines
#   (src/main.rs:LINE), i.e. the compressed line tables were read;
# - the exit code of a panic (101).
# Prints "release-check: N passed, N failed" last.
set -euo pipefail

bin="${1:?usage: $0 BINARY [RUNNER...]}"
shift
max="${MAX_BYTES:-20000000}"
passed=0 failed=0
ok() { echo "ok   $*"; passed=$((passed + 1)); }
bad() { echo "FAIL $*"; failed=$((failed + 1)); }

size=$(stat -c %s "$bin")
if [[ $size -le $max ]]; then ok "size $size bytes <= $max"; else bad "size $size bytes > $max"; fi

set +e
report="$(SIGNAL_SERVER_DEBUG_PANIC=release-check RUST_BACKTRACE=1 "$@" "$bin" 2>&1)"
code=$?
set -e
if [[ $code -eq 101 ]]; then ok "a panic exits 101"; else bad "a panic exited $code"; fi
if grep -q 'panicked at src/main.rs:[0-9]*:[0-9]*:' <<<"$report" &&
  grep -q 'deliberate panic (SIGNAL_SERVER_DEBUG_PANIC="release-check")' <<<"$report"; then
  ok "the panic names its place and message"
else
  bad "no panic location or message in: $report"
fi
# A frame of our own code with its source line, read from the debug info.
if grep -q '^ *at .*src/main.rs:[0-9]*' <<<"$report" && grep -q 'tokio::runtime' <<<"$report"; then
  ok "the backtrace has function names and source lines"
else
  bad "the backtrace lacks function names or source lines:"
  printf '%s\n' "$report" | head -30
fi
echo "release-check: $passed passed, $failed failed"
[[ $failed -eq 0 ]]
