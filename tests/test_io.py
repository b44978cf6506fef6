"""Readers and writers on real files: round trips of every format, files written by VTK itself
(as ParaView writes them), and each kind of bad input with the message it must give."""
import json
import re
import os

import numpy as np
import pytest

from stsr_core import StsrError, VolumeSeries
from stsr_core.io import read_series, write_series
from test_engine import smooth_series

vtk_xml = pytest.importorskip("vtkmodules.vtkIOXML")
from vtkmodules.util.numpy_support import numpy_to_vtk  # noqa: E402
from vtkmodules.vtkCommonDataModel import vtkImageData, vtkUnstructuredGrid  # noqa: E402


def vector_series(nt=3):
    s = smooth_series(nx=6, ny=5, nz=4, nt=nt)
    s.variables.update({f"vel_{i}": (s.variables["temperature"] * (i + 1)).astype(np.float32)
                        for i in range(3)})
    s.components = {"vel": ["vel_0", "vel_1", "vel_2"]}
    s.validate()
    return s


def assert_same(a: VolumeSeries, b: VolumeSeries):
    assert not a.same_grid(b), a.same_grid(b)
    assert sorted(a.variables) == sorted(b.variables)
    for n in a.variables:
        np.testing.assert_allclose(a.variables[n], b.variables[n], rtol=1e-6)


@pytest.mark.parametrize("name", ["s.pvd", "s.h5", "s.json"])
def test_round_trip_every_format_keeps_vectors(tmp_path, name):
    s = vector_series()
    write_series(s, str(tmp_path / name))
    back = read_series(str(tmp_path / name))
    assert_same(s, back)
    np.testing.assert_allclose(back.times, s.times)
    assert back.components.get("vel") == ["vel_0", "vel_1", "vel_2"]


def vtk_image(values: dict, dims=(5, 4, 3), origin=(0.5, 1, 2), spacing=(0.1, 0.2, 0.3)):
    img = vtkImageData()
    img.SetDimensions(*dims)
    img.SetOrigin(*origin)
    img.SetSpacing(*spacing)
    for n, v in values.items():
        arr = numpy_to_vtk(np.ascontiguousarray(v.reshape(-1, *v.shape[3:])), deep=True)
        arr.SetName(n)
        img.GetPointData().AddArray(arr)
    return img


def write_with_vtk(img, path):
    w = vtk_xml.vtkXMLImageDataWriter()
    w.SetFileName(str(path))
    w.SetInputData(img)
    assert w.Write() == 1


def test_reads_a_vti_folder_written_by_vtk_in_numeric_order(tmp_path):
    """Files as ParaView's writer names them (name_0.vti .. name_10.vti): numeric, not
    alphabetical, order; a 3-component array becomes three variables."""
    rng = np.random.default_rng(0)
    frames = [rng.random((3, 4, 5)).astype(np.float32) for _ in range(11)]
    for i, f in enumerate(frames):
        vec = np.stack([f, 2 * f, 3 * f], axis=-1)
        write_with_vtk(vtk_image({"p": f, "u": vec}), tmp_path / f"run_{i}.vti")
    s = read_series(str(tmp_path))
    assert s.n_times == 11 and s.dims == (5, 4, 3)
    np.testing.assert_allclose(s.variables["p"][10], frames[10])
    np.testing.assert_allclose(s.variables["u_2"][3], 3 * frames[3], rtol=1e-6)
    np.testing.assert_allclose(s.origin, (0.5, 1, 2))
    np.testing.assert_allclose(s.spacing, (0.1, 0.2, 0.3))


def test_our_pvd_opens_in_vtk_with_the_same_values(tmp_path):
    s = vector_series()
    write_series(s, str(tmp_path / "o.pvd"))
    files = sorted((tmp_path / "o").iterdir())
    assert len(files) == s.n_times
    r = vtk_xml.vtkXMLImageDataReader()
    r.SetFileName(str(files[1]))
    r.Update()
    img = r.GetOutput()
    assert img.GetDimensions() == s.dims
    from vtkmodules.util.numpy_support import vtk_to_numpy
    vel = vtk_to_numpy(img.GetPointData().GetArray("vel"))
    assert vel.shape == (int(np.prod(s.dims)), 3)
    np.testing.assert_allclose(vel[:, 1], s.variables["vel_1"][1].ravel(), rtol=1e-6)


