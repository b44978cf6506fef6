"""Issue 30's quality benchmark and ablation harness: named configurations of the engine (rows,
each a set of ``--set`` overrides) on every benchmark data set, against the classical answers.

    python -m bench.quality [--quick] [--datasets wake,patterns,...] [--rows base,faces,...]
                            [--row 'NAME=key=value,key=value'] [--engine-row 'NAME=REF,...']
                            [--default ROW] [--budget 5] [--lock FILE] [--out DIR]

Data sets (benchmark kinds; none is a kind any shipped network was trained on, see the kinds
table the report prints beside them): the solver series (examples/data/solvers: patterns,
excitable49, excitable97, plume63, wake; made and cached in bench/data on first use), the
shipped examples (tornado, plume, taylor_green) and the generated kinds (fronts, spiral,
shear, gray_scott at 65^3 x 25, the scale field at 65^3 x 49). Each is kept at every 2nd
point and every 4th step; every row is fitted with the default preset within the budget
(minutes, 5 by default) and rebuilds the fine grid at every step. Scored with the
reference's PSNR per variable and step, kept steps and in-between steps at 1/4, 1/2, 3/4 of
the interval, against:

* kept steps: cubic B-spline interpolation of the kept points, SciPy's
  ``map_coordinates(order=3)`` with mode ``nearest`` (the project's classical baseline), and
  the best of modes ``nearest``, ``mirror``, ``reflect``;
* in-between steps: that cubic B-spline in space and linear in time through the kept steps
  (the trivial choice the model could make itself), and trilinear + linear (ParaView's
  ResampleToImage + TemporalInterpolator);
* today's default: the row ``--default`` names (``base``, this engine with main's settings
  before issue 30, unless told otherwise; ``make bench-quality`` runs main at 2e1fd8a itself
  as the row ``main@2e1fd8a`` and compares with that).

``--engine-row NAME=REF[,key=value...]`` adds a row fitted by the engine of another commit
or branch of this repository (``git archive REF stsr_core`` into a temporary folder, imported
by the row's child process before anything else), with those ``--set`` overrides: today's
default literally (``main@2e1fd8a=2e1fd8a``), or a branch's parts before they are merged.

Each row runs in a child process (its peak RSS is the fit's and upscale's; with ``--lock``
each child holds that file's lock, so timed runs of several people never overlap). A row
whose setting the engine does not know (a part still on another branch) is reported as not
available. Also per row: fit seconds, upscale seconds and rate (variable-points/s, with the
error arrays), the model file's size, and the error estimate's coverage (share of points
whose error is under ``NAME_error``; made for 90 %), sharpness (mean estimate / mean error)
and correlation with the error.

Writes quality.json, quality.md and quality.png into --out (default bench/results/<date>/).
"""
from __future__ import annotations

import argparse
import datetime as dt
import fcntl
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
S, K = 2, 4
LEVEL = 0.9                 # the error estimate is made for this share of points below it
CORR_SAMPLES = 1 << 20      # points per variable the correlation is taken over

# benchmark data sets: name -> (group, what it is)
DATASETS: Dict[str, Tuple[str, str]] = {
    "patterns": ("solver", "reaction-diffusion Turing patterns (py-pde, Brusselator), 49^3 x 21"),
    "excitable49": ("solver", "fronts in an excitable medium (py-pde, FitzHugh-Nagumo), "
                              "49^3 x 25"),
    "excitable97": ("solver", "the same fronts, 97^3 x 25"),
    "plume63": ("solver", "a buoyant plume (PhiFlow, incompressible Euler + Boussinesq), "
                          "63^3 x 41"),
    "wake": ("solver", "a wavy cylinder's wake (lbmpy, lattice Boltzmann, Re 200), "
                       "159 x 63 x 63 x 49"),
    "tornado": ("example", "procedural tornado (Crawfis), 33^3 x 17"),
    "plume": ("example", "a buoyant plume (PhiFlow), 33^3 x 17"),
    "taylor_green": ("example", "Taylor-Green vortex (pseudo-spectral NS), 33^3 x 17"),
    "fronts": ("generated", "fronts through a medium (eikonal arrival time), 65^3 x 25"),
    "spiral": ("generated", "a scroll ring (Barkley model, own solver), 65^3 x 25"),
    "shear": ("generated", "a shear layer rolling up (carried fields), 65^3 x 25"),
    "gray_scott": ("generated", "reaction-diffusion spots (Gray-Scott, own solver), 65^3 x 25"),
    "scale": ("generated", "the scale benchmark's procedural field, 65^3 x 49"),
}
QUICK_DATASETS = ("fronts", "shear")                # --quick: at 17^3 x 9
# rows: name -> (what it adds, --set overrides); each row holds the ones before it
ROWS: Dict[str, Tuple[str, List[str]]] = {
    "base": ("this engine with the faces as main had them before issue 30 (natural spline)",
             ["spline_boundary=natural"]),
    "faces": ("+ the kept-step fix: the spline's condition per face chosen from the data",
              ["spline_boundary=select"]),
    "prior": ("+ the spatial prior on every variable (shipped weights)",
              ["spline_boundary=select", "space_prior=shipped"]),
    "tuned": ("+ its fine-tuning on the series, every variable",
              ["spline_boundary=select", "space_prior=tuned"]),
    "gate": ("+ the gate: prior, tuned copy or spline per variable, one level down",
             ["spline_boundary=select", "space_prior=gate"]),
    "time": ("+ the time refinement network, gated per variable on the half series",
             ["spline_boundary=select", "space_prior=gate", "side_net=refine"]),
}


