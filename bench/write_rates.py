"""Write rate of the streaming writers (io/stream.py) per format and compression: steps of
4 float32 variables on a 129^3 grid (smooth moving fields with full float32 mantissas, like
simulation output), written to a scratch folder, fsync included. Rate = uncompressed bytes
of the step / seconds. Usage: python -m bench.write_rates [--n 129] [--steps 3] [--dir D]"""
from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time

import numpy as np

from stsr_core.grid import Grid
from stsr_core.io import open_series_writer

CASES = [("s.pvd", "none"), ("s.pvd", "zlib"), ("s.pvd", "lz4"), ("s.h5", "none"),
         ("s.h5", "zlib"), ("s.h5", "gzip"), ("s.h5", "lzf")]


def fields(n: int, t: float) -> dict:
    z, y, x = np.meshgrid(*(np.linspace(0, 1, n, dtype=np.float32),) * 3, indexing="ij")
    return {"temperature": np.sin(6 * x + t) * np.cos(5 * y) + z,          # [Z, Y, X]
            "pressure": np.exp(-((x - 0.5 - 0.1 * t) ** 2 + (y - 0.5) ** 2) * 8) * (1 + z),
            "density": np.cos(4 * (x + y + z) - t) ** 2,
            "vorticity": np.sin(9 * x * y + t) * np.sin(7 * z)}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=129)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--dir", default=None)
    a = p.parse_args()
    g = Grid((a.n,) * 3)
    steps = [{k: v.astype(np.float32) for k, v in fields(a.n, 0.3 * i).items()}
             for i in range(a.steps)]
    raw = sum(v.nbytes for v in steps[0].values()) * a.steps
    print(f"{a.steps} steps of {a.n}^3 x 4 float32 = {raw / 1e6:.1f} MB, scratch in "
          f"{a.dir or tempfile.gettempdir()}")
    for name, comp in CASES:
        d = tempfile.mkdtemp(dir=a.dir)
        try:
            t0 = time.perf_counter()
            with open_series_writer(os.path.join(d, name), g, range(a.steps), list(steps[0]),
                                    {}, compression=comp) as w:
                for i, s in enumerate(steps):
                    w.write_step(i, s)
                files = w.close()
            dt = time.perf_counter() - t0
            size = sum(os.path.getsize(f) for f in files)
            print(f"{name[2:]:4s} {comp:5s} {raw / 1e6 / dt:7.0f} MB/s  size {size / raw:5.1%} "
                  f"of raw")
        finally:
            shutil.rmtree(d)


if __name__ == "__main__":
    main()
