"""``upscale``'s loop: each output step is computed while the step before it is compressed
and written (io/background.py), through a few reused host buffers.

The fast base evaluates a whole step into buffers of the output's size that it reuses from
step to step (GridPlan.reuse). A step handed to the writing thread must stay untouched until
it is written, so each step goes into one of ``DEPTH + 1`` host buffers (one being
computed, one being written: with a queue of one step that is all the overlap needs) that
go back to the pool once written: memory stays at two steps whatever the output's length,
and a slow disk makes the computing wait instead of piling steps up. On the CPU the fast
base evaluates straight into that buffer (it becomes the plan's output buffer for the
step: no copy); on CUDA the host buffers are pinned and the copy to them is issued without
waiting (``non_blocking``): it runs on the GPU's copy engine while the next step is
computed, and the writing thread waits for that copy alone (a CUDA event) before it reads
the buffer. (No GPU was lent while this was written: the CUDA path is
written to run, and runs on CPU tests in its CPU form, but was not run on a GPU.)
"""
from __future__ import annotations

import queue
import time
from typing import Callable, Dict, Optional, Sequence

import numpy as np
import torch

from .errors import StsrError
from .io.background import DEPTH, BackgroundWriter
from .io.base import SeriesWriter


class HostBuffers:
    """``count`` host tensors of ``shape`` float32, handed out in turn (:meth:`take` waits
    while all are out); pinned when ``device`` is CUDA. Made on first use, so a caller that
    never takes one costs nothing."""

    def __init__(self, shape: Sequence[int], device: torch.device, count: int) -> None:
        self.shape = tuple(int(v) for v in shape)
        self.pinned = device.type == "cuda"
        self.count = count
        self.made = 0
        self._free: "queue.Queue[torch.Tensor]" = queue.Queue()

    def take(self) -> torch.Tensor:
        if self._free.empty() and self.made < self.count:
            self.made += 1
            return torch.empty(self.shape, dtype=torch.float32, pin_memory=self.pinned)
        return self._free.get()

    def give_back(self, buf: torch.Tensor) -> None:
        self._free.put(buf)


def to_host(values: torch.Tensor, buf: Optional[torch.Tensor]) -> np.ndarray:
    """``values`` [V, Z, Y, X] as numpy on the host: in ``buf`` when given (on CUDA without
    waiting: read it only after the stream got there, see :func:`step_ready`; no copy when
    ``values`` already is ``buf``), else a host tensor of its own (CPU: the same memory)."""
    if buf is None:
        return values.cpu().numpy()
    if buf.data_ptr() != values.data_ptr():
        buf.copy_(values, non_blocking=buf.is_pinned())
    return buf.numpy()


def step_ready(device: torch.device) -> Optional[Callable[[], None]]:
    """What the writing thread calls before it reads a step's host buffer: on CUDA, wait
    for the copies issued so far (an event recorded now); on the CPU nothing to wait for."""
    if device.type != "cuda":
        return None
    event = torch.cuda.Event()
    event.record(torch.cuda.current_stream(device))     # the stream the copies went on
    return event.synchronize


def compute_and_write(predict: Callable[[float, Optional[torch.Tensor]],
                                        Optional[Dict[str, np.ndarray]]],
                      t_out: Sequence[float], steps: Sequence[int], writer: SeriesWriter,
                      shape: Optional[Sequence[int]], device: torch.device,
                      callback: Optional[Callable[[float], Optional[bool]]] = None,
                      overlap: bool = True) -> Dict[str, float]:
    """Compute every step in ``steps`` with ``predict(t, host_buffer)`` (the values of time
    ``t``, put in the host buffer when the prediction uses one, or None when cancelled) and
    write it with ``writer``; with ``overlap`` on a thread while the next is computed, else
    one after the other (the same files, byte for byte). ``shape``: [V, Z, Y, X] of the
    host buffers (None: the prediction makes new arrays each step). ``callback(fraction of
    steps written)`` returning False cancels. Returns the seconds spent computing, writing
    and waiting for the writer. Does not close the writer."""
    n = max(1, len(steps))
    cancelled = False

    def written(k: int) -> None:
        nonlocal cancelled
        if callback is not None and callback(k / n) is False:
            cancelled = True

    compute_s = 0.0
    if not overlap:
        t_write = 0.0
        for k, i in enumerate(steps):
            t0 = time.perf_counter()
            vals = predict(float(t_out[i]), None)
            t1 = time.perf_counter()
            compute_s += t1 - t0
            if vals is None:
                raise StsrError("prediction cancelled")
            writer.write_step(i, vals)
            t_write += time.perf_counter() - t1
            written(k + 1)
            if cancelled:
                raise StsrError("prediction cancelled")
        return {"compute_s": compute_s, "write_s": t_write, "wait_s": t_write}
    buffers = HostBuffers(shape, device, DEPTH + 1) if shape is not None else None
    background = BackgroundWriter(writer, on_written=written)
    waited = 0.0                  # for a host buffer the writer still holds
    try:
        for i in steps:
            t0 = time.perf_counter()
            buf = buffers.take() if buffers is not None else None
            waited += time.perf_counter() - t0
            t0 = time.perf_counter()
            vals = predict(float(t_out[i]), buf)
            compute_s += time.perf_counter() - t0
            if vals is None or cancelled:
                raise StsrError("prediction cancelled")
            release = None if buffers is None else (lambda b=buf: buffers.give_back(b))
            background.write_step(i, vals, ready=step_ready(device), release=release)
        background.finish()
    except BaseException:
        background.abort()
        raise
    return {"compute_s": compute_s, "write_s": background.write_s,
            "wait_s": background.wait_s + waited}
