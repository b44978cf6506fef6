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

import time
from typing import Any, List, Optional, Sequence, Tuple, Union

import torch

from . import kernels
from .encodings import bspline_coefficients
from .grid_plan import (GridPlan, lattice_axes, linear_matrix, separable, share_fields,
                        spline_matrix)
from .steps import Steps, as_steps
from .time_select import Chain, held_out_cases

LEVEL = 0.9             # the share of points whose error the estimate is made to exceed
FLOOR = 1e-3            # added to both indicators, in normalised units (range 2)
MAX_SAMPLES = 1 << 20   # points per variable the quantile is taken over (a random subset)


def scale_for(ratios: Sequence[torch.Tensor], generator: torch.Generator,
              total: Optional[int] = None) -> torch.Tensor:
    """Per variable the smallest k with ``LEVEL`` of the points' ratio |residual| /
    (indicator + FLOOR) at most k, from ``ratios``: chunks [V, n_i] of the points in order
    (a list, or an iterable made as it is read when ``total``, their number, is given, so
    that only one chunk is held at a time). Over MAX_SAMPLES points per variable the
    quantile is taken over a random subset of them (drawn from ``generator``)."""
    pick = None
    if total is None:
        ratios = list(ratios)
        total = sum(int(r.shape[1]) for r in ratios)
    if total > MAX_SAMPLES:
        pick = torch.randperm(total, generator=generator)[:MAX_SAMPLES]
    kept, start, n_vars = [], 0, None
    out = None
    for r in ratios:
        n_vars = int(r.shape[0])
        if pick is None:
            kept.append(r)
        else:                    # the subset's points in this chunk, in the subset's order
            if out is None:
                out = r.new_empty((n_vars, MAX_SAMPLES))
            here = ((pick >= start) & (pick < start + r.shape[1])).nonzero(as_tuple=True)[0]
            out[:, here.to(r.device)] = r[:, (pick[here] - start).to(r.device)]
        start += int(r.shape[1])
    ratio = out if pick is not None else (torch.cat(kept, 1) if kept else None)
    if ratio is None or ratio.shape[1] == 0:
        return torch.zeros(n_vars or 0)
    return torch.quantile(ratio, LEVEL, dim=1).cpu()


def ratio_of(residual: torch.Tensor, indicator: torch.Tensor) -> torch.Tensor:
    """|residual| / (indicator + FLOOR), float32 (what :func:`scale_for` takes)."""
    return residual.abs().float().div_(indicator.float() + FLOOR)


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
    return torch.hypot(e, t_part, out=e)             # one pass (sqrt(e^2 + t^2): four)


