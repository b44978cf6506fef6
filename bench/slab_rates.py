"""The slabbed upscale's rates on one device (bench/gpu_check.sh runs it on CUDA): a model of
a generated 33^3 x 5 series (3 variables) upscaled at each output size to 5 times, in this
process; compute and write seconds from api.upscale's timings, the device's peak memory.

    python -m bench.slab_rates --device cuda --sizes 129,257,385 --out DIR
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--sizes", default="129,257")
    p.add_argument("--out", required=True)
    a = p.parse_args()
    from stsr_core import api
    from test_engine import smooth_series
    s = smooth_series(nx=33, ny=33, nz=33, nt=5)
    s.variables["c"] = s.variables["rho"] * s.variables["temperature"]
    t0 = time.perf_counter()
    tm = api.fit(s, device=a.device, max_minutes=0.5, model_overrides={"flow_iters": 50})
    rows = []
    fit_s = time.perf_counter() - t0
    for n in [int(v) for v in a.sizes.split(",")]:
        with tempfile.TemporaryDirectory() as d:
            if a.device == "cuda":
                torch.cuda.reset_peak_memory_stats()
            t0 = time.perf_counter()
            r = api.upscale(tm, os.path.join(d, "o.h5"), dims=(n, n, n),
                            times=list(np.linspace(0.5, 3.5, 5)), compression="none")
            wall = time.perf_counter() - t0
        vp = n ** 3 * 5 * len(tm.info.variables)
        rows.append({"size": n, "wall_s": wall, "compute_s": r["compute_s"],
                     "write_s": r["write_s"], "rows": r["memory"]["rows"],
                     "variable_points_per_s": vp / r["compute_s"],
                     "device_peak_bytes": torch.cuda.max_memory_allocated()
                     if a.device == "cuda" else None})
        print(json.dumps(rows[-1]), flush=True)
    os.makedirs(a.out, exist_ok=True)
    res = {"device": a.device, "torch": torch.__version__, "fit_s": fit_s,
           "gpu": torch.cuda.get_device_name() if a.device == "cuda" else None,
           "rows": rows}
    with open(os.path.join(a.out, f"rates-{a.device}.json"), "w") as fh:
        json.dump(res, fh, indent=1)
    with open(os.path.join(a.out, f"rates-{a.device}.md"), "w") as fh:
        fh.write(f"device {a.device} {res['gpu'] or ''}, torch {torch.__version__}\n\n"
                 "| output | wall s | compute s | write s | slab rows | M variable-points/s "
                 "| device peak |\n|---|---|---|---|---|---|---|\n")
        for r in rows:
            peak = "-" if r["device_peak_bytes"] is None else \
                f"{r['device_peak_bytes'] / 1e9:.2f} GB"
            fh.write(f"| {r['size']}^3 | {r['wall_s']:.1f} | {r['compute_s']:.1f} | "
                     f"{r['write_s']:.1f} | {r['rows']} | "
                     f"{r['variable_points_per_s'] / 1e6:.1f} | {peak} |\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
