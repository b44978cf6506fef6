"""VTK image data: ``.vti`` files, ``.pvd`` collections of them, and folders of ``.vti``.

Reading and writing go through the ``vtkmodules`` that ParaView provides (VTK 9.2 on
Debian), so what is written opens in ParaView and what ParaView writes is read here.
"""
from __future__ import annotations

import dataclasses
import os
import re
import shutil
import tempfile
import xml.etree.ElementTree as ET
from typing import Dict, List, Optional, Sequence

import numpy as np

from ..errors import StsrError
from ..grid import Grid
from ..series import Frame, VolumeSeries, arrays_holding, merged_arrays, series_from_frames

NON_IMAGE = {".vtu": "unstructured grid", ".vtp": "polygonal data", ".vts": "structured grid",
             ".vtr": "rectilinear grid", ".vtk": "legacy VTK", ".vtm": "multiblock",
             ".pvtu": "unstructured grid", ".vtmb": "multiblock"}
RESAMPLE_HINT = ("resample it to an image first (ParaView: Filters > Resample To Image, then "
                 "File > Save Data as .pvd/.vti)")


def _vtk():
    try:
        from vtkmodules.util import numpy_support
        from vtkmodules.vtkCommonCore import vtkFloatArray
        from vtkmodules.vtkCommonDataModel import vtkImageData
        from vtkmodules.vtkIOXML import vtkXMLImageDataReader, vtkXMLImageDataWriter
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise StsrError(f"VTK's Python modules are needed for .vti/.pvd files ({exc}); "
                        "install ParaView (Debian: python3-paraview)") from None
    return numpy_support, vtkFloatArray, vtkImageData, vtkXMLImageDataReader, vtkXMLImageDataWriter


def arrays_from_image(img, where: str = "",
                      names: Optional[Sequence[str]] = None) -> Dict[str, np.ndarray]:
    """Point arrays of a vtkImageData as numpy: ``[Z, Y, X]`` or ``[Z, Y, X, C]`` float32;
    ``names``: convert only the arrays that hold these (see :func:`arrays_holding`)."""
    numpy_support = _vtk()[0]
    dims = tuple(int(d) for d in img.GetDimensions())
    pd = img.GetPointData()
    stored = {pd.GetArray(i).GetName() or f"array{i}": pd.GetArray(i)
              for i in range(pd.GetNumberOfArrays()) if pd.GetArray(i) is not None}
    keep = arrays_holding(names, list(stored), where, strict=False) if names else list(stored)
    arrays: Dict[str, np.ndarray] = {}
    n = dims[0] * dims[1] * dims[2]
    for name, arr in stored.items():
        if name not in keep:
            continue
        a = numpy_support.vtk_to_numpy(arr).astype(np.float32)
        if a.shape[0] != n:
            raise StsrError(f"array '{name}'{where} has {a.shape[0]} values for {n} points: "
                            "the data is truncated or damaged")
        c = arr.GetNumberOfComponents()
        arrays[name] = a.reshape((dims[2], dims[1], dims[0]) + ((c,) if c > 1 else ()))
    return arrays


