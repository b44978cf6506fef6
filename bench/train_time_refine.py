"""Train issue 30's time refinement network (stsr_core/model/time_refine.py) on generated series
with their full-rate truth; resumable from a checkpoint.

    python -m bench.train_time_refine [--train-seeds 0-23] [--val-seeds 1000-1005]
        [--out stsr_core/model/weights/time_refine_v1.pt] [--cache bench/data/refine_cache]
        [--checkpoint bench/data/refine_cache/checkpoint.pt] [--steps 1500]

For each series of examples/data/training_families.py (kinds unlike the benchmark's): keep
every k-th step at the data's own grid, fit the engine's base to the kept steps (api.fit,
``base_time = select``, as a user's model) and at every step in between take both sides'
values along the path, what the base predicts there (its rest beyond the blend: the cubic
share along the path), how far each side's lookup lies outside the box, the path's motion
and the truth (stage 1, cached per series: the slow part). The network then learns, on the
variables the base moves, the earlier side's weight and a correction that minimise the
squared error, each step and variable counted alike (its loss divided by the base's).
Validation: series of seeds never trained on, scored whole (dB between steps).

Deterministic from the seeds (the fits have no time budget). The training state is written
to ``--checkpoint`` every ``--checkpoint-every`` steps; a run given the same checkpoint goes
on from there (and stops at ``--steps``). Writes the weights (atomically) and, beside them,
their provenance (JSON: seeds, settings, scores, time).
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
from stsr_core.model.time_refine import (TimeRefine, WEIGHTS_PATH,  # noqa: E402
                                         save_weights)
from stsr_core.model.side_weights import load_weights as load_side  # noqa: E402
from stsr_core.series import VolumeSeries  # noqa: E402
from bench.train_side_weights import gap_for, seed_list, step_db  # noqa: E402

DEFAULT_CACHE = os.path.join(ROOT, "bench", "data", "refine_cache")
MSE_FLOOR = 1e-6   # normalised units (range 2): errors below ~66 dB count as that


# --- stage 1: the two sides, the motion and the truth between kept steps (cached) ----------
def extract(seed: int, flow_iters: int, size: Optional[int] = None,
            base_time: str = "select") -> Dict[str, object]:
    """Series ``seed`` (``size``: its points per axis, None: the family's): per step between
    kept ones the fraction w, both sides [2, V, Z, Y, X], the rest of the base's prediction,
    the truth (normalised units), the sides' distance outside [2, Z, Y, X], the motion
    [2, Z, Y, X] and which variables the base moves (``base_time``: the base's choice in
    time, ``select`` as a user's model; ``flow`` moves every variable)."""
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
            "kinds": [f.kind for f in recipe.fields], "fit_s": fit_s}


def cached(seed: int, cache: str, flow_iters: int, size: Optional[int] = None,
           base_time: str = "select") -> Dict[str, object]:
    """:func:`extract`, kept in ``cache`` (a temp file renamed: a killed run leaves none)."""
    tag = ("" if size is None else f"_n{size}") + ("" if base_time == "select" else
                                                    f"_{base_time}")
    path = os.path.join(cache, f"refine_{seed}_k{gap_for(seed)}_it{flow_iters}{tag}_v1.pt")
    if os.path.exists(path):
        return torch.load(path)
    os.makedirs(cache, exist_ok=True)
    item = extract(seed, flow_iters, size, base_time)
    torch.save(item, path + ".tmp")
    os.replace(path + ".tmp", path)
    return item


# --- stage 2: the network ------------------------------------------------------------------
class Case:
    """One series' steps between kept ones, its moved variables alone ([S, ...])."""

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
        self.motion = item["motion"]                          # type: ignore[index]  # [S, 2, ...]
        self.n_vars = len(moving)

    def predict(self, net: Optional[TimeRefine], s: int, signs: Optional[torch.Tensor] = None
                ) -> Tuple[torch.Tensor, torch.Tensor]:
        """(prediction, truth) [V, Z, Y, X] at step ``s`` with the network (None: the
        base's 1 - w), the variables' signs flipped by ``signs`` [V] (augmentation)."""
        ends, rest, truth = self.ends[s], self.rest[s], self.truth[s]
        if signs is not None:
            g = signs.view(-1, 1, 1, 1)
            ends, rest, truth = ends * g, rest * g, truth * g
        w = float(self.w[s])
        if net is None:
            return ends[1] + (1.0 - w) * (ends[0] - ends[1]) + rest, truth
        k = net.stride
        sub = (Ellipsis, slice(None, None, k), slice(None, None, k), slice(None, None, k))
        weight, corr = net.refine(ends[sub], w, self.outside[s][sub], self.motion[s][sub])
        both = torch.stack([weight, corr])                              # [2, V, Z', Y', X']
        if k > 1:                # carried to the data's grid as the base carries it
            both = torch.nn.functional.interpolate(
                both, size=tuple(truth.shape[1:]), mode="trilinear", align_corners=True)
        return ends[1] + both[0] * (ends[0] - ends[1]) + rest + both[1], truth


def score(cases: Sequence[Case], net: Optional[TimeRefine]) -> Dict[int, float]:
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


def summary(cases: Sequence[Case], net: TimeRefine) -> Dict[str, object]:
    """The base's and the network's dB between steps per series, and the mean gain."""
    before, after = score(cases, None), score(cases, net)
    gains = [after[s] - before[s] for s in before if not math.isnan(before[s])]
    return {"series": {str(s): {"kinds": c.kinds, "base_db": round(before[s], 3),
                                "net_db": round(after[s], 3)}
                       for s, c in zip(before, cases)},
            "mean_gain_db": round(float(np.mean(gains)), 3) if gains else math.nan,
            "worst_gain_db": round(float(np.min(gains)), 3) if gains else math.nan}


def train(cases: Sequence[Case], hidden: int, stride: int, steps: int, lr: float,
          batch: int, seed: int, checkpoint: Optional[str] = None, every: int = 100,
          log=print, with_side: bool = True) -> TimeRefine:
    """Adam on the mean over (step, variable) of log(MSE with the network / the base's MSE):
    the mean change of PSNR between steps (x -10 / ln 10). Resumes from ``checkpoint``
    when it exists (same settings), and writes it every ``every`` steps."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    side = load_side() if with_side else None
    net = TimeRefine(hidden, stride, side_hidden=side.hidden if side else 0)
    if side is not None:             # the shipped side network, frozen: training starts there
        if side.stride != stride:
            raise SystemExit(f"--stride {stride}: the shipped side network's is {side.stride}")
        net.side.load_state_dict(side.state_dict())
        net.side.requires_grad_(False)
    opt = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    start, run = 0, 0.0
    if checkpoint and os.path.exists(checkpoint):
        state = torch.load(checkpoint, weights_only=False)
        if state["settings"] != [hidden, stride, steps, lr, batch, seed, with_side]:
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
        if step % 50 == 0 or step == steps - 1:
            log(f"step {step:5d}  loss {run:+.4f} (~{-10 / math.log(10) * run:+.3f} dB)  "
                f"{time.perf_counter() - t0:.0f} s")
        if checkpoint and ((step + 1) % every == 0 or step + 1 == steps):
            tmp = checkpoint + ".tmp"
            torch.save({"settings": [hidden, stride, steps, lr, batch, seed, with_side],
                        "net": net.state_dict(), "opt": opt.state_dict(),
                        "sched": sched.state_dict(), "gen": gen.get_state(),
                        "step": step + 1, "run": run}, tmp)
            os.replace(tmp, checkpoint)
    return net.requires_grad_(False)


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.train_time_refine",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--train-seeds", default="0-23", help="training series (default 0-23)")
    p.add_argument("--val-seeds", default="1000-1005", help="validation series, never "
                   "trained on (default 1000-1005)")
    p.add_argument("--out", default=WEIGHTS_PATH, help="weights file (the provenance JSON "
                   "goes beside it; default: the package's shipped weights)")
    p.add_argument("--cache", default=DEFAULT_CACHE, help="stage 1's per-series cache")
    p.add_argument("--checkpoint", default=None, help="training state, written as it goes "
                   "and resumed from (default: checkpoint.pt in --cache)")
    p.add_argument("--checkpoint-every", type=int, default=100)
    p.add_argument("--size", type=int, default=None,
                   help="points per axis of the generated series (default: the family's)")
    p.add_argument("--base-time", default="select", choices=("select", "flow"),
                   help="the series' bases' choice in time (select: as a user's model)")
    p.add_argument("--flow-iters", type=int, default=100,
                   help="Adam steps per displacement fit of the series' bases")
    p.add_argument("--hidden", type=int, default=16)
    p.add_argument("--stride", type=int, default=2)
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--batch", type=int, default=8, help="steps of series per Adam step")
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--no-side", action="store_true", help="without the shipped side "
                   "network's term (default: with it, frozen, as where training starts)")
    p.add_argument("--data-only", action="store_true", help="stage 1 only (fill the cache)")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    checkpoint = a.checkpoint or os.path.join(a.cache, "checkpoint.pt")
    t0 = time.perf_counter()
    groups: Dict[str, List[Case]] = {}
    for name, seeds in (("train", seed_list(a.train_seeds)), ("val", seed_list(a.val_seeds))):
        groups[name] = []
        for s in seeds:
            groups[name].append(Case(cached(s, a.cache, a.flow_iters, a.size, a.base_time)))
            print(f"[time-refine] {name} series {s}: {groups[name][-1].kinds} "
                  f"({time.perf_counter() - t0:.0f} s)", flush=True)
    if a.data_only:
        return 0
    t1 = time.perf_counter()
    net = train(groups["train"], a.hidden, a.stride, a.steps, a.lr, a.batch, a.seed,
                checkpoint, a.checkpoint_every,
                log=lambda m: print(f"[time-refine] {m}", flush=True), with_side=not a.no_side)
    t2 = time.perf_counter()
    result = {name: summary(cases, net) for name, cases in groups.items()}
    for name, r in result.items():
        print(f"[time-refine] {name}: mean gain {r['mean_gain_db']:+.3f} dB between steps, "
              f"worst {r['worst_gain_db']:+.3f}", flush=True)
    provenance = {
        "what": "issue 30's time refinement network (stsr_core/model/time_refine.py): the "
                "earlier side's weight and a value correction between kept steps, trained "
                "by bench/train_time_refine.py",
        "command": "python -m bench.train_time_refine " + " ".join(
            argv if argv is not None else sys.argv[1:]),
        "data": "examples/data/training_families.py sample(seed): every 4th step kept "
                "(every 3rd for seeds = 3 mod 4) at the data's grid, base_time=select, "
                f"base_time={a.base_time}, flow_iters={a.flow_iters}, size={a.size or 'the family default'}; "
                "none of the benchmark's kinds",
        "train_seeds": a.train_seeds, "val_seeds": a.val_seeds,
        "settings": {"hidden": a.hidden, "stride": a.stride, "steps": a.steps,
                     "side": "frozen side_weights_v1" if not a.no_side else "none",
                     "batch": a.batch, "lr": a.lr, "seed": a.seed},
        "parameters": sum(t.numel() for t in net.parameters()),
        "results": result,
        "seconds": {"series_base_fits": round(sum(c.fit_s for g in groups.values()
                                                  for c in g), 1),
                    "data_this_run": round(t1 - t0, 1), "training_this_run": round(t2 - t1, 1)},
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}",
        "written": time.strftime("%Y-%m-%d"),
    }
    save_weights(net, a.out, provenance)
    print(f"[time-refine] wrote {a.out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
