#!/usr/bin/env bash
# kill -9 of upstep at random points during an upgrade, then a rerun, ROUNDS times (default 100):
# prints the double runs (a step started again after it succeeded), the lost journal rows (a
# script run the journal does not show, or a step not succeeded after the rerun) and the orphans
# (processes of a script's group alive 5 s after upstep died). All must be 0.
#   scripts/bench-kill9.sh [ROUNDS]
# It is the CI test `kill_9_at_random_points_then_a_rerun_never_repeats_a_succeeded_step` with
# more rounds; the test tools come from scripts/test.sh's install (see tests/it/support).
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-100}
UPSTEP_KILL_ITERATIONS=$rounds cargo test --quiet --test it \
  upgrade::kill_9_at_random_points_then_a_rerun_never_repeats_a_succeeded_step \
  -- --exact --nocapture 2>&1 | grep -E "^kill -9 trials|panicked|FAILED|test result"
