"""A procedural multivariate time-varying field for the scale benchmark (issue 16), of any
size, evaluated analytically at any point and time so that no 4D array is ever held.

Real-size fine series do not fit in memory (the Ionization shape, 597x245x245 x 97 steps x
4 variables, is 56 GB of float32), so this script writes what users have -- the COARSE input
(every s-th point per axis, every k-th step) -- and, for scoring, the fine truth of a few
steps only; :func:`fine_slabs` makes any fine step on demand, one z-slab at a time.

Four variables of different character, all moving:
  ``density``  smooth: six Gaussian blobs on Lissajous paths over a weak background wave;
  ``front``    a sharp tanh front sweeping along x with a wavy face, plus moving kinks
               (``|sin|`` ridges);
  ``speed``    magnitude of a uniform stream plus a drifting, tilted Rankine vortex (a kink
               in the profile at the core radius, 1/r outside);
  ``product``  density x speed.

Domain: y, z in [0, 1], x in [0, (nx-1)/(ny-1)] (cubic cells); field time tau = step /
(steps - 1) in [0, 1]; the files' time values are the fine step indices (coarse: 0, k, 2k..).

    python generate.py --case A|B|growth33|growth65|growth129|quickA|... --out DIR
    python generate.py --fine 257 257 257 --steps 49 --space 2 --time 4 --out DIR

Writes ``DIR/coarse.h5`` (stsr_core.io's HDF5 layout: one dataset per variable [T, Z, Y, X],
attributes times/origin/spacing/variables) and, unless ``--truth-steps none``,
``DIR/truth.h5`` with the fine grid at the listed steps. Deterministic from ``--seed``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict, dataclass
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

VARIABLES = ("density", "front", "speed", "product")


@dataclass(frozen=True)
class Case:
    """A fine grid (nx, ny, nz) x steps, and the coarse input kept from it (every
    ``space``-th point, every ``time``-th step)."""

    fine: Tuple[int, int, int]
    steps: int
    space: int
    time: int
    seed: int = 0

    def __post_init__(self) -> None:
        for n in self.fine:
            if (n - 1) % self.space:
                raise ValueError(f"fine dims {self.fine}: (n-1) must be a multiple of s="
                                 f"{self.space} so the coarse grid keeps the last point")
        if (self.steps - 1) % self.time:
            raise ValueError(f"{self.steps} steps: (steps-1) must be a multiple of k="
                             f"{self.time} so the coarse series keeps the last step")

    @property
    def coarse(self) -> Tuple[int, int, int]:
        return tuple((n - 1) // self.space + 1 for n in self.fine)  # type: ignore[return-value]

    @property
    def coarse_steps(self) -> int:
        return (self.steps - 1) // self.time + 1

    @property
    def spacing(self) -> float:
        """Fine spacing (all axes): y and z span [0, 1]."""
        return 1.0 / (self.fine[1] - 1)

    def truth_steps(self) -> List[int]:
        """A few fine steps to score: one kept, one midway between kept steps, one next to a
        kept step, and the second to last (in-between unless k = 1)."""
        k, mid = self.time, (self.coarse_steps // 2) * self.time
        cand = [mid, min(mid + k // 2, self.steps - 1), 1, self.steps - 2]
        return sorted({c for c in cand if 0 <= c < self.steps})


def _coarse_of(fine: Sequence[int], s: int) -> Tuple[int, int, int]:
    return tuple((n - 1) * s + 1 for n in fine)  # type: ignore[return-value]


# The benchmark's cases (issue 16). quick*/tiny*: small smoke-run sizes of the same field.
CASES: Dict[str, Case] = {
    "A": Case((257, 257, 257), 49, 2, 4),
    "B": Case((597, 245, 245), 97, 4, 4),
    "growth33": Case(_coarse_of((33, 33, 33), 2), 49, 2, 4),
    "growth65": Case(_coarse_of((65, 65, 65), 2), 49, 2, 4),
    "growth129": Case(_coarse_of((129, 129, 129), 2), 49, 2, 4),
    "quickA": Case(_coarse_of((17, 17, 17), 2), 17, 2, 4),
    "quickB": Case(_coarse_of((20, 9, 9), 4), 17, 4, 4),
    "quick9": Case(_coarse_of((9, 9, 9), 2), 17, 2, 4),
    "quick17": Case(_coarse_of((17, 17, 17), 2), 17, 2, 4),
    "quick33": Case(_coarse_of((33, 33, 33), 2), 17, 2, 4),
    "tinyA": Case(_coarse_of((9, 9, 9), 2), 9, 2, 4),
}


def _blobs(rng: np.random.Generator, lx: float) -> List[Tuple[np.ndarray, ...]]:
    out = []
    for _ in range(6):
        base = rng.uniform(0.3, 0.7, 3) * np.array([lx, 1.0, 1.0])
        amp = rng.uniform(0.1, 0.25, 3) * np.array([lx, 1.0, 1.0])
        freq = rng.uniform(0.5, 1.5, 3)
        phase = rng.uniform(0, 2 * np.pi, 3)
        sigma = rng.uniform(0.06, 0.12)
        weight = rng.uniform(0.6, 1.2)
        out.append((base, amp, freq, phase, np.array(sigma), np.array(weight)))
    return out


class Field:
    """The analytic field of one case: :meth:`evaluate` at any points and time tau."""

    def __init__(self, case: Case):
        self.case = case
        self.lx = (case.fine[0] - 1) * case.spacing
        self.blobs = _blobs(np.random.default_rng(case.seed), self.lx)

    def evaluate(self, x: np.ndarray, y: np.ndarray, z: np.ndarray,
                 tau: float) -> Dict[str, np.ndarray]:
        """Every variable at the (broadcastable) points x, y, z at field time tau in [0, 1];
        float32 arrays of the broadcast shape."""
        two_pi = 2 * np.pi
        shape = np.broadcast_shapes(x.shape, y.shape, z.shape)
        density = np.full(shape, 0.0)
        density += 0.15 * np.sin(two_pi * (x / self.lx + 0.5 * tau)) * np.cos(np.pi * y)
        for base, amp, freq, phase, sigma, weight in self.blobs:
            c = base + amp * np.sin(two_pi * freq * tau + phase)
            d2 = (x - c[0]) ** 2 + (y - c[1]) ** 2 + (z - c[2]) ** 2
            density += weight * np.exp(-d2 / (2 * sigma * sigma))
        # a front sweeping along x with a wavy face (width ~ 3 fine cells at 257), + kinks
        d = (x / self.lx - (0.15 + 0.7 * tau)
             - 0.06 * np.sin(two_pi * (2 * y + tau)) * np.cos(two_pi * z))
        front = np.tanh(d / 0.012) + 0.5 * np.abs(np.sin(np.pi * (3 * y - 2 * tau + z)))
        # uniform stream + a drifting Rankine vortex tilted with height
        xc = self.lx * (0.3 + 0.4 * tau) + 0.1 * np.sin(two_pi * z)
        yc = 0.5 + 0.2 * np.sin(two_pi * tau) + 0.05 * np.cos(two_pi * z)
        rx, ry = x - xc, y - yc
        r = np.sqrt(rx * rx + ry * ry) + 1e-12
        core = 0.08
        ut = np.where(r < core, r / core, core / r)          # kink at the core radius
        u = 0.3 - ut * ry / r
        v = ut * rx / r
        speed = np.sqrt(u * u + v * v)
        product = density * speed
        return {"density": density.astype(np.float32), "front": front.astype(np.float32),
                "speed": speed.astype(np.float32), "product": product.astype(np.float32)}

    def tau(self, step: float) -> float:
        return float(step) / (self.case.steps - 1)

    def axes(self, every: int = 1) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Physical x, y, z coordinates of the fine points kept at every ``every``-th."""
        h = self.case.spacing
        return tuple(np.arange(0, n, every) * h for n in self.case.fine)  # type: ignore


