"""In-between steps (issue 25): today's default and each new part of the fast base's time
model added one at a time, on every dataset, kept and in-between steps apart, per phase of
the interval and per variable.

    python -m bench.between [--quick] [--datasets tornado,plume,...] [--variants ...]
                            [--budgets 2,5] [--out DIR]

Datasets: the three shipped examples (33^3 x 17 steps), the scale benchmark's procedural
field (65^3 x 49 steps, examples/data/scale) and the four generated kinds of motion the
examples lack (fronts, spiral, shear, gray_scott: 65^3 x 25 steps, examples/data/generated;
cached in bench/data/). Each is coarsened to every 2nd point and every 4th step; every
variant is fitted in this process (api.fit, the fast preset, the given budget in minutes),
predicts every fine step on the fine grid, and is scored with the reference's PSNR per
variable and step: kept steps, and the in-between steps at 1/4, 1/2 and 3/4 of the
interval. Also: fit time, model file size against the coarse data, the error estimate's
coverage (share of points whose true error is below it; made for 90 %), trilinear + linear
as the baseline every user has, and for the new default whether its choice in time (still or
moving, straight or bent paths) agrees with the one the truth would make (each candidate
forced on the same fit and scored).

Writes between.json, between.md and between.png into --out (default
bench/results/<date>/).
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import sys
import tempfile
import time
from typing import Dict, List, Optional

import numpy as np
import torch

from stsr_core import api
from stsr_core.io import read_series, write_series
from stsr_core.metrics import psnr
from stsr_core.series import VolumeSeries

from .baselines import interpolate
from .run import machine_info

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = ("tornado", "plume", "taylor_green")
GENERATED = ("fronts", "spiral", "shear", "gray_scott")
DATASETS = EXAMPLES + ("scale",) + GENERATED
S, K = 2, 4
# the ablation: today's default, then each new part added one at a time
VARIANTS: Dict[str, Dict[str, object]] = {
    "today": {"base_time": "auto"},
    "bent": {"base_time": "auto", "flow_path": "bent"},
    "cubic_path": {"base_time": "auto", "flow_path": "bent", "path_values": "cubic"},
    "default": {"base_time": "select"},
}
DESCRIBE = {
    "today": "today's default (motion-compensated along straight paths, linear along them, "
             "plus the cubic share in time chosen on held-out steps at twice the gap)",
    "bent": "+ paths bent through three kept steps",
    "cubic_path": "+ cubic along the path (every variable moving, full share)",
    "default": "+ the choice on held-out steps coarsened in space as in time: still or moving "
               "per variable, bent unless straight wins clearly, the shares by least squares "
               "(the new default)",
    "network": "+ the network weighing the two sides per point",
}
# the candidates forced on the default's fit to find the truth's choice:
# (cubic share in time, moving, cubic share along the path, bend)
CANDIDATES = {"still linear": (0, 0, 0, 0), "still cubic": (1, 0, 0, 0),
              "straight linear": (0, 1, 0, 0), "straight cubic": (0, 1, 1, 0),
              "bent linear": (0, 1, 0, 1), "bent cubic": (0, 1, 1, 1)}


def load_dataset(name: str, cache: str, quick: bool) -> VolumeSeries:
    """The fine, full-rate series of ``name`` (generated ones cached as .h5)."""
    if name in EXAMPLES:
        return read_series(os.path.join(ROOT, "examples", "data", name, f"{name}.pvd"))
    n, steps = (33, 17) if quick else ((65, 49) if name == "scale" else (65, 25))
    path = os.path.join(cache, f"{name}_{n}_{steps}.h5")
    if os.path.exists(path):
        return read_series(path)
    if name == "scale":
        sys.path.insert(0, os.path.join(ROOT, "examples", "data", "scale"))
        from generate import Case, Field, VARIABLES
        field = Field(Case((n, n, n), steps, S, K))
        xs, ys, zs = field.axes(1)
        arrays = {v: np.empty((steps, n, n, n), np.float32) for v in VARIABLES}
        for t in range(steps):
            vals = field.evaluate(xs[None, None, :], ys[None, :, None], zs[:, None, None],
                                  field.tau(t))
            for v in VARIABLES:
                arrays[v][t] = vals[v]
        series = VolumeSeries(times=np.arange(steps, dtype=np.float64), variables=arrays,
                              spacing=(field.case.spacing,) * 3)
    else:
        sys.path.insert(0, ROOT)
        from examples.data.generated import generate
        series = generate(name, n=n, steps=steps)
    os.makedirs(cache, exist_ok=True)
    write_series(series, path)
    return read_series(path)


def coarsen(fine: VolumeSeries) -> VolumeSeries:
    keep = list(range(0, fine.n_times, K))
    return VolumeSeries(times=fine.times[keep],
                        variables={n: np.ascontiguousarray(a[keep][:, ::S, ::S, ::S])
                                   for n, a in fine.variables.items()},
                        origin=fine.origin, spacing=tuple(v * S for v in fine.spacing),
                        components=fine.components)


def score(pred: VolumeSeries, fine: VolumeSeries) -> Dict[str, object]:
    """PSNR per variable and phase (0 = kept), their means, and the error estimate's
    coverage per phase where the prediction has one."""
    phases = list(range(K))
    per_var: Dict[str, Dict[int, float]] = {}
    every = []                                   # every (variable, step): the mean PSNR
    for n, truth in fine.variables.items():
        per_var[n] = {}
        for p in phases:
            v = [psnr(pred.variables[n][t], truth[t]) for t in range(fine.n_times) if t % K == p]
            v = [x for x in v if math.isfinite(x)]
            every += v
            per_var[n][p] = float(np.mean(v)) if v else float("nan")
    phase = {p: float(np.nanmean([per_var[n][p] for n in per_var])) for p in phases}
    out = {"per_variable": per_var, "phase": phase, "kept": phase[0],
           "between": float(np.mean([phase[p] for p in phases[1:]])),
           "mean": float(np.mean(every))}
    if all(f"{n}_error" in pred.variables for n in fine.variables):
        cov = {}
        for p in phases:
            inside = total = 0
            for n, truth in fine.variables.items():
                for t in range(fine.n_times):
                    if t % K == p:
                        err = np.abs(pred.variables[n][t] - truth[t])
                        inside += int((err <= pred.variables[f"{n}_error"][t]).sum())
                        total += err.size
            cov[p] = inside / max(1, total)
        out["coverage"] = cov
    return out


def fit_variant(coarse: VolumeSeries, overrides: Dict[str, object], minutes: float,
                workdir: str):
    t0 = time.perf_counter()
    tm = api.fit(coarse, "fast", max_minutes=minutes, device="cpu", seed=0,
                 model_overrides=dict(overrides))
    fit_s = time.perf_counter() - t0
    path = os.path.join(workdir, "m.stsr")
    api.save_model(tm, path, with_optimizer=False)
    size = os.path.getsize(path)
    os.remove(path)
    return tm, fit_s, size


def truth_choice(tm, fine: VolumeSeries) -> Dict[str, object]:
    """Each candidate forced on the default's fit and scored between steps, per variable;
    the truth's best against what the held-out steps chose."""
    base = tm.model.base
    saved = {k: getattr(base, k).clone() for k in ("time_mix", "flow_mix", "path_mix",
                                                   "path_bend")}
    scores: Dict[str, Dict[str, float]] = {}
    for name, (c, m, p, b) in CANDIDATES.items():
        base.time_mix.fill_(c)
        base.flow_mix.fill_(m)
        base.path_mix.fill_(p)
        base.path_bend.fill_(b)
        base._path_slopes = {}
        tm.plan = None
        r = score(api.predict(tm, scale=S, time_scale=K), fine)
        scores[name] = {n: float(np.mean([v[p] for p in range(1, K)]))
                        for n, v in r["per_variable"].items()}
    for k, v in saved.items():
        getattr(base, k).copy_(v)
    base._path_slopes = {}
    tm.plan = None
    names = list(fine.variables)
    best = {n: max(scores, key=lambda c: scores[c][n]) for n in names}
    chosen_moving = {n: bool(saved["flow_mix"][i] > 0) for i, n in enumerate(names)}
    bent = bool(saved["path_bend"] > 0)
    best_moving = {n: not best[n].startswith("still") for n in names}
    moving_best = max((c for c in scores if not c.startswith("still")),
                      key=lambda c: np.mean([scores[c][n] for n in names]))
    return {"scores": scores, "truth_best": best,
            "chosen_moving": chosen_moving, "chosen_bent": bent,
            "agree_moving": sum(chosen_moving[n] == best_moving[n] for n in names),
            "variables": len(names), "truth_bent": moving_best.startswith("bent")}


