"""Readers and writers. ``read_series`` and ``write_series`` pick the format from the path:

* ``.pvd`` -- a ParaView collection of ``.vti`` files (times from the collection);
* a folder of ``.vti`` files, ordered by the last number in their names;
* ``.vti`` -- one timestep;
* ``.h5`` / ``.hdf5`` -- one dataset per variable ``[T, Z, Y, X]`` (see io/hdf5.py);
* ``.json`` -- the reference code's raw layout (see io/raw.py).
"""
from __future__ import annotations

import os
from typing import List, Optional, Sequence

from ..errors import StsrError
from ..series import VolumeSeries
from .vti import NON_IMAGE, RESAMPLE_HINT

READ_FORMATS = ".pvd, a folder of .vti, .vti, .h5/.hdf5, .json (raw layout)"


def read_series(path: str, arrays: Optional[Sequence[str]] = None) -> VolumeSeries:
    """Read any supported series; ``arrays`` keeps only those point arrays (a
    multi-component name keeps all its components), and the readers read no others from
    the files. NaN/Inf values are refused."""
    path = os.fspath(path)
    ext = os.path.splitext(path)[1].lower()
    if os.path.isdir(path):
        from .vti import read_vti_folder
        series = read_vti_folder(path, arrays)
    elif not os.path.exists(path):
        raise StsrError(f"'{path}' does not exist")
    elif ext == ".pvd":
        from .vti import read_pvd
        series = read_pvd(path, arrays)
    elif ext == ".vti":
        from .vti import read_single_vti
        series = read_single_vti(path, arrays)
    elif ext in (".h5", ".hdf5"):
        from .hdf5 import read_h5
        series = read_h5(path, arrays)
    elif ext == ".json":
        from .raw import read_raw
        series = read_raw(path, arrays)
    elif ext in NON_IMAGE:
        raise StsrError(f"'{path}' holds {NON_IMAGE[ext]}, not image data: {RESAMPLE_HINT}")
    else:
        raise StsrError(f"cannot read '{path}': unknown format '{ext}' (readable: "
                        f"{READ_FORMATS})")
    if arrays:
        series = series.select(arrays)
    series.check_finite()
    return series


def write_series(series: VolumeSeries, path: str, format: Optional[str] = None,
                 overwrite: bool = False) -> List[str]:
    """Write ``series``; the format comes from ``format`` (vti|h5|raw) or the extension.
    Refuses to replace existing output unless ``overwrite``; writes atomically."""
    path = os.path.abspath(os.fspath(path))
    folder = os.path.dirname(path)
    if not os.path.isdir(folder):
        raise StsrError(f"output folder '{folder}' does not exist")
    ext = os.path.splitext(path)[1].lower()
    fmt = format or {".pvd": "vti", ".vti": "vti", ".h5": "h5", ".hdf5": "h5",
                     ".json": "raw"}.get(ext)
    if fmt is None:
        raise StsrError(f"cannot write '{path}': unknown extension '{ext}' (use .pvd, .vti, "
                        ".h5 or .json)")
    if os.path.exists(path) and not overwrite:
        raise StsrError(f"'{path}' exists; pass --overwrite to replace it")
    if fmt == "vti":
        from .vti import write_pvd, write_vti
        if ext == ".vti":
            return write_vti(series, path)
        return write_pvd(series, path if ext == ".pvd" else path + ".pvd", overwrite)
    if fmt == "h5":
        from .hdf5 import write_h5
        return write_h5(series, path)
    if fmt == "raw":
        from .raw import write_raw
        return write_raw(series, path)
    raise StsrError(f"unknown output format '{format}': use vti, h5 or raw")
