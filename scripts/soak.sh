#!/usr/bin/env bash
# Soak and chaos test: builds the server and tools/soak (release), then runs thousands of
# rooms and hostile clients against the binary over loopback for a fixed time, accounting
# for every message (see tools/soak/src/main.rs). Fails on any loss, duplicate,
# misdelivery, cross-room delivery, leak, wrong answer or crash.
#
#   scripts/soak.sh                  # CI: 60 s of load, in 3 waves of 20 s
#   scripts/soak.sh --seconds 300 --rooms 4000
#
# Options are passed to the soak program (`target/release/soak --help`); the usual ones:
#   --seconds N    length of the load (default 60)
#   --rooms N      honest rooms at once (default 2000, 3 connections each)
#   --out FILE     the JSON summary (default target/soak-summary.json; also printed)
#
# Everything stays on 127.0.0.0/8. Needs no network. Bounded: the load lasts --seconds,
# clients then have at most about a minute to finish, and the whole run is killed after
# --seconds + 240 s. Exit code: the soak program's (0 pass, 1 failure, 2 could not run).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

seconds=60
out="$repo/target/soak-summary.json"
args=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --seconds) seconds="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) args+=("$1"); shift ;;
  esac
done

echo "soak.sh: building signal-server and soak (release)" >&2
cargo build --release --quiet -p signal-server -p soak --bins

# Thousands of sockets on each side: raise the soft open-files limit to the hard one.
hard="$(ulimit -Hn)"
if [[ "$hard" == unlimited ]]; then hard=65536; fi
ulimit -n "$hard"
echo "soak.sh: open-files limit $(ulimit -n); running for $seconds s" >&2

mkdir -p "$(dirname "$out")"
set +e
timeout --signal=KILL $(( seconds + 240 )) \
  "$repo/target/release/soak" \
    --server "$repo/target/release/signal-server" \
    --seconds "$seconds" \
    --out "$out" \
    --log "$repo/target/soak-server.log" \
    "${args[@]}" >/dev/null
rc=$?
set -e
if [[ -f "$out" ]]; then
  if command -v jq >/dev/null 2>&1; then
    jq '{ok, failures, messages, server: (.server | del(.timeline_s_rss_fds, .metrics)), failure_details}' "$out"
  else
    cat "$out"
  fi
fi
case "$rc" in
  0) echo "soak.sh: PASS (summary in $out)" ;;
  137) echo "soak.sh: FAILED: killed after $(( seconds + 240 )) s" >&2 ;;
  *) echo "soak.sh: FAILED (exit $rc; summary in $out, server log in target/soak-server.log)" >&2 ;;
esac
exit "$rc"
