"""What the py-pde series share: the stepping to evenly spaced frames, and the command line.
Runs in the data venv (py-pde)."""
from __future__ import annotations

import argparse
from typing import Callable, List, Tuple

import numpy as np


def evolve(eq, state, frames: int, t0: float, t1: float, dt_limit: float
           ) -> Tuple[np.ndarray, List[np.ndarray]]:
    """Step ``eq`` from ``state`` (a py-pde FieldCollection at time 0) with explicit Euler to
    ``frames`` frames from t0 to t1 -> (times [T], per field float64 [T, Z, Y, X]). The step
    is the largest under ``dt_limit`` that divides the frame interval, so frames land on it."""
    import pde
    interval = (t1 - t0) / (frames - 1)
    dt = interval / np.ceil(interval / dt_limit)
    if t0 > 0:
        state = eq.solve(state, t_range=t0, dt=dt, solver="euler", tracker=None)
    storage = pde.MemoryStorage()
    eq.solve(state, t_range=(t0, t1 + 0.5 * interval), dt=dt, solver="euler",
             tracker=[storage.tracker(interval)])
    times = np.asarray(storage.times[:frames])
    fields = [np.stack([np.transpose(f[i].data, (2, 1, 0)) for f in storage.data[:frames]])
              for i in range(len(storage.data[0]))]
    return times, fields


def main(doc: str, simulate: Callable[[int, int, int], dict], n: int, frames: int,
         argv=None) -> None:
    """The command line of a py-pde series: --n, --frames, --seed, --out (an .npz)."""
    ap = argparse.ArgumentParser(description=doc,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=n, help="cells per axis")
    ap.add_argument("--frames", type=int, default=frames)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", required=True, help=".npz to write")
    a = ap.parse_args(argv)
    np.savez(a.out, **simulate(a.n, a.frames, a.seed))
    print(f"saved {a.out}")
