"""Fine-tuning and gating the spatial prior on a model's own series, one level down (the
fit's part of issue 30's prior; the network is space_prior.py's, a model's choice
space_residual.py's).

The kept steps are coarsened once more (every other point) and the base, the cubic
B-spline through those, is scored where the truth is known: the kept steps' own points in
between. There, per variable:

* the shipped network's correction is scored as is;
* a copy of it is fine-tuned (same loss as offline: each field's dB change) on the even
  kept steps, within the fit's time budget, and scored on the odd ones, which it never saw
  (one kept step: no fine-tuning);
* each variable uses the network that gains most over the base there, if that gain is at
  least ``GATE_MARGIN_DB``; otherwise the base alone (noise, a field the spline already
  represents exactly, or one the networks only make worse).

What one level down says does not carry over one to one (the base's error shrinks from one
scale to the next, fast for smooth fields); the margin and scoring on held-out steps guard
against the obvious cases, and ``stsr info`` prints every decision with its scores.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch

from .space_prior import (PriorNet, copy_net, detail, gather_fine, inputs, log_ratio,
                          normalise, random_crop, spline_on_fine_lattice, valid_mask)
from .space_residual import USES, SpaceResidual
from .steps import Steps, as_steps

GATE_MARGIN_DB = 0.1     # the least gain one level down for a variable to use a network
TUNE_LR = 2e-4           # Adam, a fifth of the offline rate: a copy that stays near it
TUNE_MAX_STEPS = 400     # fine-tuning steps at most (the time budget usually ends it first)
TUNE_BATCH = 4           # fields per step
CROP = 24                # fields larger than this (per axis, one level down) train on crops
CROP_MARGIN = 4          # points at a crop's inner faces left out of its loss
MIN_POINTS = 5           # one level down, every axis of more than one point needs this many
MAX_SCORED_STEPS = 8     # kept steps scored per variable at most (evenly spread)
MAX_LEVEL_POINTS = 48    # points per axis one level down kept of each (a box of the step)
PSNR_CAP_DB = 100.0      # errors below this share of the range count as this (exact fields)


@dataclass
class Pairs:
    """One level down: per (variable, kept step) the normalised coarser field, the
    residual of its spline on the kept step's own points (fine lattice), and the range."""

    inputs: torch.Tensor            # [P, Z2, Y2, X2] normalised by each field's range
    targets: torch.Tensor           # [P, SUB, Z2, Y2, X2] residual, same units
    var: List[int]                  # the variable of each pair
    step: List[int]                 # its kept step
    scale: torch.Tensor             # [P] truth's range / the input's (PSNR's range)


