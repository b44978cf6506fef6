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
weighted sum of the slots' rows, spline_base.still_rows) is evaluated with weights blended
per axis from the cubic B-spline's towards those of trilinear interpolation of the spline's
own values at the data's points (``K c``, ``K`` = [1, 4, 1] / 6 along the axis):

    P_a(beta) = (1 - beta) B3_a + beta L_a K_a,    beta = s * 4 w (1 - w)

on each axis a. ``L_a K_a`` reads the same 4 coefficients a row as ``B3_a``, so the blend
costs nothing over the cubic spline (one separable filtering with other weights); at beta =
1 it is trilinear interpolation of the data exactly, and for every beta it agrees with the
spline at the data's points (both interpolate them): only the values between the points
change. The weight ``4 w (1 - w)`` is 0 at the kept steps (they keep the cubic spline) and 1
half-way, where the blend of the two ends is furthest from either; ``s`` in [0, 2] per
variable is chosen one level down (time_select.TrilinearScores). Past 1 the blend goes
on past trilinear: weights smoother still between the data's points (non-negative up to 2),
which the kept steps' decorrelated detail can call for where the error in time dominates.
"""
from __future__ import annotations

from typing import List, Sequence, Tuple

import torch

from .grid_plan import spline_taps

SMOOTHINGS = ("auto", "off")     # between_smoothing: chosen one level down, or never
# the shares s scored (0: the cubic spline); past 1 the weights smooth more than trilinear
# between the data's points and stay non-negative up to 2 (exact at the points for any s):
# the solver plume (63^3 x 41) chose 1, the most there was, and gained 0.09 dB more at 2
SHARES = (0.25, 0.5, 0.75, 1.0, 1.5, 2.0)


def weight(w: float) -> float:
    """The blend's weight at fraction ``w`` of an interval: 0 at the kept steps, 1 half-way."""
    return 4.0 * w * (1.0 - w)


def _taps(local: torch.Tensor, n: int, beta: torch.Tensor
          ) -> Tuple[torch.Tensor, torch.Tensor]:
    """Per point of one axis (``local`` [m] in [-1, 1], ``n`` data points) its first padded
    coefficient column [m] and the 4 blended weights [m, 4] (float64) at ``beta`` ([m] or
    a scalar), on the cubic's columns (grid_plan.spline_taps)."""
    i, f, cubic = spline_taps(local, n)
    g = 1 - f                  # linear between the values at columns i and i + 1 of K c
    linear = torch.stack([g / 6, (4 * g + f) / 6, (g + 4 * f) / 6, f / 6], dim=1)
    b = torch.as_tensor(beta, dtype=torch.float64, device=local.device)
    b = b.view(-1, 1) if b.dim() else b
    return i - 1, cubic + b * (linear - cubic)


def blend_matrix(local: torch.Tensor, n: int, beta: float) -> torch.Tensor:
    """[m, n + 2]: ``P(beta)`` of one axis on the padded coefficients' columns (at beta = 0
    :func:`grid_plan.spline_matrix` itself)."""
    first, w = _taps(local, n, beta)
    cols = (first[:, None] + torch.arange(4, device=local.device)[None]).clamp(0, n + 1)
    out = torch.zeros(local.shape[0], n + 2, dtype=torch.float64, device=local.device)
    return out.scatter_add_(1, cols, w).to(torch.float32)


def axis_matrices(axes: Sequence[torch.Tensor], dims: Sequence[int], beta: float
                  ) -> List[torch.Tensor]:
    """:func:`blend_matrix` per axis (x, y, z) of a grid's local ``axes`` over data of
    ``dims`` (x, y, z) points."""
    return [blend_matrix(a, int(n), beta) for a, n in zip(axes, dims)]


def sample(coef: torch.Tensor, p: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """One variable's padded coefficients ``coef`` [Z+2, Y+2, X+2] at local points ``p``
    [N, 3] (x, y, z) with the blended weights at ``beta`` [N] -> [N] (as the grid's
    :func:`blend_matrix` filtering weighs them)."""
    z2, y2, x2 = coef.shape
    four = torch.arange(4, device=p.device)
    (fx, wx), (fy, wy), (fz, wz) = [_taps(p[:, a], n - 2, beta)
                                    for a, n in enumerate((x2, y2, z2))]
    iz, iy, ix = [(f[:, None] + four).clamp(0, n - 1)
                  for f, n in ((fz, z2), (fy, y2), (fx, x2))]                   # [N, 4] each
    at = ((iz[:, :, None, None] * y2 + iy[:, None, :, None]) * x2
          + ix[:, None, None, :]).reshape(-1, 64)                               # [N, 64]
    w = (wz[:, :, None, None] * wy[:, None, :, None] * wx[:, None, None, :]).reshape(-1, 64)
    out = (coef.reshape(-1).to(torch.float64)[at] * w).sum(1)
    return out.to(coef.dtype)
