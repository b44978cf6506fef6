"""The paper's network (STSR-INR): a synthesis trunk fed (x, y, z, t) and a modulator trunk
fed the variable's latent code, of equal shape; before every synthesis layer after the first
the synthesis features are multiplied by the modulator's features at the same depth; one
output head per octant block.

The modulator depends only on the code, so it is evaluated once per variable and broadcast
over the points (the reference evaluates it for every point: same numbers, far more work).
"""
from __future__ import annotations

from typing import List, Optional

import torch
from torch import nn

from ..config import STSRNetConfig
from . import FieldModel, FieldSpec
from .siren import ResidualSineBlock, SineLayer


def _trunk(n_in: int, cfg: STSRNetConfig) -> nn.ModuleList:
    layers: List[nn.Module] = []
    widths = [n_in, *cfg.trunk_widths]
    for i in range(len(cfg.trunk_widths)):
        omega = cfg.omega_first if i == 0 else cfg.omega_trunk
        layers.append(SineLayer(widths[i], widths[i + 1], omega, is_first=(i == 0)))
    w = cfg.trunk_widths[-1]
    layers += [ResidualSineBlock(w, w, cfg.omega_res) for _ in range(cfg.n_res_blocks)]
    return nn.ModuleList(layers)


def _head(cfg: STSRNetConfig) -> nn.ModuleList:
    w = cfg.trunk_widths[-1]
    layers: List[nn.Module] = []
    if cfg.head_res_block:
        layers.append(ResidualSineBlock(w, w, cfg.omega_head))
    widths = [w, *cfg.head_widths]
    for a, b in zip(widths[:-1], widths[1:]):
        layers.append(SineLayer(a, b, cfg.omega_head))
    return nn.ModuleList(layers)


class STSRNet(FieldModel):
    def __init__(self, cfg: STSRNetConfig, spec: FieldSpec):
        super().__init__()
        self.cfg = cfg
        self.n_vars = spec.n_vars
        self.n_heads = spec.n_heads
        self.synthesis = _trunk(4, cfg)
        self.modulator = _trunk(cfg.latent_dim, cfg)
        self.synthesis_heads = nn.ModuleList([_head(cfg) for _ in range(self.n_heads)])
        self.modulator_heads = nn.ModuleList([_head(cfg) for _ in range(self.n_heads)])
        last = (cfg.head_widths or (cfg.trunk_widths[-1],))[-1]
        self.outputs = nn.ModuleList([nn.Linear(last, 1) for _ in range(self.n_heads)])
        # codes start near 0 (the KL prior's mean) with a small spread so variables differ
        self.latent_mu = nn.Parameter(0.01 * torch.randn(spec.n_vars, cfg.latent_dim))

    def _codes(self, var_idx: torch.Tensor, codes: Optional[torch.Tensor]) -> torch.Tensor:
        return self.latent_mu[var_idx] if codes is None else codes

    def _head_forward(self, j: int, h: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        """h [V, n, W] synthesis features, m [V, 1, W] modulation -> [V, n]."""
        for s_layer, m_layer in zip(self.synthesis_heads[j], self.modulator_heads[j]):
            h = s_layer(h * m)
            m = m_layer(m)
        return torch.tanh(self.outputs[j](h * m))[..., 0]

    def forward(self, coords: torch.Tensor, var_idx: torch.Tensor,
                heads: Optional[torch.Tensor] = None,
                codes: Optional[torch.Tensor] = None) -> torch.Tensor:
        z = self._codes(var_idx, codes)                       # [V, D]
        h = self.synthesis[0](coords)[None]                   # [1, N, W]
        m = self.modulator[0](z)[:, None]                     # [V, 1, W]
        for s_layer, m_layer in zip(self.synthesis[1:], self.modulator[1:]):
            h = s_layer(h * m)                                # [V, N, W]
            m = m_layer(m)
        if h.shape[0] != z.shape[0]:
            h = h.expand(z.shape[0], -1, -1)
        if heads is None:
            return torch.stack([self._head_forward(j, h, m) for j in range(self.n_heads)], -1)
        out = h.new_empty(h.shape[0], h.shape[1])
        for j in torch.unique(heads).tolist():
            sel = (heads == j).nonzero(as_tuple=True)[0]
            out[:, sel] = self._head_forward(j, h[:, sel], m)
        return out