@torch.no_grad()
def calibrate(base: Any, data: Union[torch.Tensor, Steps], half: Optional[torch.Tensor],
              built: Sequence[Chain], deadline: Optional[float] = None) -> None:
    """``base.error_scale`` (a SplineBase's [2, V]) from ``data`` [V, T, Z, Y, X] (or
    :class:`Steps`: three steps are read again): in space from kept steps thinned to every
    other point, in time from the half series' held-out steps (time_select.half_chains)
    predicted with the base's own choice in time."""
    gen = torch.Generator().manual_seed(0)
    steps = as_steps(data)
    dev = base.device
    axes = thinned_axes(tuple(steps.shape), dev)
    if all(n == 1 for _, n, _ in axes):
        return                                     # a single point: nothing to hold out
    mats = [spline_matrix(a, m) for a, _, m in axes]
    lins = [linear_matrix(a, m) for a, _, m in axes]
    span = [n for _, n, _ in axes]                                      # x, y, z
    off = off_lattice((span[2], span[1], span[0]), dev)
    kept = sorted({0, base.n_slots // 2, base.n_slots - 1})

    def space_ratios(k: int) -> torch.Tensor:
        """Step ``k``'s ratios at the points left out, one variable at a time."""
        step = steps.step(k)
        out = torch.empty((steps.n_vars, int(off.sum())), device=dev)
        for v in range(steps.n_vars):
            thin = step[v:v + 1, ::2, ::2, ::2].to(torch.float32)
            spline = separable(bspline_coefficients(thin, base.spline_boundary[v:v + 1]), mats)
            true = step[v:v + 1, :span[2], :span[1], :span[0]].to(torch.float32)
            out[v] = ratio_of((true - spline)[:, off],
                              (spline - separable(thin, lins)).abs()[:, off])[0]
        return out

    base.error_scale[0].copy_(scale_for((space_ratios(k) for k in kept), gen,
                                        total=len(kept) * int(off.sum())))
    if half is None or not built:
        return
    for sub, _, _ in built:
        for name in ("time_mix", "flow_mix", "path_mix", "path_bend"):
            if hasattr(sub, name) and hasattr(base, name):
                getattr(sub, name).copy_(getattr(base, name))
    ratios = []
    for n, (sub, plan, k, t) in enumerate(held_out_cases(built)):
        if n and deadline is not None and time.perf_counter() > deadline:
            break
        res = (half[:, k] - sub.evaluate_grid(plan, t)).flatten(1)
        ends = sub.end_values(plan, t)
        ratios.append(ratio_of(res, (ends[0] - ends[1]).abs().flatten(1)))
        del res, ends
    base.error_scale[1].copy_(scale_for(ratios, gen))


@torch.no_grad()
def error_grid(base: Any, plan: GridPlan, t: float, units: Optional[torch.Tensor] = None,
               out: Optional[torch.Tensor] = None) -> torch.Tensor:
    """E at normalised time ``t`` on ``base``'s (a SplineBase's) planned grid
    [V, Zo, Yo, Xo], in the base's normalised units, or times ``units`` [V] (the variables'
    half ranges: their units) into ``out`` when given. With the compiled kernels in one
    pass (:func:`kernels.error_pass`): no field of the output's size besides ``out``."""
    j, w = base._slot(t)
    kept = base.n_slots == 1 or w <= 0.0 or w >= 1.0
    if kernels.available(plan.axes[0].device) and out is not None:
        k = (j if base.n_slots == 1 or w <= 0.0 else j + 1) if kept else j
        ends = [k] if kept else [j, j + 1]
        splines = [spline_at_points(base, plan, i) for i in ends]
        values = [data_values(base, plan, i) for i in ends]
        lins, _ = data_carry(base, plan)
        apart, c = None, 0.0
        if not kept:
            apart, c = base.end_difference(data_plan(base, plan), t), 4.0 * w * (1.0 - w)
        scales = base.error_scale.to(out)
        return kernels.error_pass((splines[0], splines[-1]), (values[0], values[-1]), apart,
                                  lins, 0.0 if kept else w, scales[0], scales[1] * c,
                                  units.to(out), FLOOR, out)
    if kept:
        k = j if base.n_slots == 1 or w <= 0.0 else j + 1
        got = combine(space_indicator(base, plan, k).clone(), None, 0.0, base.error_scale)
    else:
        space = torch.lerp(space_indicator(base, plan, j), space_indicator(base, plan, j + 1),
                           w)
        lins, _ = data_carry(base, plan)
        apart = base.end_difference(data_plan(base, plan), t)
        got = combine(space, separable(apart, lins), w, base.error_scale)
    if units is not None:
        got.mul_(units.to(got).view(-1, 1, 1, 1))
    return got if out is None else out.copy_(got)


def data_plan(base: Any, plan: GridPlan) -> GridPlan:
    """The plan of the data's own points around ``plan``'s (the points a slab's carry
    reads), where the sides' disagreement is looked up, kept in the plan; it looks up in
    ``plan``'s fields (the same warps' grid as the output's)."""
    if plan.data_plan is None:
        _, box = data_carry(base, plan)
        whole = all(box[2 * a] == 0 and box[2 * a + 1] == n - 1
                    for a, n in enumerate(base.dims))
        plan.data_plan = base.plan_grid(lattice_axes(base.dims[::-1], plan.axes[0].device),
                                        None if whole else box)
    share_fields(plan, plan.data_plan)
    return plan.data_plan


def data_values(base: Any, plan: GridPlan, k: int) -> torch.Tensor:
    """Slot ``k``'s values at the data's points the carry to ``plan``'s grid reads
    [V, Zd, Yd, Xd], kept in the plan while its interval is in use."""
    key = ("data", k)
    f = plan.error_fields.get(key)
    if f is None:
        _keep_near(plan, k)
        lins, box = data_carry(base, plan)
        dev = plan.axes[0].device
        own = [spline_matrix(a, n)[box[2 * i]:box[2 * i + 1] + 1] for i, (a, n) in
               enumerate(zip(lattice_axes(base.dims[::-1], dev), base.dims))]
        f = plan.error_fields[key] = base.kept_field(k, own, data_points=True)
    return f


def spline_at_points(base: Any, plan: GridPlan, k: int
                     ) -> Tuple[torch.Tensor, Tuple[int, int, int]]:
    """Slot ``k``'s spline at ``plan``'s points as a channels-last field and where the
    points start in it (z, y, x): the kept step's field on the warps' window where the
    points are points of it (no copy), else evaluated on them and kept in the plan while
    its interval is in use."""
    if base.has_flow and plan.points_on_window:
        f = base._slot_field(plan, k)
        if plan.warp_on_output:
            return f, (0, 0, 0)
        (x0, _), (y0, _), (z0, _) = plan.on_window
        return f, (z0, y0, x0)
    key = ("spline", k)
    f = plan.error_fields.get(key)
    if f is None:
        _keep_near(plan, k)
        f = plan.error_fields[key] = base.kept_field(k, plan.spline, last=True,
                                                     fine=base._fine(plan, "spline"))
    return f, (0, 0, 0)


def _keep_near(plan: GridPlan, k: int) -> None:
    """Drop the plan's error fields of slots not next to ``k`` (another interval's)."""
    plan.error_fields = {i: v for i, v in plan.error_fields.items()
                         if abs((i[1] if isinstance(i, tuple) else i) - k) <= 1}


def data_carry(base: Any, plan: GridPlan) -> Tuple[List[torch.Tensor], Tuple[int, ...]]:
    """The data's points that trilinear interpolation onto the planned grid (a slab of one)
    reads: per axis the linear matrix from them [out, n'] and their box (x0, x1, y0, y1, z0,
    z1, inclusive), kept in the plan."""
    if plan.data_carry is None:
        lins, box = [], []
        for a, n in zip(plan.axes, base.dims):
            m = linear_matrix(a, n)
            lo, hi = kernels.used_rows(m)
            lins.append(m[:, lo:hi])
            box += [lo, hi - 1]
        plan.data_carry = (lins, tuple(box))
    return plan.data_carry


def space_indicator(base: Any, plan: GridPlan, k: int) -> torch.Tensor:
    """Slot ``k``'s |spline - trilinear| on the planned grid [V, Zo, Yo, Xo], kept in the
    plan while its interval is in use."""
    f = plan.error_fields.get(k)
    if f is None:
        _keep_near(plan, k)
        lins, box = data_carry(base, plan)
        dev = plan.axes[0].device
        own = [spline_matrix(a, n)[box[2 * i]:box[2 * i + 1] + 1] for i, (a, n) in
               enumerate(zip(lattice_axes(base.dims[::-1], dev), base.dims))]
        spline = (plan.window_rows(base._slot_field(plan, k)).clone()
                  if base.has_flow and plan.points_on_window
                  else base.kept_field(k, plan.spline, fine=base._fine(plan, "spline")))
        values = base.kept_field(k, own, data_points=True)   # the points the carry reads
        f = plan.error_fields[k] = spline.sub_(separable(values, lins)).abs_()
    return f
