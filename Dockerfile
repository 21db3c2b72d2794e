# syntax=docker/dockerfile:1
# fleetcast image: the node (`fleetcast`, the entrypoint) and the snapshot worker
# (`fleetcast-worker`), release builds on a slim Debian.
# Build: docker build -t fleetcast . (docker-compose.yml does it for the cluster).

ARG RUST_VERSION=1.94

FROM rust:${RUST_VERSION}-slim-bookworm AS build
WORKDIR /src
# The whole workspace: cargo needs every member's manifest and sources to resolve it, and
# the binary embeds migrations/ and redis/*.lua at compile time. .dockerignore keeps
# target/ and node_modules/ out of the context.
COPY . .
# Cache mounts keep the registry and build artefacts between builds; the binary is copied
# out of the cached target/ in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin fleetcast --bin fleetcast-worker \
 && install -m 0755 target/release/fleetcast target/release/fleetcast-worker /usr/local/bin/

FROM debian:bookworm-slim
# curl only for the health check.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --create-home --home-dir /var/lib/fleetcast fleetcast
COPY --from=build /usr/local/bin/fleetcast /usr/local/bin/fleetcast-worker /usr/local/bin/
USER fleetcast
# Embedded mode writes fleetcast.db here; cluster nodes keep nothing on disk.
WORKDIR /var/lib/fleetcast
ENV FLEETCAST_BIND=0.0.0.0:3000 \
    FLEETCAST_LOG_FORMAT=json
EXPOSE 3000
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s \
    CMD curl -fsS http://127.0.0.1:3000/healthz >/dev/null || exit 1
# SIGTERM (docker stop) starts the graceful shutdown; it lasts at most
# FLEETCAST_SHUTDOWN_DRAIN_MS (10 s), so give the container a longer stop timeout.
STOPSIGNAL SIGTERM
ENTRYPOINT ["fleetcast"]
