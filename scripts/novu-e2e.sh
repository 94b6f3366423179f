#!/usr/bin/env bash
# Opt-in end-to-end proof on the REAL Novu repository (never in CI: it needs a Novu clone, the
# npm registry, tens of GB of disk and up to hours on a small machine).
#
#   scripts/novu-e2e.sh --clone DIR --from X --to Y [--work DIR] [--stand-ins auto|yes|no]
#                       [--approve ID]... [--include-optional ID]... [--map FILE]
#
# It starts the test MongoDB server (SecantusDB) and a redis-server on free loopback ports,
# seeds a small real-shaped Novu database as of X (examples/novu_seed), runs
#   upstep upgrade --yes --json --backup DIR --repo <clone> --from X --to Y
# with STORE_ENCRYPTION_KEY in its environment, and checks:
#   - every planned step ran, succeeded and was verified by its data check;
#   - `upstep status --check` exits 0;
#   - a second run runs nothing;
#   - the data says what each script promises (`novu_seed check`).
# Then it prints a table per tag (node, pnpm, each setup command's seconds, disk) and per
# script (how it ran, how it ended, seconds, peak RSS, verified). Exit 0 only if all passed.
#
# --clone: a clone upstep can use, e.g.
#   git clone --no-checkout <novu copy> DIR && git -C DIR fetch origin '+refs/tags/*:refs/tags/*'
# --stand-ins: some tags need GitHub-hosted packages (v0.9.0-v0.19.0: the `http2` tarball of
#   @novu/apns; v0.4.0: the root devDependency monorepo-run). Where GitHub cannot be reached
#   (auto: probed), this script (never upstep) copies the clone and, on that copy only, moves
#   each affected tag onto a commit whose pnpm-lock.yaml takes the same package from npm
#   (STAND_INS below). Results obtained that way say so in the table and in docs/novu.md.
#
# --approve / --include-optional / --map go to both upgrade runs (--map to plan and status too):
#   a range through v2.1.0 needs --approve preference-centralization (no data check proves it).
#
# Environment: UPSTEP_BIN / NOVU_SEED_BIN (prebuilt binaries; default: cargo build),
# UPSTEP_CACHE_DIR (toolchains and worktrees, shared across runs; default ~/.cache/upstep),
# UPSTEP_TEST_MONGOD (default ~/.cache/upstep-test-tools/secantus/bin/secantusd-rs).
# UPSTEP_EXTRA_ARGS: more `upstep upgrade` flags (e.g. --no-overlap), split on spaces.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
clone="" from="" to="" work="" stand_ins=auto
extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --approve|--include-optional|--map) extra+=("$1" "$2"); shift 2 ;;
    --clone) clone=$2; shift 2 ;;
    --from) from=${2#v}; shift 2 ;;
    --to) to=${2#v}; shift 2 ;;
    --work) work=$2; shift 2 ;;
    --stand-ins) stand_ins=$2; shift 2 ;;
    -h|--help) sed -n '2,36p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
done
[ -n "$clone" ] && [ -n "$from" ] && [ -n "$to" ] || { echo "usage: $0 --clone DIR --from X --to Y [--work DIR] [--stand-ins auto|yes|no]" >&2; exit 2; }
git -C "$clone" rev-parse --git-dir >/dev/null 2>&1 || { echo "$clone is not a git repository" >&2; exit 2; }
work=${work:-/work/novu-e2e/v$from-v$to}
rm -rf "$work"
mkdir -p "$work"
work=$(cd "$work" && pwd)

# The store key every seeded ciphertext was made with (examples/novu_seed/data.rs E2E_KEY).
export STORE_ENCRYPTION_KEY='upstep-e2e-store-encryption-key!'
export UPSTEP_STATE_DIR=$work/state
export UPSTEP_CACHE_DIR=${UPSTEP_CACHE_DIR:-$HOME/.cache/upstep}

