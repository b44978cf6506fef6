#!/usr/bin/env bash
# One-command set-up on a fresh Debian 12 machine (run as root or with sudo available):
# ParaView 5.11 + Xvfb + h5py from Debian, a .venv that sees them, this project and torch.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES="paraview python3-paraview xvfb xauth libgl1-mesa-dri python3-venv python3-h5py \
python3-netcdf4 python3-lz4 python3-scipy python3-matplotlib python3-tqdm cmake make"

missing=""
for p in $APT_PACKAGES; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
  echo "[setup] installing Debian packages:$missing"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing
fi

# The venv must come from Debian's Python (ParaView's modules live there), not pyenv's.
if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c "import vtkmodules, h5py" 2>/dev/null; then
  echo "[setup] creating .venv from /usr/bin/python3 with system site-packages"
  rm -rf .venv
  /usr/bin/python3 -m venv --system-site-packages .venv
fi
PY=.venv/bin/python
# torch 2.13.0: a CPU wheel is on disk here; plain 'torch' would pull a multi-GB CUDA build.
$PY -c "import torch" 2>/dev/null || $PY -m pip install -q "torch==2.13.0"
# numpy must stay < 2 (ParaView's numpy_interface and Debian's matplotlib break with 2).
# h5py and netCDF4 come from Debian (the PyPI wheels bundle an HDF5 that clashes with
# ParaView's inside pvpython; Debian's link the same HDF5 1.10 as ParaView).
$PY -m pip install -q --no-build-isolation -e . "numpy<2" pytest hypothesis

# PyVista for notebook users' in-memory path (tests, examples/pyvista_notebook.py), beside the
# venv and not in it: installed without its dependencies it runs on ParaView's VTK 9.2, while
# the PyPI vtk it would pull must never shadow ParaView's in the venv pvpython uses.
# pyvista 0.44.2 is tested with VTK 9.2 (0.49 asks for VTK >= 9.3.1).
[ -d .pyvista-site/pyvista ] || $PY -m pip install -q --no-deps --target .pyvista-site \
  "pyvista==0.44.2" "scooby>=0.5.1"

# ParaView 5.11 + Python 3.11: inspect.getargspec is gone; ParaView's loader needs it.
SITE=$($PY -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
cp scripts/stsr_getargspec_shim.py "$SITE/stsr_getargspec_shim.py"
echo "import stsr_getargspec_shim" > "$SITE/stsr_getargspec_shim.pth"

$PY -c "import torch, numba, stsr_core, vtkmodules, h5py, netCDF4, lz4.block; print('[setup] ok: torch', torch.__version__, \
'stsr_core', stsr_core.__version__)"