def run_dataset(name: str, variants: List[str], budgets: List[float], cache: str,
                quick: bool, log) -> Dict[str, object]:
    fine = load_dataset(name, cache, quick)
    coarse = coarsen(fine)
    res: Dict[str, object] = {"dataset": name, "fine": list(fine.dims),
                              "steps": fine.n_times, "coarse": list(coarse.dims),
                              "kept_steps": coarse.n_times, "variables": list(fine.variables),
                              "coarse_bytes": int(coarse.nbytes), "runs": []}
    tri = interpolate(coarse, fine, 1)
    res["trilinear+linear"] = score(tri, fine)
    log(f"{name}: trilinear+linear kept {res['trilinear+linear']['kept']:.2f} between "
        f"{res['trilinear+linear']['between']:.2f}")
    with tempfile.TemporaryDirectory() as work:
        for minutes in budgets:
            for v in variants:
                if minutes != budgets[0] and v not in ("today", "default"):
                    continue                  # the ablation at the first budget only
                tm, fit_s, size = fit_variant(coarse, VARIANTS[v], minutes, work)
                t0 = time.perf_counter()
                pred = api.predict(tm, scale=S, time_scale=K, error=True)
                pred_s = time.perf_counter() - t0
                r = score(pred, fine)
                r.update(variant=v, minutes=minutes, fit_s=fit_s, predict_s=pred_s,
                         model_bytes=size, mixes={k: list(x) for k, x in
                                                  tm.model.base.mixes().items()},
                         choice=tm.info.history.get("time_choice", {}),
                         notes=tm.info.history.get("init_notes", []))
                if v == "default" and minutes == budgets[0]:
                    r["truth_choice"] = truth_choice(tm, fine)
                res["runs"].append(r)
                cov = r.get("coverage")
                log(f"{name} {v:8s} {minutes:g} min: kept {r['kept']:.2f} between "
                    f"{r['between']:.2f} (" + " ".join(f"{r['phase'][p]:.2f}"
                                                      for p in range(1, K))
                    + f") fit {fit_s:.1f} s, model {size / coarse.nbytes:.2f}x data"
                    + (f", coverage {cov[0]:.2f}/{np.mean([cov[p] for p in range(1, K)]):.2f}"
                       if cov else ""))
                del tm, pred
    return res


