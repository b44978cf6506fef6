"""Issue 16's CUDA figures: the fast default's fit and its whole-grid upscale rate on the
scale benchmark's cases A and B, on a GPU. Self-contained (numpy, h5py, torch; no VTK or
SciPy), so it runs on a bare GPU machine:

    PYTHONPATH=. python3 -m bench.gpu_scale --out DIR [--cases A,B] [--fit-minutes 1]

For each case: make the coarse input (examples/data/scale/generate.py), ``api.fit`` on
CUDA (base fit included, wall time), then ``api.predict_timestep`` over a few output
intervals (every fine step inside them: kept and in-between), timed twice: on the device
alone (``SplineBase.evaluate_grid``, synchronised) and with the copy to host memory that
``stsr upscale`` makes before writing. Prints a table and writes gpu_scale.json.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time
from typing import Any, Dict, List

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _generator() -> Any:
    spec = importlib.util.spec_from_file_location(
        "scale_generate", os.path.join(ROOT, "examples", "data", "scale", "generate.py"))
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod              # its dataclasses look their module up
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def run_case(tag: str, gen: Any, work: str, fit_minutes: float, intervals: int
             ) -> Dict[str, Any]:
    from stsr_core import api
    from stsr_core.io import read_series
    from stsr_core.prediction import grid_plan
    case = gen.CASES[tag]
    path = os.path.join(work, f"{tag}.h5")
    t0 = time.perf_counter()
    gen.write_coarse(case, path)
    series = read_series(path)
    gen_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    tm = api.fit(series, max_minutes=fit_minutes, device="auto")
    fit_s = time.perf_counter() - t0
    grid = api.output_grid(tm.info.grid, scale=case.space)
    times = api.output_times(tm.info.times, time_scale=case.time)
    steps = [float(t) for t in times[: intervals * case.time]]
    api.predict_timestep(tm, steps[1], grid)          # warm-up (plans, kernels)
    base = tm.model.base
    plan = grid_plan(tm, grid)
    _sync()
    t0 = time.perf_counter()
    for t in steps:
        base.evaluate_grid(plan, tm.info.normalised_time(t))
    _sync()
    device_s = time.perf_counter() - t0
    tm.plan = None
    t0 = time.perf_counter()
    for t in steps:
        api.predict_timestep(tm, t, grid)
    host_s = time.perf_counter() - t0
    n = grid.n_points * len(steps)
    out = {"case": tag, "coarse": list(series.dims), "coarse_steps": series.n_times,
           "fine": list(grid.dims), "generate_s": gen_s, "fit_s": fit_s,
           "fit_history": {k: v for k, v in tm.info.history.items()
                           if isinstance(v, (int, float, str, list))},
           "device": str(tm.device), "steps_timed": len(steps),
           "points_per_step": grid.n_points,
           "device_points_per_s": n / device_s, "with_host_copy_points_per_s": n / host_s,
           "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
           "torch": torch.__version__,
           "max_gpu_mem_gb": (torch.cuda.max_memory_allocated() / 1e9
                              if torch.cuda.is_available() else None)}
    print(f"{tag}: coarse {series.dims} x {series.n_times} -> {grid.dims}; fit {fit_s:.1f} s; "
          f"{out['device_points_per_s'] / 1e6:.1f} M points/s on the device, "
          f"{out['with_host_copy_points_per_s'] / 1e6:.1f} M/s with the copy to host "
          f"({len(steps)} steps, {out['device']})", flush=True)
    return out


def main(argv: Any = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--cases", default="A,B")
    p.add_argument("--fit-minutes", type=float, default=1.0)
    p.add_argument("--intervals", type=int, default=2, help="output intervals timed")
    a = p.parse_args(argv)
    os.makedirs(a.out, exist_ok=True)
    work = os.path.join(a.out, "work")
    os.makedirs(work, exist_ok=True)
    gen = _generator()
    rows: List[Dict[str, Any]] = []
    for tag in a.cases.split(","):
        rows.append(run_case(tag.strip(), gen, work, a.fit_minutes, a.intervals))
        with open(os.path.join(a.out, "gpu_scale.json"), "w") as fh:
            json.dump({"rows": rows, "date": time.strftime("%Y-%m-%d")}, fh, indent=2)
    for f in os.listdir(work):
        os.remove(os.path.join(work, f))
    os.rmdir(work)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
