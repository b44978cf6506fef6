"""Queries: any output grid, any time, in chunks so memory stays bounded whatever the
output size. Points are mapped to continuous input indices, then to (block, local
coordinate) by the model's BlockLayout; each point goes through the shared trunk once and
through its own head only."""
from __future__ import annotations

from typing import Callable, Optional

import numpy as np
import torch

from .blocks import BlockLayout
from .grid import Grid
from .model import FieldModel

DEFAULT_CHUNK = 1 << 16  # points per forward pass (x variables)


def grid_indices(grid_out: Grid, grid_in: Grid, start: int, stop: int,
                 device: torch.device) -> torch.Tensor:
    """Continuous ``grid_in`` indices ``[stop-start, 3]`` (x, y, z) of the ``grid_out``
    points with flat ids in [start, stop) (x fastest)."""
    nx, ny, _ = grid_out.dims
    flat = torch.arange(start, stop, device=device, dtype=torch.int64)
    ijk = torch.stack([flat % nx, (flat // nx) % ny, flat // (nx * ny)], dim=1).double()
    o_out = torch.tensor(grid_out.origin, dtype=torch.float64, device=device)
    s_out = torch.tensor(grid_out.spacing, dtype=torch.float64, device=device)
    o_in = torch.tensor(grid_in.origin, dtype=torch.float64, device=device)
    s_in = torch.tensor(grid_in.spacing, dtype=torch.float64, device=device)
    return ((o_out + ijk * s_out - o_in) / s_in).float()


@torch.inference_mode()
def predict_grid(model: FieldModel, layout: BlockLayout, t_norm: float, grid_out: Grid,
                 grid_in: Grid, var_idx: Optional[torch.Tensor] = None,
                 codes: Optional[torch.Tensor] = None, chunk: int = DEFAULT_CHUNK,
                 progress: Optional[Callable[[float], Optional[bool]]] = None
                 ) -> Optional[np.ndarray]:
    """Normalised predictions ``[V, Z, Y, X]`` (float32 numpy) at one normalised time on
    ``grid_out``; ``grid_in`` is the grid the model was trained on.
    Returns None if ``progress`` returned False (cancelled)."""
    model.eval()
    dev = next(model.parameters()).device
    if var_idx is None:
        n = model.latent_mu.shape[0] if model.latent_mu is not None else model.n_vars
        var_idx = torch.arange(n, device=dev)
    n_vars = int(codes.shape[0]) if codes is not None else int(var_idx.shape[0])
    nx, ny, nz = grid_out.dims
    total = nx * ny * nz
    out = np.empty((n_vars, total), dtype=np.float32)
    for start in range(0, total, chunk):
        stop = min(total, start + chunk)
        idx = grid_indices(grid_out, grid_in, start, stop, dev)
        local, heads = layout.local_from_index(idx)
        coords = torch.cat([local, torch.full_like(local[:, :1], float(t_norm))], dim=1)
        pred = model(coords, var_idx, heads=heads if layout.n_heads > 1 else None, codes=codes)
        if pred.dim() == 3:
            pred = pred[..., 0]
        out[:, start:stop] = pred.float().cpu().numpy()
        if progress is not None and progress(stop / total) is False:
            return None
    return out.reshape(n_vars, nz, ny, nx)
