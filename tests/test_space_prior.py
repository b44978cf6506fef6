"""The spatial prior (stsr_core/model/space_prior.py, space_residual.py, space_tune.py):
shipped inside the package and loaded without a network, a correction that leaves the
data's points alone and reaches the steps in between through the paths, kept in the model
file, turned off per variable where one level down it does not help, and trained by a
script of this repository."""
import contextlib
import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from stsr_core import api, cli
from stsr_core.config import model_config_from_dict
from stsr_core.errors import StsrError
from stsr_core.model import space_prior
from stsr_core.model.space_prior import PriorNet, load_weights, residual_values
from stsr_core.model.space_residual import SpaceResidual
from stsr_core.model.spline_base import SplineBase
from stsr_core.series import VolumeSeries
from test_model import moving_blob

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUICK = {"base_time": "linear", "space_tune_s": 3.0}


def random_net(seed: int = 0) -> PriorNet:
    torch.manual_seed(seed)
    net = PriorNet(stem=4, width=8, blocks=2)
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0.0, 0.2)
    return net.eval()


def test_the_shipped_weights_are_small_and_load_with_the_network_cut_off():
    from test_side_weights import load_offline, shipped_provenance
    prov = shipped_provenance("space_prior", 5_000_001)
    from examples.data.space_families import KINDS
    assert set(prov["kinds"]) == set(KINDS)          # the kinds it was trained on, listed
    assert 1000 < int(load_offline("space_prior")) < 1_250_000


def test_the_correction_is_zero_at_the_data_points_and_slabs_give_the_whole_pass():
    net = random_net()
    field = torch.randn(2, 100, 9, 11)         # deep: goes through in z-slabs with a halo
    fine = residual_values(net, field)                           # [2, 199, 17, 21]
    assert fine.shape == (2, 199, 17, 21)
    assert float(fine[:, ::2, ::2, ::2].abs().max()) == 0.0
    assert float(fine.abs().max()) > 0.0
    x, _, half = space_prior.normalise(field)
    with torch.no_grad():
        whole = net(x[:, None]) * half.view(-1, 1, 1, 1, 1)
    whole = whole * space_prior.valid_mask(field.shape[1:])     # points past the last: none
    np.testing.assert_allclose(space_prior.gather_fine(fine).numpy(), whole.numpy(),
                               rtol=1e-5, atol=1e-5)


def moving_base(uses) -> SplineBase:
    """A 13 x 11 x 9 base over three kept steps, moving, with the random prior on the
    variables whose ``uses`` code is not 0."""
    torch.manual_seed(1)
    base = SplineBase((13, 11, 9), len(uses), [-1.0, 0.0, 1.0], base_time="flow",
                      trainable=False)
    with torch.no_grad():
        base.coef.normal_()
        base.flow.normal_(0.0, 0.05)
        base.flow_mix.copy_(torch.tensor([1.0, 0.0, 1.0][:len(uses)]))
    base.space = SpaceResidual(len(uses))
    base.space._shipped.append(random_net())
    base.space.use.copy_(torch.tensor(uses))
    base.space.shipped_sha.copy_(torch.frombuffer(bytearray(space_prior.weights_digest()),
                                                  dtype=torch.uint8))
    return base


