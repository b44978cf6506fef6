"""The fast base on an output grid, slab by slab: memory set by a budget, not by the grid.

An upscale reads top-down: :func:`plan_memory` (before any work: what stays resident, the
slab's rows, or one line saying what is needed) -> :func:`slab_steps` (interval by interval,
slab by slab, every output step of the interval for that slab) -> the writer's
``write_slab``. Each slab is a box of the output grid (all of x and y, a run of z rows, or
the piece of an MPI rank, streamed piece or ParaView extent cut into rows) planned as
:meth:`SplineBase.plan_grid` plans a box: its spline matrices hold only its rows, and the
warps' lookup grid is cut to the window those rows reach (their rows plus the largest
displacement), so the two kept steps' fields, the slopes along the paths and the error
estimate's fields exist on the window alone, once per interval and slab, and every number
is that of the same region of the whole grid (to float32 rounding).
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch

from .errors import StsrError
from .grid import Grid
from .model import kernels
from .model.grid_plan import GridPlan
from .outputs import Extent, error_names
from .trained import TrainedModel

DEFAULT_SHARE = 0.5            # of the available memory, the default --max-memory
DEFAULT_CAP = 2_000_000_000    # at most this by default (bytes)
SLACK_BYTES = 48 << 20         # the allocator's and threads' slack beyond what is counted
MIN_OPEN_STEPS = 16            # steps a writer keeps open at once (CONTEXT interface 2)
MIN_TILE = 8                   # y rows of the narrowest tile tried before refusing
MMAP_THRESHOLD = 1 << 20       # freed blocks this large go back to the system at once
M_MMAP_THRESHOLD = -3          # glibc's mallopt parameter (malloc.h)


def rss_bytes() -> int:
    """This process's resident memory now."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):   # not Linux: counted as nothing
        return 0


def return_freed_blocks(threshold: int = MMAP_THRESHOLD) -> bool:
    """Have glibc's malloc give every freed block of ``threshold`` bytes or more back to the
    system at once (mallopt M_MMAP_THRESHOLD), so that the process holds what the memory
    plan counts. By default glibc raises that threshold to the size of the blocks freed (up
    to 32 MB), after which a slab's temporaries come from the threads' heaps, which give
    memory back only from their top: at 257^3 under --max-memory 1GB the upscale then
    peaked 0.22 GB above what it held (1.15 GB, 0.93 GB with this). Whole process, from now
    on; False where the C library is not glibc (nothing done)."""
    import ctypes
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, int(threshold)))


def available_bytes() -> int:
    """The memory the system can give without swapping (MemAvailable), or 8 GB unknown."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 8_000_000_000


def human(n: float) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e9 else f"{n / 1e6:.0f} MB"


def parse_bytes(text: str) -> int:
    """'1GB', '512MB', '2.5G', '1e9' -> bytes (decimal units; KiB/MiB/GiB binary)."""
    s = str(text).strip().upper().replace(" ", "")
    units = {"KIB": 1 << 10, "MIB": 1 << 20, "GIB": 1 << 30, "TIB": 1 << 40,
             "KB": 10 ** 3, "MB": 10 ** 6, "GB": 10 ** 9, "TB": 10 ** 12,
             "K": 10 ** 3, "M": 10 ** 6, "G": 10 ** 9, "T": 10 ** 12, "B": 1}
    for u in sorted(units, key=len, reverse=True):
        if s.endswith(u):
            num, mult = s[:-len(u)], units[u]
            break
    else:
        num, mult = s, 1
    try:
        value = float(num) * mult
    except ValueError:
        raise StsrError(f"--max-memory {text!r} is not a size: give bytes with a unit, "
                        "e.g. 1GB or 512MB") from None
    if not math.isfinite(value) or value <= 0:
        raise StsrError(f"--max-memory {text!r} must be a positive size, e.g. 1GB")
    return int(value)


def default_max_memory(resident: Optional[int] = None, share: int = 1) -> int:
    """The default budget: DEFAULT_SHARE of the memory this process may have (what it
    holds and what is available), at most DEFAULT_CAP; ``share``: the processes on this
    machine that split it (MPI ranks)."""
    resident = rss_bytes() if resident is None else resident
    whole = DEFAULT_SHARE * (available_bytes() + share * resident)
    return int(min(DEFAULT_CAP * share, whole) / max(1, share))


@dataclass
class MemoryPlan:
    """What the slabbed evaluation will hold, decided before any work."""

    rows: int                          # output z rows per slab
    budget: int                        # bytes the process may use at its peak
    need: int                          # bytes expected at the peak with these rows
    parts: Dict[str, int] = field(default_factory=dict)   # what is counted, bytes
    default_budget: bool = True        # the budget was the default, not --max-memory
    buffers: int = 2                   # host buffers of a slab (one computed, one written)
    # y rows of a tile where a full-width slab of one row does not fit the budget: each
    # slab is then computed tile by tile along y, each tile's window fields made whole (no
    # sliding: slower, the halo is filtered per tile); None: no tiles
    tile: Optional[int] = None
    full_width: int = 0                # bytes a full-width slab of one row would need

    def text(self) -> str:
        counted = ", ".join(f"{k} {human(v)}" for k, v in self.parts.items() if v)
        if self.tile is None:
            return counted
        return (f"{counted}; slabs of {self.rows} rows in tiles of {self.tile} y rows "
                "(each tile's window computed whole: slower than full-width slabs)")


def fast_base(tm: TrainedModel) -> Any:
    """The model's spline base when the fast base alone answers on whole grids, else None."""
    base = getattr(tm.model, "base", None)
    if base is None or getattr(tm.model, "has_network", True) or \
            getattr(tm.model, "correction", None) is not None:
        return None
    return base


