"""``patterns``: reaction-diffusion (Turing) patterns forming and rearranging, simulated with
py-pde (PyPI ``py-pde``, Zwicker's finite-difference PDE package; its right-hand side is
compiled with numba).

Physics: the Brusselator,
  du/dt = DU lap u + A - (B + 1) u + u^2 v
  dv/dt = DV lap v + B u - u^2 v
with A = 3, B = 4.6, DU = 2, DV = 16 (past the Turing threshold (1 + A sqrt(DU/DV))^2 = 4.26,
far from the Hopf one, 1 + A^2: stationary patterns of wave length ~8.6 grow from noise,
then spots and labyrinths rearrange), zero-flux (Neumann) walls, box [0, 48]^3, cell-centred
grid, py-pde's explicit Euler stepper at 0.8 of its stability limit. Initial condition: the uniform state (u, v) =
(A, B/A) plus 1 % noise from ``seed``. Frames at times T0 ... T1: patterns emerging from the
noise, then sharpening and moving as they settle.

Variables: ``u``, ``v`` (the two species) and ``reaction`` = u^2 v (derived).

    .venv-data/bin/python -m examples.data.solvers.patterns --out patterns.npz [--n 49 ...]
"""
from __future__ import annotations

import numpy as np

from .pde_run import evolve, main

A, B, DU, DV = 3.0, 4.6, 2.0, 16.0
LENGTH = 48.0
T0, T1 = 18.0, 58.0
DT_FACTOR = 0.8          # of the explicit diffusion limit h^2 / (6 DV)


def simulate(n: int, frames: int, seed: int) -> dict:
    """Frames: {u, v, reaction: float32 [T, Z, Y, X], times [T]}."""
    import pde
    grid = pde.CartesianGrid([(0.0, LENGTH)] * 3, [n] * 3, periodic=False)
    rng = np.random.default_rng(seed)
    u = pde.ScalarField(grid, A * (1 + 0.01 * rng.standard_normal(grid.shape)), label="u")
    v = pde.ScalarField(grid, B / A * (1 + 0.01 * rng.standard_normal(grid.shape)), label="v")
    eq = pde.PDE({"u": f"{DU} * laplace(u) + {A} - ({B} + 1) * u + u**2 * v",
                  "v": f"{DV} * laplace(v) + {B} * u - u**2 * v"},
                 bc={"derivative": 0})
    state = pde.FieldCollection([u, v])
    limit = DT_FACTOR * (LENGTH / n) ** 2 / (6 * DV)
    times, (us, vs) = evolve(eq, state, frames, T0, T1, limit)
    return {"u": us.astype(np.float32), "v": vs.astype(np.float32),
            "reaction": (us * us * vs).astype(np.float32), "times": times,
            "spacing": np.asarray(LENGTH / n),
            "solver": np.asarray(f"py-pde {pde.__version__}"),
            "parameters": np.asarray(f"Brusselator A {A}, B {B}, DU {DU}, DV {DV}, box "
                                     f"[0, {LENGTH}]^3, times {T0} ... {T1}, seed {seed}")}


if __name__ == "__main__":
    main(__doc__, simulate, 49, 21)
