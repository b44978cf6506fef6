"""What every format's reader and writer shares: the base classes of a series written and
read one timestep at a time (:class:`SeriesWriter`, :class:`SeriesReader`) and the file
helpers their guarantees rest on (flush, rename, remove). The formats (vti.py, hdf5.py,
netcdf.py, raw.py) build on this module; stream.py, which picks a format by the path, sits
above them all.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from typing import Any, Collection, Dict, Iterator, List, Optional, Sequence, Set, Tuple

import numpy as np

from ..errors import StsrError
from ..files import apply_umask, write_error
from ..grid import Grid
from ..series import merge_components, split_components


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


def fsync_file(path: str, drop: bool = False) -> None:
    """Flush ``path`` to the disk before it is renamed into place (a power cut then leaves
    the old name or the complete new file, never an empty one). ``drop``: then let the
    kernel drop its pages from the page cache (they are on the disk: nothing is lost, a
    later read reads the disk), so that the next file's writes reuse those pages at once.
    On a VM whose balloon hands free memory back to the host (this project's dev VM:
    virtio_balloon), pages not reused within seconds come back only through the host, and
    writing into them cost 9x the kernel time: 1.46 GB in 17 files, fsync'd each, took 2.6-3.0
    s of kernel time kept in the cache and 0.46-0.52 s dropped (2026-12-06)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        if drop and hasattr(os, "posix_fadvise"):
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
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
        try:     # the file's space freed first: closing flushes HDF5's metadata, which on a
            os.truncate(tmp, 0)     # full disk fails, and HDF5 then crashes at exit
        except OSError:
            pass
        try:
            handle.close()
        except Exception:  # noqa: BLE001 - the file is removed anyway
            pass
    remove_quietly(tmp)


# Steps a writer keeps open at once, each with some rows written and some not (the upscale
# writes one slab of every step of an interval before the next slab); each open step holds
# its temporary file and, for some formats, a partial chunk (SeriesWriter.slab_bytes).
MAX_OPEN_STEPS = 64


