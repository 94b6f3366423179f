#!/usr/bin/env bash
# The overhead of `upstep rehearse` over a plain `upstep upgrade` on the same data: backup +
# restore + drop (and the measuring between steps), at N documents (default: 10000 and
# 1000000). One release with one script that updates every document (the work scales with N).
# Starts its own test MongoDB (SecantusDB) and stops it at the end; opt-in, not a test.
#   scripts/bench-rehearse.sh [N...]
# Figures are for comparison within one run: these machines are shared and noisy.
set -euo pipefail
cd "$(dirname "$0")/.."
counts=("$@")
[[ ${#counts[@]} -gt 0 ]] || counts=(10000 1000000)

tools=${UPSTEP_TEST_TOOLS:-$HOME/.cache/upstep-test-tools}
server=${UPSTEP_TEST_MONGOD:-$tools/secantus/bin/secantusd-rs}
modules=${UPSTEP_TEST_NODE_MODULES:-$tools/node-fixture/node_modules}
[[ -x $server ]] || { echo "no test MongoDB at $server: run scripts/test.sh once" >&2; exit 1; }
[[ -d $modules/mongodb ]] || { echo "no node fixture packages in $modules: run scripts/test.sh once" >&2; exit 1; }

cargo build --release --quiet --bin upstep --example bench_backup
bin=$PWD/target/release/upstep
bench=$PWD/target/release/examples/bench_backup

work=$(mktemp -d "${TMPDIR:-/tmp}/upstep-bench-rehearse.XXXXXX")
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
mkdir -p "$work/data"
"$server" --host 127.0.0.1 --port "$port" --storage-path "$work/data" \
  --log-file-max 8MB --cache-size 1G >"$work/server.log" 2>&1 &
server_pid=$!
cleanup() {
  kill -TERM "$server_pid" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$server_pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$server_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
for _ in $(seq 100); do (echo >/dev/tcp/127.0.0.1/"$port") 2>/dev/null && break; sleep 0.1; done
uri=mongodb://127.0.0.1:$port

# The project: one tag, one script that marks every event.
repo=$work/repo
mkdir -p "$repo/migrations"
cat >"$repo/migrations/001-mark.js" <<'EOF'
const { MongoClient } = require('mongodb');
(async () => {
  const client = new MongoClient(process.env.MONGO_URL);
  await client.connect();
  await client.db().collection('events').updateMany({ marked: { $exists: false } }, { $set: { marked: true } });
  await client.close();
})().catch((e) => { console.error(e); process.exit(1); });
EOF
git -C "$repo" init -q
git -C "$repo" add -A
git -C "$repo" -c user.name=bench -c user.email=bench@example.invalid commit -qm v1
git -C "$repo" tag v1.0.0
node=$(node --version | sed 's/^v//')
cat >"$work/map.toml" <<EOF
schema = 1
[project]
name = "bench"
migrations_dir = "migrations"
[eras.app]
cwd = "."
run = ["node", "{script}"]
[eras.app.env]
MONGO_URL = "{mongo_uri}"
NODE_PATH = "$modules"
[[releases]]
version = "1.0.0"
era = "app"
node = "$node"
[[migrations]]
id = "mark"
title = "Marks every event"
introduced_in = "1.0.0"
script = "migrations/001-mark.js"
run = "file"
exits = "yes"
idempotent = "yes"
[[migrations.pending]]
collection = "events"
filter = { marked = { "\$exists" = false } }
EOF

export UPSTEP_STATE_DIR=$work/state UPSTEP_CACHE_DIR=$work/cache NO_COLOR=1
common=(--map "$work/map.toml" --repo "$repo" --to 1.0.0 --redis-url redis://127.0.0.1:1 --yes)

seconds() { python3 -c 'import time; print(f"{time.time():.3f}")'; }

for n in "${counts[@]}"; do
  echo "== $n documents"
  "$bench" seed "$uri/plain_$n" "$n" | sed 's/^/plain  /'
  "$bench" seed "$uri/rehearsed_$n" "$n" | sed 's/^/rehearsed /'

  t0=$(seconds)
  "$bin" upgrade "${common[@]}" --mongo-uri "$uri/plain_$n" --no-backup --json >"$work/plain.jsonl" 2>"$work/plain.err" || {
    cat "$work/plain.err" >&2; exit 1; }
  t1=$(seconds)
  "$bin" rehearse "${common[@]}" --mongo-uri "$uri/rehearsed_$n" --json >"$work/rehearse.jsonl" 2>"$work/rehearse.err" || {
    cat "$work/rehearse.err" >&2; exit 1; }
  t2=$(seconds)
  python3 - "$n" "$t0" "$t1" "$t2" "$work/plain.jsonl" "$work/rehearse.jsonl" <<'EOF'
import json, sys
n, t0, t1, t2 = sys.argv[1], *map(float, sys.argv[2:5])
plain = [json.loads(l) for l in open(sys.argv[5]) if l.strip()]
step = next(e for e in plain if e.get("event") == "step-finished")
report = json.loads(open(sys.argv[6]).read().strip().splitlines()[-1])
s = report["steps"][0]
plain_wall, rehearse_wall = t1 - t0, t2 - t1
print(f"docs={n} plain_upgrade_s={plain_wall:.2f} (step {step['duration_ms']/1000:.2f})"
      f" rehearse_s={rehearse_wall:.2f} (step {s['duration_ms']/1000:.2f},"
      f" backup {report['backup_ms']/1000:.2f}, restore {report['restore_ms']/1000:.2f},"
      f" drop {report['drop_ms']/1000:.2f})"
      f" overhead_s={rehearse_wall - plain_wall:.2f} ratio={rehearse_wall / plain_wall:.2f}"
      f" measured_pending={s['pending_before']}")
EOF
done
