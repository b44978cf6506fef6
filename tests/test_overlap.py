"""Computing and writing at once (issue 24): ``api.upscale`` writes each step on a thread
while the next is computed. The files are byte for byte those written one step after the
other, whatever the number of compression threads; a slow writer makes the computing wait
instead of piling steps up in memory; the progress counts steps written; what stops the
run leaves what an inline writer leaves."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from stsr_core import api
from stsr_core.errors import StsrError
from stsr_core.grid import Grid
from stsr_core.io import compress, vti, vtifile
from test_engine import smooth_series

QUICK = {"flow_iters": 20}


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """The fast base (the default) of a small series with a vector, saved once."""
    s = smooth_series(nx=9, ny=8, nz=7, nt=3)
    for c in range(3):
        s.variables[f"v_{c}"] = s.variables["temperature"] * (c + 1) - 300
    s.components = {"v": ["v_0", "v_1", "v_2"]}
    s.validate()
    path = str(tmp_path_factory.mktemp("overlap") / "m.stsr")
    api.fit(s, device="cpu", checkpoint_path=path, model_overrides=QUICK)
    return path


def files_of(folder):
    return {os.path.relpath(os.path.join(d, f), folder): open(os.path.join(d, f), "rb").read()
            for d, _, fs in os.walk(folder) for f in fs}


@pytest.mark.parametrize("name, compression", [("o.pvd", "lz4"), ("o.pvd", "zlib"),
                                               ("o.pvd", "none"), ("o.h5", "zlib")])
def test_overlapped_output_is_byte_identical_to_writing_step_after_step(model, tmp_path, name,
                                                                         compression):
    tm = api.load_model(model, device="cpu")
    for overlap in (False, True):
        r = api.upscale(tm, str(tmp_path / str(overlap) / name), scale=2, time_scale=3,
                        compression=compression, overlap=overlap)
        assert r["steps"] == 7
    inline, overlapped = files_of(tmp_path / "False"), files_of(tmp_path / "True")
    assert sorted(inline) == sorted(overlapped) and len(inline) == (8 if "pvd" in name else 1)
    assert inline == overlapped


def test_block_compression_on_threads_gives_the_bytes_of_one_thread(tmp_path):
    """A .vti whose arrays span many blocks (written a few blocks at a time, header and
    block sizes filled in after): the same bytes on 1 and on 4 threads, read back by VTK."""
    rng = np.random.default_rng(0)
    g = Grid((100, 90, 90))
    arrays = {"a": rng.random((90, 90, 100), dtype=np.float32),
              "v": np.repeat(rng.random((90, 90, 100, 1), dtype=np.float32), 3, axis=3)}
    assert 4 * 3 * g.n_points > vtifile.GROUP_BYTES                  # several groups
    for comp in ("zlib", "lz4", "none"):
        one, many = tmp_path / f"1-{comp}.vti", tmp_path / f"4-{comp}.vti"
        vtifile.write_vti(str(one), g, arrays, 2.5, comp, threads=1)
        vtifile.write_vti(str(many), g, arrays, 2.5, comp, threads=4)
        assert one.read_bytes() == many.read_bytes()
        frame = vti.read_vti(str(many))
        assert frame.time == 2.5 and frame.grid == g
        for n, a in arrays.items():
            np.testing.assert_array_equal(frame.arrays[n], a)
    data = compress.as_bytes(arrays["a"])
    blocks = compress.split_blocks(data, 1 << 16)
    assert compress.compress_all(blocks, compress.codec("zlib"), 1) == \
        compress.compress_all(blocks, compress.codec("zlib"), 3)


SLOW_WRITER_CHILD = r"""
import json, os, sys, threading, time
from stsr_core import api
from stsr_core.io import vtifile

def rss_bytes():
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

model, out = sys.argv[1:3]
tm = api.load_model(model, device="cpu")
real, pause = vtifile.VtiFile.add, [0.0]

def throttled(*args, **kwargs):
    time.sleep(pause[0])
    pause[0] = 0.0
    return real(*args, **kwargs)
vtifile.VtiFile.add = throttled

def upscale(name, **kwargs):
    peak, done = [0], threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], rss_bytes())
            time.sleep(0.002)
    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        r = api.upscale(tm, os.path.join(out, name), scale=12, time_scale=6,
                        compression="none", **kwargs)
    finally:
        done.set()
        sampler.join()
    return peak[0], r
fast, _ = upscale("fast.pvd")
heard = []
pause[0] = 3.5
slow, r = upscale("slow.pvd", callback=heard.append)
print(json.dumps({"fast": fast, "slow": slow, "steps": r["steps"], "wait_s": r["wait_s"],
                  "heard": heard,
                  "step_bytes": api.output_grid(tm.info.grid, scale=12).n_points * 5 * 4}))
"""


def test_a_slow_writer_makes_the_computing_wait_and_memory_stays_bounded(model, tmp_path):
    """The same output twice in a child process: with a fast writer, then with one whose
    first write takes 3.5 s. Computing does not run ahead of the slow writer by more than
    the queue: peak memory is within a few steps of the fast run's (a writer that queued
    everything would hold every step computed meanwhile: 6.2 steps more in a run with
    the queue and the host buffers unbounded), and the computing
    waited. The progress reports steps written, in order.

    The child's glibc hands every freed block of 1 MB or more back to the system
    (MALLOC_MMAP_THRESHOLD_), so that its RSS counts what is held. By default glibc raises
    that threshold to the size of the blocks freed (up to 32 MB): the step-sized
    temporaries of each step (the error estimate's [V, Z, Y, X], 12 MB here) then come
    from the heaps of the computing and writing threads, a heap gives memory back only
    from its top, and the RSS kept in step-sized holes depends on how the two threads'
    allocations interleave: under load it grew 3-5 "steps" with nothing more held."""
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(1 << 20)}
    p = subprocess.run([sys.executable, "-c", SLOW_WRITER_CHILD, model, str(tmp_path)],
                       capture_output=True, text=True, env=env, timeout=600,
                       cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert p.returncode == 0, p.stderr[-3000:]
    got = json.loads(p.stdout.strip().splitlines()[-1])
    step_bytes = got["step_bytes"]                                      # 12 MB
    assert got["steps"] == 13 and step_bytes > 10e6
    grown = (got["slow"] - got["fast"]) / step_bytes
    assert grown < 3, f"the slow writer's run held {grown:.1f} steps more than the fast one's"
    assert got["wait_s"] > 2.0, got                        # the computing waited
    assert got["heard"] == [k / 13 for k in range(1, 14)]


def test_an_error_mid_way_leaves_the_complete_steps_listed_and_no_temporary_file(model,
                                                                                 tmp_path):
    """A callback that raises after 3 steps written (on the writing thread: handed to the
    computing one as a writer's error is): the .pvd lists the steps complete, every file it
    lists is whole, nothing hidden is left; a callback returning False cancels."""
    tm = api.load_model(model, device="cpu")

    def stop(fraction):
        if fraction >= 3 / 9:
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        api.upscale(tm, str(tmp_path / "o.pvd"), scale=2, time_scale=4, callback=stop)
    from stsr_core.io import read_series
    kept = read_series(str(tmp_path / "o.pvd"))
    assert 3 <= kept.n_times < 9
    assert sorted(os.listdir(tmp_path / "o")) == [f"o_{i:04d}.vti" for i in range(kept.n_times)]
    with pytest.raises(StsrError, match="cancelled"):
        api.upscale(tm, str(tmp_path / "c.pvd"), scale=2, time_scale=4,
                    callback=lambda f: f < 0.5)
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".")]
