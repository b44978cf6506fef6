"""Train the spatial prior (issue 30; stsr_core/model/space_prior.py) on generated fields
with their full-resolution truth, and write the weights the package ships.

    python -m bench.train_space_prior [--train-seeds 0-2999] [--val-seeds 100000-100119]
        [--hours 2.5] [--out stsr_core/model/weights/space_prior_v1.pt]
        [--cache bench/data/prior_cache] [--checkpoint bench/data/prior_cache/run.ckpt]

Stage 1 (cached per seed, the slow part): examples/data/space_families.py's sample on the
fine lattice (65^3 for a 33^3 coarse grid: every other point), the engine's cubic B-spline
through the coarse points evaluated on the fine lattice (SplineBase's base, same prefilter),
and what it misses there (the residual), both scaled by the coarse field's range.

Stage 2: Adam on the mean over samples of log((MSE of the residual left + floor) /
(MSE of the residual + floor)): -10 / ln 10 times the change of PSNR on the fine points,
each sample counted alike, so a smooth field the spline already gets right weighs as much as
a front (the network learns to leave it alone). Augmented by the 48 symmetries of the cube
and the sign (the spline commutes with all of them). Checkpoints every
``--checkpoint-seconds`` (network, optimiser, schedule, step, random state, the loss curve);
a rerun with the same checkpoint resumes where it stopped. Stops at ``--steps`` or
``--hours``, whichever comes first, then scores the validation seeds per kind and writes
the weights and, beside them, their provenance (JSON: seeds, settings, curve, scores, time),
each atomically.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:           # run as a file: the repository's packages
    sys.path.insert(0, ROOT)

from stsr_core.model.space_prior import (MSE_FLOOR, PriorNet, WEIGHTS_PATH,  # noqa: E402
                                         detail, gather_fine, inputs, log_ratio,
                                         parameter_count, random_crop, save_weights,
                                         spline_on_fine_lattice, valid_mask)
from bench.offline_training import provenance, seed_list  # noqa: E402

DEFAULT_CACHE = os.path.join(ROOT, "bench", "data", "prior_cache")


# --- stage 1: the samples ------------------------------------------------------------------
def make_sample(seed: int, n_coarse: int) -> Dict[str, np.ndarray]:
    """Sample ``seed``: its coarse points [n]^3 and the residual on the fine lattice
    [2n-1]^3 (0 at the coarse points), scaled by the coarse field's half range."""
    from examples.data.space_families import sample
    fine, kinds = sample(seed, n_coarse)
    f = torch.from_numpy(fine)
    coarse = f[::2, ::2, ::2]
    lo, hi = float(coarse.min()), float(coarse.max())
    half = max(0.5 * (hi - lo), 1e-12)
    coarse = (coarse - 0.5 * (lo + hi)) / half
    truth = (f - 0.5 * (lo + hi)) / half
    residual = truth - spline_on_fine_lattice(coarse[None])[0]
    return {"coarse": coarse.numpy().astype(np.float32),
            "residual": residual.numpy().astype(np.float32),
            "kinds": np.array(kinds)}


def cached(seed: int, cache: str, n_coarse: int) -> Dict[str, np.ndarray]:
    """:func:`make_sample`, kept in ``cache`` (a temp file renamed: a killed run leaves
    none half-written)."""
    path = os.path.join(cache, f"sample_{seed}_n{n_coarse}_v1.npz")
    if os.path.exists(path):
        with np.load(path) as z:
            return {k: z[k] for k in z.files}
    os.makedirs(cache, exist_ok=True)
    item = make_sample(seed, n_coarse)
    with open(path + ".tmp", "wb") as fh:
        np.savez(fh, **item)
    os.replace(path + ".tmp", path)
    return item


