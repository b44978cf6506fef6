"""The fast model's analytic base: per variable, a cubic B-spline through the kept data in
space (one coefficient slot per kept step), and between kept steps

    base(t) = linear(t) + c * (cubic(t) - linear(t)) + m * (moved(t) - linear(t)),

with c (``time_mix``) and m (``flow_mix``) in [0, 1] per variable: linear in time, the
natural cubic spline in time (each slot also holds its slope in time, so a query still reads
only the two neighbouring slots) and motion-compensated interpolation (a displacement field
per interval, ``flow``; see time_basis.py for how c, m and the fields are chosen).

:meth:`SplineBase.fit` solves it from the data; ``forward`` evaluates it at any points
(training, arbitrary queries). Nothing here is a learned feature: the network's encodings
live in encodings.py.
"""
from __future__ import annotations

import ctypes
import math
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .encodings import NATURAL, bspline_coefficients, bspline_sample, slot_weights
from . import between_smooth, kernels
from .. import distributed
from .paths import accelerations, bend_shift, end_weights, hermite_terms, slope_weights
from .slots import FileSlots
from .steps import Steps, as_steps
from .time_basis import (Resampled, cross_validated_mix, displacement_grid_dims,
                         fit_displacement, held_out_pairs, hermite_correction,
                         natural_spline_slopes, resample_for_fit)
from .error_estimate import ERROR_LEVELS, calibrate, error_grid
from .time_refine import gate as gate_refinement
from .spline_boundary import choose_boundary
from .grid_plan import (GridPlan, lattice_axes, linear_matrix, separable, share_fields,
                        spline_matrix)
from .space_residual import SpaceResidual, fine_matrices
from .time_select import (carried_scores, chain_options, chain_pairs, chains,
                          choose, half_chains, half_step, TrilinearScores)

BASE_TIMES = ("select", "auto", "linear", "cubic", "flow")
SPLINE_BOUNDARIES = ("select", "natural")   # the spline's faces: chosen per variable, or all
                                            # natural (the only kind before the choice)
MOVING = ("select", "auto", "flow")     # the base_time choices with displacements
MIN_FIT_SECONDS = 0.05       # a displacement fit with less time than this is skipped
WARP_FIELD_VALUES = 1 << 26  # values of one slot on the warps' grid when finer than 2x
WARP_SLAB_POINTS = 1 << 20    # output points per warp call: bounds its coordinate tensors
PATH_SLOPE_POINTS = 1 << 18   # data points per step of the slopes along the path
PATH_SLOPE_SPLINE = True      # look the neighbours up in the spline (else trilinearly)
PATH_SLOPE_HALO = 16          # data rows beyond a slab's the slopes along the path are solved on
PATH_SLOPE_KEEP = 32 << 20    # bytes: a slot's slopes along the path (the variables with a
                              # cubic share) up to this size solved once on the whole lattice
HELD_OUT_SHARE = 0.2          # of the time budget kept for scoring held-out steps (select)


def each_slab(work: Callable[[int], None], starts: Sequence[int],
              device: torch.device) -> None:
    """``work(start)`` for every slab start: side by side on the CPU's threads (the lookups
    in it, ``grid_sample``, run on one core on the CPU), one after the other elsewhere.
    Each slab writes its own rows, so the numbers are the same either way."""
    if device.type == "cpu" and torch.get_num_threads() > 1 and len(starts) > 1:
        with ThreadPoolExecutor(torch.get_num_threads()) as pool:
            list(pool.map(work, starts))
    else:
        for start in starts:
            work(start)


