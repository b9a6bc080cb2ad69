#!/usr/bin/env bash
# TURN end to end: a robot and a viewer with no path to each other get video
# through a relay in a third network namespace.
#
#   scripts/turn-e2e.sh [path-to-signal-server-binary]   (default target/debug/signal-server)
#
#   robot ns  192.0.2.2/24 ──veth── 192.0.2.1  relay ns  198.51.100.1 ──veth── 198.51.100.2/24  viewer ns
#   webrtc_ros emulator (aiortc)                signal-server (HTTP, WebSocket)   headless Chromium
#   + signal-server bridge                      + the TURN relay on 203.0.113.1   on the watch link
#     (--ice-endpoint 127.0.0.1:8089)             (an address of its own, on lo)
#
# Three documentation ranges (RFC 5737): 192.0.2.0/24 for the robot's link,
# 198.51.100.0/24 for the viewer's, 203.0.113.1 for the relay's "public"
# address. The robot and the viewer each have a default route to the relay
# namespace (aioice and Chromium gather no candidates without one), which
# does not forward (net.ipv4.ip_forward=0): the script checks that a TCP
# connection from the robot to the viewer fails while both reach the relay.
# Because these ranges are reserved, the relay must be told it may relay to
# them: --turn-allow-peer 192.0.2.0/24,198.51.100.0/24 (coturn:
# --allowed-peer-ip).
#
# Two runs:
#   1. embedded: signal-server --turn-listen 203.0.113.1:3478 (and a 30 s
#      --turn-ttl, so that the page's and the bridge's refresh happens within
#      the test); the page's "relay only" switch too;
#   2. coturn: Debian's turnserver with use-auth-secret and the same secret,
#      and signal-server --turn-secret --turn-urls pointing at it; the "relay
#      only" switch again (the viewer's own credentials, minted by
#      signal-server, at coturn).
# Each time the robot's webrtc_ros emulator gets its TURN credentials from the
# bridge's --ice-endpoint, as webrtc_ros's stock ICE server provider would.
#
# Needs (scripts/install-test-deps.sh installs them): chromium, iproute2,
# coturn, node with tests/browser's playwright-core, the emulator's Python
# packages. Runs as root (or in a user namespace mapped to root).
# Environment: KEEP_LOGS=1 keeps the logs directory; ONLY=coturn skips the
# embedded run; PYTHON=python3.
# Prints "turn-e2e: N passed, N failed" last; exit code 0 when all passed.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

fail_setup() {
  echo "turn-e2e: $*" >&2
  echo "turn-e2e: 0 passed, 1 failed"
  exit 1
}

