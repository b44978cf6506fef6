"""What the blend towards trilinear between kept steps costs (issue 30,
stsr_core/model/between_smooth.py): one model's upscale with its blend shares and with them
zeroed, alternated in one process so that both see the same load, at several output sizes
(engine alone: ``api.predict_timestep`` on whole grids, 3 in-between times, error arrays).

    python -m bench.blend_cost MODEL [--scales 2,4,8] [--repeats 3] [--out DIR]

Prints a table of the best of ``--repeats`` seconds per size and row, the rate and the
ratio, and writes blend_cost.json and blend_cost.png to --out (default
bench/results/<date>/trilinear-between/cost). A model whose shares are all 0 gets them set
to 1 for the blended row (say so in what you report).
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import time
from typing import Dict, List, Optional

import numpy as np
import torch

from stsr_core import api
from stsr_core.grid import Grid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(model: str, scales: List[int], repeats: int) -> Dict[str, object]:
    """The timings: per scale, per row ("blend", "spline") the seconds of each repeat."""
    tm = api.load_model(model, device="cpu")
    base = tm.model.base
    share = base.between_smooth.clone()
    forced = not bool((share != 0).any())
    if forced:
        share.fill_(1.0)
    times = list(tm.info.times)
    between = [times[0] + (times[1] - times[0]) * f for f in (0.25, 0.5, 0.75)]
    g = tm.info.grid
    rows: List[Dict[str, object]] = []
    for scale in scales:
        dims = tuple((n - 1) * scale + 1 for n in g.dims)
        grid = Grid(dims, tuple(g.origin), tuple(s / scale for s in g.spacing))
        secs: Dict[str, List[float]] = {"blend": [], "spline": []}
        for _ in range(repeats):
            for name, values in (("blend", share), ("spline", torch.zeros_like(share))):
                base.between_smooth.copy_(values)
                t0 = time.perf_counter()
                for t in between:
                    api.predict_timestep(tm, t, grid, error=api.has_error_estimate(tm))
                secs[name].append(time.perf_counter() - t0)
        points = int(np.prod(dims)) * base.n_vars * len(between)
        rows.append({"scale": scale, "dims": list(dims), "seconds": secs,
                     "best_s": {k: min(v) for k, v in secs.items()},
                     "M_var_pts_s": {k: points / min(v) / 1e6 for k, v in secs.items()},
                     "ratio": min(secs["blend"]) / min(secs["spline"]),
                     "load": os.getloadavg()[0]})
        print(f"{'x'.join(map(str, dims)):>12s}  blend {min(secs['blend']):7.3f} s  spline "
              f"{min(secs['spline']):7.3f} s  ratio {rows[-1]['ratio']:.2f}  "
              f"({rows[-1]['M_var_pts_s']['blend']:.0f} / "
              f"{rows[-1]['M_var_pts_s']['spline']:.0f} M var-pts/s)", flush=True)
    return {"model": model, "shares": share.tolist(), "shares_forced": forced,
            "threads": torch.get_num_threads(), "repeats": repeats, "rows": rows,
            "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6,
            "date": dt.date.today().isoformat()}


def plot(result: Dict[str, object], path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rows = result["rows"]
    x = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for k, (name, off) in enumerate((("spline", -0.2), ("blend", 0.2))):
        ax.bar(x + off, [r["best_s"][name] for r in rows], 0.4, label=name)
    ax.set_xticks(x, ["x".join(map(str, r["dims"])) for r in rows])
    ax.set_ylabel("seconds, 3 in-between steps (best)")
    ax.set_title("the blend towards trilinear: cost")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model")
    ap.add_argument("--scales", default="2,4,8")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results",
                                                  dt.date.today().isoformat(),
                                                  "trilinear-between", "cost"))
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    result = run(a.model, [int(s) for s in a.scales.split(",")], a.repeats)
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "blend_cost.json"), "w") as fh:
        json.dump(result, fh, indent=1)
    plot(result, os.path.join(a.out, "blend_cost.png"))
    print(f"wrote {a.out}/blend_cost.json, blend_cost.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
