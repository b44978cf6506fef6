"""Issue 30's time refinement network (stsr_core/model/time_refine.py) on the quality
benchmark's data sets: one fit per data set, rebuilt four ways in the same process.

    python -m bench.time_refine_ablation [--datasets wake,patterns,excitable49,plume63]
        [--budget 5] [--cache bench/data] [--out bench/results/<date>/time_refine]

Each data set (bench/quality.py's, none of a kind the network was trained on) is kept at
every 2nd point and every 4th step and fitted once with the default preset and
``side_net=refine`` (the base is the default's to the bit: the network only adds its gate,
timed apart). The fine series is then rebuilt at every step with

* ``default``: no network between steps (today's default, side_net=off);
* ``side``: the 97-weight side network (side_net=prior), the floor to beat;
* ``refine``: the time refinement on the variables its gate kept (side_net=refine);
* ``refine_all``: the time refinement on every moved variable (side_net=refine_all);

beside tricubic + linear in time and trilinear + linear (bench/baselines.py). PSNR per
phase (kept, 1/4, 1/2, 3/4) and variable, the fit's and the gate's seconds, and each
rebuild's seconds (with the error arrays). Writes time_refine.json and time_refine.md.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from bench.baselines import interpolate  # noqa: E402
from bench.between import K, coarsen, score  # noqa: E402
from bench.quality import load_fine  # noqa: E402
from stsr_core import api  # noqa: E402
from stsr_core.model.side_weights import load_weights as load_side  # noqa: E402

VARIANTS = ("default", "side", "refine", "refine_all")
DEFAULT_SETS = ("wake", "patterns", "excitable49", "plume63")


def rebuild(tm, fine, variant: str, gated: torch.Tensor) -> Dict[str, object]:
    """Score the model ``tm`` rebuilt at every fine step with ``variant``'s network."""
    base = tm.model.base
    refine = base.side_weights
    if variant == "default":
        base.side_weights = None
    elif variant == "side":
        base.side_weights = load_side()
    elif variant == "refine":
        refine.use = gated.clone()
    else:
        refine.use = (base.flow_mix != 0).to(torch.float32).cpu()
    t0 = time.perf_counter()
    pred = api.predict(tm, dims=fine.dims, times=list(fine.times), error=True)
    up_s = time.perf_counter() - t0
    base.side_weights = refine
    refine.use = gated.clone()
    r = score(pred, fine)
    r.pop("coverage", None)
    r["upscale_s"] = up_s
    return r


def run(name: str, cache: str, minutes: float, log) -> Dict[str, object]:
    fine, _ = load_fine(name, cache, False)
    coarse = coarsen(fine)
    res: Dict[str, object] = {"dataset": name, "fine": list(fine.dims), "steps": fine.n_times,
                              "variables": fine.names}
    res["tricubic+linear"] = score(interpolate(coarse, fine, 3, linear_time=True), fine)
    res["trilinear+linear"] = score(interpolate(coarse, fine, 1), fine)
    t0 = time.perf_counter()
    tm = api.fit(coarse, "fast", max_minutes=minutes, device="cpu", seed=0,
                 model_overrides={"side_net": "refine"})
    res["fit_s"] = time.perf_counter() - t0
    res["gate"] = tm.info.history.get("time_refine", {})
    res["moving"] = (tm.model.base.flow_mix != 0).tolist()
    gated = tm.model.base.side_weights.use.clone()
    for v in VARIANTS:
        r = rebuild(tm, fine, v, gated)
        res[v] = r
        log(f"{name} {v}: kept {r['kept']:.2f} between {r['between']:.2f} ("
            + ", ".join(f"{r['phase'][p]:.2f}" for p in range(1, K))
            + f") upscale {r['upscale_s']:.1f} s")
    log(f"{name}: fit {res['fit_s']:.1f} s (gate {res['gate'].get('seconds', 0)} s), gate "
        f"use {res['gate'].get('use')}, gains {res['gate'].get('gain_db')}")
    return res


def ph(r: Dict, p: int) -> float:
    d = r["phase"]
    return float(d[str(p)] if str(p) in d else d[p])


