"""The structure of a VTK XML image file (.vti), checked before VTK reads it.

VTK 9.2's XML reader trusts a file's header and its binary block headers: fuzzing (issue 19,
tests/test_fuzz.py) found damaged files on which it crashes the process -- a segmentation
fault for an unknown array type, a division by zero for a zero block size, an uncaught
``std::bad_alloc`` for a header that announces terabytes. This module reads the XML markup
and the binary headers (not the data) with Python and refuses, as one StsrError naming the
file, whatever VTK would have to guess about: extents, array types and component counts,
encodings and compressors, and for appended raw or inline binary data that every array's
header announces exactly the bytes its extent needs, within the file. A file written by VTK
or ParaView passes unchanged; its values are still decoded by VTK.
"""
from __future__ import annotations

import base64
import binascii
import os
import re
import struct
import xml.etree.ElementTree as ET
from typing import List, Optional, Tuple

from ..errors import StsrError

TYPE_SIZES = {"Int8": 1, "UInt8": 1, "Int16": 2, "UInt16": 2, "Int32": 4, "UInt32": 4,
              "Int64": 8, "UInt64": 8, "Float32": 4, "Float64": 8, "IdType": 8}
COMPRESSORS = ("vtkZLibDataCompressor", "vtkLZ4DataCompressor", "vtkLZMADataCompressor")
# no compressor packs more than this many bytes into one (zlib's limit is ~1032:1): a header
# announcing more than this per stored byte announces memory, not data
MAX_RATIO = 1100
HEAD_BYTES = 64 << 20          # inline data beyond this: left to VTK's own checks


class _Damaged(Exception):
    """What is wrong, for the message."""


def _ints(text: Optional[str], n: int, what: str) -> List[int]:
    try:
        values = [int(v) for v in (text or "").split()]
    except ValueError:
        raise _Damaged(f"{what} '{text}' is not {n} whole numbers") from None
    if len(values) != n:
        raise _Damaged(f"{what} '{text}' is not {n} whole numbers")
    return values


def _floats(text: Optional[str], n: int, what: str) -> None:
    try:
        values = [float(v) for v in (text or "").split()]
    except ValueError:
        raise _Damaged(f"{what} '{text}' is not {n} numbers") from None
    if len(values) != n:
        raise _Damaged(f"{what} '{text}' is not {n} numbers")


def _extent(text: Optional[str], what: str) -> Tuple[int, int]:
    """(points, cells) of an extent."""
    e = _ints(text, 6, what)
    dims = [e[2 * a + 1] - e[2 * a] + 1 for a in range(3)]
    if min(dims) < 1:
        raise _Damaged(f"{what} '{text}' is empty or reversed")
    points = dims[0] * dims[1] * dims[2]
    cells = max(dims[0] - 1, 1) * max(dims[1] - 1, 1) * max(dims[2] - 1, 1)
    return points, cells


class _Layout:
    """The file's binary conventions, from the VTKFile element."""

    def __init__(self, root: ET.Element) -> None:
        if root.tag != "VTKFile":
            raise _Damaged(f"its root element is <{root.tag}>, not <VTKFile>")
        order = root.get("byte_order", "LittleEndian")
        if order not in ("LittleEndian", "BigEndian"):
            raise _Damaged(f"byte_order '{order}' is unknown")
        self.endian = "<" if order == "LittleEndian" else ">"
        header = root.get("header_type", "UInt32")
        if header not in ("UInt32", "UInt64"):
            raise _Damaged(f"header_type '{header}' is not UInt32 or UInt64")
        self.word = "I" if header == "UInt32" else "Q"
        self.word_size = 4 if header == "UInt32" else 8
        self.compressor = root.get("compressor")
        if self.compressor is not None and self.compressor not in COMPRESSORS:
            raise _Damaged(f"compressor '{self.compressor}' is unknown")
        version = root.get("version", "0.1")
        if not re.fullmatch(r"\d+\.\d+", version):
            raise _Damaged(f"version '{version}' is not a version number")

    def words(self, data: bytes, n: int) -> Tuple[int, ...]:
        if len(data) < n * self.word_size:
            raise _Damaged("a binary header is cut short")
        return struct.unpack(f"{self.endian}{n}{self.word}", data[:n * self.word_size])


def _check_block_header(layout: _Layout, read, expected: int, room: int, name: str) -> None:
    """``read(k)``: the first k bytes of an array's binary data; ``room``: the bytes the file
    holds for it. Its header must announce ``expected`` bytes, stored within ``room``."""
    if layout.compressor is None:
        (size,) = layout.words(read(layout.word_size), 1)
        if size != expected:
            raise _Damaged(f"array '{name}' announces {size} bytes where its extent needs "
                           f"{expected}")
        if layout.word_size + size > room:
            raise _Damaged(f"array '{name}' is cut short: {size} bytes announced, "
                           f"{max(room - layout.word_size, 0)} in the file")
        return
    n_blocks, block, last = layout.words(read(3 * layout.word_size), 3)
    if expected == 0:
        return
    if block == 0 or n_blocks == 0 or n_blocks > expected or last > block:
        raise _Damaged(f"array '{name}' has a damaged block header ({n_blocks} blocks of "
                       f"{block} bytes, last {last})")
    total = (n_blocks - 1) * block + (last or block)
    if total != expected:
        raise _Damaged(f"array '{name}' announces {total} bytes where its extent needs "
                       f"{expected}")
    sizes = layout.words(read((3 + n_blocks) * layout.word_size), 3 + n_blocks)[3:]
    stored = sum(sizes)
    if (3 + n_blocks) * layout.word_size + stored > room or stored * MAX_RATIO < expected:
        raise _Damaged(f"array '{name}' announces {stored} compressed bytes, which the file "
                       "does not hold")


