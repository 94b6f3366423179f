#!/usr/bin/env bash
# Backup/restore throughput on N documents (default 1,000,000 of ~290 bytes), against the bare
# driver in the same run as the yardstick: a plain cursor read for backup, a plain insertMany of
# the same data for restore. Starts its own test MongoDB (SecantusDB) and stops it at the end.
#   scripts/bench-backup.sh [N]
# Needs /usr/bin/time (apt-get install -y time) for peak RSS. Figures are for comparison within
# one run: these machines are shared and noisy.
set -euo pipefail
cd "$(dirname "$0")/.."
count=${1:-1000000}

tools=${UPSTEP_TEST_TOOLS:-$HOME/.cache/upstep-test-tools}
server=${UPSTEP_TEST_MONGOD:-$tools/secantus/bin/secantusd-rs}
[[ -x $server ]] || { echo "no test MongoDB at $server: run scripts/test.sh once" >&2; exit 1; }
[[ -x /usr/bin/time ]] || { echo "needs /usr/bin/time: apt-get install -y time" >&2; exit 1; }

cargo build --release --quiet --bin upstep --example bench_backup
bin=target/release/upstep
bench=target/release/examples/bench_backup

work=$(mktemp -d "${TMPDIR:-/tmp}/upstep-bench-backup.XXXXXX")
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
mkdir -p "$work/data"
# The server binary itself in the background, so $! is its own pid.
"$server" --host 127.0.0.1 --port "$port" --storage-path "$work/data" >"$work/server.log" 2>&1 &
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
echo "== seeding $count documents"
"$bench" seed "$uri/bench" "$count"

# One unmeasured read warms the server's cache, so the yardstick and backup start alike.
"$bench" read "$uri/bench" >/dev/null
echo "== yardstick: bare driver cursor read"
"$bench" read "$uri/bench"

# Wall seconds and peak RSS (MiB) of a command, from GNU time.
timed() {
  local label=$1; shift
  /usr/bin/time -v -o "$work/time.txt" "$@" >"$work/out.txt" 2>"$work/err.txt" || {
    cat "$work/err.txt" >&2; exit 1; }
  local wall rss
  wall=$(awk -F': ' '/Elapsed \(wall clock\)/ { n = split($2, p, ":"); s = 0; for (i = 1; i <= n; i++) s = s * 60 + p[i]; print s }' "$work/time.txt")
  rss=$(awk -F': ' '/Maximum resident set size/ { printf "%.1f", $2 / 1024 }' "$work/time.txt")
  echo "$label: seconds=$wall peak_rss_mib=$rss"
}

# Prints one figure line from a --json summary: summary MODE LABEL FILE.
summary() {
  python3 - "$@" <<'EOF'
import json, sys
mode, label, path = sys.argv[1:4]
s = json.load(open(path))
c = s["collections"][0]
if mode == "backup":
    t, docs, data = c["seconds"], c["documents"], c["bson_bytes"]
    extra = f" file_bytes={c['bytes']}"
else:
    t, docs, data = c["duration_ms"] / 1000, c["documents"], c["bson_bytes"]
    extra = ""
print(f"{label}: docs={docs} bytes={data}{extra} seconds={t:.2f} docs_per_s={docs / t:.0f} "
      f"mb_per_s={data / t / 1e6:.1f} (per-collection time, from the summary)")
EOF
}

echo "== upstep backup"
timed upstep_backup "$bin" -v backup --mongo-uri "$uri/bench" --out "$work/dump" --json
summary backup upstep_backup "$work/out.txt"
grep -E "copied|fsync of [0-9]{6,}" "$work/err.txt" | sed 's/\x1b\[[0-9;]*m//g' || true

echo "== upstep backup --gzip"
timed upstep_backup_gzip "$bin" backup --mongo-uri "$uri/bench" --out "$work/dumpgz" --gzip --json
summary backup upstep_backup_gzip "$work/out.txt"
rm -rf "$work/dumpgz"

echo "== where a read's time goes on this server (bare driver, query shapes)"
"$bench" shapes "$uri/bench"

echo "== yardstick: bare insertMany of the same data into a fresh database"
"$bench" insert "$uri/bench_bare" "$work/dump/bench/events.bson"

echo "== upstep restore (verify checksums, insert, indexes, count)"
timed upstep_restore "$bin" restore "$work/dump" --to-uri "$uri/bench_restore" --json
summary restore upstep_restore "$work/out.txt"