def covers_bounds(tm: TrainedModel, grid: Grid) -> bool:
    """Whether ``grid`` spans the data's bounds (the plans' local coordinates)."""
    return not tm.info.grid.resampled(grid.dims).differences(grid)


def whole_box(grid: Grid) -> Extent:
    return (0, grid.dims[0] - 1, 0, grid.dims[1] - 1, 0, grid.dims[2] - 1)


def output_axes(grid: Grid, device: torch.device) -> List[torch.Tensor]:
    return [torch.linspace(-1.0, 1.0, n, device=device) for n in grid.dims]


def slab_margin(base: Any, error: bool) -> Tuple[float, float, float]:
    """How far (local units, x y z) a slab's warps' window reaches beyond its rows besides
    the displacement: one data cell with the error estimate, whose data points around the
    slab then look up in the same window, and with the network weighing the sides the
    points of its lattice around the slab (two of its cells)."""
    cells = 1.0 if error else 0.0
    if getattr(base, "weighs_sides", lambda: False)():   # its lattice's points around
        cells = max(cells, 2.0 * int(getattr(base.side_weights, "stride", 1)) + 1.0)
    return tuple(2.0 * cells / (n - 1) + 1e-6 if n > 1 and cells else 0.0  # type: ignore
                 for n in base.dims)


def slab_plan(base: Any, axes: Sequence[torch.Tensor], box: Extent, error: bool,
              buffers: Optional[Dict[str, torch.Tensor]] = None) -> GridPlan:
    """The plan of one slab (a box of the output grid whose local ``axes`` span the
    data's bounds); ``buffers``: scratch tensors shared from slab to slab."""
    plan = base.plan_grid(axes, box, margin=slab_margin(base, error))
    if buffers is not None:
        plan.reuse = True
        plan.buffers = buffers
    return plan


def interval_groups(base: Any, t_norm: Sequence[float], steps: Sequence[int],
                    most: int) -> List[List[int]]:
    """``steps`` (indices into ``t_norm``) cut into runs of consecutive steps in the same
    interval between kept steps (a kept step goes with the interval it starts), at most
    ``most`` a run: each run's slabs share the interval's fields."""
    groups: List[List[int]] = []
    last = None
    for i in steps:
        j, _ = base._slot(float(t_norm[i]))
        if groups and j == last and len(groups[-1]) < most:
            groups[-1].append(i)
        else:
            groups.append([i])
        last = j
    return groups


def _window_bytes(plan: GridPlan) -> int:
    return 4 * math.prod(m.shape[0] for m in plan.warp_spline)


