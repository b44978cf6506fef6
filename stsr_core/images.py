"""Time series as Python users hold them in memory: a sequence of image-data objects, one
per timestep, converted to and from :class:`VolumeSeries`.

Accepted steps: ``pyvista.ImageData``, a ``vtkImageData`` (ParaView's or PyPI's VTK), or any
object with ``dimensions``, ``origin``, ``spacing`` and a ``point_data`` mapping of arrays in
VTK's point order (x fastest). PyVista is optional: it is imported only to build the
``pyvista.ImageData`` objects :func:`images_from_series` returns, so the engine and the
ParaView plugin never need it (PyPI's pyvista brings PyPI's vtk, which must not shadow
ParaView's; see docs/formats.md).
"""
from __future__ import annotations

import dataclasses
from typing import Any, List, Optional, Sequence

import numpy as np

from .errors import StsrError
from .grid import Grid
from .series import Frame, VolumeSeries, arrays_holding, merged_arrays, series_from_frames

NOT_IMAGE = ("expected pyvista.ImageData, a vtkImageData, or an object with dimensions, "
             "origin, spacing and point_data")


def _pyvista():
    try:
        import pyvista
    except ImportError:
        raise StsrError("pyvista is needed to return pyvista.ImageData (pip install pyvista, "
                        "in a venv without ParaView: see docs/formats.md); "
                        "predict_series() returns the same values without it") from None
    return pyvista


def _time_value(field_data: Any) -> Optional[float]:
    """A step's "TimeValue" field (as .vti files and ParaView keep it), or None."""
    try:
        if hasattr(field_data, "GetArray"):
            a = field_data.GetArray("TimeValue")
            return None if a is None else float(a.GetTuple1(0))
        if field_data is not None and "TimeValue" in field_data:
            return float(np.asarray(field_data["TimeValue"]).reshape(-1)[0])
    except (TypeError, ValueError, IndexError):
        return None
    return None


def _vtk_frame(img: Any, where: str, arrays: Optional[Sequence[str]]) -> Frame:
    """A vtkImageData (pyvista.ImageData is one) through the same conversion the .vti reader
    uses: its extent, spacing and point order as VTK defines them."""
    from .io.vti import arrays_from_image, image_grid
    direction = img.GetDirectionMatrix() if hasattr(img, "GetDirectionMatrix") else None
    if direction is not None and not direction.IsIdentity():
        raise StsrError(f"the image {where} is rotated (its direction matrix is not the "
                        "identity); stsr needs axis-aligned grids: resample it first")
    pd = img.GetPointData()
    stored = tuple(pd.GetArrayName(i) or f"array{i}" for i in range(pd.GetNumberOfArrays()))
    found = arrays_from_image(img, f" {where}", arrays)
    return Frame(_time_value(img.GetFieldData()), found, image_grid(img), where, stored)


def _duck_frame(img: Any, where: str, arrays: Optional[Sequence[str]]) -> Frame:
    """An object with dimensions, origin, spacing and point_data (arrays in x-fastest order)."""
    grid = Grid(tuple(img.dimensions), tuple(img.origin), tuple(img.spacing))
    nx, ny, nz = grid.dims
    stored = tuple(str(k) for k in img.point_data.keys())
    keep = arrays_holding(arrays, list(stored), f" {where}", strict=False) if arrays \
        else list(stored)
    found = {}
    for name in keep:
        try:
            a = np.asarray(img.point_data[name], dtype=np.float32)
        except (TypeError, ValueError) as exc:
            raise StsrError(f"array '{name}' {where} is not numeric ({exc})") from None
        if a.ndim not in (1, 2) or a.shape[0] != grid.n_points:
            raise StsrError(f"array '{name}' {where} has shape {a.shape}; the grid "
                            f"{grid.text()} needs {grid.n_points} values (or [N, C])")
        comps = (a.shape[1],) if a.ndim == 2 and a.shape[1] > 1 else ()
        found[name] = a.reshape((nz, ny, nx) + comps)
    field = getattr(img, "field_data", None)
    return Frame(_time_value(field), found, grid, where, stored)


def frame_from_image(img: Any, index: int, arrays: Optional[Sequence[str]] = None) -> Frame:
    """Step ``index`` of a user's sequence as a :class:`Frame` (its time: a TimeValue field
    when it has one)."""
    where = f"at step {index}"
    if hasattr(img, "GetPointData") and hasattr(img, "GetDimensions"):
        return _vtk_frame(img, where, arrays)
    if all(hasattr(img, a) for a in ("dimensions", "origin", "spacing", "point_data")):
        return _duck_frame(img, where, arrays)
    raise StsrError(f"step {index} is a {type(img).__name__}, not image data: {NOT_IMAGE} "
                    "(pyvista: resample a mesh onto an ImageData with mesh.sample or "
                    "ImageData.sample)")


def series_from_images(images: Any, times: Optional[Sequence[float]] = None,
                       arrays: Optional[Sequence[str]] = None) -> VolumeSeries:
    """A series from one image or a sequence of them (one per timestep, all on one grid).
    Times: ``times`` if given, else each image's TimeValue field, else 0, 1, 2, ...
    ``arrays`` keeps only those point arrays. NaN/Inf values are refused, as by the readers."""
    if hasattr(images, "GetPointData") or hasattr(images, "point_data"):
        images = [images]                          # one image: one timestep
    elif isinstance(images, (str, bytes)) or not hasattr(images, "__iter__"):
        raise StsrError(f"a {type(images).__name__} is not a sequence of images: {NOT_IMAGE}")
    frames = [frame_from_image(img, i, arrays) for i, img in enumerate(images)]
    if not frames:
        raise StsrError("no images: give one image per timestep")
    if times is not None:
        times = [float(t) for t in times]
        if len(times) != len(frames):
            raise StsrError(f"{len(times)} times for {len(frames)} images")
        frames = [dataclasses.replace(f, time=t) for f, t in zip(frames, times)]
    elif any(f.time is None for f in frames):
        if any(f.time is not None for f in frames):
            raise StsrError("some images have a TimeValue field and others do not: give "
                            "times=[...] for all of them")
        frames = [dataclasses.replace(f, time=float(i)) for i, f in enumerate(frames)]
    series = series_from_frames(frames, arrays, source="the images")
    if arrays:
        series = series.select(arrays)
    series.check_finite()
    return series


def images_from_series(series: VolumeSeries) -> List[Any]:
    """One ``pyvista.ImageData`` per timestep (vectors put back together, the time in a
    ``TimeValue`` field as ParaView keeps it)."""
    pv = _pyvista()
    image_data = getattr(pv, "ImageData", None) or pv.UniformGrid    # named so before 0.43
    out = []
    for t in range(series.n_times):
        img = image_data(dimensions=series.dims, spacing=series.spacing, origin=series.origin)
        for name, a in merged_arrays(series, t).items():
            img.point_data[name] = a.reshape(-1, a.shape[-1]) if a.ndim == 4 else a.reshape(-1)
        img.field_data["TimeValue"] = np.array([series.times[t]], dtype=np.float64)
        out.append(img)
    return out
