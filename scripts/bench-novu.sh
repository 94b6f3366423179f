#!/usr/bin/env bash
# Opt-in benchmark of preparing real Novu tags (issue 14; never in CI: it needs a Novu clone,
# the npm registry, tens of GB of disk and hours on a small machine).
#
#   scripts/bench-novu.sh --clone DIR [--range FROM:TO]... [--work DIR] [--skip-manual]
#                         [--build-candidate] [--configs NAME,...]
#
# For each range (default: 0.24.0:2.0.0 and 0.17.0:0.24.0, the second spanning four tags:
# v0.18.0, v0.19.0, v0.20.0, v0.24.0) it runs the real upgrade through scripts/novu-e2e.sh
# (test MongoDB server, Redis, real-shaped seed, npm stand-ins where GitHub is out of reach,
# every step verified, a second run that must run nothing) in these configurations, on the
# same machine in the same run:
#   cold      a new upstep cache: empty pnpm store and nx cache (toolchains shared)
#   warm      the same cache again: store and nx cache full, worktrees gone
#   warm-serial   the same, with --no-overlap
#   candidate (--build-candidate) warm, with a map whose full setup builds only the workspace
#             libraries the API depends on (`pnpm --filter "@novu/api^..." run build`) instead
#             of `nx build @novu/api`: proven only if every step still succeeds and verifies
#   --configs picks and orders the configurations (cold, warm, warm-serial, candidate, manual;
#   a name may repeat: a second warm run shows whether the first one filled the caches); the
#   cache is emptied first only when the list holds `cold`.
# then the manual per-tag recipe (Novu's own process, by hand): extract the tag, install with
# the tag's pnpm under the tag's node (`pnpm install --frozen-lockfile`, the whole workspace,
# its own store, cold at the first tag), and `pnpm nx build @novu/api`, each timed, each tag's
# folder removed after it. Where the whole workspace cannot install offline, the map's filtered
# install stands in (marked "~"); a failed command marks its tag "!" and the row's exit 1.
# It samples the disk of the worktrees, the store and the nx cache every 30 s (peak) and prints
# one table: wall time, setup time per tag (install, build), what the overlap hid, peak disk.
#
# Environment: as scripts/novu-e2e.sh (UPSTEP_BIN, NOVU_SEED_BIN, UPSTEP_TEST_MONGOD); the
# toolchains of ~/.cache/upstep (or UPSTEP_CACHE_DIR) are shared, read-only in spirit.

set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
clone="" work=/work/bench-novu manual=yes candidate=no configs="" ranges=()
while [ $# -gt 0 ]; do
  case "$1" in
    --clone) clone=$2; shift 2 ;;
    --range) ranges+=("$2"); shift 2 ;;
    --work) work=$2; shift 2 ;;
    --skip-manual) manual=no; shift ;;
    --build-candidate) candidate=yes; shift ;;
    --configs) configs=$2; shift 2 ;;
    -h|--help) sed -n '2,30p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