# --- data --------------------------------------------------------------------------------
def load_fine(name: str, cache: str, quick: bool):
    """(the fine full-rate series of ``name``, the file it came from)."""
    from stsr_core.io import read_series
    if DATASETS[name][0] == "example":
        path = os.path.join(ROOT, "examples", "data", name, f"{name}.pvd")
        return read_series(path), path
    if DATASETS[name][0] == "solver":
        sys.path.insert(0, ROOT)
        from examples.data.solvers.__main__ import make
        path = str(make(name, cache)["path"])
        return read_series(path), path
    if quick:
        from stsr_core.io import write_series
        sys.path.insert(0, ROOT)
        from examples.data.generated import generate
        path = os.path.join(cache, f"{name}_17_9.h5")
        if not os.path.exists(path):
            os.makedirs(cache, exist_ok=True)
            write_series(generate(name, n=17, steps=9), path)
        return read_series(path), path
    from .between import load_dataset
    n, steps = (65, 49) if name == "scale" else (65, 25)
    series = load_dataset(name, cache, False)
    return series, os.path.join(cache, f"{name}_{n}_{steps}.h5")


def training_kinds() -> Dict[str, Dict[str, str]]:
    """What the shipped networks were trained on, by network: the side weights'
    generated families (examples/data/training_families.py) and, where that branch has
    landed, the spatial prior's (examples/data/space_families.py)."""
    sys.path.insert(0, ROOT)
    out: Dict[str, Dict[str, str]] = {}
    from examples.data import training_families as tf
    out["the side weights and the time refinement (examples/data/training_families.py)"] = {
        "carried fields": f"random fields ({', '.join(tf.FIELD_TYPES)}) carried by a random "
                          "motion all variables share (translations, rotations, "
                          "divergence-free flows), 25^3-33^3 x 9-17 steps"}
    try:
        from examples.data import space_families  # type: ignore[attr-defined]
        out["spatial prior (examples/data/space_families.py)"] = dict(space_families.KINDS)
    except ImportError:
        pass
    return out


# --- scores ------------------------------------------------------------------------------
def error_stats(pred, fine, steps: Sequence[int]) -> Dict[str, float]:
    """The error estimate over ``steps``: per variable coverage, mean estimate / mean error
    and their correlation, then the mean over variables."""
    rng = np.random.default_rng(0)
    per = []
    for n, truth in fine.variables.items():
        err = np.abs(pred.variables[n][steps].astype(np.float64) - truth[steps]).ravel()
        est = pred.variables[f"{n}_error"][steps].astype(np.float64).ravel()
        if err.size > CORR_SAMPLES:
            pick = rng.choice(err.size, CORR_SAMPLES, replace=False)
            e, s = err[pick], est[pick]
        else:
            e, s = err, est
        corr = float(np.corrcoef(e, s)[0, 1]) if e.std() > 0 and s.std() > 0 else float("nan")
        per.append((float(np.mean(err <= est)), float(est.mean() / max(err.mean(), 1e-30)),
                    corr))
    a = np.array(per)
    return {"coverage": float(a[:, 0].mean()), "sharpness": float(a[:, 1].mean()),
            "correlation": float(np.nanmean(a[:, 2]))}


