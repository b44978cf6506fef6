"""The dispatch by path: which format's writer or reader a path gets, and the checks every
output passes before a byte is written. Series are written and read one timestep at a
time, so that outputs far larger than memory (597x245x245 x 97 steps x 4 variables = 56 GB
of float32) stream through a bounded buffer.

``open_series_writer`` is the one front for every format; the format's own writer lives with
its reader (io/vti.py, io/hdf5.py, io/netcdf.py, io/raw.py), on the shared base in
io/base.py. Imports run one way: base <- formats <- this module. ``write_series`` is built
on it, so each format has one writing path. What every writer promises (docs/formats.md):

* nothing is written before the output was checked: the format is known, an existing output
  is refused unless ``overwrite``, the disk has room for the uncompressed size (with a
  margin), and missing folders are then created;
* every file is written under a temporary name and renamed when complete;
* a ``.pvd`` never names a file that is not complete, whatever stops the writer;
* an output replaced with ``overwrite`` stays intact until the new one is complete.

``open_series_reader`` / ``read_step`` / ``iter_steps`` read one step without the others.
"""
from __future__ import annotations

import os
import shutil
import sys
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from ..errors import StsrError
from ..grid import Grid
from .base import SeriesReader, SeriesWriter, make_output_folder

# Output formats by extension; ``format`` overrides (vti|h5|netcdf|raw).
FORMAT_BY_EXT = {".pvd": "vti", ".vti": "vti", ".h5": "h5", ".hdf5": "h5", ".json": "raw",
                 ".nc": "netcdf", ".nc4": "netcdf"}
# Accepted ``compression`` per format (first = what "zlib" means for it, see docs/formats.md).
COMPRESSIONS = {"vti": ("zlib", "none", "lz4"), "h5": ("zlib", "none", "gzip", "lzf"),
                "netcdf": ("zlib", "none"), "raw": ("none",)}
# What an output gets when no ``compression`` is asked for, per format, chosen by measurement
# (bench/output.py, docs/formats.md): the smallest file that still writes at the speed of
# computing on 2 cores. lz4 costs a .pvd next to nothing and saves a little (ParaView reads
# it); zlib halves the write rate of every format, so .h5 and .nc are uncompressed unless
# asked (zlib there: about 40 % smaller).
DEFAULT_COMPRESSION = {"vti": "lz4", "h5": "none", "netcdf": "none", "raw": "none"}
# Extensions read as netCDF (classic or netCDF-4).
NETCDF_EXTS = (".nc", ".nc4", ".cdf", ".netcdf")
# Free space asked beyond the expected size: file headers, the .pvd, filesystem slack.
SPACE_MARGIN_FRACTION = 0.02
SPACE_MARGIN_BYTES = 64 * 1000 ** 2


def human_bytes(n: float) -> str:
    """Decimal units, as disks are sold and ``df -H`` prints them ("56.1 GB")."""
    for unit in ("B", "kB", "MB", "GB", "TB", "PB"):
        if abs(n) < 1000 or unit == "PB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} PB"  # pragma: no cover


def expected_bytes(grid: Grid, n_times: int, n_variables: int) -> int:
    """Uncompressed float32 size of the output, in Python ints (no allocation, no overflow:
    100000^3 points is fine)."""
    nx, ny, nz = (int(d) for d in grid.dims)
    return nx * ny * nz * int(n_times) * int(n_variables) * 4


def _existing_ancestor(folder: str) -> str:
    while not os.path.exists(folder):
        parent = os.path.dirname(folder)
        if parent == folder:
            break
        folder = parent
    return folder


def check_disk_space(path: str, needed: int) -> None:
    """Refuse, before anything is written, an output of ``needed`` bytes (uncompressed: the
    worst case, which noisy float data nearly reaches with zlib) that the disk holding
    ``path`` cannot take with a margin."""
    folder = _existing_ancestor(os.path.dirname(os.path.abspath(path)))
    if not os.path.isdir(folder):
        raise StsrError(f"cannot write '{path}': '{folder}' is not a folder")
    free = shutil.disk_usage(folder).free
    ask = int(needed * (1 + SPACE_MARGIN_FRACTION)) + SPACE_MARGIN_BYTES
    if ask > free:
        raise StsrError(f"not enough disk space for '{path}': the output needs "
                        f"{human_bytes(needed)} ({needed:,} bytes uncompressed), "
                        f"{human_bytes(free)} free on {folder}")



def output_format(path: str, format: Optional[str] = None) -> str:
    """vti|h5|netcdf|raw from ``format`` or the extension, or a StsrError naming the
    choices."""
    ext = os.path.splitext(path)[1].lower()
    if format is not None:
        if format not in COMPRESSIONS:
            raise StsrError(f"unknown output format '{format}': use vti, h5, netcdf or raw")
        return format
    fmt = FORMAT_BY_EXT.get(ext)
    if fmt is None:
        raise StsrError(f"cannot write '{path}': unknown extension '{ext}' (use .pvd, .vti, "
                        ".h5, .nc or .json)")
    return fmt


