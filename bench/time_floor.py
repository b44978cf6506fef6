"""Issue 30, "never below linear in time": the default's in-between steps against tricubic in
space + linear in time, on series where motion can be followed and where it cannot.

    python -m bench.time_floor --data wake=/path/wake.h5,plume63=/path/plume63.h5
                               [--label after] [--budget 5] [--set key=value ...]
                               [--out bench/results/<date>/time-floor.json]

Each series is kept at every 2nd point and every 4th step (bench/between.py's coarsening),
fitted with the default preset within the budget (minutes), rebuilt at every fine step and
scored with the project's PSNR per variable and step: kept steps and in-between steps at
1/4, 1/2, 3/4 of the interval apart, against SciPy's cubic B-spline of the kept points
(``map_coordinates(order=3, mode="nearest")``) at kept steps and that spline linear in time
between them. Also: the fit's seconds, the peak RSS, the choice in time the fit made (per
variable: the motion share and the held-out scores behind it) and the load average. Results
are merged into the JSON under ``--label`` (one run per label and data set; rerun to
replace), and a markdown table beside it lists every label.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import resource
import time
from typing import Dict, List

import numpy as np

from stsr_core import api
from stsr_core.config import preset, settings_overrides
from stsr_core.io import read_series
from stsr_core.metrics import psnr

from .baselines import _space
from .between import K, coarsen


def phase_scores(pred: Dict[str, np.ndarray], fine) -> Dict[str, Dict[int, float]]:
    """PSNR per variable and phase (0 = kept; p: p/K of the interval), mean over steps."""
    out: Dict[str, Dict[int, float]] = {}
    for n, truth in fine.variables.items():
        out[n] = {}
        for p in range(K):
            v = [psnr(pred[n][t], truth[t]) for t in range(fine.n_times) if t % K == p]
            v = [x for x in v if math.isfinite(x)]
            out[n][p] = float(np.mean(v)) if v else float("nan")
    return out


def summary(per_var: Dict[str, Dict[int, float]]) -> Dict[str, object]:
    phase = {p: float(np.nanmean([per_var[n][p] for n in per_var])) for p in range(K)}
    return {"per_variable": per_var, "phase": phase, "kept": phase[0],
            "between": float(np.mean([phase[p] for p in range(1, K)]))}


def tricubic_linear(coarse, fine) -> Dict[str, np.ndarray]:
    """Cubic B-spline in space of the kept steps, linear in time between them."""
    spatial = _space(coarse, fine.dims, fine.origin, fine.spacing, 3)
    tc, tf = coarse.times, fine.times
    j = np.clip(np.searchsorted(tc, tf, side="right") - 1, 0, len(tc) - 2)
    w = ((tf - tc[j]) / (tc[j + 1] - tc[j]))[:, None, None, None].astype(np.float32)
    return {n: (1 - w) * a[j] + w * a[j + 1] for n, a in spatial.items()}


def run_one(path: str, minutes: float, sets: List[str]) -> Dict[str, object]:
    fine = read_series(path)
    coarse = coarsen(fine)
    base = summary(phase_scores(tricubic_linear(coarse, fine), fine))
    mcfg, tcfg = preset("fast")
    model, train = settings_overrides(mcfg, tcfg, [tuple(s.split("=", 1)) for s in sets],
                                      "the fast preset")
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    tm = api.fit(coarse, "fast", max_minutes=minutes, device="cpu", seed=0,
                 model_overrides=model, train_overrides=train)
    fit_s = time.perf_counter() - t0
    rss_fit = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    pred = api.predict(tm, dims=fine.dims, times=list(fine.times), error=False)
    got = summary(phase_scores(pred.variables, fine))
    b = tm.model.base
    return {"fine": list(fine.dims), "steps": fine.n_times, "coarse": list(coarse.dims),
            "kept_steps": coarse.n_times, "tricubic+linear": base, "default": got,
            "fit_s": fit_s, "rss_fit": rss_fit, "load_at_fit": load,
            "mixes": b.mixes() if hasattr(b, "mixes") else {},
            "time_choice": tm.info.history.get("time_choice", {}),
            "notes": tm.info.history.get("init_notes", []), "set": sets}


def write_markdown(res: Dict[str, Dict[str, Dict]], path: str) -> None:
    lines = ["PSNR in dB (mean over variables and steps); kept = every 4th step, phases 1/4, "
             "1/2, 3/4 of the kept interval; `tc+lin` = SciPy's cubic B-spline of the kept "
             "points, linear in time. Every 2nd point and every 4th step kept.", "",
             "| data | label | date | load | tc kept | default kept | tc+lin 1/4, 1/2, 3/4 | "
             "default 1/4, 1/2, 3/4 | tc+lin between | default between | fit s |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    f = lambda v: f"{v:.2f}"  # noqa: E731
    ph = lambda s: ", ".join(f(s["phase"][str(p)] if str(p) in s["phase"]  # noqa: E731
                                 else s["phase"][p]) for p in range(1, K))
    for label, by_data in res.items():
        for name, r in by_data.items():
            t, d = r["tricubic+linear"], r["default"]
            lines.append(f"| {name} | {label} | {r['date']} | {r['load_at_fit']:.1f} | "
                         f"{f(t['kept'])} | {f(d['kept'])} | {ph(t)} | {ph(d)} | "
                         f"{f(t['between'])} | {f(d['between'])} | {r['fit_s']:.1f} |")
    lines += ["", "Per variable, in-between (mean of the phases): tc+lin / default; the motion "
              "share chosen (flow_mix)", ""]
    for label, by_data in res.items():
        for name, r in by_data.items():
            t, d = r["tricubic+linear"]["per_variable"], r["default"]["per_variable"]
            mix = r["mixes"].get("flow_mix", [])
            cells = []
            for i, n in enumerate(t):
                tb = np.mean([t[n][str(p)] if str(p) in t[n] else t[n][p] for p in range(1, K)])
                db = np.mean([d[n][str(p)] if str(p) in d[n] else d[n][p] for p in range(1, K)])
                m = f", m {mix[i]:.2f}" if i < len(mix) else ""
                cells.append(f"{n} {tb:.2f} / {db:.2f}{m}")
            lines.append(f"- {name}, {label}: " + "; ".join(cells))
    with open(path, "w") as fh:
        fh.write("\n".join(lines) + "\n")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="name=path,name=path")
    ap.add_argument("--label", default="default")
    ap.add_argument("--budget", type=float, default=5.0)
    ap.add_argument("--set", action="append", default=[])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=os.path.join(
        "bench", "results", dt.date.today().isoformat(), "time-floor.json"))
    a = ap.parse_args(argv)
    import torch
    torch.set_num_threads(a.threads)
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    res: Dict[str, Dict[str, Dict]] = {}
    if os.path.exists(a.out):
        with open(a.out) as fh:
            res = json.load(fh)
    for item in a.data.split(","):
        name, path = item.split("=", 1)
        r = run_one(path, a.budget, a.set)
        r["date"] = dt.datetime.utcnow().strftime("%Y-%m-%d %H:%M UTC")
        r["cpu_count"] = os.cpu_count()
        res.setdefault(a.label, {})[name] = r
        t, d = r["tricubic+linear"], r["default"]
        print(f"{name} [{a.label}]: kept tc {t['kept']:.2f} default {d['kept']:.2f}; between "
              f"tc+lin {t['between']:.2f} default {d['between']:.2f} (phases "
              + ", ".join(f"{d['phase'][p]:.2f}" for p in range(1, K))
              + f"); fit {r['fit_s']:.1f} s, RSS {r['rss_fit'] / 2**30:.2f} GB, "
              f"flow_mix {r['mixes'].get('flow_mix')}", flush=True)
        print("  choice:", json.dumps(r["time_choice"]), flush=True)
        with open(a.out, "w") as fh:
            json.dump(res, fh, indent=1)
        write_markdown(res, os.path.splitext(a.out)[0] + ".md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
