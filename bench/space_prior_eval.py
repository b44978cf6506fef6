"""The spatial prior alone on kept steps of series it never saw (issue 30): the truth
against the cubic B-spline through every s-th point of it (what the engine gives at a kept
step) and against the spline plus the prior's correction, per variable, at scale 2 (and 4).

    python -m bench.space_prior_eval [--weights W.pt ...] [--datasets tornado,fronts]
        [--scale 2] [--out bench/results/DATE/space_prior] [--data bench/data]

Datasets: the shipped examples (tornado, plume, taylor_green: 33^3 x 17), the generated
benchmark kinds (examples/data/generated: fronts, spiral, shear, gray_scott at 65^3 x 25,
written to --data once), and any ``NAME=FILE`` (a series the project reads, at full
resolution). Kept steps: every 4th. No fit, no gate: every variable gets the network, so
this shows what it can do and where it hurts; the engine's choice per variable (one level
down) is measured by bench/space_prior_fit.py. Writes JSON and a Markdown table.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from stsr_core.io import read_series, write_series  # noqa: E402
from stsr_core.model.encodings import bspline_coefficients  # noqa: E402
from stsr_core.model.grid_plan import lattice_axes, separable, spline_matrix  # noqa: E402
from stsr_core.model.space_prior import (load_weights, residual_values,  # noqa: E402
                                         WEIGHTS_PATH)
from stsr_core.model.space_residual import fine_matrices  # noqa: E402
from stsr_core.series import VolumeSeries  # noqa: E402

EXAMPLES = {"tornado": "examples/data/tornado/tornado.pvd",
            "plume": "examples/data/plume/plume.pvd",
            "taylor_green": "examples/data/taylor_green/taylor_green.pvd"}
GENERATED = ("fronts", "spiral", "shear", "gray_scott")


def load(name: str, data_dir: str, n: int) -> VolumeSeries:
    """A dataset at full resolution: an example, a generated kind (written once), a file."""
    if "=" in name:
        return read_series(name.split("=", 1)[1])
    if name in EXAMPLES:
        return read_series(os.path.join(ROOT, EXAMPLES[name]))
    path = os.path.join(data_dir, f"{name}_n{n}.h5")
    if not os.path.exists(path):
        from examples.data.generated import generate
        os.makedirs(data_dir, exist_ok=True)
        write_series(generate(name, n=n, steps=25, seed=0), path)
    return read_series(path)


def psnr(pred: torch.Tensor, truth: torch.Tensor) -> float:
    """As stsr_core.metrics scores a step: the truth's range over the RMS error."""
    rng = float(truth.max() - truth.min())
    mse = float(((pred - truth).double() ** 2).mean())
    return 20 * math.log10(rng) - 10 * math.log10(mse) if mse > 0 and rng > 0 else math.inf


def evaluate(series: VolumeSeries, nets: Dict[str, torch.nn.Module], scale: int,
             every: int = 4) -> Dict[str, Dict[str, object]]:
    """Per variable the mean PSNR over kept steps (every ``every``-th) of the spline and of
    spline + each net's correction at the kept step's own full grid, the data kept at
    every ``scale``-th point; and the seconds per field of each net."""
    out: Dict[str, Dict[str, object]] = {}
    steps = list(range(0, series.n_times, every))
    for name, arr in series.variables.items():
        fine = torch.from_numpy(np.asarray(arr, dtype=np.float32))
        z, y, x = fine.shape[1:]
        keep = [(n - 1) // scale * scale + 1 for n in (z, y, x)]   # whole coarse cells
        dims = [(k - 1) // scale + 1 for k in keep]                # coarse z, y, x
        axes = lattice_axes(keep, torch.device("cpu"))             # x, y, z at fine points
        mats = [spline_matrix(a, n) for a, n in zip(axes, dims[::-1])]
        fmats = fine_matrices(axes, dims[::-1])
        rows: Dict[str, List[float]] = {"spline": []}
        secs: Dict[str, float] = {k: 0.0 for k in nets}
        for t in steps:
            truth = fine[t, :keep[0], :keep[1], :keep[2]]
            coarse = truth[::scale, ::scale, ::scale]
            base = separable(bspline_coefficients(coarse[None]), mats)[0]
            rows["spline"].append(psnr(base, truth))
            for k, net in nets.items():
                t0 = time.perf_counter()
                res = separable(residual_values(net, coarse[None]), fmats)[0]
                secs[k] += time.perf_counter() - t0
                rows.setdefault(k, []).append(psnr(base + res, truth))
        out[name] = {k: round(float(np.mean([v for v in vals if math.isfinite(v)])), 3)
                     for k, vals in rows.items()}
        out[name]["seconds_per_field"] = {k: round(v / len(steps), 3) for k, v in secs.items()}
        out[name]["coarse"] = dims[::-1]
    return out


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.space_prior_eval",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--weights", nargs="*", default=[WEIGHTS_PATH],
                   help="weights files to compare (default: the shipped ones)")
    p.add_argument("--datasets", default=",".join(list(EXAMPLES) + list(GENERATED)))
    p.add_argument("--n", type=int, default=65, help="points per axis of generated kinds")
    p.add_argument("--scale", type=int, default=2)
    p.add_argument("--data", default=os.path.join(ROOT, "bench", "data"))
    p.add_argument("--out", default=os.path.join(ROOT, "bench", "results",
                                                 time.strftime("%Y-%m-%d"), "space_prior"))
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    nets = {os.path.splitext(os.path.basename(w))[0]: load_weights(w) for w in a.weights}
    results: Dict[str, object] = {}
    lines = ["| dataset | variable | coarse | spline | " + " | ".join(nets) + " |",
             "|---|---|---|---|" + "---|" * len(nets)]
    for name in [d for d in a.datasets.split(",") if d]:
        series = load(name, a.data, a.n)
        r = evaluate(series, nets, a.scale)
        results[name.split("=")[0]] = r
        for var, v in r.items():
            cells = " | ".join(f"{v[k]:.2f} ({v[k] - v['spline']:+.2f})" for k in nets)
            lines.append(f"| {name.split('=')[0]} | {var} | {'x'.join(map(str, v['coarse']))}"
                         f" | {v['spline']:.2f} | {cells} |")
            print(lines[-1], flush=True)
    gains = {k: [v[k] - v["spline"] for r in results.values() for v in r.values()]
             for k in nets}
    for k, g in gains.items():
        print(f"{k}: mean gain {np.mean(g):+.3f} dB over {len(g)} variables, "
              f"worst {np.min(g):+.3f}", flush=True)
    os.makedirs(a.out, exist_ok=True)
    stem = os.path.join(a.out, f"standalone_x{a.scale}")
    with open(stem + ".json", "w") as fh:
        json.dump({"scale": a.scale, "weights": a.weights, "results": results,
                   "mean_gain_db": {k: round(float(np.mean(g)), 3) for k, g in gains.items()},
                   "machine": f"{os.cpu_count()} cores, torch {torch.__version__}",
                   "written": time.strftime("%Y-%m-%d %H:%M")}, fh, indent=1)
    with open(stem + ".md", "w") as fh:
        fh.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
