"""The scale benchmark of issue 16: what fit and upscale cost on real-size data, beside
SciPy's interpolation, on this machine.

For each case (examples/data/scale/generate.py makes the coarse input; the fine truth is
evaluated analytically, slab by slab, only at a few steps):
  - ``stsr fit`` as a child process: wall time, peak RSS (os.wait4), the model file's size
    (and any file written beside it, e.g. optimiser state) against the coarse input's float32
    size;
  - compute rate apart from writing: in this process, api.load_model, then
    api.predict_timestep on the scored steps; output points (all variables) per second;
  - PSNR (20 log10(range) - 10 log10(MSE), per variable per step, averaged) on those steps
    for the model, trilinear+linear and tricubic+cubic (bench/baselines.py, slab by slab);
  - write rate of one output step per format (.vti raw/zlib, .h5 raw/gzip-chunked);
  - end to end: ``stsr upscale`` of EVERY fine step (scale s, time scale k) into a scratch
    folder, as a child (wall time, peak RSS, output size), and in the same run SciPy's
    trilinear+linear as a child doing the same job (read coarse, every step, write the same
    format); the scratch output is removed afterwards, and the step is skipped with a message
    when the free disk space cannot hold it.
Cases: A 257^3 x 49 steps (coarse 129^3 x 13, s = 2, k = 4); B 597x245x245 x 97 (coarse
150x62x62 x 25, s = 4, k = 4); growth: coarse 33^3, 65^3, 129^3 x 13 steps (fit time, model
size, peak RSS, upscale rate; 129^3 is case A's data, reused when A ran).

    make bench-scale ARGS="--quick"
    python -m bench.scale [--cases A,B,growth] [--quick] [--fit-minutes M] [--formats h5,vti]
                          [--keep-output] [--upscale-timeout-minutes M] [--out DIR]
    python -m bench.scale --processes 1,2 [--process-case growth65] [--quick]

``--processes`` (issue 18) runs only ``stsr fit`` and ``stsr upscale`` with 1 and with N
processes (torchrun) on one case, into processes.json and processes.md.

Writes bench/results/<date>/scale.json (after every case, atomically: a cut-off run keeps
what it measured), scale.md and scale.png. A figure that was not measured is null/"-", never
estimated. The CLI children run this tree's stsr_core (PYTHONPATH), not an installed copy.
"""
from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import asdict
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GEN_PATH = os.path.join(ROOT, "examples", "data", "scale", "generate.py")
BASELINES = {"trilinear+linear": 1, "tricubic+cubic": 3}
# sizes per mode: the two cases and the growth series (generate.CASES keys)
SIZES = {"full": {"A": "A", "B": "B", "growth": ["growth33", "growth65", "growth129"]},
         "quick": {"A": "quickA", "B": "quickB", "growth": ["quick9", "quick17", "quick33"]},
         "tiny": {"A": "tinyA", "B": "tinyA", "growth": ["tinyA"]}}
WRITE_FORMATS = ["vti-raw", "vti-zlib", "h5-raw", "h5-gzip"]
TARGETS = {"fit_s": 600.0, "rss_mb": 4096.0, "model_ratio": 2.0, "points_per_s": 10e6}


def gen_module():
    """examples/data/scale/generate.py (not a package) as a module."""
    spec = importlib.util.spec_from_file_location("scale_generate", GEN_PATH)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["scale_generate"] = mod
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod


# --- child processes ----------------------------------------------------------------------
def child_env() -> Dict[str, str]:
    """This tree first on the path: the venv's ``stsr`` may be an editable install of
    another checkout."""
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def stsr_cmd() -> List[str]:
    return [sys.executable, "-m", "stsr_core.cli"]


# Peak RSS comes from wait4's ru_maxrss, but Linux carries the forking process's high-water
# mark into the child across exec: forked from this process (torch and data loaded) every
# child would report at least our size. So children are started by a small launcher
# process (plain Python, ~10 MB) started before anything big is loaded.
LAUNCHER = r"""
import json, os, signal, subprocess, sys, time
for line in sys.stdin:
    job = json.loads(line)
    with open(job["log"], "a") as log:
        t0 = time.perf_counter()
        proc = subprocess.Popen(job["cmd"], stdout=log, stderr=subprocess.STDOUT,
                                cwd=job["cwd"], env=job["env"], start_new_session=True)
        timed_out = False
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid == proc.pid:
                break
            if job["timeout"] is not None and time.perf_counter() - t0 > job["timeout"]:
                timed_out = True
                os.killpg(proc.pid, signal.SIGKILL)
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.05)
        seconds = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
    print(json.dumps({"seconds": seconds, "maxrss_kb": usage.ru_maxrss,
                      "rc": proc.returncode, "timed_out": timed_out}), flush=True)
"""
_launcher: Optional[subprocess.Popen] = None


