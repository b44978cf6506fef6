"""SIREN building blocks: sine layers with SIREN initialisation and residual sine blocks."""
from __future__ import annotations

import math

import torch
from torch import nn


class SineLayer(nn.Module):
    """``sin(omega_0 * (W x + b))``. First layers draw W from U(-1/n, 1/n); hidden layers from
    U(-sqrt(6/n)/omega_0, sqrt(6/n)/omega_0), so activations stay well distributed whatever
    omega_0 is (Sitzmann et al. 2020)."""

    def __init__(self, n_in: int, n_out: int, omega_0: float = 30.0, is_first: bool = False):
        super().__init__()
        self.omega_0 = float(omega_0)
        self.is_first = is_first
        self.linear = nn.Linear(n_in, n_out)
        bound = 1.0 / n_in if is_first else math.sqrt(6.0 / n_in) / self.omega_0
        with torch.no_grad():
            self.linear.weight.uniform_(-bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sin(self.omega_0 * self.linear(x))


class ResidualSineBlock(nn.Module):
    """Two sine layers, ``0.5 * (f2(f1(x)) + skip(x))``; the skip path is a sine layer only
    when the widths differ."""

    def __init__(self, n_in: int, n_out: int, omega_0: float = 30.0):
        super().__init__()
        self.f1 = SineLayer(n_in, n_out, omega_0)
        self.f2 = SineLayer(n_out, n_out, omega_0)
        self.skip = SineLayer(n_in, n_out, omega_0) if n_in != n_out else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x if self.skip is None else self.skip(x)
        return 0.5 * (self.f2(self.f1(x)) + s)
