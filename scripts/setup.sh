#!/usr/bin/env bash
# One-command set-up on a fresh Debian 12 or Debian 13 machine (run as root or with sudo
# available): ParaView (5.11 / 5.13), Xvfb, MPI, h5py and numpy from Debian, a .venv that sees
# them, this project and torch (Debian 12: the CPU wheel on disk; Debian 13: from PyPI).
set -euo pipefail
cd "$(dirname "$0")/.."

# python3-setuptools and python3-wheel build this package without fetching a build
# environment (Python 3.12+ venvs no longer bring setuptools); openmpi-bin is only a
# recommendation of Debian 13's ParaView, and pvbatch under mpiexec is tested
APT_PACKAGES="paraview python3-paraview xvfb xauth libgl1-mesa-dri python3-venv python3-h5py \
python3-netcdf4 python3-lz4 python3-scipy python3-matplotlib python3-tqdm python3-setuptools \
python3-wheel openmpi-bin cmake make"

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
# torch 2.13.0: on Debian 12 (Python 3.11) a CPU wheel is on disk here; elsewhere (Debian 13,
# Python 3.13) pip takes PyPI's build (CUDA, 4.6 GB). Plain 'torch' would pull the newest.
$PY -c "import torch" 2>/dev/null || $PY -m pip install -q "torch==2.13.0"
# numpy stays Debian's (1.24 on Debian 12, 2.2 on Debian 13): Debian's h5py, netCDF4, SciPy
# and Matplotlib are compiled against it (on Debian 12 each fails to import beside numpy 2),
# so pip may not replace it; a dependency that needs another numpy fails here, not later.
# h5py and netCDF4 come from Debian too (the PyPI wheels bundle an HDF5 that clashes with
# ParaView's inside pvpython; Debian's link the same HDF5 as ParaView).
# numba 0.68.0 (the compiled kernels): on Debian 12 the wheel on disk here (pip would take a
# newer one from PyPI if allowed), on Debian 13 PyPI's for Python 3.13; it takes numpy 1.24
# and 2.2 alike.
NUMPY=$(/usr/bin/python3 -c "import numpy; print(numpy.__version__)")
$PY -m pip install -q --no-build-isolation -e . "numpy==$NUMPY" "numba==0.68.0" pytest hypothesis

# PyVista for notebook users' in-memory path (tests, examples/pyvista_notebook.py), beside the
# venv and not in it: installed without its dependencies it runs on ParaView's VTK 9.2, while
# the PyPI vtk it would pull must never shadow ParaView's in the venv pvpython uses.
# pyvista 0.44.2 is tested with VTK 9.2 (0.49 asks for VTK >= 9.3.1).
[ -d .pyvista-site/pyvista ] || $PY -m pip install -q --no-deps --target .pyvista-site \
  "pyvista==0.44.2" "scooby>=0.5.1"

# ParaView 5.11 + Python 3.11: inspect.getargspec is gone and ParaView's loader needs it;
# the shim goes into the venv there only (ParaView 5.12 and later do without).
SITE=$($PY -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
rm -f "$SITE/stsr_getargspec_shim.py" "$SITE/stsr_getargspec_shim.pth"
if $PY scripts/pvsite/stsr_getargspec_shim.py; then
  cp scripts/pvsite/stsr_getargspec_shim.py "$SITE/stsr_getargspec_shim.py"
  echo "import stsr_getargspec_shim" > "$SITE/stsr_getargspec_shim.pth"
fi

$PY -c "import torch, numba, numpy, stsr_core, vtkmodules, h5py, netCDF4, lz4.block, sys; \
print('[setup] ok: Python', sys.version.split()[0], 'numpy', numpy.__version__, 'torch', \
torch.__version__, 'numba', numba.__version__, 'stsr_core', stsr_core.__version__)"
