"""The writers taking z-slabs (issue 29): real tiny files written slab by slab, steps
interleaved as the slabbed upscale writes them, read back with each format's own library
(VTK's reader, h5py, netCDF4, numpy); what an abort or a full disk mid-way leaves; the
background writer's queue bounded in bytes; the bytes a writer holds against what it says
it holds."""
import errno
import os
import threading
import time

import h5py
import numpy as np
import pytest

from stsr_core import StsrError
from stsr_core.grid import Grid
from stsr_core.io import open_series_writer, read_series, vtifile
from stsr_core.io.background import BackgroundWriter
from stsr_core.io.base import MAX_OPEN_STEPS
from stsr_core.io.stream import writer_bytes
from test_disk_full import small_disk  # noqa: F401 - the real tmpfs fixture
from test_engine import smooth_series

vtk_xml = pytest.importorskip("vtkmodules.vtkIOXML")
netCDF4 = pytest.importorskip("netCDF4")
from vtkmodules.util.numpy_support import vtk_to_numpy  # noqa: E402

HEIGHTS = [3, 1, 4, 3]                 # slabs of an 11-row grid, uneven as a plan may cut
ORDER = [2, 0, 1]                      # the steps of one interval, slab k of each in turn


def tall_series(nt=3, nz=11):
    """Two scalars and a 3-component vector on a 6 x 5 x nz grid (float32, smooth)."""
    s = smooth_series(nx=6, ny=5, nz=nz, nt=nt)
    s.variables.update({f"vel_{c}": (s.variables["temperature"] * (c + 1) - 300)
                        .astype(np.float32) for c in range(3)})
    s.components = {"vel": ["vel_0", "vel_1", "vel_2"]}
    s.validate()
    return s


def write_in_slabs(w, s, heights=HEIGHTS, order=ORDER):
    """Slab k of every step in ``order``, then slab k + 1 (the slabbed upscale's order)."""
    z0 = 0
    for h in heights:
        for t in order:
            w.write_slab(t, z0, {n: v[t, z0:z0 + h] for n, v in s.variables.items()})
        z0 += h


def open_writer(s, path, **kw):
    return open_series_writer(str(path), s.grid, s.times, s.names, s.components, **kw)


def hidden(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob(".*"))


def pieces(path):
    with open(path, "rb") as fh:
        head = fh.read(1 << 16)
    return head[:head.find(b"<AppendedData")].count(b"<Piece ")


def vtk_read(path):
    r = vtk_xml.vtkXMLImageDataReader()
    r.SetFileName(str(path))
    r.Update()
    img = r.GetOutput()
    pd = img.GetPointData()
    return img, {pd.GetArrayName(k): vtk_to_numpy(pd.GetArray(k))
                 for k in range(pd.GetNumberOfArrays())}


@pytest.mark.parametrize("name, compression", [
    ("s.pvd", "none"), ("s.pvd", "zlib"), ("s.pvd", "lz4"), ("s.h5", "none"),
    ("s.h5", "zlib"), ("s.h5", "gzip"), ("s.h5", "lzf"), ("s.nc", "none"), ("s.nc", "zlib"),
    ("s.json", "none")])
def test_slab_appended_outputs_read_back_equal_with_each_formats_own_library(
        tmp_path, name, compression):
    """Uneven slabs of three interleaved steps, vectors among the arrays: VTK's image-data
    reader (a compressed .vti holds one piece per slab), h5py, netCDF4 and numpy read
    exactly the values written, and so does stsr's reader."""
    s = tall_series()
    with open_writer(s, tmp_path / name, compression=compression) as w:
        write_in_slabs(w, s)
        files = w.close()
    nz, ny, nx = s.grid.shape
    if name.endswith(".pvd"):
        assert len(files) == 1 + s.n_times
        for t, f in enumerate(files[1:]):
            assert pieces(f) == (1 if compression == "none" else len(HEIGHTS))
            img, arrays = vtk_read(f)
            assert img.GetDimensions() == s.dims
            assert img.GetFieldData().GetArray("TimeValue").GetValue(0) == s.times[t]
            np.testing.assert_array_equal(arrays["temperature"],
                                          s.variables["temperature"][t].ravel())
            for c in range(3):
                np.testing.assert_array_equal(arrays["vel"][:, c],
                                              s.variables[f"vel_{c}"][t].ravel())
    elif name.endswith(".h5"):
        with h5py.File(tmp_path / name, "r") as fh:
            np.testing.assert_array_equal(fh["rho"][...], s.variables["rho"])
            np.testing.assert_array_equal(fh["vel"][...], np.stack(
                [s.variables[f"vel_{c}"] for c in range(3)], axis=-1))
            np.testing.assert_array_equal(fh.attrs["times"], s.times)
    elif name.endswith(".nc"):
        with netCDF4.Dataset(tmp_path / name) as ds:
            for n in s.names:
                np.testing.assert_array_equal(np.asarray(ds[n][:]), s.variables[n])
            np.testing.assert_array_equal(ds["time"][:], s.times)
    else:
        for t in range(s.n_times):
            a = np.fromfile(tmp_path / "vel_2" / f"vel_2-{t + 1:04d}.raw", "<f4")
            np.testing.assert_array_equal(a.reshape(nz, ny, nx), s.variables["vel_2"][t])
    back = read_series(str(tmp_path / name))
    for n, v in s.variables.items():
        np.testing.assert_array_equal(back.variables[n], v)
    assert hidden(tmp_path) == []


