"""The learned correction on top of the analytic base: trained on pairs made from the coarse
series (pairs.py), its share per variable chosen on held-out pairs, its error estimate
calibrated on them, and evaluated on any output grid.

Never worse than the base *where it was measured*: the share (0..1 per variable, one for
kept steps and one for in-between steps) is the least-squares weight of the correction
against the true residual on held-out targets, clipped to [0, 1]; a variable whose held-out
targets the correction does not improve gets 0 and is the base alone.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from ..model.grid_plan import GridPlan, separable
from ..model.spline_base import SplineBase
from .decoder import DecoderConfig, LocalImplicitDecoder
from .pairs import Pair, group_of, residual_rms

GROUPS = ("kept", "between")      # shares: at kept steps (space pairs), between them
HELD_OUT_BLOCK = 4                # target points per side of a held-out block
HELD_OUT_SHARE = 0.25             # of the blocks
ERROR_LEVEL = 0.9                 # the error estimate is this quantile of |error|


@dataclass
class CorrectionConfig:
    """Training of the learned correction."""

    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    lr: float = 2e-3
    batch_points: int = 2048      # targets per step
    brick: int = 16               # lattice points per side of an encoder crop
    margin: int = 2               # lattice points at a crop's edge that are not targets
    error_weight: float = 0.1     # of the error head's L1 loss
    seed: int = 0


def held_out_mask(shape: Sequence[int], seed: int, device: torch.device) -> torch.Tensor:
    """[Z, Y, X] bool: a fixed random quarter of HELD_OUT_BLOCK^3 blocks (held out from
    training, used to choose the share and calibrate the error)."""
    nb = [max(1, math.ceil(n / HELD_OUT_BLOCK)) for n in shape]
    g = torch.Generator().manual_seed(seed + 7919)
    blocks = torch.rand(nb, generator=g) < HELD_OUT_SHARE
    m = blocks.repeat_interleave(HELD_OUT_BLOCK, 0).repeat_interleave(HELD_OUT_BLOCK, 1) \
        .repeat_interleave(HELD_OUT_BLOCK, 2)
    return m[:shape[0], :shape[1], :shape[2]].to(device)


class LearnedCorrection(nn.Module):
    """The decoder plus what was measured for it: residual scale per variable, the share
    per (group, variable), the error estimate's scale per variable."""

    def __init__(self, n_vars: int, cfg: DecoderConfig = DecoderConfig()):
        super().__init__()
        self.decoder = LocalImplicitDecoder(n_vars, cfg)
        self.register_buffer("scale", torch.ones(n_vars))              # residual RMS
        self.register_buffer("share", torch.zeros(len(GROUPS), n_vars))
        self.register_buffer("error_scale", torch.ones(len(GROUPS), n_vars))
        self.report: Dict[str, object] = {}
        self._lattice_plan = None     # the base on the data's own grid (apply)

    @torch.no_grad()
    def apply(self, base: SplineBase, t: float, out_axes: Sequence[torch.Tensor]
              ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Correction and error estimate of the model whose base is ``base`` at normalised
        time ``t`` on the output grid with local axes ``out_axes`` (x, y, z) -> two
        [V, Zo, Yo, Xo] tensors in normalised units: the decoder reads the data's own
        lattice (the kept steps around t and the base at t), as it read each pair's."""
        if self._lattice_plan is None:
            axes = [torch.linspace(-1.0, 1.0, n, device=base.device) for n in base.dims]
            self._lattice_plan = base.plan_grid(axes)
        inputs, w = lattice_inputs(base, t, self._lattice_plan)
        return self.evaluate(inputs, out_axes, w)

    @torch.no_grad()
    def evaluate(self, inputs: torch.Tensor, out_axes: Sequence[torch.Tensor], w: float,
                 chunk: int = 1 << 17) -> Tuple[torch.Tensor, torch.Tensor]:
        """Correction (share applied) and error estimate on the output grid whose local
        axes (x, y, z in [-1, 1]) are ``out_axes``, from the lattice ``inputs``
        [3V, Zl, Yl, Xl] -> two [V, Zo, Yo, Xo] tensors, normalised units."""
        lat = self.decoder.encode(inputs[None])[0]                          # [H, Zl, Yl, Xl]
        nz, ny, nx = lat.shape[1:]
        qs = [(a.to(lat) + 1) * 0.5 * (n - 1) for a, n in zip(out_axes, (nx, ny, nz))]
        cell = [float(q[1] - q[0]) if len(q) > 1 else 1.0 for q in qs]   # lattice cells
        zo, yo, xo = len(qs[2]), len(qs[1]), len(qs[0])
        v = self.decoder.n_vars
        corr = lat.new_empty(v, zo * yo * xo)
        err = lat.new_empty(v, zo * yo * xo)
        group = 0 if w <= 0.0 or w >= 1.0 else 1
        share = self.share[group][:, None] * self.scale[:, None]
        escale = (self.error_scale[group] * self.scale)[:, None]
        plane = yo * xo
        rows = max(1, chunk // plane)
        yx = torch.stack(torch.meshgrid(qs[1], qs[0], indexing="ij"), -1).reshape(-1, 2)
        for z0 in range(0, zo, rows):
            z1 = min(zo, z0 + rows)
            zz = qs[2][z0:z1].repeat_interleave(plane)
            q = torch.cat([yx[:, 1:2].repeat(z1 - z0, 1), yx[:, 0:1].repeat(z1 - z0, 1),
                           zz[:, None]], dim=1)                              # [n, 3] x, y, z
            out = self.decoder.decode(lat, q, cell, w).t()                    # [2V, n]
            corr[:, z0 * plane:z1 * plane] = out[:v] * share
            err[:, z0 * plane:z1 * plane] = out[v:] * escale
        return corr.view(v, zo, yo, xo), err.view(v, zo, yo, xo)


def lattice_inputs(base: SplineBase, t: float, plan: GridPlan) -> Tuple[torch.Tensor, float]:
    """The decoder's input at normalised time ``t`` on the base's own grid (``plan``): the
    two neighbouring kept steps and the base at t -> ([3V, Z, Y, X], time fraction)."""
    j, w = base._slot(t)
    k = min(j + 1, base.n_slots - 1)
    coef = base.coef.detach()
    return torch.cat([separable(coef[j], plan.spline), separable(coef[k], plan.spline),
                      base.evaluate_grid(plan, t).clone()]), w


def _targets(pair: Pair, held: torch.Tensor, train: bool) -> torch.Tensor:
    """[M, 3] (x, y, z) target indices of ``pair``: its training or held-out ones."""
    m = pair.mask & (~held if train else held)
    return m.nonzero()[:, [2, 1, 0]]


def _crop(pair: Pair, brick: int, margin: int, gen: torch.Generator
          ) -> Tuple[Tuple[int, int, int], Tuple[int, int, int], Tuple[float, ...],
                     Tuple[float, ...]]:
    """A random encoder crop of the pair's lattice: its start and size (x, y, z) and the
    range of lattice coordinates whose targets it may predict (away from cut edges)."""
    nl = pair.inputs.shape[-1:-4:-1]
    start, size, lo, hi = [], [], [], []
    for n in nl:
        b = min(n, brick)
        s = int(torch.randint(0, n - b + 1, (1,), generator=gen)) if n > b else 0
        start.append(s)
        size.append(b)
        lo.append(float(s + (margin if s > 0 else 0)))
        hi.append(float(s + b - 1 - (margin if s + b < n else 0)))
    return tuple(start), tuple(size), tuple(lo), tuple(hi)  # type: ignore[return-value]


def _predict_targets(dec: LocalImplicitDecoder, pair: Pair, tgt: torch.Tensor,
                     latents: torch.Tensor, start: Sequence[int]) -> torch.Tensor:
    """Decoder output [M, 2V] at the pair's target indices ``tgt`` [M, 3] (x, y, z)."""
    f = tgt.new_tensor(pair.factor).to(torch.float32)
    q = tgt.to(torch.float32) / f - tgt.new_tensor(start).to(torch.float32)
    return dec.decode(latents, q, [1.0 / x for x in pair.factor], pair.w)


def _residual_at(pair: Pair, tgt: torch.Tensor) -> torch.Tensor:
    """[M, V] the pair's residual at target indices [M, 3] (x, y, z)."""
    return pair.residual[:, tgt[:, 2], tgt[:, 1], tgt[:, 0]].t()


def train_correction(pairs: List[Pair], n_vars: int, cfg: CorrectionConfig,
                     budget_s: Optional[float] = None, max_steps: Optional[int] = None,
                     progress: Optional[Callable[[float], Optional[bool]]] = None
                     ) -> LearnedCorrection:
    """Train the decoder on the pairs' training targets for ``budget_s`` seconds and/or
    ``max_steps`` steps (whichever ends first), then choose the shares and calibrate the
    error estimate on the held-out targets (see :func:`measure`). ``progress(fraction)``
    returning False stops training early (``report["stopped"]`` says "cancelled")."""
    if budget_s is None and max_steps is None:
        raise ValueError("train_correction needs a time budget or a number of steps")
    dev = pairs[0].residual.device
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    corr = LearnedCorrection(n_vars, cfg.decoder).to(dev)
    held = [held_out_mask(p.residual.shape[1:], cfg.seed + i, dev) for i, p in enumerate(pairs)]
    train_t = [_targets(p, h, True) for p, h in zip(pairs, held)]
    ss = torch.zeros(n_vars, device=dev, dtype=torch.float64)
    count = 0
    for p, t in zip(pairs, train_t):
        r = _residual_at(p, t).double()
        ss += (r * r).sum(0)
        count += r.shape[0]
    corr.scale.copy_((ss / max(1, count)).sqrt().clamp_min(1e-6).float())
    dec = corr.decoder
    opt = torch.optim.Adam(dec.parameters(), lr=cfg.lr)
    t0 = time.perf_counter()
    steps = 0
    losses: List[float] = []
    dec.train()
    stopped = "budget"

    def fraction() -> float:
        parts = []
        if budget_s is not None:
            parts.append((time.perf_counter() - t0) / max(budget_s, 1e-9))
        if max_steps is not None:
            parts.append(steps / max(1, max_steps))
        return min(1.0, max(parts))

    while fraction() < 1.0:
        i = int(torch.randint(0, len(pairs), (1,), generator=gen))
        p, tgt = pairs[i], train_t[i]
        start, size, lo, hi = _crop(p, cfg.brick, cfg.margin, gen)
        q = tgt.to(torch.float32) / tgt.new_tensor(p.factor).to(torch.float32)
        inside = ((q >= q.new_tensor(lo)) & (q <= q.new_tensor(hi))).all(dim=1)
        cand = tgt[inside]
        if cand.shape[0] == 0:
            continue
        pick = torch.randint(0, cand.shape[0], (min(cfg.batch_points, cand.shape[0]),),
                             generator=gen).to(dev)
        tg = cand[pick]
        (sx, sy, sz), (bx, by, bz) = start, size
        lat = dec.encode(p.inputs[None, :, sz:sz + bz, sy:sy + by, sx:sx + bx])[0]
        out = _predict_targets(dec, p, tg, lat, start)
        r = _residual_at(p, tg) / corr.scale
        pred, err = out[:, :n_vars], out[:, n_vars:]
        loss = ((pred - r) ** 2).mean() + cfg.error_weight * (err - r.abs()).abs().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        steps += 1
        losses.append(float(loss.detach()))
        if progress is not None and steps % 10 == 0 and progress(fraction()) is False:
            stopped = "cancelled"
            break
    dec.eval()
    corr.report = {"steps": steps, "train_s": time.perf_counter() - t0, "stopped": stopped,
                   "pairs": len(pairs),
                   "loss_first": float(sum(losses[:20]) / max(1, len(losses[:20]))),
                   "loss_last": float(sum(losses[-20:]) / max(1, len(losses[-20:])))}
    measure(corr, pairs, held)
    return corr


@torch.no_grad()
def _held_out_outputs(corr: LearnedCorrection, pairs: List[Pair], held: List[torch.Tensor]
                      ) -> Dict[str, List[Tuple[torch.Tensor, torch.Tensor, torch.Tensor]]]:
    """Per group, for each pair: (correction [M, V], error scale [M, V], true residual
    [M, V]) at its held-out targets, in normalised units (correction at full share)."""
    out: Dict[str, list] = {g: [] for g in GROUPS}
    dec = corr.decoder
    for p, h in zip(pairs, held):
        tgt = _targets(p, h, False)
        if tgt.shape[0] == 0:
            continue
        lat = dec.encode(p.inputs[None])[0]
        o = _predict_targets(dec, p, tgt, lat, (0, 0, 0))
        v = corr.decoder.n_vars
        out[group_of(p.kind)].append((o[:, :v] * corr.scale, o[:, v:] * corr.scale,
                                 _residual_at(p, tgt)))
    return out


@torch.no_grad()
def measure(corr: LearnedCorrection, pairs: List[Pair], held: List[torch.Tensor]) -> None:
    """Choose the shares and the error estimate's scale on the targets ``held`` selects
    (per pair, [Z, Y, X] bool), and record the gain there (dB, per group and variable) in
    ``corr.report``.

    Share: the least-squares weight of the correction against the true residual, taken on
    each half of the targets (lower and upper z of each pair) and the smaller one kept (a
    correction that only fits noise wins on one half and loses on the other: 0), clipped
    to [0, 1]. Error scale: on the even targets, the factor putting ERROR_LEVEL of them
    below the estimate; the odd ones report the fraction that falls below (calibration)."""
    outs = _held_out_outputs(corr, pairs, held)
    report: Dict[str, object] = dict(corr.report)
    checks = []
    for gi, g in enumerate(GROUPS):
        if not outs[g]:
            corr.share[gi].zero_()
            continue
        c = torch.cat([o[0] for o in outs[g]]).double()                    # [M, V]
        r = torch.cat([o[2] for o in outs[g]]).double()
        e = torch.cat([o[1] for o in outs[g]]).double()
        half = torch.cat([torch.arange(len(o[0]), device=c.device) < len(o[0]) // 2
                          for o in outs[g]])
        a = torch.stack([(c[m] * r[m]).sum(0) / (c[m] * c[m]).sum(0).clamp_min(1e-30)
                         for m in (half, ~half)]).min(0).values.clamp(0.0, 1.0)
        corr.share[gi].copy_(a.float())
        before = (r * r).sum(0)
        after = ((r - a * c) ** 2).sum(0)
        report[f"held_out_gain_db_{g}"] = [
            float(10 * math.log10(float(b) / max(float(af), 1e-30))) if b > 0 else 0.0
            for b, af in zip(before, after)]
        report[f"held_out_points_{g}"] = int(r.shape[0])
        left = (r - a * c).abs()                                           # [M, V]
        even = torch.arange(r.shape[0], device=r.device) % 2 == 0
        q = torch.quantile((left[even] / e[even].clamp_min(1e-12)).float().cpu(),
                           ERROR_LEVEL, dim=0).to(left)                    # [V]
        corr.error_scale[gi].copy_(q.float())
        checks.append(((left[~even] <= e[~even] * q).double().sum(0), int((~even).sum())))
    if checks:
        report["error_calibration"] = [float(x) for x in
                                       sum(c[0] for c in checks) / sum(c[1] for c in checks)]
    report["share_kept"] = [float(x) for x in corr.share[0]]
    report["share_between"] = [float(x) for x in corr.share[1]]
    corr.report = report


def learn_across_scales(pairs: List[Pair], lower: List[Pair], n_vars: int,
                        cfg: CorrectionConfig, budget_s: Optional[float] = None,
                        max_steps: Optional[int] = None,
                        progress: Optional[Callable[[float], Optional[bool]]] = None
                        ) -> LearnedCorrection:
    """The correction to apply at the data's own scale, and how much of it to trust.

    What one level down teaches does not carry over one to one: the base's residual shrinks
    from one scale to the next, fast for smooth fields and slowly at fronts and kinks. So
    the transfer is measured where the truth is known: a first decoder learns from
    ``lower`` (pairs made from the data thinned once more) and is scored on every target of
    ``pairs`` (one level up, as the user's query is one level above ``pairs``); its
    least-squares share, scaled by how much the base's residual shrinks from ``lower`` to
    ``pairs``, and its error scale there become the shares and error scale of a second
    decoder, trained on ``pairs`` for the other half of the budget, which is the one kept.
    A group (kept / in-between) with no lower pairs to measure on gets share 0."""
    half_s = None if budget_s is None else budget_s / 2
    half_n = None if max_steps is None else max(1, max_steps // 2)
    prog_a = None if progress is None else (lambda f: progress(0.5 * f))
    prog_b = None if progress is None else (lambda f: progress(0.5 + 0.5 * f))
    report: Dict[str, object] = {}
    share = torch.zeros(len(GROUPS), n_vars)
    err = torch.ones(len(GROUPS), n_vars)
    if lower:
        probe = train_correction(lower, n_vars, cfg, half_s, half_n, prog_a)
        measure(probe, pairs, [torch.ones_like(p.mask) for p in pairs])
        share, err = probe.share.clone(), probe.error_scale.clone()
        report.update({k: v for k, v in probe.report.items()
                       if k.startswith(("held_out", "error_calibration"))})
        report["probe_steps"] = probe.report.get("steps", 0)
        if probe.report.get("stopped") == "cancelled":
            report["stopped"] = "cancelled"
    # the probe's share holds for one step up from where it learned; the kept decoder is
    # applied one step further, where the base's residual has shrunk again: by about as
    # much as from the probe's level to the pairs' (the ratio of their residuals) for
    # fields in the same regime, by more for smooth ones now resolved (Taylor-Green: the
    # probe's share alone cost 1.2-1.9 dB there). So the share is scaled by that ratio.
    one, two = residual_rms(pairs), residual_rms(lower)
    shrink = {g: (one[g] / two[g].clamp_min(1e-12)).clamp(0.0, 1.0) for g in one if g in two}
    for gi, g in enumerate(GROUPS):
        if g in shrink:
            share[gi] *= shrink[g].to(share)
        else:
            share[gi].zero_()
    report["shrink_kept"] = [float(x) for x in shrink.get("kept", torch.zeros(n_vars))]
    report["shrink_between"] = [float(x) for x in shrink.get("between", torch.zeros(n_vars))]
    corr = train_correction(pairs, n_vars, cfg, half_s, half_n, prog_b)
    corr.report = {**{f"own_level_{k}": v for k, v in corr.report.items()
                      if k.startswith("held_out_gain")},
                   **{k: v for k, v in corr.report.items()
                      if k in ("steps", "train_s", "pairs", "loss_first", "loss_last",
                               "stopped")},
                   **report, "lower_pairs": len(lower)}
    corr.share.copy_(share.to(corr.share))
    corr.error_scale.copy_(err.to(corr.error_scale))
    corr.report["share_kept"] = [float(x) for x in corr.share[0]]
    corr.report["share_between"] = [float(x) for x in corr.share[1]]
    return corr
