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
import os
import sys
import time
from typing import Optional, Sequence, Tuple

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:           # run as a file: the repository's packages
    sys.path.insert(0, ROOT)

from stsr_core.model.time_refine import (TimeRefine, WEIGHTS_PATH,  # noqa: E402
                                         save_weights)
from stsr_core.model.side_weights import load_weights as load_side  # noqa: E402
from bench import between_training as between  # noqa: E402
from bench.between_training import gap_for  # noqa: E402
from bench.offline_training import provenance  # noqa: E402

DEFAULT_CACHE = os.path.join(ROOT, "bench", "data", "refine_cache")


def cache_path(cache: str, seed: int, flow_iters: int, size: Optional[int] = None,
               base_time: str = "select") -> str:
    """Series ``seed``'s stage 1 file in ``cache`` (its size and the bases' choice in time
    named where they are not the defaults)."""
    tag = ("" if size is None else f"_n{size}") + ("" if base_time == "select" else
                                                    f"_{base_time}")
    return os.path.join(cache, f"refine_{seed}_k{gap_for(seed)}_it{flow_iters}{tag}_v1.pt")


class Case(between.Case):
    """One series' steps between kept ones, weighed and corrected by the refinement."""

    def predict(self, net: Optional[TimeRefine], s: int, signs: Optional[torch.Tensor] = None
                ) -> Tuple[torch.Tensor, torch.Tensor]:
        """(prediction, truth) [V, Z, Y, X] at step ``s`` with the network (None: the
        base's 1 - w), the variables' signs flipped by ``signs`` [V] (augmentation)."""
        ends, rest, truth = self.step(s, signs)
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


def network(hidden: int, stride: int, with_side: bool) -> TimeRefine:
    """A new refinement network; ``with_side``: the shipped side network inside, frozen
    (training starts where it is)."""
    side = load_side() if with_side else None
    net = TimeRefine(hidden, stride, side_hidden=side.hidden if side else 0)
    if side is not None:
        if side.stride != stride:
            raise SystemExit(f"--stride {stride}: the shipped side network's is {side.stride}")
        net.side.load_state_dict(side.state_dict())
        net.side.requires_grad_(False)
    return net


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

    def log(m: str) -> None:
        print(f"[time-refine] {m}", flush=True)

    def load(seed: int) -> Case:
        return Case(between.cached(
            cache_path(a.cache, seed, a.flow_iters, a.size, a.base_time),
            lambda: between.extract(seed, a.flow_iters, a.size, a.base_time)))

    t0 = time.perf_counter()
    groups = between.load_groups(a.train_seeds, a.val_seeds, load, log)
    if a.data_only:
        return 0
    t1 = time.perf_counter()
    with_side = not a.no_side
    net = between.train(lambda: network(a.hidden, a.stride, with_side), groups["train"],
                        a.steps, a.lr, a.batch, a.seed, log, log_every=50,
                        checkpoint=checkpoint, every=a.checkpoint_every,
                        settings=[a.hidden, a.stride, a.steps, a.lr, a.batch, a.seed,
                                  with_side])
    t2 = time.perf_counter()
    result = between.results(groups, net, log)
    weights_provenance = provenance(
        "issue 30's time refinement network (stsr_core/model/time_refine.py): the earlier "
        "side's weight and a value correction between kept steps, trained by "
        "bench/train_time_refine.py", "bench.train_time_refine", argv,
        "examples/data/training_families.py sample(seed): every 4th step kept "
        "(every 3rd for seeds = 3 mod 4) at the data's grid, base_time=select, "
        f"base_time={a.base_time}, flow_iters={a.flow_iters}, "
        f"size={a.size or 'the family default'}; none of the benchmark's kinds",
        {"train_seeds": a.train_seeds, "val_seeds": a.val_seeds,
         "settings": {"hidden": a.hidden, "stride": a.stride, "steps": a.steps,
                      "side": "frozen side_weights_v1" if with_side else "none",
                      "batch": a.batch, "lr": a.lr, "seed": a.seed},
         "parameters": sum(t.numel() for t in net.parameters()),
         "results": result,
         "seconds": {"series_base_fits": between.base_fit_seconds(groups),
                     "data_this_run": round(t1 - t0, 1),
                     "training_this_run": round(t2 - t1, 1)}})
    save_weights(net, a.out, weights_provenance)
    log(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
