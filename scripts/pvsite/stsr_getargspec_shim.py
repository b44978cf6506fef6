"""ParaView 5.11's Python-algorithm module (``paraview/detail/pythonalgorithm.py``) imports
``inspect.getargspec``, which Python 3.11 removed; ParaView 5.12 and later no longer use it.
Where both meet (Debian 12's ParaView 5.11 on Python 3.11) this aliases it to
``getfullargspec`` before ParaView's plugin loader runs; anywhere else it changes nothing.

Imported from a ``.pth`` file in the venv (scripts/setup.sh installs it only where it is
needed) and from scripts/pvsite/sitecustomize.py (pvpython, pvbatch and paraview started by
scripts/stsr-paraview). ``python stsr_getargspec_shim.py`` exits 0 where it is needed."""
import importlib.util
import inspect
import os
import sys


def needed() -> bool:
    """True when this Python lacks getargspec and the ParaView it sees imports it (read from
    the file: importing ParaView here would be slow and could fail outside ParaView)."""
    if hasattr(inspect, "getargspec"):
        return False
    try:
        spec = importlib.util.find_spec("paraview")       # finds it, runs none of it
    except (ImportError, ValueError):
        return False
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = os.path.join(folder, "detail", "pythonalgorithm.py")
        try:
            with open(path, encoding="utf-8") as fh:
                if "getargspec(" in fh.read():
                    return True
        except OSError:
            continue
    return False


if __name__ == "__main__":
    sys.exit(0 if needed() else 1)
elif needed():
    inspect.getargspec = inspect.getfullargspec  # type: ignore[attr-defined]