def read_vti(path: str, arrays: Optional[Sequence[str]] = None) -> Frame:
    """One .vti as a :class:`Frame` (time: its TimeValue field, or None). ``arrays``: read
    only the point arrays that hold these names (VTK skips the others' data)."""
    ext = os.path.splitext(path)[1].lower()
    if ext in NON_IMAGE:
        raise StsrError(f"'{path}' holds {NON_IMAGE[ext]}, not image data: {RESAMPLE_HINT}")
    if not os.path.isfile(path):
        raise StsrError(f"file '{path}' does not exist")
    with open(path, "rb") as fh:
        head = fh.read(4096)
    if b"<VTKFile" not in head:
        raise StsrError(f"'{path}' is not a VTK XML file")
    m = re.search(rb'type="(\w+)"', head)
    if m and m.group(1) != b"ImageData":
        raise StsrError(f"'{path}' holds {m.group(1).decode()}, not ImageData: {RESAMPLE_HINT}")
    numpy_support, _, _, Reader, _ = _vtk()
    from vtkmodules.vtkCommonCore import vtkCommand
    reader = Reader()
    errors: List[str] = []
    reader.AddObserver(vtkCommand.ErrorEvent, lambda o, e: errors.append(e))
    reader.SetFileName(path)
    if arrays:
        reader.UpdateInformation()
        selection = reader.GetPointDataArraySelection()
        stored = [selection.GetArrayName(i) for i in range(selection.GetNumberOfArrays())]
        keep = arrays_holding(arrays, stored, strict=False)
        for name in stored:
            selection.SetArraySetting(name, name in keep)
    reader.Update()
    img = reader.GetOutput()
    if errors or reader.GetErrorCode() or img is None or img.GetNumberOfPoints() == 0:
        raise StsrError(f"'{path}' is unreadable or truncated (VTK could not read it)")
    found = arrays_from_image(img, f" in '{path}'")
    if not found and not (arrays and stored):   # asked-for arrays: series_from_frames says
        if img.GetCellData().GetNumberOfArrays() > 0:
            raise StsrError(f"'{path}' has only cell data; point data is needed (ParaView: "
                            "Filters > Cell Data to Point Data)")
        raise StsrError(f"'{path}' has no point-data arrays")
    tv = None
    fd = img.GetFieldData()
    if fd is not None and fd.GetArray("TimeValue") is not None:
        tv = float(fd.GetArray("TimeValue").GetTuple1(0))
    return Frame(tv, found, image_grid(img), f"in '{path}'", tuple(stored) if arrays else ())


def image_grid(img) -> Grid:
    """The grid of a vtkImageData's points (its origin moved to the extent's first point)."""
    spacing = img.GetSpacing()
    origin = [o + e * s for o, e, s in zip(img.GetOrigin(), img.GetExtent()[0::2], spacing)]
    return Grid(img.GetDimensions(), origin, spacing)


def read_pvd(path: str, arrays: Optional[Sequence[str]] = None) -> VolumeSeries:
    if not os.path.isfile(path):
        raise StsrError(f"file '{path}' does not exist")
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as exc:
        raise StsrError(f"'{path}' is not a valid .pvd file (XML error: {exc})") from None
    entries = []
    for ds in root.iter("DataSet"):
        if ds.get("part", "0") not in ("0", ""):
            continue
        f = ds.get("file")
        if not f:
            raise StsrError(f"'{path}': a DataSet entry has no file attribute")
        try:
            t = float(ds.get("timestep", len(entries)))
        except ValueError:
            raise StsrError(f"'{path}': timestep '{ds.get('timestep')}' is not a number") from None
        entries.append((t, os.path.join(os.path.dirname(os.path.abspath(path)), f)))
    if not entries:
        raise StsrError(f"'{path}' lists no datasets")
    entries.sort(key=lambda e: e[0])
    for _, f in entries:
        ext = os.path.splitext(f)[1].lower()
        if ext in NON_IMAGE:
            raise StsrError(f"'{path}' lists {NON_IMAGE[ext]} ('{os.path.basename(f)}'), not "
                            f"image data: {RESAMPLE_HINT}")
        if not os.path.isfile(f):
            raise StsrError(f"'{path}' refers to '{f}', which does not exist")
    times = [e[0] for e in entries]
    if len(set(times)) != len(times):
        raise StsrError(f"'{path}' lists the same timestep twice: {times}")
    frames = [dataclasses.replace(read_vti(e[1], arrays), time=e[0]) for e in entries]
    return series_from_frames(frames, arrays, path)


def _natural_key(name: str):
    nums = re.findall(r"\d+", name)
    return (int(nums[-1]) if nums else -1, name)


def read_vti_folder(path: str, arrays: Optional[Sequence[str]] = None) -> VolumeSeries:
    files = sorted((f for f in os.listdir(path) if f.lower().endswith(".vti")), key=_natural_key)
    if not files:
        raise StsrError(f"folder '{path}' has no .vti files")
    frames = [read_vti(os.path.join(path, f), arrays) for f in files]
    if any(f.time is None for f in frames):     # TimeValue in every file, else 0, 1, ...
        frames = [dataclasses.replace(f, time=float(i)) for i, f in enumerate(frames)]
    return series_from_frames(frames, arrays, path)


