"""The plugin in the real ParaView: pvpython, pvbatch and the GUI under Xvfb (no mocks)."""
import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

from stsr_core import api, config
from stsr_core.io import write_series
from stsr_core.outputs import output_arrays
from test_engine import smooth_series

hypothesis = pytest.importorskip("hypothesis")
from fuzzing import Worker, cases, write_report  # noqa: E402
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PLUGIN = os.path.join(ROOT, "plugin", "STSRINRPlugin.py")
PV = os.path.join(ROOT, "tests", "pv")
pytestmark = pytest.mark.skipif(shutil.which("pvpython") is None,
                                reason="ParaView (pvpython) is not installed")


def pv_env(**extra):
    env = dict(os.environ, OMP_NUM_THREADS="1",
               PYTHONPATH=os.path.join(ROOT, "scripts", "pvsite"))
    env.pop("PV_PLUGIN_PATH", None)
    env.update(extra)
    return env


def run_pv(prog, script, *args, env=None, timeout=300):
    return subprocess.run([prog, os.path.join(PV, script), *map(str, args)],
                          capture_output=True, text=True, env=env or pv_env(), timeout=timeout)


def vector_series(nt=5):
    s = smooth_series(nx=7, ny=6, nz=5, nt=nt)
    s.variables["v_0"] = s.variables["rho"] * 2
    s.variables["v_1"] = s.variables["temperature"] - 300
    s.variables["v_2"] = s.variables["rho"] + 1
    s.components = {"v": ["v_0", "v_1", "v_2"]}
    s.validate()
    return s


@pytest.fixture(scope="module")
def series_file(tmp_path_factory):
    d = tmp_path_factory.mktemp("pvdata")
    write_series(vector_series(), str(d / "in.pvd"))
    return d / "in.pvd"