def start_launcher() -> None:
    """Start the launcher now, while this process is small (see LAUNCHER)."""
    global _launcher
    if _launcher is None:
        _launcher = subprocess.Popen([sys.executable, "-c", LAUNCHER], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)


def run_child(cmd: Sequence[str], log_path: str, timeout_s: Optional[float] = None,
              env: Optional[Dict[str, str]] = None) -> Dict[str, Any]:
    """Run one child, alone, through the launcher, and measure it: wall seconds and its own
    peak RSS (wait4's ru_maxrss, KiB on Linux). A timeout kills its process group and says
    so; a failure keeps the log's tail."""
    start_launcher()
    assert _launcher is not None and _launcher.stdin and _launcher.stdout
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    with open(log_path, "w") as log:
        log.write("$ " + " ".join(cmd) + "\n")
    _launcher.stdin.write(json.dumps({"cmd": list(cmd), "log": log_path, "cwd": ROOT,
                                      "env": {**child_env(), **(env or {})},
                                      "timeout": timeout_s}) + "\n")
    _launcher.stdin.flush()
    r = json.loads(_launcher.stdout.readline())
    rc = r["rc"]
    tail = open(log_path, errors="replace").read()[-600:]
    return {"seconds": r["seconds"], "max_rss_mb": r["maxrss_kb"] / 1024.0, "rc": rc,
            "timed_out": r["timed_out"], "log": log_path,
            **({"error": tail.strip()} if rc != 0 else {})}


def cli_formats() -> List[str]:
    """The output formats ``stsr upscale --help`` offers (probed: the CLI is changing)."""
    r = subprocess.run(stsr_cmd() + ["upscale", "--help"], capture_output=True, text=True,
                       cwd=ROOT, env=child_env())
    m = re.search(r"--format \{([^}]*)\}", r.stdout)
    return m.group(1).split(",") if m else []


def folder_bytes(path: str) -> int:
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)


# --- machine ------------------------------------------------------------------------------
def machine_info() -> Dict[str, Any]:
    """bench.run's machine description, with memory, threads and the commit measured."""
    import torch
    from bench.run import machine_info as base_info
    mem_gb = None
    try:
        with open("/proc/meminfo") as fh:
            mem_gb = int(next(l for l in fh if l.startswith("MemTotal")).split()[1]) / 2**20
    except (OSError, StopIteration):
        pass

    def git(*a: str) -> str:
        r = subprocess.run(["git", "-C", ROOT, *a], capture_output=True, text=True)
        return r.stdout.strip()
    info = base_info("cpu")
    info.update(memory_gb=mem_gb, torch_threads=torch.get_num_threads(),
                gpu=info.get("gpu"), git_commit=git("rev-parse", "HEAD"),
                git_dirty=bool(git("status", "--porcelain")))
    return info


def save_json(obj: Dict[str, Any], path: str) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(obj, fh, indent=2, default=float)
    os.replace(tmp, path)


# --- data ---------------------------------------------------------------------------------
def ensure_data(gen: Any, case: Any, data_dir: str) -> Tuple[str, Optional[float]]:
    """The case's coarse input (reused when already generated for the same case);
    (path, seconds spent generating or None when reused)."""
    folder = os.path.join(data_dir, "x".join(map(str, case.fine)) +
                          f"-t{case.steps}-s{case.space}-k{case.time}-seed{case.seed}")
    path = os.path.join(folder, "coarse.h5")
    stamp = os.path.join(folder, "case.json")
    if os.path.exists(path) and os.path.exists(stamp):
        with open(stamp) as fh:
            if json.load(fh).get("case") == asdict(case):
                return path, None
    os.makedirs(folder, exist_ok=True)
    info = gen.write_coarse(case, path)
    with open(stamp, "w") as fh:
        json.dump({"case": asdict(case), "coarse": info}, fh)
    return path, float(info["seconds"])


