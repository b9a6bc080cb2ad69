#!/usr/bin/env bash
# The whole test suite, as CI runs it:
#   1. installs what the tests need (scripts/install-test-deps.sh)
#   2. cargo tests: unit and integration tests over real sockets
#   3. headless Chromium end to end: demo page, real video (scripts/browser-test.sh)
#   4. robot end to end: aiortc webrtc_ros emulator + bridge + Chromium (scripts/bridge-e2e.sh);
#      the same in token mode across a server restart (scripts/auth-e2e.sh); the admin API
#      against its OpenAPI document (scripts/api-test.sh, schemathesis); the fleet page
#      with two robots (scripts/fleet-e2e.sh)
#   5. a short fuzz run of every target (scripts/fuzz.sh)
#   6. a short soak with hostile clients and message accounting (scripts/soak.sh)
#   7. a smoke run of the benchmark against every peer server (scripts/bench.sh --smoke)
#   8. a smoke run of the TURN benchmark, embedded relay and coturn (scripts/turn-bench.sh --smoke)
#   9. the aarch64 build under qemu-aarch64 beside the x86_64 one (scripts/cross-test.sh)
#  10. the static (musl) build alone in an empty root directory (scripts/empty-root-test.sh)
#  11. lint of the deployment files: workflows, Dockerfile, systemd units (scripts/lint-deploy.sh)
#  12. TURN end to end: robot and viewer in network namespaces with no path to each
#      other, video through the embedded relay, then through coturn (scripts/turn-e2e.sh)
#  13. Autobahn|Testsuite, sections 1-7 and 10, against the ws/ layer (scripts/autobahn.sh,
#      about 1 min; installs autobahntestsuite into .tools/ the first time, about 1 min)
# Options: --rust-only (step 2 only). Environment: FUZZ_SECONDS (60), SOAK_SECONDS (60).
set -euo pipefail
cd "$(dirname "$0")/.."

rust_only=0
[ "${1:-}" = "--rust-only" ] && rust_only=1

step() { printf '\n=== %s ===\n' "$*"; }
failed=()
run() {
  local name=$1; shift
  step "$name"
  if "$@"; then echo "--- $name: ok"; else echo "--- $name: FAILED"; failed+=("$name"); fi
}

if [ $rust_only -eq 0 ]; then
  step "install test dependencies"
  scripts/install-test-deps.sh
fi

step "build"
cargo build --workspace --all-targets --locked

run "cargo test" cargo test --workspace --locked --no-fail-fast

if [ $rust_only -eq 0 ]; then
  run "browser end to end" scripts/browser-test.sh target/debug/signal-server
  [ -x scripts/bridge-e2e.sh ] && run "bridge end to end" scripts/bridge-e2e.sh target/debug/signal-server
  [ -x scripts/auth-e2e.sh ] && run "token mode end to end" scripts/auth-e2e.sh target/debug/signal-server
  [ -x scripts/api-test.sh ] && run "admin API against its OpenAPI document (schemathesis)" scripts/api-test.sh target/debug/signal-server
  [ -x scripts/fleet-e2e.sh ] && run "fleet page end to end" scripts/fleet-e2e.sh target/debug/signal-server
  [ -x scripts/fuzz.sh ] && run "fuzz (${FUZZ_SECONDS:-60} s)" scripts/fuzz.sh --total-seconds "${FUZZ_SECONDS:-60}"
  [ -x scripts/soak.sh ] && run "soak (${SOAK_SECONDS:-60} s)" scripts/soak.sh --seconds "${SOAK_SECONDS:-60}"
  [ -x scripts/bench.sh ] && run "benchmark smoke" scripts/bench.sh --smoke
  [ -x scripts/turn-bench.sh ] && run "TURN benchmark smoke" scripts/turn-bench.sh --smoke
  [ -x scripts/cross-test.sh ] && run "aarch64 under qemu" scripts/cross-test.sh target/debug/signal-server
  [ -x scripts/empty-root-test.sh ] && run "static binary in an empty root" scripts/empty-root-test.sh
  [ -x scripts/lint-deploy.sh ] && run "deployment files lint" scripts/lint-deploy.sh
  [ -x scripts/turn-e2e.sh ] && run "TURN end to end" scripts/turn-e2e.sh target/debug/signal-server
  [ -x scripts/autobahn.sh ] && run "autobahn (WebSocket conformance)" scripts/autobahn.sh
fi

step "summary"
if [ ${#failed[@]} -gt 0 ]; then
  echo "failed: ${failed[*]}"
  exit 1
fi
echo "all test stages passed"
