"""The fast base slab by slab (issue 29): every stage of a slab equals the same rows of the
whole grid, the compiled kernels give today's numbers, a budget that cannot be met is
refused in one line before anything is written, and a real process under a small address
space limit finishes a medium output within a small --max-memory."""
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from stsr_core import api, slabs
from stsr_core.io import read_series, write_series
from stsr_core.model import kernels
from stsr_core.model.error_estimate import space_indicator
from stsr_core.prediction import predict_timestep
from stsr_core.trained import load_model, save_model
from child_peak import run_with_peak
from test_engine import smooth_series
from test_fit_stream import _process_at_start
from test_model import moving_blob

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def model():
    """A blob moving 3 cells between kept steps, with every part of the base in use: bent
    paths, a cubic share along them, one variable still (linear + a cubic share in time,
    smoothed between steps) and the error estimate."""
    s = moving_blob(2.0 * np.arange(5))
    tm = api.fit(s, device="cpu", model_overrides={"flow_iters": 30})
    base = tm.model.base
    assert base.has_error_estimate()
    base.path_bend.fill_(1.0)
    base.path_mix.copy_(torch.tensor([0.6, 0.0]))
    base.flow_mix.copy_(torch.tensor([1.0, 0.0]))       # the second variable still
    base.time_mix.copy_(torch.tensor([0.0, 0.5]))
    base.between_smooth.copy_(torch.tensor([0.0, 0.7]))  # between_smooth.py on the still one
    return tm


def whole_box(g):
    return (0, g.dims[0] - 1, 0, g.dims[1] - 1, 0, g.dims[2] - 1)


def relative(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / max(1e-30, np.abs(b).max()))


@pytest.mark.parametrize("t, scale", [(2.0, 2), (2.5, 2), (3.0, 2), (4.7, 2), (2.0, 8),
                                      (4.7, 8)])
def test_every_stage_of_a_slab_equals_those_rows_of_the_whole_grid(model, t, scale):
    """The kept steps' fields on the slab's window of the warps' grid, the slopes along the
    paths there, the values, the error estimate's indicator in space and the sides'
    disagreement on the data's points around the slab: each the whole grid's numbers at
    those rows (the compiled kernels on both). At scale 8 the output's points are the
    warps' grid's own (its fields then give the kept steps' values)."""
    base = model.model.base
    g = api.output_grid(model.info.grid, scale=scale)
    axes = slabs.output_axes(g, torch.device("cpu"))
    whole = base.plan_grid(axes)
    tn = model.info.normalised_time(t)
    full_vals = base.evaluate_grid(whole, tn).clone()
    full_err = base.error_grid(whole, tn).clone()
    j, w = base._slot(tn)
    z_n = g.dims[2]
    for z0, z1 in ((0, 3), (4, 9), (10, z_n - 1)):
        box = (0, g.dims[0] - 1, 0, g.dims[1] - 1, z0, z1)
        plan = slabs.slab_plan(base, axes, box, error=True)
        assert plan.warp_cut is not None       # a window, not the whole warps' grid
        assert plan.points_on_window == (scale == 8)
        np.testing.assert_allclose(base.evaluate_grid(plan, tn), full_vals[:, z0:z1 + 1],
                                   rtol=0, atol=1e-6)
        np.testing.assert_allclose(base.error_grid(plan, tn), full_err[:, z0:z1 + 1],
                                   rtol=0, atol=1e-6)
        # the fields on the window are the whole warps' grid's rows there
        (m, c0, n), = [plan.cut_ranges()[2]]
        for k in {j, j + 1} & set(plan.fields):
            np.testing.assert_allclose(plan.fields[k], whole.fields[k][:, c0:c0 + n],
                                       rtol=0, atol=1e-6)
        for k in set(plan.slope_fields) & set(whole.slope_fields):   # from its rows alone
            np.testing.assert_allclose(plan.slope_fields[k],
                                       whole.slope_fields[k][:, c0:c0 + n], rtol=0, atol=1e-5)
        for k in set(plan.error_fields):
            np.testing.assert_allclose(space_indicator(base, plan, k),
                                       space_indicator(base, whole, k)[:, z0:z1 + 1],
                                       rtol=0, atol=1e-6)
        # the compiled one-pass estimate in the variables' units, straight into a buffer
        half = torch.tensor([0.5, 3.0])
        got = torch.full((base.n_vars,) + plan.shape, float("nan"))
        base.error_grid(plan, tn, units=half, out=got)
        np.testing.assert_allclose(got, full_err[:, z0:z1 + 1] * half.view(-1, 1, 1, 1),
                                   rtol=0, atol=1e-5)
        if 0 < w < 1:
            assert plan.data_plan.fields is plan.fields   # the same window, not evaluated twice
            d0 = plan.data_carry[1][4]
            part = base.end_difference(plan.data_plan, tn)
            full = base.end_difference(whole.data_plan, tn)
            np.testing.assert_allclose(part, full[:, d0:d0 + part.shape[1]], rtol=0,
                                       atol=1e-6)


