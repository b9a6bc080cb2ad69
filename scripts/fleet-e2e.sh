#!/usr/bin/env bash
# The fleet page end to end: a server in token mode with an admin key, the
# aiortc webrtc_ros emulator (tests/e2e/robot_emulator.py) behind two bridges
# with host tokens (robot-1, robot-2), and tests/browser/fleet-e2e.mjs driving
# headless Chromium on /fleet, all inside a fresh network namespace
# (scripts/netns-run.sh). About 1 minute on 2 cores.
#
#   scripts/fleet-e2e.sh [path-to-signal-server-binary]   (default target/debug/signal-server)
#
# Environment: SAVE_SCREENSHOT=1 (update docs/screenshot-fleet.png), PORT,
# ROBOT_PORT, KEEP_LOGS=1.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
bin="${1:-target/debug/signal-server}"
case "$bin" in /*) ;; *) bin="$repo/$bin" ;; esac
python="${PYTHON:-python3}"

fail_setup() {
  echo "fleet-e2e: $*" >&2
  echo "fleet-e2e: 0 passed, 1 failed"
  exit 1
}
[[ -x "$bin" ]] || fail_setup "no binary at $bin (build it with: cargo build)"

. "$repo/scripts/lib.sh"
need_cmd chromium chromium || fail_setup "cannot install chromium"
need_cmd ip iproute2 || fail_setup "cannot install iproute2"
need_npm tests/browser || fail_setup "cannot install the npm packages of tests/browser"
PYTHON="$python" need_pip -r tests/e2e/requirements.txt \
  || fail_setup "cannot install tests/e2e/requirements.txt"

logs="$(mktemp -d -t fleet-e2e.XXXXXX)"
port="${PORT:-9097}"
robot_port="${ROBOT_PORT:-9090}"
export ADMIN_KEY="fleet-e2e-admin-key-$RANDOM$RANDOM$RANDOM"
export SIGNAL_SERVER_AUTH_SECRET="fleet-e2e-secret-$RANDOM$RANDOM-0123456789abcdef"

set +e
"$repo/scripts/netns-run.sh" bash -c '
  set -uo pipefail
  bin="$1"; port="$2"; robot_port="$3"; logs="$4"; python="$5"

  SIGNAL_SERVER_ADMIN_KEY="$ADMIN_KEY" "$bin" --bind "127.0.0.1:$port" --auth token \
    --host-grace 30s >"$logs/server.log" 2>&1 &
  server=$!
  "$python" tests/e2e/robot_emulator.py --host 127.0.0.1 --port "$robot_port" \
    >"$logs/emulator.jsonl" 2>"$logs/emulator.err" &
  emulator=$!
  stop() {
    local pid=$1
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  }
  cleanup() { stop "$emulator"; stop "$server"; }
  trap cleanup EXIT

  ready=0
  for _ in $(seq 150); do
    if ! kill -0 "$server" 2>/dev/null || ! kill -0 "$emulator" 2>/dev/null; then break; fi
    if grep -q "\"listening\"" "$logs/emulator.jsonl" 2>/dev/null \
      && node -e "fetch(process.argv[1]).then(r => process.exit(r.status === 200 ? 0 : 1), () => process.exit(1))" \
           "http://127.0.0.1:$port/healthz"; then
      ready=1; break
    fi
    sleep 0.2
  done
  if [[ $ready -ne 1 ]]; then
    echo "fleet-e2e: the server or the emulator did not start" >&2
    tail -n 20 "$logs/server.log" "$logs/emulator.err" >&2
    echo "fleet-e2e: 0 passed, 1 failed"
    exit 1
  fi

  BRIDGE_BIN="$bin" ROBOT_URL="ws://127.0.0.1:$robot_port/webrtc" BRIDGE_LOG="$logs/bridge.log" \
    timeout 600 node tests/browser/fleet-e2e.mjs "http://127.0.0.1:$port/"
  rc=$?
  if [[ $rc -ne 0 ]]; then
    for f in bridge.log server.log emulator.err; do
      echo "--- $f (last 40 lines) ---" >&2
      tail -n 40 "$logs/$f" >&2
    done
  fi
  exit $rc
' fleet-e2e "$bin" "$port" "$robot_port" "$logs" "$python"
rc=$?
set -e
if [[ -n "${KEEP_LOGS:-}" ]]; then echo "fleet-e2e: logs kept in $logs" >&2; else rm -rf "$logs"; fi
exit $rc
