"""The benchmark: every method on every example dataset, same coarse input, same target grid
and times, same scorer (stsr_core.metrics.evaluate, as `stsr eval`).

    python -m bench.run [--quick] [--datasets tornado,plume,taylor_green] [--scales 2,4]
                        [--methods trilinear,tricubic,siren,paper,fast] [--budget-seconds S]
                        [--paper-seconds S] [--device auto|cpu|cuda] [--data-dir DIR] [--out DIR]

Protocol: keep every s-th point per axis and every 4th step of the fine series; reconstruct
the fine grid at every fine step; score mean PSNR, kept vs in-between steps, per variable.
Writes results.json, results.md, psnr_vs_time_<dataset>.png, slices_<dataset>.png.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Dict, List

import numpy as np
import torch

from stsr_core.io import read_series, write_series
from stsr_core.metrics import evaluate
from stsr_core.series import VolumeSeries

from .baselines import interpolate

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATASETS = ["tornado", "plume", "taylor_green"]
LEARNED = ["siren", "paper", "fast"]
K_TIME = 4


def machine_info(device: str) -> Dict[str, object]:
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next(l.split(":", 1)[1].strip() for l in fh if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    info = {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
            "torch": str(torch.__version__), "date": dt.date.today().isoformat(),
            "device": device}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def paraview_check(coarse_path: str, fine: VolumeSeries, numpy_tri: VolumeSeries,
                   workdir: str) -> Dict[str, object]:
    """ParaView's ResampleToImage + TemporalInterpolator vs the numpy trilinear + linear."""
    pv = shutil.which("pvpython")
    if pv is None:
        return {"available": False}
    out = os.path.join(workdir, "pv.npz")
    times = ",".join(repr(float(t)) for t in fine.times)
    t0 = time.perf_counter()
    r = subprocess.run([pv, os.path.join(ROOT, "bench", "pv_baseline.py"), coarse_path,
                        *map(str, fine.dims), out, times], capture_output=True, text=True,
                       timeout=1800)
    if r.returncode != 0 or not os.path.exists(out):
        return {"available": True, "error": (r.stdout + r.stderr)[-500:]}
    pvd = np.load(out)
    diffs = {}
    for n, a in numpy_tri.variables.items():
        if n in pvd:
            rng = float(fine.variables[n].max() - fine.variables[n].min()) or 1.0
            diffs[n] = float(np.max(np.abs(pvd[n] - a))) / rng
    pv_series = VolumeSeries(times=fine.times, variables={n: pvd[n] for n in fine.variables},
                             origin=fine.origin, spacing=fine.spacing)
    res = evaluate(pv_series, fine)
    return {"available": True, "seconds": time.perf_counter() - t0,
            "max_rel_diff_vs_numpy": max(diffs.values()) if diffs else None,
            "psnr_mean": res["psnr_mean"]}


def run_learned(preset: str, coarse_path: str, fine_path: str, seconds: float,
                checkpoints: List[float], device: str, seed: int, workdir: str) -> Dict:
    out = os.path.join(workdir, f"{preset}.json")
    sl = os.path.join(workdir, f"{preset}_slice.npz")
    cmd = [sys.executable, "-m", "bench.learned", "--coarse", coarse_path, "--fine", fine_path,
           "--preset", preset, "--seconds", str(seconds), "--device", device,
           "--seed", str(seed), "--checkpoints", ",".join(map(str, checkpoints)),
           "--slice-out", sl, "--out", out]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT,
                       timeout=int(seconds * 3 + 1800))
    if r.returncode != 0:
        return {"preset": preset, "error": r.stderr[-800:]}
    res = json.load(open(out))
    res["slice"] = sl
    return res


def row(dataset, s, method, device, result, extra=None) -> Dict[str, object]:
    d = {"dataset": dataset, "scale": s, "method": method, "device": device,
         "psnr": result["psnr_mean"], "psnr_kept": result["psnr_kept"],
         "psnr_between": result["psnr_between"],
         "per_variable": {n: v["psnr_mean"] for n, v in result["variables"].items()}}
    d.update(extra or {})
    return d


def fmt(v, spec=".2f"):
    return "-" if v is None else format(v, spec)


