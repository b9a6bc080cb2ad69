#!/usr/bin/env bash
# Installs what the test suite needs beyond the Rust toolchain, only where it
# is missing: Debian packages (Chromium, iproute2, redis-server, coturn), Python
# packages (websockets, aiortc) and the browser tests' npm packages.
# Safe to run again; CI runs it on a fresh machine.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
command -v ip >/dev/null 2>&1 || need_apt+=(iproute2)
command -v unshare >/dev/null 2>&1 || need_apt+=(util-linux)
command -v curl >/dev/null 2>&1 || need_apt+=(curl)
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
command -v openssl >/dev/null 2>&1 || need_apt+=(openssl)
# coturn's turnutils_uclient / turnutils_peer: the TURN interop tests
# (tests/turn.rs, tests/turn_signalling.rs) and the relay benchmark
# (scripts/turn-bench.sh); its turnserver: the relay of scripts/turn-e2e.sh.
command -v turnutils_uclient >/dev/null 2>&1 || need_apt+=(coturn)
command -v turnserver >/dev/null 2>&1 || need_apt+=(coturn)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "install-test-deps: apt-get install ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

python3 - <<'PY' || { echo "install-test-deps: pip install -r tests/e2e/requirements.txt"; python3 -m pip install -q --disable-pip-version-check -r tests/e2e/requirements.txt; }
import importlib.util, sys
missing = [m for m in ("websockets", "aiortc", "av", "numpy") if importlib.util.find_spec(m) is None]
sys.exit(1 if missing else 0)
PY

if [ ! -d tests/browser/node_modules/playwright-core ]; then
  echo "install-test-deps: npm ci (tests/browser)"
  (cd tests/browser && npm ci --no-audit --no-fund --loglevel=error)
fi
# The cross builds' targets and tools (cross-test.sh, empty-root-test.sh).
scripts/install-cross-deps.sh
echo "install-test-deps: ok"
