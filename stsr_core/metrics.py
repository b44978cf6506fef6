"""Scores in physical units, with the reference's PSNR formula per timestep:
``20 log10(max(GT_t) - min(GT_t)) - 10 log10(MSE_t)``."""
from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from .errors import StsrError
from .series import VolumeSeries


def psnr(pred: np.ndarray, ref: np.ndarray) -> float:
    """PSNR of one timestep. The formula needs the reference's range: for a constant
    reference timestep (e.g. a velocity component that is zero at t = 0) PSNR is undefined
    and NaN is returned, for every method alike, so means skip that step (the max abs error
    still covers it). A perfect match of a non-constant step gives inf."""
    ref = np.asarray(ref, dtype=np.float64)
    mse = float(np.mean((np.asarray(pred, dtype=np.float64) - ref) ** 2))
    peak = float(ref.max() - ref.min())
    if peak <= 0:
        return math.nan
    if mse == 0:
        return math.inf
    return 20 * math.log10(peak) - 10 * math.log10(mse)


def _mean(values: Sequence[float]) -> float:
    """Mean of the defined values (NaN: constant reference step, see :func:`psnr`)."""
    v = [x for x in values if not math.isnan(x)]
    return float(np.mean(v)) if v else float("nan")


def evaluate(pred: VolumeSeries, ref: VolumeSeries,
             kept_times: Optional[Sequence[float]] = None) -> Dict[str, Any]:
    """PSNR per variable and timestep, means, max abs error; with ``kept_times`` (the times of
    the training input) also the means over kept and in-between steps."""
    diffs = pred.same_grid(ref)
    if diffs:
        raise StsrError(f"prediction{pred.where()} and reference{ref.where()} differ: "
                        + "; ".join(diffs))
    missing = [n for n in ref.variables if n not in pred.variables]
    if missing:
        raise StsrError(f"the prediction{pred.where()} lacks array(s) {missing} of the "
                        f"reference; it has {pred.names}")
    kept_mask = None
    if kept_times is not None:
        kt = np.asarray(list(kept_times), dtype=np.float64)
        tol = 1e-6 * max(1.0, float(np.abs(ref.times).max()))
        kept_mask = [bool(np.any(np.abs(kt - t) <= tol)) for t in ref.times]
    per_var: Dict[str, Any] = {}
    for n, gt in ref.variables.items():
        p = pred.variables[n]
        steps = [psnr(p[t], gt[t]) for t in range(ref.n_times)]
        entry = {"psnr_per_step": steps, "psnr_mean": _mean(steps),
                 "mse_mean": float(np.mean((p.astype(np.float64) - gt) ** 2)),
                 "max_abs_error": float(np.max(np.abs(p.astype(np.float64) - gt)))}
        if kept_mask is not None:
            entry["psnr_kept"] = _mean([s for s, k in zip(steps, kept_mask) if k])
            entry["psnr_between"] = _mean([s for s, k in zip(steps, kept_mask) if not k])
        per_var[n] = entry
    per_step = [_mean([v["psnr_per_step"][t] for v in per_var.values()])
                for t in range(ref.n_times)]
    result: Dict[str, Any] = {
        "times": [float(t) for t in ref.times], "variables": per_var,
        "psnr_per_step": per_step, "psnr_mean": _mean([v["psnr_mean"] for v in per_var.values()]),
    }
    if kept_mask is not None:
        result["kept"] = kept_mask
        result["psnr_kept"] = _mean([v["psnr_kept"] for v in per_var.values()])
        result["psnr_between"] = _mean([v["psnr_between"] for v in per_var.values()])
    return result


def format_report(result: Dict[str, Any]) -> str:
    has_kept = "psnr_kept" in result
    head = f"{'variable':<20s} {'PSNR mean':>10s}"
    if has_kept:
        head += f" {'kept':>8s} {'between':>8s}"
    head += f" {'max |err|':>12s}"
    lines: List[str] = [head, "-" * len(head)]
    for n, v in result["variables"].items():
        line = f"{n:<20s} {v['psnr_mean']:>10.2f}"
        if has_kept:
            line += f" {v['psnr_kept']:>8.2f} {v['psnr_between']:>8.2f}"
        lines.append(line + f" {v['max_abs_error']:>12.4g}")
    line = f"{'mean':<20s} {result['psnr_mean']:>10.2f}"
    if has_kept:
        line += f" {result['psnr_kept']:>8.2f} {result['psnr_between']:>8.2f}"
    lines += ["-" * len(head), line]
    return "\n".join(lines)
