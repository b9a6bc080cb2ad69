#!/usr/bin/env bash
# The static (musl) binary in an otherwise empty root directory, which is what
# the container image (Dockerfile, FROM scratch) holds:
#
#   scripts/empty-root-test.sh [STATIC-BINARY]
#
# 1. without a binary: installs what is missing (scripts/install-cross-deps.sh)
#    and builds signal-server for x86_64-unknown-linux-musl with the `smoke`
#    profile (kept in target/ between runs); the release workflow passes its
#    release binary instead;
# 2. checks the binary is static: no program interpreter, no shared
#    libraries;
# 3. copies it alone into a new temporary directory and runs it with that
#    directory as its root (`unshare --root`: no /etc, /dev, /proc, /tmp, no
#    CA store), as uid/gid 65532 like the image's USER, for both the server
#    and the bridge: tests/smoke/smoke.py checks the page, /healthz, a
#    WebSocket session (init, a watcher, messages relayed both ways) and the
#    bridge hosting a room for a scripted webrtc_ros stand-in, through real
#    loopback sockets (a root change shares the machine's network);
# 4. checks that nothing was written into the root.
# Prints "empty-root: N passed, N failed" last; exit code 0 when all passed.
set -euo pipefail
cd "$(dirname "$0")/.."

target=x86_64-unknown-linux-musl
bin="${1:-}"
fail() {
  echo "empty-root: $*"
  echo "empty-root: 0 passed, 1 failed"
  exit 1
}

if [[ -z "$bin" ]]; then
  bin="target/$target/smoke/signal-server"
  scripts/install-cross-deps.sh
  echo "empty-root: cargo build --profile smoke --target $target"
  started=$SECONDS
  cargo build --locked --profile smoke --target "$target" --bin signal-server
  echo "empty-root: built in $((SECONDS - started)) s"
fi
[[ -x "$bin" ]] || fail "no binary at $bin"
echo "empty-root: $bin: $(file -b "$bin" | cut -d, -f1-4)"
if readelf -l "$bin" | grep -q 'INTERP' || readelf -d "$bin" | grep -q 'NEEDED'; then
  fail "$bin is not a static binary: $(readelf -d "$bin" | grep NEEDED | tr -s ' ')"
fi

root="$(mktemp -d)"
trap 'rm -rf "$root"' EXIT
chmod 0755 "$root"
cp "$bin" "$root/signal-server"
chmod 0555 "$root/signal-server"
# As root: a mount namespace of its own, then the new root, then uid 65532.
# As another user: a user namespace mapped to root first (which may chroot).
if [[ $(id -u) -eq 0 ]]; then
  enter=(unshare --mount --root="$root" --setuid 65532 --setgid 65532)
else
  enter=(unshare --user --map-root-user --mount --root="$root")
fi
# The root must really be empty but for the binary, before and after.
listing() { (cd "$root" && find . -mindepth 1 | sort); }
[[ "$(listing)" == "./signal-server" ]] || fail "the root holds more than the binary: $(listing)"

cmd="${enter[*]} /signal-server"
passed=0 failed=0
echo "empty-root: server and bridge from $root, as: $cmd"
if python3 tests/smoke/smoke.py --server "$cmd" --bridge "$cmd"; then
  passed=$((passed + 1))
else
  failed=$((failed + 1))
fi
if [[ "$(listing)" == "./signal-server" ]]; then
  passed=$((passed + 1))
else
  echo "empty-root: the run wrote into its root: $(listing)"
  failed=$((failed + 1))
fi
echo "empty-root: $passed passed, $failed failed"
[[ $failed -eq 0 ]]
