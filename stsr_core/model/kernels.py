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
        xo_n, yo_n, zo_n = sx.shape[0], sy.shape[0], sz.shape[0]   # out: [C, Zo, Yo * Xo]
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
        outf = out                      # [C, Zo, Yo * Xo], channels first or last
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
    def _warp(f0, f1, a0, a1, p0, p1, g0, g1, pmap, has_slopes, disp, accel, has_accel, bend,
              zi, zw, gx, gy, gz, s0, s1, scale, off, out, mode):  # pragma: no cover
        zw_n, yw_n, xw_n, v_n = f0.shape        # channels last: a corner's variables adjacent
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
                    pf = p0 if side == 0 else p1
                    g = g0 if side == 0 else g1
                    for v in range(v_n):
                        val = (c000 * f[iz, iy, ix, v] + c100 * f[iz, iy, jx, v]
                               + c010 * f[iz, jy, ix, v] + c110 * f[iz, jy, jx, v]
                               + c001 * f[jz, iy, ix, v] + c101 * f[jz, iy, jx, v]
                               + c011 * f[jz, jy, ix, v] + c111 * f[jz, jy, jx, v])
                        slope = np.float32(0.0)
                        q = pmap[v]
                        if has_slopes and q >= 0 and g[v] != 0:   # the cubic along the path
                            slope = g[v] * (
                                c000 * pf[iz, iy, ix, q] + c100 * pf[iz, iy, jx, q]
                                + c010 * pf[iz, jy, ix, q] + c110 * pf[iz, jy, jx, q]
                                + c001 * pf[jz, iy, ix, q] + c101 * pf[jz, iy, jx, q]
                                + c011 * pf[jz, jy, ix, q] + c111 * pf[jz, jy, jx, q])
                        if mode == 1:
                            out[side, v, z, y, x] = val
                        elif mode == 2:
                            if side == 0:
                                out[0, v, z, y, x] = val
                            else:
                                out[0, v, z, y, x] = abs(out[0, v, z, y, x] - val)
                        else:
                            if side == 0:
                                out[0, v, z, y, x] = a0[v] * val + slope
                            else:
                                out[0, v, z, y, x] += a1[v] * val + slope


def last(t: torch.Tensor) -> torch.Tensor:
    """A field [C, Z, Y, X] as its channels-last tensor [Z, Y, X, C] (no copy where it is
    one's view, as :func:`banded` with ``last`` makes them)."""
    cl = t.detach().permute(1, 2, 3, 0)
    if cl.dtype != torch.float32 or not cl.is_contiguous():
        cl = cl.to(torch.float32).contiguous()
    return cl


def channels_last(shape: Sequence[int], like: torch.Tensor) -> torch.Tensor:
    """An empty field [C, Z, Y, X] laid out channels last (the lookups' layout)."""
    c, z, y, x = shape
    return like.new_empty((z, y, x, c)).permute(3, 0, 1, 2)


