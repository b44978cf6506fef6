"""``spiral``: a scroll ring in an excitable medium (Barkley's model): a spiral wave in every
plane through the ring's axis, rotating about the ring (the filament) while the ring
shrinks and drifts; the waves run out to the walls. Features rotate and spiral: no flow
carries them, and the spiral's tip turns about a small core.

Physics (Barkley 1991), in the model's own units (diffusion 1):
  du/dt = lap u + u (1 - u) (u - (v + b) / a) / eps        the fast, excitable variable
  dv/dt = u - v                                             the slow recovery variable
with a = 0.75, b = 0.06, eps = 0.02 (rigidly rotating spirals, period ~5.1, wave length ~15),
zero-flux walls, explicit 7-point diffusion and Barkley's semi-implicit reaction step.
Initial condition: in the (rho, zeta) half-plane around a slightly tilted, off-centre, oval
ring of radius ~8 (+-10-20 %) (rho: distance from the ring, outwards; zeta: along its axis),
an excited band above zeta = 0 and a refractory region below it; its free edge (the ring)
curls into a spiral in every half-plane. The first 4 time units are left out (the wave forms).

Variables: ``u`` (sharp fronts, 0..1), ``v`` (smooth, lagging), ``excitation`` = the reaction
term u (1 - u) (u - (v + b) / a) / eps (a thin signed sheet at the wave fronts, derived).
Box [0, 32]^3 (the model's lengths), times 4 ... 11.2: at the default 65^3 x 25 steps the
waves move ~7 cells per 4 steps, a quarter of a wave length (one turn of the spiral in ~18
steps). The model needs a spacing of at most 0.5 (65 points): smaller n are simulated at 65
(or finer) and subsampled.
"""
from __future__ import annotations

import numpy as np

from .grid import Box, advance, laplacian

A, B, EPS = 0.75, 0.06, 0.02
LENGTH = 32.0           # box side, model units
H_MAX = 0.5             # coarsest spacing the model is resolved on
T_START, T_END = 4.0, 11.2
DT_FACTOR = 0.8         # of the explicit diffusion limit h^2 / 6


def initial_condition(box: Box, rng: np.random.Generator):
    """(u, v) [Z, Y, X] float64: a broken wave whose free edge is a tilted ring."""
    z, y, x = box.axes()
    centre = LENGTH * (0.5 + rng.uniform(-0.05, 0.05, 3))            # x, y, z
    tilt = rng.uniform(0.1, 0.25) * np.array([np.cos(a := rng.uniform(0, 2 * np.pi)),
                                               np.sin(a)])
    radius = LENGTH * rng.uniform(0.23, 0.27)
    dx, dy = x - centre[0], y - centre[1]
    zeta = z - centre[2] - tilt[0] * dx - tilt[1] * dy                # along the (tilted) axis
    angle = np.arctan2(dy, dx)
    oval = 1 + rng.uniform(0.1, 0.2) * np.cos(2 * (angle - rng.uniform(0, np.pi)))
    rho = np.sqrt(dx * dx + dy * dy) - radius * oval                  # from the ring, outwards
    width = 2.0
    u = 0.5 * (1 + np.tanh(rho / 0.5)) * ((zeta > 0) & (zeta < 2 * width))
    v = (A / 2) * 0.5 * (1 + np.tanh(rho / 0.5)) * ((zeta <= 0) & (zeta > -4 * width))
    return u.astype(np.float64), v.astype(np.float64)


def reaction_step(u: np.ndarray, v: np.ndarray, dt: float) -> np.ndarray:
    """Barkley's semi-implicit update of the reaction term alone (stable for dt >> eps)."""
    uth = (v + B) / A
    r = dt / EPS
    lo = u / (1 - r * (1 - u) * (u - uth))
    hi = (u + r * u * (u - uth)) / (1 + r * u * (u - uth))
    return np.where(u < uth, lo, hi)


def excitation(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return u * (1 - u) * (u - (v + B) / A) / EPS


def generate(n: int, steps: int, seed: int):
    """(times [T], {variable: float32 [T, Z, Y, X]}, origin, spacing)."""
    rng = np.random.default_rng([seed, 2])
    every = int(np.ceil(LENGTH / (n - 1) / H_MAX))        # simulate finer, keep every-th
    sim = Box((n - 1) * every + 1, LENGTH)
    dt_max = DT_FACTOR * sim.h ** 2 / 6
    times = np.linspace(T_START, T_END, steps)
    state = dict(zip("uv", initial_condition(sim, rng)))
    lap = np.empty_like(state["u"])

    def step(dt: float) -> None:
        u, v = state["u"], state["v"]
        laplacian(u, sim.h, lap)
        un = reaction_step(u, v, dt)
        un += dt * lap
        v += dt * (u - v)                               # in place: copied below
        state["u"] = un

    keep = (slice(None, None, every),) * 3
    frames = []
    for _ in advance(times, dt_max, step):
        u, v = state["u"][keep].copy(), state["v"][keep].copy()
        frames.append({"u": u, "v": v, "excitation": excitation(u, v)})
    variables = {k: np.stack([f[k] for f in frames]).astype(np.float32) for k in frames[0]}
    return times, variables, (0.0, 0.0, 0.0), (sim.h * every,) * 3
