"""ParaView 5.11's pythonalgorithm module imports ``inspect.getargspec``, which Python 3.11
removed (fixed in ParaView 5.12). Loaded from a .pth file so that every interpreter of the
venv -- and pvpython/pvbatch/paraview run with the venv's site-packages on PYTHONPATH -- has
it before ParaView's plugin loader runs."""
import inspect

if not hasattr(inspect, "getargspec"):
    inspect.getargspec = inspect.getfullargspec  # type: ignore[attr-defined]
