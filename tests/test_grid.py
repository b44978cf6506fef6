"""The Grid value: Resample To Image's rule for scales and dims, and one tolerance rule."""
import pytest

from stsr_core import StsrError
from stsr_core.grid import Grid


def test_scaled_grid_keeps_bounds_and_refines_spacing():
    g = Grid((9, 8, 7), (1.0, 2.0, 3.0), (0.5, 0.25, 1.0))
    s = g.scaled(2)
    assert s.dims == (17, 15, 13) and s.spacing == (0.25, 0.125, 0.5)
    assert s.bounds == g.bounds and s.shape == (13, 15, 17)
    with pytest.raises(StsrError, match="whole number of points"):
        g.scaled(1.3)
    with pytest.raises(StsrError, match="> 0"):
        g.scaled(0)


def test_resampled_grid_sets_point_counts_over_the_same_bounds():
    g = Grid((9, 8, 1), (0, 0, 5), (0.5, 1.0, 2.0))
    r = g.resampled((5, 15, 3))
    assert r.bounds[:4] == g.bounds[:4] and r.spacing == (1.0, 0.5, 2.0)   # flat z keeps its
    with pytest.raises(StsrError, match=">= 1"):
        g.resampled((0, 3, 3))


def test_differences_use_one_tolerance_relative_to_the_grid():
    g = Grid((33, 33, 33), (0, 0, 0), (1 / 32, 1 / 32, 1 / 32))
    assert g.differences(Grid(g.dims, (1e-7, 0, 0), (1 / 32 * (1 + 1e-7),) * 3)) == []
    diffs = g.differences(Grid((17, 33, 33), (0.1, 0, 0), (1 / 16, 1 / 32, 1 / 32)))
    assert [d.split()[0] for d in diffs] == ["dimensions", "origin", "spacing"]


def test_bad_grid_values_are_refused_with_what_is_wrong():
    with pytest.raises(StsrError, match="dimensions must be >= 1"):
        Grid((0, 3, 3))
    with pytest.raises(StsrError, match="3 dims"):
        Grid((3, 3))