if [[ "${1:-}" != "--inside" ]]; then
  bin="${1:-target/debug/signal-server}"
  case "$bin" in /*) ;; *) bin="$repo/$bin" ;; esac
  [[ -x "$bin" ]] || fail_setup "no binary at $bin (build it with: cargo build)"
  for tool in ip unshare node turnserver; do
    command -v "$tool" >/dev/null 2>&1 || fail_setup "needs $tool (scripts/install-test-deps.sh)"
  done
  [[ -x /usr/bin/chromium ]] || fail_setup "needs /usr/bin/chromium (scripts/install-test-deps.sh)"
  [[ -d tests/browser/node_modules/playwright-core ]] \
    || fail_setup "needs playwright-core in tests/browser (scripts/install-test-deps.sh)"
  "${PYTHON:-python3}" -c 'import aiortc, websockets, numpy, av' 2>/dev/null \
    || fail_setup "needs the emulator's Python packages (scripts/install-test-deps.sh)"
  # A private network namespace (the relay's) and mount namespace (for the
  # names of the two others): nothing is left behind.
  if [[ $(id -u) -eq 0 ]]; then
    exec unshare --net --mount --propagation private "$0" --inside "$bin"
  else
    exec unshare --user --map-root-user --net --mount --propagation private "$0" --inside "$bin"
  fi
fi
bin="$2"
python="${PYTHON:-python3}"
logs="$(mktemp -d -t turn-e2e.XXXXXX)"
secret="turn-e2e-$RANDOM$RANDOM"
relay_ip=203.0.113.1
port=9098
t0=$(date +%s)

pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [[ -n "${KEEP_LOGS:-}" ]]; then echo "turn-e2e: logs kept in $logs" >&2; else rm -rf "$logs"; fi
}
trap cleanup EXIT
stop() { kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }

# --- the three namespaces --------------------------------------------------------
mkdir -p /run/netns
mount -t tmpfs tmpfs /run/netns
ip link set lo up
ip addr add "$relay_ip/32" dev lo
sysctl -qw net.ipv4.ip_forward=0
ip netns add robot
ip netns add viewer
ip link add to-robot type veth peer name eth0 netns robot
ip link add to-viewer type veth peer name eth0 netns viewer
ip addr add 192.0.2.1/24 dev to-robot
ip addr add 198.51.100.1/24 dev to-viewer
ip link set to-robot up
ip link set to-viewer up
for ns in robot viewer; do ip -n "$ns" link set lo up; ip -n "$ns" link set eth0 up; done
ip -n robot addr add 192.0.2.2/24 dev eth0
ip -n robot route add default via 192.0.2.1
ip -n viewer addr add 198.51.100.2/24 dev eth0
ip -n viewer route add default via 198.51.100.1

# waits until `cmd...` succeeds (0.2 s apart, up to 30 s)
wait_for() {
  local what=$1; shift
  for _ in $(seq 150); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
  echo "turn-e2e: timed out waiting for $what" >&2
  return 1
}
tcp_open() { "$python" -c 'import socket,sys; socket.create_connection((sys.argv[1], int(sys.argv[2])), 2)' "$@"; }

# --- no path from the robot to the viewer -----------------------------------------
probe_failed=0
ip netns exec viewer "$python" -c '
import socket, time
s = socket.socket(); s.bind(("198.51.100.2", 7000)); s.listen()
time.sleep(60)' &
probe=$!
pids+=("$probe")
wait_for "the probe listener" tcp_open 198.51.100.2 7000 || probe_failed=1
if ip netns exec robot "$python" -c 'import socket; socket.create_connection(("198.51.100.2", 7000), 2)' 2>/dev/null; then
  echo "turn-e2e: the robot reaches the viewer directly: the test would prove nothing" >&2
  probe_failed=1
fi
stop "$probe"
python3 -m http.server --bind "$relay_ip" 7001 >/dev/null 2>&1 &
probe=$!
pids+=("$probe")
for ns in robot viewer; do
  wait_for "$ns to reach the relay" ip netns exec "$ns" "$python" -c \
    'import socket; socket.create_connection(("203.0.113.1", 7001), 2)' || probe_failed=1
done
stop "$probe"
if [[ $probe_failed -ne 0 ]]; then fail_setup "the namespaces are not as they should be"; fi
echo "turn-e2e: robot -> viewer: no path; robot -> relay and viewer -> relay: ok"

# --- the robot's side: emulator (kept across runs) ----------------------------------
ip netns exec robot "$python" tests/e2e/robot_emulator.py --host 127.0.0.1 --port 9090 \
  --turn-server-creds-uri http://127.0.0.1:8089/ \
  --turn-server-uris "turn:$relay_ip:3478?transport=udp" \
  >"$logs/emulator.jsonl" 2>"$logs/emulator.err" &
pids+=("$!")
wait_for "the emulator" grep -q '"listening"' "$logs/emulator.jsonl" || fail_setup "no emulator"

cat >"$logs/chromium" <<'EOF'
#!/bin/sh
exec ip netns exec viewer /usr/bin/chromium "$@"
EOF
chmod +x "$logs/chromium"

passed=0
failed=0
# run NAME EXTRA-ENV -- SERVER-ARGS...: the server in the relay namespace,
# a bridge in the robot's, the viewer's test; adds up the results.
run() {
  local name=$1 extra_env=$2; shift 3
  echo "turn-e2e: --- $name: signal-server $*"
  "$bin" --bind "$relay_ip:$port" --log-format json "$@" >"$logs/server-$name.log" 2>&1 &
  local server=$!
  pids+=("$server")
  wait_for "the server" tcp_open "$relay_ip" "$port" || { failed=$((failed + 1)); return; }
  ip netns exec robot "$bin" bridge --server "ws://$relay_ip:$port/webrtc" \
    --robot ws://127.0.0.1:9090/webrtc --ice-endpoint 127.0.0.1:8089 --json \
    --allow-src 'ros_image:/camera/*' >"$logs/bridge-$name.jsonl" 2>"$logs/bridge-$name.log" &
  local bridge=$!
  pids+=("$bridge")
  if ! wait_for "the bridge's room" grep -q '"event":"room"' "$logs/bridge-$name.jsonl"; then
    tail -n 20 "$logs/bridge-$name.log" "$logs/server-$name.log" >&2
    failed=$((failed + 1)); stop "$bridge"; stop "$server"; return
  fi
  local watch
  watch=$("$python" -c 'import json,sys
for l in open(sys.argv[1]):
    e = json.loads(l)
    if e.get("event") == "room": print(e["watch_url"]); break' "$logs/bridge-$name.jsonl")
  local out rc=0
  out=$(env CHROMIUM="$logs/chromium" RELAY="$name" EMULATOR_LOG="$logs/emulator.jsonl" $extra_env \
    timeout 300 node tests/browser/turn-e2e.mjs "$watch" 2>&1) || rc=$?
  echo "$out"
  local p f
  p=$(sed -n 's/.*: \([0-9]*\) passed, \([0-9]*\) failed$/\1/p' <<<"$out" | tail -n 1)
  f=$(sed -n 's/.*: \([0-9]*\) passed, \([0-9]*\) failed$/\2/p' <<<"$out" | tail -n 1)
  passed=$((passed + ${p:-0}))
  failed=$((failed + ${f:-1}))
  if [[ $rc -ne 0 ]]; then
    for f in "bridge-$name.log" "server-$name.log" emulator.err; do
      echo "--- $f (last 30 lines) ---" >&2
      tail -n 30 "$logs/$f" >&2
    done
    [[ -f "$logs/coturn.log" ]] && { echo "--- coturn.log (last 30 lines) ---" >&2; tail -n 30 "$logs/coturn.log" >&2; }
  fi
  stop "$bridge"
  stop "$server"
}

allow=192.0.2.0/24,198.51.100.0/24

# 1. The embedded relay.
[[ "${ONLY:-embedded}" != coturn ]] && run embedded "REFRESH=1 RELAY_ONLY_SWITCH=1" -- \
  --turn-listen "$relay_ip:3478" --turn-secret "$secret" --turn-ttl 30s \
  --turn-allow-peer "$allow" --turn-relay-ports 50000-50999

# 2. coturn, with the same secret; signal-server only mints credentials.
turnserver -n --listening-ip "$relay_ip" --listening-port 3478 --relay-ip "$relay_ip" \
  --min-port 50000 --max-port 50999 --use-auth-secret --static-auth-secret="$secret" \
  --realm=turn-e2e --allowed-peer-ip=192.0.2.0-192.0.2.255 \
  --allowed-peer-ip=198.51.100.0-198.51.100.255 --no-tls --no-dtls --no-cli \
  --pidfile "$logs/turnserver.pid" --log-file=stdout --simple-log --verbose \
  >"$logs/coturn.log" 2>&1 &
coturn=$!
pids+=("$coturn")
if wait_for "coturn" bash -c "ss -lun | grep -q '$relay_ip:3478 '"; then
  run coturn "RELAY_ONLY_SWITCH=1" -- --turn-secret "$secret" --turn-urls "turn:$relay_ip:3478?transport=udp"
else
  tail -n 20 "$logs/coturn.log" >&2
  failed=$((failed + 1))
fi
stop "$coturn"

echo "turn-e2e: took $(( $(date +%s) - t0 )) s"
echo "turn-e2e: $passed passed, $failed failed"
[[ $failed -eq 0 && $passed -gt 0 ]]
