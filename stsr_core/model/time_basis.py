"""Interpolation in time between the kept steps, for the fast model's spline base.

Linear in time is what ParaView's Temporal Interpolator does. A natural cubic spline through
the kept steps follows smooth change better, but overshoots where features are advected
across a point between two kept steps (a plume front). Neither follows a feature that moves:
for that, a displacement field is fitted between each pair of kept steps
(:func:`fit_displacement`) and a point in between looks back along it into the earlier step
and ahead into the later one (:func:`warped_blend`). Which one is better depends on the data
and differs per variable, so the base mixes them per variable,

    base(t) = linear(t) + c * (cubic(t) - linear(t)) + m * (moved(t) - linear(t)),

with c, m in [0, 1]. :func:`cross_validated_mix` chooses them from the kept steps alone (no
reference data needed) by predicting held-out kept steps. Those lie twice the real gap from
their neighbours, where features have moved twice as far and the displacement fit fails more
often: measured on the benchmark's data (comparing with the fine truth), held-out steps put m
near 0 on the plume where m = 1 is better by 3.3 dB between steps, while where nothing
travels (Taylor-Green) m = 1 changes the mean by -0.1 to +0.14 dB. So ``base_time =
"auto"`` (the default until issue 25) fixes m = 1 and leaves only the cubic share c to the
held-out steps; the default since, ``select`` (time_select.py), holds steps out of a series
coarsened in space as well, where the gap in cells is the real one.
The cubic is written in Hermite form: the value and the slope at each kept step, the slopes
being the natural spline's (:func:`natural_spline_slopes`), so evaluation needs only the two
neighbouring steps, like linear interpolation.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import torch

from .steps import Steps, as_steps


def natural_spline_slopes(times: Sequence[float]) -> torch.Tensor:
    """[n, n] float64 matrix D: the natural cubic spline through values ``v`` at ``times``
    (strictly increasing) has slope ``(D @ v)[i]`` at ``times[i]``. Two steps give the
    secant (the spline is a line); one step gives zero."""
    t = torch.as_tensor(list(times), dtype=torch.float64)
    n = t.numel()
    if n < 2:
        return torch.zeros(n, n, dtype=torch.float64)
    h = t[1:] - t[:-1]
    if bool((h <= 0).any()):
        raise ValueError("times must be strictly increasing")
    # secants as a linear map of the values: delta = S @ v, S [n-1, n]
    s = torch.zeros(n - 1, n, dtype=torch.float64)
    idx = torch.arange(n - 1)
    s[idx, idx] = -1.0 / h
    s[idx, idx + 1] = 1.0 / h
    # C2 continuity at interior steps, zero curvature at both ends: A m = B v
    a = torch.zeros(n, n, dtype=torch.float64)
    b = torch.zeros(n, n, dtype=torch.float64)
    a[0, 0], a[0, 1], b[0] = 2.0, 1.0, 3.0 * s[0]
    a[-1, -2], a[-1, -1], b[-1] = 1.0, 2.0, 3.0 * s[-1]
    for i in range(1, n - 1):
        a[i, i - 1] = 1.0 / h[i - 1]
        a[i, i] = 2.0 * (1.0 / h[i - 1] + 1.0 / h[i])
        a[i, i + 1] = 1.0 / h[i]
        b[i] = 3.0 * (s[i - 1] / h[i - 1] + s[i] / h[i])
    return torch.linalg.solve(a, b)


def hermite_correction(v0: torch.Tensor, v1: torch.Tensor, d0: torch.Tensor, d1: torch.Tensor,
                       u: torch.Tensor, h: float) -> torch.Tensor:
    """cubic(t) - linear(t) on one interval of length ``h``, at fraction ``u`` in [0, 1],
    from the values ``v0``/``v1`` and the slopes ``d0``/``d1`` at its two ends."""
    secant = (v1 - v0) / h
    u2 = u * u
    h10 = u2 * u - 2 * u2 + u
    h11 = u2 * u - u2
    return h * (h10 * (d0 - secant) + h11 * (d1 - secant))


def interpolate_steps(values: torch.Tensor, times: Sequence[float],
                      query: Sequence[float]) -> Tuple[torch.Tensor, torch.Tensor]:
    """Linear and natural-cubic interpolation of ``values`` [T, ...] given at ``times`` to the
    ``query`` times (inside the range): returns (linear [Q, ...], cubic [Q, ...])."""
    t = torch.as_tensor(list(times), dtype=torch.float64)
    q = torch.as_tensor(list(query), dtype=torch.float64)
    d = torch.tensordot(natural_spline_slopes(t).to(values.dtype).to(values.device), values,
                        dims=([1], [0]))
    j = (torch.searchsorted(t, q, right=True) - 1).clamp(0, t.numel() - 2)
    lin, cub = [], []
    for k in range(q.numel()):
        jj = int(j[k])
        h = float(t[jj + 1] - t[jj])
        u = float((q[k] - t[jj]) / h)
        v0, v1 = values[jj], values[jj + 1]
        line = v0 + u * (v1 - v0)
        lin.append(line)
        cub.append(line + hermite_correction(v0, v1, d[jj], d[jj + 1],
                                             torch.tensor(u, dtype=values.dtype), h))
    return torch.stack(lin), torch.stack(cub)


def displacement_grid_dims(dims: Sequence[int], coarsen: int = 2,
                           max_points: int = 32) -> Tuple[int, int, int]:
    """(Z, Y, X) points of the displacement grid for data of ``dims`` (Z, Y, X): ``coarsen``
    times coarser than the data, the data first capped at ``max_points`` per axis."""
    out = []
    for n in dims:
        m = min(int(n), int(max_points))
        out.append(max(2, (m - 1) // int(coarsen) + 1) if n > 1 else 1)
    return tuple(out)  # type: ignore[return-value]


@dataclass
class Resampled:
    """One step as :func:`fit_displacement` sees it: resampled once to each of its levels'
    sizes (what every fit using the step would otherwise resample it to anew), so that the
    fits of a series need only these small copies, not its steps."""

    dims: Tuple[int, int, int]                             # (Z, Y, X) of the step itself
    levels: Dict[Tuple[int, ...], torch.Tensor]            # size -> [V, *size]
    max_points: int
    n_levels: int


def level_sizes(dims: Sequence[int], max_points: int, levels: int) -> List[Tuple[int, ...]]:
    """The sizes (Z, Y, X) of the fit's levels, coarse to fine, each once: the data capped
    at ``max_points`` per axis, each coarser level half the points per axis of the next,
    but no fewer than 4 (or as many as the axis has)."""
    size = tuple(min(int(n), int(max_points)) for n in dims)
    out: List[Tuple[int, ...]] = []
    for level in reversed(range(max(1, int(levels)))):
        lsize = tuple((n - 1) // 2 ** level + 1 if (n - 1) // 2 ** level + 1 >= 4 else
                      min(n, 4) for n in size)
        if lsize not in out:
            out.append(lsize)
    return out


def resample_for_fit(f: torch.Tensor, max_points: int = 32, levels: int = 1) -> Resampled:
    """Step ``f`` [V, Z, Y, X] at the sizes of :func:`fit_displacement`'s levels."""
    dims = tuple(int(n) for n in f.shape[1:])
    return Resampled(dims, {s: f if tuple(f.shape[1:]) == s else
                            torch.nn.functional.interpolate(
                                f[None], size=s, mode="trilinear", align_corners=True)[0]
                            for s in level_sizes(dims, max_points, levels)},
                     int(max_points), max(1, int(levels)))