def test_a_kept_step_keeps_its_data_and_every_path_adds_the_same_correction():
    base = moving_base([1, 1, 0])
    data = space_prior.node_values(base.coef[1].detach())          # the kept step's data
    own = base.plan_grid([torch.linspace(-1.0, 1.0, n) for n in base.dims])
    np.testing.assert_allclose(base.evaluate_grid(own, 0.0).numpy(), data.numpy(),
                               atol=1e-4)              # float32 rounding of the prefilter
    axes = [torch.linspace(-1.0, 1.0, 2 * (n - 1) + 1) for n in base.dims]
    with_prior = base.evaluate_grid(base.plan_grid(axes), 0.0).clone()
    space, base.space = base.space, None
    plain = base.evaluate_grid(base.plan_grid(axes), 0.0).clone()
    between_plain = base.evaluate_grid(base.plan_grid(axes), 0.4).clone()
    base.space = space
    diff = (with_prior - plain).abs().flatten(1).amax(1)
    assert float(diff[0]) > 1e-3 and float(diff[1]) > 1e-3 and float(diff[2]) == 0.0
    # between kept steps: the moving variable through the warps, the still one directly
    between = base.evaluate_grid(base.plan_grid(axes), 0.4)
    change = (between - between_plain).abs().flatten(1).amax(1)
    assert float(change[0]) > 1e-3 and float(change[1]) > 1e-3 and float(change[2]) == 0.0
    # the point path (any grid) gives the grid's numbers
    zz, yy, xx = torch.meshgrid(axes[2], axes[1], axes[0], indexing="ij")
    pts = torch.stack([xx, yy, zz, torch.zeros_like(xx)], -1).reshape(-1, 4)
    with torch.no_grad():
        points = base(pts).t().reshape(with_prior.shape)
    np.testing.assert_allclose(points.numpy(), with_prior.numpy(),
                               atol=5e-5 * float(with_prior.abs().max()))   # float32 lookups
    # a piece of the grid (an MPI rank's, a streamed one) holds the whole grid's numbers
    whole = base.evaluate_grid(base.plan_grid(axes), 0.4).clone()
    piece = base.evaluate_grid(base.plan_grid(axes, box=(3, 20, 0, 20, 5, 14)), 0.4)
    assert float((piece - whole[:, 5:15, 0:21, 3:21]).abs().max()) < \
        1e-5 * float(whole.abs().max())                    # float32 rounding


@pytest.fixture(scope="module")
def slab_model():
    """test_slab_upscale's model (bent paths, a cubic share along them, the second variable
    still with a cubic share in time, the error estimate) with the random prior on both
    variables: the shipped network on the first, a "tuned" one on the second."""
    tm = api.fit(moving_blob(2.0 * np.arange(5)), device="cpu",
                 model_overrides={"flow_iters": 30})
    base = tm.model.base
    base.path_bend.fill_(1.0)
    base.path_mix.copy_(torch.tensor([0.6, 0.0]))
    base.flow_mix.copy_(torch.tensor([1.0, 0.0]))
    base.time_mix.copy_(torch.tensor([0.0, 0.5]))
    base.space = SpaceResidual(2)
    base.space._shipped.append(random_net(0))
    base.space.set_use([1, 2], random_net(1))
    return tm


@pytest.mark.parametrize("t, scale", [(2.0, 2), (2.5, 2), (4.7, 2), (2.0, 8), (4.7, 8)])
def test_a_slab_with_the_prior_holds_the_rows_of_the_whole_grid(slab_model, t, scale):
    """Kept and in-between steps, the output's points on the prior's lattice or between
    them, on windows of the warps' grid or not: every slab's values are the whole grid's
    rows, and the prior changes them."""
    from stsr_core import slabs
    base = slab_model.model.base
    g = api.output_grid(slab_model.info.grid, scale=scale)
    axes = slabs.output_axes(g, torch.device("cpu"))
    tn = slab_model.info.normalised_time(t)
    full = base.evaluate_grid(base.plan_grid(axes), tn).clone()
    space, base.space = base.space, None
    plain = base.evaluate_grid(base.plan_grid(axes), tn).clone()
    base.space = space
    assert float((full - plain).abs().flatten(1).amax(1).min()) > 1e-4
    for z0, z1 in ((0, 3), (4, 9), (10, g.dims[2] - 1)):
        plan = slabs.slab_plan(base, axes, (0, g.dims[0] - 1, 0, g.dims[1] - 1, z0, z1),
                               error=True)
        np.testing.assert_allclose(base.evaluate_grid(plan, tn), full[:, z0:z1 + 1],
                                   rtol=0, atol=1e-6)


def test_a_slabbed_upscale_with_the_prior_equals_the_whole_grid_one(slab_model, tmp_path,
                                                                     monkeypatch):
    """The same upscale in one slab and in slabs of 3 rows (the compiled kernels), and in
    one slab by torch alone: the same files' values; the memory plan counts the prior."""
    from stsr_core import slabs
    from stsr_core.io import read_series
    from stsr_core.model import kernels
    real = slabs.plan_memory
    seen = []

    def rows(n):
        def plan(*a, **k):
            m = real(*a, **k)
            seen.append(m.parts["spatial prior"])
            m.rows = min(m.rows, n)
            return m
        return plan
    for name, n, numba in (("whole.h5", 10 ** 6, True), ("slabs.h5", 3, True),
                           ("torch.h5", 10 ** 6, False)):
        monkeypatch.setattr(slabs, "plan_memory", rows(n))
        monkeypatch.setattr(kernels, "USE_NUMBA", numba and kernels.HAVE_NUMBA)
        slab_model.model.base.space.clear()
        api.upscale(slab_model, str(tmp_path / name), scale=2, time_scale=4)
    assert min(seen) >= 3 * 2 * 4 * 47 * 15 * 11    # three kept steps' lattices at least
    a = read_series(str(tmp_path / "whole.h5"))
    for other in ("slabs.h5", "torch.h5"):
        b = read_series(str(tmp_path / other))
        for n in a.variables:
            np.testing.assert_allclose(a.variables[n], b.variables[n], rtol=0,
                                       atol=2e-5 * float(np.abs(a.variables[n]).max()))


