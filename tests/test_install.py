"""The package as a user of ParaView's binaries installs it (docs/paraview.md, "From a
wheel"): a wheel built by `pip wheel .`, installed into a fresh venv made from ParaView's own
Python; `stsr --help` and `stsr plugin-path` answer there, and ParaView loads the plugin from
the folder that prints (PV_PLUGIN_PATH, no LoadPlugin). Without torch in that venv the
plugin says in ParaView's output window which Python it runs, where it looked and the
command that fixes it; with torch it upscales. Real pip, real venvs, real pvpython: started
with `--venv=DIR` (ParaView 5.12 and later), or on ParaView 5.11, which has no --venv, with
the venv's site-packages and the getargspec shim on PYTHONPATH, as docs/paraview.md says.

torch is not downloaded again for the fresh venv (4.6 GB from PyPI on Debian 13): the
wheel's requirements that the project's venv holds (torch, numba and what they need) are
linked in from there (what pip would have unpacked), then pip installs the wheel resolving
its requirements from what the venv has: those, and the platform's numpy (1.24 on
Debian 12, 2.2 on Debian 13)."""
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from test_engine import smooth_series
from stsr_core.io import write_series

ROOT = Path(__file__).resolve().parent.parent
PV = ROOT / "tests" / "pv"
pytestmark = pytest.mark.skipif(shutil.which("pvpython") is None,
                                reason="ParaView (pvpython) is not installed")


def run(*argv, **kwargs):
    r = subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=600,
                       **kwargs)
    assert r.returncode == 0, f"{' '.join(map(str, argv))}\n{r.stdout}{r.stderr}"
    return r


@pytest.fixture(scope="module")
def paraview():
    """ParaView's version (X.Y) and its Python: version and interpreter on this system."""
    r = run("pvpython", "-c", "import sys, paraview; print(paraview.__version__, "
            "'%d.%d' % sys.version_info[:2], sys.base_prefix)")
    pv, py, prefix = r.stdout.split()[-3:]
    return {"version": ".".join(pv.split(".")[:2]), "python_version": py,
            "python": str(Path(prefix) / "bin" / f"python{py}")}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    """`pip wheel .` on a copy of what the build reads (the working tree stays untouched by
    setuptools' build folders), without a network or build environment."""
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy(ROOT / name, src)
    for name in ("stsr_core", "plugin"):
        shutil.copytree(ROOT / name, src / name,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    out = tmp_path_factory.mktemp("wheels")
    run(sys.executable, "-m", "pip", "wheel", "--no-build-isolation", "--no-deps", "--no-index",
        "-w", out, src)
    (whl,) = out.glob("stsr_inr-*.whl")
    return whl


def fresh_venv(path, paraview):
    """A venv of ParaView's Python seeing Debian's packages (numpy, tqdm, lz4, h5py):
    (venv, its site-packages)."""
    run(paraview["python"], "-m", "venv", "--system-site-packages", path)
    return path, path / "lib" / f"python{paraview['python_version']}" / "site-packages"


def pip_install(venv, wheel, *options):
    """The wheel into the venv, from nothing but the files here."""
    run(venv / "bin" / "python", "-m", "pip", "install", "--no-index", *options, wheel)


def link_requirements(site, wheel):
    """The wheel's requirements and every distribution they require (with the extras asked
    for) that the project's venv holds (not Debian's), linked into ``site`` as pip would
    have installed them there."""
    from packaging.requirements import Requirement
    own = Path(sys.prefix).resolve()
    names = zipfile.ZipFile(wheel).namelist()
    meta = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("/METADATA")))
    todo = [r for r in (Requirement(line.split(":", 1)[1].strip())
                        for line in meta.decode().splitlines()
                        if line.startswith("Requires-Dist:")) if r.marker is None]
    seen = set()
    while todo:
        req = todo.pop()
        key = (req.name.lower().replace("_", "-"), frozenset(req.extras))
        if key in seen:
            continue
        seen.add(key)
        try:
            dist = importlib.metadata.distribution(req.name)
        except importlib.metadata.PackageNotFoundError:
            continue                    # not for this platform, or none here: pip will say
        base = Path(dist.locate_file("")).resolve()
        if own not in base.parents:
            continue                    # Debian's: the venv sees it already
        for top in {Path(str(f)).parts[0] for f in dist.files or []
                    if not str(f).startswith("..")}:
            if not (site / top).exists():
                (site / top).symlink_to(base / top)
        for text in dist.requires or []:
            r = Requirement(text)
            if r.marker is None or any(r.marker.evaluate({"extra": e})
                                       for e in (req.extras or {""})):
                todo.append(r)


def pv_run(venv, site, plugin_path, paraview, data, out, tmp_path):
    """tests/pv/installed_check.py in pvpython started as docs/paraview.md says."""
    env = dict(os.environ, PV_PLUGIN_PATH=plugin_path, OMP_NUM_THREADS="1")
    env.pop("PYTHONPATH", None)
    argv = ["pvpython"]
    if paraview["version"] == "5.11":         # no --venv; Python 3.11 needs the shim
        shim = tmp_path / "pv511"
        shim.mkdir(exist_ok=True)
        (shim / "sitecustomize.py").write_text(
            "import inspect\ninspect.getargspec = inspect.getfullargspec\n")
        env["PYTHONPATH"] = f"{site}{os.pathsep}{shim}"
    else:
        argv += [f"--venv={venv}"]
    r = subprocess.run(argv + [str(PV / "installed_check.py"), str(data), str(out)],
                       capture_output=True, text=True, env=env, timeout=600, cwd=tmp_path)
    assert r.returncode == 0 and "installed_check done" in r.stdout, r.stdout + r.stderr
    return json.loads(Path(out).read_text())