def fit_displacement(f0: Union[torch.Tensor, Resampled], f1: Union[torch.Tensor, Resampled],
                     iters: int = 300, smooth: float = 0.1, coarsen: int = 2,
                     max_points: int = 32, lr: float = 0.1, levels: int = 1,
                     deadline: Optional[float] = None) -> torch.Tensor:
    """The displacement that carries step ``f0`` onto step ``f1`` (both [V, Z, Y, X], all
    variables at once: they move together; or each as :func:`resample_for_fit` made it with
    the same ``max_points`` and ``levels``), fitted symmetrically, ``f0(x - u/2) ~
    f1(x + u/2)``, on a grid ``coarsen`` times coarser than the data with a smoothness
    penalty. Larger data is resampled to ``max_points`` per axis for the fit, which bounds
    its cost whatever the data size (the displacement is smooth anyway). With ``levels`` > 1
    the fit runs coarse to fine, each level half the points per axis of the next and
    starting from its result, so that moves of several cells are found (a gradient fit on
    the data alone sees only about one cell). Returns [3, Zc, Yc, Xc] (x, y, z components)
    in the local units of :func:`warp` ([-1, 1] across each axis), to be looked up
    trilinearly. At ``deadline`` (``time.perf_counter()`` seconds) the Adam steps stop and
    the fit so far is returned."""
    p0, p1 = (f if isinstance(f, Resampled) else resample_for_fit(f, max_points, levels)
              for f in (f0, f1))
    if (p0.max_points, p0.n_levels, p0.dims) != (p1.max_points, p1.n_levels, p1.dims) or \
            (p0.max_points, p0.n_levels) != (int(max_points), max(1, int(levels))):
        raise ValueError("fit_displacement: steps resampled for other settings")
    dims = p0.dims
    disp = None                                   # local units, on the last level's grid
    for lsize in level_sizes(dims, max_points, levels):
        g0, g1 = p0.levels[lsize], p1.levels[lsize]
        low = displacement_grid_dims(lsize, coarsen, max_points)
        to_local = _index_to_local(lsize, g0.device)[:, None, None, None]
        start = torch.zeros(3, *low, device=g0.device) if disp is None else \
            _upsample(disp[None], low) / to_local.clamp_min(1e-12)
        disp = _fit_level(g0, g1, start, to_local, iters, smooth, lr, deadline)
    if tuple(disp.shape[1:]) != displacement_grid_dims(dims, coarsen, max_points):
        disp = _upsample(disp[None], displacement_grid_dims(dims, coarsen, max_points))
    return disp