def test_grids_that_differ_between_timesteps(tmp_path):
    a = np.zeros((3, 4, 5), np.float32)
    write_with_vtk(vtk_image({"p": a}), tmp_path / "x_0.vti")
    write_with_vtk(vtk_image({"p": a}, spacing=(0.1, 0.2, 0.5)), tmp_path / "x_1.vti")
    with pytest.raises(StsrError, match=r"x_1\.vti.*(grid|spacing)"):
        read_series(str(tmp_path))


def test_array_missing_at_one_timestep(tmp_path):
    a = np.zeros((3, 4, 5), np.float32)
    write_with_vtk(vtk_image({"p": a, "q": a}), tmp_path / "x_0.vti")
    write_with_vtk(vtk_image({"p": a}), tmp_path / "x_1.vti")
    with pytest.raises(StsrError, match=r"'q'.*x_1\.vti|x_1\.vti.*'q'"):
        read_series(str(tmp_path))


def test_nan_is_refused_with_its_place(tmp_path):
    s = smooth_series(nt=2)
    s.variables["rho"][1, 2, 3, 4] = np.inf
    write_series(s, str(tmp_path / "n.h5"))
    with pytest.raises(StsrError, match=r"'rho'.*timestep 1.*i=4, j=3, k=2"):
        read_series(str(tmp_path / "n.h5"))


def test_non_image_dataset_says_resample(tmp_path):
    w = vtk_xml.vtkXMLUnstructuredGridWriter()
    w.SetFileName(str(tmp_path / "mesh.vtu"))
    w.SetInputData(vtkUnstructuredGrid())
    w.Write()
    with pytest.raises(StsrError, match="Resample To Image"):
        read_series(str(tmp_path / "mesh.vtu"))
    # the same mesh behind a .pvd
    (tmp_path / "m.pvd").write_text(
        '<VTKFile type="Collection"><Collection>'
        '<DataSet timestep="0" part="0" file="mesh.vtu"/></Collection></VTKFile>')
    with pytest.raises(StsrError, match="Resample To Image"):
        read_series(str(tmp_path / "m.pvd"))


def test_cell_data_only_says_point_data(tmp_path):
    img = vtkImageData()
    img.SetDimensions(3, 3, 3)
    arr = numpy_to_vtk(np.ones(8, np.float32), deep=True)
    arr.SetName("c")
    img.GetCellData().AddArray(arr)
    write_with_vtk(img, tmp_path / "cells.vti")
    with pytest.raises(StsrError, match="only cell data.*Cell Data to Point Data"):
        read_series(str(tmp_path / "cells.vti"))