class Pool:
    """The samples as tensors: coarse [S, n, n, n], fine residual [S, 2n-1, ...], kinds."""

    def __init__(self, items: Sequence[Dict[str, np.ndarray]]):
        self.coarse = torch.from_numpy(np.stack([i["coarse"] for i in items]))
        # half precision in memory (3,000 samples: 1.6 GB instead of 3.3): residuals below
        # ~1e-4 of the range count as the loss's floor anyway
        self.residual = torch.from_numpy(np.stack([i["residual"] for i in items])).half()
        self.kinds = [[str(k) for k in i["kinds"]] for i in items]

    def __len__(self) -> int:
        return self.coarse.shape[0]

    def batch(self, idx: Sequence[int], gen: Optional[torch.Generator]
              ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Inputs [B, 1, n, n, n] and targets [B, 7, n, n, n] of samples ``idx``, each under
        a random symmetry of the cube and sign (``gen``; None: as stored)."""
        xs, ys = [], []
        for i in idx:
            c, r = self.coarse[i], self.residual[i].float()
            if gen is not None:
                perm = torch.randperm(3, generator=gen).tolist()
                c, r = c.permute(*perm), r.permute(*perm)
                flips = [d for d in range(3) if torch.rand((), generator=gen) < 0.5]
                if flips:
                    c, r = c.flip(flips), r.flip(flips)
                if torch.rand((), generator=gen) < 0.5:
                    c, r = -c, -r
            xs.append(c)
            ys.append(r)
        return torch.stack(xs)[:, None].contiguous(), gather_fine(torch.stack(ys))


def gains_db(net: PriorNet, pool: Pool, batch: int = 8) -> List[float]:
    """Per sample the PSNR gain (dB) of spline + residual over the spline on the fine
    lattice (floored as in training)."""
    out: List[float] = []
    mask = valid_mask(pool.coarse.shape[1:])
    net.eval()
    with torch.no_grad():
        for s in range(0, len(pool), batch):
            x, y = pool.batch(range(s, min(len(pool), s + batch)), None)
            out += (-10 / math.log(10) * log_ratio(net(x), y, mask)).tolist()
    net.train()
    return out


def by_kind(pool: Pool, gains: Sequence[float]) -> Dict[str, Dict[str, float]]:
    """Mean, worst gain and count per primary kind (mixtures under their first kind)."""
    groups: Dict[str, List[float]] = {}
    for kinds, g in zip(pool.kinds, gains):
        groups.setdefault(kinds[0], []).append(g)
    return {k: {"mean_db": round(float(np.mean(v)), 3), "worst_db": round(float(np.min(v)), 3),
                "count": len(v)} for k, v in sorted(groups.items())}


# --- stage 2: training ---------------------------------------------------------------------
def save_checkpoint(path: str, state: Dict[str, object]) -> None:
    torch.save(state, path + ".tmp")
    os.replace(path + ".tmp", path)


def train(pool: Pool, val: Pool, a: argparse.Namespace, log=print) -> Tuple[PriorNet, Dict]:
    """Adam with warm-up and a cosine schedule on :func:`log_ratio`, resumed from
    ``a.checkpoint`` when it holds a run; returns the network and the run's record."""
    torch.manual_seed(a.seed)
    net = PriorNet(a.stem, a.width, a.blocks)
    opt = torch.optim.Adam(net.parameters(), lr=a.lr)
    warm = min(a.warmup, a.steps)
    limit_s = None if a.hours is None else 3600 * a.hours

    def rate(step: int, spent: float) -> float:
        """Warm-up, then a cosine to 2 % over the run: its progress is the larger of the
        steps' and the time limit's (a run cut by the time limit still ends annealed)."""
        if step < warm:
            return (step + 1) / warm
        f = (step - warm) / max(1, a.steps - warm)
        if limit_s is not None:
            f = max(f, spent / limit_s)
        return 0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * min(1.0, f)))

    gen = torch.Generator().manual_seed(a.seed)
    record: Dict[str, object] = {"curve": [], "val_curve": [], "train_s": 0.0, "step": 0}
    if a.checkpoint and os.path.exists(a.checkpoint):
        ck = torch.load(a.checkpoint, weights_only=False)
        net.load_state_dict(ck["net"])
        opt.load_state_dict(ck["opt"])
        gen.set_state(ck["gen"])
        record = ck["record"]
        log(f"resumed at step {record['step']} ({record['train_s']:.0f} s trained)")
    mask = valid_mask(pool.coarse.shape[1:])
    step = int(record["step"])
    t_run = time.perf_counter()
    spent0 = float(record["train_s"])
    last_ck = time.perf_counter()
    run, seen = 0.0, 0
    while step < a.steps:
        spent = spent0 + time.perf_counter() - t_run
        if limit_s is not None and spent >= limit_s:
            log(f"time limit reached at step {step}")
            break
        for group in opt.param_groups:
            group["lr"] = a.lr * rate(step, spent)
        idx = torch.randint(len(pool), (a.batch,), generator=gen).tolist()
        x, y = pool.batch(idx, gen)
        (feats, scale, y), part = random_crop([inputs(x), detail(x), y], mask, a.crop, gen)
        loss = log_ratio(net.body(feats, scale), y, part, a.floor).mean()
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), a.clip)
        opt.step()
        step += 1
        value = float(loss.detach())
        run = 0.95 * run + 0.05 * value if seen else value
        seen += 1
        if step % a.log_every == 0 or step == a.steps:
            spent = spent0 + time.perf_counter() - t_run
            record["curve"].append([step, round(spent, 1), round(-10 / math.log(10) * run, 4)])
            log(f"step {step:6d}  train gain {-10 / math.log(10) * run:+.3f} dB  "
                f"lr {opt.param_groups[0]['lr']:.2e}  {spent:.0f} s")
        if a.val_every and step % a.val_every == 0 and len(val):
            g = gains_db(net, val)
            record["val_curve"].append([step, round(float(np.mean(g)), 4),
                                        round(float(np.min(g)), 4)])
            log(f"step {step:6d}  validation gain mean {np.mean(g):+.3f} dB, worst "
                f"{np.min(g):+.3f}")
        if a.checkpoint and (time.perf_counter() - last_ck >= a.checkpoint_seconds
                             or step == a.steps):
            record["step"] = step
            record["train_s"] = spent0 + time.perf_counter() - t_run
            save_checkpoint(a.checkpoint, {"net": net.state_dict(), "opt": opt.state_dict(),
                                           "gen": gen.get_state(), "record": record,
                                           "settings": net.settings()})
            last_ck = time.perf_counter()
    record["step"] = step
    record["train_s"] = spent0 + time.perf_counter() - t_run
    if a.checkpoint:
        save_checkpoint(a.checkpoint, {"net": net.state_dict(), "opt": opt.state_dict(),
                                       "gen": gen.get_state(),
                                       "record": record, "settings": net.settings()})
    return net.eval().requires_grad_(False), record


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.train_space_prior",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--train-seeds", default="0-2999", help="training samples (default 0-2999)")
    p.add_argument("--val-seeds", default="100000-100119",
                   help="validation samples, never trained on (default 100000-100119)")
    p.add_argument("--coarse", type=int, default=33, help="coarse points per axis (33)")
    p.add_argument("--out", default=WEIGHTS_PATH, help="weights file (the provenance JSON "
                   "goes beside it; default: the package's shipped weights)")
    p.add_argument("--cache", default=DEFAULT_CACHE, help="stage 1's per-sample cache")
    p.add_argument("--checkpoint", default=None, help="checkpoint file (default: "
                   "CACHE/run.ckpt); an existing one is resumed")
    p.add_argument("--checkpoint-seconds", type=float, default=120.0)
    p.add_argument("--data-only", action="store_true", help="make stage 1's cache and stop")
    p.add_argument("--stem", type=int, default=16)
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--blocks", type=int, default=4)
    p.add_argument("--steps", type=int, default=20000)
    p.add_argument("--hours", type=float, default=2.5, help="training time limit (stage 2)")
    p.add_argument("--batch", type=int, default=6)
    p.add_argument("--crop", type=int, default=25, help="coarse points per axis of the "
                   "random crop each step trains on (the samples' faces stay in when it "
                   "reaches them; the crop's inner faces are left out of the loss)")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup", type=int, default=300)
    p.add_argument("--clip", type=float, default=1.0)
    p.add_argument("--floor", type=float, default=MSE_FLOOR, help="the loss's MSE floor "
                   "(normalised units, range 2): fields better than it count as it")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--val-every", type=int, default=1000)
    a = p.parse_args(argv)
    a.checkpoint = a.checkpoint or os.path.join(a.cache, "run.ckpt")
    torch.set_num_threads(a.threads)
    t0 = time.perf_counter()

    def log(m: str) -> None:
        print(f"[space-prior] {m}", flush=True)

    pools = {}
    for name, seeds in (("train", seed_list(a.train_seeds)), ("val", seed_list(a.val_seeds))):
        items = []
        for k, s in enumerate(seeds):
            items.append(cached(s, a.cache, a.coarse))
            if (k + 1) % 100 == 0 or k + 1 == len(seeds):
                log(f"{name}: {k + 1} of {len(seeds)} samples ready "
                    f"({time.perf_counter() - t0:.0f} s)")
        pools[name] = Pool(items) if not a.data_only else None
    if a.data_only:
        return 0
    t1 = time.perf_counter()
    net, record = train(pools["train"], pools["val"], a, log)
    t2 = time.perf_counter()
    val = gains_db(net, pools["val"])
    train_sub = Pool([cached(s, a.cache, a.coarse) for s in seed_list(a.train_seeds)[:120]])
    train_g = gains_db(net, train_sub)
    log(f"validation: mean gain {np.mean(val):+.3f} dB, worst {np.min(val):+.3f}")
    from examples.data.space_families import KINDS, WEIGHTS
    weights_provenance = provenance(
        "the spatial prior's weights (stsr_core/model/space_prior.py), trained by "
        "bench/train_space_prior.py", "bench.train_space_prior", argv,
        f"examples/data/space_families.py sample(seed, {a.coarse}): the fine "
        f"lattice {2 * a.coarse - 1}^3, coarse = every other point",
        {"kinds": KINDS, "kind_weights": WEIGHTS,
         "train_seeds": a.train_seeds, "val_seeds": a.val_seeds,
         "settings": {"stem": a.stem, "width": a.width, "blocks": a.blocks, "steps": a.steps,
                      "crop": a.crop,
                      "hours": a.hours, "batch": a.batch, "lr": a.lr, "warmup": a.warmup,
                      "clip": a.clip, "seed": a.seed, "mse_floor": a.floor},
         "parameters": parameter_count(net),
         "steps_done": record["step"],
         "loss_curve": {"columns": ["step", "seconds", "train gain dB (running)"],
                        "rows": record["curve"][::max(1, len(record["curve"]) // 200)]},
         "validation_curve": {"columns": ["step", "mean gain dB", "worst gain dB"],
                              "rows": record["val_curve"]},
         "results": {"val": {"mean_gain_db": round(float(np.mean(val)), 3),
                             "worst_gain_db": round(float(np.min(val)), 3),
                             "by_kind": by_kind(pools["val"], val)},
                     "train_first_120": {"mean_gain_db": round(float(np.mean(train_g)), 3),
                                         "by_kind": by_kind(train_sub, train_g)}},
         "seconds": {"data_this_run": round(t1 - t0, 1),
                     "training_total": round(float(record["train_s"]), 1),
                     "training_this_run": round(t2 - t1, 1)}})
    save_weights(net, a.out, weights_provenance)
    log(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
