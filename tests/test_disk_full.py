"""A disk that fills up while `stsr fit` writes the model or `stsr upscale` writes its
output (issue 19): a one-line error, the previous model or output intact and loadable, no
temporary file left. Two ways: a real size-limited filesystem (tmpfs, where this machine
lets the tests mount one) and ENOSPC from fsync in an unchanged stsr (tests/enospc_run.py),
which always runs."""
import errno
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from stsr_core import StsrError, api
from stsr_core.io import read_series, write_series
from stsr_run import main_here
from test_engine import smooth_series

ROOT = Path(__file__).resolve().parent.parent
RUNNER = ROOT / "tests" / "enospc_run.py"
QUICK = ["--set", "flow_iters=5"]            # the base's displacement fit, short


def stsr(*args, fsyncs=None, cwd=None):
    """`stsr ARGS` as a user runs it; with ``fsyncs``, the disk is full after that many."""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=path)
    cmd = [sys.executable, str(RUNNER), str(fsyncs)] if fsyncs is not None else \
        [sys.executable, "-m", "stsr_core.cli"]
    return subprocess.run(cmd + [str(a) for a in args], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=300)


def snapshot(folder: Path):
    """Every file under ``folder`` and its bytes (the user's input must stay as it was)."""
    return {p: p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def one_line_error(r, *words):
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("stsr: error: ") and all(w in last for w in words), r.stderr
    return last


def hidden(folder: Path):
    """Temporary files and folders the writers use (all start with a dot)."""
    return sorted(p.name for p in folder.rglob(".*"))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A coarse series and a model of it, made once."""
    d = tmp_path_factory.mktemp("diskfull")
    write_series(smooth_series(nx=5, ny=5, nz=5, nt=3), str(d / "coarse.pvd"))
    code, _, err = main_here("fit", d / "coarse.pvd", "-o", d / "model.stsr", "--quiet", *QUICK,
                             cwd=d)
    assert code == 0, err
    return d


def test_a_disk_full_while_fit_saves_keeps_the_previous_model(data, tmp_path):
    model = tmp_path / "m.stsr"
    shutil.copy(data / "model.stsr", model)
    before, given = model.read_bytes(), snapshot(data)
    r = stsr("fit", data / "coarse.pvd", "-o", model, "--overwrite", "--quiet", *QUICK,
             "--set", "base_time=linear", fsyncs=0)
    one_line_error(r, f"cannot write '{model}': the disk is full",
                   "it keeps its previous contents and no partial file is left")
    assert model.read_bytes() == before and os.listdir(tmp_path) == ["m.stsr"]
    assert api.load_model(str(model)).model_config.base_time == "select"   # the old one
    assert snapshot(data) == given                                      # the input too


@pytest.mark.parametrize("previous", [True, False], ids=["replacing", "new"])
def test_a_disk_full_during_upscale_keeps_the_previous_output_or_complete_steps(
        data, tmp_path, previous):
    out = tmp_path / "up.pvd"
    if previous:
        code, _, err = main_here("upscale", data / "model.stsr", "-o", out, "--scale", "2",
                                 "--quiet", cwd=tmp_path)
        assert code == 0, err
        old = read_series(str(out))
        files = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    # 9 steps; the disk is full after 3 flushes (a new output flushes each step and its .pvd)
    r = stsr("upscale", data / "model.stsr", "-o", out, "--scale", "2", "--time-scale", "4",
             "--quiet", *(["--overwrite"] if previous else []), fsyncs=3)
    last = one_line_error(r, f"of '{out}': the disk is full")
    assert hidden(tmp_path) == []
    if previous:
        assert "an output that was there before is unchanged" in last
        assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == files
        assert read_series(str(out)).n_times == old.n_times == 3
    else:      # the steps complete before the disk filled, listed and readable
        kept = read_series(str(out))
        assert kept.n_times == 1 and kept.dims == (9, 9, 9)
        assert sorted(os.listdir(tmp_path / "up")) == ["up_0000.vti"]


# --- a real filesystem that fills up -----------------------------------------------------------
@pytest.fixture
def small_disk(tmp_path):
    """A 80 MB tmpfs (skipped where mounting is not permitted); ``fill()`` takes all its free
    space but ``leave`` bytes, as another program writing there would."""
    where = tmp_path / "disk"
    where.mkdir()
    if not hasattr(os, "geteuid") or os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a size-limited tmpfs needs root")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=80m", "tmpfs", str(where)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")

    def fill(leave: int = 0) -> None:
        filler = where / "filler"
        with open(filler, "ab", buffering=0) as fh:     # unbuffered: closing flushes nothing
            try:
                while True:
                    fh.write(b"\0" * (1 << 20))
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
        os.truncate(filler, max(os.path.getsize(filler) - leave, 0))
        fill.used = True

    try:
        yield where, fill
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def test_fit_into_a_full_filesystem_keeps_the_previous_model(data, small_disk):
    disk, fill = small_disk
    model = disk / "m.stsr"
    shutil.copy(data / "model.stsr", model)
    before = model.read_bytes()
    fill(leave=8192)                # room for the lock file, not for a model
    code, out, err = main_here("fit", data / "coarse.pvd", "-o", model, "--overwrite",
                               "--quiet", *QUICK, "--set", "network=true", "--steps", "1",
                               cwd=disk)
    one_line_error(subprocess.CompletedProcess([], code, out, err),
                   f"cannot write '{model}': the disk is full")
    assert model.read_bytes() == before and sorted(os.listdir(disk)) == ["filler", "m.stsr"]
    assert api.load_model(str(model)).info.history["stopped"] == "fitted"


def test_upscale_into_a_filesystem_that_fills_up_keeps_the_previous_output(data, small_disk):
    disk, fill = small_disk
    out = disk / "up.pvd"
    tm = api.load_model(str(data / "model.stsr"))
    api.upscale(tm, str(out), scale=2)
    files = {p: p.read_bytes() for p in disk.rglob("*") if p.is_file()}

    def another_program_fills_the_disk(fraction: float) -> None:
        if not getattr(fill, "used", False):    # after the first step written, while the
            fill()                              # next ones are computed and queued
    with pytest.raises(StsrError, match=r"cannot write step [1-9] of '.*up\.pvd': the disk is "
                                        r"full \(No space left on device\); an output that "
                                        "was there before is unchanged"):
        api.upscale(tm, str(out), scale=2, time_scale=4, overwrite=True,
                    callback=another_program_fills_the_disk)
    os.remove(disk / "filler")
    assert hidden(disk) == []
    assert {p: p.read_bytes() for p in disk.rglob("*") if p.is_file()} == files
    np.testing.assert_array_equal(read_series(str(out)).variables["rho"],
                                  api.predict(tm, scale=2).variables["rho"])
