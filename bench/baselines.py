"""What users already have: interpolation of the coarse series back to the fine grid and
times. Trilinear in space + linear in time is ParaView's path (Resample To Image + Temporal
Interpolator); tricubic + cubic is the strongest classical baseline here (SciPy)."""
from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy.interpolate import CubicSpline
from scipy.ndimage import map_coordinates

from stsr_core.series import VolumeSeries


def _space(coarse: VolumeSeries, fine_dims: Sequence[int], fine_origin, fine_spacing,
           order: int) -> dict:
    """Every coarse timestep resampled onto the fine grid (points given in coarse index
    space), spline order 1 (trilinear) or 3 (tricubic)."""
    axes = []
    for a in (2, 1, 0):  # z, y, x
        n = fine_dims[a]
        phys = fine_origin[a] + np.arange(n) * fine_spacing[a]
        axes.append((phys - coarse.origin[a]) / coarse.spacing[a])
    zz, yy, xx = np.meshgrid(*axes, indexing="ij")
    coords = np.stack([zz, yy, xx])
    out = {}
    for name, arr in coarse.variables.items():
        out[name] = np.stack([
            map_coordinates(arr[t].astype(np.float64), coords, order=order, mode="nearest",
                            prefilter=order > 1)
            for t in range(coarse.n_times)]).astype(np.float32)
    return out


def interpolate(coarse: VolumeSeries, fine: VolumeSeries, order: int) -> VolumeSeries:
    """order 1: trilinear + linear in time; order 3: tricubic + cubic spline in time."""
    spatial = _space(coarse, fine.dims, fine.origin, fine.spacing, order)
    tc, tf = coarse.times, fine.times
    out = {}
    for name, arr in spatial.items():
        if coarse.n_times == 1:
            out[name] = np.repeat(arr, fine.n_times, axis=0)
        elif order == 1 or coarse.n_times < 4:
            j = np.clip(np.searchsorted(tc, tf, side="right") - 1, 0, len(tc) - 2)
            w = ((tf - tc[j]) / (tc[j + 1] - tc[j]))[:, None, None, None].astype(np.float32)
            out[name] = (1 - w) * arr[j] + w * arr[j + 1]
        else:
            out[name] = CubicSpline(tc, arr, axis=0)(tf).astype(np.float32)
    return VolumeSeries(times=fine.times.copy(), variables=out, origin=fine.origin,
                        spacing=fine.spacing, components=dict(fine.components))
