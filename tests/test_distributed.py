"""Several processes, one job (issue 18): torchrun, mpiexec and a launcher's bare environment
start real processes on tiny data; each run is bounded by a timeout."""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from stsr_core import api, distributed
from stsr_core.errors import StsrError
from stsr_core.io import read_series, write_series
from stsr_run import main_here
from test_engine import smooth_series

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.dirname(sys.executable)
TORCHRUN = os.path.join(BIN, "torchrun")
QUICK = ["--set", "flow_iters=20"]          # short displacement fits: tiny tests
NETWORK = ["--set", "network=true", "--batch-size", "1024"]
MPI_ROOT = {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}


def env(**extra):
    """This checkout first on the path (the venv's editable install may be another's), one
    thread per process, a short timeout for a rank that stops answering."""
    path = os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p)
    e = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=path,
             **{distributed.TIMEOUT_ENV: "30"})
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        e.pop(k, None)
    e.update(extra)
    return e


PYTHON_M = [sys.executable, "-m"]
MPIEXEC = ["mpiexec", "--oversubscribe", "-n", "2", *PYTHON_M]


def stsr(*args, cwd, launcher=PYTHON_M, timeout=180, **extra):
    """``LAUNCHER stsr_core.cli ARGS`` (the launcher ends in a module runner's -m)."""
    r = subprocess.run([*launcher, "stsr_core.cli", *args], cwd=cwd,
                       env=env(**extra), capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, r.stdout + r.stderr
    return r


def torchrun(n):
    """torchrun as docs/cluster.md gives it (--standalone: a free port of its own)."""
    return [TORCHRUN, "--standalone", "--nproc-per-node", str(n), "-m"]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    d = tmp_path_factory.mktemp("dist")
    write_series(smooth_series(nx=9, ny=9, nz=9, nt=5), str(d / "fine.pvd"))
    coarse = smooth_series(nx=9, ny=9, nz=9, nt=5).subsample(space=2, time=1)
    write_series(coarse, str(d / "coarse.pvd"))
    return d


# --- the launcher's environment and the shares (no processes) ------------------------------
def test_the_launchers_environments_name_the_same_rank_and_world():
    assert distributed.detect({}) == distributed.LaunchEnv()
    run = distributed.detect({"RANK": "1", "WORLD_SIZE": "4", "LOCAL_RANK": "1",
                              "MASTER_ADDR": "node0", "MASTER_PORT": "1234"})
    assert (run.rank, run.world_size, run.local_rank, run.master_addr, run.master_port,
            run.launcher) == (1, 4, 1, "node0", 1234, "torchrun")
    mpi = distributed.detect({"OMPI_COMM_WORLD_RANK": "1", "OMPI_COMM_WORLD_SIZE": "2",
                              "OMPI_COMM_WORLD_LOCAL_RANK": "1"})
    assert (mpi.rank, mpi.world_size, mpi.master_addr, mpi.launcher) == \
        (1, 2, "127.0.0.1", "openmpi")
    slurm = distributed.detect({"SLURM_PROCID": "3", "SLURM_NTASKS": "8", "SLURM_LOCALID": "1",
                                "SLURM_NNODES": "2", "MASTER_ADDR": "n1"})
    assert (slurm.rank, slurm.world_size, slurm.local_rank, slurm.launcher) == \
        (3, 8, 1, "slurm")
    with pytest.raises(StsrError, match="MASTER_ADDR"):      # several nodes need a meeting point
        distributed.detect({"SLURM_PROCID": "0", "SLURM_NTASKS": "8", "SLURM_NNODES": "2"})
    with pytest.raises(StsrError, match="rank 5 of 2"):
        distributed.detect({"RANK": "5", "WORLD_SIZE": "2"})


def test_work_is_shared_out_once_and_evenly():
    for n in (0, 1, 7, 10):
        for size in (1, 2, 3):
            parts = [distributed.share(n, r, size) for r in range(size)]
            assert sorted(i for p in parts for i in p) == list(range(n))
            assert max(map(len, parts)) - min(map(len, parts)) <= 1
            counts = [distributed.share_count(n, r, size) for r in range(size)]
            assert sum(counts) == n and max(counts) - min(counts) <= 1
    # alone: the collectives give their input back
    assert distributed.all_gather_objects("x") == ["x"] and distributed.world_size() == 1
    assert distributed.together(lambda: 3, "x") == 3


# --- fit ------------------------------------------------------------------------------------
def one_process_fit(work, name, **train):
    """The reference: this process, one thread, as ``stsr fit`` alone would fit."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        tm = api.fit(read_series(str(work / "coarse.pvd")), device="cpu", seed=0,
                     model_overrides={"flow_iters": 20, **train.pop("model", {})},
                     checkpoint_path=str(work / name), **train)
    finally:
        torch.set_num_threads(threads)
    return tm


def test_torchrun_with_two_processes_fits_the_same_base_as_one(work):
    one_process_fit(work, "one.stsr")
    r = stsr("fit", "coarse.pvd", "-o", "two.stsr", "--device", "cpu", *QUICK, cwd=work,
             launcher=torchrun(2))
    assert "stsr: 2 processes" in r.stderr
    one, two = api.load_model(str(work / "one.stsr")), api.load_model(str(work / "two.stsr"))
    assert two.info.history["processes"] == 2
    for k, v in one.model.state_dict().items():
        assert torch.equal(v, two.model.state_dict()[k]), k        # bit-identical


def test_two_processes_train_the_network_to_the_psnr_of_one(work):
    """The same total batch: every rank draws it and keeps its half."""
    one_process_fit(work, "net1.stsr", model={"network": True}, steps=30,
                    train_overrides={"batch_size": 1024})
    stsr("fit", "coarse.pvd", "-o", "net2.stsr", "--steps", "30", "--device", "cpu",
         "--quiet", *QUICK, *NETWORK, cwd=work, launcher=torchrun(2))
    psnr = []
    for name in ("net1", "net2"):
        tm = api.load_model(str(work / f"{name}.stsr"))
        assert tm.info.history["steps"] == 30
        up = api.predict(tm, scale=2)
        fine = read_series(str(work / "fine.pvd"))
        err = [np.mean((up.variables[n] - fine.variables[n]) ** 2) / np.ptp(fine.variables[n]) ** 2
               for n in fine.variables]
        psnr.append(-10 * np.log10(np.mean(err)))
    assert abs(psnr[0] - psnr[1]) < 0.1, psnr


def test_a_killed_rank_stops_the_other_with_an_error_and_the_checkpoint_stays_valid(work):
    """Started as srun or mpiexec would (RANK, WORLD_SIZE, MASTER_*: no agent to kill the
    survivor), rank 1 killed after a checkpoint; then resumed by one process."""
    model = work / "killed.stsr"
    port = free_port()
    procs = [subprocess.Popen(
        [sys.executable, "-m", "stsr_core.cli", "fit", "coarse.pvd", "-o", str(model),
         "--steps", "100000", "--set", "checkpoint_every=5", "--quiet", "--device", "cpu",
         *QUICK, *NETWORK],
        cwd=work, env=env(RANK=str(r), WORLD_SIZE="2", LOCAL_RANK=str(r),
                          MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
                          **{distributed.TIMEOUT_ENV: "20"}),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for r in range(2)]
    try:
        t0 = time.monotonic()
        while not model.exists():
            assert time.monotonic() - t0 < 120 and procs[0].poll() is None, \
                procs[0].communicate()[1]
            time.sleep(0.2)
        procs[1].send_signal(signal.SIGKILL)
        t_kill = time.monotonic()
        _, err = procs[0].communicate(timeout=60)
        waited = time.monotonic() - t_kill
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert procs[0].returncode == 2, err
    assert "stsr: error: rank 0 of 2" in err and "another rank died" in err, err
    assert waited < 25, waited                     # within the timeout (20 s), no hang
    tm = api.load_model(str(model))                # the last checkpoint: complete, valid
    assert tm.info.history["steps"] >= 5 and tm.info.history["stopped"] == "checkpoint"
    # --resume with another number of processes than the run that wrote it
    code, _, err = main_here("fit", "coarse.pvd", "-o", model, "--resume", "--steps", "5",
                             "--quiet", "--device", "cpu", cwd=work)
    assert code == 0, err
    assert api.load_model(str(model)).info.history["steps"] == tm.info.history["steps"] + 5


# --- upscale --------------------------------------------------------------------------------
@pytest.mark.skipif(shutil.which("mpiexec") is None, reason="needs mpiexec (openmpi-bin)")
def test_upscale_with_two_mpiexec_ranks_writes_the_same_files_as_one(work):
    if not (work / "one.stsr").exists():
        one_process_fit(work, "one.stsr")
    args = ["--scale", "2", "--time-scale", "2", "--quiet"]
    code, _, err = main_here("upscale", "one.stsr", "-o", "a/up.pvd", *args, cwd=work)
    assert code == 0, err
    r = stsr("upscale", "one.stsr", "-o", "b/up.pvd", *args, "--distributed", "--timings",
             "t.json", cwd=work, launcher=MPIEXEC, MASTER_PORT=str(free_port()), **MPI_ROOT)
    assert "by 2 processes" in r.stderr
    a, b = work / "a", work / "b"
    assert (a / "up.pvd").read_text() == (b / "up.pvd").read_text()
    names = sorted(os.listdir(a / "up"))
    assert len(names) == 9 and names == sorted(os.listdir(b / "up"))
    for n in names:
        assert (a / "up" / n).read_bytes() == (b / "up" / n).read_bytes(), n
    timings = json.loads((work / "t.json").read_text())
    assert [x["steps"] for x in timings["ranks"]] == [5, 4] and timings["steps"] == 9
    # one .h5 file is not split among processes: a clear error on every rank
    r = subprocess.run([*MPIEXEC, "stsr_core.cli", "upscale", "one.stsr", "-o", "up.h5",
                        "--quiet"],
                       cwd=work, env=env(MASTER_PORT=str(free_port()), **MPI_ROOT),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and "the output must be a .pvd" in r.stderr, r.stderr
    assert not (work / "up.h5").exists()
