"""Training fields for the spatial prior (issue 30; stsr_core/model/space_prior.py): generic
procedural fields, each one analytic function of position, so that the full-resolution
truth of any coarse grid is known exactly. They are deliberately not solutions of any PDE:
the benchmark's series (reaction-diffusion, excitable-medium fronts, a fluid plume, a bluff
body's wake, the shipped tornado / plume / Taylor-Green, examples/data/generated's fronts,
spiral, shear and gray_scott) are never a kind trained on, so the benchmark judges the prior
on kinds it never saw.

A sample is one variable of one kept step on the unit box: a primary kind (below), at times
summed or multiplied with a second and a third, at times passed through a saturation or an
absolute value; feature sizes are drawn in cells of the coarse grid (from a fifth of a cell
to tens of cells), so the same sample teaches sharp and smooth. ``sample(seed)`` gives the
field on the fine lattice ((n - 1) * 2 + 1 points per axis for n coarse points; the coarse
grid is every other point).

    python -m examples.data.space_families --list        # the kinds, as a table
    python -m examples.data.space_families --list --json # the same, JSON
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Callable, Dict, List, Tuple

import numpy as np

# name -> what it is (printed beside the benchmark's kinds); the draw weight is in WEIGHTS
KINDS: Dict[str, str] = {
    "smooth": "smooth random fields (a few Fourier modes, 6-30 coarse cells per wavelength, "
              "steep spectrum): the spline is already near exact, the prior must add nothing",
    "spectrum": "turbulence-like random fields: many Fourier modes with a k^-5/3 energy "
                "spectrum cut off between 1/8 and 1.4x the coarse grid's Nyquist frequency",
    "fronts": "tanh fronts across the level sets of a smooth random field, 0.15-4 coarse "
              "cells thick, on a smooth background or saturated to plateaus",
    "shocks": "piecewise-smooth fields: smooth fields jumping across one or two curved "
              "surfaces (0.05-0.5 coarse cells wide), and sawtooth ramps with jumps",
    "kinks": "continuous fields with kinks: |g|, max(g1, g2), clipped fields (like the "
             "magnitude of a vector through zero)",
    "spots": "Gaussian and flat-topped spots and rings, 0.4-6 coarse cells across, 5-80 of "
             "them, of one sign or both",
    "vortices": "straight Lamb-Oseen and Rankine vortex tubes in random directions: a "
                "velocity component, the speed or the swirl magnitude, cores 0.5-6 cells",
    "layers": "boundary layers at box faces or a curved internal wall: 1 - exp(-d / delta) "
              "or tanh(d / delta), delta 0.3-6 coarse cells, modulated along the wall",
    "noise": "white noise alone or on a smooth field (nothing to predict between points)",
}
WEIGHTS: Dict[str, float] = {"smooth": 1.5, "spectrum": 1.0, "fronts": 1.5, "shocks": 1.0,
                             "kinks": 1.0, "spots": 1.0, "vortices": 1.0, "layers": 1.0,
                             "noise": 0.3}
COARSE_N = 33               # coarse points per axis of a training sample (fine: 65)

Points = Tuple[np.ndarray, np.ndarray, np.ndarray]


def fine_points(n_coarse: int) -> Points:
    """Broadcastable z, y, x coordinates on [0, 1] of the fine lattice (2 n - 1 points)."""
    c = np.linspace(0.0, 1.0, 2 * (n_coarse - 1) + 1)
    return c[:, None, None], c[None, :, None], c[None, None, :]


def _unit(rng: np.random.Generator, count: int = 1) -> np.ndarray:
    v = rng.standard_normal((count, 3))
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _modes(rng: np.random.Generator, p: Points, count: int, k_lo: float, k_hi: float,
           power: float) -> np.ndarray:
    """A random sum of ``count`` cosines, |k| log-uniform in [k_lo, k_hi] cycles per box,
    amplitude |k|^-power, normalised to unit RMS."""
    z, y, x = p
    k = _unit(rng, count) * np.exp(rng.uniform(np.log(k_lo), np.log(k_hi), (count, 1)))
    amp = np.linalg.norm(k, axis=1) ** -power
    phase = rng.uniform(0, 2 * np.pi, count)
    out = np.zeros(np.broadcast_shapes(z.shape, y.shape, x.shape))
    for (kx, ky, kz), a, ph in zip(k, amp, phase):
        out += a * np.cos(2 * np.pi * (kx * x + ky * y + kz * z) + ph)
    return out / np.sqrt(0.5 * np.sum(amp ** 2))


def _smooth(rng, p, h):
    """Wavelengths of 6-30 coarse cells: the cubic spline is near exact."""
    cells = rng.uniform(6, 30)
    return _modes(rng, p, int(rng.integers(2, 8)), 0.5, max(0.6, 1 / (cells * h)), 3.0)


def _spectrum(rng, p, h):
    nyquist = 0.5 / h
    cut = nyquist * np.exp(rng.uniform(np.log(1 / 8), np.log(1.4)))
    return _modes(rng, p, 96, 1.0, max(1.5, cut), 11 / 6 - 0.5)  # log-uniform draw: +1/2


def _gradient_scale(k_hi: float) -> float:
    """About |grad g| of a unit-RMS mode sum up to k_hi (per box length)."""
    return 2 * np.pi * 0.6 * k_hi


def _fronts(rng, p, h):
    k_hi = rng.uniform(1.0, 3.5)
    g = _modes(rng, p, 8, 0.5, k_hi, 1.0)
    thick = np.exp(rng.uniform(np.log(0.15), np.log(4.0))) * h    # box lengths
    w = thick * _gradient_scale(k_hi)
    f = np.tanh((g - rng.uniform(-0.6, 0.6)) / w)
    if rng.random() < 0.5:                       # a progress variable: plateaus 0 and 1
        return 0.5 * (1 + f)
    return f + rng.uniform(0, 0.5) * _smooth(rng, p, h)


def _step(s: np.ndarray, width: float) -> np.ndarray:
    return 0.5 * (1 + np.tanh(s / max(width, 1e-9)))


def _shocks(rng, p, h):
    if rng.random() < 0.35:                      # sawtooth: ramps with jumps
        k_hi = rng.uniform(0.8, 2.0)
        s = rng.uniform(2, 6) * _modes(rng, p, 4, 0.5, k_hi, 1.0)
        u = s - np.floor(s)                      # jumps at integers
        width = rng.uniform(0.05, 0.5) * h * _gradient_scale(k_hi) * 4
        return u - _step(u - 1.0, width) + _step(-u, width)
    out = _smooth(rng, p, h)
    for _ in range(int(rng.integers(1, 3))):
        k_hi = rng.uniform(0.8, 3.0)
        g = _modes(rng, p, 6, 0.5, k_hi, 1.0)
        width = rng.uniform(0.05, 0.5) * h * _gradient_scale(k_hi)
        jump = rng.uniform(0.5, 2.0) * rng.choice([-1, 1]) + 0.5 * _smooth(rng, p, h)
        out = out + jump * _step(g - rng.uniform(-0.5, 0.5), width)
    return out


def _kinks(rng, p, h):
    g = _modes(rng, p, 8, 0.5, rng.uniform(1.0, 4.0), 1.0)
    pick = rng.integers(3)
    if pick == 0:
        return np.abs(g - rng.uniform(-0.5, 0.5))
    if pick == 1:
        return np.maximum(g, _modes(rng, p, 8, 0.5, rng.uniform(1.0, 4.0), 1.0))
    lo, hi = sorted(rng.uniform(-1.2, 1.2, 2))
    return np.clip(g, lo, hi + 0.1)


def _spots(rng, p, h):
    z, y, x = p
    count = int(rng.integers(5, 81))
    out = np.zeros(np.broadcast_shapes(z.shape, y.shape, x.shape))
    power = rng.choice([2.0, 4.0, 8.0])          # Gaussian to flat-topped
    same_sign = rng.random() < 0.6
    ring = rng.random() < 0.2
    for _ in range(count):
        c = rng.uniform(-0.05, 1.05, 3)
        sigma = np.exp(rng.uniform(np.log(0.2), np.log(3.0))) * h * rng.uniform(0.7, 1.4, 3)
        r = np.sqrt(((x - c[0]) / sigma[0]) ** 2 + ((y - c[1]) / sigma[1]) ** 2
                    + ((z - c[2]) / sigma[2]) ** 2)
        if ring:
            r = np.abs(r - rng.uniform(1.0, 3.0))
        a = rng.uniform(0.3, 1.0) * (1 if same_sign else rng.choice([-1, 1]))
        out += a * np.exp(-r ** power)
    return out


def _vortices(rng, p, h):
    z, y, x = p
    pts = np.stack(np.broadcast_arrays(x, y, z), axis=-1)               # [..., 3]
    vel = np.zeros(pts.shape)
    for _ in range(int(rng.integers(1, 6))):
        axis = _unit(rng)[0]
        centre = rng.uniform(0.1, 0.9, 3)
        core = np.exp(rng.uniform(np.log(0.5), np.log(6.0))) * h
        d = pts - centre
        d = d - (d @ axis)[..., None] * axis                           # radial vector
        r2 = np.sum(d * d, axis=-1) + 1e-12
        if rng.random() < 0.5:                   # Lamb-Oseen
            speed = (1 - np.exp(-r2 / core ** 2)) / np.sqrt(r2)
        else:                                    # Rankine: a kink at the core's edge
            r = np.sqrt(r2)
            speed = np.where(r < core, r / core ** 2, 1 / r)
        speed = speed * core * rng.uniform(0.5, 1.5) * rng.choice([-1, 1])
        vel += speed[..., None] * np.cross(axis, d / np.sqrt(r2)[..., None])
    vel += rng.uniform(-0.5, 0.5, 3) * rng.random()                   # a mean flow
    pick = rng.integers(3)
    if pick == 0:
        return vel[..., rng.integers(3)]
    if pick == 1:
        return np.linalg.norm(vel, axis=-1)
    u = _unit(rng)[0]                            # the swirl about a random direction
    return np.linalg.norm(vel - (vel @ u)[..., None] * u, axis=-1)


def _layers(rng, p, h):
    z, y, x = p
    coords = np.broadcast_arrays(x, y, z)
    if rng.random() < 0.7:                       # at one or two faces of the box
        d = np.full(coords[0].shape, np.inf)
        for _ in range(int(rng.integers(1, 3))):
            axis, side = rng.integers(3), rng.integers(2)
            d = np.minimum(d, coords[axis] if side == 0 else 1 - coords[axis])
    else:                                        # a curved internal wall (one side only)
        g = _modes(rng, p, 4, 0.5, 1.5, 1.0)
        d = np.maximum(g - rng.uniform(-0.5, 0.5), 0) / _gradient_scale(1.5)
    delta = np.exp(rng.uniform(np.log(0.3), np.log(6.0))) * h
    delta = delta * (1 + 0.4 * _smooth(rng, p, h))
    delta = np.maximum(delta, 0.1 * h)
    shape = 1 - np.exp(-d / delta) if rng.random() < 0.5 else np.tanh(d / delta)
    return shape * (1 + 0.3 * _smooth(rng, p, h))


def _noise(rng, p, h):
    shape = np.broadcast_shapes(*(a.shape for a in p))
    white = rng.standard_normal(shape)
    if rng.random() < 0.5:
        return white
    return _smooth(rng, p, h) + rng.uniform(0.01, 0.3) * white


MAKERS: Dict[str, Callable] = {"smooth": _smooth, "spectrum": _spectrum, "fronts": _fronts,
                               "shocks": _shocks, "kinks": _kinks, "spots": _spots,
                               "vortices": _vortices, "layers": _layers, "noise": _noise}


def sample(seed: int, n_coarse: int = COARSE_N) -> Tuple[np.ndarray, List[str]]:
    """Sample ``seed``: the field on the fine lattice, float32 [2n-1]^3 (the coarse grid is
    every other point), and the kinds it was made of."""
    rng = np.random.default_rng([seed, 30])
    names = list(KINDS)
    prob = np.array([WEIGHTS[k] for k in names])
    prob = prob / prob.sum()
    p = fine_points(n_coarse)
    h = 1.0 / (n_coarse - 1)
    first = names[rng.choice(len(names), p=prob)]
    kinds = [first]
    f = MAKERS[first](rng, p, h)
    if first != "noise" and rng.random() < 0.35:           # mixtures
        for _ in range(int(rng.integers(1, 3))):
            k = names[rng.choice(len(names) - 1, p=prob[:-1] / prob[:-1].sum())]
            g = MAKERS[k](rng, p, h)
            g = g / (np.std(g) + 1e-12) * np.std(f) * rng.uniform(0.2, 1.0)
            f = f * (1 + 0.5 * g / (np.abs(g).max() + 1e-12)) if rng.random() < 0.3 else f + g
            kinds.append(k)
    if first != "noise" and rng.random() < 0.1:
        f = np.abs(f) if rng.random() < 0.5 else np.exp(f / (np.std(f) + 1e-12))
        kinds.append("abs-or-exp")
    f = np.broadcast_to(f, (2 * (n_coarse - 1) + 1,) * 3)
    return np.ascontiguousarray(f, dtype=np.float32), kinds


def kinds_table() -> str:
    """The kinds as a Markdown table (the benchmark prints it beside its own)."""
    rows = ["| training kind (spatial prior) | what |", "|---|---|"]
    rows += [f"| `{k}` | {v} |" for k, v in KINDS.items()]
    return "\n".join(rows)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m examples.data.space_families",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--list", action="store_true", help="print the kinds")
    p.add_argument("--json", action="store_true", help="as JSON")
    a = p.parse_args(argv)
    if a.json:
        print(json.dumps({"kinds": KINDS, "weights": WEIGHTS, "coarse_n": COARSE_N},
                         indent=1))
    else:
        print(kinds_table())
    return 0


if __name__ == "__main__":
    sys.exit(main())
