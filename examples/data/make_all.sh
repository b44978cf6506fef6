#!/usr/bin/env bash
# Regenerate the three example datasets (shipped in the repo; this is how they were made).
# Sizes are arguments of each script: e.g. --n 129 --steps 49 for GPU benchmarks.
set -euo pipefail
cd "$(dirname "$0")"
ROOT=../..
PY=$ROOT/.venv/bin/python
$PY tornado/generate_tornado.py "$@"
$PY taylor_green/generate_taylor_green.py
# PhiFlow lives in its own venv: it may pull numpy 2, which must not enter the project's venv.
if [ ! -x $ROOT/.venv-data/bin/python ]; then
  python3 -m venv $ROOT/.venv-data
  $ROOT/.venv-data/bin/pip install -q -r requirements-gen.txt
fi
$ROOT/.venv-data/bin/python plume/generate_plume.py simulate --out /tmp/plume.npz
$PY plume/generate_plume.py write /tmp/plume.npz