def run_of(res, variant, minutes):
    for r in res["runs"]:
        if r["variant"] == variant and r["minutes"] == minutes:
            return r
    return None


def write_markdown(results: List[Dict], info: Dict, budgets: List[float], path: str) -> None:
    f2 = lambda v: "-" if v is None or not math.isfinite(v) else f"{v:.2f}"  # noqa: E731
    b0 = budgets[0]
    lines = [f"Machine: {info['cpu']} ({info['cores']} cores), torch {info['torch']}, "
             f"{info.get('gpu', 'no GPU')}; {info['date']}; load average at start "
             f"{info.get('load', '?')}. Coarse input: every {S}nd point, every {K}th step. "
             "PSNR in dB, mean over variables; phases: in-between steps at 1/4, 1/2, 3/4 of "
             "the interval.", ""]
    for minutes in budgets:
        lines += [f"## Today's default against the new default, {minutes:g}-minute budget", "",
                  "| dataset | trilinear+linear kept / between | today kept / between "
                  "(1/4, 1/2, 3/4) | new kept / between (1/4, 1/2, 3/4) | between gain | "
                  "fit today / new (s) |", "|---|---|---|---|---|---|"]
        gains = []
        for res in results:
            a, b = run_of(res, "today", minutes), run_of(res, "default", minutes)
            if a is None or b is None:
                continue
            tri = res["trilinear+linear"]
            gains.append(b["between"] - a["between"])
            ph = lambda r: ", ".join(f2(r["phase"][p]) for p in range(1, K))  # noqa: E731
            lines.append(f"| {res['dataset']} | {f2(tri['kept'])} / {f2(tri['between'])} | "
                         f"{f2(a['kept'])} / {f2(a['between'])} ({ph(a)}) | "
                         f"{f2(b['kept'])} / {f2(b['between'])} ({ph(b)}) | "
                         f"{b['between'] - a['between']:+.2f} | {a['fit_s']:.0f} / "
                         f"{b['fit_s']:.0f} |")
        if gains:
            lines += ["", f"Mean in-between gain over the datasets: **{np.mean(gains):+.2f} "
                          f"dB** (min {min(gains):+.2f}, max {max(gains):+.2f}).", ""]
    variants = [v for v in VARIANTS if any(run_of(r, v, b0) for r in results)]
    lines += [f"## Ablation ({b0:g} minutes): in-between PSNR (fit seconds)", "",
              "| dataset | " + " | ".join(variants) + " |",
              "|---|" + "---|" * len(variants)]
    for res in results:
        cells = []
        for v in variants:
            r = run_of(res, v, b0)
            cells.append("-" if r is None else f"{r['between']:.2f} ({r['fit_s']:.0f})")
        lines.append(f"| {res['dataset']} | " + " | ".join(cells) + " |")
    means = []
    for v in variants:
        vals = [run_of(r, v, b0)["between"] for r in results if run_of(r, v, b0)]
        means.append(f"{np.mean(vals):.2f}" if vals else "-")
    lines += ["| **mean** | " + " | ".join(means) + " |", ""]
    lines += [f"- `{v}`: {DESCRIBE.get(v, v)}" for v in variants] + [""]
    lines += ["## Does the choice agree with the truth's?", "",
              "Each candidate forced on the new default's fit, scored between steps against "
              "the fine truth (mean over variables, dB); the held-out steps' choice per "
              "variable (still or moving) and for all (straight or bent).", "",
              "| dataset | " + " | ".join(CANDIDATES) + " | new default | moving: agrees | "
              "bent: chosen / truth |", "|---|" + "---|" * (len(CANDIDATES) + 3)]
    for res in results:
        r = run_of(res, "default", b0)
        tc = r.get("truth_choice") if r else None
        if not tc:
            continue
        mean = {c: np.mean(list(v.values())) for c, v in tc["scores"].items()}
        lines.append(f"| {res['dataset']} | " + " | ".join(f2(mean[c]) for c in CANDIDATES)
                     + f" | {f2(r['between'])} | {tc['agree_moving']} of {tc['variables']} | "
                     f"{'bent' if tc['chosen_bent'] else 'straight'} / "
                     f"{'bent' if tc['truth_bent'] else 'straight'} |")
    lines += ["", "## The error estimate's coverage (new default; made for 90 %)", "",
              "| dataset | kept | 1/4 | 1/2 | 3/4 |", "|---|---|---|---|---|"]
    for res in results:
        r = run_of(res, "default", b0)
        if r and r.get("coverage"):
            c = r["coverage"]
            lines.append(f"| {res['dataset']} | " + " | ".join(f"{c[p]:.2f}" for p in range(K))
                         + " |")
    lines += ["", "## Per variable (new default, kept / between, dB)", ""]
    for res in results:
        r = run_of(res, "default", b0)
        a = run_of(res, "today", b0)
        if not r:
            continue
        cells = []
        for n, v in r["per_variable"].items():
            bt = np.mean([v[p] for p in range(1, K)])
            old = np.mean([a["per_variable"][n][p] for p in range(1, K)]) if a else float("nan")
            cells.append(f"{n} {f2(v[0])} / {f2(bt)} (today {f2(old)})")
        lines.append(f"- {res['dataset']}: " + "; ".join(cells))
    lines += ["", "## Cost", "", "| dataset | variant | minutes | fit s | model / coarse data |",
              "|---|---|---|---|---|"]
    for res in results:
        for r in res["runs"]:
            lines.append(f"| {res['dataset']} | {r['variant']} | {r['minutes']:g} | "
                         f"{r['fit_s']:.1f} | {r['model_bytes'] / res['coarse_bytes']:.2f} |")
    with open(path, "w") as fh:
        fh.write("\n".join(lines) + "\n")


