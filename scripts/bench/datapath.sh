#!/usr/bin/env bash
# Datapath overhead: iperf3 between two lab pods with webb-agent detached and
# attached, in interleaved pairs within one run (ABBA order), TCP throughput
# and UDP 64-byte packets/s; then ns per run of each program from bpf_stats
# (enabled only for that last step, and restored). The pods' processes run
# in their cgroups, under the agent's --cgroup, so every packet meets the TC
# programs twice (leaving one pod, entering the other) and the cgroup
# programs twice (its two sockets), as on a node.
#
# Usage: sudo bash scripts/bench/datapath.sh [PAIRS (default 5)] [SECONDS per run (default 5)] [http|kube|floor]
#
# With `floor`, no agent: empty programs (scripts/bench/empty_programs.py)
# on TC of the two pods' veths, and on those and the lab's cgroup, against
# nothing attached, UDP only: what merely having a program at these hooks
# costs, the floor under any datapath's ratio.
#
# With `http`, an HTTP server (tests/data/http_server.py) runs in the cart pod
# and 4 keep-alive clients (scripts/bench/http_load.py) in the frontend pod
# call it at HTTP_RATE requests/s in all (default 1000; 0 = flat out) during
# every TCP run, so the attached agent copies and parses every request and
# response head (L7 capture on, its default); the UDP runs are skipped and
# the HTTP request rate is compared too.
#
# With `kube`, both sides are attached: the agent naming the lab from its
# endpoints file alone, against the same agent with the Kubernetes source on
# as well (webb-kube-double: KUBE_PODS pods on KUBE_NODES nodes, default
# 5,000 on 100, churning KUBE_CHURN pod changes/s, default 100, during every
# run), so the ratio is what the Kubernetes source costs the datapath.
# Traffic stays inside the lab's namespaces; every run ends by itself.
set -euo pipefail
cd "$(dirname "$0")/../.."
pairs="${1:-5}"
secs="${2:-5}"
mode_http="${3:-}"
# shellcheck source=scripts/bench/lab.sh
source scripts/bench/lab.sh
cleanup() {
  [ -n "${agent_pid:-}" ] && kill -TERM "$agent_pid" 2>/dev/null && wait "$agent_pid" 2>/dev/null || true
  [ -n "${empty_pid:-}" ] && kill -TERM "$empty_pid" 2>/dev/null && wait "$empty_pid" 2>/dev/null || true
  [ -n "${double_pid:-}" ] && kill -TERM "$double_pid" 2>/dev/null && wait "$double_pid" 2>/dev/null || true
  [ -n "${CART_NETNS:-}" ] && ip netns pids "$CART_NETNS" 2>/dev/null | xargs -r kill 2>/dev/null || true
  [ -n "${lab_pid:-}" ] && kill -TERM "$lab_pid" 2>/dev/null && wait "$lab_pid" 2>/dev/null || true
  [ -n "${stats_before:-}" ] && sysctl -qw kernel.bpf_stats_enabled="$stats_before" || true
  [ -n "${state:-}" ] && rm -rf "$state"
}
trap cleanup EXIT INT TERM
bench_lab webb-bench
# Runs a command in a pod: its network namespace and, as a pod's processes
# are, its cgroup (so the cgroup programs see its sockets, as on a node).
in_pod() {
  local pod="$1"; shift
  local ns_var="${pod^^}_NETNS"
  if [ -n "${LAB_CGROUP:-}" ]; then
    sh -c 'echo $$ > "$0/cgroup.procs" && exec "$@"' "$LAB_CGROUP/$pod" ip netns exec "${!ns_var}" "$@"
  else
    ip netns exec "${!ns_var}" "$@"
  fi
}
in_pod cart iperf3 -s -D >/dev/null
if [ "$mode_http" = http ]; then
  in_pod cart python3 tests/data/http_server.py 8080 --delay-ms 0 &
fi
sleep 0.5

start_agent() {
  local cg=() kube=(--kubernetes off)
  [ -n "${LAB_CGROUP:-}" ] && cg=(--cgroup "$LAB_CGROUP")
  [ "${1:-}" = kube ] && kube=(--kubeconfig "$state/kubeconfig")
  "$bin/webb-agent" --listen 127.0.0.1:0 --node-name bench --endpoints "$state/endpoints.yaml" "${cg[@]}" "${kube[@]}" 2>"$state/agent.log" &
  agent_pid=$!
  for _ in $(seq 100); do grep -q "datapath attached" "$state/agent.log" && return 0; sleep 0.1; done
  cat "$state/agent.log" >&2; exit 1
}
stop_agent() { kill -TERM "$agent_pid"; wait "$agent_pid" 2>/dev/null || true; agent_pid=; }