def process_group() -> Any:
    """stsr_core.distributed when this process is one of a group, else None (a process
    that never imported it is in none: reading and writing stay free of torch)."""
    mod = sys.modules.get(__name__.rsplit(".", 2)[0] + ".distributed")
    return mod if mod is not None and mod.world_size() > 1 else None


def open_series_writer(path: str, grid: Grid, times: Sequence[float],
                       variables: Sequence[str], components: Dict[str, List[str]],
                       format: Optional[str] = None, compression: Optional[str] = None,
                       overwrite: bool = False,
                       metadata: Optional[Dict[str, Any]] = None,
                       steps: Optional[Sequence[int]] = None,
                       slab_rows: Optional[int] = None) -> SeriesWriter:
    """A writer for ``len(times)`` steps of ``variables`` on ``grid`` at ``path``: ``.pvd``
    (one ``.vti`` per step in the folder ``NAME/`` beside it), ``.vti`` (one step), ``.h5`` /
    ``.hdf5`` (one chunked dataset per array ``[T, Z, Y, X(, C)]``), ``.nc`` (netCDF-4, time
    along an unlimited dimension, the source's attributes from ``metadata``) or ``.json``
    (raw files).
    ``compression``: ``zlib`` or ``none`` for every format; ``lz4`` for .vti, ``gzip``/``lzf``
    for HDF5; None: the format's DEFAULT_COMPRESSION. Checks everything (format, existing
    output, disk space) and creates missing folders before it writes a byte.

    ``steps``: in a group of processes (distributed.py), the steps this one writes; every
    process opens the writer together (the checks pass or fail on all of them), writes its
    steps' ``.vti`` files, and rank 0 writes the ``.pvd`` when all are done. Only ``.pvd``
    output is split so (an ``.h5`` or ``.json`` output is one file or one list written by
    one process: refused with a message).

    The writer takes whole steps (``write_step``) or z-slabs (``write_slab``, see
    io/base.py's SeriesWriter); ``slab_rows``: the rows of the slabs to come, when known, so
    that an ``.h5``/``.nc`` is chunked to suit them (no chunk waits for a second slab)."""
    group = process_group()
    split = steps is not None and group is not None
    check = lambda: _check_output(path, grid, times, variables, components,  # noqa: E731
                                  format, compression, overwrite, split)
    # in a group every process checks, and all fail together before any creates anything
    path, fmt, ext, compression = (group.together(check, "checking the output") if split
                                   else check())
    times, variables = [float(t) for t in times], list(variables)
    if split:
        from .vti import PvdWriter
        return PvdWriter.for_group(path, grid, times, variables, components, compression,
                                   overwrite).share_out(steps)  # type: ignore[arg-type]
    make_output_folder(path)
    return writer_class(fmt, ext)(path, grid, times, variables, components, compression,
                                  overwrite, metadata=metadata, slab_rows=slab_rows)


def writer_class(fmt: str, ext: str) -> type:
    """The writer of format ``fmt`` (vti|h5|netcdf|raw) for an output ending in ``ext``."""
    if fmt == "vti":
        from .vti import PvdWriter, VtiWriter
        return VtiWriter if ext == ".vti" else PvdWriter
    if fmt == "h5":
        from .hdf5 import H5Writer
        return H5Writer
    if fmt == "netcdf":
        from .netcdf import NetCDFWriter
        return NetCDFWriter
    from .raw import RawWriter
    return RawWriter


def writer_bytes(path: str, grid: Grid, variables: Sequence[str],
                 components: Dict[str, List[str]], rows: int, steps: int = 1,
                 format: Optional[str] = None, compression: Optional[str] = None,
                 slab_rows: Optional[int] = None,
                 metadata: Optional[Dict[str, Any]] = None) -> int:
    """The most bytes the writer of this output (as :func:`open_series_writer` would open
    it) holds beyond the caller's arrays while slabs of ``rows`` rows come for ``steps``
    steps open at once: its compression buffers and the partial chunks it keeps
    (SeriesWriter.slab_bytes), known before anything is opened, for a memory plan."""
    path = os.path.abspath(os.fspath(path))
    fmt = output_format(path, format)
    return writer_class(fmt, os.path.splitext(path)[1].lower()).buffer_bytes(
        grid, list(variables), components, compression or DEFAULT_COMPRESSION[fmt], rows,
        steps, slab_rows, metadata)


