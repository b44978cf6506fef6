"""The fast base's error estimate: per variable and output point a value that the true error
stays below at about ``LEVEL`` of the points (the ``NAME_error`` arrays), calibrated on the
data's own held-out points, so every model of the default kind has one (issue 25).

    E(x, t) = sqrt( (k_s (S(x, t) + f))^2 + (4 w (1 - w) k_t (D(x, t) + f))^2 )

* S, in space: how far the cubic spline through the kept step departs from trilinear
  interpolation of the same points (zero at the data's points, large where the field curves
  or has a kink between them), blended linearly between the two kept steps around t.
* D, in time: how far the interval's two sides disagree at t: the earlier kept step looked up
  where the path through x was then, and the later one where it will be (still variables:
  both at x). Evaluated on the data's own grid (the sides' lookups cost what the prediction's
  do, there a fraction of the output's points) and carried to the output grid trilinearly.
  4 w (1 - w) is 0 at a kept step and 1 half-way.
* k_s, k_t: per variable, the ``LEVEL`` quantile of |error| / indicator over held-out points:
  for k_s the kept steps thinned to every other point and predicted back at the points left
  out; for k_t the held-out steps of the half series (time_select.py), which the prediction
  never saw. f is a small floor (``FLOOR`` in the base's normalised units) so that the
  estimate is never exactly 0 between points.

The estimate is calibrated one level down (a coarser grid, a wider gap) and applied at the
data's own level, where the base's error is usually smaller relative to its indicators for
smooth fields: expect more than ``LEVEL`` of the points below it there. The benchmark reports
the share measured against the truth.
"""
from __future__ import annotations

from typing import List, Sequence

import torch

LEVEL = 0.9             # the share of points whose error the estimate is made to exceed
FLOOR = 1e-3            # added to both indicators, in normalised units (range 2)
MAX_SAMPLES = 1 << 20   # points per variable the quantile is taken over (a random subset)


def scale_for(residual: torch.Tensor, indicator: torch.Tensor,
              generator: torch.Generator) -> torch.Tensor:
    """Per variable the smallest k with ``LEVEL`` of the points' |residual| at most
    k (indicator + FLOOR): ``residual`` and ``indicator`` are [V, N]."""
    ratio = residual.abs().float() / (indicator.float() + FLOOR)
    if ratio.shape[1] > MAX_SAMPLES:
        pick = torch.randperm(ratio.shape[1], generator=generator)[:MAX_SAMPLES]
        ratio = ratio[:, pick.to(ratio.device)]
    if ratio.shape[1] == 0:
        return torch.zeros(ratio.shape[0])
    return torch.quantile(ratio, LEVEL, dim=1).cpu()


def lattice_axes(dims_zyx: Sequence[int], device: torch.device) -> List[torch.Tensor]:
    """Local coordinates (x, y, z) of a grid's own points."""
    return [torch.linspace(-1.0, 1.0, n, device=device) if n > 1 else
            torch.zeros(1, device=device) for n in reversed(tuple(dims_zyx))]


def thinned_axes(dims_zyx: Sequence[int], device: torch.device):
    """For a grid thinned to every other point: per axis (x, y, z) the local coordinates,
    in the thinned grid's frame, of the full grid's points it spans, how many of them that
    is, and the thinned grid's point count."""
    out = []
    for n in reversed(tuple(dims_zyx)):
        m = (n + 1) // 2
        if n == 1 or m < 2:
            out.append((torch.zeros(1, device=device), 1, 1))
            continue
        span = 2 * (m - 1) + 1                    # full points the thinned grid reaches
        idx = torch.arange(span, device=device, dtype=torch.float32)
        out.append((idx / (m - 1) - 1.0, span, m))
    return out


def off_lattice(dims_zyx: Sequence[int], device: torch.device) -> torch.Tensor:
    """[Z, Y, X] True where a point of a grid is not kept when thinning to every other
    point (an odd index along an axis that has more than one point)."""
    masks = [(torch.arange(n, device=device) % 2 == 1) if n > 1 else
             torch.zeros(1, dtype=torch.bool, device=device) for n in dims_zyx]
    z, y, x = torch.meshgrid(*masks, indexing="ij")
    return z | y | x


def combine(space: torch.Tensor, time_term: torch.Tensor, w: float,
            scales: torch.Tensor) -> torch.Tensor:
    """E from the two indicators [V, ...] (``time_term`` may be None at a kept step) and the
    scales [2, V] (space, time); in place into ``space``."""
    ks = scales[0].to(space).view(-1, *([1] * (space.dim() - 1)))
    e = space.add_(FLOOR).mul_(ks)
    if time_term is None:
        return e
    kt = scales[1].to(space).view(-1, *([1] * (space.dim() - 1)))
    t_part = time_term.add_(FLOOR).mul_(kt * (4.0 * w * (1.0 - w)))
    return e.pow_(2).add_(t_part.pow_(2)).sqrt_()
