"""The spline's condition at each face of the box, chosen per variable from the kept data.

Inside the box every cubic B-spline interpolant of the same samples is almost the same; the
two extra coefficients of each axis are fixed by a condition at its two ends, and that
condition decides the spline's error over the last few cells (it fades by a factor 0.27 a
cell). The right one depends on the data: a field that meets a zero-flux wall is flat at the
wall (continued by its end value or mirrored about a wall half a cell out, as SciPy's
``nearest`` and ``reflect`` modes assume), a smooth field that leaves the box is best
continued by its own cubic (not-a-knot), and a natural spline (zero second derivative,
what the base used alone before) is in between. No one condition is best on every data set
(measured on the benchmark's data: docs/issue30-benchmark.md).

So the condition is chosen per variable, axis and end from the kept data alone, one level
down: every kept step (up to MAX_STEPS) thinned to every other sample along the axis, each
candidate's spline through the thinned samples scored on the ``BAND`` left-out samples
nearest each end, over every line along the axis (at most MAX_LINES of them: on large grids
every s-th line in both other axes). A condition is a property of the field at the face, not
of the grid's spacing, so the one that rebuilds the left-out samples best one level down is
taken for the data's own level -- but the transfer is not exact (features that are
under-resolved one level down, walls between the samples), so the better of the two safe
conditions (natural, what the base used alone before; nearest, SciPy's) is kept unless
another one rebuilds the left-out samples clearly better (``MARGIN``). Measured on the
benchmark's data, that rule stayed within 0.05 dB of both safe ones on every data set where
the plain best-one-level-down choice fell up to 0.16 dB below SciPy's nearest, and kept
most of the gains where another condition is right (docs/issue30-benchmark.md).
"""
from __future__ import annotations

import math
from typing import Sequence, Union

import torch

from .encodings import BOUNDARIES, NATURAL, _bspline_solve_matrix
from .grid_plan import spline_matrix
from .steps import Steps, as_steps

BAND = 3            # left-out samples per end scored (one level down)
MIN_POINTS = 9      # an axis with fewer kept samples keeps the natural condition
MAX_STEPS = 8       # kept steps scored, spread over the series
MAX_LINES = 4096    # lines along an axis scored per step (more: every s-th in both others)
SAFE = (NATURAL, 3)  # natural (the base's only condition before) and SciPy's nearest
MARGIN = 0.8        # another condition must leave at most this share of the better safe
                    # one's squared error one level down (about 1 dB) to be taken


def scored_steps(n_steps: int) -> Sequence[int]:
    """Up to MAX_STEPS kept steps spread evenly over ``n_steps``, first and last included."""
    if n_steps <= MAX_STEPS:
        return list(range(n_steps))
    return sorted({round(i * (n_steps - 1) / (MAX_STEPS - 1)) for i in range(MAX_STEPS)})


def _end_weights(n: int) -> torch.Tensor:
    """[codes, 2, BAND, nt] per candidate condition the weights taking an axis's samples
    thinned to every other one (nt of them, from the first ``2 nt - 1`` samples) to the
    spline's values at the BAND left-out samples nearest the low end and the high end."""
    m = (n - 1) // 2 * 2 + 1
    nt = (m + 1) // 2
    half = torch.linspace(-1.0, 1.0, m, dtype=torch.float64)[1::2]            # left out
    at = spline_matrix(half, nt).to(torch.float64)                           # [nt-1, nt+2]
    band = min(BAND, nt - 1)
    out = []
    for code in range(len(BOUNDARIES)):
        w = at @ _bspline_solve_matrix(nt, code, code)                       # [nt-1, nt]
        out.append(torch.stack([w[:band], w[-band:]]))
    return torch.stack(out)


@torch.no_grad()
def choose_boundary(data: Union[torch.Tensor, Steps]) -> torch.Tensor:
    """Per variable, axis and end the condition (a code of BOUNDARIES) whose spline rebuilds
    best the samples left out one level down -- the better safe one unless another wins by
    MARGIN -- from ``data`` [V, T, Z, Y, X] (the kept steps; or :class:`Steps`, of which
    up to MAX_STEPS are read, one at a time) -> [V, 3, 2] long (x, y, z; low, high). Axes
    with fewer than MIN_POINTS samples keep the natural condition."""
    steps = as_steps(data)
    v = steps.n_vars
    out = torch.full((v, 3, 2), NATURAL, dtype=torch.long)
    shape = steps.shape                                                      # Z, Y, X
    axes = [(a, dim) for a, dim in enumerate((-1, -2, -3)) if shape[dim] >= MIN_POINTS]
    if not axes:
        return out
    weights, errs = {}, {}
    for a, dim in axes:
        weights[a] = _end_weights(shape[dim]).to(steps.device)               # [C, 2, B, nt]
        errs[a] = torch.zeros(v, weights[a].shape[0], 2, dtype=torch.float64,
                              device=steps.device)
    for k in scored_steps(steps.n_steps):
        step = steps.step(k)                                                 # [V, Z, Y, X]
        for a, dim in axes:
            n = shape[dim]
            m = (n - 1) // 2 * 2 + 1
            band = weights[a].shape[2]
            others = [shape[d] for d in (-1, -2, -3) if d != dim]
            stride = max(1, math.ceil(math.sqrt(others[0] * others[1] / MAX_LINES)))
            lines = torch.movedim(step, dim, -1)[:, ::stride, ::stride, :m]
            lines = lines.to(torch.float64).reshape(v, -1, m)                # [V, L, m]
            thin, left = lines[..., ::2], lines[..., 1::2]
            for end, truth in ((0, left[..., :band]), (1, left[..., -band:])):
                got = torch.einsum("cbn,vln->vclb", weights[a][:, end], thin)  # [V, C, L, B]
                errs[a][:, :, end] += (got - truth[:, None]).pow(2).sum((2, 3))
        del step
    for a, _ in axes:
        err = errs[a]
        best = err.argmin(dim=1)                                             # [V, 2]
        safe = err[:, list(SAFE)]                                            # [V, S, 2]
        safe_code = torch.tensor(SAFE, device=err.device)[safe.argmin(dim=1)]  # ties: natural
        clear = err.gather(1, best[:, None])[:, 0] < MARGIN * safe.amin(dim=1)
        out[:, a] = torch.where(clear, best, safe_code).cpu()
    return out
