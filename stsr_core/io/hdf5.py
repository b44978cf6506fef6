"""HDF5 series (h5py): one dataset per variable, ``[T, Z, Y, X]`` (x fastest) or
``[T, Z, Y, X, C]`` for a C-component array; root attributes ``times`` (T floats),
``origin`` and ``spacing`` (x, y, z) and ``variables`` (dataset order), all optional
(defaults 0..T-1, 0, 1, alphabetical)."""
from __future__ import annotations

import os
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from ..errors import StsrError
from ..grid import Grid
from ..series import VolumeSeries, arrays_holding, split_components
from .base import (ChunkRows, SeriesReader, SeriesWriter, chunk_starts, discard_file,
                   fsync_file, keep_arrays, rows_held)
from .compress import THREADS, codec, compress_all, shuffled


def _h5py():
    try:
        import h5py
    except ImportError:  # pragma: no cover
        raise StsrError("h5py is needed for HDF5 files (Debian: apt install python3-h5py)") \
            from None
    return h5py


def _open(path: str):
    """The HDF5 file for reading, or an error naming it."""
    h5py = _h5py()
    if not os.path.isfile(path):
        raise StsrError(f"file '{path}' does not exist")
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        raise StsrError(f"'{path}' is not a readable HDF5 file ({exc})") from None


def _dataset_names(fh) -> List[str]:
    """The file's datasets in the order of its ``variables`` attribute (others after)."""
    import h5py
    names = [k for k, v in fh.items() if isinstance(v, h5py.Dataset)]
    listed = np.asarray(fh.attrs.get("variables", []), dtype=object).reshape(-1)
    order = [v.decode(errors="replace") if isinstance(v, bytes) else str(v) for v in listed]
    return sorted(names, key=lambda n: order.index(n) if n in order else len(order))


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def _volume_shape(fh, n: str, path: str) -> tuple:
    """The shape of dataset ``n``, checked to be a volume series of numbers."""
    ds = fh[n]
    if ds.shape is None or len(ds.shape) not in (4, 5):
        raise StsrError(f"dataset '{n}' in '{path}' has shape {ds.shape}; expected "
                        "[T, Z, Y, X] or [T, Z, Y, X, C]")
    if ds.dtype.kind not in "biuf":
        raise StsrError(f"dataset '{n}' in '{path}' holds {ds.dtype}, not real numbers")
    if 0 in ds.shape:
        raise StsrError(f"dataset '{n}' in '{path}' has shape {ds.shape}: no values")
    return tuple(int(v) for v in ds.shape)


