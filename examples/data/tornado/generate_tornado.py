"""The Crawfis procedural tornado (Crawfis & Max, the classic time-varying flow benchmark),
written from its published description: a funnel-shaped vortex whose radius grows with height
and whose core sways with height and time.

Writes ``tornado.pvd`` (+ ``tornado/*.vti``): point arrays ``velocity`` (3 components),
``velocity_magnitude`` and ``vorticity_magnitude`` (central differences).

    python generate_tornado.py [--n 33] [--steps 17] [--dt 5] [--out DIR]
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np


def tornado_velocity(n: int, time: float) -> np.ndarray:
    """Velocity ``[Z, Y, X, 3]`` on an n^3 grid over the unit cube at ``time``."""
    c = np.linspace(0.0, 1.0, n)
    return velocity_at(c[None, None, :], c[None, :, None], c[:, None, None],
                       time).astype(np.float32)


def velocity_at(x: np.ndarray, y: np.ndarray, zc: np.ndarray, time: float) -> np.ndarray:
    """Velocity ``[..., 3]`` (float64) at the points of the broadcast arrays ``x``, ``y``,
    ``zc`` (the unit cube's coordinates) at ``time``."""
    xc = 0.5 + 0.1 * np.sin(0.04 * time + 10.0 * zc)       # the core sways with height/time
    yc = 0.5 + 0.1 * np.cos(0.03 * time + 3.0 * zc)
    r = 0.1 + 0.4 * zc * zc + 0.1 * zc * np.sin(8.0 * zc)   # funnel radius
    r2 = 0.2 + 0.1 * zc
    dist = np.sqrt((y - yc) ** 2 + (x - xc) ** 2)
    scale = np.abs(r - dist)
    scale = np.where(scale > r2, 0.8 - scale, 1.0)
    z0 = np.maximum(0.1 * (0.1 - dist * zc), 0.0)
    dist = np.sqrt(dist * dist + z0 * z0)
    scale = (r + r2 - dist) * scale / (dist + 1e-8) / (1.0 + zc)
    vx = scale * (y - yc) + 0.1 * (x - xc)
    vy = -scale * (x - xc) + 0.1 * (y - yc)
    vz = np.broadcast_to(scale * z0, vx.shape)
    return np.stack(np.broadcast_arrays(vx, vy, vz), axis=-1)


def vorticity_magnitude(v: np.ndarray, h: float) -> np.ndarray:
    """|curl v| with central differences (one-sided at the borders)."""
    d = [np.gradient(v[..., i], h, axis=(0, 1, 2)) for i in range(3)]  # d[i][axis] = dv_i/d(z,y,x)
    wx = d[2][1] - d[1][0]     # dvz/dy - dvy/dz
    wy = d[0][0] - d[2][2]     # dvx/dz - dvz/dx
    wz = d[1][2] - d[0][1]     # dvy/dx - dvx/dy
    return np.sqrt(wx * wx + wy * wy + wz * wz).astype(np.float32)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=33, help="points per axis (4k+1; default 33)")
    ap.add_argument("--steps", type=int, default=17, help="timesteps (4k+1; default 17)")
    ap.add_argument("--dt", type=float, default=5.0, help="time between steps (default 5)")
    ap.add_argument("--out", default=os.path.dirname(os.path.abspath(__file__)),
                    help="output folder (default: beside this script)")
    a = ap.parse_args(argv)
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", ".."))
    from stsr_core.io import write_series
    from stsr_core.series import VolumeSeries
    h = 1.0 / (a.n - 1)
    vel, mag, vort = [], [], []
    for i in range(a.steps):
        v = tornado_velocity(a.n, i * a.dt)
        vel.append(v)
        mag.append(np.linalg.norm(v, axis=-1))
        vort.append(vorticity_magnitude(v, h))
    vel_a = np.stack(vel)
    variables = {f"velocity_{c}": vel_a[..., c] for c in range(3)}
    variables["velocity_magnitude"] = np.stack(mag)
    variables["vorticity_magnitude"] = np.stack(vort)
    series = VolumeSeries(times=np.arange(a.steps) * a.dt, variables=variables,
                          origin=(0.0, 0.0, 0.0), spacing=(h, h, h),
                          components={"velocity": [f"velocity_{c}" for c in range(3)]})
    os.makedirs(a.out, exist_ok=True)
    files = write_series(series, os.path.join(a.out, "tornado.pvd"), overwrite=True)
    print(f"wrote {files[0]}: {a.n}^3 points, {a.steps} steps, {len(files) - 1} .vti files")


if __name__ == "__main__":
    main()
