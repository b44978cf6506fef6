"""Plain SIREN residual network on (x, y, z, t): the CoordNet-like baseline the paper
improves on. No latent codes, no modulation; one output channel per (variable, head)."""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from ..config import SirenNetConfig
from . import FieldModel, FieldSpec
from .siren import ResidualSineBlock, SineLayer


class SirenNet(FieldModel):
    def __init__(self, cfg: SirenNetConfig, spec: FieldSpec):
        super().__init__()
        self.cfg = cfg
        self.n_vars = spec.n_vars
        self.n_heads = spec.n_heads
        self.first = SineLayer(4, cfg.width, cfg.omega_first, is_first=True)
        self.blocks = nn.Sequential(*[ResidualSineBlock(cfg.width, cfg.width, cfg.omega_hidden)
                                      for _ in range(cfg.n_res_blocks)])
        self.out = nn.Linear(cfg.width, spec.n_vars * spec.n_heads)
        self.register_parameter("latent_mu", None)

    def forward(self, coords: torch.Tensor, var_idx: torch.Tensor,
                heads: Optional[torch.Tensor] = None,
                codes: Optional[torch.Tensor] = None) -> torch.Tensor:
        y = self.out(self.blocks(self.first(coords)))                 # [N, V*H]
        y = y.view(-1, self.n_vars, self.n_heads).permute(1, 0, 2)    # [V, N, H]
        y = y[var_idx]
        if heads is None:
            return y
        return torch.gather(y, 2, heads.view(1, -1, 1).expand(y.shape[0], -1, 1))[..., 0]
