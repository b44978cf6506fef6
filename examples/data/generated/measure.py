"""How hard a series is in time: the in-between PSNR of plain linear interpolation of every
k-th step (at the fine grid, the baseline ParaView's TemporalInterpolator gives), and how
far features move per step. Used by the README's figures and by the tests."""
from __future__ import annotations

from fractions import Fraction
from typing import Dict

import numpy as np

from stsr_core.metrics import psnr
from stsr_core.series import VolumeSeries


def linear_in_time_psnr(series: VolumeSeries, k: int = 4) -> Dict[str, Dict[str, float]]:
    """Per variable: mean PSNR (dB) of the steps between kept ones (every ``k``-th step kept,
    from step 0) rebuilt linearly in time from the kept steps, overall (``between``) and per
    phase of the interval (``"1/4"``, ``"1/2"``, ``"3/4"`` for k = 4). Kept steps are exact."""
    out: Dict[str, Dict[str, float]] = {}
    last = (series.n_times - 1) // k * k
    for name, a in series.variables.items():                    # [T, Z, Y, X]
        phases: Dict[str, list] = {}
        for t in range(last):
            j, r = divmod(t, k)
            if r == 0:
                continue
            u = r / k
            guess = (1 - u) * a[j * k].astype(np.float64) + u * a[j * k + k]
            phases.setdefault(str(Fraction(r, k)), []).append(psnr(guess, a[t]))
        row = {p: float(np.nanmean(v)) for p, v in phases.items()}
        row["between"] = float(np.nanmean([x for v in phases.values() for x in v]))
        out[name] = row
    return out


def normal_speed(series: VolumeSeries, name: str, top: float = 0.1) -> float:
    """Median speed (grid cells per step) of the level sets of ``name`` where they are
    steepest (the ``top`` fraction of |grad f| over space and time): |df/dt| / |grad f|, by
    central differences. The normal component only: a lower bound of how far features move."""
    a = series.variables[name].astype(np.float64)               # [T, Z, Y, X]
    ft = 0.5 * (a[2:] - a[:-2])                                 # per step
    mid = a[1:-1]
    grad = np.sqrt(sum(g * g for g in np.gradient(mid, axis=(1, 2, 3))))   # per cell
    cut = np.quantile(grad, 1 - top)
    sel = grad >= max(cut, 1e-12)
    return float(np.median(np.abs(ft[sel]) / grad[sel]))