@pytest.mark.parametrize("compression", ["none", "lz4"])
def test_a_step_written_in_slabs_or_whole_gives_the_file_vtk_writes(tmp_path, compression):
    """Uncompressed, a .vti written in slabs is byte for byte the one written whole (one
    piece, each slab's rows at their place); compressed, the pieces hold the same values.
    Whole, it is one piece, as VTK's own writer writes it."""
    s = tall_series(nt=1)
    with open_writer(s, tmp_path / "a.pvd", compression=compression) as w:
        write_in_slabs(w, s, order=[0])
    with open_writer(s, tmp_path / "b.pvd", compression=compression) as w:
        w.write_step(0, {n: v[0] for n, v in s.variables.items()})
    a, b = tmp_path / "a" / "a_0000.vti", tmp_path / "b" / "b_0000.vti"
    if compression == "none":
        assert a.read_bytes() == b.read_bytes()
    assert pieces(b) == 1
    assert {k: v.tolist() for k, v in vtk_read(a)[1].items()} == \
        {k: v.tolist() for k, v in vtk_read(b)[1].items()}


def test_more_pieces_than_the_header_has_room_for_rewrites_the_file_once(tmp_path):
    """Room is kept for twice the pieces the first slab's height makes (10 of 20 rows: 6
    pieces); ten 1-row slabs after it need 11: the file is rewritten with a larger header,
    VTK reads it whole, and nothing is left beside it."""
    g = Grid((4, 3, 20))
    a = np.arange(g.n_points, dtype=np.float32).reshape(g.shape)
    f = vtifile.VtiFile(str(tmp_path / "x.vti"), g, ["a"], [1], 1.0, "zlib")
    f.add(0, [a[:10]])
    for z in range(10, 20):
        f.add(z, [a[z:z + 1]])
    f.finish()
    assert pieces(tmp_path / "x.vti") == 11 and os.listdir(tmp_path) == ["x.vti"]
    np.testing.assert_array_equal(vtk_read(tmp_path / "x.vti")[1]["a"], a.ravel())
    img = vtk_xml.vtkXMLImageDataReader()               # a sub-extent, as a pvbatch rank
    img.SetFileName(str(tmp_path / "x.vti"))            # asks: only its pieces are read
    img.UpdateInformation()
    img.UpdateExtent((0, 3, 0, 2, 8, 12))
    np.testing.assert_array_equal(vtk_to_numpy(img.GetOutput().GetPointData().GetArray("a")),
                                  a[8:13].ravel())