def check_image_file(path: str) -> None:
    """Raise StsrError naming ``path`` when its structure is damaged (see the module's
    docstring); return when VTK may read it."""
    try:
        _check(path)
    except _Damaged as exc:
        raise StsrError(f"'{path}' is damaged or truncated: {exc}") from None
    except ET.ParseError as exc:
        raise StsrError(f"'{path}' is damaged: its XML is not well-formed ({exc})") from None


def _check(path: str) -> None:
    size = os.path.getsize(path)
    with open(path, "rb") as fh:
        head = fh.read(1 << 16)                  # the markup before appended data is small
        cut = head.find(b"<AppendedData")
        if cut < 0 and len(head) < size:         # inline data (ascii or base64): all of it
            head += fh.read(HEAD_BYTES)
            cut = head.find(b"<AppendedData")
            if cut < 0 and len(head) < size:
                return
        markup = head if cut < 0 else head[:cut] + b"</VTKFile>"
        root = ET.fromstring(markup)
        layout = _Layout(root)
        image = root.find("ImageData")
        if image is None:
            raise _Damaged("it has no <ImageData> element")
        _extent(image.get("WholeExtent"), "WholeExtent")
        _floats(image.get("Origin", "0 0 0"), 3, "Origin")
        _floats(image.get("Spacing", "1 1 1"), 3, "Spacing")
        if image.get("Direction") is not None:
            _floats(image.get("Direction"), 9, "Direction")
        appended = None
        if cut >= 0:
            m = re.match(rb'<AppendedData\s+encoding="(\w+)"\s*>\s*_', head[cut:cut + 200])
            if m is None:
                raise _Damaged("its <AppendedData> element has no encoding or no '_' mark")
            if m.group(1) == b"raw":
                appended = cut + m.end()             # where offset 0 lies in the file
        for array, count in _arrays(image):
            _check_array(fh, layout, array, count, appended, size)


def _arrays(image: ET.Element):
    """(DataArray element, number of tuples) of every array of the image."""
    field = image.find("FieldData")
    for a in (field if field is not None else []):
        if a.tag == "DataArray":
            tuples = _ints(a.get("NumberOfTuples", "1"), 1, "NumberOfTuples")[0]
            if tuples < 0:
                raise _Damaged(f"field array '{a.get('Name')}' has {tuples} tuples")
            yield a, tuples
    pieces = image.findall("Piece")
    if not pieces:
        raise _Damaged("it has no <Piece> element")
    for piece in pieces:
        points, cells = _extent(piece.get("Extent"), "Piece Extent")
        for tag, count in (("PointData", points), ("CellData", cells)):
            group = piece.find(tag)
            for a in (group if group is not None else []):
                if a.tag == "DataArray":
                    yield a, count


def _check_array(fh, layout: _Layout, a: ET.Element, tuples: int, appended: Optional[int],
                 size: int) -> None:
    name = a.get("Name", "")
    kind = a.get("type")
    if kind not in TYPE_SIZES and kind not in ("String", "Bit"):
        raise _Damaged(f"array '{name}' has type '{kind}', which VTK does not know")
    comps = _ints(a.get("NumberOfComponents", "1"), 1, "NumberOfComponents")[0]
    if comps < 1:
        raise _Damaged(f"array '{name}' has {comps} components")
    fmt = a.get("format")
    if fmt not in ("ascii", "binary", "appended"):
        raise _Damaged(f"array '{name}' has format '{fmt}' (ascii, binary or appended)")
    if kind not in TYPE_SIZES:               # strings and bits: VTK's own checks
        return
    expected = tuples * comps * TYPE_SIZES[kind]
    if fmt == "ascii":
        found = len((a.text or "").split())
        if found != tuples * comps:
            raise _Damaged(f"array '{name}' holds {found} values where its extent needs "
                           f"{tuples * comps}")
    elif fmt == "appended":
        offset = _ints(a.get("offset"), 1, f"the offset of array '{name}'")[0]
        if appended is None:                 # base64-encoded appended data: VTK's checks
            return
        start = appended + offset
        if offset < 0 or start >= size:
            raise _Damaged(f"array '{name}' lies at offset {offset}, past the end of the file")

        def read(k: int) -> bytes:
            fh.seek(start)
            return fh.read(k)
        _check_block_header(layout, read, expected, size - start, name)
    elif fmt == "binary":
        text = re.sub(rb"\s+", b"", (a.text or "").encode())
        words = 1 if layout.compressor is None else 3
        try:
            if layout.compressor is not None:     # the header is encoded apart from the data
                n_blocks = layout.words(base64.b64decode(text[:4 * -(-layout.word_size // 3)]),
                                        1)[0]
                words = 3 + min(n_blocks, max(len(text), 1))
            head_chars = 4 * -(-(words * layout.word_size) // 3)
            header = base64.b64decode(text[:head_chars])
        except (binascii.Error, ValueError):
            raise _Damaged(f"array '{name}' holds damaged base64 data") from None
        room = layout.word_size * words + len(text[head_chars:]) * 3 // 4 + 3   # padding
        _check_block_header(layout, lambda k: header[:k], expected, room, name)
