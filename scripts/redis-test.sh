#!/usr/bin/env bash
# The shared-registry tests (tests/redis.rs, and the registry contract suite
# tests/registry_contract.rs for both registries) against a real
# redis-server: installs redis-server when it is missing (scripts/lib.sh), then runs
# the tests. Each test starts its own redis-server on a free loopback port, in
# a temporary directory, without persistence, and stops it at the end.
#   scripts/redis-test.sh [extra cargo test arguments, e.g. a test name]
# Set RUST_LOG=signal_server=debug to see the servers' logs.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

need_cmd redis-server redis-server
need_cmd openssl openssl  # the TLS test's self-signed certificate
redis-server --version
# The tests start their own servers; a system service is not needed.
exec cargo test --test redis --test registry_contract "$@"
