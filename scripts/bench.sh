#!/usr/bin/env bash
# Benchmarks signal-server side by side with the servers a user might pick
# instead (matchbox_server, the PeerJS server, a Python `websockets` relay) and
# a minimal tokio-tungstenite relay, with the load generator tools/bench.
#
#   scripts/bench.sh                 full run: every server, REPEATS (3) times
#                                    interleaved; writes benches/results/*.jsonl
#                                    and the generated part of docs/BENCHMARKS.md
#   scripts/bench.sh --smoke         a few seconds per server, every adapter,
#                                    nothing written to docs/ (for CI)
#   scripts/bench.sh --install-peers only install the peers
#
# Placement: each server on core 0 (`taskset -c 0`; signal-server on a
# one-thread runtime), the load generator on core 1. Environment:
#   REPEATS     repeats (default 3; smoke 1)
#   SERVERS     subset of "ours minimal matchbox peerjs python"
#   BEFORE_BIN  an older signal-server build, run beside as server "before"
#   MODES       subset of "closed1 closed10 closed4k open light setup idle"
#   SWEEP_RATES offered rates (relayed/s) of the latency sweep (mode "sweep")
#   DOCS=0      a full-length run that prints its tables instead of
#               rewriting docs/BENCHMARKS.md (e.g. MODES=sweep on its own)
#   OPEN_STEPS  offered rates (relayed/s) of the open-loop ramp that finds the
#               maximum the server sustains without batching (see `open_max`)
#   LIGHT       relayed messages/s of the light open loop (default 5000)
#   CONNS       idle connections (default 19000)
#   BENCH_OUT   results file (default benches/results/<UTC time>.jsonl)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

MODE=full
case "${1:-}" in
  --smoke) MODE=smoke ;;
  --install-peers) MODE=install ;;
  "") ;;
  *) echo "usage: $0 [--smoke | --install-peers]" >&2; exit 2 ;;
esac

PEERS=$ROOT/benches/peers
MATCHBOX=$PEERS/matchbox/bin/matchbox_server
PEERJS=$PEERS/peerjs/node_modules/.bin/peerjs
SERVER_CORE=0
GEN_CORE=1
export RUST_LOG=warn
# Guests' byte rate (256 KiB/s by default) would cap the load generator's
# viewers; set by environment so that an older BEFORE_BIN, which has no such
# flag, runs with the same command line.
export SIGNAL_SERVER_RATE_BYTES=1GiB SIGNAL_SERVER_RATE_BYTES_BURST=1GiB

log() { printf '[bench] %s\n' "$*" >&2; }
MISSING=()

# ---------------------------------------------------------------- installs
. scripts/lib.sh
LIB_NAME=bench

