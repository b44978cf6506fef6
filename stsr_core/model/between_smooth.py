"""Trilinear between kept steps where it is closer to the truth (issue 30: never below
trilinear + linear in time).

Where motion is not followed (a variable the held-out steps keep still: a wake whose
vortices move half a shedding period per interval, a plume whose puffs move faster than the
half series shows), the step between two kept ones is their blend, and each kept step's
fine detail sits where the truth no longer has it. The smoother interpolation in space of
the two ends is then the closer one: on the solver plume (63^3 x 41, every 4th step kept)
trilinear + linear in time scored 0.25 dB above tricubic + linear between steps, at every
phase, while tricubic was 1 dB better on the kept steps themselves
(bench/results/2026-12-06/plume63-between).

So between kept steps the part that is not moved (its B-spline coefficients ``c``, the
weighted sum of the slots' rows, spline_base.still_rows) is blended from its cubic spline
towards the trilinear interpolation of its own values at the data's points:

    part(w) = S3(c) + s * 4 w (1 - w) * (S1(K c) - S3(c))

``K c`` (``[1, 4, 1] / 6`` along x, y and z) is the cubic spline's value at each data point,
so ``S1(K c)`` is trilinear interpolation of the (time-blended) data, and both agree at the
data's points: the blend only changes the values between them. The weight ``4 w (1 - w)``
is 0 at the kept steps (they keep the cubic spline) and 1 half-way, where the blend of the
two ends is furthest from either; ``s`` in [0, 1] per variable is the least-squares share on
the held-out steps of the half series (time_select.choose; they lie half-way between the
chain's steps). ``K`` runs on the coarse coefficient rows, and the trilinear filtering has 2
taps per axis: a still variable smoothed costs about a third more than one that is not.
"""
from __future__ import annotations

from typing import List, Sequence, Tuple

import torch
import torch.nn.functional as F

from .grid_plan import linear_matrix

SMOOTHINGS = ("auto", "off")     # between_smoothing: chosen on the held-out steps, or never


def weight(w: float) -> float:
    """The blend's weight at fraction ``w`` of an interval: 0 at the kept steps, 1 half-way."""
    return 4.0 * w * (1.0 - w)


def rows_with_halo(lo: int, hi: int, n: int) -> Tuple[int, int]:
    """The coefficient rows [lo', hi') that the values at rows [lo, hi) read: one more on
    each side where there is one."""
    return max(0, lo - 1), min(n, hi + 1)


def smooth_axis(a: torch.Tensor, dim: int) -> torch.Tensor:
    """``a`` filtered by [1, 4, 1] / 6 along ``dim``, the end values repeated past the ends
    (only the padding's rows read them) -> a new tensor of ``a``'s shape."""
    n = a.shape[dim]
    out = a * 4.0
    if n == 1:
        return out.add_(a, alpha=2.0).div_(6.0)
    out.narrow(dim, 1, n - 1).add_(a.narrow(dim, 0, n - 1))
    out.narrow(dim, 0, 1).add_(a.narrow(dim, 0, 1))
    out.narrow(dim, 0, n - 1).add_(a.narrow(dim, 1, n - 1))
    out.narrow(dim, n - 1, 1).add_(a.narrow(dim, n - 1, 1))
    return out.div_(6.0)


def node_values(coef: torch.Tensor) -> torch.Tensor:
    """Padded cubic B-spline coefficients [C, Z+2, Y+2, X+2] (or a run of their z rows) ->
    the spline's values at the data's points, at the same padded positions (``K c``)."""
    return smooth_axis(smooth_axis(smooth_axis(coef, 3), 2), 1)


def padded_linear(local: torch.Tensor, n: int) -> torch.Tensor:
    """[m, n + 2]: linear interpolation between an axis' ``n`` data points at local
    coordinates ``local`` [m], on the padded coefficients' columns (data point i is column
    i + 1; the padding's columns get no weight)."""
    return F.pad(linear_matrix(local, n), (1, 1))


def plan_matrices(axes: Sequence[torch.Tensor], dims: Sequence[int]) -> List[torch.Tensor]:
    """:func:`padded_linear` per axis (x, y, z) of a planned grid's local ``axes``."""
    return [padded_linear(a, int(n)) for a, n in zip(axes, dims)]


def at_points(coef: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """The trilinear interpolation of ``coef``'s [V, Z+2, Y+2, X+2] values at the data's
    points at local points ``p`` [N, 3] -> [N, V] (as :func:`plan_matrices` weighs them)."""
    values = node_values(coef)[:, 1:-1, 1:-1, 1:-1]
    return F.grid_sample(values[None], p.view(1, 1, 1, -1, 3).to(values), align_corners=True,
                         padding_mode="border")[0, :, 0, 0].t()
