#!/bin/bash
# Case C (issue 29): fit the 257^3 x 9 x 5 tornado with the defaults, then the engine alone at
# 513^3 x 3 times (default budget, then 1GB), each under GNU time for its peak RSS.
set -x
cd /work/main
source .venv/bin/activate
W=/work/scratch/coord/caseC
uptime
/usr/bin/time -v python -m stsr_core.cli fit /work/scratch/i29-fit/caseC/coarse.h5 -o $W/m.stsr --overwrite > $W/fit.log 2>&1
uptime
python -m stsr_core.cli info $W/m.stsr > $W/info.txt 2>&1
python -c "import h5py;f=h5py.File('/work/scratch/i29-fit/caseC/coarse.h5');print(list(f.attrs.items())[:10]); f.visit(print)" > $W/coarse.txt 2>&1
for mm in default 1GB; do
  uptime
  /usr/bin/time -v python -m bench.slab_scale --child-compute $W/m.stsr 513 25,50,75 $mm > $W/up513-$mm.log 2>&1
done
uptime