if numba is not None:
    @njit(inline="always")
    def _flow_at(flows, j, px, py, pz):  # pragma: no cover - compiled
        """Interval j's displacement at p, trilinear (grid_sample, align_corners, border)."""
        fz_n, fy_n, fx_n = flows.shape[2], flows.shape[3], flows.shape[4]
        one, two = np.float32(1.0), np.float32(2.0)
        fx = min(max(((px + one) / two) * np.float32(fx_n - 1), np.float32(0.0)),
                 np.float32(fx_n - 1))
        fy = min(max(((py + one) / two) * np.float32(fy_n - 1), np.float32(0.0)),
                 np.float32(fy_n - 1))
        fz = min(max(((pz + one) / two) * np.float32(fz_n - 1), np.float32(0.0)),
                 np.float32(fz_n - 1))
        ix, iy, iz = int(fx), int(fy), int(fz)
        jx, jy, jz = min(ix + 1, fx_n - 1), min(iy + 1, fy_n - 1), min(iz + 1, fz_n - 1)
        tx, ty, tz = fx - ix, fy - iy, fz - iz
        out = np.zeros(3, np.float32)
        for c in range(3):
            f = flows[j, c]
            out[c] = ((1 - tz) * ((1 - ty) * ((1 - tx) * f[iz, iy, ix] + tx * f[iz, iy, jx])
                                  + ty * ((1 - tx) * f[iz, jy, ix] + tx * f[iz, jy, jx]))
                      + tz * ((1 - ty) * ((1 - tx) * f[jz, iy, ix] + tx * f[jz, iy, jx])
                              + ty * ((1 - tx) * f[jz, jy, ix] + tx * f[jz, jy, jx])))
        return out[0], out[1], out[2]

    @njit(inline="always")
    def _cubic_taps(p, n, w):  # pragma: no cover - compiled
        """The first of 4 taps (padded index) and their weights ``w`` of the cubic B-spline
        at local coordinate p on an axis of n points (bspline_sample's formula)."""
        idx = (p + np.float32(1.0)) * np.float32(0.5) * np.float32(n - 1) + np.float32(1.0)
        i = min(max(int(np.floor(idx)), 1), max(1, n - 1))
        f = idx - i
        f2 = f * f
        f3 = f2 * f
        w[0] = (1 - f) ** 3 / 6
        w[1] = (3 * f3 - 6 * f2 + 4) / 6
        w[2] = (-3 * f3 + 3 * f2 + 3 * f + 1) / 6
        w[3] = f3 / 6
        return i - 1

    @njit(parallel=True, cache=True)
    def _carried(coef, vmap, flows, intervals, sign, gx, gy, gz, wt, out):  # pragma: no cover
        zc, yc, xc = coef.shape[1], coef.shape[2], coef.shape[3]
        v_n = vmap.shape[0]
        r_n, y_n, x_n = gz.shape[0], gy.shape[0], gx.shape[0]
        one = np.float32(1.0)
        half = np.float32(0.5) * sign
        for zy in prange(r_n * y_n):
            z = zy // y_n
            y = zy % y_n
            wx = np.empty(4, np.float32)
            wy = np.empty(4, np.float32)
            wz = np.empty(4, np.float32)
            wzy = np.empty(16, np.float32)
            kx = np.empty(4, np.int64)
            ky = np.empty(4, np.int64)
            kz = np.empty(4, np.int64)
            for x in range(x_n):
                px, py, pz = gx[x], gy[y], gz[z]
                for m in range(intervals.shape[0]):   # interval by interval, half-way
                    j = intervals[m]
                    ux, uy, uz = _flow_at(flows, j, px, py, pz)
                    qx = min(max(px + half * ux, -one), one)
                    qy = min(max(py + half * uy, -one), one)
                    qz = min(max(pz + half * uz, -one), one)
                    vx, vy, vz = _flow_at(flows, j, qx, qy, qz)
                    px = min(max(px + sign * vx, -one), one)
                    py = min(max(py + sign * vy, -one), one)
                    pz = min(max(pz + sign * vz, -one), one)
                sx = _cubic_taps(px, xc - 2, wx)
                sy = _cubic_taps(py, yc - 2, wy)
                sz = _cubic_taps(pz, zc - 2, wz)
                for c in range(4):            # the taps' indices, once for every variable
                    kz[c] = min(max(sz + c, 0), zc - 1)
                    ky[c] = min(max(sy + c, 0), yc - 1)
                    kx[c] = min(max(sx + c, 0), xc - 1)
                for c in range(4):
                    for b in range(4):
                        wzy[c * 4 + b] = wz[c] * wy[b]
                for v in range(v_n):
                    acc = np.float32(0.0)
                    cv = vmap[v]
                    for c in range(4):
                        for b in range(4):
                            r = coef[cv, kz[c], ky[b]]
                            acc += wzy[c * 4 + b] * (wx[0] * r[kx[0]] + wx[1] * r[kx[1]]
                                                     + wx[2] * r[kx[2]] + wx[3] * r[kx[3]])
                    out[v, z, y, x] += wt * acc


def carried_spline(coef: torch.Tensor, flows: torch.Tensor, intervals: Sequence[int],
                   sign: int, axes: Sequence[torch.Tensor], weight: float,
                   out: torch.Tensor, variables: Optional[Sequence[int]] = None
                   ) -> torch.Tensor:
    """``out`` [V, R, Y, X] += ``weight`` x the cubic B-spline with coefficients ``coef``
    [V, Z+2, Y+2, X+2] at where the paths through the points ``axes`` (local x [X], y [Y],
    z [R]) are after ``intervals`` (in order; ``sign`` +1 forward, -1 back), each step
    carried by its displacement ``flows`` [T-1, 3, ...] looked up half-way (the slopes
    along the paths, SplineBase.path_slope_coef); ``variables``: the channels of ``coef``
    that ``out``'s channels are (None: all, in order); only the rows looked up are read."""
    _threads()
    vmap = np.arange(coef.shape[0]) if variables is None else np.asarray(list(variables))
    _carried(_np(coef), vmap.astype(np.int64), _np(flows), np.asarray(list(intervals), np.int64),
             np.float32(sign), *(_np(a) for a in axes), np.float32(weight), out.numpy())
    return out


