"""The still part's blend towards trilinear between kept steps (issue 30, never below
trilinear + linear in time: model/between_smooth.py): chosen one level down where no motion
is followed and the short scales decorrelate within a gap, left out where the steps change
linearly in time (what trilinear gains one level down there is spatial, and does not carry
to the data's level), exact at the kept steps and the data's points, the same at points as
on grids."""
import contextlib
import io

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from stsr_core import api, cli
from stsr_core.model.grid_plan import lattice_axes
from stsr_core.series import VolumeSeries
from stsr_core.trained import save_model

FINE = np.arange(33.0)         # the truth's steps; every 4th kept


def dispersive(times, n=31, seed=0, every=1):
    """``waves``: 24 plane waves in random directions, each at its own speed (no one
    displacement follows them all; the short ones travel more than half their wavelength
    between kept steps), and ``ramp``: a rough field changing linearly in time (linear in
    time is exact between steps); at every ``every``-th point of an n^3 grid."""
    rng = np.random.default_rng(seed)
    ax = np.arange(n, dtype=np.float64)
    z, y, x = np.meshgrid(ax, ax, ax, indexing="ij")
    t = np.asarray(times, np.float64)[:, None, None, None]
    waves = np.zeros((t.shape[0], n, n, n))
    start, change = gaussian_filter(rng.normal(size=(2, n, n, n)), (0, 1, 1, 1))
    for _ in range(24):
        lam = rng.uniform(3.0, 12.0)
        d = rng.normal(size=3)
        k = 2 * np.pi / lam * d / np.linalg.norm(d)
        speed = rng.uniform(0.5, 1.5) * rng.choice([-1, 1])
        phase = k[0] * x + k[1] * y + k[2] * z + rng.uniform(0, 2 * np.pi)
        waves += np.cos(phase[None] - np.linalg.norm(k) * speed * t) * (lam / 12.0)
    ramp = start[None] + (t / FINE[-1]) * change[None]
    cut = (slice(None),) + (slice(None, None, every),) * 3      # every ``every``-th point
    return VolumeSeries(times=t.ravel(), variables={"waves": waves[cut].astype(np.float32),
                                                    "ramp": ramp[cut].astype(np.float32)},
                        origin=(0, 0, 0), spacing=(every,) * 3)


@pytest.fixture(scope="module")
def fitted():
    kept = dispersive(FINE[::4], every=2)
    return kept, api.fit(kept, device="cpu", model_overrides={"flow_iters": 30})


def mid_psnr(tm, truth, name):
    """PSNR of ``name`` half-way between kept steps (the phase the blend weighs most) on the
    truth's grid, twice as fine as the kept one (the blend changes nothing at the data's
    points)."""
    v = truth.variables[name]
    rng = float(v.max() - v.min())
    out = []
    for i in range(2, len(FINE), 4):
        p = api.predict_timestep(tm, float(FINE[i]), truth.grid)[name]
        out.append(20 * np.log10(rng) - 10 * np.log10(np.mean((p - v[i]) ** 2)))
    return float(np.mean(out))


def test_waves_no_motion_follows_are_smoothed_between_steps_and_score_higher(fitted):
    kept, tm = fitted
    base = tm.model.base
    assert base.selection["common"] == "still"
    share = base.between_smooth.tolist()
    assert share[0] > 0.5, share              # the waves: smoothed
    assert share[1] < 0.05, share             # the ramp: linear in time is exact
    truth = dispersive(FINE)
    with_it = mid_psnr(tm, truth, "waves")
    base.between_smooth.zero_()
    try:
        without = mid_psnr(tm, truth, "waves")
    finally:
        base.between_smooth.copy_(torch.tensor(share))
    assert with_it > without + 0.2, (with_it, without)


def test_kept_steps_and_the_data_points_stay_exact_and_points_agree_with_the_grid(fitted):
    """The blend changes nothing at the kept steps, nor at the data's points between them
    (trilinear and the cubic spline agree there); between the points it does, and the
    model at points gives the grid's numbers."""
    _, tm = fitted
    base = tm.model.base
    x, y, z = base.dims
    keep = base.between_smooth.clone()
    try:
        for dims in ((z, y, x), (2 * z - 1, 2 * y - 1, 2 * x - 1)):
            axes = lattice_axes(dims, base.device)
            plan = base.plan_grid(axes)
            pts = torch.stack(torch.meshgrid(*axes[::-1], indexing="ij")[::-1],
                              -1).reshape(-1, 3)
            for t in (float(base.slot_times[3]), -0.3, 0.1):
                base.between_smooth.zero_()
                plain = base.evaluate_grid(plan, t).clone()
                base.between_smooth.fill_(0.8)
                blended = base.evaluate_grid(plan, t)
                with torch.no_grad():
                    at_points = base(torch.cat([pts, torch.full((len(pts), 1), t)], 1))
                assert torch.allclose(at_points.t().reshape(blended.shape), blended,
                                      atol=1e-5 * float(blended.abs().max()))
                moved = float((blended - plain).abs().max())
                if t == float(base.slot_times[3]) or dims == (z, y, x):
                    assert moved < 1e-5 * float(plain.abs().max()), (dims, t, moved)
                else:
                    assert moved > 1e-2 * float(plain.abs().max()), (dims, t, moved)
    finally:
        base.between_smooth.copy_(keep)


def test_stsr_info_says_how_much_each_variable_is_smoothed(fitted, tmp_path):
    _, tm = fitted
    path = str(tmp_path / "m.stsr")
    save_model(tm, path)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli.main(["info", path]) == 0
    text = out.getvalue()
    assert "towards trilinear" in text and "trilinear share" in text, text
    loaded = api.load_model(path, device="cpu")
    assert torch.equal(loaded.model.base.between_smooth, tm.model.base.between_smooth)


def test_between_smoothing_off_leaves_every_share_at_zero():
    kept = dispersive(FINE[::4], n=15, every=2)
    tm = api.fit(kept, device="cpu", model_overrides={"flow_iters": 10,
                                                      "between_smoothing": "off"})
    assert float(tm.model.base.between_smooth.abs().max()) == 0.0
    assert "trilinear_share" not in tm.model.base.selection
