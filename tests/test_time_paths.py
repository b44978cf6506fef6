"""Between kept steps (issue 25): paths that bend, values cubic along them, the choice made on
held-out steps coarsened in space as in time, and the error estimate every fit now has."""
import os

import numpy as np
import pytest
import torch

from stsr_core import api
from stsr_core.metrics import psnr
from stsr_core.model import time_select
from stsr_core.model.paths import accelerations, end_weights, slope_weights
from stsr_core.series import VolumeSeries
from test_model import moving_blob

FEW_FLOW_STEPS = {"flow_iters": 60}


def circling_blob(times, n=24, radius=6.0, omega=np.pi / 16, every=1.0):
    """A Gaussian blob (and a variable tied to it) whose centre turns on a circle of
    ``radius`` cells by ``omega`` radians per unit time, on n x n x 6 points ``every`` cells
    apart (0.5: the same field at twice the resolution): kept every 4 steps, it turns 45
    degrees between kept steps, so a straight path per interval cuts the arc's corner."""
    steps = round(1 / every)
    x = (np.arange((n - 1) * steps + 1) * every)[None, None, None, :]
    y = x.reshape(1, 1, -1, 1)
    z = (np.arange(5 * steps + 1) * every)[None, :, None, None]
    t = np.asarray(times, dtype=np.float64)[:, None, None, None]
    cx = n / 2 - 0.5 + radius * np.cos(omega * t)
    cy = n / 2 - 0.5 + radius * np.sin(omega * t)
    blob = np.exp(-((x - cx) ** 2 + (y - cy) ** 2 + (z - 2.5) ** 2) / 6.0)
    return VolumeSeries(times=np.asarray(times, dtype=np.float64),
                        variables={"density": blob.astype(np.float32),
                                   "heat": (2 * blob ** 2 + 0.1).astype(np.float32)},
                        spacing=(every, every, every))


def between_psnr(tm, truth, name="density", k=4):
    pred = api.predict(tm, times=list(truth.times))
    return float(np.mean([psnr(pred.variables[name][t], truth.variables[name][t])
                          for t in range(truth.n_times) if t % k]))


def test_bent_paths_beat_straight_ones_for_a_blob_moving_on_a_circle():
    """Same displacements, paths straight or bent: between the kept steps the bent path
    follows the arc (measured: 51.5 dB against 36.5 dB)."""
    kept = circling_blob(np.arange(0, 25, 4.0))
    truth = circling_blob(np.arange(0, 25, 1.0))
    tm = api.fit(kept, device="cpu", model_overrides={"base_time": "flow", **FEW_FLOW_STEPS})
    base = tm.model.base
    base.path_bend.fill_(0.0)
    straight = between_psnr(tm, truth)
    base.path_bend.fill_(1.0)
    tm.plan = None
    bent = between_psnr(tm, truth)
    assert bent > straight + 8.0, (bent, straight)


def test_the_slope_along_the_path_and_the_cubic_weights_are_exact_for_a_parabola():
    # three-point slopes: exact for a quadratic in time, at any step, uneven spacing too
    times = [0.0, 0.5, 1.7, 2.0, 3.5]
    f = lambda t: 2.0 * t * t - 3.0 * t + 1.0                    # noqa: E731
    for k in range(len(times)):
        steps, wts = slope_weights(times, k)
        slope = sum(wt * f(times[i]) for i, wt in zip(steps, wts))
        assert abs(slope - (4.0 * times[k] - 3.0)) < 1e-9, (k, slope)
    # the end weights give linear at share 0 and the Hermite cubic at share 1
    a, b, da, db, h, w = 1.0, 3.0, -2.0, 5.0, 0.8, 0.3
    alpha, g0, beta, g1 = end_weights(w, h, torch.tensor([0.0, 1.0]))
    lin = alpha[0] * a + beta[0] * b + g0[0] * da + g1[0] * db
    cub = alpha[1] * a + beta[1] * b + g0[1] * da + g1[1] * db
    assert abs(float(lin) - ((1 - w) * a + w * b)) < 1e-6
    h00, h10 = 2 * w ** 3 - 3 * w ** 2 + 1, w ** 3 - 2 * w ** 2 + w
    h01, h11 = -2 * w ** 3 + 3 * w ** 2, w ** 3 - w ** 2
    assert abs(float(cub) - (h00 * a + h10 * h * da + h01 * b + h11 * h * db)) < 1e-6


def test_accelerations_are_the_change_of_displacement_between_intervals():
    flow = torch.stack([torch.full((3, 2, 2, 2), float(v)) for v in (1.0, 2.0, 3.0, 5.0)])
    acc = accelerations(flow, [0.0, 1.0, 2.0, 3.0, 4.0])
    assert [float(a[0, 0, 0, 0]) for a in acc] == [1.0, 1.0, 1.5, 2.0]
    assert float(accelerations(flow[:1], [0.0, 1.0]).abs().max()) == 0.0   # one interval


