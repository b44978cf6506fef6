"""Scale case C (issue 29): the project's tornado (examples/data/tornado/generate_tornado.py)
as a user's saved coarse data of real size, 257^3 x 9 steps x 5 variables (3.0 GB of
float32): the 513^3 x 33-step series (time 0, 5, ..., 160) kept at every 2nd point and every
4th step. Only the coarse input is written; :func:`fine_slab` evaluates the fine truth slab
by slab, for scoring an upscale.

Velocity is analytic; vorticity magnitude is the central differences of the fine grid (one
sided at its faces), as generate_tornado.py computes it on a grid of that size, so the
coarse data is the fine series subsampled.

    python -m bench.scale.case_c [--out bench/data/caseC/coarse.h5] [--fine-n 513]
                                 [--fine-steps 33]
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Dict, Optional, Sequence

import numpy as np

from . import ROOT

sys.path.insert(0, os.path.join(ROOT, "examples", "data", "tornado"))
from generate_tornado import velocity_at  # noqa: E402

FINE_N = 513          # fine points per axis
FINE_STEPS = 33       # fine steps, DT apart
DT = 5.0
SPACE, TIME = 2, 4    # every 2nd point, every 4th step kept
VARIABLES = ["velocity_0", "velocity_1", "velocity_2", "velocity_magnitude",
             "vorticity_magnitude"]
SLAB_POINTS = 1 << 20  # points evaluated at once (a few hundred MB of float64 temporaries)


def fine_slab(fine_n: int, t: float, z0: int, z1: int, every: int = 1
              ) -> Dict[str, np.ndarray]:
    """The fine series at time ``t`` on its grid kept at every ``every``-th point, rows
    ``z0:z1`` of that grid: {variable: float32 [z1-z0, Y, X]}."""
    h = 1.0 / (fine_n - 1)
    c = np.arange(0, fine_n, every) * h
    axes = [c[None, None, :], c[None, :, None], c[z0:z1, None, None]]       # x, y, z
    v = velocity_at(*axes, t)                                              # [z, y, x, 3]
    # d[i][a]: d v_i / d axis a, central at the fine spacing, one-sided at the faces
    d = [[None] * 3 for _ in range(3)]
    for a in range(3):
        hi = [ax for ax in axes]
        lo = [ax for ax in axes]
        hi[a] = np.minimum(axes[a] + h, 1.0)
        lo[a] = np.maximum(axes[a] - h, 0.0)
        diff = (velocity_at(*hi, t) - velocity_at(*lo, t)) / (hi[a] - lo[a])[..., None]
        for i in range(3):
            d[i][a] = diff[..., i]
    wx = d[2][1] - d[1][2]       # dvz/dy - dvy/dz  (axis 0 = x, 1 = y, 2 = z)
    wy = d[0][2] - d[2][0]       # dvx/dz - dvz/dx
    wz = d[1][0] - d[0][1]       # dvy/dx - dvx/dy
    out = {f"velocity_{i}": v[..., i].astype(np.float32) for i in range(3)}
    out["velocity_magnitude"] = np.linalg.norm(v, axis=-1).astype(np.float32)
    out["vorticity_magnitude"] = np.sqrt(wx * wx + wy * wy + wz * wz).astype(np.float32)
    return out


def coarse_step(fine_n: int, t: float) -> Dict[str, np.ndarray]:
    """One kept step of the coarse input, slab by slab: {variable: float32 [Z, Y, X]}."""
    n = (fine_n - 1) // SPACE + 1
    rows = max(1, SLAB_POINTS // (n * n))
    out = {k: np.empty((n, n, n), np.float32) for k in VARIABLES}
    for z0 in range(0, n, rows):
        for k, a in fine_slab(fine_n, t, z0, min(n, z0 + rows), SPACE).items():
            out[k][z0:z0 + a.shape[0]] = a
    return out


def write_coarse(path: str, fine_n: int = FINE_N, fine_steps: int = FINE_STEPS
                 ) -> Dict[str, object]:
    """Write the coarse input to ``path`` (any format stsr writes; ``.h5`` reads fastest),
    one step at a time; returns a summary."""
    from stsr_core.grid import Grid
    from stsr_core.io import open_series_writer
    n = (fine_n - 1) // SPACE + 1
    times = [float(s * DT) for s in range(0, fine_steps, TIME)]
    h = SPACE / (fine_n - 1)
    t0 = time.perf_counter()
    with open_series_writer(path, Grid((n, n, n), (0.0, 0.0, 0.0), (h, h, h)), times,
                            VARIABLES, {"velocity": VARIABLES[:3]}, overwrite=True) as w:
        for i, t in enumerate(times):
            w.write_step(i, coarse_step(fine_n, t))
    return {"path": path, "seconds": time.perf_counter() - t0, "dims": [n, n, n],
            "steps": len(times), "times": times,
            "bytes_float32": 4 * n ** 3 * len(times) * len(VARIABLES)}


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=os.path.join(ROOT, "bench", "data", "caseC", "coarse.h5"),
                   help="the coarse input to write (default bench/data/caseC/coarse.h5, "
                        "which git ignores)")
    p.add_argument("--fine-n", type=int, default=FINE_N, help="fine points per axis (4k+1)")
    p.add_argument("--fine-steps", type=int, default=FINE_STEPS, help="fine steps (4k+1)")
    a = p.parse_args(argv)
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    info = write_coarse(a.out, a.fine_n, a.fine_steps)
    print(f"wrote {info['path']}: {info['dims'][0]}^3 x {info['steps']} steps x "
          f"{len(VARIABLES)} variables ({info['bytes_float32'] / 1e9:.2f} GB float32) in "
          f"{info['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
