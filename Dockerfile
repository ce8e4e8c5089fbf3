# syntax=docker/dockerfile:1.7
#
# Images for the rustformations Envoy dynamic module (librust_module.so).
#
#   docker build -t rustformations-envoy:0.1.0 .                      # kgateway proxy image (default)
#   docker build --target standalone -t rustformations-standalone .    # plain Envoy + envoy.yaml
#
# Versions are pinned here only; `make image` passes the same values from mk/kind.mk
# and tests/ship checks they agree with rust-toolchain.toml and the Makefile.
#   RUST_VERSION      must equal rust-toolchain.toml.
#   KGATEWAY_VERSION  the envoy-wrapper release you run, extended by the kgateway image
#                     (v2.2: Envoy 1.36, v2.3: 1.37.2+, v2.4: 1.38); any of them takes the same module.
#   ENVOY_VERSION     base of the standalone image (the Makefile's ENVOY_VERSION).
# The module is the same file for every Envoy from 1.36.3 to 1.40: it detects the Envoy it runs in.
# For a patch release whose ABI string differs, set ENVOY_ABI_VERSION in the container's
# environment (`tools/envoy-abi <envoy>` prints the string a binary expects); no rebuild.
ARG RUST_VERSION=1.95.0
ARG KGATEWAY_VERSION=v2.3.0
ARG ENVOY_VERSION=1.37.0

# ---------------------------------------------------------------------------
# builder: compiles the module. Bookworm's glibc is not newer than the one in
# the Envoy images, so the .so loads there.
FROM rust:${RUST_VERSION}-bookworm AS builder
ARG RUST_VERSION
# The image's toolchain is the pinned one; naming it keeps rustup from
# downloading the extra components (clippy, rustfmt) rust-toolchain.toml lists.
ENV RUSTUP_TOOLCHAIN=${RUST_VERSION} \
    CARGO_TARGET_DIR=/cache/target
WORKDIR /src
COPY . .
# Cache mounts keep the registry and compiled dependencies across builds; the
# artifact is copied out of the cache to the usual target/release path.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/cache/target,sharing=locked \
    cargo build --release -p rust-module \
    && install -D -m 0755 /cache/target/release/librust_module.so /src/target/release/librust_module.so

# ---------------------------------------------------------------------------
# standalone: the official Envoy image running the lab's envoy.yaml (port 10000).
FROM envoyproxy/envoy:v${ENVOY_VERSION} AS standalone
ENV ENVOY_DYNAMIC_MODULES_SEARCH_PATH=/usr/local/lib
COPY --from=builder --chmod=0755 /src/target/release/librust_module.so /usr/local/lib/librust_module.so
COPY --chmod=0644 envoy.yaml /etc/envoy/envoy.yaml
# uid/gid 101 is the image's `envoy` user; numeric so runAsNonRoot can check it.
USER 101:101
EXPOSE 10000
# Run Envoy directly: the image's entrypoint script only exists to drop root.
ENTRYPOINT ["/usr/local/bin/envoy"]
CMD ["-c", "/etc/envoy/envoy.yaml", "--log-level", "info"]

# ---------------------------------------------------------------------------
# kgateway (default, so last): kgateway's own proxy image with only the module
# swapped. Its entrypoint (envoyinit), user 10101 and tools stay as they are:
# kgateway starts the container with args but no `-c`, which only envoyinit handles.
FROM cr.kgateway.dev/kgateway-dev/envoy-wrapper:${KGATEWAY_VERSION} AS kgateway
# root-owned, world-readable and executable, so uid 10101 can dlopen it.
COPY --from=builder --chmod=0755 /src/target/release/librust_module.so /usr/local/lib/librust_module.so
