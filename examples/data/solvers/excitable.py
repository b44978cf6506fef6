"""``excitable``: fronts in an excitable medium, simulated with py-pde (PyPI ``py-pde``,
Zwicker's finite-difference PDE package; its right-hand side is compiled with numba).

Physics: the FitzHugh-Nagumo model,
  du/dt = D lap u + u - u^3 / 3 - v          the fast, excitable variable (sharp fronts)
  dv/dt = EPS (u + BETA - GAMMA v)            the slow recovery variable (smooth)
with D = 1, EPS = 0.08, BETA = 0.7, GAMMA = 0.8 (excitable: one stable rest state; a
large enough kick sends a pulse out), zero-flux (Neumann) walls, box [0, 60]^3, cell-centred
grid, py-pde's explicit Euler stepper at 0.8 of diffusion's stability limit (at most 0.05). Initial condition: the
rest state plus, from ``seed``, a planar wave entering from x = 0 that is broken along half
its height (a refractory block behind it: its free edge curls into a scroll wave) and three
spherical kicks fired at once: fronts that expand, curl, meet and annihilate.

Variables: ``u`` (the fronts: pulses ~2 units wide, sharp on a coarse grid), ``v``
(recovery, smooth) and ``reaction`` = u - u^3 / 3 - v (derived: thin sheets at the fronts).
Frames at times T0 ... T1; the 49^3 series of the benchmark is this one at every 2nd point.

    .venv-data/bin/python -m examples.data.solvers.excitable --out excitable.npz [--n 97 ...]
"""
from __future__ import annotations

import numpy as np

from .pde_run import evolve, main

D, EPS, BETA, GAMMA = 1.0, 0.08, 0.7, 0.8
LENGTH = 60.0
T0, T1 = 4.0, 40.0
DT_FACTOR = 0.8          # of the explicit diffusion limit h^2 / (6 D)


def rest_state() -> tuple:
    """(u, v) of the resting medium: the real root of u - u^3/3 - (u + BETA)/GAMMA = 0."""
    roots = np.roots([-1.0 / 3.0, 0.0, 1.0 - 1.0 / GAMMA, -BETA / GAMMA])
    u = float(roots[np.argmin(np.abs(roots.imag))].real)
    return u, (u + BETA) / GAMMA


def initial_condition(n: int, seed: int) -> tuple:
    """(u, v) [X, Y, Z] on the cell centres of an n^3 grid."""
    rng = np.random.default_rng(seed)
    h = LENGTH / n
    x, y, z = np.meshgrid(*(3 * [(np.arange(n) + 0.5) * h]), indexing="ij")
    u0, v0 = rest_state()
    u = np.full((n, n, n), u0)
    v = np.full((n, n, n), v0)
    cut = LENGTH * rng.uniform(0.4, 0.6)
    wave = (x < 4.0) & (z < cut)
    u[wave] = 1.8
    v[(x >= 4.0) & (x < 12.0) & (z < cut)] = 1.2          # refractory behind: a free edge
    for _ in range(3):
        c = rng.uniform(0.3, 0.85, 3) * LENGTH
        r = rng.uniform(3.0, 5.0)
        u[(x - c[0]) ** 2 + (y - c[1]) ** 2 + (z - c[2]) ** 2 < r * r] = 1.8
    return u, v


def simulate(n: int, frames: int, seed: int) -> dict:
    """Frames: {u, v, reaction: float32 [T, Z, Y, X], times [T]}."""
    import pde
    grid = pde.CartesianGrid([(0.0, LENGTH)] * 3, [n] * 3, periodic=False)
    u0, v0 = initial_condition(n, seed)
    state = pde.FieldCollection([pde.ScalarField(grid, u0, label="u"),
                                 pde.ScalarField(grid, v0, label="v")])
    eq = pde.PDE({"u": f"{D} * laplace(u) + u - u**3 / 3 - v",
                  "v": f"{EPS} * (u + {BETA} - {GAMMA} * v)"}, bc={"derivative": 0})
    limit = min(DT_FACTOR * (LENGTH / n) ** 2 / (6 * D), 0.05)   # 0.05: the reaction's
    times, (us, vs) = evolve(eq, state, frames, T0, T1, limit)
    return {"u": us.astype(np.float32), "v": vs.astype(np.float32),
            "reaction": (us - us ** 3 / 3 - vs).astype(np.float32), "times": times,
            "spacing": np.asarray(LENGTH / n),
            "solver": np.asarray(f"py-pde {pde.__version__}"),
            "parameters": np.asarray(f"FitzHugh-Nagumo D {D}, EPS {EPS}, BETA {BETA}, GAMMA "
                                     f"{GAMMA}, box [0, {LENGTH}]^3, times {T0} ... {T1}, "
                                     f"seed {seed}")}


if __name__ == "__main__":
    main(__doc__, simulate, 97, 25)
