"""Coordinate encodings for the fast model, each a small module ``[N, 4] -> [N, dim]``.

* :class:`SpaceTimeGrid`: multi-resolution dense feature grids over space with one feature
  slot per input timestep, looked up trilinearly (``grid_sample``) or as cubic B-splines, and
  blended linearly between the two nearest slots in time. The finest level has the input's
  own resolution: grids finer than the data are unconstrained between samples and
  interpolate worse than trilinear. (The fast model's spline base is in spline_base.py.)
* :class:`FourierFeatures`: ``[cos(2 pi B v), sin(2 pi B v)]`` with ``B ~ N(0, sigma^2)``.
* :class:`Identity`: the raw coordinates (for a plain SIREN decoder).
"""
from __future__ import annotations

import functools
import math
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn



def level_resolutions(block_dims: Sequence[int], levels: int, factor: float) -> List[List[int]]:
    """Per level (coarse to fine) the grid points per axis (x, y, z): the finest level has
    ``block_dims * factor`` points, each coarser level about half as many (at least 2)."""
    out = []
    for level in range(levels):
        shrink = 2 ** (levels - 1 - level)
        out.append([max(2, int(round((d - 1) * factor / shrink)) + 1) if d > 1 else 1
                    for d in block_dims])
    return out


def _bspline_positions(idx: torch.Tensor, size: int):
    """Cubic B-spline weights as two linear lookups per axis (Sigg & Hadwiger 2005): for
    continuous indices ``idx`` into an axis of ``size`` points (padded by one on each side),
    return the two lookup positions and their weights."""
    i = idx.floor().clamp(1, size - 3)
    f = idx - i
    f2, f3 = f * f, f * f * f
    w0 = (1 - f) ** 3 / 6
    w1 = (3 * f3 - 6 * f2 + 4) / 6
    w2 = (-3 * f3 + 3 * f2 + 3 * f + 1) / 6
    w3 = f3 / 6
    g0, g1 = w0 + w1, w2 + w3
    return (i - 1 + w1 / g0, i + 1 + w3 / g1.clamp_min(1e-12)), (g0, g1)


def bspline_sample(grid: torch.Tensor, local: torch.Tensor) -> torch.Tensor:
    """Cubic B-spline interpolation of ``grid`` [1, C, D, H, W] (one padding point on every
    side) at local coordinates ``local`` [N, 3] (x, y, z) in [-1, 1] -> [N, C]. The grid values
    act as spline coefficients, so the field is C2-smooth, like SciPy's tricubic spline, at
    8 trilinear lookups per point (done in one ``grid_sample`` call)."""
    sizes = (grid.shape[4], grid.shape[3], grid.shape[2])      # x, y, z (padded)
    pos, wts = [], []
    for a in range(3):
        n = sizes[a] - 2                                       # unpadded points
        idx = (local[:, a] + 1) * 0.5 * (n - 1) + 1
        p, w = _bspline_positions(idx, sizes[a])
        pos.append([2 * q / (sizes[a] - 1) - 1 for q in p])   # back to [-1, 1]
        wts.append(w)
    pts, weights = [], []
    for cz in range(2):
        for cy in range(2):
            for cx in range(2):
                pts.append(torch.stack([pos[0][cx], pos[1][cy], pos[2][cz]], dim=1))
                weights.append(wts[0][cx] * wts[1][cy] * wts[2][cz])
    g = torch.cat(pts, 0).view(1, 1, 1, -1, 3)
    vals = F.grid_sample(grid, g, align_corners=True, padding_mode="border")[0, :, 0, 0]
    vals = vals.view(grid.shape[1], 8, -1)                     # [C, 8, N]
    w = torch.stack(weights, 0)                                # [8, N]
    return (vals * w[None]).sum(1).t()


# The spline's condition at each end of an axis (the prefilter's boundary condition): the n
# samples fix n of the n + 2 coefficients, each end fixes one more. Codes as stored in
# SplineBase.spline_boundary; model files written before the choice hold none: all natural.
BOUNDARIES = ("natural",     # zero second derivative: the spline continues linearly
              "not-a-knot",  # zero jump of the third derivative at the second point: the
                             # first two pieces are one cubic (exact for cubic polynomials)
              "quadratic",   # zero third derivative: the end piece is a parabola
              "nearest",     # the samples continued by the end value (SciPy's "nearest")
              "reflect")     # the samples mirrored about the half-cell beyond the end
                             # (SciPy's "reflect": a zero-flux wall between the samples)
