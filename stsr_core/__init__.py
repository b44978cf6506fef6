"""stsr_core: spatiotemporal super-resolution of multivariate time-varying volumes with
implicit neural representations (STSR-INR). Pure Python + PyTorch + numpy; no ParaView.

In memory (notebooks, scripts): ``model = stsr_core.fit(frames)`` with one
``pyvista.ImageData`` per timestep (or a path, or a :class:`VolumeSeries`), then
``model.predict(scale=2)``; see :mod:`stsr_core.inmemory`."""

__version__ = "0.1.0"

from .errors import StsrError  # noqa: E402
from .series import VolumeSeries  # noqa: E402

__all__ = ["StsrError", "VolumeSeries", "__version__", "fit", "load", "Model",
           "series_from_images", "images_from_series"]

# imported on first use: importing stsr_core (as the ParaView plugin does for its settings'
# choices) must not import torch
_LAZY = {"fit": "inmemory", "load": "inmemory", "Model": "inmemory",
         "series_from_images": "images", "images_from_series": "images"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'stsr_core' has no attribute '{name}'")
