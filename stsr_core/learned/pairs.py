"""Training pairs made from the coarse series alone (internal learning across scales).

The coarse series holds the same structures one scale down: keep every other point (or every
other kept step) of it, fit the same analytic base to that, and what the base then misses at
the points it skipped is a sample of what it misses one level up, where the user asks for
points that were never saved. Three kinds of pairs, each a *level* below the data:

* ``space``: every other point of each kept step; targets: the coarse points that are not
  on that lattice, at the kept steps (time fraction 0);
* ``space_time``: the same lattice at every other kept step; targets: every coarse point at
  the steps left out (in-between, at a finer grid: what upscaling asks for between steps);
* ``time``: the full coarse grid at every other kept step; targets: the steps left out.

Left-out steps are taken both ways (the odd steps predicted from the even ones, and the
interior even ones from the odd ones), as the base's own time cross-validation does.

Each pair keeps what the decoder needs: the level's lattice values at the two neighbouring
slots and the level's base at the target time (the encoder's input), and the residual of
that base at the target points. No reference data is involved anywhere.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch

from ..model.grid_plan import GridPlan
from ..model.spline_base import SplineBase

KINDS = ("space", "space_time", "time")
MIN_LATTICE_POINTS = 4     # an axis is coarsened only when its lattice keeps this many points


@dataclass
class Pair:
    """One target time of one level: what the encoder sees and what the decoder must add."""

    kind: str                  # one of KINDS
    inputs: torch.Tensor       # [3V, Zl, Yl, Xl]: slot j, slot j + 1, the level's base at t
    residual: torch.Tensor     # [V, Zt, Yt, Xt]: coarse data minus the level's base at t
    factor: Tuple[int, int, int]  # target points per lattice cell (x, y, z): 1 or 2
    w: float                   # time fraction between the two slots (0 at a kept step)
    mask: torch.Tensor         # [Zt, Yt, Xt] bool: targets (not lattice points for space)


def lattice_factors(dims_xyz: Sequence[int]) -> Tuple[int, int, int]:
    """Per axis (x, y, z): 2 where the coarse grid has points enough to keep every other
    one (at least MIN_LATTICE_POINTS of them), else 1 (a thin axis stays as it is)."""
    return tuple(2 if (d - 1) // 2 + 1 >= MIN_LATTICE_POINTS else 1
                 for d in dims_xyz)  # type: ignore[return-value]


def cropped_dims(dims_xyz: Sequence[int], factors: Sequence[int]) -> Tuple[int, int, int]:
    """The coarse points per axis used for pairs: an odd count where the axis is coarsened
    by 2, so that its lattice spans the same range (the last point of an even axis is not a
    target)."""
    return tuple(d - (1 - d % 2) if f == 2 else d
                 for d, f in zip(dims_xyz, factors))  # type: ignore[return-value]


def left_out_steps(n: int) -> List[Tuple[List[int], List[int]]]:
    """(kept, predicted) step lists: odd steps from the even ones, interior even steps from
    the odd ones; [] when there are too few steps to leave any out (fewer than 3)."""
    if n < 3:
        return []
    even, odd = list(range(0, n, 2)), list(range(1, n, 2))
    out = [(even, [s for s in odd if even[0] < s < even[-1]])]
    inner = [s for s in even if odd[0] < s < odd[-1]]
    if len(odd) >= 2 and inner:
        out.append((odd, inner))
    return [(k, p) for k, p in out if p]


def _fit_level(data: torch.Tensor, times: Sequence[float], base_kw: dict, flow_options: dict,
               budget_s: Optional[float]) -> SplineBase:
    """The same analytic base as the model's, fitted to one level's data [V, T, Z, Y, X]."""
    v, _, z, y, x = data.shape
    base = SplineBase((x, y, z), v, list(times), trainable=False, **base_kw).to(data.device)
    base.fit(data, flow_options, None, budget_s)
    return base


def _on_grids(base: SplineBase) -> Callable[[float, Tuple[int, int, int]], torch.Tensor]:
    """``on(t, dims_xyz)``: the base at normalised time t on the grid of ``dims_xyz`` points
    spanning its bounds -> [V, Z, Y, X]. One plan per grid, kept for every step asked of
    it: the plan holds the current interval's slot fields, so the steps inside one interval
    (and the lattice and target grids of one level) do not evaluate them again."""
    plans: Dict[Tuple[int, int, int], GridPlan] = {}

    def on(t: float, dims_xyz: Tuple[int, int, int]) -> torch.Tensor:
        plan = plans.get(dims_xyz)
        if plan is None:
            axes = [torch.linspace(-1.0, 1.0, n, device=base.device) for n in dims_xyz]
            plan = plans[dims_xyz] = base.plan_grid(axes)
        return base.evaluate_grid(plan, t).clone()
    return on


def _inputs(level: torch.Tensor, base: SplineBase, on, t: float) -> Tuple[torch.Tensor, float]:
    """Encoder input on the level's lattice at normalised time t: the two neighbouring
    slots' values and the base at t (``on``: :func:`_on_grids` of ``base``) ->
    ([3V, Z, Y, X], time fraction)."""
    j, w = base._slot(t)
    k = min(j + 1, level.shape[1] - 1)
    lattice = tuple(level.shape[-1:-4:-1])
    return torch.cat([level[:, j], level[:, k], on(t, lattice)]), w


def build_pairs(data: torch.Tensor, times: Sequence[float], base_kw: dict,
                flow_options: dict, budget_s: Optional[float] = None,
                kinds: Sequence[str] = KINDS,
                progress: Optional[Callable[[str], None]] = None) -> List[Pair]:
    """Pairs of every kind in ``kinds`` from the coarse ``data`` [V, T, Z, Y, X] (normalised)
    at normalised ``times``; ``base_kw``/``flow_options`` configure the level's base as the
    model's; ``budget_s`` bounds each level's displacement fits."""
    v, n_t, z, y, x = data.shape
    fx, fy, fz = lattice_factors((x, y, z))
    cx, cy, cz = cropped_dims((x, y, z), (fx, fy, fz))
    crop = data[:, :, :cz, :cy, :cx]
    lattice = crop[:, :, ::fz, ::fy, ::fx]
    pairs: List[Pair] = []
    space_mask = torch.ones(cz, cy, cx, dtype=torch.bool, device=data.device)
    space_mask[::fz, ::fy, ::fx] = False       # lattice points: the base reproduces them
    full = torch.ones(cz, cy, cx, dtype=torch.bool, device=data.device)
    coarsened = (fx, fy, fz) != (1, 1, 1)
    if "space" in kinds and coarsened:
        if progress:
            progress("space")
        base = _fit_level(lattice, times, base_kw, flow_options, budget_s)
        on = _on_grids(base)
        for k in range(n_t):
            inp, w = _inputs(lattice, base, on, times[k])
            res = crop[:, k] - on(times[k], (cx, cy, cz))
            pairs.append(Pair("space", inp, res, (fx, fy, fz), w, space_mask))
    for kind, level, factor in (("space_time", lattice, (fx, fy, fz)),
                                ("time", crop, (1, 1, 1))):
        if kind not in kinds or (kind == "space_time" and not coarsened):
            continue
        for kept, predicted in left_out_steps(n_t):
            if progress:
                progress(kind)
            sub_t = [times[i] for i in kept]
            base = _fit_level(level[:, kept], sub_t, base_kw, flow_options, budget_s)
            on = _on_grids(base)
            for s in predicted:
                inp, w = _inputs(level[:, kept], base, on, times[s])
                res = crop[:, s] - on(times[s], (cx, cy, cz))
                pairs.append(Pair(kind, inp, res, factor, w, full))
    return pairs


def group_of(kind: str) -> str:
    """The share a pair kind informs: at kept steps ("kept") or between them ("between")."""
    return "kept" if kind == "space" else "between"


def lower_pairs(data: torch.Tensor, times: Sequence[float], base_kw: dict,
                flow_options: dict, budget_s: Optional[float] = None,
                kinds: Sequence[str] = KINDS) -> List[Pair]:
    """Pairs one level further down, where a decoder's transfer to the data's own level can
    be measured: space pairs from the data thinned to every other point, in-between pairs
    from every other kept step."""
    fx, fy, fz = lattice_factors(tuple(data.shape[-1:-4:-1]))
    out: List[Pair] = []
    if "space" in kinds and (fx, fy, fz) != (1, 1, 1):
        out += build_pairs(data[:, :, ::fz, ::fy, ::fx], times, base_kw, flow_options,
                           budget_s, kinds=("space",))
    timed = [k for k in kinds if k != "space"]
    if timed and data.shape[1] >= 3:
        steps = list(range(0, data.shape[1], 2))
        out += build_pairs(data[:, steps], [times[i] for i in steps], base_kw, flow_options,
                           budget_s, kinds=timed)
    return out


def residual_rms(pairs: List[Pair]) -> Dict[str, torch.Tensor]:
    """Per group, the RMS of the pairs' residual at their targets, per variable [V]."""
    acc: Dict[str, List[torch.Tensor]] = {}
    for p in pairs:
        acc.setdefault(group_of(p.kind), []).append(p.residual[:, p.mask].double())
    return {g: torch.cat(rs, 1).pow(2).mean(1).sqrt() for g, rs in acc.items()}


def probe_lattice_points(dims_xyz: Sequence[int]) -> int:
    """Points per axis of the probe's lattice (two thinnings down), the fewest over the
    axes that are thinned both times; 0 when no axis is."""
    out = []
    for n in dims_xyz:
        n1 = (n - 1) // 2 + 1                       # the pairs' lattice
        n2 = (n1 - 1) // 2 + 1                      # the probe's
        if n1 >= MIN_LATTICE_POINTS and n2 >= MIN_LATTICE_POINTS:
            out.append(n2)
    return min(out) if out else 0
