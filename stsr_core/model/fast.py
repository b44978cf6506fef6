"""The project's fast default: a learned space-time feature grid (or Fourier features) feeding
a small decoder whose hidden features are modulated by each variable's latent code.

What STSR-INR's design keeps: one latent code per variable (variational auto-decoder: the
trainer adds noise and the KL term), multiplicative modulation of the synthesis features by a
modulator network fed the code (computed once per variable), multiple heads as output
channels. What changes: the coordinates reach the decoder through a feature grid with the
input's resolution, so most of the detail lives in cheap-to-train grid values and the MLP is
small (width 64 instead of 256, 3 layers instead of ~20): orders of magnitude fewer
multiply-adds per point. With ``base = "spline"`` (the default) each variable's output also
adds a cubic B-spline through its kept data (one slot per input step), solved before training
by :meth:`FastNet.init_from_data`: the model starts exactly at the input and the network learns
corrections. Between kept steps the base follows moving features (motion-compensated
interpolation) and adds, per variable, the share of natural-cubic interpolation chosen by
cross-validation on the kept steps (``base_time = "auto"``).
"""
from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import nn

from ..config import FastNetConfig
from . import FieldModel, FieldSpec
from .encodings import FourierFeatures, Identity, SpaceTimeGrid, bspline_coefficients
from .time_basis import (cross_validated_mix, fit_displacement, held_out_fits,
                         natural_spline_slopes)
from .siren import SineLayer


class _Stopped(Exception):
    """The progress callback asked init_from_data to stop."""