def test_slabs_out_of_order_or_of_the_wrong_shape_are_refused_before_anything_is_written(
        tmp_path):
    s = tall_series()
    slab = {n: v[0, :3] for n, v in s.variables.items()}
    with open_writer(s, tmp_path / "o.h5") as w:
        with pytest.raises(StsrError, match=r"starts at row 3, but 0 of its rows are written: "
                                            r"the next slab starts at row 0"):
            w.write_slab(0, 3, slab)
        w.write_slab(0, 0, slab)
        with pytest.raises(StsrError, match="starts at row 0, but 3 of its rows"):
            w.write_slab(0, 0, slab)                          # the same rows again
        bad = dict(slab, rho=s.variables["rho"][0, 3:5])
        with pytest.raises(StsrError, match=r"'rho' of step 0 \(rows from 3\) has shape "
                                            r"\(2, 5, 6\).*the same nz for every array"):
            w.write_slab(0, 3, bad)
        with pytest.raises(StsrError, match=r"rows 3..11 of step 0 pass the grid's 11 rows"):
            w.write_slab(0, 3, {n: np.zeros((9, 5, 6), np.float32) for n in s.names})
        with pytest.raises(StsrError, match=r"missing \['rho'\]"):
            w.write_slab(1, 0, {n: a for n, a in slab.items() if n != "rho"})
        with pytest.raises(StsrError, match=r"'temperature' of step 1 has shape \(3, 5, 6\)"):
            w.write_step(1, slab)                             # write_step means all rows
        write_rest = {n: v[0, 3:] for n, v in s.variables.items()}
        w.write_slab(0, 3, write_rest)                        # the writer still works
        with pytest.raises(StsrError, match="step 0 was already written"):
            w.write_slab(0, 0, slab)
        for t in (1, 2):
            w.write_step(t, {n: v[t] for n, v in s.variables.items()})
    np.testing.assert_array_equal(read_series(str(tmp_path / "o.h5")).variables["vel_1"],
                                  s.variables["vel_1"])


def test_up_to_max_open_steps_are_open_at_once(tmp_path):
    """At least 16 steps may have rows written and rows to come (an interval's output
    steps); one more is refused until one of them is complete."""
    assert MAX_OPEN_STEPS >= 16
    g = Grid((3, 2, 2))
    row = {"a": np.ones((1, 2, 3), np.float32)}
    with open_series_writer(str(tmp_path / "m.pvd"), g, np.arange(MAX_OPEN_STEPS + 1.0),
                            ["a"], {}, compression="lz4") as w:
        assert w.max_open_steps == MAX_OPEN_STEPS
        for t in range(MAX_OPEN_STEPS):
            w.write_slab(t, 0, row)
        assert len([f for f in os.listdir(tmp_path / "m") if f.endswith(".tmp")]) == \
            MAX_OPEN_STEPS
        with pytest.raises(StsrError, match=f"{MAX_OPEN_STEPS} steps are open .* complete "
                                            f"one before step {MAX_OPEN_STEPS}"):
            w.write_slab(MAX_OPEN_STEPS, 0, row)
        w.write_slab(0, 1, row)                              # step 0 complete
        w.write_slab(MAX_OPEN_STEPS, 0, row)
        for t in range(1, MAX_OPEN_STEPS + 1):
            w.write_slab(t, 1, row)
    assert read_series(str(tmp_path / "m.pvd")).n_times == MAX_OPEN_STEPS + 1


def test_a_step_is_complete_and_listed_when_its_last_row_is_written_and_an_abort_keeps_it(
        tmp_path):
    """Step 1's last row is written while steps 0 and 2 still have rows to come: the .pvd
    lists step 1 alone and ParaView's reader opens it; the open steps are hidden temporary
    files. An error then (Ctrl-C, a crash) leaves step 1 listed, complete, and nothing
    else."""
    s = tall_series()
    out = tmp_path / "p.pvd"
    with pytest.raises(KeyboardInterrupt):
        with open_writer(s, out) as w:
            write_in_slabs(w, s, HEIGHTS[:2], ORDER)          # 4 rows of each step
            w.write_slab(1, 4, {n: v[1, 4:] for n, v in s.variables.items()})
            listed = read_series(str(out))
            assert listed.n_times == 1 and listed.times[0] == s.times[1]
            np.testing.assert_array_equal(listed.variables["vel_0"][0], s.variables["vel_0"][1])
            assert sorted(os.listdir(tmp_path / "p")) == [".p_0000.vti.tmp", ".p_0002.vti.tmp",
                                                         "p_0001.vti"]
            raise KeyboardInterrupt
    assert read_series(str(out)).n_times == 1
    assert sorted(os.listdir(tmp_path / "p")) == ["p_0001.vti"] and hidden(tmp_path) == []