def test_the_held_out_steps_are_never_among_the_steps_they_are_predicted_from():
    for n in range(2, 12):
        for chain in time_select.chains(n):
            assert len(chain) >= 2 and all(b - a == 2 for a, b in zip(chain, chain[1:]))
            held = [c + 1 for c in chain[:-1]]
            assert not set(held) & set(chain)
            assert all(0 < h < n for h in held)
    # behaviour, not only the bookkeeping: on steps of independent noise, a prediction that
    # saw its target would score it exactly; predicted from the other steps it can do no
    # better than guessing the mean (an error of the target's own variance)
    rng = np.random.default_rng(0)
    values = rng.standard_normal((7, 10, 10, 10)).astype(np.float32)
    noise = VolumeSeries(times=np.arange(7.0), variables={"a": values})
    tm = api.fit(noise, device="cpu", model_overrides=FEW_FLOW_STEPS)
    held_db = tm.model.base.selection["held_out_db"]
    stats = tm.info.stats["a"]
    half = time_select.half_series(torch.from_numpy(
        (values[None] - stats.lo) / stats.half_range - 1.0))[0]            # normalised
    guess_db = 20 * np.log10(float(half.max() - half.min())) - \
        10 * np.log10(float(half[1:-1].var(dim=(1, 2, 3)).mean()))
    assert max(max(v) for v in held_db.values()) < guess_db + 0.5, (held_db, guess_db)


def still_waves(times, n=16):
    """Standing waves whose amplitude swings smoothly in time: nothing travels, and the
    natural cubic in time beats any motion."""
    g = np.linspace(0, 2 * np.pi, n)
    z, y, x = np.meshgrid(g[:8], g, g, indexing="ij")
    t = np.asarray(times, dtype=np.float64)[:, None, None, None]
    a = np.sin(x) * np.cos(y) * np.cos(0.35 * t)
    b = np.cos(2 * x + z) * np.sin(0.3 * t + 0.5)
    return VolumeSeries(times=np.asarray(times, dtype=np.float64),
                        variables={"a": a.astype(np.float32), "b": b.astype(np.float32)})


def test_the_choice_keeps_still_fields_still_and_moves_travelling_ones():
    still = api.fit(still_waves(np.arange(0, 25, 4.0)), device="cpu",
                    model_overrides=FEW_FLOW_STEPS).model.base
    assert still.selection["common"] == "still", still.selection
    assert float(still.flow_mix.max()) == 0.0 and float(still.time_mix.min()) > 0.5
    moving = api.fit(moving_blob(2.0 * np.arange(6)), device="cpu",
                     model_overrides=FEW_FLOW_STEPS).model.base
    assert moving.selection["common"] == "moving", moving.selection
    assert float(moving.flow_mix.min()) == 1.0


@pytest.mark.parametrize("settings", [dict(bend=0.0, cubic=0.0), dict(bend=1.0, cubic=0.0),
                                      dict(bend=1.0, cubic=1.0)])
def test_whole_grid_evaluation_matches_point_by_point_on_bent_and_cubic_paths(settings):
    """As for straight paths (test_base_grid.py): the whole-grid path looks the ends up on a
    grid finer than the data, the point-by-point path in the spline itself."""
    from stsr_core.infer import predict_grid
    s = circling_blob(np.arange(0, 25, 4.0), n=20)
    tm = api.fit(s, device="cpu", model_overrides={"base_time": "flow", **FEW_FLOW_STEPS})
    base = tm.model.base
    base.path_bend.fill_(settings["bend"])
    base.path_mix.fill_(settings["cubic"])
    base._path_slopes = {}
    g = api.output_grid(tm.info.grid, scale=2)
    for t in (4.0, 5.0, 6.5, 22.0):
        whole = api.predict_timestep(tm, t, g)
        norm = predict_grid(tm.model, tm.info.layout, tm.info.normalised_time(t), g,
                            tm.info.grid)
        for i, (n, v) in enumerate(s.variables.items()):
            err = float(np.abs(whole[n] - tm.info.stats[n].denormalise(norm[i])).max()
                        / np.ptp(v))
            assert err < (1e-4 if t % 4 == 0 else 1e-2), (t, n, err)


def estimate_scores(tm, fine):
    """Per group (kept, between): coverage, mean estimate / mean |error|, correlation, over
    every variable's points; and the prediction's values."""
    pred = api.predict(tm, dims=fine.dims, times=list(fine.times), error=True)
    out = {}
    for which in ("kept", "between"):
        steps = [t for t in range(fine.n_times) if (t % 4 == 0) == (which == "kept")]
        err = np.concatenate([np.abs(pred.variables[n][t] - fine.variables[n][t]).ravel()
                              for n in fine.variables for t in steps])
        est = np.concatenate([pred.variables[n + "_error"][t].ravel()
                              for n in fine.variables for t in steps])
        out[which] = (float(np.mean(err <= est)), float(est.mean() / err.mean()),
                      float(np.corrcoef(est, err)[0, 1]))
    return out, pred