def _fit_level(f0: torch.Tensor, f1: torch.Tensor, start: torch.Tensor, to_local: torch.Tensor,
               iters: int, smooth: float, lr: float, deadline: Optional[float] = None
               ) -> torch.Tensor:
    """One level of :func:`fit_displacement`: ``start`` [3, ...] in cells of this level's
    data; returns the fitted displacement in local units."""
    size = tuple(f0.shape[1:])
    u = start[None].clone().requires_grad_(True)
    opt = _Adam(u, lr)
    with torch.enable_grad():
        for _ in range(iters):
            if deadline is not None and time.perf_counter() >= deadline:
                break                 # out of time: the fit so far (smooth, valid)
            disp = _upsample(u, size) * to_local                           # [3, Z, Y, X]
            diff = warp(f0, -0.5 * disp) - warp(f1, 0.5 * disp)
            loss = diff.pow(2).mean() + smooth * sum(
                torch.diff(u, dim=d).pow(2).mean() for d in (2, 3, 4) if u.shape[d] > 1)
            u.grad = None
            loss.backward()
            opt.step()
    return u.detach()[0] * to_local


class _Adam:
    """Adam on one tensor, the same arithmetic as ``torch.optim.Adam``'s single-tensor
    path (defaults betas (0.9, 0.999), eps 1e-8): constructing torch's optimiser the first
    time imports torch._dynamo, 3 s of every ``stsr fit`` on this machine, inside the first
    displacement fit's share of the time budget."""

    def __init__(self, param: torch.Tensor, lr: float, betas=(0.9, 0.999), eps: float = 1e-8):
        self.param, self.lr, self.betas, self.eps = param, float(lr), betas, eps
        self.avg = torch.zeros_like(param)
        self.avg_sq = torch.zeros_like(param)
        self.steps = 0

    @torch.no_grad()
    def step(self) -> None:
        b1, b2 = self.betas
        grad = self.param.grad
        self.steps += 1
        self.avg.lerp_(grad, 1 - b1)
        self.avg_sq.mul_(b2).addcmul_(grad, grad, value=1 - b2)
        step_size = self.lr / (1 - b1 ** self.steps)
        denom = (self.avg_sq.sqrt() / (1 - b2 ** self.steps) ** 0.5).add_(self.eps)
        self.param.addcdiv_(self.avg, denom, value=-step_size)