@pytest.mark.parametrize("name", ["o.pvd", "o.h5", "o.nc", "o.json"])
def test_an_abort_mid_way_leaves_nothing_that_looks_complete(tmp_path, name):
    """Slabs of every step written, none complete, then an error: a new output leaves
    nothing; a replaced one (overwrite) is as it was; no temporary file either way."""
    s = tall_series()
    new = tall_series()
    for v in new.variables.values():
        v += 1
    for previous in (False, True):
        path = tmp_path / str(previous) / name
        if previous:
            with open_writer(s, path) as w:
                write_in_slabs(w, s)
            before = {p: p.read_bytes() for p in path.parent.rglob("*") if p.is_file()}
        with pytest.raises(RuntimeError):
            with open_writer(new, path, overwrite=previous) as w:
                write_in_slabs(w, new, HEIGHTS[:3])
                raise RuntimeError("crash")
        if previous:
            assert {p: p.read_bytes() for p in path.parent.rglob("*") if p.is_file()} == before
        else:
            assert os.listdir(path.parent) == []
        assert hidden(path.parent) == []


def test_a_full_disk_mid_slab_is_one_line_and_keeps_the_complete_steps(tmp_path,
                                                                        monkeypatch):
    """ENOSPC when step 2's file is flushed (as a full disk reports delayed writes): one
    line naming the step and the output, the .pvd listing the steps complete before, no
    temporary file -- the open steps' included."""
    s = tall_series(nt=4)
    real, calls = os.fsync, [0]

    def fsync(fd):
        calls[0] += 1
        if calls[0] > 2:                                     # step 0 and its .pvd flushed
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(fd)
    out = tmp_path / "f.pvd"
    with pytest.raises(StsrError) as err:
        with open_writer(s, out) as w:
            monkeypatch.setattr(os, "fsync", fsync)
            write_in_slabs(w, s, [2, 9], order=[0, 1, 2, 3])
    monkeypatch.setattr(os, "fsync", real)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(f"cannot write step 1 of '{out}': the disk is "
                                              "full (No space left on device)"), msg
    assert read_series(str(out)).n_times == 1
    assert os.listdir(tmp_path / "f") == ["f_0000.vti"] and hidden(tmp_path) == []


@pytest.mark.parametrize("name, compression", [("d.pvd", "lz4"), ("d.h5", "none"),
                                               ("d.h5", "zlib"), ("d.nc", "none"),
                                               ("d.json", "none")])
def test_slabs_into_a_filesystem_that_fills_up_say_so_in_one_line(small_disk, name,  # noqa
                                                                  compression):
    """A real 80 MB tmpfs that another program fills once the output passed its check:
    one line saying the disk is full, nothing incomplete left, the filesystem usable after
    (HDF5 used to crash the process on exit here)."""
    disk, fill = small_disk
    g = Grid((64, 64, 32))
    rng = np.random.default_rng(0)
    with pytest.raises(StsrError) as err:
        with open_series_writer(str(disk / name), g, [0.0, 1.0, 2.0], ["a", "b"], {},
                                compression=compression) as w:
            fill(leave=600_000)
            for z0 in range(0, 32, 8):
                for t in range(3):
                    w.write_slab(t, z0, {n: rng.random((8, 64, 64), np.float32)
                                         for n in ("a", "b")})
    msg = str(err.value)
    assert "\n" not in msg and "the disk is full (No space left on device)" in msg, msg
    assert f"'{disk / name}'" in msg
    os.remove(disk / "filler")
    assert os.listdir(disk) == [] or name.endswith(".json") and \
        all(os.listdir(disk / v) == [] for v in os.listdir(disk))


def test_the_background_writer_bounds_what_waits_in_bytes_and_writes_the_same_files(
        tmp_path, monkeypatch):
    """Slabs handed to the writing thread, which is slowed down: the caller waits rather
    than queueing more than ``max_bytes`` of slabs (the one being written counted), every
    slab's memory is released once written, steps are counted as they complete, and the
    files are byte for byte those written inline."""
    s = tall_series(nt=3, nz=24)
    slab_bytes = sum(v[0, :4].nbytes for v in s.variables.values())
    with open_writer(s, tmp_path / "inline.pvd", compression="lz4") as w:
        write_in_slabs(w, s, [4] * 6)
    real = vtifile.VtiFile.add

    def slow_add(self, z0, arrays):
        time.sleep(0.02)
        return real(self, z0, arrays)
    monkeypatch.setattr(vtifile.VtiFile, "add", slow_add)
    held, most, released, heard = [0], [0], [], []
    lock = threading.Lock()

    def release():
        with lock:
            held[0] -= slab_bytes
        released.append(1)
    bg = BackgroundWriter(open_writer(s, tmp_path / "bg.pvd", compression="lz4"),
                          max_bytes=2 * slab_bytes, on_written=heard.append)
    with bg:
        for z0 in range(0, 24, 4):
            for t in ORDER:
                bg.write_slab(t, z0, {n: v[t, z0:z0 + 4] for n, v in s.variables.items()},
                              release=release)
                with lock:
                    held[0] += slab_bytes           # handed over and not yet released
                    most[0] = max(most[0], held[0])
        bg.close()
    assert most[0] <= 2 * slab_bytes + slab_bytes   # the bound, and one released meanwhile
    assert len(released) == 18 and held[0] == 0 and heard == [1, 2, 3]
    assert bg.wait_s > 0.1 and bg.rows_written == 3 * 24
    for t in range(3):
        assert (tmp_path / "bg" / f"bg_{t:04d}.vti").read_bytes() == \
            (tmp_path / "inline" / f"inline_{t:04d}.vti").read_bytes()


