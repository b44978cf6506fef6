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
cross-validation on the kept steps (``base_time = "auto"``). With ``side_net = "prior"`` the
two sides of each interval are weighed per point by a small network shipped with the package
(side_weights.py) instead of 1 - w and w; with ``side_net = "refine"`` issue 30's time
refinement network (time_refine.py) weighs them and corrects the value, per variable where
the held-out steps of the half series say it helps. With ``learn = true`` the model is
learned/corrected.py's subclass, which adds a correction learned across scales.
"""
from __future__ import annotations

import time
from typing import Callable, Optional, Union

import torch
from torch import nn

from ..config import FastNetConfig
from . import FieldModel, FieldSpec
from .encodings import FourierFeatures, Identity, SpaceTimeGrid
from .siren import SineLayer
from .side_weights import load_weights
from .time_refine import load_weights as load_refine
from .space_residual import SpaceResidual
from .space_tune import choose as choose_space_prior
from .spline_base import MOVING, SplineBase
from .steps import Steps

# of the fit's time budget at most this share is kept from the base's fits for the spatial
# prior's fine-tuning (the base usually ends early and leaves it more)
SPACE_SHARE = 0.35


class FastNet(FieldModel):
    def __init__(self, cfg: FastNetConfig, spec: FieldSpec):
        super().__init__()
        self.cfg = cfg
        self.n_vars = spec.n_vars
        self.n_heads = spec.n_heads
        if cfg.base not in ("spline", "none"):
            raise ValueError(f"unknown base {cfg.base!r}: use spline or none")
        # the network: always without a base, on request (``network``) with one
        self.has_network = cfg.network or cfg.base == "none"
        if self.has_network:
            self._build_network(cfg, spec)
        else:
            self.register_parameter("latent_mu", None)
        self.base: Optional[SplineBase] = None
        if cfg.base == "spline":
            if spec.n_heads != 1:
                raise ValueError("the spline base needs heads = 1")
            # one channel per variable at the input's resolution, set by init_from_data
            self.base = SplineBase(spec.block_dims, spec.n_vars, spec.times_norm or
                                   torch.linspace(-1, 1, spec.n_times).tolist(),
                                   base_time=cfg.base_time, flow_coarsen=cfg.flow_coarsen,
                                   flow_max_points=cfg.flow_max_points,
                                   flow_path=cfg.flow_path, path_values=cfg.path_values,
                                   boundary=cfg.spline_boundary,
                                   between_smoothing=cfg.between_smoothing,
                                   trainable=cfg.base_trainable and self.has_network)
            if cfg.side_net != "off":
                self._attach_side_weights(cfg)
            if cfg.space_prior != "off":
                if self.has_network:     # training evaluates the base with gradients
                    raise ValueError(f"space_prior={cfg.space_prior} corrects the base's "
                                     "kept steps: set network=false")
                self.base.space = SpaceResidual(spec.n_vars)
            if self.has_network:
                with torch.no_grad():  # start as the base alone; the network learns corrections
                    self.out.weight.mul_(cfg.base_out_init)
                    self.out.bias.zero_()

    def _attach_side_weights(self, cfg: FastNetConfig) -> None:
        """The shipped network weighing the two sides between kept steps (side_weights.py,
        or time_refine.py's for ``refine``), a frozen part of the base: saved in the model
        file with it, so a loaded model uses its own copy (a model file's weights, and the
        refinement's per-variable gate, replace these when it is loaded)."""
        if self.has_network:     # training evaluates the base point by point, without it
            raise ValueError(f"side_net={cfg.side_net} weighs the base's sides on whole "
                             "grids: set network=false")
        if cfg.base_time not in MOVING:
            raise ValueError(f"side_net={cfg.side_net} weighs the motion-compensated sides: "
                             f"set base_time to one of {', '.join(MOVING)}")
        if not self.base.has_flow:       # one kept step has no in-between steps
            return
        if cfg.side_net in ("refine", "refine_all"):
            self.base.side_weights = load_refine(n_vars=self.n_vars)
            self.base.refine_gate = cfg.side_net == "refine"
        else:
            self.base.side_weights = load_weights()

    def _build_network(self, cfg: FastNetConfig, spec: FieldSpec) -> None:
        """The encoding, the modulated sine decoder and the variables' latent codes."""
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
        self.synthesis = nn.ModuleList(
            [SineLayer(n_in, cfg.width, cfg.omega_0, is_first=True)]
            + [SineLayer(cfg.width, cfg.width, cfg.omega_0) for _ in range(cfg.depth - 1)])
        self.modulator = nn.ModuleList(
            [nn.Linear(cfg.latent_dim, cfg.width)]
            + [nn.Linear(cfg.width, cfg.width) for _ in range(cfg.depth - 2)])
        self.out = nn.Linear(cfg.width, spec.n_heads)
        self.latent_mu = nn.Parameter(0.01 * torch.randn(spec.n_vars, cfg.latent_dim))

    def forward(self, coords: torch.Tensor, var_idx: torch.Tensor,
                heads: Optional[torch.Tensor] = None,
                codes: Optional[torch.Tensor] = None) -> torch.Tensor:
        if not self.has_network:
            y = self.base(coords).t()[var_idx][..., None]                 # [V, N, 1]
            return y if heads is None else y[..., 0]
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

    def init_from_data(self, data: Union[torch.Tensor, Steps],
                       progress: Optional[Callable[[float], Optional[bool]]] = None,
                       budget_s: Optional[float] = None) -> Optional[bool]:
        """The base starts as the spline interpolating the kept data (SplineBase.fit):
        training begins at interpolation quality; the steps are read one at a time. Returns
        False when ``progress`` stopped the displacement fits (the base then has those done so far, a valid model)."""
        if self.base is None:
            return None
        if self.base.space is None:
            return self.base.fit(data, self.flow_options(), progress, budget_s)
        return self._fit_with_prior(data, progress, budget_s)

    def _fit_with_prior(self, data: Union[torch.Tensor, Steps],
                        progress: Optional[Callable[[float], Optional[bool]]],
                        budget_s: Optional[float]) -> Optional[bool]:
        """The base (progress 0-0.8), then the spatial prior's fine-tuning and gate
        (space_tune.py) in what is left of the budget; its report in ``space_report``."""
        t0 = time.perf_counter()
        keep = None if budget_s is None else min(self.cfg.space_tune_s, SPACE_SHARE * budget_s)
        part = None if progress is None else (lambda f: progress(0.8 * f))
        if self.base.fit(data, self.flow_options(), part,
                         None if budget_s is None else budget_s - keep) is False:
            return False
        stopped = [False]

        def stop() -> bool:
            stopped[0] = stopped[0] or (progress is not None and progress(0.9) is False)
            return stopped[0]

        left = None if budget_s is None else budget_s - (time.perf_counter() - t0)
        self.space_report = choose_space_prior(self.base.space, data, self.cfg.space_prior,
                                               left, self.cfg.space_tune_s, stop)
        return False if stopped[0] else None

    def flow_options(self) -> dict:
        """The displacement fits' settings (time_basis.fit_displacement's keywords)."""
        return {"iters": self.cfg.flow_iters, "smooth": self.cfg.flow_smooth,
                "coarsen": self.cfg.flow_coarsen, "max_points": self.cfg.flow_max_points,
                "levels": self.cfg.flow_levels}

    def regularization(self) -> torch.Tensor:
        if self.cfg.tv_weight > 0 and isinstance(getattr(self, "encoding", None), SpaceTimeGrid):
            return self.cfg.tv_weight * self.encoding.total_variation()
        return next(self.parameters()).new_zeros(())
