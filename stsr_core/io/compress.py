"""One step's bytes compressed in blocks, several blocks at once.

A step of a real-size output is tens to hundreds of MB of float32; one core compresses it
with zlib at 20-50 MB/s, slower than the engine computes it. zlib and lz4 release the GIL
while they work, so the blocks of a step go to a small pool of threads and come back in
order: the bytes are the same as compressing them one after the other (the tests compare
them), only sooner. The writers that use it: io/vtifile.py (the blocks of a ``.vti``) and
io/hdf5.py (the chunks of an ``.h5``, written with HDF5's direct chunk write).
"""
from __future__ import annotations

import os
import threading
import zlib
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterator, List, Optional, Sequence

import numpy as np

from ..errors import StsrError

# Threads that compress blocks at once (the machine's cores, at most 8: beyond that the
# disk, not the compressor, is the limit for these rates).
THREADS = max(1, min(8, os.cpu_count() or 1))
# zlib level of "zlib": 1 keeps most of level 5's saving on float fields at twice the speed
# (docs/formats.md, bench/output.py).
ZLIB_LEVEL = 1

_pool: Optional[ThreadPoolExecutor] = None
_pool_lock = threading.Lock()


def _lz4_block() -> Callable[[memoryview], bytes]:
    try:
        import lz4.block
    except ImportError:  # pragma: no cover - python3-lz4 comes with make setup
        raise StsrError("lz4 compression needs the lz4 module (Debian: apt install "
                        "python3-lz4; 'make setup' installs it)") from None
    # raw LZ4 blocks (no size prefix), as VTK's vtkLZ4DataCompressor writes and reads them
    return lambda b: lz4.block.compress(b, mode="default", store_size=False)


def codec(name: str, level: int = ZLIB_LEVEL) -> Callable[[memoryview], bytes]:
    """The function that compresses one block: ``zlib`` (a zlib stream at ``level``, what
    VTK's zlib compressor and HDF5's deflate filter read) or ``lz4`` (a raw LZ4 block)."""
    if name == "zlib":
        return lambda b: zlib.compress(b, level)
    if name == "lz4":
        return _lz4_block()
    raise StsrError(f"unknown block compression '{name}' (zlib, lz4)")


def pool() -> ThreadPoolExecutor:
    """The process's compression threads (made on first use, shared by every writer)."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=THREADS, thread_name_prefix="stsr-compress")
        return _pool


def compress_all(blocks: Sequence[memoryview], compress: Callable[[memoryview], bytes],
                 threads: Optional[int] = None) -> List[bytes]:
    """``compress`` applied to every block, in order; on the pool's threads when there is
    more than one block and more than one thread (``threads``: THREADS by default)."""
    n = THREADS if threads is None else threads
    if n <= 1 or len(blocks) <= 1:
        return [compress(b) for b in blocks]
    return list(pool().map(compress, blocks))


def compress_each(blocks: Sequence[memoryview], compress: Callable[[memoryview], bytes],
                  threads: Optional[int] = None) -> Iterator[bytes]:
    """:func:`compress_all`, each block given back as soon as it and those before it are
    compressed: the caller writes the first while the pool compresses the next ones."""
    n = THREADS if threads is None else threads
    if n <= 1 or len(blocks) <= 1:
        return (compress(b) for b in blocks)
    return pool().map(compress, blocks)


def split_blocks(buffer: memoryview, block_size: int) -> List[memoryview]:
    """``buffer`` (bytes) cut into blocks of ``block_size`` (the last one may be shorter)."""
    return [buffer[k:k + block_size] for k in range(0, len(buffer), block_size)]


def as_bytes(a: np.ndarray) -> memoryview:
    """The bytes of a C-contiguous array, without a copy."""
    return memoryview(np.ascontiguousarray(a)).cast("B")


def shuffled(a: np.ndarray) -> memoryview:
    """HDF5's shuffle filter: the first byte of every value, then every second byte, ...
    (floats' high bytes change slowly, so they compress far better grouped)."""
    size = a.dtype.itemsize
    raw = np.ascontiguousarray(a).view(np.uint8).reshape(-1, size)     # [N, bytes]
    return memoryview(np.ascontiguousarray(raw.T)).cast("B")

