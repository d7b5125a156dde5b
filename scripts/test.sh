#!/usr/bin/env bash
# The whole test suite: formatting, lints (host crates and the eBPF crate for
# the BPF target), a build, then every test, including the end-to-end tests
# on real network namespaces and real eBPF (they need root; as another user
# they print why they skip).
set -euo pipefail
cd "$(dirname "$0")/.."

# Install what is missing (idempotent) and put the cached bpf-linker on PATH.
bin_dir="$(bash scripts/setup.sh)"
export PATH="$bin_dir:$PATH"

step() { printf '\n==> %s\n' "$*" >&2; }

# A build that runs out of disk fails deep in the linker (SIGBUS, "Bus
# error"); say so up front instead. A full run needs about 4 GiB here.
avail_kib=$(df -Pk . | awk 'NR == 2 { print $4 }')
if [ -n "$avail_kib" ] && [ "$avail_kib" -lt $((5 * 1024 * 1024)) ]; then
  printf 'warning: only %s MiB free on the disk holding %s; the build and tests need about 4 GiB (cargo clean in other work trees frees space)\n' \
    "$((avail_kib / 1024))" "$PWD" >&2
fi

step "cargo fmt --check"
cargo fmt --all -- --check

step "clippy (host crates)"
AYA_BUILD_SKIP=1 cargo clippy --workspace --all-targets -- -D warnings

step "clippy (eBPF crate, BPF target)"
cargo +nightly clippy -p node-agent-ebpf --bin webb-datapath --target bpfel-unknown-none \
  -Z build-std=core --target-dir target/bpf-clippy -- -D warnings

step "build"
cargo build --workspace --bins

step "cargo install --path tui (as the README says; reuses this build)"
install_root="$(mktemp -d)"
cargo install --path tui --debug --locked --target-dir target --root "$install_root" --quiet
"$install_root/bin/webb" version
rm -rf "$install_root"

step "tests"
cargo test --workspace

step "Hubble 1.19.4's own output: python3 hubble-oracle/check.py target/debug/webb"
# The recorded runs of the real hubble CLI (../shared/hubble-oracle beside
# the checkout, or WEBB_HUBBLE_ORACLE). Every case must pass.
oracle=""
for dir in "${WEBB_HUBBLE_ORACLE:-}" ../shared/hubble-oracle /work/shared/hubble-oracle; do
  if [ -n "$dir" ] && [ -f "$dir/check.py" ]; then oracle="$dir"; break; fi
done
if [ -n "$oracle" ]; then
  oracle_out="$(python3 "$oracle/check.py" target/debug/webb)" || true
  printf '%s\n' "$oracle_out" | tail -n 5 >&2
  printf '%s\n' "$oracle_out" | tail -n 1 | grep -q ' 0 failed$' || {
    python3 "$oracle/check.py" target/debug/webb -v | head -n 60 >&2
    echo "webb observe differs from hubble's recorded output" >&2
    exit 1
  }
else
  echo "warning: the Hubble oracle was not found (set WEBB_HUBBLE_ORACLE); not checked" >&2
fi

step "the README's first command, headless: sudo bash scripts/demo.sh --no-ui --seconds 10"
if [ "$(id -u)" -eq 0 ]; then
  demo_out="$(mktemp)"
  bash scripts/demo.sh --no-ui --seconds 10 --listen 127.0.0.1:14245 >"$demo_out" 2>&1 || { cat "$demo_out" >&2; exit 1; }
  grep -q "torn down" "$demo_out" || { cat "$demo_out" >&2; echo "the demo did not tear down" >&2; exit 1; }
  tail -n 2 "$demo_out" >&2
  rm -f "$demo_out"
else
  echo "skipped: the demo needs root" >&2
fi
