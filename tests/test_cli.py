"""The `stsr` command end to end, as users and other tools call it, and its error lines.

Real processes where the process is what is tested (signals, the lock, kill -9, a whole
protocol); `stsr_core.cli.main` in this process where only its answer is (error lines,
--set, --help): the same code, without paying torch's import for each."""
import json
import os
import select
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from stsr_core import api
from stsr_core.io import read_series, write_series
from stsr_run import main_here
from test_engine import smooth_series

STSR = os.path.join(os.path.dirname(sys.executable), "stsr")
# the checkout under test: the venv's `stsr` script imports whichever stsr_core the venv was
# installed from (another worktree when the venv is shared), so put this one first
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def env():
    path = os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p)
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=path)


def run(*args, cwd=None):
    return subprocess.run([STSR, *args], capture_output=True, text=True, cwd=cwd, env=env(),
                          timeout=300)


def here(*args, cwd=None):
    """As run(), by cli.main in this process."""
    code, out, err = main_here(*args, cwd=cwd or os.getcwd())
    return subprocess.CompletedProcess(args, code, out, err)


def started(args, until, timeout=120):
    """A real `stsr ARGS` process (SIGINT as a terminal delivers it), once its stderr has
    shown ``until`` (e.g. a progress bar's words): (process, what it wrote so far)."""
    proc = subprocess.Popen([STSR, *map(str, args)], env=env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, preexec_fn=_default_sigint)
    seen, t0 = b"", time.monotonic()
    while until.encode() not in seen:
        left = timeout - (time.monotonic() - t0)
        ready, _, _ = select.select([proc.stderr], [], [], max(0.0, left))
        chunk = os.read(proc.stderr.fileno(), 65536) if ready else b""
        if not chunk:
            proc.kill()
            raise AssertionError(f"stsr never showed {until!r}: {seen.decode()[-2000:]}")
        seen += chunk
    return proc, seen.decode()


def stopped(proc, sig, so_far=""):
    """Send ``sig``; (exit status, everything the process wrote to stderr)."""
    proc.send_signal(sig)
    rest = proc.communicate(timeout=120)[1]
    return proc.returncode, so_far + rest.decode()


# the fast preset with its network on (default: the base alone, nothing to train or blend)
WITH_NETWORK = ["--set", "network=true"]
QUICK_BASE = ["--set", "flow_iters=30"]     # the base's displacement fits, shortened


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    write_series(smooth_series(nx=9, ny=9, nz=9, nt=9), str(d / "fine.pvd"))
    r = run("coarsen", "fine.pvd", "-o", "coarse.pvd", "--space", "2", "--time", "4", cwd=d)
    assert r.returncode == 0, r.stderr
    code, _, err = main_here("fit", "coarse.pvd", "-o", "m.stsr", "--steps", "20", "--device",
                             "cpu", "--seed", "3", "--quiet", "--batch-size", "1024",
                             *WITH_NETWORK, *QUICK_BASE, cwd=d)
    assert code == 0, err
    return d


def test_fit_upscale_eval_protocol(workdir):
    d = workdir
    coarse = read_series(str(d / "coarse.pvd"))
    assert coarse.dims == (5, 5, 5) and coarse.n_times == 3
    r = run("upscale", "m.stsr", "-o", "up.pvd", "--scale", "2", "--time-scale", "4",
            "--quiet", cwd=d)
    assert r.returncode == 0, r.stderr
    up, fine = read_series(str(d / "up.pvd")), read_series(str(d / "fine.pvd"))
    assert up.dims == fine.dims and np.allclose(up.times, fine.times)
    assert up.spacing == fine.spacing and up.origin == fine.origin
    kept = ",".join(repr(float(t)) for t in coarse.times)
    r = run("eval", "up.pvd", "--reference", "fine.pvd", "--kept-times", kept, "--json",
            "e.json", cwd=d)
    assert r.returncode == 0, r.stderr
    assert "temperature" in r.stdout and "between" in r.stdout
    res = json.loads((d / "e.json").read_text())
    assert res["psnr_mean"] > 15 and len(res["psnr_per_step"]) == 9
    assert res["kept"] == [True, False, False, False, True, False, False, False, True]