def kept_scipy(coarse, fine) -> Dict[str, float]:
    """Kept-step PSNR of SciPy's cubic B-spline of the kept points, per mode."""
    from stsr_core.metrics import psnr
    from scipy.ndimage import map_coordinates
    axes = [np.linspace(0, c - 1, f) for c, f in zip(coarse.dims[::-1], fine.dims[::-1])]
    pts = np.stack(np.meshgrid(*axes, indexing="ij"))
    out = {}
    for mode in ("nearest", "mirror", "reflect"):
        vals = []
        for n, arr in coarse.variables.items():
            for k in range(coarse.n_times):
                up = map_coordinates(arr[k].astype(np.float64), pts, order=3, mode=mode)
                v = psnr(up, fine.variables[n][k * K])
                if math.isfinite(v):
                    vals.append(v)
        out[mode] = float(np.mean(vals))
    return out


# --- one row: a child process ------------------------------------------------------------
def worker(spec: Dict[str, object]) -> Dict[str, object]:
    """Fit one row on the coarse file, rebuild every fine step, score: the child's job (with
    the engine exported into ``spec["engine"]`` when the row names one)."""
    if spec.get("engine"):
        sys.path.insert(0, str(spec["engine"]))      # before stsr_core is first imported
    import torch
    from stsr_core import api
    from stsr_core.config import preset, settings_overrides
    from stsr_core.io import read_series
    from .between import score
    torch.set_num_threads(int(spec["threads"]))
    coarse = read_series(str(spec["coarse"]))
    pairs = [tuple(p.split("=", 1)) for p in spec["set"]]  # type: ignore[union-attr]
    mcfg, tcfg = preset("fast")
    if spec.get("engine"):                 # another engine: does it know the row's settings?
        why = available(spec["set"])       # type: ignore[arg-type]
        if why:
            return {"not_available": why}
    model, train = settings_overrides(mcfg, tcfg, pairs, "the fast preset")
    t0 = time.perf_counter()
    tm = api.fit(coarse, "fast", max_minutes=float(spec["minutes"]), device="cpu", seed=0,
                 model_overrides=model, train_overrides=train)
    fit_s = time.perf_counter() - t0
    rss_fit = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    with tempfile.TemporaryDirectory() as work:
        path = os.path.join(work, "m.stsr")
        api.save_model(tm, path, with_optimizer=False)
        size = os.path.getsize(path)
    fine_meta = read_series(str(spec["fine"]))
    has_error = api.has_error_estimate(tm)
    t0 = time.perf_counter()
    pred = api.predict(tm, dims=fine_meta.dims, times=list(fine_meta.times), error=has_error)
    up_s = time.perf_counter() - t0
    rss_up = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    fine = fine_meta
    r = score(pred, fine)
    r.pop("coverage", None)
    steps = list(range(fine.n_times))
    if has_error:
        r["error"] = {"kept": error_stats(pred, fine, [t for t in steps if t % K == 0]),
                      "between": error_stats(pred, fine, [t for t in steps if t % K])}
    points = int(np.prod(fine.dims)) * fine.n_times * len(fine.variables)
    base = tm.model.base
    r.update(fit_s=fit_s, upscale_s=up_s, upscale_rate=points / max(up_s, 1e-9),
             rss_fit=rss_fit, rss_upscale=rss_up, model_bytes=size,
             notes=tm.info.history.get("init_notes", []),
             spline_boundary=base.spline_boundary.tolist()
             if hasattr(base, "spline_boundary") else None,
             engine_file=os.path.abspath(api.__file__))
    return r


def available(sets: Sequence[str]) -> Optional[str]:
    """None when the engine knows every override of a row, else why not (one line)."""
    from stsr_core.config import preset, settings_overrides
    from stsr_core.errors import StsrError
    mcfg, tcfg = preset("fast")
    try:
        settings_overrides(mcfg, tcfg, [tuple(p.split("=", 1)) for p in sets], "the engine")
    except (StsrError, ValueError, TypeError) as e:
        return str(e).split(";")[0]
    return None


