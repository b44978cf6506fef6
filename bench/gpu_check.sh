#!/usr/bin/env bash
# The CUDA checks of issue 29, in under 5 minutes whenever a GPU is at hand:
#   bench/gpu_check.sh            the slab tests on CUDA, then the rates (bench/slab_rates.py)
#   bench/gpu_check.sh cpu        the same on the CPU (what a machine without a GPU can run)
# Results: bench/results/<date>-gpu-check/ (rates.json, rates.md).
set -euo pipefail
cd "$(dirname "$0")/.."
DEVICE=${1:-cuda}
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
OUT=bench/results/$(date +%F)-gpu-check
mkdir -p "$OUT"
if [ "$DEVICE" = cuda ]; then
  $PY -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device: run bench/gpu_check.sh cpu')"
  nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
fi
# the tests: slabs on the device equal the CPU kernels' numbers (2 minutes at most)
timeout 150 $PY -m pytest -q -p no:cacheprovider tests/test_slab_upscale.py -k "each_device and $DEVICE"
# the rates: upscale of a generated model at three output sizes, device and host clocks
timeout 140 $PY -m bench.slab_rates --device "$DEVICE" --sizes 129,257,385 --out "$OUT"
