#!/usr/bin/env bash
# End-to-end browser test: the demo page with real WebRTC video in headless Chromium.
#
#   scripts/browser-test.sh [path-to-signal-server-binary]   (default target/debug/signal-server)
#
# Installs what is missing (Debian's chromium and iproute2, nodejs, npm playwright-core), then runs
# the server and tests/browser/e2e.mjs inside a fresh network namespace, so that all media
# traffic stays on this machine (scripts/netns-run.sh: a veth pair in 198.51.100.0/24 and a
# default route (Chromium gathers no ICE candidates without one).
#
# Environment:
#   SAVE_SCREENSHOT=1   also update docs/screenshot-viewer.png
#   STATIC_DIR=static   serve the page from this directory (--static-dir) instead of the
#                       copy embedded in the binary
#   PORT=9099           the server's port inside the namespace
#   HOST_GRACE=5s       the server's --host-grace (short, so a room closes during the test)
# Exit code: 0 when every check passed.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

bin="${1:-target/debug/signal-server}"
case "$bin" in /*) ;; *) bin="$repo/$bin" ;; esac
if [[ ! -x "$bin" ]]; then
  echo "browser-test: no server binary at $bin (build it with: cargo build)" >&2
  exit 2
fi

# --- what the test needs (scripts/lib.sh) --------------------------------------
. "$repo/scripts/lib.sh"
need_cmd chromium chromium
need_cmd ip iproute2
need_npm tests/browser

# --- run everything inside a private network namespace -------------------------
port="${PORT:-9099}"
# A short host grace period, so that the test sees a room close after its host left.
server_args=(--host-grace "${HOST_GRACE:-5s}")
if [[ -n "${STATIC_DIR:-}" ]]; then
  server_args+=(--static-dir "$STATIC_DIR")
fi

# shellcheck disable=SC2016  # the inner script is expanded inside the namespace
"$repo/scripts/netns-run.sh" bash -c '
  set -uo pipefail
  bin="$1"; port="$2"; shift 2

  log="$(mktemp -t signal-server-e2e.XXXXXX.log)"
  "$bin" --bind "127.0.0.1:$port" "$@" >"$log" 2>&1 &
  server=$!
  cleanup() {
    kill "$server" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$server" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$server" 2>/dev/null || true
    wait "$server" 2>/dev/null || true
  }
  trap cleanup EXIT

  url="http://127.0.0.1:$port/"
  ready=0
  for _ in $(seq 150); do
    if ! kill -0 "$server" 2>/dev/null; then break; fi
    if node -e "fetch(process.argv[1]).then(r => process.exit(r.status === 200 ? 0 : 1), () => process.exit(1))" "${url}healthz"; then
      ready=1; break
    fi
    sleep 0.2
  done
  if [[ $ready -ne 1 ]]; then
    echo "browser-test: the server did not answer GET /healthz with 200" >&2
    tail -n 40 "$log" >&2
    echo "browser-e2e: 0 passed, 1 failed"
    exit 1
  fi

  timeout 600 node tests/browser/e2e.mjs "$url"
  rc=$?
  if [[ $rc -ne 0 ]]; then
    echo "--- server log (last 40 lines) ---" >&2
    tail -n 40 "$log" >&2
  fi
  rm -f "$log"
  exit $rc
' browser-test "$bin" "$port" "${server_args[@]}"
