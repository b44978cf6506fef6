"""What an output of a model is: its grid (a scale or point counts over the data's bounds),
its times (a time scale or a list), the box of it one process computes (an extent), and the
arrays it holds (the variables, and the error estimate's)."""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from .errors import StsrError
from .grid import Grid
from .trained import ModelInfo, TrainedModel


def output_grid(grid_in: Grid, scale: Optional[float] = None,
                dims: Optional[Sequence[int]] = None) -> Grid:
    """The output grid over ``grid_in``'s bounds, as ParaView's ResampleToImage makes it: a
    scale s gives ``(dims_in - 1) * s + 1`` points per axis and spacing ``spacing_in / s``;
    ``dims`` sets the point counts directly."""
    if scale is not None and dims is not None:
        raise StsrError("give either a spatial scale or output dimensions, not both")
    if dims is not None:
        return grid_in.resampled(dims)
    return grid_in.scaled(1.0 if scale is None else scale)


def output_times(times_in: Sequence[float], time_scale: Optional[int] = None,
                 times: Optional[Sequence[float]] = None) -> np.ndarray:
    """The input times ``times_in`` with ``time_scale - 1`` evenly spaced steps inserted between each
    consecutive pair, or an explicit list."""
    if time_scale is not None and times is not None:
        raise StsrError("give either a time scale or a list of times, not both")
    t_in = np.asarray(list(times_in), dtype=np.float64)
    if times is not None:
        out = np.asarray(list(times), dtype=np.float64)
        if out.size == 0 or not np.all(np.isfinite(out)):
            raise StsrError(f"times must be a non-empty list of finite numbers, got {list(out)}")
        if len(t_in) == 1 and np.any(np.abs(out - t_in[0]) > 1e-12 * max(1, abs(t_in[0]))):
            raise StsrError(f"the model was trained on a single timestep ({t_in[0]:g}): it is "
                            "spatial only and cannot answer other times")
        return out
    k = 1 if time_scale is None else int(time_scale)
    if k < 1 or (time_scale is not None and k != time_scale):
        raise StsrError(f"time scale must be an integer >= 1, got {time_scale}")
    if k > 1 and len(t_in) == 1:
        raise StsrError("the model was trained on a single timestep: it is spatial only, so "
                        "a time scale > 1 has no in-between steps to make")
    if k == 1:
        return t_in.copy()
    pieces = [t_in[i] + (t_in[i + 1] - t_in[i]) * np.arange(k) / k for i in range(len(t_in) - 1)]
    return np.concatenate(pieces + [t_in[-1:]])


Extent = Tuple[int, int, int, int, int, int]


def check_extent(grid: Grid, extent: Optional[Sequence[int]]) -> Extent:
    """``extent`` (x0, x1, y0, y1, z0, z1: inclusive point indices, as VTK writes them) as a
    tuple inside ``grid``; None: the whole grid. A non-empty box is required."""
    whole = (0, grid.dims[0] - 1, 0, grid.dims[1] - 1, 0, grid.dims[2] - 1)
    if extent is None:
        return whole
    ext = tuple(int(v) for v in extent)
    if len(ext) != 6 or any(ext[2 * a] < 0 or ext[2 * a] > ext[2 * a + 1]
                            or ext[2 * a + 1] >= grid.dims[a] for a in range(3)):
        raise StsrError(f"extent {list(extent)} is not a non-empty box inside the grid's "
                        f"{list(whole)}")
    return ext  # type: ignore[return-value]


def sub_grid(grid: Grid, extent: Sequence[int]) -> Grid:
    """The points of ``grid`` inside ``extent`` (inclusive indices) as a grid of their own."""
    return Grid([extent[2 * a + 1] - extent[2 * a] + 1 for a in range(3)],
                [o + extent[2 * a] * sp for a, (o, sp) in enumerate(zip(grid.origin,
                                                                       grid.spacing))],
                grid.spacing)


def error_names(info: ModelInfo) -> Tuple[List[str], Dict[str, List[str]]]:
    """The error estimate's arrays: ``<name>_error`` per variable, and vectors' components
    grouped as ``<vector>_error`` (ParaView shows them as one vector array)."""
    names = [f"{n}_error" for n in info.variables]
    comps = {f"{k}_error": [f"{p}_error" for p in v] for k, v in info.components.items()}
    return names, comps


def has_error_estimate(tm: TrainedModel) -> bool:
    """Whether the model has an error estimate: a learned correction's, or the fast base's
    own (every fit of the base alone since issue 25; not with a network on top, whose
    values the base's estimate does not describe)."""
    if getattr(tm.model, "correction", None) is not None:
        return True
    base = getattr(tm.model, "base", None)
    return (base is not None and not getattr(tm.model, "has_network", True)
            and base.has_error_estimate())


def output_arrays(tm: TrainedModel, error: bool) -> Tuple[List[str], Dict[str, List[str]]]:
    """The scalar arrays an output of ``tm`` holds and how they group into vectors: the
    variables, and with ``error`` (when the model has an estimate) their error arrays."""
    names = list(tm.info.variables)
    comps = {k: list(v) for k, v in tm.info.components.items()}
    if error and has_error_estimate(tm):
        e_names, e_comps = error_names(tm.info)
        names, comps = names + e_names, {**comps, **e_comps}
    return names, comps