def test_truncated_vti_and_raw(tmp_path):
    s = smooth_series(nt=2)
    write_series(s, str(tmp_path / "t.pvd"))
    f = tmp_path / "t" / "t_0001.vti"
    data = f.read_bytes()
    f.write_bytes(data[: len(data) // 2])
    with pytest.raises(StsrError, match=r"t_0001\.vti.*(truncated|unreadable)"):
        read_series(str(tmp_path / "t.pvd"))

    write_series(s, str(tmp_path / "r.json"))
    desc = json.loads((tmp_path / "r.json").read_text())
    first = tmp_path / desc["pattern"].format(variable="rho", index=desc["index_start"])
    first.write_bytes(first.read_bytes()[:-8])
    with pytest.raises(StsrError, match=r"rho.*bytes; expected .*truncated"):
        read_series(str(tmp_path / "r.json"))


def test_bad_pvd_xml_missing_file_and_unknown_format(tmp_path):
    (tmp_path / "bad.pvd").write_text("<VTKFile type='Collection'><Collection>")
    with pytest.raises(StsrError, match=r"bad\.pvd"):
        read_series(str(tmp_path / "bad.pvd"))
    (tmp_path / "gone.pvd").write_text(
        '<VTKFile type="Collection"><Collection>'
        '<DataSet timestep="0" part="0" file="nothere.vti"/></Collection></VTKFile>')
    with pytest.raises(StsrError, match=r"nothere\.vti.*does not exist"):
        read_series(str(tmp_path / "gone.pvd"))
    with pytest.raises(StsrError, match="does not exist"):
        read_series(str(tmp_path / "absent.h5"))
    (tmp_path / "x.csv").write_text("1,2\n")
    with pytest.raises(StsrError, match="unknown format '.csv'"):
        read_series(str(tmp_path / "x.csv"))
    (tmp_path / "j.json").write_text("{not json")
    with pytest.raises(StsrError, match=r"j\.json.*not valid JSON"):
        read_series(str(tmp_path / "j.json"))
    (tmp_path / "h.h5").write_bytes(b"not hdf5 at all")
    with pytest.raises(StsrError, match=r"h\.h5.*not a readable HDF5"):
        read_series(str(tmp_path / "h.h5"))


def test_writers_never_replace_without_overwrite(tmp_path):
    s = smooth_series(nt=2)
    for name in ("w.pvd", "w.h5", "w.json"):
        write_series(s, str(tmp_path / name))
        before = (tmp_path / name).read_bytes()
        with pytest.raises(StsrError, match="exists"):
            write_series(smooth_series(nt=3), str(tmp_path / name))
        assert (tmp_path / name).read_bytes() == before
    assert read_series(str(tmp_path / "w.pvd")).n_times == 2
    write_series(smooth_series(nt=3), str(tmp_path / "w.pvd"), overwrite=True)
    assert read_series(str(tmp_path / "w.pvd")).n_times == 3
    # a missing output folder is created (issue 16), not refused
    write_series(s, str(tmp_path / "no" / "such" / "out.pvd"))
    assert read_series(str(tmp_path / "no" / "such" / "out.pvd")).n_times == 2
    leftovers = [p for p in os.listdir(tmp_path) if p.startswith(".")]
    assert leftovers == []


def write_with_a_damaged_array(values: dict, damaged: str, path):
    """A .vti (raw zlib-compressed appended data) whose array ``damaged`` holds garbage
    where its compressed values should be: VTK fails on it only if it reads that array."""
    w = vtk_xml.vtkXMLImageDataWriter()
    w.SetFileName(str(path))
    w.SetInputData(vtk_image(values))
    w.SetDataModeToAppended()
    w.EncodeAppendedDataOff()
    w.SetCompressorTypeToZLib()
    assert w.Write() == 1
    data = bytearray(path.read_bytes())
    head = data[:data.index(b"<AppendedData")].decode()
    names = re.findall(r'<DataArray[^>]*Name="(\w+)"', head)
    offsets = [int(v) for v in re.findall(r'<DataArray[^>]*offset="(\d+)"', head)]
    start = data.index(b"_", data.index(b"<AppendedData")) + 1
    i = names.index(damaged)
    for k in range(start + offsets[i] + 24, start + offsets[i + 1]):   # past its block header
        data[k] = 0x55
    path.write_bytes(bytes(data))


def test_asking_for_some_arrays_reads_only_those_from_vti_files(tmp_path):
    a = np.arange(60, dtype=np.float32).reshape(3, 4, 5)
    for t in range(2):
        write_with_a_damaged_array({"p": a + t, "junk": a * 7, "q": a - t}, "junk",
                                   tmp_path / f"x_{t}.vti")
    with pytest.raises(StsrError, match="x_0.vti' is unreadable"):
        read_series(str(tmp_path))                 # all arrays: the damaged one too
    s = read_series(str(tmp_path), arrays=["q", "p"])
    assert s.names == ["q", "p"]
    np.testing.assert_array_equal(s.variables["p"][1], a + 1)
    with pytest.raises(StsrError, match=r"no array named 'r' in '.*x_0.vti'; available: p, "
                                        r"junk, q"):
        read_series(str(tmp_path), arrays=["r"])


def test_asking_for_some_arrays_reads_only_those_datasets_of_an_h5_file(tmp_path):
    import h5py
    path = tmp_path / "s.h5"
    write_series(smooth_series(nt=2), str(path))
    with h5py.File(path, "a") as fh:
        fh["junk"] = np.zeros((2, 2))              # not a volume: an error if read
    with pytest.raises(StsrError, match="dataset 'junk'"):
        read_series(str(path))
    assert read_series(str(path), arrays=["rho"]).names == ["rho"]


@pytest.mark.parametrize("name", ["s.pvd", "s.h5", "s.json"])
def test_asking_for_a_component_or_a_vector_keeps_just_that(tmp_path, name):
    write_series(vector_series(), str(tmp_path / name))
    one = read_series(str(tmp_path / name), arrays=["vel_1", "temperature"])
    assert one.names == ["vel_1", "temperature"] and not one.components
    vec = read_series(str(tmp_path / name), arrays=["vel"])
    assert vec.names == ["vel_0", "vel_1", "vel_2"] and vec.components == {"vel": vec.names}
