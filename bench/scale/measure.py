"""What is measured on one case: PSNR of the model and the SciPy baselines on the scored
steps (streamed, slab by slab), the compute rate, the write rate per format, and the
end-to-end upscale of every step against SciPy's trilinear+linear doing the same job (whose
child, :func:`baseline_upscale`, is here too)."""
from __future__ import annotations

import json
import math
import os
import shutil
import sys
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .children import folder_bytes, run_child, stsr_cmd

BASELINES = {"trilinear+linear": 1, "tricubic+cubic": 3}
WRITE_FORMATS = ["vti-raw", "vti-zlib", "h5-raw", "h5-gzip"]


class PsnrAcc:
    """Streaming PSNR of one step of one variable: squared error and the truth's range over
    slabs (the formula needs the whole step's range, known only at the end)."""

    def __init__(self) -> None:
        self.sse, self.n, self.lo, self.hi = 0.0, 0, math.inf, -math.inf

    def add(self, pred: np.ndarray, ref: np.ndarray) -> None:
        d = pred.astype(np.float64) - ref
        self.sse += float(np.sum(d * d))
        self.n += ref.size
        self.lo, self.hi = min(self.lo, float(ref.min())), max(self.hi, float(ref.max()))

    def value(self) -> Optional[float]:
        peak = self.hi - self.lo
        if self.n == 0 or peak <= 0:
            return None
        mse = self.sse / self.n
        return math.inf if mse == 0 else 20 * math.log10(peak) - 10 * math.log10(mse)


def score_steps(gen: Any, case: Any, coarse: Dict[str, np.ndarray], coarse_times: np.ndarray,
                tm: Any, grid: Any, steps: Sequence[int], work: str
                ) -> Tuple[Dict[str, Any], Dict[str, Any], Dict[str, Any]]:
    """Compute rate, PSNR (model and baselines) and write rates on ``steps``.

    The model's step is timed alone (api.predict_timestep: no writing); the truth and the
    baselines are then made slab by slab against it."""
    from stsr_core import api
    from bench.baselines import SlabResampler, combine_in_time, time_weights
    methods = ["stsr"] + list(BASELINES)
    per_step: Dict[str, Dict[str, Dict[str, Optional[float]]]] = {m: {} for m in methods}
    secs: List[float] = []
    writes: Dict[str, Any] = {}
    kept = set(int(t) for t in coarse_times)
    for step in steps:
        t0 = time.perf_counter()
        pred = api.predict_timestep(tm, float(step), grid)
        secs.append(time.perf_counter() - t0)
        if pred is None:
            raise RuntimeError("predict_timestep returned None")
        if not writes:
            writes = write_rates(pred, grid, float(step), work)
        accs = {m: {n: PsnrAcc() for n in pred} for m in methods}
        resamplers = {m: {n: SlabResampler(combine_in_time(
            coarse[n], time_weights(coarse_times, float(step), o)), o) for n in pred}
            for m, o in BASELINES.items()}
        x = np.arange(case.fine[0]) / case.space
        y = np.arange(case.fine[1]) / case.space
        for z0, z1, truth in gen.fine_slabs(case, step, budget_points=1_000_000):
            z = np.arange(z0, z1) / case.space
            for n, ref in truth.items():
                ref64 = ref.astype(np.float64)
                accs["stsr"][n].add(pred[n][z0:z1], ref64)
                for m in BASELINES:
                    accs[m][n].add(resamplers[m][n].slab(z, y, x), ref64)
        for m in methods:
            per_step[m][str(step)] = {n: a.value() for n, a in accs[m].items()}
        del pred, resamplers
    psnr: Dict[str, Any] = {}
    for m in methods:
        def mean(sel: Sequence[str]) -> Optional[float]:
            v = [x for s in sel for x in per_step[m][s].values()
                 if x is not None and math.isfinite(x)]
            return float(np.mean(v)) if v else None
        all_s = list(per_step[m])
        psnr[m] = {"mean": mean(all_s),
                   "kept": mean([s for s in all_s if int(s) in kept]),
                   "between": mean([s for s in all_s if int(s) not in kept]),
                   "per_step": per_step[m]}
    pts = grid.n_points
    timed = secs[1:] if len(secs) > 1 else secs      # the first call also warms up
    compute = {"steps": list(steps), "seconds": secs, "points_per_step": pts,
               "rate_from_steps": len(timed),
               "points_per_s": pts * len(timed) / sum(timed) if sum(timed) > 0 else None}
    return compute, psnr, writes


