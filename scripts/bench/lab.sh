# Sourced by the datapath benches, from the repository's root: what every
# one of them does before measuring.

# Needs root; installs what is missing, builds the release binaries, starts
# a lab (webb-lab: four pods on one bridge, each in its cgroup) in a new
# state directory under /tmp named after $1, and sources its lab.env (pod
# names, namespaces, addresses, LAB_CGROUP, LAB_INTERFACES). Sets bin, state
# and lab_pid, which the caller's cleanup stops and removes.
bench_lab() {
  [ "$(id -u)" -eq 0 ] || { echo "needs root" >&2; exit 1; }
  local bin_dir
  bin_dir="$(bash scripts/setup.sh)"; export PATH="$bin_dir:$PATH"
  cargo build --release --bins --quiet
  bin=target/release
  state="$(mktemp -d "/tmp/$1.XXXXXX")"
  "$bin/webb-lab" up "$state" >/dev/null &
  lab_pid=$!
  for _ in $(seq 100); do [ -f "$state/lab.env" ] && break; sleep 0.1; done
  # shellcheck disable=SC1091
  source "$state/lab.env"
}