def _np(t: torch.Tensor) -> np.ndarray:
    """A float32 C-ordered numpy view (a copy only where ``t`` is not already one)."""
    return t.detach().to(torch.float32).contiguous().numpy()


def banded(a: torch.Tensor, mats: Sequence[torch.Tensor],
           out: Optional[torch.Tensor] = None, last: bool = False) -> torch.Tensor:
    """``a`` [C, Z, Y, X] filtered along x, y and z by the banded matrices ``mats`` (x, y,
    z; each [out, in]) -> [C, Zo, Yo, Xo] (into ``out`` when given; with ``last`` a view of
    a channels-last tensor, the lookups' layout), on the CPU by the compiled kernel reading
    only the input rows the z matrix uses."""
    mx, my, mz = mats
    sx, wx = taps(mx)
    sy, wy = taps(my)
    sz, wz = taps(mz)
    c = a.shape[0]
    shape = (c, mz.shape[0], my.shape[0], mx.shape[0])
    if last:
        out = channels_last(shape, torch.empty(0))
    elif out is None or not out.is_contiguous():
        out = torch.empty(shape, dtype=torch.float32)
    if mz.shape[0] == 0:
        return out
    flat = out.view(c, shape[1], shape[2] * shape[3])       # a view either way
    z_lo = int(sz.min())
    z_hi = int((sz + wz.shape[1]).max())
    _threads()
    an = a.detach()
    if an.dtype != torch.float32 or not an.is_contiguous():
        an = an[:, z_lo:z_hi].to(torch.float32).contiguous()
        sz = sz - z_lo
        z_lo, z_hi = 0, z_hi - z_lo
    _banded(an.numpy(), z_lo, z_hi, sx, wx, sy, wy, sz, wz, flat.numpy())
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
                out: Optional[torch.Tensor] = None,
                slopes: Optional[Sequence[torch.Tensor]] = None,
                slope_weights: Optional[Sequence[torch.Tensor]] = None,
                slope_variables: Optional[Sequence[int]] = None) -> torch.Tensor:
    """Both sides of an interval looked up along the paths at fraction ``w`` for every
    variable at once (the module's docstring). ``ends``: the two slots' fields on the
    warps' grid (or a window of it) [V, Zw, Yw, Xw]; ``weights``: per variable the two
    sides' weights [V] (mode BLEND); ``disp``/``accel``: [3, Zd, Yo, Xo] the displacement
    (and acceleration) already carried in x and y, ``mz`` [R, Zd] its carry in z;
    ``axes``: the output points' local coordinates (x [Xo], y [Yo], z [R]); ``index`` per
    axis (x, y, z): (scale, offset) taking a local coordinate p to the field's index
    ``(p + 1) * scale - offset``; ``slopes``/``slope_weights``: the two ends' slopes along
    the path and their per-variable weights, added in the same pass (BLEND: the cubic
    along the path, paths.end_weights); ``slope_variables``: the variables whose slopes
    the slopes' channels are (None: all). Returns [V, R, Yo, Xo] (BLEND, ABSDIFF) or
    [2, V, R, Yo, Xo] (BOTH)."""
    f0, f1 = last(ends[0]).numpy(), last(ends[1]).numpy()
    v = f0.shape[3]
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
    pmap = np.full(v, -1, np.int64)
    if slopes is not None:
        pmap[list(range(v)) if slope_variables is None else list(slope_variables)] = \
            np.arange(v if slope_variables is None else len(slope_variables))
        p0, p1 = last(slopes[0]).numpy(), last(slopes[1]).numpy()
        g0, g1 = (np.ascontiguousarray(x.detach().cpu().numpy(), np.float32)
                  for x in slope_weights)
    else:
        p0 = p1 = np.zeros((1, 1, 1, 1), np.float32)
        g0 = g1 = np.zeros(v, np.float32)
    _warp(f0, f1, a0, a1, p0, p1, g0, g1, pmap, slopes is not None, _np(disp), acc,
          accel is not None, np.float32(bend), zi, zw,
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
    banded(a, [m, m, m], last=True)
    warp_lookup((a, a), (torch.ones(1), torch.ones(1)), torch.zeros(3, 2, 2, 2), None, 0.0,
                m, [torch.zeros(2)] * 3, 0.5, [(0.5, 0.0)] * 3, BLEND)