def front_series(n: int = 17, steps: int = 3) -> VolumeSeries:
    """A sharp front, white noise and a linear ramp (which the spline gets exactly)."""
    rng = np.random.default_rng(0)
    z, y, x = np.meshgrid(*[np.linspace(0, 1, n)] * 3, indexing="ij")
    t = np.arange(steps, dtype=np.float64)
    front = np.stack([np.tanh((x + 0.3 * y - 0.4 - 0.05 * k) / 0.02) for k in t])
    ramp = np.stack([x + 2 * y - z + k for k in t])
    noise = rng.standard_normal((steps, n, n, n))
    return VolumeSeries(times=t, variables={"front": front.astype(np.float32),
                                            "noise": noise.astype(np.float32),
                                            "ramp": ramp.astype(np.float32)},
                        origin=(0, 0, 0), spacing=(1, 1, 1))


def test_the_gate_keeps_a_network_only_where_it_gains_and_never_on_an_exact_field(tmp_path):
    path = str(tmp_path / "gate.stsr")
    tm = api.fit(front_series(), device="cpu", checkpoint_path=path,
                 model_overrides={**QUICK, "space_prior": "gate"})
    r = tm.info.history["space_prior"]
    names = tm.info.variables
    decision = dict(zip(names, r["decision"]))
    assert decision["ramp"] == "base", r       # the spline is exact: nothing to gain
    assert r["gain_db_shipped"][names.index("ramp")] <= 0.0
    for i, n in enumerate(names):             # each choice is the best score, by the margin
        gains = {"shipped": r["gain_db_shipped"][i], "tuned": r["gain_db_tuned"][i]}
        gains = {k: v for k, v in gains.items() if v is not None}
        if decision[n] == "base":
            assert all(g < r["margin_db"] for g in gains.values()), (n, r)
        else:
            assert gains[decision[n]] == max(gains.values()) >= r["margin_db"], (n, r)
    assert tm.model.base.space.use.tolist() == [
        ["base", "shipped", "tuned"].index(decision[n]) for n in names]
    # stsr info prints each decision and the scores behind it
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli.main(["info", path]) == 0
    text = out.getvalue()
    assert "space prior  gate" in text
    for n in names:
        line = next(ln for ln in text.splitlines() if ln.strip().startswith(n + " ")
                    and "dB ->" in ln)
        assert ("the spline alone" in line) == (decision[n] == "base"), line


def test_the_gate_turns_off_a_network_that_hurts(monkeypatch):
    """A network that only adds error (random weights as the shipped one, no time to
    fine-tune it): every variable keeps the spline alone."""
    monkeypatch.setattr(SpaceResidual, "shipped", lambda self: random_net())
    tm = api.fit(front_series(), device="cpu",
                 model_overrides={**QUICK, "space_prior": "gate", "space_tune_s": 0.0})
    r = tm.info.history["space_prior"]
    assert r["decision"] == ["base"] * 3, r
    names = tm.info.variables
    for n in ("front", "noise"):
        assert r["gain_db_shipped"][names.index(n)] < 0.0, r
    assert not tm.model.base.space.active()
    g = api.output_grid(tm.info.grid, scale=2)
    off = api.fit(front_series(), device="cpu", model_overrides={**QUICK})
    a, b = api.predict_timestep(tm, 1.0, g), api.predict_timestep(off, 1.0, g)
    for n in a:
        np.testing.assert_array_equal(a[n], b[n])


