"""One regular image grid: point counts, origin and spacing together, as vtkImageData holds
them. Readers, models and queries pass a :class:`Grid` instead of three loose tuples, and
every comparison of two grids uses :meth:`Grid.differences` (one tolerance rule).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Sequence, Tuple

from .errors import StsrError

# Two grids are the same when dims match exactly and origin/spacing agree to this fraction
# of the grid's size (origin) or of the spacing itself: float32 round trips through VTK
# files change the last digits, nothing a user would mean as a different grid does.
GRID_RTOL = 1e-5

Triple = Tuple[float, float, float]


@dataclass(frozen=True)
class Grid:
    """The points of a regular 3D grid (VTK image data).

    Attributes:
        dims: point counts (nx, ny, nz), each >= 1.
        origin: (x, y, z) of the first point.
        spacing: (dx, dy, dz) between neighbouring points, each > 0.
    """

    dims: Tuple[int, int, int]
    origin: Triple = (0.0, 0.0, 0.0)
    spacing: Triple = (1.0, 1.0, 1.0)

    def __post_init__(self) -> None:
        dims = tuple(int(d) for d in self.dims)
        origin = tuple(float(v) for v in self.origin)
        spacing = tuple(float(v) for v in self.spacing)
        if len(dims) != 3 or len(origin) != 3 or len(spacing) != 3:
            raise StsrError(f"a grid needs 3 dims, 3 origin and 3 spacing values, got dims "
                            f"{dims}, origin {origin}, spacing {spacing}")
        if any(d < 1 for d in dims):
            raise StsrError(f"grid dimensions must be >= 1, got {dims}")
        object.__setattr__(self, "dims", dims)
        object.__setattr__(self, "origin", origin)
        object.__setattr__(self, "spacing", spacing)

    # --- derived -------------------------------------------------------------------------
    @property
    def n_points(self) -> int:
        nx, ny, nz = self.dims
        return nx * ny * nz

    @property
    def shape(self) -> Tuple[int, int, int]:
        """(nz, ny, nx): the numpy shape of one variable at one step (x fastest)."""
        return (self.dims[2], self.dims[1], self.dims[0])

    @property
    def lengths(self) -> Triple:
        """Distance from the first to the last point along each axis."""
        return tuple((n - 1) * s for n, s in zip(self.dims, self.spacing))  # type: ignore

    @property
    def bounds(self) -> Tuple[float, float, float, float, float, float]:
        """(xmin, xmax, ymin, ymax, zmin, zmax) of the points."""
        out: List[float] = []
        for o, l in zip(self.origin, self.lengths):
            out += [o, o + l]
        return tuple(out)  # type: ignore[return-value]

    def text(self) -> str:
        nx, ny, nz = self.dims
        return f"{nx}x{ny}x{nz}"

    # --- new grids over the same bounds ------------------------------------------------------
    def scaled(self, s: float) -> "Grid":
        """The grid ParaView's Resample To Image makes at scale ``s``: ``(n - 1) * s + 1``
        points per axis, spacing / s, the same origin (and so the same bounds)."""
        s = float(s)
        if not math.isfinite(s) or s <= 0:
            raise StsrError(f"spatial scale must be > 0, got {s}")
        dims = []
        for n in self.dims:
            m = (n - 1) * s + 1
            if abs(m - round(m)) > 1e-6:
                raise StsrError(f"scale {s:g} does not give a whole number of points along an "
                                f"axis of {n} points ((n-1)*s+1 = {m:g}); use --dims instead")
            dims.append(int(round(m)))
        return Grid(tuple(dims), self.origin,  # type: ignore[arg-type]
                    tuple(sp / s for sp in self.spacing))  # type: ignore[arg-type]

    def resampled(self, dims: Sequence[int]) -> "Grid":
        """``dims`` points per axis over the same bounds (a flat axis keeps its spacing)."""
        dims = tuple(int(d) for d in dims)
        if len(dims) != 3 or any(d < 1 for d in dims):
            raise StsrError(f"output dimensions must be three integers >= 1, got {dims}")
        spacing = [l / (m - 1) if m > 1 and n > 1 else s
                   for n, s, l, m in zip(self.dims, self.spacing, self.lengths, dims)]
        return Grid(dims, self.origin, tuple(spacing))  # type: ignore[arg-type]

    # --- comparison --------------------------------------------------------------------------
    def differences(self, other: "Grid", rtol: float = GRID_RTOL) -> List[str]:
        """What differs between the two grids, as phrases ("dimensions (3, 3, 3) vs ...");
        empty when they are the same. Origins are compared to ``rtol`` of the grid's size,
        spacings to ``rtol`` of their value."""
        diffs: List[str] = []
        if self.dims != other.dims:
            diffs.append(f"dimensions {self.dims} vs {other.dims}")
        size = max(1.0, *(abs(b) for b in self.bounds), *self.lengths)
        if any(abs(a - b) > rtol * size for a, b in zip(self.origin, other.origin)):
            diffs.append(f"origin {self.origin} vs {other.origin}")
        if any(abs(a - b) > rtol * max(abs(a), abs(b)) for a, b in
               zip(self.spacing, other.spacing)):
            diffs.append(f"spacing {self.spacing} vs {other.spacing}")
        return diffs

    # --- points ------------------------------------------------------------------------------
    def index_in(self, other: "Grid", axis: int, i: float) -> float:
        """Continuous index on ``other`` of point ``i`` of this grid along ``axis``."""
        return (self.origin[axis] + i * self.spacing[axis] - other.origin[axis]) \
            / other.spacing[axis]
