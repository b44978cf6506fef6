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

import math
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .encodings import bspline_coefficients, bspline_sample, slot_weights
from .. import distributed
from .paths import accelerations, bend_shift, end_weights, hermite_terms, slope_weights
from .time_basis import (cross_validated_mix, displacement_grid_dims, fit_displacement,
                         held_out_pairs, hermite_correction, natural_spline_slopes)
from .error_estimate import calibrate, error_grid
from .grid_plan import (GridPlan, lattice_axes, linear_matrix, separable, share_fields,
                        spline_matrix)
from .space_residual import SpaceResidual, fine_matrices
from .time_select import chain_options, chain_pairs, chains, choose, half_chains, half_series

BASE_TIMES = ("select", "auto", "linear", "cubic", "flow")
MOVING = ("select", "auto", "flow")     # the base_time choices with displacements
MIN_FIT_SECONDS = 0.05       # a displacement fit with less time than this is skipped
WARP_FIELD_VALUES = 1 << 26  # values of one slot on the warps' grid when finer than 2x
WARP_SLAB_POINTS = 1 << 20    # output points per warp call: bounds its coordinate tensors
PATH_SLOPE_POINTS = 1 << 18   # data points per step of the slopes along the path
PATH_SLOPE_SPLINE = True      # look the neighbours up in the spline (else trilinearly)
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
    """

    def __init__(self, dims: Sequence[int], n_vars: int, slot_times: Sequence[float],
                 base_time: str = "auto", flow_coarsen: int = 2, flow_max_points: int = 32,
                 trainable: bool = True, flow_path: str = "auto", path_values: str = "auto"):
        super().__init__()
        if base_time not in BASE_TIMES:
            raise ValueError(f"unknown base_time {base_time!r}: use {', '.join(BASE_TIMES)}")
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
        self.coef = nn.Parameter(torch.zeros(shape), requires_grad=trainable)   # [T, V, ...]
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
        # a network weighing the two sides per point (visibility): None, or a module
        # ``(ends [2, V, Z', Y', X'], w, outside [2, Z', Y', X']) -> [V, Z', Y', X']`` weight
        # of the earlier side (outside: side_outside), applied on the data's lattice or one
        # ``stride`` (its attribute) times coarser and carried to the output grid (see
        # _weighted_sides; side_weights.py)
        self.side_weights: Optional[nn.Module] = None
        # the spatial prior (space_residual.py): per variable a learned correction of the
        # kept steps' fields between the data's points, or None (the spline alone); every
        # evaluation of a kept step's field adds it, so the steps between them get it
        # through the paths
        self.space: Optional[SpaceResidual] = None
        # error_estimate.py: per variable the scales of the indicators in space and in time
        # (0: no estimate; model files written before it hold none)
        self.register_buffer("error_scale", torch.zeros(2, self.n_vars))

    # --- model files written before the base had its own module ----------------------------
    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
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
        self._path_slopes = {}
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def slot_coef(self, k: int) -> torch.Tensor:
        """Slot ``k``'s spline coefficients [V, Z+2, Y+2, X+2] (detached): every read of one
        kept step's coefficients goes through here, so that the storage behind it may hold
        only the slots in use."""
        return self.coef[k].detach()

    def slot_residual(self, k: int):
        """Kept step ``k``'s learned correction (space_residual.Residual) or None."""
        if self.space is None:
            return None
        return self.space.slot_residual(self.slot_coef(k), k)

    def kept_field(self, k: int, mats: Sequence[torch.Tensor],
                   fine: Callable[[], Sequence[torch.Tensor]],
                   out: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Kept step ``k``'s field (normalised units) on the grid whose per-axis spline
        matrices (x, y, z) are ``mats`` -> [V, Zo, Yo, Xo]: the spline through the step's
        data plus, for the variables that use it, the spatial prior's correction (``fine()``
        gives the same grid's matrices for the prior's lattice, asked for only then).
        Every evaluation of a kept step's field on a grid goes through here."""
        f = separable(self.slot_coef(k), mats, out=out)
        if self.space is not None:
            self.space.add_grid(f, [(self.slot_residual(k), 1.0)], fine)
        return f

    def _fine(self, plan: "GridPlan", which: str) -> Callable[[], Sequence[torch.Tensor]]:
        """The prior's lattice matrices of the plan's output (``spline``) or warps'
        (``warp``) grid, made when first asked for and kept on the plan."""
        def make() -> Sequence[torch.Tensor]:
            got = plan.fine.get(which)
            if got is None:
                axes = plan.axes if which == "spline" else plan.warp_axes
                got = plan.fine[which] = fine_matrices(axes, self.dims)
            return got
        return make

    def _residual_at(self, k: int, p: torch.Tensor) -> Optional[torch.Tensor]:
        """Kept step ``k``'s correction at local points ``p`` [N, 3] -> [N, V] or None."""
        if self.space is None:
            return None
        return self.space.sample(self.slot_residual(k), p, self.n_vars)

    def slopes_at(self, k: int) -> torch.Tensor:
        """Slot ``k``'s slopes in time [V, Z+2, Y+2, X+2]: trained ones, or the natural
        cubic spline's through the coefficients (a row of [T, T] @ coef: derived per slot
        rather than stored, which would double the model's memory)."""
        if self.slopes is not None:
            return self.slopes[k]
        return torch.tensordot(self.slope_matrix[k].to(self.coef), self.coef, dims=([0], [0]))

    # --- fitting -----------------------------------------------------------------------------
    @torch.no_grad()
    def fit_coefficients(self, data: torch.Tensor) -> None:
        """The spline through ``data`` [V, T, Z, Y, X] (normalised): the prefilter per slot
        and, where kept apart from them, the natural spline's slopes in time."""
        for t in range(self.n_slots):          # one slot at a time: bounded memory
            self.coef[t].copy_(bspline_coefficients(data[:, t].to(torch.float32)))
        if self.space is not None:
            self.space.clear()
        if self.hermite and self.slopes is not None:
            self.slopes.copy_(torch.tensordot(self.slope_matrix.to(self.coef), self.coef,
                                              dims=([1], [0])))
        self._path_slopes = {}

    @torch.no_grad()
    def fit(self, data: torch.Tensor, flow_options: Dict[str, object],
            progress: Optional[Callable[[float], Optional[bool]]] = None,
            budget_s: Optional[float] = None) -> Optional[bool]:
        """Solve the base from ``data`` [V, T, Z, Y, X] (normalised): the spline prefilter
        per slot, the natural-spline slopes in time, then the displacement fits and the time
        mix. ``progress(fraction)`` hears of each displacement fit; when it returns False
        (ParaView's abort, Ctrl-C or SIGTERM in ``stsr fit``) the fits done so far are kept,
        the rest skipped as a spent time budget would leave them, the mixes chosen as usual,
        and this returns False. ``budget_s`` bounds the displacement fits: each gets an equal
        share of what is left and stops there; fits with no time left are skipped (no motion
        compensation for that interval); :attr:`fit_notes` says what was cut. In a group of
        processes (distributed.py) each fits its share of the displacements within the
        budget (or until stopped) and all end with the same base (the results are
        exchanged)."""
        t_start = time.perf_counter()
        self.fit_notes: List[str] = []
        self.selection: Dict[str, object] = {}
        self.fit_coefficients(data)
        if not self.hermite:
            return None
        self.time_mix.zero_()
        times = self.slot_times.tolist()
        n = len(times)
        # held out at the real gap (time_select.py): the half series' chains, for the choice
        # in time (select) and the error estimate's scale in time (every kind)
        half = half_series(data) if len(chains(n)) else None
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
        jobs = [(data, j, j + 1, flow_options) for j in range(n - 1)]
        if self.base_time == "auto":
            jobs += [(data, k0, k1, flow_options) for k0, k1 in held_out_pairs(n)]
        n_main = len(jobs)
        if half is not None:
            jobs += [(half, k0, k1, half_opts) for k0, k1 in chain_pairs(n)]
        n_fits = len(jobs)
        mine = distributed.share(n_fits)
        state = {"done": 0, "cut": 0, "skipped": 0, "stopped": 0}
        # with select the half series' fits decide the model and share the budget with the
        # others; otherwise they only calibrate the error estimate and get what is left
        first = n_fits if self.base_time == "select" else n_main
        end = None if budget_s is None else t_start + budget_s
        if budget_s is not None and half is not None:  # room to score the held-out steps
            budget_s = budget_s * (1.0 - HELD_OUT_SHARE)

        def fit_one(i: int, src: torch.Tensor, k0: int, k1: int, opts: Dict[str, object]
                    ) -> Optional[torch.Tensor]:
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
            disp = fit_displacement(src[:, k0], src[:, k1], **opts, deadline=deadline)
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
            choose(self, half, chains_built, None if end is None else
                   end - 0.5 * (end - time.perf_counter()))
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

    def mixes(self) -> Dict[str, Tuple[float, ...]]:
        """Per variable the cubic share c and the motion-compensated share m (for stsr info)."""
        out: Dict[str, Tuple[float, ...]] = {}
        if self.hermite:
            out["time_mix"] = tuple(float(v) for v in self.time_mix)
        if self.has_flow:
            out["flow_mix"] = tuple(float(v) for v in self.flow_mix)
            out["path_mix"] = tuple(float(v) for v in self.path_mix)
            out["path_bend"] = (float(self.path_bend),)
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
        x, y, z = self.dims
        dev = self.coef.device
        axes = [torch.linspace(-1.0, 1.0, n, device=dev) if n > 1 else
                torch.zeros(1, device=dev) for n in (z, y, x)]
        steps, wts = slope_weights(self.slot_times.tolist(), k)
        coef = self.coef.detach()
        own = [spline_matrix(a, n) for a, n in zip(lattice_axes((z, y, x), dev), self.dims)]
        data = {i: separable(coef[i], own) for i in steps}           # the kept steps' values
        vals = wts[steps.index(k)] * data[k] if k in steps else torch.zeros_like(data[steps[0]])
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
                    got = bspline_sample(coef[i:i + 1], q).t()
                else:                    # trilinear in the step's values: 8x fewer lookups
                    got = F.grid_sample(data[i][None], q.view(1, 1, 1, -1, 3),
                                        align_corners=True, padding_mode="border")[0, :, 0, 0]
                vals[:, z0:z0 + rows] += wt * got.reshape(self.n_vars, -1, y, x)

        each_slab(slab, range(0, z, rows), dev)
        d = self._path_slopes[k] = bspline_coefficients(vals)
        return d

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
                    if self.has_flow and bool((self.flow_mix != 0).any()):
                        line = line + self.flow_mix * (self._warped(jj, p, wj) -
                                                       (a + wj * (b - a)))
                a = line
            out[sel] = a
        return out

    def _slot_sample(self, k: int, p: torch.Tensor) -> torch.Tensor:
        """Kept step ``k``'s field at local points ``p`` [N, 3] -> [N, V]: the spline and
        the prior's correction where a variable uses it."""
        v = bspline_sample(self.coef[k:k + 1], p)
        r = self._residual_at(k, p)
        return v if r is None else v + r

    # --- evaluation on a regular grid ---------------------------------------------------------
    def plan_grid(self, axes: Sequence[torch.Tensor],
                  box: Optional[Sequence[int]] = None,
                  factors: Sequence[int] = (8, 4, 2)) -> "GridPlan":
        """Prepare :meth:`evaluate_grid` on the grid whose points have the local coordinates
        ``axes`` (x, y, z; each [n] in [-1, 1], the grid spanning the data's bounds), or on
        the sub-box ``box`` of it (x0, x1, y0, y1, z0, z1, inclusive indices: an MPI piece,
        a streamed piece): the per-axis matrices then hold only the box's rows, and the
        warps' lookup grid is the whole grid's, cut to what the box's points can reach
        (the box plus the largest displacement), so a piece has the numbers of the same
        region of the whole grid (to float32 rounding)."""
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
        reach = [0.0, 0.0, 0.0]            # the largest displacement per axis (local units)
        if self.has_flow and self.flow.numel():
            reach = self.flow.abs().amax(dim=(0, 2, 3, 4))
            if self._bends():           # a bent path's ends shift by up to |a| / 8 more
                reach = reach + self.accelerations().abs().amax(dim=(0, 2, 3, 4)) / 8
            reach = reach.tolist()
        cut, spans = [], []
        for k, f in enumerate(fine):
            m = f.numel()
            if m == 1:
                cut.append(f)
                spans.append((-1.0, 1.0))
                continue
            lo = float(sub[k][0]) - reach[k]
            hi = float(sub[k][-1]) + reach[k]
            i0 = max(0, int(math.floor((lo + 1) * 0.5 * (m - 1))) - 1)
            i1 = min(m - 1, int(math.ceil((hi + 1) * 0.5 * (m - 1))) + 1)
            cut.append(f[i0:i1 + 1])
            # the cut's ends as grid_sample places the whole grid's points (i * 2/(m-1) - 1)
            spans.append((-1.0, 1.0) if (i0, i1) == (0, m - 1) else
                         (i0 * 2.0 / (m - 1) - 1.0, i1 * 2.0 / (m - 1) - 1.0))
        warp = [spline_matrix(f, n) for f, n in zip(cut, self.dims)]
        return GridPlan(spline, linear, sub, warp, warp_spans=spans, warp_axes=cut)

    @torch.no_grad()
    def evaluate_grid(self, plan: "GridPlan", t: float) -> torch.Tensor:
        """The base at normalised time ``t`` on a planned grid -> [V, Zo, Yo, Xo]; the same
        numbers as ``forward`` at those points, except that the motion-compensated term looks
        its warped points up trilinearly in the spline evaluated on this grid (not in the
        spline itself): exact at the grid's points, within the trilinear error of a grid
        finer than the data between them."""
        coef = self.coef.detach()
        j, w = self._slot(t)
        if self.n_slots == 1 or w <= 0.0 or w >= 1.0:
            k = j if self.n_slots == 1 or w <= 0.0 else j + 1
            out = plan.buffer("out", coef, (self.n_vars,) + plan.shape)
            if plan.warp_on_output and self.has_flow:      # the field the warps use too
                return out.copy_(self._slot_field(plan, k))
            return self.kept_field(k, plan.spline, self._fine(plan, "spline"), out=out)
        m = self.flow_mix if self.has_flow else torch.zeros_like(coef[0, :, 0, 0, 0])
        c = self.time_mix if self.hermite else torch.zeros_like(m)
        # the part that is not moved, on the data's coefficients: (1 - m) linear + c (cubic -
        # linear); skipped for variables where it is 0 (the default: m = 1, often c = 0)
        some = ((1 - m) != 0) | (c != 0)
        out = None
        if bool(some.any()):
            idx = some.nonzero(as_tuple=True)[0]
            c0, c1 = coef[j, idx], coef[j + 1, idx]                        # [v, ...]
            comb = (c0 + w * (c1 - c0)) * (1 - m[idx]).view(-1, 1, 1, 1)
            if bool((c[idx] != 0).any()):
                h = float(self.slot_times[j + 1] - self.slot_times[j])
                corr = hermite_correction(c0, c1, self.slopes_at(j)[idx].detach(),
                                          self.slopes_at(j + 1)[idx].detach(),
                                          torch.tensor(w, dtype=coef.dtype), h)
                comb = comb + c[idx].view(-1, 1, 1, 1) * corr
            shape = (self.n_vars,) + plan.shape
            if len(idx) == len(m):
                out = separable(comb, plan.spline, out=plan.buffer("out", coef, shape))
            else:
                out = plan.buffer("out", coef, shape).zero_().index_copy_(
                    0, idx, separable(comb, plan.spline))
            if self.space is not None:   # the prior's correction of the unmoved part
                still = torch.where(some, 1 - m, torch.zeros_like(m))
                self.space.add_grid(out, [(self.slot_residual(j), still * (1 - w)),
                                          (self.slot_residual(j + 1), still * w)],
                                    self._fine(plan, "spline"))
        moving = m != 0
        if bool(moving.all()):
            # nothing still (the usual case): looked up straight into the output's buffer
            # (the caller's host buffer when streaming), not into a buffer of its own
            moved = self._warped_grid(plan, j, w, into="warp" if out is not None else "out")
            moved.mul_(m.view(-1, 1, 1, 1))
            out = moved if out is None else out.add_(moved)
        elif bool(moving.any()):         # some variables still (select): only the others move
            idx = moving.nonzero(as_tuple=True)[0]
            moved = self._warped_grid(plan, j, w, idx).mul_(m[idx].view(-1, 1, 1, 1))
            out.index_add_(0, idx, moved)
        return out

    # --- the error estimate (error_estimate.py) ---------------------------------------------
    def has_error_estimate(self) -> bool:
        """Whether the fit calibrated an error estimate (model files from before it: no)."""
        return bool((self.error_scale[0] > 0).any())

    def error_grid(self, plan: "GridPlan", t: float) -> torch.Tensor:
        """The error estimate at normalised time ``t`` on a planned grid [V, Zo, Yo, Xo], in
        the base's normalised units (error_estimate.py)."""
        return error_grid(self, plan, t)

    def _slot(self, t: float) -> Tuple[int, float]:
        """The interval (its first slot) holding normalised time ``t``, and the fraction, as
        ``forward`` finds them (in the slot times' float32, so a kept step's time lands on
        its slot exactly)."""
        j, w = slot_weights(self.slot_times, self.slot_times.new_tensor([t]))
        return int(j[0]), float(w[0, 0])

    def _slot_field(self, plan: "GridPlan", k: int) -> torch.Tensor:
        """Slot ``k`` evaluated on the warps' grid, kept while it is next to the interval in
        use (outputs go forward or back in time: each slot is evaluated once)."""
        f = plan.fields.get(k)
        if f is None:
            plan.fields = {i: v for i, v in plan.fields.items() if abs(i - k) == 1}
            f = plan.fields[k] = self.kept_field(k, plan.warp_spline, self._fine(plan, "warp"))
        return f

    def _path_field(self, plan: "GridPlan", k: int) -> torch.Tensor:
        """Slot ``k``'s slopes along the path on the warps' grid, kept like the values."""
        f = plan.slope_fields.get(k)
        if f is None:
            plan.slope_fields = {i: v for i, v in plan.slope_fields.items() if abs(i - k) == 1}
            f = plan.slope_fields[k] = separable(self.path_slope_coef(k), plan.warp_spline)
        return f

    def _interval_paths(self, plan: "GridPlan", j: int) -> None:
        """Interval ``j``'s displacement (and bent paths' acceleration) on the planned grid,
        in x and y ([3, Zd, Yo, Xo]; z is done slab by slab), once per interval."""
        key = (j, float(self.path_bend))   # the held-out scoring switches the bend
        if plan.interval != key:
            mx, my, _ = plan.linear
            plan.disp = my @ (self.flow[j] @ mx.t())
            plan.accel = my @ (self.accelerations()[j] @ mx.t()) if self._bends() else None
            plan.interval = key

    def _warped_grid(self, plan: "GridPlan", j: int, w: float,
                     idx: Optional[torch.Tensor] = None, into: str = "warp") -> torch.Tensor:
        """Motion-compensated values of interval j at fraction w on the planned grid
        [V, Zo, Yo, Xo] (or of the variables ``idx`` alone): both slots are evaluated on the
        grid once per interval, the displacement (and the paths' acceleration) in x and y
        too (on its own few z-planes), and in z slab by slab. Linear along the path, both
        ends are looked up and blended; with a cubic share the two ends' values and slopes
        are first combined per variable (paths.end_weights), so each end is still one
        lookup. ``into``: the plan's buffer the values go to."""
        self._interval_paths(plan, j)
        if self.side_weights is not None:
            return self._weighted_sides(plan, j, w, idx, into)
        k0, k1 = self._slot_field(plan, j), self._slot_field(plan, j + 1)
        cubic = self.path_mix if idx is None else self.path_mix[idx]
        if idx is None and not bool((cubic != 0).any()):
            ends, weights = (k0, k1), (1.0 - w, w)
        else:                            # per-variable end weights folded into the fields
            h = float(self.slot_times[j + 1] - self.slot_times[j])
            alpha, g0, beta, g1 = (t.view(-1, 1, 1, 1)
                                   for t in end_weights(w, h, cubic.to(k0)))
            sel = (lambda f: f) if idx is None else (lambda f: f.index_select(0, idx))
            e0 = plan.buffer("end0", k0, (len(cubic),) + tuple(k0.shape[1:]))
            e1 = plan.buffer("end1", k1, (len(cubic),) + tuple(k1.shape[1:]))
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

    def _end_values_at(self, plan: "GridPlan", j: int, w: float) -> torch.Tensor:
        """:meth:`end_values` at fraction ``w`` of interval ``j``."""
        k0 = self._slot_field(plan, j)
        out = k0.new_empty((2, self.n_vars) + plan.shape)
        m = self.flow_mix if self.has_flow else torch.zeros(self.n_vars)
        moving = (m != 0).nonzero(as_tuple=True)[0]
        still = (m == 0).nonzero(as_tuple=True)[0]
        if len(still):
            coef = self.coef.detach()
            for side in (0, 1):
                out[side, still] = separable(coef[j + side, still], plan.spline)
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
            plan.side_plan = self.plan_grid(lattice_axes(lattice, self.coef.device))
        share_fields(plan, plan.side_plan)
        ends = self._end_values_at(plan.side_plan, j, w)               # [2, V, Z', Y', X']
        weight = self.side_weights(sel(ends.transpose(0, 1)).transpose(0, 1), w,
                                   self.side_outside(plan.side_plan, j, w))
        mx, my, mz = [linear_matrix(a, n) for a, n in zip(plan.axes, weight.shape[:0:-1])]
        carried = (my @ (weight @ mx.t()), mz)      # in x and y here, in z slab by slab
        ends = (sel(k0), sel(k1))
        out = plan.buffer(into, k0, (ends[0].shape[0],) + plan.shape)
        self._look_up_ends(plan, ends, w, out, None, carried)
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
        gx, gy = plan.axes[0].view(1, 1, -1), plan.axes[1].view(1, -1, 1)
        both = weights is None and per_point is None
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