def test_program_ends_with_its_output_complete(workdir):
    """The program ends by os._exit once its command returned (cli._end_process): what it
    printed to a pipe (stdout buffered) and the files it wrote are all there, the status
    is the command's."""
    r = run("info", "m.stsr", "--json", cwd=workdir)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["variables"] == ["temperature", "rho"]
    r = run("upscale", "m.stsr", "-o", "ends.pvd", "--scale", "2", "--quiet", "--timings",
            "ends.json", cwd=workdir)
    assert r.returncode == 0, r.stderr
    assert json.loads((workdir / "ends.json").read_text())["steps"] == 3
    assert read_series(str(workdir / "ends.pvd")).n_times == 3
    r = run("info", "missing.stsr", cwd=workdir)
    assert r.returncode == 2 and "does not exist" in r.stderr


def test_upscale_h5_dims_and_times(workdir):
    """Also: a missing output folder is created (issue 16)."""
    r = here("upscale", "m.stsr", "-o", "new/dir/o.h5", "--dims", "7", "6", "5", "--times",
             "1.5,2.0", "--quiet", cwd=workdir)
    assert r.returncode == 0, r.stderr
    out = read_series(str(workdir / "new" / "dir" / "o.h5"))
    assert out.dims == (7, 6, 5) and list(out.times) == [1.5, 2.0]


def test_info_and_blend(workdir):
    r = here("info", "m.stsr", "--json", cwd=workdir)
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["variables"] == ["temperature", "rho"] and info["dims"] == [5, 5, 5]
    mix = info["base_time_mix"]             # the fast base's choice in time, per variable
    assert set(mix) == {"temperature", "rho"} and all(0 <= m <= 1 for m in mix.values())
    flow = info["base_flow_mix"]
    assert set(flow) == {"temperature", "rho"} and all(0 <= m <= 1 for m in flow.values())
    r = here("info", "m.stsr", cwd=workdir)
    assert r.returncode == 0 and "between steps: " in r.stdout, r.stdout + r.stderr
    assert "time choice  on held-out steps of the half series" in r.stdout, r.stdout
    r = here("blend", "m.stsr", "--from", "temperature", "--to", "rho", "--steps", "3",
             "--time", "2", "-o", "b.pvd", cwd=workdir)
    assert r.returncode == 0, r.stderr
    assert read_series(str(workdir / "b.pvd")).n_times == 3


@pytest.mark.parametrize("args, message", [
    (["fit", "nothere.pvd", "-o", "x.stsr"], "does not exist"),
    (["fit", "coarse.pvd", "-o", "m.stsr"], "exists; pass --overwrite"),
    (["fit", "coarse.pvd", "-o", "x.stsr", "--arrays", "nope"], "no array named 'nope'"),
    (["fit", "coarse.pvd", "-o", "x.stsr", "--device", "cuda"], "CUDA"),
    (["upscale", "m.stsr", "-o", "big.pvd", "--dims", "100000", "100000", "100000"],
     "not enough disk space for"),
    (["upscale", "m.stsr", "-o", "u.pvd", "--scale", "1.3"], "whole number"),
    (["upscale", "m.stsr", "-o", "u3.h5", "--compression", "lz4"],
     "compression 'lz4' is not one of zlib, none, gzip, lzf for h5 output"),
    (["upscale", "fine.pvd", "-o", "u2.pvd"], "is damaged or not an stsr model file"),
    (["fit", "coarse.pvd", "-o", "x.stsr", "--set", "bogus=1"],
     "no such setting of preset 'fast'; model settings: kind, network, latent_dim"),
    (["fit", "coarse.pvd", "-o", "x.stsr", "--set", "base_time=flw"], "unknown base_time 'flw'"),
    (["fit", "coarse.pvd", "-o", "x.stsr", "--set", "flow_iters=many"], "expected an integer"),
    (["fit", "coarse.pvd", "-o", "x.stsr", "--set", "flow_max_points=0"],
     "flow_max_points 0 is out of range; allowed: an integer >= 2"),
    (["fit", "coarse.pvd", "-o", "x.stsr", "--set", "flow_coarsen=0"],
     "flow_coarsen 0 is out of range; allowed: an integer >= 1"),
    (["fit", "coarse.pvd", "-o", "x.stsr", "--seed", "-99999999999999999999"],
     "seed -99999999999999999999 is out of range"),
    (["fit", "coarse.pvd", "-o", "m.stsr", "--resume", "--set", "width=8"],
     "model settings cannot change when resuming"),
    (["eval", "coarse.pvd", "--reference", "fine.pvd"], "differ"),
    (["blend", "m.stsr", "--from", "x", "--to", "rho", "--time", "2", "-o", "b2.pvd"],
     "no variable 'x'"),
])
def test_errors_are_one_clear_line(workdir, args, message):
    if "CUDA" == message:
        import torch
        if torch.cuda.is_available():
            pytest.skip("CUDA is present")
    code, _, err = main_here(*args, cwd=workdir)
    assert code == 2 and "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("stsr: error:") and message in last, err


