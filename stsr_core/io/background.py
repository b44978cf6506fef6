"""A series writer whose steps are written on a thread of their own, so that the caller
computes the next step while the last one is compressed and written.

Compression (zlib, lz4, HDF5's and netCDF's filters) and file writes release the GIL, so
on a machine with a few cores computing and writing overlap instead of adding up. A queue
of at most ``depth`` steps between the two keeps memory bounded: when the writer is slower,
the caller waits at :meth:`BackgroundWriter.write_step` rather than piling up steps.

Every promise of the writer it wraps (io/base.py, docs/formats.md) stays: steps are
written by one thread, in the order given, through the same ``write_step``, so the files
are byte for byte those of writing inline. Whatever stops the caller (an exception,
Ctrl-C, SIGTERM: they arrive on the caller's thread) :meth:`abort` lets the thread finish
the step it is writing (complete, and listed), drops the queued ones and then aborts the
writer, as an inline writer would be aborted. An error of the writer (a full disk) is
raised to the caller at its next call.
"""
from __future__ import annotations

import queue
import threading
import time
from typing import Callable, Dict, List, Optional, Set

import numpy as np

from ..errors import StsrError
from .base import SeriesWriter

# Steps waiting between the computing thread and the writing one: 1 is enough to overlap
# (one step computed while the one before is written); more only smooths uneven steps.
DEPTH = 1


class BackgroundWriter:
    """``writer``'s steps written on a thread (see the module's docstring). ``on_written(n)``
    is called on that thread after each step with the number written so far (a progress
    bar counts steps written, not computed). ``write_s``: seconds the thread spent writing;
    ``wait_s``: seconds the caller waited for it (a full queue, then :meth:`close`) -- near
    0 when writing hides behind computing."""

    def __init__(self, writer: SeriesWriter, depth: int = DEPTH,
                 on_written: Optional[Callable[[int], None]] = None) -> None:
        if depth < 1:
            raise StsrError(f"a background writer needs a queue of at least 1 step, got {depth}")
        self.writer = writer
        self.on_written = on_written
        self.written = 0
        self.write_s = 0.0
        self.wait_s = 0.0
        self._queue: "queue.Queue" = queue.Queue(maxsize=depth)
        self._queued: Set[int] = set()
        self._error: Optional[BaseException] = None
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="stsr-writer", daemon=True)
        self._thread.start()

    # --- the writing thread -------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            i, step, ready, release = item
            item = None
            try:
                if self._error is None and not self._stop:
                    if ready is not None:
                        ready()              # e.g. a CUDA copy to host memory has landed
                    t0 = time.perf_counter()
                    self.writer.store_step(i, step)
                    self.write_s += time.perf_counter() - t0
                    self.written += 1
                    if self.on_written is not None:
                        self.on_written(self.written)
            except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
                self._error = exc
            finally:
                del step
                if release is not None:
                    release()

    # --- the caller's side --------------------------------------------------------------------
    def _raise(self) -> None:
        if self._error is not None:
            raise self._error

    def write_step(self, i: int, arrays: Dict[str, np.ndarray],
                   ready: Optional[Callable[[], None]] = None,
                   release: Optional[Callable[[], None]] = None) -> None:
        """Queue step ``i`` (checked here, at once, as the writer checks it); waits while
        ``depth`` steps are queued. ``ready()`` is called on the writing thread before the
        arrays are read, ``release()`` once they are no longer needed (written or dropped):
        the caller may then reuse their memory."""
        self._raise()
        if not self._thread.is_alive():
            raise StsrError(f"'{self.writer.path}': the background writer has finished; no "
                            "step can be added")
        step = self.writer.checked_step(i, arrays)
        if int(i) in self._queued:
            raise StsrError(f"'{self.writer.path}': step {i} was already written")
        self._queued.add(int(i))
        t0 = time.perf_counter()
        self._queue.put((int(i), step, ready, release))
        self.wait_s += time.perf_counter() - t0

    def finish(self) -> None:
        """Wait for every queued step to be written (raising the writer's error, if any);
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
        """Stop: the step being written is finished, queued ones are dropped (their
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
            while True:
                try:
                    self._queue.put(None)
                    break
                except KeyboardInterrupt as exc:
                    interrupted = exc
            while self._thread.is_alive():
                try:
                    self._thread.join()
                except KeyboardInterrupt as exc:
                    interrupted = exc
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
