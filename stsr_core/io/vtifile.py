"""One ``.vti`` (VTK XML image data) written from numpy without VTK, its blocks compressed
on several threads (io/compress.py).

The layout is the one VTK's own XML writer gives with the settings this project always
used (``SetDataModeToAppended``, ``EncodeAppendedDataOff``, ``SetHeaderTypeToUInt64``):
the XML header, then ``<AppendedData encoding="raw">`` with, per array, a binary header and
the values. Uncompressed, the header is the byte count (UInt64) and the values follow as
they are in memory. Compressed (``vtkZLibDataCompressor`` or ``vtkLZ4DataCompressor``),
the values are cut into blocks of ``BLOCK_BYTES`` and the header is ``[blocks, block
size, size of a partial last block (0: none), compressed size of each block]`` (UInt64),
followed by the compressed blocks. VTK's and ParaView's readers read it as they read VTK's
own files (tests/pv/readers_check.py opens every kind in pvpython).

VTK's writer compresses on one thread and copies every array into a VTK array first; this
one compresses a step's blocks on all cores and writes the arrays from their memory.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import numpy as np

from ..errors import StsrError
from ..grid import Grid
from .compress import as_bytes, codec, compress_all, split_blocks

# Uncompressed bytes per compressed block: 1 MiB (VTK's default is 32 KiB; bigger blocks
# compress a little better and cost fewer headers; readers handle any size).
BLOCK_BYTES = 1 << 20
COMPRESSORS = {"zlib": "vtkZLibDataCompressor", "lz4": "vtkLZ4DataCompressor"}


def _numbers(values: Sequence[float]) -> str:
    return " ".join(repr(float(v)) for v in values)


def _encoded(buffers: List[memoryview], compression: str,
             threads: Optional[int]) -> List[List[bytes]]:
    """Per buffer, the pieces written for it in the appended section: header, then data."""
    if compression == "none":
        return [[np.uint64(len(b)).tobytes(), b] for b in buffers]     # type: ignore[list-item]
    blocks = [split_blocks(b, BLOCK_BYTES) for b in buffers]
    flat = compress_all([blk for bs in blocks for blk in bs], codec(compression), threads)
    out, k = [], 0
    for b, bs in zip(buffers, blocks):
        packed = flat[k:k + len(bs)]
        k += len(bs)
        head = [len(bs), BLOCK_BYTES, len(b) % BLOCK_BYTES] + [len(p) for p in packed]
        out.append([np.asarray(head, dtype="<u8").tobytes()] + packed)
    return out


def vti_bytes(grid: Grid, arrays: Dict[str, np.ndarray], time: Optional[float],
              compression: str, threads: Optional[int] = None) -> List[bytes]:
    """The file's content as pieces to write in order (the arrays' own memory where
    uncompressed). ``arrays``: float32 ``[Z, Y, X]`` scalars or ``[Z, Y, X, C]`` vectors;
    ``time``: written as the TimeValue field ParaView shows."""
    if compression not in ("none",) + tuple(COMPRESSORS):
        raise StsrError(f"unknown .vti compression '{compression}' (none, zlib, lz4)")
    shape = grid.shape                                                  # (Z, Y, X)
    names = list(arrays)
    data = []
    for n in names:
        a = np.ascontiguousarray(arrays[n], dtype=np.float32)
        if a.shape[:3] != shape or a.ndim not in (3, 4):
            raise StsrError(f"array '{n}' has shape {a.shape}; the grid {grid.text()} needs "
                            f"[Z, Y, X] = {shape} (or [Z, Y, X, C])")
        data.append(a)
    buffers = [as_bytes(a) for a in data]
    if time is not None:
        buffers.insert(0, as_bytes(np.asarray([time], dtype="<f8")))
    encoded = _encoded(buffers, compression, threads)
    offsets = np.cumsum([0] + [sum(len(p) for p in e) for e in encoded])[:-1].tolist()
    extent = " ".join(f"0 {d - 1}" for d in grid.dims)
    comp = f' compressor="{COMPRESSORS[compression]}"' if compression != "none" else ""
    lines = ['<?xml version="1.0"?>',
             f'<VTKFile type="ImageData" version="1.0" byte_order="LittleEndian" '
             f'header_type="UInt64"{comp}>',
             f'  <ImageData WholeExtent="{extent}" Origin="{_numbers(grid.origin)}" '
             f'Spacing="{_numbers(grid.spacing)}" Direction="1 0 0 0 1 0 0 0 1">']
    k = 0
    if time is not None:
        lines += ["    <FieldData>",
                  f'      <DataArray type="Float64" Name="TimeValue" NumberOfTuples="1" '
                  f'format="appended" offset="{offsets[0]}"/>',
                  "    </FieldData>"]
        k = 1
    lines += [f'    <Piece Extent="{extent}">', "      <PointData>"]
    for n, a, off in zip(names, data, offsets[k:]):
        comps = f' NumberOfComponents="{a.shape[3]}"' if a.ndim == 4 else ""
        lines.append(f'        <DataArray type="Float32" Name="{_xml_attr(n)}"{comps} '
                     f'format="appended" offset="{off}"/>')
    lines += ["      </PointData>", "      <CellData>", "      </CellData>", "    </Piece>",
              "  </ImageData>", '  <AppendedData encoding="raw">', "   _"]
    pieces: List[bytes] = ["\n".join(lines).encode()]
    for e in encoded:
        pieces += e
    pieces.append(b"\n  </AppendedData>\n</VTKFile>\n")
    return pieces


def _xml_attr(text: str) -> str:
    return (text.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;")
            .replace(">", "&gt;"))


def write_vti(path: str, grid: Grid, arrays: Dict[str, np.ndarray], time: Optional[float],
              compression: str, threads: Optional[int] = None) -> None:
    """Write one ``.vti`` at ``path`` (callers write a temporary name and rename it; an
    OSError such as a full disk goes to them)."""
    pieces = vti_bytes(grid, arrays, time, compression, threads)
    with open(path, "wb") as fh:
        for p in pieces:
            fh.write(p)