def _check_output(path: str, grid: Grid, times: Sequence[float], variables: Sequence[str],
                  components: Dict[str, List[str]], format: Optional[str],
                  compression: Optional[str], overwrite: bool, split: bool = False
                  ) -> Tuple[str, str, str, str]:
    """open_series_writer's checks (``split``: the output of a group of processes);
    returns the output's path (a .pvd added where needed), its format, extension and
    compression."""
    path = os.path.abspath(os.fspath(path))
    fmt = output_format(path, format)
    if split and (fmt != "vti" or os.path.splitext(path)[1].lower() == ".vti"):
        raise StsrError(f"cannot split '{path}' among processes: with several processes "
                        "each writes its own steps' .vti files, so the output must be a "
                        ".pvd (convert it afterwards if you need one .h5 file)")
    compression = compression or DEFAULT_COMPRESSION[fmt]
    if compression not in COMPRESSIONS[fmt]:
        raise StsrError(f"cannot write '{path}': compression '{compression}' is not one of "
                        f"{', '.join(COMPRESSIONS[fmt])} for {fmt} output")
    times = [float(t) for t in times]
    variables = list(variables)
    if not variables:
        raise StsrError(f"cannot write '{path}': no variables")
    if not times:
        raise StsrError(f"cannot write '{path}': no timesteps")
    if not np.all(np.isfinite(times)) or np.any(np.diff(times) <= 0):
        raise StsrError(f"cannot write '{path}': times must be finite and strictly increasing, "
                        f"got {times[:10]}")
    if len(set(variables)) != len(variables):
        raise StsrError(f"cannot write '{path}': a variable is named twice in {variables}")
    for orig, parts in components.items():
        bad = [p for p in parts if p not in variables]
        if bad:
            raise StsrError(f"cannot write '{path}': components {bad} of '{orig}' are not "
                            f"among the variables {variables}")
    ext = os.path.splitext(path)[1].lower()
    if fmt == "vti" and ext == ".vti" and len(times) != 1:
        raise StsrError(f"a single .vti holds one timestep; '{path}' would get {len(times)} "
                        "(write a .pvd instead)")
    if fmt == "vti" and ext not in (".vti", ".pvd"):
        path += ".pvd"
    if os.path.exists(path) and not overwrite:
        raise StsrError(f"'{path}' exists; pass --overwrite to replace it")
    if fmt == "vti" and not path.lower().endswith(".vti"):
        data_dir = os.path.splitext(path)[0]
        if os.path.exists(data_dir) and not os.path.isdir(data_dir):
            raise StsrError(f"'{data_dir}' exists and is not a folder: the .vti files of "
                            f"'{path}' go there")
        if os.path.exists(data_dir) and not overwrite:
            raise StsrError(f"'{data_dir}' exists; pass --overwrite to replace it")
    check_disk_space(path, expected_bytes(grid, len(times), len(variables)))
    return path, fmt, ext, compression


# --- reading one step at a time ----------------------------------------------------------------
def open_series_reader(path: str, arrays: Optional[Sequence[str]] = None) -> SeriesReader:
    """A step-by-step reader of ``path`` (``.pvd``, a folder of ``.vti``, ``.vti``, ``.h5`` /
    ``.hdf5``, ``.nc``, ``.json``): opening reads the grid, times and names, not the data.
    ``arrays`` keeps only those (a multi-component name keeps all its components)."""
    path = os.fspath(path)
    ext = os.path.splitext(path)[1].lower()
    if os.path.isdir(path) or ext in (".pvd", ".vti"):
        if not os.path.exists(path):
            raise StsrError(f"'{path}' does not exist")
        from .vti import VtiStepReader
        return VtiStepReader.at(path, arrays)
    if not os.path.exists(path):
        raise StsrError(f"'{path}' does not exist")
    if ext in (".h5", ".hdf5"):
        from .hdf5 import H5Reader
        return H5Reader(path, arrays)
    if ext in NETCDF_EXTS:
        from .netcdf import NetCDFReader
        return NetCDFReader(path, arrays)
    if ext == ".json":
        from .raw import RawReader
        return RawReader(path, arrays)
    raise StsrError(f"cannot read '{path}' step by step: unknown format '{ext}' (use .pvd, a "
                    "folder of .vti, .vti, .h5/.hdf5, .nc or .json)")


def read_step(path: str, i: int, arrays: Optional[Sequence[str]] = None
              ) -> Dict[str, np.ndarray]:
    """Step ``i`` of the series at ``path`` alone: ``{scalar variable: [Z, Y, X] float32}``."""
    return open_series_reader(path, arrays).read_step(i)


def iter_steps(path: str, arrays: Optional[Sequence[str]] = None
               ) -> Iterator[Tuple[float, Dict[str, np.ndarray]]]:
    """(time, arrays) of each step in turn; one step in memory at a time."""
    return iter(open_series_reader(path, arrays))