def _index_to_local(dims, device) -> torch.Tensor:
    """Per axis (x, y, z) the size of one grid cell in [-1, 1] units (0 for a flat axis)."""
    z, y, x = dims
    return torch.tensor([2.0 / (n - 1) if n > 1 else 0.0 for n in (x, y, z)], device=device)


def _upsample(u: torch.Tensor, dims) -> torch.Tensor:
    return torch.nn.functional.interpolate(u, size=tuple(dims), mode="trilinear",
                                           align_corners=True)[0]


def warp(vol: torch.Tensor, disp: torch.Tensor) -> torch.Tensor:
    """``vol`` [V, Z, Y, X] sampled trilinearly at each grid point moved by ``disp``
    [3, Z, Y, X] (local units, x y z; a coarser displacement grid is upsampled), held at the
    border."""
    dims = vol.shape[1:]
    if tuple(disp.shape[1:]) != tuple(dims):
        disp = _upsample(disp[None], dims)
    axes = [torch.linspace(-1, 1, n, device=vol.device) if n > 1 else
            torch.zeros(1, device=vol.device) for n in dims]
    zz, yy, xx = torch.meshgrid(*axes, indexing="ij")
    pts = torch.stack([xx + disp[0], yy + disp[1], zz + disp[2]], dim=-1)
    return torch.nn.functional.grid_sample(vol[None], pts[None], align_corners=True,
                                           padding_mode="border")[0]


def warped_blend(f0: torch.Tensor, f1: torch.Tensor, disp: torch.Tensor, u: float
                 ) -> torch.Tensor:
    """Motion-compensated interpolation at fraction ``u`` of an interval: each point looks
    back along the displacement into ``f0`` and forward into ``f1``."""
    return (1 - u) * warp(f0, -u * disp) + u * warp(f1, (1 - u) * disp)