def write_markdown(rows: List[Dict], info: Dict, path: str) -> None:
    lines = [f"Machine: {info['cpu']} ({info['cores']} cores), torch {info['torch']}, "
             f"{info.get('gpu', 'no GPU')}; date {info['date']}; seeds {info['seed']}; "
             f"datasets done: {', '.join(info.get('datasets_done', [])) or '-'}."
             + (f" Note: {info['note']}." if info.get("note") else ""), "",
             "| dataset | s | method | device | mean PSNR | kept | in-between | train s | "
             "samples/s | infer voxels/s | peak MB | model MB | ratio |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['dataset']} | {r['scale']} | {r['method']}"
            f"{' (run ' + r['from'] + ')' if r.get('from') else ''} | {r['device']} | "
            f"{fmt(r['psnr'])} | {fmt(r['psnr_kept'])} | {fmt(r['psnr_between'])} | "
            f"{fmt(r.get('train_s'), '.0f')} | {fmt(r.get('samples_per_s'), '.3g')} | "
            f"{fmt(r.get('inference_voxels_per_s'), '.3g')} | {fmt(r.get('peak_mb'), '.0f')} | "
            f"{fmt(r.get('model_mb'), '.2f')} | {fmt(r.get('ratio'), '.1f')} |")
    lines += ["", "Per variable (mean PSNR, dB):", ""]
    for r in rows:
        lines.append(f"- {r['dataset']} s={r['scale']} {r['method']}: " + ", ".join(
            f"{n} {v:.2f}" for n, v in r["per_variable"].items()))
    with open(path, "w") as fh:
        fh.write("\n".join(lines) + "\n")


