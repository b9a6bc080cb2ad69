#!/usr/bin/env bash
# Installs what the cross builds need, only where it is missing:
#   - the rustup targets aarch64-unknown-linux-gnu and x86_64-unknown-linux-musl
#   - Debian's aarch64 cross linker and C library (gcc-aarch64-linux-gnu,
#     libc6-dev-arm64-cross; `ring` compiles C for the target too), qemu-user
#     (runs the aarch64 binary here) and musl-tools (musl-gcc, for the musl
#     build's C)
# Safe to run again. Called by scripts/install-test-deps.sh and by
# scripts/cross-test.sh. About 230 MB on disk when nothing was there yet
# (rustup's two standard libraries about 140 MB, the Debian packages about
# 90 MB; docs/RELEASING.md has the figures).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

targets=(aarch64-unknown-linux-gnu x86_64-unknown-linux-musl)
installed="$(rustup target list --installed)"
missing_targets=()
for t in "${targets[@]}"; do
  grep -qx "$t" <<<"$installed" || missing_targets+=("$t")
done
if [[ ${#missing_targets[@]} -gt 0 ]]; then
  echo "install-cross-deps: rustup target add ${missing_targets[*]}"
  rustup target add "${missing_targets[@]}"
fi

need_cmd aarch64-linux-gnu-gcc gcc-aarch64-linux-gnu
need_apt libc6-dev-arm64-cross
need_cmd qemu-aarch64 qemu-user
need_cmd musl-gcc musl-tools
echo "install-cross-deps: ok"
