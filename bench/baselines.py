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


def interpolate(coarse: VolumeSeries, fine: VolumeSeries, order: int,
                linear_time: bool = False) -> VolumeSeries:
    """order 1: trilinear + linear in time; order 3: tricubic + cubic spline in time
    (``linear_time``: tricubic + linear in time)."""
    spatial = _space(coarse, fine.dims, fine.origin, fine.spacing, order)
    tc, tf = coarse.times, fine.times
    out = {}
    for name, arr in spatial.items():
        if coarse.n_times == 1:
            out[name] = np.repeat(arr, fine.n_times, axis=0)
        elif order == 1 or linear_time or coarse.n_times < 4:
            j = np.clip(np.searchsorted(tc, tf, side="right") - 1, 0, len(tc) - 2)
            w = ((tf - tc[j]) / (tc[j + 1] - tc[j]))[:, None, None, None].astype(np.float32)
            out[name] = (1 - w) * arr[j] + w * arr[j + 1]
        else:
            out[name] = CubicSpline(tc, arr, axis=0)(tf).astype(np.float32)
    return VolumeSeries(times=fine.times.copy(), variables=out, origin=fine.origin,
                        spacing=fine.spacing, components=dict(fine.components))


# --- the same baselines one output step and one z-slab at a time (real-size grids) -------
def time_weights(tc: Sequence[float], tf: float, order: int) -> np.ndarray:
    """Weights w over the coarse steps with value(tf) = sum_j w_j value(tc_j): linear (order
    1, two neighbours) or the natural cubic spline through every coarse step (order 3, as
    :func:`interpolate`: a spline is linear in its data, so its weights are the spline of the
    identity). Fewer than 4 coarse steps fall back to linear, as :func:`interpolate` does."""
    tc = np.asarray(tc, dtype=np.float64)
    n = len(tc)
    w = np.zeros(n)
    if n == 1:
        w[0] = 1.0
    elif order == 1 or n < 4:
        j = int(np.clip(np.searchsorted(tc, tf, side="right") - 1, 0, n - 2))
        a = (tf - tc[j]) / (tc[j + 1] - tc[j])
        w[j], w[j + 1] = 1 - a, a
    else:
        w = CubicSpline(tc, np.eye(n), axis=0)(tf)
    return w


def combine_in_time(coarse_steps: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """sum_j w_j coarse[j] (float64 [Z, Y, X]); interpolating in time before space is exact
    since both are linear, and it leaves one coarse volume to resample per output step."""
    out = np.zeros(coarse_steps.shape[1:], dtype=np.float64)
    for j, w in enumerate(weights):
        if w != 0:
            out += w * coarse_steps[j]
    return out


NPAD = 12   # scipy's own padding before a spline prefilter with mode "nearest"


class SlabResampler:
    """One coarse volume resampled onto fine z-slabs (points given in coarse index space),
    trilinear (order 1) or tricubic (order 3) exactly as :func:`_space` does for the whole
    grid: the cubic prefilter runs once on the padded volume as map_coordinates would."""

    def __init__(self, volume: np.ndarray, order: int):
        self.order = order
        if order > 1:
            from scipy.ndimage import spline_filter
            padded = np.pad(volume.astype(np.float64), NPAD, mode="edge")
            self.data, self.shift = spline_filter(padded, order, output=np.float64,
                                                  mode="nearest"), float(NPAD)
        else:
            self.data, self.shift = volume.astype(np.float64), 0.0

    def slab(self, z: np.ndarray, y: np.ndarray, x: np.ndarray) -> np.ndarray:
        """float32 values at the outer product of coarse-index coordinates z, y, x."""
        zz, yy, xx = np.meshgrid(z + self.shift, y + self.shift, x + self.shift,
                                 indexing="ij")
        return map_coordinates(self.data, np.stack([zz, yy, xx]), order=self.order,
                               mode="nearest", prefilter=False).astype(np.float32)
