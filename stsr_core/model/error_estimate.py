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
  asked). So each is also measured two levels down (k_s: the thinned steps thinned again;
  k_t: how the ratio of the half series' linear interpolation in time changes from its
  held-out gap to twice it) and the one-level value is multiplied by the change from two
  levels down to one (``level_factor``; ``error_scale_data``). f is a small floor
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
# in space the change from two levels down to one is taken to the power 0.75 at the data's
# level (measured on the quality benchmark's series: the full change over-shrinks on the
# tornado's velocity magnitude, whose kink at 0 the coarsest level resolves worst; see
# bench/results/2026-12-05/error-calibration.md); in time the scale may grow up to 4x
# (the plume's velocities: the error shrinks more slowly than the sides' disagreement as
# the gap narrows)
SPACE_EXPONENT = 0.75
MOST_TIME_FACTOR = 4.0


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


def level_factor(down1: torch.Tensor, down2: torch.Tensor, exponent: float = 1.0,
                 most: float = 1.0) -> torch.Tensor:
    """Per variable the factor a scale one level down is multiplied by at the data's level:
    how much it changed from two levels down to one (down1 / down2), taken to be what it
    changes by again from one level down to the data's, raised to ``exponent`` (below 1:
    the change is trusted less than fully), within [MIN_FACTOR, ``most``] (never cut
    below MIN_FACTOR of the one-level value on the word of a few coarse points); 1 where a
    level is missing."""
    f = torch.where((down1 > 0) & (down2 > 0), down1 / down2.clamp_min(1e-30),
                    torch.ones_like(down1))
    return f.clamp(MIN_FACTOR, most).pow(exponent)


def time_levels(half: torch.Tensor, gen: torch.Generator) -> Tuple[torch.Tensor, torch.Tensor]:
    """How the error of interpolating in time grows with the gap, measured on the half series
    ``half`` [V, n, ...]: per variable the ``LEVEL`` quantile of |step k - the linear
    interpolation of its two neighbours at the gap| / (their difference + FLOOR), at gaps of
    two and four kept steps (k +- 1, k +- 2; every k that has them) -> (q2 [V], q4 [V]); 0
    where a gap has no case (fewer than 5 kept steps for the wider one)."""
    n = int(half.shape[1])
    out = []
    for g in (1, 2):
        ratios = [ratio_of(half[:, k] - 0.5 * (half[:, k - g] + half[:, k + g]),
                           (half[:, k + g] - half[:, k - g]).abs()).flatten(1)
                  for k in range(g, n - g)]
        out.append(scale_for(ratios, gen) if ratios else torch.zeros(int(half.shape[0])))
    return out[0], out[1]


@torch.no_grad()
def calibrate(base: Any, data: Union[torch.Tensor, Steps], half: Optional[torch.Tensor],
              built: Sequence[Chain], deadline: Optional[float] = None) -> None:
    """The error estimate's scales, from ``data`` [V, T, Z, Y, X] (or :class:`Steps`: three
    steps are read again):

    * ``base.error_scale`` [2, V] (space, time), one level down as before issue 30's
      recalibration (model files made before it evaluate with these): in space from kept
      steps thinned to every other point, in time from the half series' held-out steps
      predicted with the base's own choice in time;
    * ``base.error_scale_down2``: the same two levels down (space: the thinned steps thinned
      again; time: the half series interpolated linearly at twice its held-out gap, with the
      same at its own gap beside it, ``time_levels``), and ``base.error_scale_data``, the
      scales applied at the data's level: each one-level scale times the factor it shrank
      by from two levels down to one (``level_factor``). The base's error relative to its
      indicators shrinks as the grid refines and the gap narrows (for smooth fields much
      faster than the indicators), which the one-level scales alone ignore;
    * ``base.error_cover_down1``: the share of the one-level-down points the data-level
      scales cover (stsr info prints it)."""
    gen = torch.Generator().manual_seed(0)         # the one-level scales' draws, as before
    more = torch.Generator().manual_seed(1)        # the new levels' own
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
            yield thinned_ratios(step, bound)

    down1 = sample_ratios(one_level(), gen, n1)
    down2 = sample_ratios(coarser, more, n2)
    base.error_scale[0].copy_(quantile_of(down1, v))
    base.error_scale_down2[0].copy_(quantile_of(down2, v))
    base.error_scale_data[0].copy_(base.error_scale[0] * level_factor(
        base.error_scale[0], base.error_scale_down2[0], SPACE_EXPONENT))
    base.error_cover_down1[0].copy_(coverage_of(down1, base.error_scale_data[0]))
    del down1, down2, coarser
    base.error_scale_data[1].copy_(base.error_scale[1])
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
    held = sample_ratios(ratios, gen)
    del ratios
    base.error_scale[1].copy_(quantile_of(held, v))
    q2, q4 = time_levels(half, more)
    base.error_scale_down2[1].copy_(base.error_scale[1] * torch.where(
        q2 > 0, q4 / q2.clamp_min(1e-30), torch.zeros_like(q2)))
    base.error_scale_data[1].copy_(base.error_scale[1] * level_factor(q2, q4,
                                                                      most=MOST_TIME_FACTOR))
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
def error_grid(base: Any, plan: GridPlan, t: float) -> torch.Tensor:
    """E at normalised time ``t`` on ``base``'s (a SplineBase's) planned grid
    [V, Zo, Yo, Xo], in the base's normalised units."""
    j, w = base._slot(t)
    if base.n_slots == 1 or w <= 0.0 or w >= 1.0:
        k = j if base.n_slots == 1 or w <= 0.0 else j + 1
        return combine(space_indicator(base, plan, k).clone(), None, 0.0, data_scales(base))
    space = torch.lerp(space_indicator(base, plan, j), space_indicator(base, plan, j + 1), w)
    lins, box = data_carry(base, plan)
    if plan.data_plan is None:        # the sides' disagreement on the data's own grid (the
        whole = all(box[2 * a] == 0 and box[2 * a + 1] == n - 1   # points a slab reads)
                    for a, n in enumerate(base.dims))
        plan.data_plan = base.plan_grid(lattice_axes(base.dims[::-1], space.device),
                                        None if whole else box)
    share_fields(plan, plan.data_plan)   # the same warps' grid as the output's: its fields
    apart = base.end_difference(plan.data_plan, t)
    return combine(space, separable(apart, lins), w, data_scales(base))


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
        plan.error_fields = {i: v for i, v in plan.error_fields.items() if abs(i - k) == 1}
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
