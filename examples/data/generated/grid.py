"""The pieces every generator shares: the sampled grid, smooth random fields that are the
same function at any grid size, and the 7-point Laplacian the simulations step with."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator, Sequence, Tuple

import numpy as np


@dataclass(frozen=True)
class Box:
    """n^3 points spanning [0, length]^3 (both ends included, as VTK image data)."""

    n: int
    length: float = 1.0

    @property
    def h(self) -> float:
        """Spacing between points."""
        return self.length / (self.n - 1)

    def axes(self) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Broadcastable z, y, x coordinates ``[Z,1,1], [1,Y,1], [1,1,X]`` (float64)."""
        c = np.linspace(0.0, self.length, self.n)
        return c[:, None, None], c[None, :, None], c[None, None, :]


def random_modes(rng: np.random.Generator, count: int, k_min: float, k_max: float
                 ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``count`` random Fourier modes (wave vectors ``[count, 3]`` in cycles per unit length
    with |k| in [k_min, k_max], amplitudes ~ 1/|k|, phases): a smooth random field that is
    one analytic function, so every grid size samples the same field."""
    direction = rng.standard_normal((count, 3))
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    k = direction * rng.uniform(k_min, k_max, (count, 1))
    amp = 1.0 / np.linalg.norm(k, axis=1)
    phase = rng.uniform(0.0, 2 * np.pi, count)
    return k, amp, phase


def mode_sum(modes: Tuple[np.ndarray, np.ndarray, np.ndarray], x: np.ndarray, y: np.ndarray,
             z: np.ndarray) -> np.ndarray:
    """The sum of ``modes`` at points (x, y, z) (broadcastable), scaled to unit RMS over the
    modes (independent of where it is sampled): float64."""
    k, amp, phase = (np.asarray(v, dtype=np.float64) for v in modes)
    out = 0.0
    for (kx, ky, kz), a, p in zip(k, amp, phase):
        out = out + a * np.cos(2 * np.pi * (kx * x + ky * y + kz * z) + p)
    return out / np.sqrt(0.5 * np.sum(amp ** 2))


def smooth_field(box: Box, modes: Tuple[np.ndarray, np.ndarray, np.ndarray]) -> np.ndarray:
    """:func:`mode_sum` on the box's points: float64 ``[Z, Y, X]``."""
    z, y, x = box.axes()
    return np.broadcast_to(mode_sum(modes, x, y, z), (box.n,) * 3)


def advance(times: Sequence[float], dt_max: float, step: Callable[[float], None],
            start: float = 0.0) -> Iterator[int]:
    """March a simulation from ``start`` through ``times``: ``step(dt)`` as often as needed
    with equal steps of at most ``dt_max`` per gap; yields each output's index on arrival."""
    t = start
    for i, target in enumerate(times):
        m = int(np.ceil((target - t) / dt_max - 1e-9))
        for _ in range(m):
            step((target - t) / m)
        t = target
        yield i


def laplacian(f: np.ndarray, h: float, out: np.ndarray) -> np.ndarray:
    """7-point Laplacian of ``f`` [Z, Y, X] with zero-flux (mirror) borders, into ``out``."""
    p = np.pad(f, 1, mode="edge")                          # [Z+2, Y+2, X+2]
    np.add(p[:-2, 1:-1, 1:-1], p[2:, 1:-1, 1:-1], out=out)
    out += p[1:-1, :-2, 1:-1]
    out += p[1:-1, 2:, 1:-1]
    out += p[1:-1, 1:-1, :-2]
    out += p[1:-1, 1:-1, 2:]
    out -= 6.0 * f
    out *= 1.0 / (h * h)
    return out