NATURAL = 0
EXTEND = 12          # samples an extension ("nearest", "reflect") adds beyond the end


def _end_row(code: int, size: int) -> torch.Tensor:
    """[size] the low end's condition on the coefficients of an axis of ``size`` coefficients
    (an extension's far end: natural, whose effect fades by 0.27 a sample)."""
    taps = {1: (1.0, -4.0, 6.0, -4.0, 1.0), 2: (1.0, -3.0, 3.0, -1.0)}.get(code, (1.0, -2.0, 1.0))
    row = torch.zeros(size, dtype=torch.float64)
    row[:len(taps)] = torch.tensor(taps, dtype=torch.float64)
    return row


def _extension(code: int, n: int) -> torch.Tensor:
    """[EXTEND, n] the samples an extension puts beyond the low end, nearest first."""
    e = torch.zeros(EXTEND, n, dtype=torch.float64)
    for k in range(EXTEND):
        e[k, 0 if code == 3 else min(k, n - 1)] = 1.0
    return e


@functools.lru_cache(maxsize=256)
def _bspline_solve_matrix(n: int, low: int = NATURAL, high: int = NATURAL) -> torch.Tensor:
    """[n + 2, n] matrix taking n samples on an axis to the n + 2 cubic B-spline coefficients
    (one padding point each side) that interpolate them exactly, with the conditions ``low``
    and ``high`` (codes of BOUNDARIES) at the two ends: a condition on the coefficients, or
    the samples extended beyond the end and the spline of the longer axis cut back."""
    if n == 1:
        return torch.ones(3, 1, dtype=torch.float64)
    if n < 4:              # too few samples for a condition on the third derivative
        low, high = (NATURAL if c in (1, 2) else c for c in (low, high))
    pad_lo = EXTEND if low >= 3 else 0
    pad_hi = EXTEND if high >= 3 else 0
    m = n + pad_lo + pad_hi                   # samples after extension
    ext = torch.zeros(m, n, dtype=torch.float64)
    if pad_lo:
        ext[:pad_lo] = _extension(low, n).flip(0)
    ext[pad_lo:pad_lo + n] = torch.eye(n, dtype=torch.float64)
    if pad_hi:
        ext[pad_lo + n:] = _extension(high, n).flip(1)
    a = torch.zeros(m + 2, m + 2, dtype=torch.float64)
    for k in range(m):                      # sample k = (c[k] + 4 c[k+1] + c[k+2]) / 6
        a[k + 1, k:k + 3] = torch.tensor([1.0, 4.0, 1.0], dtype=torch.float64) / 6
    a[0] = _end_row(NATURAL if pad_lo else low, m + 2)
    a[m + 1] = _end_row(NATURAL if pad_hi else high, m + 2).flip(0)
    rhs = torch.zeros(m + 2, m, dtype=torch.float64)
    rhs[1:m + 1] = torch.eye(m, dtype=torch.float64)
    return (torch.linalg.solve(a, rhs) @ ext)[pad_lo:pad_lo + n + 2]


def bspline_coefficients(values: torch.Tensor, boundary: Optional[torch.Tensor] = None
                         ) -> torch.Tensor:
    """Cubic B-spline coefficients [..., Z+2, Y+2, X+2] that make :func:`bspline_sample`
    reproduce ``values`` [..., Z, Y, X] exactly at the sample points (the prefilter of
    spline interpolation, solved axis by axis). ``boundary``: the condition at each end of
    each axis, codes of BOUNDARIES as [3, 2] (x, y, z; low, high) for all values or
    [V, 3, 2] for values [V, Z, Y, X] one variable each; None: natural everywhere."""
    if boundary is not None and boundary.dim() == 3:
        return torch.stack([bspline_coefficients(values[i], boundary[i])
                            for i in range(values.shape[0])])
    ends = [[NATURAL, NATURAL]] * 3 if boundary is None else boundary.tolist()
    c = values.to(torch.float64)
    for axis, (low, high) in zip((-1, -2, -3), ends):
        m = _bspline_solve_matrix(c.shape[axis], int(low), int(high)).to(c.device)
        c = torch.movedim(torch.tensordot(torch.movedim(c, axis, -1), m, dims=([-1], [1])),
                          -1, axis)
    return c.to(values.dtype)


