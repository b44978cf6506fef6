"""Series written and read one timestep at a time, so that outputs far larger than memory
(597x245x245 x 97 steps x 4 variables = 56 GB of float32) stream through a bounded buffer.

``open_series_writer`` is the one front for every format; the format's own writer lives with
its reader (io/vti.py, io/hdf5.py, io/raw.py). ``write_series`` is built on it, so each
format has one writing path. What every writer promises (docs/formats.md):

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
import tempfile
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from ..errors import StsrError
from ..files import apply_umask, write_error
from ..grid import Grid
from ..series import merge_components, split_components

# Output formats by extension; ``format`` overrides (vti|h5|netcdf|raw).
FORMAT_BY_EXT = {".pvd": "vti", ".vti": "vti", ".h5": "h5", ".hdf5": "h5", ".json": "raw",
                 ".nc": "netcdf", ".nc4": "netcdf"}
# Accepted ``compression`` per format (first = what "zlib" means for it, see docs/formats.md).
COMPRESSIONS = {"vti": ("zlib", "none", "lz4"), "h5": ("zlib", "none", "gzip", "lzf"),
                "netcdf": ("zlib", "none"), "raw": ("none",)}
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


def make_output_folder(path: str) -> str:
    """Create the folder that will hold ``path`` (and its parents); returns it."""
    folder = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as exc:
        raise StsrError(f"cannot create the output folder '{folder}': {exc.strerror}") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise StsrError(f"output folder '{folder}' is not writable")
    return folder


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


def fsync_file(path: str) -> None:
    """Flush ``path`` to the disk before it is renamed into place (a power cut then leaves
    the old name or the complete new file, never an empty one)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_quietly(path: str) -> None:
    try:
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        elif os.path.lexists(path):
            os.remove(path)
    except OSError:
        pass


def discard_file(handle: Any, tmp: str) -> None:
    """Close ``handle`` (an open h5py/netCDF file, or None) whatever state it is in, and
    remove its temp file ``tmp``: what a one-file writer's abort does."""
    if handle is not None:
        try:
            handle.close()
        except Exception:  # noqa: BLE001 - the file is removed anyway
            pass
    remove_quietly(tmp)


