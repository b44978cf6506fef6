"""Where a point between two kept steps was at the kept steps, and how its value changes on
the way: the fast base's paths through time (issue 25).

Each interval j between kept steps K_j and K_{j+1} has a displacement u_j, fitted so that
K_j carried half-way forward matches K_{j+1} carried half-way back (time_basis.py). A point x
at fraction w of the interval then follows a path p(tau) (tau in intervals, K_j at 0, K_{j+1}
at 1) with p(w) = x. Straight, as one interval alone tells:

    p(tau) = x + (tau - w) u_j(x).

Bent: the displacement changes from one interval to the next (features accelerate, turn,
rotate), so the path is the parabola through three kept steps, as in quadratic video frame
interpolation, with the acceleration a_j taken from the neighbouring intervals:

    p(tau) = x + (tau - w) u_j + ((tau^2 - tau) - (w^2 - w)) a_j / 2,

so that p(1) - p(0) = u_j still, and p(0) - p(-1) = u_j - a_j, which is u_{j-1} when the
acceleration is uniform. Both ends of the interval are looked up at the same shift,
``w (1 - w) a_j / 2``, on top of the straight path's.

Along the path the value changes linearly between the two ends, or as a cubic (Hermite) in
time whose slopes at the kept steps are taken along the paths through them (three kept steps
each, :func:`slope_weights`): a feature that brightens faster and faster while it moves is
followed, as the natural cubic follows one that stands still.
"""
from __future__ import annotations

from typing import List, Sequence, Tuple

import torch


def accelerations(flow: torch.Tensor, times: Sequence[float]) -> torch.Tensor:
    """Per interval the change of displacement per interval squared [T-1, 3, ...] from the
    displacements ``flow`` [T-1, 3, ...] of intervals between kept steps at ``times``
    (normalised, increasing): centred inside, one-sided at the first and last interval,
    zero with a single interval. Displacements are per interval, so they are turned into
    velocities (per unit time) at the intervals' middles, differentiated, and scaled back
    by the interval's length squared."""
    n = flow.shape[0]
    out = torch.zeros_like(flow)
    if n < 2:
        return out
    t = [float(v) for v in times]
    h = [t[j + 1] - t[j] for j in range(n)]
    mid = [0.5 * (t[j] + t[j + 1]) for j in range(n)]
    vel = [flow[j] / h[j] for j in range(n)]
    for j in range(n):
        lo, hi = max(0, j - 1), min(n - 1, j + 1)
        out[j] = (vel[hi] - vel[lo]) / (mid[hi] - mid[lo]) * h[j] * h[j]
    return out


def bend_shift(w: float) -> float:
    """The factor of the acceleration by which a bent path's two ends are shifted from the
    straight path's, at fraction ``w`` of the interval."""
    return 0.5 * w * (1.0 - w)


def slope_weights(times: Sequence[float], k: int) -> Tuple[List[int], List[float]]:
    """The slope in time at kept step ``k`` along the path through it, as weights of the
    values at three kept steps (the derivative at ``times[k]`` of the parabola through them):
    k-1, k, k+1 inside, the first or last three at the ends, the secant with two steps.
    Returns (steps, weights)."""
    t = [float(v) for v in times]
    n = len(t)
    if n < 2:
        return [k], [0.0]
    if n == 2:
        h = t[1] - t[0]
        return [0, 1], [-1.0 / h, 1.0 / h]
    s = min(max(k - 1, 0), n - 3)
    idx = [s, s + 1, s + 2]
    x = t[k]
    wts = []
    for i in idx:
        others = [m for m in idx if m != i]
        den = 1.0
        for m in others:
            den *= t[i] - t[m]
        # d/dx of prod_{m != i} (x - t_m), at x
        num = sum(x - t[o] for o in others)
        wts.append(num / den)
    return idx, wts


def hermite_terms(w: float, h: float) -> Tuple[float, float, float]:
    """At fraction ``w`` of an interval of length ``h``: ``g`` such that the cubic along the
    path minus the linear one is ``g (a - b) + h10 h da + h11 h db`` for end values a, b and
    end slopes da, db; returns (g, h10 h, h11 h)."""
    w2 = w * w
    h10 = w2 * w - 2.0 * w2 + w
    h11 = w2 * w - w2
    return h10 + h11, h10 * h, h11 * h


def end_weights(w: float, h: float, cubic: torch.Tensor
                ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per variable the weights of the two ends' values and slopes along the path at
    fraction ``w`` of an interval of length ``h``, for the share ``cubic`` [V] of the cubic
    along the path (0: linear): the value is ``alpha a + g0 da + beta b + g1 db``."""
    g, g0, g1 = hermite_terms(w, h)
    alpha = (1.0 - w) + cubic * g
    beta = w - cubic * g
    return alpha, cubic * g0, beta, cubic * g1