def read_single_vti(path: str, arrays: Optional[Sequence[str]] = None) -> VolumeSeries:
    frame = read_vti(path, arrays)
    if frame.time is None:
        frame = dataclasses.replace(frame, time=0.0)
    return series_from_frames([frame], arrays, path)


def image_from_series(series: VolumeSeries, t: int):
    """Timestep ``t`` of a series as a vtkImageData (components re-assembled, TimeValue set)."""
    numpy_support, _, vtkImageData, _, _ = _vtk()
    from vtkmodules.vtkCommonCore import vtkDoubleArray
    img = vtkImageData()
    img.SetDimensions(*series.dims)
    img.SetOrigin(*series.origin)
    img.SetSpacing(*series.spacing)
    for name, a in merged_arrays(series, t).items():
        flat = np.ascontiguousarray(a, dtype=np.float32)
        flat = flat.reshape(-1, a.shape[-1]) if a.ndim == 4 else flat.reshape(-1)
        arr = numpy_support.numpy_to_vtk(flat, deep=1)
        arr.SetName(name)
        img.GetPointData().AddArray(arr)
    tv = vtkDoubleArray()
    tv.SetName("TimeValue")
    tv.InsertNextValue(float(series.times[t]))
    img.GetFieldData().AddArray(tv)
    return img


def _write_image(img, path: str) -> None:
    _, _, _, _, Writer = _vtk()
    w = Writer()
    w.SetFileName(path)
    w.SetInputData(img)
    w.SetDataModeToAppended()
    w.EncodeAppendedDataOff()
    w.SetCompressorTypeToZLib()
    if not w.Write():
        raise StsrError(f"could not write '{path}'")


def write_pvd(series: VolumeSeries, path: str, overwrite: bool = False) -> List[str]:
    """``OUT.pvd`` plus its ``.vti`` files in the folder ``OUT/`` beside it. Everything is
    written into temporary names first and renamed at the end."""
    path = os.path.abspath(path)
    folder = os.path.dirname(path)
    stem = os.path.splitext(os.path.basename(path))[0]
    data_dir = os.path.join(folder, stem)
    if os.path.exists(data_dir) and not os.path.isdir(data_dir):
        raise StsrError(f"'{data_dir}' exists and is not a folder")
    tmp_dir = tempfile.mkdtemp(prefix=f".{stem}-", dir=folder)
    try:
        files = []
        lines = ['<?xml version="1.0"?>',
                 '<VTKFile type="Collection" version="0.1" byte_order="LittleEndian">',
                 "  <Collection>"]
        for t in range(series.n_times):
            name = f"{stem}_{t:04d}.vti"
            _write_image(image_from_series(series, t), os.path.join(tmp_dir, name))
            files.append(os.path.join(data_dir, name))
            lines.append(f'    <DataSet timestep="{series.times[t]!r}" group="" part="0" '
                         f'file="{stem}/{name}"/>')
        lines += ["  </Collection>", "</VTKFile>", ""]
        tmp_pvd = os.path.join(tmp_dir, stem + ".pvd")
        with open(tmp_pvd, "w") as fh:
            fh.write("\n".join(lines))
        if os.path.isdir(data_dir):
            if not overwrite:
                raise StsrError(f"'{data_dir}' exists; pass overwrite to replace it")
            shutil.rmtree(data_dir)
        os.replace(tmp_pvd, path)
        os.replace(tmp_dir, data_dir)
        return [path] + files
    finally:
        if os.path.isdir(tmp_dir):
            shutil.rmtree(tmp_dir)


def write_vti(series: VolumeSeries, path: str) -> List[str]:
    if series.n_times != 1:
        raise StsrError(f"a single .vti holds one timestep; this series has {series.n_times} "
                        "(write a .pvd instead)")
    tmp = path + ".tmp.vti"
    _write_image(image_from_series(series, 0), tmp)
    os.replace(tmp, path)
    return [path]
