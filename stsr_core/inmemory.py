"""Fit and predict in memory, for notebooks and scripts: no files in between.

    import stsr_core
    model = stsr_core.fit(frames)            # frames: pyvista.ImageData per timestep
    fine = model.predict(scale=2, time_scale=2)    # a list of pyvista.ImageData

A thin front over :mod:`stsr_core.api` (the engine) and :mod:`stsr_core.images` (the
conversion): nothing here trains or evaluates by itself.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, List, Optional, Sequence

from . import api
from .config import DEFAULT_PRESET
from .errors import StsrError
from .grid import Grid
from .images import images_from_series, series_from_images
from .series import VolumeSeries


def as_series(data: Any, arrays: Optional[Sequence[str]] = None,
              times: Optional[Sequence[float]] = None) -> VolumeSeries:
    """What :func:`fit` accepts, as a series: a :class:`VolumeSeries`, a path any reader
    takes (.pvd, .nc, .h5, ...), or image-data objects (one, or one per timestep)."""
    if isinstance(data, (str, os.PathLike)):
        if times is not None:
            raise StsrError("times come from the file; times=... is for images")
        from .io import read_series
        return read_series(os.fspath(data), arrays)
    if isinstance(data, VolumeSeries):
        if times is not None:
            raise StsrError("a VolumeSeries has its times; times=... is for images")
        return data.select(arrays) if arrays else data
    return series_from_images(data, times=times, arrays=arrays)


@dataclass
class Model:
    """A fitted model. Attributes: ``trained``, the engine's model (for
    :mod:`stsr_core.api`)."""

    trained: api.TrainedModel

    @property
    def variables(self) -> List[str]:
        return list(self.trained.info.variables)

    @property
    def times(self) -> List[float]:
        """The times it was fitted on."""
        return list(self.trained.info.times)

    @property
    def grid(self) -> Grid:
        """The grid it was fitted on."""
        return self.trained.info.grid

    def predict_series(self, scale: Optional[float] = None, *,
                       dims: Optional[Sequence[int]] = None, time_scale: Optional[int] = None,
                       times: Optional[Sequence[float]] = None) -> VolumeSeries:
        """The model on a finer grid and/or at more times, as a :class:`VolumeSeries`
        (``scale``: (n - 1) * scale + 1 points per axis over the same bounds; ``dims``: point
        counts; ``time_scale``: k - 1 steps between fitted ones; ``times``: a list)."""
        return api.predict(self.trained, scale=scale, dims=dims, time_scale=time_scale,
                           times=times)

    def predict(self, scale: Optional[float] = None, *, dims: Optional[Sequence[int]] = None,
                time_scale: Optional[int] = None,
                times: Optional[Sequence[float]] = None) -> List[Any]:
        """As :meth:`predict_series`, as one ``pyvista.ImageData`` per output time (its time
        in the ``TimeValue`` field)."""
        return images_from_series(self.predict_series(scale, dims=dims, time_scale=time_scale,
                                                      times=times))

    def save(self, path: str) -> None:
        """A model file that ``stsr upscale``, the ParaView plugin and :func:`load` open."""
        api.save_model(self.trained, os.fspath(path), with_optimizer=False)


def fit(data: Any, preset: str = DEFAULT_PRESET, *, arrays: Optional[Sequence[str]] = None,
        times: Optional[Sequence[float]] = None, **options: Any) -> Model:
    """Fit a model of ``data`` (see :func:`as_series`). ``options`` are
    :func:`stsr_core.api.fit`'s: ``steps``, ``max_minutes``, ``device``, ``seed``,
    ``callback``, ``model_overrides``, ``train_overrides``."""
    return Model(api.fit(as_series(data, arrays, times), preset, **options))


def load(path: str, device: str = "auto") -> Model:
    """A model file written by ``stsr fit``, the plugin or :meth:`Model.save`."""
    return Model(api.load_model(os.fspath(path), device=device))
