"""A local implicit decoder in 3D + time, in the spirit of LIIF (local implicit image
functions for arbitrary-scale super-resolution), predicting the correction the analytic base
misses and a local error scale.

* Encoder: two 3D convolutions over the lattice's inputs (the two neighbouring kept steps
  and the base at the query time, every variable as a channel) -> a latent grid on the
  lattice. Its last convolution is LIIF's feature unfolding (the 3x3x3 neighbourhood's
  latents concatenated) followed by the decoder's first linear layer, which is the same
  arithmetic done once per lattice point instead of once per query.
* Decoder: per query and per each of the 8 lattice points around it, an MLP of that point's
  latent plus the query's offset from it (in lattice cells), the cell size of the output
  (output spacing / lattice spacing: one network serves any scale, non-integer ones too)
  and the time fraction between the two kept steps; the 8 answers are blended with the
  trilinear weights (LIIF's local ensemble), so the result is continuous across cells.
* Output per variable: the correction (in units of that variable's residual scale) and a
  non-negative local error scale.

A query at a lattice point with cell size 1 at a kept step (the data itself) still goes
through the network: the correction's share chosen afterwards (correction.py) decides how
much of it is used.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

CORNERS = [(dx, dy, dz) for dz in (0, 1) for dy in (0, 1) for dx in (0, 1)]


@dataclass
class DecoderConfig:
    """Sizes of the local implicit decoder."""

    features: int = 16          # channels of the encoder's hidden convolutions
    hidden: int = 32            # width of the decoder MLP (and of the unfolded latent)
    layers: int = 2             # hidden layers of the MLP after the first


class LocalImplicitDecoder(nn.Module):
    """``encode(inputs [B, 3V, Z, Y, X]) -> latents [B, H, Z, Y, X]``;
    ``decode(latents [H, Z, Y, X], q [N, 3] lattice indices, cell (3,), w) -> [N, 2V]``."""

    def __init__(self, n_vars: int, cfg: DecoderConfig = DecoderConfig()):
        super().__init__()
        self.n_vars = int(n_vars)
        c, h = cfg.features, cfg.hidden
        self.encoder = nn.Sequential(
            nn.Conv3d(3 * n_vars, c, 3, padding=1, padding_mode="replicate"), nn.ReLU(),
            # unfolding (3x3x3 latents side by side) + the MLP's first linear layer
            nn.Conv3d(c, h, 3, padding=1, padding_mode="replicate"))
        self.query = nn.Linear(3 + 3 + 2, h)           # offset, cell, (w, w (1 - w))
        self.mlp = nn.Sequential(*[m for _ in range(cfg.layers)
                                   for m in (nn.ReLU(), nn.Linear(h, h))], nn.ReLU())
        self.out = nn.Linear(h, 2 * n_vars)
        with torch.no_grad():        # start at no correction
            self.out.weight.mul_(0.1)
            self.out.bias.zero_()

    def encode(self, inputs: torch.Tensor) -> torch.Tensor:
        """Latent grid(s) of the lattice input(s) [B, 3V, Z, Y, X] -> [B, H, Z, Y, X]."""
        return self.encoder(inputs)

    def decode(self, latents: torch.Tensor, q: torch.Tensor, cell: Sequence[float],
               w: float) -> torch.Tensor:
        """Correction and error scale at lattice indices ``q`` [N, 3] (x, y, z, continuous)
        -> [N, 2V]: the first V the correction, the last V the error scale (>= 0)."""
        h, nz, ny, nx = latents.shape
        n = q.shape[0]
        size = q.new_tensor([nx, ny, nz])
        base = q.floor().clamp(min=q.new_zeros(3), max=(size - 2).clamp(min=0))  # [N, 3]
        frac = q - base
        d = q.new_tensor(CORNERS)[:, None]                                  # [8, 1, 3]
        idx = (base[None] + d).clamp(max=size - 1).long()                   # [8, N, 3]
        lin = (idx[..., 2] * ny + idx[..., 1]) * nx + idx[..., 0]           # [8, N]
        off = frac[None] - d                                                # [8, N, 3] in [-1, 1]
        wt = torch.where(d > 0, frac[None], 1 - frac[None]).prod(dim=2)     # [8, N]
        extra = q.new_tensor([*cell, w, w * (1 - w)]).expand(8, n, 5)
        hid = F.embedding(lin.reshape(-1), latents.reshape(h, -1).t()) \
            + self.query(torch.cat([off, extra], dim=2).reshape(8 * n, 8))  # [8N, H]
        y = self.out(self.mlp(hid)).view(8, n, -1)                          # [8, N, 2V]
        acc = (wt[..., None] * y).sum(0)                                    # [N, 2V]
        corr, err = acc[:, :self.n_vars], acc[:, self.n_vars:]
        return torch.cat([corr, F.softplus(err)], dim=1)


def lattice_queries(out_axes: Sequence[torch.Tensor], lattice_dims: Sequence[int]
                    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per axis (x, y, z) the output points' continuous lattice indices, from their local
    coordinates in [-1, 1] (both grids span the same bounds)."""
    return tuple((a.to(torch.float32) + 1) * 0.5 * (n - 1)
                 for a, n in zip(out_axes, lattice_dims))  # type: ignore[return-value]
