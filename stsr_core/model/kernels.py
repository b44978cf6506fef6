"""The fast base's two hot loops as compiled, multi-threaded CPU kernels (numba), with torch
doing the same work elsewhere (CUDA, or where numba is missing):

* :func:`banded` -- a field filtered along x, y and z by banded per-axis matrices (the cubic
  B-spline's 4 weights a row, linear interpolation's 2): the kept steps' fields on a grid,
  the error estimate's trilinear carry. Dense matrix products do the same with hundreds of
  zeros a row; here each output value costs its 4 (or 2) taps per axis.
* :func:`warp_lookup` -- the warped trilinear lookups of both sides of an interval for
  every variable at once: per output point the displacement (and a bent path's
  acceleration) is interpolated from the flow grid once, both sides' positions and
  trilinear weights computed once, and shared by every variable. The result is blended
  with per-variable weights (the cubic's end weights along the path folded in), or the
  two sides returned apart, or their absolute difference (the error estimate's term in
  time). grid_sample's semantics: align_corners=True, border padding (positions are
  clamped to the box first, as the callers do).

Chosen by measurement among numba, VTK's resampling and torch's compiler
(bench/kernels.py; the table in bench/results). Compiled code is cached on disk (numba's
``cache=True``): only the first run of a new install pays the compile.
"""
from __future__ import annotations

import os
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch

try:  # numba is a dependency (pyproject); a missing one leaves torch doing the work
    import numba
    from numba import njit, prange
except ImportError:  # pragma: no cover - exercised by installs without numba
    numba = None

# STSR_KERNELS=torch forces the torch path on the CPU too (the equality tests use it)
USE_NUMBA = numba is not None and os.environ.get("STSR_KERNELS", "numba") != "torch"

BLEND, BOTH, ABSDIFF = 0, 1, 2      # what warp_lookup returns


def available(device: torch.device) -> bool:
    """Whether the compiled kernels run for tensors on ``device`` (the CPU, with numba)."""
    return USE_NUMBA and device.type == "cpu"


def _threads() -> None:
    """numba's threads as many as torch's (the caller's share of the cores)."""
    n = max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS))
    if numba.get_num_threads() != n:
        numba.set_num_threads(n)


def taps(mat: torch.Tensor) -> Tuple[np.ndarray, np.ndarray]:
    """A banded matrix [m, n] as (start [m] int64, weights [m, K] float32): row i's weights
    are ``mat[i, start[i]:start[i] + K]`` and zero elsewhere (K: the widest band)."""
    m, n = mat.shape
    a = mat.detach().cpu().numpy()
    nz = a != 0
    anyrow = nz.any(1)
    first = np.where(anyrow, nz.argmax(1), 0)
    last = np.where(anyrow, n - 1 - nz[:, ::-1].argmax(1), 0)
    k = int(max(1, (last - first).max() + 1)) if m else 1
    start = np.minimum(first, max(0, n - k)).astype(np.int64)
    idx = start[:, None] + np.arange(k)[None]
    w = np.take_along_axis(a, np.minimum(idx, n - 1), 1).astype(np.float32)
    w[idx >= n] = 0.0
    return start, np.ascontiguousarray(w)


def used_rows(mat: torch.Tensor) -> Tuple[int, int]:
    """The first and one past the last column of ``mat`` [m, n] with a non-zero weight:
    the input rows a filtering by it reads."""
    cols = (mat != 0).any(0).nonzero()
    if cols.numel() == 0:
        return 0, 1
    return int(cols[0]), int(cols[-1]) + 1


