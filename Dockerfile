# syntax=docker/dockerfile:1
# webb's container images, built from this workspace. One target per image:
#
#   docker build --target agent -t ghcr.io/webb-observability/webb-agent:0.1.0 .
#   docker build --target relay -t ghcr.io/webb-observability/webb-relay:0.1.0 .
#   docker build --target cli   -t ghcr.io/webb-observability/webb:0.1.0 .
#
# deploy/agent.yaml and deploy/relay.yaml run the first two; the CLI image
# runs `webb` (e.g. `docker run --network host ghcr.io/webb-observability/webb:0.1.0 observe`).

ARG RUST_VERSION=1.95
ARG DEBIAN=bookworm

# The toolchain: stable for the host crates, nightly's rust-src and a
# bpf-linker built against nightly's own libLLVM for the kernel programs,
# installed by the same script a development machine uses.
FROM rust:${RUST_VERSION}-${DEBIAN} AS toolchain
WORKDIR /src
ENV WEBB_CACHE=/opt/webb
COPY scripts/setup.sh scripts/setup.sh
RUN WEBB_SETUP_PACKAGES=0 bash scripts/setup.sh > /opt/webb-path

# Static binaries (glibc's static-pie; its DNS and /etc/hosts lookups are
# built in): they run on any Linux, in these images or copied to a node.
# The flag is for the host target only, not the kernel programs' bpf target.
FROM toolchain AS build
COPY . .
ENV CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS="-C target-feature=+crt-static"
RUN PATH="$(cat /opt/webb-path):$PATH" \
    cargo build --release --locked --target x86_64-unknown-linux-gnu \
      -p webb-agent -p webb-relay -p webb-tui --bins \
 && mkdir -p /out \
 && cd target/x86_64-unknown-linux-gnu/release \
 && cp webb-agent webb-relay webb /out/

# What every image runs on: a small Debian with CA certificates for
# `tls://` servers and peers (the binaries need nothing else from it).
FROM debian:${DEBIAN}-slim AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/*

# The node agent. It runs as root with only CAP_BPF, CAP_NET_ADMIN and
# CAP_PERFMON (deploy/agent.yaml drops the rest).
FROM runtime AS agent
COPY --from=build /out/webb-agent /usr/local/bin/webb-agent
EXPOSE 4244 9965
ENTRYPOINT ["/usr/local/bin/webb-agent"]

# The relay needs no privilege at all.
FROM runtime AS relay
COPY --from=build /out/webb-relay /usr/local/bin/webb-relay
USER 65532:65532
EXPOSE 4245 9966
ENTRYPOINT ["/usr/local/bin/webb-relay"]

# The command line and the dashboard.
FROM runtime AS cli
COPY --from=build /out/webb /usr/local/bin/webb
USER 65532:65532
ENV TERM=xterm-256color
ENTRYPOINT ["/usr/local/bin/webb"]
