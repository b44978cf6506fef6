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
import os
import sys
import time
from typing import Optional, Sequence, Tuple

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:           # run as a file: the repository's packages
    sys.path.insert(0, ROOT)

from stsr_core.model.side_weights import (SideWeights, WEIGHTS_PATH,  # noqa: E402
                                          save_weights)
from bench import between_training as between  # noqa: E402
from bench.between_training import gap_for  # noqa: E402
from bench.offline_training import provenance  # noqa: E402

DEFAULT_CACHE = os.path.join(ROOT, "bench", "data", "side_cache")


def cache_path(cache: str, seed: int, flow_iters: int) -> str:
    """Series ``seed``'s stage 1 file in ``cache``."""
    return os.path.join(cache, f"family_{seed}_k{gap_for(seed)}_it{flow_iters}_v2.pt")


class Case(between.Case):
    """One series' steps between kept ones, weighed by the side network."""

    def predict(self, net: Optional[SideWeights], s: int, signs: Optional[torch.Tensor] = None
                ) -> Tuple[torch.Tensor, torch.Tensor]:
        """(prediction, truth) [V, Z, Y, X] at step ``s`` with the network's weights (None:
        today's 1 - w), the variables' signs flipped by ``signs`` [V] (augmentation)."""
        ends, rest, truth = self.step(s, signs)
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

    def log(m: str) -> None:
        print(f"[side-weights] {m}", flush=True)

    t0 = time.perf_counter()
    groups = between.load_groups(
        a.train_seeds, a.val_seeds, lambda s: Case(between.cached(
            cache_path(a.cache, s, a.flow_iters), lambda: between.extract(s, a.flow_iters))),
        log)
    t1 = time.perf_counter()
    net = between.train(lambda: SideWeights(a.hidden, a.stride), groups["train"], a.steps,
                        a.lr, a.batch, a.seed, log)
    t2 = time.perf_counter()
    result = between.results(groups, net, log, base_key="today_db")
    weights_provenance = provenance(
        "weights of the earlier side between kept steps (stsr_core/model/side_weights.py), "
        "trained by bench/train_side_weights.py", "bench.train_side_weights", argv,
        "examples/data/training_families.py sample(seed): every 4th step kept "
        "(every 3rd for seeds = 3 mod 4) at the data's grid, base_time=select, "
        f"flow_iters={a.flow_iters}",
        {"train_seeds": a.train_seeds, "val_seeds": a.val_seeds,
         "settings": {"hidden": a.hidden, "stride": a.stride, "steps": a.steps,
                      "batch": a.batch, "lr": a.lr, "seed": a.seed},
         "parameters": sum(t.numel() for t in net.parameters()),
         "results": result,
         "seconds": {"series_base_fits": between.base_fit_seconds(groups),
                     "data_this_run": round(t1 - t0, 1), "training": round(t2 - t1, 1)}})
    save_weights(net, a.out, weights_provenance)
    log(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