# Declared npm stand-ins: lockfile text at the real tag -> the same package from npm.
#   http2: node-apn's fork (apn-2.1.4) of http2 3.3.6 -> http2@3.3.6 from npm, the original it
#     forked (the push providers load it; no migration sends a push).
#   monorepo-run: github:scopsy/monorepo-run at aa7f44f (0.4.2) -> monorepo-run@0.4.2 from npm.
STAND_INS=(
  "tarball: https://github.com/node-apn/node-http2/archive/apn-2.1.4.tar.gz|integrity: sha512-L8iE1xmQ9hZxalL9ekcx6Dp98h8Fwfxnv9Kq8cf7adrXmyYGBnkbQeJe7MBHPkXxjITIOM1R7XWQYo4iDaNAuQ==, tarball: https://registry.npmjs.org/http2/-/http2-3.3.6.tgz"
  "tarball: https://codeload.github.com/scopsy/monorepo-run/tar.gz/aa7f44fa44321f1350a6f46ec37d843b49185160|integrity: sha512-39teSbaJJLxgwZbCCwLOKevDJwUzTCoH52A0nvlQicsJKRlpT0XhW8rAjOhoe2luGb7WXltBGt27dYEVZc+GgQ==, tarball: https://registry.npmjs.org/monorepo-run/-/monorepo-run-0.4.2.tgz"
  # @team-plain/typescript-sdk 5.4.3 (application-generic, v2.1.0-v2.2.0) is no longer served
  # by npm (404); 5.8.0, the version v2.3.0 moved to, takes its place (the importer keeps the
  # specifier 5.4.3, as the package.json says; only the resolved version changes).
  "'@team-plain/typescript-sdk@5.4.3':|'@team-plain/typescript-sdk@5.8.0':"
  "integrity: sha512-660VeutTdaspdzsgpLHKhYsBxX0BOH/O4r0FTi1HD67QyHnKeaMRbxBAen7Yi+vpcpBc3gJGq4HtgHWPZ5WEoA==|integrity: sha512-qgDGX96yDsdTo5+Yh8R+rhtInmAm90w17607B2Ugik8Ij0H1wocjjp8xtMxHruSmms5ani43Y5xRxVFPSxYVeg=="
  "'@team-plain/typescript-sdk':\n        specifier: 5.4.3\n        version: 5.4.3|'@team-plain/typescript-sdk':\n        specifier: 5.4.3\n        version: 5.8.0"
  # @maily-to/render 0.0.17 and 0.0.19 (v2.1.1: the API and application-generic) are no longer
  # served by npm (404); 0.0.12, with the same dependencies and peers, takes both places: 0.0.17's
  # entries go, 0.0.19's are renamed (the store checks that a package's version is its key's).
  "  '@maily-to/render@0.0.17':\n    resolution: {integrity: sha512-vFDlY9U9XtyDRzeVGVON9tgbzBRrq5wBOMG1aFGc/30soaamK7oYxRqSUbwNmrfT2ScBgL7YFtDLoeRZbpdmeA==}\n    engines: {node: '>=18.0.0'}\n    peerDependencies:\n      react: ^18.3.1\n\n|"
  "  '@maily-to/render@0.0.17(react-dom@18.3.1(react@18.3.1))(react@18.3.1)':\n    dependencies:\n      '@react-email/components': 0.0.25(react-dom@18.3.1(react@18.3.1))(react@18.3.1)\n      '@react-email/render': 1.0.1(react-dom@18.3.1(react@18.3.1))(react@18.3.1)\n      react: 18.3.1\n    transitivePeerDependencies:\n      - react-dom\n\n|"
  "'@maily-to/render@0.0.19|'@maily-to/render@0.0.12"
  "sha512-cyR/cRmUj+zcZOKc2yZlBTGFUAJazjoc3YFkBOnx8eMq3N4bHAxC+zT1MsfEqXXiHcw2uW289xxEVkrjKC0xJw==|sha512-IpLb5g6JJ7aBuZrVyUmUcOfRj1rc/DrDQS0uk8200xXD2Wr3V+mschMGUeJghW0IMEbk/Q14jbLTNfvTg3G42w=="
  "'@maily-to/render':\n        specifier: ^0.0.17\n        version: 0.0.17(|'@maily-to/render':\n        specifier: ^0.0.17\n        version: 0.0.12("
  "'@maily-to/render':\n        specifier: ^0.0.19\n        version: 0.0.19(|'@maily-to/render':\n        specifier: ^0.0.19\n        version: 0.0.12("
  # Novu's fork of maily.to's render package (v2.2.0-v3.11.0: github:novuhq/maily.to, codeload)
  # -> @maily-to/render 0.1.4 from npm, the upstream release nearest the fork's 0.1.3-novu.N
  # (same dependencies: @react-email/*, juice, node-html-parser). The entry becomes a registry
  # entry: its resolution first, then its URL key renamed everywhere (importers, packages,
  # snapshots), so no codeload URL is left for the install to fetch.
  "{path: /packages/render, tarball: https://codeload.github.com/novuhq/maily.to/tar.gz/3f179b72ada0e34286b6eb89826875f7e9fb5472}\n    version: 0.1.3-novu.4-render|{integrity: sha512-SZJwZ4qwyeFWnc6fjeF9eHEZZWe0QoFOVezZDdJV7ZHDtvflyDEy8f33in29Uh1s55bAdLwgPxtTDHYos+p2XA==}"
  "{path: /packages/render, tarball: https://codeload.github.com/novuhq/maily.to/tar.gz/cdded4d623f136f0d89a45dbd3507e44465632bd}\n    version: 0.1.3-novu.8-render|{integrity: sha512-SZJwZ4qwyeFWnc6fjeF9eHEZZWe0QoFOVezZDdJV7ZHDtvflyDEy8f33in29Uh1s55bAdLwgPxtTDHYos+p2XA==}"
  "https://codeload.github.com/novuhq/maily.to/tar.gz/3f179b72ada0e34286b6eb89826875f7e9fb5472#path:/packages/render|0.1.4"
  "https://codeload.github.com/novuhq/maily.to/tar.gz/cdded4d623f136f0d89a45dbd3507e44465632bd#path:/packages/render|0.1.4"
)