def level_down(data: Steps, steps: Sequence[int], most: int = MAX_LEVEL_POINTS
               ) -> Optional[Pairs]:
    """The pairs of ``data`` (normalised steps) at kept steps ``steps``, read one at a time;
    None when the coarser grid is too small for the network to see anything. Per step
    at most ``most`` points per axis one level down are kept: a box of the step at a place
    that moves from step to step (what is scored and tuned on stays bounded at any size
    and, over the steps, covers the whole grid)."""
    v_count = data.n_vars
    z, y, x = data.shape
    down = [(n + 1) // 2 for n in (z, y, x)]
    if any(1 < n < 2 * MIN_POINTS - 1 for n in (z, y, x)) or max(down) < MIN_POINTS:
        return None
    box = [min(m, most) for m in down]                            # points one level down
    keep = [2 * (m - 1) + 1 for m in box]                         # the truth's points
    coarse_in, targets, var, step, scale = [], [], [], [], []
    for i, t in enumerate(steps):
        # the box's start: spread over the grid along each axis, a different place per step
        frac = [((i * g) % max(1, len(steps))) / max(1, len(steps) - 1) if len(steps) > 1
                else 0.5 for g in (1, 3, 5)]
        start = [2 * int(round(f * (d - b))) for f, d, b in zip(frac, down, box)]
        truth = data.step(t)[:, start[0]:start[0] + keep[0], start[1]:start[1] + keep[1],
                             start[2]:start[2] + keep[2]].to(torch.float32)  # [V, ...]
        coarse = truth[:, ::2, ::2, ::2]
        x_n, centre, half = normalise(coarse)
        safe = torch.where(half > 0, half, torch.ones_like(half)).view(-1, 1, 1, 1)
        fine = (truth - centre.view(-1, 1, 1, 1)) / safe
        res = fine - spline_on_fine_lattice(x_n)
        rng = truth.flatten(1).amax(1) - truth.flatten(1).amin(1)
        coarse_in.append(x_n)
        targets.append(gather_fine(res))
        var += list(range(v_count))
        step += [t] * v_count
        scale.append(rng / (2 * safe.flatten()))
        del truth, fine, res
    return Pairs(torch.cat(coarse_in), torch.cat(targets), var, step, torch.cat(scale))


def _gains(net: Optional[PriorNet], pairs: Pairs, rows: Sequence[int]) -> torch.Tensor:
    """Per pair of ``rows`` the PSNR gain (dB) of base + the net's correction over the base
    alone, both capped at :data:`PSNR_CAP_DB` (a field the base gets exactly gains 0 with
    a net that adds nothing and loses with one that adds something)."""
    out = []
    mask = valid_mask(pairs.inputs.shape[1:], pairs.inputs.device)
    count = float(mask.sum()) * 8 / 7
    with torch.no_grad():
        for r in rows:
            tgt = pairs.targets[r:r + 1]
            pred = net(pairs.inputs[r:r + 1, None])
            floor = (2 * float(pairs.scale[r]) * 10 ** (-PSNR_CAP_DB / 20)) ** 2
            base = float((tgt ** 2 * mask).sum()) / count + floor
            left = float(((pred - tgt) ** 2 * mask).sum()) / count + floor
            out.append(10 * math.log10(base / left) if floor > 0 else 0.0)
    return torch.tensor(out)


def _per_var(gains: torch.Tensor, pairs: Pairs, rows: Sequence[int], n_vars: int
             ) -> List[Optional[float]]:
    """The mean gain per variable over ``rows`` (None: no row of that variable)."""
    out: List[Optional[float]] = []
    for v in range(n_vars):
        g = [float(gains[i]) for i, r in enumerate(rows) if pairs.var[r] == v]
        out.append(sum(g) / len(g) if g else None)
    return out


def _batch(pairs: Pairs, rows: Sequence[int], gen: torch.Generator
           ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pairs ``rows`` under a random flip and sign: the network's inputs and scale (from
    the whole fields, as at inference), the targets and the loss mask, cut to at most
    :data:`CROP` points per axis at one random place (space_prior.random_crop)."""
    x, y = pairs.inputs[list(rows)][:, None], pairs.targets[list(rows)]
    flips = [d + 2 for d in range(3) if torch.rand((), generator=gen) < 0.5]
    if flips:
        x, y = x.flip(flips), y.flip(flips)
    sign = -1.0 if torch.rand((), generator=gen) < 0.5 else 1.0
    x, y = sign * x, sign * y
    mask = valid_mask(x.shape[2:], x.device)
    if flips:
        mask = mask.flip(flips)
    (feats, scale, y), mask = random_crop([inputs(x), detail(x), y], mask, CROP, gen,
                                          CROP_MARGIN)
    return feats, scale, y, mask


def fine_tune(net: PriorNet, pairs: Pairs, rows: Sequence[int], deadline: float,
              stop: Callable[[], bool], seed: int = 0) -> Tuple[PriorNet, int]:
    """A copy of ``net`` trained on the pairs ``rows`` until ``deadline`` (perf_counter),
    :data:`TUNE_MAX_STEPS` steps or ``stop()``; returns it and the steps done."""
    tuned = copy_net(net)
    opt = torch.optim.Adam(tuned.parameters(), lr=TUNE_LR)
    gen = torch.Generator().manual_seed(seed)
    steps = 0
    while steps < TUNE_MAX_STEPS and time.perf_counter() < deadline and not stop():
        pick = torch.randint(len(rows), (min(TUNE_BATCH, len(rows)),), generator=gen)
        feats, scale, y, mask = _batch(pairs, [rows[i] for i in pick.tolist()], gen)
        loss = log_ratio(tuned.body(feats, scale), y, mask).mean()
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(tuned.parameters(), 1.0)
        opt.step()
        steps += 1
    return tuned.requires_grad_(False).eval(), steps


def _spread(items: Sequence[int], most: int) -> List[int]:
    """At most ``most`` of ``items``, evenly spread (first and last kept)."""
    if len(items) <= most:
        return list(items)
    idx = torch.linspace(0, len(items) - 1, most).round().long().tolist()
    return [items[i] for i in sorted(set(idx))]


def choose(space: SpaceResidual, data: Union[torch.Tensor, Steps], mode: str,
           budget_s: Optional[float], tune_s: float,
           stop: Callable[[], bool] = lambda: False) -> Dict[str, object]:
    """Set ``space``'s choice per variable from ``data`` [V, T, Z, Y, X] (normalised kept
    steps, or :class:`Steps` reading them one at a time): ``mode`` "gate" (each variable the best of base, shipped and fine-tuned one
    level down, a network only with at least GATE_MARGIN_DB), "shipped" or "tuned" (that
    one for every variable: the ablation's rows). Fine-tuning stops at ``tune_s`` seconds,
    the end of ``budget_s`` or ``stop()``. Returns the report ``stsr info`` prints (lists
    in the variables' order)."""
    t0 = time.perf_counter()
    data = as_steps(data)
    n_vars, n_steps = data.n_vars, data.n_steps
    report: Dict[str, object] = {"mode": mode, "margin_db": GATE_MARGIN_DB}
    kept = _spread(list(range(n_steps)), MAX_SCORED_STEPS)
    pairs = level_down(data, kept)
    shipped = space.shipped().to(data.device)
    if pairs is None:
        use = [1] * n_vars if mode in ("shipped", "tuned") else [0] * n_vars
        space.set_use(use, None)
        report.update({"decision": [USES[u] for u in use],
                       "note": "one level down the grid is too small to score the prior "
                               "(fewer than 5 points per axis)",
                       "seconds": round(time.perf_counter() - t0, 2)})
        return report
    rows = list(range(len(pairs.var)))
    train_rows = [r for r in rows if kept.index(pairs.step[r]) % 2 == 0]
    held_rows = [r for r in rows if kept.index(pairs.step[r]) % 2 == 1]
    scored_rows = held_rows or rows
    g_ship = _per_var(_gains(shipped, pairs, scored_rows), pairs, scored_rows, n_vars)
    tuned, steps, g_tune = None, 0, [None] * n_vars
    tune_end = time.perf_counter() + tune_s           # the fine-tuning's own seconds
    if budget_s is not None:
        tune_end = min(tune_end, t0 + budget_s - _scoring_reserve(time.perf_counter() - t0))
    if mode != "shipped" and held_rows and time.perf_counter() < tune_end:
        t1 = time.perf_counter()
        tuned, steps = fine_tune(shipped, pairs, train_rows, tune_end, stop)
        report["tune_s"] = round(time.perf_counter() - t1, 2)
        g_tune = _per_var(_gains(tuned, pairs, held_rows), pairs, held_rows, n_vars)
    elif mode != "shipped":
        report["tune_note"] = ("one kept step: nothing held out to score a fine-tuning on"
                               if not held_rows else "no time left in the budget")
    use = []
    for v in range(n_vars):
        options = [(0.0, 0)]
        if g_ship[v] is not None:
            options.append((g_ship[v], 1))
        if g_tune[v] is not None:
            options.append((g_tune[v], 2))
        if mode == "shipped":
            use.append(1)
        elif mode == "tuned":
            use.append(2 if tuned is not None else 1)
        else:
            best_gain, best = max(options)
            use.append(best if best and best_gain >= GATE_MARGIN_DB else 0)
    space.set_use(use, tuned)
    report.update({
        "decision": [USES[u] for u in use],
        "gain_db_shipped": [_round(g) for g in g_ship],
        "gain_db_tuned": [_round(g) for g in g_tune],
        "scored_on": "odd kept steps one level down" if held_rows else
                     "every kept step one level down",
        "tune_steps": steps,
        "seconds": round(time.perf_counter() - t0, 2)})
    return report


def _scoring_reserve(spent: float) -> float:
    """Seconds to keep for scoring the tuned network after tuning: as long as scoring the
    shipped one took (the same passes), with a little slack."""
    return 1.5 * spent + 1.0


def _round(g: Optional[float]) -> Optional[float]:
    return None if g is None else round(float(g), 3)
