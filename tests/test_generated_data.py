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
from examples.data.generated.measure import block_shifts, linear_in_time_psnr  # noqa: E402

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
    # and not in place: some block of step 4 is found shifted in step 0
    assert np.abs(block_shifts(first, fifth, block=16, reach=6)).max() > 0


def test_block_shifts_find_a_known_translation():
    rng = np.random.default_rng(0)
    from scipy.ndimage import gaussian_filter
    f = gaussian_filter(rng.standard_normal((40, 40, 40)), 3)
    g = np.roll(f, (2, -3, 5), axis=(0, 1, 2))        # g[z] = f[z - 2]: moved by +2, -3, +5
    shifts = block_shifts(f, g, block=16, reach=8)
    assert len(shifts) > 10
    np.testing.assert_array_equal(np.median(shifts, axis=0), [2, -3, 5])


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


# --- the training families (examples/data/training_families.py) ---------------------------

def test_a_training_series_is_the_same_for_the_same_seed_and_differs_across_seeds():
    from examples.data.training_families import sample
    a, b, c = sample(3), sample(3), sample(5)
    assert a.names == b.names
    for n in a.names:
        assert np.array_equal(a.variables[n], b.variables[n]), n
    assert a.names != c.names or a.dims != c.dims or not all(
        np.array_equal(a.variables[n], c.variables[n]) for n in a.names)


@pytest.mark.parametrize("seed", [3, 5, 7])
def test_a_training_series_is_small_finite_multivariate_and_moves(seed):
    from examples.data.training_families import draw, sample
    s, recipe = sample(seed), draw(seed)
    assert s.dims[0] in (25, 29, 33) and s.n_times in (9, 13, 17)
    assert 2 <= len(s.names) <= 5 and np.all(np.diff(s.times) > 0)
    for n, a in s.variables.items():
        assert np.isfinite(a).all(), n
    assert 0.5 <= recipe.cells_per_step <= 9.0        # rigid part 0.5-4.5, a flow adds
    scores = linear_in_time_psnr(s, 4)
    assert min(row["between"] for row in scores.values()) < 30.0, scores


def test_a_rigid_rotation_is_carried_exactly_through_the_lattice():
    # the lattice's affine fit takes a rotation whole: no interpolation error
    from examples.data.generated.carried import departure_points, grid_points
    from examples.data.generated.grid import Box
    from examples.data.training_families import Motion
    box = Box(17)
    spin = 2.0
    m = Motion(centre=[0.5, 0.5, 0.5], spin=[0.0, 0.0, spin])
    x, y, z = departure_points(m, box, 1.0, 64, every=4)
    gx, gy, gz = grid_points(box)
    c, s = np.cos(-spin), np.sin(-spin)                 # back by the angle turned
    np.testing.assert_allclose(x, 0.5 + c * (gx - 0.5) - s * (gy - 0.5), atol=1e-6)
    np.testing.assert_allclose(y, 0.5 + s * (gx - 0.5) + c * (gy - 0.5), atol=1e-6)
    np.testing.assert_allclose(z, gz, atol=1e-12)


def test_the_training_cli_writes_count_series_and_an_index_and_skips_them_next_time(tmp_path):
    from stsr_core.io import read_series
    from examples.data.training_families import main, sample
    out = str(tmp_path)
    assert main(["--out", out, "--count", "2", "--first-seed", "3"]) == 0
    with open(os.path.join(out, "index.json")) as fh:
        index = json.load(fh)
    assert sorted(index) == ["3", "4"]
    written = read_series(os.path.join(out, index["3"]["path"]))
    np.testing.assert_array_equal(written.variables[written.names[0]],
                                  sample(3).variables[written.names[0]])
    before = os.path.getmtime(os.path.join(out, "family_3.h5"))
    assert main(["--out", out, "--count", "2", "--first-seed", "3"]) == 0
    assert os.path.getmtime(os.path.join(out, "family_3.h5")) == before


def test_a_solver_series_is_converted_with_its_grid_and_vorticity():
    """examples/data/solvers' conversion of a solver's frames (here made by hand: a solid
    rotation about z at rate 0.3, the wake's layout): cell-centred grid, velocity as one
    vector, and |curl v| = twice the rate, by central differences."""
    from examples.data.solvers.__main__ import to_series
    n, h, rate = 9, 0.5, 0.3
    c = (np.arange(n) + 0.5) * h
    z, y, x = np.meshgrid(c, c, c, indexing="ij")
    frames = {"velocity_0": np.stack([-rate * (y - 2)] * 3).astype(np.float32),
              "velocity_1": np.stack([rate * (x - 2)] * 3).astype(np.float32),
              "velocity_2": np.zeros((3, n, n, n), np.float32),
              "pressure": np.zeros((3, n, n, n), np.float32),
              "times": np.array([0.0, 1.0, 2.0]), "spacing": np.asarray(h)}
    s = to_series("wake", frames)
    assert s.dims == (n, n, n) and s.spacing == (h, h, h) and s.origin == (h / 2,) * 3
    assert s.components == {"velocity": ["velocity_0", "velocity_1", "velocity_2"]}
    np.testing.assert_allclose(s.variables["vorticity_magnitude"], 2 * rate, rtol=1e-5)
