"""Issue 30's time refinement network (stsr_core/model/time_refine.py): shipped inside the
package and loaded offline, the base itself when its network says nothing, kept in the
model file with its per-variable gate, turned off by the gate where it hurts, and trained by
a script of this repository."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from stsr_core import api
from stsr_core.config import model_config_from_dict
from stsr_core.model import time_refine
from stsr_core.model.time_refine import TimeRefine, load_weights
from stsr_core.model.time_select import half_chains, half_series
from test_model import moving_blob
from test_side_weights import (check_a_silent_network_gives_the_base,
                               check_the_model_keeps_its_network, load_offline, moving_base,
                               shipped_provenance)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REFINE_ALL = {"side_net": "refine_all", "base_time": "flow", "flow_iters": 30}


def test_the_shipped_weights_are_small_and_load_with_the_network_cut_off():
    assert "training_families" in shipped_provenance("time_refine", 5_000_000)["data"]
    n_params, stride = map(int, load_offline("time_refine", "net.stride").split())
    assert 0 < n_params < 10_000 and stride >= 1


@pytest.mark.parametrize("bend, cubic", [(0.0, 0.0), (1.0, 0.5)])
def test_a_network_that_says_nothing_gives_the_base(bend, cubic):
    check_a_silent_network_gives_the_base(
        bend, cubic, lambda stride: TimeRefine(hidden=4, stride=stride, n_vars=3))


def test_the_shipped_network_refines_and_a_piece_of_the_grid_holds_the_whole_grids_numbers():
    """MPI ranks and streamed slabs plan a box of the output grid: the weights and the
    correction come from the whole lattice (some variables still, paths bent, a cubic
    share), and a variable the gate turned off is the base there."""
    base = moving_base(1.0, 0.5)
    with torch.no_grad():
        base.flow_mix.copy_(torch.tensor([1.0, 0.0, 1.0]))
        base.time_mix.fill_(0.5)
    axes = [torch.linspace(-1.0, 1.0, n) for n in (33, 29, 25)]
    plain = base.evaluate_grid(base.plan_grid(axes), -0.5).clone()
    base.side_weights = load_weights(n_vars=3)
    whole = base.evaluate_grid(base.plan_grid(axes), -0.5).clone()
    assert float((whole[0] - plain[0]).abs().max()) > 1e-4          # it does refine
    piece = base.evaluate_grid(base.plan_grid(axes, box=(3, 20, 0, 28, 5, 14)), -0.5)
    assert float((piece - whole[:, 5:15, 0:29, 3:21]).abs().max()) < 1e-5
    base.side_weights.use = torch.tensor([0.0, 1.0, 1.0])            # gated off: the base
    gated = base.evaluate_grid(base.plan_grid(axes), -0.5)
    assert float((gated[0] - plain[0]).abs().max()) < 1e-5
    assert float((gated[2] - whole[2]).abs().max()) < 1e-6


def test_a_model_with_the_network_predicts_the_same_after_save_and_load(tmp_path, monkeypatch):
    other = TimeRefine(**load_weights().settings(), n_vars=2)
    torch.nn.init.normal_(other.outer.weight, 0.0, 5.0)
    keys = check_the_model_keeps_its_network(tmp_path, monkeypatch, REFINE_ALL, "load_refine",
                                             lambda n_vars: other)
    assert "base.side_weights.use" in keys, keys    # the gate's decision is the model's


def test_model_files_from_before_the_network_load_without_it(tmp_path):
    """A model saved without the setting (side_net off: the files written before it) loads
    with no network between steps and predicts as it did."""
    cfg = model_config_from_dict({"kind": "fast", "network": False, "base_time": "select"})
    assert cfg.side_net == "off"
    s = moving_blob(2.0 * np.arange(4))
    path = str(tmp_path / "old.stsr")
    tm = api.fit(s, device="cpu", checkpoint_path=path,
                 model_overrides={"base_time": "flow", "flow_iters": 30})
    g = api.output_grid(tm.info.grid, scale=2)
    back = api.load_model(path, device="cpu")
    assert back.model.base.side_weights is None
    before, after = api.predict_timestep(tm, 2.5, g), api.predict_timestep(back, 2.5, g)
    for n in before:
        np.testing.assert_array_equal(before[n], after[n])


def test_the_gate_turns_off_a_network_that_hurts_and_keeps_the_scores():
    """On the held-out steps of the half series of a moving blob, a network whose outputs
    are large and random does worse than the base: the gate turns it off everywhere."""
    s = moving_blob(2.0 * np.arange(5), nx=24)
    tm = api.fit(s, device="cpu", model_overrides={"base_time": "flow", "flow_iters": 30})
    base = tm.model.base
    data = torch.stack([torch.from_numpy(tm.info.stats[n].normalise(s.variables[n]))
                        for n in tm.info.variables]).float()
    half = half_series(data)
    built = list(half_chains(base, half, {}, {"coarsen": 1, "max_points": 32}))
    bad = TimeRefine(hidden=8, stride=1, n_vars=base.n_vars).requires_grad_(False)
    torch.manual_seed(0)
    with torch.no_grad():
        bad.outer.weight.normal_(0.0, 3.0)
        bad.outer.bias.fill_(2.0)
    base.side_weights = bad
    for sub, _, _ in built:
        for name in ("time_mix", "flow_mix", "path_mix", "path_bend"):
            getattr(sub, name).copy_(getattr(base, name))
    report = time_refine.gate(base, half, built)
    assert report["held_out_steps"] > 0
    assert all(g < 0 for g in report["gain_db"]), report
    assert report["use"] == [False] * base.n_vars
    assert float(bad.use.abs().sum()) == 0.0


def test_on_a_still_field_the_gated_network_leaves_the_base_as_it_was():
    """Fields that change in place: the choice keeps every variable still, the network has
    nothing to weigh, and side_net=refine predicts what side_net=off does."""
    t = np.arange(0.0, 9.0, 2.0)
    x = np.linspace(0, 1, 16)
    zz, yy, xx = np.meshgrid(x[:8], x[:10], x, indexing="ij")
    field = np.stack([np.sin(3 * xx + 2 * yy) * np.cos(0.4 * tt) + 0.2 * zz for tt in t])
    from stsr_core.series import VolumeSeries
    s = VolumeSeries(times=t, variables={"a": field.astype(np.float32),
                                         "b": (field ** 2).astype(np.float32)},
                     origin=(0, 0, 0), spacing=(1, 1, 1))
    tm = api.fit(s, device="cpu", model_overrides={"side_net": "refine", "flow_iters": 30})
    off = api.fit(s, device="cpu", model_overrides={"flow_iters": 30})
    assert float((tm.model.base.flow_mix != 0).sum()) == 0        # chosen still
    assert tm.model.base.side_weights.use.tolist() == [0.0, 0.0]
    g = api.output_grid(tm.info.grid, scale=2)
    a, b = api.predict_timestep(tm, 3.0, g), api.predict_timestep(off, 3.0, g)
    for n in a:
        np.testing.assert_array_equal(a[n], b[n])
    assert tm.info.history["time_refine"]["use"] == [False, False]


def test_the_training_script_runs_end_to_end_resumes_and_leaves_the_shipped_weights(tmp_path):
    with open(time_refine.WEIGHTS_PATH, "rb") as fh:
        shipped = fh.read()
    out = tmp_path / "w.pt"
    cmd = [sys.executable, "-m", "bench.train_time_refine", "--train-seeds", "0",
           "--val-seeds", "1000", "--size", "13", "--base-time", "flow", "--flow-iters", "5",
           "--steps", "6", "--batch", "2", "--checkpoint-every", "3", "--out", str(out),
           "--cache", str(tmp_path / "cache")]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    net = load_weights(str(out))
    assert any(float(p.abs().max()) > 0 for p in net.outer.parameters())  # it trained
    with open(tmp_path / "w.json") as fh:
        prov = json.load(fh)
    assert prov["train_seeds"] == "0" and "val" in prov["results"]
    first = out.read_bytes()
    # a second run finds the cache and the finished checkpoint: the same weights
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "resumed at step 6" in r.stdout
    back = load_weights(str(out))
    for p, q in zip(net.state_dict().values(), back.state_dict().values()):
        assert torch.equal(p, q)
    with open(time_refine.WEIGHTS_PATH, "rb") as fh:
        assert fh.read() == shipped
    assert first  # written