def slot_weights(slot_times: torch.Tensor, t: torch.Tensor
                 ) -> Tuple[torch.Tensor, torch.Tensor]:
    """For times ``t`` [N] the interval between slots (its first slot, [N] long) and the
    fraction through it ([N, 1] in [0, 1]): slot i sits at the i-th input time (normalised);
    outside the input's time range the nearest slot is held."""
    n_slots = slot_times.shape[0]
    if n_slots == 1:
        return (torch.zeros(t.shape[0], dtype=torch.long, device=t.device),
                torch.zeros(t.shape[0], 1, device=t.device))
    t = t.contiguous()
    j = (torch.searchsorted(slot_times, t, right=True) - 1).clamp(0, n_slots - 2)
    t0, t1 = slot_times[j], slot_times[j + 1]
    return j, ((t - t0) / (t1 - t0)).clamp(0.0, 1.0)[:, None]


class SpaceTimeGrid(nn.Module):
    """Learned features ``[N, levels * features]`` at local (x, y, z, t) points."""

    def __init__(self, block_dims: Sequence[int], n_times: int, levels: int = 3,
                 features: int = 8, factor: float = 1.0, init_std: float = 0.01,
                 slot_times: Optional[Sequence[float]] = None, interp: str = "linear"):
        super().__init__()
        if interp not in ("linear", "cubic"):
            raise ValueError(f"grid interpolation must be linear or cubic, got {interp!r}")
        self.interp = interp
        pad = 2 if interp == "cubic" else 0
        self.n_slots = max(1, int(n_times))
        if slot_times is None:
            slot_times = torch.linspace(-1, 1, self.n_slots).tolist() if self.n_slots > 1 else [0]
        if len(slot_times) != self.n_slots:
            raise ValueError("one slot time per input timestep is needed")
        self.register_buffer("slot_times", torch.tensor(list(slot_times), dtype=torch.float32),
                             persistent=False)
        self.features = features
        self.resolutions = level_resolutions(block_dims, levels, factor)
        self.grids = nn.ParameterList([
            nn.Parameter(init_std * torch.randn(self.n_slots, features,
                                                r[2] + pad, r[1] + pad, r[0] + pad))
            for r in self.resolutions])
        self.dim = features * levels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        j, w = slot_weights(self.slot_times, x[:, 3])
        pts = x[:, :3]
        out = x.new_empty(n, self.dim)
        for jj in torch.unique(j).tolist():
            sel = (j == jj).nonzero(as_tuple=True)[0]
            p = pts[sel]
            grid = p.view(1, 1, 1, -1, 3)
            wj = w[sel]
            need_next = self.n_slots > 1 and bool((wj > 0).any())
            feats = []
            for g in self.grids:
                a = self._lookup(g[jj:jj + 1], p, grid)
                if need_next:
                    b = self._lookup(g[jj + 1:jj + 2], p, grid)
                    a = a + wj * (b - a)
                feats.append(a)
            out[sel] = torch.cat(feats, dim=1)
        return out

    def _lookup(self, g: torch.Tensor, p: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
        if self.interp == "cubic":
            return bspline_sample(g, p)
        return F.grid_sample(g, grid, align_corners=True)[0, :, 0, 0].t()

    def total_variation(self) -> torch.Tensor:
        """Mean squared difference between neighbouring grid points (space and time slots)."""
        tv = self.grids[0].new_zeros(())
        for g in self.grids:
            for dim in range(g.dim()):
                if dim == 1 or g.shape[dim] < 2:
                    continue
                tv = tv + torch.diff(g, dim=dim).pow(2).mean()
        return tv


class FourierFeatures(nn.Module):
    def __init__(self, n_features: int = 64, sigma: float = 4.0, seed: int = 0):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.register_buffer("B", sigma * torch.randn(4, n_features, generator=gen))
        self.dim = 2 * n_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        proj = 2 * math.pi * x @ self.B
        return torch.cat([torch.cos(proj), torch.sin(proj)], dim=1)


class Identity(nn.Module):
    dim = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :0]
