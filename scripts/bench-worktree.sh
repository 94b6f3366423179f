#!/usr/bin/env bash
# Benchmark: switching an upstep worktree between two tags vs `git checkout` in a plain clone.
#
# Builds (in a temp dir) a repository of about 5,000 files with two tags that differ in about
# 1,000 files, then times N alternating switches each way (in ROUNDS alternating rounds) and
# prints both total times and the ratio upstep/git (target: <= 1.0).
#
# Usage: scripts/bench-worktree.sh [N] [ROUNDS]   (default 10 switches, 3 rounds)
# upstep's time is measured in-process (library calls); git's includes starting one `git`
# process per checkout, a few milliseconds each.
set -euo pipefail

switches="${1:-10}"
rounds="${2:-3}"
# An even number of switches brings both back to vA, ready for the next round.
(( switches % 2 == 0 )) || switches=$(( switches + 1 ))
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
work="$(mktemp -d "${TMPDIR:-/tmp}/upstep-bench.XXXXXX")"
trap 'rm -rf "$work"' EXIT

export GIT_AUTHOR_NAME=bench GIT_AUTHOR_EMAIL=bench@example.com
export GIT_COMMITTER_NAME=bench GIT_COMMITTER_EMAIL=bench@example.com

echo "building the example (release)..." >&2
cargo build --quiet --release --example worktree_bench --manifest-path "$here/Cargo.toml"
bench_bin="${CARGO_TARGET_DIR:-$here/target}/release/examples/worktree_bench"

echo "building a repository of 5,000 files..." >&2
repo="$work/repo"
git init -q -b main "$repo"
for d in $(seq -f '%02g' 0 49); do
  mkdir -p "$repo/src/d$d"
  for f in $(seq -f '%02g' 0 99); do
    # About 1 KiB per file, different in every file.
    printf 'file %s/%s\n%01024d\n' "$d" "$f" 0 > "$repo/src/d$d/f$f.txt"
  done
done
git -C "$repo" add -A
git -C "$repo" commit -q -m "release A"
git -C "$repo" tag -a vA -m A
# 1,000 changed files: every file of the first ten folders.
for d in $(seq -f '%02g' 0 9); do
  for f in $(seq -f '%02g' 0 99); do
    printf 'changed in B\n' >> "$repo/src/d$d/f$f.txt"
  done
done
git -C "$repo" commit -q -a -m "release B"
git -C "$repo" tag -a vB -m B

# Both sides get their first checkout now, untimed, so their files are equally fresh.
echo "creating the upstep worktree and a plain clone at vA..." >&2
"$bench_bin" "$repo" "$work/cache" vA vB 0 > /dev/null
git clone -q --no-checkout "$repo" "$work/plain"
git -C "$work/plain" checkout -q vA

time_git() {
  local start end i tag
  start="$(date +%s.%N)"
  for i in $(seq 1 "$switches"); do
    if (( i % 2 == 1 )); then tag=vB; else tag=vA; fi
    git -C "$work/plain" checkout -q "$tag"
  done
  end="$(date +%s.%N)"
  awk -v s="$start" -v e="$end" 'BEGIN { printf "%.3f", e - s }'
}

# Rounds alternate between the two so that load from other processes hits both alike.
upstep_secs=0
git_secs=0
for round in $(seq 1 "$rounds"); do
  echo "round $round: $switches switches with upstep, then with git..." >&2
  u="$("$bench_bin" "$repo" "$work/cache" vA vB "$switches")"
  g="$(time_git)"
  echo "  upstep ${u}s, git ${g}s" >&2
  upstep_secs="$(awk -v a="$upstep_secs" -v b="$u" 'BEGIN { printf "%.3f", a + b }')"
  git_secs="$(awk -v a="$git_secs" -v b="$g" 'BEGIN { printf "%.3f", a + b }')"
done

ratio="$(awk -v u="$upstep_secs" -v g="$git_secs" 'BEGIN { printf "%.2f", u / g }')"
echo "files: 5000, changed between tags: 1000, switches: $switches x $rounds rounds"
echo "upstep: ${upstep_secs}s"
echo "git:    ${git_secs}s"
echo "ratio upstep/git: $ratio (target <= 1.0)"
