"""The fit streamed from disk and the model whose slots load on demand (issue 29): a fit
reads a series a step at a time (real files, a real process under an address-space limit),
makes the same model as from memory, and a model file's coefficients are read a slot at a
time, predicting as the model read whole; older model files load and predict as before."""
import dataclasses
import os
import resource
import subprocess
import sys
import tracemalloc
import weakref
from typing import Tuple

import numpy as np
import pytest
import torch

from stsr_core import api, slabs
from stsr_core.fitdata import open_source
from stsr_core.io import read_series, write_series
from stsr_core.io.hdf5 import H5Reader
from stsr_core.model.spline_boundary import MAX_STEPS
from stsr_core.model import kernels
from stsr_core.outputs import has_error_estimate
from stsr_core.series import VolumeSeries

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(os.path.dirname(__file__), "data")
QUICK = {"flow_iters": 5}           # displacement fits short enough for a test, not cut


def waves(n: int, steps: int, n_vars: int = 2) -> VolumeSeries:
    """A smooth series of ``n_vars`` moving waves on an n^3 grid."""
    c = np.linspace(0.0, 1.0, n, dtype=np.float32)
    z, y, x = c[:, None, None], c[None, :, None], c[None, None, :]
    return VolumeSeries(
        times=np.arange(steps, dtype=np.float64),
        variables={f"f{i}": np.stack([np.sin(6 * x + 2 * y + (i + 1) * z + 0.3 * k)
                                      * np.cos(3 * y - z + 0.1 * i * k)
                                      for k in range(steps)]).astype(np.float32)
                   for i in range(n_vars)},
        spacing=(1.0 / (n - 1),) * 3)


class CountingReader(H5Reader):
    """A real HDF5 step reader that records, at each read, how many steps it returned
    before are still held by the fit (their arrays alive)."""

    def __init__(self, path):
        super().__init__(path)
        self.alive, self.reads, self.most_held = [], 0, 0

    def read_step(self, i):
        self.alive = [r for r in self.alive if r() is not None]
        self.most_held = max(self.most_held, len(self.alive))
        self.reads += 1
        out = super().read_step(i)
        self.alive.append(weakref.ref(next(iter(out.values()))))
        return out


def test_a_fit_from_disk_holds_one_step_at_a_time_and_makes_the_model_it_makes_in_memory(
        tmp_path):
    path = str(tmp_path / "s.h5")
    write_series(waves(21, 7), path)
    reader = CountingReader(path)
    streamed = api.fit(reader, device="cpu", max_minutes=30, model_overrides=QUICK)
    # one pass for the statistics, up to MAX_STEPS steps for the spline's faces, one pass
    # for the spline, three steps for the error estimate
    assert reader.reads == 2 * 7 + min(7, MAX_STEPS) + 3, reader.reads
    assert reader.most_held == 0, reader.most_held      # each step let go before the next
    whole = api.fit(read_series(path), device="cpu", max_minutes=30, model_overrides=QUICK)
    assert streamed.model.base.slots_in_file() is not None   # made in a scratch file
    a, b = _weights(streamed), _weights(whole)
    assert sorted(a) == sorted(b)
    for name in a:
        assert torch.equal(a[name], b[name]), name
    assert streamed.info.stats == whole.info.stats


def _weights(tm):
    """The model's weights as tensors (a base's slots kept in a file are read)."""
    return {k: v if isinstance(v, torch.Tensor) else v.whole()
            for k, v in tm.model.state_dict().items()}


def test_a_fit_in_memory_makes_no_normalised_copy_of_the_series(monkeypatch):
    series = waves(41, 5, 3)                            # 4.1 MB
    # the compiled kernels' scratch is numpy's too (the held-out scoring's fields, filtered
    # a window of rows at a time): traced, it would be counted as data; torch's is not
    monkeypatch.setattr(kernels, "USE_NUMBA", False)
    tracemalloc.start()
    try:
        tm = api.fit(series, device="cpu", max_minutes=30, model_overrides={"flow_iters": 3})
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # numpy's allocations are traced: the model's coefficients (numpy's zeros), a step at a
    # time (and the checks' masks of one variable), never the whole series again (as the
    # normalised copy was: 1.0x)
    model = tm.model.base.coef.numel() * 4
    assert model <= peak < model + 0.5 * series.nbytes, (peak, model, series.nbytes)


def _limited(limit: int):
    def apply():
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    return apply


