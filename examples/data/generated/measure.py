"""How hard a series is in time: the in-between PSNR of plain linear interpolation of every
k-th step (at the fine grid, the baseline ParaView's TemporalInterpolator gives), and how
far features move between kept steps. Used by the README's figures and by the tests."""
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


def block_shifts(a: np.ndarray, b: np.ndarray, block: int = 24, reach: int = 12,
                 structure: float = 0.02) -> np.ndarray:
    """For blocks of ``block``^3 points of ``b`` [Z, Y, X] (a stride of half a block), the
    integer move (dz, dy, dx) within +-``reach`` from ``a`` to ``b``: the block is found in
    ``a`` at minus that offset (least squared difference, by FFT correlation). Blocks whose
    values span less than ``structure`` of b's range are skipped. Returns [blocks, 3] in
    cells."""
    from numpy.fft import irfftn, rfftn
    a = a.astype(np.float64)
    b = b.astype(np.float64)
    span = float(b.max() - b.min()) or 1.0
    region = block + 2 * reach
    pad = np.pad(a, reach, mode="edge")
    starts = [range(0, max(1, n - block + 1), block // 2) for n in b.shape]
    out = []
    for z in starts[0]:
        for y in starts[1]:
            for x in starts[2]:
                tile = b[z:z + block, y:y + block, x:x + block]
                if tile.max() - tile.min() < structure * span:
                    continue
                reg = pad[z:z + region, y:y + region, x:x + region]
                kernel = np.zeros(reg.shape)
                kernel[:block, :block, :block] = tile[::-1, ::-1, ::-1]
                box = np.zeros(reg.shape)
                box[:block, :block, :block] = 1.0
                f = rfftn(reg)
                corr = irfftn(f * rfftn(kernel), reg.shape)
                energy = irfftn(rfftn(reg * reg) * rfftn(box), reg.shape)
                # the valid part: shift s in [0, 2 reach] per axis (region offset s)
                sl = (slice(block - 1, block + 2 * reach),) * 3
                ssd = energy[sl] - 2 * corr[sl]
                best = np.unravel_index(np.argmin(ssd), ssd.shape)
                out.append(reach - np.array(best))
    return np.array(out).reshape(-1, 3)


def motion_per_interval(series: VolumeSeries, name: str, k: int = 4, block: int = 24,
                        reach: int = 12) -> Dict[str, float]:
    """How far the features of ``name`` move between kept steps (every ``k``-th): the
    best-matching integer shift of blocks of step j+k in step j (:func:`block_shifts`),
    its length in cells, median and 90th percentile over blocks and intervals. Rotation and
    deformation inside a block are not shifts: a rough figure, exact for translation."""
    a = series.variables[name]
    lengths = []
    for j in range(0, series.n_times - k, k):
        s = block_shifts(a[j], a[j + k], block, reach)
        lengths.extend(np.linalg.norm(s, axis=1).tolist())
    if not lengths:
        return {"median": float("nan"), "p90": float("nan")}
    return {"median": float(np.median(lengths)), "p90": float(np.percentile(lengths, 90))}
