"""Multi-head geometry: the input grid split into (up to) 2 x 2 x 2 octant blocks.

Every block has the same number of points per axis and therefore the same local coordinate
grid, so one query at a local coordinate yields one value per head (block) -- the paper's
multi-head trick -- for ANY grid size, without padding:

* an axis of N points is split into two blocks of ``m = ceil((N + 1) / 2)`` points,
  block 0 = indices ``[0, m-1]``, block 1 = ``[N-m, N-1]``; they overlap by ``2m - N``
  (1 or 2) points, which both heads learn;
* axes with fewer than 4 points are not split (one block covering the axis);
* a query point at continuous index ``i`` belongs to block 0 when ``i <= (N-1)/2``, else to
  block 1 (the midpoint lies inside both blocks' overlap, so no point is extrapolated);
* the local coordinate in a block is ``2 (i - start) / (m - 1) - 1`` in ``[-1, 1]``.

Time is never split: it is normalised to [-1, 1] over the input's first and last time.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence, Tuple

import torch


@dataclass(frozen=True)
class BlockLayout:
    dims: Tuple[int, int, int]      # input point counts (nx, ny, nz)
    splits: Tuple[int, int, int]    # 1 or 2 blocks per axis

    @staticmethod
    def create(dims: Sequence[int], heads: int) -> "BlockLayout":
        """``heads`` is 1 (no split) or 8 (split every axis that has >= 4 points)."""
        if heads not in (1, 8):
            raise ValueError(f"heads must be 1 or 8, got {heads}")
        dims = tuple(int(d) for d in dims)
        splits = tuple(2 if (heads == 8 and d >= 4) else 1 for d in dims)
        return BlockLayout(dims, splits)  # type: ignore[arg-type]

    @property
    def n_heads(self) -> int:
        return self.splits[0] * self.splits[1] * self.splits[2]

    @property
    def block_dims(self) -> Tuple[int, int, int]:
        return tuple(  # type: ignore[return-value]
            math.ceil((n + 1) / 2) if s == 2 else n for n, s in zip(self.dims, self.splits)
        )

    def starts(self, axis: int) -> Tuple[int, ...]:
        n, m = self.dims[axis], self.block_dims[axis]
        return (0, n - m) if self.splits[axis] == 2 else (0,)

    def head_of(self, bx: torch.Tensor, by: torch.Tensor, bz: torch.Tensor) -> torch.Tensor:
        sx, sy, _ = self.splits
        return bx + sx * (by + sy * bz)

    def head_blocks(self) -> torch.Tensor:
        """[n_heads, 3] block index (bx, by, bz) of every head, in head order."""
        out = torch.zeros(self.n_heads, 3, dtype=torch.long)
        for bz in range(self.splits[2]):
            for by in range(self.splits[1]):
                for bx in range(self.splits[0]):
                    h = bx + self.splits[0] * (by + self.splits[1] * bz)
                    out[h] = torch.tensor([bx, by, bz])
        return out

    def head_offsets(self) -> torch.Tensor:
        """[n_heads, 3] start index (x, y, z) of every head's block."""
        blocks = self.head_blocks()
        out = torch.zeros_like(blocks)
        for a in range(3):
            st = torch.tensor(self.starts(a), dtype=torch.long)
            out[:, a] = st[blocks[:, a]]
        return out

    def local_from_index(self, idx: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Continuous input indices ``[N, 3]`` (x, y, z) -> (local coords ``[N, 3]`` in
        [-1, 1], head ``[N]``)."""
        local = torch.empty_like(idx, dtype=torch.float32)
        blk = torch.zeros(idx.shape[0], 3, dtype=torch.long, device=idx.device)
        for a in range(3):
            n, m = self.dims[a], self.block_dims[a]
            i = idx[:, a].to(torch.float32)
            if self.splits[a] == 2:
                b = (i > (n - 1) / 2).long()
                start = b * (n - m)
            else:
                b = torch.zeros_like(i, dtype=torch.long)
                start = torch.zeros_like(i)
            blk[:, a] = b
            local[:, a] = 0.0 if m == 1 else 2.0 * (i - start) / (m - 1) - 1.0
        return local, self.head_of(blk[:, 0], blk[:, 1], blk[:, 2])

    def local_from_block_index(self, lidx: torch.Tensor) -> torch.Tensor:
        """Integer indices inside a block ``[N, 3]`` -> local coords ``[N, 3]``."""
        out = torch.empty(lidx.shape, dtype=torch.float32, device=lidx.device)
        for a, m in enumerate(self.block_dims):
            out[:, a] = 0.0 if m == 1 else 2.0 * lidx[:, a].float() / (m - 1) - 1.0
        return out


def normalise_times(times: torch.Tensor, t0: float, t1: float) -> torch.Tensor:
    """Physical times -> [-1, 1] over the input's time range (0 for a single timestep)."""
    if t1 == t0:
        return torch.zeros_like(times, dtype=torch.float32)
    return (2.0 * (times - t0) / (t1 - t0) - 1.0).to(torch.float32)
