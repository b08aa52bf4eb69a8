# syntax=docker/dockerfile:1
#
# attache: a release build in the Rust image, run from Debian slim as a non-root user with
# nothing but the binary, its shared libraries and CA certificates.
#
#   docker build -t attache:0.1.0 .          (BuildKit: the default builder since Docker 23)
#   docker run --rm -v "$PWD/example-repo:/config:ro" attache:0.1.0 validate /config
#   docker run --rm -p 18000:18000 attache:0.1.0 serve --dir /usr/share/attache/example-repo \
#       --xds-addr 0.0.0.0:18000 --state-dir /tmp/state --endpoints dns
#
# deploy/ runs it as `attache:0.1.0` (see deploy/README.md to push it to a registry).

# The toolchain the tests run with; both stages are Debian 12 (bookworm), so the binary
# links against exactly the library versions the runtime stage installs.
FROM rust:1.95-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends libssl-dev pkg-config \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# Only what the build reads. Cargo.toml declares the [[bench]] targets by name, and cargo
# refuses a manifest whose declared targets have no file, so benches/ comes too (32 KB);
# examples/ and tests/ are discovered, not declared, and stay out.
COPY Cargo.toml Cargo.lock build.rs ./
COPY src ./src
COPY benches ./benches
# Cache mounts keep the crates and the compiled dependencies between builds, so a source
# change recompiles attache only; the binary is copied out of the cached target dir in the
# same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin attache \
 && install -D target/release/attache /out/attache

FROM debian:bookworm-slim
# What `ldd target/release/attache` lists: libssl.so.3 and libcrypto.so.3 (libssl3; git2
# over HTTPS and SSH), libz.so.1 (zlib1g), libgcc_s.so.1 (libgcc-s1), libc and libm
# (libc6, in the base image). ca-certificates verifies HTTPS git remotes.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libssl3 zlib1g libgcc-s1 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 attache \
 && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/attache --create-home \
        --shell /usr/sbin/nologin attache
COPY --from=build /out/attache /usr/local/bin/attache
# Fail the build, not the first pod, when a shared library is missing.
RUN if ldd /usr/local/bin/attache | grep 'not found'; then exit 1; fi \
 && /usr/local/bin/attache --version
COPY example-repo /usr/share/attache/example-repo
# Numeric, so Kubernetes can check runAsNonRoot against the image itself.
USER 10001:10001
WORKDIR /var/lib/attache
# xDS (gRPC ADS)
EXPOSE 18000
# Admin: /healthz, /readyz, /metrics, /diag (serve --admin-addr 0.0.0.0:8877 to reach it)
EXPOSE 8877
LABEL org.opencontainers.image.title="attache" \
      org.opencontainers.image.description="A GitOps control plane for Envoy" \
      org.opencontainers.image.licenses="Apache-2.0"
ENTRYPOINT ["/usr/local/bin/attache"]
CMD ["--help"]
