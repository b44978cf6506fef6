"""The networks themselves: the paper's size, the model interface (heads, codes), each
encoding of the fast model learning tiny data, and the spline base."""
import os

import numpy as np
import pytest
import torch
from scipy.interpolate import CubicSpline

from stsr_core import api
from stsr_core.config import FastNetConfig, preset
from stsr_core.metrics import evaluate
from stsr_core.kinds import build_model
from stsr_core.model import FieldSpec
from stsr_core.model.encodings import bspline_coefficients, bspline_sample
from stsr_core.model.time_basis import (cross_validated_mix, fit_displacement, held_out_fits,
                                        interpolate_steps, natural_spline_slopes, warped_blend)
from stsr_core.series import VolumeSeries
from test_engine import smooth_series

torch.set_num_threads(1)


def test_paper_network_has_the_reference_parameter_count():
    mcfg, tcfg = preset("paper")
    for n_vars in (1, 3):
        net = build_model(mcfg, FieldSpec(n_vars=n_vars, n_heads=8, block_dims=(9, 9, 9),
                                          n_times=5))
        weights = sum(p.numel() for n, p in net.named_parameters() if n != "latent_mu")
        assert weights == 4_179_592
        assert net.latent_mu.shape == (n_vars, 256)
    assert (tcfg.lr, tcfg.batch_size, tcfg.schedule) == (1e-5, 8000, "constant")


@pytest.mark.parametrize("kind", ["paper", "fast", "siren"])
def test_heads_and_codes_follow_the_interface(kind):
    torch.manual_seed(0)
    mcfg, _ = preset(kind)
    if kind == "fast":
        mcfg.base = "none"     # with the base, an untrained output layer starts at zero
    n_heads = 8 if kind == "paper" else 1
    net = build_model(mcfg, FieldSpec(n_vars=2, n_heads=n_heads, block_dims=(5, 4, 3),
                                      n_times=3, times_norm=(-1.0, 0.0, 1.0))).eval()
    coords = torch.rand(40, 4) * 2 - 1
    var_idx = torch.tensor([0, 1])
    with torch.no_grad():
        full = net(coords, var_idx)                                    # [V, N, H]
        assert full.shape == (2, 40, n_heads)
        heads = torch.randint(0, n_heads, (40,))
        picked = net(coords, var_idx, heads=heads)                     # [V, N]
        np.testing.assert_allclose(picked, full[:, torch.arange(40), heads], rtol=1e-5,
                                   atol=1e-6)
        if net.latent_mu is not None:
            again = net(coords, var_idx, codes=net.latent_mu[var_idx])
            np.testing.assert_allclose(again, full, rtol=1e-6)
            other = net(coords, var_idx, codes=net.latent_mu[var_idx] + 1.0)
            assert not torch.allclose(other, full)       # the code drives the output


def fit_psnr(model_overrides, steps=150, preset_name="fast", lr=None):
    s = smooth_series(nx=8, ny=7, nz=6, nt=3)
    train = {"batch_size": 512}
    if lr is not None:
        train.update(lr=lr, lr_latent=lr)
    tm = api.fit(s, preset_name, steps=steps, device="cpu", seed=0,
                 model_overrides=model_overrides, train_overrides=train)
    return evaluate(api.predict(tm), s)["psnr_mean"]


@pytest.mark.parametrize("overrides", [
    {"encoding": "grid", "grid_interp": "cubic", "base": "none"},
    {"encoding": "grid", "grid_interp": "linear", "base": "none"},
    {"encoding": "fourier", "base": "none", "fourier_sigma": 1.0},
    {"encoding": "none", "base": "none", "omega_0": 10.0},
])
def test_each_fast_encoding_learns_tiny_data(overrides):
    """Without the spline base the network alone must learn: well above the ~10 dB of an
    untrained model after 150 steps."""
    untrained = fit_psnr(overrides, steps=0)
    learned = fit_psnr(overrides)
    assert learned > 25 and learned > untrained + 10, (untrained, learned)


