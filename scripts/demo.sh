#!/usr/bin/env bash
# The main job on a shipped example: coarsen a fine series the way a simulation would have
# saved it (every 2nd point, every 4th step), learn it, upscale back to the fine grid and
# every original step, score against the fine original, and draw a picture.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-examples/data/tornado/tornado.pvd}
OUT=${OUT:-demo-output}
MINUTES=${MINUTES:-1}
STSR=.venv/bin/stsr
mkdir -p "$OUT"
rm -rf "$OUT"/coarse* "$OUT"/upscaled* "$OUT"/model.stsr
$STSR coarsen "$DATA" -o "$OUT/coarse.pvd" --space 2 --time 4
$STSR fit "$OUT/coarse.pvd" -o "$OUT/model.stsr" --max-minutes "$MINUTES"
$STSR info "$OUT/model.stsr"
$STSR upscale "$OUT/model.stsr" -o "$OUT/upscaled.pvd" --scale 2 --time-scale 4
KEPT=$(.venv/bin/python -c "import sys; from stsr_core.io import read_series; \
print(','.join(repr(float(t)) for t in read_series(sys.argv[1]).times))" "$OUT/coarse.pvd")
$STSR eval "$OUT/upscaled.pvd" --reference "$DATA" --kept-times "$KEPT" --json "$OUT/eval.json"
.venv/bin/python scripts/demo_picture.py "$DATA" "$OUT/coarse.pvd" "$OUT/upscaled.pvd" \
    -o "$OUT/demo.png"
echo "demo: outputs in $OUT/ (upscaled.pvd opens in ParaView; picture: $OUT/demo.png)"
