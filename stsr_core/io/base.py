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
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

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
        self.store_step(i, self.checked_step(i, arrays))

    def checked_step(self, i: int, arrays: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        """``write_step``'s checks alone: the arrays as float32 C-ordered ``[Z, Y, X]`` (no
        copy when they are), or a StsrError naming what is wrong; nothing is written."""
        if self.state != "open":
            raise StsrError(f"'{self.path}': the writer is {self.state}; no step can be added")
        if not 0 <= int(i) < self.n_times or int(i) != i:
            raise StsrError(f"'{self.path}': step {i} is outside 0..{self.n_times - 1}")
        if int(i) in self.done:
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
        return step

    def store_step(self, i: int, step: Dict[str, np.ndarray]) -> None:
        """Write step ``i`` whose arrays passed :meth:`checked_step` (vectors are put
        together here, on the thread that writes)."""
        i = int(i)
        try:
            self._write(i, merge_components(step, self.variables, self.components)
                        if self.merge else step)
        except OSError as exc:      # a full disk: the temporary file is gone already
            raise write_error(f"step {i} of '{self.path}'", exc, self.kept()) from None
        self.done.append(i)

    # --- slabs (CONTEXT interface 2) ---------------------------------------------------------
    # FALLBACK until branch i29-io's native slab writers land (it replaces this block): the
    # rows of a step are gathered in memory and written by write_step once its last row is
    # in, so a step's memory is held while it is open.
    max_open_steps = 16

    def write_slab(self, i: int, z0: int, arrays: Dict[str, np.ndarray]) -> None:
        """Rows ``z0 .. z0 + nz - 1`` of step ``i``: ``arrays`` maps each scalar variable to
        float32 ``[nz, Y, X]``; a step's slabs come in increasing z, contiguous; the step
        is complete when its last row is written."""
        open_steps = self.__dict__.setdefault("_open_slabs", {})
        z_n, y_n, x_n = self.grid.shape
        first = next(iter(arrays.values()), None)
        nz = 0 if first is None else int(np.shape(first)[0])
        row, held = open_steps.get(int(i), (0, None))
        if int(z0) != row or nz < 1 or row + nz > z_n:
            raise StsrError(f"'{self.path}': rows {z0}..{int(z0) + nz - 1} of step {i} do "
                            f"not follow its rows written so far (0..{row - 1} of {z_n})")
        if held is None:
            if len(open_steps) >= self.max_open_steps:
                raise StsrError(f"'{self.path}': more than {self.max_open_steps} steps open "
                                "at once")
            held = {n: np.empty((z_n, y_n, x_n), np.float32) for n in arrays}
        for n, a in arrays.items():
            if n not in held or np.shape(a) != (nz, y_n, x_n):
                raise StsrError(f"'{self.path}': array '{n}' of step {i} rows {z0}.. has "
                                f"shape {np.shape(a)}; expected {(nz, y_n, x_n)}")
            held[n][row:row + nz] = a
        if row + nz < z_n:
            open_steps[int(i)] = (row + nz, held)
            return
        open_steps.pop(int(i), None)
        self.write_step(i, held)

    def slab_bytes(self, rows: int, steps: int = 1) -> int:
        """The most bytes this writer holds beyond the caller's arrays while slabs of
        ``rows`` rows come for ``steps`` open steps (the fallback above: the steps whole)."""
        return steps * 4 * self.grid.n_points * len(self.variables)

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