def run_row(spec: Dict[str, object], lock: Optional[str], log) -> Dict[str, object]:
    """``spec``'s row in a child process (holding ``lock``'s lock while it runs)."""
    with tempfile.TemporaryDirectory() as work:
        spec_path, out_path = os.path.join(work, "spec.json"), os.path.join(work, "out.json")
        with open(spec_path, "w") as fh:
            json.dump(dict(spec, out=out_path), fh)
        cmd = [sys.executable, "-m", "bench.quality", "--worker", spec_path]
        fh = open(lock, "a") if lock else None
        try:
            if fh:
                fcntl.flock(fh, fcntl.LOCK_EX)
            r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        finally:
            if fh:
                fcntl.flock(fh, fcntl.LOCK_UN)
                fh.close()
        if r.returncode != 0:
            tail = (r.stderr or r.stdout).strip().splitlines()[-1:] or ["?"]
            log(f"  row failed: {tail[0]}")
            return {"failed": tail[0]}
        with open(out_path) as fh2:
            return json.load(fh2)


def run_dataset(name: str, rows: Dict[str, Tuple[str, List[str]]], minutes: float,
                cache: str, quick: bool, threads: int, lock: Optional[str], log,
                previous: Optional[Dict[str, object]] = None,
                engines: Optional[Dict[str, str]] = None) -> Dict[str, object]:
    """Baselines and every row on data set ``name``; with ``previous`` (an earlier run's
    result for it) only the rows that result lacks, the rest kept. ``engines``: row ->
    the folder another engine was exported into (those rows are fitted by it)."""
    engines = engines or {}
    from stsr_core.io import write_series
    from .baselines import interpolate
    from .between import coarsen, score
    fine, fine_path = load_fine(name, cache, quick)
    coarse = coarsen(fine)
    res: Dict[str, object] = {"dataset": name, "group": DATASETS[name][0],
                              "what": DATASETS[name][1], "fine": list(fine.dims),
                              "steps": fine.n_times, "coarse": list(coarse.dims),
                              "kept_steps": coarse.n_times, "variables": fine.names,
                              "rows": {}}
    if previous is not None:
        res.update({k: v for k, v in previous.items() if k != "rows"})
        res["rows"] = {n: v for n, v in previous["rows"].items()   # type: ignore[union-attr]
                       if n in rows}
    else:
        res["tricubic_kept"] = kept_scipy(coarse, fine)
        res["tricubic+linear"] = score(interpolate(coarse, fine, 3, linear_time=True), fine)
        res["trilinear+linear"] = score(interpolate(coarse, fine, 1), fine)
    log(f"{name}: tricubic kept {res['tricubic_kept']['nearest']:.2f} (best mode "
        f"{max(res['tricubic_kept'].values()):.2f}), tricubic+linear between "
        f"{res['tricubic+linear']['between']:.2f}, trilinear+linear between "
        f"{res['trilinear+linear']['between']:.2f}")
    with tempfile.TemporaryDirectory() as work:
        coarse_path = os.path.join(work, "coarse.h5")
        write_series(coarse, coarse_path)
        for row, (_, sets) in rows.items():
            if row in res["rows"]:                         # type: ignore[operator]
                continue
            why = None if row in engines else available(sets)
            if why:
                res["rows"][row] = {"not_available": why}
                log(f"  {row}: not available ({why})")
                continue
            r = run_row({"coarse": coarse_path, "fine": fine_path, "set": sets,
                         "minutes": minutes, "threads": threads,
                         "engine": engines.get(row)}, lock, log)
            res["rows"][row] = r
            if "not_available" in r:
                log(f"  {row}: not available ({r['not_available']})")
            if "kept" in r:
                e = r.get("error", {}).get("between", {})
                log(f"  {row}: kept {r['kept']:.2f} between {r['between']:.2f} ("
                    + ", ".join(f"{phase(r, p):.2f}" for p in range(1, K))
                    + f") fit {r['fit_s']:.1f} s, upscale {r['upscale_s']:.1f} s"
                    + (f", coverage between {e['coverage']:.3f}" if e else ""))
    return res


# --- report ------------------------------------------------------------------------------
def phase(r: Dict, p: int) -> float:
    ph = r["phase"]
    return float(ph[str(p)] if str(p) in ph else ph[p])


def phase_of(per_variable: Dict, which: str) -> float:
    """A variable's kept PSNR or its mean over the in-between phases (JSON keys)."""
    get = lambda p: float(per_variable[str(p)] if str(p) in per_variable  # noqa: E731
                          else per_variable[p])
    return get(0) if which == "kept" else float(np.mean([get(p) for p in range(1, K)]))