log() { printf '%s  %s\n' "$(date +%H:%M:%S)" "$*"; }

# --- binaries -------------------------------------------------------------------------------
if [ -z "${UPSTEP_BIN:-}" ] || [ -z "${NOVU_SEED_BIN:-}" ]; then
  log "building upstep and the seeding tool (cargo build)"
  (cd "$here" && nice -n 5 cargo build --quiet --bin upstep --example novu_seed)
fi
upstep=${UPSTEP_BIN:-$here/target/debug/upstep}
seed=${NOVU_SEED_BIN:-$here/target/debug/examples/novu_seed}
mongod=${UPSTEP_TEST_MONGOD:-$HOME/.cache/upstep-test-tools/secantus/bin/secantusd-rs}
for tool in "$upstep" "$seed" "$mongod"; do
  [ -x "$tool" ] || { echo "missing: $tool" >&2; exit 2; }
done
command -v redis-server >/dev/null || { echo "missing: redis-server" >&2; exit 2; }

# --- the repository, with stand-ins where GitHub is out of reach -----------------------------
if [ "$stand_ins" = auto ]; then
  if timeout 5 bash -c '</dev/tcp/github.com/443' 2>/dev/null; then stand_ins=no; else stand_ins=yes; fi
fi
repo=$clone
substituted=()
if [ "$stand_ins" = yes ]; then
  repo=$work/repo
  log "GitHub out of reach: copying the clone to $repo to give its tags npm stand-ins"
  git clone --quiet --no-checkout "$clone" "$repo"
  git -C "$repo" fetch --quiet origin '+refs/tags/*:refs/tags/*'
  for tag in $(git -C "$repo" tag -l 'v*'); do
    text=$work/stand-in.lock
    git -C "$repo" show "refs/tags/$tag:pnpm-lock.yaml" >"$text" 2>/dev/null || continue
    cp "$text" "$text.orig"
    for pair in "${STAND_INS[@]}"; do
      # Whole-file mode: a pair may span lines (`\n` in it stands for a newline).
      FROM=${pair%%|*} TO=${pair#*|} perl -0pi -e '($f = $ENV{FROM}) =~ s/\\n/\n/g; ($t = $ENV{TO}) =~ s/\\n/\n/g; s/\Q$f\E/$t/g' "$text"
    done
    # A tag whose lockfile no pair changes keeps its commit.
    if cmp -s "$text" "$text.orig"; then rm -f "$text" "$text.orig"; continue; fi
    rm -f "$text.orig"
    blob=$(git -C "$repo" hash-object -w "$text")
    rm -f "$text"
    index=$work/stand-in.index
    GIT_INDEX_FILE=$index git -C "$repo" read-tree "refs/tags/$tag^{commit}"
    GIT_INDEX_FILE=$index git -C "$repo" update-index --cacheinfo "100644,$blob,pnpm-lock.yaml"
    tree=$(GIT_INDEX_FILE=$index git -C "$repo" write-tree)
    # A fixed author and date: the same stand-in commit every run, so a prepared worktree of
    # an earlier run is still at its tag's commit.
    commit=$(GIT_AUTHOR_NAME=novu-e2e GIT_AUTHOR_EMAIL=novu-e2e@localhost GIT_AUTHOR_DATE='2024-01-01T00:00:00Z' \
      GIT_COMMITTER_NAME=novu-e2e GIT_COMMITTER_EMAIL=novu-e2e@localhost GIT_COMMITTER_DATE='2024-01-01T00:00:00Z' \
      git -C "$repo" commit-tree "$tree" -p "refs/tags/$tag^{commit}" -m "novu-e2e: npm stand-ins for packages out of reach (GitHub-hosted, or gone from npm)")
    git -C "$repo" tag -f "$tag" "$commit" >/dev/null
    rm -f "$index"
    substituted+=("$tag")
  done
  log "tags given npm stand-ins: ${substituted[*]:-none}"
fi
printf '%s\n' "${substituted[@]}" >"$work/stand-in-tags"

# --- services ---------------------------------------------------------------------------------
free_port() {
  local p
  while :; do
    p=$((20000 + RANDOM % 30000))
    (: </dev/tcp/127.0.0.1/$p) 2>/dev/null || { echo "$p"; return; }
  done
}
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT
# Whether `pid` itself listens on `port` (a free port can be taken by another process between
# the probe and the bind: then the readiness probe would reach someone else's server).
listens() { ss -ltnpH "sport = :$2" 2>/dev/null | grep -q "pid=$1,"; }
mkdir -p "$work/db"
started_services=no
for attempt in 1 2 3; do
  mongo_port=$(free_port)
  redis_port=$(free_port)
  "$mongod" --host 127.0.0.1 --port "$mongo_port" --storage-path "$work/db" >"$work/mongod.log" 2>&1 &
  mongo_pid=$!
  redis-server --bind 127.0.0.1 --port "$redis_port" --save '' --appendonly no >"$work/redis.log" 2>&1 &
  redis_pid=$!
  pids+=("$mongo_pid" "$redis_pid")
  for _ in $(seq 100); do
    listens "$mongo_pid" "$mongo_port" && listens "$redis_pid" "$redis_port" && { started_services=yes; break; }
    kill -0 "$mongo_pid" 2>/dev/null && kill -0 "$redis_pid" 2>/dev/null || break
    sleep 0.2
  done
  [ "$started_services" = yes ] && break
  log "attempt $attempt: the test servers did not come up on their own ports (taken by another process?); trying other ports"
  kill "$mongo_pid" "$redis_pid" 2>/dev/null || true
  wait "$mongo_pid" "$redis_pid" 2>/dev/null || true
done
[ "$started_services" = yes ] || { echo "cannot start the test MongoDB and Redis (see $work/mongod.log, $work/redis.log)" >&2; exit 2; }
mongo_uri=mongodb://127.0.0.1:$mongo_port/novu-e2e
redis_url=redis://127.0.0.1:$redis_port/0
log "test MongoDB on :$mongo_port, Redis on :$redis_port, work in $work"

"$seed" seed "$mongo_uri" --as-of "$from"
map_args=()
for ((n = 0; n < ${#extra[@]}; n += 2)); do
  [ "${extra[n]}" = --map ] && map_args=(--map "${extra[n+1]}")
done
"$upstep" plan --json "${map_args[@]}" --repo "$repo" --from "$from" --to "$to" >"$work/plan.json" 2>"$work/plan.stderr" || {
  log "upstep plan --repo failed (exit $?):"; cat "$work/plan.stderr"; }

# --- the upgrade ------------------------------------------------------------------------------
# Every JSON event is stamped on arrival (epoch ms); the tree's memory is sampled meanwhile.
sample_rss() {
  local root=$1
  while kill -0 "$root" 2>/dev/null; do
    # Sum of the RSS (kB) of every descendant of upstep: the running script's whole tree.
    ps -eo pid=,ppid=,rss= | awk -v root="$root" -v now="$(date +%s%3N)" '
      { parent[$1] = $2; rss[$1] = $3 }
      END { total = 0
            for (p in parent) { q = p; while (q in parent && q != root && q != 1) q = parent[q]
                                if (q == root && p != root) total += rss[p] }
            print now, total }' >>"$work/rss.log"
    sleep 2
  done
}
stamp() {
  while IFS= read -r line; do
    now=$(date +%s%3N)
    printf '%s %s\n' "$now" "$line"
    # The worktree's disk use once its setup is done (in the background: stdout keeps flowing).
    case "$line" in
      *'"event":"setup"'*'"status":"done"'*|*'"event":"setup"'*'"status":"cached"'*)
        ref=$(printf '%s' "$line" | sed -n 's/.*"git_ref":"\([^"]*\)".*/\1/p')
        wt=$(find "$UPSTEP_CACHE_DIR/worktrees" -mindepth 2 -maxdepth 2 -type d -name "$ref" 2>/dev/null | head -1)
        [ -n "$wt" ] && (printf '%s %s\n' "$ref" "$(du -sb "$wt" 2>/dev/null | cut -f1)" >>"$work/disk.log") &
        ;;
    esac
  done
}

# UPSTEP_EXTRA_ARGS: more upgrade flags, split on spaces (scripts/bench-novu.sh: --no-overlap, --map).
# shellcheck disable=SC2206
upgrade=("$upstep" upgrade --yes --json --repo "$repo" --from "$from" --to "$to"
  --mongo-uri "$mongo_uri" --redis-url "$redis_url" "${extra[@]}" ${UPSTEP_EXTRA_ARGS:-})
log "upstep upgrade --from $from --to $to (events: $work/run1.jsonl)"
started=$(date +%s)
set +e
"${upgrade[@]}" --backup "$work/backup" 2>"$work/run1.stderr" > >(stamp >"$work/run1.jsonl") &
upid=$!
sample_rss "$upid" &
wait "$upid"
run1_rc=$?
set -e
run1_secs=$(( $(date +%s) - started ))
sleep 1
log "first run: exit $run1_rc after ${run1_secs}s"

set +e
"$upstep" status --check "${map_args[@]}" --to "$to" --mongo-uri "$mongo_uri" >"$work/status.txt" 2>&1
status_rc=$?
"${upgrade[@]}" --no-backup 2>"$work/run2.stderr" > >(stamp >"$work/run2.jsonl")
run2_rc=$?
sleep 1
"$seed" check "$mongo_uri" --from "$from" --to "$to" --key "$STORE_ENCRYPTION_KEY" >"$work/promises.txt" 2>&1
check_rc=$?
set -e

node "$here/scripts/novu-e2e-report.js" "$work" "$from" "$to" "$run1_rc" "$run1_secs" "$status_rc" "$run2_rc" "$check_rc"
