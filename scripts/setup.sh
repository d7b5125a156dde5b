#!/usr/bin/env bash
# Installs everything webb needs to build and test on a fresh machine of this kind.
# Idempotent: each step checks whether its result is already there and skips it.
# The bpf-linker build is cached outside the work tree (WEBB_CACHE, default
# ~/.cache/webb) so that CI on the same machine does not rebuild it every run.
set -euo pipefail

CACHE="${WEBB_CACHE:-$HOME/.cache/webb}"
mkdir -p "$CACHE"
say() { printf 'setup: %s\n' "$*" >&2; }

# Debian packages the end-to-end tests and the demo use (WEBB_SETUP_PACKAGES=0
# skips them: an image build needs only the toolchain).
need_pkgs=()
[ "${WEBB_SETUP_PACKAGES:-1}" = 0 ] || for pair in ip:iproute2 tc:iproute2 ping:iputils-ping iperf3:iperf3 dnsmasq:dnsmasq socat:socat \
            curl:curl bpftool:bpftool tmux:tmux python3:python3 jq:jq bc:bc dig:bind9-dnsutils prometheus:prometheus nft:nftables; do
  cmd="${pair%%:*}" pkg="${pair#*:}"
  command -v "$cmd" >/dev/null 2>&1 || [ -x "/usr/sbin/$cmd" ] || need_pkgs+=("$pkg")
done
if [ "${#need_pkgs[@]}" -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    say "missing packages ${need_pkgs[*]}; run this script as root to install them"
    exit 1
  fi
  say "installing Debian packages: ${need_pkgs[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  mapfile -t need_pkgs < <(printf '%s\n' "${need_pkgs[@]}" | sort -u)
  apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
fi

# The nightly toolchain with rust-src builds the eBPF crate (-Z build-std=core);
# its clippy lints that crate for the BPF target.
if ! rustup toolchain list | grep -q '^nightly'; then
  say "installing the nightly toolchain"
  rustup toolchain install nightly --profile minimal --component rust-src --component clippy
fi
for component in rust-src clippy; do
  if ! rustup component list --toolchain nightly --installed | grep -q "^$component"; then
    say "adding $component to nightly"
    rustup component add "$component" --toolchain nightly
  fi
done

# bpf-linker, linked against the nightly toolchain's own libLLVM (no system LLVM
# of the right major version exists in Debian). The LLVM major is read from the
# library's file name, never hard-coded.
SYSROOT="$(rustc +nightly --print sysroot)"
LLVM_SO="$(find "$SYSROOT/lib" -maxdepth 1 -name 'libLLVM*.so*' -type f | head -n1)"
if [ -z "$LLVM_SO" ]; then
  say "no libLLVM in $SYSROOT/lib; cannot build bpf-linker"
  exit 1
fi
LLVM_MAJOR="$(basename "$LLVM_SO" | grep -oE '[0-9]+' | head -n1)"
TOOLS="$CACHE/tools-llvm$LLVM_MAJOR"
if [ ! -x "$TOOLS/bin/bpf-linker" ]; then
  say "building bpf-linker 0.13.0 against $(basename "$LLVM_SO") (takes a few minutes, once)"
  LLVM_DIR="$CACHE/llvm$LLVM_MAJOR"
  mkdir -p "$LLVM_DIR/lib"
  # A copy, not a symlink, so a toolchain update cannot break the linker.
  cp -f "$LLVM_SO" "$LLVM_DIR/lib/$(basename "$LLVM_SO")"
  cp -f "$LLVM_SO" "$LLVM_DIR/lib/libLLVM.so"
  LLVM_PREFIX="$LLVM_DIR" cargo install bpf-linker --version 0.13.0 --locked \
    --no-default-features --features "llvm-$LLVM_MAJOR" --root "$TOOLS"
fi
mkdir -p "$CACHE/bin"
ln -sf "$TOOLS/bin/bpf-linker" "$CACHE/bin/bpf-linker"

# Print the PATH addition so callers can `eval "$(scripts/setup.sh)"` style use it.
echo "$CACHE/bin"