install_all() {
  local limit=
  # Smoke runs every adapter: a cold matchbox build takes ~75 s on a quiet machine.
  [ "$MODE" = smoke ] && limit=${MATCHBOX_INSTALL_LIMIT:-300}
  mkdir -p "$PEERS"
  need_cmd sockperf sockperf || MISSING+=("sockperf")
  need_cmd taskset util-linux || MISSING+=("taskset")
  # Only the peers SERVERS names (all of them by default).
  local want=" ${SERVERS:-peerjs python matchbox} "
  [ "$MODE" = install ] && want=" peerjs python matchbox "
  if [[ $want == *" peerjs "* ]]; then
    need_npm "$PEERS/peerjs" 'peer@^1.0.2' || MISSING+=("peerjs")
  fi
  if [[ $want == *" python "* ]]; then need_pip 'websockets>=13' || MISSING+=("python"); fi
  if [[ $want == *" matchbox "* ]]; then
    # matchbox_server 0.15 from crates.io, in its own target dir kept between
    # runs, so that a second install is quick.
    CARGO_TARGET_DIR=$PEERS/.cargo-target CARGO_INSTALL_LIMIT=$limit \
      need_cargo_install matchbox_server '~0.15' "$PEERS/matchbox" || MISSING+=("matchbox")
  fi
  if [ ${#MISSING[@]} -gt 0 ]; then
    if [ "$MODE" = smoke ]; then
      log "NOT INSTALLED, skipped in this smoke run: ${MISSING[*]}"
    else
      log "FAILED to install: ${MISSING[*]}"; exit 1
    fi
  fi
}

install_all
[ "$MODE" = install ] && exit 0

# ------------------------------------------------------------------- build
if [ "$MODE" = smoke ]; then PROFILE=dev; SUB=debug; else PROFILE=release; SUB=release; fi
log "building signal-server, signal-bench, minimal-relay ($PROFILE)"
cargo build --quiet --profile "$PROFILE" -p signal-server -p signal-bench >&2
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=$TARGET_DIR/$SUB

# ---------------------------------------------------------------- settings
if [ "$MODE" = smoke ]; then
  REPEATS=${REPEATS:-1}; CONNS=${CONNS:-300}; ROOMS=5; HOLD=50; WARM=0.2; DUR=0.5; SETTLE=0.3
  SP_TIME=1; RAMP_WARM=0.2; RAMP_DUR=0.5
  OPEN_STEPS=${OPEN_STEPS:-"2000 4000"}
else
  REPEATS=${REPEATS:-3}; CONNS=${CONNS:-19000}; ROOMS=50; HOLD=1000; WARM=1; DUR=5; SETTLE=2
  SP_TIME=5; RAMP_WARM=0.5; RAMP_DUR=1.5
  OPEN_STEPS=${OPEN_STEPS:-"10000 15000 22000 33000 50000 75000 110000 165000 250000"}
fi
SERVERS=${SERVERS:-"ours minimal matchbox peerjs python"}
# BEFORE_BIN: another signal-server binary (e.g. a build of an older commit),
# run as server "before" beside the others, for before/after figures.
if [ -n "${BEFORE_BIN:-}" ] && [[ " $SERVERS " != *" before "* ]]; then
  rest=${SERVERS#ours}
  SERVERS="ours before ${rest# }"
fi
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
if [ "$MODE" = smoke ]; then
  OUT=${BENCH_OUT:-$(mktemp -t bench-smoke.XXXXXX.jsonl)}
else
  mkdir -p benches/results
  OUT=${BENCH_OUT:-benches/results/$STAMP.jsonl}
fi
: > "$OUT"

# ----------------------------------------------------------------- servers
PID=
port_of() {
  case $1 in ours) echo 3530;; before) echo 3531;; minimal) echo 3540;; matchbox) echo 3536;; peerjs) echo 9000;; python) echo 8765;; esac
}
proto_of() { if [ "$1" = before ]; then echo ours; else echo "$1"; fi; }
start_server() { # name
  local port; port=$(port_of "$1")
  case $1 in
    ours|before)
      local bin="$BIN/signal-server"
      [ "$1" = before ] && bin=$BEFORE_BIN
      # The load comes from a few addresses: per-client limits off (given as
      # variables, which an older build in BEFORE_BIN ignores).
      SIGNAL_SERVER_MAX_CONNECTIONS_PER_CLIENT=0 SIGNAL_SERVER_ROOM_CREATIONS_PER_MINUTE=0 \
      SIGNAL_SERVER_ATTACHES_PER_MINUTE=0 SIGNAL_SERVER_MAX_ROOMS=0 \
      taskset -c $SERVER_CORE "$bin" --bind 127.0.0.1:$port --threads 1 \
        --rate-limit 1000000 --rate-burst 1000000 --max-connections 30000 2>/dev/null & ;;
    minimal) taskset -c $SERVER_CORE "$BIN/minimal-relay" 127.0.0.1:$port 2>/dev/null & ;;
    matchbox) RUST_LOG=error taskset -c $SERVER_CORE "$MATCHBOX" 127.0.0.1:$port >/dev/null 2>&1 & ;;
    peerjs) taskset -c $SERVER_CORE node "$PEERJS" --host 127.0.0.1 --port $port -c 100000 >/dev/null 2>&1 & ;;
    python) taskset -c $SERVER_CORE python3 benches/python_relay.py 127.0.0.1 $port 2>/dev/null & ;;
  esac
  PID=$!
  for _ in $(seq 100); do
    if (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  log "$1 did not start listening on $port"; return 1
}
stop_server() {
  [ -n "$PID" ] || return 0
  kill "$PID" 2>/dev/null || true
  wait "$PID" 2>/dev/null || true
  PID=
  sleep 0.5
}
trap stop_server EXIT

