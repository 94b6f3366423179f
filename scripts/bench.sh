#!/usr/bin/env bash
# Benchmarks whose figures go into issue notes (not timed assertions: these machines are noisy,
# so compare figures measured in one run).
#   scripts/bench.sh            all benchmarks
#   scripts/bench.sh plan       cold start of `upstep plan` on the embedded map (target < 10 ms)
set -euo pipefail
cd "$(dirname "$0")/.."
which=${1:-all}

cargo build --release --quiet
bin=target/release/upstep

# Average wall time of N runs of a command, in milliseconds (3 decimals).
mean_ms() {
  local n=$1; shift
  local start end
  start=$(date +%s%N)
  for ((i = 0; i < n; i++)); do "$@" >/dev/null; done
  end=$(date +%s%N)
  awk -v s="$start" -v e="$end" -v n="$n" 'BEGIN { printf "%.3f", (e - s) / n / 1e6 }'
}

if [[ $which == all || $which == plan ]]; then
  runs=300
  "$bin" plan --from v0.17.0 --to v2.0.0 >/dev/null # warm the page cache once
  plan_ms=$(mean_ms "$runs" "$bin" plan --from v0.17.0 --to v2.0.0)
  json_ms=$(mean_ms "$runs" "$bin" plan --from v0.4.0 --json)
  true_ms=$(mean_ms "$runs" /bin/true)
  echo "plan cold start (text, v0.17.0 -> v2.0.0): ${plan_ms} ms per run (mean of $runs)"
  echo "plan cold start (json, v0.4.0 -> newest):  ${json_ms} ms per run (mean of $runs)"
  echo "process spawn baseline (/bin/true):        ${true_ms} ms per run"
fi