def markdown(results: Sequence[Dict], info: Dict) -> str:
    cols = ["trilinear+linear", "tricubic+linear"] + list(VARIANTS)
    out = [f"# The time refinement network on the quality benchmark ({info['date']})", "",
           f"Machine: {info['machine']}; load average at start {info['load']:.1f}; budget "
           f"{info['minutes']:g} min per fit, preset fast, one fit per data set rebuilt "
           "four ways in one process (bench/time_refine_ablation.py). Every 2nd point and "
           "every 4th step kept, rebuilt at every fine step. PSNR in dB, mean over "
           "variables (and steps).", "",
           "## Between kept steps (mean of 1/4, 1/2, 3/4) and kept", "",
           "| data set | kept (model) | " + " | ".join(cols) + " | refine - default |"
           " refine_all - default | side - default |", "|---" * (len(cols) + 5) + "|"]
    for r in results:
        out.append(f"| {r['dataset']} | {r['default']['kept']:.2f} | "
                   + " | ".join(f"{r[c]['between']:.2f}" for c in cols)
                   + f" | {r['refine']['between'] - r['default']['between']:+.2f}"
                   f" | {r['refine_all']['between'] - r['default']['between']:+.2f}"
                   f" | {r['side']['between'] - r['default']['between']:+.2f} |")
    mean = {c: float(np.mean([r[c]["between"] for r in results])) for c in cols}
    out.append("| **mean** | | " + " | ".join(f"{mean[c]:.2f}" for c in cols)
               + f" | {mean['refine'] - mean['default']:+.2f} | "
               f"{mean['refine_all'] - mean['default']:+.2f} | "
               f"{mean['side'] - mean['default']:+.2f} |")
    out += ["", "## Per phase (kept, 1/4, 1/2, 3/4)", "",
            "| data set | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for r in results:
        out.append(f"| {r['dataset']} | " + " | ".join(
            ", ".join(f"{ph(r[c], p):.2f}" for p in range(K)) for c in cols) + " |")
    out += ["", "## The gate (held-out steps of the half series) and the cost", "",
            "| data set | fit s | gate s | used on | gains on the half series (dB) | "
            + " | ".join(f"upscale s {v}" for v in VARIANTS) + " |",
            "|---" * (5 + len(VARIANTS)) + "|"]
    for r in results:
        g = r["gate"]
        used = [n for n, u in zip(r["variables"], g.get("use", [])) if u]
        gains = ", ".join(f"{n} {x:+.2f}" for n, x in zip(r["variables"], g.get("gain_db", [])))
        out.append(f"| {r['dataset']} | {r['fit_s']:.1f} | {g.get('seconds', '-')} | "
                   f"{', '.join(used) or 'none'} | {gains or g.get('reason', '-')} | "
                   + " | ".join(f"{r[v]['upscale_s']:.1f}" for v in VARIANTS) + " |")
    out += ["", "## Per variable between steps (default / side / refine / refine_all)", ""]
    for r in results:
        out.append(f"- {r['dataset']}: " + "; ".join(
            f"{n}: " + " / ".join(
                f"{np.mean([r[v]['per_variable'][n][str(p)] if str(p) in r[v]['per_variable'][n] else r[v]['per_variable'][n][p] for p in range(1, K)]):.2f}"  # noqa: E501
                for v in VARIANTS)
            for n in r["variables"]))
    return "\n".join(out) + "\n"


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.time_refine_ablation",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--datasets", default=",".join(DEFAULT_SETS))
    ap.add_argument("--budget", type=float, default=5.0, help="minutes per fit")
    ap.add_argument("--cache", default=os.path.join(ROOT, "bench", "data"))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=None)
    ap.add_argument("--report", action="store_true", help="rewrite the .md from the .json")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    out = a.out or os.path.join(ROOT, "bench", "results", dt.date.today().isoformat(),
                                "time_refine")
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, "time_refine.json")
    if a.report:
        with open(path) as fh:
            saved = json.load(fh)
        with open(os.path.join(out, "time_refine.md"), "w") as fh:
            fh.write(markdown(saved["results"], saved["info"]))
        return 0
    import platform
    info = {"date": dt.date.today().isoformat(), "load": os.getloadavg()[0],
            "minutes": a.budget, "threads": a.threads,
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch "
                       f"{torch.__version__}, {a.threads} thread(s)"}
    results: List[Dict] = []
    if os.path.exists(path):             # resume: the data sets done keep their rows
        with open(path) as fh:
            results = [r for r in json.load(fh)["results"]]
    done = {r["dataset"] for r in results}
    for name in [n for n in a.datasets.split(",") if n and n not in done]:
        results.append(run(name, a.cache, a.budget, lambda m: print(m, flush=True)))
        with open(path + ".tmp", "w") as fh:
            json.dump({"info": info, "results": results}, fh, indent=1)
        os.replace(path + ".tmp", path)
        with open(os.path.join(out, "time_refine.md"), "w") as fh:
            fh.write(markdown(results, info))
    return 0


if __name__ == "__main__":
    sys.exit(main())
