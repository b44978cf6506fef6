"""Train the prior that weighs the two sides between kept steps (issue 25's offline prior:
stsr_core/model/side_weights.py), on generated series with their full-rate truth.

    python -m bench.train_side_weights [--train-seeds 0-47] [--val-seeds 1000-1011]
        [--out stsr_core/model/weights/side_weights_v1.pt] [--cache bench/data/side_cache]

For each series of examples/data/training_families.py (kinds unlike the benchmark's): keep
every k-th step at the data's own grid (time only: the prior acts on the data's grid), fit
the engine's base to the kept steps (api.fit, ``base_time = select``, as a user's model),
and at every step in between take both sides' values along the path (SplineBase's
``_end_values_at``), what the base predicts there today, and the truth (stage 1, cached per
series: the slow part). The network then learns, on the variables the base moves, the weight
of the earlier side that minimises the blended squared error, each variable of each series
counted alike (its loss divided by today's blend's). Validation: series of seeds never
trained on, scored whole (dB between steps, today's blend vs the network's).

Deterministic from the seeds: the fits have no time budget (a fixed number of Adam steps),
the voxels drawn and the network's initialisation come from ``--seed``. Writes the weights
(atomically) and, beside them, their provenance (JSON: seeds, settings, scores, time).
"""
from __future__ import annotations

import argparse
import math
import os
import platform
import sys
import time
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:           # run as a file: the repository's packages
    sys.path.insert(0, ROOT)

from stsr_core import api  # noqa: E402
from stsr_core.blocks import normalise_times  # noqa: E402
from stsr_core.model.error_estimate import lattice_axes  # noqa: E402
from stsr_core.model.side_weights import (SideWeights, WEIGHTS_PATH,  # noqa: E402
                                          save_weights)
from stsr_core.series import VolumeSeries  # noqa: E402

DEFAULT_CACHE = os.path.join(ROOT, "bench", "data", "side_cache")


def seed_list(text: str) -> List[int]:
    """``0-47,100`` -> [0, 1, ..., 47, 100]."""
    out: List[int] = []
    for part in text.split(","):
        if "-" in part:
            a, b = part.split("-")
            out += list(range(int(a), int(b) + 1))
        elif part.strip():
            out.append(int(part))
    return out


def gap_for(seed: int) -> int:
    """Kept every 4th step (the benchmark's gap), every 4th series every 3rd step (other
    fractions of the interval)."""
    return 3 if seed % 4 == 3 else 4


# --- stage 1: the two sides and the truth between kept steps, per series (cached) ----------
def extract(seed: int, flow_iters: int) -> Dict[str, object]:
    """Series ``seed``: per step between kept ones the fraction w, both sides [2, V, Z, Y, X]
    and the rest of today's prediction (what does not depend on the weights: the cubic's
    share along the path) in the base's normalised units, the truth in the same units, and
    which variables the base moves (only those are weighed)."""
    from examples.data.training_families import draw, sample
    k = gap_for(seed)
    fine = sample(seed)
    n_steps = (fine.n_times - 1) // k * k + 1
    keep = list(range(0, n_steps, k))
    coarse = VolumeSeries(times=fine.times[keep],
                          variables={n: a[keep] for n, a in fine.variables.items()},
                          origin=fine.origin, spacing=fine.spacing)
    t0 = time.perf_counter()
    tm = api.fit(coarse, "fast", steps=0, max_minutes=None, device="cpu", seed=0,
                 model_overrides={"base_time": "select", "flow_iters": flow_iters})
    fit_s = time.perf_counter() - t0
    base, info = tm.model.base, tm.info
    plan = base.plan_grid(lattice_axes(base.dims[::-1], torch.device("cpu")))
    times = normalise_times(torch.tensor(fine.times[:n_steps], dtype=torch.float64),
                            info.times[0], info.times[-1])
    ws, ends, rest, truth, outside = [], [], [], [], []
    for t in range(n_steps):
        if t % k == 0:
            continue
        tn = float(times[t])
        j, w = base._slot(tn)
        both = base._end_values_at(plan, j, w)                          # [2, V, Z, Y, X]
        today = base.evaluate_grid(plan, tn).clone()                   # [V, Z, Y, X]
        ws.append(w)
        outside.append(base.side_outside(plan, j, w))
        ends.append(both)
        rest.append(today - torch.lerp(both[1], both[0], 1.0 - w))
        truth.append(torch.from_numpy(np.stack(
            [info.stats[n].normalise(fine.variables[n][t]) for n in info.variables])).float())
    recipe = draw(seed)
    return {"seed": seed, "gap": k, "w": ws, "ends": torch.stack(ends),
            "rest": torch.stack(rest), "truth": torch.stack(truth),
            "outside": torch.stack(outside),
            "moving": (base.flow_mix != 0).clone(), "variables": list(info.variables),
            "kinds": [f.kind for f in recipe.fields], "fit_s": fit_s,
            "cells_per_step": recipe.cells_per_step}


