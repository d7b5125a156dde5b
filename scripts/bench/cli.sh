#!/usr/bin/env bash
# Benchmark of `webb observe --input-file`: a 1,000,000-flow capture (the
# CLI golden fixture's flows, repeated) printed to /dev/null as json and as
# compact; best of 3 runs each.
#
#   bash scripts/bench/cli.sh [FLOWS]
set -euo pipefail
cd "$(dirname "$0")/../.."
flows=${1:-1000000}
cargo build --release -p webb-tui >&2
webb=target/release/webb
capture=$(mktemp --suffix=.jsonl)
trap 'rm -f "$capture"' EXIT
grep '^{"flow"' tui/tests/fixtures/flows.jsonl > "$capture.one"
reps=$(( (flows + $(wc -l < "$capture.one") - 1) / $(wc -l < "$capture.one") ))
for _ in $(seq "$reps"); do cat "$capture.one"; done | head -n "$flows" > "$capture"
rm -f "$capture.one"
echo "capture: $flows flows, $(du -m "$capture" | cut -f1) MiB; $(nproc) CPUs; $(date -u +%F)"
for format in json compact table dict; do
  best=""
  for _ in 1 2 3; do
    start=$(date +%s.%N)
    "$webb" observe --input-file "$capture" -o "$format" --color never > /dev/null
    end=$(date +%s.%N)
    t=$(echo "$end - $start" | bc -l)
    if [ -z "$best" ] || (( $(echo "$t < $best" | bc -l) )); then best=$t; fi
  done
  printf '%-8s %6.2f s  %8.0f flows/s\n' "$format" "$best" "$(echo "$flows / $best" | bc -l)"
done