tcp_run() {
  in_pod frontend iperf3 -c "$CART_IP" -t "$secs" -J \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"])'
}
# TCP throughput while HTTP load runs beside it; sets $http_count.
tcp_http_run() {
  in_pod frontend python3 scripts/bench/http_load.py "$CART_IP" 8080 "$secs" "${HTTP_RATE:-1000}" > "$state/http.count" &
  local load=$!
  tcp_run
  wait "$load"
}
udp_run() {
  in_pod frontend iperf3 -c "$CART_IP" -u -l 64 -b 0 -t "$secs" -J \
    | python3 -c 'import json,sys; e=json.load(sys.stdin)["end"]; s=e.get("sum_received", e["sum"]); print((s["packets"]-s["lost_packets"])/s["seconds"])'
}

if [ "$mode_http" = floor ]; then
  read -r -a ifs <<< "$LAB_INTERFACES"
  frontend_if="${ifs[0]}" cart_if="${ifs[1]}"
  declare -a u_off u_tc u_all
  for i in $(seq "$pairs"); do
    for mode in $( [ $((i % 2)) -eq 0 ] && echo "all tc off" || echo "off tc all"); do
      cgroup_arg=-
      [ "$mode" = all ] && cgroup_arg="${LAB_CGROUP:--}"
      if [ "$mode" != off ]; then
        python3 scripts/bench/empty_programs.py attach "$frontend_if,$cart_if" "$cgroup_arg" $((secs + 3)) > "$state/empty.out" &
        empty_pid=$!
        for _ in $(seq 50); do grep -q attached "$state/empty.out" && break; sleep 0.1; done
      fi
      u=$(udp_run)
      [ "$mode" != off ] && { kill "$empty_pid" 2>/dev/null; wait "$empty_pid" 2>/dev/null || true; }
      case $mode in off) u_off+=("$u");; tc) u_tc+=("$u");; all) u_all+=("$u");; esac
      printf 'pair %d %-4s udp %8.0f pkt/s\n' "$i" "$mode" "$u"
    done
  done
  python3 - "${u_off[*]}" "${u_tc[*]}" "${u_all[*]}" <<'PY'
import statistics as st, sys
o, t, a = ([float(x) for x in s.split()] for s in sys.argv[1:4])
print(f"UDP 64-byte, empty programs: nothing attached median {st.median(o):.0f} pkt/s; on TC {st.median(t):.0f} (ratio {st.median(t)/st.median(o):.3f}); on TC and the pods' cgroups {st.median(a):.0f} (ratio {st.median(a)/st.median(o):.3f})")
PY
  exit 0
fi

if [ "$mode_http" = kube ]; then
  "$bin/webb-kube-double" --kubeconfig "$state/kubeconfig" --pods "${KUBE_PODS:-5000}" \
    --nodes "${KUBE_NODES:-100}" --churn "${KUBE_CHURN:-100}" > "$state/double.out" &
  double_pid=$!
  for _ in $(seq 300); do grep -q ready "$state/double.out" 2>/dev/null && break; sleep 0.1; done
  declare -a tcp_file tcp_kube udp_file udp_kube
  for i in $(seq "$pairs"); do
    for mode in $( [ $((i % 2)) -eq 0 ] && echo "kube file" || echo "file kube"); do
      start_agent "$mode"
      if [ "$mode" = kube ]; then
        addr=$(sed 's/\x1b\[[0-9;]*m//g' "$state/agent.log" | grep -o 'listen=[0-9.:]*' | head -1 | cut -d= -f2)
        # Proof the source was on and synced: the agent's own status.
        for _ in $(seq 100); do "$bin/webb" status --server "$addr" 2>/dev/null | grep -q 'kubernetes: synced' && break; sleep 0.1; done
        "$bin/webb" status --server "$addr" | grep -E 'kubernetes|Endpoints' >&2 || true
      fi
      t=$(tcp_run); u=$(udp_run)
      stop_agent
      if [ "$mode" = kube ]; then tcp_kube+=("$t"); udp_kube+=("$u"); else tcp_file+=("$t"); udp_file+=("$u"); fi
      printf 'pair %d %-5s tcp %6.2f Gbit/s  udp %8.0f pkt/s\n' "$i" "$mode" "$(python3 -c "print($t/1e9)")" "$u"
    done
  done
  python3 - "${tcp_file[*]}" "${tcp_kube[*]}" "${udp_file[*]}" "${udp_kube[*]}" <<'PY'