class SeriesWriter:
    """Writes the timesteps of one output series as they come.

    ``write_step(i, arrays)`` takes one float32 ``[Z, Y, X]`` array per scalar variable for
    time ``times[i]`` (components are put back together into one ``[Z, Y, X, C]`` array);
    ``close()`` finishes the output and returns the files written; ``abort()`` keeps only what
    the format's promise allows (see each writer). As a context manager an exception aborts.
    ``metadata`` is the source's (:attr:`VolumeSeries.metadata`); a format that can carry
    attributes writes its own part back (netCDF), the others ignore it.
    """

    merge = True        # False: the format stores each scalar variable apart (raw)

    def __init__(self, path: str, grid: Grid, times: Sequence[float], variables: Sequence[str],
                 components: Dict[str, List[str]], compression: str, overwrite: bool,
                 metadata: Optional[Dict[str, Any]] = None) -> None:
        self.path = path
        self.metadata = dict(metadata or {})
        self.grid = grid
        self.times = np.asarray(list(times), dtype=np.float64).reshape(-1)
        self.variables = list(variables)
        self.components = {k: list(v) for k, v in components.items()}
        self.compression = compression
        self.overwrite = overwrite
        self.done: List[int] = []          # steps complete on disk, in order of writing
        self.state = "open"                # open | closed | aborted
        self.files: List[str] = []
        # the steps this writer writes: all of them, or one process's share of a
        # distributed output (see PvdWriter)
        self.steps: List[int] = list(range(self.n_times))

    # --- for one-file writers ---------------------------------------------------------------
    def _temp_beside(self) -> str:
        """A new empty temp file beside the output, with the user's umask: written step by
        step and renamed over the output on close."""
        folder, base = os.path.split(self.path)
        fd, tmp = tempfile.mkstemp(prefix=f".{base}-", suffix=".tmp", dir=folder)
        os.close(fd)
        apply_umask(tmp)
        return tmp

    def _merged_names(self) -> List[str]:
        """The arrays as stored: a vector's components under its one name, scalars as
        they are, in the variables' order."""
        owner = {p: o for o, parts in self.components.items() for p in parts}
        return list(dict.fromkeys(owner.get(n, n) for n in self.variables))

    # --- what subclasses provide -------------------------------------------------------------
    def _write(self, i: int, arrays: Dict[str, np.ndarray]) -> None:
        raise NotImplementedError

    def _finish(self) -> List[str]:
        raise NotImplementedError

    def _discard(self) -> None:
        raise NotImplementedError

    def kept(self) -> str:
        """What a failed write leaves (for its error message)."""
        return "an output that was there before is unchanged and no partial file is left"

    # --- the interface -------------------------------------------------------------------------
    @property
    def n_times(self) -> int:
        return int(self.times.shape[0])

    def write_step(self, i: int, arrays: Dict[str, np.ndarray]) -> None:
        """Write step ``i`` (time ``times[i]``): ``arrays`` maps each scalar variable to its
        float32 ``[Z, Y, X]`` values. Wrong names or shapes raise before anything is written."""
        if self.state != "open":
            raise StsrError(f"'{self.path}': the writer is {self.state}; no step can be added")
        if not 0 <= int(i) < self.n_times or int(i) != i:
            raise StsrError(f"'{self.path}': step {i} is outside 0..{self.n_times - 1}")
        i = int(i)
        if i in self.done:
            raise StsrError(f"'{self.path}': step {i} was already written")
        missing = [n for n in self.variables if n not in arrays]
        extra = [n for n in arrays if n not in self.variables]
        if missing or extra:
            raise StsrError(f"'{self.path}': step {i} has arrays {sorted(arrays)}; expected "
                            f"{self.variables}" + (f" (missing {missing})" if missing else "")
                            + (f" (unknown {extra})" if extra else ""))
        shape = self.grid.shape                                     # (Z, Y, X)
        step: Dict[str, np.ndarray] = {}
        for n in self.variables:
            a = np.asarray(arrays[n])
            if a.shape != shape:
                raise StsrError(f"'{self.path}': array '{n}' of step {i} has shape {a.shape}; "
                                f"the grid {self.grid.text()} needs [Z, Y, X] = {shape}")
            step[n] = np.ascontiguousarray(a, dtype=np.float32)    # [Z, Y, X]
        try:
            self._write(i, merge_components(step, self.variables, self.components)
                        if self.merge else step)
        except OSError as exc:      # a full disk: the temporary file is gone already
            raise write_error(f"step {i} of '{self.path}'", exc, self.kept()) from None
        self.done.append(i)

    def close(self) -> List[str]:
        """Finish the output (every step must have been written) and return its files;
        a second call returns the same list."""
        if self.state == "closed":
            return list(self.files)
        if self.state == "aborted":
            raise StsrError(f"'{self.path}': the writer was aborted; nothing to close")
        done = set(self.done)
        missing = [i for i in self.steps if i not in done]
        if missing:
            self.abort()
            more = " ..." if len(missing) > 10 else ""
            raise StsrError(f"'{self.path}': steps {missing[:10]}{more} of {self.n_times} were "
                            "not written; output incomplete (see docs/formats.md for what is "
                            "kept)")
        try:
            self.files = self._finish()
        except BaseException as exc:
            self.abort()
            if isinstance(exc, OSError):
                raise write_error(f"'{self.path}'", exc, self.kept()) from None
            raise
        self.state = "closed"
        return list(self.files)

    def abort(self) -> None:
        """Stop: remove temporary files; what stays depends on the format (docs/formats.md)."""
        if self.state != "open":
            return
        self.state = "aborted"
        self._discard()

    def __enter__(self) -> "SeriesWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()
        elif self.state == "open":
            self.close()


def process_group() -> Any:
    """stsr_core.distributed when this process is one of a group, else None (a process
    that never imported it is in none: reading and writing stay free of torch)."""
    mod = sys.modules.get(__name__.rsplit(".", 2)[0] + ".distributed")
    return mod if mod is not None and mod.world_size() > 1 else None


