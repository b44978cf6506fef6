"""What the side-weights network (stsr_core/model/side_weights.py) costs per step between
kept steps, over data sizes: the network alone on its lattice, and a whole in-between step
of the base on the output grid (space scale 2) with the network off and on.

    python -m bench.side_weights_cost [--sizes 33,65,129] [--vars 4] [--threads 2]
        [--out bench/results/2026-12-02]

The base is a real SplineBase with random coefficients and displacements (cost does not
depend on the values); the network is the shipped one. Writes side_weights_cost.json and
.md to --out. Scale case A is 129^3 data x 4 variables with 36 steps between kept ones:
the network's part there is 36 x its time per step.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from typing import Dict, List

import torch

from stsr_core.model.error_estimate import lattice_axes
from stsr_core.model.side_weights import load_weights
from bench.step_cost import random_base, step_seconds, timed

CASE_A_STEPS = 36      # scale case A's steps between kept ones


def measure(n: int, n_vars: int, repeat: int) -> Dict[str, float]:
    base = random_base(n, n_vars)
    net = load_weights()
    m = (n - 2) // net.stride + 2
    ends = torch.randn(2, n_vars, m, m, m)
    outside = torch.rand(2, m, m, m)
    with torch.no_grad():
        net_s = timed(lambda: net(ends, 0.25, outside), repeat)
    out_n = 2 * n - 1
    axes = lattice_axes((out_n,) * 3, torch.device("cpu"))
    steps = {label: step_seconds(base, axes, module, repeat)
             for label, module in (("off", None), ("on", net))}
    points = out_n ** 3
    return {"data_points": n, "lattice": m, "vars": n_vars, "net_s": net_s,
            "step_off_s": steps["off"], "step_on_s": steps["on"],
            "rate_off_mpts": points / steps["off"] / 1e6,
            "rate_on_mpts": points / steps["on"] / 1e6}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.side_weights_cost",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="33,65,129")
    p.add_argument("--vars", type=int, default=4)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--out", default=os.path.join("bench", "results", "2026-12-02"))
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    rows: List[Dict[str, float]] = []
    for n in (int(v) for v in a.sizes.split(",")):
        rows.append(measure(n, a.vars, a.repeat))
        r = rows[-1]
        print(f"{n}^3 x {a.vars}: net {r['net_s']:.3f} s on {r['lattice']}^3; step "
              f"{r['step_off_s']:.2f} s off, {r['step_on_s']:.2f} s on "
              f"({r['rate_off_mpts']:.1f} / {r['rate_on_mpts']:.1f} M points/s)", flush=True)
    info = {"machine": f"{platform.machine()}, {os.cpu_count()} cores (shared), "
                       f"{a.threads} threads, torch {torch.__version__}",
            "date": time.strftime("%Y-%m-%d"), "rows": rows}
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "side_weights_cost.json"), "w") as fh:
        json.dump(info, fh, indent=1)
    lines = [f"Side-weights network cost per step between kept steps ({info['machine']}; "
             f"{info['date']}; best of {a.repeat}; output grid 2x the data per axis).", "",
             "| data | vars | net's lattice | net alone (s) | step off (s) | step on (s) | "
             "M points/s off | on | net x 36 steps (s) |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['data_points']}^3 | {r['vars']} | {r['lattice']}^3 | "
                     f"{r['net_s']:.3f} | {r['step_off_s']:.2f} | {r['step_on_s']:.2f} | "
                     f"{r['rate_off_mpts']:.1f} | {r['rate_on_mpts']:.1f} | "
                     f"{CASE_A_STEPS * r['net_s']:.1f} |")
    with open(os.path.join(a.out, "side_weights_cost.md"), "w") as fh:
        fh.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
