# syntax=docker/dockerfile:1
#
# attache: a release build in a full Rust image, run from a slim, non-root image.
#   docker build -t attache .
#   docker run --rm -v "$PWD/example-repo:/config:ro" attache validate /config

FROM rust:1-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends libssl-dev pkg-config \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# Dependencies first, so a source change does not refetch them.
COPY Cargo.toml Cargo.lock ./
RUN cargo fetch --locked
COPY build.rs ./
COPY src ./src
COPY benches ./benches
COPY examples ./examples
RUN cargo build --release --locked --bin attache \
 && install -D target/release/attache /out/attache

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libssl3 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /var/lib/attache --create-home attache
COPY --from=build /out/attache /usr/local/bin/attache
COPY example-repo /usr/share/attache/example-repo
USER 10001:10001
WORKDIR /var/lib/attache
# xDS (gRPC ADS)
EXPOSE 18000
# Admin: /healthz, /readyz, /metrics, /diag (serve --admin-addr 0.0.0.0:8877 to reach it)
EXPOSE 8877
ENTRYPOINT ["/usr/local/bin/attache"]
CMD ["--help"]