gen() { # name repeat args...
  local name=$1 rep=$2; shift 2
  taskset -c $GEN_CORE "$BIN/signal-bench" run --proto "$(proto_of "$name")" --label "$name" \
    --server 127.0.0.1:"$(port_of "$name")" --server-pid "$PID" --repeat "$rep" --out "$OUT" \
    --warmup $WARM --duration $DUR --settle $SETTLE "$@" >/dev/null
}

# The open-loop maximum: the highest rate of OPEN_STEPS the server relays in
# an open loop (every message sent alone, at its time) with at least 95% of
# it delivered in the window and the median hop under 1 ms (no queue growing).
# The closed loop's maximum is no guide here: it batches ten messages per
# system call, the open loop none, so a server costs several times more per
# message in it; and a one-core generator paces at most ~200k sends/s.
open_max() { # name repeat
  local name=$1 rep=$2 best=0 r tmp ok
  for r in $OPEN_STEPS; do
    tmp=$(mktemp)
    taskset -c $GEN_CORE "$BIN/signal-bench" run --proto "$(proto_of "$name")" --label "$name" \
      --server 127.0.0.1:"$(port_of "$name")" --server-pid "$PID" --repeat "$rep" --out "$tmp" \
      --warmup $RAMP_WARM --duration $RAMP_DUR --settle $SETTLE --mode open --size 200 \
      --rooms $ROOMS --rate "$r" >/dev/null 2>&1 || true
    ok=$(python3 - "$tmp" "$r" <<'EOF'
import json, sys
try:
    m = json.loads(open(sys.argv[1]).readline())["metrics"]
    ok = m["msgs_per_s"] >= 0.95 * float(sys.argv[2]) and m["hop_p50_us"] < 1000
except Exception:
    ok = False
print(1 if ok else 0)
EOF
)
    rm -f "$tmp"
    [ "$ok" = 1 ] || break
    best=$r
  done
  echo "$best"
}


sockperf_run() { # repeat
  local rep=$1 port=11111
  command -v sockperf >/dev/null || return 0
  taskset -c $SERVER_CORE sockperf server --tcp -i 127.0.0.1 -p $port >/dev/null 2>&1 &
  local sp=$!
  sleep 0.5
  taskset -c $GEN_CORE sockperf ping-pong --tcp -i 127.0.0.1 -p $port -m 200 -t $SP_TIME --full-rtt 2>&1 \
    | python3 -c '
import json, re, sys
rep = int(sys.argv[1]); m = {}
for line in sys.stdin:
    g = re.search(r"percentile (\d+\.\d+) = +([\d.]+)", line)
    if g:
        m[g.group(1)] = float(g.group(2))
print(json.dumps({"label": "sockperf", "mode": "tcp", "repeat": rep,
  "scenario": "raw TCP round trip, 200 B (sockperf ping-pong)", "params": {"size": 200},
  "metrics": {"rtt_p50_us": m.get("50.000"), "rtt_p99_us": m.get("99.000"), "rtt_p999_us": m.get("99.900")}}))
' "$rep" >> "$OUT"
  kill $sp 2>/dev/null || true; wait $sp 2>/dev/null || true
}

if [ "$MODE" = smoke ]; then
  MODES=${MODES:-"closed10 open setup idle"}  # every generator mode, once
else
  MODES=${MODES:-"closed1 closed10 closed4k open light sweep setup idle"}
fi
LIGHT=${LIGHT:-5000}
# Offered loads (relayed/s) of the latency sweep: where each server's relay
# p99 stands against sockperf's as its load rises.
SWEEP_RATES=${SWEEP_RATES:-"10000 25000 50000"}
want() { [[ " $MODES " == *" $1 "* ]]; }

skip() { # name: whether the server is not installed
  local m
  for m in "${MISSING[@]:-}"; do [ "$m" = "$1" ] && return 0; done
  return 1
}

