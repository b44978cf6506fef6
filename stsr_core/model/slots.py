"""Where a spline base's slot coefficients live when they are not all in memory: in a file,
read one slot at a time.

The coefficients are one value per data point, so a model is the size of its data (3 GB for
257^3 x 9 steps x 5 variables). Upscaling needs only the slots of the interval in hand, and
the fit writes each slot once and reads none back, so neither should hold them all.
:class:`FileSlots` keeps them in a file -- the model file itself (where ``torch.save`` put
the tensor, contiguous) or a scratch file the fit writes -- and reads a slot with positioned
reads (``os.preadv``): no mapping of the file, which would count its whole size against an
address-space limit (``ulimit -v``).
"""
from __future__ import annotations

import math
import os
import tempfile
import weakref
from collections import OrderedDict
from typing import Iterator, Optional, Sequence, Tuple

import numpy as np
import torch

from ..files import write_error

CHUNK_BYTES = 64 << 20          # bytes per read when streaming every slot (a checksum)
MAX_READ = 1 << 30              # bytes per read call (Linux returns at most ~2 GB a call)


class FileSlots:
    """``shape`` = (T, V, Z+2, Y+2, X+2) float32 values, C order, from byte ``offset`` of the
    open file ``fd`` (owned: closed with this object), a slot being one [V, ...] block. The
    last ``keep`` slots read are kept (an interval's two ends)."""

    def __init__(self, fd: int, offset: int, shape: Sequence[int], name: str = "",
                 keep: int = 2) -> None:
        self.fd, self.offset = fd, int(offset)
        self.shape: Tuple[int, ...] = tuple(int(n) for n in shape)
        self.name = name
        self.keep = int(keep)
        self._kept: "OrderedDict[int, torch.Tensor]" = OrderedDict()
        self._close = weakref.finalize(self, os.close, fd)

    @classmethod
    def open(cls, path: str, offset: int, shape: Sequence[int]) -> "FileSlots":
        """The slots of a file that stays as it is (a model file): opened read-only, so a
        newer file renamed over it later does not change what this reads."""
        return cls(os.open(path, os.O_RDONLY), offset, shape, name=path)

    @classmethod
    def scratch(cls, folder: str, shape: Sequence[int]) -> "FileSlots":
        """A new file without a name in ``folder`` (gone with its last descriptor, whatever
        stops the process), for slots written once by :meth:`write`."""
        try:
            fd = os.open(folder, os.O_TMPFILE | os.O_RDWR, 0o600)
        except (AttributeError, OSError):        # a file system without O_TMPFILE
            fd, path = tempfile.mkstemp(prefix=".stsr-slots-", dir=folder)
            os.unlink(path)
        return cls(fd, 0, shape, name=f"a scratch file in {folder}")

    # --- sizes ------------------------------------------------------------------------------
    @property
    def n_slots(self) -> int:
        return self.shape[0]

    @property
    def slot_shape(self) -> Tuple[int, ...]:
        return self.shape[1:]

    @property
    def slot_bytes(self) -> int:
        return 4 * math.prod(self.slot_shape)

    @property
    def nbytes(self) -> int:
        return self.n_slots * self.slot_bytes

    @property
    def dtype(self) -> torch.dtype:
        return torch.float32

    @property
    def kept_slots(self) -> Tuple[int, ...]:
        """The slots read whole and kept now (oldest first)."""
        return tuple(self._kept)

    # --- reading and writing ----------------------------------------------------------------
    def _read_into(self, out: np.ndarray, at: int) -> None:
        view = memoryview(out).cast("B")
        done = 0
        while done < len(view):
            n = os.preadv(self.fd, [view[done:done + MAX_READ]], self.offset + at + done)
            if n <= 0:
                raise OSError(f"{self.name or 'the slots file'} ends early (truncated?)")
            done += n

    def slot(self, k: int, device: Optional[torch.device] = None) -> torch.Tensor:
        """Slot ``k`` [V, Z+2, Y+2, X+2] on ``device`` (the CPU by default): read, or one of
        the last kept (on that device)."""
        k = int(k)
        dev = torch.device("cpu") if device is None else torch.device(device)
        t = self._kept.get(k)
        if t is None or t.device != dev:
            if not 0 <= k < self.n_slots:
                raise IndexError(f"slot {k} of {self.n_slots}")
            buf = np.empty(self.slot_shape, dtype=np.float32)
            self._read_into(buf, k * self.slot_bytes)
            t = torch.from_numpy(buf).to(dev)
            self._kept[k] = t
            while len(self._kept) > self.keep:
                self._kept.popitem(last=False)
        self._kept.move_to_end(k)
        return t

    def rows(self, k: int, lo: int, hi: int, device: Optional[torch.device] = None,
             variables: Optional[Sequence[int]] = None, out: Optional[torch.Tensor] = None
             ) -> torch.Tensor:
        """Rows ``lo:hi`` (z, of the padded grid) of slot ``k`` [V, hi - lo, Y+2, X+2] (or of
        the ``variables`` alone, in that order [len(variables), ...]): a view of a kept slot,
        else read alone (one positioned read per variable) and not kept, so that a slab's
        rows cost their size, not a slot's and not a kept slot's place. ``out``: a CPU
        tensor of that shape (contiguous) read into, so that a caller reading rows of every
        slot in turn reuses one buffer instead of touching fresh pages for each."""
        k, lo, hi = int(k), int(lo), int(hi)
        dev = torch.device("cpu") if device is None else torch.device(device)
        t = self._kept.get(k)
        if t is not None and t.device == dev:
            if variables is None:
                return t[:, lo:hi]
            return t[list(variables), lo:hi]
        if not 0 <= k < self.n_slots:
            raise IndexError(f"slot {k} of {self.n_slots}")
        v, z, y, x = self.slot_shape
        if not 0 <= lo < hi <= z:
            raise IndexError(f"rows {lo}:{hi} of a slot of {z}")
        which = list(range(v)) if variables is None else [int(i) for i in variables]
        shape = (len(which), hi - lo, y, x)
        if out is not None and tuple(out.shape) == shape and out.is_contiguous() and \
                out.dtype == torch.float32 and out.device.type == "cpu":
            buf = out.numpy()
        else:
            buf = np.empty(shape, dtype=np.float32)
        row = 4 * y * x
        for n, i in enumerate(which):
            self._read_into(buf[n], k * self.slot_bytes + i * z * row + lo * row)
        return torch.from_numpy(buf).to(dev)

    def write(self, k: int, values: torch.Tensor, var: Optional[int] = None) -> None:
        """Store slot ``k`` (``values`` [V, Z+2, Y+2, X+2]), or its variable ``var`` alone
        (``values`` [Z+2, Y+2, X+2])."""
        a = np.ascontiguousarray(values.detach().to("cpu", torch.float32).numpy())
        at = self.offset + int(k) * self.slot_bytes
        if var is not None:
            at += int(var) * (self.slot_bytes // self.slot_shape[0])
        view = memoryview(a).cast("B")
        done = 0
        try:
            while done < len(view):
                done += os.pwritev(self.fd, [view[done:done + MAX_READ]], at + done)
        except OSError as exc:         # a full disk: the model file is not touched
            raise write_error(self.name, exc, "a model file there is unchanged") from None
        self._kept.pop(int(k), None)

    def whole(self) -> torch.Tensor:
        """Every slot at once [T, V, ...] (a model that must hold them: trained further)."""
        out = np.empty(self.shape, dtype=np.float32)
        self._read_into(out, 0)
        return torch.from_numpy(out)

    def chunks(self) -> Iterator[np.ndarray]:
        """Every value in order, float32, a few MB at a time (checksums, the finite check,
        copying into another file)."""
        per = max(1, CHUNK_BYTES // 4)
        total = math.prod(self.shape)
        for start in range(0, total, per):
            buf = np.empty(min(per, total - start), dtype=np.float32)
            self._read_into(buf, 4 * start)
            yield buf

    def drop(self) -> None:
        """Forget the kept slots (their memory goes back)."""
        self._kept.clear()

    def close(self) -> None:
        self._kept.clear()
        self._close()