def test_an_error_in_a_real_process_is_one_line_and_exit_status_2(workdir):
    r = run("fit", "coarse.pvd", "-o", "x.stsr", "--set", "flow_smooth=-5", cwd=workdir)
    assert r.returncode == 2 and r.stderr == ("stsr: error: flow_smooth -5.0 is out of "
                                              "range; allowed: a number >= 0\n"), r.stderr


def test_set_changes_model_and_training_settings(workdir):
    """--set reaches the preset's model and training configs, typed like their defaults,
    and the model file keeps what was asked for."""
    code, _, err = main_here("fit", "coarse.pvd", "-o", "cubic.stsr", "--steps", "3",
                             "--quiet", "--set", "base_time=cubic", "--set", "lr=0.005",
                             "--set", "flow_iters=10", cwd=workdir)
    assert code == 0, err
    info = json.loads(main_here("info", "cubic.stsr", "--json", cwd=workdir)[1])
    assert info["model"]["base_time"] == "cubic" and info["model"]["flow_iters"] == 10
    assert info["training"]["lr"] == 0.005
    assert info["base_time_mix"] == {"temperature": 1.0, "rho": 1.0}


def test_single_timestep_refuses_temporal_options(tmp_path):
    write_series(smooth_series(nt=1), str(tmp_path / "one.vti"))
    r = here("fit", "one.vti", "-o", "m.stsr", "--steps", "2", "--quiet", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    r = here("upscale", "m.stsr", "-o", "u.pvd", "--time-scale", "2", cwd=tmp_path)
    assert r.returncode == 2 and "single timestep" in r.stderr


def test_resume_continues_training(workdir):
    r = here("fit", "coarse.pvd", "-o", "m.stsr", "--resume", "--steps", "5", "--quiet",
             cwd=workdir)
    assert r.returncode == 0, r.stderr
    r = here("info", "m.stsr", "--json", cwd=workdir)
    assert json.loads(r.stdout)["history"]["steps"] == 25


def test_help_explains_every_command(tmp_path):
    code, out, _ = main_here("--help", cwd=tmp_path)
    assert code == 0
    for cmd in ("fit", "upscale", "eval", "info", "blend", "coarsen"):
        assert cmd in out
        code, h, _ = main_here(cmd, "--help", cwd=tmp_path)
        assert code == 0 and "usage: stsr " + cmd in h


def test_a_fit_killed_mid_run_leaves_the_last_checkpoint_loadable(workdir, tmp_path):
    """--checkpoint-seconds reaches the trainer: kill -9 once a 2-second-checkpoint run has
    written one leaves a model file that loads, with the steps done up to its last
    checkpoint."""
    model = tmp_path / "killed.stsr"
    proc = subprocess.Popen([STSR, "fit", str(workdir / "coarse.pvd"), "-o", str(model),
                             "--max-minutes", "5", "--device", "cpu", "--quiet",
                             "--checkpoint-seconds", "2", *WITH_NETWORK, *QUICK_BASE],
                            env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        t0 = time.monotonic()
        while not model.exists():
            assert proc.poll() is None, "the 5-minute fit ended before it was killed"
            assert time.monotonic() - t0 < 120, "no checkpoint in 2 minutes"
            time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    tm = api.load_model(str(model), device="cpu")
    assert tm.info.history["stopped"] == "checkpoint" and tm.info.history["steps"] > 0


def test_the_default_fit_is_the_base_alone_and_info_says_so(workdir, tmp_path):
    model = str(tmp_path / "base.stsr")
    r = here("fit", str(workdir / "coarse.pvd"), "-o", model, "--quiet", "--max-minutes", "0.1",
             *QUICK_BASE)
    assert r.returncode == 0 and "no network to train" in r.stderr, r.stderr
    assert not os.path.exists(model + ".resume")
    r = here("info", model)
    assert r.returncode == 0, r.stderr
    assert "the spline base alone" in r.stdout and "nothing to train" in r.stdout, r.stdout


def _default_sigint() -> None:
    """In a child that the test signals: SIGINT as a terminal's Ctrl-C delivers it. A test
    run started in the background inherits SIGINT ignored, and so would `stsr` (as a
    background job should), which then never sees the test's SIGINT."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _started_fit(data, model, *extra):
    """A real `stsr fit` of the network preset, once it is training (its progress bar shows
    the kept data's PSNR)."""
    return started(["fit", data, "-o", model, "--max-minutes", "5", "--device", "cpu",
                    *WITH_NETWORK, *QUICK_BASE, *extra], until="PSNR(kept)")


def test_sigterm_during_training_writes_a_last_checkpoint_and_exits_non_zero(workdir,
                                                                              tmp_path):
    model = tmp_path / "term.stsr"
    proc, so_far = _started_fit(workdir / "coarse.pvd", model, "--checkpoint-seconds", "600")
    code, err = stopped(proc, signal.SIGTERM, so_far)
    assert code == 143 and "stsr: terminated; the model file holds the last checkpoint" \
        in err, err
    tm = api.load_model(str(model), device="cpu")       # no periodic one was due: this one
    assert tm.info.history["stopped"] == "checkpoint" and tm.info.history["steps"] > 0
    assert not os.path.exists(str(model) + ".lock")


@pytest.fixture(scope="module")
def slow_base(tmp_path_factory):
    """A series whose base fit takes long enough to be stopped midway (15 displacement fits
    of about a second each here)."""
    path = tmp_path_factory.mktemp("slow") / "slow.h5"
    write_series(smooth_series(nx=16, ny=16, nz=16, nt=9), str(path))
    return path


@pytest.mark.parametrize("sig, code, what", [("SIGTERM", 143, "terminated"),
                                             ("SIGINT", 130, "interrupted")])
def test_a_signal_during_the_base_fit_saves_the_fits_done_so_far_and_exits_non_zero(
        slow_base, tmp_path, sig, code, what):
    """As ParaView's abort: the displacement fits done are kept, the rest skipped as a spent
    time budget would leave them; the model loads and says so; exit 143 / 130."""
    model = tmp_path / "stopped.stsr"
    proc, so_far = started(["fit", slow_base, "-o", model, "--device", "cpu"],
                           until="fitting the base to the data")    # one fit done
    status, err = stopped(proc, getattr(signal, sig), so_far)
    assert status == code, err
    assert f"stsr: {what}: ending the fit with the work done so far" in err, err
    assert err.rstrip().endswith(f"stsr: {what}; the model file holds the model fitted so "
                                 f"far (saved {model}: it loads; the notes above say what "
                                 "the stop skipped)"), err
    tm = api.load_model(str(model), device="cpu")
    h = tm.info.history
    assert h["stopped"] == "cancelled" and h["steps"] == 0
    note = [n for n in h["init_notes"] if n.startswith("the fit was stopped: ")]
    skipped = int(note[0].split(": ")[1].split()[0])
    assert 0 < skipped < 15 and f"{skipped} of 15 displacement fits skipped" in err
    flow = tm.model.base.flow                        # [intervals, 3, ...]: the first done
    assert float(flow[0].abs().max()) > 0 and float(flow[-1].abs().max()) == 0.0
    out = api.predict_timestep(tm, 2.25, api.output_grid(tm.info.grid, scale=1))
    assert all(np.isfinite(v).all() for v in out.values())
    assert not os.path.exists(str(model) + ".lock")
    r = here("info", str(model))
    assert "stopped before its end, nothing trained" in r.stdout, r.stdout


def test_a_second_fit_to_the_same_model_file_is_refused_while_the_first_runs(workdir,
                                                                              tmp_path):
    model = tmp_path / "busy.stsr"
    first, so_far = _started_fit(workdir / "coarse.pvd", model)
    try:
        r = here("fit", str(workdir / "coarse.pvd"), "-o", str(model), "--quiet")
        assert r.returncode == 2 and f"another stsr fit (process {first.pid}) is writing" \
            in r.stderr, r.stderr
    finally:
        code, err = stopped(first, signal.SIGINT, so_far)    # Ctrl-C: as SIGTERM, exit 130
    assert code == 130 and "stsr: interrupted; the model file holds the last checkpoint" \
        in err, err
    assert api.load_model(str(model), device="cpu").info.history["stopped"] == "checkpoint"
    assert not os.path.exists(str(model) + ".lock")
    # the first is gone: a new fit may replace its result
    r = here("fit", str(workdir / "coarse.pvd"), "-o", str(model), "--quiet", "--overwrite",
             "--max-minutes", "0.1", *QUICK_BASE)
    assert r.returncode == 0, r.stderr


def test_a_lock_left_by_a_fit_that_is_gone_is_taken_over(workdir, tmp_path):
    """A fit killed with -9 leaves MODEL.lock behind: the next fit takes it, and frees it."""
    dead = subprocess.Popen(["true"])
    dead.wait()
    model = tmp_path / "m.stsr"
    (tmp_path / "m.stsr.lock").write_text(str(dead.pid))
    r = here("fit", str(workdir / "coarse.pvd"), "-o", str(model), "--quiet", "--max-minutes",
             "0.1", *QUICK_BASE)
    assert r.returncode == 0, r.stderr
    assert os.listdir(tmp_path) == ["m.stsr"]


@pytest.fixture(scope="module")
def base_model(workdir):
    """The default model (the base alone) of the coarse series."""
    code, _, err = main_here("fit", "coarse.pvd", "-o", "base.stsr", "--quiet",
                             "--set", "flow_iters=30", cwd=workdir)
    assert code == 0, err
    return workdir / "base.stsr"


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT"])
def test_a_signal_during_upscale_leaves_only_complete_steps(base_model, tmp_path, sig):
    out = tmp_path / "up" / "up.pvd"
    proc = subprocess.Popen([STSR, "upscale", str(base_model), "-o", str(out), "--dims",
                             "200", "200", "200", "--time-scale", "8", "--compression", "none",
                             "--quiet"], env=env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            preexec_fn=_default_sigint)
    t0 = time.monotonic()
    while not out.exists():               # the first complete step is listed: mid-run
        assert proc.poll() is None, proc.stderr.read()
        assert time.monotonic() - t0 < 120, "no step written in 2 minutes"
        time.sleep(0.1)
    proc.send_signal(getattr(signal, sig))
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == {"SIGTERM": 143, "SIGINT": 130}[sig] and "only complete steps" \
        in err, err
    left = sorted(os.listdir(out.parent))
    assert not [f for f in left if f.startswith(".")], left          # no partial file
    steps = os.listdir(out.parent / "up")    # nor one the writing thread was writing
    assert not [f for f in steps if f.startswith(".")], steps
    listed = read_series(str(out))                 # the complete steps, readable
    assert 0 < listed.n_times < 17 and listed.dims == (200, 200, 200)
    assert len(steps) == listed.n_times


def test_a_diverging_fit_stops_with_a_message_and_keeps_the_previous_model(workdir, tmp_path):
    import shutil
    model = tmp_path / "kept.stsr"
    shutil.copy(workdir / "m.stsr", model)
    before = model.read_bytes()
    r = here("fit", str(workdir / "coarse.pvd"), "-o", str(model), "--overwrite", "--quiet",
             "--steps", "300", *WITH_NETWORK, *QUICK_BASE, "--set", "lr=1e9", "--set",
             "warmup_steps=0", "--set", "log_every=1")
    assert r.returncode == 2 and "training diverged at step" in r.stderr, r.stderr
    assert model.read_bytes() == before
