#!/usr/bin/env bash
# The kernel programs' cost per packet without traffic noise: a lab and a
# webb-agent attached to it, then each program run on the same frame (a
# 64-byte UDP datagram from one lab pod to another, an established flow
# after the first run) with BPF_PROG_TEST_RUN, REPEAT runs at a time, 11
# times; prints the minimum and median ns per run of each, and the same
# for empty programs (the harness's own cost, to subtract).
#
# Usage: sudo bash scripts/bench/prog_run.sh [REPEAT (default 500000)]
set -euo pipefail
cd "$(dirname "$0")/../.."
repeat="${1:-500000}"
# shellcheck source=scripts/bench/lab.sh
source scripts/bench/lab.sh
cleanup() {
  [ -n "${agent_pid:-}" ] && kill -TERM "$agent_pid" 2>/dev/null && wait "$agent_pid" 2>/dev/null || true
  [ -n "${lab_pid:-}" ] && kill -TERM "$lab_pid" 2>/dev/null && wait "$lab_pid" 2>/dev/null || true
  [ -n "${state:-}" ] && rm -rf "$state"
}
trap cleanup EXIT INT TERM
bench_lab webb-progrun
cg=()
[ -n "${LAB_CGROUP:-}" ] && cg=(--cgroup "$LAB_CGROUP")
"$bin/webb-agent" --listen 127.0.0.1:0 --node-name bench --endpoints "$state/endpoints.yaml" "${cg[@]}" --kubernetes off 2>"$state/agent.log" &
agent_pid=$!
for _ in $(seq 100); do grep -q "datapath attached" "$state/agent.log" && break; sleep 0.1; done

# frontend -> cart, UDP 40000 -> 5201, 18 bytes of payload: 60 bytes.
python3 - "$FRONTEND_IP" "$CART_IP" "$state/frame" <<'PY'
import socket, struct, sys
src, dst, out = socket.inet_aton(sys.argv[1]), socket.inet_aton(sys.argv[2]), sys.argv[3]
payload = b"x" * 18
udp = struct.pack("!HHHH", 40000, 5201, 8 + len(payload), 0) + payload
ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0x4000, 64, 17, 0, src, dst)
s = sum(struct.unpack("!10H", ip))
s = (s & 0xFFFF) + (s >> 16)
ip = ip[:10] + struct.pack("!H", ~s & 0xFFFF) + ip[12:]
open(out, "wb").write(bytes([2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1]) + b"\x08\x00" + ip + udp)
PY

summary() { tr ' ' '\n' | grep . | sort -n | awk '{a[NR]=$1} END {printf "min %d ns, median %d ns per run\n", a[1], a[int((NR+1)/2)]}'; }
for name in webb_tc_ingress webb_tc_egress webb_cgroup_ingress webb_cgroup_egress; do
  id=$(bpftool -j prog show | python3 -c "import json,sys; print(max(p['id'] for p in json.load(sys.stdin) if p.get('name')=='$name'))")
  runs=""
  for _ in $(seq 11); do
    runs="$runs $(bpftool prog run id "$id" data_in "$state/frame" repeat "$repeat" | grep -o 'average): [0-9]*' | grep -o '[0-9]*$')"
  done
  printf '%-20s %s\n' "$name" "$(echo "$runs" | summary)"
done
for _ in $(seq 5); do python3 scripts/bench/empty_programs.py run "$state/frame" "$repeat"; done \
  | awk '{k=$2; sub(":","",k); v[k]=v[k] " " $3} END {for (k in v) print k, v[k]}' \
  | while read -r k rest; do printf '%-20s %s\n' "empty $k" "$(echo "$rest" | summary)"; done