def _process_at_start(env) -> Tuple[int, int]:
    """Bytes of address space a fit's process has mapped before it holds any data (its
    libraries, the compiled kernels the fit loads before its clock starts among them), and
    the bytes of it resident then."""
    r = subprocess.run([sys.executable, "-c", "import h5py, torch, stsr_core.cli, "
                        "stsr_core.fitting; torch.ones(64, 64) @ torch.ones(64, 64); "
                        "from stsr_core.model import kernels; kernels.warm_up(); "
                        "s = open('/proc/self/status').read(); "
                        "print(s.split('VmPeak:')[1].split()[0], s.split('VmHWM:')[1].split()[0])"],
                       capture_output=True, text=True, env=env, timeout=120)
    mapped, resident = r.stdout.split()[-2:]
    return int(mapped) * 1024, int(resident) * 1024


def _mapped_after_start(env) -> int:
    return _process_at_start(env)[0]


def test_a_real_fit_under_an_address_space_limit_reads_a_series_the_old_path_could_not_hold(
        tmp_path):
    """65^3 x 33 steps x 4 variables (145 MB). Read whole, normalised whole and fitted (as
    stsr did), it failed with five times its size of address space beyond what the process
    maps at its start (2026-12-05, main at 2e1fd8a); read a step at a time, its
    coefficients kept in a scratch file, it runs with 2.5 times; it is given 3.5 here. With
    0.1 GB it is refused in one line before any work."""
    path = str(tmp_path / "big.h5")
    series = waves(65, 33, 4)
    write_series(series, path)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=ROOT)
    start = _mapped_after_start(env)
    cmd = [sys.executable, "-m", "stsr_core.cli", "fit", path, "-o", str(tmp_path / "m.stsr"),
           "--quiet", "--device", "cpu", "--set", "flow_iters=5"]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300,
                       preexec_fn=_limited(start + int(3.5 * series.nbytes)))
    assert r.returncode == 0, r.stderr[-2000:]
    tm = api.load_model(str(tmp_path / "m.stsr"), device="cpu")
    assert tm.info.grid.dims == (65, 65, 65) and len(tm.info.times) == 33
    r = subprocess.run(cmd + ["--overwrite"], capture_output=True, text=True, env=env,
                       timeout=300, preexec_fn=_limited(start + 100 * 1000 ** 2))
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert lines[-1].startswith("stsr: error: the fit of") and "needs about" in lines[-1] \
        and "address-space limit" in lines[-1], lines[-1]


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    folder = tmp_path_factory.mktemp("lazy")
    tm = api.fit(waves(17, 5), device="cpu", max_minutes=30, model_overrides=QUICK)
    path = str(folder / "m.stsr")
    api.save_model(tm, path)
    return tm, path


def test_a_model_predicts_the_same_after_save_and_load_whether_its_slots_are_read_lazily(
        fitted):
    tm, path = fitted
    eager = api.load_model(path, device="cpu", lazy=False)
    lazy = api.load_model(path, device="cpu", lazy=True)
    assert lazy.model.base.slots_in_file() is not None        # nothing read but on demand
    assert eager.model.base.slots_in_file() is None
    assert lazy.n_parameters() == eager.n_parameters() == tm.n_parameters()
    for k in range(tm.model.base.n_slots):
        assert torch.equal(lazy.model.base.slot_coef(k), tm.model.base.slot_coef(k))
        np.testing.assert_allclose(lazy.model.base.slopes_at(k), tm.model.base.slopes_at(k),
                                   rtol=0, atol=1e-6)
    want = api.predict(tm, scale=2, time_scale=3)
    for other in (eager, lazy):
        got = api.predict(other, scale=2, time_scale=3)
        for name in want.variables:
            np.testing.assert_array_equal(got.variables[name], want.variables[name])


def test_a_lazily_loaded_still_model_reads_only_each_slabs_rows_between_kept_steps(tmp_path):
    # still in time with a cubic share: the slopes in time of every slot enter each step,
    # which used to read every slot whole and hold two data-sized fields of slopes
    tm = api.fit(waves(17, 5), device="cpu", max_minutes=30,
                 model_overrides={"base_time": "cubic"})
    assert bool((tm.model.base.time_mix != 0).any())
    path = str(tmp_path / "m.stsr")
    api.save_model(tm, path)
    lazy = api.load_model(path, device="cpu", lazy=True)
    eager = api.load_model(path, device="cpu", lazy=False)
    files = lazy.model.base.slots_in_file()
    grid = api.output_grid(lazy.info.grid, dims=(33, 33, 33))
    box = slabs.whole_box(grid)
    error = has_error_estimate(lazy)
    n_arrays = lazy.model.base.n_vars * (2 if error else 1)
    times = [0.5, 1.25, 2.75]                      # between kept steps, three intervals
    t_norm = [lazy.info.normalised_time(t) for t in times]
    mem = slabs.plan_memory(lazy, grid, box, n_arrays, error, None)
    mem = dataclasses.replace(mem, rows=5)         # seven slabs a step
    got = np.zeros((len(times), n_arrays) + grid.shape, np.float32)
    buf = torch.empty((n_arrays, 5) + grid.shape[1:])
    for i, r0, host in slabs.slab_steps(lazy, grid, t_norm, range(len(times)), box, error,
                                        mem, lambda: buf):
        got[i, :, r0:r0 + host.shape[1]] = host.numpy()
        assert files.kept_slots == ()              # no slot read whole
    for i, t in enumerate(times):
        want = slabs.predict_box(eager, t, grid, box, error)
        for k, name in enumerate(want):
            np.testing.assert_array_equal(got[i, k], want[name], err_msg=f"{name} at {t}")