# -------------------------------------------------------------------- runs
log "machine: $(nproc) CPUs, $(uname -r); load: $(cut -d' ' -f1-3 /proc/loadavg); results: $OUT"
for rep in $(seq 1 "$REPEATS"); do
  sockperf_run "$rep"
  for s in $SERVERS; do
    if skip "$s"; then log "skipping $s (not installed)"; continue; fi
    log "repeat $rep: $s"
    start_server "$s"
    want closed1 && gen "$s" "$rep" --mode closed --size 200 --inflight 1 --rooms $ROOMS
    want closed10 && gen "$s" "$rep" --mode closed --size 200 --inflight 10 --rooms $ROOMS
    want closed4k && gen "$s" "$rep" --mode closed --size 4096 --inflight 10 --rooms $ROOMS
    if want open; then
      max=$(open_max "$s" "$rep")
      log "repeat $rep: $s sustains $max relayed/s in an open loop"
      half=$(( max / 2 ))
      [ "$half" -gt 100 ] || half=100
      gen "$s" "$rep" --mode open --size 200 --rooms $ROOMS --rate "$half" \
        --scenario "open loop, 200 B, at half the open-loop maximum"
    fi
    if want sweep; then
      for r in $SWEEP_RATES; do
        gen "$s" "$rep" --mode open --size 200 --rooms $ROOMS --rate "$r" \
          --scenario "open loop, 200 B, $r relayed/s"
      done
    fi
    want light && gen "$s" "$rep" --mode open --size 200 --rooms $ROOMS --rate $LIGHT \
      --scenario "open loop, 200 B, light load ($LIGHT relayed/s)"
    if [ "$s" = minimal ]; then v=1; else v=2; fi  # it pairs two connections
    want setup && gen "$s" "$rep" --mode setup --rooms $HOLD --viewers $v --concurrency 32
    stop_server
    if want idle; then
      start_server "$s"
      gen "$s" "$rep" --mode idle --conns "$CONNS" --viewers 1 --concurrency 128 --sources 64
      stop_server
    fi
  done
done

REPORT=$("$BIN/signal-bench" report "$OUT")
if [ "$MODE" = smoke ] || [ "${DOCS:-1}" = 0 ]; then
  printf '%s\n' "$REPORT"
  n=$(wc -l < "$OUT")
  log "smoke run OK: $n result lines in $OUT"
  [ ${#MISSING[@]} -eq 0 ] || log "smoke run WITHOUT: ${MISSING[*]} (not installed)"
  exit 0
fi

# ----------------------------------------------------- docs/BENCHMARKS.md
DOC=docs/BENCHMARKS.md
GEN=$(mktemp)
{
  echo "<!-- bench:begin (generated by scripts/bench.sh; edit outside these markers) -->"
  echo
  echo "Generated $(date -u '+%Y-%m-%d %H:%M UTC') by \`scripts/bench.sh\` from \`$OUT\`"
  echo "(\`signal-bench report $OUT\` prints these tables again)."
  echo
  echo "- Machine: $(nproc) vCPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), $(free -g | awk '/Mem:/{print $2}') GiB, Linux $(uname -r); load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)."
  echo "- Placement: server on core $SERVER_CORE (\`taskset -c $SERVER_CORE\`, signal-server \`--threads 1\`), load generator on core $GEN_CORE; sockperf likewise."
  echo "- $REPEATS repeats, servers interleaved within each repeat; ${WARM} s warm-up, ${DUR} s measured; idle mode: $CONNS connections."
  echo "- Versions: signal-server $(git describe --always --dirty 2>/dev/null || echo '?'); matchbox_server $(grep -o 'matchbox_server [0-9.]*' "$PEERS/matchbox/.crates.toml" 2>/dev/null | head -1 | cut -d' ' -f2 || echo '?'); peer $(node -p "require('$PEERS/peerjs/node_modules/peer/package.json').version" 2>/dev/null || echo '?'); node $(node --version 2>/dev/null || echo '?'); Python websockets $(python3 -c 'import websockets; print(websockets.__version__)' 2>/dev/null || echo '?')."
  echo
  printf '%s\n' "$REPORT"
  echo "<!-- bench:end -->"
} > "$GEN"
if [ -f "$DOC" ] && grep -q '<!-- bench:begin' "$DOC"; then
  python3 - "$DOC" "$GEN" <<'EOF'
import re, sys
doc, gen = sys.argv[1], sys.argv[2]
text = open(doc).read()
new = open(gen).read().rstrip("\n")
text = re.sub(r"<!-- bench:begin.*?<!-- bench:end -->", lambda _: new, text, flags=re.S)
open(doc, "w").write(text)
EOF
else
  { echo "# Benchmarks"; echo; cat "$GEN"; } > "$DOC"
fi
rm -f "$GEN"
log "wrote $DOC (results: $OUT)"
