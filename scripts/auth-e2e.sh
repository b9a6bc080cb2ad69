#!/usr/bin/env bash
# Token mode end to end with real WebRTC (issue 13): the webrtc_ros emulator
# (aiortc) behind `signal-server bridge --token` (a host token for the named
# room robot-7), the server in `--auth token`, a headless Chromium viewer on a
# link minted by `signal-server token create`; the server is killed and
# restarted, and the link made before the restart gets video again.
#
#   scripts/auth-e2e.sh [path-to-signal-server-binary]   (default target/debug/signal-server)
#
# Installs what is missing (scripts/lib.sh), runs the emulator and
# tests/browser/auth-e2e.mjs (which starts and restarts the server and the
# bridge) inside a fresh network namespace (scripts/netns-run.sh).
#
# Environment:
#   PORT=9097          the server's port inside the namespace
#   ROBOT_PORT=9090    the emulator's port (webrtc_ros's usual one)
#   PYTHON=python3     the Python that runs the emulator
#   KEEP_LOGS=1        keep the logs directory (its path is printed)
# Prints "auth-e2e: N passed, N failed" last; exit code 0 when all passed.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

bin="${1:-target/debug/signal-server}"
case "$bin" in /*) ;; *) bin="$repo/$bin" ;; esac
python="${PYTHON:-python3}"

fail_setup() {
  echo "auth-e2e: $*" >&2
  echo "auth-e2e: 0 passed, 1 failed"
  exit 1
}

[[ -x "$bin" ]] || fail_setup "no binary at $bin (build it with: cargo build)"

# --- what the test needs (scripts/lib.sh) ---------------------------------------
. "$repo/scripts/lib.sh"
need_cmd chromium chromium || fail_setup "cannot install chromium"
need_cmd ip iproute2 || fail_setup "cannot install iproute2"
need_npm tests/browser || fail_setup "cannot install the npm packages of tests/browser"
PYTHON="$python" need_pip -r tests/e2e/requirements.txt \
  || fail_setup "cannot install tests/e2e/requirements.txt"

# --- run everything inside a private network namespace ----------------------------
logs="$(mktemp -d -t auth-e2e.XXXXXX)"
port="${PORT:-9097}"
robot_port="${ROBOT_PORT:-9090}"

set +e
# shellcheck disable=SC2016  # the inner script is expanded inside the namespace
"$repo/scripts/netns-run.sh" bash -c '
  set -uo pipefail
  bin="$1"; port="$2"; robot_port="$3"; logs="$4"; python="$5"

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
  trap "stop $emulator" EXIT

  ready=0
  for _ in $(seq 150); do
    kill -0 "$emulator" 2>/dev/null || break
    if grep -q "\"listening\"" "$logs/emulator.jsonl" 2>/dev/null; then ready=1; break; fi
    sleep 0.2
  done
  if [[ $ready -ne 1 ]]; then
    echo "auth-e2e: the emulator did not start" >&2
    tail -n 20 "$logs/emulator.err" >&2
    echo "auth-e2e: 0 passed, 1 failed"
    exit 1
  fi

  SERVER_BIN="$bin" ROBOT_URL="ws://127.0.0.1:$robot_port/webrtc" \
  EMULATOR_LOG="$logs/emulator.jsonl" LOG_DIR="$logs" \
    timeout 600 node tests/browser/auth-e2e.mjs "http://127.0.0.1:$port/"
  rc=$?
  if [[ $rc -eq 124 ]]; then
    echo "auth-e2e: the test ran out of time"
    echo "auth-e2e: 0 passed, 1 failed"
  fi
  if [[ $rc -ne 0 ]]; then
    for f in bridge.log server-1.log server-2.log emulator.err emulator.jsonl; do
      echo "--- $f (last 40 lines) ---" >&2
      tail -n 40 "$logs/$f" >&2
    done
  fi
  exit $rc
' auth-e2e "$bin" "$port" "$robot_port" "$logs" "$python"
rc=$?
set -e

if [[ -n "${KEEP_LOGS:-}" ]]; then
  echo "auth-e2e: logs kept in $logs" >&2
else
  rm -rf "$logs"
fi
exit $rc