if numba is not None:
    @njit(parallel=True, cache=True)
    def _banded(a, z_lo, z_hi, sx, wx, sy, wy, sz, wz, out):  # pragma: no cover - compiled
        c_n = a.shape[0]
        y_n = a.shape[2]
        xo_n, yo_n, zo_n = sx.shape[0], sy.shape[0], sz.shape[0]
        kx, ky, kz = wx.shape[1], wy.shape[1], wz.shape[1]
        rows = z_hi - z_lo
        # x: a gather of kx taps per output column, on the coarse rows
        t1 = np.empty((c_n, rows, y_n, xo_n), np.float32)
        for cz in prange(c_n * rows):
            c = cz // rows
            z = cz % rows
            for y in range(y_n):
                src = a[c, z_lo + z, y]
                dst = t1[c, z, y]
                for xo in range(xo_n):
                    s = sx[xo]
                    acc = wx[xo, 0] * src[s]
                    for k in range(1, kx):
                        acc += wx[xo, k] * src[s + k]
                    dst[xo] = acc
        # y, then z: each output row a sum of a few whole input rows (contiguous, SIMD)
        t2 = np.empty((c_n, rows, yo_n, xo_n), np.float32)
        for cz in prange(c_n * rows):
            c = cz // rows
            z = cz % rows
            for yo in range(yo_n):
                s = sy[yo]
                dst = t2[c, z, yo]
                w0 = wy[yo, 0]
                src = t1[c, z, s]
                for xo in range(xo_n):
                    dst[xo] = w0 * src[xo]
                for k in range(1, ky):
                    wk = wy[yo, k]
                    src = t1[c, z, s + k]
                    for xo in range(xo_n):
                        dst[xo] += wk * src[xo]
        plane = yo_n * xo_n
        t2f = t2.reshape(c_n, rows, plane)
        outf = out.reshape(c_n, zo_n, plane)
        blk = 4096                      # a block of the plane stays cached across rows
        n_blk = (plane + blk - 1) // blk
        for cb in prange(c_n * n_blk):
            c = cb // n_blk
            p0 = (cb % n_blk) * blk
            p1 = min(plane, p0 + blk)
            for zo in range(zo_n):
                s = sz[zo] - z_lo
                dst = outf[c, zo]
                w0 = wz[zo, 0]
                src = t2f[c, s]
                for p in range(p0, p1):
                    dst[p] = w0 * src[p]
                for k in range(1, kz):
                    wk = wz[zo, k]
                    src = t2f[c, s + k]
                    for p in range(p0, p1):
                        dst[p] += wk * src[p]

    @njit(parallel=True, cache=True)
    def _warp(f0, f1, a0, a1, disp, accel, has_accel, bend, zi, zw, gx, gy, gz, s0, s1,
              scale, off, out, mode):  # pragma: no cover - compiled
        v_n = f0.shape[0]
        zw_n, yw_n, xw_n = f0.shape[1], f0.shape[2], f0.shape[3]
        r_n, yo_n, xo_n = gz.shape[0], gy.shape[0], gx.shape[0]
        zero, one, two = np.float32(0.0), np.float32(1.0), np.float32(2.0)
        for zy in prange(r_n * yo_n):
            z = zy // yo_n
            y = zy % yo_n
            i0, i1 = zi[z, 0], zi[z, 1]
            w0, w1 = zw[z, 0], zw[z, 1]
            for x in range(xo_n):
                dx = w0 * disp[0, i0, y, x] + w1 * disp[0, i1, y, x]
                dy = w0 * disp[1, i0, y, x] + w1 * disp[1, i1, y, x]
                dz = w0 * disp[2, i0, y, x] + w1 * disp[2, i1, y, x]
                bx = by = bz = np.float32(0.0)
                if has_accel:
                    bx = bend * (w0 * accel[0, i0, y, x] + w1 * accel[0, i1, y, x])
                    by = bend * (w0 * accel[1, i0, y, x] + w1 * accel[1, i1, y, x])
                    bz = bend * (w0 * accel[2, i0, y, x] + w1 * accel[2, i1, y, x])
                for side in range(2):
                    sh = s0 if side == 0 else s1
                    px = min(max(gx[x] + (sh * dx + bx), np.float32(-1.0)), np.float32(1.0))
                    py = min(max(gy[y] + (sh * dy + by), np.float32(-1.0)), np.float32(1.0))
                    pz = min(max(gz[z] + (sh * dz + bz), np.float32(-1.0)), np.float32(1.0))
                    # as grid_sample unnormalises (float32), then the window's offset
                    fx = ((px + one) / two) * scale[0] - off[0]
                    fy = ((py + one) / two) * scale[1] - off[1]
                    fz = ((pz + one) / two) * scale[2] - off[2]
                    ix = min(max(int(np.floor(fx)), 0), max(0, xw_n - 2))
                    iy = min(max(int(np.floor(fy)), 0), max(0, yw_n - 2))
                    iz = min(max(int(np.floor(fz)), 0), max(0, zw_n - 2))
                    tx = min(max(fx - ix, zero), one) if xw_n > 1 else zero
                    ty = min(max(fy - iy, zero), one) if yw_n > 1 else zero
                    tz = min(max(fz - iz, zero), one) if zw_n > 1 else zero
                    jx = ix + 1 if xw_n > 1 else ix
                    jy = iy + 1 if yw_n > 1 else iy
                    jz = iz + 1 if zw_n > 1 else iz
                    c000 = (1 - tx) * (1 - ty) * (1 - tz)
                    c100 = tx * (1 - ty) * (1 - tz)
                    c010 = (1 - tx) * ty * (1 - tz)
                    c110 = tx * ty * (1 - tz)
                    c001 = (1 - tx) * (1 - ty) * tz
                    c101 = tx * (1 - ty) * tz
                    c011 = (1 - tx) * ty * tz
                    c111 = tx * ty * tz
                    f = f0 if side == 0 else f1
                    for v in range(v_n):
                        val = (c000 * f[v, iz, iy, ix] + c100 * f[v, iz, iy, jx]
                               + c010 * f[v, iz, jy, ix] + c110 * f[v, iz, jy, jx]
                               + c001 * f[v, jz, iy, ix] + c101 * f[v, jz, iy, jx]
                               + c011 * f[v, jz, jy, ix] + c111 * f[v, jz, jy, jx])
                        if mode == 1:
                            out[side, v, z, y, x] = val
                        elif mode == 2:
                            if side == 0:
                                out[0, v, z, y, x] = val
                            else:
                                out[0, v, z, y, x] = abs(out[0, v, z, y, x] - val)
                        else:
                            if side == 0:
                                out[0, v, z, y, x] = a0[v] * val
                            else:
                                out[0, v, z, y, x] += a1[v] * val


