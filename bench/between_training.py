"""Training a network between kept steps on generated series with their full-rate truth: the
parts bench/train_side_weights.py and bench/train_time_refine.py share, so both networks are
trained on the same data, by the same loss and loop, and scored alike.

Stage 1 (:func:`extract`, cached per series by :func:`cached`): keep every k-th step of a
series of examples/data/training_families.py, fit the engine's base to the kept steps and
take, at every step in between, both sides' values along the path, the rest of the base's
prediction, the truth, how far each side's lookup lies outside the box and the path's motion.
Stage 2 (:func:`train`): Adam on the mean over (step, variable) of log(MSE with the network /
the base's MSE), resumable from a checkpoint; :func:`summary` scores whole series.
A script supplies its network and how it predicts a step (a :class:`Case` subclass).
"""
from __future__ import annotations

import math
import os
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from stsr_core import api
from stsr_core.blocks import normalise_times
from stsr_core.model.error_estimate import lattice_axes
from stsr_core.series import VolumeSeries
from bench.offline_training import seed_list

MSE_FLOOR = 1e-6   # normalised units (range 2): errors below ~66 dB count as that


def gap_for(seed: int) -> int:
    """Kept every 4th step (the benchmark's gap), every 4th series every 3rd step (other
    fractions of the interval)."""
    return 3 if seed % 4 == 3 else 4


# --- stage 1: the two sides, the motion and the truth between kept steps (cached) ----------
def extract(seed: int, flow_iters: int, size: Optional[int] = None,
            base_time: str = "select") -> Dict[str, object]:
    """Series ``seed`` (``size``: its points per axis, None: the family's): per step between
    kept ones the fraction w, both sides [2, V, Z, Y, X], the rest of the base's prediction
    (what does not depend on the sides' weights: the cubic's share along the path), the
    truth (normalised units), the sides' distance outside [2, Z, Y, X], the motion
    [2, Z, Y, X] and which variables the base moves (only those are learned on;
    ``base_time``: the base's choice in time, ``select`` as a user's model)."""
    from dataclasses import replace
    from examples.data.training_families import draw, render, sample
    k = gap_for(seed)
    fine = sample(seed) if size is None else render(replace(draw(seed), n=size))
    n_steps = (fine.n_times - 1) // k * k + 1
    keep = list(range(0, n_steps, k))
    coarse = VolumeSeries(times=fine.times[keep],
                          variables={n: a[keep] for n, a in fine.variables.items()},
                          origin=fine.origin, spacing=fine.spacing)
    t0 = time.perf_counter()
    tm = api.fit(coarse, "fast", steps=0, max_minutes=None, device="cpu", seed=0,
                 model_overrides={"base_time": base_time, "flow_iters": flow_iters})
    fit_s = time.perf_counter() - t0
    base, info = tm.model.base, tm.info
    plan = base.plan_grid(lattice_axes(base.dims[::-1], torch.device("cpu")))
    times = normalise_times(torch.tensor(fine.times[:n_steps], dtype=torch.float64),
                            info.times[0], info.times[-1])
    ws, ends, rest, truth, outside, motion = [], [], [], [], [], []
    for t in range(n_steps):
        if t % k == 0:
            continue
        tn = float(times[t])
        j, w = base._slot(tn)
        both = base._end_values_at(plan, j, w)                          # [2, V, Z, Y, X]
        today = base.evaluate_grid(plan, tn).clone()                   # [V, Z, Y, X]
        ws.append(w)
        outside.append(base.side_outside(plan, j, w))
        motion.append(base.side_motion(plan, j, w))
        ends.append(both)
        rest.append(today - torch.lerp(both[1], both[0], 1.0 - w))
        truth.append(torch.from_numpy(np.stack(
            [info.stats[n].normalise(fine.variables[n][t]) for n in info.variables])).float())
    recipe = draw(seed)
    return {"seed": seed, "gap": k, "w": ws, "ends": torch.stack(ends),
            "rest": torch.stack(rest), "truth": torch.stack(truth),
            "outside": torch.stack(outside), "motion": torch.stack(motion),
            "moving": (base.flow_mix != 0).clone(), "variables": list(info.variables),
            "kinds": [f.kind for f in recipe.fields], "fit_s": fit_s,
            "cells_per_step": recipe.cells_per_step}