def test_siren_baseline_learns_tiny_data():
    assert fit_psnr({}, steps=200, preset_name="siren", lr=1e-3) > 22


def test_spline_coefficients_interpolate_exactly():
    v = torch.rand(2, 5, 6, 7)
    c = bspline_coefficients(v)
    assert c.shape == (2, 7, 8, 9)
    zs, ys, xs = torch.meshgrid(torch.linspace(-1, 1, 5), torch.linspace(-1, 1, 6),
                                torch.linspace(-1, 1, 7), indexing="ij")
    p = torch.stack([xs.flatten(), ys.flatten(), zs.flatten()], 1)
    out = bspline_sample(c[None], p).t().reshape(2, 5, 6, 7)
    np.testing.assert_allclose(out, v, atol=2e-6)


@pytest.mark.parametrize("base_time", ["auto", "linear"])
def test_spline_base_starts_at_the_data(base_time):
    """Before any step the fast model equals the kept data at the kept points and times
    (physical units); with ``base_time = linear``, between two kept steps it is the linear
    blend of the two."""
    s = smooth_series(nx=7, ny=6, nz=5, nt=3)
    tm = api.fit(s, "fast", steps=0, device="cpu", model_overrides={"base_time": base_time})
    out = api.predict(tm, dims=s.dims, times=[s.times[0], 0.5 * (s.times[0] + s.times[1]),
                                              s.times[2]])
    for n in s.variables:
        rng = np.ptp(s.variables[n])
        np.testing.assert_allclose(out.variables[n][0], s.variables[n][0], atol=1e-5 * rng)
        np.testing.assert_allclose(out.variables[n][2], s.variables[n][2], atol=1e-5 * rng)
        if base_time == "linear":
            mid = 0.5 * (s.variables[n][0] + s.variables[n][1])
            np.testing.assert_allclose(out.variables[n][1], mid, atol=1e-5 * rng)


def _series_in_time(values_of_t, times):
    """A tiny series whose every point follows values_of_t(t) plus a spatial offset."""
    x = np.linspace(0, 1, 6)[None, None, None, :]
    y = np.linspace(0, 1, 5)[None, None, :, None]
    t = np.asarray(times, dtype=np.float64)[:, None, None, None]
    a = values_of_t(t) + 0.3 * x + 0.1 * y + 0 * t
    return VolumeSeries(times=np.asarray(times, dtype=np.float64),
                        variables={"a": np.repeat(a, 4, axis=1).astype(np.float32)},
                        origin=(0, 0, 0), spacing=(1, 1, 1))


def test_natural_spline_slopes_and_interpolation_match_scipy():
    t = np.array([0.0, 0.3, 1.0, 1.4, 2.5, 3.0])
    v = np.random.default_rng(0).normal(size=(6, 4))
    ref = CubicSpline(t, v, bc_type="natural")
    np.testing.assert_allclose(natural_spline_slopes(t).numpy() @ v, ref(t, 1), atol=1e-12)
    q = [0.1, 0.5, 1.2, 2.9]
    lin, cub = interpolate_steps(torch.tensor(v), t, q)
    np.testing.assert_allclose(cub.numpy(), ref(q), atol=1e-12)
    np.testing.assert_allclose(lin.numpy().T, [np.interp(q, t, v[:, k]) for k in range(4)],
                               atol=1e-12)
    two = natural_spline_slopes([0.0, 2.0]).numpy()          # a line through two steps
    np.testing.assert_allclose(two @ np.array([1.0, 5.0]), [2.0, 2.0])


def test_cross_validated_mix_prefers_cubic_for_smooth_motion_and_linear_for_fronts():
    times = np.arange(9, dtype=np.float64)
    smooth = torch.tensor(np.sin(0.35 * times), dtype=torch.float32)[:, None]
    x = np.arange(40)[None, :]
    front = torch.tensor(np.tanh((x - 3.0 - 4.0 * times[:, None]) / 0.7), dtype=torch.float32)
    mix = cross_validated_mix(torch.stack([smooth.expand(9, 40), front]), times)
    assert mix.shape == (2, 2) and float(mix[:, 1].abs().max()) == 0.0   # no flow asked
    assert mix[0, 0] > 0.9, mix       # a smooth curve: the cubic predicts held-out steps
    assert mix[1, 0] < 0.3, mix       # a travelling front: the cubic overshoots
    # too few steps to tell the two apart: linear
    assert float(cross_validated_mix(torch.stack([smooth[:4].expand(4, 40)]),
                                     times[:4])[0, 0]) == 0.0


