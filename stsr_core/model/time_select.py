"""Choosing each variable's interpolation in time from the kept steps alone, at the real gap
(issue 25): the fast base's default, ``base_time = "select"``.

The truth between kept steps is never given. Held-out kept steps (leave every other one out
and predict it from its neighbours) lie twice the real gap from their neighbours, where
features have moved twice as many cells: there motion compensation looks worse than it is
(on the plume it chose almost no motion, 3.3 dB below full motion between steps). So the
held-out steps are coarsened in space too, by the same factor as in time: every other kept
step of a series smoothed and thinned to every other point. Features then move as many of its
cells between its steps as the data's move between kept steps, and the displacement is fitted
on a grid as many of its cells wide as the data's (:func:`chain_options`). Each held-out step
is predicted only from steps of the other parity: the prediction never sees its target.

On that series every candidate is scored: linear and cubic in time (nothing moves), and
motion-compensated along straight or bent paths, linear or cubic along the path. The shares
are least squares on the held-out steps, clipped to [0, 1]. Paths bend unless straight ones
win there by ``BEND_MARGIN_DB``: a rotation turns twice as far per interval of the half
series as per interval of the data, so the held-out steps under-rate bent paths. Between the two families the
decision is made for all variables at once (they move together: where the motion model is
wrong for one it is wrong for all): the paths are taken when they beat the still candidates
by ``MOVE_MARGIN_DB`` on average, and a variable leaves the common choice only when its own
scores disagree by ``OWN_MARGIN_DB``.

Why the paths must win, not merely come close (issue 30, never below linear in time): the
half series matches the data's motion in cells per step, not its change of phase. Whatever
evolves in place or recurs (a wake's shedding, an oscillation) changes twice as far per step
of the half series, where both families predict the held-out steps about equally badly, so
the difference between them shrinks towards zero while its sign holds. Measured: on a
bluff body's wake every variable's held-out gain of the paths was -0.04 to -0.51 dB (mean
-0.32) while between the real kept steps the paths lost 2.1 dB to linear in time; on a scroll
ring (2026-12-03) the mean was +0.8 dB for a real gain of about 8 dB. So the sign of the mean decides, and a tie
goes to the still family (linear or cubic in time), the trivial answer that cannot be far
worse than the paths where they barely win.

The held-out steps can also favour the paths where nothing travels (fields that change in
place: the warps' smoothing shrinks a prediction of an unpredictable step towards its mean).
So the real gap is asked too, on the displacement fits' own copies of the kept steps
(:func:`carried_scores`, no extra fit or read): the motion must persist, carrying a step one
interval on by the displacement of the interval before it better than the same warp
reversed, by ``CARRIED_MARGIN_DB`` on average (measured: 5.8-10 dB on a tornado and fronts,
1.3-2.8 on a plume; -0.7 to +0.1 on a plume that gains nothing from the paths, -0.15 to
-0.65 on churning random fields).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from . import between_smooth
from .encodings import bspline_coefficients
from .grid_plan import GridPlan, lattice_axes, separable

MOVE_MARGIN_DB = 0.25      # the paths must win by more than this much on average
CARRIED_MARGIN_DB = 0.5    # and carry steps ahead better than reversed by this much (real gap)
OWN_MARGIN_DB = 3.0        # a variable leaves the common family when its own scores say so
BEND_MARGIN_DB = 0.5       # straight paths must win by this much on average
MAX_HELD_OUT = 8           # held-out steps of the half series scored (evenly spread)
TRILINEAR_MARGIN_DB = 0.02  # the share of trilinear between kept steps must gain this much
TIME_OVER_SPACE_DB = 3.0    # where the held-out steps' error is this much over the kept ones'
# a base of a chain's steps alone, its plan on the half series' grid, its held-out steps
Chain = Tuple[Any, GridPlan, List[Tuple[int, float]]]


def half_series(data: torch.Tensor) -> torch.Tensor:
    """``data`` [V, T, Z, Y, X] smoothed by a 3-point box per axis (so that thinning does not
    alias fine detail into the held-out comparison) and thinned to every other point
    -> [V, T, (Z+1)//2, (Y+1)//2, (X+1)//2]; an axis of one point stays."""
    return torch.stack([half_step(data[:, k]) for k in range(data.shape[1])], 1)


def half_step(step: torch.Tensor) -> torch.Tensor:
    """One step [V, Z, Y, X] of :func:`half_series` -> [V, (Z+1)//2, (Y+1)//2, (X+1)//2]."""
    x = step[None].to(torch.float32)                                   # [1, V, Z, Y, X]
    pad = [1 if n > 1 else 0 for n in x.shape[-1:-4:-1] for _ in (0, 1)]
    x = F.pad(x, pad, mode="replicate")
    kernel = [3 if n > 1 else 1 for n in step.shape[-3:]]
    return F.avg_pool3d(x, kernel, stride=1)[0, :, ::2, ::2, ::2].contiguous()


def chain_options(flow_options: Dict[str, object]) -> Dict[str, object]:
    """The displacement fit's settings for the half series: half the points per axis and
    half the coarsening, so its displacement grid spans as many of the data's cells as the
    real fits' does."""
    out = dict(flow_options)
    out["max_points"] = max(4, int(flow_options.get("max_points", 32)) // 2)
    out["coarsen"] = max(1, int(flow_options.get("coarsen", 2)) // 2)
    return out


def chains(n: int) -> List[List[int]]:
    """The kept steps of each parity that have a step of the other parity between two of
    them (a chain needs at least two steps)."""
    out = []
    for parity in (0, 1):
        c = list(range(parity, n, 2))
        if len(c) >= 2:
            out.append(c)
    return out


def chain_pairs(n: int) -> List[Tuple[int, int]]:
    """The displacement fits the choice needs: consecutive steps of each chain."""
    return [(c[i], c[i + 1]) for c in chains(n) for i in range(len(c) - 1)]


@dataclass
class Scores:
    """Normal equations of the held-out predictions, per variable: for a family with a
    share s between its two members P0 and P1 (P(s) = P0 + s (P1 - P0)), the squared error
    is ``e0 - 2 s b + s^2 a``. Keys: "still" (linear -> cubic in time), "moving0" and
    "moving1" (straight and bent paths: linear -> cubic along the path)."""

    n_vars: int
    sums: Dict[str, torch.Tensor] = field(default_factory=dict)    # name -> [V, 3]
    counts: Dict[str, int] = field(default_factory=dict)           # name -> points summed

    def add(self, name: str, p0: torch.Tensor, p1: torch.Tensor, y: torch.Tensor) -> None:
        """One held-out step: members ``p0``, ``p1`` and the target ``y`` ([V, ...])."""
        d = (p1 - p0).flatten(1).double()
        r = (y - p0).flatten(1).double()
        s = torch.stack([(r * r).sum(1), (d * r).sum(1), (d * d).sum(1)], 1)
        self.sums[name] = self.sums.get(name, torch.zeros_like(s)) + s
        self.counts[name] = self.counts.get(name, 0) + d.shape[1]

    def best(self, name: str) -> Tuple[torch.Tensor, torch.Tensor]:
        """Per variable the least-squares share in [0, 1] and its mean squared error."""
        e0, b, a = self.sums[name].unbind(1)
        share = torch.where(a > 0, b / a.clamp_min(1e-300), torch.zeros_like(b)).clamp(0, 1)
        err = (e0 - 2 * share * b + share * share * a).clamp_min(0)
        return share.float(), (err / max(1, self.counts[name])).float()


@dataclass
class Choice:
    """What the base uses between kept steps, per variable (``still_share``: cubic in time
    for still variables; ``moving``: 1 for motion-compensated, 0 for still;
    ``path_share``: cubic along the path) and for all (``bend``), with the held-out scores
    behind it (dB per variable and candidate, for ``stsr info``)."""

    still_share: torch.Tensor
    moving: torch.Tensor
    path_share: torch.Tensor
    bend: float
    report: Dict[str, object]


def decide(scores: Scores, variable_range: torch.Tensor, path: str = "auto",
           values: str = "auto", carried: Optional[Dict[str, torch.Tensor]] = None,
           subs_flows: Optional[Sequence[torch.Tensor]] = None) -> Choice:
    """The choice from the held-out scores (see the module docstring); ``variable_range``
    [V] is each variable's range on the half series (for dB). ``path`` ("straight",
    "bent") and ``values`` ("linear", "cubic") force those parts of the choice; "auto"
    leaves them to the scores. ``carried``: :func:`carried_scores` at the real gap;
    ``subs_flows``: the half series' displacements (all zero: the real gap decides)."""
    still_share, still_err = scores.best("still")
    cands = {"still": still_err}
    bends = [k for k in ("moving0", "moving1") if k in scores.sums]
    if not bends:
        return Choice(still_share, torch.zeros_like(still_share),
                      torch.zeros_like(still_share), 0.0,
                      {"held_out_db": _db({"still": still_err}, variable_range),
                       "reason": "no displacement for the held-out steps"})
    best = {k: scores.best(k) for k in bends}
    if values != "auto":          # the share along the path forced: its error at that share
        for k in bends:
            e0, b, a = scores.sums[k].unbind(1)
            share = torch.full_like(e0, 1.0 if values == "cubic" else 0.0)
            err = (e0 - 2 * share * b + share * share * a).clamp_min(0) / scores.counts[k]
            best[k] = (share.float(), err.float())
    for k in bends:
        cands["bent" if k == "moving1" else "straight"] = best[k][1]
    # the path's bend is one for all variables (the displacement is shared): bent unless
    # straight paths predict the held-out steps better by BEND_MARGIN_DB on average. The
    # half series' intervals turn twice as far as the data's (a rotation's angle does not
    # shrink with the grid), where a parabola fits worse than it will at the real gap: on
    # the benchmark's spiral and shear layer the held-out steps preferred straight paths by
    # 0.47 and 0.19 dB while bent ones were 0.09 and 0.14 dB better between the real steps
    bend_key = bends[-1]
    if path == "straight" or (path == "bent" and "moving1" not in bends):
        bend_key = "moving0"
    elif len(bends) == 2 and path == "auto":
        edge = 10 * torch.log10(best["moving1"][1].clamp_min(1e-30) /
                                best["moving0"][1].clamp_min(1e-30))
        if float(edge.mean()) > BEND_MARGIN_DB:
            bend_key = "moving0"
    path_share, move_err = best[bend_key]
    gain = 10 * torch.log10(still_err.clamp_min(1e-30) / move_err.clamp_min(1e-30))  # dB
    carried_db = {k: 10 * torch.log10(v.clamp_min(1e-30) / carried["ahead"].clamp_min(1e-30))
                  for k, v in carried.items() if k != "ahead"} if carried else {}
    # the motion found at the real gap must persist: carrying a step one interval on by the
    # displacement of the interval before it beats carrying it the other way (the same warp
    # and smoothing; only the direction differs), else the fits follow nothing there
    follows = "reversed" not in carried_db or \
        float(carried_db["reversed"].mean()) > CARRIED_MARGIN_DB
    if carried_db and subs_flows is not None and \
            not any(float(f.abs().max()) > 0 for f in subs_flows):
        # no displacement fitted on the half series (a stopped or spent fit): its moving
        # candidates are the still ones, so the real gap's check alone decides
        common_moving = follows
    else:
        common_moving = float(gain.mean()) > MOVE_MARGIN_DB and follows
    if common_moving:
        moving = (gain > -OWN_MARGIN_DB).float()
    else:
        moving = (gain > OWN_MARGIN_DB).float()
    report = {"held_out_db": _db(cands, variable_range),
              "motion_gain_db": [float(g) for g in gain],
              "common": "moving" if common_moving else "still",
              "carried_gain_db": {k: [float(x) for x in v] for k, v in carried_db.items()},
              "bend": bend_key == "moving1"}
    return Choice(still_share * (1 - moving), moving, path_share * moving,
                  1.0 if bend_key == "moving1" else 0.0, report)


@torch.no_grad()
def carried_scores(steps: Dict[int, torch.Tensor],
                   fits: Sequence[Optional[torch.Tensor]]) -> Optional[Dict[str, torch.Tensor]]:
    """At the real gap, on the displacement fits' own copies of the kept steps ``steps``
    (k -> [V, Z, Y, X]): each step carried one interval on by the displacement of the
    interval before it (``fits[j]``: step j onto j + 1), which never saw the step it is
    compared with -- forwards, K_j(x - u_{j-1}) against K_{j+1}, and backwards, K_j(x +
    u_j) against K_{j-1} -- beside the same step carried the other way (the same warp's
    smoothing, the motion reversed) and left where it is. Per variable the summed squared
    errors ("ahead", "reversed", "still"), or None with fewer than 3 kept steps or fits."""
    from .time_basis import warp
    n = len(steps)
    sums: Dict[str, torch.Tensor] = {}

    def add(name: str, pred: torch.Tensor, target: torch.Tensor) -> None:
        e = (pred - target).double().pow(2).flatten(1).sum(1)
        sums[name] = sums.get(name, torch.zeros_like(e)) + e

    for j in range(1, n - 1):
        for u, target, sign in ((fits[j - 1], steps[j + 1], -1.0),
                                (fits[j], steps[j - 1], 1.0)):
            if u is None:
                continue
            add("ahead", warp(steps[j], sign * u), target)
            add("reversed", warp(steps[j], -sign * u), target)
            add("still", steps[j], target)
    return sums or None


def _db(errs: Dict[str, torch.Tensor], rng: torch.Tensor) -> Dict[str, List[float]]:
    """PSNR-like dB of mean squared errors per candidate and variable."""
    out = {}
    for k, e in errs.items():
        out[k] = [float(20 * math.log10(max(float(r), 1e-30)) -
                        10 * math.log10(max(float(x), 1e-30))) for r, x in zip(rng, e)]
    return out


def half_chains(base: Any, half: torch.Tensor,
                fits: Dict[Tuple[int, int], Optional[torch.Tensor]],
                opts: Dict[str, object]) -> Iterator[Chain]:
    """Per chain of the half series a base of the same kind as ``base`` (a SplineBase) of
    the chain's steps alone, with their displacements ``fits`` (keyed by the steps' pair),
    planned on its own grid, and its held-out steps (index, normalised time): what each
    held-out step is predicted from never includes it."""
    times = base.slot_times.tolist()
    dims = tuple(half.shape[-1:-4:-1])                                    # x, y, z
    kind = "flow" if base.has_flow else ("cubic" if base.hermite else "linear")
    for chain in chains(len(times)):
        sub = type(base)(dims, base.n_vars, [times[i] for i in chain], base_time=kind,
                         flow_coarsen=int(opts["coarsen"]),
                         flow_max_points=int(opts["max_points"]), trainable=False
                         ).to(base.device)
        sub.fit_coefficients(half[:, chain], boundary=base.spline_boundary)
        if sub.has_flow:
            for i in range(len(chain) - 1):
                f = fits.get((chain[i], chain[i + 1]))
                if f is not None:
                    sub.flow[i].copy_(f)
        # the warps look up a grid 4x (2x where large) finer than the half series
        plan = sub.plan_grid(lattice_axes(half.shape[-3:], base.device), factors=(4, 2))
        yield sub, plan, [(chain[i] + 1, times[chain[i] + 1]) for i in range(len(chain) - 1)]


def spread(cases: List[Any]) -> List[Any]:
    """Up to MAX_HELD_OUT of ``cases``, evenly spread over them, in their order."""
    if len(cases) <= MAX_HELD_OUT:
        return cases
    keep = sorted({round(i * (len(cases) - 1) / (MAX_HELD_OUT - 1))
                   for i in range(MAX_HELD_OUT)})
    return [cases[i] for i in keep]


def held_out_cases(built: Sequence[Chain]) -> Iterator[Tuple[Any, GridPlan, int, float]]:
    """The chains' held-out steps as (base, plan, step, time): up to MAX_HELD_OUT, evenly
    spread over them, in the chains' order (so each chain's slot fields are evaluated
    once). A chain's fields on its grid are let go when its cases are done (the
    evaluation keeps the fields of the interval in use: on a large half series two of them
    weigh as much as a step of the data)."""
    cases = spread([(sub, plan, k, t) for sub, plan, held in built for k, t in held])
    try:
        for i, case in enumerate(cases):
            yield case
            if i + 1 == len(cases) or cases[i + 1][1] is not case[1]:
                _let_go(case[0], case[1])
    finally:                 # a caller that stops early (a deadline) lets go of them too
        for sub, plan, _ in built:
            _let_go(sub, plan)


def _let_go(sub: Any, plan: GridPlan) -> None:
    """Drop what evaluating ``sub`` on ``plan`` keeps (recomputed when asked again)."""
    plan.fields, plan.slope_fields, plan.error_fields, plan.buffers = {}, {}, {}, {}
    plan.interval = plan.disp = plan.accel = None
    sub._path_slopes = {}


@torch.no_grad()
def choose(base: Any, half: torch.Tensor, built: Sequence[Chain],
           deadline: Optional[float] = None,
           carried: Optional[Dict[str, torch.Tensor]] = None) -> None:
    """Score every candidate on the held-out steps of ``built`` (through the bases' own
    whole-grid evaluation; past ``deadline`` no more than one) and set ``base``'s shares
    from :func:`decide`; what was scored goes to ``base.selection`` (for stsr info)."""
    scores = Scores(base.n_vars)
    for n, (sub, plan, k, t) in enumerate(held_out_cases(built)):
        if n and deadline is not None and time.perf_counter() > deadline:
            base.fit_notes.append(f"scored {n} held-out steps of the half series for the "
                                  "choice in time, to keep within the time budget")
            break
        target = half[:, k]
        sub.flow_mix.zero_()
        sub.time_mix.zero_()
        p0 = sub.evaluate_grid(plan, t).clone()
        sub.time_mix.fill_(1.0)
        scores.add("still", p0, sub.evaluate_grid(plan, t), target)
        sub.time_mix.zero_()
        sub.flow_mix.fill_(1.0)
        for bend in ((0.0, 1.0) if sub.n_slots > 2 else (0.0,)):
            sub.path_bend.fill_(bend)
            sub.path_mix.zero_()
            p0 = sub.evaluate_grid(plan, t).clone()
            sub.path_mix.fill_(1.0)
            scores.add(f"moving{int(bend)}", p0, sub.evaluate_grid(plan, t), target)
    rng = (half.amax(dim=(1, 2, 3, 4)) - half.amin(dim=(1, 2, 3, 4))).cpu()
    choice = decide(scores, rng, base.flow_path, base.path_values, carried,
                    [sub.flow for sub, _, _ in built if sub.has_flow])
    base.time_mix.copy_(choice.still_share)
    base.flow_mix.copy_(choice.moving)
    base.path_mix.copy_(choice.path_share)
    base.path_bend.fill_(choice.bend)
    base.selection = choice.report


class TrilinearScores:
    """between_smooth.py's shares scored one level down in space and time, as the fit reads
    its kept steps (one pass, in time order: :meth:`add` from the spline's read): each
    step thinned to every other point (plainly: the half series' box smoothing made the
    targets between its points favour trilinear; Taylor-Green's temperature lost 1.1 dB
    with it) gets its cubic spline; a held-out step k is then predicted from steps k - 1
    and k + 1, linear in time, on the data's own grid (twice as fine as the thinned one),
    with each of between_smooth.SHARES, against the data's step k; and the step before it,
    from its own thinning alone (the error in space). Up to MAX_HELD_OUT held-out steps,
    evenly spread; between reads it holds the thinned splines of the last three steps that
    end a held-out step's interval and, when the next step scores it, the last step itself."""

    def __init__(self, base: Any) -> None:
        n = base.n_slots
        self.times = base.slot_times.tolist()
        self.boundary = base.spline_boundary
        self.held = set(spread(list(range(1, n - 1))))
        self.sums: Dict[Any, torch.Tensor] = {}    # share (or "kept") -> [V] squared errors
        self.coefs: Dict[int, torch.Tensor] = {}   # step -> its thinning's spline (last three)
        self.last: Optional[Tuple[int, torch.Tensor]] = None   # (k, step k) to score next
        self.mats: Dict[float, List[torch.Tensor]] = {}

    def _matrices(self, beta: float, thin: Sequence[int], fine: Sequence[int],
                  device: torch.device) -> List[torch.Tensor]:
        got = self.mats.get(beta)
        if got is None:
            got = self.mats[beta] = between_smooth.axis_matrices(lattice_axes(fine, device),
                                                                 thin[::-1], beta)
        return got

    def _add(self, key: Any, pred: torch.Tensor, target: torch.Tensor) -> None:
        e = (pred - target).double().pow(2).flatten(1).sum(1)
        self.sums[key] = self.sums.get(key, torch.zeros_like(e)) + e

    def add(self, k: int, step: torch.Tensor) -> None:
        """Kept step ``k`` [V, Z, Y, X] (normalised), read by the fit in time order."""
        thin = step[:, ::2, ::2, ::2]
        shape = tuple(thin.shape[1:])                                   # z, y, x
        fine = tuple(2 * m - 1 for m in shape)
        crop = (slice(None),) + tuple(slice(0, m) for m in fine)
        if k - 1 in self.held or k + 1 in self.held:   # an end of a held-out step's interval
            self.coefs[k] = torch.stack([bspline_coefficients(thin[v].to(torch.float32),
                                                              self.boundary[v])
                                         for v in range(thin.shape[0])])
            for old in [i for i in self.coefs if i < k - 2]:
                del self.coefs[old]
        if k + 1 in self.held:               # the step before a held-out one: space alone
            self._add("kept", separable(self.coefs[k], self._matrices(0.0, shape, fine,
                                                                       step.device)),
                      step[crop].to(torch.float32))
        if self.last is not None and self.last[0] == k - 1 and k - 2 in self.coefs:
            t0, t1, t = self.times[k - 2], self.times[k], self.times[k - 1]
            w = (t - t0) / (t1 - t0)
            part = self.coefs[k - 2] + w * (self.coefs[k] - self.coefs[k - 2])
            for share in (0.0,) + between_smooth.SHARES:
                beta = share * between_smooth.weight(w)
                self._add(share, separable(part, self._matrices(beta, shape, fine,
                                                                step.device)),
                          self.last[1])
        self.last = (k, step[crop].to(torch.float32).clone()) if k in self.held else None

    def apply(self, base: Any) -> None:
        """Set ``base.between_smooth``: per variable the share that scored best, where the
        choice keeps the variable still, the share gains ``TRILINEAR_MARGIN_DB`` over the
        spline and the held-out error is ``TIME_OVER_SPACE_DB`` over the kept steps' own
        (else 0). That last guard: where the error between steps is mostly the spatial one,
        what the blend gains one level down is trilinear beating the cubic spline on a grid
        too coarse for the field, which does not carry to the data's level (a rough field
        changing linearly in time: +0.55 dB one level down with the held-out error 0.4 dB
        over the kept one, -1.9 dB between the data's steps; a Taylor-Green vortex's
        vorticity magnitude: 3.9 dB over, +0.31 dB one level down, +0.4 to +1.0 dB between
        the data's steps). The scores go to ``base.selection`` ("trilinear_share",
        "trilinear_gain_db", "time_over_space_db")."""
        self.coefs.clear()
        self.last = None
        if 0.0 not in self.sums or "kept" not in self.sums:
            return
        still = base.flow_mix == 0 if base.has_flow else \
            torch.ones(base.n_vars, dtype=torch.bool)
        shares = torch.tensor(between_smooth.SHARES)
        errs = torch.stack([self.sums[s] for s in between_smooth.SHARES])       # [S, V]
        best = errs.argmin(0)
        plain = self.sums[0.0].clamp_min(1e-300)
        gain = 10 * torch.log10(plain / errs.gather(0, best[None])[0].clamp_min(1e-300))
        time_db = 10 * torch.log10(plain / self.sums["kept"].clamp_min(1e-300))
        use = still.cpu() & (gain > TRILINEAR_MARGIN_DB) & (time_db > TIME_OVER_SPACE_DB)
        base.between_smooth.copy_(torch.where(use, shares[best], torch.zeros_like(gain)))
        base.selection["trilinear_share"] = [float(x) for x in base.between_smooth]
        base.selection["trilinear_gain_db"] = [float(g) for g in gain]
        base.selection["time_over_space_db"] = [float(g) for g in time_db]
