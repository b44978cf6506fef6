"""Issue 29's benchmark: the slabbed upscale on the tornado (129^3 x 17 from 65^3 x 5 kept
steps, 5 variables), every run a child process (wall time, its own peak RSS from wait4):

1. end to end, the default ``stsr upscale --scale 2 --time-scale 4`` (.pvd, lz4, error
   arrays) against ``bench/scipy_vtk_upscale.py`` (SciPy trilinear + linear, VTK's raw
   writer) doing the same job, in the same run; PSNR of both against the original
   (``stsr eval``), and of the same upscale with torch's lookups (STSR_KERNELS=torch: the
   numbers before the compiled kernels);
2. the cost over output sizes 65^3 .. 513^3 (``--dims``, 3 in-between times, error arrays):
   computing alone (each slab handed to a writer that discards it: what the engine holds
   and how fast it computes, apart from any format's writer), with the default budget and
   with ``--max-memory 1GB``.

    python -m bench.slab_scale [--sizes 65,129,257,513] [--out DIR] [--work DIR]
                               [--baseline CHECKOUT [--baseline-sizes 65,129,257]]

With ``--baseline`` the same children run from another checkout (the code before a change)
right after each of this tree's, in the same run, so that both see the same load. Every
child's load average (1 minute) before and after it is kept beside its figures.

Writes slabs.json and slabs.md (and slabs.png) to bench/results/<date>/.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from typing import Any, Dict, List, Optional

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


class DiscardingWriter:
    """A writer that takes slabs and keeps nothing (the engine's cost alone)."""

    max_open_steps = 16

    def __init__(self) -> None:
        self.bytes = 0

    def write_slab(self, i: int, z0: int, arrays: Dict[str, Any]) -> None:
        self.bytes += sum(a.nbytes for a in arrays.values())

    def slab_bytes(self, rows: int, steps: int = 1) -> int:
        return 0


def engine_alone(tm: Any, grid: Any, t_out: List[float], max_memory: Optional[str] = None,
                 progress: Optional[Any] = None) -> Dict[str, Any]:
    """What ``stsr upscale`` computes for ``grid`` at ``t_out``, as it computes it (the
    memory plan, then every slab, the steps of an interval sharing its kept steps' fields),
    every slab handed to a writer that keeps nothing: the engine's cost alone."""
    from stsr_core import slabs
    from stsr_core.outputs import has_error_estimate
    error = has_error_estimate(tm)
    names = len(tm.info.variables) * (2 if error else 1)
    budget = None if max_memory is None else slabs.parse_bytes(max_memory)
    box = (0, grid.dims[0] - 1, 0, grid.dims[1] - 1, 0, grid.dims[2] - 1)
    t0 = time.perf_counter()
    t_norm = [tm.info.normalised_time(t) for t in t_out]
    group = max(len(g) for g in slabs.interval_groups(tm.model.base, t_norm,
                                                      list(range(len(t_out))), 16))
    mem = slabs.plan_memory(tm, grid, box, names, error, budget, group_steps=group)
    w = DiscardingWriter()
    r = slabs.write_slabs(tm, grid, t_out, list(range(len(t_out))), w, error, mem,
                          callback=progress, overlap=False)
    return {"compute_s": r["compute_s"], "seconds": time.perf_counter() - t0,
            "rows": mem.rows, "tile": mem.tile, "budget": mem.budget, "need": mem.need,
            "parts": mem.parts, "bytes": w.bytes, "arrays": names}


def child_compute(model: str, n: int, times: str, max_memory: Optional[str]) -> int:
    """The engine alone on an n^3 output at ``times``: the memory plan, then every slab."""
    from stsr_core import api
    tm = api.load_model(model, device="cpu")
    grid = api.output_grid(tm.info.grid, dims=(n, n, n))
    said = [0.0]
    t1 = time.perf_counter()

    def progress(f: float) -> None:     # on stderr: a run cut short still tells its rate
        if f - said[0] >= 0.02 or f >= 1.0:
            said[0] = f
            print(f"progress {f:.4f} after {time.perf_counter() - t1:.1f} s", file=sys.stderr,
                  flush=True)
    print(json.dumps(engine_alone(tm, grid, [float(v) for v in times.split(",")],
                                  max_memory, progress)))
    return 0


def run(cmd: List[str], log: str, env: Optional[Dict[str, str]] = None,
        root: Optional[str] = None) -> Dict[str, Any]:
    """One child, measured, with the load average before and after; ``root``: another
    checkout to run it from (its code first on the path, its folder the working one)."""
    from bench.scale.children import run_child
    if root is not None:
        cmd = ["bash", "-c", f"cd {shlex.quote(root)} && exec "
               + " ".join(shlex.quote(c) for c in cmd)]
        env = {**(env or {}), "PYTHONPATH": root}
    before = os.getloadavg()[0]
    r = run_child(cmd, log, env=env)
    r["load"] = [round(before, 2), round(os.getloadavg()[0], 2)]
    if root is not None:
        r["root"] = root
    return r


def psnr(out: str, ref: str, log: str, env: Optional[Dict[str, str]] = None
         ) -> Optional[Dict[str, float]]:
    from bench.scale.children import stsr_cmd
    j = log + ".json"
    r = run(stsr_cmd() + ["eval", out, "--reference", ref, "--json", j], log)
    if r["rc"] != 0 or not os.path.exists(j):
        return None
    with open(j) as fh:
        d = json.load(fh)
    return {k: d[k] for k in ("psnr_mean", "psnr_kept", "psnr_between") if k in d}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="65,129,257,513")
    p.add_argument("--out", default=os.path.join(ROOT, "bench", "results",
                                                 dt.date.today().isoformat()))
    p.add_argument("--work", default=os.path.join(ROOT, "bench", "data", "slab_scale"),
                   help="where the tornado, its model and the outputs go (several GB at "
                        "513^3; default bench/data/slab_scale, which git ignores)")
    p.add_argument("--skip-end-to-end", action="store_true")
    p.add_argument("--baseline", help="another checkout run beside this tree, same run")
    p.add_argument("--baseline-sizes", default="65,129,257",
                   help="the sizes the baseline runs (513^3 takes tens of minutes)")
    p.add_argument("--child-compute", nargs=4, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child_compute:
        m, n, times, mm = a.child_compute
        return child_compute(m, int(n), times, None if mm == "default" else mm)
    from bench.scale.children import start_launcher, stsr_cmd
    from bench.scale.report import machine_info, save_json
    start_launcher()
    os.makedirs(a.work, exist_ok=True)
    os.makedirs(a.out, exist_ok=True)
    logs = os.path.join(a.work, "logs")
    os.makedirs(logs, exist_ok=True)
    res: Dict[str, Any] = {"machine": machine_info(), "sizes": [], "end_to_end": {},
                           "baseline": a.baseline, "baseline_sizes": []}
    if a.baseline:
        res["baseline_commit"] = subprocess.run(
            ["git", "-C", a.baseline, "rev-parse", "HEAD"], capture_output=True,
            text=True).stdout.strip()
    data = os.path.join(a.work, "tornado129")
    truth = os.path.join(data, "tornado.pvd")
    if not os.path.exists(truth):
        subprocess.run([sys.executable, os.path.join(ROOT, "examples", "data", "tornado",
                                                     "generate_tornado.py"), "--n", "129",
                        "--steps", "17", "--out", data], check=True)
    coarse = os.path.join(a.work, "coarse.pvd")
    model = os.path.join(a.work, "m.stsr")
    if not os.path.exists(model):
        r = run(stsr_cmd() + ["coarsen", truth, "-o", coarse, "--space", "2", "--time", "4",
                              "--overwrite"], os.path.join(logs, "coarsen.log"))
        assert r["rc"] == 0, r
        res["fit"] = run(stsr_cmd() + ["fit", coarse, "-o", model, "--quiet", "--overwrite"],
                         os.path.join(logs, "fit.log"))
    save = lambda: save_json(res, os.path.join(a.out, "slabs.json"))  # noqa: E731
    # each code's compiled kernels loaded (compiled and cached where new) before any timing
    for root in [None] + ([a.baseline] if a.baseline else []):
        run([sys.executable, "-m", "bench.slab_scale", "--child-compute", model, "33",
             "2.5", "default"], os.path.join(logs, f"warm-up{'' if root is None else '-b'}.log"),
            root=root)
    if not a.skip_end_to_end:
        e2e = res["end_to_end"]
        runs = [("stsr", None, None)]
        if a.baseline:
            runs.append(("stsr-baseline", None, a.baseline))
        runs.append(("stsr-torch-lookups", {"STSR_KERNELS": "torch"}, None))
        for name, env, root in runs:
            out = os.path.join(a.work, name, "up.pvd")
            shutil.rmtree(os.path.dirname(out), ignore_errors=True)
            timings = os.path.join(logs, f"{name}-timings.json")
            r = run(stsr_cmd() + ["upscale", model, "-o", out, "--scale", "2",
                                  "--time-scale", "4", "--quiet", "--timings", timings],
                    os.path.join(logs, f"{name}.log"), env, root)
            if r["rc"] == 0:
                with open(timings) as fh:
                    r["timings"] = json.load(fh)
                r["psnr"] = psnr(out, truth, os.path.join(logs, f"{name}-eval"))
            e2e[name] = r
            shutil.rmtree(os.path.dirname(out), ignore_errors=True)
            save()
        out = os.path.join(a.work, "scipy", "up.pvd")
        shutil.rmtree(os.path.dirname(out), ignore_errors=True)
        r = run([sys.executable, os.path.join(ROOT, "bench", "scipy_vtk_upscale.py"), coarse,
                 out, "--scale", "2", "--time-scale", "4"], os.path.join(logs, "scipy.log"))
        if r["rc"] == 0:
            r["psnr"] = psnr(out, truth, os.path.join(logs, "scipy-eval"))
        e2e["scipy_vtk"] = r
        shutil.rmtree(os.path.dirname(out), ignore_errors=True)
        if e2e["stsr"]["rc"] == 0 and r["rc"] == 0:
            e2e["stsr_over_scipy"] = e2e["stsr"]["seconds"] / r["seconds"]
            t = e2e["stsr"]["timings"]
            e2e["end_to_end_over_compute"] = e2e["stsr"]["seconds"] / t["compute_s"]
            if e2e.get("stsr-baseline", {}).get("rc") == 0:
                e2e["baseline_over_scipy"] = e2e["stsr-baseline"]["seconds"] / r["seconds"]
        save()
    times = "2.5,22.5,52.5"        # in-between steps of three intervals (tornado dt 5 x 4)
    base_sizes = [int(v) for v in a.baseline_sizes.split(",")] if a.baseline else []
    for n in [int(v) for v in a.sizes.split(",")]:
        for mm in ("default", "1GB"):
            for key, root in (("sizes", None), ("baseline_sizes", a.baseline)):
                if key == "baseline_sizes" and n not in base_sizes:
                    continue
                tag = "" if root is None else "-baseline"
                log = os.path.join(logs, f"size{n}-{mm}{tag}.log")
                r = run([sys.executable, "-m", "bench.slab_scale", "--child-compute", model,
                         str(n), times, mm], log, root=root)
                row = {"size": n, "max_memory": mm, **r}
                if r["rc"] == 0:
                    text = open(log).read()
                    got = json.loads(re.findall(r"^\{.*\}$", text, re.M)[-1])
                    row.update(got)
                    row["variable_points_per_s"] = n ** 3 * 3 * 5 / got["compute_s"]
                res[key].append(row)
                print(f"[slabs] {n}^3 {mm}{tag}: rc {r['rc']}, {r['seconds']:.1f} s, "
                      f"peak RSS {r['max_rss_mb']:.0f} MB, load {r['load']}",
                      file=sys.stderr)
                save()
    write_markdown(res, os.path.join(a.out, "slabs.md"))
    from bench.slab_plot import plot
    plot(res, os.path.join(a.out, "slabs.png"))
    print(open(os.path.join(a.out, "slabs.md")).read())
    return 0


def write_markdown(res: Dict[str, Any], path: str) -> None:
    m = res["machine"]
    lines = [f"Machine: {m['cpu']}, {m['cores']} cores; torch {m['torch']}; commit "
             f"{m['git_commit'][:10]}{' (dirty)' if m['git_dirty'] else ''}; {m['date']}",
             ""]
    e = res.get("end_to_end", {})
    if e:
        lines += ["Tornado 129^3 x 17 from 65^3 x 5 (5 variables), every step; child "
                  "processes, wall time and peak RSS:", "",
                  "| run | wall s | peak RSS MB | compute s | PSNR dB |", "|---|---|---|---|---|"]
        for k, r in e.items():
            if not isinstance(r, dict):
                continue
            t = r.get("timings", {})
            lines.append(f"| {k} | {r['seconds']:.1f} | {r['max_rss_mb']:.0f} | "
                         f"{t.get('compute_s', float('nan')):.1f} | {r.get('psnr')} |")
        lines += ["", f"stsr / SciPy+VTK: {e.get('stsr_over_scipy')}; end to end / computing "
                  f"alone: {e.get('end_to_end_over_compute')}"
                  + (f"; baseline stsr / SciPy+VTK: {e.get('baseline_over_scipy')}"
                     if "baseline_over_scipy" in e else ""), "",
                  "Load average (1 min) before / after each run: "
                  + ", ".join(f"{k} {r['load'][0]:.1f} / {r['load'][1]:.1f}"
                              for k, r in e.items() if isinstance(r, dict) and "load" in r),
                  ""]
    base = {(r["size"], r["max_memory"]): r for r in res.get("baseline_sizes", [])}
    lines += ["Cost over output sizes (3 in-between times, 5 variables + error arrays; "
              "computing alone, slabs discarded)"
              + (f"; beside each, the baseline ({res.get('baseline')} at "
                 f"{str(res.get('baseline_commit'))[:10]}) run right after it" if base else "")
              + ":", "",
              "| output | --max-memory | slab rows | wall s | compute s | peak RSS MB | "
              "M variable-points/s | load before / after |", "|---|---|---|---|---|---|---|---|"]

    def line(r: Dict[str, Any], name: str) -> str:
        rate = r.get("variable_points_per_s")
        load = r.get("load", [float("nan")] * 2)
        return (f"| {name} | {r['max_memory']} | {r.get('rows', '-')} | "
                f"{r['seconds']:.1f} | {r.get('compute_s', float('nan')):.1f} | "
                f"{r['max_rss_mb']:.0f} | {'-' if rate is None else f'{rate / 1e6:.1f}'} | "
                f"{load[0]:.1f} / {load[1]:.1f} |")
    for r in res["sizes"]:
        lines.append(line(r, f"{r['size']}^3"))
        b = base.get((r["size"], r["max_memory"]))
        if b is not None:
            lines.append(line(b, f"{r['size']}^3 baseline"))
    from bench.slab_plot import targets
    lines += ["", "Each run's peak RSS against its budget (decimal GB; issue 29: within 10 % of "
              "--max-memory, 2.5 GB at most) and its rate (target 60 M):", ""] + targets(res)
    with open(path, "w") as fh:
        fh.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())