def test_cross_validated_mix_with_the_flow_share_fixed_still_chooses_the_cubic_share():
    """The default (auto) fixes the motion-compensated share at 1, since held-out steps at
    twice the gap under-rate it, and leaves only the cubic share to them: still high for a
    field that changes smoothly in place, 0 where too few steps can tell."""
    times = np.arange(9, dtype=np.float64)
    z, y, x = np.meshgrid(np.arange(4), np.arange(5), np.arange(6), indexing="ij")
    pattern = np.cos(0.6 * x) * np.sin(0.5 * y + 0.3 * z)
    smooth = np.sin(0.35 * times)[:, None, None, None] * pattern[None] + 0.2 * pattern[None]
    data = torch.tensor(smooth, dtype=torch.float32)[None]            # [V=1, T, Z, Y, X]
    mix = cross_validated_mix(data, times, with_flow=True, flow_share=1.0, iters=30)
    assert float(mix[0, 1]) == 1.0 and mix[0, 0] > 0.8, mix
    free = cross_validated_mix(data, times, with_flow=False, flow_share=1.0)
    assert float(free[0, 1]) == 0.0, free                             # no flow: no share
    few = cross_validated_mix(data[:, :4], times[:4], with_flow=True, flow_share=1.0, iters=30)
    assert float(few[0, 0]) == 0.0 and float(few[0, 1]) == 1.0, few


def moving_blob(times, speed=1.5, nx=24):
    """A Gaussian blob and a second variable tied to it, travelling along x by ``speed``
    cells per unit time: linear interpolation in time leaves two half-bright ghosts."""
    x = np.arange(nx)[None, None, None, :]
    y = np.arange(8)[None, None, :, None]
    z = np.arange(6)[None, :, None, None]
    t = np.asarray(times, dtype=np.float64)[:, None, None, None]
    r2 = (x - 5.0 - speed * t) ** 2 + (y - 3.5) ** 2 + (z - 2.5) ** 2
    blob = np.exp(-r2 / 4.0)
    return VolumeSeries(times=np.asarray(times, dtype=np.float64),
                        variables={"density": blob.astype(np.float32),
                                   "heat": (2 * blob ** 2 + 0.1).astype(np.float32)},
                        origin=(0, 0, 0), spacing=(1, 1, 1))


def test_displacement_fit_recovers_the_motion_and_the_warped_blend_follows_it():
    s = moving_blob([0.0, 2.0])
    data = torch.from_numpy(np.stack([s.variables["density"], s.variables["heat"]]))
    disp = fit_displacement(data[:, 0], data[:, 1], coarsen=1)      # [3, Z, Y, X]
    cells = disp[0] / (2.0 / 23)                                       # x, in cells
    near = torch.from_numpy(s.variables["density"][0] + s.variables["density"][1] > 0.3)
    assert abs(float(cells[near].mean()) - 3.0) < 0.5, float(cells[near].mean())
    assert float(disp[1:, near].abs().max()) < 0.1
    truth = torch.from_numpy(moving_blob([1.0]).variables["density"][0])
    moved = warped_blend(data[:, 0], data[:, 1], disp, 0.5)[0]
    line = 0.5 * (data[0, 0] + data[0, 1])
    assert (moved - truth).abs().max() < 0.5 * (line - truth).abs().max()
    # large data is fitted at a capped resolution: same motion, bounded cost
    capped = fit_displacement(data[:, 0], data[:, 1], coarsen=1, max_points=12)
    assert tuple(capped.shape) == (3, 6, 8, 12)
    moved_capped = warped_blend(data[:, 0], data[:, 1], capped, 0.5)[0]
    assert (moved_capped - truth).abs().max() < 0.6 * (line - truth).abs().max()


