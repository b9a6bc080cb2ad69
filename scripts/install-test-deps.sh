#!/usr/bin/env bash
# Installs what the test suite needs beyond the Rust toolchain, only where it
# is missing: Debian packages (Chromium, iproute2, redis-server, coturn,
# openssl, node), Python packages (websockets, aiortc) and the browser tests'
# npm packages. The tests never install anything themselves: a test whose tool
# is missing fails, naming this script. Safe to run again; CI runs it on a
# fresh machine.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

need_cmd chromium chromium
need_cmd ip iproute2
need_cmd unshare util-linux
need_cmd curl curl
need_cmd redis-server redis-server
need_cmd openssl openssl
# coturn's turnutils_uclient / turnutils_peer: the TURN interop tests
# (tests/turn.rs, tests/turn_signalling.rs) and the relay benchmark
# (scripts/turn-bench.sh); its turnserver: the relay of scripts/turn-e2e.sh.
need_cmd turnutils_uclient coturn
need_cmd turnserver coturn
# pebble and pebble-challtestsrv: the ACME CA of tests/acme.rs.
need_cmd pebble pebble
need_cmd pebble-challtestsrv pebble
need_pip -r tests/e2e/requirements.txt
need_pip -r tests/api/requirements.txt
need_npm tests/browser
# The cross builds' targets and tools (cross-test.sh, empty-root-test.sh).
scripts/install-cross-deps.sh
echo "install-test-deps: ok"
