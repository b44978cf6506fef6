"""Issue 17's benchmark: does the correction learned from the coarse series itself (preset
``liif``) beat the analytic base it corrects (preset ``fast``, the base alone)?

    python -m bench.learning [--datasets tornado,plume,taylor_green] [--scales 2,4]
        [--budgets 2=2,5;4=1,2] [--variants liif,liif:learn_pairs=time]
        [--extra tornado129] [--out DIR]

Protocol as bench.run's: keep every s-th point and every 4th step of the fine series, fit,
reconstruct the fine grid at every fine step, score with stsr_core.metrics.evaluate (PSNR
of kept and in-between steps apart). Each learned run is one fit with that time budget (the
PSNR-vs-time curve is made of separate fits, each with its own budget: what a user asking
for that many minutes gets). The error estimate is checked against the truth: the share of
points whose true absolute error lies below the estimate (it is made for 90 %).

Writes learning.json, learning.md and learning_<dataset>.png (PSNR vs budget, the base a
horizontal line) to --out.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import time
from typing import Dict, List, Optional

import numpy as np
import torch

from stsr_core import api
from stsr_core.config import apply_settings, preset as get_preset
from stsr_core.io import read_series
from stsr_core.metrics import evaluate

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
K_TIME = 4
EXTRA = {  # larger data, generated (not shipped): name -> (generator args, file)
    "tornado129": (["examples/data/tornado/generate_tornado.py", "--n", "129", "--steps", "17",
                    "--dt", "5"], "tornado129/tornado.pvd"),
}


def parse_budgets(text: str) -> Dict[int, List[float]]:
    """``2=2,5;4=1,2`` -> {2: [2.0, 5.0], 4: [1.0, 2.0]} (minutes per spatial scale)."""
    out: Dict[int, List[float]] = {}
    for part in text.split(";"):
        s, mins = part.split("=")
        out[int(s)] = [float(m) for m in mins.split(",")]
    return out


def dataset_path(name: str, data_dir: str) -> str:
    if name in EXTRA:
        args, rel = EXTRA[name]
        path = os.path.join(data_dir, rel)
        if not os.path.exists(path):
            os.makedirs(os.path.dirname(path), exist_ok=True)
            subprocess.run([sys.executable, os.path.join(ROOT, args[0]), *args[1:], "--out",
                            os.path.dirname(path)], check=True)
        return path
    return os.path.join(ROOT, "examples", "data", name, f"{name}.pvd")


def score(tm, fine, kept, error: bool) -> Dict[str, object]:
    t0 = time.perf_counter()
    pred = api.predict(tm, dims=fine.dims, times=fine.times, error=error)
    predict_s = time.perf_counter() - t0
    r = evaluate(pred, fine, kept)
    out = {"psnr": r["psnr_mean"], "kept": r["psnr_kept"], "between": r["psnr_between"],
           "per_var": {n: v["psnr_mean"] for n, v in r["variables"].items()},
           "predict_s": predict_s}
    if error and api.has_error_estimate(tm):
        below = [float(np.mean(np.abs(pred.variables[n] - fine.variables[n])
                               <= pred.variables[f"{n}_error"])) for n in fine.variables]
        out["error_coverage"] = float(np.mean(below))
        out["error_coverage_per_var"] = dict(zip(fine.variables, below))
    return out


def run_one(coarse, fine, kept, variant: str, minutes: Optional[float]) -> Dict[str, object]:
    """One fit of ``variant`` ("fast", "liif" or "liif:key=value,...") and its scores."""
    preset, _, sets = variant.partition(":")
    pairs = [tuple(kv.split("=", 1)) for kv in sets.split(",") if kv]
    mcfg, _ = apply_settings(*get_preset(preset), pairs) if pairs else (None, None)
    overrides = {k: getattr(mcfg, k) for k, _ in pairs} if pairs else None
    t0 = time.perf_counter()
    tm = api.fit(coarse, preset, max_minutes=minutes, model_overrides=overrides)
    fit_s = time.perf_counter() - t0
    row = {"variant": variant, "minutes": minutes, "fit_s": fit_s}
    row.update(score(tm, fine, kept, error=True))
    learned = tm.info.history.get("learned")
    if learned:
        row["learned"] = {k: learned[k] for k in learned
                          if k in ("steps", "train_s", "pairs", "share_kept", "share_between",
                                   "held_out_gain_db_kept", "held_out_gain_db_between",
                                   "error_calibration", "loss_first", "loss_last")}
    return row


def write_markdown(rows: List[Dict], info: Dict, path: str) -> None:
    lines = [f"Machine: {info['machine']}; torch {info['torch']}; {info['date']}; "
             f"{info['note']}", "",
             "| dataset | s | variant | budget min | fit s | mean PSNR | vs base | kept | "
             "in-between | error below estimate | decoder steps |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    base = {(r["dataset"], r["s"]): r["psnr"] for r in rows if r["variant"] == "fast"}
    for r in rows:
        b = base.get((r["dataset"], r["s"]))
        gain = "" if b is None or r["variant"] == "fast" else f"{r['psnr'] - b:+.2f}"
        cov = r.get("error_coverage")
        lines.append(
            f"| {r['dataset']} | {r['s']} | {r['variant']} | {r['minutes'] or '-'} | "
            f"{r['fit_s']:.0f} | {r['psnr']:.2f} | {gain} | {r['kept']:.2f} | "
            f"{r['between']:.2f} | {'' if cov is None else f'{100 * cov:.0f} %'} | "
            f"{r.get('learned', {}).get('steps', '')} |")
    lines += ["", "Shares chosen on held-out pairs (kept / in-between, per variable):", ""]
    for r in rows:
        ln = r.get("learned")
        if ln:
            lines.append(f"- {r['dataset']} s={r['s']} {r['variant']} {r['minutes']} min: kept "
                         f"{[round(x, 2) for x in ln['share_kept']]}, between "
                         f"{[round(x, 2) for x in ln['share_between']]}; held-out gain dB "
                         f"between {[round(x, 2) for x in ln['held_out_gain_db_between']]}")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def plot(rows: List[Dict], dataset: str, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, s in zip(axes, (2, 4)):
        sel = [r for r in rows if r["dataset"] == dataset and r["s"] == s]
        for r in sel:
            if r["variant"] == "fast":
                ax.axhline(r["psnr"], color="k", ls="--", label="base (fast)")
        for v in sorted({r["variant"] for r in sel} - {"fast"}):
            pts = sorted((r["minutes"], r["psnr"]) for r in sel if r["variant"] == v)
            ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=v)
        ax.set_title(f"{dataset}, s = {s}")
        ax.set_xlabel("time budget (minutes)")
        ax.set_ylabel("mean PSNR (dB)")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", default="tornado,plume,taylor_green")
    ap.add_argument("--scales", default="2,4")
    ap.add_argument("--budgets", default="2=2,5;4=1,2",
                    help="minutes per spatial scale: '2=2,5;4=1,2'")
    ap.add_argument("--variants", default="liif")
    ap.add_argument("--variant-budget", type=float, default=None,
                    help="run variants other than the first at this budget only")
    ap.add_argument("--data-dir", default=os.path.join(ROOT, "bench", "data"))
    ap.add_argument("--note", default="")
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results",
                                                   dt.date.today().isoformat()))
    a = ap.parse_args(argv)
    os.makedirs(a.out, exist_ok=True)
    budgets = parse_budgets(a.budgets)
    variants = a.variants.split(",")
    info = {"machine": f"{platform.processor() or platform.machine()}, "
                       f"{os.cpu_count()} cores", "torch": torch.__version__,
            "date": dt.datetime.now().isoformat(timespec="minutes"), "note": a.note}
    rows: List[Dict] = []
    json_path = os.path.join(a.out, "learning.json")
    for name in a.datasets.split(","):
        fine = read_series(dataset_path(name, a.data_dir))
        for s in [int(x) for x in a.scales.split(",")]:
            coarse = fine.subsample(space=s, time=K_TIME)
            kept = list(coarse.times)
            runs = [("fast", None)]
            for i, v in enumerate(variants):
                mins = budgets[s] if (i == 0 or a.variant_budget is None) \
                    else [a.variant_budget]
                runs += [(v, m) for m in mins]
            for v, m in runs:
                r = run_one(coarse, fine, kept, v, m)
                r.update({"dataset": name, "s": s})
                rows.append(r)
                print(f"{name} s={s} {v} {m} min: {r['psnr']:.2f} dB (kept {r['kept']:.2f}, "
                      f"between {r['between']:.2f}) fit {r['fit_s']:.0f} s "
                      f"cover {r.get('error_coverage')}", flush=True)
                with open(json_path, "w") as f:
                    json.dump({"info": info, "rows": rows}, f, indent=1)
        plot(rows, name, os.path.join(a.out, f"learning_{name}.png"))
        write_markdown(rows, info, os.path.join(a.out, "learning.md"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
