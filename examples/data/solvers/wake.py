"""``wake``: the wake of a bluff body, simulated with lbmpy (PyPI ``lbmpy``, FAU's code
generator for lattice Boltzmann methods: it writes and compiles a C kernel for the chosen
collision operator).

Physics: weakly compressible flow past a cylinder that spans the box in z with a wavy axis
(its centre line moves +-``WAVE`` cells in y once along the span, which makes the shed vortices
bend and break up along it rather than stay two-dimensional), Reynolds number ``RE`` on its
diameter. Lattice Boltzmann, D3Q19 stencil, cumulant collision operator; uniform inflow
(velocity bounce-back, ``UBB``) at x = 0, an extrapolation outflow, free-slip walls in
y, periodic in z, no-slip (bounce-back) on the body. Lattice units: cell size 1, one time
unit = one LBM step, inflow speed ``U`` (Mach ~0.1).

Output: cell values of the first ``nx x ny x nz`` cells (159 x 63 x 63 by default: 2k + 1
points, so that every 2nd point keeps the last), one frame every ``every`` steps after
``warmup`` steps (the wake is shedding periodically by then). The default frame spacing is
about 1/7.5 of the shedding period, so every 4th frame kept is ~0.55 of a period between kept
steps: the vortices move about half their spacing, the case where following motion between
kept steps is ambiguous. Variables: ``velocity`` (3 components), ``pressure`` ((rho - 1) /
3, lattice units) and ``vorticity_magnitude`` (central differences).

Run in the data venv (``.venv-data``; lbmpy pulls its own sympy/numpy):

    .venv-data/bin/python -m examples.data.solvers.wake --out wake.npz [--nx 159 ...]
"""
from __future__ import annotations

import argparse
import time

import numpy as np

RE = 200.0            # Reynolds number on the diameter
U = 0.06              # inflow speed, lattice units
DIAMETER = 10.0       # cells
WAVE = 1.5            # amplitude of the body's wavy axis, cells
X_BODY = 30.0         # the body's axis, cells from the inlet
CHECK = 250           # steps between checks that the solution is finite


def simulate(nx: int, ny: int, nz: int, frames: int, every: int, warmup: int) -> dict:
    """Frames of the wake: {velocity_0..2, pressure: float32 [T, Z, Y, X], times [T]}."""
    import lbmpy
    from lbmpy import LBMConfig, LBStencil, Method, Stencil
    from lbmpy.boundaries import UBB, ExtrapolationOutflow, FreeSlip, NoSlip
    from lbmpy.lbstep import LatticeBoltzmannStep
    from pystencils import create_data_handling
    from pystencils.slicing import slice_from_direction

    cells = (nx + 1, ny + 1, nz + 1)          # one more cell than points kept, per axis
    viscosity = U * DIAMETER / RE
    omega = 1.0 / (3.0 * viscosity + 0.5)
    dh = create_data_handling(cells, periodicity=(False, False, True), default_ghost_layers=1)
    config = LBMConfig(stencil=LBStencil(Stencil.D3Q19), method=Method.CUMULANT,
                       relaxation_rate=omega, compressible=True)
    step = LatticeBoltzmannStep(data_handling=dh, lbm_config=config, name="wake",
                                optimization={"openmp": True})
    bh = step.boundary_handling
    bh.set_boundary(UBB((U, 0, 0)), slice_from_direction("W", 3))
    bh.set_boundary(ExtrapolationOutflow((1, 0, 0), step.method, initial_velocity=(U, 0, 0)),
                    slice_from_direction("E", 3))
    for side, normal in (("N", 1), ("S", -1)):
        bh.set_boundary(FreeSlip(step.method.stencil, normal_direction=(0, normal, 0)),
                        slice_from_direction(side, 3))
    y0 = 0.5 * cells[1] + 0.3            # slightly off the middle: shedding starts sooner

    def body(x, y, z):
        centre = y0 + WAVE * np.sin(2 * np.pi * z / cells[2])
        return (x - X_BODY) ** 2 + (y - centre) ** 2 < (0.5 * DIAMETER) ** 2
    bh.set_boundary(NoSlip(), mask_callback=body)
    solid = None
    out = {k: [] for k in ("velocity_0", "velocity_1", "velocity_2", "pressure")}
    times = []
    t0 = time.perf_counter()

    def run(n: int) -> None:
        """n steps, checked every CHECK: a blown-up run stops with a clear message."""
        while n > 0:
            step.run(min(n, CHECK))
            n -= CHECK
            speed = float(np.nanmax(np.abs(step.velocity[:, :, :, :])))
            if not np.isfinite(speed) or speed > 0.5:
                raise SystemExit(f"wake: the solution blew up at step {step.time_steps_run} "
                                 f"(max |u| {speed:.3g}): lower RE or U")
    run(warmup)
    print(f"warm-up: {warmup} steps in {time.perf_counter() - t0:.0f} s", flush=True)
    for f in range(frames):
        if f:
            run(every)
        vel = np.array(step.velocity[:, :, :, :], dtype=np.float64)[:nx, :ny, :nz]  # x,y,z,3
        rho = np.array(step.density[:, :, :], dtype=np.float64)[:nx, :ny, :nz]
        if solid is None:
            xs, ys, zs = np.meshgrid(np.arange(nx) + 0.5, np.arange(ny) + 0.5,
                                     np.arange(nz) + 0.5, indexing="ij")
            solid = body(xs, ys, zs)
        vel[solid] = 0.0
        rho[solid] = 1.0
        for i in range(3):
            out[f"velocity_{i}"].append(np.transpose(vel[..., i], (2, 1, 0)).astype(np.float32))
        out["pressure"].append(np.transpose((rho - 1.0) / 3.0, (2, 1, 0)).astype(np.float32))
        times.append(float(warmup + f * every))
        print(f"frame {f + 1}/{frames} (step {warmup + f * every}, "
              f"{time.perf_counter() - t0:.0f} s)", flush=True)
    res = {k: np.stack(v) for k, v in out.items()}
    res["times"] = np.asarray(times)
    res["spacing"] = np.asarray(1.0)
    res["solver"] = np.asarray(f"lbmpy {lbmpy.__version__}")
    res["parameters"] = np.asarray(
        f"D3Q19 cumulant, Re {RE}, U {U}, diameter {DIAMETER}, wave {WAVE}, omega "
        f"{omega:.4f}, cells {cells}, warmup {warmup}, every {every}")
    return res


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nx", type=int, default=159)
    ap.add_argument("--ny", type=int, default=63)
    ap.add_argument("--nz", type=int, default=63)
    ap.add_argument("--frames", type=int, default=49)
    ap.add_argument("--every", type=int, default=110, help="LBM steps per frame")
    ap.add_argument("--warmup", type=int, default=8000, help="LBM steps before the first")
    ap.add_argument("--out", required=True, help=".npz to write")
    a = ap.parse_args(argv)
    res = simulate(a.nx, a.ny, a.nz, a.frames, a.every, a.warmup)
    np.savez(a.out, **res)
    print(f"saved {a.out}")


if __name__ == "__main__":
    main()