def slid_window(plan: "GridPlan", before: Optional[torch.Tensor],
                rows: Callable[..., torch.Tensor],
                whole: Callable[[], torch.Tensor], channels: int = 0) -> torch.Tensor:
    """A field on ``plan``'s window of the warps' grid [C, Zw, Yw, Xw] (channels last):
    where the slab before (``plan.slid_from``) held it on a window this one overlaps, its
    rows there are moved down in the same memory and only the new rows computed
    (``rows(r0, r1, out=None)``: rows r0..r1-1 of this window, into ``out`` when given),
    so each row of the warps' grid is filtered once per interval whatever the slabs' halo;
    else ``whole()``, or (``channels`` given: the compiled kernels) its rows into memory of
    ``plan.window_cap`` rows (the largest window of the slabs of this box: a window that
    grows from slab to slab, as the first ones clipped at the grid's edge do, then never
    needs new memory while its old is still held)."""
    if channels and plan.ring and plan.window_cap is not None:
        return slid_ring(plan, before, rows, channels)
    prev = plan.slid_from
    (_, c0, cn) = plan.cut_ranges()[2]
    cap = max(cn, int(plan.window_cap or 0))

    def fresh(like: torch.Tensor, c: int) -> torch.Tensor:
        yw, xw = plan.warp_spline[1].shape[0], plan.warp_spline[0].shape[0]
        return like.new_empty((cap, yw, xw, c))

    if before is None or prev is None or any(
            a.shape != b.shape for a, b in zip(prev.warp_spline[:2], plan.warp_spline[:2])):
        if not channels or plan.window_cap is None or cap == cn:
            return whole()
        store = fresh(plan.axes[0].new_empty(0, dtype=torch.float32), channels)
        rows(0, cn, out=store[:cn].permute(3, 0, 1, 2))
        return store[:cn].permute(3, 0, 1, 2)
    (_, p0, pn) = prev.cut_ranges()[2]
    lo, hi = max(p0, c0), min(p0 + pn, c0 + cn)
    old = before.permute(1, 2, 3, 0)                            # [Zw, Yw, Xw, C]
    if lo >= hi or c0 < p0 or not old.is_contiguous():
        return whole()
    row = old[0].numel()
    have = (old.untyped_storage().nbytes() // 4 - old.storage_offset()) // row
    if have >= cn:                                  # moved down in place, row by row
        store = torch.empty(0, dtype=old.dtype).set_(
            old.untyped_storage(), old.storage_offset(), (have,) + tuple(old.shape[1:]))
        if c0 != p0:                       # one overlapping move (memmove), not per row
            nbytes = row * old.element_size()
            dst = store.data_ptr() + (lo - c0) * nbytes
            ctypes.memmove(dst, dst + (c0 - p0) * nbytes, (hi - lo) * nbytes)
    else:
        store = fresh(old, old.shape[3])
        store[lo - c0:hi - c0].copy_(old[lo - p0:hi - p0])
    if hi < c0 + cn:
        rows(hi - c0, cn, out=store[hi - c0:cn].permute(3, 0, 1, 2))
    return store[:cn].permute(3, 0, 1, 2)


def slid_ring(plan: "GridPlan", before: Optional[torch.Tensor],
              rows: Callable[..., torch.Tensor], channels: int) -> torch.Tensor:
    """:func:`slid_window` without moving anything: the window lives in a ring of
    ``plan.window_cap`` rows of the warps' grid [C, H, Yw, Xw] (channels last in memory),
    window row r at memory row (first + r) % H, ``field.ring = (first, rows)``
    (kernels.ring_of; the compiled lookups and the error pass read it so). Sliding on by d
    rows moves ``first`` on by d and computes the window's new rows into the memory rows
    the rows that left it held (in at most two runs, where they wrap), so a slab costs its
    new rows alone, not a move of the ~100 rows it shares with the slab before (at 513^3
    on the tornado, 5 new rows a slab). Only for plans whose every reader of the window is
    a compiled kernel (``plan.ring``: every variable moved, SplineBase.ring_windows)."""
    (_, c0, cn) = plan.cut_ranges()[2]
    yw, xw = plan.warp_spline[1].shape[0], plan.warp_spline[0].shape[0]
    prev = plan.slid_from
    store, first, keep = None, 0, 0
    if before is not None and prev is not None and getattr(before, "ring", None) is not None \
            and tuple(before.shape[2:]) == (yw, xw) and before.shape[0] == channels \
            and before.shape[1] >= cn:
        (_, p0, pn) = prev.cut_ranges()[2]
        hi = min(p0 + pn, c0 + cn)
        if c0 >= p0 and c0 < hi:             # rows c0 .. hi - 1 held: window rows 0 .. keep
            store, keep = before, hi - c0
            first = (before.ring[0] + (c0 - p0)) % before.shape[1]
    if store is None:
        cap = max(cn, int(plan.window_cap or 0))
        store = plan.axes[0].new_empty((cap, yw, xw, channels)).permute(3, 0, 1, 2)
    mem = store.permute(1, 2, 3, 0)                                 # [H, Yw, Xw, C]
    h = mem.shape[0]
    r = keep
    while r < cn:                          # the new rows, in runs of memory rows
        m = (first + r) % h
        n = min(cn - r, h - m)
        out = mem[m:m + n].permute(3, 0, 1, 2)
        got = rows(r, r + n, out=out)
        if got.data_ptr() != out.data_ptr():
            out.copy_(got)
        r += n
    field = store[:]                       # a tensor of its own: the slab before's keeps
    field.ring = (first, cn)               # its ring (until drop_slid lets go of it)
    return field


def drop_slid(plan: "GridPlan", before: Optional[Dict[Any, torch.Tensor]], key: Any) -> None:
    """Let go of the slab before's field ``key`` once it has been slid into ``plan``'s
    window: where the window grew, its old memory is freed now, not when the slab before is
    (which would hold the old and the new windows of every field at once: more than the
    memory plan counts)."""
    if before is not None and before is not plan.fields and before is not plan.slope_fields:
        before.pop(key, None)


class SplineBase(nn.Module):
    """Per-variable spline through the kept data (see the module docstring).

    Args:
        dims: (x, y, z) points of the data.
        n_vars: variables (one channel each).
        slot_times: the kept steps' times, normalised to [-1, 1].
        base_time: "linear", "cubic", "flow" or "auto" (flow plus the cross-validated
            cubic share).
        flow_coarsen, flow_max_points: the displacement grid (time_basis.py).
        trainable: whether training may change the coefficients.
        boundary: the spline's condition at the faces of the box, "select" (per variable,
            axis and end, from the kept data: spline_boundary.py) or "natural".
    """

    def __init__(self, dims: Sequence[int], n_vars: int, slot_times: Sequence[float],
                 base_time: str = "auto", flow_coarsen: int = 2, flow_max_points: int = 32,
                 trainable: bool = True, flow_path: str = "auto", path_values: str = "auto",
                 boundary: str = "select", between_smoothing: str = "auto"):
        super().__init__()
        if base_time not in BASE_TIMES:
            raise ValueError(f"unknown base_time {base_time!r}: use {', '.join(BASE_TIMES)}")
        if boundary not in SPLINE_BOUNDARIES:
            raise ValueError(f"unknown spline_boundary {boundary!r}: use "
                             f"{', '.join(SPLINE_BOUNDARIES)}")
        if between_smoothing not in between_smooth.SMOOTHINGS:
            raise ValueError(f"unknown between_smoothing {between_smoothing!r}: use "
                             f"{', '.join(between_smooth.SMOOTHINGS)}")
        self.boundary_rule = boundary
        self.between_smoothing = between_smoothing
        self.base_time = base_time
        # paths.py, forced or chosen: "auto" leaves it to the held-out steps (select) or
        # keeps paths straight and linear along them (auto, flow: as before paths could bend)
        self.flow_path, self.path_values = flow_path, path_values
        self.n_vars = int(n_vars)
        self.n_slots = max(1, len(slot_times))
        self.dims = tuple(int(d) for d in dims)                     # x, y, z
        self.register_buffer("slot_times", torch.tensor(list(slot_times), dtype=torch.float32),
                             persistent=False)
        x, y, z = self.dims
        shape = (self.n_slots, self.n_vars, z + 2, y + 2, x + 2)
        self.hermite = base_time != "linear"
        self.trainable = bool(trainable)
        # zeros that take no memory until written (numpy's calloc: untouched pages are not
        # resident): a model loaded with its slots in a file never writes them
        self.coef = nn.Parameter(torch.from_numpy(np.zeros(shape, dtype=np.float32)),
                                 requires_grad=trainable)                        # [T, V, ...]
        # the slots in a file instead (slots.py: a model file loaded lazily, or the fit's
        # scratch file): then ``coef`` is no parameter, and reading it loads every slot
        self._slots: Optional[FileSlots] = None
        # the condition the prefilter met at each face, per variable: codes of
        # encodings.BOUNDARIES [V, 3, 2] (x, y, z; low, high); the coefficients hold it, the
        # slopes along the path (derived from values when first used) need it again; model
        # files written before the choice hold none and load as natural everywhere
        self.register_buffer("spline_boundary", torch.zeros(self.n_vars, 3, 2, dtype=torch.long))
        if self.hermite:    # slopes in time of the coefficients, same layout
            if self.trainable:    # training moves them apart from the coefficients': kept
                self.slopes = nn.Parameter(torch.zeros(shape))
            else:                 # the natural spline's, derived from coef when asked for
                self.slopes = None
            self.register_buffer("slope_matrix", natural_spline_slopes(
                self.slot_times.tolist()).to(torch.float32), persistent=False)   # [T, T]
            self.register_buffer("time_mix", torch.zeros(self.n_vars))
        self.has_flow = self.hermite and base_time in MOVING and self.n_slots > 1
        if self.has_flow:
            low = displacement_grid_dims((z, y, x), int(flow_coarsen), flow_max_points)
            self.register_buffer("flow", torch.zeros(self.n_slots - 1, 3, *low))
            self.register_buffer("flow_mix", torch.zeros(self.n_vars))
            # paths.py: the share of the cubic along the path per variable, and whether the
            # paths bend (1) or run straight through each interval (0); model files written
            # before paths could bend hold neither and load as straight and linear
            self.register_buffer("path_mix", torch.zeros(self.n_vars))
            self.register_buffer("path_bend", torch.zeros(()))
        self._path_slopes: Dict[int, torch.Tensor] = {}     # slot -> slopes along the path
        self._time_slopes: Dict[int, torch.Tensor] = {}     # slot -> natural spline's slopes
        # (slot, first row, end row) -> those rows of its slopes (a slab's, slopes_rows)
        self._slope_rows: Dict[Tuple[int, int, int], torch.Tensor] = {}
        # a network weighing the two sides per point (visibility): None, or a module
        # ``(ends [2, V, Z', Y', X'], w, outside [2, Z', Y', X']) -> [V, Z', Y', X']`` weight
        # of the earlier side (outside: side_outside), applied on the data's lattice or one
        # ``stride`` (its attribute) times coarser and carried to the output grid (see
        # _weighted_sides; side_weights.py)
        self.side_weights: Optional[nn.Module] = None
        # with time_refine.py's network as ``side_weights``: whether the fit gates it per
        # variable on the half series' held-out steps (False: every moved variable)
        self.refine_gate = True
        self.refine_report: Dict[str, object] = {}
        # the spatial prior (space_residual.py): per variable a learned correction of the
        # kept steps' fields between the data's points, or None (the spline alone); every
        # evaluation of a kept step's field adds it, so the steps between them get it
        # through the paths
        self.space: Optional[SpaceResidual] = None
        # error_estimate.py: per variable the scales of the indicators in space and in time
        # (0: no estimate; model files written before it hold none)
        self.register_buffer("error_scale", torch.zeros(2, self.n_vars))
        # issue 30's recalibration, each [2, V] (space, time): the space scale two levels
        # down (time row 0), the scales applied at the data's level (carried from one
        # level down by the space scale's change between the two; zeros in model files
        # made before it, which evaluate with error_scale as they did) and the share of
        # the one-level-down points those cover
        for name in ERROR_LEVELS:
            self.register_buffer(name, torch.zeros(2, self.n_vars))
        # between_smooth.py: per variable the share of trilinear in the part that is not
        # moved between kept steps (0: none; model files made before it hold none)
        self.register_buffer("between_smooth", torch.zeros(self.n_vars))

    # --- where the slots live (slots.py) -----------------------------------------------------
    def keep_slots_in(self, slots: FileSlots) -> None:
        """Keep the coefficients in ``slots`` (a file, read a slot at a time) instead of
        memory: for a base that is not trained (its coefficients are fitted once)."""
        if self.trainable:
            raise ValueError("a trainable base keeps its coefficients in memory")
        if tuple(slots.shape) != tuple(self.slots_shape()):
            raise ValueError(f"slots of shape {tuple(slots.shape)}; the base has "
                             f"{tuple(self.slots_shape())}")
        self._parameters.pop("coef", None)
        self.__dict__.pop("coef", None)
        self._slots = slots
        self._time_slopes, self._slope_rows = {}, {}

    def load_slots(self) -> None:
        """Read every slot into memory (what reading ``coef`` of a base whose slots are in a
        file does): a model that is trained further, or code that wants them all."""
        if self._slots is None:
            return
        slots, self._slots = self._slots, None
        self.coef = nn.Parameter(slots.whole().to(self.device), requires_grad=self.trainable)
        slots.close()
        self._time_slopes, self._slope_rows = {}, {}

    def slots_in_file(self) -> Optional[FileSlots]:
        """The file the slots are kept in, or None when they are in memory."""
        return self._slots

    def slots_shape(self) -> Tuple[int, ...]:
        x, y, z = self.dims
        return (self.n_slots, self.n_vars, z + 2, y + 2, x + 2)

    def __getattr__(self, name: str):
        if name == "coef" and self.__dict__.get("_slots") is not None:
            self.load_slots()                       # everything that asks for all of them
        return super().__getattr__(name)

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        if self._slots is not None:           # the file's slots, copied by the model writer
            destination[prefix + "coef"] = self._slots
        super()._save_to_state_dict(destination, prefix, keep_vars)

    # --- model files written before the base had its own module ----------------------------
    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        lazy = state_dict.get(prefix + "coef")
        if isinstance(lazy, FileSlots):       # a model file read lazily (modelfile.py)
            state_dict.pop(prefix + "coef")
            if self.trainable or tuple(lazy.shape) != tuple(self.slots_shape()):
                state_dict[prefix + "coef"] = lazy.whole()     # loaded, or refused as usual
                lazy.close()
            else:
                self.keep_slots_in(lazy)
        old = prefix + "grids.0"          # format 3: one grid, values then slopes as channels
        if old in state_dict:
            grid = state_dict.pop(old)
            state_dict[prefix + "coef"] = grid[:, :self.n_vars]
            if self.hermite and self.trainable:
                state_dict[prefix + "slopes"] = grid[:, self.n_vars:]
        if self.has_flow and prefix + "flow" in state_dict:      # written before paths.py
            state_dict.setdefault(prefix + "path_mix", torch.zeros(self.n_vars))
            state_dict.setdefault(prefix + "path_bend", torch.zeros(()))
        state_dict.setdefault(prefix + "error_scale", torch.zeros(2, self.n_vars))
        for name in ERROR_LEVELS:
            state_dict.setdefault(prefix + name, torch.zeros(2, self.n_vars))
        state_dict.setdefault(prefix + "between_smooth", torch.zeros(self.n_vars))
        state_dict.setdefault(prefix + "spline_boundary",
                              torch.zeros(self.n_vars, 3, 2, dtype=torch.long))
        self._path_slopes = {}
        self._time_slopes, self._slope_rows = {}, {}
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def slot_coef(self, k: int) -> torch.Tensor:
        """Slot ``k``'s spline coefficients [V, Z+2, Y+2, X+2] (detached): every read of one
        kept step's coefficients goes through here, so that the storage behind it may hold
        only the slots in use (a file's: the last two read are kept)."""
        if self._slots is not None:
            return self._slots.slot(k, self.device)
        return self.coef[k].detach()

    def set_slot(self, k: int, values: torch.Tensor, var: Optional[int] = None) -> None:
        """Set slot ``k``'s coefficients (``values`` [V, ...]), or its variable ``var``'s."""
        if self._slots is not None:
            self._slots.write(k, values, var)
            self._time_slopes, self._slope_rows = {}, {}
        elif var is None:
            self.coef[k].copy_(values)
        else:
            self.coef[k, var].copy_(values)
        if self.space is not None:         # the corrections computed from the old ones
            self.space.clear()

    def slot_residual(self, k: int):
        """Kept step ``k``'s learned correction (space_residual.Residual) or None."""
        if self.space is None:
            return None
        return self.space.slot_residual(self.slot_coef, k)

    def _residual_at(self, k: int, p: torch.Tensor) -> Optional[torch.Tensor]:
        """Kept step ``k``'s correction at local points ``p`` [N, 3] -> [N, V] or None."""
        if self.space is None:
            return None
        return self.space.sample(self.slot_residual(k), p, self.n_vars)

    def slopes_at(self, k: int) -> torch.Tensor:
        """Slot ``k``'s slopes in time [V, Z+2, Y+2, X+2]: trained ones, or the natural
        cubic spline's through the coefficients (a row of [T, T] @ coef: derived per slot
        rather than stored, which would double the model's memory; from a file's slots
        a slot at a time, the last two kept)."""
        if self.slopes is not None:
            return self.slopes[k]
        got = self._time_slopes.get(k)
        if got is not None:
            return got
        # kept for the interval in use only, like the slopes along the path
        self._time_slopes = {i: v for i, v in self._time_slopes.items() if abs(i - k) == 1}
        out = self._slopes_of(k, 0, self.dims[2] + 2)
        if not torch.is_grad_enabled() or not self.trainable:
            self._time_slopes[k] = out
        return out

    def _slopes_of(self, k: int, lo: int, hi: int) -> torch.Tensor:
        """Rows ``lo:hi`` of slot ``k``'s natural-spline slopes in time, summed slot by slot
        (a row of [T, T] @ coef: one more slot's rows held at a time) in one fixed order,
        so that the whole field and a slab's rows of it are the same numbers."""
        out = None
        for i, wt in enumerate(self.slope_matrix[k].tolist()):
            if wt != 0.0:
                term = self.slot_rows(i, lo, hi) * wt
                out = term if out is None else out.add_(term)
        return out if out is not None else torch.zeros_like(self.slot_rows(k, lo, hi))

    def slot_rows(self, k: int, lo: int, hi: int) -> torch.Tensor:
        """Rows ``lo:hi`` (z, of the padded grid) of slot ``k``'s coefficients
        [V, hi - lo, Y+2, X+2] (detached): from a file, those rows alone are read."""
        if self._slots is not None and (lo, hi) != (0, self.dims[2] + 2):
            return self._slots.rows(k, lo, hi, self.device)
        return self.slot_coef(k)[:, lo:hi]        # every row: the slot itself (kept)

    def slopes_rows(self, k: int, lo: int, hi: int) -> torch.Tensor:
        """Rows ``lo:hi`` of :meth:`slopes_at` (the same numbers, summed in the same order)
        from those rows of every slot alone: a slab between kept steps holds its rows of
        the two ends' slopes, not two data-sized fields (kept while the interval's other
        end on the same rows is asked for: the steps of a slab share them)."""
        if self.slopes is not None:
            return self.slopes[k][:, lo:hi]
        whole = self._time_slopes.get(k)
        if whole is not None:
            return whole[:, lo:hi]
        key = (int(k), int(lo), int(hi))
        got = self._slope_rows.get(key)
        if got is not None:
            return got
        self._slope_rows = {i: v for i, v in self._slope_rows.items()
                            if i[1:] == key[1:] and abs(i[0] - key[0]) == 1}
        out = self._slopes_of(k, lo, hi)
        if not torch.is_grad_enabled() or not self.trainable:
            self._slope_rows[key] = out
        return out

    @property
    def device(self) -> torch.device:
        """Where the base's tensors are (its slots' included, when they are loaded)."""
        return self.slot_times.device

    # --- fitting -----------------------------------------------------------------------------
    @torch.no_grad()
    def fit_coefficients(self, data: Union[torch.Tensor, Steps],
                         each: Optional[Callable[[int, torch.Tensor], None]] = None,
                         boundary: Optional[torch.Tensor] = None) -> None:
        """The spline through ``data`` [V, T, Z, Y, X] (normalised; or :class:`Steps`, read
        one step at a time): the prefilter per slot, one variable at a time (its float64
        temporaries are a few times one variable's size), with the condition at each face
        ``boundary`` ([V, 3, 2] codes; None: chosen from the data, which reads up to
        spline_boundary.MAX_STEPS steps once more, or natural, as the base's rule says),
        and, where kept apart from them, the natural spline's slopes in time.
        ``each(k, step)`` sees each step [V, Z, Y, X] as it is read (what else the fit
        takes from it)."""
        steps = as_steps(data)
        if boundary is None:
            boundary = (choose_boundary(steps) if self.boundary_rule == "select" else
                        torch.zeros_like(self.spline_boundary))
        self.spline_boundary.copy_(boundary)
        for t in range(self.n_slots):
            step = steps.step(t).to(torch.float32)
            for v in range(self.n_vars):
                self.set_slot(t, bspline_coefficients(step[v], self.spline_boundary[v]), v)
            if each is not None:
                each(t, step)
            del step
        if self.hermite and self.slopes is not None:
            self.slopes.copy_(torch.tensordot(self.slope_matrix.to(self.coef), self.coef,
                                              dims=([1], [0])))
        self._path_slopes = {}
        self._time_slopes, self._slope_rows = {}, {}

    @torch.no_grad()
    def fit(self, data: Union[torch.Tensor, Steps], flow_options: Dict[str, object],
            progress: Optional[Callable[[float], Optional[bool]]] = None,
            budget_s: Optional[float] = None) -> Optional[bool]:
        """Solve the base from ``data`` [V, T, Z, Y, X] (normalised; or :class:`Steps`, which
        it reads a step at a time: once for the spline, the half series and the
        displacement fits' coarsened copies, then a few steps again for the error estimate):
        the spline prefilter per slot, the natural-spline slopes in time, then the
        displacement fits and the time mix. ``progress(fraction)`` hears of each
        displacement fit; when it returns False (ParaView's abort, Ctrl-C or SIGTERM in
        ``stsr fit``) the fits done so far are kept, the rest skipped as a spent time budget
        would leave them, the mixes chosen as usual, and this returns False. ``budget_s``
        bounds the displacement fits: each gets an equal share of what is left and stops
        there; fits with no time left are skipped (no motion compensation for that
        interval); :attr:`fit_notes` says what was cut. In a group of processes
        (distributed.py) each fits its share of the displacements within the budget (or
        until stopped) and all end with the same base (the results are exchanged)."""
        kernels.warm_up()         # the compiled kernels loaded before the budget's clock
        t_start = time.perf_counter()
        self.fit_notes: List[str] = []
        self.selection: Dict[str, object] = {}
        data = as_steps(data)
        times = self.slot_times.tolist()
        n = len(times)
        # held out at the real gap (time_select.py): the half series' chains, for the choice
        # in time (select) and the error estimate's scale in time (every kind); made, with
        # the displacement fits' coarsened copies of each step, as the spline reads it
        half = None
        if self.hermite and len(chains(n)):
            half = torch.empty((self.n_vars, n) + tuple((m + 1) // 2 for m in data.shape),
                               device=self.device)
        levels = {"max_points": int(flow_options.get("max_points", 32)),
                  "levels": int(flow_options.get("levels", 1))}
        resampled: Dict[int, Resampled] = {}

        # between_smooth.py's shares, scored one level down on this same read
        trilinear = TrilinearScores(self) if (
            half is not None and self.has_flow and self.base_time == "select" and
            self.between_smoothing == "auto") else None

        def each(k: int, step: torch.Tensor) -> None:
            if half is not None:
                half[:, k] = half_step(step)
            if trilinear is not None:
                trilinear.add(k, step)
            if self.has_flow:
                resampled[k] = resample_for_fit(step, **levels)

        self.fit_coefficients(data, each)
        if not self.hermite:
            return None
        self.time_mix.zero_()
        half_opts = chain_options(flow_options)
        if not self.has_flow:
            if self.base_time == "cubic":
                self.time_mix.fill_(1.0)
            else:
                self.time_mix.copy_(cross_validated_mix(data, times)[:, 0])
            calibrate(self, data, half, [] if half is None else
                      list(half_chains(self, half, {}, half_opts)))
            return None
        self.flow_mix.zero_()
        self.path_mix.zero_()
        self.path_bend.zero_()
        # the displacement fits: one per interval, then (auto) one per held-out case of the
        # cross-validation, and one per pair of neighbours on the half series;
        # independent of each other, so with several processes (distributed.py) each fits
        # its share and all get every result
        jobs = [(resampled, j, j + 1, flow_options) for j in range(n - 1)]
        if self.base_time == "auto":
            jobs += [(resampled, k0, k1, flow_options) for k0, k1 in held_out_pairs(n)]
        n_main = len(jobs)
        if half is not None:
            halves = {k: half[:, k] for k in range(n)}
            jobs += [(halves, k0, k1, half_opts) for k0, k1 in chain_pairs(n)]
        n_fits = len(jobs)
        mine = distributed.share(n_fits)
        state = {"done": 0, "cut": 0, "skipped": 0, "stopped": 0}
        # with select the half series' fits decide the model and share the budget with the
        # others; otherwise they only calibrate the error estimate and get what is left
        first = n_fits if self.base_time == "select" else n_main
        end = None if budget_s is None else t_start + budget_s
        if budget_s is not None and half is not None:  # room to score the held-out steps
            budget_s = budget_s * (1.0 - HELD_OUT_SHARE)

        def fit_one(i: int, src: Dict[int, Union[torch.Tensor, Resampled]], k0: int, k1: int,
                    opts: Dict[str, object]) -> Optional[torch.Tensor]:
            """One displacement fit within an equal share of the budget left (None: none
            left; a fit whose share runs out stops where it is)."""
            left = sum(1 for m in mine[state["done"]:] if (m < first) == (i < first))
            state["done"] += 1
            deadline = None
            if budget_s is not None:
                share = (budget_s - (time.perf_counter() - t_start)) / max(1, left)
                if share < MIN_FIT_SECONDS:
                    state["skipped"] += 1
                    return None
                deadline = time.perf_counter() + share
            disp = fit_displacement(src[k0], src[k1], **opts, deadline=deadline)
            if deadline is not None and time.perf_counter() >= deadline:
                state["cut"] += 1
            return disp

        local: Dict[int, Optional[torch.Tensor]] = {}
        stop = False
        for i in mine:
            if stop:                  # not fitted: no motion compensation there
                local[i] = None
                state["stopped"] += 1
                continue
            local[i] = fit_one(i, *jobs[i])
            stop = progress is not None and \
                progress(state["done"] / max(1, len(mine))) is False
        fits = distributed.gather_shares(local, n_fits)
        counts = distributed.all_gather_objects(
            (state["cut"], state["skipped"], state["stopped"]))
        cut, skipped, stopped = (sum(c[k] for c in counts) for k in (0, 1, 2))
        for j in range(n - 1):
            if fits[j] is not None:
                self.flow[j].copy_(fits[j])
        self._path_slopes = {}
        self._time_slopes, self._slope_rows = {}, {}
        chain_fits = {(k0, k1): f for (_, k0, k1, _), f in zip(jobs[n_main:], fits[n_main:])}
        chains_built: List = []
        if self.base_time == "flow":
            self.flow_mix.fill_(1.0)
        elif self.base_time == "auto":
            held = iter(fits[n - 1:n_main])
            mix = cross_validated_mix(data, times, with_flow=True, flow_share=1.0,
                                      fit_flow=lambda f0, f1: next(held), **flow_options)
            self.time_mix.copy_(mix[:, 0])
            self.flow_mix.copy_(mix[:, 1])
        elif half is not None:
            chains_built = list(half_chains(self, half, chain_fits, half_opts))
            carried = carried_scores({k: r.levels[max(r.levels, key=math.prod)]
                                      for k, r in resampled.items()}, fits[:n - 1])
            choose(self, half, chains_built, None if end is None else
                   end - 0.5 * (end - time.perf_counter()), carried)
            if trilinear is not None:
                trilinear.apply(self)
        else:                         # two kept steps: nothing to hold out
            self.flow_mix.fill_(1.0)
            self.selection = {"reason": "2 kept steps: nothing to hold out; "
                                        "motion-compensated, linear along straight paths"}
        if self.base_time != "select":      # forced parts of the paths (auto, flow)
            self.path_bend.fill_(1.0 if self.flow_path == "bent" and n > 2 else 0.0)
            self.path_mix.copy_(self.flow_mix * (1.0 if self.path_values == "cubic" else 0.0))
        if half is not None and not chains_built:
            chains_built = list(half_chains(self, half, chain_fits, half_opts))
        calibrate(self, data, half, chains_built, end)
        if getattr(self.side_weights, "refines", False):     # time_refine.py's network
            self._gate_refine(half, chains_built, end)
        if cut:
            self.fit_notes.append(f"{cut} of {n_fits} displacement fits stopped before "
                                  f"their {flow_options.get('iters')} Adam steps to keep "
                                  "within the time budget")
        if skipped:
            self.fit_notes.append(f"{skipped} of {n_fits} displacement fits skipped for the "
                                  "time budget (those intervals: no motion compensation)")
        if stopped:
            self.fit_notes.append(f"the fit was stopped: {stopped} of {n_fits} displacement "
                                  "fits skipped (those intervals: no motion compensation)")
        return False if stop else None

    def weighs_sides(self) -> bool:
        """Whether a network weighs the two sides between kept steps on whole grids (a time
        refinement the gate turned off for every variable does not: the fused lookups)."""
        net = self.side_weights
        if net is None:
            return False
        return not getattr(net, "refines", False) or bool(net.use.any())

    def _gate_refine(self, half: Optional[torch.Tensor], built: Sequence[Any],
                     deadline: Optional[float]) -> None:
        """The time refinement network's use per variable (time_refine.gate: only where it
        beats the base on the half series' held-out steps; ``refine_gate`` False: on every
        moved variable); the scores go to ``refine_report`` (stsr info)."""
        net = self.side_weights
        moving = (self.flow_mix != 0).to(torch.float32).cpu()
        if not self.refine_gate:
            net.use = moving
            self.refine_report = {"mode": "refine_all", "use": [bool(u) for u in moving]}
            return
        if half is None or not built:
            net.use = torch.zeros(self.n_vars)
            self.refine_report = {"mode": "refine", "use": [False] * self.n_vars,
                                  "reason": "no held-out steps of the half series: off"}
            return
        for sub, _, _ in built:          # the base's choice in time (calibrate copied it)
            for name in ("time_mix", "flow_mix", "path_mix", "path_bend"):
                getattr(sub, name).copy_(getattr(self, name))
        self.refine_report = {"mode": "refine", **gate_refinement(self, half, built, deadline)}

    def mixes(self) -> Dict[str, Tuple[float, ...]]:
        """Per variable the cubic share c, the motion-compensated share m and the still part's
        smoothing (between_smooth.py; for stsr info)."""
        out: Dict[str, Tuple[float, ...]] = {}
        if self.hermite:
            out["time_mix"] = tuple(float(v) for v in self.time_mix)
        if self.has_flow:
            out["flow_mix"] = tuple(float(v) for v in self.flow_mix)
            out["path_mix"] = tuple(float(v) for v in self.path_mix)
            out["path_bend"] = (float(self.path_bend),)
        if bool((self.between_smooth != 0).any()):
            out["between_smooth"] = tuple(float(v) for v in self.between_smooth)
        return out

    # --- paths (paths.py) --------------------------------------------------------------------
    def _bends(self) -> bool:
        return self.has_flow and float(self.path_bend) != 0.0

    def accelerations(self) -> torch.Tensor:
        """[T-1, 3, ...] the change of displacement per interval (paths.py), on the
        displacements' grid; times the bend share."""
        return accelerations(self.flow, self.slot_times.tolist()) * self.path_bend

    def path_slope_coef(self, k: int) -> torch.Tensor:
        """Slot ``k``'s slopes in time along the paths through it, as spline coefficients
        [V, Z+2, Y+2, X+2] like ``coef[k]``: at each data point the derivative of the
        parabola through the values at three kept steps where the path through that point
        is (each step of the way carried by the interval's displacement, looked up at the
        step's middle); computed from the coefficients and displacements when first asked
        for and kept (not stored in model files)."""
        d = self._path_slopes.get(k)
        if d is not None:
            return d
        # kept for the interval in use only (one slot either side), not for the whole series
        self._path_slopes = {i: v for i, v in self._path_slopes.items()
                             if isinstance(i, tuple) or abs(i - k) == 1}
        x, y, z = self.dims
        dev = self.device
        axes = [torch.linspace(-1.0, 1.0, n, device=dev) if n > 1 else
                torch.zeros(1, device=dev) for n in (z, y, x)]
        steps, wts = slope_weights(self.slot_times.tolist(), k)
        own = [spline_matrix(a, n) for a, n in zip(lattice_axes((z, y, x), dev), self.dims)]
        if k in steps:
            vals = separable(self.slot_coef(k), own).mul_(wts[steps.index(k)])
        else:
            vals = self.slot_coef(k).new_zeros((self.n_vars, z, y, x))
        if kernels.available(dev) and PATH_SLOPE_SPLINE:     # one compiled pass a step
            need = list(range(self.n_vars))
            d = vals.new_zeros((self.n_vars, z + 2, y + 2, x + 2))
            d[need] = self.path_slope_rows(k, 0, z + 2, need)
            self._path_slopes[k] = d
            return d
        data = {i: separable(self.slot_coef(i), own) for i in steps if i != k}
        rows = max(1, PATH_SLOPE_POINTS // max(1, x * y))

        def slab(z0: int) -> None:               # a slab at a time: bounded memory
            zz, yy, xx = torch.meshgrid(axes[0][z0:z0 + rows], axes[1], axes[2],
                                        indexing="ij")
            pts = torch.stack([xx, yy, zz], dim=-1).reshape(-1, 3)       # [N, 3]
            for i, wt in zip(steps, wts):
                if i == k:
                    continue
                q = self._carry(pts, k, i)
                if PATH_SLOPE_SPLINE:
                    got = bspline_sample(self.slot_coef(i)[None], q).t()
                else:                    # trilinear in the step's values: 8x fewer lookups
                    got = F.grid_sample(data[i][None], q.view(1, 1, 1, -1, 3),
                                        align_corners=True, padding_mode="border")[0, :, 0, 0]
                vals[:, z0:z0 + rows] += wt * got.reshape(self.n_vars, -1, y, x)

        each_slab(slab, range(0, z, rows), dev)
        d = self._path_slopes[k] = bspline_coefficients(vals, self.spline_boundary)
        return d

    def slope_variables(self) -> List[int]:
        """The variables with a cubic share along the path (the others' slopes along the
        path weigh nothing)."""
        if not self.has_flow:
            return []
        return (self.path_mix != 0).nonzero(as_tuple=True)[0].tolist()

    def slope_part_bytes(self) -> int:
        """Bytes of one slot's slopes along the path for the variables with a cubic share
        on the whole lattice, where they are kept (:meth:`path_slope_part`), else 0."""
        x, y, z = self.dims
        n = 4 * len(self.slope_variables()) * (x + 2) * (y + 2) * (z + 2)
        return n if n <= PATH_SLOPE_KEEP else 0

    def path_slope_part(self, k: int, lo: int, hi: int) -> torch.Tensor:
        """Rows ``lo..hi-1`` of slot ``k``'s slopes along the path for the variables with a
        cubic share (slope_variables): where those are small (PATH_SLOPE_KEEP) solved once
        on the whole lattice and kept for the interval in use (each slab then takes its
        rows, instead of solving its rows and a halo again), else :meth:`path_slope_rows`."""
        variables = self.slope_variables()
        if not self.slope_part_bytes():
            return self.path_slope_rows(k, lo, hi, variables)
        key = ("part", k, tuple(variables))
        got = self._path_slopes.get(key)
        if got is None:
            self._path_slopes = {i: v for i, v in self._path_slopes.items()
                                 if not isinstance(i, tuple) or abs(i[1] - k) == 1}
            got = self._path_slopes[key] = self.path_slope_rows(
                k, 0, self.dims[2] + 2, variables)
        return got[:, lo:hi]

    def path_slope_rows(self, k: int, lo: int, hi: int, variables: Sequence[int]
                        ) -> torch.Tensor:
        """Rows ``lo..hi-1`` (of the padded z axis, 0..Z+1) of :meth:`path_slope_coef` for
        the ``variables`` alone -> [len(variables), hi - lo, Y+2, X+2], from the data's
        rows around them only: the prefilter along z is solved on those rows plus
        PATH_SLOPE_HALO each side (its influence falls by 0.27 a row: beyond the halo below
        float32 rounding; exact where the rows reach the lattice's ends), so a slab holds
        the slopes of its rows and not of the whole lattice. Compiled kernels only."""
        x, y, z = self.dims
        dev = self.slot_times.device
        d_lo, d_hi = max(0, lo - PATH_SLOPE_HALO), min(z, hi + PATH_SLOPE_HALO)
        lat = lattice_axes((z, y, x), dev)                     # x, y, z local coordinates
        steps, wts = slope_weights(self.slot_times.tolist(), k)
        own = [spline_matrix(a, n) for a, n in zip(lat, self.dims)]
        own[2] = own[2][d_lo:d_hi]
        if k in steps:
            vals = separable(self.slot_coef(k)[list(variables)]
                             if len(variables) < self.n_vars else self.slot_coef(k),
                             own).mul_(wts[steps.index(k)])
        else:
            vals = torch.zeros((len(variables), d_hi - d_lo, y, x), device=dev)
        for i, wt in zip(steps, wts):
            if i != k:
                sign = 1 if i > k else -1
                order = range(k, i) if i > k else range(k - 1, i - 1, -1)
                kernels.carried_spline(self.slot_coef(i), self.flow, list(order), sign,
                                       [lat[0], lat[1], lat[2][d_lo:d_hi]], wt, vals,
                                       variables)
        # the faces' conditions of these variables; a z end cut off by the halo natural
        # (its influence fades like the halo's), the lattice's own z ends as chosen
        faces = self.spline_boundary[list(variables)].clone()         # [v, 3, 2]
        if d_lo > 0:
            faces[:, 2, 0] = NATURAL
        if d_hi < z:
            faces[:, 2, 1] = NATURAL
        coef = bspline_coefficients(vals, faces)     # padded rows d_lo .. d_hi + 1
        return coef[:, lo - d_lo:hi - d_lo]

    def _carry(self, pts: torch.Tensor, k: int, i: int) -> torch.Tensor:
        """Where the paths through ``pts`` [N, 3] at slot ``k`` are at slot ``i``: interval
        by interval along its displacement, looked up half-way (the fit is symmetric)."""
        p = pts
        step = 1 if i > k else -1
        for s in range(k, i, step):
            j = s if step > 0 else s - 1
            u = self._flow_at(j, p)
            p = (p + step * self._flow_at(j, (p + 0.5 * step * u).clamp(-1.0, 1.0))
                 ).clamp(-1.0, 1.0)
        return p

    def _flow_at(self, j: int, p: torch.Tensor, field: Optional[torch.Tensor] = None
                 ) -> torch.Tensor:
        """Interval ``j``'s displacement (or ``field`` [3, ...] on its grid) at ``p`` [N, 3]."""
        f = self.flow[j] if field is None else field
        return F.grid_sample(f[None], p.view(1, 1, 1, -1, 3), align_corners=True,
                             padding_mode="border")[0, :, 0, 0].t()       # [N, 3]

    # --- evaluation at points ----------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The base at local coordinates ``x`` [N, 4] (x, y, z, t in [-1, 1]) -> [N, V].
        Outside the kept steps' time range the nearest slot is held."""
        n = x.shape[0]
        j, w = slot_weights(self.slot_times, x[:, 3])
        pts = x[:, :3]
        out = x.new_empty(n, self.n_vars)
        for jj in torch.unique(j).tolist():
            sel = (j == jj).nonzero(as_tuple=True)[0]
            p, wj = pts[sel], w[sel]
            a = self._slot_sample(jj, p)                                       # [n, V]
            if self.n_slots > 1 and bool((wj > 0).any()):
                b = self._slot_sample(jj + 1, p)
                line = a + wj * (b - a)
                if self.hermite:
                    d0 = bspline_sample(self.slopes_at(jj)[None], p)
                    d1 = bspline_sample(self.slopes_at(jj + 1)[None], p)
                    h = float(self.slot_times[jj + 1] - self.slot_times[jj])
                    line = line + self.time_mix * hermite_correction(a, b, d0, d1, wj, h)
                    if self.moves_any():
                        line = line + self.flow_mix * (self._warped(jj, p, wj) -
                                                       (a + wj * (b - a)))
                smoothing = self._smoothing_at(jj, p, wj)
                a = line if smoothing is None else line + smoothing
            out[sel] = a
        return out

    def _smoothing_at(self, j: int, p: torch.Tensor, w: torch.Tensor
                      ) -> Optional[torch.Tensor]:
        """What between_smooth.py's blend adds to the part that is not moved at local points
        ``p`` [N, 3] and fractions ``w`` [N, 1] of interval ``j`` -> [N, V] (None where no
        variable is blended): the part's formula on each volume sampled with the blended
        weights less the formula on its cubic spline (the grid's evaluation filters the
        part's summed rows with those weights; both are linear in the volumes, so they
        agree)."""
        share = self.between_smooth
        if not bool((share != 0).any()):
            return None

        beta = share[None, :] * (4.0 * w * (1.0 - w))                     # [N, V]
        blended = (share != 0).nonzero(as_tuple=True)[0].tolist()

        def gap(vol: torch.Tensor) -> torch.Tensor:       # [V, Z, Y, X] -> [N, V]
            plain = bspline_sample(vol[None], p)
            out = torch.zeros_like(plain)
            for v in blended:
                out[:, v] = between_smooth.sample(vol[v], p, beta[:, v]) - plain[:, v]
            return out

        a, b = gap(self.slot_coef(j)), gap(self.slot_coef(j + 1))
        m = self.flow_mix if self.moves_any() else torch.zeros_like(share)
        part = (1 - m) * (a + w * (b - a))
        if self.hermite and bool((self.time_mix != 0).any()):
            h = float(self.slot_times[j + 1] - self.slot_times[j])
            part = part + self.time_mix * hermite_correction(
                a, b, gap(self.slopes_at(j)), gap(self.slopes_at(j + 1)), w, h)
        return part

    def _slot_sample(self, k: int, p: torch.Tensor) -> torch.Tensor:
        """Kept step ``k``'s field at local points ``p`` [N, 3] -> [N, V]: the spline and
        the prior's correction where a variable uses it."""
        v = bspline_sample(self.coef[k:k + 1], p)
        r = self._residual_at(k, p)
        return v if r is None else v + r

    # --- evaluation on a regular grid ---------------------------------------------------------
    def plan_grid(self, axes: Sequence[torch.Tensor],
                  box: Optional[Sequence[int]] = None,
                  factors: Sequence[int] = (8, 4, 2),
                  margin: Sequence[float] = (0.0, 0.0, 0.0)) -> "GridPlan":
        """Prepare :meth:`evaluate_grid` on the grid whose points have the local coordinates
        ``axes`` (x, y, z; each [n] in [-1, 1], the grid spanning the data's bounds), or on
        the sub-box ``box`` of it (x0, x1, y0, y1, z0, z1, inclusive indices: an MPI piece,
        a streamed piece): the per-axis matrices then hold only the box's rows, and the
        warps' lookup grid is the whole grid's, cut to what the box's points can reach
        (the box plus the largest displacement), so a piece has the numbers of the same
        region of the whole grid (to float32 rounding). ``margin`` (x, y, z, local units)
        widens that cut, so that lookups from points that far outside the box (the data's
        points around a slab, for the error estimate) find their values in it too."""
        full = [a.to(torch.float32) for a in axes]
        if box is None:
            box = [v for a in full for v in (0, a.numel() - 1)]
        sub = [a[box[2 * k]:box[2 * k + 1] + 1] for k, a in enumerate(full)]
        whole = all(s.numel() == a.numel() for s, a in zip(sub, full))
        spline = [spline_matrix(a, n) for a, n in zip(sub, self.dims)]
        flow_dims = tuple(self.flow.shape[-1:-4:-1]) if self.has_flow else (1, 1, 1)
        linear = [linear_matrix(a, n) for a, n in zip(sub, flow_dims)]
        # the warps look up the two slots trilinearly on a grid finer than the data: eight
        # or four times where that fits WARP_FIELD_VALUES (small data, where features span
        # few cells), else at least twice (the output's own grid when it is that fine);
        # chosen from the whole grid, so that every piece of it looks up the same values
        fine = None
        for factor in factors:
            want = [max(a.numel(), factor * (n - 1) + 1) if n > 1 else a.numel()
                    for a, n in zip(full, self.dims)]
            if factor == factors[-1] or self.n_vars * math.prod(want) <= WARP_FIELD_VALUES:
                fine = [a if a.numel() == m else torch.linspace(-1.0, 1.0, m, device=a.device)
                        for a, m in zip(full, want)]
                break
        if whole:
            warp = [m if f is a else spline_matrix(f, n)
                    for m, f, a, n in zip(spline, fine, full, self.dims)]
            return GridPlan(spline, linear, sub, warp, warp_axes=fine)
        reach = self._reach()
        reach = [r + float(m) for r, m in zip(reach, margin)]
        cut, spans, starts = [], [], []
        for k, f in enumerate(fine):
            m = f.numel()
            if m == 1:
                cut.append(f)
                spans.append((-1.0, 1.0))
                starts.append((1, 0))
                continue
            lo = float(sub[k][0]) - reach[k]
            hi = float(sub[k][-1]) + reach[k]
            i0 = max(0, int(math.floor((lo + 1) * 0.5 * (m - 1))) - 1)
            i1 = min(m - 1, int(math.ceil((hi + 1) * 0.5 * (m - 1))) + 1)
            cut.append(f[i0:i1 + 1])
            starts.append((m, i0))
            # the cut's ends as grid_sample places the whole grid's points (i * 2/(m-1) - 1)
            spans.append((-1.0, 1.0) if (i0, i1) == (0, m - 1) else
                         (i0 * 2.0 / (m - 1) - 1.0, i1 * 2.0 / (m - 1) - 1.0))
        warp = [spline_matrix(f, n) for f, n in zip(cut, self.dims)]
        on_window = None
        if all(f is a for f, a in zip(fine, full)):     # the output's points are its points
            on_window = [(int(box[2 * k]) - i0, s.numel())
                         for k, ((_, i0), s) in enumerate(zip(starts, sub))]
        return GridPlan(spline, linear, sub, warp, warp_spans=spans, warp_cut=starts,
                        on_window=on_window, warp_axes=cut)

    def _reach(self) -> List[float]:
        """The largest displacement per axis (x, y, z; local units) a path's end reaches,
        kept while the displacements and the bend are unchanged (every slab's plan asks)."""
        if not (self.has_flow and self.flow.numel()):
            return [0.0, 0.0, 0.0]
        key = (self.flow._version, id(self.flow), float(self.path_bend))
        got = self.__dict__.get("_reach_kept")
        if got is not None and got[0] == key:
            return list(got[1])
        reach = self.flow.abs().amax(dim=(0, 2, 3, 4))
        if self._bends():               # a bent path's ends shift by up to |a| / 8 more
            reach = reach + self.accelerations().abs().amax(dim=(0, 2, 3, 4)) / 8
        self.__dict__["_reach_kept"] = (key, reach.tolist())
        return reach.tolist()

    @torch.no_grad()
    def evaluate_grid(self, plan: "GridPlan", t: float,
                      units: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The base at normalised time ``t`` on a planned grid -> [V, Zo, Yo, Xo]; the same
        numbers as ``forward`` at those points, except that the motion-compensated term looks
        its warped points up trilinearly in the spline evaluated on this grid (not in the
        spline itself): exact at the grid's points, within the trilinear error of a grid
        finer than the data between them. ``units`` [2, V] (scale, offset): the values
        taken to ``(v + 1) * scale + offset`` (the variables' units), in the lookups' pass
        where every variable moves."""
        got = self._evaluate_grid(plan, t, units)
        if units is not None and not plan.units_applied:
            u = units.to(got)
            got.add_(1.0).mul_(u[0].view(-1, 1, 1, 1)).add_(u[1].view(-1, 1, 1, 1))
        plan.units_applied = False
        return got

    def _evaluate_grid(self, plan: "GridPlan", t: float,
                       units: Optional[torch.Tensor]) -> torch.Tensor:
        """:meth:`evaluate_grid`; sets ``plan.units_applied`` where ``units`` were applied
        in the lookups' pass."""
        plan.units_applied = False
        like = self.slot_times
        j, w = self._slot(t)
        if self.n_slots == 1 or w <= 0.0 or w >= 1.0:
            k = j if self.n_slots == 1 or w <= 0.0 else j + 1
            out = plan.buffer("out", like, (self.n_vars,) + plan.shape)
            if self.has_flow and plan.points_on_window:
                # the field the warps use too: the planned points are points of its grid
                return out.copy_(plan.window_rows(self._slot_field(plan, k)))
            return self.kept_field(k, plan.spline, out=out, fine=self._fine(plan, "spline"))
        m = self.flow_mix if self.has_flow else torch.zeros(self.n_vars, device=like.device)
        c = self.time_mix if self.hermite else torch.zeros_like(m)
        # the part that is not moved, on the data's coefficients: (1 - m) linear + c (cubic -
        # linear); skipped for variables where it is 0 (the default: m = 1, often c = 0);
        # only the coefficients' rows the grid's (a slab's) z matrix reads
        some = ((1 - m) != 0) | (c != 0)
        out = None
        if bool(some.any()):
            idx = some.nonzero(as_tuple=True)[0]
            lo, hi = kernels.used_rows(plan.spline[2])
            mats = plan.spline[:2] + [plan.spline[2][:, lo:hi]]
            # between_smooth.py: per variable its blend towards trilinear (0: the spline)
            betas = (self.between_smooth[idx].to(torch.float64) *
                     between_smooth.weight(w)).tolist()
            if getattr(self, "slopes", None) is None:   # one weighted sum of the slots' rows
                comb = self.still_rows(j, w, idx, lo, hi,
                                       lambda name, shp: plan.buffer(name, like, shp))
            else:                          # trained slopes: the formula on their rows
                comb = self._still_formula(j, w, idx, lo, hi)
            shape = (self.n_vars,) + plan.shape
            if len(idx) == len(m) and not any(betas):
                out = separable(comb, mats, out=plan.buffer("out", like, shape))
            elif not any(betas):
                out = plan.buffer("out", like, shape).zero_().index_copy_(
                    0, idx, separable(comb, mats))
            else:        # runs of variables with the same weights, each filtered at once
                out = plan.buffer("out", like, shape)
                if len(idx) < len(m):
                    out.zero_()
                at = idx.tolist()
                k0 = 0
                while k0 < len(at):
                    k1 = k0 + 1
                    while k1 < len(at) and betas[k1] == betas[k0] and at[k1] == at[k1 - 1] + 1:
                        k1 += 1
                    mk = mats if betas[k0] == 0.0 else \
                        self._blend_mats(plan, betas[k0], lo, hi)
                    separable(comb[k0:k1], mk, out=out[at[k0]:at[k0] + k1 - k0])
                    k0 = k1
            if self.space is not None:   # the prior's correction of the unmoved part
                still = torch.where(some, 1 - m, torch.zeros_like(m))
                self.space.add_grid(out, [(self.slot_residual(j), still * (1 - w)),
                                          (self.slot_residual(j + 1), still * w)],
                                    self._fine(plan, "spline"))
        moving = m != 0
        if bool(moving.all()):
            # nothing still (the usual case): looked up straight into the output's buffer
            # (the caller's host buffer when streaming), not into a buffer of its own; with
            # the moved share and the units applied in the same pass where the kernels can
            post = None
            if out is None and units is not None:
                post = torch.cat([m.view(1, -1).to(torch.float32),
                                  units.to(torch.float32)])                  # [3, V]
            moved = self._warped_grid(plan, j, w, into="warp" if out is not None else "out",
                                      post=post)
            if not plan.units_applied:
                moved.mul_(m.view(-1, 1, 1, 1))
            out = moved if out is None else out.add_(moved)
        elif bool(moving.any()):         # some variables still (select): only the others move
            idx = moving.nonzero(as_tuple=True)[0]
            moved = self._warped_grid(plan, j, w, idx).mul_(m[idx].view(-1, 1, 1, 1))
            out.index_add_(0, idx, moved)
        return out

    def _blend_mats(self, plan: "GridPlan", beta: float, lo: int, hi: int
                    ) -> List[torch.Tensor]:
        """between_smooth.py's matrices at blend weight ``beta`` on ``plan``'s grid (x, y,
        and z cut to the coefficients' rows ``lo:hi``, those the spline's z matrix reads:
        the blend reads the same), kept for the step's other variables and slabs' reuse."""
        got = plan.blends.get(beta)
        if got is None:
            if len(plan.blends) > 8:
                plan.blends.clear()
            got = plan.blends[beta] = between_smooth.axis_matrices(plan.axes, self.dims, beta)
        return got[:2] + [got[2][:, lo:hi]]

    def still_weights(self, j: int, w: float) -> torch.Tensor:
        """[T, V] float64: per slot and variable its weight in the part that is not moved at
        fraction ``w`` of interval ``j``, ``(1 - m) linear + c (cubic - linear)``. Every
        term is linear in the slots' coefficients (the natural spline's slopes in time are
        rows of ``slope_matrix`` @ coef), so the part is one weighted sum of the slots:

            a[j]     += (1 - w)(1 - m) + c (h10 + h11)
            a[j + 1] +=       w(1 - m) - c (h10 + h11)
            a[i]     += c h (h10 S[j, i] + h11 S[j + 1, i])      (every slot i)

        (hermite_correction's terms, h the interval's length, h10 and h11 the Hermite
        basis at w); the slopes are then never summed into fields of their own."""
        v, t = self.n_vars, self.n_slots
        a = torch.zeros(t, v, dtype=torch.float64)
        m = (self.flow_mix if self.has_flow else torch.zeros(v)).to("cpu", torch.float64)
        c = (self.time_mix if self.hermite else torch.zeros(v)).to("cpu", torch.float64)
        a[j] += (1.0 - w) * (1.0 - m)
        a[j + 1] += w * (1.0 - m)
        if bool((c != 0).any()):
            h = float(self.slot_times[j + 1] - self.slot_times[j])
            u2 = w * w
            h10, h11 = u2 * w - 2 * u2 + w, u2 * w - u2
            a[j] += c * (h10 + h11)
            a[j + 1] -= c * (h10 + h11)
            s = self.slope_matrix.to("cpu", torch.float64)                   # [T, T]
            a += (h * (h10 * s[j] + h11 * s[j + 1]))[:, None] * c[None, :]
        return a

    def still_rows(self, j: int, w: float, idx: torch.Tensor, lo: int, hi: int,
                   buffer: Optional[Callable[[str, Sequence[int]], torch.Tensor]] = None
                   ) -> torch.Tensor:
        """The coefficients of the part that is not moved at fraction ``w`` of interval
        ``j``, rows ``lo:hi``, for the variables ``idx`` [v] -> [v, hi - lo, Y+2, X+2]:
        :meth:`still_weights` summed over the slots' rows, each slot's rows read once
        (a file's: those rows of the variables it weighs alone), so the slab then evaluates
        one spatial spline per output time (instead of the two ends' rows and both ends'
        slopes, each of those a sum over every slot's rows, again per slab).
        ``buffer(name, shape)``: scratch memory for the sum and for a file's rows as read
        (a plan's buffers, the same from slab to slab: no fresh pages touched per slot)."""
        wts = self.still_weights(j, w)[:, idx.cpu()].to(torch.float32).tolist()   # [T][v]
        pick = idx.tolist()
        shape = (len(pick), hi - lo) + tuple(d + 2 for d in self.dims[1::-1])
        make = buffer or (lambda name, shp: self.slot_times.new_empty(tuple(shp)))
        out = make("still sum", shape)
        read = None
        started = [False] * len(pick)
        for i in range(self.n_slots):
            need = [k for k in range(len(pick)) if wts[i][k] != 0.0]
            if not need:
                continue
            where = {k: pick[k] for k in need}           # variable -> its row in ``rows``
            if self._slots is not None and (lo, hi) != (0, self.dims[2] + 2) and \
                    self.device.type == "cpu":
                if read is None:
                    read = make("still read", (self.n_vars,) + shape[1:])
                rows = self._slots.rows(i, lo, hi, self.device,
                                        variables=[pick[k] for k in need],
                                        out=read[:len(need)])
                where = {k: n for n, k in enumerate(need)}
            else:
                rows = self.slot_rows(i, lo, hi)                  # [V, hi - lo, Y+2, X+2]
            # variable by variable: no copy of the picked rows or of their product (the
            # variables without a cubic share read their two ends' rows alone)
            for k in need:
                if started[k]:
                    out[k].add_(rows[where[k]], alpha=wts[i][k])
                else:
                    torch.mul(rows[where[k]], wts[i][k], out=out[k])
                    started[k] = True
        for k in range(len(pick)):
            if not started[k]:
                out[k].zero_()
        return out

    def _still_formula(self, j: int, w: float, idx: torch.Tensor, lo: int, hi: int
                       ) -> torch.Tensor:
        """:meth:`still_rows` for a base with trained slopes in time (kept apart from the
        coefficients, so not rows of the slope matrix): the two ends' rows and slopes'
        rows put through the formula."""
        m = self.flow_mix if self.has_flow else torch.zeros(self.n_vars, device=idx.device)
        c = self.time_mix if self.hermite else torch.zeros_like(m)
        pick = (lambda f: f[idx]) if len(idx) < self.n_vars else (lambda f: f)
        c0, c1 = pick(self.slot_rows(j, lo, hi)), pick(self.slot_rows(j + 1, lo, hi))
        comb = (c0 + w * (c1 - c0)) * (1 - m[idx]).view(-1, 1, 1, 1)
        if bool((c[idx] != 0).any()):
            h = float(self.slot_times[j + 1] - self.slot_times[j])
            corr = hermite_correction(c0, c1, pick(self.slopes_rows(j, lo, hi)).detach(),
                                      pick(self.slopes_rows(j + 1, lo, hi)).detach(),
                                      torch.tensor(w, dtype=c0.dtype), h)
            comb = comb + c[idx].view(-1, 1, 1, 1) * corr
        return comb

    # --- the error estimate (error_estimate.py) ---------------------------------------------
    def has_error_estimate(self) -> bool:
        """Whether the fit calibrated an error estimate (model files from before it: no)."""
        return bool((self.error_scale[0] > 0).any())

    def error_grid(self, plan: "GridPlan", t: float, units: Optional[torch.Tensor] = None,
                   out: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The error estimate at normalised time ``t`` on a planned grid [V, Zo, Yo, Xo], in
        the base's normalised units, or times ``units`` [V] (the half ranges) into ``out``
        (error_estimate.py)."""
        return error_grid(self, plan, t, units, out)

    def _slot(self, t: float) -> Tuple[int, float]:
        """The interval (its first slot) holding normalised time ``t``, and the fraction, as
        ``forward`` finds them (in the slot times' float32, so a kept step's time lands on
        its slot exactly)."""
        j, w = slot_weights(self.slot_times, self.slot_times.new_tensor([t]))
        return int(j[0]), float(w[0, 0])

    def kept_field(self, k: int, mats: Sequence[torch.Tensor],
                   out: Optional[torch.Tensor] = None, last: bool = False,
                   fine: Optional[Callable[[], Sequence[torch.Tensor]]] = None,
                   data_points: bool = False) -> torch.Tensor:
        """Kept step ``k``'s field (normalised units) on the grid, or the window of one,
        whose per-axis spline matrices (x, y, z) are ``mats`` -> [V, Zo, Yo, Xo]: the
        spline through the step's data plus, for the variables that use it, the spatial
        prior's correction (``fine()``: the same points' matrices on the prior's lattice,
        asked for only then; ``data_points``: the points are the data's own, where the
        correction is 0); every evaluation of a kept step's field on a grid goes through
        here. ``last``: laid out channels last where the compiled lookups read it
        (grid_plan.separable)."""
        lo, hi = kernels.used_rows(mats[2])       # the coefficients' rows it reads alone
        f = separable(self.slot_rows(k, lo, hi), list(mats[:2]) + [mats[2][:, lo:hi]],
                      out=out, last=last)
        if self.prior_active() and not data_points:
            if fine is None:
                raise ValueError("kept_field: the spatial prior needs the grid's matrices "
                                 "on its lattice (fine=)")
            self.space.add_grid(f, [(self.slot_residual(k), 1.0)], fine)
        return f

    def _fine(self, plan: "GridPlan", which: str, lo: int = 0, hi: Optional[int] = None
              ) -> Callable[[], Sequence[torch.Tensor]]:
        """The prior's lattice matrices (x, y, z) of the plan's output grid (``spline``) or
        its warps' window (``warp``), z rows ``lo:hi``; made when first asked for and kept
        on the plan (a window's cut by its own points, so a slab's rows are the whole
        grid's)."""
        def make() -> Sequence[torch.Tensor]:
            axes = plan.axes if which == "spline" else plan.warp_axes
            got = plan.fine.get(which)
            if got is None or got[2].shape[0] != axes[2].shape[0]:
                got = plan.fine[which] = fine_matrices(axes, self.dims)
            return got[:2] + [got[2][lo:hi]]
        return make

    def prior_active(self) -> bool:
        """Whether a spatial prior corrects the kept steps' fields (else they are the
        spline's alone, the same numbers on the same points whichever way they are made)."""
        return self.space is not None and self.space.active()

    def moves_any(self) -> bool:
        """Whether some variable is moved along the paths (else no path is looked up)."""
        return bool(self.has_flow and bool((self.flow_mix != 0).any()))

    def ring_windows(self) -> bool:
        """Whether a slab's window fields may slide as rings (slid_ring): every reader of
        them is then a compiled kernel (every variable moved, so no still part or index
        picks read them with torch; no network weighing the sides). The memory plan counts
        the window fields of these fused lookups by the same test (slabs.plan_memory)."""
        return bool(kernels.available(self.device) and self.has_flow
                    and bool((self.flow_mix != 0).all()) and not self.weighs_sides())

    def _slot_field(self, plan: "GridPlan", k: int) -> torch.Tensor:
        """Slot ``k`` evaluated on the warps' grid, kept while it is next to the interval in
        use (outputs go forward or back in time: each slot is evaluated once)."""
        f = plan.fields.get(k)
        if f is None:
            for i in [i for i in plan.fields if abs(i - k) != 1]:
                del plan.fields[i]          # in place: a plan sharing the dict sees it too
            last = kernels.available(self.slot_times.device)
            f = plan.fields[k] = slid_window(
                plan, plan.slid_from and plan.slid_from.fields.get(k),
                lambda lo, hi, out=None: self.kept_field(
                    k, plan.warp_spline[:2] + [plan.warp_spline[2][lo:hi]], out=out,
                    last=last, fine=self._fine(plan, "warp", lo, hi)),
                lambda: self.kept_field(k, plan.warp_spline, last=last,
                                        fine=self._fine(plan, "warp")),
                self.n_vars if last else 0)
            drop_slid(plan, plan.slid_from and plan.slid_from.fields, k)
        return f

    def _path_field(self, plan: "GridPlan", k: int) -> torch.Tensor:
        """Slot ``k``'s slopes along the path on the warps' grid, kept like the values."""
        f = plan.slope_fields.get(k)
        if f is None:
            plan.slope_fields = {i: v for i, v in plan.slope_fields.items()
                                 if isinstance(i, tuple) or abs(i - k) == 1}
            f = plan.slope_fields[k] = separable(
                self.path_slope_coef(k), plan.warp_spline,
                last=kernels.available(self.slot_times.device))
        return f

    def _path_field_part(self, plan: "GridPlan", k: int) -> torch.Tensor:
        """Slot ``k``'s slopes along the path on the warps' window for the variables with a
        cubic share alone (slope_variables), from the coefficients' rows the window reads
        (path_slope_rows), laid out for the compiled lookups; kept like the values."""
        key = ("part", k)
        f = plan.slope_fields.get(key)
        if f is None:
            for i in [i for i in plan.slope_fields
                      if isinstance(i, tuple) and abs(i[1] - k) != 1]:
                del plan.slope_fields[i]
            def rows_of(r0: int, r1: int, out: Optional[torch.Tensor] = None
                        ) -> torch.Tensor:
                mz = plan.warp_spline[2][r0:r1]
                lo, hi = kernels.used_rows(mz)
                coef = self.path_slope_part(k, lo, hi)
                return separable(coef, plan.warp_spline[:2] + [mz[:, lo:hi]], out=out,
                                 last=True)
            f = plan.slope_fields[key] = slid_window(
                plan, plan.slid_from and plan.slid_from.slope_fields.get(key), rows_of,
                lambda: rows_of(0, plan.warp_spline[2].shape[0]),
                len(self.slope_variables()))
            drop_slid(plan, plan.slid_from and plan.slid_from.slope_fields, key)
        return f

    def _interval_paths(self, plan: "GridPlan", j: int) -> None:
        """Interval ``j``'s displacement (and bent paths' acceleration) on the planned grid,
        in x and y ([3, Zd, Yo, Xo]; z is done slab by slab), once per interval."""
        key = (j, float(self.path_bend))   # the held-out scoring switches the bend
        if plan.interval != key:
            prev = plan.slid_from          # the slab before: the same x and y, so the same
            mx, my, _ = plan.linear
            if prev is not None and prev.interval == key and prev.disp is not None and \
                    all(a.shape == b.shape and torch.equal(a, b)
                        for a, b in zip(prev.linear[:2], plan.linear[:2])):
                plan.disp, plan.accel = prev.disp, prev.accel
            else:
                plan.disp = my @ (self.flow[j] @ mx.t())
                plan.accel = my @ (self.accelerations()[j] @ mx.t()) if self._bends() \
                    else None
            plan.interval = key

    def _warped_grid(self, plan: "GridPlan", j: int, w: float,
                     idx: Optional[torch.Tensor] = None, into: str = "warp",
                     post: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Motion-compensated values of interval j at fraction w on the planned grid
        [V, Zo, Yo, Xo] (or of the variables ``idx`` alone): both slots are evaluated on the
        grid once per interval, the displacement (and the paths' acceleration) in x and y
        too (on its own few z-planes), and in z slab by slab. Linear along the path, both
        ends are looked up and blended; with a cubic share the two ends' values and slopes
        are first combined per variable (paths.end_weights), so each end is still one
        lookup. ``into``: the plan's buffer the values go to; ``post`` [3, V]: the moved
        share and the units applied in the compiled lookups' pass where they run (then
        ``plan.units_applied`` is set; kernels.warp_lookup)."""
        self._interval_paths(plan, j)
        if self.weighs_sides():
            return self._weighted_sides(plan, j, w, idx, into)
        k0, k1 = self._slot_field(plan, j), self._slot_field(plan, j + 1)
        cubic = self.path_mix if idx is None else self.path_mix[idx]
        fused = idx is None and kernels.available(k0.device)
        if idx is None and not bool((cubic != 0).any()):
            ends, weights = (k0, k1), (1.0 - w, w)
            if fused and post is not None:
                out = plan.buffer(into, k0, (k0.shape[0],) + plan.shape)
                plan.units_applied = True
                return kernels.warp_lookup(
                    ends, [torch.full((k0.shape[0],), x) for x in weights], plan.disp,
                    plan.accel, bend_shift(w), plan.linear[2], plan.axes, w,
                    plan.lookup_index(), kernels.BLEND, out, post=post)[0]
        elif fused:
            # the ends' values and slopes weighed per variable in the lookups' one pass
            h = float(self.slot_times[j + 1] - self.slot_times[j])
            alpha, g0, beta, g1 = end_weights(w, h, cubic.to(k0))
            self._interval_paths(plan, j)
            out = plan.buffer(into, k0, (k0.shape[0],) + plan.shape)
            plan.units_applied = post is not None
            return kernels.warp_lookup(
                (k0, k1), (alpha, beta), plan.disp, plan.accel, bend_shift(w), plan.linear[2],
                plan.axes, w, plan.lookup_index(), kernels.BLEND, out,
                slopes=(self._path_field_part(plan, j), self._path_field_part(plan, j + 1)),
                slope_weights=(g0, g1), slope_variables=self.slope_variables(),
                post=post)[0]
        else:                            # per-variable end weights folded into the fields
            h = float(self.slot_times[j + 1] - self.slot_times[j])
            alpha, g0, beta, g1 = (t.view(-1, 1, 1, 1)
                                   for t in end_weights(w, h, cubic.to(k0)))
            sel = (lambda f: f) if idx is None else (lambda f: f.index_select(0, idx))
            last = kernels.available(k0.device)
            e0 = plan.buffer("end0", k0, (len(cubic),) + tuple(k0.shape[1:]), last)
            e1 = plan.buffer("end1", k1, (len(cubic),) + tuple(k1.shape[1:]), last)
            torch.mul(sel(k0), alpha, out=e0)
            torch.mul(sel(k1), beta, out=e1)
            if bool((cubic != 0).any()):
                e0.addcmul_(sel(self._path_field(plan, j)), g0)
                e1.addcmul_(sel(self._path_field(plan, j + 1)), g1)
            ends, weights = (e0, e1), (1.0, 1.0)
        out = plan.buffer(into, ends[0], (ends[0].shape[0],) + plan.shape)
        return self._look_up_ends(plan, ends, w, out, weights)

    @torch.no_grad()
    def end_values(self, plan: "GridPlan", t: float) -> Optional[torch.Tensor]:
        """The two kept steps around normalised time ``t``, each looked up where the path
        through each planned point is at that step (still variables: at the point itself),
        unblended: [2, V, Zo, Yo, Xo]; None at a kept step. What the blend's two sides
        say, and how far they disagree (the error estimate's term in time)."""
        j, w = self._slot(t)
        if self.n_slots == 1 or w <= 0.0 or w >= 1.0:
            return None
        return self._end_values_at(plan, j, w)

    @torch.no_grad()
    def end_difference(self, plan: "GridPlan", t: float) -> Optional[torch.Tensor]:
        """|earlier side - later side| at normalised time ``t`` on a planned grid
        [V, Zo, Yo, Xo] (the error estimate's term in time; :meth:`end_values`), in one
        pass of the lookups where every variable moves; None at a kept step."""
        j, w = self._slot(t)
        if self.n_slots == 1 or w <= 0.0 or w >= 1.0:
            return None
        if self.has_flow and bool((self.flow_mix != 0).all()):
            self._interval_paths(plan, j)
            ends = (self._slot_field(plan, j), self._slot_field(plan, j + 1))
            return self._look_up_ends(plan, ends, w, None, "absdiff")
        ends = self._end_values_at(plan, j, w)
        return (ends[0] - ends[1]).abs_()

    def _end_values_at(self, plan: "GridPlan", j: int, w: float) -> torch.Tensor:
        """:meth:`end_values` at fraction ``w`` of interval ``j``."""
        out = self.slot_times.new_empty((2, self.n_vars) + plan.shape)
        m = self.flow_mix if self.has_flow else torch.zeros(self.n_vars)
        moving = (m != 0).nonzero(as_tuple=True)[0]
        still = (m == 0).nonzero(as_tuple=True)[0]
        if len(still):
            lo, hi = kernels.used_rows(plan.spline[2])
            mats = plan.spline[:2] + [plan.spline[2][:, lo:hi]]
            for side in (0, 1):
                out[side, still] = separable(self.slot_rows(j + side, lo, hi)[still], mats)
                if self.space is not None:       # the prior's correction, still ones only
                    self.space.add_grid(out[side], [(self.slot_residual(j + side),
                                                     (m == 0).to(out.dtype))],
                                        self._fine(plan, "spline"))
        if len(moving):
            self._interval_paths(plan, j)
            ends = tuple(self._slot_field(plan, j + side) for side in (0, 1))
            if len(moving) < self.n_vars:    # a copy of the moved variables' fields only
                ends = tuple(e.index_select(0, moving) for e in ends)
                out[:, moving] = self._look_up_ends(plan, ends, w, None, None)
            else:
                out = self._look_up_ends(plan, ends, w, None, None)
        return out

    def _weighted_sides(self, plan: "GridPlan", j: int, w: float,
                        idx: Optional[torch.Tensor], into: str = "warp") -> torch.Tensor:
        """The motion-compensated values with the two sides weighed per point by
        ``side_weights`` (instead of 1 - w and w), plus the cubic share along the path:
        the network sees both sides on the data's lattice (or one ``stride`` times coarser:
        its cost), its weights are carried to the planned grid trilinearly, where both sides
        are looked up apart and blended."""
        sel = (lambda f: f) if idx is None else (lambda f: f.index_select(0, idx))
        k0, k1 = self._slot_field(plan, j), self._slot_field(plan, j + 1)
        if plan.side_plan is None:       # the data's lattice, or one `stride` times coarser
            stride = int(getattr(self.side_weights, "stride", 1))
            lattice = [(n - 2) // stride + 2 if n > 1 else 1 for n in self.dims[::-1]]
            axes = lattice_axes(lattice, self.slot_times.device)
            # the lattice's points the carry to this grid (a slab of one) reads, and one
            # more each side for the features' 3^3 means: the weights there are whole
            mats, box = [], []
            for a, n in zip(plan.axes, lattice[::-1]):
                lo, hi = kernels.used_rows(linear_matrix(a, n))
                box += [max(0, lo - 1), min(n - 1, hi)]
                mats.append(linear_matrix(a, n)[:, box[-2]:box[-1] + 1])
            whole = all(box[2 * i] == 0 and box[2 * i + 1] == n - 1
                        for i, n in enumerate(lattice[::-1]))
            plan.side_plan = self.plan_grid(axes, None if whole else box)
            plan.side_carry = mats
        share_fields(plan, plan.side_plan)
        ends = self._end_values_at(plan.side_plan, j, w)               # [2, V, Z', Y', X']
        sides = sel(ends.transpose(0, 1)).transpose(0, 1)              # [2, v, Z', Y', X']
        outside = self.side_outside(plan.side_plan, j, w)
        corr = None
        if getattr(self.side_weights, "refines", False):   # time_refine.py: and a correction
            weight, corr = self.side_weights.refine(
                sides, w, outside, self.side_motion(plan.side_plan, j, w), idx)
        else:
            weight = self.side_weights(sides, w, outside)
        mx, my, mz = plan.side_carry
        carried = (my @ (weight @ mx.t()), mz)      # in x and y here, in z slab by slab
        ends = (sel(k0), sel(k1))
        out = plan.buffer(into, k0, (ends[0].shape[0],) + plan.shape)
        self._look_up_ends(plan, ends, w, out, None, carried)
        if corr is not None and bool(corr.any()):   # carried like the weights
            cxy = my @ (corr @ mx.t())                                   # [v, Z', Yo, Xo]
            out.add_((mz @ cxy.reshape(cxy.shape[0], cxy.shape[1], -1)).view(out.shape))
        cubic = self.path_mix if idx is None else self.path_mix[idx]
        if bool((cubic != 0).any()):     # the cubic's share along the path, as in _warped_grid
            h = float(self.slot_times[j + 1] - self.slot_times[j])
            g, g0, g1 = hermite_terms(w, h)
            c = cubic.to(k0).view(-1, 1, 1, 1)
            e0 = sel(k0).mul(c * g).addcmul_(sel(self._path_field(plan, j)), c * g0)
            e1 = sel(k1).mul(-c * g).addcmul_(sel(self._path_field(plan, j + 1)), c * g1)
            out.add_(self._look_up_ends(plan, (e0, e1), w, torch.empty_like(out), (1.0, 1.0)))
        return out

    @torch.no_grad()
    def side_outside(self, plan: "GridPlan", j: int, w: float) -> torch.Tensor:
        """How far each side's lookup at fraction ``w`` of interval ``j`` lies outside the
        data's box, per planned point of a whole grid, in data cells (the most over the
        axes; 0 inside) -> [2, Zo, Yo, Xo]: there the side sees the border's values, not what
        was or will be there (what enters or leaves the box is seen by one side only)."""
        self._interval_paths(plan, j)
        zo, yo, xo = plan.shape
        mz = plan.linear[2]
        d = (mz @ plan.disp.reshape(3, plan.disp.shape[1], -1)).view(3, zo, yo, xo)
        bent = None
        if plan.accel is not None:
            bent = bend_shift(w) * (mz @ plan.accel.reshape(3, plan.accel.shape[1], -1)
                                    ).view(3, zo, yo, xo)
        grid = (plan.axes[0].view(1, 1, -1), plan.axes[1].view(1, -1, 1),
                plan.axes[2].view(-1, 1, 1))
        out = d.new_empty((2, zo, yo, xo))
        for k, shift in ((0, -w), (1, 1.0 - w)):
            s = shift * d if bent is None else shift * d + bent
            out[k] = torch.stack([((g + s[i]).abs() - 1.0).clamp_min(0.0) * (0.5 * (n - 1))
                                  for i, (g, n) in enumerate(zip(grid, self.dims))]).amax(0)
        return out

    @torch.no_grad()
    def side_motion(self, plan: "GridPlan", j: int, w: float) -> torch.Tensor:
        """The path's motion per planned point of a whole grid at fraction ``w`` of interval
        ``j``, in data cells (time_refine.py's features) -> [2, Zo, Yo, Xo]: the length of
        the interval's displacement, and of the bend's shift of both ends (0: straight)."""
        self._interval_paths(plan, j)
        zo, yo, xo = plan.shape
        mz = plan.linear[2]
        cells = torch.tensor([0.5 * (n - 1) for n in self.dims],
                             dtype=plan.disp.dtype, device=plan.disp.device).view(3, 1, 1, 1)
        d = (mz @ plan.disp.reshape(3, plan.disp.shape[1], -1)).view(3, zo, yo, xo)
        out = d.new_zeros((2, zo, yo, xo))
        out[0] = (d * cells).norm(dim=0)
        if plan.accel is not None:
            a = (mz @ plan.accel.reshape(3, plan.accel.shape[1], -1)).view(3, zo, yo, xo)
            out[1] = (a * cells).norm(dim=0).mul_(abs(bend_shift(w)))
        return out

    def _look_up_ends(self, plan: "GridPlan", ends: Sequence[torch.Tensor], w: float,
                      out: Optional[torch.Tensor],
                      weights: Optional[Tuple[float, float]],
                      per_point: Optional[Tuple[torch.Tensor, torch.Tensor]] = None
                      ) -> torch.Tensor:
        """Look ``ends`` (the interval's two slots on the warps' grid) up along the paths of
        the current interval at fraction ``w``: blended with ``weights`` into ``out``
        [V, Zo, Yo, Xo], or with ``per_point`` = (the earlier side's weight carried in x and
        y [V, Z', Yo, Xo], the z carry [Zo, Z']) carried and applied slab by slab, or (both
        None) both returned [2, V, Zo, Yo, Xo]."""
        mz = plan.linear[2]
        disp, accel, bend = plan.disp, plan.accel, bend_shift(w)
        zo, yo, xo = plan.shape
        both = weights is None and per_point is None
        if per_point is None and kernels.available(ends[0].device):
            # every variable and both sides in one compiled pass (kernels.py)
            mode = kernels.BOTH if both else (kernels.ABSDIFF if weights == "absdiff"
                                               else kernels.BLEND)
            wts = None if mode != kernels.BLEND else [
                torch.as_tensor(x, dtype=torch.float32) for x in weights]
            got = kernels.warp_lookup(ends, wts, disp, accel, bend, mz, plan.axes, w,
                                      plan.lookup_index(), mode,
                                      None if out is None or both else out)
            return got if both else got[0]
        if weights == "absdiff":
            pair = self._look_up_ends(plan, ends, w, None, None)
            return torch.sub(pair[0], pair[1], out=out).abs_()
        gx, gy = plan.axes[0].view(1, 1, -1), plan.axes[1].view(1, -1, 1)
        if both:
            out = ends[0].new_empty((2, ends[0].shape[0], zo, yo, xo))
        slab = max(1, WARP_SLAB_POINTS // max(1, yo * xo))

        def warp_slab(z0: int) -> None:
            z1 = min(zo, z0 + slab)
            d = (mz[z0:z1] @ disp.reshape(3, disp.shape[1], -1)).view(3, -1, yo, xo)
            if accel is not None:        # a bent path: both ends shift by the same
                a = (mz[z0:z1] @ accel.reshape(3, accel.shape[1], -1)).view(3, -1, yo, xo)
            gz = plan.axes[2][z0:z1].view(-1, 1, 1)
            acc = None
            for k, shift in ((0, -w), (1, 1.0 - w)):
                s = shift * d if accel is None else shift * d + bend * a
                pts = torch.stack([plan.to_lookup(0, (gx + s[0]).clamp_(-1, 1)),
                                   plan.to_lookup(1, (gy + s[1]).clamp_(-1, 1)),
                                   plan.to_lookup(2, (gz + s[2]).clamp_(-1, 1))],
                                  dim=-1)
                v = F.grid_sample(ends[k][None], pts[None], align_corners=True,
                                  padding_mode="border")[0]                 # [V, s, Yo, Xo]
                if both:
                    out[k, :, z0:z1] = v
                elif per_point is not None:
                    if k == 0:
                        acc = v
                    else:
                        wxy, mzw = per_point
                        ws = (mzw[z0:z1] @ wxy.reshape(wxy.shape[0], wxy.shape[1], -1))
                        acc = torch.lerp(v, acc, ws.view(v.shape).clamp_(0.0, 1.0))
                else:
                    acc = v.mul_(weights[0]) if k == 0 else acc.add_(v, alpha=weights[1])
            if not both:
                out[:, z0:z1] = acc

        each_slab(warp_slab, range(0, zo, slab), out.device)
        return out

    def _warped(self, jj: int, p: torch.Tensor, wj: torch.Tensor) -> torch.Tensor:
        """Motion-compensated value in interval jj at the points ``p`` [n, 3] (fractions
        ``wj`` [n, 1]): look back along the path into slot jj and ahead into slot jj + 1,
        and blend linearly, or as the cubic along the path for the ``path_mix`` share."""
        disp = self._flow_at(jj, p)                                        # [n, 3]
        shift = 0.0
        if self._bends():
            shift = 0.5 * wj * (1 - wj) * self._flow_at(jj, p, self.accelerations()[jj])
        back = (p - wj * disp + shift).clamp(-1.0, 1.0)
        ahead = (p + (1 - wj) * disp + shift).clamp(-1.0, 1.0)
        v0 = self._slot_sample(jj, back)
        v1 = self._slot_sample(jj + 1, ahead)
        out = (1 - wj) * v0 + wj * v1
        if bool((self.path_mix != 0).any()):
            h = float(self.slot_times[jj + 1] - self.slot_times[jj])
            w2 = wj * wj
            h10, h11 = w2 * wj - 2 * w2 + wj, w2 * wj - w2
            d0 = bspline_sample(self.path_slope_coef(jj)[None], back)
            d1 = bspline_sample(self.path_slope_coef(jj + 1)[None], ahead)
            out = out + self.path_mix * ((h10 + h11) * (v0 - v1) + h * (h10 * d0 + h11 * d1))
        return out
