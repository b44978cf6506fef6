"""``gray_scott``: reaction-diffusion spots that divide and spread (Gray-Scott, the
"mitosis" regime). A few seeds grow into spots; each spot swells, splits in two, and the
daughters push apart and split again, so a front of dividing spots spreads until the box is
full. Features move, appear (a split) and change shape: no flow carries them.

Physics (Pearson 1993), in the model's own units:
  du/dt = Du lap u - u v^2 + F (1 - u)
  dv/dt = Dv lap v + u v^2 - (F + k) v
with Du = 0.16, Dv = 0.08, F = 0.0367, k = 0.0649; zero-flux walls, explicit Euler with the
7-point Laplacian (time step 0.75 h^2, at most 1.5: at spacing 1 the 3D limit of Du = 0.16
with dt = 1 lets a checkerboard grow where v is large). Initial condition: v = 0 but for
two flat-topped, elongated seeds (peak 0.25, radii 3.5-5) at random places; u = 1 - 2 v.

Variables: ``u`` (the substrate: smooth, high outside the spots), ``v`` (the activator:
compact spots), ``reaction`` = u v^2 (derived: sharper, peaks on the spots' rims).
Box [0, 48]^3 (spacing 0.75 at 65 points; spots ~8 across), times 300 ... 3300 (the first
300 form the spots): at the default 65^3 x 25 steps a step is 125 time units; the colony
fills about a third of the box by the end, spots moving less as it fills. The pattern
needs a spacing of at most ~1.5 (33 points); it is simulated on the grid asked for, so a
33^3 series is another realization of the same process, not the 65^3 one subsampled.
"""
from __future__ import annotations

import numpy as np

from .grid import Box, advance, laplacian

DU, DV, F, K = 0.16, 0.08, 0.0367, 0.0649
LENGTH = 48.0
T_START, T_END = 300.0, 3300.0
DT_AT_H1 = 0.75          # time step at spacing 1; scales with h^2, at most 1.5 (reaction)
SEEDS = 2


def initial_condition(box: Box, rng: np.random.Generator):
    """(u, v) [Z, Y, X] float32: elongated, flat-topped seeds of v in a field of u = 1."""
    z, y, x = box.axes()
    v = np.zeros((box.n,) * 3)
    for _ in range(SEEDS):
        c = rng.uniform(0.25, 0.75, 3) * LENGTH
        radii = rng.uniform(3.5, 5.0, 3)
        r2 = ((x - c[0]) / radii[0]) ** 2 + ((y - c[1]) / radii[1]) ** 2 + \
             ((z - c[2]) / radii[2]) ** 2
        v = np.maximum(v, 0.25 * np.exp(-r2 * r2))          # flat-topped
    return (1.0 - 2.0 * v).astype(np.float32), v.astype(np.float32)


def generate(n: int, steps: int, seed: int):
    """(times [T], {variable: float32 [T, Z, Y, X]}, origin, spacing)."""
    rng = np.random.default_rng([seed, 4])
    box = Box(n, LENGTH)
    dt_max = min(1.5, DT_AT_H1 * box.h ** 2)
    u, v = initial_condition(box, rng)
    lu, lv = np.empty_like(u), np.empty_like(v)

    def step(dt: float) -> None:                        # u, v updated in place
        laplacian(u, box.h, lu)
        laplacian(v, box.h, lv)
        uvv = u * v * v
        du = DU * lu - uvv + F * (1 - u)
        dv = DV * lv + uvv - (F + K) * v
        np.add(u, np.float32(dt) * du, out=u)
        np.add(v, np.float32(dt) * dv, out=v)

    times = np.linspace(T_START, T_END, steps)
    frames = [{"u": u.copy(), "v": v.copy(), "reaction": u * v * v}
              for _ in advance(times, dt_max, step)]
    variables = {k: np.stack([f[k] for f in frames]) for k in frames[0]}
    return times, variables, (0.0, 0.0, 0.0), (box.h,) * 3