class SeriesWriter:
    """Writes the timesteps of one output series as they come, whole or in z-slabs.

    ``write_slab(i, z0, arrays)`` takes rows ``z0 .. z0 + nz - 1`` of step ``i`` (time
    ``times[i]``): one float32 ``[nz, Y, X]`` array per scalar variable (components are put
    back together into one ``[nz, Y, X, C]`` array). The slabs of one step come in
    increasing z without gaps; those of different steps may interleave, up to
    ``max_open_steps`` steps open at once. A step is complete, and the format's promise
    holds for it (a ``.vti`` renamed into place and listed), when its last row is written.
    ``write_step(i, arrays)`` is one slab of all rows. ``close()`` finishes the output and
    returns the files written; ``abort()`` keeps only what the format's promise allows (see
    each writer). As a context manager an exception aborts. ``metadata`` is the source's
    (:attr:`VolumeSeries.metadata`); a format that can carry attributes writes its own part
    back (netCDF), the others ignore it. ``slab_rows``: the rows of the slabs to come, when
    known (a format that chunks its file chunks it to suit them; any slabs are taken).
    """

    merge = True        # False: the format stores each scalar variable apart (raw)
    max_open_steps = MAX_OPEN_STEPS
    # slabs of a multiple of this many rows go to the file without any rows held back (an
    # .h5's or .nc's compressed chunks: the rows of a chunk that spans two slabs wait)
    row_multiple = 1

    def __init__(self, path: str, grid: Grid, times: Sequence[float], variables: Sequence[str],
                 components: Dict[str, List[str]], compression: str, overwrite: bool,
                 metadata: Optional[Dict[str, Any]] = None,
                 slab_rows: Optional[int] = None) -> None:
        self.path = path
        self.slab_rows = slab_rows
        self.metadata = dict(metadata or {})
        self.grid = grid
        self.times = np.asarray(list(times), dtype=np.float64).reshape(-1)
        self.variables = list(variables)
        self.components = {k: list(v) for k, v in components.items()}
        self.compression = compression
        self.overwrite = overwrite
        self.done: List[int] = []          # steps complete on disk, in order of completion
        self.rows: Dict[int, int] = {}     # open steps: rows written so far
        self.failed: Set[int] = set()      # steps whose write failed (never complete)
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
    def _write_slab(self, i: int, z0: int, arrays: Dict[str, np.ndarray]) -> None:
        """Rows ``z0..`` of step ``i`` (merged when ``merge``: ``[nz, Y, X(, C)]``)."""
        raise NotImplementedError

    def _end_step(self, i: int) -> None:
        """Step ``i``'s last row is written: make it complete as the format promises."""
        raise NotImplementedError

    def _drop_step(self, i: int) -> None:
        """Forget open step ``i`` after a failed write (remove what it left); no-op by
        default (a one-file format removes its whole file on abort)."""

    def _finish(self) -> List[str]:
        raise NotImplementedError

    def _discard(self) -> None:
        raise NotImplementedError

    def kept(self) -> str:
        """What a failed write leaves (for its error message)."""
        return "an output that was there before is unchanged and no partial file is left"

    def slab_bytes(self, rows: int, steps: int = 1) -> int:
        """The most bytes this writer holds beyond the caller's arrays while slabs of
        ``rows`` rows come for ``steps`` open steps (the memory plan counts it)."""
        return self.buffer_bytes(self.grid, self.variables, self.components, self.compression,
                                 rows, steps, self.slab_rows, self.metadata)

    @classmethod
    def buffer_bytes(cls, grid: Grid, variables: Sequence[str], components: Dict[str, List[str]],
                     compression: str, rows: int, steps: int = 1,
                     slab_rows: Optional[int] = None,
                     metadata: Optional[Dict[str, Any]] = None) -> int:
        """:meth:`slab_bytes` of an output not opened yet (a memory plan is made before any
        file): here the copy that puts a vector's components together; formats add their
        own buffers."""
        ny, nx = grid.shape[1:]
        parts = sum(len(p) for p in components.values()) if cls.merge else 0
        return parts * int(rows) * ny * nx * 4

    # --- the interface -------------------------------------------------------------------------
    @property
    def n_times(self) -> int:
        return int(self.times.shape[0])

    def write_step(self, i: int, arrays: Dict[str, np.ndarray]) -> None:
        """Write step ``i`` (time ``times[i]``) whole: ``arrays`` maps each scalar variable to
        its float32 ``[Z, Y, X]`` values. Wrong names or shapes raise before anything is
        written."""
        self.store_slab(i, 0, self.checked_slab(i, 0, arrays, whole=True))

    def write_slab(self, i: int, z0: int, arrays: Dict[str, np.ndarray]) -> None:
        """Write rows ``z0 .. z0 + nz - 1`` of step ``i``: ``arrays`` maps each scalar
        variable to its float32 ``[nz, Y, X]`` values. Wrong names, shapes or rows raise
        before anything is written."""
        self.store_slab(i, z0, self.checked_slab(i, z0, arrays))

    def checked_step(self, i: int, arrays: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        """``write_step``'s checks alone (see :meth:`checked_slab`)."""
        return self.checked_slab(i, 0, arrays, whole=True)

    def checked_slab(self, i: int, z0: int, arrays: Dict[str, np.ndarray],
                     whole: bool = False, rows: Optional[Dict[int, int]] = None,
                     complete: Optional[Collection[int]] = None) -> Dict[str, np.ndarray]:
        """``write_slab``'s checks alone: the arrays as float32 C-ordered ``[nz, Y, X]`` (no
        copy when they are), or a StsrError naming what is wrong; nothing is written.
        ``whole``: all rows (write_step). ``rows`` / ``complete``: the rows of each open step
        and the complete steps as the caller counts them (a queue ahead of the writer);
        the writer's own by default."""
        rows = self.rows if rows is None else rows
        complete = self.done if complete is None else complete
        if self.state != "open":
            raise StsrError(f"'{self.path}': the writer is {self.state}; no step can be added")
        if not 0 <= int(i) < self.n_times or int(i) != i:
            raise StsrError(f"'{self.path}': step {i} is outside 0..{self.n_times - 1}")
        i = int(i)
        if i in complete:
            raise StsrError(f"'{self.path}': step {i} was already written")
        if i in self.failed:
            raise StsrError(f"'{self.path}': step {i} could not be written earlier")
        missing = [n for n in self.variables if n not in arrays]
        extra = [n for n in arrays if n not in self.variables]
        if missing or extra:
            raise StsrError(f"'{self.path}': step {i} has arrays {sorted(arrays)}; expected "
                            f"{self.variables}" + (f" (missing {missing})" if missing else "")
                            + (f" (unknown {extra})" if extra else ""))
        nz_all, ny, nx = self.grid.shape                            # (Z, Y, X)
        slab: Dict[str, np.ndarray] = {}
        nz = None
        for n in self.variables:
            a = np.asarray(arrays[n])
            if whole and a.shape != (nz_all, ny, nx):
                raise StsrError(f"'{self.path}': array '{n}' of step {i} has shape {a.shape}; "
                                f"the grid {self.grid.text()} needs [Z, Y, X] = "
                                f"{(nz_all, ny, nx)}")
            if a.ndim != 3 or a.shape[1:] != (ny, nx) or a.shape[0] < 1 or \
                    (nz is not None and a.shape[0] != nz):
                raise StsrError(f"'{self.path}': array '{n}' of step {i} (rows from {z0}) has "
                                f"shape {a.shape}; slabs of the grid {self.grid.text()} are "
                                f"[nz, Y, X] = [nz, {ny}, {nx}], the same nz for every array")
            nz = a.shape[0]
            slab[n] = np.ascontiguousarray(a, dtype=np.float32)    # [nz, Y, X]
        written = rows.get(i, 0)
        if int(z0) != z0 or z0 != written:
            raise StsrError(f"'{self.path}': a slab of step {i} starts at row {z0}, but "
                            f"{written} of its rows are written: the next slab starts at row "
                            f"{written} (slabs of a step come in increasing z, no gaps)")
        if written + nz > nz_all:  # type: ignore[operator]
            raise StsrError(f"'{self.path}': rows {z0}..{z0 + nz - 1} of step {i} pass the "
                            f"grid's {nz_all} rows")
        if i not in rows and len(rows) >= self.max_open_steps:
            raise StsrError(f"'{self.path}': {len(rows)} steps are open (some rows written), "
                            f"the most this writer keeps; complete one before step {i}")
        return slab

    def store_slab(self, i: int, z0: int, slab: Dict[str, np.ndarray]) -> None:
        """Write rows ``z0..`` of step ``i`` whose arrays passed :meth:`checked_slab`
        (vectors are put together here, on the thread that writes); the step's last row
        completes it."""
        i, z0 = int(i), int(z0)
        end = z0 + next(iter(slab.values())).shape[0]
        try:
            self._write_slab(i, z0, merge_components(slab, self.variables, self.components)
                             if self.merge else slab)
            if end == self.grid.shape[0]:
                self._end_step(i)
        except BaseException as exc:
            self.rows.pop(i, None)
            self.failed.add(i)
            self._drop_step(i)
            if isinstance(exc, OSError):    # a full disk: the step's temporary file is gone
                raise write_error(f"step {i} of '{self.path}'", exc, self.kept()) from None
            raise
        if end == self.grid.shape[0]:
            self.rows.pop(i, None)
            self.done.append(i)
        else:
            self.rows[i] = end

    def store_step(self, i: int, step: Dict[str, np.ndarray]) -> None:
        """Write step ``i`` whose arrays passed :meth:`checked_step`."""
        self.store_slab(i, 0, step)

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
        """Stop: remove temporary files, those of open steps too; what stays depends on the
        format (docs/formats.md)."""
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


class ChunkRows:
    """Slabs of any height cut at a file's chunk boundaries, so that a compressed chunk is
    written once, whole: each chunk goes on as soon as its rows are in -- a view of the slab
    when the slab holds it, else gathered from consecutive slabs into a buffer of one chunk
    held per (step, array) meanwhile. ``starts``: the first row of each chunk, in the order
    rows arrive (0 first); the last chunk ends at ``total``."""

    def __init__(self, starts: Sequence[int], total: int) -> None:
        self.starts = list(starts) + [int(total)]
        self.held: Dict[Tuple[int, str], Tuple[int, np.ndarray, int]] = {}

    def _chunk(self, row: int) -> Tuple[int, int]:
        """(first, end) row of the chunk holding ``row``."""
        k = int(np.searchsorted(self.starts, row, side="right")) - 1
        return self.starts[k], self.starts[k + 1]

    def add(self, key: Tuple[int, str], z0: int, a: np.ndarray) -> List[Tuple[int, np.ndarray]]:
        """Rows ``z0..`` of ``key`` (a (step, array) pair): the (first row, rows) of every
        chunk they complete."""
        out: List[Tuple[int, np.ndarray]] = []
        row, end = z0, z0 + a.shape[0]
        while row < end:
            first, stop = self._chunk(row)
            held = self.held.pop(key, None)
            if held is None and row == first and end >= stop:     # whole: no copy
                out.append((first, a[row - z0:stop - z0]))
                row = stop
                continue
            if held is None:
                held = (first, np.empty((stop - first,) + a.shape[1:], np.float32), 0)
            first, buf, n = held
            take = min(stop - row, end - row)
            buf[n:n + take] = a[row - z0:row - z0 + take]
            row += take
            if first + n + take == stop:
                out.append((first, buf))
            else:
                self.held[key] = (first, buf, n + take)
        return out

    def drop(self, step: int) -> None:
        """Forget what is held for ``step``."""
        for key in [k for k in self.held if k[0] == step]:
            del self.held[key]

    def rows_held(self, rows: int) -> int:
        """The most rows held per (step, array) while slabs of ``rows`` rows come."""
        return rows_held(self.starts, rows)


def chunk_starts(total: int, chunk_rows: int, descending: bool = False) -> List[int]:
    """The first row of each chunk of ``chunk_rows`` rows of a file's z axis, in the order
    slabs arrive (increasing z); ``descending``: the file stores z the other way round (its
    chunks start at its last row), so the first chunk to arrive may be partial."""
    bounds = list(range(chunk_rows, total, chunk_rows)) + [total]      # in the file
    return sorted(total - b for b in bounds) if descending else [0] + bounds[:-1]


def rows_held(starts: Sequence[int], rows: int) -> int:
    """The most rows a (step, array) holds while slabs of ``rows`` rows come to chunks
    starting at ``starts`` (the total rows last): none when every slab starts and ends on
    a chunk's boundary, else one chunk's."""
    total, bounds = starts[-1], set(starts)
    if all(z in bounds for z in range(int(rows), total, int(rows))):
        return 0
    return int(np.diff(starts).max())


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
        self.metadata: Dict[str, Any] = {}     # what a whole-series read would keep of it
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


def split_merged(merged: Dict[str, np.ndarray]
                 ) -> Tuple[Dict[str, np.ndarray], Dict[str, List[str]]]:
    """``[Z, Y, X, C]`` arrays -> C scalar variables, as the whole-series readers do."""
    out: Dict[str, np.ndarray] = {}
    comps: Dict[str, List[str]] = {}
    for n, a in merged.items():
        parts = split_components(n, a[None])                       # [1, Z, Y, X] each
        if a.ndim == 4:
            comps[n] = list(parts)
        out.update({k: np.ascontiguousarray(v[0]) for k, v in parts.items()})
    return out, comps