def plan_memory(tm: TrainedModel, grid: Grid, box: Extent, n_arrays: int, error: bool,
                max_memory: Optional[int], buffers_per_slab: int = 2,
                writer_bytes: Optional[Callable[[int], int]] = None,
                options: str = "", row_multiple: int = 1, group_steps: int = 1,
                tile: Optional[int] = None) -> MemoryPlan:
    """The slab rows that keep this process within ``max_memory`` (None: the default,
    DEFAULT_SHARE of the available memory and at most DEFAULT_CAP, or what the smallest
    slab needs where that is more and the machine has it), counting what is resident now
    (the process and its model), the data-sized fields of an interval (the slopes along the
    paths and in time), and per slab the warps' window fields, their filtering's scratch,
    the error estimate's fields and the host buffers; ``writer_bytes(rows)``: what the
    writer holds; rows a multiple of ``row_multiple`` where more than that fit (a writer's
    chunks then never wait for a second slab). Where even a full-width slab of one row
    does not fit, each slab is cut into tiles along y (:func:`plan_tiles`; the rows and
    tile height that recompute the least halo; ``group_steps``: the most output steps of
    an interval group, whose slab buffers are then held together; ``tile``: force that
    tile height, for tests). A budget that cannot be met even so raises one StsrError
    saying what is needed and what lowers it; nothing has been computed or written then."""
    base = fast_base(tm)
    v = base.n_vars
    dev = base.slot_times.device
    kernels.warm_up()                 # the kernels' code counts in what is resident
    resident = rss_bytes()
    x0, x1, y0, y1, z0, z1 = box
    zb = z1 - z0 + 1
    p = (x1 - x0 + 1) * (y1 - y0 + 1)
    axes = output_axes(grid, dev)
    mid = z0 + zb // 2
    probe_rows = [1, max(1, min(zb, 32))]
    windows = []
    for r in probe_rows:
        lo = min(max(z0, mid - r // 2), z1 - r + 1)
        windows.append(_window_bytes(slab_plan(base, axes, (x0, x1, y0, y1, lo, lo + r - 1),
                                               error)) * v)
    if probe_rows[1] > probe_rows[0]:
        win_per_row = (windows[1] - windows[0]) / (probe_rows[1] - probe_rows[0])
    else:
        win_per_row = 0.0
    win_fixed = windows[0] - win_per_row
    cubic = bool(getattr(base, "has_flow", False) and (base.path_mix != 0).any())
    still_cubic = bool(getattr(base, "hermite", False) and (base.time_mix != 0).any())
    fused = base.ring_windows()     # every variable moved, every lookup compiled
    if fused:           # 2 slots, + the slopes along the path of the variables with a share
        n_fields = 2 + 2 * len(base.slope_variables()) / v
    else:               # + every variable's slopes and the two ends folded per variable
        n_fields = 2 + (4 if cubic else 0)
    # a field's filtering holds its last two passes on the coefficients' rows: the window
    # over the warps' grid's refinement of the data along z
    probe = slab_plan(base, axes, (x0, x1, y0, y1, z0, z1), error)
    ratio = max(1.0, (probe.cut_ranges()[2][0] - 1) / max(1, base.dims[2] - 1))
    scratch = min(1.0, 2.5 / ratio)
    on_window = probe.points_on_window
    del probe
    moves = base.moves_any()
    if not moves and not on_window:
        # nothing moves and the output's points are not the warps' grid's: no field is
        # made on the window (the values and the error estimate work on the output's points)
        n_fields, scratch = 0, 0.0
    slot = 4 * v * math.prod(d + 2 for d in base.dims)
    space = getattr(base, "space", None)     # the spatial prior's corrections (kept steps)
    prior = space.memory_bytes(base.dims[::-1]) if space is not None else 0
    data_sized = slot * (0 if fused else 6 if cubic else 0)
    if fused:     # the slopes along the path kept per slot (two), and their solve's scratch
        data_sized += 5 * base.slope_part_bytes()
    if base.slots_in_file() is not None and moves:
        data_sized += 2 * slot    # the file's last two slots read whole (the paths), kept
    # the part that is not moved works on the coefficients' rows a slab reads: their
    # weighted sum over the slots, one slot's rows as read and a kept step's rows the error
    # estimate reads (SplineBase.still_rows); with trained slopes in time the two ends' and
    # their slopes' rows and the formula's scratch
    moved = base.flow_mix if getattr(base, "has_flow", False) else torch.zeros(v)
    some_still = bool((moved != 1).any()) or still_cubic
    if getattr(base, "slopes", None) is None:
        still_arrays = 3 if some_still else 0
    else:
        still_arrays = 12 if still_cubic else 4 if some_still else 0
    dx, dy, dz = base.dims
    coef_row = 4 * v * (dx + 2) * (dy + 2)
    one_pass = kernels.available(dev)       # the error estimate in one compiled pass
    per_row_out = 4 * p * (n_arrays * buffers_per_slab + (0 if kernels.available(dev) else 12))
    err_fixed = err_per_row = 0.0
    if error:
        # the output-sized fields it holds: none where the output's points are the warps'
        # grid's (the kept steps' fields there are its spline), else the two kept steps'
        # spline on the slab (and, torch: the indicator in space lerped, the carried term)
        err_per_row = 4 * p * v * ((0 if on_window else 2) if one_pass else 4)
        # the data's points around the slab: both kept steps' values and the sides'
        # disagreement (three fields) on data rows of a slab's (and two more)
        data_row = 4 * 3 * v * dx * dy
        err_per_row += data_row * (dz - 1) / max(1, grid.dims[2] - 1)
        err_fixed = 2 * data_row
    # and its filtering onto the slab's points: the x pass [rows, Y+2, Xo] and the y pass
    # [rows, Yo, Xo] on the coefficients' rows (kernels.banded), per coefficients' row
    filter_row = 4 * v * ((dy + 2) + (y1 - y0 + 1)) * (x1 - x0 + 1) if some_still else 0
    still_row = still_arrays * coef_row + filter_row
    still_per_row = still_row * (dz - 1) / max(1, grid.dims[2] - 1)
    still_fixed = still_row * 4                           # the cubic's support beyond them

    def need(rows: int) -> Tuple[int, Dict[str, int]]:
        win = win_fixed + win_per_row * rows
        parts = {"process and model": resident, "data-sized fields": data_sized,
                 "spatial prior": prior,
                 "window fields": int(win * (n_fields + scratch)),
                 "slab buffers": int(per_row_out * rows),
                 "error estimate": int(err_fixed + err_per_row * rows),
                 "still variables' rows": int(still_fixed + still_per_row * rows),
                 "writer": int(writer_bytes(rows)) if writer_bytes is not None else 0,
                 "slack": SLACK_BYTES}
        return sum(parts.values()), parts

    smallest, parts1 = need(1)
    avail = available_bytes()
    default = max_memory is None
    if default:
        budget = default_max_memory(resident)
        if smallest > budget and smallest <= 0.9 * (avail + resident):
            budget = smallest
    else:
        budget = int(max_memory)
    yb = y1 - y0 + 1
    full = smallest
    if (smallest > budget or tile is not None) and yb > 1:
        # tiles along y: the window of a tile box (its rows and y rows plus the halo)
        kept: Dict[Tuple[int, int], int] = {}

        def tile_window(rows: int, ty: int) -> int:
            got = kept.get((rows, ty))
            if got is None:
                lo = min(max(z0, mid - rows // 2), z1 - rows + 1)
                ymid = y0 + yb // 2
                ylo = min(max(y0, ymid - ty // 2), y1 - ty + 1)
                got = kept[(rows, ty)] = _window_bytes(slab_plan(
                    base, axes, (x0, x1, ylo, ylo + ty - 1, lo, lo + rows - 1), error)) * v
            return got

        n_buf = max(buffers_per_slab, group_steps + (1 if buffers_per_slab > 1 else 0))
        xb = x1 - x0 + 1

        def tiled_need(rows: int, ty: int) -> Tuple[int, Dict[str, int]]:
            """:func:`need`'s parts with a tile's window, the group's slab buffers, the
            tile buffer and the error estimate's output-sized fields on a tile."""
            share = ty / yb               # of the slab's output-sized fields, on a tile
            parts = dict(need(rows)[1])
            parts.update({
                "window fields": int(tile_window(rows, ty) * (n_fields + scratch)),
                "slab buffers": int(4 * p * n_arrays * n_buf * rows),
                "tile buffers": int(4 * xb * ty * rows * (
                    n_arrays + (0 if kernels.available(dev) else 12))),
                "error estimate": int(err_fixed + err_per_row * share * rows)})
            return sum(parts.values()), parts

        least = min(MIN_TILE, yb)
        if tile is not None:                 # forced (tests): the most rows that fit
            ty, rows = max(1, min(int(tile), yb)), 1
            while rows < zb and tiled_need(rows + 1, ty)[0] <= budget:
                rows += 1
            total, parts = tiled_need(rows, ty)
            return MemoryPlan(rows=rows, budget=budget, need=total, parts=parts,
                              default_budget=default, buffers=n_buf, tile=ty,
                              full_width=full)
        if tiled_need(1, least)[0] <= budget:
            rows, ty = plan_tiles(lambda r, t: tiled_need(r, t)[0] <= budget, tile_window,
                                  zb, yb, least)
            if row_multiple > 1 and rows > row_multiple and rows < zb:
                rows -= rows % row_multiple
            total, parts = tiled_need(rows, ty)
            return MemoryPlan(rows=rows, budget=budget, need=total, parts=parts,
                              default_budget=default, buffers=n_buf, tile=ty,
                              full_width=full)
        smallest, parts1 = tiled_need(1, least)
    if smallest > budget:
        what = "--max-memory " + human(budget) if not default else \
            f"the memory available ({human(avail)})"
        lower = (["--no-error"] if error else []) + [o for o in options.split(",") if o]
        counted = ", ".join(f"{k} {human(x)}" for k, x in parts1.items() if x)
        raise StsrError(f"{what} is too small for this output: one slab of it needs "
                        f"{human(smallest)} ({counted}"
                        + (f"; in tiles of {min(MIN_TILE, yb)} y rows, full width "
                           f"{human(full)}" if yb > 1 else "")
                        + "); give --max-memory "
                        f"{human(smallest * 1.05)} or more"
                        + (f", or lower the need with {' or '.join(lower)}" if lower else ""))
    rows = zb
    if need(zb)[0] > budget:
        lo, hi = 1, zb                  # the most rows that fit (need grows with rows)
        while hi - lo > 1:
            m = (lo + hi) // 2
            lo, hi = (m, hi) if need(m)[0] <= budget else (lo, m)
        rows = lo
    if row_multiple > 1 and rows > row_multiple and rows < zb:
        rows -= rows % row_multiple
    total, parts = need(rows)
    return MemoryPlan(rows=rows, budget=budget, need=total, parts=parts,
                      default_budget=default, buffers=buffers_per_slab, full_width=full)


def plan_tiles(fits: Callable[[int, int], bool], window: Callable[[int, int], int],
               zb: int, yb: int, least: int) -> Tuple[int, int]:
    """The slab rows and tile height (y rows) that fit (``fits(rows, tile)``, growing with
    both) and make the least window per output point (``window(rows, tile)`` bytes): a
    tile's window is made whole, its halo in z and y filtered again for every tile, so
    near-square tiles of many rows recompute least; among equal costs the larger tile."""
    best: Optional[Tuple[float, int, int]] = None        # (cost, rows, tile)
    rows = 1
    while rows <= zb and fits(rows, least):
        lo, hi = least, yb                  # the largest tile that fits with these rows
        if fits(rows, yb):
            lo = yb
        else:
            while hi - lo > 1:
                m = (lo + hi) // 2
                lo, hi = (m, hi) if fits(rows, m) else (lo, m)
        cost = window(rows, lo) / (rows * lo)
        if best is None or (cost, -lo) < (best[0], -best[2]):
            best = (cost, rows, lo)
        rows = rows + 1 if rows < 8 else int(rows * 1.25) + 1
    assert best is not None
    return best[1], best[2]


def window_cap(base: Any, axes: Sequence[torch.Tensor], box: Extent, rows: int,
               error: bool) -> int:
    """The most rows of the warps' grid a window of the box's slabs of ``rows`` rows holds
    (those in the middle, clipped by neither end, plus one for where the window's ends
    round): the fields are made with room for that many (GridPlan.window_cap)."""
    x0, x1, y0, y1, z0, z1 = box
    mid = z0 + ((z1 - z0 + 1) // 2 // rows) * rows
    most = 0
    for s0 in {max(z0, min(z1, mid + d * rows)) for d in (-1, 0, 1)}:
        plan = slab_plan(base, axes, (x0, x1, y0, y1, s0, min(z1, s0 + rows - 1)), error)
        most = max(most, plan.cut_ranges()[2][2])
    return min(most + 1, plan.cut_ranges()[2][0])


def units(tm: TrainedModel) -> torch.Tensor:
    """[2, V] per variable the scale and offset taking normalised values v to the
    variables' units, ``(v + 1) * scale + offset`` in float32 (VariableStats.denormalise's;
    a constant variable: scale 0, its one value)."""
    rows = []
    for n in tm.info.variables:
        st = tm.info.stats[n]
        rows.append((st.half_range if st.hi > st.lo else 0.0, st.lo))
    return torch.tensor(rows, dtype=torch.float32).t().contiguous()


@torch.no_grad()
def evaluate_slab(tm: TrainedModel, plan: GridPlan, t_norm: float, error: bool,
                  host: torch.Tensor) -> torch.Tensor:
    """One step on one slab, in physical units, into ``host`` [V (+ V errors), r, Y, X]
    (on the model's device, or a host buffer the values are copied to): the units applied
    in the lookups' pass and the error estimate computed in one pass straight into its
    rows where the compiled kernels run."""
    base = fast_base(tm)
    v = base.n_vars
    dev = base.slot_times.device
    same = host.device == dev
    if same:
        plan.buffers["out"] = host[:v]          # evaluated straight into the buffer
    u = units(tm).to(dev)
    vals = base.evaluate_grid(plan, t_norm, units=u)
    if vals.data_ptr() != host.data_ptr():
        host[:v].copy_(vals, non_blocking=host.is_pinned())
    if error:
        half = torch.tensor([tm.info.stats[n].half_range for n in tm.info.variables],
                            dtype=torch.float32, device=dev)
        if same and kernels.available(dev):
            base.error_grid(plan, t_norm, units=half, out=host[v:2 * v])
        else:
            err = base.error_grid(plan, t_norm, units=half)
            host[v:2 * v].copy_(err, non_blocking=host.is_pinned())
    return host


def slab_arrays(tm: TrainedModel, host: torch.Tensor, error: bool) -> Dict[str, np.ndarray]:
    """A slab's host buffer as the writer's arrays: name -> [r, Y, X] (views)."""
    a = host.numpy()
    names = list(tm.info.variables) + (error_names(tm.info)[0] if error else [])
    return {n: a[k] for k, n in enumerate(names)}


def slab_steps(tm: TrainedModel, grid: Grid, t_norm: Sequence[float], steps: Sequence[int],
               box: Extent, error: bool, mem: MemoryPlan, take: Callable[[], torch.Tensor],
               most_open: int = MIN_OPEN_STEPS
               ) -> Iterator[Tuple[int, int, torch.Tensor]]:
    """(step index, first row, host buffer [V (+ V), r, Y, X]) in loop order: interval by
    interval, slab by slab, every step of the interval for that slab; ``take()`` gives a
    host buffer of the slab's shape (the caller returns it when done with it). The
    filtering's scratch is kept from slab to slab meanwhile (kernels.kept_scratch)."""
    with kernels.kept_scratch():
        yield from _slab_steps(tm, grid, t_norm, steps, box, error, mem, take, most_open)


def _slab_steps(tm: TrainedModel, grid: Grid, t_norm: Sequence[float], steps: Sequence[int],
                box: Extent, error: bool, mem: MemoryPlan, take: Callable[[], torch.Tensor],
                most_open: int) -> Iterator[Tuple[int, int, torch.Tensor]]:
    """:func:`slab_steps`' loop."""
    base = fast_base(tm)
    axes = output_axes(grid, base.slot_times.device)
    x0, x1, y0, y1, z0, z1 = box
    if mem.tile is not None:
        yield from tiled_steps(tm, axes, t_norm, steps, box, error, mem, take, most_open)
        return
    shared: Dict[str, torch.Tensor] = {}
    slide = kernels.available(base.slot_times.device)
    cap = window_cap(base, axes, box, mem.rows, error) if slide else None
    ring = slide and base.ring_windows()
    one = None       # the box in one slab: one plan for every interval, so that a kept
    if mem.rows >= z1 - z0 + 1:   # step's fields serve both intervals beside it (the
        one = slab_plan(base, axes, box, error, shared)   # later one's slot, the next's)
    for group in interval_groups(base, t_norm, steps, most_open):
        before = None
        for s0 in range(z0, z1 + 1, mem.rows):
            s1 = min(z1, s0 + mem.rows - 1)
            if one is not None:
                plan = one
                for i in group:
                    host = take()[:, :s1 - s0 + 1]
                    yield i, s0 - z0, evaluate_slab(tm, plan, float(t_norm[i]), error, host)
                continue
            if s1 - s0 + 1 != mem.rows:
                shared = {}              # the last, shorter slab: buffers of its own shape
            plan = slab_plan(base, axes, (x0, x1, y0, y1, s0, s1), error, shared)
            if slide:
                plan.slid_from = before      # its window's fields slide into this one's
                plan.window_cap = cap
                plan.ring = ring             # as rings, where only kernels read them
                if before is not None:
                    before.slid_from = None
            for i in group:
                host = take()[:, :s1 - s0 + 1]
                yield i, s0 - z0, evaluate_slab(tm, plan, float(t_norm[i]), error, host)
            before = plan
            before.error_fields, before.data_plan, before.side_plan = {}, None, None
        before = plan = None


def tiled_steps(tm: TrainedModel, axes: Sequence[torch.Tensor], t_norm: Sequence[float],
                steps: Sequence[int], box: Extent, error: bool, mem: MemoryPlan,
                take: Callable[[], torch.Tensor], most_open: int = MIN_OPEN_STEPS
                ) -> Iterator[Tuple[int, int, torch.Tensor]]:
    """:func:`slab_steps` where a full-width slab does not fit (``mem.tile``): each slab is
    cut into tiles of ``mem.tile`` y rows, each a box planned on its own (its window is its
    rows and y rows plus the halo, made whole: tiles do not slide); per slab the group's
    steps' host buffers are taken first, then tile by tile every step of the group is
    computed into a tile buffer and copied into its place in that step's buffer, so the
    tile's fields serve the whole group; the slab's buffers are yielded once complete."""
    base = fast_base(tm)
    dev = base.slot_times.device
    x0, x1, y0, y1, z0, z1 = box
    ty = int(mem.tile)
    shared: Dict[str, torch.Tensor] = {}       # the tiles' scratch, reused tile to tile
    buf: Optional[torch.Tensor] = None          # the tile buffer [V (+ V), r, t, X]
    for group in interval_groups(base, t_norm, steps, most_open):
        for s0 in range(z0, z1 + 1, mem.rows):
            s1 = min(z1, s0 + mem.rows - 1)
            r = s1 - s0 + 1
            hosts = [take()[:, :r] for _ in group]          # each [V (+ V), r, Y, X]
            for t0 in range(y0, y1 + 1, ty):
                t1 = min(y1, t0 + ty - 1)
                shape = (hosts[0].shape[0], r, t1 - t0 + 1, x1 - x0 + 1)
                if buf is None or tuple(buf.shape) != shape:
                    shared = {}           # the first, or a shorter, tile: its own buffers
                    buf = None
                    buf = torch.empty(shape, dtype=torch.float32, device=dev)
                plan = slab_plan(base, axes, (x0, x1, t0, t1, s0, s1), error, shared)
                for host, i in zip(hosts, group):
                    out = evaluate_slab(tm, plan, float(t_norm[i]), error, buf)
                    host[:, :, t0 - y0:t1 - y0 + 1].copy_(out)
                # let go of the tile's window now, not when the plans that share its
                # fields (the data's and the sides' lattice) are collected
                plan.buffers.pop("out", None)
                plan.fields, plan.slope_fields, plan.error_fields = {}, {}, {}
                plan.data_plan = plan.side_plan = None
                plan = None
            for host, i in zip(hosts, group):
                yield i, s0 - z0, host


def predict_box(tm: TrainedModel, t: float, grid: Grid, box: Extent, error: bool,
                max_memory: Optional[int] = None,
                progress: Optional[Callable[[float], Optional[bool]]] = None
                ) -> Optional[Dict[str, np.ndarray]]:
    """The fast base at time ``t`` on the ``box`` of ``grid``, computed slab by slab into
    whole arrays (name -> [Z, Y, X] of the box); None if ``progress`` returned False."""
    base = fast_base(tm)
    v = base.n_vars
    n_arrays = v * (2 if error else 1)
    x0, x1, y0, y1, z0, z1 = box
    shape = (n_arrays, z1 - z0 + 1, y1 - y0 + 1, x1 - x0 + 1)
    result = np.empty(shape, np.float32)
    dev = base.slot_times.device
    key = ("box", grid, tuple(box), bool(error), max_memory)
    if tm.plan is not None and tm.plan[0] == key:
        # the box in one slab as at the last call: its plan holds the interval's fields
        # (the kept steps' and their slopes on the warps' window), so the steps of one
        # interval asked for one by one (ParaView, api.predict) compute them once
        plan = tm.plan[1]
        out = evaluate_slab(tm, plan, tm.info.normalised_time(t), error,
                            torch.from_numpy(result) if dev.type == "cpu" else
                            torch.empty(shape, dtype=torch.float32, device=dev))
        plan.buffers.pop("out", None)          # the caller's arrays are not the plan's
        if out.data_ptr() != torch.from_numpy(result).data_ptr():
            result[:] = out.cpu().numpy()
        if progress is not None and progress(1.0) is False:
            return None
        names = list(tm.info.variables) + (error_names(tm.info)[0] if error else [])
        return {n: result[k] for k, n in enumerate(names)}
    tm.plan = None                          # the last call's plan and fields let go first
    mem = plan_memory(tm, grid, box, n_arrays, error, max_memory, buffers_per_slab=1,
                      writer_bytes=lambda rows: result.nbytes)
    if mem.rows == shape[1] and mem.tile is None:
        # one slab: planned once and kept on the model for the next call on this box
        axes = output_axes(grid, dev)
        tm.plan = (key, slab_plan(base, axes, box, error, {}))
        return predict_box(tm, t, grid, box, error, max_memory, progress)
    if mem.rows == shape[1] and mem.tile is None and dev.type == "cpu":   # straight in
        buf = torch.from_numpy(result)
        take = lambda: buf                                  # noqa: E731
    else:
        buf = torch.empty((n_arrays, mem.rows) + shape[2:], dtype=torch.float32,
                          device=dev)
        take = lambda: buf                                  # noqa: E731
    n_slabs = -(-shape[1] // mem.rows)
    for k, (_, r0, host) in enumerate(slab_steps(tm, grid, [tm.info.normalised_time(t)],
                                                  [0], box, error, mem, take)):
        if host.data_ptr() != torch.from_numpy(result).data_ptr():
            result[:, r0:r0 + host.shape[1]] = host.cpu().numpy()
        if progress is not None and progress((k + 1) / n_slabs) is False:
            return None
    names = list(tm.info.variables) + (error_names(tm.info)[0] if error else [])
    return {n: result[k] for k, n in enumerate(names)}


def write_slabs(tm: TrainedModel, grid: Grid, t_out: Sequence[float], steps: Sequence[int],
                writer: Any, error: bool, mem: MemoryPlan,
                callback: Optional[Callable[[float], Optional[bool]]] = None,
                overlap: bool = True) -> Dict[str, float]:
    """Every step of ``steps`` slab by slab (:func:`slab_steps`) handed to
    ``writer.write_slab``; with ``overlap`` (and a background writer that takes slabs,
    io/background.py) written on a thread while the next slab is computed, through
    ``mem.buffers`` host buffers that go back to the pool once written (a slow disk makes
    the computing wait). On CUDA the slab is computed into one of two device buffers and
    copied to a pinned host buffer without waiting; the writing thread awaits that copy
    alone (a CUDA event). ``callback(fraction)`` returning False cancels. Returns the
    seconds computing, writing and waiting for the writer."""
    import time
    from .io.background import BackgroundWriter
    from .overlap import HostBuffers, step_ready
    return_freed_blocks()             # RSS = what is held, as the plan counts it
    base = fast_base(tm)
    dev = base.slot_times.device
    n_arrays = base.n_vars * (2 if error else 1)
    z_n, y_n, x_n = grid.shape
    shape = (n_arrays, mem.rows, y_n, x_n)
    cuda = dev.type == "cuda"
    threaded = overlap and hasattr(BackgroundWriter, "write_slab")
    box = (0, x_n - 1, 0, y_n - 1, 0, z_n - 1)
    t_norm = [tm.info.normalised_time(float(t)) for t in t_out]
    # tiles: every step of an interval group holds its slab's buffer until the slab's
    # last tile is computed (one more, threaded, for the one being written)
    group = 1 if mem.tile is None else \
        max(len(g) for g in interval_groups(base, t_norm, steps, MIN_OPEN_STEPS))
    pool = HostBuffers(shape, dev, max(mem.buffers if threaded else 1,
                                       group + (1 if threaded and mem.tile else 0)))
    works = [torch.empty(shape, dtype=torch.float32, device=dev)
             for _ in range(max(2, group))] if cuda else []
    total = max(1, len(steps) * -(-z_n // mem.rows))
    state = {"done": 0, "cancelled": False, "turn": 0, "waited": 0.0}
    held: List[torch.Tensor] = []

    def written() -> None:
        state["done"] += 1
        if callback is not None and callback(state["done"] / total) is False:
            state["cancelled"] = True

    def take() -> torch.Tensor:
        if cuda:
            state["turn"] = (state["turn"] + 1) % len(works)
            return works[state["turn"]]
        t1 = time.perf_counter()
        buf = pool.take()        # every buffer still being written: the computing waits
        state["waited"] += time.perf_counter() - t1
        held.append(buf)
        return buf

    background = BackgroundWriter(writer, on_written=None) if threaded else None
    compute_s = write_s = waited = 0.0
    try:
        t0 = time.perf_counter()
        for i, r0, slab in slab_steps(tm, grid, t_norm, steps, box, error, mem, take):
            if cuda:
                t1 = time.perf_counter()
                full = pool.take()
                waited += time.perf_counter() - t1
                host = full[:, :slab.shape[1]]
                host.copy_(slab, non_blocking=True)
            else:
                full, host = held.pop(0), slab       # taken in the order yielded
            compute_s += time.perf_counter() - t0 - state["waited"]
            waited += state["waited"]
            state["waited"] = 0.0
            t1 = time.perf_counter()
            arrays = slab_arrays(tm, host, error)
            if background is not None:
                def release(b: torch.Tensor = full) -> None:
                    pool.give_back(b)
                    written()
                background.write_slab(i, r0, arrays, ready=step_ready(dev), release=release)
                waited += time.perf_counter() - t1
            else:
                if cuda:
                    torch.cuda.current_stream(dev).synchronize()
                writer.write_slab(i, r0, arrays)
                pool.give_back(full)
                written()
                write_s += time.perf_counter() - t1
            if state["cancelled"]:
                raise StsrError("prediction cancelled")
            t0 = time.perf_counter()
        if background is not None:
            t1 = time.perf_counter()
            background.finish()
            waited += time.perf_counter() - t1
            write_s = background.write_s
        if state["cancelled"]:
            raise StsrError("prediction cancelled")
    except BaseException:
        if background is not None:
            background.abort()
        raise
    return {"compute_s": compute_s, "write_s": write_s,
            "wait_s": waited if background is not None else write_s}