def _box_least_squares(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """argmin over m in [0, 1]^2 of m^T a m - 2 b^T m (a [2, 2] positive semi-definite).
    Only :func:`cross_validated_mix` without ``flow_share`` reaches it: the experiment of
    choosing the flow share from held-out steps too, which docs/time.md
    reports (it under-rates motion compensation, so the model fixes m = 1)."""
    def cost(m):
        return float(m @ a @ m - 2 * b @ m)
    cands = []
    try:
        cands.append(torch.linalg.solve(a, b))
    except RuntimeError:      # singular: a candidate on the box's edges wins
        pass
    for k in (0, 1):
        o = 1 - k
        for fixed in (0.0, 1.0):
            m = torch.zeros(2, dtype=a.dtype)
            m[k] = fixed
            if a[o, o] > 0:
                m[o] = (b[o] - a[o, k] * fixed) / a[o, o]
            cands.append(m)
    cands = [m.clamp(0.0, 1.0) for m in cands]
    return min(cands, key=cost)


def _held_out_steps(n: int) -> Iterator[Tuple[List[int], int, int, int]]:
    """The cross-validation's cases for ``n`` kept steps: every other step is fitted (both
    parities) and each step left out between two fitted ones is predicted. Yields
    (fitted steps, held-out step, fitted step before it, fitted step after it)."""
    for parity in (0, 1):
        fit = [i for i in range(n) if i % 2 == parity]
        if len(fit) < 2:
            continue
        for i in range(fit[0] + 1, fit[-1]):
            if i % 2 != parity:
                yield fit, i, i - 1, i + 1


def held_out_fits(n: int) -> int:
    """How many displacement fits :func:`cross_validated_mix` makes for ``n`` kept steps."""
    return sum(1 for _ in _held_out_steps(n))


def held_out_pairs(n: int) -> List[Tuple[int, int]]:
    """The kept steps (before, after) of each displacement fit :func:`cross_validated_mix`
    makes for ``n`` kept steps, in the order it makes them (so they can be fitted
    beforehand, e.g. shared among processes, and handed in through ``fit_flow``)."""
    return [(k0, k1) for _, _, k0, k1 in _held_out_steps(n)]


def cross_validated_mix(data: Union[torch.Tensor, Steps], times: Sequence[float],
                        with_flow: bool = False,
                        after_fit: Optional[Callable[[], None]] = None,
                        flow_share: Optional[float] = None,
                        fit_flow: Optional[Callable[[torch.Tensor, torch.Tensor],
                                                    Optional[torch.Tensor]]] = None,
                        **flow_options) -> torch.Tensor:
    """Per variable, the mix [V, 2] in [0, 1] of (natural-cubic - linear) and, with
    ``with_flow``, of (motion-compensated - linear) interpolation in time that best predicts
    held-out kept steps: every other kept step is left out in turn (both parities), each
    interpolant is fitted to the rest, and the least-squares mix is taken over all held-out
    points. ``data`` is [V, T, ...] (or :class:`Steps`, read a step at a time: a case holds
    two float64 sums the size of a step). Where the held-out steps cannot tell an
    interpolant from linear (a cubic through fewer than 3 steps), its mix is 0: linear
    never overshoots. With ``flow_share`` the motion-compensated share m is fixed at that
    value and only c is chosen. ``after_fit`` is called after each displacement fit
    (progress; it may raise to stop). ``fit_flow(f0, f1)`` replaces
    :func:`fit_displacement` (a budgeted fit; None: no displacement for that case, which
    then weighs only the cubic share)."""
    steps = as_steps(data)
    n_vars, n = steps.n_vars, steps.n_steps
    a = torch.zeros(n_vars, 2, 2, dtype=torch.float64)
    b = torch.zeros(n_vars, 2, dtype=torch.float64)
    t = [float(x) for x in times]
    for fit, i, k0, k1 in _held_out_steps(n):
        frac = (t[i] - t[k0]) / (t[k1] - t[k0])
        moved = None
        if with_flow and len(steps.shape) == 3:
            s0, s1 = steps.step(k0), steps.step(k1)
            disp = fit_displacement(s0, s1, **flow_options) if fit_flow is None \
                else fit_flow(s0, s1)
            if disp is not None:
                moved = warped_blend(s0, s1, disp, frac)
            if after_fit is not None:
                after_fit()
        # linear and cubic through the fitted steps at t[i]: both are weighted sums of them
        eye = torch.eye(len(fit), dtype=torch.float64)
        lw, cw = (w[0] for w in interpolate_steps(eye, [t[f] for f in fit], [t[i]]))
        lin = cub = None                                            # [V, ...] float64
        for f, wl, wc in zip(fit, lw.tolist(), (cw - lw).tolist()):
            if wl == 0.0 and (wc == 0.0 or len(fit) < 3):
                continue
            step = steps.step(f).to(torch.float64)
            lin = step * wl if lin is None else lin.add_(step, alpha=wl)
            if len(fit) >= 3:
                cub = step * wc if cub is None else cub.add_(step, alpha=wc)
        held = steps.step(i)
        for v in range(n_vars):
            y = (held[v].to(torch.float64) - lin[v]).flatten()
            c = cub[v].flatten() if cub is not None else torch.zeros_like(y)
            w = ((moved[v].to(torch.float64) - lin[v]).flatten() if moved is not None
                 else torch.zeros_like(y))
            a[v] += torch.stack([torch.stack([c @ c, c @ w]),
                                 torch.stack([w @ c, w @ w])]).cpu()
            b[v] += torch.stack([c @ y, w @ y]).cpu()
    if flow_share is None:
        mixes = [_box_least_squares(a[v], b[v]) for v in range(n_vars)]
    else:                      # m fixed: the cubic share alone, least squares on [0, 1]
        m = float(flow_share) if with_flow else 0.0
        mixes = []
        for v in range(n_vars):
            c = (b[v, 0] - m * a[v, 0, 1]) / a[v, 0, 0] if a[v, 0, 0] > 0 else a.new_zeros(())
            mixes.append(torch.stack([c.clamp(0.0, 1.0), a.new_tensor(m)]))
    return torch.stack(mixes).to(torch.float32)