def cached(path: str, make: Callable[[], Dict[str, object]]) -> Dict[str, object]:
    """``make()``'s series, kept in ``path`` (a temp file renamed: a killed run leaves
    none)."""
    if os.path.exists(path):
        return torch.load(path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    item = make()
    torch.save(item, path + ".tmp")
    os.replace(path + ".tmp", path)
    return item


# --- stage 2: the network ------------------------------------------------------------------
class Case:
    """One series' steps between kept ones, its moved variables alone: both sides, the
    base's prediction's rest, the truth, each side's distance outside and the motion
    ([S, ...]), the fractions [S]. A subclass's ``predict`` applies its network."""

    def __init__(self, item: Dict[str, object]):
        moving = item["moving"].nonzero(as_tuple=True)[0]               # type: ignore[union-attr]
        self.seed = int(item["seed"])                                    # type: ignore[arg-type]
        self.fit_s = float(item["fit_s"])                                # type: ignore[arg-type]
        self.kinds = item["kinds"]
        self.w = torch.tensor(item["w"], dtype=torch.float32)            # [S]
        self.ends = item["ends"][:, :, moving]                # type: ignore[index]  # [S, 2, V, ...]
        self.rest = item["rest"][:, moving]                   # type: ignore[index]  # [S, V, ...]
        self.truth = item["truth"][:, moving]                 # type: ignore[index]
        self.outside = item["outside"]                        # type: ignore[index]  # [S, 2, ...]
        self.motion = item.get("motion")                      # [S, 2, ...] (older caches: none)
        self.n_vars = len(moving)

    def step(self, s: int, signs: Optional[torch.Tensor] = None
             ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Both sides, the rest and the truth at step ``s``, the variables' signs flipped by
        ``signs`` [V] (augmentation: a variable's sign is a convention of its data set)."""
        ends, rest, truth = self.ends[s], self.rest[s], self.truth[s]
        if signs is not None:
            g = signs.view(-1, 1, 1, 1)
            ends, rest, truth = ends * g, rest * g, truth * g
        return ends, rest, truth

    def predict(self, net: Optional[nn.Module], s: int, signs: Optional[torch.Tensor] = None
                ) -> Tuple[torch.Tensor, torch.Tensor]:
        """(prediction, truth) [V, Z, Y, X] at step ``s`` with ``net`` (None: the base's)."""
        raise NotImplementedError


def step_db(pred: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """Per variable PSNR [V] of one step (the variable's range at that step, as
    stsr_core.metrics scores it); a variable with no range or no error is left out (nan)."""
    err = (pred - truth).flatten(1).pow(2).mean(1)
    rng = truth.flatten(1).amax(1) - truth.flatten(1).amin(1)
    db = 20 * torch.log10(rng) - 10 * torch.log10(err)
    return torch.where(torch.isfinite(db), db, torch.full_like(db, math.nan))


def score(cases: Sequence[Case], net: Optional[nn.Module]) -> Dict[int, float]:
    """Per series the mean PSNR between steps (over steps and moved variables)."""
    out = {}
    with torch.no_grad():
        for c in cases:
            if not c.n_vars:
                out[c.seed] = math.nan
                continue
            dbs = torch.stack([step_db(*c.predict(net, s)) for s in range(len(c.w))])
            out[c.seed] = float(np.nanmean(dbs.numpy()))
    return out


def summary(cases: Sequence[Case], net: nn.Module, base_key: str = "base_db"
            ) -> Dict[str, object]:
    """The base's (as ``base_key``) and the network's dB between steps per series, and the
    mean and worst gain."""
    before, after = score(cases, None), score(cases, net)
    gains = [after[s] - before[s] for s in before if not math.isnan(before[s])]
    return {"series": {str(s): {"kinds": c.kinds, base_key: round(before[s], 3),
                                "net_db": round(after[s], 3)}
                       for s, c in zip(before, cases)},
            "mean_gain_db": round(float(np.mean(gains)), 3) if gains else math.nan,
            "worst_gain_db": round(float(np.min(gains)), 3) if gains else math.nan}


def train(make_net: Callable[[], nn.Module], cases: Sequence[Case], steps: int, lr: float,
          batch: int, seed: int, log: Callable[[str], None] = print, log_every: int = 100,
          checkpoint: Optional[str] = None, every: int = 100,
          settings: Optional[list] = None) -> nn.Module:
    """Adam (cosine schedule) on the mean over (step, variable) of log(MSE with the network
    / the base's MSE): the mean change of PSNR between steps (x -10 / ln 10), each step and
    variable alike, on the parameters of ``make_net()`` (made after seeding torch with
    ``seed``) that require grad. With ``checkpoint``: resumed from it when it exists (made
    with the same ``settings``) and written every ``every`` steps."""
    torch.manual_seed(seed)
    net = make_net()
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    start, run = 0, 0.0
    if checkpoint and os.path.exists(checkpoint):
        state = torch.load(checkpoint, weights_only=False)
        if state["settings"] != settings:
            raise SystemExit(f"{checkpoint} was written with other settings "
                             f"{state['settings']}: remove it or use them")
        net.load_state_dict(state["net"])
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        gen.set_state(state["gen"])
        start, run = int(state["step"]), float(state["run"])
        log(f"resumed at step {start} from {checkpoint}")
    pool = [(i, s) for i, c in enumerate(cases) for s in range(len(c.w)) if c.n_vars]
    if not pool:
        raise SystemExit("no training series has a variable the base moves: nothing to learn")
    base = {}
    with torch.no_grad():
        for i, s in pool:
            p, y = cases[i].predict(None, s)
            base[(i, s)] = (p - y).flatten(1).pow(2).mean(1) + MSE_FLOOR
    t0 = time.perf_counter()
    for step in range(start, steps):
        pick = torch.randint(len(pool), (batch,), generator=gen).tolist()
        loss = 0.0
        for n in pick:
            i, s = pool[n]
            c = cases[i]
            signs = torch.randint(0, 2, (c.n_vars,), generator=gen).float() * 2 - 1
            p, y = c.predict(net, s, signs)
            mse = (p - y).flatten(1).pow(2).mean(1) + MSE_FLOOR
            loss = loss + torch.log(mse / base[(i, s)]).mean()
        loss = loss / batch
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        value = float(loss.detach())
        run = 0.98 * run + 0.02 * value if step else value
        if step % log_every == 0 or step == steps - 1:
            log(f"step {step:5d}  loss {run:+.4f} (~{-10 / math.log(10) * run:+.3f} dB)  "
                f"{time.perf_counter() - t0:.0f} s")
        if checkpoint and ((step + 1) % every == 0 or step + 1 == steps):
            tmp = checkpoint + ".tmp"
            torch.save({"settings": settings, "net": net.state_dict(),
                        "opt": opt.state_dict(), "sched": sched.state_dict(),
                        "gen": gen.get_state(), "step": step + 1, "run": run}, tmp)
            os.replace(tmp, checkpoint)
    return net.requires_grad_(False)


# --- a script's run ------------------------------------------------------------------------
def load_groups(train_seeds: str, val_seeds: str, load: Callable[[int], Case],
                log: Callable[[str], None]) -> Dict[str, List[Case]]:
    """The training and validation series (seed lists as :func:`seed_list` reads them),
    each loaded by ``load`` (stage 1, from the cache where it is there)."""
    t0 = time.perf_counter()
    groups: Dict[str, List[Case]] = {}
    for name, seeds in (("train", seed_list(train_seeds)), ("val", seed_list(val_seeds))):
        groups[name] = []
        for s in seeds:
            groups[name].append(load(s))
            log(f"{name} series {s}: {groups[name][-1].kinds} "
                f"({time.perf_counter() - t0:.0f} s)")
    return groups


def results(groups: Dict[str, List[Case]], net: nn.Module, log: Callable[[str], None],
            base_key: str = "base_db") -> Dict[str, Dict[str, object]]:
    """:func:`summary` per group, each group's mean and worst gain logged."""
    out = {name: summary(cases, net, base_key) for name, cases in groups.items()}
    for name, r in out.items():
        log(f"{name}: mean gain {r['mean_gain_db']:+.3f} dB between steps, "
            f"worst {r['worst_gain_db']:+.3f}")
    return out


def base_fit_seconds(groups: Dict[str, List[Case]]) -> float:
    """The seconds stage 1 spent fitting the series' bases (whenever it ran), rounded."""
    return round(sum(c.fit_s for g in groups.values() for c in g), 1)
