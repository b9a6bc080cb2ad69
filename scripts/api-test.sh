#!/usr/bin/env bash
# The admin API against its OpenAPI document: schemathesis (PyPI,
# tests/api/requirements.txt) runs every operation of docs/openapi.json,
# valid and invalid inputs, with and without the admin key, against a live
# server in token mode with a named robot room open, and checks every answer
# (status documented, body matching its schema, refusals without the key).
#
#   scripts/api-test.sh [path-to-signal-server-binary]   (default target/debug/signal-server)
#
# Environment: MAX_EXAMPLES (default 30 per operation), PORT (default: a free one),
# PYTHON (default python3). About 1 to 2 minutes on 2 cores.
# The event stream (/api/v1/events) is left out: a stream that never ends is
# not something schemathesis can check; tests/admin*.rs read it.
# Exit code: 0 when schemathesis found nothing.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
bin="${1:-target/debug/signal-server}"
case "$bin" in /*) ;; *) bin="$repo/$bin" ;; esac
python="${PYTHON:-python3}"
[[ -x "$bin" ]] || { echo "api-test: no binary at $bin (build it with: cargo build)" >&2; exit 2; }

. "$repo/scripts/lib.sh"
PYTHON="$python" need_pip -r tests/api/requirements.txt

port="${PORT:-$("$python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')}"
key="api-test-admin-key-$RANDOM$RANDOM$RANDOM"
secret="api-test-secret-$RANDOM$RANDOM$RANDOM-0123456789abcdef"
logs="$(mktemp -d -t api-test.XXXXXX)"
SIGNAL_SERVER_ADMIN_KEY="$key" SIGNAL_SERVER_AUTH_SECRET="$secret" \
  "$bin" --bind "127.0.0.1:$port" --auth token >"$logs/server.log" 2>&1 &
server=$!
host=""
cleanup() {
  [[ -n "$host" ]] && kill "$host" 2>/dev/null
  kill "$server" 2>/dev/null || true
  wait "$server" 2>/dev/null || true
  rm -rf "$logs"
}
trap cleanup EXIT

base="http://127.0.0.1:$port"
for _ in $(seq 100); do
  curl -fsS "$base/healthz" >/dev/null 2>&1 && break
  sleep 0.1
done
curl -fsS "$base/healthz" >/dev/null || { echo "api-test: the server did not start" >&2; cat "$logs/server.log" >&2; exit 1; }

# A named room with a host, so that the listing has something in it.
token="$(SIGNAL_SERVER_AUTH_SECRET="$secret" "$bin" token create --room robot-7 --grant host --ttl 1h | sed -n 1p)"
"$python" - "$port" "$token" <<'PY' &
import asyncio, json, sys
import websockets
async def main():
    async with websockets.connect(f"ws://127.0.0.1:{sys.argv[1]}/webrtc") as ws:
        await ws.send(json.dumps({"type": "init", "token": sys.argv[2]}))
        await ws.recv()
        await asyncio.sleep(3600)
asyncio.run(main())
PY
host=$!

set +e
# From the temporary directory: schemathesis and hypothesis keep caches in
# the working directory.
(cd "$logs" && "$python" -m schemathesis.cli run "$base/api/v1/openapi.json" \
  --url "$base" \
  -H "Authorization: Bearer $key" \
  --checks all \
  --exclude-path /api/v1/events \
  --max-examples "${MAX_EXAMPLES:-30}" \
  --seed 1 \
  --request-timeout 10 \
  --workers 2 \
  --no-color)
rc=$?
set -e
if [[ $rc -ne 0 ]]; then
  echo "--- server log (last 30 lines) ---" >&2
  tail -n 30 "$logs/server.log" >&2
fi
exit $rc
