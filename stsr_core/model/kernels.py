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

import contextlib
import os
import threading
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch

import importlib.util

# numba is a dependency (pyproject); a missing one leaves torch doing the work. It is
# imported when a kernel first runs (compiled.py), not with the package.
numba = None
HAVE_NUMBA = importlib.util.find_spec("numba") is not None

# STSR_KERNELS=torch forces the torch path on the CPU too (the equality tests use it)
USE_NUMBA = HAVE_NUMBA and os.environ.get("STSR_KERNELS", "numba") != "torch"
_compiled = None

BLEND, BOTH, ABSDIFF = 0, 1, 2      # what warp_lookup returns


def available(device: torch.device) -> bool:
    """Whether the compiled kernels run for tensors on ``device`` (the CPU, with numba)."""
    return USE_NUMBA and device.type == "cpu"


def _threads():
    """The compiled module (numba imported on first use), its threads as many as torch's
    (the caller's share of the cores)."""
    global numba, _compiled
    if _compiled is None:
        import numba as nb
        from . import compiled
        numba, _compiled = nb, compiled
    n = max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS))
    if numba.get_num_threads() != n:
        numba.set_num_threads(n)
    return _compiled


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



def last(t: torch.Tensor) -> torch.Tensor:
    """A field [C, Z, Y, X] as its channels-last tensor [Z, Y, X, C] (no copy where it is
    one's view, as :func:`banded` with ``last`` makes them)."""
    cl = t.detach().permute(1, 2, 3, 0)
    if cl.dtype != torch.float32 or not cl.is_contiguous():
        cl = cl.to(torch.float32).contiguous()
    return cl


def ring_of(t: torch.Tensor) -> Tuple[int, int, int]:
    """A field's window as it lies in memory: (the memory row of its first row, its rows
    in memory, its rows). A window slid as a ring (spline_base.slid_window) is the whole
    ring [C, H, Y, X] with ``t.ring = (first row, rows)``: window row r is memory row
    (first + r) % H; any other field: (0, Z, Z)."""
    ring = getattr(t, "ring", None)
    if ring is None:
        return 0, int(t.shape[1]), int(t.shape[1])
    return int(ring[0]), int(t.shape[1]), int(ring[1])


def channels_last(shape: Sequence[int], like: torch.Tensor) -> torch.Tensor:
    """An empty field [C, Z, Y, X] laid out channels last (the lookups' layout)."""
    c, z, y, x = shape
    return like.new_empty((z, y, x, c)).permute(3, 0, 1, 2)



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
    c = _threads()
    vmap = np.arange(coef.shape[0]) if variables is None else np.asarray(list(variables))
    c._carried(_np(coef), vmap.astype(np.int64), _np(flows),
               np.asarray(list(intervals), np.int64),
             np.float32(sign), *(_np(a) for a in axes), np.float32(weight), out.numpy())
    return out


def _np(t: torch.Tensor) -> np.ndarray:
    """A float32 C-ordered numpy view (a copy only where ``t`` is not already one)."""
    return t.detach().to(torch.float32).contiguous().numpy()


def banded(a: torch.Tensor, mats: Sequence[torch.Tensor],
           out: Optional[torch.Tensor] = None, last: bool = False) -> torch.Tensor:
    """``a`` [C, Z, Y, X] filtered along x, y and z by the banded matrices ``mats`` (x, y,
    z; each [out, in]) -> [C, Zo, Yo, Xo] (into ``out`` when given; with ``last`` a view of
    a channels-last tensor, the lookups' layout, ``out`` then such a view), on the CPU by
    the compiled kernel reading
    only the input rows the z matrix uses."""
    mx, my, mz = mats
    sx, wx = taps(mx)
    sy, wy = taps(my)
    sz, wz = taps(mz)
    c = a.shape[0]
    shape = (c, mz.shape[0], my.shape[0], mx.shape[0])
    if last:
        if out is None or tuple(out.shape) != shape or \
                not out.permute(1, 2, 3, 0).is_contiguous():
            out = channels_last(shape, torch.empty(0))
    elif out is None or not out.is_contiguous():
        out = torch.empty(shape, dtype=torch.float32)
    if mz.shape[0] == 0:
        return out
    flat = out.view(c, shape[1], shape[2] * shape[3])       # a view either way
    z_lo = int(sz.min())
    z_hi = int((sz + wz.shape[1]).max())
    c_mod = _threads()
    an = a.detach()
    if an.dtype != torch.float32 or not an.is_contiguous():
        an = an[:, z_lo:z_hi].to(torch.float32).contiguous()
        sz = sz - z_lo
        z_lo, z_hi = 0, z_hi - z_lo
    n1 = c * (z_hi - z_lo) * an.shape[2] * shape[3]        # the x pass [C, rows, Y, Xo]
    n2 = c * (z_hi - z_lo) * shape[2] * shape[3]           # the y pass [C, rows, Yo, Xo]
    with _SCRATCH.take(n1 + n2) as s:
        c_mod._banded(an.numpy(), z_lo, z_hi, sx, wx, sy, wy, sz, wz, flat.numpy(),
                      s[:n1], s[n1:n1 + n2])
    return out


