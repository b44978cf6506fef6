"""The spatial prior as a user gets it (issue 30): the engine's fit, its choice per variable
one level down, and the kept and in-between steps against the truth; the upscale's cost
with and without it.

    python -m bench.space_prior_fit [--datasets tornado,fronts] [--minutes 2]
        [--tune-s 60] [--out bench/results/DATE/space_prior] [--data bench/data]
    flock /work/team/bench.lock python -m bench.space_prior_fit --cost fronts

Each dataset (bench/space_prior_eval.py's) is kept at every 2nd point and every 4th step
and fitted once with the default (``space_prior=off``: today's default); the same fitted
base then gets each of ``shipped``, ``tuned`` and ``gate`` (space_tune.choose on the same
kept steps, as the fit does after the base), so the rows differ only by the prior. Scored
at scale 2: every kept step and the steps between kept ones (per phase of the interval),
PSNR per variable and step as stsr_core.metrics does, against the cubic B-spline alone
(``off``), and the plain baseline: the spline at kept steps, linear in time between them
(``linear``). ``--cost``: the upscale's compute seconds (scale 2, every original step) without
the prior and with it on every variable (the worst case), in one run, and the network's
seconds per kept step and variable. Writes JSON and Markdown.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import resource
import shutil
import sys
import time
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from bench.space_prior_eval import EXAMPLES, GENERATED, load  # noqa: E402
from stsr_core import api  # noqa: E402
from stsr_core.model.space_residual import SpaceResidual  # noqa: E402
from stsr_core.model.space_tune import choose  # noqa: E402
from stsr_core.series import VolumeSeries  # noqa: E402

MODES = ("shipped", "tuned", "gate")


def coarse_of(fine: VolumeSeries, space: int = 2, every: int = 4) -> VolumeSeries:
    n_steps = (fine.n_times - 1) // every * every + 1
    keep = list(range(0, n_steps, every))
    return VolumeSeries(times=fine.times[keep],
                        variables={n: np.ascontiguousarray(a[keep, ::space, ::space, ::space])
                                   for n, a in fine.variables.items()},
                        origin=fine.origin, spacing=tuple(s * space for s in fine.spacing),
                        components=dict(fine.components))


def psnr(pred: np.ndarray, truth: np.ndarray) -> float:
    rng = float(truth.max() - truth.min())
    mse = float(np.mean((pred.astype(np.float64) - truth) ** 2))
    return 20 * math.log10(rng) - 10 * math.log10(mse) if mse > 0 and rng > 0 else math.inf


def with_prior(path: str, coarse: VolumeSeries, mode: str, tune_s: float
               ) -> api.TrainedModel:
    """The fitted default model in ``path`` with the prior chosen as a fit with
    ``space_prior=mode`` chooses it after the base (no time budget but ``tune_s``)."""
    tm = api.load_model(path, device="cpu")
    info = tm.info
    base = tm.model.base
    base.space = SpaceResidual(len(info.variables))
    data = torch.from_numpy(np.stack([info.stats[n].normalise(coarse.variables[n])
                                      for n in info.variables]))
    report = choose(base.space, data, mode, None, tune_s)
    info.history["space_prior"] = report
    tm.model_config = dataclasses.replace(tm.model_config, space_prior=mode,
                                          space_tune_s=tune_s)
    return tm


def score(tm: api.TrainedModel, fine: VolumeSeries, every: int = 4,
          intervals: int = 2) -> Dict[str, Dict[str, float]]:
    """Per variable the mean PSNR over kept steps and, per phase, over the steps between
    kept ones of the first ``intervals`` intervals (at the full grid)."""
    g = api.output_grid(tm.info.grid, scale=2)
    out: Dict[str, Dict[str, List[float]]] = {}
    n_steps = (fine.n_times - 1) // every * every + 1
    between = [t for t in range(min(n_steps, intervals * every + 1)) if t % every]
    for t in list(range(0, n_steps, every)) + between:
        pred = api.predict_timestep(tm, float(fine.times[t]), g)
        where = "kept" if t % every == 0 else f"phase {t % every}/{every}"
        for n in tm.info.variables:
            truth = fine.variables[n][t][:g.dims[2], :g.dims[1], :g.dims[0]]
            out.setdefault(n, {}).setdefault(where, []).append(psnr(pred[n], truth))
    return {n: {k: round(float(np.mean(v)), 3) for k, v in d.items()} for n, d in out.items()}


def score_linear(tm: api.TrainedModel, fine: VolumeSeries, every: int = 4,
                 intervals: int = 2) -> Dict[str, Dict[str, float]]:
    """:func:`score`'s table for the plain baseline: the cubic B-spline at the kept steps
    (``tm`` without the prior: the default model's kept steps are the spline through the
    data) and linear in time between them."""
    g = api.output_grid(tm.info.grid, scale=2)
    out: Dict[str, Dict[str, List[float]]] = {}
    n_steps = (fine.n_times - 1) // every * every + 1
    kept = {t: api.predict_timestep(tm, float(fine.times[t]), g)
            for t in range(0, min(n_steps, intervals * every + 1), every)}
    for t in range(0, n_steps, every):
        pred = kept[t] if t in kept else api.predict_timestep(tm, float(fine.times[t]), g)
        for n in tm.info.variables:
            truth = fine.variables[n][t][:g.dims[2], :g.dims[1], :g.dims[0]]
            out.setdefault(n, {}).setdefault("kept", []).append(psnr(pred[n], truth))
    for t in range(min(n_steps, intervals * every + 1)):
        if t % every == 0:
            continue
        t0, t1 = t - t % every, t - t % every + every
        w = float((fine.times[t] - fine.times[t0]) / (fine.times[t1] - fine.times[t0]))
        for n in tm.info.variables:
            pred = (1 - w) * kept[t0][n] + w * kept[t1][n]
            truth = fine.variables[n][t][:g.dims[2], :g.dims[1], :g.dims[0]]
            out[n].setdefault(f"phase {t % every}/{every}", []).append(psnr(pred, truth))
    return {n: {k: round(float(np.mean(v)), 3) for k, v in d.items()} for n, d in out.items()}


def run_dataset(name: str, a: argparse.Namespace) -> Dict[str, object]:
    fine = load(name, a.data, a.n)
    coarse = coarse_of(fine)
    path = os.path.join(a.work, f"{name.split('=')[0]}_off.stsr")
    t0 = time.perf_counter()
    if not os.path.exists(path):
        api.fit(coarse, device="cpu", max_minutes=a.minutes, checkpoint_path=path, seed=0)
    fit_s = time.perf_counter() - t0
    off = api.load_model(path, device="cpu")
    rows: Dict[str, object] = {"linear": {"scores": score_linear(off, fine)},
                               "off": {"scores": score(off, fine),
                                       "base_fit_s": round(fit_s, 1),
                                       "model_bytes": os.path.getsize(path)}}
    for mode in MODES:
        t1 = time.perf_counter()
        tm = with_prior(path, coarse, mode, a.tune_s)
        prior_s = time.perf_counter() - t1
        out = os.path.join(a.work, f"{name.split('=')[0]}_{mode}.stsr")
        api.save_model(tm, out, with_optimizer=False)
        rows[mode] = {"scores": score(tm, fine), "prior_fit_s": round(prior_s, 1),
                      "report": tm.info.history["space_prior"],
                      "model_bytes": os.path.getsize(out)}
        print(f"[{name}] {mode}: {json.dumps(rows[mode]['report']['decision'])} "
              f"({prior_s:.0f} s)", flush=True)
    return rows


def table(results: Dict[str, Dict[str, object]]) -> List[str]:
    """Markdown: per dataset and variable, kept-step PSNR of the spline and each mode's
    gain, the gate's decision and its one-level-down gains."""
    lines = ["| dataset | variable | kept: spline (off) | shipped | tuned | gate | between: "
             "linear in time | off | shipped | tuned | gate | gate's choice (gain one level "
             "down: shipped / tuned) |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for ds, rows in results.items():
        off = rows["off"]["scores"]
        rep = rows["gate"]["report"]
        for i, (var, s) in enumerate(off.items()):
            kept = [f"{rows[m]['scores'][var]['kept'] - s['kept']:+.2f}" for m in MODES]
            betw = [f"{between(rows[m]['scores'][var]) - between(s):+.2f}" for m in MODES]
            lin = between(rows["linear"]["scores"][var]) if "linear" in rows else math.nan
            gs, gt = rep.get("gain_db_shipped", []), rep.get("gain_db_tuned", [])
            fmt = (lambda xs: "-" if i >= len(xs) or xs[i] is None else f"{xs[i]:+.2f}")
            lines.append(f"| {ds} | {var} | {s['kept']:.2f} | " + " | ".join(kept)
                         + f" | {lin:.2f} | {between(s):.2f} | " + " | ".join(betw)
                         + f" | {rep['decision'][i]} ({fmt(gs)} / {fmt(gt)}) |")
    return lines


def between(scores: Dict[str, float]) -> float:
    """The mean PSNR over the phases between kept steps of one variable's scores."""
    return float(np.mean([v for k, v in scores.items() if k != "kept"]))


def summary(results: Dict[str, Dict[str, object]]) -> Dict[str, object]:
    """Per mode and dataset the mean over variables of the kept and between gains."""
    out: Dict[str, object] = {}
    for mode in MODES:
        per = {}
        for ds, rows in results.items():
            off, on = rows["off"]["scores"], rows[mode]["scores"]
            # a variable the spline gets exactly (inf dB with and without) counts in neither
            kept = [on[v]["kept"] - off[v]["kept"] for v in off
                    if math.isfinite(on[v]["kept"] - off[v]["kept"])]
            betw = [np.mean([on[v][k] - off[v][k] for k in off[v] if k != "kept"])
                    for v in off]
            per[ds] = {"kept_db": round(float(np.mean(kept)), 3),
                       "between_db": round(float(np.mean(betw)), 3)}
        out[mode] = {"datasets": per,
                     "mean_kept_db": round(float(np.mean([p["kept_db"]
                                                          for p in per.values()])), 3),
                     "mean_between_db": round(float(np.mean([p["between_db"]
                                                             for p in per.values()])), 3)}
    return out


def cost(name: str, a: argparse.Namespace) -> Dict[str, object]:
    """Upscale compute seconds (scale 2, every original step, error arrays on) of the
    default model and of the same model with the shipped prior on every variable, one
    after the other in this process; and the network's seconds per field."""
    fine = load(name, a.data, a.n)
    coarse = coarse_of(fine)
    path = os.path.join(a.work, f"{name}_off.stsr")
    if not os.path.exists(path):
        api.fit(coarse, device="cpu", max_minutes=a.minutes, checkpoint_path=path, seed=0)
    models = {"off": api.load_model(path, device="cpu"),
              "shipped": with_prior(path, coarse, "shipped", 0.0)}
    out: Dict[str, object] = {}
    for rep in range(a.repeats):
        for label, tm in models.items():
            target = os.path.join(a.work, f"cost_{label}")
            shutil.rmtree(target, ignore_errors=True)
            tm.model.base.space is not None and tm.model.base.space.clear()
            r = api.upscale(tm, os.path.join(target, "up.pvd"), scale=2, time_scale=4,
                            overwrite=True)
            out.setdefault(label, []).append(round(r["compute_s"], 2))
            shutil.rmtree(target, ignore_errors=True)
    net = models["shipped"].model.base.space.shipped()
    field = torch.from_numpy(coarse.variables[next(iter(coarse.variables))][0])[None]
    from stsr_core.model.space_prior import residual_values
    t0 = time.perf_counter()
    for _ in range(3):
        residual_values(net, field)
    return {"compute_s": out, "ratio": round(min(out["shipped"]) / min(out["off"]), 3),
            "network_s_per_field": round((time.perf_counter() - t0) / 3, 3),
            "coarse": list(coarse.grid.dims), "variables": len(coarse.variables),
            "out_steps": (coarse.n_times - 1) * 4 + 1,
            "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, 2)}


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.space_prior_fit",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--datasets", default=",".join(list(EXAMPLES) + list(GENERATED)))
    p.add_argument("--n", type=int, default=65, help="points per axis of generated kinds")
    p.add_argument("--minutes", type=float, default=2.0, help="the base fit's budget")
    p.add_argument("--tune-s", type=float, default=60.0)
    p.add_argument("--cost", default=None, help="measure the upscale cost on this dataset")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--data", default=os.path.join(ROOT, "bench", "data"))
    p.add_argument("--work", default=os.path.join(ROOT, "bench", "data", "space_prior_fit"))
    p.add_argument("--out", default=os.path.join(ROOT, "bench", "results",
                                                 time.strftime("%Y-%m-%d"), "space_prior"))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--table-only", action="store_true",
                   help="rewrite fit.md from the fit.json in --out (no fitting)")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    os.makedirs(a.work, exist_ok=True)
    os.makedirs(a.out, exist_ok=True)
    stamp = {"machine": f"{os.cpu_count()} cores, torch {torch.__version__}",
             "written": time.strftime("%Y-%m-%d %H:%M")}
    if a.table_only:                  # the tables again from the JSON a run wrote
        with open(os.path.join(a.out, "fit.json")) as fh:
            results = json.load(fh)["results"]
        return write_tables(results, a.out)
    if a.cost:
        r = cost(a.cost, a)
        print(json.dumps(r), flush=True)
        with open(os.path.join(a.out, f"cost_{a.cost}.json"), "w") as fh:
            json.dump({**r, **stamp}, fh, indent=1)
        return 0
    results = {}
    for name in [d for d in a.datasets.split(",") if d]:
        results[name.split("=")[0]] = run_dataset(name, a)
        with open(os.path.join(a.out, "fit.json"), "w") as fh:       # as it goes
            json.dump({"results": results, "summary": summary(results), **stamp,
                       "minutes": a.minutes, "tune_s": a.tune_s}, fh, indent=1)
    return write_tables(results, a.out)


def write_tables(results: Dict[str, Dict[str, object]], out: str) -> int:
    """fit.md: :func:`table` and :func:`summary` of ``results``, also printed."""
    lines = table(results)
    s = summary(results)
    lines += ["", "| mode | mean kept gain | mean between gain | per dataset (kept / between) |",
              "|---|---|---|---|"]
    for mode, r in s.items():
        per = ", ".join(f"{d} {v['kept_db']:+.2f} / {v['between_db']:+.2f}"
                        for d, v in r["datasets"].items())
        lines.append(f"| {mode} | {r['mean_kept_db']:+.2f} | {r['mean_between_db']:+.2f} | "
                     f"{per} |")
    print("\n".join(lines), flush=True)
    with open(os.path.join(out, "fit.md"), "w") as fh:
        fh.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
