#!/usr/bin/env bash
# Benchmarks the embedded TURN relay against coturn (Debian's turnserver) on
# this machine, side by side in one run, under the same load from
# tools/turn-bench: ALLOCS allocations, each with a channel to an echo peer
# on 127.0.0.2, INFLIGHT ChannelData packets of SIZE bytes in flight per
# allocation (closed loop), 1 s warm-up, SECONDS measured.
#
#   scripts/turn-bench.sh           REPEATS (3) interleaved runs per relay
#                                   and load; prints a Markdown table and
#                                   writes benches/results/turn-*.jsonl
#   scripts/turn-bench.sh --smoke   one short run each (checks it works)
#
# Placement: each relay alone on core 0 (`taskset -c 0`; signal-server on a
# one-thread runtime, coturn with one relay thread), the load generator on
# core 1. Environment: REPEATS, MEASURE (seconds), ALLOCS, SIZE, LOADS (the
# in-flight counts, default "1 10").
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

SMOKE=0
[ "${1:-}" = "--smoke" ] && SMOKE=1
REPEATS=${REPEATS:-3}
SECONDS_MEASURED=${MEASURE:-5}
ALLOCS=${ALLOCS:-10}
SIZE=${SIZE:-1000}
LOADS=${LOADS:-"1 10"}
if [ $SMOKE -eq 1 ]; then REPEATS=1; SECONDS_MEASURED=1; LOADS=10; fi
SECRET=bench-secret-$RANDOM$RANDOM
PORT=34780
export RUST_LOG=warn

log() { printf '[turn-bench] %s\n' "$*" >&2; }

. scripts/lib.sh
need_cmd turnserver coturn || exit 1
need_cmd taskset util-linux || exit 1
need_cmd ss iproute2 || exit 1
cargo build --release --locked -q --workspace --bin signal-server --bin turn-bench
SS=$ROOT/target/release/signal-server
GEN=$ROOT/target/release/turn-bench
TMP=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$TMP"' EXIT
mkdir -p benches/results
OUT=${BENCH_OUT:-benches/results/turn-$(date -u +%Y%m%dT%H%M%SZ).jsonl}
[ $SMOKE -eq 1 ] && OUT=$TMP/smoke.jsonl

start_relay() { # name -> sets PID
  case $1 in
    embedded)
      taskset -c 0 "$SS" --threads 1 --bind 127.0.0.1:0 \
        --turn-listen 127.0.0.1:$PORT --turn-secret "$SECRET" \
        --turn-allow-peer 127.0.0.0/8 --turn-relay-ports 40000-49000 \
        --turn-user-quota 0 --turn-total-quota 0 \
        --turn-allocation-bandwidth 10000000000 --turn-user-bandwidth 10000000000 \
        --turn-total-bandwidth 10000000000 >"$TMP/embedded.log" 2>&1 &
      ;;
    coturn)
      taskset -c 0 turnserver -n --listening-ip 127.0.0.1 --listening-port $PORT \
        --relay-ip 127.0.0.1 --min-port 40000 --max-port 49000 --relay-threads 1 \
        --use-auth-secret --static-auth-secret="$SECRET" --realm=bench \
        --allow-loopback-peers --no-tls --no-dtls --no-cli --no-tcp-relay \
        --log-file=stdout --simple-log >"$TMP/coturn.log" 2>&1 &
      ;;
  esac
  PID=$!
  # Up once its UDP port is bound.
  for _ in $(seq 100); do
    ss -lun | grep -q "127.0.0.1:$PORT " && return 0
    sleep 0.05
  done
  log "$1 did not start"; cat "$TMP/$1.log" >&2; exit 1
}

stop_relay() { kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; }

for r in $(seq "$REPEATS"); do
  for load in $LOADS; do
    for relay in embedded coturn; do
      start_relay $relay
      taskset -c 1 "$GEN" --relay 127.0.0.1:$PORT --secret "$SECRET" --name $relay \
        --allocations "$ALLOCS" --inflight "$load" --size "$SIZE" \
        --seconds "$SECONDS_MEASURED" --relay-pid "$PID" | tee -a "$OUT"
      stop_relay
    done
  done
done

# Medians per relay and load, and the ratio embedded / coturn.
python3 - "$OUT" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
by = {}
for r in rows:
    by.setdefault((r["inflight"], r["relay"]), []).append(r)
print("| in flight per allocation | relay | relayed packets/s | relay CPU (share of a core) | relay CPU per relayed packet |")
print("|---|---|---|---|---|")
for (k, relay), rs in sorted(by.items()):
    pps = statistics.median(r["relayed_per_sec"] for r in rs)
    cpu = statistics.median(r["relay_cpu_share"] for r in rs)
    us = statistics.median(r["relay_cpu_us_per_packet"] for r in rs)
    print(f"| {k} | {relay} | {pps:,.0f} | {cpu:.0%} | {us:.2f} us |")
for k in sorted({k for k, _ in by}):
    e, c = by.get((k, "embedded")), by.get((k, "coturn"))
    if e and c:
        ratio = statistics.median(r["relay_cpu_us_per_packet"] for r in e) / statistics.median(r["relay_cpu_us_per_packet"] for r in c)
        print(f"\n{k} in flight: embedded / coturn CPU per relayed packet = {ratio:.2f}")
PY
log "results: $OUT"