def test_a_lazily_loaded_model_keeps_reading_its_file_after_it_is_replaced_and_saves_whole(
        fitted, tmp_path):
    tm, path = fitted
    copy = str(tmp_path / "copy.stsr")
    with open(path, "rb") as src, open(copy, "wb") as dst:
        dst.write(src.read())
    lazy = api.load_model(copy, device="cpu", lazy=True)
    first = lazy.model.base.slot_coef(1).clone()
    other = api.fit(waves(17, 5) .select(["f0", "f1"]), device="cpu", max_minutes=30,
                    model_overrides={**QUICK, "flow_iters": 3}, seed=3)
    other.model.base.coef.data.mul_(-1.0)
    api.save_model(other, copy)                  # a new model renamed over the file
    lazy.model.base.slots_in_file().drop()
    assert torch.equal(lazy.model.base.slot_coef(1), first)
    again = str(tmp_path / "again.stsr")
    api.save_model(lazy, again)                  # its slots copied into the new file
    back = api.load_model(again, device="cpu", lazy=False)
    for k in range(tm.model.base.n_slots):
        assert torch.equal(back.model.base.slot_coef(k), tm.model.base.slot_coef(k))


def test_a_damaged_lazily_read_model_file_is_one_clear_line(fitted, tmp_path):
    _, path = fitted
    data = bytearray(open(path, "rb").read())
    bad = str(tmp_path / "bad.stsr")
    at = data.find(b"base.coef")          # not the name: a byte of the coefficients
    data[len(data) // 2] ^= 0xFF
    open(bad, "wb").write(bytes(data))
    with pytest.raises(Exception, match="is damaged") as err:
        api.load_model(bad, device="cpu", lazy=True)
    assert type(err.value).__name__ == "StsrError" and at >= 0
    open(bad, "wb").write(open(path, "rb").read()[:len(data) // 2])
    with pytest.raises(Exception, match="is damaged or not an stsr model file") as err:
        api.load_model(bad, device="cpu", lazy=True)
    assert type(err.value).__name__ == "StsrError"


@pytest.mark.parametrize("name, scale, times", [("fast_v4", 1.5, None), ("fast_v3", 2, None)])
def test_model_files_of_earlier_formats_load_lazily_and_predict_as_before(name, scale, times):
    tm = api.load_model(os.path.join(DATA, f"{name}.stsr"), device="cpu", lazy=True)
    expected = np.load(os.path.join(DATA, f"{name}_expected.npz"))
    if name == "fast_v4":
        assert tm.model.base.slots_in_file() is not None
        out = api.predict(tm, scale=scale, times=list(expected["times"]))
    else:                                   # format 3 kept values and slopes in one grid
        out = api.predict(tm, scale=scale, time_scale=2)
    for var in out.variables:
        np.testing.assert_allclose(out.variables[var], expected[var], rtol=1e-6,
                                   atol=1e-6 * float(np.ptp(expected[var])))


def test_a_fit_of_a_file_names_its_variables_as_reading_it_whole_does(tmp_path):
    path = str(tmp_path / "v.h5")
    s = waves(9, 3, 2)
    s.variables["velocity_0"], s.variables["velocity_1"] = (s.variables["f0"] * 2,
                                                           s.variables["f1"] * 3)
    s.components = {"velocity": ["velocity_0", "velocity_1"]}
    write_series(VolumeSeries(times=s.times, variables=s.variables, spacing=s.spacing,
                              components=s.components), path)
    for arrays in (None, ["f1", "velocity"], ["velocity_1", "f0"]):
        src, whole = open_source(path, arrays), read_series(path, arrays)
        assert src.variables == list(whole.variables), arrays
        assert src.components == whole.components, arrays
        for k in range(3):
            step = src.read(k)
            for n in src.variables:
                np.testing.assert_array_equal(step[n], whole.variables[n][k])
