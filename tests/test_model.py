"""The networks themselves: the paper's size, the model interface (heads, codes), each
encoding of the fast model learning tiny data, and the spline base."""
import numpy as np
import pytest
import torch

from stsr_core import api
from stsr_core.config import preset
from stsr_core.metrics import evaluate
from stsr_core.model import FieldSpec, build_model
from stsr_core.model.encodings import bspline_coefficients, bspline_sample
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


def test_spline_base_starts_at_the_data_and_is_linear_between_steps():
    """Before any step the fast model equals the kept data at the kept points and times
    (physical units) and, between two kept steps, the linear blend of the two."""
    s = smooth_series(nx=7, ny=6, nz=5, nt=3)
    tm = api.fit(s, "fast", steps=0, device="cpu")
    out = api.predict(tm, dims=s.dims, times=[s.times[0], 0.5 * (s.times[0] + s.times[1])])
    for n in s.variables:
        rng = np.ptp(s.variables[n])
        np.testing.assert_allclose(out.variables[n][0], s.variables[n][0], atol=1e-5 * rng)
        mid = 0.5 * (s.variables[n][0] + s.variables[n][1])
        np.testing.assert_allclose(out.variables[n][1], mid, atol=1e-5 * rng)