@pytest.mark.parametrize("name", ["o.h5", "o.nc"])
def test_slab_bytes_bounds_what_a_compressed_h5_or_nc_holds_and_slab_rows_makes_it_none(
        tmp_path, monkeypatch, name):
    """Chunks of 6 rows (as a real grid's chunks of a few MB) and slabs of 4: a chunk
    spanning two slabs waits in a buffer, and what is held after each slab stays within
    slab_bytes(rows, steps); told the slabs' rows (slab_rows), the chunks divide them and
    nothing is ever held. Both files read back equal."""
    from stsr_core.io import hdf5
    s = tall_series(nt=3, nz=24)
    widest = 3 if name.endswith(".h5") else 1                 # .nc stores components apart
    monkeypatch.setattr(hdf5, "CHUNK_BYTES", 6 * 6 * 5 * 4 * widest)
    sizes = []
    for hint in (None, 4):
        with open_writer(s, tmp_path / str(hint) / name, compression="zlib",
                         slab_rows=hint) as w:
            assert w.chunk_rows == (4 if hint else 6)
            bound = w.slab_bytes(4, len(ORDER))
            assert bound == writer_bytes(str(tmp_path / name), s.grid, s.names, s.components,
                                         4, len(ORDER), compression="zlib", slab_rows=hint)
            for z0 in range(0, 24, 4):
                for t in ORDER:
                    w.write_slab(t, z0, {n: v[t, z0:z0 + 4] for n, v in s.variables.items()})
                    held = sum(b.nbytes for _, b, _ in w.chunks.held.values())
                    sizes.append((hint, held))
                    assert held <= bound
            assert w.row_multiple == (4 if hint else w.chunk_rows)
        back = read_series(str(tmp_path / str(hint) / name))
        for n, v in s.variables.items():
            np.testing.assert_array_equal(back.variables[n], v)
    assert max(h for hint, h in sizes if hint is None) > 0
    assert max(h for hint, h in sizes if hint == 4) == 0


@pytest.mark.parametrize("compression", ["none", "zlib"])
def test_a_netcdf_z_axis_written_descending_takes_the_slabs_from_its_last_chunk_down(
        tmp_path, monkeypatch, compression):
    """A source whose z coordinate descends (pressure levels) is written back descending:
    the slabs, in increasing z, fill the file from its last row up, compressed chunks (6
    rows of 11: the first one in the file partial) written whole. netCDF4 sees the values
    flipped along z, stsr's reader the series as written."""
    from stsr_core.io import hdf5
    monkeypatch.setattr(hdf5, "CHUNK_BYTES", 6 * 6 * 5 * 4)
    s = tall_series()
    path = tmp_path / "d.nc"
    with open_writer(s, path, compression=compression,
                     metadata={"netcdf": {"descending": ["z"]}}) as w:
        if compression == "zlib":
            assert w.chunks.starts == [0, 5, 11]           # file chunks: rows 0-5, 6-10
        write_in_slabs(w, s)
    with netCDF4.Dataset(path) as ds:
        z = np.asarray(ds["z"][:])
        assert z[0] > z[-1]
        np.testing.assert_array_equal(np.asarray(ds["rho"][:]), s.variables["rho"][:, ::-1])
    back = read_series(str(path))
    for n, v in s.variables.items():
        np.testing.assert_array_equal(back.variables[n], v)
