# syntax=docker/dockerfile:1
# keyfleet operator image.
#
#   docker build -t keyfleet:dev .
#
# Stage 1 builds the release binary; stage 2 is distroless (glibc, libgcc, CA certificates,
# no shell) running as the non-root uid 65532.

FROM rust:1.95-bookworm AS builder
WORKDIR /build

# Dependencies first, in their own layer: this layer is rebuilt only when Cargo.toml or
# Cargo.lock change, not on every source edit. A stub lib and main stand in for src/; then
# the stub crate's build is forgotten, so the real sources below are always rebuilt (their
# mtimes may be older than the stub's build).
COPY Cargo.toml Cargo.lock ./
RUN mkdir src \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs \
    && cargo build --release --locked \
    && rm -rf src \
    && rm -rf target/release/.fingerprint/keyfleet-* \
        target/release/deps/keyfleet-* target/release/deps/libkeyfleet-* \
        target/release/keyfleet target/release/libkeyfleet.*

# The real build: only the crate itself compiles here.
COPY src ./src
RUN cargo build --release --locked \
    && install -D -m 0755 target/release/keyfleet /out/keyfleet

# distroless/cc: glibc and libgcc for the Rust binary, CA certificates for TLS to AWS (the
# API server's CA comes from the ServiceAccount token mount). ":nonroot" runs as 65532.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=builder /out/keyfleet /keyfleet
USER 65532:65532
ENTRYPOINT ["/keyfleet"]
CMD ["run"]