def open_series_writer(path: str, grid: Grid, times: Sequence[float],
                       variables: Sequence[str], components: Dict[str, List[str]],
                       format: Optional[str] = None, compression: str = "zlib",
                       overwrite: bool = False,
                       metadata: Optional[Dict[str, Any]] = None,
                       steps: Optional[Sequence[int]] = None) -> SeriesWriter:
    """A writer for ``len(times)`` steps of ``variables`` on ``grid`` at ``path``: ``.pvd``
    (one ``.vti`` per step in the folder ``NAME/`` beside it), ``.vti`` (one step), ``.h5`` /
    ``.hdf5`` (one chunked dataset per array ``[T, Z, Y, X(, C)]``), ``.nc`` (netCDF-4, time
    along an unlimited dimension, the source's attributes from ``metadata``) or ``.json``
    (raw files).
    ``compression``: ``zlib`` (default) or ``none`` for every format; ``lz4`` for .vti,
    ``gzip``/``lzf`` for HDF5. Checks everything (format, existing output, disk space) and
    creates missing folders before it writes a byte.

    ``steps``: in a group of processes (distributed.py), the steps this one writes; every
    process opens the writer together (the checks pass or fail on all of them), writes its
    steps' ``.vti`` files, and rank 0 writes the ``.pvd`` when all are done. Only ``.pvd``
    output is split so (an ``.h5`` or ``.json`` output is one file or one list written by
    one process: refused with a message)."""
    group = process_group()
    split = steps is not None and group is not None
    check = lambda: _check_output(path, grid, times, variables, components,  # noqa: E731
                                  format, compression, overwrite, split)
    # in a group every process checks, and all fail together before any creates anything
    path, fmt, ext = group.together(check, "checking the output") if split else check()
    times, variables = [float(t) for t in times], list(variables)
    if split:
        from .vti import PvdWriter
        return PvdWriter.for_group(path, grid, times, variables, components, compression,
                                   overwrite).share_out(steps)  # type: ignore[arg-type]
    make_output_folder(path)
    if fmt == "vti":
        from .vti import PvdWriter, VtiWriter
        cls = VtiWriter if ext == ".vti" else PvdWriter
    elif fmt == "h5":
        from .hdf5 import H5Writer as cls  # type: ignore[assignment]
    elif fmt == "netcdf":
        from .netcdf import NetCDFWriter as cls  # type: ignore[assignment]
    else:
        from .raw import RawWriter as cls  # type: ignore[assignment]
    return cls(path, grid, times, variables, components, compression, overwrite,
               metadata=metadata)


def _check_output(path: str, grid: Grid, times: Sequence[float], variables: Sequence[str],
                  components: Dict[str, List[str]], format: Optional[str], compression: str,
                  overwrite: bool, split: bool = False) -> Tuple[str, str, str]:
    """open_series_writer's checks (``split``: the output of a group of processes);
    returns the output's path (a .pvd added where needed), its format and extension."""
    path = os.path.abspath(os.fspath(path))
    fmt = output_format(path, format)
    if split and (fmt != "vti" or os.path.splitext(path)[1].lower() == ".vti"):
        raise StsrError(f"cannot split '{path}' among processes: with several processes "
                        "each writes its own steps' .vti files, so the output must be a "
                        ".pvd (convert it afterwards if you need one .h5 file)")
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
    return path, fmt, ext


# --- reading one step at a time ----------------------------------------------------------------
class SeriesReader:
    """One series' grid, times and variables, read without its data; ``read_step(i)`` reads
    step ``i`` alone as ``{scalar variable: [Z, Y, X] float32}`` (components split as
    :class:`VolumeSeries` holds them)."""

    def __init__(self, path: str, grid: Grid, times: Sequence[float], variables: List[str],
                 components: Dict[str, List[str]]) -> None:
        self.path = path
        self.grid = grid
        self.times = np.asarray(times, dtype=np.float64)
        self.variables = variables
        self.components = components
        t = self.times        # what VolumeSeries.validate promises of a whole series
        if t.ndim != 1 or t.size < 1 or not np.all(np.isfinite(t)) or np.any(np.diff(t) <= 0):
            raise StsrError(f"'{path}': time values must be finite and strictly increasing, "
                            f"got {t.reshape(-1).tolist()[:10]}")
        if not all(np.isfinite(v) and v > 0 for v in grid.spacing) or \
                not all(np.isfinite(v) for v in grid.origin):
            raise StsrError(f"'{path}': the grid needs a finite origin and positive spacing, "
                            f"got origin {grid.origin}, spacing {grid.spacing}")

    @property
    def n_times(self) -> int:
        return int(self.times.shape[0])

    def _check(self, i: int) -> int:
        if int(i) != i or not -self.n_times <= i < self.n_times:
            raise StsrError(f"'{self.path}' has {self.n_times} timesteps; step {i} does not exist")
        return int(i) % self.n_times

    def read_step(self, i: int) -> Dict[str, np.ndarray]:
        raise NotImplementedError

    def __iter__(self) -> Iterator[Tuple[float, Dict[str, np.ndarray]]]:
        for i in range(self.n_times):
            yield float(self.times[i]), self.read_step(i)