# --- measurements -------------------------------------------------------------------------
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
    """Seconds to write one output step in each format, with this project's writers' settings
    (.vti appended raw, zlib as the CLI writes; .h5 chunked per z-slab, raw or gzip)."""
    import h5py
    from stsr_core.io.vti import _vtk, image_from_series
    from stsr_core.series import VolumeSeries
    os.makedirs(work, exist_ok=True)
    series = VolumeSeries(times=np.array([t]), variables={n: a[None] for n, a in values.items()},
                          origin=grid.origin, spacing=grid.spacing)
    raw_bytes = 4 * grid.n_points * len(values)
    out: Dict[str, Any] = {}
    for fmt in WRITE_FORMATS:
        path = os.path.join(work, f"w.{fmt.split('-')[0]}")
        t0 = time.perf_counter()
        if fmt.startswith("vti"):
            Writer = _vtk()[4]
            w = Writer()
            w.SetFileName(path)
            w.SetInputData(image_from_series(series, 0))
            w.SetDataModeToAppended()
            w.EncodeAppendedDataOff()
            if fmt == "vti-zlib":
                w.SetCompressorTypeToZLib()
            else:
                w.SetCompressorTypeToNone()
            ok = bool(w.Write())
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


# --- the SciPy baseline as a child: read coarse, every fine step, write ---------------------
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


# --- one case -----------------------------------------------------------------------------
def run_case(tag: str, gen: Any, case: Any, a: argparse.Namespace, dirs: Dict[str, str],
             formats: List[str], full: bool) -> Dict[str, Any]:
    """Everything measured for one case; ``full``: also the end-to-end upscale of every
    step (the growth series only times a few steps)."""
    from stsr_core import api
    from stsr_core.io import read_series
    res: Dict[str, Any] = {"case": {**asdict(case), "coarse": list(case.coarse),
                                    "coarse_steps": case.coarse_steps}}
    coarse_path, gen_s = ensure_data(gen, case, dirs["data"])
    res["generate_s"] = gen_s
    n_vars = len(gen.VARIABLES)
    cx, cy, cz = case.coarse
    res["coarse_float32_bytes"] = 4 * cx * cy * cz * case.coarse_steps * n_vars
    model = os.path.join(dirs["models"], f"{tag}.stsr")
    cmd = stsr_cmd() + ["fit", coarse_path, "-o", model, "--device", "cpu", "--quiet",
                        "--overwrite", "--seed", "0"]
    if a.fit_minutes is not None:
        cmd += ["--max-minutes", str(a.fit_minutes)]
    print(f"[scale] {tag}: fit on coarse {cx}x{cy}x{cz} x {case.coarse_steps}", file=sys.stderr)
    fit = run_child(cmd, os.path.join(dirs["logs"], f"{tag}-fit.log"))
    res["fit"] = fit
    if fit["rc"] != 0 or not os.path.exists(model):
        print(f"[scale] {tag}: fit failed (rc {fit['rc']}); see {fit['log']}", file=sys.stderr)
        return res
    stem = os.path.basename(model)
    beside = {f: os.path.getsize(os.path.join(dirs["models"], f))
              for f in os.listdir(dirs["models"]) if f.startswith(stem) and f != stem}
    size = os.path.getsize(model)
    res["model"] = {"bytes": size, "files_beside": beside,
                    "ratio_to_coarse": size / res["coarse_float32_bytes"]}
    tm = api.load_model(model, device="cpu")
    h = tm.info.history
    fit.update(train_steps=h.get("steps"), train_s=h.get("elapsed_s"), init_s=h.get("init_s"),
               parameters=tm.n_parameters())
    grid = api.output_grid(tm.info.grid, scale=case.space)
    coarse = read_series(coarse_path)
    steps = case.truth_steps() if full else case.truth_steps()[:2]
    compute, psnr, writes = score_steps(gen, case, coarse.variables, coarse.times, tm, grid,
                                        steps, os.path.join(dirs["scratch"], "write"))
    del tm, coarse
    res.update(compute=compute, psnr=psnr, write_rates=writes)
    if full:
        res["end_to_end"] = [end_to_end(model, coarse_path, case, f,
                                        os.path.join(dirs["scratch"], f"{tag}-upscale"),
                                        dirs["logs"], tag, a.upscale_timeout, a.keep_output,
                                        a.compression)
                             for f in formats]
    else:   # a few steps through the CLI: its peak RSS and rate with load and write
        times = ",".join(str(float(s)) for s in steps)
        folder = os.path.join(dirs["scratch"], f"{tag}-upscale")
        os.makedirs(folder, exist_ok=True)
        r = run_child(stsr_cmd() + ["upscale", model, "-o", os.path.join(folder, "out.h5"),
                                    "--scale", str(case.space), "--times", times, "--device",
                                    "cpu", "--quiet", "--format", "h5", "--compression",
                                    a.compression],
                      os.path.join(dirs["logs"], f"{tag}-upscale-steps.log"), a.upscale_timeout)
        r["steps"] = len(steps)
        r["points_per_s"] = grid.n_points * len(steps) / r["seconds"] if r["rc"] == 0 else None
        res["upscale_steps"] = r
        if not a.keep_output:
            shutil.rmtree(folder, ignore_errors=True)
    return res


