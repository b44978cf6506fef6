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
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .encodings import bspline_coefficients, bspline_sample, slot_weights
from .. import distributed
from .time_basis import (cross_validated_mix, displacement_grid_dims, fit_displacement,
                         held_out_pairs, hermite_correction, natural_spline_slopes)

BASE_TIMES = ("auto", "linear", "cubic", "flow")
MIN_FIT_SECONDS = 0.05       # a displacement fit with less time than this is skipped
WARP_FIELD_VALUES = 1 << 26  # values of one slot on the warps' grid when finer than 2x
WARP_SLAB_POINTS = 1 << 20    # output points per warp call: bounds its coordinate tensors


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
                 trainable: bool = True):
        super().__init__()
        if base_time not in BASE_TIMES:
            raise ValueError(f"unknown base_time {base_time!r}: use {', '.join(BASE_TIMES)}")
        self.base_time = base_time
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
        self.has_flow = self.hermite and base_time in ("auto", "flow") and self.n_slots > 1
        if self.has_flow:
            low = displacement_grid_dims((z, y, x), int(flow_coarsen), flow_max_points)
            self.register_buffer("flow", torch.zeros(self.n_slots - 1, 3, *low))
            self.register_buffer("flow_mix", torch.zeros(self.n_vars))

    # --- model files written before the base had its own module ----------------------------
    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        old = prefix + "grids.0"          # format 3: one grid, values then slopes as channels
        if old in state_dict:
            grid = state_dict.pop(old)
            state_dict[prefix + "coef"] = grid[:, :self.n_vars]
            if self.hermite and self.trainable:
                state_dict[prefix + "slopes"] = grid[:, self.n_vars:]
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def slopes_at(self, k: int) -> torch.Tensor:
        """Slot ``k``'s slopes in time [V, Z+2, Y+2, X+2]: trained ones, or the natural
        cubic spline's through the coefficients (a row of [T, T] @ coef: derived per slot
        rather than stored, which would double the model's memory)."""
        if self.slopes is not None:
            return self.slopes[k]
        return torch.tensordot(self.slope_matrix[k].to(self.coef), self.coef, dims=([0], [0]))

    # --- fitting -----------------------------------------------------------------------------
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
        for t in range(self.n_slots):          # one slot at a time: bounded memory
            self.coef[t].copy_(bspline_coefficients(data[:, t].to(torch.float32)))
        if not self.hermite:
            return None
        if self.slopes is not None:
            self.slopes.copy_(torch.tensordot(self.slope_matrix.to(self.coef), self.coef,
                                              dims=([1], [0])))
        self.time_mix.zero_()
        if not self.has_flow:
            if self.base_time == "cubic":
                self.time_mix.fill_(1.0)
            else:
                self.time_mix.copy_(cross_validated_mix(data, self.slot_times.tolist())[:, 0])
            return None
        self.flow_mix.zero_()
        times = self.slot_times.tolist()
        # the displacement fits: one per interval, then (auto) one per held-out case of the
        # cross-validation; independent of each other, so with several processes
        # (distributed.py) each fits its share and all get every result
        pairs = [(j, j + 1) for j in range(len(times) - 1)]
        if self.base_time == "auto":
            pairs += held_out_pairs(len(times))
        n_fits = len(pairs)
        mine = distributed.share(n_fits)
        state = {"done": 0, "cut": 0, "skipped": 0, "stopped": 0}

        def fit_one(f0: torch.Tensor, f1: torch.Tensor) -> Optional[torch.Tensor]:
            """One displacement fit within an equal share of the budget left (None: none
            left; a fit whose share runs out stops where it is)."""
            left = len(mine) - state["done"]
            state["done"] += 1
            deadline = None
            if budget_s is not None:
                share = (budget_s - (time.perf_counter() - t_start)) / max(1, left)
                if share < MIN_FIT_SECONDS:
                    state["skipped"] += 1
                    return None
                deadline = time.perf_counter() + share
            disp = fit_displacement(f0, f1, **flow_options, deadline=deadline)
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
            k0, k1 = pairs[i]
            local[i] = fit_one(data[:, k0], data[:, k1])
            stop = progress is not None and \
                progress(state["done"] / max(1, len(mine))) is False
        fits = distributed.gather_shares(local, n_fits)
        counts = distributed.all_gather_objects(
            (state["cut"], state["skipped"], state["stopped"]))
        cut, skipped, stopped = (sum(c[k] for c in counts) for k in (0, 1, 2))
        for j in range(len(times) - 1):
            if fits[j] is not None:
                self.flow[j].copy_(fits[j])
        if self.base_time == "flow":
            self.flow_mix.fill_(1.0)
        else:
            held = iter(fits[len(times) - 1:])
            mix = cross_validated_mix(data, times, with_flow=True, flow_share=1.0,
                                      fit_flow=lambda f0, f1: next(held), **flow_options)
            self.time_mix.copy_(mix[:, 0])
            self.flow_mix.copy_(mix[:, 1])
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
        return out

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
            a = bspline_sample(self.coef[jj:jj + 1], p)                       # [n, V]
            if self.n_slots > 1 and bool((wj > 0).any()):
                b = bspline_sample(self.coef[jj + 1:jj + 2], p)
                line = a + wj * (b - a)
                if self.hermite:
                    d0 = bspline_sample(self.slopes_at(jj)[None], p)
                    d1 = bspline_sample(self.slopes_at(jj + 1)[None], p)
                    h = float(self.slot_times[jj + 1] - self.slot_times[jj])
                    line = line + self.time_mix * hermite_correction(a, b, d0, d1, wj, h)
                    if self.has_flow:
                        line = line + self.flow_mix * (self._warped(jj, p, wj) -
                                                       (a + wj * (b - a)))
                a = line
            out[sel] = a
        return out

    # --- evaluation on a regular grid ---------------------------------------------------------
    def plan_grid(self, axes: Sequence[torch.Tensor],
                  box: Optional[Sequence[int]] = None) -> "GridPlan":
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
        for factor in (8, 4, 2):
            want = [max(a.numel(), factor * (n - 1) + 1) if n > 1 else a.numel()
                    for a, n in zip(full, self.dims)]
            if factor == 2 or self.n_vars * math.prod(want) <= WARP_FIELD_VALUES:
                fine = [a if a.numel() == m else torch.linspace(-1.0, 1.0, m, device=a.device)
                        for a, m in zip(full, want)]
                break
        if whole:
            warp = [m if f is a else spline_matrix(f, n)
                    for m, f, a, n in zip(spline, fine, full, self.dims)]
            return GridPlan(spline, linear, sub, warp)
        reach = [0.0, 0.0, 0.0]            # the largest displacement per axis (local units)
        if self.has_flow and self.flow.numel():
            reach = self.flow.abs().amax(dim=(0, 2, 3, 4)).tolist()
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
        return GridPlan(spline, linear, sub, warp, warp_spans=spans)

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
            return separable(coef[k], plan.spline, out=out)
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
        if bool((m != 0).any()):
            moved = self._warped_grid(plan, j, w).mul_(m.view(-1, 1, 1, 1))
            out = moved if out is None else out.add_(moved)
        return out

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
            f = plan.fields[k] = separable(self.coef[k].detach(), plan.warp_spline)
        return f

    def _warped_grid(self, plan: "GridPlan", j: int, w: float) -> torch.Tensor:
        """Motion-compensated blend of slots j and j + 1 on the planned grid [V, Zo, Yo, Xo]:
        both slots are evaluated on the grid once per interval, the displacement in x and y
        too (on its own few z-planes), and in z slab by slab."""
        mx, my, mz = plan.linear
        if plan.interval != j:           # [3, Zd, Yo, Xo]: x and y done, z per slab
            plan.disp = my @ (self.flow[j] @ mx.t())
            plan.interval = j
        ends, disp = (self._slot_field(plan, j), self._slot_field(plan, j + 1)), plan.disp
        zo, yo, xo = plan.shape
        gx, gy = plan.axes[0].view(1, 1, -1), plan.axes[1].view(1, -1, 1)
        out = plan.buffer("warp", ends[0], (ends[0].shape[0], zo, yo, xo))
        slab = max(1, WARP_SLAB_POINTS // max(1, yo * xo))

        def warp_slab(z0: int) -> None:
            z1 = min(zo, z0 + slab)
            d = (mz[z0:z1] @ disp.reshape(3, disp.shape[1], -1)).view(3, -1, yo, xo)
            gz = plan.axes[2][z0:z1].view(-1, 1, 1)
            acc = None
            for k, shift in ((0, -w), (1, 1.0 - w)):
                pts = torch.stack([plan.to_lookup(0, (gx + shift * d[0]).clamp_(-1, 1)),
                                   plan.to_lookup(1, (gy + shift * d[1]).clamp_(-1, 1)),
                                   plan.to_lookup(2, (gz + shift * d[2]).clamp_(-1, 1))],
                                  dim=-1)
                v = F.grid_sample(ends[k][None], pts[None], align_corners=True,
                                  padding_mode="border")[0]                 # [V, s, Yo, Xo]
                acc = v.mul_(1 - w) if k == 0 else acc.add_(v, alpha=w)
            out[:, z0:z1] = acc

        starts = range(0, zo, slab)
        if out.device.type == "cpu" and torch.get_num_threads() > 1 and len(starts) > 1:
            # grid_sample runs on one core on the CPU: slabs side by side use them all
            with ThreadPoolExecutor(torch.get_num_threads()) as pool:
                list(pool.map(warp_slab, starts))
        else:
            for z0 in starts:
                warp_slab(z0)
        return out

    def _warped(self, jj: int, p: torch.Tensor, wj: torch.Tensor) -> torch.Tensor:
        """Motion-compensated blend of slots jj and jj + 1 at the points ``p`` [n, 3]: look
        back along the interval's displacement into slot jj and ahead into slot jj + 1."""
        disp = F.grid_sample(self.flow[jj:jj + 1], p.view(1, 1, 1, -1, 3),
                             align_corners=True, padding_mode="border")[0, :, 0, 0].t()  # [n, 3]
        back = (p - wj * disp).clamp(-1.0, 1.0)
        ahead = (p + (1 - wj) * disp).clamp(-1.0, 1.0)
        v0 = bspline_sample(self.coef[jj:jj + 1], back)
        v1 = bspline_sample(self.coef[jj + 1:jj + 2], ahead)
        return (1 - wj) * v0 + wj * v1


# --- evaluation on a regular grid (queries: separable, no per-point lookups) --------------
def spline_matrix(local: torch.Tensor, n: int) -> torch.Tensor:
    """[m, n + 2] weights taking the padded cubic B-spline coefficients of an axis of ``n``
    samples to the spline's values at local coordinates ``local`` [m] in [-1, 1], as
    :func:`bspline_sample` weighs them (4 non-zeros a row)."""
    idx = (local.to(torch.float64) + 1) * 0.5 * (n - 1) + 1
    i = idx.floor().clamp(1, max(1, n - 1))
    f = idx - i
    f2, f3 = f * f, f * f * f
    w = torch.stack([(1 - f) ** 3 / 6, (3 * f3 - 6 * f2 + 4) / 6,
                     (-3 * f3 + 3 * f2 + 3 * f + 1) / 6, f3 / 6], dim=1)
    taps = (i.long()[:, None] + torch.arange(-1, 3, device=local.device)[None]).clamp(0, n + 1)
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
              out: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``a`` [C, Z, Y, X] filtered along x, y and z by the matrices ``mats`` (x, y, z; each
    [out, in]) -> [C, Zo, Yo, Xo] (into ``out`` when given): three matrix products, coarse
    axes first, so the cost per output value is a few dozen multiply-adds done by BLAS."""
    mx, my, mz = mats
    c, z, y, _ = a.shape
    a = a @ mx.t()                                               # [C, Z, Y, Xo]
    a = my @ a                                                   # [C, Z, Yo, Xo]
    xo, yo = a.shape[3], a.shape[2]
    if out is None:
        return (mz @ a.reshape(c, z, yo * xo)).reshape(c, -1, yo, xo)   # [C, Zo, Yo, Xo]
    torch.matmul(mz, a.reshape(c, z, yo * xo), out=out.view(c, -1, yo * xo))
    return out


@dataclass
class GridPlan:
    """What evaluating the base on one output grid needs, computed once per grid: the
    spline and displacement matrices per axis, the grid's points for the warps, and the
    fine fields of the current interval (reused by every step inside it)."""

    spline: List[torch.Tensor]            # x, y, z: [out, in + 2]
    linear: List[torch.Tensor]            # x, y, z: [out, flow points]
    axes: List[torch.Tensor]              # x, y, z local coordinates [out]
    warp_spline: List[torch.Tensor]       # x, y, z: [fine, in + 2], the warps' lookup grid
    interval: int = -1
    disp: Optional[torch.Tensor] = None   # [3, Zd, Yo, Xo] the interval's displacement
    # slot -> its field on the warps' grid [V, Zf, Yf, Xf]: the current interval's two, each
    # evaluated once for all the steps that use it (and, on the output grid, the kept step)
    fields: Dict[int, torch.Tensor] = field(default_factory=dict)
    # reuse two output-sized buffers from step to step (a caller that is done with each
    # step before asking for the next, as the streaming upscale is): fresh memory of that
    # size costs as much as the arithmetic on this machine's first touch of its pages
    reuse: bool = False
    buffers: Dict[str, torch.Tensor] = field(default_factory=dict)
    # a piece: per axis the local coordinates (first, last) the warps' lookup grid is cut
    # to; None: the whole [-1, 1]
    warp_spans: Optional[List[Tuple[float, float]]] = None

    def to_lookup(self, axis: int, local: torch.Tensor) -> torch.Tensor:
        """Local coordinates along ``axis`` as ``grid_sample`` addresses the warps' lookup
        grid (in place; unchanged when that grid spans [-1, 1])."""
        if self.warp_spans is None or self.warp_spans[axis] == (-1.0, 1.0):
            return local
        lo, hi = self.warp_spans[axis]
        return local.sub_(lo).mul_(2.0 / (hi - lo)).sub_(1.0)

    def buffer(self, name: str, like: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
        """An output-sized scratch tensor: the same one each call when ``reuse``."""
        if not self.reuse:
            return like.new_empty(tuple(shape))
        b = self.buffers.get(name)
        if b is None or tuple(b.shape) != tuple(shape):
            b = self.buffers[name] = like.new_empty(tuple(shape))
        return b

    @property
    def shape(self) -> Tuple[int, int, int]:
        """(Zo, Yo, Xo) of the output grid."""
        return (len(self.axes[2]), len(self.axes[1]), len(self.axes[0]))

    @property
    def warp_on_output(self) -> bool:
        return all(w is s for w, s in zip(self.warp_spline, self.spline))

