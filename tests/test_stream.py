"""The streaming writers and step readers (io/stream.py) on real files: the same output as
write_series, what stays after a failure mid-way, folders, disk space, chunks, compression."""
import os

import h5py
import numpy as np
import pytest

from stsr_core import StsrError
from stsr_core.grid import Grid
from stsr_core.io import (iter_steps, open_series_reader, open_series_writer, read_series,
                          read_step, write_series)
from test_engine import smooth_series
from test_io import assert_same, vector_series

pytest.importorskip("vtkmodules.vtkIOXML")


def stream(series, path, **kw):
    """series -> path through the streaming writer, step by step."""
    with open_series_writer(str(path), series.grid, series.times, series.names,
                            series.components, **kw) as w:
        for t in range(series.n_times):
            w.write_step(t, {n: v[t] for n, v in series.variables.items()})
        return w.close()


def hidden(folder):
    return sorted(p for p in os.listdir(folder) if p.startswith("."))


@pytest.mark.parametrize("name, kw", [("s.pvd", {}), ("s.pvd", {"compression": "none"}),
                                      ("s.pvd", {"compression": "zlib"}),
                                      ("s.pvd", {"compression": "lz4"}),
                                      ("s.h5", {}), ("s.h5", {"compression": "none"}),
                                      ("s.h5", {"compression": "gzip"}),
                                      ("s.h5", {"compression": "lzf"}),
                                      ("s.json", {"compression": "none"})])
def test_streamed_equals_write_series(tmp_path, name, kw):
    s = vector_series(nt=4)
    files = stream(s, tmp_path / "a" / name, **kw)
    write_series(s, str(tmp_path / "b" / name))
    a, b = read_series(str(tmp_path / "a" / name)), read_series(str(tmp_path / "b" / name))
    assert_same(a, b)
    assert_same(a, s)
    np.testing.assert_allclose(a.times, s.times)
    assert a.components == b.components == {"vel": ["vel_0", "vel_1", "vel_2"]}
    assert all(os.path.isfile(f) for f in files) and files[0].endswith(name)
    assert hidden(tmp_path / "a") == []


def test_single_vti_and_steps_in_any_order(tmp_path):
    s = vector_series(nt=3)
    one = s.subsample(time=3)
    stream(one, tmp_path / "one.vti", compression="none")
    assert_same(read_series(str(tmp_path / "one.vti")), one)
    with pytest.raises(StsrError, match="single .vti holds one timestep"):
        open_series_writer(str(tmp_path / "x.vti"), s.grid, s.times, s.names, s.components)
    with open_series_writer(str(tmp_path / "r.pvd"), s.grid, s.times, s.names,
                            s.components) as w:
        for t in (2, 0, 1):
            w.write_step(t, {n: v[t] for n, v in s.variables.items()})
    assert_same(read_series(str(tmp_path / "r.pvd")), s)


def test_failure_mid_way_leaves_a_pvd_of_complete_steps(tmp_path):
    """A real error from write_step (a wrong shape at step 2): the .pvd lists steps 0 and 1,
    both readable, and no temporary file is left."""
    s = vector_series(nt=4)
    out = tmp_path / "p.pvd"
    with pytest.raises(StsrError, match=r"'temperature' of step 2 has shape \(4, 5, 7\)"):
        with open_series_writer(str(out), s.grid, s.times, s.names, s.components) as w:
            for t in range(4):
                arrays = {n: v[t] for n, v in s.variables.items()}
                if t == 2:
                    arrays["temperature"] = np.zeros((4, 5, 7), np.float32)
                w.write_step(t, arrays)
    back = read_series(str(out))
    assert back.n_times == 2
    np.testing.assert_allclose(back.times, s.times[:2])
    for n, v in s.variables.items():
        np.testing.assert_array_equal(back.variables[n], v[:2])
    assert sorted(os.listdir(tmp_path / "p")) == ["p_0000.vti", "p_0001.vti"]
    assert hidden(tmp_path) == [] and hidden(tmp_path / "p") == []


def test_interrupt_before_any_step_leaves_nothing_and_close_needs_every_step(tmp_path):
    s = vector_series(nt=3)
    with pytest.raises(KeyboardInterrupt):
        with open_series_writer(str(tmp_path / "k.pvd"), s.grid, s.times, s.names,
                                s.components):
            raise KeyboardInterrupt
    assert os.listdir(tmp_path) == []
    w = open_series_writer(str(tmp_path / "m.h5"), s.grid, s.times, s.names, s.components)
    w.write_step(0, {n: v[0] for n, v in s.variables.items()})
    with pytest.raises(StsrError, match=r"steps \[1, 2\] of 3 were not written"):
        w.close()
    assert os.listdir(tmp_path) == []                    # the h5's temporary file is gone


