#!/usr/bin/env bash
# The webb demo: builds a lab node (pods as network namespaces), starts
# webb-agent on it with a NetworkPolicy, runs real traffic between the pods
# (allowed HTTP-port TCP, a denied connection, UDP to a closed port, DNS-port
# UDP, ping), and streams the flows with `webb observe --follow`.
# Ctrl-C (or --seconds N) stops it and tears everything down.
#
# Usage: sudo bash scripts/demo.sh [--seconds N] [-o json]
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=0
output=compact
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) seconds="$2"; shift 2 ;;
    -o|--output) output="$2"; shift 2 ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    *) echo "demo: unknown option $1 (try --help)" >&2; exit 2 ;;
  esac
done

if [ "$(id -u)" -ne 0 ]; then
  echo "demo: needs root (it creates network namespaces and loads eBPF programs); run it with sudo" >&2
  exit 1
fi

bin_dir="$(bash scripts/setup.sh)"
export PATH="$bin_dir:$PATH"
echo "demo: building webb (first build takes a few minutes)" >&2
cargo build --workspace --bins --quiet
bin=target/debug

state="$(mktemp -d /tmp/webb-demo.XXXXXX)"
pids=()
cleanup() {
  trap - EXIT INT TERM
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  # Whatever a traffic loop was running when it was stopped.
  for ns in "${FRONTEND_NETNS:-}" "${CART_NETNS:-}" "${DB_NETNS:-}" "${COREDNS_NETNS:-}"; do
    [ -n "$ns" ] && ip netns pids "$ns" 2>/dev/null | xargs -r kill 2>/dev/null || true
  done
  [ -n "${agent_pid:-}" ] && kill -TERM "$agent_pid" 2>/dev/null && wait "$agent_pid" 2>/dev/null || true
  [ -n "${lab_pid:-}" ] && kill -TERM "$lab_pid" 2>/dev/null && wait "$lab_pid" 2>/dev/null || true
  rm -rf "$state"
  echo "demo: torn down" >&2
}
trap cleanup EXIT INT TERM

"$bin/webb-lab" up "$state" >&2 &
lab_pid=$!
for _ in $(seq 100); do [ -f "$state/lab.env" ] && break; sleep 0.1; done
[ -f "$state/lab.env" ] || { echo "demo: the lab did not come up" >&2; exit 1; }
# shellcheck disable=SC1091
source "$state/lab.env"

port=4244
cgroup_args=()
[ -n "${LAB_CGROUP:-}" ] && cgroup_args=(--cgroup "$LAB_CGROUP")
"$bin/webb-agent" --listen "127.0.0.1:$port" --node-name lab-node-1 \
  --endpoints "$state/endpoints.yaml" --policy "$state/policy.yaml" "${cgroup_args[@]}" \
  2> "$state/agent.log" &
agent_pid=$!
for _ in $(seq 100); do "$bin/webb" status --server "127.0.0.1:$port" >/dev/null 2>&1 && break; sleep 0.2; done
"$bin/webb" status --server "127.0.0.1:$port" >&2 || { cat "$state/agent.log" >&2; exit 1; }

in_pod() { local ns="$1"; shift; ip netns exec "$ns" "$@"; }
# Servers.
# Started directly (not through a function) so that $! is the server itself.
ip netns exec "$CART_NETNS" socat -u TCP-LISTEN:8080,reuseaddr,fork OPEN:/dev/null & pids+=($!)
ip netns exec "$DB_NETNS" socat -u TCP-LISTEN:5432,reuseaddr,fork OPEN:/dev/null & pids+=($!)
ip netns exec "$COREDNS_NETNS" socat -u UDP-RECVFROM:53,fork OPEN:/dev/null & pids+=($!)
sleep 0.3
# Clients: each loop is bounded by the demo's lifetime (killed on exit).
( while :; do in_pod "$FRONTEND_NETNS" socat -u OPEN:/dev/null "TCP:$CART_IP:8080,connect-timeout=1" 2>/dev/null; sleep 1; done ) & pids+=($!)
( while :; do in_pod "$CART_NETNS" socat -u OPEN:/dev/null "TCP:$DB_IP:5432,connect-timeout=1" 2>/dev/null; sleep 2; done ) & pids+=($!)
( while :; do in_pod "$FRONTEND_NETNS" socat -u OPEN:/dev/null "TCP:$DB_IP:5432,connect-timeout=1" 2>/dev/null; sleep 3; done ) & pids+=($!)
( while :; do echo q | in_pod "$FRONTEND_NETNS" socat -u - "UDP:$COREDNS_IP:53" 2>/dev/null; sleep 2; done ) & pids+=($!)
( while :; do echo x | in_pod "$FRONTEND_NETNS" socat -u - "UDP:$CART_IP:9" 2>/dev/null; sleep 4; done ) & pids+=($!)
( while :; do in_pod "$CART_NETNS" ping -c 1 -W 1 "$FRONTEND_IP" >/dev/null 2>&1; sleep 2; done ) & pids+=($!)

cat >&2 <<MSG

demo: lab node up with pods shop/frontend, shop/cart, shop/db, kube-system/coredns.
      NetworkPolicy db-allow-cart lets only cart reach db: frontend -> db is DROPPED.
      In another terminal, try:
        $bin/webb observe --server 127.0.0.1:$port --verdict DROPPED
        $bin/webb observe --server 127.0.0.1:$port -o json --last 5
        $bin/webb status --server 127.0.0.1:$port
      Streaming flows now (Ctrl-C to stop and tear down):

MSG
if [ "$seconds" -gt 0 ]; then
  timeout "$seconds" "$bin/webb" observe --server "127.0.0.1:$port" --follow -o "$output" || true
else
  "$bin/webb" observe --server "127.0.0.1:$port" --follow -o "$output" || true
fi