@pytest.fixture(scope="module")
def series(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "in.pvd"
    write_series(smooth_series(nx=7, ny=6, nz=5, nt=3), str(path))
    return path


def test_the_wheel_carries_the_engine_and_the_plugin_alone_in_its_folder(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert [n for n in names if n.startswith("stsr_paraview/")] == \
        ["stsr_paraview/STSRINRPlugin.py"]
    shipped = {n for n in names if n.startswith("stsr_core/") and n.endswith(".py")}
    source = {str(p.relative_to(ROOT)) for p in (ROOT / "stsr_core").rglob("*.py")}
    assert shipped == source
    meta = zipfile.ZipFile(wheel).read(
        next(n for n in names if n.endswith("/METADATA"))).decode()
    numpy_req = re.search(r"^Requires-Dist: numpy.*$", meta, re.M).group(0)
    assert "<2" not in numpy_req, numpy_req      # numpy 2 allowed wherever it is given


def test_the_wheel_carries_the_shipped_networks_and_their_provenance(wheel):
    """The side-weights network and the spatial prior (stsr_core/model/weights): the same
    bytes as in the source, each .pt beside its provenance JSON."""
    whl = zipfile.ZipFile(wheel)
    source = sorted(p.name for p in (ROOT / "stsr_core" / "model" / "weights").iterdir()
                    if p.suffix in (".pt", ".json"))
    assert {"space_prior_v1.pt", "space_prior_v1.json", "side_weights_v1.pt"} <= set(source)
    for name in source:
        assert whl.read(f"stsr_core/model/weights/{name}") == \
            (ROOT / "stsr_core" / "model" / "weights" / name).read_bytes(), name


def test_a_fresh_venv_without_torch_answers_and_the_plugin_says_how_to_get_torch(
        wheel, paraview, series, tmp_path):
    """The missing-torch message, in a pvpython whose Python has no torch: ParaView loads
    the plugin from `stsr plugin-path`, and applying the filter gives one error naming the
    Python ParaView runs, the paths it looked in, and the pip command for this venv."""
    venv, site = fresh_venv(tmp_path / "venv", paraview)
    pip_install(venv, wheel, "--no-deps")          # as if torch had been left out
    assert "plugin-path" in run(venv / "bin" / "stsr", "--help").stdout
    plugin_path = run(venv / "bin" / "stsr", "plugin-path").stdout.strip()
    assert Path(plugin_path) == site / "stsr_paraview"
    # alone there (beside pip's __pycache__ folder): ParaView loads every file of the folder
    assert [p.name for p in Path(plugin_path).iterdir() if p.is_file()] == ["STSRINRPlugin.py"]
    assert run(venv / "bin" / "stsr", "plugin-path", "--file").stdout.strip() == \
        str(site / "stsr_paraview" / "STSRINRPlugin.py")
    res = pv_run(venv, site, plugin_path, paraview, series, tmp_path / "out.json", tmp_path)
    assert res["registered"] and res["points"] == 0 and res["torch"] is None, res
    (message,) = {m for m in res["errors"] if "STSR-INR needs PyTorch" in m}   # per request
    lines = message.strip().split("\n")
    assert "No module named 'torch'" in lines[0], message
    python = ".".join(map(str, res["python"]))
    assert f"ParaView {paraview['version']}" in lines[1] and f"Python {python}" in lines[1]
    assert lines[2].startswith("It looked in: ") and str(site) in lines[2], message
    assert lines[3].startswith(f"To fix: '{venv / 'bin' / 'python'}' -m pip install torch, "), \
        message
    assert not any("Traceback" in m for m in res["errors"]), res["errors"]


def test_a_fresh_venv_with_torch_upscales_in_paraview_from_the_plugin_path(
        wheel, paraview, series, tmp_path):
    venv, site = fresh_venv(tmp_path / "venv", paraview)
    link_requirements(site, wheel)
    pip_install(venv, wheel)          # its requirements resolved: torch, numba, Debian's numpy
    plugin_path = run(venv / "bin" / "stsr", "plugin-path").stdout.strip()
    res = pv_run(venv, site, plugin_path, paraview, series, tmp_path / "out.json", tmp_path)
    assert res["errors"] == [] and res["points"] == 13 * 11 * 9, res
    assert res["arrays"] == ["rho", "temperature"] and len(res["times"]) == 5, res
    # the plugin and the engine came from the wheel's files in the fresh venv
    assert res["plugin"] == str(site / "stsr_paraview" / "STSRINRPlugin.py"), res
    assert res["stsr_core"] == str(site / "stsr_core" / "__init__.py"), res
    assert res["torch"].startswith(str(site)), res
