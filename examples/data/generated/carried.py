"""Fields carried by a known velocity, without numerical diffusion: a characteristic map.
Each output step holds, for every grid point, where its fluid was at t = 0 (the departure
point); the fields are the initial fields evaluated there, exactly. From one step to the
next the map is updated by tracing every grid point back over the step (RK4 on the velocity)
and looking up the last step's map there (cubic splines: the map is smooth where the fields
it carries are sharp)."""
from __future__ import annotations

from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np
from scipy.ndimage import map_coordinates

from .grid import Box

# (x, y, z) coordinates, broadcastable arrays
Points = Tuple[np.ndarray, np.ndarray, np.ndarray]
# velocity(points, t) -> (u, v, w); None for a component that is zero everywhere
Velocity = Callable[[Points, float], Tuple[Optional[np.ndarray], ...]]
# points repeated on each side of a periodic axis: the cubic spline's prefilter forgets the
# border within a few points (its pole is -0.27: 0.27^8 ~ 3e-5)
_WRAP_PAD = 8


def trace_back(velocity: Velocity, p: Points, t1: float, t0: float, substeps: int) -> Points:
    """Where the fluid at ``p`` at time ``t1`` was at ``t0`` (classic RK4, ``substeps``
    equal steps)."""
    h = (t0 - t1) / substeps
    t = t1

    def moved(q: Points, k, s: float) -> Points:
        return tuple(c if kc is None else c + s * kc for c, kc in zip(q, k))  # type: ignore

    for _ in range(substeps):
        k1 = velocity(p, t)
        k2 = velocity(moved(p, k1, 0.5 * h), t + 0.5 * h)
        k3 = velocity(moved(p, k2, 0.5 * h), t + 0.5 * h)
        k4 = velocity(moved(p, k3, h), t + h)
        p = tuple(c if a is None else c + h / 6 * (a + 2 * b + 2 * cc + d)   # type: ignore
                  for c, a, b, cc, d in zip(p, k1, k2, k3, k4))
        t += h
    return p


def grid_points(box: Box) -> Points:
    """(x, y, z) of every grid point, each ``[Z, Y, X]`` (float64)."""
    z, y, x = box.axes()
    shape = (box.n,) * 3
    return (np.broadcast_to(x, shape), np.broadcast_to(y, shape), np.broadcast_to(z, shape))


def update_map(departure: Points, traced: Points, box: Box, periodic_x: bool = False,
               still: Sequence[bool] = (False, False, False)) -> Points:
    """The departure points of the grid one step later: ``departure`` (of the grid at the
    last step) looked up at ``traced`` (where the grid points were at the last step).
    Off the box the map's offset from the grid is held at the border's; with
    ``periodic_x`` the box repeats along x (its last point is its first). Axes marked
    ``still`` never move and are neither traced nor looked up."""
    grid = grid_points(box)
    pad = _WRAP_PAD if periodic_x else 0
    coords: List[np.ndarray] = []
    for axis, (c, s) in enumerate(zip(traced, still)):         # x, y, z
        if s:
            coords.append(grid[axis] / box.h)
        elif axis == 0 and periodic_x:
            coords.append(np.mod(c, box.length) / box.h + pad)
        else:
            coords.append(np.clip(c, 0.0, box.length) / box.h)
    index = np.stack(coords[::-1])                             # [3 (z, y, x), Z, Y, X]
    out = []
    for d, c, g, s in zip(departure, traced, grid, still):
        if s:
            out.append(g)
            continue
        offset = d - g                                         # smooth, bounded
        if periodic_x:              # repeat along x only (the last point is the first)
            offset = np.concatenate([offset[..., -pad - 1:-1], offset, offset[..., 1:pad + 1]],
                                    axis=-1)
        out.append(c + map_coordinates(offset, index, order=3, mode="nearest"))
    return tuple(out)  # type: ignore[return-value]


def departure_points(velocity: Velocity, box: Box, t: float, substeps: int,
                     every: int = 2) -> Points:
    """Where the fluid at every grid point at time ``t`` was at t = 0, for motions that
    deform the box only gently (its map stays smooth): a lattice of every ``every``-th point
    is traced back directly (``substeps`` RK4 steps; points may come from outside the box),
    and the grid takes the lattice's affine fit exactly (a translation or rotation is exact)
    plus the rest of it by cubic splines."""
    if (box.n - 1) % every:
        raise ValueError(f"{box.n} points: (n - 1) must be a multiple of every={every}")
    lattice = Box((box.n - 1) // every + 1, box.length)
    p = tuple(np.ascontiguousarray(c) for c in grid_points(lattice))
    d = trace_back(velocity, p, t, 0.0, substeps) if t > 0 and substeps else p
    basis = np.stack([c.ravel() for c in p] + [np.ones(p[0].size)], axis=1)      # [N, 4]
    grid = grid_points(box)
    index = np.stack(np.meshgrid(*(np.arange(box.n) / every,) * 3, indexing="ij"))
    out = []
    for dc in d:                                                    # x, y, z
        coef = np.linalg.lstsq(basis, dc.ravel(), rcond=None)[0]    # [4]
        rest = dc - (basis @ coef).reshape(dc.shape)
        affine = coef[0] * grid[0] + coef[1] * grid[1] + coef[2] * grid[2] + coef[3]
        if np.abs(rest).max() > 1e-12 * (1 + np.abs(dc).max()):     # not affine
            affine = affine + map_coordinates(rest, index, order=3, mode="nearest")
        out.append(affine)
    return tuple(out)  # type: ignore[return-value]
