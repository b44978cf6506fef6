"""One ``.vti`` (VTK XML image data) written from numpy without VTK, its blocks compressed
on several threads (io/compress.py).

The layout is the one VTK's own XML writer gives with the settings this project always
used (``SetDataModeToAppended``, ``EncodeAppendedDataOff``, ``SetHeaderTypeToUInt64``):
the XML header, then ``<AppendedData encoding="raw">`` with, per array, a binary header and
the values. Uncompressed, the header is the byte count (UInt64) and the values follow as
they are in memory. Compressed (``vtkZLibDataCompressor`` or ``vtkLZ4DataCompressor``),
the values are cut into blocks (whole z slices: :func:`block_bytes`) and the header is
``[blocks, block size, size of a partial last block (0: none), compressed size of each
block]`` (UInt64), followed by the compressed blocks. VTK's and ParaView's readers read it as they read VTK's
own files (tests/pv/readers_check.py opens every kind in pvpython).

VTK's writer compresses on one thread and copies every array into a VTK array first; this
one compresses a step's blocks on all cores, a few at a time, and writes the arrays from
their memory; as VTK's does, it leaves room for each array's offset in the XML header and
for each array's block sizes, and fills them in once they are known. A step may also come
in z-slabs (:class:`VtiFile`): uncompressed they go to their place in the one piece,
compressed each is a piece of its own (``<Piece Extent>`` of its rows), which VTK's reader
puts together.
"""
from __future__ import annotations

import os
import shutil
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..errors import StsrError
from ..grid import Grid
from .compress import (as_bytes, codec, compress_each, incompressible, lz4_literal,
                       split_blocks)

# Uncompressed bytes per compressed block: whole z slices of the array, at least
# MIN_BLOCK_BYTES of them (VTK's default block is 32 KiB; readers handle any size). VTK's
# reader reads a piece that is not the whole extent -- every piece of a file written in
# slabs, any piece a pvbatch rank asks a part of -- one z slice at a time and decompresses
# each block a slice lies in anew: blocks of 1 MiB across 8 slices of a 129^2 grid read 7x
# slower in zlib than blocks of one slice (and 3x in lz4), while one piece read whole
# reads as fast either way.
MIN_BLOCK_BYTES = 64 << 10
# A slice larger than this (a 1025^2 grid's 4.2 MB) is cut into blocks of about
# BLOCK_BYTES (those holding a slice's end are read twice when read by slices).
MAX_BLOCK_BYTES = 4 << 20
BLOCK_BYTES = 1 << 20
# Bytes of blocks compressed at once before they are written: what a step costs in memory
# beyond its arrays, whatever the step's size.
GROUP_BYTES = 8 << 20
# Characters kept for each array's offset in the XML header (filled in once known).
OFFSET_WIDTH = 20
COMPRESSORS = {"zlib": "vtkZLibDataCompressor", "lz4": "vtkLZ4DataCompressor"}


def _numbers(values: Sequence[float]) -> str:
    return " ".join(repr(float(v)) for v in values)


def _xml_attr(text: str) -> str:
    return (text.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;")
            .replace(">", "&gt;"))