def f2(v: Optional[float]) -> str:
    return "-" if v is None or not math.isfinite(v) else f"{v:.2f}"


def done(r: Optional[Dict]) -> bool:
    return bool(r) and "kept" in r  # type: ignore[operator]


def write_markdown(results: List[Dict], info: Dict, rows: Dict, path: str) -> None:
    ran = [n for n in rows if any(done(r["rows"].get(n)) for r in results)]
    lines = [f"Machine: {info['cpu']} ({info['cores']} cores), torch {info['torch']}, "
             f"{info.get('gpu', 'no GPU')}, {info['threads']} thread(s); {info['date']}; load "
             f"average at start {info['load']:.1f}; timed runs "
             + (f"under the lock {info['lock']}" if info.get("lock") else
                "without a lock (times include other work on the machine)")
             + f". Budget {info['minutes']:g} min per fit, "
             f"preset fast. Coarse input: every {S}nd point, every {K}th step; rebuilt at "
             "every fine step. PSNR in dB, mean over variables (and steps).", "",
             "## Rows", ""]
    engines = info.get("engines", {})
    lines += [f"- `{n}`: {rows[n][0]}"
              + (f"; the engine of {engines[n]['ref']} ({engines[n]['commit'][:10]})"
                 if n in engines else "")
              + (f" (`--set {' '.join(rows[n][1])}`)" if rows[n][1] else " (its defaults)")
              for n in rows]
    default = info.get("default", "base")
    names = [default] + [n for n in ran if n != default] if default in ran else ran
    lines += ["", f"Today's default, the reference between steps: `{names[0]}`."]
    lines += ["", "## Kinds: benchmarked vs trained on", "",
              "Benchmark kinds (this table) and the kinds the shipped networks were trained "
              "on are kept apart: no benchmark series is of a trained kind.", "",
              "| benchmark data set | group | what | points x steps here |", "|---|---|---|---|"]
    lines += [f"| {r['dataset']} | {r['group']} | {r['what']} | "
              f"{'x'.join(map(str, r['fine']))} x {r['steps']} |" for r in results]
    for net, kinds in training_kinds().items():
        lines += ["", f"Trained on, {net}:", ""]
        lines += [f"- `{k}`: {v}" for k, v in kinds.items()]
    lines += ["", "## Kept and in-between steps", "",
              "| data set | tricubic kept (nearest / best mode) | "
              + " | ".join(f"{n} kept" for n in names)
              + " | trilinear+linear between | tricubic+linear between | "
              + " | ".join(f"{n} between" for n in names) + " |",
              "|---|---|" + "---|" * (2 * len(names) + 2)]
    for r in results:
        rr = r["rows"]
        tk = r["tricubic_kept"]
        lines.append(
            f"| {r['dataset']} | {f2(tk['nearest'])} / {f2(max(tk.values()))} | "
            + " | ".join(f2(rr[n]["kept"]) if done(rr.get(n)) else "n/a" for n in names)
            + f" | {f2(r['trilinear+linear']['between'])} | {f2(r['tricubic+linear']['between'])} | "
            + " | ".join(f2(rr[n]["between"]) if done(rr.get(n)) else "n/a" for n in names)
            + " |")
    mean = lambda key, n: np.mean([r["rows"][n][key] for r in results  # noqa: E731
                                   if done(r["rows"].get(n))])
    lines.append("| **mean** | " + f"{np.mean([r['tricubic_kept']['nearest'] for r in results]):.2f} / "
                 f"{np.mean([max(r['tricubic_kept'].values()) for r in results]):.2f} | "
                 + " | ".join(f2(mean("kept", n)) if any(done(r["rows"].get(n)) for r in results)
                              else "n/a" for n in names)
                 + f" | {np.mean([r['trilinear+linear']['between'] for r in results]):.2f} | "
                 f"{np.mean([r['tricubic+linear']['between'] for r in results]):.2f} | "
                 + " | ".join(f2(mean("between", n)) if any(done(r["rows"].get(n)) for r in results)
                              else "n/a" for n in names) + " |")
    lines += ["", "## Against the baselines (dB)", "",
              "Kept: row minus tricubic (SciPy nearest); between: row minus tricubic + linear "
              f"in time, and minus today's default (`{names[0]}`).", "",
              "| data set | " + " | ".join(f"{n} kept - tricubic | {n} between - linear | "
                                         f"{n} between - {names[0]}" for n in names[1:])
              + " |",
              "|---|" + "---|" * (3 * len(names[1:]))]
    for r in results:
        rr, base = r["rows"], r["rows"].get(names[0])
        cells = []
        for n in names[1:]:
            x = rr.get(n)
            if not done(x):
                cells += ["n/a"] * 3
                continue
            cells += [f"{x['kept'] - r['tricubic_kept']['nearest']:+.2f}",
                      f"{x['between'] - r['tricubic+linear']['between']:+.2f}",
                      f"{x['between'] - base['between']:+.2f}" if done(base) else "-"]
        lines.append(f"| {r['dataset']} | " + " | ".join(cells) + " |")
    lines += ["", "## Per phase (kept, 1/4, 1/2, 3/4)", "",
              "| data set | trilinear+linear | tricubic+linear | "
              + " | ".join(names) + " |", "|---|---|---|" + "---|" * len(names)]
    ph = lambda x: ", ".join(f2(phase(x, p)) for p in range(K))  # noqa: E731
    for r in results:
        lines.append(f"| {r['dataset']} | {ph(r['trilinear+linear'])} | "
                     f"{ph(r['tricubic+linear'])} | "
                     + " | ".join(ph(r["rows"][n]) if done(r["rows"].get(n)) else "n/a"
                                  for n in names) + " |")
    lines += ["", f"## The error estimate (made for {LEVEL:.0%} of points below it)", "",
              "Coverage: share of points whose error is under `NAME_error`; sharpness: mean "
              "estimate / mean error; correlation: of the estimate with the error. Mean over "
              "variables; kept / between.", "",
              "| data set | row | coverage | sharpness | correlation |", "|---|---|---|---|---|"]
    for r in results:
        for n in names:
            x = r["rows"].get(n)
            if not done(x) or "error" not in x:
                continue
            e = x["error"]
            lines.append(f"| {r['dataset']} | {n} | {e['kept']['coverage']:.3f} / "
                         f"{e['between']['coverage']:.3f} | {e['kept']['sharpness']:.2f} / "
                         f"{e['between']['sharpness']:.2f} | {e['kept']['correlation']:.2f} / "
                         f"{e['between']['correlation']:.2f} |")
    lines += ["", "## Per variable (kept / between, dB)", ""]
    for r in results:
        cells = []
        for v in r["variables"]:
            per = [f"{n} " + "/".join(f2(phase_of(r["rows"][n]["per_variable"][v], p))
                                     for p in ("kept", "between"))
                   for n in names if done(r["rows"].get(n))]
            cells.append(f"{v}: " + ", ".join(per))
        lines.append(f"- {r['dataset']}: " + "; ".join(cells))
    lines += ["", "## Cost", "",
              "Fit: seconds within the budget; upscale: every fine step on the fine grid in "
              "memory with the error arrays (variable-points/s); peak RSS of the row's process "
              "after the fit and after the upscale; model file against the coarse data.", "",
              "| data set | row | fit s | upscale s | M points/s | RSS fit / upscale GB | "
              "model MB |", "|---|---|---|---|---|---|---|"]
    for r in results:
        for n in names:
            x = r["rows"].get(n)
            if not done(x):
                continue
            lines.append(f"| {r['dataset']} | {n} | {x['fit_s']:.1f} | {x['upscale_s']:.1f} | "
                         f"{x['upscale_rate'] / 1e6:.2f} | {x['rss_fit'] / 1e9:.2f} / "
                         f"{x['rss_upscale'] / 1e9:.2f} | {x['model_bytes'] / 1e6:.2f} |")
    missing = {n: why for r in results for n, x in r["rows"].items()
               if "not_available" in x for why in [x["not_available"]]}
    failed = {(r["dataset"], n): x["failed"] for r in results for n, x in r["rows"].items()
              if "failed" in x}
    if missing or failed:
        lines += ["", "## Not run", ""]
        lines += [f"- `{n}`: not available in this engine ({why})" for n, why in missing.items()]
        lines += [f"- `{n}` on {d}: failed ({why})" for (d, n), why in failed.items()]
    with open(path, "w") as fh:
        fh.write("\n".join(lines) + "\n")


