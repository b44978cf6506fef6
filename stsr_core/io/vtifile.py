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
one compresses a step's blocks on all cores, a few at a time, and writes the arrays from
their memory; as VTK's does, it leaves room for each array's offset in the XML header and
for each array's block sizes, and fills them in once they are known.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..errors import StsrError
from ..grid import Grid
from .compress import as_bytes, codec, compress_all, split_blocks

# Uncompressed bytes per compressed block: 1 MiB (VTK's default is 32 KiB; bigger blocks
# compress a little better and cost fewer headers; readers handle any size).
BLOCK_BYTES = 1 << 20
# Blocks compressed at once before they are written: what a step costs in memory beyond its
# arrays (a few MB), whatever the step's size.
GROUP_BLOCKS = 8
# Characters kept for each array's offset in the XML header (filled in once known).
OFFSET_WIDTH = 20
COMPRESSORS = {"zlib": "vtkZLibDataCompressor", "lz4": "vtkLZ4DataCompressor"}


def _numbers(values: Sequence[float]) -> str:
    return " ".join(repr(float(v)) for v in values)


def _xml_attr(text: str) -> str:
    return (text.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;")
            .replace(">", "&gt;"))


def _header(grid: Grid, names: List[str], data: List[np.ndarray], with_time: bool,
            compression: str) -> Tuple[bytes, List[int]]:
    """The XML before the appended data (ending with its ``_``), and where in it each
    array's offset goes (``OFFSET_WIDTH`` spaces, filled in once the data is written, as
    VTK's own writer does): the TimeValue first when ``with_time``, then the arrays."""
    extent = " ".join(f"0 {d - 1}" for d in grid.dims)
    comp = f' compressor="{COMPRESSORS[compression]}"' if compression != "none" else ""
    text = ""
    marks: List[int] = []

    def add(line: str, offset: bool = False) -> None:
        nonlocal text
        if offset:
            marks.append(len(text) + len(line) + len(' offset="'))
            line += f' offset="{" " * OFFSET_WIDTH}"/>'
        text += line + "\n"
    add('<?xml version="1.0"?>')
    add(f'<VTKFile type="ImageData" version="1.0" byte_order="LittleEndian" '
        f'header_type="UInt64"{comp}>')
    add(f'  <ImageData WholeExtent="{extent}" Origin="{_numbers(grid.origin)}" '
        f'Spacing="{_numbers(grid.spacing)}" Direction="1 0 0 0 1 0 0 0 1">')
    if with_time:
        add("    <FieldData>")
        add('      <DataArray type="Float64" Name="TimeValue" NumberOfTuples="1" '
            'format="appended"', offset=True)
        add("    </FieldData>")
    add(f'    <Piece Extent="{extent}">')
    add("      <PointData>")
    for n, a in zip(names, data):
        comps = f' NumberOfComponents="{a.shape[3]}"' if a.ndim == 4 else ""
        add(f'        <DataArray type="Float32" Name="{_xml_attr(n)}"{comps} '
            'format="appended"', offset=True)
    for line in ("      </PointData>", "      <CellData>", "      </CellData>", "    </Piece>",
                 "  </ImageData>", '  <AppendedData encoding="raw">'):
        add(line)
    text += "   _"
    return text.encode(), marks


def _write_array(fh, buf: memoryview, compression: str, threads: Optional[int]) -> None:
    """One array's part of the appended data at the file's position: its binary header,
    then its values (compressed a few blocks at a time, on the pool's threads; the header
    of block sizes is reserved first and filled in after)."""
    if compression == "none":
        fh.write(np.uint64(len(buf)).tobytes())
        fh.write(buf)
        return
    blocks = split_blocks(buf, BLOCK_BYTES)
    head_at = fh.tell()
    fh.write(bytes(8 * (3 + len(blocks))))
    compress, sizes = codec(compression), []
    for g in range(0, len(blocks), GROUP_BLOCKS):
        for packed in compress_all(blocks[g:g + GROUP_BLOCKS], compress, threads):
            fh.write(packed)
            sizes.append(len(packed))
    end = fh.tell()
    fh.seek(head_at)
    fh.write(np.asarray([len(blocks), BLOCK_BYTES, len(buf) % BLOCK_BYTES] + sizes,
                        dtype="<u8").tobytes())
    fh.seek(end)


def write_vti(path: str, grid: Grid, arrays: Dict[str, np.ndarray], time: Optional[float],
              compression: str, threads: Optional[int] = None) -> None:
    """Write one ``.vti`` at ``path`` (callers write a temporary name and rename it; an
    OSError such as a full disk goes to them). ``arrays``: float32 ``[Z, Y, X]`` scalars or
    ``[Z, Y, X, C]`` vectors; ``time``: written as the TimeValue field ParaView shows.
    Written array by array: beyond the arrays, memory holds a few compressed blocks."""
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
    head, marks = _header(grid, names, data, time is not None, compression)
    with open(path, "wb") as fh:
        fh.write(head)
        offsets = []
        for buf in buffers:
            offsets.append(fh.tell() - len(head))
            _write_array(fh, buf, compression, threads)
        fh.write(b"\n  </AppendedData>\n</VTKFile>\n")
        for at, offset in zip(marks, offsets):
            fh.seek(at)
            fh.write(f"{offset:<{OFFSET_WIDTH}d}".encode())
