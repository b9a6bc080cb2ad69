# syntax=docker/dockerfile:1
#
# signal-server as a container image: the static (musl) binary, an empty
# state directory, and nothing else. deploy/README.md has the run commands for
# the server and for the bridge.
#
#   docker build -t signal-server .
#   docker buildx build --platform linux/amd64,linux/arm64 -t signal-server .
#
# The build stage runs on the platform it builds for (a foreign one under
# emulation, slow but simple) on Alpine, whose Rust targets musl, linked
# statically. What the image does not need, and why:
# - no CA certificates: the bridge's wss:// and rediss:// trust the Mozilla
#   roots built into the binary (webpki-roots);
# - no shell, so no HEALTHCHECK (Docker runs its command inside the
#   container): probe `GET /healthz` from outside instead;
# - no /etc/passwd: USER is numeric.
# scripts/empty-root-test.sh runs the same kind of binary from an empty root
# directory in the test suite.

ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-alpine AS build
# `ring` compiles C and assembly for the target: musl's headers and crt files.
# Not pinned: the version is the one of the image's Alpine release.
# hadolint ignore=DL3018
RUN apk add --no-cache musl-dev
WORKDIR /src
COPY . .
# The release profile of Cargo.toml (fat LTO, line tables compressed: see
# docs/RELEASING.md); the target is explicit so that the binary is static
# whatever the host.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    target="$(uname -m)-unknown-linux-musl" \
 && cargo build --release --locked --target "$target" --bin signal-server \
 && cp "target/$target/release/signal-server" /signal-server \
 && mkdir -p /state

FROM scratch
COPY --from=build /signal-server /signal-server
# For `bridge --state-file /var/lib/signal-server/bridge.json` (and a
# certificate cache later): writable by the runtime user; a named volume
# mounted here starts with this owner.
COPY --from=build --chown=65532:65532 /state /var/lib/signal-server
# Not root. Inside the container's own network namespace Docker lets any user
# bind ports below 1024 (net.ipv4.ip_unprivileged_port_start=0).
USER 65532:65532
# The server's default port (`--bind`, or $PORT). It speaks plain HTTP and
# WebSocket: terminate TLS in front of it until the server does it itself.
EXPOSE 9090/tcp
ENTRYPOINT ["/signal-server"]