def block_bytes(slice_bytes: int) -> int:
    """The uncompressed size of an array's blocks, from its z slice's (see MIN_BLOCK_BYTES):
    whole slices, at least MIN_BLOCK_BYTES; a slice over MAX_BLOCK_BYTES in equal parts of
    about BLOCK_BYTES."""
    if slice_bytes > MAX_BLOCK_BYTES:
        parts = -(-slice_bytes // BLOCK_BYTES)
        return -(-slice_bytes // parts)
    return slice_bytes * max(1, MIN_BLOCK_BYTES // max(slice_bytes, 1))


def _extent(x: int, y: int, z0: int, z1: int) -> str:
    return f"0 {x - 1} 0 {y - 1} {z0} {z1}"


class VtiFile:
    """One ``.vti`` written slab by slab: :meth:`add` takes the rows of every array from
    ``z0`` on (in increasing z, no gaps), :meth:`finish` completes the file once the last
    row is in. Memory beyond the caller's slab: a few compressed blocks.

    Uncompressed, the step is one piece: every array's size is known at the start, so the
    header is complete before any value and each slab's rows go straight to their place in
    their array (the same bytes as writing the step at once). Compressed, an array's blocks
    must follow its header contiguously and their sizes are known only once compressed, so
    each slab is a piece of its own (``<Piece Extent="... z0 z1">``, its arrays one after
    the other): VTK's image-data reader (VTK 9.2 in ParaView 5.11, 9.3 in 5.13) puts the
    pieces together, and reads only those a sub-extent needs. The pieces' markup is written
    last into room left for it in the header (for twice the pieces the first slab's height
    makes); a file that needs more is rewritten once with a larger header. A step written in
    one slab is the one-piece file VTK's writer makes.
    """

    def __init__(self, path: str, grid: Grid, names: Sequence[str], components: Sequence[int],
                 time: Optional[float], compression: str,
                 threads: Optional[int] = None) -> None:
        if compression not in ("none",) + tuple(COMPRESSORS):
            raise StsrError(f"unknown .vti compression '{compression}' (none, zlib, lz4)")
        self.path, self.grid, self.time = path, grid, time
        self.names, self.components = list(names), [int(c) for c in components]
        self.compression, self.threads = compression, threads
        nx, ny, _ = grid.dims
        self.row_bytes = [ny * nx * c * 4 for c in self.components]      # one z row each
        self.rows = 0                     # rows written so far
        self.pieces: List[Tuple[int, int, List[int]]] = []   # (z0, z1, offset of each array)
        self.data_at = -1                 # file position of appended offset 0 (-1: no slab)
        self.region = (0, 0)              # (position, length) kept for the pieces' markup
        self.fh = open(path, "w+b")

    # --- the markup -------------------------------------------------------------------------
    def _prefix(self) -> str:
        """From the XML declaration to the first piece (the TimeValue lies at offset 0)."""
        extent = " ".join(f"0 {d - 1}" for d in self.grid.dims)
        comp = (f' compressor="{COMPRESSORS[self.compression]}"'
                if self.compression != "none" else "")
        lines = ['<?xml version="1.0"?>',
                 f'<VTKFile type="ImageData" version="1.0" byte_order="LittleEndian" '
                 f'header_type="UInt64"{comp}>',
                 f'  <ImageData WholeExtent="{extent}" Origin="{_numbers(self.grid.origin)}" '
                 f'Spacing="{_numbers(self.grid.spacing)}" Direction="1 0 0 0 1 0 0 0 1">']
        if self.time is not None:
            lines += ["    <FieldData>",
                      '      <DataArray type="Float64" Name="TimeValue" NumberOfTuples="1" '
                      f'format="appended" offset="{0:<{OFFSET_WIDTH}d}"/>',
                      "    </FieldData>"]
        return "\n".join(lines) + "\n"

    def _piece(self, extent: str, offsets: Sequence[int]) -> str:
        """One piece's markup; every offset takes OFFSET_WIDTH characters, so its length
        depends on the extent alone."""
        lines = [f'    <Piece Extent="{extent}">', "      <PointData>"]
        for n, c, off in zip(self.names, self.components, offsets):
            comps = f' NumberOfComponents="{c}"' if c > 1 else ""
            lines.append(f'        <DataArray type="Float32" Name="{_xml_attr(n)}"{comps} '
                         f'format="appended" offset="{off:<{OFFSET_WIDTH}d}"/>')
        lines += ["      </PointData>", "      <CellData>", "      </CellData>", "    </Piece>"]
        return "\n".join(lines) + "\n"

    SUFFIX = '  </ImageData>\n  <AppendedData encoding="raw">\n   _'
    TAIL = b"\n  </AppendedData>\n</VTKFile>\n"

    # --- writing ------------------------------------------------------------------------------
    def _start(self, nz: int) -> None:
        """The header (room for the pieces' markup) and the TimeValue, at the first slab."""
        nx, ny, z = self.grid.dims
        if self.compression == "none":            # one piece, every offset known now
            offsets, at = [], 0 if self.time is None else 16
            for rb in self.row_bytes:
                offsets.append(at)
                at += 8 + rb * z
            self.pieces = [(0, z - 1, offsets)]
            room = len(self._piece(_extent(nx, ny, 0, z - 1), offsets))
        elif nz == z:                             # one slab: exactly one piece
            room = len(self._piece(_extent(nx, ny, 0, z - 1), [0] * len(self.names)))
        else:                                     # twice the pieces of slabs of this height
            count = min(z, 2 * -(-z // nz) + 2)
            room = count * len(self._piece(_extent(nx, ny, z - 1, z - 1),
                                           [0] * len(self.names)))
        prefix = self._prefix().encode()
        self.region = (len(prefix), room)
        self.fh.write(prefix + b" " * room + self.SUFFIX.encode())
        self.data_at = self.fh.tell()
        if self.time is not None:
            value = as_bytes(np.asarray([self.time], dtype="<f8"))
            if self.compression == "none":
                self.fh.write(np.uint64(8).tobytes())
                self.fh.write(value)
            else:
                self._write_compressed([value], [8])

    def add(self, z0: int, arrays: Sequence[np.ndarray]) -> None:
        """Rows ``z0 .. z0 + nz - 1`` of every array (``[nz, Y, X]`` or ``[nz, Y, X, C]``
        float32, in the names' order); ``z0`` is the first row not yet written."""
        data = [np.ascontiguousarray(a, dtype=np.float32) for a in arrays]
        nz = data[0].shape[0]
        if z0 != self.rows or nz < 1 or z0 + nz > self.grid.dims[2] or any(
                a.shape[0] != nz or a.nbytes != nz * rb for a, rb in zip(data, self.row_bytes)):
            raise StsrError(f"'{self.path}': rows {z0}..{z0 + nz - 1} do not follow the "
                            f"{self.rows} rows written, or their shapes do not fit the grid")
        if self.data_at < 0:
            self._start(nz)
        if self.compression == "none":
            for a, rb, off in zip(data, self.row_bytes, self.pieces[0][2]):
                at = self.data_at + off
                if z0 == 0:
                    self.fh.seek(at)
                    self.fh.write(np.uint64(rb * self.grid.dims[2]).tobytes())
                self.fh.seek(at + 8 + z0 * rb)
                self.fh.write(as_bytes(a))
        else:
            self.fh.seek(0, 2)
            offsets = self._write_compressed([as_bytes(a) for a in data],
                                             [block_bytes(rb) for rb in self.row_bytes])
            self.pieces.append((z0, z0 + nz - 1, offsets))
        self.rows = z0 + nz

    def _write_compressed(self, buffers: Sequence[memoryview],
                          blocks: Sequence[int]) -> List[int]:
        """Each buffer as a compressed array at the file's end (its header of block sizes,
        reserved and filled in once known, then its blocks of ``blocks[k]`` bytes); the
        blocks of all of them compressed GROUP_BYTES at a time on the pool's threads.
        In lz4, an array whose sampled blocks do not compress (compress.incompressible)
        has every block written as LZ4 literals (compress.lz4_literal: a few bytes' head,
        then the block's bytes straight from the array): no compressor's time on it.
        Returns each one's offset from the appended data's start."""
        fh, compress = self.fh, codec(self.compression)
        split = [split_blocks(buf, size) for buf, size in zip(buffers, blocks)]
        literal = [self.compression == "lz4" and incompressible(parts, compress)
                   for parts in split]
        jobs = [(k, b) for k, parts in enumerate(split) for b in parts]
        n_blocks = [len(parts) for parts in split]
        heads: List[int] = [-1] * len(buffers)
        sizes: List[List[int]] = [[] for _ in buffers]
        groups, start, held = [], 0, 0
        for j, (k, b) in enumerate(jobs):
            held += 0 if literal[k] else len(b)
            if held >= GROUP_BYTES or j == len(jobs) - 1:
                groups.append(jobs[start:j + 1])
                start, held = j + 1, 0
        for group in groups:
            packed = compress_each([b for k, b in group if not literal[k]], compress,
                                   self.threads)
            for k, b in group:
                if heads[k] < 0:
                    heads[k] = fh.tell()
                    fh.write(bytes(8 * (3 + n_blocks[k])))
                if literal[k]:
                    head = lz4_literal(len(b))
                    fh.write(head)
                    fh.write(b)
                    sizes[k].append(len(head) + len(b))
                else:
                    block = next(packed)
                    fh.write(block)
                    sizes[k].append(len(block))
                if len(sizes[k]) == n_blocks[k]:
                    end = fh.tell()
                    fh.seek(heads[k])
                    fh.write(np.asarray([n_blocks[k], blocks[k],
                                         len(buffers[k]) % blocks[k]] + sizes[k],
                                        dtype="<u8").tobytes())
                    fh.seek(end)
        return [h - self.data_at for h in heads]

    def finish(self) -> None:
        """Complete the file (every row written): the end of the appended data, the pieces'
        markup in its room, then closed. An OSError (a full disk) goes to the caller, who
        removes the file."""
        nx, ny, z = self.grid.dims
        if self.rows != z:
            raise StsrError(f"'{self.path}': {self.rows} of {z} rows written")
        if self.compression == "none":
            self.fh.seek(self.data_at + self.pieces[0][2][-1] + 8
                         + self.row_bytes[-1] * z)
        else:
            self.fh.seek(0, 2)
        self.fh.write(self.TAIL)
        markup = "".join(self._piece(_extent(nx, ny, z0, z1), offsets)
                         for z0, z1, offsets in self.pieces).encode()
        at, room = self.region
        if len(markup) <= room:
            self.fh.seek(at)
            self.fh.write(markup + b" " * (room - len(markup)))
            self.fh.close()
        else:
            self._grow(markup)

    def _grow(self, markup: bytes) -> None:
        """More pieces than the header has room for: the file rewritten once, its header
        holding them all (the appended data is copied as it is: offsets are relative to
        its start)."""
        grown = self.path + ".grow"
        try:
            with open(grown, "wb") as out:
                out.write(self._prefix().encode() + markup + self.SUFFIX.encode())
                self.fh.seek(self.data_at)
                shutil.copyfileobj(self.fh, out, 16 << 20)
            self.fh.close()
            os.replace(grown, self.path)
        except BaseException:
            if os.path.exists(grown):
                os.remove(grown)
            raise

    def close(self) -> None:
        """Close the file without completing it (the caller removes it): what is left in
        the buffer may not fit on a full disk, and need not."""
        try:
            self.fh.close()
        except OSError:
            pass


def write_vti(path: str, grid: Grid, arrays: Dict[str, np.ndarray], time: Optional[float],
              compression: str, threads: Optional[int] = None) -> None:
    """Write one ``.vti`` at ``path`` in one slab (callers write a temporary name and rename
    it; an OSError such as a full disk goes to them). ``arrays``: float32 ``[Z, Y, X]``
    scalars or ``[Z, Y, X, C]`` vectors; ``time``: written as the TimeValue field ParaView
    shows. Beyond the arrays, memory holds a few compressed blocks."""
    shape = grid.shape                                                  # (Z, Y, X)
    for n, a in arrays.items():
        if a.shape[:3] != shape or a.ndim not in (3, 4):
            raise StsrError(f"array '{n}' has shape {a.shape}; the grid {grid.text()} needs "
                            f"[Z, Y, X] = {shape} (or [Z, Y, X, C])")
    out = VtiFile(path, grid, list(arrays), [a.shape[3] if a.ndim == 4 else 1
                                             for a in arrays.values()],
                  time, compression, threads)
    try:
        out.add(0, list(arrays.values()))
        out.finish()
    finally:
        out.close()