@pytest.mark.parametrize("all_moving", [False, True])
def test_the_compiled_kernels_give_the_numbers_of_torch_on_the_whole_grid(model, monkeypatch,
                                                                          all_moving):
    """Today's whole-grid evaluation (torch: dense matrix products, grid_sample, the slopes
    along the paths by bspline_sample) against the compiled kernels: values and error
    arrays within 1e-5 of the largest value."""
    g = api.output_grid(model.info.grid, scale=2)
    box = whole_box(g)
    base = model.model.base
    kept_mix = base.flow_mix.clone()
    try:
        if all_moving:  # every variable moving: the slopes along the path inside the lookups
            base.flow_mix.fill_(1.0)
        check_against_torch(model, base, g, box, monkeypatch)
    finally:
        base.flow_mix.copy_(kept_mix)


def check_against_torch(model, base, g, box, monkeypatch):
    base._path_slopes, base._time_slopes = {}, {}
    got = {t: slabs.predict_box(model, t, g, box, True) for t in (2.0, 2.5, 4.7)}
    monkeypatch.setattr(kernels, "USE_NUMBA", False)
    base._path_slopes, base._time_slopes = {}, {}     # the slopes along the paths anew
    plan = base.plan_grid(slabs.output_axes(g, torch.device("cpu")))
    for t, arrays in got.items():
        tn = model.info.normalised_time(t)
        vals = base.evaluate_grid(plan, tn).clone()
        err = base.error_grid(plan, tn).clone()
        for i, n in enumerate(model.info.variables):
            st = model.info.stats[n]
            ref = st.denormalise(vals[i]).numpy()
            assert relative(arrays[n], ref) < 1e-5, (t, n)
            assert relative(arrays[n + "_error"], err[i].numpy() * st.half_range) < 1e-5
    monkeypatch.setattr(kernels, "USE_NUMBA", True)
    base._path_slopes, base._time_slopes = {}, {}


def test_a_slabbed_upscale_equals_the_whole_grid_one(model, tmp_path, monkeypatch):
    """The same upscale in one slab and in slabs of 3 rows: the same files' values (bent
    paths, a still variable, the error arrays); from slab to slab the kept steps' fields
    slide (the rows two windows share are moved, not filtered again)."""
    real = slabs.plan_memory

    def rows(n):
        def plan(*a, **k):
            m = real(*a, **k)
            m.rows = min(m.rows, n)
            return m
        return plan
    from stsr_core.model import spline_base
    real_slide, slid = spline_base.slid_window, []

    def spy(plan, before, *rest):      # which fields slid from the slab before
        slid.append(before is not None and plan.slid_from is not None)
        return real_slide(plan, before, *rest)
    monkeypatch.setattr(spline_base, "slid_window", spy)
    for name, n in (("whole.h5", 10 ** 6), ("slabs.h5", 3)):
        monkeypatch.setattr(slabs, "plan_memory", rows(n))
        r = api.upscale(model, str(tmp_path / name), scale=2, time_scale=4)
        assert r["memory"]["rows"] == min(n, r["grid"].dims[2])
    assert sum(slid) > len(slid) / 2      # most slabs moved their fields down
    a, b = read_series(str(tmp_path / "whole.h5")), read_series(str(tmp_path / "slabs.h5"))
    assert sorted(a.variables) == sorted(b.variables) and "heat_error" in a.variables
    for n in a.variables:
        np.testing.assert_allclose(a.variables[n], b.variables[n], rtol=0, atol=1e-6)