done
[ -n "$clone" ] || { echo "usage: $0 --clone DIR [--range FROM:TO]... (see --help)" >&2; exit 2; }
[ ${#ranges[@]} -gt 0 ] || ranges=(0.24.0:2.0.0 0.17.0:0.24.0)
if [ -z "$configs" ]; then
  configs=cold,warm,warm-serial
  [ "$candidate" = no ] || configs=$configs,candidate
  [ "$manual" = no ] || configs=$configs,manual
fi
for config in ${configs//,/ }; do
  case "$config" in
    cold | warm | warm-serial | candidate | manual) ;;
    *) echo "unknown configuration: $config (cold, warm, warm-serial, candidate, manual)" >&2; exit 2 ;;
  esac
done
mkdir -p "$work"
work=$(cd "$work" && pwd)
shared_toolchains=${UPSTEP_CACHE_DIR:-$HOME/.cache/upstep}/toolchains
mkdir -p "$shared_toolchains"
log() { printf '%s  %s\n' "$(date +%H:%M:%S)" "$*"; }

if [ -z "${UPSTEP_BIN:-}" ] || [ -z "${NOVU_SEED_BIN:-}" ]; then
  (cd "$here" && nice -n 5 cargo build --quiet --bin upstep --example novu_seed)
  export UPSTEP_BIN=$here/target/debug/upstep NOVU_SEED_BIN=$here/target/debug/examples/novu_seed
fi

# Peak bytes under the given folders, sampled every 30 s until the file $stop appears.
sample_disk() {
  local out=$1 stop=$2; shift 2
  local peak=0 now
  while [ ! -e "$stop" ]; do
    # `|| true`: du fails on a folder not created yet (the nx cache of a cold run), and under
    # `set -eo pipefail` that would end the sampler silently (the cold run's peak was lost so).
    now=$(du -sbc "$@" 2>/dev/null | tail -1 | cut -f1 || true)
    [ "${now:-0}" -gt "$peak" ] && peak=$now
    echo "$peak" >"$out"
    sleep 30
  done
}

# The map whose full setup builds the API's workspace dependencies, not the API.
candidate_map=$work/candidate-map.toml
sed 's|\["pnpm", "nx", "build", "@novu/api"\]|["pnpm", "--filter", "@novu/api^...", "run", "build"]|' \
  "$here/release-map.toml" >"$candidate_map"

# Every invocation appends its rows; the table at the end shows this invocation's.
results=$work/results.tsv
touch "$results"
first_row=$(( $(wc -l <"$results") + 1 ))
# run_config NAME CACHE FROM TO UPSTEP_FLAGS [novu-e2e.sh flags...]: one novu-e2e.sh run, its
# figures appended.
run_config() {
  local name=$1 cache=$2 from=$3 to=$4 flags=$5; shift 5
  local dir=$work/$name-v$from-v$to stop n=2
  # A repeated configuration gets its own folder (warm, warm-2, ...).
  while [ -e "$dir" ]; do dir=$work/$name-$n-v$from-v$to; n=$((n + 1)); done
  mkdir -p "$cache"
  [ -e "$cache/toolchains" ] || ln -s "$shared_toolchains" "$cache/toolchains"
  stop=$(mktemp -u)
  sample_disk "$dir.peak" "$stop" "$cache/worktrees" "$cache/pnpm-store" "$cache/nx-cache" &
  local sampler=$! rc=0 started
  log "$name: v$from -> v$to (cache $cache) $flags $*"
  started=$(date +%s)
  UPSTEP_CACHE_DIR=$cache UPSTEP_EXTRA_ARGS="$flags" \
    "$here/scripts/novu-e2e.sh" --clone "$clone" --from "$from" --to "$to" --work "$dir" "$@" \
    >"$dir.out" 2>&1 || rc=$?
  touch "$stop"; wait "$sampler" 2>/dev/null || true; rm -f "$stop"
  node - "$name" "v$from-v$to" "$rc" "$(( $(date +%s) - started ))" "$dir/run1.jsonl" \
    "$(cat "$dir.peak" 2>/dev/null || echo 0)" "$(du -sb "$cache/pnpm-store" 2>/dev/null | cut -f1)" \
    >>"$results" <<'EOF'
const [name, range, rc, wall, events, peak, store] = process.argv.slice(2);
const lines = require('fs').existsSync(events) ? require('fs').readFileSync(events, 'utf8').split('\n') : [];
const ev = lines.filter(Boolean).map((l) => { try { return JSON.parse(l.slice(l.indexOf(' ') + 1)); } catch { return null; } }).filter(Boolean);
const tags = {};
let hidden = 0;
for (const e of ev.filter((e) => e.event === 'setup')) {
  const t = (tags[e.git_ref] ||= { install: 0, build: 0, other: 0, cached: false });
  // "restored": a kept build copied back instead of built (its copy time counts as the build).
  if (e.status === 'finished' || e.status === 'restored') t[e.phase] = (t[e.phase] || 0) + e.duration_ms;
  if (e.status === 'cached') t.cached = true;
  if (e.status === 'prepared-ahead') hidden += e.duration_ms;
}
const s = (ms) => (ms / 1000).toFixed(0);
const perTag = Object.entries(tags).map(([tag, t]) => t.cached ? `${tag} cached` : `${tag} ${s(t.install)}+${s(t.build)}`).join(', ');
const setup = Object.values(tags).reduce((a, t) => a + t.install + t.build + t.other, 0);
console.log([name, range, rc, wall, s(setup), s(hidden), (Number(peak) / 1e9).toFixed(1), (Number(store || 0) / 1e9).toFixed(1), perTag].join('\t'));
EOF
}

# The manual recipe, tag by tag, for the tags upstep ran in the range.
manual_range() {
  local from=$1 to=$2 dir=$work/manual-v$from-v$to
  local store=$dir/store total=0 peak=0 per=() failed=0
  mkdir -p "$dir"
  # The tags upstep's plan prepared (its newest plan of the range), with their toolchains.
  local tags plan
  plan=$(ls -t "$work"/*-v"$from"-v"$to"/plan.json 2>/dev/null | head -1)
  tags=$(node -e 'const p = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8")); for (const g of p.groups) console.log(g.git_ref, g.node, g.pnpm || "")' \
    "$plan" 2>/dev/null || true)
  if [ -z "$tags" ]; then
    echo "manual: no upstep plan of v$from -> v$to to take the tags from (run a configuration of the range first)" >&2
    return 1
  fi
  # The same repository as upstep's run: its tags carry the npm stand-ins.
  local repo
  repo=$(dirname "$plan")/repo
  [ -d "$repo" ] || repo=$clone
  # The tag list on its own descriptor: pnpm and nx read stdin, and ate the rest of the list.
  while read -r tag node pnpm <&3; do
    [ -n "$tag" ] || continue
    local wt=$dir/$tag t0 t1 t2 t3 nodebin
    nodebin=$(dirname "$(find -L "$shared_toolchains/node-$node" -path '*/bin/node' -type f 2>/dev/null | head -1)")
    [ -n "$nodebin" ] && [ "$nodebin" != . ] || nodebin=$(dirname "$(command -v node)")
    log "manual: $tag (node $node, pnpm ${pnpm:-?})"
    t0=$(date +%s); rm -rf "$wt"; mkdir -p "$wt"
    git -C "$repo" archive "$tag" | tar -x -C "$wt"
    t1=$(date +%s)
    # The tag's pnpm on PATH, under the tag's node, as a person installs it (nx runs the
    # packages' scripts through `pnpm`, so it must be on PATH): the one upstep provisioned.
    local pnpmjs=$shared_toolchains/pnpm-$pnpm/node_modules/pnpm/bin/pnpm.cjs
    [ -f "$pnpmjs" ] || { echo "manual: no pnpm $pnpm in $shared_toolchains (run upstep on the range first)" >&2; return 1; }
    mkdir -p "$dir/bin"
    printf '#!/bin/sh\nexec "%s/node" "%s" "$@"\n' "$nodebin" "$pnpmjs" >"$dir/bin/pnpm"
    chmod +x "$dir/bin/pnpm"
    # A failed command's time is no comparison: the tag is marked "!" and the row's exit is 1.
    local mark=""
    local install=(pnpm install --frozen-lockfile --store-dir "$store" --reporter=append-only)
    if ! (cd "$wt" && PATH=$dir/bin:$nodebin:$PATH CYPRESS_INSTALL_BINARY=0 "${install[@]}") >"$wt.install.log" 2>&1; then
      # Offline, the whole workspace cannot install at some tags (v0.18-v0.24: sharp downloads
      # libvips from GitHub). Then the install the map's eras run (the API, its workspace
      # packages, the root) stands in, timed on its own and marked "~".
      echo "  the whole workspace did not install ($wt.install.log); installing the API's part"
      # The failed attempt is not the recipe's time: it leaves the tag's total too.
      local now; now=$(date +%s)
      t0=$((t0 + now - t1)); t1=$now
      (cd "$wt" && PATH=$dir/bin:$nodebin:$PATH CYPRESS_INSTALL_BINARY=0 "${install[@]}" \
        --filter "@novu/api..." --filter .) >"$wt.install-filtered.log" 2>&1 ||
        { echo "  install failed: $wt.install-filtered.log"; mark="!"; }
      mark=${mark:-"~"}
    fi
    t2=$(date +%s)
    (cd "$wt" && PATH=$dir/bin:$nodebin:$PATH NX_DAEMON=false pnpm nx build @novu/api) >"$wt.build.log" 2>&1 ||
      { echo "  build failed: $wt.build.log"; mark="!"; }
    t3=$(date +%s)
    [ "$mark" != "!" ] || failed=1
    local bytes; bytes=$(du -sbc "$wt" "$store" 2>/dev/null | tail -1 | cut -f1 || true)
    [ "${bytes:-0}" -gt "$peak" ] && peak=$bytes
    rm -rf "$wt"
    per+=("$tag$mark $((t2 - t1))+$((t3 - t2))")
    total=$((total + t3 - t0))
  done 3<<<"$tags"
  printf 'manual\tv%s-v%s\t%s\t%s\t%s\t0\t%s\t%s\t%s\n' "$from" "$to" "$failed" "$total" "$total" \
    "$(node -e "console.log((${peak}/1e9).toFixed(1))")" \
    "$(node -e "console.log(($(du -sb "$store" 2>/dev/null | cut -f1 || echo 0)/1e9).toFixed(1))")" \
    "$(IFS=,; echo "${per[*]:-}")" >>"$results"
  rm -rf "$store"
}

for range in "${ranges[@]}"; do
  from=${range%%:*} to=${range#*:}
  cache=$work/cache-v$from-v$to
  case ",$configs," in *,cold,*) rm -rf "$cache" ;; esac
  for config in ${configs//,/ }; do
    case "$config" in
      cold | warm) run_config "$config" "$cache" "$from" "$to" "" ;;
      warm-serial) run_config warm-serial "$cache" "$from" "$to" --no-overlap ;;
      candidate) run_config candidate "$cache" "$from" "$to" "" --map "$candidate_map" ;;
      manual) manual_range "$from" "$to" ;;
    esac
  done
done

{
  printf 'config\trange\texit\twall s\tsetup s\thidden s\tpeak GB\tstore GB\tper tag (install+build s)\n'
  tail -n "+$first_row" "$results"
} | column -t -s "$(printf '\t')"
echo
echo "setup s: the sum of the setup commands' seconds; hidden s: setup time the overlap ran"
echo "behind the steps (prepared-ahead events); peak GB: worktrees + pnpm store + nx cache"
echo "(manual: its folder + its store). Each run's logs: $work/<config>-v<from>-v<to>/."
