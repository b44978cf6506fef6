"""One learned method on one dataset, run as its own process by bench.run (so that peak
memory is this process's and a crash does not end the benchmark).

    python -m bench.learned --coarse C.pvd --fine F.pvd --preset fast --seconds 60
        [--checkpoints 15,30,60] [--device auto] [--seed 0] --out result.json

PSNR-vs-time checkpoints: at each elapsed training time the model predicts the fine grid at
every fine time and is scored with stsr_core.metrics.evaluate (the scorer of `stsr eval`);
that evaluation is not counted as training time.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
import time
from typing import Optional

import numpy as np
import torch

from stsr_core import api
from stsr_core.io import read_series
from stsr_core.metrics import evaluate


def loop_samples_per_s(tm) -> Optional[float]:
    """Training samples per second of the loop alone: the fit to the data before the first
    step (history init_s) is not sampling. None when the budget ended before the first step
    (a short budget on a slow machine): there is no throughput to report, and 0 would read
    as a measured one."""
    h = tm.info.history
    loop_s = h["elapsed_s"] - h.get("init_s", 0.0)
    if h["steps"] <= 0 or loop_s <= 0:
        return None
    return h["steps"] * tm.train_config.batch_size * tm.info.layout.n_heads / loop_s


def score(tm, fine, kept):
    t0 = time.perf_counter()
    pred = api.predict(tm, dims=fine.dims, times=fine.times)
    if tm.device.type == "cuda":
        torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    r = evaluate(pred, fine, kept)
    voxels = int(np.prod(fine.dims)) * fine.n_times * len(fine.variables)
    return r, pred, voxels / dt


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--coarse", required=True)
    ap.add_argument("--fine", required=True)
    ap.add_argument("--preset", required=True)
    ap.add_argument("--seconds", type=float, required=True)
    ap.add_argument("--checkpoints", default="", help="elapsed seconds to score at")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--slice-out", help="save the final prediction's slice arrays (.npz)")
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    coarse, fine = read_series(a.coarse), read_series(a.fine)
    kept = [float(t) for t in coarse.times]
    marks = sorted(float(s) for s in a.checkpoints.split(",") if s.strip())
    marks = [m for m in marks if m < a.seconds]
    curve = []

    def on_progress(p):
        if p.phase != "train":      # the model is still fitting itself to the data
            return None
        while marks and p.elapsed_s >= marks[0]:
            marks.pop(0)
            r, _, _ = score(p.trained, fine, kept)
            curve.append({"elapsed_s": p.elapsed_s, "step": p.step, "psnr": r["psnr_mean"],
                          "psnr_kept": r["psnr_kept"], "psnr_between": r["psnr_between"]})
        return None

    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    tm = api.fit(coarse, a.preset, max_minutes=a.seconds / 60.0, device=a.device, seed=a.seed,
                 callback=on_progress, train_overrides={"log_every": 5})
    wall = time.perf_counter() - t0
    r, pred, vox_per_s = score(tm, fine, kept)
    h = tm.info.history
    curve.append({"elapsed_s": h["elapsed_s"], "step": h["steps"], "psnr": r["psnr_mean"],
                  "psnr_kept": r["psnr_kept"], "psnr_between": r["psnr_between"]})
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "m.stsr")
        api.save_model(tm, path, with_optimizer=False)
        size = os.path.getsize(path)
    heads = tm.info.layout.n_heads
    out = {
        "preset": a.preset, "device": h["device"], "seed": a.seed,
        "budget_s": a.seconds, "train_s": h["elapsed_s"], "wall_s": wall, "steps": h["steps"],
        "batch_size": tm.train_config.batch_size, "heads": heads,
        "samples_per_s": loop_samples_per_s(tm),
        "init_s": h.get("init_s", 0.0), "stopped": h.get("stopped"),
        "inference_voxels_per_s": vox_per_s,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
        "peak_cuda_mb": (torch.cuda.max_memory_allocated() / 2 ** 20
                         if torch.cuda.is_available() and h["device"].startswith("cuda")
                         else None),
        "model_bytes": size, "n_parameters": tm.n_parameters(),
        "fine_bytes": fine.nbytes, "ratio": fine.nbytes / size,
        "result": r, "curve": curve,
    }
    if a.slice_out:
        k = fine.dims[2] // 2
        np.savez(a.slice_out, **{n: v[:, k] for n, v in pred.variables.items()})
    with open(a.out, "w") as fh:
        json.dump(out, fh)


if __name__ == "__main__":
    main()
