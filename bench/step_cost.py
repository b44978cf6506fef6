"""Timing an in-between step of a real SplineBase on an output grid: what the cost scripts of
the networks between kept steps (bench/side_weights_cost.py, bench/time_refine_cost.py)
share, so their numbers are measured the same way."""
from __future__ import annotations

import time
from typing import Callable, List, Optional

import torch
from torch import nn

from stsr_core.model.spline_base import SplineBase


def timed(fn: Callable[[], object], repeat: int) -> float:
    """Seconds per call, the best of ``repeat`` after one warm-up (a shared machine)."""
    fn()
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def random_base(n: int, n_vars: int, bend: Optional[float] = None) -> SplineBase:
    """A base over ``n``^3 data points and four kept steps with random coefficients and
    displacements (the cost does not depend on the values), every variable moved; ``bend``:
    the paths' bend (None: as made)."""
    torch.manual_seed(0)
    base = SplineBase((n, n, n), n_vars, [-1.0, -1 / 3, 1 / 3, 1.0], base_time="flow",
                      trainable=False)
    with torch.no_grad():
        base.coef.normal_()
        base.flow.normal_(0.0, 0.02)
        base.flow_mix.fill_(1.0)
        if bend is not None:
            base.path_bend.fill_(bend)
    return base


def step_seconds(base: SplineBase, axes: List[torch.Tensor], module: Optional[nn.Module],
                 repeat: int) -> float:
    """Seconds per in-between step of ``base`` on the grid ``axes`` with ``module`` between
    the sides (None: the plain blend), steps of one interval (its fields reused)."""
    base.side_weights = module
    plan = base.plan_grid(axes)
    plan.reuse = True
    ts = iter([-0.9, -0.8, -0.7] * (repeat + 1))
    return timed(lambda: base.evaluate_grid(plan, next(ts)), repeat)