def _numbers(fh, name: str, path: str, default: Sequence[float], count: int,
             what: str) -> np.ndarray:
    """Root attribute ``name`` as ``count`` finite floats (``default`` when absent)."""
    value = fh.attrs.get(name)
    if value is None:
        value = default
    try:
        a = np.asarray(value, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise StsrError(f"'{path}': attribute '{name}' holds {str(value)[:60]!r}, not "
                        f"numbers ({what})") from None
    if a.size != count or not np.all(np.isfinite(a)):
        raise StsrError(f"'{path}': attribute '{name}' holds {a.tolist()[:10]}; it needs "
                        f"{count} finite numbers ({what})")
    return a


def _grid_attributes(fh, path: str, n_times: int) -> tuple:
    """(times, origin, spacing) from the root attributes, checked: one finite time per
    step, strictly increasing; three finite origin values; three positive spacings."""
    times = _numbers(fh, "times", path, np.arange(n_times), n_times,
                     f"one time per step, {n_times} steps")
    if np.any(np.diff(times) <= 0):
        raise StsrError(f"'{path}': attribute 'times' must be strictly increasing, got "
                        f"{times.tolist()[:10]}")
    origin = _numbers(fh, "origin", path, (0, 0, 0), 3, "x, y, z of the first point")
    spacing = _numbers(fh, "spacing", path, (1, 1, 1), 3, "dx, dy, dz")
    if np.any(spacing <= 0):
        raise StsrError(f"'{path}': attribute 'spacing' must be positive, got "
                        f"{spacing.tolist()}")
    return times, tuple(origin.tolist()), tuple(spacing.tolist())


# what h5py raises for a damaged file's structure (beyond the header _open checks), e.g.
# TypeError "Not a group" for a damaged group; the readers' own checks come first
H5_ERRORS = (OSError, KeyError, RuntimeError, TypeError, ValueError)


def read_h5(path: str, arrays: Optional[Sequence[str]] = None) -> VolumeSeries:
    with _open(path) as fh:
        try:
            return _read_h5(fh, path, arrays)
        except H5_ERRORS as exc:
            raise StsrError(f"'{path}' is damaged ({_one_line(exc)})") from None


def _read_h5(fh, path: str, arrays: Optional[Sequence[str]]) -> VolumeSeries:
    names = _dataset_names(fh)
    if arrays:                     # read only the datasets that hold these names
        keep = arrays_holding(arrays, names, f" in '{path}'")
        names = [n for n in names if n in keep]
    if not names:
        raise StsrError(f"'{path}' has no datasets to read (expected one per variable, "
                        "shape [T, Z, Y, X])")
    variables: Dict[str, np.ndarray] = {}
    components: Dict[str, List[str]] = {}
    for n in names:
        _volume_shape(fh, n, path)
        try:
            a = np.asarray(fh[n][...], dtype=np.float32)
        except (OSError, ValueError) as exc:
            raise StsrError(f"dataset '{n}' in '{path}' is unreadable ({_one_line(exc)})") \
                from None
        parts = split_components(n, a)
        if a.ndim == 5:
            components[n] = list(parts)
        variables.update(parts)
    t = next(iter(variables.values())).shape[0]
    times, origin, spacing = _grid_attributes(fh, path, t)
    return VolumeSeries(times=times, variables=variables, origin=origin,  # type: ignore
                        spacing=spacing, components=components, source=path)  # type: ignore


# ``compression`` -> h5py filter arguments. "zlib" is deflate at level 1 with the byte
# shuffle: measured on a smooth 129^3 field (docs/formats.md) it keeps most of level 4's
# saving at a fraction of its time; "gzip" is h5py's level 4.
H5_FILTERS: Dict[str, Dict[str, object]] = {
    "none": {},
    "zlib": {"compression": "gzip", "compression_opts": 1, "shuffle": True},
    "gzip": {"compression": "gzip", "compression_opts": 4, "shuffle": True},
    "lzf": {"compression": "lzf", "shuffle": True},
}
# The deflate level of the compressions whose chunks this module filters itself (shuffle,
# then deflate, on all cores: io/compress.py) and hands to HDF5 as they are stored (direct
# chunk write); HDF5 filters the others on one thread.
DEFLATE_LEVEL = {"zlib": 1, "gzip": 4}
# Target bytes of one chunk: whole z-slabs of one step, a few MB (one read of a z range
# touches only its slabs; HDF5 caps a chunk at 4 GB).
CHUNK_BYTES = 4 * 1024 ** 2


def slab_chunks(shape: Sequence[int], slab_rows: Optional[int] = None) -> tuple:
    """Chunk shape for a ``[T, Z, Y, X(, C)]`` dataset: one step, whole x-y planes, as many
    z planes as fit in ~CHUNK_BYTES. ``slab_rows``: the rows of the slabs the writer will
    get; the chunks then divide them (the most rows that fit and divide ``slab_rows``), so
    that no chunk spans two slabs."""
    plane = int(np.prod(shape[2:])) * 4                          # bytes of one [Y, X(, C)]
    fit = max(1, min(int(shape[1]), CHUNK_BYTES // max(plane, 1)))
    if slab_rows is not None and 0 < slab_rows < int(shape[1]):
        nz = max(d for d in range(1, min(fit, slab_rows) + 1) if slab_rows % d == 0)
        return (1, nz) + tuple(int(v) for v in shape[2:])
    # even slabs: a last partial chunk is stored at full size when uncompressed (129 planes
    # in chunks of 63 took 189 planes of disk), so split Z into equal parts instead
    n_chunks = -(-int(shape[1]) // fit)
    nz = -(-int(shape[1]) // n_chunks)
    return (1, nz) + tuple(int(v) for v in shape[2:])


def _padded(chunk: np.ndarray, nz: int) -> np.ndarray:
    """A last partial z-slab chunk padded with zeros to ``nz`` planes (HDF5 stores edge
    chunks whole)."""
    if chunk.shape[0] < nz:
        chunk = np.concatenate([chunk, np.zeros((nz - chunk.shape[0],) + chunk.shape[1:],
                                                dtype=chunk.dtype)])
    return np.ascontiguousarray(chunk, dtype=np.float32)


# Chunks shuffled and compressed at once (each a few MB): enough for every core.
CHUNK_GROUP = 2 * THREADS


class H5Writer(SeriesWriter):
    """One HDF5 file, one dataset per array ``[T, Z, Y, X(, C)]`` chunked by z-slabs (every
    array's of the rows the widest one's take), filled slab by slab in a hidden temporary
    file beside the target that ``close()`` flushes and renames over it. ``abort()``
    deletes the temporary file; an old file at the target is never touched before
    ``close()``.

    Uncompressed, each slab is written where it goes (a hyperslab; chunks are written
    without fill values and bypass HDF5's chunk cache, so a chunk spread over two slabs is
    not written twice). Compressed, a chunk is written once, whole: the rows of a chunk
    that spans two slabs wait in a buffer of one chunk per array and open step
    (:class:`ChunkRows`; none when slabs are a multiple of ``row_multiple`` rows). zlib and
    gzip chunks are shuffled and deflated here on all cores and stored as they are (direct
    chunk write); lzf is HDF5's filter. ``threads``: how many compress (None: io/compress.py's
    default; the bytes are the same for any number)."""

    threads: Optional[int] = None

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        h5py = _h5py()
        self.tmp = self._temp_beside()
        self.merged = self._merged_names()
        nz = self.grid.shape[0]
        self.chunk_rows = self.chunk_rows_for(self.grid, self.components, self.compression,
                                              self.slab_rows)
        if self.compression != "none":
            self.row_multiple = self.chunk_rows
            self.chunks = ChunkRows(chunk_starts(nz, self.chunk_rows), nz)
        try:
            # no chunk cache: uncompressed slabs go straight to their place in the file
            self.fh = h5py.File(self.tmp, "w", rdcc_nbytes=0)
            self.fh.attrs["times"] = self.times
            self.fh.attrs["origin"] = np.asarray(self.grid.origin, dtype=np.float64)
            self.fh.attrs["spacing"] = np.asarray(self.grid.spacing, dtype=np.float64)
            self.fh.attrs["variables"] = self.merged
            for n in self.merged:
                c = (len(self.components[n]),) if n in self.components else ()
                shape = (self.n_times,) + tuple(self.grid.shape) + c   # [T, Z, Y, X(, C)]
                dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
                dcpl.set_fill_time(h5py.h5d.FILL_TIME_NEVER)   # every value is written
                self.fh.create_dataset(n, shape=shape, dtype="f4", dcpl=dcpl,
                                       chunks=(1, self.chunk_rows) + shape[2:],
                                       **H5_FILTERS[self.compression])  # type: ignore[arg-type]
        except BaseException as exc:
            self._discard()
            if isinstance(exc, (OSError, ValueError)):
                raise StsrError(f"cannot create '{self.tmp}' for '{self.path}': {exc}") from None
            raise

    @staticmethod
    def chunk_rows_for(grid: Grid, components: Dict[str, List[str]], compression: str,
                       slab_rows: Optional[int]) -> int:
        """The z rows of every array's chunks: those of the widest array's (a vector's)
        chunks of ~CHUNK_BYTES, dividing ``slab_rows`` when given and compressed
        (uncompressed slabs go where they belong whatever the chunks, and even chunks
        store no padding)."""
        widest = max([len(p) for p in components.values()] + [1])
        return slab_chunks((1,) + tuple(grid.shape) + (widest,),
                           None if compression == "none" else slab_rows)[1]

    @classmethod
    def buffer_bytes(cls, grid: Grid, variables: Sequence[str], components: Dict[str, List[str]],
                     compression: str, rows: int, steps: int = 1,
                     slab_rows: Optional[int] = None,
                     metadata: Optional[Dict[str, Any]] = None) -> int:
        """Beyond a vector's components put together: a partial chunk per array and open
        step (compressed, slabs not a multiple of ``row_multiple``), and the chunks being
        compressed (shuffled copy and result)."""
        extra = 0
        if compression != "none":
            nz, c = grid.shape[0], cls.chunk_rows_for(grid, components, compression, slab_rows)
            row = int(np.prod(grid.shape[1:])) * 4                       # one scalar row
            widths = [len(p) for p in components.values()]
            widths += [1] * (len(variables) - sum(widths))
            held = rows_held(chunk_starts(nz, c) + [nz], rows)
            extra = steps * held * row * sum(widths) + 2 * CHUNK_GROUP * c * row * max(widths)
        return super().buffer_bytes(grid, variables, components, compression, rows, steps,
                                    slab_rows, metadata) + extra

    def _write_slab(self, i: int, z0: int, arrays: Dict[str, np.ndarray]) -> None:
        if self.compression == "none":
            for n in self.merged:             # an OSError (disk full): SeriesWriter says
                a = arrays[n]                                         # [nz, Y, X(, C)]
                self.fh[n][i, z0:z0 + a.shape[0]] = a
            return
        ready = [(n, first, rows) for n in self.merged
                 for first, rows in self.chunks.add((i, n), z0, arrays[n])]
        level = DEFLATE_LEVEL.get(self.compression)
        if level is None:                     # lzf: HDF5's filter, one whole chunk a call
            for n, first, rows in ready:
                self.fh[n][i, first:first + rows.shape[0]] = rows
            return
        # chunks shuffled and deflated a group at a time on all cores, stored as they are
        for g in range(0, len(ready), CHUNK_GROUP):
            group = [(n, first, _padded(rows, self.chunk_rows))
                     for n, first, rows in ready[g:g + CHUNK_GROUP]]
            packed = compress_all([shuffled(c) for _, _, c in group], codec("zlib", level),
                                  self.threads)
            for (n, first, chunk), data in zip(group, packed):
                corner = (i, first) + (0,) * (chunk.ndim - 1)
                self.fh[n].id.write_direct_chunk(corner, data, filter_mask=0)

    def _end_step(self, i: int) -> None:
        pass                  # the file is complete only as a whole, at close

    def _drop_step(self, i: int) -> None:
        if self.compression != "none":
            self.chunks.drop(i)

    def _finish(self) -> List[str]:
        self.fh.close()
        fsync_file(self.tmp)
        os.replace(self.tmp, self.path)
        return [self.path]

    def _discard(self) -> None:
        discard_file(getattr(self, "fh", None), self.tmp)


class H5Reader(SeriesReader):
    """Step by step over an HDF5 series: opening reads attributes and shapes; each
    ``read_step`` opens the file and reads that step's slabs only."""

    def __init__(self, path: str, arrays: Optional[Sequence[str]] = None) -> None:
        with _open(path) as fh:
            try:
                names = _dataset_names(fh)
                self.keep = keep_arrays(names, arrays, path)
                if not self.keep:
                    raise StsrError(f"'{path}' has no datasets to read (expected one per "
                                    "variable, shape [T, Z, Y, X])")
                shapes = {n: _volume_shape(fh, n, path) for n in self.keep}
                first = shapes[self.keep[0]]
                for n, sh in shapes.items():
                    if sh[:4] != first[:4]:
                        raise StsrError(f"dataset '{n}' in '{path}' has shape {sh}; expected "
                                        f"[T, Z, Y, X] or [T, Z, Y, X, C] like {first}")
                times, origin, spacing = _grid_attributes(fh, path, first[0])
            except H5_ERRORS as exc:
                raise StsrError(f"'{path}' is damaged ({_one_line(exc)})") from None
        variables: List[str] = []
        comps: Dict[str, List[str]] = {}
        for n in self.keep:
            if len(shapes[n]) == 5:
                comps[n] = [f"{n}_{c}" for c in range(shapes[n][4])]
                variables += comps[n]
            else:
                variables.append(n)
        try:
            grid = Grid((first[3], first[2], first[1]), origin, spacing)
        except StsrError as exc:
            raise StsrError(f"'{path}': {exc}") from None
        super().__init__(path, grid, times, variables, comps)

    def read_step(self, i: int) -> Dict[str, np.ndarray]:
        i = self._check(i)
        h5py = _h5py()
        out: Dict[str, np.ndarray] = {}
        try:
            with h5py.File(self.path, "r") as fh:
                for n in self.keep:
                    a = np.asarray(fh[n][i], dtype=np.float32)     # [Z, Y, X(, C)]
                    out.update({k: np.ascontiguousarray(v[0])
                                for k, v in split_components(n, a[None]).items()})
        except H5_ERRORS as exc:
            raise StsrError(f"step {i} of '{self.path}' is unreadable ({_one_line(exc)})") \
                from None
        return out
