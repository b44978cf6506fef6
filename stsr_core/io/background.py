"""A series writer whose slabs are written on a thread of their own, so that the caller
computes the next slab (or step) while the last one is compressed and written.

Compression (zlib, lz4, HDF5's and netCDF's filters) and file writes release the GIL, so
on a machine with a few cores computing and writing overlap instead of adding up. What
the caller hands over and is not yet written (queued, and the slab being written) is
bounded in bytes (``max_bytes``): when the writer is slower, the caller waits at
:meth:`BackgroundWriter.write_slab` rather than piling up slabs, so a slow disk makes the
computing wait. One slab is always taken when nothing is pending, whatever its size, so a
step larger than the bound is still written while the next is computed.

Every promise of the writer it wraps (io/base.py, docs/formats.md) stays: slabs are
written by one thread, in the order given, through the same ``store_slab``, so the files
are byte for byte those of writing inline. Whatever stops the caller (an exception,
Ctrl-C, SIGTERM: they arrive on the caller's thread) :meth:`abort` lets the thread finish
the slab it is writing (a step it completes is complete, and listed), drops the queued ones
and then aborts the writer, as an inline writer would be aborted. An error of the writer
(a full disk) is raised to the caller at its next call.
"""
from __future__ import annotations

import collections
import threading
import time
from typing import Callable, Deque, Dict, List, Optional, Set, Tuple

import numpy as np

from ..errors import StsrError
from .base import SeriesWriter

# Steps handed over beyond the one being written, at the least (a caller keeping host
# buffers for its steps needs DEPTH + 1 of them: overlap.py).
DEPTH = 1
# Bytes of slabs handed to the writing thread and not yet written: 64 MB lets slabs of a
# few MB queue up to smooth uneven ones, while a whole step larger than that waits for the
# step before it (the overlap of computing one step while writing the last).
QUEUE_BYTES = 64 * 1024 ** 2

_Item = Tuple[int, int, Dict[str, np.ndarray], Optional[Callable[[], None]],
              Optional[Callable[[], None]], int]


