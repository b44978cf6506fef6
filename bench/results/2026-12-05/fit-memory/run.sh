#!/bin/bash
# The fit's time and peak RSS on scale cases A and C, main (2e1fd8a, a copy of its tree in
# $BASE) against this branch, one after the other under the team's benchmark lock.
#   bash bench/results/2026-12-05/fit-memory/run.sh
# Case C's input: python -m bench.scale.case_c --out $DATA/caseC/coarse.h5
# Case A's input: python examples/data/scale/generate.py --case A --truth-steps none --out $DATA/caseA
set -e
cd "$(dirname "$0")/../../../.."
DATA=${DATA:-/work/scratch/i29-fit}
BASE=${BASE:-/work/scratch/i29-fit/base-src}
OUT=bench/results/2026-12-05/fit-memory/fit.json
M="flock /work/team/bench.lock .venv/bin/python -m bench.fit_memory"
$M $DATA/caseA/coarse.h5 --label main-2e1fd8a-caseA --src $BASE --out $OUT
$M $DATA/caseA/coarse.h5 --label streamed-caseA --out $OUT
# main on case C holds ~14 GB before it fails: run it only where the machine has room
[ -n "$WITH_MAIN_C" ] && $M $DATA/caseC/coarse.h5 --label main-2e1fd8a-caseC-limit16G \
    --limit-gb 16 --src $BASE --out $OUT
$M $DATA/caseC/coarse.h5 --label streamed-caseC --out $OUT
$M $DATA/caseC/coarse.h5 --label streamed-caseC-10min --max-minutes 10 --out $OUT