def test_window_fields_slide_in_the_memory_made_for_the_first_slab(model, monkeypatch):
    """Each field on a slab's window is made once per interval with room for the largest
    window of the box's slabs (slabs.window_cap): the windows that grow from the grid's edge
    inwards slide in that memory, never holding an old and a new window at once (what the
    memory plan does not count)."""
    base = model.model.base
    g = api.output_grid(model.info.grid, scale=2)
    mem = slabs.MemoryPlan(rows=3, budget=0, need=0)
    buf = torch.empty((2 * base.n_vars, 3, g.dims[1], g.dims[0]))
    plans, real = [], slabs.slab_plan
    monkeypatch.setattr(slabs, "slab_plan", lambda *a, **k: plans.append(real(*a, **k))
                        or plans[-1])
    stores, windows = set(), set()
    for _ in slabs.slab_steps(model, g, [model.info.normalised_time(2.5)], [0],
                              whole_box(g), True, mem, lambda: buf):
        p = plans[-1]              # the kept steps' values, and slopes along the path slid
        fields = [("value", k, f) for k, f in p.fields.items()] + \
            [("slope", k, f) for k, f in p.slope_fields.items() if isinstance(k, tuple)]
        assert fields
        stores.add(tuple(sorted((str(a), str(k), f.untyped_storage().data_ptr())
                                for a, k, f in fields)))
        windows.add(p.cut_ranges()[2][2])
    assert len(windows) > 1 and len(stores) == 1


def stsr(*args, env=None, **kw):
    return subprocess.run([sys.executable, "-m", "stsr_core.cli", *map(str, args)],
                          capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=ROOT, **(env or {})), **kw)


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    d = tmp_path_factory.mktemp("slabs")
    s = smooth_series(nx=17, ny=17, nz=17, nt=3)
    write_series(s, str(d / "in.h5"))
    r = stsr("fit", d / "in.h5", "-o", d / "m.stsr", "--quiet", "--set", "flow_iters=10")
    assert r.returncode == 0, r.stderr
    return d / "m.stsr"


@pytest.mark.parametrize("name", ["out.h5", "out.pvd"])
def test_a_budget_too_small_is_refused_in_one_line_before_any_output_is_written(
        model_file, tmp_path, name):
    r = stsr("upscale", model_file, "-o", tmp_path / "o" / name, "--scale", "8",
             "--max-memory", "20MB")
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("stsr: error: --max-memory 20 MB is too small for this "
                               "output: one slab of it needs"), lines[0]
    assert "give --max-memory" in lines[0] and "--no-error" in lines[0]
    assert not [f for _, _, fs in os.walk(tmp_path) for f in fs]       # nothing written
    bad = stsr("upscale", model_file, "-o", tmp_path / "x.h5", "--max-memory", "lots")
    assert bad.returncode == 2 and "--max-memory 'lots' is not a size" in bad.stderr


def test_a_process_under_a_small_address_space_limit_finishes_a_medium_output(
        model_file, tmp_path):
    """129^3 x 5 steps x 4 arrays upscaled by a real process whose address space is
    limited (RLIMIT_AS: 2 GiB beyond what torch, numba and the libraries map at start, about
    1 GiB with a CPU torch and over 3 GiB with PyPI's CUDA torch on Debian 13) with
    --max-memory 600MB, or 250 MB beyond what the process holds at its start where that is
    more (360 MB with a CPU torch, over 600 MB with the CUDA torch of Debian 13's Python):
    it finishes, the output is whole, and its peak RSS keeps within 10 % of the budget."""
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS="1")
    mapped, resident = _process_at_start(env)
    limit = mapped + (2 << 30)
    budget = max(600 * 10 ** 6, resident + 250 * 10 ** 6)
    out = tmp_path / "big.h5"

    rc, err, peak = run_with_peak([sys.executable, "-m", "stsr_core.cli", "upscale",
                                   model_file, "-o", out, "--scale", "8", "--time-scale", "2",
                                   "--max-memory", f"{budget // 10 ** 6}MB", "--quiet"],
                                  env, address_limit=limit)
    assert rc == 0, err
    back = read_series(str(out))
    assert back.n_times == 5 and back.grid.dims == (129, 129, 129)
    assert all(np.isfinite(v).all() for v in back.variables.values())
    assert peak < 1.1 * budget, (peak, budget)     # its own (tests/child_peak.py)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA device (bench/gpu_check.sh runs it)"))])