class BackgroundWriter:
    """``writer``'s slabs written on a thread (see the module's docstring). ``on_written(n)``
    is called on that thread each time a step is complete, with the number complete so far
    (a progress bar counts steps written, not computed); ``rows_written`` counts rows.
    ``write_s``: seconds the thread spent writing; ``wait_s``: seconds the caller waited for
    it (a full queue, then :meth:`close`) -- near 0 when writing hides behind computing."""

    def __init__(self, writer: SeriesWriter, max_bytes: int = QUEUE_BYTES,
                 on_written: Optional[Callable[[int], None]] = None) -> None:
        if max_bytes < 0:
            raise StsrError(f"a background writer needs a bound of 0 bytes or more, got "
                            f"{max_bytes}")
        self.writer = writer
        self.max_bytes = int(max_bytes)
        self.on_written = on_written
        self.written = 0
        self.rows_written = 0
        self.write_s = 0.0
        self.wait_s = 0.0
        self._items: Deque[Optional[_Item]] = collections.deque()
        self._pending = 0                     # bytes queued or being written
        self._cond = threading.Condition()
        self._rows: Dict[int, int] = dict(writer.rows)   # as queued: rows of each open step
        self._complete: Set[int] = set(writer.done)      # as queued: last row queued
        self._error: Optional[BaseException] = None
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="stsr-writer", daemon=True)
        self._thread.start()

    # --- the writing thread -------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._items:
                    self._cond.wait()
                item = self._items.popleft()
            if item is None:
                return
            i, z0, slab, ready, release, nbytes = item
            item = None
            try:
                if self._error is None and not self._stop:
                    if ready is not None:
                        ready()              # e.g. a CUDA copy to host memory has landed
                    t0 = time.perf_counter()
                    rows = next(iter(slab.values())).shape[0]
                    self.writer.store_slab(i, z0, slab)
                    self.write_s += time.perf_counter() - t0
                    self.rows_written += rows
                    if z0 + rows == self.writer.grid.shape[0]:
                        self.written += 1
                        if self.on_written is not None:
                            self.on_written(self.written)
            except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
                self._error = exc
            finally:
                del slab
                if release is not None:
                    try:             # the caller's (e.g. its progress): an error is its own
                        release()
                    except BaseException as exc:  # noqa: BLE001 - handed over as above
                        self._error = self._error or exc
                with self._cond:
                    self._pending -= nbytes
                    self._cond.notify_all()

    # --- the caller's side --------------------------------------------------------------------
    def _raise(self) -> None:
        if self._error is not None:
            raise self._error

    def write_step(self, i: int, arrays: Dict[str, np.ndarray],
                   ready: Optional[Callable[[], None]] = None,
                   release: Optional[Callable[[], None]] = None) -> None:
        """Queue step ``i`` whole (see :meth:`write_slab`)."""
        self._put(i, 0, arrays, ready, release, whole=True)

    def write_slab(self, i: int, z0: int, arrays: Dict[str, np.ndarray],
                   ready: Optional[Callable[[], None]] = None,
                   release: Optional[Callable[[], None]] = None) -> None:
        """Queue rows ``z0..`` of step ``i`` (checked here, at once, as the writer checks
        them); waits while the slabs pending would pass ``max_bytes``. ``ready()`` is
        called on the writing thread before the arrays are read, ``release()`` once they
        are no longer needed (written or dropped): the caller may then reuse their memory."""
        self._put(i, z0, arrays, ready, release)

    def _put(self, i: int, z0: int, arrays: Dict[str, np.ndarray],
             ready: Optional[Callable[[], None]], release: Optional[Callable[[], None]],
             whole: bool = False) -> None:
        self._raise()
        if not self._thread.is_alive():
            raise StsrError(f"'{self.writer.path}': the background writer has finished; no "
                            "step can be added")
        slab = self.writer.checked_slab(i, z0, arrays, whole=whole, rows=self._rows,
                                        complete=self._complete)
        i, z0 = int(i), int(z0)
        end = z0 + next(iter(slab.values())).shape[0]
        if end == self.writer.grid.shape[0]:
            self._rows.pop(i, None)
            self._complete.add(i)
        else:
            self._rows[i] = end
        nbytes = sum(a.nbytes for a in slab.values())
        t0 = time.perf_counter()
        with self._cond:
            while self._pending > 0 and self._pending + nbytes > self.max_bytes \
                    and self._thread.is_alive():
                self._cond.wait()
            self._items.append((i, z0, slab, ready, release, nbytes))
            self._pending += nbytes
            self._cond.notify_all()
        self.wait_s += time.perf_counter() - t0

    def finish(self) -> None:
        """Wait for every queued slab to be written (raising the writer's error, if any);
        the writer stays open."""
        t0 = time.perf_counter()
        self._finish_thread()
        self.wait_s += time.perf_counter() - t0
        self._raise()

    def close(self) -> List[str]:
        """:meth:`finish`, then close the writer; returns its files."""
        self.finish()
        t0 = time.perf_counter()
        files = self.writer.close()               # e.g. an .h5 flushed and renamed
        self.write_s += time.perf_counter() - t0
        self.wait_s += time.perf_counter() - t0
        return files

    def abort(self) -> None:
        """Stop: the slab being written is finished, queued ones are dropped (their
        ``release`` called), then the writer is aborted (what it keeps: docs/formats.md)."""
        self._stop = True
        try:
            self._finish_thread()
        finally:
            self.writer.abort()

    def _finish_thread(self) -> None:
        """Ask the thread to end after what is queued and wait for it; a second Ctrl-C
        while waiting does not leave it writing behind the caller's back."""
        interrupted: Optional[BaseException] = None
        if self._thread.is_alive():
            with self._cond:
                self._items.append(None)
                self._cond.notify_all()
            while self._thread.is_alive():
                try:
                    self._thread.join()
                except KeyboardInterrupt as exc:
                    interrupted = exc
                    self._stop = True
        if interrupted is not None:
            self._stop = True
            raise interrupted

    def __enter__(self) -> "BackgroundWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()
        elif self.writer.state == "open":
            self.close()
