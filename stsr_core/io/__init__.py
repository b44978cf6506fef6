"""Readers and writers. ``read_series`` and ``write_series`` pick the format from the path:

* ``.pvd`` -- a ParaView collection of ``.vti`` files (times from the collection);
* a folder of ``.vti`` files, ordered by the last number in their names;
* ``.vti`` -- one timestep;
* ``.h5`` / ``.hdf5`` -- one dataset per variable ``[T, Z, Y, X]`` (see io/hdf5.py);
* ``.nc`` (also ``.nc4``, ``.cdf``) -- netCDF, classic or netCDF-4: variables on regular
  coordinates, time from the ``time`` coordinate (see io/netcdf.py);
* ``.json`` -- the reference code's raw layout (see io/raw.py).
"""
from __future__ import annotations

import os
from typing import List, Optional, Sequence

from ..errors import StsrError
from ..series import VolumeSeries
from .stream import (NETCDF_EXTS, iter_steps, open_series_reader, open_series_writer,
                     output_format, read_step)
from .vti import NON_IMAGE, RESAMPLE_HINT

__all__ = ["read_series", "write_series", "open_series_writer", "open_series_reader",
           "read_step", "iter_steps", "READ_FORMATS"]

READ_FORMATS = ".pvd, a folder of .vti, .vti, .h5/.hdf5, .nc (netCDF), .json (raw layout)"


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
    elif ext in NETCDF_EXTS:
        from .netcdf import read_netcdf
        series = read_netcdf(path, arrays)
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
                 overwrite: bool = False, compression: Optional[str] = None) -> List[str]:
    """Write ``series``; the format comes from ``format`` (vti|h5|netcdf|raw) or the
    extension.
    Refuses to replace existing output unless ``overwrite``, creates missing folders, checks
    the disk space first; one step at a time through :func:`open_series_writer`, so every
    format has one writing path and its guarantees (docs/formats.md). ``compression``
    None: the format's default (io/stream.py DEFAULT_COMPRESSION)."""
    path = os.path.abspath(os.fspath(path))
    fmt = output_format(path, format)
    with open_series_writer(path, series.grid, series.times, series.names, series.components,
                            format=fmt, overwrite=overwrite,
                            compression=compression,
                            metadata=series.metadata) as writer:
        for t in range(series.n_times):
            writer.write_step(t, {n: v[t] for n, v in series.variables.items()})  # [Z, Y, X]
        return writer.close()
