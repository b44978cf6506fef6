"""Python users' in-memory path: image frames in, image frames out, no files. The real
pyvista (make setup installs it beside the venv, in .pyvista-site, on ParaView's VTK) runs in
processes of its own; objects merely shaped like images run here; and pvpython, which uses
the venv, still loads the plugin on ParaView's own VTK with no pyvista in sight."""
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

import stsr_core
from stsr_core import StsrError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PV_SITE = os.path.join(ROOT, ".pyvista-site")


def pyvista_env():
    """The environment the real pyvista runs in: this checkout, then .pyvista-site (when
    pyvista is not importable anyway)."""
    paths = [ROOT, PV_SITE, os.environ.get("PYTHONPATH", "")]
    return dict(os.environ, OMP_NUM_THREADS="1",
                PYTHONPATH=os.pathsep.join(p for p in paths if p))


def has_pyvista() -> bool:
    r = subprocess.run([sys.executable, "-c", "import pyvista"], env=pyvista_env(),
                       capture_output=True, timeout=120)
    return r.returncode == 0


needs_pyvista = pytest.mark.skipif(
    not has_pyvista(), reason="pyvista is not installed: make setup (scripts/setup.sh) puts "
                              "it in .pyvista-site")


@needs_pyvista
def test_real_pyvista_frames_convert_both_ways_on_paraviews_vtk():
    r = subprocess.run([sys.executable, os.path.join(ROOT, "tests", "pyvista_check.py")],
                       env=pyvista_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "pyvista_check ok" in r.stdout, r.stdout + r.stderr
    # ParaView's VTK (9.2 on Debian 12, 9.3 on Debian 13), the one this venv sees
    from vtkmodules.vtkCommonCore import vtkVersion
    paraviews = (vtkVersion.GetVTKMajorVersion(), vtkVersion.GetVTKMinorVersion())
    assert "VTK VersionInfo(major=%d, minor=%d," % paraviews in r.stdout, r.stdout


@needs_pyvista
def test_notebook_example_fits_pyvista_frames_and_predicts_pyvista_frames():
    r = subprocess.run([sys.executable, os.path.join(ROOT, "examples", "pyvista_notebook.py")],
                       env=pyvista_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "predicted: 9 frames of (17, 17, 17) points, a ImageData" in r.stdout, r.stdout
    mean = float(r.stdout.split("mean PSNR")[1].split("dB")[0])
    assert mean > 35, r.stdout


class Frame:
    """Anything shaped like an image: dimensions, origin, spacing, point_data (x fastest)."""

    def __init__(self, t, dims=(4, 3, 2), **arrays):
        self.dimensions, self.origin, self.spacing = dims, (0.0, 1.0, 2.0), (0.5, 0.5, 1.0)
        n = int(np.prod(dims))
        self.point_data = arrays or {"a": np.arange(n, dtype=np.float64) + 10 * t,
                                     "v": np.ones((n, 2)) * t}
        self.field_data = {"TimeValue": [0.25 * t]}


def test_objects_shaped_like_images_become_a_series_in_vtk_point_order():
    s = stsr_core.series_from_images([Frame(0), Frame(1), Frame(2)])
    assert s.dims == (4, 3, 2) and s.names == ["a", "v_0", "v_1"]
    np.testing.assert_allclose(s.times, [0, 0.25, 0.5])
    np.testing.assert_allclose(s.variables["a"][1, 1, 2, 3], 1 * 12 + 2 * 4 + 3 + 10)
    s = stsr_core.series_from_images([Frame(0), Frame(1)], times=[5, 7], arrays=["a"])
    assert s.names == ["a"] and list(s.times) == [5, 7]


@pytest.mark.parametrize("frames, message", [
    ([Frame(0), Frame(1, dims=(4, 3, 3))], r"timesteps have different grids"),
    ([Frame(0, a=np.zeros(5))], r"array 'a' at step 0 has shape \(5,\); the grid 4x3x2 "
                                r"needs 24 values"),
    ([Frame(0, a=np.full(24, np.nan))], r"array 'a' in the images holds 24 NaN"),
    ([Frame(0), "frame.vti"], r"step 1 is a str, not image data"),
    ([], r"no images"),
])
def test_bad_frames_are_one_error_naming_the_step(frames, message):
    with pytest.raises(StsrError, match=message):
        stsr_core.series_from_images(frames)


def test_fit_on_frames_predicts_a_finer_series_and_says_pyvista_is_needed_for_images(tmp_path):
    model = stsr_core.fit([Frame(t) for t in range(3)], max_minutes=0.2, device="cpu")
    assert model.variables == ["a", "v_0", "v_1"] and model.times == [0, 0.25, 0.5]
    fine = model.predict_series(scale=2, time_scale=2)
    assert fine.dims == (7, 5, 3) and fine.n_times == 5
    np.testing.assert_allclose(fine.variables["a"][2, ::2, ::2, ::2],
                               np.arange(24).reshape(2, 3, 4) + 10, atol=1e-3)
    model.save(str(tmp_path / "m.stsr"))
    assert stsr_core.load(str(tmp_path / "m.stsr")).grid == model.grid
    try:
        import pyvista  # noqa: F401
    except ImportError:
        with pytest.raises(StsrError, match="pyvista is needed"):
            model.predict(scale=2)


@pytest.mark.skipif(shutil.which("pvpython") is None, reason="ParaView is not installed")
def test_pvpython_loads_the_plugin_on_paraviews_vtk_without_pyvista(tmp_path):
    """The venv pvpython uses holds neither pyvista nor PyPI's vtk (they live apart, in
    .pyvista-site), so ParaView's VTK is the one the plugin gets."""
    script = tmp_path / "check.py"
    script.write_text(
        "import importlib.util, vtkmodules\n"
        "from paraview.simple import LoadPlugin, Wavelet\n"
        f"LoadPlugin({os.path.join(ROOT, 'plugin', 'STSRINRPlugin.py')!r}, ns=globals())\n"
        "STSRINRUpscale(Input=Wavelet())\n"
        "print('vtk at', vtkmodules.__file__)\n"
        "print('pyvista', importlib.util.find_spec('pyvista'))\n"
        "print('vtk wheel', importlib.util.find_spec('vtk') and "
        "importlib.util.find_spec('vtk').origin)\n")
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "scripts", "pvsite"))
    env.pop("PV_PLUGIN_PATH", None)
    r = subprocess.run(["pvpython", str(script)], capture_output=True, text=True, env=env,
                       timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "vtk at /usr/lib/python3/dist-packages/vtkmodules" in r.stdout, r.stdout
    assert "pyvista None" in r.stdout, r.stdout
    assert "site-packages" not in r.stdout.split("vtk wheel")[1], r.stdout
