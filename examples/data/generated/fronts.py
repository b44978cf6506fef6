"""``fronts``: flame-like fronts that propagate THROUGH a medium (nothing carries them), as
in premixed combustion. A few ignition points light up one after another; each front runs
outward at the local speed of a heterogeneous medium, so the fronts wrinkle, speed up and
slow down, meet and merge (the arrival time is the minimum over the ignitions).

Physics: the arrival time T(x) solves the eikonal equation |grad T| F(x) = 1 with T = t_i at
ignition point p_i; F = F0 exp(0.35 g(x)), g a smooth random field of unit RMS (wave
lengths 1/3 to 1 of the box). Solved with a first-order Godunov upwind scheme, iterated in
whole-grid (Jacobi) sweeps until nothing changes. Then at time t, with the front's
half-width w = delta / F(x) in time (delta in space, the same everywhere):
  ``progress``      0.5 (1 + tanh((t - T) / w))            0 ahead of the front, 1 behind
  ``heat_release``  F/F0 sech^2((t - T) / w)               a thin sheet at the front
  ``temperature``   progress (theta_b + (1 - theta_b) exp(-(t - T)_+ / tau))
                    peaks at the front, relaxes to theta_b behind it (smooth tail).
Box [0, 1]^3, times 0 ... 1. At the default 65^3 x 25 steps a front moves ~2 cells per step
(F0 = 0.75 box lengths per unit time; 1-4 cells where the medium is slow or fast).
"""
from __future__ import annotations

from typing import Dict

import numpy as np

from .grid import Box, random_modes, smooth_field

F0 = 0.75            # mean front speed, box lengths per unit time
CONTRAST = 0.35       # ln F varies by CONTRAST x a unit-RMS smooth field
DELTA = 0.02          # front half-width in space (1.3 cells at 65^3)
TAU = 0.12            # cooling time behind the front
THETA_BURNT = 0.35    # temperature far behind the front
IGNITIONS = 4         # ignition points, lit at times spread over the first 40 %
T_END = 1.0
_UNREACHED = 1e6      # arrival time of points no front has reached yet (finite: no NaN)


def speed_field(box: Box, rng: np.random.Generator) -> np.ndarray:
    """F(x) [Z, Y, X] float64: the medium's front speed."""
    g = smooth_field(box, random_modes(rng, 16, 1.0, 3.0))
    return F0 * np.exp(CONTRAST * g)


def _godunov_update(t: np.ndarray, h_over_f: np.ndarray) -> np.ndarray:
    """One Jacobi sweep of the first-order upwind eikonal update at every point: the
    smallest T consistent with the smaller neighbour along each axis (zero-flux borders)."""
    p = np.pad(t, 1, mode="edge")
    a = np.minimum(p[:-2, 1:-1, 1:-1], p[2:, 1:-1, 1:-1])
    b = np.minimum(p[1:-1, :-2, 1:-1], p[1:-1, 2:, 1:-1])
    c = np.minimum(p[1:-1, 1:-1, :-2], p[1:-1, 1:-1, 2:])
    lo = np.minimum(np.minimum(a, b), c)
    hi = np.maximum(np.maximum(a, b), c)
    mid = a + b + c - lo - hi
    out = lo + h_over_f                                        # one axis upwind
    two = out > mid
    if two.any():
        d = lo - mid
        s2 = 0.5 * (lo + mid + np.sqrt(np.maximum(2 * h_over_f ** 2 - d * d, 0.0)))
        out = np.where(two, s2, out)
        three = two & (out > hi)
        if three.any():
            s = lo + mid + hi
            q = lo * lo + mid * mid + hi * hi - h_over_f ** 2
            s3 = (s + np.sqrt(np.maximum(s * s - 3 * q, 0.0))) / 3.0
            out = np.where(three, s3, out)
    return out


def arrival_time(box: Box, speed: np.ndarray, points: np.ndarray, times: np.ndarray,
                 tol: float = 1e-9) -> np.ndarray:
    """T(x) [Z, Y, X] float64: first arrival of a front lit at ``points`` [P, 3] (x, y, z)
    at ``times`` [P], through a medium of front speed ``speed``."""
    z, y, x = box.axes()
    t = np.full(speed.shape, _UNREACHED)
    seed_radius = 2.5 * box.h                     # exact (straight-line) times near a source
    for (px, py, pz), t0 in zip(points, times):
        r = np.sqrt((x - px) ** 2 + (y - py) ** 2 + (z - pz) ** 2)
        f0 = speed[tuple(np.clip(np.rint(np.array([pz, py, px]) / box.h).astype(int), 0,
                                 box.n - 1))]
        t = np.where(r <= seed_radius, np.minimum(t, t0 + r / f0), t)
    h_over_f = box.h / speed
    for _ in range(20 * box.n):                   # converges in ~3n sweeps
        new = np.minimum(t, _godunov_update(t, h_over_f))
        if np.max(t - new) < tol:
            return new
        t = new
    raise RuntimeError("eikonal sweeps did not converge")


def fields_at(t: float, arrival: np.ndarray, speed: np.ndarray) -> Dict[str, np.ndarray]:
    """The three variables at time ``t`` [Z, Y, X] float32."""
    w = DELTA / speed
    s = (t - arrival) / w
    progress = 0.5 * (1.0 + np.tanh(s))
    heat = (speed / F0) / np.cosh(np.clip(s, -50, 50)) ** 2
    behind = np.maximum(t - arrival, 0.0)
    temperature = progress * (THETA_BURNT + (1 - THETA_BURNT) * np.exp(-behind / TAU))
    return {"progress": progress.astype(np.float32),
            "heat_release": heat.astype(np.float32),
            "temperature": temperature.astype(np.float32)}


def generate(n: int, steps: int, seed: int):
    """(times [T], {variable: float32 [T, Z, Y, X]}, origin, spacing)."""
    rng = np.random.default_rng([seed, 1])
    box = Box(n)
    speed = speed_field(box, rng)
    points = rng.uniform(0.15, 0.85, (IGNITIONS, 3))
    lit = np.sort(np.concatenate([[0.0], rng.uniform(0.05, 0.4, IGNITIONS - 1)]))
    arrival = arrival_time(box, speed, points, lit)
    times = np.linspace(0.0, T_END, steps)
    frames = [fields_at(t, arrival, speed) for t in times]
    variables = {k: np.stack([f[k] for f in frames]) for k in frames[0]}
    return times, variables, (0.0, 0.0, 0.0), (box.h,) * 3