def plot(results: List[Dict], rows: Dict, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    names = [n for n in rows if any(done(r["rows"].get(n)) for r in results)]
    fig, axes = plt.subplots(2, 1, figsize=(max(7, 0.9 * len(results) + 2), 7))
    width = 0.8 / max(1, len(names))
    for ax, key, ref, label in (
            (axes[0], "kept", lambda r: r["tricubic_kept"]["nearest"],
             "kept: dB over tricubic (SciPy nearest)"),
            (axes[1], "between", lambda r: r["tricubic+linear"]["between"],
             "in between: dB over tricubic + linear in time")):
        for k, n in enumerate(names):
            xs, ys = [], []
            for i, r in enumerate(results):
                x = r["rows"].get(n)
                if done(x):
                    xs.append(i + k * width)
                    ys.append(x[key] - ref(r))
            ax.bar(xs, ys, width, color=f"C{k}", label=n)
        if key == "between":
            ax.plot([i + 0.4 - 0.5 * width for i in range(len(results))],
                    [r["trilinear+linear"]["between"] - ref(r) for r in results], "k_",
                    markersize=12, label="trilinear+linear")
        ax.axhline(0, color="k", lw=0.8)
        ax.set_xticks([i + 0.4 - 0.5 * width for i in range(len(results))])
        ax.set_xticklabels([r["dataset"] for r in results], fontsize=7, rotation=20)
        ax.set_ylabel(label, fontsize=8)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=7, ncol=4)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def parse_rows(chosen: str, extra: Sequence[str], ap) -> Dict[str, Tuple[str, List[str]]]:
    rows: Dict[str, Tuple[str, List[str]]] = {}
    for n in [r for r in chosen.split(",") if r]:
        if n not in ROWS:
            ap.error(f"--rows: unknown row '{n}'; choose from {', '.join(ROWS)} or add one "
                     "with --row")
        rows[n] = ROWS[n]
    for spec in extra:
        name, _, sets = spec.partition("=")
        pairs = [p for p in sets.split(",") if p]
        if not name or any("=" not in p for p in pairs):
            ap.error(f"--row {spec!r}: write NAME=key=value,key=value")
        rows[name] = ("--row " + sets, pairs)
    return rows


