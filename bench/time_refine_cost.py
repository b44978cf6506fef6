"""What the time refinement network (stsr_core/model/time_refine.py) costs per step between
kept steps, beside the side network and none: a whole in-between step of a real SplineBase
(random coefficients and displacements: the cost does not depend on the values, bent paths,
every variable moved) on the output grid, space scale 2, in one process.

    python -m bench.time_refine_cost [--sizes 33,65] [--vars 4] [--threads 1] [--repeat 3]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from typing import Dict, List, Optional

import torch

from stsr_core.model.error_estimate import lattice_axes
from stsr_core.model.side_weights import load_weights as load_side
from stsr_core.model.time_refine import load_weights as load_refine
from bench.step_cost import random_base, step_seconds


def measure(n: int, n_vars: int, repeat: int) -> Dict[str, float]:
    """Seconds per in-between step at ``n``^3 data, output 2n - 1 per axis, by network."""
    base = random_base(n, n_vars, bend=1.0)
    axes = lattice_axes((2 * n - 1,) * 3, torch.device("cpu"))
    out: Dict[str, float] = {"data_points": n, "vars": n_vars}
    for label, module in (("off", None), ("side", load_side()),
                          ("refine", load_refine(n_vars=n_vars))):
        out[label] = step_seconds(base, axes, module, repeat)
    return out


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.time_refine_cost",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="33,65")
    p.add_argument("--vars", type=int, default=4)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--out", default=None, help="a JSON file for the rows")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    rows = []
    for n in (int(v) for v in a.sizes.split(",")):
        r = measure(n, a.vars, a.repeat)
        rows.append(r)
        print(f"{n}^3 x {a.vars} -> {2 * n - 1}^3: step off {r['off']:.3f} s, side network "
              f"{r['side']:.3f} s ({r['side'] / r['off']:.2f}x), refinement {r['refine']:.3f} s "
              f"({r['refine'] / r['off']:.2f}x)", flush=True)
    if a.out:
        with open(a.out, "w") as fh:
            json.dump({"machine": f"{platform.machine()}, {os.cpu_count()} cores (shared), "
                                  f"{a.threads} threads, torch {torch.__version__}",
                       "date": time.strftime("%Y-%m-%d"), "load": os.getloadavg()[0],
                       "rows": rows}, fh, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
