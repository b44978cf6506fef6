#!/bin/bash
# Cases A and B: the default fit, then the default upscale (.h5, error arrays) of a few
# in-between and kept steps, peak RSS from GNU time; the load beside each.
set -u
W=/work/scratch/i29-speed/caseAB
PY=/work/wt/i29-speed/.venv/bin/python
cd /work/wt/i29-speed
for c in ${CASES:-A B}; do
  mkdir -p $W/$c
  echo "== case $c $(date -u +%H:%M:%S) load $(cut -d' ' -f1-3 /proc/loadavg)"
  [ -e $W/$c/coarse.h5/coarse.h5 ] || $PY examples/data/scale/generate.py --case $c --out $W/$c/coarse.h5 > $W/$c/gen.log 2>&1
  [ -e $W/$c/m.stsr ] || /usr/bin/time -f "fit $c wall %e s maxrss %M KB" $PY -m stsr_core.cli fit $W/$c/coarse.h5/coarse.h5 -o $W/$c/m.stsr --quiet 2>&1 | tail -2
  echo "upscale $c $(date -u +%H:%M:%S) load $(cut -d' ' -f1-3 /proc/loadavg)"
  rm -rf $W/$c/up
  if [ $c = A ]; then S=2; T=22,23,24,25,26; else S=4; T=8,9,10; fi
  /usr/bin/time -f "upscale $c wall %e s user %U sys %S maxrss %M KB" $PY -m stsr_core.cli upscale $W/$c/m.stsr -o $W/$c/up/out.h5 --scale $S --times $T --quiet --timings $W/$c/timings.json 2>&1 | tail -3
  echo "after $c $(date -u +%H:%M:%S) load $(cut -d' ' -f1-3 /proc/loadavg)"
  cat $W/$c/timings.json | head -30
  rm -rf $W/$c/up
done
