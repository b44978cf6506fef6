#!/bin/bash
# usage: bench.sh LABEL MODEL N BUDGET [trees...]; each tree: main or wt
source /work/main/.venv/bin/activate
label=$1; model=$2; n=$3; budget=$4; shift 4
for tree in "$@"; do
  dir=/work/main; [ $tree = wt ] && dir=/work/wt/i29-rate
  cd $dir
  l0=$(cut -d' ' -f1-3 /proc/loadavg)
  out=$(flock /tmp/stsr-bench.lock /usr/bin/time -v python -m bench.slab_scale --child-compute $model $n 25,50,75 $budget 2>&1)
  l1=$(cut -d' ' -f1-3 /proc/loadavg)
  cs=$(echo "$out" | grep -o '"compute_s": [0-9.]*' | cut -d' ' -f2)
  rows=$(echo "$out" | grep -o '"rows": [0-9]*' | cut -d' ' -f2)
  tile=$(echo "$out" | grep -o '"tile": [0-9a-z]*' | cut -d' ' -f2)
  rss=$(echo "$out" | grep "Maximum resident" | awk '{print $6}')
  rate=$(python -c "print(round($n**3*3*5/$cs/1e6,1))" 2>/dev/null)
  echo "$label $tree n=$n budget=$budget compute_s=$cs Mvp/s=$rate rss_GB=$(python -c "print(round($rss/1e6,2))") rows=$rows tile=$tile load_before=[$l0] load_after=[$l1] commit=$(git -C $dir rev-parse --short HEAD)"
done
