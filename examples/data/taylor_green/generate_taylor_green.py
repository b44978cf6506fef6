"""The Taylor-Green vortex: the classic transition-to-turbulence benchmark of incompressible
flow, computed with a small pseudo-spectral Navier-Stokes solver written for this project
(numpy FFTs, 2/3 de-aliasing, RK4 in time) on the periodic box [0, 2 pi)^3, with a passive
scalar ("temperature") stirred by the flow. The smooth initial vortices roll up into ever
smaller structures: a field of a different character than the tornado and the plume.

    python generate_taylor_green.py [--n 32] [--steps 17] [--t-end 6] [--re 200] [--out DIR]

Written on n+1 points per axis (the periodic point repeated) so that the grid has the 4k+1
points the benchmark's subsampling needs. Variables: velocity (3 components), pressure,
vorticity_magnitude, temperature.
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np


def solve(n: int, steps: int, t_end: float, re: float, dt: float):
    k1 = np.fft.fftfreq(n, 1.0 / n)
    kz, ky, kx = np.meshgrid(k1, k1, np.fft.rfftfreq(n, 1.0 / n), indexing="ij")
    k2 = kx * kx + ky * ky + kz * kz
    k2_safe = np.where(k2 == 0, 1.0, k2)
    kmax = n // 3
    dealias = (np.abs(kx) < kmax) & (np.abs(ky) < kmax) & (np.abs(kz) < kmax)
    x = np.arange(n) * 2 * np.pi / n
    Z, Y, X = np.meshgrid(x, x, x, indexing="ij")
    u = np.stack([np.sin(X) * np.cos(Y) * np.cos(Z), -np.cos(X) * np.sin(Y) * np.cos(Z),
                  np.zeros_like(X)])
    theta = np.tanh(4 * np.sin(Z)) * 0.5 + 0.1 * np.cos(X + Y)       # stratified scalar
    uh = np.fft.rfftn(u, axes=(1, 2, 3))
    th = np.fft.rfftn(theta)
    nu, kappa = 1.0 / re, 1.0 / re
    K = (kx, ky, kz)

    def grad(fh):
        return [np.fft.irfftn(1j * k * fh, s=(n, n, n)) for k in K]

    def rhs(uh, th):
        u = np.fft.irfftn(uh, s=(n, n, n), axes=(1, 2, 3))
        nl = np.zeros_like(uh)
        for i in range(3):
            g = grad(uh[i])
            adv = u[0] * g[0] + u[1] * g[1] + u[2] * g[2]
            nl[i] = np.fft.rfftn(adv)
        nl *= dealias
        div = (kx * nl[0] + ky * nl[1] + kz * nl[2]) / k2_safe      # projection
        du = np.stack([-(nl[i] - K[i] * div) - nu * k2 * uh[i] for i in range(3)])
        gt = grad(th)
        dth = -np.fft.rfftn(u[0] * gt[0] + u[1] * gt[1] + u[2] * gt[2]) * dealias - kappa * k2 * th
        return du, dth

    def pressure(uh):
        """From the pressure Poisson equation: p_hat = -k_i k_j (u_i u_j)_hat / k^2."""
        u = np.fft.irfftn(uh, s=(n, n, n), axes=(1, 2, 3))
        ph = np.zeros_like(uh[0])
        for i in range(3):
            for j in range(3):
                ph += K[i] * K[j] * np.fft.rfftn(u[i] * u[j])
        return np.fft.irfftn(-ph / k2_safe * (k2 > 0), s=(n, n, n))

    frames, times = [], []
    save_at = np.linspace(0, t_end, steps)
    t, nxt = 0.0, 0
    while nxt < steps:
        if t >= save_at[nxt] - 1e-9:
            u = np.fft.irfftn(uh, s=(n, n, n), axes=(1, 2, 3))
            g = [grad(uh[i]) for i in range(3)]          # g[i][j] = d u_i / d x_j
            w = np.stack([g[2][1] - g[1][2], g[0][2] - g[2][0], g[1][0] - g[0][1]])
            frames.append({"velocity": np.moveaxis(u, 0, -1),
                           "pressure": pressure(uh),
                           "vorticity_magnitude": np.sqrt((w ** 2).sum(0)),
                           "temperature": np.fft.irfftn(th, s=(n, n, n))})
            times.append(t)
            print(f"frame {nxt + 1}/{steps} t={t:.3f}", flush=True)
            nxt += 1
            continue
        h = min(dt, save_at[nxt] - t) if nxt < steps else dt
        a1, b1 = rhs(uh, th)
        a2, b2 = rhs(uh + 0.5 * h * a1, th + 0.5 * h * b1)
        a3, b3 = rhs(uh + 0.5 * h * a2, th + 0.5 * h * b2)
        a4, b4 = rhs(uh + h * a3, th + h * b3)
        uh = uh + h / 6 * (a1 + 2 * a2 + 2 * a3 + a4)
        th = th + h / 6 * (b1 + 2 * b2 + 2 * b3 + b4)
        t += h
    return frames, times


def periodic(a: np.ndarray) -> np.ndarray:
    """Repeat the first point at the end of each spatial axis (n -> n+1 points)."""
    for ax in range(3):
        a = np.concatenate([a, np.take(a, [0], axis=ax)], axis=ax)
    return a


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=32, help="Fourier modes per axis (default 32)")
    ap.add_argument("--steps", type=int, default=17, help="saved frames (default 17)")
    ap.add_argument("--t-end", type=float, default=6.0, help="last time (default 6)")
    ap.add_argument("--re", type=float, default=200.0, help="Reynolds number (default 200)")
    ap.add_argument("--dt", type=float, default=0.02, help="solver time step (default 0.02)")
    ap.add_argument("--out", default=os.path.dirname(os.path.abspath(__file__)))
    a = ap.parse_args(argv)
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", ".."))
    from stsr_core.io import write_series
    from stsr_core.series import VolumeSeries
    frames, times = solve(a.n, a.steps, a.t_end, a.re, a.dt)
    vel = np.stack([periodic(f["velocity"]) for f in frames]).astype(np.float32)
    variables = {f"velocity_{c}": vel[..., c] for c in range(3)}
    for k in ("pressure", "vorticity_magnitude", "temperature"):
        variables[k] = np.stack([periodic(f[k]) for f in frames]).astype(np.float32)
    h = 2 * np.pi / a.n
    series = VolumeSeries(times=times, variables=variables, origin=(0, 0, 0), spacing=(h, h, h),
                          components={"velocity": [f"velocity_{c}" for c in range(3)]})
    os.makedirs(a.out, exist_ok=True)
    files = write_series(series, os.path.join(a.out, "taylor_green.pvd"), overwrite=True)
    print(f"wrote {files[0]}: {series.dims} points, {series.n_times} steps")


if __name__ == "__main__":
    main()