def _np(t: torch.Tensor) -> np.ndarray:
    """A float32 C-ordered numpy view (a copy only where ``t`` is not already one)."""
    return t.detach().to(torch.float32).contiguous().numpy()


def banded(a: torch.Tensor, mats: Sequence[torch.Tensor],
           out: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``a`` [C, Z, Y, X] filtered along x, y and z by the banded matrices ``mats`` (x, y,
    z; each [out, in]) -> [C, Zo, Yo, Xo] (into ``out`` when given), on the CPU by the
    compiled kernel reading only the input rows the z matrix uses."""
    mx, my, mz = mats
    sx, wx = taps(mx)
    sy, wy = taps(my)
    sz, wz = taps(mz)
    c = a.shape[0]
    shape = (c, mz.shape[0], my.shape[0], mx.shape[0])
    if out is None or not out.is_contiguous():
        out = torch.empty(shape, dtype=torch.float32)
    if mz.shape[0] == 0:
        return out
    z_lo = int(sz.min())
    z_hi = int((sz + wz.shape[1]).max())
    _threads()
    an = a.detach()
    if an.dtype != torch.float32 or not an.is_contiguous():
        an = an[:, z_lo:z_hi].to(torch.float32).contiguous()
        sz = sz - z_lo
        z_lo, z_hi = 0, z_hi - z_lo
    _banded(an.numpy(), z_lo, z_hi, sx, wx, sy, wy, sz, wz, out.numpy())
    return out


def linear_rows(mz: torch.Tensor) -> Tuple[np.ndarray, np.ndarray]:
    """A linear-interpolation matrix [r, n] (2 non-zeros a row at most) as the two input
    rows and weights of each output row ([r, 2] int64 and float32)."""
    start, w = taps(mz)
    if w.shape[1] == 1:
        w = np.concatenate([w, np.zeros_like(w)], 1)
    w = w[:, :2]
    idx = np.stack([start, np.minimum(start + 1, mz.shape[1] - 1)], 1)
    return np.ascontiguousarray(idx), np.ascontiguousarray(w)


def warp_lookup(ends: Sequence[torch.Tensor], weights: Optional[Sequence[torch.Tensor]],
                disp: torch.Tensor, accel: Optional[torch.Tensor], bend: float,
                mz: torch.Tensor, axes: Sequence[torch.Tensor], w: float,
                index: Sequence[Tuple[float, float]], mode: int,
                out: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Both sides of an interval looked up along the paths at fraction ``w`` for every
    variable at once (the module's docstring). ``ends``: the two slots' fields on the
    warps' grid (or a window of it) [V, Zw, Yw, Xw]; ``weights``: per variable the two
    sides' weights [V] (mode BLEND); ``disp``/``accel``: [3, Zd, Yo, Xo] the displacement
    (and acceleration) already carried in x and y, ``mz`` [R, Zd] its carry in z;
    ``axes``: the output points' local coordinates (x [Xo], y [Yo], z [R]); ``index`` per
    axis (x, y, z): (scale, offset) taking a local coordinate p to the field's index
    ``(p + 1) * scale - offset``. Returns [V, R, Yo, Xo] (BLEND, ABSDIFF) or
    [2, V, R, Yo, Xo] (BOTH)."""
    f0, f1 = _np(ends[0]), _np(ends[1])
    v = f0.shape[0]
    gx, gy, gz = (_np(a) for a in axes)
    lead = 2 if mode == BOTH else 1
    shape = (lead, v, gz.shape[0], gy.shape[0], gx.shape[0])
    if out is None or not out.is_contiguous():
        out = torch.empty(shape, dtype=torch.float32)
    outn = out.numpy().reshape(shape)
    if weights is None:
        a0 = a1 = np.ones(v, np.float32)
    else:
        a0, a1 = (np.ascontiguousarray(np.broadcast_to(np.asarray(
            x.detach().cpu().numpy() if torch.is_tensor(x) else x, np.float32), (v,)))
            for x in weights)
    zi, zw = linear_rows(mz)
    acc = _np(accel) if accel is not None else np.zeros((3, 1, 1, 1), np.float32)
    scale = np.array([2.0 * s for s, _ in index], np.float32)      # size - 1
    off = np.array([o for _, o in index], np.float32)
    _threads()
    _warp(f0, f1, a0, a1, _np(disp), acc, accel is not None, np.float32(bend), zi, zw,
          gx, gy, gz, np.float32(-w), np.float32(1.0 - w), scale, off, outn, mode)
    return out.view(shape)


def warm_up() -> None:
    """Load (or, on a new install, compile and cache) both kernels now, on tiny arrays, so
    that their code is resident before memory is planned and no step pays for it."""
    if numba is None or not USE_NUMBA:
        return
    a = torch.zeros(1, 2, 2, 2)
    m = torch.eye(2)
    banded(a, [m, m, m])
    warp_lookup((a, a), (torch.ones(1), torch.ones(1)), torch.zeros(3, 2, 2, 2), None, 0.0,
                m, [torch.zeros(2)] * 3, 0.5, [(0.5, 0.0)] * 3, BLEND)