class _Scratch:
    """The filtering's two passes' scratch (:func:`banded`), kept from call to call inside
    :func:`kept_scratch` (a slab loop: the same memory for every window's and slab's
    filtering, grown to the largest, which the memory plan counts as the filtering's
    scratch), else fresh per call as numpy's. Fresh memory of that size costs as much as
    the filtering itself here (its pages touched first by both threads: 0.17 s against
    0.08 s for a case C slab of 97 rows at 257^3). One caller at a time: another thread's
    call meanwhile gets fresh memory."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.depth = 0
        self.buf: Optional[np.ndarray] = None

    @contextlib.contextmanager
    def take(self, n: int):
        if self.depth and self.lock.acquire(blocking=False):
            try:
                if self.buf is None or self.buf.shape[0] < n:
                    self.buf = None                       # the old one freed first
                    self.buf = np.empty(n, np.float32)
                yield self.buf
            finally:
                self.lock.release()
        else:
            yield np.empty(n, np.float32)


_SCRATCH = _Scratch()


@contextlib.contextmanager
def kept_scratch():
    """Keep :func:`banded`'s scratch from call to call while inside (nested: the outermost
    decides); freed on leaving."""
    _SCRATCH.depth += 1
    try:
        yield
    finally:
        _SCRATCH.depth -= 1
        if not _SCRATCH.depth:
            with _SCRATCH.lock:
                _SCRATCH.buf = None


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
                slope_variables: Optional[Sequence[int]] = None,
                post: Optional[torch.Tensor] = None) -> torch.Tensor:
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
    the slopes' channels are (None: all); ``post`` [3, V] (BLEND): each blend then times
    post[0], plus 1, times post[1], plus post[2] in the same pass (the moved share and the
    variables' units). Returns [V, R, Yo, Xo] (BLEND, ABSDIFF) or [2, V, R, Yo, Xo]
    (BOTH)."""
    f0, f1 = last(ends[0]).numpy(), last(ends[1]).numpy()
    rings = [ring_of(e) for e in ends]
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
    pmap = np.full(v, -1, np.int64)
    if slopes is not None:
        pmap[list(range(v)) if slope_variables is None else list(slope_variables)] = \
            np.arange(v if slope_variables is None else len(slope_variables))
        p0, p1 = last(slopes[0]).numpy(), last(slopes[1]).numpy()
        rings += [ring_of(p) for p in slopes]
        g0, g1 = (np.ascontiguousarray(x.detach().cpu().numpy(), np.float32)
                  for x in slope_weights)
    else:
        p0 = p1 = np.zeros((1, 1, 1, 1), np.float32)
        g0 = g1 = np.zeros(v, np.float32)
        rings += [(0, 1, 1)] * 2
    pp = np.zeros((3, v), np.float32) if post is None else _np(post)
    _threads()._warp(f0, f1, a0, a1, p0, p1, g0, g1, pmap, slopes is not None, _np(disp),
                     acc, accel is not None, np.float32(bend), zi, zw, gx, gy, gz,
                     np.float32(-w), np.float32(1.0 - w), scale, off, outn, mode, pp,
                     post is not None and mode == BLEND, rings[0][2],
                     np.array([r[0] for r in rings], np.int64),
                     np.array([r[1] for r in rings], np.int64))
    return out.view(shape)


def error_pass(splines: Sequence[Tuple[torch.Tensor, Sequence[int]]],
               values: Sequence[torch.Tensor], apart: Optional[torch.Tensor],
               carry: Sequence[torch.Tensor], w: float, ks: torch.Tensor,
               kt: torch.Tensor, units: torch.Tensor, floor: float,
               out: torch.Tensor) -> torch.Tensor:
    """The error estimate on a slab in one pass into ``out`` [V, R, Y, X] (the variables'
    units): ``splines`` the two kept steps' spline at the output points, each a field
    [V, Zs, Ys, Xs] laid out channels last and where the points start in it (z, y, x);
    ``values`` their values at the data's points around the slab and ``apart`` (None at a
    kept step) the sides' disagreement there [V, Zd, Yd, Xd]; ``carry`` the linear
    matrices (x, y, z) from those points to the output's; ``ks``, ``kt`` [V] the scales
    (kt already times 4w(1-w)); ``units`` [V] the half ranges. error_estimate.error_grid
    has the formula; the same numbers to float32 rounding."""
    (sp0, o0), (sp1, o1) = splines
    xi, xw = linear_rows(carry[0])
    yi, yw = linear_rows(carry[1])
    zi, zw = linear_rows(carry[2])
    v0, v1 = (_np(a) for a in values)
    dd = _np(apart) if apart is not None else np.zeros((1, 1, 1, 1), np.float32)
    outn = out.numpy()
    rings = [ring_of(sp0), ring_of(sp1)]
    _threads()._error(last(sp0).numpy(), last(sp1).numpy(), np.asarray(o0, np.int64),
                      np.asarray(o1, np.int64), v0, v1, dd, apart is not None, xi, xw, yi,
                      yw, zi, zw, np.float32(w), _np(ks), _np(kt), _np(units),
                      np.float32(floor), outn, np.array([r[0] for r in rings], np.int64),
                      np.array([r[1] for r in rings], np.int64))
    return out


def warm_up() -> None:
    """Load (or, on a new install, compile and cache) both kernels now, on tiny arrays, so
    that their code is resident before memory is planned and no step pays for it."""
    if not USE_NUMBA:
        return
    a = torch.zeros(1, 2, 2, 2)
    m = torch.eye(2)
    banded(a, [m, m, m])
    banded(a, [m, m, m], last=True)
    warp_lookup((a, a), (torch.ones(1), torch.ones(1)), torch.zeros(3, 2, 2, 2), None, 0.0,
                m, [torch.zeros(2)] * 3, 0.5, [(0.5, 0.0)] * 3, BLEND)
    # the error pass into a whole buffer and into a shorter last slab's rows of one
    one = torch.ones(1)
    sp = (channels_last((1, 2, 2, 2), a).copy_(a), (0, 0, 0))
    for out in (torch.zeros(1, 2, 2, 2), torch.zeros(1, 3, 2, 2)[:, :2]):
        error_pass((sp, sp), (a, a), a, [m, m, m], 0.5, one, one, one, 1e-3, out)