def growth_row(tag: str, r: Dict[str, Any]) -> Dict[str, Any]:
    """The growth table's figures out of one case's result (None where not measured)."""
    fit, model, comp = r.get("fit", {}), r.get("model", {}), r.get("compute", {})
    ups = r.get("upscale_steps")
    if ups is None and r.get("end_to_end"):
        ups = r["end_to_end"][0].get("stsr")
    return {"tag": tag, "coarse": r["case"]["coarse"], "coarse_steps": r["case"]["coarse_steps"],
            "coarse_float32_bytes": r.get("coarse_float32_bytes"),
            "fit_s": fit.get("seconds"), "fit_rss_mb": fit.get("max_rss_mb"),
            "model_bytes": model.get("bytes"), "model_ratio": model.get("ratio_to_coarse"),
            "compute_points_per_s": comp.get("points_per_s"),
            "upscale_rss_mb": ups.get("max_rss_mb") if ups else None,
            "upscale_points_per_s": ups.get("points_per_s") if ups else None}


# --- reports ------------------------------------------------------------------------------
def f(v: Any, spec: str = ".1f", scale: float = 1.0) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else \
        format(v * scale, spec)


def verdict(value: Optional[float], target: float, le: bool = True) -> str:
    if value is None:
        return "not measured"
    ok = value <= target if le else value >= target
    return "met" if ok else "missed"