@pytest.mark.parametrize("name", ["o.pvd", "o.h5", "o.json"])
def test_overwrite_keeps_the_old_output_until_the_new_one_is_complete(tmp_path, name):
    old = vector_series(nt=2)
    new = vector_series(nt=3)
    for v in new.variables.values():
        v += 1
    path = tmp_path / name
    write_series(old, str(path))
    comp = "none" if name.endswith("json") else "zlib"        # raw files are uncompressed
    with pytest.raises(StsrError, match="exists; pass --overwrite"):
        open_series_writer(str(path), new.grid, new.times, new.names, new.components,
                           compression=comp)
    with pytest.raises(RuntimeError):
        with open_series_writer(str(path), new.grid, new.times, new.names, new.components,
                                overwrite=True, compression=comp) as w:
            w.write_step(0, {n: v[0] for n, v in new.variables.items()})
            w.write_step(1, {n: v[1] for n, v in new.variables.items()})
            raise RuntimeError("crash")
    assert_same(read_series(str(path)), old)              # untouched by the aborted run
    assert hidden(tmp_path) == []
    write_series(new, str(path), overwrite=True)
    assert_same(read_series(str(path)), new)
    assert hidden(tmp_path) == []


def test_missing_folders_are_created(tmp_path):
    s = vector_series(nt=2)
    files = stream(s, tmp_path / "new" / "dir" / "out.pvd")
    assert os.path.isfile(tmp_path / "new" / "dir" / "out.pvd") and len(files) == 3


def test_an_output_the_disk_cannot_hold_is_refused_before_anything(tmp_path):
    """100000^3 points x 49 steps x 4 variables: refused in words, with sizes, before a
    folder or a byte is made (sizes in Python ints: nothing is allocated)."""
    g = Grid((100000, 100000, 100000))
    out = tmp_path / "deep" / "big.pvd"
    with pytest.raises(StsrError) as err:
        open_series_writer(str(out), g, np.arange(49.0), ["a", "b", "c", "d"], {})
    msg = str(err.value)
    assert "not enough disk space" in msg and str(out) in msg
    assert "needs 784.0 PB" in msg and "(784,000,000,000,000,000 bytes uncompressed)" in msg
    assert f"free on {tmp_path}" in msg and ("GB free" in msg or "TB free" in msg)
    assert os.listdir(tmp_path) == []


def test_h5_is_chunked_by_z_slabs_and_read_step_reads_one(tmp_path):
    s = vector_series(nt=3)
    stream(s, tmp_path / "c.h5", compression="zlib")
    with h5py.File(tmp_path / "c.h5", "r") as fh:
        assert fh["temperature"].chunks == (1, 4, 5, 6)        # [1, nz, Y, X] (small grid)
        assert fh["vel"].chunks == (1, 4, 5, 6, 3) and fh["vel"].compression == "gzip"
    step = read_step(str(tmp_path / "c.h5"), 1)
    assert sorted(step) == sorted(s.variables)
    for n, v in s.variables.items():
        np.testing.assert_array_equal(step[n], v[1])
    assert read_step(str(tmp_path / "c.h5"), 2, arrays=["rho"]).keys() == {"rho"}


@pytest.mark.parametrize("name", ["s.pvd", "folder", "s.h5", "s.json", "one.vti"])
def test_step_readers_match_read_series(tmp_path, name):
    s = vector_series(nt=3)
    if name == "one.vti":
        s = s.subsample(time=3)
    path = tmp_path / name
    if name == "folder":
        write_series(s, str(tmp_path / "f.pvd"))
        path = tmp_path / "f"
    else:
        write_series(s, str(path))
    whole = read_series(str(path))
    r = open_series_reader(str(path))
    assert r.grid == whole.grid or not r.grid.differences(whole.grid)
    np.testing.assert_allclose(r.times, whole.times)
    assert r.variables == whole.names and r.components == whole.components
    steps = list(iter_steps(str(path)))
    assert len(steps) == whole.n_times
    for t, (time, arrays) in enumerate(steps):
        assert time == pytest.approx(whole.times[t])
        for n in whole.names:
            np.testing.assert_array_equal(arrays[n], whole.variables[n][t])
    only = read_step(str(path), -1, arrays=["rho"])
    assert list(only) == ["rho"]
    with pytest.raises(StsrError, match="no array named"):
        read_step(str(path), 0, arrays=["nope"])
    with pytest.raises(StsrError, match="step 7 does not exist"):
        read_step(str(path), 7)