def parse_engine_rows(specs: Sequence[str], ap) -> Dict[str, Tuple[str, List[str]]]:
    """``NAME=REF[,key=value...]`` -> name -> (the git ref, its --set overrides)."""
    out: Dict[str, Tuple[str, List[str]]] = {}
    for spec in specs:
        name, _, rest = spec.partition("=")
        ref, *pairs = rest.split(",")
        if not name or not ref or any("=" not in p for p in pairs):
            ap.error(f"--engine-row {spec!r}: write NAME=REF or NAME=REF,key=value,... (REF a "
                     "commit or branch of this repository)")
        out[name] = (ref, pairs)
    return out


def export_engine(ref: str, folder: str, ap) -> str:
    """``stsr_core`` of git ref ``ref`` exported into ``folder``; its full commit id."""
    got = subprocess.run(["git", "-C", ROOT, "rev-parse", "--verify", ref + "^{commit}"],
                         capture_output=True, text=True)
    if got.returncode != 0:
        ap.error(f"--engine-row: {ref!r} is no commit or branch of {ROOT}")
    commit = got.stdout.strip()
    os.makedirs(folder)
    archive = subprocess.run(["git", "-C", ROOT, "archive", commit, "stsr_core"],
                             capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", folder], input=archive, check=True)
    return commit


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--quick", action="store_true",
                    help=f"{', '.join(QUICK_DATASETS)} at 17^3 x 9, a few seconds' budget: "
                         "checks the pipeline")
    ap.add_argument("--datasets", default=None, help=f"of {', '.join(DATASETS)}")
    ap.add_argument("--rows", default=",".join(ROWS), help=f"of {', '.join(ROWS)}")
    ap.add_argument("--row", action="append", default=[],
                    help="another row: NAME=key=value,key=value (the engine's --set)")
    ap.add_argument("--engine-row", action="append", default=[],
                    help="a row fitted by the engine of a commit or branch of this repository: "
                         "NAME=REF[,key=value...] (e.g. main@2e1fd8a=2e1fd8a)")
    ap.add_argument("--default", default="base",
                    help="the row that stands for today's default (default: base)")
    ap.add_argument("--budget", type=float, default=None, help="minutes per fit (default 5)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--lock", default=os.environ.get("STSR_BENCH_LOCK"),
                    help="hold this file's lock while a row runs (default: $STSR_BENCH_LOCK)")
    ap.add_argument("--cache", default=os.path.join(ROOT, "bench", "data"))
    ap.add_argument("--out", default=None)
    ap.add_argument("--report", action="store_true",
                    help="only rewrite quality.md and quality.png from --out's quality.json")
    ap.add_argument("--resume", action="store_true",
                    help="keep what --out's quality.json holds (same budget), run the rest")
    ap.add_argument("--redo", default="",
                    help="with --resume: rows to run again on every data set (comma-separated)")
    a = ap.parse_args(argv)
    if a.worker:
        with open(a.worker) as fh:
            spec = json.load(fh)
        r = worker(spec)
        with open(spec["out"], "w") as fh:
            json.dump(r, fh)
        return 0
    from .run import machine_info
    rows = parse_rows(a.rows, a.row, ap)
    engine_rows = parse_engine_rows(a.engine_row, ap)
    rows.update({n: ("another engine's default" if not sets else "another engine", sets)
                 for n, (_, sets) in engine_rows.items()})
    if a.default not in rows:
        ap.error(f"--default: {a.default!r} is none of the rows ({', '.join(rows)})")
    if a.report:
        out = a.out or os.path.join(ROOT, "bench", "results", dt.date.today().isoformat())
        with open(os.path.join(out, "quality.json")) as fh:
            saved = json.load(fh)
        engines = saved["machine"].get("engines", {})
        rows = {n: ROWS.get(n, ("another engine" if n in engines else "--row " + ",".join(v), v))
                for n, v in saved["machine"]["rows"].items()}
        write_markdown(saved["results"], saved["machine"], rows, os.path.join(out, "quality.md"))
        plot(saved["results"], rows, os.path.join(out, "quality.png"))
        return 0
    datasets = (a.datasets or ",".join(QUICK_DATASETS if a.quick else DATASETS)).split(",")
    for d in datasets:
        if d not in DATASETS:
            ap.error(f"unknown data set '{d}'; choose from {', '.join(DATASETS)}")
    minutes = a.budget if a.budget is not None else (0.05 if a.quick else 5.0)
    out = a.out or os.path.join(ROOT, "bench", "results", dt.date.today().isoformat())
    os.makedirs(out, exist_ok=True)
    info = machine_info("cpu")
    info.update(load=os.getloadavg()[0], minutes=minutes, threads=a.threads,
                rows={n: v[1] for n, v in rows.items()}, lock=a.lock, default=a.default)
    exported = tempfile.TemporaryDirectory(prefix="stsr-engines-")
    engines: Dict[str, str] = {}
    info["engines"] = {}
    for n, (ref, sets) in engine_rows.items():
        engines[n] = os.path.join(exported.name, n.replace("/", "_"))
        info["engines"][n] = {"ref": ref, "commit": export_engine(ref, engines[n], ap),
                              "sets": sets}
    results: List[Dict] = []
    done_before: Dict[str, Dict] = {}
    report = os.path.join(out, "quality.json")
    if a.resume and os.path.exists(report):
        with open(report) as fh:
            before = json.load(fh)
        if before["machine"].get("minutes") != minutes:
            ap.error(f"--resume: {report} was run with another budget")
        redo = [r for r in a.redo.split(",") if r]
        done_before = {r["dataset"]: dict(r, rows={n: v for n, v in r["rows"].items()
                                                  if n not in redo})
                       for r in before["results"]}
        info["earlier"] = before["machine"]

    def log(msg: str) -> None:
        print(msg, flush=True)

    for name in [d for d in DATASETS if d in done_before or d in datasets]:
        previous = done_before.get(name)
        if previous is not None and all(n in previous["rows"] for n in rows):
            results.append(previous)
            continue
        results.append(run_dataset(name, rows, minutes, a.cache, a.quick, a.threads, a.lock,
                                   log, previous, engines))
        # after each data set, with what an earlier run holds of the ones still to come
        later = [done_before[d] for d in done_before if d not in {r["dataset"] for r in results}]
        tmp = report + ".tmp"
        with open(tmp, "w") as fh:
            json.dump({"machine": info, "training_kinds": training_kinds(),
                       "results": results + later}, fh, indent=1)
        os.replace(tmp, report)
        write_markdown(results, info, rows, os.path.join(out, "quality.md"))
    plot(results, rows, os.path.join(out, "quality.png"))
    exported.cleanup()
    print(f"wrote {out}/quality.json, quality.md, quality.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
