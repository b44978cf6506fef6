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
* k_s, k_t: per variable, made at the data's level from two levels below it. One level
  down, the ``LEVEL`` quantile of |error| / indicator over held-out points: for k_s the
  kept steps thinned to every other point and predicted back at the points left out; for
  k_t the held-out steps of the half series (time_select.py), which the prediction never
  saw. These alone (``error_scale``, what model files made before issue 30's recalibration
  evaluate with) over-cover at the data's level: the base's error shrinks relative to its
  indicators as the grid refines and the gap narrows, for smooth fields much faster than
  the indicators (92-99.9 % of points covered on the benchmark's unseen series, for 90 %
  asked). So k_s is also measured two levels down (the thinned steps thinned again), and
  both one-level values are multiplied by how much k_s shrank from two levels down to one,
  to the powers SPACE_EXPONENT and TIME_EXPONENT (``level_factor``; ``error_scale_data``).
  In time no second level is measured: the held-out steps of a quarter series would need
  displacement fits of their own, and the half series' plain interpolation at twice its
  gap, tried, grew on the wake where the error shrinks. f is a small floor
  (``FLOOR`` in the base's normalised units) so that the estimate is never exactly 0
  between points.

The benchmark (bench/error_calibration.py) reports the share measured against the truth;
the extrapolation is a rule measured on a few series, not a guarantee: a series whose
error shrinks faster than its coarse levels show (smooth reaction-diffusion patterns)
stays over-covered.
"""
from __future__ import annotations

import time
from typing import Any, Iterator, List, Optional, Sequence, Tuple, Union

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
# the buffers issue 30's recalibration adds to a base beside error_scale, each [2, V]
ERROR_LEVELS = ("error_scale_down2", "error_scale_data", "error_cover_down1")
MIN_FACTOR = 0.1        # the most a scale is cut by from one level down to the data's
# the change from two levels down to one in space, taken at the data's level to these
# powers: in space (below 1: the full change over-shrinks where the coarsest level resolves a
# feature worst, the tornado's velocity magnitude with its kink at 0) and in time (the ratio
# between steps shrinks from one level down to the data's about as the space ratio does on
# the tornado, the excitable fronts and the wake; the half series' own interpolation in time
# at twice its gap was tried as the time level and failed on the wake, whose motion
# decorrelates over four kept steps). Measured on the quality benchmark's series:
# bench/results/2026-12-05/error-calibration.md
SPACE_EXPONENT = 0.85
TIME_EXPONENT = 0.9


def sample_ratios(ratios: Sequence[torch.Tensor], generator: torch.Generator,
                  total: Optional[int] = None) -> Optional[torch.Tensor]:
    """Per variable the points' ratios |residual| / (indicator + FLOOR) [V, m] from
    ``ratios``: chunks [V, n_i] of the points in order (a list, or an iterable made as it is
    read when ``total``, their number, is given, so that only one chunk is held at a time);
    over MAX_SAMPLES points a random subset of MAX_SAMPLES of them (drawn from
    ``generator``), so that what is kept stays bounded at any size. None: no chunk."""
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
    return out if pick is not None else (torch.cat(kept, 1) if kept else None)


def quantile_of(ratio: Optional[torch.Tensor], n_vars: int) -> torch.Tensor:
    """Per variable the ``LEVEL`` quantile of a sample [V, m] (0 where there is none)."""
    if ratio is None or ratio.shape[1] == 0:
        return torch.zeros(n_vars)
    return torch.quantile(ratio, LEVEL, dim=1).cpu()


def scale_for(ratios: Sequence[torch.Tensor], generator: torch.Generator,
              total: Optional[int] = None) -> torch.Tensor:
    """Per variable the smallest k with ``LEVEL`` of the points' ratio |residual| /
    (indicator + FLOOR) at most k, from ``ratios`` as :func:`sample_ratios` takes them."""
    ratio = sample_ratios(ratios, generator, total)
    return quantile_of(ratio, 0 if ratio is None else int(ratio.shape[0]))


def coverage_of(ratio: Optional[torch.Tensor], scale: torch.Tensor) -> torch.Tensor:
    """Per variable the share of a sample's ratios [V, m] at most ``scale`` [V]: what a
    scale covers where the sample was taken (0 where there is none)."""
    if ratio is None or ratio.shape[1] == 0:
        return torch.zeros(scale.shape[0])
    return (ratio.cpu() <= scale.view(-1, 1)).float().mean(1)


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


def thinned_count(dims_zyx: Sequence[int]) -> int:
    """How many points :func:`thinned_ratios` scores on a grid of ``dims_zyx``: those of
    the span the thinned grid reaches that are not on it."""
    spans = [2 * ((n + 1) // 2 - 1) + 1 if n > 1 and (n + 1) // 2 >= 2 else 1
             for n in dims_zyx]
    sizes = [(n + 1) // 2 if n > 1 and (n + 1) // 2 >= 2 else 1 for n in dims_zyx]
    return spans[0] * spans[1] * spans[2] - sizes[0] * sizes[1] * sizes[2]


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


def thinned_ratios(step: torch.Tensor, boundary: torch.Tensor) -> torch.Tensor:
    """The space term's ratios one level below ``step`` [V, Z, Y, X] (normalised): the step
    thinned to every other point, its spline evaluated back at the points left out, and
    |truth - spline| / (|spline - trilinear| + FLOOR) there -> [V, n] (one variable at a
    time, so that only one variable's fields are held)."""
    dev = step.device
    axes = thinned_axes(tuple(step.shape[1:]), dev)
    if all(n == 1 for _, n, _ in axes):
        return step.new_empty((step.shape[0], 0))
    mats = [spline_matrix(a, m) for a, _, m in axes]
    lins = [linear_matrix(a, m) for a, _, m in axes]
    span = [n for _, n, _ in axes]                                      # x, y, z
    off = off_lattice((span[2], span[1], span[0]), dev)
    out = torch.empty((step.shape[0], int(off.sum())), device=dev)
    for v in range(step.shape[0]):
        thin = step[v:v + 1, ::2, ::2, ::2].to(torch.float32)
        spline = separable(bspline_coefficients(thin, boundary[v:v + 1]), mats)
        true = step[v:v + 1, :span[2], :span[1], :span[0]].to(torch.float32)
        out[v] = ratio_of((true - spline)[:, off],
                          (spline - separable(thin, lins)).abs()[:, off])[0]
    return out


def level_factor(down1: torch.Tensor, down2: torch.Tensor) -> torch.Tensor:
    """Per variable how much a scale shrank from two levels down to one (down1 / down2),
    taken as what it shrinks by again from one level down to the data's: within
    [MIN_FACTOR, 1] (never raised above the one-level value, nor cut below MIN_FACTOR of it
    on the word of a few coarse points); 1 where a level is missing."""
    f = torch.where((down1 > 0) & (down2 > 0), down1 / down2.clamp_min(1e-30),
                    torch.ones_like(down1))
    return f.clamp(MIN_FACTOR, 1.0)


@torch.no_grad()
def calibrate(base: Any, data: Union[torch.Tensor, Steps], half: Optional[torch.Tensor],
              built: Sequence[Chain], deadline: Optional[float] = None) -> None:
    """The error estimate's scales, from ``data`` [V, T, Z, Y, X] (or :class:`Steps`: three
    steps are read again):

    * ``base.error_scale`` [2, V] (space, time), one level down as before issue 30's
      recalibration (model files made before it evaluate with these): in space from kept
      steps thinned to every other point, in time from the half series' held-out steps
      predicted with the base's own choice in time;
    * ``base.error_scale_down2``: the space scale two levels down (the thinned steps
      thinned again; the time row stays 0: not measured), and ``base.error_scale_data``,
      the scales applied at the data's level: each one-level scale times the factor the
      space scale shrank by from two levels down to one (``level_factor``), to the power
      SPACE_EXPONENT in space and TIME_EXPONENT in time. The base's error relative to its
      indicators shrinks as the grid refines and the gap narrows (for smooth fields much
      faster than the indicators), which the one-level scales alone ignore;
    * ``base.error_cover_down1``: the share of the one-level-down points the data-level
      scales cover (stsr info prints it)."""
    gen = torch.Generator().manual_seed(0)         # the one-level scales' draws, as before
    more = torch.Generator().manual_seed(1)        # two levels down: its own draws
    steps = as_steps(data)
    if thinned_count(tuple(steps.shape)) == 0:
        return                                     # too few points: nothing to hold out
    kept = sorted({0, base.n_slots // 2, base.n_slots - 1})
    bound, v = base.spline_boundary, steps.n_vars
    n1 = len(kept) * thinned_count(tuple(steps.shape))
    n2 = len(kept) * thinned_count(tuple((n + 1) // 2 for n in steps.shape))
    coarser: List[torch.Tensor] = []     # two levels down: an eighth of one level's points

    def one_level() -> Iterator[torch.Tensor]:
        """Each kept step's one-level ratios, read once (its two-level ones kept aside)."""
        for k in kept:
            step = steps.step(k)
            coarser.append(thinned_ratios(step[:, ::2, ::2, ::2], bound))
            ratios = thinned_ratios(step, bound)
            del step                       # one step held at a time, as the fit reads them
            yield ratios

    down1 = sample_ratios(one_level(), gen, n1)
    down2 = sample_ratios(coarser, more, n2)
    base.error_scale[0].copy_(quantile_of(down1, v))
    base.error_scale_down2[0].copy_(quantile_of(down2, v))
    shrink = level_factor(base.error_scale[0], base.error_scale_down2[0])
    base.error_scale_data[0].copy_(base.error_scale[0] * shrink.pow(SPACE_EXPONENT))
    base.error_cover_down1[0].copy_(coverage_of(down1, base.error_scale_data[0]))
    del down1, down2, coarser
    if half is None or not built:
        return                   # no time scale (error_scale[1] stays 0: kept steps only)
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
    held = sample_ratios(ratios, gen)
    del ratios
    base.error_scale[1].copy_(quantile_of(held, v))
    base.error_scale_data[1].copy_(base.error_scale[1] * shrink.pow(TIME_EXPONENT))
    base.error_cover_down1[1].copy_(coverage_of(held, base.error_scale_data[1]))


def data_scales(base: Any) -> torch.Tensor:
    """The scales [2, V] the estimate is evaluated with: the data-level ones where the fit
    made them, else (model files made before issue 30's recalibration) the one-level ones,
    so that those files give the error arrays they gave."""
    data = getattr(base, "error_scale_data", None)
    if data is not None and bool((data[0] > 0).any()):
        return data
    return base.error_scale


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
            apart, c = sides_apart(base, plan, t, values), 4.0 * w * (1.0 - w)
        scales = data_scales(base).to(out)
        return kernels.error_pass((splines[0], splines[-1]), (values[0], values[-1]), apart,
                                  lins, 0.0 if kept else w, scales[0], scales[1] * c,
                                  units.to(out), FLOOR, out)
    if kept:
        k = j if base.n_slots == 1 or w <= 0.0 else j + 1
        got = combine(space_indicator(base, plan, k).clone(), None, 0.0, data_scales(base))
    else:
        space = torch.lerp(space_indicator(base, plan, j), space_indicator(base, plan, j + 1),
                           w)
        lins, _ = data_carry(base, plan)
        apart = base.end_difference(data_plan(base, plan), t)
        got = combine(space, separable(apart, lins), w, data_scales(base))
    if units is not None:
        got.mul_(units.to(got).view(-1, 1, 1, 1))
    return got if out is None else out.copy_(got)


def sides_apart(base: Any, plan: GridPlan, t: float, values: Sequence[torch.Tensor]
                ) -> torch.Tensor:
    """The sides' disagreement at the data's points around ``plan``'s (end_difference on
    the data's plan) [V, Zd, Yd, Xd]. Where no variable moves the two sides are the kept
    steps' own values there, ``values`` (the spline at its data points), so it is their
    difference, not two more evaluations of the kept steps on the same points (with a
    spatial prior, whose correction end_difference adds, it is left to end_difference)."""
    if not base.moves_any() and not base.prior_active():
        return torch.sub(values[0], values[1]).abs_()
    return base.end_difference(data_plan(base, plan), t)


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
        f = plan.error_fields[key] = base.kept_field(k, data_spline(base, plan),
                                                     data_points=True)
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
        if at_data_points(base, plan):   # the spline there: the values at the data's points
            f = kernels.last(data_values(base, plan, k)).permute(3, 0, 1, 2)
        else:
            f = base.kept_field(k, plan.spline, last=True, fine=base._fine(plan, "spline"))
        plan.error_fields[key] = f
    return f, (0, 0, 0)


def at_data_points(base: Any, plan: GridPlan) -> bool:
    """Whether ``plan``'s points are the data's own (an output on the data's grid, or a
    slab of one) with no spatial prior: then the kept steps' spline at them is
    :func:`data_values` (the same matrices, the same numbers), laid out channels last,
    instead of a second filtering of the same coefficients onto the same points."""
    if plan.on_data is None:
        mats = data_spline(base, plan)
        plan.on_data = not base.prior_active() and all(
            a.shape == b.shape and torch.equal(a, b) for a, b in zip(plan.spline, mats))
    return plan.on_data


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


def data_spline(base: Any, plan: GridPlan) -> List[torch.Tensor]:
    """Per axis the spline's matrix at the data's points the carry to ``plan``'s grid reads
    (data_carry's box), the rows kept_field evaluates a kept step on there."""
    _, box = data_carry(base, plan)
    axes = lattice_axes(base.dims[::-1], plan.axes[0].device)
    return [spline_matrix(a, n)[box[2 * i]:box[2 * i + 1] + 1]
            for i, (a, n) in enumerate(zip(axes, base.dims))]


def space_indicator(base: Any, plan: GridPlan, k: int) -> torch.Tensor:
    """Slot ``k``'s |spline - trilinear| on the planned grid [V, Zo, Yo, Xo], kept in the
    plan while its interval is in use."""
    f = plan.error_fields.get(k)
    if f is None:
        _keep_near(plan, k)
        lins, _ = data_carry(base, plan)
        spline = (plan.window_rows(base._slot_field(plan, k)).clone()
                  if base.has_flow and plan.points_on_window
                  else base.kept_field(k, plan.spline, fine=base._fine(plan, "spline")))
        values = base.kept_field(k, data_spline(base, plan),  # the points the carry reads
                                 data_points=True)
        f = plan.error_fields[k] = spline.sub_(separable(values, lins)).abs_()
    return f
