#!/usr/bin/env bash
# The webb demo: installs what is missing, builds webb, brings up a two-node
# lab cluster in network namespaces (shop/frontend, shop/cart on demo-node-1;
# shop/payments, shop/db, kube-system/coredns on demo-node-2; a world
# address), runs real HTTP, DNS, denied, closed-port and ICMP traffic, starts
# one webb-agent per node and a webb-relay on 127.0.0.1:4245, and opens
# `webb ui` on the relay. Quitting the dashboard tears everything down.
#
# Usage: sudo bash scripts/demo.sh [--no-ui] [--keep] [--down] [--seconds N]
#   --no-ui      no dashboard: print commands to try, wait for Ctrl-C
#   --keep       leave the lab running on exit (try `webb observe` on it)
#   --down       tear down a lab left running by --keep
#   --seconds N  with --no-ui: tear down after N seconds
#   --listen A   where the relay listens (default 127.0.0.1:4245)
set -euo pipefail
cd "$(dirname "$0")/.."

case " $* " in
  *" -h "*|*" --help "*) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
esac

if [ "$(id -u)" -ne 0 ]; then
  echo "demo: needs root: it creates network namespaces and loads eBPF programs. Run: sudo bash scripts/demo.sh" >&2
  exit 1
fi

bin_dir="$(bash scripts/setup.sh)"
export PATH="$bin_dir:$PATH"
echo "demo: building webb (the first build takes a few minutes)" >&2
cargo build --workspace --bins --quiet
exec target/debug/webb-demo "$@"