def plot_curves(rows: List[Dict], dataset: str, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4.5))
    colours = {"trilinear+linear": "k", "tricubic+cubic": "gray"}
    for r in rows:
        if r["dataset"] != dataset:
            continue
        label = f"{r['method']} (s={r['scale']})"
        style = "-" if r["scale"] == 2 else "--"
        if "curve" in r:
            c = r["curve"]
            ax.plot([p["elapsed_s"] / 60 for p in c], [p["psnr"] for p in c], style, marker="o",
                    label=label)
        else:
            ax.axhline(r["psnr"], color=colours.get(r["method"], "b"), ls=style, label=label)
    ax.set_xlabel("training time (min)")
    ax.set_ylabel("mean PSNR (dB)")
    ax.set_title(f"{dataset}: PSNR vs training time (coarse = every s-th point, every 4th step)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_slices(panels: Dict[str, np.ndarray], truth: np.ndarray, title: str, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    names = list(panels)
    best = max((n for n in names if n not in ("trilinear+linear", "tricubic+cubic")),
               key=lambda n: -np.mean((panels[n] - truth) ** 2), default=None)
    errs = [("|err| trilinear+linear", np.abs(panels["trilinear+linear"] - truth))]
    if best:
        errs.append((f"|err| {best}", np.abs(panels[best] - truth)))
    n = 1 + len(names) + len(errs)
    fig, ax = plt.subplots(1, n, figsize=(3 * n, 3.3))
    lo, hi = float(truth.min()), float(truth.max())
    emax = max(float(e.max()) for _, e in errs) or 1.0
    for a, (t, img) in zip(ax, [("fine truth", truth)] + [(k, panels[k]) for k in names]):
        a.imshow(img, origin="lower", vmin=lo, vmax=hi, cmap="viridis")
        a.set_title(t, fontsize=8)
        a.axis("off")
    for a, (t, e) in zip(ax[1 + len(names):], errs):
        a.imshow(e, origin="lower", vmin=0, vmax=emax, cmap="magma")
        a.set_title(t, fontsize=8)
        a.axis("off")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="s=2 only, 45 s per learned method")
    ap.add_argument("--datasets", default=",".join(DATASETS))
    ap.add_argument("--scales", default=None, help="default 2,4 (quick: 2)")
    ap.add_argument("--methods", default="trilinear,tricubic," + ",".join(LEARNED))
    ap.add_argument("--budget-seconds", type=float, default=None,
                    help="training budget per learned method (default 300; quick 45)")
    ap.add_argument("--paper-seconds", type=float, default=None,
                    help="budget of the paper preset at s=2 (default 600; quick: as others)")
    ap.add_argument("--later-scale-seconds", type=float, default=None,
                    help="budget of every learned method at the scales after the first "
                         "(default 60; keeps the full suite under ~90 min on 2 cores)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data-dir", default=os.path.join(ROOT, "examples", "data"))
    ap.add_argument("--out", default=None)
    ap.add_argument("--no-paraview", action="store_true", help="skip the ParaView check")
    a = ap.parse_args(argv)
    device = a.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    scales = [int(s) for s in (a.scales or ("2" if a.quick else "2,4")).split(",")]
    budget = a.budget_seconds or (45.0 if a.quick else 300.0)
    paper_budget = a.paper_seconds or (budget if a.quick else 600.0)
    later_budget = a.later_scale_seconds or (budget if a.quick else 60.0)

    def budget_of(m: str, s: int) -> float:
        if s != scales[0]:
            return later_budget
        return paper_budget if m == "paper" else budget
    methods = [m.strip() for m in a.methods.split(",") if m.strip()]
    datasets = [d.strip() for d in a.datasets.split(",") if d.strip()]
    tag = dt.date.today().isoformat() + ("-quick" if a.quick else "") + \
        ("-cuda" if device.startswith("cuda") else "")
    out_dir = a.out or os.path.join(ROOT, "bench", "results", tag)
    os.makedirs(out_dir, exist_ok=True)
    info = machine_info(device)
    info.update(seed=a.seed, budget_s=budget, paper_budget_s=paper_budget,
                later_scale_budget_s=later_budget, scales=scales,
                k_time=K_TIME, quick=a.quick)
    total = sum(budget_of(m, s) for _ in datasets for s in scales
                for m in methods if m in LEARNED)
    print(f"benchmark: {datasets} x s={scales} x {methods} on {device}; training time alone "
          f"{total / 60:.0f} min (+ evaluation)", flush=True)
    rows: List[Dict] = []
    for name in datasets:
        fine_path = os.path.join(a.data_dir, name, f"{name}.pvd")
        fine = read_series(fine_path)
        slice_panels: Dict[str, np.ndarray] = {}
        with tempfile.TemporaryDirectory() as work:
            for s in scales:
                coarse = fine.subsample(space=s, time=K_TIME)
                coarse_path = os.path.join(work, f"coarse{s}.pvd")
                write_series(coarse, coarse_path)
                kept = list(coarse.times)
                mid = fine.n_times // 2 if fine.n_times // 2 % K_TIME else fine.n_times // 2 + 1
                var0 = next(iter(fine.variables))
                zk = fine.dims[2] // 2
                for m in methods:
                    t0 = time.perf_counter()
                    if m in ("trilinear", "tricubic"):
                        order = 1 if m == "trilinear" else 3
                        label = "trilinear+linear" if order == 1 else "tricubic+cubic"
                        pred = interpolate(coarse, fine, order)
                        secs = time.perf_counter() - t0
                        res = evaluate(pred, fine, kept)
                        voxels = np.prod(fine.dims) * fine.n_times * len(fine.variables)
                        extra = {"inference_voxels_per_s": voxels / secs,
                                 "model_mb": coarse.nbytes / 1e6,
                                 "ratio": fine.nbytes / coarse.nbytes}
                        if m == "trilinear" and not a.no_paraview:
                            extra["paraview"] = paraview_check(coarse_path, fine, pred, work)
                        rows.append(row(name, s, label, "cpu", res, extra))
                        if s == scales[0]:
                            slice_panels[label] = pred.variables[var0][mid, zk]
                    elif m in LEARNED:
                        b = budget_of(m, s)
                        marks = [x for x in (15, 30, 60, 120, 300, 600) if x < b]
                        if m == "paper" and device == "cpu":
                            marks = [x for x in marks if x == 60]   # its inference is slow
                        r = run_learned(m, coarse_path, fine_path, b, marks, device, a.seed,
                                        work)
                        if "error" in r:
                            print(f"  {name} s={s} {m}: FAILED {r['error']}", flush=True)
                            continue
                        extra = {k: r.get(k) for k in (
                            "train_s", "init_s", "steps", "samples_per_s", "stopped",
                            "inference_voxels_per_s", "n_parameters", "curve", "budget_s")}
                        extra["peak_mb"] = r["peak_cuda_mb"] or r["peak_rss_mb"]
                        extra["model_mb"] = r["model_bytes"] / 1e6
                        extra["ratio"] = r["ratio"]
                        rows.append(row(name, s, m, r["device"], r["result"], extra))
                        if s == scales[0]:
                            slice_panels[m] = np.load(r["slice"])[var0][mid]
                    last = rows[-1]
                    print(f"  {name} s={s} {last['method']:<17s} PSNR {last['psnr']:.2f} "
                          f"(kept {last['psnr_kept']:.2f}, between {last['psnr_between']:.2f})"
                          f" [{time.perf_counter() - t0:.0f} s]", flush=True)
                    if last.get("steps") == 0:
                        print(f"    (no training step: the fit to the data took "
                              f"{last.get('init_s', 0):.1f} s of the {last.get('budget_s')} s "
                              "budget; the score is the fitted base's)", flush=True)
        plot_curves(rows, name, os.path.join(out_dir, f"psnr_vs_time_{name}.png"))
        if "trilinear+linear" in slice_panels:
            plot_slices(slice_panels, fine.variables[var0][mid, zk],
                        f"{name}: '{var0}', z-slice {zk}, in-between step t={fine.times[mid]:g}"
                        f" (s={scales[0]}, k={K_TIME})",
                        os.path.join(out_dir, f"slices_{name}.png"))
        # Written after every dataset so a run cut off part-way keeps what it measured.
        write_results(rows, info, out_dir, done=datasets[:datasets.index(name) + 1])
    print(f"wrote {out_dir}/results.json, results.md and plots")
    return 0


def write_results(rows: List[Dict], info: Dict, out_dir: str, done: List[str]) -> None:
    """Write results.json and results.md atomically (temp file + rename)."""
    info = dict(info, datasets_done=done)
    tmp = os.path.join(out_dir, "results.json.tmp")
    with open(tmp, "w") as fh:
        json.dump({"machine": info, "rows": rows}, fh, indent=1)
    os.replace(tmp, os.path.join(out_dir, "results.json"))
    write_markdown(rows, info, os.path.join(out_dir, "results.md"))


if __name__ == "__main__":
    sys.exit(main())