def test_uncompressed_vti_is_the_raw_bytes(tmp_path):
    """compression="none" really stores the values: file size = float32 bytes + a header;
    zlib shrinks a constant field."""
    g = Grid((32, 24, 16))
    a = np.random.default_rng(0).random(g.shape, dtype=np.float32)        # [Z, Y, X]
    for name, comp, arr in (("n.vti", "none", a), ("z.vti", "zlib", np.ones_like(a))):
        with open_series_writer(str(tmp_path / name), g, [0.0], ["a"], {},
                                compression=comp) as w:
            w.write_step(0, {"a": arr})
    size = os.path.getsize(tmp_path / "n.vti")
    assert a.nbytes < size < a.nbytes + 2048
    np.testing.assert_array_equal(read_step(str(tmp_path / "n.vti"), 0)["a"], a)
    assert os.path.getsize(tmp_path / "z.vti") < a.nbytes / 20


def test_bad_requests_are_clear(tmp_path):
    s = vector_series(nt=2)
    args = (s.grid, s.times, s.names, s.components)
    with pytest.raises(StsrError, match="compression 'lzf' is not one of zlib, none, lz4"):
        open_series_writer(str(tmp_path / "x.pvd"), *args, compression="lzf")
    with pytest.raises(StsrError, match="unknown extension '.txt'"):
        open_series_writer(str(tmp_path / "x.txt"), *args)
    with pytest.raises(StsrError, match="strictly increasing"):
        open_series_writer(str(tmp_path / "x.h5"), s.grid, [1.0, 1.0], s.names, s.components)
    with pytest.raises(StsrError, match=r"components \['w'\] of 'vel'"):
        open_series_writer(str(tmp_path / "x.h5"), s.grid, s.times, s.names, {"vel": ["w"]})
    with open_series_writer(str(tmp_path / "x.h5"), *args) as w:
        with pytest.raises(StsrError, match=r"missing \['rho'\]"):
            w.write_step(0, {n: v[0] for n, v in s.variables.items() if n != "rho"})
        with pytest.raises(StsrError, match="outside 0..1"):
            w.write_step(2, {n: v[0] for n, v in s.variables.items()})
        w.write_step(0, {n: v[0] for n, v in s.variables.items()})
        with pytest.raises(StsrError, match="step 0 was already written"):
            w.write_step(0, {n: v[0] for n, v in s.variables.items()})
        w.write_step(1, {n: v[1] for n, v in s.variables.items()})
    assert read_series(str(tmp_path / "x.h5")).n_times == 2


def test_outputs_and_model_files_get_the_users_umask_not_private_temp_modes(tmp_path):
    """Written under temporary names (mkstemp/mkdtemp make them 0600/0700), then given the
    modes a plain create would have: a group sharing results can read them."""
    import stat

    from stsr_core import api
    s = vector_series()
    old = os.umask(0o022)
    try:
        write_series(s, str(tmp_path / "a.pvd"))
        write_series(s, str(tmp_path / "a.pvd"), overwrite=True)     # via a partial folder
        write_series(s, str(tmp_path / "a.h5"))
        api.save_model(api.fit(s.select(["temperature"]), device="cpu",
                               model_overrides={"flow_iters": 5}), str(tmp_path / "m.stsr"))
    finally:
        os.umask(old)
    mode = {p: stat.S_IMODE(os.stat(tmp_path / p).st_mode) for p in ("a", "a.h5", "m.stsr")}
    assert mode == {"a": 0o755, "a.h5": 0o644, "m.stsr": 0o644}, {k: oct(v) for k, v in
                                                                  mode.items()}


def test_the_step_reader_names_the_arrays_a_vti_holds_when_an_asked_one_is_missing(tmp_path):
    """Found by the fuzz tests: the arrays left unread were missing from the list."""
    write_series(smooth_series(nt=2), str(tmp_path / "s.pvd"))
    with pytest.raises(StsrError, match=r"no array named \['nope'\] in '.*s_0000\.vti'; "
                                        r"available: temperature, rho$"):
        open_series_reader(str(tmp_path / "s.pvd"), ["nope"])