def cached(seed: int, cache: str, flow_iters: int) -> Dict[str, object]:
    """:func:`extract`, kept in ``cache`` (a temp file renamed: a killed run leaves none)."""
    path = os.path.join(cache, f"family_{seed}_k{gap_for(seed)}_it{flow_iters}_v2.pt")
    if os.path.exists(path):
        return torch.load(path)
    os.makedirs(cache, exist_ok=True)
    item = extract(seed, flow_iters)
    torch.save(item, path + ".tmp")
    os.replace(path + ".tmp", path)
    return item


# --- stage 2: the network ------------------------------------------------------------------
class Case:
    """One series' steps between kept ones, its moved variables alone: both sides, today's
    prediction's rest, the truth ([S, ...]) and the fractions [S]."""

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
        self.n_vars = len(moving)

    def predict(self, net: Optional[SideWeights], s: int, signs: Optional[torch.Tensor] = None
                ) -> Tuple[torch.Tensor, torch.Tensor]:
        """(prediction, truth) [V, Z, Y, X] at step ``s`` with the network's weights (None:
        today's 1 - w), the variables' signs flipped by ``signs`` [V] (augmentation: a
        variable's sign is a convention of its data set)."""
        ends, rest, truth = self.ends[s], self.rest[s], self.truth[s]
        if signs is not None:
            g = signs.view(-1, 1, 1, 1)
            ends, rest, truth = ends * g, rest * g, truth * g
        w = float(self.w[s])
        if net is None:
            weight = torch.full_like(truth, 1.0 - w)
        else:
            k = net.stride
            weight = net(ends[..., ::k, ::k, ::k], w,
                         self.outside[s][..., ::k, ::k, ::k])          # [V, Z', Y', X']
            if k > 1:                # carried to the data's grid as the base carries it
                weight = torch.nn.functional.interpolate(
                    weight[None], size=tuple(truth.shape[1:]), mode="trilinear",
                    align_corners=True)[0]
        return ends[1] + weight * (ends[0] - ends[1]) + rest, truth


