"""``shear``: a shear layer rolling up (Kelvin-Helmholtz-like). Above the layer the fluid
streams one way, below it the other; a growing wave on the interface winds it into billows
that travel slowly along the stream while the layers slide past each other.

Kinematics (an analytic, divergence-free velocity: no solver), box [0, 1]^3, periodic in x:
  u = Uc + U tanh((y - 1/2) / delta) + d psi/dy,   v = -d psi/dx,   w = 0
  psi = A(t) U / k sech((y - 1/2) / delta_p) cos(k (x - Uc t) - phi(z)) (1 + m cos(2 pi z + z0))
with U = 1, Uc = 0.5 (top +1.5, bottom -0.5), delta = 0.05, delta_p = 0.1, two billows
across the box (k = 4 pi), the billows' phase phi(z) bent along z, and an amplitude A(t)
growing exponentially from 0.02 and saturating at 0.5 (a logistic in time). The carried fields are
not diffused: each step's departure points (where the fluid at every grid point came from
at t = 0) are the last step's, interpolated (cubic splines, scipy map_coordinates) at the
points found by tracing the velocity back over one step (RK4, 4 sub-steps); the initial
fields are then evaluated exactly at the departure points (a characteristic map, so sharp
interfaces stay sharp).

Variables:
  ``scalar``     a passive dye, 0 below the layer, 1 above, with a sharp interface
                 (tanh, width 0.02) that carries small random ripples (the seed)
  ``vorticity``  a vorticity-like tracer, the base layer's U/delta sech^2 carried along
                 (smooth)
  ``mixing``     4 scalar (1 - scalar): peaks on the wound-up interface (derived)
  ``vertical_velocity``  v at that time (analytic, smooth, signed: the billows' signature)
Times 0 ... 1.2: at the default 65^3 x 25 steps the outer fluid moves 1.6 (bottom) and 4.8
(top) cells per step, the billows 1.6.
"""
from __future__ import annotations

from typing import Dict, Tuple

import numpy as np

from .carried import Points, grid_points, trace_back, update_map
from .grid import Box

U, UC = 1.0, 0.5
DELTA, DELTA_P = 0.05, 0.1       # layer half-thickness; the wave's reach in y
K = 4 * np.pi                    # two billows across the periodic box
A0, A_MAX, GROWTH = 0.02, 0.5, 6.0
Z_MOD = 0.3                      # amplitude modulation along z
SCALAR_WIDTH = 0.02
T_END = 1.2
SUBSTEPS = 4


class Flow:
    """The analytic velocity of one seed."""

    def __init__(self, rng: np.random.Generator):
        self.z0 = rng.uniform(0, 2 * np.pi)
        self.bend = rng.uniform(0.4, 0.8)           # phase shift of the billows along z
        self.bend_phase = rng.uniform(0, 2 * np.pi)
        self.x0 = rng.uniform(0, 1)

    def amplitude(self, t: float) -> float:
        e = np.exp(GROWTH * t)
        return A0 * e / (1 + A0 * (e - 1) / A_MAX)

    def velocity(self, p: Points, t: float) -> Tuple[np.ndarray, np.ndarray, None]:
        """(u, v, w = None: zero) at points p = (x, y, z) (broadcastable) at time t."""
        x, y, z = p
        eta = (y - 0.5) / DELTA_P
        sech = 1.0 / np.cosh(eta)
        phase = K * (x - self.x0 - UC * t) - self.bend * np.sin(2 * np.pi * z + self.bend_phase)
        mod = 1 + Z_MOD * np.cos(2 * np.pi * z + self.z0)
        a = self.amplitude(t) * U * mod
        u = UC + U * np.tanh((y - 0.5) / DELTA) + a / K * (-np.tanh(eta) * sech / DELTA_P) \
            * np.cos(phase)
        v = a * sech * np.sin(phase)
        return u, v, None


def initial_fields(x0: np.ndarray, y0: np.ndarray, z: np.ndarray, ripples) -> Dict[str, np.ndarray]:
    """The carried fields as they were at t = 0, evaluated at the departure points."""
    face = 0.5
    for kx, kz, amp, ph in ripples:
        face = face + amp * np.cos(2 * np.pi * (kx * x0 + kz * z) + ph)
    scalar = 0.5 * (1 + np.tanh((y0 - face) / SCALAR_WIDTH))
    vorticity = (U / DELTA) / np.cosh((y0 - 0.5) / DELTA) ** 2
    return {"scalar": scalar, "vorticity": vorticity}


def generate(n: int, steps: int, seed: int):
    """(times [T], {variable: float32 [T, Z, Y, X]}, origin, spacing)."""
    rng = np.random.default_rng([seed, 3])
    flow = Flow(rng)
    ripples = [(int(rng.integers(1, 6)), int(rng.integers(0, 3)), rng.uniform(0.002, 0.006),
                rng.uniform(0, 2 * np.pi)) for _ in range(4)]
    box = Box(n)
    grid = grid_points(box)
    dep = grid                                      # departure points at t = 0
    times = np.linspace(0.0, T_END, steps)
    frames = []
    for i, t in enumerate(times):
        if i:
            traced = trace_back(flow.velocity, grid, t, times[i - 1], SUBSTEPS)
            dep = update_map(dep, traced, box, periodic_x=True, still=(False, False, True))
        fields = initial_fields(dep[0], dep[1], grid[2], ripples)
        v = flow.velocity(grid, t)[1]
        fields["mixing"] = 4 * fields["scalar"] * (1 - fields["scalar"])
        fields["vertical_velocity"] = v
        frames.append({k: fields[k] for k in ("scalar", "vorticity", "mixing",
                                              "vertical_velocity")})
    variables = {k: np.stack([f[k] for f in frames]).astype(np.float32) for k in frames[0]}
    return times, variables, (0.0, 0.0, 0.0), (box.h,) * 3