import statistics as st, sys
tf, tk, uf, uk = ([float(x) for x in a.split()] for a in sys.argv[1:5])
print(f"TCP throughput, attached: file only median {st.median(tf)/1e9:.2f} Gbit/s, with the Kubernetes source {st.median(tk)/1e9:.2f} Gbit/s, ratio {st.median(tk)/st.median(tf):.3f}")
print(f"UDP 64-byte, attached:    file only median {st.median(uf):.0f} pkt/s, with the Kubernetes source {st.median(uk):.0f} pkt/s, ratio {st.median(uk)/st.median(uf):.3f}")
PY
  exit 0
fi

if [ "$mode_http" = http ]; then
  declare -a tcp_off tcp_on http_off http_on
  for i in $(seq "$pairs"); do
    for mode in $( [ $((i % 2)) -eq 0 ] && echo "on off" || echo "off on"); do
      [ "$mode" = on ] && start_agent
      t=$(tcp_http_run); h=$(cat "$state/http.count")
      if [ "$mode" = on ]; then
        addr=$(sed 's/\x1b\[[0-9;]*m//g' "$state/agent.log" | grep -o 'listen=[0-9.:]*' | head -1 | cut -d= -f2)
        # Proof that L7 was on: the agent's own count of L7 flows.
        "$bin/webb" status --server "$addr" | grep '^L7' || echo "no L7 flows reported" >&2
        stop_agent
        tcp_on+=("$t"); http_on+=("$h")
      else
        tcp_off+=("$t"); http_off+=("$h")
      fi
      printf 'pair %d %-8s tcp %6.2f Gbit/s  http %6.0f req/s\n' "$i" "$mode" "$(python3 -c "print($t/1e9)")" "$(python3 -c "print($h/$secs)")"
    done
  done
  python3 - "${tcp_off[*]}" "${tcp_on[*]}" "${http_off[*]}" "${http_on[*]}" "$secs" <<'PY'
import statistics as st, sys
to, tn, ho, hn = ([float(x) for x in a.split()] for a in sys.argv[1:5])
secs = float(sys.argv[5])
print(f"TCP throughput with HTTP load: detached median {st.median(to)/1e9:.2f} Gbit/s, attached (L7 on) {st.median(tn)/1e9:.2f} Gbit/s, ratio {st.median(tn)/st.median(to):.3f}")
print(f"HTTP requests beside it:       detached median {st.median(ho)/secs:.0f} req/s, attached {st.median(hn)/secs:.0f} req/s, ratio {st.median(hn)/st.median(ho):.3f}")
PY
  exit 0
fi

declare -a tcp_off tcp_on udp_off udp_on
for i in $(seq "$pairs"); do
  # ABBA: even pairs measure attached first, so drift hits both sides alike.
  for mode in $( [ $((i % 2)) -eq 0 ] && echo "on off" || echo "off on"); do
    [ "$mode" = on ] && start_agent
    t=$(tcp_run); u=$(udp_run)
    [ "$mode" = on ] && stop_agent
    if [ "$mode" = on ]; then tcp_on+=("$t"); udp_on+=("$u"); else tcp_off+=("$t"); udp_off+=("$u"); fi
    printf 'pair %d %-8s tcp %6.2f Gbit/s  udp %8.0f pkt/s\n' "$i" "$mode" "$(python3 -c "print($t/1e9)")" "$u"
  done
done

python3 - "${tcp_off[*]}" "${tcp_on[*]}" "${udp_off[*]}" "${udp_on[*]}" <<'PY'
import statistics as st, sys
to, tn, uo, un = ([float(x) for x in a.split()] for a in sys.argv[1:5])
print(f"TCP throughput: detached median {st.median(to)/1e9:.2f} Gbit/s, attached {st.median(tn)/1e9:.2f} Gbit/s, ratio {st.median(tn)/st.median(to):.3f}")
print(f"UDP 64-byte:    detached median {st.median(uo):.0f} pkt/s, attached {st.median(un):.0f} pkt/s, ratio {st.median(un)/st.median(uo):.3f}")
PY

# ns per packet from the kernel's own accounting.
stats_before="$(sysctl -n kernel.bpf_stats_enabled)"
sysctl -qw kernel.bpf_stats_enabled=1
start_agent
tcp_run >/dev/null; udp_run >/dev/null
bpftool -j prog show | python3 -c '
import json, sys
for p in json.load(sys.stdin):
    n = p.get("name", "")
    if n.startswith("webb_") and p.get("run_cnt"):
        runs, ns = p["run_cnt"], p["run_time_ns"]
        print("bpf_stats %s: %d runs, %.0f ns per run" % (n, runs, ns / runs))
'
stop_agent
sysctl -qw kernel.bpf_stats_enabled="$stats_before"; stats_before=