def plot(results: List[Dict], budget: float, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    variants = [v for v in VARIANTS if any(run_of(r, v, budget) for r in results)]
    fig, ax = plt.subplots(figsize=(max(6, 1.3 * len(results)), 4))
    width = 0.8 / (len(variants) + 1)
    for i, res in enumerate(results):
        ax.bar(i, res["trilinear+linear"]["between"], width, color="lightgray",
               label="trilinear+linear" if i == 0 else None)
        for k, v in enumerate(variants):
            r = run_of(res, v, budget)
            if r:
                ax.bar(i + (k + 1) * width, r["between"], width, color=f"C{k}",
                       label=v if i == 0 else None)
    ax.set_xticks([i + 0.4 for i in range(len(results))])
    ax.set_xticklabels([r["dataset"] for r in results], fontsize=8)
    ax.set_ylabel("in-between PSNR (dB)")
    ax.set_title(f"In-between steps, s = {S}, k = {K}, {budget:g}-minute budget")
    lo = min(r["trilinear+linear"]["between"] for r in results)
    ax.set_ylim(max(0, lo - 3), None)
    ax.legend(fontsize=7, ncol=3)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help="generated data at 33^3 x 17, 0.5-minute budget: checks the pipeline")
    ap.add_argument("--datasets", default=",".join(DATASETS))
    ap.add_argument("--variants", default=",".join(VARIANTS),
                    help=f"of {', '.join(VARIANTS)} (and 'network' where the engine has it)")
    ap.add_argument("--budgets", default=None, help="minutes, comma-separated (default 2,5)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--cache", default=os.path.join(ROOT, "bench", "data"))
    ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    budgets = [float(b) for b in (a.budgets or ("0.5" if a.quick else "2,5")).split(",")]
    variants = [v for v in a.variants.split(",") if v]
    for v in variants:
        if v == "network" and "network" not in VARIANTS:
            VARIANTS["network"] = {"base_time": "select", "side_net": "prior"}
        elif v not in VARIANTS:
            ap.error(f"unknown variant '{v}'; choose from {', '.join(VARIANTS)}, network")
    out = a.out or os.path.join(ROOT, "bench", "results", dt.date.today().isoformat())
    os.makedirs(out, exist_ok=True)
    info = machine_info("cpu")
    info["load"] = os.getloadavg()[0]
    info["variants"] = {v: VARIANTS[v] for v in variants}
    results = []

    def log(msg: str) -> None:
        print(msg, flush=True)

    for name in [d for d in a.datasets.split(",") if d]:
        if name not in DATASETS:
            ap.error(f"unknown dataset '{name}'; choose from {', '.join(DATASETS)}")
        results.append(run_dataset(name, variants, budgets, a.cache, a.quick, log))
        with open(os.path.join(out, "between.json"), "w") as fh:     # after each dataset
            json.dump({"machine": info, "results": results}, fh, indent=1)
        write_markdown(results, info, budgets, os.path.join(out, "between.md"))
    plot(results, budgets[0], os.path.join(out, "between.png"))
    print(f"wrote {out}/between.json, between.md, between.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
