"""The benchmark's generated series (examples/data/generated, issue 25): every kind is the
same for the same seed, has the promised shapes and finite values, and really moves between
kept steps -- a static or empty generator fails here. Small sizes (33^3 x 9 steps)."""
import json
import os
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from examples.data.generated import KINDS, generate  # noqa: E402
from examples.data.generated.__main__ import write  # noqa: E402
from examples.data.generated.measure import linear_in_time_psnr  # noqa: E402

N, STEPS = 33, 9


@pytest.fixture(scope="module")
def made():
    """kind -> (series, the same kind made again from the same seed)."""
    return {k: (generate(k, N, STEPS, seed=3), generate(k, N, STEPS, seed=3)) for k in KINDS}


@pytest.mark.parametrize("kind", list(KINDS))
def test_a_kind_is_the_same_series_for_the_same_seed(made, kind):
    a, b = made[kind]
    assert a.names == b.names
    for n in a.names:
        assert np.array_equal(a.variables[n], b.variables[n]), n
    np.testing.assert_array_equal(a.times, b.times)


@pytest.mark.parametrize("kind", list(KINDS))
def test_a_kind_has_the_shapes_asked_for_finite_values_and_increasing_times(made, kind):
    s = made[kind][0]
    assert s.dims == (N, N, N) and s.n_times == STEPS
    assert 2 <= len(s.names) <= 4
    assert np.all(np.diff(s.times) > 0)
    for n, a in s.variables.items():
        assert a.dtype == np.float32 and a.shape == (STEPS, N, N, N)
        assert np.isfinite(a).all(), n
        assert float(a[STEPS // 2].max() - a[STEPS // 2].min()) > 0.05 * float(np.abs(a).max()), \
            f"{n} is flat in space"


@pytest.mark.parametrize("kind", list(KINDS))
def test_features_move_so_that_linear_in_time_loses_between_kept_steps(made, kind):
    # every 4th step kept: a static series or one that only fades would score far above
    # 30 dB (inf when static); moving features drop it well below
    s = made[kind][0]
    scores = linear_in_time_psnr(s, 4)
    for n, row in scores.items():
        assert row["between"] < 30.0, (n, row)
    first, fifth = (s.variables[s.names[0]][i] for i in (0, 4))
    assert np.abs(fifth - first).max() > 0.1 * np.abs(first).max()


def test_another_seed_makes_another_series(made):
    a = made["fronts"][0]
    b = generate("fronts", N, STEPS, seed=4)
    assert not np.array_equal(a.variables["progress"], b.variables["progress"])


def test_the_cli_writes_the_projects_hdf5_layout_and_skips_a_stamped_rerun(tmp_path):
    from stsr_core.io import read_series
    out = str(tmp_path)
    stamp = write("fronts", out, n=17, steps=5, seed=1)
    series = read_series(stamp["path"])
    assert series.dims == (17, 17, 17) and series.n_times == 5
    assert series.names == ["progress", "heat_release", "temperature"]
    made = generate("fronts", 17, 5, seed=1)
    np.testing.assert_array_equal(series.variables["progress"], made.variables["progress"])
    with open(os.path.join(out, "fronts.json")) as fh:
        assert json.load(fh)["seed"] == 1
    before = os.path.getmtime(stamp["path"])
    again = write("fronts", out, n=17, steps=5, seed=1)
    assert again.get("cached") and os.path.getmtime(stamp["path"]) == before
    other = write("fronts", out, n=17, steps=5, seed=2)
    assert not other.get("cached")


def test_an_unknown_kind_names_the_choices():
    with pytest.raises(ValueError, match="fronts"):
        generate("vortex_street")