def write_rates(values: Dict[str, np.ndarray], grid: Any, t: float, work: str
                ) -> Dict[str, Any]:
    """Seconds to write one output step in each format: .vti by this project's writer
    (io/vtifile.py, uncompressed or zlib level 1 on all cores); .h5 with h5py, chunked per
    z-slab, raw or gzip (level 4, one thread)."""
    import h5py
    from stsr_core.io.vtifile import write_vti
    os.makedirs(work, exist_ok=True)
    raw_bytes = 4 * grid.n_points * len(values)
    out: Dict[str, Any] = {}
    for fmt in WRITE_FORMATS:
        path = os.path.join(work, f"w.{fmt.split('-')[0]}")
        t0 = time.perf_counter()
        if fmt.startswith("vti"):
            write_vti(path, grid, values, t, "zlib" if fmt == "vti-zlib" else "none")
            ok = True
        else:
            nz, ny, nx = grid.shape
            rows = max(1, min(nz, (1 << 20) // (ny * nx)))
            with h5py.File(path, "w") as fh:
                for n, a in values.items():
                    fh.create_dataset(n, data=a[None], chunks=(1, rows, ny, nx),
                                      compression="gzip" if fmt == "h5-gzip" else None)
            ok = True
        s = time.perf_counter() - t0
        size = os.path.getsize(path) if ok and os.path.exists(path) else None
        out[fmt] = {"seconds": s, "bytes": size, "raw_bytes": raw_bytes,
                    "mb_per_s": raw_bytes / 1e6 / s if ok and s > 0 else None,
                    "points_per_s": grid.n_points / s if ok and s > 0 else None}
        if os.path.exists(path):
            os.remove(path)
    return out


def end_to_end(model: str, coarse_path: str, case: Any, fmt: str, scratch: str,
               logs: str, tag: str, timeout_s: Optional[float], keep: bool,
               compression: str = "none") -> Dict[str, Any]:
    """``stsr upscale`` of every fine step, then SciPy trilinear+linear doing the same job,
    each a child writing ``fmt`` into ``scratch`` (removed after each unless ``keep``)."""
    ext = {"vti": ".pvd", "h5": ".h5"}[fmt]
    n_out = case.fine[0] * case.fine[1] * case.fine[2] * case.steps
    need = int(n_out * 4 * 4 * 1.1) + (1 << 30)       # uncompressed float32 + 10% + 1 GiB
    os.makedirs(scratch, exist_ok=True)
    free = shutil.disk_usage(scratch).free
    res: Dict[str, Any] = {"format": fmt, "compression": compression, "output_points": n_out,
                           "free_bytes": free, "needed_bytes": need}
    if free < need:
        res["skipped"] = (f"not enough free disk in {scratch}: {free / 1e9:.1f} GB free, "
                          f"{need / 1e9:.1f} GB needed for the uncompressed output")
        print(f"[scale] {tag}: {res['skipped']}; end-to-end upscale skipped", file=sys.stderr)
        return res
    jobs = {"stsr": stsr_cmd() + ["upscale", model, "-o", None, "--scale", str(case.space),
                                  "--time-scale", str(case.time), "--format", fmt,
                                  "--compression", compression, "--device", "cpu",
                                  "--quiet"],
            "trilinear+linear": [sys.executable, "-m", "bench.scale", "--baseline-upscale",
                                 coarse_path, None, "--space", str(case.space), "--time-scale",
                                 str(case.time), "--format", fmt, "--compression",
                                 compression]}
    for name, cmd in jobs.items():
        folder = os.path.join(scratch, name.replace("+", "-"))
        os.makedirs(folder, exist_ok=True)
        out = os.path.join(folder, "out" + ext)
        cmd = [out if c is None else c for c in cmd]
        timings = os.path.join(logs, f"{tag}-upscale-{fmt}-timings.json")
        if name == "stsr":        # the CLI's own split: computing vs writing
            cmd = cmd + ["--timings", timings]
        r = run_child(cmd, os.path.join(logs, f"{tag}-upscale-{name}-{fmt}.log"), timeout_s)
        if name == "stsr" and r["rc"] == 0 and os.path.exists(timings):
            with open(timings) as fh:
                r["timings"] = json.load(fh)
            t = r["timings"]
            r["compute_points_per_s"] = t["points_per_step"] * t["steps"] / t["compute_s"]
            r["write_mb_per_s"] = (t["points_per_step"] * t["steps"] * 4 * len(
                t.get("variables", [])) / 1e6 / t["write_s"]) if t.get("variables") else None
        r["bytes"] = folder_bytes(folder) if r["rc"] == 0 else None
        r["points_per_s"] = n_out / r["seconds"] if r["rc"] == 0 else None
        res[name] = r
        if not keep:
            shutil.rmtree(folder, ignore_errors=True)
        print(f"[scale] {tag} upscale {name} ({fmt}): rc {r['rc']}, {r['seconds']:.1f} s, "
              f"peak RSS {r['max_rss_mb']:.0f} MB", file=sys.stderr)
    a, b = res["stsr"], res["trilinear+linear"]
    res["stsr_over_trilinear_time"] = (a["seconds"] / b["seconds"]
                                      if a["rc"] == 0 and b["rc"] == 0 else None)
    return res


def baseline_upscale(coarse_path: str, out: str, space: int, k: int, fmt: str,
                     compression: str) -> int:
    """Trilinear + linear of every output step, streamed: one step in memory at a time."""
    from bench.baselines import SlabResampler, combine_in_time, time_weights
    from stsr_core.io import read_series   # no torch here: SciPy's users do not load it
    coarse = read_series(coarse_path)
    grid = coarse.grid.scaled(space)
    tc = np.asarray(coarse.times, dtype=np.float64)
    times = np.concatenate([tc[i] + (tc[i + 1] - tc[i]) * np.arange(k) / k
                            for i in range(len(tc) - 1)] + [tc[-1:]])
    nz, ny, nx = grid.shape
    x, y, z = (np.arange(n) / space for n in (nx, ny, nz))

    def step_values(t: float) -> Dict[str, np.ndarray]:
        w = time_weights(coarse.times, t, 1)
        return {n: SlabResampler(combine_in_time(a, w), 1).slab(z, y, x)
                for n, a in coarse.variables.items()}
    # the project's own writer, with the compression the stsr child uses: the same output
    from stsr_core.io.stream import open_series_writer
    with open_series_writer(out, grid, times, list(coarse.variables), {}, format=fmt,
                            compression=compression, overwrite=True) as writer:
        for i, t in enumerate(times):
            writer.write_step(i, step_values(float(t)))
    return 0
