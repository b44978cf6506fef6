"""The fast base's compiled loops (numba, cached on disk): the kernels themselves, kept
apart from kernels.py so that numba is imported only when a kernel first runs (``stsr info``
and the other commands never pay for it). kernels.py has what each does and its callers."""
import math

import numpy as np
from numba import njit, prange


@njit(parallel=True, cache=True)
def _banded(a, z_lo, z_hi, sx, wx, sy, wy, sz, wz, out, s1, s2):  # pragma: no cover
    # s1, s2: flat scratch for the x and the y pass (kernels.banded: reused where it can)
    c_n = a.shape[0]
    y_n = a.shape[2]
    xo_n, yo_n, zo_n = sx.shape[0], sy.shape[0], sz.shape[0]   # out: [C, Zo, Yo * Xo]
    kx, ky, kz = wx.shape[1], wy.shape[1], wz.shape[1]
    rows = z_hi - z_lo
    # x: a gather of kx taps per output column, on the coarse rows
    t1 = s1[:c_n * rows * y_n * xo_n].reshape((c_n, rows, y_n, xo_n))
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
    t2 = s2[:c_n * rows * yo_n * xo_n].reshape((c_n, rows, yo_n, xo_n))
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
          zi, zw, gx, gy, gz, s0, s1, scale, off, out, mode, post, has_post, zw_n, ring,
          ring_n):  # pragma: no cover
    # post [3, V] (BLEND): the blend then times post[0], plus 1, times post[1], plus post[2]
    # (the moved share and the variables' units, as SplineBase.evaluate_grid applies them)
    # zw_n: the window's rows; ring/ring_n [4] (f0, f1, p0, p1): each field's row of the
    # window's first row and its rows in memory (a ring: window row r at (ring + r) % ring_n)
    _, yw_n, xw_n, v_n = f0.shape           # channels last: a corner's variables adjacent
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
                kz, lz = iz + ring[side], jz + ring[side]          # the rows in memory
                if kz >= ring_n[side]:
                    kz -= ring_n[side]
                if lz >= ring_n[side]:
                    lz -= ring_n[side]
                mz, nz = iz + ring[2 + side], jz + ring[2 + side]
                if mz >= ring_n[2 + side]:
                    mz -= ring_n[2 + side]
                if nz >= ring_n[2 + side]:
                    nz -= ring_n[2 + side]
                for v in range(v_n):
                    val = (c000 * f[kz, iy, ix, v] + c100 * f[kz, iy, jx, v]
                           + c010 * f[kz, jy, ix, v] + c110 * f[kz, jy, jx, v]
                           + c001 * f[lz, iy, ix, v] + c101 * f[lz, iy, jx, v]
                           + c011 * f[lz, jy, ix, v] + c111 * f[lz, jy, jx, v])
                    slope = np.float32(0.0)
                    q = pmap[v]
                    if has_slopes and q >= 0 and g[v] != 0:   # the cubic along the path
                        slope = g[v] * (
                            c000 * pf[mz, iy, ix, q] + c100 * pf[mz, iy, jx, q]
                            + c010 * pf[mz, jy, ix, q] + c110 * pf[mz, jy, jx, q]
                            + c001 * pf[nz, iy, ix, q] + c101 * pf[nz, iy, jx, q]
                            + c011 * pf[nz, jy, ix, q] + c111 * pf[nz, jy, jx, q])
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
                        elif has_post:
                            r = (out[0, v, z, y, x] + (a1[v] * val + slope)) * post[0, v]
                            out[0, v, z, y, x] = (r + one) * post[1, v] + post[2, v]
                        else:
                            out[0, v, z, y, x] += a1[v] * val + slope


@njit(parallel=True, cache=True)
def _error(sp0, sp1, o0, o1, val0, val1, dd, has_time, xi, xw, yi, yw, zi, zw, w, ks, kt,
           hr, floor, out, ring, ring_n):  # pragma: no cover - compiled
    """The error estimate on a slab in one pass (error_estimate.error_grid's formula, in
    the variables' units) into out [V, R, Y, X]: sp0/sp1 the two kept steps' spline at the
    output points [Zs, Ys, Xs, V] (channels last; those points from o0/o1 (z, y, x) on; a
    ring's rows from ring[k] on, of ring_n[k] in memory),
    val0/val1 their values at the data's points and dd the sides' disagreement there
    [V, Zd, Yd, Xd], carried trilinearly (xi/xw, yi/yw, zi/zw: per output index its two
    data points and weights; per output row first in z and y along the whole data row,
    then per point in x); w the fraction of the interval, kt already times 4w(1-w)."""
    v_n, r_n, yo_n, xo_n = out.shape
    xd_n = val0.shape[3]
    n_in = 3 if has_time else 2
    one = np.float32(1.0)
    half = np.float32(0.5)
    for zy in prange(r_n * yo_n):
        z = zy // yo_n
        y = zy % yo_n
        q0, q1 = z + o0[0] + ring[0], z + o1[0] + ring[1]    # the splines' rows in memory
        if q0 >= ring_n[0]:
            q0 -= ring_n[0]
        if q1 >= ring_n[1]:
            q1 -= ring_n[1]
        z0, z1, wz0, wz1 = zi[z, 0], zi[z, 1], zw[z, 0], zw[z, 1]
        y0, y1, wy0, wy1 = yi[y, 0], yi[y, 1], yw[y, 0], yw[y, 1]
        row = np.empty((n_in, v_n, xd_n), np.float32)     # carried in z and y
        for a in range(n_in):
            src = val0 if a == 0 else (val1 if a == 1 else dd)
            for v in range(v_n):
                r00 = src[v, z0, y0]
                r01 = src[v, z0, y1]
                r10 = src[v, z1, y0]
                r11 = src[v, z1, y1]
                dst = row[a, v]
                for xd in range(xd_n):
                    dst[xd] = wz0 * (wy0 * r00[xd] + wy1 * r01[xd]) + \
                        wz1 * (wy0 * r10[xd] + wy1 * r11[xd])
        for x in range(xo_n):
            x0, x1, wx0, wx1 = xi[x, 0], xi[x, 1], xw[x, 0], xw[x, 1]
            for v in range(v_n):
                s0 = abs(sp0[q0, y + o0[1], x + o0[2], v]
                         - (wx0 * row[0, v, x0] + wx1 * row[0, v, x1]))
                s1 = abs(sp1[q1, y + o1[1], x + o1[2], v]
                         - (wx0 * row[1, v, x0] + wx1 * row[1, v, x1]))
                # torch.lerp's two forms
                s = s0 + w * (s1 - s0) if abs(w) < half else s1 - (s1 - s0) * (one - w)
                e = (s + floor) * ks[v]
                if has_time:
                    t = (wx0 * row[2, v, x0] + wx1 * row[2, v, x1] + floor) * kt[v]
                    e = np.float32(math.sqrt(np.float64(e) * e + np.float64(t) * t))
                out[v, z, y, x] = e * hr[v]


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