class FastNet(FieldModel):
    def __init__(self, cfg: FastNetConfig, spec: FieldSpec):
        super().__init__()
        self.cfg = cfg
        self.n_vars = spec.n_vars
        self.n_heads = spec.n_heads
        if cfg.encoding == "grid":
            self.encoding: nn.Module = SpaceTimeGrid(
                spec.block_dims, spec.n_times, cfg.grid_levels, cfg.grid_features,
                cfg.grid_max_res_factor, slot_times=spec.times_norm, interp=cfg.grid_interp)
        elif cfg.encoding == "fourier":
            self.encoding = FourierFeatures(cfg.fourier_features, cfg.fourier_sigma)
        elif cfg.encoding == "none":
            self.encoding = Identity()
        else:
            raise ValueError(f"unknown encoding {cfg.encoding!r}: use grid, fourier or none")
        n_in = 4 + self.encoding.dim
        # raw coordinates only: a high-frequency first layer as in SIREN; with an encoding the
        # features already carry the detail and a gentle omega keeps the decoder smooth
        w_first = cfg.omega_0
        self.synthesis = nn.ModuleList(
            [SineLayer(n_in, cfg.width, w_first, is_first=True)]
            + [SineLayer(cfg.width, cfg.width, cfg.omega_0) for _ in range(cfg.depth - 1)])
        self.modulator = nn.ModuleList(
            [nn.Linear(cfg.latent_dim, cfg.width)]
            + [nn.Linear(cfg.width, cfg.width) for _ in range(cfg.depth - 2)])
        self.out = nn.Linear(cfg.width, spec.n_heads)
        self.base: Optional[SpaceTimeGrid] = None
        if cfg.base == "spline":
            if spec.n_heads != 1:
                raise ValueError("the spline base needs heads = 1")
            # one channel per variable at the input's resolution, set by init_from_data
            if cfg.base_time not in ("auto", "linear", "cubic", "flow"):
                raise ValueError(f"unknown base_time {cfg.base_time!r}: use auto, linear, "
                                 "cubic or flow")
            self.base = SpaceTimeGrid(
                spec.block_dims, spec.n_times, 1, spec.n_vars, 1.0, init_std=0.0,
                slot_times=spec.times_norm, interp="cubic",
                time_interp="linear" if cfg.base_time == "linear" else "hermite",
                flow_coarsen=cfg.flow_coarsen if cfg.base_time in ("auto", "flow") else None,
                flow_max_points=cfg.flow_max_points)
            self.base.grids[0].requires_grad_(cfg.base_trainable)
            with torch.no_grad():     # start as the base alone; the network learns corrections
                self.out.weight.mul_(cfg.base_out_init)
                self.out.bias.zero_()
        elif cfg.base != "none":
            raise ValueError(f"unknown base {cfg.base!r}: use spline or none")
        self.latent_mu = nn.Parameter(0.01 * torch.randn(spec.n_vars, cfg.latent_dim))

    def forward(self, coords: torch.Tensor, var_idx: torch.Tensor,
                heads: Optional[torch.Tensor] = None,
                codes: Optional[torch.Tensor] = None) -> torch.Tensor:
        z = self.latent_mu[var_idx] if codes is None else codes          # [V, D]
        feats = torch.cat([coords, self.encoding(coords)], dim=1)        # [N, F]
        h = self.synthesis[0](feats)[None]                               # [1, N, W]
        m = z
        for s_layer, m_layer in zip(self.synthesis[1:], self.modulator):
            m = torch.relu(m_layer(m))                                   # [V, W]
            h = s_layer(h * (1.0 + m[:, None]))                          # [V, N, W]
        if h.shape[0] != z.shape[0]:
            h = h.expand(z.shape[0], -1, -1)
        y = self.out(h)                                                  # [V, N, H]
        if self.base is not None:
            y = y + self.base(coords).t()[var_idx][..., None]
        if heads is None:
            return y
        return torch.gather(y, 2, heads.view(1, -1, 1).expand(y.shape[0], -1, 1))[..., 0]

    def init_from_data(self, data: torch.Tensor,
                       progress: Optional[Callable[[float], Optional[bool]]] = None
                       ) -> Optional[bool]:
        """The base starts as the spline interpolating the kept data: cubic B-spline in
        space; in time linear, natural cubic, motion-compensated, or (``base_time =
        "auto"``) motion-compensated plus, per variable, the share of cubic chosen by
        cross-validation on the kept steps (model/time_basis.py). Training begins at
        interpolation quality. The displacement fits take seconds to minutes:
        ``progress(fraction)`` hears of each, and when it returns False the fits stop and the
        base stays linear in time (returns False)."""
        if self.base is None:
            return None
        with torch.no_grad():
            coef = bspline_coefficients(data.to(torch.float32))   # [V, T, Z+2, Y+2, X+2]
            values = coef.transpose(0, 1)                          # [T, V, ...]
            if self.base.time_interp == "linear":
                self.base.grids[0].copy_(values)
                return None
            times = self.base.slot_times.tolist()
            slopes_of = natural_spline_slopes(times).to(values)   # [T, T]
            slopes = torch.tensordot(slopes_of, values, dims=([1], [0]))
            self.base.grids[0].copy_(torch.cat([values, slopes], dim=1))
            self.base.time_mix.zero_()
            if self.base.has_flow:
                self.base.flow_mix.zero_()
            opts = {"iters": self.cfg.flow_iters, "smooth": self.cfg.flow_smooth,
                    "coarsen": self.cfg.flow_coarsen, "max_points": self.cfg.flow_max_points,
                    "levels": self.cfg.flow_levels}
            n_fits = 0
            if self.base.has_flow:
                n_fits = len(times) - 1 + (held_out_fits(len(times))
                                           if self.cfg.base_time == "auto" else 0)
            done = [0]

            def tick() -> None:
                done[0] += 1
                if progress is not None and progress(done[0] / max(1, n_fits)) is False:
                    raise _Stopped

            try:
                if self.base.has_flow:
                    for j in range(len(times) - 1):
                        self.base.flow[j].copy_(fit_displacement(data[:, j], data[:, j + 1],
                                                                 **opts))
                        tick()
                if self.cfg.base_time == "cubic":
                    self.base.time_mix.fill_(1.0)
                elif self.cfg.base_time == "flow":
                    self.base.flow_mix.fill_(1.0)
                else:
                    mix = cross_validated_mix(data, times, with_flow=self.base.has_flow,
                                              after_fit=tick, flow_share=1.0, **opts)
                    self.base.time_mix.copy_(mix[:, 0])
                    if self.base.has_flow:
                        self.base.flow_mix.copy_(mix[:, 1])
            except _Stopped:          # mixes stay 0: linear in time, a valid model
                return False
        return None

    def regularization(self) -> torch.Tensor:
        if self.cfg.tv_weight > 0 and isinstance(self.encoding, SpaceTimeGrid):
            return self.cfg.tv_weight * self.encoding.total_variation()
        return self.out.weight.new_zeros(())
