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
from typing import Callable, Iterator, List, Optional, Sequence, Tuple

import torch


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


def fit_displacement(f0: torch.Tensor, f1: torch.Tensor, iters: int = 300,
                     smooth: float = 0.1, coarsen: int = 2, max_points: int = 32,
                     lr: float = 0.1, levels: int = 1,
                     deadline: Optional[float] = None) -> torch.Tensor:
    """The displacement that carries step ``f0`` onto step ``f1`` (both [V, Z, Y, X], all
    variables at once: they move together), fitted symmetrically, ``f0(x - u/2) ~ f1(x + u/2)``,
    on a grid ``coarsen`` times coarser than the data with a smoothness penalty. Larger data
    is resampled to ``max_points`` per axis for the fit, which bounds its cost whatever the
    data size (the displacement is smooth anyway). With ``levels`` > 1 the fit runs coarse to
    fine, each level half the points per axis of the next and starting from its result, so
    that moves of several cells are found (a gradient fit on the data alone sees only about
    one cell). Returns [3, Zc, Yc, Xc] (x, y, z components) in the local units of
    :func:`warp` ([-1, 1] across each axis), to be looked up trilinearly. At ``deadline``
    (``time.perf_counter()`` seconds) the Adam steps stop and the fit so far is returned."""
    dims = tuple(f0.shape[1:])
    size = tuple(min(int(n), int(max_points)) for n in dims)
    disp = None                                   # local units, on the last level's grid
    done = set()
    for level in reversed(range(max(1, int(levels)))):
        # each axis halved per level, but to no fewer than 4 points (or as many as it has)
        lsize = tuple((n - 1) // 2 ** level + 1 if (n - 1) // 2 ** level + 1 >= 4 else
                      min(n, 4) for n in size)
        if lsize in done:
            continue
        done.add(lsize)
        g0, g1 = (f if tuple(f.shape[1:]) == lsize else torch.nn.functional.interpolate(
            f[None], size=lsize, mode="trilinear", align_corners=True)[0] for f in (f0, f1))
        low = displacement_grid_dims(lsize, coarsen, max_points)
        to_local = _index_to_local(lsize, f0.device)[:, None, None, None]
        start = torch.zeros(3, *low, device=f0.device) if disp is None else \
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


def cross_validated_mix(data: torch.Tensor, times: Sequence[float],
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
    points. ``data`` is [V, T, ...]. Where the held-out steps cannot tell an interpolant from
    linear (a cubic through fewer than 3 steps), its mix is 0: linear never overshoots.
    With ``flow_share`` the motion-compensated share m is fixed at that value and only c is
    chosen. ``after_fit`` is called after each displacement fit (progress; it may raise to
    stop). ``fit_flow(f0, f1)`` replaces :func:`fit_displacement` (a budgeted fit; None: no
    displacement for that case, which then weighs only the cubic share)."""
    n_vars, n = data.shape[0], data.shape[1]
    a = torch.zeros(n_vars, 2, 2, dtype=torch.float64)
    b = torch.zeros(n_vars, 2, dtype=torch.float64)
    t = [float(x) for x in times]
    for fit, i, k0, k1 in _held_out_steps(n):
        frac = (t[i] - t[k0]) / (t[k1] - t[k0])
        moved = None
        if with_flow and data.dim() == 5:
            disp = fit_displacement(data[:, k0], data[:, k1], **flow_options) \
                if fit_flow is None else fit_flow(data[:, k0], data[:, k1])
            if disp is not None:
                moved = warped_blend(data[:, k0], data[:, k1], disp, frac)
            if after_fit is not None:
                after_fit()
        for v in range(n_vars):
            lin, cub = interpolate_steps(data[v, fit].to(torch.float64),
                                         [t[f] for f in fit], [t[i]])
            y = (data[v, i].to(torch.float64) - lin[0]).flatten()
            c = (cub[0] - lin[0]).flatten() if len(fit) >= 3 else torch.zeros_like(y)
            w = ((moved[v].to(torch.float64) - lin[0]).flatten() if moved is not None
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