@pytest.mark.parametrize("mode", ["shipped", "tuned"])
def test_a_model_with_the_prior_predicts_the_same_after_save_and_load(mode, tmp_path):
    path = str(tmp_path / "m.stsr")
    tm = api.fit(front_series(), device="cpu", checkpoint_path=path,
                 model_overrides={**QUICK, "space_prior": mode})
    g = api.output_grid(tm.info.grid, scale=2)
    before = api.predict_timestep(tm, 0.5, g)
    keys = [k for k in tm.model.state_dict() if ".space.tuned." in k]
    used = bool((tm.model.base.space.use == 2).any())
    assert bool(keys) == used            # the fine-tuned weights only when used
    back = api.load_model(path, device="cpu")
    after = api.predict_timestep(back, 0.5, g)
    for n in before:
        np.testing.assert_array_equal(before[n], after[n])
    off = api.predict_timestep(api.fit(front_series(), device="cpu", model_overrides={
        **QUICK, "space_prior": "off"}), 1.0, g)
    on = api.predict_timestep(back, 1.0, g)
    assert float(np.abs(on["front"] - off["front"]).max()) > 0
    # a model made with other shipped weights says so instead of predicting something else
    if not used:
        back.model.base.space.shipped_sha.zero_()
        back.model.base.space.clear()
        with pytest.raises(StsrError, match="other shipped spatial prior weights"):
            api.predict_timestep(back, 1.0, g)


def test_model_files_made_before_the_prior_load_and_predict_as_before():
    """tests/data/fast_v4_select.stsr was written by main at 2e1fd8a (format 4, the select
    default, the error estimate); its predictions then are in fast_v4_select_expected.npz
    (tests/data: make_old.py's recipe in this test's commit message). Within 1e-5 of each
    array's range: main's compiled kernels (i29-core) sum in another order than 2e1fd8a did
    (main itself is 3e-7 of the range off in the values, 4e-6 in the error arrays)."""
    data = os.path.join(os.path.dirname(__file__), "data")
    tm = api.load_model(os.path.join(data, "fast_v4_select.stsr"), device="cpu")
    assert tm.model_config.space_prior == "off" and tm.model.base.space is None
    expected = np.load(os.path.join(data, "fast_v4_select_expected.npz"))
    out = api.predict(tm, scale=2, times=list(expected["times"]), error=True)
    assert set(out.variables) == set(expected.files) - {"times"}
    for name in out.variables:
        np.testing.assert_allclose(out.variables[name], expected[name], rtol=0,
                                   atol=1e-5 * float(np.ptp(expected[name])))
    assert model_config_from_dict({"kind": "fast", "network": False}).space_prior == "off"


def test_the_prior_refuses_a_network_on_top_and_the_learned_correction():
    s = moving_blob(2.0 * np.arange(3))
    with pytest.raises(Exception, match="space_prior=shipped corrects the base's kept steps"):
        api.fit(s, device="cpu", model_overrides={"space_prior": "shipped",
                                                  "network": True})
    with pytest.raises(Exception, match="set space_prior=off"):
        api.fit(s, "liif", device="cpu", model_overrides={"space_prior": "shipped"})


@pytest.mark.slow
def test_the_training_script_runs_end_to_end_on_tiny_data_and_resumes(tmp_path):
    with open(space_prior.WEIGHTS_PATH, "rb") as fh:
        shipped = fh.read()
    out = tmp_path / "w.pt"
    args = [sys.executable, "-m", "bench.train_space_prior", "--train-seeds", "0-3",
            "--val-seeds", "100000-100001", "--coarse", "9", "--batch", "2", "--stem", "4",
            "--width", "8", "--blocks", "1", "--val-every", "2", "--log-every", "1",
            "--threads", "1", "--out", str(out), "--cache", str(tmp_path / "cache")]
    r = subprocess.run(args + ["--steps", "3"], cwd=ROOT, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    net = load_weights(str(out))
    assert any(float(p.abs().max()) > 0 for p in net.head.parameters())    # it trained
    with open(tmp_path / "w.json") as fh:
        prov = json.load(fh)
    assert prov["train_seeds"] == "0-3" and prov["steps_done"] == 3
    assert prov["loss_curve"]["rows"] and "by_kind" in prov["results"]["val"]
    r = subprocess.run(args + ["--steps", "5"], cwd=ROOT, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0 and "resumed at step 3" in r.stdout, r.stdout + r.stderr
    with open(tmp_path / "w.json") as fh:
        assert json.load(fh)["steps_done"] == 5
    with open(space_prior.WEIGHTS_PATH, "rb") as fh:
        assert fh.read() == shipped