def test_the_slabbed_upscale_on_each_device_gives_the_cpu_kernels_numbers(model_file,
                                                                          tmp_path, device,
                                                                          monkeypatch):
    """The same upscale in slabs of 5 rows on ``device`` (CUDA: torch's lookups, two
    pinned host buffers taking turns) and on the CPU's compiled kernels in one slab."""
    real = slabs.plan_memory

    def five(*a, **k):
        m = real(*a, **k)
        m.rows = min(m.rows, 5)
        return m
    ref = api.upscale(api.load_model(str(model_file), device="cpu"), str(tmp_path / "c.h5"),
                      scale=3, time_scale=3)
    monkeypatch.setattr(slabs, "plan_memory", five)
    r = api.upscale(api.load_model(str(model_file), device=device), str(tmp_path / "d.h5"),
                    scale=3, time_scale=3)
    assert r["memory"]["rows"] == 5 and ref["memory"]["rows"] > 5
    a, b = read_series(str(tmp_path / "c.h5")), read_series(str(tmp_path / "d.h5"))
    for n in a.variables:
        assert relative(b.variables[n], a.variables[n]) < 1e-5, n


def test_a_slab_weighs_its_sides_on_the_lattice_around_it_as_the_whole_grid_does(model):
    """With the network weighing the two sides (side_net=prior), a slab's weights come
    from the points of the network's lattice around the slab alone (its 3^3 means whole
    there), looked up in the slab's own window: the same numbers as the whole grid's."""
    from stsr_core.model.side_weights import load_weights
    base = model.model.base
    base.side_weights = load_weights()
    try:
        g = api.output_grid(model.info.grid, scale=2)
        axes = slabs.output_axes(g, torch.device("cpu"))
        tn = model.info.normalised_time(2.5)
        whole = base.evaluate_grid(base.plan_grid(axes), tn).clone()
        for z0, z1 in ((0, 2), (5, 8)):
            plan = slabs.slab_plan(base, axes, (0, g.dims[0] - 1, 0, g.dims[1] - 1, z0, z1),
                                   error=True)
            got = base.evaluate_grid(plan, tn)
            lattice = [(n - 2) // base.side_weights.stride + 2 for n in base.dims[::-1]]
            if z0 == 0:                 # the first slab: a box of the lattice, in its window
                assert plan.side_plan.shape[0] < lattice[0]
                assert plan.side_plan.fields is plan.fields
            np.testing.assert_allclose(got, whole[:, z0:z1 + 1], rtol=0, atol=1e-5)
    finally:
        base.side_weights = None


def test_steps_asked_for_one_by_one_in_any_order_give_the_numbers_of_a_fresh_plan(model):
    """predict_timestep keeps the plan of the box it last computed (and the interval's fields
    in it) for the next call, as ParaView and api.predict ask step after step: going back
    and forth across intervals, to a kept step and to another box, every answer is the one
    a model without that plan gives."""
    g = model.info.grid.resampled([2 * n - 1 for n in model.info.grid.dims])
    box = (2, 20, 0, g.dims[1] - 1, 3, 9)
    asks = [(3.0, None), (3.5, None), (1.0, None), (7.2, None), (4.0, None), (3.5, box),
            (6.0, box), (3.5, None)]
    for t, ext in asks:
        got = predict_timestep(model, t, g, extent=ext, error=True)
        model.plan = None
        want = predict_timestep(model, t, g, extent=ext, error=True)
        for n in want:
            np.testing.assert_array_equal(got[n], want[n], err_msg=f"{n} at t={t}, {ext}")


@pytest.mark.parametrize("in_file", [False, True])
def test_the_still_part_summed_over_the_slots_equals_the_formula_on_the_two_ends(
        model, tmp_path, in_file):
    """The part that is not moved, as one weighted sum of the slots' rows (still_rows:
    the natural spline's slopes folded into per-slot weights), gives the numbers of
    linear + c (cubic - linear) on the two ends' rows and slopes' rows, for a still
    variable with a cubic share in time, a moved one (partly still here) and both, on
    rows of a slab and on every row; from memory and from a model file's slots."""
    tm = model
    if in_file:
        path = str(tmp_path / "m.stsr")
        save_model(model, path)
        tm = load_model(path, device="cpu", lazy=True)
        assert tm.model.base.slots_in_file() is not None
    base = tm.model.base
    kept = base.flow_mix.clone()
    try:
        base.flow_mix.copy_(torch.tensor([0.5, 0.0]))     # the first partly still too
        z = base.dims[2] + 2
        for t in (-0.9, -0.3, 0.1, 0.77):
            j, w = base._slot(t)
            for idx in ([1], [0, 1]):
                ix = torch.tensor(idx)
                for lo, hi in ((0, z), (2, 7), (z - 5, z)):
                    got = base.still_rows(j, w, ix, lo, hi)
                    want = base._still_formula(j, w, ix, lo, hi)
                    assert got.shape == want.shape
                    assert relative(got, want) < 1e-5, (t, idx, lo, hi)
    finally:
        base.flow_mix.copy_(kept)


def test_window_fields_slide_as_rings_with_the_numbers_of_moved_windows(model, monkeypatch):
    """Every variable moved: the slabs' window fields slide as rings (spline_base.slid_ring:
    the window's first row moves on, nothing is moved in memory, the new rows wrap round
    its end), and every step of every slab (the values, the error arrays, a kept step's)
    is bit for bit the one of windows moved down in memory (slid_window's memmove)."""
    base = model.model.base
    kept = base.flow_mix.clone()
    g = api.output_grid(model.info.grid, scale=2)
    times = [model.info.normalised_time(t) for t in (2.5, 3.0, 4.0, 5.1)]
    buf = torch.empty((2 * base.n_vars, 3, g.dims[1], g.dims[0]))
    from stsr_core.model import spline_base
    real_ring, rings = spline_base.slid_ring, []

    def spy(*a, **k):
        f = real_ring(*a, **k)
        rings.append((f.ring, f.shape[1], f.untyped_storage().data_ptr()))
        return f
    monkeypatch.setattr(spline_base, "slid_ring", spy)
    got = {}
    try:
        base.flow_mix.fill_(1.0)
        assert base.ring_windows()
        for ring in (True, False):
            monkeypatch.setattr(type(base), "ring_windows", lambda self, r=ring: r)
            mem = slabs.MemoryPlan(rows=3, budget=0, need=0)
            got[ring] = [(i, z0, h.clone()) for i, z0, h in slabs.slab_steps(
                model, g, times, [0, 1, 2, 3], whole_box(g), True, mem, lambda: buf)]
    finally:
        base.flow_mix.copy_(kept)
    assert len(got[True]) == len(got[False]) > 3 * 3
    for (i, z0, a), (j, z1, b) in zip(got[True], got[False]):
        assert (i, z0) == (j, z1)
        assert torch.equal(a, b), (i, z0)
    wrapped = [r for r in rings if r[0][0] + r[0][1] > r[1]]
    assert wrapped                       # windows that wrap round the ring's end
    assert len({r[2] for r in rings}) < len(rings) / 3   # the same memory slab to slab


@pytest.mark.skipif(not kernels.USE_NUMBA, reason="the compiled kernels' scratch")
def test_the_filterings_scratch_is_kept_inside_a_slab_loop_and_freed_after():
    """Inside kernels.kept_scratch (slab_steps) the filtering's two passes reuse one
    buffer, grown to the largest call, with the numbers of fresh memory; leaving frees it."""
    from stsr_core.model.grid_plan import spline_matrix
    a = torch.randn(2, 12, 9, 9)
    m = spline_matrix(torch.linspace(-1.0, 1.0, 15), 7)            # [15, 9]
    mats, small = [m, m, m[:12]], [m, m, m[3:6]]
    want = kernels.banded(a, mats)
    want_small = kernels.banded(a, small)
    with kernels.kept_scratch():
        got = kernels.banded(a, mats)
        buf = kernels._SCRATCH.buf
        assert buf is not None
        got_small = kernels.banded(a, small, last=True)
        assert kernels._SCRATCH.buf is buf              # a smaller call: the same memory
    assert kernels._SCRATCH.buf is None
    assert torch.equal(got, want) and torch.equal(got_small, want_small)
