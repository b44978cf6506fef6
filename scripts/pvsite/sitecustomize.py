"""Put on PYTHONPATH for pvpython, pvbatch and the paraview GUI (scripts/stsr-paraview does):

* ParaView 5.11 + Python 3.11: ParaView's plugin loader imports ``inspect.getargspec``,
  removed in 3.11 -- alias it before any plugin loads, there only (stsr_getargspec_shim);
* make the project's venv (torch) and the repository (stsr_core) importable;
* chain to Debian's own sitecustomize so nothing it does is lost.
"""
import os
import site
import sys

import stsr_getargspec_shim  # noqa: F401 - aliases getargspec where ParaView 5.11 needs it

_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_VENV_SITE = os.path.join(_ROOT, ".venv", "lib",
                          f"python{sys.version_info[0]}.{sys.version_info[1]}", "site-packages")
if os.path.isdir(_VENV_SITE) and _VENV_SITE not in sys.path:
    # in front of Debian's dist-packages: torch needs the venv's sympy, not Debian's older one
    _before = list(sys.path)
    site.addsitedir(_VENV_SITE)       # processes .pth files (editable install, shim)
    sys.path[:] = [p for p in sys.path if p not in _before] + _before
if _ROOT not in sys.path:
    sys.path.append(_ROOT)

_DEBIAN = "/etc/python3.{}/sitecustomize.py".format(sys.version_info[1])
if os.path.exists(_DEBIAN):
    with open(_DEBIAN) as _fh:
        exec(compile(_fh.read(), _DEBIAN, "exec"))
