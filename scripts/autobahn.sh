#!/usr/bin/env bash
# Autobahn|Testsuite (the WebSocket conformance suite) against the project's own
# WebSocket layer (src/ws/), through the echo example built on it
# (examples/ws_echo.rs).
#
#   scripts/autobahn.sh            # sections 1-7 and 10 (about a minute)
#   scripts/autobahn.sh --cases '6.4.*,7.*'
#
# Installs autobahntestsuite (Python 2.7, under pyenv) into .tools/autobahn
# (git-ignored) when it is missing. Reports go to target/autobahn/ (index.json
# and one HTML page per case).
#
# Passes when every case is OK, NON-STRICT or INFORMATIONAL (behaviour and close
# behaviour), except the binary echo cases 1.2.*: the frame reader drops binary
# content as it arrives (the protocol is text only), so the echo has nothing to
# send back and those cases are expected to fail; they are listed, not judged.
# 9.* (large-message performance) and 12.*/13.* (permessage-deflate, not
# negotiated) are not run.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

cases='1.*,2.*,3.*,4.*,5.*,6.*,7.*,10.*'
while [[ $# -gt 0 ]]; do
  case "$1" in
    --cases) cases="$2"; shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "usage: $0 [--cases LIST]" >&2; exit 2 ;;
  esac
done

tools=$repo/.tools/autobahn
out=$repo/target/autobahn

# Python 2.7: pyenv's, else one on PATH.
python2=""
if command -v pyenv >/dev/null 2>&1 && [[ -x "$(pyenv root)/versions/2.7.18/bin/python" ]]; then
  python2="$(pyenv root)/versions/2.7.18/bin/python"
elif [[ -x "$HOME/.pyenv/versions/2.7.18/bin/python" ]]; then
  python2="$HOME/.pyenv/versions/2.7.18/bin/python"
elif command -v python2.7 >/dev/null 2>&1; then
  python2="$(command -v python2.7)"
else
  echo "autobahn.sh: no Python 2.7 (expected under pyenv as 2.7.18)" >&2
  exit 2
fi

if ! PYTHONPATH=$tools "$python2" -c 'import autobahntestsuite' >/dev/null 2>&1; then
  echo "autobahn.sh: installing autobahntestsuite into .tools/autobahn (about a minute)" >&2
  rm -rf "$tools"
  "$python2" -m pip install -q --disable-pip-version-check --no-warn-script-location \
    --target "$tools" autobahntestsuite 2>&1 | grep -v DEPRECATION >&2 || true
  # --target leaves the zope namespace package without its __init__.py.
  touch "$tools/zope/__init__.py"
  PYTHONPATH=$tools "$python2" -c 'import autobahntestsuite' \
    || { echo "autobahn.sh: autobahntestsuite did not install" >&2; exit 2; }
fi

echo "autobahn.sh: building the echo example" >&2
cargo build --quiet --example ws_echo
echo_bin=${CARGO_TARGET_DIR:-$repo/target}/debug/examples/ws_echo

rm -rf "$out"
mkdir -p "$out"
"$echo_bin" 127.0.0.1:0 >"$out/echo.log" 2>&1 &
echo_pid=$!
trap 'kill $echo_pid 2>/dev/null || true; wait $echo_pid 2>/dev/null || true' EXIT
addr=""
for _ in $(seq 100); do
  addr=$(sed -n 's/^listening on //p' "$out/echo.log")
  [[ -n "$addr" ]] && break
  sleep 0.1
done
[[ -n "$addr" ]] || { echo "autobahn.sh: the echo example did not start" >&2; cat "$out/echo.log" >&2; exit 2; }

python3 - "$out/spec.json" "$addr" "$cases" <<'EOF'
import json, sys
path, addr, cases = sys.argv[1:]
json.dump({
    "outdir": sys.argv[1].rsplit("/", 1)[0] + "/reports",
    "servers": [{"agent": "signal-server", "url": "ws://" + addr}],
    "cases": [c.strip() for c in cases.split(",") if c.strip()],
    "exclude-cases": ["9.*", "12.*", "13.*"],
    "exclude-agent-cases": {},
}, open(path, "w"))
EOF

echo "autobahn.sh: running cases $cases against ws://$addr" >&2
started=$(date +%s)
(cd "$out" && PYTHONPATH=$tools "$python2" "$tools/bin/wstest" -m fuzzingclient -s spec.json >wstest.log 2>&1) \
  || { echo "autobahn.sh: wstest failed" >&2; tail -20 "$out/wstest.log" >&2; exit 2; }
echo "autobahn.sh: ran in $(( $(date +%s) - started )) s" >&2

python3 - "$out/reports/index.json" <<'EOF'
import collections, json, sys
index = json.load(open(sys.argv[1]))["signal-server"]
def key(case):
    return [int(p) for p in case.split(".")]
passing = {"OK", "NON-STRICT", "INFORMATIONAL"}
by_behaviour = collections.Counter()
expected, bad = [], []
for case in sorted(index, key=key):
    r = index[case]
    b, c = r["behavior"], r["behaviorClose"]
    by_behaviour[b] += 1
    if case.startswith("1.2."):
        expected.append(f"{case} {b}/{c}")
    elif b not in passing or c not in passing:
        bad.append(f"{case}: behaviour {b}, close {c} ({r.get('reportfile', '')})")
print(f"autobahn: {len(index)} cases: " + ", ".join(f"{n} {b}" for b, n in sorted(by_behaviour.items())))
non_strict = sorted((c for c in index if index[c]["behavior"] == "NON-STRICT"), key=key)
if non_strict:
    print("autobahn: NON-STRICT: " + " ".join(non_strict))
print(f"autobahn: binary echo cases (expected to differ: binary content is not kept): "
      + (", ".join(expected) or "none"))
if bad:
    print("autobahn: FAILED:\n  " + "\n  ".join(bad))
    sys.exit(1)
print("autobahn: PASS (every case but 1.2.* OK, NON-STRICT or INFORMATIONAL)")
EOF
