#!/usr/bin/env bash
# Peak RSS of upstep's process layer while a child floods its output (target: < 50 MB).
#   scripts/bench-runner.sh [BYTES]     default 1 GB, in 100-byte lines, then 2-byte and 100 KB lines
# Runs examples/output_flood.rs (spawn_child + wait, logging to a temp file) under
# /usr/bin/time -v when available (`apt-get install -y time`); the example also prints VmHWM.
set -euo pipefail
cd "$(dirname "$0")/.."
bytes=${1:-1000000000}

cargo build --release --quiet --example output_flood
bin=target/release/examples/output_flood

run() {
  local what=$1; shift
  echo "== $what"
  if [[ -x /usr/bin/time ]]; then
    /usr/bin/time -v "$bin" "$@" 2>"${TMPDIR:-/tmp}/bench-runner-time.$$" |
      grep -v '^upstep peak RSS' || true
    awk -F': ' '/Maximum resident set size/ { printf "upstep peak RSS (time -v): %.1f MB\n", $2 / 1024 }' \
      "${TMPDIR:-/tmp}/bench-runner-time.$$"
    rm -f "${TMPDIR:-/tmp}/bench-runner-time.$$"
  else
    "$bin" "$@"
  fi
}

run "$bytes bytes in 100-byte lines" "$bytes" 100
# Worst case for per-line overhead: a fifth of the volume, 2-byte lines (100 M lines per 200 MB).
run "$((bytes / 5)) bytes in 2-byte lines" "$((bytes / 5))" 2
# Lines far over the 16 KiB cap.
run "$((bytes / 5)) bytes in 100 KB lines" "$((bytes / 5))" 100000
