"""What evaluating the fast base on a regular grid needs, computed once per grid: per-axis
matrices (the cubic B-spline's 4 weights a row, linear interpolation's 2), separable
filtering by them (three matrix products instead of per-point lookups), and the plan that
holds them with the fields each interval reuses. No state of the model lives here."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import torch

from . import kernels


def lattice_axes(dims_zyx: Sequence[int], device: torch.device) -> List[torch.Tensor]:
    """Local coordinates (x, y, z) of a grid's own points, each [n] in [-1, 1]."""
    return [torch.linspace(-1.0, 1.0, n, device=device) if n > 1 else
            torch.zeros(1, device=device) for n in reversed(tuple(dims_zyx))]


def spline_taps(local: torch.Tensor, n: int
                ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per point of an axis of ``n`` samples (``local`` [m] in [-1, 1]): the padded column
    ``i`` [m] of the sample before it (its taps are columns i - 1 ... i + 2), its fraction
    ``f`` [m] of the way to the next and the cubic B-spline's 4 weights [m, 4] (float64)."""
    idx = (local.to(torch.float64) + 1) * 0.5 * (n - 1) + 1
    i = idx.floor().clamp(1, max(1, n - 1))
    f = idx - i
    f2, f3 = f * f, f * f * f
    w = torch.stack([(1 - f) ** 3 / 6, (3 * f3 - 6 * f2 + 4) / 6,
                     (-3 * f3 + 3 * f2 + 3 * f + 1) / 6, f3 / 6], dim=1)
    return i.long(), f, w


def spline_matrix(local: torch.Tensor, n: int) -> torch.Tensor:
    """[m, n + 2] weights taking the padded cubic B-spline coefficients of an axis of ``n``
    samples to the spline's values at local coordinates ``local`` [m] in [-1, 1], as
    :func:`bspline_sample` weighs them (4 non-zeros a row)."""
    i, _, w = spline_taps(local, n)
    taps = (i[:, None] + torch.arange(-1, 3, device=local.device)[None]).clamp(0, n + 1)
    out = torch.zeros(local.shape[0], n + 2, dtype=torch.float64, device=local.device)
    return out.scatter_add_(1, taps, w).to(torch.float32)


def linear_matrix(local: torch.Tensor, n: int) -> torch.Tensor:
    """[m, n] weights of linear interpolation between ``n`` points spanning [-1, 1] (as
    ``grid_sample`` with align_corners=True and border padding)."""
    if n == 1:
        return torch.ones(local.shape[0], 1, device=local.device)
    idx = ((local.to(torch.float64) + 1) * 0.5 * (n - 1)).clamp(0, n - 1)
    i = idx.floor().clamp(0, n - 2)
    f = idx - i
    out = torch.zeros(local.shape[0], n, dtype=torch.float64, device=local.device)
    out.scatter_add_(1, i.long()[:, None], (1 - f)[:, None])
    out.scatter_add_(1, i.long()[:, None] + 1, f[:, None])
    return out.to(torch.float32)


def separable(a: torch.Tensor, mats: Sequence[torch.Tensor],
              out: Optional[torch.Tensor] = None, last: bool = False) -> torch.Tensor:
    """``a`` [C, Z, Y, X] filtered along x, y and z by the matrices ``mats`` (x, y, z; each
    [out, in]) -> [C, Zo, Yo, Xo] (into ``out`` when given): three matrix products, coarse
    axes first, so the cost per output value is a few dozen multiply-adds done by BLAS. On
    the CPU the compiled kernel (kernels.py) does it with the matrices' bands alone, and
    reads only the input rows the z matrix uses (a slab of the output: its rows alone), and
    with ``last`` lays its result out channels last (a view [C, Zo, Yo, Xo] of it: the
    compiled lookups' layout; elsewhere ignored)."""
    if kernels.available(a.device):
        return kernels.banded(a, mats, out, last)
    mx, my, mz = mats
    lo, hi = kernels.used_rows(mz)           # a slab: only the rows its z matrix reads
    if (lo, hi) != (0, a.shape[1]):
        a, mz = a[:, lo:hi], mz[:, lo:hi]
    c, z, y, _ = a.shape
    a = a @ mx.t()                                               # [C, Z, Y, Xo]
    a = my @ a                                                   # [C, Z, Yo, Xo]
    xo, yo = a.shape[3], a.shape[2]
    if out is None:
        return (mz @ a.reshape(c, z, yo * xo)).reshape(c, -1, yo, xo)   # [C, Zo, Yo, Xo]
    torch.matmul(mz, a.reshape(c, z, yo * xo), out=out.view(c, -1, yo * xo))
    return out


def share_fields(plan: "GridPlan", lattice: "GridPlan") -> None:
    """Let ``lattice`` (a plan of the data's lattice or a coarser one, for the sides'
    values there) use ``plan``'s slot fields where both look up on the same warps' grid
    (whole grids: the usual case; or a slab's cut of it that holds the lattice's cut),
    instead of evaluating each slot once more per interval."""
    if plan.warp_spans is None and lattice.warp_spans is None and all(
            a.shape == b.shape for a, b in zip(plan.warp_spline, lattice.warp_spline)):
        lattice.fields = plan.fields
        return
    if lattice.fields is plan.fields:
        return
    if all(pm == lm and p0 <= l0 and l0 + ln <= p0 + pn for (pm, p0, pn), (lm, l0, ln)
           in zip(plan.cut_ranges(), lattice.cut_ranges())):
        lattice.fields = plan.fields          # looked up in the plan's cut from now on
        lattice.warp_spline = plan.warp_spline
        lattice.warp_axes = plan.warp_axes
        lattice.fine.pop("warp", None)
        lattice.warp_spans = plan.warp_spans
        lattice.warp_cut = plan.warp_cut


@dataclass
class GridPlan:
    """What evaluating the base on one output grid needs, computed once per grid: the
    spline and displacement matrices per axis, the grid's points for the warps, and the
    fine fields of the current interval (reused by every step inside it)."""

    spline: List[torch.Tensor]            # x, y, z: [out, in + 2]
    linear: List[torch.Tensor]            # x, y, z: [out, flow points]
    axes: List[torch.Tensor]              # x, y, z local coordinates [out]
    warp_spline: List[torch.Tensor]       # x, y, z: [fine, in + 2], the warps' lookup grid
    interval: Optional[Tuple[int, float]] = None   # (interval, bend) of disp and accel
    disp: Optional[torch.Tensor] = None   # [3, Zd, Yo, Xo] the interval's displacement
    accel: Optional[torch.Tensor] = None  # [3, Zd, Yo, Xo] its paths' acceleration (bent)
    # slot -> its field on the warps' grid [V, Zf, Yf, Xf]: the current interval's two, each
    # evaluated once for all the steps that use it (and, on the output grid, the kept step)
    fields: Dict[int, torch.Tensor] = field(default_factory=dict)
    # slot -> its slopes along the path on the warps' grid (a cubic share along the path)
    slope_fields: Dict[int, torch.Tensor] = field(default_factory=dict)
    # the error estimate: slot -> its indicator in space on this grid, and a plan of the
    # data's own grid for the indicator in time
    error_fields: Dict[int, torch.Tensor] = field(default_factory=dict)
    data_plan: Optional["GridPlan"] = None
    # the data's points the indicators are carried from: per axis (x, y, z) the linear
    # matrix from them to this grid [out, n] and the box of them (x0, x1, y0, y1, z0, z1)
    data_carry: Optional[Tuple[List[torch.Tensor], Tuple[int, ...]]] = None
    # whether the planned points are the data's own points (error_estimate.at_data_points;
    # None: not asked yet)
    on_data: Optional[bool] = None
    # the lattice the network weighing the two sides works on (side_weights.py)
    side_plan: Optional["GridPlan"] = None
    side_carry: Optional[List[torch.Tensor]] = None   # its linear carry to this grid (x y z)
    # the slab before this one in the same interval: its fields' rows that this plan's
    # window shares are moved, not filtered again (spline_base.slid_window)
    slid_from: Optional["GridPlan"] = None
    # the most rows of the warps' grid any slab of the box's windows holds: a window's
    # fields are made with room for that many, so they slide without new memory
    window_cap: Optional[int] = None
    # the window's fields slide as rings (spline_base.slid_ring: nothing moved; every
    # reader of them a compiled kernel that knows; kernels.ring_of)
    ring: bool = False
    # reuse two output-sized buffers from step to step (a caller that is done with each
    # step before asking for the next, as the streaming upscale is): fresh memory of that
    # size costs as much as the arithmetic on this machine's first touch of its pages
    reuse: bool = False
    buffers: Dict[str, torch.Tensor] = field(default_factory=dict)
    # a piece: per axis the local coordinates (first, last) the warps' lookup grid is cut
    # to; None: the whole [-1, 1]
    warp_spans: Optional[List[Tuple[float, float]]] = None
    # a piece: per axis (x, y, z) the whole warps' grid's point count and the cut's first
    # index (what the compiled lookups address it by); None: the whole grid
    warp_cut: Optional[List[Tuple[int, int]]] = None
    # a piece whose points are points of the warps' grid: per axis (x, y, z) where they
    # start in its cut and how many (a slab of an output at least twice as fine as the
    # data: the kept steps' fields on the window hold the slab's values)
    on_window: Optional[List[Tuple[int, int]]] = None
    # x, y, z local coordinates of the warps' lookup grid's points (None: not planned)
    warp_axes: Optional[List[torch.Tensor]] = None
    # the spatial prior's lattice matrices of the output grid ("spline") and the warps'
    # grid ("warp"), made when first needed (SplineBase._fine)
    fine: Dict[str, List[torch.Tensor]] = field(default_factory=dict)
    # between_smooth.py: per blend weight its matrices (x, y, z; each [out, in + 2]) on
    # this grid, those of the step evaluated last (made when first needed)
    blends: Dict[float, List[torch.Tensor]] = field(default_factory=dict)
    # whether the last evaluation applied the caller's units in the lookups' pass
    units_applied: bool = False

    @property
    def points_on_window(self) -> bool:
        """Whether the planned points are points of the warps' grid (or its cut)."""
        return self.warp_on_output or self.on_window is not None

    def window_rows(self, f: torch.Tensor) -> Optional[torch.Tensor]:
        """The planned points' values out of a field on the warps' grid (cut) ``f``
        [C, Zw, Yw, Xw] (a view; of a ring, a copy), or None where the points are not
        points of that grid."""
        if self.warp_on_output:
            return f
        if self.on_window is None:
            return None
        (x0, nx), (y0, ny), (z0, nz) = self.on_window
        ring = getattr(f, "ring", None)
        if ring is not None:       # a ring (slid_ring): its rows gathered, a copy
            idx = (torch.arange(z0, z0 + nz, device=f.device) + ring[0]) % f.shape[1]
            return f.index_select(1, idx)[:, :, y0:y0 + ny, x0:x0 + nx]
        return f[:, z0:z0 + nz, y0:y0 + ny, x0:x0 + nx]

    def cut_ranges(self) -> List[Tuple[int, int, int]]:
        """Per axis (x, y, z): the whole warps' grid's points, the cut's first index and its
        points (the whole grid: (m, 0, m))."""
        if self.warp_cut is None:
            return [(m.shape[0], 0, m.shape[0]) for m in self.warp_spline]
        return [(m, i0, w.shape[0]) for (m, i0), w in zip(self.warp_cut, self.warp_spline)]

    def lookup_index(self) -> List[Tuple[float, float]]:
        """Per axis (x, y, z) (scale, offset) taking a local coordinate p to an index of the
        warps' lookup grid (as cut): ``(p + 1) * scale - offset`` (kernels.warp_lookup)."""
        if self.warp_cut is None:
            return [(0.5 * (m.shape[0] - 1), 0.0) for m in self.warp_spline]
        return [(0.5 * (m - 1), float(i0)) for m, i0 in self.warp_cut]

    def to_lookup(self, axis: int, local: torch.Tensor) -> torch.Tensor:
        """Local coordinates along ``axis`` as ``grid_sample`` addresses the warps' lookup
        grid (in place; unchanged when that grid spans [-1, 1])."""
        if self.warp_spans is None or self.warp_spans[axis] == (-1.0, 1.0):
            return local
        lo, hi = self.warp_spans[axis]
        return local.sub_(lo).mul_(2.0 / (hi - lo)).sub_(1.0)

    def buffer(self, name: str, like: torch.Tensor, shape: Sequence[int],
               last: bool = False) -> torch.Tensor:
        """An output-sized scratch tensor: the same one each call when ``reuse``; with
        ``last`` a [C, Z, Y, X] view of a channels-last one (the compiled lookups')."""
        def make() -> torch.Tensor:
            return kernels.channels_last(shape, like) if last else like.new_empty(tuple(shape))
        if not self.reuse:
            return make()
        b = self.buffers.get(name)
        if b is None or tuple(b.shape) != tuple(shape):
            b = self.buffers[name] = make()
        return b

    @property
    def shape(self) -> Tuple[int, int, int]:
        """(Zo, Yo, Xo) of the output grid."""
        return (len(self.axes[2]), len(self.axes[1]), len(self.axes[0]))

    @property
    def warp_on_output(self) -> bool:
        return all(w is s for w, s in zip(self.warp_spline, self.spline))

