"""A buoyant smoke plume simulated with PhiFlow (PyPI ``phiflow==3.4.0``, TUM's
differentiable PDE framework): incompressible Euler flow with Boussinesq buoyancy, smoke
injected by a spherical inflow near the floor, MacCormack advection of the smoke,
semi-Lagrangian advection of the velocity, pressure projection each step.

Two stages, because PhiFlow may need packages (numpy 2) that must not enter the project's
venv, and the .vti writer uses ParaView's VTK:

    .venv-data/bin/python generate_plume.py simulate --out plume.npz [--n 33 --frames 17 ...]
    .venv/bin/python      generate_plume.py write plume.npz         # -> plume.pvd + plume/*.vti

Variables: ``smoke`` (density), ``velocity`` (3 components), ``pressure``,
``vorticity_magnitude``; one saved frame every ``--every`` solver steps.
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np


def wide_sparse_indices() -> None:
    """phiml 1.16's numpy backend casts a sparse matrix's linear indices back to their
    int32 input, which wraps for grids past ~36^3 cells (rows x columns > 2^31; the
    pressure solve then fails with 'index ... out of bounds'): ravel them as int64."""
    from phiml.backend._numpy_backend import NumPyBackend
    ravel = NumPyBackend.ravel_multi_index
    if getattr(ravel, "wide", False):
        return

    def ravel64(self, multi_index, shape, mode="undefined"):
        return ravel(self, np.asarray(multi_index, dtype=np.int64), shape, mode)
    ravel64.wide = True
    NumPyBackend.ravel_multi_index = ravel64


def simulate(n: int, frames: int, every: int, warmup: int, dt: float) -> dict:
    wide_sparse_indices()
    from phi import flow
    from phi.flow import (Box, CenteredGrid, Solve, Sphere, StaggeredGrid, advect, channel,
                          extrapolation, fluid, resample, tensor)
    domain = dict(x=n, y=n, z=n, bounds=Box(x=float(n), y=float(n), z=float(n)))
    velocity = StaggeredGrid(0, extrapolation.ZERO, **domain)
    smoke = CenteredGrid(0, extrapolation.BOUNDARY, **domain)
    centre = tensor([n / 2, n / 8, n / 2], channel(vector="x,y,z"))
    inflow = CenteredGrid(Sphere(center=centre, radius=n / 10), extrapolation.BOUNDARY,
                          **domain) * 0.6
    pressure = None
    out = {k: [] for k in ("smoke", "vx", "vy", "vz", "pressure")}
    times = []
    total = warmup + (frames - 1) * every + 1
    for step in range(total):
        smoke = advect.mac_cormack(smoke, velocity, dt=dt) + inflow * dt
        buoyancy = resample(smoke * (0, 0.2, 0), to=velocity)      # y is up
        velocity = advect.semi_lagrangian(velocity, velocity, dt=dt) + buoyancy * dt
        velocity, pressure = fluid.make_incompressible(velocity, (), Solve("CG", 1e-3, 1e-3, max_iterations=2000, suppress=[__import__("phiml").math.Diverged, __import__("phiml").math.NotConverged],
                                                                           x0=pressure))
        if step >= warmup and (step - warmup) % every == 0:
            c = velocity.at_centers()
            vals = c.values.numpy("z,y,x,vector")
            out["smoke"].append(smoke.values.numpy("z,y,x"))
            out["vx"].append(vals[..., 0])
            out["vy"].append(vals[..., 1])
            out["vz"].append(vals[..., 2])
            out["pressure"].append(pressure.values.numpy("z,y,x"))
            times.append((step + 1) * dt)
            print(f"frame {len(times)}/{frames} (solver step {step + 1})", flush=True)
    res = {k: np.stack(v).astype(np.float32) for k, v in out.items()}
    res["times"] = np.asarray(times)
    res["phiflow"] = np.asarray(flow.__name__ and __import__("phi").__version__)
    return res


def write(npz: str, out_dir: str) -> None:
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", ".."))
    from examples.data.solvers.fields import vorticity_magnitude
    from stsr_core.io import write_series
    from stsr_core.series import VolumeSeries
    d = np.load(npz)
    h = 1.0
    variables = {"smoke": d["smoke"], "velocity_0": d["vx"], "velocity_1": d["vy"],
                 "velocity_2": d["vz"], "pressure": d["pressure"],
                 "vorticity_magnitude": vorticity_magnitude(d["vx"], d["vy"], d["vz"], h)}
    series = VolumeSeries(times=d["times"], variables=variables, origin=(0.5, 0.5, 0.5),
                          spacing=(h, h, h),
                          components={"velocity": ["velocity_0", "velocity_1", "velocity_2"]})
    files = write_series(series, os.path.join(out_dir, "plume.pvd"), overwrite=True)
    print(f"wrote {files[0]}: {series.dims} points, {series.n_times} steps")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="stage", required=True)
    s = sub.add_parser("simulate", help="run PhiFlow, save frames to an .npz")
    s.add_argument("--n", type=int, default=33, help="cells per axis (default 33)")
    s.add_argument("--frames", type=int, default=17, help="saved frames (default 17)")
    s.add_argument("--every", type=int, default=2, help="solver steps per frame (default 2)")
    s.add_argument("--warmup", type=int, default=6, help="steps before the first frame")
    s.add_argument("--dt", type=float, default=1.0)
    s.add_argument("--out", required=True)
    w = sub.add_parser("write", help="write the .npz as plume.pvd (project venv)")
    w.add_argument("npz")
    w.add_argument("--out-dir", default=os.path.dirname(os.path.abspath(__file__)))
    a = ap.parse_args(argv)
    if a.stage == "simulate":
        res = simulate(a.n, a.frames, a.every, a.warmup, a.dt)
        np.savez_compressed(a.out, **res)
        print(f"saved {a.out}")
    else:
        write(a.npz, a.out_dir)


if __name__ == "__main__":
    main()