def test_coarse_to_fine_displacement_fit_finds_moves_of_several_cells():
    """A blob moving 6 cells between two steps does not overlap itself: a fit on the data
    alone stays stuck near zero, the coarse-to-fine fit (the default's 2 levels) finds it."""
    s = moving_blob([0.0, 2.0], speed=3.0, nx=32)
    data = torch.from_numpy(np.stack([s.variables["density"], s.variables["heat"]]))
    near = torch.from_numpy(s.variables["density"][0] + s.variables["density"][1] > 0.3)
    truth = torch.from_numpy(moving_blob([1.0], speed=3.0, nx=32).variables["density"][0])
    line = 0.5 * (data[0, 0] + data[0, 1])
    found = {}
    for levels in (1, 2):
        disp = fit_displacement(data[:, 0], data[:, 1], coarsen=1, levels=levels)
        assert tuple(disp.shape) == (3, 6, 8, 32)
        moved = warped_blend(data[:, 0], data[:, 1], disp, 0.5)[0]
        found[levels] = (float((disp[0] / (2.0 / 31))[near].mean()),
                         float((moved - truth).abs().max() / (line - truth).abs().max()))
    assert abs(found[1][0]) < 1.0 and found[1][1] > 0.9, found       # stuck: two ghosts
    assert abs(found[2][0] - 6.0) < 0.5 and found[2][1] < 0.1, found
    assert FastNetConfig().flow_levels == 2


def test_fit_reports_its_fit_to_the_data_and_stops_there_when_asked():
    """The displacement fits before training take seconds to minutes: the callback hears of
    each (phase "init"), and returning False there (ParaView's abort; Ctrl-C and SIGTERM in
    stsr fit) stops with a valid model that keeps the fits done so far and skips the rest,
    as a spent time budget would."""
    s = moving_blob(2.0 * np.arange(5))
    seen = []

    fractions = []

    def watch(p):
        seen.append((p.phase, p.init_fraction))
        fractions.append(p.fraction)

    tm = api.fit(s, "fast", steps=3, device="cpu", callback=watch,
                 train_overrides={"log_every": 1},
                 model_overrides={"network": True, "flow_iters": 30})
    init = [f for phase, f in seen if phase == "init"]
    assert len(init) == 4 + held_out_fits(5) == 7        # 4 intervals + 3 held-out fits
    assert init == sorted(init) and init[-1] == 1.0
    assert [phase for phase, _ in seen[:7]] == ["init"] * 7 and seen[-1][0] == "train"
    # a steps-only budget: the bar still moves during the fit to the data (its tenth)
    assert fractions[:7] == sorted(fractions[:7]) and abs(fractions[6] - 0.1) < 1e-9
    assert float(tm.model.base.flow_mix.max()) > 0.5

    tm = api.fit(s, "fast", steps=3, device="cpu", callback=lambda p: False,
                 model_overrides={"network": True})
    h = tm.info.history
    assert h["stopped"] == "cancelled" and h["steps"] == 0          # no training after it
    assert "the fit was stopped: 6 of 7 displacement fits skipped" in h["init_notes"][-1]
    flow = tm.model.base.flow                    # the first interval's fit, done: kept
    assert float(flow[0].abs().max()) > 0 and float(flow[1:].abs().max()) == 0.0
    assert float(tm.model.base.flow_mix.min()) == 1.0
    out = api.predict(tm, dims=s.dims, times=[0.0, 1.0, 2.0]).variables["density"]
    np.testing.assert_allclose(out[[0, 2]], s.variables["density"][:2], atol=1e-4)
    truth = moving_blob([1.0]).variables["density"][0]
    line = 0.5 * (s.variables["density"][0] + s.variables["density"][1])
    assert np.abs(out[1] - truth).max() < 0.5 * np.abs(line - truth).max()   # it moves


