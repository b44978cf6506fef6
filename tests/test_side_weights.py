"""The prior weighing the two sides between kept steps (stsr_core/model/side_weights.py):
shipped inside the package, a no-op when its network says nothing, kept in the model file,
and trained by a script of this repository."""
import importlib
import json
import os
import subprocess
import sys
from typing import Callable, List

import numpy as np
import pytest
import torch
from torch import nn

from stsr_core import api
from stsr_core.config import model_config_from_dict
from stsr_core.model import side_weights, space_prior, time_refine
from stsr_core.model.side_weights import SideWeights, load_weights
from stsr_core.model.spline_base import SplineBase
from test_model import moving_blob

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PRIOR = {"side_net": "prior", "base_time": "flow", "flow_iters": 30}


def load_offline(module: str, extra: str = "") -> str:
    """What ``stsr_core.model.<module>.load_weights()`` prints (its parameter count, then
    ``extra``) in a Python whose sockets all fail: loading must not reach for any
    download."""
    code = ("import socket\n"
            "def refuse(*a, **k): raise OSError('no network in this test')\n"
            "socket.socket.connect = refuse; socket.create_connection = refuse\n"
            "socket.getaddrinfo = refuse\n"
            f"from stsr_core.model.{module} import load_weights\n"
            "net = load_weights()\n"
            f"print(sum(p.numel() for p in net.parameters()){', ' + extra if extra else ''})\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout


def shipped_provenance(module: str, max_bytes: int) -> dict:
    """The provenance beside ``stsr_core.model.<module>``'s shipped weights, checked: the
    weights are under ``max_bytes`` and were trained by bench/train_<module>.py."""
    path = importlib.import_module(f"stsr_core.model.{module}").WEIGHTS_PATH
    assert os.path.getsize(path) < max_bytes
    with open(os.path.splitext(path)[0] + ".json") as fh:
        prov = json.load(fh)
    assert f"bench/train_{module}.py" in prov["what"]
    return prov


def test_the_shipped_weights_are_small_and_load_with_the_network_cut_off():
    shipped_provenance("side_weights", 100_000)
    n_params, stride = map(int, load_offline("side_weights", "net.stride").split())
    assert 0 < n_params < 10_000 and stride >= 1


def moving_base(bend: float, cubic: float) -> SplineBase:
    """A 17^3 base over four kept steps with random values and displacements."""
    torch.manual_seed(0)
    base = SplineBase((17, 15, 13), 3, [-1.0, -0.3, 0.4, 1.0], base_time="flow",
                      trainable=False)
    with torch.no_grad():
        base.coef.normal_()
        base.flow.normal_(0.0, 0.05)
        base.flow_mix.fill_(1.0)
        base.path_bend.fill_(bend)
        base.path_mix.copy_(torch.tensor([0.0, cubic, 1.0]))
    return base


def check_a_silent_network_gives_the_base(bend: float, cubic: float,
                                          silent: Callable[[int], nn.Module]) -> None:
    """A network between the sides made by ``silent(stride)`` (outputs 0) leaves the base's
    values as they are without it, paths straight or bent, with or without a cubic share."""
    base = moving_base(bend, cubic)
    axes = [torch.linspace(-1.0, 1.0, n) for n in (33, 29, 25)]
    plain = base.plan_grid(axes)
    times = (-0.8, -0.5, 0.05, 0.7)
    want = [base.evaluate_grid(plain, t).clone() for t in times]
    for stride in (1, 2):
        base.side_weights = silent(stride).requires_grad_(False)
        plan = base.plan_grid(axes)
        for t, w in zip(times, want):
            got = base.evaluate_grid(plan, t)
            assert float((got - w).abs().max()) < 1e-5, (stride, t)


@pytest.mark.parametrize("bend, cubic", [(0.0, 0.0), (1.0, 0.5)])
def test_a_network_that_says_nothing_gives_the_blend_without_it(bend, cubic):
    check_a_silent_network_gives_the_base(
        bend, cubic, lambda stride: SideWeights(hidden=4, stride=stride))


def test_the_shipped_network_changes_the_blend_within_its_two_sides():
    base = moving_base(0.0, 0.0)
    base.path_mix.zero_()                     # linear along the path: a blend of the sides
    plan = base.plan_grid([torch.linspace(-1.0, 1.0, n) for n in base.dims])
    t = -0.5
    j, w = base._slot(t)
    ends = base._end_values_at(plan, j, w)
    today = base.evaluate_grid(plan, t).clone()
    base.side_weights = load_weights()
    got = base.evaluate_grid(base.plan_grid([torch.linspace(-1.0, 1.0, n)
                                             for n in base.dims]), t)
    assert float((got - today).abs().max()) > 1e-4          # it does weigh
    lo, hi = ends.amin(0), ends.amax(0)                     # never outside both sides
    assert bool(((got >= lo - 1e-5) & (got <= hi + 1e-5)).all())


def check_the_model_keeps_its_network(tmp_path, monkeypatch, overrides: dict,
                                      loader: str, other_loader: Callable) -> List[str]:
    """A model fitted with the network between the sides (``overrides``) predicts the same
    after save and load while the shipped weights' ``loader`` (stsr_core.model.fast's name
    for it) gives another network (``other_loader``): the model file keeps its own copy;
    and the network changes what it predicts. Returns the model's keys of the network."""
    s = moving_blob(2.0 * np.arange(4))
    path = str(tmp_path / "m.stsr")
    tm = api.fit(s, device="cpu", checkpoint_path=path, model_overrides=overrides)
    keys = [k for k in tm.model.state_dict() if "side_weights" in k]
    assert keys, "the network's weights belong in the model file"
    g = api.output_grid(tm.info.grid, scale=2)
    before = api.predict_timestep(tm, 2.5, g)
    monkeypatch.setattr(f"stsr_core.model.fast.{loader}", other_loader)
    back = api.load_model(path, device="cpu")
    after = api.predict_timestep(back, 2.5, g)
    for n in before:
        np.testing.assert_array_equal(before[n], after[n])
    off = api.predict_timestep(api.fit(s, device="cpu", model_overrides={
        **overrides, "side_net": "off"}), 2.5, g)
    assert any(float(np.abs(before[n] - off[n]).max()) > 0 for n in off)
    return keys


def test_a_model_with_the_prior_predicts_the_same_after_save_and_load(tmp_path, monkeypatch):
    other = SideWeights(hidden=load_weights().hidden, stride=load_weights().stride)
    torch.nn.init.normal_(other.outer.weight, 0.0, 5.0)
    check_the_model_keeps_its_network(tmp_path, monkeypatch, PRIOR, "load_weights",
                                      lambda: other)


def test_model_files_from_before_the_setting_load_without_the_network():
    cfg = model_config_from_dict({"kind": "fast", "network": False, "base_time": "flow"})
    assert cfg.side_net == "off"


def test_the_prior_refuses_a_base_that_does_not_move(tmp_path):
    s = moving_blob(2.0 * np.arange(3))
    with pytest.raises(Exception, match="side_net=prior weighs the motion-compensated sides"):
        api.fit(s, device="cpu", model_overrides={"side_net": "prior", "base_time": "cubic"})


@pytest.mark.slow
def test_the_training_script_runs_end_to_end_and_leaves_the_shipped_weights(tmp_path):
    with open(side_weights.WEIGHTS_PATH, "rb") as fh:
        shipped = fh.read()
    out = tmp_path / "w.pt"
    r = subprocess.run([sys.executable, "-m", "bench.train_side_weights",
                        "--train-seeds", "33", "--val-seeds", "13", "--steps", "5",
                        # enough Adam steps that the fits follow the carried fields: with 5
                        # the motion does not persist at the real gap, the choice keeps
                        # every variable still and nothing is left to train on
                        "--flow-iters", "30", "--out", str(out),
                        "--cache", str(tmp_path / "cache")],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    net = load_weights(str(out))
    assert any(float(p.abs().max()) > 0 for p in net.outer.parameters())  # it trained
    with open(tmp_path / "w.json") as fh:
        prov = json.load(fh)
    assert prov["train_seeds"] == "33" and "val" in prov["results"]
    with open(side_weights.WEIGHTS_PATH, "rb") as fh:
        assert fh.read() == shipped


def test_the_plugin_install_carries_the_shipped_networks_and_their_provenance(tmp_path):
    build, prefix = tmp_path / "build", tmp_path / "prefix"
    for cmd in (["cmake", "-S", ROOT, "-B", str(build), "-DBUILD_TESTING=OFF",
                 f"-DCMAKE_INSTALL_PREFIX={prefix}"], ["cmake", "--install", str(build)]):
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stdout + r.stderr
    for stem, shipped in (("side_weights_v1", side_weights.WEIGHTS_PATH),
                          ("space_prior_v1", space_prior.WEIGHTS_PATH),
                          ("time_refine_v1", time_refine.WEIGHTS_PATH)):
        found = sorted(p.name for p in prefix.rglob(stem + ".*"))
        assert found == [stem + ".json", stem + ".pt"], found
        installed = next(prefix.rglob(stem + ".pt"))
        assert installed.parent.parent.name == "model"
        assert installed.read_bytes() == open(shipped, "rb").read()


def test_a_piece_of_the_grid_weighs_its_sides_as_the_whole_grid_does():
    """MPI ranks and streamed pieces plan a box of the output grid; the weights come from
    the whole lattice, so a piece holds the whole grid's numbers there (some variables
    still, paths bent, a cubic share along them)."""
    base = moving_base(1.0, 0.5)
    with torch.no_grad():
        base.flow_mix.copy_(torch.tensor([1.0, 0.0, 1.0]))
        base.time_mix.fill_(0.5)
    base.side_weights = load_weights()
    axes = [torch.linspace(-1.0, 1.0, n) for n in (33, 29, 25)]
    whole = base.evaluate_grid(base.plan_grid(axes), -0.5).clone()
    piece = base.evaluate_grid(base.plan_grid(axes, box=(3, 20, 0, 28, 5, 14)), -0.5)
    assert float((piece - whole[:, 5:15, 0:29, 3:21]).abs().max()) < 1e-5
