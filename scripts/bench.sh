#!/usr/bin/env bash
# Benchmarks whose figures go into issue notes (not timed assertions: these machines are noisy,
# so compare figures measured in one run).
#   scripts/bench.sh            all benchmarks
#   scripts/bench.sh plan       cold start of `upstep plan` on the embedded map (target < 10 ms)
#   scripts/bench.sh steps      per-step overhead: upstep running 20 trivial node scripts versus a
#                               plain shell loop running them (target ratio <= 1.10)
#   scripts/bench.sh memory     upstep's peak RSS while a script prints 1 GB (target < 50 MB)
#   scripts/bench.sh detect     fingerprint checks on 1,000,000 `messages` and `subscribers`, all
#                               pending and all migrated, versus the server doing the same work
#                               alone (targets: filter checks all-pending < 100 ms, all-migrated
#                               no slower than the server's own collection scan; pipeline checks
#                               no slower than the pipeline alone). DETECT_DOCS overrides the count.
# The steps/memory/detect benchmarks start their own MongoDB-compatible server (installed by
# scripts/test.sh) on a free loopback port and stop it at the end.
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

TOOLS="${UPSTEP_TEST_TOOLS:-$HOME/.cache/upstep-test-tools}"
MONGOD="${UPSTEP_TEST_MONGOD:-$TOOLS/secantus/bin/secantusd-rs}"
work=""
mongo_pid=""
cleanup() {
  [[ -n $mongo_pid ]] && kill "$mongo_pid" 2>/dev/null && wait "$mongo_pid" 2>/dev/null
  [[ -n $work ]] && rm -rf "$work"
  return 0
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# A fixture project: one tag with N plain node scripts that each write one document.
make_project() {
  local n=$1 body=$2
  work=$(mktemp -d)
  mkdir -p "$work/repo/migrations" "$work/state" "$work/cache"
  local node_version
  node_version=$(node --version | sed 's/^v//')
  {
    echo 'schema = 1'
    echo '[project]'
    echo 'name = "bench"'
    echo 'migrations_dir = "migrations"'
    echo '[eras.plain]'
    echo 'cwd = "."'
    echo 'run = ["node", "{script}"]'
    echo 'env = { MONGO_URL = "{mongo_uri}" }'
    echo '[[releases]]'
    echo 'version = "1.0.0"'
    echo 'era = "plain"'
    echo "node = \"$node_version\""
  } >"$work/map.toml"
  for ((i = 1; i <= n; i++)); do
    id=$(printf 's%02d' "$i")
    printf '%s\n' "$body" >"$work/repo/migrations/$id.js"
    {
      echo '[[migrations]]'
      echo "id = \"$id\""
      echo "title = \"$id\""
      echo 'introduced_in = "1.0.0"'
      echo "script = \"migrations/$id.js\""
      echo 'run = "file"'
      echo 'exits = "yes"'
      echo 'idempotent = "yes"'
      echo 'no_fingerprint = "benchmark"'
    } >>"$work/map.toml"
  done
  git -C "$work/repo" init -q -b main
  git -C "$work/repo" add -A
  git -C "$work/repo" -c user.name=bench -c user.email=bench@example.com commit -qm bench
  git -C "$work/repo" tag v1.0.0
}

start_mongo() {
  [[ -x $MONGOD ]] || { echo "no test MongoDB at $MONGOD: run scripts/test.sh once" >&2; exit 1; }
  local port
  port=$(free_port)
  mkdir -p "$work/db"
  "$MONGOD" --host 127.0.0.1 --port "$port" --storage-path "$work/db" >"$work/mongod.log" 2>&1 &
  mongo_pid=$!
  for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
  MONGO_BASE="mongodb://127.0.0.1:$port"
}

upstep_run() { # $1 = database name; on failure, show why instead of dying silently
  UPSTEP_STATE_DIR="$work/state" UPSTEP_CACHE_DIR="$work/cache" "$bin" upgrade --yes --no-backup --keep-worktrees \
    --map "$work/map.toml" --repo "$work/repo" --mongo-uri "$MONGO_BASE/$1" >/dev/null 2>"$work/upstep.err" ||
    { echo "upstep upgrade failed:" >&2; cat "$work/upstep.err" >&2; exit 1; }
}

if [[ $which == all || $which == steps ]]; then
  make_project 20 "const { MongoClient } = require('mongodb'); (async () => { const c = new MongoClient(process.env.MONGO_URL); await c.connect(); await c.db().collection('t').insertOne({ at: new Date() }); await c.close(); })();"
  export NODE_PATH="${UPSTEP_TEST_NODE_MODULES:-$TOOLS/node-fixture/node_modules}"
  start_mongo
  upstep_run warmup # creates and keeps the worktree, so both sides run the same checkout
  wt=$(dirname "$(find "$work/cache/worktrees" -name s01.js | head -1)")/..
  rounds=5
  loop_start=$(date +%s%N)
  for ((r = 0; r < rounds; r++)); do
    for f in "$wt"/migrations/*.js; do MONGO_URL="$MONGO_BASE/loop$r" node "$f"; done
  done
  loop_end=$(date +%s%N)
  up_start=$(date +%s%N)
  for ((r = 0; r < rounds; r++)); do upstep_run "up$r"; done
  up_end=$(date +%s%N)
  awk -v ls="$loop_start" -v le="$loop_end" -v us="$up_start" -v ue="$up_end" -v r="$rounds" 'BEGIN {
    l = (le - ls) / r / 1e9; u = (ue - us) / r / 1e9;
    printf "20 node scripts, shell loop: %.3f s per run (mean of %d)\n", l, r;
    printf "20 node scripts, upstep:     %.3f s per run (journal, lock, preflight, checks included)\n", u;
    printf "per-step overhead: %.1f ms; ratio upstep/loop: %.3f (target <= 1.10)\n", (u - l) * 1000 / 20, u / l }'
  cleanup; work=""; mongo_pid=""
fi

if [[ $which == all || $which == memory ]]; then
  make_project 1 "const line = 'x'.repeat(99) + '\\n'; const chunk = line.repeat(10000); let left = 1000; (function w() { while (left > 0) { left--; if (!process.stdout.write(chunk)) { process.stdout.once('drain', w); return; } } })();"
  start_mongo
  # upstep's own peak (VmHWM), sampled until it exits: /usr/bin/time would report the largest
  # of upstep and the children it reaped, i.e. node's ~40 MB, not upstep's.
  own_peak_kb() { # $1 = database
    UPSTEP_STATE_DIR="$work/state" UPSTEP_CACHE_DIR="$work/cache" "$bin" upgrade --yes --no-backup \
      --map "$work/map.toml" --repo "$work/repo" --mongo-uri "$MONGO_BASE/$1" >/dev/null 2>&1 &
    local pid=$! peak=0 now
    while kill -0 "$pid" 2>/dev/null; do
      now=$(awk '/^VmHWM:/ { print $2 }' "/proc/$pid/status" 2>/dev/null || true)
      [[ -n $now && $now -gt $peak ]] && peak=$now
      sleep 0.05
    done
    wait "$pid" || true
    echo "$peak"
  }
  rss_kb=$(own_peak_kb mem)
  log_bytes=$(find "$work/state/logs" -name '*.log' -exec du -b {} + | awk '{ s += $1 } END { print s }')
  echo "a script printing $((log_bytes / 1000000)) MB: upstep's own peak RSS $((rss_kb / 1024)) MB (target < 50 MB)"
  # The same run with a silent script: what the output itself costs.
  printf '%s\n' "process.exit(0)" >"$work/repo/migrations/s01.js"
  git -C "$work/repo" -c user.name=bench -c user.email=bench@example.com commit -qam quiet
  git -C "$work/repo" tag -f v1.0.0 >/dev/null
  echo "the same run with a silent script: upstep's own peak RSS $(($(own_peak_kb quiet) / 1024)) MB"
  cleanup; work=""; mongo_pid=""
fi

if [[ $which == all || $which == detect ]]; then
  docs=${DETECT_DOCS:-1000000}
  cargo build --release --quiet --example bench_detect
  bench=target/release/examples/bench_detect
  work=$(mktemp -d)
  start_mongo
  for state in pending migrated; do
    echo "== detect: $docs messages and $docs subscribers, all $state"
    "$bench" seed "$MONGO_BASE/detect_$state" "$docs" "$state"
    "$bench" time "$MONGO_BASE/detect_$state"
  done
  # The same, through the CLI (cold process, text output discarded).
  for state in pending migrated; do
    start=$(date +%s%N)
    UPSTEP_STATE_DIR="$work/state" "$bin" detect --mongo-uri "$MONGO_BASE/detect_$state" --json >/dev/null
    end=$(date +%s%N)
    awk -v s="$start" -v e="$end" -v st="$state" 'BEGIN { printf "upstep detect (CLI, all %s): %.0f ms\n", st, (e - s) / 1e6 }'
  done
  cleanup; work=""; mongo_pid=""
fi