def test_the_error_estimate_covers_about_nine_in_ten_points_of_an_analytic_field():
    """Made for 90 % of points below it, calibrated one and two levels down and carried to
    the data's level (issue 30; error_estimate.py): on a smooth travelling field (the same
    field at twice the resolution as the truth) it covers 0.95 of the kept steps' points and
    0.94 between them, at 1.6 and 1.7 times the mean error (one level down alone: 0.99,
    8-11 times), and follows the error (correlation 0.55 and 0.45)."""
    kept = circling_blob(np.arange(0, 25, 4.0), n=20)
    fine = circling_blob(np.arange(0, 25, 1.0), n=20, every=0.5)
    tm = api.fit(kept, device="cpu", model_overrides=FEW_FLOW_STEPS)
    assert api.has_error_estimate(tm)
    scores, _ = estimate_scores(tm, fine)
    for which, (cover, sharp, corr) in scores.items():
        assert 0.85 <= cover <= 0.975, (which, cover)
        assert sharp < 4 and corr > 0.25, (which, sharp, corr)


def test_a_model_file_written_before_paths_could_bend_loads_and_predicts_as_before():
    """tests/data/fast_v4.stsr was written by main at 14c49ef (format 4, base_time auto,
    straight paths, no error estimate); its predictions then are in fast_v4_expected.npz."""
    data = os.path.join(os.path.dirname(__file__), "data")
    tm = api.load_model(os.path.join(data, "fast_v4.stsr"), device="cpu")
    assert not api.has_error_estimate(tm)
    assert float(tm.model.base.path_bend) == 0.0
    expected = np.load(os.path.join(data, "fast_v4_expected.npz"))
    out = api.predict(tm, scale=1.5, times=list(expected["times"]))
    for name in out.variables:
        np.testing.assert_allclose(out.variables[name], expected[name], rtol=1e-6,
                                   atol=1e-6 * float(np.ptp(expected[name])))


def churning_fields(times, n=16, seed=1, memory=1.5):
    """Smooth random fields (12 Fourier modes, two variables) whose amplitudes wander in time
    with a memory of ``memory`` steps: kept every 4 steps, each kept step is nearly unrelated
    to the next and nothing travels, so no motion can be followed between them."""
    rng = np.random.default_rng(seed)
    g = np.arange(n) * 2 * np.pi / n
    z, y, x = np.meshgrid(g[:8], g, g, indexing="ij")
    modes = [(rng.integers(1, 4, 3), rng.uniform(0, 2 * np.pi)) for _ in range(12)]
    span = np.arange(int(max(times)) + 21) - 10.0
    white = rng.standard_normal((len(modes), 2, len(span)))
    out = {"a": [], "b": []}
    for t in times:
        kernel = np.exp(-0.5 * ((span - t) / memory) ** 2)
        amp = white @ (kernel / np.sqrt((kernel ** 2).sum()))                  # [modes, 2]
        for v, name in enumerate(out):
            out[name].append(sum(amp[m, v] * np.cos(k[0] * x + k[1] * y + k[2] * z + phase)
                                 for m, (k, phase) in enumerate(modes)))
    return VolumeSeries(times=np.asarray(times, dtype=np.float64),
                        variables={k: np.asarray(v, np.float32) for k, v in out.items()})


def between_against_linear(truth, k=4):
    """Per variable the default's in-between PSNR and linear in time's (on the kept grid),
    fitted on every ``k``-th step of ``truth``."""
    kept = VolumeSeries(times=truth.times[::k],
                        variables={n: v[::k].copy() for n, v in truth.variables.items()})
    tm = api.fit(kept, device="cpu", model_overrides=FEW_FLOW_STEPS)
    pred = api.predict(tm, times=list(truth.times))
    out = {}
    for n, full in truth.variables.items():
        got, lin = [], []
        for t in range(truth.n_times):
            j, w = divmod(t, k)
            if w:
                w /= k
                lin.append(psnr((1 - w) * full[j * k] + w * full[(j + 1) * k], full[t]))
                got.append(psnr(pred.variables[n][t], full[t]))
        out[n] = (float(np.mean(got)), float(np.mean(lin)))
    return tm, out


def test_between_steps_that_no_motion_explains_are_no_worse_than_linear_in_time():
    """Issue 30: where nothing travels the paths must not win the choice by default. On
    churning fields the half series' held-out steps rated the paths 0.7-0.8 dB better,
    and the paths scored 7.8 dB below linear in time between the real steps (measured before
    the carried check); the motion fitted at the real gap does not carry a step onto the
    next one better than the same motion reversed, so the still family is kept."""
    tm, scores = between_against_linear(churning_fields(np.arange(0, 25.0)))
    assert tm.model.base.selection["common"] == "still", tm.model.base.selection
    for name, (got, linear) in scores.items():
        assert got > linear - 0.05, (name, got, linear, tm.model.base.selection)


def test_a_travelling_blob_still_gets_the_paths_and_beats_linear_in_time():
    tm, scores = between_against_linear(moving_blob(np.arange(0, 21.0), speed=0.75))
    base = tm.model.base
    assert base.selection["common"] == "moving" and float(base.flow_mix.min()) == 1.0, \
        base.selection
    for name, (got, linear) in scores.items():
        assert got > linear + 6.0, (name, got, linear)
