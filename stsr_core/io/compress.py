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


# lz4 on values that do not compress: when every sampled block of an array comes out of
# lz4 at more than this share of its size, all its blocks are written as LZ4's literal
# blocks (lz4_literal) instead of compressed. An upscaled 129^3 tornado step's 10 arrays
# (velocity, magnitudes and their error estimates: float32 with busy low bits) come out of
# lz4 at 100.0-100.4 % of their size, at 2-10 GB/s of one core's time, to no avail.
INCOMPRESSIBLE = 0.98
SAMPLES = 3                # blocks tried per array: the first, the middle and the last


def lz4_literal(n: int) -> bytes:
    """The head of an LZ4 block holding ``n`` bytes as one run of literals (the block is
    this head followed by the bytes themselves): what lz4 itself writes for bytes in which
    it finds no match, byte for byte, so VTK's vtkLZ4DataCompressor (LZ4_decompress_safe)
    reads it as any other block. LZ4 block format: a token whose high 4 bits hold the
    literals' count (15: more follows), then ``n - 15`` as bytes of 255 and a last byte
    below 255; no match follows the last sequence."""
    if n < 15:
        return bytes([n << 4])
    rest = n - 15
    return b"\xf0" + b"\xff" * (rest // 255) + bytes([rest % 255])


def incompressible(blocks: Sequence[memoryview], compress: Callable[[memoryview], bytes]
                   ) -> bool:
    """Whether ``blocks`` (one array's) look not worth compressing: SAMPLES of them
    (spread over the array) each compress to more than INCOMPRESSIBLE of their size."""
    n = len(blocks)
    picks = sorted({0, n // 2, n - 1}) if SAMPLES >= 3 else [0]
    return all(len(compress(blocks[j])) > INCOMPRESSIBLE * len(blocks[j]) for j in picks)


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