def keep_arrays(names: Sequence[str], arrays: Optional[Sequence[str]], path: str) -> List[str]:
    if arrays is None:
        return list(names)
    unknown = [a for a in arrays if a not in names]
    if unknown:
        raise StsrError(f"no array named {unknown} in '{path}'; available: {', '.join(names)}")
    return [n for n in names if n in arrays]


def _split(merged: Dict[str, np.ndarray]) -> Tuple[Dict[str, np.ndarray], Dict[str, List[str]]]:
    """``[Z, Y, X, C]`` arrays -> C scalar variables, as the whole-series readers do."""
    out: Dict[str, np.ndarray] = {}
    comps: Dict[str, List[str]] = {}
    for n, a in merged.items():
        parts = split_components(n, a[None])                       # [1, Z, Y, X] each
        if a.ndim == 4:
            comps[n] = list(parts)
        out.update({k: np.ascontiguousarray(v[0]) for k, v in parts.items()})
    return out, comps


class _VtiReader(SeriesReader):
    def __init__(self, path: str, files: List[str], times: Sequence[float],
                 arrays: Optional[Sequence[str]]) -> None:
        from .vti import read_vti
        first = read_vti(files[0], arrays)          # VTK reads only the asked arrays' data
        self.arrays = arrays
        # every array the file holds (read or not) names the choices in an error
        self.keep = keep_arrays(list(first.stored or first.arrays), arrays, files[0])
        self.files = files
        variables, comps = _split({n: first.arrays[n] for n in self.keep})
        super().__init__(path, first.grid, times, list(variables), comps)

    def read_step(self, i: int) -> Dict[str, np.ndarray]:
        from .vti import read_vti
        i = self._check(i)
        frame = read_vti(self.files[i], self.arrays)
        diffs = self.grid.differences(frame.grid)
        if diffs:
            raise StsrError(f"timesteps have different grids: '{self.files[i]}' differs from "
                            f"'{self.files[0]}' ({'; '.join(diffs)})")
        missing = [n for n in self.keep if n not in frame.arrays]
        if missing:
            raise StsrError(f"array {missing} is missing at a timestep: not in "
                            f"'{self.files[i]}' (it is in '{self.files[0]}')")
        return _split({n: frame.arrays[n] for n in self.keep})[0]


def _vti_time(path: str) -> Optional[float]:
    """A .vti's TimeValue with its point arrays left unread."""
    from vtkmodules.vtkIOXML import vtkXMLImageDataReader

    from .vtkxml_check import check_image_file
    if not os.path.isfile(path):
        raise StsrError(f"file '{path}' does not exist")
    check_image_file(path)                  # VTK crashes on some damaged files: not on these
    r = vtkXMLImageDataReader()
    r.SetFileName(path)
    r.UpdateInformation()
    r.GetPointDataArraySelection().DisableAllArrays()
    r.GetCellDataArraySelection().DisableAllArrays()
    r.Update()
    fd = r.GetOutput().GetFieldData()
    a = fd.GetArray("TimeValue") if fd is not None else None
    return None if a is None or a.GetNumberOfTuples() < 1 else float(a.GetTuple1(0))


def open_series_reader(path: str, arrays: Optional[Sequence[str]] = None) -> SeriesReader:
    """A step-by-step reader of ``path`` (``.pvd``, a folder of ``.vti``, ``.vti``, ``.h5`` /
    ``.hdf5``, ``.nc``, ``.json``): opening reads the grid, times and names, not the data.
    ``arrays`` keeps only those (a multi-component name keeps all its components)."""
    path = os.fspath(path)
    ext = os.path.splitext(path)[1].lower()
    if os.path.isdir(path):
        from .vti import _natural_key
        names = sorted((f for f in os.listdir(path) if f.lower().endswith(".vti")),
                       key=_natural_key)
        if not names:
            raise StsrError(f"folder '{path}' has no .vti files")
        files = [os.path.join(path, f) for f in names]
        tvs = [_vti_time(f) for f in files]
        times = [float(i) for i in range(len(files))] if any(t is None for t in tvs) else tvs
        return _VtiReader(path, files, times, arrays)  # type: ignore[arg-type]
    if not os.path.exists(path):
        raise StsrError(f"'{path}' does not exist")
    if ext == ".pvd":
        from .vti import pvd_steps
        entries = pvd_steps(path)
        return _VtiReader(path, [f for _, f in entries], [t for t, _ in entries], arrays)
    if ext == ".vti":
        tv = _vti_time(path)
        return _VtiReader(path, [path], [0.0 if tv is None else tv], arrays)
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
