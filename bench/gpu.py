"""The benchmark at GPU sizes, self-contained for a CUDA machine that has PyTorch and numpy
but not ParaView/VTK/SciPy (the lent device): the tornado is generated in memory at a large
size, coarsened by the same protocol (every 2nd point, every 4th step), reconstructed with
trilinear + linear (torch, exact same definition as bench.baselines) and with the learned
presets under a time budget, and scored with stsr_core.metrics.evaluate.

    python -m bench.gpu [--n 129] [--steps 49] [--presets fast,paper] [--seconds 300]
                        [--paper-seconds 600] [--out results.json]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..",
                                "examples", "data", "tornado"))
from generate_tornado import tornado_velocity, vorticity_magnitude  # noqa: E402

from bench.learned import loop_samples_per_s  # noqa: E402
from stsr_core import api  # noqa: E402
from stsr_core.metrics import evaluate  # noqa: E402
from stsr_core.series import VolumeSeries  # noqa: E402


def tornado(n: int, steps: int, dt: float) -> VolumeSeries:
    h = 1.0 / (n - 1)
    v = np.stack([tornado_velocity(n, i * dt) for i in range(steps)])
    variables = {f"velocity_{c}": v[..., c] for c in range(3)}
    variables["velocity_magnitude"] = np.linalg.norm(v, axis=-1)
    variables["vorticity_magnitude"] = np.stack([vorticity_magnitude(v[i], h)
                                                 for i in range(steps)])
    return VolumeSeries(times=np.arange(steps) * dt, variables=variables,
                        spacing=(h, h, h))


def trilinear_linear(coarse: VolumeSeries, fine: VolumeSeries, dev) -> VolumeSeries:
    out = {}
    tc, tf = coarse.times, fine.times
    j = np.clip(np.searchsorted(tc, tf, side="right") - 1, 0, len(tc) - 2)
    w = (tf - tc[j]) / (tc[j + 1] - tc[j])
    for name, a in coarse.variables.items():
        x = torch.from_numpy(a).to(dev)[:, None]
        up = F.interpolate(x, size=tuple(fine.dims[::-1]), mode="trilinear",
                           align_corners=True)[:, 0]
        res = [(1 - wi) * up[ji] + wi * up[ji + 1] for ji, wi in zip(j, w)]
        out[name] = torch.stack(res).cpu().numpy()
    return VolumeSeries(times=fine.times, variables=out, origin=fine.origin,
                        spacing=fine.spacing)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=129)
    ap.add_argument("--steps", type=int, default=49)
    ap.add_argument("--dt", type=float, default=5.0 / 3)
    ap.add_argument("--presets", default="fast,paper")
    ap.add_argument("--seconds", type=float, default=300.0)
    ap.add_argument("--paper-seconds", type=float, default=600.0)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--marks", default="15,30,60,120,300,600",
                    help="training seconds at which to score (each costs a full prediction)")
    ap.add_argument("--out", default="gpu_results.json")
    a = ap.parse_args(argv)
    dev = torch.device("cuda" if (a.device == "auto" and torch.cuda.is_available())
                       else ("cpu" if a.device == "auto" else a.device))
    info = {"device": str(dev), "torch": str(torch.__version__), "n": a.n, "steps": a.steps,
            "gpu": torch.cuda.get_device_name(0) if dev.type == "cuda" else None}
    t0 = time.perf_counter()
    fine = tornado(a.n, a.steps, a.dt)
    coarse = fine.subsample(2, 4)
    kept = list(coarse.times)
    print(f"data: fine {fine.dims} x {fine.n_times}, coarse {coarse.dims} x {coarse.n_times} "
          f"({time.perf_counter() - t0:.0f} s)", flush=True)
    rows = []
    base = evaluate(trilinear_linear(coarse, fine, dev), fine, kept)
    rows.append({"method": "trilinear+linear", "psnr": base["psnr_mean"],
                 "psnr_kept": base["psnr_kept"], "psnr_between": base["psnr_between"]})
    print(f"trilinear+linear: {base['psnr_mean']:.2f}", flush=True)
    for preset in [p for p in a.presets.split(",") if p]:
        budget = a.paper_seconds if preset == "paper" else a.seconds
        marks = [float(m) for m in a.marks.split(",") if m and float(m) < budget]
        curve = []

        def hook(p, marks=marks, curve=curve):
            while marks and p.elapsed_s >= marks[0]:
                marks.pop(0)
                t1 = time.perf_counter()
                r = evaluate(api.predict(p.trained, dims=fine.dims, times=fine.times), fine,
                             kept)
                curve.append({"elapsed_s": p.elapsed_s, "step": p.step, "psnr": r["psnr_mean"],
                              "psnr_kept": r["psnr_kept"], "psnr_between": r["psnr_between"],
                              "eval_s": time.perf_counter() - t1})
                print(f"  {preset} {p.elapsed_s:.0f} s step {p.step}: {r['psnr_mean']:.2f}",
                      flush=True)

        torch.cuda.reset_peak_memory_stats() if dev.type == "cuda" else None
        tm = api.fit(coarse, preset, max_minutes=budget / 60, device=str(dev), seed=0,
                     callback=hook, train_overrides={"log_every": 10})
        t1 = time.perf_counter()
        pred = api.predict(tm, dims=fine.dims, times=fine.times)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        inf_s = time.perf_counter() - t1
        r = evaluate(pred, fine, kept)
        h = tm.info.history
        curve.append({"elapsed_s": h["elapsed_s"], "step": h["steps"], "psnr": r["psnr_mean"],
                      "psnr_kept": r["psnr_kept"], "psnr_between": r["psnr_between"]})
        rows.append({"method": preset, "psnr": r["psnr_mean"], "psnr_kept": r["psnr_kept"],
                     "psnr_between": r["psnr_between"], "train_s": h["elapsed_s"],
                     "steps": h["steps"],
                     "samples_per_s": loop_samples_per_s(tm),
                     "inference_voxels_per_s": np.prod(fine.dims) * fine.n_times
                     * len(fine.variables) / inf_s,
                     "peak_cuda_mb": torch.cuda.max_memory_allocated() / 2 ** 20
                     if dev.type == "cuda" else None,
                     "n_parameters": tm.n_parameters(), "curve": curve})
        print(f"{preset}: {r['psnr_mean']:.2f} after {h['steps']} steps", flush=True)
        del pred
    with open(a.out, "w") as fh:
        json.dump({"machine": info, "rows": rows}, fh, indent=1)
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