def write_markdown(res: Dict[str, Any], path: str) -> None:
    m = res["machine"]
    lines = [f"Machine: {m['cpu']}, {m['cores']} cores, {f(m['memory_gb'], '.0f')} GB RAM, "
             f"no GPU; torch {m['torch']} ({m['torch_threads']} threads); commit "
             f"{m['git_commit'][:10]}{' (dirty)' if m['git_dirty'] else ''}; {m['date']}; "
             f"mode {res['settings']['mode']}, fit budget "
             f"{res['settings']['fit_minutes'] or 'preset default'} min.", ""]
    cases = res.get("cases", {})
    if cases:
        lines += ["| case | fine (coarse) | fit s | fit RSS MB | model MB (x coarse f32) | "
                  "compute M pts/s | PSNR stsr | trilinear | tricubic |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for tag, r in cases.items():
            c = r["case"]
            p = r.get("psnr", {})
            lines.append(
                f"| {tag} | {'x'.join(map(str, c['fine']))} x {c['steps']} "
                f"({'x'.join(map(str, c['coarse']))} x {c['coarse_steps']}) | "
                f"{f(r.get('fit', {}).get('seconds'))} | "
                f"{f(r.get('fit', {}).get('max_rss_mb'), '.0f')} | "
                f"{f(r.get('model', {}).get('bytes'), '.2f', 1e-6)} "
                f"({f(r.get('model', {}).get('ratio_to_coarse'), '.2f')}) | "
                f"{f(r.get('compute', {}).get('points_per_s'), '.3f', 1e-6)} | "
                + " | ".join(f(p.get(k, {}).get('mean'), '.2f')
                             for k in ("stsr", "trilinear+linear", "tricubic+cubic")) + " |")
        lines += ["", "End to end, every fine step (child processes; output removed after):", "",
                  "| case | format | method | seconds | M pts/s | peak RSS MB | output MB | "
                  "stsr / trilinear time | compute M pts/s (apart from writing) |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for tag, r in cases.items():
            for e in r.get("end_to_end", []):
                if "skipped" in e:
                    lines.append(f"| {tag} | {e['format']} | - | skipped: {e['skipped']} "
                                 "| | | | |")
                    continue
                for name in ("stsr", "trilinear+linear"):
                    x = e[name]
                    lines.append(
                        f"| {tag} | {e['format']} | {name} | {f(x['seconds'])}"
                        f"{'' if x['rc'] == 0 else ' (rc ' + str(x['rc']) + ')'} | "
                        f"{f(x['points_per_s'], '.3f', 1e-6)} | {f(x['max_rss_mb'], '.0f')} | "
                        f"{f(x['bytes'], '.1f', 1e-6)} | "
                        f"{f(e['stsr_over_trilinear_time'], '.2f') if name == 'stsr' else ''} | "
                        f"{f(x.get('compute_points_per_s'), '.3f', 1e-6) if name == 'stsr' else ''} |")
        lines += ["", "Write rate of one output step (MB/s of float32 data; file MB):", "",
                  "| case | " + " | ".join(WRITE_FORMATS) + " |",
                  "|---|" + "---|" * len(WRITE_FORMATS)]
        for tag, r in cases.items():
            w = r.get("write_rates", {})
            lines.append(f"| {tag} | " + " | ".join(
                f"{f(w.get(k, {}).get('mb_per_s'), '.0f')} "
                f"({f(w.get(k, {}).get('bytes'), '.1f', 1e-6)})" for k in WRITE_FORMATS) + " |")
        lines += ["", "Targets (issue 16):", ""]
        for tag, r in cases.items():
            fit = r.get("fit", {})
            e2e = [e for e in r.get("end_to_end", []) if "skipped" not in e]
            ups_rss = max([e["stsr"]["max_rss_mb"] for e in e2e], default=None)
            ratio = min([e["stsr_over_trilinear_time"] for e in e2e
                         if e["stsr_over_trilinear_time"] is not None], default=None)
            every = max([e["stsr"].get("compute_points_per_s") or 0 for e in e2e], default=0)
            lines.append(
                f"- {tag}: fit <= 10 min {verdict(fit.get('seconds'), TARGETS['fit_s'])}; "
                f"fit RSS <= 4 GB {verdict(fit.get('max_rss_mb'), TARGETS['rss_mb'])}; "
                f"model <= 2x coarse "
                f"{verdict(r.get('model', {}).get('ratio_to_coarse'), TARGETS['model_ratio'])}; "
                f"compute >= 10 M pts/s: every step (stsr upscale's own split) "
                f"{verdict(every or None, TARGETS['points_per_s'], False)}, the scored steps "
                f"alone in-process (each in another interval: the slots evaluated anew) "
                f"{verdict(r.get('compute', {}).get('points_per_s'), TARGETS['points_per_s'], False)}; "
                f"upscale RSS <= 4 GB {verdict(ups_rss, TARGETS['rss_mb'])}; "
                f"end to end no slower than trilinear {verdict(ratio, 1.0)}")
    g = res.get("growth", [])
    if g:
        lines += ["", "Cost growth (same field, s = 2, k = 4):", "",
                  "| coarse | coarse MB | fit s | fit RSS MB | model MB (x coarse) | "
                  "compute M pts/s | upscale (few steps) M pts/s | upscale RSS MB |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in g:
            lines.append(
                f"| {'x'.join(map(str, r['coarse']))} x {r['coarse_steps']} | "
                f"{f(r['coarse_float32_bytes'], '.1f', 1e-6)} | {f(r['fit_s'])} | "
                f"{f(r['fit_rss_mb'], '.0f')} | {f(r['model_bytes'], '.2f', 1e-6)} "
                f"({f(r['model_ratio'], '.2f')}) | {f(r['compute_points_per_s'], '.3f', 1e-6)} | "
                f"{f(r['upscale_points_per_s'], '.3f', 1e-6)} | {f(r['upscale_rss_mb'], '.0f')} |")
    with open(path, "w") as fh:
        fh.write("\n".join(lines) + "\n")


def plot(res: Dict[str, Any], path: str) -> None:
    """Growth series: time, memory, size and rate against the coarse grid's point count."""
    g = [r for r in res.get("growth", [])]
    if not g:
        return
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    x = [r["coarse"][0] * r["coarse"][1] * r["coarse"][2] for r in g]
    fig, ax = plt.subplots(1, 4, figsize=(16, 3.6))
    panels = [("fit s", [("fit", "fit_s", 1)]),
              ("peak RSS MB", [("fit", "fit_rss_mb", 1), ("upscale", "upscale_rss_mb", 1)]),
              ("MB", [("model", "model_bytes", 1e-6), ("coarse f32", "coarse_float32_bytes",
                                                         1e-6)]),
              ("M points/s", [("compute", "compute_points_per_s", 1e-6),
                              ("upscale e2e", "upscale_points_per_s", 1e-6)])]
    for a, (label, series) in zip(ax, panels):
        for name, key, sc in series:
            pts = [(xi, r[key] * sc) for xi, r in zip(x, g) if r[key] is not None]
            if pts:
                a.plot(*zip(*pts), "o-", label=name)
        a.set_xscale("log")
        a.set_yscale("log")
        a.set_xlabel("coarse points")
        a.set_ylabel(label)
        a.legend(fontsize=8)
    fig.suptitle(f"stsr cost growth, {res['machine']['cpu']}, {res['machine']['cores']} cores")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# --- 1 process against several (issue 18) --------------------------------------------------
PROCESS_CASES = {"full": "growth65", "quick": "quick17", "tiny": "tinyA"}


def launched(n: int, args: Sequence[str]) -> List[str]:
    """``stsr ARGS`` as one process (all cores to torch's threads) or as ``n`` under
    ``torchrun --standalone`` (one thread each: torchrun's default)."""
    if n == 1:
        return stsr_cmd() + list(args)
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    return [torchrun, "--standalone", "--nproc-per-node", str(n), "-m", "stsr_core.cli",
            *args]


def run_processes(counts: Sequence[int], gen: Any, case: Any, dirs: Dict[str, str],
                  compression: str, threads: Optional[int] = None) -> Dict[str, Any]:
    """``stsr fit`` and ``stsr upscale`` (every fine step, .pvd) of one case with each
    number of processes in ``counts``: wall time of the whole child (start-up included),
    the speed-up over the first count, and how far each base is from the first's. The fit
    runs without a time budget (``--steps 1`` on the base alone: every displacement fit to
    its end), so the runs do the same work. ``threads``: OMP_NUM_THREADS of every child (a
    process under torchrun has 1 anyway), to tell processes from threads apart."""
    from stsr_core import api
    env = None if threads is None else {"OMP_NUM_THREADS": str(threads)}
    tag = "" if threads is None else f"-threads{threads}"
    coarse_path, _ = ensure_data(gen, case, dirs["data"])
    res: Dict[str, Any] = {"case": {**asdict(case), "coarse": list(case.coarse),
                                    "coarse_steps": case.coarse_steps},
                           "counts": list(counts), "fit": {}, "upscale": {}}
    first = None
    for n in counts:
        model = os.path.join(dirs["models"], f"processes-{n}{tag}.stsr")
        r = run_child(launched(n, ["fit", coarse_path, "-o", model, "--device", "cpu",
                                   "--quiet", "--overwrite", "--steps", "1"]),
                      os.path.join(dirs["logs"], f"processes-{n}{tag}-fit.log"), env=env)
        if r["rc"] == 0:
            tm = api.load_model(model, device="cpu")
            base = tm.model.base
            if first is None:
                first = base
            # the largest difference of any coefficient, in units of the variables' range
            # (the model's values are normalised to a range of 2)
            r["base_max_diff_of_range"] = max(
                float((a - b).abs().max()) / 2.0 for a, b in
                zip(first.state_dict().values(), base.state_dict().values()))
            r["init_s"] = tm.info.history.get("init_s")
        res["fit"][str(n)] = r
        print(f"[scale] fit with {n} process(es): rc {r['rc']}, {r['seconds']:.1f} s",
              file=sys.stderr)
    model = os.path.join(dirs["models"], f"processes-{counts[0]}{tag}.stsr")
    for n in counts:
        folder = os.path.join(dirs["scratch"], f"processes-{n}{tag}")
        timings = os.path.join(dirs["logs"], f"processes-{n}{tag}-upscale-timings.json")
        r = run_child(launched(n, ["upscale", model, "-o", os.path.join(folder, "out.pvd"),
                                   "--scale", str(case.space), "--time-scale", str(case.time),
                                   "--compression", compression, "--device", "cpu",
                                   "--quiet", "--overwrite", "--timings", timings]),
                      os.path.join(dirs["logs"], f"processes-{n}{tag}-upscale.log"), env=env)
        if r["rc"] == 0:
            with open(timings) as fh:
                r["timings"] = json.load(fh)
            r["bytes"] = folder_bytes(folder)
            n_out = case.fine[0] * case.fine[1] * case.fine[2] * case.steps
            r["points_per_s"] = n_out / r["seconds"]
        shutil.rmtree(folder, ignore_errors=True)
        res["upscale"][str(n)] = r
        print(f"[scale] upscale with {n} process(es): rc {r['rc']}, {r['seconds']:.1f} s",
              file=sys.stderr)
    for what in ("fit", "upscale"):
        base_s = res[what][str(counts[0])]["seconds"]
        for n in counts:
            r = res[what][str(n)]
            r["speedup"] = base_s / r["seconds"] if r["rc"] == 0 else None
    return res


def write_processes_markdown(res: Dict[str, Any], path: str) -> None:
    m = res["machine"]
    p = res["processes"]
    c = p["case"]
    lines = [f"# stsr fit and upscale with {', '.join(map(str, p['counts']))} process(es) "
             f"({res['date']})", "",
             f"Machine: {m.get('cpu', '?')}, {m.get('cores', '?')} cores, torch "
             f"{m.get('torch', '?')}, commit {str(m.get('git_commit', ''))[:7]}"
             f"{' (uncommitted changes)' if m.get('git_dirty') else ''}. One process uses "
             + ("torch's default threads (all cores)" if p.get("threads") is None else
                f"OMP_NUM_THREADS={p['threads']}")
             + "; N processes are `torchrun --standalone --nproc-per-node N` (one thread "
             "each). Wall time of the whole command, start-up included; other users shared "
             "this machine's CPU during the run.", "",
             f"Case: coarse {'x'.join(map(str, c['coarse']))} x {c['coarse_steps']} steps, "
             f"output {'x'.join(map(str, c['fine']))} x {c['steps']} steps (s = {c['space']}, "
             f"k = {c['time']}), 4 variables.", "",
             "| processes | fit (s) | fit speed-up | base vs 1 process (of range) | upscale (s) "
             "| upscale speed-up | upscale M points/s (wall) |",
             "|---|---|---|---|---|---|---|"]
    for n in p["counts"]:
        fi, up = p["fit"][str(n)], p["upscale"][str(n)]
        lines.append(f"| {n} | {f(fi['seconds'])} | {f(fi.get('speedup'), '.2f')} | "
                     f"{f(fi.get('base_max_diff_of_range'), '.1e')} | {f(up['seconds'])} | "
                     f"{f(up.get('speedup'), '.2f')} | "
                     f"{f(up.get('points_per_s'), '.1f', 1e-6)} |")
    lines += ["", "Fit: the base's displacement fits without a time budget (`--steps 1`: "
              "each to its end). Upscale: every output step to a .pvd, compression "
              f"{p['compression']}; each process writes its steps' .vti files.", ""]
    with open(path, "w") as fh:
        fh.write("\n".join(lines))


def main_processes(a: argparse.Namespace, mode: str) -> int:
    """``--processes 1,2``: the process table alone (processes.json / processes.md)."""
    counts = [int(x) for x in a.processes.split(",") if x.strip()]
    if not counts or any(n < 1 for n in counts):
        raise SystemExit(f"--processes {a.processes}: give process counts >= 1, e.g. 1,2")
    out = a.out or os.path.join(ROOT, "bench", "results", dt.date.today().isoformat()
                                + ("" if mode == "full" else f"-{mode}"))
    tmp = os.path.join(out, "tmp")                 # git-ignored; data shared with scale runs
    dirs = {k: os.path.join(tmp, k) for k in ("data", "models", "logs", "scratch")}
    for d in dirs.values():
        os.makedirs(d, exist_ok=True)
    gen = gen_module()
    case = gen.CASES[a.process_case or PROCESS_CASES[mode]]
    res = {"machine": machine_info(), "date": dt.date.today().isoformat(),
           "processes": run_processes(counts, gen, case, dirs, a.compression,
                                      a.process_threads)}
    res["processes"].update(compression=a.compression, threads=a.process_threads)
    name = "processes" + ("" if a.process_threads is None else
                          f"-threads{a.process_threads}")
    save_json(res, os.path.join(out, name + ".json"))
    write_processes_markdown(res, os.path.join(out, name + ".md"))
    shutil.rmtree(dirs["scratch"], ignore_errors=True)
    print(open(os.path.join(out, name + ".md")).read())
    return 0


# --- main ---------------------------------------------------------------------------------
def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", default="A,B,growth", help="comma list of A, B, growth")
    p.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    p.add_argument("--size", choices=sorted(SIZES), help="sizes (overrides --quick)")
    p.add_argument("--fit-minutes", type=float, help="stsr fit --max-minutes (default: the "
                   "preset's budget)")
    p.add_argument("--formats", default="h5", help="end-to-end output formats, among those "
                   "`stsr upscale --format` offers")
    p.add_argument("--upscale-timeout-minutes", dest="upscale_timeout_min", type=float,
                   help="kill an upscale child after this long (recorded as timed out)")
    p.add_argument("--keep-output", action="store_true", help="keep the upscaled outputs")
    p.add_argument("--out", help="results folder (default bench/results/<date>, "
                   "<date>-quick for --quick)")
    p.add_argument("--baseline-upscale", nargs=2, metavar=("COARSE", "OUT"),
                   help=argparse.SUPPRESS)   # the SciPy child of the end-to-end comparison
    p.add_argument("--space", type=int, default=2, help=argparse.SUPPRESS)
    p.add_argument("--time-scale", type=int, default=4, help=argparse.SUPPRESS)
    p.add_argument("--format", default="h5", help=argparse.SUPPRESS)
    p.add_argument("--compression", default="none", help="end-to-end outputs' compression "
                   "(both stsr and the SciPy baseline write it through stsr_core's writers)")
    p.add_argument("--processes", metavar="1,2", help="only the table of stsr fit and "
                   "upscale with these numbers of processes (torchrun), on --process-case")
    p.add_argument("--process-case", help="the case of --processes (default growth65: "
                   "coarse 65^3 x 13; quick17 with --quick)")
    p.add_argument("--process-threads", type=int, help="OMP_NUM_THREADS of the --processes "
                   "children (default: torch's; results then in processes-threadsN.*)")
    a = p.parse_args(argv)
    if a.baseline_upscale:
        return baseline_upscale(*a.baseline_upscale, a.space, a.time_scale, a.format,
                                a.compression)
    start_launcher()
    a.upscale_timeout = None if a.upscale_timeout_min is None else 60 * a.upscale_timeout_min
    mode = a.size or ("quick" if a.quick else "full")
    if a.processes:
        return main_processes(a, mode)
    sizes = SIZES[mode]
    wanted = [c.strip() for c in a.cases.split(",") if c.strip()]
    bad = [c for c in wanted if c not in ("A", "B", "growth")]
    if bad:
        p.error(f"unknown case(s) {bad}; choose among A, B, growth")
    offered = cli_formats()
    formats = [x for x in a.formats.split(",") if x in offered]
    if not formats:
        p.error(f"--formats {a.formats}: `stsr upscale` offers {offered}")
    # a smoke run never overwrites a real one
    out = a.out or os.path.join(ROOT, "bench", "results", dt.date.today().isoformat()
                                + ("" if mode == "full" else f"-{mode}"))
    tmp = os.path.join(out, "tmp")
    dirs = {k: os.path.join(tmp, k) for k in ("data", "models", "logs", "scratch")}
    for d in dirs.values():
        os.makedirs(d, exist_ok=True)
    gen = gen_module()
    json_path = os.path.join(out, "scale.json")
    res: Dict[str, Any] = {"machine": machine_info(),
                           "settings": {"mode": mode, "cases": wanted,
                                        "fit_minutes": a.fit_minutes, "formats": formats,
                                        "cli_formats": offered,
                                        "upscale_timeout_min": a.upscale_timeout_min},
                           "cases": {}, "growth": [], "complete": False}

    def save() -> None:
        save_json(res, json_path)
        write_markdown(res, os.path.join(out, "scale.md"))
    done: Dict[Any, Dict[str, Any]] = {}
    for tag in ("A", "B"):
        if tag in wanted:
            case = gen.CASES[sizes[tag]]
            res["cases"][tag] = done[case] = run_case(tag, gen, case, a, dirs, formats, True)
            save()
    if "growth" in wanted:
        for name in sizes["growth"]:
            case = gen.CASES[name]
            r = done.get(case) or run_case(name, gen, case, a, dirs, formats, False)
            row = growth_row(name, r)
            if case in done:
                row["from_case"] = next(t for t, v in res["cases"].items() if v is r)
            res["growth"].append(row)
            save()
    res["complete"] = True
    save()
    plot(res, os.path.join(out, "scale.png"))
    shutil.rmtree(dirs["scratch"], ignore_errors=True)
    print(open(os.path.join(out, "scale.md")).read())
    print(f"[scale] wrote {json_path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