@pytest.mark.parametrize("prog", ["pvpython", "pvbatch"])
def test_filter_and_model_source(prog, series_file, tmp_path):
    model = tmp_path / "m.stsr"
    r = run_pv(prog, "filter_check.py", PLUGIN, series_file, model, tmp_path)
    assert r.returncode == 0 and "filter_check done" in r.stdout, r.stdout + r.stderr
    res = json.loads((tmp_path / "result.json").read_text())
    # grid: (dims - 1) * 2 + 1, spacing / 2, same origin
    assert res["dims"] == [13, 11, 9]
    assert np.allclose(res["spacing"], [0.25 / 2 * 2 / 2 * 2, 0.125, 0.5]) or \
        np.allclose(res["spacing"], [0.25, 0.125, 0.5])
    assert np.allclose(res["origin"], [1, 2, 3])
    # every input time plus one in-between step per interval
    assert np.allclose(res["times"], [1.5, 1.75, 2.0, 2.25, 2.5, 2.75, 3.0, 3.25, 3.5])
    # the default preset's error estimate (issue 25) comes with the values, a vector's as one
    assert set(res["arrays"]) == {"temperature", "rho", "v", "temperature_error", "rho_error",
                                  "v_error"}
    assert res["arrays"]["v"] == res["arrays"]["v_error"] == [13 * 11 * 9, 3]
    # the fast default is its base alone: fitted to the data, no network steps to take
    assert res["training"]["stopped"] == "fitted" and res["training"]["steps"] == 0
    assert res["cache_hit"]
    # a requested sub-extent is computed alone and matches that part of the whole output
    assert res["piece_extent"] == [2, 9, 1, 6, 3, 7] and res["piece_points"] == 8 * 6 * 5
    assert res["piece_diff"] < 1e-5, res["piece_diff"]
    # the drop-down lists are stsr_core/config.py's, with the presets' descriptions
    assert res["lists"] == {"Preset": list(config.PRESET_DESCRIPTIONS),
                            "Device": list(config.DEVICES),
                            "TimeInterpolation": list(config.BASE_TIME_DESCRIPTIONS)}
    for name, description in config.PRESET_DESCRIPTIONS.items():
        assert f"{name}: {description}." in " ".join(res["preset_help"].split())
    assert res["source_times"] == res["times"] and res["source_dims"] == res["dims"]
    # the filter's numbers are the engine's numbers for the saved model
    tm = api.load_model(str(model), device="cpu")
    assert tm.model_config.base_time == "cubic"            # the TimeInterpolation property
    assert tm.model.base.time_mix.tolist() == [1.0] * 5
    g = api.output_grid(tm.info.grid, scale=2)
    direct = api.predict_timestep(tm, res["t_mid"], g)
    filt = np.load(tmp_path / "filter.npz")
    src = np.load(tmp_path / "source.npz")
    for name in ("temperature", "rho"):
        np.testing.assert_allclose(filt[name], direct[name].ravel(), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(src[name], filt[name], rtol=1e-5, atol=1e-6)
    v = np.stack([direct[f"v_{c}"].ravel() for c in range(3)], axis=1)
    np.testing.assert_allclose(filt["v"], v, rtol=1e-5, atol=1e-6)


def test_the_filter_and_the_model_source_upscale_with_the_spatial_prior(series_file, tmp_path):
    model = tmp_path / "prior.stsr"
    r = run_pv("pvpython", "prior_check.py", PLUGIN, series_file, model, tmp_path)
    assert r.returncode == 0 and "prior_check done" in r.stdout, r.stdout + r.stderr
    res = json.loads((tmp_path / "prior.json").read_text())
    assert res["choices"] == list(config.SPACE_PRIOR_DESCRIPTIONS)
    tm = api.load_model(str(model), device="cpu")
    assert tm.model_config.space_prior == "shipped"
    assert tm.model.base.space.use.tolist() == [1] * 5         # every array corrected
    got = np.load(tmp_path / "prior.npz")
    g = api.output_grid(tm.info.grid, scale=2)
    off = api.fit(vector_series(), device="cpu", model_overrides={"base_time": "linear"})
    for label, t in (("kept", res["times"][2]), ("between", res["times"][1])):
        direct, plain = api.predict_timestep(tm, t, g), api.predict_timestep(off, t, g)
        for name in ("temperature", "rho"):
            filt, src = got[f"filter_{label}_{name}"], got[f"source_{label}_{name}"]
            np.testing.assert_allclose(filt, direct[name].ravel(), rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(src, filt, rtol=1e-5, atol=1e-6)
        # the prior changed the arrays (kept step: itself; between: through the blend)
        assert max(float(np.abs(direct[n] - plain[n]).max()) for n in direct) > 0, label


@pytest.fixture(scope="module")
def plugin(tmp_path_factory):
    """One pvpython with the plugin loaded, for the checks that can share it (its errors,
    the error estimate's arrays, the numeric properties fuzzed): tests/pv/plugin_worker.py."""
    w = Worker(tmp_path_factory.mktemp("pvlog") / "pvpython-stderr.txt",
               ["pvpython", os.path.join(PV, "plugin_worker.py"), PLUGIN], pv_env())
    yield w
    w.stop()
    write_report(w)


def ask(worker, op, path, **request):
    r = worker.ask(op, path, **request)
    assert r["outcome"] == "ok", r
    return r


@pytest.fixture(scope="module")
def base_model(tmp_path_factory):
    """The default model (the base alone) of the vector series, fitted quickly."""
    path = tmp_path_factory.mktemp("pvmodel") / "fast.stsr"
    api.fit(vector_series(), "fast", device="cpu", checkpoint_path=str(path),
            model_overrides={"flow_iters": 20})
    return path


def test_the_model_source_shows_the_error_estimate_as_arrays_to_colour_by(plugin, base_model,
                                                                           tmp_path):
    """A liif model's NAME_error arrays (a vector's as one vector) appear in ParaView with
    the ErrorEstimate box on and not with it off; so do those of a model of the default
    preset, which has its own estimate since issue 25."""
    liif = str(tmp_path / "liif.stsr")
    api.fit(vector_series(), "liif", steps=1, device="cpu", checkpoint_path=liif,
            model_overrides={"flow_iters": 20, "learn_steps": 10})
    res = {name: ask(plugin, "arrays", path, error=error)["arrays"]
           for name, path, error in (("liif_on", liif, 1), ("liif_off", liif, 0),
                                     ("fast_on", base_model, 1), ("fast_off", base_model, 0))}
    n = res["liif_on"]["rho"][0]
    assert n >= 7 * 6 * 5
    assert {k: v[:2] for k, v in res["liif_on"].items()} == {
        "temperature": [n, 1], "rho": [n, 1], "v": [n, 3], "temperature_error": [n, 1],
        "rho_error": [n, 1], "v_error": [n, 3]}
    assert min(res["liif_on"]["temperature_error"][2]) >= 0
    assert set(res["liif_off"]) == set(res["fast_off"]) == {"temperature", "rho", "v"}
    # the default preset has an error estimate too (issue 25): the same arrays as liif's
    assert {k: v[:2] for k, v in res["fast_on"].items()} == \
        {k: v[:2] for k, v in res["liif_on"].items()}
    assert min(res["fast_on"]["rho_error"][2]) > 0


def test_paraview_reads_every_upscale_output_with_its_readers_defaults(tmp_path):
    """What `stsr upscale` writes for ParaView -- .pvd with each compression, .nc with each --
    read back in pvpython by ParaView's own readers with their default settings (OpenDataFile
    for the .pvd; the NetCDF CF reader for the .nc, which OpenDataFile does not pick): image
    data with point arrays only, the output times, every array with its error estimate (a
    vector as one 3-component array in a .pvd, as its three components in a .nc) and the
    engine's values to the bit. (.h5 is not among them: ParaView 5.11 has no reader for its
    layout.)"""
    model = tmp_path / "m.stsr"
    api.fit(vector_series(), device="cpu", checkpoint_path=str(model),
            model_overrides={"flow_iters": 20})
    tm = api.load_model(str(model), device="cpu")
    outs = [tmp_path / f"{comp}{ext}" for ext, comps in ((".pvd", ("none", "lz4", "zlib")),
                                                          (".nc", ("none", "zlib")))
            for comp in comps]
    for out in outs:
        api.upscale(tm, str(out), scale=2, time_scale=2, compression=out.stem)
    r = run_pv("pvpython", "readers_check.py", tmp_path / "pv.npz", *outs)
    assert r.returncode == 0 and "readers_check done" in r.stdout, r.stdout + r.stderr
    seen = np.load(tmp_path / "pv.npz")
    info = json.loads((tmp_path / "pv.npz.json").read_text())
    want = api.predict(tm, scale=2, time_scale=2, error=True)
    scalars, vectors = output_arrays(tm, True)    # the variables and their error estimates
    assert "v_error" in vectors                   # (this model has one)
    in_vectors = {c for comps in vectors.values() for c in comps}
    g = want.grid
    bounds = [v for o, s, n in zip(g.origin, g.spacing, g.dims) for v in (o, o + s * (n - 1))]
    for k, (out, got) in enumerate(zip(outs, info)):
        assert got["kinds"] == ["vtkImageData"], (out.name, got)
        assert np.allclose(got["times"], want.times) and got["dims"] == list(g.dims)
        assert np.allclose(got["bounds"], bounds), (out.name, got["bounds"])
        names = {key.split("/")[2] for key in seen.files if key.startswith(f"{k}/")}
        expected = (set(scalars) - in_vectors) | set(vectors) if out.suffix == ".pvd" \
            else set(scalars)
        assert names == expected, (out.name, names)
        for i in range(want.n_times):
            for n in set(scalars) - in_vectors:
                np.testing.assert_array_equal(seen[f"{k}/{i}/{n}"],
                                              want.variables[n][i].ravel(), f"{out.name} {n}")
            for vec, comps in vectors.items():
                for c, comp in enumerate(comps):
                    v = seen[f"{k}/{i}/{vec}"][:, c] if out.suffix == ".pvd" \
                        else seen[f"{k}/{i}/{comp}"]
                    np.testing.assert_array_equal(v, want.variables[comp][i].ravel(),
                                                  f"{out.name} {comp}")


def test_paraview_reads_slab_appended_outputs_with_its_readers_defaults(tmp_path):
    """Outputs written in z-slabs, three steps interleaved (a compressed .vti holds one
    piece per slab): ParaView's readers with their defaults give image data, the times and
    every array to the bit."""
    from stsr_core.io import open_series_writer
    s = vector_series(nt=3)
    outs = [tmp_path / f"{comp}{ext}" for ext, comps in ((".pvd", ("none", "lz4", "zlib")),
                                                          (".nc", ("none", "zlib")))
            for comp in comps]
    for out in outs:
        with open_series_writer(str(out), s.grid, s.times, s.names, s.components,
                                compression=out.stem) as w:
            for z0, z1 in ((0, 2), (2, 3), (3, 5)):
                for t in (1, 2, 0):
                    w.write_slab(t, z0, {n: v[t, z0:z1] for n, v in s.variables.items()})
    r = run_pv("pvpython", "readers_check.py", tmp_path / "pv.npz", *outs)
    assert r.returncode == 0 and "readers_check done" in r.stdout, r.stdout + r.stderr
    seen = np.load(tmp_path / "pv.npz")
    info = json.loads((tmp_path / "pv.npz.json").read_text())
    for k, (out, got) in enumerate(zip(outs, info)):
        assert got["kinds"] == ["vtkImageData"] and got["dims"] == list(s.dims), got
        assert np.allclose(got["times"], s.times), got
        for t in range(s.n_times):
            np.testing.assert_array_equal(seen[f"{k}/{t}/rho"], s.variables["rho"][t].ravel())
            for c in range(3):
                v = seen[f"{k}/{t}/v"][:, c] if out.suffix == ".pvd" else seen[f"{k}/{t}/v_{c}"]
                np.testing.assert_array_equal(v, s.variables[f"v_{c}"][t].ravel(), out.name)


def test_paraview_reads_lz4_literal_blocks_whole_and_in_slabs(tmp_path):
    """An lz4 .pvd whose arrays do not compress (noise: written as LZ4 literal blocks,
    io/compress.py) beside ones that do (flat; flat in part), whole steps and z-slabs (a
    piece each), blocks of whole slices (40^2 floats: 10 slices a block): ParaView's reader
    gives every value to the bit."""
    from stsr_core.io import open_series_writer
    rng = np.random.default_rng(7)
    s = smooth_series(nx=40, ny=40, nz=40, nt=2)
    noise = rng.standard_normal((2, 40, 40, 40)).astype(np.float32)
    half = noise.copy()
    half[:, 20:] = 0.0
    s.variables = {"noise": noise, "flat": np.zeros_like(noise), "half": half}
    s.validate()
    outs = [tmp_path / "whole.pvd", tmp_path / "slabs.pvd"]
    for out, cuts in zip(outs, (((0, 40),), ((0, 13), (13, 40)))):
        with open_series_writer(str(out), s.grid, s.times, list(s.variables), {},
                                compression="lz4") as w:
            for t in range(2):
                for z0, z1 in cuts:
                    w.write_slab(t, z0, {n: v[t, z0:z1] for n, v in s.variables.items()})
    r = run_pv("pvpython", "readers_check.py", tmp_path / "pv.npz", *outs)
    assert r.returncode == 0 and "readers_check done" in r.stdout, r.stdout + r.stderr
    seen = np.load(tmp_path / "pv.npz")
    for k in range(2):
        for t in range(2):
            for n, v in s.variables.items():
                np.testing.assert_array_equal(seen[f"{k}/{t}/{n}"], v[t].ravel(), f"{k} {n}")


def one_error(r, text):
    """The plugin's path ended in one ParaView error of its own saying ``text`` in one line
    (for each request of the pipeline's update), no traceback, and the proxy gave no
    output."""
    mine = {m for m in r["errors"] if m.startswith("ERROR: STSRINR")}
    assert len(mine) == 1 and text in mine.pop().rstrip("\n").split("\n")[0], r
    assert not any("Traceback" in m for m in r["errors"]) and r["points"] == 0, r


def test_error_non_image_input(plugin):
    """ParaView refuses to connect a non-image input, naming the type required."""
    r = ask(plugin, "error", "non-image")
    assert r["points"] == 0 and any("a vtkImageData is required" in m for m in r["errors"]), r
    assert not any("Traceback" in m for m in r["errors"]), r


def test_error_model_file_does_not_match(plugin, series_file, tmp_path):
    other = smooth_series(nx=5, ny=5, nz=5, nt=2)
    tm = api.fit(other, "fast", steps=1, device="cpu", model_overrides={"flow_iters": 5})
    api.save_model(tm, str(tmp_path / "other.stsr"))
    r = ask(plugin, "error", "model-mismatch", args=[str(series_file),
                                                     str(tmp_path / "other.stsr")])
    one_error(r, "the model does not match the data")


def test_error_array_missing_at_a_timestep(plugin, tmp_path):
    a, b = smooth_series(nt=2), smooth_series(nt=2)
    write_series(a.select(["temperature", "rho"]), str(tmp_path / "a.pvd"))
    b2 = b.select(["temperature"])
    b2.times = b2.times + 10
    write_series(b2, str(tmp_path / "b.pvd"))
    # one collection whose second file lacks 'rho'
    files = [l for l in (tmp_path / "a.pvd").read_text().splitlines() if "DataSet" in l][:1]
    files += [l for l in (tmp_path / "b.pvd").read_text().splitlines() if "DataSet" in l][:1]
    (tmp_path / "mix.pvd").write_text(
        '<?xml version="1.0"?>\n<VTKFile type="Collection" version="0.1">\n<Collection>\n'
        + "\n".join(files) + "\n</Collection>\n</VTKFile>\n")
    r = ask(plugin, "error", "missing-array", args=[str(tmp_path / "mix.pvd")])
    one_error(r, "missing at time")
    assert "rho" in " ".join(r["errors"])


def test_error_no_engine_available(series_file, tmp_path):
    """The plugin file alone (no stsr_core, no torch next to it, no venv around it): the
    message names ParaView's Python and the paths it looked in, and says how to make a venv
    with the wheel and point ParaView at it."""
    lone = tmp_path / "lone" / "plugin"
    lone.mkdir(parents=True)
    shutil.copy(PLUGIN, lone)
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(
        "import inspect\ninspect.getargspec = inspect.getfullargspec\n")
    alone = Worker(tmp_path / "stderr.txt", ["pvpython", os.path.join(PV, "plugin_worker.py"),
                                             str(lone / "STSRINRPlugin.py")],
                   pv_env(PYTHONPATH=str(site)))
    try:
        r = ask(alone, "error", "no-engine", args=[str(series_file)])
    finally:
        alone.stop()
    one_error(r, "STSR-INR needs PyTorch and the stsr_core package")
    (message,) = {m for m in r["errors"] if m.startswith("ERROR: STSRINR")}
    lines = message.strip().split("\n")
    assert "No module named 'stsr_core'" in lines[0], message
    assert re.search(r"^ParaView \d+\.\d+\.\d+ runs Python 3\.\d+\.\d+ \(", lines[1]), message
    assert lines[2].startswith("It looked in: ") and str(lone) in lines[2], message
    assert lines[3].startswith("To fix: '") and " -m venv DIR', 'DIR/bin/pip install torch " \
        "stsr_inr-*.whl'" in lines[3] and "'DIR/bin/stsr plugin-path'" in lines[3], message


def test_error_time_interpolation_on_a_preset_without_it(plugin, series_file):
    r = ask(plugin, "error", "time-interpolation-wrong-preset", args=[str(series_file)])
    one_error(r, "TimeInterpolation 'flow' applies to the fast preset only; set it to select "
                 "for preset 'siren'")


def test_error_damaged_model_file(plugin, tmp_path):
    bad = tmp_path / "bad.stsr"
    bad.write_bytes(b"not a model")
    one_error(ask(plugin, "error", "bad-model-file", args=[str(bad)]),
              "is damaged or not an stsr model file")


# --- the numeric properties, fuzzed (tests/fuzzing.py: make test a few dozen, make fuzz
# 20x as many): in range they give an output and no error, out of range one error naming
# the property, its value and its range
def _property_values(name, inside):
    """Values a property allows (small: each case may train) or does not."""
    nan_inf = st.sampled_from([float("nan"), float("inf"), float("-inf")])
    if name == "SpatialScale":         # whole numbers of points on the 7x6x5 input
        return st.integers(1, 3).map(float) if inside else st.one_of(
            nan_inf, st.floats(max_value=0.0, allow_nan=False, allow_infinity=False))
    if name == "OutputDimensions":
        if inside:
            return st.one_of(st.just([0, 0, 0]), st.lists(st.integers(1, 9), min_size=3,
                                                          max_size=3))
        return st.lists(st.integers(-5, 9), min_size=3, max_size=3).filter(
            lambda d: min(d) < 0)
    if name == "TemporalScale":
        return st.integers(1, 3) if inside else st.integers(-5, 0)
    if name == "TrainingMinutes":      # (with TrainingSteps 2: whichever ends first)
        return st.floats(0, 0.002) if inside else st.one_of(
            nan_inf, st.floats(max_value=-1e-9, allow_nan=False, allow_infinity=False))
    if name == "TrainingSteps":        # (with TrainingMinutes 0.002)
        return st.integers(0, 3) if inside else st.integers(-10 ** 6, -1)
    return st.integers(-2 ** 31, 2 ** 31 - 1)    # Seed: every VTK int is in range


FILTER_NUMBERS = ["SpatialScale", "OutputDimensions", "TemporalScale", "TrainingMinutes",
                  "TrainingSteps", "Seed"]


@st.composite
def property_cases(draw):
    proxy = draw(st.sampled_from(["upscale", "model"]))
    names = FILTER_NUMBERS if proxy == "upscale" else FILTER_NUMBERS[:3]
    name = draw(st.sampled_from(names))
    inside = name == "Seed" or draw(st.booleans())
    return proxy, name, draw(_property_values(name, inside)), inside


@settings(max_examples=cases(24))
@given(case=property_cases())
def test_each_numeric_property_gives_an_output_or_one_error_naming_its_range(
        plugin, series_file, base_model, case):
    proxy, name, value, inside = case
    props = {"Preset": "siren", "TrainingSteps": 2, "TrainingMinutes": 0.002} \
        if proxy == "upscale" else {}
    props[name] = value
    plugin.cases["properties"] += 1
    r = ask(plugin, "property", series_file if proxy == "upscale" else base_model,
            proxy=proxy, properties=props)
    plugin.outcomes[f"properties {proxy}: {'output' if r['points'] else 'error'}"] += 1
    if inside:
        assert r["errors"] == [] and r["points"] > 0, (case, r)
    else:
        one_error(r, f"{name} ")
        assert "is out of range; allowed: " in " ".join(r["errors"]), (case, r)


needs_gui = pytest.mark.skipif(shutil.which("xvfb-run") is None or
                               shutil.which("paraview") is None,
                               reason="needs xvfb-run and the paraview GUI")


@pytest.fixture(scope="module")
def gui(series_file, tmp_path_factory):
    """One GUI session under Xvfb for both GUI checks (tests/pv/gui_check.py): the folder
    with what it wrote."""
    out = tmp_path_factory.mktemp("gui")
    bad = out / "bad.stsr"
    bad.write_bytes(b"not a model")
    env = pv_env(PV_PLUGIN_PATH=os.path.join(ROOT, "plugin"), STSR_GUI_DATA=str(series_file),
                 STSR_GUI_OUT=str(out), STSR_GUI_BAD=str(bad))
    wrote = [out / f for f in ("gui.json", "gui.png", "gui_errors.json")]
    for attempt in range(2):     # rendering under Xvfb fails once in a while: retry once
        subprocess.run(["xvfb-run", "-a", "-s", "-screen 0 1024x768x24", "paraview", "--dr",
                        f"--script={os.path.join(PV, 'gui_check.py')}"],
                       capture_output=True, text=True, env=env, timeout=300)
        if all(f.exists() for f in wrote):
            break
    return out


@pytest.mark.gui
@needs_gui
def test_gui_time_keeper_and_screenshot(gui):
    tmp_path = gui
    res = json.loads((tmp_path / "gui.json").read_text())
    assert res["ok"], res
    assert np.allclose(res["timekeeper_steps"], [1.5, 1.75, 2.0, 2.25, 2.5, 2.75, 3.0, 3.25, 3.5])
    assert abs(res["time"] - 1.75) < 1e-9 and abs(res["view_time"] - 1.75) < 1e-9
    # the panel lists properties in the order a user sets them, the rarely changed ones
    # behind the gear button (advanced), in groups
    advanced = {"TrainingSteps", "TimeInterpolation", "SpatialPrior", "Device", "Seed"}
    assert res["panel"] == [[n, "advanced" if n in advanced else "default"] for n in (
        "Input", "Arrays", "SpatialScale", "OutputDimensions", "TemporalScale",
        "ErrorEstimate", "TrainingMinutes", "TrainingSteps", "Preset", "TimeInterpolation",
        "SpatialPrior", "ModelFile",
        "Train", "Device", "Seed")]
    assert res["groups"] == [
        ["Input", "Arrays"],
        ["Output", "SpatialScale", "OutputDimensions", "TemporalScale", "ErrorEstimate"],
        ["Training", "TrainingMinutes", "TrainingSteps", "Preset", "TimeInterpolation",
         "SpatialPrior"],
        ["Model", "ModelFile", "Train"], ["Run", "Device", "Seed"]]
    from matplotlib.image import imread
    img = imread(str(tmp_path / "gui.png"))
    assert img.shape[0] == 480 and img.shape[1] == 640
    rgb = (img[..., :3] * 255).astype(int)
    colours = np.unique(rgb.reshape(-1, 3), axis=0)
    # not blank: the slice is drawn with a colour map, i.e. many distinct colours
    assert len(colours) > 100, len(colours)


def _colours(png):
    from matplotlib.image import imread
    rgb = (imread(str(png))[..., :3] * 255).astype(int)
    return len(np.unique(rgb.reshape(-1, 3), axis=0))


@pytest.mark.gui
@needs_gui
def test_gui_stays_up_and_renders_after_each_error_and_an_abort_during_the_fit(gui):
    tmp_path = gui
    res = json.loads((tmp_path / "gui_errors.json").read_text())
    assert res["ok"], res.get("error")
    points = 13 * 11 * 9                        # the working filter's output, every time
    assert res["points_before"] == points
    expected = {"missing model file": "nothere.stsr' does not exist",
                "damaged model file": "is damaged or not an stsr model file",
                "unknown array": "no array named 'nope' at time 1.5; available: ",
                "settings that do not fit": "TimeInterpolation 'flow' applies to the fast "
                                            "preset only",
                "model folder missing": "ModelFile folder"}
    assert any("available: " in m and "temperature" in m
               for m in res["paths"]["unknown array"]["errors"])   # the choices are listed
    for name, text in expected.items():
        path = res["paths"][name]
        # one error message, the filter's own (no traceback), and no output from it
        assert path["points"] == 0 and any(text in m for m in path["errors"]), (name, path)
        assert not any("Traceback" in m for m in path["errors"]), (name, path)
        # the GUI is still up: it renders, and the working filter still updates
        assert path["points_after"] == points, (name, path)
        assert _colours(tmp_path / f"after-{name}.png") > 50, name
    abort = res["abort"]
    assert len(abort["at"]) == 1 and abort["errors"] == [], abort
    assert abort["training"]["stopped"] == "cancelled", abort
    # the model the fit had made when it was stopped: saved, valid, and the filter shows it
    tm = api.load_model(str(tmp_path / "aborted.stsr"), device="cpu")
    assert tm.info.history["stopped"] == "cancelled"
    assert any(n.startswith("the fit was stopped: ") for n in tm.info.history["init_notes"])
    assert sorted(tm.info.variables) == ["rho", "temperature", "v_0", "v_1", "v_2"]
    assert abort["points_after"] == points and abort["points_next_time"] == points, abort
    assert _colours(tmp_path / "after-abort.png") > 50
    # a preset with a network (torch.optim) trains in the GUI: with PyPI's CUDA torch
    # (Debian 13) that loaded triton, which crashed ParaView, until the plugin hid it
    network = res["network"]
    assert network["errors"] == [] and network["points"] == points, network
    assert network["training"]["steps"] == 2, network


def test_pvpython_examples_run_as_they_are(tmp_path):
    """The newcomer's scripts, in a plain pvpython (no launcher, no PYTHONPATH, no display):
    upscale the shipped tornado with a tiny budget, then reopen the saved model."""
    env = pv_env()
    env.pop("PYTHONPATH")
    env.pop("DISPLAY", None)
    out = tmp_path / "out"
    r = subprocess.run(["pvpython", os.path.join(ROOT, "examples", "upscale_example.py"),
                        "--minutes", "0.05", "--device", "cpu", "--out", str(out)],
                       capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "output: 33 steps" in r.stdout and "skipping the picture" in r.stdout
    pvd = (out / "tornado_upscaled.pvd").read_text()
    assert pvd.count("<DataSet") == 33 and 'timestep="2.5"' in pvd
    from stsr_core.io import read_series
    up = read_series(str(out / "tornado_upscaled.pvd"))
    assert up.dims == (33, 33, 33) and up.n_times == 33
    # the filter's default writes the error estimate beside the values (a vector's as one)
    assert set(up.components) == {"velocity", "velocity_error"}
    scalars = {"velocity_magnitude", "vorticity_magnitude"}
    assert set(up.variables) == scalars | {f"{n}_error" for n in scalars} | {
        f"velocity{e}_{c}" for e in ("", "_error") for c in range(3)}
    r = subprocess.run(["pvpython", os.path.join(ROOT, "examples", "open_model.py"),
                        str(out / "tornado.stsr"), "--out", str(out / "m")],
                       capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    assert sorted(os.listdir(out / "m")) == ["tornado_t0.vti", "tornado_t1.vti",
                                             "tornado_t2.vti"]
    assert "t = 1.25:" in r.stdout


def _read_pvti(path):
    """A .pvti written by ParaView's parallel writer: the gathered pieces as one image."""
    from vtkmodules.util.numpy_support import vtk_to_numpy
    from vtkmodules.vtkIOXML import vtkXMLPImageDataReader
    r = vtkXMLPImageDataReader()
    r.SetFileName(str(path))
    r.Update()
    img = r.GetOutput()
    pd = img.GetPointData()
    return img, {pd.GetArrayName(i): vtk_to_numpy(pd.GetArray(i)).copy()
                 for i in range(pd.GetNumberOfArrays())}


@pytest.mark.skipif(shutil.which("mpiexec") is None, reason="needs mpiexec (openmpi-bin)")
def test_mpiexec_pvbatch_pieces_of_two_ranks_equal_the_one_rank_output(series_file, tmp_path):
    """``mpiexec -n 2 pvbatch --sym``: the filter (rank 0 trains, the others get the model)
    and the model source (motion-compensated in time, so the pieces' warps are checked)
    each compute one piece per rank; ParaView's parallel writer gathers them, and the whole
    equals the engine's one-process output everywhere, seams included (to float32
    rounding: a few units in the last place of values near 300). Rank 0 also streams
    the source in 4 pieces in its own process."""
    from vtkmodules.util.numpy_support import vtk_to_numpy  # noqa: F401
    from stsr_core.io import read_series
    flow_model = tmp_path / "flow.stsr"
    api.fit(read_series(str(series_file)), device="cpu", model_overrides={"flow_iters": 20},
            checkpoint_path=str(flow_model))
    model = tmp_path / "m.stsr"
    env = pv_env(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    r = subprocess.run(["mpiexec", "--oversubscribe", "-n", "2", "pvbatch", "--sym",
                        os.path.join(PV, "mpi_check.py"), PLUGIN, str(series_file), str(model),
                        str(flow_model), str(tmp_path)],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0 and "mpi_check done on rank 1 of 2" in r.stdout, \
        r.stdout + r.stderr
    ranks = [json.loads((tmp_path / f"rank{k}.json").read_text()) for k in range(2)]
    # the work was split: two different pieces per proxy, neither the whole
    for proxy in ("filter_extent", "source_extent"):
        assert ranks[0][proxy] != ranks[1][proxy]
        assert [0, 12, 0, 10, 0, 8] not in (ranks[0][proxy], ranks[1][proxy])
    # rank 0 alone trained; rank 1 has its model (the same history)
    assert ranks[0]["training"] == ranks[1]["training"]
    t = ranks[0]["t_mid"]
    for name, path in (("filter", model), ("source", flow_model)):
        tm = api.load_model(str(path), device="cpu")
        g = api.output_grid(tm.info.grid, scale=2)
        whole = api.predict_timestep(tm, t, g)           # one process, the whole grid
        img, got = _read_pvti(tmp_path / f"{name}.pvti")
        assert img.GetDimensions() == g.dims
        for n in ("temperature", "rho"):
            span = float(np.ptp(whole[n]))
            np.testing.assert_allclose(got[n], whole[n].ravel(), rtol=1e-6,
                                       atol=1e-6 * span, err_msg=f"{name} {n}")
        np.testing.assert_allclose(got["v"][:, 0], whole["v_0"].ravel(), rtol=1e-6,
                                   atol=1e-6 * float(np.ptp(whole["v_0"])))
    # streaming by pieces in one process: 4 pieces that together make the whole
    st = np.load(tmp_path / "stream.npz")
    tm = api.load_model(str(flow_model), device="cpu")
    whole = api.predict_timestep(tm, t, api.output_grid(tm.info.grid, scale=2))
    seen = np.zeros(whole["rho"].shape, dtype=bool)
    for p in range(4):
        e = st[f"extent_{p}"]
        box = (slice(e[4], e[5] + 1), slice(e[2], e[3] + 1), slice(e[0], e[1] + 1))
        part = st[f"rho_{p}"].reshape(whole["rho"][box].shape)
        np.testing.assert_allclose(part, whole["rho"][box], rtol=1e-6,
                                   atol=1e-6 * float(np.ptp(whole["rho"])))
        seen[box] = True
    assert seen.all()