@pytest.mark.parametrize("compression", ["zlib", "gzip"])
def test_h5_chunks_compressed_here_read_back_with_a_partial_last_slab(tmp_path, monkeypatch,
                                                                      compression):
    """zlib/gzip chunks are shuffled and deflated by io/compress.py and stored as they are
    (HDF5's direct chunk write): h5py decodes them with HDF5's own filters, the last z-slab
    of 10 planes in chunks of 3 included (stored padded, as HDF5 stores edge chunks)."""
    from stsr_core.io import hdf5
    g = Grid((7, 6, 10))
    monkeypatch.setattr(hdf5, "CHUNK_BYTES", 3 * 7 * 6 * 4 * 3)      # 3 planes of a vector
    rng = np.random.default_rng(1)
    steps = [{"a": rng.random(g.shape, dtype=np.float32), "v_0": rng.random(g.shape, np.float32),
              "v_1": rng.random(g.shape, np.float32), "v_2": rng.random(g.shape, np.float32)}
             for _ in range(2)]
    with open_series_writer(str(tmp_path / "o.h5"), g, [0.0, 1.0], ["a", "v_0", "v_1", "v_2"],
                            {"v": ["v_0", "v_1", "v_2"]}, compression=compression) as w:
        for i, st in enumerate(steps):
            w.write_step(i, st)
    with h5py.File(tmp_path / "o.h5") as fh:
        assert fh["v"].chunks == (1, 3, 6, 7, 3) and fh["v"].compression == "gzip"
        assert fh["v"].shuffle and fh["a"].compression_opts == hdf5.DEFLATE_LEVEL[compression]
        for i, st in enumerate(steps):
            np.testing.assert_array_equal(fh["a"][i], st["a"])
            np.testing.assert_array_equal(fh["v"][i], np.stack([st[f"v_{c}"] for c in range(3)],
                                                                axis=-1))


def test_lz4_literal_blocks_are_lz4s_own_bytes_and_arrays_that_compress_stay_compressed(
        tmp_path, monkeypatch):
    """io/compress.py: the head of a literal-only LZ4 block is what lz4 itself writes for
    bytes without matches (so such a block is byte for byte lz4's); an lz4 .pvd writes an
    array whose sampled blocks do not compress as such blocks without compressing the rest,
    and compresses the others (flat, or flat in a sampled part) -- every value read back
    the same."""
    import lz4.block

    from stsr_core.io import compress, vtifile
    rng = np.random.default_rng(4)
    for n in (1, 14, 15, 16, 269, 270, 271, 524, 525, 66564, 1 << 20):
        raw = rng.bytes(n)
        packed = compress.lz4_literal(n) + raw
        assert packed == lz4.block.compress(raw, mode="default", store_size=False), n
        assert lz4.block.decompress(packed, uncompressed_size=n) == raw
    grid = Grid((40, 40, 40), (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))    # 4 blocks an array
    noise = rng.standard_normal((40, 40, 40)).astype(np.float32)
    half = noise.copy()
    half[:20] = 0.0                     # its first two blocks flat: compressed
    arrays = {"noise": noise, "flat": np.zeros_like(noise), "half": half}
    seen = []
    real = vtifile.codec

    def counting(name):
        fn = real(name)
        return lambda b: seen.append(len(b)) or fn(b)
    monkeypatch.setattr(vtifile, "codec", counting)
    path = str(tmp_path / "l.vti")
    vtifile.write_vti(path, grid, arrays, 1.5, "lz4")
    block = vtifile.block_bytes(40 * 40 * 4)
    # noise: its 3 samples alone; flat: 1 sample (it compresses), then its 4 blocks; half:
    # 1 sample, then its 4 blocks; the TimeValue: 1 sample (8 bytes: a literal block)
    assert sorted(seen) == [8] + [block] * (3 + 1 + 4 + 1 + 4), seen
    got = read_series(path)
    for n, a in arrays.items():
        np.testing.assert_array_equal(got.variables[n][0], a)
    data = open(path, "rb").read()
    head = compress.lz4_literal(block)
    for k in range(4):                  # noise's blocks, literal, in order
        assert data.count(head + noise.tobytes()[k * block:(k + 1) * block]) >= 1
    assert len(data) < noise.nbytes * 1.01 + half.nbytes * 0.51 + 2000


def test_written_pages_leave_the_page_cache_and_the_files_stay_whole(tmp_path):
    """io/base.py: fsync_file(drop=True) (each .vti step) only advises the kernel: the bytes
    read back the same."""
    from stsr_core.io.base import fsync_file
    data = np.random.default_rng(1).bytes(3 << 20)
    path = tmp_path / "f.bin"
    path.write_bytes(data)
    fsync_file(str(path), drop=True)
    assert path.read_bytes() == data
