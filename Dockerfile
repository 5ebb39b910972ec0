# raftq container image: `make docker` (scripts/docker-build.sh) builds it as
# raftq:latest. This file is the registry path: it pulls rust and
# debian:bookworm-slim. Where no registry can be reached, make docker builds
# the same runtime on a locally made base instead (docker/Dockerfile.local,
# keep the two runtime stages in step). See docs/docker.md.
#
# Works with the legacy builder and BuildKit alike (no RUN --mount).

FROM rust:1.95-bookworm AS builder
# RocksDB's bindgen needs libclang; its C++ needs g++ (in the rust image).
RUN apt-get update \
    && apt-get install -y --no-install-recommends libclang-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# Dependencies first, against stub sources: RocksDB's C++ build (the bulk of
# the time) then stays in a cached layer while src/ changes.
COPY Cargo.toml Cargo.lock rust-toolchain.toml ./
RUN mkdir src \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs \
    && cargo build --release --locked --bin raftq \
    && rm -rf src
COPY src ./src
# touch: the stubs' artifacts are newer than the checked-out sources.
RUN touch src/main.rs src/lib.rs \
    && cargo build --release --locked --bin raftq \
    && cp target/release/raftq /usr/local/bin/raftq

FROM debian:bookworm-slim
# curl runs the HEALTHCHECK; ca-certificates for anything TLS beyond the
# cluster's own CA.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/*
# --- runtime, identical in docker/Dockerfile.local ---
RUN groupadd --system --gid 10001 raftq \
    && useradd --system --uid 10001 --gid raftq --home-dir /data --no-create-home \
        --shell /usr/sbin/nologin raftq \
    && mkdir -p /data /certs \
    && chown raftq:raftq /data
COPY --from=builder /usr/local/bin/raftq /usr/local/bin/raftq
# Every `serve` flag reads RAFTQ_<FLAG> (src/cli.rs). The advertised address
# is eth0's, which is what other containers on the network reach. One node
# certificate for the whole cluster is mounted at /certs (make certs).
# NO_COLOR: docker logs is no terminal, keep escape codes out of the logs.
ENV RAFTQ_DATA_DIR=/data \
    RAFTQ_BIND_INTERFACE=eth0 \
    RAFTQ_API_ADDR=0.0.0.0:8080 \
    RAFTQ_GOSSIP_ADDR=0.0.0.0:1111 \
    RAFTQ_RAFT_ADDR=0.0.0.0:1112 \
    RAFTQ_MAZE_SOURCE_ADDR=0.0.0.0:9090 \
    RAFTQ_MAZE_CLIENT_ADDR=0.0.0.0:9099 \
    RAFTQ_TLS_CERT=/certs/node.pem \
    RAFTQ_TLS_KEY=/certs/node-key.pem \
    RAFTQ_TLS_CA=/certs/ca.pem \
    NO_COLOR=1
VOLUME ["/data"]
WORKDIR /data
EXPOSE 8080/tcp 1111/udp 1112/tcp 9090/tcp 9099/tcp
USER 10001:10001
# /healthz needs no token; the port follows RAFTQ_API_ADDR.
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD curl -fsk -o /dev/null "https://127.0.0.1:${RAFTQ_API_ADDR##*:}/healthz" || exit 1
ENTRYPOINT ["raftq", "serve"]