def step_db(pred: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """Per variable PSNR [V] of one step (the variable's range at that step, as
    stsr_core.metrics scores it); a variable with no range or no error is left out (nan)."""
    err = (pred - truth).flatten(1).pow(2).mean(1)
    rng = truth.flatten(1).amax(1) - truth.flatten(1).amin(1)
    db = 20 * torch.log10(rng) - 10 * torch.log10(err)
    return torch.where(torch.isfinite(db), db, torch.full_like(db, math.nan))


def score(cases: Sequence[Case], net: Optional[SideWeights]) -> Dict[int, float]:
    """Per series the mean PSNR between steps (over steps and moved variables)."""
    out = {}
    with torch.no_grad():
        for c in cases:
            dbs = torch.stack([step_db(*c.predict(net, s)) for s in range(len(c.w))])
            out[c.seed] = float(np.nanmean(dbs.numpy())) if c.n_vars else math.nan
    return out


def train(cases: Sequence[Case], hidden: int, stride: int, steps: int, lr: float,
          batch: int, seed: int, log=print) -> SideWeights:
    """Adam on the mean over (step, variable) of log(MSE with the network / MSE today):
    the mean change of PSNR between steps (x -10 / ln 10), each step and variable alike."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    net = SideWeights(hidden, stride)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    pool = [(i, s) for i, c in enumerate(cases) for s in range(len(c.w)) if c.n_vars]
    today = {}
    with torch.no_grad():
        for i, s in pool:
            p, y = cases[i].predict(None, s)
            today[(i, s)] = (p - y).flatten(1).pow(2).mean(1) + MSE_FLOOR
    t0 = time.perf_counter()
    run = 0.0
    for step in range(steps):
        pick = torch.randint(len(pool), (batch,), generator=gen).tolist()
        loss = 0.0
        for n in pick:
            i, s = pool[n]
            c = cases[i]
            signs = torch.randint(0, 2, (c.n_vars,), generator=gen).float() * 2 - 1
            p, y = c.predict(net, s, signs)
            mse = (p - y).flatten(1).pow(2).mean(1) + MSE_FLOOR
            loss = loss + torch.log(mse / today[(i, s)]).mean()
        loss = loss / batch
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        value = float(loss.detach())
        run = 0.98 * run + 0.02 * value if step else value
        if step % 100 == 0 or step == steps - 1:
            log(f"step {step:5d}  loss {run:+.4f} (~{-10 / math.log(10) * run:+.3f} dB)  "
                f"{time.perf_counter() - t0:.0f} s")
    return net.requires_grad_(False)


MSE_FLOOR = 1e-6   # normalised units (range 2): errors below ~66 dB count as that


def summary(cases: Sequence[Case], net: SideWeights) -> Dict[str, object]:
    """Today's and the network's dB between steps per series, and the mean gain."""
    before, after = score(cases, None), score(cases, net)
    gains = [after[s] - before[s] for s in before if not math.isnan(before[s])]
    return {"series": {str(s): {"kinds": c.kinds, "today_db": round(before[s], 3),
                                "net_db": round(after[s], 3)}
                       for s, c in zip(before, cases)},
            "mean_gain_db": round(float(np.mean(gains)), 3) if gains else math.nan,
            "worst_gain_db": round(float(np.min(gains)), 3) if gains else math.nan}


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.train_side_weights",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--train-seeds", default="0-47", help="training series (default 0-47)")
    p.add_argument("--val-seeds", default="1000-1011", help="validation series, never "
                   "trained on (default 1000-1011)")
    p.add_argument("--out", default=WEIGHTS_PATH, help="weights file (the provenance JSON "
                   "goes beside it; default: the package's shipped weights)")
    p.add_argument("--cache", default=DEFAULT_CACHE, help="stage 1's per-series cache")
    p.add_argument("--flow-iters", type=int, default=100,
                   help="Adam steps per displacement fit of the series' bases")
    p.add_argument("--hidden", type=int, default=8)
    p.add_argument("--stride", type=int, default=2)
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--batch", type=int, default=8, help="steps of series per Adam step")
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    t0 = time.perf_counter()
    groups = {}
    for name, seeds in (("train", seed_list(a.train_seeds)), ("val", seed_list(a.val_seeds))):
        groups[name] = []
        for s in seeds:
            groups[name].append(Case(cached(s, a.cache, a.flow_iters)))
            print(f"[side-weights] {name} series {s}: {groups[name][-1].kinds}", flush=True)
    t1 = time.perf_counter()
    net = train(groups["train"], a.hidden, a.stride, a.steps, a.lr, a.batch, a.seed,
                log=lambda m: print(f"[side-weights] {m}", flush=True))
    t2 = time.perf_counter()
    result = {name: summary(cases, net) for name, cases in groups.items()}
    for name, r in result.items():
        print(f"[side-weights] {name}: mean gain {r['mean_gain_db']:+.3f} dB between steps, "
              f"worst {r['worst_gain_db']:+.3f}", flush=True)
    provenance = {
        "what": "weights of the earlier side between kept steps (stsr_core/model/"
                "side_weights.py), trained by bench/train_side_weights.py",
        "command": "python -m bench.train_side_weights " + " ".join(
            argv if argv is not None else sys.argv[1:]),
        "data": "examples/data/training_families.py sample(seed): every 4th step kept "
                "(every 3rd for seeds = 3 mod 4) at the data's grid, base_time=select, "
                f"flow_iters={a.flow_iters}",
        "train_seeds": a.train_seeds, "val_seeds": a.val_seeds,
        "settings": {"hidden": a.hidden, "stride": a.stride, "steps": a.steps,
                     "batch": a.batch, "lr": a.lr, "seed": a.seed},
        "parameters": sum(t.numel() for t in net.parameters()),
        "results": result,
        "seconds": {"series_base_fits": round(sum(c.fit_s for g in groups.values()
                                                  for c in g), 1),
                    "data_this_run": round(t1 - t0, 1), "training": round(t2 - t1, 1)},
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}",
        "written": time.strftime("%Y-%m-%d"),
    }
    save_weights(net, a.out, provenance)
    print(f"[side-weights] wrote {a.out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
