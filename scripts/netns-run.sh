#!/usr/bin/env bash
# Runs a command inside a fresh, private network namespace, so that the
# WebRTC media of an end-to-end test stays on this machine:
#
#   scripts/netns-run.sh COMMAND [ARGS...]
#
# The namespace has loopback up and a veth pair (198.51.100.1/24 and .2, a
# documentation range that reaches nothing outside the namespace) with a default
# route. Both are needed: with loopback only, neither Chromium nor aiortc
# gathers ICE candidates (aioice skips 127.0.0.1), and without a default route
# Chromium gathers none at all. Root uses `unshare --net`; other users get a
# user namespace mapped to root.
set -euo pipefail

if [[ "${1:-}" != "--inside" ]]; then
  if [[ $(id -u) -eq 0 ]]; then
    exec unshare --net "$0" --inside "$@"
  else
    exec unshare --user --map-root-user --net "$0" --inside "$@"
  fi
fi
shift
ip link set lo up
ip link add v0 type veth peer name v1
ip addr add 198.51.100.1/24 dev v0
ip addr add 198.51.100.2/24 dev v1
ip link set v0 up
ip link set v1 up
ip route add default via 198.51.100.2 dev v0
exec "$@"