def slab_rows(n_z: int, n_y: int, n_x: int, budget_points: int = 4_000_000) -> int:
    """z rows per slab so one slab of one variable holds about ``budget_points`` points."""
    return max(1, min(n_z, budget_points // max(1, n_y * n_x)))


def slabs(field: Field, step: float, every: int = 1, budget_points: int = 4_000_000
          ) -> Iterator[Tuple[int, int, Dict[str, np.ndarray]]]:
    """(z0, z1, {variable: float32 [z1-z0, Y, X]}) over the grid kept at every ``every``-th
    point, at fine step ``step`` (may be fractional), a few million points at a time."""
    xs, ys, zs = field.axes(every)
    rows = slab_rows(len(zs), len(ys), len(xs), budget_points)
    tau = field.tau(step)
    for z0 in range(0, len(zs), rows):
        z1 = min(len(zs), z0 + rows)
        vals = field.evaluate(xs[None, None, :], ys[None, :, None], zs[z0:z1, None, None], tau)
        yield z0, z1, vals


def fine_slabs(case: Case, step: float, budget_points: int = 4_000_000
               ) -> Iterator[Tuple[int, int, Dict[str, np.ndarray]]]:
    """The fine truth of one step, slab by slab (see :func:`slabs`)."""
    return slabs(Field(case), step, 1, budget_points)


def _h5_series(path: str, shape_tzyx: Tuple[int, int, int, int], times: Sequence[float],
               spacing: float):
    import h5py
    fh = h5py.File(path, "w")
    fh.attrs["times"] = np.asarray(times, dtype=np.float64)
    fh.attrs["origin"] = np.zeros(3)
    fh.attrs["spacing"] = np.full(3, spacing)
    fh.attrs["variables"] = list(VARIABLES)
    t, z, y, x = shape_tzyx
    chunks = (1, slab_rows(z, y, x, 1 << 20), y, x)
    for n in VARIABLES:
        fh.create_dataset(n, shape=shape_tzyx, dtype=np.float32, chunks=chunks)
    return fh


def write_coarse(case: Case, path: str) -> Dict[str, object]:
    """The coarse input, evaluated at the kept points and steps directly (the same values as
    subsampling the fine series), one step and slab at a time. Returns a summary."""
    field = Field(case)
    nx, ny, nz = case.coarse
    steps = list(range(0, case.steps, case.time))
    tmp = path + ".tmp"
    t0 = time.perf_counter()
    with _h5_series(tmp, (len(steps), nz, ny, nx), [float(s) for s in steps],
                    case.spacing * case.space) as fh:
        for i, step in enumerate(steps):
            for z0, z1, vals in slabs(field, step, case.space):
                for n in VARIABLES:
                    fh[n][i, z0:z1] = vals[n]
    os.replace(tmp, path)
    return {"path": path, "seconds": time.perf_counter() - t0, "dims": [nx, ny, nz],
            "steps": len(steps), "bytes_float32": 4 * nx * ny * nz * len(steps) * len(VARIABLES)}


def write_truth(case: Case, path: str, steps: Sequence[int]) -> Dict[str, object]:
    """The fine grid at ``steps`` only (for scoring outside the benchmark, e.g. `stsr eval`
    needs whole series: this file has just these steps)."""
    field = Field(case)
    nx, ny, nz = case.fine
    tmp = path + ".tmp"
    t0 = time.perf_counter()
    with _h5_series(tmp, (len(steps), nz, ny, nx), [float(s) for s in steps],
                    case.spacing) as fh:
        for i, step in enumerate(steps):
            for z0, z1, vals in slabs(field, step, 1):
                for n in VARIABLES:
                    fh[n][i, z0:z1] = vals[n]
    os.replace(tmp, path)
    return {"path": path, "seconds": time.perf_counter() - t0, "steps": list(steps)}


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--case", choices=sorted(CASES), help="a named case (or give --fine ...)")
    p.add_argument("--fine", type=int, nargs=3, metavar=("NX", "NY", "NZ"))
    p.add_argument("--steps", type=int, default=49, help="fine steps (with --fine)")
    p.add_argument("--space", type=int, default=2, help="keep every S-th point (with --fine)")
    p.add_argument("--time", type=int, default=4, help="keep every K-th step (with --fine)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--truth-steps", default="auto",
                   help="fine steps to write in truth.h5: comma list, 'auto' or 'none'")
    p.add_argument("--out", required=True, help="output folder (created)")
    a = p.parse_args(argv)
    if a.case:
        case = CASES[a.case]
        case = Case(case.fine, case.steps, case.space, case.time, a.seed)
    elif a.fine:
        case = Case(tuple(a.fine), a.steps, a.space, a.time, a.seed)  # type: ignore[arg-type]
    else:
        p.error("give --case or --fine")
    os.makedirs(a.out, exist_ok=True)
    summary = {"case": asdict(case), "coarse": write_coarse(case, os.path.join(a.out,
                                                                               "coarse.h5"))}
    if a.truth_steps != "none":
        steps = case.truth_steps() if a.truth_steps == "auto" else \
            [int(v) for v in a.truth_steps.split(",")]
        summary["truth"] = write_truth(case, os.path.join(a.out, "truth.h5"), steps)
    with open(os.path.join(a.out, "case.json"), "w") as fh:
        json.dump(summary, fh, indent=2)
    print(json.dumps(summary, indent=2), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
