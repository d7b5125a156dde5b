#!/usr/bin/env bash
# Event volume for the demo's traffic: how many flows reach the agents'
# rings per packet the datapath sees. Runs the demo headless for SECONDS
# (default 60) with the kernel's bpf_stats on, and near its end reads the
# relay's status (flows seen by both nodes) and the programs' run counts
# (packets at TC, packets at the cgroup programs); then the demo tears down.
#
# Usage: sudo bash scripts/bench/demo_events.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/../.."
secs="${1:-60}"
[ "$(id -u)" -eq 0 ] || { echo "needs root" >&2; exit 1; }
listen=127.0.0.1:14246
stats_before="$(sysctl -n kernel.bpf_stats_enabled)"
log="$(mktemp)"
cleanup() { sysctl -qw kernel.bpf_stats_enabled="$stats_before"; rm -f "$log"; }
trap cleanup EXIT INT TERM
sysctl -qw kernel.bpf_stats_enabled=1
bash scripts/demo.sh --no-ui --seconds "$secs" --listen "$listen" >"$log" 2>&1 &
demo=$!
for _ in $(seq 600); do grep -q "relay" "$log" 2>/dev/null && grep -qi "try\|observe" "$log" && break; sleep 1; done
start=$(date +%s)
sleep $((secs - 8))
elapsed=$(( $(date +%s) - start ))
status="$(target/debug/webb status --server "$listen")"
runs="$(bpftool -j prog show | python3 -c '
import json, sys
tc = cg = 0
for p in json.load(sys.stdin):
    n = p.get("name", "")
    if n.startswith("webb_tc_"): tc += p.get("run_cnt", 0)
    if n.startswith("webb_cgroup_"): cg += p.get("run_cnt", 0)
print(tc, cg)')"
wait "$demo" || true
seen=$(printf '%s\n' "$status" | sed -n 's/^Seen flows: //p' | tr -d ',')
read -r tc cg <<< "$runs"
python3 - "$seen" "$tc" "$cg" "$elapsed" <<'PY'
import sys
seen, tc, cg, secs = (int(x) for x in sys.argv[1:5])
print(f"demo, {secs} s of its traffic on two nodes: {seen} flows reached the rings ({seen/secs:.0f}/s); "
      f"packets at TC {tc} ({tc/secs:.0f}/s), at the cgroup programs {cg}; "
      f"{seen/max(tc,1):.4f} flows per packet at TC")
PY
