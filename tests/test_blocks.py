"""The multi-head octant layout works for any grid size, with no padding."""
import pytest
import torch

from stsr_core.blocks import BlockLayout, normalise_times


@pytest.mark.parametrize("n", [4, 5, 9, 10, 17, 32, 33])
def test_blocks_cover_axis_with_equal_sizes(n):
    lay = BlockLayout.create((n, n, n), heads=8)
    m = lay.block_dims[0]
    s0, s1 = lay.starts(0)
    assert s0 == 0 and s1 + m - 1 == n - 1          # both ends covered
    assert s1 <= m - 1                               # blocks overlap or touch: no gap
    assert 1 <= 2 * m - n <= 2                       # overlap of one or two points
    assert lay.n_heads == 8


def test_thin_axes_are_not_split():
    lay = BlockLayout.create((9, 7, 1), heads=8)
    assert lay.splits == (2, 2, 1) and lay.n_heads == 4
    assert BlockLayout.create((9, 9, 9), heads=1).n_heads == 1


@pytest.mark.parametrize("dims", [(9, 8, 7), (10, 5, 4), (6, 6, 1)])
def test_points_map_to_their_block_and_back(dims):
    """A grid point's (head, local coordinate) must be the same point seen from its block,
    so training targets (gathered by offset) and queries (mapped by index) agree."""
    lay = BlockLayout.create(dims, heads=8)
    zz, yy, xx = torch.meshgrid(*[torch.arange(d) for d in dims[::-1]], indexing="ij")
    idx = torch.stack([xx.flatten(), yy.flatten(), zz.flatten()], 1).float()
    local, head = lay.local_from_index(idx)
    assert local.min() >= -1 - 1e-6 and local.max() <= 1 + 1e-6
    offsets = lay.head_offsets()
    bd = torch.tensor(lay.block_dims)
    lidx = torch.round((local + 1) / 2 * (bd - 1).clamp_min(1)).long()
    lidx[:, bd == 1] = 0
    assert torch.equal(lidx + offsets[head], idx.long())
    assert torch.allclose(lay.local_from_block_index(lidx), local, atol=1e-6)


def test_time_normalisation():
    t = torch.tensor([2.0, 3.0, 6.0], dtype=torch.float64)
    assert torch.allclose(normalise_times(t, 2.0, 6.0), torch.tensor([-1.0, -0.5, 1.0]))
    assert torch.equal(normalise_times(t[:1], 2.0, 2.0), torch.zeros(1))
