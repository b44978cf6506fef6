"""fit / save / load / predict / blend with real training on tiny data."""
import os

import numpy as np
import pytest
import torch

from stsr_core import StsrError, VolumeSeries, api, modelfile
from stsr_core.grid import Grid
from stsr_core.metrics import psnr

torch.set_num_threads(1)


def smooth_series(nx=9, ny=8, nz=7, nt=5, const=False):
    x = np.linspace(0, 1, nx)[None, None, None, :]
    y = np.linspace(0, 1, ny)[None, None, :, None]
    z = np.linspace(0, 1, nz)[None, :, None, None]
    t = np.linspace(0, 1, nt)[:, None, None, None]
    a = 300 + 20 * np.sin(2 * x + t) * np.cos(1.5 * y) + 5 * z          # kelvin-like
    b = 1e-3 * (x + y * z - t)                                           # tiny values
    v = {"temperature": a, "rho": b}
    if const:
        v["flat"] = np.full_like(a * b, 7.0)
    return VolumeSeries(times=1.5 + 0.5 * np.arange(nt), variables=v, origin=(1, 2, 3),
                        spacing=(0.5, 0.25, 1.0))


# the fast preset with a network on top of its base (default: the base alone)
WITH_NETWORK = {"network": True}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The fast preset with its network on (the default is the base alone): training,
    checkpoints, resume and latent codes to blend."""
    s = smooth_series()
    path = str(tmp_path_factory.mktemp("m") / "model.stsr")
    tm = api.fit(s, "fast", steps=40, device="cpu", seed=1, checkpoint_path=path,
                 model_overrides={**WITH_NETWORK, "flow_iters": 30},
                 train_overrides={"batch_size": 2048})
    return s, tm, path


def test_fit_reproduces_input_in_physical_units(trained):
    s, tm, _ = trained
    out = api.predict(tm)
    assert out.dims == s.dims and np.allclose(out.times, s.times)
    assert out.origin == s.origin and out.spacing == s.spacing
    for n in s.variables:
        p = np.mean([psnr(out.variables[n][t], s.variables[n][t]) for t in range(s.n_times)])
        assert p > 28, (n, p)
    # physical units: the tiny-valued variable stays tiny, the kelvin one near 300
    assert abs(out.variables["rho"]).max() < 5e-3
    assert 250 < out.variables["temperature"].mean() < 350


def test_output_grid_follows_resample_to_image(trained):
    _, tm, _ = trained
    g = api.output_grid(tm.info.grid, scale=2)
    assert g.dims == (17, 15, 13) and g.origin == (1.0, 2.0, 3.0)
    assert np.allclose(g.spacing, (0.25, 0.125, 0.5))
    g = api.output_grid(tm.info.grid, dims=(5, 8, 4))
    assert np.allclose(g.spacing, (1.0, 0.25, 2.0)) and g.bounds == tm.info.grid.bounds
    with pytest.raises(StsrError, match="whole number of points"):
        api.output_grid(tm.info.grid, scale=1.3)
    with pytest.raises(StsrError, match="either"):
        api.output_grid(tm.info.grid, scale=2, dims=(3, 3, 3))


def test_output_times(trained):
    _, tm, _ = trained
    t = api.output_times(tm.info.times, time_scale=4)
    assert len(t) == 17 and t[0] == 1.5 and t[-1] == 3.5 and np.allclose(np.diff(t), 0.125)
    assert list(api.output_times(tm.info.times, times=[2.0, 2.2])) == [2.0, 2.2]
    with pytest.raises(StsrError, match="integer"):
        api.output_times(tm.info.times, time_scale=0)


def test_upsampled_prediction_shape_and_cache_free_chunking(trained):
    _, tm, _ = trained
    a = api.predict(tm, scale=2, time_scale=2)
    b = api.predict(tm, scale=2, time_scale=2, chunk=97)       # tiny chunks: same numbers
    assert a.dims == (17, 15, 13) and a.n_times == 9
    for n in a.variables:
        np.testing.assert_allclose(a.variables[n], b.variables[n], rtol=1e-5, atol=1e-6)


def test_save_load_roundtrip(trained, tmp_path):
    _, tm, path = trained
    assert os.path.exists(path)
    p2 = str(tmp_path / "copy.stsr")
    api.save_model(tm, p2)
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".tmp-")]
    tm2 = api.load_model(p2, device="cpu")
    g = Grid((5, 5, 5), (1, 2, 3), (1, 0.4, 1.5))
    a = api.predict_timestep(tm, 2.25, g)
    b = api.predict_timestep(tm2, 2.25, g)
    for n in a:
        np.testing.assert_array_equal(a[n], b[n])
    assert tm2.info.variables == tm.info.variables and tm2.info.times == tm.info.times


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_weights_holding_nan_or_inf_are_refused(trained, tmp_path, dtype, bad):
    """A model file whose weights hold NaN/Inf (a checksum made over them) is refused by
    name, whatever their floating-point type (numpy's check for float32/64, torch's else)."""
    _, _, path = trained
    payload = torch.load(path, map_location="cpu", weights_only=True)
    name = max(payload["state_dict"], key=lambda k: payload["state_dict"][k].numel())
    w = payload["state_dict"][name].to(dtype).clone()
    w.view(-1)[w.numel() // 2] = bad
    payload["state_dict"][name] = w
    payload["checksum"] = modelfile.checksum(payload)
    out = str(tmp_path / "bad.stsr")
    torch.save(payload, out)
    with pytest.raises(StsrError, match="hold NaN/Inf values"):
        modelfile.read(out)
    payload["state_dict"][name] = w.nan_to_num(0.0, 0.0, 0.0)
    payload["checksum"] = modelfile.checksum(payload)
    torch.save(payload, out)
    assert modelfile.read(out)["state_dict"][name].dtype == dtype


def test_damaged_and_foreign_model_files(trained, tmp_path):
    _, tm, path = trained
    cut = tmp_path / "cut.stsr"
    cut.write_bytes(open(path, "rb").read()[:2000])
    with pytest.raises(StsrError, match="is damaged or not an stsr model file"):
        api.load_model(str(cut))
    other = tmp_path / "other.stsr"
    torch.save({"hello": 1}, other)
    with pytest.raises(StsrError, match="not an stsr model file"):
        api.load_model(str(other))
    payload = modelfile.read(path)
    payload["version"] = 99
    torch.save(payload, tmp_path / "v99.stsr")
    with pytest.raises(StsrError, match="format version 99"):
        api.load_model(str(tmp_path / "v99.stsr"))
    with pytest.raises(StsrError, match="does not exist"):
        api.load_model(str(tmp_path / "missing.stsr"))
    with pytest.raises(StsrError, match="folder"):
        api.save_model(tm, str(tmp_path / "no" / "m.stsr"))


def test_model_must_match_data(trained):
    s, tm, _ = trained
    api.check_compatible(tm, s)
    with pytest.raises(StsrError, match="dimensions"):
        api.check_compatible(tm, s.subsample(space=2))
    with pytest.raises(StsrError, match="arrays"):
        api.check_compatible(tm, s.select(["rho"]))
    with pytest.raises(StsrError, match="times"):
        api.check_compatible(tm, s.subsample(time=2))


def test_resume_continues_and_cancel_stops(trained, tmp_path):
    s, tm, path = trained
    tm2 = api.load_model(path, device="cpu")
    assert tm2.optimizer_state is not None
    steps_before = tm2.info.history["steps"]
    seen = []
    tm3 = api.fit(s, resume=tm2, steps=20, device="cpu",
                  callback=lambda p: seen.append(p.step) or (p.step < steps_before + 5),
                  train_overrides={"log_every": 1})
    assert tm3.info.history["stopped"] == "cancelled"
    assert tm3.info.history["steps"] == steps_before + 5
    assert seen[0] == steps_before + 1


def test_constant_variable_and_single_timestep():
    s = smooth_series(nt=1, const=True)
    tm = api.fit(s, "fast", steps=5, device="cpu")
    out = api.predict(tm)
    np.testing.assert_allclose(out.variables["flat"], 7.0, rtol=1e-5)   # no division by zero
    with pytest.raises(StsrError, match="single timestep"):
        api.output_times(tm.info.times, time_scale=2)
    with pytest.raises(StsrError, match="single timestep"):
        api.output_times(tm.info.times, times=[0.3])


def test_nan_input_is_refused():
    s = smooth_series()
    s.variables["rho"][2, 1, 3, 4] = np.nan
    with pytest.raises(StsrError, match=r"'rho'.*timestep 2.*i=4, j=3, k=1"):
        api.fit(s, "fast", steps=1, device="cpu")


def test_paper_preset_trains_with_eight_heads():
    s = smooth_series(nx=9, ny=9, nz=9, nt=3)
    tm = api.fit(s, "paper", steps=2, device="cpu", train_overrides={"batch_size": 64})
    assert tm.info.layout.n_heads == 8 and tm.model_config.kind == "stsr"
    out = api.predict(tm, scale=1)
    assert out.dims == (9, 9, 9)


def test_blend_endpoints_decode_the_two_variables(trained):
    s, tm, _ = trained
    out = api.blend(tm, "temperature", "rho", steps=3, t=2.0)
    direct = api.predict_timestep(tm, 2.0, s.grid)
    np.testing.assert_allclose(out.variables["blend"][0], direct["temperature"], rtol=1e-4)
    np.testing.assert_allclose(out.variables["blend"][-1], direct["rho"], rtol=1e-3, atol=1e-7)
    with pytest.raises(StsrError, match="no variable 'nope'"):
        api.blend(tm, "nope", "rho", 3, 2.0)


def test_unknown_device_and_missing_cuda():
    s = smooth_series(nt=2)
    with pytest.raises(StsrError, match="unknown device"):
        api.fit(s, "fast", steps=1, device="tpu")
    if not torch.cuda.is_available():
        with pytest.raises(StsrError, match="CUDA is not available"):
            api.fit(s, "fast", steps=1, device="cuda")


def test_a_model_file_with_a_flipped_byte_is_reported_damaged(tmp_path):
    """The checksum written with the model catches what the container's own checks let
    through: a changed weight."""
    s = smooth_series(nx=12, ny=10, nz=8, nt=3)
    path = tmp_path / "m.stsr"
    api.save_model(api.fit(s, device="cpu", model_overrides={"flow_iters": 5}), str(path))
    payload = modelfile.read(str(path))
    assert payload["checksum"] == modelfile.checksum(payload)
    raw = bytearray(path.read_bytes())
    coef = payload["state_dict"]["base.coef"].numpy().tobytes()
    start = bytes(raw).find(coef[:64])
    assert start > 0                        # the weights are stored as they are
    raw[start + len(coef) // 2] ^= 0xFF     # one byte in the middle of the coefficients
    bad = tmp_path / "bad.stsr"
    bad.write_bytes(bytes(raw))
    with pytest.raises(StsrError, match="is damaged: its contents do not match"):
        api.load_model(str(bad))