def test_first_training_steps_keep_the_fast_base():
    """Adam's first steps move every weight by about the learning rate whatever its gradient:
    the fast preset warms its rate up so that training starts from the base it fitted, not
    from a spoiled copy (10-15 dB lost at step 1 on the benchmark's data without it)."""
    s = moving_blob(2.0 * np.arange(4))
    t = [1.0, 2.0, 3.0]
    net = {"network": True, "flow_iters": 30}       # the same base each time, quickly
    base = api.predict(api.fit(s, "fast", steps=0, device="cpu", model_overrides=net),
                       dims=s.dims, times=t)
    assert api.get_preset("fast")[1].warmup_steps == 100
    for warmup, bound in ((None, 1e-3), (0, None)):
        over = None if warmup is None else {"warmup_steps": warmup}
        out = api.predict(api.fit(s, "fast", steps=3, device="cpu", train_overrides=over,
                                  model_overrides=net), dims=s.dims, times=t)
        worst = max(float(np.abs(out.variables[n] - base.variables[n]).max() / np.ptp(v))
                    for n, v in s.variables.items())
        if bound is not None:
            assert worst < bound, worst
        else:                   # without the warm-up the same 3 steps move it much further
            assert worst > 2 * kept_worst, (worst, kept_worst)
        kept_worst = worst


def test_fast_base_follows_moving_features_between_kept_steps():
    """A blob moving 3 cells between kept steps: the default base (auto) follows it with the
    motion-compensated blend and lands far closer to the truth at the in-between
    times than linear interpolation in time (the ParaView path)."""
    kept = 2.0 * np.arange(5)
    s = moving_blob(kept)
    between = list(kept[:-1] + 1.0)
    truth = moving_blob(between)
    scores = {}
    for base_time in ("linear", "auto"):
        tm = api.fit(s, "fast", steps=0, device="cpu", model_overrides={"base_time": base_time})
        scores[base_time] = evaluate(api.predict(tm, dims=s.dims, times=between),
                                     truth)["psnr_mean"]
        if base_time == "auto":
            assert float(tm.model.base.flow_mix.min()) > 0.5, tm.model.base.flow_mix
    assert scores["auto"] > scores["linear"] + 6, scores
@pytest.mark.parametrize("base_time", ["linear", "cubic"])
def test_spline_base_in_time_is_linear_or_cubic(base_time):
    """Before training the fast model passes through the kept steps and, between them,
    follows the chosen curve in time at every point (physical units)."""
    times = 1.0 + 0.5 * np.arange(7)
    s = _series_in_time(lambda t: np.sin(1.3 * t) + 0.2 * t ** 2, times)
    tm = api.fit(s, "fast", steps=0, device="cpu", model_overrides={"base_time": base_time})
    query = [times[0], 1.1, 2.3, 3.9, times[-1]]
    out = api.predict(tm, dims=s.dims, times=query).variables["a"].astype(np.float64)
    data = s.variables["a"].astype(np.float64)
    lin = np.stack([np.interp(query, times, data[:, 0, 0, i]) for i in range(6)], 1)
    cub = CubicSpline(times, data[:, 0, 0, :], bc_type="natural")(query)
    mix = {"linear": 0.0, "cubic": 1.0}[base_time]
    np.testing.assert_allclose(out[:, 0, 0, :], lin + mix * (cub - lin), atol=2e-5)


def test_a_model_file_written_before_the_spline_base_had_its_own_module_still_loads():
    """tests/data/fast_v3.stsr was written by the main of 2026-11-25 (format 3: the base was a
    SpaceTimeGrid); its predictions then are in fast_v3_expected.npz."""
    data = os.path.join(os.path.dirname(__file__), "data")
    tm = api.load_model(os.path.join(data, "fast_v3.stsr"), device="cpu")
    out = api.predict(tm, scale=2, time_scale=2)
    expected = np.load(os.path.join(data, "fast_v3_expected.npz"))
    np.testing.assert_allclose(out.times, expected["times"])
    for name in out.variables:
        np.testing.assert_allclose(out.variables[name], expected[name], rtol=1e-6,
                                   atol=1e-6 * float(np.ptp(expected[name])))
